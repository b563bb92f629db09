/*
 * map_regexp: "regexp:FILE" tables, POSIX regular expressions as in
 * Postfix's regexp_table(5).  The file syntax and the lookup loop are in
 * map_re_common.c; this file is the POSIX engine behind them.
 *
 * Flags toggle regcomp() options from Postfix's defaults: i (REG_ICASE,
 * on by default), x (REG_EXTENDED, on by default), m (REG_NEWLINE, off).
 * "/p1/!/p2/ result" (p1 matches and p2 does not) is regexp:-only syntax.
 *
 * Owns: the regex_t of each pattern and one regmatch_t array per table,
 * sized for the largest $n the table uses.  Must never: allocate on the
 * lookup path itself (regexec's own workspace is the C library's
 * business), or ask regexec for offsets of a pattern compiled REG_NOSUB.
 */
#include "maps/map_re_common.h"

#include "core/util.h"

#include <regex.h>
#include <stdlib.h>

typedef struct rx_state {
    regmatch_t *pmatch;
    size_t cap;    /* pairs in pmatch */
    size_t filled; /* pairs the last match with groups filled in */
} rx_state_t;

static void *rx_compile(const char *pattern, const char *flags, size_t nflags, bool want_groups,
                        size_t *ngroups, buf_t *why)
{
    int opts = REG_EXTENDED | REG_ICASE;
    for (size_t i = 0; i < nflags; i++) {
        switch (flags[i]) {
        case 'i':
            opts ^= REG_ICASE;
            break;
        case 'x':
            opts ^= REG_EXTENDED;
            break;
        case 'm':
            opts ^= REG_NEWLINE;
            break;
        }
    }
    if (!want_groups)
        opts |= REG_NOSUB;
    regex_t *re = xmalloc(sizeof *re);
    int rc = regcomp(re, pattern, opts);
    if (rc != 0) {
        char msg[256];
        regerror(rc, re, msg, sizeof msg);
        buf_printf(why, "bad regular expression: %s", msg);
        free(re);
        return NULL;
    }
    *ngroups = re->re_nsub;
    return re;
}

static void rx_free_pattern(void *p)
{
    regfree(p);
    free(p);
}

static void *rx_state_new(size_t npairs)
{
    rx_state_t *st = xcalloc(1, sizeof *st);
    st->cap = npairs;
    st->pmatch = xcalloc(npairs, sizeof *st->pmatch);
    return st;
}

static void rx_state_free(void *p)
{
    rx_state_t *st = p;
    free(st->pmatch);
    free(st);
}

static int rx_match(void *p, void *re, const char *key, size_t keylen, size_t npairs, buf_t *why)
{
    rx_state_t *st = p;
    if (npairs > st->cap)
        npairs = st->cap; /* cannot happen: the table sized cap for its rules */
    int rc = regexec(re, key, npairs, npairs ? st->pmatch : NULL, 0);
    if (rc == 0) {
        if (npairs)
            st->filled = npairs;
        return 1;
    }
    if (rc == REG_NOMATCH)
        return 0;
    char msg[256];
    regerror(rc, re, msg, sizeof msg);
    buf_printf(why, "regexec: %s", msg);
    return -1;
}

static bool rx_group(void *p, size_t n, size_t *so, size_t *eo)
{
    rx_state_t *st = p;
    if (n >= st->filled || st->pmatch[n].rm_so < 0)
        return false;
    *so = (size_t)st->pmatch[n].rm_so;
    *eo = (size_t)st->pmatch[n].rm_eo;
    return true;
}

static const re_engine_t regexp_engine = {
    .type = "regexp",
    .flag_chars = "imx",
    .second_pattern = true,
    .compile = rx_compile,
    .free_pattern = rx_free_pattern,
    .state_new = rx_state_new,
    .state_free = rx_state_free,
    .match = rx_match,
    .group = rx_group,
};

static int regexp_open(map_t *m, buf_t *err)
{
    return re_table_open(m, &regexp_engine, err);
}

const map_ops_t map_ops_regexp = {"regexp", true, regexp_open, re_table_lookup, re_table_close};
