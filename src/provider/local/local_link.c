/* .dbosfs/link on the local provider: adopting a PostgreSQL server that
 * dbosfs does not run. A linked instance is STATE_DIR/local/instances/NAME/
 * with only a meta file ("linked=1", host, port, admin); its password is
 * saved like any instance's. dbosfs never starts, stops or restarts it,
 * never creates roles or edits pg_hba.conf on it, and unlinking removes
 * only those two files: the server and its data stay as they are.
 *
 * Crash safety (local_intent.c): an intent record "link" is written before
 * the directory; recovery undoes a link it finds (directory and saved
 * password go), so a kill -9 leaves nothing or, once the record is gone,
 * a complete linked instance. Unlinking is "unlink", finished by
 * recovery the same way. */
#include "local_internal.h"
#include "log.h"
#include "pg.h"
#include "proc.h"
#include "provider.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long verifying a server may take: a host that drops packets must not
 * hold the writer (and the mount root's lock is not held by a write) for
 * long. */
#define LINK_CONNECT_TIMEOUT_MS 10000
#define LINK_QUERY_TIMEOUT_MS   10000

/* The libpq message of a failed connect says which kind of failure it was;
 * libpq gives no SQLSTATE before a connection exists. */
static int classify_connect_failure(int rc, const char *msg)
{
	if (rc != -EIO)
		return rc; /* -ETIMEDOUT, -EINTR, -ENOMEM */
	if (strstr(msg, "authentication failed") || strstr(msg, "pg_hba.conf") ||
	    strstr(msg, "password") || strstr(msg, "permission denied") ||
	    strstr(msg, "not permitted to log in"))
		return -EACCES;
	if (strstr(msg, "translate host name") || strstr(msg, "Name or service not known"))
		return -EHOSTUNREACH;
	if (strstr(msg, "does not exist"))
		return -ENOENT; /* the role or the database */
	return -ECONNREFUSED;
}

int local_connect_linked(const char *host, int port, const char *user, const char *password,
                         const char *dbname, int timeout_ms, const atomic_bool *cancel,
                         PGconn **out, struct errmsg *e)
{
	char portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	/* libpq's default sslmode (prefer): a linked server has certificates of
	 * its own, which our CA did not sign. No passfile: the password is the
	 * one the user gave us. */
	const char *keys[] = {"host",    "port",     "user",       "password",         "dbname",
	                      "sslmode", "passfile", "gssencmode", "application_name", NULL};
	const char *vals[] = {host,     portstr,     user,      password, dbname,
	                      "prefer", "/dev/null", "disable", "dbosfs", NULL};
	struct errmsg pe = {{0}};
	int rc = pg_connect(keys, vals, timeout_ms, cancel, out, &pe);
	if (rc)
		return errmsg_set(e, classify_connect_failure(rc, pe.text), "%s", pe.text);
	return 0;
}

/* Connects as the admin and asks the server who it is, so a link is only
 * made to a server that lets the admin in and runs queries. */
static int verify(const struct link_request *req, const atomic_bool *cancel, char *version,
                  size_t versionsz, struct errmsg *e)
{
	PGconn *c;
	PGresult *res = NULL;
	struct errmsg why = {{0}};
	int rc = local_connect_linked(req->host, req->port, req->admin, req->password, "postgres",
	                              LINK_CONNECT_TIMEOUT_MS, cancel, &c, &why);
	if (rc)
		return errmsg_set(e, rc, "cannot connect to %s:%d as %s: %s", req->host, req->port,
		                  req->admin, why.text);
	rc = pg_query(c, "SELECT current_setting('server_version'), pg_is_in_recovery()", 0, NULL,
	              LINK_QUERY_TIMEOUT_MS, cancel, &res, &why);
	PQfinish(c);
	if (rc)
		return errmsg_set(e, rc, "%s:%d let %s in but a query failed: %s", req->host,
		                  req->port, req->admin, why.text);
	snprintf(version, versionsz, "%s%s", PQntuples(res) ? PQgetvalue(res, 0, 0) : "?",
	         PQntuples(res) && strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? ", a standby" : "");
	PQclear(res);
	return 0;
}

int local_link(struct provider *p, const struct link_request *req, struct instance *out,
               struct errmsg *e)
{
	struct local_provider *lp = p->priv;
	struct local_instance *li;
	char dir[PATH_MAX], path[PATH_MAX + 8], text[512], version[128] = "";
	bool intent = false, made_dir = false;
	int rc;

	if (req->supabase_ref && req->supabase_ref[0])
		return errmsg_set(
		    e, -EINVAL,
		    "supabase_ref is for the cloud provider; the local provider links "
		    "a server by host and port only");
	rc = reserve_name_locking(lp, req->name, req->admin, &li, e);
	if (rc)
		return rc;
	li->linked = true;
	li->port = req->port;
	snprintf(li->host, sizeof(li->host), "%s", req->host);
	pthread_mutex_unlock(&lp->lock);

	inst_paths(lp, req->name, dir, NULL, NULL, NULL);
	if (access(dir, F_OK) == 0) {
		rc = errmsg_set(e, -EEXIST, "an instance named %s already exists on disk",
		                req->name);
		goto fail;
	}
	/* Nothing is written before the server has let the admin in. */
	rc = verify(req, &li->cancel, version, sizeof(version), e);
	if (rc)
		goto fail;
	proc_crash_point("link-verified");
	rc = intent_begin(lp, req->name, "link", NULL, e);
	if (rc)
		goto fail;
	intent = true;
	proc_crash_point("link-intent");
	if (mkdir(dir, 0700) != 0) {
		rc = errno == EEXIST
		         ? errmsg_set(e, -EEXIST, "an instance named %s already exists", req->name)
		         : errmsg_set(e, -errno, "cannot create %s: %s", dir, strerror(errno));
		goto fail;
	}
	made_dir = true;
	local_fsync_dir(dir);
	proc_crash_point("link-dir");
	struct local_meta m = {.port = req->port, .linked = true};
	snprintf(m.host, sizeof(m.host), "%s", req->host);
	snprintf(m.admin, sizeof(m.admin), "%s", req->admin);
	snprintf(path, sizeof(path), "%s/meta", dir);
	rc = local_meta_format(&m, text, sizeof(text));
	if (!rc)
		rc = local_write_file_durable(path, text, 0600);
	if (rc) {
		rc = errmsg_set(e, rc, "cannot write %s: %s", path, strerror(-rc));
		goto fail;
	}
	proc_crash_point("link-meta");
	/* The filesystem saved the password before calling us: complete. */
	intent_end(lp, req->name);
	intent = false;
	proc_crash_point("link-done");

	pthread_mutex_lock(&lp->lock);
	set_status(li, "available");
	li->probe_misses = 0;
	li->run_id = ++lp->run_seq;
	li->hidden = false;
	li->busy = false;
	li->want_running = false;
	to_instance(li, out);
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	log_event("local: linked %s: %s@%s:%d (PostgreSQL %s), not run by dbosfs", req->name,
	          req->admin, req->host, req->port, version);
	return 0;

fail:
	/* Nothing is left: no entry, no directory, no saved password (never
	 * the password of someone else's name: -EEXIST). */
	if (made_dir) {
		struct errmsg re = {{0}};
		if (local_remove_instance_files(lp, req->name, &re) == 0)
			intent_end(lp, req->name);
		else
			log_error("local: linking %s failed and cleaning up too: %s", req->name,
			          re.text);
	} else {
		if (rc != -EEXIST)
			secret_delete(&lp->secrets, req->name);
		if (intent)
			intent_end(lp, req->name);
	}
	pthread_mutex_lock(&lp->lock);
	unlink_locked(lp, li);
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	free(li);
	return rc;
}

int local_unlink(struct local_provider *lp, struct local_instance *li, struct errmsg *e)
{
	/* The caller owns li (busy). From the record on, a crash is finished
	 * at the next start; nothing here talks to the server. */
	int rc = intent_begin(lp, li->name, "unlink", NULL, e);
	if (rc)
		return rc;
	proc_crash_point("unlink-intent");
	rc = local_remove_instance_files(lp, li->name, e);
	if (rc)
		return rc;
	proc_crash_point("unlink-removed");
	intent_end(lp, li->name);
	log_event("local: unlinked %s (%s:%d); the server and its data are untouched", li->name,
	          li->host, li->port);
	return 0;
}
