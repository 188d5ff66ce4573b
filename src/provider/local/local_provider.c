/* Placeholder until the module lands: refuses to start. */
#include <errno.h>

#include "provider.h"

int local_provider_create(const struct dbosfs_options *opt, struct provider **out, struct errmsg *e)
{
	(void)opt;
	*out = 0;
	return errmsg_set(e, -EOPNOTSUPP, "the local provider is not built yet");
}
