/* Branched and restored instances become available before their copy is
 * on disk; the copy is flushed in the background (issue 10).
 *
 * Writing a 1 GB copy to this machine's disk takes seconds; copying it
 * into the page cache does not. So local_create_from does not wait:
 *
 *   1. Before the rename that commits the copy, a marker
 *      instances/NAME/durable-pending holding this boot's id
 *      (/proc/sys/kernel/random/boot_id) is written and fsynced, with its
 *      directory. The meta file is fsynced too.
 *   2. The copy's first start runs with fsync = off, from a file of its own
 *      (dbosfs_first_start.conf, included by postgresql.conf). A server
 *      that was not shut down cleanly (every online copy: its pg_control
 *      says "in production") otherwise flushes its whole data directory
 *      before recovering (SyncDataDirectory: with recovery_init_sync_method
 *      = syncfs one syncfs(), i.e. the whole copy, seconds for a gigabyte),
 *      and PostgreSQL 15 skips exactly that step when fsync is off.
 *   3. Once the server accepts connections (a restore: once promoted), the
 *      file is removed and the configuration reloaded; a new session must
 *      then show fsync = on before the instance is published, so every
 *      client session commits durably.
 *   4. The flusher thread then makes the copy durable, at low priority:
 *      CHECKPOINT (it waits for any checkpoint begun under fsync = off,
 *      which dropped its fsync requests, and checkpoints under fsync = on),
 *      sync_file_range() over every file of the instance (writeback issued
 *      from this thread, at I/O priority best-effort 7), then one syncfs()
 *      that waits for all of it, the directories included. Only then does
 *      the marker go (unlink, fsync of the directory).
 *
 * Until the marker is gone, only an operating-system crash can lose data:
 * the page cache holds everything. So at mount (rediscover):
 *   marker with this boot's id  the daemon died, the machine did not: the
 *                               instance starts as usual and the flusher
 *                               finishes the job;
 *   marker with another boot id the machine went down before the copy was
 *                               durable: files may be torn or missing, so
 *                               the instance is not started and shows
 *                               "failed" ("branch was not yet durable when
 *                               the machine went down; rmdir it and branch
 *                               again").
 * An unmount flushes what is pending after the servers stopped, so a clean
 * shutdown or reboot never leaves a marker behind. NAME/info shows
 * "durable: pending" or "durable: yes".
 *
 * For tests only: DBOSFS_BOOT_ID_FILE names the file to read the boot id
 * from (a test simulates a reboot by changing it), and
 * DBOSFS_FLUSH_DELAY_MS holds the flusher back so a test can see
 * "pending". */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "pg.h"
#include "provider.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DURABLE_MARKER   "durable-pending"
#define FIRST_START_CONF "dbosfs_first_start.conf"
#define SETTLE_WAIT_MS   10000
/* A checkpoint under fsync = on can take a while on a busy disk. */
#define FLUSH_CHECKPOINT_TIMEOUT_MS 300000
#define FLUSH_RETRY_MS              5000

int local_boot_id(char *out, size_t outsz)
{
	const char *path = getenv("DBOSFS_BOOT_ID_FILE");
	char text[128];
	int rc = local_read_file(path && *path ? path : "/proc/sys/kernel/random/boot_id", text,
	                         sizeof(text), false);
	if (rc)
		return rc;
	text[strcspn(text, " \t\r\n")] = '\0';
	if (!text[0])
		return -EINVAL;
	snprintf(out, outsz, "%s", text);
	return 0;
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

int durable_mark(struct local_provider *lp, const char *instdir, struct errmsg *e)
{
	char path[PATH_MAX + 32], boot[64], text[128];
	(void)lp;
	int rc = local_boot_id(boot, sizeof(boot));
	if (rc)
		return errmsg_set(e, rc, "cannot read the boot id: %s", strerror(-rc));
	snprintf(text, sizeof(text), "boot_id=%s\n", boot);
	snprintf(path, sizeof(path), "%s/" DURABLE_MARKER, instdir);
	rc = local_write_file_durable(path, text, 0600);
	/* The meta file too: after a machine crash the instance must still
	 * be listed, to show why it failed. */
	snprintf(path, sizeof(path), "%s/meta", instdir);
	if (!rc)
		rc = fsync_path(path);
	if (!rc)
		rc = fsync_path(instdir);
	if (rc)
		return errmsg_set(e, rc, "cannot write %s/" DURABLE_MARKER ": %s", instdir,
		                  strerror(-rc));
	return 0;
}

/* Appends line to the file at path unless a line equal to it is there. */
static int append_line_once(struct local_provider *lp, const char *path, const char *line)
{
	char text[65536];
	if (local_read_file(path, text, sizeof(text), false) == 0) {
		size_t n = strlen(line);
		for (const char *p = text; (p = strstr(p, line)); p += n)
			if ((p == text || p[-1] == '\n') && (p[n] == '\n' || !p[n]))
				return 0;
	}
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	char buf[512];
	int len = snprintf(buf, sizeof(buf), "\n%s\n", line);
	int rc = write(fd, buf, (size_t)len) == len ? 0 : (errno ? -errno : -EIO);
	if (!rc && lp->acct.drop && fchown(fd, lp->acct.uid, lp->acct.gid) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

int durable_prepare_first_start(struct local_provider *lp, const char *data, struct errmsg *e)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/" FIRST_START_CONF, data);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	int rc = fd < 0 ? -errno : 0;
	static const char conf[] =
	    "# dbosfs: the first start of a copy skips PostgreSQL's flush of the whole\n"
	    "# data directory; dbosfs flushes it in the background (local_durable.c).\n"
	    "# Removed, and the configuration reloaded, once the server is up.\n"
	    "fsync = off\n";
	if (!rc && write(fd, conf, sizeof(conf) - 1) != (ssize_t)(sizeof(conf) - 1))
		rc = errno ? -errno : -EIO;
	if (!rc && lp->acct.drop && fchown(fd, lp->acct.uid, lp->acct.gid) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	snprintf(path, sizeof(path), "%s/postgresql.conf", data);
	if (!rc)
		rc = append_line_once(lp, path, "include_if_exists = '" FIRST_START_CONF "'");
	/* Later crash recoveries: one syncfs() rather than an fsync per file. */
	if (!rc)
		rc = append_line_once(lp, path, "recovery_init_sync_method = syncfs");
	if (rc)
		return errmsg_set(e, rc, "cannot prepare the first start of %s: %s", data,
		                  strerror(-rc));
	return 0;
}

int durable_settle_first_start(struct local_provider *lp, struct local_instance *li,
                               struct errmsg *e)
{
	char data[PATH_MAX], sock[PATH_MAX], path[PATH_MAX + 64];
	inst_paths(lp, li->name, NULL, data, sock, NULL);
	snprintf(path, sizeof(path), "%s/" FIRST_START_CONF, data);
	if (unlink(path) < 0 && errno != ENOENT)
		return errmsg_set(e, -errno, "cannot remove %s: %s", path, strerror(errno));
	PGconn *c;
	int rc = sec_connect(lp, sock, li->port, "postgres", &li->cancel, &c, e);
	if (rc)
		return rc;
	rc = pg_command(c, "SELECT pg_reload_conf()", 5000, &li->cancel, e);
	PQfinish(c);
	if (rc)
		return rc;
	/* The postmaster re-reads its files on SIGHUP, then signals its
	 * children: a session that starts after it sees fsync = on. */
	long long deadline = now_ms() + SETTLE_WAIT_MS;
	for (;;) {
		PGresult *res = NULL;
		bool on = false;
		rc = sec_connect(lp, sock, li->port, "postgres", &li->cancel, &c, e);
		if (rc)
			return rc;
		rc = pg_query(c, "SHOW fsync", 0, NULL, 5000, &li->cancel, &res, e);
		on = !rc && res && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "on") == 0;
		PQclear(res);
		PQfinish(c);
		if (rc)
			return rc;
		if (on)
			return 0;
		if (now_ms() > deadline || atomic_load(&li->cancel))
			return errmsg_set(e, atomic_load(&li->cancel) ? -EINTR : -ETIMEDOUT,
			                  "the server of %s did not turn fsync back on", li->name);
		proc_sleep_ms(20);
	}
}

/* ---- at mount ---- */

bool durable_check_at_mount(struct local_provider *lp, struct local_instance *li)
{
	char dir[PATH_MAX], data[PATH_MAX], path[PATH_MAX + 64], text[256], boot[64];
	inst_paths(lp, li->name, dir, data, NULL, NULL);
	snprintf(path, sizeof(path), "%s/" DURABLE_MARKER, dir);
	if (local_read_file(path, text, sizeof(text), false) != 0)
		return true;
	text[strcspn(text, "\r\n")] = '\0';
	const char *was = strncmp(text, "boot_id=", 8) == 0 ? text + 8 : "";
	if (local_boot_id(boot, sizeof(boot)) == 0 && was[0] && strcmp(was, boot) == 0) {
		/* Only the daemon died: the page cache has the whole copy. A
		 * first-start file left by a crash before settling goes too
		 * (the instance's intent record undoes such a copy anyway). */
		snprintf(path, sizeof(path), "%s/" FIRST_START_CONF, data);
		unlink(path);
		li->durable_pending = true;
		log_event("local: instance %s: its copy is not durable yet; flushing it in the "
		          "background",
		          li->name);
		return true;
	}
	snprintf(li->fail_reason, sizeof(li->fail_reason),
	         "branch was not yet durable when the machine went down; rmdir it and branch "
	         "again");
	log_error("local: instance %s: %s (its files may be torn; it is not started)", li->name,
	          li->fail_reason);
	return false;
}

/* ---- the flusher ---- */

/* Starts writeback of every regular file under dir (sync_file_range,
 * issued from this thread at its I/O priority); stops early at stop. */
static void start_writeback(struct local_provider *lp, const char *dir, int depth)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	char path[PATH_MAX + 300];
	while ((de = readdir(d)) && !atomic_load(&lp->stopping)) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		struct stat st;
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (depth < 16)
				start_writeback(lp, path, depth + 1);
			continue;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		close(fd);
	}
	closedir(d);
}

/* The whole instance directory reaches the disk; then the marker goes. */
static int flush_files(struct local_provider *lp, const char *name, struct errmsg *e)
{
	char dir[PATH_MAX], path[PATH_MAX + 64];
	inst_paths(lp, name, dir, NULL, NULL, NULL);
	start_writeback(lp, dir, 0);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot open %s: %s", dir, strerror(errno));
	int rc = syncfs(fd) < 0 ? -errno : 0;
	close(fd);
	if (rc)
		return errmsg_set(e, rc, "syncfs: %s", strerror(-rc));
	proc_crash_point("durable-flushed");
	snprintf(path, sizeof(path), "%s/" DURABLE_MARKER, dir);
	if (unlink(path) < 0 && errno != ENOENT)
		return errmsg_set(e, -errno, "cannot remove %s: %s", path, strerror(errno));
	local_fsync_dir(path);
	return 0;
}

/* One pending instance: CHECKPOINT on its server (if it runs), then the
 * files. 0 when durable; -EAGAIN to try again later. */
static int flush_one(struct local_provider *lp, const char *name, struct errmsg *e)
{
	long long t0 = now_ms();
	PGconn *c;
	int rc = local_admin_connect(lp, name, "postgres", 5000, &c, e);
	if (rc == 0) {
		rc = pg_command(c, "CHECKPOINT", FLUSH_CHECKPOINT_TIMEOUT_MS, &lp->stopping, e);
		PQfinish(c);
		if (rc)
			return -EAGAIN;
	} else if (rc != -ENOENT) {
		/* Not available (starting, restarting): a checkpoint begun
		 * under fsync = off could still be running. Unless nothing
		 * runs at all. */
		bool down;
		pthread_mutex_lock(&lp->lock);
		struct local_instance *li = find_locked(lp, name);
		down = li && li->pid <= 0 && !li->busy && !li->want_running;
		pthread_mutex_unlock(&lp->lock);
		if (!down)
			return -EAGAIN;
	} else {
		return -ENOENT;
	}
	rc = flush_files(lp, name, e);
	if (!rc)
		log_event("local: instance %s is durable (flushed in %lld ms)", name,
		          now_ms() - t0);
	return rc;
}

void *flusher_main(void *arg)
{
	struct local_provider *lp = arg;
	const char *delay_s = getenv("DBOSFS_FLUSH_DELAY_MS");
	long delay = delay_s ? strtol(delay_s, NULL, 10) : 0;
	/* Background work: best-effort class, lowest level (as ionice -c2 -n7),
	 * for the writeback this thread issues. */
	syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, (2 << 13) | 7);

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		char name[32] = "";
		long long now = now_ms();
		for (struct local_instance *li = lp->instances; li; li = li->next)
			if (li->durable_pending && !li->hidden && li->flush_after_ms <= now) {
				snprintf(name, sizeof(name), "%s", li->name);
				break;
			}
		if (!name[0]) {
			timed_wait(lp, 1000);
			continue;
		}
		pthread_mutex_unlock(&lp->lock);
		if (delay > 0)
			proc_sleep_ms((int)delay);
		struct errmsg e = {{0}};
		int rc = atomic_load(&lp->stopping) ? -EAGAIN : flush_one(lp, name, &e);
		pthread_mutex_lock(&lp->lock);
		struct local_instance *li = find_locked(lp, name);
		if (li && (rc == 0 || rc == -ENOENT)) {
			li->durable_pending = false;
		} else if (li) {
			li->flush_after_ms = now_ms() + FLUSH_RETRY_MS;
			if (rc != -EAGAIN && !lp->stopping)
				log_error(
				    "local: instance %s: flushing its copy failed (retrying): %s",
				    name, e.text);
		}
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

void durable_flush_stopped(struct local_provider *lp)
{
	for (;;) {
		char name[32] = "";
		pthread_mutex_lock(&lp->lock);
		for (struct local_instance *li = lp->instances; li; li = li->next)
			if (li->durable_pending) {
				snprintf(name, sizeof(name), "%s", li->name);
				li->durable_pending = false;
				break;
			}
		pthread_mutex_unlock(&lp->lock);
		if (!name[0])
			return;
		struct errmsg e = {{0}};
		if (flush_files(lp, name, &e) == 0)
			log_event("local: instance %s is durable (flushed at unmount)", name);
		else
			log_error("local: instance %s: flushing its copy at unmount failed: %s",
			          name, e.text);
	}
}

void local_durability(struct provider *p, const char *name, char *durable, size_t dsz, char *why,
                      size_t wsz)
{
	struct local_provider *lp = p->priv;
	durable[0] = why[0] = '\0';
	pthread_mutex_lock(&lp->lock);
	struct local_instance *li = find_locked(lp, name);
	if (li && !li->hidden && !li->linked) { /* a linked server's disk is not ours */
		snprintf(durable, dsz, "%s",
		         li->fail_reason[0]    ? "no"
		         : li->durable_pending ? "pending"
		                               : "yes");
		snprintf(why, wsz, "%s", li->fail_reason);
	}
	pthread_mutex_unlock(&lp->lock);
}
