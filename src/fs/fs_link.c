/* /.dbosfs/link: write "NAME postgresql://ADMIN[:PASSWORD]@HOST[:PORT][/DB]
 * [?supabase_ref=REF]" and your own PostgreSQL server is served as instance
 * NAME (the cloud: POST /databases/byod, as `dbos-cloud db link`; local:
 * the server is adopted, see local_link.c). Without
 * a password in the URL, the writer's ~/.pgpass supplies it, looked up as
 * libpq would for that URL. The password is saved as NAME's, like mkdir's.
 * Nothing written here (it may hold a password) is ever echoed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "validate.h"

#define PGPASS_MAX (256 * 1024)

/* Two links at once must not trade saved passwords. */
static pthread_mutex_t link_lock = PTHREAD_MUTEX_INITIALIZER;

struct link_target {
	char name[sizeof(((struct instance *)0)->name)];
	char admin[64];
	char password[PASSWORD_MAX + 2];
	bool has_password;
	char host[256];
	int port;
	char db[64];
	char supabase_ref[64];
};

int build_link(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return buf_printf(out,
	                  "echo 'NAME postgresql://ADMIN[:PASSWORD]@HOST[:PORT]' > .dbosfs/link "
	                  "serves your own PostgreSQL as NAME (%s provider)\n",
	                  fs->provider->ops->kind);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes [s, s+len) into out, as libpq reads URL parts. */
static int url_decode(const char *s, size_t len, char *out, size_t outsz)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= len)
				return -EINVAL;
			int hi = hexval(s[i + 1]);
			int lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (c == '\0' || o + 1 >= outsz)
			return -EINVAL;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

static bool host_ok(const char *h)
{
	if (!*h || strlen(h) > 253 || *h == '-' || *h == '.')
		return false;
	for (; *h; h++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
		      (*h >= '0' && *h <= '9') || *h == '.' || *h == '-' || *h == '_'))
			return false;
	return true;
}

static bool user_ok(const char *u)
{
	if (!*u)
		return false;
	for (; *u; u++)
		if (!((*u >= 'a' && *u <= 'z') || (*u >= 'A' && *u <= 'Z') ||
		      (*u >= '0' && *u <= '9') || *u == '_' || *u == '.' || *u == '-'))
			return false;
	return true;
}

/* Splits the written value; -EINVAL with what is wrong in e (never the
 * value itself). */
static int parse_link(const char *value, struct link_target *t, struct errmsg *e)
{
	struct errmsg why = {{0}};
	const char *sp = strchr(value, ' ');
	if (!sp)
		return errmsg_set(e, -EINVAL,
		                  "expected \"NAME postgresql://ADMIN[:PASSWORD]@HOST[:PORT]\"");
	size_t nl = (size_t)(sp - value);
	if (nl >= sizeof(t->name))
		return errmsg_set(e, -EINVAL, "the instance name is too long");
	memcpy(t->name, value, nl);
	t->name[nl] = '\0';
	int rc = validate_instance_name(t->name, &why);
	if (rc)
		return errmsg_set(e, -EINVAL, "%s", why.text);
	const char *url = sp + 1;
	while (*url == ' ')
		url++;
	if (strncmp(url, "postgresql://", 13) == 0)
		url += 13;
	else if (strncmp(url, "postgres://", 11) == 0)
		url += 11;
	else
		return errmsg_set(
		    e, -EINVAL, "the URL must start with postgresql:// (got no such URL after %s)",
		    t->name);
	const char *at = strchr(url, '@');
	if (!at)
		return errmsg_set(e, -EINVAL, "the URL names no admin user (ADMIN@HOST)");
	const char *colon = memchr(url, ':', (size_t)(at - url));
	const char *user_end = colon ? colon : at;
	if (url_decode(url, (size_t)(user_end - url), t->admin, sizeof(t->admin)))
		return errmsg_set(e, -EINVAL, "the admin user in the URL is malformed");
	/* Not validate_username(): that keeps mkdir's admin clear of the names
	 * the platform reserves, and a linked server's admin is one of them
	 * (the CLI links as dbosadmin). */
	if (!user_ok(t->admin))
		return errmsg_set(e, -EINVAL,
		                  "the admin user must be 1 to 63 letters, digits, _ . or -");
	if (colon) {
		if (url_decode(colon + 1, (size_t)(at - colon - 1), t->password,
		               sizeof(t->password)))
			return errmsg_set(e, -EINVAL, "the password in the URL is malformed");
		t->has_password = t->password[0] != '\0';
	}
	const char *hp = at + 1;
	size_t hl = strcspn(hp, ":/?");
	if (hl >= sizeof(t->host))
		return errmsg_set(e, -EINVAL, "the host name is too long");
	memcpy(t->host, hp, hl);
	t->host[hl] = '\0';
	if (!host_ok(t->host))
		return errmsg_set(e, -EINVAL,
		                  "the URL names no valid host (letters, digits, . - _)");
	const char *p = hp + hl;
	t->port = 5432;
	if (*p == ':') {
		char *end;
		long port = strtol(p + 1, &end, 10);
		if (end == p + 1 || port < 1 || port > 65535)
			return errmsg_set(e, -EINVAL, "the port must be a number from 1 to 65535");
		t->port = (int)port;
		p = end;
	}
	if (*p == '/') {
		size_t dl = strcspn(p + 1, "?");
		if (dl >= sizeof(t->db) || url_decode(p + 1, dl, t->db, sizeof(t->db)))
			return errmsg_set(e, -EINVAL, "the database name in the URL is malformed");
		p += 1 + dl;
	}
	if (*p == '?') {
		const char *q = p + 1;
		if (strncmp(q, "supabase_ref=", 13) != 0)
			return errmsg_set(e, -EINVAL,
			                  "the only URL parameter understood is supabase_ref=REF");
		q += 13;
		size_t rl = strlen(q);
		if (rl == 0 || rl >= sizeof(t->supabase_ref))
			return errmsg_set(e, -EINVAL, "supabase_ref must be 1 to 63 characters");
		for (size_t i = 0; i < rl; i++)
			if (!((q[i] >= 'a' && q[i] <= 'z') || (q[i] >= '0' && q[i] <= '9')))
				return errmsg_set(
				    e, -EINVAL,
				    "supabase_ref must be lower-case letters and digits");
		memcpy(t->supabase_ref, q, rl + 1);
		p = q + rl;
	}
	if (*p)
		return errmsg_set(e, -EINVAL, "unexpected text after the URL's host and port");
	/* libpq's default database is the user's name. */
	if (!t->db[0])
		snprintf(t->db, sizeof(t->db), "%s", t->admin);
	return 0;
}

/* The writer's environment variable var (from /proc/PID/environ): 1 and
 * out filled, 0 if unset, <0 on error. */
static int writer_env(pid_t pid, const char *var, char *out, size_t outsz)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	static const size_t cap = 128 * 1024;
	char *buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	size_t len = 0;
	ssize_t r;
	while (len < cap && (r = read(fd, buf + len, cap - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	size_t vl = strlen(var);
	int found = 0;
	for (size_t i = 0; i < len; i += strlen(buf + i) + 1) {
		if (strncmp(buf + i, var, vl) == 0 && buf[i + vl] == '=') {
			snprintf(out, outsz, "%s", buf + i + vl + 1);
			found = 1;
			break;
		}
	}
	free(buf);
	return found;
}

/* One pgpass field: up to an unescaped ':' (or the end), '\' escapes the
 * next character, as libpq reads them. Advances *p past the ':'. */
static bool pgpass_field(char **p, char *out, size_t outsz)
{
	size_t o = 0;
	char *s = *p;
	for (; *s && *s != ':'; s++) {
		if (*s == '\\' && s[1])
			s++;
		if (o + 1 >= outsz)
			return false;
		out[o++] = *s;
	}
	out[o] = '\0';
	if (*s == ':')
		s++;
	*p = s;
	return true;
}

static bool pgpass_match(const char *field, const char *want)
{
	return strcmp(field, "*") == 0 || strcmp(field, want) == 0;
}

/* The password for t from the writer's password file (PGPASSFILE or
 * HOME/.pgpass), as libpq looks it up: first matching line, '*'
 * wildcards, ignored unless a regular file without group/other access. The
 * file must belong to the writer (the daemon reads as root). */
static int pgpass_lookup(struct link_target *t, struct errmsg *e)
{
	struct fuse_context *ctx = fuse_get_context();
	uid_t uid = ctx ? ctx->uid : getuid();
	pid_t pid = ctx ? ctx->pid : getpid();
	char file[4096] = "", home[4096] = "";

	if (writer_env(pid, "PGPASSFILE", file, sizeof(file)) <= 0 || !file[0]) {
		if (writer_env(pid, "HOME", home, sizeof(home)) <= 0 || !home[0]) {
			struct passwd pw, *res = NULL;
			char pwbuf[4096];
			if (getpwuid_r(uid, &pw, pwbuf, sizeof(pwbuf), &res) || !res)
				return errmsg_set(e, -EINVAL,
				                  "no password in the URL and the writer (uid %u) "
				                  "has no home directory for ~/.pgpass",
				                  (unsigned)uid);
			snprintf(home, sizeof(home), "%s", pw.pw_dir);
		}
		if (snprintf(file, sizeof(file), "%s/.pgpass", home) >= (int)sizeof(file))
			return errmsg_set(e, -EINVAL, "the writer's home path is too long");
	}
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		return errmsg_set(e, -EINVAL, "no password in the URL and none from %s: %s", file,
		                  strerror(err));
	}
	const char *refusal = NULL;
	if (!S_ISREG(st.st_mode))
		refusal = "it is not a regular file";
	else if (st.st_mode & (S_IRWXG | S_IRWXO))
		refusal = "it has group or world access (libpq ignores it too; chmod 0600 it)";
	else if (st.st_uid != uid && uid != 0)
		refusal = "it does not belong to the writer";
	else if (st.st_size > PGPASS_MAX)
		refusal = "it is too large";
	if (refusal) {
		close(fd);
		return errmsg_set(e, -EINVAL, "no password in the URL and %s is not used: %s", file,
		                  refusal);
	}
	char *data = calloc(1, (size_t)st.st_size + 1);
	if (!data) {
		close(fd);
		return errmsg_set(e, -ENOMEM, "out of memory reading %s", file);
	}
	size_t len = 0;
	ssize_t r;
	while (len < (size_t)st.st_size && (r = read(fd, data + len, (size_t)st.st_size - len)) > 0)
		len += (size_t)r;
	close(fd);

	char port[16];
	snprintf(port, sizeof(port), "%d", t->port);
	bool found = false;
	char *save = NULL;
	for (char *line = strtok_r(data, "\n", &save); line && !found;
	     line = strtok_r(NULL, "\n", &save)) {
		size_t l = strlen(line);
		if (l && line[l - 1] == '\r')
			line[l - 1] = '\0';
		if (line[0] == '#' || !line[0])
			continue;
		char h[256], po[16], db[64], user[64], pw[PASSWORD_MAX + 2];
		char *p = line;
		if (!pgpass_field(&p, h, sizeof(h)) || !pgpass_field(&p, po, sizeof(po)) ||
		    !pgpass_field(&p, db, sizeof(db)) || !pgpass_field(&p, user, sizeof(user)) ||
		    !pgpass_field(&p, pw, sizeof(pw)))
			continue;
		if (pgpass_match(h, t->host) && pgpass_match(po, port) && pgpass_match(db, t->db) &&
		    pgpass_match(user, t->admin)) {
			snprintf(t->password, sizeof(t->password), "%s", pw);
			t->has_password = t->password[0] != '\0';
			found = true;
		}
		secret_wipe(pw, sizeof(pw));
	}
	secret_wipe(data, len);
	free(data);
	if (!t->has_password)
		return errmsg_set(e, -EINVAL,
		                  "no password in the URL and no line of %s matches "
		                  "%s:%d:%s:%s",
		                  file, t->host, t->port, t->db, t->admin);
	return 0;
}

static int link_locked(struct dbosfs *fs, struct link_target *t, struct errmsg *e)
{
	struct errmsg why = {{0}};
	struct instance inst = {0};
	char previous[PASSWORD_MAX + 2];
	const char *name = t->name;

	if (state_get(fs->cache, name, NULL))
		return errmsg_set(e, -EEXIST, "link of %s refused: the instance exists", name);
	/* Local: not mkdir's rules (they keep generated passwords easy to
	 * paste): a linked server already has its password, and every place
	 * that shows it escapes it (pgpass, migrations' URL). Cloud: the CLI's
	 * rules, which the platform's API expects. */
	bool local = strcmp(fs->provider->ops->kind, "local") == 0;
	int rc = local ? validate_linked_password(t->password, &why)
	               : validate_password(t->password, &why);
	if (rc)
		return errmsg_set(e, -EINVAL, "link of %s refused: password: %s", name, why.text);

	/* As mkdir: the entry exists (held by the operation) before the
	 * password is saved, so a concurrent mkdir of the name is EEXIST and no
	 * list in between forgets the password. One saved before is put back
	 * on a refusal. */
	struct instance placeholder = {0};
	snprintf(placeholder.name, sizeof(placeholder.name), "%s", name);
	snprintf(placeholder.status, sizeof(placeholder.status), "provisioning");
	snprintf(placeholder.username, sizeof(placeholder.username), "%s", t->admin);
	placeholder.linked = true;
	state_put(fs->cache, &placeholder, now_ms());
	rc = state_begin_op(fs->cache, name, "link", &why);
	if (rc) {
		state_drop(fs->cache, name);
		return errmsg_set(e, rc, "link of %s refused: %s", name, why.text);
	}
	bool had_previous = secret_get(&fs->secrets, name, previous, sizeof(previous), NULL) == 0;
	rc = secret_put(&fs->secrets, name, t->password, &why);
	if (rc) {
		secret_wipe(previous, sizeof(previous));
		state_end_op(fs->cache, name);
		state_drop(fs->cache, name);
		return errmsg_set(e, rc, "link of %s failed: cannot save its password: %s", name,
		                  why.text);
	}
	struct link_request req = {name, t->admin, t->password, t->host, t->port, t->supabase_ref};
	log_event("linking %s (admin %s at %s:%d%s%s)", name, t->admin, t->host, t->port,
	          t->supabase_ref[0] ? ", Supabase " : "", t->supabase_ref);
	rc = fs->provider->ops->link(fs->provider, &req, &inst, &why);
	if (rc) {
		bool ambiguous = rc == -EINTR || rc == -ETIMEDOUT || rc == -EIO;
		if (had_previous && !ambiguous)
			secret_put(&fs->secrets, name, previous, NULL);
		else if (!ambiguous)
			secret_delete(&fs->secrets, name);
		secret_wipe(previous, sizeof(previous));
		state_end_op(fs->cache, name);
		state_drop(fs->cache, name);
		return errmsg_set(e, rc, "link of %s failed (%s): %s", name, errno_name(rc),
		                  why.text);
	}
	secret_wipe(previous, sizeof(previous));
	if (!inst.name[0])
		snprintf(inst.name, sizeof(inst.name), "%s", name);
	state_put(fs->cache, &inst, now_ms());
	state_end_op(fs->cache, name);
	log_event("linked %s: %s", name, inst.status);
	return 0;
}

int write_link(struct dbosfs *fs, const struct node *n, const char *value, struct errmsg *e)
{
	struct errmsg why = {{0}};
	struct link_target *t = calloc(1, sizeof(*t));
	if (!t)
		return errmsg_set(e, -ENOMEM, "link refused: out of memory");
	int rc = parse_link(value, t, &why);
	if (rc) {
		rc = errmsg_set(e, rc, "link%s%s refused: %s", t->name[0] ? " of " : "", t->name,
		                why.text);
		goto out;
	}
	if (!fs->provider->ops->link) {
		rc = errmsg_set(e, -EOPNOTSUPP,
		                "link of %s refused: the %s provider cannot link a server yet "
		                "(linking is supported on the cloud provider)",
		                t->name, fs->provider->ops->kind);
		goto out;
	}
	if (!t->has_password) {
		rc = pgpass_lookup(t, &why);
		if (rc) {
			rc = errmsg_set(e, rc, "link of %s refused: %s", t->name, why.text);
			goto out;
		}
	}
	pthread_mutex_lock(&link_lock);
	rc = link_locked(fs, t, e);
	pthread_mutex_unlock(&link_lock);
out:
	secret_wipe(t, sizeof(*t));
	free(t);
	return rc;
}
