/* One database instance as every provider describes it. Field names follow
 * the DBOS Cloud API's instance object (spec/dbos-cloud-api.md). */
#ifndef DBOSFS_INSTANCE_H
#define DBOSFS_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>

struct instance {
	char name[32];         /* PostgresInstanceName */
	char status[32];       /* Status: provisioning, available, ... */
	char host[256];        /* HostName ("" while unknown) */
	int port;              /* Port (0 while unknown) */
	char username[64];     /* DatabaseUsername (or AdminUsername) */
	char admin_name[64];   /* DBOSAdminName, "" if absent */
	bool linked;           /* IsLinked: a user's own Postgres (byod) */
	char supabase_ref[64]; /* SupabaseReference, "" for null */
};

struct instance_list {
	struct instance *items;
	size_t count;
	/* Slots allocated by instance_list_push (0: unknown, e.g. items was
	 * allocated elsewhere; push then grows it). */
	size_t cap;
};

void instance_list_free(struct instance_list *l);
/* Appends a copy; 0 or -ENOMEM. */
int instance_list_push(struct instance_list *l, const struct instance *inst);

/* One database inside an instance (NAME/databases/DB). */
struct database_info {
	char name[64];
	long long size; /* bytes, pg_database_size */
};

struct database_list {
	struct database_info *items;
	size_t count;
};
void database_list_free(struct database_list *l);

/* The user to log in as: DatabaseUsername, except for Supabase-linked
 * instances, which Supabase's pooler knows as postgres.REF (as the CLI's
 * `db url` prints it). */
void instance_login_user(const struct instance *i, char *out, size_t outsz);

/* A status from which `wait` returns: anything but the transitional ones
 * (provisioning, starting, restarting, deleting, restoring, ...). */
bool instance_status_settled(const char *status);

#endif
