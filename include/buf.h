/* A growable, always NUL-terminated byte buffer. */
#ifndef DBOSFS_BUF_H
#define DBOSFS_BUF_H

#include <stddef.h>

struct buf {
	char *data; /* NULL until the first append; always NUL-terminated after */
	size_t len;
	size_t cap;
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

int buf_append(struct buf *b, const char *s, size_t n); /* 0 or -ENOMEM */
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b); /* len = 0, keeps memory */
void buf_free(struct buf *b);
/* Wipes the contents (for secrets) before freeing. */
void buf_free_secret(struct buf *b);
/* Detaches the data; the caller frees it. Never NULL on success (empty ""). */
char *buf_steal(struct buf *b);

#endif
