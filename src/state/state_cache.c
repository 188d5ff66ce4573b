/* The state cache (include/state.h): one mutex, an array of entries kept
 * sorted by name, so lookups are binary searches and applying a list of
 * 100,000 instances is one sort and one merge. The lock is never held
 * across a provider call. */
#include <errno.h>
#include <limits.h>
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
	bool seen_gone;          /* tombstone: a list no longer showed it (or deleting) */
	char op[32];             /* running operation, "" if none */
	char *last_error;        /* malloc'd, NULL if none */
	char *report[2];         /* last migrate / rollback record */
	time_t updated;          /* wall clock: last confirmed by a list or a mutation */
	bool report_running[2];  /* ... of a run still going (it grows) */
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
	state_forget_fn forget;
	void *forget_arg;
	/* Lists applied so far (counted up to 2: the sweep of unknown
	 * secrets follows the second). */
	int lists_applied;
	bool listed_swept;
	/* Instances the last list omitted without a deletion seen: their
	 * secrets are forgotten only if the next list omits them too (or
	 * shows the name made again elsewhere). A single 200 list that leaves
	 * names out (a lagging replica, a paging glitch) costs no password. */
	struct instance *suspects;
	size_t nsuspects;
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
	free(c->suspects);
	pthread_cond_destroy(&c->changed);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Index of name in the sorted items, or where it would go (*found false). */
static size_t locate(struct state_cache *c, const char *name, bool *found)
{
	size_t lo = 0, hi = c->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int cmp = strcmp(c->items[mid].inst.name, name);
		if (cmp == 0) {
			*found = true;
			return mid;
		}
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* Any entry, hidden or not. */
static struct entry *find(struct state_cache *c, const char *name)
{
	bool found;
	size_t i = locate(c, name, &found);
	return found ? &c->items[i] : NULL;
}

static int reserve(struct state_cache *c, size_t want)
{
	if (want <= c->cap)
		return 0;
	size_t ncap = c->cap ? c->cap : 16;
	while (ncap < want)
		ncap *= 2;
	struct entry *n = realloc(c->items, ncap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	c->items = n;
	c->cap = ncap;
	return 0;
}

static struct entry *find_visible(struct state_cache *c, const char *name)
{
	struct entry *e = find(c, name);
	return e && !e->hidden ? e : NULL;
}

/* Inserts at its sorted place (the name must not be there yet). */
static struct entry *add(struct state_cache *c, const struct instance *inst)
{
	bool found;
	size_t i = locate(c, inst->name, &found);
	if (found || reserve(c, c->count + 1) < 0)
		return NULL;
	memmove(&c->items[i + 1], &c->items[i], (c->count - i) * sizeof(c->items[0]));
	c->count++;
	struct entry *e = &c->items[i];
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

static int cmp_instance_ptrs(const void *a, const void *b)
{
	const struct instance *x = *(const struct instance *const *)a;
	const struct instance *y = *(const struct instance *const *)b;
	return strcmp(x->name, y->name);
}

/* Names whose saved secrets must go, collected under the lock and handed
 * to the forget hook after it. */
struct forget_list {
	char (*names)[sizeof(((struct instance *)0)->name)];
	size_t count, cap;
};

static void forget_later(struct forget_list *f, const char *name)
{
	if (f->count == f->cap) {
		size_t ncap = f->cap ? f->cap * 2 : 16;
		void *n = realloc(f->names, ncap * sizeof(f->names[0]));
		if (!n)
			return; /* the secret then outlives its instance; no harm to state */
		f->names = n;
		f->cap = ncap;
	}
	snprintf(f->names[f->count++], sizeof(f->names[0]), "%s", name);
}

/* Did the instance behind this name change identity (destroyed and made
 * again elsewhere) between two lists? The API has no instance id, so the
 * signs are: back to provisioning, or another host or user. */
static bool identity_changed(const struct instance *was, const struct instance *now)
{
	if (strcmp(now->status, "provisioning") == 0 && was->status[0] &&
	    strcmp(was->status, "provisioning") != 0)
		return true;
	if (was->host[0] && now->host[0] && strcmp(was->host, now->host) != 0)
		return true;
	return was->username[0] && now->username[0] && strcmp(was->username, now->username) != 0;
}

/* An entry the list shows. Returns false to drop it (never). */
static void apply_listed(struct entry *e, const struct instance *inst, long long now, time_t wall,
                         struct forget_list *f)
{
	if (e->hidden) {
		/* A tombstone ends as soon as the name is back after it was seen
		 * gone (or deleting), or comes back provisioning: made again. */
		bool deleting = strcmp(inst->status, "deleting") == 0;
		if (deleting)
			e->seen_gone = true;
		if (e->hidden_until > now &&
		    (deleting || !(e->seen_gone || strcmp(inst->status, "provisioning") == 0)))
			return; /* destroyed here; the provider has not caught up */
		entry_clear(e);
		e->inst = *inst;
		e->updated = wall;
		forget_later(f, inst->name);
		return;
	}
	if (!e->op[0] && identity_changed(&e->inst, inst))
		forget_later(f, inst->name);
	/* While an operation runs here, its status (e.g. "deleting") is more
	 * current than the list. */
	char status[sizeof(e->inst.status)];
	memcpy(status, e->inst.status, sizeof(status));
	e->inst = *inst;
	if (e->op[0])
		memcpy(e->inst.status, status, sizeof(status));
	e->pinned_until = 0;
	e->updated = wall;
}

/* Instances omitted by the list being applied, for the next one. */
struct suspect_list {
	struct instance *items;
	size_t count, cap;
};

static void suspect_later(struct suspect_list *s, const struct instance *inst,
                          struct forget_list *f)
{
	if (s->count == s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 16;
		void *n = realloc(s->items, ncap * sizeof(s->items[0]));
		if (!n) {
			forget_later(f, inst->name); /* as before this grace existed */
			return;
		}
		s->items = n;
		s->cap = ncap;
	}
	s->items[s->count++] = *inst;
}

/* An entry the list does not show: kept while pinned (created here, the
 * provider may lag), held by an operation, or a live tombstone. Else it
 * goes from view at once, and its secret with it only if it was last seen
 * deleting; otherwise the next list must confirm the omission. */
static bool keep_unlisted(struct entry *e, long long now, struct forget_list *f,
                          struct suspect_list *s)
{
	if (e->hidden) {
		e->seen_gone = true;
		return e->hidden_until > now;
	}
	if (e->pinned_until > now || e->op[0])
		return true;
	if (strcmp(e->inst.status, "deleting") == 0)
		forget_later(f, e->inst.name);
	else
		suspect_later(s, &e->inst, f);
	return false;
}

/* The listed instance named name (sorted[0..n) by name), or NULL. */
static const struct instance *listed_named(const struct instance **sorted, size_t n,
                                           const char *name)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int cmp = strcmp(sorted[mid]->name, name);
		if (cmp == 0)
			return sorted[mid];
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

bool state_apply_list(struct state_cache *c, const struct instance_list *l, unsigned long gen,
                      long long now)
{
	const struct instance **sorted = NULL;
	struct forget_list f = {0};
	struct suspect_list sus = {0};
	size_t n = 0;
	if (l->count) {
		sorted = malloc(l->count * sizeof(*sorted));
		if (!sorted)
			return false;
		for (size_t j = 0; j < l->count; j++)
			sorted[j] = &l->items[j];
		qsort(sorted, l->count, sizeof(*sorted), cmp_instance_ptrs);
		/* A name twice in one list: the first wins. */
		for (size_t j = 0; j < l->count; j++)
			if (n == 0 || strcmp(sorted[n - 1]->name, sorted[j]->name) != 0)
				sorted[n++] = sorted[j];
	}

	pthread_mutex_lock(&c->lock);
	if (gen != c->generation) {
		pthread_mutex_unlock(&c->lock);
		free(sorted);
		return false;
	}
	time_t wall = time(NULL);
	if (c->lists_applied < 2)
		c->lists_applied++;
	bool sweep = c->lists_applied == 2 && !c->listed_swept;
	/* Pass 1, in place: update listed entries, drop the unlisted ones that
	 * are gone, count the names that are new. */
	size_t w = 0, j = 0, fresh = 0;
	for (size_t i = 0; i < c->count; i++) {
		struct entry *e = &c->items[i];
		int cmp = 1;
		while (j < n && (cmp = strcmp(sorted[j]->name, e->inst.name)) < 0) {
			fresh++;
			j++;
		}
		bool keep = true;
		if (j < n && cmp == 0) {
			apply_listed(e, sorted[j], now, wall, &f);
			j++;
		} else {
			keep = keep_unlisted(e, now, &f, &sus);
		}
		if (!keep)
			entry_clear(e);
		else if (w != i)
			c->items[w] = *e;
		w += keep;
	}
	fresh += n - j;
	c->count = w;
	/* Pass 2: merge the new names in from the back, so nothing moves
	 * twice and no second array is needed. */
	if (fresh && reserve(c, w + fresh) == 0) {
		size_t i = w, k = w + fresh;
		j = n;
		while (j > 0) {
			const struct instance *inst = sorted[j - 1];
			int cmp = i > 0 ? strcmp(c->items[i - 1].inst.name, inst->name) : -1;
			if (cmp > 0) {
				c->items[--k] = c->items[--i];
			} else if (cmp == 0) {
				c->items[--k] = c->items[--i];
				j--;
			} else {
				struct entry *e = &c->items[--k];
				memset(e, 0, sizeof(*e));
				e->inst = *inst;
				e->updated = wall;
				j--;
			}
		}
		c->count = w + fresh;
	}
	/* Omitted by the list before: forgotten if omitted again (unless the
	 * name was made here meanwhile), or if back as another instance. */
	for (size_t k = 0; k < c->nsuspects; k++) {
		const struct instance *was = &c->suspects[k];
		const struct instance *now_listed = listed_named(sorted, n, was->name);
		if (now_listed ? identity_changed(was, now_listed) : !find(c, was->name))
			forget_later(&f, was->name);
	}
	free(c->suspects);
	c->suspects = sus.items;
	c->nsuspects = sus.count;
	c->listed = true;
	if (sweep)
		c->listed_swept = true;
	pthread_cond_broadcast(&c->changed);
	state_forget_fn forget = c->forget;
	void *arg = c->forget_arg;
	pthread_mutex_unlock(&c->lock);
	free(sorted);
	if (forget) {
		for (size_t k = 0; k < f.count; k++)
			forget(arg, f.names[k]);
		/* After the second list, not the first: a name one list left
		 * out is still a suspect (state_known), not a stranger. */
		if (sweep)
			forget(arg, NULL);
	}
	free(f.names);
	return true;
}

void state_on_forget(struct state_cache *c, state_forget_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->forget = fn;
	c->forget_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

bool state_known(struct state_cache *c, const char *name)
{
	pthread_mutex_lock(&c->lock);
	bool known = find(c, name) != NULL;
	for (size_t k = 0; !known && k < c->nsuspects; k++)
		known = strcmp(c->suspects[k].name, name) == 0;
	pthread_mutex_unlock(&c->lock);
	return known;
}

void state_drop(struct state_cache *c, const char *name)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find(c, name);
	if (e)
		drop(c, e);
	mutated(c);
	pthread_mutex_unlock(&c->lock);
}

void state_mark_failed(struct state_cache *c, const char *name, const char *msg)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e) {
		snprintf(e->inst.status, sizeof(e->inst.status), "failed");
		free(e->last_error);
		e->last_error = msg && *msg ? strdup(msg) : NULL;
		e->pinned_until = LLONG_MAX; /* until a list shows it, or rmdir */
		e->updated = time(NULL);
		mutated(c);
	}
	pthread_mutex_unlock(&c->lock);
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
	/* items are sorted by name already */
	*names = v;
	*n = k;
	return 0;
}

static int cmp_instances(const void *a, const void *b)
{
	return strcmp(((const struct instance *)a)->name, ((const struct instance *)b)->name);
}

int state_list(struct state_cache *c, struct instance_list *out)
{
	int rc = 0;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->count && !rc; i++)
		if (!c->items[i].hidden)
			rc = instance_list_push(out, &c->items[i].inst);
	pthread_mutex_unlock(&c->lock);
	if (rc) {
		instance_list_free(out);
		return rc;
	}
	if (out->count)
		qsort(out->items, out->count, sizeof(*out->items), cmp_instances);
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

static void set_report(struct state_cache *c, const char *name, int kind, const char *text,
                       bool running)
{
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e && (kind == 0 || kind == 1)) {
		free(e->report[kind]);
		e->report[kind] = text ? strdup(text) : NULL;
		e->report_running[kind] = running && e->report[kind];
	}
	pthread_mutex_unlock(&c->lock);
}

void state_set_report(struct state_cache *c, const char *name, int kind, const char *text)
{
	set_report(c, name, kind, text, false);
}

void state_set_live_report(struct state_cache *c, const char *name, int kind, const char *text)
{
	set_report(c, name, kind, text, true);
}

bool state_get_live_report(struct state_cache *c, const char *name, int kind, struct buf *out,
                           bool *running)
{
	bool found = false;
	pthread_mutex_lock(&c->lock);
	struct entry *e = find_visible(c, name);
	if (e && (kind == 0 || kind == 1) && e->report[kind]) {
		found = buf_puts(out, e->report[kind]) == 0;
		if (running)
			*running = e->report_running[kind];
	}
	pthread_mutex_unlock(&c->lock);
	return found;
}

bool state_get_report(struct state_cache *c, const char *name, int kind, struct buf *out)
{
	return state_get_live_report(c, name, kind, out, NULL);
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
