/*
 * tls_client: the SMTP/LMTP client's TLS (contract in tls_client.h;
 * behaviour, parameters and log lines in docs/tls-client.md).
 *
 * Owns: the pure policy pieces (levels, table syntax, lookup keys, name
 * matching), tls_client_t (an SSL_CTX, the open smtp_tls_policy_maps
 * tables and a session cache, shared by every delivery with the same
 * smtp_tls_* values through tls_client_cache_t), and per connection an
 * SSL with its verification record (SSL ex_data, freed with the SSL).
 *
 * The handshake is never aborted by certificate checks: the verify
 * callback records the first problem and lets the handshake finish, and
 * the caller decides from the level (Postfix's way), so "may" delivers
 * to a server with an expired certificate and "verify" defers with a
 * precise reason.
 *
 * Never: do network I/O of its own (the bufferevent does it), trust a
 * certificate name with NULs or control characters, let a table that
 * cannot be read or an entry that cannot be parsed weaken a policy (the
 * delivery defers instead), or keep an SSL_SESSION past its lifetime.
 */
#include "tls/tls_client.h"

#include "core/log.h"
#include "core/util.h"
#include "maps/maps.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Idle entries kept by a tls_client_cache_t beyond the ones in use. */
#define CACHE_IDLE_MAX 8
/* Seconds between checks of an entry's files and tables. */
#define RECHECK_SECS 30
/* Saved sessions per tls_client_t (one per server and policy). */
#define SESS_MAX 1000
/* Parameters pointers an entry remembers as already checked. */
#define SEEN_MAX 8
#define VERIFY_DEPTH 9

/* ------------------------------------------------------------ levels */

int tls_client_global_level(const params_t *p, tls_level_t *out, buf_t *err, buf_t *notes)
{
    const char *s = param_str(p, PARAM_smtp_tls_security_level);
    *out = TLS_LEV_NONE;
    if (s && *s) {
        if (str_ieq(s, "dane")) {
            *out = TLS_LEV_MAY;
            if (notes)
                buf_puts(notes, "smtp_tls_security_level = dane needs DNSSEC validation, which moat does not do: "
                                "using \"may\"");
            return 0;
        }
        if (str_ieq(s, "dane-only") || str_ieq(s, "fingerprint")) {
            buf_printf(err, "smtp_tls_security_level: level \"%s\" is not supported", s);
            return -1;
        }
        if (!tls_level_parse(s, true, out)) {
            buf_printf(err, "smtp_tls_security_level: invalid level \"%s\"", s);
            return -1;
        }
        return 0;
    }
    if (param_bool(p, PARAM_smtp_enforce_tls))
        *out = param_bool(p, PARAM_smtp_tls_enforce_peername) ? TLS_LEV_VERIFY : TLS_LEV_ENCRYPT;
    else if (param_bool(p, PARAM_smtp_use_tls))
        *out = TLS_LEV_MAY;
    return 0;
}

/* ------------------------------------------------------ policy syntax */

static const char POLICY_SEPS[] = " \t\r\n,";

/* The next token of *s separated by any of seps into tok (cut at
 * toklen - 1 with *cut set); false at the end. */
static bool next_tok(const char **s, const char *seps, char *tok, size_t toklen, bool *cut)
{
    const char *p = *s;
    while (*p && strchr(seps, *p))
        p++;
    if (!*p) {
        *s = p;
        return false;
    }
    const char *b = p;
    while (*p && !strchr(seps, *p))
        p++;
    size_t n = (size_t)(p - b);
    if (cut)
        *cut = n >= toklen;
    if (n >= toklen)
        n = toklen - 1;
    memcpy(tok, b, n);
    tok[n] = 0;
    *s = p;
    return true;
}

static void note(buf_t *notes, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(buf_t *notes, const char *fmt, ...)
{
    if (!notes)
        return;
    if (notes->len)
        buf_puts(notes, "; ");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(notes, fmt, ap);
    va_end(ap);
}

/* Append the ':'-separated names of v to pol's match list. */
static int add_matches(tls_policy_t *pol, const char *v, buf_t *why)
{
    char one[TLS_POLICY_NAME_MAX];
    bool cut = false;
    const char *s = v;
    while (next_tok(&s, ":", one, sizeof one, &cut)) {
        if (cut) {
            buf_printf(why, "match name too long: \"%.60s...\"", one);
            return -1;
        }
        if (pol->nmatch >= TLS_POLICY_MATCH_MAX) {
            buf_printf(why, "more than %d match names", TLS_POLICY_MATCH_MAX);
            return -1;
        }
        str_copy(pol->match[pol->nmatch++], one, TLS_POLICY_NAME_MAX);
    }
    return 0;
}

static bool set_once(char *dst, size_t dstlen, bool *seen, const char *name, const char *v, bool may_be_empty,
                     buf_t *why)
{
    if (*seen) {
        buf_printf(why, "attribute \"%s\" is specified multiple times", name);
        return false;
    }
    if (!*v && !may_be_empty) {
        buf_printf(why, "attribute \"%s\" has empty value", name);
        return false;
    }
    if (strlen(v) >= dstlen) {
        buf_printf(why, "attribute \"%s\" is too long", name);
        return false;
    }
    str_copy(dst, v, dstlen);
    *seen = true;
    return true;
}

int tls_policy_parse(const char *value, tls_policy_t *out, buf_t *why, buf_t *notes)
{
    memset(out, 0, sizeof *out);
    char tok[1024];
    bool cut = false;
    const char *s = value ? value : "";
    if (!next_tok(&s, POLICY_SEPS, tok, sizeof tok, &cut)) {
        buf_puts(why, "invalid empty policy");
        return -1;
    }
    if (str_ieq(tok, "dane")) {
        out->level = TLS_LEV_MAY;
        note(notes, "level \"dane\" needs DNSSEC validation, which moat does not do: using \"may\"");
    } else if (str_ieq(tok, "dane-only") || str_ieq(tok, "fingerprint")) {
        buf_printf(why, "security level \"%s\" is not supported", tok);
        return -1;
    } else if (cut || !tls_level_parse(tok, true, &out->level)) {
        buf_printf(why, "invalid security level \"%.100s\"", tok);
        return -1;
    }
    if (out->level == TLS_LEV_NONE) {
        while (next_tok(&s, POLICY_SEPS, tok, sizeof tok, &cut))
            note(notes, "ignoring attribute \"%.100s\" with TLS disabled", tok);
        return 0;
    }
    bool seen_proto = false, seen_grade = false;
    while (next_tok(&s, POLICY_SEPS, tok, sizeof tok, &cut)) {
        char *eq = strchr(tok, '=');
        if (cut) {
            buf_printf(why, "attribute too long: \"%.60s...\"", tok);
            return -1;
        }
        if (!eq || eq == tok) {
            buf_printf(why, "malformed attribute/value pair \"%.100s\"", tok);
            return -1;
        }
        *eq = 0;
        const char *name = tok, *v = eq + 1;
        if (str_ieq(name, "ciphers")) {
            if (!set_once(out->grade, sizeof out->grade, &seen_grade, "ciphers", v, false, why))
                return -1;
        } else if (str_ieq(name, "protocols")) {
            if (!set_once(out->protocols, sizeof out->protocols, &seen_proto, "protocols", v, true, why))
                return -1;
        } else if (str_ieq(name, "exclude")) {
            if (!set_once(out->exclude, sizeof out->exclude, &out->has_exclude, "exclude", v, true, why))
                return -1;
        } else if (str_ieq(name, "match")) {
            if (!*v) {
                buf_puts(why, "attribute \"match\" has empty value");
                return -1;
            }
            if (out->level < TLS_LEV_VERIFY) {
                buf_printf(why, "attribute \"match\" invalid at security level \"%s\"", tls_level_name(out->level));
                return -1;
            }
            if (add_matches(out, v, why) < 0)
                return -1;
        } else if (str_ieq(name, "tafile")) {
            buf_puts(why, "attribute \"tafile\" is not supported");
            return -1;
        } else {
            buf_printf(why, "invalid attribute name: \"%.100s\"", name);
            return -1;
        }
    }
    return 0;
}

static bool is_ip_literal(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

size_t tls_policy_keys(const char *nexthop, bool lmtp, buf_t *out)
{
    const char *s = nexthop ? nexthop : "";
    if (lmtp) {
        if (str_istarts(s, "unix:"))
            return 0;
        if (str_istarts(s, "inet:"))
            s += 5;
    }
    if (!*s)
        return 0;
    char *key = xstrdup(s);
    str_lower(key);
    buf_puts(out, key);
    buf_putc(out, '\n');
    size_t n = 1;
    /* Parent domains only for a bare domain: "[host]", "host:port" and
     * addresses are explicit next hops that match only themselves. */
    if (!strchr(key, '[') && !strchr(key, ':') && !is_ip_literal(key)) {
        for (const char *p = strchr(key + 1, '.'); p && p[1]; p = strchr(p + 1, '.')) {
            buf_puts(out, p);
            buf_putc(out, '\n');
            n++;
        }
    }
    free(key);
    return n;
}

/* -------------------------------------------------------- name matching */

/* certname ends in ".dom" with at least one more character in front. */
static bool is_subdomain(const char *certname, const char *dom)
{
    size_t cl = strlen(certname), dl = strlen(dom);
    return cl > dl + 1 && certname[cl - dl - 1] == '.' && str_ieq(certname + cl - dl, dom);
}

static bool name_equal(const char *certname, const char *dom)
{
    if (str_ieq(certname, dom))
        return true;
    /* "*.example.com" stands for one non-empty label before example.com. */
    if (certname[0] != '*' || certname[1] != '.' || !certname[2] || strchr(certname + 1, '*'))
        return false;
    const char *dot = strchr(dom, '.');
    return dot && dot != dom && dot[1] && str_ieq(certname + 1, dot);
}

bool tls_client_name_matches(const char *certname, const tls_policy_t *pol, const char *nexthop,
                             const char *hostname)
{
    if (!certname || !*certname)
        return false;
    for (size_t i = 0; i < pol->nmatch; i++) {
        const char *m = pol->match[i];
        const char *dom;
        bool sub = false;
        if (str_ieq(m, "nexthop")) {
            dom = nexthop;
        } else if (str_ieq(m, "hostname")) {
            dom = hostname;
        } else if (str_ieq(m, "dot-nexthop")) {
            dom = nexthop;
            sub = true;
        } else if (m[0] == '.' && m[1]) {
            dom = m + 1;
            sub = true;
        } else {
            dom = m;
        }
        if (!dom || !*dom)
            continue;
        if (sub ? is_subdomain(certname, dom) : name_equal(certname, dom))
            return true;
    }
    return false;
}

/* --------------------------------------------------------- the engine */

typedef struct sess {
    char *key;
    SSL_SESSION *s;
    long long expires;   /* usec */
    long long used;      /* usec, for eviction */
} sess_t;

typedef struct stamp {
    char *path;
    bool exists;
    struct stat st;
} stamp_t;

struct tls_client {
    int refs;
    char *prog;
    tls_level_t level;
    char *level_why;          /* the global level is invalid */
    map_t **maps;
    size_t nmaps;
    char *maps_why;           /* a table could not be opened */
    SSL_CTX *ctx;             /* NULL: engine unavailable (engine_why), or not needed */
    char *engine_why;
    long long sess_timeout;   /* seconds; 0: no resumption */
    sess_t *sess;
    size_t nsess;
    /* tls_client_cache_t bookkeeping */
    char *key;
    stamp_t stamps[4];        /* CAfile, CApath, cert_file, key_file */
    const params_t *seen[SEEN_MAX];
    size_t nseen;
    long long checked;        /* usec */
    tls_client_t *next;
};

/* What an SSL made here carries (ex_data): its engine, the session-cache
 * key and the first certificate problem of the handshake. */
typedef struct cdata {
    tls_client_t *tc;
    char *sess_key;
    int err;                  /* X509_V_OK, or the problem at the lowest depth */
    int err_depth;            /* -1: none */
    char err_issuer[256];
} cdata_t;

static int ex_index = -1;

static void cdata_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    cdata_t *cd = ptr;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (!cd)
        return;
    tls_client_unref(&cd->tc);
    free(cd->sess_key);
    free(cd);
}

static int ex_idx(void)
{
    /* Loop thread only, like everything that makes SSL objects here. */
    if (ex_index < 0)
        ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, cdata_free_cb);
    return ex_index;
}

static void sess_drop(tls_client_t *tc, size_t i)
{
    free(tc->sess[i].key);
    SSL_SESSION_free(tc->sess[i].s);
    tc->sess[i] = tc->sess[--tc->nsess];
}

/* OpenSSL hands over a new session (TLS 1.3: a ticket, after the
 * handshake).  Keep the newest per key; 1 = we own the reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *s)
{
    cdata_t *cd = SSL_get_ex_data(ssl, ex_idx());
    if (!cd || !cd->tc || !cd->sess_key || cd->tc->sess_timeout <= 0)
        return 0;
    tls_client_t *tc = cd->tc;
    long long now = now_usec();
    long long life = tc->sess_timeout;
    long hint = SSL_SESSION_get_timeout(s);
    if (hint > 0 && hint < life)
        life = hint;
    for (size_t i = 0; i < tc->nsess; i++) {
        if (strcmp(tc->sess[i].key, cd->sess_key) == 0) {
            SSL_SESSION_free(tc->sess[i].s);
            tc->sess[i].s = s;
            tc->sess[i].expires = now + life * 1000000LL;
            tc->sess[i].used = now;
            return 1;
        }
    }
    if (tc->nsess >= SESS_MAX) {
        /* Full: the expired ones go, else the least recently used. */
        size_t victim = 0;
        for (size_t i = 0; i < tc->nsess; i++) {
            if (tc->sess[i].expires <= now) {
                victim = i;
                break;
            }
            if (tc->sess[i].used < tc->sess[victim].used)
                victim = i;
        }
        sess_drop(tc, victim);
    }
    if (!tc->sess)
        tc->sess = xcalloc(SESS_MAX, sizeof *tc->sess);
    sess_t *e = &tc->sess[tc->nsess++];
    e->key = xstrdup(cd->sess_key);
    e->s = s;
    e->expires = now + life * 1000000LL;
    e->used = now;
    return 1;
}

/* Record the first (lowest-depth) certificate problem and go on: the
 * level decides what it means, after the handshake. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    cdata_t *cd = ssl ? SSL_get_ex_data(ssl, ex_idx()) : NULL;
    int depth = X509_STORE_CTX_get_error_depth(xs);
    if (!ok && cd && (cd->err_depth < 0 || depth < cd->err_depth)) {
        cd->err = X509_STORE_CTX_get_error(xs);
        cd->err_depth = depth;
        X509 *cert = X509_STORE_CTX_get_current_cert(xs);
        cd->err_issuer[0] = 0;
        if (cert)
            X509_NAME_oneline(X509_get_issuer_name(cert), cd->err_issuer, sizeof cd->err_issuer);
    }
    return 1;
}

static void openssl_why(buf_t *out)
{
    buf_t e = BUF_INIT;
    tls_errors(&e);
    if (e.len)
        buf_printf(out, ": %s", buf_cstr(&e));
    buf_free(&e);
}

static void stamp_take(stamp_t *s, const char *path)
{
    free(s->path);
    s->path = path && *path ? xstrdup(path) : NULL;
    s->exists = s->path && stat(s->path, &s->st) == 0;
}

static bool stamp_changed(const stamp_t *s)
{
    if (!s->path)
        return false;
    struct stat st;
    bool exists = stat(s->path, &st) == 0;
    if (exists != s->exists)
        return true;
    if (!exists)
        return false;
    return st.st_dev != s->st.st_dev || st.st_ino != s->st.st_ino || st.st_size != s->st.st_size ||
           st.st_mtim.tv_sec != s->st.st_mtim.tv_sec || st.st_mtim.tv_nsec != s->st.st_mtim.tv_nsec;
}

static SSL_CTX *ctx_build(tls_client_t *tc, const params_t *p, buf_t *why)
{
    const char *cafile = param_str(p, PARAM_smtp_tls_CAfile);
    const char *capath = param_str(p, PARAM_smtp_tls_CApath);
    const char *cert = param_str(p, PARAM_smtp_tls_cert_file);
    const char *key = param_str(p, PARAM_smtp_tls_key_file);
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        buf_puts(why, "cannot make an SSL context");
        openssl_why(why);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if ((cafile && *cafile) || (capath && *capath)) {
        if (SSL_CTX_load_verify_locations(ctx, cafile && *cafile ? cafile : NULL, capath && *capath ? capath : NULL) !=
            1) {
            buf_printf(why, "cannot load trust anchors (smtp_tls_CAfile \"%s\", smtp_tls_CApath \"%s\")",
                       cafile ? cafile : "", capath ? capath : "");
            openssl_why(why);
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        buf_puts(why, "cannot load OpenSSL's default trust anchors");
        openssl_why(why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    SSL_CTX_set_verify_depth(ctx, VERIFY_DEPTH);
    if (cert && *cert) {
        const char *k = key && *key ? key : cert;
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            buf_printf(why, "cannot load the client certificate smtp_tls_cert_file \"%s\"", cert);
            openssl_why(why);
            SSL_CTX_free(ctx);
            return NULL;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, k, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            buf_printf(why, "cannot load the client key smtp_tls_key_file \"%s\" (or it does not match the certificate)",
                       k);
            openssl_why(why);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    if (tc->sess_timeout > 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        SSL_CTX_set_timeout(ctx, (long)(2 * tc->sess_timeout));
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    return ctx;
}

tls_client_t *tls_client_new(const params_t *p, const char *prog)
{
    tls_client_t *tc = xcalloc(1, sizeof *tc);
    tc->refs = 1;
    tc->prog = xstrdup(prog ? prog : "smtp");
    tc->sess_timeout = param_int(p, PARAM_smtp_tls_session_cache_timeout);
    buf_t err = BUF_INIT, notes = BUF_INIT;
    if (tls_client_global_level(p, &tc->level, &err, &notes) < 0) {
        buf_t w = BUF_INIT;
        param_where(p, PARAM_smtp_tls_security_level, &w);
        buf_append(&w, err.data, err.len);
        tc->level_why = buf_steal(&w);
        log_warn(tc->prog, "%s", tc->level_why);
    }
    if (notes.len)
        log_warn(tc->prog, "%s", buf_cstr(&notes));
    buf_reset(&err);

    const char *const *items;
    size_t n = param_list(p, PARAM_smtp_tls_policy_maps, &items);
    const char *dir = param_str(p, PARAM_config_directory);
    tc->maps = xcalloc(n ? n : 1, sizeof *tc->maps);
    for (size_t i = 0; i < n; i++) {
        buf_t why = BUF_INIT;
        map_t *m = NULL;
        if (!strchr(items[i], ':'))
            buf_printf(&why, "smtp_tls_policy_maps: \"%s\": need type:table", items[i]);
        else
            m = map_open(items[i], dir, &why);
        if (m) {
            tc->maps[tc->nmaps++] = m;
        } else {
            if (err.len && err.data[err.len - 1] != '\n')
                buf_putc(&err, '\n');
            param_where_lines(p, PARAM_smtp_tls_policy_maps, why.len ? buf_cstr(&why) : "cannot open table", &err);
        }
        buf_free(&why);
    }
    if (err.len) {
        while (err.len && err.data[err.len - 1] == '\n')
            buf_truncate(&err, err.len - 1);
        tc->maps_why = buf_steal(&err);
        log_warn(tc->prog, "%s", tc->maps_why);
    }

    stamp_take(&tc->stamps[0], param_str(p, PARAM_smtp_tls_CAfile));
    stamp_take(&tc->stamps[1], param_str(p, PARAM_smtp_tls_CApath));
    stamp_take(&tc->stamps[2], param_str(p, PARAM_smtp_tls_cert_file));
    stamp_take(&tc->stamps[3], param_str(p, PARAM_smtp_tls_key_file));
    /* No TLS anywhere (level none, no table that could ask for it): no
     * context, no files read, nothing to warn about. */
    if (tc->level != TLS_LEV_NONE || n > 0 || tc->level_why) {
        buf_t why = BUF_INIT;
        tc->ctx = ctx_build(tc, p, &why);
        if (!tc->ctx) {
            tc->engine_why = buf_steal(&why);
            log_warn(tc->prog, "TLS engine unavailable: %s", tc->engine_why);
        }
        buf_free(&why);
    } else {
        tc->engine_why = xstrdup("TLS is not enabled (smtp_tls_security_level = none and no smtp_tls_policy_maps)");
    }
    buf_free(&err);
    buf_free(&notes);
    return tc;
}

tls_client_t *tls_client_ref(tls_client_t *tc)
{
    if (tc)
        tc->refs++;
    return tc;
}

void tls_client_unref(tls_client_t **tcp)
{
    tls_client_t *tc = *tcp;
    *tcp = NULL;
    if (!tc || --tc->refs > 0)
        return;
    for (size_t i = 0; i < tc->nsess; i++) {
        free(tc->sess[i].key);
        SSL_SESSION_free(tc->sess[i].s);
    }
    free(tc->sess);
    for (size_t i = 0; i < tc->nmaps; i++)
        map_close(&tc->maps[i]);
    free(tc->maps);
    if (tc->ctx)
        SSL_CTX_free(tc->ctx);
    for (size_t i = 0; i < ARRAY_LEN(tc->stamps); i++)
        free(tc->stamps[i].path);
    free(tc->level_why);
    free(tc->maps_why);
    free(tc->engine_why);
    free(tc->key);
    free(tc->prog);
    free(tc);
}

bool tls_client_engine_ok(const tls_client_t *tc, buf_t *why)
{
    if (tc && tc->ctx)
        return true;
    if (why)
        buf_puts(why, tc && tc->engine_why ? tc->engine_why : "no TLS engine");
    return false;
}

/* ------------------------------------------------------------ the cache */

struct tls_client_cache {
    tls_client_t *list;   /* most recently used first; the list holds one reference each */
};

/* Every value a tls_client_t keeps or reads files from.  The cipher,
 * protocol and match parameters are not here: tls_client_policy reads
 * them from each delivery's parameters. */
static const param_id key_params[] = {
    PARAM_smtp_tls_security_level, PARAM_smtp_use_tls,          PARAM_smtp_enforce_tls,
    PARAM_smtp_tls_enforce_peername, PARAM_smtp_tls_CAfile,     PARAM_smtp_tls_CApath,
    PARAM_smtp_tls_cert_file,      PARAM_smtp_tls_key_file,     PARAM_smtp_tls_policy_maps,
    PARAM_smtp_tls_session_cache_timeout, PARAM_config_directory,
};

static void params_key(const params_t *p, const char *prog, buf_t *out)
{
    buf_puts(out, prog);
    for (size_t i = 0; i < ARRAY_LEN(key_params); i++) {
        buf_putc(out, '\n');
        buf_puts(out, param_str(p, key_params[i]));
    }
}

tls_client_cache_t *tls_client_cache_new(void) { return xcalloc(1, sizeof(tls_client_cache_t)); }

void tls_client_cache_free(tls_client_cache_t **ccp)
{
    tls_client_cache_t *cc = *ccp;
    *ccp = NULL;
    if (!cc)
        return;
    while (cc->list) {
        tls_client_t *e = cc->list;
        cc->list = e->next;
        e->next = NULL;
        tls_client_unref(&e);
    }
    free(cc);
}

/* Have the entry's files or tables changed since it was built? */
static bool entry_stale(const tls_client_t *e)
{
    for (size_t i = 0; i < ARRAY_LEN(e->stamps); i++)
        if (stamp_changed(&e->stamps[i]))
            return true;
    for (size_t i = 0; i < e->nmaps; i++)
        if (map_changed(e->maps[i]))
            return true;
    return false;
}

tls_client_t *tls_client_get(tls_client_cache_t *cc, const params_t *p, const char *prog)
{
    buf_t key = BUF_INIT;
    params_key(p, prog ? prog : "smtp", &key);
    long long now = now_usec();
    tls_client_t *found = NULL;
    for (tls_client_t **pp = &cc->list; *pp; pp = &(*pp)->next) {
        tls_client_t *e = *pp;
        if (strcmp(e->key, buf_cstr(&key)) != 0)
            continue;
        bool seen = false;
        for (size_t i = 0; i < e->nseen; i++)
            seen = seen || e->seen[i] == p;
        if (!seen || now - e->checked >= RECHECK_SECS * 1000000LL) {
            e->checked = now;
            if (!seen) {
                if (e->nseen < SEEN_MAX)
                    e->seen[e->nseen++] = p;
                else
                    e->seen[now % SEEN_MAX] = p;
            }
            if (entry_stale(e)) {
                /* Files changed: deliveries that hold it finish with it. */
                *pp = e->next;
                e->next = NULL;
                tls_client_unref(&e);
                break;
            }
        }
        *pp = e->next;
        found = e;
        break;
    }
    if (!found) {
        found = tls_client_new(p, prog);
        found->key = buf_steal(&key);
        found->seen[found->nseen++] = p;
        found->checked = now;
    }
    buf_free(&key);
    found->next = cc->list;
    cc->list = found;
    /* Idle ones beyond the limit go (an entry in use stays listed). */
    size_t idle = 0;
    for (tls_client_t **pp = &cc->list; *pp;) {
        tls_client_t *e = *pp;
        if (e != found && e->refs == 1 && ++idle > CACHE_IDLE_MAX) {
            *pp = e->next;
            e->next = NULL;
            tls_client_unref(&e);
            continue;
        }
        pp = &e->next;
    }
    return tls_client_ref(found);
}

/* ------------------------------------------------------------- policy */

/* Split each item of a parameter list (or of a ':' list) once more on
 * ':' (Postfix accepts both "!SSLv2, !SSLv3" and "!SSLv2:!SSLv3"). */
static size_t split_items(const char *const *in, size_t nin, const char *colon_list, buf_t *store,
                          const char **out, size_t max)
{
    buf_reset(store);
    for (size_t i = 0; i < nin; i++) {
        buf_puts(store, in[i]);
        buf_putc(store, ':');
    }
    if (colon_list) {
        buf_puts(store, colon_list);
        buf_putc(store, ':');
    }
    size_t n = 0;
    char *s = store->data;
    for (size_t i = 0; s && i < store->len; i++) {
        if (s[i] == ':' || s[i] == ' ' || s[i] == ',' || s[i] == '\t')
            s[i] = 0;
    }
    for (size_t i = 0; s && i < store->len && n < max;) {
        if (s[i]) {
            out[n++] = s + i;
            i += strlen(s + i);
        } else {
            i++;
        }
    }
    return n;
}

#define ITEMS_MAX 64

static int policy_complete(const params_t *p, tls_policy_t *pol, buf_t *why)
{
    if (pol->level == TLS_LEV_NONE)
        return 0;
    const char *items[ITEMS_MAX];
    const char *const *pl;
    buf_t store = BUF_INIT, err = BUF_INIT, cl = BUF_INIT;
    int rc = -1;
    bool mand = pol->level >= TLS_LEV_ENCRYPT;

    if (pol->level >= TLS_LEV_VERIFY && pol->nmatch == 0) {
        param_id mid = pol->level == TLS_LEV_VERIFY ? PARAM_smtp_tls_verify_cert_match : PARAM_smtp_tls_secure_cert_match;
        size_t n = param_list(p, mid, &pl);
        size_t k = split_items(pl, n, NULL, &store, items, ITEMS_MAX);
        for (size_t i = 0; i < k; i++) {
            if (pol->nmatch >= TLS_POLICY_MATCH_MAX || strlen(items[i]) >= TLS_POLICY_NAME_MAX) {
                buf_printf(why, "%s: too many or too long names", param_name(mid));
                goto out;
            }
            str_copy(pol->match[pol->nmatch++], items[i], TLS_POLICY_NAME_MAX);
        }
        if (pol->nmatch == 0) {
            buf_printf(why, "%s is empty: no certificate name could match", param_name(mid));
            goto out;
        }
    }

    size_t np;
    if (pol->protocols[0]) {
        np = split_items(NULL, 0, pol->protocols, &store, items, ITEMS_MAX);
    } else {
        size_t n = param_list(p, mand ? PARAM_smtp_tls_mandatory_protocols : PARAM_smtp_tls_protocols, &pl);
        np = split_items(pl, n, NULL, &store, items, ITEMS_MAX);
    }
    if (!tls_protocol_range(items, np, &pol->proto_min, &pol->proto_max, &err)) {
        buf_printf(why, "protocols: %s", buf_cstr(&err));
        goto out;
    }

    const char *grade = pol->grade[0] ? pol->grade
                                      : param_str(p, mand ? PARAM_smtp_tls_mandatory_ciphers : PARAM_smtp_tls_ciphers);
    size_t nx;
    if (pol->has_exclude) {
        nx = split_items(NULL, 0, pol->exclude, &store, items, ITEMS_MAX - 1);
    } else {
        /* Both lists into one store: gather the items first. */
        const char *const *a, *const *b = NULL;
        size_t na = param_list(p, PARAM_smtp_tls_exclude_ciphers, &a), nb = 0;
        if (mand)
            nb = param_list(p, PARAM_smtp_tls_mandatory_exclude_ciphers, &b);
        const char *both[ITEMS_MAX];
        size_t nboth = 0;
        for (size_t i = 0; i < na && nboth < ITEMS_MAX; i++)
            both[nboth++] = a[i];
        for (size_t i = 0; i < nb && nboth < ITEMS_MAX; i++)
            both[nboth++] = b[i];
        nx = split_items(both, nboth, NULL, &store, items, ITEMS_MAX - 1);
    }
    /* Postfix's floor per level: encryption means no null cipher,
     * authentication means no anonymous key exchange. */
    if (pol->level == TLS_LEV_ENCRYPT)
        items[nx++] = "eNULL";
    else if (pol->level >= TLS_LEV_VERIFY)
        items[nx++] = "aNULL";
    buf_reset(&err);
    if (!tls_cipher_list(p, grade, items, nx, &cl, &err)) {
        buf_printf(why, "ciphers: %s", buf_cstr(&err));
        goto out;
    }
    if (cl.len >= sizeof pol->ciphers) {
        buf_puts(why, "ciphers: the cipher list is too long");
        goto out;
    }
    str_copy(pol->ciphers, buf_cstr(&cl), sizeof pol->ciphers);
    rc = 0;
out:
    buf_free(&store);
    buf_free(&err);
    buf_free(&cl);
    return rc;
}

int tls_client_policy(tls_client_t *tc, const params_t *p, const char *nexthop, bool lmtp, tls_policy_t *out,
                      buf_t *why)
{
    memset(out, 0, sizeof *out);
    out->level = TLS_LEV_NONE;
    str_copy(out->source, "smtp_tls_security_level", sizeof out->source);
    if (lmtp && nexthop && str_istarts(nexthop, "unix:"))
        return 0;   /* no TLS over Unix-domain sockets */
    if (tc->level_why) {
        buf_puts(why, tc->level_why);
        return -1;
    }
    out->level = tc->level;
    int rc = 0;
    buf_t keys = BUF_INIT, val = BUF_INIT, notes = BUF_INIT;
    if (tc->maps_why) {
        buf_puts(why, tc->maps_why);
        rc = -1;
        goto done;
    }
    if (tc->nmaps > 0) {
        tls_policy_keys(nexthop, lmtp, &keys);
        const char *k = buf_cstr(&keys);
        bool found = false;
        while (*k && !found) {
            const char *nl = strchr(k, '\n');
            char *key = xstrndup(k, (size_t)(nl - k));
            for (size_t i = 0; i < tc->nmaps && !found; i++) {
                map_origin_t o = {0};
                map_status st = map_lookup(tc->maps[i], key, &val, &o);
                if (st == MAP_TEMPFAIL) {
                    buf_printf(why, "%s: TLS policy lookup for \"%s\" failed: %s", map_name(tc->maps[i]), key,
                               buf_cstr(&val));
                    rc = -1;
                    found = true;
                } else if (st == MAP_FOUND) {
                    found = true;
                    if (o.file)
                        snprintf(out->source, sizeof out->source, "%s:%d", o.file, o.line);
                    else
                        str_copy(out->source, map_name(tc->maps[i]), sizeof out->source);
                    buf_t perr = BUF_INIT;
                    char src[sizeof out->source];
                    str_copy(src, out->source, sizeof src);
                    if (tls_policy_parse(buf_cstr(&val), out, &perr, &notes) < 0) {
                        buf_printf(why, "%s: TLS policy for \"%s\": %s", src, key, buf_cstr(&perr));
                        rc = -1;
                    }
                    str_copy(out->source, src, sizeof out->source);
                    if (notes.len)
                        log_warn(tc->prog, "%s: TLS policy for \"%s\": %s", src, key, buf_cstr(&notes));
                    buf_free(&perr);
                }
            }
            free(key);
            k = nl + 1;
        }
        if (rc < 0)
            goto done;
    }
    if (policy_complete(p, out, why) < 0)
        rc = -1;
done:
    buf_free(&keys);
    buf_free(&val);
    buf_free(&notes);
    return rc;
}

/* ------------------------------------------------------- per connection */

SSL *tls_client_ssl(tls_client_t *tc, const tls_policy_t *pol, const char *servername, const char *addr,
                    int port, buf_t *err)
{
    if (!tc || !tc->ctx) {
        buf_puts(err, tc && tc->engine_why ? tc->engine_why : "no TLS engine");
        return NULL;
    }
    ERR_clear_error();
    SSL *ssl = SSL_new(tc->ctx);
    if (!ssl) {
        buf_puts(err, "SSL_new failed");
        openssl_why(err);
        return NULL;
    }
    cdata_t *cd = xcalloc(1, sizeof *cd);
    cd->err = X509_V_OK;
    cd->err_depth = -1;
    if (!SSL_set_ex_data(ssl, ex_idx(), cd)) {
        free(cd);
        SSL_free(ssl);
        buf_puts(err, "SSL_set_ex_data failed");
        return NULL;
    }
    cd->tc = tls_client_ref(tc);
    if ((pol->proto_min && SSL_set_min_proto_version(ssl, pol->proto_min) != 1) ||
        (pol->proto_max && SSL_set_max_proto_version(ssl, pol->proto_max) != 1)) {
        buf_puts(err, "cannot set the protocol range");
        openssl_why(err);
        SSL_free(ssl);
        return NULL;
    }
    if (pol->ciphers[0] && SSL_set_cipher_list(ssl, pol->ciphers) != 1) {
        buf_printf(err, "no usable cipher in \"%s\"", pol->ciphers);
        openssl_why(err);
        SSL_free(ssl);
        return NULL;
    }
    const char *sn = servername ? servername : "";
    if (*sn && strlen(sn) <= 255 && !is_ip_literal(sn) && SSL_set_tlsext_host_name(ssl, sn) != 1) {
        buf_printf(err, "cannot set the SNI name \"%s\"", sn);
        openssl_why(err);
        SSL_free(ssl);
        return NULL;
    }
    if (tc->sess_timeout > 0) {
        /* The policy salts the key: a session made under other protocols
         * or ciphers is no session to offer. */
        buf_t k = BUF_INIT;
        buf_printf(&k, "%s:%d:%s:%s:%d-%d:%08x", addr ? addr : "", port, sn, tls_level_name(pol->level),
                   pol->proto_min, pol->proto_max, hash_str(HASH_INIT, pol->ciphers));
        cd->sess_key = buf_steal(&k);
        long long now = now_usec();
        for (size_t i = 0; i < tc->nsess; i++) {
            if (strcmp(tc->sess[i].key, cd->sess_key) != 0)
                continue;
            /* OpenSSL marks the session of a connection that ended
             * without close_notify as not resumable. */
            if (tc->sess[i].expires <= now || !SSL_SESSION_is_resumable(tc->sess[i].s)) {
                sess_drop(tc, i);
            } else {
                tc->sess[i].used = now;
                SSL_set_session(ssl, tc->sess[i].s);
            }
            break;
        }
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

void tls_client_ssl_free(SSL **sslp)
{
    if (*sslp)
        SSL_free(*sslp);
    *sslp = NULL;
}

struct bufferevent *tls_client_bev_new(struct event_base *base, int fd, SSL *ssl)
{
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_CONNECTING, 0);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

int tls_client_bev_error(struct bufferevent *bev, buf_t *out)
{
    unsigned long e;
    int n = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0) {
        /* libevent also queues SSL_get_error() codes (library 0): they
         * say nothing the event itself does not. */
        if (ERR_GET_LIB(e) == 0)
            continue;
        char b[256];
        ERR_error_string_n(e, b, sizeof b);
        if (n++)
            buf_puts(out, "; ");
        buf_puts(out, b);
    }
    return n;
}

void tls_client_shutdown(SSL *ssl, const char *last)
{
    if (!ssl || !SSL_is_init_finished(ssl))
        return;
    ERR_clear_error();
    if (last && *last)
        (void)SSL_write(ssl, last, (int)strlen(last));
    (void)SSL_shutdown(ssl);
    ERR_clear_error();
}

/* ----------------------------------------------------------- verdicts */

/* A DNS name from a certificate, if it is one we can compare safely. */
static bool clean_name(const unsigned char *s, int len, char *out, size_t outlen)
{
    if (len <= 0 || (size_t)len >= outlen)
        return false;
    for (int i = 0; i < len; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    memcpy(out, s, (size_t)len);
    out[len] = 0;
    return true;
}

/* The certificate's names as Postfix reads them: the subjectAltName DNS
 * entries; the subject CN only when there are none. */
static size_t cert_names(X509 *cert, char names[][TLS_POLICY_NAME_MAX], size_t max)
{
    size_t n = 0;
    bool any_dns = false;
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (gens) {
        for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
            if (g->type != GEN_DNS)
                continue;
            any_dns = true;
            if (n < max && ASN1_STRING_type(g->d.dNSName) == V_ASN1_IA5STRING &&
                clean_name(ASN1_STRING_get0_data(g->d.dNSName), ASN1_STRING_length(g->d.dNSName), names[n],
                           TLS_POLICY_NAME_MAX))
                n++;
        }
        GENERAL_NAMES_free(gens);
    }
    if (!any_dns) {
        X509_NAME *subj = X509_get_subject_name(cert);
        int pos = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
        X509_NAME_ENTRY *ent = pos >= 0 ? X509_NAME_get_entry(subj, pos) : NULL;
        ASN1_STRING *str = ent ? X509_NAME_ENTRY_get_data(ent) : NULL;
        unsigned char *utf8 = NULL;
        int len = str ? ASN1_STRING_to_UTF8(&utf8, str) : -1;
        if (len > 0 && n < max && clean_name(utf8, len, names[n], TLS_POLICY_NAME_MAX))
            n++;
        OPENSSL_free(utf8);
    }
    return n;
}

/* Postfix's words for why a certificate is not trusted. */
static void log_untrusted(const char *prog, const char *peer, int err, int depth, const char *issuer)
{
    const char *purpose = depth > 0 ? "CA" : "server";
    switch (err) {
    case X509_V_ERR_CERT_UNTRUSTED:
        log_info(prog, "certificate verification failed for %s: not trusted by local or TLSA policy", peer);
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        log_info(prog, "certificate verification failed for %s: self-signed certificate", peer);
        break;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        log_info(prog, "certificate verification failed for %s: untrusted issuer %s", peer,
                 issuer && *issuer ? issuer : "<unknown>");
        break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
        log_info(prog, "%s certificate verification failed for %s: certificate not yet valid", purpose, peer);
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
        log_info(prog, "%s certificate verification failed for %s: certificate has expired", purpose, peer);
        break;
    case X509_V_ERR_INVALID_PURPOSE:
        log_info(prog, "certificate verification failed for %s: not designated for use as a %s certificate", peer,
                 purpose);
        break;
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
        log_info(prog, "certificate verification failed for %s: certificate chain longer than limit(%d)", peer,
                 VERIFY_DEPTH);
        break;
    default:
        log_info(prog, "%s certificate verification failed for %s: num=%d:%s", purpose, peer, err,
                 X509_verify_cert_error_string(err));
        break;
    }
}

/* The match list with "hostname" and friends spelled out, for the log. */
static void match_text(const tls_policy_t *pol, const char *nexthop, const char *hostname, buf_t *out)
{
    for (size_t i = 0; i < pol->nmatch; i++) {
        const char *m = pol->match[i];
        if (i)
            buf_puts(out, ", ");
        if (str_ieq(m, "hostname"))
            buf_printf(out, "hostname %s", hostname ? hostname : "");
        else if (str_ieq(m, "nexthop"))
            buf_printf(out, "nexthop %s", nexthop ? nexthop : "");
        else if (str_ieq(m, "dot-nexthop"))
            buf_printf(out, "dot-nexthop .%s", nexthop ? nexthop : "");
        else
            buf_puts(out, m);
    }
}

void tls_client_verify(SSL *ssl, const tls_policy_t *pol, const char *nexthop, const char *hostname,
                       const char *prog, const char *peer, int loglevel, tls_client_result_t *out)
{
    memset(out, 0, sizeof *out);
    tls_info_get(ssl, NULL, &out->info);
    X509 *cert = SSL_get0_peer_certificate(ssl);
    bool must = pol->level >= TLS_LEV_VERIFY;
    out->info.peer_cert = cert != NULL;
    if (!cert) {
        out->info.peer_verified = false;
        if (must)
            log_info(prog, "certificate verification failed for %s: the server sent no certificate", peer);
        return;
    }
    long vr = SSL_get_verify_result(ssl);
    out->trusted = vr == X509_V_OK;
    out->info.peer_verified = out->trusted;
    char names[8][TLS_POLICY_NAME_MAX];
    size_t n = cert_names(cert, names, ARRAY_LEN(names));
    buf_t nm = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_puts(&nm, ", ");
        buf_puts(&nm, names[i]);
    }
    str_copy(out->names, buf_cstr(&nm), sizeof out->names);
    buf_free(&nm);
    if (must && out->trusted) {
        for (size_t i = 0; i < n && !out->matched; i++)
            out->matched = tls_client_name_matches(names[i], pol, nexthop, hostname);
    }
    if (!out->trusted && (must || loglevel >= 2)) {
        cdata_t *cd = SSL_get_ex_data(ssl, ex_idx());
        if (cd && cd->err_depth >= 0)
            log_untrusted(prog, peer, cd->err, cd->err_depth, cd->err_issuer);
        else
            log_untrusted(prog, peer, (int)vr, 0, NULL);   /* a resumed session: only the result is known */
    }
    if (must && out->trusted && !out->matched) {
        buf_t m = BUF_INIT;
        match_text(pol, nexthop, hostname, &m);
        log_info(prog, "server certificate verification failed for %s: certificate names (%s) match none of: %s",
                 peer, out->names[0] ? out->names : "none", buf_cstr(&m));
        buf_free(&m);
    }
}

void tls_client_summary(const tls_client_result_t *r, const char *peer, buf_t *out)
{
    const tls_info_t *i = &r->info;
    const char *trust = !i->peer_cert ? "Anonymous" : !r->trusted ? "Untrusted" : r->matched ? "Verified" : "Trusted";
    buf_printf(out, "%s TLS connection established to %s: %s with cipher %s (%d/%d bits)", trust, peer,
               i->protocol[0] ? i->protocol : "unknown", i->cipher[0] ? i->cipher : "unknown", i->cipher_bits,
               i->alg_bits);
    /* tls_info_log's line (tls.c) cannot say "Verified": it does not
     * know the names the policy asked for. */
    tls_info_details(i, out);
}

void tls_client_brief(const tls_client_result_t *r, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", r->info.protocol[0] ? r->info.protocol : "unknown",
             r->info.cipher[0] ? r->info.cipher : "unknown");
}
