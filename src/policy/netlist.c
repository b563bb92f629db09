/*
 * netlist: see netlist.h.  Addresses are kept as 16-byte IPv6 values
 * (IPv4 as v4-mapped) with a prefix length, so one comparison serves
 * both families.
 */
#include "policy/netlist.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

typedef struct net {
    unsigned char addr[16];
    int prefix;      /* 0..128, over the 16-byte form */
    bool negate;
} net_t;

struct netlist {
    size_t n;
    net_t *nets;
};

static void v4_mapped(unsigned char out[16], const void *v4)
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

static bool parse_item(const char *item, net_t *net)
{
    char text[128];
    const char *p = item;
    net->negate = false;
    if (*p == '!') {
        net->negate = true;
        p++;
    }
    if (str_copy(text, p, sizeof text) >= sizeof text)
        return false;
    char *slash = strchr(text, '/');
    long len = -1;
    if (slash) {
        char *end;
        *slash = 0;
        if (!slash[1])
            return false;
        len = strtol(slash + 1, &end, 10);
        if (*end || len < 0)
            return false;
    }
    char *host = text;
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = 0;
        host++;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        if (len > 32)
            return false;
        v4_mapped(net->addr, &a4);
        net->prefix = len < 0 ? 128 : 96 + (int)len;
    } else if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (len > 128)
            return false;
        memcpy(net->addr, &a6, 16);
        net->prefix = len < 0 ? 128 : (int)len;
    } else {
        return false;
    }
    /* Postfix refuses a prefix with host bits set; so do we. */
    for (int bit = net->prefix; bit < 128; bit++)
        if (net->addr[bit / 8] & (0x80 >> (bit % 8)))
            return false;
    return true;
}

netlist_t *netlist_new(const char *param_name, const char *const *items, size_t n, buf_t *err)
{
    netlist_t *nl = xcalloc(1, sizeof *nl);
    nl->nets = xcalloc(n ? n : 1, sizeof *nl->nets);
    for (size_t i = 0; i < n; i++) {
        if (!parse_item(items[i], &nl->nets[nl->n])) {
            const char *it = items[i] + (items[i][0] == '!');
            size_t tl = strspn(it, "abcdefghijklmnopqrstuvwxyz");
            bool table = (tl && it[tl] == ':' && strspn(it, "0123456789abcdef") < tl) || it[0] == '/';
            if (table)
                buf_printf(err, "%s: \"%s\": table lookups are not supported here by this version "
                                "of moat; list addresses and prefixes", param_name, items[i]);
            else
                buf_printf(err, "%s: bad network address or prefix (or non-zero host bits): \"%s\"",
                           param_name, items[i]);
            netlist_free(&nl);
            return NULL;
        }
        nl->n++;
    }
    return nl;
}

static bool match16(const netlist_t *nl, const unsigned char a[16])
{
    for (size_t i = 0; i < nl->n; i++) {
        const net_t *net = &nl->nets[i];
        int full = net->prefix / 8, rem = net->prefix % 8;
        if (memcmp(a, net->addr, (size_t)full) != 0)
            continue;
        if (rem && ((a[full] ^ net->addr[full]) & (0xff << (8 - rem)) & 0xff))
            continue;
        return !net->negate;
    }
    return false;
}

bool netlist_match(const netlist_t *nl, const struct sockaddr *sa)
{
    unsigned char a[16];
    if (!nl)
        return false;
    if (sa->sa_family == AF_INET)
        v4_mapped(a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr);
    else if (sa->sa_family == AF_INET6)
        memcpy(a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    else
        return false;
    return match16(nl, a);
}

bool netlist_match_text(const netlist_t *nl, const char *addr)
{
    unsigned char a[16];
    struct in_addr a4;
    if (!nl)
        return false;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        v4_mapped(a, &a4);
    else if (inet_pton(AF_INET6, addr, a) != 1)
        return false;
    return match16(nl, a);
}

void netlist_free(netlist_t **pnl)
{
    if (!*pnl)
        return;
    free((*pnl)->nets);
    free(*pnl);
    *pnl = NULL;
}
