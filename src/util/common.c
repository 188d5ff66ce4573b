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

bool op_interrupted(void)
{
	return op_interrupted_hook && op_interrupted_hook() != 0;
}

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
