/*
 * map_pcre: "pcre:FILE" tables, PCRE2 patterns as in Postfix's
 * pcre_table(5).  The file syntax and the lookup loop are in
 * map_re_common.c; this file is the PCRE2 engine behind them.
 *
 * Flags toggle compile options from Postfix's defaults: i (CASELESS, on),
 * s (DOTALL, on), m (MULTILINE), x (EXTENDED), A (ANCHORED),
 * E (DOLLAR_ENDONLY), U (UNGREEDY).  X (PCRE_EXTRA) is accepted and does
 * nothing: what it switched on (an unknown backslash-letter is an error)
 * is always on in PCRE2.  Patterns are byte strings (no UTF mode), so any
 * key, valid UTF-8 or not, can be matched.
 *
 * Owns: the pcre2_code of each pattern (JIT-compiled when the JIT is
 * available, the interpreter silently otherwise), and per table one
 * match data block, one match context and one JIT stack, all made at
 * open.  Must never: allocate on the lookup path (the match data is
 * reused; the JIT stack is preallocated), or treat a matching error
 * (match limit, JIT stack exhausted) as "no match".
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "maps/map_re_common.h"

#include "core/log.h"
#include "core/util.h"

#include <pcre2.h>
#include <stdlib.h>

/* The JIT stack grows from the first to the second figure; past that a
 * match fails with an error rather than running away. */
#define PCRE_JIT_STACK_MIN (32 * 1024)
#define PCRE_JIT_STACK_MAX (1024 * 1024)

typedef struct pc_state {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    int last_rc; /* of the last match that asked for groups */
} pc_state_t;

static void *pc_compile(const char *pattern, const char *flags, size_t nflags, bool want_groups,
                        size_t *ngroups, buf_t *why)
{
    uint32_t opts = PCRE2_CASELESS | PCRE2_DOTALL;
    for (size_t i = 0; i < nflags; i++) {
        switch (flags[i]) {
        case 'i':
            opts ^= PCRE2_CASELESS;
            break;
        case 's':
            opts ^= PCRE2_DOTALL;
            break;
        case 'm':
            opts ^= PCRE2_MULTILINE;
            break;
        case 'x':
            opts ^= PCRE2_EXTENDED;
            break;
        case 'A':
            opts ^= PCRE2_ANCHORED;
            break;
        case 'E':
            opts ^= PCRE2_DOLLAR_ENDONLY;
            break;
        case 'U':
            opts ^= PCRE2_UNGREEDY;
            break;
        case 'X':
            break;
        }
    }
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(errcode, msg, sizeof msg) < 0)
            str_copy((char *)msg, "unknown error", sizeof msg);
        buf_printf(why, "error in regex at offset %zu: %s", (size_t)erroff, (const char *)msg);
        return NULL;
    }
    /* Without JIT support (or memory for it) pcre2_match interprets. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    uint32_t count = 0;
    (void)pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &count);
    *ngroups = count;
    (void)want_groups;
    return re;
}

static void pc_free_pattern(void *re)
{
    pcre2_code_free(re);
}

static void *pc_state_new(size_t npairs)
{
    pc_state_t *st = xcalloc(1, sizeof *st);
    st->md = pcre2_match_data_create((uint32_t)npairs, NULL);
    st->mctx = pcre2_match_context_create(NULL);
    st->jit_stack = pcre2_jit_stack_create(PCRE_JIT_STACK_MIN, PCRE_JIT_STACK_MAX, NULL);
    /* Allocation failure is not survived anywhere in moat (util.h). */
    if (!st->md || !st->mctx)
        log_panic("out of memory creating PCRE2 match data for %zu groups", npairs);
    if (st->jit_stack)
        pcre2_jit_stack_assign(st->mctx, NULL, st->jit_stack);
    return st;
}

static void pc_state_free(void *p)
{
    pc_state_t *st = p;
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mctx);
    pcre2_jit_stack_free(st->jit_stack);
    free(st);
}

static int pc_match(void *p, void *re, const char *key, size_t keylen, size_t npairs, buf_t *why)
{
    pc_state_t *st = p;
    int rc = pcre2_match(re, (PCRE2_SPTR)key, keylen, 0, 0, st->md, st->mctx);
    /* rc == 0: a match whose groups did not all fit the match data; the
     * ones the table's results use always do. */
    if (rc >= 0) {
        if (npairs)
            st->last_rc = rc;
        return 1;
    }
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
        str_copy((char *)msg, "unknown error", sizeof msg);
    buf_printf(why, "pcre2_match: %s", (const char *)msg);
    return -1;
}

static bool pc_group(void *p, size_t n, size_t *so, size_t *eo)
{
    pc_state_t *st = p;
    uint32_t count = pcre2_get_ovector_count(st->md);
    /* rc > 0 is one more than the highest group that took part. */
    if (n >= count || (st->last_rc > 0 && n >= (size_t)st->last_rc))
        return false;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
    if (ov[2 * n] == PCRE2_UNSET || ov[2 * n + 1] < ov[2 * n])
        return false;
    *so = ov[2 * n];
    *eo = ov[2 * n + 1];
    return true;
}

static const re_engine_t pcre_engine = {
    .type = "pcre",
    .flag_chars = "imsxAEUX",
    .second_pattern = false,
    .compile = pc_compile,
    .free_pattern = pc_free_pattern,
    .state_new = pc_state_new,
    .state_free = pc_state_free,
    .match = pc_match,
    .group = pc_group,
};

static int pcre_open(map_t *m, buf_t *err)
{
    return re_table_open(m, &pcre_engine, err);
}

const map_ops_t map_ops_pcre = {"pcre", true, pcre_open, re_table_lookup, re_table_close};
