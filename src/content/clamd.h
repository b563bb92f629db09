/*
 * clamd: the virus scanner client (content_scanner = clamd:unix:/path or
 * clamd:inet:host:port).  One connection per message, speaking clamd's
 * INSTREAM command (zINSTREAM, then <4-byte big-endian length><bytes>
 * chunks, a zero-length chunk to end, and one NUL-terminated reply:
 * "stream: OK", "stream: NAME FOUND" or "... ERROR").
 *
 * Asynchronous on the caller's libevent loop: the message is streamed
 * while the client is still sending it (the session feeds the bytes it
 * spools), so the verdict usually arrives right after the end of DATA.
 * The session stops reading from its client while scan_backlog() is
 * above its high-water mark, as it does for the spool writer.
 *
 * Failures of any kind (connect refused, timeout, a broken connection,
 * an ERROR reply, an unparseable reply) are SCAN_FAILED with a reason;
 * they are reported only after scan_finish(), so the caller has one place
 * to decide (content_scanner_fail_action).  Never blocks, never calls back
 * from inside one of its own calls.
 */
#ifndef MOAT_CONTENT_CLAMD_H
#define MOAT_CONTENT_CLAMD_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/buf.h"

struct event_base;

typedef struct scanner scanner_t;

/* Parse "clamd:unix:/path" or "clamd:inet:host:port" (relative unix paths
 * against base_dir; host names resolved now, never on the loop).
 * timeout_ms bounds the connect, each write's progress and the wait for
 * the verdict after scan_finish.  NULL with "content_scanner: what is
 * wrong" in err. */
scanner_t *scanner_new(const char *spec, const char *base_dir, unsigned timeout_ms, buf_t *err);
void scanner_free(scanner_t **sc);
/* The spec as given, for log lines. */
const char *scanner_name(const scanner_t *sc);

typedef enum { SCAN_CLEAN, SCAN_INFECTED, SCAN_FAILED } scan_status;

/* detail: the virus name (SCAN_INFECTED), the reason (SCAN_FAILED), or "". */
typedef void (*scan_done_fn)(void *arg, scan_status st, const char *detail);

typedef struct scan scan_t;

/* Start scanning one message: connect and send the command.  The
 * scanner must outlive the scan.  Never NULL (a failure to connect is
 * remembered and reported after scan_finish). */
scan_t *scan_start(scanner_t *sc, struct event_base *base, scan_done_fn cb, void *arg);
/* Message bytes, in order; buffered and sent as chunks. */
void scan_write(scan_t *s, const char *data, size_t len);
/* Bytes written but not yet sent to clamd. */
size_t scan_backlog(const scan_t *s);
/* End of the message: the verdict comes through cb exactly once, from the
 * loop, and the scan frees itself after cb returns. */
void scan_finish(scan_t *s);
/* Abandon the scan (before or after scan_finish): no callback; freed. */
void scan_cancel(scan_t *s);

/* The verdict in one clamd reply (s[0..n), without its NUL; a trailing
 * newline is ignored): "stream: OK", "stream: NAME FOUND", or anything
 * else (an "... ERROR", garbage) as SCAN_FAILED.  detail gets the name or
 * the reason ("INSTREAM size limit exceeded. ERROR", "unexpected reply:
 * ..."), printable ASCII only, at most about 200 bytes. */
scan_status clamd_parse_reply(const char *s, size_t n, buf_t *detail);

/* --- What a service does with a verdict (read once per generation) --- */

/* content_scanner_virus_action */
typedef enum { VIRUS_REJECT, VIRUS_HOLD, VIRUS_DISCARD, VIRUS_HEADER } virus_action_t;

typedef struct scan_settings {
    scanner_t *scanner;          /* NULL: content_scanner is empty */
    virus_action_t virus_action;
    bool fail_accept;            /* content_scanner_fail_action = accept */
    long long size_limit;        /* content_scanner_size_limit; 0: none */
} scan_settings_t;

/* Read content_scanner, _timeout, _virus_action, _fail_action and
 * _size_limit from p (a relative unix path is taken against
 * queue_directory).  -1 with "file:line: ..." lines in err; out is then
 * empty. */
int scan_settings_load(const params_t *p, scan_settings_t *out, buf_t *err);
void scan_settings_free(scan_settings_t *s);

/* What one verdict does to the message: the session and `moat content
 * check` apply it alike. */
typedef struct scan_decision {
    bool refuse;           /* reply is the answer to the end of the message */
    bool hold, discard;
    buf_t reply;           /* "554 5.7.0 message rejected: virus found: NAME", "451 4.3.0 ..." */
    buf_t header;          /* "X-Virus-Status: ...\n" for the top of the message, or empty */
    const char *verb;      /* infected: the log line's verb (reject, hold, discard, warning); else NULL */
    const char *note;      /* infected: the log line's text after the verb's subject */
} scan_decision_t;

/* Fill d (zeroed once, reused) from a verdict under s. */
void scan_decide(const scan_settings_t *s, scan_status st, const char *detail, scan_decision_t *d);
void scan_decision_free(scan_decision_t *d);

#endif
