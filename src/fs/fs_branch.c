/* /NAME/branch: write NEWNAME, and NEWNAME becomes a copy of NAME as it is
 * now, with NAME's admin user and password. The write runs as NAME's
 * "branch" operation (one at a time per instance) and returns once NEWNAME
 * is available (local) or accepted (cloud). /NAME/restore likewise, as of
 * a time. Their rows are here, beside their handlers (copy_files). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "validate.h"

static int build_branch(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	return buf_printf(out, "echo NEWNAME > %s/branch makes NEWNAME a copy of %s as it is now\n",
	                  n->name, n->name);
}

/* NEWNAME inherits NAME's password: saved under its name before the copy
 * exists (as mkdir does), so no instance exists whose password this mount
 * lost. One already saved under NEWNAME is put back on failure. */
struct inherited_password {
	bool had_previous; /* previous holds what was saved under NEWNAME */
	bool has_pw;       /* pw holds NAME's password, now saved under NEWNAME */
	char pw[PASSWORD_MAX + 2];
	char previous[PASSWORD_MAX + 2];
};

/* verb names the operation in the message ("branch", "restore"). On
 * failure both passwords are wiped. */
static int inherit_password(struct dbosfs *fs, const char *verb, const char *name,
                            const char *newname, struct inherited_password *ip, struct errmsg *e)
{
	struct errmsg why = {{0}};
	int rc = 0;

	ip->had_previous =
	    secret_get(&fs->secrets, newname, ip->previous, sizeof(ip->previous), NULL) == 0;
	ip->has_pw = secret_get(&fs->secrets, name, ip->pw, sizeof(ip->pw), NULL) == 0;
	if (ip->has_pw)
		rc = secret_put(&fs->secrets, newname, ip->pw, &why);
	if (rc) {
		secret_wipe(ip->pw, sizeof(ip->pw));
		secret_wipe(ip->previous, sizeof(ip->previous));
		return errmsg_set(e, rc, "%s of %s as %s failed: cannot save its password: %s",
		                  verb, name, newname, why.text);
	}
	return 0;
}

/* After the copy failed with rc: NEWNAME's saved password goes back to
 * what it was, unless rc leaves open whether the copy exists (then it
 * stays, as the copy may need it). previous is wiped. */
static void inherit_password_undo(struct dbosfs *fs, const char *newname, int rc,
                                  struct inherited_password *ip)
{
	bool ambiguous = rc == -EINTR || rc == -ETIMEDOUT || rc == -EIO;
	if (ip->had_previous && !ambiguous)
		secret_put(&fs->secrets, newname, ip->previous, NULL);
	else if (!ambiguous && ip->has_pw)
		secret_delete(&fs->secrets, newname);
	secret_wipe(ip->previous, sizeof(ip->previous));
}

/* What branch and restore (verb) check first: NEWNAME is a valid name no
 * instance has, and NAME (copied to src) still exists. */
/* The checks branch and restore share: NEWNAME's name, NAME there and
 * NEWNAME not, the provider able to (supported), NAME not linked (else
 * refused with "it is a linked instance " + linked_why). */
static int check_copy(struct dbosfs *fs, const char *verb, bool supported, const char *linked_why,
                      const char *name, const char *newname, struct instance *src, struct errmsg *e)
{
	struct errmsg why = {{0}};
	int rc = validate_instance_name(newname, &why);
	if (rc)
		return errmsg_set(e, rc, "%s of %s refused: %s", verb, name, why.text);
	if (!state_get(fs->cache, name, src))
		return errmsg_set(e, -ENOENT, "%s of %s failed: it is gone", verb, name);
	if (state_get(fs->cache, newname, NULL))
		return errmsg_set(e, -EEXIST, "%s of %s as %s refused: the instance exists", verb,
		                  name, newname);
	if (!supported)
		return errmsg_set(e, -EOPNOTSUPP, "%s of %s refused: the %s provider cannot %s",
		                  verb, name, fs->provider->ops->kind, verb);
	if (src->linked)
		return errmsg_set(e, -EOPNOTSUPP, "%s of %s refused: it is a linked instance %s",
		                  verb, name, linked_why);
	return 0;
}

static int write_branch(struct dbosfs *fs, const struct node *n, const char *newname,
                        struct errmsg *e)
{
	const char *name = n->name;
	struct errmsg why = {{0}};
	struct instance src, inst = {0};
	struct inherited_password ip;

	int rc = check_copy(fs, "branch", fs->provider->ops->branch != NULL,
	                    "(your own server, which dbosfs does not copy); pg_dump it into a "
	                    "new instance instead",
	                    name, newname, &src, e);
	if (rc)
		return rc;

	rc = inherit_password(fs, "branch", name, newname, &ip, e);
	if (rc)
		return rc;
	/* The provider copies NAME with its password: this one is not needed. */
	secret_wipe(ip.pw, sizeof(ip.pw));
	log_event("branching %s as %s", name, newname);
	long long t0 = now_ms();
	rc = fs->provider->ops->branch(fs->provider, &src, newname, &inst, &why);
	if (rc) {
		inherit_password_undo(fs, newname, rc, &ip);
		return errmsg_set(e, rc, "branch of %s as %s failed (%s): %s", name, newname,
		                  errno_name(rc), why.text);
	}
	secret_wipe(ip.previous, sizeof(ip.previous));
	if (!inst.name[0])
		snprintf(inst.name, sizeof(inst.name), "%s", newname);
	state_put(fs->cache, &inst, now_ms());
	log_event("branched %s as %s in %lld ms: %s", name, newname, now_ms() - t0, inst.status);
	return 0;
}

/* RFC 3339: 2026-11-30T21:00:00Z, with optional fraction and a Z or
 * +HH:MM/-HH:MM offset ('t', 'z' and a space for T accepted too). */
static int parse_rfc3339(const char *s, long long *ms)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	int y, mo, d, h, mi, sec, n = 0;
	char sep;
	if (sscanf(s, "%4d-%2d-%2d%c%2d:%2d:%2d%n", &y, &mo, &d, &sep, &h, &mi, &sec, &n) != 7 ||
	    n != 19 || !(sep == 'T' || sep == 't' || sep == ' '))
		return -EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
		return -EINVAL;
	const char *p = s + n;
	long long frac_ms = 0;
	if (*p == '.') {
		int digits = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		if (!digits)
			return -EINVAL;
		for (; digits < 3; digits++)
			frac_ms *= 10;
	}
	long long offset_s = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om, k = 0;
		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59)
			return -EINVAL;
		offset_s = (oh * 3600LL + om * 60) * (*p == '+' ? 1 : -1);
		p += 6;
	} else {
		return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*ms = ((long long)t - offset_s) * 1000 + frac_ms;
	return 0;
}

static int build_restore(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	struct instance inst;
	struct errmsg e = {{0}};
	long long earliest, latest, bytes;
	char a[32], b[32];
	if (!state_get(fs->cache, n->name, &inst))
		return -ENOENT;
	if (!fs->provider->ops->restore_window)
		return buf_printf(out, "restore is not available on the %s provider\n",
		                  fs->provider->ops->kind);
	int rc =
	    fs->provider->ops->restore_window(fs->provider, &inst, &earliest, &latest, &bytes, &e);
	if (rc)
		return buf_printf(out, "no restorable window: %s\n", e.text);
	format_rfc3339_utc(earliest, a, sizeof(a));
	format_rfc3339_utc(latest, b, sizeof(b));
	return buf_printf(out, "earliest: %s\nlatest: %s\n", a, b);
}

int build_info_pitr(struct dbosfs *fs, const char *name, struct buf *out)
{
	struct instance inst;
	long long earliest, latest, bytes = -1;
	if (!fs->provider->ops->restore_window || !state_get(fs->cache, name, &inst))
		return 0;
	fs->provider->ops->restore_window(fs->provider, &inst, &earliest, &latest, &bytes, NULL);
	int rc = bytes >= 0 ? buf_printf(out, "wal_archive_bytes: %lld\n", bytes) : 0;
	char durable[16], why[8];
	if (!rc && fs->provider->ops->durability) {
		fs->provider->ops->durability(fs->provider, name, durable, sizeof(durable), why,
		                              sizeof(why));
		if (durable[0])
			rc = buf_printf(out, "durable: %s\n", durable);
	}
	return rc;
}

/* "TIME NEWNAME" */
static int write_restore(struct dbosfs *fs, const struct node *n, const char *value,
                         struct errmsg *e)
{
	const char *name = n->name;
	char when[64], newname[64], extra[8];
	struct errmsg why = {{0}};
	struct instance src, inst = {0};
	long long target;
	struct inherited_password ip;

	if (sscanf(value, "%63s %63s %7s", when, newname, extra) != 2)
		return errmsg_set(e, -EINVAL,
		                  "restore of %s refused: write \"TIME NEWNAME\", TIME in RFC 3339 "
		                  "(e.g. 2026-11-30T21:00:00Z)",
		                  name);
	if (parse_rfc3339(when, &target) != 0)
		return errmsg_set(e, -EINVAL,
		                  "restore of %s refused: '%.63s' is not an RFC 3339 time (e.g. "
		                  "2026-11-30T21:00:00Z)",
		                  name, when);
	int rc = check_copy(fs, "restore", fs->provider->ops->restore != NULL,
	                    "(your own server, whose history dbosfs does not keep)", name, newname,
	                    &src, e);
	if (rc)
		return rc;
	rc = inherit_password(fs, "restore", name, newname, &ip, e);
	if (rc)
		return rc;
	log_event("restoring %s as of %s as %s", name, when, newname);
	long long t0 = now_ms();
	rc = fs->provider->ops->restore(fs->provider, &src, target, newname,
	                                ip.has_pw ? ip.pw : NULL, &inst, &why);
	secret_wipe(ip.pw, sizeof(ip.pw));
	if (rc) {
		inherit_password_undo(fs, newname, rc, &ip);
		return errmsg_set(e, rc, "restore of %s as %s failed (%s): %s", name, newname,
		                  errno_name(rc), why.text);
	}
	secret_wipe(ip.previous, sizeof(ip.previous));
	if (!inst.name[0])
		snprintf(inst.name, sizeof(inst.name), "%.31s", newname);
	state_put(fs->cache, &inst, now_ms());
	log_event("restored %s as of %s as %s in %lld ms", name, when, newname, now_ms() - t0);
	return 0;
}

static const struct file_def copy_rows[] = {
    {"branch", 0644, .build = build_branch, .write = write_branch, .op = "branch"},
    {"restore", 0644, .build = build_restore, .write = write_restore, .op = "restore"},
};

const struct file_table copy_files = FILE_TABLE(copy_rows);
