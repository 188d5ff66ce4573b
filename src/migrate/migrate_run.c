/* Runs an application's migrate / rollback commands against one instance,
 * as the DBOS CLI would in the writer's shell: the writer's directory,
 * user and environment (plus the connection variables), each command as
 * /bin/sh -c CMD in its own process group under a guard process that kills
 * the group if the daemon dies. Creates the application database first and
 * the DBOS system database last. The report grows while the run goes and is
 * masked (redact.h) before anything is cut or shown. */
#include "migrate_internal.h"

#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pg.h"
#include "proc.h"
#include "redact.h"

extern char **environ;

/* Numbers the runs of this daemon (their tags). */
static atomic_uint run_counter;

/* Per command, 64 KiB of output in the report: the first part as it comes
 * (live), the last part when the command ends. */
#define OUTPUT_HEAD         (16 * 1024)
#define OUTPUT_TAIL         (48 * 1024)
#define POLL_MS             100  /* op_interrupted() is polled at least this often */
#define INT_GRACE_MS        2000 /* SIGINT (as a terminal's Ctrl-C), then SIGTERM */
#define TERM_GRACE_MS       2000 /* SIGTERM, then SIGKILL */
#define EXIT_DRAIN_MS       200  /* output still arriving after the command exited */
#define PUBLISH_MS          200  /* live report refreshed at most this often */
#define CANCEL_WAIT_MS      2000 /* pg_cancel_backend, then pg_terminate_backend */
#define CONNECT_TIMEOUT_MS  10000
#define DB_QUERY_TIMEOUT_MS 60000
#define CMD_IN_MESSAGE_MAX  200

static void utc_stamp(char *out, size_t n)
{
	struct tm tm;
	time_t t = time(NULL);

	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
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
	/* No ?sslmode=...&sslrootcert=: configs splice ${DBOS_DATABASE_URL}
	 * into shell commands, where '&' and '?' mean something. TLS comes
	 * from PGSSLMODE, PGSSLROOTCERT and NODE_EXTRA_CA_CERTS, which libpq
	 * and node-postgres read when the URL does not say. */
	return rc;
}

/* ---- the application database ---------------------------------------- */

/* Connects as the target's admin to its postgres database (pg.h: Ctrl-C
 * ends the wait at once). Every failure but an interrupt is -EIO. */
static int db_connect(const struct migrate_target *t, const char *appname, PGconn **out,
                      struct errmsg *e)
{
	char port[16];
	snprintf(port, sizeof(port), "%d", t->port);
	/* Keywords, never a conninfo string: the password must not pass
	 * through any text that could end up in a message. */
	const char *keys[] = {"host", "port", "user", "password", "dbname", "application_name",
	                      NULL};
	const char *vals[] = {t->host && *t->host ? t->host : NULL,
	                      t->port > 0 ? port : NULL,
	                      t->user,
	                      t->password && *t->password ? t->password : NULL,
	                      "postgres",
	                      appname,
	                      NULL};
	struct errmsg why = {{0}};
	int rc = pg_connect(keys, vals, CONNECT_TIMEOUT_MS, NULL, out, &why);

	if (rc == -EINTR || rc == -ENOMEM)
		return errmsg_set(e, rc, "%s", why.text);
	if (rc)
		return errmsg_set(e, -EIO, "cannot connect to %s:%d as %s: %s",
		                  t->host ? t->host : "(default)", t->port,
		                  t->user ? t->user : "(default)", why.text);
	return 0;
}

/* One statement with at most one text parameter. *res (if not NULL) gets
 * its rows. 0, -EINTR, -EEXIST/-EBUSY/-ENOENT as pg_query maps them, or
 * -EIO (a timeout too) with the server's message. */
static int db_query(PGconn *c, const char *sql, const char *param, PGresult **res, struct errmsg *e)
{
	PGresult *r = NULL;
	int rc = pg_query(c, sql, param ? 1 : 0, param ? &param : NULL, DB_QUERY_TIMEOUT_MS, NULL,
	                  &r, e);
	if (rc == -ETIMEDOUT)
		rc = -EIO;
	if (res)
		*res = r;
	else
		PQclear(r);
	return rc;
}

/* CREATE DATABASE if it is not there yet; *created says whether it was.
 * now_out (if not NULL) receives the server's clock, which later finds the
 * sessions this run started. */
static int ensure_database(const struct migrate_target *t, const char *db, bool *created,
                           char *now_out, size_t now_sz, bool *tls, struct errmsg *e)
{
	PGconn *c = NULL;
	PGresult *res = NULL;
	char *ident = NULL, *sql = NULL;
	const char *doing = "look up";
	int rc;

	*created = false;
	rc = db_connect(t, "dbosfs-migrate", &c, e);
	if (rc)
		return rc;
	if (tls)
		*tls = PQsslInUse(c) != 0;
	if (now_out && db_query(c, "SELECT now()::text", NULL, &res, e) == 0 && res &&
	    PQntuples(res) == 1)
		snprintf(now_out, now_sz, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	res = NULL;
	rc = db_query(c, "SELECT 1 FROM pg_database WHERE datname = $1", db, &res, e);
	if (rc || (res && PQntuples(res) > 0))
		goto out;
	ident = PQescapeIdentifier(c, db, strlen(db));
	if (!ident || asprintf(&sql, "CREATE DATABASE %s", ident) < 0) {
		sql = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	doing = "create";
	rc = db_query(c, sql, NULL, NULL, e);
	if (rc == -EEXIST)
		rc = 0; /* created by someone else meanwhile: just as good */
	else if (!rc)
		*created = true;
out:
	if (rc && rc != -EINTR && rc != -ENOMEM) {
		char why[ERRMSG_MAX];

		snprintf(why, sizeof(why), "%s", e->text);
		rc = errmsg_set(e, -EIO, "cannot %s database %s: %s", doing, db, why);
	}
	PQclear(res);
	free(sql);
	PQfreemem(ident);
	PQfinish(c);
	return rc;
}

/* ---- the run and its report ------------------------------------------------ */

struct run {
	const struct migrate_request *req;
	struct buf *report;
	struct redactor redactor; /* the password, in every form */
	char tag[80];             /* PGAPPNAME and RUN_TAG_VAR of the commands */
	char **env;               /* the commands' environment ("K=V", NULL-ended) */
	size_t env_n;
	bool writer_env;  /* env came from the writer's /proc/PID/environ */
	bool as_writer;   /* commands drop to the writer's uid/gid */
	gid_t groups[64]; /* the writer's supplementary groups */
	int ngroups;
	long long published_at;
	bool unpublished; /* the report grew since the last publish */
	bool server_tls;  /* the server negotiated TLS (libpq's sslmode=prefer) */
};

/* Hands the report so far to the live reader, at most every PUBLISH_MS
 * unless forced; run_command's loop calls it so nothing waits long. */
static void publish(struct run *r, bool force)
{
	long long now = now_ms();

	if (!r->req->progress || !r->unpublished || (!force && now - r->published_at < PUBLISH_MS))
		return;
	r->published_at = now;
	r->unpublished = false;
	r->req->progress(r->req->progress_ctx, r->report->data ? r->report->data : "");
}

/* Every line of the report goes through here: masked, then appended. */
static void __attribute__((format(printf, 2, 3))) report_add(struct run *r, const char *fmt, ...)
{
	struct buf line = BUF_INIT;
	va_list ap;
	char *text = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (buf_append(&line, text, (size_t)n) == 0) {
		redact_buf(&r->redactor, &line);
		buf_append(r->report, line.data, line.len);
		r->unpublished = true;
	}
	explicit_bzero(text, (size_t)n);
	free(text);
	buf_free_secret(&line);
	publish(r, false);
}

/* ---- the commands' environment ------------------------------------------- */

/* Ours win; PGHOSTADDR and PGSERVICE would silently redirect libpq. */
static bool overridden(const char *entry)
{
	static const char *const names[] = {
	    "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "DBOS_DATABASE_URL",
	    "PGHOSTADDR", "PGSERVICE", "PGAPPNAME", RUN_TAG_VAR, "PGPASSFILE",
	    /* TLS as url and env promise (migrate_target.ca_file) */
	    "PGSSLMODE", "PGSSLROOTCERT", "NODE_EXTRA_CA_CERTS", NULL};
	for (const char *const *n = names; *n; n++) {
		size_t l = strlen(*n);
		if (strncmp(entry, *n, l) == 0 && entry[l] == '=')
			return true;
	}
	return false;
}

/* base (the writer's or the daemon's environment) plus the connection.
 * db may be NULL: then no PGDATABASE / DBOS_DATABASE_URL (the first pass,
 * which finds out the database). Built before fork: the child of a
 * threaded process may not allocate. */
static int build_env(struct run *r, char *const *base, const char *db)
{
	const struct migrate_target *t = r->req->target;
	struct buf url = BUF_INIT;
	size_t count = 0, i = 0;
	char **env;
	int ok = 1;

	for (char *const *p = base; p && *p; p++)
		count++;
	env = calloc(count + 14, sizeof(char *)); /* room for PGSSLMODE later */
	if (!env)
		return -ENOMEM;
	for (char *const *p = base; p && *p; p++)
		if (!overridden(*p) && !(env[i++] = strdup(*p)))
			ok = 0;
	if (ok && t->host && *t->host)
		ok &= asprintf(&env[i++], "PGHOST=%s", t->host) >= 0;
	if (ok && t->port > 0)
		ok &= asprintf(&env[i++], "PGPORT=%d", t->port) >= 0;
	if (ok && t->user && *t->user)
		ok &= asprintf(&env[i++], "PGUSER=%s", t->user) >= 0;
	if (ok && t->password && *t->password)
		ok &= asprintf(&env[i++], "PGPASSWORD=%s", t->password) >= 0;
	if (ok && t->ca_file && *t->ca_file) {
		ok &= asprintf(&env[i++], "PGSSLMODE=verify-full") >= 0;
		ok &= ok && asprintf(&env[i++], "PGSSLROOTCERT=%s", t->ca_file) >= 0;
		ok &= ok && asprintf(&env[i++], "NODE_EXTRA_CA_CERTS=%s", t->ca_file) >= 0;
	}
	if (ok)
		ok &= asprintf(&env[i++], "PGAPPNAME=%s", r->tag) >= 0;
	if (ok)
		ok &= asprintf(&env[i++], RUN_TAG_VAR "=%s", r->tag) >= 0;
	if (ok && db) {
		ok &= asprintf(&env[i++], "PGDATABASE=%s", db) >= 0;
		ok &= build_url(t, db, &url) == 0;
		ok &= ok && asprintf(&env[i++], "DBOS_DATABASE_URL=%s", url.data) >= 0;
	}
	buf_free_secret(&url);
	if (!ok) {
		/* asprintf leaves its pointer undefined on failure. */
		if (i)
			env[i - 1] = NULL;
		env_free(env);
		return -ENOMEM;
	}
	env_free(r->env);
	r->env = env;
	r->env_n = i;
	return 0;
}

/* ---- one command ------------------------------------------------------------ */

/* A command's output on its way into the report: masked as a stream
 * first, so no cut below can split a secret that was still whole. The
 * first OUTPUT_HEAD bytes go into the report as they come; after that only
 * the last OUTPUT_TAIL are kept, and shown when the command ends. */
struct output {
	struct redact_stream mask;
	struct buf masked;
	size_t shown;
	bool head_full;
	struct buf tail;
	size_t dropped;
	char last; /* last byte put in the report */
};

static void output_route(struct run *r, struct output *o)
{
	const char *p = o->masked.data;
	size_t n = o->masked.len;

	if (!n)
		return;
	if (!o->head_full) {
		size_t k = OUTPUT_HEAD - o->shown < n ? OUTPUT_HEAD - o->shown : n;
		if (buf_append(r->report, p, k) == 0) {
			o->shown += k;
			o->last = p[k - 1];
			r->unpublished = true;
		}
		p += k;
		n -= k;
		if (o->shown >= OUTPUT_HEAD) {
			o->head_full = true;
			report_add(r,
			           "%s[... more output: its last %d KiB follow when the command "
			           "ends ...]\n",
			           o->last == '\n' ? "" : "\n", OUTPUT_TAIL / 1024);
			o->last = '\n';
		}
	}
	if (n && buf_append(&o->tail, p, n) != 0)
		o->dropped += n;
	if (o->tail.len > 2 * OUTPUT_TAIL) {
		size_t cut = o->tail.len - OUTPUT_TAIL;
		memmove(o->tail.data, o->tail.data + cut, OUTPUT_TAIL);
		explicit_bzero(o->tail.data + OUTPUT_TAIL, cut);
		o->tail.len = OUTPUT_TAIL;
		o->tail.data[OUTPUT_TAIL] = '\0';
		o->dropped += cut;
	}
	explicit_bzero(o->masked.data, o->masked.len);
	o->masked.len = 0;
	publish(r, false);
}

/* Reads what is available; returns false at end of file. */
static bool read_available(struct run *r, int fd, struct output *o)
{
	char chunk[16384];
	bool open = true;

	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n > 0) {
			if (redact_stream_feed(&o->mask, chunk, (size_t)n, &o->masked) != 0)
				o->dropped += (size_t)n;
			output_route(r, o);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		open = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
		break;
	}
	explicit_bzero(chunk, sizeof(chunk));
	return open;
}

static void output_finish(struct run *r, struct output *o)
{
	redact_stream_finish(&o->mask, &o->masked);
	output_route(r, o);
	if (o->tail.len > OUTPUT_TAIL) {
		size_t cut = o->tail.len - OUTPUT_TAIL;
		memmove(o->tail.data, o->tail.data + cut, OUTPUT_TAIL);
		o->tail.len = OUTPUT_TAIL;
		o->tail.data[OUTPUT_TAIL] = '\0';
		o->dropped += cut;
	}
	if (o->dropped && o->tail.len) {
		/* Start at a line boundary: never half a line. Whatever the cut
		 * left at the edge is masked if it could be part of a secret. */
		char *nl = memchr(o->tail.data, '\n', o->tail.len);
		if (nl && (size_t)(nl - o->tail.data) < 4096 &&
		    (size_t)(nl - o->tail.data) + 1 < o->tail.len) {
			size_t skip = (size_t)(nl - o->tail.data) + 1;
			memmove(o->tail.data, nl + 1, o->tail.len - skip);
			o->tail.len -= skip;
			o->tail.data[o->tail.len] = '\0';
			o->dropped += skip;
		} else {
			redact_cut_edges(&r->redactor, &o->tail, true, false);
		}
	}
	if (o->dropped)
		report_add(r, "[... %zu bytes of output dropped ...]\n", o->dropped);
	if (o->tail.len) {
		buf_append(r->report, o->tail.data, o->tail.len);
		o->last = o->tail.data[o->tail.len - 1];
	}
	if (o->last && o->last != '\n')
		buf_puts(r->report, "\n");
	buf_free_secret(&o->tail);
	buf_free_secret(&o->masked);
}

/* How an interrupted command was stopped, for the report. */
struct stop {
	bool interrupted;
	int signals; /* 1: SIGINT, 2: + SIGTERM, 3: + SIGKILL */
	long long at, ended_after;
	int leftovers; /* processes still there after the command ended */
};

/* Runs cmd to completion (or interruption). 0 with *wstatus set, -EINTR
 * when interrupted (the group was stopped and the leader reaped), or a
 * negative errno when it could not start. */
static int run_command(struct run *r, const char *cmd, const char *dir, int *wstatus,
                       struct stop *stop, struct errmsg *e)
{
	char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
	struct output o = {.mask = {&r->redactor, BUF_INIT}};
	struct guarded_cmd gc = {.tag = r->tag,
	                         .dir = dir,
	                         .argv = argv,
	                         .env = r->env,
	                         .as_writer = r->as_writer,
	                         .uid = r->req->uid,
	                         .gid = r->req->gid,
	                         .groups = r->groups,
	                         .ngroups = r->ngroups};
	int pfd[2], err;
	bool pipe_open = true;
	long long exit_at = 0, signal_at = 0;
	pid_t pid;

	memset(stop, 0, sizeof(*stop));
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		err = errno;
		return errmsg_set(e, -EIO, "pipe: %s", strerror(err));
	}
	pid = guarded_spawn(&gc, pfd[1], e);
	close(pfd[1]);
	if (pid < 0) {
		close(pfd[0]);
		return pid;
	}
	fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);

	for (;;) {
		if (pipe_open) {
			struct pollfd p = {.fd = pfd[0], .events = POLLIN};
			int wait = exit_at ? 20 : POLL_MS;

			if (poll(&p, 1, wait) > 0)
				pipe_open = read_available(r, pfd[0], &o);
		} else {
			proc_sleep_ms(exit_at ? 0 : 20);
		}
		publish(r, false);
		if (!exit_at && proc_exited_unreaped(pid)) {
			exit_at = now_ms();
			if (stop->interrupted)
				stop->ended_after = exit_at - stop->at;
		}
		/* After the leader exits, collect what its pipe still holds,
		 * but do not wait for background processes that keep it open. */
		if (exit_at && (!pipe_open || now_ms() - exit_at >= EXIT_DRAIN_MS))
			break;
		if (exit_at)
			continue;
		/* Ctrl-C: what a terminal does first (psql then cancels its
		 * query on the server), then ever harder. */
		if (!stop->interrupted && op_interrupted()) {
			stop->interrupted = true;
			stop->at = signal_at = now_ms();
			stop->signals = 1;
			kill(-pid, SIGINT);
		} else if (stop->signals == 1 && now_ms() - signal_at >= INT_GRACE_MS) {
			stop->signals = 2;
			signal_at = now_ms();
			kill(-pid, SIGTERM);
		} else if (stop->signals == 2 && now_ms() - signal_at >= TERM_GRACE_MS) {
			stop->signals = 3;
			kill(-pid, SIGKILL);
		}
	}
	/* A command's background processes do not outlive it. */
	stop->leftovers = guarded_reap(pid, r->tag, wstatus);
	if (pipe_open)
		read_available(r, pfd[0], &o);
	close(pfd[0]);
	output_finish(r, &o);
	return stop->interrupted ? -EINTR : 0;
}

/* ---- after Ctrl-C: the server side ----------------------------------------- */

/* Statements the interrupted command's sessions still run on the server
 * (found by the PGAPPNAME tag, or as sessions of this user that started
 * during the run with no application name) are cancelled, and terminated
 * if they do not stop. What was done goes into the report. */
static void stop_server_work(struct run *r, const char *since)
{
	static const char find[] =
	    "SELECT pid::text, coalesce(state, ''), "
	    "left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 120) "
	    "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client "
	    "backend' AND (application_name = $1 OR (application_name = '' AND usename = "
	    "current_user AND $2 <> '' AND backend_start >= $2::timestamptz)) AND coalesce(state, "
	    "'') NOT IN ('idle', '') ORDER BY 1";
	const char *params[2] = {r->tag, since ? since : ""};
	struct errmsg e = {{0}};
	PGresult *res = NULL;
	PGconn *c = NULL;
	int rows;

	pg_ignore_interrupt(true);
	if (db_connect(r->req->target, "dbosfs-migrate-cancel", &c, &e) != 0) {
		report_add(r, "server: could not check for statements left running: %s\n", e.text);
		goto out;
	}
	if (pg_query(c, find, 2, params, DB_QUERY_TIMEOUT_MS, NULL, &res, &e) != 0) {
		report_add(r, "server: could not list the run's sessions: %s\n", e.text);
		goto out;
	}
	rows = res ? PQntuples(res) : 0;
	for (int i = 0; i < rows; i++) {
		const char *pid = PQgetvalue(res, i, 0);
		char *q = PQgetvalue(res, i, 2);
		for (char *p = q; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = ' ';
		if (db_query(c, "SELECT pg_cancel_backend($1::int)", pid, NULL, &e) == 0)
			report_add(r, "server: cancelled the %s statement of session %s: %s\n",
			           PQgetvalue(res, i, 1), pid, q);
	}
	PQclear(res);
	res = NULL;
	if (!rows) {
		report_add(r, "server: no statement of this run was still running\n");
		goto out;
	}
	/* Give the cancels a moment, then end sessions that still work (or
	 * sit in an open transaction): nothing of theirs may commit later. */
	for (long long until = now_ms() + CANCEL_WAIT_MS; now_ms() < until;) {
		proc_sleep_ms(100);
		PQclear(res);
		res = NULL;
		if (pg_query(c, find, 2, params, DB_QUERY_TIMEOUT_MS, NULL, &res, &e) != 0)
			break;
		if (!(rows = res ? PQntuples(res) : 0))
			break;
	}
	for (int i = 0; res && i < rows; i++) {
		const char *pid = PQgetvalue(res, i, 0);
		if (db_query(c, "SELECT pg_terminate_backend($1::int)", pid, NULL, &e) == 0)
			report_add(r, "server: terminated session %s (still %s after the cancel)\n",
			           pid, PQgetvalue(res, i, 1));
	}
out:
	PQclear(res);
	PQfinish(c);
	pg_ignore_interrupt(false);
}

/* ---- the run ------------------------------------------------------------------ */

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

static void report_stop(struct run *r, const struct stop *s)
{
	static const char *const sent[] = {"", "SIGINT", "SIGINT, then SIGTERM after 2 s",
	                                   "SIGINT, SIGTERM after 2 s, SIGKILL after 4 s"};
	report_add(r,
	           "interrupted: sent %s to the command's process group; it ended %.1f s "
	           "after the first signal\n",
	           sent[s->signals], (double)s->ended_after / 1000.0);
}

/* The writer's environment (or the daemon's, said in the report), uid and
 * gid. */
static void adopt_writer(struct run *r, char ***writer_env)
{
	const struct migrate_request *q = r->req;

	*writer_env = q->pid > 0 ? writer_environ(q->pid) : NULL;
	r->writer_env = *writer_env != NULL;
	/* Root's own writes too: its groups are the writer's, not ours. */
	r->as_writer = q->pid > 0 && geteuid() == 0;
	if (r->as_writer) {
		r->ngroups = writer_groups(q->pid, r->groups,
		                           (int)(sizeof(r->groups) / sizeof(r->groups[0])));
		if (r->ngroups < 0) {
			r->groups[0] = q->gid;
			r->ngroups = 1;
		}
	}
}

static int load_config(struct run *r, char *const *base, const char *path, struct app_config *cfg,
                       struct errmsg *e)
{
	/* Twice: ${PGDATABASE} and ${DBOS_DATABASE_URL} name the database
	 * the first pass finds; the second sees them as commands will. */
	int rc = build_env(r, base, NULL);
	if (!rc)
		rc = app_config_load(path, r->env, cfg, e);
	if (rc)
		return rc;
	if ((rc = build_env(r, base, cfg->app_db_name)))
		return rc;
	struct app_config second;
	rc = app_config_load(path, r->env, &second, e);
	if (rc) {
		app_config_free(cfg);
		return rc;
	}
	app_config_free(cfg);
	*cfg = second;
	return build_env(r, base, cfg->app_db_name);
}

static int ensure_system_database(struct run *r, const struct app_config *cfg, struct errmsg *e)
{
	bool created = false;
	struct errmsg why = {{0}};
	int rc;

	if (!cfg->sys_db_name) {
		report_add(r, "system database: none (no name to derive it from)\n");
		return 0;
	}
	rc = ensure_database(r->req->target, cfg->sys_db_name, &created, NULL, 0, NULL, &why);
	if (rc) {
		report_add(r, "system database %s: %s\n", cfg->sys_db_name, why.text);
		return errmsg_set(e, rc, "%s", why.text);
	}
	report_add(r, created ? "created system database %s\n" : "system database %s exists\n",
	           cfg->sys_db_name);

	/* Its tables are the SDK's own, versioned with it: when the app has
	 * the SDK's CLI, let it make them, as `dbos migrate` does. Not for a
	 * system_database_url: that may name another server. */
	char cli[PATH_MAX + 64];
	static const char cmd[] = "node_modules/.bin/dbos schema";
	snprintf(cli, sizeof(cli), "%s/node_modules/.bin/dbos", cfg->app_dir);
	if (cfg->sys_db_from_url || access(cli, X_OK) != 0)
		return 0;
	struct stop stop;
	char how[96];
	int wstatus = 0;
	/* The SDK's Postgres client asks for TLS (sslmode=allow) unless told
	 * otherwise; a server without it would fail the step. libpq tools
	 * fall back by themselves, so only this step gets the hint. */
	if (!r->server_tls && !env_lookup(r->env, "PGSSLMODE") &&
	    !(r->env[r->env_n] = strdup("PGSSLMODE=disable")))
		return errmsg_set(e, -ENOMEM, "out of memory");
	if (r->env[r->env_n])
		r->env_n++;
	report_add(r, "$ %s\n", cmd);
	publish(r, true);
	rc = run_command(r, cmd, cfg->app_dir, &wstatus, &stop, &why);
	if (stop.leftovers)
		report_add(r, "stopped %d process%s the command left running\n", stop.leftovers,
		           stop.leftovers == 1 ? "" : "es");
	if (rc == -EINTR) {
		report_stop(r, &stop);
		stop_server_work(r, NULL);
		return errmsg_set(e, -EINTR, "interrupted while `%s` ran", cmd);
	}
	if (rc) {
		report_add(r, "could not start: %s\n", why.text);
		return errmsg_set(e, rc, "%s", why.text);
	}
	report_add(r, "exit status: %d\n",
	           WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus));
	if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
		return 0;
	describe_status(wstatus, how, sizeof(how));
	return errmsg_set(e, -EIO, "`%s` %s", cmd, how);
}

int migrate_run(const struct migrate_request *req, struct buf *report, struct errmsg *e)
{
	const char *what = req->kind == MIGRATE_UP ? "migrate" : "rollback";
	const struct migrate_target *t = req->target;
	struct run r = {.req = req, .report = report};
	struct app_config cfg;
	char stamp[32], failed_what[192] = "", since[64] = "", *abs_path = NULL;
	char **writer_env = NULL, **cmds = NULL;
	size_t n_cmds = 0, i;
	bool created = false, config_ok = false, interrupted = false;
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	buf_reset(report);
	errmsg_clear(e);
	if (!t)
		return errmsg_set(e, -EINVAL, "no instance to migrate");
	utc_stamp(stamp, sizeof(stamp));
	snprintf(r.tag, sizeof(r.tag), "dbosfs-migrate-%d-%u", (int)getpid(),
	         atomic_fetch_add(&run_counter, 1) + 1);
	if (t->password && *t->password && redactor_add(&r.redactor, t->password) != 0) {
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto finish;
	}

	rc = writer_path(req, &abs_path, e);
	const char *path = abs_path ? abs_path : req->path;
	if (!rc) {
		adopt_writer(&r, &writer_env);
		rc = load_config(&r, writer_env ? writer_env : environ, path, &cfg, e);
	}
	if (rc) {
		report_add(&r, "%s %s\nstarted: %s\n", what, path ? path : "", stamp);
		goto finish;
	}
	config_ok = true;
	cmds = req->kind == MIGRATE_UP ? cfg.migrate : cfg.rollback;
	n_cmds = req->kind == MIGRATE_UP ? cfg.n_migrate : cfg.n_rollback;
	report_add(&r, "%s %s (%s), database %s", what, cfg.app_dir,
	           strrchr(cfg.config_path, '/') + 1, cfg.app_db_name);
	if (req->kind == MIGRATE_UP && cfg.sys_db_name)
		report_add(&r, ", system database %s", cfg.sys_db_name);
	report_add(&r, "\nstarted: %s\n", stamp);
	if (r.writer_env)
		report_add(&r, "environment: the writer's (pid %d), plus the connection\n",
		           (int)req->pid);
	else
		report_add(&r, "environment: the daemon's, plus the connection (the writer's "
		               "could not be read)\n");
	if (r.as_writer)
		report_add(&r, "user: uid %u gid %u (the writer)\n", (unsigned)req->uid,
		           (unsigned)req->gid);
	if (cfg.name_from_package_json)
		report_add(&r, "name: %s (from package.json)\n", cfg.name);
	log_event("%s started: %s (database %s, %zu command%s)", what, cfg.app_dir, cfg.app_db_name,
	          n_cmds, n_cmds == 1 ? "" : "s");

	rc = ensure_database(t, cfg.app_db_name, &created, since, sizeof(since), &r.server_tls, e);
	if (rc)
		goto finish;
	if (created)
		report_add(&r, "created database %s\n", cfg.app_db_name);
	if (!n_cmds)
		report_add(&r, "nothing to run: database.%s is empty or missing\n", what);
	publish(&r, true);

	for (i = 0; i < n_cmds; i++) {
		char shortcmd[CMD_IN_MESSAGE_MAX + 8], how[96];
		struct stop stop;
		int wstatus = 0;

		short_command(cmds[i], shortcmd, sizeof(shortcmd));
		if (op_interrupted()) {
			rc = errmsg_set(e, -EINTR, "interrupted before command %zu of %zu", i + 1,
			                n_cmds);
			interrupted = true;
			break;
		}
		report_add(&r, "$ %s\n", cmds[i]);
		publish(&r, true);
		rc = run_command(&r, cmds[i], cfg.app_dir, &wstatus, &stop, e);
		if (stop.leftovers)
			report_add(&r, "stopped %d process%s the command left running\n",
			           stop.leftovers, stop.leftovers == 1 ? "" : "es");
		if (rc == -EINTR) {
			report_stop(&r, &stop);
			stop_server_work(&r, since);
			errmsg_set(e, -EINTR, "interrupted during command %zu of %zu (`%s`)", i + 1,
			           n_cmds, shortcmd);
			interrupted = true;
			break;
		}
		if (rc) {
			report_add(&r, "could not start: %s\n", e->text);
			break;
		}
		if (WIFEXITED(wstatus))
			report_add(&r, "exit status: %d\n", WEXITSTATUS(wstatus));
		else
			report_add(&r, "killed by signal %d\n", WTERMSIG(wstatus));
		if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
			describe_status(wstatus, how, sizeof(how));
			rc = errmsg_set(e, -EIO, "command %zu of %zu (`%s`) %s", i + 1, n_cmds,
			                shortcmd, how);
			snprintf(failed_what, sizeof(failed_what), "command %zu of %zu %s", i + 1,
			         n_cmds, how);
			break;
		}
	}
	/* The DBOS CLI creates the system database after the commands, even
	 * when one failed; an interrupt means stop. */
	if (req->kind == MIGRATE_UP && !interrupted) {
		struct errmsg sys_e = {{0}};
		int sys_rc = ensure_system_database(&r, &cfg, &sys_e);
		if (sys_rc == -EINTR)
			rc = errmsg_set(e, -EINTR, "%s", sys_e.text);
		else if (sys_rc && !rc)
			rc = errmsg_set(e, sys_rc, "cannot create the system database %s: %s",
			                cfg.sys_db_name, sys_e.text);
	}

finish:
	utc_stamp(stamp, sizeof(stamp));
	report_add(&r, "ended: %s\n", stamp);
	/* Defence in depth: a command text or a server message could carry the
	 * password; neither the report nor last_error may. */
	redact_text(&r.redactor, e->text, sizeof(e->text));
	if (!rc && n_cmds)
		report_add(&r, "result: ok (%zu command%s)\n", n_cmds, n_cmds == 1 ? "" : "s");
	else if (!rc)
		report_add(&r, "result: ok (nothing to run)\n");
	else if (rc == -EINTR)
		report_add(&r, "result: interrupted\n");
	else if (failed_what[0])
		report_add(&r, "result: failed: %s\n", failed_what);
	else
		report_add(&r, "result: error: %s\n", e->text);
	redact_buf(&r.redactor, report);
	if (!rc)
		log_event("%s ended: %s: ok", what, cfg.app_dir);
	else
		log_event("%s ended: %s: %s", what,
		          config_ok ? cfg.app_dir : (req->path ? req->path : ""), e->text);
	env_free(r.env);
	env_free(writer_env);
	redactor_free(&r.redactor);
	app_config_free(&cfg);
	free(abs_path);
	return rc;
}
