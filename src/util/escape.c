/* escape_message (include/escape.h). */
#include "escape.h"

#include <stdio.h>
#include <string.h>

static size_t put(char *out, size_t outsz, size_t at, const char *s, size_t n)
{
	if (at + n >= outsz)
		return 0; /* a whole escape or nothing */
	memcpy(out + at, s, n);
	return n;
}

size_t escape_message(const char *msg, char *out, size_t outsz)
{
	if (outsz == 0)
		return 0;
	size_t len = strlen(msg);
	while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r' || msg[len - 1] == ' ' ||
	               msg[len - 1] == '\t'))
		len--;
	size_t at = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)msg[i];
		char esc[12];
		size_t n;
		if (c == '\n')
			n = put(out, outsz, at, "\\n", 2);
		else if (c == '\r')
			n = put(out, outsz, at, "\\r", 2);
		else if (c == '\t')
			n = put(out, outsz, at, "\\t", 2);
		else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			n = put(out, outsz, at, esc, 4);
		} else if (c == 0xc2 && i + 1 < len && (unsigned char)msg[i + 1] >= 0x80 &&
		           (unsigned char)msg[i + 1] <= 0x9f) {
			snprintf(esc, sizeof(esc), "\\xc2\\x%02x", (unsigned char)msg[i + 1]);
			n = put(out, outsz, at, esc, 8);
			i += n ? 1 : 0;
		} else {
			n = put(out, outsz, at, (const char *)&c, 1);
		}
		if (n == 0)
			break;
		at += n;
	}
	out[at] = '\0';
	return at;
}
