/* /NAME/branch: write NEWNAME, and NEWNAME becomes a copy of NAME as it is
 * now, with NAME's admin user and password. The write runs as NAME's
 * "branch" operation (one at a time per instance) and returns once NEWNAME
 * is available (local) or accepted (cloud). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "validate.h"

int build_branch(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return buf_printf(out, "echo NEWNAME > %s/branch makes NEWNAME a copy of %s as it is now\n",
	                  n->name, n->name);
}

int write_branch(struct dbosfs *fs, const struct node *n, const char *newname, struct errmsg *e)
{
	const char *name = n->name;
	struct errmsg why = {{0}};
	struct instance src, inst = {0};
	char pw[PASSWORD_MAX + 2], previous[PASSWORD_MAX + 2];

	int rc = validate_instance_name(newname, &why);
	if (rc)
		return errmsg_set(e, rc, "branch of %s refused: %s", name, why.text);
	if (!state_get(fs->cache, name, &src))
		return errmsg_set(e, -ENOENT, "branch of %s failed: it is gone", name);
	if (state_get(fs->cache, newname, NULL))
		return errmsg_set(e, -EEXIST, "branch of %s as %s refused: the instance exists",
		                  name, newname);
	if (!fs->provider->ops->branch)
		return errmsg_set(e, -EOPNOTSUPP,
		                  "branch of %s refused: the %s provider cannot "
		                  "branch",
		                  name, fs->provider->ops->kind);
	if (src.linked)
		return errmsg_set(e, -EPERM, "branch of %s refused: it is a linked instance", name);

	/* NEWNAME inherits the password: saved under its name before the copy
	 * exists (as mkdir does), so no instance exists whose password this
	 * mount lost. One already saved under NEWNAME is put back on failure. */
	bool had_previous =
	    secret_get(&fs->secrets, newname, previous, sizeof(previous), NULL) == 0;
	bool has_pw = secret_get(&fs->secrets, name, pw, sizeof(pw), NULL) == 0;
	if (has_pw)
		rc = secret_put(&fs->secrets, newname, pw, &why);
	secret_wipe(pw, sizeof(pw));
	if (rc) {
		secret_wipe(previous, sizeof(previous));
		return errmsg_set(e, rc, "branch of %s as %s failed: cannot save its password: %s",
		                  name, newname, why.text);
	}
	log_event("branching %s as %s", name, newname);
	long long t0 = now_ms();
	rc = fs->provider->ops->branch(fs->provider, &src, newname, &inst, &why);
	if (rc) {
		bool ambiguous = rc == -EINTR || rc == -ETIMEDOUT || rc == -EIO;
		if (had_previous && !ambiguous)
			secret_put(&fs->secrets, newname, previous, NULL);
		else if (!ambiguous && has_pw)
			secret_delete(&fs->secrets, newname);
		secret_wipe(previous, sizeof(previous));
		return errmsg_set(e, rc, "branch of %s as %s failed (%s): %s", name, newname,
		                  errno_name(rc), why.text);
	}
	secret_wipe(previous, sizeof(previous));
	if (!inst.name[0])
		snprintf(inst.name, sizeof(inst.name), "%s", newname);
	state_put(fs->cache, &inst, now_ms());
	log_event("branched %s as %s in %lld ms: %s", name, newname, now_ms() - t0, inst.status);
	return 0;
}
