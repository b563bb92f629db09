/*
 * smtpc: the SMTP and LMTP client, asynchronous on the event loop (one
 * delivery = one state machine; no thread, no blocking call on the loop).
 * The queue manager hands it one delivery request at a time per
 * destination slot: a message, the recipients that go to one next hop, the
 * transport (its parameters: timeouts, helo name, ports, xforward) and the
 * next hop.  It finds the servers (MX lookup with preference order and
 * A/AAAA fallback through moat's resolver, or the literal [host]:port),
 * talks to them, and reports one result per recipient.
 *
 *  - EHLO with HELO fallback (LHLO for LMTP), PIPELINING when offered
 *    (MAIL, RCPT..., DATA in one write), SIZE (a message larger than the
 *    server's limit bounces 5.3.4 without being sent), 8BITMIME (8-bit
 *    mail to a server without it is downgraded to quoted-printable unless
 *    disable_mime_output_conversion = yes), SMTPUTF8 (mail that needs it,
 *    to a server without it, bounces 5.6.7), XFORWARD when the transport's
 *    smtp_send_xforward_command (lmtp_send_xforward_command) says so and
 *    the server offers it.
 *  - Timeouts per stage from the transport's parameters (smtp_connect_timeout,
 *    smtp_helo_timeout, smtp_mail_timeout, smtp_rcpt_timeout,
 *    smtp_data_init_timeout, smtp_data_xfer_timeout, smtp_data_done_timeout,
 *    smtp_quit_timeout, smtp_rset_timeout, smtp_xforward_timeout; lmtp_*).
 *  - Several servers per next hop: a connection failure, a 4xx greeting or
 *    a 5xx greeting (smtp_skip_5xx_greeting) moves on to the next address,
 *    up to smtp_mx_address_limit addresses and smtp_mx_session_limit
 *    sessions; mail that would loop back to this moat bounces 5.4.6.
 *  - Connection reuse: a connection whose transaction ended well is kept
 *    for smtp_connection_cache_time_limit, keyed by transport + next hop;
 *    the next request for that key reuses it (after an RSET that must
 *    answer 250), within smtp_connection_reuse_time_limit and
 *    smtp_connection_reuse_count_limit.
 *  - Content is read from the queue file on the pool in chunks (never the
 *    whole message in memory, except for an 8-bit downgrade) and sent with
 *    CRLF line ends and dot-stuffing.
 *  - STARTTLS (tls/tls_client.h, docs/tls-client.md): the level of
 *    smtp_tls_security_level or of the next hop's smtp_tls_policy_maps
 *    entry (none, may, encrypt, verify, secure) decides whether STARTTLS
 *    is sent after EHLO, whether its absence or a certificate problem
 *    defers the delivery (4.7.x, never a bounce), and which names the
 *    certificate must carry; after the handshake EHLO is sent again and
 *    the first EHLO's keywords are forgotten (RFC 3207).  A handshake
 *    that fails at level may is retried once in plaintext on a new
 *    connection to the same server.  LMTP over TCP follows the same
 *    smtp_tls_* parameters; LMTP over a Unix socket never uses TLS.
 *  - Probe mode (req->probe, for address verification): MAIL FROM and
 *    the RCPTs, then RSET, never DATA; a 2xx to RCPT is that recipient's
 *    "sent".  No content, SIZE, BODY or XFORWARD; the RSET leaves the
 *    connection in step for the cache (a refused RSET closes it).
 * Replies: 2xx per recipient -> sent; 4xx, a timeout, a lost connection, a
 * garbled reply -> deferred; 5xx -> bounce for that recipient (a 5xx to
 * MAIL or DATA bounces every recipient of the request).
 */
#ifndef MOAT_QUEUE_SMTPC_H
#define MOAT_QUEUE_SMTPC_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/pool.h"
#include "dns/dns.h"

struct event_base;
typedef struct smtpc smtpc_t;

/* "This is me": a next hop that resolves to one of these is a mail loop. */
typedef struct smtpc_self {
    const char *myhostname;       /* an MX host of this name is us */
    const char *const *listen;    /* "127.0.0.1:2525", "[::1]:25", "*:25" (any local address) */
    size_t nlisten;
} smtpc_self_t;

enum { SMTPC_SENT, SMTPC_DEFER, SMTPC_BOUNCE };

typedef struct smtpc_rcpt {
    const char *addr;   /* in: the recipient as sent in RCPT TO (no <>) */
    /* out (set for every recipient before done runs): */
    int status;         /* SMTPC_SENT / SMTPC_DEFER / SMTPC_BOUNCE */
    char dsn[16];       /* "2.0.0", "4.4.1", "5.1.1": the server's enhanced
                         * code when it gave one, else derived from the reply
                         * code (2.0.0 / 4.0.0 / 5.0.0) or the failure (4.4.1
                         * connect failed, 4.4.2 lost connection, 4.4.3 DNS,
                         * 4.4.7 timeout?, 5.4.4 no such host, 5.4.6 loop,
                         * 5.3.4 size, 5.6.7 SMTPUTF8) */
    /* The reason as Postfix logs it inside status=...(TEXT):
     *   "250 2.0.0 Ok: queued as 4F1A2B"
     *   "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: User unknown (in reply to RCPT TO command)"
     *   "connect to mx.example.com[192.0.2.1]:25: Connection refused"
     *   "Host or domain name not found. Name service error for name=example.com type=MX: Host not found"
     * malloc'd; freed by smtpc_request_clear(). */
    char *text;
    /* The remote server's reply line(s) joined with spaces, when the status
     * came from a reply ("550 5.1.1 <bob@example.com>: User unknown"), for
     * the DSN's Diagnostic-Code: smtp; ...  NULL otherwise.  Freed by
     * smtpc_request_clear(). */
    char *reply;
} smtpc_rcpt_t;

typedef struct smtpc_request smtpc_request_t;

struct smtpc_request {
    /* --- the message (strings are borrowed; keep them alive until done) --- */
    const char *queue_id;
    const char *path;             /* the queue file (content read from it) */
    long content_offset, content_size;
    const char *sender;           /* "" for the null sender */
    const char *body_type;        /* "", "7BIT" or "8BITMIME" */
    bool smtputf8;                /* the client asked for SMTPUTF8 */
    /* the original client, for XFORWARD (NAME, ADDR, HELO, PROTO) */
    const char *client_name, *client_addr, *helo, *protocol;
    smtpc_rcpt_t *rcpts;
    size_t nrcpt;
    /* --- where and how --- */
    const transport_t *transport; /* kind TK_SMTP or TK_LMTP; params give the timeouts */
    /* SMTP: "[host]:port" / "[host]" (no MX lookup), "host:port" / "host"
     * (MX lookup, then A/AAAA when there is no MX); "[ipv6:...]" is not
     * needed: "[2001:db8::1]:25".  Default port: smtp_tcp_port.
     * LMTP: "inet:host:port", "inet:host" (lmtp_tcp_port), "unix:/path",
     * or the SMTP forms (no MX lookup for LMTP). */
    const char *nexthop;
    dns_t *dns;                   /* NULL: only literal addresses work */
    const smtpc_self_t *self;
    bool probe;                   /* address verification: MAIL, RCPT..., RSET; no DATA (path and
                                   * content fields unused) */
    /* --- results, set before done runs --- */
    char relay[300];      /* "mx.example.com[192.0.2.1]:25" of the server
                           * that gave the final answers; "none" when no
                           * server was reached */
    bool dest_failed;     /* no server of this next hop took the mail
                           * (connect/greeting/HELO failures, DNS
                           * failure): the queue manager may skip the
                           * destination for a while */
    bool reused;          /* a cached connection carried the delivery */
    /* "TLSv1.3/TLS_AES_256_GCM_SHA384" when the connection that gave the
     * final answers used TLS, "" otherwise (for the delivery log line) */
    char tls[96];
    long long t_start;    /* usec (now_usec) when smtpc_deliver was called */
    long long t_conn;     /* usec when the session was ready for MAIL (delays' c ends here) */
    long long t_end;      /* usec when the last result was known */
    void (*done)(smtpc_request_t *req, void *arg);
    void *arg;
    void *priv;           /* the client's own state; do not touch */
};

smtpc_t *smtpc_new(struct event_base *base, pool_t *pool);
/* Close cached connections (QUIT) and refuse new requests.  Requests in
 * flight still finish (done runs); the client frees itself after the last
 * one, so the caller may drop its pointer at once. */
void smtpc_free(smtpc_t **c);

/* Start a delivery.  done(req, arg) runs exactly once, on the loop, never
 * from inside smtpc_deliver itself, after every recipient has a status. */
void smtpc_deliver(smtpc_t *c, smtpc_request_t *req);
/* Free what the client allocated in req (rcpt texts and replies). */
void smtpc_request_clear(smtpc_request_t *req);

/* Deliveries in flight (shutdown waits for 0) and idle cached connections. */
unsigned smtpc_busy(const smtpc_t *c);
unsigned smtpc_cached(const smtpc_t *c);

/* --- pure helpers, exposed for unit tests and fuzzing --- */

/* Parse a next hop.  Fills host (no brackets), port ("" when none given),
 * *mx (true when an MX lookup applies: no brackets, kind smtp), *unix_path
 * (true for "unix:/path": host holds the path).  -1 with err on syntax
 * errors. */
int smtpc_parse_nexthop(const char *nexthop, bool lmtp, char *host, size_t hostlen, char *port,
                        size_t portlen, bool *mx, bool *unix_path, buf_t *err);

/* An SMTP reply parser: feed lines (without CRLF) one at a time.  Returns
 * 1 when the reply is complete (code, enhanced status and joined text in
 * r), 0 when more lines are needed, -1 for a garbled line (the delivery is
 * deferred with "protocol error"). */
typedef struct smtpc_reply {
    int code;             /* 250 */
    char dsn[16];         /* "2.1.5" or "" */
    buf_t text;           /* every line's text after "250-"/"250 ", joined by " " */
    buf_t lines;          /* the raw lines joined by "\n" (EHLO keywords) */
    int nlines;
} smtpc_reply_t;
int smtpc_reply_feed(smtpc_reply_t *r, const char *line, size_t len);
void smtpc_reply_reset(smtpc_reply_t *r);

#endif
