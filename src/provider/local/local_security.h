/* Who may do what inside a local instance, and how dbosfs itself gets in.
 *
 *   - The admin role (db_username, "dbos_user" by default) is not a
 *     superuser: CREATEDB, owner of `postgres` and of what it creates,
 *     pg_read_all_data, pg_write_all_data, pg_monitor, pg_signal_backend.
 *     No CREATEROLE (before PostgreSQL 16 that lets a role grant itself
 *     pg_execute_server_program); extra roles come from
 *     dbosfs.create_role(), a SECURITY DEFINER function.
 *   - dbosfs's own door is the bootstrap superuser LOCAL_SUPERUSER. Its
 *     password is STATE_DIR/local/superuser (0600, the mount owner's); it is
 *     accepted only over the instance's private Unix socket.
 *   - pg_hba.conf asks every connection for a SCRAM password: nothing is
 *     trusted.
 *   - TLS with a per-state-directory CA (pg_tls.c). */
#ifndef DBOSFS_LOCAL_SECURITY_H
#define DBOSFS_LOCAL_SECURITY_H

#include <libpq-fe.h>
#include <stdatomic.h>

#include "local_internal.h"

#define LOCAL_SUPERUSER "dbosfs"
/* First line of the pg_hba.conf dbosfs writes: a data directory without it
 * was made by an older dbosfs and is brought in line before it starts. */
#define LOCAL_HBA_MARK      "# dbosfs pg_hba.conf v2"
#define LOCAL_SU_SECRET_LEN 32

/* ---- pg_tls.c ---- */

/* Makes DIR (0711) and in it, once: ca.key (0600), ca.pem, server.key
 * (0600), server.crt for 127.0.0.1 and localhost signed by the CA. An
 * existing valid set is kept. */
int tls_ensure(const char *dir, struct errmsg *e);
/* Copies server.crt and server.key (0600) of tlsdir into datadir, owned by
 * the server account. */
int tls_install(const char *tlsdir, const char *datadir, const struct local_account *acct,
                struct errmsg *e);

/* ---- pg_security.c ---- */

/* Reads STATE_DIR/local/superuser, creating it (0600) with a random
 * password the first time. out gets LOCAL_SU_SECRET_LEN+1 bytes. */
int su_secret_load(const char *root, char *out, size_t outsz, struct errmsg *e);
/* A SCRAM-SHA-256 verifier of password (4096 iterations, random salt), as
 * PostgreSQL stores it; what the server sees instead of the password. */
int scram_verifier(const char *password, char *out, size_t outsz);
/* Room for one verifier: "SCRAM-SHA-256$4096:" and three base64 fields. */
#define SEC_VERIFIER_MAX 256

/* As root: a data directory that belongs to another account (made with
 * another pg_user, or before servers had an account of their own) is
 * handed to the server account, files and all, and the log says so. */
int sec_adopt_datadir(struct local_provider *lp, const char *datadir, const char *what,
                      struct errmsg *e);
/* True if DATADIR/pg_hba.conf is one this version wrote. */
bool sec_datadir_current(const char *datadir);
/* Writes pg_hba.conf, the TLS files and the settings into a data directory
 * (owned by the server account). The hba file is written last: it marks
 * the directory as current. */
int sec_write_files(struct local_provider *lp, const char *datadir, struct errmsg *e);

/* After initdb (bootstrap superuser LOCAL_SUPERUSER): creates the admin
 * role, its grants and the dbosfs schema, in single-user mode. */
int sec_setup_template(struct local_provider *lp, const char *datadir, const char *admin,
                       struct errmsg *e);
/* A data directory made by an older dbosfs (admin = bootstrap superuser,
 * local connections trusted): makes it what a new one is. The server must
 * not be running. Idempotent: an interrupted run is finished by the next. */
int sec_bring_in_line(struct local_provider *lp, const char *datadir, const char *admin,
                      const char *name, struct errmsg *e);

/* Sets LOCAL_SUPERUSER's password to lp's again, in single-user mode (the
 * server must not be running). */
int sec_reset_superuser(struct local_provider *lp, const char *datadir, struct errmsg *e);
/* Connects as LOCAL_SUPERUSER over the Unix socket. */
int sec_connect(struct local_provider *lp, const char *sockdir, int port, const char *dbname,
                const atomic_bool *cancel, PGconn **out, struct errmsg *e);
/* ALTER ROLE user PASSWORD '<SCRAM verifier>', as the internal superuser. */
int sec_set_password(struct local_provider *lp, const char *sockdir, int port, const char *user,
                     const char *password, const atomic_bool *cancel, struct errmsg *e);
/* The same with the verifier already computed (scram_verifier), so a
 * caller can compute it before the steps it must not slow down. */
int sec_set_verifier(struct local_provider *lp, const char *sockdir, int port, const char *user,
                     const char *verifier, const atomic_bool *cancel, struct errmsg *e);
/* The ALTER ROLE user PASSWORD 'verifier' statement, escaped for conn, in
 * *out (free it with sec_sql_free, which wipes it). 0 or -ENOMEM. */
int sec_password_sql(PGconn *conn, const char *user, const char *verifier, char **out,
                     struct errmsg *e);
void sec_sql_free(char *sql);

#endif
