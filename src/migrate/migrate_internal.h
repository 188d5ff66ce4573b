/* What the pieces of the migration runner share (migrate_run.c runs the
 * commands and writes the report; migrate_writer.c reads the writer's
 * world; migrate_procs.c spawns, guards and cleans up the processes). */
#ifndef DBOSFS_MIGRATE_INTERNAL_H
#define DBOSFS_MIGRATE_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "buf.h"
#include "common.h"
#include "migrate.h"

/* In every command's environment: processes that leave the command's
 * group (setsid, daemons) are still found by it. */
#define RUN_TAG_VAR "DBOSFS_MIGRATION_RUN"

/* NULL-terminated "K=V" array from /proc/PID/environ, or NULL when it
 * cannot be read (gone, a zombie, over 1 MiB). */
char **writer_environ(pid_t pid);
/* Frees such an array, wiping its values. NULL is fine. */
void env_free(char **env);
/* The writer's supplementary groups from /proc/PID/status; how many, or
 * -1. */
int writer_groups(pid_t pid, gid_t *groups, int max);
/* *out: req->path made absolute against the writer's working directory
 * (NULL when it is absolute or empty). -EINVAL or -errno with e. */
int writer_path(const struct migrate_request *req, char **out, struct errmsg *e);

/* One command: /bin/sh -c CMD in dir, with env, as the writer if asked. */
struct guarded_cmd {
	const char *tag; /* the run's tag (RUN_TAG_VAR, records) */
	const char *dir;
	char *const *argv;
	char *const *env;
	bool as_writer; /* switch to uid, gid and groups */
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	int ngroups;
};

/* Forks the guard (a new process group that dies with the daemon) and
 * its shell: stdin /dev/null, stdout and stderr to out_fd. Records the
 * group. The guard's pid (= the group id), or -EIO with e. */
pid_t guarded_spawn(const struct guarded_cmd *c, int out_fd, struct errmsg *e);
/* Kills what is left of the group and what carries the tag, reaps the
 * guard into *wstatus and drops the records. How many processes besides
 * the guard were still there. */
int guarded_reap(pid_t pid, const char *tag, int *wstatus);

#endif
