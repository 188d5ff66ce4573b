/* proc.c and pg.c: spawning, wait-status text, process groups that die
 * with their parent, the record of groups a later mount kills, the
 * descriptor limit, and a libpq connect that a cancel or a deadline ends
 * against a server that never answers. */
#include "pg.h"
#include "proc.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char *const env[] = {"PATH=/usr/bin:/bin", NULL};

static void test_spawn_and_status(void)
{
	char *argv[] = {"/bin/sh", "-c", "exit 3", NULL};
	struct proc_spec s = {.argv = argv, .envp = env, .in_fd = -1, .out_fd = -1, .err_fd = -1};
	char how[64];
	int st = 0;

	pid_t pid = proc_spawn(&s, NULL);
	CHECK(pid > 0);
	proc_reap(pid, &st, NULL);
	proc_describe_status(st, how, sizeof(how));
	CHECK(strcmp(how, "exit status 3") == 0);

	char *sleeper[] = {"/bin/sleep", "10", NULL};
	s.argv = sleeper;
	pid = proc_spawn(&s, NULL);
	CHECK(pid > 0 && !proc_exited_unreaped(pid));
	CHECK(proc_reap_wait(pid, 50, &st) == 0);
	kill(pid, SIGKILL);
	CHECK(proc_reap_wait(pid, 2000, &st) == 1);
	proc_describe_status(st, how, sizeof(how));
	CHECK(strcmp(how, "killed by signal 9 (KILL)") == 0);

	/* The child gets the limit asked for, not ours. */
	int fds[2];
	char buf[64] = "";
	CHECK(pipe2(fds, O_CLOEXEC) == 0);
	char *ulimit[] = {"/bin/sh", "-c", "ulimit -n", NULL};
	s.argv = ulimit;
	s.out_fd = fds[1];
	s.nofile = 77;
	pid = proc_spawn(&s, NULL);
	close(fds[1]);
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fds[0]);
	proc_reap(pid, &st, NULL);
	CHECK(strcmp(buf, "77\n") == 0);
}

/* A middle process spawns `sh -c 'sleep 30 & sleep 30'` (die_with_parent,
 * new group, recorded in dir) and reports the group's pid on fd, then
 * either exits (orphaning the group) or waits. */
static pid_t middle(const char *dir, int fd, bool die_with_parent)
{
	pid_t m = fork();

	if (m == 0) {
		char *argv[] = {"/bin/sh", "-c", "sleep 30 & exec sleep 30", NULL};
		struct proc_spec s = {.argv = argv,
		                      .envp = env,
		                      .in_fd = -1,
		                      .out_fd = -1,
		                      .err_fd = -1,
		                      .grouping = PROC_NEW_GROUP,
		                      .die_with_parent = die_with_parent,
		                      .pgroups_dir = dir};
		pid_t pid = proc_spawn(&s, NULL);
		if (write(fd, &pid, sizeof(pid)) != sizeof(pid))
			_exit(1);
		usleep(300 * 1000); /* let sh start its background sleep */
		_exit(0);           /* like kill -9 of the daemon: no cleanup */
	}
	return m;
}

static int group_members(pid_t pgid)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd),
	         "exit $(ps -e -o pgid=,stat= | awk '$1==%d && $2 !~ /Z/' | wc -l)", (int)pgid);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_groups(void)
{
	char dir[64] = "/tmp/dbosfs-proc-XXXXXX", rec[128];
	int fds[2];
	pid_t pid = 0, m;

	CHECK(mkdtemp(dir) != NULL);
	strcat(dir, "/pgroups");
	CHECK(pipe(fds) == 0);

	/* The leader dies with its parent; its background child survives
	 * it, and only the record lets a later mount find it. */
	m = middle(dir, fds[1], true);
	CHECK(read(fds[0], &pid, sizeof(pid)) == sizeof(pid) && pid > 0);
	waitpid(m, NULL, 0);
	snprintf(rec, sizeof(rec), "%s/%d", dir, (int)pid);
	CHECK(access(rec, F_OK) == 0);
	for (int i = 0; i < 100 && proc_alive(pid); i++)
		usleep(20 * 1000);
	CHECK(!proc_alive(pid)); /* PR_SET_PDEATHSIG */
	CHECK(group_members(pid) == 1);
	/* The recorder is dead: its group is killed and forgotten. */
	CHECK(proc_groups_kill_recorded(dir) == 1);
	CHECK(access(rec, F_OK) < 0);
	for (int i = 0; i < 100 && group_members(pid) > 0; i++)
		usleep(20 * 1000);
	CHECK(group_members(pid) == 0);

	/* A live recorder's groups are left alone. */
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct proc_spec s = {.argv = argv,
	                      .envp = env,
	                      .in_fd = -1,
	                      .out_fd = -1,
	                      .err_fd = -1,
	                      .grouping = PROC_NEW_GROUP,
	                      .die_with_parent = true,
	                      .pgroups_dir = dir};
	pid = proc_spawn(&s, NULL);
	CHECK(pid > 0);
	snprintf(rec, sizeof(rec), "%s/%d", dir, (int)pid);
	CHECK(access(rec, F_OK) == 0);
	CHECK(proc_groups_kill_recorded(dir) == 0);
	CHECK(proc_alive(pid));
	kill(-pid, SIGKILL);
	int st;
	proc_reap(pid, &st, dir);
	CHECK(access(rec, F_OK) < 0);
	rmdir(dir);
	*strrchr(dir, '/') = '\0';
	rmdir(dir);
	close(fds[0]);
	close(fds[1]);
}

static void test_nofile(void)
{
	struct rlimit rl;

	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = 64;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	unsigned long now = proc_raise_nofile();
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	CHECK(rl.rlim_cur == rl.rlim_max);
	CHECK(now == (rl.rlim_max == RLIM_INFINITY ? ~0UL : rl.rlim_max));
}

static atomic_bool cancel_flag;

static void *cancel_soon(void *arg)
{
	(void)arg;
	usleep(200 * 1000);
	atomic_store(&cancel_flag, true);
	return NULL;
}

/* A socket that accepts (the kernel's backlog) but never answers. */
static void test_pg_connect(void)
{
	char dir[] = "/tmp/dbosfs-pg-XXXXXX", path[128];
	struct sockaddr_un sa;
	struct errmsg e;
	PGconn *c = NULL;
	pthread_t th;

	CHECK(mkdtemp(dir) != NULL);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/.s.PGSQL.5999", dir);
	snprintf(path, sizeof(path), "%s", sa.sun_path);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 4) == 0);
	const char *keys[] = {"host", "port", "user", "dbname", NULL};
	const char *vals[] = {dir, "5999", "x", "postgres", NULL};

	long long t0 = now_ms();
	CHECK(pg_connect(keys, vals, 300, NULL, &c, &e) == -ETIMEDOUT && !c);
	CHECK(now_ms() - t0 < 1500);

	pthread_create(&th, NULL, cancel_soon, NULL);
	t0 = now_ms();
	CHECK(pg_connect(keys, vals, 30000, &cancel_flag, &c, &e) == -EINTR && !c);
	CHECK(now_ms() - t0 < 1500);
	pthread_join(th, NULL);

	/* Nobody listening: a clear error at once. */
	const char *vals2[] = {dir, "5998", "x", "postgres", NULL};
	CHECK(pg_connect(keys, vals2, 3000, NULL, &c, &e) == -EIO && !c);
	CHECK(strstr(e.text, "5998") != NULL && !strchr(e.text, '\n'));
	close(fd);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	test_spawn_and_status();
	test_groups();
	test_nofile();
	test_pg_connect();
	return tap_done();
}
