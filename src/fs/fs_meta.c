/* /.dbosfs/: about this mount. Read-only snapshots built at open. */
#include <errno.h>
#include <string.h>

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

static const struct file_def meta_files[] = {
    {"provider", 0444, .build = build_provider},     {"account", 0444, .build = build_account},
    {"version", 0444, .build = build_version},       {"log", 0444, .build = build_log},
    {"last_error", 0444, .build = build_last_error}, {"health", 0444, .build = build_health},
};

const struct dir_def meta_dir = {
    .name = ".dbosfs",
    .mode = 0755,
    .files = meta_files,
    .file_count = sizeof(meta_files) / sizeof(meta_files[0]),
};
