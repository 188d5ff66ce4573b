/* The providers a mount can use: see include/provider.h. A new provider is
 * one line here plus its struct provider_kind. */
#define FUSE_USE_VERSION 314
#include <fuse_opt.h>
#include <string.h>

#include "provider.h"

const struct provider_kind *const provider_kinds[] = {
    &local_provider_kind,
    &cloud_provider_kind,
    NULL,
};

const struct provider_kind *provider_kind_find(const char *name)
{
	for (size_t i = 0; provider_kinds[i]; i++)
		if (strcmp(provider_kinds[i]->name, name) == 0)
			return provider_kinds[i];
	return NULL;
}

const struct provider_kind *provider_kind_owning(const char *option,
                                                 const struct provider_kind *except)
{
	for (size_t i = 0; provider_kinds[i]; i++)
		if (provider_kinds[i] != except && fuse_opt_match(provider_kinds[i]->opts, option))
			return provider_kinds[i];
	return NULL;
}
