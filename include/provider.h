/* The interface between the filesystem and where instances live. The
 * filesystem layer only ever talks to a struct provider; it never knows
 * whether it is the local PostgreSQL supervisor or DBOS Cloud.
 *
 * Every operation returns 0 or a negative errno and, on failure, fills the
 * errmsg with the full message (it ends up in NAME/last_error). Operations
 * may block (HTTP, starting a server) but must give up with -EINTR when
 * op_interrupted() turns true, and must never take minutes: asynchronous
 * work (cloud provisioning) returns once accepted.
 *
 * Life cycle:
 *   X_provider_create()  in the foreground, before daemonizing: validate
 *                        options, binaries, credentials, reachability. No
 *                        threads, no child processes yet (fork drops them).
 *   ops->start()         after daemonizing, before serving: threads, servers.
 *   ops->stop()          on unmount / SIGTERM: stop servers, join threads.
 *   ops->free()          release memory.
 * list/get/provision/destroy/reset_password may be called from many threads
 * at once; the provider does its own locking. */
#ifndef DBOSFS_PROVIDER_H
#define DBOSFS_PROVIDER_H

#include "buf.h"
#include "common.h"
#include "instance.h"

struct provider;
struct dbosfs_options;

/* .dbosfs/link: what to link (inputs validated by the fs layer). */
struct link_request {
	const char *name;         /* the instance name to serve it as */
	const char *admin;        /* the server's admin user */
	const char *password;     /* the admin's password */
	const char *host;         /* where the server listens */
	int port;                 /* its port */
	const char *supabase_ref; /* "" unless it is a Supabase project */
};

struct provider_ops {
	const char *kind; /* "local" or "cloud" */
	/* provision/destroy wait on a network: mkdir and rmdir return after
	 * the grace_ms option and let them finish in the background. */
	bool slow_mutations;
	int (*start)(struct provider *p, struct errmsg *e);
	void (*stop)(struct provider *p);
	void (*free)(struct provider *p);

	/* Every instance, in one call (cloud: one GET /databases). */
	int (*list)(struct provider *p, struct instance_list *out, struct errmsg *e);
	/* One instance; -ENOENT if there is none. */
	int (*get)(struct provider *p, const char *name, struct instance *out, struct errmsg *e);
	/* Create an instance with this admin user and password. Inputs are
	 * already validated. On success *out describes it (status may be
	 * "provisioning" for the cloud; "available" for local). -EEXIST if the
	 * name is taken. On failure nothing is left behind. */
	int (*provision)(struct provider *p, const char *name, const char *username,
	                 const char *password, struct instance *out, struct errmsg *e);
	/* Destroy (or, for a linked instance, unlink) irreversibly. */
	int (*destroy)(struct provider *p, const struct instance *inst, struct errmsg *e);
	/* The applications deployed on an instance, one line each, from the
	 * provider's own copy of its last applications list (refreshed with
	 * list(), never fetched here). NULL: the provider has none. */
	int (*apps)(struct provider *p, const char *name, struct buf *out);
	/* .dbosfs/link: serve the user's own server as instance req->name
	 * (linked: destroy only unlinks it, never drops data). -EEXIST if
	 * the name is taken; nothing left on failure. NULL: not supported. */
	int (*link)(struct provider *p, const struct link_request *req, struct instance *out,
	            struct errmsg *e);
	/* -EPERM for linked instances. */
	int (*reset_password)(struct provider *p, const struct instance *inst, const char *password,
	                      struct errmsg *e);

	/* The databases of an instance (NAME/databases/), templates left out.
	 * password is the admin's saved password or NULL; a provider that
	 * needs one and has none returns -ENODATA. NULL op: not supported. */
	int (*list_databases)(struct provider *p, const struct instance *inst, const char *password,
	                      struct database_list *out, struct errmsg *e);
	/* CREATE DATABASE db OWNER the instance's admin. -EEXIST if taken. */
	int (*create_database)(struct provider *p, const struct instance *inst,
	                       const char *password, const char *db, struct errmsg *e);
	/* DROP DATABASE db; -EBUSY (message naming the sessions) while
	 * clients are connected. */
	int (*drop_database)(struct provider *p, const struct instance *inst, const char *password,
	                     const char *db, struct errmsg *e);
	/* NAME/branch: newname becomes a copy of inst as it is now, with the
	 * same admin user and password; the source keeps serving. Inputs are
	 * validated. -EEXIST if the name is taken; nothing left on failure. */
	int (*branch)(struct provider *p, const struct instance *inst, const char *newname,
	              struct instance *out, struct errmsg *e);
	/* NAME/restore: newname becomes inst as it was at target_ms (ms since
	 * the epoch), with the admin password set to password (if not NULL).
	 * A time outside the window: -EINVAL with the window in e. */
	int (*restore)(struct provider *p, const struct instance *inst, long long target_ms,
	               const char *newname, const char *password, struct instance *out,
	               struct errmsg *e);
	/* The restorable window and the archive's size, from local state
	 * only (never waits on a server): served by NAME/restore and info. */
	int (*restore_window)(struct provider *p, const struct instance *inst,
	                      long long *earliest_ms, long long *latest_ms,
	                      long long *archive_bytes, struct errmsg *e);
	/* Whether the instance's data is on disk: "yes", "pending" (a
	 * branch or restore still being flushed in the background) or "no",
	 * and for an instance the provider will not start, why (for
	 * last_error; "" otherwise). From memory only. NULL: not tracked. */
	void (*durability)(struct provider *p, const char *name, char *durable, size_t dsz,
	                   char *why, size_t wsz);
};

struct provider {
	const struct provider_ops *ops;
	void *priv;
	/* Filled by create(), served as .dbosfs/provider and .dbosfs/account
	 * (one line each, no trailing newline). Never network at read time. */
	char provider_line[512];
	char account[512];
	/* Subdirectory of state_dir/passwords/ where this provider's instance
	 * passwords are saved: "local", or "cloud-HOST-ORG" (safe characters). */
	char secret_scope[256];
	/* The CA that signed the provider's servers' certificates (local: a
	 * CA of its own), served as NAME/ca.pem and named by url and env; ""
	 * when clients use their usual CA list (cloud). */
	char ca_file[4096];
};

/* ---- The registry (src/provider/registry.c) -------------------------------
 * Each provider brings its -o keys (a fuse_opt table whose offsets point
 * into its own options struct), their --help lines, and create(). main.c
 * knows only provider_kinds: it parses the shared options, then the chosen
 * provider's keys, and refuses the keys of the others. */
struct fuse_opt;

struct provider_kind {
	const char *name; /* the value of -o provider= */
	const struct fuse_opt *opts;
	size_t opts_size;             /* sizeof its options struct */
	void (*init_opts)(void *own); /* defaults, before parsing */
	void (*free_opts)(void *own); /* what fuse_opt_parse allocated */
	const char *help;             /* "    -o key=VALUE   what\n" lines */
	/* In the foreground, before daemonizing (see the life cycle above). */
	int (*create)(const struct dbosfs_options *opt, const void *own, struct provider **out,
	              struct errmsg *e);
};

/* Every provider, NULL-terminated; the first is the default. */
extern const struct provider_kind *const provider_kinds[];
/* NULL if there is none by that name. */
const struct provider_kind *provider_kind_find(const char *name);
/* The provider a key=value option belongs to, other than except (NULL if
 * none): for refusing another provider's keys. */
const struct provider_kind *provider_kind_owning(const char *option,
                                                 const struct provider_kind *except);

/* -o keys of provider=local. */
struct local_options {
	char *pg_bindir;   /* NULL: pg_config --bindir if it has initdb, else newest
	                      /usr/lib/postgresql/N/bin */
	char *pg_user;     /* servers run as this account when we are root */
	char *pitr_window; /* how far back restore reaches ("7d"; "0" off) */
	int spares;        /* running spare servers kept ready (default 2; 0: none) */
};
extern const struct provider_kind local_provider_kind;
int local_provider_create(const struct dbosfs_options *opt, const void *own, struct provider **out,
                          struct errmsg *e);

/* -o keys of provider=cloud. */
struct cloud_options {
	char *credentials; /* NULL: ./.dbos/credentials, then ~/.dbos/credentials */
	char *domain;      /* API host; NULL: $DBOS_DOMAIN, else cloud.dbos.dev */
	char *auth_domain; /* NULL: login.dbos.dev for cloud.dbos.dev, else
	                      dbos-inc.us.auth0.com (tests point it elsewhere) */
	char *cafile;      /* extra CA bundle */
};
extern const struct provider_kind cloud_provider_kind;
int cloud_provider_create(const struct dbosfs_options *opt, const void *own, struct provider **out,
                          struct errmsg *e);

#endif
