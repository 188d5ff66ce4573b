/* The DBOS Cloud provider: instances live in DBOS Cloud and are reached
 * over its HTTPS API (spec/dbos-cloud-api.md). create() checks the
 * credentials and the API in the foreground; afterwards every operation is
 * one API request (plus one token refresh and retry on a 401). */
#define FUSE_USE_VERSION 314
#include <curl/curl.h>
#include <errno.h>
#include <fuse_opt.h>
#include <jansson.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloud_private.h"
#include "log.h"
#include "options.h"
#include "pgdb.h"
#include "provider.h"

static struct cloud *cloud_of(struct provider *p)
{
	return p->priv;
}

/* Appends s as a JSON string literal. Written by hand so a password never
 * sits in a JSON library's buffers we cannot wipe. */
static int json_quote(struct buf *b, const char *s)
{
	int rc = buf_puts(b, "\"");

	for (; *s && rc == 0; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			rc = buf_printf(b, "\\%c", ch);
		else if (ch < 0x20)
			rc = buf_printf(b, "\\u%04x", ch);
		else
			rc = buf_append(b, s, 1);
	}
	return rc ? rc : buf_puts(b, "\"");
}

/* "label: message" (errmsg_set cannot format e into itself). */
static void prefix_message(struct errmsg *e, const char *label)
{
	size_t l = strlen(label) + 2, n;

	if (!e || l >= sizeof(e->text))
		return;
	n = strnlen(e->text, sizeof(e->text) - 1);
	if (n > sizeof(e->text) - 1 - l)
		n = sizeof(e->text) - 1 - l; /* cut the tail, keep the label */
	memmove(e->text + l, e->text, n);
	memcpy(e->text, label, l - 2);
	memcpy(e->text + l - 2, ": ", 2);
	e->text[l + n] = '\0';
}

/* Failures that a later attempt may not meet: network trouble, 5xx, 429,
 * timeouts. Not a rejected token, a refusal or an untrusted certificate. */
static bool cloud_transient(int rc, const struct errmsg *e)
{
	if (rc != -EIO && rc != -EAGAIN && rc != -ETIMEDOUT && rc != -ECONNREFUSED &&
	    rc != -ECONNRESET && rc != -EHOSTUNREACH && rc != -ENETUNREACH)
		return false;
	return !e || !strstr(e->text, "is not trusted");
}

/* Runs attempt() until it succeeds, fails for good, or the mount's
 * start-up budget (c->startup_deadline_ms) is spent: backoff 250 ms,
 * doubling, capped at 4 s. Each attempt's timeout is cut to the time left. */
static int with_startup_retries(struct cloud *c,
                                int (*attempt)(struct cloud *, void *, long, struct errmsg *),
                                void *arg, long timeout_ms, struct errmsg *e)
{
	long long backoff = 250;
	int rc;

	for (;;) {
		long long left = c->startup_deadline_ms - now_ms();
		long t = timeout_ms;

		if (left < t)
			t = left < 1000 ? 1000 : (long)left;
		rc = attempt(c, arg, t, e);
		left = c->startup_deadline_ms - now_ms();
		if (rc == 0 || !cloud_transient(rc, e) || left <= backoff || op_interrupted())
			return rc;
		log_error("DBOS Cloud at start-up: %s; trying again in %lld ms", e->text, backoff);
		struct timespec ts = {backoff / 1000, (backoff % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		backoff = backoff * 2 > 4000 ? 4000 : backoff * 2;
	}
}

static int list_attempt(struct cloud *c, void *arg, long timeout_ms, struct errmsg *e)
{
	struct instance_list *out = arg;
	struct http_result res = {.max_body = CLOUD_MAX_LIST_BODY};
	int rc;

	*out = (struct instance_list){0};
	rc = cloud_api_call(c, HTTP_GET, "/databases", true, NULL, REQ_READ, timeout_ms, &res,
	                    "Failed to list databases", e);
	if (rc == 0) {
		rc = cloud_parse_instance_list(res.body.data, res.body.len, out, e);
		if (rc < 0)
			prefix_message(e, "Failed to list databases");
	}
	http_result_free(&res);
	/* A big list's body goes back to the system, not to a heap that
	 * keeps it for good. */
	if (out->count > 10000)
		malloc_trim(0);
	return rc;
}

static int cmp_rows(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *json_text(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return json_is_string(v) && *json_string_value(v) ? json_string_value(v) : "-";
}

/* One GET /applications per refresh period: NAME/apps reads its copy. A
 * failure keeps the previous copy (logged when it starts and ends). */
static void refresh_apps(struct cloud *c)
{
	struct http_result res = {0};
	struct errmsg e = {{0}};
	json_t *root = NULL, *app;
	struct buf rows = BUF_INIT;
	char **lines = NULL;
	size_t i, n = 0;
	int rc = cloud_api_call(c, HTTP_GET, "/applications", true, NULL, REQ_READ,
	                        c->list_timeout_ms, &res, "Failed to list applications", &e);
	if (rc == 0) {
		root = json_loadb(res.body.data ? res.body.data : "", res.body.len, 0, NULL);
		if (!json_is_array(root))
			rc = errmsg_set(
			    &e, -EIO,
			    "Failed to list applications: malformed response: expected a "
			    "JSON array");
	}
	http_result_free(&res);
	if (rc == 0 && (lines = calloc(json_array_size(root) + 1, sizeof(*lines))) != NULL) {
		json_array_foreach(root, i, app)
		{
			char *line;
			const char *inst = json_text(app, "PostgresInstanceName");
			if (!json_is_object(app) || strcmp(inst, "-") == 0)
				continue;
			if (asprintf(&line, "%s\t%s %s %s %s %s", inst, json_text(app, "Name"),
			             json_text(app, "Status"),
			             json_text(app, "ApplicationDatabaseName"),
			             json_text(app, "Version"), json_text(app, "AppURL")) < 0)
				break;
			/* One row per line: no control bytes from the server. */
			for (char *q = line; *q; q++)
				if ((unsigned char)*q < 0x20 && *q != '\t')
					*q = '?';
			lines[n++] = line;
		}
		qsort(lines, n, sizeof(*lines), cmp_rows);
		for (i = 0; i < n; i++) {
			buf_printf(&rows, "%s\n", lines[i]);
			free(lines[i]);
		}
		free(lines);
	}
	json_decref(root);
	if (rc < 0) {
		if (!c->apps_failing)
			log_error("%s (NAME/apps shows the last known applications)", e.text);
		c->apps_failing = true;
		buf_free(&rows);
		return;
	}
	if (c->apps_failing)
		log_event("the applications list works again");
	c->apps_failing = false;
	pthread_mutex_lock(&c->apps_lock);
	free(c->apps_rows);
	c->apps_rows = rows.data ? buf_steal(&rows) : strdup("");
	pthread_mutex_unlock(&c->apps_lock);
	buf_free(&rows);
}

static int cloud_apps(struct provider *p, const char *name, struct buf *out)
{
	struct cloud *c = cloud_of(p);
	size_t len = strlen(name);
	int rc = 0;
	pthread_mutex_lock(&c->apps_lock);
	for (const char *row = c->apps_rows; row && *row && rc == 0;) {
		const char *eol = strchr(row, '\n');
		size_t rl = eol ? (size_t)(eol - row) : strlen(row);
		if (rl > len && strncmp(row, name, len) == 0 && row[len] == '\t')
			rc = buf_append(out, row + len + 1, rl - len - 1) ?: buf_puts(out, "\n");
		row += rl + (eol ? 1 : 0);
	}
	pthread_mutex_unlock(&c->apps_lock);
	return rc;
}

static int cloud_list(struct provider *p, struct instance_list *out, struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	int rc;

	/* Until one list has succeeded, the mount has nothing true to show:
	 * the first list gets the same start-up retries as the profile. */
	if (!atomic_load(&c->listed_once)) {
		if (!c->startup_deadline_ms)
			c->startup_deadline_ms = now_ms() + c->startup_budget_ms;
		rc = with_startup_retries(c, list_attempt, out, c->list_timeout_ms, e);
	} else {
		rc = list_attempt(c, out, c->list_timeout_ms, e);
	}
	if (rc == 0) {
		atomic_store(&c->listed_once, true);
		refresh_apps(c);
	}
	return rc;
}

static int cloud_get(struct provider *p, const char *name, struct instance *out, struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	struct http_result res = {0};
	char path[128], label[128];
	int rc;

	snprintf(path, sizeof(path), "/databases/userdb/info/%s", name);
	snprintf(label, sizeof(label), "Failed to retrieve database record %s", name);
	rc = cloud_api_call(c, HTTP_GET, path, true, NULL, REQ_READ, c->timeout_ms, &res, label, e);
	if (rc == 0) {
		rc = cloud_parse_instance(res.body.data, res.body.len, out, e);
		if (rc < 0)
			prefix_message(e, label);
	}
	http_result_free(&res);
	return rc;
}

/* POSTs a JSON body that holds a password and wipes it whatever happens.
 * nomem: building the body ran out of memory. */
static int post_secret_body(struct cloud *c, const char *path, struct buf *body, int nomem,
                            enum request_kind kind, const char *label, struct errmsg *e)
{
	struct http_result res = {0};
	int rc;

	if (nomem) {
		buf_free_secret(body);
		return errmsg_set(e, -ENOMEM, "%s: out of memory", label);
	}
	rc = cloud_api_call(c, HTTP_POST, path, true, body->data, kind, c->timeout_ms, &res, label,
	                    e);
	buf_free_secret(body);
	http_result_free(&res);
	return rc;
}

static int cloud_provision(struct provider *p, const char *name, const char *username,
                           const char *password, struct instance *out, struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	struct buf body = BUF_INIT;
	char label[128];
	int rc;

	snprintf(label, sizeof(label), "Failed to provision %s", name);
	rc = buf_puts(&body, "{\"Name\":") || json_quote(&body, name) ||
	     buf_puts(&body, ",\"AdminName\":") || json_quote(&body, username) ||
	     buf_puts(&body, ",\"AdminPassword\":") || json_quote(&body, password) ||
	     buf_puts(&body, "}");
	rc = post_secret_body(c, "/databases/userdb", &body, rc, REQ_CREATE, label, e);
	if (rc < 0)
		return rc;
	/* Provisioning is asynchronous: the refresher will see it settle. */
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->status, sizeof(out->status), "provisioning");
	snprintf(out->username, sizeof(out->username), "%s", username);
	log_event("DBOS Cloud accepted database %s for provisioning", name);
	return 0;
}

static int cloud_destroy(struct provider *p, const struct instance *inst, struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	struct http_result res = {0};
	char path[128], label[128];
	int rc;

	/* A linked database is the user's own server: unlinking leaves it be. */
	snprintf(path, sizeof(path), "/databases/%s/%s", inst->linked ? "byod" : "userdb",
	         inst->name);
	snprintf(label, sizeof(label), "Failed to %s %s", inst->linked ? "unlink" : "destroy",
	         inst->name);
	rc = cloud_api_call(c, HTTP_DELETE, path, true, NULL, REQ_MUTATE, c->timeout_ms, &res,
	                    label, e);
	http_result_free(&res);
	if (rc == 0)
		log_event("DBOS Cloud database %s %s", inst->name,
		          inst->linked ? "unlinked" : "destroyed");
	return rc;
}

static int cloud_reset_password(struct provider *p, const struct instance *inst,
                                const char *password, struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	struct buf body = BUF_INIT;
	char path[128], label[128];
	int rc;

	snprintf(label, sizeof(label), "Failed to reset the password of %s", inst->name);
	if (inst->linked)
		return errmsg_set(e, -EPERM,
		                  "%s: it is a linked database; reset its password where it is "
		                  "hosted%s",
		                  label, inst->supabase_ref[0] ? " (the Supabase dashboard)" : "");
	snprintf(path, sizeof(path), "/databases/userdb/%s/credentials", inst->name);
	rc = buf_puts(&body, "{\"Password\":") || json_quote(&body, password) ||
	     buf_puts(&body, "}");
	rc = post_secret_body(c, path, &body, rc, REQ_MUTATE, label, e);
	if (rc == 0)
		log_event("password of DBOS Cloud database %s reset", inst->name);
	return rc;
}

/* .dbosfs/link: POST /databases/byod with the body `dbos-cloud db link`
 * sends ({Name, HostName, Port, Password, captureProvenance}, plus
 * supabaseReference for --supabase-ref). The CLI always links as the
 * dbosadmin user; another admin goes in the API's optional dbosAdminName. */
static int cloud_link(struct provider *p, const struct link_request *req, struct instance *out,
                      struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	struct buf body = BUF_INIT;
	char label[128];
	int rc;

	snprintf(label, sizeof(label), "Failed to link %s", req->name);
	rc = buf_puts(&body, "{\"Name\":") || json_quote(&body, req->name) ||
	     buf_puts(&body, ",\"HostName\":") || json_quote(&body, req->host) ||
	     buf_printf(&body, ",\"Port\":%d,\"Password\":", req->port) ||
	     json_quote(&body, req->password) || buf_puts(&body, ",\"captureProvenance\":false");
	if (!rc && req->supabase_ref[0])
		rc = buf_puts(&body, ",\"supabaseReference\":") ||
		     json_quote(&body, req->supabase_ref);
	if (!rc && strcmp(req->admin, "dbosadmin") != 0)
		rc = buf_puts(&body, ",\"dbosAdminName\":") || json_quote(&body, req->admin);
	rc = rc || buf_puts(&body, "}");
	rc = post_secret_body(c, "/databases/byod", &body, rc, REQ_CREATE, label, e);
	if (rc < 0)
		return rc;
	/* The refresher's next list replaces this with the API's view. */
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", req->name);
	snprintf(out->status, sizeof(out->status), "available");
	snprintf(out->host, sizeof(out->host), "%s", req->host);
	out->port = req->port;
	snprintf(out->username, sizeof(out->username), "%s", req->admin);
	out->linked = true;
	snprintf(out->supabase_ref, sizeof(out->supabase_ref), "%s", req->supabase_ref);
	log_event("DBOS Cloud linked database %s at %s:%d", req->name, req->host, req->port);
	return 0;
}

/* Handles are made lazily by the first request after detaching. */
static int cloud_start(struct provider *p, struct errmsg *e)
{
	return 0;
}

static void cloud_stop(struct provider *p)
{
	cloud_http_pool_drain(cloud_of(p));
}

static void cloud_destroy_priv(struct cloud *c)
{
	if (!c)
		return;
	cloud_http_pool_drain(c);
	cloud_credentials_free(&c->creds);
	free(c->domain);
	free(c->auth_domain);
	free(c->api_root);
	free(c->base_url);
	free(c->org);
	free(c->user);
	free(c->ca_blob);
	free(c->pg_rootcert);
	free(c->apps_rows);
	pthread_mutex_destroy(&c->apps_lock);
	cloud_locks_destroy(c);
	free(c);
}

static void cloud_free(struct provider *p)
{
	if (!p)
		return;
	cloud_destroy_priv(cloud_of(p));
	free(p);
	curl_global_cleanup();
}

/* NAME/restore: POST /databases/userdb/NAME/restore {RestoreName,
 * RestoreTimestamp}; asynchronous like a provision (NEWNAME/wait follows).
 * The cloud keeps NAME's admin and password for NEWNAME. */
static int cloud_restore(struct provider *p, const struct instance *inst, long long target_ms,
                         const char *newname, const char *password, struct instance *out,
                         struct errmsg *e)
{
	struct cloud *c = cloud_of(p);
	struct http_result res = {0};
	struct buf body = BUF_INIT;
	char path[128], label[160], when[40];
	time_t t = (time_t)(target_ms / 1000);
	struct tm tm;
	int rc;

	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(path, sizeof(path), "/databases/userdb/%s/restore", inst->name);
	snprintf(label, sizeof(label), "Failed to restore %s as %s", inst->name, newname);
	if (buf_puts(&body, "{\"RestoreName\":") || json_quote(&body, newname) ||
	    buf_puts(&body, ",\"RestoreTimestamp\":") || json_quote(&body, when) ||
	    buf_puts(&body, "}")) {
		buf_free(&body);
		return errmsg_set(e, -ENOMEM, "%s: out of memory", label);
	}
	rc = cloud_api_call(c, HTTP_POST, path, true, body.data, REQ_CREATE, c->timeout_ms, &res,
	                    label, e);
	buf_free(&body);
	http_result_free(&res);
	if (rc < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", newname);
	snprintf(out->status, sizeof(out->status), "provisioning");
	snprintf(out->username, sizeof(out->username), "%s", inst->username);
	log_event("DBOS Cloud accepted the restore of %s as of %s as %s", inst->name, when,
	          newname);
	return 0;
}

/* NAME/branch on the cloud: a restore to the present (the API has no
 * other copy operation). */
static int cloud_branch(struct provider *p, const struct instance *inst, const char *newname,
                        struct instance *out, struct errmsg *e)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return cloud_restore(p, inst, ts.tv_sec * 1000LL, newname, NULL, out, e);
}

/* ---- NAME/databases/: SQL on the instance itself (util/pgdb.c) ---- */

#define CLOUD_PG_CONNECT_TIMEOUT_MS 5000

/* The admin's connection to inst: TLS, with the saved password. Without
 * one there is nothing to connect with: -ENODATA, saying how to save one. */
static int cloud_db_target(struct cloud *c, const struct instance *inst, const char *password,
                           char *user, size_t usersz, struct pgdb_target *t, struct errmsg *e)
{
	if (!password)
		return errmsg_set(e, -ENODATA,
		                  "this mount has no saved password for %s, and the databases are "
		                  "listed by connecting as its admin: write the password to "
		                  "%s/password (it resets the admin's password to that value; the "
		                  "mount saves it) or create the instance with mkdir",
		                  inst->name, inst->name);
	if (!inst->host[0] || inst->port <= 0)
		return errmsg_set(e, -EAGAIN, "DBOS Cloud has not given %s a host and port yet",
		                  inst->name);
	instance_login_user(inst, user, usersz);
	*t = (struct pgdb_target){
	    .instance = inst->name,
	    .host = inst->host,
	    .port = inst->port,
	    .user = user,
	    .password = password,
	    .sslmode = c->pg_rootcert ? "verify-full" : "require",
	    .sslrootcert = c->pg_rootcert,
	    .connect_timeout_ms = CLOUD_PG_CONNECT_TIMEOUT_MS,
	};
	return 0;
}

static int cloud_list_databases(struct provider *p, const struct instance *inst,
                                const char *password, struct database_list *out, struct errmsg *e)
{
	struct pgdb_target t;
	char user[160];
	int rc = cloud_db_target(cloud_of(p), inst, password, user, sizeof(user), &t, e);
	return rc ? rc : pgdb_list(&t, out, e);
}

static int cloud_create_database(struct provider *p, const struct instance *inst,
                                 const char *password, const char *db, struct errmsg *e)
{
	struct pgdb_target t;
	char user[160];
	int rc = cloud_db_target(cloud_of(p), inst, password, user, sizeof(user), &t, e);
	return rc ? rc : pgdb_create(&t, db, inst->username, e);
}

static int cloud_drop_database(struct provider *p, const struct instance *inst,
                               const char *password, const char *db, struct errmsg *e)
{
	struct pgdb_target t;
	char user[160];
	int rc = cloud_db_target(cloud_of(p), inst, password, user, sizeof(user), &t, e);
	return rc ? rc : pgdb_drop(&t, db, e);
}

static const struct provider_ops cloud_ops = {
    .kind = "cloud",
    .slow_mutations = true,
    .start = cloud_start,
    .stop = cloud_stop,
    .free = cloud_free,
    .list = cloud_list,
    .get = cloud_get,
    .provision = cloud_provision,
    .destroy = cloud_destroy,
    .reset_password = cloud_reset_password,
    .apps = cloud_apps,
    .branch = cloud_branch,
    .restore = cloud_restore,
    .link = cloud_link,
    .list_databases = cloud_list_databases,
    .create_database = cloud_create_database,
    .drop_database = cloud_drop_database,
};

static bool domain_ok(const char *d)
{
	if (!*d || strlen(d) > 200)
		return false;
	for (; *d; d++)
		if (!((*d >= 'a' && *d <= 'z') || (*d >= 'A' && *d <= 'Z') ||
		      (*d >= '0' && *d <= '9') || strchr(".-:[]_", *d)))
			return false;
	return true;
}

void cloud_pick_domains(const char *domain_opt, const char *auth_domain_opt, const char **domain,
                        const char **auth_domain)
{
	const char *d = domain_opt && *domain_opt ? domain_opt : getenv("DBOS_DOMAIN");

	if (!d || !*d)
		d = CLOUD_PROD_DOMAIN;
	*domain = d;
	*auth_domain = auth_domain_opt && *auth_domain_opt ? auth_domain_opt
	               : strcmp(d, CLOUD_PROD_DOMAIN) == 0 ? CLOUD_PROD_AUTH_DOMAIN
	                                                   : CLOUD_DEV_AUTH_DOMAIN;
}

/* Seconds from DBOSFS_CLOUD_TIMEOUT (tests shorten the 30 s default). */
static long timeout_from_env(void)
{
	const char *s = getenv("DBOSFS_CLOUD_TIMEOUT");
	char *end;
	long v;

	if (!s || !*s)
		return CLOUD_TIMEOUT_MS;
	v = strtol(s, &end, 10);
	if (*end || v < 1 || v > 600)
		return CLOUD_TIMEOUT_MS;
	return v * 1000;
}

/* Seconds from DBOSFS_CLOUD_STARTUP_S: how long the profile call and the
 * first list are retried at mount (tests shorten the 20 s default). */
static long long startup_budget_from_env(void)
{
	const char *s = getenv("DBOSFS_CLOUD_STARTUP_S");
	char *end;
	long v;

	if (!s || !*s)
		return CLOUD_STARTUP_BUDGET_MS;
	v = strtol(s, &end, 10);
	if (*end || v < 0 || v > 600)
		return CLOUD_STARTUP_BUDGET_MS;
	return v * 1000LL;
}

/* Makes sure the token is usable before the first request: an expired
 * one is refreshed (and written back) now, in the foreground. */
static int check_token(struct cloud *c, struct errmsg *e)
{
	long long exp = 0;
	bool decodable = jwt_exp(c->creds.token, &exp) == 0;
	struct errmsg why;
	int rc;

	c->token_exp = exp;
	if (decodable && (exp == 0 || (long long)time(NULL) < exp))
		return 0;
	if (!c->creds.refresh_token) {
		if (!decodable)
			return 0; /* let the server judge it */
		return errmsg_set(e, -EACCES,
		                  "the DBOS Cloud credentials in %s have expired and hold no "
		                  "refreshToken; run `npx dbos-cloud login`",
		                  c->creds.path);
	}
	pthread_mutex_lock(&c->token_lock);
	rc = cloud_refresh_token_locked(c, c->token_generation, &why);
	pthread_mutex_unlock(&c->token_lock);
	if (rc < 0)
		return errmsg_set(e, -EACCES,
		                  "the DBOS Cloud credentials in %s have expired and refreshing "
		                  "them failed: %.1500s; run `npx dbos-cloud login`",
		                  c->creds.path, why.text);
	return 0;
}

/* NAME/databases/ trusts what the API calls trust: the system CAs, plus
 * the cafile when there is one (written beside the state, as libpq reads a
 * file). */
static int pick_pg_rootcert(struct cloud *c, const char *state_dir, struct errmsg *e)
{
	if (!c->ca_blob) {
		c->pg_rootcert = cloud_http_system_cas();
		if (!c->pg_rootcert)
			log_error("no system CA bundle found: NAME/databases/ connects with "
			          "sslmode=require (encrypted, server not verified)");
		return 0;
	}
	if (asprintf(&c->pg_rootcert, "%s/cloud-ca.pem", state_dir) < 0) {
		c->pg_rootcert = NULL;
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	return cloud_credentials_replace(c->pg_rootcert, c->ca_blob, NULL, e);
}

struct profile {
	char name[128], org[128];
};

static int profile_attempt(struct cloud *c, void *arg, long timeout_ms, struct errmsg *e)
{
	struct profile *pr = arg;
	struct http_result res = {0};
	char label[300];
	int rc;

	snprintf(label, sizeof(label), "Cannot use DBOS Cloud at %s", c->domain);
	rc = cloud_api_call(c, HTTP_GET, "/user/profile", false, NULL, REQ_READ, timeout_ms, &res,
	                    label, e);
	if (rc == 0) {
		rc = cloud_parse_profile(res.body.data, res.body.len, pr->name, sizeof(pr->name),
		                         pr->org, sizeof(pr->org), e);
		if (rc < 0)
			prefix_message(e, label);
	}
	http_result_free(&res);
	return rc;
}

static int fetch_profile(struct cloud *c, struct errmsg *e)
{
	struct profile pr = {"", ""};
	char label[300];
	int rc;

	snprintf(label, sizeof(label), "Cannot use DBOS Cloud at %s", c->domain);
	c->startup_deadline_ms = now_ms() + c->startup_budget_ms;
	rc = with_startup_retries(c, profile_attempt, &pr, c->timeout_ms, e);
	/* The first list (after detaching) gets a budget of its own. */
	c->startup_deadline_ms = 0;
	if (rc < 0)
		return rc;
	/* The CLI trusts the profile's organization over the file's. */
	if (!pr.org[0] && c->creds.organization)
		snprintf(pr.org, sizeof(pr.org), "%s", c->creds.organization);
	if (!pr.org[0])
		return errmsg_set(e, -EINVAL,
		                  "%s: neither the user profile nor %s names an organization",
		                  label, c->creds.path);
	c->user = strdup(pr.name);
	c->org = strdup(pr.org);
	return c->user && c->org ? 0 : errmsg_set(e, -ENOMEM, "out of memory");
}

int cloud_provider_create(const struct dbosfs_options *opt, const void *own, struct provider **out,
                          struct errmsg *e)
{
	const struct cloud_options *co = own;
	struct provider *p = NULL;
	struct cloud *c = NULL;
	const char *domain, *auth;
	char *cred_path = NULL, *esc_org = NULL, scope[300];
	int rc;

	*out = NULL;
	cloud_pick_domains(co->domain, co->auth_domain, &domain, &auth);
	if (!domain_ok(domain))
		return errmsg_set(e, -EINVAL, "invalid domain=%s: expected HOST or HOST:PORT",
		                  domain);
	if (!domain_ok(auth))
		return errmsg_set(e, -EINVAL, "invalid auth_domain=%s", auth);

	/* Before any jansson use in this process: tokens and credentials
	 * pass through jansson, so its freed blocks are wiped. */
	cloud_json_use_wiping_allocator();
	/* Lists of 100,000 instances are tens of MiB: blocks that big are
	 * mapped and unmapped on their own, never left in the heap (glibc
	 * otherwise raises this threshold after the first big free). */
	mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return errmsg_set(e, -EIO, "cannot initialise libcurl");
	p = calloc(1, sizeof(*p));
	c = calloc(1, sizeof(*c));
	if (c)
		pthread_mutex_init(&c->apps_lock, NULL);
	if (!p || !c || cloud_locks_init(c) < 0) {
		free(p);
		free(c);
		curl_global_cleanup();
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	p->ops = &cloud_ops;
	p->priv = c;
	c->domain = strdup(domain);
	c->auth_domain = strdup(auth);
	c->client_id =
	    strcmp(domain, CLOUD_PROD_DOMAIN) == 0 ? CLOUD_PROD_CLIENT_ID : CLOUD_DEV_CLIENT_ID;
	c->timeout_ms = timeout_from_env();
	c->list_timeout_ms =
	    c->timeout_ms < CLOUD_LIST_TIMEOUT_MS ? c->timeout_ms : CLOUD_LIST_TIMEOUT_MS;
	c->startup_budget_ms = startup_budget_from_env();
	if (!c->domain || !c->auth_domain ||
	    asprintf(&c->api_root, "https://%s/v1alpha1", domain) < 0) {
		c->api_root = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto fail;
	}

	rc = cloud_credentials_locate(co->credentials, opt->owner_uid, &cred_path, e);
	if (rc < 0)
		goto fail;
	rc = cloud_credentials_load(cred_path, &c->creds, e);
	if (rc < 0)
		goto fail;
	rc = cloud_http_load_cas(c, co->cafile, e);
	if (rc < 0)
		goto fail;
	rc = pick_pg_rootcert(c, opt->state_dir, e);
	if (rc < 0)
		goto fail;
	rc = check_token(c, e);
	if (rc < 0)
		goto fail;
	rc = fetch_profile(c, e);
	if (rc < 0)
		goto fail;

	esc_org = curl_easy_escape(NULL, c->org, 0);
	if (!esc_org || asprintf(&c->base_url, "%s/%s", c->api_root, esc_org) < 0) {
		c->base_url = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto fail;
	}
	snprintf(p->provider_line, sizeof(p->provider_line), "cloud %s", domain);
	snprintf(p->account, sizeof(p->account), "%s (organization %s)", c->user, c->org);
	snprintf(scope, sizeof(scope), "cloud-%s-%s", domain, c->org);
	cloud_sanitize_scope(scope, p->secret_scope, sizeof(p->secret_scope));

	/* No live handles or sockets across the daemonizing fork. */
	cloud_http_pool_drain(c);
	curl_free(esc_org);
	free(cred_path);
	*out = p;
	return 0;
fail:
	curl_free(esc_org);
	free(cred_path);
	cloud_free(p);
	return rc;
}

/* ---- -o keys (the registry: provider.h) ---- */

#define CLOUD_OPT(t, f)                                                                            \
	{                                                                                          \
		t, offsetof(struct cloud_options, f), 1                                            \
	}
static const struct fuse_opt cloud_opts[] = {
    CLOUD_OPT("credentials=%s", credentials),
    CLOUD_OPT("domain=%s", domain),
    CLOUD_OPT("auth_domain=%s", auth_domain),
    CLOUD_OPT("cafile=%s", cafile),
    FUSE_OPT_END,
};

static void cloud_init_opts(void *own)
{
	memset(own, 0, sizeof(struct cloud_options));
}

static void cloud_free_opts(void *own)
{
	struct cloud_options *co = own;
	free(co->credentials);
	free(co->domain);
	free(co->auth_domain);
	free(co->cafile);
}

const struct provider_kind cloud_provider_kind = {
    .name = "cloud",
    .opts = cloud_opts,
    .opts_size = sizeof(struct cloud_options),
    .init_opts = cloud_init_opts,
    .free_opts = cloud_free_opts,
    .help = "    -o credentials=FILE      credentials from npx dbos-cloud login or dbosfs login\n"
            "                             (default: ./.dbos/credentials, ~/.dbos/credentials)\n"
            "    -o domain=HOST           API host (default: $DBOS_DOMAIN or cloud.dbos.dev)\n"
            "    -o auth_domain=HOST      token refresh host (default: by domain)\n"
            "    -o cafile=FILE           extra CA bundle for the API and NAME/databases/\n"
            "                             (TLS is always verified)\n",
    .create = cloud_provider_create,
};
