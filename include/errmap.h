/* The one place where backend failures become errno values
 * (spec/filesystem.md, "Errors"). */
#ifndef DBOSFS_ERRMAP_H
#define DBOSFS_ERRMAP_H

#include <stdbool.h>

/* What kind of request got the HTTP status: 409 means EEXIST on create and
 * EBUSY otherwise. */
enum request_kind { REQ_READ, REQ_CREATE, REQ_MUTATE };

/* HTTP status -> negative errno; 2xx -> 0. */
int errno_from_http(long status, enum request_kind kind);
/* libcurl CURLcode (as int) -> negative errno: connect failures ECONNREFUSED,
 * timeouts ETIMEDOUT, aborted-by-callback EINTR, everything else EIO. */
int errno_from_curl(int curlcode);
/* Symbolic name of a positive or negative errno, e.g. "EINVAL". */
const char *errno_name(int err);

#endif
