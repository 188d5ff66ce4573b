/* app_config_load / expand_env_vars: dbos-config.yaml as migrations read it,
 * against real files in a temporary directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../tap.h"
#include "migrate.h"

static char tmp[] = "/tmp/dbosfs-test-appcfg-XXXXXX";

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

/* Writes text as DIR/dbos-config.yaml (DIR under tmp) and loads DIR. */
static int load_text(const char *dir, const char *text, struct app_config *c, struct errmsg *e)
{
	char d[512], f[600];

	snprintf(d, sizeof(d), "%s/%s", tmp, dir);
	mkdir(d, 0700);
	snprintf(f, sizeof(f), "%s/dbos-config.yaml", d);
	write_file(f, text);
	errmsg_clear(e);
	return app_config_load(d, NULL, c, e);
}

static int has(const struct errmsg *e, const char *s)
{
	if (strstr(e->text, s))
		return 1;
	fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", e->text, s);
	return 0;
}

static void test_expand(void)
{
	struct buf b = BUF_INIT;
	const char *in;

	setenv("DBOSFS_T_A", "alpha", 1);
	setenv("DBOSFS_T_EMPTY", "", 1);
	unsetenv("DBOSFS_T_UNSET");

	in = "x ${DBOSFS_T_A} y ${DBOSFS_T_UNSET}z${DBOSFS_T_EMPTY}.";
	CHECK(expand_env_vars(in, strlen(in), NULL, &b) == 0);
	CHECK(strcmp(b.data, "x alpha y \"\"z\"\".") == 0);

	/* Not variables: $VAR, ${}, an unterminated ${. */
	buf_reset(&b);
	in = "$DBOSFS_T_A ${} ${DBOSFS_T_A";
	CHECK(expand_env_vars(in, strlen(in), NULL, &b) == 0);
	CHECK(strcmp(b.data, "$DBOSFS_T_A ${} ${DBOSFS_T_A") == 0);

	/* Adjacent, at both ends, and a length that stops mid-text. */
	buf_reset(&b);
	in = "${DBOSFS_T_A}${DBOSFS_T_A}";
	CHECK(expand_env_vars(in, strlen(in), NULL, &b) == 0);
	CHECK(strcmp(b.data, "alphaalpha") == 0);
	buf_reset(&b);
	CHECK(expand_env_vars(in, 14, NULL, &b) == 0);
	CHECK(strcmp(b.data, "alpha$") == 0);

	/* As DBOS's regex: the name is everything up to the next '}'. */
	buf_reset(&b);
	in = "[${DBOSFS_T_A ${X}]";
	CHECK(expand_env_vars(in, strlen(in), NULL, &b) == 0);
	CHECK(strcmp(b.data, "[\"\"]") == 0);

	/* From a given environment instead of the daemon's. */
	char *env[] = {"DBOSFS_T_A=from-writer", "ONLY_HERE=1", NULL};
	buf_reset(&b);
	in = "${DBOSFS_T_A}/${ONLY_HERE}";
	CHECK(expand_env_vars(in, strlen(in), env, &b) == 0);
	CHECK(strcmp(b.data, "from-writer/1") == 0);
	buf_free(&b);
}

static void test_dir_and_file(void)
{
	struct app_config c;
	struct errmsg e;
	char path[600];

	CHECK(load_text("app1",
	                "name: my-App\n"
	                "database:\n"
	                "  migrate: ['npx knex migrate:latest', \"echo two\"]\n"
	                "  rollback:\n"
	                "    - npx knex migrate:rollback\n",
	                &c, &e) == 0);
	snprintf(path, sizeof(path), "%s/app1", tmp);
	CHECK(c.app_dir && strcmp(c.app_dir, path) == 0);
	snprintf(path, sizeof(path), "%s/app1/dbos-config.yaml", tmp);
	CHECK(c.config_path && strcmp(c.config_path, path) == 0);
	CHECK(c.name && strcmp(c.name, "my-App") == 0);
	CHECK(c.app_db_name && strcmp(c.app_db_name, "my_app") == 0);
	CHECK(c.n_migrate == 2);
	CHECK(c.n_migrate == 2 && strcmp(c.migrate[0], "npx knex migrate:latest") == 0 &&
	      strcmp(c.migrate[1], "echo two") == 0);
	CHECK(c.n_rollback == 1 && strcmp(c.rollback[0], "npx knex migrate:rollback") == 0);
	app_config_free(&c);

	/* The YAML file itself; the app dir is its directory. Trailing
	 * slashes on a directory are fine. */
	CHECK(app_config_load(path, NULL, &c, &e) == 0);
	snprintf(path, sizeof(path), "%s/app1", tmp);
	CHECK(c.app_dir && strcmp(c.app_dir, path) == 0);
	app_config_free(&c);

	snprintf(path, sizeof(path), "%s/app1/other.yml", tmp);
	write_file(path, "name: other\ndatabase: {migrate: [a]}\n");
	CHECK(app_config_load(path, NULL, &c, &e) == 0);
	CHECK(c.config_path && strcmp(c.config_path, path) == 0);
	CHECK(c.app_db_name && strcmp(c.app_db_name, "other") == 0);
	app_config_free(&c);

	snprintf(path, sizeof(path), "%s/app1//", tmp);
	CHECK(app_config_load(path, NULL, &c, &e) == 0);
	snprintf(path, sizeof(path), "%s/app1/dbos-config.yaml", tmp);
	CHECK(c.config_path && strcmp(c.config_path, path) == 0);
	app_config_free(&c);
}

static void test_path_errors(void)
{
	struct app_config c;
	struct errmsg e;
	char path[600];

	CHECK(app_config_load("relative/app", NULL, &c, &e) == -EINVAL);
	CHECK(has(&e, "relative path relative/app"));
	CHECK(c.app_dir == NULL && c.migrate == NULL);
	CHECK(app_config_load("", NULL, &c, &e) == -EINVAL);
	CHECK(app_config_load("/tmp/x\ny", NULL, &c, &e) == -EINVAL);

	snprintf(path, sizeof(path), "%s/no-such-dir", tmp);
	CHECK(app_config_load(path, NULL, &c, &e) == -ENOENT);
	CHECK(has(&e, path));

	/* An existing directory without the YAML: the message names it. */
	snprintf(path, sizeof(path), "%s/empty-dir", tmp);
	mkdir(path, 0700);
	CHECK(app_config_load(path, NULL, &c, &e) == -ENOENT);
	CHECK(has(&e, "empty-dir/dbos-config.yaml not found"));

	CHECK(app_config_load("/dev/null", NULL, &c, &e) == -EINVAL);
}

static void test_yaml_errors(void)
{
	struct app_config c;
	struct errmsg e;

	/* Not YAML: the message has FILE:LINE:COL. */
	CHECK(load_text("bad1", "name: x\ndatabase:\n  migrate: ['a'\n  rollback: [\n", &c, &e) ==
	      -EINVAL);
	CHECK(has(&e, "bad1/dbos-config.yaml:"));
	CHECK(strstr(e.text, ":4:") || strstr(e.text, ":5:") || strstr(e.text, ":3:"));

	CHECK(load_text("bad2", "name: x\n\tdatabase: {}\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "bad2/dbos-config.yaml:2:"));

	CHECK(load_text("bad3", "", &c, &e) == -EINVAL);
	CHECK(has(&e, "is empty"));

	CHECK(load_text("bad4", "- a\n- b\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "must be a mapping") && has(&e, "not a list"));

	CHECK(load_text("bad5", "just a string\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "must be a mapping"));

	CHECK(load_text("bad6", "name: x\ndatabase: [1]\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "database must be a mapping") && has(&e, ":2:11:"));

	CHECK(load_text("bad7", "name: x\ndatabase:\n  migrate: npx knex migrate:latest\n", &c,
	                &e) == -EINVAL);
	CHECK(has(&e, "database.migrate must be a list of commands, not a string"));
	CHECK(has(&e, "migrate: ['npx knex migrate:latest']"));
	CHECK(has(&e, ":3:12:"));

	CHECK(load_text("bad8", "name: x\ndatabase:\n  rollback: {a: b}\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "database.rollback must be a list of commands, not a mapping"));

	CHECK(load_text("bad9", "name: x\ndatabase:\n  migrate: [1, 2]\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "database.migrate[0] must be a command string, not an integer"));

	CHECK(load_text("bad10", "name: x\ndatabase:\n  migrate: ['ok', [a]]\n", &c, &e) ==
	      -EINVAL);
	CHECK(has(&e, "database.migrate[1] must be a command string, not a list"));

	CHECK(load_text("bad11", "name: x\ndatabase:\n  migrate: ['a', '  ']\n", &c, &e) ==
	      -EINVAL);
	CHECK(has(&e, "database.migrate[1] is an empty command"));

	CHECK(load_text("bad12", "name: x\ndatabase:\n  migrate: [true]\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "not a boolean"));

	CHECK(load_text("bad13", "name: [x]\ndatabase: {migrate: [a]}\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "name must be a string, not a list"));

	CHECK(load_text("bad14", "name: x\ndatabase: {app_db_name: 12, migrate: [a]}\n", &c, &e) ==
	      -EINVAL);
	CHECK(has(&e, "database.app_db_name must be a string, not an integer"));

	CHECK(load_text("bad15", "name: x\ndatabase: {migrate: [a]}\ndatabase: {migrate: [b]}\n",
	                &c, &e) == -EINVAL);
	CHECK(has(&e, "duplicate key database"));

	CHECK(load_text("bad16", "database: {migrate: [a]}\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "no database_url, database.app_db_name or name"));

	/* Quoted numbers are strings: fine as commands. */
	CHECK(load_text("ok1", "name: x\ndatabase: {migrate: ['1', \"2\"]}\n", &c, &e) == 0);
	CHECK(c.n_migrate == 2 && strcmp(c.migrate[1], "2") == 0);
	app_config_free(&c);
}

static void test_empty_lists(void)
{
	struct app_config c;
	struct errmsg e;

	/* An empty or missing list loads; migrate_run refuses to run it. */
	CHECK(load_text("empty1", "name: x\ndatabase:\n  migrate: []\n", &c, &e) == 0);
	CHECK(c.n_migrate == 0 && c.migrate == NULL && c.n_rollback == 0);
	app_config_free(&c);
	CHECK(load_text("empty2", "name: x\ndatabase:\n  migrate:\n", &c, &e) == 0);
	CHECK(c.n_migrate == 0);
	app_config_free(&c);
	CHECK(load_text("empty3", "name: x\n", &c, &e) == 0);
	CHECK(c.n_migrate == 0 && c.n_rollback == 0);
	app_config_free(&c);

	struct buf report = BUF_INIT;
	struct migrate_target t = {"127.0.0.1", 1, "u", "secretpw1", NULL};
	struct migrate_request req = {.kind = MIGRATE_UP, .path = "rel", .target = &t};

	/* A relative path needs the writer's working directory. */
	CHECK(migrate_run(&req, &report, &e) == -EINVAL);
	CHECK(report.data && strstr(report.data, "migrate rel\n") &&
	      strstr(report.data, "result: error: relative path rel"));
	/* A writer whose environment cannot be read (here: gone): the
	 * daemon's is used, and the report says so. */
	char d[512];
	snprintf(d, sizeof(d), "%s/empty1", tmp);
	req.pid = 999999999;
	req.path = d;
	CHECK(migrate_run(&req, &report, &e) == -EIO); /* nothing listens on port 1 */
	CHECK(report.data && strstr(report.data, "environment: the daemon's, plus the connection "
	                                         "(the writer's could not be read)\n"));
	req.pid = getpid();
	req.path = "surely-not-here-dbosfs";
	CHECK(migrate_run(&req, &report, &e) == -ENOENT);
	CHECK(has(&e, "surely-not-here-dbosfs (relative to the writer's directory "));
	buf_free(&report);
}

static void test_substitution_in_file(void)
{
	struct app_config c;
	struct errmsg e;

	setenv("DBOSFS_T_CMD", "echo hi", 1);
	setenv("DBOSFS_T_DB", "from_env", 1);
	unsetenv("DBOSFS_T_UNSET");
	CHECK(load_text("subst",
	                "name: x\n"
	                "database:\n"
	                "  app_db_name: ${DBOSFS_T_DB}\n"
	                "  migrate: ['${DBOSFS_T_CMD} there', 'a${DBOSFS_T_UNSET}b']\n",
	                &c, &e) == 0);
	CHECK(c.app_db_name && strcmp(c.app_db_name, "from_env") == 0);
	CHECK(c.n_migrate == 2 && strcmp(c.migrate[0], "echo hi there") == 0 &&
	      strcmp(c.migrate[1], "a\"\"b") == 0);
	app_config_free(&c);
}

static void test_current_fields(void)
{
	struct app_config c;
	struct errmsg e;
	char f[600];

	/* database_url's database names the application database; the
	 * system database follows name, or system_database_url. */
	CHECK(load_text("u1",
	                "name: My-App\n"
	                "database_url: postgresql://u:p%40ss@h:5432/shop%5Fdb?sslmode=disable\n",
	                &c, &e) == 0);
	CHECK(strcmp(c.app_db_name, "shop_db") == 0);
	CHECK(strcmp(c.sys_db_name, "my_app_dbos_sys") == 0);
	app_config_free(&c);
	CHECK(load_text("u2",
	                "name: a\n"
	                "system_database_url: postgres://u@h/custom_sys\n"
	                "database_url: postgres://u@h\n",
	                &c, &e) == 0);
	CHECK(strcmp(c.app_db_name, "a") == 0 && strcmp(c.sys_db_name, "custom_sys") == 0);
	app_config_free(&c);
	/* The URL (it may hold a password) is never quoted in a message. */
	CHECK(load_text("u3", "name: a\ndatabase_url: pw-Secret99\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "database_url is not a URL") && !has(&e, "Secret99"));
	CHECK(load_text("u4", "name: a\ndatabase_url: postgres://u:Secret99@h/Bad-Db\n", &c, &e) ==
	      -EINVAL);
	CHECK(has(&e, "from database_url") && !has(&e, "Secret99"));

	/* No name: package.json's, as the SDK reads it. */
	snprintf(f, sizeof(f), "%s/pj", tmp);
	mkdir(f, 0700);
	snprintf(f, sizeof(f), "%s/pj/package.json", tmp);
	write_file(f, "{\"name\": \"pkg-app\", \"version\": \"1.0.0\"}\n");
	CHECK(load_text("pj", "database:\n  migrate: [echo]\n", &c, &e) == 0);
	CHECK(c.name_from_package_json && strcmp(c.name, "pkg-app") == 0);
	CHECK(strcmp(c.app_db_name, "pkg_app") == 0 &&
	      strcmp(c.sys_db_name, "pkg_app_dbos_sys") == 0);
	app_config_free(&c);
	CHECK(load_text("nopj", "database:\n  migrate: [echo]\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "nor a package.json with a name"));
}

static int always_interrupted(void)
{
	return 1;
}

static void test_hostile_yaml(void)
{
	struct app_config c;
	struct errmsg e;
	size_t depth = 100000;
	char *deep = malloc(2 * depth + 64), *p = deep;
	long long t;

	/* Depth 100,000 under the 1 MiB cap: refused at once. */
	p += sprintf(p, "name: a\nx: ");
	memset(p, '[', depth);
	p += depth;
	memset(p, ']', depth);
	p += depth;
	strcpy(p, "\n");
	t = now_ms();
	CHECK(load_text("deep", deep, &c, &e) == -EINVAL);
	CHECK(now_ms() - t < 500);
	CHECK(has(&e, "nested more than 64 levels deep"));
	/* Block style nesting too. */
	p = deep;
	p += sprintf(p, "name: a\nx:\n");
	for (int i = 0; i < 100; i++)
		p += sprintf(p, "%*sk:\n", 2 * (i + 1), "");
	CHECK(load_text("deepblock", deep, &c, &e) == -EINVAL);
	CHECK(has(&e, "nested more than 64 levels deep"));
	/* 64 levels are fine. */
	p = deep;
	p += sprintf(p, "name: a\nx: ");
	memset(p, '[', 63);
	memset(p + 63, ']', 63);
	strcpy(p + 126, "\n");
	CHECK(load_text("ok64", deep, &c, &e) == 0);
	app_config_free(&c);
	/* Too many nodes. */
	p = deep;
	p += sprintf(p, "name: a\nx: [");
	for (int i = 0; i < CONFIG_MAX_NODES + 10; i++)
		p += sprintf(p, "1,");
	strcpy(p, "1]\n");
	CHECK(load_text("many", deep, &c, &e) == -EINVAL);
	CHECK(has(&e, "more than 20000 YAML nodes"));
	/* Ctrl-C lands while the file is read, not after. */
	p = deep;
	p += sprintf(p, "name: a\nx: [");
	for (int i = 0; i < 5000; i++)
		p += sprintf(p, "1,");
	strcpy(p, "1]\n");
	op_interrupted_hook = always_interrupted;
	CHECK(load_text("intr", deep, &c, &e) == -EINTR);
	CHECK(has(&e, "interrupted while reading"));
	op_interrupted_hook = NULL;
	free(deep);
}

static void test_db_names(void)
{
	struct app_config c;
	struct errmsg e;

	CHECK(load_text("n1", "name: Hello-World App\n", &c, &e) == 0);
	CHECK(c.app_db_name && strcmp(c.app_db_name, "hello_world_app") == 0);
	app_config_free(&c);

	CHECK(load_text("n2", "name: 9lives\n", &c, &e) == 0);
	CHECK(c.app_db_name && strcmp(c.app_db_name, "_9lives") == 0);
	app_config_free(&c);

	/* app_db_name wins over name. */
	CHECK(load_text("n3", "name: whatever\ndatabase:\n  app_db_name: shop_db\n", &c, &e) == 0);
	CHECK(c.app_db_name && strcmp(c.app_db_name, "shop_db") == 0);
	app_config_free(&c);

	CHECK(load_text("n4", "name: my.app\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "invalid application database name \"my.app\" (derived from name)"));

	CHECK(load_text("n5", "name: x\ndatabase: {app_db_name: 'x; DROP'}\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "(database.app_db_name)"));

	CHECK(load_text("n6", "name: x\ndatabase: {app_db_name: Shop}\n", &c, &e) == -EINVAL);
	CHECK(load_text("n7", "name: x\ndatabase: {app_db_name: 1shop}\n", &c, &e) == -EINVAL);
	CHECK(load_text("n8",
	                "name: x\ndatabase: {app_db_name: "
	                "a234567890123456789012345678901234567890123456789012345678901234}\n",
	                &c, &e) == -EINVAL);
	CHECK(load_text("n9", "name: template1\n", &c, &e) == -EINVAL);
	CHECK(has(&e, "reserved"));
	/* Derived from a name with quotes or unicode: refused, not mangled. */
	CHECK(load_text("n10", "name: \"caf\xc3\xa9\"\n", &c, &e) == -EINVAL);
}

static void test_huge_file(void)
{
	struct app_config c;
	struct errmsg e;
	char d[512], f[600];
	FILE *fp;

	snprintf(d, sizeof(d), "%s/huge", tmp);
	mkdir(d, 0700);
	snprintf(f, sizeof(f), "%s/dbos-config.yaml", d);
	fp = fopen(f, "w");
	if (!fp)
		exit(2);
	fputs("name: huge\n", fp);
	for (int i = 0; i < 70000; i++)
		fputs("# padding padding\n", fp);
	fclose(fp);
	CHECK(app_config_load(d, NULL, &c, &e) == -EINVAL);
	CHECK(has(&e, "larger than"));

	/* Under the limit on disk, over it after substitution. */
	char *big = malloc(600 * 1024 + 1);
	if (!big)
		exit(2);
	memset(big, 'x', 600 * 1024);
	big[600 * 1024] = '\0';
	setenv("DBOSFS_T_BIG", big, 1);
	free(big);
	CHECK(load_text("huge2", "name: a\n# ${DBOSFS_T_BIG}\n# ${DBOSFS_T_BIG}\n", &c, &e) ==
	      -EINVAL);
	CHECK(has(&e, "after ${VAR} substitution"));
	unsetenv("DBOSFS_T_BIG");

	/* A NUL byte: not a text file. */
	snprintf(d, sizeof(d), "%s/nul", tmp);
	mkdir(d, 0700);
	snprintf(f, sizeof(f), "%s/dbos-config.yaml", d);
	fp = fopen(f, "w");
	if (!fp)
		exit(2);
	fwrite("name: a\0b\n", 1, 10, fp);
	fclose(fp);
	CHECK(app_config_load(d, NULL, &c, &e) == -EINVAL);
	CHECK(has(&e, "NUL byte"));
}

int main(void)
{
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		return 2;
	}
	test_expand();
	test_dir_and_file();
	test_path_errors();
	test_yaml_errors();
	test_empty_lists();
	test_substitution_in_file();
	test_db_names();
	test_current_fields();
	test_hostile_yaml();
	test_huge_file();

	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
	return tap_done();
}
