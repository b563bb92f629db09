/*
 * registry: the parameter table generated from params.def, lookups by
 * name, and the value syntax every parameter type shares.
 *
 * Owns nothing at run time (all tables are constant).  Must never hold
 * per-configuration state: two configurations (a reload) coexist.
 */
#include "config/config-private.h"
#include "core/util.h"
#include "core/version.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

const pdef_t cf_reg[PARAM__COUNT] = {
#define P(name, type, def, min, max, flags, desc) {#name, type, def, min, max, flags, desc},
#include "config/params.def"
#undef P
};

/* Each G() marker takes the position of the next P(): the enumerator
 * after a group marker steps back by one, so the marker's own value is the
 * index the following parameter gets. */
enum {
#define P(name, ...) REGPOS_##name,
#define G(id, title) GRPPOS_##id, GRPPOS_##id##_back = GRPPOS_##id - 1,
#include "config/params.def"
#undef P
#undef G
};
_Static_assert((int)REGPOS_virtual_maps == (int)PARAM_virtual_maps && (int)REGPOS_queue_run_delay == (int)PARAM_queue_run_delay, "group markers must not shift parameter ids");

const pgroup_t cf_groups[] = {
#define P(...)
#define G(id, title) {#id, title, GRPPOS_##id},
#include "config/params.def"
#undef P
#undef G
};
const size_t cf_ngroups = ARRAY_LEN(cf_groups);

int cf_reg_find(const char *name, size_t len)
{
    /* Linear: only load-time code looks names up; sessions use ids. */
    for (int i = 0; i < PARAM__COUNT; i++)
        if (strncmp(cf_reg[i].name, name, len) == 0 && cf_reg[i].name[len] == 0)
            return i;
    return -1;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool has_suffix(const char *s, const char *x)
{
    size_t ls = strlen(s), lx = strlen(x);
    return ls >= lx && strcmp(s + ls - lx, x) == 0;
}

bool cf_looks_filtering(const char *name)
{
    static const char *const prefixes[] = {"smtpd_"};
    static const char *const suffixes[] = {"_restrictions", "_checks", "_access", "_reject_code", "_maps", "_filter"};
    static const char *const infixes[] = {"rbl", "milter", "greylist", "spf", "dkim"};
    for (size_t i = 0; i < ARRAY_LEN(prefixes); i++)
        if (has_prefix(name, prefixes[i]))
            return true;
    for (size_t i = 0; i < ARRAY_LEN(suffixes); i++)
        if (has_suffix(name, suffixes[i]))
            return true;
    for (size_t i = 0; i < ARRAY_LEN(infixes); i++)
        if (strstr(name, infixes[i]))
            return true;
    return false;
}

/* Digits only: a sign, blanks or a unit make it a different thing. */
static bool parse_digits(const char **sp, long long *out)
{
    const char *s = *sp;
    long long v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        int d = *s - '0';
        if (v > (LLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *sp = s;
    *out = v;
    return true;
}

bool cf_parse_int(const char *s, long long *out)
{
    long long v;
    if (!parse_digits(&s, &v) || *s)
        return false;
    *out = v;
    return true;
}

bool cf_parse_bool(const char *s, long long *out)
{
    static const char *const yes[] = {"yes", "true", "1"}, *const no[] = {"no", "false", "0"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (str_ieq(s, yes[i])) {
            *out = 1;
            return true;
        }
        if (str_ieq(s, no[i])) {
            *out = 0;
            return true;
        }
    }
    return false;
}

static long long unit_seconds(char u)
{
    switch (u) {
    case 's': return 1;
    case 'm': return 60;
    case 'h': return 3600;
    case 'd': return 86400;
    case 'w': return 7 * 86400;
    default: return 0;
    }
}

bool cf_parse_time(const char *s, char unit, long long *out)
{
    long long v;
    if (!parse_digits(&s, &v))
        return false;
    if (*s) {
        unit = *s++;
        if (*s)
            return false;
    }
    long long mul = unit_seconds(unit);
    if (mul == 0 || v > LLONG_MAX / mul)
        return false;
    *out = v * mul;
    return true;
}

char cf_time_unit(const char *def)
{
    size_t n = strlen(def);
    if (n && unit_seconds(def[n - 1]))
        return def[n - 1];
    return 's';
}

typedef struct span {
    const char *p;
    size_t n;
} span_t;

const char **cf_split(const char *s, size_t *n, bool *unbalanced)
{
    span_t *sp = NULL;
    size_t ns = 0, cap = 0, bytes = 0;
    const char *start, *end;
    *unbalanced = false;
    for (const char *c = s; (end = cf_token(c, true, &start, unbalanced)); c = end) {
        span_t t = {start, (size_t)(end - start)};
        if (t.n >= 2 && t.p[0] == '{' && t.p[t.n - 1] == '}') {
            /* Unwrap only when the first brace closes at the very end:
             * "{a}{b}" is one item as written. */
            int d = 0;
            size_t close = 0;
            for (size_t i = 0; i < t.n; i++) {
                if (t.p[i] == '{')
                    d++;
                else if (t.p[i] == '}' && --d == 0) {
                    close = i;
                    break;
                }
            }
            if (close == t.n - 1) {
                t.p++;
                t.n -= 2;
                while (t.n && CF_WS(t.p[0])) {
                    t.p++;
                    t.n--;
                }
                while (t.n && CF_WS(t.p[t.n - 1]))
                    t.n--;
            }
        }
        if (ns == cap) {
            cap = cap ? cap * 2 : 8;
            sp = xrealloc(sp, cap * sizeof *sp);
        }
        sp[ns++] = t;
        bytes += t.n + 1;
    }
    size_t head = (ns + 1) * sizeof(char *);
    char *block = xmalloc(head + bytes);
    const char **items = (const char **)(void *)block;
    char *text = block + head;
    for (size_t i = 0; i < ns; i++) {
        memcpy(text, sp[i].p, sp[i].n);
        text[sp[i].n] = 0;
        items[i] = text;
        text += sp[i].n + 1;
    }
    items[ns] = NULL;
    free(sp);
    *n = ns;
    return items;
}
