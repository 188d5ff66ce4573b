/* Child processes, in one place: fork/exec from a multi-threaded daemon,
 * process groups that die with the daemon, a record of those groups under
 * STATE_DIR/run/pgroups so the next mount can kill what a crash left, the
 * text of a wait status, and sleeping. */
#ifndef DBOSFS_PROC_H
#define DBOSFS_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common.h"

/* Who a child runs as (drop = false: stay as we are). */
struct proc_creds {
	bool drop;
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	int ngroups;
};

enum proc_grouping {
	PROC_SAME_GROUP, /* stays in our process group */
	PROC_NEW_GROUP,  /* leads a new group in our session: killpg() ends it all */
	PROC_NEW_SESSION /* setsid(): a terminal's Ctrl-C never reaches it */
};

struct proc_spec {
	char *const *argv; /* argv[0] is an absolute path */
	char *const *envp;
	const char *dir; /* working directory; NULL: "/" */
	int in_fd;       /* -1: /dev/null */
	int out_fd;      /* -1: /dev/null */
	int err_fd;      /* -1: same as out_fd */
	enum proc_grouping grouping;
	/* SIGKILL to the child when the thread that forked it ends (the
	 * daemon dies). Set after any change of user, which clears it. The
	 * forking thread must wait for the child: a thread that exits first
	 * kills it too. */
	bool die_with_parent;
	/* With a new group: record it in this directory (STATE_DIR/run/pgroups)
	 * before the child may exec, so a later mount can kill the group if
	 * we crash; proc_reap() forgets it. NULL: no record. */
	const char *pgroups_dir;
	const struct proc_creds *creds; /* NULL: stay as we are */
	/* Soft RLIMIT_NOFILE for the child (capped at the hard limit); 0:
	 * inherit ours. */
	unsigned long nofile;
	bool umask_private; /* umask 077 (servers and their files) */
};

/* fork + exec with every fd >= 3 closed in the child, default signal
 * dispositions and an empty signal mask. Returns the pid or a negative
 * errno (message in e). */
pid_t proc_spawn(const struct proc_spec *s, struct errmsg *e);

/* Waits for our child pid, retrying on EINTR; *wstatus gets the status
 * (0x7f00, "exit status 127", if it cannot be had). Forgets its group's
 * record in pgroups_dir (NULL: none). */
void proc_reap(pid_t pid, int *wstatus, const char *pgroups_dir);
/* Polls for our child pid's exit up to timeout_ms; 1 if it exited (and is
 * reaped), 0 on timeout. */
int proc_reap_wait(pid_t pid, int timeout_ms, int *wstatus);
/* True if our child pid has exited but is not reaped yet (WNOWAIT). */
bool proc_exited_unreaped(pid_t pid);

/* "exit status 1", "killed by signal 9 (Killed)". */
void proc_describe_status(int wstatus, char *out, size_t outsz);

/* Sleeps ms milliseconds, resuming after signals. */
void proc_sleep_ms(int ms);

/* True if pid exists and is not a zombie. */
bool proc_alive(pid_t pid);
/* Parent of pid from /proc, 0 if unknown. */
pid_t proc_ppid(pid_t pid);

/* ---- process groups that must not outlive the daemon ---- */

/* Records group pgid (led by a child of ours) as DIR/PGID; creates DIR
 * (0700) if needed. Not fsynced: a group cannot outlive a reboot. */
int proc_group_record(const char *dir, pid_t pgid);
/* Removes the record of pgid. */
void proc_group_forget(const char *dir, pid_t pgid);
/* Kills (SIGKILL) every recorded group whose recording daemon is dead and
 * removes those records; records of a live daemon stay. Only processes
 * still in the recorded session are touched, so a reused pid is safe.
 * Returns the number of processes killed. */
int proc_groups_kill_recorded(const char *dir);

/* ---- crash injection (tests only) ---- */

/* When the environment variable DBOSFS_CRASH_AT names step ("STEP", or
 * "STEP:N" for the Nth time it is reached), the whole
 * daemon _exit()s here at once, as a kill -9 would end it (no cleanup, no
 * unmount). The crash-injection tests name every step of every mutation. */
void proc_crash_point(const char *step);

/* ---- descriptors ---- */

/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft
 * limit (or the old one if it cannot be raised). */
unsigned long proc_raise_nofile(void);
/* The soft limit servers and helpers get (never above the hard limit):
 * PostgreSQL sizes its file cache from it, and a daemon raised to a hard
 * limit of a million would hand that to every child. */
#define PROC_CHILD_NOFILE 4096UL

#endif
