/* NAME/branch on the local provider: NEWNAME becomes a copy of NAME as it
 * is now, while NAME keeps serving its clients.
 *
 * The copy is an online base backup (PostgreSQL's low-level API):
 *   1. a temporary physical replication slot, so the server keeps every WAL
 *      segment from here on while our session lives (a checkpoint during a
 *      long copy would otherwise recycle the segments the copy needs);
 *   2. pg_backup_start(fast checkpoint);
 *   3. the data directory is copied file by file, pg_wal last: a reflink
 *      (FICLONE) where the filesystem shares blocks (xfs, btrfs), else
 *      copy_file_range (in-kernel copy), else read/write;
 *   4. pg_backup_stop() gives the backup_label, written into the copy;
 *   5. pg_wal is copied (it now holds the backup's end record).
 * Started, the copy replays WAL from the label's checkpoint to a consistent
 * state and beyond, to what had been written when pg_wal was copied.
 *
 * Crash safety: the copy is built in spares/branch-NEWNAME.N.tmp, which
 * every mount removes (tmpl_cleanup), and becomes instances/NEWNAME by one
 * rename after its meta file and its durable-pending marker are written.
 * A kill -9 before the instance is complete (intent record) leaves nothing;
 * after it, NEWNAME is complete and its next start replays its WAL. The
 * copy is not flushed to disk before NEWNAME is available: the flusher
 * does that in the background, and a machine crash before it is done
 * leaves NEWNAME "failed" rather than possibly torn (local_durable.c). */
#include "local_internal.h"
#include "log.h"
#include "pg.h"
#include "provider.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define BRANCH_CONNECT_TIMEOUT_MS 5000
/* The fast checkpoint of pg_backup_start writes every dirty buffer. */
#define BRANCH_BACKUP_TIMEOUT_MS 300000

static struct local_provider *LP(struct provider *p)
{
	return p->priv;
}

/* How the files were copied, for the log. */
struct copy_stats {
	long long bytes;
	long files;
	long reflinked;
	long long checkpoint_ms, copy_ms; /* where the time went, for the log */
	long copied;
	bool reflink_failed; /* stop trying FICLONE after the first refusal */
};

struct copy_ctx {
	const struct local_provider *lp;
	struct copy_stats stats;
	const atomic_bool *cancel;
	bool keep_label; /* copying a finished base backup: its label comes along */
	/* pg_wal: only the segments from..to (24 hex digits each) are needed;
	 * older ones are before the backup, newer ones recycled or preallocated
	 * (after a bulk load, hundreds of MiB). Empty: every segment. */
	char wal_from[32], wal_to[32];
};

/* Without reflinks the copy is CPU work in the kernel (page cache to page
 * cache), one core per copying thread: a big file (a table's 1 GiB segment)
 * is copied by COPY_THREADS threads, each a range of its own. */
#define COPY_THREADS        4
#define COPY_PARALLEL_BYTES (64LL << 20)

struct copy_range {
	int sfd, dfd;
	off_t from, to;
	int rc;
};

static void *copy_range_main(void *arg)
{
	struct copy_range *r = arg;
	loff_t in = r->from, out = r->from;
	while (in < r->to) {
		ssize_t n = copy_file_range(r->sfd, &in, r->dfd, &out, (size_t)(r->to - in), 0);
		if (n > 0) {
			out = in;
			continue;
		}
		if (n == 0)
			break; /* the file shrank: WAL replay puts it right */
		if (errno == EINTR)
			continue;
		r->rc = -errno;
		break;
	}
	return NULL;
}

/* 0 when [0, size) was copied by the threads; -errno (then the caller
 * copies the plain way, from the start). */
static int copy_parallel(int sfd, int dfd, off_t size)
{
	struct copy_range r[COPY_THREADS];
	pthread_t t[COPY_THREADS];
	int started = 0, rc = 0;
	off_t chunk = (size + COPY_THREADS - 1) / COPY_THREADS;
	chunk = (chunk + 8191) & ~(off_t)8191; /* whole pages of PostgreSQL */
	for (int i = 0; i < COPY_THREADS; i++) {
		r[i] = (struct copy_range){sfd, dfd, i * chunk, (i + 1) * chunk, 0};
		if (r[i].to > size)
			r[i].to = size;
		if (r[i].from >= r[i].to)
			break;
		if (pthread_create(&t[i], NULL, copy_range_main, &r[i]) != 0) {
			copy_range_main(&r[i]);
			if (r[i].rc && !rc)
				rc = r[i].rc;
			continue;
		}
		started |= 1 << i;
	}
	for (int i = 0; i < COPY_THREADS; i++)
		if (started & (1 << i)) {
			pthread_join(t[i], NULL);
			if (r[i].rc && !rc)
				rc = r[i].rc;
		}
	if (!rc && lseek(sfd, size, SEEK_SET) < 0)
		rc = -errno;
	if (!rc && lseek(dfd, size, SEEK_SET) < 0)
		rc = -errno;
	return rc;
}

static int copy_contents(struct copy_ctx *cx, int sfd, int dfd, off_t size)
{
	if (!cx->stats.reflink_failed && ioctl(dfd, FICLONE, sfd) == 0) {
		cx->stats.reflinked++;
		return 0;
	}
	/* EOPNOTSUPP/EXDEV/EINVAL: this filesystem (ext4) does not share
	 * blocks; do not ask again for every file. */
	cx->stats.reflink_failed = true;
	cx->stats.copied++;
	if (size >= COPY_PARALLEL_BYTES && copy_parallel(sfd, dfd, size) != 0) {
		/* From the start, one thread (below). */
		if (lseek(sfd, 0, SEEK_SET) < 0 || lseek(dfd, 0, SEEK_SET) < 0 ||
		    ftruncate(dfd, 0) < 0)
			return -errno;
	}
	/* What remains (all of a small file; what a big one grew by). */
	for (;;) {
		ssize_t n = copy_file_range(sfd, NULL, dfd, NULL, 1 << 30, 0);
		if (n > 0)
			continue;
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL)
			return -errno;
		break;
	}
	/* Plain read/write, from where copy_file_range stopped. */
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(sfd, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(dfd, buf + off, (size_t)(n - off));
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			off += w;
		}
	}
}

static int owned(const struct copy_ctx *cx, int fd)
{
	if (cx->lp->acct.drop && fchown(fd, cx->lp->acct.uid, cx->lp->acct.gid) < 0)
		return -errno;
	return 0;
}

static int copy_file_at(struct copy_ctx *cx, int sdir, int ddir, const char *name, mode_t mode,
                        struct errmsg *e)
{
	int sfd = openat(sdir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (sfd < 0) {
		if (errno == ENOENT)
			return 0; /* dropped while we copied: the WAL replay removes it too */
		return errmsg_set(e, -errno, "cannot open %s: %s", name, strerror(errno));
	}
	int dfd =
	    openat(ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode & 0700);
	if (dfd < 0) {
		int rc = -errno;
		close(sfd);
		return errmsg_set(e, rc, "cannot create %s: %s", name, strerror(-rc));
	}
	struct stat st;
	int rc = fstat(sfd, &st) < 0 ? -errno : 0;
	if (!rc)
		rc = copy_contents(cx, sfd, dfd, st.st_size);
	if (!rc)
		rc = owned(cx, dfd);
	if (!rc) {
		cx->stats.files++;
		cx->stats.bytes += st.st_size;
	}
	close(sfd);
	if (close(dfd) < 0 && !rc)
		rc = -errno;
	if (rc)
		return errmsg_set(e, rc, "cannot copy %s: %s", name, strerror(-rc));
	return 0;
}

/* Directories whose contents a base backup leaves out (PostgreSQL's own
 * list for pg_basebackup): they are rebuilt or meaningless in a copy. */
static bool contents_skipped(const struct copy_ctx *cx, const char *top, const char *name)
{
	if (cx->keep_label && !top && strcmp(name, "pg_wal") == 0)
		return false; /* a base backup's pg_wal is part of it */
	static const char *const skip[] = {"pg_dynshmem", "pg_notify",    "pg_replslot",
	                                   "pg_serial",   "pg_snapshots", "pg_stat_tmp",
	                                   "pg_subtrans", "pg_wal"};
	if (top)
		return false;
	for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strcmp(name, skip[i]) == 0)
			return true;
	return false;
}

static bool file_skipped(const struct copy_ctx *cx, const char *top, const char *name)
{
	if (strcmp(name, "pg_internal.init") == 0)
		return true;
	if (top)
		return false;
	if (cx->keep_label && strcmp(name, "backup_label") == 0)
		return false;
	return strcmp(name, "postmaster.pid") == 0 || strcmp(name, "postmaster.opts") == 0 ||
	       strcmp(name, "dbosfs_first_start.conf") == 0 || strcmp(name, "backup_label") == 0 ||
	       strcmp(name, "tablespace_map") == 0 || strcmp(name, "backup_label.old") == 0;
}

/* Copies directory sdir into the (existing) directory ddir; top is NULL
 * at the data directory's top level. With wal_only, only pg_wal. */
static int copy_tree(struct copy_ctx *cx, int sdir, int ddir, const char *top, struct errmsg *e)
{
	int fd = dup(sdir);
	if (fd < 0)
		return errmsg_set(e, -errno, "dup: %s", strerror(errno));
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return errmsg_set(e, -errno, "cannot read a directory: %s", strerror(errno));
	}
	rewinddir(d);
	int rc = 0;
	struct dirent *de;
	while (!rc && (de = readdir(d))) {
		const char *n = de->d_name;
		struct stat st;
		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		if (cx->cancel && atomic_load(cx->cancel)) {
			rc = errmsg_set(e, -EINTR, "interrupted");
			break;
		}
		if (fstatat(sdir, n, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			rc = errmsg_set(e, -errno, "cannot stat %s: %s", n, strerror(errno));
			break;
		}
		if (S_ISREG(st.st_mode)) {
			if (top && strcmp(top, "pg_wal") == 0 && cx->wal_from[0] &&
			    strlen(n) == 24 && strspn(n, "0123456789ABCDEF") == 24 &&
			    (strcmp(n, cx->wal_from) < 0 || strcmp(n, cx->wal_to) > 0))
				continue;
			if (!file_skipped(cx, top, n))
				rc = copy_file_at(cx, sdir, ddir, n, st.st_mode, e);
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			continue; /* pg_tblspc links: dbosfs never makes tablespaces */
		if (mkdirat(ddir, n, 0700) < 0 && errno != EEXIST) {
			rc = errmsg_set(e, -errno, "cannot create %s: %s", n, strerror(errno));
			break;
		}
		int s2 = openat(sdir, n, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		int d2 = openat(ddir, n, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (s2 < 0 || d2 < 0) {
			rc = errno == ENOENT
			         ? 0
			         : errmsg_set(e, -errno, "cannot open %s: %s", n, strerror(errno));
		} else {
			rc = owned(cx, d2);
			if (!rc && !contents_skipped(cx, top, n))
				rc = copy_tree(cx, s2, d2, n, e);
		}
		if (s2 >= 0)
			close(s2);
		if (d2 >= 0)
			close(d2);
	}
	closedir(d);
	return rc;
}

static int write_at(const struct copy_ctx *cx, int dir, const char *name, const char *text,
                    struct errmsg *e)
{
	int fd = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot create %s: %s", name, strerror(errno));
	size_t len = strlen(text);
	int rc = write(fd, text, len) == (ssize_t)len ? 0 : (errno ? -errno : -EIO);
	if (!rc)
		rc = owned(cx, fd);
	close(fd);
	if (rc)
		return errmsg_set(e, rc, "cannot write %s: %s", name, strerror(-rc));
	return 0;
}

/* Steps 1-5 of the header comment: source's data directory -> dst_data. */
static int online_copy(struct local_provider *lp, const char *src_name, const char *dst_data,
                       struct copy_ctx *cx, struct errmsg *e)
{
	char src_data[PATH_MAX], slot[64];
	PGconn *c = NULL;
	PGresult *res = NULL;
	int sdir = -1, ddir = -1, rc;
	bool started = false;
	static atomic_uint seq;

	inst_paths(lp, src_name, NULL, src_data, NULL, NULL);
	rc = local_admin_connect(lp, src_name, "postgres", BRANCH_CONNECT_TIMEOUT_MS, &c, e);
	if (rc)
		return rc;
	snprintf(slot, sizeof(slot), "dbosfs_branch_%d_%u", (int)getpid(),
	         atomic_fetch_add(&seq, 1));
	const char *slot_param[] = {slot};
	rc = pg_query(c, "SELECT pg_create_physical_replication_slot($1, true, true)", 1,
	              slot_param, BRANCH_CONNECT_TIMEOUT_MS, NULL, &res, e);
	PQclear(res);
	res = NULL;
	if (rc)
		goto out;
	long long t = now_ms();
	rc = pg_query(c, "SELECT pg_backup_start('dbosfs branch', true)", 0, NULL,
	              BRANCH_BACKUP_TIMEOUT_MS, NULL, &res, e);
	PQclear(res);
	res = NULL;
	if (rc)
		goto out;
	started = true;

	sdir = open(src_data, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ddir = open(dst_data, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sdir < 0 || ddir < 0) {
		rc = errmsg_set(e, -errno, "cannot open %s: %s", sdir < 0 ? src_data : dst_data,
		                strerror(errno));
		goto out;
	}
	cx->stats.checkpoint_ms = now_ms() - t;
	t = now_ms();
	rc = copy_tree(cx, sdir, ddir, NULL, e);
	if (rc)
		goto out;

	/* The archive (if any) need not have the WAL: we copy it ourselves. */
	rc = pg_query(
	    c, "SELECT labelfile, spcmapfile, pg_walfile_name(lsn) FROM pg_backup_stop(false)", 0,
	    NULL, BRANCH_BACKUP_TIMEOUT_MS, NULL, &res, e);
	started = false;
	if (rc)
		goto out;
	if (!res || PQntuples(res) != 1) {
		rc = errmsg_set(e, -EIO, "pg_backup_stop returned no backup label");
		goto out;
	}
	/* WAL after the stop: it holds the backup's end record. From the
	 * label's start segment to the stop's. */
	const char *start = strstr(PQgetvalue(res, 0, 0), "(file ");
	if (start && strlen(start) >= 6 + 24 && strlen(PQgetvalue(res, 0, 2)) == 24) {
		snprintf(cx->wal_from, sizeof(cx->wal_from), "%.24s", start + 6);
		snprintf(cx->wal_to, sizeof(cx->wal_to), "%s", PQgetvalue(res, 0, 2));
	}
	int sw = openat(sdir, "pg_wal", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int dw = openat(ddir, "pg_wal", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sw < 0 || dw < 0)
		rc = errmsg_set(e, -errno, "cannot open pg_wal: %s", strerror(errno));
	else
		rc = copy_tree(cx, sw, dw, "pg_wal", e);
	if (sw >= 0)
		close(sw);
	if (dw >= 0)
		close(dw);
	if (!rc)
		rc = write_at(cx, ddir, "backup_label", PQgetvalue(res, 0, 0), e);
	if (!rc && PQgetvalue(res, 0, 1)[0])
		rc = write_at(cx, ddir, "tablespace_map", PQgetvalue(res, 0, 1), e);
	cx->stats.copy_ms = now_ms() - t;
out:
	if (started) {
		/* Leave the source as we found it (no backup in progress). */
		PGresult *r2 = NULL;
		pg_query(c, "SELECT pg_backup_stop(false)", 0, NULL, BRANCH_BACKUP_TIMEOUT_MS, NULL,
		         &r2, NULL);
		PQclear(r2);
	}
	PQclear(res);
	PQfinish(c); /* drops the temporary slot */
	if (sdir >= 0)
		close(sdir);
	if (ddir >= 0)
		close(ddir);
	return rc;
}

int local_copy_datadir(struct local_provider *lp, const char *src, const char *dst,
                       const atomic_bool *cancel, struct errmsg *e)
{
	struct copy_ctx cx = {.lp = lp, .cancel = cancel, .keep_label = true};
	int sdir = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ddir = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;
	if (sdir < 0 || ddir < 0)
		rc = errmsg_set(e, -errno, "cannot open %s: %s", sdir < 0 ? src : dst,
		                strerror(errno));
	else
		rc = copy_tree(&cx, sdir, ddir, NULL, e);
	if (sdir >= 0)
		close(sdir);
	if (ddir >= 0)
		close(ddir);
	return rc;
}

int local_online_backup(struct local_provider *lp, const char *src_name, const char *dst_data,
                        const atomic_bool *cancel, struct errmsg *e)
{
	struct copy_ctx cx = {.lp = lp, .cancel = cancel};
	int rc = online_copy(lp, src_name, dst_data, &cx, e);
	/* A base backup is durable before it is named as one. */
	int fd = rc ? -1 : open(dst_data, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (syncfs(fd) < 0)
			rc = errmsg_set(e, -errno, "syncfs: %s", strerror(errno));
		close(fd);
	}
	return rc;
}

int local_create_from(struct local_provider *lp, const struct local_create *c, struct instance *out,
                      struct errmsg *e)
{
	const char *newname = c->newname;
	char tmp[PATH_MAX], data[PATH_MAX + 8], meta_path[PATH_MAX + 8], dest[PATH_MAX];
	char text[256];
	long long t0 = now_ms();
	bool claimed = false, intent = false;
	int rc;

	/* Reserving the name in the table is the claim within this mount;
	 * the rename below is the claim on disk. */
	struct local_instance *li;
	rc = reserve_name_locking(lp, newname, c->username, &li, e);
	if (rc)
		return rc;
	unsigned seq = ++lp->spare_seq;
	pthread_mutex_unlock(&lp->lock);

	rc =
	    local_path(tmp, sizeof(tmp), "%s/spares/%s-%s.%u.tmp", lp->root, c->what, newname, seq);
	if (rc) {
		rc = errmsg_set(e, rc, "state_dir is too long");
		goto fail;
	}
	snprintf(data, sizeof(data), "%s/data", tmp);
	snprintf(meta_path, sizeof(meta_path), "%s/meta", tmp);
	inst_paths(lp, newname, dest, NULL, NULL, NULL);
	rc = local_mkdir(lp, tmp, lp->acct.drop ? 0711 : 0700, false);
	if (!rc)
		rc = local_mkdir(lp, data, 0700, true);
	if (rc) {
		rc = errmsg_set(e, rc, "cannot create %s: %s", tmp, strerror(-rc));
		goto fail;
	}
	/* From the record on, a crash is undone at the next start (as an
	 * unfinished mkdir: the instance and its saved password go,
	 * local_intent.c); the temporary directory goes in any case. */
	rc = intent_begin(lp, newname, "provision", NULL, e);
	if (rc)
		goto fail;
	intent = true;
	rc = c->fill(lp, data, &li->cancel, c->arg, e);
	if (!rc)
		rc = durable_prepare_first_start(lp, data, e);
	if (rc)
		goto fail;
	rc = assign_port(lp, li, e);
	if (rc < 0)
		goto fail;
	struct local_meta m = {.port = li->port};
	snprintf(m.username, sizeof(m.username), "%s", li->username);
	local_meta_format(&m, text, sizeof(text));
	rc = local_write_file(meta_path, text, 0600);
	if (rc) {
		rc = errmsg_set(e, rc, "cannot write %s: %s", meta_path, strerror(-rc));
		goto fail;
	}
	/* Not durable yet (only the page cache has the copy): the marker
	 * says so until the flusher is done (local_durable.c). */
	rc = durable_mark(lp, tmp, e);
	if (rc)
		goto fail;
	proc_crash_point("copy-filled");
	/* The commit point: one rename makes NEWNAME exist, whole. */
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE) < 0) {
		rc = -errno;
		if (rc == -EEXIST || rc == -ENOTEMPTY)
			rc = errmsg_set(e, -EEXIST, "an instance named %s already exists", newname);
		else
			rc =
			    errmsg_set(e, rc, "cannot move %s to %s: %s", tmp, dest, strerror(-rc));
		goto fail;
	}
	claimed = true;
	proc_crash_point("copy-renamed");
	rc = instance_start(lp, li, e);
	if (!rc && c->started)
		rc = c->started(lp, li, c->arg, e);
	if (!rc)
		rc = durable_settle_first_start(lp, li, e);
	if (rc)
		goto fail;
	proc_crash_point("copy-started");
	/* Complete (promoted, with the password the tree serves): a crash
	 * from here on leaves a usable instance. */
	intent_end(lp, newname);
	intent = false;

	pthread_mutex_lock(&lp->lock);
	li->durable_pending = true; /* the flusher's job from here */
	publish_running_locked(lp, li, out);
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	proc_crash_point("copy-done");
	log_event("local: %s made (%s) in %lld ms", newname, c->what, now_ms() - t0);
	return 0;

fail:
	if (li->pid > 0) {
		pg_server_stop(li->pid, LOCAL_STOP_TIMEOUT_MS);
		li->pid = 0;
	}
	if (claimed) {
		char sock[PATH_MAX];
		inst_paths(lp, newname, NULL, NULL, sock, NULL);
		local_rmtree(dest);
		local_rmtree(sock);
	} else {
		local_rmtree(tmp);
	}
	if (intent && rc != -EEXIST) {
		/* Everything of this name, the saved password too, as a failed
		 * mkdir (the filesystem puts back one it replaced). */
		struct errmsg re;
		if (local_remove_instance_files(lp, newname, &re) == 0)
			intent_end(lp, newname);
		else
			log_error("local: %s of %s failed and cleaning up too: %s", c->what,
			          newname, re.text);
	} else if (intent) {
		intent_end(lp, newname);
	}
	pthread_mutex_lock(&lp->lock);
	unlink_locked(lp, li);
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	free(li);
	log_error("local: %s of %s failed: %s", c->what, newname, e ? e->text : "");
	return rc;
}

struct branch_arg {
	const char *src;
	struct copy_stats stats;
};

static int branch_fill(struct local_provider *lp, const char *data, const atomic_bool *cancel,
                       void *arg, struct errmsg *e)
{
	struct branch_arg *b = arg;
	struct copy_ctx cx = {.lp = lp, .cancel = cancel};
	int rc = online_copy(lp, b->src, data, &cx, e);
	b->stats = cx.stats;
	return rc;
}

int local_branch(struct provider *p, const struct instance *inst, const char *newname,
                 struct instance *out, struct errmsg *e)
{
	if (inst->linked)
		return errmsg_set(e, -EOPNOTSUPP,
		                  "%s is a linked server that dbosfs does not run: it cannot be "
		                  "copied here (pg_dump it into a new instance instead)",
		                  inst->name);
	struct branch_arg b = {.src = inst->name};
	struct local_create c = {.newname = newname,
	                         .username = inst->username,
	                         .what = "branch",
	                         .fill = branch_fill,
	                         .arg = &b};
	long long t0 = now_ms();
	int rc = local_create_from(LP(p), &c, out, e);
	if (!rc)
		log_event("local: %s branched from %s in %lld ms: %ld files, %lld MiB, %ld "
		          "reflinked, %ld copied; checkpoint %lld ms, copy %lld ms; durable in the "
		          "background",
		          newname, inst->name, now_ms() - t0, b.stats.files, b.stats.bytes >> 20,
		          b.stats.reflinked, b.stats.copied, b.stats.checkpoint_ms,
		          b.stats.copy_ms);
	return rc;
}
