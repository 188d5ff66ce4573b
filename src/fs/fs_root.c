/* The mount's root: the list of instances, mkdir (provision) and rmdir
 * (destroy after a confirmation). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "validate.h"

#define GENERATED_PASSWORD_LEN 24

static int list_instances(struct dbosfs *fs, const struct node *dir, char ***names, size_t *count)
{
	char why[ERRMSG_MAX], msg[ERRMSG_MAX + 128];
	/* An empty listing would read as "all instances are gone". */
	if (!state_listed(fs->cache, why, sizeof(why))) {
		snprintf(msg, sizeof(msg),
		         "ls refused: no list of instances has come from the provider yet "
		         "(see .dbosfs/health): %s",
		         why);
		return fs_root_fail(fs, -EIO, msg);
	}
	return state_names(fs->cache, names, count);
}

/* A name with a dot is never an instance; the cache decides the rest. */
static bool instance_exists(struct dbosfs *fs, const struct node *dir, const char *name)
{
	return name[0] != '.' && state_get(fs->cache, name, NULL);
}

static int root_mkdir(struct dbosfs *fs, const struct node *dir, const char *name)
{
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 64];
	/* Refusals of other users are not recorded: they must not be able to
	 * overwrite the owner's last_error or flood the log. */
	if (!fs_caller_is_owner())
		return -EACCES;
	int rc = validate_instance_name(name, &e);
	if (rc) {
		snprintf(msg, sizeof(msg), "mkdir %s refused: %s", name, e.text);
		return fs_root_fail(fs, rc, msg);
	}
	if (state_get(fs->cache, name, NULL)) {
		snprintf(msg, sizeof(msg), "mkdir %s refused: the instance exists", name);
		return fs_root_fail(fs, -EEXIST, msg);
	}

	/* The password is saved before provisioning, so an instance never
	 * exists whose password we lost. One already saved under this name (an
	 * instance the cache does not show yet) is put back if the provider
	 * refuses. */
	char password[GENERATED_PASSWORD_LEN + 1];
	char previous[PASSWORD_MAX + 2];
	bool had_previous = secret_get(&fs->secrets, name, previous, sizeof(previous), NULL) == 0;
	rc = password_generate(password, GENERATED_PASSWORD_LEN);
	if (!rc)
		rc = secret_put(&fs->secrets, name, password, &e);
	if (rc) {
		secret_wipe(password, sizeof(password));
		secret_wipe(previous, sizeof(previous));
		snprintf(msg, sizeof(msg), "mkdir %s failed: cannot save its password: %s", name,
		         e.text);
		return fs_root_fail(fs, rc, msg);
	}

	log_event("provisioning %s (%s provider, admin user %s)", name, fs->provider->ops->kind,
	          fs->opt->db_username);
	long long t0 = now_ms();
	struct instance inst = {0};
	rc = fs->provider->ops->provision(fs->provider, name, fs->opt->db_username, password, &inst,
	                                  &e);
	secret_wipe(password, sizeof(password));
	if (rc) {
		/* After a timeout, an interruption or a broken answer the
		 * provider may have made the instance anyway: keep the new
		 * password then. */
		bool ambiguous = rc == -EINTR || rc == -ETIMEDOUT || rc == -EIO;
		if (had_previous && !ambiguous)
			secret_put(&fs->secrets, name, previous, NULL);
		else if (!ambiguous)
			secret_delete(&fs->secrets, name);
		secret_wipe(previous, sizeof(previous));
		snprintf(msg, sizeof(msg), "mkdir %s failed (%s): %s", name, errno_name(rc),
		         e.text);
		return fs_root_fail(fs, rc, msg);
	}
	secret_wipe(previous, sizeof(previous));
	if (!inst.name[0])
		snprintf(inst.name, sizeof(inst.name), "%s", name);
	state_put(fs->cache, &inst, now_ms());
	log_event("provisioned %s in %lld ms: %s", name, now_ms() - t0, inst.status);
	return 0;
}

struct destroy {
	const char *name;
	struct instance inst;
};

static int destroy_instance(struct dbosfs *fs, void *arg, struct errmsg *e)
{
	struct destroy *d = arg;
	struct errmsg why = {{0}};
	if (!state_get(fs->cache, d->name, &d->inst))
		return -ENOENT;
	state_set_status(fs->cache, d->name, "deleting");
	log_event("%s %s", d->inst.linked ? "unlinking" : "destroying", d->name);
	int rc = fs->provider->ops->destroy(fs->provider, &d->inst, &why);
	if (rc) {
		state_set_status(fs->cache, d->name, d->inst.status);
		return errmsg_set(e, rc, "rmdir %s failed (%s): %s", d->name, errno_name(rc),
		                  why.text);
	}
	return 0;
}

static int root_rmdir(struct dbosfs *fs, const struct node *entry)
{
	const char *name = entry->name;
	struct errmsg e = {{0}};
	if (!fs_caller_is_owner())
		return -EACCES; /* not recorded, as in root_mkdir */
	long long left = state_confirm_left(fs->cache, name, now_ms());
	if (left <= 0) {
		errmsg_set(&e, -EBUSY,
		           "rmdir %s refused: destroying is irreversible and needs a confirmation "
		           "first: echo %s > %s/confirm (valid %d s), then rmdir again",
		           name, name, name, fs->opt->confirm_ttl);
		return instance_fail(fs, name, -EBUSY, e.text);
	}
	struct destroy d = {.name = name};
	int rc = run_op(fs, name, "destroy", destroy_instance, &d, &e);
	if (rc == -ENOENT && !e.text[0])
		return rc;
	if (rc)
		return instance_fail(fs, name, rc, e.text);
	state_remove(fs->cache, name, now_ms());
	secret_delete(&fs->secrets, name);
	log_event("%s %s", d.inst.linked ? "unlinked" : "destroyed", name);
	return 0;
}

/* A saved password belongs to one instance: once that instance left the
 * list or was made again elsewhere, serving it would be a stale secret. */
void fs_forget_secret(void *arg, const char *name)
{
	struct dbosfs *fs = arg;
	char pw[PASSWORD_MAX + 2];
	if (!name) {
		/* First list: passwords of instances that vanished while this
		 * state directory was not mounted. */
		char **names;
		size_t n;
		if (secret_names(&fs->secrets, &names, &n) != 0)
			return;
		for (size_t i = 0; i < n; i++) {
			if (!state_known(fs->cache, names[i]))
				fs_forget_secret(fs, names[i]);
			free(names[i]);
		}
		free(names);
		return;
	}
	if (secret_get(&fs->secrets, name, pw, sizeof(pw), NULL) != 0)
		return;
	secret_wipe(pw, sizeof(pw));
	if (secret_delete(&fs->secrets, name) == 0)
		log_event("forgot the saved password of %s: the instance it belonged to is gone "
		          "or was made again elsewhere",
		          name);
}

static const struct dir_def *const root_dirs[] = {&meta_dir};

const struct dir_def root_dir = {
    .mode = 0755,
    .dirs = root_dirs,
    .dir_count = 1,
    .entry = &instance_dir,
    .list = list_instances,
    .exists = instance_exists,
    .mkdir = root_mkdir,
    .rmdir = root_rmdir,
};
