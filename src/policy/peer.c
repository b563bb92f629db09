/*
 * peer: the client's names from DNS (see peer.h).  Owns nothing beyond
 * the caller's peer_names_t; all lookups go through the caller's memo, so
 * a session that asks twice sees the same answers.  Never trusts a PTR
 * name that is not a valid host name, or one that looks like an address.
 */
#include "policy/peer.h"

#include "core/buf.h"
#include "core/util.h"
#include "policy/dnsbl.h"
#include "policy/restrict-private.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

void peer_names_unknown(peer_names_t *out)
{
    str_copy(out->name, "unknown", sizeof out->name);
    str_copy(out->reverse, "unknown", sizeof out->reverse);
    out->name_code = out->reverse_code = out->forward_code = 5;
    out->warning[0] = 0;
}

/* Same address, whatever the text form ("::1" and "0::1"). */
static bool same_address(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
        return memcmp(x, y, 4) == 0;
    if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
        return memcmp(x, y, 16) == 0;
    return false;
}

static const dns_answer_t *get(dns_memo_t *m, dns_type_t type, const char *name, buf_t *trace)
{
    dns_how_t how;
    const dns_answer_t *a = dns_memo_get(m, type, name, &how);
    if (a && trace) {
        buf_puts(trace, "  client: ");
        dns_trace_answer(trace, a, &how);
        buf_putc(trace, '\n');
    }
    return a;
}

bool peer_names_lookup(dns_memo_t *m, const char *addr, peer_names_t *out, buf_t *trace)
{
    peer_names_unknown(out);
    bool v6 = strchr(addr, ':') != NULL;
    unsigned char bin[16];
    if (v6 && inet_pton(AF_INET6, addr, bin) == 1 && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)bin))
        v6 = false;
    buf_t q = BUF_INIT;
    if (!dnsbl_query_name_addr(addr, v6 ? "ip6.arpa" : "in-addr.arpa", &q)) {
        buf_free(&q);
        return true;   /* not an address: no names */
    }
    const dns_answer_t *ptr = get(m, DNS_T_PTR, buf_cstr(&q), trace);
    buf_free(&q);
    if (!ptr)
        return false;
    if (ptr->status == DNS_TEMPFAIL) {
        out->name_code = out->reverse_code = out->forward_code = 4;
        return true;
    }
    if (ptr->status != DNS_OK)
        return true;
    /* The first PTR name that is a host name (Postfix takes one). */
    const char *name = NULL;
    for (size_t i = 0; i < ptr->n && !name; i++) {
        const char *p = ptr->rr[i].data;
        if (*p && strlen(p) < sizeof out->name && rs_valid_hostname(p, false, false) && !rs_valid_hostaddr(p))
            name = p;
    }
    if (!name) {
        snprintf(out->warning, sizeof out->warning, "%s: address not listed for a valid host name: %s", addr,
                 ptr->n ? ptr->rr[0].data : "");
        return true;
    }
    str_copy(out->reverse, name, sizeof out->reverse);
    for (char *p = out->reverse; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    out->reverse_code = 0;
    const dns_answer_t *fwd = get(m, v6 ? DNS_T_AAAA : DNS_T_A, out->reverse, trace);
    if (!fwd)
        return false;
    if (fwd->status == DNS_TEMPFAIL) {
        out->name_code = out->forward_code = 4;
        snprintf(out->warning, sizeof out->warning, "%s: hostname %s verification failed: %s", addr, out->reverse,
                 fwd->error);
        return true;
    }
    for (size_t i = 0; fwd->status == DNS_OK && i < fwd->n; i++) {
        if (same_address(fwd->rr[i].data, addr)) {
            str_copy(out->name, out->reverse, sizeof out->name);
            out->name_code = out->forward_code = 0;
            return true;
        }
    }
    if (fwd->status == DNS_OK)
        snprintf(out->warning, sizeof out->warning, "hostname %s does not resolve to address %s", out->reverse, addr);
    else
        snprintf(out->warning, sizeof out->warning, "hostname %s does not resolve to address %s: %s", out->reverse,
                 addr, fwd->status == DNS_NXDOMAIN ? "Name or service not known" : "No address associated with hostname");
    return true;
}
