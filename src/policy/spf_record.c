/*
 * spf_record: the syntax of an SPF record (RFC 7208 sections 4.5, 4.6,
 * 5 and 6): record selection ("v=spf1" then a space or the end), terms
 * split on spaces only, mechanisms with their qualifiers, domain-specs
 * and dual CIDR lengths, ip4/ip6 networks, and the modifiers (redirect=
 * and exp= at most once each, unknown modifiers checked and dropped).
 *
 * The whole record is checked before anything is evaluated, so a
 * syntax error anywhere is a permerror even when an earlier mechanism
 * would have matched (section 4.6).  Owns the parsed copy it returns;
 * never does DNS, never logs.  Error texts name the offending term with
 * every byte outside printable ASCII written as \xHH, so they can go to
 * a log line as they are.
 */
#include "policy/spf-private.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }

enum { TERM_SHOWN_MAX = 80 };

/* "term" as it goes into an error text. */
static void put_term(buf_t *why, const char *s, size_t len)
{
    size_t shown = len > TERM_SHOWN_MAX ? TERM_SHOWN_MAX : len;
    buf_putc(why, '"');
    for (size_t i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            buf_putc(why, (char)ch);
        else
            buf_printf(why, "\\x%02x", ch);
    }
    if (shown < len)
        buf_puts(why, "...");
    buf_putc(why, '"');
}

static int term_error(buf_t *why, const char *s, size_t len, const char *reason)
{
    buf_puts(why, "term ");
    put_term(why, s, len);
    buf_printf(why, ": %s", reason);
    return -1;
}

bool spf_is_record(const char *txt)
{
    return str_nieq(txt, "v=spf1", 6) && (txt[6] == 0 || txt[6] == ' ');
}

/* A prefix length as RFC 7208 writes it: no leading zero, at most max. */
static bool parse_prefix(const char *s, size_t len, int max, int *out)
{
    if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
        return false;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* The '/' of a trailing "/DIGITS" in s[0, len), or NULL. */
static const char *trailing_prefix(const char *s, size_t len)
{
    size_t i = len;
    while (i > 0 && is_digit((unsigned char)s[i - 1]))
        i--;
    if (i == len || i == 0 || s[i - 1] != '/')
        return NULL;
    return s + i - 1;
}

/* ip4-network: four decimal octets, no leading zeros (section 5.6). */
static bool parse_ip4(const char *s, size_t len, unsigned char out[4])
{
    size_t i = 0;
    for (int k = 0; k < 4; k++) {
        if (k) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < len && is_digit((unsigned char)s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || (i < len && is_digit((unsigned char)s[i])))
            return false;
        if ((i - start > 1 && s[start] == '0') || v > 255)
            return false;
        out[k] = (unsigned char)v;
    }
    return i == len;
}

static bool parse_ip6(const char *s, size_t len, unsigned char out[16])
{
    char tmp[INET6_ADDRSTRLEN + 8];
    if (len == 0 || len >= sizeof tmp || !memchr(s, ':', len))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    return inet_pton(AF_INET6, tmp, out) == 1;
}

static const struct {
    const char *name;
    spf_mech_t mech;
} mechs[] = {
    {"all", SPF_M_ALL},     {"include", SPF_M_INCLUDE}, {"a", SPF_M_A},     {"mx", SPF_M_MX},
    {"ptr", SPF_M_PTR},     {"ip4", SPF_M_IP4},         {"ip6", SPF_M_IP6}, {"exists", SPF_M_EXISTS},
};

/* "a" and "mx": [":" domain-spec] [dual-cidr-length] in rest. */
static int parse_dual(const char *t, size_t tlen, const char *rest, size_t rlen, spf_term_t *term, buf_t *why)
{
    bool colon = rlen > 0 && rest[0] == ':';
    const char *s = colon ? rest + 1 : rest;
    size_t len = colon ? rlen - 1 : rlen;
    const char *slash = trailing_prefix(s, len);
    if (slash && slash > s && slash[-1] == '/') {
        if (!parse_prefix(slash + 1, (size_t)(s + len - slash - 1), 128, &term->cidr6))
            return term_error(why, t, tlen, "bad IPv6 CIDR length (0..128)");
        len = (size_t)(slash - 1 - s);
        slash = trailing_prefix(s, len);
    }
    if (slash) {
        if (!parse_prefix(slash + 1, (size_t)(s + len - slash - 1), 32, &term->cidr4))
            return term_error(why, t, tlen, "bad IPv4 CIDR length (0..32)");
        len = (size_t)(slash - s);
    }
    if (!colon) {
        if (len)
            return term_error(why, t, tlen, "junk after the mechanism name");
        return 0;
    }
    if (len == 0)
        return term_error(why, t, tlen, "empty domain-spec");
    buf_t reason = BUF_INIT;
    if (!spf_macro_string_ok(s, len, SPF_MS_DOMAIN, &reason)) {
        term_error(why, t, tlen, buf_cstr(&reason));
        buf_free(&reason);
        return -1;
    }
    buf_free(&reason);
    term->spec = xstrndup(s, len);
    return 0;
}

/* ":" domain-spec, required (include, exists) or optional (ptr). */
static int parse_spec(const char *t, size_t tlen, const char *rest, size_t rlen, bool required, spf_term_t *term,
                      buf_t *why)
{
    if (rlen == 0) {
        if (required)
            return term_error(why, t, tlen, "needs \":domain\"");
        return 0;
    }
    if (rest[0] != ':')
        return term_error(why, t, tlen, "junk after the mechanism name");
    if (rlen == 1)
        return term_error(why, t, tlen, "empty domain-spec");
    buf_t reason = BUF_INIT;
    if (!spf_macro_string_ok(rest + 1, rlen - 1, SPF_MS_DOMAIN, &reason)) {
        term_error(why, t, tlen, buf_cstr(&reason));
        buf_free(&reason);
        return -1;
    }
    buf_free(&reason);
    term->spec = xstrndup(rest + 1, rlen - 1);
    return 0;
}

static int parse_network(const char *t, size_t tlen, const char *rest, size_t rlen, bool v6, spf_term_t *term,
                         buf_t *why)
{
    if (rlen < 2 || rest[0] != ':')
        return term_error(why, t, tlen, v6 ? "needs \":network\" (ip6:2001:db8::/32)"
                                           : "needs \":network\" (ip4:192.0.2.0/24)");
    const char *s = rest + 1;
    size_t len = rlen - 1;
    const char *slash = trailing_prefix(s, len);
    if (slash) {
        if (!parse_prefix(slash + 1, (size_t)(s + len - slash - 1), v6 ? 128 : 32, v6 ? &term->cidr6 : &term->cidr4))
            return term_error(why, t, tlen, v6 ? "bad IPv6 CIDR length (0..128)" : "bad IPv4 CIDR length (0..32)");
        len = (size_t)(slash - s);
    }
    if (v6 ? !parse_ip6(s, len, term->net) : !parse_ip4(s, len, term->net))
        return term_error(why, t, tlen, v6 ? "bad IPv6 network" : "bad IPv4 network");
    return 0;
}

/* A modifier: name "=" value.  known: redirect and exp. */
static int parse_modifier(const char *t, size_t tlen, size_t namelen, spf_record_t *r, buf_t *why)
{
    const char *val = t + namelen + 1;
    size_t vlen = tlen - namelen - 1;
    char **slot = NULL;
    if (namelen == 8 && str_nieq(t, "redirect", 8))
        slot = &r->redirect;
    else if (namelen == 3 && str_nieq(t, "exp", 3))
        slot = &r->exp;
    buf_t reason = BUF_INIT;
    int rc = 0;
    if (!slot) {
        /* Unknown modifiers are ignored, but only when well formed. */
        if (!spf_macro_string_ok(val, vlen, SPF_MS_MODIFIER, &reason))
            rc = term_error(why, t, tlen, buf_cstr(&reason));
    } else if (*slot) {
        rc = term_error(why, t, tlen, "appears twice (section 6)");
    } else if (vlen == 0) {
        rc = term_error(why, t, tlen, "empty domain-spec");
    } else if (!spf_macro_string_ok(val, vlen, SPF_MS_DOMAIN, &reason)) {
        rc = term_error(why, t, tlen, buf_cstr(&reason));
    } else {
        *slot = xstrndup(val, vlen);
    }
    buf_free(&reason);
    return rc;
}

static int parse_term(const char *t, size_t tlen, spf_record_t *r, size_t *cap, buf_t *why)
{
    /* name "=" ...: a modifier (section 4.6.1: '=' right after a name) */
    if (is_alpha((unsigned char)t[0])) {
        size_t j = 1;
        while (j < tlen && (is_alpha((unsigned char)t[j]) || is_digit((unsigned char)t[j]) || t[j] == '-' ||
                            t[j] == '_' || t[j] == '.'))
            j++;
        if (j < tlen && t[j] == '=')
            return parse_modifier(t, tlen, j, r, why);
    }
    spf_term_t term = {.qual = '+', .cidr4 = 32, .cidr6 = 128};
    size_t i = 0;
    if (t[0] && strchr("+-~?", t[0])) {
        term.qual = t[0];
        i = 1;
    }
    size_t start = i;
    while (i < tlen && (is_alpha((unsigned char)t[i]) || is_digit((unsigned char)t[i])))
        i++;
    size_t k = 0;
    while (k < ARRAY_LEN(mechs) && !(strlen(mechs[k].name) == i - start && str_nieq(t + start, mechs[k].name, i - start)))
        k++;
    if (k == ARRAY_LEN(mechs))
        return term_error(why, t, tlen, !(i > start && i < tlen && t[i] == '=') ? "unknown mechanism"
                                        : start ? "a modifier takes no qualifier"
                                                : "not a valid modifier name");
    term.mech = mechs[k].mech;
    const char *rest = t + i;
    size_t rlen = tlen - i;
    int rc = 0;
    switch (term.mech) {
    case SPF_M_ALL:
        if (rlen)
            rc = term_error(why, t, tlen, "\"all\" takes no argument");
        break;
    case SPF_M_INCLUDE:
    case SPF_M_EXISTS:
        rc = parse_spec(t, tlen, rest, rlen, true, &term, why);
        break;
    case SPF_M_PTR:
        rc = parse_spec(t, tlen, rest, rlen, false, &term, why);
        break;
    case SPF_M_A:
    case SPF_M_MX:
        rc = parse_dual(t, tlen, rest, rlen, &term, why);
        break;
    case SPF_M_IP4:
    case SPF_M_IP6:
        rc = parse_network(t, tlen, rest, rlen, term.mech == SPF_M_IP6, &term, why);
        break;
    }
    if (rc != 0) {
        free(term.spec);
        return -1;
    }
    if (term.mech == SPF_M_ALL)
        r->has_all = true;
    term.text = xstrndup(t, tlen);
    if (r->n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        r->terms = xrealloc(r->terms, *cap * sizeof *r->terms);
    }
    r->terms[r->n++] = term;
    return 0;
}

int spf_record_parse(const char *txt, spf_record_t *r, buf_t *why)
{
    memset(r, 0, sizeof *r);
    if (!spf_is_record(txt)) {
        buf_puts(why, "not an SPF record (it must start with \"v=spf1\")");
        return -1;
    }
    size_t cap = 0;
    const char *p = txt + 6;
    for (;;) {
        /* Terms are separated by spaces, and by nothing else (4.6.1). */
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, ' ');
        if (!e)
            e = p + strlen(p);
        if (parse_term(p, (size_t)(e - p), r, &cap, why) != 0) {
            spf_record_free(r);
            return -1;
        }
        p = e;
    }
    return 0;
}

void spf_record_free(spf_record_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->terms[i].text);
        free(r->terms[i].spec);
    }
    free(r->terms);
    free(r->redirect);
    free(r->exp);
    memset(r, 0, sizeof *r);
}

int spf_record_check(const char *record, buf_t *why)
{
    spf_record_t r;
    buf_reset(why);
    if (spf_record_parse(record, &r, why) != 0)
        return -1;
    spf_record_free(&r);
    return 0;
}
