/* Small shared definitions: error messages that travel with an errno,
 * cancellation of long operations, the version string. */
#ifndef DBOSFS_COMMON_H
#define DBOSFS_COMMON_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define DBOSFS_VERSION "0.1.0"
/* root's default state_dir, and the home of the dbosfs server account. */
#define DBOSFS_ROOT_STATE_DIR "/var/lib/dbosfs"

/* A failed operation returns a negative errno and leaves its full,
 * human-readable message here; the filesystem copies it to last_error. */
#define ERRMSG_MAX 2048
struct errmsg {
	char text[ERRMSG_MAX];
};

/* Formats the message into e (if e is not NULL) and returns err, so error
 * paths stay one line: return errmsg_set(e, -EINVAL, "bad name %s", n); */
int errmsg_set(struct errmsg *e, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void errmsg_clear(struct errmsg *e);

/* True when the caller of the current filesystem operation was interrupted
 * (Ctrl-C). Long operations (HTTP transfers, migrations, waits) poll it at
 * least every 100 ms and give up with -EINTR. Outside FUSE it is false. */
bool op_interrupted(void);
/* A thread that works for a request which may return before it (a
 * background provider call) points this at that call's cancel flag; NULL
 * clears it. op_interrupted() is then also true once the flag is. */
void op_set_cancel_flag(const atomic_bool *flag);
/* main.c points this at fuse_interrupted(); tests may leave it NULL. */
extern int (*op_interrupted_hook)(void);

/* Monotonic clock in milliseconds. */
long long now_ms(void);

/* Wall-clock ms since the epoch as RFC 3339 UTC to the second
 * (2026-11-30T21:00:00Z), the form restore files show and accept. */
void format_rfc3339_utc(long long ms, char *out, size_t outsz);

#endif
