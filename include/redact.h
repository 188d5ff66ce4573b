/* The one secret redactor: every place that shows text which could carry a
 * password or token (migration reports, last_error, server error bodies)
 * masks it here, with one mark. A secret is masked in its literal form and
 * in its percent-encoded forms (as it appears inside a URL). */
#ifndef DBOSFS_REDACT_H
#define DBOSFS_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define REDACT_MARK "[redacted]"
/* Forms kept per redactor: a few secrets, three forms each. */
#define REDACT_FORMS_MAX 12

struct redactor {
	char *forms[REDACT_FORMS_MAX]; /* longest first, so the longest match wins */
	size_t n;
	size_t longest;
};

#define REDACTOR_INIT                                                                              \
	{                                                                                          \
		{NULL}, 0, 0                                                                       \
	}

/* Adds secret (NULL or "" is ignored) with its %XX-encoded forms (upper and
 * lower case hex). 0 or -ENOMEM / -ENOSPC (too many secrets). */
int redactor_add(struct redactor *r, const char *secret);
/* Wipes and frees the forms. */
void redactor_free(struct redactor *r);

/* Replaces every occurrence of a secret in b with REDACT_MARK. If memory
 * runs out the text is cut before the first secret instead: never shown. */
void redact_buf(const struct redactor *r, struct buf *b);
/* The same for a NUL-terminated text in a fixed buffer of size bytes; the
 * end of the text is dropped if the marks make it too long. */
void redact_text(const struct redactor *r, char *text, size_t size);
/* One secret, one fixed-size text: the common case for error messages. */
void redact_text_secret(char *text, size_t size, const char *secret);

/* b was cut out of a longer text (cut_before: something preceded it;
 * cut_after: something followed). A secret split by such a cut leaves a
 * fragment at the edge that no whole-secret match finds: masks the longest
 * head of b that ends some secret, and the longest tail that starts one. */
void redact_cut_edges(const struct redactor *r, struct buf *b, bool cut_before, bool cut_after);

/* Masks a byte stream that arrives in chunks (command output): a secret
 * split across two chunks is still found, because the last longest-1
 * bytes are held back until more arrives or the stream ends. */
struct redact_stream {
	const struct redactor *r;
	struct buf pending;
};
/* Appends the bytes that are safe to show to out. 0 or -ENOMEM. */
int redact_stream_feed(struct redact_stream *s, const char *data, size_t n, struct buf *out);
/* End of stream: appends the rest (masked) and wipes the held bytes. */
int redact_stream_finish(struct redact_stream *s, struct buf *out);

#endif
