/* Unit tests of the cloud provider's pure logic: base64url and JWT exp
 * decoding, instance JSON in all its variants, error bodies, profile and
 * token answers, credentials parsing and secret_scope sanitising; that
 * malformed token text never reaches a message; the single-flight token
 * refresh (waiting, Ctrl-C, backoff, one log line per failure). */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../tap.h"
#include "cloud_private.h"
#include "log.h"

#define S(lit) lit, strlen(lit)

static void test_base64url(void)
{
	struct buf b = BUF_INIT;

	/* "hello?>" exercises both URL-safe characters (- and _). */
	CHECK(base64url_decode(S("aGVsbG8_Pg"), &b) == 0 && strcmp(b.data, "hello?>") == 0);
	buf_reset(&b);
	CHECK(base64url_decode(S("aGVsbG8_Pg=="), &b) == 0 && strcmp(b.data, "hello?>") == 0);
	buf_reset(&b);
	CHECK(base64url_decode(S("-_-_"), &b) == 0 && b.len == 3 &&
	      (unsigned char)b.data[0] == 0xfb && (unsigned char)b.data[1] == 0xff &&
	      (unsigned char)b.data[2] == 0xbf);
	buf_reset(&b);
	/* Padding lengths 0, 1 and 2. */
	CHECK(base64url_decode(S("YWJj"), &b) == 0 && strcmp(b.data, "abc") == 0);
	buf_reset(&b);
	CHECK(base64url_decode(S("YWI"), &b) == 0 && strcmp(b.data, "ab") == 0);
	buf_reset(&b);
	CHECK(base64url_decode(S("YQ"), &b) == 0 && strcmp(b.data, "a") == 0);
	buf_reset(&b);
	CHECK(base64url_decode(S(""), &b) == 0 && b.len == 0);
	buf_reset(&b);
	CHECK(base64url_decode(S("YWJjZ"), &b) == -EINVAL); /* 1 leftover char */
	buf_reset(&b);
	CHECK(base64url_decode(S("YW.j"), &b) == -EINVAL);
	buf_free(&b);
}

static void test_jwt_exp(void)
{
	long long exp = -1;

	/* {"alg":"none"} . {"sub":"x","exp":1700000000} . sig */
	CHECK(jwt_exp("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiZXhwIjoxNzAwMDAwMDAwfQ.c2ln", &exp) ==
	          0 &&
	      exp == 1700000000LL);
	/* Payload needing padding: {"exp":2000000000,"a":"b"} */
	CHECK(jwt_exp("h.eyJleHAiOjIwMDAwMDAwMDAsImEiOiJiIn0.s", &exp) == 0 && exp == 2000000000LL);
	/* The same payload with explicit padding. */
	CHECK(jwt_exp("h.eyJleHAiOjIwMDAwMDAwMDAsImEiOiJiIn0=.s", &exp) == 0 &&
	      exp == 2000000000LL);
	/* No exp claim: 0, not an error. {"sub":"x"} */
	exp = -1;
	CHECK(jwt_exp("h.eyJzdWIiOiJ4In0.s", &exp) == 0 && exp == 0);
	/* exp as a float. {"exp":1.5e9} */
	CHECK(jwt_exp("h.eyJleHAiOjEuNWU5fQ.s", &exp) == 0 && exp == 1500000000LL);
	CHECK(jwt_exp("not-a-jwt", &exp) == -EINVAL);
	CHECK(jwt_exp("a.b", &exp) == -EINVAL);
	CHECK(jwt_exp("a.!!!.c", &exp) == -EINVAL);
	CHECK(jwt_exp("a.WzFd.c", &exp) == -EINVAL); /* [1]: not an object */
}

static void test_instance_variants(void)
{
	struct instance_list l;
	struct errmsg e;
	const char *body =
	    "[{\"PostgresInstanceName\":\"mydb\",\"Status\":\"available\","
	    "\"HostName\":\"h.rds.amazonaws.com\",\"Port\":5432,\"DatabaseUsername\":\"dbos_user\","
	    "\"IsLinked\":false,\"SupabaseReference\":null,\"DBOSAdminName\":\"adm\"},"
	    /* old server: AdminUsername; unknown fields; Port as string */
	    "{\"PostgresInstanceName\":\"old\",\"Status\":\"backing-up\",\"HostName\":\"h2\","
	    "\"Port\":\"6543\",\"AdminUsername\":\"legacy\",\"Extra\":{\"x\":[1,2]},\"N\":3},"
	    /* minimal */
	    "{\"PostgresInstanceName\":\"bare\"},"
	    /* linked Supabase */
	    "{\"PostgresInstanceName\":\"sb\",\"Status\":\"available\",\"IsLinked\":true,"
	    "\"SupabaseReference\":\"abcdefghijkl\",\"HostName\":null,\"Port\":null},"
	    /* not instances: skipped */
	    "{\"Status\":\"available\"},42,null,{\"PostgresInstanceName\":7},"
	    "{\"PostgresInstanceName\":\"this-name-is-far-too-long-to-fit-in-the-struct\"},"
	    "{\"PostgresInstanceName\":\"a/b\"},"
	    "{\"PostgresInstanceName\":\"ctl\",\"Status\":\"bad\\nstatus\",\"Port\":99999}]";

	CHECK(cloud_parse_instance_list(S(body), &l, &e) == 0);
	CHECK(l.count == 5);
	if (l.count == 5) {
		CHECK(strcmp(l.items[0].name, "mydb") == 0);
		CHECK(strcmp(l.items[0].status, "available") == 0);
		CHECK(strcmp(l.items[0].host, "h.rds.amazonaws.com") == 0);
		CHECK(l.items[0].port == 5432);
		CHECK(strcmp(l.items[0].username, "dbos_user") == 0);
		CHECK(strcmp(l.items[0].admin_name, "adm") == 0);
		CHECK(!l.items[0].linked && l.items[0].supabase_ref[0] == '\0');

		CHECK(strcmp(l.items[1].username, "legacy") == 0);
		CHECK(l.items[1].port == 6543);
		CHECK(strcmp(l.items[1].status, "backing-up") == 0);

		CHECK(strcmp(l.items[2].name, "bare") == 0 && l.items[2].status[0] == '\0');
		CHECK(l.items[2].host[0] == '\0' && l.items[2].port == 0);
		CHECK(l.items[2].username[0] == '\0' && !l.items[2].linked);

		CHECK(l.items[3].linked && strcmp(l.items[3].supabase_ref, "abcdefghijkl") == 0);
		CHECK(l.items[3].host[0] == '\0' && l.items[3].port == 0);

		/* No control characters survive; impossible ports become 0. */
		CHECK(strcmp(l.items[4].status, "bad?status") == 0);
		CHECK(l.items[4].port == 0);
	}
	instance_list_free(&l);

	CHECK(cloud_parse_instance_list(S("[]"), &l, &e) == 0 && l.count == 0);
	e.text[0] = '\0';
	CHECK(cloud_parse_instance_list(S("{\"PostgresInstanceName\":\"x\"}"), &l, &e) == -EIO);
	CHECK(strstr(e.text, "expected a JSON array") != NULL);
	CHECK(cloud_parse_instance_list(S("[{\"PostgresInstanceName\":\"x\""), &l, &e) == -EIO);
	CHECK(strstr(e.text, "malformed response") != NULL);
	CHECK(cloud_parse_instance_list("", 0, &l, &e) == -EIO);
	CHECK(cloud_parse_instance_list(S("<html>502</html>"), &l, &e) == -EIO);
}

static void test_single_instance(void)
{
	struct instance i;
	struct errmsg e;

	CHECK(
	    cloud_parse_instance(S("{\"PostgresInstanceName\":\"one\",\"Status\":\"provisioning\","
	                           "\"Port\":5432.0}"),
	                         &i, &e) == 0);
	CHECK(strcmp(i.name, "one") == 0 && strcmp(i.status, "provisioning") == 0 &&
	      i.port == 5432);
	CHECK(cloud_parse_instance(S("{\"Status\":\"available\"}"), &i, &e) == -EIO);
	CHECK(cloud_parse_instance(S("[1]"), &i, &e) == -EIO);
	CHECK(cloud_parse_instance(S("{\"PostgresInstanceName\":\"one\""), &i, &e) == -EIO);
}

static void test_error_body(void)
{
	char msg[256], rid[64];

	CHECK(cloud_parse_error_body(S("{\"message\":\"database exists\",\"statusCode\":409,"
	                               "\"requestID\":\"abc-123\",\"DetailedError\":\"x\"}"),
	                             msg, sizeof(msg), rid, sizeof(rid)) == 0);
	CHECK(strcmp(msg, "database exists") == 0 && strcmp(rid, "abc-123") == 0);
	CHECK(cloud_parse_error_body(S("{\"message\":\"no id\"}"), msg, sizeof(msg), rid,
	                             sizeof(rid)) == 0);
	CHECK(strcmp(msg, "no id") == 0 && rid[0] == '\0');
	/* OAuth style */
	CHECK(cloud_parse_error_body(S("{\"error\":\"invalid_grant\",\"error_description\":"
	                               "\"Unknown or invalid refresh token.\"}"),
	                             msg, sizeof(msg), rid, sizeof(rid)) == 0);
	CHECK(strcmp(msg, "Unknown or invalid refresh token.") == 0);
	CHECK(cloud_parse_error_body(S("<html>Bad Gateway</html>"), msg, sizeof(msg), rid,
	                             sizeof(rid)) == -EINVAL);
	CHECK(msg[0] == '\0' && rid[0] == '\0');
	CHECK(cloud_parse_error_body(S("{\"statusCode\":500}"), msg, sizeof(msg), rid,
	                             sizeof(rid)) == -EINVAL);
	CHECK(cloud_parse_error_body(NULL, 0, msg, sizeof(msg), rid, sizeof(rid)) == -EINVAL);
	/* Truncation stays in bounds. */
	CHECK(cloud_parse_error_body(S("{\"message\":\"0123456789\"}"), msg, 5, rid, sizeof(rid)) ==
	          0 &&
	      strcmp(msg, "0123") == 0);
}

static void test_http_error_format(void)
{
	struct http_result r = {.status = 409};
	struct errmsg e;

	buf_puts(&r.body, "{\"message\":\"taken\",\"statusCode\":409,\"requestID\":\"r1\"}");
	CHECK(cloud_http_error(&r, REQ_CREATE, "Failed to provision mydb", &e) == -EEXIST);
	CHECK(strcmp(e.text, "[r1] Failed to provision mydb: taken (HTTP 409)") == 0);
	CHECK(cloud_http_error(&r, REQ_MUTATE, "Failed to destroy mydb", &e) == -EBUSY);
	buf_reset(&r.body);
	buf_puts(&r.body, "{\"message\":\"line1\\nline2\"}");
	r.status = 500;
	CHECK(cloud_http_error(&r, REQ_READ, "L", &e) == -EIO);
	CHECK(strcmp(e.text, "L: line1 line2 (HTTP 500)") == 0);
	buf_reset(&r.body);
	r.status = 429;
	CHECK(cloud_http_error(&r, REQ_READ, "L", &e) == -EAGAIN);
	CHECK(strcmp(e.text, "L: HTTP 429 with no error message") == 0);
	buf_free(&r.body);
}

static void test_profile_and_token(void)
{
	char name[64], org[64], *tok = NULL;
	struct errmsg e;

	CHECK(cloud_parse_profile(S("{\"Name\":\"alice\",\"Email\":\"a@x\",\"Organization\":"
	                            "\"acme\",\"SubscriptionPlan\":\"pro\"}"),
	                          name, sizeof(name), org, sizeof(org), &e) == 0);
	CHECK(strcmp(name, "alice") == 0 && strcmp(org, "acme") == 0);
	CHECK(cloud_parse_profile(S("{\"Name\":\"bob\"}"), name, sizeof(name), org, sizeof(org),
	                          &e) == 0 &&
	      org[0] == '\0');
	CHECK(cloud_parse_profile(S("{\"Organization\":\"x\"}"), name, sizeof(name), org,
	                          sizeof(org), &e) == -EIO);

	CHECK(cloud_parse_token_response(S("{\"access_token\":\"a.b.c\\r\\n\",\"expires_in\":"
	                                   "86400,\"token_type\":\"Bearer\"}"),
	                                 &tok, &e) == 0);
	CHECK(tok && strcmp(tok, "a.b.c") == 0);
	free(tok);
	CHECK(cloud_parse_token_response(S("{\"token_type\":\"Bearer\"}"), &tok, &e) == -EIO &&
	      !tok);
	CHECK(cloud_parse_token_response(S("{\"access_token\":\"\"}"), &tok, &e) == -EIO);
	CHECK(cloud_parse_token_response(S("nope"), &tok, &e) == -EIO);
}

static void test_credentials(void)
{
	struct cloud_credentials c;
	struct errmsg e;

	CHECK(cloud_credentials_parse(S("{\"token\":\"t.o.k\\r\\n\",\"refreshToken\":\"rt\","
	                                "\"userName\":\"alice\",\"organization\":\"acme\"}"),
	                              "/x/credentials", &c, &e) == 0);
	CHECK(c.token && strcmp(c.token, "t.o.k") == 0);
	CHECK(c.refresh_token && strcmp(c.refresh_token, "rt") == 0);
	CHECK(c.user_name && strcmp(c.user_name, "alice") == 0);
	CHECK(c.organization && strcmp(c.organization, "acme") == 0);
	CHECK(c.path && strcmp(c.path, "/x/credentials") == 0);
	cloud_credentials_free(&c);

	CHECK(cloud_credentials_parse(S("{\"token\":\"t\"}"), "/p", &c, &e) == 0);
	CHECK(c.refresh_token == NULL && c.organization == NULL);
	cloud_credentials_free(&c);
	/* An empty refreshToken counts as none. */
	CHECK(cloud_credentials_parse(S("{\"token\":\"t\",\"refreshToken\":\"\"}"), "/p", &c, &e) ==
	          0 &&
	      c.refresh_token == NULL);
	cloud_credentials_free(&c);

	CHECK(cloud_credentials_parse(S("{\"token\":\"\"}"), "/p", &c, &e) == -EINVAL);
	CHECK(strstr(e.text, "/p") && strstr(e.text, "dbos-cloud login"));
	CHECK(cloud_credentials_parse(S("{\"token\":5}"), "/p", &c, &e) == -EINVAL);
	CHECK(cloud_credentials_parse(S("{token"), "/p", &c, &e) == -EINVAL);
	CHECK(strstr(e.text, "malformed credentials file /p") != NULL);
}

static void test_write_token(void)
{
	char dir[] = "/tmp/dbosfs-cloud-unit-XXXXXX", path[256], text[512];
	struct cloud_credentials c;
	struct errmsg e;
	struct stat st;
	int fd;
	ssize_t n;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/credentials", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	CHECK(fd >= 0);
	n = write(fd, S("{\"token\":\"old\",\"refreshToken\":\"rt\",\"userName\":\"u\","
	                "\"organization\":\"o\",\"future\":[1]}"));
	CHECK(n > 0);
	close(fd);
	chmod(path, 0640);

	CHECK(cloud_credentials_write_token(path, "new.tok.en", &e) == 0);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0640);
	CHECK(cloud_credentials_load(path, &c, &e) == 0);
	CHECK(c.token && strcmp(c.token, "new.tok.en") == 0);
	CHECK(c.refresh_token && strcmp(c.refresh_token, "rt") == 0);
	CHECK(c.organization && strcmp(c.organization, "o") == 0);
	cloud_credentials_free(&c);
	fd = open(path, O_RDONLY);
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	CHECK(strstr(text, "\"future\":[1]") != NULL); /* unknown fields kept */
	CHECK(strchr(text, '\n') == NULL);             /* compact, like the CLI */

	CHECK(cloud_credentials_load("/nonexistent/credentials", &c, &e) == -ENOENT);
	CHECK(strstr(e.text, "cannot read credentials file /nonexistent/credentials") != NULL);
	CHECK(cloud_credentials_write_token("/nonexistent/credentials", "x", &e) < 0);

	unlink(path);
	rmdir(dir);
}

static void test_scope(void)
{
	char out[64];

	cloud_sanitize_scope("cloud-127.0.0.1:8443-acme", out, sizeof(out));
	CHECK(strcmp(out, "cloud-127.0.0.1_8443-acme") == 0);
	cloud_sanitize_scope("cloud-cloud.dbos.dev-Org Name/../x", out, sizeof(out));
	CHECK(strcmp(out, "cloud-cloud.dbos.dev-Org_Name_.._x") == 0);
	cloud_sanitize_scope("a\xc3\xa9z[::1]", out, sizeof(out));
	CHECK(strcmp(out, "a__z___1_") == 0);
	cloud_sanitize_scope("abcdefghij", out, 5);
	CHECK(strcmp(out, "abcd") == 0);
	cloud_sanitize_scope("cloud-h-o!@#$%^&*() \t\n", out, sizeof(out));
	CHECK(strlen(out) == strlen("cloud-h-o!@#$%^&*() \t\n"));
	CHECK(strspn(out, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") ==
	      strlen(out));
}

static void test_ca_blob(void)
{
	static const char pem[] = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n";
	char path[] = "/tmp/dbosfs-cloud-ca-XXXXXX";
	struct cloud c = {0};
	struct errmsg e;
	struct stat st;
	int fd = mkstemp(path);

	CHECK(fd >= 0 && write(fd, pem, strlen(pem)) == (ssize_t)strlen(pem));
	close(fd);
	CHECK(cloud_http_load_cas(&c, NULL, &e) == 0 && c.ca_blob == NULL); /* curl's default */
	CHECK(cloud_http_load_cas(&c, path, &e) == 0 && c.ca_blob != NULL);
	/* The extra CA is added to the system CAs, not instead of them. */
	CHECK(c.ca_blob_len >= strlen(pem) &&
	      strcmp(c.ca_blob + c.ca_blob_len - strlen(pem), pem) == 0);
	if (stat("/etc/ssl/certs/ca-certificates.crt", &st) == 0)
		CHECK(c.ca_blob_len > (size_t)st.st_size);
	free(c.ca_blob);
	c.ca_blob = NULL;
	fd = open(path, O_WRONLY | O_TRUNC);
	CHECK(fd >= 0 && write(fd, "junk\n", 5) == 5);
	close(fd);
	CHECK(cloud_http_load_cas(&c, path, &e) == -EINVAL && strstr(e.text, "no PEM"));
	unlink(path);
	CHECK(cloud_http_load_cas(&c, path, &e) == -ENOENT && strstr(e.text, "cannot read cafile"));
}

/* Malformed JSON that breaks right at a token: jansson's own message
 * would quote it ("near '"FAKE..."). */
static void test_no_token_in_parse_errors(void)
{
	static const char *const bodies[] = {
	    "{\"access_token\":\"FAKETOKENxyz123",          /* unterminated string */
	    "{\"access_token\":\"FAKETOKENxyz123\x01\"}",   /* control character */
	    "{\"access_token\":FAKETOKENxyz123}",           /* bare word */
	    "{\"access_token\":\"FAKETOKENxyz123\" \"x\"}", /* missing colon/comma */
	};
	struct cloud_credentials c;
	struct errmsg e;
	char *tok = NULL, text[256];

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		memset(&e, 0, sizeof(e));
		CHECK(cloud_parse_token_response(bodies[i], strlen(bodies[i]), &tok, &e) == -EIO);
		CHECK(!tok);
		CHECK(strstr(e.text, "malformed response to the token refresh") != NULL);
		CHECK(strstr(e.text, "FAKETOKEN") == NULL);
		CHECK(strstr(e.text, "at byte") != NULL);

		/* The same text as a credentials file ("token" instead). */
		snprintf(text, sizeof(text), "%s", bodies[i]);
		memcpy(strstr(text, "access_token"), "tokenxxxxxxx", 12);
		memset(&e, 0, sizeof(e));
		CHECK(cloud_credentials_parse(text, strlen(text), "/p", &c, &e) == -EINVAL);
		CHECK(strstr(e.text, "malformed credentials file /p") != NULL);
		CHECK(strstr(e.text, "FAKETOKEN") == NULL);
		CHECK(strstr(e.text, "line 1, column") != NULL);
	}
	/* Other bodies may still be quoted: they help and hold no secret. */
	CHECK(cloud_parse_instance(S("{\"PostgresInstanceName\": oops}"), &(struct instance){0},
	                           &e) == -EIO);
	CHECK(strstr(e.text, "oops") != NULL);
	CHECK(strcmp(cloud_json_error_kind(json_error_premature_end_of_input),
	             "unexpected end of input") == 0);
}

static void test_wiping_allocator(void)
{
	json_malloc_t m = NULL;
	json_free_t f = NULL;
	json_t *root;
	char *dump;

	cloud_json_use_wiping_allocator();
	json_get_alloc_funcs(&m, &f);
	CHECK(m == malloc && f == cloud_json_wiping_free);
	/* Blocks still come from malloc: free() on json_dumps output, as
	 * util/content.c does, stays valid (ASan would object otherwise). */
	root = json_loads("{\"token\":\"a.b.c\",\"n\":[1,2,3]}", 0, NULL);
	CHECK(root != NULL);
	dump = json_dumps(root, JSON_COMPACT);
	CHECK(dump && strcmp(dump, "{\"token\":\"a.b.c\",\"n\":[1,2,3]}") == 0);
	free(dump);
	json_decref(root);
	cloud_json_wiping_free(NULL);
}

/* ---- single-flight refresh, without a server ---------------------------- */

static int interrupted_always(void)
{
	return 1;
}

static long long elapsed_ms(long long t0)
{
	return now_ms() - t0;
}

static void cloud_init_for_test(struct cloud *c)
{
	memset(c, 0, sizeof(*c));
	CHECK(cloud_locks_init(c) == 0);
	/* Nothing listens on port 1: a request that is made fails at once
	 * with ECONNREFUSED, which no test below expects to see. */
	c->auth_domain = "127.0.0.1:1";
	c->client_id = CLOUD_DEV_CLIENT_ID;
	c->timeout_ms = 3000;
	c->creds.path = "/nonexistent/credentials";
	c->creds.token = strdup("old.token.value");
	c->creds.refresh_token = strdup("rt-unit");
	c->token_generation = 7;
}

static void cloud_fini_for_test(struct cloud *c)
{
	cloud_http_pool_drain(c);
	free(c->creds.token);
	free(c->creds.refresh_token);
	cloud_locks_destroy(c);
}

/* Plays the thread whose refresh is in flight: publishes after 300 ms. */
static void *finish_refresh_later(void *arg)
{
	struct cloud *c = arg;

	usleep(300 * 1000);
	pthread_mutex_lock(&c->token_lock);
	free(c->creds.token);
	c->creds.token = strdup("new.token.value");
	c->token_generation++;
	c->refreshing = false;
	pthread_cond_broadcast(&c->token_cond);
	pthread_mutex_unlock(&c->token_lock);
	return NULL;
}

static int count_lines_with(const char *needle)
{
	struct buf b = BUF_INIT;
	int n = 0;

	CHECK(log_snapshot(&b) == 0);
	for (const char *p = b.data; p && (p = strstr(p, needle)) != NULL; p++)
		n++;
	buf_free(&b);
	return n;
}

static void test_single_flight_refresh(void)
{
	struct cloud c;
	struct errmsg e;
	pthread_t th;
	long long t0;
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);

	/* A refresh in flight: the caller waits for it (on the condition
	 * variable, the mutex is free meanwhile) and takes its result. */
	cloud_init_for_test(&c);
	c.refreshing = true;
	CHECK(pthread_create(&th, NULL, finish_refresh_later, &c) == 0);
	t0 = now_ms();
	pthread_mutex_lock(&c.token_lock);
	rc = cloud_refresh_token_locked(&c, 7, &e);
	CHECK(rc == 0);
	CHECK(strcmp(c.creds.token, "new.token.value") == 0 && c.token_generation == 8);
	pthread_mutex_unlock(&c.token_lock);
	CHECK(elapsed_ms(t0) >= 250 && elapsed_ms(t0) < 2000);
	pthread_join(th, NULL);
	/* renew after a 401 takes the same path. */
	c.refreshing = true;
	CHECK(pthread_create(&th, NULL, finish_refresh_later, &c) == 0);
	pthread_mutex_lock(&c.token_lock);
	CHECK(cloud_renew_token_locked(&c, 8, &e) == 0 && c.token_generation == 9);
	pthread_mutex_unlock(&c.token_lock);
	pthread_join(th, NULL);
	cloud_fini_for_test(&c);

	/* Ctrl-C while waiting: -EINTR within one 100 ms step. */
	cloud_init_for_test(&c);
	c.refreshing = true;
	op_interrupted_hook = interrupted_always;
	t0 = now_ms();
	pthread_mutex_lock(&c.token_lock);
	memset(&e, 0, sizeof(e));
	CHECK(cloud_refresh_token_locked(&c, 7, &e) == -EINTR);
	CHECK(strstr(e.text, "interrupted") != NULL);
	CHECK(cloud_renew_token_locked(&c, 7, &e) == -EINTR);
	pthread_mutex_unlock(&c.token_lock);
	op_interrupted_hook = NULL;
	CHECK(elapsed_ms(t0) < 500);
	CHECK(c.refresh_failed_ms == 0); /* an interruption is no failure */
	cloud_fini_for_test(&c);

	/* A failed refresh backs off: the next callers get its message back
	 * without a request; and it is logged once, not per attempt. */
	cloud_init_for_test(&c);
	pthread_mutex_lock(&c.token_lock);
	memset(&e, 0, sizeof(e));
	int before = count_lines_with("refreshing the DBOS Cloud token failed");
	rc = cloud_refresh_token_locked(&c, 7, &e);
	CHECK(rc < 0 && rc != -EINTR && !c.refreshing);
	CHECK(strstr(e.text, "cannot connect") != NULL);
	CHECK(c.refresh_failed_ms != 0 && strcmp(c.refresh_failure, e.text) == 0);
	CHECK(count_lines_with("refreshing the DBOS Cloud token failed") == before + 1);
	snprintf(c.refresh_failure, sizeof(c.refresh_failure), "remembered failure");
	CHECK(cloud_refresh_token_locked(&c, 7, &e) == -EACCES);
	CHECK(strcmp(e.text, "remembered failure") == 0);
	/* After the backoff: tried again, fails the same way, not re-logged. */
	c.refresh_failed_ms = now_ms() - REFRESH_BACKOFF_MS - 1;
	rc = cloud_refresh_token_locked(&c, 7, &e);
	CHECK(rc < 0 && strstr(e.text, "cannot connect") != NULL);
	CHECK(count_lines_with("refreshing the DBOS Cloud token failed") == before + 1);
	/* Someone else refreshed since the caller's token: nothing to do. */
	CHECK(cloud_refresh_token_locked(&c, 6, &e) == 0);
	pthread_mutex_unlock(&c.token_lock);
	CHECK(strcmp(c.creds.token, "old.token.value") == 0 && c.token_generation == 7);
	cloud_fini_for_test(&c);

	curl_global_cleanup();
}

int main(void)
{
	test_base64url();
	test_jwt_exp();
	test_instance_variants();
	test_single_instance();
	test_error_body();
	test_http_error_format();
	test_profile_and_token();
	test_credentials();
	test_write_token();
	test_scope();
	test_ca_blob();
	test_no_token_in_parse_errors();
	test_wiping_allocator();
	test_single_flight_refresh();
	log_shutdown();
	return tap_done();
}
