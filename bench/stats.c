/*
 * stats: latency samples, percentiles and the printed report.
 *
 * Owns nothing but the sample arrays it grows.  It only reads what the
 * client recorded; it must never judge a figure good or bad: the bench
 * prints, people compare.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

void samples_add(samples_t *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *nv = realloc(s->v, cap * sizeof(*nv));
        if (nv == NULL) {
            fprintf(stderr, "moat-bench: out of memory for samples\n");
            exit(2);
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    s->sorted = false;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double samples_pct(samples_t *s, double pct)
{
    if (s->n == 0)
        return 0;
    if (!s->sorted) {
        qsort(s->v, s->n, sizeof(*s->v), cmp_double);
        s->sorted = true;
    }
    /* Nearest rank: the smallest sample with at least pct% at or below it. */
    size_t rank = (size_t)((pct / 100.0) * (double)s->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1];
}

void samples_free(samples_t *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

const char *stage_name(enum stage st)
{
    static const char *const names[ST_MAX] = {
        [ST_CONNECT] = "connect", [ST_GREETING] = "greeting", [ST_EHLO] = "EHLO",
        [ST_MAIL] = "MAIL",       [ST_RCPT] = "RCPT",         [ST_DATA] = "DATA",
        [ST_DOT] = "end-of-data", [ST_RSET] = "RSET",         [ST_QUIT] = "QUIT",
        [ST_STARTTLS] = "STARTTLS", [ST_TLS] = "TLS handshake",
    };
    return (unsigned)st < ST_MAX ? names[st] : "?";
}

static const char *fail_name(enum fail_kind k)
{
    static const char *const names[F_MAX] = {
        [F_CONNECT] = "connect failed", [F_TIMEOUT] = "timeout",
        [F_CLOSED] = "connection closed", [F_PROTOCOL] = "bad reply",
        [F_DEADLINE] = "cut off",       [F_TLS] = "TLS failure",
    };
    return (unsigned)k < F_MAX ? names[k] : "?";
}

bool reply_expected(const struct bench_opts *o, enum stage st, int code)
{
    switch (st) {
    case ST_GREETING:
        return code == 220;
    case ST_EHLO:
    case ST_MAIL:
    case ST_DOT:
    case ST_RSET:
        return code == 250;
    case ST_RCPT:
        /* In reject mode a permanent refusal is the point of the exercise. */
        if (o->mode == MODE_REJECT)
            return code >= 500 && code <= 599;
        return code == 250 || code == 251;
    case ST_DATA:
        return code == 354;
    case ST_STARTTLS:
        return code == 220;
    case ST_QUIT:
        return code == 221;
    default:
        return false;
    }
}

static unsigned long count_reply_errors(const struct bench_opts *o, const struct bench_stats *st)
{
    unsigned long n = 0;
    for (int s = 0; s < ST_MAX; s++)
        for (int c = 0; c < BENCH_REPLY_CODES; c++)
            if (st->codes[s][c] && !reply_expected(o, (enum stage)s, c))
                n += st->codes[s][c];
    return n;
}

/* Failures other than replies.  Sessions cut off by --max-seconds are
 * not the server's doing, so they are counted apart (count_cut_off). */
static unsigned long count_other_errors(const struct bench_stats *st)
{
    unsigned long n = 0;
    for (int s = 0; s < ST_MAX; s++)
        for (int k = 0; k < F_MAX; k++)
            if (k != F_DEADLINE)
                n += st->fails[s][k];
    return n;
}

static unsigned long count_cut_off(const struct bench_stats *st)
{
    unsigned long n = 0;
    for (int s = 0; s < ST_MAX; s++)
        n += st->fails[s][F_DEADLINE];
    return n;
}

unsigned long report_errors(const struct bench_opts *o, const struct bench_stats *st)
{
    return count_reply_errors(o, st) + count_other_errors(st) + count_cut_off(st);
}

static double elapsed(const struct bench_stats *st)
{
    double e = st->t_end - st->t_begin;
    return e > 0 ? e : 0;
}

static double rate(const struct bench_stats *st)
{
    double e = elapsed(st);
    return e > 0 ? (double)st->ok / e : 0;
}

static const char *mode_name(enum bench_mode m)
{
    return m == MODE_SEND ? "send" : m == MODE_REJECT ? "reject" : m == MODE_IDLE ? "idle" : "handshake";
}

static const char *tls_name(enum bench_tls t)
{
    return t == TLS_STARTTLS ? "starttls" : t == TLS_IMPLICIT ? "tls" : "off";
}

static void print_latency(const char *label, samples_t *s)
{
    if (s->n == 0) {
        printf("  %-26s %9s %9s %9s %9s   (no samples)\n", label, "-", "-", "-", "-");
        return;
    }
    printf("  %-26s %9.2f %9.2f %9.2f %9.2f   (%zu)\n", label, samples_pct(s, 50) * 1e3,
           samples_pct(s, 90) * 1e3, samples_pct(s, 99) * 1e3, samples_pct(s, 100) * 1e3, s->n);
}

static void print_errors(const struct bench_opts *o, const struct bench_stats *st)
{
    unsigned long re = count_reply_errors(o, st), oe = count_other_errors(st);
    unsigned long cut = count_cut_off(st);
    if (cut > 0 || st->started < o->count)
        printf("cut off by --max-seconds (%.0f s): %lu in flight, %lu never started\n",
               o->max_seconds, cut, o->count - st->started);
    if (re == 0 && oe == 0) {
        printf("errors: none\n");
        return;
    }
    printf("errors:\n");
    for (int s = 0; s < ST_MAX; s++)
        for (int c = 0; c < BENCH_REPLY_CODES; c++)
            if (st->codes[s][c] && !reply_expected(o, (enum stage)s, c))
                printf("  %-12s reply %3d   %lu\n", stage_name((enum stage)s), c, st->codes[s][c]);
    for (int s = 0; s < ST_MAX; s++)
        for (int k = 0; k < F_MAX; k++)
            if (st->fails[s][k] && k != F_DEADLINE)
                printf("  %-12s %-26s %lu\n", stage_name((enum stage)s),
                       fail_name((enum fail_kind)k), st->fails[s][k]);
    if (st->first_error[0] != '\0')
        printf("  first system error: %s\n", st->first_error);
}

void report_print(const struct bench_opts *o, struct bench_stats *st)
{
    printf("moat-bench %s: %s", mode_name(o->mode), o->dst_text);
    if (o->have_src)
        printf(" from %s", o->src_text);
    else if (o->have_range)
        printf(" from %s, the next address for each session", o->src_text);
    printf(", %lu %s at concurrency %u", o->count,
           o->mode == MODE_IDLE ? "connections" : "sessions", o->concurrency);
    if (o->mode == MODE_SEND || o->mode == MODE_REJECT)
        printf(", %zu RCPT, pipelining %s", o->nrcpt, o->pipelining ? "on" : "off");
    if (o->mode == MODE_SEND)
        printf(", %zu-byte messages", st->msg_size);
    if (o->tls != TLS_OFF)
        printf(", %s%s", o->tls == TLS_STARTTLS ? "STARTTLS" : "implicit TLS",
               o->resume ? ", sessions resumed per slot" : "");
    printf("\n");

    if (o->have_range && o->count > o->range_size)
        printf("  note: %lu sessions over %lu addresses: client addresses repeat\n", o->count,
               o->range_size);

    if (o->mode == MODE_IDLE) {
        printf("  open at hold        %lu of %lu\n", st->open_at_hold, o->count);
        printf("  held for            %.1f s\n", st->hold_seconds);
        printf("  closed by server    %lu during the hold\n", st->closed_in_hold);
        printf("  open at QUIT        %lu\n", st->open_at_quit);
        printf("  %-26s %9s %9s %9s %9s\n", "latency (ms)", "p50", "p90", "p99", "max");
        print_latency("connect..EHLO reply", &st->setup);
        if (o->tls != TLS_OFF)
            print_latency("TLS handshake", &st->handshake);
        print_errors(o, st);
        return;
    }

    printf("  elapsed             %.2f s\n", elapsed(st));
    printf("  sessions            %lu started, %lu ok, %lu failed\n", st->started, st->ok,
           st->failed);
    if (o->mode == MODE_SEND)
        printf("  rate                %.1f messages/s accepted\n", rate(st));
    else if (o->mode == MODE_REJECT)
        printf("  rate                %.1f rejected transactions/s\n", rate(st));
    else
        printf("  rate                %.1f TLS handshakes/s\n", rate(st));
    if (o->tls != TLS_OFF)
        printf("  TLS handshakes      %lu full, %lu resumed\n", st->tls_full, st->tls_resumed);
    if (elapsed(st) > 0)
        printf("  client CPU          %.2f s (%.0f%% of one core)\n", st->cpu_seconds,
               100.0 * st->cpu_seconds / elapsed(st));
    if (st->no_pipelining)
        printf("  note: the server did not offer PIPELINING in %lu sessions (sent in lock-step)\n",
               st->no_pipelining);
    printf("  %-26s %9s %9s %9s %9s\n", "latency (ms)", "p50", "p90", "p99", "max");
    if (o->mode == MODE_SEND) {
        print_latency("transaction (MAIL..250)", &st->txn);
        print_latency("after the dot (.. 250)", &st->dot);
    } else if (o->mode == MODE_REJECT) {
        print_latency("transaction (MAIL..5xx)", &st->txn);
    }
    if (o->tls != TLS_OFF)
        print_latency("TLS handshake", &st->handshake);
    print_latency("session (connect..close)", &st->session);
    if (o->mode == MODE_REJECT) {
        printf("RCPT replies:");
        for (int c = 0; c < BENCH_REPLY_CODES; c++)
            if (st->codes[ST_RCPT][c])
                printf(" %d x %lu", c, st->codes[ST_RCPT][c]);
        printf("\n");
    }
    print_errors(o, st);
}

static void kv_latency(const char *name, samples_t *s)
{
    printf(" %s_p50_ms=%.3f %s_p90_ms=%.3f %s_p99_ms=%.3f %s_max_ms=%.3f", name,
           samples_pct(s, 50) * 1e3, name, samples_pct(s, 90) * 1e3, name,
           samples_pct(s, 99) * 1e3, name, samples_pct(s, 100) * 1e3);
}

void report_kv(const struct bench_opts *o, struct bench_stats *st)
{
    printf("RESULT mode=%s count=%lu concurrency=%u", mode_name(o->mode), o->count,
           o->concurrency);
    if (o->mode == MODE_IDLE) {
        printf(" open=%lu closed_in_hold=%lu open_at_quit=%lu hold_s=%.2f", st->open_at_hold,
               st->closed_in_hold, st->open_at_quit, st->hold_seconds);
        kv_latency("setup", &st->setup);
    } else {
        printf(" started=%lu ok=%lu failed=%lu elapsed_s=%.3f rate=%.1f size=%zu", st->started,
               st->ok, st->failed, elapsed(st), rate(st), st->msg_size);
        if (o->mode != MODE_HANDSHAKE)
            kv_latency("txn", &st->txn);
        if (o->mode == MODE_SEND)
            kv_latency("dot", &st->dot);
        kv_latency("session", &st->session);
    }
    if (o->tls != TLS_OFF) {
        printf(" tls=%s tls_full=%lu tls_resumed=%lu", tls_name(o->tls), st->tls_full,
               st->tls_resumed);
        kv_latency("hs", &st->handshake);
    }
    printf(" client_cpu_s=%.3f", st->cpu_seconds);
    printf(" reply_errors=%lu other_errors=%lu cut_off=%lu not_started=%lu\n",
           count_reply_errors(o, st), count_other_errors(st), count_cut_off(st),
           o->count - st->started);
}
