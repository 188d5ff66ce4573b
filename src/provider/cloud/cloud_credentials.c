/* The credentials file of `npx dbos-cloud login`: finding it, reading it,
 * decoding the JWT's expiry, and writing a refreshed token back. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cloud_private.h"

/* The file is a few hundred bytes; refuse anything absurd. */
#define CREDENTIALS_MAX (256 * 1024)

int cloud_credentials_locate(const char *explicit_path, uid_t uid, char **out, struct errmsg *e)
{
	char cand[PATH_MAX];
	struct passwd pw, *res = NULL;
	char pwbuf[4096];

	*out = NULL;
	if (explicit_path && *explicit_path) {
		/* Resolve now: the daemon changes directory to / when detaching. */
		if (explicit_path[0] == '/') {
			*out = strdup(explicit_path);
		} else {
			char cwd[PATH_MAX];

			if (!getcwd(cwd, sizeof(cwd)))
				return errmsg_set(e, -errno, "cannot resolve credentials=%s: %s",
				                  explicit_path, strerror(errno));
			if (asprintf(out, "%s/%s", cwd, explicit_path) < 0)
				*out = NULL;
		}
		return *out ? 0 : errmsg_set(e, -ENOMEM, "out of memory");
	}
	if (getcwd(cand, sizeof(cand) - 32)) {
		strcat(cand, "/.dbos/credentials");
		if (access(cand, F_OK) == 0) {
			*out = strdup(cand);
			return *out ? 0 : errmsg_set(e, -ENOMEM, "out of memory");
		}
	}
	if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res && res->pw_dir) {
		snprintf(cand, sizeof(cand), "%s/.dbos/credentials", res->pw_dir);
		if (access(cand, F_OK) == 0) {
			*out = strdup(cand);
			return *out ? 0 : errmsg_set(e, -ENOMEM, "out of memory");
		}
	}
	return errmsg_set(e, -ENOENT,
	                  "no DBOS Cloud credentials: neither ./.dbos/credentials nor "
	                  "~/.dbos/credentials exists; run `npx dbos-cloud login` or pass "
	                  "-o credentials=FILE");
}

static char *dup_member(const json_t *root, const char *key)
{
	const json_t *v = json_object_get(root, key);

	return json_is_string(v) && *json_string_value(v) ? strdup(json_string_value(v)) : NULL;
}

int cloud_credentials_parse(const char *text, size_t len, const char *path,
                            struct cloud_credentials *c, struct errmsg *e)
{
	json_error_t jerr;
	json_t *root;
	size_t keep;

	memset(c, 0, sizeof(*c));
	root = json_loadb(text, len, 0, &jerr);
	/* Not jerr.text: it quotes the text near the error, which may be the
	 * token. Where and what kind of error is enough to find it. */
	if (!root)
		return errmsg_set(e, -EINVAL,
		                  "malformed credentials file %s: %s at line %d, column %d; run "
		                  "`npx dbos-cloud login` again",
		                  path, cloud_json_error_kind(json_error_code(&jerr)), jerr.line,
		                  jerr.column);
	if (!json_is_object(root) || !json_is_string(json_object_get(root, "token")) ||
	    !*json_string_value(json_object_get(root, "token"))) {
		json_decref(root);
		return errmsg_set(
		    e, -EINVAL,
		    "malformed credentials file %s: no \"token\"; run `npx dbos-cloud "
		    "login` again",
		    path);
	}
	c->token = dup_member(root, "token");
	c->refresh_token = dup_member(root, "refreshToken");
	c->user_name = dup_member(root, "userName");
	c->organization = dup_member(root, "organization");
	c->path = strdup(path);
	json_decref(root);
	if (!c->token || !c->path) {
		cloud_credentials_free(c);
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	/* Cut stray line ends; wipe the cut-off tail (later wipes stop at NUL). */
	keep = strcspn(c->token, "\r\n");

	secret_wipe(c->token + keep, strlen(c->token) - keep);
	return 0;
}

static int read_small_file(const char *path, struct buf *out, struct errmsg *e)
{
	char chunk[4096];
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot read credentials file %s: %s", path,
		                  strerror(errno));
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = errmsg_set(e, -errno, "cannot read credentials file %s: %s", path,
			                strerror(errno));
			break;
		}
		if (out->len + (size_t)n > CREDENTIALS_MAX) {
			rc = errmsg_set(e, -EFBIG, "credentials file %s is too large", path);
			break;
		}
		if (buf_append(out, chunk, (size_t)n) < 0) {
			rc = errmsg_set(e, -ENOMEM, "out of memory");
			break;
		}
	}
	close(fd);
	return rc;
}

int cloud_credentials_load(const char *path, struct cloud_credentials *c, struct errmsg *e)
{
	struct buf text = BUF_INIT;
	int rc;

	memset(c, 0, sizeof(*c));
	rc = read_small_file(path, &text, e);
	if (rc == 0)
		rc = cloud_credentials_parse(text.data ? text.data : "", text.len, path, c, e);
	buf_free_secret(&text);
	return rc;
}

void cloud_credentials_free(struct cloud_credentials *c)
{
	if (c->token)
		secret_wipe_str(c->token);
	if (c->refresh_token)
		secret_wipe_str(c->refresh_token);
	free(c->token);
	free(c->refresh_token);
	free(c->user_name);
	free(c->organization);
	free(c->path);
	memset(c, 0, sizeof(*c));
}

int cloud_credentials_replace(const char *path, const char *data, const struct stat *like,
                              struct errmsg *e)
{
	char *tmp = NULL;
	size_t len = strlen(data), off = 0;
	int fd, rc = 0;

	if (asprintf(&tmp, "%s.dbosfs-XXXXXX", path) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	/* mkstemp creates the file 0600: never looser than wanted, even briefly. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = errmsg_set(e, -errno, "cannot write credentials next to %s: %s", path,
		                strerror(errno));
		free(tmp);
		return rc;
	}
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = errmsg_set(e, -errno, "cannot write credentials next to %s: %s", path,
			                strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	/* Same owner and mode as the original (owner first: chown may clear bits). */
	if ((like && geteuid() == 0 && fchown(fd, like->st_uid, like->st_gid) < 0) ||
	    fchmod(fd, like ? like->st_mode & 07777 : 0600) < 0 || fsync(fd) < 0) {
		rc = errmsg_set(e, -errno, "cannot write credentials next to %s: %s", path,
		                strerror(errno));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = errmsg_set(e, -EIO, "cannot write credentials next to %s", path);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		rc = errmsg_set(e, -errno, "cannot replace %s: %s", path, strerror(errno));
		goto out;
	}
	free(tmp);
	return 0;
out:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

int cloud_credentials_write_token(const char *given, const char *token, struct errmsg *e)
{
	/* Through a symlink, replace its target, not the link. */
	char *real = realpath(given, NULL);
	const char *path = real ? real : given;
	struct buf text = BUF_INIT;
	char *dump = NULL;
	json_t *root = NULL;
	struct stat st;
	int rc;

	rc = read_small_file(path, &text, e);
	if (rc < 0)
		goto out;
	if (stat(path, &st) < 0) {
		rc = errmsg_set(e, -errno, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	root = json_loadb(text.data ? text.data : "", text.len, 0, NULL);
	if (!json_is_object(root)) {
		rc = errmsg_set(e, -EINVAL, "credentials file %s changed and is no longer valid",
		                path);
		goto out;
	}
	/* Keep every other field (refreshToken, userName, organization, ...). */
	if (json_object_set_new(root, "token", json_string(token)) < 0 ||
	    !(dump = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER))) {
		rc = errmsg_set(e, -ENOMEM, "out of memory");
		goto out;
	}
	rc = cloud_credentials_replace(path, dump, &st, e);
out:
	if (dump) {
		secret_wipe_str(dump);
		free(dump);
	}
	json_decref(root);
	buf_free_secret(&text);
	free(real);
	return rc;
}

static int b64url_value(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	/* Accept the standard alphabet too: some encoders mix them up. */
	if (ch == '-' || ch == '+')
		return 62;
	if (ch == '_' || ch == '/')
		return 63;
	return -1;
}

int base64url_decode(const char *in, size_t len, struct buf *out)
{
	unsigned acc = 0;
	int bits = 0;

	while (len && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -EINVAL;
	if (buf_append(out, "", 0) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)in[i]);
		char byte;

		if (v < 0)
			return -EINVAL;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			byte = (char)((acc >> bits) & 0xff);
			if (buf_append(out, &byte, 1) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

int jwt_exp(const char *token, long long *exp)
{
	const char *dot1, *dot2;
	struct buf payload = BUF_INIT;
	json_t *root, *v;
	int rc;

	*exp = 0;
	dot1 = strchr(token, '.');
	if (!dot1)
		return -EINVAL;
	dot2 = strchr(dot1 + 1, '.');
	if (!dot2)
		return -EINVAL;
	rc = base64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload);
	if (rc < 0) {
		buf_free_secret(&payload);
		return rc;
	}
	root = json_loadb(payload.data, payload.len, 0, NULL);
	buf_free_secret(&payload);
	if (!json_is_object(root)) {
		json_decref(root);
		return -EINVAL;
	}
	v = json_object_get(root, "exp");
	if (json_is_integer(v))
		*exp = (long long)json_integer_value(v);
	else if (json_is_real(v))
		*exp = (long long)json_real_value(v);
	json_decref(root);
	return 0;
}
