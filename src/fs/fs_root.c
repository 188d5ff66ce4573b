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

int root_readdir(struct dbosfs *fs, void *buf, fuse_fill_dir_t filler)
{
	struct stat st;
	fs_fill_stat(fs, &st, S_IFDIR | 0755);
	filler(buf, ".dbosfs", &st, 0, FUSE_FILL_DIR_PLUS);
	char **names;
	size_t n;
	int rc = state_names(fs->cache, &names, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		filler(buf, names[i], &st, 0, FUSE_FILL_DIR_PLUS);
		free(names[i]);
	}
	free(names);
	return 0;
}

int root_mkdir(struct dbosfs *fs, const char *name)
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

int root_rmdir(struct dbosfs *fs, const char *name)
{
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 128];
	if (!fs_caller_is_owner())
		return -EACCES; /* not recorded, as in root_mkdir */
	long long left = state_confirm_left(fs->cache, name, now_ms());
	if (left <= 0) {
		snprintf(msg, sizeof(msg),
		         "rmdir %s refused: destroying is irreversible and needs a confirmation "
		         "first: echo %s > %s/confirm (valid %d s), then rmdir again",
		         name, name, name, fs->opt->confirm_ttl);
		return instance_fail(fs, name, -EBUSY, msg);
	}
	int rc = state_begin_op(fs->cache, name, "destroy", &e);
	if (rc)
		return instance_fail(fs, name, rc, e.text);

	struct instance inst;
	if (!state_get(fs->cache, name, &inst)) {
		state_end_op(fs->cache, name);
		return -ENOENT;
	}
	state_set_status(fs->cache, name, "deleting");
	log_event("%s %s", inst.linked ? "unlinking" : "destroying", name);
	rc = fs->provider->ops->destroy(fs->provider, &inst, &e);
	if (rc) {
		state_set_status(fs->cache, name, inst.status);
		state_end_op(fs->cache, name);
		snprintf(msg, sizeof(msg), "rmdir %s failed (%s): %s", name, errno_name(rc),
		         e.text);
		return instance_fail(fs, name, rc, msg);
	}
	state_end_op(fs->cache, name);
	state_remove(fs->cache, name, now_ms());
	secret_delete(&fs->secrets, name);
	log_event("%s %s", inst.linked ? "unlinked" : "destroyed", name);
	return 0;
}
