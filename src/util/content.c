/* What the read-only per-instance files contain. Pure functions of an
 * instance, so they are unit-tested byte for byte. */
#include "content.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends s with control bytes replaced by '?': values come from the backend,
 * and a stray newline must not forge extra "key: value" or VAR= lines. */
static int put_clean(struct buf *out, const char *s)
{
	for (; *s; s++) {
		char c = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
		int rc = buf_append(out, &c, 1);
		if (rc)
			return rc;
	}
	return 0;
}

int content_status(const struct instance *i, struct buf *out)
{
	int rc = put_clean(out, i->status[0] ? i->status : "unknown");

	return rc ? rc : buf_puts(out, "\n");
}

/* One "key: value" line. */
static int put_line(struct buf *out, const char *key, const char *value)
{
	int rc = buf_printf(out, "%s: ", key);

	if (!rc)
		rc = put_clean(out, value);
	if (!rc)
		rc = buf_puts(out, "\n");
	return rc;
}

int content_info(const struct instance *i, const char *provider_kind, struct buf *out)
{
	char port[16] = "";
	int rc;

	if (i->port > 0)
		snprintf(port, sizeof(port), "%d", i->port);
	rc = put_line(out, "name", i->name);
	if (!rc)
		rc = put_line(out, "status", i->status[0] ? i->status : "unknown");
	if (!rc)
		rc = put_line(out, "host", i->host);
	if (!rc)
		rc = put_line(out, "port", port);
	if (!rc)
		rc = put_line(out, "username", i->username);
	if (!rc && i->admin_name[0])
		rc = put_line(out, "admin_name", i->admin_name);
	if (!rc)
		rc = put_line(out, "linked", i->linked ? "yes" : "no");
	if (!rc && i->supabase_ref[0])
		rc = put_line(out, "supabase_reference", i->supabase_ref);
	if (!rc && provider_kind && provider_kind[0])
		rc = put_line(out, "provider", provider_kind);
	return rc;
}

/* A JSON string; bytes that are not valid UTF-8 become '?' rather than
 * failing the whole object. */
static json_t *json_str(const char *s)
{
	json_t *j = json_string(s);
	char *copy;

	if (j)
		return j;
	copy = strdup(s);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	free(copy);
	return j;
}

/* One instance as a JSON object with the API's field names; NULL when out
 * of memory. */
static json_t *instance_json(const struct instance *i)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	/* json_object_set_new steals (and tolerates NULL) values, so one
	 * failure check at the end covers every field. */
	int bad = 0;
	bad |= json_object_set_new(o, "PostgresInstanceName", json_str(i->name));
	bad |= json_object_set_new(o, "Status", json_str(i->status));
	bad |= json_object_set_new(o, "HostName", json_str(i->host));
	bad |= json_object_set_new(o, "Port", i->port > 0 ? json_integer(i->port) : json_null());
	bad |= json_object_set_new(o, "DatabaseUsername", json_str(i->username));
	bad |= json_object_set_new(o, "IsLinked", json_boolean(i->linked));
	bad |= json_object_set_new(o, "SupabaseReference",
	                           i->supabase_ref[0] ? json_str(i->supabase_ref) : json_null());
	if (i->admin_name[0])
		bad |= json_object_set_new(o, "DBOSAdminName", json_str(i->admin_name));
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* Appends the compact text of j and a newline, then drops j. */
static int put_json(json_t *j, struct buf *out)
{
	char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	int rc = text ? buf_puts(out, text) : -ENOMEM;
	if (!rc)
		rc = buf_puts(out, "\n");
	free(text);
	json_decref(j);
	return rc;
}

int content_info_json(const struct instance *i, struct buf *out)
{
	return put_json(instance_json(i), out);
}

int content_instances_json(const struct instance *items, size_t n, struct buf *out)
{
	json_t *a = json_array();
	for (size_t k = 0; a && k < n; k++) {
		json_t *o = instance_json(&items[k]);
		if (!o || json_array_append_new(a, o) != 0) {
			json_decref(a);
			a = NULL;
		}
	}
	return put_json(a, out);
}

/* HOST:PORT as the instances table shows it: IPv6 literals bracketed, "-"
 * for what is not known yet. */
static void host_port(const struct instance *i, char *out, size_t outsz)
{
	const char *host = i->host[0] ? i->host : "-";
	bool v6 = strchr(host, ':') && host[0] != '[' && host[0] != '/';
	if (i->port > 0)
		snprintf(out, outsz, v6 ? "[%s]:%d" : "%s:%d", host, i->port);
	else
		snprintf(out, outsz, "%s", host);
}

/* Appends s with control bytes as '?', padded with spaces to width. */
static int put_cell(struct buf *out, const char *s, size_t width)
{
	int rc = put_clean(out, s);
	for (size_t k = strlen(s); !rc && k < width; k++)
		rc = buf_puts(out, " ");
	return rc;
}

int content_instances(const struct instance *items, size_t n, struct buf *out)
{
	static const char *const head[4] = {"NAME", "STATUS", "HOST:PORT", "USER"};
	size_t width[4];
	char hp[300];
	for (int c = 0; c < 4; c++)
		width[c] = strlen(head[c]);
	for (size_t k = 0; k < n; k++) {
		const struct instance *i = &items[k];
		host_port(i, hp, sizeof(hp));
		const char *cell[4] = {i->name, i->status[0] ? i->status : "unknown", hp,
		                       i->username[0] ? i->username : "-"};
		for (int c = 0; c < 4; c++)
			if (strlen(cell[c]) > width[c])
				width[c] = strlen(cell[c]);
	}
	int rc = 0;
	for (size_t k = 0; k <= n && !rc; k++) {
		const char *cell[4];
		if (k == 0) {
			memcpy(cell, head, sizeof(cell));
		} else {
			const struct instance *i = &items[k - 1];
			host_port(i, hp, sizeof(hp));
			cell[0] = i->name;
			cell[1] = i->status[0] ? i->status : "unknown";
			cell[2] = hp;
			cell[3] = i->username[0] ? i->username : "-";
		}
		/* Columns one space apart, the last one unpadded. */
		for (int c = 0; c < 4 && !rc; c++) {
			rc = put_cell(out, cell[c], c < 3 ? width[c] : 0);
			if (!rc)
				rc = buf_puts(out, c < 3 ? " " : "\n");
		}
	}
	return rc;
}

/* RFC 3986 unreserved characters pass; everything else is %XX. */
static int put_percent(struct buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		int rc;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			rc = buf_append(out, (const char *)&c, 1);
		} else {
			char enc[3] = {'%', hex[c >> 4], hex[c & 15]};
			rc = buf_append(out, enc, 3);
		}
		if (rc)
			return rc;
	}
	return 0;
}

/* Host names keep ':' and brackets (IPv6 literals); the rest as put_percent. */
static int put_percent_host(struct buf *out, const char *host)
{
	for (const char *p = host; *p; p++) {
		char one[2] = {*p, '\0'};
		int rc = strchr(":[]", *p) ? buf_append(out, p, 1) : put_percent(out, one);
		if (rc)
			return rc;
	}
	return 0;
}

/* A query value: '/' may stay as it is (RFC 3986), the rest as put_percent. */
static int put_percent_query(struct buf *out, const char *s)
{
	for (const char *p = s; *p; p++) {
		char one[2] = {*p, '\0'};
		int rc = *p == '/' ? buf_append(out, p, 1) : put_percent(out, one);
		if (rc)
			return rc;
	}
	return 0;
}

int content_url(const struct instance *i, const char *ca_path, struct buf *out)
{
	char user[sizeof(i->username) + sizeof(i->supabase_ref) + 16];
	int rc = buf_puts(out, "postgresql://");

	instance_login_user(i, user, sizeof(user));
	if (!rc && user[0]) {
		rc = put_percent(out, user);
		if (!rc)
			rc = buf_puts(out, "@");
	}
	if (rc)
		return rc;
	if (i->host[0] == '/') {
		/* A Unix socket directory: libpq accepts it percent-encoded. */
		rc = put_percent(out, i->host);
	} else if (strchr(i->host, ':') && i->host[0] != '[') {
		/* An IPv6 literal must be bracketed to keep its colons apart
		 * from the port. */
		rc = buf_puts(out, "[");
		if (!rc)
			rc = put_percent_host(out, i->host);
		if (!rc)
			rc = buf_puts(out, "]");
	} else {
		rc = put_percent_host(out, i->host);
	}
	if (!rc && i->port > 0)
		rc = buf_printf(out, ":%d", i->port);
	if (!rc)
		rc = buf_puts(out, "/postgres");
	if (!rc && ca_path) {
		/* The server's certificate is checked against this CA and for
		 * the host named above. */
		rc = buf_puts(out, "?sslmode=verify-full&sslrootcert=");
		if (!rc)
			rc = put_percent_query(out, ca_path);
	}
	if (!rc)
		rc = buf_puts(out, "\n");
	return rc;
}

/* One VAR=value line that a POSIX shell can source: values with characters
 * outside a safe set are single-quoted. */
static int put_env(struct buf *out, const char *var, const char *value)
{
	bool plain = value[0] != '\0';
	int rc;

	for (const char *p = value; *p && plain; p++)
		plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		               "_-.:/,+%@",
		               *p) != NULL;
	rc = buf_printf(out, "%s=", var);
	if (!rc && plain)
		rc = buf_puts(out, value);
	if (!rc && !plain) {
		rc = buf_puts(out, "'");
		for (const char *p = value; *p && !rc; p++) {
			if (*p == '\'')
				rc = buf_puts(out, "'\\''");
			else if ((unsigned char)*p < 0x20 || *p == 0x7f)
				rc = buf_puts(out, "?");
			else
				rc = buf_append(out, p, 1);
		}
		if (!rc)
			rc = buf_puts(out, "'");
	}
	if (!rc)
		rc = buf_puts(out, "\n");
	return rc;
}

int content_env(const struct instance *i, const char *ca_path, struct buf *out)
{
	char port[16] = "";
	int rc;

	if (i->port > 0)
		snprintf(port, sizeof(port), "%d", i->port);
	rc = put_env(out, "PGHOST", i->host);
	if (!rc)
		rc = put_env(out, "PGPORT", port);
	char user[sizeof(i->username) + sizeof(i->supabase_ref) + 16];
	instance_login_user(i, user, sizeof(user));
	if (!rc)
		rc = put_env(out, "PGUSER", user);
	if (!rc)
		rc = put_env(out, "PGDATABASE", "postgres");
	if (!rc && ca_path) {
		rc = put_env(out, "PGSSLMODE", "verify-full");
		if (!rc)
			rc = put_env(out, "PGSSLROOTCERT", ca_path);
		/* Node's TLS (node-postgres, so the DBOS SDK) checks servers
		 * against its own CA list plus this file, read at startup. */
		if (!rc)
			rc = put_env(out, "NODE_EXTRA_CA_CERTS", ca_path);
	}
	return rc;
}

/* A .pgpass field: libpq reads backslash as an escape for ':' and itself. */
static int put_pgpass_field(struct buf *out, const char *s)
{
	for (; *s; s++) {
		int rc = 0;
		if (*s == ':' || *s == '\\')
			rc = buf_append(out, "\\", 1);
		if (!rc)
			rc = buf_append(out, s, 1);
		if (rc)
			return rc;
	}
	return 0;
}

int content_pgpass(const struct instance *i, const char *password, struct buf *out)
{
	char port[16] = "*";
	int rc;

	/* An unknown host or port matches anything rather than nothing. */
	if (i->port > 0)
		snprintf(port, sizeof(port), "%d", i->port);
	/* libpq matches Unix-socket connections against "localhost". */
	if (!i->host[0])
		rc = buf_puts(out, "*");
	else if (i->host[0] == '/')
		rc = buf_puts(out, "localhost");
	else
		rc = put_pgpass_field(out, i->host);
	if (!rc)
		rc = buf_puts(out, ":");
	if (!rc)
		rc = put_pgpass_field(out, port);
	if (!rc)
		rc = buf_puts(out, ":*:");
	char user[sizeof(i->username) + sizeof(i->supabase_ref) + 16];
	instance_login_user(i, user, sizeof(user));
	if (!rc)
		rc = put_pgpass_field(out, user);
	if (!rc)
		rc = buf_puts(out, ":");
	if (!rc)
		rc = put_pgpass_field(out, password ? password : "");
	if (!rc)
		rc = buf_puts(out, "\n");
	return rc;
}
