/*
 * body: the cost of body_checks on a large table, with and without the
 * regexp:/pcre: prefilter (src/maps/prefilter.h).
 *
 * Writes a pcre: and a regexp: table of 2,000 body rules (spam phrases,
 * URLs of listed domains, phone numbers written with separators; made
 * from fixed word lists and a fixed pseudo-random sequence, so every run
 * has the same tables) and their first 10 rules as a small table, and a
 * 1 MB message of ordinary text lines that no rule matches, as the bulk
 * of real mail (a message that matches stops at its first matching line,
 * so a clean one is the full cost).  Every line is one map_lookup(), as
 * body_checks does it.  With the prefilter the whole message is looked
 * up; without it (Postfix's way: every pattern on every line) only as
 * many lines as --table-seconds allow, scaled to 1 MB.  Table open time
 * is reported too: that is where the prefilter's database is compiled.
 *
 * Owns the generated files (in the caller's scratch directory, left
 * there: they are small, and worth reading next to the figures).  Must
 * never judge a figure; answers that differ between the two modes on the
 * lines both looked up are counted and printed, since they would mean a
 * bug, not a figure.
 */
#include "engine.h"

#include "core/buf.h"
#include "core/util.h"
#include "maps/maps.h"
#include "maps/prefilter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_RULES 2000
#define BODY_SMALL 10
#define BODY_BYTES (1024 * 1024)

static const char *const spam_verbs[] = {"buy", "order", "get", "claim", "download", "try",
                                         "grab", "unlock", "discover", "win"};
static const char *const spam_adjs[] = {"cheap", "discount", "free", "genuine", "instant",
                                        "exclusive", "secret", "miracle", "guaranteed", "herbal",
                                        "premium", "certified", "limited", "amazing", "risk-free"};
static const char *const spam_nouns[] = {
    "pills", "meds", "watches", "replicas", "loans", "diplomas", "casino bonus", "weight loss",
    "viagra", "cialis", "crypto profits", "lottery prize", "inheritance", "investment",
    "gift card", "mortgage rates", "dating site", "followers", "software licenses", "rolex"};
static const char *const tlds[] = {"com", "net", "biz", "info", "ru", "cn", "top", "xyz"};

/* Rule i of the body table.  pcre uses its own syntax (\b, \s, \d, (?:));
 * regexp the POSIX ERE spelling of the same rule. */
static void body_rule(bool pcre, size_t i, uint64_t *seed, buf_t *out)
{
    buf_reset(out);
    uint64_t r = rng_next(seed);
    const char *sp = pcre ? "\\s+" : "[[:space:]]+";
    const char *digit = pcre ? "\\d" : "[0-9]";
    const char *wb = pcre ? "\\b" : "";
    const char *ng = pcre ? "(?:" : "(";
    switch (i % 4) {
    case 0: /* "buy cheap pills" */
        buf_printf(out, "/%s%s%s%s%s%s%s/", wb, spam_verbs[r % 10], sp, spam_adjs[(r >> 8) % 15], sp,
                   spam_nouns[(r >> 16) % 20], wb);
        break;
    case 1: /* a URL on a listed domain, any host name in front */
        buf_printf(out, "/https?:\\/\\/%s[a-z0-9-]+\\.)?%s-%s%zu\\.%s(\\/|$)/", ng,
                   spam_adjs[(r >> 8) % 15], spam_verbs[(r >> 16) % 10], i * 7919 % 100000,
                   tlds[r % 8]);
        break;
    case 2: { /* a phone number, its digits apart by any separators */
        char num[16];
        snprintf(num, sizeof num, "%010llu", (unsigned long long)(r % 10000000000ULL));
        const char *sep = pcre ? "[\\s.()-]*" : "[[:space:].()-]*";
        buf_putc(out, '/');
        for (int k = 0; k < 10; k++) {
            if (k)
                buf_puts(out, sep);
            buf_putc(out, num[k]);
        }
        buf_putc(out, '/');
        break;
    }
    default: /* an advance-fee phrase with an amount */
        buf_printf(out, "/%s%s\\$?%s+%s[.,]%s+)?%s(million|thousand)%s(us )?(dollars|euros|usd)/",
                   spam_adjs[r % 15], sp, digit, ng, digit, pcre ? "\\s*" : "[[:space:]]*", sp);
        break;
    }
    buf_printf(out, " REJECT body rule %zu", i);
}

static const char *const ham_words[] = {
    "the", "meeting", "is", "moved", "to", "Thursday", "and", "we", "will", "review", "budget",
    "for", "next", "quarter", "please", "send", "your", "comments", "on", "draft", "before",
    "noon", "thanks", "regards", "project", "team", "update", "attached", "report", "shows",
    "that", "sales", "grew", "by", "percent", "in", "March", "while", "costs", "stayed", "flat",
    "our", "customers", "asked", "about", "new", "release", "schedule", "which", "depends",
    "testing", "results", "from", "lab", "see", "you", "at", "office", "tomorrow", "morning",
    "I", "think", "it", "would", "help", "if", "could", "call", "me", "when", "have", "time",
    "a", "of", "with", "this", "be", "are", "was", "order", "free", "buy", "cheap", "discount"};

/* A line of ordinary text (ham), 40..76 bytes; one in 20 carries a URL of
 * an unlisted site, one in 25 a number. */
static void ham_line(uint64_t *seed, buf_t *out)
{
    buf_reset(out);
    size_t want = 40 + rng_next(seed) % 37;
    uint64_t r = rng_next(seed);
    if (r % 20 == 0)
        buf_printf(out, "see https://intranet.example.org/wiki/page%llu",
                   (unsigned long long)(r >> 8) % 1000);
    else if (r % 25 == 1)
        buf_printf(out, "call %llu", (unsigned long long)(r >> 8) % 100000);
    while (out->len < want) {
        const char *w = ham_words[rng_next(seed) % (sizeof ham_words / sizeof *ham_words)];
        if (out->len)
            buf_putc(out, ' ');
        buf_puts(out, w);
    }
    if (out->len > 78)
        buf_truncate(out, 78);
}

typedef struct body_run {
    double open_s;
    size_t covered, rules;
    double elapsed;
    size_t lines, bytes;
    unsigned long found, tempfail;
} body_run_t;

static int write_rules(const char *path, bool pcre, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "moat-bench-engine: %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint64_t seed = 0x626f64792d636b73ULL;
    buf_t line = BUF_INIT;
    fprintf(f, "# generated by moat-bench-engine: %zu %s body rules\n", n, pcre ? "pcre" : "regexp");
    for (size_t i = 0; i < n; i++) {
        body_rule(pcre, i, &seed, &line);
        fputs(buf_cstr(&line), f);
        fputc('\n', f);
    }
    buf_free(&line);
    if (fclose(f) != 0) {
        fprintf(stderr, "moat-bench-engine: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Open spec in the given mode and look up lines [0, nlines) or until
 * seconds have passed (checked every 64 lines); answers[] records each
 * line's status (for the comparison between modes). */
static map_t *run_mode(const char *spec, re_prefilter_mode_t mode, char **lines, size_t nlines,
                       double seconds, char *answers, body_run_t *res)
{
    memset(res, 0, sizeof *res);
    buf_t err = BUF_INIT, value = BUF_INIT;
    re_prefilter_set_mode(mode);
    double t0 = now_mono();
    map_t *m = map_open(spec, NULL, &err);
    res->open_s = now_mono() - t0;
    re_prefilter_set_mode(RE_PREFILTER_DEFAULT);
    if (!m) {
        fprintf(stderr, "moat-bench-engine: map_open: %s", buf_cstr(&err));
        buf_free(&err);
        return NULL;
    }
    if (!re_table_prefilter_info(m, &res->covered, &res->rules))
        res->covered = res->rules = 0;
    double start = now_mono();
    size_t i = 0;
    for (; i < nlines; i++) {
        if ((i & 63) == 0 && i && now_mono() - start > seconds)
            break;
        map_status s = map_lookup(m, lines[i], &value, NULL);
        answers[i] = s == MAP_FOUND ? 'F' : s == MAP_NOTFOUND ? '-' : 'T';
        res->found += s == MAP_FOUND;
        res->tempfail += s == MAP_TEMPFAIL;
        res->bytes += strlen(lines[i]) + 2; /* the CRLF the line had */
    }
    res->elapsed = now_mono() - start;
    res->lines = i;
    buf_free(&err);
    buf_free(&value);
    return m;
}

static double ms_per_mb(const body_run_t *r)
{
    return r->bytes ? r->elapsed * 1e3 * (double)BODY_BYTES / (double)r->bytes : 0;
}

int bench_body(const engine_opts_t *o)
{
    /* The message, made before any clock starts. */
    size_t cap = 32768, nlines = 0, bytes = 0;
    char **lines = xcalloc(cap, sizeof *lines);
    uint64_t seed = 0x68616d2d6c696e65ULL;
    buf_t line = BUF_INIT;
    while (bytes < BODY_BYTES) {
        ham_line(&seed, &line);
        if (nlines == cap) {
            cap *= 2;
            lines = xrealloc(lines, cap * sizeof *lines);
        }
        lines[nlines++] = xstrdup(buf_cstr(&line));
        bytes += line.len + 2;
    }
    buf_free(&line);
    char *ans_on = xmalloc(nlines), *ans_off = xmalloc(nlines);

    char nl[32];
    fmt_count(nl, sizeof nl, (double)nlines);
    printf("body checks (one lookup per line of a 1 MB message, %s text lines that no rule\n"
           "matches; prefilter off: Postfix's way, every pattern on every line, timed for at\n"
           "most %.1f s and scaled to 1 MB)\n", nl, o->table_seconds);
    printf("  %-7s %6s %-9s %10s %9s %12s %12s %6s\n", "type", "rules", "prefilter", "open",
           "covered", "ms per MB", "lines/s", "found");
    int rc = 0;
    static const size_t sizes[] = {BODY_SMALL, BODY_RULES};
    for (int pcre = 1; pcre >= 0; pcre--) {
        for (size_t si = 0; si < 2; si++) {
            size_t n = sizes[si];
            buf_t path = BUF_INIT, spec = BUF_INIT;
            buf_printf(&path, "%s/body-%s-%zu", o->dir, pcre ? "pcre" : "regexp", n);
            buf_printf(&spec, "%s:%s", pcre ? "pcre" : "regexp", buf_cstr(&path));
            if (write_rules(buf_cstr(&path), pcre, n) != 0) {
                rc = -1;
                buf_free(&path);
                buf_free(&spec);
                continue;
            }
            body_run_t on, off;
            map_t *m_on = run_mode(buf_cstr(&spec), RE_PREFILTER_AUTO, lines, nlines, 60.0, ans_on, &on);
            map_t *m_off = run_mode(buf_cstr(&spec), RE_PREFILTER_OFF, lines, nlines, o->table_seconds,
                                    ans_off, &off);
            if (!m_on || !m_off) {
                printf("  %-7s %6zu  could not be set up (see stderr)\n", pcre ? "pcre" : "regexp", n);
                rc = -1;
            } else {
                unsigned long differ = 0;
                for (size_t i = 0; i < off.lines; i++)
                    differ += ans_on[i] != ans_off[i];
                const body_run_t *runs[2] = {&on, &off};
                for (int k = 0; k < 2; k++) {
                    const body_run_t *r = runs[k];
                    char rules[32], rate[32], cov[32];
                    fmt_count(rules, sizeof rules, (double)n);
                    fmt_count(rate, sizeof rate, r->elapsed > 0 ? (double)r->lines / r->elapsed : 0);
                    if (r->rules)
                        snprintf(cov, sizeof cov, "%zu/%zu", r->covered, r->rules);
                    else
                        snprintf(cov, sizeof cov, "-");
                    printf("  %-7s %6s %-9s %7.2f ms %9s %12.2f %12s %6lu%s\n", pcre ? "pcre" : "regexp",
                           rules, k == 0 ? (r->rules ? "on" : "on (unused)") : "off",
                           r->open_s * 1e3, cov, ms_per_mb(r), rate, r->found,
                           r->lines < nlines ? " (scaled)" : "");
                    if (o->kv)
                        printf("RESULT part=body type=%s rules=%zu prefilter=%s open_ms=%.3f covered=%zu "
                               "lines=%zu bytes=%zu elapsed_s=%.4f ms_per_mb=%.3f found=%lu "
                               "tempfail=%lu\n",
                               pcre ? "pcre" : "regexp", n, k == 0 ? "on" : "off", r->open_s * 1e3,
                               r->covered, r->lines, r->bytes, r->elapsed, ms_per_mb(r), r->found,
                               r->tempfail);
                }
                if (differ || on.tempfail || off.tempfail)
                    printf("  %-7s %6s   (%lu answers differed between the modes, %lu/%lu temporary "
                           "failures: these figures are suspect)\n",
                           "", "", differ, on.tempfail, off.tempfail);
            }
            fflush(stdout);
            map_close(&m_on);
            map_close(&m_off);
            buf_free(&path);
            buf_free(&spec);
        }
    }
    printf("  (open: map_open, including compiling every pattern and, with the prefilter,\n"
           "   the Vectorscan database; covered: rules in that database / rules)\n");
    for (size_t i = 0; i < nlines; i++)
        free(lines[i]);
    free(lines);
    free(ans_on);
    free(ans_off);
    return rc;
}
