/*
 * store_lmdb: the embedded state store, lmdb:/directory.
 *
 * One LMDB environment in the directory (data.mdb + lock.mdb, LMDB's
 * default layout), the unnamed database, a 1 GiB sparse map.  Several
 * moat processes share it through LMDB's lock file (never MDB_NOLOCK):
 * readers never wait, writers take turns on LMDB's mutex.
 *
 * Record: key -> 8-byte big-endian expiry (seconds since the epoch; 0 =
 * none; the entry is gone from that second on) + the value bytes.  A key
 * starting with NUL is moat's own: "\0moat-store" -> "1", the format
 * version, written when the directory is new.
 *
 * Every request is one short transaction in a pool job; writes share one
 * chain key, so this process's writers queue in the pool rather than on
 * LMDB's mutex, leaving the other pool threads free.  incr reads and
 * writes in one write transaction.  An expired entry reads as not found;
 * the sweep (a pool job every 60 s, 10,000 entries per transaction,
 * chained with the writes) deletes it later.
 *
 * Durability: the state is not precious (greylisting restarts, a cache
 * refills), so the environment is opened MDB_NOSYNC|MDB_NOMETASYNC and a
 * pool job runs mdb_env_sync every 5 s when something was written, and
 * once more when the store closes.  A crash of moat loses nothing (the
 * data is in the page cache); a power loss may lose the last seconds, and
 * on a file system that reorders writes may corrupt the file: docs/store.md
 * says to remove the directory then.
 *
 * Owns: the environment, its two timers, the sweep position.  Pool jobs
 * touch the environment and their own request only.  Must never hold a
 * transaction across jobs or open the environment twice in one process
 * (store.c's registry sees to that).
 */
#include "store/store-private.h"

#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAP_SIZE (1024ULL << 20)
#define SYNC_EVERY 5            /* seconds */
#define SWEEP_EVERY 60          /* seconds */
#define SWEEP_CHUNK 10000       /* entries per sweep transaction */
#define SCAN_ITEMS 1000         /* entries per scan batch */
#define SCAN_BYTES (1u << 20)
#define HDR 8

enum { F_WRITE = 1, F_FULL = 2 };

static size_t map_size = MAP_SIZE;

void store_test_lmdb_mapsize(size_t bytes)
{
    map_size = bytes ? bytes : MAP_SIZE;
}

static const char marker_key[] = "\0moat-store";   /* sizeof - 1 bytes */
static const char marker_val[] = "1";

typedef struct lm {
    store_t *s;
    MDB_env *env;
    MDB_dbi dbi;
    size_t mapsize;
    char wchain;                /* its address: the chain key of writes */
    struct event *sync_ev, *sweep_ev;
    bool dirty, syncing, sweeping, full_logged;
    /* The sweep job's own (one at a time). */
    buf_t sweep_pos;
    bool sweep_more;
    bool sweep_again;           /* asked for while one ran: another pass */
    long sweep_deleted;
    int sweep_rc;
} lm_t;

static void put_exp(unsigned char *p, long long exp)
{
    uint64_t e = (uint64_t)exp;
    for (int i = HDR - 1; i >= 0; i--, e >>= 8)
        p[i] = (unsigned char)(e & 0xff);
}

static long long get_exp(const unsigned char *p)
{
    uint64_t e = 0;
    for (int i = 0; i < HDR; i++)
        e = (e << 8) | p[i];
    return (long long)e;
}

static bool expired(long long exp, long long now_ms)
{
    return exp != 0 && now_ms >= exp * 1000;
}

/* The expiry of an entry written now with ttl: at least ttl seconds. */
static long long exp_for(unsigned ttl, long long now_ms)
{
    return ttl ? (now_ms + (long long)ttl * 1000 + 999) / 1000 : 0;
}

static void lm_error(store_req_t *r, const char *what, int rc)
{
    if (rc == MDB_MAP_FULL) {
        r->flags |= F_FULL;
        store_req_fail(r, "%s: the store is full (LMDB map of %zu MiB): expired entries are swept every %d s",
                       r->s->spec, ((lm_t *)r->s->impl)->mapsize >> 20, SWEEP_EVERY);
    } else {
        store_req_fail(r, "%s: %s: %s", r->s->spec, what, mdb_strerror(rc));
    }
}

/* Parse a stored counter: optional '-', decimal digits, nothing else. */
static bool parse_count(const char *p, size_t n, long long *out)
{
    if (n == 0 || n > 20)
        return false;
    char tmp[24];
    memcpy(tmp, p, n);
    tmp[n] = 0;
    size_t i = tmp[0] == '-';
    if (i == n)
        return false;
    for (size_t j = i; j < n; j++)
        if (tmp[j] < '0' || tmp[j] > '9')
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static int put_rec(lm_t *l, MDB_txn *txn, const char *key, const void *val, size_t len, long long exp)
{
    MDB_val k = {strlen(key), (void *)key}, v = {HDR + len, NULL};
    int rc = mdb_put(txn, l->dbi, &k, &v, MDB_RESERVE);
    if (rc == 0) {
        put_exp(v.mv_data, exp);
        if (len)
            memcpy((unsigned char *)v.mv_data + HDR, val, len);
    }
    return rc;
}

static void do_get(lm_t *l, store_req_t *r)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        lm_error(r, "read", rc);
        return;
    }
    MDB_val k = {strlen(r->key), r->key}, v;
    rc = mdb_get(txn, l->dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        r->status = ST_NOTFOUND;
    } else if (rc != 0) {
        lm_error(r, "read", rc);
    } else if (v.mv_size < HDR) {
        store_req_fail(r, "%s: corrupt entry \"%s\"", r->s->spec, r->key);
    } else {
        long long exp = get_exp(v.mv_data);
        if (expired(exp, store_now_ms())) {
            r->status = ST_NOTFOUND;
        } else {
            r->status = ST_OK;
            r->expires = exp;
            buf_append(&r->val, (const char *)v.mv_data + HDR, v.mv_size - HDR);
        }
    }
    mdb_txn_abort(txn);
}

static void do_write(lm_t *l, store_req_t *r)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc != 0) {
        lm_error(r, "write", rc);
        return;
    }
    long long now = store_now_ms();
    MDB_val k = {strlen(r->key), r->key}, v;
    bool changed = false;
    switch (r->op) {
    case SOP_SET:
        rc = put_rec(l, txn, r->key, r->val.data, r->val.len, exp_for(r->ttl, now));
        r->status = ST_OK;
        changed = true;
        break;
    case SOP_INCR: {
        long long cur = 0, exp = -1, next;
        rc = mdb_get(txn, l->dbi, &k, &v);
        if (rc == 0 && v.mv_size >= HDR && !expired(get_exp(v.mv_data), now)) {
            exp = get_exp(v.mv_data);
            if (!parse_count((const char *)v.mv_data + HDR, v.mv_size - HDR, &cur)) {
                store_req_fail(r, "%s: the value of \"%s\" is not an integer", r->s->spec, r->key);
                break;
            }
        } else if (rc != 0 && rc != MDB_NOTFOUND) {
            break;
        }
        if (exp < 0)
            exp = exp_for(r->ttl, now);   /* new (or expired): a fresh window */
        if (__builtin_add_overflow(cur, r->by, &next)) {
            store_req_fail(r, "%s: incrementing \"%s\" would overflow", r->s->spec, r->key);
            break;
        }
        char num[24];
        int n = snprintf(num, sizeof num, "%lld", next);
        rc = put_rec(l, txn, r->key, num, (size_t)n, exp);
        r->num = next;
        r->status = ST_OK;
        changed = true;
        break;
    }
    case SOP_DEL:
        rc = mdb_get(txn, l->dbi, &k, &v);
        if (rc == MDB_NOTFOUND) {
            r->status = ST_NOTFOUND;
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        r->status = v.mv_size >= HDR && expired(get_exp(v.mv_data), now) ? ST_NOTFOUND : ST_OK;
        rc = mdb_del(txn, l->dbi, &k, NULL);
        changed = true;
        break;
    default:
        break;
    }
    if (rc == 0 && r->status != ST_ERROR && changed) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
        r->flags |= F_WRITE;
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc != 0)
        lm_error(r, "write", rc);
}

/* One batch of a scan: from just after r->pos (or the prefix) on. */
static void do_scan(lm_t *l, store_req_t *r)
{
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        lm_error(r, "read", rc);
        return;
    }
    if ((rc = mdb_cursor_open(txn, l->dbi, &c)) != 0) {
        mdb_txn_abort(txn);
        lm_error(r, "read", rc);
        return;
    }
    size_t plen = strlen(r->key), bytes = 0;
    bool resuming = r->pos.len > 0;
    MDB_val k, v;
    if (resuming)
        k = (MDB_val){r->pos.len, r->pos.data};
    else
        k = (MDB_val){plen, r->key};
    if (plen == 0 && !resuming)
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    else
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && resuming && k.mv_size == r->pos.len && memcmp(k.mv_data, r->pos.data, k.mv_size) == 0)
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    long long now = store_now_ms();
    r->more = false;
    while (rc == 0) {
        if (k.mv_size < plen || memcmp(k.mv_data, r->key, plen) != 0)
            break;   /* past the prefix: done */
        if (r->nitems >= SCAN_ITEMS || bytes >= SCAN_BYTES) {
            r->more = true;
            break;
        }
        const char *kd = k.mv_data;
        buf_reset(&r->pos);
        buf_append(&r->pos, kd, k.mv_size);
        if (k.mv_size > 0 && kd[0] != 0 && v.mv_size >= HDR && memchr(kd, 0, k.mv_size) == NULL) {
            long long exp = get_exp(v.mv_data);
            if (!expired(exp, now)) {
                store_req_item(r, kd, k.mv_size, (const char *)v.mv_data + HDR, v.mv_size - HDR, exp);
                bytes += k.mv_size + v.mv_size;
            }
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        store_req_clear_items(r);
        r->more = false;
        lm_error(r, "scan", rc);
        return;
    }
    r->status = ST_OK;
}

static void req_work(void *arg)
{
    store_req_t *r = arg;
    lm_t *l = r->s->impl;
    switch (r->op) {
    case SOP_GET:
        do_get(l, r);
        break;
    case SOP_SCAN:
        do_scan(l, r);
        break;
    default:
        do_write(l, r);
        break;
    }
}

static void req_done(void *arg)
{
    store_req_t *r = arg;
    lm_t *l = r->s->impl;
    if (r->flags & F_WRITE)
        l->dirty = true;
    if ((r->flags & F_FULL) && !l->full_logged) {
        l->full_logged = true;
        log_warn("store", "%s", buf_cstr(&r->error));
    }
    r->flags = 0;
    store_req_finish(r);
}

static void submit(lm_t *l, store_req_t *r)
{
    bool write = r->op == SOP_SET || r->op == SOP_INCR || r->op == SOP_DEL;
    pool_submit(l->s->pool, write ? &l->wchain : NULL, req_work, req_done, r);
}

static void lm_start(store_t *s, store_req_t *r)
{
    submit(s->impl, r);
}

static void lm_resume(store_t *s, store_req_t *r)
{
    submit(s->impl, r);
}

/* ---------- sync and sweep ---------- */

static void sync_work(void *arg)
{
    lm_t *l = arg;
    int rc = mdb_env_sync(l->env, 1);
    if (rc != 0)
        log_warn("store", "%s: sync: %s", l->s->spec, mdb_strerror(rc));
}

static void sync_done(void *arg)
{
    lm_t *l = arg;
    l->syncing = false;
    store_release(l->s);   /* last: it may free l */
}

static void start_sync(lm_t *l)
{
    if (!l->dirty || l->syncing)
        return;
    l->dirty = false;
    l->syncing = true;
    store_hold(l->s);
    pool_submit(l->s->pool, NULL, sync_work, sync_done, l);
}

static void on_sync_timer(evutil_socket_t fd, short what, void *arg)
{
    start_sync(arg);
}

/* One chunk of the sweep: from sweep_pos, at most SWEEP_CHUNK entries. */
static void sweep_work(void *arg)
{
    lm_t *l = arg;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    long long now = store_now_ms();
    if (l->sweep_pos.len == 0) {
        int dead = 0;
        mdb_reader_check(l->env, &dead);   /* slots of crashed processes */
    }
    l->sweep_more = false;
    int rc = mdb_txn_begin(l->env, NULL, 0, &txn);
    if (rc != 0) {
        l->sweep_rc = rc;
        return;
    }
    if ((rc = mdb_cursor_open(txn, l->dbi, &c)) != 0) {
        mdb_txn_abort(txn);
        l->sweep_rc = rc;
        return;
    }
    if (l->sweep_pos.len) {
        k = (MDB_val){l->sweep_pos.len, l->sweep_pos.data};
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    long deleted = 0;
    for (int n = 0; rc == 0 && n < SWEEP_CHUNK; n++) {
        const char *kd = k.mv_data;
        if (k.mv_size > 0 && kd[0] != 0 && v.mv_size >= HDR && expired(get_exp(v.mv_data), now)) {
            if ((rc = mdb_cursor_del(c, 0)) != 0)
                break;
            deleted++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    buf_reset(&l->sweep_pos);
    if (rc == 0) {
        l->sweep_more = true;   /* k is the next entry to look at */
        buf_append(&l->sweep_pos, k.mv_data, k.mv_size);
    }
    mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        l->sweep_rc = rc;
        l->sweep_more = false;
        return;
    }
    rc = deleted ? mdb_txn_commit(txn) : (mdb_txn_abort(txn), 0);
    l->sweep_rc = rc;
    if (rc == 0)
        l->sweep_deleted += deleted;
}

static void start_sweep(lm_t *l);

static void sweep_done(void *arg)
{
    lm_t *l = arg;
    store_t *s = l->s;
    l->sweeping = false;
    if (l->sweep_rc != 0) {
        log_warn("store", "%s: sweeping expired entries: %s", s->spec, mdb_strerror(l->sweep_rc));
        buf_reset(&l->sweep_pos);
        l->sweep_deleted = 0;
    } else {
        if (l->sweep_deleted)
            l->dirty = true;
        if (!l->sweep_more) {
            if (l->sweep_deleted)
                log_debug("store", "%s: swept %ld expired entries", s->spec, l->sweep_deleted);
            l->sweep_deleted = 0;
        }
        if ((l->sweep_more || l->sweep_again) && !s->quiet)
            start_sweep(l);
    }
    store_release(s);   /* last: it may free l */
}

static void start_sweep(lm_t *l)
{
    if (l->sweeping) {
        l->sweep_again = true;
        return;
    }
    if (!l->sweep_more)
        l->sweep_again = false;   /* this pass starts from the top */
    l->sweeping = true;
    l->sweep_rc = 0;
    store_hold(l->s);
    pool_submit(l->s->pool, &l->wchain, sweep_work, sweep_done, l);
}

static void on_sweep_timer(evutil_socket_t fd, short what, void *arg)
{
    start_sweep(arg);
}

static void add_timers(lm_t *l)
{
    struct timeval sync = {SYNC_EVERY, 0}, sweep = {SWEEP_EVERY, 0};
    event_add(l->sync_ev, &sync);
    event_add(l->sweep_ev, &sweep);
}

/* ---------- open and close ---------- */

static int lm_canon(const char *spec, buf_t *key, buf_t *err)
{
    const char *dir = spec + 5;   /* after "lmdb:" */
    if (!*dir) {
        buf_printf(err, "state store %s: no directory (want lmdb:/path/to/directory)", spec);
        return -1;
    }
    if (mkdir_p(dir, 0700) != 0) {
        buf_printf(err, "state store %s: cannot create the directory: %s", spec, strerror(errno));
        return -1;
    }
    char *real = realpath(dir, NULL);
    if (!real) {
        buf_printf(err, "state store %s: %s", spec, strerror(errno));
        return -1;
    }
    buf_printf(key, "lmdb:%s", real);
    free(real);
    return 0;
}

static void lm_free(lm_t *l)
{
    if (l->sync_ev)
        event_free(l->sync_ev);
    if (l->sweep_ev)
        event_free(l->sweep_ev);
    if (l->env)
        mdb_env_close(l->env);
    buf_free(&l->sweep_pos);
    free(l);
}

static int lm_open(store_t *s, buf_t *err)
{
    const char *dir = s->canon + 5;
    lm_t *l = xcalloc(1, sizeof *l);
    l->s = s;
    l->mapsize = map_size;
    MDB_txn *txn = NULL;
    int rc;
    const char *step = "cannot open";
    if ((rc = mdb_env_create(&l->env)) != 0 || (rc = mdb_env_set_mapsize(l->env, l->mapsize)) != 0 ||
        (rc = mdb_env_set_maxreaders(l->env, 512)) != 0)
        goto fail;
    if ((rc = mdb_env_open(l->env, dir, MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS, 0600)) != 0) {
        if (rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_VERSION_MISMATCH) {
            buf_printf(err, "state store %s: cannot open: %s (the directory holds only greylisting and "
                            "cache state: stop moat, remove it, and start again)", s->spec, mdb_strerror(rc));
            lm_free(l);
            return -1;
        }
        goto fail;
    }
    int dead = 0;
    mdb_reader_check(l->env, &dead);
    step = "cannot initialise";
    if ((rc = mdb_txn_begin(l->env, NULL, 0, &txn)) != 0 || (rc = mdb_dbi_open(txn, NULL, 0, &l->dbi)) != 0)
        goto fail;
    MDB_val k = {sizeof marker_key - 1, (void *)marker_key}, v;
    rc = mdb_get(txn, l->dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        MDB_stat st;
        if ((rc = mdb_stat(txn, l->dbi, &st)) != 0)
            goto fail;
        if (st.ms_entries != 0) {
            buf_printf(err, "state store %s: the directory holds an LMDB database that is not moat's "
                            "state store", s->spec);
            mdb_txn_abort(txn);
            lm_free(l);
            return -1;
        }
        v = (MDB_val){sizeof marker_val - 1, (void *)marker_val};
        if ((rc = mdb_put(txn, l->dbi, &k, &v, 0)) != 0)
            goto fail;
        rc = mdb_txn_commit(txn);
        txn = NULL;
        if (rc != 0)
            goto fail;
        mdb_env_sync(l->env, 1);
    } else if (rc != 0) {
        goto fail;
    } else {
        if (v.mv_size != sizeof marker_val - 1 || memcmp(v.mv_data, marker_val, v.mv_size) != 0) {
            buf_printf(err, "state store %s: written by a newer moat (format %.*s)", s->spec,
                       (int)(v.mv_size < 16 ? v.mv_size : 16), (const char *)v.mv_data);
            mdb_txn_abort(txn);
            lm_free(l);
            return -1;
        }
        mdb_txn_abort(txn);
        txn = NULL;
    }
    l->sync_ev = event_new(s->base, -1, EV_PERSIST, on_sync_timer, l);
    l->sweep_ev = event_new(s->base, -1, EV_PERSIST, on_sweep_timer, l);
    add_timers(l);
    s->impl = l;
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    buf_printf(err, "state store %s: %s: %s", s->spec, step, mdb_strerror(rc));
    lm_free(l);
    return -1;
}

static void lm_quiesce(store_t *s)
{
    lm_t *l = s->impl;
    event_del(l->sync_ev);
    event_del(l->sweep_ev);
    start_sync(l);   /* what was written reaches the disk before the close */
}

static void lm_revive(store_t *s)
{
    add_timers(s->impl);
}

static void lm_destroy(store_t *s)
{
    lm_free(s->impl);
    s->impl = NULL;
}

static void lm_test_sweep(store_t *s)
{
    start_sweep(s->impl);
}

static long long lm_test_entries(store_t *s)
{
    lm_t *l = s->impl;
    MDB_txn *txn;
    MDB_stat st;
    if (mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    int rc = mdb_stat(txn, l->dbi, &st);
    mdb_txn_abort(txn);
    return rc == 0 ? (long long)st.ms_entries - 1 : -1;   /* not the marker */
}

const store_backend_t store_backend_lmdb = {
    .scheme = "lmdb",
    .canon = lm_canon,
    .open = lm_open,
    .start = lm_start,
    .resume = lm_resume,
    .quiesce = lm_quiesce,
    .revive = lm_revive,
    .destroy = lm_destroy,
    .test_sweep = lm_test_sweep,
    .test_entries = lm_test_entries,
};
