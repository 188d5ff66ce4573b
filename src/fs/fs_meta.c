/* /.dbosfs/: about this mount. Read-only snapshots built at open. */
#include <errno.h>
#include <string.h>

#include "fs.h"
#include "log.h"

enum { META_PROVIDER, META_ACCOUNT, META_VERSION, META_LOG, META_LAST_ERROR };

const struct file_def meta_files[] = {
    [META_PROVIDER] = {"provider", 0444, false, false},
    [META_ACCOUNT] = {"account", 0444, false, false},
    [META_VERSION] = {"version", 0444, false, false},
    [META_LOG] = {"log", 0444, false, false},
    [META_LAST_ERROR] = {"last_error", 0444, false, false},
};
const int meta_file_count = sizeof(meta_files) / sizeof(meta_files[0]);

int meta_build(struct dbosfs *fs, int file, struct buf *out)
{
	switch (file) {
	case META_PROVIDER:
		return buf_printf(out, "%s\n", fs->provider->provider_line);
	case META_ACCOUNT:
		return buf_printf(out, "%s\n", fs->provider->account);
	case META_VERSION:
		return buf_printf(out, "dbosfs %s\n", DBOSFS_VERSION);
	case META_LOG:
		return log_snapshot(out);
	case META_LAST_ERROR: {
		pthread_mutex_lock(&fs->lock);
		int rc = fs->root_error[0] ? buf_printf(out, "%s\n", fs->root_error) : 0;
		pthread_mutex_unlock(&fs->lock);
		return rc;
	}
	}
	return -ENOENT;
}
