/* What users may type: instance names, usernames, passwords
 * (spec/filesystem.md). Messages name the broken rule; names are quoted
 * (escaped, so control bytes stay visible), passwords never are. */
#include "validate.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const reserved_usernames[] = {"dbosadmin", "dbos", "postgres", "admin",
                                                 /* local instances' internal superuser */
                                                 "dbosfs"};

/* Quotes s for a message: printable ASCII as is, other bytes as \xNN,
 * cut at 40 input bytes so a huge value cannot swamp the message. */
static const char *quote(const char *s, char *out, size_t outsz)
{
	size_t o = 0, i;

	out[o++] = '\'';
	for (i = 0; s[i] && i < 40 && o + 8 < outsz; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out[o++] = (char)c;
		} else {
			snprintf(out + o, outsz - o, "\\x%02x", c);
			o += 4;
		}
	}
	if (s[i] && o + 4 < outsz) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '\'';
	out[o] = '\0';
	return out;
}

/* Describes one byte for a message, e.g. "'A'" or "byte 0xc3". */
static const char *describe_char(unsigned char c, char *out, size_t outsz)
{
	if (c == ' ')
		snprintf(out, outsz, "a space");
	else if (c == '\t')
		snprintf(out, outsz, "a tab");
	else if (c == '\n' || c == '\r')
		snprintf(out, outsz, "a line break");
	else if (c == '\'')
		snprintf(out, outsz, "a single quote (')");
	else if (c == '"')
		snprintf(out, outsz, "a double quote (\")");
	else if (c > 0x20 && c < 0x7f)
		snprintf(out, outsz, "'%c'", c);
	else
		snprintf(out, outsz, "byte 0x%02x", c);
	return out;
}

static bool name_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Shared by instance names and usernames: alphabet and length. */
static int check_name_like(const char *what, const char *s, struct errmsg *e)
{
	char q[200], d[32];
	size_t len;

	if (!s || !*s)
		return errmsg_set(e, -EINVAL,
		                  "%s must not be empty (%d to %d characters of a-z, 0-9 and _)",
		                  what, INSTANCE_NAME_MIN, INSTANCE_NAME_MAX);
	len = strlen(s);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (name_char_ok(c))
			continue;
		if (c >= 'A' && c <= 'Z')
			return errmsg_set(
			    e, -EINVAL,
			    "%s %s contains the uppercase letter '%c' at position %zu; "
			    "only lowercase letters, digits and _ are allowed",
			    what, quote(s, q, sizeof(q)), c, i + 1);
		return errmsg_set(e, -EINVAL,
		                  "%s %s contains %s at position %zu; only lowercase letters, "
		                  "digits and _ are allowed",
		                  what, quote(s, q, sizeof(q)), describe_char(c, d, sizeof(d)),
		                  i + 1);
	}
	if (len < INSTANCE_NAME_MIN)
		return errmsg_set(e, -EINVAL,
		                  "%s %s is too short: %zu characters, at least %d needed", what,
		                  quote(s, q, sizeof(q)), len, INSTANCE_NAME_MIN);
	if (len > INSTANCE_NAME_MAX)
		return errmsg_set(e, -EINVAL,
		                  "%s %s is too long: %zu characters, at most %d allowed", what,
		                  quote(s, q, sizeof(q)), len, INSTANCE_NAME_MAX);
	return 0;
}

int validate_instance_name(const char *name, struct errmsg *e)
{
	return check_name_like("instance name", name, e);
}

int validate_username(const char *user, struct errmsg *e)
{
	char q[200];
	int rc = check_name_like("username", user, e);

	if (rc)
		return rc;
	if (!(user[0] >= 'a' && user[0] <= 'z'))
		return errmsg_set(e, -EINVAL, "username %s must start with a letter",
		                  quote(user, q, sizeof(q)));
	for (size_t i = 0; i < sizeof(reserved_usernames) / sizeof(reserved_usernames[0]); i++)
		if (strcmp(user, reserved_usernames[i]) == 0)
			return errmsg_set(e, -EINVAL,
			                  "username %s is reserved (dbosadmin, dbos, postgres, "
			                  "admin and dbosfs cannot be used)",
			                  quote(user, q, sizeof(q)));
	return 0;
}

int validate_password(const char *pw, struct errmsg *e)
{
	char d[32];
	size_t len;

	if (!pw || !*pw)
		return errmsg_set(e, -EINVAL, "password must not be empty (%d to %d characters)",
		                  PASSWORD_MIN, PASSWORD_MAX);
	len = strlen(pw);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)pw[i];
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
			return errmsg_set(e, -EINVAL,
			                  "password must not contain whitespace (found %s)",
			                  describe_char(c, d, sizeof(d)));
		if (c < 0x20 || c >= 0x7f)
			return errmsg_set(e, -EINVAL,
			                  "password must be printable ASCII (found a control or "
			                  "non-ASCII byte)");
		if (c == '/' || c == '"' || c == '@' || c == '\'')
			return errmsg_set(
			    e, -EINVAL,
			    "password must not contain %s; / \" @ and ' are not allowed",
			    describe_char(c, d, sizeof(d)));
	}
	if (len < PASSWORD_MIN)
		return errmsg_set(e, -EINVAL,
		                  "password is too short: %zu characters, at least %d needed", len,
		                  PASSWORD_MIN);
	if (len > PASSWORD_MAX)
		return errmsg_set(e, -EINVAL,
		                  "password is too long: %zu characters, at most %d allowed", len,
		                  PASSWORD_MAX);
	return 0;
}

int validate_linked_password(const char *pw, struct errmsg *e)
{
	if (!pw || !*pw)
		return errmsg_set(e, -EINVAL, "password must not be empty");
	/* NUL cannot get here (a C string); the URL decoder and the written
	 * line refuse it before. */
	if (strpbrk(pw, "\n\r"))
		return errmsg_set(e, -EINVAL,
		                  "password must not contain a line break (newline or carriage "
		                  "return): NAME/password and pgpass hold it on one line");
	size_t len = strlen(pw);
	if (len > PASSWORD_MAX)
		return errmsg_set(e, -EINVAL, "password is too long: %zu bytes, at most %d allowed",
		                  len, PASSWORD_MAX);
	return 0;
}

int control_value(const char *data, size_t len, char *out, size_t outsz, struct errmsg *e)
{
	if (len && data[len - 1] == '\n')
		len--;
	if (len && memchr(data, '\0', len))
		return errmsg_set(e, -EINVAL, "the written value contains a NUL byte");
	if (len && memchr(data, '\n', len))
		return errmsg_set(e, -EINVAL,
		                  "the written value spans several lines; write one line");
	if (outsz == 0 || len >= outsz)
		return errmsg_set(e, -EINVAL,
		                  "the written value is too long (%zu bytes, at most %zu)", len,
		                  outsz ? outsz - 1 : 0);
	if (len)
		memcpy(out, data, len);
	out[len] = '\0';
	return 0;
}

int validate_database_name(const char *name, struct errmsg *e)
{
	char q[200], d[32];
	size_t len = name ? strlen(name) : 0;

	if (len == 0)
		return errmsg_set(e, -EINVAL,
		                  "database name must not be empty (1 to 63 characters of a-z, "
		                  "0-9 and _, not starting with a digit)");
	for (size_t i = 0; i < len; i++)
		if (!name_char_ok((unsigned char)name[i]))
			return errmsg_set(e, -EINVAL,
			                  "database name %s contains %s at position %zu; only "
			                  "lowercase letters, digits and _ are allowed",
			                  quote(name, q, sizeof(q)),
			                  describe_char((unsigned char)name[i], d, sizeof(d)),
			                  i + 1);
	if (name[0] >= '0' && name[0] <= '9')
		return errmsg_set(e, -EINVAL, "database name %s must not start with a digit",
		                  quote(name, q, sizeof(q)));
	if (len > 63)
		return errmsg_set(
		    e, -EINVAL, "database name %s is too long: %zu characters, at most 63 allowed",
		    quote(name, q, sizeof(q)), len);
	return 0;
}
