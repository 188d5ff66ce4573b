/* What the read-only per-instance files contain. Pure functions, so they
 * have unit tests. Each appends to out and returns 0 or -ENOMEM. */
#ifndef DBOSFS_CONTENT_H
#define DBOSFS_CONTENT_H

#include "buf.h"
#include "instance.h"

/* "status\n" */
int content_status(const struct instance *i, struct buf *out);
/* "name: ...\nstatus: ...\nhost: ...\nport: ...\nusername: ...\nlinked: yes|no\n..." */
int content_info(const struct instance *i, const char *provider_kind, struct buf *out);
/* One JSON object with the API's field names, newline-terminated. */
int content_info_json(const struct instance *i, struct buf *out);
/* The instances table: a header, then one line per instance,
 * "NAME STATUS HOST:PORT USER" in columns aligned like pg_lsclusters. */
int content_instances(const struct instance *items, size_t n, struct buf *out);
/* The same instances as one JSON array of info.json objects. */
int content_instances_json(const struct instance *items, size_t n, struct buf *out);
/* "postgresql://USER@HOST:PORT/postgres\n" (never a password); with
 * ca_path (the CA that signed the server's certificate) followed by
 * "?sslmode=verify-full&sslrootcert=CA_PATH". */
int content_url(const struct instance *i, const char *ca_path, struct buf *out);
/* PGHOST=, PGPORT=, PGUSER=, PGDATABASE=postgres lines; with ca_path also
 * PGSSLMODE=verify-full, PGSSLROOTCERT= and NODE_EXTRA_CA_CERTS=CA_PATH. */
int content_env(const struct instance *i, const char *ca_path, struct buf *out);
/* "HOST:PORT:*:USER:PASSWORD\n" with ':' and '\' escaped as .pgpass wants */
int content_pgpass(const struct instance *i, const char *password, struct buf *out);

#endif
