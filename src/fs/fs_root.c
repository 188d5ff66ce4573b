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

/* How long mkdir/rmdir may hold the root directory (the kernel's lock on
 * it freezes ls and lookups meanwhile); -1: the provider is quick. */
static long long mutation_grace(struct dbosfs *fs)
{
	return fs->provider->ops->slow_mutations ? fs->opt->grace_ms : -1;
}

/* One provision, shared by the request and (past the grace) its worker. */
struct provision {
	char name[32];
	char password[GENERATED_PASSWORD_LEN + 1];
	char previous[PASSWORD_MAX + 2];
	bool had_previous;
	struct instance inst;
	long long t0;
};

static int provision_run(struct dbosfs *fs, void *arg, struct errmsg *e)
{
	struct provision *p = arg;
	int rc = fs->provider->ops->provision(fs->provider, p->name, fs->opt->db_username,
	                                      p->password, &p->inst, e);
	secret_wipe(p->password, sizeof(p->password));
	return rc;
}

static void provision_free(void *arg)
{
	struct provision *p = arg;
	secret_wipe(p, sizeof(*p));
	free(p);
}

/* Success or failure, in the request or in the background: the cache,
 * the saved password and the log. Returns rc with the message in msg. */
static int provision_outcome(struct dbosfs *fs, struct provision *p, int rc, const struct errmsg *e,
                             bool background, char *msg, size_t msgsz)
{
	if (rc == 0) {
		if (!p->inst.name[0])
			snprintf(p->inst.name, sizeof(p->inst.name), "%s", p->name);
		state_put(fs->cache, &p->inst, now_ms());
		state_end_op(fs->cache, p->name);
		log_event("provisioned %s in %lld ms%s: %s", p->name, now_ms() - p->t0,
		          background ? " (in the background)" : "", p->inst.status);
		return 0;
	}
	/* After a timeout, an interruption or a broken answer the provider
	 * may have made the instance anyway: keep the new password then. */
	bool ambiguous = rc == -EINTR || rc == -ETIMEDOUT || rc == -EIO;
	if (p->had_previous && !ambiguous)
		secret_put(&fs->secrets, p->name, p->previous, NULL);
	else if (!ambiguous)
		secret_delete(&fs->secrets, p->name);
	snprintf(msg, msgsz, "mkdir %s failed%s (%s): %s", p->name,
	         background ? " in the background" : "", errno_name(rc), e->text);
	if (background) {
		/* The directory stays, as failed, with the reason: a wait
		 * reports it, and a list that shows the name takes over. */
		state_mark_failed(fs->cache, p->name, msg);
		state_end_op(fs->cache, p->name);
	} else {
		state_end_op(fs->cache, p->name);
		state_drop(fs->cache, p->name);
	}
	return fs_root_fail(fs, rc, msg);
}

static int provision_finish(struct dbosfs *fs, void *arg, int rc, struct errmsg *e, bool background)
{
	char msg[ERRMSG_MAX + 128];
	return provision_outcome(fs, arg, rc, e, background, msg, sizeof(msg));
}

static void provision_detach(struct dbosfs *fs, void *arg)
{
	struct provision *p = arg;
	log_event("mkdir %s returns after %d ms; provisioning goes on in the background", p->name,
	          fs->opt->grace_ms);
}

static const struct bg_ops provision_ops = {
    .run = provision_run,
    .detach = provision_detach,
    .finish = provision_finish,
    .free_arg = provision_free,
};

static int root_mkdir(struct dbosfs *fs, const struct node *dir, const char *name)
{
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 128];
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
	struct provision *p = calloc(1, sizeof(*p));
	if (!p)
		return fs_root_fail(fs, -ENOMEM, "mkdir: out of memory");
	snprintf(p->name, sizeof(p->name), "%s", name);

	/* The entry exists (provisioning, held by the operation) before the
	 * password is saved, so no list in between forgets that password.
	 * Nobody sees it during the grace: the kernel holds the root. */
	struct instance placeholder = {0};
	snprintf(placeholder.name, sizeof(placeholder.name), "%s", name);
	snprintf(placeholder.status, sizeof(placeholder.status), "provisioning");
	snprintf(placeholder.username, sizeof(placeholder.username), "%s", fs->opt->db_username);
	state_put(fs->cache, &placeholder, now_ms());
	rc = state_begin_op(fs->cache, name, "provision", &e);
	if (rc) {
		provision_free(p);
		return fs_root_fail(fs, rc, e.text);
	}

	/* The password is saved before provisioning, so an instance never
	 * exists whose password we lost. One already saved under this name (an
	 * instance the cache does not show yet) is put back if the provider
	 * refuses. */
	p->had_previous =
	    secret_get(&fs->secrets, name, p->previous, sizeof(p->previous), NULL) == 0;
	rc = password_generate(p->password, GENERATED_PASSWORD_LEN);
	if (!rc)
		rc = secret_put(&fs->secrets, name, p->password, &e);
	if (rc) {
		snprintf(msg, sizeof(msg), "mkdir %s failed: cannot save its password: %s", name,
		         e.text);
		provision_free(p);
		state_end_op(fs->cache, name);
		state_drop(fs->cache, name);
		return fs_root_fail(fs, rc, msg);
	}

	log_event("provisioning %s (%s provider, admin user %s)", name, fs->provider->ops->kind,
	          fs->opt->db_username);
	p->t0 = now_ms();
	bool detached;
	return fs_run_with_grace(fs, mutation_grace(fs), &provision_ops, p, &detached, &e);
}

/* One destroy (or unlink), shared by the request and its worker. */
struct destroy {
	char name[NODE_NAME_MAX];
	struct instance inst;
};

static int destroy_run(struct dbosfs *fs, void *arg, struct errmsg *e)
{
	struct destroy *d = arg;
	return fs->provider->ops->destroy(fs->provider, &d->inst, e);
}

static int destroy_finish(struct dbosfs *fs, void *arg, int rc, struct errmsg *e, bool background)
{
	struct destroy *d = arg;
	const char *name = d->name, *bg = background ? " (in the background)" : "";
	char msg[ERRMSG_MAX + 128];
	if (rc == -ENOENT) {
		/* Nothing left to destroy: someone else did, or a provision that
		 * failed never made it. Either way it is gone, as asked. */
		log_event("rmdir %s: the provider no longer has it: %s", name, e->text);
		rc = 0;
	}
	if (rc) {
		state_set_status(fs->cache, name, d->inst.status);
		state_end_op(fs->cache, name);
		snprintf(msg, sizeof(msg), "rmdir %s failed%s (%s): %s", name,
		         background ? " in the background" : "", errno_name(rc), e->text);
		return instance_fail(fs, name, rc, msg);
	}
	state_end_op(fs->cache, name);
	state_remove(fs->cache, name, now_ms());
	secret_delete(&fs->secrets, name);
	log_event("%s %s%s", d->inst.linked ? "unlinked" : "destroyed", name, bg);
	return 0;
}

static void destroy_detach(struct dbosfs *fs, void *arg)
{
	struct destroy *d = arg;
	log_event("rmdir %s returns after %d ms; %s goes on in the background (status: deleting)",
	          d->name, fs->opt->grace_ms, d->inst.linked ? "unlinking" : "destroying");
}

static const struct bg_ops destroy_ops = {
    .run = destroy_run,
    .detach = destroy_detach,
    .finish = destroy_finish,
    .free_arg = free,
};

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
	struct destroy *d = calloc(1, sizeof(*d));
	if (!d)
		return instance_fail(fs, name, -ENOMEM, "rmdir: out of memory");
	snprintf(d->name, sizeof(d->name), "%s", name);
	int rc = state_begin_op(fs->cache, name, "destroy", &e);
	if (rc) {
		free(d);
		return instance_fail(fs, name, rc, e.text);
	}
	if (!state_get(fs->cache, name, &d->inst)) {
		state_end_op(fs->cache, name);
		free(d);
		return -ENOENT;
	}
	state_set_status(fs->cache, name, "deleting");
	log_event("%s %s", d->inst.linked ? "unlinking" : "destroying", name);
	bool detached;
	return fs_run_with_grace(fs, mutation_grace(fs), &destroy_ops, d, &detached, &e);
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
