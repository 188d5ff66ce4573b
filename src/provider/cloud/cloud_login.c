/* `dbosfs login`: the OAuth device-authorization flow of the official CLI
 * (@dbos-inc/dbos-cloud, users/authentication.js and users/login.js),
 * then GET /user/profile, then .dbos/credentials as the CLI writes it:
 * {"token","refreshToken","userName","organization"}, compact JSON. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cloud_private.h"
#include "login.h"

/* The CLI's audience; the scope of `dbos-cloud login --get-refresh-token`,
 * so that a long-lived mount can refresh its token. */
#define LOGIN_AUDIENCE "dbos-cloud-api"
#define LOGIN_SCOPE    "offline_access"
/* RFC 8628: 5 s when the server names no interval; slow_down adds 5 s. */
#define LOGIN_DEFAULT_INTERVAL_S 5
#define LOGIN_SLOW_DOWN_S        5
#define LOGIN_MAX_INTERVAL_S     60

struct device_code {
	char *device_code;
	char *user_code;
	char *verification_uri;
	char *verification_uri_complete;
	long long expires_in;
	long long interval;
};

static void device_code_free(struct device_code *d)
{
	secret_wipe_str(d->device_code);
	free(d->device_code);
	free(d->user_code);
	free(d->verification_uri);
	free(d->verification_uri_complete);
	memset(d, 0, sizeof(*d));
}

static char *dup_string_member(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	return json_is_string(v) && *json_string_value(v) ? strdup(json_string_value(v)) : NULL;
}

static long long int_member(const json_t *o, const char *key, long long dflt)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		return (long long)json_integer_value(v);
	if (json_is_real(v))
		return (long long)json_real_value(v);
	return dflt;
}

/* True when the text is safe to show on a terminal (no control bytes). */
static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static int post_form(struct cloud *c, const char *path, const char *form, struct http_result *res,
                     const char *label, struct errmsg *e)
{
	char *url = NULL;
	int rc;

	if (asprintf(&url, "https://%s%s", c->auth_domain, path) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = cloud_http_perform(c, HTTP_POST, url, "application/x-www-form-urlencoded", form, NULL,
	                        CLOUD_TIMEOUT_MS, res, label, e);
	free(url);
	return rc;
}

static int request_device_code(struct cloud *c, struct device_code *d, struct errmsg *e)
{
	static const char label[] = "cannot start the DBOS Cloud login";
	struct http_result res = {0};
	struct buf form = BUF_INIT;
	json_t *root = NULL;
	int rc;

	if (buf_printf(&form, "client_id=%s&scope=%s&audience=%s", c->client_id, LOGIN_SCOPE,
	               LOGIN_AUDIENCE) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = post_form(c, "/oauth/device/code", form.data, &res, label, e);
	if (rc < 0)
		goto out;
	root = json_loadb(res.body.data ? res.body.data : "", res.body.len, 0, NULL);
	if (res.status < 200 || res.status >= 300) {
		/* Only the OAuth error code: descriptions are the server's free text. */
		const char *err =
		    json_is_object(root) ? json_string_value(json_object_get(root, "error")) : NULL;

		rc = errmsg_set(e, res.status == 401 || res.status == 403 ? -EACCES : -EIO,
		                "%s: %s answered HTTP %ld (%.64s)", label, c->auth_domain,
		                res.status, err && printable(err) ? err : "no OAuth error code");
		goto out;
	}
	if (json_is_object(root)) {
		d->device_code = dup_string_member(root, "device_code");
		d->user_code = dup_string_member(root, "user_code");
		d->verification_uri = dup_string_member(root, "verification_uri");
		d->verification_uri_complete = dup_string_member(root, "verification_uri_complete");
		d->expires_in = int_member(root, "expires_in", 900);
		d->interval = int_member(root, "interval", LOGIN_DEFAULT_INTERVAL_S);
	}
	if (!d->device_code || !d->user_code ||
	    !(d->verification_uri || d->verification_uri_complete) || !printable(d->user_code) ||
	    (d->verification_uri && !printable(d->verification_uri)) ||
	    (d->verification_uri_complete && !printable(d->verification_uri_complete))) {
		rc = errmsg_set(e, -EIO, "%s: malformed device code response from %s", label,
		                c->auth_domain);
		goto out;
	}
	if (d->interval < 1)
		d->interval = 1;
	if (d->interval > LOGIN_MAX_INTERVAL_S)
		d->interval = LOGIN_MAX_INTERVAL_S;
out:
	json_decref(root);
	buf_free(&form);
	buf_free_secret(&res.body);
	return rc;
}

/* Sleeps seconds, in 100 ms steps so that Ctrl-C ends it at once. */
static int sleep_cancellable(long long seconds, const atomic_bool *cancel)
{
	long long until = now_ms() + seconds * 1000;

	while (now_ms() < until) {
		struct timespec ts = {0, 100 * 1000 * 1000};

		if (atomic_load(cancel))
			return -EINTR;
		nanosleep(&ts, NULL);
	}
	return atomic_load(cancel) ? -EINTR : 0;
}

enum poll_outcome { POLL_TOKEN, POLL_PENDING, POLL_SLOW_DOWN };

/* One poll of the token endpoint. On POLL_TOKEN, *token and *refresh are
 * malloc'd (*refresh may be NULL). A final refusal is a negative errno. */
static int poll_token(struct cloud *c, const struct device_code *d, char **token, char **refresh,
                      struct errmsg *e)
{
	static const char label[] = "DBOS Cloud login failed";
	struct http_result res = {0};
	struct buf form = BUF_INIT;
	char *esc = curl_easy_escape(NULL, d->device_code, 0);
	json_t *root = NULL;
	const char *err;
	int rc;

	if (!esc || buf_printf(&form,
	                       "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Adevice_"
	                       "code&device_code=%s&client_id=%s",
	                       esc, c->client_id) < 0) {
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	rc = post_form(c, "/oauth/token", form.data, &res, label, e);
	if (rc < 0)
		goto out;
	root = json_loadb(res.body.data ? res.body.data : "", res.body.len, 0, NULL);
	if (res.status >= 200 && res.status < 300) {
		rc = cloud_parse_token_response(res.body.data, res.body.len, token, e);
		if (rc == 0) {
			*refresh =
			    json_is_object(root) ? dup_string_member(root, "refresh_token") : NULL;
			rc = POLL_TOKEN;
		}
		goto out;
	}
	err = json_is_object(root) ? json_string_value(json_object_get(root, "error")) : NULL;
	if (!err)
		rc = errmsg_set(e, -EIO, "%s: %s answered HTTP %ld", label, c->auth_domain,
		                res.status);
	else if (strcmp(err, "authorization_pending") == 0)
		rc = POLL_PENDING;
	else if (strcmp(err, "slow_down") == 0)
		rc = POLL_SLOW_DOWN;
	else if (strcmp(err, "expired_token") == 0)
		rc = errmsg_set(e, -ETIMEDOUT,
		                "%s: the login code expired before it was confirmed; run dbosfs "
		                "login again",
		                label);
	else if (strcmp(err, "access_denied") == 0)
		rc = errmsg_set(e, -EACCES, "%s: the login was denied in the browser", label);
	else
		/* Only the error code: descriptions are the server's free text. */
		rc = errmsg_set(e, -EACCES, "%s: %s refused the login (%.64s)", label,
		                c->auth_domain, printable(err) ? err : "unknown error");
out:
	json_decref(root);
	if (esc) {
		secret_wipe_str(esc);
		curl_free(esc);
	}
	buf_free_secret(&form);
	buf_free_secret(&res.body);
	return rc;
}

static int fetch_profile(struct cloud *c, const char *token, char *user, size_t usersz, char *org,
                         size_t orgsz, struct errmsg *e)
{
	static const char label[] = "DBOS Cloud login failed: cannot read the user profile";
	struct http_result res = {0};
	char *url = NULL;
	int rc;

	if (asprintf(&url, "https://%s/v1alpha1/user/profile", c->domain) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = cloud_http_perform(c, HTTP_GET, url, "application/json", NULL, token, CLOUD_TIMEOUT_MS,
	                        &res, label, e);
	if (rc == 0 && (res.status < 200 || res.status >= 300))
		rc = cloud_http_error(&res, REQ_READ, label, e);
	else if (rc == 0)
		rc = cloud_parse_profile(res.body.data, res.body.len, user, usersz, org, orgsz, e);
	free(url);
	buf_free_secret(&res.body);
	return rc;
}

/* The credentials file, as the CLI's JSON.stringify writes it (an absent
 * refresh token is left out, as undefined is). Directory made 0700. */
static int write_credentials(const char *path, const char *token, const char *refresh,
                             const char *user, const char *org, struct errmsg *e)
{
	char *dir = strdup(path), *slash, *real = NULL, *dump = NULL;
	json_t *root = json_object();
	int rc;

	if (!dir || !root) {
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			rc = errmsg_set(e, -errno, "cannot create %s: %s", dir, strerror(errno));
			goto out;
		}
	}
	json_object_set_new(root, "token", json_string(token));
	if (refresh)
		json_object_set_new(root, "refreshToken", json_string(refresh));
	json_object_set_new(root, "userName", json_string(user));
	json_object_set_new(root, "organization", json_string(org));
	dump = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!dump) {
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	/* Through a symlink, replace its target, not the link. */
	real = realpath(path, NULL);
	rc = cloud_credentials_replace(real ? real : path, dump, NULL, e);
out:
	if (dump) {
		secret_wipe_str(dump);
		free(dump);
	}
	json_decref(root);
	free(real);
	free(dir);
	return rc;
}

static int login_flow(struct cloud *c, const char *path, FILE *out, const atomic_bool *cancel,
                      struct errmsg *e)
{
	struct device_code d = {0};
	char *token = NULL, *refresh = NULL;
	char user[256] = "", org[256] = "";
	long long deadline;
	int rc;

	rc = request_device_code(c, &d, e);
	if (rc < 0)
		goto out;
	fprintf(out, "Login URL: %s\n",
	        d.verification_uri_complete ? d.verification_uri_complete : d.verification_uri);
	fprintf(out, "User code: %s\n", d.user_code);
	fprintf(out, "Open the URL in a browser, check the code and confirm. Waiting...\n");
	fflush(out);
	deadline = now_ms() + d.expires_in * 1000;
	for (;;) {
		if (now_ms() >= deadline) {
			rc = errmsg_set(e, -ETIMEDOUT,
			                "DBOS Cloud login failed: the login code expired before it "
			                "was confirmed; run dbosfs login again");
			goto out;
		}
		rc = sleep_cancellable(d.interval, cancel);
		if (rc < 0)
			break;
		rc = poll_token(c, &d, &token, &refresh, e);
		if (rc == POLL_TOKEN)
			break;
		if (rc == POLL_SLOW_DOWN)
			d.interval += LOGIN_SLOW_DOWN_S;
		if (rc < 0)
			goto out;
	}
	if (rc < 0 || atomic_load(cancel)) {
		rc = errmsg_set(e, -EINTR, "login interrupted; no credentials written");
		goto out;
	}
	rc = fetch_profile(c, token, user, sizeof(user), org, sizeof(org), e);
	if (rc < 0)
		goto out;
	if (atomic_load(cancel)) {
		rc = errmsg_set(e, -EINTR, "login interrupted; no credentials written");
		goto out;
	}
	rc = write_credentials(path, token, refresh, user, org, e);
	if (rc == 0) {
		fprintf(out, "Logged in as %s (organization %s); credentials saved to %s\n",
		        printable(user) ? user : "?", printable(org) ? org : "?", path);
		fflush(out);
	}
out:
	if (rc == -EINTR && atomic_load(cancel))
		errmsg_set(e, -EINTR, "login interrupted; no credentials written");
	if (token) {
		secret_wipe_str(token);
		free(token);
	}
	if (refresh) {
		secret_wipe_str(refresh);
		free(refresh);
	}
	device_code_free(&d);
	return rc;
}

static bool host_ok(const char *d)
{
	if (!*d || strlen(d) > 253)
		return false;
	for (; *d; d++)
		if (!((*d >= 'a' && *d <= 'z') || (*d >= 'A' && *d <= 'Z') ||
		      (*d >= '0' && *d <= '9') || *d == '.' || *d == '-' || *d == ':' ||
		      *d == '[' || *d == ']'))
			return false;
	return true;
}

int cloud_login(const struct login_options *o, FILE *out, const atomic_bool *cancel,
                struct errmsg *e)
{
	struct cloud *c;
	const char *domain, *auth;
	char *path = NULL;
	int rc;

	cloud_pick_domains(o->domain, o->auth_domain, &domain, &auth);
	if (!host_ok(domain))
		return errmsg_set(e, -EINVAL, "invalid --domain %s: expected HOST or HOST:PORT",
		                  domain);
	if (!host_ok(auth))
		return errmsg_set(e, -EINVAL, "invalid --auth-domain %s", auth);
	/* Relative to where the user is, as the CLI's ./.dbos/credentials. */
	rc = cloud_credentials_locate(o->credentials && *o->credentials ? o->credentials
	                                                                : ".dbos/credentials",
	                              getuid(), &path, e);
	if (rc < 0)
		return rc;
	cloud_json_use_wiping_allocator();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		free(path);
		return errmsg_set(e, -EIO, "cannot initialise libcurl");
	}
	c = calloc(1, sizeof(*c));
	if (!c || cloud_locks_init(c) < 0) {
		free(c);
		free(path);
		curl_global_cleanup();
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	c->domain = strdup(domain);
	c->auth_domain = strdup(auth);
	c->client_id =
	    strcmp(domain, CLOUD_PROD_DOMAIN) == 0 ? CLOUD_PROD_CLIENT_ID : CLOUD_DEV_CLIENT_ID;
	c->timeout_ms = CLOUD_TIMEOUT_MS;
	if (!c->domain || !c->auth_domain)
		rc = errmsg_set(e, -ENOMEM, "out of memory");
	else
		rc = cloud_http_load_cas(c, o->cafile, e);
	if (rc == 0) {
		/* HTTP transfers in flight stop too when Ctrl-C sets the flag. */
		op_set_cancel_flag(cancel);
		rc = login_flow(c, path, out, cancel, e);
		op_set_cancel_flag(NULL);
	}
	cloud_http_pool_drain(c);
	free(c->domain);
	free(c->auth_domain);
	free(c->ca_blob);
	cloud_locks_destroy(c);
	free(c);
	free(path);
	curl_global_cleanup();
	return rc;
}
