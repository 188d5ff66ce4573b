/* Child processes of the local provider: spawning them safely from a
 * multi-threaded FUSE daemon, launching and probing one postmaster,
 * stopping it, and administering it over its Unix socket. */
#include "local_internal.h"
#include "log.h"
#include "pg.h"
#include "proc.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *const local_child_env[] = {
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "LANG=C.UTF-8",
    "LC_MESSAGES=C",
    NULL,
};

void local_creds(const struct local_account *a, struct proc_creds *out)
{
	memset(out, 0, sizeof(*out));
	out->drop = a->drop;
	out->uid = a->uid;
	out->gid = a->gid;
	out->groups = a->groups;
	out->ngroups = a->ngroups;
}

void local_helper_spec(struct local_provider *lp, char *const *argv, int in_fd, int out_fd,
                       int err_fd, struct proc_creds *creds, struct proc_spec *s)
{
	local_creds(&lp->acct, creds);
	memset(s, 0, sizeof(*s));
	s->argv = argv;
	s->envp = local_child_env;
	s->in_fd = in_fd;
	s->out_fd = out_fd;
	s->err_fd = err_fd;
	/* initdb runs postgres children of its own: the whole group dies
	 * with us, and a later mount kills what a crash left of it. */
	s->grouping = PROC_NEW_GROUP;
	s->die_with_parent = true;
	s->pgroups_dir = lp->pgroups_dir[0] ? lp->pgroups_dir : NULL;
	s->creds = creds;
	s->nofile = PROC_CHILD_NOFILE;
	s->umask_private = true;
}

int local_run(struct local_provider *lp, bool track, char *const *argv, int out_fd, int *wstatus,
              struct errmsg *e)
{
	struct proc_creds creds;
	struct proc_spec s;

	local_helper_spec(lp, argv, -1, out_fd, out_fd, &creds, &s);
	pid_t pid = proc_spawn(&s, e);
	if (pid < 0)
		return (int)pid;
	if (track) {
		pthread_mutex_lock(&lp->lock);
		lp->helper_pid = pid;
		pthread_mutex_unlock(&lp->lock);
	}
	char step[64];
	/* Named after the program itself, not a nice/ionice wrapper. */
	const char *prog = argv[0];
	for (int i = 0; argv[i]; i++) {
		const char *b = strrchr(argv[i], '/');
		if (argv[i][0] == '/' && strcmp(b + 1, "nice") != 0 &&
		    strcmp(b + 1, "ionice") != 0) {
			prog = argv[i];
			break;
		}
	}
	const char *base = strrchr(prog, '/');
	snprintf(step, sizeof(step), "helper-%s", base ? base + 1 : prog);
	proc_crash_point(step); /* "helper-initdb", "helper-cp": while it runs */
	proc_reap(pid, wstatus, s.pgroups_dir);
	if (track) {
		pthread_mutex_lock(&lp->lock);
		lp->helper_pid = 0;
		pthread_mutex_unlock(&lp->lock);
	}
	return 0;
}

void pg_server_stop(pid_t pid, int timeout_ms)
{
	if (pid <= 0)
		return;
	/* SIGINT is PostgreSQL's fast shutdown: roll back, checkpoint, exit.
	 * SIGCONT lets a stopped (SIGSTOP) postmaster act on it at once. */
	kill(pid, SIGINT);
	kill(pid, SIGCONT);
	if (proc_reap_wait(pid, timeout_ms, NULL))
		return;
	kill(pid, SIGKILL);
	proc_reap_wait(pid, 5000, NULL);
}

pid_t pg_server_launch(const struct pg_launch *l, struct errmsg *e)
{
	char exe[PATH_MAX + 16], port[16];
	struct proc_creds creds;
	struct proc_spec s;

	snprintf(exe, sizeof(exe), "%s/postgres", l->bindir);
	snprintf(port, sizeof(port), "%d", l->port);
	/* Address, port and socket are ours to choose; the rest of the
	 * configuration is in the template's postgresql.conf. */
	char *argv[] = {exe,
	                "-D",
	                (char *)l->datadir,
	                "-p",
	                port,
	                "-k",
	                (char *)l->sockdir,
	                "-c",
	                "listen_addresses=127.0.0.1",
	                "-c",
	                "unix_socket_permissions=0700",
	                NULL, /* point-in-time recovery (local_pitr.c), when on: */
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL,
	                NULL};
	char mode[] = "archive_mode=on", cmd[PATH_MAX * 3 + 64], timeout[48];
	if (l->archive_command) {
		size_t n = 11;
		snprintf(cmd, sizeof(cmd), "archive_command=%s", l->archive_command);
		snprintf(timeout, sizeof(timeout), "archive_timeout=%d", l->archive_timeout_s);
		argv[n++] = "-c";
		argv[n++] = mode;
		argv[n++] = "-c";
		argv[n++] = cmd;
		argv[n++] = "-c";
		argv[n++] = timeout;
	}
	local_creds(l->acct, &creds);
	memset(&s, 0, sizeof(s));
	s.argv = argv;
	s.envp = local_child_env;
	s.in_fd = -1;
	s.out_fd = l->log_fd;
	s.err_fd = l->log_fd;
	/* Own session: a Ctrl-C at dbosfs -f must not reach servers. Not
	 * tied to our life: a later mount adopts or restarts it. */
	s.grouping = PROC_NEW_SESSION;
	s.creds = &creds;
	s.nofile = PROC_CHILD_NOFILE;
	s.umask_private = true;
	return proc_spawn(&s, e);
}

/* PostgreSQL keeps its state in postmaster.pid (line 8: "starting",
 * "ready", "stopping", "standby"), which pg_ctl -w reads; the postmaster
 * runs in its data directory, so /proc/PID/cwd finds the file. True while
 * that says the server is still starting (or the file is not written
 * yet); false once it says otherwise, or when it cannot be read (then a
 * connection attempt decides, as before). Polling the file instead of
 * connecting keeps the server log free of a "the database system is
 * starting up" line per poll. */
static bool pm_still_starting(pid_t pid)
{
	char path[64], line[256];
	int n = 0;
	bool starting = true;

	snprintf(path, sizeof(path), "/proc/%d/cwd/postmaster.pid", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT;
	while (fgets(line, sizeof(line), f))
		if (++n == 8) {
			starting = strncmp(line, "starting", 8) == 0;
			break;
		}
	fclose(f);
	return starting; /* fewer than 8 lines: the status is not written yet */
}

int pg_server_wait_ready(pid_t pid, const char *sockdir, int port, const char *user,
                         const char *password, int timeout_ms, const atomic_bool *cancel,
                         int *wstatus)
{
	char portstr[16];
	const char *keys[] = {"host",   "port",    "user",       "password",
	                      "dbname", "sslmode", "gssencmode", "application_name",
	                      NULL};
	const char *vals[] = {sockdir,   portstr,   user,     password, "postgres",
	                      "disable", "disable", "dbosfs", NULL};
	long long deadline = now_ms() + timeout_ms;

	snprintf(portstr, sizeof(portstr), "%d", port);
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		PGconn *c;

		if (r == pid || (r < 0 && errno == ECHILD)) {
			*wstatus = r == pid ? st : 0;
			return -ECHILD;
		}
		if (pm_still_starting(pid)) {
			if ((cancel && atomic_load(cancel)) || op_interrupted())
				return -EINTR;
			if (now_ms() >= deadline)
				return -ETIMEDOUT;
			proc_sleep_ms(3);
			continue;
		}
		/* A ready server lets user (dbosfs's superuser) in. */
		struct errmsg ce;
		errmsg_clear(&ce);
		int rc = pg_connect(keys, vals, 2000, cancel, &c, &ce);
		if (rc == 0) {
			PQfinish(c);
			return 0;
		}
		/* Ready, but our password is refused: retrying will not help. */
		if (strstr(ce.text, "password authentication failed"))
			return -EACCES;
		if (rc == -EINTR || (cancel && atomic_load(cancel)) || op_interrupted())
			return -EINTR;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		proc_sleep_ms(3);
	}
}

/* ---- leftover postmaster.pid ---- */

static bool real_alive(pid_t pid, void *arg)
{
	(void)arg;
	return proc_alive(pid);
}

static int real_signal(pid_t pid, int sig, void *arg)
{
	(void)arg;
	return kill(pid, sig);
}

int pg_stop_leftover(pid_t pid, int grace_ms, int total_ms, const atomic_bool *cancel,
                     const struct leftover_ops *ops)
{
	static const struct leftover_ops real = {real_alive, real_signal, NULL};
	long long start = now_ms(), next_kill = start + grace_ms;

	if (!ops)
		ops = &real;
	ops->signal(pid, SIGINT, ops->arg);
	/* SIGKILL cannot end a process stuck in the kernel (D state), so the
	 * wait has an end of its own: the supervisor must not hang here, nor
	 * stop() in joining it. */
	while (ops->alive(pid, ops->arg)) {
		long long t = now_ms();

		if (cancel && atomic_load(cancel))
			return -EINTR;
		if (t - start >= total_ms)
			return -ETIMEDOUT;
		if (t >= next_kill) {
			ops->signal(pid, SIGKILL, ops->arg);
			next_kill = t + 5000;
		}
		proc_sleep_ms(20);
	}
	return 0;
}

int pg_handle_stale_pid(const char *datadir, const char *name, const atomic_bool *cancel,
                        struct errmsg *e)
{
	char path[PATH_MAX + 32], text[256], link[PATH_MAX], real[PATH_MAX];
	struct stale_pid_facts f;

	memset(&f, 0, sizeof(f));
	snprintf(path, sizeof(path), "%s/postmaster.pid", datadir);
	int rc = local_read_file(path, text, sizeof(text), false);
	if (rc == -ENOENT)
		return 0;
	f.file_exists = true;
	if (rc == 0)
		f.pid = stale_pid_parse(text);
	if (f.pid > 0) {
		f.alive = proc_alive(f.pid);
		f.is_self_or_child_of_ours = f.pid == getpid() || proc_ppid(f.pid) == getpid();
		snprintf(path, sizeof(path), "/proc/%d/exe", (int)f.pid);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			/* "(deleted)" after a package upgrade still counts. */
			const char *base = strrchr(link, '/');
			f.is_postgres_exe = base && strncmp(base + 1, "postgres", 8) == 0;
		}
		snprintf(path, sizeof(path), "/proc/%d/cwd", (int)f.pid);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0 && realpath(datadir, real)) {
			link[n] = '\0';
			f.cwd_is_datadir = strcmp(link, real) == 0;
		}
	}
	switch (stale_pid_decide(&f)) {
	case STALE_PID_NONE:
		return 0;
	case STALE_PID_REMOVE:
		snprintf(path, sizeof(path), "%s/postmaster.pid", datadir);
		if (unlink(path) < 0 && errno != ENOENT)
			return errmsg_set(e, -errno, "cannot remove stale %s: %s", path,
			                  strerror(errno));
		log_event("local: instance %s: removed stale postmaster.pid (pid %d not a live "
		          "postmaster of its data directory)",
		          name, (int)f.pid);
		return 0;
	case STALE_PID_SHUTDOWN:
		/* A postmaster of ours left by a dbosfs that crashed: it is no
		 * longer our child, so stop it and start one we supervise. */
		log_event("local: instance %s: shutting down leftover postmaster %d", name,
		          (int)f.pid);
		rc = pg_stop_leftover(f.pid, LOCAL_STOP_TIMEOUT_MS, LOCAL_LEFTOVER_TIMEOUT_MS,
		                      cancel, NULL);
		if (rc == -EINTR)
			return errmsg_set(e, rc,
			                  "interrupted while waiting for leftover postmaster %d to "
			                  "exit",
			                  (int)f.pid);
		if (rc)
			return errmsg_set(e, rc,
			                  "leftover postmaster %d still runs on %s %d s after "
			                  "SIGINT and repeated SIGKILLs (stuck in the kernel?); "
			                  "not starting a second server on that data directory",
			                  (int)f.pid, datadir, LOCAL_LEFTOVER_TIMEOUT_MS / 1000);
		return 0;
	}
	return 0;
}

/* ---- ports ---- */

bool local_port_free(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* SO_REUSEADDR as PostgreSQL sets it: a port whose old socket is in
	 * TIME_WAIT is usable, a listening one is not. */
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int local_pick_port(const int *used, size_t nused)
{
	unsigned r = 0;
	int span = LOCAL_PORT_MAX - LOCAL_PORT_MIN + 1;

	/* A random start keeps concurrent mounts from racing for one port. */
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (unsigned)getpid() ^ (unsigned)now_ms();
	for (int i = 0; i < span; i++) {
		int port = LOCAL_PORT_MIN + (int)((r + (unsigned)i) % (unsigned)span);
		bool taken = false;

		for (size_t j = 0; j < nused && !taken; j++)
			taken = used[j] == port;
		if (!taken && local_port_free(port))
			return port;
	}
	return -EADDRINUSE;
}

/* Past the startup packet: whatever ends the attempt from here on (an
 * error message, an authentication request, the server closing) came
 * from a postmaster that is alive and accepting connections. */
static bool probe_answered_state(ConnStatusType st)
{
	switch (st) {
	case CONNECTION_AWAITING_RESPONSE:
	case CONNECTION_AUTH_OK:
	case CONNECTION_CHECK_WRITABLE:
	case CONNECTION_CONSUME:
	case CONNECTION_CHECK_TARGET:
	case CONNECTION_CHECK_STANDBY:
		return true;
	default:
		return false;
	}
}

static void probe_fail(struct pg_probe *p, const char *why)
{
	snprintf(p->reason, sizeof(p->reason), "%s", why && *why ? why : "connection failed");
	p->reason[strcspn(p->reason, "\n")] = '\0';
	/* libpq's wording of EMFILE/ENFILE from socket(): our limit. */
	p->ours = strstr(p->reason, "Too many open files") != NULL;
}

size_t local_probe_batch(void)
{
	struct rlimit rl;
	size_t open_fds = 0;
	DIR *d;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > 1048576)
		return LOCAL_PROBE_BATCH;
	d = opendir("/proc/self/fd");
	if (!d)
		return LOCAL_PROBE_BATCH;
	while (readdir(d))
		open_fds++;
	closedir(d);
	/* Room for what other threads open meanwhile (a log, a pipe, a
	 * helper's /dev/null): half of what is free goes to probes. */
	size_t free_fds = rl.rlim_cur > open_fds ? (size_t)rl.rlim_cur - open_fds : 0;
	size_t batch = free_fds / 2;
	if (batch < 1)
		batch = 1;
	return batch < LOCAL_PROBE_BATCH ? batch : LOCAL_PROBE_BATCH;
}

void pg_probe_many(struct pg_probe *probes, size_t n, int timeout_ms, const atomic_bool *cancel)
{
	PGconn **conns = calloc(n, sizeof(*conns));
	PostgresPollingStatusType *want = calloc(n, sizeof(*want));
	bool *past_startup = calloc(n, sizeof(*past_startup));
	struct pollfd *fds = calloc(n, sizeof(*fds));
	size_t *idx = calloc(n, sizeof(*idx));
	long long deadline;
	size_t pending = 0;

	if (n == 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		probes[i].ok = false;
		probes[i].ours = false;
		snprintf(probes[i].reason, sizeof(probes[i].reason), "no answer within %d ms",
		         timeout_ms);
	}
	if (!conns || !want || !past_startup || !fds || !idx) {
		for (size_t i = 0; i < n; i++)
			probe_fail(&probes[i], "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char portstr[16];
		const char *keys[] = {
		    "host", "port", "user", "dbname", "sslmode", "gssencmode", "application_name",
		    NULL};
		const char *vals[] = {probes[i].sockdir, portstr,   probes[i].user, "postgres",
		                      "disable",         "disable", "dbosfs-probe", NULL};

		snprintf(portstr, sizeof(portstr), "%d", probes[i].port);
		/* Non-blocking: connect() on a Unix socket never waits, and every
		 * server's answer is awaited below at the same time. */
		conns[i] = PQconnectStartParams(keys, vals, 0);
		if (!conns[i]) {
			probe_fail(&probes[i], "out of memory");
		} else if (PQstatus(conns[i]) == CONNECTION_BAD) {
			probe_fail(&probes[i], PQerrorMessage(conns[i]));
		} else {
			want[i] = PGRES_POLLING_WRITING; /* as libpq's docs prescribe */
			pending++;
		}
	}
	/* From here: PQconnectStartParams resolves a host name synchronously,
	 * and a slow resolver must not use up the others' time to answer. */
	deadline = now_ms() + timeout_ms;
	while (pending > 0) {
		long long left = deadline - now_ms();
		size_t m = 0;

		if (left <= 0 || (cancel && atomic_load(cancel)))
			break;
		for (size_t i = 0; i < n; i++) {
			if (!conns[i] || want[i] == PGRES_POLLING_OK ||
			    want[i] == PGRES_POLLING_FAILED)
				continue;
			fds[m].fd = PQsocket(conns[i]);
			fds[m].events = want[i] == PGRES_POLLING_READING ? POLLIN : POLLOUT;
			fds[m].revents = 0;
			idx[m++] = i;
		}
		/* Short slices so a stop request is noticed quickly. */
		int r = poll(fds, m, left < 100 ? (int)left : 100);
		if (r < 0 && errno != EINTR)
			break;
		for (size_t k = 0; r > 0 && k < m; k++) {
			size_t i = idx[k];
			if (!fds[k].revents)
				continue;
			want[i] = PQconnectPoll(conns[i]);
			if (want[i] == PGRES_POLLING_OK) {
				probes[i].ok = true;
				probes[i].reason[0] = '\0';
				pending--;
			} else if (want[i] == PGRES_POLLING_FAILED) {
				probes[i].ok = past_startup[i];
				if (probes[i].ok)
					probes[i].reason[0] = '\0';
				else
					probe_fail(&probes[i], PQerrorMessage(conns[i]));
				pending--;
			} else if (probe_answered_state(PQstatus(conns[i]))) {
				past_startup[i] = true;
			}
		}
	}
out:
	for (size_t i = 0; conns && i < n; i++)
		if (conns[i])
			PQfinish(conns[i]);
	free(conns);
	free(want);
	free(past_startup);
	free(fds);
	free(idx);
}
