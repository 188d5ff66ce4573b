/* /NAME/: one database instance. Observation files are snapshots of the
 * state cache taken at open; control files act in write(), where an errno
 * still reaches the shell (flush errors are lost).
 *
 * Adding a file: a build and/or write handler below and one row in
 * instance_files (then README.md's tree and doc/dbosfs.1). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "content.h"
#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "migrate.h"
#include "validate.h"

int instance_fail(struct dbosfs *fs, const char *name, int err, const char *msg)
{
	log_error("%s", msg);
	state_set_error(fs->cache, name, msg);
	return err;
}

/* The instance as the cache shows it now; -ENOENT once it is gone. */
static int current(struct dbosfs *fs, const struct node *n, struct instance *inst)
{
	return state_get(fs->cache, n->name, inst) ? 0 : -ENOENT;
}

static int build_status(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	struct instance inst;
	int rc = current(fs, n, &inst);
	return rc ? rc : content_status(&inst, out);
}

static int build_info(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	struct instance inst;
	int rc = current(fs, n, &inst);
	if (!rc)
		rc = content_info(&inst, fs->provider->ops->kind, out);
	if (rc)
		return rc;
	/* When the provider last confirmed this state: during an outage the
	 * cache serves it on, and this says how old it is. */
	char when[32] = "";
	time_t t = state_updated(fs->cache, n->name);
	struct tm tm;
	if (t && gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	rc = build_info_pitr(fs, n->name, out);
	return rc ? rc : buf_printf(out, "updated: %s\n", when);
}

static int build_info_json(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	struct instance inst;
	int rc = current(fs, n, &inst);
	return rc ? rc : content_info_json(&inst, out);
}

/* MOUNTPOINT/NAME/ca.pem when the provider has a CA of its own: url and
 * env name it, so they work word for word wherever the mount is seen. A
 * linked server (local) has certificates of its own, if any: libpq's
 * default sslmode (prefer) then, and no CA named. */
int instance_ca_path(struct dbosfs *fs, const char *name, char *out, size_t outsz)
{
	struct instance inst;
	if (!fs->provider->ca_file[0] || !fs->mountpoint)
		return 0;
	if (state_get(fs->cache, name, &inst) && inst.linked)
		return 0;
	if ((size_t)snprintf(out, outsz, "%s/%s/ca.pem", fs->mountpoint, name) >= outsz)
		return -ENAMETOOLONG;
	return 1;
}

/* url and env: content (content_url or content_env) of NAME as it is now,
 * naming its CA when the provider has one. */
static int build_connection_text(struct dbosfs *fs, const struct node *n,
                                 int (*content)(const struct instance *, const char *,
                                                struct buf *),
                                 struct buf *out)
{
	struct instance inst;
	char ca[PATH_MAX];
	int rc = current(fs, n, &inst),
	    has_ca = rc ? 0 : instance_ca_path(fs, n->name, ca, sizeof(ca));
	if (has_ca < 0)
		return has_ca;
	return rc ? rc : content(&inst, has_ca ? ca : NULL, out);
}

static int build_url(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return build_connection_text(fs, n, content_url, out);
}

static int build_env(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return build_connection_text(fs, n, content_env, out);
}

static bool has_ca(struct dbosfs *fs)
{
	return fs->provider->ca_file[0] != '\0';
}

/* The CA certificate (public) that signed the server's certificate. */
static int build_ca(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	struct instance inst;
	char text[16384];
	int rc = current(fs, n, &inst), fd;
	ssize_t got = 0, r;

	if (rc)
		return rc;
	fd = open(fs->provider->ca_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while ((size_t)got < sizeof(text) &&
	       (r = read(fd, text + got, sizeof(text) - (size_t)got)) > 0)
		got += r;
	close(fd);
	return buf_append(out, text, (size_t)got);
}

/* password and pgpass: ENODATA for a password this mount never knew. */
static int build_secret(struct dbosfs *fs, const struct node *n, struct buf *out, bool pgpass)
{
	struct instance inst;
	char pw[PASSWORD_MAX + 2];
	int rc = current(fs, n, &inst);
	if (!rc)
		rc = secret_get(&fs->secrets, n->name, pw, sizeof(pw), NULL);
	if (rc)
		return rc;
	rc = pgpass ? content_pgpass(&inst, pw, out) : buf_printf(out, "%s\n", pw);
	secret_wipe(pw, sizeof(pw));
	return rc;
}

static int build_password(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return build_secret(fs, n, out, false);
}

static int build_pgpass(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return build_secret(fs, n, out, true);
}

static int build_wait(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	/* Settling can take minutes in the cloud: ask for fresher state than
	 * the refresh period promises while someone waits. */
	struct instance inst;
	refresher_kick(fs->refresher);
	int rc = state_wait_settled(fs->cache, n->name, &inst);
	return rc ? rc : content_status(&inst, out);
}

static int build_confirm(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	int rc = current(fs, n, NULL);
	if (rc)
		return rc;
	long long left = state_confirm_left(fs->cache, n->name, now_ms());
	if (left > 0)
		return buf_printf(out, "armed: rmdir %s within %lld s destroys it\n", n->name,
		                  (left + 999) / 1000);
	return buf_printf(out, "not armed: echo %s > %s/confirm arms rmdir for %d s\n", n->name,
	                  n->name, fs->opt->confirm_ttl);
}

#define RUNNING_TRAILER "result: running\n"

/* The record of the run going on (as far as it got, ending in "result:
 * running") or of the last one: kind 0 migrate, 1 rollback. */
static int build_report(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	bool running = false;
	int rc = current(fs, n, NULL);
	if (rc)
		return rc;
	int kind = strcmp(n->file->name, "migrate") == 0 ? 0 : 1;
	if (!state_get_live_report(fs->cache, n->name, kind, out, &running))
		return buf_printf(out, "no %s has run on %s since this mount started\n",
		                  n->file->name, n->name);
	return running ? buf_puts(out, RUNNING_TRAILER) : 0;
}

/* A report read while its run goes on: append what the run added since
 * (the trailer stays where it was; the final result line follows). */
static bool follow_report(struct dbosfs *fs, const struct node *n, struct buf *content,
                          size_t *mark)
{
	size_t tl = strlen(RUNNING_TRAILER);
	struct buf now = BUF_INIT;
	bool running = false, more = false;
	int kind = strcmp(n->file->name, "migrate") == 0 ? 0 : 1;

	if (*mark == 0) {
		if (content->len < tl || strcmp(content->data + content->len - tl, RUNNING_TRAILER))
			return false; /* the snapshot was a finished run */
		*mark = content->len - tl;
	}
	/* Still the same run? Its first line names it and its start time. */
	size_t same = *mark < 160 ? *mark : 160;
	if (state_get_live_report(fs->cache, n->name, kind, &now, &running) && now.len >= *mark &&
	    memcmp(now.data, content->data, same) == 0 &&
	    buf_append(content, now.data + *mark, now.len - *mark) == 0) {
		*mark = now.len;
		more = running;
	}
	buf_free(&now);
	return more;
}

static int build_last_error(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	char msg[ERRMSG_MAX + 256];
	int rc = current(fs, n, NULL);
	if (rc)
		return rc;
	state_get_error(fs->cache, n->name, msg, sizeof(msg));
	/* Nothing failed through the mount: the provider may know why it
	 * will not start the instance (local: a copy that was not durable
	 * when the machine went down). */
	if (!msg[0] && fs->provider->ops->durability) {
		char durable[16];
		fs->provider->ops->durability(fs->provider, n->name, durable, sizeof(durable), msg,
		                              sizeof(msg));
	}
	return msg[0] ? buf_printf(out, "%s\n", msg) : 0;
}

/* A failure after which the request may still have taken effect: no
 * answer in time, an interrupted caller, a connection lost before the
 * answer. An HTTP error answer (with its status) is a definite refusal. */
static bool outcome_unknown(int rc, const struct errmsg *why)
{
	if (rc == -ETIMEDOUT || rc == -EINTR)
		return true;
	return rc == -EIO && !strstr(why->text, "(HTTP ") && !strstr(why->text, ": HTTP ");
}

static int write_password(struct dbosfs *fs, const struct node *n, const char *pw, struct errmsg *e)
{
	const char *name = n->name;
	struct errmsg why = {{0}};
	int rc = validate_password(pw, &why);
	if (rc)
		return errmsg_set(e, rc, "password reset of %s refused: %s", name, why.text);
	struct instance inst;
	if (!state_get(fs->cache, name, &inst))
		return errmsg_set(e, -ENOENT, "password reset of %s failed: it is gone", name);
	if (inst.linked)
		return errmsg_set(e, -EPERM,
		                  "password reset of %s refused: it is a linked instance (your own "
		                  "PostgreSQL server); change the password there",
		                  name);
	rc = fs->provider->ops->reset_password(fs->provider, &inst, pw, &why);
	if (outcome_unknown(rc, &why)) {
		/* The server may have applied it before the answer was lost:
		 * neither password can be served with confidence. */
		secret_delete(&fs->secrets, name);
		return errmsg_set(
		    e, rc,
		    "password reset of %s: outcome unknown (%s): %s; the server may "
		    "have the new password or still the old one, so this mount forgot "
		    "both (password and pgpass answer ENODATA): write a password to "
		    "%s/password again to set a known one",
		    name, errno_name(rc), why.text, name);
	}
	if (rc == 0) {
		rc = secret_put(&fs->secrets, name, pw, &why);
		if (rc)
			snprintf(why.text + strlen(why.text), sizeof(why.text) - strlen(why.text),
			         " (the new password IS set on the server; write it again to save "
			         "it here)");
	}
	if (rc)
		return errmsg_set(e, rc, "password reset of %s failed (%s): %s", name,
		                  errno_name(rc), why.text);
	log_event("password of %s reset", name);
	return 0;
}

static int write_confirm(struct dbosfs *fs, const struct node *n, const char *value,
                         struct errmsg *e)
{
	const char *name = n->name;
	if (strcmp(value, name) != 0)
		return errmsg_set(e, -EINVAL,
		                  "confirm refused: write the instance's own name (%s) to "
		                  "%s/confirm, got '%.64s'",
		                  name, name, value);
	state_confirm_arm(fs->cache, name, now_ms() + fs->opt->confirm_ttl * 1000LL);
	log_event("destroy of %s armed for %d s", name, fs->opt->confirm_ttl);
	return 0;
}

struct live_report {
	struct dbosfs *fs;
	const char *name;
	int kind;
};

static void publish_live_report(void *ctx, const char *text)
{
	struct live_report *lr = ctx;
	state_set_live_report(lr->fs->cache, lr->name, lr->kind, text);
}

/* migrate and rollback: value is the application's directory. */
static int write_migrate(struct dbosfs *fs, const struct node *n, const char *path,
                         struct errmsg *e)
{
	struct fuse_context *caller = fuse_get_context();
	const char *name = n->name, *what = n->file->name;
	bool up = strcmp(what, "migrate") == 0;
	struct errmsg why = {{0}};
	struct instance inst;
	char pw[PASSWORD_MAX + 2];
	struct buf report = BUF_INIT;
	int rc;
	if (!state_get(fs->cache, name, &inst)) {
		rc = errmsg_set(&why, -ENOENT, "the instance is gone");
	} else if (!instance_status_settled(inst.status) || !inst.host[0]) {
		rc =
		    errmsg_set(&why, -EBUSY, "the instance is %s, not available; cat %s/wait first",
		               inst.status, name);
	} else if ((rc = secret_get(&fs->secrets, name, pw, sizeof(pw), &why)) != 0) {
		if (rc == -ENODATA)
			errmsg_set(&why, rc,
			           "this mount does not know the password of %s; write it to "
			           "%s/password first",
			           name, name);
	} else {
		char user[sizeof(inst.username) + sizeof(inst.supabase_ref) + 16];
		instance_login_user(&inst, user, sizeof(user));
		struct migrate_target t = {
		    inst.host, inst.port, user, pw,
		    fs->provider->ca_file[0] && !inst.linked ? fs->provider->ca_file : NULL};
		struct live_report lr = {fs, name, up ? 0 : 1};
		/* The writer's world (cwd, environment, user): only the mount's
		 * owner or root get here (file_permits). */
		struct migrate_request req = {
		    .kind = up ? MIGRATE_UP : MIGRATE_ROLLBACK,
		    .path = path,
		    .target = &t,
		    .pid = caller->pid,
		    .uid = caller->uid,
		    .gid = caller->gid,
		    .progress = publish_live_report,
		    .progress_ctx = &lr,
		};
		rc = migrate_run(&req, &report, &why);
		secret_wipe(pw, sizeof(pw));
		if (report.len)
			state_set_report(fs->cache, name, up ? 0 : 1, report.data);
	}
	buf_free(&report);
	if (rc)
		return errmsg_set(e, rc, "%s of %s failed (%s): %s", what, name, errno_name(rc),
		                  why.text);
	return 0;
}

/* Cloud: the applications on this instance, from the provider's copy of
 * its applications list (one call per refresh period, never per read). */
static int build_apps(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	int rc = current(fs, n, NULL);
	if (rc || !fs->provider->ops->apps)
		return rc;
	return fs->provider->ops->apps(fs->provider, n->name, out);
}

static const struct file_def instance_files[] = {
    {"status", 0444, .build = build_status},
    {"info", 0444, .build = build_info},
    {"info.json", 0444, .build = build_info_json},
    {"url", 0444, .build = build_url},
    {"env", 0444, .build = build_env},
    {"ca.pem", 0444, .build = build_ca, .present = has_ca},
    {"pgpass", 0600, .secret = true, .build = build_pgpass},
    {"password", 0600, .secret = true, .build = build_password, .write = write_password,
     .op = "password reset"},
    {"wait", 0444, .build = build_wait, .build_at_read = true, .stat_build = build_status},
    {"confirm", 0644, .build = build_confirm, .write = write_confirm},
    {"migrate", 0644, .build = build_report, .follow = follow_report, .write = write_migrate,
     .op = "migrate"},
    {"rollback", 0644, .build = build_report, .follow = follow_report, .write = write_migrate,
     .op = "rollback"},
    {"last_error", 0444, .build = build_last_error},
    {"apps", 0444, .build = build_apps},
};

/* Files declared beside their handlers in other sources. */
static const struct file_table *const instance_tables[] = {&copy_files};

static const struct dir_def *const instance_dirs[] = {&databases_dir};

const struct dir_def instance_dir = {
    .mode = 0755,
    .files = instance_files,
    .file_count = sizeof(instance_files) / sizeof(instance_files[0]),
    .tables = instance_tables,
    .table_count = sizeof(instance_tables) / sizeof(instance_tables[0]),
    .dirs = instance_dirs,
    .dir_count = 1,
};
