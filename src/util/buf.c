/* A growable, always NUL-terminated byte buffer. */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for extra more bytes plus the terminating NUL. */
static int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra > SIZE_MAX - b->len - 1)
		return -ENOMEM;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	/* Not realloc: the old block may hold a secret (a password being
	 * formatted), so it is wiped before it goes back to the allocator. */
	p = malloc(cap);
	if (!p)
		return -ENOMEM;
	if (b->data) {
		memcpy(p, b->data, b->len + 1);
		explicit_bzero(b->data, b->cap);
		free(b->data);
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

int buf_append(struct buf *b, const char *s, size_t n)
{
	int rc = buf_reserve(b, n);

	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	rc = buf_reserve(b, (size_t)n);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void buf_free_secret(struct buf *b)
{
	/* The whole allocation: earlier, longer contents may linger past len. */
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

char *buf_steal(struct buf *b)
{
	char *p;

	if (!b->data && buf_reserve(b, 0))
		return NULL;
	if (!b->len)
		b->data[0] = '\0';
	p = b->data;
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	return p;
}
