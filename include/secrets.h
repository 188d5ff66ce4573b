/* Passwords: generation, and the 0600 store under STATE_DIR/passwords/SCOPE/
 * that lets password, pgpass, env and migrations work. Files are written
 * atomically (temp file + rename), directories are 0700. */
#ifndef DBOSFS_SECRETS_H
#define DBOSFS_SECRETS_H

#include <stddef.h>

#include "common.h"

/* A strong URL-safe password of len characters [A-Za-z0-9_-] from
 * getrandom(); len+1 bytes are written. 0 or -EIO. */
int password_generate(char *out, size_t len);

struct secret_store {
	char dir[4096]; /* STATE_DIR/passwords/SCOPE */
};

/* Creates the directory (0700) if needed. */
int secret_store_open(struct secret_store *s, const char *state_dir, const char *scope,
                      struct errmsg *e);
int secret_put(struct secret_store *s, const char *name, const char *password, struct errmsg *e);
/* -ENODATA (and no message needed) when no password is saved. */
int secret_get(struct secret_store *s, const char *name, char *out, size_t outsz, struct errmsg *e);
int secret_delete(struct secret_store *s, const char *name);
/* The names that have a saved password; the caller frees each and the array. */
int secret_names(struct secret_store *s, char ***names, size_t *count);

/* Overwrites memory that held a secret. */
void secret_wipe(void *p, size_t n);

#endif
