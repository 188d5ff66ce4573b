/* The state cache: listing, mutations winning over stale lists, pins,
 * tombstones, confirmation expiry and one-operation-at-a-time. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "tap.h"

static struct instance mk(const char *name, const char *status)
{
	struct instance i = {0};
	snprintf(i.name, sizeof(i.name), "%s", name);
	snprintf(i.status, sizeof(i.status), "%s", status);
	snprintf(i.host, sizeof(i.host), "127.0.0.1");
	i.port = 5432;
	return i;
}

static struct instance_list list_of(int n, ...)
{
	struct instance_list l = {0};
	va_list ap;
	va_start(ap, n);
	for (int k = 0; k < n; k++) {
		const char *name = va_arg(ap, const char *);
		struct instance i = mk(name, "available");
		instance_list_push(&l, &i);
	}
	va_end(ap);
	return l;
}

static void test_listing(void)
{
	struct state_cache *c = state_new();
	struct instance_list l = list_of(3, "zeta", "alpha", "mid");
	CHECK(state_apply_list(c, &l, state_generation(c), 0));
	char **names;
	size_t n;
	CHECK(state_names(c, &names, &n) == 0);
	CHECK(n == 3);
	CHECK(n == 3 && strcmp(names[0], "alpha") == 0 && strcmp(names[2], "zeta") == 0);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	struct instance got;
	CHECK(state_get(c, "mid", &got) && strcmp(got.status, "available") == 0);
	CHECK(!state_get(c, "nope", &got));
	instance_list_free(&l);

	/* A later list without "mid" removes it. */
	l = list_of(2, "zeta", "alpha");
	CHECK(state_apply_list(c, &l, state_generation(c), 1000));
	CHECK(!state_get(c, "mid", NULL));
	CHECK(state_count(c) == 2);
	instance_list_free(&l);
	state_free(c);
}

static void test_stale_list_discarded(void)
{
	struct state_cache *c = state_new();
	unsigned long gen = state_generation(c);
	struct instance i = mk("fresh", "provisioning");
	state_put(c, &i, 0); /* a mutation while the list was in flight */
	struct instance_list empty = {0};
	CHECK(!state_apply_list(c, &empty, gen, 10));
	CHECK(state_get(c, "fresh", NULL));
	state_free(c);
}

static void test_pin_and_tombstone(void)
{
	struct state_cache *c = state_new();
	struct instance i = mk("newdb", "provisioning");
	state_put(c, &i, 0);
	struct instance_list empty = {0};
	/* Not listed yet, but pinned for STATE_PIN_MS. */
	CHECK(state_apply_list(c, &empty, state_generation(c), STATE_PIN_MS - 1));
	CHECK(state_get(c, "newdb", NULL));
	CHECK(state_apply_list(c, &empty, state_generation(c), STATE_PIN_MS + 1));
	CHECK(!state_get(c, "newdb", NULL));

	/* Destroyed here: hidden although the provider still lists it. */
	struct instance_list l = list_of(1, "gone");
	CHECK(state_apply_list(c, &l, state_generation(c), 0));
	CHECK(state_get(c, "gone", NULL));
	state_remove(c, "gone", 100);
	CHECK(!state_get(c, "gone", NULL));
	CHECK(state_apply_list(c, &l, state_generation(c), 200));
	CHECK(!state_get(c, "gone", NULL));
	/* After the tombstone expires the provider's word counts again. */
	CHECK(state_apply_list(c, &l, state_generation(c), 100 + STATE_TOMBSTONE_MS + 1));
	CHECK(state_apply_list(c, &l, state_generation(c), 100 + STATE_TOMBSTONE_MS + 2));
	CHECK(state_get(c, "gone", NULL));
	instance_list_free(&l);
	state_free(c);
}

static void test_confirm_expiry(void)
{
	struct state_cache *c = state_new();
	struct instance i = mk("db1", "available");
	state_put(c, &i, 0);
	CHECK(state_confirm_left(c, "db1", 0) == 0);
	state_confirm_arm(c, "db1", 60000);
	CHECK(state_confirm_left(c, "db1", 1000) == 59000);
	CHECK(state_confirm_left(c, "db1", 59999) == 1);
	CHECK(state_confirm_left(c, "db1", 60000) == 0);
	state_confirm_arm(c, "db1", 60000);
	state_confirm_clear(c, "db1");
	CHECK(state_confirm_left(c, "db1", 0) == 0);
	state_free(c);
}

static void test_ops_and_errors(void)
{
	struct state_cache *c = state_new();
	struct instance i = mk("db1", "available");
	state_put(c, &i, 0);
	struct errmsg e;
	CHECK(state_begin_op(c, "db1", "migrate", &e) == 0);
	CHECK(state_begin_op(c, "db1", "rollback", &e) == -EBUSY);
	CHECK(strstr(e.text, "migrate") != NULL);
	CHECK(state_begin_op(c, "nope", "migrate", &e) == -ENOENT);
	/* A held instance survives a list that lost it; its status stays. */
	state_set_status(c, "db1", "deleting");
	struct instance_list l = {0};
	struct instance other = mk("db1", "available");
	instance_list_push(&l, &other);
	CHECK(state_apply_list(c, &l, state_generation(c), 10));
	struct instance got;
	CHECK(state_get(c, "db1", &got) && strcmp(got.status, "deleting") == 0);
	state_end_op(c, "db1");
	CHECK(state_begin_op(c, "db1", "rollback", &e) == 0);
	state_end_op(c, "db1");
	instance_list_free(&l);

	char msg[64];
	state_get_error(c, "db1", msg, sizeof(msg));
	CHECK(msg[0] == '\0');
	state_set_error(c, "db1", "boom");
	state_get_error(c, "db1", msg, sizeof(msg));
	CHECK(strcmp(msg, "boom") == 0);

	struct buf b = BUF_INIT;
	CHECK(!state_get_report(c, "db1", 0, &b));
	state_set_report(c, "db1", 1, "result: ok\n");
	CHECK(state_get_report(c, "db1", 1, &b) && strcmp(b.data, "result: ok\n") == 0);
	buf_free(&b);

	struct instance out;
	CHECK(state_set_status(c, "db1", "available"));
	CHECK(state_wait_settled(c, "db1", &out) == 0);
	CHECK(state_wait_settled(c, "nope", &out) == -ENOENT);
	state_free(c);
}

static char forgotten[16][32];
static int nforgotten, nsweeps;

static void on_forget(void *arg, const char *name)
{
	if (!name)
		nsweeps++;
	else if (nforgotten < 16)
		snprintf(forgotten[nforgotten++], sizeof(forgotten[0]), "%s", name);
}

static bool was_forgotten(const char *name)
{
	for (int i = 0; i < nforgotten; i++)
		if (strcmp(forgotten[i], name) == 0)
			return true;
	return false;
}

/* A 200 list that omits names once costs no secret; a second omission,
 * a deletion seen first, or a return as another instance does. */
static void test_omission_needs_confirmation(void)
{
	struct state_cache *c = state_new();
	nforgotten = nsweeps = 0;
	state_on_forget(c, on_forget, NULL);
	struct instance_list all = list_of(3, "alpha", "beta", "gamma");
	struct instance_list none = {0};
	CHECK(state_apply_list(c, &all, state_generation(c), 0));
	CHECK(state_apply_list(c, &none, state_generation(c), 10));
	CHECK(nforgotten == 0 && state_count(c) == 0);
	CHECK(state_apply_list(c, &all, state_generation(c), 20));
	CHECK(nforgotten == 0 && state_count(c) == 3);
	/* Omitted twice in a row: forgotten. */
	CHECK(state_apply_list(c, &none, state_generation(c), 30));
	CHECK(state_apply_list(c, &none, state_generation(c), 40));
	CHECK(was_forgotten("alpha") && was_forgotten("beta") && was_forgotten("gamma"));
	/* Seen deleting, then gone: forgotten at once. */
	nforgotten = 0;
	struct instance_list one = list_of(1, "delta");
	CHECK(state_apply_list(c, &one, state_generation(c), 50));
	snprintf(one.items[0].status, sizeof(one.items[0].status), "deleting");
	CHECK(state_apply_list(c, &one, state_generation(c), 60));
	CHECK(state_apply_list(c, &none, state_generation(c), 70));
	CHECK(was_forgotten("delta"));
	/* Omitted once, then back with another host: made again elsewhere. */
	nforgotten = 0;
	struct instance_list e1 = list_of(1, "epsilon");
	CHECK(state_apply_list(c, &e1, state_generation(c), 80));
	CHECK(state_apply_list(c, &none, state_generation(c), 90));
	CHECK(nforgotten == 0);
	snprintf(e1.items[0].host, sizeof(e1.items[0].host), "elsewhere.example.com");
	CHECK(state_apply_list(c, &e1, state_generation(c), 100));
	CHECK(was_forgotten("epsilon"));
	CHECK(nsweeps == 1);
	instance_list_free(&all);
	instance_list_free(&one);
	instance_list_free(&e1);
	state_free(c);
}

/* Secrets follow identity; tombstones end when the name comes back. */
static void test_identity_and_tombstone_end(void)
{
	struct state_cache *c = state_new();
	state_on_forget(c, on_forget, NULL);
	struct instance_list l = list_of(3, "alpha", "beta", "gamma");
	CHECK(state_apply_list(c, &l, state_generation(c), 0));
	CHECK(nsweeps == 0 && nforgotten == 0);
	/* beta leaves the list: gone from view at once, its secret only once
	 * a second list confirms it (the sweep of strangers follows the
	 * second list and spares it: state_known). */
	struct instance_list l2 = list_of(2, "alpha", "gamma");
	CHECK(state_apply_list(c, &l2, state_generation(c), 10));
	CHECK(!was_forgotten("beta") && !state_get(c, "beta", NULL));
	CHECK(nsweeps == 1 && state_known(c, "beta"));
	CHECK(state_apply_list(c, &l2, state_generation(c), 15));
	CHECK(was_forgotten("beta") && !state_known(c, "beta"));
	/* gamma is back provisioning (made again elsewhere): forgotten, shown. */
	snprintf(l2.items[1].status, sizeof(l2.items[1].status), "provisioning");
	CHECK(state_apply_list(c, &l2, state_generation(c), 20));
	CHECK(was_forgotten("gamma") && state_get(c, "gamma", NULL));
	/* alpha destroyed here; the lagging list still shows it: hidden. */
	state_remove(c, "alpha", 30);
	struct instance_list l3 = list_of(2, "alpha", "gamma");
	CHECK(state_apply_list(c, &l3, state_generation(c), 40));
	CHECK(!state_get(c, "alpha", NULL));
	/* Gone from a list, then listed available again: made again. */
	struct instance_list l4 = list_of(1, "gamma");
	CHECK(state_apply_list(c, &l4, state_generation(c), 50));
	CHECK(!state_get(c, "alpha", NULL));
	CHECK(state_apply_list(c, &l3, state_generation(c), 60));
	CHECK(state_get(c, "alpha", NULL));
	CHECK(nsweeps == 1);
	instance_list_free(&l);
	instance_list_free(&l2);
	instance_list_free(&l3);
	instance_list_free(&l4);
	state_free(c);
}

/* Many instances, unsorted and with duplicates: sorted names, one each. */
static void test_large_unsorted_list(void)
{
	struct state_cache *c = state_new();
	struct instance_list l = {0};
	for (int k = 0; k < 20000; k++) {
		char name[32];
		snprintf(name, sizeof(name), "db%05d", (k * 7919) % 10000);
		struct instance i = mk(name, "available");
		instance_list_push(&l, &i);
	}
	CHECK(state_apply_list(c, &l, state_generation(c), 0));
	char **names;
	size_t n;
	CHECK(state_names(c, &names, &n) == 0 && n == 10000);
	bool sorted = true;
	for (size_t k = 1; k < n; k++)
		if (strcmp(names[k - 1], names[k]) >= 0)
			sorted = false;
	for (size_t k = 0; k < n; k++)
		free(names[k]);
	free(names);
	CHECK(sorted);
	struct instance one = mk("db00000x", "provisioning");
	state_put(c, &one, 0);
	CHECK(state_get(c, "db00000x", NULL) && state_get(c, "db09999", NULL));
	instance_list_free(&l);
	state_free(c);
}

int main(void)
{
	test_identity_and_tombstone_end();
	test_omission_needs_confirmation();
	test_large_unsorted_list();
	test_listing();
	test_stale_list_discarded();
	test_pin_and_tombstone();
	test_confirm_expiry();
	test_ops_and_errors();
	return tap_done();
}
