/* The local provider's operations: every instance is a PostgreSQL cluster
 * whose postmaster is a child of dbosfs. Start/stop (rediscovery of the
 * instances on disk, the threads of local_threads.c), list/get, and the
 * mutations: provision, destroy, password reset. */
#include "local_internal.h"
#include "local_security.h"
#include "log.h"
#include "proc.h"
#include "options.h"
#include "provider.h"
#include "validate.h"

#include <dirent.h>
#include <errno.h>
#include <fuse_opt.h>
#include <stddef.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct local_provider *LP(struct provider *p)
{
	return p->priv;
}

/* A provision has ended (with its server up, or with nothing left):
 * the preparer may replace the spare it took. Caller holds the lock. */
static void provision_done_locked(struct local_provider *lp)
{
	lp->provisioning--;
	lp->spare_wanted = true;
	lp->last_provision_ms = now_ms();
	pthread_cond_broadcast(&lp->cond);
}

/* "90", "90s", "15m", "12h", "7d" -> ms; NULL -> dflt. */
static int parse_duration_ms(const char *s, long long dflt, long long *out)
{
	char *end;
	if (!s || !*s) {
		*out = dflt;
		return 0;
	}
	long long v = strtoll(s, &end, 10);
	long long unit = 1000;
	if (*end == 'm')
		unit = 60 * 1000LL;
	else if (*end == 'h')
		unit = 3600 * 1000LL;
	else if (*end == 'd')
		unit = 24 * 3600 * 1000LL;
	else if (*end && *end != 's')
		return -EINVAL;
	if (*end && end[1])
		return -EINVAL;
	if (end == s || v < 0 || v > 3650LL * 24 * 3600)
		return -EINVAL;
	*out = v * unit;
	return 0;
}

static void rediscover(struct local_provider *lp)
{
	char dir[PATH_MAX + 16], path[PATH_MAX + 300], text[1024];
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof(dir), "%s/instances", lp->root);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		struct local_meta m;
		struct local_instance *li;

		if (de->d_name[0] == '.')
			continue;
		if (validate_instance_name(de->d_name, NULL) != 0) {
			log_error("local: ignoring %s/%s: not an instance name", dir, de->d_name);
			continue;
		}
		li = calloc(1, sizeof(*li));
		if (!li)
			break;
		snprintf(li->name, sizeof(li->name), "%.31s", de->d_name); /* validated: 3..16 */
		snprintf(path, sizeof(path), "%s/%s/meta", dir, de->d_name);
		int rc = local_read_file(path, text, sizeof(text), false);
		if (!rc)
			rc = local_meta_parse(text, &m);
		snprintf(path, sizeof(path), "%s/%s/data/PG_VERSION", dir, de->d_name);
		if (rc) {
			set_status(li, "failed");
			log_error("local: instance %s: missing or malformed %s/%s/meta", li->name,
			          dir, de->d_name);
		} else if (m.linked) {
			/* Not ours to start: the prober's first round (at once)
			 * says whether it answers. */
			li->linked = true;
			li->port = m.port;
			snprintf(li->host, sizeof(li->host), "%s", m.host);
			snprintf(li->username, sizeof(li->username), "%s", m.admin);
			set_status(li, "checking");
		} else if (!durable_check_at_mount(lp, li)) {
			/* A copy the machine lost before it was durable: checked
			 * first, since its files (PG_VERSION too) may be missing. */
			li->port = m.port;
			snprintf(li->username, sizeof(li->username), "%s", m.username);
			set_status(li, "failed");
		} else if (access(path, F_OK) != 0) {
			set_status(li, "failed");
			snprintf(li->username, sizeof(li->username), "%s", m.username);
			log_error("local: instance %s: no data directory", li->name);
		} else {
			li->port = m.port;
			snprintf(li->username, sizeof(li->username), "%s", m.username);
			set_status(li, "starting");
			li->want_running = true;
			li->resync_password = intent_pending_password(lp, li->name);
		}
		pthread_mutex_lock(&lp->lock);
		li->next = lp->instances;
		lp->instances = li;
		pthread_mutex_unlock(&lp->lock);
	}
	closedir(d);
}

/* Stops and joins the first n of the provider's threads after a failed
 * start. */
static void join_threads(struct local_provider *lp, pthread_t *threads, int n)
{
	pthread_mutex_lock(&lp->lock);
	lp->stopping = true;
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	for (int i = 0; i < n; i++)
		pthread_join(threads[i], NULL);
}

static int local_start(struct provider *p, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	pthread_t *threads[] = {&lp->supervisor,    &lp->preparer, &lp->prober,
	                        &lp->linked_prober, &lp->pitr,     &lp->flusher};
	void *(*mains[])(void *) = {supervisor_main,    preparer_main, prober_main,
	                            linked_prober_main, pitr_main,     flusher_main};
	pthread_t started[6];

	/* The lock is ours since create(); the pid in it is now the
	 * daemon's, no longer that of the parent that has exited. */
	write_lock_pid(lp);
	/* initdb, cp and migrations of a dbosfs that died: their groups go
	 * before anything else touches the state directory. */
	int killed = proc_groups_kill_recorded(lp->pgroups_dir);
	if (killed > 0)
		log_event("local: killed %d process%s left by an earlier dbosfs", killed,
		          killed == 1 ? "" : "es");
	/* Mutations a crash interrupted are undone or finished, then what
	 * no instance owns is swept; trash/ and partial copies go next. */
	local_recover(lp);
	tmpl_cleanup(lp);
	spares_cleanup(lp);
	slots_sweep(lp);
	rediscover(lp);
	for (int i = 0; i < 6; i++) {
		int rc = pthread_create(threads[i], NULL, mains[i], lp);
		if (rc) {
			join_threads(lp, started, i);
			return errmsg_set(e, -rc, "cannot start the provider's threads: %s",
			                  strerror(rc));
		}
		started[i] = *threads[i];
	}
	lp->started = true;
	return 0;
}

static void local_stop(struct provider *p)
{
	struct local_provider *lp = LP(p);
	pid_t *pids = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&lp->lock);
	lp->stopping = true;
	/* Starts in flight (supervisor, provisions) end now, not after a
	 * leftover's 30 s or a server's readiness timeout. */
	for (struct local_instance *li = lp->instances; li; li = li->next)
		atomic_store(&li->cancel, true);
	pthread_cond_broadcast(&lp->cond);
	if (lp->helper_pid > 0)
		kill(-lp->helper_pid, SIGKILL); /* the group of an initdb or cp of the preparer */
	pthread_mutex_unlock(&lp->lock);
	if (lp->started) {
		pthread_join(lp->supervisor, NULL);
		pthread_join(lp->preparer, NULL);
		pthread_join(lp->prober, NULL);
		pthread_join(lp->linked_prober, NULL);
		pthread_join(lp->pitr, NULL);
		pthread_join(lp->flusher, NULL);
		lp->started = false;
	}

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *li = lp->instances; li; li = li->next) {
		li->want_running = false;
		if (li->pid <= 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			pid_t *np = realloc(pids, cap * sizeof(*pids));
			if (!np)
				break;
			pids = np;
		}
		pids[n++] = li->pid;
		li->pid = 0;
	}
	pthread_mutex_unlock(&lp->lock);
	spares_take_pids(lp, &pids, &n, &cap);

	/* Signal every server first, then wait: they shut down in parallel.
	 * SIGCONT wakes a stopped (unresponsive) one so it can shut down too. */
	for (size_t i = 0; i < n; i++) {
		kill(pids[i], SIGINT);
		kill(pids[i], SIGCONT);
	}
	long long deadline = now_ms() + LOCAL_STOP_TIMEOUT_MS;
	for (size_t i = 0; i < n; i++) {
		long long left = deadline - now_ms();
		if (!proc_reap_wait(pids[i], left > 0 ? (int)left : 0, NULL)) {
			log_error("local: server %d did not stop in time; killing it",
			          (int)pids[i]);
			kill(pids[i], SIGKILL);
			proc_reap_wait(pids[i], 5000, NULL);
		}
	}
	if (n)
		log_event("local: stopped %zu server%s", n, n == 1 ? "" : "s");
	free(pids);
	/* A clean unmount (or shutdown) leaves no copy pending: a reboot
	 * after it must not find one. */
	durable_flush_stopped(lp);
	if (lp->runbase_is_tmp) {
		local_rmtree(lp->runbase);
		lp->runbase_is_tmp = false;
	}
}

static void local_free(struct provider *p)
{
	struct local_provider *lp;

	if (!p)
		return;
	lp = LP(p);
	if (lp) {
		while (lp->instances) {
			struct local_instance *li = lp->instances;
			lp->instances = li->next;
			free(li);
		}
		while (lp->running) {
			struct local_spare *s = lp->running;
			lp->running = s->next;
			spare_free(s);
		}
		if (lp->runbase_is_tmp) /* created but never started */
			local_rmtree(lp->runbase);
		free(lp->acct.groups);
		explicit_bzero(lp->su_password, sizeof(lp->su_password));
		if (lp->lock_fd >= 0)
			close(lp->lock_fd); /* releases the state_dir */
		pthread_mutex_destroy(&lp->lock);
		pthread_mutex_destroy(&lp->tmpl_lock);
		pthread_mutex_destroy(&lp->spare_lock);
		pthread_cond_destroy(&lp->cond);
		free(lp);
	}
	free(p);
}

static int local_list(struct provider *p, struct instance_list *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	int rc = 0;

	pthread_mutex_lock(&lp->lock);
	for (struct local_instance *li = lp->instances; li && !rc; li = li->next) {
		struct instance inst;
		if (li->hidden)
			continue;
		to_instance(li, &inst);
		rc = instance_list_push(out, &inst);
	}
	pthread_mutex_unlock(&lp->lock);
	if (rc) {
		instance_list_free(out);
		return errmsg_set(e, rc, "out of memory listing instances");
	}
	return 0;
}

static int local_get(struct provider *p, const char *name, struct instance *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	int rc = 0;

	pthread_mutex_lock(&lp->lock);
	li = find_locked(lp, name);
	if (li && !li->hidden)
		to_instance(li, out);
	else
		rc = errmsg_set(e, -ENOENT, "no instance named %s", name);
	pthread_mutex_unlock(&lp->lock);
	return rc;
}

/* DBOSFS_TIMING=1: the steps of each provision, logged (local_internal.h). */
#define TIMING_MAX 16
static __thread struct {
	int n;
	long long t0;
	const char *step[TIMING_MAX];
	long long at[TIMING_MAX];
} timing;
static bool timing_on; /* set once, before any thread */

static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

void local_timing_begin(void)
{
	timing.n = 0;
	timing.t0 = timing_on ? now_us() : 0;
}

void local_timing_mark(const char *step)
{
	if (timing.t0 && timing.n < TIMING_MAX) {
		timing.step[timing.n] = step;
		timing.at[timing.n++] = now_us();
	}
}

void local_timing_report(const char *name)
{
	char line[1024];
	size_t o = 0;
	long long prev = timing.t0;

	if (!timing.t0)
		return;
	for (int i = 0; i < timing.n && o < sizeof(line); i++) {
		int w = snprintf(line + o, sizeof(line) - o, " %s +%.1f", timing.step[i],
		                 (double)(timing.at[i] - prev) / 1000.0);
		if (w < 0)
			break;
		o += (size_t)w;
		prev = timing.at[i];
	}
	log_event("local: timing %s (ms):%s = %.1f", name, o ? line : "",
	          (double)(prev - timing.t0) / 1000.0);
	timing.t0 = 0;
}

static int local_provision(struct provider *p, const char *name, const char *username,
                           const char *password, struct instance *out, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	char spare[PATH_MAX + 32], sock[PATH_MAX], verifier[SEC_VERIFIER_MAX];
	long long t0 = now_ms();
	bool intent = false, claimed_running = false;
	int rc;

	/* Reserving the name in the table is the claim within this mount;
	 * the rename in spare_claim is the claim on disk. */
	local_timing_begin();
	rc = reserve_name_locking(lp, name, username, &li, e);
	if (rc)
		return rc;
	lp->provisioning++;
	pthread_mutex_unlock(&lp->lock);

	/* What the server gets instead of the password, computed (4096
	 * PBKDF2 rounds) before the steps a claim must make quick. */
	if (scram_verifier(password, verifier, sizeof(verifier))) {
		rc = errmsg_set(e, -EIO, "cannot compute a SCRAM verifier");
		goto fail;
	}
	local_timing_mark("verifier");
	/* The filesystem has saved the password; from the record on, a crash
	 * is undone at the next start (local_intent.c). */
	proc_crash_point("provision-begin");
	rc = intent_begin(lp, name, "provision", NULL, e);
	if (rc)
		goto fail;
	intent = true;
	local_timing_mark("intent");
	proc_crash_point("provision-intent");
	/* A running spare: its server becomes the instance's, with the
	 * password set (local_spares.c). */
	rc = spares_claim(lp, username, verifier, li, e);
	if (rc == 0) {
		claimed_running = true;
	} else if (rc == -ENOENT) {
		rc = assign_port(lp, li, e);
		if (rc < 0)
			goto fail;
		rc = spare_claim(lp, NULL, username, name, li->port, e);
	}
	if (rc == -ENOENT) {
		/* No warm spare (several provisions in a row, or a username
		 * other than the default): make one now. */
		rc = tmpl_ensure(lp, username, false, e);
		local_timing_mark("template");
		/* A clear ENOSPC now rather than a cp or a server dying of it. */
		if (!rc)
			rc = spare_room(lp, username, LOCAL_START_MARGIN_BYTES, false, e);
		if (!rc)
			rc = spare_make(lp, username, false, spare, sizeof(spare), e);
		local_timing_mark("copied");
		if (!rc) {
			rc = spare_claim(lp, spare, username, name, li->port, e);
			if (rc)
				local_rmtree(spare);
		}
	}
	if (rc)
		goto fail;
	local_timing_mark("claimed");
	proc_crash_point("provision-claimed");
	pitr_note_template_base(lp, name, username);

	if (!claimed_running) {
		rc = instance_start(lp, li, e);
		if (rc)
			goto fail;
	}
	if (!claimed_running)
		local_timing_mark("started");
	proc_crash_point("provision-started");
	if (!claimed_running) {
		inst_paths(lp, name, NULL, NULL, sock, NULL);
		rc = sec_set_verifier(lp, sock, li->port, username, verifier, &li->cancel, e);
		if (rc)
			goto fail;
	}
	local_timing_mark("password");
	proc_crash_point("provision-password-set");
	/* Complete before anyone can see it: a crash from here on leaves a
	 * usable instance with the saved password. */
	intent_end(lp, name);
	intent = false;
	local_timing_mark("intent-end");

	pthread_mutex_lock(&lp->lock);
	publish_running_locked(lp, li, out);
	provision_done_locked(lp);
	pthread_mutex_unlock(&lp->lock);
	proc_crash_point("provision-done");
	log_event("local: instance %s provisioned on port %d in %lld ms%s", name, out->port,
	          now_ms() - t0, claimed_running ? " (a running spare)" : "");
	secret_wipe(verifier, sizeof(verifier));
	local_timing_mark("published");
	local_timing_report(name);
	return 0;

fail:
	secret_wipe(verifier, sizeof(verifier));
	/* Nothing may be left behind: no server, no directory, no entry. */
	if (li->pid > 0) {
		pg_server_stop(li->pid, LOCAL_STOP_TIMEOUT_MS);
		li->pid = 0;
	}
	if (intent) {
		/* Everything of this name, the saved password too (a failed mkdir
		 * leaves nothing); -EEXIST means the name is someone else's. */
		struct errmsg re;
		int rrc = rc == -EEXIST ? 0 : local_remove_instance_files(lp, name, &re);
		if (rrc)
			log_error("local: provisioning %s failed and cleaning up too: %s", name,
			          re.text);
		else
			intent_end(lp, name);
	} else if (rc != -EEXIST) {
		secret_delete(&lp->secrets, name);
	}
	pthread_mutex_lock(&lp->lock);
	unlink_locked(lp, li);
	provision_done_locked(lp);
	pthread_mutex_unlock(&lp->lock);
	free(li);
	if (rc != -EEXIST)
		log_error("local: provisioning %s failed: %s", name, e ? e->text : "");
	return rc;
}

/* Waits (polling for Ctrl-C) until no operation owns the entry; returns it
 * with the lock held, or NULL with the lock held and *rc set. */
static struct local_instance *acquire_locked(struct local_provider *lp, const char *name,
                                             bool cancel_start, int *rc, struct errmsg *e)
{
	long long deadline = now_ms() + 15000;

	for (;;) {
		struct local_instance *li = find_locked(lp, name);

		if (!li || li->hidden) {
			*rc = errmsg_set(e, -ENOENT, "no instance named %s", name);
			return NULL;
		}
		if (!li->busy) {
			atomic_store(&li->cancel, false);
			return li;
		}
		/* A start by the supervisor (a restart, a background retry of a
		 * failed instance) ends at once rather than after its timeouts;
		 * the supervisor leaves a cancelled entry alone until we have it. */
		if (cancel_start)
			atomic_store(&li->cancel, true);
		if (op_interrupted() || now_ms() > deadline) {
			/* Not ours after all: the supervisor may have it again. */
			if (cancel_start && !lp->stopping)
				atomic_store(&li->cancel, false);
			if (op_interrupted())
				*rc = errmsg_set(e, -EINTR, "interrupted");
			else
				*rc = errmsg_set(e, -EBUSY,
				                 "instance %s is busy (%s); try again later", name,
				                 li->status);
			return NULL;
		}
		timed_wait(lp, 100);
	}
}

/* Ends an operation's ownership of li; the caller holds lp->lock, which
 * this releases. Returns rc. */
static int release_unlock(struct local_provider *lp, struct local_instance *li, int rc)
{
	li->busy = false;
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	return rc;
}

/* li leaves the table and is freed; the caller holds lp->lock, which this
 * releases. */
static void forget_unlock(struct local_provider *lp, struct local_instance *li)
{
	unlink_locked(lp, li);
	pthread_cond_broadcast(&lp->cond);
	pthread_mutex_unlock(&lp->lock);
	free(li);
}

static int local_destroy(struct provider *p, const struct instance *inst, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	char status[32];
	int rc = 0;
	pid_t pid;

	pthread_mutex_lock(&lp->lock);
	li = acquire_locked(lp, inst->name, true, &rc, e);
	if (!li) {
		pthread_mutex_unlock(&lp->lock);
		return rc;
	}
	li->busy = true;
	snprintf(status, sizeof(status), "%s", li->status);
	if (li->linked) {
		/* Unlinking: the server is not ours; only what we know of it goes. */
		set_status(li, "deleting");
		pthread_mutex_unlock(&lp->lock);
		rc = local_unlink(lp, li, e);
		pthread_mutex_lock(&lp->lock);
		if (rc) {
			set_status(li, status);
			return release_unlock(lp, li, rc);
		}
		forget_unlock(lp, li);
		return 0;
	}
	pthread_mutex_unlock(&lp->lock);

	/* From the record on, a crash is finished at the next start. */
	rc = intent_begin(lp, inst->name, "destroy", NULL, e);
	pthread_mutex_lock(&lp->lock);
	if (rc)
		return release_unlock(lp, li, rc);
	li->want_running = false;
	set_status(li, "deleting");
	pid = li->pid;
	pthread_mutex_unlock(&lp->lock);
	proc_crash_point("destroy-intent");

	/* We own it now (busy): the supervisor will not reap or restart it. */
	pg_server_stop(pid, LOCAL_STOP_TIMEOUT_MS);
	proc_crash_point("destroy-stopped");
	/* Renaming first frees the name at once; the slow delete follows. */
	rc = local_remove_instance_files(lp, inst->name, e);
	if (!rc) {
		proc_crash_point("destroy-removed");
		intent_end(lp, inst->name);
	}

	pthread_mutex_lock(&lp->lock);
	li->pid = 0;
	if (rc) {
		/* The server is stopped but files remain: say so, keep the entry
		 * so the user can retry (the record stays: the next start would
		 * finish it too). */
		set_status(li, "failed");
		return release_unlock(lp, li, rc);
	}
	forget_unlock(lp, li);
	log_event("local: instance %s destroyed", inst->name);
	return 0;
}

/* Ends a password reset's ownership of li. */
static void reset_done(struct local_provider *lp, struct local_instance *li)
{
	pthread_mutex_lock(&lp->lock);
	release_unlock(lp, li, 0);
}

/* The order makes every crash recoverable: the record (with the new
 * password) first, then the server, then the saved password, then the
 * record goes. The filesystem saves the same password again after us. */
static int local_reset_password(struct provider *p, const struct instance *inst,
                                const char *password, struct errmsg *e)
{
	struct local_provider *lp = LP(p);
	struct local_instance *li;
	char sock[PATH_MAX], user[64], status[32], old[PASSWORD_MAX + 2];
	int port, rc = 0;

	pthread_mutex_lock(&lp->lock);
	li = find_locked(lp, inst->name);
	if (!li || li->hidden) {
		pthread_mutex_unlock(&lp->lock);
		return errmsg_set(e, -ENOENT, "no instance named %s", inst->name);
	}
	if (li->linked) {
		pthread_mutex_unlock(&lp->lock);
		return errmsg_set(
		    e, -EPERM,
		    "%s is a linked server that dbosfs does not run: change the password "
		    "there (ALTER ROLE), then unlink and link it again",
		    inst->name);
	}
	snprintf(status, sizeof(status), "%s", li->status);
	snprintf(user, sizeof(user), "%s", li->username);
	port = li->port;
	bool ready = li->pid > 0 && !li->busy && strcmp(li->status, "available") == 0;
	if (ready)
		li->busy = true; /* no destroy or restart while the server changes */
	pthread_mutex_unlock(&lp->lock);
	if (!ready)
		return errmsg_set(e, -EBUSY,
		                  "instance %s is %s; the password can be reset once it is "
		                  "available",
		                  inst->name, status);
	rc = intent_begin(lp, inst->name, "password", password, e);
	if (rc) {
		reset_done(lp, li);
		return rc;
	}
	proc_crash_point("password-intent");
	inst_paths(lp, inst->name, NULL, NULL, sock, NULL);
	bool had_old = secret_get(&lp->secrets, inst->name, old, sizeof(old), NULL) == 0;
	rc = sec_set_password(lp, sock, port, user, password, NULL, e);
	if (rc) {
		/* The server kept the old one, which is still saved. */
		intent_end(lp, inst->name);
		secret_wipe(old, sizeof(old));
		reset_done(lp, li);
		return rc;
	}
	proc_crash_point("password-applied");
	rc = secret_put(&lp->secrets, inst->name, password, e);
	if (rc && had_old) {
		/* The server goes back to what is saved. */
		struct errmsg be;
		if (sec_set_password(lp, sock, port, user, old, NULL, &be) == 0)
			intent_end(lp, inst->name);
		else
			log_error("local: instance %s: the new password could not be saved and "
			          "the old one not restored (%s); the next start applies the new "
			          "one",
			          inst->name, be.text);
	}
	secret_wipe(old, sizeof(old));
	if (rc) {
		reset_done(lp, li);
		return rc;
	}
	proc_crash_point("password-saved");
	intent_end(lp, inst->name);
	reset_done(lp, li);
	log_event("local: instance %s: password reset", inst->name);
	return 0;
}

static const struct provider_ops local_ops = {
    .kind = "local",
    .start = local_start,
    .stop = local_stop,
    .free = local_free,
    .list = local_list,
    .get = local_get,
    .provision = local_provision,
    .destroy = local_destroy,
    .reset_password = local_reset_password,
    .list_databases = local_list_databases,
    .create_database = local_create_database,
    .drop_database = local_drop_database,
    .branch = local_branch,
    .restore = local_restore,
    .restore_window = local_restore_window,
    .link = local_link,
    .durability = local_durability,
};

static void local_init_opts(void *own)
{
	struct local_options *lo = own;
	memset(lo, 0, sizeof(*lo));
	lo->spares = 2;
}

int local_provider_create(const struct dbosfs_options *opt, const void *own, struct provider **out,
                          struct errmsg *e)
{
	struct local_options defaults;
	const struct local_options *lo = own;
	if (!lo) {
		local_init_opts(&defaults);
		lo = &defaults;
	}
	struct provider *p = calloc(1, sizeof(*p));
	struct local_provider *lp = calloc(1, sizeof(*lp));
	int rc;

	*out = NULL;
	if (!p || !lp) {
		free(p);
		free(lp);
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	p->ops = &local_ops;
	p->priv = lp;
	lp->lock_fd = -1;
	pthread_mutex_init(&lp->lock, NULL);
	pthread_mutex_init(&lp->tmpl_lock, NULL);
	pthread_mutex_init(&lp->spare_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lp->cond, &ca);
	pthread_condattr_destroy(&ca);
	lp->spare_seq = (unsigned)time(NULL);

	if (!opt->state_dir || opt->state_dir[0] != '/') {
		rc = errmsg_set(e, -EINVAL, "state_dir must be an absolute path");
		goto fail;
	}
	/* Every server costs sockets (probes) and files: take the hard
	 * limit (children get PROC_CHILD_NOFILE back). Survives the fork. */
	proc_raise_nofile();
	if (lo->spares > 16) {
		rc = errmsg_set(e, -EINVAL, "spares=%d: at most 16 spare servers", lo->spares);
		goto fail;
	}
	lp->spares_target = lo->spares < 0 ? 2 : lo->spares;
	/* For tests only: DBOSFS_LOCAL_SPARES_IDLE=1 keeps spares as copies
	 * without a server (the slower path, with a server start per mkdir),
	 * so a test can break a copy's configuration or fill the disk before
	 * the start. */
	const char *idle = getenv("DBOSFS_LOCAL_SPARES_IDLE");
	lp->spare_servers = !(idle && strcmp(idle, "1") == 0);
	const char *timing_env = getenv("DBOSFS_TIMING");
	timing_on = timing_env && strcmp(timing_env, "1") == 0;
	lp->probe_period_ms = (opt->refresh > 0 ? opt->refresh : 2) * 1000;
	/* For tests only: the first slow retry of a failed instance after
	 * DBOSFS_LOCAL_RETRY_S seconds (1..300) instead of 30, so a test can
	 * watch a repaired instance come back without waiting minutes. */
	const char *retry_s = getenv("DBOSFS_LOCAL_RETRY_S");
	long rs = retry_s ? strtol(retry_s, NULL, 10) : 0;
	lp->retry_first_ms = rs >= 1 && rs <= 300 ? rs * 1000 : LOCAL_RETRY_FIRST_MS;
	rc = parse_duration_ms(lo->pitr_window, 7 * 24 * 3600 * 1000LL, &lp->pitr_window_ms);
	if (rc) {
		rc = errmsg_set(e, -EINVAL,
		                "pitr_window=%s: not a duration (seconds, or a number with s, m, "
		                "h or d; 0 turns point-in-time recovery off)",
		                lo->pitr_window);
		goto fail;
	}
	/* For tests only: a base backup every DBOSFS_PITR_BASE_S seconds. */
	const char *base_s = getenv("DBOSFS_PITR_BASE_S");
	long bs = base_s ? strtol(base_s, NULL, 10) : 0;
	lp->pitr_base_every_ms = bs >= 1 ? bs * 1000LL : 24 * 3600 * 1000LL;
	/* For tests only: a base backup once DBOSFS_PITR_BASE_WAL_BYTES of
	 * WAL were archived since the newest (default: see local_pitr.c). */
	const char *base_wal = getenv("DBOSFS_PITR_BASE_WAL_BYTES");
	long long bw = base_wal ? strtoll(base_wal, NULL, 10) : 0;
	lp->pitr_base_wal_bytes = bw >= 1 ? bw : 0;
	snprintf(lp->default_user, sizeof(lp->default_user), "%s",
	         opt->db_username && *opt->db_username ? opt->db_username : "dbos_user");
	rc = resolve_bindir(lo, lp->bindir, sizeof(lp->bindir), e);
	if (rc)
		goto fail;
	rc = resolve_account(lo, &lp->acct, e);
	if (rc)
		goto fail;
	if (local_path(lp->root, sizeof(lp->root), "%s/local", opt->state_dir)) {
		rc = errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
		goto fail;
	}
	rc = make_dirs(lp, opt->state_dir, e);
	if (!rc &&
	    local_path(lp->pgroups_dir, sizeof(lp->pgroups_dir), "%s/run/pgroups", opt->state_dir))
		rc = errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
	if (!rc)
		rc = secret_store_open(&lp->secrets, opt->state_dir, "local", e);
	if (!rc)
		rc = lock_state_dir(lp, opt->state_dir, e);
	if (!rc && !lp->runbase[0])
		rc = make_tmp_runbase(lp, e);
	/* Once per state directory, not per instance: dbosfs's superuser
	 * password and the TLS keys (local_security.h). */
	if (!rc)
		rc = su_secret_load(lp->root, lp->su_password, sizeof(lp->su_password), e);
	if (!rc && local_path(lp->tlsdir, sizeof(lp->tlsdir), "%s/tls", lp->root))
		rc = errmsg_set(e, -ENAMETOOLONG, "state_dir is too long");
	if (!rc)
		rc = tls_ensure(lp->tlsdir, e);
	if (rc)
		goto fail;

	snprintf(p->provider_line, sizeof(p->provider_line), "local");
	snprintf(p->secret_scope, sizeof(p->secret_scope), "local");
	snprintf(p->ca_file, sizeof(p->ca_file), "%s/ca.pem", lp->tlsdir);
	if (lp->acct.drop) {
		snprintf(p->account, sizeof(p->account), "root (servers run as %s)", lp->acct.name);
	} else {
		struct passwd *pw = getpwuid(opt->owner_uid ? opt->owner_uid : geteuid());
		snprintf(p->account, sizeof(p->account), "%s", pw ? pw->pw_name : lp->acct.name);
	}
	errmsg_clear(e);
	*out = p;
	return 0;
fail:
	local_free(p);
	return rc;
}

/* ---- -o keys (the registry: provider.h) ---- */

#define LOCAL_OPT(t, f)                                                                            \
	{                                                                                          \
		t, offsetof(struct local_options, f), 1                                            \
	}
static const struct fuse_opt local_opts[] = {
    LOCAL_OPT("pg_bindir=%s", pg_bindir),
    LOCAL_OPT("pg_user=%s", pg_user),
    LOCAL_OPT("pitr_window=%s", pitr_window),
    LOCAL_OPT("spares=%d", spares),
    FUSE_OPT_END,
};

static void local_free_opts(void *own)
{
	struct local_options *lo = own;
	free(lo->pg_bindir);
	free(lo->pg_user);
	free(lo->pitr_window);
}

const struct provider_kind local_provider_kind = {
    .name = "local",
    .opts = local_opts,
    .opts_size = sizeof(struct local_options),
    .init_opts = local_init_opts,
    .free_opts = local_free_opts,
    .help = "    -o pg_bindir=DIR         PostgreSQL server binaries (initdb, postgres)\n"
            "    -o pg_user=USER          as root: the account that runs the servers\n"
            "                             (default: dbosfs, a system account made on first\n"
            "                             use)\n"
            "    -o spares=N              servers kept running, unclaimed, so mkdir\n"
            "                             takes milliseconds (default: 2; 0: none)\n"
            "    -o pitr_window=DURATION  how far back NAME/restore reaches, e.g. 12h,\n"
            "                             7d (default: 7d; 0 turns WAL archiving off)\n",
    .create = local_provider_create,
};
