/*
 * bounce: delivery status notifications (RFC 3464), built as the text of
 * a new message that the queue manager injects with the null sender.
 * Pure functions: no I/O, no clock (the caller passes the time), so the
 * unit tests and the fuzzer drive them directly.
 *
 * The notice is multipart/report; report-type=delivery-status with three
 * parts: a human-readable explanation, a message/delivery-status part
 * (per-message fields, then one block per recipient: Final-Recipient,
 * Original-Recipient, Action, Status, Remote-MTA, Diagnostic-Code,
 * Last-Attempt-Date, Will-Retry-Until for delay warnings), and the
 * original message: message/rfc822 when its content fits in size_limit
 * bytes, else its header only as text/rfc822-headers.
 */
#ifndef MOAT_QUEUE_BOUNCE_H
#define MOAT_QUEUE_BOUNCE_H

#include <stddef.h>

#include "core/buf.h"

typedef enum {
    BOUNCE_FAILED,   /* non-delivery notice to the sender: Action: failed */
    BOUNCE_DELAYED,  /* delay warning to the sender (delay_warning_time): Action: delayed */
    BOUNCE_DOUBLE,   /* to the postmaster: a bounce (null sender) that could not be delivered */
} bounce_kind_t;

typedef struct bounce_rcpt {
    const char *addr;        /* Final-Recipient */
    const char *orig;        /* Original-Recipient when it differs (REDIRECT), else NULL */
    const char *dsn;         /* "5.1.1"; "4.4.1" for a delay warning */
    /* The reason as logged ("host mx.example.com[192.0.2.1] said: 550 5.1.1
     * ... (in reply to RCPT TO command)"): the explanation part quotes it. */
    const char *text;
    /* The remote server's reply when there was one ("550 5.1.1 <bob@x>:
     * User unknown"): Diagnostic-Code: smtp; REPLY.  NULL: Diagnostic-Code:
     * X-Moat; TEXT. */
    const char *reply;
    const char *remote_mta;  /* "mx.example.com" (Remote-MTA: dns; ...) or NULL */
    long long last_attempt_usec;
} bounce_rcpt_t;

typedef struct bounce_info {
    bounce_kind_t kind;
    const char *myhostname;     /* Reporting-MTA, From: MAILER-DAEMON@myhostname */
    const char *queue_id;       /* the original message's queue ID */
    const char *sender;         /* the original envelope sender ("" for <>) */
    const char *notify;         /* To: the sender, or the postmaster for BOUNCE_DOUBLE */
    const char *client_name;    /* the original client (Received-From-MTA), may be NULL */
    const char *client_addr;
    long long arrival_usec;     /* Arrival-Date */
    long long now_usec;         /* Date:, the boundary, Message-ID */
    long long retry_until_usec; /* BOUNCE_DELAYED: Will-Retry-Until; else 0 */
    size_t size_limit;          /* bounce_size_limit */
} bounce_info_t;

/* The complete notice: header + body, LF line ends, lines at most 998
 * bytes, no dot-stuffing.  content/content_len: the original message as
 * stored in the queue file (LF lines, header first). */
void bounce_build(const bounce_info_t *info, const bounce_rcpt_t *rcpts, size_t n, const char *content,
                  size_t content_len, buf_t *out);

/* RFC 5322 date ("Sat, 21 Nov 2026 10:00:00 +0000") for t in the local zone. */
void bounce_date(long long usec, buf_t *out);

#endif
