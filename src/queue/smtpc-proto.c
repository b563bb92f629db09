/*
 * smtpc-proto: the pure protocol pieces of the SMTP/LMTP client: next-hop
 * syntax, the reply parser, EHLO keywords (STARTTLS included), XFORWARD
 * commands and xtext, content dot-stuffing, ports and the "this is me"
 * test.
 *
 * Owns nothing beyond its arguments.  Never does I/O, never blocks,
 * never trusts a server's bytes: every reply line is bounded and checked
 * before a field of it is used.  The fuzzer (tests/fuzz/fuzz_smtpreply.c)
 * drives the reply parser and the EHLO parser with arbitrary bytes.
 */
#include "queue/smtpc-private.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ next hop */

static bool host_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '[' && c != ']' && c != ',' && c != '/' && c != '\\';
}

static bool port_ok(const char *p, size_t n)
{
    if (n == 0 || n > 31)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-'))
            return false;
    }
    return true;
}

static bool is_ip_literal(const char *s)
{
    unsigned char bin[16];
    return inet_pton(AF_INET, s, bin) == 1 || inet_pton(AF_INET6, s, bin) == 1;
}

int smtpc_parse_nexthop(const char *nexthop, bool lmtp, char *host, size_t hostlen, char *port,
                        size_t portlen, bool *mx, bool *unix_path, buf_t *err)
{
    const char *s = nexthop ? nexthop : "";
    *mx = false;
    *unix_path = false;
    if (hostlen)
        host[0] = 0;
    if (portlen)
        port[0] = 0;
    if (lmtp && str_istarts(s, "unix:")) {
        s += 5;
        if (!*s) {
            buf_printf(err, "empty socket path in \"%s\"", nexthop);
            return -1;
        }
        for (const char *q = s; *q; q++) {
            if ((unsigned char)*q < 0x20 || *q == 0x7f) {
                buf_puts(err, "control character in socket path");
                return -1;
            }
        }
        if (strlen(s) >= hostlen) {
            buf_printf(err, "socket path too long in \"%s\"", nexthop);
            return -1;
        }
        str_copy(host, s, hostlen);
        *unix_path = true;
        return 0;
    }
    if (lmtp && str_istarts(s, "inet:"))
        s += 5;
    if (!*s) {
        buf_puts(err, "empty next hop");
        return -1;
    }
    const char *h, *pt = NULL;
    size_t hn;
    bool bracket = false;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close) {
            buf_printf(err, "missing \"]\" in \"%s\"", nexthop);
            return -1;
        }
        h = s + 1;
        hn = (size_t)(close - h);
        if (hn >= 5 && str_nieq(h, "ipv6:", 5)) {
            h += 5;
            hn -= 5;
        }
        if (close[1] == ':') {
            pt = close + 2;
        } else if (close[1]) {
            buf_printf(err, "unexpected text after \"]\" in \"%s\"", nexthop);
            return -1;
        }
        bracket = true;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            buf_printf(err, "an IPv6 address needs brackets in \"%s\"", nexthop);
            return -1;
        }
        h = s;
        hn = colon ? (size_t)(colon - s) : strlen(s);
        if (colon)
            pt = colon + 1;
    }
    if (hn == 0) {
        buf_printf(err, "empty host in \"%s\"", nexthop);
        return -1;
    }
    if (hn >= hostlen || hn > 255) {
        buf_printf(err, "host name too long in \"%s\"", nexthop);
        return -1;
    }
    for (size_t i = 0; i < hn; i++) {
        unsigned char c = (unsigned char)h[i];
        /* Colons belong to IPv6 literals, which only brackets may hold. */
        if (!host_char_ok(c) || (c == ':' && !bracket)) {
            buf_printf(err, "bad character in host of \"%s\"", nexthop);
            return -1;
        }
    }
    memcpy(host, h, hn);
    host[hn] = 0;
    if (pt) {
        size_t pn = strlen(pt);
        if (!port_ok(pt, pn) || pn >= portlen) {
            buf_printf(err, "bad port in \"%s\"", nexthop);
            return -1;
        }
        memcpy(port, pt, pn + 1);
    }
    if (bracket) {
        /* [host] with a name is allowed (no MX lookup, A/AAAA only). */
        *mx = false;
    } else {
        *mx = !lmtp && !is_ip_literal(host);
    }
    return 0;
}

/* --------------------------------------------------------------- replies */

void smtpc_reply_reset(smtpc_reply_t *r)
{
    r->code = 0;
    r->dsn[0] = 0;
    r->nlines = 0;
    buf_reset(&r->text);
    buf_reset(&r->lines);
}

void smtpc_reply_free(smtpc_reply_t *r)
{
    buf_free(&r->text);
    buf_free(&r->lines);
    r->code = 0;
    r->dsn[0] = 0;
    r->nlines = 0;
}

static bool isdig(char c) { return c >= '0' && c <= '9'; }

/* "d.ddd.ddd" at the start of s (followed by a space or the end), its
 * class matching the reply code's first digit. */
static void parse_dsn(const char *s, size_t n, int code, char dsn[16])
{
    size_t i = 0;
    dsn[0] = 0;
    if (n < 5 || !isdig(s[0]) || s[0] - '0' != code / 100 || s[1] != '.')
        return;
    i = 2;
    size_t a = i;
    while (i < n && isdig(s[i]) && i - a < 3)
        i++;
    if (i == a || i >= n || s[i] != '.')
        return;
    i++;
    size_t b = i;
    while (i < n && isdig(s[i]) && i - b < 3)
        i++;
    if (i == b || (i < n && s[i] != ' '))
        return;
    memcpy(dsn, s, i);
    dsn[i] = 0;
}

int smtpc_reply_feed(smtpc_reply_t *r, const char *line, size_t len)
{
    if (len < 3 || !isdig(line[0]) || !isdig(line[1]) || !isdig(line[2]))
        return -1;
    if (line[0] < '2' || line[0] > '5')
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (len > 3 && line[3] != ' ' && line[3] != '-')
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return -1;
    }
    if (r->nlines > 0 && code != r->code)
        return -1;
    if (r->lines.len + len + 1 > SMTPC_REPLY_MAX)
        return -1;
    const char *text = len > 4 ? line + 4 : "";
    size_t tn = len > 4 ? len - 4 : 0;
    if (r->nlines == 0) {
        r->code = code;
        parse_dsn(text, tn, code, r->dsn);
    } else {
        buf_putc(&r->text, ' ');
        buf_putc(&r->lines, '\n');
    }
    buf_append(&r->text, text, tn);
    buf_append(&r->lines, line, len);
    r->nlines++;
    return (len == 3 || line[3] == ' ') ? 1 : 0;
}

/* ------------------------------------------------------------------ EHLO */

static const struct {
    const char *name;
    unsigned bit;
} xf_names[] = {
    {"NAME", SMTPC_XF_NAME}, {"ADDR", SMTPC_XF_ADDR},   {"PORT", SMTPC_XF_PORT},     {"PROTO", SMTPC_XF_PROTO},
    {"HELO", SMTPC_XF_HELO}, {"IDENT", SMTPC_XF_IDENT}, {"SOURCE", SMTPC_XF_SOURCE},
};

/* The next token of [*p, end) separated by any of seps; false at the end. */
static bool next_token(const char **p, const char *end, const char *seps, const char **tok, size_t *n)
{
    const char *s = *p;
    while (s < end && strchr(seps, *s))
        s++;
    if (s >= end) {
        *p = s;
        return false;
    }
    const char *t = s;
    while (s < end && !strchr(seps, *s))
        s++;
    *tok = t;
    *n = (size_t)(s - t);
    *p = s;
    return true;
}

static bool tok_is(const char *t, size_t n, const char *word)
{
    return strlen(word) == n && str_nieq(t, word, n);
}

void smtpc_ehlo_parse(const smtpc_reply_t *r, smtpc_ehlo_t *f)
{
    memset(f, 0, sizeof *f);
    const char *s = buf_cstr(&r->lines);
    const char *end = s + r->lines.len;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl)
        return;   /* only the greeting line: no keywords */
    s = nl + 1;
    while (s < end) {
        const char *le = memchr(s, '\n', (size_t)(end - s));
        if (!le)
            le = end;
        const char *p = s + ((size_t)(le - s) > 4 ? 4 : (size_t)(le - s));
        const char *kw;
        size_t kn;
        if (next_token(&p, le, " \t=", &kw, &kn)) {
            if (tok_is(kw, kn, "PIPELINING")) {
                f->pipelining = true;
            } else if (tok_is(kw, kn, "8BITMIME")) {
                f->eightbit = true;
            } else if (tok_is(kw, kn, "SMTPUTF8")) {
                f->smtputf8 = true;
            } else if (tok_is(kw, kn, "STARTTLS")) {
                f->starttls = true;
            } else if (tok_is(kw, kn, "SIZE")) {
                const char *v;
                size_t vn;
                f->size = true;
                f->size_limit = 0;
                if (next_token(&p, le, " \t=", &v, &vn) && vn <= 18) {
                    long long lim = 0;
                    size_t i = 0;
                    for (; i < vn && isdig(v[i]); i++)
                        lim = lim * 10 + (v[i] - '0');
                    if (i == vn)
                        f->size_limit = lim;
                }
            } else if (tok_is(kw, kn, "XFORWARD")) {
                const char *a;
                size_t an;
                while (next_token(&p, le, " \t", &a, &an)) {
                    for (size_t i = 0; i < ARRAY_LEN(xf_names); i++)
                        if (tok_is(a, an, xf_names[i].name))
                            f->xforward |= xf_names[i].bit;
                }
            }
        }
        s = le + 1;
    }
}

/* ------------------------------------------------------------- XFORWARD */

void smtpc_xtext(buf_t *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 33 && *p <= 126 && *p != '+' && *p != '=') {
            buf_putc(out, (char)*p);
        } else {
            buf_putc(out, '+');
            buf_putc(out, hex[*p >> 4]);
            buf_putc(out, hex[*p & 15]);
        }
    }
}

#define XF_UNAVAILABLE "[UNAVAILABLE]"

/* " NAME=value" with value xtext-encoded, cut so the piece is at most
 * max bytes (never inside a "+XX"). */
static void xf_piece(buf_t *out, const char *attr, const char *value, size_t max)
{
    buf_reset(out);
    buf_printf(out, " %s=", attr);
    if (!value || !*value) {
        buf_puts(out, XF_UNAVAILABLE);
        return;
    }
    char one[2] = {0, 0};
    buf_t enc = BUF_INIT;
    for (const char *p = value; *p; p++) {
        one[0] = *p;
        buf_reset(&enc);
        smtpc_xtext(&enc, one);
        if (out->len + enc.len > max)
            break;
        buf_append(out, enc.data, enc.len);
    }
    buf_free(&enc);
}

size_t smtpc_xforward_cmds(const smtpc_xfwd_in_t *in, unsigned offered, buf_t *out, int *groups)
{
    struct {
        unsigned bit;
        const char *name;
        const char *value;
        int group;
    } attrs[] = {
        {SMTPC_XF_NAME, "NAME", in->name, 1},
        {SMTPC_XF_ADDR, "ADDR", in->addr, 1},
        {SMTPC_XF_PROTO, "PROTO", in->proto, 2},
        {SMTPC_XF_HELO, "HELO", in->helo, 2},
        {SMTPC_XF_IDENT, "IDENT", in->ident, 2},
        {SMTPC_XF_SOURCE, "SOURCE", in->local_source ? "LOCAL" : "REMOTE", 2},
    };
    /* Room for "XFORWARD" + pieces + CRLF below SMTPC_XFORWARD_LINE_MAX. */
    const size_t linemax = SMTPC_XFORWARD_LINE_MAX - 3;
    const size_t cmdlen = strlen("XFORWARD");
    size_t ncmd = 0;
    buf_t line = BUF_INIT, piece = BUF_INIT;
    for (int g = 1; g <= 2; g++) {
        buf_reset(&line);
        for (size_t i = 0; i < ARRAY_LEN(attrs); i++) {
            if (attrs[i].group != g || !(offered & attrs[i].bit))
                continue;
            xf_piece(&piece, attrs[i].name, attrs[i].value, linemax - cmdlen);
            if (line.len && line.len + piece.len > linemax) {
                buf_append(out, line.data, line.len);
                buf_putc(out, '\n');
                if (groups && ncmd < 8)
                    groups[ncmd] = g;
                ncmd++;
                buf_reset(&line);
            }
            if (!line.len)
                buf_puts(&line, "XFORWARD");
            buf_append(&line, piece.data, piece.len);
        }
        if (line.len) {
            buf_append(out, line.data, line.len);
            buf_putc(out, '\n');
            if (groups && ncmd < 8)
                groups[ncmd] = g;
            ncmd++;
        }
    }
    buf_free(&line);
    buf_free(&piece);
    return ncmd;
}

/* --------------------------------------------------------------- content */

void smtpc_dotstuff(bool *bol, const char *in, size_t n, buf_t *out)
{
    const char *p = in, *end = in + n;
    buf_reserve(out, n + n / 32 + 8);
    while (p < end) {
        if (*bol && *p == '.')
            buf_putc(out, '.');
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            buf_append(out, p, (size_t)(end - p));
            *bol = false;
            return;
        }
        buf_append(out, p, (size_t)(nl - p));
        buf_append(out, "\r\n", 2);
        *bol = true;
        p = nl + 1;
    }
}

/* ----------------------------------------------------------------- misc */

int smtpc_port_number(const char *port)
{
    static const struct {
        const char *name;
        int port;
    } known[] = {{"smtp", 25}, {"lmtp", 24}, {"submission", 587}, {"submissions", 465}, {"smtps", 465}};
    if (!port || !*port)
        return -1;
    if (str_all_digits(port)) {
        if (strlen(port) > 5)
            return -1;
        int v = atoi(port);
        return v >= 1 && v <= 65535 ? v : -1;
    }
    for (size_t i = 0; i < ARRAY_LEN(known); i++)
        if (str_ieq(port, known[i].name))
            return known[i].port;
    struct servent *se = getservbyname(port, "tcp");
    return se ? ntohs((unsigned short)se->s_port) : -1;
}

/* Text to binary; family 0 when it is no address. */
typedef struct {
    int family;
    unsigned char b[16];
} ipbin_t;

static ipbin_t ip_parse(const char *s)
{
    ipbin_t r = {0};
    if (inet_pton(AF_INET, s, r.b) == 1)
        r.family = AF_INET;
    else if (inet_pton(AF_INET6, s, r.b) == 1)
        r.family = AF_INET6;
    return r;
}

static bool ip_eq(ipbin_t a, ipbin_t b)
{
    if (!a.family || a.family != b.family)
        return false;
    return memcmp(a.b, b.b, a.family == AF_INET ? 4 : 16) == 0;
}

bool smtpc_is_loopback(const char *addr)
{
    ipbin_t a = ip_parse(addr ? addr : "");
    if (a.family == AF_INET)
        return a.b[0] == 127;
    if (a.family == AF_INET6) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(a.b, one, 16) == 0;
    }
    return false;
}

/* Split a listen entry into its address ("*" for any) and port. */
static bool listen_split(const char *e, char *addr, size_t alen, int *port)
{
    const char *pt;
    size_t an;
    if (*e == '[') {
        const char *close = strchr(e, ']');
        if (!close || close[1] != ':')
            return false;
        an = (size_t)(close - e - 1);
        e++;
        pt = close + 2;
    } else {
        const char *colon = strrchr(e, ':');
        if (!colon)
            return false;
        an = (size_t)(colon - e);
        pt = colon + 1;
    }
    if (an >= alen)
        return false;
    memcpy(addr, e, an);
    addr[an] = 0;
    if (an == 0)
        str_copy(addr, "*", alen);
    *port = smtpc_port_number(pt);
    return *port > 0;
}

bool smtpc_is_self_addr(const smtpc_self_t *self, const char *addr, int port,
                        const char *const *local_addrs, size_t nlocal)
{
    if (!self || !addr)
        return false;
    ipbin_t a = ip_parse(addr);
    if (!a.family)
        return false;
    for (size_t i = 0; i < self->nlisten; i++) {
        char ea[64];
        int ep;
        if (!self->listen[i] || !listen_split(self->listen[i], ea, sizeof ea, &ep) || ep != port)
            continue;
        if (str_ieq(ea, "localhost")) {
            if (smtpc_is_loopback(addr))
                return true;
            continue;
        }
        if (strcmp(ea, "*") != 0) {
            if (ip_eq(ip_parse(ea), a))
                return true;
            continue;
        }
        if (smtpc_is_loopback(addr))
            return true;
        for (size_t j = 0; j < self->nlisten; j++) {
            char oa[64];
            int op;
            if (j != i && self->listen[j] && listen_split(self->listen[j], oa, sizeof oa, &op) &&
                ip_eq(ip_parse(oa), a))
                return true;
        }
        for (size_t j = 0; j < nlocal; j++)
            if (local_addrs[j] && ip_eq(ip_parse(local_addrs[j]), a))
                return true;
    }
    return false;
}

void smtpc_printable(buf_t *out, const char *s, size_t n, size_t max)
{
    size_t k = n < max ? n : max;
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        buf_putc(out, c >= 0x20 && c < 0x7f ? (char)c : '?');
    }
    if (n > max)
        buf_puts(out, "...");
}

bool smtpc_has_8bit(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}
