/* The one redactor: whole secrets, encoded forms, fixed buffers, fragments
 * at a cut, and secrets split across stream chunks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redact.h"
#include "tap.h"

static void test_whole_and_encoded(void)
{
	struct redactor r = REDACTOR_INIT;
	struct buf b = BUF_INIT;

	CHECK(redactor_add(&r, "pa:ss#1") == 0);
	CHECK(redactor_add(&r, "") == 0 && redactor_add(&r, NULL) == 0);
	CHECK(r.n == 3); /* literal, %XX upper, %xx lower */
	buf_puts(&b, "a pa:ss#1 b pa%3Ass%231 c pa%3ass%231 d pa:ss");
	redact_buf(&r, &b);
	CHECK(strcmp(b.data, "a [redacted] b [redacted] c [redacted] d pa:ss") == 0);
	buf_free(&b);
	redactor_free(&r);
	CHECK(r.n == 0);

	/* A secret with nothing to encode has one form only. */
	CHECK(redactor_add(&r, "plain") == 0 && r.n == 1);
	redactor_free(&r);
}

static void test_fixed_text(void)
{
	char t[64];

	snprintf(t, sizeof(t), "bad token rt-SECRET, again rt-SECRET.");
	redact_text_secret(t, sizeof(t), "rt-SECRET");
	CHECK(strcmp(t, "bad token [redacted], again [redacted].") == 0);
	/* No room for the whole text: the end goes, the secret never shows. */
	snprintf(t, sizeof(t), "x rt-S y");
	redact_text_secret(t, 12, "rt-S");
	CHECK(strcmp(t, "x [redacted") == 0);
	snprintf(t, sizeof(t), "nothing here");
	redact_text_secret(t, sizeof(t), "");
	redact_text_secret(t, sizeof(t), NULL);
	CHECK(strcmp(t, "nothing here") == 0);
}

static void test_cut_edges(void)
{
	struct redactor r = REDACTOR_INIT;
	struct buf b = BUF_INIT;

	redactor_add(&r, "Secret123");
	/* A cut that left the secret's last characters at the start, and its
	 * first ones at the end. */
	buf_puts(&b, "t123 middle Secr");
	redact_cut_edges(&r, &b, true, true);
	CHECK(strcmp(b.data, "[redacted] middle [redacted]") == 0);
	buf_free(&b);
	/* Without a cut at that side, nothing is guessed. */
	buf_puts(&b, "t123 middle Secr");
	redact_cut_edges(&r, &b, false, false);
	CHECK(strcmp(b.data, "t123 middle Secr") == 0);
	buf_free(&b);
	/* The encoded form's fragment is found too. */
	redactor_free(&r);
	redactor_add(&r, "pw@host!x");
	buf_puts(&b, "%40host%21x rest");
	redact_cut_edges(&r, &b, true, false);
	CHECK(strcmp(b.data, "[redacted] rest") == 0);
	buf_free(&b);
	redactor_free(&r);
}

static void test_stream(void)
{
	struct redactor r = REDACTOR_INIT;
	struct redact_stream s = {&r, BUF_INIT};
	struct buf out = BUF_INIT;
	const char *text = "password is Hunter2Hunter2 and again Hunter2Hunter2!\n";

	redactor_add(&r, "Hunter2Hunter2");
	/* One byte at a time: every split point is tried. */
	for (const char *p = text; *p; p++)
		CHECK(redact_stream_feed(&s, p, 1, &out) == 0);
	CHECK(redact_stream_finish(&s, &out) == 0);
	CHECK(strcmp(out.data, "password is [redacted] and again [redacted]!\n") == 0);
	buf_free(&out);

	/* Bytes are held back only while they could grow into a secret. */
	s = (struct redact_stream){&r, BUF_INIT};
	redact_stream_feed(&s, "0123456789abcdefghijklmnop", 26, &out);
	CHECK(out.len == 26);
	redact_stream_feed(&s, "line Hunt", 9, &out);
	CHECK(out.len == 26 + 5);
	redact_stream_feed(&s, "er3", 3, &out); /* not the secret after all */
	CHECK(out.len == 26 + 12);
	redact_stream_finish(&s, &out);
	CHECK(out.len == 26 + 12);
	buf_free(&out);

	/* No secrets: a pass-through. */
	struct redactor none = REDACTOR_INIT;
	s = (struct redact_stream){&none, BUF_INIT};
	redact_stream_feed(&s, "abc", 3, &out);
	CHECK(out.len == 3);
	redact_stream_finish(&s, &out);
	buf_free(&out);
	redactor_free(&r);
}

int main(void)
{
	test_whole_and_encoded();
	test_fixed_text();
	test_cut_edges();
	test_stream();
	return tap_done();
}
