/*
 * addrlist: see addrlist.h.  Each item keeps its place in the list, so
 * first-match order holds across address items, tables and files: a run
 * of items is one entry per item (a netlist of one network, or a table).
 * Files are read once at compile time, their items spliced in where the
 * file was named, as Postfix's match_list does.
 *
 * Owns its netlists and tables.  Never: permit on a table failure (the
 * caller gets AL_ERROR and answers 4xx), follow files without a depth
 * bound, or allocate per match.
 */
#include "policy/addrlist.h"

#include "core/util.h"
#include "maps/maps.h"
#include "policy/netlist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define FILE_DEPTH_MAX 8     /* files naming files: enough for any sane layout, bounded for loops */
#define FILE_SIZE_MAX (4 << 20)

typedef struct entry {
    bool negate;
    netlist_t *nl;       /* one network, or NULL for a table */
    map_t *map;
    char *text;          /* the item as written, for traces */
} entry_t;

typedef struct seen_file {
    char *path;
    struct stat st;
} seen_file_t;

struct addrlist {
    entry_t *e;
    size_t n;
    seen_file_t *files;
    size_t nfiles;
    buf_t value;         /* lookup scratch */
};

typedef struct actx {
    addrlist_t *al;
    const char *name;
    const char *config_dir;
    buf_t *err;
    int errors;
} actx_t;

static void add_items(actx_t *a, const char *const *items, size_t n, int depth);

static bool is_table(const char *item)
{
    /* "type:name" where type is letters: an IPv6 address has hex digits
     * and colons, never a lower-case letter past 'f' before its first colon. */
    size_t tl = strspn(item, "abcdefghijklmnopqrstuvwxyz0123456789_");
    return tl > 0 && item[tl] == ':' && strspn(item, "0123456789abcdef") < tl;
}

static void add_file(actx_t *a, const char *path, int depth)
{
    if (depth >= FILE_DEPTH_MAX) {
        buf_printf(a->err, "%s: \"%s\": files nested more than %d deep\n", a->name, path, FILE_DEPTH_MAX);
        a->errors++;
        return;
    }
    FILE *fp = fopen(path, "r");
    struct stat st;
    if (!fp || fstat(fileno(fp), &st) != 0) {
        buf_printf(a->err, "%s: \"%s\": cannot open: %s\n", a->name, path, strerror(errno));
        a->errors++;
        if (fp)
            fclose(fp);
        return;
    }
    addrlist_t *al = a->al;
    al->files = xrealloc(al->files, (al->nfiles + 1) * sizeof *al->files);
    al->files[al->nfiles].path = xstrdup(path);
    al->files[al->nfiles].st = st;
    al->nfiles++;

    buf_t text = BUF_INIT;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0 && text.len < FILE_SIZE_MAX)
        buf_append(&text, chunk, got);
    fclose(fp);
    /* Words separated by commas and white space; a line whose first
     * non-blank is '#' is a comment. */
    char **items = NULL;
    size_t n = 0;
    char *p = text.data ? text.data : (char *)"";
    while (*p) {
        char *eol = strchr(p, '\n');
        if (eol)
            *eol = 0;
        char *q = p + strspn(p, " \t\r");
        if (*q != '#') {
            char *save = NULL;
            for (char *tok = strtok_r(q, " \t\r,", &save); tok; tok = strtok_r(NULL, " \t\r,", &save)) {
                items = xrealloc(items, (n + 1) * sizeof *items);
                items[n++] = tok;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    add_items(a, (const char *const *)items, n, depth + 1);
    free(items);
    buf_free(&text);
}

static void add_items(actx_t *a, const char *const *items, size_t n, int depth)
{
    addrlist_t *al = a->al;
    for (size_t i = 0; i < n; i++) {
        const char *item = items[i];
        bool negate = false;
        while (*item == '!') {
            negate = !negate;
            item++;
        }
        if (!*item) {
            buf_printf(a->err, "%s: \"%s\": no pattern after '!'\n", a->name, items[i]);
            a->errors++;
            continue;
        }
        if (item[0] == '/') {
            if (negate) {
                buf_printf(a->err, "%s: \"%s\": '!' before a file name is not supported; put the '!' "
                                   "before the items inside the file\n", a->name, items[i]);
                a->errors++;
                continue;
            }
            add_file(a, item, depth);
            continue;
        }
        entry_t e = {.negate = negate, .text = xstrdup(items[i])};
        if (is_table(item)) {
            buf_t why = BUF_INIT;
            e.map = map_open(item, a->config_dir, &why);
            if (!e.map) {
                buf_printf(a->err, "%s: %s", a->name, why.len ? buf_cstr(&why) : "cannot open table\n");
                if (why.len && why.data[why.len - 1] != '\n')
                    buf_putc(a->err, '\n');
                a->errors++;
                buf_free(&why);
                free(e.text);
                continue;
            }
            buf_free(&why);
        } else {
            buf_t why = BUF_INIT;
            e.nl = netlist_new(a->name, &item, 1, &why);
            if (!e.nl) {
                buf_printf(a->err, "%s\n", buf_cstr(&why));
                a->errors++;
                buf_free(&why);
                free(e.text);
                continue;
            }
            buf_free(&why);
        }
        al->e = xrealloc(al->e, (al->n + 1) * sizeof *al->e);
        al->e[al->n++] = e;
    }
}

addrlist_t *addrlist_new(const char *name, const char *const *items, size_t n, const char *config_dir, buf_t *err)
{
    addrlist_t *al = xcalloc(1, sizeof *al);
    actx_t a = {.al = al, .name = name, .config_dir = config_dir, .err = err};
    add_items(&a, items, n, 0);
    if (a.errors)
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
    for (size_t i = 0; i < al->nfiles; i++) {
        struct stat st;
        const struct stat *o = &al->files[i].st;
        if (stat(al->files[i].path, &st) != 0 || st.st_mtime != o->st_mtime || st.st_size != o->st_size ||
            st.st_ino != o->st_ino)
            return true;
    }
    return false;
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
    for (size_t i = 0; i < al->nfiles; i++)
        free(al->files[i].path);
    free(al->files);
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
