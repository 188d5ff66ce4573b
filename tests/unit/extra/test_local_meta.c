/* Pure pieces of the local provider: instance metadata, the stale
 * postmaster.pid decision, server-log parsing, socket path limits,
 * restart backoff, port picking; and the liveness probe against fake
 * servers on Unix sockets (one that never answers, two that do). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../tap.h"
#include "local_internal.h"

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
	bool cancel = false;

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

int main(void)
{
	test_meta();
	test_stale_pid();
	test_log();
	test_paths_and_backoff();
	test_ports();
	test_probe_verdict();
	test_probe_many();
	return tap_done();
}
