/* Point-in-time recovery for every local instance (pitr_window=, default 7
 * days; 0 turns it off).
 *
 * Layout, in instances/NAME/pitr/ (owned by the server account):
 *   wal/            the WAL archive: every completed segment, written by the
 *                   server's archive_command (copy, fsync, rename)
 *   base0           "template USER\ntime MS\n": the instance's first base
 *                   backup is the template its data directory was copied
 *                   from (a cold, consistent copy), as of its provisioning
 *   base.MS/data/   an online base backup finished at MS (ms since the epoch)
 *
 * WAL archiving starts with the instance's first server start (the archive
 * settings are on the server's command line, see pg_server_launch), so with
 * base0 every moment since provisioning is restorable. archive_timeout is
 * PITR_ARCHIVE_TIMEOUT_S = 60 s: an idle instance's latest archived moment
 * stays within a minute of now while a forced segment switch costs at most
 * one 16 MiB file per minute of activity (none while nothing is written).
 * A restore to a moment newer than the archive forces a commit and a switch
 * on the running source first, so "a moment ago" is restorable at once.
 *
 * The pitr thread takes a new base backup of each running instance whose
 * newest one is older than the base interval (one day; DBOSFS_PITR_BASE_S
 * for tests), or once the WAL archived since that base backup exceeds the
 * size of the data directory, and at least PITR_BASE_WAL_MIN_BYTES (256
 * MiB; DBOSFS_PITR_BASE_WAL_BYTES for tests). A restore copies a base
 * backup and replays the WAL after it, and replaying a byte of WAL costs
 * at least as much as copying a byte of data: with the WAL bounded by the
 * data's size, a restore costs at most about two copies of the instance,
 * however busy it was. A base backup costs a copy of the data (on ext4: a
 * full one; with reflinks next to nothing), so per byte of WAL written,
 * that rule copies at most as many bytes again; the floor keeps a small
 * busy instance from being copied every few seconds (256 MiB of WAL
 * replays in a few seconds here). It prunes: base backups older than the
 * window except the newest of those (the window's start needs it), and
 * archived segments older than the oldest base backup kept.
 *
 * Restore: copy the newest base backup at or before TIME, recovery.signal,
 * restore_command from NAME's archive, recovery_target_time = TIME,
 * recovery_target_action = promote; a new instance on a new port. */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "pg.h"
#include "proc.h"
#include "provider.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PITR_BASE_EVERY_MS      (24 * 3600 * 1000LL)
#define PITR_BASE_WAL_MIN_BYTES (256LL << 20)
#define PITR_SWITCH_WAIT_MS     30000
#define PITR_PROMOTE_WAIT_MS    300000
#define PITR_RECOVERY_CONF      "dbosfs_recovery.conf"

static struct local_provider *LP(struct provider *p)
{
	return p->priv;
}

/* Wall-clock ms since the epoch: times of base backups and of restore
 * targets are calendar times (now_ms() is monotonic). */
static long long wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void pitr_dir(const struct local_provider *lp, const char *name, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/instances/%s/pitr", lp->root, name);
}

/* Characters that would need quoting inside the shell command or that
 * PostgreSQL expands (%). */
static bool path_plain(const char *p)
{
	return !strpbrk(p, "'\"$`\\%\n ");
}

int pitr_archive_command(struct local_provider *lp, const char *name, char *cmd, size_t cmdsz)
{
	char dir[PATH_MAX], wal[PATH_MAX + 8];

	if (lp->pitr_window_ms <= 0)
		return 1;
	pitr_dir(lp, name, dir, sizeof(dir));
	snprintf(wal, sizeof(wal), "%s/wal", dir);
	if (!path_plain(wal)) {
		log_error("local: %s: no WAL archiving: the state directory's path has characters "
		          "a shell command cannot take plainly",
		          name);
		return 1;
	}
	int rc = local_mkdir(lp, dir, 0700, true);
	if (!rc)
		rc = local_mkdir(lp, wal, 0700, true);
	if (rc)
		return rc;
	/* An identical segment already there is success (a retry after a
	 * crash between mv and the server noting it); a different one is an
	 * error PostgreSQL keeps retrying, so nothing is overwritten. */
	int n =
	    snprintf(cmd, cmdsz,
	             "f=%s/%%f; if [ -f \"$f\" ]; then cmp -s %%p \"$f\"; else cp %%p \"$f.part\" "
	             "&& sync \"$f.part\" && mv \"$f.part\" \"$f\"; fi",
	             wal);
	return n > 0 && (size_t)n < cmdsz ? 0 : -ENAMETOOLONG;
}

void pitr_note_template_base(struct local_provider *lp, const char *name, const char *user)
{
	char dir[PATH_MAX], path[PATH_MAX + 16], text[128];

	if (lp->pitr_window_ms <= 0)
		return;
	pitr_dir(lp, name, dir, sizeof(dir));
	if (local_mkdir(lp, dir, 0700, true) != 0)
		return;
	snprintf(path, sizeof(path), "%s/base0", dir);
	snprintf(text, sizeof(text), "template %s\ntime %lld\n", user, wall_ms());
	if (local_write_file(path, text, 0600) != 0)
		log_error("local: %s: cannot record its first base backup", name);
}

/* ---- base backups ---- */

struct base {
	long long ms;
	bool is_template;
	char path[PATH_MAX + 320]; /* data directory to copy */
	char dir[PATH_MAX + 320];  /* what to remove when pruned (base0 file or base.MS) */
};

struct bases {
	struct base *items;
	size_t count;
};

static int base_cmp(const void *a, const void *b)
{
	long long x = ((const struct base *)a)->ms, y = ((const struct base *)b)->ms;
	return x < y ? -1 : x > y;
}

/* The instance's base backups, oldest first. */
static void list_bases(struct local_provider *lp, const char *name, struct bases *out)
{
	char dir[PATH_MAX], path[PATH_MAX + 300], text[256];
	out->items = NULL;
	out->count = 0;
	pitr_dir(lp, name, dir, sizeof(dir));
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct base b = {0};
		if (strcmp(de->d_name, "base0") == 0) {
			char user[64];
			snprintf(path, sizeof(path), "%s/base0", dir);
			if (local_read_file(path, text, sizeof(text), false) != 0 ||
			    sscanf(text, "template %63s\ntime %lld", user, &b.ms) != 2)
				continue;
			b.is_template = true;
			snprintf(b.path, sizeof(b.path), "%s/templates/%s", lp->root, user);
			snprintf(b.dir, sizeof(b.dir), "%s", path);
		} else if (strncmp(de->d_name, "base.", 5) == 0 && !strstr(de->d_name, ".tmp")) {
			char *end;
			b.ms = strtoll(de->d_name + 5, &end, 10);
			if (*end || b.ms <= 0)
				continue;
			snprintf(b.dir, sizeof(b.dir), "%s/%s", dir, de->d_name);
			snprintf(b.path, sizeof(b.path), "%s/%s/data", dir, de->d_name);
		} else {
			continue;
		}
		struct base *nb = realloc(out->items, (out->count + 1) * sizeof(*nb));
		if (!nb)
			break;
		out->items = nb;
		out->items[out->count++] = b;
	}
	closedir(d);
	if (out->count)
		qsort(out->items, out->count, sizeof(*out->items), base_cmp);
}

/* Bytes of the files directly in dir; the newest mtime in ms in *newest. */
static long long dir_bytes(const char *dir, long long *newest, bool recurse)
{
	long long total = 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	char path[PATH_MAX + 300];
	while ((de = readdir(d))) {
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (recurse)
				total += dir_bytes(path, NULL, true);
			continue;
		}
		total += (long long)st.st_blocks * 512;
		long long m = st.st_mtim.tv_sec * 1000LL + st.st_mtim.tv_nsec / 1000000;
		if (newest && m > *newest && !strstr(de->d_name, ".part"))
			*newest = m;
	}
	closedir(d);
	return total;
}

static bool instance_running(struct local_provider *lp, const char *name, char *user, size_t usersz)
{
	pthread_mutex_lock(&lp->lock);
	struct local_instance *li = find_locked(lp, name);
	bool up = li && !li->hidden && li->pid > 0 && strcmp(li->status, "available") == 0;
	if (li && user)
		snprintf(user, usersz, "%s", li->username);
	pthread_mutex_unlock(&lp->lock);
	return up;
}

int local_restore_window(struct provider *p, const struct instance *inst, long long *earliest_ms,
                         long long *latest_ms, long long *archive_bytes, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	char dir[PATH_MAX], wal[PATH_MAX + 8];
	struct bases bs;

	*earliest_ms = *latest_ms = 0;
	if (inst->linked)
		return errmsg_set(e, -EOPNOTSUPP,
		                  "%s is a linked server: dbosfs does not archive its WAL, so it "
		                  "cannot be restored here",
		                  inst->name);
	pitr_dir(lp, inst->name, dir, sizeof(dir));
	snprintf(wal, sizeof(wal), "%s/wal", dir);
	long long newest = 0;
	*archive_bytes = dir_bytes(wal, &newest, false);
	if (lp->pitr_window_ms <= 0)
		return errmsg_set(e, -EOPNOTSUPP, "point-in-time recovery is off (pitr_window=0)");
	list_bases(lp, inst->name, &bs);
	if (!bs.count) {
		free(bs.items);
		return errmsg_set(e, -ENODATA,
		                  "%s has no base backup yet (the first is taken within a minute "
		                  "of its start)",
		                  inst->name);
	}
	long long now = wall_ms();
	*earliest_ms = bs.items[0].ms;
	if (*earliest_ms < now - lp->pitr_window_ms)
		*earliest_ms = now - lp->pitr_window_ms;
	free(bs.items);
	/* A running source is made to archive up to the present by the restore
	 * itself; a stopped one only has what it archived. */
	*latest_ms = instance_running(lp, inst->name, NULL, 0) ? now : newest;
	if (*latest_ms < *earliest_ms)
		*latest_ms = *earliest_ms;
	return 0;
}

/* ---- restore ---- */

struct restore_arg {
	const char *src;
	long long target_ms;
	const char *password;
	struct base base;
	char wal[PATH_MAX + 8];
};

static void format_pg_time(long long ms, char *out, size_t outsz)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	char s[32];
	strftime(s, sizeof(s), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(out, outsz, "%s.%03lld+00", s, ms % 1000);
}

static int write_owned(struct local_provider *lp, const char *path, const char *text, bool append)
{
	int fd =
	    open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (append ? O_APPEND : O_TRUNC),
	         0600);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	int rc = write(fd, text, len) == (ssize_t)len ? 0 : (errno ? -errno : -EIO);
	if (!rc && lp->acct.drop && fchown(fd, lp->acct.uid, lp->acct.gid) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int restore_fill(struct local_provider *lp, const char *data, const atomic_bool *cancel,
                        void *arg, struct errmsg *e)
{
	struct restore_arg *r = arg;
	char path[PATH_MAX + 64], conf[PATH_MAX * 2 + 512], when[64];

	int rc = local_copy_datadir(lp, r->base.path, data, cancel, e);
	if (rc)
		return rc;
	format_pg_time(r->target_ms, when, sizeof(when));
	/* In a file of its own, removed once the server is promoted: a later
	 * restart must not recover again, nor read NAME's archive. */
	snprintf(conf, sizeof(conf),
	         "restore_command = 'cp \"%s/%%f\" \"%%p\"'\n"
	         "recovery_target_time = '%s'\n"
	         "recovery_target_action = 'promote'\n"
	         "recovery_target_inclusive = off\n"
	         /* No read-only connections while recovering: the first
	          * connection is to the promoted server. (Hot standby would
	          * also refuse WAL written with the template's initdb-time
	          * max_connections, higher than ours.) */
	         "hot_standby = off\n",
	         r->wal, when);
	snprintf(path, sizeof(path), "%s/%s", data, PITR_RECOVERY_CONF);
	rc = write_owned(lp, path, conf, false);
	snprintf(path, sizeof(path), "%s/postgresql.conf", data);
	if (!rc)
		rc = write_owned(lp, path,
		                 "\n# dbosfs: recovery settings of a restore (removed once done)\n"
		                 "include_if_exists = '" PITR_RECOVERY_CONF "'\n",
		                 true);
	snprintf(path, sizeof(path), "%s/recovery.signal", data);
	if (!rc)
		rc = write_owned(lp, path, "", false);
	/* A template copy has no label; a base backup's label is in the copy. */
	snprintf(path, sizeof(path), "%s/postmaster.pid", data);
	unlink(path);
	if (rc)
		return errmsg_set(e, rc, "cannot prepare the recovery of %s: %s", data,
		                  strerror(-rc));
	/* Durable in the background, as a branch (local_durable.c). */
	return rc;
}

/* The server accepts read-only connections while it recovers: wait until
 * it has reached the target and been promoted. */
static int restore_started(struct local_provider *lp, struct local_instance *li, void *arg,
                           struct errmsg *e)
{
	struct restore_arg *r = arg;
	long long deadline = now_ms() + PITR_PROMOTE_WAIT_MS;
	char data[PATH_MAX], path[PATH_MAX + 64], sock[PATH_MAX];
	int rc;

	for (;;) {
		PGconn *c;
		PGresult *res = NULL;
		struct errmsg pe = {{0}};
		inst_paths(lp, li->name, NULL, data, sock, NULL);
		rc = sec_connect(lp, sock, li->port, "postgres", &li->cancel, &c, &pe);
		if (!rc) {
			rc = pg_query(c, "SELECT pg_is_in_recovery()", 0, NULL, 5000, &li->cancel,
			              &res, &pe);
			bool done =
			    !rc && res && PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 'f';
			PQclear(res);
			PQfinish(c);
			if (done)
				break;
		}
		if (!proc_alive(li->pid))
			return errmsg_set(e, -EIO,
			                  "the server of %s stopped during recovery (see "
			                  "instances/%s/server.log): %s",
			                  li->name, li->name, pe.text);
		if (now_ms() > deadline || atomic_load(&li->cancel))
			return errmsg_set(e, atomic_load(&li->cancel) ? -EINTR : -ETIMEDOUT,
			                  "the recovery of %s did not finish in time", li->name);
		proc_sleep_ms(50);
	}
	snprintf(path, sizeof(path), "%s/%s", data, PITR_RECOVERY_CONF);
	unlink(path);
	if (r->password) {
		rc =
		    sec_set_password(lp, sock, li->port, li->username, r->password, &li->cancel, e);
		if (rc)
			return rc;
	}
	return 0;
}

/* Makes the running source archive everything up to now: a commit (a
 * timestamped record after TIME, where recovery can stop) and a segment
 * switch, then waits for the archived segment. */
static int archive_up_to_now(struct local_provider *lp, const char *name, const char *wal,
                             struct errmsg *e)
{
	PGconn *c;
	PGresult *res = NULL;
	char seg[PATH_MAX + 80];
	int rc = local_admin_connect(lp, name, "postgres", 5000, &c, e);
	if (rc)
		return rc;
	rc = pg_query(c, "SELECT txid_current()", 0, NULL, 10000, NULL, &res, e);
	PQclear(res);
	res = NULL;
	if (!rc)
		rc = pg_query(c, "SELECT pg_walfile_name(pg_switch_wal())", 0, NULL, 10000, NULL,
		              &res, e);
	if (!rc && res && PQntuples(res) == 1)
		snprintf(seg, sizeof(seg), "%s/%s", wal, PQgetvalue(res, 0, 0));
	else if (!rc)
		rc = errmsg_set(e, -EIO, "pg_switch_wal returned nothing");
	PQclear(res);
	PQfinish(c);
	if (rc)
		return rc;
	long long deadline = now_ms() + PITR_SWITCH_WAIT_MS;
	while (access(seg, F_OK) != 0) {
		if (now_ms() > deadline)
			return errmsg_set(e, -ETIMEDOUT,
			                  "the WAL of %s was not archived within %d s (see its "
			                  "server.log)",
			                  name, PITR_SWITCH_WAIT_MS / 1000);
		if (op_interrupted())
			return errmsg_set(e, -EINTR, "interrupted");
		proc_sleep_ms(50);
	}
	return 0;
}

int local_restore(struct provider *p, const struct instance *inst, long long target_ms,
                  const char *newname, const char *password, struct instance *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct restore_arg r = {.src = inst->name, .target_ms = target_ms, .password = password};
	long long earliest, latest, bytes;
	char a[32], b[32], dir[PATH_MAX];

	int rc = local_restore_window(p, inst, &earliest, &latest, &bytes, e);
	if (inst->linked)
		return rc;
	if (rc == -ENODATA || rc == -EOPNOTSUPP) {
		char why[ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", e ? e->text : "");
		return errmsg_set(e, -EINVAL, "%s", why);
	}
	if (rc)
		return rc;
	format_rfc3339_utc(earliest, a, sizeof(a));
	format_rfc3339_utc(latest, b, sizeof(b));
	if (target_ms < earliest || target_ms > latest)
		return errmsg_set(e, -EINVAL,
		                  "that time is outside the restorable window of %s: earliest: %s, "
		                  "latest: %s",
		                  inst->name, a, b);
	pitr_dir(lp, inst->name, dir, sizeof(dir));
	snprintf(r.wal, sizeof(r.wal), "%s/wal", dir);
	if (instance_running(lp, inst->name, NULL, 0)) {
		rc = archive_up_to_now(lp, inst->name, r.wal, e);
		if (rc)
			return rc;
	}
	struct bases bs;
	list_bases(lp, inst->name, &bs);
	bool found = false;
	for (size_t i = 0; i < bs.count; i++)
		if (bs.items[i].ms <= target_ms) {
			r.base = bs.items[i];
			found = true;
		}
	free(bs.items);
	if (!found)
		return errmsg_set(e, -EINVAL, "no base backup of %s at or before that time",
		                  inst->name);
	struct local_create c = {.newname = newname,
	                         .username = inst->username,
	                         .what = "restore",
	                         .fill = restore_fill,
	                         .started = restore_started,
	                         .arg = &r};
	rc = local_create_from(lp, &c, out, e);
	if (!rc)
		log_event("local: %s restored from %s as of %lld ms (base %s)", newname, inst->name,
		          target_ms, r.base.is_template ? "template" : r.base.dir);
	return rc;
}

/* ---- the pitr thread: base backups and pruning ---- */

static void take_base(struct local_provider *lp, const char *name)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 64], data[PATH_MAX + 80], fin[PATH_MAX + 64];
	struct errmsg e = {{0}};
	long long t0 = wall_ms();

	pitr_dir(lp, name, dir, sizeof(dir));
	snprintf(tmp, sizeof(tmp), "%s/base.%lld.tmp", dir, t0);
	snprintf(data, sizeof(data), "%s/data", tmp);
	int rc = local_mkdir(lp, dir, 0700, true);
	if (!rc)
		rc = local_mkdir(lp, tmp, 0700, true);
	if (!rc)
		rc = local_mkdir(lp, data, 0700, true);
	if (!rc)
		rc = local_online_backup(lp, name, data, &lp->stopping, &e);
	long long t1 = wall_ms();
	/* Named by when it finished: restorable from its consistency point. */
	snprintf(fin, sizeof(fin), "%s/base.%lld", dir, t1);
	if (!rc && rename(tmp, fin) != 0)
		rc = -errno;
	if (rc) {
		local_rmtree(tmp);
		if (!atomic_load(&lp->stopping))
			log_error("local: base backup of %s failed: %s", name,
			          e.text[0] ? e.text : strerror(-rc));
		return;
	}
	log_event("local: base backup of %s in %lld ms", name, t1 - t0);
}

/* The first segment (its log and segment parts, 16 hex digits) a base
 * backup needs, from its label; "" if unknown. */
static void base_start_segment(const struct base *b, char *out, size_t outsz)
{
	char path[PATH_MAX + 352], text[1024];
	out[0] = '\0';
	if (b->is_template) {
		snprintf(out, outsz, "0000000000000000");
		return;
	}
	snprintf(path, sizeof(path), "%s/backup_label", b->path);
	if (local_read_file(path, text, sizeof(text), false) != 0)
		return;
	char *f = strstr(text, "(file ");
	if (f && strlen(f) >= 6 + 24)
		snprintf(out, outsz, "%.16s", f + 6 + 8);
}

static void prune(struct local_provider *lp, const char *name)
{
	struct bases bs;
	long long cutoff = wall_ms() - lp->pitr_window_ms;
	char dir[PATH_MAX], wal[PATH_MAX + 8], keep_from[32] = "";

	pitr_dir(lp, name, dir, sizeof(dir));
	DIR *td = opendir(dir);
	if (td) {
		/* Partial base backups of a dbosfs that died: only this thread
		 * makes them, and it is not making one now. */
		struct dirent *te;
		char tp[PATH_MAX + 300];
		while ((te = readdir(td)))
			if (strncmp(te->d_name, "base.", 5) == 0 && strstr(te->d_name, ".tmp")) {
				snprintf(tp, sizeof(tp), "%s/%s", dir, te->d_name);
				local_rmtree(tp);
			}
		closedir(td);
	}
	list_bases(lp, name, &bs);
	/* Keep the newest base at or before the cutoff and all after it. */
	size_t first_kept = 0;
	for (size_t i = 0; i < bs.count; i++)
		if (bs.items[i].ms <= cutoff)
			first_kept = i;
	for (size_t i = 0; i < first_kept; i++) {
		if (bs.items[i].is_template)
			unlink(bs.items[i].dir);
		else
			local_rmtree(bs.items[i].dir);
		log_event("local: %s: pruned a base backup older than pitr_window", name);
	}
	if (bs.count)
		base_start_segment(&bs.items[first_kept], keep_from, sizeof(keep_from));
	free(bs.items);
	if (!keep_from[0] || strcmp(keep_from, "0000000000000000") == 0)
		return;
	snprintf(wal, sizeof(wal), "%s/wal", dir);
	DIR *d = opendir(wal);
	if (!d)
		return;
	struct dirent *de;
	char path[PATH_MAX + 300];
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		/* Segments (24 hex digits), and their .backup/.partial files;
		 * timeline .history files are always kept. */
		if (n < 24 || strstr(de->d_name, ".history") ||
		    strspn(de->d_name, "0123456789ABCDEF") < 24)
			continue;
		if (strncmp(de->d_name + 8, keep_from, 16) >= 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", wal, de->d_name);
		unlink(path);
	}
	closedir(d);
}

/* Bytes of archived segments from base b's first segment on. */
static long long wal_since(struct local_provider *lp, const char *name, const struct base *b)
{
	char dir[PATH_MAX], wal[PATH_MAX + 8], from[32], path[PATH_MAX + 300];
	base_start_segment(b, from, sizeof(from));
	if (!from[0])
		return 0;
	pitr_dir(lp, name, dir, sizeof(dir));
	snprintf(wal, sizeof(wal), "%s/wal", dir);
	DIR *d = opendir(wal);
	if (!d)
		return 0;
	long long total = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st;
		if (strlen(de->d_name) != 24 || strspn(de->d_name, "0123456789ABCDEF") != 24 ||
		    strncmp(de->d_name + 8, from, 16) < 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", wal, de->d_name);
		if (stat(path, &st) == 0)
			total += st.st_size;
	}
	closedir(d);
	return total;
}

/* Is a base backup due by WAL volume (see the header comment)? */
static bool base_due_by_wal(struct local_provider *lp, const char *name, const struct base *b)
{
	long long since = wal_since(lp, name, b);
	if (lp->pitr_base_wal_bytes > 0)
		return since >= lp->pitr_base_wal_bytes;
	if (since < PITR_BASE_WAL_MIN_BYTES)
		return false;
	char data[PATH_MAX];
	inst_paths(lp, name, NULL, data, NULL, NULL);
	long long wal_dir = 0;
	char pg_wal[PATH_MAX + 8];
	snprintf(pg_wal, sizeof(pg_wal), "%s/pg_wal", data);
	wal_dir = dir_bytes(pg_wal, NULL, true);
	return since >= dir_bytes(data, NULL, true) - wal_dir;
}

void *pitr_main(void *arg)
{
	struct local_provider *lp = arg;
	long long every = lp->pitr_base_every_ms;
	int period_ms = every < 60000 ? (int)(every / 2 > 200 ? every / 2 : 200) : 30000;
	if (lp->pitr_base_wal_bytes > 0 && period_ms > 1000)
		period_ms = 1000; /* a test's WAL threshold: look every second */

	if (lp->pitr_window_ms <= 0)
		return NULL; /* pitr_window=0: no archive, nothing to back up */

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		timed_wait(lp, period_ms);
		if (lp->stopping)
			break;
		/* Names of the instances to look at, then no lock held. */
		char(*names)[32] = NULL;
		size_t n = 0;
		for (struct local_instance *li = lp->instances; li; li = li->next)
			if (!li->hidden && !li->linked) {
				void *nn = realloc(names, (n + 1) * sizeof(*names));
				if (!nn)
					break;
				names = nn;
				snprintf(names[n++], 32, "%s", li->name);
			}
		pthread_mutex_unlock(&lp->lock);
		for (size_t i = 0; i < n && !atomic_load(&lp->stopping); i++) {
			struct bases bs;
			list_bases(lp, names[i], &bs);
			long long newest = bs.count ? bs.items[bs.count - 1].ms : 0;
			bool due =
			    wall_ms() - newest >= every ||
			    (bs.count && base_due_by_wal(lp, names[i], &bs.items[bs.count - 1]));
			free(bs.items);
			if (due && instance_running(lp, names[i], NULL, 0))
				take_base(lp, names[i]);
			prune(lp, names[i]);
		}
		free(names);
		pthread_mutex_lock(&lp->lock);
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}
