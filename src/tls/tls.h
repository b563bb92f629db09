/*
 * tls: OpenSSL 3 for the SMTP server (STARTTLS, implicit TLS) and what
 * both sides report about an established TLS connection.  The SMTP
 * client's half (levels verify/secure, smtp_tls_policy_maps) is in
 * tls/tls_client.h.  See docs/tls.md.
 *
 * A tls_server_t holds the SSL_CTX of one smtpd service of one
 * configuration generation: certificates and keys are read when the
 * generation is built, so SIGHUP (a new generation) re-reads them, and a
 * bad file fails the reload with file:line while the old generation
 * keeps serving.  Session-ticket keys are process-wide, so a client
 * resumes across reloads.  Sessions (session.c) own their SSL objects and
 * drive them through libevent's OpenSSL bufferevents; nothing here does
 * I/O or blocks.
 */
#ifndef MOAT_TLS_TLS_H
#define MOAT_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/buf.h"

typedef struct ssl_st SSL;

/* Security levels, server (none/may/encrypt) and client (all). */
typedef enum {
    TLS_LEV_NONE,
    TLS_LEV_MAY,
    TLS_LEV_ENCRYPT,
    TLS_LEV_VERIFY,
    TLS_LEV_SECURE,
} tls_level_t;

/* "none", "may", ... → level; false for anything else (also for verify
 * and secure when !client). */
bool tls_level_parse(const char *s, bool client, tls_level_t *out);
const char *tls_level_name(tls_level_t l);

/* The protocol range of a Postfix protocol list (">=TLSv1.2", "TLSv1.3",
 * "!SSLv2, !SSLv3, !TLSv1", "<=TLSv1.2" ...) as OpenSSL version numbers
 * (TLS1_2_VERSION ...); 0 = no bound.  false with "unknown protocol ..."
 * in err. */
bool tls_protocol_range(const char *const *items, size_t n, int *min, int *max, buf_t *err);

/* The OpenSSL cipher list of a grade ("high", "medium") from p's
 * tls_*_cipherlist, with exclusions ("!X" appended for each) applied.
 * false with a message in err for another grade (null, low, export are
 * refused: they are not encryption worth the name). */
bool tls_cipher_list(const params_t *p, const char *grade, const char *const *exclude, size_t nexclude,
                     buf_t *out, buf_t *err);

/* ------------------------------------------------------------ server */

typedef struct tls_server tls_server_t;

/* The TLS of one smtpd service from its parameters: the level
 * (smtpd_tls_security_level, or smtpd_use_tls/smtpd_enforce_tls when
 * that is empty), smtpd_tls_wrappermode, the certificates
 * (smtpd_tls_chain_files, else the cert/key and eccert/eckey pairs),
 * CAfile/CApath, ask/req ccert, protocols and ciphers (the mandatory
 * ones at encrypt and in wrapper mode), the session cache timeout and the
 * fingerprint digest.
 *
 * *out = NULL (and 0) when the service offers no TLS: level none and no
 * wrapper mode.  -1 with "file:line: message" lines in err for a
 * certificate or key that cannot be read or does not match, a level that
 * needs a certificate without one, an unknown level, protocol, grade or
 * digest.  service names the service in log lines. */
int tls_server_new(const params_t *p, const char *service, tls_server_t **out, buf_t *err);
void tls_server_free(tls_server_t **t);

tls_level_t tls_server_level(const tls_server_t *t);   /* MAY or ENCRYPT */
bool tls_server_wrapper(const tls_server_t *t);
int tls_server_loglevel(const tls_server_t *t);         /* smtpd_tls_loglevel */
/* A new SSL for one connection (accept state); NULL if OpenSSL cannot
 * make one (the session answers 454 4.7.0 TLS not available due to local
 * problem and logs the OpenSSL error). */
SSL *tls_server_ssl(tls_server_t *t);

/* ------------------------------------------------------ what both log */

typedef struct tls_info {
    char protocol[16];          /* "TLSv1.3" */
    char cipher[64];            /* "TLS_AES_256_GCM_SHA384" */
    int cipher_bits, alg_bits;  /* 256, 256 */
    char kex[32];               /* key exchange group ("X25519"), "" when unknown */
    char sig[32];               /* the local (server) or peer (client) signature algorithm ("RSA-PSS"), "" */
    int sig_bits;               /* its key size, 0 when unknown */
    char digest[16];            /* the signature digest ("SHA256"), "" */
    bool resumed;               /* the session was resumed (ticket or cache) */
    bool peer_cert;             /* the peer presented a certificate */
    bool peer_verified;         /* ... and it chains to our trust anchors */
    char peer_cn[256];          /* its subject CN, "" */
    char issuer_cn[256];        /* its issuer's CN, "" */
    char fingerprint[200];      /* "AB:CD:..." of the certificate with the configured digest, "" */
    char pkey_fingerprint[200]; /* of its public key, "" */
} tls_info_t;

/* Read what an established connection negotiated.  digest: the
 * fingerprint digest name ("sha256"); NULL: no fingerprints. */
void tls_info_get(SSL *ssl, const char *digest, tls_info_t *out);

/* Postfix's summary line, at loglevel >= 1:
 * "Anonymous TLS connection established from host[addr]: TLSv1.3 with
 * cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519
 * server-signature RSA-PSS (2048 bits) server-digest SHA256"
 * ("Trusted"/"Untrusted"/"Verified" for a peer with a certificate; "to"
 * instead of "from" on the client side).  program: "smtpd" or "smtp". */
void tls_info_log(const tls_info_t *i, const char *program, bool server, const char *peer);

/* " key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest
 * SHA256" (each part only when known; "" before TLS 1.3), appended: the
 * tail of the summary lines. */
void tls_info_details(const tls_info_t *i, buf_t *out);

/* The Received: header's TLS comment, without the leading tab:
 * "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n
 * \t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n
 * \t(No client certificate requested)" — lines joined by "\n\t" (the
 * key-exchange continuation with one more space, as Postfix), no final
 * newline. */
void tls_info_received(const tls_info_t *i, bool asked_ccert, buf_t *out);

/* The OpenSSL error queue as one log line's tail ("error:0A000126:SSL
 * routines::unexpected eof while reading"), emptied; "" when empty. */
void tls_errors(buf_t *out);

#endif
