/* Drives the local provider end to end without FUSE: provision, connect
 * over TCP with the password, kill -9 the postmaster and watch it come
 * back with its rows, reset the password, SIGSTOP the postmaster and see
 * it reported unresponsive (and available after SIGCONT), concurrent
 * provisions of one
 * name, destroy, and stop leaving no server behind; a second provider on
 * the same state_dir refused; and (as root, on a small tmpfs) a server that
 * cannot start because the disk is full reported as ENOSPC with nothing
 * left behind. Needs the PostgreSQL server binaries; skipped (exit 77)
 * without them. */
#include <errno.h>
#include <glob.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../tap.h"
#include "log.h"
#include "options.h"
#include "provider.h"

static char state_dir[64];
/* provider=local's own options (the registry's struct local_options). */
static struct local_options lo = {.spares = 2};

static PGconn *connect_tcp(int port, const char *user, const char *password)
{
	char portstr[16];
	const char *keys[] = {"host", "port", "user", "password", "dbname", "connect_timeout",
	                      NULL};
	const char *vals[] = {"127.0.0.1", portstr, user, password, "postgres", "5", NULL};

	snprintf(portstr, sizeof(portstr), "%d", port);
	return PQconnectdbParams(keys, vals, 0);
}

/* Runs sql over TCP; returns the first value of the first row (static). */
static const char *query(int port, const char *password, const char *sql)
{
	static char out[256];
	PGconn *c = connect_tcp(port, "dbos_user", password);
	const char *ret = NULL;

	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(c, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
			snprintf(out, sizeof(out), "%s", PQgetvalue(r, 0, 0));
			ret = out;
		} else if (PQresultStatus(r) == PGRES_COMMAND_OK) {
			ret = "ok";
		} else {
			fprintf(stderr, "query failed: %s", PQresultErrorMessage(r));
		}
		PQclear(r);
	}
	PQfinish(c);
	return ret;
}

static pid_t postmaster_pid(const char *name)
{
	char path[256], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s/local/instances/%s/data/postmaster.pid", state_dir, name);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	return (pid_t)atoi(buf);
}

static int wait_status(struct provider *p, const char *name, const char *want, int ms)
{
	long long end = now_ms() + ms;
	struct instance inst;
	struct errmsg e;

	while (now_ms() < end) {
		if (p->ops->get(p, name, &inst, &e) == 0 && strcmp(inst.status, want) == 0)
			return 0;
		usleep(20000);
	}
	return -ETIMEDOUT;
}

/* Waits until pattern matches a path. */
static int wait_glob(const char *pattern, int ms)
{
	long long end = now_ms() + ms;

	while (now_ms() < end) {
		glob_t g;
		int rc = glob(pattern, 0, NULL, &g);
		globfree(&g);
		if (rc == 0)
			return 0;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

struct race {
	struct provider *p;
	int rc;
	struct instance inst;
};

static void *race_provision(void *arg)
{
	struct race *r = arg;
	struct errmsg e;

	r->rc = r->p->ops->provision(r->p, "smoke_race", "dbos_user", "RacePassw0rd", &r->inst, &e);
	return NULL;
}

/* Fills the filesystem of path with a file, then gives back `keep` bytes. */
static int fill_disk(const char *path, off_t keep)
{
	static char block[65536];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	off_t size = 0;

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t n = write(fd, block, sizeof(block));
		if (n <= 0) {
			n = write(fd, block, 512); /* the last partial block */
			if (n <= 0)
				break;
		}
		size += n;
	}
	int rc = errno == ENOSPC && ftruncate(fd, size - keep) == 0 ? 0 : -1;
	close(fd);
	return rc;
}

/* The failure this guards against: a server starting on a full disk dies
 * before it can write a word to its (new, equally full) log. The error
 * must say why, the errno must be ENOSPC, and nothing may stay behind. */
static void test_full_disk(const struct dbosfs_options *base)
{
	char dir[] = "/tmp/dbosfs-full-XXXXXX", state[64], path[256], filler[64];
	struct dbosfs_options opt = *base;
	struct provider *p = NULL;
	struct instance inst;
	struct errmsg e;

	if (geteuid() != 0) {
		printf("# not root: full-disk checks skipped\n");
		return;
	}
	CHECK(mkdtemp(dir) != NULL && chmod(dir, 0711) == 0);
	if (mount("tmpfs", dir, "tmpfs", 0, "size=160m,mode=0711") != 0) {
		printf("# cannot mount a tmpfs: full-disk checks skipped\n");
		rmdir(dir);
		return;
	}
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(filler, sizeof(filler), "%s/filler", dir);
	opt.state_dir = state;
	CHECK(local_provider_create(&opt, &lo, &p, &e) == 0);
	if (!p)
		goto out;
	CHECK(p->ops->start(p, &e) == 0);
	/* 160 MiB: template 39, then room for a spare and its margin. */
	snprintf(path, sizeof(path), "%s/local/spares/dbos_user.*[0-9]/data/PG_VERSION", state);
	CHECK(wait_glob(path, 30000) == 0);

	/* Two pages left: enough for the intent record and the claim's
	 * metadata, not for the server's postmaster.pid nor for its log. */
	CHECK(fill_disk(filler, 8192) == 0);
	int rc = p->ops->provision(p, "full1", "dbos_user", "FullPassw0rd1", &inst, &e);
	printf("# %s\n", e.text);
	CHECK(rc == -ENOSPC);
	CHECK(strstr(e.text, "exited during startup") && strstr(e.text, "no message") &&
	      strstr(e.text, "No space left on device") && strstr(e.text, "KiB free"));
	CHECK(p->ops->get(p, "full1", &inst, &e) == -ENOENT);
	snprintf(path, sizeof(path), "%s/local/instances/full1", state);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);

	/* With the space back, provisioning works again. */
	CHECK(unlink(filler) == 0);
	rc = p->ops->provision(p, "full2", "dbos_user", "FullPassw0rd2", &inst, &e);
	CHECK(rc == 0);
	if (rc)
		fprintf(stderr, "provision after freeing space: %s\n", e.text);
	CHECK(rc != 0 || query(inst.port, "FullPassw0rd2", "SELECT 1") != NULL);
	p->ops->stop(p);
	p->ops->free(p);
out:
	CHECK(umount2(dir, MNT_DETACH) == 0);
	CHECK(rmdir(dir) == 0);
}

int main(void)
{
	struct dbosfs_options opt;
	struct provider *p = NULL;
	struct errmsg e;
	struct instance inst, got;
	struct instance_list list = {0};
	int rc;

	if (access("/usr/lib/postgresql/15/bin/initdb", X_OK) != 0) {
		printf("skipped: no PostgreSQL 15 server binaries\n");
		return 77;
	}
	log_init(getenv("SMOKE_VERBOSE") != NULL);
	snprintf(state_dir, sizeof(state_dir), "/tmp/dbosfs-smoke-XXXXXX");
	if (!mkdtemp(state_dir))
		return 1;
	memset(&opt, 0, sizeof(opt));
	opt.state_dir = state_dir;
	opt.db_username = "dbos_user";
	opt.owner_uid = getuid();
	opt.refresh = 1; /* probe every second */
	/* One spare copy without a server: the checks below break its
	 * configuration or fill the disk before a server start (the running
	 * spares are test_spares.py's). */
	lo.spares = 1;
	setenv("DBOSFS_LOCAL_SPARES_IDLE", "1", 1);

	/* A bindir without binaries fails clearly, in create(). */
	lo.pg_bindir = "/nonexistent";
	rc = local_provider_create(&opt, &lo, &p, &e);
	CHECK(rc == -ENOENT && strstr(e.text, "pg_bindir=/nonexistent"));
	CHECK(p == NULL);
	lo.pg_bindir = NULL;
	if (geteuid() == 0) {
		lo.pg_user = "no_such_user_xyz";
		rc = local_provider_create(&opt, &lo, &p, &e);
		CHECK(rc == -ENOENT && strstr(e.text, "no_such_user_xyz"));
		lo.pg_user = NULL;
	}

	rc = local_provider_create(&opt, &lo, &p, &e);
	CHECK(rc == 0);
	if (rc) {
		fprintf(stderr, "create: %s\n", e.text);
		return tap_done();
	}
	/* One provider per state_dir: a second is refused and says who has
	 * it (the lock is per open file, so even this process is refused). */
	struct provider *p2 = NULL;
	char want[160];
	snprintf(want, sizeof(want), "state_dir %s is in use by another dbosfs (pid %d)", state_dir,
	         (int)getpid());
	rc = local_provider_create(&opt, &lo, &p2, &e);
	CHECK(rc == -EBUSY && p2 == NULL);
	CHECK(strcmp(e.text, want) == 0);
	CHECK(strcmp(p->provider_line, "local") == 0);
	CHECK(strcmp(p->secret_scope, "local") == 0);
	CHECK(geteuid() != 0 || strcmp(p->account, "root (servers run as dbosfs)") == 0);
	CHECK(p->ops->start(p, &e) == 0);

	/* Provision: returns with the server accepting password logins. */
	long long t0 = now_ms();
	rc = p->ops->provision(p, "smoke1", "dbos_user", "Sm0kePassword", &inst, &e);
	long long took = now_ms() - t0;
	CHECK(rc == 0);
	if (rc)
		fprintf(stderr, "provision: %s\n", e.text);
	printf("first provision (may include initdb of the template): %lld ms\n", took);
	CHECK(strcmp(inst.status, "available") == 0);
	CHECK(strcmp(inst.host, "127.0.0.1") == 0);
	CHECK(inst.port > 0);
	CHECK(strcmp(inst.username, "dbos_user") == 0);
	CHECK(!inst.linked);
	const char *v = query(inst.port, "Sm0kePassword", "SELECT current_user");
	CHECK(v && strcmp(v, "dbos_user") == 0);
	CHECK(query(inst.port, "wrong-password", "SELECT 1") == NULL);
	CHECK(query(inst.port, "Sm0kePassword",
	            "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2), (3)") != NULL);

	/* The name is taken. */
	CHECK(p->ops->provision(p, "smoke1", "dbos_user", "Sm0kePassword", &got, &e) == -EEXIST);
	CHECK(p->ops->get(p, "nosuch", &got, &e) == -ENOENT);
	CHECK(p->ops->list(p, &list, &e) == 0);
	CHECK(list.count == 1 && strcmp(list.items[0].name, "smoke1") == 0);
	instance_list_free(&list);

	/* kill -9: the supervisor restarts it, committed rows survive. */
	pid_t pm = postmaster_pid("smoke1");
	CHECK(pm > 0);
	CHECK(kill(pm, SIGKILL) == 0);
	t0 = now_ms();
	/* The supervisor notices within its 100 ms tick: restarting... */
	CHECK(wait_status(p, "smoke1", "restarting", 2000) == 0);
	/* ...then a new postmaster accepts connections again. */
	for (int i = 0; i < 400; i++) {
		pid_t now = postmaster_pid("smoke1");
		if (now > 0 && now != pm && p->ops->get(p, "smoke1", &got, &e) == 0 &&
		    strcmp(got.status, "available") == 0)
			break;
		usleep(50000);
	}
	CHECK(p->ops->get(p, "smoke1", &got, &e) == 0 && strcmp(got.status, "available") == 0);
	CHECK(postmaster_pid("smoke1") != pm);
	printf("kill -9 to available again: %lld ms\n", now_ms() - t0);
	v = query(inst.port, "Sm0kePassword", "SELECT count(*) FROM t");
	CHECK(v && strcmp(v, "3") == 0);

	/* Reset the password. */
	CHECK(p->ops->reset_password(p, &inst, "NewPassw0rd", &e) == 0);
	CHECK(query(inst.port, "NewPassw0rd", "SELECT 1") != NULL);
	CHECK(query(inst.port, "Sm0kePassword", "SELECT 1") == NULL);

	/* A stopped postmaster is alive but answers nothing: after two missed
	 * probes (1 s apart, 2 s timeout) it is unresponsive, get() stays
	 * instant, and it is not restarted; SIGCONT brings it back. */
	pm = postmaster_pid("smoke1");
	CHECK(pm > 0 && kill(pm, SIGSTOP) == 0);
	t0 = now_ms();
	CHECK(wait_status(p, "smoke1", "unresponsive", 10000) == 0);
	printf("SIGSTOP to unresponsive: %lld ms\n", now_ms() - t0);
	t0 = now_ms();
	for (int i = 0; i < 100; i++)
		CHECK(p->ops->get(p, "smoke1", &got, &e) == 0);
	CHECK(now_ms() - t0 < 200);
	CHECK(p->ops->reset_password(p, &inst, "Other1Passw0rd", &e) == -EBUSY);
	CHECK(strstr(e.text, "unresponsive") != NULL);
	CHECK(postmaster_pid("smoke1") == pm);
	kill(pm, SIGCONT);
	t0 = now_ms();
	CHECK(wait_status(p, "smoke1", "available", 10000) == 0);
	printf("SIGCONT to available: %lld ms\n", now_ms() - t0);
	CHECK(postmaster_pid("smoke1") == pm);
	CHECK(query(inst.port, "NewPassw0rd", "SELECT 1") != NULL);

	/* Two concurrent provisions of one name: exactly one wins. */
	struct race r1 = {.p = p, .rc = 1}, r2 = {.p = p, .rc = 1};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, race_provision, &r1);
	pthread_create(&t2, NULL, race_provision, &r2);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	CHECK((r1.rc == 0 && r2.rc == -EEXIST) || (r1.rc == -EEXIST && r2.rc == 0));

	/* Destroy: the server stops and the files go. */
	pm = postmaster_pid("smoke1");
	CHECK(p->ops->destroy(p, &inst, &e) == 0);
	CHECK(p->ops->get(p, "smoke1", &got, &e) == -ENOENT);
	CHECK(pm > 0 && kill(pm, 0) < 0 && errno == ESRCH);
	char path[256];
	snprintf(path, sizeof(path), "%s/local/instances/smoke1", state_dir);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
	CHECK(p->ops->reset_password(p, &inst, "NewPassw0rd", &e) == -ENOENT);

	/* stop(): no server of ours survives. */
	pm = postmaster_pid("smoke_race");
	CHECK(pm > 0 && kill(pm, 0) == 0);
	p->ops->stop(p);
	CHECK(kill(pm, 0) < 0 && errno == ESRCH);
	p->ops->free(p);
	p = NULL;

	/* Remount: the instance comes back with its port and data. */
	rc = local_provider_create(&opt, &lo, &p, &e);
	CHECK(rc == 0);
	if (rc == 0) {
		CHECK(p->ops->start(p, &e) == 0);
		CHECK(wait_status(p, "smoke_race", "available", 20000) == 0);
		CHECK(p->ops->get(p, "smoke_race", &got, &e) == 0);
		CHECK(got.port == r1.inst.port || got.port == r2.inst.port);
		CHECK(query(got.port, "RacePassw0rd", "SELECT 1") != NULL);
		CHECK(p->ops->destroy(p, &got, &e) == 0);

		/* A provision whose server cannot start leaves nothing behind
		 * and says why. Break the template and every spare, once the
		 * preparer has made its spare (else it could copy the template
		 * while we break it, and the provision would succeed). */
		char pat[256];
		snprintf(pat, sizeof(pat), "%s/local/spares/dbos_user.*[0-9]/data/postgresql.conf",
		         state_dir);
		CHECK(wait_glob(pat, 30000) == 0);
		char cmd0[512];
		snprintf(cmd0, sizeof(cmd0),
		         "for f in %s/local/templates/dbos_user/postgresql.conf "
		         "%s/local/spares/*/data/postgresql.conf; do echo 'bogus line' >> $f; done",
		         state_dir, state_dir);
		CHECK(system(cmd0) == 0);
		rc = p->ops->provision(p, "smoke_bad", "dbos_user", "BadPassw0rd1", &got, &e);
		CHECK(rc == -EIO);
		CHECK(strstr(e.text, "exited during startup") && strstr(e.text, "FATAL"));
		CHECK(p->ops->get(p, "smoke_bad", &got, &e) == -ENOENT);
		snprintf(path, sizeof(path), "%s/local/instances/smoke_bad", state_dir);
		CHECK(access(path, F_OK) < 0 && errno == ENOENT);
		CHECK(p->ops->list(p, &list, &e) == 0 && list.count == 0);
		instance_list_free(&list);
		p->ops->stop(p);
		p->ops->free(p);
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", state_dir);
	CHECK(system(cmd) == 0);
	test_full_disk(&opt);
	log_shutdown();
	return tap_done();
}
