/*
 * dns: the resolver.  libunbound runs on the caller's libevent loop
 * (ub_ctx_create_event + ub_resolve_event: no thread, no pipe to a
 * worker, no blocking call); moat's cache (cache.c) answers repeated
 * questions with one hash lookup; identical questions in flight share
 * one upstream query (a "flight" with a list of waiters); every flight
 * has a deadline.
 *
 * Callbacks: libunbound's completion callback (ub_done) never calls a
 * waiter.  It parses and caches the reply and activates the flight's own
 * event, and the waiters are called from there, so a waiter may start
 * lookups, cancel other waiters or drop the last dns_t reference without
 * running inside libunbound.  A flight whose deadline passed answers its
 * waiters DNS_TEMPFAIL and leaves the table; libunbound's late reply, if
 * any, still fills the cache (the flight lives on as an orphan until it
 * comes, or until the resolver is freed).
 *
 * Owns the ub_ctx, the cache, the flights and the waiter handles.  Must
 * never call a waiter after dns_cancel or after the last dns_unref, never
 * call one from inside dns_lookup except for an answer it already has
 * (cache, impossible name), and never log per query.
 */
#include "dns/dns-private.h"

#include "core/log.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound-event.h>
#include <unbound.h>

#define DEFAULT_TIMEOUT_MS 10000u
#define DEFAULT_CACHE_MAX 100000u
#define CLASS_IN 1

typedef struct flight flight_t;

struct dns_query {
    dns_query_t *prev, *next;   /* the flight's waiters, oldest first */
    flight_t *f;
    dns_cb_t cb;
    void *arg;
};

struct flight {
    flight_t *hnext;            /* flight table chain, while joinable */
    flight_t *aprev, *anext;    /* every flight (joinable or orphan) */
    dns_t *d;
    dns_type_t type;
    char *name;                 /* canonical */
    uint32_t hash;
    bool in_table;              /* joinable: no waiter answered yet */
    bool ub_active;             /* libunbound still owes ub_done */
    dns_answer_t *result;       /* set by ub_done, taken by flight_event */
    struct event *ev;           /* the deadline; activated early by ub_done */
    dns_query_t *head, *tail;
};

struct dns {
    int refs;
    int busy;                   /* waiters being called right now */
    bool closing;               /* refs reached 0 while busy */
    struct event_base *base;
    struct ub_ctx *ctx;
    unsigned timeout_ms;
    bool no_cache;
    dns_cache_t *cache;
    flight_t **tab;             /* joinable flights by type + name */
    size_t nbuckets, nflights;
    flight_t *all;
    dns_stats_t st;
};

static void destroy(dns_t *d);

/* ------------------------------------------------------------ set-up */

/* One forwarder as unbound wants it ("addr" or "addr@port") from
 * "addr", "addr@port", "[addr]", "[addr]:port" or IPv4 "addr:port". */
static bool parse_forwarder(const char *item, char *out, size_t outsz)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    size_t n = strlen(item);
    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        if (!close || (size_t)(close - item - 1) >= sizeof host)
            return false;
        memcpy(host, item + 1, (size_t)(close - item - 1));
        host[close - item - 1] = 0;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != 0)
            return false;
    } else {
        const char *at = strchr(item, '@');
        const char *colon = strchr(item, ':');
        if (!at && colon && !strchr(colon + 1, ':'))
            at = colon;   /* IPv4 addr:port; IPv6 needs brackets or '@' */
        size_t hl = at ? (size_t)(at - item) : n;
        if (hl >= sizeof host)
            return false;
        memcpy(host, item, hl);
        host[hl] = 0;
        if (at)
            port = at + 1;
    }
    unsigned char bin[16];
    if (inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)
        return false;
    if (port) {
        if (!str_all_digits(port) || strlen(port) > 5)
            return false;
        long p = strtol(port, NULL, 10);
        if (p < 1 || p > 65535)
            return false;
        snprintf(out, outsz, "%s@%ld", host, p);
    } else {
        snprintf(out, outsz, "%s", host);
    }
    return true;
}

#define RESOLV_CONF "/etc/resolv.conf"

/* Does the file have a "nameserver" line?  (Read once, at set-up.) */
static bool resolvconf_has_nameserver(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return true;   /* ub_ctx_resolvconf reports the error */
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, fp)) {
        const char *p = line + strspn(line, " \t");
        found = strncmp(p, "nameserver", 10) == 0 && (p[10] == ' ' || p[10] == '\t');
    }
    fclose(fp);
    return found;
}

/* libunbound options moat always sets; see docs/dns.md "The resolver". */
static const char *const ub_options[][2] = {
    /* Forwarders on loopback: test servers and 127.0.0.53-style stubs. */
    {"do-not-query-localhost:", "no"},
    /* No DNSSEC validation (yet): the iterator alone. */
    {"module-config:", "iterator"},
    /* A forwarder that stopped answering is probed all along and used
     * again as soon as it answers, instead of being written off for up
     * to infra-host-ttl (default 15 minutes).  Measured with a forwarder
     * paused by SIGSTOP long enough for libunbound to mark it down: used
     * again 2-4 s after SIGCONT with these two; not within 30 s with the
     * defaults.  infra-cache-max-rtt stays at its default (120 s): set
     * low, it makes the "down" state come fast, and then a handful of
     * queries that time out for one name (a zone whose server drops
     * them) mark the only forwarder down and every other name gets
     * SERVFAIL for seconds. */
    {"infra-keep-probing:", "yes"},
    {"infra-host-ttl:", "10"},
    /* Many sessions, many DNS lists each: room for the in-flight burst. */
    {"num-queries-per-thread:", "4096"},
    /* Records in the order the server sent them (deterministic traces). */
    {"rrset-roundrobin:", "no"},
    /* unbound answers these zones itself by default (RFC 6761/6303);
     * moat's tests and sites with private reverse zones need them asked
     * upstream.  A transparent zone with no data is resolved normally.
     * ("local-zone: X nodefault" does not work through ub_ctx_set_option
     * in unbound 1.17: the whole value is stored as the zone name.) */
    {"local-zone:", "test. transparent"},
    {"local-zone:", "127.in-addr.arpa. transparent"},
    {"local-zone:", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. transparent"},
    {"unblock-lan-zones:", "yes"},
    {"insecure-lan-zones:", "yes"},
};

dns_t *dns_new(struct event_base *base, const dns_opts_t *opts, buf_t *err)
{
    dns_opts_t none = {0};
    if (!opts)
        opts = &none;
    dns_t *d = xcalloc(1, sizeof *d);
    d->refs = 1;
    d->base = base;
    d->timeout_ms = opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    d->no_cache = opts->no_cache;
    d->cache = dns_cache_new(opts->cache_max ? opts->cache_max : DEFAULT_CACHE_MAX);
    d->nbuckets = 64;
    d->tab = xcalloc(d->nbuckets, sizeof *d->tab);

    d->ctx = ub_ctx_create_event(base);
    if (!d->ctx) {
        buf_puts(err, "libunbound could not create a resolver context");
        goto fail;
    }
    for (size_t i = 0; i < ARRAY_LEN(ub_options); i++) {
        int r = ub_ctx_set_option(d->ctx, ub_options[i][0], ub_options[i][1]);
        if (r != 0) {
            buf_printf(err, "libunbound refused \"%s %s\": %s", ub_options[i][0],
                       ub_options[i][1], ub_strerror(r));
            goto fail;
        }
    }

    size_t nfwd = 0;
    const char *p = opts->forwarders ? opts->forwarders : "";
    while (*p) {
        size_t n = strcspn(p, ", \t\r\n");
        if (n) {
            char item[128], fwd[INET6_ADDRSTRLEN + 8];
            if (n >= sizeof item || (memcpy(item, p, n), item[n] = 0, !parse_forwarder(item, fwd, sizeof fwd))) {
                buf_printf(err, "bad forwarder \"%.*s\" (want an IP address, addr@port or [addr]:port)",
                           (int)(n > 100 ? 100 : n), p);
                goto fail;
            }
            int r = ub_ctx_set_fwd(d->ctx, fwd);
            if (r != 0) {
                buf_printf(err, "libunbound refused forwarder %s: %s", fwd, ub_strerror(r));
                goto fail;
            }
            nfwd++;
            p += n;
        } else {
            p++;
        }
    }
    if (nfwd == 0) {
        if (!resolvconf_has_nameserver(RESOLV_CONF))
            log_warn("moat", "dns: %s names no nameserver: libunbound will ask 127.0.0.1; "
                     "set dns_forwarders to choose", RESOLV_CONF);
        int r = ub_ctx_resolvconf(d->ctx, NULL);
        if (r != 0) {
            buf_printf(err, "cannot use the system resolver (/etc/resolv.conf): %s", ub_strerror(r));
            goto fail;
        }
    }
    return d;

fail:
    destroy(d);
    return NULL;
}

dns_t *dns_ref(dns_t *d)
{
    if (d)
        d->refs++;
    return d;
}

static void flight_free(flight_t *f)
{
    dns_t *d = f->d;
    if (f->aprev)
        f->aprev->anext = f->anext;
    else
        d->all = f->anext;
    if (f->anext)
        f->anext->aprev = f->aprev;
    while (f->head) {
        dns_query_t *q = f->head;
        f->head = q->next;
        free(q);
    }
    if (f->ev)
        event_free(f->ev);
    dns_answer_unref(&f->result);
    free(f->name);
    free(f);
}

static void destroy(dns_t *d)
{
    d->closing = true;
    /* First libunbound, so that no ub_done can arrive for a freed flight. */
    if (d->ctx)
        ub_ctx_delete(d->ctx);
    d->ctx = NULL;
    while (d->all)
        flight_free(d->all);
    dns_cache_free(&d->cache);
    free(d->tab);
    free(d);
}

void dns_unref(dns_t **dp)
{
    dns_t *d = dp ? *dp : NULL;
    if (!d)
        return;
    *dp = NULL;
    if (--d->refs > 0)
        return;
    d->closing = true;
    if (d->busy == 0)
        destroy(d);
}

/* Leave a callback section: the last reference may have gone inside it. */
static bool unbusy(dns_t *d)
{
    d->busy--;
    if (d->closing && d->busy == 0) {
        destroy(d);
        return false;
    }
    return true;
}

struct event_base *dns_event_base(const dns_t *d)
{
    return d->base;
}

/* ------------------------------------------------------- flight table */

static uint32_t key_hash(dns_type_t type, const char *name)
{
    return hash_str(HASH_INIT ^ (uint32_t)type, name);
}

static flight_t **table_slot(dns_t *d, uint32_t h, dns_type_t type, const char *name)
{
    flight_t **pp = &d->tab[h & (d->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->hash == h && (*pp)->type == type && strcmp((*pp)->name, name) == 0)
            break;
    return pp;
}

static void table_grow(dns_t *d)
{
    size_t nb = d->nbuckets * 2;
    flight_t **tab = xcalloc(nb, sizeof *tab);
    for (size_t i = 0; i < d->nbuckets; i++) {
        flight_t *f = d->tab[i];
        while (f) {
            flight_t *next = f->hnext;
            f->hnext = tab[f->hash & (nb - 1)];
            tab[f->hash & (nb - 1)] = f;
            f = next;
        }
    }
    free(d->tab);
    d->tab = tab;
    d->nbuckets = nb;
}

static void table_remove(dns_t *d, flight_t *f)
{
    if (!f->in_table)
        return;
    flight_t **pp = table_slot(d, f->hash, f->type, f->name);
    if (*pp == f)
        *pp = f->hnext;
    f->hnext = NULL;
    f->in_table = false;
    d->nflights--;
}

/* ------------------------------------------------------------ flights */

static void deliver(dns_t *d, flight_t *f, dns_answer_t *a)
{
    d->busy++;
    while (f->head && !d->closing) {
        dns_query_t *q = f->head;
        f->head = q->next;
        if (f->head)
            f->head->prev = NULL;
        else
            f->tail = NULL;
        dns_cb_t cb = q->cb;
        void *arg = q->arg;
        free(q);   /* the handle is dead once its callback starts */
        cb(a, false, arg);
    }
}

/* The flight's deadline passed, or ub_done activated it with a result. */
static void flight_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flight_t *f = arg;
    dns_t *d = f->d;
    dns_answer_t *a = f->result;
    f->result = NULL;
    if (!a) {
        d->st.timeouts++;
        a = dns_answer_tempfail(f->type, f->name, "timeout after %g s", d->timeout_ms / 1000.0);
    }
    if (a->status == DNS_TEMPFAIL)
        d->st.tempfails++;
    table_remove(d, f);
    deliver(d, f, a);
    dns_answer_unref(&a);
    if (!unbusy(d))
        return;
    if (!f->ub_active)
        flight_free(f);
}

static void ub_done(void *arg, int rcode, void *pkt, int len, int sec, char *why_bogus, int ratelimited)
{
    (void)sec;
    (void)why_bogus;
    (void)ratelimited;
    flight_t *f = arg;
    dns_t *d = f->d;
    if (d->closing)
        return;
    f->ub_active = false;
    dns_answer_t *a;
    if (rcode != 0 || !pkt || len <= 0) {
        /* libunbound reports its own failures (a server that never
         * answered included) as SERVFAIL, and then the packet is not
         * meaningful. */
        char b[16];
        if (rcode > 0)
            a = dns_answer_tempfail(f->type, f->name, "%s", dns_rcode_name((unsigned)rcode, b));
        else
            a = dns_answer_tempfail(f->type, f->name, "resolver error: %s", ub_strerror(rcode));
    } else {
        a = dns_msg_parse(pkt, (size_t)len, f->type, f->name);
    }
    if (!d->no_cache)
        dns_cache_put(d->cache, a, now_mono());
    if (!f->in_table) {
        /* An orphan: its waiters had their timeout already. */
        dns_answer_unref(&a);
        flight_free(f);
        return;
    }
    dns_answer_unref(&f->result);
    f->result = a;
    event_del(f->ev);
    event_active(f->ev, EV_TIMEOUT, 0);
}

static flight_t *flight_start(dns_t *d, dns_type_t type, const char *name, uint32_t h, flight_t **slot)
{
    flight_t *f = xcalloc(1, sizeof *f);
    f->d = d;
    f->type = type;
    f->name = xstrdup(name);
    f->hash = h;
    f->ev = evtimer_new(d->base, flight_event, f);
    if (!f->ev)
        log_panic("dns: evtimer_new failed");
    *slot = f;
    f->in_table = true;
    d->nflights++;
    f->anext = d->all;
    if (d->all)
        d->all->aprev = f;
    d->all = f;
    struct timeval tv = {(time_t)(d->timeout_ms / 1000), (suseconds_t)(d->timeout_ms % 1000) * 1000};
    evtimer_add(f->ev, &tv);

    d->st.queries++;
    f->ub_active = true;
    int id = 0;
    /* May call ub_done before it returns (data libunbound holds itself,
     * such as localhost); ub_done only activates the event then. */
    int r = ub_resolve_event(d->ctx, name, (int)type, CLASS_IN, f, ub_done, &id);
    if (r != 0) {
        f->ub_active = false;
        dns_answer_unref(&f->result);
        f->result = dns_answer_tempfail(type, name, "resolver error: %s", ub_strerror(r));
        event_del(f->ev);
        event_active(f->ev, EV_TIMEOUT, 0);
    }
    if (d->nflights > d->nbuckets)
        table_grow(d);
    return f;
}

/* Call cb for an answer moat already has, inside dns_lookup. */
static void answer_now(dns_t *d, dns_answer_t *a, dns_cb_t cb, void *arg)
{
    d->busy++;
    cb(a, true, arg);
    unbusy(d);
}

dns_query_t *dns_lookup(dns_t *d, dns_type_t type, const char *name, dns_cb_t cb, void *arg)
{
    char key[DNS_KEY_MAX + 1];
    d->st.lookups++;
    if (!dns_name_norm(name, key)) {
        /* The answer names the question as asked (lower case, bounded). */
        char shown[DNS_NAME_MAX + 1];
        str_copy(shown, name, sizeof shown);
        str_lower(shown);
        dns_answer_t *a = dns_answer_new(type, shown, DNS_NXDOMAIN);
        answer_now(d, a, cb, arg);
        dns_answer_unref(&a);
        return NULL;
    }
    if (!d->no_cache) {
        dns_answer_t *c = dns_cache_get(d->cache, type, key, now_mono());
        if (c) {
            d->st.cache_hits++;
            /* Our own reference: the callback may push it out of the cache. */
            c = dns_answer_ref(c);
            answer_now(d, c, cb, arg);
            dns_answer_unref(&c);
            return NULL;
        }
    }
    uint32_t h = key_hash(type, key);
    flight_t **slot = table_slot(d, h, type, key);
    flight_t *f = *slot;
    if (f)
        d->st.coalesced++;
    else
        f = flight_start(d, type, key, h, slot);
    dns_query_t *q = xcalloc(1, sizeof *q);
    q->f = f;
    q->cb = cb;
    q->arg = arg;
    q->prev = f->tail;
    if (f->tail)
        f->tail->next = q;
    else
        f->head = q;
    f->tail = q;
    return q;
}

void dns_cancel(dns_query_t *q)
{
    if (!q)
        return;
    flight_t *f = q->f;
    if (q->prev)
        q->prev->next = q->next;
    else
        f->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        f->tail = q->prev;
    free(q);
    /* The flight goes on without waiters: its answer still fills the
     * cache, which the next session to ask is likely to want. */
}

void dns_get_stats(const dns_t *d, dns_stats_t *s)
{
    *s = d->st;
    s->in_flight = d->nflights;
    s->cached = dns_cache_count(d->cache);
}
