/* The state cache (include/state.h): one mutex, an array of entries. A few
 * thousand instances at most, so linear search is cheaper than a hash's
 * bookkeeping; the lock is never held across a provider call. */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "escape.h"
#include "state.h"

struct entry {
	struct instance inst;
	bool hidden;             /* destroyed through the mount: a tombstone */
	long long hidden_until;  /* tombstone expiry */
	long long pinned_until;  /* created through the mount: keep until listed */
	long long confirm_until; /* destroy armed until */
	char op[32];             /* running operation, "" if none */
	char *last_error;        /* malloc'd, NULL if none */
	char *report[2];         /* last migrate / rollback record */
	time_t updated;          /* wall clock: last confirmed by a list or a mutation */
};

struct state_cache {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	unsigned long generation;
	struct entry *items;
	size_t count, cap;
	/* Provider health: no list applied yet means `ls` cannot tell the
	 * truth (EIO rather than an empty directory). */
	bool listed;
	time_t failing_since;     /* wall clock; 0 while lists succeed */
	char failure[ERRMSG_MAX]; /* why the last list failed */
};

struct state_cache *state_new(void)
{
	struct state_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->changed, &ca);
	pthread_condattr_destroy(&ca);
	return c;
}

static void entry_clear(struct entry *e)
{
	free(e->last_error);
	free(e->report[0]);
	free(e->report[1]);
	memset(e, 0, sizeof(*e));
}

void state_free(struct state_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->count; i++)
		entry_clear(&c->items[i]);
	free(c->items);
	pthread_cond_destroy(&c->changed);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Any entry, hidden or not. */
static struct entry *find(struct state_cache *c, const char *name)
{
	for (size_t i = 0; i < c->count; i++)
		if (strcmp(c->items[i].inst.name, name) == 0)
			return &c->items[i];
	return NULL;
}

static struct entry *find_visible(struct state_cache *c, const char *name)
{
	struct entry *e = find(c, name);
	return e && !e->hidden ? e : NULL;
}

static struct entry *add(struct state_cache *c, const struct instance *inst)
{
	if (c->count == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 16;
		struct entry *n = realloc(c->items, ncap * sizeof(*n));
		if (!n)
			return NULL;
		c->items = n;
		c->cap = ncap;
	}
	struct entry *e = &c->items[c->count++];
	memset(e, 0, sizeof(*e));
	e->inst = *inst;
	return e;
}

static void drop(struct state_cache *c, struct entry *e)
{
	entry_clear(e);
	size_t i = (size_t)(e - c->items);
	memmove(&c->items[i], &c->items[i + 1], (c->count - i - 1) * sizeof(*e));
	c->count--;
}

/* A mutation through the mount: stale lists are discarded, waiters woken.
 * Called with the lock held. */
static void mutated(struct state_cache *c)
{
	c->generation++;
	pthread_cond_broadcast(&c->changed);
}

unsigned long state_generation(struct state_cache *c)
{
	pthread_mutex_lock(&c->lock);
	unsigned long g = c->generation;
	pthread_mutex_unlock(&c->lock);
	return g;
}

static bool listed(const struct instance_list *l, const char *name)
{
	for (size_t i = 0; i < l->count; i++)
		if (strcmp(l->items[i].name, name) == 0)
			return true;
	return false;
}

bool state_apply_list(struct state_cache *c, const struct instance_list *l, unsigned long gen,
                      long long now)
{
	pthread_mutex_lock(&c->lock);
	if (gen != c->generation) {
		pthread_mutex_unlock(&c->lock);
		return false;
	}
	/* Entries the list no longer shows: gone, unless just created here. */
	for (size_t i = 0; i < c->count;) {
		struct entry *e = &c->items[i];
		bool keep = listed(l, e->inst.name) || (!e->hidden && e->pinned_until > now) ||
		            (!e->hidden && e->op[0]); /* an operation holds it */
		if (e->hidden && e->hidden_until <= now)
			keep = false;
		if (keep)
			i++;
		else
			drop(c, e);
	}
	time_t wall = time(NULL);
	for (size_t i = 0; i < l->count; i++) {
		const struct instance *inst = &l->items[i];
		struct entry *e = find(c, inst->name);
		if (!e) {
			e = add(c, inst);
			if (e)
				e->updated = wall;
			continue;
		}
		if (e->hidden)
			continue; /* destroyed here; the provider has not caught up */
		/* While an operation runs here, its status (e.g. "deleting")
		 * is more current than the list. */
		char status[sizeof(e->inst.status)];
		memcpy(status, e->inst.status, sizeof(status));
		e->inst = *inst;
		if (e->op[0])
			memcpy(e->inst.status, status, sizeof(status));
		e->pinned_until = 0;
		e->updated = wall;
	}
	c->listed = true;
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
	return true;
}

bool state_get(struct state_cache *c, const char *name, struct instance *out)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e && out)
		*out = e->inst;
	pthread_mutex_unlock(&c->lock);
	return e != NULL;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int state_names(struct state_cache *c, char ***names, size_t *n)
{
	pthread_mutex_lock(&c->lock);
	char **v = calloc(c->count + 1, sizeof(*v));
	size_t k = 0;
	int rc = v ? 0 : -ENOMEM;
	for (size_t i = 0; v && i < c->count; i++) {
		if (c->items[i].hidden)
			continue;
		v[k] = strdup(c->items[i].inst.name);
		if (!v[k]) {
			rc = -ENOMEM;
			break;
		}
		k++;
	}
	pthread_mutex_unlock(&c->lock);
	if (rc) {
		for (size_t i = 0; v && i < k; i++)
			free(v[i]);
		free(v);
		return rc;
	}
	qsort(v, k, sizeof(*v), cmp_names);
	*names = v;
	*n = k;
	return 0;
}

size_t state_count(struct state_cache *c)
{
	pthread_mutex_lock(&c->lock);
	size_t n = 0;
	for (size_t i = 0; i < c->count; i++)
		n += !c->items[i].hidden;
	pthread_mutex_unlock(&c->lock);
	return n;
}

void state_put(struct state_cache *c, const struct instance *inst, long long now)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find(c, inst->name);
	if (e && e->hidden) {
		/* Re-created after a destroy: a new instance, nothing carried. */
		drop(c, e);
		e = NULL;
	}
	if (!e)
		e = add(c, inst);
	if (e) {
		e->inst = *inst;
		e->pinned_until = now + STATE_PIN_MS;
		e->updated = time(NULL);
	}
	mutated(c);
	pthread_mutex_unlock(&c->lock);
}

bool state_set_status(struct state_cache *c, const char *name, const char *status)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e) {
		snprintf(e->inst.status, sizeof(e->inst.status), "%s", status);
		mutated(c);
	}
	pthread_mutex_unlock(&c->lock);
	return e != NULL;
}

void state_remove(struct state_cache *c, const char *name, long long now)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find(c, name);
	if (e) {
		struct instance keep = e->inst;
		entry_clear(e);
		e->inst = keep;
		e->hidden = true;
		e->hidden_until = now + STATE_TOMBSTONE_MS;
	}
	mutated(c);
	pthread_mutex_unlock(&c->lock);
}

void state_set_error(struct state_cache *c, const char *name, const char *msg)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e) {
		free(e->last_error);
		e->last_error = NULL;
		/* One line, nothing that drives a terminal (escape.h). */
		size_t sz = msg && *msg ? ESCAPED_SIZE(strlen(msg)) : 0;
		if (sz && (e->last_error = malloc(sz)) != NULL)
			escape_message(msg, e->last_error, sz);
	}
	pthread_mutex_unlock(&c->lock);
}

void state_get_error(struct state_cache *c, const char *name, char *out, size_t outsz)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	snprintf(out, outsz, "%s", e && e->last_error ? e->last_error : "");
	pthread_mutex_unlock(&c->lock);
}

void state_confirm_arm(struct state_cache *c, const char *name, long long deadline)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e)
		e->confirm_until = deadline;
	pthread_mutex_unlock(&c->lock);
}

long long state_confirm_left(struct state_cache *c, const char *name, long long now)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	long long left = e && e->confirm_until > now ? e->confirm_until - now : 0;
	pthread_mutex_unlock(&c->lock);
	return left;
}

void state_confirm_clear(struct state_cache *c, const char *name)
{
	state_confirm_arm(c, name, 0);
}

int state_begin_op(struct state_cache *c, const char *name, const char *op, struct errmsg *err)
{
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (!e)
		rc = errmsg_set(err, -ENOENT, "no instance named %s", name);
	else if (e->op[0])
		rc = errmsg_set(err, -EBUSY, "%s refused: %s is already running on %s", op, e->op,
		                name);
	else
		snprintf(e->op, sizeof(e->op), "%s", op);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int state_check_idle(struct state_cache *c, const char *name, const char *op, struct errmsg *err)
{
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e && e->op[0])
		rc = errmsg_set(err, -EBUSY, "%s refused: %s is already running on %s", op, e->op,
		                name);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void state_end_op(struct state_cache *c, const char *name)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find(c, name);
	if (e)
		e->op[0] = '\0';
	pthread_mutex_unlock(&c->lock);
}

void state_set_report(struct state_cache *c, const char *name, int kind, const char *text)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e && (kind == 0 || kind == 1)) {
		free(e->report[kind]);
		e->report[kind] = text ? strdup(text) : NULL;
	}
	pthread_mutex_unlock(&c->lock);
}

bool state_get_report(struct state_cache *c, const char *name, int kind, struct buf *out)
{
	bool found = false;
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e && (kind == 0 || kind == 1) && e->report[kind]) {
		found = buf_puts(out, e->report[kind]) == 0;
	}
	pthread_mutex_unlock(&c->lock);
	return found;
}

int state_wait_settled(struct state_cache *c, const char *name, struct instance *out)
{
	int rc;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct entry *e = find_visible(c, name);
		if (!e) {
			rc = -ENOENT;
			break;
		}
		if (instance_status_settled(e->inst.status)) {
			*out = e->inst;
			rc = 0;
			break;
		}
		if (op_interrupted()) {
			rc = -EINTR;
			break;
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->changed, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

time_t state_updated(struct state_cache *c, const char *name)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	time_t t = e ? e->updated : 0;
	pthread_mutex_unlock(&c->lock);
	return t;
}

void state_note_list(struct state_cache *c, int rc, const char *reason)
{
	pthread_mutex_lock(&c->lock);
	if (rc == 0) {
		c->failing_since = 0;
		c->failure[0] = '\0';
	} else {
		if (!c->failing_since)
			c->failing_since = time(NULL);
		snprintf(c->failure, sizeof(c->failure), "%s", reason && *reason ? reason : "");
	}
	pthread_mutex_unlock(&c->lock);
}

static void format_utc(time_t t, char *out, size_t outsz)
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool state_listed(struct state_cache *c, char *why, size_t whysz)
{
	pthread_mutex_lock(&c->lock);
	bool listed = c->listed;
	if (!listed && why && whysz)
		snprintf(why, whysz, "%s", c->failure[0] ? c->failure : "no answer yet");
	pthread_mutex_unlock(&c->lock);
	return listed;
}

int state_health(struct state_cache *c, struct buf *out)
{
	char when[32];
	int rc;
	pthread_mutex_lock(&c->lock);
	if (!c->failing_since && c->listed) {
		rc = buf_puts(out, "ok\n");
	} else {
		format_utc(c->failing_since ? c->failing_since : time(NULL), when, sizeof(when));
		rc = buf_printf(out, "unreachable since %s: %s\n", when,
		                c->failure[0] ? c->failure : "no list of instances yet");
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}
