/* Spare servers kept running, so that mkdir only binds a name.
 *
 * Design: a running spare is an ordinary spare directory spares/USER.N
 * (a copy of the default user's template) whose postmaster dbosfs has
 * already started, on a TCP port of its own and with its socket in
 * run/.spareN. Nobody can log in to it: the admin role of a template has
 * no password, so SCRAM refuses every login as it, and dbosfs's own
 * superuser is accepted only over the private socket (pg_hba.conf,
 * local_security.h).
 *
 * What a claim needs is ready before any mkdir asks: when the spare's
 * server is ready, the preparer writes (durably) the spare's meta (its
 * port, the default user: what the instance's will be) and opens
 * dbosfs's superuser connection to it over the private socket, kept open
 * until the claim (one idle backend per spare).
 *
 * Claiming one for NAME (under the provision's intent record, so a crash
 * at any step is undone at the next start like any interrupted mkdir; the
 * caller has computed the SCRAM verifier of the new password):
 *   1. spares/USER.N is renamed to instances/NAME (RENAME_NOREPLACE: the
 *      claim on disk). The postmaster keeps working: it holds its data
 *      directory as its working directory and opens its files relatively;
 *   2. ALTER ROLE admin PASSWORD 'verifier' is sent on the kept
 *      connection, which is what opens logins. Its commit (a WAL flush)
 *      runs while
 *   3. run/.spareN is renamed to run/NAME (the listening socket is the
 *      same inode, so clients connecting to run/NAME/.s.PGSQL.PORT reach
 *      it, and the TCP port never changes: it becomes the instance's), and
 *      the rename of step 1 is made durable (fsync of instances/; the
 *      socket directory's is not needed: every server start makes it);
 *   4. the answer to ALTER ROLE is awaited. A kept connection that was
 *      lost (its backend ended) is replaced by a new one over the socket's
 *      new path, and the statement runs again. The record goes after.
 * postmaster.pid still names the old paths until the server restarts;
 * nothing of dbosfs reads those lines (a leftover is recognised by its
 * working directory, which follows the rename), and at the next start
 * of the instance (remount, restart) everything is the instance's own.
 *
 * WAL archiving (local_pitr.c) is on from the spare's start, with a
 * relative archive_command (../pitr/wal), so the archive moves with the
 * directory; the instance's later starts use the absolute one.
 *
 * The TLS certificate is per state directory (127.0.0.1 and localhost), so
 * the spare already serves the one the instance needs.
 *
 * At a remount spare servers are stopped like instances; their
 * directories stay and are started again by the preparer. After a crash
 * a spare's leftover postmaster is recognised by its postmaster.pid and
 * stopped before its directory is started again. */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "pg.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- slots: a path to a spare's data that survives its claim ---- */

static void slot_path(const struct local_provider *lp, unsigned seq, char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/slots/%u", lp->root, seq);
}

/* Points slots/SEQ at dir, replacing what it pointed at in one rename. */
static int slot_point(struct local_provider *lp, unsigned seq, const char *dir, struct errmsg *e)
{
	char slot[PATH_MAX], tmp[PATH_MAX + 8];

	slot_path(lp, seq, slot, sizeof(slot));
	snprintf(tmp, sizeof(tmp), "%s.new", slot);
	unlink(tmp);
	if (symlink(dir, tmp) < 0 || rename(tmp, slot) < 0) {
		int err = errno;
		unlink(tmp);
		return errmsg_set(e, -err, "cannot point %s at %s: %s", slot, dir, strerror(err));
	}
	return 0;
}

/* True if the server running in slot's target was started through slot
 * (its postmaster.pid: line 1 the pid, line 2 the data directory). */
static bool slot_in_use(const char *slot)
{
	char pidfile[2 * PATH_MAX], want[2 * PATH_MAX], text[2 * PATH_MAX];
	snprintf(pidfile, sizeof(pidfile), "%s/data/postmaster.pid", slot);
	snprintf(want, sizeof(want), "%s/data", slot);
	if (local_read_file(pidfile, text, sizeof(text), false) != 0)
		return false;
	char *nl = strchr(text, '\n');
	if (!nl)
		return false;
	*nl = '\0';
	char *dir = nl + 1, *end = strchr(dir, '\n');
	if (end)
		*end = '\0';
	long pid = strtol(text, NULL, 10);
	return pid > 1 && strcmp(dir, want) == 0 && kill((pid_t)pid, 0) == 0;
}

void slots_sweep(struct local_provider *lp)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	snprintf(dir, sizeof(dir), "%s/slots", lp->root);
	DIR *d = opendir(dir);
	struct dirent *de;
	int kept = 0;

	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		/* A server of a dbosfs that was killed may still run through
		 * it, until its instance's start stops that server. */
		if (!strstr(de->d_name, ".new") && slot_in_use(path)) {
			kept++;
			continue;
		}
		unlink(path);
	}
	if (d)
		closedir(d);
	if (kept)
		log_event("local: %d server%s of an earlier dbosfs still run through slots/", kept,
		          kept == 1 ? "" : "s");
}

static void spare_paths(const struct local_provider *lp, unsigned seq, char *dir, char *sock)
{
	if (dir)
		snprintf(dir, PATH_MAX, "%s/spares/%s.%u", lp->root, lp->default_user, seq);
	if (sock)
		snprintf(sock, PATH_MAX, "%s/.spare%u", lp->runbase, seq);
}

void spares_ports(struct local_provider *lp, int *used, size_t *n, size_t max)
{
	pthread_mutex_lock(&lp->spare_lock);
	for (struct local_spare *s = lp->running; s; s = s->next)
		if (s->port > 0 && *n < max)
			used[(*n)++] = s->port;
	pthread_mutex_unlock(&lp->spare_lock);
}

int spares_running(struct local_provider *lp)
{
	int n = 0;

	pthread_mutex_lock(&lp->spare_lock);
	for (struct local_spare *s = lp->running; s; s = s->next)
		n++;
	pthread_mutex_unlock(&lp->spare_lock);
	return n;
}

void spare_free(struct local_spare *s)
{
	if (!s)
		return;
	if (s->conn)
		PQfinish(s->conn);
	free(s);
}

/* Removes s from the list (if there); caller holds spare_lock. */
static void unlink_spare_locked(struct local_provider *lp, struct local_spare *s)
{
	for (struct local_spare **pp = &lp->running; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			return;
		}
}

/* A port no instance and no other spare has. */
static int pick_port(struct local_provider *lp, struct local_spare *sp)
{
	int used[512];
	size_t n = 0;

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *o = lp->instances; o; o = o->next)
		if (o->port > 0 && n < sizeof(used) / sizeof(used[0]))
			used[n++] = o->port;
	spares_ports(lp, used, &n, sizeof(used) / sizeof(used[0]));
	int port = local_pick_port(used, n);
	if (port > 0) {
		pthread_mutex_lock(&lp->spare_lock);
		sp->port = port;
		pthread_mutex_unlock(&lp->spare_lock);
	}
	pthread_mutex_unlock(&lp->lock);
	return port;
}

/* What a claim would otherwise do while a mkdir waits, done once the
 * spare's server is ready: the instance's meta (this port, the default
 * user), durable, and dbosfs's connection. Without the connection (the
 * server refused it, no descriptor) the claim connects itself. */
static int ready_for_claim(struct local_provider *lp, struct local_spare *sp, const char *dir,
                           const char *sock, int port, struct errmsg *e)
{
	char meta[PATH_MAX + 8], text[256];
	struct local_meta m;
	struct errmsg ce;
	int rc;

	memset(&m, 0, sizeof(m));
	m.port = port;
	snprintf(m.username, sizeof(m.username), "%s", lp->default_user);
	local_meta_format(&m, text, sizeof(text));
	snprintf(meta, sizeof(meta), "%s/meta", dir);
	rc = local_write_file_durable(meta, text, 0600);
	if (rc)
		return errmsg_set(e, rc, "cannot write %s: %s", meta, strerror(-rc));
	errmsg_clear(&ce);
	if (sec_connect(lp, sock, port, "postgres", &lp->stopping, &sp->conn, &ce) != 0) {
		sp->conn = NULL;
		if (!lp->stopping)
			log_error("local: spare server %u: no connection kept for its claim (the "
			          "claim will connect): %s",
			          sp->seq, ce.text);
	}
	return 0;
}

int spares_start_one(struct local_provider *lp, struct errmsg *e)
{
	char dir[PATH_MAX], data[PATH_MAX + 8], sock[PATH_MAX], logp[PATH_MAX + 16];
	struct local_spare *sp = calloc(1, sizeof(*sp));
	long long t0 = now_ms();
	bool remove_dir = false;
	int rc;

	if (!sp)
		return errmsg_set(e, -ENOMEM, "out of memory");
	pthread_mutex_lock(&lp->spare_lock);
	if (!spare_find(lp, lp->default_user, dir, sizeof(dir))) {
		pthread_mutex_unlock(&lp->spare_lock);
		free(sp);
		return -ENOENT;
	}
	sp->seq = (unsigned)strtoul(strrchr(dir, '.') + 1, NULL, 10);
	/* Listed from now on: spare_claim no longer offers the directory. */
	sp->next = lp->running;
	lp->running = sp;
	pthread_mutex_unlock(&lp->spare_lock);

	spare_paths(lp, sp->seq, dir, sock);
	/* The server knows its data directory by the slot's path, which the
	 * claim keeps valid (see the top of this file). */
	char slot[PATH_MAX];
	slot_path(lp, sp->seq, slot, sizeof(slot));
	rc = slot_point(lp, sp->seq, dir, e);
	if (rc)
		goto fail;
	snprintf(data, sizeof(data), "%s/data", slot);
	snprintf(logp, sizeof(logp), "%s/server.log", dir);
	/* A spare server of a dbosfs that crashed may still run. */
	rc = pg_handle_stale_pid(data, "a spare", &lp->stopping, e);
	if (rc)
		goto fail;
	local_rmtree(sock);
	rc = local_mkdir(lp, sock, 0700, true);
	if (rc) {
		errmsg_set(e, rc, "cannot create socket directory %s: %s", sock, strerror(-rc));
		goto fail;
	}
	/* WAL archiving (local_pitr.c) from the spare's first moment, into
	 * its own pitr/wal: relative to the data directory (the archiver's
	 * working directory), so it follows the claim's rename and the WAL
	 * chain from the template on is the instance's. */
	char archive_cmd[256], pitr[PATH_MAX + 8], wal[PATH_MAX + 16];
	bool archiving = lp->pitr_window_ms > 0;
	if (archiving) {
		snprintf(pitr, sizeof(pitr), "%s/pitr", dir);
		snprintf(wal, sizeof(wal), "%s/wal", pitr);
		rc = local_mkdir(lp, pitr, 0700, true);
		if (!rc)
			rc = local_mkdir(lp, wal, 0700, true);
		if (rc) {
			errmsg_set(e, rc, "cannot create %s: %s", wal, strerror(-rc));
			goto fail;
		}
		snprintf(archive_cmd, sizeof(archive_cmd),
		         "f=../pitr/wal/%%f; if [ -f \"$f\" ]; then cmp -s %%p \"$f\"; else cp %%p "
		         "\"$f.part\" && sync \"$f.part\" && mv \"$f.part\" \"$f\"; fi");
	}
	for (int attempt = 0; attempt < 6; attempt++) {
		int port = pick_port(lp, sp), st = 0;
		if (port < 0) {
			rc = errmsg_set(e, -EADDRINUSE, "no free TCP port in %d-%d", LOCAL_PORT_MIN,
			                LOCAL_PORT_MAX);
			goto fail;
		}
		int fd = open(logp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0) {
			rc = errmsg_set(e, -errno, "cannot open %s: %s", logp, strerror(errno));
			goto fail;
		}
		off_t off = lseek(fd, 0, SEEK_END);
		struct pg_launch l = {lp->bindir,
		                      data,
		                      sock,
		                      fd,
		                      port,
		                      &lp->acct,
		                      archiving ? archive_cmd : NULL,
		                      PITR_ARCHIVE_TIMEOUT_S};
		pid_t pid = pg_server_launch(&l, e);
		close(fd);
		if (pid < 0) {
			rc = (int)pid;
			goto fail;
		}
		rc = pg_server_wait_ready(pid, sock, port, LOCAL_SUPERUSER, lp->su_password,
		                          LOCAL_READY_TIMEOUT_MS, &lp->stopping, &st);
		if (rc == 0) {
			rc = ready_for_claim(lp, sp, dir, sock, port, e);
			if (rc) {
				pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
				goto fail;
			}
			pthread_mutex_lock(&lp->spare_lock);
			sp->pid = pid;
			sp->ready = true;
			pthread_mutex_unlock(&lp->spare_lock);
			log_event("local: spare server %u ready on port %d in %lld ms", sp->seq,
			          port, now_ms() - t0);
			return 0;
		}
		if (rc != -ECHILD) {
			pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
			rc = errmsg_set(e, rc, "the spare server %u did not start (see %s)",
			                sp->seq, logp);
			goto fail;
		}
		char tail[4096], reason[512];
		local_read_log_since(logp, off, tail, sizeof(tail));
		if (local_log_port_conflict(tail))
			continue;
		local_log_reason(tail, reason, sizeof(reason));
		rc = errmsg_set(e, -EIO, "the spare server %u exited during startup: %s", sp->seq,
		                reason);
		/* A copy its server cannot start is of no use: a fresh one comes. */
		remove_dir = true;
		goto fail;
	}
	rc = errmsg_set(e, -EADDRINUSE, "the spare server found every port it tried in use");
fail:
	pthread_mutex_lock(&lp->spare_lock);
	unlink_spare_locked(lp, sp);
	pthread_mutex_unlock(&lp->spare_lock);
	local_rmtree(sock);
	if (remove_dir)
		local_rmtree(dir);
	slot_path(lp, sp->seq, dir, sizeof(dir));
	unlink(dir);
	spare_free(sp);
	return rc;
}

int spares_claim(struct local_provider *lp, const char *user, const char *verifier,
                 struct local_instance *li, struct errmsg *e)
{
	char dir[PATH_MAX], sock[PATH_MAX], dest[PATH_MAX], dsock[PATH_MAX];
	struct local_spare *sp = NULL;
	struct errmsg pe;
	char *sql = NULL;
	bool sent = false;
	int rc;

	if (strcmp(user, lp->default_user) != 0)
		return -ENOENT;
	pthread_mutex_lock(&lp->spare_lock);
	for (struct local_spare *s = lp->running; s; s = s->next)
		if (s->ready && s->pid > 0 && !proc_exited_unreaped(s->pid)) {
			sp = s;
			break;
		}
	if (sp)
		unlink_spare_locked(lp, sp);
	pthread_mutex_unlock(&lp->spare_lock);
	if (!sp)
		return -ENOENT;

	spare_paths(lp, sp->seq, dir, sock);
	inst_paths(lp, li->name, dest, NULL, dsock, NULL);
	/* The statement that opens logins, ready before the first step. */
	if (sp->conn && PQstatus(sp->conn) == CONNECTION_OK) {
		rc = sec_password_sql(sp->conn, user, verifier, &sql, e);
		if (rc)
			goto put_back;
	}
	/* The claim on disk: exactly one rename onto the name succeeds. The
	 * meta in it (port, user) was written when the spare became ready. */
	if (renameat2(AT_FDCWD, dir, AT_FDCWD, dest, RENAME_NOREPLACE) < 0) {
		rc = -errno;
		if (rc == -EEXIST || rc == -ENOTEMPTY)
			errmsg_set(e, -EEXIST, "an instance named %s already exists", li->name);
		else
			errmsg_set(e, rc, "cannot move %s to %s: %s", dir, dest, strerror(-rc));
		rc = rc == -ENOTEMPTY ? -EEXIST : rc;
		goto put_back;
	}
	/* The path the server was started with leads to it again. */
	int slot_rc = slot_point(lp, sp->seq, dest, e);
	/* From here the server is the instance's: the caller's failure path
	 * stops it and removes everything of the name. */
	pthread_mutex_lock(&lp->lock);
	li->pid = sp->pid;
	li->port = sp->port;
	pthread_mutex_unlock(&lp->lock);
	if (slot_rc) {
		rc = slot_rc;
		goto out;
	}
	local_timing_mark("claim-rename");
	proc_crash_point("claim-renamed");
	/* The password now; the server commits it while the rest is done. */
	errmsg_clear(&pe);
	sent = sql && pg_send(sp->conn, sql, &pe) == 0;
	local_timing_mark(sent ? "alter-sent" : "alter-not-sent");
	local_rmtree(dsock); /* a leftover of an instance of the same name */
	if (rename(sock, dsock) < 0) {
		rc =
		    errmsg_set(e, -errno, "cannot move %s to %s: %s", sock, dsock, strerror(errno));
		goto out;
	}
	local_fsync_dir(dest);
	local_timing_mark("socket-moved+fsync");
	proc_crash_point("claim-socket-moved");
	errmsg_clear(&pe);
	rc = sent ? pg_await(sp->conn, 10000, &li->cancel, &pe) : 0;
	if (!sent ||
	    (rc && rc != -EINTR && rc != -ETIMEDOUT && PQstatus(sp->conn) != CONNECTION_OK)) {
		/* The kept connection is gone (its backend ended, or there was
		 * none): a new one, over the socket directory's new path. The
		 * statement is idempotent, so one that did commit is harmless. */
		if (sp->conn)
			log_event("local: the connection kept to spare server %u was lost; "
			          "connecting again to claim it for %s",
			          sp->seq, li->name);
		rc = sec_set_verifier(lp, dsock, sp->port, user, verifier, &li->cancel, e);
		local_timing_mark("reconnected+alter");
	} else if (rc) {
		errmsg_set(e, rc, "ALTER ROLE %s failed: %s", user, pe.text);
	}
out:
	local_timing_mark("alter-done");
	sec_sql_free(sql);
	spare_free(sp);
	return rc;

put_back:
	sec_sql_free(sql);
	pthread_mutex_lock(&lp->spare_lock);
	sp->next = lp->running;
	lp->running = sp;
	pthread_mutex_unlock(&lp->spare_lock);
	return rc;
}

void spares_reap(struct local_provider *lp)
{
	struct local_spare *dead = NULL;

	pthread_mutex_lock(&lp->spare_lock);
	for (struct local_spare **pp = &lp->running; *pp;) {
		struct local_spare *s = *pp;
		int st = 0;
		if (s->pid > 0 && waitpid(s->pid, &st, WNOHANG) == s->pid) {
			char how[64];
			proc_describe_status(st, how, sizeof(how));
			log_error("local: spare server %u exited (%s); starting it again", s->seq,
			          how);
			*pp = s->next;
			s->next = dead;
			dead = s;
			continue;
		}
		pp = &s->next;
	}
	pthread_mutex_unlock(&lp->spare_lock);
	while (dead) {
		struct local_spare *s = dead;
		dead = s->next;
		spare_free(s);
	}
}

void spares_take_pids(struct local_provider *lp, pid_t **pids, size_t *n, size_t *cap)
{
	pthread_mutex_lock(&lp->spare_lock);
	struct local_spare *list = lp->running;
	lp->running = NULL;
	pthread_mutex_unlock(&lp->spare_lock);
	while (list) {
		struct local_spare *s = list;
		list = s->next;
		if (s->pid > 0) {
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 16;
				pid_t *np = realloc(*pids, nc * sizeof(**pids));
				if (!np) {
					/* Stopped here, one at a time, rather than left running. */
					pg_server_stop(s->pid, LOCAL_STOP_TIMEOUT_MS);
					spare_free(s);
					continue;
				}
				*pids = np;
				*cap = nc;
			}
			(*pids)[(*n)++] = s->pid;
		}
		spare_free(s);
	}
}

void spares_cleanup(struct local_provider *lp)
{
	char path[PATH_MAX + 300];
	DIR *d = opendir(lp->runbase);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, ".spare", 6) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", lp->runbase, de->d_name);
		local_rmtree(path);
	}
	if (d)
		closedir(d);
	if (lp->spares_target > 0)
		return;
	char dir[PATH_MAX + 16];
	snprintf(dir, sizeof(dir), "%s/spares", lp->root);
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/data", dir, de->d_name);
		/* A leftover server (a crash while spares were on) goes first. */
		struct errmsg e;
		if (pg_handle_stale_pid(path, "a spare", &lp->stopping, &e) == 0) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			local_rmtree(path);
		}
	}
	if (d)
		closedir(d);
}
