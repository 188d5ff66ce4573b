/* Error messages that travel with an errno, cancellation, the clock. */
#include "common.h"

#include <stdio.h>
#include <time.h>

int (*op_interrupted_hook)(void) = NULL;

int errmsg_set(struct errmsg *e, int err, const char *fmt, ...)
{
	if (e) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(e->text, sizeof(e->text), fmt, ap);
		va_end(ap);
	}
	return err;
}

void errmsg_clear(struct errmsg *e)
{
	if (e)
		e->text[0] = '\0';
}

static _Thread_local const atomic_bool *op_cancel_flag;

void op_set_cancel_flag(const atomic_bool *flag)
{
	op_cancel_flag = flag;
}

bool op_interrupted(void)
{
	if (op_cancel_flag && atomic_load(op_cancel_flag))
		return true;
	return op_interrupted_hook && op_interrupted_hook() != 0;
}

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void format_rfc3339_utc(long long ms, char *out, size_t outsz)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
