/* The filesystem layer's private interface. The tree is declared as tables:
 * each directory is a dir_def (its files, its fixed subdirectories, and the
 * entries it holds, such as the instances at the root), each file a
 * file_def row (mode, who may read it, how its content is built, what a
 * write does). fs.c walks these tables for every FUSE operation; the files
 * that declare them are
 *   /                 fs_root.c      (the instances: readdir, mkdir, rmdir)
 *   /.dbosfs/...      fs_meta.c      (about this mount)
 *   /NAME/...         fs_instance.c  (one database instance)
 *   /NAME/branch, /NAME/restore  fs_branch.c (copy_files)
 *   /NAME/databases/  fs_databases.c (the databases inside an instance)
 * A new per-instance file is one row plus its handlers, side by side: in
 * fs_instance.c, or in a file_table of a file of its own (listed in
 * instance_dir.tables), and the provider op it calls. */
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
	const char *mountpoint; /* absolute: url and env name files under it */
	struct timespec mounted_at;
	pthread_mutex_t lock; /* guards root_error and open_files */
	/* Handles the kernel has not released yet: a signal can end the loop
	 * before the (asynchronous) RELEASE requests arrive. */
	struct open_file *open_files;
	char root_error[ERRMSG_MAX]; /* .dbosfs/last_error: mount-wide failures */
	struct db_cache *dbs;        /* NAME/databases/ lists (fs_databases.c) */
};

enum node_kind { NODE_DIR, NODE_FILE };

#define NODE_NAME_MAX 64

/* A resolved path. Names of entries are kept by depth: the first (an
 * instance) in name, the one below it (e.g. databases/DB) in sub. */
struct node {
	enum node_kind kind;
	char name[NODE_NAME_MAX];     /* instance name, "" above instances */
	char sub[NODE_NAME_MAX];      /* entry name below the instance, "" if none */
	const struct dir_def *dir;    /* the directory, or the file's directory */
	const struct dir_def *parent; /* the directory holding dir (NULL at /) */
	const struct file_def *file;  /* NODE_FILE */
};

/* Content of a file for reads: appends to out, 0 or -errno. */
typedef int (*file_build_fn)(struct dbosfs *fs, const struct node *n, struct buf *out);
/* Acts on one written value (one line, its newline removed): 0 or -errno
 * with the full message (what was refused and why) in e. */
/* Content that grows while an operation runs (a live migration report):
 * called by a read past the end of content, appends what was added since.
 * *mark is the handle's own bookmark (0 before the first call). Returns
 * false when nothing more will come. */
typedef bool (*file_follow_fn)(struct dbosfs *fs, const struct node *n, struct buf *content,
                               size_t *mark);
typedef int (*file_write_fn)(struct dbosfs *fs, const struct node *n, const char *value,
                             struct errmsg *e);

/* One file of a directory. Permissions follow from the fields (the one
 * rule in file_permits): a file with a write action is a control file that
 * only the owner (or root) may write; a secret one only they may read. */
struct file_def {
	const char *name;
	mode_t mode;              /* permission bits shown by stat */
	bool secret;              /* only the owner (or root) may read it */
	file_build_fn build;      /* NULL: reads see nothing */
	bool build_at_read;       /* blocks: built at the first read, where Ctrl-C works */
	file_build_fn stat_build; /* build_at_read: what stat sizes, without blocking */
	file_follow_fn follow;    /* NULL: reads serve the snapshot only */
	file_write_fn write;      /* NULL: read-only */
	/* Non-NULL: each write runs as this per-instance operation (run_op):
	 * one at a time, and a write-open during another is refused (EBUSY). */
	const char *op;
	/* NULL: always there; else whether this mount has the file. */
	bool (*present)(struct dbosfs *fs);
};

/* Rows declared in a source file of their own, with their handlers
 * static beside them (fs_branch.c's copy_files). */
struct file_table {
	const struct file_def *files;
	int count;
};
#define FILE_TABLE(rows)                                                                           \
	{                                                                                          \
		rows, (int)(sizeof(rows) / sizeof((rows)[0]))                                      \
	}

/* One directory. Entries are subdirectories named at run time (the
 * instances at the root, databases/DB below an instance): one table
 * (entry) serves them all, and list/exists/mkdir/rmdir manage them. */
struct dir_def {
	const char *name; /* fixed name; NULL for an entry table */
	mode_t mode;
	const struct file_def *files;
	int file_count;
	/* More files, declared beside their handlers in other sources. */
	const struct file_table *const *tables;
	int table_count;
	const struct dir_def *const *dirs; /* fixed subdirectories */
	int dir_count;
	const struct dir_def *entry; /* NULL: no entries */
	/* Names of the entries (sorted, caller frees each and the array). */
	int (*list)(struct dbosfs *fs, const struct node *dir, char ***names, size_t *count);
	bool (*exists)(struct dbosfs *fs, const struct node *dir, const char *name);
	/* NULL: mkdir/rmdir are refused (EPERM). */
	int (*mkdir)(struct dbosfs *fs, const struct node *dir, const char *name);
	int (*rmdir)(struct dbosfs *fs, const struct node *entry);
};

/* Per-open state: content is built once (at open, or at the first read for
 * files that block) and later reads serve that snapshot. */
struct open_file {
	struct node node;
	pthread_mutex_t lock; /* concurrent reads of one handle (pread) */
	bool built;
	/* The one write handle of a file with an op (see op_open). */
	bool writer;
	struct buf content;
	/* Written bytes of a value whose line is not complete yet: a value is
	 * one line, whatever number of write(2) calls carry it. */
	struct buf pending;
	/* def->follow's bookmark, and whether it said nothing more comes. */
	size_t follow_mark;
	bool follow_done;
	struct open_file *prev, *next; /* in dbosfs.open_files */
};

struct dbosfs *fs_get(void);
/* The mount's owner or root. */
bool fs_caller_is_owner(void);
/* Resolves a path; -ENOENT if nothing is there. */
int fs_resolve(struct dbosfs *fs, const char *path, struct node *n);
void fs_fill_stat(struct dbosfs *fs, struct stat *st, mode_t type_and_mode);
/* Records a mount-wide failure (log + .dbosfs/last_error); returns err. */
int fs_root_fail(struct dbosfs *fs, int err, const char *msg);
/* Records the message of a failed operation in NAME/last_error and the log;
 * returns err. */
int instance_fail(struct dbosfs *fs, const char *name, int err, const char *msg);

/* Runs fn(fs, arg, e) as operation op on instance name: one operation at a
 * time per instance, so a second gets -EBUSY (message naming the running
 * one in e) and fn is not called. Returns fn's result. */
int run_op(struct dbosfs *fs, const char *name, const char *op,
           int (*fn)(struct dbosfs *fs, void *arg, struct errmsg *e), void *arg, struct errmsg *e);

/* fs_background.c: a provider call that may outlast a short grace. run()
 * works in a thread of its own (its op_interrupted() sees the requester's
 * Ctrl-C and unmount). finish() records the outcome exactly once: in the
 * request if run() ended within the grace (its return value is then the
 * request's), else in the worker (background true) after detach() was
 * called and the request returned 0 with *detached set. free_arg()
 * releases arg at the end. grace_ms < 0: run inline, no thread. */
struct bg_ops {
	int (*run)(struct dbosfs *fs, void *arg, struct errmsg *e);
	void (*detach)(struct dbosfs *fs, void *arg);
	int (*finish)(struct dbosfs *fs, void *arg, int rc, struct errmsg *e, bool background);
	void (*free_arg)(void *arg);
};
int fs_run_with_grace(struct dbosfs *fs, long long grace_ms, const struct bg_ops *ops, void *arg,
                      bool *detached, struct errmsg *e);
/* At unmount: cancels every background call and waits for them. */
void fs_background_drain(void);

/* The state cache's forget hook (state_on_forget): arg is the dbosfs. */
void fs_forget_secret(void *arg, const char *name);

/* Frees every handle still open (at shutdown). */
void fs_release_all(struct dbosfs *fs);

/* The tree's tables. */
extern const struct dir_def root_dir;     /* fs_root.c */
extern const struct dir_def meta_dir;     /* fs_meta.c */
extern const struct dir_def instance_dir; /* fs_instance.c */
/* MOUNTPOINT/NAME/ca.pem into out when the provider has a CA of its own:
 * 1; 0 when it has none; -ENAMETOOLONG. */
int instance_ca_path(struct dbosfs *fs, const char *name, char *out, size_t outsz);
extern const struct dir_def databases_dir; /* fs_databases.c: NAME/databases/ */

/* fs_databases.c: the cache of NAME/databases/ lists. refresh runs in the
 * refresher's thread after every period (refresher_set_hook). */
int fs_databases_init(struct dbosfs *fs);
void fs_databases_free(struct dbosfs *fs);
void fs_databases_refresh(void *fs);

/* The i-th file of d: its own rows, then its tables' (NULL past the end). */
const struct file_def *dir_file(const struct dir_def *d, int i);
int dir_file_count(const struct dir_def *d);

/* fs_branch.c: NAME/branch and NAME/restore. */
extern const struct file_table copy_files;
/* fs_link.c: .dbosfs/link. */
int build_link(struct dbosfs *fs, const struct node *n, struct buf *out);
int write_link(struct dbosfs *fs, const struct node *n, const char *value, struct errmsg *e);
/* fs_branch.c: info's wal_archive_bytes line (nothing for providers
 * without a restore window), and the durable line of providers that
 * track it. */
int build_info_pitr(struct dbosfs *fs, const char *name, struct buf *out);

#endif
