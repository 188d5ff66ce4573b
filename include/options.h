/* The mount options every provider shares (spec/filesystem.md, "Mounting"),
 * after defaults. Each provider parses its own keys into its own struct
 * (provider.h, struct provider_kind); none of them are here. */
#ifndef DBOSFS_OPTIONS_H
#define DBOSFS_OPTIONS_H

#include <stdbool.h>
#include <sys/types.h>

struct dbosfs_options {
	char *provider;    /* "local" (default) or "cloud" */
	char *state_dir;   /* absolute; created 0700 if missing */
	char *db_username; /* admin user for instances made by mkdir */
	int refresh;       /* seconds between background refreshes */
	int confirm_ttl;   /* seconds a destroy confirmation stays armed */
	int grace_ms;      /* slow providers: mkdir/rmdir wait at most this long, then go on in the
	                      background */
	bool foreground;
	bool debug;
	uid_t owner_uid; /* the mounting user */
	gid_t owner_gid;
};

#endif
