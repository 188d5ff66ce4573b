/* Pure pieces of the local provider: instance metadata, the stale
 * postmaster.pid decision, server-log parsing, socket path limits,
 * restart backoff, port picking. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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

int main(void)
{
	test_meta();
	test_stale_pid();
	test_log();
	test_paths_and_backoff();
	test_ports();
	return tap_done();
}
