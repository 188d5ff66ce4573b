/* Child processes: see include/proc.h. */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int record_group(const char *dir, pid_t pgid, pid_t sid);

void proc_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static __attribute__((noreturn)) void child_fail(const char *what)
{
	/* write(2) is async-signal-safe; stdio is not. */
	static const char prefix[] = "dbosfs: child setup failed: ";
	ssize_t r = write(2, prefix, sizeof(prefix) - 1);
	r = write(2, what, strlen(what));
	r = write(2, "\n", 1);
	(void)r;
	_exit(126);
}

/* The child between fork and exec: async-signal-safe calls only, because
 * another thread may have held a lock (malloc, stdio) at fork time. */
static __attribute__((noreturn)) void child_main(const struct proc_spec *s, int in, int out,
                                                 int err, int go_fd, pid_t parent,
                                                 const struct rlimit *child_rl, unsigned maxfd)
{
	struct sigaction dfl;
	sigset_t none;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	/* Ignored signals (SIGPIPE in a FUSE daemon) survive exec. */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (s->grouping == PROC_NEW_SESSION)
		setsid();
	else if (s->grouping == PROC_NEW_GROUP)
		setpgid(0, 0);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(126);
	if (chdir(s->dir ? s->dir : "/") < 0)
		child_fail(s->dir ? s->dir : "chdir /");
	if (s->creds && s->creds->drop) {
		if (setgroups((size_t)s->creds->ngroups, s->creds->groups) < 0)
			child_fail("setgroups");
		if (setgid(s->creds->gid) < 0)
			child_fail("setgid");
		if (setuid(s->creds->uid) < 0)
			child_fail("setuid");
	}
	/* After the change of user, which clears it; and if the daemon died
	 * before this line, nobody is left to send the signal. */
	if (s->die_with_parent) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
	}
	/* The parent records our group before we may run anything; EOF
	 * instead of its byte means it died first. */
	if (go_fd >= 0) {
		char c;
		ssize_t n;
		while ((n = read(go_fd, &c, 1)) < 0 && errno == EINTR)
			;
		if (n != 1)
			_exit(127);
	}
	if (child_rl)
		setrlimit(RLIMIT_NOFILE, child_rl);
	/* The /dev/fuse fd and every other descriptor of ours stop here. */
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
		for (unsigned fd = 3; fd < maxfd; fd++)
			close((int)fd);
	if (s->umask_private)
		umask(077);
	execve(s->argv[0], s->argv, s->envp);
	child_fail(s->argv[0]);
}

pid_t proc_spawn(const struct proc_spec *s, struct errmsg *e)
{
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	int go[2] = {-1, -1};
	struct rlimit rl, child_rl;
	bool set_rl = false;
	unsigned maxfd = 65536;
	pid_t parent = getpid(), pid;
	bool record = s->pgroups_dir && s->grouping != PROC_SAME_GROUP;

	if (devnull < 0)
		return errmsg_set(e, -errno, "cannot open /dev/null: %s", strerror(errno));
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 1048576)
			maxfd = (unsigned)rl.rlim_cur;
		if (s->nofile) {
			child_rl = rl;
			child_rl.rlim_cur = s->nofile;
			if (rl.rlim_max != RLIM_INFINITY && child_rl.rlim_cur > rl.rlim_max)
				child_rl.rlim_cur = rl.rlim_max;
			set_rl = true;
		}
	}
	if (record && pipe2(go, O_CLOEXEC) < 0) {
		int saved = errno;
		close(devnull);
		return errmsg_set(e, -saved, "cannot create a pipe: %s", strerror(saved));
	}
	int in = s->in_fd >= 0 ? s->in_fd : devnull;
	int out = s->out_fd >= 0 ? s->out_fd : devnull;
	int err = s->err_fd >= 0 ? s->err_fd : out;

	pid = fork();
	if (pid == 0)
		child_main(s, in, out, err, go[0], parent, set_rl ? &child_rl : NULL, maxfd);
	int saved = errno;
	close(devnull);
	if (go[0] >= 0)
		close(go[0]);
	if (pid < 0) {
		if (go[1] >= 0)
			close(go[1]);
		return errmsg_set(e, -saved, "fork failed: %s", strerror(saved));
	}
	/* Also from this side, so killpg() works before the child has run. */
	if (s->grouping == PROC_NEW_GROUP)
		setpgid(pid, pid);
	if (record) {
		int rc = record_group(s->pgroups_dir, pid,
		                      s->grouping == PROC_NEW_SESSION ? pid : getsid(0));
		if (rc == 0 && write(go[1], "g", 1) != 1)
			rc = -EIO;
		close(go[1]);
		if (rc) {
			/* Without a record it must not run: it exits at EOF. */
			int st;
			kill(pid, SIGKILL);
			proc_reap(pid, &st, s->pgroups_dir);
			return errmsg_set(e, rc, "cannot record process group in %s: %s",
			                  s->pgroups_dir, strerror(-rc));
		}
	}
	return pid;
}

void proc_reap(pid_t pid, int *wstatus, const char *pgroups_dir)
{
	int st = 0;

	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			st = 0x7f00; /* unknown: report as exit 127 */
			break;
		}
	}
	if (wstatus)
		*wstatus = st;
	if (pgroups_dir)
		proc_group_forget(pgroups_dir, pid);
}

int proc_reap_wait(pid_t pid, int timeout_ms, int *wstatus)
{
	long long deadline = now_ms() + timeout_ms;
	int st = 0, delay = 1;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid || (r < 0 && errno == ECHILD)) {
			if (wstatus)
				*wstatus = st;
			return 1;
		}
		if (now_ms() >= deadline)
			return 0;
		proc_sleep_ms(delay);
		if (delay < 20)
			delay *= 2;
	}
}

bool proc_exited_unreaped(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
		return errno == ECHILD;
	return si.si_pid == pid;
}

void proc_describe_status(int wstatus, char *out, size_t outsz)
{
	if (WIFEXITED(wstatus))
		snprintf(out, outsz, "exit status %d", WEXITSTATUS(wstatus));
	else if (WIFSIGNALED(wstatus))
		snprintf(out, outsz, "killed by signal %d (%s)", WTERMSIG(wstatus),
		         sigabbrev_np(WTERMSIG(wstatus)) ? sigabbrev_np(WTERMSIG(wstatus))
		                                         : "unknown");
	else
		snprintf(out, outsz, "wait status %d", wstatus);
}

/* ---- /proc ---- */

/* The fields of /proc/PID/stat after the command name: [0] state,
 * [1] ppid, [2] pgrp, [3] session, ..., [19] starttime. */
struct proc_stat {
	char state;
	pid_t ppid, pgrp, sid;
	unsigned long long starttime;
};

static bool read_stat(pid_t pid, struct proc_stat *ps)
{
	char path[64], buf[1024];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: the last ')'
	 * ends it. */
	char *rp = strrchr(buf, ')');
	int ppid, pgrp, sid;
	if (!rp || sscanf(rp + 2,
	                  "%c %d %d %d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
	                  "%*d %llu",
	                  &ps->state, &ppid, &pgrp, &sid, &ps->starttime) != 5)
		return false;
	ps->ppid = ppid;
	ps->pgrp = pgrp;
	ps->sid = sid;
	return true;
}

bool proc_alive(pid_t pid)
{
	struct proc_stat ps;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return false;
	return read_stat(pid, &ps) && ps.state != 'Z' && ps.state != 'X';
}

pid_t proc_ppid(pid_t pid)
{
	struct proc_stat ps;

	return read_stat(pid, &ps) ? ps.ppid : 0;
}

/* ---- recorded process groups ---- */

static int record_group(const char *dir, pid_t pgid, pid_t sid)
{
	char tmp[PATH_MAX], path[PATH_MAX], text[128];
	struct proc_stat self;
	int fd, n;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (!read_stat(getpid(), &self))
		return -EIO;
	/* Who recorded it (pid and start time: alive means still owned) and
	 * the session the group lives in. */
	n = snprintf(text, sizeof(text), "%d %llu %d\n", (int)getpid(), self.starttime, (int)sid);
	if (snprintf(tmp, sizeof(tmp), "%s/.%d.%d", dir, (int)pgid, (int)getpid()) >=
	        (int)sizeof(tmp) ||
	    snprintf(path, sizeof(path), "%s/%d", dir, (int)pgid) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, (size_t)n) != n) {
		int rc = errno ? -errno : -EIO;
		close(fd);
		unlink(tmp);
		return rc;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		int rc = -errno;
		unlink(tmp);
		return rc;
	}
	return 0;
}

int proc_group_record(const char *dir, pid_t pgid)
{
	return record_group(dir, pgid, getsid(0));
}

void proc_group_forget(const char *dir, pid_t pgid)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%d", dir, (int)pgid) < (int)sizeof(path))
		unlink(path);
}

/* Is the daemon that wrote a record still running? */
static bool recorder_alive(pid_t pid, unsigned long long starttime)
{
	struct proc_stat ps;

	return pid > 0 && read_stat(pid, &ps) && ps.starttime == starttime && ps.state != 'Z';
}

/* SIGKILLs every process in group pgid of session sid; the count. */
static int kill_group_members(pid_t pgid, pid_t sid)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int killed = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		struct proc_stat ps;

		if (*end || pid <= 0 || pid == getpid())
			continue;
		if (read_stat((pid_t)pid, &ps) && ps.pgrp == pgid && ps.sid == sid &&
		    ps.state != 'Z' && kill((pid_t)pid, SIGKILL) == 0)
			killed++;
	}
	closedir(d);
	return killed;
}

int proc_groups_kill_recorded(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX + 300], text[128];
	int killed = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		const char *name = de->d_name;
		int pid = 0, pgid = 0, sid = 0;
		unsigned long long start = 0;

		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (name[0] == '.') {
			/* A record being written: its child waits for the byte
			 * that follows the rename, so a dead writer's child has
			 * exited already. */
			if (sscanf(name, ".%d.%d", &pgid, &pid) == 2 && !proc_alive(pid))
				unlink(path);
			continue;
		}
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
		if (fd >= 0)
			close(fd);
		text[n > 0 ? n : 0] = '\0';
		pgid = atoi(name);
		if (pgid <= 0 || sscanf(text, "%d %llu %d", &pid, &start, &sid) != 3) {
			unlink(path);
			continue;
		}
		if (recorder_alive(pid, start))
			continue; /* another mount's live group */
		killed += kill_group_members(pgid, sid);
		unlink(path);
	}
	closedir(d);
	return killed;
}

/* ---- descriptors ---- */

unsigned long proc_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit want = rl;
		want.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &want) == 0)
			rl = want;
	}
	return rl.rlim_cur == RLIM_INFINITY ? ULONG_MAX : (unsigned long)rl.rlim_cur;
}

void proc_crash_point(const char *step)
{
	static atomic_int hits;
	const char *want = getenv("DBOSFS_CRASH_AT");
	size_t n = strlen(step);

	/* "STEP" or "STEP:N" (the Nth time the step is reached). */
	if (!want || strncmp(want, step, n) != 0 || (want[n] && want[n] != ':'))
		return;
	if (want[n] == ':' && atomic_fetch_add(&hits, 1) + 1 < atoi(want + n + 1))
		return;
	static const char msg[] = "dbosfs: DBOSFS_CRASH_AT: exiting at ";
	ssize_t r = write(2, msg, sizeof(msg) - 1);
	r = write(2, step, n);
	r = write(2, "\n", 1);
	(void)r;
	_exit(86);
}
