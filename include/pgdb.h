/* The databases inside one PostgreSQL server (NAME/databases/), in SQL:
 * list, CREATE DATABASE, DROP DATABASE with the connected sessions named.
 * Provider-neutral: each provider says where and as whom to connect (the
 * local one over its Unix socket as its own superuser, the cloud one over
 * TLS as the instance's admin with the saved password). */
#ifndef DBOSFS_PGDB_H
#define DBOSFS_PGDB_H

#include <libpq-fe.h>

#include "common.h"
#include "instance.h"

struct pgdb_target {
	const char *instance; /* the instance's name, for messages */
	const char *host;     /* host name, address or Unix socket directory */
	int port;
	const char *user;
	const char *password;    /* NULL: none (libpq's own sources are not used) */
	const char *sslmode;     /* "disable", "require", "verify-full" */
	const char *sslrootcert; /* verify-full: the CA bundle; else NULL */
	int connect_timeout_ms;
};

/* Connects to dbname on t: 0 and *out, or a negative errno with "cannot
 * connect to INSTANCE: why" in e. Through pg_connect (interruptible). */
int pgdb_connect(const struct pgdb_target *t, const char *dbname, PGconn **out, struct errmsg *e);
/* Every database but the templates, with their sizes (one query). */
int pgdb_list(const struct pgdb_target *t, struct database_list *out, struct errmsg *e);
/* CREATE DATABASE db OWNER owner; -EEXIST if it exists. */
int pgdb_create(const struct pgdb_target *t, const char *db, const char *owner, struct errmsg *e);
/* DROP DATABASE db; -EBUSY with the connected sessions named while there
 * are any, -ENOENT if there is no such database. */
int pgdb_drop(const struct pgdb_target *t, const char *db, struct errmsg *e);

#endif
