/* Control bytes in messages: one function makes a message safe to show on a
 * terminal and keeps it one line, for every log line, last_error and
 * stderr message. Whatever a user writes to a control file (ESC sequences,
 * BEL, a newline inside a name) comes back as visible text. */
#ifndef DBOSFS_ESCAPE_H
#define DBOSFS_ESCAPE_H

#include <stddef.h>

/* Copies msg into out (always NUL-terminated when outsz > 0) without its
 * trailing whitespace, each control byte written as a C escape: \n, \r, \t,
 * else \xHH (ESC is \x1b, DEL \x7f); the UTF-8 forms of the C1 controls
 * (U+0080..U+009F) as \xc2\xHH. Backslashes stay as they are. An escape
 * that does not fit whole is left out. Returns the length written. */
size_t escape_message(const char *msg, char *out, size_t outsz);

/* The size of out that holds any escaped msg of length len. */
#define ESCAPED_SIZE(len) (4 * (len) + 1)

#endif
