/* Unit tests for errmap.c (every row of the spec's error table), and the
 * small error-path helpers next to it: errmsg, the event log, statuses. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "errmap.h"
#include "instance.h"
#include "log.h"
#include "tap.h"

struct http_case {
	long status;
	enum request_kind kind;
	int want;
};

static void test_http(void)
{
	static const struct http_case c[] = {
	    {200, REQ_READ, 0},          {201, REQ_CREATE, 0},       {204, REQ_MUTATE, 0},
	    {299, REQ_READ, 0},          {400, REQ_READ, -EINVAL},   {400, REQ_CREATE, -EINVAL},
	    {422, REQ_MUTATE, -EINVAL},  {401, REQ_READ, -EACCES},   {401, REQ_CREATE, -EACCES},
	    {403, REQ_READ, -EPERM},     {403, REQ_MUTATE, -EPERM},  {404, REQ_READ, -ENOENT},
	    {404, REQ_MUTATE, -ENOENT},  {409, REQ_CREATE, -EEXIST}, /* name taken */
	    {409, REQ_MUTATE, -EBUSY},                               /* state conflict */
	    {409, REQ_READ, -EBUSY},     {429, REQ_READ, -EAGAIN},   {503, REQ_CREATE, -EAGAIN},
	    {504, REQ_READ, -ETIMEDOUT}, {500, REQ_READ, -EIO},      {502, REQ_MUTATE, -EIO},
	    {599, REQ_READ, -EIO},       {405, REQ_READ, -EIO}, /* other 4xx: unexpected, not the
	                                                           user's input */
	    {418, REQ_CREATE, -EIO},     {301, REQ_READ, -EIO},      {100, REQ_READ, -EIO},
	    {0, REQ_READ, -EIO},         {-1, REQ_READ, -EIO},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		int rc = errno_from_http(c[i].status, c[i].kind);
		if (rc != c[i].want)
			fprintf(stderr, "  HTTP %ld kind %d: got %s want %s\n", c[i].status,
			        c[i].kind, errno_name(rc), errno_name(c[i].want));
		CHECK(rc == c[i].want);
	}
}

static void test_curl(void)
{
	static const struct {
		int code;
		int want;
	} c[] = {
	    {CURLE_OK, 0},
	    {CURLE_COULDNT_CONNECT, -ECONNREFUSED},
	    {CURLE_COULDNT_RESOLVE_HOST, -ECONNREFUSED},
	    {CURLE_OPERATION_TIMEDOUT, -ETIMEDOUT},
	    {CURLE_ABORTED_BY_CALLBACK, -EINTR},
	    {CURLE_SSL_CONNECT_ERROR, -EIO},
	    {CURLE_PEER_FAILED_VERIFICATION, -EIO},
	    {CURLE_SSL_CACERT_BADFILE, -EIO},
	    {CURLE_GOT_NOTHING, -EIO},
	    {CURLE_RECV_ERROR, -EIO},
	    {CURLE_SEND_ERROR, -EIO},
	    {CURLE_OUT_OF_MEMORY, -EIO},
	    {CURLE_URL_MALFORMAT, -EIO},
	    {9999, -EIO},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		int rc = errno_from_curl(c[i].code);
		if (rc != c[i].want)
			fprintf(stderr, "  CURLcode %d: got %s want %s\n", c[i].code,
			        errno_name(rc), errno_name(c[i].want));
		CHECK(rc == c[i].want);
	}
}

static void test_names(void)
{
	/* Every errno of the spec's table, by either sign. */
	static const struct {
		int err;
		const char *name;
	} c[] = {
	    {EINVAL, "EINVAL"},
	    {ENOENT, "ENOENT"},
	    {EEXIST, "EEXIST"},
	    {EBUSY, "EBUSY"},
	    {EPERM, "EPERM"},
	    {EACCES, "EACCES"},
	    {EAGAIN, "EAGAIN"},
	    {ETIMEDOUT, "ETIMEDOUT"},
	    {ECONNREFUSED, "ECONNREFUSED"},
	    {EINTR, "EINTR"},
	    {ENODATA, "ENODATA"},
	    {EIO, "EIO"},
	    {ENOMEM, "ENOMEM"},
	    {ENOSPC, "ENOSPC"},
	    {ENOTDIR, "ENOTDIR"},
	    {ENAMETOOLONG, "ENAMETOOLONG"},
	    {ERANGE, "ERANGE"},
	    {EROFS, "EROFS"},
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		CHECK(strcmp(errno_name(c[i].err), c[i].name) == 0);
		CHECK(strcmp(errno_name(-c[i].err), c[i].name) == 0);
	}
	CHECK(errno_name(0) != NULL);
	CHECK(errno_name(123456) != NULL);
	CHECK(strcmp(errno_name(123456), "EINVAL") != 0);
}

static void test_errmsg(void)
{
	struct errmsg e;

	CHECK(errmsg_set(&e, -EINVAL, "bad name %s (%d)", "x-y", 3) == -EINVAL);
	CHECK(strcmp(e.text, "bad name x-y (3)") == 0);
	CHECK(errmsg_set(NULL, -EIO, "ignored %d", 1) == -EIO);
	errmsg_clear(&e);
	CHECK(e.text[0] == '\0');
	errmsg_clear(NULL);
	/* Overlong messages are cut, still terminated. */
	char big[3000];
	memset(big, 'm', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(errmsg_set(&e, -EIO, "%s", big) == -EIO);
	CHECK(strlen(e.text) == ERRMSG_MAX - 1);
}

static int interrupted_answer;
static int fake_interrupted(void)
{
	return interrupted_answer;
}

static void test_interrupt_and_clock(void)
{
	CHECK(!op_interrupted()); /* no hook: never interrupted */
	op_interrupted_hook = fake_interrupted;
	CHECK(!op_interrupted());
	interrupted_answer = 1;
	CHECK(op_interrupted());
	op_interrupted_hook = NULL;
	CHECK(!op_interrupted());

	long long t0 = now_ms();
	usleep(20000);
	long long t1 = now_ms();
	CHECK(t0 > 0);
	CHECK(t1 - t0 >= 19 && t1 - t0 < 2000);
}

static void *log_worker(void *arg)
{
	for (int k = 0; k < 500; k++)
		log_event("thread %ld line %d", (long)(size_t)arg, k);
	return NULL;
}

static void test_log(void)
{
	struct buf b = BUF_INIT;

	log_init(false);
	log_event("mounted %s", "/mnt");
	log_error("refresh failed: %s", "EIO");
	log_event("two\nlines");
	CHECK(log_snapshot(&b) == 0);
	/* "YYYY-MM-DDTHH:MM:SSZ message", newest last. */
	char *l1 = b.data, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
	CHECK(strlen(l1) > 21 && l1[4] == '-' && l1[7] == '-' && l1[10] == 'T' && l1[13] == ':' &&
	      l1[19] == 'Z' && l1[20] == ' ');
	CHECK(strncmp(l1 + 21, "mounted /mnt\n", 13) == 0);
	CHECK(strncmp(l2 + 21, "error: refresh failed: EIO\n", 27) == 0);
	CHECK(strcmp(l3 + 21, "two\\nlines\n") == 0); /* one event, one line, escaped */
	buf_free(&b);

	/* Concurrent writers; only the newest LOG_KEEP_LINES survive. */
	pthread_t th[4];
	for (long k = 0; k < 4; k++)
		pthread_create(&th[k], NULL, log_worker, (void *)(size_t)k);
	for (int k = 0; k < 4; k++)
		pthread_join(th[k], NULL);
	log_event("the last one");
	CHECK(log_snapshot(&b) == 0);
	size_t lines = 0;
	for (size_t k = 0; k < b.len; k++)
		lines += b.data[k] == '\n';
	CHECK(lines == LOG_KEEP_LINES);
	CHECK(b.len > 13 && strcmp(b.data + b.len - 13, "the last one\n") == 0);
	CHECK(strstr(b.data, "mounted /mnt") == NULL); /* the oldest were dropped */
	buf_free(&b);

	log_shutdown();
	CHECK(log_snapshot(&b) == 0);
	CHECK(b.len == 0);
	buf_free(&b);
}

static void test_statuses(void)
{
	static const char *const transitional[] = {"provisioning", "starting",  "restarting",
	                                           "deleting",     "restoring", "creating",
	                                           "pending",      "",          NULL};
	static const char *const settled[] = {"available",   "backing-up", "failed",
	                                      "unavailable", "stopped",    "some-new-status"};
	for (size_t k = 0; k < sizeof(transitional) / sizeof(transitional[0]); k++)
		CHECK(!instance_status_settled(transitional[k]));
	for (size_t k = 0; k < sizeof(settled) / sizeof(settled[0]); k++)
		CHECK(instance_status_settled(settled[k]));

	struct instance_list l = {0};
	struct instance in = {0};
	int failed = 0;
	for (int k = 0; k < 100; k++) {
		snprintf(in.name, sizeof(in.name), "db%03d", k);
		in.port = 5000 + k;
		failed += instance_list_push(&l, &in) != 0;
	}
	CHECK(failed == 0);
	CHECK(l.count == 100);
	CHECK(strcmp(l.items[0].name, "db000") == 0 && l.items[99].port == 5099);
	instance_list_free(&l);
	CHECK(l.items == NULL && l.count == 0);
	instance_list_free(&l);
}

int main(void)
{
	test_errmsg();
	test_interrupt_and_clock();
	test_log();
	test_statuses();
	test_http();
	test_curl();
	test_names();
	return tap_done();
}
