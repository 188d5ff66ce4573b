/* File helpers of the local provider: removing trees without leaving the
 * filesystem, directories with the right owner, files replaced atomically,
 * reading files and server logs, free space. */
#include "local_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define LOCAL_LOG_ROTATE_BYTES (8 * 1024 * 1024)

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int local_rmtree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	/* FTW_PHYS: never follow a symlink out of the tree; FTW_MOUNT: never
	 * cross into another filesystem. */
	if (nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
		return errno ? -errno : -EIO;
	return 0;
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

int local_write_file(const char *path, const char *text, mode_t mode)
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
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
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

int local_write_file_durable(const char *path, const char *text, mode_t mode)
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
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	local_fsync_dir(path);
	return 0;
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
