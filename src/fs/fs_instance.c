/* /NAME/: one database instance. Observation files are snapshots of the
 * state cache taken at open; control files act in write(), where an errno
 * still reaches the shell (flush errors are lost). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "content.h"
#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "migrate.h"
#include "validate.h"

enum {
	F_STATUS,
	F_INFO,
	F_INFO_JSON,
	F_URL,
	F_ENV,
	F_PGPASS,
	F_PASSWORD,
	F_WAIT,
	F_CONFIRM,
	F_MIGRATE,
	F_ROLLBACK,
	F_LAST_ERROR,
};

const struct file_def instance_files[] = {
    [F_STATUS] = {"status", 0444, false, false},
    [F_INFO] = {"info", 0444, false, false},
    [F_INFO_JSON] = {"info.json", 0444, false, false},
    [F_URL] = {"url", 0444, false, false},
    [F_ENV] = {"env", 0444, false, false},
    [F_PGPASS] = {"pgpass", 0600, true, false},
    [F_PASSWORD] = {"password", 0600, true, true},
    [F_WAIT] = {"wait", 0444, false, false},
    [F_CONFIRM] = {"confirm", 0644, false, true},
    [F_MIGRATE] = {"migrate", 0644, false, true},
    [F_ROLLBACK] = {"rollback", 0644, false, true},
    [F_LAST_ERROR] = {"last_error", 0444, false, false},
};
const int instance_file_count = sizeof(instance_files) / sizeof(instance_files[0]);

int instance_fail(struct dbosfs *fs, const char *name, int err, const char *msg)
{
	log_error("%s", msg);
	state_set_error(fs->cache, name, msg);
	return err;
}

static int build(struct dbosfs *fs, struct open_file *of)
{
	const char *name = of->node.name;
	struct buf *out = &of->content;
	struct instance inst;
	if (of->node.file == F_WAIT) {
		/* Settling can take minutes in the cloud: ask for fresher state
		 * than the refresh period promises while someone waits. */
		refresher_kick(fs->refresher);
		int rc = state_wait_settled(fs->cache, name, &inst);
		return rc ? rc : content_status(&inst, out);
	}
	if (!state_get(fs->cache, name, &inst))
		return -ENOENT;

	switch (of->node.file) {
	case F_STATUS:
		return content_status(&inst, out);
	case F_INFO:
		return content_info(&inst, fs->provider->ops->kind, out);
	case F_INFO_JSON:
		return content_info_json(&inst, out);
	case F_URL:
		return content_url(&inst, out);
	case F_ENV:
		return content_env(&inst, out);
	case F_PGPASS:
	case F_PASSWORD: {
		char pw[PASSWORD_MAX + 2];
		int rc = secret_get(&fs->secrets, name, pw, sizeof(pw), NULL);
		if (rc)
			return rc; /* ENODATA: a password this mount never knew */
		rc = of->node.file == F_PASSWORD ? buf_printf(out, "%s\n", pw)
		                                 : content_pgpass(&inst, pw, out);
		secret_wipe(pw, sizeof(pw));
		return rc;
	}
	case F_CONFIRM: {
		long long left = state_confirm_left(fs->cache, name, now_ms());
		if (left > 0)
			return buf_printf(out, "armed: rmdir %s within %lld s destroys it\n", name,
			                  (left + 999) / 1000);
		return buf_printf(out, "not armed: echo %s > %s/confirm arms rmdir for %d s\n",
		                  name, name, fs->opt->confirm_ttl);
	}
	case F_MIGRATE:
	case F_ROLLBACK: {
		int kind = of->node.file == F_MIGRATE ? 0 : 1;
		if (!state_get_report(fs->cache, name, kind, out))
			return buf_printf(out, "no %s has run on %s since this mount started\n",
			                  instance_files[of->node.file].name, name);
		return 0;
	}
	case F_LAST_ERROR: {
		char msg[ERRMSG_MAX + 256];
		state_get_error(fs->cache, name, msg, sizeof(msg));
		return msg[0] ? buf_printf(out, "%s\n", msg) : 0;
	}
	}
	return -ENOENT;
}

int instance_open(struct dbosfs *fs, struct open_file *of, int flags)
{
	int f = of->node.file;
	if ((flags & O_ACCMODE) != O_RDONLY &&
	    (f == F_MIGRATE || f == F_ROLLBACK || f == F_PASSWORD)) {
		struct errmsg e = {{0}};
		int rc = state_check_idle(fs->cache, of->node.name, instance_files[f].name, &e);
		if (rc)
			return instance_fail(fs, of->node.name, rc, e.text);
	}
	if ((flags & O_ACCMODE) == O_WRONLY)
		return 0; /* nothing to read */
	if (f == F_WAIT)
		return 0; /* blocks: built at the first read, where Ctrl-C works */
	int rc = build(fs, of);
	if (rc == 0)
		of->built = true;
	return rc;
}

int instance_build(struct dbosfs *fs, struct open_file *of)
{
	return build(fs, of);
}

static int write_password(struct dbosfs *fs, const char *name, const char *pw)
{
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 128];
	int rc = validate_password(pw, &e);
	if (rc) {
		snprintf(msg, sizeof(msg), "password reset of %s refused: %s", name, e.text);
		return instance_fail(fs, name, rc, msg);
	}
	struct instance inst;
	if (!state_get(fs->cache, name, &inst))
		return -ENOENT;
	if (inst.linked) {
		snprintf(msg, sizeof(msg),
		         "password reset of %s refused: it is a linked instance (your own "
		         "PostgreSQL server); change the password there",
		         name);
		return instance_fail(fs, name, -EPERM, msg);
	}
	rc = state_begin_op(fs->cache, name, "password reset", &e);
	if (rc)
		return instance_fail(fs, name, rc, e.text);
	rc = fs->provider->ops->reset_password(fs->provider, &inst, pw, &e);
	if (rc == 0) {
		rc = secret_put(&fs->secrets, name, pw, &e);
		if (rc)
			snprintf(e.text + strlen(e.text), sizeof(e.text) - strlen(e.text),
			         " (the new password IS set on the server; write it again to save "
			         "it here)");
	}
	state_end_op(fs->cache, name);
	if (rc) {
		snprintf(msg, sizeof(msg), "password reset of %s failed (%s): %s", name,
		         errno_name(rc), e.text);
		return instance_fail(fs, name, rc, msg);
	}
	log_event("password of %s reset", name);
	return 0;
}

static int write_confirm(struct dbosfs *fs, const char *name, const char *value)
{
	char msg[512];
	if (strcmp(value, name) != 0) {
		snprintf(msg, sizeof(msg),
		         "confirm refused: write the instance's own name (%s) to %s/confirm, "
		         "got '%.64s'",
		         name, name, value);
		return instance_fail(fs, name, -EINVAL, msg);
	}
	state_confirm_arm(fs->cache, name, now_ms() + fs->opt->confirm_ttl * 1000LL);
	log_event("destroy of %s armed for %d s", name, fs->opt->confirm_ttl);
	return 0;
}

static int write_migrate(struct dbosfs *fs, const char *name, int file, const char *path)
{
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 128];
	const char *what = instance_files[file].name;
	int rc = state_begin_op(fs->cache, name, what, &e);
	if (rc)
		return instance_fail(fs, name, rc, e.text);

	struct instance inst;
	char pw[PASSWORD_MAX + 2];
	struct buf report = BUF_INIT;
	if (!state_get(fs->cache, name, &inst)) {
		rc = errmsg_set(&e, -ENOENT, "the instance is gone");
	} else if (!instance_status_settled(inst.status) || !inst.host[0]) {
		rc = errmsg_set(&e, -EBUSY, "the instance is %s, not available; cat %s/wait first",
		                inst.status, name);
	} else if ((rc = secret_get(&fs->secrets, name, pw, sizeof(pw), &e)) != 0) {
		if (rc == -ENODATA)
			errmsg_set(&e, rc,
			           "this mount does not know the password of %s; write it to "
			           "%s/password first",
			           name, name);
	} else {
		struct migrate_target t = {inst.host, inst.port, inst.username, pw};
		rc = migrate_run(file == F_MIGRATE ? MIGRATE_UP : MIGRATE_ROLLBACK, path, &t,
		                 &report, &e);
		secret_wipe(pw, sizeof(pw));
		if (report.len)
			state_set_report(fs->cache, name, file == F_MIGRATE ? 0 : 1, report.data);
	}
	buf_free(&report);
	state_end_op(fs->cache, name);
	if (rc) {
		snprintf(msg, sizeof(msg), "%s of %s failed (%s): %s", what, name, errno_name(rc),
		         e.text);
		return instance_fail(fs, name, rc, msg);
	}
	return 0;
}

int instance_write(struct dbosfs *fs, const struct node *n, const char *data, size_t size)
{
	struct errmsg e = {{0}};
	char value[4096 + 1];
	char msg[ERRMSG_MAX + 256];
	int rc = control_value(data, size, value, sizeof(value), &e);
	if (rc) {
		/* Never echo what was written to password back. */
		snprintf(msg, sizeof(msg), "write to %s/%s refused: %s", n->name,
		         instance_files[n->file].name, e.text);
		return instance_fail(fs, n->name, rc, msg);
	}
	switch (n->file) {
	case F_PASSWORD:
		rc = write_password(fs, n->name, value);
		secret_wipe(value, sizeof(value));
		break;
	case F_CONFIRM:
		rc = write_confirm(fs, n->name, value);
		break;
	case F_MIGRATE:
	case F_ROLLBACK:
		rc = write_migrate(fs, n->name, n->file, value);
		break;
	default:
		rc = -EACCES;
	}
	return rc ? rc : (int)size;
}
