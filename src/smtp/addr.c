/*
 * addr: parse the path argument of MAIL FROM / RCPT TO (see addr.h).
 *
 * A single left-to-right pass over a NUL-terminated string: it never looks
 * past the first NUL (every multi-byte check stops at a byte that cannot
 * match, and NUL never matches), and it allocates only after the whole path
 * has been accepted, so a failure leaves nothing to free.  The result owns
 * three malloc'd strings released by addr_free().
 *
 * Policy, on purpose stricter than Postfix where leniency would let two
 * programs read one address two ways: no empty dot-atom labels, no control
 * characters, no general address literals, no 8-bit bytes without
 * SMTPUTF8, and UTF-8 only when well formed.
 */
#include "smtp/addr.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <string.h>

#define LOCAL_MAX 256  /* octets of the local part as written */
#define DOMAIN_MAX 255 /* octets of the domain */
#define LABEL_MAX 63
#define FULL_MAX 512   /* octets of local@domain as stored */
#define ROUTE_MAX 512  /* octets of an (ignored) source route */

static const char WHY_SENDER[] = "5.1.7 Bad sender address syntax";
static const char WHY_RCPT[] = "5.1.3 Bad recipient address syntax";
static const char WHY_UTF8[] = "5.6.7 Must declare SMTPUTF8 to send unicode address";

/* Failure reasons inside the parser; mapped to reply text at the end. */
enum { E_OK = 0, E_SYNTAX, E_UTF8 };

/* RFC 5322 atext, ASCII part. */
static bool is_atext(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-';
}

/*
 * Length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0.
 * Rejects overlong forms, surrogates, code points above U+10FFFF and the C1
 * controls U+0080..U+009F (controls are refused in ASCII too).  Stops at
 * the first byte that cannot continue the sequence, so a NUL ends it.
 */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* overlong below U+0800 */
    else if (c == 0xED)
        hi = 0x9F; /* surrogates U+D800..U+DFFF */
    else if (c == 0xF0)
        lo = 0x90; /* overlong below U+10000 */
    else if (c == 0xF4)
        hi = 0x8F; /* beyond U+10FFFF */
    if (p[1] < lo || p[1] > hi)
        return 0;
    if (c == 0xC2 && p[1] <= 0x9F)
        return 0; /* C1 control */
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* Validate a non-ASCII sequence at p: its length, or 0 with *err set. */
static size_t utf8_check(const unsigned char *p, bool utf8, int *err)
{
    if (!utf8) {
        *err = E_UTF8;
        return 0;
    }
    size_t n = utf8_len(p);
    if (!n)
        *err = E_SYNTAX;
    return n;
}

/* Dotted quad with 1-3 digit parts 0..255 and no leading zeros (a leading
 * zero reads as octal to some resolvers: one literal, one meaning). */
static bool valid_ipv4(const char *s, size_t len)
{
    char tmp[16];
    struct in_addr a;
    if (len == 0 || len >= sizeof tmp)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    /* glibc's inet_pton(AF_INET) takes exactly the dotted-quad form and
     * refuses leading zeros; check the characters anyway so nothing else
     * slips through on another libc. */
    for (size_t i = 0; i < len; i++)
        if (!((tmp[i] >= '0' && tmp[i] <= '9') || tmp[i] == '.'))
            return false;
    return inet_pton(AF_INET, tmp, &a) == 1;
}

static bool valid_ipv6(const char *s, size_t len)
{
    char tmp[64];
    struct in6_addr a;
    if (len == 0 || len >= sizeof tmp)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (lc(c) >= 'a' && lc(c) <= 'f') || c == ':' || c == '.'))
            return false;
    }
    memcpy(tmp, s, len);
    tmp[len] = 0;
    return inet_pton(AF_INET6, tmp, &a) == 1;
}

/* "[...]" of length len (brackets included): an IPv4 or IPv6 literal. */
static bool valid_literal(const char *s, size_t len)
{
    if (len < 3 || s[0] != '[' || s[len - 1] != ']')
        return false;
    s++;
    len -= 2;
    if (len > 5 && str_nieq(s, "IPv6:", 5))
        return valid_ipv6(s + 5, len - 5);
    return valid_ipv4(s, len);
}

/* A hostname of len octets: LDH labels (plus UTF-8 when allowed), no empty
 * label, no trailing dot, no hyphen at either end of a label. */
static int check_hostname(const char *s, size_t len, bool utf8)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    int err = E_OK;

    if (len == 0 || len > DOMAIN_MAX)
        return E_SYNTAX;
    while (p < end) {
        const unsigned char *label = p;
        unsigned char last = 0;
        while (p < end && *p != '.') {
            if (*p >= 0x80) {
                size_t n = utf8_check(p, utf8, &err);
                if (!n || n > (size_t)(end - p))
                    return err ? err : E_SYNTAX;
                last = *p;
                p += n;
            } else if (is_ldh(*p)) {
                if (*p == '-' && p == label)
                    return E_SYNTAX;
                last = *p++;
            } else {
                return E_SYNTAX;
            }
        }
        if (p == label || p - label > LABEL_MAX || last == '-')
            return E_SYNTAX;
        if (p < end && ++p == end)
            return E_SYNTAX; /* trailing dot */
    }
    return E_OK;
}

static int check_domain(const char *s, size_t len, bool utf8)
{
    if (len > DOMAIN_MAX)
        return E_SYNTAX;
    if (len > 0 && s[0] == '[')
        return valid_literal(s, len) ? E_OK : E_SYNTAX;
    return check_hostname(s, len, utf8);
}

bool addr_valid_domain(const char *domain, bool utf8)
{
    return domain && check_domain(domain, strlen(domain), utf8) == E_OK;
}

/* The extent of a domain starting at s: through the closing "]" of a
 * literal, else up to a byte that can end a domain in some context. */
static size_t domain_span(const char *s)
{
    if (*s == '[') {
        const char *q = strchr(s, ']');
        return q ? (size_t)(q - s) + 1 : strlen(s);
    }
    return strcspn(s, "> \t,:");
}

/* Is the text a dot-atom (so it needs no quotes)?  With utf8, well-formed
 * non-ASCII counts as atext (RFC 6531). */
static bool is_dot_atom(const char *s, size_t len, bool utf8)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    bool at_label_start = true;
    if (len == 0)
        return false;
    while (p < end) {
        if (*p == '.') {
            if (at_label_start)
                return false;
            at_label_start = true;
            p++;
        } else if (*p >= 0x80) {
            size_t n = utf8 ? utf8_len(p) : 0;
            if (!n || n > (size_t)(end - p))
                return false;
            p += n;
            at_label_start = false;
        } else if (is_atext(*p)) {
            p++;
            at_label_start = false;
        } else {
            return false;
        }
    }
    return !at_label_start;
}

/* The pieces of an accepted path, built on the stack so that nothing is
 * allocated until the whole path has been accepted.  The bounds are the
 * limits above: a quoted local part re-quoted for full is never longer
 * than it was as written, so full always fits. */
typedef struct {
    char local[LOCAL_MAX + 1];
    size_t llen;
    char domain[DOMAIN_MAX + 1];
    size_t dlen;
    char full[LOCAL_MAX + 1 + DOMAIN_MAX + 1];
    size_t flen;
} parts_t;

static int put_local(parts_t *r, const void *p, size_t n)
{
    if (r->llen + n > LOCAL_MAX)
        return E_SYNTAX;
    memcpy(r->local + r->llen, p, n);
    r->llen += n;
    r->local[r->llen] = 0;
    return E_OK;
}

static int put_full(parts_t *r, const void *p, size_t n)
{
    if (r->flen + n > FULL_MAX || r->flen + n >= sizeof r->full)
        return E_SYNTAX;
    memcpy(r->full + r->flen, p, n);
    r->flen += n;
    r->full[r->flen] = 0;
    return E_OK;
}

/*
 * Parse a local part at *sp into r->local (unquoted) and r->full (quoted
 * only when it must be).  Leaves *sp at the first byte after it.
 */
static int parse_local(const char **sp, bool utf8, parts_t *r)
{
    const unsigned char *p = (const unsigned char *)*sp, *start = p;
    int err = E_OK;

    if (*p == '"') {
        p++;
        for (;;) {
            if ((size_t)(p - start) > LOCAL_MAX)
                return E_SYNTAX;
            if (*p == '"') {
                p++;
                break;
            }
            if (*p == '\\') {
                /* RFC 5321 quoted-pairSMTP: backslash + printable ASCII. */
                if (p[1] < 0x20 || p[1] > 0x7e)
                    return p[1] >= 0x80 && !utf8 ? E_UTF8 : E_SYNTAX;
                err = put_local(r, p + 1, 1);
                p += 2;
            } else if (*p >= 0x80) {
                size_t n = utf8_check(p, utf8, &err);
                if (!n)
                    return err;
                err = put_local(r, p, n);
                p += n;
            } else if (*p >= 0x20 && *p != 0x7f) {
                err = put_local(r, p++, 1);
            } else {
                return E_SYNTAX; /* control character, or unterminated */
            }
            if (err)
                return err;
        }
        if ((size_t)(p - start) > LOCAL_MAX)
            return E_SYNTAX;
        if (is_dot_atom(r->local, r->llen, utf8)) {
            err = put_full(r, r->local, r->llen);
        } else {
            err = put_full(r, "\"", 1);
            for (size_t i = 0; i < r->llen && !err; i++) {
                if (r->local[i] == '"' || r->local[i] == '\\')
                    err = put_full(r, "\\", 1);
                if (!err)
                    err = put_full(r, r->local + i, 1);
            }
            if (!err)
                err = put_full(r, "\"", 1);
        }
        if (err)
            return err;
    } else {
        bool at_label_start = true;
        for (;;) {
            if ((size_t)(p - start) > LOCAL_MAX)
                return E_SYNTAX;
            if (*p == '.') {
                if (at_label_start)
                    return E_SYNTAX;
                at_label_start = true;
                p++;
            } else if (*p >= 0x80) {
                size_t n = utf8_check(p, utf8, &err);
                if (!n)
                    return err;
                p += n;
                at_label_start = false;
            } else if (is_atext(*p)) {
                p++;
                at_label_start = false;
            } else {
                break;
            }
        }
        if (at_label_start)
            return E_SYNTAX; /* empty, or ends with a dot */
        if ((err = put_local(r, start, (size_t)(p - start))) != E_OK ||
            (err = put_full(r, start, (size_t)(p - start))) != E_OK)
            return err;
    }
    *sp = (const char *)p;
    return E_OK;
}

/* Skip an RFC 5321 A-d-l ("@a,@b:") at *sp, validating each domain. */
static int skip_route(const char **sp, bool utf8)
{
    const char *p = *sp, *start = p;
    for (;;) {
        if (*p != '@')
            return E_SYNTAX;
        p++;
        size_t n = domain_span(p);
        int err = check_domain(p, n, utf8);
        if (err)
            return err;
        p += n;
        if ((size_t)(p - start) > ROUTE_MAX)
            return E_SYNTAX;
        if (*p == ':') {
            *sp = p + 1;
            return E_OK;
        }
        if (*p != ',')
            return E_SYNTAX;
        p++;
    }
}

/* Parse "local[@domain]" at *sp into r. */
static int parse_mailbox(const char **sp, bool utf8, parts_t *r)
{
    const char *p = *sp;
    int err = parse_local(&p, utf8, r);
    if (err)
        return err;

    if (*p == '@') {
        p++;
        size_t n = domain_span(p);
        if ((err = check_domain(p, n, utf8)) != E_OK)
            return err;
        /* check_domain bounds n by DOMAIN_MAX. */
        memcpy(r->domain, p, n);
        r->domain[n] = 0;
        r->dlen = n;
        /* Lower-case ASCII only; the literal tag is written one way. */
        str_lower(r->domain);
        if (r->domain[0] == '[' && str_istarts(r->domain + 1, "ipv6:"))
            memcpy(r->domain + 1, "IPv6", 4);
        if ((err = put_full(r, "@", 1)) != E_OK ||
            (err = put_full(r, r->domain, r->dlen)) != E_OK)
            return err;
        p += n;
    }
    *sp = p;
    return E_OK;
}

static bool has_8bit(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

/* Only a space (or the end) may follow a path: "<a@b>x" is not a path
 * followed by something, it is a typo or an attempt to confuse. */
static bool path_end(char c)
{
    return c == 0 || c == ' ' || c == '\t';
}

int addr_parse_path(const char *s, unsigned flags, bool is_sender, addr_t *out,
                    const char **rest, const char **why)
{
    bool utf8 = (flags & ADDR_UTF8) != 0;
    parts_t r;
    const char *p = s;
    bool is_null = false;
    int err = E_OK;

    memset(out, 0, sizeof *out);
    r.llen = r.dlen = r.flen = 0;
    r.local[0] = r.domain[0] = r.full[0] = 0;
    while (*p == ' ' || *p == '\t')
        p++;

    if (*p == '<') {
        p++;
        if (*p == '>') {
            if (!(flags & ADDR_ALLOW_NULL))
                err = E_SYNTAX;
            is_null = true;
            p++;
        } else {
            if (*p == '@')
                err = skip_route(&p, utf8);
            if (!err)
                err = parse_mailbox(&p, utf8, &r);
            if (!err && *p++ != '>')
                err = E_SYNTAX;
        }
    } else {
        err = parse_mailbox(&p, utf8, &r);
    }
    if (!err && !path_end(*p))
        err = E_SYNTAX;
    if (err) {
        if (why)
            *why = err == E_UTF8 ? WHY_UTF8 : is_sender ? WHY_SENDER : WHY_RCPT;
        return -1;
    }

    out->is_null = is_null;
    out->full = xstrndup(r.full, r.flen);
    out->local = xstrndup(r.local, r.llen);
    out->domain = xstrndup(r.domain, r.dlen);
    out->is_utf8 = has_8bit(r.full);
    if (rest)
        *rest = p;
    return 0;
}

void addr_free(addr_t *a)
{
    if (!a)
        return;
    xfree(&a->full);
    xfree(&a->local);
    xfree(&a->domain);
    a->is_null = a->is_utf8 = false;
}
