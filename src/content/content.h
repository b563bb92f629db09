/*
 * content: the cleanup stage of the DATA path, between the content decoder
 * (smtp/data.c: LF lines) and the spool writer.  What Postfix's cleanup(8)
 * does to a message on its way in, streaming and in bounded memory:
 *
 *  - splits the content into lines, and lines longer than
 *    line_length_limit into pieces (each piece is checked on its own, as
 *    in Postfix; the message itself is not changed by the split);
 *  - runs the MIME parser (mime.h) unless disable_mime_input_processing:
 *    primary headers, the MIME headers of every part, the headers of
 *    attached messages, body lines per part, with mime_nesting_limit,
 *    mime_boundary_length_limit, header_size_limit (a longer header is
 *    cut, the excess discarded and logged), strict_mime_encoding_domain;
 *  - applies header_checks / mime_header_checks / nested_header_checks /
 *    body_checks (hbc.h) with every header_checks(5) action: the message
 *    edits (IGNORE, REPLACE, PREPEND) happen in the output stream; the
 *    message actions (REJECT, DEFER, DISCARD, HOLD, REDIRECT, BCC, FILTER)
 *    are collected in the verdict; WARN/INFO and every action are logged
 *    as Postfix's cleanup logs them:
 *      QUEUEID: reject: header Subject: ... from host[addr]; from=<s>
 *        to=<r> proto=ESMTP helo=<h>: 5.7.1 text
 *  - after a REJECT, DEFER or DISCARD, no further checks run (the content
 *    is still read, and still passed to out so a scanner could see it);
 *  - remembers the Message-ID for the "message-id=<...>" log line.
 *
 * A MIME error that Postfix reports (nesting over the limit; with
 * strict_mime_encoding_domain, an encoding its type does not allow) is a
 * reject "550 5.6.0 ..." when any header or body checks are configured
 * (Postfix reports them only then).  Without checks (and without
 * strict_mime_encoding_domain) only the primary headers are parsed, for
 * the Message-ID: the body passes unparsed, so such errors are not even
 * seen, as in Postfix.
 *
 * Pure: no I/O except log lines, no event loop; used by the session and by
 * `moat content check`.  One content_msg_t per message, one thread.
 */
#ifndef MOAT_CONTENT_CONTENT_H
#define MOAT_CONTENT_CONTENT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "content/hbc.h"
#include "core/buf.h"

/* The compiled content settings of one smtpd service (per configuration
 * generation): the hbc tables and the MIME limits and switches. */
typedef struct content_cfg content_cfg_t;

/* NULL with "file:line: message" lines in err (a table that fails to open,
 * a malformed line in it). */
content_cfg_t *content_cfg_new(const params_t *p, const char *basedir, buf_t *err);
void content_cfg_free(content_cfg_t **c);
/* Are any header or body checks configured? */
bool content_cfg_checks(const content_cfg_t *c);

/* Who the message is from, for log lines (copied by content_new). */
typedef struct content_env {
    const char *queue_id;
    const char *client;   /* "host[addr]" */
    const char *sender;   /* "" for <> */
    const char *rcpt;     /* the first recipient */
    const char *proto;    /* "ESMTP" ... */
    const char *helo;     /* "" when none */
} content_env_t;

/* The verdict so far (final after content_finish). */
typedef enum {
    CV_PASS,       /* queue the message (with the actions below) */
    CV_REJECT,     /* reply is a 5xx: refuse, queue nothing */
    CV_DEFER,      /* reply is a 4xx: refuse, queue nothing */
} content_outcome;

typedef struct content_verdict {
    content_outcome outcome;
    buf_t reply;            /* CV_REJECT/CV_DEFER: "550 5.7.1 text" (no CRLF) */
    bool discard;           /* DISCARD: answer 250, queue nothing */
    bool hold;              /* HOLD: into the hold queue */
    char *redirect;         /* REDIRECT address (the last one wins), or NULL */
    char *filter;           /* FILTER transport:destination (the last one wins), or NULL */
    buf_t bcc;              /* BCC addresses, each ending in "\n" */
    buf_t why;              /* what decided, for the session's log/trace:
                               "header_checks regexp:/etc/moat/header_checks line 4" */
} content_verdict_t;

/* One decision, for `moat content check --trace` (NULL: no trace). */
typedef struct content_event {
    hbc_class cls;          /* where the line came from */
    const char *line;       /* the checked text (unfolded header, body line) */
    size_t len;
    const hbc_result_t *res;/* what matched (res->act != HBC_NONE), or NULL for a note */
    const char *note;       /* a MIME event or limit ("header truncated", "MIME nesting ..."), or NULL */
} content_event_t;
typedef void (*content_trace_fn)(void *arg, const content_event_t *ev);

typedef struct content_msg content_msg_t;

#define CONTENT_NO_CHECKS 0x1   /* receive_override_options = no_header_body_checks:
                                   parse (Message-ID), never check */

/* cfg must outlive the message. */
content_msg_t *content_new(const content_cfg_t *cfg, const content_env_t *env, unsigned flags);
void content_set_trace(content_msg_t *m, content_trace_fn fn, void *arg);

/* Decoded content (LF-terminated lines, split anywhere).  The content as
 * it should be queued (after IGNORE/REPLACE/PREPEND) is appended to out;
 * a line is held back until it is complete (a header until its last
 * continuation line), so out may lag behind the input by one logical
 * header (at most header_size_limit) or one line piece. */
void content_feed(content_msg_t *m, const char *data, size_t len, buf_t *out);
/* End of the message: flush what is held (an unterminated last line gets
 * "\n"), finish the MIME state (a missing closing boundary is fine). */
void content_finish(content_msg_t *m, buf_t *out);

const content_verdict_t *content_verdict(const content_msg_t *m);
/* The primary Message-ID without <>, or NULL. */
const char *content_message_id(const content_msg_t *m);
void content_free(content_msg_t **m);

#endif
