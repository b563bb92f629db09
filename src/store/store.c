/*
 * store: the front of the state store (see store.h) — spec parsing, the
 * process-wide registry (one store per spec per process, reference
 * counted), requests with their cancellation, and delivery.
 *
 * Delivery: a backend hands a finished request to store_req_finish(),
 * which queues it and activates one event; that event's callback runs the
 * user callbacks.  So a callback never runs inside store_get() & co (an
 * immediate error is deferred like any answer), never inside a hiredis
 * callback, and a cancelled request is dropped before its turn.
 *
 * Lifetime: a store is freed when no reference, no request and no backend
 * work is left, and never while its delivery loop runs.  Until then it
 * stays in the registry, quiesced, so that reopening the same spec (a
 * reload while an LMDB job still runs) revives it instead of opening an
 * LMDB environment twice, which LMDB forbids within one process.
 *
 * Owns: the registry, every store_t and store_req_t.  Loop thread only.
 * Must never call a user callback after store_cancel() or the last
 * store_close().
 */
#include "store/store-private.h"

#include "core/util.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static store_t *registry;
static _Atomic long long clock_offset;

long long store_now_ms(void)
{
    return now_usec() / 1000 + atomic_load(&clock_offset) * 1000;
}

double store_mono(void)
{
    return now_mono() + (double)atomic_load(&clock_offset);
}

void store_test_advance(long long sec)
{
    atomic_fetch_add(&clock_offset, sec);
}

static const store_backend_t *backend_for(const char *spec)
{
    if (strncmp(spec, "lmdb:", 5) == 0)
        return &store_backend_lmdb;
    if (strncmp(spec, "redis://", 8) == 0)
        return &store_backend_redis;
    return NULL;
}

static void dispatch(evutil_socket_t fd, short what, void *arg);

static void store_destroy(store_t *s)
{
    for (store_t **pp = &registry; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    s->be->destroy(s);
    event_free(s->done_ev);
    free(s->spec);
    free(s->canon);
    free(s);
}

static void maybe_destroy(store_t *s)
{
    if (s->refs == 0 && s->holds == 0 && !s->dispatching)
        store_destroy(s);
}

store_t *store_open(struct event_base *base, pool_t *pool, const char *spec, buf_t *err)
{
    const store_backend_t *be = backend_for(spec);
    if (!be) {
        buf_printf(err, "state store \"%s\": unknown type (want lmdb:/directory or redis://host:port/db)",
                   spec);
        return NULL;
    }
    buf_t key = BUF_INIT;
    if (be->canon(spec, &key, err) != 0) {
        buf_free(&key);
        return NULL;
    }
    pid_t me = getpid();
    for (store_t *s = registry; s; s = s->next) {
        if (s->pid != me || strcmp(s->canon, buf_cstr(&key)) != 0)
            continue;
        buf_free(&key);
        if (s->base != base || s->pool != pool) {
            buf_printf(err, "state store %s: already open on another event loop in this process", spec);
            return NULL;
        }
        if (s->refs++ == 0 && s->quiet) {
            s->quiet = false;
            s->be->revive(s);
        }
        return s;
    }
    store_t *s = xcalloc(1, sizeof *s);
    s->spec = xstrdup(spec);
    s->canon = buf_steal(&key);
    s->pid = me;
    s->base = base;
    s->pool = pool;
    s->be = be;
    if (be->open(s, err) != 0) {
        free(s->spec);
        free(s->canon);
        free(s);
        return NULL;
    }
    s->done_ev = event_new(base, -1, 0, dispatch, s);
    s->refs = 1;
    s->next = registry;
    registry = s;
    return s;
}

const char *store_spec(const store_t *s)
{
    return s->spec;
}

/* ---------- requests ---------- */

void store_req_clear_items(store_req_t *r)
{
    for (size_t i = 0; i < r->nitems; i++) {
        free(r->items[i].key);
        free(r->items[i].value);
    }
    r->nitems = 0;
}

static void req_free(store_req_t *r)
{
    store_t *s = r->s;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->live = r->next;
    if (r->next)
        r->next->prev = r->prev;
    free(r->key);
    buf_free(&r->val);
    buf_free(&r->error);
    buf_free(&r->pos);
    store_req_clear_items(r);
    free(r->items);
    free(r);
    s->holds--;
    maybe_destroy(s);
}

static void unqueue(store_req_t *r)
{
    store_t *s = r->s;
    store_req_t *prev = NULL;
    for (store_req_t *q = s->done_head; q; prev = q, q = q->done_next)
        if (q == r) {
            if (prev)
                prev->done_next = r->done_next;
            else
                s->done_head = r->done_next;
            if (s->done_tail == r)
                s->done_tail = prev;
            break;
        }
    r->done_next = NULL;
    r->queued = false;
}

void store_req_finish(store_req_t *r)
{
    store_t *s = r->s;
    r->held = false;
    if (r->cancelled) {
        req_free(r);
        return;
    }
    r->queued = true;
    r->seq = ++s->seq;
    r->done_next = NULL;
    if (s->done_tail)
        s->done_tail->done_next = r;
    else
        s->done_head = r;
    s->done_tail = r;
    event_active(s->done_ev, 0, 0);
}

void store_req_fail(store_req_t *r, const char *fmt, ...)
{
    va_list ap;
    r->status = ST_ERROR;
    buf_reset(&r->error);
    va_start(ap, fmt);
    buf_vprintf(&r->error, fmt, ap);
    va_end(ap);
}

void store_req_item(store_req_t *r, const char *key, size_t klen, const char *val, size_t len,
                    long long expires)
{
    if (r->nitems == r->capitems) {
        r->capitems = r->capitems ? r->capitems * 2 : 64;
        r->items = xrealloc(r->items, r->capitems * sizeof *r->items);
    }
    store_item_t *it = &r->items[r->nitems++];
    it->key = xstrndup(key, klen);
    it->value = xmalloc(len + 1);
    memcpy(it->value, val, len);
    it->value[len] = 0;
    it->len = len;
    it->expires = expires;
}

void store_cancel(store_req_t *r)
{
    if (!r || r->cancelled)
        return;
    r->cancelled = true;
    if (r->queued)
        unqueue(r);
    if (!r->held)
        req_free(r);
}

/* One delivery: the scan entries first, then the callback (or, for a
 * scan batch with more to come, back to the backend). */
static void deliver(store_t *s, store_req_t *r)
{
    /* held: a store_cancel() or store_close() from inside each() must
     * not free r under this loop. */
    r->held = true;
    for (size_t i = 0; i < r->nitems && !r->cancelled; i++) {
        store_item_t *it = &r->items[i];
        r->each(r->arg, it->key, it->value, it->len, it->expires);
    }
    store_req_clear_items(r);
    r->held = false;
    if (r->cancelled) {
        req_free(r);
        return;
    }
    if (r->more) {
        r->more = false;
        r->held = true;
        s->be->resume(s, r);
        return;
    }
    store_result_t res = {
        .status = r->status,
        .num = r->num,
        .expires = r->expires,
    };
    if (r->status == ST_OK && r->op == SOP_GET) {
        res.value = buf_cstr(&r->val);
        res.len = r->val.len;
    }
    if (r->status == ST_ERROR)
        res.error = r->error.len ? buf_cstr(&r->error) : "state store error";
    /* The handle dies as the callback starts: a late store_cancel() on
     * it would be the caller's bug, but must not free it twice. */
    r->cancelled = true;
    r->cb(r->arg, &res);
    req_free(r);
}

static void dispatch(evutil_socket_t fd, short what, void *arg)
{
    store_t *s = arg;
    /* Only what is queued now: a callback that starts a request which
     * fails at once gets its answer on a later loop iteration. */
    unsigned long last = s->seq;
    s->dispatching = true;
    while (s->done_head && s->done_head->seq <= last) {
        store_req_t *r = s->done_head;
        s->done_head = r->done_next;
        if (!s->done_head)
            s->done_tail = NULL;
        r->done_next = NULL;
        r->queued = false;
        deliver(s, r);
    }
    s->dispatching = false;
    if (s->done_head)
        event_active(s->done_ev, 0, 0);
    maybe_destroy(s);
}

static store_req_t *req_new(store_t *s, store_op_t op, const char *key, store_cb cb, void *arg)
{
    store_req_t *r = xcalloc(1, sizeof *r);
    r->s = s;
    r->op = op;
    r->key = xstrdup(key ? key : "");
    r->cb = cb;
    r->arg = arg;
    r->held = true;
    r->next = s->live;
    if (s->live)
        s->live->prev = r;
    s->live = r;
    s->holds++;
    return r;
}

static store_req_t *req_start(store_t *s, store_req_t *r)
{
    size_t kl = strlen(r->key);
    if (r->op != SOP_SCAN && (kl == 0 || kl > STORE_KEY_MAX)) {
        store_req_fail(r, "%s: %s key", s->spec, kl ? "too long a" : "an empty");
        store_req_finish(r);
    } else if (r->op == SOP_SCAN && kl > STORE_KEY_MAX) {
        store_req_fail(r, "%s: too long a prefix", s->spec);
        store_req_finish(r);
    } else {
        s->be->start(s, r);
    }
    return r;
}

store_req_t *store_get(store_t *s, const char *key, store_cb cb, void *arg)
{
    return req_start(s, req_new(s, SOP_GET, key, cb, arg));
}

store_req_t *store_set(store_t *s, const char *key, const void *val, size_t len, unsigned ttl_sec,
                       store_cb cb, void *arg)
{
    store_req_t *r = req_new(s, SOP_SET, key, cb, arg);
    buf_append(&r->val, val, len);
    r->ttl = ttl_sec;
    return req_start(s, r);
}

store_req_t *store_incr(store_t *s, const char *key, long long by, unsigned ttl_sec, store_cb cb, void *arg)
{
    store_req_t *r = req_new(s, SOP_INCR, key, cb, arg);
    r->by = by;
    r->ttl = ttl_sec;
    return req_start(s, r);
}

store_req_t *store_del(store_t *s, const char *key, store_cb cb, void *arg)
{
    return req_start(s, req_new(s, SOP_DEL, key, cb, arg));
}

store_req_t *store_scan(store_t *s, const char *prefix, store_each_fn each, store_cb done, void *arg)
{
    store_req_t *r = req_new(s, SOP_SCAN, prefix, done, arg);
    r->each = each;
    return req_start(s, r);
}

/* ---------- closing ---------- */

void store_hold(store_t *s)
{
    s->holds++;
}

void store_release(store_t *s)
{
    s->holds--;
    maybe_destroy(s);
}

void store_close(store_t **sp)
{
    store_t *s = *sp;
    if (!s)
        return;
    *sp = NULL;
    if (--s->refs > 0)
        return;
    /* Keep s alive while its requests go: each cancel may free one. */
    s->holds++;
    for (store_req_t *r = s->live, *next; r; r = next) {
        next = r->next;
        store_cancel(r);
    }
    s->quiet = true;
    s->be->quiesce(s);
    store_release(s);
}

/* ---------- test hooks ---------- */

void store_test_sweep(store_t *s)
{
    if (s->be->test_sweep)
        s->be->test_sweep(s);
}

long long store_test_entries(store_t *s)
{
    return s->be->test_entries ? s->be->test_entries(s) : -1;
}
