/* Runs an application's migrate / rollback commands against one instance:
 * creates the application database if missing (libpq), then runs each
 * command as /bin/sh -c CMD in its own process group, capturing its output
 * for the report served by NAME/migrate and NAME/rollback. */
#include "migrate.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

extern char **environ;

#define OUTPUT_KEEP         (64 * 1024) /* per command: the tail is what matters */
#define POLL_MS             100         /* op_interrupted() is polled at least this often */
#define TERM_GRACE_MS       2000        /* SIGTERM, then SIGKILL after this */
#define EXIT_DRAIN_MS       200         /* output still arriving after the command exited */
#define CONNECT_TIMEOUT_S   "10"
#define DB_QUERY_TIMEOUT_MS 60000
#define CMD_IN_MESSAGE_MAX  200
#define SCRUBBED            "********"

static void utc_stamp(char *out, size_t n)
{
	struct tm tm;
	time_t t = time(NULL);

	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Replaces every occurrence of secret in b (no-op for an empty secret). */
static int scrub(struct buf *b, const char *secret)
{
	size_t slen = secret ? strlen(secret) : 0;
	struct buf out = BUF_INIT;
	const char *p, *end, *hit;
	int rc = 0;

	if (!slen || !b->data || !memmem(b->data, b->len, secret, slen))
		return 0;
	p = b->data;
	end = b->data + b->len;
	while (!rc && (hit = memmem(p, (size_t)(end - p), secret, slen))) {
		rc = buf_append(&out, p, (size_t)(hit - p));
		if (!rc)
			rc = buf_puts(&out, SCRUBBED);
		p = hit + slen;
	}
	if (!rc)
		rc = buf_append(&out, p, (size_t)(end - p));
	if (rc) {
		/* Cannot build the copy: blank the secret in place instead. */
		buf_free_secret(&out);
		for (char *q = b->data;
		     (q = memmem(q, (size_t)(b->data + b->len - q), secret, slen)); q += slen)
			memset(q, '*', slen);
		return 0;
	}
	buf_free_secret(b);
	*b = out;
	return 0;
}

/* The same for a fixed-size message. */
static void scrub_text(char *text, const char *secret)
{
	size_t slen = secret ? strlen(secret) : 0;
	char *q = text;

	if (!slen)
		return;
	while ((q = strstr(q, secret))) {
		memset(q, '*', slen);
		q += slen;
	}
}

/* RFC 3986 percent-encoding of everything but unreserved characters. */
static int pct_encode(struct buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	int rc = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
			rc = buf_append(out, (const char *)p, 1);
		} else {
			char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			rc = buf_append(out, enc, 3);
		}
	}
	return rc;
}

/* postgresql://USER:PASSWORD@HOST:PORT/DB, user and password encoded. */
static int build_url(const struct migrate_target *t, const char *db, struct buf *url)
{
	int rc = buf_puts(url, "postgresql://");

	if (!rc)
		rc = pct_encode(url, t->user ? t->user : "");
	if (!rc && t->password && *t->password) {
		rc = buf_puts(url, ":");
		if (!rc)
			rc = pct_encode(url, t->password);
	}
	if (!rc)
		rc = buf_puts(url, "@");
	if (!rc && t->host && t->host[0] == '/')
		rc = pct_encode(url, t->host); /* a socket directory */
	else if (!rc && t->host && strchr(t->host, ':'))
		rc = buf_printf(url, "[%s]", t->host); /* IPv6 literal */
	else if (!rc && t->host)
		rc = buf_puts(url, t->host);
	if (!rc && t->port > 0)
		rc = buf_printf(url, ":%d", t->port);
	if (!rc)
		rc = buf_printf(url, "/%s", db);
	return rc;
}

/* ---- the application database ---------------------------------------- */

/* Waits until the connection's socket is ready, polling op_interrupted(). */
static int pq_wait_socket(PGconn *c, bool for_write, long long deadline, struct errmsg *e)
{
	for (;;) {
		struct pollfd p = {.fd = PQsocket(c), .events = for_write ? POLLOUT : POLLIN};
		int n;

		if (p.fd < 0)
			return errmsg_set(e, -EIO, "lost the database connection");
		if (op_interrupted())
			return errmsg_set(e, -EINTR, "interrupted while talking to the database");
		if (now_ms() >= deadline)
			return errmsg_set(e, -EIO, "the database did not answer in time");
		n = poll(&p, 1, POLL_MS);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return errmsg_set(e, -EIO, "poll: %s", strerror(errno));
	}
}

static void trim_pq_message(char *m)
{
	size_t n = strlen(m);

	while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
		m[--n] = '\0';
	for (char *p = m; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

static int pq_connect(const struct migrate_target *t, PGconn **out, struct errmsg *e)
{
	char port[16];
	/* Keywords, never a conninfo string: the password must not pass
	 * through any text that could end up in a message. */
	const char *keys[] = {
	    "host", "port", "user", "password", "dbname", "connect_timeout", "application_name",
	    NULL};
	const char *vals[] = {t->host && *t->host ? t->host : NULL,
	                      NULL,
	                      t->user,
	                      t->password && *t->password ? t->password : NULL,
	                      "postgres",
	                      CONNECT_TIMEOUT_S,
	                      "dbosfs-migrate",
	                      NULL};
	long long deadline = now_ms() + 1000LL * atoi(CONNECT_TIMEOUT_S);
	PGconn *c;
	int rc;

	snprintf(port, sizeof(port), "%d", t->port);
	vals[1] = t->port > 0 ? port : NULL;
	c = PQconnectStartParams(keys, vals, 0);
	if (!c)
		return -ENOMEM;
	for (;;) {
		PostgresPollingStatusType st = PQconnectPoll(c);

		if (st == PGRES_POLLING_OK)
			break;
		if (st == PGRES_POLLING_FAILED) {
			char msg[1024];

			snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
			trim_pq_message(msg);
			PQfinish(c);
			return errmsg_set(e, -EIO, "cannot connect to %s:%d as %s: %s",
			                  t->host ? t->host : "(default)", t->port,
			                  t->user ? t->user : "(default)", msg);
		}
		rc = pq_wait_socket(c, st == PGRES_POLLING_WRITING, deadline, e);
		if (rc) {
			PQfinish(c);
			if (rc == -EIO)
				return errmsg_set(e, -EIO, "cannot connect to %s:%d: timed out",
				                  t->host ? t->host : "(default)", t->port);
			return rc;
		}
	}
	if (PQsetnonblocking(c, 1) != 0) {
		PQfinish(c);
		return errmsg_set(e, -EIO, "cannot switch the connection to non-blocking mode");
	}
	*out = c;
	return 0;
}

/* Runs one statement; *rows gets the row count of a SELECT. On interrupt
 * the server is asked to cancel. sqlstate receives the error's SQLSTATE. */
static int pq_exec(PGconn *c, const char *sql, const char *param, int *rows, char sqlstate[6],
                   struct errmsg *e)
{
	long long deadline = now_ms() + DB_QUERY_TIMEOUT_MS;
	PGresult *res;
	int rc = 0, f;

	sqlstate[0] = '\0';
	if (!PQsendQueryParams(c, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0))
		goto pq_error;
	while ((f = PQflush(c)) == 1)
		if ((rc = pq_wait_socket(c, true, deadline, e)))
			goto cancel;
	if (f < 0)
		goto pq_error;
	while (PQisBusy(c)) {
		if ((rc = pq_wait_socket(c, false, deadline, e)))
			goto cancel;
		if (!PQconsumeInput(c))
			goto pq_error;
	}
	while ((res = PQgetResult(c))) {
		ExecStatusType st = PQresultStatus(res);

		if (st == PGRES_TUPLES_OK && rows)
			*rows = PQntuples(res);
		if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && !rc) {
			const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			char msg[1024];

			snprintf(sqlstate, 6, "%s", code ? code : "");
			snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
			trim_pq_message(msg);
			rc = errmsg_set(e, -EIO, "%s", msg);
		}
		PQclear(res);
	}
	return rc;

cancel : {
	PGcancel *cn = PQgetCancel(c);
	char ebuf[256];

	if (cn) {
		PQcancel(cn, ebuf, sizeof(ebuf));
		PQfreeCancel(cn);
	}
	return rc;
}
pq_error : {
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
	trim_pq_message(msg);
	return errmsg_set(e, -EIO, "%s", msg);
}
}

/* CREATE DATABASE if it is not there yet; *created says whether it was. */
static int ensure_database(const struct migrate_target *t, const char *db, bool *created,
                           struct errmsg *e)
{
	PGconn *c = NULL;
	char state[6], *ident = NULL, *sql = NULL;
	int rows = 0, rc;

	*created = false;
	rc = pq_connect(t, &c, e);
	if (rc)
		return rc;
	rc = pq_exec(c, "SELECT 1 FROM pg_database WHERE datname = $1", db, &rows, state, e);
	if (rc) {
		if (rc == -EIO) {
			char why[ERRMSG_MAX];

			snprintf(why, sizeof(why), "%s", e->text);
			errmsg_set(e, -EIO, "cannot look up database %s: %s", db, why);
		}
		goto out;
	}
	if (rows > 0)
		goto out;
	ident = PQescapeIdentifier(c, db, strlen(db));
	if (!ident || asprintf(&sql, "CREATE DATABASE %s", ident) < 0) {
		sql = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	rc = pq_exec(c, sql, NULL, NULL, state, e);
	if (rc == -EIO && strcmp(state, "42P04") == 0) {
		rc = 0; /* created by someone else meanwhile: just as good */
	} else if (rc == -EIO) {
		char why[ERRMSG_MAX];

		snprintf(why, sizeof(why), "%s", e->text);
		errmsg_set(e, -EIO, "cannot create database %s: %s", db, why);
	} else if (!rc) {
		*created = true;
	}
out:
	free(sql);
	PQfreemem(ident);
	PQfinish(c);
	return rc;
}

/* ---- running one command ----------------------------------------------- */

/* The daemon's environment plus the connection, built before fork (the
 * child of a threaded process may not allocate). */
struct child_env {
	char **envp;
	size_t n;
};

static void child_env_free(struct child_env *ce)
{
	if (!ce->envp)
		return;
	for (size_t i = 0; i < ce->n; i++) {
		if (ce->envp[i]) {
			explicit_bzero(ce->envp[i], strlen(ce->envp[i]));
			free(ce->envp[i]);
		}
	}
	free(ce->envp);
	ce->envp = NULL;
}

static bool overridden(const char *entry)
{
	/* Ours win; PGHOSTADDR and PGSERVICE would silently redirect libpq. */
	static const char *const names[] = {"PGHOST",     "PGPORT",     "PGUSER",
	                                    "PGPASSWORD", "PGDATABASE", "DBOS_DATABASE_URL",
	                                    "PGHOSTADDR", "PGSERVICE",  NULL};
	for (const char *const *n = names; *n; n++) {
		size_t l = strlen(*n);
		if (strncmp(entry, *n, l) == 0 && entry[l] == '=')
			return true;
	}
	return false;
}

static int child_env_build(struct child_env *ce, const struct migrate_target *t, const char *db,
                           const char *url)
{
	size_t count = 0, i = 0;
	int ok = 1;

	for (char **p = environ; p && *p; p++)
		count++;
	ce->envp = calloc(count + 7, sizeof(char *));
	if (!ce->envp)
		return -ENOMEM;
	for (char **p = environ; p && *p; p++)
		if (!overridden(*p) && !(ce->envp[i++] = strdup(*p)))
			ok = 0;
	if (t->host && *t->host)
		ok &= asprintf(&ce->envp[i++], "PGHOST=%s", t->host) >= 0;
	if (t->port > 0)
		ok &= asprintf(&ce->envp[i++], "PGPORT=%d", t->port) >= 0;
	if (t->user && *t->user)
		ok &= asprintf(&ce->envp[i++], "PGUSER=%s", t->user) >= 0;
	if (t->password && *t->password)
		ok &= asprintf(&ce->envp[i++], "PGPASSWORD=%s", t->password) >= 0;
	ok &= asprintf(&ce->envp[i++], "PGDATABASE=%s", db) >= 0;
	ok &= asprintf(&ce->envp[i++], "DBOS_DATABASE_URL=%s", url) >= 0;
	ce->n = i;
	if (!ok) {
		/* asprintf leaves its pointer undefined on failure. */
		for (size_t j = count; j < i; j++)
			ce->envp[j] = NULL;
		child_env_free(ce);
		return -ENOMEM;
	}
	return 0;
}

struct captured {
	struct buf out;
	size_t dropped; /* bytes of earlier output not kept */
};

static void keep_tail(struct captured *cap, size_t keep)
{
	if (cap->out.len <= keep)
		return;
	size_t cut = cap->out.len - keep;
	memmove(cap->out.data, cap->out.data + cut, keep);
	cap->out.len = keep;
	cap->out.data[keep] = '\0';
	cap->dropped += cut;
}

/* Reads what is available; returns false at end of file. */
static bool read_available(int fd, struct captured *cap)
{
	char chunk[16384];

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n > 0) {
			if (buf_append(&cap->out, chunk, (size_t)n) != 0)
				cap->dropped += (size_t)n;
			if (cap->out.len > 2 * OUTPUT_KEEP)
				keep_tail(cap, OUTPUT_KEEP);
			continue;
		}
		if (n == 0)
			return false;
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EWOULDBLOCK;
	}
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static __attribute__((noreturn)) void exec_child(const char *dir, int devnull, int out_fd,
                                                 char *const argv[], char *const envp[])
{
	struct sigaction dfl;
	sigset_t none;

	setpgid(0, 0);
	/* FUSE ignores SIGPIPE and worker threads may block signals; both
	 * would be inherited through exec. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
		_exit(126);
	if (chdir(dir) != 0) {
		static const char msg[] = "dbosfs: cannot enter the application directory\n";
		if (write(2, msg, sizeof(msg) - 1) < 0)
			_exit(126);
		_exit(126);
	}
	/* Nothing of the daemon's may leak: not /dev/fuse, not a libpq socket. */
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
		for (int fd = 3; fd < 65536; fd++)
			close(fd);
	}
	execve(argv[0], argv, envp);
	_exit(127);
}

/* Kills what is left of the group while the leader is still an unreaped
 * zombie: until it is reaped its pid (= the group id) cannot be reused. */
static void kill_group_and_reap(pid_t pid, int *wstatus)
{
	kill(-pid, SIGKILL);
	while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR)
		;
}

/* Waits (without reaping) until pid exits or ms pass; true if it exited. */
static bool leader_exited(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
		return errno == ECHILD;
	return si.si_pid == pid;
}

/* Runs cmd to completion (or interruption). 0 with *wstatus set, -EINTR
 * when interrupted (the group was killed and the leader reaped), or a
 * negative errno when it could not start. */
static int run_command(const char *cmd, const char *dir, struct child_env *ce, struct captured *cap,
                       int *wstatus, struct errmsg *e)
{
	char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
	int pfd[2], devnull, err;
	bool pipe_open = true, interrupted = false, killed = false;
	long long term_at = 0, exit_at = 0;
	pid_t pid;

	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0)
		return errmsg_set(e, -EIO, "cannot open /dev/null: %s", strerror(errno));
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		err = errno;
		close(devnull);
		return errmsg_set(e, -EIO, "pipe: %s", strerror(err));
	}
	pid = fork();
	if (pid < 0) {
		err = errno;
		close(devnull);
		close(pfd[0]);
		close(pfd[1]);
		return errmsg_set(e, -EIO, "fork: %s", strerror(err));
	}
	if (pid == 0)
		exec_child(dir, devnull, pfd[1], argv, ce->envp);

	/* Also from this side, so kill(-pid) works before the child runs. */
	setpgid(pid, pid);
	close(devnull);
	close(pfd[1]);
	fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);

	for (;;) {
		if (pipe_open) {
			struct pollfd p = {.fd = pfd[0], .events = POLLIN};
			int wait = exit_at ? 20 : POLL_MS;

			if (poll(&p, 1, wait) > 0)
				pipe_open = read_available(pfd[0], cap);
		} else {
			sleep_ms(exit_at ? 0 : 20);
		}
		if (!exit_at && leader_exited(pid))
			exit_at = now_ms();
		/* After the leader exits, collect what its pipe still holds,
		 * but do not wait for background processes that keep it open. */
		if (exit_at && (!pipe_open || now_ms() - exit_at >= EXIT_DRAIN_MS))
			break;
		if (!exit_at && !interrupted && op_interrupted()) {
			interrupted = true;
			term_at = now_ms();
			kill(-pid, SIGTERM);
		}
		if (interrupted && !killed && !exit_at && now_ms() - term_at >= TERM_GRACE_MS) {
			killed = true;
			kill(-pid, SIGKILL);
		}
	}
	/* A command's background processes do not outlive it. */
	kill_group_and_reap(pid, wstatus);
	if (pipe_open)
		read_available(pfd[0], cap);
	close(pfd[0]);
	return interrupted ? -EINTR : 0;
}

/* ---- the run --------------------------------------------------------------- */

/* The command as quoted in one-line messages: newlines flattened, bounded. */
static void short_command(const char *cmd, char *out, size_t n)
{
	size_t len = strlen(cmd);

	snprintf(out, n, "%.*s%s", CMD_IN_MESSAGE_MAX, cmd, len > CMD_IN_MESSAGE_MAX ? "..." : "");
	for (char *p = out; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
}

static void describe_status(int wstatus, char *out, size_t n)
{
	if (WIFEXITED(wstatus))
		snprintf(out, n, "exited with status %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		snprintf(out, n, "was killed by signal %d (%s)", WTERMSIG(wstatus),
		         sigabbrev_np(WTERMSIG(wstatus)) ? sigabbrev_np(WTERMSIG(wstatus)) : "?");
	else
		snprintf(out, n, "ended with wait status %d", wstatus);
}

/* Appends a command's captured output to the report, secrets scrubbed. */
static int report_output(struct buf *report, struct captured *cap, const char *password,
                         const char *password_enc)
{
	int rc = 0;

	keep_tail(cap, OUTPUT_KEEP);
	if (cap->dropped && cap->out.len) {
		/* Start at a line boundary: never show half a line (or half a
		 * secret) cut by the bound. */
		char *nl = memchr(cap->out.data, '\n', cap->out.len);
		if (nl && (size_t)(nl - cap->out.data) < 4096) {
			size_t skip = (size_t)(nl - cap->out.data) + 1;
			memmove(cap->out.data, nl + 1, cap->out.len - skip);
			cap->out.len -= skip;
			cap->out.data[cap->out.len] = '\0';
			cap->dropped += skip;
		}
	}
	scrub(&cap->out, password);
	scrub(&cap->out, password_enc);
	if (cap->dropped)
		rc = buf_printf(report, "[... %zu bytes of earlier output dropped ...]\n",
		                cap->dropped);
	if (!rc && cap->out.len) {
		rc = buf_append(report, cap->out.data, cap->out.len);
		if (!rc && cap->out.data[cap->out.len - 1] != '\n')
			rc = buf_puts(report, "\n");
	}
	return rc;
}

int migrate_run(enum migrate_kind kind, const char *path, const struct migrate_target *t,
                struct buf *report, struct errmsg *e)
{
	const char *what = kind == MIGRATE_UP ? "migrate" : "rollback";
	struct app_config cfg;
	struct child_env ce = {NULL, 0};
	struct buf url = BUF_INIT, pw_enc = BUF_INIT;
	char stamp[32], failed_what[192] = "";
	char **cmds;
	size_t n_cmds = 0, i;
	bool created = false;
	int rc;

	buf_reset(report);
	errmsg_clear(e);
	if (!t)
		return errmsg_set(e, -EINVAL, "no instance to migrate");
	utc_stamp(stamp, sizeof(stamp));

	rc = app_config_load(path, &cfg, e);
	if (rc) {
		buf_printf(report, "%s %s\nstarted: %s\n", what, path ? path : "", stamp);
		goto finish;
	}
	cmds = kind == MIGRATE_UP ? cfg.migrate : cfg.rollback;
	n_cmds = kind == MIGRATE_UP ? cfg.n_migrate : cfg.n_rollback;
	const char *cfg_base = strrchr(cfg.config_path, '/') + 1;
	buf_printf(report, "%s %s (%s), database %s\nstarted: %s\n", what, cfg.app_dir, cfg_base,
	           cfg.app_db_name, stamp);
	if (!n_cmds) {
		rc = errmsg_set(e, -EINVAL, "database.%s in %s is empty or missing", what,
		                cfg.config_path);
		goto finish;
	}
	log_event("%s started: %s (database %s, %zu command%s)", what, cfg.app_dir, cfg.app_db_name,
	          n_cmds, n_cmds == 1 ? "" : "s");

	if (t->password && *t->password)
		pct_encode(&pw_enc, t->password);
	rc = ensure_database(t, cfg.app_db_name, &created, e);
	if (rc)
		goto finish;
	if (created)
		buf_printf(report, "created database %s\n", cfg.app_db_name);

	rc = build_url(t, cfg.app_db_name, &url);
	if (!rc)
		rc = child_env_build(&ce, t, cfg.app_db_name, url.data);
	if (rc) {
		rc = errmsg_set(e, -ENOMEM, "out of memory preparing the commands");
		goto finish;
	}

	for (i = 0; i < n_cmds; i++) {
		struct captured cap = {BUF_INIT, 0};
		char shortcmd[CMD_IN_MESSAGE_MAX + 8], how[96];
		int wstatus = 0;

		short_command(cmds[i], shortcmd, sizeof(shortcmd));
		if (op_interrupted()) {
			rc = errmsg_set(e, -EINTR, "interrupted before command %zu of %zu", i + 1,
			                n_cmds);
			break;
		}
		buf_printf(report, "$ %s\n", cmds[i]);
		rc = run_command(cmds[i], cfg.app_dir, &ce, &cap, &wstatus, e);
		report_output(report, &cap, t->password, pw_enc.data);
		buf_free_secret(&cap.out);
		if (rc == -EINTR) {
			buf_puts(report, "interrupted: the command's process group was stopped\n");
			errmsg_set(e, -EINTR, "interrupted during command %zu of %zu (`%s`)", i + 1,
			           n_cmds, shortcmd);
			break;
		}
		if (rc) {
			buf_printf(report, "could not start: %s\n", e->text);
			break;
		}
		if (WIFEXITED(wstatus))
			buf_printf(report, "exit status: %d\n", WEXITSTATUS(wstatus));
		else
			buf_printf(report, "killed by signal %d\n", WTERMSIG(wstatus));
		if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
			describe_status(wstatus, how, sizeof(how));
			rc = errmsg_set(e, -EIO, "command %zu of %zu (`%s`) %s", i + 1, n_cmds,
			                shortcmd, how);
			snprintf(failed_what, sizeof(failed_what), "command %zu of %zu %s", i + 1,
			         n_cmds, how);
			break;
		}
	}

finish:
	utc_stamp(stamp, sizeof(stamp));
	buf_printf(report, "ended: %s\n", stamp);
	/* Defence in depth: a command text or a server message could carry the
	 * password; neither the report nor last_error may. */
	scrub_text(e->text, t->password);
	scrub_text(e->text, pw_enc.data);
	if (!rc)
		buf_printf(report, "result: ok (%zu command%s)\n", n_cmds, n_cmds == 1 ? "" : "s");
	else if (rc == -EINTR)
		buf_puts(report, "result: interrupted\n");
	else if (failed_what[0])
		buf_printf(report, "result: failed: %s\n", failed_what);
	else
		buf_printf(report, "result: error: %s\n", e->text);
	scrub(report, t->password);
	scrub(report, pw_enc.data);
	if (!rc)
		log_event("%s ended: %s: ok", what, cfg.app_dir);
	else
		log_event("%s ended: %s: %s", what, cfg.app_dir ? cfg.app_dir : (path ? path : ""),
		          e->text);
	child_env_free(&ce);
	buf_free_secret(&url);
	buf_free_secret(&pw_enc);
	app_config_free(&cfg);
	return rc;
}
