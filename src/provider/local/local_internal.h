/* The local provider's private pieces: each instance is a PostgreSQL
 * cluster under STATE_DIR/local/instances/NAME/ whose postmaster is a child
 * of dbosfs.
 *
 * Layout of STATE_DIR/local/ (root-owned 0711 when we run as root, so the
 * server account can reach its own directories and nothing else):
 *   templates/USER/        initdb output for admin USER (server account, 0700)
 *   spares/USER.N/         a ready copy of the template (data/, server.log,
 *                          meta once claimed); for the default username up
 *                          to spares= of them also run a server (see
 *                          local_spares.c)
 *   instances/NAME/        meta (port, username), server.log, data/
 *   slots/N                symlink: the path a running spare's server was
 *                          started through (-D slots/N/data); points at
 *                          spares/USER.N, then at instances/NAME once
 *                          claimed (local_spares.c)
 *   intents/NAME           the intent record of an unfinished mutation
 *   trash/                 instances being removed
 *   run/NAME/              Unix-socket directory (0700, server account);
 *                          run/.spareN/ for the running spare spares/USER.N
 *                          a short /tmp directory instead when the path
 *                          would exceed the 107-byte socket path limit
 *   lock                   flock()ed by the one dbosfs using this directory
 *                          (holds its pid, for the refusal message)
 */
#ifndef DBOSFS_LOCAL_INTERNAL_H
#define DBOSFS_LOCAL_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common.h"
#include "instance.h"
#include "proc.h"
#include "secrets.h"

/* As root, servers run as this system account unless pg_user= says
 * otherwise; dbosfs makes it on first use. */
#define LOCAL_SERVER_ACCOUNT "dbosfs"
#define LOCAL_PORT_MIN       25432
#define LOCAL_PORT_MAX       29999
/* The preparer starts no spare this soon after a provision ended. */
#define LOCAL_REFILL_QUIET_MS  300
#define LOCAL_MAX_FAILURES     5     /* consecutive crashes/failed starts before "failed" */
#define LOCAL_STOP_TIMEOUT_MS  10000 /* SIGINT, then SIGKILL after this */
#define LOCAL_READY_TIMEOUT_MS 60000 /* crash recovery can replay WAL for a while */
#define LOCAL_PROBE_TIMEOUT_MS 2000  /* a liveness probe's answer must come within this */
#define LOCAL_PROBE_MISSES     2     /* consecutive unanswered probes before "unresponsive" */
/* Every refresh period each running postmaster's process state is read
 * (/proc: a stopped one counts as a miss at once, for nothing); a real
 * answer (a connection attempt, which forks a backend on the server: the
 * largest part of an idle server's CPU) is asked this often, and every
 * period while the server has missed one. */
#define LOCAL_PROBE_ASK_MS 30000
/* A leftover postmaster (not our child) that survives SIGINT and repeated
 * SIGKILLs this long is stuck in the kernel: give up on its instance. */
#define LOCAL_LEFTOVER_TIMEOUT_MS 30000
/* A "failed" instance is still retried, slowly, in the background (the
 * cause may go away: a full disk, a bad setting fixed by hand): after
 * LOCAL_RETRY_FIRST_MS, then twice as long each time, capped. */
#define LOCAL_RETRY_FIRST_MS 30000
#define LOCAL_RETRY_MAX_MS   300000
/* Room a warm spare must leave free besides its own copy of the template
 * (at least this, or the template's size if larger): a spare is only a
 * speed-up and must never take the space a real mkdir or a running server
 * needs. */
#define LOCAL_SPARE_MARGIN_BYTES (64LL << 20)
/* Room a mkdir needs besides its copy of the template: the server's first
 * WAL segment, lock and statistics files. Also the level below which a
 * server that died silently at startup is reported as out of space. */
#define LOCAL_START_MARGIN_BYTES (16LL << 20)

/* Who runs the servers and helper commands. */
struct local_account {
	bool drop; /* we are root: children switch to uid/gid/groups */
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int ngroups;
	char name[64];
};

/* One instance, in memory. Fields are guarded by local_provider.lock; an
 * operation that runs long (start, stop, destroy) sets busy and then owns
 * the entry alone until it clears busy again. */
struct local_instance {
	char name[32];
	char username[64];
	char status[32];
	int port;
	pid_t pid;         /* our postmaster child, 0 when not running */
	bool hidden;       /* being provisioned: not listed yet */
	bool busy;         /* an operation owns it (supervisor leaves it alone) */
	bool want_running; /* restart it when it dies */
	/* A server dbosfs does not run (.dbosfs/link, local_link.c): never
	 * started, stopped or removed; probed at host:port; pid stays 0. */
	bool linked;
	char host[256];
	int failures; /* consecutive crashes or failed starts */
	long long next_start_ms;
	long long up_since_ms;
	unsigned long long
	    run_id;       /* new at every start: late probe results of an old run are dropped */
	int probe_misses; /* consecutive liveness probes without an answer */
	long long probe_asked_ms; /* when a connection probe was last sent */
	bool give_up;             /* set by a start that cannot succeed by retrying soon */
	bool slow;                /* "failed": only retried on the slow schedule */
	int slow_retries;         /* slow retries so far (reset once stable for a minute) */
	int episode_retries;      /* slow retries since it last became "failed" */
	/* Recovery finished a password reset: the next start gives the
	 * server the saved password before the instance is shown available. */
	bool resync_password;
	/* A branch or restore whose copy is not on disk yet: the flusher's
	 * job (local_durable.c); flush_after_ms delays a retry. */
	bool durable_pending;
	long long flush_after_ms;
	/* Why the provider will not start it ("" if it would), for
	 * last_error: a copy that was not durable when the machine went down. */
	char fail_reason[160];
	/* Destroy or stop wants a start in flight to end now; read without the
	 * lock by the start's waits. */
	atomic_bool cancel;
	struct local_instance *next;
};

/* Room for STATE_DIR/local: every path built from it fits PATH_MAX. */
#define LOCAL_ROOT_MAX (PATH_MAX - 512)

/* A spare directory that has a server of its own (or is getting one):
 * such a directory is no longer offered to spare_claim. Guarded by
 * spare_lock. */
struct local_spare {
	unsigned seq; /* spares/USER.seq, run/.spare<seq> */
	pid_t pid;    /* our postmaster child; 0 while it starts */
	int port;     /* its TCP port, kept by the instance that claims it */
	bool ready;   /* accepts connections: may be claimed */
	/* dbosfs's superuser connection, opened when the server became ready
	 * and kept for the claim (NULL: the claim connects itself). Used only
	 * by whoever took the spare off the list. */
	struct pg_conn *conn;
	struct local_spare *next;
};

struct local_provider {
	char bindir[PATH_MAX];
	char root[LOCAL_ROOT_MAX]; /* STATE_DIR/local */
	char runbase[LOCAL_ROOT_MAX];
	bool runbase_is_tmp; /* made by mkdtemp: removed at stop */
	char default_user[64];
	struct local_account acct;
	char tlsdir[LOCAL_ROOT_MAX + 8]; /* STATE_DIR/local/tls: the CA and server key */
	char su_password[64];            /* the internal superuser's (local_security.h) */

	/* Lock order: tmpl_lock, then lock. spare_lock and log.c's lock are
	 * leaves: nothing else is taken while one is held. lock is never held
	 * across a child process, a server start or a libpq call, and no
	 * provider lock is held across a call into another module that locks
	 * (the state cache calls us, never the reverse). */
	pthread_mutex_t lock; /* instances list and every entry's fields */
	pthread_cond_t cond;  /* busy cleared, stop requested, spare wanted */
	struct local_instance *instances;
	/* Set once by stop() (under lock, with a broadcast); read without it
	 * by waits that must end early (probes, starts). */
	atomic_bool stopping;
	bool started;
	int lock_fd;      /* STATE_DIR/local/lock, flock()ed until free(); -1 if none */
	int provisioning; /* provisions in progress: the preparer waits for them */

	pthread_mutex_t tmpl_lock; /* one template build or spare copy at a time */
	pthread_mutex_t spare_lock;
	unsigned spare_seq;
	int spares_target;                /* spares=: running spares kept ready */
	bool spare_servers;               /* false: spares are copies only (tests) */
	long long last_provision_ms;      /* when the last provision ended (lock) */
	struct local_spare *running;      /* spare_lock */
	pid_t helper_pid;                 /* initdb/cp run by the preparer (guarded by lock) */
	char pgroups_dir[LOCAL_ROOT_MAX]; /* STATE_DIR/run/pgroups (proc.h) */
	/* STATE_DIR/passwords/local: the same store the filesystem serves
	 * NAME/password from. The provider removes an instance's password
	 * itself, so a crash never separates the two. */
	struct secret_store secrets;

	pthread_t supervisor;
	pthread_t preparer;
	pthread_t prober;
	pthread_t linked_prober;      /* linked servers' probes, apart (local_threads.c) */
	pthread_t pitr;               /* base backups and pruning (local_pitr.c) */
	pthread_t flusher;            /* copies made durable (local_durable.c) */
	long long pitr_window_ms;     /* 0: no WAL archiving, no restore */
	long long pitr_base_every_ms; /* a new base backup after this long */
	/* ... or once this much WAL was archived since the newest one; 0:
	 * the data directory's size, at least PITR_BASE_WAL_MIN_BYTES. */
	long long pitr_base_wal_bytes;
	bool spare_wanted;
	bool spare_space_logged;    /* "no room for a spare" said once (preparer only) */
	int probe_period_ms;        /* the mount's refresh period */
	long long retry_first_ms;   /* first slow retry of a failed instance */
	unsigned long long run_seq; /* source of local_instance.run_id */
};

/* ---- local_meta.c: pure helpers (unit-tested) ---- */

struct local_meta {
	int port;
	char username[64]; /* the admin; for a linked server, a copy of admin */
	/* linked=1: a server dbosfs does not run (.dbosfs/link), at host:port
	 * with admin role admin. */
	bool linked;
	char host[256];
	char admin[64];
};

/* Parses "key=value" lines. 0, or -EINVAL if port or username (linked:
 * host, port or admin) is missing or malformed. Unknown keys are
 * ignored. */
int local_meta_parse(const char *text, struct local_meta *out);
/* Formats into out; 0 or -ENOSPC. */
int local_meta_format(const struct local_meta *m, char *out, size_t outsz);

/* What to do about an existing postmaster.pid before starting a server. */
enum stale_pid_action {
	STALE_PID_NONE,     /* no file */
	STALE_PID_REMOVE,   /* dead PID, zombie, or not a postmaster of this data dir */
	STALE_PID_SHUTDOWN, /* a live postmaster of this data dir: stop it first */
};

/* Facts about the process named in postmaster.pid, gathered from /proc. */
struct stale_pid_facts {
	bool file_exists;
	pid_t pid;            /* first line, 0 if unparsable */
	bool alive;           /* exists and is not a zombie */
	bool is_postgres_exe; /* /proc/PID/exe is a postgres binary */
	bool cwd_is_datadir;  /* /proc/PID/cwd is this data dir (postmasters chdir there) */
	bool is_self_or_child_of_ours; /* one of our own children: never touch */
};
enum stale_pid_action stale_pid_decide(const struct stale_pid_facts *f);
/* First line of postmaster.pid as a PID, 0 if malformed. */
pid_t stale_pid_parse(const char *text);

/* True if the server log text shows a port conflict at startup. */
bool local_log_port_conflict(const char *log_tail);
/* The last line of text containing "FATAL" or "PANIC" (else the last
 * non-empty line), copied into out without its trailing newline. */
void local_log_reason(const char *log_tail, char *out, size_t outsz);

/* Unix socket paths must fit 107 bytes: does RUNBASE/NAME/.s.PGSQL.65535? */
bool local_socket_path_fits(const char *runbase, size_t max_name_len);

/* snprintf for paths: -ENAMETOOLONG instead of a silently cut path. */
int local_path(char *out, size_t outsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Restart backoff after n consecutive failures (n >= 1), in ms. */
long long local_backoff_ms(int failures);

/* Delay before slow retry number n (n >= 1) of a failed instance, in ms:
 * first_ms, then doubling, capped at LOCAL_RETRY_MAX_MS (first_ms <= 0
 * means LOCAL_RETRY_FIRST_MS). */
long long local_retry_ms(int n, long long first_ms);

/* What one liveness probe of a running server changes. */
enum probe_verdict {
	PROBE_KEEP,             /* status stays as it is */
	PROBE_NOW_UNRESPONSIVE, /* "available" -> "unresponsive" */
	PROBE_RESPONSIVE_AGAIN, /* "unresponsive" -> "available" */
};
/* Counts consecutive misses in *misses; after LOCAL_PROBE_MISSES of them
 * an available server becomes unresponsive, and one answer brings it
 * back. */
enum probe_verdict local_probe_verdict(bool unresponsive, bool answered, int *misses);
/* Whether this period's probe of a server asks it for an answer (true) or
 * only reads its process state: every LOCAL_PROBE_ASK_MS (within half a
 * period), and every period while it has misses or is unresponsive. */
bool local_probe_ask_due(long long now_ms, long long asked_ms, int misses, bool unresponsive,
                         int period_ms);
/* A process state letter of /proc/PID/stat that means the process runs no
 * code until someone continues it (stopped, traced). */
bool local_proc_state_stopped(char state);

/* ---- pg_server.c: processes ---- */

/* The credentials children of lp run with. */
void local_creds(const struct local_account *a, struct proc_creds *out);
/* How helpers (initdb, cp, single-user postgres) run: as the server
 * account, in a process group of their own that dies with us and is
 * recorded in lp->pgroups_dir (s->pgroups_dir, for proc_reap), with a
 * private umask and the children's fd limit. creds must outlive s. */
void local_helper_spec(struct local_provider *lp, char *const *argv, int in_fd, int out_fd,
                       int err_fd, struct proc_creds *creds, struct proc_spec *s);
/* Runs a helper (initdb, cp) to completion as the server account, in a
 * process group of its own that dies with us and is recorded in
 * lp->pgroups_dir; *wstatus gets the wait status. With track, the
 * child's pid is published in lp->helper_pid so stop() can kill it. */
int local_run(struct local_provider *lp, bool track, char *const *argv, int out_fd, int *wstatus,
              struct errmsg *e);
/* SIGINT (fast shutdown), wait, then SIGKILL; always reaps. */
void pg_server_stop(pid_t pid, int timeout_ms);

struct pg_launch {
	const char *bindir;
	const char *datadir;
	const char *sockdir;
	int log_fd;
	int port;
	const struct local_account *acct;
	const char *archive_command; /* NULL: no WAL archiving */
	int archive_timeout_s;
};
pid_t pg_server_launch(const struct pg_launch *l, struct errmsg *e);

/* Connects on the socket every few ms until the server lets user in.
 * 0 when ready; -ECHILD when it exited (reaped, *wstatus set); -EACCES
 * when it is up but refuses the password; -ETIMEDOUT; -EINTR when *cancel
 * turns true or op_interrupted(). */
int pg_server_wait_ready(pid_t pid, const char *sockdir, int port, const char *user,
                         const char *password, int timeout_ms, const atomic_bool *cancel,
                         int *wstatus);

/* One liveness probe target and its outcome. */
struct pg_probe {
	const char *sockdir;
	int port;
	const char *user;
	bool ok;          /* out: the server answered (any answer, even a refusal) */
	bool ours;        /* out: not asked, for want of a descriptor of ours: no verdict */
	char reason[256]; /* out: why not, when !ok */
};
/* Probes in one batch at most: each holds a socket until it is answered,
 * and the descriptors a FUSE daemon has are shared with everything else
 * (see local_probe_batch). */
#define LOCAL_PROBE_BATCH 64
/* How many probes to run at once now: LOCAL_PROBE_BATCH, or fewer when
 * the descriptor limit leaves less room (at least 1). */
size_t local_probe_batch(void);
/* Starts a connection to every target at once (libpq's non-blocking API)
 * and waits up to timeout_ms in all once all are started, so one hung
 * server costs the round timeout_ms, never timeout_ms per server. A host
 * name is resolved (synchronously, by libpq) while starting: a slow
 * resolver delays the whole call, so linked servers are probed apart. Returns early when *cancel
 * turns true (the unanswered ones then count as not ok). */
void pg_probe_many(struct pg_probe *probes, size_t n, int timeout_ms, const atomic_bool *cancel);

/* How pg_stop_leftover observes and signals the process; NULL means /proc
 * and kill(2) (tests substitute fakes: a real unkillable process needs a
 * process stuck in the kernel). */
struct leftover_ops {
	bool (*alive)(pid_t pid, void *arg);
	int (*signal)(pid_t pid, int sig, void *arg);
	void *arg;
};
/* Stops a live postmaster that is not our child: SIGINT, SIGKILL after
 * grace_ms and again every 5 s. 0 once it is gone; -ETIMEDOUT if it still
 * lives after total_ms (stuck in the kernel, D state); -EINTR as soon as
 * *cancel turns true. */
int pg_stop_leftover(pid_t pid, int grace_ms, int total_ms, const atomic_bool *cancel,
                     const struct leftover_ops *ops);

/* Reads /proc for the pid named in DATADIR/postmaster.pid, decides, and
 * acts: removes the file, or shuts down a leftover postmaster (giving up
 * after LOCAL_LEFTOVER_TIMEOUT_MS with -ETIMEDOUT, or at *cancel with
 * -EINTR). */
int pg_handle_stale_pid(const char *datadir, const char *name, const atomic_bool *cancel,
                        struct errmsg *e);

/* A free TCP port on 127.0.0.1 (bind test), avoiding those in used[]. */
int local_pick_port(const int *used, size_t nused);
bool local_port_free(int port);

/* ---- pg_template.c: template data directories and warm spares ---- */

/* Builds templates/USER if missing (initdb). Serialised by tmpl_lock.
 * track: publish the helper's pid so stop() can kill it (preparer only). */
int tmpl_ensure(struct local_provider *lp, const char *user, bool track, struct errmsg *e);
/* Copies the template into a new spares/USER.N; its path goes to out. */
int spare_make(struct local_provider *lp, const char *user, bool track, char *out, size_t outsz,
               struct errmsg *e);
/* The first idle spare directory of user (path to out, if not NULL) and
 * how many there are. Caller holds spare_lock. */
int spare_find(struct local_provider *lp, const char *user, char *out, size_t outsz);
/* Ready idle spares for user. */
int spare_count(struct local_provider *lp, const char *user);
/* Moves a ready spare (or the one at path, if not NULL) to instances/NAME
 * after writing its meta. -ENOENT when there is no spare; -EEXIST when the
 * name is taken on disk. */
int spare_claim(struct local_provider *lp, const char *path, const char *user, const char *name,
                int port, struct errmsg *e);
/* Removes *.tmp leftovers of interrupted builds and copies. */
void tmpl_cleanup(struct local_provider *lp);
/* Disk space a copy of user's template takes (its allocated blocks); 0 or
 * negative errno. */
int tmpl_size(struct local_provider *lp, const char *user, long long *bytes);
/* A child that died without a word (empty log or output) most often died
 * of a full disk, since its log is on the same filesystem: "WHAT: No space
 * left on device (N KiB free on the filesystem of DIR)" and -ENOSPC when
 * less than LOCAL_START_MARGIN_BYTES is free, else "WHAT (N MiB free ...)"
 * and -EIO. The one home of this diagnosis. */
int local_silent_failure(const char *dir, const char *what, struct errmsg *e);
/* Space available to unprivileged users on the filesystem of path;
 * negative errno on failure. */
long long local_free_bytes(const char *path);
/* 0 if the filesystem of STATE_DIR/local has room for one more copy of
 * user's template with margin bytes to spare (or the template's size, if
 * larger and margin_at_least_template); else -ENOSPC and a message naming
 * the sizes. */
int spare_room(struct local_provider *lp, const char *user, long long margin,
               bool margin_at_least_template, struct errmsg *e);

/* ---- step timings of a mkdir (diagnostics) ----
 * With DBOSFS_TIMING=1 in dbosfs's environment, each provision logs where
 * its time went: one "local: timing NAME: step +ms ..." line. Marks are
 * per thread and cost nothing when off. */
void local_timing_begin(void);
void local_timing_mark(const char *step);
void local_timing_report(const char *name);

/* ---- local_spares.c: spare servers kept running ---- */

/* Ports of the running spares, appended to used[*n] (at most max). */
void spares_ports(struct local_provider *lp, int *used, size_t *n, size_t max);
/* Running (or starting) spares. */
int spares_running(struct local_provider *lp);
/* Starts a server on an idle spare directory of the default user (the
 * preparer). -ENOENT when there is none. */
int spares_start_one(struct local_provider *lp, struct errmsg *e);
/* Takes a ready running spare of user and makes it instance li->name:
 * the data directory and the socket directory are renamed, li->pid and
 * li->port become the spare's, and the admin's password becomes verifier
 * (scram_verifier), which opens logins. -ENOENT when none is ready (or
 * user is not the default one); -EEXIST when the name is taken on disk.
 * The caller holds an intent record for the name. */
int spares_claim(struct local_provider *lp, const char *user, const char *verifier,
                 struct local_instance *li, struct errmsg *e);
/* Frees a spare taken off the list, closing its kept connection. */
void spare_free(struct local_spare *s);
/* Reaps spare servers that died; their directories are started again. */
void spares_reap(struct local_provider *lp);
/* Moves the pids of every spare server to pids (grown as needed). */
void spares_take_pids(struct local_provider *lp, pid_t **pids, size_t *n, size_t *cap);
/* At start: socket directories of earlier spares go; with spares=0 the
 * spare directories go too (a disabled feature costs no disk). */
void spares_cleanup(struct local_provider *lp);
/* Drops the links in slots/ that no running server was started through. */
void slots_sweep(struct local_provider *lp);

/* ---- local_files.c: file helpers ---- */
int local_rmtree(const char *path);
/* mkdir (ok if it exists) with mode, owned by the server account when
 * server_owned and we are root. */
int local_mkdir(const struct local_provider *lp, const char *path, mode_t mode, bool server_owned);
int local_write_file(const char *path, const char *text, mode_t mode);
/* local_write_file, plus fsync of the file and of its directory. */
int local_write_file_durable(const char *path, const char *text, mode_t mode);
/* fsync of the directory that holds path (after a rename or unlink). */
void local_fsync_dir(const char *path);
/* Reads up to outsz-1 bytes (the whole file, or its tail when tail is
 * true); 0 or negative errno. */
int local_read_file(const char *path, char *out, size_t outsz, bool tail);
/* Minimal environment for server processes: no secrets leak from ours. */
extern char *const local_child_env[];
/* Renames a server log above 8 MiB to LOG.1. */
void local_rotate_log(const char *logp);
/* What the server wrote to logp since offset off (the current start
 * attempt), at most outsz-1 bytes of its end. */
void local_read_log_since(const char *logp, off_t off, char *out, size_t outsz);

/* ---- local_instance.c: the instance table and one instance's start ---- */

/* Paths of name's directory, data directory, socket directory and server
 * log (each PATH_MAX; NULL to skip). */
void inst_paths(const struct local_provider *lp, const char *name, char *dir, char *data,
                char *sock, char *logp);
/* Caller holds lp->lock for the *_locked functions. */
struct local_instance *find_locked(struct local_provider *lp, const char *name);
void unlink_locked(struct local_provider *lp, struct local_instance *li);
void set_status(struct local_instance *li, const char *status);
/* li's server has just started and accepts connections. */
void mark_running_locked(struct local_provider *lp, struct local_instance *li);
/* Makes a hidden, busy ("starting") entry for name owned by username and
 * puts it in the table, which claims the name within this mount. On
 * success *out is the entry and lp->lock is STILL HELD, so the caller
 * counts its claim in the same critical section and then unlocks; on
 * failure (shutting down, name taken, out of memory) nothing is held. */
int reserve_name_locking(struct local_provider *lp, const char *name, const char *username,
                         struct local_instance **out, struct errmsg *e);
/* li, made by reserve_name_locking, is complete and its server running:
 * visible, free for other operations and kept running; out describes it.
 * Caller holds the lock. */
void publish_running_locked(struct local_provider *lp, struct local_instance *li,
                            struct instance *out);
void to_instance(const struct local_instance *li, struct instance *out);
/* Chooses a free port for li (not used by another instance) and records
 * it at once; the port, or -EADDRINUSE with e filled. Takes the lock. */
int assign_port(struct local_provider *lp, struct local_instance *li, struct errmsg *e);
int save_meta(struct local_provider *lp, const struct local_instance *li);
/* Starts li's postmaster and waits until it accepts connections. The
 * caller owns li (busy). */
int instance_start(struct local_provider *lp, struct local_instance *li, struct errmsg *e);

/* ---- local_databases.c: NAME/databases/ ---- */

#include <libpq-fe.h>
struct provider;
struct database_list;
/* Connects to dbname of a running instance over its Unix socket as its
 * admin user. -ENOENT (no instance), -EBUSY (not available), else
 * pg_connect's errors. */
int local_admin_connect(struct local_provider *lp, const char *name, const char *dbname,
                        int timeout_ms, PGconn **out, struct errmsg *e);
int local_list_databases(struct provider *p, const struct instance *inst, const char *password,
                         struct database_list *out, struct errmsg *e);
int local_create_database(struct provider *p, const struct instance *inst, const char *password,
                          const char *db, struct errmsg *e);
int local_drop_database(struct provider *p, const struct instance *inst, const char *password,
                        const char *db, struct errmsg *e);

/* ---- local_branch.c: NAME/branch, and new instances from copies ---- */
int local_branch(struct provider *p, const struct instance *inst, const char *newname,
                 struct instance *out, struct errmsg *e);
/* An online base backup of running instance src_name into dst_data (an
 * existing empty directory): backup_label and WAL included, durable. */
int local_online_backup(struct local_provider *lp, const char *src_name, const char *dst_data,
                        const atomic_bool *cancel, struct errmsg *e);
/* Copies a stopped data directory or a finished base backup (reflink
 * where possible). */
int local_copy_datadir(struct local_provider *lp, const char *src, const char *dst,
                       const atomic_bool *cancel, struct errmsg *e);
/* A new instance from a data directory that fill() prepares: reserved in
 * the table, built in spares/WHAT-NAME.N.tmp (removed by the next mount if
 * we die), committed by one rename to instances/NAME, started; started()
 * (if any) runs once the server accepts connections. An intent record
 * ("provision") covers it until it is complete: a crash is undone. */
struct local_create {
	const char *newname;
	const char *username;
	const char *what; /* "branch", "restore": names the temporary directory */
	int (*fill)(struct local_provider *lp, const char *data, const atomic_bool *cancel,
	            void *arg, struct errmsg *e);
	int (*started)(struct local_provider *lp, struct local_instance *li, void *arg,
	               struct errmsg *e);
	void *arg;
};
int local_create_from(struct local_provider *lp, const struct local_create *c, struct instance *out,
                      struct errmsg *e);

/* ---- local_pitr.c: WAL archive, base backups, restore ---- */
#define PITR_ARCHIVE_TIMEOUT_S 60
/* The archive_command for name's server, its archive directory created;
 * 1 when archiving is off (pitr_window=0), 0 when cmd is set, or -errno. */
int pitr_archive_command(struct local_provider *lp, const char *name, char *cmd, size_t cmdsz);
/* At provisioning: the instance's first base backup is the template it
 * was copied from (a cold, consistent copy), as of now. */
void pitr_note_template_base(struct local_provider *lp, const char *name, const char *user);
int local_restore(struct provider *p, const struct instance *inst, long long target_ms,
                  const char *newname, const char *password, struct instance *out,
                  struct errmsg *e);
int local_restore_window(struct provider *p, const struct instance *inst, long long *earliest_ms,
                         long long *latest_ms, long long *archive_bytes, struct errmsg *e);
void *pitr_main(void *arg);

/* ---- local_durable.c: copies flushed in the background ---- */

/* This boot's id (DBOSFS_BOOT_ID_FILE for tests); 0 or -errno. */
int local_boot_id(char *out, size_t outsz);
/* instdir/durable-pending with this boot's id, fsynced with meta and
 * instdir, before the rename that commits a copy. */
int durable_mark(struct local_provider *lp, const char *instdir, struct errmsg *e);
/* The copy's first start skips PostgreSQL's flush of the data directory
 * (fsync = off from dbosfs_first_start.conf). */
int durable_prepare_first_start(struct local_provider *lp, const char *data, struct errmsg *e);
/* The server is up: the file goes, the configuration is reloaded, and a
 * new session shows fsync = on. */
int durable_settle_first_start(struct local_provider *lp, struct local_instance *li,
                               struct errmsg *e);
/* At mount: false if li has a marker of another boot (li->fail_reason is
 * set: not to be started); a marker of this boot sets durable_pending. */
bool durable_check_at_mount(struct local_provider *lp, struct local_instance *li);
void *flusher_main(void *arg);
/* At unmount, servers stopped: flushes what is still pending. */
void durable_flush_stopped(struct local_provider *lp);
struct provider;
void local_durability(struct provider *p, const char *name, char *durable, size_t dsz, char *why,
                      size_t wsz);

/* ---- local_intent.c: crash safety of mutations ---- */

/* Writes STATE_DIR/local/intents/NAME durably before a mutation's first
 * irreversible step: op is "provision", "destroy" or "password" (with the
 * new password, which recovery needs). */
int intent_begin(struct local_provider *lp, const char *name, const char *op, const char *password,
                 struct errmsg *e);
void intent_end(struct local_provider *lp, const char *name);
/* A finished password reset waits for the server's next start. */
bool intent_pending_password(struct local_provider *lp, const char *name);
/* Stops a leftover server of name and removes its directory, socket
 * directory and saved password. */
int local_remove_instance_files(struct local_provider *lp, const char *name, struct errmsg *e);
/* At start: settles every intent record, then sweeps what no instance
 * owns (see local_intent.c). */
void local_recover(struct local_provider *lp);
/* Gives li's running server the saved password, then ends the record. */
int local_resync_password(struct local_provider *lp, struct local_instance *li, struct errmsg *e);

/* ---- local_link.c: .dbosfs/link, servers dbosfs does not run ---- */
struct link_request;
int local_link(struct provider *p, const struct link_request *req, struct instance *out,
               struct errmsg *e);
/* Forgets linked instance li (owned: busy): its directory and saved
 * password go, under an "unlink" intent record; the server is not
 * touched. */
int local_unlink(struct local_provider *lp, struct local_instance *li, struct errmsg *e);
/* Connects to a linked server over TCP as user (sslmode=prefer, libpq's
 * default). Errors: -EACCES (authentication refused), -EHOSTUNREACH
 * (unknown host), -ENOENT (no such role or database), -ECONNREFUSED
 * (other connect failures), -ETIMEDOUT, -EINTR; libpq's message in e. */
int local_connect_linked(const char *host, int port, const char *user, const char *password,
                         const char *dbname, int timeout_ms, const atomic_bool *cancel,
                         PGconn **out, struct errmsg *e);

/* ---- local_threads.c ---- */

/* Waits on lp->cond for up to ms; caller holds lp->lock. */
void timed_wait(struct local_provider *lp, int ms);
void *supervisor_main(void *arg);
void *prober_main(void *arg);
void *linked_prober_main(void *arg);
void *preparer_main(void *arg);

/* ---- local_setup.c: create()'s checks, before the daemon forks ---- */

struct local_options;
int resolve_bindir(const struct local_options *opt, char *out, size_t outsz, struct errmsg *e);
int resolve_account(const struct local_options *opt, struct local_account *a, struct errmsg *e);
/* STATE_DIR/local and its subdirectories; sets lp->runbase (empty when
 * the socket paths would be too long). */
int make_dirs(struct local_provider *lp, const char *state_dir, struct errmsg *e);
/* flock on STATE_DIR/local/lock: one dbosfs per state directory. */
int lock_state_dir(struct local_provider *lp, const char *state_dir, struct errmsg *e);
void write_lock_pid(struct local_provider *lp);
/* A short socket directory in /tmp when state_dir is too deep. */
int make_tmp_runbase(struct local_provider *lp, struct errmsg *e);

#endif
