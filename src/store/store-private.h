/*
 * store-private: what store.c (requests, dispatch, the registry) shares
 * with the backends (store_lmdb.c, store_redis.c), and the test hooks.
 *
 * A request belongs to the backend from start() until the backend calls
 * store_req_finish(); only then may store.c deliver or free it.  A
 * cancelled request is never delivered, but it stays allocated while the
 * backend holds it (a pool job or a hiredis reply still refers to it).
 * Everything here runs on the loop thread, except that an LMDB pool job
 * writes its own request's result fields while the backend holds it.
 */
#ifndef MOAT_STORE_PRIVATE_H
#define MOAT_STORE_PRIVATE_H

#include "store/store.h"

#include <stdbool.h>
#include <sys/types.h>

/* LMDB's default maximum key size; applied to every backend, so a key
 * that works on one works on the other. */
#define STORE_KEY_MAX 511

typedef enum { SOP_GET, SOP_SET, SOP_INCR, SOP_DEL, SOP_SCAN } store_op_t;

/* One entry of a scan batch (key and value malloc'd, NUL-terminated). */
typedef struct store_item {
    char *key, *value;
    size_t len;
    long long expires;
} store_item_t;

struct store_req {
    store_t *s;
    store_req_t *prev, *next;   /* s->live: every request not yet freed */
    store_req_t *done_next;     /* s->done_*: finished, not yet delivered */
    unsigned long seq;          /* order of finishing */
    store_op_t op;
    char *key;                  /* the key; SOP_SCAN: the prefix */
    buf_t val;                  /* set: the value; get: the answer */
    unsigned ttl;
    long long by;
    store_cb cb;
    store_each_fn each;
    void *arg;
    bool cancelled;
    bool held;                  /* the backend owns it */
    bool queued;                /* on the done list */

    /* The answer, written by the backend. */
    store_status_t status;
    long long num, expires;
    buf_t error;
    /* Scan: a batch of entries; more = resume() after delivering them. */
    store_item_t *items;
    size_t nitems, capitems;
    bool more;
    buf_t pos;                  /* scan position (LMDB: last key; redis: cursor) */
    int flags;                  /* backend's own */
};

typedef struct store_backend {
    const char *scheme;         /* "lmdb", "redis" */
    /* The registry key for spec (two specs naming one store give one
     * key); may create what must exist first (the LMDB directory). */
    int (*canon)(const char *spec, buf_t *key, buf_t *err);
    /* Build s->impl from s->canon; 0, or -1 + err. */
    int (*open)(store_t *s, buf_t *err);
    /* Begin r (held); finish it later with store_req_finish(). */
    void (*start)(store_t *s, store_req_t *r);
    /* A scan batch was delivered and r->more was set: fetch the next. */
    void (*resume)(store_t *s, store_req_t *r);
    /* The last reference went: stop timers, let what runs finish. */
    void (*quiesce)(store_t *s);
    /* store_open found it quiesced but not yet freed: start again. */
    void (*revive)(store_t *s);
    /* Nothing is held any more: free s->impl. */
    void (*destroy)(store_t *s);
    /* Test hooks (may be NULL). */
    void (*test_sweep)(store_t *s);
    long long (*test_entries)(store_t *s);
} store_backend_t;

struct store {
    store_t *next;              /* the registry */
    char *spec, *canon;
    pid_t pid;                  /* a forked child must not reuse it */
    int refs;                   /* store_open - store_close */
    unsigned holds;             /* live requests + backend work in flight */
    struct event_base *base;
    pool_t *pool;
    const store_backend_t *be;
    void *impl;
    bool quiet;                 /* refs reached 0: quiesced */
    store_req_t *live;
    store_req_t *done_head, *done_tail;
    unsigned long seq;          /* requests finished so far */
    struct event *done_ev;
    bool dispatching;
};

extern const store_backend_t store_backend_lmdb;
extern const store_backend_t store_backend_redis;

/* The backend is done with r: deliver it from the loop (or free it when
 * cancelled).  Never calls a user callback itself. */
void store_req_finish(store_req_t *r);
/* Result helpers for the backends. */
void store_req_fail(store_req_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void store_req_item(store_req_t *r, const char *key, size_t klen, const char *val, size_t len,
                    long long expires);
void store_req_clear_items(store_req_t *r);
/* Backend work in flight that is not a request (a sync, a sweep). */
void store_hold(store_t *s);
void store_release(store_t *s);

/* Clocks with the test offset added: wall milliseconds, monotonic seconds. */
long long store_now_ms(void);
double store_mono(void);

/* ---- test hooks (tests/unit/test_store*.c only) ---- */
/* Move every store's clock forward by sec (expiry, reconnect backoff). */
void store_test_advance(long long sec);
/* LMDB: start a sweep of expired entries now. */
void store_test_sweep(store_t *s);
/* LMDB: the map size of environments opened from now on (0: 1 GiB). */
void store_test_lmdb_mapsize(size_t bytes);
/* LMDB: entries in the database, expired ones included; -1 elsewhere. */
long long store_test_entries(store_t *s);
/* redis: the per-request timeout in milliseconds (default 2000). */
void store_test_redis_timeout(unsigned ms);

#endif
