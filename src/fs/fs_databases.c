/* /NAME/databases/: the databases inside one instance.
 *
 *   databases/          one directory per database (templates left out);
 *                       mkdir creates, confirm + rmdir drops
 *   databases/DB/url    postgresql://USER@HOST:PORT/DB
 *   databases/DB/env    NAME/env with PGDATABASE=DB
 *   databases/DB/size   bytes
 *   databases/DB/confirm write DB to arm its rmdir
 *
 * The lists are cached here and filled after every refresh period
 * (fs_databases_refresh, in the refresher's hook thread, so that a server
 * that does not answer never delays the instance list; up to
 * DB_LIST_WORKERS instances at once): one query per instance, and only for
 * the instances whose databases/ was read within DB_WANTED_MS. readdir, lookups
 * and reads serve the cache and never wait on a server themselves. The first
 * readdir of an instance not listed yet asks the refresher for a list at once
 * and waits for it a moment (DB_FIRST_WAIT_MS, Ctrl-C ends it); only a list
 * that takes longer makes it fail with EAGAIN. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmap.h"
#include "fs.h"
#include "log.h"
#include "proc.h"
#include "content.h"
#include "validate.h"

/* A databases/ not read for this long is no longer listed every period. */
#define DB_WANTED_MS (5 * 60 * 1000LL)
/* How long the first ls of a databases/ waits for the refresher's first
 * list (a local query takes milliseconds) before it fails with EAGAIN. */
#define DB_FIRST_WAIT_MS 2000
/* How many instances' lists are fetched at once. */
#define DB_LIST_WORKERS 8

struct db_confirm {
	char db[64];
	long long deadline;
	struct db_confirm *next;
};

struct db_inst {
	char name[NODE_NAME_MAX];
	long long wanted_ms; /* last time databases/ was read */
	bool listed;
	unsigned long gen; /* bumped by every change through the mount */
	struct database_list list;
	char error[ERRMSG_MAX]; /* why the last list failed, "" if it did not */
	int error_rc;           /* and its errno */
	struct db_confirm *confirms;
	struct db_inst *next;
};

struct db_cache {
	pthread_mutex_t lock;
	struct db_inst *insts;
};

int fs_databases_init(struct dbosfs *fs)
{
	fs->dbs = calloc(1, sizeof(*fs->dbs));
	if (!fs->dbs)
		return -ENOMEM;
	pthread_mutex_init(&fs->dbs->lock, NULL);
	return 0;
}

static void inst_free(struct db_inst *di)
{
	while (di->confirms) {
		struct db_confirm *c = di->confirms;
		di->confirms = c->next;
		free(c);
	}
	database_list_free(&di->list);
	free(di);
}

void fs_databases_free(struct dbosfs *fs)
{
	if (!fs->dbs)
		return;
	while (fs->dbs->insts) {
		struct db_inst *di = fs->dbs->insts;
		fs->dbs->insts = di->next;
		inst_free(di);
	}
	pthread_mutex_destroy(&fs->dbs->lock);
	free(fs->dbs);
	fs->dbs = NULL;
}

/* Caller holds the lock. With create, a missing entry is made. */
static struct db_inst *find_inst(struct db_cache *c, const char *name, bool create)
{
	for (struct db_inst *di = c->insts; di; di = di->next)
		if (strcmp(di->name, name) == 0)
			return di;
	if (!create)
		return NULL;
	struct db_inst *di = calloc(1, sizeof(*di));
	if (!di)
		return NULL;
	snprintf(di->name, sizeof(di->name), "%s", name);
	di->next = c->insts;
	c->insts = di;
	return di;
}

static struct database_info *find_db(struct db_inst *di, const char *db)
{
	for (size_t i = 0; i < di->list.count; i++)
		if (strcmp(di->list.items[i].name, db) == 0)
			return &di->list.items[i];
	return NULL;
}

/* Marks databases/ of name as read now; false if the entry cannot exist. */
static void mark_wanted(struct dbosfs *fs, const char *name)
{
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, name, true);
	if (di)
		di->wanted_ms = now_ms();
	pthread_mutex_unlock(&fs->dbs->lock);
}

struct db_job {
	char name[NODE_NAME_MAX];
	unsigned long gen;
};

/* One instance's list, into the cache (unless a change through the mount
 * made it stale meanwhile). */
static void list_one(struct dbosfs *fs, const struct db_job *job)
{
	const struct provider_ops *ops = fs->provider->ops;
	struct instance inst;
	struct database_list l = {0};
	struct errmsg e = {{0}};
	char pw[PASSWORD_MAX + 2];
	int rc;

	if (!state_get(fs->cache, job->name, &inst))
		return;
	if (strcmp(inst.status, "available") != 0) {
		rc = errmsg_set(&e, -EBUSY, "the instance is %s, not available", inst.status);
	} else {
		bool has_pw = secret_get(&fs->secrets, inst.name, pw, sizeof(pw), NULL) == 0;
		rc = ops->list_databases(fs->provider, &inst, has_pw ? pw : NULL, &l, &e);
		secret_wipe(pw, sizeof(pw));
	}
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, job->name, false);
	/* A list that started before a mkdir/rmdir through the mount may
	 * predate it: the next period brings a fresh one. */
	if (di && di->gen == job->gen) {
		if (rc == 0) {
			database_list_free(&di->list);
			di->list = l;
			l.items = NULL;
			di->listed = true;
			di->error[0] = '\0';
		} else {
			snprintf(di->error, sizeof(di->error), "%s", e.text);
			di->error_rc = rc;
		}
	}
	pthread_mutex_unlock(&fs->dbs->lock);
	database_list_free(&l);
}

/* The instances are listed by up to DB_LIST_WORKERS threads at once: a
 * server that does not answer (up to its connect timeout) holds up only
 * its own list. */
struct db_batch {
	struct dbosfs *fs;
	const struct db_job *jobs;
	size_t n;
	atomic_size_t next;
};

static void *list_worker(void *arg)
{
	struct db_batch *b = arg;
	for (size_t i; (i = atomic_fetch_add(&b->next, 1)) < b->n;)
		list_one(b->fs, &b->jobs[i]);
	return NULL;
}

void fs_databases_refresh(void *arg)
{
	struct dbosfs *fs = arg;
	const struct provider_ops *ops = fs->provider->ops;
	struct db_job *jobs = NULL;
	size_t n = 0, cap = 0;
	long long now = now_ms();

	if (!ops->list_databases)
		return;
	pthread_mutex_lock(&fs->dbs->lock);
	for (struct db_inst **pp = &fs->dbs->insts; *pp;) {
		struct db_inst *di = *pp;
		/* Instances that are gone take their entry with them. */
		if (!state_get(fs->cache, di->name, NULL)) {
			*pp = di->next;
			inst_free(di);
			continue;
		}
		pp = &di->next;
		if (now - di->wanted_ms > DB_WANTED_MS)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			struct db_job *nj = realloc(jobs, cap * sizeof(*jobs));
			if (!nj)
				break;
			jobs = nj;
		}
		snprintf(jobs[n].name, sizeof(jobs[n].name), "%s", di->name);
		jobs[n++].gen = di->gen;
	}
	pthread_mutex_unlock(&fs->dbs->lock);

	struct db_batch batch = {.fs = fs, .jobs = jobs, .n = n};
	pthread_t workers[DB_LIST_WORKERS];
	size_t started = 0;
	atomic_init(&batch.next, 0);
	for (size_t w = 1; w < n && w < DB_LIST_WORKERS; w++)
		if (pthread_create(&workers[started], NULL, list_worker, &batch) == 0)
			started++;
	list_worker(&batch); /* this thread works too */
	for (size_t w = 0; w < started; w++)
		pthread_join(workers[w], NULL);
	free(jobs);
}

/* ---- databases/ ---- */

/* Returns once the refresher has listed (or failed to list) name's
 * databases, after DB_FIRST_WAIT_MS, or on Ctrl-C. The wait is on our own
 * cache, polled: the refresher does the query. */
static void wait_first_list(struct dbosfs *fs, const char *name)
{
	bool kicked = false;

	for (int waited = 0; waited <= DB_FIRST_WAIT_MS && !op_interrupted(); waited += 20) {
		pthread_mutex_lock(&fs->dbs->lock);
		struct db_inst *di = find_inst(fs->dbs, name, true);
		bool known = !di || di->listed || di->error[0];
		if (di)
			di->wanted_ms = now_ms();
		pthread_mutex_unlock(&fs->dbs->lock);
		if (known)
			return;
		if (!kicked) {
			refresher_kick(fs->refresher);
			kicked = true;
		}
		proc_sleep_ms(20);
	}
}

static int list_databases(struct dbosfs *fs, const struct node *dir, char ***names, size_t *count)
{
	char msg[ERRMSG_MAX + 160];
	int rc = 0;

	if (!fs->provider->ops->list_databases) {
		snprintf(msg, sizeof(msg),
		         "ls %s/databases refused: the %s provider does not list databases",
		         dir->name, fs->provider->ops->kind);
		return instance_fail(fs, dir->name, -EOPNOTSUPP, msg);
	}
	*names = NULL;
	*count = 0;
	/* No saved password was the last word: if one has been saved since,
	 * the first list is awaited again rather than the old refusal served. */
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *old = find_inst(fs->dbs, dir->name, false);
	bool retry = old && !old->listed && old->error_rc == -ENODATA;
	pthread_mutex_unlock(&fs->dbs->lock);
	char pw[PASSWORD_MAX + 2];
	if (retry && secret_get(&fs->secrets, dir->name, pw, sizeof(pw), NULL) == 0) {
		pthread_mutex_lock(&fs->dbs->lock);
		old = find_inst(fs->dbs, dir->name, false);
		if (old && !old->listed && old->error_rc == -ENODATA) {
			old->error[0] = '\0';
			old->error_rc = 0;
			old->gen++; /* a list under way, without the password, is stale */
		}
		pthread_mutex_unlock(&fs->dbs->lock);
	}
	secret_wipe(pw, sizeof(pw));
	wait_first_list(fs, dir->name);
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, dir->name, true);
	if (!di) {
		pthread_mutex_unlock(&fs->dbs->lock);
		return -ENOMEM;
	}
	di->wanted_ms = now_ms();
	if (!di->listed) {
		/* Not an empty list: we do not know yet. */
		if (di->error[0]) {
			snprintf(msg, sizeof(msg), "ls %s/databases failed: %s", dir->name,
			         di->error);
			/* No saved password is the user's to fix: said as such. */
			rc = di->error_rc == -ENODATA ? -ENODATA : -EIO;
		} else {
			snprintf(msg, sizeof(msg),
			         "ls %s/databases: the list of databases is being fetched; try "
			         "again in a moment",
			         dir->name);
			rc = -EAGAIN;
		}
	} else {
		*names = calloc(di->list.count ? di->list.count : 1, sizeof(char *));
		if (!*names)
			rc = -ENOMEM;
		for (size_t i = 0; !rc && i < di->list.count; i++) {
			(*names)[i] = strdup(di->list.items[i].name);
			if (!(*names)[i])
				rc = -ENOMEM;
			else
				*count = i + 1;
		}
	}
	pthread_mutex_unlock(&fs->dbs->lock);
	if (rc == -ENOMEM) {
		for (size_t i = 0; i < *count; i++)
			free((*names)[i]);
		free(*names);
		*names = NULL;
		*count = 0;
		return rc;
	}
	if (rc) {
		refresher_kick(fs->refresher);
		return instance_fail(fs, dir->name, rc, msg);
	}
	return 0;
}

static bool database_exists(struct dbosfs *fs, const struct node *dir, const char *db)
{
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, dir->name, false);
	bool found = di && find_db(di, db) != NULL;
	if (di)
		di->wanted_ms = now_ms();
	pthread_mutex_unlock(&fs->dbs->lock);
	if (!di)
		mark_wanted(fs, dir->name);
	return found;
}

/* The admin's saved password, for providers that connect with it. */
static bool get_password(struct dbosfs *fs, const char *name, char *pw, size_t pwsz)
{
	return secret_get(&fs->secrets, name, pw, pwsz, NULL) == 0;
}

static int databases_mkdir(struct dbosfs *fs, const struct node *dir, const char *db)
{
	const char *name = dir->name;
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 160];
	struct instance inst;
	char pw[PASSWORD_MAX + 2];

	if (!fs_caller_is_owner())
		return -EACCES; /* not recorded, as for instances */
	int rc = validate_database_name(db, &e);
	if (!rc && !fs->provider->ops->create_database)
		rc = errmsg_set(&e, -EOPNOTSUPP, "the %s provider cannot create databases",
		                fs->provider->ops->kind);
	if (!rc && !state_get(fs->cache, name, &inst))
		rc = errmsg_set(&e, -ENOENT, "the instance is gone");
	if (!rc && database_exists(fs, dir, db))
		rc = errmsg_set(&e, -EEXIST, "the database exists");
	if (rc) {
		snprintf(msg, sizeof(msg), "mkdir %s/databases/%.64s refused: %s", name, db,
		         e.text);
		return instance_fail(fs, name, rc, msg);
	}
	bool has_pw = get_password(fs, name, pw, sizeof(pw));
	rc = fs->provider->ops->create_database(fs->provider, &inst, has_pw ? pw : NULL, db, &e);
	secret_wipe(pw, sizeof(pw));
	if (rc) {
		snprintf(msg, sizeof(msg), "mkdir %s/databases/%s failed (%s): %s", name, db,
		         errno_name(rc), e.text);
		return instance_fail(fs, name, rc, msg);
	}
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, name, true);
	if (di && !find_db(di, db)) {
		struct database_info *items =
		    realloc(di->list.items, (di->list.count + 1) * sizeof(*items));
		if (items) {
			di->list.items = items;
			memset(&items[di->list.count], 0, sizeof(*items));
			snprintf(items[di->list.count].name, sizeof(items[0].name), "%s", db);
			di->list.count++;
		}
		di->gen++;
	}
	pthread_mutex_unlock(&fs->dbs->lock);
	log_event("database %s created in %s", db, name);
	return 0;
}

static int databases_rmdir(struct dbosfs *fs, const struct node *entry)
{
	const char *name = entry->name, *db = entry->sub;
	struct errmsg e = {{0}};
	char msg[ERRMSG_MAX + 160];
	struct instance inst;
	char pw[PASSWORD_MAX + 2];
	long long left = 0;
	int rc = 0;

	if (!fs_caller_is_owner())
		return -EACCES;
	if (strcmp(db, "postgres") == 0) {
		snprintf(msg, sizeof(msg),
		         "rmdir %s/databases/postgres refused: postgres is the instance's "
		         "maintenance database and cannot be dropped",
		         name);
		return instance_fail(fs, name, -EPERM, msg);
	}
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, name, false);
	for (struct db_confirm *c = di ? di->confirms : NULL; c; c = c->next)
		if (strcmp(c->db, db) == 0)
			left = c->deadline - now_ms();
	pthread_mutex_unlock(&fs->dbs->lock);
	if (left <= 0) {
		snprintf(msg, sizeof(msg),
		         "rmdir %s/databases/%s refused: dropping a database is irreversible and "
		         "needs a confirmation first: echo %s > %s/databases/%s/confirm (valid %d "
		         "s), then rmdir again",
		         name, db, db, name, db, fs->opt->confirm_ttl);
		return instance_fail(fs, name, -EBUSY, msg);
	}
	if (!fs->provider->ops->drop_database)
		rc = errmsg_set(&e, -EOPNOTSUPP, "the %s provider cannot drop databases",
		                fs->provider->ops->kind);
	else if (!state_get(fs->cache, name, &inst))
		rc = errmsg_set(&e, -ENOENT, "the instance is gone");
	if (!rc) {
		bool has_pw = get_password(fs, name, pw, sizeof(pw));
		rc = fs->provider->ops->drop_database(fs->provider, &inst, has_pw ? pw : NULL, db,
		                                      &e);
		secret_wipe(pw, sizeof(pw));
	}
	if (rc) {
		snprintf(msg, sizeof(msg), "rmdir %s/databases/%s failed (%s): %s", name, db,
		         errno_name(rc), e.text);
		return instance_fail(fs, name, rc, msg);
	}
	pthread_mutex_lock(&fs->dbs->lock);
	di = find_inst(fs->dbs, name, false);
	if (di) {
		for (size_t i = 0; i < di->list.count; i++)
			if (strcmp(di->list.items[i].name, db) == 0) {
				di->list.items[i] = di->list.items[--di->list.count];
				break;
			}
		for (struct db_confirm **pp = &di->confirms; *pp; pp = &(*pp)->next)
			if (strcmp((*pp)->db, db) == 0) {
				struct db_confirm *c = *pp;
				*pp = c->next;
				free(c);
				break;
			}
		di->gen++;
	}
	pthread_mutex_unlock(&fs->dbs->lock);
	log_event("database %s dropped from %s", db, name);
	return 0;
}

/* ---- databases/DB/ files ---- */

/* Replaces the first occurrence of from (ending at one of the characters
 * in enders, or at the end) in b with to. */
static int replace_once(struct buf *b, const char *from, const char *enders, const char *to)
{
	size_t flen = strlen(from);
	for (size_t i = 0; b->len >= flen && i <= b->len - flen; i++) {
		if (memcmp(b->data + i, from, flen) != 0)
			continue;
		char after = i + flen < b->len ? b->data[i + flen] : '\0';
		if (after && !strchr(enders, after))
			continue;
		struct buf out = BUF_INIT;
		int rc = buf_append(&out, b->data, i);
		if (!rc)
			rc = buf_puts(&out, to);
		if (!rc)
			rc = buf_append(&out, b->data + i + flen, b->len - i - flen);
		if (rc) {
			buf_free(&out);
			return rc;
		}
		buf_free(b);
		*b = out;
		return 0;
	}
	return 0;
}

/* NAME's url or env text with the database in place of postgres: the
 * first `from` (ending at one of enders) becomes `to`; the TLS parameters,
 * whatever NAME's file says, stay as they are. */
static int
build_db_instance_text(struct dbosfs *fs, const struct node *n,
                       int (*content)(const struct instance *, const char *, struct buf *),
                       const char *from, const char *enders, const char *to, struct buf *out)
{
	struct instance inst;
	if (!state_get(fs->cache, n->name, &inst))
		return -ENOENT;
	struct buf b = BUF_INIT;
	char ca[PATH_MAX];
	int has_ca = instance_ca_path(fs, n->name, ca, sizeof(ca));
	if (has_ca < 0)
		return has_ca;
	int rc = content(&inst, has_ca ? ca : NULL, &b);
	if (!rc)
		rc = replace_once(&b, from, enders, to);
	if (!rc)
		rc = buf_append(out, b.data, b.len);
	buf_free(&b);
	return rc;
}

static int build_db_url(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	char to[80];
	snprintf(to, sizeof(to), "/%s", n->sub);
	return build_db_instance_text(fs, n, content_url, "/postgres", "?\n", to, out);
}

static int build_db_env(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	char to[96];
	snprintf(to, sizeof(to), "PGDATABASE=%s", n->sub);
	return build_db_instance_text(fs, n, content_env, "PGDATABASE=postgres", "\n", to, out);
}

static int build_db_size(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	long long size = -1;
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, n->name, false);
	struct database_info *d = di ? find_db(di, n->sub) : NULL;
	if (d)
		size = d->size;
	pthread_mutex_unlock(&fs->dbs->lock);
	return size < 0 ? -ENOENT : buf_printf(out, "%lld\n", size);
}

static int build_db_confirm(struct dbosfs *fs, const struct node *n, struct buf *out)
{
	long long left = 0;
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, n->name, false);
	for (struct db_confirm *c = di ? di->confirms : NULL; c; c = c->next)
		if (strcmp(c->db, n->sub) == 0)
			left = c->deadline - now_ms();
	pthread_mutex_unlock(&fs->dbs->lock);
	if (left > 0)
		return buf_printf(out, "armed: rmdir %s/databases/%s within %lld s drops it\n",
		                  n->name, n->sub, (left + 999) / 1000);
	return buf_printf(out, "not armed: echo %s > %s/databases/%s/confirm arms rmdir for %d s\n",
	                  n->sub, n->name, n->sub, fs->opt->confirm_ttl);
}

static int write_db_confirm(struct dbosfs *fs, const struct node *n, const char *value,
                            struct errmsg *e)
{
	if (strcmp(value, n->sub) != 0)
		return errmsg_set(e, -EINVAL,
		                  "confirm refused: write the database's own name (%s) to "
		                  "%s/databases/%s/confirm, got '%.64s'",
		                  n->sub, n->name, n->sub, value);
	int rc = 0;
	pthread_mutex_lock(&fs->dbs->lock);
	struct db_inst *di = find_inst(fs->dbs, n->name, true);
	struct db_confirm *c = NULL;
	for (c = di ? di->confirms : NULL; c; c = c->next)
		if (strcmp(c->db, n->sub) == 0)
			break;
	if (di && !c && (c = calloc(1, sizeof(*c))) != NULL) {
		snprintf(c->db, sizeof(c->db), "%s", n->sub);
		c->next = di->confirms;
		di->confirms = c;
	}
	if (c)
		c->deadline = now_ms() + fs->opt->confirm_ttl * 1000LL;
	else
		rc = errmsg_set(e, -ENOMEM, "out of memory");
	pthread_mutex_unlock(&fs->dbs->lock);
	if (!rc)
		log_event("drop of database %s in %s armed for %d s", n->sub, n->name,
		          fs->opt->confirm_ttl);
	return rc;
}

static const struct file_def database_files[] = {
    {"url", 0444, .build = build_db_url},
    {"env", 0444, .build = build_db_env},
    {"size", 0444, .build = build_db_size},
    {"confirm", 0644, .build = build_db_confirm, .write = write_db_confirm},
};

static const struct dir_def database_dir = {
    .mode = 0755,
    .files = database_files,
    .file_count = sizeof(database_files) / sizeof(database_files[0]),
};

const struct dir_def databases_dir = {
    .name = "databases",
    .mode = 0755,
    .entry = &database_dir,
    .list = list_databases,
    .exists = database_exists,
    .mkdir = databases_mkdir,
    .rmdir = databases_rmdir,
};
