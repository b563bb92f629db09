/*
 * moat-bench-engine: how fast the lookup tables and the restriction
 * engine answer, without the SMTP session around them.  Part of
 * `make bench` (bench/run.sh runs it after the SMTP phases); see
 * docs/bench.md.
 *
 * Owns its scratch directory: with --dir it fills the given directory
 * and leaves removal to the caller; otherwise it makes one under $TMPDIR
 * and removes it before exiting.  Must never touch the network, judge a
 * figure (the exit status is 0 whenever the measurements could be made),
 * or run for long: every measurement stops at a count or a time limit.
 */
#include "engine.h"

#include "core/util.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: moat-bench-engine [--dir DIR] [--seed DIR] [--only tables|body|rcpt]\n"
    "                         [--sizes N,N,...] [--linear-max N]\n"
    "                         [--table-seconds S] [--table-count N]\n"
    "                         [--rcpt-seconds S] [--rcpt-count N] [--kv]\n"
    "  Lookups per second of lmdb, cidr, regexp and pcre tables of each size\n"
    "  (cidr, regexp and pcre only up to --linear-max entries), then body\n"
    "  checks: 10 and 2,000 pcre/regexp body rules over a 1 MB message with\n"
    "  and without the prefilter, then the restriction engine's time per RCPT\n"
    "  for the seed-gateway configuration without its DNS, state and queue\n"
    "  parts.  Prints figures, exits 0.\n"
    "  --dir DIR          scratch directory to fill (kept); default: a new\n"
    "                     directory under $TMPDIR, removed at exit\n"
    "  --seed DIR         the seed-gateway folder (default: $MOAT_SEED_GATEWAY,\n"
    "                     else ../shared/examples/seed-gateway from the cwd)\n"
    "  --sizes LIST       table sizes [10,10000,1000000]\n"
    "  --linear-max N     largest cidr/regexp/pcre table [10000]\n"
    "  --table-seconds S  lookup time per table, and per unfiltered body run [1]\n"
    "  --table-count N    lookups per table at most [2000000]\n"
    "  --rcpt-seconds S   policy evaluation time [5]\n"
    "  --rcpt-count N     policy evaluations at most [1000000]\n"
    "  --kv               also print RESULT key=value lines\n";

long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    long size = 0, res = 0;
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
        res = 0;
    fclose(f);
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

void fmt_count(char *out, size_t size, double v)
{
    /* Thousands separators: 1,234,567 is easier to read in a table. */
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", v);
    size_t len = strlen(digits), o = 0;
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        if (i && (len - i) % 3 == 0 && o + 2 < size)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
}

double percentile_sorted(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    /* Nearest rank: the smallest value with at least p% of samples at or below it. */
    size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "moat-bench-engine: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static int parse_count(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > max || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || v > 600)
        return -1;
    *out = v;
    return 0;
}

static int parse_sizes(const char *s, engine_opts_t *o)
{
    o->nsizes = 0;
    char *copy = xstrdup(s);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long long v;
        if (o->nsizes == ENGINE_MAX_SIZES || parse_count(tok, 100000000ULL, &v) != 0) {
            rc = -1;
            break;
        }
        o->sizes[o->nsizes++] = (size_t)v;
    }
    free(copy);
    return rc == 0 && o->nsizes ? 0 : -1;
}

int main(int argc, char **argv)
{
    engine_opts_t o = {
        .sizes = {10, 10000, 1000000},
        .nsizes = 3,
        .linear_max = 10000,
        .table_seconds = 1.0,
        .table_count = 2000000,
        .rcpt_seconds = 5.0,
        .rcpt_count = 1000000,
    };
    const char *only = NULL;
    enum { O_DIR = 256, O_SEED, O_ONLY, O_SIZES, O_LINMAX, O_TSEC, O_TCNT, O_RSEC, O_RCNT, O_KV };
    static const struct option lopts[] = {
        {"dir", required_argument, NULL, O_DIR},
        {"seed", required_argument, NULL, O_SEED},
        {"only", required_argument, NULL, O_ONLY},
        {"sizes", required_argument, NULL, O_SIZES},
        {"linear-max", required_argument, NULL, O_LINMAX},
        {"table-seconds", required_argument, NULL, O_TSEC},
        {"table-count", required_argument, NULL, O_TCNT},
        {"rcpt-seconds", required_argument, NULL, O_RSEC},
        {"rcpt-count", required_argument, NULL, O_RCNT},
        {"kv", no_argument, NULL, O_KV},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    unsigned long long v;
    while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_DIR:
            o.dir = optarg;
            break;
        case O_SEED:
            o.seed = optarg;
            break;
        case O_ONLY:
            only = optarg;
            bad = strcmp(only, "tables") != 0 && strcmp(only, "body") != 0 && strcmp(only, "rcpt") != 0;
            break;
        case O_SIZES:
            bad = parse_sizes(optarg, &o) != 0;
            break;
        case O_LINMAX:
            bad = parse_count(optarg, 100000000ULL, &v) != 0;
            o.linear_max = (size_t)v;
            break;
        case O_TSEC:
            bad = parse_seconds(optarg, &o.table_seconds) != 0;
            break;
        case O_TCNT:
            bad = parse_count(optarg, 1000000000ULL, &v) != 0;
            o.table_count = (unsigned long)v;
            break;
        case O_RSEC:
            bad = parse_seconds(optarg, &o.rcpt_seconds) != 0;
            break;
        case O_RCNT:
            bad = parse_count(optarg, 100000000ULL, &v) != 0;
            o.rcpt_count = (unsigned long)v;
            break;
        case O_KV:
            o.kv = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            bad = 1;
        }
        if (bad) {
            if (c != '?')
                fprintf(stderr, "moat-bench-engine: bad value for --%s: %s\n",
                        lopts[c - O_DIR].name, optarg ? optarg : "");
            fputs(usage_text, stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fputs(usage_text, stderr);
        return 2;
    }
    if (!o.seed)
        o.seed = getenv("MOAT_SEED_GATEWAY");
    if (!o.seed || !*o.seed)
        o.seed = "../shared/examples/seed-gateway";

    char *made = NULL;
    if (o.dir) {
        if (mkdir_p(o.dir, 0700) != 0) {
            fprintf(stderr, "moat-bench-engine: %s: %s\n", o.dir, strerror(errno));
            return 2;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        size_t n = strlen(tmp && *tmp ? tmp : "/tmp") + 32;
        made = xmalloc(n);
        snprintf(made, n, "%s/moat-bench-engine.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(made)) {
            fprintf(stderr, "moat-bench-engine: mkdtemp %s: %s\n", made, strerror(errno));
            free(made);
            return 2;
        }
        o.dir = made;
    }

    int rc = 0;
    if (!only || strcmp(only, "tables") == 0)
        rc |= bench_tables(&o);
    if (!only || strcmp(only, "body") == 0) {
        if (!only)
            putchar('\n');
        rc |= bench_body(&o);
    }
    if (!only || strcmp(only, "rcpt") == 0) {
        if (!only)
            putchar('\n');
        rc |= bench_rcpt(&o);
    }
    fflush(stdout);

    if (made) {
        nftw(made, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(made);
    }
    /* A part that could not be set up is reported, not hidden behind 0. */
    return rc ? 1 : 0;
}
