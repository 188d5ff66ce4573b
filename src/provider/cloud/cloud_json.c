/* The DBOS Cloud API's JSON: instance objects, error bodies, the user
 * profile and OAuth token answers (spec/dbos-cloud-api.md). Servers differ
 * in which optional fields they send, so everything but the name is
 * optional and unknown fields are ignored. */
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloud_private.h"

static void copy_str(char *dst, size_t dstsz, const json_t *v)
{
	const char *s = json_is_string(v) ? json_string_value(v) : "";

	snprintf(dst, dstsz, "%s", s);
	/* Values end up in one-line files: no control characters. */
	for (char *p = dst; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
}

int cloud_instance_from_json(const json_t *obj, struct instance *out)
{
	const json_t *v;
	const char *name;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(obj))
		return -EINVAL;
	v = json_object_get(obj, "PostgresInstanceName");
	if (!json_is_string(v))
		return -EINVAL;
	name = json_string_value(v);
	/* A name that does not fit would be silently renamed: skip it. */
	if (!*name || strlen(name) >= sizeof(out->name) || strchr(name, '/'))
		return -EINVAL;
	snprintf(out->name, sizeof(out->name), "%s", name);
	copy_str(out->status, sizeof(out->status), json_object_get(obj, "Status"));
	copy_str(out->host, sizeof(out->host), json_object_get(obj, "HostName"));

	v = json_object_get(obj, "Port");
	if (json_is_integer(v))
		out->port = (int)json_integer_value(v);
	else if (json_is_real(v))
		out->port = (int)json_real_value(v);
	else if (json_is_string(v))
		out->port = atoi(json_string_value(v));
	if (out->port < 0 || out->port > 65535)
		out->port = 0;

	/* Old servers called the user AdminUsername. */
	v = json_object_get(obj, "DatabaseUsername");
	if (!json_is_string(v))
		v = json_object_get(obj, "AdminUsername");
	copy_str(out->username, sizeof(out->username), v);
	copy_str(out->admin_name, sizeof(out->admin_name), json_object_get(obj, "DBOSAdminName"));
	out->linked = json_is_true(json_object_get(obj, "IsLinked"));
	copy_str(out->supabase_ref, sizeof(out->supabase_ref),
	         json_object_get(obj, "SupabaseReference"));
	return 0;
}

const char *cloud_json_error_kind(int code)
{
	switch (code) {
	case json_error_out_of_memory:
		return "out of memory";
	case json_error_stack_overflow:
		return "nested too deeply";
	case json_error_invalid_utf8:
		return "invalid UTF-8";
	case json_error_premature_end_of_input:
		return "unexpected end of input";
	case json_error_end_of_input_expected:
		return "text after the JSON value";
	case json_error_invalid_syntax:
		return "invalid JSON syntax";
	case json_error_null_character:
		return "NUL byte in the text";
	case json_error_null_byte_in_key:
		return "NUL byte in a key";
	case json_error_duplicate_key:
		return "duplicate key";
	case json_error_numeric_overflow:
		return "number out of range";
	default:
		return "invalid JSON";
	}
}

/* secret: the body may carry a token, so the message names only where the
 * JSON broke and how, never jerr.text (which quotes the input near it). */
static json_t *parse_body(const char *body, size_t len, const char *what, bool secret,
                          struct errmsg *e)
{
	json_error_t jerr;
	json_t *root;

	if (!body || len == 0) {
		errmsg_set(e, -EIO, "malformed response to %s: empty body", what);
		return NULL;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root && secret)
		errmsg_set(e, -EIO, "malformed response to %s: %s at byte %d", what,
		           cloud_json_error_kind(json_error_code(&jerr)), jerr.position);
	else if (!root)
		errmsg_set(e, -EIO, "malformed response to %s: invalid JSON at byte %d: %s", what,
		           jerr.position, jerr.text);
	return root;
}

/* End (one past) of the JSON value starting at body[i], found by bracket
 * depth and string escapes alone; 0 if the text ends first. */
static size_t value_end(const char *body, size_t len, size_t i)
{
	int depth = 0;
	bool in_string = false;
	for (size_t start = i; i < len; i++) {
		char ch = body[i];
		if (in_string) {
			if (ch == '\\')
				i++;
			else if (ch == '"') {
				in_string = false;
				if (depth == 0)
					return i + 1;
			}
			continue;
		}
		if (depth == 0 && i > start && strchr(",]} \t\r\n", ch))
			return i; /* end of a scalar */
		if (ch == '"')
			in_string = true;
		else if (ch == '{' || ch == '[')
			depth++;
		else if (ch == '}' || ch == ']') {
			if (--depth < 0)
				return 0;
			if (depth == 0)
				return i + 1;
		}
	}
	return 0;
}

static size_t skip_space(const char *body, size_t len, size_t i)
{
	while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
		i++;
	return i;
}

/* The array is parsed one element at a time: a list of 100,000 instances
 * never becomes one tree of a few hundred MiB in memory. */
int cloud_parse_instance_list(const char *body, size_t len, struct instance_list *out,
                              struct errmsg *e)
{
	struct instance inst;
	json_error_t jerr;
	size_t i;
	int rc = 0;

	*out = (struct instance_list){0};
	if (!body || len == 0)
		return errmsg_set(e, -EIO, "malformed response to the database list: empty body");
	i = skip_space(body, len, 0);
	if (i >= len || body[i] != '[') {
		/* Not an array: let jansson say what it is (or where it breaks). */
		json_t *root = parse_body(body, len, "the database list", false, e);
		if (!root)
			return -EIO;
		json_decref(root);
		return errmsg_set(e, -EIO,
		                  "malformed response to the database list: expected a JSON array");
	}
	i = skip_space(body, len, i + 1);
	if (i < len && body[i] == ']')
		return skip_space(body, len, i + 1) == len
		           ? 0
		           : errmsg_set(e, -EIO,
		                        "malformed response to the database list: text "
		                        "after the JSON array");
	for (;;) {
		size_t end = value_end(body, len, i);
		if (!end) {
			rc = errmsg_set(e, -EIO,
			                "malformed response to the database list: invalid JSON at "
			                "byte %zu: the array is cut short or unbalanced",
			                i);
			break;
		}
		json_t *item =
		    json_loadb(body + i, end - i, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
		if (!item) {
			rc = errmsg_set(e, -EIO,
			                "malformed response to the database list: invalid JSON at "
			                "byte %zu: %s",
			                i + (size_t)jerr.position, jerr.text);
			break;
		}
		bool usable = cloud_instance_from_json(item, &inst) == 0;
		json_decref(item);
		if (usable && (rc = instance_list_push(out, &inst)) < 0) {
			errmsg_set(e, rc, "out of memory");
			break;
		}
		i = skip_space(body, len, end);
		if (i < len && body[i] == ',') {
			i = skip_space(body, len, i + 1);
			continue;
		}
		if (i < len && body[i] == ']' && skip_space(body, len, i + 1) == len)
			break;
		rc =
		    errmsg_set(e, -EIO,
		               "malformed response to the database list: invalid JSON at byte %zu: "
		               "expected ',' or ']'",
		               i);
		break;
	}
	if (rc < 0)
		instance_list_free(out);
	return rc;
}

int cloud_parse_instance(const char *body, size_t len, struct instance *out, struct errmsg *e)
{
	json_t *root = parse_body(body, len, "the database status", false, e);
	int rc;

	if (!root)
		return -EIO;
	rc = cloud_instance_from_json(root, out);
	json_decref(root);
	if (rc < 0)
		return errmsg_set(e, -EIO,
		                  "malformed response to the database status: "
		                  "no PostgresInstanceName");
	return 0;
}

int cloud_parse_error_body(const char *body, size_t len, char *message, size_t msgsz,
                           char *request_id, size_t ridsz)
{
	json_t *root, *v;
	int rc = -EINVAL;

	message[0] = '\0';
	request_id[0] = '\0';
	if (!body || !len)
		return -EINVAL;
	root = json_loadb(body, len, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		return -EINVAL;
	}
	v = json_object_get(root, "message");
	/* OAuth servers answer {"error","error_description"} instead. */
	if (!json_is_string(v))
		v = json_object_get(root, "error_description");
	if (!json_is_string(v))
		v = json_object_get(root, "error");
	if (json_is_string(v)) {
		snprintf(message, msgsz, "%s", json_string_value(v));
		rc = 0;
	}
	v = json_object_get(root, "requestID");
	if (json_is_string(v))
		snprintf(request_id, ridsz, "%s", json_string_value(v));
	json_decref(root);
	return rc;
}

int cloud_parse_profile(const char *body, size_t len, char *name, size_t namesz, char *org,
                        size_t orgsz, struct errmsg *e)
{
	json_t *root = parse_body(body, len, "the user profile", false, e);
	int rc = 0;

	if (!root)
		return -EIO;
	if (!json_is_object(root) || !json_is_string(json_object_get(root, "Name")))
		rc = errmsg_set(e, -EIO, "malformed response to the user profile: no Name");
	else {
		copy_str(name, namesz, json_object_get(root, "Name"));
		copy_str(org, orgsz, json_object_get(root, "Organization"));
	}
	json_decref(root);
	return rc;
}

int cloud_parse_token_response(const char *body, size_t len, char **token, struct errmsg *e)
{
	json_t *root = parse_body(body, len, "the token refresh", true, e);
	const json_t *v;
	char *t;
	size_t keep;
	int rc = 0;

	*token = NULL;
	if (!root)
		return -EIO;
	v = json_object_get(root, "access_token");
	if (!json_is_string(v) || !*json_string_value(v)) {
		rc =
		    errmsg_set(e, -EIO, "malformed response to the token refresh: no access_token");
	} else {
		t = strdup(json_string_value(v));
		if (!t) {
			rc = errmsg_set(e, -ENOMEM, "out of memory");
		} else {
			/* The CLI trims stray line ends the same way (and the
			 * cut-off tail is wiped: later wipes stop at the NUL). */
			keep = strcspn(t, "\r\n");

			secret_wipe(t + keep, strlen(t) - keep);
			*token = t;
		}
	}
	json_decref(root);
	return rc;
}

void cloud_sanitize_scope(const char *in, char *out, size_t outsz)
{
	size_t i = 0;

	if (!outsz)
		return;
	for (; *in && i + 1 < outsz; in++, i++) {
		char ch = *in;
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		          (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';

		out[i] = ok ? ch : '_';
	}
	out[i] = '\0';
}

void cloud_json_wiping_free(void *p)
{
	if (p) {
		/* Every jansson block (strings, parser buffers, json_dumps output)
		 * is wiped; they are small, so the cost does not matter. */
		explicit_bzero(p, malloc_usable_size(p));
		free(p);
	}
}

void cloud_json_use_wiping_allocator(void)
{
	json_set_alloc_funcs(malloc, cloud_json_wiping_free);
}
