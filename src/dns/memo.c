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

struct dns_memo {
    dns_t *d;
    void (*wake)(void *arg);
    void *arg;
    struct event *ev;
    memo_ent_t **ents;       /* pointers: callbacks hold an entry's address */
    size_t n, cap;
    size_t outstanding;
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

void dns_memo_free(dns_memo_t **mp)
{
    dns_memo_t *m = mp ? *mp : NULL;
    if (!m)
        return;
    *mp = NULL;
    for (size_t i = 0; i < m->n; i++)
        ent_free(m->ents[i]);
    free(m->ents);
    event_free(m->ev);
    dns_unref(&m->d);
    free(m);
}

/* The canonical key for name (the lower-cased input when impossible:
 * the resolver answers those NXDOMAIN at once). */
static void memo_key(const char *name, char key[DNS_NAME_MAX + 1])
{
    if (!dns_name_norm(name, key)) {
        str_copy(key, name, DNS_NAME_MAX + 1);
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
    char key[DNS_NAME_MAX + 1];
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
