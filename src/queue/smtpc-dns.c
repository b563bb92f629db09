/*
 * smtpc-dns: the servers of a next hop, for the SMTP/LMTP client.  A
 * literal address or a Unix socket needs no DNS; a host name is looked
 * up (A and AAAA); a domain gets its MX records (equal preferences
 * shuffled), then each MX host's addresses, or its own addresses when it
 * has no MX.  Null MX, NXDOMAIN, temporary failures and MX hosts without
 * addresses become results here, and so do mail loops: an MX host named
 * myhostname, or an address and port moat listens on, takes every MX no
 * better than itself out of the list (Postfix's rule).
 *
 * Owns the delivery's host list and the DNS answers it keeps until the
 * address list is built.  Never: connect, or ask libunbound anything
 * directly (dns_lookup only; a cached answer calls back at once, which
 * every callback here copes with).
 */
#include "queue/smtpc-int.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static void add_target(dlv_t *d, const char *name, const char *addr, int port, unsigned pref, bool unix_path)
{
    d->t = xrealloc(d->t, (d->nt + 1) * sizeof *d->t);
    target_t *t = &d->t[d->nt++];
    memset(t, 0, sizeof *t);
    str_copy(t->name, name, sizeof t->name);
    str_copy(t->addr, addr, sizeof t->addr);
    t->port = port;
    t->pref = pref;
    t->unix_path = unix_path;
}

static void loop_bounce(dlv_t *d)
{
    buf_t text = BUF_INIT;
    buf_printf(&text, "mail for %s loops back to myself", d->req->nexthop);
    smtpc_fail_all(d, "5.4.6", buf_cstr(&text));
    buf_free(&text);
}

static bool is_self(const dlv_t *d, const char *addr)
{
    return !d->lmtp && smtpc_is_self_addr(d->req->self, addr, d->portnum, (const char *const *)d->c->local_addrs,
                                          d->c->nlocal);
}

/* Drop targets at or below the preference of the first one that is us
 * (Postfix's rule: never relay to a worse MX than ourselves).  false
 * when that leaves nothing: the mail loops. */
static bool drop_self_targets(dlv_t *d)
{
    bool found = false;
    unsigned self_pref = 0;
    for (size_t i = 0; i < d->nt; i++) {
        if (is_self(d, d->t[i].addr) && (!found || d->t[i].pref < self_pref)) {
            found = true;
            self_pref = d->t[i].pref;
        }
    }
    if (!found)
        return true;
    size_t k = 0;
    for (size_t i = 0; i < d->nt; i++)
        if (d->t[i].pref < self_pref)
            d->t[k++] = d->t[i];
    d->nt = k;
    return k > 0;
}

static void name_error_text(buf_t *out, const char *name, const char *type, const dns_answer_t *a)
{
    buf_printf(out, "Host or domain name not found. Name service error for name=%s type=%s: ", name, type);
    if (!a || a->status == DNS_NXDOMAIN)
        buf_puts(out, "Host not found");
    else if (a->status == DNS_NODATA)
        buf_puts(out, "Host found but no data record of requested type");
    else
        buf_printf(out, "Host not found, try again (%s)", a->error[0] ? a->error : "temporary failure");
}

static void hosts_done(dlv_t *d)
{
    bool tempfail = false;
    buf_t err = BUF_INIT;
    for (size_t i = 0; i < d->nhosts; i++) {
        mxhost_t *h = &d->hosts[i];
        size_t before = d->nt;
        dns_answer_t *as[2] = {h->a4, h->a6};
        for (int k = 0; k < 2; k++) {
            if (as[k] && as[k]->status == DNS_OK)
                for (size_t j = 0; j < as[k]->n; j++)
                    add_target(d, h->name, as[k]->rr[j].data, d->portnum, h->pref, false);
        }
        if (d->nt == before) {
            /* No address: skip the host; remember the first reason. */
            const dns_answer_t *why = h->a4;
            if (h->a4 && h->a4->status != DNS_TEMPFAIL && h->a6 && h->a6->status == DNS_TEMPFAIL)
                why = h->a6;
            if (why && why->status == DNS_TEMPFAIL)
                tempfail = true;
            if (!err.len)
                name_error_text(&err, h->name, why == h->a6 ? "AAAA" : "A", why);
        }
    }
    for (size_t i = 0; i < d->nhosts; i++) {
        dns_answer_unref(&d->hosts[i].a4);
        dns_answer_unref(&d->hosts[i].a6);
    }
    bool had = d->nt > 0;
    if (!drop_self_targets(d)) {
        buf_free(&err);
        loop_bounce(d);
        return;
    }
    if (!had) {
        if (tempfail)
            smtpc_fail_all(d, "4.4.3", buf_cstr(&err));
        else if (d->mx && param_bool(d->p, PARAM_smtp_defer_if_no_mx_address_found))
            smtpc_fail_all(d, "4.4.4", buf_cstr(&err));
        else
            smtpc_fail_all(d, "5.4.4", buf_cstr(&err));
        buf_free(&err);
        return;
    }
    buf_free(&err);
    long long alimit = param_int(d->p, PARAM_smtp_mx_address_limit);
    if (alimit > 0 && d->nt > (size_t)alimit)
        d->nt = (size_t)alimit;
    smtpc_try_next(d);
}

static void host_cb(dns_answer_t *a, bool from_cache, void *arg)
{
    dq_t *q = arg;
    dlv_t *d = q->d;
    mxhost_t *h = &d->hosts[q->host];
    (void)from_cache;
    if (a->type == DNS_T_AAAA)
        h->a6 = dns_answer_ref(a);
    else
        h->a4 = dns_answer_ref(a);
    free(q);
    if (--d->dns_pending == 0 && !d->dns_issuing)
        hosts_done(d);
}

static void lookup_hosts(dlv_t *d)
{
    d->dns_issuing = true;
    for (size_t i = 0; i < d->nhosts; i++) {
        dns_type_t types[2] = {DNS_T_A, DNS_T_AAAA};
        for (int k = 0; k < 2; k++) {
            dq_t *q = xcalloc(1, sizeof *q);
            q->d = d;
            q->host = i;
            d->dns_pending++;
            dns_lookup(d->dns, types[k], d->hosts[i].name, host_cb, q);
        }
    }
    d->dns_issuing = false;
    if (d->dns_pending == 0)
        hosts_done(d);
}

static void mx_cb(dns_answer_t *a, bool from_cache, void *arg)
{
    dq_t *q = arg;
    dlv_t *d = q->d;
    (void)from_cache;
    free(q);
    d->dns_pending--;
    buf_t text = BUF_INIT;
    switch (a->status) {
    case DNS_OK: {
        if (a->n == 1 && a->rr[0].data[0] == 0) {
            buf_printf(&text, "Domain %s does not accept mail (nullMX)", d->host);
            smtpc_fail_all(d, "5.1.10", buf_cstr(&text));
            break;
        }
        d->hosts = xcalloc(a->n, sizeof *d->hosts);
        for (size_t i = 0; i < a->n; i++) {
            if (!a->rr[i].data[0])
                continue;
            mxhost_t *h = &d->hosts[d->nhosts++];
            str_copy(h->name, a->rr[i].data, sizeof h->name);
            h->pref = a->rr[i].pref;
        }
        /* Equal preferences in random order (RFC 5321 5.1). */
        for (size_t i = 0; i < d->nhosts;) {
            size_t j = i;
            while (j < d->nhosts && d->hosts[j].pref == d->hosts[i].pref)
                j++;
            for (size_t k = j - 1; k > i; k--) {
                unsigned long long *x = &d->c->rng;
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                size_t r = i + (size_t)(*x % (k - i + 1));
                mxhost_t tmp = d->hosts[k];
                d->hosts[k] = d->hosts[r];
                d->hosts[r] = tmp;
            }
            i = j;
        }
        /* An MX host named like us: it and everything no better go. */
        const char *me = d->req->self ? d->req->self->myhostname : NULL;
        if (me && *me) {
            size_t k = 0;
            bool found = false;
            unsigned self_pref = 0;
            for (size_t i = 0; i < d->nhosts; i++) {
                if (str_ieq(d->hosts[i].name, me) && (!found || d->hosts[i].pref < self_pref)) {
                    found = true;
                    self_pref = d->hosts[i].pref;
                }
            }
            for (size_t i = 0; i < d->nhosts; i++)
                if (!found || d->hosts[i].pref < self_pref)
                    d->hosts[k++] = d->hosts[i];
            d->nhosts = k;
            if (found && k == 0) {
                loop_bounce(d);
                break;
            }
        }
        if (d->nhosts == 0) {
            name_error_text(&text, d->host, "MX", NULL);
            smtpc_fail_all(d, "5.4.4", buf_cstr(&text));
            break;
        }
        lookup_hosts(d);
        break;
    }
    case DNS_NODATA:
        /* No MX: the domain's own addresses (RFC 5321 5.1). */
        d->hosts = xcalloc(1, sizeof *d->hosts);
        d->nhosts = 1;
        str_copy(d->hosts[0].name, d->host, sizeof d->hosts[0].name);
        lookup_hosts(d);
        break;
    case DNS_NXDOMAIN:
        name_error_text(&text, d->host, "MX", a);
        smtpc_fail_all(d, "5.4.4", buf_cstr(&text));
        break;
    case DNS_TEMPFAIL:
        name_error_text(&text, d->host, "MX", a);
        smtpc_fail_all(d, "4.4.3", buf_cstr(&text));
        break;
    }
    buf_free(&text);
}

void smtpc_resolve(dlv_t *d)
{
    d->phase = PH_DNS;
    if (d->unix_path) {
        const char *me = d->req->self && d->req->self->myhostname && *d->req->self->myhostname
                             ? d->req->self->myhostname
                             : "localhost";
        buf_t path = BUF_INIT;
        const char *qd = param_str(d->p, PARAM_queue_directory);
        if (d->host[0] != '/' && qd && qd[0] == '/')
            buf_printf(&path, "%s/%s", qd, d->host);
        else
            buf_puts(&path, d->host);
        add_target(d, me, buf_cstr(&path), 0, 0, true);
        buf_free(&path);
        smtpc_try_next(d);
        return;
    }
    unsigned char bin[16];
    if (inet_pton(AF_INET, d->host, bin) == 1 || inet_pton(AF_INET6, d->host, bin) == 1) {
        add_target(d, d->host, d->host, d->portnum, 0, false);
        if (!drop_self_targets(d)) {
            loop_bounce(d);
            return;
        }
        smtpc_try_next(d);
        return;
    }
    if (!d->dns) {
        buf_t text = BUF_INIT;
        buf_printf(&text, "Host or domain name not found. Name service error for name=%s type=%s: no resolver",
                   d->host, d->mx ? "MX" : "A");
        smtpc_fail_all(d, "4.4.3", buf_cstr(&text));
        buf_free(&text);
        return;
    }
    if (d->mx) {
        dq_t *q = xcalloc(1, sizeof *q);
        q->d = d;
        q->host = (size_t)-1;
        d->dns_pending++;
        dns_lookup(d->dns, DNS_T_MX, d->host, mx_cb, q);
        return;
    }
    d->hosts = xcalloc(1, sizeof *d->hosts);
    d->nhosts = 1;
    str_copy(d->hosts[0].name, d->host, sizeof d->hosts[0].name);
    lookup_hosts(d);
}
