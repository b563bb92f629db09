/*
 * sasl: the server side of SMTP AUTH (RFC 4954) behind one asynchronous
 * interface, with two backends (docs/auth.md):
 *
 *  - dovecot: Dovecot's authentication protocol (version 1.2) over its
 *    client socket (smtpd_sasl_path: a unix socket path, relative to
 *    queue_directory, or inet:host:port).  One connection per process and
 *    path, shared by every exchange in flight (requests carry ids),
 *    reconnected with backoff; Dovecot runs the mechanisms, moat passes
 *    the base64 lines through.
 *  - moat: a built-in password table (smtpd_sasl_password_maps, any table
 *    type: user name → crypt(3) hash such as yescrypt or SHA-512-crypt).
 *    moat decodes PLAIN and LOGIN itself; crypt runs on the worker pool
 *    (a yescrypt hash costs milliseconds: never on the event loop), and an
 *    unknown user costs the same as a wrong password.
 *
 * The session (smtp/session.c) owns the SMTP side: the AUTH command, 334
 * challenges, the replies, rate limits and logging.  Nothing here logs a
 * password or a base64 response.
 */
#ifndef MOAT_SASL_SASL_H
#define MOAT_SASL_SASL_H

#include <stdbool.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/pool.h"

struct event_base;

typedef struct sasl_server sasl_server_t;

/* The AUTH backend of one smtpd service of one configuration generation,
 * from smtpd_sasl_type, smtpd_sasl_path, smtpd_sasl_password_maps,
 * smtpd_sasl_service, smtpd_sasl_security_options and
 * smtpd_sasl_tls_security_options.  *out = NULL (and 0) when
 * smtpd_sasl_auth_enable = no.  -1 with "file:line: message" lines in err
 * for an unknown type (cyrus: not supported, say so), an unknown security
 * option, a password table that cannot be opened, type moat without a
 * table.  The dovecot backend connects in the background from here on
 * (base must run); it never blocks. */
int sasl_server_new(const params_t *p, struct event_base *base, pool_t *pool, sasl_server_t **out, buf_t *err);
/* (pool NULL: `moat config check` — the moat backend validates its
 * tables, and an exchange would answer SASL_TEMP.) */
void sasl_server_free(sasl_server_t **s);

/* The mechanisms to announce, space-separated ("PLAIN LOGIN"), after the
 * security options for a plaintext (tls false) or TLS session.  "" when
 * there are none to offer (then no AUTH line): for dovecot, also while no
 * handshake with Dovecot has succeeded yet.  The pointer is valid until
 * the next call. */
const char *sasl_server_mechanisms(sasl_server_t *s, bool tls);
/* Is mech (any case) one of those? */
bool sasl_server_has_mechanism(sasl_server_t *s, const char *mech, bool tls);

/* Who is authenticating (Dovecot's rip/lip/rport/lport/secured). */
typedef struct sasl_peer {
    const char *client_addr, *local_addr;   /* "" when unknown */
    unsigned client_port, local_port;
    bool tls;
} sasl_peer_t;

typedef enum {
    SASL_CONTINUE,   /* send "334 <challenge>" and pass the client's next line to sasl_step */
    SASL_OK,         /* 235 2.7.0 Authentication successful; user is set */
    SASL_FAIL,       /* 535 5.7.8 Error: authentication failed: <reason> */
    SASL_TEMP,       /* 454 4.7.0 Temporary authentication failure: <reason> (backend down, timeout) */
    SASL_MALFORMED,  /* 501 5.5.2 Cannot decode response (bad base64, bad PLAIN/LOGIN layout) */
} sasl_status_t;

typedef struct sasl_reply {
    sasl_status_t status;
    const char *challenge;   /* CONTINUE: base64 for the 334 line ("" for an empty one) */
    const char *user;        /* OK: the authenticated name; FAIL: the name tried when known, else NULL */
    const char *reason;      /* FAIL/TEMP/MALFORMED: short text for the reply and the log, never a secret */
} sasl_reply_t;

/* Called on the event loop, never from inside sasl_start or sasl_step;
 * the reply's strings are valid until the callback returns, also when it
 * calls sasl_end (allowed). */
typedef void (*sasl_done_fn)(void *arg, const sasl_reply_t *r);

typedef struct sasl_conv sasl_conv_t;

/* Begin an exchange with mech (the caller checked it with
 * sasl_server_has_mechanism).  initial: the initial response of
 * "AUTH MECH initial" (base64; "=" is an empty response), or NULL. */
sasl_conv_t *sasl_start(sasl_server_t *s, const char *mech, const char *initial, const sasl_peer_t *peer,
                        sasl_done_fn fn, void *arg);
/* After SASL_CONTINUE: the client's response line (base64). */
void sasl_step(sasl_conv_t *c, const char *response);
/* End the exchange (after OK/FAIL/TEMP/MALFORMED, or to abort: the client
 * sent "*" or went away).  No callback after this; NULL-safe. */
void sasl_end(sasl_conv_t **c);

/* --- pure helpers (unit tests, fuzzing) --- */

/* Decode base64 (RFC 4648, padding required, no white space) into out.
 * "=" decodes to empty.  false for anything else. */
bool sasl_b64_decode(const char *in, buf_t *out);
void sasl_b64_encode(const void *data, size_t len, buf_t *out);
/* Split a PLAIN response (authzid NUL authcid NUL passwd).  false when the
 * layout is wrong or authzid is non-empty and differs from authcid (moat
 * has no proxy authorization).  The pointers point into data (which
 * must hold len bytes plus a NUL after them). */
bool sasl_plain_split(const char *data, size_t len, const char **authcid, const char **passwd);

#endif
