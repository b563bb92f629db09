/*
 * spf_macro: SPF macros (RFC 7208 section 7) and the names and addresses
 * around them: the macro-string syntax (letters s l o d i p h c r t v,
 * digit and "r" transformers, the delimiters . - + , / _ =, %% %_ %-,
 * upper-case letters URL-escaped), the domain-end rule of a domain-spec,
 * the identity being checked, the validity of a domain (section 4.3) and
 * of a name to look up (253-octet truncation from the left, section 7.3),
 * and the client address in its three spellings (%{i}, %{c}, PTR name).
 *
 * Pure: no DNS (the one DNS-backed letter, p, is asked for through the
 * caller's callback), no clock (t comes from the request), no logging.
 * An expansion never grows past SPF_EXPAND_MAX octets, whatever the
 * sender, HELO name or record says.
 */
#include "policy/spf-private.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alnum(int c) { return is_alpha(c) || is_digit(c); }

static const char HEX[] = "0123456789abcdef";
static const char HEX_UC[] = "0123456789ABCDEF";

bool spf_toplabel_ok(const char *s, size_t len)
{
    if (len == 0)
        return false;
    bool alpha = false, dash = false;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (is_alpha(c))
            alpha = true;
        else if (c == '-')
            dash = true;
        else if (!is_digit(c))
            return false;
    }
    /* ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
    if (!dash)
        return alpha;
    return is_alnum((unsigned char)s[0]) && is_alnum((unsigned char)s[len - 1]);
}

/* ------------------------------------------------------------ expansion */

static void put_escaped(buf_t *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* RFC 3986 unreserved characters stay; everything else is %XX. */
        if (is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
            buf_putc(out, (char)c);
        else
            buf_printf(out, "%%%c%c", HEX_UC[c >> 4], HEX_UC[c & 15]);
    }
}

static bool is_delim(char c, const char *delims, size_t n)
{
    if (n == 0)
        return c == '.';
    return memchr(delims, c, n) != NULL;
}

/* Split v on the delimiters, reverse when asked, keep the rightmost
 * digits parts (0: all), join with '.', URL-escape for upper case. */
static void transform(const char *v, unsigned digits, bool rev, const char *delims, size_t ndelims, bool upper,
                      buf_t *out)
{
    size_t vlen = strlen(v), nparts = 1;
    for (size_t i = 0; i < vlen; i++)
        if (is_delim(v[i], delims, ndelims))
            nparts++;
    size_t *start = xmalloc(nparts * sizeof *start), *plen = xmalloc(nparts * sizeof *plen);
    size_t k = 0, from = 0;
    for (size_t i = 0; i <= vlen; i++) {
        if (i == vlen || is_delim(v[i], delims, ndelims)) {
            start[k] = from;
            plen[k] = i - from;
            k++;
            from = i + 1;
        }
    }
    size_t first = digits && digits < nparts ? nparts - digits : 0;
    buf_t joined = BUF_INIT;
    for (size_t j = first; j < nparts; j++) {
        size_t idx = rev ? nparts - 1 - j : j;
        if (j > first)
            buf_putc(&joined, '.');
        buf_append(&joined, v + start[idx], plen[idx]);
    }
    if (upper)
        put_escaped(out, buf_cstr(&joined), joined.len);
    else
        buf_append(out, buf_cstr(&joined), joined.len);
    buf_free(&joined);
    free(start);
    free(plen);
}

static int macro_error(buf_t *why, const char *s, size_t len, const char *reason)
{
    if (!why)
        return -1;
    buf_puts(why, "bad macro \"");
    for (size_t i = 0; i < len && i < 24; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            buf_putc(why, (char)c);
        else
            buf_printf(why, "\\x%02x", c);
        if (i > 0 && c == '}')
            break;
    }
    buf_printf(why, "\": %s", reason);
    return -1;
}

/* One pass over a macro-string: checks it and, with env and out, expands
 * it.  ends_in_macro / lit: whether the last item is a macro-expand, and
 * where the final run of literal octets starts (for domain-end). */
static int scan(const char *s, size_t len, spf_ms_kind_t kind, const spf_macro_env_t *env, buf_t *out, buf_t *why,
                bool *ends_in_macro, size_t *lit)
{
    size_t base = out ? out->len : 0;
    bool in_lit = false;
    *ends_in_macro = false;
    *lit = 0;
    size_t i = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)s[i];
        if (ch != '%') {
            /* macro-literal = %x21-24 / %x26-7E; exp text adds SP */
            if (!(ch >= 0x21 && ch <= 0x7e) && !(ch == ' ' && kind == SPF_MS_EXPLAIN)) {
                if (why)
                    buf_printf(why, "character \\x%02x not allowed in a macro-string", ch);
                return -1;
            }
            if (!in_lit) {
                *lit = i;
                in_lit = true;
            }
            if (out)
                buf_putc(out, (char)ch);
            i++;
        } else {
            in_lit = false;
            if (i + 1 >= len)
                return macro_error(why, s + i, len - i, "'%' at the end");
            char n = s[i + 1];
            if (n == '%' || n == '_' || n == '-') {
                if (out)
                    buf_puts(out, n == '%' ? "%" : n == '_' ? " " : "%20");
                i += 2;
                continue;
            }
            if (n != '{')
                return macro_error(why, s + i, len - i, "'%' must be followed by '{', '%', '_' or '-'");
            size_t j = i + 2;
            int letter = j < len ? (unsigned char)s[j] : 0;
            int lower = lc(letter);
            if (!lower || !strchr("slodiphcrtv", lower))
                return macro_error(why, s + i, len - i, "unknown macro letter");
            if (kind == SPF_MS_DOMAIN && strchr("crt", lower))
                return macro_error(why, s + i, len - i, "c, r and t are only allowed in exp= text");
            j++;
            unsigned digits = 0;
            bool has_digits = false;
            while (j < len && is_digit((unsigned char)s[j])) {
                has_digits = true;
                if (digits <= SPF_DIGITS_MAX)
                    digits = digits * 10 + (unsigned)(s[j] - '0');
                j++;
            }
            if (has_digits && digits == 0)
                return macro_error(why, s + i, len - i, "the digit transformer must not be 0");
            bool rev = false;
            if (j < len && lc((unsigned char)s[j]) == 'r') {
                rev = true;
                j++;
            }
            size_t dstart = j;
            while (j < len && s[j] && strchr(".-+,/_=", s[j]))
                j++;
            if (j >= len || s[j] != '}')
                return macro_error(why, s + i, len - i, "expected transformers, delimiters and '}'");
            if (out) {
                char tbuf[32];
                const char *v = "";
                switch (lower) {
                case 's': v = env->s; break;
                case 'l': v = env->l; break;
                case 'o': v = env->o; break;
                case 'd': v = env->d; break;
                case 'i': v = env->i; break;
                case 'v': v = env->v; break;
                case 'h': v = env->h; break;
                case 'c': v = env->c; break;
                case 'r': v = env->r; break;
                case 't':
                    snprintf(tbuf, sizeof tbuf, "%lld", env->t);
                    v = tbuf;
                    break;
                case 'p':
                    v = env->get_p ? env->get_p(env->arg) : "unknown";
                    if (!v)
                        return 1;
                    break;
                default: break;
                }
                transform(v ? v : "", digits, rev, s + dstart, j - dstart, letter != lower, out);
            }
            i = j + 1;
        }
        if (out && out->len - base > SPF_EXPAND_MAX) {
            if (why)
                buf_printf(why, "macro expansion longer than %d octets", SPF_EXPAND_MAX);
            return -1;
        }
    }
    *ends_in_macro = len > 0 && !in_lit;
    return 0;
}

bool spf_macro_string_ok(const char *s, size_t len, spf_ms_kind_t kind, buf_t *why)
{
    bool ends_in_macro;
    size_t lit;
    if (scan(s, len, kind, NULL, NULL, why, &ends_in_macro, &lit) != 0)
        return false;
    if (kind != SPF_MS_DOMAIN || ends_in_macro)
        return true;
    /* domain-end = ( "." toplabel [ "." ] ) / macro-expand */
    size_t end = len;
    if (end > lit && s[end - 1] == '.')
        end--;
    const char *dot = end > lit ? memrchr(s + lit, '.', end - lit) : NULL;
    if (!dot) {
        if (why)
            buf_puts(why, "a domain-spec must end in \".toplabel\" or a macro");
        return false;
    }
    if (!spf_toplabel_ok(dot + 1, (size_t)(s + end - dot - 1))) {
        if (why)
            buf_puts(why, "bad top-level label (letters, digits and inner '-', not all digits)");
        return false;
    }
    return true;
}

int spf_expand(const char *s, size_t len, const spf_macro_env_t *env, spf_ms_kind_t kind, buf_t *out, buf_t *why)
{
    bool ends_in_macro;
    size_t lit;
    return scan(s, len, kind, env, out, why, &ends_in_macro, &lit);
}

/* ------------------------------------------------------------ addresses */

int spf_ip_parse(const char *text, unsigned char ip[16])
{
    memset(ip, 0, 16);
    if (inet_pton(AF_INET, text, ip) == 1)
        return 4;
    unsigned char b[16];
    if (inet_pton(AF_INET6, text, b) != 1)
        return 0;
    if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)b)) {
        /* RFC 7208 section 5: an IPv4-mapped address is IPv4. */
        memcpy(ip, b + 12, 4);
        return 4;
    }
    memcpy(ip, b, 16);
    return 6;
}

void spf_ip_dotted(int fam, const unsigned char *ip, buf_t *out)
{
    if (fam == 4) {
        buf_printf(out, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
        return;
    }
    for (int k = 0; k < 16; k++)
        buf_printf(out, "%s%c.%c", k ? "." : "", HEX[ip[k] >> 4], HEX[ip[k] & 15]);
}

void spf_ip_text(int fam, const unsigned char *ip, buf_t *out)
{
    char t[INET6_ADDRSTRLEN];
    if (inet_ntop(fam == 4 ? AF_INET : AF_INET6, ip, t, sizeof t))
        buf_puts(out, t);
}

void spf_ip_reverse_name(int fam, const unsigned char *ip, buf_t *out)
{
    if (fam == 4) {
        buf_printf(out, "%u.%u.%u.%u.in-addr.arpa", ip[3], ip[2], ip[1], ip[0]);
        return;
    }
    for (int k = 15; k >= 0; k--)
        buf_printf(out, "%c.%c.", HEX[ip[k] & 15], HEX[ip[k] >> 4]);
    buf_puts(out, "ip6.arpa");
}

bool spf_ip_in(int fam, const unsigned char *ip, const unsigned char *net, int prefix)
{
    int bits = fam == 4 ? 32 : 128;
    if (prefix > bits)
        prefix = bits;
    int full = prefix / 8, rest = prefix % 8;
    if (memcmp(ip, net, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (ip[full] & mask) == (net[full] & mask);
}

/* ----------------------------------------------------- identity, names */

void spf_identity_init(spf_identity_t *id, const spf_request_t *req)
{
    memset(id, 0, sizeof *id);
    const char *sender = req->sender ? req->sender : "";
    const char *helo = req->helo ? req->helo : "";
    const char *dom;
    if (req->helo_identity || !*sender) {
        /* Section 2.3: the HELO check uses postmaster@HELO; so does
         * MAIL FROM:<> (section 2.4). */
        id->helo = true;
        buf_puts(&id->local, "postmaster");
        dom = helo;
    } else {
        const char *at = strrchr(sender, '@');
        /* Section 4.3: no local-part means "postmaster". */
        if (at && at > sender)
            buf_append(&id->local, sender, (size_t)(at - sender));
        else
            buf_puts(&id->local, "postmaster");
        dom = at ? at + 1 : sender;
    }
    size_t dlen = strlen(dom);
    if (dlen && dom[dlen - 1] == '.')
        dlen--;
    buf_append(&id->domain, dom, dlen);
    buf_printf(&id->sender, "%s@%s", buf_cstr(&id->local), buf_cstr(&id->domain));
}

void spf_identity_free(spf_identity_t *id)
{
    buf_free(&id->sender);
    buf_free(&id->local);
    buf_free(&id->domain);
}

/* What a domain to check (RFC 7208 4.3) may hold: printable ASCII. */
static bool name_octet_ok(unsigned char c)
{
    return c > ' ' && c < 0x7f && c != '\\';
}

bool spf_domain_ok(const char *d)
{
    size_t len = strlen(d);
    if (len && d[len - 1] == '.')
        len--;
    if (len == 0 || len > SPF_NAME_MAX)
        return false;
    size_t labels = 0, from = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || d[i] == '.') {
            size_t l = i - from;
            if (l == 0 || l > SPF_LABEL_MAX)
                return false;
            labels++;
            if (i == len && !spf_toplabel_ok(d + from, l))
                return false;
            from = i + 1;
        } else if (!name_octet_ok((unsigned char)d[i])) {
            return false;
        }
    }
    return labels >= 2;
}

bool spf_query_name(buf_t *name)
{
    if (name->len && name->data[name->len - 1] == '.')
        buf_truncate(name, name->len - 1);
    while (name->len > SPF_NAME_MAX) {
        const char *dot = memchr(name->data, '.', name->len);
        if (!dot)
            return false;
        buf_consume(name, (size_t)(dot - name->data) + 1);
    }
    if (name->len == 0)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < name->len; i++) {
        unsigned char c = (unsigned char)name->data[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (c == 0 || ++label > SPF_LABEL_MAX) {
            /* any other octet can be queried (the resolver escapes it) */
            return false;
        }
    }
    return label > 0;
}

/* -------------------------------------------------------------- the env */

void spf_env_base(spf_macro_env_t *env, const spf_request_t *req, const spf_identity_t *id, const char *i,
                  const char *c, int fam)
{
    memset(env, 0, sizeof *env);
    env->s = buf_cstr(&id->sender);
    env->l = buf_cstr(&id->local);
    env->o = buf_cstr(&id->domain);
    env->d = env->o;
    env->h = req->helo ? req->helo : "";
    env->r = req->receiver && *req->receiver ? req->receiver : "unknown";
    env->i = i;
    env->c = c;
    env->v = fam == 6 ? "ip6" : "in-addr";
    env->t = req->now;
}

int spf_macro_expand(const char *in, const spf_request_t *req, const char *domain, bool exp, buf_t *out, buf_t *why)
{
    buf_reset(out);
    buf_reset(why);
    spf_identity_t id;
    spf_identity_init(&id, req);
    unsigned char ip[16];
    int fam = spf_ip_parse(req->ip ? req->ip : "", ip);
    buf_t i = BUF_INIT, c = BUF_INIT;
    if (fam) {
        spf_ip_dotted(fam, ip, &i);
        spf_ip_text(fam, ip, &c);
    }
    spf_macro_env_t env;
    spf_env_base(&env, req, &id, buf_cstr(&i), buf_cstr(&c), fam);
    if (domain)
        env.d = domain;
    int rc = spf_expand(in, strlen(in), &env, exp ? SPF_MS_EXPLAIN : SPF_MS_DOMAIN, out, why);
    if (rc != 0)
        buf_reset(out);
    buf_free(&i);
    buf_free(&c);
    spf_identity_free(&id);
    return rc == 0 ? 0 : -1;
}
