/* The mount's event log: recent events and errors, one timestamped line
 * each, newest last. Served as .dbosfs/log and, in the foreground, echoed to
 * stderr. Never pass a secret to these functions. */
#ifndef DBOSFS_LOG_H
#define DBOSFS_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define LOG_KEEP_LINES 1000

void log_init(bool to_stderr);
void log_event(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Copies the retained lines into out (appending). 0 or -ENOMEM. */
int log_snapshot(struct buf *out);
void log_shutdown(void);

#endif
