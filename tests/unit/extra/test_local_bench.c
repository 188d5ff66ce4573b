/* Benchmark (built, not run by meson test): median time of the local
 * provider's provision() over N runs, against the usual way of making a
 * cluster (initdb + pg_ctl start -w) run by hand.
 *   build-local/tests/unit/extra/test_local_bench [N [burst]]
 * Prints one line per measurement and the medians. */
#include <errno.h>
#include <glob.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "options.h"
#include "provider.h"

/* Waits until the preparer has a warm spare ready (spares/USER.N). */
static void bench_wait_spare(const char *state_dir, int ms)
{
	char pat[256];
	long long end = now_ms() + ms;

	snprintf(pat, sizeof(pat), "%s/local/spares/dbos_user.[0-9]*[0-9]", state_dir);
	while (now_ms() < end) {
		glob_t g;
		int r = glob(pat, 0, NULL, &g);
		globfree(&g);
		if (r == 0)
			return;
		usleep(10000);
	}
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

static long long median(long long *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_ll);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The usual way, as the server account (postgres refuses root). */
static long long by_hand(const char *dir, int i)
{
	char cmd[2048];
	const char *as = geteuid() == 0 ? "runuser -u postgres -- " : "";
	long long t0 = now_ms();

	snprintf(cmd, sizeof(cmd),
	         "%s/usr/lib/postgresql/15/bin/initdb --no-sync -A scram-sha-256 "
	         "--pwfile=%s/pw -U dbos_user -D %s/h%d >/dev/null 2>&1 && "
	         "%s/usr/lib/postgresql/15/bin/pg_ctl start -w -s -D %s/h%d -l %s/h%d.log "
	         "-o '-p %d -k %s -c listen_addresses=127.0.0.1' >/dev/null 2>&1",
	         as, dir, dir, i, as, dir, i, dir, i, 26900 + i, dir);
	if (system(cmd) != 0) {
		fprintf(stderr, "by hand: command failed: %s\n", cmd);
		return -1;
	}
	long long took = now_ms() - t0;
	snprintf(cmd, sizeof(cmd),
	         "%s/usr/lib/postgresql/15/bin/pg_ctl stop -m fast -s -D %s/h%d >/dev/null 2>&1",
	         as, dir, i);
	if (system(cmd) != 0)
		fprintf(stderr, "by hand: stop failed\n");
	return took;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	bool burst = argc > 2 && strcmp(argv[2], "burst") == 0;
	long long prov[64], hand[64];
	char state_dir[] = "/tmp/dbosfs-bench-XXXXXX", cmd[256];
	struct dbosfs_options opt;
	struct local_options lo = {.spares = 2};
	struct provider *p;
	struct errmsg e;
	struct instance inst;

	if (n < 1 || n > 64)
		n = 10;
	log_init(getenv("BENCH_VERBOSE") != NULL);
	if (!mkdtemp(state_dir))
		return 1;
	memset(&opt, 0, sizeof(opt));
	opt.state_dir = state_dir;
	opt.db_username = "dbos_user";
	/* The copy-and-start path (a spare copy, no spare server). */
	lo.spares = 1;
	setenv("DBOSFS_LOCAL_SPARES_IDLE", "1", 1);
	if (local_provider_create(&opt, &lo, &p, &e) || p->ops->start(p, &e)) {
		fprintf(stderr, "provider: %s\n", e.text);
		return 1;
	}
	/* Let the preparer build the template and the first spare, as it
	 * does right after mounting. */
	bench_wait_spare(state_dir, 30000);
	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "bench%d", i);
		long long t0 = now_ms();
		if (p->ops->provision(p, name, "dbos_user", "BenchPassw0rd", &inst, &e)) {
			fprintf(stderr, "provision %s: %s\n", name, e.text);
			return 1;
		}
		prov[i] = now_ms() - t0;
		printf("provision %s: %lld ms\n", name, prov[i]);
		fflush(stdout);
		/* Users mkdir one at a time; give the preparer its ~0.3 s
		 * (unless "burst": back to back, mostly without a spare). */
		if (!burst)
			bench_wait_spare(state_dir, 10000);
	}
	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "bench%d", i);
		snprintf(inst.name, sizeof(inst.name), "%s", name);
		p->ops->destroy(p, &inst, &e);
	}
	p->ops->stop(p);
	p->ops->free(p);

	char hand_dir[] = "/tmp/dbosfs-bench-hand-XXXXXX";
	if (!mkdtemp(hand_dir))
		return 1;
	snprintf(cmd, sizeof(cmd),
	         "printf 'HandPassw0rd' > %s/pw && chmod 711 %s && chown -R %s %s", hand_dir,
	         hand_dir, geteuid() == 0 ? "postgres" : "$(id -un)", hand_dir);
	if (system(cmd) != 0)
		return 1;
	for (int i = 0; i < n; i++) {
		hand[i] = by_hand(hand_dir, i);
		if (hand[i] < 0)
			return 1;
		printf("initdb + pg_ctl start -w: %lld ms\n", hand[i]);
		fflush(stdout);
	}
	long long mp = median(prov, n), mh = median(hand, n);
	printf(
	    "median provision: %lld ms; median initdb + pg_ctl start -w: %lld ms; speedup %.1fx\n",
	    mp, mh, mp ? (double)mh / (double)mp : 0.0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", state_dir, hand_dir);
	if (system(cmd) != 0)
		return 1;
	log_shutdown();
	return 0;
}
