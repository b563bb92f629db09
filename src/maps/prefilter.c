/*
 * prefilter: the Vectorscan database behind a regexp:/pcre: table's
 * candidate set (see prefilter.h for the contract).
 *
 * Owns: the copies of the offered patterns (until build), the compiled
 * block-mode database, its scratch space (one per table: a map_t is used
 * by one thread at a time) and the candidate bit set with the list of the
 * bits the last scan set, so that clearing costs one store per hit.
 *
 * Must never: let a pattern into the database whose Vectorscan meaning
 * might match less than the table's engine would (a missed candidate is
 * a wrong answer; an extra one only costs a real match), pass
 * HS_FLAG_UTF8 (keys are bytes, as they are to PCRE2 and regexec), or
 * allocate during a scan.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "maps/prefilter.h"

#include "core/log.h"
#include "core/util.h"

#include <hs/hs.h>
#include <limits.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

/* A database that fails to compile loses one pattern per try (the one
 * the error names); past this many tries the table goes without. */
#define PF_MAX_RETRIES 64

/* Weakening (see weaken()) rewrites one-character repeats into at most
 * one occurrence in patterns with less literal text than this. */
#define PF_WEAK_LITERAL 3

typedef struct pf_pat {
    char *text;     /* nexpr NUL-terminated expressions, one after another */
    size_t nexpr;
    unsigned flags; /* HS_FLAG_* */
    unsigned id;
    int line;
} pf_pat_t;

struct re_prefilter {
    re_dialect_t dialect;
    pf_pat_t *pats;
    size_t npats, cap;
    hs_database_t *db;
    hs_scratch_t *scratch;
    size_t nids, nwords;
    uint64_t *covers; /* rules in the database */
    uint64_t *cand;   /* candidates of the last scan */
    unsigned *hits;   /* the ids set in cand, to clear them */
    size_t nhits, hitcap;
};

static re_prefilter_mode_t mode_set = RE_PREFILTER_DEFAULT;

void re_prefilter_set_mode(re_prefilter_mode_t mode)
{
    mode_set = mode;
}

re_prefilter_mode_t re_prefilter_mode(void)
{
    if (mode_set != RE_PREFILTER_DEFAULT)
        return mode_set;
    const char *e = getenv("MOAT_RE_PREFILTER");
    if (!e || !*e || str_ieq(e, "auto"))
        return RE_PREFILTER_AUTO;
    if (str_ieq(e, "off") || str_ieq(e, "no") || strcmp(e, "0") == 0)
        return RE_PREFILTER_OFF;
    if (str_ieq(e, "always"))
        return RE_PREFILTER_ALWAYS;
    return RE_PREFILTER_AUTO;
}

static inline bool is_alnum(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* The end of a POSIX bracket expression starting at p ('['), or NULL when
 * it holds something whose PCRE reading could differ: a backslash (a
 * literal to POSIX, an escape to PCRE), a collating element or an
 * equivalence class, a character class PCRE or Vectorscan might read
 * otherwise.  caseless: [:upper:]/[:lower:] are left out then, since
 * engines disagree on whether case folding applies to them. */
static const char *ere_bracket(const char *p, bool caseless)
{
    static const char *const classes[] = {"alpha", "digit", "alnum", "space", "blank", "punct",
                                          "print", "graph", "cntrl", "xdigit", "upper", "lower"};
    const char *q = p + 1;
    if (*q == '^')
        q++;
    if (*q == ']')
        q++;
    for (;;) {
        if (!*q || *q == '\\')
            return NULL;
        if (*q == ']')
            return q + 1;
        if (*q == '[' && (q[1] == '.' || q[1] == '='))
            return NULL;
        if (*q == '[' && q[1] == ':') {
            const char *name = q + 2, *e = strstr(name, ":]");
            if (!e)
                return NULL;
            size_t len = (size_t)(e - name), i;
            for (i = 0; i < sizeof classes / sizeof *classes; i++)
                if (strlen(classes[i]) == len && memcmp(classes[i], name, len) == 0)
                    break;
            if (i == sizeof classes / sizeof *classes || (caseless && i >= 10))
                return NULL;
            q = e + 2;
            continue;
        }
        q++;
    }
}

/* May a POSIX ERE be read as PCRE for the prefilter?  Only when the PCRE
 * reading matches the same strings (or more).  Anything unusual says no:
 * an escaped letter or digit other than \s \S \w \W (GNU \b \< and
 * back-references, or a letter glibc takes literally and PCRE does not),
 * the GNU anchors \` \' \< \>, a quantifier with nothing to repeat or
 * after another one (PCRE's lazy and possessive forms), an interval that
 * is not {n}, {n,} or {n,m}, "(?" and "(*" (PCRE syntax that POSIX does
 * not have). */
static bool ere_eligible(const char *p, bool caseless)
{
    bool can_repeat = false; /* the previous token is something a quantifier may follow */
    while (*p) {
        switch (*p) {
        case '\\':
            /* glibc's \s \S \w \W are [[:space:]] [^[:space:]] [_[:alnum:]]
             * [^_[:alnum:]], in the C locale what PCRE means by them. */
            if (!p[1] || (is_alnum((unsigned char)p[1]) && !strchr("sSwW", p[1])) ||
                (unsigned char)p[1] >= 0x80 || strchr("<>`'", p[1]))
                return false;
            p += 2;
            can_repeat = true;
            continue;
        case '[':
            if (!(p = ere_bracket(p, caseless)))
                return false;
            can_repeat = true;
            continue;
        case '(':
            if (p[1] == '?' || p[1] == '*')
                return false;
            can_repeat = false;
            break;
        case '|':
        case '^':
        case '$':
            can_repeat = false;
            break;
        case '*':
        case '+':
        case '?':
            if (!can_repeat)
                return false;
            can_repeat = false;
            break;
        case '{': {
            if (!can_repeat || !is_digit((unsigned char)p[1]))
                return false;
            const char *q = p + 1;
            while (is_digit((unsigned char)*q))
                q++;
            if (*q == ',')
                for (q++; is_digit((unsigned char)*q); q++)
                    ;
            if (*q != '}')
                return false;
            p = q;
            can_repeat = false;
            break;
        }
        default:
            can_repeat = true; /* including ')' and literal '}' and ']' */
            break;
        }
        p++;
    }
    return true;
}

/* May a PCRE2 pattern go to Vectorscan as it is?  Vectorscan refuses most
 * of what it does not support, but it accepts a few things with a meaning
 * that may not be PCRE2's in byte mode: the (*UTF) and (*UCP) verbs (it
 * switches modes, where PCRE2 would also reject invalid UTF-8 keys),
 * Unicode properties \p \P \X and \C, and extended mode (?x), whose
 * white-space rules differ in details.  A pattern using any of them is
 * always tried; catching a few literal uses too (in \Q...\E) costs only
 * speed. */
static bool pcre_eligible(const char *p)
{
    for (; *p; p++) {
        if (*p == '\\') {
            if (!p[1])
                return false;
            if (strchr("pPXC", p[1]))
                return false;
            p++;
            continue;
        }
        if (*p == '(' && p[1] == '*')
            return false;
        if (*p == '(' && p[1] == '?') {
            /* An option setting: (?i) (?-s) (?i:...) (?^) ... */
            for (const char *q = p + 2; *q && *q != ')' && *q != ':'; q++) {
                if (*q == 'x')
                    return false;
                if (!is_alnum((unsigned char)*q) && *q != '-' && *q != '^')
                    break;
            }
        }
    }
    return true;
}

/* PCRE2's newline convention decides what "." and "$" see as a line end;
 * Vectorscan only knows "\n".  Any other build default would make "$"
 * match before "\r" for PCRE2 and not for Vectorscan, so pcre: tables go
 * without a prefilter then. */
static bool pcre_newline_is_lf(void)
{
    static int cached = -1;
    if (cached < 0) {
        uint32_t nl = 0;
        cached = pcre2_config(PCRE2_CONFIG_NEWLINE, &nl) >= 0 && nl == PCRE2_NEWLINE_LF;
    }
    return cached != 0;
}

/* The end of the atom at p, or NULL when the pattern has something this
 * scanner does not follow (then it is left as it is).  *single: the atom
 * matches exactly one character (a class, an escape, a literal), which
 * a guard may repeat; *literal: a plain character. */
static const char *atom_end(re_dialect_t d, const char *p, bool *single, bool *literal)
{
    *single = true;
    *literal = false;
    if (*p == '\\') {
        if (!p[1])
            return NULL;
        if (is_alnum((unsigned char)p[1])) {
            if (!strchr("sSdDwWhHvVtnrfe", p[1]))
                return NULL; /* \x41 \x{..} \1 \b \Q ...: not followed */
            if (strchr("bB", p[1]))
                return NULL;
        } else {
            *literal = true;
        }
        return p + 2;
    }
    if (*p == '[') {
        if (d == RE_DIALECT_POSIX)
            return ere_bracket(p, false);
        const char *q = p + 1;
        if (*q == '^')
            q++;
        if (*q == ']')
            q++;
        for (; *q && *q != ']'; q++) {
            if (*q == '\\' && !*++q)
                return NULL;
            else if (*q == '[' && q[1] == ':') {
                const char *e = strstr(q + 2, ":]");
                if (!e)
                    return NULL;
                q = e + 1;
            }
        }
        return *q ? q + 1 : NULL;
    }
    if (*p == '(') {
        /* A group is copied whole into a guard; only plain groups, with
         * nothing inside that depends on the rest of the pattern. */
        if (p[1] == '?' && p[2] != ':')
            return NULL;
        *single = false;
        int depth = 0;
        for (const char *q = p; *q; q++) {
            bool s1, l1;
            if (*q == '\\' || *q == '[') {
                const char *e = atom_end(d, q, &s1, &l1);
                if (!e)
                    return NULL;
                q = e - 1;
            } else if (*q == '(') {
                if (q[1] == '?' && q[2] != ':')
                    return NULL;
                depth++;
            } else if (*q == ')' && --depth == 0) {
                return q + 1;
            }
        }
        return NULL;
    }
    if (strchr("*+?{})|^$", *p))
        return NULL;
    if (*p == '.')
        return p + 1;
    *literal = true;
    return p + 1;
}

/*
 * Vectorscan compiles a pattern made of single characters joined by
 * unbounded repeats of a class (the seeds' phone numbers:
 * 4[\s\-.]*9[\s\-.]*5...) slowly and scans it slowly, and both grow
 * with the square of the number of such patterns.  With little literal
 * text to anchor on (no run of PF_WEAK_LITERAL plain characters), such a
 * pattern is weakened for the prefilter: each "A X*" (A an atom, X a
 * one-character atom, at the top level) becomes "A X?", each "A X+"
 * becomes "A X", and the guard "A X X" is added under the same rule id.
 * Still a superset: a match of the pattern where every such repeat took
 * at most one X is a match of the weakened one; one where a repeat took
 * two or more has A followed by two X in the key, which the guard finds.
 * out: the expressions, NUL-separated; false to use the pattern as is.
 */
static bool weaken(re_dialect_t d, const char *pat, buf_t *out, size_t *nexpr)
{
    buf_t main = BUF_INIT, guards = BUF_INIT;
    size_t run = 0, longest = 0, nguards = 0;
    const char *p = pat, *prev = NULL, *prev_end = NULL;
    bool ok = true;
    if (strstr(pat, "(?") && d == RE_DIALECT_PCRE) {
        /* Inline options would not carry over into a guard. */
        for (const char *q = pat; (q = strstr(q, "(?")) != NULL; q += 2)
            if (q[2] != ':')
                ok = false;
    }
    while (ok && *p) {
        if (*p == '|' || *p == '^' || *p == '$') {
            buf_putc(&main, *p++);
            prev = NULL;
            run = 0;
            continue;
        }
        bool single, literal;
        const char *e = atom_end(d, p, &single, &literal);
        if (!e) {
            ok = false;
            break;
        }
        char q = *e;
        bool quantified = q == '*' || q == '+' || q == '?' || q == '{';
        run = literal && !quantified ? run + 1 : 0;
        if (run > longest)
            longest = run;
        if ((q == '*' || q == '+') && e[1] != '+' && single && *p != '.' && prev && prev_end == p) {
            /* "A X*" -> "A X?" and the guard "A X X". */
            buf_append(&main, p, (size_t)(e - p));
            if (q == '*')
                buf_putc(&main, '?');
            buf_append(&guards, prev, (size_t)(p - prev));
            buf_append(&guards, p, (size_t)(e - p));
            buf_append(&guards, p, (size_t)(e - p));
            buf_putc(&guards, 0);
            nguards++;
            p = e + 1;
            prev = NULL;
            continue;
        }
        buf_append(&main, p, (size_t)(e - p));
        prev = p;
        prev_end = e;
        p = e;
        if (quantified) {
            /* The quantifier stays; a quantified atom is no guard prefix. */
            const char *qe = p + 1;
            if (q == '{') {
                qe = strchr(p, '}');
                if (!qe) {
                    ok = false;
                    break;
                }
                qe++;
            }
            if (*qe == '?' || *qe == '+')
                qe++;
            buf_append(&main, p, (size_t)(qe - p));
            p = qe;
            prev = NULL;
        }
    }
    ok = ok && nguards > 0 && longest < PF_WEAK_LITERAL;
    if (ok) {
        buf_reset(out);
        buf_append(out, main.data, main.len);
        buf_putc(out, 0);
        buf_append(out, guards.data, guards.len);
        *nexpr = 1 + nguards;
    }
    buf_free(&main);
    buf_free(&guards);
    return ok;
}

re_prefilter_t *re_prefilter_new(re_dialect_t dialect)
{
    re_prefilter_t *pf = xcalloc(1, sizeof *pf);
    pf->dialect = dialect;
    return pf;
}

/* Table flags (each letter toggles a default) to Vectorscan flags; false
 * when the flags make the pattern ineligible. */
static bool hs_flags_for(re_dialect_t d, const char *flags, size_t nflags, unsigned *out)
{
    bool caseless = true, b = true, multi = false;
    if (d == RE_DIALECT_PCRE) {
        /* Postfix's defaults: CASELESS and DOTALL on.  A (anchored),
         * E (dollar end only) and U (ungreedy) only narrow or reorder
         * what matches, so the unflagged pattern is a valid prefilter. */
        for (size_t i = 0; i < nflags; i++) {
            switch (flags[i]) {
            case 'i':
                caseless = !caseless;
                break;
            case 's':
                b = !b; /* DOTALL */
                break;
            case 'm':
                multi = !multi;
                break;
            case 'x':
                return false;
            }
        }
        *out = (caseless ? HS_FLAG_CASELESS : 0) | (b ? HS_FLAG_DOTALL : 0) |
               (multi ? HS_FLAG_MULTILINE : 0);
        return true;
    }
    /* regcomp: REG_ICASE and REG_EXTENDED on; m is REG_NEWLINE, under
     * which "." stops at newlines and ^ $ match at them (Vectorscan's
     * [^a] still matches a newline: a wider match, which is allowed). */
    for (size_t i = 0; i < nflags; i++) {
        switch (flags[i]) {
        case 'i':
            caseless = !caseless;
            break;
        case 'x':
            b = !b; /* REG_EXTENDED */
            break;
        case 'm':
            multi = !multi;
            break;
        }
    }
    if (!b)
        return false; /* a basic RE: its syntax is not PCRE's */
    *out = (caseless ? HS_FLAG_CASELESS : 0) | (multi ? HS_FLAG_MULTILINE : HS_FLAG_DOTALL);
    return true;
}

bool re_prefilter_offer(re_prefilter_t *pf, size_t id, const char *pattern, const char *flags,
                        size_t nflags, int line)
{
    unsigned hf;
    if (id > UINT_MAX || !hs_flags_for(pf->dialect, flags, nflags, &hf))
        return false;
    if (pf->dialect == RE_DIALECT_PCRE ? !pcre_newline_is_lf() || !pcre_eligible(pattern)
                                       : !ere_eligible(pattern, (hf & HS_FLAG_CASELESS) != 0))
        return false;
    if (pf->npats == pf->cap) {
        pf->cap = pf->cap ? pf->cap * 2 : 64;
        pf->pats = xrealloc(pf->pats, pf->cap * sizeof *pf->pats);
    }
    buf_t w = BUF_INIT;
    size_t nexpr = 1;
    char *text;
    if (weaken(pf->dialect, pattern, &w, &nexpr)) {
        text = xmalloc(w.len);
        memcpy(text, w.data, w.len);
    } else {
        text = xstrdup(pattern);
    }
    buf_free(&w);
    pf->pats[pf->npats++] = (pf_pat_t){text, nexpr, hf, (unsigned)id, line};
    return true;
}

static void drop_pat(re_prefilter_t *pf, size_t i)
{
    free(pf->pats[i].text);
    pf->pats[i] = pf->pats[--pf->npats];
}

static void free_pats(re_prefilter_t *pf)
{
    for (size_t i = 0; i < pf->npats; i++)
        free(pf->pats[i].text);
    free(pf->pats);
    pf->pats = NULL;
    pf->npats = pf->cap = 0;
}

/* Leave out what Vectorscan cannot take or what could match the empty
 * string (such a rule is tried on every key anyway), one pattern at a
 * time, so that one refusal does not cost a whole database compile. */
static void screen(re_prefilter_t *pf, const char *path)
{
    for (size_t i = 0; i < pf->npats;) {
        pf_pat_t *p = &pf->pats[i];
        bool keep = true;
        const char *x = p->text;
        for (size_t k = 0; keep && k < p->nexpr; k++, x += strlen(x) + 1) {
            hs_expr_info_t *info = NULL;
            hs_compile_error_t *cerr = NULL;
            if (hs_expression_info(x, p->flags | HS_FLAG_PREFILTER, &info, &cerr) != HS_SUCCESS) {
                log_debug("maps", "%s:%d: pattern tried on every key (prefilter: %s)", path, p->line,
                          cerr ? cerr->message : "refused");
                hs_free_compile_error(cerr);
                keep = false;
                continue;
            }
            keep = info->min_width > 0;
            free(info);
        }
        if (!keep) {
            drop_pat(pf, i);
            continue;
        }
        i++;
    }
}

size_t re_prefilter_build(re_prefilter_t *pf, size_t nids, size_t min_rules, size_t max_rules,
                          const char *path, buf_t *why)
{
    if (pf->npats < min_rules || (max_rules && pf->npats > max_rules)) {
        free_pats(pf);
        return 0;
    }
    screen(pf, path);
    const char **exprs = NULL;
    unsigned *flags = NULL, *ids = NULL;
    size_t *owner = NULL; /* expression -> pattern */
    int tries = 0;
    while (pf->npats >= min_rules && pf->npats > 0) {
        size_t nx = 0;
        for (size_t i = 0; i < pf->npats; i++)
            nx += pf->pats[i].nexpr;
        exprs = xrealloc(exprs, nx * sizeof *exprs);
        flags = xrealloc(flags, nx * sizeof *flags);
        ids = xrealloc(ids, nx * sizeof *ids);
        owner = xrealloc(owner, nx * sizeof *owner);
        nx = 0;
        for (size_t i = 0; i < pf->npats; i++) {
            const char *x = pf->pats[i].text;
            for (size_t k = 0; k < pf->pats[i].nexpr; k++, x += strlen(x) + 1, nx++) {
                exprs[nx] = x;
                flags[nx] = pf->pats[i].flags | HS_FLAG_PREFILTER | HS_FLAG_SINGLEMATCH;
                ids[nx] = pf->pats[i].id;
                owner[nx] = i;
            }
        }
        hs_compile_error_t *cerr = NULL;
        if (hs_compile_multi(exprs, flags, ids, (unsigned)nx, HS_MODE_BLOCK, NULL, &pf->db,
                             &cerr) == HS_SUCCESS)
            break;
        pf->db = NULL;
        int bad = cerr ? cerr->expression : -1;
        if (bad >= 0 && (size_t)bad < nx)
            bad = (int)owner[bad];
        if (bad < 0 || (size_t)bad >= pf->npats || ++tries > PF_MAX_RETRIES) {
            buf_printf(why, "Vectorscan: %s", cerr ? cerr->message : "compile failed");
            hs_free_compile_error(cerr);
            break;
        }
        log_debug("maps", "%s:%d: pattern tried on every key (prefilter: %s)", path,
                  pf->pats[bad].line, cerr->message);
        hs_free_compile_error(cerr);
        drop_pat(pf, (size_t)bad);
    }
    free(exprs);
    free(flags);
    free(ids);
    free(owner);
    if (pf->db && hs_alloc_scratch(pf->db, &pf->scratch) != HS_SUCCESS) {
        buf_puts(why, "Vectorscan: cannot allocate scratch space");
        hs_free_database(pf->db);
        pf->db = NULL;
    }
    if (!pf->db) {
        free_pats(pf);
        return 0;
    }
    pf->nids = nids;
    pf->nwords = (nids + 63) / 64;
    pf->covers = xcalloc(pf->nwords, sizeof *pf->covers);
    pf->cand = xcalloc(pf->nwords, sizeof *pf->cand);
    pf->hits = xcalloc(pf->npats, sizeof *pf->hits);
    pf->hitcap = pf->npats;
    for (size_t i = 0; i < pf->npats; i++)
        pf->covers[pf->pats[i].id / 64] |= 1ULL << (pf->pats[i].id % 64);
    free_pats(pf);
    return pf->hitcap;
}

bool re_prefilter_covers(const re_prefilter_t *pf, size_t id)
{
    return pf->db && id < pf->nids && (pf->covers[id / 64] >> (id % 64) & 1);
}

static int on_match(unsigned int id, unsigned long long from, unsigned long long to,
                    unsigned int flags, void *ctx)
{
    (void)from;
    (void)to;
    (void)flags;
    re_prefilter_t *pf = ctx;
    uint64_t bit = 1ULL << (id % 64);
    /* SINGLEMATCH reports an id once per scan; the test keeps the hit
     * list within its size whatever happens. */
    if (id < pf->nids && !(pf->cand[id / 64] & bit) && pf->nhits < pf->hitcap) {
        pf->cand[id / 64] |= bit;
        pf->hits[pf->nhits++] = id;
    }
    return 0;
}

int re_prefilter_scan(re_prefilter_t *pf, const char *key, size_t len)
{
    for (size_t i = 0; i < pf->nhits; i++)
        pf->cand[pf->hits[i] / 64] &= ~(1ULL << (pf->hits[i] % 64));
    pf->nhits = 0;
    if (len > UINT_MAX)
        return -1;
    if (hs_scan(pf->db, key, (unsigned)len, 0, pf->scratch, on_match, pf) != HS_SUCCESS)
        return -1;
    return 0;
}

const uint64_t *re_prefilter_candidates(const re_prefilter_t *pf)
{
    return pf->cand;
}

size_t re_prefilter_db_size(const re_prefilter_t *pf)
{
    size_t size = 0;
    if (pf->db && hs_database_size(pf->db, &size) != HS_SUCCESS)
        size = 0;
    return size;
}

void re_prefilter_free(re_prefilter_t **pp)
{
    re_prefilter_t *pf = *pp;
    if (!pf)
        return;
    free_pats(pf);
    if (pf->scratch)
        hs_free_scratch(pf->scratch);
    if (pf->db)
        hs_free_database(pf->db);
    free(pf->covers);
    free(pf->cand);
    free(pf->hits);
    free(pf);
    *pp = NULL;
}
