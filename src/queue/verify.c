/*
 * verify: address verification (contract in verify.h; behaviour and
 * parameters in docs/verify.md), Postfix's verify(8) on moat's loop.
 *
 * A query looks the address up (state store key "vrfy:<address>", or
 * this process's memory when address_verify_map is empty), and answers
 * from a fresh entry at once; a stale entry answers too and starts a
 * background re-probe; a missing one joins the probe in flight for that
 * address or starts one, and waits for it up to (address_verify_poll_count
 * - 1) x address_verify_poll_delay (Postfix's polling: the first look is
 * immediate) before answering VR_IN_PROGRESS.  A probe is routed like
 * mail (router_new_probe: address_verify_transport_maps/_relayhost);
 * local, discard, error and retry transports answer without a
 * connection; smtp/lmtp ones go through the SMTP client in probe mode
 * (MAIL, RCPT, RSET: never DATA), at most address_verify_probe_domain_limit
 * at a time per domain (the rest wait in order).
 *
 * Owns: its queries, probes, the memory cache, its own SMTP client, the
 * probe router, a reference to cfg (transports used by probes in flight)
 * and to the resolver.  Borrows the store (the owner closes it after
 * verify_free).  verify_free ends queries at once; probes in flight run
 * to their end without writing anything, and the last one frees what is
 * left.
 *
 * Never: answer inside verify_query (answers go through a loop event),
 * let a failed re-probe replace a positive entry that has not expired
 * (Postfix: a flaky MX must not forget good addresses), block, or send
 * DATA to anyone.
 */
#include "queue/verify.h"

#include "core/log.h"
#include "core/util.h"
#include "queue/route.h"

#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MEM_BUCKETS 1024
#define MEM_MAX 100000      /* entries in the memory cache; beyond, expired ones go first, then anything */
#define KEY_PREFIX "vrfy:"

typedef struct probe probe_t;

typedef struct vq {
    verify_t *v;
    char *addr;              /* in lower case: the cache key and the probe's identity */
    char *asked;             /* as asked: the probe's RCPT TO (local parts may care about case) */
    verify_cb cb;
    void *arg;
    store_req_t *sreq;
    struct event *ev;        /* the answer (activated) or the poll deadline (timer) */
    probe_t *probe;          /* the probe it waits for */
    bool answered;
    verify_result_t res;
    char *text;              /* res.text's storage */
    struct vq *prev, *next;
} vq_t;

struct probe {
    verify_t *v;
    char *addr, *domain;     /* lower case */
    char *asked;             /* as the first query asked: the RCPT TO */
    bool refresh_ok;         /* re-probing a positive entry: a failure does not replace it */
    bool running, queued;
    char *sender, *nexthop;
    smtpc_rcpt_t rcpt;
    smtpc_request_t req;
    probe_t *prev, *next;
};

typedef struct mentry {
    char *addr;
    verify_status_t status;
    long long updated, expires;
    char dsn[16];
    char *text;
    struct mentry *next;
} mentry_t;

struct verify {
    struct event_base *base;
    pool_t *pool;
    dns_t *dns;
    config_t *cfg;
    const params_t *p;
    store_t *store;          /* NULL: the memory cache */
    router_t *router;
    smtpc_t *smtpc;
    smtpc_self_t self;
    char *myhostname;
    char **listen;
    size_t nlisten;
    long long pos_expire, pos_refresh, neg_expire, neg_refresh, wait;
    bool neg_cache;
    unsigned domain_limit;
    vq_t *queries;
    probe_t *probes;
    unsigned running, queued;
    mentry_t *mem[MEM_BUCKETS];
    size_t nmem;
    bool closing;
};

static void probe_launch(probe_t *p);

/* ------------------------------------------------------------ codec */

static char status_char(verify_status_t st)
{
    switch (st) {
    case VR_DELIVERABLE: return 'D';
    case VR_UNDELIVERABLE: return 'U';
    case VR_TEMPFAIL: return 'T';
    case VR_IN_PROGRESS: break;
    }
    return 'P';
}

void verify_encode(buf_t *out, verify_status_t st, long long updated, const char *dsn, const char *text)
{
    buf_printf(out, "%c %lld %s %s", status_char(st), updated, dsn && *dsn ? dsn : "-", text ? text : "");
}

int verify_decode(const char *val, verify_status_t *st, long long *updated, char dsn[16], const char **text)
{
    if (!val)
        return -1;
    switch (val[0]) {
    case 'D': *st = VR_DELIVERABLE; break;
    case 'U': *st = VR_UNDELIVERABLE; break;
    case 'T': *st = VR_TEMPFAIL; break;
    default: return -1;
    }
    if (val[1] != ' ' || !isdigit((unsigned char)val[2]))
        return -1;
    char *end;
    *updated = strtoll(val + 2, &end, 10);
    if (*end != ' ')
        return -1;
    const char *d = end + 1;
    size_t dl = strcspn(d, " ");
    if (dl == 0 || dl >= 16 || d[dl] != ' ')
        return -1;
    memcpy(dsn, d, dl);
    dsn[dl] = 0;
    if (strcmp(dsn, "-") == 0)
        dsn[0] = 0;
    *text = d + dl + 1;
    return 0;
}

void verify_probe_sender(const params_t *p, long long now, buf_t *out)
{
    const char *s = param_str(p, PARAM_address_verify_sender);
    if (!s || !*s || strcmp(s, "<>") == 0)
        return;
    const char *at = strrchr(s, '@');
    size_t llen = at ? (size_t)(at - s) : strlen(s);
    buf_append(out, s, llen);
    long long ttl = param_int(p, PARAM_address_verify_sender_ttl);
    /* A changing local part: a probe sender that spammers put on their
     * lists stops working after a while (Postfix appends the time too). */
    if (ttl > 0)
        buf_printf(out, "%lld", now / ttl);
    buf_printf(out, "@%s", at ? at + 1 : param_str(p, PARAM_myorigin));
}

/* ----------------------------------------------------- memory cache */

static unsigned mem_bucket(const char *addr) { return hash_str(HASH_INIT, addr) % MEM_BUCKETS; }

static void mentry_free(mentry_t *e)
{
    free(e->addr);
    free(e->text);
    free(e);
}

static mentry_t *mem_find(verify_t *v, const char *addr, long long now)
{
    for (mentry_t **pp = &v->mem[mem_bucket(addr)]; *pp;) {
        mentry_t *e = *pp;
        if (e->expires <= now) {
            *pp = e->next;
            mentry_free(e);
            v->nmem--;
            continue;
        }
        if (strcmp(e->addr, addr) == 0)
            return e;
        pp = &e->next;
    }
    return NULL;
}

/* Room for one more: drop expired entries, else whole buckets from a
 * rotating start (a crude but bounded eviction: this cache is the
 * fallback when no store is configured). */
static void mem_make_room(verify_t *v, long long now)
{
    static unsigned rot;
    if (v->nmem < MEM_MAX)
        return;
    for (unsigned b = 0; b < MEM_BUCKETS; b++) {
        for (mentry_t **pp = &v->mem[b]; *pp;) {
            mentry_t *e = *pp;
            if (e->expires <= now) {
                *pp = e->next;
                mentry_free(e);
                v->nmem--;
            } else {
                pp = &e->next;
            }
        }
    }
    while (v->nmem >= MEM_MAX) {
        unsigned b = rot++ % MEM_BUCKETS;
        while (v->mem[b]) {
            mentry_t *e = v->mem[b];
            v->mem[b] = e->next;
            mentry_free(e);
            v->nmem--;
        }
    }
}

static void mem_put(verify_t *v, const char *addr, verify_status_t st, long long now, long long ttl,
                    const char *dsn, const char *text)
{
    mentry_t *e = mem_find(v, addr, now);
    if (!e) {
        mem_make_room(v, now);
        e = xcalloc(1, sizeof *e);
        e->addr = xstrdup(addr);
        unsigned b = mem_bucket(addr);
        e->next = v->mem[b];
        v->mem[b] = e;
        v->nmem++;
    }
    e->status = st;
    e->updated = now;
    e->expires = now + ttl;
    str_copy(e->dsn, dsn ? dsn : "", sizeof e->dsn);
    free(e->text);
    e->text = xstrdup(text ? text : "");
}

static void mem_clear(verify_t *v)
{
    for (unsigned b = 0; b < MEM_BUCKETS; b++) {
        while (v->mem[b]) {
            mentry_t *e = v->mem[b];
            v->mem[b] = e->next;
            mentry_free(e);
        }
    }
    v->nmem = 0;
}

/* ------------------------------------------------------------ queries */

static void vq_unlink(vq_t *q)
{
    verify_t *v = q->v;
    if (q->prev)
        q->prev->next = q->next;
    else if (v->queries == q)
        v->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void vq_free(vq_t *q)
{
    if (q->sreq)
        store_cancel(q->sreq);
    if (q->ev)
        event_free(q->ev);
    free(q->text);
    free(q->addr);
    free(q->asked);
    free(q);
}

/* The answer event, or the poll deadline: nothing came in time. */
static void vq_fire(evutil_socket_t fd, short what, void *arg)
{
    vq_t *q = arg;
    (void)fd;
    (void)what;
    if (!q->answered) {
        q->res.status = VR_IN_PROGRESS;
        q->res.text = "";
        q->res.dsn[0] = 0;
    }
    vq_unlink(q);
    q->cb(q->arg, &q->res);
    vq_free(q);
}

/* Settle q's answer; the callback runs from the loop. */
static void vq_answer(vq_t *q, verify_status_t st, const char *dsn, const char *text)
{
    if (q->answered)
        return;
    q->answered = true;
    q->probe = NULL;
    q->res.status = st;
    str_copy(q->res.dsn, dsn ? dsn : "", sizeof q->res.dsn);
    q->text = xstrdup(text ? text : "");
    q->res.text = q->text;
    evtimer_del(q->ev);
    event_active(q->ev, EV_TIMEOUT, 0);
}

/* -------------------------------------------------------------- probes */

static probe_t *probe_find(verify_t *v, const char *addr)
{
    for (probe_t *p = v->probes; p; p = p->next)
        if (strcmp(p->addr, addr) == 0)
            return p;
    return NULL;
}

static unsigned domain_running(const verify_t *v, const char *domain)
{
    unsigned n = 0;
    for (const probe_t *p = v->probes; p; p = p->next)
        if (p->running && strcmp(p->domain, domain) == 0)
            n++;
    return n;
}

static void probe_unlink(probe_t *p)
{
    verify_t *v = p->v;
    if (p->prev)
        p->prev->next = p->next;
    else if (v->probes == p)
        v->probes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

static void probe_free(probe_t *p)
{
    free(p->addr);
    free(p->asked);
    free(p->domain);
    free(p->sender);
    free(p->nexthop);
    free(p);
}

static void set_done(void *arg, const store_result_t *r)
{
    (void)arg;
    if (r->status == ST_ERROR)
        log_warn("verify", "cannot save a verification result: %s", r->error ? r->error : "state store error");
}

/* Remember a result as verify(8) would: positive ones always, negative
 * and temporary ones only with address_verify_negative_cache, and never
 * over a positive entry that a failed re-probe meant to refresh. */
static void cache_result(verify_t *v, const probe_t *p, verify_status_t st, const char *dsn, const char *text)
{
    bool ok = st == VR_DELIVERABLE;
    if (!ok && (!v->neg_cache || p->refresh_ok))
        return;
    long long now = (long long)time(NULL);
    long long ttl = ok ? v->pos_expire : v->neg_expire;
    if (!v->store) {
        mem_put(v, p->addr, st, now, ttl, dsn, text);
        return;
    }
    buf_t key = BUF_INIT, val = BUF_INIT;
    buf_printf(&key, KEY_PREFIX "%s", p->addr);
    verify_encode(&val, st, now, dsn, text);
    store_set(v->store, buf_cstr(&key), val.data, val.len, ttl > 0xffffffffLL ? 0xffffffffu : (unsigned)ttl,
              set_done, NULL);
    buf_free(&key);
    buf_free(&val);
}

static void verify_final_free(verify_t *v);

/* A probe's result: cache it, answer every query that waits for it, let
 * the next probe of its domain go. */
static void probe_finish(probe_t *p, verify_status_t st, const char *dsn, const char *text, bool cache)
{
    verify_t *v = p->v;
    bool was_running = p->running;
    if (p->running) {
        p->running = false;
        v->running--;
    }
    probe_unlink(p);
    if (v->closing) {
        probe_free(p);
        if (v->running == 0)
            verify_final_free(v);
        return;
    }
    log_info("verify", "<%s>: %s%s%s", p->addr,
             st == VR_DELIVERABLE ? "deliverable" : st == VR_UNDELIVERABLE ? "undeliverable" : "temporary failure",
             text && *text ? ": " : "", text ? text : "");
    if (cache)
        cache_result(v, p, st, dsn, text);
    for (vq_t *q = v->queries; q; q = q->next)
        if (q->probe == p)
            vq_answer(q, st, dsn, text);
    if (was_running) {
        for (probe_t *n = v->probes; n; n = n->next) {
            if (n->queued && strcmp(n->domain, p->domain) == 0) {
                n->queued = false;
                v->queued--;
                probe_launch(n);
                break;
            }
        }
    }
    probe_free(p);
}

static void probe_done(smtpc_request_t *req, void *arg)
{
    probe_t *p = arg;
    smtpc_rcpt_t *r = &req->rcpts[0];
    verify_status_t st = r->status == SMTPC_SENT     ? VR_DELIVERABLE
                         : r->status == SMTPC_BOUNCE ? VR_UNDELIVERABLE
                                                     : VR_TEMPFAIL;
    char *text = xstrdup(st == VR_DELIVERABLE ? "" : r->text ? r->text : "");
    char dsn[16];
    str_copy(dsn, r->dsn, sizeof dsn);
    smtpc_request_clear(req);
    probe_finish(p, st, dsn, text, true);
    free(text);
}

/* "5.1.1 text" -> dsn and text, as the error and retry transports read
 * their next hop; def when it names no code or one of the wrong class. */
static void split_dsn(const char *s, const char *def, char dsn[16], const char **text)
{
    str_copy(dsn, def, 16);
    *text = s;
    if ((s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.') {
        size_t n = strcspn(s, " \t");
        if (n < 16 && s[0] == def[0]) {
            memcpy(dsn, s, n);
            dsn[n] = 0;
        }
        s += n;
        while (*s == ' ' || *s == '\t')
            s++;
        *text = s;
    }
}

/* Route the address and answer what needs no connection; else start
 * the SMTP probe, or queue it behind the domain's limit. */
static void probe_launch(probe_t *p)
{
    verify_t *v = p->v;
    route_t rt;
    if (route_recipient(v->router, p->asked, &rt) != 0) {
        probe_finish(p, VR_TEMPFAIL, "4.3.0", rt.nexthop, false);
        return;
    }
    const transport_t *t = config_transport(v->cfg, rt.transport);
    if (!t) {
        buf_t why = BUF_INIT;
        buf_printf(&why, "mail transport unavailable (%s: no transport \"%s\")", rt.origin, rt.transport);
        probe_finish(p, VR_TEMPFAIL, "4.3.5", buf_cstr(&why), false);
        buf_free(&why);
        return;
    }
    char dsn[16];
    const char *text;
    switch (t->kind) {
    case TK_LOCAL:
        /* moat's local delivery takes every local part */
        probe_finish(p, VR_DELIVERABLE, "2.0.0", "", false);
        return;
    case TK_DISCARD:
        probe_finish(p, VR_DELIVERABLE, "2.0.0", "", false);
        return;
    case TK_ERROR:
        split_dsn(rt.nexthop, "5.0.0", dsn, &text);
        probe_finish(p, VR_UNDELIVERABLE, dsn, *text ? text : "delivery failed", false);
        return;
    case TK_RETRY:
        split_dsn(rt.nexthop, "4.0.0", dsn, &text);
        probe_finish(p, VR_TEMPFAIL, dsn, *text ? text : "delivery deferred", false);
        return;
    case TK_SMTP:
    case TK_LMTP:
        break;
    }
    if (domain_running(v, p->domain) >= v->domain_limit) {
        p->queued = true;
        v->queued++;
        return;
    }
    buf_t sender = BUF_INIT;
    verify_probe_sender(v->p, (long long)time(NULL), &sender);
    free(p->sender);
    p->sender = buf_steal(&sender);
    free(p->nexthop);
    p->nexthop = xstrdup(rt.nexthop);
    memset(&p->req, 0, sizeof p->req);
    memset(&p->rcpt, 0, sizeof p->rcpt);
    p->rcpt.addr = p->asked;
    p->req.queue_id = "verify";
    p->req.sender = p->sender;
    p->req.body_type = "";
    p->req.rcpts = &p->rcpt;
    p->req.nrcpt = 1;
    p->req.transport = t;
    p->req.nexthop = p->nexthop;
    p->req.dns = v->dns;
    p->req.self = &v->self;
    p->req.probe = true;
    p->req.done = probe_done;
    p->req.arg = p;
    p->running = true;
    v->running++;
    log_debug("verify", "<%s>: probe via %s:%s (%s), sender <%s>", p->addr, rt.transport, rt.nexthop, rt.origin,
              p->sender);
    smtpc_deliver(v->smtpc, &p->req);
}

/* A probe for addr: the one in flight, else a new one. */
static probe_t *probe_get(verify_t *v, const char *addr, const char *asked, bool refresh_ok, bool *fresh)
{
    probe_t *p = probe_find(v, addr);
    *fresh = p == NULL;
    if (p)
        return p;
    p = xcalloc(1, sizeof *p);
    p->v = v;
    p->addr = xstrdup(addr);
    p->asked = xstrdup(asked);
    const char *at = strrchr(addr, '@');
    p->domain = xstrdup(at ? at + 1 : "");
    p->refresh_ok = refresh_ok;
    p->next = v->probes;
    if (v->probes)
        v->probes->prev = p;
    v->probes = p;
    return p;
}

/* ------------------------------------------------------------ decisions */

/* What the cache said (found false: nothing usable) -> the answer, a
 * background re-probe, or a wait for a probe. */
static void vq_decide(vq_t *q, bool found, verify_status_t st, long long updated, const char *dsn,
                      const char *text)
{
    verify_t *v = q->v;
    long long now = (long long)time(NULL);
    if (found) {
        bool ok = st == VR_DELIVERABLE;
        long long age = now - updated;
        if (age < (ok ? v->pos_expire : v->neg_expire)) {
            if (age >= (ok ? v->pos_refresh : v->neg_refresh)) {
                bool fresh;
                probe_t *p = probe_get(v, q->addr, q->asked, ok, &fresh);
                if (fresh)
                    probe_launch(p);
            }
            vq_answer(q, st, dsn, text);
            return;
        }
    }
    bool fresh;
    probe_t *p = probe_get(v, q->addr, q->asked, false, &fresh);
    q->probe = p;
    if (fresh)
        probe_launch(p);   /* may answer q at once (no connection needed) */
    if (q->answered)
        return;
    if (v->wait <= 0) {
        event_active(q->ev, EV_TIMEOUT, 0);
        return;
    }
    struct timeval tv = {(time_t)v->wait, 0};
    evtimer_add(q->ev, &tv);
}

static void vq_got(void *arg, const store_result_t *r)
{
    vq_t *q = arg;
    q->sreq = NULL;
    verify_status_t st;
    long long updated;
    char dsn[16];
    const char *text;
    if (r->status == ST_ERROR) {
        /* Verification still works without its cache: probe. */
        log_warn("verify", "<%s>: state store %s: %s", q->addr, store_spec(q->v->store),
                 r->error ? r->error : "error");
        vq_decide(q, false, VR_TEMPFAIL, 0, "", "");
        return;
    }
    if (r->status == ST_OK && verify_decode(r->value, &st, &updated, dsn, &text) == 0) {
        vq_decide(q, true, st, updated, dsn, text);
        return;
    }
    if (r->status == ST_OK)
        log_warn("verify", "<%s>: malformed cache entry ignored", q->addr);
    vq_decide(q, false, VR_TEMPFAIL, 0, "", "");
}

void *verify_query(verify_t *v, const char *addr, verify_cb cb, void *arg)
{
    vq_t *q = xcalloc(1, sizeof *q);
    q->v = v;
    q->addr = xstrdup(addr ? addr : "");
    q->asked = xstrdup(q->addr);
    str_lower(q->addr);
    q->cb = cb;
    q->arg = arg;
    q->ev = evtimer_new(v->base, vq_fire, q);
    q->next = v->queries;
    if (v->queries)
        v->queries->prev = q;
    v->queries = q;
    if (v->store) {
        buf_t key = BUF_INIT;
        buf_printf(&key, KEY_PREFIX "%s", q->addr);
        q->sreq = store_get(v->store, buf_cstr(&key), vq_got, q);
        buf_free(&key);
        return q;
    }
    long long now = (long long)time(NULL);
    mentry_t *e = mem_find(v, q->addr, now);
    if (e)
        vq_decide(q, true, e->status, e->updated, e->dsn, e->text);
    else
        vq_decide(q, false, VR_TEMPFAIL, 0, "", "");
    return q;
}

void verify_cancel(void *handle)
{
    vq_t *q = handle;
    if (!q)
        return;
    vq_unlink(q);
    vq_free(q);
}

unsigned verify_probes_running(const verify_t *v) { return v ? v->running : 0; }

unsigned verify_probes_queued(const verify_t *v) { return v ? v->queued : 0; }

/* ---------------------------------------------------------- life cycle */

/* "This is me" from cfg's services (the queue manager's rule). */
static void self_from_config(verify_t *v)
{
    const params_t *p = v->p;
    v->myhostname = xstrdup(param_str(p, PARAM_myhostname));
    /* "This is me", for the client's loop detection. */
    v->listen = config_listen_addrs(v->cfg, &v->nlisten);
    v->self.myhostname = v->myhostname;
    v->self.listen = (const char *const *)v->listen;
    v->self.nlisten = v->nlisten;
}

verify_t *verify_new(struct event_base *base, pool_t *pool, dns_t *dns, config_t *cfg, store_t *store,
                     const smtpc_self_t *self, buf_t *err)
{
    router_t *router = router_new_probe(cfg, err);
    if (!router)
        return NULL;
    verify_t *v = xcalloc(1, sizeof *v);
    v->base = base;
    v->pool = pool;
    v->dns = dns ? dns_ref(dns) : NULL;
    v->cfg = config_ref(cfg);
    v->p = config_main(cfg);
    v->router = router;
    const char *map = param_str(v->p, PARAM_address_verify_map);
    v->store = map && *map ? store : NULL;
    v->pos_expire = param_int(v->p, PARAM_address_verify_positive_expire_time);
    v->pos_refresh = param_int(v->p, PARAM_address_verify_positive_refresh_time);
    v->neg_expire = param_int(v->p, PARAM_address_verify_negative_expire_time);
    v->neg_refresh = param_int(v->p, PARAM_address_verify_negative_refresh_time);
    v->neg_cache = param_bool(v->p, PARAM_address_verify_negative_cache);
    long long polls = param_int(v->p, PARAM_address_verify_poll_count);
    v->wait = (polls > 1 ? polls - 1 : 0) * param_int(v->p, PARAM_address_verify_poll_delay);
    long long lim = param_int(v->p, PARAM_address_verify_probe_domain_limit);
    v->domain_limit = lim < 1 ? 1 : lim > 100000 ? 100000 : (unsigned)lim;
    if (self)
        v->self = *self;
    else
        self_from_config(v);
    v->smtpc = smtpc_new(base, pool);
    return v;
}

static void verify_final_free(verify_t *v)
{
    router_free(&v->router);
    dns_unref(&v->dns);
    config_free(&v->cfg);
    config_listen_free(v->listen, v->nlisten);
    free(v->myhostname);
    free(v);
}

void verify_free(verify_t **pv)
{
    verify_t *v = *pv;
    *pv = NULL;
    if (!v)
        return;
    v->closing = true;
    while (v->queries) {
        vq_t *q = v->queries;
        vq_unlink(q);
        vq_free(q);
    }
    for (probe_t *p = v->probes; p;) {
        probe_t *next = p->next;
        if (!p->running) {
            probe_unlink(p);
            probe_free(p);
        }
        p = next;
    }
    v->queued = 0;
    mem_clear(v);
    v->store = NULL;
    smtpc_free(&v->smtpc);   /* probes in flight end on their own */
    if (v->running == 0)
        verify_final_free(v);
}
