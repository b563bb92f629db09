/*
 * memo: one session's view of DNS (dns.h, "per-session memo").  It keeps
 * the answers this session has used, so that a restriction evaluated
 * twice within one command sees the same data, starts each query at most
 * once, and wakes the session when a query it waits for completes.
 *
 * The wake-up runs from the memo's own event (event_active), never from
 * inside dns_memo_* or a resolver callback, so the session may free the
 * memo or re-run its restrictions from wake without re-entrancy.
 *
 * Owns its entries (each holding an answer reference or an outstanding
 * dns_query_t), its event and one dns_t reference.  Must never call wake
 * after dns_memo_free, and never wake for a query nobody waits for
 * (a prefetch that no dns_memo_get asked about).
 *
 * The generic results (dns_memo_ext: a policy service's answer, a store
 * read, a probe) live beside the DNS entries and follow the same rules:
 * started once per key, woken through the same event, dropped by
 * dns_memo_clear once complete, counted by dns_memo_outstanding while
 * running.  An op whose memo goes away is cancelled through its handle;
 * one started without a handle is orphaned instead (its memo_op_done
 * frees it and stores nothing), so a late completion never touches a
 * freed memo.
 */
#include "dns/dns-private.h"

#include "core/log.h"
#include "core/util.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

typedef struct memo_ent {
    dns_memo_t *m;
    dns_type_t type;
    char *name;              /* canonical, or the lower-cased input when impossible */
    dns_answer_t *a;         /* NULL while outstanding */
    dns_query_t *q;          /* the outstanding query */
    dns_how_t how;
    double started;
    bool want_wake;          /* a dns_memo_get returned NULL for it */
} memo_ent_t;

struct memo_op {
    dns_memo_t *m;           /* NULL: orphaned (its memo went away without a way to cancel it) */
    char *key;
    char *value;             /* NULL while outstanding */
    void *handle;            /* what cancel gets */
    memo_cancel_fn cancel;
    bool done;
    bool want_wake;          /* a dns_memo_ext returned NULL for it */
};

struct dns_memo {
    dns_t *d;
    void (*wake)(void *arg);
    void *arg;
    struct event *ev;
    memo_ent_t **ents;       /* pointers: callbacks hold an entry's address */
    size_t n, cap;
    size_t outstanding;      /* DNS queries and generic ops still running */
    memo_op_t **ops;         /* dns_memo_ext results and work in progress */
    size_t nops, capops;
};

static void memo_wake_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dns_memo_t *m = arg;
    if (m->wake)
        m->wake(m->arg);
}

dns_memo_t *dns_memo_new(dns_t *d, void (*wake)(void *arg), void *arg)
{
    dns_memo_t *m = xcalloc(1, sizeof *m);
    m->d = dns_ref(d);
    m->wake = wake;
    m->arg = arg;
    m->ev = event_new(dns_event_base(d), -1, 0, memo_wake_event, m);
    if (!m->ev)
        log_panic("dns: event_new failed");
    return m;
}

static void ent_free(memo_ent_t *e)
{
    dns_cancel(e->q);
    dns_answer_unref(&e->a);
    free(e->name);
    free(e);
}

static void op_free(memo_op_t *op)
{
    free(op->key);
    free(op->value);
    free(op);
}

/* The memo lets go of op: a finished op is freed; a running one is
 * cancelled (then freed) or, without a handle to cancel, orphaned. */
static void op_drop(memo_op_t *op)
{
    if (op->done) {
        op_free(op);
    } else if (op->handle && op->cancel) {
        op->cancel(op->handle);
        op_free(op);
    } else {
        op->m = NULL;
    }
}

void dns_memo_free(dns_memo_t **mp)
{
    dns_memo_t *m = mp ? *mp : NULL;
    if (!m)
        return;
    *mp = NULL;
    for (size_t i = 0; i < m->n; i++)
        ent_free(m->ents[i]);
    free(m->ents);
    for (size_t i = 0; i < m->nops; i++)
        op_drop(m->ops[i]);
    free(m->ops);
    event_free(m->ev);
    dns_unref(&m->d);
    free(m);
}

/* The canonical key for name (the lower-cased input when impossible:
 * the resolver answers those NXDOMAIN at once). */
static void memo_key(const char *name, char key[DNS_KEY_MAX + 1])
{
    if (!dns_name_norm(name, key)) {
        str_copy(key, name, DNS_KEY_MAX + 1);
        str_lower(key);
    }
}

static memo_ent_t *find(const dns_memo_t *m, dns_type_t type, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->ents[i]->type == type && strcmp(m->ents[i]->name, key) == 0)
            return m->ents[i];
    return NULL;
}

static void memo_cb(dns_answer_t *a, bool from_cache, void *arg)
{
    memo_ent_t *e = arg;
    dns_memo_t *m = e->m;
    e->a = dns_answer_ref(a);
    e->how.cached = from_cache;
    if (e->q) {
        /* Completed later, from the loop (not inside dns_lookup). */
        e->q = NULL;
        m->outstanding--;
        double ms = (now_mono() - e->started) * 1000.0;
        e->how.ms = ms < 0 ? 0 : (unsigned)(ms + 0.5);
        if (e->want_wake)
            event_active(m->ev, EV_TIMEOUT, 0);
    }
}

/* Find or start the entry for (type, name). */
static memo_ent_t *lookup(dns_memo_t *m, dns_type_t type, const char *name)
{
    char key[DNS_KEY_MAX + 1];
    memo_key(name, key);
    memo_ent_t *e = find(m, type, key);
    if (e)
        return e;
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->ents = xrealloc(m->ents, m->cap * sizeof *m->ents);
    }
    e = xcalloc(1, sizeof *e);
    e->m = m;
    e->type = type;
    e->name = xstrdup(key);
    e->started = now_mono();
    m->ents[m->n++] = e;
    /* A cached answer arrives inside dns_lookup, before q is set. */
    dns_query_t *q = dns_lookup(m->d, type, name, memo_cb, e);
    if (q) {
        e->q = q;
        m->outstanding++;
    }
    return e;
}

const dns_answer_t *dns_memo_get(dns_memo_t *m, dns_type_t type, const char *name, dns_how_t *how)
{
    memo_ent_t *e = lookup(m, type, name);
    if (!e->a) {
        e->want_wake = true;
        return NULL;
    }
    if (how)
        *how = e->how;
    return e->a;
}

void dns_memo_prefetch(dns_memo_t *m, dns_type_t type, const char *name)
{
    (void)lookup(m, type, name);
}

size_t dns_memo_outstanding(const dns_memo_t *m)
{
    return m->outstanding;
}

void dns_memo_clear(dns_memo_t *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        memo_ent_t *e = m->ents[i];
        if (e->q) {
            m->ents[k++] = e;
        } else {
            ent_free(e);
        }
    }
    m->n = k;
    k = 0;
    for (size_t i = 0; i < m->nops; i++) {
        memo_op_t *op = m->ops[i];
        if (op->done)
            op_free(op);
        else
            m->ops[k++] = op;
    }
    m->nops = k;
}

/* ------------------------------------------------- generic results */

const char *dns_memo_ext(dns_memo_t *m, const char *key, memo_start_fn start, memo_cancel_fn cancel,
                         void *start_arg)
{
    for (size_t i = 0; i < m->nops; i++) {
        memo_op_t *op = m->ops[i];
        if (strcmp(op->key, key) != 0)
            continue;
        if (op->done)
            return op->value;
        op->want_wake = true;
        return NULL;
    }
    if (m->nops == m->capops) {
        m->capops = m->capops ? m->capops * 2 : 4;
        m->ops = xrealloc(m->ops, m->capops * sizeof *m->ops);
    }
    memo_op_t *op = xcalloc(1, sizeof *op);
    op->m = m;
    op->key = xstrdup(key);
    m->ops[m->nops++] = op;
    m->outstanding++;
    /* want_wake stays false during start: a result given inside start is
     * returned below and must not wake the caller for it later. */
    void *handle = start(start_arg, op->key, op);
    if (op->done)
        return op->value;
    op->handle = handle;
    op->cancel = cancel;
    op->want_wake = true;
    return NULL;
}

void memo_op_done(memo_op_t *op, const char *value)
{
    if (op->done)
        log_panic("memo_op_done: the result for \"%.60s\" arrived twice", op->key);
    dns_memo_t *m = op->m;
    if (!m) {
        op_free(op);   /* orphaned: nobody keeps the result */
        return;
    }
    op->done = true;
    op->value = xstrdup(value ? value : "");
    op->handle = NULL;
    m->outstanding--;
    if (op->want_wake)
        event_active(m->ev, EV_TIMEOUT, 0);
}

struct event_base *memo_op_base(const memo_op_t *op)
{
    return op->m ? dns_event_base(op->m->d) : NULL;
}

void dns_trace_answer(buf_t *out, const dns_answer_t *a, const dns_how_t *how)
{
    buf_printf(out, "dns: %s %s -> ", dns_type_name(a->type), a->name);
    dns_answer_format(a, out);
    if (how->cached)
        buf_puts(out, " (cache)");
    else
        buf_printf(out, " (%u ms)", how->ms);
}
