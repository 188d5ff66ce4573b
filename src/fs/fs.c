/* The router: every FUSE operation, dispatched by path to fs_root.c,
 * fs_meta.c or fs_instance.c. Nothing here waits on a provider except the
 * operations that mutate (mkdir, rmdir, writes to control files). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "validate.h"

#define META_DIR ".dbosfs"
/* A value written to a control file is a path or a name: never more. */
#define WRITE_MAX 4096

struct dbosfs *fs_get(void)
{
	return fuse_get_context()->private_data;
}

bool fs_caller_is_owner(void)
{
	struct fuse_context *ctx = fuse_get_context();
	return ctx->uid == 0 || ctx->uid == fs_get()->opt->owner_uid;
}

int fs_root_fail(struct dbosfs *fs, int err, const char *msg)
{
	log_error("%s", msg);
	pthread_mutex_lock(&fs->lock);
	snprintf(fs->root_error, sizeof(fs->root_error), "%s", msg);
	pthread_mutex_unlock(&fs->lock);
	return err;
}

static int find_file(const struct file_def *table, int count, const char *name)
{
	for (int i = 0; i < count; i++)
		if (strcmp(table[i].name, name) == 0)
			return i;
	return -1;
}

/* The directory itself (rest == NULL) or one of the files of its table. */
static int resolve_child(struct node *n, const char *rest, enum node_kind dir_kind,
                         enum node_kind file_kind, const struct file_def *table, int count)
{
	if (!rest) {
		n->kind = dir_kind;
		return 0;
	}
	n->kind = file_kind;
	n->file = find_file(table, count, rest);
	return n->file < 0 ? -ENOENT : 0;
}

int fs_resolve(struct dbosfs *fs, const char *path, struct node *n)
{
	memset(n, 0, sizeof(*n));
	if (strcmp(path, "/") == 0) {
		n->kind = NODE_ROOT;
		return 0;
	}
	const char *first = path + 1;
	const char *slash = strchr(first, '/');
	size_t len = slash ? (size_t)(slash - first) : strlen(first);
	if (len == 0 || len >= sizeof(n->name))
		return -ENOENT;
	memcpy(n->name, first, len);
	n->name[len] = '\0';
	const char *rest = slash ? slash + 1 : NULL;
	if (rest && (!*rest || strchr(rest, '/')))
		return -ENOENT;

	if (strcmp(n->name, META_DIR) == 0)
		return resolve_child(n, rest, NODE_META_DIR, NODE_META_FILE, meta_files,
		                     meta_file_count);
	/* A name with a dot is never an instance; the cache decides the rest. */
	if (n->name[0] == '.' || !state_get(fs->cache, n->name, NULL))
		return -ENOENT;
	return resolve_child(n, rest, NODE_INST_DIR, NODE_INST_FILE, instance_files,
	                     instance_file_count);
}

void fs_fill_stat(struct dbosfs *fs, struct stat *st, mode_t mode)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = fs->opt->owner_uid;
	st->st_gid = fs->opt->owner_gid;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mounted_at;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	switch (n.kind) {
	case NODE_ROOT:
	case NODE_META_DIR:
	case NODE_INST_DIR:
		fs_fill_stat(fs, st, S_IFDIR | 0755);
		if (n.kind == NODE_ROOT)
			st->st_nlink = 3 + state_count(fs->cache);
		return 0;
	case NODE_META_FILE:
		fs_fill_stat(fs, st, S_IFREG | meta_files[n.file].mode);
		return 0;
	case NODE_INST_FILE:
		fs_fill_stat(fs, st, S_IFREG | instance_files[n.file].mode);
		return 0;
	}
	return -ENOENT;
}

static int fill(void *buf, fuse_fill_dir_t filler, const char *name, struct stat *st)
{
	return filler(buf, name, st, 0, st ? FUSE_FILL_DIR_PLUS : 0) ? -ENOMEM : 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	struct stat st;
	fill(buf, filler, ".", NULL);
	fill(buf, filler, "..", NULL);
	switch (n.kind) {
	case NODE_ROOT:
		return root_readdir(fs, buf, filler);
	case NODE_META_DIR:
		for (int i = 0; i < meta_file_count; i++) {
			fs_fill_stat(fs, &st, S_IFREG | meta_files[i].mode);
			fill(buf, filler, meta_files[i].name, &st);
		}
		return 0;
	case NODE_INST_DIR:
		for (int i = 0; i < instance_file_count; i++) {
			fs_fill_stat(fs, &st, S_IFREG | instance_files[i].mode);
			fill(buf, filler, instance_files[i].name, &st);
		}
		return 0;
	default:
		return -ENOTDIR;
	}
}

static const struct file_def *node_def(const struct node *n)
{
	if (n->kind == NODE_META_FILE)
		return &meta_files[n->file];
	if (n->kind == NODE_INST_FILE)
		return &instance_files[n->file];
	return NULL;
}

/* The one rule for files (spec, "Who may do what"): only control files
 * are written, only by the owner (or root); secrets are read only by them. */
static bool file_permits(const struct file_def *def, bool read, bool write)
{
	bool owner = fs_caller_is_owner();
	return !(write && (!def->writable || !owner)) && !(read && def->secret && !owner);
}

static void open_file_free(struct open_file *of)
{
	buf_free_secret(&of->content);
	pthread_mutex_destroy(&of->lock);
	free(of);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	const struct file_def *def = node_def(&n);
	if (!def)
		return -EISDIR;
	int acc = fi->flags & O_ACCMODE;
	if (!file_permits(def, acc != O_WRONLY, acc != O_RDONLY))
		return -EACCES;

	struct open_file *of = calloc(1, sizeof(*of));
	if (!of)
		return -ENOMEM;
	of->node = n;
	pthread_mutex_init(&of->lock, NULL);
	if (n.kind == NODE_META_FILE) {
		rc = meta_build(fs, n.file, &of->content);
		of->built = true;
	} else {
		rc = instance_open(fs, of, fi->flags);
	}
	if (rc) {
		open_file_free(of);
		return rc;
	}
	pthread_mutex_lock(&fs->lock);
	of->next = fs->open_files;
	if (of->next)
		of->next->prev = of;
	fs->open_files = of;
	pthread_mutex_unlock(&fs->lock);
	fi->direct_io = 1; /* sizes are not known in advance */
	fi->nonseekable = 0;
	fi->fh = (uint64_t)(uintptr_t)of;
	return 0;
}

static int op_read(const char *path, char *out, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	if (!of)
		return -EBADF;
	int rc = 0;
	pthread_mutex_lock(&of->lock);
	if (!of->built) {
		rc = instance_build(fs_get(), of);
		of->built = rc == 0;
	}
	size_t n = 0;
	if (rc == 0 && off >= 0 && (size_t)off < of->content.len) {
		n = of->content.len - (size_t)off;
		if (n > size)
			n = size;
		memcpy(out, of->content.data + off, n);
	}
	pthread_mutex_unlock(&of->lock);
	return rc ? rc : (int)n;
}

static int op_write(const char *path, const char *data, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	if (!of || of->node.kind != NODE_INST_FILE)
		return -EBADF;
	struct dbosfs *fs = fs_get();
	if (size > WRITE_MAX) {
		char msg[160];
		snprintf(msg, sizeof(msg),
		         "write of %zu bytes to %s refused: control files take at most %d bytes",
		         size, instance_files[of->node.file].name, WRITE_MAX);
		return instance_fail(fs, of->node.name, -EINVAL, msg);
	}
	/* Each write is one whole command, whatever its offset (echo >>
	 * writes at st_size, which is 0 here). */
	return instance_write(fs, &of->node, data, size);
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	if (!of)
		return 0;
	struct dbosfs *fs = fs_get();
	pthread_mutex_lock(&fs->lock);
	if (of->prev)
		of->prev->next = of->next;
	else
		fs->open_files = of->next;
	if (of->next)
		of->next->prev = of->prev;
	pthread_mutex_unlock(&fs->lock);
	open_file_free(of);
	return 0;
}

void fs_release_all(struct dbosfs *fs)
{
	pthread_mutex_lock(&fs->lock);
	while (fs->open_files) {
		struct open_file *of = fs->open_files;
		fs->open_files = of->next;
		open_file_free(of);
	}
	pthread_mutex_unlock(&fs->lock);
}

/* Editors and touch: truncate, utimens and fsync succeed on control files
 * the caller may write, and change nothing. */
static int writable_by_caller(const char *path)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	const struct file_def *def = node_def(&n);
	if (!def)
		return -EPERM; /* a directory: its times are not kept */
	if (!file_permits(def, false, true))
		return -EACCES;
	return 0;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	return writable_by_caller(path);
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	return writable_by_caller(path);
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	return 0;
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
	return 0;
}

/* The same rules as open, mkdir and rmdir, so `test -w` tells the truth. */
static int op_access(const char *path, int mask)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc || mask == F_OK)
		return rc;
	const struct file_def *def = node_def(&n);
	if (!def) /* a directory: only the root takes new names, from the owner */
		return (mask & W_OK) && !(n.kind == NODE_ROOT && fs_caller_is_owner()) ? -EACCES
		                                                                       : 0;
	if ((mask & X_OK) || !file_permits(def, mask & R_OK, mask & W_OK))
		return -EACCES;
	return 0;
}

static int op_mkdir(const char *path, mode_t mode)
{
	struct dbosfs *fs = fs_get();
	const char *name = path + 1;
	if (strchr(name, '/')) {
		char msg[256];
		snprintf(msg, sizeof(msg), "mkdir %s refused: instances live at the top level only",
		         path);
		return fs_root_fail(fs, -EPERM, msg);
	}
	return root_mkdir(fs, name);
}

static int op_rmdir(const char *path)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	if (n.kind == NODE_META_DIR)
		return -EPERM;
	if (n.kind != NODE_INST_DIR)
		return -ENOTDIR;
	return root_rmdir(fs, n.name);
}

/* Nothing may be created, removed or renamed by name: only mkdir/rmdir of
 * instances. rm -rf must never destroy an instance. */
static int op_unlink(const char *path)
{
	return -EPERM;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return -EPERM;
}

static int op_mknod(const char *path, mode_t mode, dev_t dev)
{
	return -EPERM;
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	return -EPERM;
}

static int op_symlink(const char *target, const char *path)
{
	return -EPERM;
}

static int op_link(const char *from, const char *to)
{
	return -EPERM;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	return -EPERM;
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	return -EPERM;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	struct dbosfs *fs = fs_get();
	memset(sv, 0, sizeof(*sv));
	size_t n = state_count(fs->cache);
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_blocks = n + 1;
	sv->f_files = 1 + n * (unsigned long)(1 + instance_file_count);
	sv->f_namemax = 255;
	return 0;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* Paths, not inode numbers, are what this filesystem knows. */
	cfg->use_ino = 0;
	cfg->nullpath_ok = 0;
	cfg->hard_remove = 1;
	return fuse_get_context()->private_data;
}

const struct fuse_operations dbosfs_operations = {
    .init = op_init,
    .getattr = op_getattr,
    .access = op_access,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .release = op_release,
    .flush = op_flush,
    .fsync = op_fsync,
    .truncate = op_truncate,
    .utimens = op_utimens,
    .mkdir = op_mkdir,
    .rmdir = op_rmdir,
    .unlink = op_unlink,
    .create = op_create,
    .mknod = op_mknod,
    .rename = op_rename,
    .symlink = op_symlink,
    .link = op_link,
    .chmod = op_chmod,
    .chown = op_chown,
    .statfs = op_statfs,
};
