/* The instance table (entries guarded by local_provider.lock) and the
 * start of one instance's server, shared by the supervisor's restarts and
 * by provisioning. */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void inst_paths(const struct local_provider *lp, const char *name, char *dir, char *data,
                char *sock, char *logp)
{
	if (dir)
		snprintf(dir, PATH_MAX, "%s/instances/%s", lp->root, name);
	if (data)
		snprintf(data, PATH_MAX, "%s/instances/%s/data", lp->root, name);
	if (sock)
		snprintf(sock, PATH_MAX, "%s/%s", lp->runbase, name);
	if (logp)
		snprintf(logp, PATH_MAX, "%s/instances/%s/server.log", lp->root, name);
}

/* Caller holds lp->lock. */
struct local_instance *find_locked(struct local_provider *lp, const char *name)
{
	for (struct local_instance *li = lp->instances; li; li = li->next)
		if (strcmp(li->name, name) == 0)
			return li;
	return NULL;
}

void unlink_locked(struct local_provider *lp, struct local_instance *li)
{
	for (struct local_instance **pp = &lp->instances; *pp; pp = &(*pp)->next)
		if (*pp == li) {
			*pp = li->next;
			return;
		}
}

void set_status(struct local_instance *li, const char *status)
{
	snprintf(li->status, sizeof(li->status), "%s", status);
}

/* li's server has just started and accepts connections. Caller holds the
 * lock. */
void mark_running_locked(struct local_provider *lp, struct local_instance *li)
{
	set_status(li, "available");
	li->up_since_ms = now_ms();
	li->run_id = ++lp->run_seq;
	li->probe_misses = 0;
}

int reserve_name_locking(struct local_provider *lp, const char *name, const char *username,
                         struct local_instance **out, struct errmsg *e)
{
	struct local_instance *li = calloc(1, sizeof(*li));

	*out = NULL;
	if (!li)
		return errmsg_set(e, -ENOMEM, "out of memory");
	snprintf(li->name, sizeof(li->name), "%s", name);
	snprintf(li->username, sizeof(li->username), "%s", username);
	set_status(li, "starting");
	li->hidden = true;
	li->busy = true;

	pthread_mutex_lock(&lp->lock);
	if (lp->stopping) {
		pthread_mutex_unlock(&lp->lock);
		free(li);
		return errmsg_set(e, -EIO, "the mount is shutting down");
	}
	if (find_locked(lp, name)) {
		pthread_mutex_unlock(&lp->lock);
		free(li);
		return errmsg_set(e, -EEXIST, "an instance named %s already exists", name);
	}
	li->next = lp->instances;
	lp->instances = li;
	*out = li;
	return 0;
}

void publish_running_locked(struct local_provider *lp, struct local_instance *li,
                            struct instance *out)
{
	mark_running_locked(lp, li);
	li->hidden = false;
	li->busy = false;
	li->want_running = true;
	to_instance(li, out);
}

void to_instance(const struct local_instance *li, struct instance *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", li->name);
	snprintf(out->status, sizeof(out->status), "%s", li->status);
	snprintf(out->host, sizeof(out->host), "%s", li->linked ? li->host : "127.0.0.1");
	out->port = li->port;
	snprintf(out->username, sizeof(out->username), "%s", li->username);
	out->linked = li->linked;
}

/* Chooses a new free port for li (not used by any other instance) and
 * records it at once, so two concurrent choices never collide. */
int assign_port(struct local_provider *lp, struct local_instance *li, struct errmsg *e)
{
	int used[512];
	size_t n = 0;

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *o = lp->instances; o; o = o->next)
		if (o != li && o->port > 0 && n < sizeof(used) / sizeof(used[0]))
			used[n++] = o->port;
	spares_ports(lp, used, &n, sizeof(used) / sizeof(used[0]));
	int port = local_pick_port(used, n);
	if (port > 0)
		li->port = port;
	pthread_mutex_unlock(&lp->lock);
	if (port < 0)
		return errmsg_set(e, -EADDRINUSE, "no free TCP port in %d-%d", LOCAL_PORT_MIN,
		                  LOCAL_PORT_MAX);
	return port;
}

int save_meta(struct local_provider *lp, const struct local_instance *li)
{
	char dir[PATH_MAX], path[PATH_MAX + 8], text[256];
	struct local_meta m;

	memset(&m, 0, sizeof(m));
	m.port = li->port;
	snprintf(m.username, sizeof(m.username), "%s", li->username);
	inst_paths(lp, li->name, dir, NULL, NULL, NULL);
	snprintf(path, sizeof(path), "%s/meta", dir);
	local_meta_format(&m, text, sizeof(text));
	return local_write_file(path, text, 0600);
}

/* Starts li's postmaster and waits until it accepts connections. The
 * caller owns li (busy). A port taken by someone else is replaced and
 * persisted; other failures return the server's own FATAL line. */
int instance_start(struct local_provider *lp, struct local_instance *li, struct errmsg *e)
{
	char data[PATH_MAX], sock[PATH_MAX], logp[PATH_MAX];
	int rc;

	inst_paths(lp, li->name, NULL, data, sock, logp);
	rc = local_mkdir(lp, sock, 0700, true);
	if (rc)
		return errmsg_set(e, rc, "cannot create socket directory %s: %s", sock,
		                  strerror(-rc));
	li->give_up = false;
	rc = pg_handle_stale_pid(data, li->name, &li->cancel, e);
	if (rc) {
		/* A postmaster that outlived 30 s of SIGKILLs will not be gone
		 * a second later either: only the slow retries try again. */
		li->give_up = rc == -ETIMEDOUT;
		return rc;
	}
	local_rotate_log(logp);
	/* Made by an older dbosfs: its admin is a superuser and local
	 * connections are trusted. Fixed before the server first starts. */
	char what[96];
	snprintf(what, sizeof(what), "the data directory of %s", li->name);
	rc = sec_adopt_datadir(lp, data, what, e);
	if (rc)
		return rc;
	if (!sec_datadir_current(data)) {
		rc = sec_bring_in_line(lp, data, li->username, li->name, e);
		if (rc)
			return rc;
	}

	bool su_repaired = false;
	/* WAL archiving (point-in-time recovery) from the first start on. */
	char archive_cmd[PATH_MAX * 2 + 256];
	rc = pitr_archive_command(lp, li->name, archive_cmd, sizeof(archive_cmd));
	if (rc < 0)
		return errmsg_set(e, rc, "cannot prepare the WAL archive of %s: %s", li->name,
		                  strerror(-rc));
	bool archiving = rc == 0;

	for (int attempt = 0; attempt < 6; attempt++) {
		int old = li->port, st = 0;

		if (attempt > 0 || old <= 0 || !local_port_free(old)) {
			int port = assign_port(lp, li, e);
			if (port < 0)
				return port;
			rc = save_meta(lp, li);
			if (rc)
				return errmsg_set(e, rc, "cannot save metadata of %s: %s", li->name,
				                  strerror(-rc));
			if (old > 0)
				log_event("local: instance %s: port %d is in use, moved to %d",
				          li->name, old, port);
		}
		int fd = open(logp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return errmsg_set(e, -errno, "cannot open %s: %s", logp, strerror(errno));
		off_t off = lseek(fd, 0, SEEK_END);
		struct pg_launch l = {lp->bindir,
		                      data,
		                      sock,
		                      fd,
		                      li->port,
		                      &lp->acct,
		                      archiving ? archive_cmd : NULL,
		                      PITR_ARCHIVE_TIMEOUT_S};
		pid_t pid = pg_server_launch(&l, e);
		close(fd);
		if (pid < 0)
			return (int)pid;
		rc = pg_server_wait_ready(pid, sock, li->port, LOCAL_SUPERUSER, lp->su_password,
		                          LOCAL_READY_TIMEOUT_MS, &li->cancel, &st);
		if (rc == 0) {
			pthread_mutex_lock(&lp->lock);
			li->pid = pid;
			pthread_mutex_unlock(&lp->lock);
			return 0;
		}
		if (rc == -EACCES && !su_repaired) {
			/* STATE_DIR/local/superuser was lost or replaced: the
			 * instance is ours, so its superuser takes the password
			 * we have (single-user mode needs none). */
			pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
			su_repaired = true;
			rc = sec_reset_superuser(lp, data, e);
			if (rc)
				return rc;
			log_event(
			    "local: instance %s: its superuser refused STATE_DIR/local/superuser; "
			    "the password was set again",
			    li->name);
			attempt--;
			continue;
		}
		if (rc != -ECHILD) {
			pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
			if (rc == -EACCES)
				return errmsg_set(
				    e, -EACCES,
				    "the server of %s refuses dbosfs's superuser password",
				    li->name);
			if (rc == -EINTR)
				return errmsg_set(e, -EINTR, "interrupted while %s was starting",
				                  li->name);
			return errmsg_set(e, rc,
			                  "the server of %s did not accept connections "
			                  "within %d s (see %s)",
			                  li->name, LOCAL_READY_TIMEOUT_MS / 1000, logp);
		}
		char tail[4096], reason[512], how[64];
		local_read_log_since(logp, off, tail, sizeof(tail));
		if (local_log_port_conflict(tail))
			continue; /* someone took the port between our check and bind */
		proc_describe_status(st, how, sizeof(how));
		if (!tail[strspn(tail, " \t\r\n")]) {
			char said[256];
			snprintf(said, sizeof(said),
			         "the server of %s exited during startup (%s) with no message in "
			         "the server log",
			         li->name, how);
			return local_silent_failure(data, said, e);
		}
		local_log_reason(tail, reason, sizeof(reason));
		return errmsg_set(e, -EIO, "the server of %s exited during startup (%s): %s",
		                  li->name, how, reason);
	}
	return errmsg_set(e, -EADDRINUSE, "the server of %s found every port it tried in use",
	                  li->name);
}
