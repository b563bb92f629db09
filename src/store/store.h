/*
 * store: moat's shared state (greylisting, address verification results,
 * rate counters, blocks, correspondents) behind one asynchronous
 * interface with two backends:
 *
 *   lmdb:/path/to/dir     the embedded default: an LMDB environment that
 *                         several moat processes on one machine share
 *                         safely (LMDB's own locking); reads and writes run
 *                         on the pool; expired entries are swept there in
 *                         the background
 *   redis://host:port/db  hiredis, asynchronous on the caller's libevent
 *                         loop, for several MX hosts sharing one state;
 *                         expiry is Redis's own (EX / EXPIRE)
 *
 * Keys are short text ("grey:1.2.3:a@b:c@d"); values are bytes.  Every
 * call answers through its callback exactly once, on the loop, never from
 * inside the call itself, unless store_cancel() ran first.  A backend that
 * cannot be reached answers ST_ERROR with a reason (the caller defers with
 * 4xx or skips, as configured), never blocks the loop and never crashes;
 * the redis backend reconnects by itself.
 */
#ifndef MOAT_STORE_STORE_H
#define MOAT_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/pool.h"

struct event_base;
typedef struct store store_t;
typedef struct store_req store_req_t;

typedef enum { ST_OK, ST_NOTFOUND, ST_ERROR } store_status_t;

typedef struct store_result {
    store_status_t status;
    const char *value;     /* ST_OK for get: the bytes (NUL-terminated too), borrowed for the call */
    size_t len;
    long long num;         /* incr: the new value */
    long long expires;     /* get: absolute expiry, seconds since the epoch; 0 = none */
    const char *error;     /* ST_ERROR: why ("redis 127.0.0.1:6379: Connection refused") */
} store_result_t;

typedef void (*store_cb)(void *arg, const store_result_t *r);

/* spec: "lmdb:/var/lib/moat/state" (a directory; created) or
 * "redis://127.0.0.1:6379/0" (db optional).  Opening never waits for a
 * Redis connection (a down server shows as ST_ERROR per call).  NULL +
 * err for a bad spec or an LMDB environment that cannot be opened.
 * The same spec opened again in one process (a reload, `moat check`)
 * returns the same store with one more reference: LMDB forbids opening
 * one environment twice in a process.  Loop thread only. */
store_t *store_open(struct event_base *base, pool_t *pool, const char *spec, buf_t *err);
/* Drop one reference; the last one cancels what is in flight (no
 * callback runs) and closes. */
void store_close(store_t **s);
const char *store_spec(const store_t *s);

/* ttl_sec 0 = no expiry.  The returned handle is valid until the callback
 * starts or store_cancel; it may be ignored. */
store_req_t *store_get(store_t *s, const char *key, store_cb cb, void *arg);
store_req_t *store_set(store_t *s, const char *key, const void *val, size_t len, unsigned ttl_sec,
                       store_cb cb, void *arg);
/* Add by (may be negative) to the integer at key (missing = 0); when the
 * key is new, it gets ttl_sec (an existing key keeps its expiry: a fixed
 * window counter).  r->num is the new value. */
store_req_t *store_incr(store_t *s, const char *key, long long by, unsigned ttl_sec, store_cb cb, void *arg);
store_req_t *store_del(store_t *s, const char *key, store_cb cb, void *arg);

/* Every live entry whose key starts with prefix: each(arg, key, value,
 * len, expires) for each, then done(arg, result) once (ST_OK or
 * ST_ERROR).  For the CLI and the postmaster's listings, not the hot path. */
typedef void (*store_each_fn)(void *arg, const char *key, const char *value, size_t len, long long expires);
store_req_t *store_scan(store_t *s, const char *prefix, store_each_fn each, store_cb done, void *arg);

void store_cancel(store_req_t *r);

#endif
