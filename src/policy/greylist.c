/*
 * greylist: check_greylist, postgrey/gld behaviour on the state store.
 *
 * A triplet (client identity, normalised sender, recipient) that was never
 * seen is refused with 451 4.7.1 for greylist_delay; a retry after the
 * delay and inside greylist_retry_window passes, and from then on the
 * triplet passes until it has been unused for greylist_max_age.  Each
 * pass counts for the identity ("greyok:<identity>"); an identity with
 * greylist_auto_allow_count passes is no longer greylisted.  Allow lists
 * (client tables, recipient tables, DNS allow lists) skip the whole thing.
 *
 * Owns: the compiled settings (tables opened here, DNS allow list specs)
 * and nothing per session.  Reads go through the session's memo
 * (ss_store_get, dns_memo_get), writes into the effects list, so a
 * replayed pass decides the same and writes once.  Must never: write the
 * store directly, wait on anything, or let a failed store or table lookup
 * pass silently (the store failure policy is ss_store_failed's; a table
 * that fails answers 451 4.3.0).
 */
#include "policy/greylist.h"
#include "policy/spfcheck.h"

#include "core/util.h"
#include "maps/maps.h"
#include "policy/access.h"
#include "policy/addrlist.h"
#include "policy/dnsbl.h"
#include "policy/domlist.h"
#include "policy/netlist.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <libpsl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LMDB refuses keys over 511 bytes (STORE_KEY_MAX): stay well below. */
#define GREY_KEY_LIMIT 480
#define PSL_FILE "/usr/share/publicsuffix/public_suffix_list.dat"

enum { GI_IP, GI_FCRDNS, GI_SPF };

typedef struct gtable {
    map_t *map;
    bool pattern;     /* regexp/pcre/cidr: the whole key only, as Postfix */
} gtable_t;

struct greylist {
    int identity;
    int v4bits, v6bits;
    long long delay, window, max_age, auto_count;
    bool header;
    char *myhostname;
    /* greylist_client_allow_maps, by kind of item */
    addrlist_t *client_addrs;
    domlist_t *client_names;
    gtable_t *client_tables;
    size_t nclient_tables;
    /* greylist_recipient_allow_maps */
    gtable_t *rcpt_tables;
    size_t nrcpt_tables;
    char *delim;
    bool parent_match;
    /* greylist_dnswl_sites */
    dnsbl_site_t *dnswl;
    size_t ndnswl;
    buf_t value;      /* table lookups' scratch */
};

/* ------------------------------------------------------ sender normalising */

static bool word_char(int ch)
{
    return isalnum(ch) || ch == '_';
}

/* "hash=tt=domain=local" (an SRS0 payload): the original address. */
static bool srs0_payload(const char *p, buf_t *out)
{
    const char *tt = strchr(p, '=');
    const char *dom = tt ? strchr(tt + 1, '=') : NULL;
    const char *loc = dom ? strchr(dom + 1, '=') : NULL;
    if (!loc || loc == dom + 1 || !loc[1])
        return false;
    buf_reset(out);
    buf_puts(out, loc + 1);
    buf_putc(out, '@');
    buf_append(out, dom + 1, (size_t)(loc - dom - 1));
    return true;
}

static bool srs_sep(int ch)
{
    return ch == '=' || ch == '+' || ch == '-';
}

/* SRS0=hash=tt=domain=local@fwd, SRS1=hash=fwd-domain==hash=tt=domain=local@fwd2
 * (local is lower case already): the original address into out. */
static bool srs_decode(const char *local, buf_t *out)
{
    if (strncmp(local, "srs0", 4) == 0 && srs_sep(local[4]))
        return srs0_payload(local + 5, out);
    if (strncmp(local, "srs1", 4) != 0 || !srs_sep(local[4]))
        return false;
    const char *fwd = strchr(local + 5, '=');
    const char *inner = fwd ? strchr(fwd + 1, '=') : NULL;
    if (!inner || inner == fwd + 1)
        return false;
    inner++;
    if (srs_sep(*inner))
        inner++;
    return srs0_payload(inner, out);
}

/* A BATV tag of postgrey's shape: ten of [0-9a-z] first. */
static bool batv_tag(const char *s, size_t n)
{
    if (n < 10)
        return false;
    for (size_t i = 0; i < 10; i++)
        if (!isdigit((unsigned char)s[i]) && !islower((unsigned char)s[i]))
            return false;
    return true;
}

/* The local part without its BATV tag: [start, start+*len) of local. */
static const char *batv_strip(const char *local, size_t *len)
{
    *len = strlen(local);
    if (strncmp(local, "prvs=", 5) == 0) {
        const char *a = local + 5;
        const char *eq = strchr(a, '=');
        if (!eq || strchr(eq + 1, '='))
            return local;   /* not exactly two fields: leave it */
        const char *b = eq + 1;
        size_t alen = (size_t)(eq - a), blen = strlen(b);
        bool at = batv_tag(a, alen), bt = batv_tag(b, blen);
        if (bt && !at) {
            *len = alen;
            return a;
        }
        *len = blen;        /* the standard order (tag first), also when unsure */
        return b;
    }
    if (strncmp(local, "msprvs1=", 8) == 0) {
        const char *eq = strchr(local + 8, '=');
        if (eq && eq[1]) {
            *len = strlen(eq + 1);
            return eq + 1;
        }
        return local;
    }
    if (strncmp(local, "btv1==", 6) == 0) {
        const char *eq = strstr(local + 6, "==");
        if (eq && eq[2]) {
            *len = strlen(eq + 2);
            return eq + 2;
        }
    }
    return local;
}

void greylist_sender_norm(const char *sender, buf_t *out)
{
    buf_reset(out);
    if (!sender || !*sender)
        return;
    buf_t addr = BUF_INIT, dec = BUF_INIT;
    buf_puts(&addr, sender);
    str_lower(addr.data);
    /* An SRS address may wrap another one (SRS1 of an SRS0 is one
     * address; forwarders that re-wrap are bounded here). */
    for (int round = 0; round < 4; round++) {
        char *at = strrchr(addr.data, '@');
        if (!at)
            break;
        *at = 0;
        bool ok = srs_decode(addr.data, &dec);
        *at = '@';
        if (!ok)
            break;
        buf_reset(&addr);
        buf_append(&addr, dec.data, dec.len);
    }
    char *at = strrchr(addr.data, '@');
    if (!at) {
        buf_append(out, addr.data, addr.len);
        goto done;
    }
    *at = 0;
    size_t n;
    const char *local = batv_strip(addr.data, &n);
    const char *plus = memchr(local, '+', n);
    if (plus)
        n = (size_t)(plus - local);
    for (size_t i = 0; i < n;) {
        if (!isdigit((unsigned char)local[i])) {
            buf_putc(out, local[i++]);
            continue;
        }
        size_t j = i;
        while (j < n && isdigit((unsigned char)local[j]))
            j++;
        /* a number standing alone (perl's \b\d+\b): a VERP counter */
        if ((i == 0 || !word_char((unsigned char)local[i - 1])) && (j == n || !word_char((unsigned char)local[j])))
            buf_putc(out, '#');
        else
            buf_append(out, local + i, j - i);
        i = j;
    }
    buf_putc(out, '@');
    buf_puts(out, at + 1);
done:
    buf_free(&addr);
    buf_free(&dec);
}

/* --------------------------------------------------------------- identity */

bool greylist_ip_identity(const char *addr, int v4bits, int v6bits, buf_t *out)
{
    buf_reset(out);
    unsigned char b[16];
    char text[INET6_ADDRSTRLEN];
    int family = AF_INET, bits = v4bits;
    size_t len = 4;
    if (!addr)
        return false;
    if (inet_pton(AF_INET, addr, b) != 1) {
        if (inet_pton(AF_INET6, addr, b) != 1)
            return false;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0) {
            memmove(b, b + 12, 4);
        } else {
            family = AF_INET6, bits = v6bits, len = 16;
        }
    }
    if (bits < 0)
        bits = 0;
    if ((size_t)bits > len * 8)
        bits = (int)len * 8;
    for (size_t i = 0; i < len; i++) {
        int keep = bits - (int)i * 8;
        if (keep <= 0)
            b[i] = 0;
        else if (keep < 8)
            b[i] &= (unsigned char)(0xff << (8 - keep));
    }
    if (!inet_ntop(family, b, text, sizeof text))
        return false;
    buf_puts(out, text);
    return true;
}

static pthread_once_t psl_once = PTHREAD_ONCE_INIT;
static const psl_ctx_t *psl_ctx;

static void psl_init(void)
{
    /* The list compiled into libpsl; Debian's file when a build lacks it. */
    psl_ctx = psl_builtin();
    if (!psl_ctx || psl_suffix_count(psl_ctx) <= 0)
        psl_ctx = psl_load_file(PSL_FILE);
}

bool greylist_org_domain(const char *name, buf_t *out)
{
    buf_reset(out);
    if (!name || !*name || strlen(name) > 253)
        return false;
    buf_t n = BUF_INIT;
    buf_puts(&n, name);
    str_lower(n.data);
    if (n.len > 1 && n.data[n.len - 1] == '.')
        buf_truncate(&n, n.len - 1);
    bool ok = n.data[0] != '.';
    for (size_t i = 0; ok && i < n.len; i++) {
        unsigned char ch = (unsigned char)n.data[i];
        ok = isalnum(ch) || ch == '-' || ch == '_' || (ch == '.' && n.data[i + 1] != '.');
    }
    const char *reg = NULL;
    if (ok) {
        pthread_once(&psl_once, psl_init);
        reg = psl_ctx ? psl_registrable_domain(psl_ctx, n.data) : NULL;
    }
    if (reg)
        buf_puts(out, reg);
    buf_free(&n);
    return reg != NULL;
}

/* ----------------------------------------------------- records and keys */

bool greylist_rec_parse(const char *value, grey_rec_t *r)
{
    memset(r, 0, sizeof *r);
    if (!value)
        return false;
    char *end;
    r->first = strtoll(value, &end, 10);
    if (end == value || *end != ' ')
        return false;
    const char *p = end + 1;
    r->last = strtoll(p, &end, 10);
    if (end == p || *end != ' ' || (end[1] != '0' && end[1] != '1') || end[2])
        return false;
    r->passed = end[1] == '1';
    return r->first > 0;
}

void greylist_rec_format(const grey_rec_t *r, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%lld %lld %d", r->first, r->last, r->passed ? 1 : 0);
}

grey_decision_t greylist_decide(const grey_rec_t *r, long long now, long long delay, long long window,
                                long long *secs)
{
    if (!r) {
        *secs = delay;
        return GD_NEW;
    }
    long long elapsed = now - r->first;
    if (elapsed < 0)
        elapsed = 0;   /* a clock that went back (or another host's): never a longer wait than asked */
    if (r->passed) {
        *secs = 0;
        return GD_PASSED;
    }
    if (elapsed < delay) {
        *secs = delay - elapsed;
        return GD_WAIT;
    }
    if (elapsed > window) {
        *secs = delay;
        return GD_EXPIRED;
    }
    *secs = elapsed;
    return GD_PASS;
}

static void key_part(buf_t *out, const char *s, bool hashed)
{
    if (!hashed) {
        buf_puts(out, s);
        return;
    }
    buf_printf(out, "#%08x%08x", hash_str(HASH_INIT, s), hash_str(0x9e3779b9u, s));
}

void greylist_key(const char *identity, const char *sender, const char *rcpt, buf_t *out)
{
    buf_reset(out);
    size_t il = strlen(identity), sl = strlen(sender), rl = strlen(rcpt);
    bool hs = false, hr = false;
    if (5 + il + 2 + sl + rl > GREY_KEY_LIMIT) {
        /* the longer part first; 17 bytes each once hashed */
        if (sl >= rl)
            hs = true, sl = 17;
        else
            hr = true, rl = 17;
        if (5 + il + 2 + sl + rl > GREY_KEY_LIMIT)
            hs = hr = true;
    }
    buf_puts(out, "grey:");
    buf_puts(out, identity);
    buf_putc(out, '/');
    key_part(out, sender, hs);
    buf_putc(out, '/');
    size_t at = out->len;
    key_part(out, rcpt, hr);
    if (!hr)
        str_lower(out->data + at);
}

bool greylist_key_split(const char *key, buf_t *identity, buf_t *sender, buf_t *rcpt)
{
    buf_reset(identity);
    buf_reset(sender);
    buf_reset(rcpt);
    if (strncmp(key, "grey:", 5) != 0)
        return false;
    const char *id = key + 5;
    const char *rest = strchr(id, '/');
    if (!rest || rest == id)
        return false;
    rest++;
    /* A domain holds no '/' and no '@': the sender ends at the first '/'
     * after its '@' (or at once for the null sender and a hashed one). */
    const char *sep;
    if (*rest == '/' || *rest == '#') {
        sep = strchr(rest, '/');
    } else {
        const char *at = strchr(rest, '@');
        sep = at ? strchr(at, '/') : strchr(rest, '/');
    }
    if (!sep)
        return false;
    buf_append(identity, id, (size_t)(rest - 1 - id));
    buf_append(sender, rest, (size_t)(sep - rest));
    buf_puts(rcpt, sep + 1);
    return true;
}

/* ------------------------------------------------------------ X-Greylist */

void greylist_header(const char *myhostname, long long secs, time_t now, buf_t *out)
{
    /* Our own names (RFC 5322 day and month names are English, whatever
     * LC_TIME says). */
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!localtime_r(&now, &tm))
        gmtime_r(&now, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    buf_printf(out, "X-Greylist: delayed %lld seconds by moat at %s; %s, %d %s %d %02d:%02d:%02d %c%02ld%02ld\n",
               secs, myhostname, days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
               tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60, off % 60);
}

/* ------------------------------------------------------------ compiling */

static void bad(const params_t *p, param_id id, buf_t *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void bad(const params_t *p, param_id id, buf_t *err, const char *fmt, ...)
{
    param_where(p, id, err);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(err, fmt, ap);
    va_end(ap);
    buf_putc(err, '\n');
}

static bool table_spec(const char *item)
{
    /* "type:name": a word of letters and digits before the colon (an IPv6
     * address has hex digits and colons, and no table type is hex only
     * with another colon right after, but netlist is asked first). */
    const char *colon = strchr(item, ':');
    if (!colon || colon == item)
        return false;
    for (const char *p = item; p < colon; p++)
        if (!isalnum((unsigned char)*p))
            return false;
    return true;
}

static bool pattern_spec(const char *spec)
{
    return str_istarts(spec, "regexp:") || str_istarts(spec, "pcre:") || str_istarts(spec, "cidr:");
}

static bool address_item(const char *item)
{
    buf_t e = BUF_INIT;
    const char *one[1] = {item};
    netlist_t *nl = netlist_new("x", one, 1, &e);
    bool ok = nl != NULL;
    netlist_free(&nl);
    buf_free(&e);
    return ok;
}

static int open_tables(const params_t *p, param_id id, const char *const *items, size_t n, const char *config_dir,
                       gtable_t **out, size_t *nout, buf_t *err)
{
    int errors = 0;
    *out = xcalloc(n ? n : 1, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        buf_t e = BUF_INIT;
        map_t *m = map_open(items[i], config_dir, &e);
        if (!m) {
            buf_t msg = BUF_INIT;
            buf_printf(&msg, "%s: %s", param_name(id), buf_cstr(&e));
            param_where_lines(p, id, buf_cstr(&msg), err);
            buf_free(&msg);
            errors++;
        } else {
            (*out)[(*nout)++] = (gtable_t){m, pattern_spec(items[i])};
        }
        buf_free(&e);
    }
    return errors;
}

/* A host or domain name item ("mail.example.com", ".example.com"). */
static bool name_item(const char *item)
{
    if (!*item)
        return false;
    for (const char *p = item; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
            return false;
    return true;
}

static int compile_client_allow(greylist_t *g, const params_t *p, const char *config_dir, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_greylist_client_allow_maps, &items);
    const char **addrs = xcalloc(n ? n : 1, sizeof *addrs);
    const char **names = xcalloc(n ? n : 1, sizeof *names);
    const char **tables = xcalloc(n ? n : 1, sizeof *tables);
    size_t na = 0, nn = 0, nt = 0;
    int errors = 0;
    for (size_t i = 0; i < n; i++) {
        const char *it = items[i];
        const char *bare = it[0] == '!' ? it + 1 : it;
        if (bare[0] == '/' || address_item(bare))
            addrs[na++] = it;           /* files hold addresses, as mynetworks' do */
        else if (it[0] != '!' && table_spec(it))
            tables[nt++] = it;
        else if (name_item(bare))
            names[nn++] = it;
        else {
            bad(p, PARAM_greylist_client_allow_maps, err,
                "greylist_client_allow_maps: \"%s\" is not an address, network, host or domain name, /file or "
                "type:table",
                it);
            errors++;
        }
    }
    buf_t e = BUF_INIT;
    if (na && !(g->client_addrs = addrlist_new("greylist_client_allow_maps", addrs, na, config_dir, &e))) {
        param_where_lines(p, PARAM_greylist_client_allow_maps, buf_cstr(&e), err);
        errors++;
    }
    buf_reset(&e);
    if (nn && !(g->client_names = domlist_new("greylist_client_allow_maps", names, nn, DL_PARENT, config_dir, &e))) {
        param_where_lines(p, PARAM_greylist_client_allow_maps, buf_cstr(&e), err);
        errors++;
    }
    buf_free(&e);
    errors += open_tables(p, PARAM_greylist_client_allow_maps, tables, nt, config_dir, &g->client_tables,
                          &g->nclient_tables, err);
    free(addrs);
    free(names);
    free(tables);
    return errors;
}

greylist_t *greylist_new(const params_t *p, const char *config_dir, buf_t *err)
{
    greylist_t *g = xcalloc(1, sizeof *g);
    int errors = 0;
    const char *ident = param_str(p, PARAM_greylist_identity);
    if (str_ieq(ident, "ip")) {
        g->identity = GI_IP;
    } else if (str_ieq(ident, "fcrdns")) {
        g->identity = GI_FCRDNS;
    } else if (str_ieq(ident, "spf")) {
        g->identity = GI_SPF;
    } else {
        bad(p, PARAM_greylist_identity, err, "greylist_identity = %s: unknown (use ip, fcrdns or spf)", ident);
        errors++;
    }
    g->v4bits = (int)param_int(p, PARAM_greylist_client_netmask);
    g->v6bits = (int)param_int(p, PARAM_greylist_client_ipv6_netmask);
    g->delay = param_int(p, PARAM_greylist_delay);
    g->window = param_int(p, PARAM_greylist_retry_window);
    g->max_age = param_int(p, PARAM_greylist_max_age);
    g->auto_count = param_int(p, PARAM_greylist_auto_allow_count);
    g->header = param_bool(p, PARAM_greylist_header);
    g->myhostname = xstrdup(param_str(p, PARAM_myhostname));
    if (g->window < g->delay) {
        bad(p, PARAM_greylist_retry_window, err,
            "greylist_retry_window (%llds) is shorter than greylist_delay (%llds): no retry could ever pass",
            g->window, g->delay);
        errors++;
    }
    if (g->max_age < g->window) {
        bad(p, PARAM_greylist_max_age, err,
            "greylist_max_age (%llds) is shorter than greylist_retry_window (%llds): triplets would be forgotten "
            "before their retry",
            g->max_age, g->window);
        errors++;
    }
    if (g->max_age > 0xffffffffLL) {
        bad(p, PARAM_greylist_max_age, err, "greylist_max_age: at most %u seconds", 0xffffffffu);
        errors++;
    }
    if (g->auto_count < 0) {
        bad(p, PARAM_greylist_auto_allow_count, err, "greylist_auto_allow_count must not be negative");
        errors++;
    }

    errors += compile_client_allow(g, p, config_dir, err);

    const char *const *items;
    size_t n = param_list(p, PARAM_greylist_recipient_allow_maps, &items);
    for (size_t i = 0; i < n; i++) {
        if (!table_spec(items[i])) {
            bad(p, PARAM_greylist_recipient_allow_maps, err,
                "greylist_recipient_allow_maps: \"%s\" is not a type:table", items[i]);
            errors++;
            n = 0;
        }
    }
    errors += open_tables(p, PARAM_greylist_recipient_allow_maps, items, n, config_dir, &g->rcpt_tables,
                          &g->nrcpt_tables, err);
    g->delim = xstrdup(param_str(p, PARAM_recipient_delimiter));
    const char *const *pitems;
    size_t pn = param_list(p, PARAM_parent_domain_matches_subdomains, &pitems);
    g->parent_match = domlist_parent_style(pitems, pn, "smtpd_access_maps") == DL_PARENT;

    n = param_list(p, PARAM_greylist_dnswl_sites, &items);
    g->dnswl = xcalloc(n ? n : 1, sizeof *g->dnswl);
    for (size_t i = 0; i < n; i++) {
        buf_t e = BUF_INIT;
        if (dnsbl_site_parse(items[i], false, &g->dnswl[g->ndnswl], &e) != 0) {
            bad(p, PARAM_greylist_dnswl_sites, err, "greylist_dnswl_sites: \"%s\": %s", items[i], buf_cstr(&e));
            errors++;
        } else {
            g->ndnswl++;
        }
        buf_free(&e);
    }
    if (errors) {
        greylist_free(&g);
        return NULL;
    }
    return g;
}

bool greylist_tables_changed(const greylist_t *g)
{
    for (size_t i = 0; i < g->nclient_tables; i++)
        if (map_changed(g->client_tables[i].map))
            return true;
    for (size_t i = 0; i < g->nrcpt_tables; i++)
        if (map_changed(g->rcpt_tables[i].map))
            return true;
    return (g->client_addrs && addrlist_changed(g->client_addrs)) ||
           (g->client_names && domlist_changed(g->client_names));
}

void greylist_free(greylist_t **gp)
{
    greylist_t *g = *gp;
    if (!g)
        return;
    addrlist_free(&g->client_addrs);
    domlist_free(&g->client_names);
    for (size_t i = 0; i < g->nclient_tables; i++)
        map_close(&g->client_tables[i].map);
    free(g->client_tables);
    for (size_t i = 0; i < g->nrcpt_tables; i++)
        map_close(&g->rcpt_tables[i].map);
    free(g->rcpt_tables);
    for (size_t i = 0; i < g->ndnswl; i++)
        dnsbl_site_free(&g->dnswl[i]);
    free(g->dnswl);
    free(g->delim);
    free(g->myhostname);
    buf_free(&g->value);
    free(g);
    *gp = NULL;
}

bool greylist_client_identity(const params_t *p, const char *client, buf_t *out, buf_t *err)
{
    buf_reset(out);
    int v4 = (int)param_int(p, PARAM_greylist_client_netmask);
    int v6 = (int)param_int(p, PARAM_greylist_client_ipv6_netmask);
    buf_t a = BUF_INIT;
    const char *s = client;
    size_t n = strlen(s);
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : n;
    if (alen >= 2 && s[0] == '[' && s[alen - 1] == ']')
        buf_append(&a, s + 1, alen - 2);
    else
        buf_append(&a, s, alen);
    bool ok = false;
    if (greylist_ip_identity(buf_cstr(&a), v4, v6, out)) {
        bool v6addr = strchr(buf_cstr(&a), ':') && !strchr(buf_cstr(&a), '.');
        int want = v6addr ? v6 : v4;
        if (slash) {
            char *end;
            long bits = strtol(slash + 1, &end, 10);
            if (!slash[1] || *end || bits < 0 || bits > (v6addr ? 128 : 32)) {
                buf_printf(err, "%s: bad network prefix length", client);
                goto done;
            }
            if (bits < want) {
                buf_printf(err, "%s: wider than a client network (/%d, greylist_client_%snetmask): give one of "
                                "its /%d networks",
                           client, want, v6addr ? "ipv6_" : "", want);
                goto done;
            }
        }
        ok = true;
        goto done;
    }
    if (slash) {
        buf_printf(err, "%s: not an address or network", client);
        goto done;
    }
    buf_t name = BUF_INIT;
    if (!greylist_org_domain(client, &name)) {
        buf_printf(err, "%s: not an address, network or (registrable) domain name", client);
        buf_free(&name);
        goto done;
    }
    const char *ident = param_str(p, PARAM_greylist_identity);
    if (!str_ieq(ident, "fcrdns") && !str_ieq(ident, "spf")) {
        buf_printf(err, "%s: greylist_identity = %s: a name is never a client's identity; give an address or "
                        "network",
                   client, ident);
        buf_free(&name);
        goto done;
    }
    buf_append(out, name.data, name.len);
    buf_free(&name);
    ok = true;
done:
    buf_free(&a);
    if (!ok)
        buf_reset(out);
    return ok;
}

/* ------------------------------------------------------------ the step */

typedef struct glook {
    greylist_t *g;
    const gtable_t *t;
    int nkeys;
    map_status status;
    char key[512];
} glook_t;

static int glook_key(const char *key, void *arg)
{
    glook_t *l = arg;
    if (l->t->pattern && l->nkeys > 0)
        return 0;
    l->nkeys++;
    l->status = map_lookup(l->t->map, key, &l->g->value, NULL);
    if (l->status == MAP_NOTFOUND)
        return 0;
    str_copy(l->key, key, sizeof l->key);
    return 1;
}

/* After a table walk: 1 allowed (traced), 0 not, -1 the table failed
 * (the reply is set). */
static int glook_result(ss_ctx_t *c, glook_t *l, const char *param, const char *what)
{
    const char *v = buf_cstr(&l->g->value);
    if (l->status == MAP_TEMPFAIL) {
        ss_log(c, "warning", "%s lookup error for \"%s\": %s", map_name(l->t->map), l->key, v);
        ss_trace(c, "%s: %s lookup error for \"%s\": %s", param, map_name(l->t->map), l->key, v);
        c->whole_text = true;
        ss_reply(c, SS_REJECT, 451, "4.3.0", "<%s>: Temporary lookup failure", what);
        return -1;
    }
    if (l->status != MAP_FOUND)
        return 0;
    /* DUNNO: as if not found, and stop the walk (access(5)) */
    if (str_istarts(v, "dunno") && (!v[5] || isspace((unsigned char)v[5]))) {
        ss_trace(c, "%s: %s: %s found: DUNNO", param, map_name(l->t->map), l->key);
        return 0;
    }
    ss_trace(c, "%s: %s: %s found (%s): not greylisted -> DUNNO", param, map_name(l->t->map), l->key, v);
    return 1;
}

static int client_allowed(greylist_t *g, ss_ctx_t *c)
{
    const pstate_t *st = c->st;
    static const char param[] = "greylist_client_allow_maps";
    buf_t why = BUF_INIT;
    int rc = 0;
    if (g->client_addrs) {
        al_result r = addrlist_match(g->client_addrs, st->client_addr, &why);
        if (r == AL_ERROR) {
            ss_log(c, "warning", "%s: %s", param, buf_cstr(&why));
            c->whole_text = true;
            ss_reply(c, SS_REJECT, 451, "4.3.0", "<%s>: Temporary lookup failure", st->client_addr);
            rc = -1;
            goto done;
        }
        if (r == AL_MATCH) {
            ss_trace(c, "%s: client %s matches %s: not greylisted -> DUNNO", param, st->client_addr, buf_cstr(&why));
            rc = 1;
            goto done;
        }
    }
    bool named = st->client_name && *st->client_name && !str_ieq(st->client_name, "unknown");
    if (g->client_names && named) {
        dl_result r = domlist_match(g->client_names, st->client_name, &why);
        if (r == DL_ERROR) {
            ss_log(c, "warning", "%s: %s", param, buf_cstr(&why));
            c->whole_text = true;
            ss_reply(c, SS_REJECT, 451, "4.3.0", "<%s>: Temporary lookup failure", st->client_name);
            rc = -1;
            goto done;
        }
        if (r == DL_MATCH) {
            ss_trace(c, "%s: client %s matches %s: not greylisted -> DUNNO", param, st->client_name, buf_cstr(&why));
            rc = 1;
            goto done;
        }
    }
    for (size_t i = 0; i < g->nclient_tables; i++) {
        glook_t l = {.g = g, .t = &g->client_tables[i], .status = MAP_NOTFOUND};
        if (named)
            access_keys_host(st->client_name, g->parent_match, glook_key, &l);
        if (l.status == MAP_NOTFOUND) {
            l.nkeys = 0;
            access_keys_addr(st->client_addr, glook_key, &l);
        }
        if ((rc = glook_result(c, &l, param, st->client_addr)) != 0)
            goto done;
    }
done:
    buf_free(&why);
    return rc;
}

static int rcpt_allowed(greylist_t *g, ss_ctx_t *c)
{
    for (size_t i = 0; i < g->nrcpt_tables; i++) {
        glook_t l = {.g = g, .t = &g->rcpt_tables[i], .status = MAP_NOTFOUND};
        access_keys_email(c->st->recipient, g->delim, g->parent_match, "<>", glook_key, &l);
        int rc = glook_result(c, &l, "greylist_recipient_allow_maps", c->st->recipient);
        if (rc)
            return rc;
    }
    return 0;
}

/* The DNS allow lists: 1 listed, 0 not (a failure does not allow), 2 an
 * answer is still coming. */
static int dnswl_listed(greylist_t *g, ss_ctx_t *c)
{
    if (!g->ndnswl)
        return 0;
    if (!c->memo) {
        ss_trace(c, "greylist_dnswl_sites: no DNS resolver in this context: not consulted");
        return 0;
    }
    buf_t q = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < g->ndnswl && rc != 1; i++) {
        const dnsbl_site_t *site = &g->dnswl[i];
        if (!dnsbl_query_name_addr(c->st->client_addr, site->zone, &q))
            continue;
        dns_how_t how;
        const dns_answer_t *a = dns_memo_get(c->memo, DNS_T_A, buf_cstr(&q), &how);
        if (!a) {
            rc = 2;
            continue;
        }
        if (c->trace) {
            buf_t f = BUF_INIT;
            dns_trace_answer(&f, a, &how);
            ss_trace(c, "%s", buf_cstr(&f));
            buf_free(&f);
        }
        if (a->status == DNS_TEMPFAIL) {
            ss_log(c, "warning", "greylist_dnswl_sites: DNS lookup of %s failed: %s", buf_cstr(&q), a->error);
            continue;
        }
        for (size_t k = 0; a->status == DNS_OK && k < a->n; k++) {
            if (dnsbl_classify(a->rr[k].data) == DNSBL_ANS_LISTED && dnsbl_site_match(site, a->rr[k].data)) {
                ss_trace(c, "greylist_dnswl_sites: client %s is listed in %s (%s): not greylisted -> DUNNO",
                         c->st->client_addr, site->zone, a->rr[k].data);
                rc = 1;
                break;
            }
        }
    }
    buf_free(&q);
    return rc;
}

/* The client's identity into id, and how it was found into how; -1 while
 * the SPF evaluation waits for DNS answers. */
static int client_identity(greylist_t *g, ss_ctx_t *c, buf_t *id, buf_t *how)
{
    const pstate_t *st = c->st;
    buf_reset(how);
    buf_reset(id);
    if (g->identity == GI_SPF) {
        /* a sender domain that SPF authenticates is one sender, whichever
         * of its outbound hosts retries */
        char dom[256];
        int r = spf_check_pass_domain(c, dom, sizeof dom);
        if (r < 0)
            return -1;
        if (r == 1) {
            buf_puts(id, dom);
            str_lower(id->data);
            buf_printf(how, "SPF-authenticated sender domain %s", dom);
            return 0;
        }
        buf_puts(how, "no SPF pass: ");
    }
    if ((g->identity == GI_FCRDNS || g->identity == GI_SPF) && st->name_code == 0 && st->client_name && !str_ieq(st->client_name, "unknown")) {
        if (greylist_org_domain(st->client_name, id)) {
            buf_printf(how, "organisational domain of the forward-confirmed name %s", st->client_name);
            return 0;
        }
        buf_printf(how, "%s has no organisational domain: ", st->client_name);
    }
    if (greylist_ip_identity(st->client_addr, g->v4bits, g->v6bits, id)) {
        bool v6 = strchr(buf_cstr(id), ':') != NULL;
        buf_printf(how, "client network %s/%d", buf_cstr(id), v6 ? g->v6bits : g->v4bits);
        return 0;
    }
    /* not an address (moat check with a made-up client): the text itself */
    buf_reset(id);
    buf_puts(id, st->client_addr);
    str_lower(id->data);
    buf_puts(how, "client address as given");
    return 0;
}

ss_status_t greylist_step(greylist_t *g, ss_ctx_t *c)
{
    const pstate_t *st = c->st;
    if (c->cmd != PCMD_RCPT) {
        ss_trace(c, "applies at RCPT -> DUNNO");
        return SS_DUNNO;
    }
    if (!st->recipient || !*st->recipient || !st->client_addr || !*st->client_addr) {
        ss_trace(c, "no recipient or client address -> DUNNO");
        return SS_DUNNO;
    }
    int r = client_allowed(g, c);
    if (r == 0)
        r = rcpt_allowed(g, c);
    if (r > 0)
        return SS_DUNNO;
    if (r < 0)
        return SS_REJECT;

    ss_status_t out = SS_DUNNO;
    buf_t id = BUF_INIT, how = BUF_INIT, snorm = BUF_INIT, key = BUF_INIT, okkey = BUF_INIT, tmp = BUF_INIT;
    /* Every wait of this step starts in the same pass (DNS allow lists
     * and both store reads), so a client waits for one round trip. */
    int listed = dnswl_listed(g, c);
    if (client_identity(g, c, &id, &how) < 0) {
        out = SS_PENDING;   /* the SPF answers first: the store keys depend on them */
        goto done;
    }
    greylist_sender_norm(st->sender ? st->sender : "", &snorm);
    greylist_key(buf_cstr(&id), buf_cstr(&snorm), st->recipient, &key);
    buf_printf(&okkey, "greyok:%s", buf_cstr(&id));
    ss_value_t okv = {0}, tv = {0};
    ss_get_t okr = g->auto_count > 0 ? ss_store_get(c, buf_cstr(&okkey), &okv) : SG_MISSING;
    ss_get_t tr = ss_store_get(c, buf_cstr(&key), &tv);
    if (listed == 2 || okr == SG_PENDING || tr == SG_PENDING) {
        out = SS_PENDING;
        goto done;
    }
    if (listed == 1)
        goto done;
    ss_trace(c, "triplet %s (identity %s: %s)", buf_cstr(&key) + 5, buf_cstr(&id), buf_cstr(&how));
    if (okr == SG_ERROR || tr == SG_ERROR) {
        out = ss_store_failed(c, okr == SG_ERROR ? okv.error : tv.error);
        goto done;
    }
    unsigned ttl = (unsigned)g->max_age;
    if (okr == SG_FOUND) {
        long long passes = strtoll(okv.data, NULL, 10);
        if (passes >= g->auto_count) {
            ss_trace(c, "%s passed greylisting %lld times (greylist_auto_allow_count = %lld): auto-allowed -> DUNNO",
                     buf_cstr(&id), passes, g->auto_count);
            /* still in use: keep it for another greylist_max_age */
            ss_fx_set(c, buf_cstr(&okkey), okv.data, ttl);
            goto done;
        }
    }
    grey_rec_t rec;
    bool have = tr == SG_FOUND && greylist_rec_parse(tv.data, &rec);
    if (tr == SG_FOUND && !have)
        ss_log(c, "warning", "check_greylist: %s: unreadable value \"%.64s\": starting again", buf_cstr(&key),
               tv.data);
    long long now = (long long)c->now, secs = 0;
    grey_decision_t d = greylist_decide(have ? &rec : NULL, now, g->delay, g->window, &secs);
    switch (d) {
    case GD_NEW:
    case GD_EXPIRED:
        rec = (grey_rec_t){now, now, false};
        ss_trace(c, "%s: greylisted for %llds", d == GD_NEW ? "new triplet" : "first retry after greylist_retry_window, "
                                                                          "starting again",
                 secs);
        out = ss_reply(c, SS_REJECT, 451, "4.7.1", "Greylisted, please try again in %lld seconds", secs);
        break;
    case GD_WAIT:
        rec.last = now;
        ss_trace(c, "retried after %llds, before greylist_delay (%llds): %llds to go", now - rec.first, g->delay, secs);
        out = ss_reply(c, SS_REJECT, 451, "4.7.1", "Greylisted, please try again in %lld seconds", secs);
        break;
    case GD_PASS:
        rec.last = now;
        rec.passed = true;
        ss_trace(c, "retried after %llds: passes -> DUNNO", secs);
        ss_log(c, "info", "greylist: pass: delayed %lld s: triplet %s", secs, buf_cstr(&key) + 5);
        if (g->auto_count > 0)
            ss_fx_incr(c, buf_cstr(&okkey), 1, ttl);
        if (g->header && c->prepend)
            greylist_header(g->myhostname, secs, c->now, c->prepend);
        break;
    case GD_PASSED:
        rec.last = now;
        ss_trace(c, "passed before (first seen %llds ago) -> DUNNO", now - rec.first);
        break;
    }
    greylist_rec_format(&rec, &tmp);
    ss_fx_set(c, buf_cstr(&key), buf_cstr(&tmp), ttl);
done:
    buf_free(&id);
    buf_free(&how);
    buf_free(&snorm);
    buf_free(&key);
    buf_free(&okkey);
    buf_free(&tmp);
    return out;
}
