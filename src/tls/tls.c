/*
 * tls: what the server and the client halves share — security levels,
 * Postfix's protocol and cipher-grade syntax, and what an established
 * connection negotiated (tls_info_t), in Postfix's words for the log and
 * the Received: header.  The server's SSL_CTX is in tls_server.c.
 *
 * Owns nothing between calls (no state at all).  Must never do I/O on a
 * connection, block, or let text from a peer certificate reach a log
 * line or a header unsanitized: a CN is attacker-chosen bytes.
 */
#include "tls/tls.h"

#include "core/log.h"
#include "core/util.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- levels */

static const char *const level_names[] = {
    [TLS_LEV_NONE] = "none",     [TLS_LEV_MAY] = "may",       [TLS_LEV_ENCRYPT] = "encrypt",
    [TLS_LEV_VERIFY] = "verify", [TLS_LEV_SECURE] = "secure",
};

bool tls_level_parse(const char *s, bool client, tls_level_t *out)
{
    for (unsigned i = 0; i < ARRAY_LEN(level_names); i++) {
        if (!str_ieq(s, level_names[i]))
            continue;
        if (!client && i > TLS_LEV_ENCRYPT)
            return false;   /* a server has nothing to verify a client's name against */
        *out = (tls_level_t)i;
        return true;
    }
    return false;
}

const char *tls_level_name(tls_level_t l)
{
    return (unsigned)l < ARRAY_LEN(level_names) ? level_names[l] : "?";
}

/* ------------------------------------------------------------- protocols */

/* In version order; SSLv2 and SSLv3 are names Postfix lists accept, never
 * protocols moat speaks (OpenSSL 3 has no SSLv2, and SSLv3 is broken). */
static const struct {
    const char *name;
    int version;
    bool usable;
} protos[] = {
    {"SSLv2", 0, false},
    {"SSLv3", SSL3_VERSION, false},
    {"TLSv1", TLS1_VERSION, true},
    {"TLSv1.1", TLS1_1_VERSION, true},
    {"TLSv1.2", TLS1_2_VERSION, true},
    {"TLSv1.3", TLS1_3_VERSION, true},
};
#define NPROTO ((int)ARRAY_LEN(protos))

static int proto_index(const char *name, size_t len)
{
    for (int i = 0; i < NPROTO; i++)
        if (strlen(protos[i].name) == len && str_nieq(name, protos[i].name, len))
            return i;
    return -1;
}

/* One word of a protocol list: "TLSv1.2", "!SSLv3", ">=TLSv1.2", "<=TLSv1.3";
 * *pending_op carries a ">=" or "<=" that stood alone ("\>= TLSv1.2" split
 * by the list parser). */
static bool proto_word(const char *w, size_t len, char *pending_op, unsigned *incl, unsigned *excl,
                       int *lo, int *hi, buf_t *err)
{
    char op = *pending_op;
    *pending_op = 0;
    if (op == 0) {
        if (len >= 2 && (w[0] == '>' || w[0] == '<') && w[1] == '=') {
            op = w[0];
            w += 2, len -= 2;
            if (len == 0) {
                *pending_op = op;
                return true;
            }
        } else if (len >= 1 && w[0] == '!') {
            op = '!';
            w++, len--;
        }
    }
    int i = proto_index(w, len);
    if (i < 0) {
        buf_printf(err, "unknown protocol \"%s%.*s\"", op == '!' ? "!" : op == '>' ? ">=" : op == '<' ? "<=" : "",
                   (int)len, w);
        return false;
    }
    switch (op) {
    case '!':
        *excl |= 1u << i;
        break;
    case '>':
        if (i > *lo)
            *lo = i;
        break;
    case '<':
        if (i < *hi)
            *hi = i;
        break;
    default:
        *incl |= 1u << i;
        break;
    }
    return true;
}

bool tls_protocol_range(const char *const *items, size_t n, int *min, int *max, buf_t *err)
{
    unsigned incl = 0, excl = 0;
    int lo = 0, hi = NPROTO - 1;
    char pending = 0;
    for (size_t k = 0; k < n; k++) {
        /* Postfix also separates with ':' ("!SSLv2:!SSLv3"). */
        const char *s = items[k];
        while (*s) {
            size_t len = strcspn(s, ":");
            if (len > 0 && !proto_word(s, len, &pending, &incl, &excl, &lo, &hi, err))
                return false;
            s += len;
            if (*s == ':')
                s++;
        }
    }
    if (pending) {
        buf_printf(err, "unknown protocol \"%c=\"", pending);
        return false;
    }
    unsigned on = incl ? incl : (1u << NPROTO) - 1;
    on &= ~excl;
    int top = -1;
    for (int i = hi; i >= lo; i--) {
        if ((on & (1u << i)) && protos[i].usable) {
            top = i;
            break;
        }
    }
    if (top < 0) {
        buf_puts(err, "no TLS protocol version left (moat speaks TLSv1 to TLSv1.3)");
        return false;
    }
    /* OpenSSL takes a range, not a set: a hole ("TLSv1, TLSv1.3") keeps
     * the newest unbroken run, never the older versions below the gap. */
    int bottom = top;
    while (bottom - 1 >= lo && (on & (1u << (bottom - 1))) && protos[bottom - 1].usable)
        bottom--;
    *min = protos[bottom].version;
    *max = top == NPROTO - 1 ? 0 : protos[top].version;
    return true;
}

/* --------------------------------------------------------------- ciphers */

bool tls_cipher_list(const params_t *p, const char *grade, const char *const *exclude, size_t nexclude,
                     buf_t *out, buf_t *err)
{
    const char *base;
    if (str_ieq(grade, "high")) {
        base = param_str(p, PARAM_tls_high_cipherlist);
    } else if (str_ieq(grade, "medium")) {
        base = param_str(p, PARAM_tls_medium_cipherlist);
    } else if (str_ieq(grade, "low") || str_ieq(grade, "export") || str_ieq(grade, "null")) {
        buf_printf(err, "cipher grade \"%s\" is not supported (use medium or high)", grade);
        return false;
    } else {
        buf_printf(err, "unknown cipher grade \"%s\" (use medium or high)", grade);
        return false;
    }
    if (!*base) {
        buf_printf(err, "the cipher list of grade \"%s\" is empty", grade);
        return false;
    }
    buf_puts(out, base);
    for (size_t k = 0; k < nexclude; k++) {
        const char *s = exclude[k];
        while (*s) {
            size_t len = strcspn(s, ":");
            if (len > 0) {
                /* A modifier would turn an exclusion into something else. */
                if (strchr("!+-@", s[0])) {
                    buf_printf(err, "invalid cipher exclusion \"%.*s\" (a name or class, without !, +, - or @)",
                               (int)len, s);
                    return false;
                }
                buf_printf(out, ":!%.*s", (int)len, s);
            }
            s += len;
            if (*s == ':')
                s++;
        }
    }
    return true;
}

/* ------------------------------------------------------------------ info */

/* Certificate text into a log line or a header comment: printable ASCII
 * and UTF-8 bytes stay, anything that could break the line does not. */
static void copy_sanitized(char *dst, size_t size, const unsigned char *src, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < size; i++) {
        unsigned char c = src[i];
        dst[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[j] = 0;
}

/* The first entry of nid in name (CN, else O for an issuer). */
static void name_entry(const X509_NAME *name, int nid, char *out, size_t size)
{
    out[0] = 0;
    int idx = X509_NAME_get_index_by_NID(name, nid, -1);
    if (idx < 0)
        return;
    const ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len < 0)
        return;
    /* A NUL inside a name is a forgery attempt ("good.example\0.evil"). */
    if (memchr(utf8, 0, (size_t)len) == NULL)
        copy_sanitized(out, size, utf8, (size_t)len);
    OPENSSL_free(utf8);
}

static void hex_pairs(const unsigned char *md, unsigned len, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    out[0] = 0;
    for (unsigned i = 0; i < len && j + 3 < size; i++) {
        if (i)
            out[j++] = ':';
        out[j++] = hex[md[i] >> 4];
        out[j++] = hex[md[i] & 15];
    }
    out[j] = 0;
}

/* Postfix's fingerprints: of the certificate's DER, and of the DER of its
 * SubjectPublicKeyInfo (which survives a renewal with the same key). */
static void fingerprints(X509 *cert, const char *digest, tls_info_t *out)
{
    const EVP_MD *md = EVP_get_digestbyname(digest);
    if (!md)
        return;
    unsigned char buf[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (X509_digest(cert, md, buf, &len))
        hex_pairs(buf, len, out->fingerprint, sizeof out->fingerprint);
    unsigned char *der = NULL;
    int dlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (dlen > 0 && EVP_Digest(der, (size_t)dlen, buf, &len, md, NULL))
        hex_pairs(buf, len, out->pkey_fingerprint, sizeof out->pkey_fingerprint);
    OPENSSL_free(der);
}

/* A curve as Postfix names it: the NIST name when there is one ("P-256"),
 * else OpenSSL's short name. */
static void curve_name(const EVP_PKEY *pkey, char *out, size_t size)
{
    char group[64];
    size_t len = 0;
    out[0] = 0;
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len))
        return;
    int nid = OBJ_txt2nid(group);
    const char *nist = nid != NID_undef ? EC_curve_nid2nist(nid) : NULL;
    str_copy(out, nist ? nist : group, size);
}

/* The key exchange as Postfix logs it after "key-exchange ": "X25519",
 * "ECDHE (P-256)", "DHE (2048 bits)".  tls_info_t has no separate curve
 * field, so the parenthesis is part of the text. */
static void key_exchange(SSL *ssl, tls_info_t *out)
{
    EVP_PKEY *pkey = NULL;
    if (SSL_get_peer_tmp_key(ssl, &pkey) && pkey) {
        if (EVP_PKEY_is_a(pkey, "EC")) {
            char curve[32];
            curve_name(pkey, curve, sizeof curve);
            snprintf(out->kex, sizeof out->kex, curve[0] ? "ECDHE (%s)" : "ECDHE", curve);
        } else if (EVP_PKEY_is_a(pkey, "DH")) {
            snprintf(out->kex, sizeof out->kex, "DHE (%d bits)", EVP_PKEY_get_bits(pkey));
        } else {
            const char *sn = OBJ_nid2sn(EVP_PKEY_get_base_id(pkey));
            str_copy(out->kex, sn ? sn : EVP_PKEY_get0_type_name(pkey), sizeof out->kex);
        }
        EVP_PKEY_free(pkey);
        return;
    }
    /* No peer key share at hand: the negotiated group still names the
     * exchange (0 after a resumption without one, psk_ke: nothing). */
    int group = SSL_get_negotiated_group(ssl);
    if (group <= 0 || (group & TLSEXT_nid_unknown))
        return;
    const char *nist = EC_curve_nid2nist(group);
    const char *sn = OBJ_nid2sn(group);
    if (nist)
        snprintf(out->kex, sizeof out->kex, "ECDHE (%s)", nist);
    else if (sn)
        str_copy(out->kex, sn, sizeof out->kex);
}

/* The signing key of the server end: ours on the server, the peer's on
 * the client.  RSA in TLS 1.3 is always RSA-PSS; ECDSA carries its curve
 * in the text, as Postfix prints it ("ECDSA (P-256)"). */
static void signature(SSL *ssl, bool server, tls_info_t *out)
{
    X509 *cert = server ? SSL_get_certificate(ssl) : SSL_get0_peer_certificate(ssl);
    if (!cert)
        return;
    EVP_PKEY *pkey = X509_get0_pubkey(cert);
    if (!pkey)
        return;
    if (EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_is_a(pkey, "RSA-PSS")) {
        str_copy(out->sig, "RSA-PSS", sizeof out->sig);
        out->sig_bits = EVP_PKEY_get_bits(pkey);
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        char curve[32];
        curve_name(pkey, curve, sizeof curve);
        snprintf(out->sig, sizeof out->sig, curve[0] ? "ECDSA (%s)" : "ECDSA", curve);
        out->sig_bits = EVP_PKEY_get_bits(pkey);
    } else {
        const char *sn = OBJ_nid2sn(EVP_PKEY_get_base_id(pkey));
        str_copy(out->sig, sn ? sn : EVP_PKEY_get0_type_name(pkey), sizeof out->sig);
    }
    int nid = NID_undef;
    /* Ed25519/Ed448 sign without a separate digest: NID_undef, no text. */
    if ((server ? SSL_get_signature_nid(ssl, &nid) : SSL_get_peer_signature_nid(ssl, &nid)) && nid != NID_undef) {
        const char *sn = OBJ_nid2sn(nid);
        if (sn)
            str_copy(out->digest, sn, sizeof out->digest);
    }
}

void tls_info_get(SSL *ssl, const char *digest, tls_info_t *out)
{
    memset(out, 0, sizeof *out);
    str_copy(out->protocol, SSL_get_version(ssl), sizeof out->protocol);
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    if (c) {
        str_copy(out->cipher, SSL_CIPHER_get_name(c), sizeof out->cipher);
        out->cipher_bits = SSL_CIPHER_get_bits(c, &out->alg_bits);
    }
    out->resumed = SSL_session_reused(ssl) == 1;
    bool server = SSL_is_server(ssl) == 1;
    /* As Postfix: the key-exchange and signature details are a TLS 1.3
     * addition to the summary; TLS 1.2 lines stay as they always were. */
    if (SSL_version(ssl) >= TLS1_3_VERSION) {
        key_exchange(ssl, out);
        signature(ssl, server, out);
    }
    X509 *peer = SSL_get0_peer_certificate(ssl);
    if (peer) {
        out->peer_cert = true;
        out->peer_verified = SSL_get_verify_result(ssl) == X509_V_OK;
        name_entry(X509_get_subject_name(peer), NID_commonName, out->peer_cn, sizeof out->peer_cn);
        name_entry(X509_get_issuer_name(peer), NID_commonName, out->issuer_cn, sizeof out->issuer_cn);
        if (!out->issuer_cn[0])
            name_entry(X509_get_issuer_name(peer), NID_organizationName, out->issuer_cn, sizeof out->issuer_cn);
        if (digest && *digest)
            fingerprints(peer, digest, out);
    }
}

void tls_info_details(const tls_info_t *i, buf_t *out)
{
    if (i->kex[0])
        buf_printf(out, " key-exchange %s", i->kex);
    if (i->sig[0]) {
        buf_printf(out, " server-signature %s", i->sig);
        /* An ECDSA curve already says the size. */
        if (i->sig_bits > 0 && !strchr(i->sig, '('))
            buf_printf(out, " (%d bits)", i->sig_bits);
        if (i->digest[0])
            buf_printf(out, " server-digest %s", i->digest);
    }
}

void tls_info_log(const tls_info_t *i, const char *program, bool server, const char *peer)
{
    buf_t b = BUF_INIT;
    const char *trust = !i->peer_cert ? "Anonymous" : i->peer_verified ? "Trusted" : "Untrusted";
    buf_printf(&b, "%s TLS connection established %s %s: %s with cipher %s (%d/%d bits)", trust,
               server ? "from" : "to", peer, i->protocol, i->cipher, i->cipher_bits, i->alg_bits);
    tls_info_details(i, &b);
    log_info(program, "%s", buf_cstr(&b));
    buf_free(&b);
}

/* A header comment may not hold what ends or nests it. */
static void put_comment_text(buf_t *out, const char *s)
{
    for (; *s; s++)
        buf_putc(out, (*s == '"' || *s == '(' || *s == ')' || *s == '\\') ? '?' : *s);
}

void tls_info_received(const tls_info_t *i, bool asked_ccert, buf_t *out)
{
    buf_printf(out, "(using %s with cipher %s (%d/%d bits)", i->protocol, i->cipher, i->cipher_bits,
               i->alg_bits);
    buf_t more = BUF_INIT;
    tls_info_details(i, &more);
    if (more.len)
        buf_printf(out, "\n\t%s", buf_cstr(&more));   /* tls_info_details() starts with the space Postfix indents with */
    buf_putc(out, ')');
    buf_free(&more);
    if (i->peer_cert) {
        buf_puts(out, "\n\t(Client CN \"");
        put_comment_text(out, i->peer_cn);
        buf_puts(out, "\", Issuer \"");
        put_comment_text(out, i->issuer_cn);
        buf_printf(out, "\" (%s))", i->peer_verified ? "verified OK" : "not verified");
    } else if (asked_ccert) {
        buf_puts(out, "\n\t(Client did not present a certificate)");
    } else {
        buf_puts(out, "\n\t(No client certificate requested)");
    }
}

void tls_errors(buf_t *out)
{
    unsigned long e;
    const char *data = NULL;
    int flags = 0;
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        char text[256];
        ERR_error_string_n(e, text, sizeof text);
        if (out->len)
            buf_puts(out, "; ");
        buf_puts(out, text);
        if ((flags & ERR_TXT_STRING) && data && *data)
            buf_printf(out, ":%s", data);
    }
}
