/* The background refresher: one provider list every period, applied to the
 * state cache. Failures keep the last known state and are logged once when
 * they start (and when the message changes), and once when they end. */
#ifndef DBOSFS_REFRESHER_H
#define DBOSFS_REFRESHER_H

#include "provider.h"
#include "state.h"

struct refresher;

/* One synchronous refresh (used once before serving). 0 or -errno. */
int refresher_refresh_once(struct provider *p, struct state_cache *c, struct errmsg *e);
int refresher_start(struct refresher **out, struct provider *p, struct state_cache *c,
                    int period_s);
/* Ask for a refresh soon (a waiter wants fresh state). */
void refresher_kick(struct refresher *r);
void refresher_stop(struct refresher *r);
/* Runs fn(arg) after every refresh (the lists of NAME/databases/), in a
 * thread of its own so that a slow hook never delays the next list; lists
 * that end while it runs make one more run. One hook, set once after
 * refresher_start. 0 or -errno (the thread could not start). */
int refresher_set_hook(struct refresher *r, void (*fn)(void *arg), void *arg);

#endif
