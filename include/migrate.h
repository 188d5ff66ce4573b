/* Schema migrations: dbos-config.yaml's database.migrate / database.rollback
 * command lists, run against one instance (spec/filesystem.md, migrate). */
#ifndef DBOSFS_MIGRATE_H
#define DBOSFS_MIGRATE_H

#include <stddef.h>

#include "buf.h"
#include "common.h"

struct app_config {
	char *app_dir;     /* absolute application directory */
	char *config_path; /* absolute path of dbos-config.yaml */
	char *name;        /* "name", may be NULL */
	char *app_db_name; /* database.app_db_name, else derived from name */
	char **migrate;    /* database.migrate commands */
	size_t n_migrate;
	char **rollback; /* database.rollback commands */
	size_t n_rollback;
};

/* Loads PATH (an application directory, or the YAML file itself; must be
 * absolute). ${VAR} is replaced from the environment before parsing.
 * -EINVAL for a relative path or malformed YAML (message has file, line and
 * column), wrong types, or no usable database name; -ENOENT for a missing
 * directory or file. */
int app_config_load(const char *path, struct app_config *out, struct errmsg *e);
void app_config_free(struct app_config *c);

/* ${VAR} substitution as DBOS does it (unset: empty). Appends to out. */
int expand_env_vars(const char *in, size_t len, struct buf *out);

enum migrate_kind { MIGRATE_UP, MIGRATE_ROLLBACK };

/* Where the commands connect. The password only ever travels through the
 * child's environment (PGPASSWORD, DBOS_DATABASE_URL). */
struct migrate_target {
	const char *host;
	int port;
	const char *user;
	const char *password;
};

/* Loads the config at path, creates the application database if missing,
 * runs each command of the chosen list as /bin/sh -c CMD in the application
 * directory (own process group), stopping at the first failure.
 * report receives the human-readable record served when the file is read:
 * start/end times, each command, its bounded output, its exit status and a
 * final "result: ..." line. Never contains a secret.
 * Returns 0; -EINVAL/-ENOENT (bad input, nothing run); -EIO (a command
 * failed, or the database could not be reached/created); -EINTR (interrupted:
 * the running command's process group was killed and reaped). */
int migrate_run(enum migrate_kind kind, const char *path, const struct migrate_target *t,
                struct buf *report, struct errmsg *e);

#endif
