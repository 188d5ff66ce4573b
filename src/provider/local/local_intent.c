/* Crash safety of the local provider's mutations. Before the first step of
 * a provision, destroy or password reset that cannot be taken back, an
 * intent record STATE_DIR/local/intents/NAME is written and made durable;
 * it goes once the mutation is complete. At start, before anything else
 * looks at the instances, recovery settles every record it finds:
 *
 *   provision  undone: the mkdir never returned, so the instance goes
 *              (leftover server stopped, directory, socket directory and
 *              saved password removed);
 *   destroy    finished, the same way;
 *   link       undone: the link never returned (the directory with its
 *              meta and the saved password go; the linked server itself
 *              is never touched);
 *   unlink     finished, the same way;
 *   password   finished: the new password (kept in the record, 0600 in a
 *              0700 directory like the password store) is saved, and the
 *              server gets it at its first start, before it is shown
 *              available; only then does the record go.
 *
 * Then whatever no instance owns is swept: saved passwords and socket
 * directories without an instance, half-written password files. */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "proc.h"
#include "validate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int intent_path(const struct local_provider *lp, const char *name, char *out, size_t outsz)
{
	return local_path(out, outsz, "%s/intents/%s", lp->root, name);
}

int intent_begin(struct local_provider *lp, const char *name, const char *op, const char *password,
                 struct errmsg *e)
{
	char path[PATH_MAX], text[(PASSWORD_MAX + 2) + 64];
	int rc;

	if (intent_path(lp, name, path, sizeof(path)))
		return errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
	snprintf(text, sizeof(text), "op=%s\n%s%s%s", op, password ? "password=" : "",
	         password ? password : "", password ? "\n" : "");
	rc = local_write_file_durable(path, text, 0600);
	secret_wipe(text, sizeof(text));
	if (rc)
		return errmsg_set(e, rc, "cannot write %s: %s", path, strerror(-rc));
	return 0;
}

void intent_end(struct local_provider *lp, const char *name)
{
	char path[PATH_MAX];

	if (intent_path(lp, name, path, sizeof(path)))
		return;
	if (unlink(path) < 0 && errno != ENOENT)
		log_error("local: cannot remove %s: %m", path);
	local_fsync_dir(path);
}

/* Everything of name on disk goes: a leftover server is stopped first
 * (it may still run from before the crash), then the directory (through
 * trash/, which a crash here leaves for the next start), the socket
 * directory and the saved password. 0 or negative errno. */
int local_remove_instance_files(struct local_provider *lp, const char *name, struct errmsg *e)
{
	char dir[PATH_MAX], data[PATH_MAX], sock[PATH_MAX], trash[PATH_MAX + 64];
	int rc;

	inst_paths(lp, name, dir, data, sock, NULL);
	rc = pg_handle_stale_pid(data, name, &lp->stopping, e);
	if (rc)
		return rc;
	snprintf(trash, sizeof(trash), "%s/trash/%s.%lld", lp->root, name, now_ms());
	if (rename(dir, trash) == 0) {
		local_fsync_dir(dir);
		proc_crash_point("remove-trashed");
		rc = local_rmtree(trash);
	} else {
		rc = errno == ENOENT ? 0 : local_rmtree(dir);
	}
	if (rc)
		return errmsg_set(e, -EIO, "cannot remove the files of %s: %s", name,
		                  strerror(-rc));
	local_rmtree(sock);
	rc = secret_delete(&lp->secrets, name);
	if (rc)
		return errmsg_set(e, rc, "cannot remove the saved password of %s: %s", name,
		                  strerror(-rc));
	return 0;
}

/* One record. */
static void recover_one(struct local_provider *lp, const char *name, const char *text)
{
	struct errmsg e;
	char dir[PATH_MAX];
	const char *pw;
	int rc;

	errmsg_clear(&e);
	inst_paths(lp, name, dir, NULL, NULL, NULL);
	bool link = strncmp(text, "op=link\n", 8) == 0,
	     unlink_ = strncmp(text, "op=unlink\n", 10) == 0;
	if (strncmp(text, "op=provision\n", 13) == 0 || strncmp(text, "op=destroy\n", 11) == 0 ||
	    link || unlink_) {
		bool provision = text[3] == 'p';
		const char *what = link        ? "link"
		                   : unlink_   ? "unlink"
		                   : provision ? "mkdir"
		                               : "rmdir";
		/* A linked instance's directory holds only its meta: removing
		 * it never reaches the server it names. */
		rc = local_remove_instance_files(lp, name, &e);
		if (rc) {
			/* The record stays: the next start tries again. */
			log_error("local: recovery: cannot remove %s after an interrupted %s: %s",
			          name, what, e.text);
			return;
		}
		log_event("local: recovery: %s the %s of %s (interrupted by a crash)",
		          provision || link ? "undid" : "finished", what, name);
	} else if (strncmp(text, "op=password\n", 12) == 0 &&
	           (pw = strstr(text, "\npassword=")) != NULL) {
		char password[(PASSWORD_MAX + 2)];
		snprintf(password, sizeof(password), "%.*s", (int)strcspn(pw + 10, "\n"), pw + 10);
		if (access(dir, F_OK) != 0) {
			secret_wipe(password, sizeof(password));
			intent_end(lp, name);
			return;
		}
		/* The file first: the server follows at its first start
		 * (rediscover sees the record). */
		rc = secret_put(&lp->secrets, name, password, &e);
		secret_wipe(password, sizeof(password));
		if (rc)
			log_error("local: recovery: %s", e.text);
		else
			log_event("local: recovery: the password reset of %s is finished at its "
			          "first start",
			          name);
		return;
	} else {
		log_error("local: recovery: ignoring malformed intent record for %s", name);
	}
	intent_end(lp, name);
}

bool intent_pending_password(struct local_provider *lp, const char *name)
{
	char path[PATH_MAX], text[64];

	if (intent_path(lp, name, path, sizeof(path)))
		return false;
	if (local_read_file(path, text, sizeof(text), false))
		return false;
	bool pending = strncmp(text, "op=password\n", 12) == 0;
	secret_wipe(text, sizeof(text));
	return pending;
}

/* Names in dir (not starting with '.') for which keep() is false are
 * removed with rm. */
static void sweep(struct local_provider *lp, const char *dir, bool dots_too,
                  void (*rm)(struct local_provider *, const char *path, const char *name))
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX + 300], inst[PATH_MAX + 300];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (de->d_name[0] == '.') {
			if (dots_too)
				rm(lp, path, de->d_name);
			continue;
		}
		snprintf(inst, sizeof(inst), "%s/instances/%s", lp->root, de->d_name);
		if (access(inst, F_OK) != 0)
			rm(lp, path, de->d_name);
	}
	closedir(d);
}

static void rm_secret(struct local_provider *lp, const char *path, const char *name)
{
	(void)lp;
	if (unlink(path) == 0)
		log_event("local: recovery: removed %s %s",
		          name[0] == '.' ? "a half-written password file"
		                         : "the saved password of vanished instance",
		          name[0] == '.' ? "" : name);
}

static void rm_tree(struct local_provider *lp, const char *path, const char *name)
{
	(void)lp;
	(void)name;
	local_rmtree(path);
}

void local_recover(struct local_provider *lp)
{
	char dir[PATH_MAX + 16], path[PATH_MAX + 300], text[(PASSWORD_MAX + 2) + 64];
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof(dir), "%s/intents", lp->root);
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		size_t n = strlen(de->d_name);
		if (n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0) {
			unlink(path); /* a record never completed: its step never ran */
			continue;
		}
		if (local_read_file(path, text, sizeof(text), false) == 0)
			recover_one(lp, de->d_name, text);
		secret_wipe(text, sizeof(text));
	}
	if (d)
		closedir(d);
	sweep(lp, lp->secrets.dir, true, rm_secret);
	if (!lp->runbase_is_tmp)
		sweep(lp, lp->runbase, false, rm_tree);
}

int local_resync_password(struct local_provider *lp, struct local_instance *li, struct errmsg *e)
{
	char sock[PATH_MAX], password[PASSWORD_MAX + 2];
	int rc = secret_get(&lp->secrets, li->name, password, sizeof(password), e);

	if (rc == -ENODATA)
		rc = errmsg_set(e, rc, "no saved password for %s after an interrupted reset",
		                li->name);
	if (rc)
		return rc;
	inst_paths(lp, li->name, NULL, NULL, sock, NULL);
	rc = sec_set_password(lp, sock, li->port, li->username, password, NULL, e);
	secret_wipe(password, sizeof(password));
	if (rc)
		return rc;
	intent_end(lp, li->name);
	log_event("local: instance %s: the interrupted password reset is finished", li->name);
	return 0;
}
