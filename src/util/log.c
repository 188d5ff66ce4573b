/* The mount's event log: a locked ring of the newest LOG_KEEP_LINES lines. */
#include "log.h"

#include "escape.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_lines[LOG_KEEP_LINES];
static size_t log_next;  /* slot for the next line */
static size_t log_count; /* lines held, <= LOG_KEEP_LINES */
static bool log_to_stderr;

void log_init(bool to_stderr)
{
	pthread_mutex_lock(&log_lock);
	log_to_stderr = to_stderr;
	pthread_mutex_unlock(&log_lock);
}

static void log_add(const char *prefix, const char *fmt, va_list ap)
{
	char stamp[32], raw[2048], msg[ESCAPED_SIZE(sizeof(raw))], *line;
	struct tm tm;
	time_t t = time(NULL);

	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	/* One event is one line, and nothing in it drives a terminal. */
	escape_message(raw, msg, sizeof(msg));
	if (asprintf(&line, "%s %s%s", stamp, prefix, msg) < 0)
		line = NULL;

	pthread_mutex_lock(&log_lock);
	if (log_to_stderr)
		fprintf(stderr, "dbosfs: %s %s%s\n", stamp, prefix, msg);
	if (line) {
		free(log_lines[log_next]);
		log_lines[log_next] = line;
		log_next = (log_next + 1) % LOG_KEEP_LINES;
		if (log_count < LOG_KEEP_LINES)
			log_count++;
	}
	pthread_mutex_unlock(&log_lock);
}

void log_event(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_add("", fmt, ap);
	va_end(ap);
}

void log_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_add("error: ", fmt, ap);
	va_end(ap);
}

int log_snapshot(struct buf *out)
{
	int rc = 0;

	pthread_mutex_lock(&log_lock);
	size_t first = (log_next + LOG_KEEP_LINES - log_count) % LOG_KEEP_LINES;
	for (size_t i = 0; i < log_count && !rc; i++) {
		const char *line = log_lines[(first + i) % LOG_KEEP_LINES];
		rc = buf_puts(out, line);
		if (!rc)
			rc = buf_append(out, "\n", 1);
	}
	pthread_mutex_unlock(&log_lock);
	return rc;
}

void log_shutdown(void)
{
	pthread_mutex_lock(&log_lock);
	for (size_t i = 0; i < LOG_KEEP_LINES; i++) {
		free(log_lines[i]);
		log_lines[i] = NULL;
	}
	log_next = 0;
	log_count = 0;
	pthread_mutex_unlock(&log_lock);
}
