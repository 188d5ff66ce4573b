/* Rules for what users may type (spec/filesystem.md). Each returns 0 or
 * -EINVAL with a message that says which rule was broken. */
#ifndef DBOSFS_VALIDATE_H
#define DBOSFS_VALIDATE_H

#include "common.h"

#define INSTANCE_NAME_MIN 3
#define INSTANCE_NAME_MAX 16
#define USERNAME_MAX      16
#define PASSWORD_MIN      8
#define PASSWORD_MAX      128

/* 3..16 of [a-z0-9_]. */
int validate_instance_name(const char *name, struct errmsg *e);
/* Same alphabet and length, starts with a letter, not a reserved name
 * (dbosadmin, dbos, postgres, admin, dbosfs). */
int validate_username(const char *user, struct errmsg *e);
/* 8..128 bytes, none of / " @ ' or whitespace, printable ASCII only. */
/* A database inside an instance: DBOS's app_db_name rule, 1 to 63 of
 * a-z, 0-9 and _, not starting with a digit. */
int validate_database_name(const char *name, struct errmsg *e);
int validate_password(const char *pw, struct errmsg *e);
/* A linked server's password (.dbosfs/link): the server is the judge, so
 * any 1..128 bytes but a line break (the password file is one line). */
int validate_linked_password(const char *pw, struct errmsg *e);

/* Strips exactly one trailing "\n" (what echo adds) from a written value of
 * len bytes into out (size outsz, NUL-terminated). -EINVAL if the value has
 * a NUL byte, another newline, or does not fit. */
int control_value(const char *data, size_t len, char *out, size_t outsz, struct errmsg *e);

#endif
