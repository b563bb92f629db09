/*
 * smtpc: the SMTP and LMTP client (contract in smtpc.h; behaviour, reply
 * texts and parameters in docs/smtp-client.md).  This part owns a
 * request's life: smtpc_deliver checks the next hop and takes a cached
 * connection or asks smtpc-dns.c for addresses; smtpc_try_next walks
 * them (smtpc-session.c talks); smtpc_finalize gives every open
 * recipient its deferral and schedules done() on a loop event.  It also
 * owns the connection cache and the client itself.
 *
 * One delivery (dlv_t) walks: next hop -> TLS policy -> cached connection
 * (RSET probe) or addresses (MX, then A/AAAA) -> connections in order ->
 * handshake (STARTTLS as the policy says) -> transaction -> results.  A
 * connection belongs to one delivery at a time, or to the cache while
 * idle.
 *
 * Ownership: the client owns its cached connections and frees itself
 * after smtpc_free once the last delivery is done.  done() runs after
 * the delivery's state is gone, never from inside smtpc_deliver.
 *
 * Never: report a recipient twice, call done() twice, or free a delivery
 * while a content job on the pool still points at it.
 */
#include "queue/smtpc-int.h"

#include "core/log.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

size_t smtpc_pending(const dlv_t *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->req->nrcpt; i++)
        if (!d->final[i])
            n++;
    return n;
}

void smtpc_rcpt_set(dlv_t *d, size_t i, int status, const char *dsn, const char *text, const char *reply,
                    bool final)
{
    smtpc_rcpt_t *r = &d->req->rcpts[i];
    if (d->final[i])
        return;
    r->status = status;
    str_copy(r->dsn, dsn, sizeof r->dsn);
    xfree(&r->text);
    xfree(&r->reply);
    r->text = xstrdup(text);
    r->reply = reply ? xstrdup(reply) : NULL;
    d->final[i] = final;
}

/* A failure for every recipient without a final status: 5xx bounces
 * them for good; 4xx leaves them for the next server (the text stays
 * if no server does better). */
void smtpc_fail_pending(dlv_t *d, const char *dsn, const char *text, const char *reply)
{
    bool hard = dsn[0] == '5';
    for (size_t i = 0; i < d->req->nrcpt; i++)
        smtpc_rcpt_set(d, i, hard ? SMTPC_BOUNCE : SMTPC_DEFER, dsn, text, reply, hard);
}

/* The next server, or the end. */
void smtpc_try_next(dlv_t *d)
{
    long long slimit = param_int(d->p, PARAM_smtp_mx_session_limit);
    while (!d->no_more && smtpc_pending(d) > 0 && d->it < d->nt &&
           (slimit <= 0 || d->sessions < (unsigned long long)slimit)) {
        const target_t *t = &d->t[d->it++];
        if (smtpc_conn_open(d, t) == 0)
            return;
        buf_t text = BUF_INIT;
        int e = errno;
        if (t->unix_path)
            buf_printf(&text, "connect to %s[%s]: %s", t->name, t->addr, strerror(e));
        else
            buf_printf(&text, "connect to %s[%s]:%d: %s", t->name, t->addr, t->port, strerror(e));
        smtpc_fail_pending(d, "4.4.1", buf_cstr(&text), NULL);
        log_debug(d->prog, "%s: %s", d->req->queue_id, buf_cstr(&text));
        buf_free(&text);
    }
    smtpc_finalize(d);
}

/* Fail every recipient for a reason found before any connection. */
void smtpc_fail_all(dlv_t *d, const char *dsn, const char *text)
{
    smtpc_fail_pending(d, dsn, text, NULL);
    d->no_more = true;
    smtpc_finalize(d);
}

static void dlv_free(dlv_t *d)
{
    smtpc_txn_clear(d);
    for (size_t i = 0; i < d->nhosts; i++) {
        dns_answer_unref(&d->hosts[i].a4);
        dns_answer_unref(&d->hosts[i].a6);
    }
    free(d->hosts);
    free(d->t);
    free(d->acc);
    free(d->final);
    free(d->key);
    tls_client_unref(&d->tc);
    buf_free(&d->whole);
    if (d->fd >= 0)
        close(d->fd);
    if (d->fin)
        event_free(d->fin);
    dns_unref(&d->dns);
    free(d);
}

static void client_free(smtpc_t *c)
{
    tls_client_cache_free(&c->tlsc);
    for (size_t i = 0; i < c->nlocal; i++)
        free(c->local_addrs[i]);
    free(c->local_addrs);
    free(c);
}

static void fin_cb(evutil_socket_t fd, short what, void *arg)
{
    dlv_t *d = arg;
    smtpc_t *c = d->c;
    smtpc_request_t *req = d->req;
    (void)fd;
    (void)what;
    dlv_free(d);
    req->priv = NULL;
    bool closing = c->closing;
    c->busy--;
    bool last = closing && c->busy == 0;
    req->done(req, req->arg);
    /* smtpc_free already ran: the last delivery frees the client. */
    if (last)
        client_free(c);
}

void smtpc_finalize(dlv_t *d)
{
    if (d->finished)
        return;
    if (d->njobs > 0) {
        d->want_finish = true;
        return;
    }
    d->finished = true;
    if (d->conn) {
        conn_t *conn = d->conn;
        d->conn = NULL;
        conn->broken = true;
        smtpc_conn_close(conn);
    }
    smtpc_request_t *req = d->req;
    bool all_defer = true;
    for (size_t i = 0; i < req->nrcpt; i++) {
        smtpc_rcpt_t *r = &req->rcpts[i];
        if (!d->final[i]) {
            r->status = SMTPC_DEFER;
            if (!r->text) {
                r->text = xstrdup("delivery temporarily suspended: no server could be tried");
                str_copy(r->dsn, "4.4.1", sizeof r->dsn);
            }
        }
        if (r->status != SMTPC_DEFER)
            all_defer = false;
    }
    req->dest_failed = !d->any_ready && all_defer && req->nrcpt > 0;
    req->t_end = now_usec();
    if (!d->any_ready)
        req->t_conn = req->t_end;
    event_active(d->fin, 0, 0);
}

smtpc_t *smtpc_new(struct event_base *base, pool_t *pool)
{
    smtpc_t *c = xcalloc(1, sizeof *c);
    c->base = base;
    c->pool = pool;
    c->tlsc = tls_client_cache_new();
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) == 0) {
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
            if (!i->ifa_addr)
                continue;
            char buf[INET6_ADDRSTRLEN];
            const void *src = NULL;
            if (i->ifa_addr->sa_family == AF_INET)
                src = &((struct sockaddr_in *)i->ifa_addr)->sin_addr;
            else if (i->ifa_addr->sa_family == AF_INET6)
                src = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
            if (!src || !inet_ntop(i->ifa_addr->sa_family, src, buf, sizeof buf))
                continue;
            c->local_addrs = xrealloc(c->local_addrs, (c->nlocal + 1) * sizeof *c->local_addrs);
            c->local_addrs[c->nlocal++] = xstrdup(buf);
        }
        freeifaddrs(ifa);
    }
    c->rng = (unsigned long long)now_usec() ^ ((unsigned long long)getpid() << 32) ^ 0x9e3779b97f4a7c15ULL;
    return c;
}

void smtpc_free(smtpc_t **cp)
{
    smtpc_t *c = *cp;
    *cp = NULL;
    if (!c)
        return;
    c->closing = true;
    while (c->cache)
        smtpc_conn_quit(c->cache);
    if (c->busy == 0)
        client_free(c);
}

unsigned smtpc_busy(const smtpc_t *c) { return c ? c->busy : 0; }

unsigned smtpc_cached(const smtpc_t *c) { return c ? c->ncached : 0; }

void smtpc_request_clear(smtpc_request_t *req)
{
    for (size_t i = 0; i < req->nrcpt; i++) {
        xfree(&req->rcpts[i].text);
        xfree(&req->rcpts[i].reply);
    }
}

/* A short fingerprint of a policy: cached connections are reused only
 * under the policy they were made with. */
static unsigned policy_sig(const tls_policy_t *pol)
{
    unsigned h = hash_str(HASH_INIT, tls_level_name(pol->level));
    for (size_t i = 0; i < pol->nmatch; i++)
        h = hash_str_lc(h, pol->match[i]);
    h = hash_str(h, pol->ciphers);
    return h ^ (unsigned)(pol->proto_min * 31 + pol->proto_max);
}

/* The next hop's TLS policy (tls/tls_client.h).  -1 when the delivery
 * already failed: an invalid policy entry or parameter, or a table that
 * cannot be read, defers as Postfix does, never weakening the policy. */
static int tls_start(dlv_t *d)
{
    if (d->unix_path) {
        d->pol.level = TLS_LEV_NONE;
        d->tls_sig = policy_sig(&d->pol);
        return 0;
    }
    d->tc = tls_client_get(d->c->tlsc, d->p, d->prog);
    buf_t why = BUF_INIT;
    if (tls_client_policy(d->tc, d->p, d->req->nexthop, d->lmtp, &d->pol, &why) < 0) {
        log_warn(d->prog, "%s: TLS policy lookup for %s: %s", d->req->queue_id, d->req->nexthop, buf_cstr(&why));
        buf_free(&why);
        smtpc_fail_all(d, "4.7.5", "client TLS configuration problem");
        return -1;
    }
    buf_free(&why);
    d->tls_sig = policy_sig(&d->pol);
    if (d->pol.level != TLS_LEV_NONE)
        log_debug(d->prog, "%s: TLS level %s for %s (%s)", d->req->queue_id, tls_level_name(d->pol.level),
                  d->req->nexthop, d->pol.source);
    return 0;
}

/* A cached connection for this delivery's key, within its reuse limits. */
static conn_t *cache_take(dlv_t *d)
{
    smtpc_t *c = d->c;
    for (conn_t *conn = c->cache; conn;) {
        conn_t *next = conn->next;
        /* The same policy too: a connection made in plaintext, or checked
         * against other names, must not carry mail a stricter one covers. */
        if (conn->p == d->p && conn->tls_sig == d->tls_sig && strcmp(conn->key, d->key) == 0) {
            smtpc_cache_remove(conn);
            long long age = (now_usec() - conn->created) / 1000000;
            if (age >= param_int(d->p, PARAM_smtp_connection_reuse_time_limit) || !conn->bev) {
                smtpc_conn_quit(conn);
            } else {
                return conn;
            }
        }
        conn = next;
    }
    return NULL;
}

void smtpc_deliver(smtpc_t *c, smtpc_request_t *req)
{
    dlv_t *d = xcalloc(1, sizeof *d);
    d->c = c;
    d->req = req;
    d->fd = -1;
    req->priv = d;
    c->busy++;
    d->fin = event_new(c->base, -1, 0, fin_cb, d);
    d->final = xcalloc(req->nrcpt + 1, sizeof *d->final);
    d->p = req->transport ? req->transport->params : NULL;
    d->lmtp = req->transport && req->transport->kind == TK_LMTP;
    d->prog = d->lmtp ? "lmtp" : "smtp";
    d->dns = dns_ref(req->dns);
    str_copy(req->relay, "none", sizeof req->relay);
    req->tls[0] = 0;
    req->dest_failed = false;
    req->reused = false;
    req->t_start = now_usec();
    req->t_conn = req->t_end = 0;
    for (size_t i = 0; i < req->nrcpt; i++) {
        req->rcpts[i].status = SMTPC_DEFER;
        req->rcpts[i].dsn[0] = 0;
        req->rcpts[i].text = NULL;
        req->rcpts[i].reply = NULL;
    }
    if (!d->p) {
        smtpc_fail_all(d, "4.3.5", "mail transport unavailable");
        return;
    }
    if (c->closing) {
        smtpc_fail_all(d, "4.3.0", "mail delivery is shutting down");
        return;
    }
    buf_t err = BUF_INIT;
    if (smtpc_parse_nexthop(req->nexthop, d->lmtp, d->host, sizeof d->host, d->port, sizeof d->port, &d->mx,
                            &d->unix_path, &err) < 0) {
        buf_t text = BUF_INIT;
        buf_printf(&text, "bad next hop \"%s\": %s", req->nexthop ? req->nexthop : "", buf_cstr(&err));
        log_warn(d->prog, "%s: %s", req->queue_id, buf_cstr(&text));
        smtpc_fail_all(d, "4.3.5", buf_cstr(&text));
        buf_free(&text);
        buf_free(&err);
        return;
    }
    buf_free(&err);
    if (!d->unix_path) {
        const char *pt = d->port[0] ? d->port
                                    : param_str(d->p, d->lmtp ? PARAM_lmtp_tcp_port : PARAM_smtp_tcp_port);
        d->portnum = smtpc_port_number(pt);
        if (d->portnum < 0) {
            buf_t text = BUF_INIT;
            buf_printf(&text, "bad next hop \"%s\": unknown port \"%s\"", req->nexthop, pt ? pt : "");
            smtpc_fail_all(d, "4.3.5", buf_cstr(&text));
            buf_free(&text);
            return;
        }
    }
    if (tls_start(d) < 0)
        return;
    buf_t key = BUF_INIT;
    buf_printf(&key, "%s\n%s", req->transport->name ? req->transport->name : "", req->nexthop);
    d->key = buf_steal(&key);
    conn_t *conn = cache_take(d);
    if (conn) {
        smtpc_probe(d, conn);
        return;
    }
    smtpc_resolve(d);
}
