/* The local provider's threads here: the supervisor (reaps our
 * postmasters, restarts the ones that die, retries failed ones slowly),
 * two probers (once per refresh period, a look at every running server,
 * so a hung one shows as "unresponsive": one for our own servers, one for
 * linked ones) and the preparer (keeps a template and a warm spare ready
 * so provisioning is fast). */
#include "local_internal.h"
#include "log.h"
#include "proc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

void timed_wait(struct local_provider *lp, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&lp->cond, &lp->lock, &ts);
}

/* Caller holds the lock; li is not busy and has a pid. */
static void reap_if_exited(struct local_instance *li)
{
	int st = 0;
	pid_t r = waitpid(li->pid, &st, WNOHANG);

	if (r == 0 || (r < 0 && errno != ECHILD))
		return;
	li->pid = 0;
	if (!li->want_running)
		return;
	char how[64];
	proc_describe_status(st, how, sizeof(how));
	li->failures++;
	li->next_start_ms = now_ms() + local_backoff_ms(li->failures);
	set_status(li, "restarting");
	log_error("local: instance %s: server exited unexpectedly (%s); restarting", li->name, how);
}

/* li has failed too often (or cannot be started by retrying soon): report
 * "failed" and leave it to the slow background retries. Caller holds the
 * lock. */
static void enter_failed_locked(struct local_provider *lp, struct local_instance *li,
                                const char *reason)
{
	long long delay = local_retry_ms(li->slow_retries + 1, lp->retry_first_ms);

	li->slow = true;
	li->episode_retries = 0;
	li->next_start_ms = now_ms() + delay;
	set_status(li, "failed");
	if (reason)
		log_error("local: instance %s: gave up: %s; retrying in the background in %lld s",
		          li->name, reason, delay / 1000);
	else
		log_error("local: instance %s: gave up after %d failed starts; see "
		          "%s/instances/%s/server.log; retrying in the background in %lld s",
		          li->name, li->failures, lp->root, li->name, delay / 1000);
}

/* One start (or background retry) of li, which is not busy and due. Caller
 * holds the lock; it is released while the server starts. */
static void supervise_start_locked(struct local_provider *lp, struct local_instance *li)
{
	struct errmsg e;
	bool restart = li->slow || strcmp(li->status, "restarting") == 0;
	bool retry = li->slow;

	if (retry) {
		li->slow_retries++;
		/* Only the first retry of an episode and the recovery are
		 * logged: a retry every few minutes for days is no news. */
		if (li->episode_retries++ == 0)
			log_event("local: instance %s: retrying the start in the background (later "
			          "retries are logged only when one succeeds)",
			          li->name);
		set_status(li, "restarting");
	}
	li->busy = true;
	pthread_mutex_unlock(&lp->lock);
	errmsg_clear(&e);
	int rc = instance_start(lp, li, &e);
	if (rc == 0 && li->resync_password) {
		/* Owned (busy): the flag is ours to read and clear. */
		rc = local_resync_password(lp, li, &e);
		if (rc == 0) {
			li->resync_password = false;
		} else {
			pg_server_stop(li->pid, LOCAL_STOP_TIMEOUT_MS);
			pthread_mutex_lock(&lp->lock);
			li->pid = 0;
			pthread_mutex_unlock(&lp->lock);
		}
	}
	pthread_mutex_lock(&lp->lock);
	li->busy = false;
	pthread_cond_broadcast(&lp->cond);
	if (rc == 0) {
		mark_running_locked(lp, li);
		if (retry)
			log_event("local: instance %s is available again after %d failed starts "
			          "(port %d)",
			          li->name, li->failures, li->port);
		else
			log_event("local: instance %s %s on port %d", li->name,
			          restart ? "restarted" : "started", li->port);
		li->slow = false;
		return;
	}
	if (lp->stopping || li->cancel)
		return; /* stop or destroy takes over */
	li->failures++;
	if (retry) {
		set_status(li, "failed");
		li->next_start_ms =
		    now_ms() + local_retry_ms(li->slow_retries + 1, lp->retry_first_ms);
		if (li->episode_retries == 1)
			log_error("local: instance %s: background retry failed: %s", li->name,
			          e.text);
	} else if (li->give_up) {
		enter_failed_locked(lp, li, e.text);
	} else {
		li->next_start_ms = now_ms() + local_backoff_ms(li->failures);
		set_status(li, "restarting");
		log_error("local: instance %s: %s", li->name, e.text);
	}
}

void *supervisor_main(void *arg)
{
	struct local_provider *lp = arg;

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		for (struct local_instance *li = lp->instances; li && !lp->stopping;
		     li = li->next) {
			/* cancel: a destroy is waiting to take it over. */
			if (li->busy || li->cancel)
				continue;
			if (li->pid > 0) {
				reap_if_exited(li);
				/* Stable for a minute: past crashes and slow
				 * retries are forgiven (not at once: a server that
				 * starts and then crashes must not loop fast). */
				if (li->pid > 0 && (li->failures || li->slow_retries) &&
				    now_ms() - li->up_since_ms > 60000) {
					li->failures = 0;
					li->slow_retries = 0;
				}
			}
			if (li->pid > 0 || !li->want_running)
				continue;
			if (!li->slow && li->failures >= LOCAL_MAX_FAILURES) {
				enter_failed_locked(lp, li, NULL);
				continue;
			}
			if (now_ms() < li->next_start_ms)
				continue;
			supervise_start_locked(lp, li);
		}
		if (!lp->stopping)
			timed_wait(lp, 100);
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}

struct probe_target {
	char name[32];
	unsigned long long run_id;
	char sock[PATH_MAX];
	char user[64];
	pid_t pid;
};

/* The state letter of /proc/PID/stat ('R', 'S', 'D', 'T', ...); 0 when
 * unreadable. */
static char proc_state(pid_t pid)
{
	char path[64], text[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	char *rp = strrchr(text, ')');
	return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* Snapshot of the running servers to probe, in two parallel arrays (the
 * probes point into the targets): the first *nask are asked for an
 * answer this period, the others only have their process state read
 * (local_probe_ask_due). Caller holds the lock. */
static size_t probe_collect_locked(struct local_provider *lp, bool linked,
                                   struct probe_target **tout, struct pg_probe **pout, size_t *nask)
{
	size_t n = 0, i = 0, front = 0, back;
	long long now = now_ms();

	*tout = NULL;
	*pout = NULL;
	for (struct local_instance *li = lp->instances; li; li = li->next)
		n += !li->busy && !li->hidden && li->linked == linked && (li->pid > 0 || linked);
	if (!n)
		return 0;
	struct probe_target *t = calloc(n, sizeof(*t));
	struct pg_probe *p = calloc(n, sizeof(*p));
	if (!t || !p) {
		free(t);
		free(p);
		return 0;
	}
	back = n;
	for (struct local_instance *li = lp->instances; li && i < n; li = li->next) {
		if (li->busy || li->hidden || li->linked != linked || (li->pid <= 0 && !linked))
			continue;
		/* A linked server has no process of ours to look at: asked every
		 * period, as before. */
		bool ask =
		    li->linked || local_probe_ask_due(now, li->probe_asked_ms, li->probe_misses,
		                                      strcmp(li->status, "unresponsive") == 0,
		                                      lp->probe_period_ms);
		size_t k = ask ? front++ : --back;
		if (ask)
			li->probe_asked_ms = now;
		snprintf(t[k].name, sizeof(t[k].name), "%s", li->name);
		snprintf(t[k].user, sizeof(t[k].user), "%s", li->username);
		t[k].run_id = li->run_id;
		t[k].pid = li->pid;
		/* A linked server is asked over TCP at its host (libpq takes a
		 * host name where a socket directory would go). */
		if (li->linked)
			snprintf(t[k].sock, sizeof(t[k].sock), "%s", li->host);
		else
			inst_paths(lp, li->name, NULL, NULL, t[k].sock, NULL);
		p[k].sockdir = t[k].sock;
		p[k].port = li->port;
		p[k].user = t[k].user;
		i++;
	}
	*tout = t;
	*pout = p;
	*nask = front;
	return n;
}

/* The probes that only read the process state: a stopped postmaster
 * answers nobody, anything else is taken as running until the next real
 * probe. */
static void probe_states(struct probe_target *t, struct pg_probe *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char st = proc_state(t[i].pid);
		p[i].ours = false;
		p[i].ok = !local_proc_state_stopped(st);
		if (p[i].ok)
			p[i].reason[0] = '\0';
		else
			snprintf(p[i].reason, sizeof(p[i].reason),
			         "its process is stopped (state %c)", st);
	}
}

/* A linked server (never ours to restart): "checking" until its first
 * probe, then available while it answers and unresponsive after
 * LOCAL_PROBE_MISSES unanswered probes (or at once, if the first probe
 * is unanswered). Caller holds the lock. */
static void probe_linked_locked(struct local_instance *li, const struct pg_probe *probe)
{
	bool first = strcmp(li->status, "checking") == 0;
	bool unresponsive = strcmp(li->status, "unresponsive") == 0;

	if (first) {
		li->probe_misses = 0;
		set_status(li, probe->ok ? "available" : "unresponsive");
		if (!probe->ok)
			log_error(
			    "local: linked instance %s (%s:%d) does not answer (%s); status is "
			    "unresponsive",
			    li->name, li->host, li->port, probe->reason);
		return;
	}
	switch (local_probe_verdict(unresponsive, probe->ok, &li->probe_misses)) {
	case PROBE_NOW_UNRESPONSIVE:
		set_status(li, "unresponsive");
		log_error("local: linked instance %s (%s:%d) did not answer %d probes in a row "
		          "(%s); status is unresponsive",
		          li->name, li->host, li->port, LOCAL_PROBE_MISSES, probe->reason);
		break;
	case PROBE_RESPONSIVE_AGAIN:
		set_status(li, "available");
		log_event("local: linked instance %s answers again; status is available", li->name);
		break;
	case PROBE_KEEP:
		break;
	}
}

/* Applies one probe's outcome, unless the instance changed meanwhile
 * (destroyed, restarted, owned by an operation). Caller holds the lock. */
static void probe_apply_locked(struct local_provider *lp, const struct probe_target *t,
                               const struct pg_probe *probe)
{
	struct local_instance *li = find_locked(lp, t->name);

	if (li && li->linked && li->run_id == t->run_id && !li->busy && !li->hidden &&
	    !probe->ours) {
		probe_linked_locked(li, probe);
		return;
	}
	if (!li || li->run_id != t->run_id || li->busy || li->hidden || li->pid <= 0)
		return;
	/* We could not ask (no descriptor free): says nothing of the server. */
	if (probe->ours)
		return;
	/* A dead server is the supervisor's to report and restart. */
	if (!probe->ok && proc_exited_unreaped(li->pid))
		return;
	bool unresponsive = strcmp(li->status, "unresponsive") == 0;
	if (!unresponsive && strcmp(li->status, "available") != 0)
		return;
	switch (local_probe_verdict(unresponsive, probe->ok, &li->probe_misses)) {
	case PROBE_NOW_UNRESPONSIVE:
		set_status(li, "unresponsive");
		/* Not restarted: a long checkpoint or a debugger stop is the
		 * user's business; we only report it. */
		log_error("local: instance %s: server (pid %d) is running but did not answer %d "
		          "probes in a row (%s); status is unresponsive",
		          li->name, (int)li->pid, LOCAL_PROBE_MISSES, probe->reason);
		break;
	case PROBE_RESPONSIVE_AGAIN:
		set_status(li, "available");
		log_event("local: instance %s: server answers again; status is available",
		          li->name);
		break;
	case PROBE_KEEP:
		break;
	}
}

/* Once per refresh period, one connection attempt per running server, all
 * in flight together and bounded by LOCAL_PROBE_TIMEOUT_MS. The lock is
 * not held while waiting for answers, so list/get/provision/destroy never
 * wait on a hung server; its own thread keeps the supervisor's reaping and
 * restarts (which can take a minute) from delaying probes, and vice versa.
 *
 * Linked servers (linked = true) get a loop and a thread of their own:
 * they are reached by a host name that libpq resolves synchronously
 * inside PQconnectStartParams (no asynchronous resolver in libpq), and a
 * TCP peer far away or gone. Probed in the same round, one slow resolver
 * held up every probe of our own servers until their answers counted as
 * missing (two rounds: "unresponsive"). Apart, a slow linked host delays
 * only the linked servers' round; pg_probe_many's deadline starts once
 * every connection is started, so it does not cost the other linked
 * servers their answer either. */
static void probe_loop(struct local_provider *lp, bool linked)
{
	/* The first round at once: linked servers show "checking" until it. */
	long long next_round = now_ms();

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		long long left = next_round - now_ms();
		if (left > 0) {
			timed_wait(lp, left > 1000 ? 1000 : (int)left);
			continue;
		}
		next_round = now_ms() + lp->probe_period_ms;

		struct probe_target *t;
		struct pg_probe *probes;
		size_t nask = 0;
		size_t n = probe_collect_locked(lp, linked, &t, &probes, &nask);
		pthread_mutex_unlock(&lp->lock);
		probe_states(t + nask, probes + nask, n - nask);
		/* In batches, so a low descriptor limit never makes healthy
		 * servers look unresponsive. */
		for (size_t done = 0; done < nask && !lp->stopping;) {
			size_t batch = local_probe_batch();
			if (batch > nask - done)
				batch = nask - done;
			pg_probe_many(probes + done, batch, LOCAL_PROBE_TIMEOUT_MS, &lp->stopping);
			done += batch;
		}
		pthread_mutex_lock(&lp->lock);
		for (size_t i = 0; i < n && !lp->stopping; i++)
			probe_apply_locked(lp, &t[i], &probes[i]);
		free(t);
		free(probes);
	}
	pthread_mutex_unlock(&lp->lock);
}

void *prober_main(void *arg)
{
	probe_loop(arg, false);
	return NULL;
}

void *linked_prober_main(void *arg)
{
	probe_loop(arg, true);
	return NULL;
}

void *preparer_main(void *arg)
{
	struct local_provider *lp = arg;
	long long retry_at = 0;

	pthread_mutex_lock(&lp->lock);
	while (!lp->stopping) {
		bool worked = false;

		lp->spare_wanted = false;
		spares_reap(lp);
		/* A provision goes first: its copy and its server's start must
		 * not race a spare's copy for the disk. It wakes us when done. */
		/* The first queries of a new instance come right after its
		 * mkdir: a refill (a server start) waits a moment for them. */
		long long quiet = lp->last_provision_ms + LOCAL_REFILL_QUIET_MS - now_ms();
		if (quiet > 0 && lp->provisioning == 0 && !lp->stopping) {
			timed_wait(lp, (int)quiet);
			continue;
		}
		if (now_ms() >= retry_at && lp->provisioning == 0) {
			struct errmsg e;
			int rc;

			pthread_mutex_unlock(&lp->lock);
			errmsg_clear(&e);
			rc = tmpl_ensure(lp, lp->default_user, true, &e);
			pthread_mutex_lock(&lp->lock);
			bool yield = lp->provisioning > 0;
			pthread_mutex_unlock(&lp->lock);
			int target = lp->spares_target;
			int running = spares_running(lp);
			int idle = spare_count(lp, lp->default_user);
			if (!rc && !yield && lp->spare_servers && running < target && idle > 0) {
				/* A copy is ready: give it a server. */
				rc = spares_start_one(lp, &e);
				worked = rc == 0;
				if (rc == -ENOENT)
					rc = 0;
			} else if (!rc && !yield && running + idle < target) {
				rc = spare_room(lp, lp->default_user, LOCAL_SPARE_MARGIN_BYTES,
				                true, &e);
				if (rc == -ENOSPC) {
					/* Checked again every round; said once. */
					if (!lp->spare_space_logged)
						log_event(
						    "local: not preparing a spare instance: %s",
						    e.text);
					lp->spare_space_logged = true;
					rc = 0;
				} else if (rc == 0) {
					rc = spare_make(lp, lp->default_user, true, NULL, 0, &e);
					worked = rc == 0;
					if (worked)
						lp->spare_space_logged = false;
				}
			}
			pthread_mutex_lock(&lp->lock);
			if (rc && !lp->stopping) {
				log_error("local: preparing a spare instance failed: %s", e.text);
				retry_at = now_ms() + 30000;
			}
		}
		if (!worked && !lp->spare_wanted && !lp->stopping)
			timed_wait(lp, 2000);
	}
	pthread_mutex_unlock(&lp->lock);
	return NULL;
}
