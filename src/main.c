/* dbosfs: database instances as a filesystem.
 *
 * Start-up order matters: the provider is created (options, binaries,
 * credentials checked) and the filesystem mounted in the foreground, so a
 * bad configuration fails with a message and a non-zero exit. Only then do
 * we detach, and the provider starts its threads and servers in the
 * detached process, which must be the parent of every server it runs. The
 * detached child reports success or failure to the waiting parent over a
 * pipe before the parent exits. */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <curl/curl.h>
#include <fuse_lowlevel.h>
#include <libpq-fe.h>
#include <limits.h>
#include <linux/fuse.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs.h"
#include "escape.h"
#include "log.h"
#include "login.h"
#include "migrate.h"

extern const struct fuse_operations dbosfs_operations;

#define FUSE_THREADS 64

struct cli {
	struct dbosfs_options opt;
	int refresh_set;
};

#define OPT(t, p)                                                                                  \
	{                                                                                          \
		t, offsetof(struct dbosfs_options, p), 1                                           \
	}
/* The options every provider shares; each provider's own keys come from
 * the registry (provider.h). */
static const struct fuse_opt dbosfs_opts[] = {
    OPT("provider=%s", provider),
    OPT("state_dir=%s", state_dir),
    OPT("db_username=%s", db_username),
    OPT("refresh=%d", refresh),
    OPT("confirm_ttl=%d", confirm_ttl),
    OPT("grace_ms=%d", grace_ms),
    FUSE_OPT_END,
};

static void usage(const char *prog)
{
	/* Each provider's keys, from the registry. */
	struct buf per_provider = BUF_INIT;
	char names[128] = "";
	for (size_t i = 0; provider_kinds[i]; i++) {
		snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? "|" : "",
		         provider_kinds[i]->name);
		buf_printf(&per_provider,
		           "\nprovider=%s options (refused with another provider):\n%s",
		           provider_kinds[i]->name, provider_kinds[i]->help);
	}
	buf_puts(&per_provider, "\n");
	printf(
	    "usage: %s [-f] [-d] [-o OPTION[,OPTION...]] [SOURCE] MOUNTPOINT\n"
	    "       fusermount3 -u MOUNTPOINT      (unmount)\n"
	    "       mount -t fuse.dbosfs dbosfs MOUNTPOINT -o OPTIONS   (or an fstab line)\n"
	    "       %s login [--domain HOST] [--auth-domain HOST] [--cafile FILE]\n"
	    "                [--credentials FILE]\n"
	    "\n"
	    "Database instances as a filesystem: mkdir provisions, cat NAME/status reads\n"
	    "live state, echo NAME > NAME/confirm then rmdir destroys, echo APPDIR >\n"
	    "NAME/migrate runs the schema migrations of its dbos-config.yaml as you, in\n"
	    "your environment (a relative APPDIR is relative to your directory).\n"
	    "echo NEW > NAME/branch makes NEW a copy of NAME as it is now; NAME/databases/\n"
	    "holds one directory per database (mkdir creates, confirm + rmdir drops; cloud:\n"
	    "connects with the password saved at mkdir or written to NAME/password);\n"
	    "echo \"TIME NEW\" > NAME/restore makes NEW a copy of NAME as it was at TIME.\n"
	    "echo \"NAME postgresql://ADMIN[:PASSWORD]@HOST[:PORT]\" > .dbosfs/link links\n"
	    "your own PostgreSQL as NAME (password from ~/.pgpass if omitted; local: a\n"
	    "server dbosfs adopts but never starts, stops or changes; rmdir unlinks).\n"
	    "\n"
	    "dbosfs options:\n"
	    "    -o provider=%-12s where instances live (default: %s)\n"
	    "    -o state_dir=DIR         dbosfs state (default: $XDG_DATA_HOME/dbosfs,\n"
	    "                             ~/.local/share/dbosfs; /var/lib/dbosfs as root)\n"
	    "    -o db_username=NAME      admin user of instances made by mkdir\n"
	    "                             (default: dbos_user; local: not a superuser)\n"
	    "    -o refresh=SECONDS       background refresh period (default: 2)\n"
	    "    -o confirm_ttl=SECONDS   how long a destroy confirmation lasts (default: 60)\n"
	    "    -o grace_ms=MS           cloud: mkdir/rmdir return after this long and\n"
	    "                             finish in the background (default: 500)\n"
	    "    -o attr_timeout=SECONDS  how long the kernel may keep a file's size\n"
	    "                             (default: 0; sizes change with the content)\n"
	    "%s"
	    "    -f                       stay in the foreground\n"
	    "    -d                       debug output (implies -f)\n"
	    "    -h, --help               this help, then the FUSE options\n"
	    "    -V, --version            print the versions of dbosfs, libfuse, libpq, libcurl\n"
	    "\n"
	    "SOURCE (what mount and fstab pass) is ignored, and so are the options _netdev,\n"
	    "nofail, noauto, defaults and x-* (x-systemd.automount). Under systemd\n"
	    "(Type=notify), READY=1 goes to $NOTIFY_SOCKET once the tree is served.\n"
	    "\n"
	    "dbosfs login signs in to DBOS Cloud as `npx dbos-cloud login --get-refresh-token`\n"
	    "does (a URL and code to confirm in a browser) and writes ./.dbos/credentials\n"
	    "(0600) in the CLI's format; --domain as -o domain (default $DBOS_DOMAIN or\n"
	    "cloud.dbos.dev), --credentials FILE writes elsewhere. No Node needed.\n"
	    "\n",
	    prog, prog, names, provider_kinds[0]->name, per_provider.data ? per_provider.data : "");
	buf_free(&per_provider);
}

static char *home_dir(void)
{
	const char *h = getenv("HOME");
	if (h && *h)
		return strdup(h);
	struct passwd *pw = getpwuid(getuid());
	return strdup(pw && pw->pw_dir ? pw->pw_dir : "/");
}

static int set_default(char **field, const char *value)
{
	if (*field)
		return 0;
	*field = strdup(value);
	return *field ? 0 : -ENOMEM;
}

static int apply_defaults(struct dbosfs_options *o)
{
	int rc = set_default(&o->provider, "local");
	if (!o->state_dir) {
		char path[PATH_MAX];
		const char *xdg = getenv("XDG_DATA_HOME");
		if (geteuid() == 0) {
			snprintf(path, sizeof(path), "%s", DBOSFS_ROOT_STATE_DIR);
		} else if (xdg && xdg[0] == '/') {
			snprintf(path, sizeof(path), "%s/dbosfs", xdg);
		} else {
			char *home = home_dir();
			snprintf(path, sizeof(path), "%s/.local/share/dbosfs", home ? home : "/");
			free(home);
		}
		rc = rc ? rc : set_default(&o->state_dir, path);
	}
	/* pg_user stays unset unless given: as root, the local provider then
	 * uses (and makes) its own system account, dbosfs. */
	rc = rc ? rc : set_default(&o->db_username, "dbos_user");
	if (o->refresh <= 0)
		o->refresh = 2;
	if (o->confirm_ttl <= 0)
		o->confirm_ttl = 60;
	if (o->grace_ms < 0)
		o->grace_ms = 500;
	o->owner_uid = getuid();
	o->owner_gid = getgid();
	return rc;
}

/* state_dir must be absolute: the daemon changes directory to / and must
 * never resolve a path inside its own mountpoint. Created 0700 if missing. */
static int prepare_state_dir(struct dbosfs_options *o, struct errmsg *e)
{
	if (o->state_dir[0] != '/') {
		char *abs = realpath(o->state_dir, NULL);
		if (!abs && mkdir(o->state_dir, 0700) == 0)
			abs = realpath(o->state_dir, NULL);
		if (!abs)
			return errmsg_set(e, -errno, "state_dir %s: %s", o->state_dir,
			                  strerror(errno));
		free(o->state_dir);
		o->state_dir = abs;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s", o->state_dir);
	for (char *p = path + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char saved = *p;
			*p = '\0';
			if (mkdir(path, 0700) != 0 && errno != EEXIST)
				return errmsg_set(e, -errno, "cannot create state_dir %s: %s", path,
				                  strerror(errno));
			*p = saved;
			if (!saved)
				break;
		}
	}
	struct stat st;
	if (stat(o->state_dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return errmsg_set(e, -ENOTDIR, "state_dir %s is not a directory", o->state_dir);
	/* Passwords live here: someone else's directory, or one others may
	 * write to, could have them swapped or read (sshd's StrictModes). */
	if (st.st_uid != geteuid())
		return errmsg_set(e, -EPERM,
		                  "state_dir %s belongs to uid %u, not to you (uid %u); pass -o "
		                  "state_dir=DIR of your own",
		                  o->state_dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & 0022)
		return errmsg_set(
		    e, -EPERM, "state_dir %s is writable by others (mode %04o); run chmod go-w %s",
		    o->state_dir, (unsigned)(st.st_mode & 07777), o->state_dir);
	return 0;
}

static void free_options(struct dbosfs_options *o)
{
	free(o->provider);
	free(o->state_dir);
	free(o->db_username);
}

/* The chosen provider's own options, parsed by its table (provider.h). */
struct provider_args {
	const struct provider_kind *kind;
	void *own;
	char foreign[160]; /* the first option of another provider, "" if none */
	const struct provider_kind *foreign_kind;
};

static int find_foreign(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct provider_args *pa = data;
	const struct provider_kind *k;
	if (key == FUSE_OPT_KEY_OPT && !pa->foreign[0] &&
	    (k = provider_kind_owning(arg, pa->kind)) != NULL) {
		snprintf(pa->foreign, sizeof(pa->foreign), "%s", arg);
		pa->foreign_kind = k;
	}
	return 1;
}

/* Picks the provider named by -o provider=, parses its keys out of args and
 * refuses another provider's. 0, or a message in e. */
static int parse_provider_args(struct fuse_args *args, const char *name, struct provider_args *pa,
                               struct errmsg *e)
{
	char names[128] = "";
	pa->kind = provider_kind_find(name);
	if (!pa->kind) {
		for (size_t i = 0; provider_kinds[i]; i++)
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
			         i ? " or " : "", provider_kinds[i]->name);
		return errmsg_set(e, -EINVAL, "unknown provider '%s' (%s)", name, names);
	}
	pa->own = calloc(1, pa->kind->opts_size);
	if (!pa->own)
		return errmsg_set(e, -ENOMEM, "out of memory");
	pa->kind->init_opts(pa->own);
	if (fuse_opt_parse(args, pa->own, pa->kind->opts, NULL) != 0)
		return errmsg_set(e, -EINVAL, "bad provider=%s options; try dbosfs --help", name);
	if (fuse_opt_parse(args, pa, NULL, find_foreign) != 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	if (pa->foreign[0]) {
		/* Never the value: it may be a path, and is no business of the log. */
		char key[64];
		snprintf(key, sizeof(key), "%.*s", (int)strcspn(pa->foreign, "="), pa->foreign);
		return errmsg_set(e, -EINVAL,
		                  "option %s is for provider=%s, and this mount is provider=%s; "
		                  "remove it (dbosfs --help lists each provider's options)",
		                  key, pa->foreign_kind->name, name);
	}
	return 0;
}

static void free_provider_args(struct provider_args *pa)
{
	if (pa->kind && pa->own)
		pa->kind->free_opts(pa->own);
	free(pa->own);
}

/* Positional arguments. mount(8) and fstab run mount.fuse3, which calls
 * `dbosfs SOURCE MOUNTPOINT -o ...`: a second positional argument is the
 * mountpoint and the first, the fstab source field, is ignored. Options
 * meant for mount(8) and systemd are dropped here if they get through. */
struct positional {
	char *arg[2];
	int count;
};

static int take_positional(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct positional *pos = data;
	if (key == FUSE_OPT_KEY_NONOPT) {
		if (pos->count == 2)
			return -1; /* one source and one mountpoint at most */
		pos->arg[pos->count] = strdup(arg);
		return pos->arg[pos->count++] ? 0 : -1;
	}
	if (key == FUSE_OPT_KEY_OPT) {
		static const char *const fstab_only[] = {"_netdev",  "nofail", "noauto", "auto",
		                                         "defaults", "user",   "users",  "nouser",
		                                         "owner",    "group"};
		for (size_t i = 0; i < sizeof(fstab_only) / sizeof(fstab_only[0]); i++)
			if (strcmp(arg, fstab_only[i]) == 0)
				return 0;
		if (strncmp(arg, "x-", 2) == 0 || strncmp(arg, "comment=", 8) == 0)
			return 0;
	}
	return 1;
}

/* Puts the mountpoint back for fuse_parse_cmdline; frees pos. */
static int add_mountpoint(struct fuse_args *args, struct positional *pos)
{
	int rc = pos->count ? fuse_opt_add_arg(args, pos->arg[pos->count - 1]) : 0;
	free(pos->arg[0]);
	free(pos->arg[1]);
	memset(pos, 0, sizeof(*pos));
	return rc;
}

static void print_versions(void)
{
	printf("dbosfs %s\n", DBOSFS_VERSION);
	printf("libfuse %s\n", fuse_pkgversion());
	int pq = PQlibVersion();
	printf("libpq %d.%d\n", pq / 10000, pq % 10000);
	printf("libcurl %s\n", curl_version_info(CURLVERSION_NOW)->version);
}

/* systemd's readiness protocol (sd_notify), spoken directly: one datagram
 * to $NOTIFY_SOCKET ("@" starts an abstract name). Sent once the tree is
 * served, so a Type=notify unit is up only when ls works. */
static void notify_systemd(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	size_t len = strlen(path);
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	char msg[128];
	int n = snprintf(msg, sizeof(msg), "%s\nMAINPID=%ld\n", state, (long)getpid());
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
	           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		log_error("cannot notify systemd at %s: %m", path);
	close(fd);
}

/* Every reply to the kernel passes here. libfuse answers ESTALE for a
 * request that waited on a node removed meanwhile: a `cat NAME/status`
 * racing `rmdir NAME` (whose destroy holds the node for a second or more).
 * The kernel retries an ESTALE once, and a second one reached the caller,
 * an errno no dbosfs promise mentions. The name is gone: ENOENT it is (a
 * new lookup finds a re-created instance). */
static ssize_t reply_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	if (count > 0 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		struct fuse_out_header *h = iov[0].iov_base;
		if (h->error == -ESTALE)
			h->error = -ENOENT;
	}
	return writev(fd, iov, count);
}

static ssize_t request_read(int fd, void *buf, size_t len, void *userdata)
{
	return read(fd, buf, len);
}

/* Installed on the mounted session's own /dev/fuse descriptor. */
static int filter_replies(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {.writev = reply_writev, .read = request_read};
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

/* A start-up failure on stderr: one line, control bytes escaped (option
 * values and paths come from the user). */
static void print_error(const char *msg)
{
	char line[ESCAPED_SIZE(ERRMSG_MAX)];
	escape_message(msg, line, sizeof(line));
	fprintf(stderr, "dbosfs: %s\n", line);
}

/* Detach: the parent waits for the child's verdict on a pipe ("" = ok,
 * else an error message) and exits with it. Returns the write end in the
 * child, or -1 in the foreground. */
static int detach(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0) {
		perror("dbosfs: pipe");
		exit(1);
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("dbosfs: fork");
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		char msg[ERRMSG_MAX];
		ssize_t n, total = 0;
		while ((n = read(p[0], msg + total, sizeof(msg) - 1 - (size_t)total)) > 0)
			total += n;
		msg[total] = '\0';
		if (total == 0) {
			fprintf(stderr, "dbosfs: the daemon died while starting\n");
			_exit(1);
		}
		if (strcmp(msg, "ok") != 0) {
			print_error(msg);
			_exit(1);
		}
		_exit(0);
	}
	close(p[0]);
	setsid();
	return p[1];
}

static void report_start(int fd, const char *msg)
{
	if (fd < 0) {
		if (strcmp(msg, "ok") != 0)
			print_error(msg);
		return;
	}
	ssize_t w = write(fd, msg, strlen(msg));
	(void)w;
	close(fd);
}

static void quiet_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

/* Shutdown (SIGTERM, SIGINT, SIGHUP) ends the FUSE loop, which then waits
 * for busy handlers; so it also counts as an interruption of every long
 * operation (migrations, waits, HTTP), which give up within 100 ms. */
static volatile sig_atomic_t shutting_down;
static struct fuse_session *the_session;

static void on_shutdown_signal(int sig)
{
	shutting_down = sig;
	if (the_session)
		fuse_session_exit(the_session);
}

static int set_signal_handlers(struct fuse_session *se, bool install)
{
	struct sigaction sa = {0};
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = install ? on_shutdown_signal : SIG_DFL;
	the_session = install ? se : NULL;
	int sigs[] = {SIGTERM, SIGINT, SIGHUP};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], &sa, NULL) != 0)
			return -errno;
	/* A closed connection must be an error, not a death. Children reset
	 * their signals before exec. */
	sa.sa_handler = install ? SIG_IGN : SIG_DFL;
	return sigaction(SIGPIPE, &sa, NULL) == 0 ? 0 : -errno;
}

static int interrupted_or_shutting_down(void)
{
	return shutting_down || fuse_interrupted();
}

static atomic_bool login_cancel;

static void on_login_signal(int sig)
{
	(void)sig;
	atomic_store(&login_cancel, true);
}

static void login_usage(FILE *f)
{
	fprintf(f, "usage: dbosfs login [--domain HOST] [--auth-domain HOST] [--cafile FILE]\n"
	           "                    [--credentials FILE]\n");
}

/* `dbosfs login`: no FUSE, no mount; the credentials file for later mounts
 * and for the official CLI. A mount point named login is ./login. */
static int login_main(int argc, char *argv[])
{
	struct login_options lo = {0};
	struct sigaction sa = {0};
	struct errmsg e = {{0}};
	int rc;

	for (int i = 1; i < argc; i++) {
		const char **slot = NULL;

		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			login_usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--domain") == 0)
			slot = &lo.domain;
		else if (strcmp(argv[i], "--auth-domain") == 0)
			slot = &lo.auth_domain;
		else if (strcmp(argv[i], "--cafile") == 0)
			slot = &lo.cafile;
		else if (strcmp(argv[i], "--credentials") == 0)
			slot = &lo.credentials;
		if (!slot || i + 1 >= argc) {
			fprintf(stderr, "dbosfs login: bad argument %s\n",
			        slot ? "(missing value)" : "(unknown option)");
			login_usage(stderr);
			return 2;
		}
		*slot = argv[++i];
	}
	sa.sa_handler = on_login_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	rc = cloud_login(&lo, stdout, &login_cancel, &e);
	if (rc < 0) {
		fprintf(stderr, "dbosfs login: %s\n", e.text);
		return rc == -EINTR ? 130 : 1;
	}
	return 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct dbosfs_options opt = {.grace_ms = -1};
	struct provider_args pa = {0};
	struct fuse_cmdline_opts cl = {0};
	struct errmsg e = {{0}};
	int status = 1;

	if (argc >= 2 && strcmp(argv[1], "login") == 0)
		return login_main(argc - 1, argv + 1);
	struct positional pos = {0};
	if (fuse_opt_parse(&args, &pos, NULL, take_positional) != 0 ||
	    fuse_opt_parse(&args, &opt, dbosfs_opts, NULL) != 0 ||
	    add_mountpoint(&args, &pos) != 0 || fuse_parse_cmdline(&args, &cl) != 0) {
		fprintf(stderr, "dbosfs: bad arguments; try dbosfs --help\n");
		return 2;
	}
	if (cl.show_version) {
		print_versions();
		fuse_opt_free_args(&args);
		return 0;
	}
	if (cl.show_help) {
		usage(argv[0]);
		fuse_lib_help(&args);
		fuse_opt_free_args(&args);
		return 0;
	}
	if (!cl.mountpoint) {
		fprintf(stderr,
		        "usage: %s [-f] [-d] [-o OPTION[,OPTION...]] MOUNTPOINT\n"
		        "try '%s --help' for more information\n",
		        argv[0], argv[0]);
		fuse_opt_free_args(&args);
		return 2;
	}
	opt.foreground = cl.foreground;
	opt.debug = cl.debug;
	if (apply_defaults(&opt) != 0) {
		fprintf(stderr, "dbosfs: out of memory\n");
		return 1;
	}
	if (parse_provider_args(&args, opt.provider, &pa, &e) != 0) {
		print_error(e.text);
		free_provider_args(&pa);
		free(cl.mountpoint);
		fuse_opt_free_args(&args);
		free_options(&opt);
		return 1;
	}
	log_init(opt.foreground);

	struct dbosfs fs = {0};
	fs.opt = &opt;
	fs.mountpoint = cl.mountpoint; /* fuse_parse_cmdline made it absolute */
	pthread_mutex_init(&fs.lock, NULL);
	clock_gettime(CLOCK_REALTIME, &fs.mounted_at);

	/* Every file's size is the length of content that can change at any
	 * time: the kernel asks again at every stat unless -o attr_timeout=
	 * (given later, so it wins) says otherwise. */
	if (fuse_opt_insert_arg(&args, 1, "-oattr_timeout=0") != 0) {
		print_error("out of memory");
		goto out_provider;
	}
	/* First: libfuse refuses an -o key that neither it nor a provider
	 * knows here, naming it, before any state or provider is touched. */
	struct fuse *fuse = fuse_new(&args, &dbosfs_operations, sizeof(dbosfs_operations), &fs);
	if (!fuse)
		goto out_provider;

	int rc = prepare_state_dir(&opt, &e);
	if (rc == 0)
		rc = pa.kind->create(&opt, pa.own, &fs.provider, &e);
	if (rc == 0)
		rc = secret_store_open(&fs.secrets, opt.state_dir, fs.provider->secret_scope, &e);
	/* Under the provider's state_dir lock: kill what migrations of a
	 * crashed earlier daemon left running. */
	if (rc == 0)
		migrate_init(opt.state_dir);
	fs.cache = rc == 0 ? state_new() : NULL;
	if (fs.cache)
		state_on_forget(fs.cache, fs_forget_secret, &fs);
	if (rc == 0 && (!fs.cache || fs_databases_init(&fs) != 0))
		rc = errmsg_set(&e, -ENOMEM, "out of memory");
	if (rc) {
		print_error(e.text);
		goto out_fuse;
	}
	if (fuse_mount(fuse, cl.mountpoint) != 0)
		goto out_fuse;
	if (filter_replies(fuse_get_session(fuse)) != 0) {
		print_error("cannot install the reply filter on /dev/fuse");
		goto out_unmount;
	}

	int verdict_fd = opt.foreground ? -1 : detach();
	rc = fs.provider->ops->start(fs.provider, &e);
	if (rc) {
		report_start(verdict_fd, e.text);
		goto out_unmount;
	}
	/* Serve the current instances from the first ls on. A failure here is
	 * not fatal: the refresher keeps trying and the log says why. */
	if (refresher_refresh_once(fs.provider, fs.cache, &e) != 0)
		log_error("first refresh failed: %s", e.text);
	if (refresher_start(&fs.refresher, fs.provider, fs.cache, opt.refresh) != 0) {
		report_start(verdict_fd, "cannot start the refresher thread");
		goto out_stop;
	}
	if (refresher_set_hook(fs.refresher, fs_databases_refresh, &fs) != 0) {
		report_start(verdict_fd, "cannot start the databases/ refresher thread");
		goto out_refresher;
	}
	op_interrupted_hook = interrupted_or_shutting_down;
	struct fuse_session *se = fuse_get_session(fuse);
	if (set_signal_handlers(se, true) != 0) {
		report_start(verdict_fd, "cannot set signal handlers");
		goto out_refresher;
	}
	log_event("mounted %s (%s), state in %s", cl.mountpoint, fs.provider->provider_line,
	          opt.state_dir);
	report_start(verdict_fd, "ok");
	notify_systemd("READY=1");
	if (verdict_fd >= 0) {
		quiet_stdio();
		if (chdir("/") != 0)
			log_error("chdir /: %m");
	}

	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	/* No idle-thread limit: with one, libfuse 3.14 ends and starts workers
	 * as load comes and goes, which its maintainers advise against with
	 * max_threads. Workers made by a burst stay, idle. (This did not end
	 * the rare LeakSanitizer report of libfuse's own worker allocations
	 * at an unmount, seen twice in test_local_link.py; its cause is not
	 * known.) */
	fuse_loop_cfg_set_max_threads(lc, FUSE_THREADS);
	fuse_loop_cfg_set_clone_fd(lc, cl.clone_fd);
	/* Our signal handlers end the loop with fuse_session_exit(), which
	 * returns 0: only a failure of the loop itself is an error. */
	status = fuse_loop_mt(fuse, lc) == 0 ? 0 : 1;
	fuse_loop_cfg_destroy(lc);
	notify_systemd("STOPPING=1");
	log_event("unmounting %s", cl.mountpoint);

	set_signal_handlers(se, false);
out_refresher:
	fs_background_drain();
	refresher_stop(fs.refresher);
out_stop:
	fs.provider->ops->stop(fs.provider);
out_unmount:
	fuse_unmount(fuse);
	fs_release_all(&fs);
out_fuse:
	fuse_destroy(fuse);
out_provider:
	if (fs.provider)
		fs.provider->ops->free(fs.provider);
	state_free(fs.cache);
	fs_databases_free(&fs);
	log_shutdown();
	free(cl.mountpoint);
	fuse_opt_free_args(&args);
	free_options(&opt);
	free_provider_args(&pa);
	pthread_mutex_destroy(&fs.lock);
	return status;
}
