/* dbos-config.yaml: the parts a migration needs (name, database_url,
 * system_database_url, database.app_db_name, database.migrate,
 * database.rollback), read with libyaml's document API after a cheap event
 * pass has bounded its depth and size. */
#include "migrate.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include <yaml.h>

#include "buf.h"

#define CONFIG_FILE_NAME "dbos-config.yaml"
/* A migration config is a few hundred bytes; anything this big is a mistake
 * (or an attack on the daemon's memory). */
#define CONFIG_MAX_BYTES (1024 * 1024)
#define DB_NAME_MAX      63 /* PostgreSQL's NAMEDATALEN - 1 */

const char *env_lookup(char *const *env, const char *name)
{
	size_t n = strlen(name);

	if (!env)
		return getenv(name);
	for (; *env; env++)
		if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

int expand_env_vars(const char *in, size_t len, char *const *env, struct buf *out)
{
	/* DBOS (dbos-sdk 5.x, config.ts substituteEnvVars) applies
	 * /\${([^}]+)}/g to the whole file: anything up to the next '}' is a
	 * variable name, and an unset or empty variable becomes "" (two double
	 * quotes: an empty string to YAML and to the shell alike). "${}" and
	 * an unterminated "${" stay as they are. */
	size_t i = 0, lit = 0;
	int rc;

	while (i + 1 < len) {
		const char *close;
		size_t nlen;

		if (in[i] != '$' || in[i + 1] != '{') {
			i++;
			continue;
		}
		close = memchr(in + i + 2, '}', len - i - 2);
		if (!close)
			break;
		nlen = (size_t)(close - (in + i + 2));
		if (nlen == 0) {
			i += 2;
			continue;
		}
		rc = buf_append(out, in + lit, i - lit);
		if (rc)
			return rc;
		char *name = strndup(in + i + 2, nlen);
		if (!name)
			return -ENOMEM;
		const char *val = env_lookup(env, name);
		free(name);
		rc = buf_puts(out, val && *val ? val : "\"\"");
		if (rc)
			return rc;
		i += 2 + nlen + 1;
		lit = i;
	}
	return buf_append(out, in + lit, len - lit);
}

void app_config_free(struct app_config *c)
{
	if (!c)
		return;
	free(c->app_dir);
	free(c->config_path);
	free(c->name);
	free(c->app_db_name);
	free(c->sys_db_name);
	for (size_t i = 0; i < c->n_migrate; i++)
		free(c->migrate[i]);
	free(c->migrate);
	for (size_t i = 0; i < c->n_rollback; i++)
		free(c->rollback[i]);
	free(c->rollback);
	memset(c, 0, sizeof(*c));
}

/* Works out app_dir and config_path from what the user wrote. */
static int resolve_paths(const char *path, struct app_config *c, struct errmsg *e)
{
	struct stat st;
	size_t len;
	char *p;

	if (!path || !*path)
		return errmsg_set(e, -EINVAL,
		                  "empty path: write an absolute application directory");
	for (const unsigned char *s = (const unsigned char *)path; *s; s++)
		if (*s < 0x20 || *s == 0x7f)
			return errmsg_set(e, -EINVAL, "path contains a control character");
	if (path[0] != '/')
		return errmsg_set(e, -EINVAL,
		                  "relative path %s: write an absolute path (the filesystem "
		                  "cannot know your working directory)",
		                  path);
	if (strlen(path) >= PATH_MAX)
		return errmsg_set(e, -EINVAL, "path too long");
	if (stat(path, &st) != 0) {
		int err = errno;
		return errmsg_set(e, -err, "%s: %s", path, strerror(err));
	}

	p = strdup(path);
	if (!p)
		return -ENOMEM;
	len = strlen(p);
	while (len > 1 && p[len - 1] == '/')
		p[--len] = '\0';

	if (S_ISDIR(st.st_mode)) {
		c->app_dir = p;
		if (asprintf(&c->config_path, "%s%s" CONFIG_FILE_NAME, p, len > 1 ? "/" : "") < 0) {
			c->config_path = NULL;
			return -ENOMEM;
		}
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		free(p);
		return errmsg_set(e, -EINVAL, "%s is neither a directory nor a regular file", path);
	}
	c->config_path = p;
	char *slash = strrchr(p, '/');
	c->app_dir = slash == p ? strdup("/") : strndup(p, (size_t)(slash - p));
	return c->app_dir ? 0 : -ENOMEM;
}

/* Reads the whole file, refusing anything over CONFIG_MAX_BYTES. */
static int read_config_file(const char *file, struct buf *out, struct errmsg *e)
{
	struct stat st;
	char chunk[8192];
	int fd, rc = 0;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int err = errno;
		if (err == ENOENT)
			return errmsg_set(e, -ENOENT, "%s not found", file);
		return errmsg_set(e, -err, "cannot open %s: %s", file, strerror(err));
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return errmsg_set(e, -EINVAL, "%s is not a regular file", file);
	}
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			rc = errmsg_set(e, -err, "cannot read %s: %s", file, strerror(err));
			break;
		}
		if (n == 0)
			break;
		if (out->len + (size_t)n > CONFIG_MAX_BYTES) {
			rc = errmsg_set(e, -EINVAL, "%s is larger than %d bytes", file,
			                CONFIG_MAX_BYTES);
			break;
		}
		rc = buf_append(out, chunk, (size_t)n);
		if (rc)
			break;
	}
	close(fd);
	if (!rc && out->len && memchr(out->data, '\0', out->len))
		rc = errmsg_set(e, -EINVAL, "%s contains a NUL byte: not a YAML text file", file);
	return rc;
}

/* What a YAML scalar means under the core schema, so `migrate: [1, 2]` is
 * refused as numbers, the way DBOS's schema check would. */
enum scalar_type { SC_STRING, SC_NULL, SC_BOOL, SC_INT, SC_FLOAT };

static bool match_any(const char *v, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(v, *list) == 0)
			return true;
	return false;
}

static bool is_int_text(const char *v)
{
	const char *p = v;

	if (*p == '+' || *p == '-')
		p++;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
		const char *q = p + 2;
		if (!*q)
			return false;
		for (; *q; q++)
			if (p[1] == 'x' ? !isxdigit((unsigned char)*q) : (*q < '0' || *q > '7'))
				return false;
		return true;
	}
	if (!*p)
		return false;
	for (; *p; p++)
		if (!isdigit((unsigned char)*p))
			return false;
	return true;
}

static bool is_float_text(const char *v)
{
	static const char *const special[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
	                                      "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
	                                      ".NaN",  ".NAN",  NULL};
	const char *p = v;
	bool digits = false;

	if (match_any(v, special))
		return true;
	if (*p == '+' || *p == '-')
		p++;
	while (isdigit((unsigned char)*p)) {
		p++;
		digits = true;
	}
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p)) {
			p++;
			digits = true;
		}
	}
	if (!digits)
		return false;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	}
	return *p == '\0';
}

static enum scalar_type scalar_type_of(const yaml_node_t *n)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
	static const char *const bools[] = {"true",  "True",  "TRUE", "false",
	                                    "False", "FALSE", NULL};
	const char *tag = (const char *)n->tag;
	const char *v = (const char *)n->data.scalar.value;

	/* Quoted: a string whatever it looks like. The document loader gives
	 * untagged plain scalars the default !!str tag, so for them a str tag
	 * says nothing and the text decides (an explicit "!!str 5" is taken as
	 * the integer it looks like: quote it instead). */
	if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return SC_STRING;
	if (tag && strcmp(tag, YAML_STR_TAG) == 0)
		tag = NULL;
	if (tag && strcmp(tag, YAML_NULL_TAG) == 0)
		return SC_NULL;
	if (tag && strcmp(tag, YAML_BOOL_TAG) == 0)
		return SC_BOOL;
	if (tag && strcmp(tag, YAML_INT_TAG) == 0)
		return SC_INT;
	if (tag && strcmp(tag, YAML_FLOAT_TAG) == 0)
		return SC_FLOAT;
	if (match_any(v, nulls))
		return SC_NULL;
	if (match_any(v, bools))
		return SC_BOOL;
	if (is_int_text(v))
		return SC_INT;
	if (is_float_text(v))
		return SC_FLOAT;
	return SC_STRING;
}

/* "a string", "a list", ... for messages about wrong types. */
static const char *node_type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_SCALAR_NODE:
		switch (scalar_type_of(n)) {
		case SC_NULL:
			return "null";
		case SC_BOOL:
			return "a boolean";
		case SC_INT:
			return "an integer";
		case SC_FLOAT:
			return "a number";
		case SC_STRING:
			return "a string";
		}
		break;
	default:
		break;
	}
	return "nothing";
}

static bool node_is_null(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && scalar_type_of(n) == SC_NULL;
}

struct loader {
	yaml_document_t *doc;
	const char *file;
	struct errmsg *e;
};

/* Copies a string scalar for KEY, or fails naming the key and its place. */
static int get_string(struct loader *ld, const char *key, yaml_node_t *n, char **out)
{
	if (n->type != YAML_SCALAR_NODE || scalar_type_of(n) != SC_STRING)
		return errmsg_set(ld->e, -EINVAL, "%s:%zu:%zu: %s must be a string, not %s",
		                  ld->file, n->start_mark.line + 1, n->start_mark.column + 1, key,
		                  node_type_name(n));
	*out = strdup((const char *)n->data.scalar.value);
	return *out ? 0 : -ENOMEM;
}

static bool blank(const char *s)
{
	for (; *s; s++)
		if (!isspace((unsigned char)*s))
			return false;
	return true;
}

/* database.migrate / database.rollback: a list of non-empty strings. A bare
 * string is refused: DBOS's schema requires a list, and silently accepting
 * it here would make a config that works with dbosfs fail on DBOS Cloud. */
static int get_commands(struct loader *ld, const char *key, yaml_node_t *n, char ***out,
                        size_t *count)
{
	yaml_node_item_t *it;
	size_t i = 0, total;
	char **list;

	if (node_is_null(n))
		return 0; /* "migrate:" with nothing: the same as missing */
	if (n->type != YAML_SEQUENCE_NODE) {
		if (n->type == YAML_SCALAR_NODE && scalar_type_of(n) == SC_STRING)
			return errmsg_set(ld->e, -EINVAL,
			                  "%s:%zu:%zu: %s must be a list of commands, not a "
			                  "string: write %s: ['%s']",
			                  ld->file, n->start_mark.line + 1,
			                  n->start_mark.column + 1, key, strrchr(key, '.') + 1,
			                  (const char *)n->data.scalar.value);
		return errmsg_set(
		    ld->e, -EINVAL, "%s:%zu:%zu: %s must be a list of commands, not %s", ld->file,
		    n->start_mark.line + 1, n->start_mark.column + 1, key, node_type_name(n));
	}
	total = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (!total)
		return 0;
	list = calloc(total, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++, i++) {
		yaml_node_t *item = yaml_document_get_node(ld->doc, *it);
		int rc = 0;

		if (!item || item->type != YAML_SCALAR_NODE || scalar_type_of(item) != SC_STRING)
			rc = errmsg_set(ld->e, -EINVAL,
			                "%s:%zu:%zu: %s[%zu] must be a command string, not %s",
			                ld->file, item ? item->start_mark.line + 1 : 0,
			                item ? item->start_mark.column + 1 : 0, key, i,
			                item ? node_type_name(item) : "nothing");
		else if (blank((const char *)item->data.scalar.value))
			rc = errmsg_set(ld->e, -EINVAL, "%s:%zu:%zu: %s[%zu] is an empty command",
			                ld->file, item->start_mark.line + 1,
			                item->start_mark.column + 1, key, i);
		else if (!(list[i] = strdup((const char *)item->data.scalar.value)))
			rc = -ENOMEM;
		if (rc) {
			for (size_t j = 0; j < i; j++)
				free(list[j]);
			free(list);
			return rc;
		}
	}
	*out = list;
	*count = total;
	return 0;
}

/* Looks KEY up in a mapping; a key given twice is an error (libyaml keeps
 * both, and which one wins would be a guess). */
static int map_get(struct loader *ld, yaml_node_t *map, const char *where, const char *key,
                   yaml_node_t **out)
{
	yaml_node_pair_t *p;

	*out = NULL;
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
		if (!k || k->type != YAML_SCALAR_NODE ||
		    strcmp((const char *)k->data.scalar.value, key) != 0)
			continue;
		if (*out)
			return errmsg_set(ld->e, -EINVAL, "%s:%zu:%zu: duplicate key %s%s",
			                  ld->file, k->start_mark.line + 1,
			                  k->start_mark.column + 1, where, key);
		*out = yaml_document_get_node(ld->doc, p->value);
	}
	return 0;
}

/* DBOS's rule (config.ts isValidDBname): 1..63 of [a-z0-9_], not starting
 * with a digit. template0/1 are refused: tables made there leak into every
 * database created afterwards. */
static int check_db_name(const char *db, const char *file, const char *origin, struct errmsg *e)
{
	size_t len = strlen(db);

	if (len == 0 || len > DB_NAME_MAX || isdigit((unsigned char)db[0]))
		goto bad;
	for (const char *p = db; *p; p++)
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
			goto bad;
	if (strcmp(db, "template0") == 0 || strcmp(db, "template1") == 0)
		return errmsg_set(e, -EINVAL, "%s: application database %s (%s) is reserved", file,
		                  db, origin);
	return 0;
bad:
	return errmsg_set(e, -EINVAL,
	                  "%s: invalid application database name \"%s\" (%s): it must be 1 to "
	                  "%d lowercase letters, digits and underscores, not starting with a "
	                  "digit",
	                  file, db, origin, DB_NAME_MAX);
}

/* name -> database name as DBOS derives it: lower case, '-' and ' ' to '_',
 * and a leading '_' if it starts with a digit. */
static char *derive_db_name(const char *name)
{
	size_t len = strlen(name);
	char *db = malloc(len + 2), *p = db;

	if (!db)
		return NULL;
	if (isdigit((unsigned char)name[0]))
		*p++ = '_';
	for (const char *s = name; *s; s++) {
		char ch = (char)tolower((unsigned char)*s);
		*p++ = (ch == '-' || ch == ' ') ? '_' : ch;
	}
	*p = '\0';
	return db;
}

/* The database name in a postgres URL's path (percent-decoded), or NULL
 * when it has none. The URL itself never goes into a message: it may hold a
 * password. */
static int url_database(const char *url, char **out)
{
	const char *p = strstr(url, "://"), *end;
	char *db, *q;

	*out = NULL;
	if (!*url)
		return 0; /* "${DBOS_DATABASE_URL}" before it is known: absent */
	if (!p)
		return -EINVAL;
	p += 3;
	p += strcspn(p, "/?#");
	if (*p != '/')
		return 0;
	p++;
	end = p + strcspn(p, "?#");
	if (end == p)
		return 0;
	db = malloc((size_t)(end - p) + 1);
	if (!db)
		return -ENOMEM;
	for (q = db; p < end; p++) {
		if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
			char hex[3] = {p[1], p[2], 0};
			*q++ = (char)strtol(hex, NULL, 16);
			p += 2;
		} else {
			*q++ = *p;
		}
	}
	*q = '\0';
	*out = db;
	return 0;
}

/* A URL field's database name; EINVAL names the field, never the URL. */
static int get_url_database(struct loader *ld, yaml_node_t *root, const char *key, char **out)
{
	yaml_node_t *n;
	char *url = NULL;
	int rc;

	*out = NULL;
	if ((rc = map_get(ld, root, "", key, &n)) || !n || node_is_null(n))
		return rc;
	if ((rc = get_string(ld, key, n, &url)))
		return rc;
	rc = url_database(url, out);
	explicit_bzero(url, strlen(url));
	free(url);
	if (rc == -EINVAL)
		return errmsg_set(ld->e, -EINVAL,
		                  "%s:%zu:%zu: %s is not a URL (postgresql://USER:PASSWORD@HOST:"
		                  "PORT/DATABASE)",
		                  ld->file, n->start_mark.line + 1, n->start_mark.column + 1, key);
	return rc;
}

/* package.json's "name", as the DBOS SDK falls back to it (readConfigFile). */
static int package_json_name(const char *app_dir, char **out)
{
	char *path = NULL;
	json_t *root, *name;

	*out = NULL;
	if (asprintf(&path, "%s/package.json", app_dir) < 0)
		return -ENOMEM;
	root = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
	free(path);
	if (!root)
		return 0;
	name = json_object_get(root, "name");
	if (json_is_string(name) && *json_string_value(name) &&
	    !(*out = strdup(json_string_value(name)))) {
		json_decref(root);
		return -ENOMEM;
	}
	json_decref(root);
	return 0;
}

static int load_document(struct loader *ld, struct app_config *c)
{
	yaml_node_t *root = yaml_document_get_root_node(ld->doc), *n, *db = NULL;
	char *url_db = NULL;
	int rc;

	if (!root || node_is_null(root))
		return errmsg_set(ld->e, -EINVAL, "%s is empty", ld->file);
	if (root->type != YAML_MAPPING_NODE)
		return errmsg_set(ld->e, -EINVAL,
		                  "%s:%zu:%zu: the document must be a mapping (name:, "
		                  "database:, ...), not %s",
		                  ld->file, root->start_mark.line + 1, root->start_mark.column + 1,
		                  node_type_name(root));

	if ((rc = map_get(ld, root, "", "name", &n)))
		return rc;
	if (n && !node_is_null(n) && (rc = get_string(ld, "name", n, &c->name)))
		return rc;
	if (c->name && !*c->name) {
		free(c->name);
		c->name = NULL;
	}
	if (!c->name) {
		if ((rc = package_json_name(c->app_dir, &c->name)))
			return rc;
		c->name_from_package_json = c->name != NULL;
	}

	if ((rc = map_get(ld, root, "", "database", &db)))
		return rc;
	if (db && node_is_null(db))
		db = NULL;
	if (db && db->type != YAML_MAPPING_NODE)
		return errmsg_set(ld->e, -EINVAL, "%s:%zu:%zu: database must be a mapping, not %s",
		                  ld->file, db->start_mark.line + 1, db->start_mark.column + 1,
		                  node_type_name(db));
	if (db) {
		if ((rc = map_get(ld, db, "database.", "app_db_name", &n)))
			return rc;
		if (n && !node_is_null(n) &&
		    (rc = get_string(ld, "database.app_db_name", n, &c->app_db_name)))
			return rc;
		if ((rc = map_get(ld, db, "database.", "migrate", &n)))
			return rc;
		if (n && (rc = get_commands(ld, "database.migrate", n, &c->migrate, &c->n_migrate)))
			return rc;
		if ((rc = map_get(ld, db, "database.", "rollback", &n)))
			return rc;
		if (n &&
		    (rc = get_commands(ld, "database.rollback", n, &c->rollback, &c->n_rollback)))
			return rc;
	}

	/* The system database: system_database_url's, else NAME_dbos_sys
	 * (the SDK's getSystemDatabaseUrl). Only the name is used: the
	 * database is made on this instance. */
	const char *sys_origin = "system_database_url";
	if ((rc = get_url_database(ld, root, "system_database_url", &c->sys_db_name)))
		return rc;
	c->sys_db_from_url = c->sys_db_name != NULL;
	if (!c->sys_db_name && c->name) {
		sys_origin = "derived from name";
		char *base = derive_db_name(c->name);
		if (!base || asprintf(&c->sys_db_name, "%s_dbos_sys", base) < 0) {
			free(base);
			c->sys_db_name = NULL;
			return -ENOMEM;
		}
		free(base);
	}
	if (c->sys_db_name && (!*c->sys_db_name || strlen(c->sys_db_name) > DB_NAME_MAX))
		return errmsg_set(ld->e, -EINVAL,
		                  "%s: system database name \"%.80s\" (%s) must be 1 to %d "
		                  "characters",
		                  ld->file, c->sys_db_name, sys_origin, DB_NAME_MAX);

	if ((rc = get_url_database(ld, root, "database_url", &url_db)))
		return rc;
	if (url_db && *url_db) {
		/* The current field wins over the legacy one. */
		free(c->app_db_name);
		c->app_db_name = url_db;
		c->app_db_origin = "from database_url";
		return check_db_name(c->app_db_name, ld->file, c->app_db_origin, ld->e);
	}
	free(url_db);
	if (c->app_db_name && *c->app_db_name) {
		c->app_db_origin = "database.app_db_name";
		return check_db_name(c->app_db_name, ld->file, c->app_db_origin, ld->e);
	}
	free(c->app_db_name);
	c->app_db_name = NULL;
	if (!c->name)
		return errmsg_set(
		    ld->e, -EINVAL,
		    "%s has no database_url, database.app_db_name or name (nor a "
		    "package.json with a name): cannot tell which database to migrate",
		    ld->file);
	if (!(c->app_db_name = derive_db_name(c->name)))
		return -ENOMEM;
	c->app_db_origin =
	    c->name_from_package_json ? "derived from package.json's name" : "derived from name";
	return check_db_name(c->app_db_name, ld->file, c->app_db_origin, ld->e);
}

/* Walks the event stream once, before the document is built: refuses deep
 * nesting and huge node counts while they are still cheap to see (libyaml
 * does work proportional to depth per token), and polls for Ctrl-C. A
 * syntax error is left to the real parse, which words it. */
static int check_yaml_shape(const char *file, const struct buf *text, struct errmsg *e)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	size_t depth = 0, nodes = 0, events = 0;
	int rc = 0;
	bool done = false;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)(text->data ? text->data : ""),
	                             text->len);
	while (!done && !rc) {
		if (++events % 256 == 0 && op_interrupted()) {
			rc = errmsg_set(e, -EINTR, "interrupted while reading %s", file);
			break;
		}
		if (!yaml_parser_parse(&parser, &ev))
			break;
		switch (ev.type) {
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > CONFIG_MAX_DEPTH)
				rc =
				    errmsg_set(e, -EINVAL,
				               "%s:%zu:%zu: nested more than %d levels deep: not a "
				               "DBOS configuration",
				               file, ev.start_mark.line + 1,
				               ev.start_mark.column + 1, CONFIG_MAX_DEPTH);
			/* fall through */
		case YAML_SCALAR_EVENT:
		case YAML_ALIAS_EVENT:
			if (!rc && ++nodes > CONFIG_MAX_NODES)
				rc = errmsg_set(e, -EINVAL,
				                "%s:%zu:%zu: more than %d YAML nodes: not a DBOS "
				                "configuration",
				                file, ev.start_mark.line + 1,
				                ev.start_mark.column + 1, CONFIG_MAX_NODES);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

static int parse_yaml(const char *file, const struct buf *text, struct app_config *c,
                      struct errmsg *e)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	int rc;

	if ((rc = check_yaml_shape(file, text, e)))
		return rc;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)(text->data ? text->data : ""),
	                             text->len);
	if (!yaml_parser_load(&parser, &doc)) {
		if (parser.error == YAML_MEMORY_ERROR)
			rc = -ENOMEM;
		else if (parser.context)
			rc =
			    errmsg_set(e, -EINVAL, "%s:%zu:%zu: %s (%s at line %zu)", file,
			               parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			               parser.problem ? parser.problem : "invalid YAML",
			               parser.context, parser.context_mark.line + 1);
		else
			rc =
			    errmsg_set(e, -EINVAL, "%s:%zu:%zu: %s", file,
			               parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			               parser.problem ? parser.problem : "invalid YAML");
		yaml_parser_delete(&parser);
		return rc;
	}
	struct loader ld = {.doc = &doc, .file = file, .e = e};
	rc = load_document(&ld, c);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

int app_config_load(const char *path, char *const *env, struct app_config *out, struct errmsg *e)
{
	struct buf raw = BUF_INIT, text = BUF_INIT;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = resolve_paths(path, out, e);
	if (!rc)
		rc = read_config_file(out->config_path, &raw, e);
	if (!rc)
		rc = expand_env_vars(raw.data ? raw.data : "", raw.len, env, &text);
	if (!rc && text.len > CONFIG_MAX_BYTES)
		rc = errmsg_set(e, -EINVAL, "%s is larger than %d bytes after ${VAR} substitution",
		                out->config_path, CONFIG_MAX_BYTES);
	if (!rc)
		rc = parse_yaml(out->config_path, &text, out, e);
	/* Substituted text may hold secrets from the environment. */
	buf_free_secret(&text);
	buf_free(&raw);
	if (rc == -ENOMEM)
		errmsg_set(e, rc, "out of memory reading %s", path ? path : "");
	if (rc)
		app_config_free(out);
	return rc;
}
