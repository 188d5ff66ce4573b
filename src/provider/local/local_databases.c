/* NAME/databases/ on the local provider: the databases inside one
 * instance, listed, created and dropped (util/pgdb.c) over the instance's
 * own Unix socket, as dbosfs's own superuser (local_security.h); on a
 * linked server (local_link.c), over TCP as its admin with the saved
 * password. */
#include "local_internal.h"
#include "local_security.h"
#include "pg.h"
#include "pgdb.h"
#include "provider.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DB_CONNECT_TIMEOUT_MS 2000 /* the refresher asks every period: stay short */

/* Where and as whom to reach instance name's server; the strings live in
 * the struct. -ENOENT without the instance, -EBUSY unless it runs
 * (-ENODATA: a linked server whose admin password this mount lacks). */
struct admin_target {
	char sock[PATH_MAX]; /* or a linked server's host */
	char user[64];       /* a linked server's admin */
	struct pgdb_target t;
};

static int admin_target(struct local_provider *lp, const char *name, const char *password,
                        struct admin_target *a, struct errmsg *e)
{
	char status[32];
	int port = 0;
	bool running = false, linked = false;

	pthread_mutex_lock(&lp->lock);
	struct local_instance *li = find_locked(lp, name);
	if (li && !li->hidden) {
		port = li->port;
		linked = li->linked;
		if (linked) {
			snprintf(a->sock, sizeof(a->sock), "%s", li->host);
			snprintf(a->user, sizeof(a->user), "%s", li->username);
		}
		snprintf(status, sizeof(status), "%s", li->status);
		running = (li->pid > 0 || linked) && strcmp(li->status, "available") == 0;
	}
	pthread_mutex_unlock(&lp->lock);
	if (!port)
		return errmsg_set(e, -ENOENT, "no instance named %s", name);
	if (!running)
		return errmsg_set(e, -EBUSY, "instance %s is %s, not available", name, status);
	if (linked) {
		/* Not our server: no superuser of ours there. The admin it was
		 * linked with, its saved password, libpq's default sslmode. */
		if (!password)
			return errmsg_set(e, -ENODATA,
			                  "this mount does not know the password of linked %s",
			                  name);
		a->t = (struct pgdb_target){
		    .instance = name,
		    .host = a->sock,
		    .port = port,
		    .user = a->user,
		    .password = password,
		    .sslmode = "prefer",
		    .connect_timeout_ms = DB_CONNECT_TIMEOUT_MS,
		};
		return 0;
	}
	inst_paths(lp, name, NULL, NULL, a->sock, NULL);
	/* dbosfs's own superuser (local_security.h): the admin's password
	 * is not ours to keep, and nothing local is trusted. */
	a->t = (struct pgdb_target){
	    .instance = name,
	    .host = a->sock,
	    .port = port,
	    .user = LOCAL_SUPERUSER,
	    .password = lp->su_password,
	    .sslmode = "disable",
	    .connect_timeout_ms = DB_CONNECT_TIMEOUT_MS,
	};
	return 0;
}

int local_admin_connect(struct local_provider *lp, const char *name, const char *dbname,
                        int timeout_ms, PGconn **out, struct errmsg *e)
{
	struct admin_target a;
	int rc = admin_target(lp, name, NULL, &a, e);
	if (rc)
		return rc;
	a.t.connect_timeout_ms = timeout_ms;
	return pgdb_connect(&a.t, dbname, out, e);
}

static struct local_provider *LP(struct provider *p)
{
	return p->priv;
}

int local_list_databases(struct provider *p, const struct instance *inst, const char *password,
                         struct database_list *out, struct errmsg *e)
{
	struct admin_target a;
	int rc = admin_target(LP(p), inst->name, password, &a, e);
	return rc ? rc : pgdb_list(&a.t, out, e);
}

int local_create_database(struct provider *p, const struct instance *inst, const char *password,
                          const char *db, struct errmsg *e)
{
	struct admin_target a;
	int rc = admin_target(LP(p), inst->name, password, &a, e);
	return rc ? rc : pgdb_create(&a.t, db, inst->username, e);
}

int local_drop_database(struct provider *p, const struct instance *inst, const char *password,
                        const char *db, struct errmsg *e)
{
	struct admin_target a;
	int rc = admin_target(LP(p), inst->name, password, &a, e);
	return rc ? rc : pgdb_drop(&a.t, db, e);
}
