/* The one secret redactor (see redact.h). */
#include "redact.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *percent_encoded(const char *s, const char *hex)
{
	size_t len = strlen(s);
	char *out = malloc(3 * len + 1), *p = out;

	if (!out)
		return NULL;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		/* RFC 3986 unreserved characters stay as they are. */
		if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
		    (*c >= '0' && *c <= '9') || strchr("-._~", *c)) {
			*p++ = (char)*c;
		} else {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		}
	}
	*p = '\0';
	return out;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* Inserts form unless it is already there, keeping longest first. */
static int add_form(struct redactor *r, char *form)
{
	size_t len = strlen(form), i;

	for (i = 0; i < r->n; i++) {
		if (strcmp(r->forms[i], form) == 0) {
			wipe_free(form);
			return 0;
		}
	}
	if (r->n == REDACT_FORMS_MAX) {
		wipe_free(form);
		return -ENOSPC;
	}
	for (i = r->n; i > 0 && strlen(r->forms[i - 1]) < len; i--)
		r->forms[i] = r->forms[i - 1];
	r->forms[i] = form;
	r->n++;
	if (len > r->longest)
		r->longest = len;
	return 0;
}

int redactor_add(struct redactor *r, const char *secret)
{
	static const char *const hexes[] = {"0123456789ABCDEF", "0123456789abcdef"};
	char *form;
	int rc;

	if (!secret || !*secret)
		return 0;
	if (!(form = strdup(secret)))
		return -ENOMEM;
	if ((rc = add_form(r, form)))
		return rc;
	for (int h = 0; h < 2; h++) {
		if (!(form = percent_encoded(secret, hexes[h])))
			return -ENOMEM;
		if ((rc = add_form(r, form)))
			return rc;
	}
	return 0;
}

void redactor_free(struct redactor *r)
{
	for (size_t i = 0; i < r->n; i++)
		wipe_free(r->forms[i]);
	memset(r, 0, sizeof(*r));
}

/* Length of the secret form that starts at p (end bounds it), or 0. */
static size_t match_at(const struct redactor *r, const char *p, const char *end)
{
	for (size_t i = 0; i < r->n; i++) {
		size_t len = strlen(r->forms[i]);
		if ((size_t)(end - p) >= len && memcmp(p, r->forms[i], len) == 0)
			return len;
	}
	return 0;
}

/* Offset of the first secret in [data, data+len), or len. */
static size_t first_match(const struct redactor *r, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (match_at(r, data + i, data + len))
			return i;
	return len;
}

/* Builds the masked copy of data into out; -ENOMEM leaves out partial. */
static int mask_into(const struct redactor *r, const char *data, size_t len, struct buf *out)
{
	const char *p = data, *end = data + len, *lit = data;
	int rc = 0;

	while (p < end && !rc) {
		size_t m = match_at(r, p, end);
		if (!m) {
			p++;
			continue;
		}
		rc = buf_append(out, lit, (size_t)(p - lit));
		if (!rc)
			rc = buf_puts(out, REDACT_MARK);
		p += m;
		lit = p;
	}
	if (!rc)
		rc = buf_append(out, lit, (size_t)(end - lit));
	return rc;
}

void redact_buf(const struct redactor *r, struct buf *b)
{
	struct buf out = BUF_INIT;

	if (!r || !r->n || !b->data || first_match(r, b->data, b->len) == b->len)
		return;
	if (mask_into(r, b->data, b->len, &out) != 0) {
		size_t cut = first_match(r, b->data, b->len);
		buf_free_secret(&out);
		explicit_bzero(b->data + cut, b->len - cut);
		b->len = cut;
		return;
	}
	buf_free_secret(b);
	*b = out;
}

void redact_text(const struct redactor *r, char *text, size_t size)
{
	struct buf b = BUF_INIT;
	size_t len;

	if (!r || !r->n || !text || !size)
		return;
	len = strnlen(text, size - 1);
	text[len] = '\0';
	if (first_match(r, text, len) == len)
		return;
	if (buf_append(&b, text, len) == 0) {
		redact_buf(r, &b);
		len = b.len < size - 1 ? b.len : size - 1;
		memcpy(text, b.data, len);
		text[len] = '\0';
		/* A mark cut by the end of the buffer could look like text;
		 * that is fine, but never leave a secret's start there. */
	} else {
		text[first_match(r, text, len)] = '\0';
	}
	buf_free_secret(&b);
}

void redact_text_secret(char *text, size_t size, const char *secret)
{
	struct redactor r = REDACTOR_INIT;

	if (redactor_add(&r, secret) == 0) {
		redact_text(&r, text, size);
	} else if (text && size && secret && *secret) {
		/* No memory for the encoded forms: drop the text from the
		 * literal secret on. */
		char *hit = strstr(text, secret);
		if (hit)
			*hit = '\0';
	}
	redactor_free(&r);
}

/* Replaces b[from, from+len) with the mark. */
static void mask_range(struct buf *b, size_t from, size_t len)
{
	struct buf out = BUF_INIT;
	int rc = buf_append(&out, b->data, from);

	if (!rc)
		rc = buf_puts(&out, REDACT_MARK);
	if (!rc)
		rc = buf_append(&out, b->data + from + len, b->len - from - len);
	if (rc) {
		/* No memory: drop the fragment's side of the text instead. */
		buf_free_secret(&out);
		if (from == 0) {
			explicit_bzero(b->data, len);
			memmove(b->data, b->data + len, b->len - len);
		} else {
			explicit_bzero(b->data + from, len);
		}
		b->len -= len;
		b->data[b->len] = '\0';
		return;
	}
	buf_free_secret(b);
	*b = out;
}

void redact_cut_edges(const struct redactor *r, struct buf *b, bool cut_before, bool cut_after)
{
	size_t head = 0, tail = 0;

	if (!r || !r->n || !b->data || !b->len)
		return;
	for (size_t i = 0; i < r->n; i++) {
		const char *s = r->forms[i];
		size_t slen = strlen(s);

		for (size_t k = slen - 1; k > 0; k--) {
			if (k > b->len)
				continue;
			if (cut_before && k > head && memcmp(b->data, s + slen - k, k) == 0)
				head = k;
			if (cut_after && k > tail && memcmp(b->data + b->len - k, s, k) == 0)
				tail = k;
		}
	}
	if (head + tail > b->len)
		tail = b->len - head; /* one fragment covers all: mask it once */
	if (tail)
		mask_range(b, b->len - tail, tail);
	if (head)
		mask_range(b, 0, head);
}

/* Length of the longest tail of b that is a proper head of a secret form. */
static size_t secret_head_at_end(const struct redactor *r, const struct buf *b)
{
	size_t best = 0;

	for (size_t i = 0; i < r->n; i++) {
		size_t slen = strlen(r->forms[i]);
		for (size_t k = slen - 1; k > best; k--)
			if (k <= b->len && memcmp(b->data + b->len - k, r->forms[i], k) == 0) {
				best = k;
				break;
			}
	}
	return best;
}

int redact_stream_feed(struct redact_stream *s, const char *data, size_t n, struct buf *out)
{
	size_t hold, emit;
	int rc;

	if (!s->r || !s->r->n)
		return buf_append(out, data, n);
	if ((rc = buf_append(&s->pending, data, n)))
		return rc;
	redact_buf(s->r, &s->pending);
	/* Whole secrets are masked now; hold back only the longest tail that
	 * could still grow into one (a secret's head), so ordinary output
	 * shows at once. */
	hold = secret_head_at_end(s->r, &s->pending);
	if (s->pending.len <= hold)
		return 0;
	emit = s->pending.len - hold;
	if ((rc = buf_append(out, s->pending.data, emit)))
		return rc;
	memmove(s->pending.data, s->pending.data + emit, hold);
	explicit_bzero(s->pending.data + hold, emit);
	s->pending.len = hold;
	s->pending.data[hold] = '\0';
	return 0;
}

int redact_stream_finish(struct redact_stream *s, struct buf *out)
{
	int rc = 0;

	if (s->pending.len) {
		redact_buf(s->r, &s->pending);
		rc = buf_append(out, s->pending.data, s->pending.len);
	}
	buf_free_secret(&s->pending);
	return rc;
}
