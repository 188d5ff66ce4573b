/* HTTPS transport for the DBOS Cloud API: a small pool of libcurl easy
 * handles (each keeps its connections alive for reuse), bounded bodies,
 * timeouts, Ctrl-C, the 401 → refresh → retry-once rule, and error bodies
 * turned into messages. The token never reaches a log or a message. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cloud_private.h"
#include "log.h"
#include "redact.h"

void http_result_free(struct http_result *r)
{
	buf_free(&r->body);
	r->status = 0;
}

static CURL *pool_get(struct cloud *c)
{
	CURL *h = NULL;

	pthread_mutex_lock(&c->pool_lock);
	if (c->pool_len)
		h = c->pool[--c->pool_len];
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_reset(h); /* keeps the connection cache */
	else
		h = curl_easy_init();
	return h;
}

static void pool_put(struct cloud *c, CURL *h)
{
	pthread_mutex_lock(&c->pool_lock);
	if (c->pool_len < CLOUD_POOL_MAX) {
		c->pool[c->pool_len++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->pool_lock);
	if (h)
		curl_easy_cleanup(h);
}

void cloud_http_pool_drain(struct cloud *c)
{
	pthread_mutex_lock(&c->pool_lock);
	while (c->pool_len)
		curl_easy_cleanup(c->pool[--c->pool_len]);
	pthread_mutex_unlock(&c->pool_lock);
}

struct xfer {
	struct buf *body;
	size_t max;
	bool too_big;
	bool nomem;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;

	if (x->body->len + n > x->max) {
		x->too_big = true;
		return 0; /* aborts the transfer */
	}
	if (buf_append(x->body, data, n) < 0) {
		x->nomem = true;
		return 0;
	}
	return n;
}

/* Polled by libcurl several times a second: a Ctrl-C'd caller is freed. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	return op_interrupted() ? 1 : 0;
}

static int read_file_into(const char *path, struct buf *out)
{
	char chunk[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || out->len + (size_t)n > 64u * 1024 * 1024 ||
		    buf_append(out, chunk, (size_t)n) < 0) {
			int err = n < 0 ? -errno : -EFBIG;

			close(fd);
			return err;
		}
	}
	close(fd);
	return 0;
}

char *cloud_http_system_cas(void)
{
	static const char *const fallbacks[] = {
	    "/etc/ssl/certs/ca-certificates.crt",
	    "/etc/pki/tls/certs/ca-bundle.crt",
	    "/etc/ssl/cert.pem",
	};
	const char *sys = NULL;
	char *path = NULL;
	CURL *h = curl_easy_init();

	if (h && curl_easy_getinfo(h, CURLINFO_CAINFO, &sys) == CURLE_OK && sys &&
	    access(sys, R_OK) == 0)
		path = strdup(sys);
	if (h)
		curl_easy_cleanup(h);
	for (size_t i = 0; !path && i < sizeof(fallbacks) / sizeof(fallbacks[0]); i++)
		if (access(fallbacks[i], R_OK) == 0)
			path = strdup(fallbacks[i]);
	return path;
}

int cloud_http_load_cas(struct cloud *c, const char *cafile, struct errmsg *e)
{
	struct buf extra = BUF_INIT, all = BUF_INIT;
	char *sys;
	int rc;

	if (!cafile || !*cafile)
		return 0; /* libcurl's own default store */
	rc = read_file_into(cafile, &extra);
	if (rc < 0) {
		buf_free(&extra);
		return errmsg_set(e, rc, "cannot read cafile %s: %s", cafile, strerror(-rc));
	}
	if (!extra.data || !strstr(extra.data, "-----BEGIN CERTIFICATE-----")) {
		buf_free(&extra);
		return errmsg_set(e, -EINVAL, "cafile %s holds no PEM certificate", cafile);
	}
	/* A CA blob replaces libcurl's default file, so put the system CAs in
	 * it too: the extra CA adds trust, it does not take any away. */
	sys = cloud_http_system_cas();
	if (!sys || read_file_into(sys, &all) < 0)
		buf_reset(&all);
	free(sys);
	if (buf_puts(&all, "\n") < 0 || buf_append(&all, extra.data, extra.len) < 0) {
		buf_free(&extra);
		buf_free(&all);
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	buf_free(&extra);
	c->ca_blob_len = all.len;
	c->ca_blob = buf_steal(&all);
	return 0;
}

static int transfer_error(CURLcode cc, const struct xfer *x, const char *errbuf, const char *url,
                          long timeout_ms, const char *label, struct errmsg *e)
{
	const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);
	int err = errno_from_curl((int)cc);

	if (x->too_big)
		return errmsg_set(e, -EIO, "%s: the answer from %s is larger than %zu MiB; refused",
		                  label, url, x->max / (1024 * 1024));
	if (x->nomem)
		return errmsg_set(e, -ENOMEM, "%s: out of memory", label);
	switch (cc) {
	case CURLE_ABORTED_BY_CALLBACK:
		return errmsg_set(e, -EINTR, "%s: interrupted", label);
	case CURLE_OPERATION_TIMEDOUT:
		return errmsg_set(e, -ETIMEDOUT, "%s: no answer from %s within %ld s (%s)", label,
		                  url, timeout_ms / 1000, why);
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return errmsg_set(e, err, "%s: cannot connect to %s (%s)", label, url, why);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return errmsg_set(e, err,
		                  "%s: the TLS certificate of %s is not trusted (%s); for a "
		                  "private CA pass -o cafile=FILE",
		                  label, url, why);
	default:
		return errmsg_set(e, err, "%s: request to %s failed: %s", label, url, why);
	}
}

int cloud_http_perform(struct cloud *c, enum http_method m, const char *url,
                       const char *content_type, const char *body, const char *bearer,
                       long timeout_ms, struct http_result *res, const char *label,
                       struct errmsg *e)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL, *tmp;
	struct xfer x = {.body = &res->body, .max = res->max_body ? res->max_body : CLOUD_MAX_BODY};
	struct buf line = BUF_INIT;
	CURLcode cc;
	CURL *h;
	int rc = 0;

	res->status = 0;
	buf_reset(&res->body);
	h = pool_get(c);
	if (!h)
		return errmsg_set(e, -ENOMEM, "%s: cannot create an HTTP handle", label);

	if (content_type) {
		buf_printf(&line, "Content-Type: %s", content_type);
		tmp = curl_slist_append(hdrs, line.data ? line.data : "");
		hdrs = tmp ? tmp : hdrs;
	}
	if (bearer) {
		buf_reset(&line);
		buf_printf(&line, "Authorization: Bearer %s", bearer);
		tmp = curl_slist_append(hdrs, line.data ? line.data : "");
		hdrs = tmp ? tmp : hdrs;
	}
	buf_free_secret(&line);
	/* No "Expect: 100-continue" round trip for small POSTs. */
	tmp = curl_slist_append(hdrs, "Expect:");
	hdrs = tmp ? tmp : hdrs;

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_blob) {
		struct curl_blob blob = {
		    .data = c->ca_blob, .len = c->ca_blob_len, .flags = CURL_BLOB_NOCOPY};

		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
	}
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CLOUD_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "dbosfs/" DBOSFS_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	switch (m) {
	case HTTP_GET:
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		break;
	case HTTP_POST:
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
		break;
	case HTTP_DELETE:
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
		break;
	}

	cc = curl_easy_perform(h);
	if (cc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
	else
		rc = transfer_error(cc, &x, errbuf, url, timeout_ms, label, e);
	/* The handle keeps pointers to hdrs and the body: drop them first. */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	/* curl_slist_append copied "Authorization: Bearer TOKEN". */
	for (tmp = hdrs; tmp; tmp = tmp->next)
		secret_wipe_str(tmp->data);
	curl_slist_free_all(hdrs);
	if (cc == CURLE_OK || cc == CURLE_HTTP_RETURNED_ERROR)
		pool_put(c, h);
	else
		curl_easy_cleanup(h); /* its connection may be half-used */
	if (rc < 0)
		buf_reset(&res->body);
	return rc;
}

int cloud_http_error(const struct http_result *res, enum request_kind kind, const char *label,
                     struct errmsg *e)
{
	char msg[1024], rid[128];
	int err = errno_from_http(res->status, kind);

	if (err == 0)
		err = -EIO; /* a 2xx is not an error: callers never get here with one */
	if (cloud_parse_error_body(res->body.data, res->body.len, msg, sizeof(msg), rid,
	                           sizeof(rid)) == 0) {
		for (char *p = msg; *p; p++)
			if ((unsigned char)*p < 0x20)
				*p = ' ';
		if (rid[0])
			return errmsg_set(e, err, "[%s] %s: %s (HTTP %ld)", rid, label, msg,
			                  res->status);
		return errmsg_set(e, err, "%s: %s (HTTP %ld)", label, msg, res->status);
	}
	return errmsg_set(e, err, "%s: HTTP %ld with no error message", label, res->status);
}

static int auth_failure(struct cloud *c, const char *label, const char *why, struct errmsg *e)
{
	return errmsg_set(e, -EACCES,
	                  "%s: DBOS Cloud credentials rejected (HTTP 401)%s%s; run `npx dbos-cloud "
	                  "login` to log in again",
	                  label, why ? " and refreshing them failed: " : "", why ? why : "");
}

int cloud_locks_init(struct cloud *c)
{
	pthread_condattr_t attr;
	int rc;

	pthread_mutex_init(&c->token_lock, NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&c->token_cond, &attr);
	pthread_condattr_destroy(&attr);
	return -rc;
}

void cloud_locks_destroy(struct cloud *c)
{
	pthread_cond_destroy(&c->token_cond);
	pthread_mutex_destroy(&c->token_lock);
	pthread_mutex_destroy(&c->pool_lock);
}

/* Waits (token_lock held) until no refresh is in flight, in steps of at
 * most 100 ms so a Ctrl-C'd caller is freed promptly. */
static int wait_refresh_idle(struct cloud *c, struct errmsg *e)
{
	while (c->refreshing) {
		struct timespec ts;

		if (op_interrupted())
			return errmsg_set(
			    e, -EINTR,
			    "interrupted while waiting for the DBOS Cloud token refresh");
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 100L * 1000 * 1000;
		if (ts.tv_nsec >= 1000L * 1000 * 1000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000L * 1000 * 1000;
		}
		pthread_cond_timedwait(&c->token_cond, &c->token_lock, &ts);
	}
	return 0;
}

/* The POST to /oauth/token, with no lock held. *token is malloc'd. */
static int request_new_token(struct cloud *c, const char *refresh_token, char **token,
                             struct errmsg *e)
{
	static const char label[] = "refreshing the DBOS Cloud token";
	struct http_result res = {0};
	struct buf form = BUF_INIT;
	char *url = NULL, *esc_rt = NULL, *esc_id = NULL;
	int rc;

	*token = NULL;
	esc_rt = curl_easy_escape(NULL, refresh_token, 0);
	esc_id = curl_easy_escape(NULL, c->client_id, 0);
	if (!esc_rt || !esc_id || asprintf(&url, "https://%s/oauth/token", c->auth_domain) < 0 ||
	    buf_printf(&form, "grant_type=refresh_token&client_id=%s&refresh_token=%s", esc_id,
	               esc_rt) < 0) {
		url = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	rc = cloud_http_perform(c, HTTP_POST, url, "application/x-www-form-urlencoded", form.data,
	                        NULL, c->timeout_ms, &res, label, e);
	if (rc < 0)
		goto out;
	if (res.status < 200 || res.status >= 300) {
		cloud_http_error(&res, REQ_READ, label, e);
		rc = -EACCES;
	} else {
		rc = cloud_parse_token_response(res.body.data, res.body.len, token, e);
	}
	/* An error body is the server's text: make sure it does not echo the
	 * refresh token back into a log or last_error. */
	if (rc < 0 && e) {
		redact_text_secret(e->text, sizeof(e->text), refresh_token);
	}
out:
	if (esc_rt) {
		secret_wipe_str(esc_rt);
		curl_free(esc_rt);
	}
	curl_free(esc_id);
	free(url);
	buf_free_secret(&form);
	buf_free_secret(&res.body);
	return rc;
}

/* Skips a leading "[request id] ": two failures that differ only there are
 * the same failure for the log. */
static const char *without_request_id(const char *s)
{
	const char *end;

	if (s[0] == '[' && (end = strstr(s, "] ")) != NULL)
		return end + 2;
	return s;
}

/* Records a failed refresh (token_lock held): starts the backoff, and logs
 * it unless the same failure was logged last. */
static void note_refresh_failure(struct cloud *c, const char *text)
{
	c->refresh_failed_ms = now_ms();
	if (!c->refresh_failed_ms)
		c->refresh_failed_ms = 1;
	c->refresh_backoff_ms = !c->refresh_backoff_ms ? REFRESH_BACKOFF_MS
	                        : c->refresh_backoff_ms * 2 > REFRESH_BACKOFF_MAX_MS
	                            ? REFRESH_BACKOFF_MAX_MS
	                            : c->refresh_backoff_ms * 2;
	snprintf(c->refresh_failure, sizeof(c->refresh_failure), "%s", text);
	if (strcmp(without_request_id(c->refresh_logged), without_request_id(text)) != 0) {
		log_error("refreshing the DBOS Cloud token failed (not logged again until it "
		          "changes): %s",
		          text);
		snprintf(c->refresh_logged, sizeof(c->refresh_logged), "%s", text);
	}
}

int cloud_refresh_token_locked(struct cloud *c, unsigned seen_gen, struct errmsg *e)
{
	struct errmsg werr, local;
	char *refresh_token, *token = NULL;
	long long exp = 0;
	int rc;

	if (!e)
		e = &local;
	rc = wait_refresh_idle(c, e);
	if (rc < 0)
		return rc;
	if (c->token_generation != seen_gen)
		return 0; /* another thread refreshed while we waited */
	if (!c->creds.refresh_token)
		return errmsg_set(e, -EACCES,
		                  "the access token in %s has expired or was rejected, and the "
		                  "file has no refreshToken",
		                  c->creds.path);
	if (c->refresh_failed_ms && now_ms() - c->refresh_failed_ms < c->refresh_backoff_ms)
		return errmsg_set(e, -EACCES, "%s", c->refresh_failure);
	refresh_token = strdup(c->creds.refresh_token);
	if (!refresh_token)
		return errmsg_set(e, -ENOMEM, "out of memory");

	/* Single flight: others wait on token_cond, not on the mutex, so
	 * they stay interruptible and nobody blocks for the whole POST. */
	c->refreshing = true;
	pthread_mutex_unlock(&c->token_lock);
	rc = request_new_token(c, refresh_token, &token, e);
	if (rc == 0) {
		jwt_exp(token, &exp);
		/* Only a new token is written back (creds.token changes only
		 * under `refreshing`, which is ours now). Keep the mount working
		 * even if the file cannot be rewritten. */
		if (strcmp(token, c->creds.token) == 0)
			log_event("the DBOS Cloud token refresh returned the same token");
		else if (cloud_credentials_write_token(c->creds.path, token, &werr) < 0)
			log_error("refreshed the DBOS Cloud access token but could not save it: %s",
			          werr.text);
		else
			log_event("refreshed the DBOS Cloud access token and saved it to %s",
			          c->creds.path);
	}
	secret_wipe_str(refresh_token);
	free(refresh_token);
	pthread_mutex_lock(&c->token_lock);

	if (rc == 0) {
		secret_wipe_str(c->creds.token);
		free(c->creds.token);
		c->creds.token = token;
		c->token_exp = exp;
		c->token_generation++;
		c->refresh_failed_ms = 0;
		c->refresh_backoff_ms = 0;
		c->refresh_logged[0] = '\0';
	} else if (rc != -EINTR) {
		/* An interrupted caller says nothing about the auth server. */
		note_refresh_failure(c, e->text);
	}
	c->refreshing = false;
	pthread_cond_broadcast(&c->token_cond);
	return rc;
}

int cloud_renew_token_locked(struct cloud *c, unsigned seen_gen, struct errmsg *e)
{
	struct cloud_credentials fresh;
	struct errmsg ignored;
	long long exp = 0;
	int rc;

	rc = wait_refresh_idle(c, e);
	if (rc < 0)
		return rc;
	if (c->token_generation != seen_gen)
		return 0;
	if (cloud_credentials_load(c->creds.path, &fresh, &ignored) == 0 &&
	    strcmp(fresh.token, c->creds.token) != 0 && jwt_exp(fresh.token, &exp) == 0 &&
	    (exp == 0 || (long long)time(NULL) < exp)) {
		/* Logged in again while mounted: take the new credentials. */
		cloud_credentials_free(&c->creds);
		c->creds = fresh;
		c->token_exp = exp;
		c->token_generation++;
		c->refresh_failed_ms = 0;
		c->refresh_backoff_ms = 0;
		c->refresh_logged[0] = '\0';
		c->reject_until_ms = 0; /* a new login deserves a try at once */
		log_event("using the new DBOS Cloud token found in %s", c->creds.path);
		return 0;
	}
	cloud_credentials_free(&fresh);
	if (c->reject_until_ms && now_ms() < c->reject_until_ms)
		return errmsg_set(e, -EACCES,
		                  "DBOS Cloud rejected even a freshly refreshed token; the next "
		                  "refresh is in %lld s",
		                  (c->reject_until_ms - now_ms() + 999) / 1000);
	return cloud_refresh_token_locked(c, seen_gen, e);
}

/* A fresh token was rejected too (token_lock held): back off further, and
 * log only the start of the storm. */
static void note_token_rejected(struct cloud *c)
{
	bool starting = c->reject_backoff_ms == 0;

	c->reject_backoff_ms = starting ? REFRESH_BACKOFF_MS
	                       : c->reject_backoff_ms * 2 > REFRESH_BACKOFF_MAX_MS
	                           ? REFRESH_BACKOFF_MAX_MS
	                           : c->reject_backoff_ms * 2;
	c->reject_until_ms = now_ms() + c->reject_backoff_ms;
	if (starting)
		log_error("DBOS Cloud rejects even a freshly refreshed token (HTTP 401); "
		          "refreshing again only with backoff (%d s, doubling up to %d s) until a "
		          "request succeeds",
		          REFRESH_BACKOFF_MS / 1000, REFRESH_BACKOFF_MAX_MS / 1000);
}

/* A request succeeded: a 401 storm is over. */
static void note_token_accepted(struct cloud *c)
{
	pthread_mutex_lock(&c->token_lock);
	if (c->reject_backoff_ms) {
		c->reject_backoff_ms = 0;
		c->reject_until_ms = 0;
		log_event("DBOS Cloud accepts the token again");
	}
	pthread_mutex_unlock(&c->token_lock);
}

/* A copy of the current token, refreshed first if its exp is (nearly)
 * passed. Only -EINTR is an error: after a failed refresh the old token is
 * tried, and the 401 then explains. */
static int token_snapshot(struct cloud *c, char **out, unsigned *generation, const char *label,
                          struct errmsg *e)
{
	long long now = (long long)time(NULL);
	int rc = 0;

	pthread_mutex_lock(&c->token_lock);
	if (c->token_exp && c->creds.refresh_token && now >= c->token_exp - 10 &&
	    !(c->refreshing && now < c->token_exp)) {
		/* (A still valid token is used while a refresh is in flight.) */
		struct errmsg ignored;

		if (cloud_refresh_token_locked(c, c->token_generation, &ignored) == -EINTR)
			rc = errmsg_set(e, -EINTR, "%s: interrupted", label);
	}
	if (rc == 0) {
		*out = strdup(c->creds.token);
		*generation = c->token_generation;
		if (!*out)
			rc = errmsg_set(e, -ENOMEM, "out of memory");
	}
	pthread_mutex_unlock(&c->token_lock);
	return rc;
}

/* An error body goes into messages: if a broken server echoed the bearer
 * token, cut it out first (the body is rewritten in place). */
static void redact_token_echo(struct http_result *res, const char *token)
{
	struct redactor r = REDACTOR_INIT;

	if (redactor_add(&r, token) == 0)
		redact_buf(&r, &res->body);
	else
		buf_free_secret(&res->body); /* cannot check it: show none of it */
	redactor_free(&r);
}

int cloud_api_call(struct cloud *c, enum http_method m, const char *path, bool with_org,
                   const char *json_body, enum request_kind kind, long timeout_ms,
                   struct http_result *res, const char *label, struct errmsg *e)
{
	char *url = NULL, *token = NULL;
	unsigned gen = 0;
	int rc;

	if (asprintf(&url, "%s%s", with_org ? c->base_url : c->api_root, path) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	for (int attempt = 0; attempt < 2; attempt++) {
		rc = token_snapshot(c, &token, &gen, label, e);
		if (rc < 0)
			break;
		rc = cloud_http_perform(c, m, url, "application/json", json_body, token, timeout_ms,
		                        res, label, e);
		if (rc == 0 && (res->status < 200 || res->status >= 300))
			redact_token_echo(res, token);
		secret_wipe_str(token);
		free(token);
		if (rc < 0)
			break;
		if (res->status == 401 && attempt == 0) {
			struct errmsg why;

			pthread_mutex_lock(&c->token_lock);
			/* Another thread may have refreshed meanwhile (gen moved). */
			rc = cloud_renew_token_locked(c, gen, &why);
			pthread_mutex_unlock(&c->token_lock);
			if (rc == -EINTR) {
				rc = errmsg_set(e, -EINTR, "%s: interrupted", label);
				break;
			}
			if (rc < 0) {
				rc = auth_failure(c, label, why.text, e);
				break;
			}
			continue;
		}
		if (res->status == 401) {
			pthread_mutex_lock(&c->token_lock);
			if (gen == c->token_generation)
				note_token_rejected(c);
			pthread_mutex_unlock(&c->token_lock);
			rc =
			    errmsg_set(e, -EACCES,
			               "%s: DBOS Cloud credentials rejected (HTTP 401), even a "
			               "freshly refreshed token; run `npx dbos-cloud login` to log "
			               "in again",
			               label);
			break;
		}
		if (res->status < 200 || res->status >= 300)
			rc = cloud_http_error(res, kind, label, e);
		else
			note_token_accepted(c);
		break;
	}
	free(url);
	return rc;
}
