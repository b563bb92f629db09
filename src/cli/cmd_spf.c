/*
 * cmd_spf: `moat spf`, one SPF evaluation (RFC 7208) from the command
 * line, through the evaluator and resolver the server uses (docs/spf.md).
 *
 *   moat spf [-c DIR] --ip IP --sender ADDR --helo NAME [--helo-identity] [--trace]
 *
 * It loads main.cf (dns_forwarders, dns_timeout, dns_cache_size,
 * myhostname), builds the resolver with smtpd_resolver_new on a private
 * event loop, and replays spf_eval() against one memo until it is not
 * pending.  The output is a contract (the RFC 7208 suite runner parses
 * "result:" and "explanation:"):
 *
 *   result: RESULT
 *   domain: DOMAIN
 *   mechanism: TERM            when a term (or "default") decided
 *   explanation: TEXT          fail only
 *   problem: TEXT              temperror and permerror only
 *   trace: LINE                with --trace, one per evaluation step
 *   Received-SPF: VALUE
 *
 * Exit status: 0 for any result, 2 for a usage or configuration error.
 * Owns one event base, resolver and memo for the command.  Never opens a
 * listener, never writes the mail log, never leaves a query running at
 * exit (the memo and resolver are freed first).
 */
#include "cli/cli.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "dns/dns.h"
#include "policy/spf.h"
#include "smtp/smtpd.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: moat spf [-c DIR] --ip IP --sender ADDR --helo NAME [--helo-identity] [--trace]\n"
    "  Evaluate SPF (RFC 7208) for a client address, MAIL FROM address and\n"
    "  HELO name with moat's evaluator and resolver, and print:\n"
    "    result: none|neutral|pass|fail|softfail|temperror|permerror\n"
    "    domain: the domain checked\n"
    "    mechanism: the term that decided (\"default\" when none matched)\n"
    "    explanation: the domain's explanation (fail only)\n"
    "    problem: what went wrong (temperror and permerror only)\n"
    "    trace: ... (with --trace: every step and DNS answer)\n"
    "    Received-SPF: the header field moat would add\n"
    "  -c DIR           read DIR/main.cf: dns_forwarders, dns_timeout,\n"
    "                   dns_cache_size, myhostname (default: the embedded\n"
    "                   configuration)\n"
    "  --ip IP          the client address (IPv4 or IPv6)\n"
    "  --sender ADDR    the MAIL FROM address; \"\" or \"<>\": the null sender,\n"
    "                   which checks the HELO identity (postmaster@HELO)\n"
    "  --helo NAME      the HELO/EHLO name\n"
    "  --helo-identity  check the HELO identity even with a sender\n"
    "  --trace          print the evaluation steps\n"
    "  --bench N        evaluate N times (after one warm-up), each with a fresh\n"
    "                   session memo, so the answers come from the resolver's\n"
    "                   cache, and print evaluations/s and latency percentiles\n"
    "  --concurrency C  (bench) evaluations in flight, default 1\n"
    "  Exit status: 0 for any result; 2 usage or configuration error.\n";

static int usage_error(const char *msg)
{
    if (msg)
        fprintf(stderr, "moat spf: %s\n", msg);
    fputs(usage_text, stderr);
    return 2;
}

static void woke(void *arg)
{
    *(bool *)arg = true;
}

/* "<a@b>" -> "a@b"; "<>" -> "". */
static char *bare_address(const char *s)
{
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '<' && s[n - 1] == '>')
        return xstrndup(s + 1, n - 2);
    return xstrdup(s);
}

/* ---------------------------------------------------------- --bench */

typedef struct bench bench_t;

typedef struct slot {
    bench_t *b;
    dns_memo_t *memo;
    long long t0;
    spf_answer_t a;
} slot_t;

struct bench {
    dns_t *dns;
    const spf_request_t *req;
    size_t n, started, done;
    long long *lat;              /* microseconds, one per evaluation */
    size_t results[SPF_PERMERROR + 1];
};

static void slot_run(slot_t *s);

static void slot_wake(void *arg)
{
    slot_run(arg);
}

/* Evaluate until a result, then start the next evaluation (a fresh
 * memo: the answers come from the resolver's cache, as in a new
 * session), until the count is reached. */
static void slot_run(slot_t *s)
{
    bench_t *b = s->b;
    for (;;) {
        spf_answer_reset(&s->a);
        spf_result_t r = spf_eval(s->memo, b->req, false, &s->a);
        if (r == SPF_PENDING)
            return;   /* slot_wake runs us again */
        b->lat[b->done++] = now_usec() - s->t0;
        b->results[r]++;
        dns_memo_free(&s->memo);
        if (b->started >= b->n)
            return;
        b->started++;
        s->memo = dns_memo_new(b->dns, slot_wake, s);
        s->t0 = now_usec();
    }
}

static int cmp_ll(const void *x, const void *y)
{
    long long a = *(const long long *)x, b = *(const long long *)y;
    return a < b ? -1 : a > b;
}

static int run_bench(struct event_base *base, dns_t *dns, const spf_request_t *req, size_t n, size_t conc)
{
    bench_t b = {.dns = dns, .req = req, .n = n};
    b.lat = xcalloc(n ? n : 1, sizeof *b.lat);
    if (conc > n)
        conc = n;
    slot_t *slots = xcalloc(conc ? conc : 1, sizeof *slots);
    long long t0 = now_usec();
    for (size_t i = 0; i < conc; i++) {
        slots[i].b = &b;
        spf_answer_init(&slots[i].a);
        slots[i].memo = dns_memo_new(dns, slot_wake, &slots[i]);
        slots[i].t0 = now_usec();
        b.started++;
    }
    for (size_t i = 0; i < conc; i++)
        slot_run(&slots[i]);
    while (b.done < n)
        if (event_base_loop(base, EVLOOP_ONCE) != 0)
            break;
    double secs = (double)(now_usec() - t0) / 1e6;
    for (size_t i = 0; i < conc; i++) {
        dns_memo_free(&slots[i].memo);
        spf_answer_free(&slots[i].a);
    }
    qsort(b.lat, b.done, sizeof *b.lat, cmp_ll);
#define PCT(q) (b.done ? (double)b.lat[(size_t)((double)(b.done - 1) * (q))] / 1000.0 : 0.0)
    printf("spf bench: %zu evaluations, concurrency %zu: %.0f/s  p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", b.done,
           conc, secs > 0 ? (double)b.done / secs : 0.0, PCT(0.50), PCT(0.99), PCT(1.0));
#undef PCT
    printf("spf bench: results:");
    for (int r = SPF_NONE; r <= SPF_PERMERROR; r++)
        if (b.results[r])
            printf(" %s=%zu", spf_result_name((spf_result_t)r), b.results[r]);
    printf("\n");
    free(slots);
    free(b.lat);
    return b.done == n ? 0 : 2;
}

static void print_field(const char *name, const char *value)
{
    /* One line per field whatever the value holds. */
    printf("%s: ", name);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
    putchar('\n');
}

int cmd_spf(int argc, char **argv)
{
    enum { O_IP = 256, O_SENDER, O_HELO, O_HELO_ID, O_TRACE, O_DEFAULT_EXP, O_BENCH, O_CONC };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"ip", required_argument, NULL, O_IP},
        {"sender", required_argument, NULL, O_SENDER},
        {"helo", required_argument, NULL, O_HELO},
        {"helo-identity", no_argument, NULL, O_HELO_ID},
        {"trace", no_argument, NULL, O_TRACE},
        /* Not in the usage text: for the RFC 7208 test suite, whose
         * expected default explanation is the string "DEFAULT". */
        {"default-explanation", required_argument, NULL, O_DEFAULT_EXP},
        {"bench", required_argument, NULL, O_BENCH},
        {"concurrency", required_argument, NULL, O_CONC},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *ip = NULL, *sender = "", *helo = "", *default_exp = NULL;
    bool helo_identity = false, trace = false;
    long long bench_n = 0, conc = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': dir = optarg; break;
        case O_IP: ip = optarg; break;
        case O_SENDER: sender = optarg; break;
        case O_HELO: helo = optarg; break;
        case O_HELO_ID: helo_identity = true; break;
        case O_TRACE: trace = true; break;
        case O_DEFAULT_EXP: default_exp = optarg; break;
        case O_BENCH: bench_n = atoll(optarg); break;
        case O_CONC: conc = atoll(optarg); break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_error(NULL);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument");
    if (!ip)
        return usage_error("--ip is required");
    if (bench_n < 0 || bench_n > 10000000 || conc < 1 || conc > 10000)
        return usage_error("--bench wants 0..10000000 and --concurrency 1..10000");
    unsigned char bin[16];
    if (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1)
        return usage_error("--ip wants an IPv4 or IPv6 address");

    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(dir, &err, &warn);
    if (warn.len)
        fputs(buf_cstr(&warn), stderr);
    if (!cfg) {
        fputs(err.len ? buf_cstr(&err) : "moat: spf: the configuration did not load\n", stderr);
        buf_free(&err);
        buf_free(&warn);
        return 2;
    }
    const params_t *p = config_main(cfg);
    /* A query over TCP to a forwarder that went away must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    dns_t *dns = smtpd_resolver_new(p, base, NULL, &err);
    if (!dns) {
        fputs(buf_cstr(&err), stderr);
        buf_free(&err);
        buf_free(&warn);
        event_base_free(base);
        config_free(&cfg);
        return 2;
    }
    bool flag = false;
    dns_memo_t *memo = dns_memo_new(dns, woke, &flag);

    char *from = bare_address(sender);
    char *receiver = xstrdup(param_str(p, PARAM_myhostname));
    spf_request_t req = {
        .ip = ip,
        .sender = from,
        .helo = helo,
        .receiver = receiver,
        .helo_identity = helo_identity,
        .now = (long long)time(NULL),
        .default_explanation = default_exp,
    };
    spf_answer_t a;
    spf_answer_init(&a);
    spf_result_t r;
    int rc = 0;
    while ((r = spf_eval(memo, &req, trace, &a)) == SPF_PENDING) {
        if (dns_memo_outstanding(memo) == 0) {
            /* Pending with nothing running would wait forever: a bug. */
            fputs("moat spf: the evaluation is pending with no lookup running\n", stderr);
            rc = 2;
            break;
        }
        flag = false;
        while (!flag)
            event_base_loop(base, EVLOOP_ONCE);
    }
    if (rc == 0) {
        printf("result: %s\n", spf_result_name(r));
        print_field("domain", a.domain);
        if (a.mechanism[0])
            print_field("mechanism", a.mechanism);
        if (r == SPF_FAIL)
            print_field("explanation", buf_cstr(&a.explanation));
        if ((r == SPF_TEMPERROR || r == SPF_PERMERROR) && a.problem.len)
            print_field("problem", buf_cstr(&a.problem));
        if (trace) {
            const char *s = buf_cstr(&a.trace);
            while (*s) {
                size_t n = strcspn(s, "\n");
                printf("trace: %.*s\n", (int)n, s);
                s += n;
                if (*s)
                    s++;
            }
        }
        buf_t hdr = BUF_INIT;
        spf_received_value(&req, &a, &hdr);
        print_field("Received-SPF", buf_cstr(&hdr));
        buf_free(&hdr);
        if (bench_n > 0)   /* the evaluation above was the warm-up */
            rc = run_bench(base, dns, &req, (size_t)bench_n, (size_t)conc);
        fflush(stdout);
    }
    spf_answer_free(&a);
    free(from);
    free(receiver);
    dns_memo_free(&memo);
    dns_unref(&dns);
    event_base_free(base);
    config_free(&cfg);
    buf_free(&err);
    buf_free(&warn);
    return rc;
}
