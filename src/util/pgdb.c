/* The databases inside one server: see include/pgdb.h. */
#include "pgdb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

#define PGDB_QUERY_TIMEOUT_MS 10000
#define PGDB_DDL_TIMEOUT_MS   60000 /* CREATE DATABASE copies template1 */

int pgdb_connect(const struct pgdb_target *t, const char *dbname, PGconn **out, struct errmsg *e)
{
	char portstr[16];
	const char *keys[10], *vals[10];
	int n = 0;

	snprintf(portstr, sizeof(portstr), "%d", t->port);
#define KV(k, v)                                                                                   \
	do {                                                                                       \
		keys[n] = (k);                                                                     \
		vals[n++] = (v);                                                                   \
	} while (0)
	KV("host", t->host);
	KV("port", portstr);
	KV("user", t->user);
	KV("password", t->password ? t->password : "");
	KV("dbname", dbname);
	KV("sslmode", t->sslmode);
	KV("gssencmode", "disable");
	KV("application_name", "dbosfs");
	if (t->sslrootcert)
		KV("sslrootcert", t->sslrootcert);
#undef KV
	keys[n] = vals[n] = NULL;
	struct errmsg pe = {{0}};
	int rc = pg_connect(keys, vals, t->connect_timeout_ms, NULL, out, &pe);
	if (rc)
		return errmsg_set(e, rc, "cannot connect to %s: %s", t->instance, pe.text);
	return 0;
}

int pgdb_list(const struct pgdb_target *t, struct database_list *out, struct errmsg *e)
{
	PGconn *c;
	PGresult *res = NULL;
	int rc = pgdb_connect(t, "postgres", &c, e);
	if (rc)
		return rc;
	/* One query per instance per refresh: names and sizes together. */
	rc = pg_query(c,
	              "SELECT datname, pg_database_size(oid) FROM pg_database "
	              "WHERE NOT datistemplate ORDER BY datname",
	              0, NULL, PGDB_QUERY_TIMEOUT_MS, NULL, &res, e);
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

/* "VERB DATABASE db [OWNER owner]", the names quoted, run with the DDL
 * timeout. 0, or pg_query's errno (SQLSTATEs mapped) with its message. */
static int run_ddl(PGconn *c, const char *verb, const char *db, const char *owner, struct errmsg *e)
{
	char *sql = NULL, *qdb = PQescapeIdentifier(c, db, strlen(db));
	char *qowner = owner ? PQescapeIdentifier(c, owner, strlen(owner)) : NULL;
	int rc;

	if (!qdb || (owner && !qowner) ||
	    asprintf(&sql, "%s DATABASE %s%s%s", verb, qdb, owner ? " OWNER " : "",
	             owner ? qowner : "") < 0) {
		sql = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
	} else {
		PGresult *res = NULL;
		rc = pg_query(c, sql, 0, NULL, PGDB_DDL_TIMEOUT_MS, NULL, &res, e);
		PQclear(res);
	}
	free(sql);
	PQfreemem(qdb);
	PQfreemem(qowner);
	return rc;
}

int pgdb_create(const struct pgdb_target *t, const char *db, const char *owner, struct errmsg *e)
{
	PGconn *c;
	int rc = pgdb_connect(t, "postgres", &c, e);
	if (rc)
		return rc;
	rc = run_ddl(c, "CREATE", db, owner, e);
	PQfinish(c);
	if (rc == -EEXIST)
		errmsg_set(e, rc, "database %s already exists in %s", db, t->instance);
	return rc;
}

/* "pid 123 (user u, application psql, from 127.0.0.1), ..." for a message.
 * A role that may not see others' sessions' details still sees their pids. */
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
	             1, params, PGDB_QUERY_TIMEOUT_MS, NULL, &res, NULL) != 0 ||
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

int pgdb_drop(const struct pgdb_target *t, const char *db, struct errmsg *e)
{
	PGconn *c;
	char sessions[768];
	int count = 0;
	int rc = pgdb_connect(t, "postgres", &c, e);
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
		                  db, t->instance, count, count == 1 ? "" : "s", sessions);
	}
	rc = run_ddl(c, "DROP", db, NULL, e);
	if (rc == -EBUSY) {
		/* A client connected between the check and the drop. */
		describe_sessions(c, db, sessions, sizeof(sessions), &count);
		errmsg_set(e, -EBUSY, "database %s of %s has connected sessions: %s", db,
		           t->instance, count ? sessions : "(they left meanwhile; try again)");
	} else if (rc == -ENOENT) {
		errmsg_set(e, rc, "no database %s in %s", db, t->instance);
	}
	PQfinish(c);
	return rc;
}
