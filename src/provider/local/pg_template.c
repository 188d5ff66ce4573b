/* Template data directories and warm spares. initdb costs ~1.2 s of CPU,
 * so it runs once per admin username; each instance starts as a copy of
 * that template, and one copy is kept ready in advance so provisioning is
 * a rename plus a server start. */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

static bool dir_has(const char *dir, const char *file)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	return access(path, F_OK) == 0;
}

/* ---- template ---- */

/* Runs a helper with its output in logpath. On failure the message quotes
 * the log; keep_log says whether the log stays for the user to read (else
 * the caller removes it and the message does not point to it). A failure
 * the helper reports as "No space left on device" returns -ENOSPC. */
static int run_helper(struct local_provider *lp, bool track, char **argv, const char *logpath,
                      bool keep_log, const char *what, struct errmsg *e)
{
	int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int st = 0, rc;

	if (fd < 0)
		return errmsg_set(e, -errno, "cannot create %s: %s", logpath, strerror(errno));
	rc = local_run(lp, track, argv, fd, &st, e);
	close(fd);
	if (rc)
		return rc;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char how[64], tailbuf[4096], reason[512];

		proc_describe_status(st, how, sizeof(how));
		local_read_file(logpath, tailbuf, sizeof(tailbuf), true);
		local_log_reason(tailbuf, reason, sizeof(reason));
		/* Helpers run with LC_MESSAGES=C, so this is their wording. */
		rc = strstr(tailbuf, "No space left on device") ? -ENOSPC : -EIO;
		if (!tailbuf[strspn(tailbuf, " \t\r\n")]) {
			/* Its log is on the same filesystem: a full disk leaves
			 * it empty, so look at the disk itself. */
			char dir[PATH_MAX];
			snprintf(dir, sizeof(dir), "%s", logpath);
			char *slash = strrchr(dir, '/');
			if (slash && slash != dir)
				*slash = '\0';
			char said[256];
			snprintf(said, sizeof(said), "%s failed (%s) with no output", what, how);
			if (local_silent_failure(dir, said, e) == -ENOSPC)
				return -ENOSPC;
		}
		if (keep_log)
			return errmsg_set(e, rc, "%s failed (%s): %s (see %s)", what, how, reason,
			                  logpath);
		return errmsg_set(e, rc, "%s failed (%s): %s", what, how, reason);
	}
	unlink(logpath);
	return 0;
}

/* Modest defaults for many small servers on one machine. They live in
 * postgresql.conf rather than on the command line so that ALTER SYSTEM
 * can still change them; only the address, port and socket are fixed. */
static int append_settings(const char *datadir, struct errmsg *e)
{
	/* Idle cost (measured by scripts/idle-cost.sh): no logical
	 * replication launcher (a process per instance that only waits for
	 * subscriptions; CREATE SUBSCRIPTION still works but its workers do
	 * not start until max_logical_replication_workers is raised), the
	 * autovacuum launcher wakes every 5 minutes rather than every minute,
	 * and with 1 MiB WAL segments (initdb --wal-segsize=1) little WAL is
	 * kept: an idle instance holds a few MiB of WAL rather than 16. */
	static const char settings[] = "\n# dbosfs: sized for many small instances\n"
	                               "shared_buffers = 16MB\n"
	                               "max_connections = 50\n"
	                               "huge_pages = off\n"
	                               "logging_collector = off\n"
	                               "max_logical_replication_workers = 0\n"
	                               "autovacuum_naptime = 5min\n"
	                               "min_wal_size = 4MB\n"
	                               "max_wal_size = 256MB\n";
	char path[PATH_MAX + 32];
	int fd;

	snprintf(path, sizeof(path), "%s/postgresql.conf", datadir);
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot open %s: %s", path, strerror(errno));
	ssize_t n = write(fd, settings, sizeof(settings) - 1);
	int saved = errno;
	close(fd);
	if (n != (ssize_t)sizeof(settings) - 1)
		return errmsg_set(e, n < 0 ? -saved : -EIO, "cannot write %s", path);
	return 0;
}

/* initdb's --pwfile: the internal superuser's SCRAM verifier, not its
 * password (the server stores a verifier as it is). initdb runs as the
 * server account, which may read the verifier (it is in pg_authid
 * anyway) but never the password. */
static int write_pwfile(struct local_provider *lp, const char *path, struct errmsg *e)
{
	char verifier[256], text[260];
	int rc;

	if (scram_verifier(lp->su_password, verifier, sizeof(verifier)))
		return errmsg_set(e, -EIO, "cannot compute a SCRAM verifier");
	snprintf(text, sizeof(text), "%s\n", verifier);
	rc = local_write_file(path, text, 0600);
	if (!rc && lp->acct.drop && chown(path, lp->acct.uid, lp->acct.gid) < 0)
		rc = -errno;
	if (rc)
		return errmsg_set(e, rc, "cannot write %s: %s", path, strerror(-rc));
	return 0;
}

int tmpl_ensure(struct local_provider *lp, const char *user, bool track, struct errmsg *e)
{
	char final[PATH_MAX], tmp[PATH_MAX + 8], logpath[PATH_MAX + 16], exe[PATH_MAX + 16],
	    pwpath[PATH_MAX + 16], pwopt[PATH_MAX + 32];
	long long t0 = now_ms();
	int rc;

	snprintf(final, sizeof(final), "%s/templates/%s", lp->root, user);
	pthread_mutex_lock(&lp->tmpl_lock);
	/* A template of an older dbosfs (admin as bootstrap superuser, local
	 * connections trusted) is rebuilt rather than copied. */
	if (dir_has(final, "PG_VERSION") && sec_datadir_current(final)) {
		char what[128];
		snprintf(what, sizeof(what), "the template for %s", user);
		rc = sec_adopt_datadir(lp, final, what, e);
		pthread_mutex_unlock(&lp->tmpl_lock);
		return rc;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", final);
	snprintf(logpath, sizeof(logpath), "%s.initdb.log", final);
	snprintf(pwpath, sizeof(pwpath), "%s.pw.tmp", final);
	snprintf(pwopt, sizeof(pwopt), "--pwfile=%s", pwpath);
	snprintf(exe, sizeof(exe), "%s/initdb", lp->bindir);
	local_rmtree(tmp);
	local_rmtree(final);
	rc = local_mkdir(lp, tmp, 0700, true);
	if (rc) {
		errmsg_set(e, rc, "cannot create %s: %s", tmp, strerror(-rc));
		goto out;
	}
	rc = write_pwfile(lp, pwpath, e);
	if (rc)
		goto out;
	/* The bootstrap superuser is dbosfs's own; the admin role is made
	 * next, as an ordinary role (local_security.h). */
	char *argv[] = {exe,
	                "-D",
	                tmp,
	                "--username=" LOCAL_SUPERUSER,
	                pwopt,
	                "--encoding=UTF8",
	                "--locale=C.UTF-8",
	                "--auth=scram-sha-256",
	                "--no-sync",
	                "--wal-segsize=1",
	                NULL};
	char *low_argv[sizeof(argv) / sizeof(argv[0]) + 8] = {
	    "/usr/bin/nice", "-n", "10", "/usr/bin/ionice", "-c", "2", "-n", "7"};
	memcpy(low_argv + 8, argv, sizeof(argv));
	/* The preparer's initdb (track) runs at low CPU and I/O priority. */
	bool low =
	    track && access("/usr/bin/nice", X_OK) == 0 && access("/usr/bin/ionice", X_OK) == 0;
	rc = run_helper(lp, track, low ? low_argv : argv, logpath, true, "initdb", e);
	unlink(pwpath);
	if (rc)
		goto out;
	rc = append_settings(tmp, e);
	if (!rc)
		rc = sec_setup_template(lp, tmp, user, e);
	if (rc)
		goto out;
	proc_crash_point("template-built");
	if (rename(tmp, final) < 0) {
		rc = errmsg_set(e, -errno, "cannot rename %s: %s", tmp, strerror(errno));
		goto out;
	}
	log_event("local: template for admin user %s built in %lld ms", user, now_ms() - t0);
out:
	unlink(pwpath);
	if (rc)
		local_rmtree(tmp);
	pthread_mutex_unlock(&lp->tmpl_lock);
	return rc;
}

/* ---- spares ---- */

/* "USER.N" with N all digits: a complete spare for user. */
static bool spare_name_matches(const char *entry, const char *user)
{
	size_t ul = strlen(user);

	if (strncmp(entry, user, ul) != 0 || entry[ul] != '.' || !entry[ul + 1])
		return false;
	for (const char *p = entry + ul + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return true;
}

static bool spare_is_running(struct local_provider *lp, const char *entry)
{
	unsigned seq = (unsigned)strtoul(strrchr(entry, '.') + 1, NULL, 10);

	for (struct local_spare *s = lp->running; s; s = s->next)
		if (s->seq == seq)
			return true;
	return false;
}

/* Idle spares only: one with a server is spares_claim's. Caller holds
 * spare_lock. */
int spare_find(struct local_provider *lp, const char *user, char *out, size_t outsz)
{
	char dir[PATH_MAX + 8];
	DIR *d;
	struct dirent *de;
	int count = 0;

	snprintf(dir, sizeof(dir), "%s/spares", lp->root);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (!spare_name_matches(de->d_name, user) || spare_is_running(lp, de->d_name))
			continue;
		if (out && count == 0)
			local_path(out, outsz, "%s/%s", dir, de->d_name);
		count++;
	}
	closedir(d);
	return count;
}

int spare_count(struct local_provider *lp, const char *user)
{
	pthread_mutex_lock(&lp->spare_lock);
	int n = spare_find(lp, user, NULL, 0);
	pthread_mutex_unlock(&lp->spare_lock);
	return n;
}

int spare_make(struct local_provider *lp, const char *user, bool track, char *out, size_t outsz,
               struct errmsg *e)
{
	char tmpl[PATH_MAX], tmp[PATH_MAX + 32], final[PATH_MAX + 32], data[PATH_MAX + 40],
	    logpath[PATH_MAX + 40];
	unsigned seq = __atomic_add_fetch(&lp->spare_seq, 1, __ATOMIC_RELAXED);
	int rc;

	snprintf(tmpl, sizeof(tmpl), "%s/templates/%s", lp->root, user);
	snprintf(final, sizeof(final), "%s/spares/%s.%u", lp->root, user, seq);
	local_path(tmp, sizeof(tmp), "%s.tmp", final);
	snprintf(data, sizeof(data), "%s/data", tmp);
	snprintf(logpath, sizeof(logpath), "%s.log", tmp);
	/* The instance directory stays ours (meta and server.log are written
	 * by root when we are root); only data/ belongs to the server. */
	rc = local_mkdir(lp, tmp, lp->acct.drop ? 0711 : 0700, false);
	if (!rc)
		rc = local_mkdir(lp, data, 0700, true);
	if (rc) {
		local_rmtree(tmp);
		return errmsg_set(e, rc, "cannot create %s: %s", data, strerror(-rc));
	}
	strncat(tmpl, "/.", sizeof(tmpl) - strlen(tmpl) - 1);
	/* cp runs as the server account, so the copy has the right owner;
	 * --reflink=auto makes it nearly free on XFS and btrfs. */
	char *argv[] = {"/usr/bin/nice",
	                "-n",
	                "10",
	                "/usr/bin/ionice",
	                "-c",
	                "2",
	                "-n",
	                "7",
	                "/bin/cp",
	                "-a",
	                "--reflink=auto",
	                tmpl,
	                data,
	                NULL};
	/* The preparer's copies (track) yield the CPU and the disk to
	 * everything else: a burst of mkdirs, the user's own work. */
	bool low =
	    track && access("/usr/bin/nice", X_OK) == 0 && access("/usr/bin/ionice", X_OK) == 0;
	rc =
	    run_helper(lp, track, low ? argv : argv + 8, logpath, false, "copying the template", e);
	if (!rc)
		proc_crash_point("spare-copied");
	if (!rc) {
		pthread_mutex_lock(&lp->spare_lock);
		if (rename(tmp, final) < 0)
			rc = errmsg_set(e, -errno, "cannot rename %s: %s", tmp, strerror(errno));
		pthread_mutex_unlock(&lp->spare_lock);
	}
	if (rc) {
		/* A partial copy (ENOSPC, or cp killed at stop) must not stay and
		 * hold the space; tmpl_cleanup catches what a crash leaves. */
		int rrc = local_rmtree(tmp);
		unlink(logpath);
		if (rrc)
			log_error("local: cannot remove the partial copy %s: %s", tmp,
			          strerror(-rrc));
		if (rc == -ENOSPC) {
			long long avail = local_free_bytes(lp->root);
			char *at = e ? e->text + strlen(e->text) : NULL;
			size_t room = e ? sizeof(e->text) - strlen(e->text) : 0;
			if (at && room > 1 && avail >= 0)
				snprintf(at, room,
				         "; %lld MiB free on the filesystem of %s after removing "
				         "the partial copy",
				         avail >> 20, lp->root);
		}
		return rc;
	}
	if (out)
		snprintf(out, outsz, "%s", final);
	return 0;
}

int spare_claim(struct local_provider *lp, const char *path, const char *user, const char *name,
                int port, struct errmsg *e)
{
	char spare[PATH_MAX + 32], meta_path[PATH_MAX + 40], dest[PATH_MAX + 48], text[256];
	struct local_meta m;
	int rc;

	memset(&m, 0, sizeof(m));
	m.port = port;
	snprintf(m.username, sizeof(m.username), "%s", user);
	local_meta_format(&m, text, sizeof(text));
	snprintf(dest, sizeof(dest), "%s/instances/%s", lp->root, name);

	pthread_mutex_lock(&lp->spare_lock);
	if (path)
		snprintf(spare, sizeof(spare), "%s", path);
	else if (!spare_find(lp, user, spare, sizeof(spare))) {
		pthread_mutex_unlock(&lp->spare_lock);
		return -ENOENT;
	}
	snprintf(meta_path, sizeof(meta_path), "%s/meta", spare);
	rc = local_write_file_durable(meta_path, text, 0600);
	if (rc) {
		pthread_mutex_unlock(&lp->spare_lock);
		return errmsg_set(e, rc, "cannot write %s: %s", meta_path, strerror(-rc));
	}
	/* The claim: exactly one rename onto the name can succeed, even
	 * against another process using the same state directory. */
	if (renameat2(AT_FDCWD, spare, AT_FDCWD, dest, RENAME_NOREPLACE) < 0) {
		rc = -errno;
		pthread_mutex_unlock(&lp->spare_lock);
		if (rc == -EEXIST || rc == -ENOTEMPTY)
			return errmsg_set(e, -EEXIST, "an instance named %s already exists", name);
		return errmsg_set(e, rc, "cannot move %s to %s: %s", spare, dest, strerror(-rc));
	}
	pthread_mutex_unlock(&lp->spare_lock);
	/* Durable before the intent record goes (which only says the mkdir
	 * is complete if the claim is on disk too). */
	local_fsync_dir(dest);
	return 0;
}

static void clean_dir(const char *dir, bool only_tmp)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX + 300];

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (only_tmp && !(n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0) &&
		    !(n > 8 && strcmp(de->d_name + n - 8, ".tmp.log") == 0))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		local_rmtree(path);
	}
	closedir(d);
}

/* Spares copied from an older dbosfs's template are never handed out: a
 * new one comes from the rebuilt template. */
static void drop_old_spares(struct local_provider *lp, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX + 300], data[PATH_MAX + 310];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		snprintf(data, sizeof(data), "%s/data", path);
		struct stat st;
		if (!sec_datadir_current(data) ||
		    (lp->acct.drop && stat(data, &st) == 0 && st.st_uid != lp->acct.uid))
			local_rmtree(path);
	}
	closedir(d);
}

void tmpl_cleanup(struct local_provider *lp)
{
	char dir[PATH_MAX + 16];

	snprintf(dir, sizeof(dir), "%s/templates", lp->root);
	clean_dir(dir, true);
	snprintf(dir, sizeof(dir), "%s/spares", lp->root);
	clean_dir(dir, true);
	drop_old_spares(lp, dir);
	snprintf(dir, sizeof(dir), "%s/trash", lp->root);
	clean_dir(dir, false);
}

/* ---- disk space ---- */

/* nftw has no user argument; each walk is one thread's own. */
static __thread long long walk_bytes;

static int add_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (type == FTW_F || type == FTW_D || type == FTW_SL || type == FTW_DP)
		walk_bytes += (long long)st->st_blocks * 512;
	return 0;
}

int tmpl_size(struct local_provider *lp, const char *user, long long *bytes)
{
	char path[PATH_MAX];

	if (local_path(path, sizeof(path), "%s/templates/%s", lp->root, user))
		return -ENAMETOOLONG;
	walk_bytes = 0;
	if (nftw(path, add_entry, 32, FTW_PHYS | FTW_MOUNT) < 0)
		return errno ? -errno : -EIO;
	*bytes = walk_bytes;
	return 0;
}

int spare_room(struct local_provider *lp, const char *user, long long margin,
               bool margin_at_least_template, struct errmsg *e)
{
	long long need, avail;
	int rc = tmpl_size(lp, user, &need);

	if (rc)
		return errmsg_set(e, rc, "cannot measure the template for %s: %s", user,
		                  strerror(-rc));
	if (margin_at_least_template && margin < need)
		margin = need;
	avail = local_free_bytes(lp->root);
	if (avail < 0)
		return errmsg_set(e, (int)avail, "cannot read the free space of %s: %s", lp->root,
		                  strerror((int)-avail));
	if (avail >= need + margin)
		return 0;
	return errmsg_set(e, -ENOSPC,
	                  "%s: a copy of the template needs %lld MiB and %lld MiB more must "
	                  "stay free, but the filesystem of %s has %lld MiB free",
	                  strerror(ENOSPC), (need + (1 << 20) - 1) >> 20, margin >> 20, lp->root,
	                  avail >> 20);
}
