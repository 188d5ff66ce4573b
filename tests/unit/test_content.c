/* Unit tests for content.c: the exact bytes of every per-instance file. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"
#include "tap.h"

static struct instance sample(void)
{
	struct instance i = {0};
	strcpy(i.name, "mydb");
	strcpy(i.status, "available");
	strcpy(i.host, "db.example.com");
	i.port = 5432;
	strcpy(i.username, "dbos_user");
	return i;
}

/* Runs one formatter into a fresh buffer and compares the result. */
#define EXPECT(call, want)                                                                         \
	do {                                                                                       \
		struct buf b = BUF_INIT;                                                           \
		CHECK((call) == 0);                                                                \
		CHECK(b.data &&strcmp(b.data, (want)) == 0);                                       \
		if (b.data && strcmp(b.data, (want)) != 0)                                         \
			fprintf(stderr, "  got  [%s]\n  want [%s]\n", b.data, (want));             \
		buf_free(&b);                                                                      \
	} while (0)

static void test_status(void)
{
	struct instance i = sample();
	EXPECT(content_status(&i, &b), "available\n");
	strcpy(i.status, "provisioning");
	EXPECT(content_status(&i, &b), "provisioning\n");
	i.status[0] = '\0';
	EXPECT(content_status(&i, &b), "unknown\n");
	strcpy(i.status, "bad\nline");
	EXPECT(content_status(&i, &b), "bad?line\n");
}

static void test_info(void)
{
	struct instance i = sample();
	EXPECT(content_info(&i, "local", &b), "name: mydb\n"
	                                      "status: available\n"
	                                      "host: db.example.com\n"
	                                      "port: 5432\n"
	                                      "username: dbos_user\n"
	                                      "linked: no\n"
	                                      "provider: local\n");
	i.linked = true;
	strcpy(i.admin_name, "dbosadmin_x");
	strcpy(i.supabase_ref, "abcdef");
	EXPECT(content_info(&i, "cloud", &b), "name: mydb\n"
	                                      "status: available\n"
	                                      "host: db.example.com\n"
	                                      "port: 5432\n"
	                                      "username: dbos_user\n"
	                                      "admin_name: dbosadmin_x\n"
	                                      "linked: yes\n"
	                                      "supabase_reference: abcdef\n"
	                                      "provider: cloud\n");
	/* Unknown host and port while provisioning; no provider line. */
	struct instance p = sample();
	p.host[0] = '\0';
	p.port = 0;
	strcpy(p.status, "provisioning");
	EXPECT(content_info(&p, NULL, &b), "name: mydb\n"
	                                   "status: provisioning\n"
	                                   "host: \n"
	                                   "port: \n"
	                                   "username: dbos_user\n"
	                                   "linked: no\n");
	/* A newline from the backend cannot forge a line. */
	strcpy(p.host, "evil\nlinked: yes");
	struct buf b = BUF_INIT;
	CHECK(content_info(&p, NULL, &b) == 0);
	CHECK(strstr(b.data, "\nlinked: yes\n") == NULL);
	CHECK(strstr(b.data, "host: evil?linked: yes\n") != NULL);
	buf_free(&b);
}

static void test_info_json(void)
{
	struct instance i = sample();
	EXPECT(content_info_json(&i, &b),
	       "{\"PostgresInstanceName\":\"mydb\",\"Status\":\"available\","
	       "\"HostName\":\"db.example.com\",\"Port\":5432,\"DatabaseUsername\":\"dbos_user\","
	       "\"IsLinked\":false,\"SupabaseReference\":null}\n");

	/* It parses back, with the right types. */
	i.linked = true;
	strcpy(i.admin_name, "dbosadmin");
	strcpy(i.supabase_ref, "ref\"q");
	struct buf b = BUF_INIT;
	json_error_t err;
	CHECK(content_info_json(&i, &b) == 0);
	CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
	CHECK(strchr(b.data, '\n') == b.data + b.len - 1); /* one line */
	json_t *o = json_loads(b.data, 0, &err);
	CHECK(json_is_object(o));
	CHECK(json_is_string(json_object_get(o, "PostgresInstanceName")));
	CHECK(strcmp(json_string_value(json_object_get(o, "PostgresInstanceName")), "mydb") == 0);
	CHECK(strcmp(json_string_value(json_object_get(o, "Status")), "available") == 0);
	CHECK(strcmp(json_string_value(json_object_get(o, "HostName")), "db.example.com") == 0);
	CHECK(json_is_integer(json_object_get(o, "Port")));
	CHECK(json_integer_value(json_object_get(o, "Port")) == 5432);
	CHECK(strcmp(json_string_value(json_object_get(o, "DatabaseUsername")), "dbos_user") == 0);
	CHECK(json_is_true(json_object_get(o, "IsLinked")));
	CHECK(json_is_string(json_object_get(o, "SupabaseReference")));
	CHECK(strcmp(json_string_value(json_object_get(o, "SupabaseReference")), "ref\"q") == 0);
	CHECK(json_is_string(json_object_get(o, "DBOSAdminName")));
	CHECK(strcmp(json_string_value(json_object_get(o, "DBOSAdminName")), "dbosadmin") == 0);
	CHECK(json_object_size(o) == 8);
	json_decref(o);
	buf_free(&b);

	/* Without an admin name the key is absent; an unknown port is null;
	 * bytes that are not UTF-8 do not break the object. */
	i = sample();
	i.port = 0;
	strcpy(i.host, "h\xff");
	CHECK(content_info_json(&i, &b) == 0);
	o = json_loads(b.data, 0, &err);
	CHECK(json_is_object(o));
	CHECK(json_object_get(o, "DBOSAdminName") == NULL);
	CHECK(json_is_null(json_object_get(o, "Port")));
	CHECK(json_is_null(json_object_get(o, "SupabaseReference")));
	CHECK(json_is_false(json_object_get(o, "IsLinked")));
	CHECK(json_object_size(o) == 7);
	json_decref(o);
	buf_free(&b);
}

static void test_url(void)
{
	struct instance i = sample();
	EXPECT(content_url(&i, NULL, &b), "postgresql://dbos_user@db.example.com:5432/postgres\n");
	strcpy(i.host, "127.0.0.1");
	i.port = 54321;
	EXPECT(content_url(&i, NULL, &b), "postgresql://dbos_user@127.0.0.1:54321/postgres\n");
	strcpy(i.host, "::1");
	EXPECT(content_url(&i, NULL, &b), "postgresql://dbos_user@[::1]:54321/postgres\n");
	strcpy(i.host, "[::1]");
	EXPECT(content_url(&i, NULL, &b), "postgresql://dbos_user@[::1]:54321/postgres\n");
	strcpy(i.host, "/tmp/pg sock");
	EXPECT(content_url(&i, NULL, &b),
	       "postgresql://dbos_user@%2Ftmp%2Fpg%20sock:54321/postgres\n");
	strcpy(i.host, "db.example.com");
	strcpy(i.username, "us@r:x/y");
	EXPECT(content_url(&i, NULL, &b),
	       "postgresql://us%40r%3Ax%2Fy@db.example.com:54321/postgres\n");
	i.port = 0;
	strcpy(i.username, "u");
	EXPECT(content_url(&i, NULL, &b), "postgresql://u@db.example.com/postgres\n");
	strcpy(i.host, "127.0.0.1");
	i.port = 5432;
	EXPECT(content_url(&i, "/mnt/my dbs/a/ca.pem", &b),
	       "postgresql://u@127.0.0.1:5432/postgres?sslmode=verify-full&sslrootcert=/mnt/"
	       "my%20dbs/a/ca.pem\n");
}

static void test_env(void)
{
	struct instance i = sample();
	EXPECT(content_env(&i, NULL, &b), "PGHOST=db.example.com\n"
	                                  "PGPORT=5432\n"
	                                  "PGUSER=dbos_user\n"
	                                  "PGDATABASE=postgres\n");
	strcpy(i.host, "/tmp/it's here");
	i.port = 0;
	EXPECT(content_env(&i, NULL, &b), "PGHOST='/tmp/it'\\''s here'\n"
	                                  "PGPORT=''\n"
	                                  "PGUSER=dbos_user\n"
	                                  "PGDATABASE=postgres\n");
	strcpy(i.host, "127.0.0.1");
	i.port = 5432;
	EXPECT(content_env(&i, "/mnt/a/ca.pem", &b), "PGHOST=127.0.0.1\n"
	                                             "PGPORT=5432\n"
	                                             "PGUSER=dbos_user\n"
	                                             "PGDATABASE=postgres\n"
	                                             "PGSSLMODE=verify-full\n"
	                                             "PGSSLROOTCERT=/mnt/a/ca.pem\n"
	                                             "NODE_EXTRA_CA_CERTS=/mnt/a/ca.pem\n");
}

static void test_pgpass(void)
{
	struct instance i = sample();
	EXPECT(content_pgpass(&i, "S3cret-pw_x", &b),
	       "db.example.com:5432:*:dbos_user:S3cret-pw_x\n");
	/* ':' and '\' are escaped in every field. */
	strcpy(i.host, "fe80::1");
	strcpy(i.username, "a:b\\c");
	EXPECT(content_pgpass(&i, "p:w\\d", &b), "fe80\\:\\:1:5432:*:a\\:b\\\\c:p\\:w\\\\d\n");
	/* Unix socket: libpq looks up "localhost"; unknown host/port match any. */
	i = sample();
	strcpy(i.host, "/run/pg");
	EXPECT(content_pgpass(&i, "pw", &b), "localhost:5432:*:dbos_user:pw\n");
	i.host[0] = '\0';
	i.port = 0;
	EXPECT(content_pgpass(&i, "pw", &b), "*:*:*:dbos_user:pw\n");
}

/* Supabase-linked: the pooler's user is postgres.REF everywhere one logs in. */
static void test_supabase_user(void)
{
	struct instance i = sample();
	i.linked = true;
	strcpy(i.supabase_ref, "abcdefghij");
	EXPECT(content_url(&i, NULL, &b),
	       "postgresql://postgres.abcdefghij@db.example.com:5432/postgres\n");
	EXPECT(content_pgpass(&i, "pw", &b), "db.example.com:5432:*:postgres.abcdefghij:pw\n");
	struct buf env = BUF_INIT;
	CHECK(content_env(&i, NULL, &env) == 0 && strstr(env.data, "PGUSER=postgres.abcdefghij\n"));
	buf_free(&env);
}

static void test_appends(void)
{
	/* Formatters append; they never reset what is already there. */
	struct instance i = sample();
	struct buf b = BUF_INIT;
	CHECK(buf_puts(&b, "x") == 0);
	CHECK(content_status(&i, &b) == 0);
	CHECK(content_status(&i, &b) == 0);
	CHECK(strcmp(b.data, "xavailable\navailable\n") == 0);
	CHECK(b.len == strlen(b.data));
	buf_free(&b);
}

static void test_buf(void)
{
	struct buf b = BUF_INIT;
	char *s;

	s = buf_steal(&b);
	CHECK(s && strcmp(s, "") == 0);
	free(s);
	CHECK(b.data == NULL && b.len == 0);
	int failed = 0;
	for (int k = 0; k < 1000; k++)
		failed += buf_printf(&b, "%04d,", k) != 0;
	CHECK(failed == 0);
	CHECK(b.len == 5000);
	CHECK(strncmp(b.data + 4995, "0999,", 5) == 0);
	CHECK(b.data[b.len] == '\0');
	buf_reset(&b);
	CHECK(b.len == 0 && b.data && b.data[0] == '\0');
	CHECK(buf_append(&b, "ab\0cd", 5) == 0);
	CHECK(b.len == 5 && memcmp(b.data, "ab\0cd", 6) == 0);
	s = buf_steal(&b);
	CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
	CHECK(memcmp(s, "ab\0cd", 6) == 0);
	free(s);
	CHECK(buf_puts(&b, "secret") == 0);
	buf_free_secret(&b);
	CHECK(b.data == NULL && b.len == 0);
	buf_free(&b); /* freeing twice is harmless */
}

static void test_instances(void)
{
	struct instance l[3] = {sample(), sample(), sample()};
	strcpy(l[1].name, "analytics_db");
	strcpy(l[1].status, "provisioning");
	l[1].host[0] = '\0';
	l[1].port = 0;
	strcpy(l[2].name, "v6");
	strcpy(l[2].host, "::1");
	strcpy(l[2].status, "bad\x1bstate");
	EXPECT(content_instances(l, 3, &b),
	       "NAME         STATUS       HOST:PORT           USER\n"
	       "mydb         available    db.example.com:5432 dbos_user\n"
	       "analytics_db provisioning -                   dbos_user\n"
	       "v6           bad?state    [::1]:5432          dbos_user\n");
	EXPECT(content_instances(l, 0, &b), "NAME STATUS HOST:PORT USER\n");
	EXPECT(content_instances_json(l, 0, &b), "[]\n");

	struct buf b = BUF_INIT;
	CHECK(content_instances_json(l, 2, &b) == 0);
	json_t *a = json_loads(b.data, 0, NULL);
	CHECK(json_is_array(a) && json_array_size(a) == 2);
	CHECK(
	    strcmp(json_string_value(json_object_get(json_array_get(a, 1), "PostgresInstanceName")),
	           "analytics_db") == 0);
	CHECK(json_is_null(json_object_get(json_array_get(a, 1), "Port")));
	CHECK(json_integer_value(json_object_get(json_array_get(a, 0), "Port")) == 5432);
	json_decref(a);
	buf_free(&b);
}

int main(void)
{
	test_supabase_user();
	test_instances();
	test_status();
	test_info();
	test_info_json();
	test_url();
	test_env();
	test_pgpass();
	test_appends();
	test_buf();
	return tap_done();
}
