/* Pure pieces of the local provider: instance metadata, the stale
 * postmaster.pid decision, server-log parsing, socket path limits,
 * restart backoff, port picking; the liveness probe against fake
 * servers on Unix sockets (one that never answers, two that do); stopping
 * a leftover postmaster (fakes for one that never dies, real processes for
 * the rest); and disk-space checks and a template copy that runs out of
 * space on a small tmpfs (as root). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tap.h"
#include "local_internal.h"
#include "log.h"

static void test_meta(void)
{
	struct local_meta m, back;
	char text[256];

	CHECK(local_meta_parse("port=25433\nusername=dbos_user\n", &m) == 0);
	CHECK(m.port == 25433 && strcmp(m.username, "dbos_user") == 0);
	/* Comments, unknown keys, no trailing newline. */
	CHECK(local_meta_parse("# x\ncreated=1\nusername=abc\nport=1", &m) == 0);
	CHECK(m.port == 1 && strcmp(m.username, "abc") == 0);
	CHECK(local_meta_parse("username=abc\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=5432\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=0\nusername=a\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=65536\nusername=a\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=12x\nusername=a\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=\nusername=a\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=5432\nusername=Bad-Name\n", &m) == -EINVAL);
	CHECK(local_meta_parse("port=5432\nusername=a b\n", &m) == -EINVAL);
	CHECK(local_meta_parse("", &m) == -EINVAL);

	memset(&m, 0, sizeof(m));
	m.port = 29999;
	strcpy(m.username, "u_1");
	CHECK(local_meta_format(&m, text, sizeof(text)) == 0);
	CHECK(local_meta_parse(text, &back) == 0);
	CHECK(back.port == 29999 && strcmp(back.username, "u_1") == 0);
	CHECK(local_meta_format(&m, text, 10) == -ENOSPC);

	/* A linked server: host and admin (any role, even a reserved name). */
	memset(&m, 0, sizeof(m));
	m.linked = true;
	m.port = 5432;
	strcpy(m.host, "db.example.com");
	strcpy(m.admin, "postgres");
	CHECK(local_meta_format(&m, text, sizeof(text)) == 0);
	CHECK(local_meta_parse(text, &back) == 0);
	CHECK(back.linked && back.port == 5432 && strcmp(back.host, "db.example.com") == 0 &&
	      strcmp(back.admin, "postgres") == 0 && strcmp(back.username, "postgres") == 0);
	CHECK(local_meta_parse("linked=1\nport=5432\nadmin=postgres\n", &m) == -EINVAL);
	CHECK(local_meta_parse("linked=1\nhost=h\nport=5432\n", &m) == -EINVAL);
	CHECK(local_meta_parse("linked=1\nhost=-h\nport=5432\nadmin=a\n", &m) == -EINVAL);
	CHECK(local_meta_parse("linked=1\nhost=h\nport=5432\nadmin=a b\n", &m) == -EINVAL);
	CHECK(local_meta_parse("linked=1\nhost=h/x\nport=5432\nadmin=a\n", &m) == -EINVAL);
}

static void test_stale_pid(void)
{
	struct stale_pid_facts f;

	memset(&f, 0, sizeof(f));
	CHECK(stale_pid_decide(&f) == STALE_PID_NONE);

	f.file_exists = true; /* unparsable PID */
	CHECK(stale_pid_decide(&f) == STALE_PID_REMOVE);

	f.pid = 4242; /* dead */
	CHECK(stale_pid_decide(&f) == STALE_PID_REMOVE);

	f.alive = true; /* some unrelated process reused the PID */
	CHECK(stale_pid_decide(&f) == STALE_PID_REMOVE);

	f.is_postgres_exe = true; /* a postgres, but another cluster's */
	CHECK(stale_pid_decide(&f) == STALE_PID_REMOVE);

	f.cwd_is_datadir = true; /* a leftover postmaster of this data dir */
	CHECK(stale_pid_decide(&f) == STALE_PID_SHUTDOWN);

	f.is_self_or_child_of_ours = true; /* our own supervised child */
	CHECK(stale_pid_decide(&f) == STALE_PID_NONE);

	f.alive = false; /* a zombie: treated as dead */
	f.is_self_or_child_of_ours = false;
	CHECK(stale_pid_decide(&f) == STALE_PID_REMOVE);

	CHECK(stale_pid_parse("12345\n/var/lib/x\n") == 12345);
	CHECK(stale_pid_parse("12345") == 12345);
	CHECK(stale_pid_parse("-5\n") == 0);
	CHECK(stale_pid_parse("abc\n") == 0);
	CHECK(stale_pid_parse("12a\n") == 0);
	CHECK(stale_pid_parse("") == 0);
}

static void test_log(void)
{
	char out[256];
	const char *conflict =
	    "2024-01-01 LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n"
	    "2024-01-01 WARNING:  could not create listen socket for \"127.0.0.1\"\n"
	    "2024-01-01 FATAL:  could not create any TCP/IP sockets\n"
	    "2024-01-01 LOG:  database system is shut down\n";

	CHECK(local_log_port_conflict(conflict));
	CHECK(!local_log_port_conflict("LOG:  database system is ready to accept connections\n"));
	local_log_reason(conflict, out, sizeof(out));
	CHECK(strcmp(out, "2024-01-01 WARNING:  could not create listen socket for \"127.0.0.1\"; "
	                  "2024-01-01 FATAL:  could not create any TCP/IP sockets") == 0);
	local_log_reason("LOG:  syntax error in file \"x.conf\" line 3\n"
	                 "FATAL:  configuration file \"x.conf\" contains errors\n",
	                 out, sizeof(out));
	CHECK(strcmp(out, "LOG:  syntax error in file \"x.conf\" line 3; FATAL:  configuration "
	                  "file \"x.conf\" contains errors") == 0);
	/* Too long for both: the FATAL line alone. */
	local_log_reason("LOG: 0123456789012345678901234567890\nFATAL: x\n", out, 20);
	CHECK(strcmp(out, "FATAL: x") == 0);
	local_log_reason("one\ntwo\n\n", out, sizeof(out));
	CHECK(strcmp(out, "two") == 0);
	local_log_reason("", out, sizeof(out));
	CHECK(strcmp(out, "no message in the server log") == 0);
	local_log_reason("PANIC: abcdefghij", out, 8);
	CHECK(strcmp(out, "PANIC: ") == 0);
}

static void test_paths_and_backoff(void)
{
	char p[16];

	CHECK(local_socket_path_fits("/var/lib/dbosfs/local/run", 16));
	char longp[200];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[90] = '\0';
	CHECK(!local_socket_path_fits(longp, 16));
	longp[75] = '\0'; /* 75 + 1 + 16 + 15 = 107: exactly fits */
	CHECK(local_socket_path_fits(longp, 16));
	longp[75] = 'a';
	longp[76] = '\0';
	CHECK(!local_socket_path_fits(longp, 16));

	CHECK(local_path(p, sizeof(p), "%s/%s", "abc", "def") == 0 && !strcmp(p, "abc/def"));
	CHECK(local_path(p, sizeof(p), "%s", "0123456789abcdef") == -ENAMETOOLONG);

	CHECK(local_backoff_ms(1) == 0);
	CHECK(local_backoff_ms(2) == 500);
	CHECK(local_backoff_ms(3) == 1000);
	CHECK(local_backoff_ms(5) == 4000);
	CHECK(local_backoff_ms(100) == 30000);

	/* The slow schedule of a failed instance: 30 s, 60 s, ..., 5 min. */
	CHECK(local_retry_ms(1, 0) == 30000);
	CHECK(local_retry_ms(2, 0) == 60000);
	CHECK(local_retry_ms(3, -5) == 120000);
	CHECK(local_retry_ms(4, 0) == 240000);
	CHECK(local_retry_ms(5, 0) == 300000);
	CHECK(local_retry_ms(1000, 0) == 300000);
	CHECK(local_retry_ms(0, 0) == 30000);
	/* A short first interval (tests) doubles to the same cap. */
	CHECK(local_retry_ms(1, 2000) == 2000);
	CHECK(local_retry_ms(3, 2000) == 8000);
	CHECK(local_retry_ms(9, 2000) == 300000);
	CHECK(local_retry_ms(1, 600000) == 300000);
}

static void test_ports(void)
{
	struct sockaddr_in sa;
	int fd, port, used[1];

	port = local_pick_port(NULL, 0);
	CHECK(port >= LOCAL_PORT_MIN && port <= LOCAL_PORT_MAX);
	CHECK(local_port_free(port));

	/* A listening socket makes its port unavailable, and the picker
	 * skips ports on the used list. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(fd, 1) == 0);
	CHECK(!local_port_free(port));
	close(fd);

	used[0] = port;
	for (int i = 0; i < 50; i++) {
		int q = local_pick_port(used, 1);
		CHECK(q != port && q >= LOCAL_PORT_MIN);
	}
}

static void test_probe_verdict(void)
{
	int misses = 0;

	/* One miss is forgiven; the second in a row marks it. */
	CHECK(local_probe_verdict(false, false, &misses) == PROBE_KEEP && misses == 1);
	CHECK(local_probe_verdict(false, true, &misses) == PROBE_KEEP && misses == 0);
	CHECK(local_probe_verdict(false, false, &misses) == PROBE_KEEP && misses == 1);
	CHECK(local_probe_verdict(false, false, &misses) == PROBE_NOW_UNRESPONSIVE);
	/* Reported once: further misses change nothing. */
	CHECK(local_probe_verdict(true, false, &misses) == PROBE_KEEP);
	CHECK(local_probe_verdict(true, false, &misses) == PROBE_KEEP);
	CHECK(misses == LOCAL_PROBE_MISSES);
	/* One answer brings it back, and the count starts over. */
	CHECK(local_probe_verdict(true, true, &misses) == PROBE_RESPONSIVE_AGAIN && misses == 0);
	CHECK(local_probe_verdict(false, false, &misses) == PROBE_KEEP);
}

static void test_probe_ask_due(void)
{
	long long t = 1000000;

	/* Never asked yet: asked. */
	CHECK(local_probe_ask_due(t, 0, 0, false, 2000));
	/* Asked recently, no misses: only the process state is read. */
	CHECK(!local_probe_ask_due(t + 2000, t, 0, false, 2000));
	CHECK(!local_probe_ask_due(t + LOCAL_PROBE_ASK_MS - 2000, t, 0, false, 2000));
	/* Due again after LOCAL_PROBE_ASK_MS, within half a period. */
	CHECK(local_probe_ask_due(t + LOCAL_PROBE_ASK_MS - 1000, t, 0, false, 2000));
	CHECK(local_probe_ask_due(t + LOCAL_PROBE_ASK_MS, t, 0, false, 2000));
	/* A miss, or an unresponsive server: asked every period. */
	CHECK(local_probe_ask_due(t + 2000, t, 1, false, 2000));
	CHECK(local_probe_ask_due(t + 2000, t, 0, true, 2000));
	/* Stopped and traced processes answer nobody; the others may. */
	CHECK(local_proc_state_stopped('T') && local_proc_state_stopped('t'));
	CHECK(!local_proc_state_stopped('S') && !local_proc_state_stopped('R') &&
	      !local_proc_state_stopped('D') && !local_proc_state_stopped(0));
}

static char probe_dir[64];

/* A listening Unix socket where libpq looks for port (DIR/.s.PGSQL.PORT). */
static int fake_listen(int port)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/.s.PGSQL.%d", probe_dir, port);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		perror("fake server");
		return -1;
	}
	return fd;
}

struct fake_server {
	int fd;
	bool accept_login; /* AuthenticationOk + ReadyForQuery, else a FATAL */
};

static void put32(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Answers one connection the way a postmaster would. */
static void *fake_serve(void *arg)
{
	struct fake_server *f = arg;
	unsigned char buf[1024], reply[256];
	size_t got = 0, len = 0;
	int c = accept(f->fd, NULL, NULL);

	if (c < 0)
		return NULL;
	while (got < 4 || got < len) {
		ssize_t r = read(c, buf + got, sizeof(buf) - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got >= 4)
			len = ((size_t)buf[0] << 24) | ((size_t)buf[1] << 16) |
			      ((size_t)buf[2] << 8) | buf[3];
	}
	if (f->accept_login) {
		reply[0] = 'R';
		put32(reply + 1, 8);
		put32(reply + 5, 0);
		reply[9] = 'Z';
		put32(reply + 10, 5);
		reply[14] = 'I';
		len = 15;
	} else {
		static const char body[] = "SFATAL\0C57P03\0Mthe database system is starting up\0";
		reply[0] = 'E';
		put32(reply + 1, (unsigned)(4 + sizeof(body)));
		memcpy(reply + 5, body, sizeof(body)); /* sizeof counts the final NUL */
		len = 5 + sizeof(body);
	}
	ssize_t w = write(c, reply, len);
	(void)w;
	/* Wait for the client to hang up, as a server would. */
	struct pollfd pfd = {c, POLLIN, 0};
	poll(&pfd, 1, 2000);
	close(c);
	return NULL;
}

static void test_probe_many(void)
{
	enum { NHUNG = 5 };
	struct pg_probe pr[NHUNG + 3];
	int hung[NHUNG];
	struct fake_server ok_srv, fatal_srv;
	pthread_t t1, t2;
	atomic_bool cancel = false;

	snprintf(probe_dir, sizeof(probe_dir), "/tmp/dbosfs-probe-XXXXXX");
	CHECK(mkdtemp(probe_dir) != NULL);
	/* Hung servers: connect() succeeds (the kernel queues it), nobody
	 * ever accepts or answers, like a SIGSTOPped postmaster. */
	for (int i = 0; i < NHUNG; i++)
		hung[i] = fake_listen(6000 + i);
	ok_srv.fd = fake_listen(6100);
	ok_srv.accept_login = true;
	fatal_srv.fd = fake_listen(6101);
	fatal_srv.accept_login = false;
	CHECK(hung[0] >= 0 && ok_srv.fd >= 0 && fatal_srv.fd >= 0);
	pthread_create(&t1, NULL, fake_serve, &ok_srv);
	pthread_create(&t2, NULL, fake_serve, &fatal_srv);

	memset(pr, 0, sizeof(pr));
	for (int i = 0; i < NHUNG + 3; i++) {
		pr[i].sockdir = probe_dir;
		pr[i].user = "dbos_user";
		pr[i].port = i < NHUNG ? 6000 + i : 6100 + (i - NHUNG); /* 6102: no socket */
	}
	long long t0 = now_ms();
	pg_probe_many(pr, NHUNG + 3, 600, &cancel);
	long long took = now_ms() - t0;
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);

	for (int i = 0; i < NHUNG; i++)
		CHECK(!pr[i].ok && strstr(pr[i].reason, "no answer within 600 ms"));
	CHECK(pr[NHUNG].ok && pr[NHUNG].reason[0] == '\0');         /* logged in */
	CHECK(pr[NHUNG + 1].ok && pr[NHUNG + 1].reason[0] == '\0'); /* a refusal is an answer */
	CHECK(!pr[NHUNG + 2].ok && strstr(pr[NHUNG + 2].reason, "No such file"));
	CHECK(!strchr(pr[NHUNG + 2].reason, '\n'));
	/* Five hung servers cost one timeout, not five. */
	printf("# %d hung + 3 others probed in %lld ms\n", NHUNG, took);
	CHECK(took >= 550 && took < 1500);

	/* A stop request cuts a round short. */
	cancel = true;
	t0 = now_ms();
	pg_probe_many(pr, NHUNG, 5000, &cancel);
	CHECK(now_ms() - t0 < 500);
	CHECK(!pr[0].ok);
	pg_probe_many(pr, 0, 5000, NULL); /* nothing to do */

	for (int i = 0; i < NHUNG; i++)
		close(hung[i]);
	close(ok_srv.fd);
	close(fatal_srv.fd);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", probe_dir);
	CHECK(system(cmd) == 0);
}

/* ---- stopping a leftover postmaster ---- */

/* A fake process: dies at the first signal in dies_at (0: never), and
 * records what it was sent and when. */
struct fake_proc {
	int dies_at;
	bool dead;
	int nint, nkill;
	long long first_kill_ms;
	long long t0;
};

static bool fake_alive(pid_t pid, void *arg)
{
	(void)pid;
	return !((struct fake_proc *)arg)->dead;
}

static int fake_signal(pid_t pid, int sig, void *arg)
{
	struct fake_proc *f = arg;

	(void)pid;
	if (sig == SIGINT)
		f->nint++;
	if (sig == SIGKILL && f->nkill++ == 0)
		f->first_kill_ms = now_ms() - f->t0;
	if (sig == f->dies_at)
		f->dead = true;
	return 0;
}

static void *set_after(void *arg)
{
	usleep(200 * 1000);
	atomic_store((atomic_bool *)arg, true);
	return NULL;
}

/* A process that is not our child (double fork), running exe with its
 * working directory in dir, optionally ignoring SIGINT (the disposition
 * survives exec). Returns its pid. */
static pid_t orphan(const char *exe, const char *dir, bool ignore_int)
{
	int fds[2];
	pid_t pid = 0, mid;

	if (pipe(fds) < 0)
		return -1;
	mid = fork();
	if (mid == 0) {
		pid_t g = fork();
		if (g == 0) {
			close(fds[0]);
			close(fds[1]);
			if (ignore_int)
				signal(SIGINT, SIG_IGN);
			if (chdir(dir) < 0)
				_exit(1);
			execl(exe, exe, "300", (char *)NULL);
			_exit(127);
		}
		ssize_t w = write(fds[1], &g, sizeof(g));
		_exit(w == sizeof(g) ? 0 : 1);
	}
	close(fds[1]);
	if (mid < 0 || read(fds[0], &pid, sizeof(pid)) != sizeof(pid))
		pid = -1;
	close(fds[0]);
	if (mid > 0)
		waitpid(mid, NULL, 0);
	return pid;
}

static bool gone_or_zombie(pid_t pid)
{
	char path[64], buf[512];
	FILE *f;
	bool gone = true;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	if (fgets(buf, sizeof(buf), f)) {
		char *rp = strrchr(buf, ')');
		gone = rp && (rp[2] == 'Z' || rp[2] == 'X');
	}
	fclose(f);
	return gone;
}

static void test_stop_leftover(void)
{
	struct fake_proc f;
	struct leftover_ops ops = {fake_alive, fake_signal, &f};
	atomic_bool cancel = false;
	long long t0;
	int rc;

	/* Dies of SIGINT: no SIGKILL, no waiting for the grace period. */
	memset(&f, 0, sizeof(f));
	f.dies_at = SIGINT;
	f.t0 = t0 = now_ms();
	CHECK(pg_stop_leftover(1234, 5000, 10000, NULL, &ops) == 0);
	CHECK(f.nint == 1 && f.nkill == 0 && now_ms() - t0 < 500);

	/* Ignores SIGINT, dies of SIGKILL after the grace period. */
	memset(&f, 0, sizeof(f));
	f.dies_at = SIGKILL;
	f.t0 = t0 = now_ms();
	CHECK(pg_stop_leftover(1234, 150, 10000, NULL, &ops) == 0);
	CHECK(f.nint == 1 && f.nkill == 1);
	CHECK(f.first_kill_ms >= 150 && f.first_kill_ms < 600);

	/* Never dies (stuck in the kernel): gives up at the overall deadline
	 * instead of sending SIGKILL forever. */
	memset(&f, 0, sizeof(f));
	f.t0 = t0 = now_ms();
	rc = pg_stop_leftover(1234, 100, 700, NULL, &ops);
	long long took = now_ms() - t0;
	CHECK(rc == -ETIMEDOUT);
	CHECK(took >= 700 && took < 1500);
	CHECK(f.nint == 1 && f.nkill == 1); /* the next SIGKILL is 5 s later */

	/* A stop request ends the wait at once. */
	memset(&f, 0, sizeof(f));
	pthread_t th;
	f.t0 = t0 = now_ms();
	pthread_create(&th, NULL, set_after, &cancel);
	rc = pg_stop_leftover(1234, 100, 30000, &cancel, &ops);
	pthread_join(th, NULL);
	CHECK(rc == -EINTR);
	CHECK(now_ms() - t0 < 1000);
	CHECK(pg_stop_leftover(1234, 100, 30000, &cancel, &ops) == -EINTR);

	/* Real processes through pg_handle_stale_pid: a "postgres" (a copy
	 * of sleep under that name) with its cwd in the data directory and
	 * not our child is what a crashed dbosfs leaves. */
	char dir[] = "/tmp/dbosfs-leftover-XXXXXX", data[128], exe[128], cmd[300], pidtext[200];
	struct errmsg e;
	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(exe, sizeof(exe), "%s/postgres", dir);
	snprintf(cmd, sizeof(cmd), "cp /bin/sleep %s", exe);
	CHECK(mkdir(data, 0700) == 0 && system(cmd) == 0);
	snprintf(cmd, sizeof(cmd), "%s/postmaster.pid", data);

	pid_t pm = orphan(exe, data, false);
	CHECK(pm > 0);
	usleep(100 * 1000); /* let it exec */
	snprintf(pidtext, sizeof(pidtext), "%d\n%s\n", (int)pm, data);
	CHECK(local_write_file(cmd, pidtext, 0600) == 0);
	errmsg_clear(&e);
	t0 = now_ms();
	rc = pg_handle_stale_pid(data, "lo", NULL, &e);
	CHECK(rc == 0);
	CHECK(now_ms() - t0 < 2000);
	CHECK(gone_or_zombie(pm));

	/* One that ignores SIGINT: a stop request interrupts the wait for
	 * the grace period, with a message, instead of hanging stop(). */
	pm = orphan(exe, data, true);
	CHECK(pm > 0);
	usleep(100 * 1000);
	snprintf(pidtext, sizeof(pidtext), "%d\n%s\n", (int)pm, data);
	CHECK(local_write_file(cmd, pidtext, 0600) == 0);
	cancel = false;
	errmsg_clear(&e);
	t0 = now_ms();
	pthread_create(&th, NULL, set_after, &cancel);
	rc = pg_handle_stale_pid(data, "lo", &cancel, &e);
	pthread_join(th, NULL);
	CHECK(rc == -EINTR && strstr(e.text, "interrupted"));
	CHECK(now_ms() - t0 < 1500);
	CHECK(!gone_or_zombie(pm)); /* SIGINT ignored, no SIGKILL yet */
	kill(pm, SIGKILL);
	for (int i = 0; i < 100 && !gone_or_zombie(pm); i++)
		usleep(10 * 1000);
	CHECK(gone_or_zombie(pm));

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
}

/* ---- disk space ---- */

static int write_bytes(const char *path, long long n)
{
	static char block[65536];
	FILE *f = fopen(path, "w");
	int rc = 0;

	if (!f)
		return -1;
	for (long long done = 0; done < n && !rc; done += (long long)sizeof(block))
		rc = fwrite(block, 1, sizeof(block), f) == sizeof(block) ? 0 : -1;
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}

static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

static void test_space(void)
{
	struct local_provider *lp = calloc(1, sizeof(*lp));
	char dir[] = "/tmp/dbosfs-space-XXXXXX", path[PATH_MAX + 64], out[PATH_MAX];
	struct errmsg e;
	long long bytes = 0;

	if (!lp || !mkdtemp(dir)) {
		CHECK(0);
		free(lp);
		return;
	}
	CHECK(local_free_bytes("/nonexistent/dir") == -ENOENT);
	CHECK(local_free_bytes(dir) > 0);
	pthread_mutex_init(&lp->spare_lock, NULL);
	lp->acct.drop = false; /* cp runs as we are */
	lp->lock_fd = -1;

	/* A small filesystem of our own, so running out of space is real.
	 * Needs root (mount); otherwise only the arithmetic is checked. */
	bool tmpfs = geteuid() == 0 && mount("tmpfs", dir, "tmpfs", 0, "size=8m") == 0;
	if (!tmpfs)
		printf("# not root or no tmpfs: ENOSPC copy checks skipped\n");
	snprintf(lp->root, sizeof(lp->root), "%s", dir);
	snprintf(path, sizeof(path), "%s/templates", dir);
	CHECK(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/spares", dir);
	CHECK(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/templates/u", dir);
	CHECK(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/templates/u/base", dir);
	CHECK(write_bytes(path, 3LL << 20) == 0);
	CHECK(tmpl_size(lp, "u", &bytes) == 0);
	CHECK(bytes >= 3LL << 20 && bytes < 4LL << 20);
	CHECK(tmpl_size(lp, "nobody", &bytes) == -ENOENT);

	errmsg_clear(&e);
	CHECK(spare_room(lp, "u", 0, false, &e) == 0);
	CHECK(spare_room(lp, "u", 1LL << 60, false, &e) == -ENOSPC);
	CHECK(strstr(e.text, "No space left on device") && strstr(e.text, "MiB free"));

	if (tmpfs) {
		/* 8 MiB, 3 of them the template: room for one copy (5 free),
		 * not for one with a margin as large as the template. */
		CHECK(spare_room(lp, "u", 0, true, &e) == -ENOSPC);
		CHECK(spare_room(lp, "u", 1LL << 20, false, &e) == 0);
		CHECK(spare_make(lp, "u", false, out, sizeof(out), &e) == 0);
		CHECK(strstr(out, "/spares/u.") != NULL);
		/* 2 MiB free: the next copy fails half-way, with ENOSPC, and
		 * removes what it had copied. */
		errmsg_clear(&e);
		CHECK(spare_room(lp, "u", 0, false, &e) == -ENOSPC);
		long long before = local_free_bytes(dir);
		int rc = spare_make(lp, "u", false, NULL, 0, &e);
		CHECK(rc == -ENOSPC);
		CHECK(strstr(e.text, "copying the template failed") &&
		      strstr(e.text, "No space left on device") && strstr(e.text, "MiB free"));
		CHECK(!strstr(e.text, "see ")); /* its log is gone with it */
		printf("# %s\n", e.text);
		CHECK(local_free_bytes(dir) == before);
		/* Only the good spare is left: no partial copy, no log. */
		snprintf(path, sizeof(path), "%s/spares", dir);
		CHECK(dir_entries(path) == 1);
		CHECK(spare_count(lp, "u") == 1);
		CHECK(umount2(dir, MNT_DETACH) == 0);
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	pthread_mutex_destroy(&lp->spare_lock);
	free(lp);
}

int main(void)
{
	test_meta();
	test_stale_pid();
	test_log();
	test_paths_and_backoff();
	test_ports();
	test_probe_verdict();
	test_probe_ask_due();
	test_probe_many();
	log_init(false);
	test_stop_leftover();
	test_space();
	log_shutdown();
	return tap_done();
}
