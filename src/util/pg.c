/* libpq helpers: see include/pg.h. */
#include "pg.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#define PG_POLL_SLICE_MS 50 /* how soon a cancel or Ctrl-C is noticed */

static __thread bool ignore_interrupt;

void pg_ignore_interrupt(bool on)
{
	ignore_interrupt = on;
}

static bool stop_asked(const atomic_bool *cancel)
{
	return (cancel && atomic_load(cancel)) || (!ignore_interrupt && op_interrupted());
}

void pg_trim_message(char *m)
{
	size_t n = strlen(m);

	while (n && (m[n - 1] == '\n' || m[n - 1] == ' ' || m[n - 1] == '\r'))
		m[--n] = '\0';
	for (char *p = m; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

static int fail(PGconn *c, int err, struct errmsg *e, const char *fallback)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", c && *PQerrorMessage(c) ? PQerrorMessage(c) : fallback);
	pg_trim_message(msg);
	if (c)
		PQfinish(c);
	return errmsg_set(e, err, "%s", msg);
}

/* An error on a connection the caller still owns. */
static int fail_keep(PGconn *c, int err, struct errmsg *e)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
	pg_trim_message(msg);
	return errmsg_set(e, err, "%s", msg[0] ? msg : "connection failed");
}

int pg_connect(const char *const *keys, const char *const *vals, int timeout_ms,
               const atomic_bool *cancel, PGconn **out, struct errmsg *e)
{
	long long deadline = now_ms() + timeout_ms;
	PostgresPollingStatusType want = PGRES_POLLING_WRITING; /* as libpq's docs say */
	PGconn *c = PQconnectStartParams(keys, vals, 0);

	*out = NULL;
	if (!c)
		return errmsg_set(e, -ENOMEM, "out of memory connecting to the server");
	if (PQstatus(c) == CONNECTION_BAD)
		return fail(c, -EIO, e, "connection failed");
	for (;;) {
		if (want == PGRES_POLLING_OK)
			break;
		if (want == PGRES_POLLING_FAILED)
			return fail(c, -EIO, e, "connection failed");
		if (stop_asked(cancel)) {
			PQfinish(c);
			return errmsg_set(e, -EINTR, "interrupted while connecting to the server");
		}
		long long left = deadline - now_ms();
		if (left <= 0) {
			PQfinish(c);
			return errmsg_set(e, -ETIMEDOUT, "the server did not answer within %d ms",
			                  timeout_ms);
		}
		struct pollfd p = {.fd = PQsocket(c),
		                   .events = want == PGRES_POLLING_READING ? POLLIN : POLLOUT};
		if (p.fd < 0)
			return fail(c, -EIO, e, "lost the connection");
		int r = poll(&p, 1, left < PG_POLL_SLICE_MS ? (int)left : PG_POLL_SLICE_MS);
		if (r < 0 && errno != EINTR) {
			int saved = errno;
			PQfinish(c);
			return errmsg_set(e, -EIO, "poll: %s", strerror(saved));
		}
		if (r > 0)
			want = PQconnectPoll(c);
	}
	*out = c;
	return 0;
}

static void cancel_query(PGconn *c)
{
	PGcancel *cn = PQgetCancel(c);
	char buf[256];

	if (cn) {
		PQcancel(cn, buf, sizeof(buf));
		PQfreeCancel(cn);
	}
}

/* Waits for the answer to a query already sent. Sets *answered when the
 * server finished answering (its results are then ready to be read, even
 * after a cancel); otherwise the caller returns the result as it is.
 * Returns 0, or -errno with e filled when interrupted, timed out or failed. */
static int await_answer(PGconn *c, long long deadline, int timeout_ms, const atomic_bool *cancel,
                        bool *answered, struct errmsg *e)
{
	long long cancelled_at = 0;
	int rc = 0;

	*answered = false;
	for (;;) {
		if (!PQconsumeInput(c))
			return fail_keep(c, -EIO, e);
		if (!PQisBusy(c)) {
			*answered = true;
			return rc;
		}
		if (!rc && stop_asked(cancel)) {
			rc = errmsg_set(e, -EINTR, "interrupted");
			cancelled_at = now_ms();
			cancel_query(c);
		} else if (!rc && now_ms() >= deadline) {
			rc = errmsg_set(e, -ETIMEDOUT, "no answer within %d ms", timeout_ms);
			cancelled_at = now_ms();
			cancel_query(c);
		}
		struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
		if (p.fd < 0)
			return errmsg_set(e, -EIO, "lost the connection");
		/* After a cancel request the answer (an error) comes soon; a
		 * server that never answers is left after a second more. */
		if (rc && now_ms() >= cancelled_at + 1000)
			return rc;
		if (poll(&p, 1, PG_POLL_SLICE_MS) < 0 && errno != EINTR)
			return errmsg_set(e, -EIO, "poll: %s", strerror(errno));
	}
}

/* The SQLSTATEs pg_query's callers act on, as errnos; 0 for the others. */
static int sqlstate_errno(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (state && strcmp(state, "42P04") == 0) /* duplicate_database */
		return -EEXIST;
	if (state && strcmp(state, "55006") == 0) /* object_in_use */
		return -EBUSY;
	if (state && strcmp(state, "3D000") == 0) /* invalid_catalog_name */
		return -ENOENT;
	return 0;
}

/* Waits for the answer to a query already sent and reads all of it (libpq
 * wants every result read). Returns 0 or the first failure, its message
 * in e; with map_sqlstate, a failure whose SQLSTATE sqlstate_errno knows
 * returns that errno (the message stays). With out (NULL for none), the
 * first rows are kept in *out, which is NULL unless all went well. */
static int read_answer(PGconn *c, long long deadline, int timeout_ms, const atomic_bool *cancel,
                       bool map_sqlstate, PGresult **out, struct errmsg *e)
{
	bool answered;
	int rc = await_answer(c, deadline, timeout_ms, cancel, &answered, e);

	if (!answered)
		return rc;
	PGresult *res;
	while ((res = PQgetResult(c))) {
		ExecStatusType st = PQresultStatus(res);
		if (!rc && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			char msg[1024];
			snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
			pg_trim_message(msg);
			rc = errmsg_set(e, -EIO, "%s", msg);
			/* The SQLSTATE says what went wrong; callers map it. */
			int mapped = map_sqlstate ? sqlstate_errno(res) : 0;
			if (mapped)
				rc = mapped;
		}
		if (out && !rc && !*out && st == PGRES_TUPLES_OK) {
			*out = res;
			continue;
		}
		PQclear(res);
	}
	if (rc && out && *out) {
		PQclear(*out);
		*out = NULL;
	}
	return rc;
}

int pg_command(PGconn *c, const char *sql, int timeout_ms, const atomic_bool *cancel,
               struct errmsg *e)
{
	long long deadline = now_ms() + timeout_ms;

	if (!PQsendQuery(c, sql))
		return fail_keep(c, -EIO, e);
	return read_answer(c, deadline, timeout_ms, cancel, false, NULL, e);
}

int pg_send(PGconn *c, const char *sql, struct errmsg *e)
{
	if (!PQsendQuery(c, sql))
		return fail_keep(c, -EIO, e);
	return 0;
}

int pg_await(PGconn *c, int timeout_ms, const atomic_bool *cancel, struct errmsg *e)
{
	return read_answer(c, now_ms() + timeout_ms, timeout_ms, cancel, false, NULL, e);
}

int pg_query(PGconn *c, const char *sql, int nparams, const char *const *params, int timeout_ms,
             const atomic_bool *cancel, PGresult **out, struct errmsg *e)
{
	long long deadline = now_ms() + timeout_ms;

	*out = NULL;
	if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0))
		return fail_keep(c, -EIO, e);
	return read_answer(c, deadline, timeout_ms, cancel, true, out, e);
}
