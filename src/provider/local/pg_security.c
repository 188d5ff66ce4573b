/* Roles, pg_hba.conf and the internal superuser of local instances (see
 * local_security.h for the rules). SQL that must run before any password
 * exists, or while a data directory made by an older dbosfs still trusts
 * local connections, runs in PostgreSQL's single-user mode as the server
 * account: no server, no socket, no authentication to get around. */
#include "local_security.h"
#include "log.h"
#include "pg.h"
#include "proc.h"
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the internal superuser's password ---- */

int su_secret_load(const char *root, char *out, size_t outsz, struct errmsg *e)
{
	char path[PATH_MAX];
	int rc;

	if (outsz < LOCAL_SU_SECRET_LEN + 1)
		return errmsg_set(e, -EINVAL, "internal error: secret buffer too small");
	if (local_path(path, sizeof(path), "%s/superuser", root))
		return errmsg_set(e, -ENAMETOOLONG, "path too long: %s/superuser", root);
	rc = local_read_file(path, out, outsz, false);
	if (rc == 0 && strlen(out) == LOCAL_SU_SECRET_LEN)
		return 0;
	if (rc == 0)
		return errmsg_set(e, -EINVAL,
		                  "%s is damaged (expected %d characters); remove it only together "
		                  "with every instance, whose superuser password it is",
		                  path, LOCAL_SU_SECRET_LEN);
	if (rc != -ENOENT)
		return errmsg_set(e, rc, "cannot read %s: %s", path, strerror(-rc));
	if (password_generate(out, LOCAL_SU_SECRET_LEN))
		return errmsg_set(e, -EIO, "cannot generate a password: getrandom failed");
	/* 0600 and ours (the mount owner's): the server account never
	 * reads it, so a server breakout does not get dbosfs's door. */
	/* Durable before any template is made with it: every instance's
	 * superuser verifier comes from this password. */
	rc = local_write_file_durable(path, out, 0600);
	if (rc) {
		secret_wipe(out, outsz);
		return errmsg_set(e, rc, "cannot write %s: %s", path, strerror(-rc));
	}
	return 0;
}

/* ---- SCRAM verifiers (RFC 5802/7677, PostgreSQL's storage format) ---- */

static int b64(const unsigned char *in, int n, char *out, size_t outsz)
{
	if ((size_t)(4 * ((n + 2) / 3) + 1) > outsz)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, in, n);
	return 0;
}

int scram_verifier(const char *password, char *out, size_t outsz)
{
	unsigned char salt[16], salted[32], client_key[32], stored_key[32], server_key[32];
	unsigned int len = 32;
	char s_salt[32], s_stored[64], s_server[64];
	int rc = -EIO;

	/* Our passwords are printable ASCII, which SASLprep leaves as is. */
	if (RAND_bytes(salt, sizeof(salt)) != 1 ||
	    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof(salt), 4096,
	                      EVP_sha256(), sizeof(salted), salted) != 1 ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Client Key", 10,
	          client_key, &len) ||
	    !SHA256(client_key, sizeof(client_key), stored_key) ||
	    !HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Server Key", 10,
	          server_key, &len))
		goto out;
	if (b64(salt, sizeof(salt), s_salt, sizeof(s_salt)) ||
	    b64(stored_key, 32, s_stored, sizeof(s_stored)) ||
	    b64(server_key, 32, s_server, sizeof(s_server)))
		goto out;
	if ((size_t)snprintf(out, outsz, "SCRAM-SHA-256$4096:%s$%s:%s", s_salt, s_stored,
	                     s_server) >= outsz)
		goto out;
	rc = 0;
out:
	secret_wipe(salted, sizeof(salted));
	secret_wipe(client_key, sizeof(client_key));
	return rc;
}

/* ---- files in the data directory ---- */

/* Every connection needs a SCRAM password; dbosfs's superuser only over
 * the private Unix socket. No replication lines: replication is refused. */
static const char hba_text[] =
    LOCAL_HBA_MARK "\n"
                   "# Written by dbosfs; rewritten when the instance is brought in line.\n"
                   "# Nothing is trusted: every connection proves a password (SCRAM).\n"
                   "# TYPE  DATABASE  USER    ADDRESS       METHOD\n"
                   "local   all       " LOCAL_SUPERUSER "                  scram-sha-256\n"
                   "host    all       " LOCAL_SUPERUSER "  all           reject\n"
                   "local   all       all                     scram-sha-256\n"
                   "host    all       all     127.0.0.1/32  scram-sha-256\n"
                   "host    all       all     ::1/128       scram-sha-256\n";

/* Appended once to postgresql.conf. ssl_* keep their defaults: server.crt
 * and server.key in the data directory. */
static const char conf_mark[] = "# dbosfs: security settings";
static const char conf_text[] = "\n# dbosfs: security settings\n"
                                "ssl = on\n"
                                "password_encryption = scram-sha-256\n";

bool sec_datadir_current(const char *datadir)
{
	char path[PATH_MAX], head[64];

	if (local_path(path, sizeof(path), "%s/pg_hba.conf", datadir))
		return false;
	if (local_read_file(path, head, sizeof(head), false))
		return false;
	return strncmp(head, LOCAL_HBA_MARK "\n", strlen(LOCAL_HBA_MARK) + 1) == 0;
}

/* Writes a file in a data directory, owned by the server account. */
static int write_server_file(struct local_provider *lp, const char *path, const char *text,
                             mode_t mode, struct errmsg *e)
{
	char tmp[PATH_MAX + 8];
	int rc;

	snprintf(tmp, sizeof(tmp), "%s.dbosfs", path);
	rc = local_write_file(tmp, text, mode);
	if (!rc && lp->acct.drop && chown(tmp, lp->acct.uid, lp->acct.gid) < 0)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return errmsg_set(e, rc, "cannot write %s: %s", path, strerror(-rc));
	}
	return 0;
}

static int append_conf(const char *datadir, struct errmsg *e)
{
	char path[PATH_MAX], *text;
	int fd, rc = 0;

	if (local_path(path, sizeof(path), "%s/postgresql.conf", datadir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long: %s", datadir);
	text = malloc(1 << 20);
	if (!text)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = local_read_file(path, text, 1 << 20, false);
	if (rc) {
		free(text);
		return errmsg_set(e, rc, "cannot read %s: %s", path, strerror(-rc));
	}
	bool present = strstr(text, conf_mark) != NULL;
	free(text);
	if (present)
		return 0;
	/* Appending keeps the file's owner (the server account) and mode. */
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot open %s: %s", path, strerror(errno));
	if (write(fd, conf_text, sizeof(conf_text) - 1) != (ssize_t)sizeof(conf_text) - 1)
		rc = errmsg_set(e, -EIO, "cannot write %s", path);
	close(fd);
	return rc;
}

int sec_write_files(struct local_provider *lp, const char *datadir, struct errmsg *e)
{
	char path[PATH_MAX];
	int rc;

	rc = tls_install(lp->tlsdir, datadir, &lp->acct, e);
	if (!rc)
		rc = append_conf(datadir, e);
	if (rc)
		return rc;
	if (local_path(path, sizeof(path), "%s/pg_hba.conf", datadir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long: %s", datadir);
	return write_server_file(lp, path, hba_text, 0600, e);
}

/* ---- the server account ---- */

/* nftw has no user argument; each walk is one thread's own. */
static __thread uid_t walk_uid;
static __thread gid_t walk_gid;
static __thread int walk_err;

static int chown_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	if (lchown(path, walk_uid, walk_gid) < 0 && !walk_err)
		walk_err = -errno;
	return 0;
}

int sec_adopt_datadir(struct local_provider *lp, const char *datadir, const char *what,
                      struct errmsg *e)
{
	struct stat st;

	if (!lp->acct.drop || stat(datadir, &st) < 0 || st.st_uid == lp->acct.uid)
		return 0;
	walk_uid = lp->acct.uid;
	walk_gid = lp->acct.gid;
	walk_err = 0;
	if (nftw(datadir, chown_entry, 32, FTW_PHYS | FTW_MOUNT) < 0 && !walk_err)
		walk_err = errno ? -errno : -EIO;
	if (walk_err)
		return errmsg_set(e, walk_err, "cannot hand %s to the account %s: %s", datadir,
		                  lp->acct.name, strerror(-walk_err));
	log_event("local: %s now belongs to the server account %s (was uid %d)", what,
	          lp->acct.name, (int)st.st_uid);
	return 0;
}

/* ---- single-user mode ---- */

/* Runs sql (statements each ending with ";\n\n") in database db of
 * datadir, as the bootstrap superuser, stopping at the first error. */
static int run_single(struct local_provider *lp, const char *datadir, const char *db,
                      const char *sql, const char *what, struct errmsg *e)
{
	char exe[PATH_MAX + 16], logpath[PATH_MAX];
	int in[2], logfd, st = 0, rc;

	size_t len = strlen(sql);

	if (db[0] == '-')
		return errmsg_set(e, -EINVAL, "%s: cannot open database %s in single-user mode",
		                  what, db);
	snprintf(exe, sizeof(exe), "%s/postgres", lp->bindir);
	if (local_path(logpath, sizeof(logpath), "%s.single.log", datadir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long: %s", datadir);
	/* SQL of a few KiB: it fits the pipe, so writing never blocks. */
	if (len > 60000)
		return errmsg_set(e, -E2BIG, "internal error: setup SQL too long");
	if (pipe2(in, O_CLOEXEC) < 0)
		return errmsg_set(e, -errno, "pipe: %s", strerror(errno));
	if (write(in[1], sql, len) != (ssize_t)len) {
		close(in[0]);
		close(in[1]);
		return errmsg_set(e, -EIO, "cannot write to a pipe");
	}
	close(in[1]);
	logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (logfd < 0) {
		rc = -errno;
		close(in[0]);
		return errmsg_set(e, rc, "cannot create %s: %s", logpath, strerror(-rc));
	}
	char *argv[] = {exe,
	                "--single",
	                "-j",
	                "-c",
	                "exit_on_error=on",
	                "-c",
	                "log_min_messages=warning",
	                "-D",
	                (char *)datadir,
	                (char *)db,
	                NULL};
	struct proc_creds creds;
	struct proc_spec s;
	/* Output: -1, as the prompts and results are not wanted. */
	local_helper_spec(lp, argv, in[0], -1, logfd, &creds, &s);
	pid_t pid = proc_spawn(&s, e);
	close(in[0]);
	close(logfd);
	if (pid < 0)
		return (int)pid;
	proc_reap(pid, &st, s.pgroups_dir);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char how[64], tail[4096], reason[512];

		proc_describe_status(st, how, sizeof(how));
		local_read_file(logpath, tail, sizeof(tail), true);
		local_log_reason(tail, reason, sizeof(reason));
		return errmsg_set(e, -EIO, "%s failed (%s): %s (see %s)", what, how, reason,
		                  logpath);
	}
	unlink(logpath);
	return 0;
}

/* The admin's place in an instance, for template and brought-in-line
 * instances alike. Every statement can run again. %1$s is the admin's
 * name (validated: [a-z][a-z0-9_]*), %2$s the internal superuser's. */
static const char setup_sql[] =
    "DO $$ BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%1$s') THEN\n"
    "    CREATE ROLE \"%1$s\" LOGIN;\n"
    "  END IF;\n"
    "END $$;\n\n"
    /* Before 16, CREATEROLE can grant itself pg_execute_server_program. */
    "ALTER ROLE \"%1$s\" LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS;\n\n"
    "GRANT pg_read_all_data, pg_write_all_data, pg_monitor, pg_signal_backend TO \"%1$s\";\n\n"
    "ALTER DATABASE postgres OWNER TO \"%1$s\";\n\n"
    /* dbosfs's sessions never resolve a name into a schema the admin
     * controls (a function shadowing a built-in). */
    "ALTER ROLE \"%2$s\" SET search_path = pg_catalog, pg_temp;\n\n"
    "CREATE SCHEMA IF NOT EXISTS dbosfs AUTHORIZATION \"%2$s\";\n\n"
    "REVOKE ALL ON SCHEMA dbosfs FROM PUBLIC;\n\n"
    "GRANT USAGE ON SCHEMA dbosfs TO \"%1$s\";\n\n"
    "COMMENT ON SCHEMA dbosfs IS 'dbosfs: role management for the admin "
    "(create_role, drop_role)';\n\n"
    /* Extra roles for applications, without CREATEROLE: never a superuser,
     * never a member of anything, and the admin gets ADMIN OPTION on it
     * (it can GRANT it, SET ROLE to it, and change its password from
     * there). */
    "CREATE OR REPLACE FUNCTION dbosfs.create_role(role_name text, role_password text "
    "DEFAULT NULL, can_login boolean DEFAULT true) RETURNS void\n"
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  IF role_name IS NULL OR role_name = '' OR role_name LIKE 'pg\\_%%' THEN\n"
    "    RAISE EXCEPTION 'role name %% is not allowed', coalesce(role_name, 'NULL');\n"
    "  END IF;\n"
    "  EXECUTE format('CREATE ROLE %%I %%s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
    "NOBYPASSRLS INHERIT PASSWORD %%L', role_name, CASE WHEN can_login THEN 'LOGIN' ELSE "
    "'NOLOGIN' END, role_password);\n"
    "  EXECUTE format('GRANT %%I TO %%I WITH ADMIN OPTION', role_name, '%1$s');\n"
    "END $f$;\n\n"
    /* Only roles made by create_role: ordinary, and the admin holds ADMIN
     * OPTION on them. */
    "CREATE OR REPLACE FUNCTION dbosfs.drop_role(role_name text) RETURNS void\n"
    "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid\n"
    "      JOIN pg_roles a ON a.oid = m.member\n"
    "      WHERE r.rolname = role_name AND a.rolname = '%1$s' AND m.admin_option\n"
    "        AND NOT r.rolsuper AND r.rolname NOT LIKE 'pg\\_%%') THEN\n"
    "    RAISE EXCEPTION 'role %% was not made by dbosfs.create_role', "
    "coalesce(role_name, 'NULL');\n"
    "  END IF;\n"
    "  EXECUTE format('DROP ROLE %%I', role_name);\n"
    "END $f$;\n\n"
    "REVOKE ALL ON FUNCTION dbosfs.create_role(text, text, boolean) FROM PUBLIC;\n\n"
    "REVOKE ALL ON FUNCTION dbosfs.drop_role(text) FROM PUBLIC;\n\n"
    "GRANT EXECUTE ON FUNCTION dbosfs.create_role(text, text, boolean) TO \"%1$s\";\n\n"
    "GRANT EXECUTE ON FUNCTION dbosfs.drop_role(text) TO \"%1$s\";\n\n";

static char *setup_sql_for(const char *admin)
{
	char *sql = NULL;

	if (asprintf(&sql, setup_sql, admin, LOCAL_SUPERUSER) < 0)
		return NULL;
	return sql;
}

int sec_setup_template(struct local_provider *lp, const char *datadir, const char *admin,
                       struct errmsg *e)
{
	char *sql = setup_sql_for(admin);
	int rc;

	if (!sql)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = run_single(lp, datadir, "postgres", sql, "setting up the admin role", e);
	free(sql);
	if (!rc)
		rc = sec_write_files(lp, datadir, e);
	return rc;
}

/* ---- bringing an older instance in line ---- */

/* Older instances: the admin was the bootstrap superuser (OID 10), which
 * owns the system's own objects (an owner can grant itself pg_read_file).
 * So OID 10 becomes LOCAL_SUPERUSER and a new, ordinary role takes the
 * admin's name and password; then every other role loses what reaches
 * the OS. %1$s admin, %2$s superuser, %3$s the superuser's verifier,
 * %4$s a file for the list of databases (hex-encoded names). */
static const char upgrade_roles_sql[] =
    "DO $$ BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dbosfs_upgrade') THEN\n"
    "    CREATE ROLE dbosfs_upgrade SUPERUSER NOLOGIN;\n"
    "  END IF;\n"
    "END $$;\n\n"
    /* A session cannot rename its own user. */
    "SET SESSION AUTHORIZATION dbosfs_upgrade;\n\n"
    "DO $$ DECLARE boot name; verifier text; BEGIN\n"
    "  SELECT rolname, rolpassword INTO boot, verifier FROM pg_authid WHERE oid = 10;\n"
    "  IF boot <> '%2$s' THEN\n"
    "    EXECUTE format('ALTER ROLE %%I RENAME TO %%I', boot, '%2$s');\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%1$s') THEN\n"
    "      EXECUTE format('CREATE ROLE %%I LOGIN PASSWORD %%L', '%1$s', verifier);\n"
    "    END IF;\n"
    "  END IF;\n"
    "END $$;\n\n"
    "ALTER ROLE \"%2$s\" SUPERUSER LOGIN PASSWORD '%3$s';\n\n"
    "DO $$ DECLARE r record; BEGIN\n"
    "  FOR r IN SELECT rolname FROM pg_roles WHERE oid <> 10 AND rolname NOT LIKE 'pg\\_%%'\n"
    "      AND rolname <> 'dbosfs_upgrade'\n"
    "      AND (rolsuper OR rolcreaterole OR rolreplication OR rolbypassrls) LOOP\n"
    "    EXECUTE format('ALTER ROLE %%I NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS', "
    "r.rolname);\n"
    "    RAISE WARNING 'dbosfs: role %% is no longer a superuser', r.rolname;\n"
    "  END LOOP;\n"
    "  FOR r IN SELECT m.roleid::regrole AS granted, m.member::regrole AS member\n"
    "      FROM pg_auth_members m WHERE m.roleid IN ('pg_execute_server_program'::regrole,\n"
    "        'pg_read_server_files'::regrole, 'pg_write_server_files'::regrole) LOOP\n"
    "    EXECUTE format('REVOKE %%s FROM %%s CASCADE', r.granted, r.member);\n"
    "  END LOOP;\n"
    "END $$;\n\n"
    /* Back to OID 10 (RESET knows no default in single-user mode). */
    "SET SESSION AUTHORIZATION \"%2$s\";\n\n"
    "DROP ROLE dbosfs_upgrade;\n\n"
    "COPY (SELECT encode(convert_to(datname, 'UTF8'), 'hex') FROM pg_database\n"
    "  WHERE datallowconn ORDER BY datname) TO '%4$s';\n\n";

/* In each database: what OID 10 owns outside the system schemas (that
 * is, what the admin made while it was OID 10) passes to the admin. Other
 * kinds of objects (operators, collations, large objects, extensions) stay
 * with the internal superuser. %1$s admin. */
static const char upgrade_owner_sql[] =
    "DO $$ DECLARE r record; sys text[] := ARRAY['pg_catalog', 'information_schema', "
    "'pg_toast', 'dbosfs']; BEGIN\n"
    "  FOR r IN SELECT d.datname FROM pg_database d WHERE d.datdba = 10\n"
    "      AND d.datname NOT IN ('template0', 'template1') LOOP\n"
    "    EXECUTE format('ALTER DATABASE %%I OWNER TO %%I', r.datname, '%1$s');\n"
    "  END LOOP;\n"
    "  FOR r IN SELECT n.nspname FROM pg_namespace n WHERE n.nspowner = 10\n"
    "      AND NOT n.nspname = ANY (sys) AND n.nspname NOT LIKE 'pg\\_%%'\n"
    "      AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = "
    "'pg_namespace'::regclass AND x.objid = n.oid AND x.deptype = 'e') LOOP\n"
    "    EXECUTE format('ALTER SCHEMA %%I OWNER TO %%I', r.nspname, '%1$s');\n"
    "  END LOOP;\n"
    "  FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c\n"
    "      JOIN pg_namespace n ON n.oid = c.relnamespace\n"
    "      WHERE c.relowner = 10 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')\n"
    "      AND NOT n.nspname = ANY (sys) AND n.nspname NOT LIKE 'pg\\_%%'\n"
    "      AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_class'::regclass\n"
    "        AND x.objid = c.oid AND x.deptype IN ('e', 'a', 'i'))\n"
    "      ORDER BY c.relkind = 'S' LOOP\n"
    /* Sequences owned by a column follow their table. */
    "    EXECUTE format('ALTER TABLE %%s OWNER TO %%I', r.rel, '%1$s');\n"
    "  END LOOP;\n"
    "  FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p\n"
    "      JOIN pg_namespace n ON n.oid = p.pronamespace\n"
    "      WHERE p.proowner = 10 AND NOT n.nspname = ANY (sys) AND n.nspname NOT LIKE "
    "'pg\\_%%'\n"
    "      AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass\n"
    "        AND x.objid = p.oid AND x.deptype = 'e') LOOP\n"
    "    EXECUTE format('ALTER ROUTINE %%s OWNER TO %%I', r.fn, '%1$s');\n"
    "  END LOOP;\n"
    "  FOR r IN SELECT t.oid::regtype AS typ FROM pg_type t\n"
    "      JOIN pg_namespace n ON n.oid = t.typnamespace\n"
    "      WHERE t.typowner = 10 AND t.typtype IN ('b', 'd', 'e', 'r', 'c')\n"
    "      AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = "
    "'c')\n"
    "      AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)\n"
    "      AND NOT n.nspname = ANY (sys) AND n.nspname NOT LIKE 'pg\\_%%'\n"
    "      AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_type'::regclass\n"
    "        AND x.objid = t.oid AND x.deptype = 'e') LOOP\n"
    "    EXECUTE format('ALTER TYPE %%s OWNER TO %%I', r.typ, '%1$s');\n"
    "  END LOOP;\n"
    "END $$;\n\n";

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int sec_bring_in_line(struct local_provider *lp, const char *datadir, const char *admin,
                      const char *name, struct errmsg *e)
{
	char verifier[256], listpath[PATH_MAX], *sql = NULL, *list = NULL;
	int rc, ndb = 0;
	long long t0 = now_ms();

	if (scram_verifier(lp->su_password, verifier, sizeof(verifier)))
		return errmsg_set(e, -EIO, "cannot compute a SCRAM verifier");
	if (local_path(listpath, sizeof(listpath), "%s/dbosfs-databases.txt", datadir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long: %s", datadir);
	if (asprintf(&sql, upgrade_roles_sql, admin, LOCAL_SUPERUSER, verifier, listpath) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = run_single(lp, datadir, "postgres", sql, "moving the admin off the superuser role", e);
	free(sql);
	sql = NULL;
	if (rc)
		return rc;
	list = malloc(1 << 16);
	if (!list)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = local_read_file(listpath, list, 1 << 16, false);
	unlink(listpath);
	if (rc) {
		free(list);
		return errmsg_set(e, rc, "cannot read %s: %s", listpath, strerror(-rc));
	}
	if (asprintf(&sql, upgrade_owner_sql, admin) < 0) {
		free(list);
		return errmsg_set(e, -ENOMEM, "out of memory");
	}
	for (char *line = strtok(list, "\n"); line && !rc; line = strtok(NULL, "\n")) {
		char db[128];
		size_t n = strlen(line), o = 0;

		if (n % 2 || n / 2 >= sizeof(db))
			continue;
		for (size_t i = 0; i < n; i += 2) {
			int hi = hexval(line[i]), lo = hexval(line[i + 1]);
			if (hi < 0 || lo < 0)
				break;
			db[o++] = (char)(hi << 4 | lo);
		}
		db[o] = '\0';
		if (o != n / 2)
			continue;
		rc = run_single(lp, datadir, db, sql, "handing the admin's objects back to it", e);
		ndb++;
	}
	free(list);
	free(sql);
	if (rc)
		return rc;
	/* Then the admin's place, pg_hba.conf and TLS, as in a new template. */
	rc = sec_setup_template(lp, datadir, admin, e);
	if (!rc)
		log_event("local: instance %s brought in line with this version in %lld ms: admin "
		          "%s is no longer a superuser (its objects in %d databases are its own), "
		          "dbosfs has its own superuser, pg_hba.conf requires a password for every "
		          "connection, TLS is on",
		          name, now_ms() - t0, admin, ndb);
	return rc;
}

int sec_reset_superuser(struct local_provider *lp, const char *datadir, struct errmsg *e)
{
	char verifier[256], *sql = NULL;
	int rc;

	if (scram_verifier(lp->su_password, verifier, sizeof(verifier)))
		return errmsg_set(e, -EIO, "cannot compute a SCRAM verifier");
	if (asprintf(&sql, "ALTER ROLE \"%s\" PASSWORD '%s';\n\n", LOCAL_SUPERUSER, verifier) < 0)
		return errmsg_set(e, -ENOMEM, "out of memory");
	rc = run_single(lp, datadir, "postgres", sql, "setting dbosfs's superuser password", e);
	free(sql);
	return rc;
}

/* ---- connecting as the internal superuser ---- */

int sec_connect(struct local_provider *lp, const char *sockdir, int port, const char *dbname,
                const atomic_bool *cancel, PGconn **out, struct errmsg *e)
{
	char portstr[16];
	const char *keys[] = {"host",   "port",    "user",       "password",
	                      "dbname", "sslmode", "gssencmode", "application_name",
	                      NULL};
	const char *vals[] = {sockdir,         portstr,  LOCAL_SUPERUSER,
	                      lp->su_password, dbname,   "disable",
	                      "disable",       "dbosfs", NULL};
	struct errmsg pe;
	int rc;

	snprintf(portstr, sizeof(portstr), "%d", port);
	errmsg_clear(&pe);
	rc = pg_connect(keys, vals, 5000, cancel, out, &pe);
	if (rc)
		return errmsg_set(e, rc, "cannot connect to the server: %s", pe.text);
	return 0;
}

int sec_password_sql(PGconn *conn, const char *user, const char *verifier, char **out,
                     struct errmsg *e)
{
	char *lit = PQescapeLiteral(conn, verifier, strlen(verifier));
	char *ident = PQescapeIdentifier(conn, user, strlen(user));
	int rc = 0;

	*out = NULL;
	if (!lit || !ident || asprintf(out, "ALTER ROLE %s PASSWORD %s", ident, lit) < 0) {
		*out = NULL;
		rc = errmsg_set(e, -ENOMEM, "out of memory building ALTER ROLE");
	}
	if (lit) {
		explicit_bzero(lit, strlen(lit));
		PQfreemem(lit);
	}
	PQfreemem(ident);
	return rc;
}

void sec_sql_free(char *sql)
{
	if (sql) {
		explicit_bzero(sql, strlen(sql));
		free(sql);
	}
}

int sec_set_verifier(struct local_provider *lp, const char *sockdir, int port, const char *user,
                     const char *verifier, const atomic_bool *cancel, struct errmsg *e)
{
	char *sql = NULL;
	PGconn *conn = NULL;
	struct errmsg pe;
	int rc;

	rc = sec_connect(lp, sockdir, port, "postgres", cancel, &conn, e);
	if (!rc)
		rc = sec_password_sql(conn, user, verifier, &sql, e);
	if (!rc) {
		errmsg_clear(&pe);
		rc = pg_command(conn, sql, 10000, cancel, &pe);
		if (rc)
			errmsg_set(e, rc, "ALTER ROLE %s failed: %s", user, pe.text);
	}
	sec_sql_free(sql);
	PQfinish(conn);
	return rc;
}

int sec_set_password(struct local_provider *lp, const char *sockdir, int port, const char *user,
                     const char *password, const atomic_bool *cancel, struct errmsg *e)
{
	char verifier[SEC_VERIFIER_MAX];
	int rc;

	/* The verifier is computed here: the server never sees the password. */
	if (scram_verifier(password, verifier, sizeof(verifier)))
		return errmsg_set(e, -EIO, "cannot compute a SCRAM verifier");
	rc = sec_set_verifier(lp, sockdir, port, user, verifier, cancel, e);
	secret_wipe(verifier, sizeof(verifier));
	return rc;
}
