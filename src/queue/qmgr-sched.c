/*
 * qmgr-sched: which delivery request may start next.  Destinations
 * (transport + next hop, or + recipient for local transports) keep their
 * waiting requests in FIFO order; a destination is in its transport's
 * ring while it has waiting requests, is below its concurrency limit and
 * is alive.  qsched_next serves transports in turn and, within one, the
 * ring in turn: one request per destination per turn, so a slow
 * destination with a long queue never starves the others, and the
 * transport's process limit bounds the total.
 *
 * Owns: qdest_t and qtrans_t (created on demand, destinations freed when
 * idle).  Never: does I/O, reads a clock (callers pass the time), or
 * frees an item (items belong to the caller).
 */
#include "queue/qmgr-private.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

#define QSCHED_BUCKETS 4096

struct qsched {
    qtrans_t *trans;          /* every transport */
    qtrans_t *turn;           /* where qsched_next starts looking */
    qdest_t *table[QSCHED_BUCKETS];
    size_t ndest;
};

qsched_t *qsched_new(void)
{
    return xcalloc(1, sizeof(qsched_t));
}

static void dest_free(qdest_t *d)
{
    free(d->nexthop);
    free(d->rcpt);
    free(d->dead_text);
    free(d);
}

void qsched_free(qsched_t **sp)
{
    qsched_t *s = *sp;
    if (!s)
        return;
    for (size_t b = 0; b < QSCHED_BUCKETS; b++) {
        qdest_t *d = s->table[b];
        while (d) {
            qdest_t *next = d->hnext;
            dest_free(d);
            d = next;
        }
    }
    qtrans_t *t = s->trans;
    while (t) {
        qtrans_t *next = t->next;
        free(t->name);
        free(t);
        t = next;
    }
    free(s);
    *sp = NULL;
}

qtrans_t *qsched_transport(qsched_t *s, const char *name)
{
    qtrans_t **pp = &s->trans;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0)
            return *pp;
    qtrans_t *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(name);
    t->maxproc = 1;
    t->dest_limit = 1;
    *pp = t;
    return t;
}

static bool ready(const qdest_t *d)
{
    return d->nqueued > 0 && d->busy < d->tr->dest_limit && d->dead_until == 0;
}

static void ring_add(qdest_t *d)
{
    qtrans_t *t = d->tr;
    if (d->in_ring)
        return;
    d->in_ring = true;
    d->rnext = NULL;
    if (t->ring_tail)
        t->ring_tail->rnext = d;
    else
        t->ring_head = d;
    t->ring_tail = d;
}

static void ring_remove(qdest_t *d)
{
    qtrans_t *t = d->tr;
    if (!d->in_ring)
        return;
    qdest_t **pp = &t->ring_head, *prev = NULL;
    while (*pp && *pp != d) {
        prev = *pp;
        pp = &(*pp)->rnext;
    }
    if (*pp)
        *pp = d->rnext;
    if (t->ring_tail == d)
        t->ring_tail = prev;
    d->in_ring = false;
    d->rnext = NULL;
}

void qsched_set_limits(qsched_t *s, qtrans_t *t, unsigned maxproc, unsigned dest_limit)
{
    unsigned old = t->dest_limit;
    t->maxproc = maxproc ? maxproc : 1;
    t->dest_limit = dest_limit ? dest_limit : 1;
    if (t->dest_limit <= old)
        return;   /* a lower limit takes effect as requests finish */
    /* A higher limit can make waiting destinations ready. */
    for (size_t b = 0; b < QSCHED_BUCKETS; b++)
        for (qdest_t *d = s->table[b]; d; d = d->hnext)
            if (d->tr == t && ready(d))
                ring_add(d);
}

static unsigned hash_dest(const qtrans_t *t, const char *nexthop, const char *rcpt)
{
    unsigned h = hash_str_lc(hash_str(hash_str(HASH_INIT, t->name), ":"), nexthop);
    return rcpt ? hash_str_lc(hash_str(h, "/"), rcpt) : h;
}

static bool same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return str_ieq(a, b);
}

qdest_t *qsched_dest(qsched_t *s, qtrans_t *t, const char *nexthop, const char *rcpt)
{
    unsigned h = hash_dest(t, nexthop, rcpt);
    for (qdest_t *d = s->table[h % QSCHED_BUCKETS]; d; d = d->hnext)
        if (d->hash == h && d->tr == t && str_ieq(d->nexthop, nexthop) && same_str(d->rcpt, rcpt))
            return d;
    qdest_t *d = xcalloc(1, sizeof *d);
    d->tr = t;
    d->nexthop = xstrdup(nexthop);
    d->rcpt = rcpt ? xstrdup(rcpt) : NULL;
    d->hash = h;
    d->hnext = s->table[h % QSCHED_BUCKETS];
    s->table[h % QSCHED_BUCKETS] = d;
    s->ndest++;
    return d;
}

static void dest_unlink(qsched_t *s, qdest_t *d)
{
    qdest_t **pp = &s->table[d->hash % QSCHED_BUCKETS];
    while (*pp && *pp != d)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = d->hnext;
    ring_remove(d);
    s->ndest--;
    dest_free(d);
}

/* Nothing waiting, nothing running and not remembered as dead: gone. */
static void maybe_free(qsched_t *s, qdest_t *d)
{
    if (d->nqueued == 0 && d->busy == 0 && d->dead_until == 0)
        dest_unlink(s, d);
}

void qsched_push(qsched_t *s, qdest_t *d, qitem_t *it)
{
    (void)s;
    it->dest = d;
    it->next = NULL;
    if (d->tail)
        d->tail->next = it;
    else
        d->head = it;
    d->tail = it;
    d->nqueued++;
    if (ready(d))
        ring_add(d);
}

static qitem_t *pop(qdest_t *d)
{
    qitem_t *it = d->head;
    if (!it)
        return NULL;
    d->head = it->next;
    if (!d->head)
        d->tail = NULL;
    d->nqueued--;
    it->next = NULL;
    return it;
}

qitem_t *qsched_next(qsched_t *s)
{
    if (!s->trans)
        return NULL;
    qtrans_t *start = s->turn ? s->turn : s->trans;
    qtrans_t *t = start;
    do {
        qtrans_t *after = t->next ? t->next : s->trans;
        while (t->busy < t->maxproc && t->ring_head) {
            qdest_t *d = t->ring_head;
            ring_remove(d);
            if (!ready(d))
                continue;   /* the limit was lowered meanwhile */
            qitem_t *it = pop(d);
            d->busy++;
            t->busy++;
            if (ready(d))
                ring_add(d);   /* to the tail: the others go first */
            s->turn = after;
            return it;
        }
        t = after;
    } while (t != start);
    return NULL;
}

void qsched_done(qsched_t *s, qitem_t *it)
{
    qdest_t *d = it->dest;
    it->dest = NULL;
    if (!d)
        return;
    if (d->busy > 0)
        d->busy--;
    if (d->tr->busy > 0)
        d->tr->busy--;
    if (ready(d))
        ring_add(d);
    maybe_free(s, d);
}

bool qsched_is_dead(qsched_t *s, qdest_t *d, long long now)
{
    (void)s;
    if (d->dead_until == 0)
        return false;
    if (now < d->dead_until)
        return true;
    d->dead_until = 0;
    if (ready(d))
        ring_add(d);
    return false;
}

void qsched_kill(qsched_t *s, qdest_t *d, long long until, const char *text, const char *dsn)
{
    (void)s;
    d->dead_until = until > 0 ? until : 1;
    free(d->dead_text);
    d->dead_text = xstrdup(text ? text : "");
    str_copy(d->dead_dsn, dsn && *dsn ? dsn : "4.0.0", sizeof d->dead_dsn);
    ring_remove(d);
}

qitem_t *qsched_take(qsched_t *s, qdest_t *d)
{
    qitem_t *it = pop(d);
    if (it)
        it->dest = NULL;
    if (!ready(d))
        ring_remove(d);
    maybe_free(s, d);
    return it;
}

void qsched_revive_all(qsched_t *s)
{
    for (size_t b = 0; b < QSCHED_BUCKETS; b++) {
        qdest_t *d = s->table[b];
        while (d) {
            qdest_t *next = d->hnext;
            if (d->dead_until) {
                d->dead_until = 0;
                if (ready(d))
                    ring_add(d);
                maybe_free(s, d);
            }
            d = next;
        }
    }
}

void qsched_gc(qsched_t *s, long long now)
{
    for (size_t b = 0; b < QSCHED_BUCKETS; b++) {
        qdest_t *d = s->table[b];
        while (d) {
            qdest_t *next = d->hnext;
            if (d->dead_until && now >= d->dead_until) {
                d->dead_until = 0;
                if (ready(d))
                    ring_add(d);
            }
            maybe_free(s, d);
            d = next;
        }
    }
}

size_t qsched_ndest(const qsched_t *s)
{
    return s->ndest;
}

qtrans_t *qsched_transports(qsched_t *s)
{
    return s->trans;
}
