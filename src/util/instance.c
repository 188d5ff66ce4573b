/* Instance lists and the meaning of status words. */
#include "instance.h"
#include "provider.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void instance_list_free(struct instance_list *l)
{
	free(l->items);
	l->items = NULL;
	l->count = 0;
	l->cap = 0;
}

int instance_list_push(struct instance_list *l, const struct instance *inst)
{
	/* Doubling keeps a 100,000-instance list linear. A cap below count
	 * means items came from elsewhere: grow it all the same. */
	if (l->cap < l->count + 1) {
		size_t cap = l->count < 16 ? 16 : l->count * 2;
		struct instance *p = realloc(l->items, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		l->items = p;
		l->cap = cap;
	}
	l->items[l->count++] = *inst;
	return 0;
}

bool instance_status_settled(const char *status)
{
	/* Transitional states: `wait` keeps waiting. Everything else, including
	 * statuses we have never seen, ends the wait (the CLI stops at available
	 * or backing-up; an unknown word should not hang a reader forever). */
	/* "checking": a linked server (local) not probed yet. */
	static const char *const transitional[] = {
	    "provisioning", "starting", "restarting", "deleting",  "restoring", "creating",
	    "pending",      "stopping", "updating",   "modifying", "checking",
	};

	/* No status yet (just created, not refreshed) is not settled. */
	if (!status || !*status)
		return false;
	for (size_t i = 0; i < sizeof(transitional) / sizeof(transitional[0]); i++)
		if (strcasecmp(status, transitional[i]) == 0)
			return false;
	return true;
}

void database_list_free(struct database_list *l)
{
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

void instance_login_user(const struct instance *i, char *out, size_t outsz)
{
	if (i->supabase_ref[0])
		snprintf(out, outsz, "postgres.%s", i->supabase_ref);
	else
		snprintf(out, outsz, "%s", i->username);
}
