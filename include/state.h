/* The in-memory state cache: what getattr, readdir, open and read serve.
 * The background refresher fills it from one provider list per period;
 * mutations made through the mount update it at once. Nothing here blocks
 * on a provider. Times are now_ms() values passed in, so expiry is testable. */
#ifndef DBOSFS_STATE_H
#define DBOSFS_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "common.h"
#include "instance.h"

struct state_cache;

/* How long an instance created through the mount is kept although the
 * provider's list does not show it yet (the cloud may lag), and how long a
 * destroyed one stays hidden although the list still shows it. */
#define STATE_PIN_MS       (60 * 1000LL)
#define STATE_TOMBSTONE_MS (10 * 60 * 1000LL)

struct state_cache *state_new(void);
void state_free(struct state_cache *c);

/* The mutation counter: the refresher reads it before listing and passes it
 * to state_apply_list, which discards the list if a mutation happened in
 * between (the list may predate it). */
unsigned long state_generation(struct state_cache *c);
/* Returns true if applied, false if discarded as stale. */
bool state_apply_list(struct state_cache *c, const struct instance_list *l, unsigned long gen,
                      long long now);

/* Copies a visible instance; false if there is none. */
bool state_get(struct state_cache *c, const char *name, struct instance *out);
/* Visible names, sorted; the caller frees each and the array. */
int state_names(struct state_cache *c, char ***names, size_t *n);
size_t state_count(struct state_cache *c);
/* Copies of the visible instances, sorted by name (one consistent moment);
 * 0 or -ENOMEM. The caller frees out with instance_list_free. */
int state_list(struct state_cache *c, struct instance_list *out);

/* Told (outside the lock) the name of every instance whose saved secret
 * must go: it left the list for two lists in a row (or after it was seen
 * deleting), was made again elsewhere (back to provisioning, another host
 * or user), or a tombstone ended because the name is back. After the
 * second applied list it is called once with NULL: forget secrets of
 * every name the cache does not know (state_known: neither an entry nor
 * a name the last list omitted for the first time). */
typedef void (*state_forget_fn)(void *arg, const char *name);
void state_on_forget(struct state_cache *c, state_forget_fn fn, void *arg);
/* Any entry, visible or a tombstone. */
bool state_known(struct state_cache *c, const char *name);
/* Removes an entry outright (no tombstone): a mkdir refused at once. */
void state_drop(struct state_cache *c, const char *name);
/* A provision that failed in the background: status "failed", the message
 * in last_error, kept until a list shows the name or rmdir removes it. */
void state_mark_failed(struct state_cache *c, const char *name, const char *msg);

/* A mutation through the mount: insert or replace, visible at once. */
void state_put(struct state_cache *c, const struct instance *inst, long long now);
/* Sets just the status (e.g. "deleting"); false if no such instance. */
bool state_set_status(struct state_cache *c, const char *name, const char *status);
/* Destroyed through the mount: hide it (tombstone) until STATE_TOMBSTONE_MS
 * passed, or a list shows the name again (not deleting) after one showed
 * it gone or deleting, or shows it provisioning: made again. */
void state_remove(struct state_cache *c, const char *name, long long now);

/* last_error of an instance; "" when none. */
void state_set_error(struct state_cache *c, const char *name, const char *msg);
void state_get_error(struct state_cache *c, const char *name, char *out, size_t outsz);

/* Destroy confirmation: armed until deadline (ms). */
void state_confirm_arm(struct state_cache *c, const char *name, long long deadline);
/* Remaining ms of a live confirmation, or 0 if none/expired. */
long long state_confirm_left(struct state_cache *c, const char *name, long long now);
void state_confirm_clear(struct state_cache *c, const char *name);

/* One operation at a time per instance (migrate, rollback, destroy, reset):
 * -EBUSY with a message naming the running one. */
int state_begin_op(struct state_cache *c, const char *name, const char *op, struct errmsg *e);
void state_end_op(struct state_cache *c, const char *name);
/* Same refusal as state_begin_op, without starting anything: writers of one
 * control file queue in the kernel (inode lock) before write() is called,
 * so open() must refuse while an operation runs. */
int state_check_idle(struct state_cache *c, const char *name, const char *op, struct errmsg *e);

/* The record of the last migrate (kind 0) / rollback (kind 1) run. */
void state_set_report(struct state_cache *c, const char *name, int kind, const char *text);
/* Appends the report to out; false if none. */
bool state_get_report(struct state_cache *c, const char *name, int kind, struct buf *out);
/* The report of a run still going: it only grows until state_set_report
 * stores the final one. *running (may be NULL) says which it is. */
void state_set_live_report(struct state_cache *c, const char *name, int kind, const char *text);
bool state_get_live_report(struct state_cache *c, const char *name, int kind, struct buf *out,
                           bool *running);

/* Wall-clock time the instance was last confirmed by a provider list (or
 * changed through the mount); 0 if there is no such instance. */
time_t state_updated(struct state_cache *c, const char *name);
/* The outcome of every provider list (0 or -errno with its message): the
 * first failure starts "unreachable since", a success ends it. */
void state_note_list(struct state_cache *c, int rc, const char *reason);
/* False until a list has been applied (`ls` then fails with EIO rather
 * than show an empty mount); why gets the last failure. */
bool state_listed(struct state_cache *c, char *why, size_t whysz);
/* .dbosfs/health: "ok\n" or "unreachable since TIME: REASON\n". */
int state_health(struct state_cache *c, struct buf *out);

/* Blocks until the instance is visible with a settled status (copied to
 * out), polling op_interrupted() every 100 ms. 0, -ENOENT (gone), -EINTR. */
int state_wait_settled(struct state_cache *c, const char *name, struct instance *out);

#endif
