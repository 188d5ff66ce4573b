/* The migration runner's processes: each command runs under a guard
 * process (its group's leader) that dies with the daemon and takes the
 * group along; every group and run is recorded in STATE_DIR, so the next
 * mount kills what a killed daemon's commands left behind (migrate.h,
 * migrate_init). */
#include "migrate_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"

/* STATE_DIR/migrate: one record per running command, named by run tag, so
 * the next mount can kill what a killed daemon left behind outside the
 * command's group (the group itself is recorded by proc.h, in
 * STATE_DIR/run/pgroups). */
static char records_dir[PATH_MAX];
static char pgroups_dir[PATH_MAX];

/* pgrp and start time (clock ticks since boot) of pid; false if gone or a
 * zombie. */
static bool proc_stat(pid_t pid, pid_t *pgrp, unsigned long long *start)
{
	char path[64], text[1024], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return false;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return false;
	text[n] = '\0';
	/* The command name may hold spaces and ')': fields start after the
	 * last ')'. Field 3 is the state, 5 the pgrp, 22 the start time. */
	if (!(p = strrchr(text, ')')))
		return false;
	int pg = 0;
	unsigned long long st = 0;
	if (p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return false;
	if (sscanf(p + 2,
	           "%*c %*d %d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
	           "%*d %llu",
	           &pg, &st) != 2)
		return false;
	*pgrp = pg;
	*start = st;
	return true;
}

/* True if pid's environment has RUN_TAG_VAR=tag. */
static bool proc_has_tag(pid_t pid, const char *tag)
{
	char path[64], want[128], chunk[8192 + 128];
	size_t wlen, keep = 0;
	bool found = false;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	wlen = (size_t)snprintf(want, sizeof(want), "%s=%s", RUN_TAG_VAR, tag) + 1;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return false;
	/* Entries are NUL-separated; carry the last bytes across reads. */
	chunk[0] = '\0';
	keep = 1;
	while (!found) {
		ssize_t n = read(fd, chunk + keep, sizeof(chunk) - keep);
		if (n <= 0)
			break;
		size_t len = keep + (size_t)n;
		for (size_t i = 0; i + wlen <= len + 1 && !found; i++)
			if (chunk[i] == '\0' && i + wlen <= len &&
			    memcmp(chunk + i + 1, want, wlen - 1) == 0 &&
			    (i + wlen == len || chunk[i + wlen] == '\0'))
				found = true;
		keep = len < wlen ? len : wlen;
		memmove(chunk, chunk + len - keep, keep);
	}
	close(fd);
	explicit_bzero(chunk, sizeof(chunk));
	return found;
}

struct leftover {
	char tag[80];
	pid_t pgid;
	unsigned long long leader_start;
};

/* SIGKILLs every live process in one of the groups (started no earlier
 * than its leader: a recycled pgid is someone else's) or carrying one of
 * the tags, except skip. Returns how many it killed. */
static int kill_leftovers(const struct leftover *lo, size_t n, pid_t skip)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	pid_t self = getpid();
	int killed = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char *end;
		long v = strtol(de->d_name, &end, 10);
		pid_t pgrp;
		unsigned long long start;

		if (*end || v <= 1 || v == self || v == skip || !proc_stat((pid_t)v, &pgrp, &start))
			continue;
		for (size_t i = 0; i < n; i++) {
			bool in_group =
			    lo[i].pgid > 0 && pgrp == lo[i].pgid && start >= lo[i].leader_start;
			if (in_group || (lo[i].tag[0] && proc_has_tag((pid_t)v, lo[i].tag))) {
				if (kill((pid_t)v, SIGKILL) == 0)
					killed++;
				break;
			}
		}
	}
	closedir(d);
	return killed;
}

static void record_path(const char *tag, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", records_dir, tag);
}

static void record_write(const char *tag, pid_t pgid)
{
	char path[PATH_MAX + 100];
	int fd;

	if (pgroups_dir[0] && proc_group_record(pgroups_dir, pgid) != 0)
		log_error("cannot record migration group %d in %s", (int)pgid, pgroups_dir);
	if (!records_dir[0])
		return;
	record_path(tag, path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || fsync(fd) != 0)
		log_error("cannot record migration %s in %s: %s", tag, records_dir,
		          strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void record_remove(const char *tag, pid_t pgid)
{
	char path[PATH_MAX + 100];

	if (pgroups_dir[0])
		proc_group_forget(pgroups_dir, pgid);
	if (!records_dir[0])
		return;
	record_path(tag, path, sizeof(path));
	unlink(path);
}

/* True if pid is a live dbosfs other than us. */
static bool daemon_alive(int pid)
{
	char path[64], comm[32] = "";
	FILE *f;

	if (pid <= 1 || pid == getpid() || kill(pid, 0) != 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	if (!(f = fopen(path, "re")))
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	return strncmp(comm, "dbosfs", 6) == 0;
}

int migrate_init(const char *state_dir)
{
	struct leftover lo[64];
	size_t n = 0;
	int killed = 0;
	DIR *d;
	struct dirent *de;

	if (snprintf(records_dir, sizeof(records_dir), "%s/migrate", state_dir) >=
	    (int)sizeof(records_dir)) {
		records_dir[0] = '\0';
		return 0;
	}
	if (snprintf(pgroups_dir, sizeof(pgroups_dir), "%s/run/pgroups", state_dir) >=
	    (int)sizeof(pgroups_dir))
		pgroups_dir[0] = '\0';
	if (mkdir(records_dir, 0700) != 0 && errno != EEXIST) {
		log_error("cannot create %s: %s", records_dir, strerror(errno));
		records_dir[0] = '\0';
	}
	/* The groups of commands a dead daemon ran (the guard kills them when
	 * the daemon dies; this catches what it could not). */
	if (pgroups_dir[0])
		killed = proc_groups_kill_recorded(pgroups_dir);
	if (!records_dir[0] || !(d = opendir(records_dir)))
		return killed;
	/* Up to 64 runs' leftovers at a time; a crash leaves one or two. */
	while ((de = readdir(d))) {
		char path[PATH_MAX + 300];

		if (strncmp(de->d_name, "dbosfs-migrate-", 15) != 0 || n == 64 ||
		    strlen(de->d_name) >= sizeof(lo[n].tag))
			continue;
		/* A run of a daemon still alive (another mount sharing this
		 * state_dir) is not ours to stop. */
		if (daemon_alive(atoi(de->d_name + 15)))
			continue;
		snprintf(path, sizeof(path), "%s/%s", records_dir, de->d_name);
		/* Processes that left the group carry the run's tag. */
		memcpy(lo[n].tag, de->d_name, strlen(de->d_name) + 1);
		lo[n].pgid = 0;
		lo[n].leader_start = 0;
		n++;
		unlink(path);
	}
	closedir(d);
	/* Twice: a process may fork while the first pass runs. */
	for (int pass = 0; pass < 2 && n; pass++)
		killed += kill_leftovers(lo, n, 0);
	if (n)
		log_event(
		    "migrations interrupted by an earlier crash: %zu run%s, %d process%s killed", n,
		    n == 1 ? "" : "s", killed, killed == 1 ? "" : "es");
	return killed;
}

/* The guard (group leader) dies with the daemon: PR_SET_PDEATHSIG sends it
 * this, and it takes its whole group along. */
static void guard_on_daemon_death(int sig)
{
	(void)sig;
	kill(0, SIGKILL);
}

/* Between fork and exec (threaded parent): async-signal-safe calls only. */
static __attribute__((noreturn)) void run_guard_and_shell(const struct guarded_cmd *c, pid_t daemon,
                                                          int devnull, int out_fd)
{
	struct sigaction sa;
	sigset_t none;
	int st;
	pid_t sh;

	setpgid(0, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &sa, NULL);
	/* The guard outlives the shell to pass its status on: the group's
	 * SIGINT/SIGTERM are for the shell, not for it (SIGKILL still is). */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sa.sa_handler = guard_on_daemon_death;
	sigaction(SIGUSR1, &sa, NULL);
	prctl(PR_SET_PDEATHSIG, SIGUSR1);
	if (getppid() != daemon)
		kill(0, SIGKILL); /* the daemon died before prctl */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	sh = fork();
	if (sh == 0) {
		sa.sa_handler = SIG_DFL;
		for (int s = 1; s < NSIG; s++)
			sigaction(s, &sa, NULL);
		if (dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			_exit(126);
		if (c->as_writer && (setgroups((size_t)c->ngroups, c->groups) != 0 ||
		                     setgid(c->gid) != 0 || setuid(c->uid) != 0)) {
			static const char msg[] = "dbosfs: cannot switch to the writer's user\n";
			if (write(2, msg, sizeof(msg) - 1) < 0)
				_exit(126);
			_exit(126);
		}
		if (chdir(c->dir) != 0) {
			static const char msg[] =
			    "dbosfs: cannot enter the application directory\n";
			if (write(2, msg, sizeof(msg) - 1) < 0)
				_exit(126);
			_exit(126);
		}
		/* Nothing of the daemon's may leak: not /dev/fuse, not a socket. */
		if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
			for (int fd = 3; fd < 65536; fd++)
				close(fd);
		execve(c->argv[0], c->argv, c->env);
		_exit(127);
	}
	if (sh < 0)
		_exit(126);
	close(out_fd);
	close(devnull);
	while (waitpid(sh, &st, 0) < 0)
		if (errno != EINTR)
			_exit(127);
	if (WIFEXITED(st))
		_exit(WEXITSTATUS(st));
	/* Die the way the shell died, so the report names the signal. */
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	sa.sa_handler = SIG_DFL;
	sigaction(WTERMSIG(st), &sa, NULL);
	kill(getpid(), WTERMSIG(st));
	_exit(128 + WTERMSIG(st));
}

pid_t guarded_spawn(const struct guarded_cmd *c, int out_fd, struct errmsg *e)
{
	pid_t pid, daemon = getpid();
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC), err;

	if (devnull < 0)
		return errmsg_set(e, -EIO, "cannot open /dev/null: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		err = errno;
		close(devnull);
		return errmsg_set(e, -EIO, "fork: %s", strerror(err));
	}
	if (pid == 0)
		run_guard_and_shell(c, daemon, devnull, out_fd);
	/* Also from this side, so kill(-pid) works before the child runs. */
	setpgid(pid, pid);
	record_write(c->tag, pid);
	close(devnull);
	return pid;
}

/* What is left of the group is killed while the leader is still an
 * unreaped zombie: until it is reaped its pid (= the group id) cannot be
 * reused. */
int guarded_reap(pid_t pid, const char *tag, int *wstatus)
{
	struct leftover lo = {.pgid = pid, .leader_start = 0};
	int left;

	snprintf(lo.tag, sizeof(lo.tag), "%s", tag);
	/* Processes that left the group (setsid, daemons) still carry the
	 * run's tag in their environment. */
	left = kill_leftovers(&lo, 1, pid);
	kill(-pid, SIGKILL);
	while (waitpid(pid, wstatus, 0) < 0 && errno == EINTR)
		;
	record_remove(tag, pid);
	return left;
}
