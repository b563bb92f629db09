/*
 * map_re_common: file syntax and lookup loop shared by regexp: and pcre:
 * tables (see map_re_common.h for the interface).
 *
 * Owns: the rule array of one table, each rule's compiled patterns (made
 * and freed through the dialect's engine), its result template, the
 * table's one match state and its prefilter (prefilter.h), if any.
 * Lookups walk the array and write the result into the caller's buffer;
 * they allocate nothing of their own.  With a prefilter, one Vectorscan
 * scan of the key first says which covered rules could match; the walk
 * is the same walk in file order, stepping over the covered rules that
 * cannot match and the if-blocks whose covered condition cannot.  The dialect's
 * engine still decides every rule it reaches and captures $n, so the
 * answer is the one the full walk gives; the one difference is that a
 * rule proved unable to match is not run, so it cannot hit PCRE2's match
 * limit either (a miss instead of a temporary failure).
 *
 * Must never: fold the key's case (the i flag does that), accept a line
 * Postfix would skip (the whole table is refused instead), or take a
 * pattern that could not be evaluated for "no match" (that is a
 * temporary failure).
 *
 * Logical lines come from map_source (Postfix's readllines() rules: '#'
 * comments and blank lines are ignored anywhere, even between a line and
 * its continuations; a line starting with white space continues the one
 * above, joined as is: its leading white space stays, the newline goes);
 * here trailing white space is dropped, as Postfix's trimblanks() does.
 * A rule is known by the number of its first physical line.
 */
#include "maps/map_re_common.h"

#include "core/log.h"
#include "core/util.h"
#include "maps/map_source.h"
#include "maps/prefilter.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* After this many problems a broken file has made its point. */
#define RE_MAX_ERRORS 50
/* $n above this is out of range for any pattern; it keeps n small. */
#define RE_MAX_GROUP 65535

typedef enum { OP_MATCH, OP_IF, OP_ENDIF } rule_op;

/* One piece of a result template: literal text or a $n reference. */
typedef struct seg {
    long group; /* -1: literal lit[off, off+len) */
    size_t off, len;
} seg_t;

typedef struct rule {
    rule_op op;
    int line;
    void *re1, *re2; /* re2: regexp's "/p1/!/p2/" second pattern */
    bool neg1, neg2;
    char *lit;       /* result text with $$ made $; the whole result if nsegs == 0 */
    size_t litlen;
    seg_t *segs;     /* the template when the result has $n */
    size_t nsegs;
    size_t npairs;   /* group offsets the template needs (0: none) */
    size_t endif;    /* OP_IF: index of the matching endif */
    bool pf;         /* re1 is in the prefilter: not a candidate, no match */
} rule_t;

typedef struct re_table {
    const re_engine_t *eng;
    rule_t *rules;
    size_t n, cap;
    void *state;
    /* The prefilter (NULL: every rule is tried) and the rules a filtered
     * walk visits whatever the scan says: every IF (to skip its block)
     * and every OP_MATCH the prefilter does not cover; one bit per rule. */
    re_prefilter_t *pf;
    uint64_t *visit;
    size_t covered;
} re_table_t;

/* Parser context for one open. */
typedef struct parse {
    re_table_t *t;
    const char *path;
    buf_t *err;
    int nerr;
    size_t *stack; /* indices of open IF rules */
    size_t depth, stack_cap;
    buf_t why;     /* scratch for engine messages */
} parse_t;

static inline bool is_alnum(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static void perr(parse_t *ps, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void perr(parse_t *ps, int line, const char *fmt, ...)
{
    ps->nerr++;
    if (ps->nerr > RE_MAX_ERRORS)
        return;
    buf_printf(ps->err, "%s:%d: ", ps->path, line);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(ps->err, fmt, ap);
    va_end(ap);
    buf_putc(ps->err, '\n');
}

static rule_t *rule_add(re_table_t *t, rule_op op, int line)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->rules = xrealloc(t->rules, t->cap * sizeof *t->rules);
    }
    rule_t *r = &t->rules[t->n++];
    memset(r, 0, sizeof *r);
    r->op = op;
    r->line = line;
    return r;
}

/* One "[!...]<d>pattern<d>flags" from *pp: the pattern (NUL-terminated,
 * caller frees), its negation and its flag letters.  Backslash escapes the
 * delimiter and stays in the pattern, as in Postfix.  Flags end at white
 * space, or at '!' where a second pattern may follow. */
typedef struct pat {
    char *text;
    bool neg;
    const char *flags;
    size_t nflags;
} pat_t;

static bool get_pat(parse_t *ps, int line, const char **pp, pat_t *pat)
{
    const char *p = *pp;
    pat->text = NULL;
    pat->neg = false;
    for (; *p == '!' || map_isspace((unsigned char)*p); p++)
        if (*p == '!')
            pat->neg = !pat->neg;
    if (!*p) {
        perr(ps, line, "no pattern");
        return false;
    }
    char delim = *p++;
    const char *start = p;
    while (*p && *p != delim) {
        if (*p == '\\' && p[1])
            p++;
        p++;
    }
    if (!*p) {
        perr(ps, line, "no closing delimiter \"%c\" after the pattern", delim);
        return false;
    }
    size_t plen = (size_t)(p - start);
    p++;
    pat->flags = p;
    const re_engine_t *eng = ps->t->eng;
    while (*p && !map_isspace((unsigned char)*p) && !(eng->second_pattern && *p == '!')) {
        if (!strchr(eng->flag_chars, *p)) {
            if (*p == '!')
                perr(ps, line, "unknown %s flag \"!\" (\"/p1/!/p2/\" is regexp: syntax; use "
                               "\"if !/p2/\" ... \"endif\")", eng->type);
            else
                perr(ps, line, "unknown %s flag \"%c\" (known: %s)", eng->type, *p, eng->flag_chars);
            return false;
        }
        p++;
    }
    pat->nflags = (size_t)(p - pat->flags);
    pat->text = xstrndup(start, plen);
    *pp = p;
    return true;
}

static void *compile_pat(parse_t *ps, int line, const pat_t *pat, bool want_groups, size_t *ngroups)
{
    size_t ng = 0;
    buf_reset(&ps->why);
    void *re = ps->t->eng->compile(pat->text, pat->flags, pat->nflags, want_groups, &ng, &ps->why);
    if (!re)
        perr(ps, line, "%s", buf_cstr(&ps->why));
    if (ngroups)
        *ngroups = ng;
    return re;
}

static void seg_add(rule_t *r, size_t *cap, long group, size_t off, size_t len)
{
    if (r->nsegs == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        r->segs = xrealloc(r->segs, *cap * sizeof *r->segs);
    }
    r->segs[r->nsegs++] = (seg_t){group, off, len};
}

/* Split result text into literal pieces and $n, ${n}, $(n) references
 * ($$ is a literal $), the way Postfix's mac_parse() reads it; a $name
 * that is not all digits, an empty name or an unclosed brace is an error.
 * *max_group: the largest n, or -1 without references. */
static bool parse_result(parse_t *ps, rule_t *r, const char *p, long *max_group)
{
    buf_t lit = BUF_INIT;
    size_t cap = 0, litstart = 0;
    bool refs = false;
    *max_group = -1;
    while (*p) {
        if (*p != '$') {
            buf_putc(&lit, *p++);
            continue;
        }
        if (p[1] == '$') {
            buf_putc(&lit, '$');
            p += 2;
            continue;
        }
        p++;
        const char *name, *end;
        if (*p == '{' || *p == '(') {
            char open = *p, close = *p == '{' ? '}' : ')';
            int level = 1;
            const char *q = ++p;
            for (; *q; q++) {
                if (*q == open)
                    level++;
                else if (*q == close && --level == 0)
                    break;
            }
            if (!*q) {
                perr(ps, r->line, "unterminated \"$%c\" in the result", open);
                buf_free(&lit);
                return false;
            }
            name = p;
            end = q;
            p = q + 1;
        } else {
            name = p;
            while (is_alnum((unsigned char)*p) || *p == '_')
                p++;
            end = p;
        }
        if (name == end) {
            perr(ps, r->line, "\"$\" without a number in the result (write \"$$\" for a dollar sign)");
            buf_free(&lit);
            return false;
        }
        long n = 0;
        for (const char *d = name; d < end; d++) {
            if (*d < '0' || *d > '9') {
                perr(ps, r->line, "non-numeric replacement index \"%.*s\"", (int)(end - name), name);
                buf_free(&lit);
                return false;
            }
            if (n <= RE_MAX_GROUP)
                n = n * 10 + (*d - '0');
        }
        if (lit.len > litstart)
            seg_add(r, &cap, -1, litstart, lit.len - litstart);
        litstart = lit.len;
        seg_add(r, &cap, n, 0, 0);
        refs = true;
        if (n > *max_group)
            *max_group = n;
    }
    if (refs && lit.len > litstart)
        seg_add(r, &cap, -1, litstart, lit.len - litstart);
    r->litlen = lit.len;
    r->lit = lit.data ? buf_steal(&lit) : xstrdup("");
    return true;
}

static void parse_match(parse_t *ps, int line, const char *p)
{
    const re_engine_t *eng = ps->t->eng;
    pat_t p1 = {0}, p2 = {0};
    rule_t *r = NULL;
    if (!get_pat(ps, line, &p, &p1))
        goto out;
    if (eng->second_pattern && *p == '!' && !get_pat(ps, line, &p, &p2))
        goto out;
    while (map_isspace((unsigned char)*p))
        p++;
    if (!*p) {
        perr(ps, line, "no result after the pattern");
        goto out;
    }
    r = rule_add(ps->t, OP_MATCH, line);
    r->neg1 = p1.neg;
    r->neg2 = p2.neg;
    long max_group;
    if (!parse_result(ps, r, p, &max_group))
        goto out;
    if (max_group >= 0 && p1.neg) {
        perr(ps, line, "$%ld in the result of a negative pattern (it captures nothing)", max_group);
        goto out;
    }
    size_t ngroups;
    if (!(r->re1 = compile_pat(ps, line, &p1, max_group >= 0, &ngroups)))
        goto out;
    if (max_group > (long)ngroups) {
        perr(ps, line, "out of range replacement index \"%ld\" (the pattern has %zu subexpressions)",
             max_group, ngroups);
        goto out;
    }
    r->npairs = max_group >= 0 ? (size_t)max_group + 1 : 0;
    if (p2.text)
        r->re2 = compile_pat(ps, line, &p2, false, NULL);
    /* "/p1/!/p2/" needs p1 to match, so p1 alone is a valid filter. */
    if (ps->t->pf && !p1.neg)
        r->pf = re_prefilter_offer(ps->t->pf, ps->t->n - 1, p1.text, p1.flags, p1.nflags, line);
out:
    free(p1.text);
    free(p2.text);
}

static void push_if(parse_t *ps, size_t idx)
{
    if (ps->depth == ps->stack_cap) {
        ps->stack_cap = ps->stack_cap ? ps->stack_cap * 2 : 8;
        ps->stack = xrealloc(ps->stack, ps->stack_cap * sizeof *ps->stack);
    }
    ps->stack[ps->depth++] = idx;
}

static void parse_if(parse_t *ps, int line, const char *p)
{
    /* The IF rule goes in even when its line is bad, so that its endif
     * pairs up and one mistake is reported once. */
    rule_t *r = rule_add(ps->t, OP_IF, line);
    size_t idx = ps->t->n - 1;
    push_if(ps, idx);
    p += 2;
    while (map_isspace((unsigned char)*p))
        p++;
    pat_t pat = {0};
    if (!get_pat(ps, line, &p, &pat))
        return;
    while (map_isspace((unsigned char)*p))
        p++;
    if (*p == '!')
        perr(ps, line, "extra text after the if pattern: \"%s\" (if takes one pattern: nest a second "
                       "if instead)", p);
    else if (*p)
        perr(ps, line, "extra text after the if pattern: \"%s\" (a line that starts with white space "
                       "continues the line above it: do not indent statements inside if/endif)", p);
    else
        r->re1 = compile_pat(ps, line, &pat, false, NULL);
    r->neg1 = pat.neg;
    if (r->re1 && ps->t->pf && !pat.neg)
        r->pf = re_prefilter_offer(ps->t->pf, idx, pat.text, pat.flags, pat.nflags, line);
    free(pat.text);
}

static void parse_endif(parse_t *ps, int line, const char *p)
{
    if (ps->depth == 0) {
        perr(ps, line, "endif without matching if");
        return;
    }
    p += 5;
    while (map_isspace((unsigned char)*p))
        p++;
    if (*p)
        perr(ps, line, "extra text after endif: \"%s\"", p);
    rule_add(ps->t, OP_ENDIF, line);
    ps->t->rules[ps->stack[--ps->depth]].endif = ps->t->n - 1;
}

/* One logical line, trailing white space already dropped. */
static void parse_line(parse_t *ps, int line, const char *p)
{
    if (!is_alnum((unsigned char)*p))
        parse_match(ps, line, p);
    else if (str_nieq(p, "if", 2) && !is_alnum((unsigned char)p[2]))
        parse_if(ps, line, p);
    else if (str_nieq(p, "endif", 5) && !is_alnum((unsigned char)p[5]))
        parse_endif(ps, line, p);
    else
        perr(ps, line, "not a rule: expected \"/pattern/flags result\", \"if /pattern/flags\" or "
                       "\"endif\"");
}

/* Parse every logical line of the source, then close what is still open. */
static void parse_source(parse_t *ps, map_src_t *src)
{
    int rc;
    while ((rc = map_src_next(src, ps->err)) != 0) {
        if (rc < 0) {
            ps->nerr++; /* map_src_next wrote the message */
            continue;
        }
        buf_t *ll = &src->line;
        while (ll->len > 0 && map_isspace((unsigned char)ll->data[ll->len - 1]))
            ll->len--;
        ll->data[ll->len] = 0;
        parse_line(ps, src->first, ll->data);
    }
    /* Innermost first, as Postfix reports them. */
    while (ps->depth > 0)
        perr(ps, ps->t->rules[ps->stack[--ps->depth]].line, "if without matching endif");
}

static void table_free(re_table_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        rule_t *r = &t->rules[i];
        if (r->re1)
            t->eng->free_pattern(r->re1);
        if (r->re2)
            t->eng->free_pattern(r->re2);
        free(r->lit);
        free(r->segs);
    }
    free(t->rules);
    if (t->state)
        t->eng->state_free(t->state);
    re_prefilter_free(&t->pf);
    free(t->visit);
    free(t);
}

/* Compile the offered patterns; without a database every rule goes back
 * to being tried on every key. */
static void prefilter_setup(re_table_t *t, const char *path, bool always)
{
    buf_t why = BUF_INIT;
    t->covered = re_prefilter_build(t->pf, t->n, always ? 1 : RE_PREFILTER_MIN_RULES,
                                    always ? 0 : RE_PREFILTER_MAX_RULES, path, &why);
    if (t->covered == 0) {
        if (why.len)
            log_warn("maps", "%s: every pattern is tried on every key (no prefilter: %s)", path,
                     buf_cstr(&why));
        re_prefilter_free(&t->pf);
        for (size_t i = 0; i < t->n; i++)
            t->rules[i].pf = false;
        buf_free(&why);
        return;
    }
    buf_free(&why);
    t->visit = xcalloc((t->n + 63) / 64, sizeof *t->visit);
    for (size_t i = 0; i < t->n; i++) {
        rule_t *r = &t->rules[i];
        /* Vectorscan may have refused a pattern the syntax check let by. */
        r->pf = r->pf && re_prefilter_covers(t->pf, i);
        if (r->op == OP_IF || (r->op == OP_MATCH && !r->pf))
            t->visit[i / 64] |= 1ULL << (i % 64);
    }
}

int re_table_open(map_t *m, const re_engine_t *eng, buf_t *err)
{
    map_src_t src;
    if (map_src_open(&src, m->path, err) != 0)
        return -1;
    m->st = src.st;
    re_table_t *t = xcalloc(1, sizeof *t);
    t->eng = eng;
    re_prefilter_mode_t mode = re_prefilter_mode();
    if (mode != RE_PREFILTER_OFF)
        t->pf = re_prefilter_new(strcmp(eng->type, "pcre") == 0 ? RE_DIALECT_PCRE : RE_DIALECT_POSIX);
    parse_t ps = {.t = t, .path = m->path, .err = err};
    parse_source(&ps, &src);
    map_src_close(&src);
    buf_free(&ps.why);
    free(ps.stack);
    if (ps.nerr > RE_MAX_ERRORS)
        buf_printf(err, "%s: %d more errors\n", m->path, ps.nerr - RE_MAX_ERRORS);
    if (ps.nerr > 0) {
        table_free(t);
        return -1;
    }
    size_t npairs = 1;
    for (size_t i = 0; i < t->n; i++)
        if (t->rules[i].npairs > npairs)
            npairs = t->rules[i].npairs;
    t->state = eng->state_new(npairs);
    if (t->pf)
        prefilter_setup(t, m->path, mode == RE_PREFILTER_ALWAYS);
    m->impl = t;
    return 0;
}

/* Append rule r's result, with $n taken from the last match of key. */
static void expand(const re_table_t *t, const rule_t *r, const char *key, buf_t *value)
{
    if (r->nsegs == 0) {
        buf_append(value, r->lit, r->litlen);
        return;
    }
    for (size_t i = 0; i < r->nsegs; i++) {
        const seg_t *s = &r->segs[i];
        size_t so, eo;
        if (s->group < 0)
            buf_append(value, r->lit + s->off, s->len);
        else if (t->eng->group(t->state, (size_t)s->group, &so, &eo) && eo > so)
            buf_append(value, key + so, eo - so);
    }
}

/* 1 when re's verdict on key is what the rule wants (match, or no match
 * for a negated pattern), 0 when not, -1 on a matching error (the engine
 * put the reason in value). */
static int test(re_table_t *t, void *re, bool neg, const char *key, size_t len, size_t npairs,
                buf_t *value)
{
    int rc = t->eng->match(t->state, re, key, len, npairs, value);
    if (rc < 0)
        return -1;
    return rc != (int)neg;
}

/* A pattern that cannot be evaluated (match limit, engine error) is not a
 * "no": the caller answers 4xx.  The reason names the rule. */
static map_status tempfail(map_t *m, const rule_t *r, buf_t *value, map_origin_t *origin)
{
    char reason[256];
    str_copy(reason, buf_cstr(value), sizeof reason);
    buf_reset(value);
    buf_printf(value, "%s:%d: %s", m->path, r->line, reason);
    if (origin) {
        origin->file = m->path;
        origin->line = r->line;
    }
    return MAP_TEMPFAIL;
}

/* The first rule at or after i that a walk filtered by cand must try:
 * one the prefilter does not cover, or a candidate.  Without cand, i. */
static size_t next_rule(const re_table_t *t, const uint64_t *cand, size_t i)
{
    if (!cand || i >= t->n)
        return i;
    size_t w = i / 64, nwords = (t->n + 63) / 64;
    uint64_t bits = (t->visit[w] | cand[w]) & (~0ULL << (i % 64));
    while (!bits) {
        if (++w == nwords)
            return t->n;
        bits = t->visit[w] | cand[w];
    }
    return w * 64 + (size_t)__builtin_ctzll(bits);
}

map_status re_table_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin)
{
    re_table_t *t = m->impl;
    size_t len = strlen(key);
    /* A failed scan proves nothing: every rule is tried, as without one. */
    const uint64_t *cand = NULL;
    if (t->pf && re_prefilter_scan(t->pf, key, len) == 0)
        cand = re_prefilter_candidates(t->pf);
    for (size_t i = next_rule(t, cand, 0); i < t->n; i = next_rule(t, cand, i + 1)) {
        const rule_t *r = &t->rules[i];
        int ok;
        switch (r->op) {
        case OP_MATCH:
            ok = test(t, r->re1, r->neg1, key, len, r->npairs, value);
            /* The second pattern asks for no groups, so the first one's
             * offsets survive it for the expansion. */
            if (ok == 1 && r->re2)
                ok = test(t, r->re2, r->neg2, key, len, 0, value);
            if (ok < 0)
                return tempfail(m, r, value, origin);
            if (ok == 0)
                continue;
            if (origin) {
                origin->file = m->path;
                origin->line = r->line;
            }
            buf_reset(value);
            expand(t, r, key, value);
            return MAP_FOUND;
        case OP_IF:
            if (cand && r->pf && !(cand[i / 64] >> (i % 64) & 1)) {
                i = r->endif;
                continue;
            }
            ok = test(t, r->re1, r->neg1, key, len, 0, value);
            if (ok < 0)
                return tempfail(m, r, value, origin);
            if (!ok)
                i = r->endif; /* the loop steps past the endif */
            continue;
        case OP_ENDIF:
            continue;
        }
    }
    return MAP_NOTFOUND;
}

bool re_table_prefilter_info(const map_t *m, size_t *covered, size_t *rules)
{
    if (!m || (m->ops != &map_ops_regexp && m->ops != &map_ops_pcre))
        return false;
    const re_table_t *t = m->impl;
    if (!t->pf)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        n += t->rules[i].op != OP_ENDIF;
    *covered = t->covered;
    *rules = n;
    return true;
}

void re_table_close(map_t *m)
{
    table_free(m->impl);
    m->impl = NULL;
}
