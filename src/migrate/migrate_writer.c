/* The writer's world, read from /proc/PID of the process that wrote the
 * migrate or rollback file: its environment, its groups, its working
 * directory (migrate_internal.h). */
#include "migrate_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENVIRON_MAX (1024 * 1024)

/* NULL-terminated "K=V" array from /proc/PID/environ, or NULL. */
char **writer_environ(pid_t pid)
{
	char path[64], chunk[8192], **env = NULL;
	struct buf raw = BUF_INIT;
	size_t count = 0, i = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			break;
		if (n < 0 || raw.len + (size_t)n > ENVIRON_MAX ||
		    buf_append(&raw, chunk, (size_t)n) != 0) {
			close(fd);
			explicit_bzero(chunk, sizeof(chunk));
			buf_free_secret(&raw);
			return NULL;
		}
	}
	close(fd);
	explicit_bzero(chunk, sizeof(chunk));
	/* An empty environ is what a zombie or kernel thread shows. */
	if (!raw.len) {
		buf_free(&raw);
		return NULL;
	}
	for (size_t k = 0; k < raw.len; k++)
		count += raw.data[k] == '\0';
	env = calloc(count + 2, sizeof(*env));
	for (size_t k = 0; env && k < raw.len; k += strlen(raw.data + k) + 1) {
		if (!strchr(raw.data + k, '='))
			continue;
		if (!(env[i++] = strdup(raw.data + k))) {
			for (size_t j = 0; j + 1 < i; j++)
				free(env[j]);
			free(env);
			env = NULL;
		}
	}
	buf_free_secret(&raw);
	return env;
}

void env_free(char **env)
{
	if (!env)
		return;
	for (char **p = env; *p; p++) {
		explicit_bzero(*p, strlen(*p));
		free(*p);
	}
	free(env);
}

/* The writer's supplementary groups, from /proc/PID/status. */
int writer_groups(pid_t pid, gid_t *groups, int max)
{
	char path[64], line[4096];
	FILE *f;
	int n = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "re")))
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Groups:", 7) != 0)
			continue;
		char *p = line + 7, *end;
		n = 0;
		for (;;) {
			unsigned long g = strtoul(p, &end, 10);
			if (end == p || n == max)
				break;
			groups[n++] = (gid_t)g;
			p = end;
		}
		break;
	}
	fclose(f);
	return n;
}

/* An absolute path for what the writer wrote: relative to its cwd. */
int writer_path(const struct migrate_request *req, char **out, struct errmsg *e)
{
	char link[64], cwd[PATH_MAX];
	ssize_t n;

	*out = NULL;
	if (!req->path || !*req->path || req->path[0] == '/')
		return 0;
	if (req->pid <= 0)
		return errmsg_set(e, -EINVAL,
		                  "relative path %s: the writer's working directory is unknown; "
		                  "write an absolute path",
		                  req->path);
	snprintf(link, sizeof(link), "/proc/%d/cwd", (int)req->pid);
	n = readlink(link, cwd, sizeof(cwd) - 1);
	if (n < 0)
		return errmsg_set(e, -EINVAL,
		                  "relative path %s: cannot read the writer's working directory "
		                  "(%s); write an absolute path",
		                  req->path, strerror(errno));
	cwd[n] = '\0';
	char *joined = NULL;
	/* Through the magic link, not the text of cwd: the writer may see
	 * another mount namespace (a container) than the daemon. "." and
	 * "../app" become the directory they name, as the daemon sees it. */
	if (asprintf(&joined, "%s/%s", link, req->path) < 0)
		return -ENOMEM;
	*out = realpath(joined, NULL);
	if (!*out) {
		int err = errno;
		errmsg_set(e, -err, "%s (relative to the writer's directory %s): %s", req->path,
		           cwd, strerror(err));
		free(joined);
		return -err;
	}
	free(joined);
	return 0;
}
