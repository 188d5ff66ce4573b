#include "tap.h"

int tap_failures;
int tap_checks;

int tap_done(void)
{
	printf("%d checks, %d failed\n", tap_checks, tap_failures);
	return tap_failures ? 1 : 0;
}
