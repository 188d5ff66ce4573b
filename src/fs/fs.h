/* The filesystem layer's private interface. fs.c routes every FUSE
 * operation by path to the file that serves that part of the tree:
 *   /                 fs_root.c      (readdir, mkdir, rmdir)
 *   /.dbosfs/...      fs_meta.c      (about this mount)
 *   /NAME/...         fs_instance.c  (one database instance) */
#ifndef DBOSFS_FS_H
#define DBOSFS_FS_H

#define FUSE_USE_VERSION 314
#include <fuse.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "buf.h"
#include "options.h"
#include "provider.h"
#include "refresher.h"
#include "secrets.h"
#include "state.h"

struct dbosfs {
	struct dbosfs_options *opt;
	struct provider *provider;
	struct state_cache *cache;
	struct refresher *refresher;
	struct secret_store secrets;
	struct timespec mounted_at;
	pthread_mutex_t lock; /* guards root_error and open_files */
	/* Handles the kernel has not released yet: a signal can end the loop
	 * before the (asynchronous) RELEASE requests arrive. */
	struct open_file *open_files;
	char root_error[ERRMSG_MAX]; /* .dbosfs/last_error: mount-wide failures */
};

enum node_kind { NODE_ROOT, NODE_META_DIR, NODE_META_FILE, NODE_INST_DIR, NODE_INST_FILE };

struct node {
	enum node_kind kind;
	char name[64]; /* instance name (NODE_INST_*) */
	int file;      /* index in the meta or instance file table */
};

/* Per-open state: content is built once (at open, or at the first read for
 * files that block) and later reads serve that snapshot. */
struct open_file {
	struct node node;
	pthread_mutex_t lock; /* concurrent reads of one handle (pread) */
	bool built;
	struct buf content;
	struct open_file *prev, *next; /* in dbosfs.open_files */
};

struct file_def {
	const char *name;
	mode_t mode;   /* permission bits */
	bool secret;   /* only the owner may read it */
	bool writable; /* a control file */
};

struct dbosfs *fs_get(void);
/* The mount's owner or root. */
bool fs_caller_is_owner(void);
/* Resolves a path; -ENOENT if nothing is there. */
int fs_resolve(struct dbosfs *fs, const char *path, struct node *n);
void fs_fill_stat(struct dbosfs *fs, struct stat *st, mode_t type_and_mode);
/* Records a mount-wide failure (log + .dbosfs/last_error); returns err. */
int fs_root_fail(struct dbosfs *fs, int err, const char *msg);

/* Frees every handle still open (at shutdown). */
void fs_release_all(struct dbosfs *fs);

/* fs_root.c */
int root_readdir(struct dbosfs *fs, void *buf, fuse_fill_dir_t filler);
int root_mkdir(struct dbosfs *fs, const char *name);
int root_rmdir(struct dbosfs *fs, const char *name);

/* fs_meta.c */
extern const struct file_def meta_files[];
extern const int meta_file_count;
int meta_build(struct dbosfs *fs, int file, struct buf *out);

/* fs_instance.c */
extern const struct file_def instance_files[];
extern const int instance_file_count;
/* Fills content for read-only snapshots at open; 0 or -errno. */
int instance_open(struct dbosfs *fs, struct open_file *of, int flags);
/* Builds content at the first read when open did not (blocking files). */
int instance_build(struct dbosfs *fs, struct open_file *of);
/* Acts on one write to a control file; returns size or -errno. */
int instance_write(struct dbosfs *fs, const struct node *n, const char *data, size_t size);
/* Records the message of a failed operation in NAME/last_error and the log;
 * returns err. */
int instance_fail(struct dbosfs *fs, const char *name, int err, const char *msg);

#endif
