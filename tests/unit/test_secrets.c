/* Unit tests for secrets.c: generated passwords, and the 0600/0700 store. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secrets.h"
#include "tap.h"
#include "validate.h"

static char tmpdir[] = "/tmp/dbosfs-test-secrets-XXXXXX";

static void rm_rf(const char *path)
{
	struct stat st;

	if (lstat(path, &st) != 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			char sub[4096];
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
			rm_rf(sub);
		}
		if (d)
			closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

static int mode_of(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

static void test_generate(void)
{
	char a[33], b[33], big[129];
	struct errmsg e;
	int counts[256] = {0};

	CHECK(password_generate(a, 32) == 0);
	CHECK(password_generate(b, 32) == 0);
	CHECK(strlen(a) == 32 && strlen(b) == 32);
	CHECK(strcmp(a, b) != 0);
	CHECK(validate_password(a, &e) == 0);
	CHECK(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == 32);
	CHECK(password_generate(big, 128) == 0);
	CHECK(strlen(big) == 128 && validate_password(big, &e) == 0);
	CHECK(password_generate(big, 0) == 0 && big[0] == '\0');

	/* Many passwords: all valid, all distinct, and all 64 symbols show up
	 * with a plausible spread (64 * 1000 draws, ~1000 each). */
	static char seen[200][25];
	int failed = 0, invalid = 0, dupes = 0;
	for (int k = 0; k < 200; k++) {
		failed += password_generate(seen[k], 24) != 0;
		invalid += validate_password(seen[k], NULL) != 0;
		for (int j = 0; j < k; j++)
			dupes += strcmp(seen[k], seen[j]) == 0;
	}
	CHECK(failed == 0 && invalid == 0 && dupes == 0);
	for (int k = 0; k < 2000; k++) {
		failed += password_generate(a, 32) != 0;
		for (int j = 0; j < 32; j++)
			counts[(unsigned char)a[j]]++;
	}
	int symbols = 0, lo = 1 << 30, hi = 0;
	for (int c = 0; c < 256; c++) {
		if (!counts[c])
			continue;
		symbols++;
		lo = counts[c] < lo ? counts[c] : lo;
		hi = counts[c] > hi ? counts[c] : hi;
	}
	CHECK(failed == 0);
	CHECK(symbols == 64);
	CHECK(lo > 700 && hi < 1300);
}

static void test_store(void)
{
	char base[4096], path[4200], out[200];
	struct secret_store s;
	struct errmsg e = {""};

	snprintf(base, sizeof(base), "%s/state/deeper", tmpdir);
	CHECK(secret_store_open(&s, base, "local", &e) == 0);
	snprintf(path, sizeof(path), "%s/passwords/local", base);
	CHECK(strcmp(s.dir, path) == 0);
	/* Every directory it created is 0700. */
	CHECK(mode_of(path) == 0700);
	snprintf(path, sizeof(path), "%s/passwords", base);
	CHECK(mode_of(path) == 0700);
	CHECK(mode_of(base) == 0700);
	snprintf(path, sizeof(path), "%s/state", tmpdir);
	CHECK(mode_of(path) == 0700);

	/* Missing: -ENODATA. */
	CHECK(secret_get(&s, "mydb", out, sizeof(out), &e) == -ENODATA);

	/* Round trip, 0600, and no temporary files left behind. */
	CHECK(secret_put(&s, "mydb", "S3cret-pw_x", &e) == 0);
	CHECK(secret_get(&s, "mydb", out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "S3cret-pw_x") == 0);
	snprintf(path, sizeof(path), "%s/mydb", s.dir);
	CHECK(mode_of(path) == 0600);
	DIR *d = opendir(s.dir);
	int entries = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			entries++;
	if (d)
		closedir(d);
	CHECK(entries == 1);

	/* Overwrite replaces. */
	CHECK(secret_put(&s, "mydb", "Another-0ne", &e) == 0);
	CHECK(secret_get(&s, "mydb", out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, "Another-0ne") == 0);
	CHECK(mode_of(path) == 0600);

	/* Too small an output buffer is an error, never a truncated secret. */
	char small[5] = "xxxx";
	CHECK(secret_get(&s, "mydb", small, sizeof(small), &e) == -ERANGE);
	CHECK(strstr(e.text, "Another") == NULL);

	/* Longest password round-trips. */
	char pw[129];
	CHECK(password_generate(pw, 128) == 0);
	CHECK(secret_put(&s, "long_one", pw, &e) == 0);
	CHECK(secret_get(&s, "long_one", out, sizeof(out), &e) == 0);
	CHECK(strcmp(out, pw) == 0);

	/* Names are validated: nothing escapes the directory. */
	CHECK(secret_put(&s, "../evil", "S3cret-pw_x", &e) == -EINVAL);
	CHECK(secret_put(&s, ".hidden", "S3cret-pw_x", &e) == -EINVAL);
	CHECK(secret_put(&s, "a/b/c", "S3cret-pw_x", &e) == -EINVAL);
	CHECK(secret_get(&s, "..", out, sizeof(out), &e) == -EINVAL);
	CHECK(secret_delete(&s, "../x") == -EINVAL);
	CHECK(secret_put(&s, "mydb", "two\nlines", &e) == -EINVAL);
	CHECK(strstr(e.text, "two") == NULL);

	/* Separate scopes do not see each other. */
	struct secret_store cloud;
	CHECK(secret_store_open(&cloud, base, "cloud", &e) == 0);
	CHECK(secret_get(&cloud, "mydb", out, sizeof(out), &e) == -ENODATA);
	CHECK(secret_store_open(&cloud, base, "../x", &e) == -EINVAL);
	CHECK(secret_store_open(&cloud, base, "", &e) == -EINVAL);
	CHECK(secret_store_open(&cloud, "relative/dir", "local", &e) == -EINVAL);

	/* Opening again is fine and tightens a loosened directory. */
	CHECK(chmod(s.dir, 0755) == 0);
	CHECK(secret_store_open(&s, base, "local", &e) == 0);
	CHECK(mode_of(s.dir) == 0700);
	CHECK(secret_get(&s, "mydb", out, sizeof(out), &e) == 0);

	/* A symlink in place of the file is not followed. */
	char link[4200];
	snprintf(link, sizeof(link), "%s/linked", s.dir);
	CHECK(symlink("/etc/hostname", link) == 0);
	CHECK(secret_get(&s, "linked", out, sizeof(out), &e) < 0);
	CHECK(secret_get(&s, "linked", out, sizeof(out), &e) != -ENODATA);

	/* An empty file knows no password. */
	snprintf(path, sizeof(path), "%s/empty_one", s.dir);
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	if (f)
		fclose(f);
	CHECK(secret_get(&s, "empty_one", out, sizeof(out), &e) == -ENODATA);

	/* Delete; deleting again is not an error. */
	CHECK(secret_delete(&s, "mydb") == 0);
	CHECK(secret_get(&s, "mydb", out, sizeof(out), &e) == -ENODATA);
	CHECK(secret_delete(&s, "mydb") == 0);

	/* A state_dir under a file cannot be created: error with a message. */
	snprintf(path, sizeof(path), "%s/afile", tmpdir);
	f = fopen(path, "w");
	if (f)
		fclose(f);
	snprintf(base, sizeof(base), "%s/afile/sub", tmpdir);
	e.text[0] = '\0';
	CHECK(secret_store_open(&cloud, base, "local", &e) < 0);
	CHECK(e.text[0] != '\0');

	/* secret_wipe zeroes. */
	char w[8] = "secret!";
	secret_wipe(w, sizeof(w));
	CHECK(memcmp(w, "\0\0\0\0\0\0\0\0", 8) == 0);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	/* A permissive umask must not loosen the modes. */
	umask(0);
	test_generate();
	test_store();
	rm_rf(tmpdir);
	return tap_done();
}
