/* Mount options (spec/filesystem.md, "Mounting"), after defaults. */
#ifndef DBOSFS_OPTIONS_H
#define DBOSFS_OPTIONS_H

#include <stdbool.h>
#include <sys/types.h>

struct dbosfs_options {
	char *provider;    /* "local" (default) or "cloud" */
	char *state_dir;   /* absolute; created 0700 if missing */
	char *pg_bindir;   /* NULL: pg_config --bindir if it has initdb, else newest
	                      /usr/lib/postgresql/N/bin */
	char *pg_user;     /* servers run as this account when we are root */
	char *db_username; /* admin user for instances made by mkdir */
	char *credentials; /* cloud credentials file; NULL: ./.dbos/credentials,
	                      then ~/.dbos/credentials */
	char *domain;      /* cloud API host */
	char *auth_domain; /* NULL: login.dbos.dev for cloud.dbos.dev, else
	                      dbos-inc.us.auth0.com (tests point it elsewhere) */
	char *cafile;      /* extra CA bundle */
	int refresh;       /* seconds between background refreshes */
	int confirm_ttl;   /* seconds a destroy confirmation stays armed */
	int grace_ms;      /* slow providers: mkdir/rmdir wait at most this long, then go on in the
	                      background */
	char *pitr_window; /* local: how far back restore reaches ("7d"; "0" off) */
	int spares;        /* local: running spare servers kept ready (default 2; 0: none) */
	bool foreground;
	bool debug;
	uid_t owner_uid; /* the mounting user */
	gid_t owner_gid;
};

#endif
