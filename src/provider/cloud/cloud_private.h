/* Internals of the DBOS Cloud provider, shared by its source files and its
 * unit tests. Nothing outside src/provider/cloud includes this. */
#ifndef DBOSFS_CLOUD_PRIVATE_H
#define DBOSFS_CLOUD_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#include "buf.h"
#include "common.h"
#include "errmap.h"
#include "instance.h"
#include "secrets.h"

/* Overwrites a NUL-terminated secret in place. */
static inline void secret_wipe_str(char *s)
{
	if (s)
		secret_wipe(s, strlen(s));
}

/* Responses larger than this are refused: anything but the list is a few
 * KiB, so anything bigger is a broken or hostile server. The list holds
 * ~250 bytes per instance: 128 MiB is half a million instances. */
#define CLOUD_MAX_BODY           (4u * 1024 * 1024)
#define CLOUD_MAX_LIST_BODY      (128u * 1024 * 1024)
#define CLOUD_CONNECT_TIMEOUT_MS 5000L
#define CLOUD_TIMEOUT_MS         30000L
#define CLOUD_LIST_TIMEOUT_MS    15000L
/* How long the profile call and the first list are retried at mount. */
#define CLOUD_STARTUP_BUDGET_MS 20000LL
/* Easy handles kept for reuse (each keeps its live connections). */
#define CLOUD_POOL_MAX 8

#define CLOUD_PROD_DOMAIN      "cloud.dbos.dev"
#define CLOUD_PROD_AUTH_DOMAIN "login.dbos.dev"
#define CLOUD_DEV_AUTH_DOMAIN  "dbos-inc.us.auth0.com"
#define CLOUD_PROD_CLIENT_ID   "6p7Sjxf13cyLMkdwn14MxlH7JdhILled"
#define CLOUD_DEV_CLIENT_ID    "G38fLmVErczEo9ioCFjVIHea6yd0qMZu"

/* The hosts a mount and `dbosfs login` talk to, picked the same way: the
 * API host is the option, else $DBOS_DOMAIN, else production; the OAuth
 * host is the option, else production's for the production API and the
 * development one for any other. Each caller checks them with its own
 * rules and words. (cloud_provider.c) */
void cloud_pick_domains(const char *domain_opt, const char *auth_domain_opt, const char **domain,
                        const char **auth_domain);

/* ---- cloud_credentials.c ------------------------------------------------ */

/* The credentials file written by `npx dbos-cloud login`. */
struct cloud_credentials {
	char *path;          /* absolute, so write-back works after chdir("/") */
	char *token;         /* JWT access token */
	char *refresh_token; /* NULL when absent */
	char *user_name;
	char *organization;
};

/* Picks the file: explicit path, else ./.dbos/credentials, else
 * ~USER/.dbos/credentials of uid. Result is absolute; caller frees. */
int cloud_credentials_locate(const char *explicit_path, uid_t uid, char **out, struct errmsg *e);
int cloud_credentials_load(const char *path, struct cloud_credentials *c, struct errmsg *e);
/* Parses the file's JSON text (for tests and load). */
int cloud_credentials_parse(const char *text, size_t len, const char *path,
                            struct cloud_credentials *c, struct errmsg *e);
void cloud_credentials_free(struct cloud_credentials *c);
/* Replaces "token" in the file, keeping every other field, its mode and its
 * owner; written to a temporary file and renamed over the original. */
int cloud_credentials_write_token(const char *path, const char *token, struct errmsg *e);
/* Writes data to a temporary file next to path and renames it over path.
 * Mode and owner are like's; with like NULL, mode 0600 and the caller's. */
struct stat;
int cloud_credentials_replace(const char *path, const char *data, const struct stat *like,
                              struct errmsg *e);

/* Decodes base64url (padding optional) into out (NUL-terminated). */
int base64url_decode(const char *in, size_t len, struct buf *out);
/* The JWT's exp claim in seconds. 0 and *exp = 0 when the token has no exp;
 * -EINVAL when it is not a decodable JWT. */
int jwt_exp(const char *token, long long *exp);

/* ---- cloud_json.c ------------------------------------------------------- */

/* One instance object; -EINVAL when it has no usable PostgresInstanceName. */
struct json_t;
int cloud_instance_from_json(const struct json_t *obj, struct instance *out);
/* A JSON array of instances. Entries without a usable name are skipped;
 * anything that is not a JSON array is -EIO with a message. */
int cloud_parse_instance_list(const char *body, size_t len, struct instance_list *out,
                              struct errmsg *e);
int cloud_parse_instance(const char *body, size_t len, struct instance *out, struct errmsg *e);
/* {"message","statusCode","requestID"}: fills what is there (may be "").
 * Returns 0 if at least a message was found, else -EINVAL. */
int cloud_parse_error_body(const char *body, size_t len, char *message, size_t msgsz,
                           char *request_id, size_t ridsz);
/* {"Name","Organization",...} of GET /user/profile. */
int cloud_parse_profile(const char *body, size_t len, char *name, size_t namesz, char *org,
                        size_t orgsz, struct errmsg *e);
/* {"access_token",...} of POST /oauth/token; *token is malloc'd. */
int cloud_parse_token_response(const char *body, size_t len, char **token, struct errmsg *e);
/* Replaces every byte outside [A-Za-z0-9._-] with '_'. */
void cloud_sanitize_scope(const char *in, char *out, size_t outsz);
/* A fixed description of a jansson error code (json_error_code()). For
 * text that may hold a token, where jerr.text would quote the input. */
const char *cloud_json_error_kind(int code);
/* Makes jansson wipe every block before freeing it, so parsed tokens and
 * serialised credentials do not linger in freed memory. Process-wide;
 * blocks still come from malloc, so free() on json_dumps output stays
 * valid everywhere. Call before any other jansson use. */
void cloud_json_use_wiping_allocator(void);
/* The wiping free function installed above (for tests). */
void cloud_json_wiping_free(void *p);

/* ---- cloud_http.c ------------------------------------------------------- */

struct cloud {
	char *domain;      /* API host[:port] */
	char *auth_domain; /* OAuth host[:port] */
	const char *client_id;
	char *api_root; /* https://DOMAIN/v1alpha1 */
	char *base_url; /* https://DOMAIN/v1alpha1/ORG */
	char *org;
	char *user;
	long timeout_ms;
	long list_timeout_ms;
	long long startup_budget_ms;
	long long startup_deadline_ms; /* now_ms() deadline of the retries under way */
	atomic_bool listed_once;       /* a list has succeeded since the mount */
	/* The last GET /applications, as "INSTANCE\tLINE\n" rows sorted by
	 * instance; served by NAME/apps. Guarded by apps_lock. */
	pthread_mutex_t apps_lock;
	char *apps_rows;
	bool apps_failing; /* logged once per failure streak */

	/* Trusted CAs: system bundle plus the cafile, handed to every handle. */
	char *ca_blob;
	size_t ca_blob_len;
	/* The same trust for NAME/databases/'s PostgreSQL connections
	 * (sslmode=verify-full): the system bundle, or with a cafile,
	 * STATE_DIR/cloud-ca.pem holding ca_blob. NULL: no bundle found,
	 * sslmode=require (encrypted, server not verified). */
	char *pg_rootcert;

	/* Never held across the network: a refresh marks itself in
	 * `refreshing`, drops the lock for its POST and broadcasts
	 * token_cond when it has published the outcome. */
	pthread_mutex_t token_lock;
	pthread_cond_t token_cond;      /* CLOCK_MONOTONIC */
	bool refreshing;                /* a refresh POST is in flight */
	struct cloud_credentials creds; /* token guarded by token_lock */
	long long token_exp;            /* seconds; 0 unknown */
	unsigned token_generation;      /* bumped by every new token */
	/* A failed refresh is not retried for a few seconds (no hammering of
	 * the auth server by the refresher); its message is reused. */
	long long refresh_failed_ms;
	long long refresh_backoff_ms; /* doubles per failure, capped */
	char refresh_failure[ERRMSG_MAX];
	/* A 401 storm: the API rejected even a freshly refreshed token. No
	 * new refresh before reject_until_ms; the backoff doubles each time a
	 * fresh token is rejected again and ends with the first 2xx. */
	long long reject_backoff_ms; /* 0: not rejecting */
	long long reject_until_ms;
	/* The failure last written to the log: a repeat is not logged again. */
	char refresh_logged[ERRMSG_MAX];

	pthread_mutex_t pool_lock;
	void *pool[CLOUD_POOL_MAX]; /* idle CURL easy handles */
	size_t pool_len;
};

struct http_result {
	long status;
	struct buf body;
	size_t max_body; /* 0: CLOUD_MAX_BODY */
};

enum http_method { HTTP_GET, HTTP_POST, HTTP_DELETE };

/* One transfer. 0 when an HTTP answer arrived (any status, in res->status);
 * a negative errno with a message (prefixed by label) when it did not.
 * bearer and body may be NULL. */
int cloud_http_perform(struct cloud *c, enum http_method m, const char *url,
                       const char *content_type, const char *body, const char *bearer,
                       long timeout_ms, struct http_result *res, const char *label,
                       struct errmsg *e);
void http_result_free(struct http_result *r);
/* Frees idle handles (before fork, on stop). */
void cloud_http_pool_drain(struct cloud *c);
/* The system CA bundle's path (libcurl's default, else a usual place);
 * malloc'd, NULL if none is readable. */
char *cloud_http_system_cas(void);
/* Loads system CAs + cafile into c->ca_blob (cafile may be NULL). */
int cloud_http_load_cas(struct cloud *c, const char *cafile, struct errmsg *e);

/* An authenticated API call with the 401 → refresh → retry-once rule and
 * the error-body formatting. path is appended to base (after the org when
 * with_org). On success res holds the 2xx answer. */
int cloud_api_call(struct cloud *c, enum http_method m, const char *path, bool with_org,
                   const char *json_body, enum request_kind kind, long timeout_ms,
                   struct http_result *res, const char *label, struct errmsg *e);
/* Initialises / destroys token_lock, token_cond and pool_lock. */
int cloud_locks_init(struct cloud *c);
void cloud_locks_destroy(struct cloud *c);
/* Exchanges the refresh token for a new access token and writes it back.
 * Called and returns with token_lock held, but drops it during the POST.
 * Single-flight: while another refresh is in flight it waits for it
 * (-EINTR if the caller is interrupted meanwhile); if the token's
 * generation has moved past seen_gen, someone already refreshed and it
 * returns 0 at once. A failure within the backoff (REFRESH_BACKOFF_MS,
 * doubling per consecutive failure up to REFRESH_BACKOFF_MAX_MS) of the
 * last one returns that failure again without a request. */
int cloud_refresh_token_locked(struct cloud *c, unsigned seen_gen, struct errmsg *e);
/* After a 401 with a token of generation seen_gen: adopts the credentials
 * file's token if someone (a new `npx dbos-cloud login`) replaced it, else
 * refreshes, unless a 401 storm's backoff is running (-EACCES then).
 * Same locking as cloud_refresh_token_locked. */
int cloud_renew_token_locked(struct cloud *c, unsigned seen_gen, struct errmsg *e);
#define REFRESH_BACKOFF_MS     5000
#define REFRESH_BACKOFF_MAX_MS (5 * 60 * 1000)
/* Formats a non-2xx answer into e and returns its errno. */
int cloud_http_error(const struct http_result *res, enum request_kind kind, const char *label,
                     struct errmsg *e);

#endif
