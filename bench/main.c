/*
 * moat-bench main: command line, the loopback-only rule, resource limits,
 * and the exit status.
 *
 * Owns the option values (static storage for the program's life).  Must
 * never let a run start towards, or from, an address outside 127.0.0.0/8
 * or ::1: this program opens thousands of connections as fast as it can,
 * and that is only acceptable on the loopback interface.
 *
 * Exit status: 0 every session did what it was meant to and no reply was
 * unexpected, 1 the run completed with failures or unexpected replies (see the report), 2 usage or setup error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"

double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fputs(
        "usage: moat-bench send|reject|idle|handshake [options]\n"
        "\n"
        "  send     --count sessions, --concurrency at a time; each: greeting, EHLO,\n"
        "           MAIL FROM, RCPT TO (one or more), DATA, a --size byte message, '.',\n"
        "           QUIT.  Reports accepted messages/s and latency percentiles.\n"
        "  reject   the same, but the RCPT is expected to be refused (5xx); then RSET,\n"
        "           QUIT.  Reports rejected transactions/s.\n"
        "  idle     open --count connections (--concurrency handshakes at a time), read\n"
        "           the greeting, EHLO, hold them all --hold seconds, then QUIT all.\n"
        "           Prints how many are open when the hold begins and ends.\n"
        "  handshake  --count sessions: connect, the TLS handshake (after greeting,\n"
        "           EHLO and STARTTLS with --starttls; first thing with --tls), QUIT.\n"
        "           Reports TLS handshakes/s and their latency; needs --starttls or --tls.\n"
        "\n"
        "Only numeric loopback addresses (127.0.0.0/8, ::1) are accepted.\n"
        "\n"
        "  -H, --host ADDR         server address [127.0.0.1]\n"
        "  -p, --port N            server port [25]\n"
        "  -b, --bind ADDR         source address, any 127.x.y.z (or ::1) [unbound]\n"
        "      --bind-range A/LEN  spread sessions over the IPv4 block A/LEN inside\n"
        "                          127.0.0.0/8 (LEN 8..32): each session binds the next\n"
        "                          address, starting at A and wrapping at the block's end\n"
        "                          (e.g. 127.1.0.0/16: a new client for each of 65,536\n"
        "                          sessions); not with --bind\n"
        "  -n, --count N           sessions or connections [send/reject 1000, idle 100]\n"
        "  -c, --concurrency C     sessions in flight [send/reject 10, idle 100]\n"
        "  -s, --size BYTES        message size, headers included; suffix k or m = x1024\n"
        "                          [5k]\n"
        "  -f, --from ADDR         envelope sender, may be empty [bench@client.example.test]\n"
        "  -r, --rcpt ADDR         recipient; repeat for several\n"
        "                          [send: bench@example.test, reject: bench@relay.invalid]\n"
        "  -R, --rcpts K           RCPT commands per transaction, cycling through the\n"
        "                          --rcpt list [one per --rcpt]\n"
        "  -e, --helo NAME         EHLO name [moat-bench.example.test]\n"
        "  -P, --pipelining        send command groups when the server offers PIPELINING\n"
        "      --starttls          EHLO, STARTTLS, the handshake, EHLO again, then the\n"
        "                          session as usual (the certificate is not checked)\n"
        "      --tls               implicit TLS (smtps): the handshake right after connect\n"
        "      --resume            offer each concurrency slot's previous TLS session\n"
        "                          (the first --concurrency handshakes are full ones)\n"
        "  -t, --timeout SECS      longest wait for any one reply [30]\n"
        "  -T, --max-seconds SECS  hard limit on the whole run [60]\n"
        "      --hold SECS         idle: how long to hold the connections [10]\n"
        "      --kv                also print one machine-readable RESULT line\n"
        "  -q, --quiet             no human report (the RESULT line still prints)\n"
        "  -h, --help              this text\n"
        "\n"
        "Exit status: 0 all sessions as intended, 1 completed with failures or\n"
        "unexpected replies, 2 usage or setup error.\n",
        f);
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("moat-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see --help)\n", stderr);
    exit(2);
}

static unsigned long parse_ulong(const char *s, unsigned long min, unsigned long max,
                                 const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max)
        die_usage("bad %s: %s", what, s);
    return v;
}

static double parse_secs(const char *s, double min, double max, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
        die_usage("bad %s: %s", what, s);
    return v;
}

static size_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    unsigned long mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024 * 1024, end++;
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > BENCH_MAX_SIZE / mul)
        die_usage("bad --size %s", s);
    return (size_t)(v * mul);
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return false;
}

/* Numeric addresses only: a name would need DNS, and DNS could say anything. */
static void parse_addr(const char *text, unsigned port, struct sockaddr_storage *ss,
                       socklen_t *len, const char *what)
{
    char buf[64];
    size_t n = strlen(text);
    if (n >= sizeof(buf))
        die_usage("bad %s address", what);
    if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
        memcpy(buf, text + 1, n - 2);
        buf[n - 2] = '\0';
    } else {
        memcpy(buf, text, n + 1);
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((unsigned short)port);
        *len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((unsigned short)port);
        *len = sizeof(*a6);
    } else {
        die_usage("%s is not a numeric IPv4 or IPv6 address", text);
    }
    if (!is_loopback(ss))
        die_usage("%s is not a loopback address; moat-bench only uses 127.0.0.0/8 and ::1",
                  text);
}

static void addr_text(const struct sockaddr_storage *ss, bool with_port, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        if (with_port)
            snprintf(out, cap, "[%s]:%u", host, port);
        else
            snprintf(out, cap, "%s", host);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        if (with_port)
            snprintf(out, cap, "%s:%u", host, port);
        else
            snprintf(out, cap, "%s", host);
    }
}

/* --bind-range A.B.C.D/LEN: a block of 127.0.0.0/8, IPv4 only (the
 * IPv6 loopback is one address). */
static void parse_range(const char *text, struct bench_opts *o)
{
    char buf[32];
    const char *slash = strchr(text, '/');
    size_t n = slash != NULL ? (size_t)(slash - text) : 0;
    if (slash == NULL || n == 0 || n >= sizeof(buf))
        die_usage("bad --bind-range %s: want A.B.C.D/LEN", text);
    memcpy(buf, text, n);
    buf[n] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1)
        die_usage("bad --bind-range %s: want A.B.C.D/LEN", text);
    unsigned long len = parse_ulong(slash + 1, 8, 32, "--bind-range prefix length (8..32)");
    unsigned long addr = ntohl(a.s_addr);
    if ((addr >> 24) != 127)
        die_usage("--bind-range %s is not inside 127.0.0.0/8; moat-bench only uses loopback "
                  "addresses", text);
    o->range_size = 1UL << (32 - len);
    o->range_base = addr & ~(o->range_size - 1) & 0xffffffffUL;
    o->range_next = addr - o->range_base;
    o->have_range = true;
    /* The report names the block and where the run started in it. */
    snprintf(o->src_text, sizeof(o->src_text), "%s/%lu", buf, len);
}

/* Addresses and names go into command lines: no controls, spaces or brackets. */
static const char *check_word(const char *s, bool may_be_empty, const char *what)
{
    size_t n = strlen(s);
    if ((n == 0 && !may_be_empty) || n > 256)
        die_usage("bad %s: %s", what, s);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '<' || ch == '>')
            die_usage("bad %s: %s", what, s);
    }
    return s;
}

/* Enough descriptors for every connection at once, or a clear refusal. */
static void raise_nofile(unsigned long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = need;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
            want = rl.rlim_max;
        rl.rlim_cur = want;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
            fprintf(stderr,
                    "moat-bench: needs %lu file descriptors, the limit is %lu: raise ulimit -n\n",
                    need, (unsigned long)rl.rlim_cur);
            exit(2);
        }
    }
}

enum { OPT_HOLD = 256, OPT_KV, OPT_BIND_RANGE, OPT_STARTTLS, OPT_TLS, OPT_RESUME };

int main(int argc, char **argv)
{
    static struct bench_opts o;
    static struct bench_stats st;
    const char *host = "127.0.0.1", *bind_addr = NULL, *bind_range = NULL;
    unsigned port = 25;
    bool count_set = false, conc_set = false;
    unsigned long nrcpt_want = 0;
    const char *rcpt_given[BENCH_MAX_RCPT];
    size_t nrcpt_given = 0;

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "send") == 0)
        o.mode = MODE_SEND;
    else if (strcmp(argv[1], "reject") == 0)
        o.mode = MODE_REJECT;
    else if (strcmp(argv[1], "idle") == 0)
        o.mode = MODE_IDLE;
    else if (strcmp(argv[1], "handshake") == 0)
        o.mode = MODE_HANDSHAKE;
    else
        die_usage("unknown mode %s", argv[1]);

    o.count = 1000;
    o.concurrency = 10;
    o.size = 5 * 1024;
    o.from = "bench@client.example.test";
    o.helo = "moat-bench.example.test";
    o.max_seconds = 60;
    o.timeout = 30;
    o.hold = 10;

    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"bind", required_argument, NULL, 'b'},
        {"bind-range", required_argument, NULL, OPT_BIND_RANGE},
        {"count", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"from", required_argument, NULL, 'f'},
        {"rcpt", required_argument, NULL, 'r'},
        {"rcpts", required_argument, NULL, 'R'},
        {"helo", required_argument, NULL, 'e'},
        {"pipelining", no_argument, NULL, 'P'},
        {"starttls", no_argument, NULL, OPT_STARTTLS},
        {"tls", no_argument, NULL, OPT_TLS},
        {"resume", no_argument, NULL, OPT_RESUME},
        {"timeout", required_argument, NULL, 't'},
        {"max-seconds", required_argument, NULL, 'T'},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"kv", no_argument, NULL, OPT_KV},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:b:n:c:s:f:r:R:e:Pt:T:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = (unsigned)parse_ulong(optarg, 1, 65535, "--port");
            break;
        case 'b':
            bind_addr = optarg;
            break;
        case OPT_BIND_RANGE:
            bind_range = optarg;
            break;
        case 'n':
            o.count = parse_ulong(optarg, 1, BENCH_MAX_COUNT, "--count");
            count_set = true;
            break;
        case 'c':
            o.concurrency = (unsigned)parse_ulong(optarg, 1, BENCH_MAX_CONC, "--concurrency");
            conc_set = true;
            break;
        case 's':
            o.size = parse_size(optarg);
            break;
        case 'f':
            o.from = check_word(optarg, true, "--from");
            break;
        case 'r':
            if (nrcpt_given == BENCH_MAX_RCPT)
                die_usage("at most %d --rcpt", BENCH_MAX_RCPT);
            rcpt_given[nrcpt_given++] = check_word(optarg, false, "--rcpt");
            break;
        case 'R':
            nrcpt_want = parse_ulong(optarg, 1, BENCH_MAX_RCPT, "--rcpts (1..100)");
            break;
        case 'e':
            o.helo = check_word(optarg, false, "--helo");
            break;
        case 'P':
            o.pipelining = true;
            break;
        case 't':
            o.timeout = parse_secs(optarg, 0.1, 3600, "--timeout");
            break;
        case 'T':
            o.max_seconds = parse_secs(optarg, 0.1, 3600, "--max-seconds");
            break;
        case OPT_HOLD:
            o.hold = parse_secs(optarg, 0, 3600, "--hold");
            break;
        case OPT_KV:
            o.kv = true;
            break;
        case OPT_STARTTLS:
        case OPT_TLS:
            if (o.tls != TLS_OFF)
                die_usage("--starttls and --tls exclude each other");
            o.tls = ch == OPT_STARTTLS ? TLS_STARTTLS : TLS_IMPLICIT;
            break;
        case OPT_RESUME:
            o.resume = true;
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc)
        die_usage("unexpected argument %s", argv[optind]);
    if (o.mode == MODE_HANDSHAKE && o.tls == TLS_OFF)
        die_usage("handshake needs --starttls or --tls");
    if (o.resume && o.tls == TLS_OFF)
        die_usage("--resume needs --starttls or --tls");
    if (o.resume && o.mode == MODE_IDLE)
        die_usage("--resume does not go with idle (its connections outlive their slots)");
    if (o.mode == MODE_IDLE) {
        if (!count_set)
            o.count = 100;
        if (!conc_set)
            o.concurrency = 100;
    }

    parse_addr(host, port, &o.dst, &o.dstlen, "--host");
    addr_text(&o.dst, true, o.dst_text, sizeof(o.dst_text));
    if (bind_addr != NULL) {
        parse_addr(bind_addr, 0, &o.src, &o.srclen, "--bind");
        if (o.src.ss_family != o.dst.ss_family)
            die_usage("--bind %s is not of the same address family as --host", bind_addr);
        o.have_src = true;
        addr_text(&o.src, false, o.src_text, sizeof(o.src_text));
    }
    if (bind_range != NULL) {
        if (bind_addr != NULL)
            die_usage("--bind and --bind-range exclude each other");
        if (o.dst.ss_family != AF_INET)
            die_usage("--bind-range needs an IPv4 --host");
        parse_range(bind_range, &o);
    }

    if (nrcpt_given == 0)
        rcpt_given[nrcpt_given++] =
            o.mode == MODE_REJECT ? "bench@relay.invalid" : "bench@example.test";
    o.nrcpt = nrcpt_want ? nrcpt_want : nrcpt_given;
    for (size_t i = 0; i < o.nrcpt; i++)
        o.rcpt[i] = rcpt_given[i % nrcpt_given];

    unsigned long need =
        (o.mode == MODE_IDLE ? o.count : (o.concurrency < o.count ? o.concurrency : o.count)) + 32;
    raise_nofile(need);
    /* A server that hangs up mid-write must cost a counted error, not the process. */
    signal(SIGPIPE, SIG_IGN);

    if (bench_run(&o, &st) != 0)
        return 2;
    /* The client shares the machine with the server: show what it cost. */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        st.cpu_seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (!o.quiet)
        report_print(&o, &st);
    if (o.kv)
        report_kv(&o, &st);
    fflush(stdout);

    if (report_errors(&o, &st) > 0)
        return 1;
    if (o.mode == MODE_IDLE)
        return st.open_at_hold == o.count && st.failed == 0 ? 0 : 1;
    return st.failed == 0 && st.ok == o.count ? 0 : 1;
}
