/*
 * tls_testlib: test certificates and in-memory TLS connections for unit
 * tests, with the OpenSSL API (no openssl command, no network).  Shared
 * by test_tls.c (the server) and test_tls_client.c (the client).
 *
 *   tt_pki_t pki;
 *   tt_pki_init(&pki, "moat test CA");          // a private CA (P-256) in a mkdtemp dir
 *   tt_cert_t srv, cli;
 *   tt_issue(&pki, "mx.test", &(tt_opts_t){0}, &srv);                   // RSA-2048, SAN mx.test
 *   tt_issue(&pki, "mx.test", &(tt_opts_t){.ec = true}, &ecsrv);        // ECDSA P-256
 *   tt_issue(&pki, "alice", &(tt_opts_t){.ec = true, .client = true}, &cli);
 *   tt_issue(&pki, "old.test", &(tt_opts_t){.days = -1}, &old);         // expired yesterday
 *   tt_issue(&pki, "other.test", &(tt_opts_t){.self_signed = true}, &x);
 *   srv.cert_file, srv.key_file, srv.chain_file (key + cert + CA), pki.ca_file
 *   tt_fingerprint(srv.cert, "sha256", false, buf, sizeof buf)          // "AB:CD:..."
 *   tt_handshake(client_ssl, server_ssl)        // over a BIO pair, no sockets
 *   tt_cert_free(&srv); tt_pki_free(&pki);      // removes the files and the dir
 *
 * RSA-2048 keys take tens of milliseconds (more under ASan): make them
 * once per test file, not once per test.  Never a committed key: every
 * key is made here, in memory, and its files die with the directory.
 */
#ifndef MOAT_TESTS_TLS_TESTLIB_H
#define MOAT_TESTS_TLS_TESTLIB_H

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct tt_pki {
    char dir[64];          /* mkdtemp'd; tt_pki_free removes it and what is in it */
    EVP_PKEY *ca_key;
    X509 *ca;
    char ca_file[128];     /* the CA certificate (PEM) */
    long serial;
    char *files[64];       /* written so far, to remove */
    int nfiles;
} tt_pki_t;

typedef struct tt_cert {
    EVP_PKEY *key;
    X509 *cert;
    char key_file[160];    /* the key alone */
    char cert_file[160];   /* the certificate alone */
    char chain_file[160];  /* key, certificate, then the CA (smtpd_tls_chain_files form) */
} tt_cert_t;

typedef struct tt_opts {
    bool ec;               /* ECDSA P-256 instead of RSA-2048 */
    int days;              /* validity from now (0: 30 days); < 0: ended -days days ago */
    bool client;           /* clientAuth only, and no subjectAltName unless san says */
    bool self_signed;      /* signed by its own key, not by the CA */
    const char *san[4];    /* DNS names (NULL-terminated); default: cn for a server */
} tt_opts_t;

static inline EVP_PKEY *tt_key(bool ec)
{
    return ec ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256") : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
}

/* A file name inside the PKI dir, remembered for removal. */
static inline void tt_path(tt_pki_t *p, const char *base, const char *ext, char *out, size_t size)
{
    snprintf(out, size, "%s/%s-%ld%s", p->dir, base, p->serial, ext);
    if (p->nfiles < (int)(sizeof p->files / sizeof p->files[0]))
        p->files[p->nfiles++] = strdup(out);
}

/* Write a key (may be NULL) and certificates (in order) as one PEM file. */
static inline bool tt_write_pem(const char *path, EVP_PKEY *key, X509 *const *certs, size_t n)
{
    BIO *b = BIO_new_file(path, "w");
    if (!b)
        return false;
    bool ok = !key || PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = PEM_write_bio_X509(b, certs[i]) == 1;
    BIO_free(b);
    chmod(path, 0600);
    return ok;
}

static inline bool tt_ext(X509 *subject, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, subject, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!e)
        return false;
    bool ok = X509_add_ext(subject, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

/* A certificate for cn with key, signed by signer (issuer's key), or by
 * key itself when issuer is NULL (self-signed). */
static inline X509 *tt_make_cert(long serial, const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *signer,
                                 int days, const char *const *exts)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    long day = 86400;
    if (days < 0) {
        X509_gmtime_adj(X509_getm_notBefore(x), (days - 1) * day);
        X509_gmtime_adj(X509_getm_notAfter(x), days * day);
    } else {
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), (days ? days : 30) * day);
    }
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    bool ok = true;
    /* exts: nid, value pairs as text ("basicConstraints", "CA:FALSE" ...) */
    for (size_t i = 0; ok && exts && exts[i]; i += 2)
        ok = tt_ext(x, issuer ? issuer : x, OBJ_txt2nid(exts[i]), exts[i + 1]);
    if (!ok || !X509_sign(x, issuer ? signer : key, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static inline void tt_pki_free(tt_pki_t *p)
{
    for (int i = 0; i < p->nfiles; i++) {
        unlink(p->files[i]);
        free(p->files[i]);
    }
    p->nfiles = 0;
    if (p->dir[0])
        rmdir(p->dir);
    p->dir[0] = 0;
    EVP_PKEY_free(p->ca_key);
    X509_free(p->ca);
    p->ca_key = NULL;
    p->ca = NULL;
}

static inline bool tt_pki_init(tt_pki_t *p, const char *ca_name)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/moat-tls-test.XXXXXX");
    if (!mkdtemp(p->dir)) {
        p->dir[0] = 0;
        return false;
    }
    p->serial = 1;
    p->ca_key = tt_key(true);
    const char *const exts[] = {"basicConstraints", "critical,CA:TRUE", "keyUsage", "critical,keyCertSign,cRLSign",
                                "subjectKeyIdentifier", "hash", NULL};
    p->ca = p->ca_key ? tt_make_cert(p->serial, ca_name, p->ca_key, NULL, NULL, 0, exts) : NULL;
    tt_path(p, "ca", ".pem", p->ca_file, sizeof p->ca_file);
    if (!p->ca || !tt_write_pem(p->ca_file, NULL, &p->ca, 1)) {
        tt_pki_free(p);
        return false;
    }
    return true;
}

static inline void tt_cert_free(tt_cert_t *c)
{
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    c->key = NULL;
    c->cert = NULL;
}

static inline bool tt_issue(tt_pki_t *p, const char *cn, const tt_opts_t *o, tt_cert_t *out)
{
    memset(out, 0, sizeof *out);
    p->serial++;
    out->key = tt_key(o->ec);
    if (!out->key)
        return false;
    char san[512] = "";
    size_t n = 0;
    for (int i = 0; i < 4 && o->san[i]; i++)
        n += (size_t)snprintf(san + n, sizeof san - n, "%sDNS:%s", n ? "," : "", o->san[i]);
    if (!o->san[0] && !o->client)
        snprintf(san, sizeof san, "DNS:%s", cn);
    const char *exts[12];
    int k = 0;
    exts[k++] = "basicConstraints";
    exts[k++] = "CA:FALSE";
    exts[k++] = "extendedKeyUsage";
    exts[k++] = o->client ? "clientAuth" : "serverAuth,clientAuth";
    if (san[0]) {
        exts[k++] = "subjectAltName";
        exts[k++] = san;
    }
    if (!o->self_signed) {
        exts[k++] = "authorityKeyIdentifier";
        exts[k++] = "keyid";
    }
    exts[k] = NULL;
    out->cert = o->self_signed ? tt_make_cert(p->serial, cn, out->key, NULL, NULL, o->days, exts)
                               : tt_make_cert(p->serial, cn, out->key, p->ca, p->ca_key, o->days, exts);
    if (!out->cert) {
        tt_cert_free(out);
        return false;
    }
    char base[64];
    size_t j = 0;
    for (const char *s = cn; *s && j + 1 < sizeof base; s++)
        base[j++] = (char)((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                                   *s == '.' || *s == '-'
                               ? *s
                               : '_');
    base[j] = 0;
    tt_path(p, base, ".key", out->key_file, sizeof out->key_file);
    tt_path(p, base, ".pem", out->cert_file, sizeof out->cert_file);
    tt_path(p, base, ".chain", out->chain_file, sizeof out->chain_file);
    X509 *chain[2] = {out->cert, p->ca};
    if (!tt_write_pem(out->key_file, out->key, NULL, 0) || !tt_write_pem(out->cert_file, NULL, &out->cert, 1) ||
        !tt_write_pem(out->chain_file, out->key, chain, o->self_signed ? 1 : 2)) {
        tt_cert_free(out);
        return false;
    }
    return true;
}

/* Postfix's form: upper-case hex pairs joined by ':'; pubkey: of the DER
 * SubjectPublicKeyInfo instead of the whole certificate. */
static inline void tt_fingerprint(X509 *cert, const char *digest, bool pubkey, char *out, size_t size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    const EVP_MD *m = EVP_get_digestbyname(digest);
    out[0] = 0;
    if (!m)
        return;
    if (pubkey) {
        unsigned char *der = NULL;
        int dlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
        if (dlen <= 0 || !EVP_Digest(der, (size_t)dlen, md, &len, m, NULL))
            len = 0;
        OPENSSL_free(der);
    } else if (!X509_digest(cert, m, md, &len)) {
        len = 0;
    }
    size_t j = 0;
    for (unsigned i = 0; i < len && j + 4 <= size; i++)
        j += (size_t)snprintf(out + j, size - j, "%s%02X", i ? ":" : "", md[i]);
}

/* A client context that accepts any server certificate (the tests look
 * at what was negotiated, not at trust). */
static inline SSL_CTX *tt_client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

/* Join client and server with a BIO pair and run both handshakes to the
 * end.  true when both finished; false when either failed (the error
 * queue says why). */
static inline bool tt_handshake(SSL *cli, SSL *srv)
{
    BIO *a = NULL, *b = NULL;
    if (!BIO_new_bio_pair(&a, 0, &b, 0))
        return false;
    SSL_set_bio(cli, a, a);
    SSL_set_bio(srv, b, b);
    SSL_set_connect_state(cli);
    SSL_set_accept_state(srv);
    bool cdone = false, sdone = false;
    for (int round = 0; round < 64 && !(cdone && sdone); round++) {
        SSL *const side[2] = {cli, srv};
        bool *const done[2] = {&cdone, &sdone};
        for (int i = 0; i < 2; i++) {
            if (*done[i])
                continue;
            int r = SSL_do_handshake(side[i]);
            if (r == 1) {
                *done[i] = true;
                continue;
            }
            int e = SSL_get_error(side[i], r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                return false;
        }
    }
    return cdone && sdone;
}

/* One byte each way after the handshake: the client reads what the
 * server sent after its Finished (TLS 1.3 session tickets), and a server
 * that refuses the client's certificate late shows it here.  true when
 * both bytes arrived. */
static inline bool tt_exchange(SSL *cli, SSL *srv)
{
    char c = 0;
    if (SSL_write(srv, "s", 1) != 1 || SSL_read(cli, &c, 1) != 1 || c != 's')
        return false;
    if (SSL_write(cli, "c", 1) != 1 || SSL_read(srv, &c, 1) != 1 || c != 'c')
        return false;
    return true;
}

#endif
