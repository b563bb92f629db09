/*
 * bench_store: operations per second of the state store (src/store/), in
 * process, on one event loop with a pool, as bench/store.sh runs it:
 *
 *   bench_store SPEC [--ops N] [--concurrency C] [--keys K] [--threads T]
 *
 * For each operation (set with a ttl, get, incr with a ttl, and a
 * greylist-like get-then-set pair) it keeps C requests in flight over K
 * distinct keys until N have answered, and prints one line: the rate, and
 * the errors (which a run should not have).  Prints figures, judges
 * nothing; exit status 1 only when the store cannot be opened.
 */
#include "core/buf.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/util.h"
#include "store/store.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OP_SET, OP_GET, OP_INCR, OP_GREY } op_t;

typedef struct run {
    store_t *s;
    op_t op;
    long target, started, done, errors, keys;
    struct event_base *base;
} run_t;

typedef struct slot {
    run_t *run;
    char key[96];
} slot_t;

static void start_one(slot_t *sl);

static void after(slot_t *sl, const store_result_t *r)
{
    run_t *run = sl->run;
    if (r->status == ST_ERROR)
        run->errors++;
    run->done++;
    if (run->started < run->target)
        start_one(sl);
    else if (run->done == run->target)
        event_base_loopbreak(run->base);
}

static void on_answer(void *arg, const store_result_t *r)
{
    after(arg, r);
}

/* Greylist-like: read the triplet, then write it back (first seen, or
 * the count of deliveries). */
static void on_grey_get(void *arg, const store_result_t *r)
{
    slot_t *sl = arg;
    if (r->status == ST_ERROR) {
        after(sl, r);
        return;
    }
    static const char val[] = "1700000000 1700000300 1";
    store_set(sl->run->s, sl->key, val, sizeof val - 1, 86400 * 35, on_answer, sl);
}

static void start_one(slot_t *sl)
{
    run_t *run = sl->run;
    long n = run->started++;
    snprintf(sl->key, sizeof sl->key, "bench:%ld:192.0.2.0:sender@example.org:rcpt@example.net", n % run->keys);
    switch (run->op) {
    case OP_SET:
        store_set(run->s, sl->key, "1700000000", 10, 3600, on_answer, sl);
        break;
    case OP_GET:
        store_get(run->s, sl->key, on_answer, sl);
        break;
    case OP_INCR:
        store_incr(run->s, sl->key, 1, 3600, on_answer, sl);
        break;
    case OP_GREY:
        store_get(run->s, sl->key, on_grey_get, sl);
        break;
    }
}

static void bench(struct event_base *base, store_t *s, const char *name, op_t op, long ops, int conc, long keys)
{
    run_t run = {.s = s, .op = op, .target = ops, .keys = keys, .base = base};
    slot_t *slots = xcalloc((size_t)conc, sizeof *slots);
    double t0 = now_mono();
    for (int i = 0; i < conc && run.started < run.target; i++) {
        slots[i].run = &run;
        start_one(&slots[i]);
    }
    event_base_dispatch(base);
    double dt = now_mono() - t0;
    printf("  %-22s %9.0f /s   (%ld in %.2f s, %ld errors)\n", name, dt > 0 ? run.done / dt : 0.0, run.done,
           dt, run.errors);
    fflush(stdout);
    free(slots);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_store SPEC [--ops N] [--concurrency C] [--keys K] [--threads T]\n");
        return 2;
    }
    const char *spec = argv[1];
    long ops = 100000, keys = 10000;
    int conc = 50, threads = 4;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--ops") == 0)
            ops = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--concurrency") == 0)
            conc = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--keys") == 0)
            keys = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
    }
    if (ops < 1 || conc < 1 || keys < 1 || threads < 1) {
        fprintf(stderr, "bench_store: numbers must be positive\n");
        return 2;
    }
    log_open("moat-bench", "mail", "/dev/stderr");
    struct event_base *base = event_base_new();
    pool_t *pool = pool_new(base, threads);
    buf_t err = BUF_INIT;
    store_t *s = store_open(base, pool, spec, &err);
    if (!s) {
        fprintf(stderr, "bench_store: %s\n", buf_cstr(&err));
        return 1;
    }
    printf("%s: %ld operations per row, %d in flight, %ld keys, %d pool threads\n", spec, ops, conc, keys,
           threads);
    bench(base, s, "set (ttl 1 h)", OP_SET, ops, conc, keys);
    bench(base, s, "get (found)", OP_GET, ops, conc, keys);
    bench(base, s, "incr (ttl 1 h)", OP_INCR, ops, conc, keys);
    bench(base, s, "get+set pairs (grey)", OP_GREY, ops / 2, conc, keys * 10);
    store_close(&s);
    pool_free(&pool);
    event_base_free(base);
    buf_free(&err);
    return 0;
}
