/* File helpers of the local provider: removing trees without leaving the
 * filesystem, directories with the right owner, files replaced atomically,
 * reading files and server logs, free space. */
#include "local_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define LOCAL_LOG_ROTATE_BYTES (8 * 1024 * 1024)

/* Removes the directory path (on device dev) and everything in it. Each
 * directory's names are read in full and its descriptor closed before
 * descending, so the walk needs one descriptor at a time, at any depth:
 * it must work when a mkdir cleans up after running out of them. Symlinks
 * are removed, never followed; other filesystems are never entered. */
static int rm_dir(const char *path, dev_t dev)
{
	DIR *d = opendir(path);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				rc = -ENOMEM;
				break;
			}
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name))) {
			rc = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		char child[PATH_MAX];
		struct stat st;

		if (!rc &&
		    snprintf(child, sizeof(child), "%s/%s", path, names[i]) >= (int)sizeof(child))
			rc = -ENAMETOOLONG;
		if (!rc && lstat(child, &st) == 0) {
			if (!S_ISDIR(st.st_mode)) {
				if (unlink(child) < 0 && errno != ENOENT)
					rc = -errno;
			} else if (st.st_dev != dev) {
				rc = -EXDEV; /* a mount inside: not ours to empty */
			} else {
				rc = rm_dir(child, dev);
			}
		}
		free(names[i]);
	}
	free(names);
	if (!rc && rmdir(path) < 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}

int local_rmtree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	return rm_dir(path, st.st_dev);
}

int local_mkdir(const struct local_provider *lp, const char *path, mode_t mode, bool server_owned)
{
	if (mkdir(path, mode) < 0) {
		if (errno != EEXIST)
			return -errno;
	}
	/* Enforce mode and owner even on an existing directory: a umask or an
	 * older version may have left it different. */
	if (chmod(path, mode) < 0)
		return -errno;
	if (lp->acct.drop) {
		uid_t uid = server_owned ? lp->acct.uid : 0;
		gid_t gid = server_owned ? lp->acct.gid : 0;
		if (chown(path, uid, gid) < 0)
			return -errno;
	}
	return 0;
}

void local_fsync_dir(const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* Temp file + rename, so a reader never sees half a file; durable adds
 * fsync of the file before and of the directory after the rename. */
static int write_file(const char *path, const char *text, mode_t mode, bool durable)
{
	char tmp[PATH_MAX + 8];
	size_t len = strlen(text);
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		rc = errno ? -errno : -EIO;
	if (!rc && durable && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	if (durable)
		local_fsync_dir(path);
	return 0;
}

int local_write_file(const char *path, const char *text, mode_t mode)
{
	return write_file(path, text, mode, false);
}

int local_write_file_durable(const char *path, const char *text, mode_t mode)
{
	return write_file(path, text, mode, true);
}

int local_read_file(const char *path, char *out, size_t outsz, bool tail)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;
	struct stat st;

	out[0] = '\0';
	if (fd < 0)
		return -errno;
	if (tail && fstat(fd, &st) == 0 && (size_t)st.st_size > outsz - 1)
		lseek(fd, st.st_size - (off_t)(outsz - 1), SEEK_SET);
	while (got < outsz - 1) {
		ssize_t n = read(fd, out + got, outsz - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	out[got] = '\0';
	close(fd);
	return 0;
}

int local_silent_failure(const char *dir, const char *what, struct errmsg *e)
{
	long long avail = local_free_bytes(dir);

	if (avail >= 0 && avail < LOCAL_START_MARGIN_BYTES)
		return errmsg_set(e, -ENOSPC, "%s: %s (%lld KiB free on the filesystem of %s)",
		                  what, strerror(ENOSPC), avail >> 10, dir);
	if (avail >= 0)
		return errmsg_set(e, -EIO, "%s (%lld MiB free on the filesystem of %s)", what,
		                  avail >> 20, dir);
	return errmsg_set(e, -EIO, "%s (free space of %s unknown: %s)", what, dir,
	                  strerror((int)-avail));
}

long long local_free_bytes(const char *path)
{
	struct statvfs sv;

	if (statvfs(path, &sv) < 0)
		return -errno;
	/* f_bavail, not f_bfree: copies and servers run as the server account,
	 * which cannot use the blocks reserved for root. */
	return (long long)sv.f_bavail * (long long)sv.f_frsize;
}

void local_rotate_log(const char *logp)
{
	struct stat st;
	char old[PATH_MAX + 4];

	if (stat(logp, &st) == 0 && st.st_size > LOCAL_LOG_ROTATE_BYTES) {
		snprintf(old, sizeof(old), "%s.1", logp);
		rename(logp, old);
	}
}

/* What the server wrote since offset (the current start attempt). */
void local_read_log_since(const char *logp, off_t off, char *out, size_t outsz)
{
	int fd = open(logp, O_RDONLY | O_CLOEXEC);
	struct stat st;
	ssize_t n = 0;

	out[0] = '\0';
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && st.st_size - off > (off_t)outsz - 1)
		off = st.st_size - (off_t)(outsz - 1);
	n = pread(fd, out, outsz - 1, off);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
}
