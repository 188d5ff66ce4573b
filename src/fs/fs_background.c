/* Provider calls that may outlast a short grace (cloud mkdir and rmdir).
 * The kernel holds the root directory's lock for a whole mkdir/rmdir, so a
 * call that waits on the network would freeze `ls` and every lookup of the
 * mount. Such a call runs in a thread of its own; the FUSE request waits
 * for it at most grace_ms. An answer within the grace keeps its errno; past
 * it, the request returns and the worker finishes the job (its outcome
 * goes to the state cache and last_error).
 *
 * Lock order: a call's lock, then the state cache's (via the callbacks). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs.h"
#include "log.h"

struct bg_call {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	int refs;            /* the requester and the worker */
	bool done, detached;
	atomic_bool cancel; /* Ctrl-C of the requester, or unmount */
	int rc;
	struct errmsg e;
	struct dbosfs *fs;
	const struct bg_ops *ops;
	void *arg;
	struct bg_call *next; /* in active_calls */
};

/* Every call whose worker still runs: unmount cancels and waits for them. */
static pthread_mutex_t active_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t active_cond = PTHREAD_COND_INITIALIZER;
static struct bg_call *active_calls;

static void call_unref(struct bg_call *c)
{
	pthread_mutex_lock(&c->lock);
	bool last = --c->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (!last)
		return;
	if (c->ops->free_arg)
		c->ops->free_arg(c->arg);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static void *worker(void *arg)
{
	struct bg_call *c = arg;
	struct errmsg e = {{0}};
	op_set_cancel_flag(&c->cancel);
	int rc = c->ops->run(c->fs, c->arg, &e);
	op_set_cancel_flag(NULL);

	pthread_mutex_lock(&c->lock);
	c->done = true;
	c->rc = rc;
	c->e = e;
	bool detached = c->detached;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	/* The requester has returned: the outcome is ours to record. */
	if (detached)
		c->ops->finish(c->fs, c->arg, rc, &e, true);

	pthread_mutex_lock(&active_lock);
	for (struct bg_call **p = &active_calls; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	pthread_cond_broadcast(&active_cond);
	pthread_mutex_unlock(&active_lock);
	call_unref(c);
	return NULL;
}

static void deadline_in(struct timespec *ts, long long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int fs_run_with_grace(struct dbosfs *fs, long long grace_ms, const struct bg_ops *ops, void *arg,
                      bool *detached, struct errmsg *e)
{
	*detached = false;
	if (grace_ms < 0) {
		int rc = ops->run(fs, arg, e);
		rc = ops->finish(fs, arg, rc, e, false);
		if (ops->free_arg)
			ops->free_arg(arg);
		return rc;
	}
	struct bg_call *c = calloc(1, sizeof(*c));
	if (!c) {
		int rc = ops->finish(fs, arg, errmsg_set(e, -ENOMEM, "out of memory"), e, false);
		if (ops->free_arg)
			ops->free_arg(arg);
		return rc;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->refs = 2;
	c->fs = fs;
	c->ops = ops;
	c->arg = arg;

	pthread_mutex_lock(&active_lock);
	c->next = active_calls;
	active_calls = c;
	pthread_mutex_unlock(&active_lock);
	pthread_attr_t attr;
	pthread_t tid;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	int err = pthread_create(&tid, &attr, worker, c);
	pthread_attr_destroy(&attr);
	if (err) {
		pthread_mutex_lock(&active_lock);
		for (struct bg_call **p = &active_calls; *p; p = &(*p)->next)
			if (*p == c) {
				*p = c->next;
				break;
			}
		pthread_mutex_unlock(&active_lock);
		int rc = ops->finish(
		    fs, arg, errmsg_set(e, -err, "cannot start a thread: %s", strerror(err)), e,
		    false);
		c->refs = 1;
		call_unref(c);
		return rc;
	}

	long long deadline = now_ms() + grace_ms;
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (c->done) {
			rc = c->rc;
			*e = c->e;
			break;
		}
		/* Ctrl-C within the grace: the worker gives up (its requests
		 * poll the same flag) and its answer, EINTR, is ours. */
		if (!atomic_load(&c->cancel) && op_interrupted())
			atomic_store(&c->cancel, true);
		long long left = deadline - now_ms();
		if (left <= 0 && !atomic_load(&c->cancel)) {
			c->detached = true;
			if (ops->detach)
				ops->detach(fs, arg);
			break;
		}
		struct timespec ts;
		deadline_in(&ts, left > 0 && left < 20 ? left : 20);
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
	}
	*detached = c->detached;
	pthread_mutex_unlock(&c->lock);
	if (!*detached)
		rc = ops->finish(fs, arg, rc, e, false);
	call_unref(c);
	return rc;
}

void fs_background_drain(void)
{
	pthread_mutex_lock(&active_lock);
	if (active_calls)
		log_event("unmounting: stopping %s still running in the background",
		          active_calls->next ? "operations" : "an operation");
	while (active_calls) {
		for (struct bg_call *c = active_calls; c; c = c->next)
			atomic_store(&c->cancel, true);
		pthread_cond_wait(&active_cond, &active_lock);
	}
	pthread_mutex_unlock(&active_lock);
}
