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

#endif
