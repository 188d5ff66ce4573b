/* Child processes of the local provider: spawning them safely from a
 * multi-threaded FUSE daemon, launching and probing one postmaster,
 * stopping it, and administering it over its Unix socket. */
#include "local_internal.h"
#include "log.h"

#include <arpa/inet.h>
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

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void child_fail(const char *what)
{
	/* write(2) is async-signal-safe; stdio is not. */
	static const char prefix[] = "dbosfs: child setup failed: ";
	ssize_t r = write(2, prefix, sizeof(prefix) - 1);
	r = write(2, what, strlen(what));
	r = write(2, "\n", 1);
	(void)r;
	_exit(126);
}

pid_t local_spawn(const struct spawn_spec *s, struct errmsg *e)
{
	/* Everything the child needs is prepared here, before fork: between
	 * fork and exec only async-signal-safe calls are allowed, because
	 * another thread may have held a lock (malloc, stdio) at fork time. */
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	struct rlimit rl;
	unsigned maxfd = 65536;
	sigset_t none;
	pid_t pid;

	if (devnull < 0)
		return errmsg_set(e, -errno, "cannot open /dev/null: %s", strerror(errno));
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < 1048576)
		maxfd = (unsigned)rl.rlim_cur;
	int out = s->out_fd >= 0 ? s->out_fd : devnull;
	int err = s->err_fd >= 0 ? s->err_fd : out;
	sigemptyset(&none);

	pid = fork();
	if (pid < 0) {
		int saved = errno;
		close(devnull);
		return errmsg_set(e, -saved, "fork failed: %s", strerror(saved));
	}
	if (pid == 0) {
		struct sigaction dfl;

		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		/* Ignored signals (SIGPIPE in a FUSE daemon) survive exec. */
		for (int sig = 1; sig < NSIG; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				sigaction(sig, &dfl, NULL);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Own session: a Ctrl-C at dbosfs -f must not reach servers. */
		if (s->new_session)
			setsid();
		if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
			_exit(126);
		/* The /dev/fuse fd and every other descriptor of ours stop here. */
		if (close_range(3, ~0U, 0) < 0)
			for (unsigned fd = 3; fd < maxfd; fd++)
				close((int)fd);
		if (chdir("/") < 0)
			child_fail("chdir /");
		if (s->acct && s->acct->drop) {
			if (setgroups((size_t)s->acct->ngroups, s->acct->groups) < 0)
				child_fail("setgroups");
			if (setgid(s->acct->gid) < 0)
				child_fail("setgid");
			if (setuid(s->acct->uid) < 0)
				child_fail("setuid");
		}
		umask(077);
		execve(s->argv[0], s->argv, s->envp);
		child_fail(s->argv[0]);
	}
	close(devnull);
	return pid;
}

void local_describe_status(int wstatus, char *out, size_t outsz)
{
	if (WIFEXITED(wstatus))
		snprintf(out, outsz, "exit status %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		snprintf(out, outsz, "killed by signal %d (%s)", WTERMSIG(wstatus),
		         strsignal(WTERMSIG(wstatus)));
	else
		snprintf(out, outsz, "wait status %d", wstatus);
}

int local_run(struct local_provider *lp, const struct spawn_spec *s, int *wstatus, struct errmsg *e)
{
	pid_t pid = local_spawn(s, e);

	if (pid < 0)
		return (int)pid;
	if (lp) {
		pthread_mutex_lock(&lp->lock);
		lp->helper_pid = pid;
		pthread_mutex_unlock(&lp->lock);
	}
	/* Only our own pid: migrations fork children of their own. */
	while (waitpid(pid, wstatus, 0) < 0) {
		if (errno != EINTR) {
			*wstatus = 0x7f00; /* unknown: report as exit 127 */
			break;
		}
	}
	if (lp) {
		pthread_mutex_lock(&lp->lock);
		lp->helper_pid = 0;
		pthread_mutex_unlock(&lp->lock);
	}
	return 0;
}

int local_reap_wait(pid_t pid, int timeout_ms, int *wstatus)
{
	long long deadline = now_ms() + timeout_ms;
	int st = 0, delay = 1;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD)) {
			if (wstatus)
				*wstatus = st;
			return 1;
		}
		if (now_ms() >= deadline)
			return 0;
		sleep_ms(delay);
		if (delay < 20)
			delay *= 2;
	}
}

void pg_server_stop(pid_t pid, int timeout_ms)
{
	if (pid <= 0)
		return;
	/* SIGINT is PostgreSQL's fast shutdown: roll back, checkpoint, exit.
	 * SIGCONT lets a stopped (SIGSTOP) postmaster act on it at once. */
	kill(pid, SIGINT);
	kill(pid, SIGCONT);
	if (local_reap_wait(pid, timeout_ms, NULL))
		return;
	kill(pid, SIGKILL);
	local_reap_wait(pid, 5000, NULL);
}

pid_t pg_server_launch(const struct pg_launch *l, struct errmsg *e)
{
	char exe[PATH_MAX + 16], port[16];
	struct spawn_spec s;

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
	                NULL};
	memset(&s, 0, sizeof(s));
	s.argv = argv;
	s.envp = local_child_env;
	s.out_fd = l->log_fd;
	s.err_fd = l->log_fd;
	s.new_session = true;
	s.acct = l->acct;
	return local_spawn(&s, e);
}

int pg_server_wait_ready(pid_t pid, const char *sockdir, int port, const char *user, int timeout_ms,
                         const bool *cancel, int *wstatus)
{
	char portstr[16];
	const char *keys[] = {"host", "port", "user", "dbname", "connect_timeout", NULL};
	const char *vals[] = {sockdir, portstr, user, "postgres", "2", NULL};
	long long deadline = now_ms() + timeout_ms;

	snprintf(portstr, sizeof(portstr), "%d", port);
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD)) {
			*wstatus = r == pid ? st : 0;
			return -ECHILD;
		}
		/* Before the socket exists this fails at connect(), cheaply;
		 * while starting up the server answers "rejected" at once. */
		if (PQpingParams(keys, vals, 0) == PQPING_OK)
			return 0;
		if ((cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE)) || op_interrupted())
			return -EINTR;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		sleep_ms(3);
	}
}

int pg_set_password(const char *sockdir, int port, const char *user, const char *password,
                    struct errmsg *e)
{
	char portstr[16];
	const char *keys[] = {
	    "host", "port", "user", "dbname", "connect_timeout", "application_name", NULL};
	const char *vals[] = {sockdir, portstr, user, "postgres", "5", "dbosfs", NULL};
	PGconn *conn;
	char *verifier = NULL, *lit = NULL, *ident = NULL, *sql = NULL;
	int rc = 0;

	snprintf(portstr, sizeof(portstr), "%d", port);
	conn = PQconnectdbParams(keys, vals, 0);
	if (!conn)
		return errmsg_set(e, -ENOMEM, "out of memory connecting to the server");
	if (PQstatus(conn) != CONNECTION_OK) {
		rc = errmsg_set(e, -EIO, "cannot connect to the server: %s", PQerrorMessage(conn));
		goto out;
	}
	/* The SCRAM verifier is computed here; the server only ever sees it. */
	verifier = PQencryptPasswordConn(conn, password, user, "scram-sha-256");
	if (!verifier) {
		rc = errmsg_set(e, -EIO, "cannot encrypt the password: %s", PQerrorMessage(conn));
		goto out;
	}
	lit = PQescapeLiteral(conn, verifier, strlen(verifier));
	ident = PQescapeIdentifier(conn, user, strlen(user));
	if (!lit || !ident || asprintf(&sql, "ALTER ROLE %s PASSWORD %s", ident, lit) < 0) {
		sql = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory building ALTER ROLE");
		goto out;
	}
	PGresult *res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = errmsg_set(e, -EIO, "ALTER ROLE %s failed: %s", user,
		                PQresultErrorMessage(res));
	PQclear(res);
out:
	if (sql) {
		explicit_bzero(sql, strlen(sql));
		free(sql);
	}
	PQfreemem(lit);
	PQfreemem(ident);
	PQfreemem(verifier);
	PQfinish(conn);
	/* libpq messages end with a newline; last_error wants one line. */
	if (rc && e) {
		size_t n = strlen(e->text);
		while (n && (e->text[n - 1] == '\n' || e->text[n - 1] == ' '))
			e->text[--n] = '\0';
	}
	return rc;
}

/* ---- leftover postmaster.pid ---- */

static bool proc_alive(pid_t pid)
{
	char path[64], buf[512];
	FILE *f;
	bool alive = false;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f)) {
		/* State is the field after the parenthesised command name. */
		char *rp = strrchr(buf, ')');
		alive = rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
	}
	fclose(f);
	return alive;
}

static pid_t proc_ppid(pid_t pid)
{
	char path[64], buf[512];
	FILE *f;
	int ppid = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f)) {
		char *rp = strrchr(buf, ')');
		if (rp && sscanf(rp + 2, "%*c %d", &ppid) != 1)
			ppid = 0;
	}
	fclose(f);
	return ppid;
}

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

int pg_stop_leftover(pid_t pid, int grace_ms, int total_ms, const bool *cancel,
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

		if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE))
			return -EINTR;
		if (t - start >= total_ms)
			return -ETIMEDOUT;
		if (t >= next_kill) {
			ops->signal(pid, SIGKILL, ops->arg);
			next_kill = t + 5000;
		}
		sleep_ms(20);
	}
	return 0;
}

int pg_handle_stale_pid(const char *datadir, const char *name, const bool *cancel, struct errmsg *e)
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
}

void pg_probe_many(struct pg_probe *probes, size_t n, int timeout_ms, const bool *cancel)
{
	PGconn **conns = calloc(n, sizeof(*conns));
	PostgresPollingStatusType *want = calloc(n, sizeof(*want));
	bool *past_startup = calloc(n, sizeof(*past_startup));
	struct pollfd *fds = calloc(n, sizeof(*fds));
	size_t *idx = calloc(n, sizeof(*idx));
	long long deadline = now_ms() + timeout_ms;
	size_t pending = 0;

	if (n == 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		probes[i].ok = false;
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
	while (pending > 0) {
		long long left = deadline - now_ms();
		size_t m = 0;

		if (left <= 0 || (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE)))
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
