/*
 * addrlist: see addrlist.h.  Each item keeps its place in the list, so
 * first-match order holds across address items, tables and files: a run
 * of items is one entry per item (a netlist of one network, or a table).
 * Files are read once at compile time (listfile), their items spliced in
 * where the file was named, as Postfix's match_list does.
 *
 * Owns its netlists and tables.  Never: permit on a table failure (the
 * caller gets AL_ERROR and answers 4xx), or allocate per match.
 */
#include "policy/addrlist.h"

#include "core/util.h"
#include "maps/maps.h"
#include "policy/listfile.h"
#include "policy/netlist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef struct entry {
    bool negate;
    netlist_t *nl;       /* one network, or NULL for a table */
    map_t *map;
    char *text;          /* the item as written, for traces */
} entry_t;

struct addrlist {
    entry_t *e;
    size_t n;
    listfiles_t files;   /* the /file/name items it read */
    buf_t value;         /* lookup scratch */
};

typedef struct actx {
    addrlist_t *al;
    const char *name;
    const char *config_dir;
    buf_t *err;
} actx_t;

static bool is_table(const char *item)
{
    /* "type:name" where type is letters: an IPv6 address has hex digits
     * and colons, never a lower-case letter past 'f' before its first colon. */
    size_t tl = strspn(item, "abcdefghijklmnopqrstuvwxyz0123456789_");
    return tl > 0 && item[tl] == ':' && strspn(item, "0123456789abcdef") < tl;
}

/* One item of the list (listfile_walk has read the files and the '!'s). */
static bool add_item(void *ctx, const char *item, bool negate, const char *written)
{
    actx_t *a = ctx;
    addrlist_t *al = a->al;
    entry_t e = {.negate = negate};
    if (is_table(item)) {
        e.map = listfile_open_table(a->name, item, a->config_dir, a->err);
        if (!e.map)
            return false;
    } else {
        buf_t why = BUF_INIT;
        e.nl = netlist_new(a->name, &item, 1, &why);
        if (!e.nl) {
            buf_printf(a->err, "%s\n", buf_cstr(&why));
            buf_free(&why);
            return false;
        }
        buf_free(&why);
    }
    e.text = xstrdup(written);
    al->e = xrealloc(al->e, (al->n + 1) * sizeof *al->e);
    al->e[al->n++] = e;
    return true;
}

addrlist_t *addrlist_new(const char *name, const char *const *items, size_t n, const char *config_dir, buf_t *err)
{
    addrlist_t *al = xcalloc(1, sizeof *al);
    actx_t a = {.al = al, .name = name, .config_dir = config_dir, .err = err};
    if (listfile_walk(&al->files, name, items, n, add_item, &a, err))
        addrlist_free(&al);
    return al;
}

al_result addrlist_match(addrlist_t *al, const char *addr, buf_t *why)
{
    if (!al || !addr)
        return AL_NOMATCH;
    for (size_t i = 0; i < al->n; i++) {
        entry_t *e = &al->e[i];
        bool hit;
        if (e->nl) {
            hit = netlist_match_text(e->nl, addr);
        } else {
            map_status st = map_lookup(e->map, addr, &al->value, NULL);
            if (st == MAP_TEMPFAIL) {
                if (why)
                    buf_printf(why, "%s lookup error for \"%s\": %s", map_name(e->map), addr,
                               buf_cstr(&al->value));
                return AL_ERROR;
            }
            hit = st == MAP_FOUND;
        }
        if (hit) {
            if (why)
                buf_puts(why, e->text);
            return e->negate ? AL_NOMATCH : AL_MATCH;
        }
    }
    return AL_NOMATCH;
}

bool addrlist_changed(const addrlist_t *al)
{
    if (!al)
        return false;
    for (size_t i = 0; i < al->n; i++)
        if (al->e[i].map && map_changed(al->e[i].map))
            return true;
    return listfiles_changed(&al->files);
}

void addrlist_free(addrlist_t **pal)
{
    addrlist_t *al = *pal;
    if (!al)
        return;
    for (size_t i = 0; i < al->n; i++) {
        netlist_free(&al->e[i].nl);
        map_close(&al->e[i].map);
        free(al->e[i].text);
    }
    free(al->e);
    listfiles_free(&al->files);
    buf_free(&al->value);
    free(al);
    *pal = NULL;
}

/* ------------------------------------------------------ local addresses */

static int mask_bits(const unsigned char *m, size_t len)
{
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = m[i];
        while (b & 0x80) {
            bits++;
            b = (unsigned char)(b << 1);
        }
        if (b || m[i] != 0xff)
            break;   /* a non-contiguous mask counts to its first hole */
    }
    return bits;
}

static void apply_prefix(unsigned char *a, size_t len, int bits)
{
    for (size_t i = 0; i < len; i++) {
        int keep = bits - (int)i * 8;
        if (keep >= 8)
            continue;
        a[i] &= keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
}

int addrlist_local_items(const char *style, buf_t *out, buf_t *err)
{
    enum { HOST, SUBNET, CLASS } mode;
    if (str_ieq(style, "host"))
        mode = HOST;
    else if (str_ieq(style, "subnet"))
        mode = SUBNET;
    else if (str_ieq(style, "class"))
        mode = CLASS;
    else {
        buf_printf(err, "mynetworks_style: unknown style \"%s\" (host, subnet or class)", style);
        return -1;
    }
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) {
        buf_printf(err, "cannot list the network interfaces (getifaddrs): %s", strerror(errno));
        return -1;
    }
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr)
            continue;
        char text[INET6_ADDRSTRLEN];
        int bits;
        bool first = out->len == 0;
        if (i->ifa_addr->sa_family == AF_INET) {
            struct in_addr a = ((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr;
            unsigned char *b = (unsigned char *)&a;
            bits = 32;
            if (mode == SUBNET && i->ifa_netmask)
                bits = mask_bits((const unsigned char *)&((const struct sockaddr_in *)(const void *)i->ifa_netmask)
                                     ->sin_addr, 4);
            else if (mode == CLASS)
                bits = b[0] < 128 ? 8 : b[0] < 192 ? 16 : b[0] < 224 ? 24 : 32;   /* D/E: the host only */
            apply_prefix(b, 4, bits);
            inet_ntop(AF_INET, &a, text, sizeof text);
            buf_printf(out, "%s%s/%d", first ? "" : " ", text, bits);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            struct in6_addr a = ((const struct sockaddr_in6 *)(const void *)i->ifa_addr)->sin6_addr;
            if (IN6_IS_ADDR_LINKLOCAL(&a))
                continue;
            bits = 128;
            if (mode != HOST && i->ifa_netmask)
                bits = mask_bits(((const struct sockaddr_in6 *)(const void *)i->ifa_netmask)->sin6_addr.s6_addr, 16);
            apply_prefix(a.s6_addr, 16, bits);
            inet_ntop(AF_INET6, &a, text, sizeof text);
            buf_printf(out, "%s[%s]/%d", first ? "" : " ", text, bits);
        }
    }
    freeifaddrs(ifs);
    return 0;
}
