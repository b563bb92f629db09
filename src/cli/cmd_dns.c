/*
 * cmd_dns: `moat dns`, the resolver from the command line.
 *
 *   moat dns [options] TYPE NAME...    resolve each NAME in parallel on one
 *                                      event loop, one line per query
 *   moat dns [options] --stdin         the same for "TYPE NAME..." lines read
 *                                      from standard input (tests drive one
 *                                      long-lived resolver this way)
 *   moat dns --bench [options]         resolver throughput and latency
 *
 * It builds the resolver exactly as the server does (dns_forwarders,
 * dns_timeout, dns_cache_size from main.cf, -c DIR), so what it prints
 * is what a session would see, cache and coalescing included.
 *
 * Owns one event base, one dns_t and the jobs it started.  Must never
 * open a listener, log to the mail log, or leave a query running at exit.
 */
#include "cli/cli.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "dns/dns.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: moat dns [-c DIR] [--forwarders LIST] [--timeout SECONDS] [--cache-size N]\n"
    "                [--no-cache] [--stats] [--repeat N] [--interval SECONDS] TYPE NAME...\n"
    "       moat dns [-c DIR] [...] [--stats] --stdin\n"
    "       moat dns --bench [-c DIR] [--forwarders LIST] [--timeout SECONDS] [--type TYPE]\n"
    "                [--concurrency N] [--count N] (--names FILE | --prefix DOMAIN)\n"
    "  Resolve each NAME (TYPE: A, AAAA, MX, TXT, PTR, NS) with moat's resolver,\n"
    "  all in parallel on one event loop, and print one line per query, in the\n"
    "  order given:\n"
    "    NAME TYPE STATUS ANSWER (Nms|cache)\n"
    "  STATUS is OK, NODATA, NXDOMAIN or TEMPFAIL; ANSWER is the records (OK),\n"
    "  the error (TEMPFAIL) or \"-\"; \"cache\" means moat's cache answered.\n"
    "  -c DIR             read dns_forwarders, dns_timeout and dns_cache_size\n"
    "                     from DIR/main.cf (default: the embedded configuration)\n"
    "  --forwarders LIST  servers to ask: \"127.0.0.1@5353, [::1]:53\" (default:\n"
    "                     dns_forwarders, else /etc/resolv.conf)\n"
    "  --timeout SECONDS  per query, fractions allowed (default: dns_timeout)\n"
    "  --cache-size N     answers moat's cache keeps (default: dns_cache_size)\n"
    "  --no-cache         bypass moat's cache (libunbound's own still answers)\n"
    "  --repeat N         resolve the same names N times in a row (one resolver:\n"
    "                     later rounds show cache hits)\n"
    "  --interval SECONDS pause between rounds\n"
    "  --stdin            read \"TYPE NAME...\" lines from standard input; each\n"
    "                     line's results are printed when all its names are done;\n"
    "                     a line \"stats\" prints the counters\n"
    "  --stats            print the resolver's counters at the end:\n"
    "                     stats: lookups=N cache_hits=N coalesced=N queries=N ...\n"
    "  --bench            measure: each name once with a cold cache (every query\n"
    "                     goes upstream), again from moat's cache, and both once\n"
    "                     more with moat's cache off (libunbound's own cache)\n"
    "  --type TYPE        (bench) the query type, default A\n"
    "  --concurrency N    (bench) lookups kept in flight, default 100\n"
    "  --count N          (bench) names to use, default 10000 (--prefix) or all\n"
    "  --names FILE       (bench) one name per line\n"
    "  --prefix DOMAIN    (bench) names q0.DOMAIN, q1.DOMAIN, ...\n"
    "  Exit status: 0 every query was answered (OK, NODATA or NXDOMAIN); 1 some\n"
    "  query failed temporarily; 2 usage or configuration error.\n";

typedef struct dns_cli_opts {
    const char *dir, *forwarders, *names_file, *prefix, *type;
    double timeout, interval;
    long cache_size, repeat, concurrency, count;
    bool stats, use_stdin, bench, no_cache;
} dns_cli_opts_t;

/* --------------------------------------------------- the resolver */

static dns_t *make_resolver(const dns_cli_opts_t *o, struct event_base *base, bool no_cache,
                            unsigned *timeout_ms, buf_t *fwd_out)
{
    buf_t err = BUF_INIT, warn = BUF_INIT, fwd = BUF_INIT;
    config_t *cfg = config_load(o->dir, &err, &warn);
    if (warn.len)
        fputs(buf_cstr(&warn), stderr);
    dns_t *d = NULL;
    if (!cfg) {
        fputs(err.len ? buf_cstr(&err) : "moat: dns: the configuration did not load\n", stderr);
        goto out;
    }
    const params_t *p = config_main(cfg);
    if (o->forwarders) {
        buf_puts(&fwd, o->forwarders);
    } else {
        const char *const *items;
        size_t n = param_list(p, PARAM_dns_forwarders, &items);
        for (size_t i = 0; i < n; i++)
            buf_printf(&fwd, "%s%s", i ? " " : "", items[i]);
    }
    dns_opts_t dopts = {
        .forwarders = buf_cstr(&fwd),
        .timeout_ms = o->timeout > 0 ? (unsigned)(o->timeout * 1000.0 + 0.5)
                                     : (unsigned)param_int(p, PARAM_dns_timeout) * 1000u,
        .cache_max = o->cache_size > 0 ? (size_t)o->cache_size : (size_t)param_int(p, PARAM_dns_cache_size),
        .no_cache = no_cache,
    };
    if (dopts.timeout_ms == 0)
        dopts.timeout_ms = 1;
    *timeout_ms = dopts.timeout_ms;
    d = dns_new(base, &dopts, &err);
    if (!d)
        fprintf(stderr, "moat: dns: %s\n", buf_cstr(&err));
    if (fwd_out)
        buf_puts(fwd_out, fwd.len ? buf_cstr(&fwd) : "/etc/resolv.conf");
out:
    config_free(&cfg);
    buf_free(&err);
    buf_free(&warn);
    buf_free(&fwd);
    return d;
}

static void print_stats(dns_t *d)
{
    dns_stats_t s;
    dns_get_stats(d, &s);
    printf("stats: lookups=%llu cache_hits=%llu coalesced=%llu queries=%llu timeouts=%llu "
           "tempfails=%llu in_flight=%zu cached=%zu\n",
           (unsigned long long)s.lookups, (unsigned long long)s.cache_hits,
           (unsigned long long)s.coalesced, (unsigned long long)s.queries,
           (unsigned long long)s.timeouts, (unsigned long long)s.tempfails, s.in_flight, s.cached);
    fflush(stdout);
}

/* ------------------------------------------------- batches of queries */

typedef struct run run_t;
typedef struct batch batch_t;

typedef struct job {
    batch_t *b;
    dns_type_t type;
    const char *name;
    dns_query_t *q;
    dns_answer_t *a;
    bool cached;
    double t0, t1;
} job_t;

/* One command line's names, or one line of standard input. */
struct batch {
    run_t *run;
    batch_t *prev, *next;
    char *line;            /* owns the words of a --stdin line */
    job_t *jobs;
    size_t n, pending;
    bool starting;
};

struct run {
    struct event_base *base;
    dns_t *d;
    batch_t *live;
    int status;
    /* the command-line names */
    dns_type_t type;
    char **names;
    size_t nnames;
    long round, repeat;
    double interval;
    struct event *next_round;
    bool stats;
    /* --stdin */
    struct event *in_ev;
    buf_t in;
    bool eof;
    bool finished;         /* set before the loop may even have started */
};

static void run_maybe_done(run_t *r);

static void batch_free(batch_t *b)
{
    run_t *r = b->run;
    if (b->prev)
        b->prev->next = b->next;
    else
        r->live = b->next;
    if (b->next)
        b->next->prev = b->prev;
    for (size_t i = 0; i < b->n; i++) {
        dns_cancel(b->jobs[i].q);
        dns_answer_unref(&b->jobs[i].a);
    }
    free(b->jobs);
    free(b->line);
    free(b);
}

/* The name as one word.  Names come in presentation form (the resolver
 * writes odd octets as \DDD already); an impossible name is echoed as
 * given, so octets that would split or garble the line become \DDD. */
static void put_name(buf_t *out, const char *name)
{
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p <= ' ' || *p >= 0x7f)
            buf_printf(out, "\\%03u", *p);
        else
            buf_putc(out, (char)*p);
    }
}

static void batch_print(batch_t *b)
{
    buf_t line = BUF_INIT;
    for (size_t i = 0; i < b->n; i++) {
        job_t *j = &b->jobs[i];
        const dns_answer_t *a = j->a;
        buf_reset(&line);
        put_name(&line, a->name);
        buf_printf(&line, " %s %s ", dns_type_name(j->type), dns_status_name(a->status));
        if (a->status == DNS_OK)
            dns_answer_format(a, &line);
        else if (a->status == DNS_TEMPFAIL)
            buf_puts(&line, a->error);
        else
            buf_puts(&line, "-");
        if (j->cached)
            buf_puts(&line, " (cache)");
        else
            buf_printf(&line, " (%.0fms)", (j->t1 - j->t0) * 1000.0);
        puts(buf_cstr(&line));
        if (a->status == DNS_TEMPFAIL)
            b->run->status = 1;
    }
    fflush(stdout);
    buf_free(&line);
}

static void batch_done(batch_t *b)
{
    run_t *r = b->run;
    batch_print(b);
    batch_free(b);
    run_maybe_done(r);
}

static void job_cb(dns_answer_t *a, bool from_cache, void *arg)
{
    job_t *j = arg;
    batch_t *b = j->b;
    j->q = NULL;
    j->a = dns_answer_ref(a);
    j->cached = from_cache;
    j->t1 = now_mono();
    b->pending--;
    if (!b->starting && b->pending == 0)
        batch_done(b);
}

/* Start a batch over names (borrowed; line, if any, is taken). */
static void batch_start(run_t *r, dns_type_t type, char **names, size_t n, char *line)
{
    batch_t *b = xcalloc(1, sizeof *b);
    b->run = r;
    b->line = line;
    b->n = b->pending = n;
    b->jobs = xcalloc(n ? n : 1, sizeof *b->jobs);
    b->next = r->live;
    if (r->live)
        r->live->prev = b;
    r->live = b;
    b->starting = true;
    for (size_t i = 0; i < n; i++) {
        job_t *j = &b->jobs[i];
        j->b = b;
        j->type = type;
        j->name = names[i];
        j->t0 = now_mono();
        j->q = dns_lookup(r->d, type, names[i], job_cb, j);
    }
    b->starting = false;
    if (b->pending == 0)
        batch_done(b);
}

static void next_round(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_t *r = arg;
    r->round++;
    batch_start(r, r->type, r->names, r->nnames, NULL);
}

static void run_maybe_done(run_t *r)
{
    if (r->live)
        return;
    if (r->names) {
        if (r->round + 1 < r->repeat) {
            /* From the loop, not from here: a round answered wholly from
             * the cache would otherwise recurse once per round. */
            double iv = r->interval > 0 ? r->interval : 0;
            struct timeval tv = {(time_t)iv, (suseconds_t)((iv - (double)(time_t)iv) * 1e6)};
            evtimer_add(r->next_round, &tv);
            return;
        }
    } else if (!r->eof) {
        return;
    }
    if (r->stats)
        print_stats(r->d);
    /* libunbound may still hold queries whose waiters timed out: stop
     * now rather than wait for them. */
    r->finished = true;
    event_base_loopbreak(r->base);
}

/* ------------------------------------------------------------- --stdin */

static void stdin_line(run_t *r, char *line)
{
    char *w[256], *save = NULL;
    size_t n = 0;
    for (char *tok = strtok_r(line, " \t\r", &save); tok && n < ARRAY_LEN(w);
         tok = strtok_r(NULL, " \t\r", &save))
        w[n++] = tok;
    if (n == 0 || w[0][0] == '#') {
        free(line);
        return;
    }
    if (n == 1 && strcmp(w[0], "stats") == 0) {
        print_stats(r->d);
        free(line);
        return;
    }
    int t = dns_type_parse(w[0]);
    if (t < 0 || n < 2) {
        printf("error: want \"TYPE NAME...\" or \"stats\"\n");
        fflush(stdout);
        r->status = r->status ? r->status : 1;
        free(line);
        return;
    }
    batch_start(r, (dns_type_t)t, w + 1, n - 1, line);
}

static void stdin_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    run_t *r = arg;
    char chunk[4096];
    ssize_t got = read(fd, chunk, sizeof chunk);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (got > 0)
        buf_append(&r->in, chunk, (size_t)got);
    for (;;) {
        const char *s = buf_cstr(&r->in);
        const char *nl = memchr(s, '\n', r->in.len);
        if (!nl && got > 0)
            break;
        size_t len = nl ? (size_t)(nl - s) : r->in.len;
        if (!nl && len == 0)
            break;
        char *line = xstrndup(s, len);
        buf_consume(&r->in, nl ? len + 1 : len);
        stdin_line(r, line);
    }
    if (got <= 0) {
        r->eof = true;
        event_del(r->in_ev);
        run_maybe_done(r);
    }
}

/* ----------------------------------------------------------- --bench */

typedef struct bench bench_t;
typedef struct bslot {
    bench_t *b;
    size_t i;
    double t0;
} bslot_t;

struct bench {
    struct event_base *base;
    dns_t *d;
    dns_type_t type;
    char **names;
    size_t count, conc, started, done, outstanding;
    size_t ok, neg, tempfail, cached;
    bslot_t *slots;
    double *lat;
    bool in_pump, waiting;
};

static void bench_pump(bench_t *b);

static void bench_cb(dns_answer_t *a, bool from_cache, void *arg)
{
    bslot_t *s = arg;
    bench_t *b = s->b;
    b->lat[s->i] = now_mono() - s->t0;
    if (a->status == DNS_OK)
        b->ok++;
    else if (a->status == DNS_TEMPFAIL)
        b->tempfail++;
    else
        b->neg++;
    if (from_cache)
        b->cached++;
    b->outstanding--;
    b->done++;
    bench_pump(b);
}

static void bench_pump(bench_t *b)
{
    /* Cache hits complete inside dns_lookup: the loop below, not
     * recursion, starts the next one. */
    if (b->in_pump)
        return;
    b->in_pump = true;
    while (b->started < b->count && b->outstanding < b->conc) {
        bslot_t *s = &b->slots[b->started];
        s->b = b;
        s->i = b->started;
        b->started++;
        b->outstanding++;
        s->t0 = now_mono();
        (void)dns_lookup(b->d, b->type, b->names[s->i], bench_cb, s);
    }
    b->in_pump = false;
    if (b->done == b->count && b->waiting)
        event_base_loopbreak(b->base);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

static void bench_phase(bench_t *b, const char *label)
{
    b->started = b->done = b->outstanding = 0;
    b->ok = b->neg = b->tempfail = b->cached = 0;
    double t0 = now_mono();
    bench_pump(b);
    if (b->done < b->count) {
        b->waiting = true;
        event_base_dispatch(b->base);
        b->waiting = false;
    }
    double el = now_mono() - t0;
    qsort(b->lat, b->count, sizeof *b->lat, cmp_double);
    /* the smallest latency at least 99% of the lookups did not exceed */
    size_t i99 = (b->count * 99 + 99) / 100;
    double p50 = b->lat[(b->count - 1) / 2] * 1000.0, p99 = b->lat[i99 ? i99 - 1 : 0] * 1000.0;
    printf("  %-30s %12.0f %10.3f %10.3f %8zu %8zu %8zu %8zu\n", label,
           el > 0 ? (double)b->count / el : 0.0, p50, p99, b->ok, b->neg, b->tempfail, b->cached);
    fflush(stdout);
}

/* The names in path ("-": standard input), one per line; NULL (with a
 * message) when it cannot be read or holds none. */
static char **read_names(const char *path, size_t *n)
{
    *n = 0;
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "moat: dns: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char **v = NULL;
    size_t cap = 0;
    char line[1024];
    while (fgets(line, sizeof line, fp)) {
        char *s = str_trim(line);
        if (!*s || *s == '#')
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 256;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[(*n)++] = xstrdup(s);
    }
    if (fp != stdin)
        fclose(fp);
    if (*n == 0)
        fprintf(stderr, "moat: dns: no names in %s\n", path);
    return v;
}

static int run_bench(const dns_cli_opts_t *o)
{
    int t = dns_type_parse(o->type ? o->type : "A");
    if (t < 0) {
        fprintf(stderr, "moat: dns: unknown type \"%s\"\n", o->type);
        return 2;
    }
    if (!!o->names_file == !!o->prefix) {
        fputs("moat: dns: --bench needs --names FILE or --prefix DOMAIN\n", stderr);
        return 2;
    }
    size_t nnames = 0;
    char **names = NULL;
    if (o->names_file) {
        names = read_names(o->names_file, &nnames);
        if (!names)
            return 2;
        if (o->count > 0 && (size_t)o->count < nnames)
            nnames = (size_t)o->count;
    } else {
        nnames = o->count > 0 ? (size_t)o->count : 10000;
        names = xcalloc(nnames, sizeof *names);
        for (size_t i = 0; i < nnames; i++) {
            buf_t b = BUF_INIT;
            buf_printf(&b, "q%zu.%s", i, o->prefix);
            names[i] = buf_steal(&b);
        }
    }

    int rc = 0;
    struct event_base *base = event_base_new();
    bench_t b = {.base = base, .type = (dns_type_t)t, .names = names, .count = nnames,
                 .conc = o->concurrency > 0 ? (size_t)o->concurrency : 100};
    b.slots = xcalloc(nnames, sizeof *b.slots);
    b.lat = xcalloc(nnames, sizeof *b.lat);
    unsigned tmo = 0;
    buf_t fwd = BUF_INIT;
    b.d = make_resolver(o, base, false, &tmo, &fwd);
    if (!b.d) {
        rc = 2;
        goto out;
    }
    printf("moat dns --bench: %zu names (%s%s), type %s, concurrency %zu, timeout %g s, forwarders %s\n",
           nnames, names[0], nnames > 1 ? ", ..." : "", dns_type_name(b.type), b.conc, tmo / 1000.0,
           buf_cstr(&fwd));
    printf("  %-30s %12s %10s %10s %8s %8s %8s %8s\n", "", "queries/s", "p50 ms", "p99 ms", "ok",
           "neg", "tempfail", "cached");
    bench_phase(&b, "cold cache (upstream)");
    bench_phase(&b, "moat cache (warm)");
    dns_unref(&b.d);

    /* The same, with moat's cache off: a second cold run fills
     * libunbound's cache, the next one is answered from it. */
    b.d = make_resolver(o, base, true, &tmo, NULL);
    if (!b.d) {
        rc = 2;
        goto out;
    }
    bench_phase(&b, "cold, moat cache off");
    bench_phase(&b, "libunbound cache only");
    dns_unref(&b.d);
out:
    buf_free(&fwd);
    event_base_free(base);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    free(b.slots);
    free(b.lat);
    return rc;
}

/* ------------------------------------------------------------ command */

static int usage_error(const char *msg)
{
    if (msg)
        fprintf(stderr, "moat: dns: %s\n", msg);
    fputs(usage_text, stderr);
    return 2;
}

static bool parse_long(const char *s, long min, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min)
        return false;
    *out = v;
    return true;
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 86400)
        return false;
    *out = v;
    return true;
}

int cmd_dns(int argc, char **argv)
{
    enum { O_FWD = 256, O_TIMEOUT, O_CACHE, O_NOCACHE, O_STATS, O_REPEAT, O_INTERVAL, O_STDIN,
           O_BENCH, O_TYPE, O_CONC, O_COUNT, O_NAMES, O_PREFIX };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"forwarders", required_argument, NULL, O_FWD},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"cache-size", required_argument, NULL, O_CACHE},
        {"no-cache", no_argument, NULL, O_NOCACHE},
        {"stats", no_argument, NULL, O_STATS},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"stdin", no_argument, NULL, O_STDIN},
        {"bench", no_argument, NULL, O_BENCH},
        {"type", required_argument, NULL, O_TYPE},
        {"concurrency", required_argument, NULL, O_CONC},
        {"count", required_argument, NULL, O_COUNT},
        {"names", required_argument, NULL, O_NAMES},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    dns_cli_opts_t o = {.repeat = 1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o.dir = optarg; break;
        case O_FWD: o.forwarders = optarg; break;
        case O_TIMEOUT:
            if (!parse_seconds(optarg, &o.timeout) || o.timeout <= 0)
                return usage_error("--timeout wants a positive number of seconds");
            break;
        case O_CACHE:
            if (!parse_long(optarg, 1, &o.cache_size))
                return usage_error("--cache-size wants a positive number");
            break;
        case O_NOCACHE: o.no_cache = true; break;
        case O_STATS: o.stats = true; break;
        case O_REPEAT:
            if (!parse_long(optarg, 1, &o.repeat))
                return usage_error("--repeat wants a positive number");
            break;
        case O_INTERVAL:
            if (!parse_seconds(optarg, &o.interval))
                return usage_error("--interval wants a number of seconds");
            break;
        case O_STDIN: o.use_stdin = true; break;
        case O_BENCH: o.bench = true; break;
        case O_TYPE: o.type = optarg; break;
        case O_CONC:
            if (!parse_long(optarg, 1, &o.concurrency))
                return usage_error("--concurrency wants a positive number");
            break;
        case O_COUNT:
            if (!parse_long(optarg, 1, &o.count))
                return usage_error("--count wants a positive number");
            break;
        case O_NAMES: o.names_file = optarg; break;
        case O_PREFIX: o.prefix = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_error(NULL);
        }
    }
    /* A query over TCP to a forwarder that went away must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    if (o.bench) {
        if (optind < argc)
            return usage_error("--bench takes no names on the command line");
        return run_bench(&o);
    }

    run_t r = {.repeat = o.repeat, .interval = o.interval, .stats = o.stats};
    if (o.use_stdin) {
        if (optind < argc)
            return usage_error("--stdin takes no names on the command line");
    } else {
        if (argc - optind < 2)
            return usage_error("want TYPE NAME...");
        int t = dns_type_parse(argv[optind]);
        if (t < 0) {
            fprintf(stderr, "moat: dns: unknown type \"%s\" (A, AAAA, MX, TXT, PTR, NS)\n", argv[optind]);
            return 2;
        }
        r.type = (dns_type_t)t;
        r.names = argv + optind + 1;
        r.nnames = (size_t)(argc - optind - 1);
    }

    r.base = event_base_new();
    unsigned tmo;
    r.d = make_resolver(&o, r.base, o.no_cache, &tmo, NULL);
    if (!r.d) {
        event_base_free(r.base);
        return 2;
    }
    r.next_round = evtimer_new(r.base, next_round, &r);
    if (o.use_stdin) {
        r.in_ev = event_new(r.base, STDIN_FILENO, EV_READ | EV_PERSIST, stdin_readable, &r);
        if (event_add(r.in_ev, NULL) != 0) {
            /* A regular file (epoll refuses those): it never blocks, so
             * read it all now; the loop then runs the queries. */
            while (!r.eof)
                stdin_readable(STDIN_FILENO, EV_READ, &r);
        }
    } else {
        batch_start(&r, r.type, r.names, r.nnames, NULL);
    }
    /* Until run_maybe_done says so: rounds and lines may still come
     * while nothing is in flight. */
    while (!r.finished && event_base_loop(r.base, EVLOOP_ONCE) == 0)
        ;

    while (r.live)
        batch_free(r.live);
    if (r.in_ev)
        event_free(r.in_ev);
    event_free(r.next_round);
    buf_free(&r.in);
    dns_unref(&r.d);
    event_base_free(r.base);
    return r.status;
}
