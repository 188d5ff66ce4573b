/* The local provider: every instance is a PostgreSQL cluster whose
 * postmaster is a child of dbosfs. This file holds the instance table, the
 * provider operations, and three threads: the supervisor (reaps our
 * postmasters, restarts the ones that die), the prober (asks every running
 * server for an answer once per refresh period, so a hung one shows as
 * "unresponsive") and the preparer (keeps a template and a warm spare ready
 * so provisioning is fast). */
#include "local_internal.h"
#include "log.h"
#include "options.h"
#include "provider.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOCAL_LOG_ROTATE_BYTES (8 * 1024 * 1024)

static struct local_provider *LP(struct provider *p)
{
	return p->priv;
}

static void inst_paths(const struct local_provider *lp, const char *name, char *dir, char *data,
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
static struct local_instance *find_locked(struct local_provider *lp, const char *name)
{
	for (struct local_instance *li = lp->instances; li; li = li->next)
		if (strcmp(li->name, name) == 0)
			return li;
	return NULL;
}

static void unlink_locked(struct local_provider *lp, struct local_instance *li)
{
	for (struct local_instance **pp = &lp->instances; *pp; pp = &(*pp)->next)
		if (*pp == li) {
			*pp = li->next;
			return;
		}
}

static void set_status(struct local_instance *li, const char *status)
{
	snprintf(li->status, sizeof(li->status), "%s", status);
}

/* li's server has just started and accepts connections. Caller holds the
 * lock. */
static void mark_running_locked(struct local_provider *lp, struct local_instance *li)
{
	set_status(li, "available");
	li->up_since_ms = now_ms();
	li->run_id = ++lp->run_seq;
	li->probe_misses = 0;
}

static void to_instance(const struct local_instance *li, struct instance *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", li->name);
	snprintf(out->status, sizeof(out->status), "%s", li->status);
	snprintf(out->host, sizeof(out->host), "127.0.0.1");
	out->port = li->port;
	snprintf(out->username, sizeof(out->username), "%s", li->username);
	out->linked = false;
}

/* Chooses a new free port for li (not used by any other instance) and
 * records it at once, so two concurrent choices never collide. */
static int assign_port(struct local_provider *lp, struct local_instance *li)
{
	int used[512];
	size_t n = 0;

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *o = lp->instances; o; o = o->next)
		if (o != li && o->port > 0 && n < sizeof(used) / sizeof(used[0]))
			used[n++] = o->port;
	int port = local_pick_port(used, n);
	if (port > 0)
		li->port = port;
	pthread_mutex_unlock(&lp->lock);
	return port;
}

static int save_meta(struct local_provider *lp, const struct local_instance *li)
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

static void rotate_log(const char *logp)
{
	struct stat st;
	char old[PATH_MAX + 4];

	if (stat(logp, &st) == 0 && st.st_size > LOCAL_LOG_ROTATE_BYTES) {
		snprintf(old, sizeof(old), "%s.1", logp);
		rename(logp, old);
	}
}

/* What the server wrote since offset (the current start attempt). */
static void read_log_since(const char *logp, off_t off, char *out, size_t outsz)
{
	int fd = open(logp, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n = 0;

	out[0] = '\0';
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && st.st_size - off > (off_t)outsz - 1)
		off = st.st_size - (off_t)(outsz - 1);
	n = pread(fd, out, outsz - 1, off);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
}

/* The server died at startup without a word in its log: most often
 * because the disk is full (the log is on it too), so say how much room
 * there is. */
static int silent_exit(const struct local_instance *li, const char *how, const char *data,
                       struct errmsg *e)
{
	long long avail = local_free_bytes(data);

	if (avail >= 0 && avail < LOCAL_START_MARGIN_BYTES)
		return errmsg_set(e, -ENOSPC,
		                  "the server of %s exited during startup (%s) with no message in "
		                  "the server log: %s (%lld KiB free on the filesystem of %s)",
		                  li->name, how, strerror(ENOSPC), avail >> 10, data);
	if (avail >= 0)
		return errmsg_set(e, -EIO,
		                  "the server of %s exited during startup (%s) with no message in "
		                  "the server log (%lld MiB free on the filesystem of %s)",
		                  li->name, how, avail >> 20, data);
	return errmsg_set(e, -EIO,
	                  "the server of %s exited during startup (%s) with no message in the "
	                  "server log (free space of %s unknown: %s)",
	                  li->name, how, data, strerror((int)-avail));
}

/* Starts li's postmaster and waits until it accepts connections. The
 * caller owns li (busy). A port taken by someone else is replaced and
 * persisted; other failures return the server's own FATAL line. */
static int instance_start(struct local_provider *lp, struct local_instance *li, struct errmsg *e)
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
	rotate_log(logp);

	for (int attempt = 0; attempt < 6; attempt++) {
		int old = li->port, st = 0;

		if (attempt > 0 || old <= 0 || !local_port_free(old)) {
			int port = assign_port(lp, li);
			if (port < 0)
				return errmsg_set(e, -EADDRINUSE, "no free TCP port in %d-%d",
				                  LOCAL_PORT_MIN, LOCAL_PORT_MAX);
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
		struct pg_launch l = {lp->bindir, data, sock, fd, li->port, &lp->acct};
		pid_t pid = pg_server_launch(&l, e);
		close(fd);
		if (pid < 0)
			return (int)pid;
		rc = pg_server_wait_ready(pid, sock, li->port, li->username, LOCAL_READY_TIMEOUT_MS,
		                          &li->cancel, &st);
		if (rc == 0) {
			pthread_mutex_lock(&lp->lock);
			li->pid = pid;
			pthread_mutex_unlock(&lp->lock);
			return 0;
		}
		if (rc != -ECHILD) {
			pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
			if (rc == -EINTR)
				return errmsg_set(e, -EINTR, "interrupted while %s was starting",
				                  li->name);
			return errmsg_set(e, rc,
			                  "the server of %s did not accept connections "
			                  "within %d s (see %s)",
			                  li->name, LOCAL_READY_TIMEOUT_MS / 1000, logp);
		}
		char tail[4096], reason[512], how[64];
		read_log_since(logp, off, tail, sizeof(tail));
		if (local_log_port_conflict(tail))
			continue; /* someone took the port between our check and bind */
		local_describe_status(st, how, sizeof(how));
		if (!tail[strspn(tail, " \t\r\n")])
			return silent_exit(li, how, data, e);
		local_log_reason(tail, reason, sizeof(reason));
		return errmsg_set(e, -EIO, "the server of %s exited during startup (%s): %s",
		                  li->name, how, reason);
	}
	return errmsg_set(e, -EADDRINUSE, "the server of %s found every port it tried in use",
	                  li->name);
}

/* ---- threads ---- */

static void timed_wait(struct local_provider *lp, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&lp->cond, &lp->lock, &ts);
}

/* Caller holds the lock; li is not busy and has a pid. */
static void reap_if_exited(struct local_instance *li)
{
	int st = 0;
	pid_t r = waitpid(li->pid, &st, WNOHANG);

	if (r == 0 || (r < 0 && errno != ECHILD))
		return;
	li->pid = 0;
	if (!li->want_running)
		return;
	char how[64];
	local_describe_status(st, how, sizeof(how));
	li->failures++;
	li->next_start_ms = now_ms() + local_backoff_ms(li->failures);
	set_status(li, "restarting");
	log_error("local: instance %s: server exited unexpectedly (%s); restarting", li->name, how);
}

/* li has failed too often (or cannot be started by retrying soon): report
 * "failed" and leave it to the slow background retries. Caller holds the
 * lock. */
static void enter_failed_locked(struct local_provider *lp, struct local_instance *li,
                                const char *reason)
{
	long long delay = local_retry_ms(li->slow_retries + 1, lp->retry_first_ms);

	li->slow = true;
	li->episode_retries = 0;
	li->next_start_ms = now_ms() + delay;
	set_status(li, "failed");
	if (reason)
		log_error("local: instance %s: gave up: %s; retrying in the background in %lld s",
		          li->name, reason, delay / 1000);
	else
		log_error("local: instance %s: gave up after %d failed starts; see "
		          "%s/instances/%s/server.log; retrying in the background in %lld s",
		          li->name, li->failures, lp->root, li->name, delay / 1000);
}

/* One start (or background retry) of li, which is not busy and due. Caller
 * holds the lock; it is released while the server starts. */
static void supervise_start_locked(struct local_provider *lp, struct local_instance *li)
{
	struct errmsg e;
	bool restart = li->slow || strcmp(li->status, "restarting") == 0;
	bool retry = li->slow;

	if (retry) {
		li->slow_retries++;
		/* Only the first retry of an episode and the recovery are
		 * logged: a retry every few minutes for days is no news. */
		if (li->episode_retries++ == 0)
			log_event("local: instance %s: retrying the start in the background (later "
			          "retries are logged only when one succeeds)",
			          li->name);
		set_status(li, "restarting");
	}
	li->busy = true;
	pthread_mutex_unlock(&lp->lock);
	errmsg_clear(&e);
	int rc = instance_start(lp, li, &e);
	pthread_mutex_lock(&lp->lock);
	li->busy = false;
	pthread_cond_broadcast(&lp->cond);
	if (rc == 0) {
		mark_running_locked(lp, li);
		if (retry)
			log_event("local: instance %s is available again after %d failed starts "
			          "(port %d)",
			          li->name, li->failures, li->port);
		else
			log_event("local: instance %s %s on port %d", li->name,
			          restart ? "restarted" : "started", li->port);
		li->slow = false;
		return;
	}
	if (lp->stopping || li->cancel)
		return; /* stop or destroy takes over */
	li->failures++;
	if (retry) {
		set_status(li, "failed");
		li->next_start_ms =
		    now_ms() + local_retry_ms(li->slow_retries + 1, lp->retry_first_ms);
		if (li->episode_retries == 1)
			log_error("local: instance %s: background retry failed: %s", li->name,
			          e.text);
	} else if (li->give_up) {
		enter_failed_locked(lp, li, e.text);
	} else {
		li->next_start_ms = now_ms() + local_backoff_ms(li->failures);
		set_status(li, "restarting");
		log_error("local: instance %s: %s", li->name, e.text);
	}
}

static void *supervisor_main(void *arg)
{
	struct local_provider *lp = arg;

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		for (struct local_instance *li = lp->instances; li && !lp->stopping;
		     li = li->next) {
			/* cancel: a destroy is waiting to take it over. */
			if (li->busy || li->cancel)
				continue;
			if (li->pid > 0) {
				reap_if_exited(li);
				/* Stable for a minute: past crashes and slow
				 * retries are forgiven (not at once: a server that
				 * starts and then crashes must not loop fast). */
				if (li->pid > 0 && (li->failures || li->slow_retries) &&
				    now_ms() - li->up_since_ms > 60000) {
					li->failures = 0;
					li->slow_retries = 0;
				}
			}
			if (li->pid > 0 || !li->want_running)
				continue;
			if (!li->slow && li->failures >= LOCAL_MAX_FAILURES) {
				enter_failed_locked(lp, li, NULL);
				continue;
			}
			if (now_ms() < li->next_start_ms)
				continue;
			supervise_start_locked(lp, li);
		}
		if (!lp->stopping)
			timed_wait(lp, 100);
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

/* True if our child pid has exited but is not reaped yet (WNOWAIT: the
 * supervisor still reaps it and reports the exit). Caller holds the lock. */
static bool exited_unreaped(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		return errno == ECHILD;
	return si.si_pid == pid;
}

struct probe_target {
	char name[32];
	unsigned long long run_id;
	char sock[PATH_MAX];
	char user[64];
};

/* Snapshot of the running servers to probe, in two parallel arrays (the
 * probes point into the targets). Caller holds the lock. */
static size_t probe_collect_locked(struct local_provider *lp, struct probe_target **tout,
                                   struct pg_probe **pout)
{
	size_t n = 0, i = 0;

	*tout = NULL;
	*pout = NULL;
	for (struct local_instance *li = lp->instances; li; li = li->next)
		n += !li->busy && !li->hidden && li->pid > 0;
	if (!n)
		return 0;
	struct probe_target *t = calloc(n, sizeof(*t));
	struct pg_probe *p = calloc(n, sizeof(*p));
	if (!t || !p) {
		free(t);
		free(p);
		return 0;
	}
	for (struct local_instance *li = lp->instances; li && i < n; li = li->next) {
		if (li->busy || li->hidden || li->pid <= 0)
			continue;
		snprintf(t[i].name, sizeof(t[i].name), "%s", li->name);
		snprintf(t[i].user, sizeof(t[i].user), "%s", li->username);
		t[i].run_id = li->run_id;
		inst_paths(lp, li->name, NULL, NULL, t[i].sock, NULL);
		p[i].sockdir = t[i].sock;
		p[i].port = li->port;
		p[i].user = t[i].user;
		i++;
	}
	*tout = t;
	*pout = p;
	return i;
}

/* Applies one probe's outcome, unless the instance changed meanwhile
 * (destroyed, restarted, owned by an operation). Caller holds the lock. */
static void probe_apply_locked(struct local_provider *lp, const struct probe_target *t,
                               const struct pg_probe *probe)
{
	struct local_instance *li = find_locked(lp, t->name);

	if (!li || li->run_id != t->run_id || li->busy || li->hidden || li->pid <= 0)
		return;
	/* A dead server is the supervisor's to report and restart. */
	if (!probe->ok && exited_unreaped(li->pid))
		return;
	bool unresponsive = strcmp(li->status, "unresponsive") == 0;
	if (!unresponsive && strcmp(li->status, "available") != 0)
		return;
	switch (local_probe_verdict(unresponsive, probe->ok, &li->probe_misses)) {
	case PROBE_NOW_UNRESPONSIVE:
		set_status(li, "unresponsive");
		/* Not restarted: a long checkpoint or a debugger stop is the
		 * user's business; we only report it. */
		log_error("local: instance %s: server (pid %d) is running but did not answer %d "
		          "probes in a row (%s); status is unresponsive",
		          li->name, (int)li->pid, LOCAL_PROBE_MISSES, probe->reason);
		break;
	case PROBE_RESPONSIVE_AGAIN:
		set_status(li, "available");
		log_event("local: instance %s: server answers again; status is available",
		          li->name);
		break;
	case PROBE_KEEP:
		break;
	}
}

/* Once per refresh period, one connection attempt per running server, all
 * in flight together and bounded by LOCAL_PROBE_TIMEOUT_MS. The lock is
 * not held while waiting for answers, so list/get/provision/destroy never
 * wait on a hung server; its own thread keeps the supervisor's reaping and
 * restarts (which can take a minute) from delaying probes, and vice versa. */
static void *prober_main(void *arg)
{
	struct local_provider *lp = arg;
	long long next_round = now_ms() + lp->probe_period_ms;

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		long long left = next_round - now_ms();
		if (left > 0) {
			timed_wait(lp, left > 1000 ? 1000 : (int)left);
			continue;
		}
		next_round = now_ms() + lp->probe_period_ms;

		struct probe_target *t;
		struct pg_probe *probes;
		size_t n = probe_collect_locked(lp, &t, &probes);
		pthread_mutex_unlock(&lp->lock);
		pg_probe_many(probes, n, LOCAL_PROBE_TIMEOUT_MS, &lp->stopping);
		pthread_mutex_lock(&lp->lock);
		for (size_t i = 0; i < n && !lp->stopping; i++)
			probe_apply_locked(lp, &t[i], &probes[i]);
		free(t);
		free(probes);
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

static void *preparer_main(void *arg)
{
	struct local_provider *lp = arg;
	long long retry_at = 0;

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		bool worked = false;

		lp->spare_wanted = false;
		/* A provision goes first: its copy and its server's start must
		 * not race a spare's copy for the disk. It wakes us when done. */
		if (now_ms() >= retry_at && lp->provisioning == 0) {
			struct errmsg e;
			int rc;

			pthread_mutex_unlock(&lp->lock);
			errmsg_clear(&e);
			rc = tmpl_ensure(lp, lp->default_user, true, &e);
			pthread_mutex_lock(&lp->lock);
			bool yield = lp->provisioning > 0;
			pthread_mutex_unlock(&lp->lock);
			if (!rc && !yield && spare_count(lp, lp->default_user) < LOCAL_SPARES) {
				rc = spare_room(lp, lp->default_user, LOCAL_SPARE_MARGIN_BYTES,
				                true, &e);
				if (rc == -ENOSPC) {
					/* Checked again every round; said once. */
					if (!lp->spare_space_logged)
						log_event(
						    "local: not preparing a spare instance: %s",
						    e.text);
					lp->spare_space_logged = true;
					rc = 0;
				} else if (rc == 0) {
					rc = spare_make(lp, lp->default_user, true, NULL, 0, &e);
					worked = rc == 0;
					if (worked)
						lp->spare_space_logged = false;
				}
			}
			pthread_mutex_lock(&lp->lock);
			if (rc && !lp->stopping) {
				log_error("local: preparing a spare instance failed: %s", e.text);
				retry_at = now_ms() + 30000;
			}
		}
		if (!worked && !lp->spare_wanted && !lp->stopping)
			timed_wait(lp, 2000);
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

/* A provision has ended (with its server up, or with nothing left):
 * the preparer may replace the spare it took. Caller holds the lock. */
static void provision_done_locked(struct local_provider *lp)
{
	lp->provisioning--;
	lp->spare_wanted = true;
	pthread_cond_broadcast(&lp->cond);
}

/* ---- start / rediscovery ---- */

static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 3 || n > 16)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static void rediscover(struct local_provider *lp)
{
	char dir[PATH_MAX + 16], path[PATH_MAX + 300], text[1024];
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof(dir), "%s/instances", lp->root);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct local_meta m;
		struct local_instance *li;

		if (de->d_name[0] == '.')
			continue;
		if (!name_ok(de->d_name)) {
			log_error("local: ignoring %s/%s: not an instance name", dir, de->d_name);
			continue;
		}
		li = calloc(1, sizeof(*li));
		if (!li)
			break;
		snprintf(li->name, sizeof(li->name), "%s", de->d_name);
		snprintf(path, sizeof(path), "%s/%s/meta", dir, de->d_name);
		int rc = local_read_file(path, text, sizeof(text), false);
		if (!rc)
			rc = local_meta_parse(text, &m);
		snprintf(path, sizeof(path), "%s/%s/data/PG_VERSION", dir, de->d_name);
		if (rc) {
			set_status(li, "failed");
			log_error("local: instance %s: missing or malformed %s/%s/meta", li->name,
			          dir, de->d_name);
		} else if (access(path, F_OK) != 0) {
			set_status(li, "failed");
			snprintf(li->username, sizeof(li->username), "%s", m.username);
			log_error("local: instance %s: no data directory", li->name);
		} else {
			li->port = m.port;
			snprintf(li->username, sizeof(li->username), "%s", m.username);
			set_status(li, "starting");
			li->want_running = true;
		}
		pthread_mutex_lock(&lp->lock);
		li->next = lp->instances;
		lp->instances = li;
		pthread_mutex_unlock(&lp->lock);
	}
	closedir(d);
}

/* The pid in the lock file, fixed width so a reader never sees half of
 * it. Only read for the refusal message of a second dbosfs. */
static void write_lock_pid(struct local_provider *lp)
{
	char text[16];
	int n = snprintf(text, sizeof(text), "%-10d\n", (int)getpid());

	if (lp->lock_fd < 0)
		return;
	if (pwrite(lp->lock_fd, text, (size_t)n, 0) != n || ftruncate(lp->lock_fd, n) < 0)
		log_error("local: cannot write our pid into %s/lock: %m", lp->root);
}

/* Stops and joins the first n of the provider's threads after a failed
 * start. */
static void join_threads(struct local_provider *lp, pthread_t *threads, int n)
{
	pthread_mutex_lock(&lp->lock);
	lp->stopping = true;
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	for (int i = 0; i < n; i++)
		pthread_join(threads[i], NULL);
}

static int local_start(struct provider *p, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	pthread_t *threads[] = {&lp->supervisor, &lp->preparer, &lp->prober};
	void *(*mains[])(void *) = {supervisor_main, preparer_main, prober_main};
	pthread_t started[3];

	/* The lock is ours since create(); the pid in it is now the
	 * daemon's, no longer that of the parent that has exited. */
	write_lock_pid(lp);
	tmpl_cleanup(lp);
	rediscover(lp);
	for (int i = 0; i < 3; i++) {
		int rc = pthread_create(threads[i], NULL, mains[i], lp);
		if (rc) {
			join_threads(lp, started, i);
			return errmsg_set(e, -rc, "cannot start the provider's threads: %s",
			                  strerror(rc));
		}
		started[i] = *threads[i];
	}
	lp->started = true;
	return 0;
}

static void local_stop(struct provider *p)
{
	struct local_provider *lp = LP(p);
	pid_t *pids = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&lp->lock);
	lp->stopping = true;
	/* Starts in flight (supervisor, provisions) end now, not after a
	 * leftover's 30 s or a server's readiness timeout. */
	for (struct local_instance *li = lp->instances; li; li = li->next)
		__atomic_store_n(&li->cancel, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&lp->cond);
	if (lp->helper_pid > 0)
		kill(lp->helper_pid, SIGKILL); /* an initdb or cp of the preparer */
	pthread_mutex_unlock(&lp->lock);
	if (lp->started) {
		pthread_join(lp->supervisor, NULL);
		pthread_join(lp->preparer, NULL);
		pthread_join(lp->prober, NULL);
		lp->started = false;
	}

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *li = lp->instances; li; li = li->next) {
		li->want_running = false;
		if (li->pid <= 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			pid_t *np = realloc(pids, cap * sizeof(*pids));
			if (!np)
				break;
			pids = np;
		}
		pids[n++] = li->pid;
		li->pid = 0;
	}
	pthread_mutex_unlock(&lp->lock);

	/* Signal every server first, then wait: they shut down in parallel.
	 * SIGCONT wakes a stopped (unresponsive) one so it can shut down too. */
	for (size_t i = 0; i < n; i++) {
		kill(pids[i], SIGINT);
		kill(pids[i], SIGCONT);
	}
	long long deadline = now_ms() + LOCAL_STOP_TIMEOUT_MS;
	for (size_t i = 0; i < n; i++) {
		long long left = deadline - now_ms();
		if (!local_reap_wait(pids[i], left > 0 ? (int)left : 0, NULL)) {
			log_error("local: server %d did not stop in time; killing it",
			          (int)pids[i]);
			kill(pids[i], SIGKILL);
			local_reap_wait(pids[i], 5000, NULL);
		}
	}
	if (n)
		log_event("local: stopped %zu server%s", n, n == 1 ? "" : "s");
	free(pids);
	if (lp->runbase_is_tmp) {
		local_rmtree(lp->runbase);
		lp->runbase_is_tmp = false;
	}
}

static void local_free(struct provider *p)
{
	struct local_provider *lp;

	if (!p)
		return;
	lp = LP(p);
	if (lp) {
		while (lp->instances) {
			struct local_instance *li = lp->instances;
			lp->instances = li->next;
			free(li);
		}
		if (lp->runbase_is_tmp) /* created but never started */
			local_rmtree(lp->runbase);
		free(lp->acct.groups);
		if (lp->lock_fd >= 0)
			close(lp->lock_fd); /* releases the state_dir */
		pthread_mutex_destroy(&lp->lock);
		pthread_mutex_destroy(&lp->tmpl_lock);
		pthread_mutex_destroy(&lp->spare_lock);
		pthread_cond_destroy(&lp->cond);
		free(lp);
	}
	free(p);
}

/* ---- operations ---- */

static int local_list(struct provider *p, struct instance_list *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	int rc = 0;

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *li = lp->instances; li && !rc; li = li->next) {
		struct instance inst;
		if (li->hidden)
			continue;
		to_instance(li, &inst);
		rc = instance_list_push(out, &inst);
	}
	pthread_mutex_unlock(&lp->lock);
	if (rc) {
		instance_list_free(out);
		return errmsg_set(e, rc, "out of memory listing instances");
	}
	return 0;
}

static int local_get(struct provider *p, const char *name, struct instance *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	int rc = 0;

	pthread_mutex_lock(&lp->lock);
	li = find_locked(lp, name);
	if (li && !li->hidden)
		to_instance(li, out);
	else
		rc = errmsg_set(e, -ENOENT, "no instance named %s", name);
	pthread_mutex_unlock(&lp->lock);
	return rc;
}

static int local_provision(struct provider *p, const char *name, const char *username,
                           const char *password, struct instance *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	char spare[PATH_MAX + 32], dir[PATH_MAX], sock[PATH_MAX];
	long long t0 = now_ms();
	bool claimed = false;
	int rc;

	li = calloc(1, sizeof(*li));
	if (!li)
		return errmsg_set(e, -ENOMEM, "out of memory");
	snprintf(li->name, sizeof(li->name), "%s", name);
	snprintf(li->username, sizeof(li->username), "%s", username);
	set_status(li, "starting");
	li->hidden = true;
	li->busy = true;

	/* Reserving the name in the table is the claim within this mount;
	 * the rename in spare_claim is the claim on disk. */
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
	lp->provisioning++;
	pthread_mutex_unlock(&lp->lock);

	rc = assign_port(lp, li);
	if (rc < 0) {
		rc = errmsg_set(e, -EADDRINUSE, "no free TCP port in %d-%d", LOCAL_PORT_MIN,
		                LOCAL_PORT_MAX);
		goto fail;
	}
	rc = spare_claim(lp, NULL, username, name, li->port, e);
	if (rc == -ENOENT) {
		/* No warm spare (several provisions in a row, or a username
		 * other than the default): make one now. */
		rc = tmpl_ensure(lp, username, false, e);
		/* A clear ENOSPC now rather than a cp or a server dying of it. */
		if (!rc)
			rc = spare_room(lp, username, LOCAL_START_MARGIN_BYTES, false, e);
		if (!rc)
			rc = spare_make(lp, username, false, spare, sizeof(spare), e);
		if (!rc) {
			rc = spare_claim(lp, spare, username, name, li->port, e);
			if (rc)
				local_rmtree(spare);
		}
	}
	if (rc)
		goto fail;
	claimed = true;

	rc = instance_start(lp, li, e);
	if (rc)
		goto fail;
	inst_paths(lp, name, NULL, NULL, sock, NULL);
	rc = pg_set_password(sock, li->port, username, password, e);
	if (rc)
		goto fail;

	pthread_mutex_lock(&lp->lock);
	mark_running_locked(lp, li);
	li->hidden = false;
	li->busy = false;
	li->want_running = true;
	to_instance(li, out);
	provision_done_locked(lp);
	pthread_mutex_unlock(&lp->lock);
	log_event("local: instance %s provisioned on port %d in %lld ms", name, out->port,
	          now_ms() - t0);
	return 0;

fail:
	/* Nothing may be left behind: no server, no directory, no entry. */
	if (li->pid > 0) {
		pg_server_stop(li->pid, LOCAL_STOP_TIMEOUT_MS);
		li->pid = 0;
	}
	if (claimed) {
		inst_paths(lp, name, dir, NULL, sock, NULL);
		local_rmtree(dir);
		local_rmtree(sock);
	}
	pthread_mutex_lock(&lp->lock);
	unlink_locked(lp, li);
	provision_done_locked(lp);
	pthread_mutex_unlock(&lp->lock);
	free(li);
	if (rc != -EEXIST)
		log_error("local: provisioning %s failed: %s", name, e ? e->text : "");
	return rc;
}

/* Waits (polling for Ctrl-C) until no operation owns the entry; returns it
 * with the lock held, or NULL with the lock held and *rc set. */
static struct local_instance *acquire_locked(struct local_provider *lp, const char *name,
                                             bool cancel_start, int *rc, struct errmsg *e)
{
	long long deadline = now_ms() + 15000;

	for (;;) {
		struct local_instance *li = find_locked(lp, name);

		if (!li || li->hidden) {
			*rc = errmsg_set(e, -ENOENT, "no instance named %s", name);
			return NULL;
		}
		if (!li->busy) {
			__atomic_store_n(&li->cancel, false, __ATOMIC_RELEASE);
			return li;
		}
		/* A start by the supervisor (a restart, a background retry of a
		 * failed instance) ends at once rather than after its timeouts;
		 * the supervisor leaves a cancelled entry alone until we have it. */
		if (cancel_start)
			__atomic_store_n(&li->cancel, true, __ATOMIC_RELEASE);
		if (op_interrupted() || now_ms() > deadline) {
			/* Not ours after all: the supervisor may have it again. */
			if (cancel_start && !lp->stopping)
				__atomic_store_n(&li->cancel, false, __ATOMIC_RELEASE);
			if (op_interrupted())
				*rc = errmsg_set(e, -EINTR, "interrupted");
			else
				*rc = errmsg_set(e, -EBUSY,
				                 "instance %s is busy (%s); try again later", name,
				                 li->status);
			return NULL;
		}
		timed_wait(lp, 100);
	}
}

static int local_destroy(struct provider *p, const struct instance *inst, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	char dir[PATH_MAX], sock[PATH_MAX], trash[PATH_MAX + 64];
	int rc = 0;
	pid_t pid;

	pthread_mutex_lock(&lp->lock);
	li = acquire_locked(lp, inst->name, true, &rc, e);
	if (!li) {
		pthread_mutex_unlock(&lp->lock);
		return rc;
	}
	li->busy = true;
	li->want_running = false;
	set_status(li, "deleting");
	pid = li->pid;
	pthread_mutex_unlock(&lp->lock);

	/* We own it now (busy): the supervisor will not reap or restart it. */
	pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
	inst_paths(lp, inst->name, dir, NULL, sock, NULL);
	/* Renaming first frees the name at once; the slow delete follows. */
	snprintf(trash, sizeof(trash), "%s/trash/%s.%lld", lp->root, inst->name, now_ms());
	if (rename(dir, trash) == 0)
		rc = local_rmtree(trash);
	else
		rc = errno == ENOENT ? 0 : local_rmtree(dir);
	local_rmtree(sock);

	pthread_mutex_lock(&lp->lock);
	li->pid = 0;
	if (rc) {
		/* The server is stopped but files remain: say so, keep the entry
		 * so the user can retry. */
		set_status(li, "failed");
		li->busy = false;
		pthread_cond_broadcast(&lp->cond);
		pthread_mutex_unlock(&lp->lock);
		return errmsg_set(e, -EIO, "cannot remove the files of %s: %s", inst->name,
		                  strerror(-rc));
	}
	unlink_locked(lp, li);
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	free(li);
	log_event("local: instance %s destroyed", inst->name);
	return 0;
}

static int local_reset_password(struct provider *p, const struct instance *inst,
                                const char *password, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	char sock[PATH_MAX], user[64], status[32];
	int port, rc = 0;

	pthread_mutex_lock(&lp->lock);
	li = find_locked(lp, inst->name);
	if (!li || li->hidden) {
		pthread_mutex_unlock(&lp->lock);
		return errmsg_set(e, -ENOENT, "no instance named %s", inst->name);
	}
	snprintf(status, sizeof(status), "%s", li->status);
	snprintf(user, sizeof(user), "%s", li->username);
	port = li->port;
	bool ready = li->pid > 0 && !li->busy && strcmp(li->status, "available") == 0;
	pthread_mutex_unlock(&lp->lock);
	if (!ready)
		return errmsg_set(e, -EBUSY,
		                  "instance %s is %s; the password can be reset once it is "
		                  "available",
		                  inst->name, status);
	inst_paths(lp, inst->name, NULL, NULL, sock, NULL);
	rc = pg_set_password(sock, port, user, password, e);
	if (rc)
		return rc;
	log_event("local: instance %s: password reset", inst->name);
	return 0;
}

static const struct provider_ops local_ops = {
    .kind = "local",
    .start = local_start,
    .stop = local_stop,
    .free = local_free,
    .list = local_list,
    .get = local_get,
    .provision = local_provision,
    .destroy = local_destroy,
    .reset_password = local_reset_password,
};

/* ---- create ---- */

static bool has_server_binaries(const char *dir)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/initdb", dir);
	if (access(path, X_OK) != 0)
		return false;
	snprintf(path, sizeof(path), "%s/postgres", dir);
	return access(path, X_OK) == 0;
}

/* `pg_config --bindir`, run to completion here (a short-lived child that
 * is reaped before create() returns, so daemonizing loses nothing). */
static bool pg_config_bindir(char *out, size_t outsz)
{
	static const char *const candidates[] = {"/usr/bin/pg_config", "/usr/local/bin/pg_config",
	                                         "/usr/local/pgsql/bin/pg_config"};
	int fds[2];

	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		struct spawn_spec s;
		char buf[PATH_MAX];
		size_t got = 0;
		int st = 0;

		if (access(candidates[i], X_OK) != 0)
			continue;
		if (pipe2(fds, O_CLOEXEC) < 0)
			return false;
		char *argv[] = {(char *)candidates[i], "--bindir", NULL};
		memset(&s, 0, sizeof(s));
		s.argv = argv;
		s.envp = local_child_env;
		s.out_fd = fds[1];
		s.err_fd = -1;
		pid_t pid = local_spawn(&s, NULL);
		close(fds[1]);
		if (pid < 0) {
			close(fds[0]);
			continue;
		}
		for (;;) {
			ssize_t n = read(fds[0], buf + got, sizeof(buf) - 1 - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
			if (got == sizeof(buf) - 1)
				break;
		}
		close(fds[0]);
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		buf[got] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && buf[0] == '/' &&
		    has_server_binaries(buf)) {
			snprintf(out, outsz, "%s", buf);
			return true;
		}
	}
	return false;
}

static bool newest_versioned_bindir(char *out, size_t outsz)
{
	glob_t g;
	double best = -1;

	if (glob("/usr/lib/postgresql/*/bin", GLOB_ONLYDIR, NULL, &g) != 0)
		return false;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *v = g.gl_pathv[i] + strlen("/usr/lib/postgresql/");
		double ver = strtod(v, NULL);
		if (ver > best && has_server_binaries(g.gl_pathv[i])) {
			best = ver;
			snprintf(out, outsz, "%s", g.gl_pathv[i]);
		}
	}
	globfree(&g);
	return best >= 0;
}

static int resolve_bindir(const struct dbosfs_options *opt, char *out, size_t outsz,
                          struct errmsg *e)
{
	if (opt->pg_bindir && *opt->pg_bindir) {
		if (!has_server_binaries(opt->pg_bindir))
			return errmsg_set(e, -ENOENT,
			                  "pg_bindir=%s has no executable initdb and postgres",
			                  opt->pg_bindir);
		snprintf(out, outsz, "%s", opt->pg_bindir);
		return 0;
	}
	if (pg_config_bindir(out, outsz) || newest_versioned_bindir(out, outsz))
		return 0;
	return errmsg_set(e, -ENOENT,
	                  "no PostgreSQL server binaries found: install "
	                  "postgresql-15 or pass -o pg_bindir=DIR");
}

static bool can_traverse(const struct stat *st, const struct local_account *a)
{
	if (st->st_uid == a->uid)
		return st->st_mode & S_IXUSR;
	bool in_group = st->st_gid == a->gid;
	for (int i = 0; i < a->ngroups && !in_group; i++)
		in_group = a->groups[i] == st->st_gid;
	return in_group ? (st->st_mode & S_IXGRP) : (st->st_mode & S_IXOTH);
}

/* As root, the server account must be able to walk from / to its data
 * directories. We open our own state_dir for traversal (o+x: listing and
 * the 0700 passwords directory stay closed); an ancestor we do not own is
 * the user's to fix, so we say which one. */
static int check_reachable(const struct local_provider *lp, const char *state_dir, struct errmsg *e)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s", state_dir);
	if (stat(path, &st) == 0 && !can_traverse(&st, &lp->acct) &&
	    chmod(path, (st.st_mode & 07777) | S_IXOTH) < 0)
		return errmsg_set(e, -errno, "cannot open %s for traversal: %s", path,
		                  strerror(errno));
	for (char *slash = strrchr(path, '/'); slash && slash != path; slash = strrchr(path, '/')) {
		*slash = '\0';
		if (stat(path, &st) < 0)
			return errmsg_set(e, -errno, "cannot stat %s: %s", path, strerror(errno));
		if (!can_traverse(&st, &lp->acct))
			return errmsg_set(
			    e, -EACCES,
			    "the server account %s cannot enter %s (mode %04o), so PostgreSQL "
			    "could not reach its data under %s: choose another state_dir or "
			    "allow traversal (chmod o+x %s)",
			    lp->acct.name, path, (unsigned)(st.st_mode & 07777), state_dir, path);
	}
	return 0;
}

static int resolve_account(const struct dbosfs_options *opt, struct local_account *a,
                           struct errmsg *e)
{
	if (geteuid() != 0) {
		struct passwd *pw = getpwuid(geteuid());
		a->drop = false;
		a->uid = geteuid();
		a->gid = getegid();
		snprintf(a->name, sizeof(a->name), "%s", pw ? pw->pw_name : "unknown");
		return 0;
	}
	const char *user = opt->pg_user && *opt->pg_user ? opt->pg_user : "postgres";
	struct passwd *pw = getpwnam(user);
	if (!pw)
		return errmsg_set(e, -ENOENT,
		                  "PostgreSQL refuses to run as root and the account %s does not "
		                  "exist: create it or pass -o pg_user=USER",
		                  user);
	if (pw->pw_uid == 0)
		return errmsg_set(e, -EINVAL,
		                  "pg_user=%s is root; PostgreSQL refuses to run as root", user);
	a->drop = true;
	a->uid = pw->pw_uid;
	a->gid = pw->pw_gid;
	snprintf(a->name, sizeof(a->name), "%s", user);
	/* Group list now: initgroups() in the child is not async-signal-safe. */
	int n = 32;
	for (int tries = 0; tries < 4; tries++) {
		gid_t *g = realloc(a->groups, (size_t)n * sizeof(gid_t));
		if (!g)
			return errmsg_set(e, -ENOMEM, "out of memory");
		a->groups = g;
		int want = n;
		if (getgrouplist(user, a->gid, a->groups, &want) >= 0) {
			a->ngroups = want;
			return 0;
		}
		n = want > n ? want : n * 2;
	}
	return errmsg_set(e, -EIO, "cannot read the groups of %s", user);
}

static int make_dirs(struct local_provider *lp, const char *state_dir, struct errmsg *e)
{
	static const char *const subdirs[] = {"instances", "templates", "spares", "trash", "run"};
	mode_t mode = lp->acct.drop ? 0711 : 0700;
	char path[PATH_MAX + 32];
	int rc;

	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
		return errmsg_set(e, -errno, "cannot create %s: %s", state_dir, strerror(errno));
	if (lp->acct.drop) {
		rc = check_reachable(lp, state_dir, e);
		if (rc)
			return rc;
	}
	rc = local_mkdir(lp, lp->root, mode, false);
	for (size_t i = 0; !rc && i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", lp->root, subdirs[i]);
		rc = local_mkdir(lp, path, mode, false);
	}
	if (rc)
		return errmsg_set(e, rc, "cannot create directories under %s: %s", lp->root,
		                  strerror(-rc));
	local_path(lp->runbase, sizeof(lp->runbase), "%s/run", lp->root);
	if (!local_socket_path_fits(lp->runbase, 16)) {
		/* Sockets need a path under 108 bytes; a deep state_dir gets a
		 * private directory in /tmp instead (made at start). */
		lp->runbase[0] = '\0';
	}
	return 0;
}

/* One dbosfs per STATE_DIR/local: two would each take the other's
 * postmasters for leftovers of a crash and kill them. The flock belongs to
 * the open file, so it survives the fork that daemonizes (the parent's
 * copy closes at its exit, the daemon's stays) and the kernel drops it
 * when the holder dies; it is released at free(). Children never inherit
 * it (O_CLOEXEC, and local_spawn closes every fd). A cloud mount uses
 * other subdirectories of state_dir and takes no part in this. */
static int lock_state_dir(struct local_provider *lp, const char *state_dir, struct errmsg *e)
{
	char path[PATH_MAX], text[32];
	int fd, err;

	if (local_path(path, sizeof(path), "%s/lock", lp->root))
		return errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		lp->lock_fd = fd;
		write_lock_pid(lp);
		return 0;
	}
	err = errno;
	if (err != EWOULDBLOCK) {
		close(fd);
		return errmsg_set(e, -err, "cannot lock %s: %s", path, strerror(err));
	}
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
	text[n > 0 ? n : 0] = '\0';
	close(fd);
	int pid = atoi(text);
	if (pid > 0)
		return errmsg_set(e, -EBUSY, "state_dir %s is in use by another dbosfs (pid %d)",
		                  state_dir, pid);
	/* It has locked the file but not written its pid yet. */
	return errmsg_set(e, -EBUSY, "state_dir %s is in use by another dbosfs", state_dir);
}

/* A short socket directory when state_dir is too deep. Made in create()
 * (a directory is not a thread or a process, so daemonizing keeps it). */
static int make_tmp_runbase(struct local_provider *lp, struct errmsg *e)
{
	char tmpl[] = "/tmp/dbosfs-run-XXXXXX";

	if (!mkdtemp(tmpl))
		return errmsg_set(e, -errno, "cannot create a socket directory in /tmp: %s",
		                  strerror(errno));
	if (lp->acct.drop && chmod(tmpl, 0711) < 0)
		return errmsg_set(e, -errno, "cannot chmod %s: %s", tmpl, strerror(errno));
	snprintf(lp->runbase, sizeof(lp->runbase), "%s", tmpl);
	lp->runbase_is_tmp = true;
	return 0;
}

int local_provider_create(const struct dbosfs_options *opt, struct provider **out, struct errmsg *e)
{
	struct provider *p = calloc(1, sizeof(*p));
	struct local_provider *lp = calloc(1, sizeof(*lp));
	int rc;

	*out = NULL;
	if (!p || !lp) {
		free(p);
		free(lp);
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	p->ops = &local_ops;
	p->priv = lp;
	lp->lock_fd = -1;
	pthread_mutex_init(&lp->lock, NULL);
	pthread_mutex_init(&lp->tmpl_lock, NULL);
	pthread_mutex_init(&lp->spare_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lp->cond, &ca);
	pthread_condattr_destroy(&ca);
	lp->spare_seq = (unsigned)time(NULL);

	if (!opt->state_dir || opt->state_dir[0] != '/') {
		rc = errmsg_set(e, -EINVAL, "state_dir must be an absolute path");
		goto fail;
	}
	lp->probe_period_ms = (opt->refresh > 0 ? opt->refresh : 2) * 1000;
	/* For tests only: the first slow retry of a failed instance after
	 * DBOSFS_LOCAL_RETRY_S seconds (1..300) instead of 30, so a test can
	 * watch a repaired instance come back without waiting minutes. */
	const char *retry_s = getenv("DBOSFS_LOCAL_RETRY_S");
	long rs = retry_s ? strtol(retry_s, NULL, 10) : 0;
	lp->retry_first_ms = rs >= 1 && rs <= 300 ? rs * 1000 : LOCAL_RETRY_FIRST_MS;
	snprintf(lp->default_user, sizeof(lp->default_user), "%s",
	         opt->db_username && *opt->db_username ? opt->db_username : "dbos_user");
	rc = resolve_bindir(opt, lp->bindir, sizeof(lp->bindir), e);
	if (rc)
		goto fail;
	rc = resolve_account(opt, &lp->acct, e);
	if (rc)
		goto fail;
	if (local_path(lp->root, sizeof(lp->root), "%s/local", opt->state_dir)) {
		rc = errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
		goto fail;
	}
	rc = make_dirs(lp, opt->state_dir, e);
	if (!rc)
		rc = lock_state_dir(lp, opt->state_dir, e);
	if (!rc && !lp->runbase[0])
		rc = make_tmp_runbase(lp, e);
	if (rc)
		goto fail;

	snprintf(p->provider_line, sizeof(p->provider_line), "local");
	snprintf(p->secret_scope, sizeof(p->secret_scope), "local");
	if (lp->acct.drop) {
		snprintf(p->account, sizeof(p->account), "root (servers run as %s)", lp->acct.name);
	} else {
		struct passwd *pw = getpwuid(opt->owner_uid ? opt->owner_uid : geteuid());
		snprintf(p->account, sizeof(p->account), "%s", pw ? pw->pw_name : lp->acct.name);
	}
	errmsg_clear(e);
	*out = p;
	return 0;
fail:
	local_free(p);
	return rc;
}
