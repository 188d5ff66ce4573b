/* /.dbosfs/: about this mount. Read-only snapshots built at open. */
#include <errno.h>
#include <string.h>

#include "content.h"
#include "fs.h"
#include "log.h"

static int build_provider(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return buf_printf(out, "%s\n", fs->provider->provider_line);
}

static int build_account(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return buf_printf(out, "%s\n", fs->provider->account);
}

static int build_version(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return buf_printf(out, "dbosfs %s\n", DBOSFS_VERSION);
}

static int build_log(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return log_snapshot(out);
}

static int build_last_error(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	pthread_mutex_lock(&fs->lock);
	int rc = fs->root_error[0] ? buf_printf(out, "%s\n", fs->root_error) : 0;
	pthread_mutex_unlock(&fs->lock);
	return rc;
}

static int build_health(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return state_health(fs->cache, out);
}

/* instances (table == true) or instances.json. */
static int build_instances_as(struct dbosfs *fs, struct buf *out, bool table)
{
	struct instance_list l;
	int rc = state_list(fs->cache, &l);
	if (rc)
		return rc;
	rc = table ? content_instances(l.items, l.count, out)
	           : content_instances_json(l.items, l.count, out);
	instance_list_free(&l);
	return rc;
}

static int build_instances(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return build_instances_as(fs, out, true);
}

static int build_instances_json(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return build_instances_as(fs, out, false);
}

static const struct file_def meta_files[] = {
    {"provider", 0444, .build = build_provider},
    {"account", 0444, .build = build_account},
    {"version", 0444, .build = build_version},
    {"log", 0444, .build = build_log},
    {"last_error", 0444, .build = build_last_error},
    {"health", 0444, .build = build_health},
    {"instances", 0444, .build = build_instances},
    {"instances.json", 0444, .build = build_instances_json},
    {"link", 0644, .build = build_link, .write = write_link},
};

const struct dir_def meta_dir = {
    .name = ".dbosfs",
    .mode = 0755,
    .files = meta_files,
    .file_count = sizeof(meta_files) / sizeof(meta_files[0]),
};
