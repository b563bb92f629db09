/*
 * map_cidr: cidr:FILE tables (cidr_table(5)): "pattern result" lines
 * matched in file order against an IP address, first match wins.
 *
 *   a.b.c.d/len, a.b.c.d, ipv6/len, ipv6, [ipv6]/len, [ipv6/len]
 *   !pattern result        matches addresses (of the pattern's family)
 *                          outside the pattern; '!' may repeat
 *   if pattern ... endif   a block searched only when the key matches
 *   if !pattern ... endif  (nested blocks allowed)
 *
 * Owns the compiled rule array and a pool of result strings, built at
 * open.  Lookups parse the key with inet_pton into a stack buffer and walk
 * the array: no allocation, no locking.
 *
 * Like Postfix, the key's family is decided by the presence of ':' and a
 * pattern only ever matches keys of its own family (negated or not), so
 * an IPv4-mapped IPv6 key ("::ffff:192.0.2.1") does not match IPv4
 * patterns: callers pass client addresses in their plain IPv4 form.
 * Unlike Postfix, every malformed line is an error naming file:line
 * (Postfix warns and skips the rule; docs/compatibility.md lists these).
 */
#include "maps/map-private.h"
#include "maps/map_source.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OP_MATCH, OP_IF, OP_ENDIF };

typedef struct rule {
    uint8_t op;
    uint8_t v6;        /* family: 1 = IPv6 (16 bytes), 0 = IPv4 (4 bytes) */
    uint8_t negate;
    uint8_t bits;      /* prefix length */
    uint8_t net[16];   /* network, host bits zero */
    uint8_t mask[16];
    size_t end;        /* OP_IF: index of its OP_ENDIF */
    size_t value;      /* OP_MATCH: offset into pool */
    int line;
} rule_t;

typedef struct cidr {
    rule_t *rules;
    size_t n, cap;
    buf_t pool;
} cidr_t;

static bool rule_hit(const rule_t *r, const uint8_t *a)
{
    size_t nb = r->v6 ? 16 : 4;
    for (size_t i = 0; i < nb; i++)
        if ((a[i] & r->mask[i]) != r->net[i])
            return r->negate;
    return !r->negate;
}

static map_status cidr_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin)
{
    const cidr_t *c = m->impl;
    uint8_t a[16];
    uint8_t v6 = strchr(key, ':') != NULL;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, key, a) != 1)
        return MAP_NOTFOUND;   /* not an address: nothing can match */
    for (size_t i = 0; i < c->n; i++) {
        const rule_t *r = &c->rules[i];
        switch (r->op) {
        case OP_MATCH:
            if (r->v6 == v6 && rule_hit(r, a)) {
                buf_puts(value, c->pool.data + r->value);
                if (origin) {
                    origin->file = m->path;
                    origin->line = r->line;
                }
                return MAP_FOUND;
            }
            break;
        case OP_IF:
            if (!(r->v6 == v6 && rule_hit(r, a)))
                i = r->end;   /* skip the block; the loop steps past ENDIF */
            break;
        default:
            break;
        }
    }
    return MAP_NOTFOUND;
}

/* Parse one address pattern (negations already removed) into r.
 * 0, or -1 with the reason in why (Postfix's wording). */
static int parse_pattern(const char *pat, rule_t *r, buf_t *why)
{
    buf_t tmp = BUF_INIT;
    buf_puts(&tmp, pat);
    char *addr = tmp.data, *mask = NULL;
    int rc = -1;
    if (*addr == '[') {
        addr++;
        char *close = strchr(addr, ']');
        if (!close) {
            buf_printf(why, "missing ']' character after \"[%s\"", addr);
            goto out;
        }
        *close = 0;
        if (close[1] == '/')
            mask = close + 2;
        else if (close[1] != 0) {
            buf_printf(why, "garbage after \"[%s]\"", addr);
            goto out;
        }
    }
    if (!mask) {
        char *slash = strchr(addr, '/');
        if (slash) {
            *slash = 0;
            mask = slash + 1;
        }
    }
    r->v6 = strchr(addr, ':') != NULL;
    int maxbits = r->v6 ? 128 : 32;
    size_t nb = r->v6 ? 16 : 4;
    memset(r->net, 0, sizeof r->net);
    memset(r->mask, 0, sizeof r->mask);
    if (mask) {
        if (!str_all_digits(mask)) {
            buf_printf(why, "bad mask value in \"%s/%s\"", addr, mask);
            goto out;
        }
        if (strlen(mask) > 3 || atoi(mask) > maxbits) {
            buf_printf(why, "bad mask length in \"%s/%s\"", addr, mask);
            goto out;
        }
        if (inet_pton(r->v6 ? AF_INET6 : AF_INET, addr, r->net) != 1) {
            buf_printf(why, "bad network value in \"%s/%s\"", addr, mask);
            goto out;
        }
        r->bits = (uint8_t)atoi(mask);
    } else {
        if (inet_pton(r->v6 ? AF_INET6 : AF_INET, addr, r->net) != 1) {
            buf_printf(why, "bad address pattern: \"%s\"", addr);
            goto out;
        }
        r->bits = (uint8_t)maxbits;
    }
    for (size_t i = 0; i < nb; i++) {
        int b = (int)r->bits - (int)i * 8;
        r->mask[i] = b >= 8 ? 0xff : b <= 0 ? 0 : (uint8_t)(0xff << (8 - b));
    }
    bool hostbits = false;
    uint8_t fixed[16];
    for (size_t i = 0; i < nb; i++) {
        fixed[i] = r->net[i] & r->mask[i];
        hostbits |= fixed[i] != r->net[i];
    }
    if (hostbits) {
        char txt[INET6_ADDRSTRLEN];
        inet_ntop(r->v6 ? AF_INET6 : AF_INET, fixed, txt, sizeof txt);
        buf_printf(why, "non-null host address bits in \"%s/%s\", perhaps you should use \"%s/%d\" instead",
                   addr, mask, txt, r->bits);
        goto out;
    }
    rc = 0;
out:
    buf_free(&tmp);
    return rc;
}

/* Is the text at p the keyword kw (ASCII case ignored), not the start of
 * a longer word? */
static bool keyword(const char *p, const char *kw)
{
    size_t n = strlen(kw);
    if (!str_nieq(p, kw, n))
        return false;
    char c = p[n];
    return !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
}

static const char *skip_space(const char *p)
{
    while (map_isspace((unsigned char)*p))
        p++;
    return p;
}

/* Leading '!' (repeatable, white space allowed after each, as Postfix 3.2+
 * accepts "! ! 0.0.0.0/0"), then the pattern word; *rest after it. */
static int split_negated(const char *p, buf_t *pat, const char **rest)
{
    int negate = 0;
    p = skip_space(p);
    while (*p == '!') {
        negate ^= 1;
        p = skip_space(p + 1);
    }
    const char *s = p;
    while (*p && !map_isspace((unsigned char)*p))
        p++;
    buf_reset(pat);
    buf_append(pat, s, (size_t)(p - s));
    *rest = skip_space(p);
    return negate;
}

static rule_t *new_rule(cidr_t *c)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 32;
        c->rules = xrealloc(c->rules, c->cap * sizeof *c->rules);
    }
    rule_t *r = &c->rules[c->n++];
    memset(r, 0, sizeof *r);
    return r;
}

static void cidr_free(cidr_t *c)
{
    free(c->rules);
    buf_free(&c->pool);
    free(c);
}

/* Compile src into c; every problem is appended to err as file:line. */
static int cidr_compile(cidr_t *c, map_src_t *src, const char *file, buf_t *err)
{
    buf_t why = BUF_INIT, pat = BUF_INIT;
    size_t *stack = NULL, depth = 0, stack_cap = 0;
    int r, bad = 0;
    while ((r = map_src_next(src, err)) != 0) {
        if (r < 0) {
            bad++;
            continue;
        }
        int line = src->first;
        /* Trailing white space never belongs to a result. */
        char *text = src->line.data;
        size_t tl = src->line.len;
        while (tl && map_isspace((unsigned char)text[tl - 1]))
            text[--tl] = 0;
        buf_reset(&why);
        const char *rest;
        if (keyword(text, "endif")) {
            rest = skip_space(text + 5);
            if (*rest)
                buf_printf(&why, "text after ENDIF: \"%s\"", rest);
            else if (!depth)
                buf_puts(&why, "ENDIF without IF");
            else {
                size_t open_at = stack[--depth];
                rule_t *e = new_rule(c);
                e->op = OP_ENDIF;
                e->line = line;
                c->rules[open_at].end = c->n - 1;
            }
        } else if (keyword(text, "if")) {
            int neg = split_negated(text + 2, &pat, &rest);
            rule_t tmp = {0};
            if (!pat.len)
                buf_puts(&why, "no address pattern");
            else if (*rest)
                buf_printf(&why, "text after IF pattern: \"%s\"", rest);
            else if (parse_pattern(pat.data, &tmp, &why) == 0) {
                rule_t *e = new_rule(c);
                *e = tmp;
                e->op = OP_IF;
                e->negate = (uint8_t)neg;
                e->line = line;
                if (depth == stack_cap) {
                    stack_cap = stack_cap ? stack_cap * 2 : 8;
                    stack = xrealloc(stack, stack_cap * sizeof *stack);
                }
                stack[depth++] = c->n - 1;
            }
        } else {
            int neg = split_negated(text, &pat, &rest);
            rule_t tmp = {0};
            if (!pat.len)
                buf_puts(&why, "no address pattern");
            else if (!*rest)
                buf_puts(&why, "no lookup result");
            else if (parse_pattern(pat.data, &tmp, &why) == 0) {
                rule_t *e = new_rule(c);
                *e = tmp;
                e->op = OP_MATCH;
                e->negate = (uint8_t)neg;
                e->line = line;
                e->value = c->pool.len;
                buf_puts(&c->pool, rest);
                buf_putc(&c->pool, 0);
            }
        }
        if (why.len) {
            buf_printf(err, "%s:%d: %s\n", file, line, buf_cstr(&why));
            bad++;
        }
    }
    while (depth) {
        buf_printf(err, "%s:%d: IF has no matching ENDIF\n", file, c->rules[stack[--depth]].line);
        bad++;
    }
    free(stack);
    buf_free(&why);
    buf_free(&pat);
    return bad ? -1 : 0;
}

static int cidr_open(map_t *m, buf_t *err)
{
    map_src_t src;
    if (map_src_open(&src, m->path, err) != 0)
        return -1;
    cidr_t *c = xcalloc(1, sizeof *c);
    int rc = cidr_compile(c, &src, m->path, err);
    m->st = src.st;
    map_src_close(&src);
    if (rc != 0) {
        cidr_free(c);
        return -1;
    }
    m->impl = c;
    return 0;
}

static void cidr_close(map_t *m)
{
    cidr_free(m->impl);
    m->impl = NULL;
}

const map_ops_t map_ops_cidr = {"cidr", true, cidr_open, cidr_lookup, cidr_close};
