/* The router: every FUSE operation, dispatched by path to fs_root.c,
 * fs_meta.c or fs_instance.c. Nothing here waits on a provider except the
 * operations that mutate (mkdir, rmdir, writes to control files). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "errmap.h"
#include "escape.h"
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
	escape_message(msg, fs->root_error, sizeof(fs->root_error));
	pthread_mutex_unlock(&fs->lock);
	return err;
}

int run_op(struct dbosfs *fs, const char *name, const char *op,
           int (*fn)(struct dbosfs *fs, void *arg, struct errmsg *e), void *arg, struct errmsg *e)
{
	int rc = state_begin_op(fs->cache, name, op, e);
	if (rc)
		return rc;
	rc = fn(fs, arg, e);
	state_end_op(fs->cache, name);
	return rc;
}

const struct file_def *dir_file(const struct dir_def *d, int i)
{
	if (i < d->file_count)
		return &d->files[i];
	i -= d->file_count;
	for (int t = 0; t < d->table_count; t++) {
		if (i < d->tables[t]->count)
			return &d->tables[t]->files[i];
		i -= d->tables[t]->count;
	}
	return NULL;
}

int dir_file_count(const struct dir_def *d)
{
	int n = d->file_count;
	for (int t = 0; t < d->table_count; t++)
		n += d->tables[t]->count;
	return n;
}

static const struct file_def *find_file(const struct dir_def *d, const char *name)
{
	const struct file_def *f;
	for (int i = 0; (f = dir_file(d, i)) != NULL; i++)
		if (strcmp(f->name, name) == 0 && (!f->present || f->present(fs_get())))
			return f;
	return NULL;
}

static const struct dir_def *find_dir(const struct dir_def *d, const char *name)
{
	for (int i = 0; i < d->dir_count; i++)
		if (strcmp(d->dirs[i]->name, name) == 0)
			return d->dirs[i];
	return NULL;
}

/* Walks the tables one component at a time: a file (the last component),
 * a fixed subdirectory, or an entry the directory's exists() knows. */
int fs_resolve(struct dbosfs *fs, const char *path, struct node *n)
{
	memset(n, 0, sizeof(*n));
	n->kind = NODE_DIR;
	n->dir = &root_dir;
	const char *p = path;
	while (*p == '/')
		p++;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		char comp[NODE_NAME_MAX];
		if (n->kind != NODE_DIR)
			return -ENOTDIR;
		if (len >= sizeof(comp))
			return -ENOENT;
		memcpy(comp, p, len);
		comp[len] = '\0';
		const struct dir_def *d = n->dir;
		const struct file_def *f;
		const struct dir_def *sub;
		if ((f = find_file(d, comp)) != NULL) {
			n->kind = NODE_FILE;
			n->file = f;
		} else if ((sub = find_dir(d, comp)) != NULL) {
			n->parent = d;
			n->dir = sub;
		} else if (d->entry && d->exists && !n->sub[0]) {
			/* Entry names are kept by depth: an instance, then one
			 * level below it. */
			char *slot = n->name[0] ? n->sub : n->name;
			memcpy(slot, comp, len + 1);
			if (!d->exists(fs, n, comp))
				return -ENOENT;
			n->parent = d;
			n->dir = d->entry;
		} else {
			return -ENOENT;
		}
		p += len;
		while (*p == '/')
			p++;
	}
	return 0;
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

/* A file's stat: st_size is the length its content has now, built from
 * the cache as open would build it (files that block report what they would
 * show at once). Content can change before the next read; reads are direct
 * I/O and always return the content as of open, to its end. */
static void fill_file_stat(struct dbosfs *fs, const struct node *n, struct stat *st)
{
	fs_fill_stat(fs, st, S_IFREG | n->file->mode);
	file_build_fn build = n->file->build_at_read ? n->file->stat_build : n->file->build;
	/* A secret's length is the owner's business too: others (allow_other)
	 * see size 0, as they may not read it anyway. */
	if (!build || (n->file->secret && !fs_caller_is_owner()))
		return;
	struct buf content = BUF_INIT;
	if (build(fs, n, &content) == 0) {
		st->st_size = (off_t)content.len;
		st->st_blocks = (blkcnt_t)((content.len + 511) / 512);
	}
	buf_free_secret(&content);
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	if (n.kind == NODE_FILE) {
		fill_file_stat(fs, &n, st);
		return 0;
	}
	fs_fill_stat(fs, st, S_IFDIR | n.dir->mode);
	if (n.dir == &root_dir)
		st->st_nlink = 3 + state_count(fs->cache);
	return 0;
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
	if (n.kind != NODE_DIR)
		return -ENOTDIR;
	const struct dir_def *d = n.dir;
	struct stat st;
	fill(buf, filler, ".", NULL);
	fill(buf, filler, "..", NULL);
	for (int i = 0; i < d->dir_count; i++) {
		fs_fill_stat(fs, &st, S_IFDIR | d->dirs[i]->mode);
		fill(buf, filler, d->dirs[i]->name, &st);
	}
	if (d->entry && d->list) {
		char **names;
		size_t count;
		rc = d->list(fs, &n, &names, &count);
		if (rc)
			return rc;
		fs_fill_stat(fs, &st, S_IFDIR | d->entry->mode);
		for (size_t i = 0; i < count; i++) {
			fill(buf, filler, names[i], &st);
			free(names[i]);
		}
		free(names);
	}
	const struct file_def *f;
	for (int i = 0; (f = dir_file(d, i)) != NULL; i++) {
		if (f->present && !f->present(fs))
			continue;
		struct node file = n;
		file.kind = NODE_FILE;
		file.file = f;
		fill_file_stat(fs, &file, &st);
		fill(buf, filler, f->name, &st);
	}
	return 0;
}

/* The one rule for files (spec, "Who may do what"): only control files
 * are written, only by the owner (or root); secrets are read only by them. */
static bool file_permits(const struct file_def *def, bool read, bool write)
{
	bool owner = fs_caller_is_owner();
	return !(write && (!def->write || !owner)) && !(read && def->secret && !owner);
}

static void open_file_free(struct open_file *of)
{
	buf_free_secret(&of->content);
	buf_free_secret(&of->pending);
	pthread_mutex_destroy(&of->lock);
	free(of);
}

/* Another handle that writes the same file of the same instance. */
static bool writer_exists(struct dbosfs *fs, const struct open_file *of)
{
	for (const struct open_file *o = fs->open_files; o; o = o->next)
		if (o->writer && o->node.file == of->node.file &&
		    strcmp(o->node.name, of->node.name) == 0)
			return true;
	return false;
}

/* Lists the handle. A file whose write runs an operation has one write
 * handle at a time: the kernel serialises writers of one file on its inode
 * lock before write() reaches us, so a second handle's write would sleep
 * uninterruptibly (D state) for a whole migration, then run its own. A
 * second write-open is refused with EBUSY instead. The kernel releases a
 * closed handle asynchronously, so a refusal waits up to 200 ms for a
 * release in flight (`echo a > f; echo b > f` must both work). */
static int add_open_file(struct dbosfs *fs, struct open_file *of)
{
	for (int waited_ms = 0;; waited_ms += 10) {
		pthread_mutex_lock(&fs->lock);
		if (!of->writer || !writer_exists(fs, of)) {
			of->next = fs->open_files;
			if (of->next)
				of->next->prev = of;
			fs->open_files = of;
			pthread_mutex_unlock(&fs->lock);
			return 0;
		}
		pthread_mutex_unlock(&fs->lock);
		if (waited_ms >= 200 || op_interrupted())
			break;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	char msg[256];
	snprintf(msg, sizeof(msg),
	         "%s of %s refused: another process has %s/%s open for writing (one writer at a "
	         "time)",
	         of->node.file->op, of->node.name, of->node.name, of->node.file->name);
	return instance_fail(fs, of->node.name, -EBUSY, msg);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	if (n.kind != NODE_FILE)
		return -EISDIR;
	const struct file_def *def = n.file;
	int acc = fi->flags & O_ACCMODE;
	if (!file_permits(def, acc != O_WRONLY, acc != O_RDONLY))
		return -EACCES;
	/* Writers of one file queue in the kernel (inode lock) before write()
	 * is called, so a write-open is refused while an operation runs. */
	if (acc != O_RDONLY && def->op && n.name[0]) {
		struct errmsg e = {{0}};
		rc = state_check_idle(fs->cache, n.name, def->op, &e);
		if (rc)
			return instance_fail(fs, n.name, rc, e.text);
	}

	struct open_file *of = calloc(1, sizeof(*of));
	if (!of)
		return -ENOMEM;
	of->node = n;
	pthread_mutex_init(&of->lock, NULL);
	/* Snapshot at open, unless nothing will be read or reading blocks. */
	if (acc != O_WRONLY && !def->build_at_read) {
		rc = def->build ? def->build(fs, &of->node, &of->content) : 0;
		of->built = rc == 0;
	}
	if (rc == 0) {
		of->writer = acc != O_RDONLY && def->op && n.name[0];
		rc = add_open_file(fs, of);
	}
	if (rc) {
		open_file_free(of);
		return rc;
	}
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
		const struct file_def *def = of->node.file;
		rc = def->build ? def->build(fs_get(), &of->node, &of->content) : 0;
		of->built = rc == 0;
	}
	/* tail -f of a running migration: a read past the end asks for more. */
	if (rc == 0 && of->node.file->follow && !of->follow_done && off >= 0 &&
	    (size_t)off >= of->content.len)
		of->follow_done =
		    !of->node.file->follow(fs_get(), &of->node, &of->content, &of->follow_mark);
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

/* Records a failed write in the instance's last_error, or the mount's. */
static int write_fail(struct dbosfs *fs, const struct node *n, int err, const char *msg)
{
	return n->name[0] ? instance_fail(fs, n->name, err, msg) : fs_root_fail(fs, err, msg);
}

struct file_write {
	const struct node *node;
	const char *value;
};

static int run_file_write(struct dbosfs *fs, void *arg, struct errmsg *e)
{
	struct file_write *w = arg;
	return w->node->file->write(fs, w->node, w->value, e);
}

/* Acts on one written value: the file's write action, as its operation
 * when it has one. 0 or -errno, the message recorded. */
static int act(struct dbosfs *fs, const struct node *n, const char *data, size_t size)
{
	struct errmsg e = {{0}};
	char value[WRITE_MAX + 1];
	char msg[ERRMSG_MAX + 256];
	int rc = control_value(data, size, value, sizeof(value), &e);
	if (rc) {
		/* Never echo what was written (it may be a password). */
		snprintf(msg, sizeof(msg), "write to %s%s%s refused: %s", n->name,
		         n->name[0] ? "/" : "", n->file->name, e.text);
		return write_fail(fs, n, rc, msg);
	}
	if (n->file->op && n->name[0]) {
		struct file_write w = {n, value};
		rc = run_op(fs, n->name, n->file->op, run_file_write, &w, &e);
	} else {
		rc = n->file->write(fs, n, value, &e);
	}
	secret_wipe(value, sizeof(value));
	if (rc)
		return write_fail(fs, n, rc, e.text[0] ? e.text : strerror(-rc));
	return 0;
}

/* Takes the pending bytes out of the handle (the caller wipes and frees
 * them), so the action runs without the handle's lock. */
static struct buf take_pending(struct open_file *of)
{
	struct buf line = of->pending;
	memset(&of->pending, 0, sizeof(of->pending));
	return line;
}

/* A value is one line: bytes accumulate per open file until a newline (the
 * write that completes the line acts and returns the action's result) or
 * the close (flush acts on an unterminated value). */
static int op_write(const char *path, const char *data, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	if (!of || of->node.kind != NODE_FILE || !of->node.file->write)
		return -EBADF;
	struct dbosfs *fs = fs_get();
	pthread_mutex_lock(&of->lock);
	size_t total = of->pending.len + size;
	if (total > WRITE_MAX) {
		buf_free_secret(&of->pending);
		pthread_mutex_unlock(&of->lock);
		char msg[160];
		snprintf(msg, sizeof(msg),
		         "write of %zu bytes to %s refused: control files take at most %d bytes",
		         total, of->node.file->name, WRITE_MAX);
		return write_fail(fs, &of->node, -EINVAL, msg);
	}
	/* Offsets are ignored: echo >> writes at st_size. A secret written in
	 * pieces must not stay behind in blocks that growing the buffer frees:
	 * room for the longest value first. */
	int rc = 0;
	if (of->node.file->secret && of->pending.len == 0 && of->pending.cap <= WRITE_MAX) {
		static const char room[WRITE_MAX];
		rc = buf_append(&of->pending, room, sizeof(room));
		buf_reset(&of->pending);
	}
	if (rc == 0)
		rc = buf_append(&of->pending, data, size);
	if (rc || !memchr(data, '\n', size)) {
		pthread_mutex_unlock(&of->lock);
		return rc ? rc : (int)size;
	}
	struct buf line = take_pending(of);
	pthread_mutex_unlock(&of->lock);
	rc = act(fs, &of->node, line.data, line.len);
	buf_free_secret(&line);
	return rc ? rc : (int)size;
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
	if (n.kind != NODE_FILE)
		return -EPERM; /* a directory: its times are not kept */
	if (!file_permits(n.file, false, true))
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

/* Every close(2) flushes: a value left without its newline acts here. Its
 * errno is lost for echo (bash ignores close errors) but last_error has it. */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	if (!of || of->node.kind != NODE_FILE || !of->node.file->write)
		return 0;
	pthread_mutex_lock(&of->lock);
	struct buf line = take_pending(of);
	pthread_mutex_unlock(&of->lock);
	int rc = line.len ? act(fs_get(), &of->node, line.data, line.len) : 0;
	buf_free_secret(&line);
	return rc;
}

/* The same rules as open, mkdir and rmdir, so `test -w` tells the truth. */
static int op_access(const char *path, int mask)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc || mask == F_OK)
		return rc;
	if (n.kind == NODE_DIR) /* only mkdir takes new names, from the owner */
		return (mask & W_OK) && !(n.dir->mkdir && fs_caller_is_owner()) ? -EACCES : 0;
	if ((mask & X_OK) || !file_permits(n.file, mask & R_OK, mask & W_OK))
		return -EACCES;
	return 0;
}

/* New names are made only in directories that hold entries (mkdir of an
 * instance at the root). */
static int op_mkdir(const char *path, mode_t mode)
{
	struct dbosfs *fs = fs_get();
	const char *slash = strrchr(path, '/');
	char parent[PATH_MAX];
	char msg[256];
	size_t plen = slash > path ? (size_t)(slash - path) : 1;
	if (!slash || plen >= sizeof(parent))
		return -ENOENT;
	memcpy(parent, path, plen);
	parent[plen] = '\0';
	struct node n;
	int rc = fs_resolve(fs, parent, &n);
	if (rc == 0 && (n.kind != NODE_DIR || !n.dir->mkdir)) {
		snprintf(msg, sizeof(msg), "mkdir %.200s refused: no new directories here", path);
		return write_fail(fs, &n, -EPERM, msg);
	}
	return rc ? rc : n.dir->mkdir(fs, &n, slash + 1);
}

static int op_rmdir(const char *path)
{
	struct dbosfs *fs = fs_get();
	struct node n;
	int rc = fs_resolve(fs, path, &n);
	if (rc)
		return rc;
	if (n.kind != NODE_DIR)
		return -ENOTDIR;
	if (!n.parent || !n.parent->entry || n.dir != n.parent->entry || !n.parent->rmdir)
		return -EPERM; /* the root and fixed directories such as .dbosfs */
	return n.parent->rmdir(fs, &n);
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
	sv->f_files = 1 + n * (unsigned long)(1 + dir_file_count(&instance_dir));
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
