/* Unit tests for validate.c: every rule of spec/filesystem.md, with the
 * boundaries, and the messages users will read in last_error. */
#include <errno.h>
#include <string.h>

#include "tap.h"
#include "validate.h"

struct name_case {
	const char *value;
	int want;
	const char *msg_has; /* substring of the message, or NULL */
};

static void check_cases(int (*fn)(const char *, struct errmsg *), const struct name_case *c,
                        size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct errmsg e = {"untouched"};
		int rc = fn(c[i].value, &e);
		if (rc != c[i].want)
			fprintf(stderr, "  value '%s': got %d want %d (%s)\n",
			        c[i].value ? c[i].value : "(null)", rc, c[i].want, e.text);
		CHECK(rc == c[i].want);
		if (c[i].want == 0)
			CHECK(strcmp(e.text, "untouched") == 0); /* success leaves e alone */
		if (c[i].msg_has) {
			if (!strstr(e.text, c[i].msg_has))
				fprintf(stderr, "  message '%s' lacks '%s'\n", e.text,
				        c[i].msg_has);
			CHECK(strstr(e.text, c[i].msg_has) != NULL);
		}
	}
}

static void test_instance_names(void)
{
	static const struct name_case c[] = {
	    {"abc", 0, NULL},
	    {"ab", -EINVAL, "too short"},
	    {"ab", -EINVAL, "'ab'"},
	    {"a", -EINVAL, "at least 3"},
	    {"", -EINVAL, "empty"},
	    {NULL, -EINVAL, "empty"},
	    {"abcdefghijklmnop", 0, NULL},              /* 16 */
	    {"abcdefghijklmnopq", -EINVAL, "too long"}, /* 17 */
	    {"abcdefghijklmnopq", -EINVAL, "17 characters"},
	    {"abcdefghijklmnopq", -EINVAL, "'abcdefghijklmnopq'"},
	    {"my_db_1", 0, NULL},
	    {"123", 0, NULL}, /* digits first are fine for instances */
	    {"___", 0, NULL},
	    {"_db", 0, NULL},
	    {"MyDb", -EINVAL, "uppercase letter 'M'"},
	    {"myDb", -EINVAL, "position 3"},
	    {"my-db", -EINVAL, "'-'"},
	    {"my-db", -EINVAL, "'my-db'"},
	    {"my.db", -EINVAL, "'.'"},
	    {".dbosfs", -EINVAL, "'.'"},
	    {"my db", -EINVAL, "a space"},
	    {"my\tdb", -EINVAL, "a tab"},
	    {"mydb\n", -EINVAL, "line break"},
	    {"my/db", -EINVAL, "'/'"},
	    {"caf\xc3\xa9", -EINVAL, "byte 0xc3"},
	    {"caf\xc3\xa9", -EINVAL, "'caf\\xc3\\xa9'"}, /* escaped in the quote */
	    {"db\x01x", -EINVAL, "byte 0x01"},
	    {"a-", -EINVAL, "'-'"}, /* bad character beats length */
	};
	check_cases(validate_instance_name, c, sizeof(c) / sizeof(c[0]));

	/* A NULL errmsg is allowed. */
	CHECK(validate_instance_name("bad-name", NULL) == -EINVAL);
	CHECK(validate_instance_name("good_name", NULL) == 0);

	/* A huge value is quoted only in part. */
	char big[3000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	struct errmsg e;
	CHECK(validate_instance_name(big, &e) == -EINVAL);
	CHECK(strstr(e.text, "...'") != NULL);
	CHECK(strstr(e.text, "2999 characters") != NULL);
}

static void test_usernames(void)
{
	static const struct name_case c[] = {
	    {"dbos_user", 0, NULL},
	    {"abc", 0, NULL},
	    {"ab", -EINVAL, "too short"},
	    {"abcdefghijklmnop", 0, NULL},
	    {"abcdefghijklmnopq", -EINVAL, "too long"},
	    {"a12", 0, NULL},
	    {"1ab", -EINVAL, "must start with a letter"},
	    {"1ab", -EINVAL, "'1ab'"},
	    {"_ab", -EINVAL, "must start with a letter"},
	    {"Alice", -EINVAL, "uppercase"},
	    {"al-ice", -EINVAL, "'-'"},
	    {"al.ice", -EINVAL, "'.'"},
	    {"al ice", -EINVAL, "a space"},
	    {"\xc3\xa9lise", -EINVAL, "byte 0xc3"},
	    {"dbosadmin", -EINVAL, "reserved"},
	    {"dbos", -EINVAL, "reserved"},
	    {"postgres", -EINVAL, "reserved"},
	    {"postgres", -EINVAL, "'postgres'"},
	    {"admin", -EINVAL, "reserved"},
	    {"dbosfs", -EINVAL, "reserved"},
	    {"admins", 0, NULL}, /* only exact matches are reserved */
	    {"dbos_admin", 0, NULL},
	    {"postgres1", 0, NULL},
	    {"", -EINVAL, "empty"},
	    {NULL, -EINVAL, "empty"},
	};
	check_cases(validate_username, c, sizeof(c) / sizeof(c[0]));
}

static void test_passwords(void)
{
	static const struct name_case c[] = {
	    {"Passw0rd", 0, NULL},             /* 8 */
	    {"Passw0r", -EINVAL, "too short"}, /* 7 */
	    {"Passw0r", -EINVAL, "at least 8"},
	    {"", -EINVAL, "empty"},
	    {NULL, -EINVAL, "empty"},
	    {"abc-_.~!#$%^&*()+=[]{}|;:,<>?`", 0, NULL}, /* punctuation is fine */
	    {"has/slash1", -EINVAL, "'/'"},
	    {"has\"quote1", -EINVAL, "double quote"},
	    {"has@at_sign", -EINVAL, "'@'"},
	    {"has'apostrophe", -EINVAL, "single quote"},
	    {"has space1", -EINVAL, "whitespace"},
	    {"has\ttab123", -EINVAL, "whitespace"},
	    {"newline123\n", -EINVAL, "whitespace"},
	    {"cr12345678\r", -EINVAL, "whitespace"},
	    {"vtab12345\v", -EINVAL, "whitespace"},
	    {"bell123456\a", -EINVAL, "printable ASCII"},
	    {"del1234567\x7f", -EINVAL, "printable ASCII"},
	    {"p\xc3\xa4ssword", -EINVAL, "printable ASCII"},
	    {"back\\slash1", 0, NULL}, /* backslash is allowed by the spec */
	};
	check_cases(validate_password, c, sizeof(c) / sizeof(c[0]));

	char pw[200];
	struct errmsg e;
	memset(pw, 'p', sizeof(pw));
	pw[128] = '\0';
	CHECK(validate_password(pw, &e) == 0);
	pw[128] = 'p';
	pw[129] = '\0';
	CHECK(validate_password(pw, &e) == -EINVAL);
	CHECK(strstr(e.text, "too long") != NULL);
	CHECK(strstr(e.text, "129") != NULL);

	/* The message never repeats the password. */
	const char *secret = "Sup3rS3cret@value";
	CHECK(validate_password(secret, &e) == -EINVAL);
	CHECK(strstr(e.text, "Sup3r") == NULL);
	CHECK(strstr(e.text, "value") == NULL);
	CHECK(validate_password("Sh0rt", &e) == -EINVAL);
	CHECK(strstr(e.text, "Sh0rt") == NULL);
}

static void test_linked_passwords(void)
{
	static const struct name_case c[] = {
	    {"p@ss:w/rd\"x'y\\z with space", 0, NULL}, /* anything the server takes */
	    {"short", 0, NULL},
	    {"x", 0, NULL},
	    {"tab\there", 0, NULL},
	    {"p\xc3\xa4ssword", 0, NULL},
	    {"", -EINVAL, "empty"},
	    {NULL, -EINVAL, "empty"},
	    {"two\nlines", -EINVAL, "line break"},
	    {"cr\rhere", -EINVAL, "line break"},
	};
	check_cases(validate_linked_password, c, sizeof(c) / sizeof(c[0]));

	char pw[200];
	struct errmsg e;
	memset(pw, 'p', sizeof(pw));
	pw[128] = '\0';
	CHECK(validate_linked_password(pw, &e) == 0);
	pw[128] = 'p';
	pw[129] = '\0';
	CHECK(validate_linked_password(pw, &e) == -EINVAL);
	CHECK(strstr(e.text, "too long") != NULL);
	CHECK(validate_linked_password("Sup3r\nS3cret", &e) == -EINVAL);
	CHECK(strstr(e.text, "Sup3r") == NULL);
}

static void test_control_value(void)
{
	char out[16];
	struct errmsg e;

	CHECK(control_value("mydb\n", 5, out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "mydb") == 0);
	CHECK(control_value("mydb", 4, out, sizeof(out), &e) == 0); /* printf without \n */
	CHECK(strcmp(out, "mydb") == 0);
	CHECK(control_value("mydb\n\n", 6, out, sizeof(out), &e) == -EINVAL); /* only one */
	CHECK(strstr(e.text, "lines") != NULL);
	CHECK(control_value("a\nb\n", 4, out, sizeof(out), &e) == -EINVAL);
	CHECK(control_value("a\0b\n", 4, out, sizeof(out), &e) == -EINVAL);
	CHECK(strstr(e.text, "NUL") != NULL);
	CHECK(control_value("\n", 1, out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "") == 0);
	CHECK(control_value("", 0, out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "") == 0);
	CHECK(control_value(NULL, 0, out, sizeof(out), &e) == 0);
	/* Length boundary: 15 bytes fit in 16, 16 do not. */
	CHECK(control_value("123456789012345\n", 16, out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "123456789012345") == 0);
	CHECK(control_value("1234567890123456\n", 17, out, sizeof(out), &e) == -EINVAL);
	CHECK(strstr(e.text, "too long") != NULL);
	CHECK(control_value("1234567890123456", 16, out, sizeof(out), &e) == -EINVAL);
	/* A trailing \r is kept: the value is taken literally. */
	CHECK(control_value("ab\r\n", 4, out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "ab\r") == 0);
	/* Only len bytes are read: data need not be NUL-terminated. */
	CHECK(control_value("abcXYZ", 3, out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "abc") == 0);
}

/* DBOS's app_db_name rule. */
static void test_database_names(void)
{
	static const struct name_case c[] = {
	    {"a", 0, NULL},
	    {"app_db", 0, NULL},
	    {"_x1", 0, NULL},
	    {"", -EINVAL, "must not be empty"},
	    {"1db", -EINVAL, "must not start with a digit"},
	    {"My", -EINVAL, "'M'"},
	    {"a-b", -EINVAL, "'-'"},
	    {"a.b", -EINVAL, "'.'"},
	    {"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc", 0, NULL},
	    {"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd", -EINVAL,
	     "at most 63"},
	};
	check_cases(validate_database_name, c, sizeof(c) / sizeof(c[0]));
}

int main(void)
{
	test_database_names();
	test_instance_names();
	test_usernames();
	test_passwords();
	test_linked_passwords();
	test_control_value();
	return tap_done();
}
