/* Unit tests for escape.c: control bytes become visible escapes, the
 * message stays one line, and truncation never cuts an escape in half. */
#include <string.h>

#include "escape.h"
#include "tap.h"

static int same(const char *msg, const char *want)
{
	char out[256];
	size_t n = escape_message(msg, out, sizeof(out));
	if (strcmp(out, want) != 0 || n != strlen(want)) {
		fprintf(stderr, "  '%s' -> '%s', want '%s'\n", msg, out, want);
		return 0;
	}
	return 1;
}

int main(void)
{
	CHECK(same("plain text, 100%", "plain text, 100%"));
	CHECK(same("esc\x1b[31mred\x07", "esc\\x1b[31mred\\x07"));
	CHECK(same("a\nb\rc\td", "a\\nb\\rc\\td"));
	CHECK(same("del\x7f", "del\\x7f"));
	CHECK(same("nul-free \x01\x1f", "nul-free \\x01\\x1f"));
	CHECK(same("trailing newline and spaces \n\n  ", "trailing newline and spaces"));
	CHECK(same("csi\xc2\x9b"
	           "2J",
	           "csi\\xc2\\x9b2J"));
	CHECK(same("utf-8 stays: caf\xc3\xa9 \xc2\xa0", "utf-8 stays: caf\xc3\xa9 \xc2\xa0"));
	CHECK(same("back\\slash", "back\\slash"));
	CHECK(same("", ""));

	/* Truncation: whole escapes only, always terminated. */
	char small[6];
	CHECK(escape_message("ab\x1b"
	                     "cd",
	                     small, sizeof(small)) == 2);
	CHECK(strcmp(small, "ab") == 0);
	CHECK(escape_message("abcdefgh", small, sizeof(small)) == 5);
	CHECK(strcmp(small, "abcde") == 0);
	char one[1] = {'x'};
	CHECK(escape_message("abc", one, 1) == 0 && one[0] == '\0');

	/* Any input fits in ESCAPED_SIZE(len). */
	char all[256], big[ESCAPED_SIZE(255)];
	for (int i = 0; i < 255; i++)
		all[i] = (char)(i + 1);
	all[255] = '\0';
	size_t n = escape_message(all, big, sizeof(big));
	CHECK(n > 255 && n < sizeof(big));
	CHECK(strchr(big, '\n') == NULL && strchr(big, '\x1b') == NULL);
	return tap_done();
}
