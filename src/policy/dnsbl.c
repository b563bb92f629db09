/*
 * dnsbl: see dnsbl.h.  The pure half of the DNS-list restrictions: list
 * specifications and reply filters, query names, reply templates, and the
 * health book-keeping of each list.
 *
 * A reply filter compiles to one 256-bit set per octet, so matching an
 * answer is four bit tests whatever the filter's shape.  The health
 * tracker keeps one small record per zone in a flat array (a handful of
 * lists per configuration) and takes the time from its caller.
 *
 * Never does I/O, reads a clock or logs: restrict.c owns the lookups, the
 * time and the log lines, so everything here is deterministic and can be
 * fuzzed and tested without a network.
 */
#include "policy/dnsbl.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    NAME_MAX_LEN = 253,      /* RFC 1035: a name in text form, without the final dot */
    LABEL_MAX_LEN = 63,
    WEIGHT_MAX = 1000000,
    TEMPLATE_MAX_DEPTH = 16, /* ${a?${b?...}} nesting; deeper is copied as written */
};

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_label_char(int c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '_'; }

/* ------------------------------------------------------------ DNS names */

/* Append name lower-cased, without one trailing dot, checking the label
 * rules.  false: empty, an empty or long label, a bad character. */
static bool put_labels(buf_t *out, const char *name, size_t len)
{
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (is_label_char(c)) {
            if (++label > LABEL_MAX_LEN)
                return false;
        } else {
            return false;
        }
        buf_putc(out, (char)lc(c));
    }
    return label > 0;
}

/* ------------------------------------------------------- sites, filters */

typedef struct filter {
    uint8_t bits[4][32];   /* bit v of octet k: value v is allowed */
} filter_t;

static void set_bit(uint8_t *set, unsigned v) { set[v >> 3] |= (uint8_t)(1u << (v & 7)); }
static bool has_bit(const uint8_t *set, unsigned v) { return set[v >> 3] & (1u << (v & 7)); }

/* One octet value: 1..3 digits, 0..255.  On failure *why says what. */
static bool parse_octet_value(const char **pp, unsigned *v, const char **why)
{
    const char *p = *pp;
    if (!is_digit((unsigned char)*p)) {
        *why = "expected a number";
        return false;
    }
    unsigned n = 0;
    size_t digits = 0;
    while (is_digit((unsigned char)*p)) {
        if (++digits > 3) {
            *why = "more than three digits in an octet";
            return false;
        }
        n = n * 10 + (unsigned)(*p++ - '0');
    }
    if (n > 255) {
        *why = "octet value out of range 0..255";
        return false;
    }
    *v = n;
    *pp = p;
    return true;
}

/* "[2;4..9;11]": ';'-separated numbers and ranges, at least one item. */
static bool parse_octet_set(const char **pp, uint8_t *set, const char **why)
{
    const char *p = *pp + 1;   /* past '[' */
    for (;;) {
        unsigned lo, hi;
        if (!parse_octet_value(&p, &lo, why)) {
            if (*p == ']' || *p == ';')
                *why = "empty item in [...]";
            return false;
        }
        hi = lo;
        if (p[0] == '.' && p[1] == '.') {
            p += 2;
            if (!parse_octet_value(&p, &hi, why))
                return false;
            if (hi < lo) {
                *why = "range a..b with a > b";
                return false;
            }
        }
        for (unsigned v = lo; v <= hi; v++)
            set_bit(set, v);
        if (*p == ';') {
            p++;
            continue;
        }
        if (*p == ']') {
            *pp = p + 1;
            return true;
        }
        *why = *p ? "expected ';', '..' or ']' in [...]" : "missing ']'";
        return false;
    }
}

static bool parse_filter(const char *text, filter_t *f, const char **why)
{
    memset(f, 0, sizeof *f);
    const char *p = text;
    for (int k = 0; k < 4; k++) {
        if (*p == '[') {
            if (!parse_octet_set(&p, f->bits[k], why))
                return false;
        } else {
            unsigned v;
            if (!parse_octet_value(&p, &v, why)) {
                if (*p == 0)
                    *why = "need four octets";
                else if (*p == '.')
                    *why = "empty octet";
                return false;
            }
            set_bit(f->bits[k], v);
        }
        if (k < 3) {
            if (*p != '.') {
                *why = *p ? "expected '.' between octets" : "need four octets";
                return false;
            }
            p++;
        } else if (*p) {
            *why = *p == '.' ? "more than four octets" : "junk after the fourth octet";
            return false;
        }
    }
    return true;
}

static bool parse_weight(const char *p, int *w)
{
    bool neg = false;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (!is_digit((unsigned char)*p))
        return false;
    long n = 0;
    for (; *p; p++) {
        if (!is_digit((unsigned char)*p))
            return false;
        n = n * 10 + (*p - '0');
        if (n > WEIGHT_MAX)
            return false;
    }
    *w = neg ? (int)-n : (int)n;
    return true;
}

int dnsbl_site_parse(const char *spec, bool with_weight, dnsbl_site_t *s, buf_t *err)
{
    memset(s, 0, sizeof *s);
    buf_reset(err);
    const char *star = strchr(spec, '*');
    const char *eq = strchr(spec, '=');
    if (eq && star && star < eq)
        eq = NULL;   /* "zone*3=x": the '=' is part of a bad weight */
    size_t zone_len = (size_t)((eq ? eq : star ? star : spec + strlen(spec)) - spec);

    int weight = 1;
    if (star) {
        if (!with_weight) {
            buf_printf(err, "weight \"%s\" not allowed here (only in dnsbl_sites)", star);
            return -1;
        }
        if (!parse_weight(star + 1, &weight)) {
            buf_printf(err, "bad weight \"%s\": need an integer between -%d and %d", star, WEIGHT_MAX,
                       WEIGHT_MAX);
            return -1;
        }
    }
    if (zone_len == 0 || (zone_len == 1 && spec[0] == '.')) {
        buf_puts(err, "empty DNS list name");
        return -1;
    }
    buf_t zone = BUF_INIT;
    if (!put_labels(&zone, spec, zone_len) || zone.len > NAME_MAX_LEN) {
        buf_printf(err, "bad DNS list name \"%.*s\": need labels of letters, digits, '-' and '_'",
                   (int)zone_len, spec);
        buf_free(&zone);
        return -1;
    }
    filter_t *f = NULL;
    char *ftext = NULL;
    if (eq) {
        size_t flen = (size_t)((star ? star : spec + strlen(spec)) - (eq + 1));
        ftext = xstrndup(eq + 1, flen);
        f = xmalloc(sizeof *f);
        const char *why = "empty";
        if (flen == 0 || !parse_filter(ftext, f, &why)) {
            buf_printf(err, "bad reply filter \"%s\": %s", ftext, flen ? why : "empty");
            xfree(&ftext);
            xfree(&f);
            buf_free(&zone);
            return -1;
        }
    }
    s->zone = buf_steal(&zone);
    s->filter_text = ftext;
    s->weight = weight;
    s->priv = f;
    return 0;
}

void dnsbl_site_free(dnsbl_site_t *s)
{
    if (!s)
        return;
    xfree(&s->zone);
    xfree(&s->filter_text);
    xfree(&s->priv);
    s->weight = 0;
}

/* Strict dotted quad only: the answers come from our own resolver as text. */
static bool parse_v4(const char *addr, unsigned char out[4])
{
    return addr && inet_pton(AF_INET, addr, out) == 1;
}

bool dnsbl_site_match(const dnsbl_site_t *s, const char *addr)
{
    unsigned char a[4];
    if (!parse_v4(addr, a))
        return false;
    const filter_t *f = s->priv;
    if (!f)
        return a[0] == 127;
    for (int k = 0; k < 4; k++)
        if (!has_bit(f->bits[k], a[k]))
            return false;
    return true;
}

dnsbl_ans_t dnsbl_classify(const char *addr)
{
    unsigned char a[4];
    if (!parse_v4(addr, a) || a[0] != 127)
        return DNSBL_ANS_FOREIGN;
    if (a[1] == 255 && a[2] == 255)
        return DNSBL_ANS_ERRCODE;
    return DNSBL_ANS_LISTED;
}

const char *dnsbl_ans_name(dnsbl_ans_t a)
{
    switch (a) {
    case DNSBL_ANS_LISTED: return "listed";
    case DNSBL_ANS_ERRCODE: return "error code";
    case DNSBL_ANS_FOREIGN: return "foreign";
    }
    return "?";
}

/* ----------------------------------------------------------- query names */

static bool finish_name(buf_t *out, const char *zone)
{
    if (!put_labels(out, zone, strlen(zone)) || out->len > NAME_MAX_LEN) {
        buf_reset(out);
        return false;
    }
    return true;
}

bool dnsbl_query_name_addr(const char *addr, const char *zone, buf_t *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char a6[16], a4[4];
    buf_reset(out);
    if (!addr || !zone)
        return false;
    if (inet_pton(AF_INET, addr, a4) != 1) {
        if (inet_pton(AF_INET6, addr, a6) != 1)
            return false;
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a6)) {
            memcpy(a4, a6 + 12, 4);
        } else {
            for (int i = 15; i >= 0; i--) {
                buf_putc(out, hex[a6[i] & 0xf]);
                buf_putc(out, '.');
                buf_putc(out, hex[a6[i] >> 4]);
                buf_putc(out, '.');
            }
            return finish_name(out, zone);
        }
    }
    buf_printf(out, "%u.%u.%u.%u.", a4[3], a4[2], a4[1], a4[0]);
    return finish_name(out, zone);
}

bool dnsbl_query_name_domain(const char *domain, const char *zone, buf_t *out)
{
    buf_reset(out);
    if (!domain || !zone || domain[0] == '[')
        return false;
    size_t len = strlen(domain);
    if (!put_labels(out, domain, len)) {
        buf_reset(out);
        return false;
    }
    /* A last label of digits only is an address, not a domain. */
    const char *last = strrchr(buf_cstr(out), '.');
    if (str_all_digits(last ? last + 1 : buf_cstr(out))) {
        buf_reset(out);
        return false;
    }
    buf_putc(out, '.');
    return finish_name(out, zone);
}

/* ------------------------------------------------------------- templates */

static bool is_name_char(int c) { return is_alpha(c) || is_digit(c) || c == '_'; }

static void put_value(buf_t *out, const char *v)
{
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        buf_putc(out, (c < 0x20 || c >= 0x7f) ? '?' : (char)c);
    }
}

/* The index of the bracket that closes the one before s[i], or n when
 * there is none; brackets of the same kind nest. */
static size_t find_close(const char *s, size_t i, size_t n, char open, char close)
{
    int level = 1;
    for (; i < n; i++) {
        if (s[i] == open)
            level++;
        else if (s[i] == close && --level == 0)
            return i;
    }
    return n;
}

static void expand_span(const char *s, size_t n, template_get_t get, void *arg, buf_t *out, int depth)
{
    size_t i = 0;
    while (i < n) {
        const char *dollar = memchr(s + i, '$', n - i);
        if (!dollar) {
            buf_append(out, s + i, n - i);
            return;
        }
        size_t d = (size_t)(dollar - s);
        buf_append(out, s + i, d - i);
        i = d;
        char next = d + 1 < n ? s[d + 1] : 0;
        if (next == '$') {
            buf_putc(out, '$');
            i = d + 2;
            continue;
        }
        if (next && is_name_char((unsigned char)next)) {
            size_t j = d + 1;
            while (j < n && is_name_char((unsigned char)s[j]))
                j++;
            const char *v = get(arg, s + d + 1, j - d - 1);
            if (v)
                put_value(out, v);
            else
                buf_append(out, s + d, j - d);
            i = j;
            continue;
        }
        if (next != '{' && next != '(') {
            buf_putc(out, '$');
            i = d + 1;
            continue;
        }
        char close = next == '{' ? '}' : ')';
        size_t name = d + 2, j = name;
        while (j < n && is_name_char((unsigned char)s[j]))
            j++;
        if (j == name || j == n || (s[j] != close && s[j] != '?' && s[j] != ':')) {
            /* "${", "${}", "${x y}", "${x": not a reference. */
            buf_putc(out, '$');
            i = d + 1;
            continue;
        }
        size_t end = s[j] == close ? j : find_close(s, j + 1, n, next, close);
        if (end == n) {
            buf_putc(out, '$');   /* never closed */
            i = d + 1;
            continue;
        }
        const char *v = get(arg, s + name, j - name);
        if (!v) {
            buf_append(out, s + d, end + 1 - d);
        } else if (s[j] == close) {
            put_value(out, v);
        } else if ((s[j] == '?') == (*v != 0)) {
            if (depth >= TEMPLATE_MAX_DEPTH)
                buf_append(out, s + j + 1, end - j - 1);
            else
                expand_span(s + j + 1, end - j - 1, get, arg, out, depth + 1);
        }
        i = end + 1;
    }
}

void template_expand(const char *tmpl, template_get_t get, void *arg, buf_t *out)
{
    buf_reset(out);
    expand_span(tmpl, strlen(tmpl), get, arg, out, 0);
}

/* Postfix's dsn_valid: d.ddd.ddd with a class of 2, 4 or 5, ending at a
 * space or the end.  Returns its length, or 0. */
static size_t dsn_len(const char *p)
{
    if (p[0] != '2' && p[0] != '4' && p[0] != '5')
        return 0;
    if (p[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (is_digit((unsigned char)p[i]) && i - start < 3)
            i++;
        if (i == start || is_digit((unsigned char)p[i]))
            return 0;
        if (part == 0) {
            if (p[i] != '.')
                return 0;
            i++;
        }
    }
    return (p[i] == 0 || p[i] == ' ' || p[i] == '\t') ? i : 0;
}

bool dnsbl_reply_parse(const char *reply, int *code, char *dsn, size_t dsn_size, const char **text)
{
    if ((reply[0] != '4' && reply[0] != '5') || !is_digit((unsigned char)reply[1]) ||
        !is_digit((unsigned char)reply[2]) || reply[3] != ' ')
        return false;
    *code = (reply[0] - '0') * 100 + (reply[1] - '0') * 10 + (reply[2] - '0');
    const char *p = reply + 4;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = dsn_len(p);
    char status[16];
    if (n) {
        memcpy(status, p, n);
        status[n] = 0;
        p += n;
        while (*p == ' ' || *p == '\t')
            p++;
    } else {
        str_copy(status, "4.7.1", sizeof status);
    }
    status[0] = reply[0];   /* the reply code has precedence */
    str_copy(dsn, status, dsn_size);
    *text = *p ? p : "Service unavailable";
    return true;
}

/* ----------------------------------------------------------- list health */

typedef struct zone_health {
    char *zone;
    bool domain_list;
    bool broken;
    bool probed;            /* last_probe is meaningful */
    bool retry;             /* the last probe had no answer: due again now */
    time_t last_probe;      /* when the last answered probe was reported */
    bool logged;            /* last_log is meaningful */
    time_t last_log;
    char reason[160];
    dnsbl_health_stats_t st;
} zone_health_t;

struct dnsbl_health {
    time_t period;
    size_t n, cap;
    zone_health_t *z;
};

dnsbl_health_t *dnsbl_health_new(unsigned period_s)
{
    dnsbl_health_t *h = xcalloc(1, sizeof *h);
    h->period = period_s ? (time_t)period_s : 1;
    return h;
}

void dnsbl_health_free(dnsbl_health_t **hp)
{
    if (!hp || !*hp)
        return;
    dnsbl_health_t *h = *hp;
    for (size_t i = 0; i < h->n; i++)
        xfree(&h->z[i].zone);
    xfree(&h->z);
    xfree(hp);
}

static zone_health_t *find_zone(const dnsbl_health_t *h, const char *zone)
{
    for (size_t i = 0; i < h->n; i++)
        if (str_ieq(h->z[i].zone, zone))
            return &h->z[i];
    return NULL;
}

static zone_health_t *get_zone(dnsbl_health_t *h, const char *zone)
{
    zone_health_t *z = find_zone(h, zone);
    if (z)
        return z;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 8;
        h->z = xrealloc(h->z, h->cap * sizeof *h->z);
    }
    z = &h->z[h->n++];
    memset(z, 0, sizeof *z);
    z->zone = xstrdup(zone);
    return z;
}

static const char *test_point(const zone_health_t *z)
{
    return z->domain_list ? "invalid" : "127.0.0.1";
}

void dnsbl_health_domain_list(dnsbl_health_t *h, const char *zone)
{
    get_zone(h, zone)->domain_list = true;
}

bool dnsbl_health_probe_due(dnsbl_health_t *h, const char *zone, time_t now, buf_t *name)
{
    zone_health_t *z = get_zone(h, zone);
    buf_reset(name);
    if (z->probed && !z->retry && now >= z->last_probe && now - z->last_probe < h->period)
        return false;
    buf_printf(name, "%s.%s", z->domain_list ? "invalid" : "1.0.0.127", z->zone);
    return true;
}

void dnsbl_health_probe_answer(dnsbl_health_t *h, const char *zone, const char *addr, bool tempfail, time_t now)
{
    zone_health_t *z = get_zone(h, zone);
    if (tempfail) {
        z->retry = true;   /* due again at the next look */
        return;
    }
    z->probed = true;
    z->retry = false;
    z->last_probe = now;
    z->st.probes++;
    if (!addr) {
        z->broken = false;
        z->reason[0] = 0;
        return;
    }
    z->st.broken_probes++;
    z->broken = true;
    if (!*addr) {
        snprintf(z->reason, sizeof z->reason, "answers the RFC 5782 test point %s", test_point(z));
        return;
    }
    const char *what = "";
    switch (dnsbl_classify(addr)) {
    case DNSBL_ANS_LISTED: what = ""; break;
    case DNSBL_ANS_ERRCODE: what = ", an error code (queries refused or over quota)"; break;
    case DNSBL_ANS_FOREIGN: what = ", outside 127.0.0.0/8"; break;
    }
    snprintf(z->reason, sizeof z->reason, "answers the RFC 5782 test point %s with %.48s%s", test_point(z),
             addr, what);
}

void dnsbl_health_probe(dnsbl_health_t *h, const char *zone, bool listed, bool tempfail, time_t now)
{
    dnsbl_health_probe_answer(h, zone, listed ? "" : NULL, tempfail, now);
}

void dnsbl_health_bad_answer(dnsbl_health_t *h, const char *zone, dnsbl_ans_t what, const char *addr, time_t now)
{
    if (what == DNSBL_ANS_LISTED)
        return;
    zone_health_t *z = get_zone(h, zone);
    if (what == DNSBL_ANS_ERRCODE) {
        z->st.error_codes++;
        snprintf(z->reason, sizeof z->reason, "answered %.48s, an error code (queries refused or over quota)",
                 addr ? addr : "?");
    } else {
        z->st.foreign++;
        snprintf(z->reason, sizeof z->reason, "answered %.48s, outside 127.0.0.0/8", addr ? addr : "?");
    }
    z->broken = true;
}

bool dnsbl_health_broken(const dnsbl_health_t *h, const char *zone, buf_t *reason)
{
    const zone_health_t *z = find_zone(h, zone);
    if (reason)
        buf_reset(reason);
    if (!z || !z->broken)
        return false;
    if (reason)
        buf_puts(reason, z->reason);
    return true;
}

bool dnsbl_health_should_log(dnsbl_health_t *h, const char *zone, time_t now)
{
    zone_health_t *z = find_zone(h, zone);
    if (!z || !z->broken)
        return false;
    if (z->logged && now >= z->last_log && now - z->last_log < h->period)
        return false;
    z->logged = true;
    z->last_log = now;
    return true;
}

void dnsbl_health_ignored(dnsbl_health_t *h, const char *zone)
{
    get_zone(h, zone)->st.ignored++;
}

void dnsbl_health_get_stats(const dnsbl_health_t *h, const char *zone, dnsbl_health_stats_t *s)
{
    const zone_health_t *z = find_zone(h, zone);
    if (z)
        *s = z->st;
    else
        memset(s, 0, sizeof *s);
}
