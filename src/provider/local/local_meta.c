/* Pure helpers of the local provider: instance metadata, the stale
 * postmaster.pid decision, reading server logs, backoff. No I/O here, so
 * tests/unit/extra/test_local_meta.c can cover every branch. */
#include "local_internal.h"
#include "validate.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A linked server's host (letters, digits, . - _, not starting with - or
 * .) or admin role (letters, digits, _ . -), as .dbosfs/link accepts them. */
static bool link_word_ok(const char *s, bool host)
{
	if (!*s || (host && (*s == '-' || *s == '.')))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_'))
			return false;
	return true;
}

int local_meta_parse(const char *text, struct local_meta *out)
{
	memset(out, 0, sizeof(*out));
	out->port = -1;
	for (const char *line = text; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[512];

		if (len < sizeof(buf)) {
			memcpy(buf, line, len);
			buf[len] = '\0';
			char *eq = strchr(buf, '=');
			if (buf[0] != '#' && eq) {
				*eq = '\0';
				const char *val = eq + 1;
				if (strcmp(buf, "port") == 0) {
					char *stop;
					long v = strtol(val, &stop, 10);
					out->port =
					    (*val && !*stop && v > 0 && v <= 65535) ? (int)v : -2;
				} else if (strcmp(buf, "username") == 0) {
					if (strlen(val) < sizeof(out->username) &&
					    validate_username(val, NULL) == 0)
						strcpy(out->username, val);
				} else if (strcmp(buf, "linked") == 0) {
					out->linked = strcmp(val, "1") == 0;
				} else if (strcmp(buf, "host") == 0) {
					if (strlen(val) < sizeof(out->host) &&
					    link_word_ok(val, true))
						strcpy(out->host, val);
				} else if (strcmp(buf, "admin") == 0) {
					if (strlen(val) < sizeof(out->admin) &&
					    link_word_ok(val, false))
						strcpy(out->admin, val);
				}
			}
		}
		line = end ? end + 1 : NULL;
	}
	if (out->linked) {
		/* A linked server's admin is any role (postgres, dbosadmin...):
		 * mkdir's username rules do not apply to it. */
		if (out->port <= 0 || !out->host[0] || !out->admin[0])
			return -EINVAL;
		snprintf(out->username, sizeof(out->username), "%s", out->admin);
		return 0;
	}
	if (out->port <= 0 || !out->username[0])
		return -EINVAL;
	return 0;
}

int local_meta_format(const struct local_meta *m, char *out, size_t outsz)
{
	int n;

	if (m->linked)
		n = snprintf(
		    out, outsz,
		    "# dbosfs linked server (not run by dbosfs)\nlinked=1\nhost=%s\nport=%d\n"
		    "admin=%s\n",
		    m->host, m->port, m->admin);
	else
		n = snprintf(out, outsz, "# dbosfs local instance\nport=%d\nusername=%s\n", m->port,
		             m->username);

	return (n < 0 || (size_t)n >= outsz) ? -ENOSPC : 0;
}

pid_t stale_pid_parse(const char *text)
{
	char *stop;
	long v = strtol(text, &stop, 10);

	if (stop == text || (*stop != '\n' && *stop != '\0') || v <= 0 || v > 0x7fffffff)
		return 0;
	return (pid_t)v;
}

enum stale_pid_action stale_pid_decide(const struct stale_pid_facts *f)
{
	if (!f->file_exists)
		return STALE_PID_NONE;
	/* Our own live child is handled by supervision, never by this path;
	 * removing its lock file would let a second postmaster in. */
	if (f->pid > 0 && f->alive && f->is_self_or_child_of_ours)
		return STALE_PID_NONE;
	if (f->pid > 0 && f->alive && f->is_postgres_exe && f->cwd_is_datadir)
		return STALE_PID_SHUTDOWN;
	return STALE_PID_REMOVE;
}

bool local_log_port_conflict(const char *log_tail)
{
	return strstr(log_tail, "could not create any TCP/IP sockets") ||
	       strstr(log_tail, "Address already in use");
}

/* memmem for a NUL-free needle within the first len bytes of s. */
static bool strnstr_n(const char *s, size_t len, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = 0; i + n <= len; i++)
		if (strncmp(s + i, needle, n) == 0)
			return true;
	return false;
}

void local_log_reason(const char *log_tail, char *out, size_t outsz)
{
	/* The FATAL line often only says "contains errors"; the line before
	 * it has the detail (file and line of a syntax error), so keep both. */
	const char *best = NULL, *before_best = NULL, *last = NULL, *prev = NULL;
	size_t best_len = 0, before_len = 0, last_len = 0, prev_len = 0;

	for (const char *line = log_tail; *line;) {
		const char *end = strchrnul(line, '\n');
		size_t len = (size_t)(end - line);

		if (len) {
			if (strnstr_n(line, len, "FATAL") || strnstr_n(line, len, "PANIC")) {
				best = line;
				best_len = len;
				before_best = prev;
				before_len = prev_len;
			}
			last = line;
			last_len = len;
			prev = line;
			prev_len = len;
		}
		if (!*end)
			break;
		line = end + 1;
	}
	if (!outsz)
		return;
	if (!best) {
		best = last;
		best_len = last_len;
		before_best = NULL;
	}
	if (!best) {
		snprintf(out, outsz, "no message in the server log");
		return;
	}
	if (before_best && before_len + best_len + 3 < outsz)
		snprintf(out, outsz, "%.*s; %.*s", (int)before_len, before_best, (int)best_len,
		         best);
	else
		snprintf(out, outsz, "%.*s", (int)(best_len < outsz ? best_len : outsz - 1), best);
}

bool local_socket_path_fits(const char *runbase, size_t max_name_len)
{
	/* sun_path holds 108 bytes including the NUL. */
	return strlen(runbase) + 1 + max_name_len + strlen("/.s.PGSQL.65535") <= 107;
}

long long local_backoff_ms(int failures)
{
	/* The first restart is immediate (kill -9 should cost ~0.2 s of
	 * downtime); then 0.5, 1, 2, 4 s... capped at 30 s. */
	if (failures <= 1)
		return 0;
	long long ms = 500;
	for (int i = 2; i < failures && ms < 30000; i++)
		ms *= 2;
	return ms > 30000 ? 30000 : ms;
}

long long local_retry_ms(int n, long long first_ms)
{
	long long ms = first_ms > 0 ? first_ms : LOCAL_RETRY_FIRST_MS;

	for (int i = 1; i < n && ms < LOCAL_RETRY_MAX_MS; i++)
		ms *= 2;
	return ms > LOCAL_RETRY_MAX_MS ? LOCAL_RETRY_MAX_MS : ms;
}

int local_path(char *out, size_t outsz, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, outsz, fmt, ap);
	va_end(ap);
	return (n < 0 || (size_t)n >= outsz) ? -ENAMETOOLONG : 0;
}

bool local_probe_ask_due(long long now_ms, long long asked_ms, int misses, bool unresponsive,
                         int period_ms)
{
	if (unresponsive || misses > 0 || asked_ms <= 0)
		return true;
	return now_ms - asked_ms >= LOCAL_PROBE_ASK_MS - period_ms / 2;
}

bool local_proc_state_stopped(char state)
{
	return state == 'T' || state == 't';
}

enum probe_verdict local_probe_verdict(bool unresponsive, bool answered, int *misses)
{
	if (answered) {
		*misses = 0;
		return unresponsive ? PROBE_RESPONSIVE_AGAIN : PROBE_KEEP;
	}
	if (*misses < LOCAL_PROBE_MISSES)
		(*misses)++;
	return !unresponsive && *misses >= LOCAL_PROBE_MISSES ? PROBE_NOW_UNRESPONSIVE : PROBE_KEEP;
}
