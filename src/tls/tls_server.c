/*
 * tls_server: the SSL_CTX of one smtpd service (STARTTLS and implicit
 * TLS) built from its parameters, and the process-wide session-ticket
 * keys.  See tls.h and docs/tls.md.
 *
 * Owns the SSL_CTX (SSL objects made from it hold their own reference, so
 * sessions of an old configuration generation finish on the old context
 * after a reload) and the ticket keys (static, made once per process from
 * RAND_bytes, rotated every smtpd_tls_session_cache_timeout, so a client
 * resumes across reloads).  Certificates and keys are read here, at build
 * time, never during a handshake.
 *
 * Must never: do I/O on a connection or block; fail a handshake because a
 * client certificate does not verify, unless smtpd_tls_req_ccert asks for
 * a trusted one (otherwise that is for the restrictions to judge: the
 * session only records "not verified"); accept a configuration
 * it cannot serve (a missing or mismatched key is an error naming the
 * parameter's file:line, not a warning).
 */
#include "tls/tls.h"

#include "core/log.h"
#include "core/util.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

struct tls_server {
    SSL_CTX *ctx;
    tls_level_t level;     /* MAY or ENCRYPT (ENCRYPT in wrapper mode) */
    bool wrapper;
    int loglevel;
};

/* ------------------------------------------------------- ticket keys */

/* RFC 5077 tickets sealed with AES-256-CBC + HMAC-SHA256, OpenSSL's own
 * ticket format.  Two generations: "cur" seals new tickets, "old" still
 * opens tickets for one more period (and asks for a fresh one). */
typedef struct {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char mac[32];
    time_t born;
    bool set;
} ticket_key_t;

static pthread_mutex_t tk_lock = PTHREAD_MUTEX_INITIALIZER;
static ticket_key_t tk_cur, tk_old;

static bool ticket_key_new(ticket_key_t *k, time_t now)
{
    if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
        RAND_bytes(k->mac, sizeof k->mac) != 1)
        return false;
    k->born = now;
    k->set = true;
    return true;
}

/* The key to seal with now (rotating when the current one is older than
 * lifetime), into *out.  false when the RNG fails. */
static bool ticket_key_current(long long lifetime, ticket_key_t *out)
{
    time_t now = time(NULL);
    bool ok = true;
    pthread_mutex_lock(&tk_lock);
    if (!tk_cur.set || (lifetime > 0 && now - tk_cur.born >= lifetime)) {
        ticket_key_t fresh;
        if (ticket_key_new(&fresh, now)) {
            tk_old = tk_cur;
            tk_cur = fresh;
        } else {
            ok = tk_cur.set;   /* keep sealing with the old one rather than fail */
        }
    }
    *out = tk_cur;
    pthread_mutex_unlock(&tk_lock);
    return ok;
}

/* 1: the current key, 2: the previous one (renew the ticket), 0: unknown. */
static int ticket_key_find(const unsigned char name[16], ticket_key_t *out)
{
    int found = 0;
    pthread_mutex_lock(&tk_lock);
    if (tk_cur.set && memcmp(name, tk_cur.name, 16) == 0) {
        *out = tk_cur;
        found = 1;
    } else if (tk_old.set && memcmp(name, tk_old.name, 16) == 0) {
        *out = tk_old;
        found = 2;
    }
    pthread_mutex_unlock(&tk_lock);
    return found;
}

static bool ticket_mac_init(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    /* The session lifetime is the key lifetime; read it from the
     * context, which outlives the tls_server_t of a reloaded generation. */
    long lifetime = SSL_CTX_get_timeout(SSL_get_SSL_CTX(ssl));
    ticket_key_t k;
    int rc;
    if (enc) {
        if (!ticket_key_current(lifetime, &k))
            return -1;
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, k.name, 16);
        rc = 1;
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            rc = -1;
    } else {
        rc = ticket_key_find(key_name, &k);
        if (rc == 0)
            return 0;   /* sealed by another process or an earlier life: full handshake */
        if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            rc = -1;
    }
    if (rc > 0 && !ticket_mac_init(hctx, k.mac))
        rc = -1;
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/* ------------------------------------------------------------ callbacks */

/* A client certificate that does not verify is still a certificate: the
 * handshake goes on, SSL_get_verify_result() keeps the verdict, and the
 * restrictions (permit_tls_clientcerts, check_ccert_access) judge it.
 * Except with smtpd_tls_req_ccert (FAIL_IF_NO_PEER_CERT is its mark):
 * Postfix requires a *trusted* certificate there, so OpenSSL's verdict
 * stands and an untrusted one fails the handshake. */
static int verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    if (ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT))
        return ok;
    return 1;
}

/* smtpd_tls_loglevel >= 2: the handshake's steps, as Postfix logs them. */
static void info_cb(const SSL *ssl, int where, int ret)
{
    if (where & SSL_CB_LOOP) {
        log_info("smtpd", "SSL_accept:%s", SSL_state_string_long(ssl));
    } else if (where & SSL_CB_ALERT) {
        if ((ret & 0xff) != SSL3_AD_CLOSE_NOTIFY)
            log_info("smtpd", "SSL3 alert %s:%s:%s", (where & SSL_CB_READ) ? "read" : "write",
                     SSL_alert_type_string_long(ret), SSL_alert_desc_string_long(ret));
    } else if (where & SSL_CB_EXIT) {
        if (ret == 0)
            log_info("smtpd", "SSL_accept:failed in %s", SSL_state_string_long(ssl));
        else if (ret < 0) {
            int e = SSL_get_error(ssl, ret);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                log_info("smtpd", "SSL_accept:error in %s", SSL_state_string_long(ssl));
        }
    }
}

/* ------------------------------------------------------- configuration */

/* "file:line: " where id was set; for a default that names another
 * parameter ($smtpd_tls_cert_file), where that one was set. */
static void where(const params_t *p, param_id id, param_id fallback, buf_t *err)
{
    if (param_is_set(p, id) || fallback == id)
        param_where(p, id, err);
    else
        param_where(p, fallback, err);
}

/* The reason of the oldest queued OpenSSL error (the root cause; later
 * entries only say who passed it on), and the queue emptied. */
static void ssl_reason(buf_t *out)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        buf_puts(out, r);
    else if (e)
        buf_printf(out, "OpenSSL error %lx", e);
    else
        buf_puts(out, "unknown OpenSSL error");
    ERR_clear_error();
}

typedef struct {
    const params_t *p;
    param_id id, fallback;   /* the parameter named in messages */
    const char *file;
    buf_t *err;
} src_t;

static void src_error(const src_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void src_error(const src_t *s, const char *fmt, ...)
{
    where(s->p, s->id, s->fallback, s->err);
    buf_printf(s->err, "%s: %s: ", param_name(s->id), s->file);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(s->err, fmt, ap);
    va_end(ap);
    buf_putc(s->err, '\n');
}

/* One key with its leaf certificate and the rest of its chain. */
typedef struct {
    EVP_PKEY *key;
    int key_obj;             /* object number of the key in its file, for messages */
    const char *key_file;    /* ... and that file (chains may span files) */
    X509 *leaf;
    STACK_OF(X509) *chain;
} group_t;

static void group_clear(group_t *g)
{
    EVP_PKEY_free(g->key);
    X509_free(g->leaf);
    sk_X509_pop_free(g->chain, X509_free);
    memset(g, 0, sizeof *g);
}

/* Put g into ctx: the key must match the leaf, and each algorithm may
 * appear once (a second RSA chain would silently replace the first). */
static bool group_use(SSL_CTX *ctx, group_t *g, const src_t *s)
{
    /* Where the key was, when that is not the file named in front. */
    char key_at[64 + 256];
    if (g->key_file && strcmp(g->key_file, s->file) != 0)
        snprintf(key_at, sizeof key_at, "PEM object %d in %s", g->key_obj, g->key_file);
    else
        snprintf(key_at, sizeof key_at, "PEM object %d", g->key_obj);
    ERR_clear_error();
    if (X509_check_private_key(g->leaf, g->key) != 1) {
        buf_t r = BUF_INIT;
        ssl_reason(&r);
        src_error(s, "the private key (%s) does not match its certificate: %s", key_at, buf_cstr(&r));
        buf_free(&r);
        group_clear(g);
        return false;
    }
    bool ok = SSL_CTX_use_cert_and_key(ctx, g->leaf, g->key, g->chain, 0) == 1;
    if (!ok) {
        buf_t r = BUF_INIT;
        ssl_reason(&r);
        src_error(s, "cannot use the key (%s) and its certificate: %s (one key per algorithm)", key_at, buf_cstr(&r));
        buf_free(&r);
    }
    group_clear(g);
    return ok;
}

/* Decode one PEM object: a certificate, a private key, or nothing we use.
 * 1 cert, 2 key, 0 skipped, -1 error (reported). */
static int pem_object(const char *name, const unsigned char *data, long len, int objnum, X509 **cert,
                      EVP_PKEY **key, const src_t *s)
{
    const unsigned char *q = data;
    if (!strcmp(name, PEM_STRING_X509) || !strcmp(name, PEM_STRING_X509_OLD)) {
        *cert = d2i_X509(NULL, &q, len);
        if (!*cert || q != data + len) {
            X509_free(*cert);
            *cert = NULL;
            src_error(s, "PEM object %d: not a valid certificate", objnum);
            return -1;
        }
        return 1;
    }
    if (!strcmp(name, PEM_STRING_PKCS8INF) || !strcmp(name, PEM_STRING_RSA) || !strcmp(name, PEM_STRING_ECPRIVATEKEY)) {
        *key = d2i_AutoPrivateKey(NULL, &q, len);
        if (!*key) {
            src_error(s, "PEM object %d: not a valid private key", objnum);
            return -1;
        }
        return 2;
    }
    if (!strcmp(name, PEM_STRING_PKCS8)) {
        src_error(s, "PEM object %d: encrypted private keys are not supported (moat cannot ask for a passphrase)",
                  objnum);
        return -1;
    }
    if (!strcmp(name, PEM_STRING_ECPARAMETERS))
        return 0;   /* what "openssl ecparam -genkey" writes before the key */
    src_error(s, "PEM object %d: unexpected PEM type \"%s\"", objnum, name);
    return -1;
}

typedef bool (*pem_fn)(void *arg, int kind, X509 *cert, EVP_PKEY *key, int objnum, const src_t *s);

/* Read every PEM object of s->file in order, handing certificates and keys
 * to fn (which takes ownership).  false on any error (reported). */
static bool pem_read_file(const src_t *s, pem_fn fn, void *arg)
{
    errno = 0;
    BIO *bio = BIO_new_file(s->file, "r");
    if (!bio) {
        src_error(s, "%s", errno ? strerror(errno) : "cannot open");
        ERR_clear_error();
        return false;
    }
    bool ok = true;
    for (int objnum = 1;; objnum++) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long len = 0;
        ERR_clear_error();
        if (!PEM_read_bio(bio, &name, &header, &data, &len)) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                buf_t r = BUF_INIT;
                ssl_reason(&r);
                src_error(s, "PEM object %d: %s", objnum, buf_cstr(&r));
                buf_free(&r);
                ok = false;
            }
            ERR_clear_error();
            break;
        }
        X509 *cert = NULL;
        EVP_PKEY *key = NULL;
        int kind = pem_object(name, data, len, objnum, &cert, &key, s);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (kind < 0 || (kind > 0 && !fn(arg, kind, cert, key, objnum, s))) {
            ok = false;
            break;
        }
    }
    BIO_free(bio);
    return ok;
}

/* smtpd_tls_chain_files: across all files, each key is followed by its
 * certificate and then that certificate's issuers; the next key starts
 * the next chain. */
typedef struct {
    SSL_CTX *ctx;
    group_t g;
    int nchains;
} chains_t;

static bool chain_object(void *arg, int kind, X509 *cert, EVP_PKEY *key, int objnum, const src_t *s)
{
    chains_t *c = arg;
    if (kind == 2) {
        if (c->g.key && !c->g.leaf) {
            EVP_PKEY_free(key);
            src_t ks = *s;
            ks.file = c->g.key_file;
            src_error(&ks, "the private key (PEM object %d) is not followed by its certificate", c->g.key_obj);
            return false;
        }
        if (c->g.key) {
            src_t ks = *s;
            ks.file = c->g.key_file;
            if (!group_use(c->ctx, &c->g, &ks)) {
                EVP_PKEY_free(key);
                return false;
            }
            c->nchains++;
        }
        c->g.key = key;
        c->g.key_obj = objnum;
        c->g.key_file = s->file;
        return true;
    }
    if (!c->g.key) {
        X509_free(cert);
        src_error(s, "PEM object %d: a certificate before any private key (each key comes first, then its "
                     "certificate chain)", objnum);
        return false;
    }
    if (!c->g.leaf) {
        c->g.leaf = cert;
        return true;
    }
    if (!c->g.chain)
        c->g.chain = sk_X509_new_null();
    if (!c->g.chain || !sk_X509_push(c->g.chain, cert)) {
        X509_free(cert);
        src_error(s, "out of memory");
        return false;
    }
    return true;
}

static bool load_chain_files(SSL_CTX *ctx, const params_t *p, buf_t *err)
{
    const char *const *files;
    size_t n = param_list(p, PARAM_smtpd_tls_chain_files, &files);
    chains_t c = {.ctx = ctx};
    src_t s = {p, PARAM_smtpd_tls_chain_files, PARAM_smtpd_tls_chain_files, NULL, err};
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        s.file = files[i];
        ok = pem_read_file(&s, chain_object, &c);
    }
    if (ok && c.g.key && !c.g.leaf) {
        s.file = c.g.key_file;
        src_error(&s, "the private key (PEM object %d) is not followed by its certificate", c.g.key_obj);
        ok = false;
    } else if (ok && c.g.key) {
        s.file = c.g.key_file;
        ok = group_use(ctx, &c.g, &s);
        c.nchains += ok;
    }
    if (ok && c.nchains == 0) {
        s.file = n ? files[n - 1] : "";
        src_error(&s, "no private key and certificate found");
        ok = false;
    }
    group_clear(&c.g);
    return ok;
}

/* A cert_file/key_file pair: certificates in cert_file in order (the
 * first is the server's, the rest its chain), the first key in key_file
 * (which may be the same file, anywhere in it). */
typedef struct {
    group_t g;
    bool want_certs, want_key;
} pair_t;

static bool pair_object(void *arg, int kind, X509 *cert, EVP_PKEY *key, int objnum, const src_t *s)
{
    pair_t *pr = arg;
    if (kind == 2) {
        if (pr->want_key && !pr->g.key) {
            pr->g.key = key;
            pr->g.key_obj = objnum;
            pr->g.key_file = s->file;
        } else {
            EVP_PKEY_free(key);   /* Postfix takes the first key of a mixed file, too */
        }
        return true;
    }
    if (!pr->want_certs) {
        X509_free(cert);
        return true;
    }
    if (!pr->g.leaf) {
        pr->g.leaf = cert;
        return true;
    }
    if (!pr->g.chain)
        pr->g.chain = sk_X509_new_null();
    if (!pr->g.chain || !sk_X509_push(pr->g.chain, cert)) {
        X509_free(cert);
        src_error(s, "out of memory");
        return false;
    }
    return true;
}

static bool load_pair(SSL_CTX *ctx, const params_t *p, param_id cert_id, param_id key_id, buf_t *err)
{
    const char *cert_file = param_str(p, cert_id);
    const char *key_file = param_str(p, key_id);
    if (!*key_file)
        key_file = cert_file;
    pair_t pr = {.want_certs = true, .want_key = !strcmp(key_file, cert_file)};
    src_t cs = {p, cert_id, cert_id, cert_file, err};
    src_t ks = {p, key_id, cert_id, key_file, err};
    bool ok = pem_read_file(&cs, pair_object, &pr);
    if (ok && !pr.g.leaf) {
        src_error(&cs, "no certificate found");
        ok = false;
    }
    if (ok && !pr.want_key) {
        pr.want_certs = false;
        pr.want_key = true;
        ok = pem_read_file(&ks, pair_object, &pr);
    }
    if (ok && !pr.g.key) {
        src_error(&ks, "no private key found");
        ok = false;
    }
    if (ok)
        ok = group_use(ctx, &pr.g, &cs);
    group_clear(&pr.g);
    return ok;
}

/* The level from smtpd_tls_security_level, or from the obsolete switches
 * when that is empty; *from names the parameter it came from. */
static bool server_level(const params_t *p, tls_level_t *lev, param_id *from, buf_t *err)
{
    const char *s = param_str(p, PARAM_smtpd_tls_security_level);
    if (*s) {
        *from = PARAM_smtpd_tls_security_level;
        if (tls_level_parse(s, false, lev))
            return true;
        param_where(p, PARAM_smtpd_tls_security_level, err);
        buf_printf(err, "smtpd_tls_security_level: unknown level \"%s\" (none, may or encrypt)\n", s);
        return false;
    }
    if (param_bool(p, PARAM_smtpd_enforce_tls)) {
        *lev = TLS_LEV_ENCRYPT;
        *from = PARAM_smtpd_enforce_tls;
    } else if (param_bool(p, PARAM_smtpd_use_tls)) {
        *lev = TLS_LEV_MAY;
        *from = PARAM_smtpd_use_tls;
    } else {
        *lev = TLS_LEV_NONE;
        *from = PARAM_smtpd_tls_security_level;
    }
    return true;
}

/* A 32-byte session id context per service, so that a session made for
 * one service (say submission, with a client certificate) is never
 * resumed on another. */
static bool set_sid_ctx(SSL_CTX *ctx, const char *service)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    buf_t b = BUF_INIT;
    buf_printf(&b, "moat/smtpd/%s", service ? service : "");
    bool ok = EVP_Digest(b.data, b.len, md, &len, EVP_sha256(), NULL) == 1 &&
              SSL_CTX_set_session_id_context(ctx, md, len > SSL_MAX_SID_CTX_LENGTH ? SSL_MAX_SID_CTX_LENGTH : len) == 1;
    buf_free(&b);
    return ok;
}

/* Protocols, ciphers, certificates, trust anchors: every parameter is
 * checked, so one load reports every mistake at once. */
static int configure(tls_server_t *t, const params_t *p, const char *service, bool enforce, param_id lev_from,
                     buf_t *err)
{
    SSL_CTX *ctx = t->ctx;
    size_t before = err->len;

    /* protocols */
    param_id proto_id = enforce ? PARAM_smtpd_tls_mandatory_protocols : PARAM_smtpd_tls_protocols;
    const char *const *items;
    size_t n = param_list(p, proto_id, &items);
    int min = 0, max = 0;
    buf_t why = BUF_INIT;
    if (!tls_protocol_range(items, n, &min, &max, &why)) {
        param_where(p, proto_id, err);
        buf_printf(err, "%s: %s\n", param_name(proto_id), buf_cstr(&why));
    } else if (SSL_CTX_set_min_proto_version(ctx, min) != 1 || SSL_CTX_set_max_proto_version(ctx, max) != 1) {
        param_where(p, proto_id, err);
        buf_printf(err, "%s: OpenSSL refuses this protocol range\n", param_name(proto_id));
        ERR_clear_error();
    }

    /* ciphers (TLS 1.2 and below; the TLS 1.3 suites stay OpenSSL's) */
    param_id grade_id = enforce ? PARAM_smtpd_tls_mandatory_ciphers : PARAM_smtpd_tls_ciphers;
    const char *excl[256];
    size_t nexcl = 0;
    const char *const *ex;
    size_t m = param_list(p, PARAM_smtpd_tls_exclude_ciphers, &ex);
    for (size_t i = 0; i < m && nexcl < ARRAY_LEN(excl); i++)
        excl[nexcl++] = ex[i];
    if (enforce) {
        m = param_list(p, PARAM_smtpd_tls_mandatory_exclude_ciphers, &ex);
        for (size_t i = 0; i < m && nexcl < ARRAY_LEN(excl); i++)
            excl[nexcl++] = ex[i];
    }
    buf_t list = BUF_INIT;
    buf_reset(&why);
    if (!tls_cipher_list(p, param_str(p, grade_id), excl, nexcl, &list, &why)) {
        param_where(p, grade_id, err);
        buf_printf(err, "%s: %s\n", param_name(grade_id), buf_cstr(&why));
    } else if (SSL_CTX_set_cipher_list(ctx, buf_cstr(&list)) != 1) {
        param_where(p, grade_id, err);
        buf_printf(err, "%s: no cipher matches \"%s\"\n", param_name(grade_id), buf_cstr(&list));
        ERR_clear_error();
    }
    buf_free(&list);
    buf_free(&why);

    /* fingerprint digest: checked now, not at the first client certificate */
    const char *dg = param_str(p, PARAM_smtpd_tls_fingerprint_digest);
    if (!EVP_get_digestbyname(dg)) {
        param_where(p, PARAM_smtpd_tls_fingerprint_digest, err);
        buf_printf(err, "smtpd_tls_fingerprint_digest: unknown digest \"%s\" (sha256, sha1, md5, sha512 ...)\n", dg);
    }

    /* trust anchors for client certificates */
    const char *cafile = param_str(p, PARAM_smtpd_tls_CAfile);
    const char *capath = param_str(p, PARAM_smtpd_tls_CApath);
    if (*cafile) {
        ERR_clear_error();
        STACK_OF(X509_NAME) *names = NULL;
        if (SSL_CTX_load_verify_file(ctx, cafile) != 1 || !(names = SSL_load_client_CA_file(cafile))) {
            buf_t r = BUF_INIT;
            ssl_reason(&r);
            param_where(p, PARAM_smtpd_tls_CAfile, err);
            buf_printf(err, "smtpd_tls_CAfile: %s: %s\n", cafile, buf_cstr(&r));
            buf_free(&r);
        } else {
            /* The acceptable-CA list a client picks its certificate by. */
            SSL_CTX_set_client_CA_list(ctx, names);
        }
    }
    if (*capath) {
        /* OpenSSL only looks into the directory when a certificate needs
         * it; a typo would go unnoticed until then. */
        struct stat st;
        const char *bad = stat(capath, &st) != 0 ? strerror(errno) : !S_ISDIR(st.st_mode) ? "not a directory" : NULL;
        if (bad) {
            param_where(p, PARAM_smtpd_tls_CApath, err);
            buf_printf(err, "smtpd_tls_CApath: %s: %s\n", capath, bad);
        } else if (SSL_CTX_load_verify_dir(ctx, capath) != 1) {
            buf_t r = BUF_INIT;
            ssl_reason(&r);
            param_where(p, PARAM_smtpd_tls_CApath, err);
            buf_printf(err, "smtpd_tls_CApath: %s: %s\n", capath, buf_cstr(&r));
            buf_free(&r);
        }
    }

    /* client certificates */
    bool req = param_bool(p, PARAM_smtpd_tls_req_ccert);
    if (req && !enforce) {
        log_info("smtpd", "%s: Can't require client certs unless TLS is required", service ? service : "smtpd");
        req = false;
    }
    if (req || param_bool(p, PARAM_smtpd_tls_ask_ccert)) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (req ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), verify_cb);
        SSL_CTX_set_verify_depth(ctx, (int)param_int(p, PARAM_smtpd_tls_ccert_verifydepth));
    }

    /* resumption */
    if (!set_sid_ctx(ctx, service)) {
        buf_puts(err, "smtpd: cannot set the TLS session id context\n");
        ERR_clear_error();
    }
    long long timeout = param_int(p, PARAM_smtpd_tls_session_cache_timeout);
    if (timeout > 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        /* Only clients without tickets land in the cache; bound its memory. */
        SSL_CTX_sess_set_cache_size(ctx, 8192);
        SSL_CTX_set_timeout(ctx, (long)timeout);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
        /* One TLS 1.3 ticket per handshake: an SMTP client resumes once at a time. */
        SSL_CTX_set_num_tickets(ctx, 1);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }

    /* certificates, last: the errors above are cheaper to fix first */
    bool have_cert = false;
    if (*param_str(p, PARAM_smtpd_tls_chain_files)) {
        have_cert = true;
        if (*param_str(p, PARAM_smtpd_tls_cert_file) || *param_str(p, PARAM_smtpd_tls_eccert_file))
            log_warn("smtpd", "%s: smtpd_tls_chain_files is set: smtpd_tls_cert_file and smtpd_tls_eccert_file "
                              "are ignored", service ? service : "smtpd");
        load_chain_files(ctx, p, err);
    } else {
        if (*param_str(p, PARAM_smtpd_tls_cert_file)) {
            have_cert = true;
            load_pair(ctx, p, PARAM_smtpd_tls_cert_file, PARAM_smtpd_tls_key_file, err);
        }
        if (*param_str(p, PARAM_smtpd_tls_eccert_file)) {
            have_cert = true;
            load_pair(ctx, p, PARAM_smtpd_tls_eccert_file, PARAM_smtpd_tls_eckey_file, err);
        }
    }
    if (!have_cert) {
        if (enforce) {
            param_id id = t->wrapper ? PARAM_smtpd_tls_wrappermode : lev_from;
            param_where(p, id, err);
            if (t->wrapper)
                buf_puts(err, "smtpd_tls_wrappermode = yes");
            else
                buf_printf(err, "%s = %s", param_name(id), param_str(p, id));
            buf_puts(err, " needs a server certificate: set smtpd_tls_chain_files, or smtpd_tls_cert_file "
                          "(and smtpd_tls_key_file)\n");
        } else {
            return 1;   /* no certificate at level may: TLS is off */
        }
    }
    return err->len > before ? -1 : 0;
}

int tls_server_new(const params_t *p, const char *service, tls_server_t **out, buf_t *err)
{
    *out = NULL;
    tls_level_t level;
    param_id lev_from;
    if (!server_level(p, &level, &lev_from, err))
        return -1;
    bool wrapper = param_bool(p, PARAM_smtpd_tls_wrappermode);
    if (level == TLS_LEV_NONE && !wrapper)
        return 0;
    bool enforce = wrapper || level == TLS_LEV_ENCRYPT;

    tls_server_t *t = xcalloc(1, sizeof *t);
    t->level = enforce ? TLS_LEV_ENCRYPT : TLS_LEV_MAY;
    t->wrapper = wrapper;
    t->loglevel = (int)param_int(p, PARAM_smtpd_tls_loglevel);
    ERR_clear_error();
    t->ctx = SSL_CTX_new(TLS_server_method());
    if (!t->ctx) {
        buf_printf(err, "smtpd: cannot create a TLS context: ");
        ssl_reason(err);
        buf_putc(err, '\n');
        free(t);
        return -1;
    }
    /* Renegotiation only lets a client make us do expensive work again;
     * compression leaks secrets (CRIME).  Our preference order, not the
     * client's, decides the cipher (ChaCha20 first for clients that put
     * it first: they lack AES hardware). */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                    SSL_OP_PRIORITIZE_CHACHA);
    /* Thousands of idle sessions: give the 34 KB of record buffers back
     * between reads.  libevent may hand a retried write a moved buffer. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (t->loglevel >= 2)
        SSL_CTX_set_info_callback(t->ctx, info_cb);

    int rc = configure(t, p, service, enforce, lev_from, err);
    if (rc != 0) {
        if (rc > 0)
            log_warn("smtpd", "%s: no server certificate (smtpd_tls_chain_files, smtpd_tls_cert_file): "
                              "TLS won't be enabled, STARTTLS is not offered", service ? service : "smtpd");
        tls_server_free(&t);
        ERR_clear_error();
        return rc > 0 ? 0 : -1;
    }
    *out = t;
    return 0;
}

void tls_server_free(tls_server_t **tp)
{
    tls_server_t *t = *tp;
    if (!t)
        return;
    /* Live SSL objects keep their own reference: old sessions finish. */
    SSL_CTX_free(t->ctx);
    free(t);
    *tp = NULL;
}

tls_level_t tls_server_level(const tls_server_t *t)
{
    return t->level;
}

bool tls_server_wrapper(const tls_server_t *t)
{
    return t->wrapper;
}

int tls_server_loglevel(const tls_server_t *t)
{
    return t->loglevel;
}

SSL *tls_server_ssl(tls_server_t *t)
{
    SSL *ssl = SSL_new(t->ctx);
    if (ssl)
        SSL_set_accept_state(ssl);
    return ssl;
}
