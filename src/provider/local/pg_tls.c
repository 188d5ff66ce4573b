/* TLS for local servers: one certificate authority per state directory,
 * and one server certificate it signs, valid for 127.0.0.1 and localhost
 * (where every server listens). Both are made once, the first time a mount
 * needs them, never per instance: a template data directory gets a copy of
 * the server key, and every instance is a copy of a template.
 *
 * Files in STATE_DIR/local/tls/ (directory 0711, ours):
 *   ca.key      0600  signs the server certificate; never leaves this
 *                     directory, never readable by the server account
 *   ca.pem      0644  what clients trust (served as NAME/ca.pem)
 *   server.key  0600  copied into data directories, owned there by the
 *                     server account (PostgreSQL insists on that)
 *   server.crt  0644
 * Keys are ECDSA P-256: generating one takes well under a millisecond. */
#include "local_security.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_DAYS     (365 * 25)
#define SERVER_DAYS (365 * 20)

static int ssl_fail(struct errmsg *e, const char *what)
{
	char buf[256] = "unknown error";
	unsigned long code = ERR_get_error();

	if (code)
		ERR_error_string_n(code, buf, sizeof(buf));
	ERR_clear_error();
	return errmsg_set(e, -EIO, "TLS: %s failed: %s", what, buf);
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* A certificate for key, signed by issuer_key (issuer NULL: self-signed). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long days,
                       bool is_ca)
{
	X509 *cert = X509_new();
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	X509_NAME *name;

	if (!cert)
		return NULL;
	/* A random positive serial: two mounts' certificates never collide. */
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto fail;
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)))
		goto fail;
	if (!X509_set_version(cert, 2) || !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), days * 86400L) ||
	    !X509_set_pubkey(cert, key))
		goto fail;
	name = X509_get_subject_name(cert);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"dbosfs",
	                                -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
	                                0))
		goto fail;
	if (!X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name))
		goto fail;
	X509 *iss = issuer ? issuer : cert;
	if (is_ca) {
		if (add_ext(cert, iss, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
		    add_ext(cert, iss, NID_key_usage, "critical,keyCertSign,cRLSign") ||
		    add_ext(cert, iss, NID_subject_key_identifier, "hash"))
			goto fail;
	} else {
		if (add_ext(cert, iss, NID_basic_constraints, "critical,CA:FALSE") ||
		    add_ext(cert, iss, NID_key_usage, "critical,digitalSignature") ||
		    add_ext(cert, iss, NID_ext_key_usage, "serverAuth") ||
		    add_ext(cert, iss, NID_subject_key_identifier, "hash") ||
		    add_ext(cert, iss, NID_authority_key_identifier, "keyid:always") ||
		    /* Every server listens on 127.0.0.1; url names that address,
		     * so verify-full (and Node's checks) need it as an IP SAN. */
		    add_ext(cert, iss, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"))
			goto fail;
	}
	if (!X509_sign(cert, issuer_key, EVP_sha256()))
		goto fail;
	BN_free(bn);
	return cert;
fail:
	BN_free(bn);
	X509_free(cert);
	return NULL;
}

/* Writes through a temporary file and a rename, so a crash never leaves a
 * half-written key or certificate under the final name. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert, struct errmsg *e)
{
	char tmp[PATH_MAX + 8];
	FILE *f;
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return errmsg_set(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(tmp);
		return errmsg_set(e, -ENOMEM, "cannot write %s", tmp);
	}
	ok =
	    key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok || fchmodat(AT_FDCWD, tmp, mode, 0) < 0 || rename(tmp, path) < 0) {
		unlink(tmp);
		return errmsg_set(e, -EIO, "cannot write %s", path);
	}
	return 0;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "re");
	EVP_PKEY *k = NULL;

	if (f) {
		k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
	}
	return k;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "re");
	X509 *c = NULL;

	if (f) {
		c = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	return c;
}

/* The server certificate is usable if it is signed by this CA and valid for
 * at least another 30 days. */
static bool server_cert_ok(X509 *srv, EVP_PKEY *srv_key, EVP_PKEY *ca_key)
{
	time_t soon = time(NULL) + 30 * 86400L;

	return srv && srv_key && X509_verify(srv, ca_key) == 1 &&
	       X509_check_private_key(srv, srv_key) == 1 &&
	       X509_cmp_time(X509_get0_notAfter(srv), &soon) > 0;
}

int tls_ensure(const char *dir, struct errmsg *e)
{
	char ca_key_p[PATH_MAX], ca_pem_p[PATH_MAX], srv_key_p[PATH_MAX], srv_crt_p[PATH_MAX];
	EVP_PKEY *ca_key = NULL, *srv_key = NULL;
	X509 *ca = NULL, *srv = NULL;
	int rc = 0;
	bool made_ca = false;

	if (mkdir(dir, 0711) < 0 && errno != EEXIST)
		return errmsg_set(e, -errno, "cannot create %s: %s", dir, strerror(errno));
	if (chmod(dir, 0711) < 0)
		return errmsg_set(e, -errno, "cannot chmod %s: %s", dir, strerror(errno));
	if (local_path(ca_key_p, sizeof(ca_key_p), "%s/ca.key", dir) ||
	    local_path(ca_pem_p, sizeof(ca_pem_p), "%s/ca.pem", dir) ||
	    local_path(srv_key_p, sizeof(srv_key_p), "%s/server.key", dir) ||
	    local_path(srv_crt_p, sizeof(srv_crt_p), "%s/server.crt", dir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long under %s", dir);

	ca_key = read_key(ca_key_p);
	ca = read_cert(ca_pem_p);
	if (!ca_key || !ca || X509_check_private_key(ca, ca_key) != 1) {
		/* First use (or a damaged pair): a new CA. Certificates handed
		 * out before are then no longer trusted, which is right. */
		EVP_PKEY_free(ca_key);
		X509_free(ca);
		ca = NULL;
		ca_key = EVP_EC_gen("P-256");
		if (!ca_key) {
			rc = ssl_fail(e, "generating the CA key");
			goto out;
		}
		ca = make_cert(ca_key, "dbosfs local CA", NULL, ca_key, CA_DAYS, true);
		if (!ca) {
			rc = ssl_fail(e, "making the CA certificate");
			goto out;
		}
		rc = write_pem(ca_key_p, 0600, ca_key, NULL, e);
		if (!rc)
			rc = write_pem(ca_pem_p, 0644, NULL, ca, e);
		if (rc)
			goto out;
		made_ca = true;
	}
	srv_key = read_key(srv_key_p);
	srv = read_cert(srv_crt_p);
	if (made_ca || !server_cert_ok(srv, srv_key, ca_key)) {
		X509_free(srv);
		srv = NULL;
		if (!srv_key) {
			srv_key = EVP_EC_gen("P-256");
			if (!srv_key) {
				rc = ssl_fail(e, "generating the server key");
				goto out;
			}
			rc = write_pem(srv_key_p, 0600, srv_key, NULL, e);
			if (rc)
				goto out;
		}
		srv = make_cert(srv_key, "127.0.0.1", ca, ca_key, SERVER_DAYS, false);
		if (!srv) {
			rc = ssl_fail(e, "making the server certificate");
			goto out;
		}
		rc = write_pem(srv_crt_p, 0644, NULL, srv, e);
		if (rc)
			goto out;
		log_event("local: made %s%s/server.crt for 127.0.0.1 and localhost",
		          made_ca ? "a new CA (ca.pem) and " : "", dir);
	}
out:
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(srv_key);
	X509_free(ca);
	X509_free(srv);
	return rc;
}

/* Copies src to dst (replacing it) with mode, owned by the server account
 * when we are root. */
static int copy_file(const char *src, const char *dst, mode_t mode, const struct local_account *a,
                     struct errmsg *e)
{
	char buf[16384], tmp[PATH_MAX + 8];
	int in, out, rc = 0;
	ssize_t n;

	snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return errmsg_set(e, -errno, "cannot read %s: %s", src, strerror(errno));
	unlink(tmp);
	out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (out < 0) {
		rc = errmsg_set(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
		close(in);
		return rc;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n) {
			n = -1;
			break;
		}
	if (n < 0)
		rc = errmsg_set(e, -EIO, "cannot copy %s to %s", src, tmp);
	if (!rc && fchmod(out, mode) < 0)
		rc = errmsg_set(e, -errno, "cannot chmod %s: %s", tmp, strerror(errno));
	if (!rc && a && a->drop && fchown(out, a->uid, a->gid) < 0)
		rc = errmsg_set(e, -errno, "cannot chown %s: %s", tmp, strerror(errno));
	close(in);
	if (close(out) < 0 && !rc)
		rc = errmsg_set(e, -errno, "cannot write %s: %s", tmp, strerror(errno));
	if (!rc && rename(tmp, dst) < 0)
		rc = errmsg_set(e, -errno, "cannot rename %s: %s", tmp, strerror(errno));
	if (rc)
		unlink(tmp);
	return rc;
}

int tls_install(const char *tlsdir, const char *datadir, const struct local_account *acct,
                struct errmsg *e)
{
	char src[PATH_MAX], dst[PATH_MAX];
	int rc;

	if (local_path(src, sizeof(src), "%s/server.crt", tlsdir) ||
	    local_path(dst, sizeof(dst), "%s/server.crt", datadir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long under %s", datadir);
	rc = copy_file(src, dst, 0644, acct, e);
	if (rc)
		return rc;
	if (local_path(src, sizeof(src), "%s/server.key", tlsdir) ||
	    local_path(dst, sizeof(dst), "%s/server.key", datadir))
		return errmsg_set(e, -ENAMETOOLONG, "path too long under %s", datadir);
	/* PostgreSQL refuses a key readable by anyone but its owner. */
	return copy_file(src, dst, 0600, acct, e);
}
