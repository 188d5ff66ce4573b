/* libpq, in one place: a connect that never blocks the caller beyond a
 * poll slice, so Ctrl-C (op_interrupted()), a stop request or a deadline
 * ends it at once. Every dbosfs connection goes through it. */
#ifndef DBOSFS_PG_H
#define DBOSFS_PG_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common.h"

/* Connects with keyword/value arrays (never a conninfo string: a password
 * must not pass through text that could reach a message). Waits at most
 * timeout_ms. 0 and *out (blocking mode, ready for PQexec), -EINTR when
 * *cancel turns true or op_interrupted(), -ETIMEDOUT, or -EIO with
 * libpq's message (one line). */
int pg_connect(const char *const *keys, const char *const *vals, int timeout_ms,
               const atomic_bool *cancel, PGconn **out, struct errmsg *e);

/* Runs one statement that returns no rows (or whose rows are ignored),
 * waiting at most timeout_ms; on cancel, Ctrl-C or timeout the server is
 * asked to cancel it. 0, -EINTR, -ETIMEDOUT or -EIO with the server's
 * message. The connection stays usable only after 0. */
int pg_command(PGconn *c, const char *sql, int timeout_ms, const atomic_bool *cancel,
               struct errmsg *e);

/* pg_command in two halves, so that other work runs while the server
 * answers: pg_send sends sql (0, or -EIO when the connection is broken),
 * pg_await waits for its answer as pg_command does (timeout_ms from the
 * call of pg_await). */
int pg_send(PGconn *c, const char *sql, struct errmsg *e);
int pg_await(PGconn *c, int timeout_ms, const atomic_bool *cancel, struct errmsg *e);

/* Runs one statement with text parameters ($1...), like pg_command; *out
 * gets its rows (the caller PQclear()s it; NULL for a statement without
 * rows). Errors: as pg_command, with the SQLSTATE mapped where callers
 * need it: duplicate database -EEXIST, object in use -EBUSY, no such
 * database -ENOENT. */
int pg_query(PGconn *c, const char *sql, int nparams, const char *const *params, int timeout_ms,
             const atomic_bool *cancel, PGresult **out, struct errmsg *e);

/* While on (this thread only), op_interrupted() does not stop pg_*
 * calls: the cleanup that a Ctrl-C itself asked for (cancelling what the
 * interrupted run left on the server) must still reach the server. */
void pg_ignore_interrupt(bool on);

/* libpq messages end with a newline and may span lines: one line, no
 * trailing blanks. */
void pg_trim_message(char *m);

#endif
