/*
 * cache: moat's own answer cache, in front of libunbound's.
 *
 * A chained hash table keyed by type + canonical name, plus one doubly
 * linked list in order of use.  Lookups and inserts are O(1); the table
 * doubles when it holds more entries than buckets (a rehash touches each
 * entry once, amortised over the inserts that filled it).  When an insert
 * goes over max, the least recently used entry goes, and on every insert
 * up to two expired entries at the cold end go too, so that stale
 * answers do not sit in memory until pushed out.  No per-insert scan.
 *
 * Owns one reference to each answer it holds.  Must never keep a
 * DNS_TEMPFAIL answer or one with ttl 0, and never read a clock: the
 * caller says what time it is (the unit tests pass their own).
 */
#include "dns/dns-private.h"

#include "core/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct centry {
    struct centry *hnext;            /* hash chain */
    struct centry *newer, *older;    /* use order */
    uint32_t hash;
    double expires;
    dns_answer_t *a;                 /* a->type and a->name are the key */
} centry_t;

struct dns_cache {
    centry_t **tab;
    size_t nbuckets;                 /* a power of two */
    size_t count, max;
    centry_t *newest, *oldest;
};

#define INITIAL_BUCKETS 256

static uint32_t key_hash(dns_type_t type, const char *name)
{
    return hash_str(HASH_INIT ^ (uint32_t)type, name);
}

dns_cache_t *dns_cache_new(size_t max)
{
    dns_cache_t *c = xcalloc(1, sizeof *c);
    c->max = max ? max : 1;
    c->nbuckets = INITIAL_BUCKETS;
    c->tab = xcalloc(c->nbuckets, sizeof *c->tab);
    return c;
}

static void list_unlink(dns_cache_t *c, centry_t *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void list_push_newest(dns_cache_t *c, centry_t *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    c->newest = e;
    if (!c->oldest)
        c->oldest = e;
}

/* The slot that points at the entry for the key (or the chain's end). */
static centry_t **find_slot(dns_cache_t *c, uint32_t h, dns_type_t type, const char *name)
{
    centry_t **pp = &c->tab[h & (c->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->hnext) {
        centry_t *e = *pp;
        if (e->hash == h && e->a->type == type && strcmp(e->a->name, name) == 0)
            break;
    }
    return pp;
}

static void drop(dns_cache_t *c, centry_t *e)
{
    centry_t **pp = find_slot(c, e->hash, e->a->type, e->a->name);
    if (*pp == e)
        *pp = e->hnext;
    list_unlink(c, e);
    dns_answer_unref(&e->a);
    free(e);
    c->count--;
}

static void grow(dns_cache_t *c)
{
    size_t nb = c->nbuckets * 2;
    centry_t **tab = xcalloc(nb, sizeof *tab);
    for (size_t i = 0; i < c->nbuckets; i++) {
        centry_t *e = c->tab[i];
        while (e) {
            centry_t *next = e->hnext;
            e->hnext = tab[e->hash & (nb - 1)];
            tab[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(c->tab);
    c->tab = tab;
    c->nbuckets = nb;
}

dns_answer_t *dns_cache_get(dns_cache_t *c, dns_type_t type, const char *name, double now)
{
    uint32_t h = key_hash(type, name);
    centry_t *e = *find_slot(c, h, type, name);
    if (!e)
        return NULL;
    if (now >= e->expires) {
        drop(c, e);
        return NULL;
    }
    list_unlink(c, e);
    list_push_newest(c, e);
    return e->a;
}

bool dns_cache_put(dns_cache_t *c, dns_answer_t *a, double now)
{
    if (a->status == DNS_TEMPFAIL || a->ttl == 0)
        return false;
    uint32_t h = key_hash(a->type, a->name);
    centry_t **pp = find_slot(c, h, a->type, a->name);
    centry_t *e = *pp;
    if (e) {
        dns_answer_unref(&e->a);
        list_unlink(c, e);
    } else {
        e = xcalloc(1, sizeof *e);
        e->hash = h;
        *pp = e;
        c->count++;
    }
    e->a = dns_answer_ref(a);
    e->expires = now + a->ttl;
    list_push_newest(c, e);

    for (int i = 0; i < 2 && c->oldest && c->oldest != e && now >= c->oldest->expires; i++)
        drop(c, c->oldest);
    while (c->count > c->max && c->oldest != e)
        drop(c, c->oldest);
    if (c->count > c->nbuckets)
        grow(c);
    return true;
}

size_t dns_cache_count(const dns_cache_t *c)
{
    return c->count;
}

void dns_cache_free(dns_cache_t **cp)
{
    dns_cache_t *c = cp ? *cp : NULL;
    if (!c)
        return;
    *cp = NULL;
    centry_t *e = c->newest;
    while (e) {
        centry_t *older = e->older;
        dns_answer_unref(&e->a);
        free(e);
        e = older;
    }
    free(c->tab);
    free(c);
}
