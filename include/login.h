/* `dbosfs login`: the DBOS Cloud device-authorization login of
 * `npx dbos-cloud login`, writing the same .dbos/credentials file. */
#ifndef DBOSFS_LOGIN_H
#define DBOSFS_LOGIN_H

#include <stdatomic.h>
#include <stdio.h>

#include "common.h"

struct login_options {
	const char *domain;      /* NULL: $DBOS_DOMAIN, else cloud.dbos.dev */
	const char *auth_domain; /* NULL: by domain, as the CLI chooses */
	const char *cafile;      /* extra trusted CAs, may be NULL */
	const char *credentials; /* NULL: ./.dbos/credentials */
};

/* Runs the whole login, telling the user what to do on out. Stops with
 * -EINTR, writing nothing, once *cancel turns true. 0 once the
 * credentials file is written; else a negative errno with a message. */
int cloud_login(const struct login_options *o, FILE *out, const atomic_bool *cancel,
                struct errmsg *e);

#endif
