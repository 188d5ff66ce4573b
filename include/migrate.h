/* Schema migrations: dbos-config.yaml's database.migrate / database.rollback
 * command lists, run against one instance (spec/filesystem.md, migrate). */
#ifndef DBOSFS_MIGRATE_H
#define DBOSFS_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "common.h"

struct app_config {
	char *app_dir;     /* absolute application directory */
	char *config_path; /* absolute path of dbos-config.yaml */
	char *name;        /* "name", else package.json's "name"; may be NULL */
	bool name_from_package_json;
	/* database.app_db_name, else the database of database_url, else
	 * derived from name (as DBOS does). */
	char *app_db_name;
	const char *app_db_origin; /* which of those, for messages */
	/* The database of system_database_url, else APPDB_dbos_sys as the DBOS
	 * SDK derives it from name; NULL when neither exists. */
	char *sys_db_name;
	bool sys_db_from_url; /* named by system_database_url */
	char **migrate;       /* database.migrate commands */
	size_t n_migrate;
	char **rollback; /* database.rollback commands */
	size_t n_rollback;
};

/* Hostile YAML is refused before parsing gets expensive: libyaml's parse
 * is quadratic in nesting depth. */
#define CONFIG_MAX_DEPTH 64
#define CONFIG_MAX_NODES 20000

/* Loads PATH (an application directory, or the YAML file itself; must be
 * absolute). ${VAR} is replaced from env (a NULL-terminated "K=V" array;
 * NULL: the daemon's environment) before parsing.
 * -EINVAL for a relative path or malformed YAML (message has file, line and
 * column), wrong types, too deep or too many nodes, or no usable database
 * name; -ENOENT for a missing directory or file; -EINTR when interrupted. */
int app_config_load(const char *path, char *const *env, struct app_config *out, struct errmsg *e);
void app_config_free(struct app_config *c);

/* ${VAR} substitution as DBOS (config.ts substituteEnvVars) does it: an
 * unset or empty variable becomes "" (two double quotes). Appends to out. */
int expand_env_vars(const char *in, size_t len, char *const *env, struct buf *out);
/* The value of name in a "K=V" array, or NULL. */
const char *env_lookup(char *const *env, const char *name);

enum migrate_kind { MIGRATE_UP, MIGRATE_ROLLBACK };

/* Where the commands connect. The password only ever travels through the
 * child's environment (PGPASSWORD, DBOS_DATABASE_URL). */
struct migrate_target {
	const char *host;
	int port;
	const char *user;
	const char *password;
	/* NULL, or the CA of the server's certificate: the commands then get
	 * PGSSLMODE=verify-full, PGSSLROOTCERT and NODE_EXTRA_CA_CERTS. */
	const char *ca_file;
};

/* Loads the config at path, creates the application database if missing,
 * runs each command of the chosen list as /bin/sh -c CMD in the application
 * directory (own process group, as the writer, in the writer's
 * environment), stopping at the first failure, then creates the DBOS system
 * database (even after a failure, as the DBOS CLI does).
 * report receives the human-readable record served when the file is read:
 * start/end times, each command, its bounded output, its exit status and a
 * final "result: ..." line. Never contains a secret.
 * Returns 0; -EINVAL/-ENOENT (bad input, nothing run); -EIO (a command
 * failed, or the database could not be reached/created); -EINTR (interrupted:
 * the running command's process group got SIGINT, SIGTERM, SIGKILL in turn
 * and was reaped; then the statements its sessions left running on the
 * server were cancelled). */
struct migrate_request {
	enum migrate_kind kind;
	const char *path; /* as written; relative to the writer's cwd */
	const struct migrate_target *target;
	/* The writer (FUSE caller). pid 0: unknown, use the daemon's world. */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	/* Called with the report so far whenever it grows (live reads). The
	 * text only ever grows until the run ends. */
	void (*progress)(void *ctx, const char *report);
	void *progress_ctx;
};

int migrate_run(const struct migrate_request *req, struct buf *report, struct errmsg *e);

/* Where running migrations are recorded (STATE_DIR/migrate), so that a
 * daemon killed mid-run is cleaned up after by the next mount. Call once at
 * start, before any run: kills every process of a run an earlier daemon
 * left (its process group, and anything carrying its run tag in its
 * environment). Returns the number of processes killed. */
int migrate_init(const char *state_dir);

#endif
