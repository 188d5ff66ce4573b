/* What create() finds out and prepares before the daemon forks: the
 * PostgreSQL binaries, the account servers run as, the state directory
 * (reachable by that account, locked against a second dbosfs) and the
 * socket directory. */
#include "local_internal.h"
#include "log.h"
#include "proc.h"
#include "options.h"
#include "provider.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static bool has_server_binaries(const char *dir)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/initdb", dir);
	if (access(path, X_OK) != 0)
		return false;
	snprintf(path, sizeof(path), "%s/postgres", dir);
	return access(path, X_OK) == 0;
}

/* `pg_config --bindir`, run to completion here (a short-lived child that
 * is reaped before create() returns, so daemonizing loses nothing). */
static bool pg_config_bindir(char *out, size_t outsz)
{
	static const char *const candidates[] = {"/usr/bin/pg_config", "/usr/local/bin/pg_config",
	                                         "/usr/local/pgsql/bin/pg_config"};
	int fds[2];

	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		struct proc_spec s;
		char buf[PATH_MAX];
		size_t got = 0;
		int st = 0;

		if (access(candidates[i], X_OK) != 0)
			continue;
		if (pipe2(fds, O_CLOEXEC) < 0)
			return false;
		char *argv[] = {(char *)candidates[i], "--bindir", NULL};
		memset(&s, 0, sizeof(s));
		s.argv = argv;
		s.envp = local_child_env;
		s.in_fd = -1;
		s.out_fd = fds[1];
		s.err_fd = -1;
		pid_t pid = proc_spawn(&s, NULL);
		close(fds[1]);
		if (pid < 0) {
			close(fds[0]);
			continue;
		}
		for (;;) {
			ssize_t n = read(fds[0], buf + got, sizeof(buf) - 1 - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
			if (got == sizeof(buf) - 1)
				break;
		}
		close(fds[0]);
		proc_reap(pid, &st, NULL);
		buf[got] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && buf[0] == '/' &&
		    has_server_binaries(buf)) {
			snprintf(out, outsz, "%s", buf);
			return true;
		}
	}
	return false;
}

static bool newest_versioned_bindir(char *out, size_t outsz)
{
	glob_t g;
	double best = -1;

	if (glob("/usr/lib/postgresql/*/bin", GLOB_ONLYDIR, NULL, &g) != 0)
		return false;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		const char *v = g.gl_pathv[i] + strlen("/usr/lib/postgresql/");
		double ver = strtod(v, NULL);
		if (ver > best && has_server_binaries(g.gl_pathv[i])) {
			best = ver;
			snprintf(out, outsz, "%s", g.gl_pathv[i]);
		}
	}
	globfree(&g);
	return best >= 0;
}

int resolve_bindir(const struct local_options *opt, char *out, size_t outsz, struct errmsg *e)
{
	if (opt->pg_bindir && *opt->pg_bindir) {
		if (!has_server_binaries(opt->pg_bindir))
			return errmsg_set(e, -ENOENT,
			                  "pg_bindir=%s has no executable initdb and postgres",
			                  opt->pg_bindir);
		snprintf(out, outsz, "%s", opt->pg_bindir);
		return 0;
	}
	if (pg_config_bindir(out, outsz) || newest_versioned_bindir(out, outsz))
		return 0;
	return errmsg_set(e, -ENOENT,
	                  "no PostgreSQL server binaries found: install "
	                  "postgresql-15 or pass -o pg_bindir=DIR");
}

static bool can_traverse(const struct stat *st, const struct local_account *a)
{
	if (st->st_uid == a->uid)
		return st->st_mode & S_IXUSR;
	bool in_group = st->st_gid == a->gid;
	for (int i = 0; i < a->ngroups && !in_group; i++)
		in_group = a->groups[i] == st->st_gid;
	return in_group ? (st->st_mode & S_IXGRP) : (st->st_mode & S_IXOTH);
}

/* As root, the server account must be able to walk from / to its data
 * directories. We open our own state_dir for traversal (o+x: listing and
 * the 0700 passwords directory stay closed); an ancestor we do not own is
 * the user's to fix, so we say which one. */
static int check_reachable(const struct local_provider *lp, const char *state_dir, struct errmsg *e)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s", state_dir);
	if (stat(path, &st) == 0 && !can_traverse(&st, &lp->acct) &&
	    chmod(path, (st.st_mode & 07777) | S_IXOTH) < 0)
		return errmsg_set(e, -errno, "cannot open %s for traversal: %s", path,
		                  strerror(errno));
	for (char *slash = strrchr(path, '/'); slash && slash != path; slash = strrchr(path, '/')) {
		*slash = '\0';
		if (stat(path, &st) < 0)
			return errmsg_set(e, -errno, "cannot stat %s: %s", path, strerror(errno));
		if (!can_traverse(&st, &lp->acct))
			return errmsg_set(
			    e, -EACCES,
			    "the server account %s cannot enter %s (mode %04o), so PostgreSQL "
			    "could not reach its data under %s: choose another state_dir or "
			    "allow traversal (chmod o+x %s)",
			    lp->acct.name, path, (unsigned)(st.st_mode & 07777), state_dir, path);
	}
	return 0;
}

/* useradd --system: no login shell, no password, home root's default
 * state directory (not created here; the account is machine-wide, so its
 * home is not whichever state_dir first needed it). Another dbosfs making
 * it at the same moment is as good (exit status 9: the name exists). */
static int make_server_account(const char *user, struct errmsg *e)
{
	static const char *const useradds[] = {"/usr/sbin/useradd", "/sbin/useradd"};
	const char *exe = NULL;
	char logpath[] = "/tmp/dbosfs-useradd-XXXXXX";
	int fd, st = 0;

	for (size_t i = 0; i < sizeof(useradds) / sizeof(useradds[0]) && !exe; i++)
		if (access(useradds[i], X_OK) == 0)
			exe = useradds[i];
	if (!exe)
		return errmsg_set(e, -ENOENT,
		                  "the server account %s does not exist and useradd was not found: "
		                  "create the account or pass -o pg_user=USER",
		                  user);
	const char *shell =
	    access("/usr/sbin/nologin", X_OK) == 0 ? "/usr/sbin/nologin" : "/bin/false";
	char *argv[] = {(char *)exe,    "--system",
	                "--user-group", "--no-create-home",
	                "--home-dir",   DBOSFS_ROOT_STATE_DIR,
	                "--shell",      (char *)shell,
	                "--comment",    "dbosfs PostgreSQL servers",
	                (char *)user,   NULL};
	fd = mkostemp(logpath, O_CLOEXEC);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot create a temporary file: %s", strerror(errno));
	unlink(logpath);
	struct proc_spec s;
	memset(&s, 0, sizeof(s));
	s.argv = argv;
	s.envp = local_child_env;
	s.in_fd = -1;
	s.out_fd = fd;
	s.err_fd = fd;
	pid_t pid = proc_spawn(&s, e);
	if (pid < 0) {
		close(fd);
		return (int)pid;
	}
	proc_reap(pid, &st, NULL);
	if (WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 9)) {
		close(fd);
		if (WEXITSTATUS(st) == 0)
			log_event("local: made the system account %s (no login shell, home %s) to "
			          "run the servers",
			          user, DBOSFS_ROOT_STATE_DIR);
		return 0;
	}
	char out[512] = "", how[64];
	ssize_t n = pread(fd, out, sizeof(out) - 1, 0);
	close(fd);
	out[n > 0 ? n : 0] = '\0';
	out[strcspn(out, "\n")] = '\0';
	proc_describe_status(st, how, sizeof(how));
	return errmsg_set(e, -EIO,
	                  "cannot make the server account %s (useradd: %s%s%s): create it or pass "
	                  "-o pg_user=USER",
	                  user, how, out[0] ? ": " : "", out);
}

int resolve_account(const struct local_options *opt, struct local_account *a, struct errmsg *e)
{
	if (geteuid() != 0) {
		struct passwd *pw = getpwuid(geteuid());
		a->drop = false;
		a->uid = geteuid();
		a->gid = getegid();
		snprintf(a->name, sizeof(a->name), "%s", pw ? pw->pw_name : "unknown");
		return 0;
	}
	const char *user = opt->pg_user && *opt->pg_user ? opt->pg_user : LOCAL_SERVER_ACCOUNT;
	struct passwd *pw = getpwnam(user);
	if (!pw && !(opt->pg_user && *opt->pg_user)) {
		/* Our own account, made the way Debian packages make theirs:
		 * so a server breakout is not the owner of the machine's own
		 * PostgreSQL (whose account is postgres). */
		int rc = make_server_account(user, e);
		if (rc)
			return rc;
		pw = getpwnam(user);
	}
	if (!pw)
		return errmsg_set(e, -ENOENT,
		                  "PostgreSQL refuses to run as root and the account %s does not "
		                  "exist: create it or pass -o pg_user=USER",
		                  user);
	if (pw->pw_uid == 0)
		return errmsg_set(e, -EINVAL,
		                  "pg_user=%s is root; PostgreSQL refuses to run as root", user);
	a->drop = true;
	a->uid = pw->pw_uid;
	a->gid = pw->pw_gid;
	snprintf(a->name, sizeof(a->name), "%s", user);
	/* Group list now: initgroups() in the child is not async-signal-safe. */
	int n = 32;
	for (int tries = 0; tries < 4; tries++) {
		gid_t *g = realloc(a->groups, (size_t)n * sizeof(gid_t));
		if (!g)
			return errmsg_set(e, -ENOMEM, "out of memory");
		a->groups = g;
		int want = n;
		if (getgrouplist(user, a->gid, a->groups, &want) >= 0) {
			a->ngroups = want;
			return 0;
		}
		n = want > n ? want : n * 2;
	}
	return errmsg_set(e, -EIO, "cannot read the groups of %s", user);
}

int make_dirs(struct local_provider *lp, const char *state_dir, struct errmsg *e)
{
	static const char *const subdirs[] = {"instances", "templates", "spares",
	                                      "slots",     "trash",     "run"};
	mode_t mode = lp->acct.drop ? 0711 : 0700;
	char path[PATH_MAX + 32];
	int rc;

	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
		return errmsg_set(e, -errno, "cannot create %s: %s", state_dir, strerror(errno));
	if (lp->acct.drop) {
		rc = check_reachable(lp, state_dir, e);
		if (rc)
			return rc;
	}
	/* STATE_DIR/run holds records of our process groups (proc.h). */
	snprintf(path, sizeof(path), "%s/run", state_dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return errmsg_set(e, -errno, "cannot create %s: %s", path, strerror(errno));
	rc = local_mkdir(lp, lp->root, mode, false);
	for (size_t i = 0; !rc && i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", lp->root, subdirs[i]);
		rc = local_mkdir(lp, path, mode, false);
	}
	/* Intent records may hold a new password: owner only. */
	snprintf(path, sizeof(path), "%s/intents", lp->root);
	if (!rc)
		rc = local_mkdir(lp, path, 0700, false);
	if (rc)
		return errmsg_set(e, rc, "cannot create directories under %s: %s", lp->root,
		                  strerror(-rc));
	local_path(lp->runbase, sizeof(lp->runbase), "%s/run", lp->root);
	if (!local_socket_path_fits(lp->runbase, 16)) {
		/* Sockets need a path under 108 bytes; a deep state_dir gets a
		 * private directory in /tmp instead (made at start). */
		lp->runbase[0] = '\0';
	}
	return 0;
}

/* The pid in the lock file, fixed width so a reader never sees half of
 * it. Only read for the refusal message of a second dbosfs. */
void write_lock_pid(struct local_provider *lp)
{
	char text[16];
	int n = snprintf(text, sizeof(text), "%-10d\n", (int)getpid());

	if (lp->lock_fd < 0)
		return;
	if (pwrite(lp->lock_fd, text, (size_t)n, 0) != n || ftruncate(lp->lock_fd, n) < 0)
		log_error("local: cannot write our pid into %s/lock: %m", lp->root);
}

/* One dbosfs per STATE_DIR/local: two would each take the other's
 * postmasters for leftovers of a crash and kill them. The flock belongs to
 * the open file, so it survives the fork that daemonizes (the parent's
 * copy closes at its exit, the daemon's stays) and the kernel drops it
 * when the holder dies; it is released at free(). Children never inherit
 * it (O_CLOEXEC, and proc_spawn closes every fd). A cloud mount uses
 * other subdirectories of state_dir and takes no part in this. */
int lock_state_dir(struct local_provider *lp, const char *state_dir, struct errmsg *e)
{
	char path[PATH_MAX], text[32];
	int fd, err;

	if (local_path(path, sizeof(path), "%s/lock", lp->root))
		return errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		lp->lock_fd = fd;
		write_lock_pid(lp);
		return 0;
	}
	err = errno;
	if (err != EWOULDBLOCK) {
		close(fd);
		return errmsg_set(e, -err, "cannot lock %s: %s", path, strerror(err));
	}
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
	text[n > 0 ? n : 0] = '\0';
	close(fd);
	int pid = atoi(text);
	if (pid > 0)
		return errmsg_set(e, -EBUSY, "state_dir %s is in use by another dbosfs (pid %d)",
		                  state_dir, pid);
	/* It has locked the file but not written its pid yet. */
	return errmsg_set(e, -EBUSY, "state_dir %s is in use by another dbosfs", state_dir);
}

/* A short socket directory when state_dir is too deep. Made in create()
 * (a directory is not a thread or a process, so daemonizing keeps it). */
int make_tmp_runbase(struct local_provider *lp, struct errmsg *e)
{
	char tmpl[] = "/tmp/dbosfs-run-XXXXXX";

	if (!mkdtemp(tmpl))
		return errmsg_set(e, -errno, "cannot create a socket directory in /tmp: %s",
		                  strerror(errno));
	if (lp->acct.drop && chmod(tmpl, 0711) < 0)
		return errmsg_set(e, -errno, "cannot chmod %s: %s", tmpl, strerror(errno));
	snprintf(lp->runbase, sizeof(lp->runbase), "%s", tmpl);
	lp->runbase_is_tmp = true;
	return 0;
}
