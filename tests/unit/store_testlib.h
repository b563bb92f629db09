/*
 * store_testlib: what the state-store tests share (test_store.c for
 * LMDB, test_store_redis.c for Redis): a loop with a pool, synchronous
 * wrappers that run the loop until a callback came, and the suite of
 * behaviours both backends must show alike (store_suite).  Header-only
 * (static inline).
 */
#ifndef MOAT_TEST_STORE_TESTLIB_H
#define MOAT_TEST_STORE_TESTLIB_H

#include "harness.h"

#include "core/buf.h"
#include "core/pool.h"
#include "core/util.h"
#include "store/store-private.h"

#include <event2/event.h>
#include <stdio.h>
#include <time.h>

typedef struct st_loop {
    struct event_base *base;
    pool_t *pool;
} st_loop_t;

static inline void st_loop_init(st_loop_t *l)
{
    l->base = event_base_new();
    l->pool = pool_new(l->base, 2);
}

static inline void st_loop_free(st_loop_t *l)
{
    pool_free(&l->pool);
    event_base_free(l->base);
}

/* Run the loop until *count reaches want or max_sec passed (a bound on
 * a broken test, not a timing assertion). */
static inline void st_run_until(st_loop_t *l, const int *count, int want, double max_sec)
{
    double end = now_mono() + max_sec;
    while ((!count || *count < want) && now_mono() < end) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(l->base, &tv);
        event_base_dispatch(l->base);
    }
}

static inline void st_run_for(st_loop_t *l, double sec)
{
    st_run_until(l, NULL, 1, sec);
}

typedef struct st_res {
    int calls;
    store_status_t st;
    buf_t val;
    long long num, expires;
    buf_t err;
} st_res_t;

static inline void st_res_reset(st_res_t *x)
{
    x->calls = 0;
    x->st = ST_ERROR;
    x->num = x->expires = 0;
    buf_reset(&x->val);
    buf_reset(&x->err);
}

static inline void st_res_free(st_res_t *x)
{
    buf_free(&x->val);
    buf_free(&x->err);
}

static inline void st_res_cb(void *arg, const store_result_t *r)
{
    st_res_t *x = arg;
    x->calls++;
    x->st = r->status;
    x->num = r->num;
    x->expires = r->expires;
    buf_reset(&x->val);
    if (r->value)
        buf_append(&x->val, r->value, r->len);
    buf_reset(&x->err);
    if (r->error)
        buf_puts(&x->err, r->error);
}

/* Synchronous wrappers: each checks that the callback did not run inside
 * the call and ran exactly once afterwards. */
#define ST_WAIT(l, x, call)                                                        \
    do {                                                                           \
        st_res_reset(x);                                                           \
        call;                                                                      \
        CHECK_INT((x)->calls, 0);                                                  \
        st_run_until(l, &(x)->calls, 1, 10);                                       \
        CHECK_INT((x)->calls, 1);                                                  \
    } while (0)

static inline store_status_t st_get(st_loop_t *l, store_t *s, const char *key, st_res_t *x)
{
    ST_WAIT(l, x, store_get(s, key, st_res_cb, x));
    return x->st;
}

static inline store_status_t st_set(st_loop_t *l, store_t *s, const char *key, const char *val, unsigned ttl,
                                    st_res_t *x)
{
    ST_WAIT(l, x, store_set(s, key, val, strlen(val), ttl, st_res_cb, x));
    return x->st;
}

static inline store_status_t st_incr(st_loop_t *l, store_t *s, const char *key, long long by, unsigned ttl,
                                     st_res_t *x)
{
    ST_WAIT(l, x, store_incr(s, key, by, ttl, st_res_cb, x));
    return x->st;
}

static inline store_status_t st_del(st_loop_t *l, store_t *s, const char *key, st_res_t *x)
{
    ST_WAIT(l, x, store_del(s, key, st_res_cb, x));
    return x->st;
}

/* A scan's findings: "key=value;" for each entry, in the order seen. */
typedef struct st_scan {
    st_res_t res;
    buf_t seen;
    int entries;
    int after_done;             /* entries reported after done: must stay 0 */
    long long last_expires;
} st_scan_t;

static inline void st_scan_each(void *arg, const char *key, const char *value, size_t len, long long expires)
{
    st_scan_t *sc = arg;
    if (sc->res.calls)
        sc->after_done++;
    sc->entries++;
    sc->last_expires = expires;
    buf_printf(&sc->seen, "%s=%.*s;", key, (int)len, value);
}

static inline void st_scan_done(void *arg, const store_result_t *r)
{
    st_scan_t *sc = arg;
    st_res_cb(&sc->res, r);
}

static inline store_status_t st_scan(st_loop_t *l, store_t *s, const char *prefix, st_scan_t *sc)
{
    buf_reset(&sc->seen);
    sc->entries = sc->after_done = 0;
    ST_WAIT(l, &sc->res, store_scan(s, prefix, st_scan_each, st_scan_done, sc));
    CHECK_INT(sc->after_done, 0);
    return sc->res.st;
}

static inline void st_scan_free(st_scan_t *sc)
{
    st_res_free(&sc->res);
    buf_free(&sc->seen);
}

/* ---- the behaviours every backend shows alike ---- */

static inline bool st_near(long long got, long long want)
{
    return got >= want - 2 && got <= want + 2;
}

static inline void store_suite(const char *spec)
{
    st_loop_t l;
    st_loop_init(&l);
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, spec, &err);
    if (!s)
        fprintf(stderr, "store_open %s: %s\n", spec, buf_cstr(&err));
    REQUIRE(s);
    CHECK_STR(store_spec(s), spec);
    st_res_t x = {0};
    long long now = (long long)time(NULL);

    /* get, set (with and without expiry), overwrite, binary values */
    CHECK_INT(st_get(&l, s, "suite:missing", &x), ST_NOTFOUND);
    CHECK_INT(st_set(&l, s, "suite:a", "alpha", 0, &x), ST_OK);
    CHECK_INT(st_get(&l, s, "suite:a", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "alpha");
    CHECK_INT(x.val.len, 5);
    CHECK_INT(x.expires, 0);
    CHECK_INT(st_set(&l, s, "suite:a", "beta", 100, &x), ST_OK);
    CHECK_INT(st_get(&l, s, "suite:a", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "beta");
    CHECK(st_near(x.expires, now + 100));
    {
        static const char bin[] = {'a', 0, 'b', '\r', '\n', (char)0xff};
        st_res_reset(&x);
        store_set(s, "suite:bin", bin, sizeof bin, 0, st_res_cb, &x);
        st_run_until(&l, &x.calls, 1, 10);
        CHECK_INT(x.st, ST_OK);
        CHECK_INT(st_get(&l, s, "suite:bin", &x), ST_OK);
        CHECK_INT(x.val.len, sizeof bin);
        CHECK(x.val.len == sizeof bin && memcmp(x.val.data, bin, sizeof bin) == 0);
        CHECK_INT(st_set(&l, s, "suite:empty", "", 0, &x), ST_OK);
        CHECK_INT(st_get(&l, s, "suite:empty", &x), ST_OK);
        CHECK_INT(x.val.len, 0);
    }

    /* incr: a new key starts at 0 and gets the ttl; an existing one keeps
     * its expiry (a fixed window), or its lack of one */
    CHECK_INT(st_incr(&l, s, "suite:n", 3, 100, &x), ST_OK);
    CHECK_INT(x.num, 3);
    CHECK_INT(st_incr(&l, s, "suite:n", 4, 1000, &x), ST_OK);
    CHECK_INT(x.num, 7);
    CHECK_INT(st_incr(&l, s, "suite:n", -10, 1000, &x), ST_OK);
    CHECK_INT(x.num, -3);
    CHECK_INT(st_get(&l, s, "suite:n", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "-3");
    CHECK(st_near(x.expires, now + 100));
    CHECK_INT(st_incr(&l, s, "suite:forever", 1, 0, &x), ST_OK);
    CHECK_INT(st_incr(&l, s, "suite:forever", 1, 50, &x), ST_OK);
    CHECK_INT(x.num, 2);
    CHECK_INT(st_get(&l, s, "suite:forever", &x), ST_OK);
    CHECK_INT(x.expires, 0);
    CHECK_INT(st_incr(&l, s, "suite:a", 1, 0, &x), ST_ERROR);   /* "beta" */
    CHECK(x.err.len > 0);
    CHECK_INT(st_get(&l, s, "suite:a", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "beta");

    /* del */
    CHECK_INT(st_del(&l, s, "suite:a", &x), ST_OK);
    CHECK_INT(st_get(&l, s, "suite:a", &x), ST_NOTFOUND);
    CHECK_INT(st_del(&l, s, "suite:a", &x), ST_NOTFOUND);

    /* scan by prefix; glob characters in the prefix are literal */
    st_scan_t sc = {0};
    CHECK_INT(st_set(&l, s, "scan:p:a", "1", 0, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "scan:p:b", "2", 100, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "scan:q:c", "3", 0, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "scan:p*x", "4", 0, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "scan:p?[", "5", 0, &x), ST_OK);
    CHECK_INT(st_scan(&l, s, "scan:p:", &sc), ST_OK);
    CHECK_INT(sc.entries, 2);
    CHECK(strstr(buf_cstr(&sc.seen), "scan:p:a=1;") != NULL);
    CHECK(strstr(buf_cstr(&sc.seen), "scan:p:b=2;") != NULL);
    CHECK_INT(st_scan(&l, s, "scan:p*", &sc), ST_OK);
    CHECK_STR(buf_cstr(&sc.seen), "scan:p*x=4;");
    CHECK_INT(st_scan(&l, s, "scan:p?", &sc), ST_OK);
    CHECK_STR(buf_cstr(&sc.seen), "scan:p?[=5;");
    CHECK_INT(st_scan(&l, s, "scan:", &sc), ST_OK);
    CHECK_INT(sc.entries, 5);
    CHECK_INT(st_scan(&l, s, "scan:b:", &sc), ST_OK);
    CHECK_INT(sc.entries, 0);
    CHECK_INT(st_scan(&l, s, "scan:p:b", &sc), ST_OK);
    CHECK(st_near(sc.last_expires, now + 100));

    /* a scan over several batches sees every entry once, then done once */
    {
        char key[32];
        int ok = 0;
        st_res_t w = {0};
        for (int i = 0; i < 2300; i++) {
            snprintf(key, sizeof key, "many:%05d", i);
            store_set(s, key, "v", 1, 0, st_res_cb, &w);
        }
        st_run_until(&l, &w.calls, 2300, 60);
        CHECK_INT(w.calls, 2300);
        ok = w.st == ST_OK;
        CHECK(ok);
        st_res_free(&w);
        CHECK_INT(st_scan(&l, s, "many:", &sc), ST_OK);
        CHECK_INT(sc.entries, 2300);
    }

    /* bad keys fail, from the loop too */
    CHECK_INT(st_get(&l, s, "", &x), ST_ERROR);
    {
        char big[STORE_KEY_MAX + 2];
        memset(big, 'k', sizeof big - 1);
        big[sizeof big - 1] = 0;
        CHECK_INT(st_set(&l, s, big, "v", 0, &x), ST_ERROR);
        big[STORE_KEY_MAX] = 0;
        CHECK_INT(st_set(&l, s, big, "v", 0, &x), ST_OK);
        CHECK_INT(st_get(&l, s, big, &x), ST_OK);
    }

    /* cancel: no callback, for any operation */
    {
        st_res_t c = {0};
        st_scan_t csc = {0};
        store_cancel(store_get(s, "suite:n", st_res_cb, &c));
        store_cancel(store_set(s, "suite:c", "x", 1, 0, st_res_cb, &c));
        store_cancel(store_incr(s, "suite:c2", 1, 0, st_res_cb, &c));
        store_cancel(store_del(s, "suite:c3", st_res_cb, &c));   /* may still run: no answer */
        store_cancel(store_get(s, "", st_res_cb, &c));   /* an immediate error */
        store_cancel(store_scan(s, "many:", st_scan_each, st_scan_done, &csc));
        store_cancel(NULL);
        st_run_for(&l, 0.3);
        CHECK_INT(c.calls, 0);
        CHECK_INT(csc.res.calls, 0);
        CHECK_INT(csc.entries, 0);
        st_res_free(&c);
        st_scan_free(&csc);
    }

    /* one spec, one store */
    store_t *s2 = store_open(l.base, l.pool, spec, &err);
    CHECK(s2 == s);
    store_close(&s2);
    CHECK(s2 == NULL);
    CHECK_INT(st_get(&l, s, "suite:n", &x), ST_OK);   /* still open */

    /* the last close: what is in flight never calls back */
    {
        st_res_t c = {0};
        store_get(s, "suite:n", st_res_cb, &c);
        store_incr(s, "suite:n", 1, 0, st_res_cb, &c);
        store_get(s, "", st_res_cb, &c);
        store_close(&s);
        CHECK(s == NULL);
        st_run_for(&l, 0.3);
        CHECK_INT(c.calls, 0);
        st_res_free(&c);
    }
    st_scan_free(&sc);
    st_res_free(&x);
    buf_free(&err);
    st_loop_free(&l);
}

#endif
