/*
 * tls_client: OpenSSL 3 for the SMTP/LMTP client (STARTTLS towards the
 * servers moat relays to).  See docs/tls-client.md.
 *
 * Three layers:
 *  - pure parts (no OpenSSL objects, no I/O): the global level from
 *    smtp_tls_security_level or the legacy switches, Postfix's policy
 *    table syntax ("verify match=hostname:.example.com protocols=...")
 *    and lookup keys, and certificate name matching ("hostname",
 *    "nexthop", "dot-nexthop", literal names, one-label wildcards);
 *  - tls_client_t: what one set of smtp_tls_* values needs, built once
 *    and shared by every delivery that has the same values (a transport,
 *    across reloads when nothing changed): the SSL_CTX (trust anchors,
 *    optional client certificate), the open smtp_tls_policy_maps tables
 *    and an in-memory session cache per server for resumption;
 *  - per connection: a client SSL for one policy, its OpenSSL
 *    bufferevent, and the verdict after the handshake (trusted, matched)
 *    with the Postfix log lines.
 *
 * The SMTP conversation itself (EHLO, STARTTLS, the second EHLO,
 * deferrals) is the client's (queue/smtpc-session.c).  Nothing here
 * blocks on the network; building a tls_client_t reads files (trust
 * anchors, tables), once per set of values.
 */
#ifndef MOAT_TLS_TLS_CLIENT_H
#define MOAT_TLS_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/buf.h"
#include "tls/tls.h"

struct bufferevent;
struct event_base;

/* ------------------------------------------------------------- policy */

#define TLS_POLICY_MATCH_MAX 16
#define TLS_POLICY_NAME_MAX 256

/* One destination's TLS policy: the level and its attributes, as a
 * table entry gives them (tls_policy_parse) and then completed from the
 * parameters (tls_client_policy). */
typedef struct tls_policy {
    tls_level_t level;
    /* match= names (verify, secure), in order; default from
     * smtp_tls_verify_cert_match / smtp_tls_secure_cert_match */
    char match[TLS_POLICY_MATCH_MAX][TLS_POLICY_NAME_MAX];
    size_t nmatch;
    char protocols[256];   /* protocols= (items split by ':'), "" when not given */
    char grade[32];        /* ciphers=, "" when not given */
    char exclude[256];     /* exclude= (items split by ':'), "" when not given */
    bool has_exclude;      /* exclude= was given (it replaces the parameters' lists) */
    /* completed by tls_client_policy: */
    int proto_min, proto_max;   /* OpenSSL versions, 0 = no bound */
    char ciphers[1024];         /* the OpenSSL cipher list (TLS 1.2 and below) */
    char source[300];           /* "smtp_tls_security_level" or "hash:/etc/moat/tls_policy:3" */
} tls_policy_t;

/* The level from smtp_tls_security_level, or when that is empty from
 * smtp_enforce_tls (+ smtp_tls_enforce_peername: verify, else encrypt)
 * and smtp_use_tls (may).  "dane" is taken as "may" with a note (as in
 * tls_policy_parse); -1 with a message in err for anything else that is
 * not a client level ("dane-only" and "fingerprint" included). */
int tls_client_global_level(const params_t *p, tls_level_t *out, buf_t *err, buf_t *notes);

/* Parse a policy table value, Postfix's syntax: a level, then
 * attributes separated by white space or commas: match=a:b (verify and
 * secure only; may repeat), protocols=..., ciphers=GRADE, exclude=....
 * "dane" is taken as "may" (moat does no DNSSEC validation, which is
 * what Postfix does with dane when DNSSEC is off) with a note;
 * "dane-only", "fingerprint", tafile= and anything unknown are invalid.
 * Attributes at level none are ignored with a note.  0: *out filled;
 * -1: invalid, the reason in why ("invalid security level \"x\"").
 * notes (may be NULL) gets "; "-separated remarks worth a log line. */
int tls_policy_parse(const char *value, tls_policy_t *out, buf_t *why, buf_t *notes);

/* The smtp_tls_policy_maps keys for a next hop, in lookup order, each
 * followed by '\n' in out: the next hop as the transport wrote it,
 * lower-cased, without LMTP's "inet:" ("example.com", "[10.0.0.1]:587",
 * "mx.example.com:2525"); for a bare domain (no brackets, no port) then
 * each parent domain with a leading dot (".example.com", ".com").
 * Returns the number of keys; 0 for a Unix-domain socket (no TLS there). */
size_t tls_policy_keys(const char *nexthop, bool lmtp, buf_t *out);

/* Does one certificate name (a subjectAltName DNS name, or the CN when
 * there is none) satisfy pol's match list?  "hostname" is the server's
 * host name (the MX host, or the [host] of a literal next hop),
 * "nexthop" the next-hop domain, "dot-nexthop" any subdomain of it, a
 * name with a leading dot any subdomain of that name, anything else
 * that exact name.  A certificate name "*.example.com" stands for
 * exactly one label in front of example.com.  Case does not matter. */
bool tls_client_name_matches(const char *certname, const tls_policy_t *pol, const char *nexthop,
                             const char *hostname);

/* --------------------------------------------------------- the engine */

typedef struct tls_client tls_client_t;
typedef struct tls_client_cache tls_client_cache_t;

/* Build the client TLS of p.  Never NULL: problems are kept and
 * reported per delivery (a bad level or an unreadable policy table:
 * tls_client_policy fails; unreadable trust anchors or client
 * certificate: tls_client_engine_ok is false), and logged once here as
 * warnings with prog ("smtp", "lmtp"). */
tls_client_t *tls_client_new(const params_t *p, const char *prog);
tls_client_t *tls_client_ref(tls_client_t *tc);
void tls_client_unref(tls_client_t **tc);

/* The shared ones: same smtp_tls_* values (and unchanged files: trust
 * anchors, certificate, key, tables, checked when p is new to the entry
 * or every 30 s) give the same tls_client_t, so sessions resume across
 * deliveries and reloads.  tls_client_get returns a new reference. */
tls_client_cache_t *tls_client_cache_new(void);
void tls_client_cache_free(tls_client_cache_t **cc);
tls_client_t *tls_client_get(tls_client_cache_t *cc, const params_t *p, const char *prog);

/* Could the SSL_CTX be built?  false: why (may be NULL) gets the reason;
 * encrypt and up defer with "TLS is required, but our TLS engine is
 * unavailable", may goes on without TLS. */
bool tls_client_engine_ok(const tls_client_t *tc, buf_t *why);

/* The policy for a next hop: the global level, overridden by the first
 * smtp_tls_policy_maps entry found for tls_policy_keys(nexthop), then
 * completed from p (a transport's parameters with the same values tc was
 * built from): match list, protocol range and cipher list for the level.
 * 0: *out filled.  -1: the entry or the parameters are invalid, or a
 * table failed: why holds the detail for the warning line; the caller
 * defers with 4.7.5 "client TLS configuration problem". */
int tls_client_policy(tls_client_t *tc, const params_t *p, const char *nexthop, bool lmtp, tls_policy_t *out,
                      buf_t *why);

/* ----------------------------------------------------- per connection */

/* A client SSL for one connection under pol (level may and up):
 * protocol range, cipher list, SNI servername (skipped for an address
 * literal), peer verification recorded (never fatal in the handshake),
 * and a cached session for (addr, port, servername, policy) when one is
 * alive.  NULL with err when OpenSSL cannot make one. */
SSL *tls_client_ssl(tls_client_t *tc, const tls_policy_t *pol, const char *servername, const char *addr,
                    int port, buf_t *err);
/* Free an SSL made by tls_client_ssl (after its bufferevent). */
void tls_client_ssl_free(SSL **ssl);

/* The OpenSSL bufferevent over fd (connect state), dirty shutdowns
 * allowed; neither the fd nor the SSL is closed or freed with it. */
struct bufferevent *tls_client_bev_new(struct event_base *base, int fd, SSL *ssl);
/* The OpenSSL errors the bufferevent collected, as "error:0A000086:SSL
 * routines::certificate verify failed" texts joined by "; " appended to
 * out (nothing when there are none).  Returns their number. */
int tls_client_bev_error(struct bufferevent *bev, buf_t *out);
/* Before closing a TLS connection in step: send last (a final command
 * such as "QUIT\r\n", may be NULL) and close_notify, without waiting for
 * anything.  Only when the bufferevent has nothing queued. */
void tls_client_shutdown(SSL *ssl, const char *last);

/* The verdict on an established connection. */
typedef struct tls_client_result {
    tls_info_t info;
    bool trusted;          /* a certificate that chains to the trust anchors */
    bool matched;          /* ... whose names satisfy the policy (verify, secure) */
    char names[512];       /* the certificate's DNS names or CN, ", "-joined */
} tls_client_result_t;

/* Judge the handshake: trust, names (at verify and secure), what was
 * negotiated.  Logs (prog: "smtp"/"lmtp"; peer: "host[addr]:port") the
 * certificate problems Postfix logs: always at verify and secure, at
 * smtp_tls_loglevel >= 2 otherwise. */
void tls_client_verify(SSL *ssl, const tls_policy_t *pol, const char *nexthop, const char *hostname,
                       const char *prog, const char *peer, int loglevel, tls_client_result_t *out);

/* "Verified TLS connection established to mx.example.com[192.0.2.1]:25:
 * TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) ..." —
 * Anonymous (no certificate), Untrusted, Trusted (chain good, names not
 * required or not checked), Verified (names matched). */
void tls_client_summary(const tls_client_result_t *r, const char *peer, buf_t *out);
/* "TLSv1.3/TLS_AES_256_GCM_SHA384", for the delivery line. */
void tls_client_brief(const tls_client_result_t *r, char *out, size_t n);

#endif
