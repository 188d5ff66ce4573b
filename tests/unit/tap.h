/* A minimal test harness: CHECK() records failures, tap_done() prints a
 * summary and returns the exit status for meson. */
#ifndef DBOSFS_TAP_H
#define DBOSFS_TAP_H

#include <stdio.h>

extern int tap_failures;
extern int tap_checks;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		tap_checks++;                                                                      \
		if (!(cond)) {                                                                     \
			tap_failures++;                                                            \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
		}                                                                                  \
	} while (0)

int tap_done(void);

#endif
