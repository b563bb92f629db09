/*
 * moat-bench-engine: shared declarations of the three benchmark parts
 * (tables.c: lookups per second per table type and size; body.c: body
 * checks over a 1 MB message with and without the regexp/pcre prefilter;
 * rcpt.c: restriction evaluation time per RCPT for the seed configuration).
 * Everything here is local files and CPU: no sockets, no DNS.
 */
#ifndef MOAT_BENCH_ENGINE_H
#define MOAT_BENCH_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define ENGINE_MAX_SIZES 8

typedef struct engine_opts {
    const char *dir;           /* scratch directory (exists, ours to fill) */
    const char *seed;          /* the seed-gateway folder to copy */
    size_t sizes[ENGINE_MAX_SIZES];
    size_t nsizes;
    size_t linear_max;         /* largest table for the linear types (cidr, regexp, pcre) */
    double table_seconds;      /* lookup time budget per table */
    unsigned long table_count; /* lookup count limit per table */
    double rcpt_seconds;       /* policy_eval time budget */
    unsigned long rcpt_count;  /* policy_eval count limit */
    int kv;                    /* also print RESULT lines */
} engine_opts_t;

/* Both return 0 when they ran, -1 when setup failed (a message went to
 * stderr); neither judges the figures. */
int bench_tables(const engine_opts_t *o);
int bench_body(const engine_opts_t *o);
int bench_rcpt(const engine_opts_t *o);

/* xorshift64*: the same pseudo-random sequence on every run, so two runs
 * look up the same keys in the same order. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* v with thousands separators ("1,234,567") into out. */
void fmt_count(char *out, size_t size, double v);

/* Resident set size of this process in kB (/proc/self/statm), 0 if unknown. */
long rss_kb(void);

/* The nearest-rank percentile p (0 < p <= 100) of n samples already
 * sorted in ascending order; 0 when n is 0. */
double percentile_sorted(const double *v, size_t n, double p);

#endif
