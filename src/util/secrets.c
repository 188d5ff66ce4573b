/* Passwords: generation from getrandom(), and a store of one 0600 file per
 * instance under STATE_DIR/passwords/SCOPE (directories 0700). */
#include "secrets.h"
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "validate.h"

/* A saved password is at most PASSWORD_MAX bytes; anything much bigger is
 * not ours and is refused rather than read. */
#define SECRET_FILE_MAX 4096

static const char password_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void secret_wipe(void *p, size_t n)
{
	if (p && n)
		explicit_bzero(p, n);
}

static int random_bytes(unsigned char *p, size_t n)
{
	while (n) {
		ssize_t got = getrandom(p, n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -EIO;
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

int password_generate(char *out, size_t len)
{
	unsigned char pool[64];
	size_t have = 0, used = 0, o = 0;

	_Static_assert(sizeof(password_alphabet) - 1 == 64, "alphabet must have 64 characters");
	while (o < len) {
		if (used == have) {
			if (random_bytes(pool, sizeof(pool))) {
				secret_wipe(pool, sizeof(pool));
				secret_wipe(out, len);
				out[0] = '\0';
				return -EIO;
			}
			have = sizeof(pool);
			used = 0;
		}
		unsigned char r = pool[used++];
		/* Rejection sampling: with 64 symbols, r >> 2 spans 0..63 exactly,
		 * so nothing is rejected and every symbol is equally likely; the
		 * bound check keeps that true if the alphabet ever changes. */
		unsigned v = r >> 2;
		if (v >= sizeof(password_alphabet) - 1)
			continue;
		out[o++] = password_alphabet[v];
	}
	out[len] = '\0';
	secret_wipe(pool, sizeof(pool));
	return 0;
}

/* A single path component we created or accept: not empty, no '/', not a
 * dot name. */
static bool component_ok(const char *s)
{
	return s && s[0] && s[0] != '.' && !strchr(s, '/');
}

/* mkdir -p with 0700 for every directory it creates. */
static int mkdir_p(const char *path, struct errmsg *e)
{
	char tmp[4096];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(tmp))
		return errmsg_set(e, -ENAMETOOLONG, "state directory path is empty or too long");
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return errmsg_set(e, -errno, "cannot create directory %s: %s", tmp,
			                  strerror(errno));
		*p = c;
		if (!c)
			break;
	}
	return 0;
}

int secret_store_open(struct secret_store *s, const char *state_dir, const char *scope,
                      struct errmsg *e)
{
	char passwords[4096];
	struct stat st;
	int n, rc;

	if (!state_dir || state_dir[0] != '/')
		return errmsg_set(e, -EINVAL, "state directory must be an absolute path");
	if (!component_ok(scope))
		return errmsg_set(e, -EINVAL,
		                  "password store scope must be one plain path component");
	n = snprintf(passwords, sizeof(passwords), "%s/passwords", state_dir);
	if (n < 0 || (size_t)n >= sizeof(passwords))
		return errmsg_set(e, -ENAMETOOLONG, "state directory path is too long");
	n = snprintf(s->dir, sizeof(s->dir), "%s/%s", passwords, scope);
	if (n < 0 || (size_t)n >= sizeof(s->dir))
		return errmsg_set(e, -ENAMETOOLONG, "state directory path is too long");
	rc = mkdir_p(s->dir, e);
	if (rc)
		return rc;
	/* Directories that already existed (an older version, a careless
	 * mkdir) are tightened: they hold secrets. */
	if (chmod(passwords, 0700) != 0 || chmod(s->dir, 0700) != 0)
		return errmsg_set(e, -errno, "cannot set mode 0700 on %s: %s", s->dir,
		                  strerror(errno));
	if (lstat(s->dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return errmsg_set(e, -ENOTDIR, "%s is not a directory", s->dir);
	return 0;
}

static int secret_path(const struct secret_store *s, const char *name, char *out, size_t outsz,
                       struct errmsg *e)
{
	int rc = validate_instance_name(name, e);
	int n;

	if (rc)
		return rc;
	/* Belt and braces: the file name must never leave the directory. */
	if (strchr(name, '/') || strchr(name, '.'))
		return errmsg_set(e, -EINVAL, "bad instance name for the password store");
	n = snprintf(out, outsz, "%s/%s", s->dir, name);
	if (n < 0 || (size_t)n >= outsz)
		return errmsg_set(e, -ENAMETOOLONG, "password file path is too long");
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int secret_put(struct secret_store *s, const char *name, const char *password, struct errmsg *e)
{
	char path[4200], tmp[4200];
	int fd, rc, n;

	rc = secret_path(s, name, path, sizeof(path), e);
	if (rc)
		return rc;
	/* A newline or NUL could not be read back as the same password. */
	if (!password || strpbrk(password, "\r\n"))
		return errmsg_set(e, -EINVAL,
		                  "password for %s cannot be stored: it has a line break", name);
	/* The temporary name starts with '.', which no instance name does. */
	n = snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", s->dir, name);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return errmsg_set(e, -ENAMETOOLONG, "password file path is too long");
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot create a file in %s: %s", s->dir,
		                  strerror(errno));
	rc = fchmod(fd, 0600) ? -errno : 0;
	if (!rc)
		rc = write_all(fd, password, strlen(password));
	if (!rc)
		rc = write_all(fd, "\n", 1);
	if (!rc && fsync(fd) != 0)
		rc = -errno;
	if (close(fd) != 0 && !rc)
		rc = -errno;
	if (!rc)
		proc_crash_point("secret-temp");
	if (!rc && rename(tmp, path) != 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return errmsg_set(e, rc, "cannot save the password for %s in %s: %s", name, s->dir,
		                  strerror(-rc));
	}
	/* Make the rename itself durable. */
	fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

int secret_get(struct secret_store *s, const char *name, char *out, size_t outsz, struct errmsg *e)
{
	char path[4200], data[SECRET_FILE_MAX + 1];
	struct stat st;
	size_t len = 0;
	int fd, rc;

	rc = secret_path(s, name, path, sizeof(path), e);
	if (rc)
		return rc;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENODATA;
		return errmsg_set(e, -errno, "cannot read the saved password for %s: %s", name,
		                  strerror(errno));
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > SECRET_FILE_MAX) {
		close(fd);
		return errmsg_set(
		    e, -EIO, "the saved password file for %s is not a small regular file", name);
	}
	for (;;) {
		ssize_t r = read(fd, data + len, sizeof(data) - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			break;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len == sizeof(data) - 1) {
			rc = -EFBIG;
			break;
		}
	}
	close(fd);
	if (!rc) {
		if (len && data[len - 1] == '\n')
			len--;
		if (len == 0)
			rc = -ENODATA; /* an empty file knows no password */
		else if (memchr(data, '\0', len) || memchr(data, '\n', len))
			rc = errmsg_set(e, -EIO, "the saved password file for %s is malformed",
			                name);
		else if (len >= outsz)
			rc = errmsg_set(e, -ERANGE, "the saved password for %s is too long", name);
	} else {
		rc = errmsg_set(e, rc, "cannot read the saved password for %s: %s", name,
		                strerror(-rc));
	}
	if (!rc) {
		memcpy(out, data, len);
		out[len] = '\0';
	}
	secret_wipe(data, sizeof(data));
	return rc;
}

int secret_names(struct secret_store *s, char ***names, size_t *count)
{
	DIR *d = opendir(s->dir);
	struct dirent *de;
	char **v = NULL;
	size_t n = 0, cap = 0;

	*names = NULL;
	*count = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		/* Temporary files start with '.', which no instance name does. */
		if (validate_instance_name(de->d_name, NULL) != 0)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char **nv = realloc(v, ncap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
			cap = ncap;
		}
		if (!(v[n] = strdup(de->d_name)))
			break;
		n++;
	}
	closedir(d);
	*names = v;
	*count = n;
	return 0;
}

int secret_delete(struct secret_store *s, const char *name)
{
	char path[4200];
	int rc = secret_path(s, name, path, sizeof(path), NULL);

	if (rc)
		return rc;
	if (unlink(path) != 0 && errno != ENOENT)
		return -errno;
	return 0;
}
