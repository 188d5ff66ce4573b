/* The background refresher (include/refresher.h). */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errmap.h"
#include "log.h"
#include "refresher.h"

struct refresher {
	struct provider *provider;
	struct state_cache *cache;
	int period_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;
	bool kicked;
	char last_failure[ERRMSG_MAX]; /* "" while healthy */
	void (*hook)(void *arg);       /* guarded by lock */
	void *hook_arg;
	/* The hook runs in a thread of its own, after each list: a slow hook
	 * (a server that does not answer) never delays the next list. */
	pthread_t hook_thread;
	bool hook_started;
	bool hook_pending; /* a list ended since the hook last started */
	pthread_cond_t hook_wake;
};

int refresher_refresh_once(struct provider *p, struct state_cache *c, struct errmsg *e)
{
	struct instance_list l = {0};
	unsigned long gen = state_generation(c);
	int rc = p->ops->list(p, &l, e);
	state_note_list(c, rc, rc ? e->text : NULL);
	if (rc == 0)
		state_apply_list(c, &l, gen, now_ms());
	instance_list_free(&l);
	return rc;
}

static void note_outcome(struct refresher *r, int rc, const struct errmsg *e)
{
	if (rc == 0) {
		if (r->last_failure[0])
			log_event("refresh recovered; instance state is current again");
		r->last_failure[0] = '\0';
		return;
	}
	if (strcmp(r->last_failure, e->text) != 0) {
		log_error("refresh failed (%s), serving the last known state: %s", errno_name(rc),
		          e->text);
		snprintf(r->last_failure, sizeof(r->last_failure), "%s", e->text);
	}
}

static void *refresher_main(void *arg)
{
	struct refresher *r = arg;
	pthread_mutex_lock(&r->lock);
	while (!r->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += r->period_s;
		while (!r->stopping && !r->kicked) {
			if (pthread_cond_timedwait(&r->wake, &r->lock, &ts) == ETIMEDOUT)
				break;
		}
		if (r->stopping)
			break;
		r->kicked = false;
		pthread_mutex_unlock(&r->lock);

		struct errmsg e = {{0}};
		int rc = refresher_refresh_once(r->provider, r->cache, &e);
		note_outcome(r, rc, &e);

		pthread_mutex_lock(&r->lock);
		r->hook_pending = true;
		pthread_cond_signal(&r->hook_wake);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* Runs the hook after each list; lists that end while it runs are
 * coalesced into one more run. */
static void *hook_main(void *arg)
{
	struct refresher *r = arg;
	pthread_mutex_lock(&r->lock);
	for (;;) {
		while (!r->stopping && !r->hook_pending)
			pthread_cond_wait(&r->hook_wake, &r->lock);
		if (r->stopping)
			break;
		r->hook_pending = false;
		void (*hook)(void *) = r->hook;
		void *hook_arg = r->hook_arg;
		pthread_mutex_unlock(&r->lock);
		hook(hook_arg);
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int refresher_start(struct refresher **out, struct provider *p, struct state_cache *c, int period_s)
{
	struct refresher *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->provider = p;
	r->cache = c;
	r->period_s = period_s > 0 ? period_s : 1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->wake, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&r->hook_wake, NULL);
	int rc = pthread_create(&r->thread, NULL, refresher_main, r);
	if (rc) {
		pthread_cond_destroy(&r->hook_wake);
		pthread_cond_destroy(&r->wake);
		pthread_mutex_destroy(&r->lock);
		free(r);
		return -rc;
	}
	*out = r;
	return 0;
}

void refresher_kick(struct refresher *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->kicked = true;
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

int refresher_set_hook(struct refresher *r, void (*fn)(void *arg), void *arg)
{
	int rc = 0;
	pthread_mutex_lock(&r->lock);
	r->hook = fn;
	r->hook_arg = arg;
	if (!r->hook_started) {
		rc = -pthread_create(&r->hook_thread, NULL, hook_main, r);
		r->hook_started = rc == 0;
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}

void refresher_stop(struct refresher *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_signal(&r->wake);
	pthread_cond_signal(&r->hook_wake);
	pthread_mutex_unlock(&r->lock);
	pthread_join(r->thread, NULL);
	if (r->hook_started)
		pthread_join(r->hook_thread, NULL);
	pthread_cond_destroy(&r->hook_wake);
	pthread_cond_destroy(&r->wake);
	pthread_mutex_destroy(&r->lock);
	free(r);
}
