/* NAME/databases/ on the local provider: the databases inside one
 * instance, listed, created and dropped over the instance's own Unix
 * socket, as dbosfs's own superuser (local_security.h). */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "pg.h"
#include "provider.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DB_CONNECT_TIMEOUT_MS 2000 /* the refresher asks every period: stay short */
#define DB_QUERY_TIMEOUT_MS   10000
#define DB_DDL_TIMEOUT_MS     60000 /* CREATE DATABASE copies template1 */

int local_admin_connect(struct local_provider *lp, const char *name, const char *dbname,
                        int timeout_ms, PGconn **out, struct errmsg *e)
{
	char sock[PATH_MAX], portstr[16], user[64], status[32];
	int port = 0;
	bool running = false;

	pthread_mutex_lock(&lp->lock);
	struct local_instance *li = find_locked(lp, name);
	if (li && !li->hidden) {
		port = li->port;
		snprintf(user, sizeof(user), "%s", li->username);
		snprintf(status, sizeof(status), "%s", li->status);
		running = li->pid > 0 && strcmp(li->status, "available") == 0;
	}
	pthread_mutex_unlock(&lp->lock);
	if (!port)
		return errmsg_set(e, -ENOENT, "no instance named %s", name);
	if (!running)
		return errmsg_set(e, -EBUSY, "instance %s is %s, not available", name, status);
	inst_paths(lp, name, NULL, NULL, sock, NULL);
	snprintf(portstr, sizeof(portstr), "%d", port);
	/* dbosfs's own superuser (local_security.h): the admin's password
	 * is not ours to keep, and nothing local is trusted. */
	const char *keys[] = {"host",   "port",    "user",       "password",
	                      "dbname", "sslmode", "gssencmode", "application_name",
	                      NULL};
	const char *vals[] = {sock,   portstr,   LOCAL_SUPERUSER, lp->su_password,
	                      dbname, "disable", "disable",       "dbosfs",
	                      NULL};
	struct errmsg pe = {{0}};
	int rc = pg_connect(keys, vals, timeout_ms, NULL, out, &pe);
	if (rc)
		return errmsg_set(e, rc, "cannot connect to %s: %s", name, pe.text);
	return 0;
}

static struct local_provider *LP(struct provider *p)
{
	return p->priv;
}

int local_list_databases(struct provider *p, const struct instance *inst, const char *password,
                         struct database_list *out, struct errmsg *e)
{
	PGconn *c;
	PGresult *res = NULL;
	int rc = local_admin_connect(LP(p), inst->name, "postgres", DB_CONNECT_TIMEOUT_MS, &c, e);
	if (rc)
		return rc;
	/* One query per instance per refresh: names and sizes together. */
	rc = pg_query(c,
	              "SELECT datname, pg_database_size(oid) FROM pg_database "
	              "WHERE NOT datistemplate ORDER BY datname",
	              0, NULL, DB_QUERY_TIMEOUT_MS, NULL, &res, e);
	PQfinish(c);
	if (rc)
		return rc;
	int n = PQntuples(res);
	out->items = calloc(n ? (size_t)n : 1, sizeof(*out->items));
	if (!out->items) {
		PQclear(res);
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	out->count = 0;
	for (int i = 0; i < n; i++) {
		struct database_info *d = &out->items[out->count++];
		snprintf(d->name, sizeof(d->name), "%s", PQgetvalue(res, i, 0));
		d->size = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	PQclear(res);
	return 0;
}

int local_create_database(struct provider *p, const struct instance *inst, const char *password,
                          const char *db, struct errmsg *e)
{
	PGconn *c;
	char user[64] = "", *sql = NULL;
	int rc = local_admin_connect(LP(p), inst->name, "postgres", DB_CONNECT_TIMEOUT_MS, &c, e);
	if (rc)
		return rc;
	snprintf(user, sizeof(user), "%s", inst->username);
	char *qdb = PQescapeIdentifier(c, db, strlen(db));
	char *quser = PQescapeIdentifier(c, user, strlen(user));
	if (!qdb || !quser || asprintf(&sql, "CREATE DATABASE %s OWNER %s", qdb, quser) < 0) {
		sql = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
	} else {
		PGresult *res = NULL;
		rc = pg_query(c, sql, 0, NULL, DB_DDL_TIMEOUT_MS, NULL, &res, e);
		PQclear(res);
	}
	free(sql);
	PQfreemem(qdb);
	PQfreemem(quser);
	PQfinish(c);
	if (rc == -EEXIST)
		errmsg_set(e, rc, "database %s already exists in %s", db, inst->name);
	return rc;
}

/* "pid 123 (user u, application psql, from 127.0.0.1), ..." for a message. */
static void describe_sessions(PGconn *c, const char *db, char *out, size_t outsz, int *count)
{
	PGresult *res = NULL;
	const char *params[] = {db};
	size_t o = 0;

	out[0] = '\0';
	*count = 0;
	if (pg_query(c,
	             "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), "
	             "coalesce(host(client_addr), 'local socket') FROM pg_stat_activity "
	             "WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY pid",
	             1, params, DB_QUERY_TIMEOUT_MS, NULL, &res, NULL) != 0 ||
	    !res)
		return;
	*count = PQntuples(res);
	for (int i = 0; i < *count && o + 1 < outsz; i++) {
		int w = snprintf(out + o, outsz - o, "%spid %s (user %s, application %s, from %s)",
		                 i ? ", " : "", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
		                 PQgetvalue(res, i, 2)[0] ? PQgetvalue(res, i, 2) : "unnamed",
		                 PQgetvalue(res, i, 3));
		if (w < 0)
			break;
		o += (size_t)w;
	}
	PQclear(res);
}

int local_drop_database(struct provider *p, const struct instance *inst, const char *password,
                        const char *db, struct errmsg *e)
{
	PGconn *c;
	char *sql = NULL, sessions[768];
	int count = 0;
	int rc = local_admin_connect(LP(p), inst->name, "postgres", DB_CONNECT_TIMEOUT_MS, &c, e);
	if (rc)
		return rc;
	/* DROP DATABASE refuses while sessions are connected (55006); the
	 * sessions are named first, so the message says whose they are. */
	describe_sessions(c, db, sessions, sizeof(sessions), &count);
	if (count > 0) {
		PQfinish(c);
		return errmsg_set(e, -EBUSY,
		                  "database %s of %s has %d connected session%s: %s; disconnect "
		                  "them first",
		                  db, inst->name, count, count == 1 ? "" : "s", sessions);
	}
	char *qdb = PQescapeIdentifier(c, db, strlen(db));
	if (!qdb || asprintf(&sql, "DROP DATABASE %s", qdb) < 0) {
		sql = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
	} else {
		PGresult *res = NULL;
		rc = pg_query(c, sql, 0, NULL, DB_DDL_TIMEOUT_MS, NULL, &res, e);
		PQclear(res);
		if (rc == -EBUSY) {
			/* A client connected between the check and the drop. */
			describe_sessions(c, db, sessions, sizeof(sessions), &count);
			errmsg_set(e, -EBUSY, "database %s of %s has connected sessions: %s", db,
			           inst->name,
			           count ? sessions : "(they left meanwhile; try again)");
		} else if (rc == -ENOENT) {
			errmsg_set(e, rc, "no database %s in %s", db, inst->name);
		}
	}
	free(sql);
	PQfreemem(qdb);
	PQfinish(c);
	if (!rc)
		log_event("local: instance %s: database %s dropped", inst->name, db);
	return rc;
}
