/*
 * rcpt: the restriction engine's cost per RCPT.
 *
 * Copies the seed-gateway folder into the scratch directory, compiles its
 * hash: tables with map_build(), writes a main.cf that keeps the seed's
 * restrictions except those that need DNS, the state store or the queue
 * (reject_rbl_client, reject_unknown_*_domain, reject_unverified_sender,
 * check_policy_service are left out; mydestination and relay_domains
 * stay as the seed has them, so reject_unauth_destination asks both),
 * loads it with config_load() and compiles it with policy_new() as
 * `moat serve` does.
 * Then it times policy_eval(PCMD_RCPT) with smtpd_delay_reject = yes, so
 * every RCPT runs the client, helo, sender, relay and recipient classes,
 * over a fixed pseudo-random mix of clients, HELO names, senders and
 * recipients that the seed tables permit, reject and defer.
 *
 * Owns the copied configuration, one config_t and one policy_t.  Must
 * never open a socket or judge a figure.
 */
#include "engine.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "policy/restrict.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The seed's main.cf, less what needs DNS, the state store or the queue
 * (content checks and transport_maps do not take part in RCPT decisions,
 * so they are left out too). */
static const char main_cf[] =
    "# moat-bench-engine: shared/examples/seed-gateway/main.cf without its DNS-,\n"
    "# state- and queue-dependent parts\n"
    "myhostname = mx.example.test\n"
    "mydomain = example.test\n"
    "myorigin = $mydomain\n"
    "mydestination = $myhostname, localhost\n"
    "mynetworks = 127.0.0.1/32\n"
    "relay_domains = example.test, domain.test\n"
    "disable_vrfy_command = yes\n"
    "smtpd_helo_required = yes\n"
    "smtpd_delay_reject = yes\n"
    "smtpd_client_restrictions =\n"
    "    permit_mynetworks,\n"
    "    check_client_access hash:$config_directory/allowed-spammers,\n"
    "    check_client_access cidr:$config_directory/chinese-spammer-networks,\n"
    "    regexp:$config_directory/dsl_stoplist.txt,\n"
    "    check_client_access hash:$config_directory/spammer-networks\n"
    "smtpd_helo_restrictions =\n"
    "    permit_mynetworks,\n"
    "    check_helo_access hash:$config_directory/smtpd_helo_restrictions,\n"
    "    reject_non_fqdn_helo_hostname,\n"
    "    reject_invalid_helo_hostname,\n"
    "    regexp:$config_directory/dsl_stoplist.txt,\n"
    "    check_helo_access hash:$config_directory/spammer-networks,\n"
    "    permit\n"
    "smtpd_sender_restrictions =\n"
    "    permit_mynetworks,\n"
    "    reject_non_fqdn_sender,\n"
    "    check_sender_access hash:$config_directory/null_sender,\n"
    "    check_sender_access hash:$config_directory/access_sender,\n"
    "    check_sender_access pcre:$config_directory/access_sender.pcre,\n"
    "    permit\n"
    "smtpd_recipient_restrictions =\n"
    "    reject_unauth_pipelining,\n"
    "    reject_non_fqdn_recipient,\n"
    "    permit_mynetworks,\n"
    "    permit_sasl_authenticated,\n"
    "    reject_unauth_destination,\n"
    "    check_recipient_access hash:$config_directory/access_recipient,\n"
    "    check_sender_access hash:$config_directory/sender_access,\n"
    "    permit\n";

static const char *const hashed[] = {
    "allowed-spammers", "spammer-networks", "smtpd_helo_restrictions", "null_sender",
    "access_sender",    "access_recipient", "sender_access",
};

/* The mix.  Each list holds entries the seed tables pass and entries
 * they stop, each commented with the rule it meets. */
static const struct {
    const char *addr, *name;
} clients[] = {
    {"127.0.0.1", "localhost"},              /* first: mynetworks, permitted by every class */
    {"127.0.0.30", "unknown"},               /* allowed-spammers: OK */
    {"127.0.9.17", "unknown"},               /* chinese-spammer-networks: REJECT */
    {"127.0.20.5", "dsl-20-5.isp.test"},     /* dsl_stoplist: 553 AUTO_DSL */
    {"127.0.21.9", "host9.dynamic.test"},    /* spammer-networks (parent domain): REJECT */
    {"127.0.2.2", "mail.partner.test"},      /* clean */
    {"127.0.2.3", "unknown"},                /* clean */
    {"127.0.3.4", "mx1.sender.test"},        /* clean */
    {"::1", "unknown"},                      /* clean, IPv6 through the cidr table */
};

static const char *const helos[] = {
    "mail.partner.test",  /* clean */
    "mx1.sender.test",    /* clean */
    "smtp.client.test",   /* clean */
    "[127.0.0.2]",        /* address literal: clean */
    "127.0.0.1",          /* smtpd_helo_restrictions table: REJECT You are not me */
    "mx.example.test",    /* same */
    "localhost",          /* reject_non_fqdn_helo_hostname */
    "ppp-7.isp.test",     /* dsl_stoplist: 553 AUTO_PPP */
};

static const char *const senders[] = {
    "alice@partner.test",        /* clean */
    "carol@mail.sender.test",    /* clean */
    "myfriend@partner.test",     /* sender_access: OK */
    "theboss@corp.test",         /* sender_access (user@): OK */
    "",                          /* null_sender: 550 no third-party DSNs */
    "info@shop.test",            /* access_sender (info@): REJECT */
    "bob@example.test",          /* access_sender (domain): REJECT */
    "list-bounces@lists.test",   /* access_sender.pcre: REJECT */
    "junk@spam.test",            /* sender_access, at the recipient stage: REJECT */
    "offers@deals.marketing.test", /* sender_access (domain): REJECT */
    "nodomain",                  /* reject_non_fqdn_sender */
};

static const char *const rcpts[] = {
    "user@example.test",           /* clean (relay_domains) */
    "sales@example.test",          /* clean (relay_domains) */
    "someone@domain.test",         /* clean (relay_domains) */
    "admin@mx.example.test",       /* clean (mydestination: $myhostname) */
    "postmaster@example.test",     /* access_recipient: REJECT */
    "MAILER-DAEMON@example.test",  /* access_recipient: REJECT */
    "x@elsewhere.test",            /* reject_unauth_destination: 554 Relay access denied */
    "bob@localhost",               /* reject_non_fqdn_recipient */
};

enum { K_TRUSTED, K_PASSED, K_REFUSED };

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in)
        return -1;
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return -1;
    }
    char b[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(b, 1, sizeof b, in)) > 0)
        if (fwrite(b, 1, n, out) != n)
            rc = -1;
    if (ferror(in))
        rc = -1;
    fclose(in);
    if (fclose(out) != 0)
        rc = -1;
    return rc;
}

/* Copy every regular file of seed into dir. */
static int copy_seed(const char *seed, const char *dir)
{
    DIR *d = opendir(seed);
    if (!d)
        return -1;
    buf_t from = BUF_INIT, to = BUF_INIT;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        buf_reset(&from);
        buf_reset(&to);
        buf_printf(&from, "%s/%s", seed, e->d_name);
        buf_printf(&to, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(buf_cstr(&from), &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (copy_file(buf_cstr(&from), buf_cstr(&to)) != 0) {
            fprintf(stderr, "moat-bench-engine: copy %s: %s\n", buf_cstr(&from), strerror(errno));
            rc = -1;
        }
    }
    closedir(d);
    buf_free(&from);
    buf_free(&to);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The class that decided, from the rule ("recipient:check_..."). */
static const char *const class_names[] = {"client", "helo", "sender", "relay", "recipient"};
#define NCLASS (sizeof class_names / sizeof class_names[0])

static size_t rule_class(const char *rule)
{
    for (size_t i = 0; i < NCLASS; i++) {
        size_t n = strlen(class_names[i]);
        if (strncmp(rule, class_names[i], n) == 0 && rule[n] == ':')
            return i;
    }
    return NCLASS;
}

int bench_rcpt(const engine_opts_t *o)
{
    printf("restriction engine: policy_eval per RCPT, seed-gateway configuration without DNS,\n"
           "state and queue parts, smtpd_delay_reject = yes (client, helo, sender, relay and\n"
           "recipient classes on every RCPT)\n");
    struct stat sb;
    if (stat(o->seed, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        /* The seed lives beside the repository, not in it: no seed, no figure. */
        printf("  skipped: no seed configuration at %s (set MOAT_SEED_GATEWAY or --seed)\n", o->seed);
        return 0;
    }

    buf_t dir = BUF_INIT, path = BUF_INIT, err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = NULL;
    policy_t *pol = NULL;
    double *samples = NULL, *sub = NULL;
    unsigned char *kind = NULL;   /* per sample: K_TRUSTED, K_PASSED, K_REFUSED */
    int rc = -1;
    buf_printf(&dir, "%s/seed-gateway", o->dir);
    if (mkdir_p(buf_cstr(&dir), 0700) != 0 || copy_seed(o->seed, buf_cstr(&dir)) != 0) {
        fprintf(stderr, "moat-bench-engine: cannot copy %s to %s\n", o->seed, buf_cstr(&dir));
        goto out;
    }
    buf_printf(&path, "%s/main.cf", buf_cstr(&dir));
    FILE *f = fopen(buf_cstr(&path), "w");
    if (!f || fputs(main_cf, f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "moat-bench-engine: %s: %s\n", buf_cstr(&path), strerror(errno));
        goto out;
    }
    /* The seed folder has no master.cf of its own; an old one would add services. */
    buf_reset(&path);
    buf_printf(&path, "%s/master.cf", buf_cstr(&dir));
    remove(buf_cstr(&path));
    for (size_t i = 0; i < sizeof hashed / sizeof hashed[0]; i++) {
        buf_reset(&path);
        buf_printf(&path, "%s/%s", buf_cstr(&dir), hashed[i]);
        if (map_build(buf_cstr(&path), &err) != 0) {
            fprintf(stderr, "moat-bench-engine: map_build: %s", buf_cstr(&err));
            goto out;
        }
    }

    double t0 = now_mono();
    cfg = config_load(buf_cstr(&dir), &err, &warn);
    if (!cfg) {
        fprintf(stderr, "moat-bench-engine: config: %s", buf_cstr(&err));
        goto out;
    }
    const params_t *p = config_main(cfg);
    pol = policy_new(p, param_str(p, PARAM_config_directory), &err);
    double load_s = now_mono() - t0;
    if (!pol) {
        fprintf(stderr, "moat-bench-engine: policy: %s", buf_cstr(&err));
        goto out;
    }

    size_t nc = sizeof clients / sizeof clients[0];
    struct sockaddr_storage peers[sizeof clients / sizeof clients[0]];
    memset(peers, 0, sizeof peers);
    for (size_t i = 0; i < nc; i++) {
        if (strchr(clients[i].addr, ':')) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&peers[i];
            s6->sin6_family = AF_INET6;
            inet_pton(AF_INET6, clients[i].addr, &s6->sin6_addr);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&peers[i];
            s4->sin_family = AF_INET;
            inet_pton(AF_INET, clients[i].addr, &s4->sin_addr);
        }
    }

    verdict_t v;
    verdict_init(&v);
    samples = xcalloc(o->rcpt_count, sizeof *samples);
    kind = xcalloc(o->rcpt_count, sizeof *kind);
    unsigned long n = 0, npermit = 0, nreject = 0, ndefer = 0;
    unsigned long by_class[NCLASS + 1] = {0};
    uint64_t seed = 0x72637074ULL;
    /* A short warm-up (caches, the tables' first pages), not reported. */
    unsigned long warm = o->rcpt_count < 2000 ? o->rcpt_count / 2 : 1000;
    double start = 0, now = 0;
    for (unsigned long i = 0; i < warm + o->rcpt_count; i++) {
        if (i == warm)
            start = now = now_mono();
        uint64_t r = rng_next(&seed);
        size_t ci = (size_t)(r % nc);
        r /= nc;
        const char *helo = helos[r % (sizeof helos / sizeof helos[0])];
        r /= sizeof helos / sizeof helos[0];
        const char *sender = senders[r % (sizeof senders / sizeof senders[0])];
        r /= sizeof senders / sizeof senders[0];
        const char *rcpt = rcpts[r % (sizeof rcpts / sizeof rcpts[0])];
        pstate_t st = {
            .peer = (const struct sockaddr *)&peers[ci],
            .client_addr = clients[ci].addr,
            .client_name = clients[ci].name,
            .reverse_name = clients[ci].name,
            .helo = helo,
            .sender = sender,
            .recipient = rcpt,
            .protocol = "ESMTP",
        };
        verdict_reset(&v);
        double a = now_mono();
        vstatus_t s = policy_eval(pol, PCMD_RCPT, &st, &v, NULL);
        double b = now_mono();
        if (i < warm)
            continue;
        kind[n] = ci == 0 ? K_TRUSTED : s == V_PERMIT ? K_PASSED : K_REFUSED;
        samples[n++] = b - a;
        now = b;
        if (s == V_PERMIT)
            npermit++;
        else {
            if (s == V_REJECT)
                nreject++;
            else
                ndefer++;
            by_class[rule_class(v.rule)]++;
        }
        if (now - start >= o->rcpt_seconds)
            break;
    }
    verdict_free(&v);
    double elapsed = now - start;

    /* The trusted client leaves every class at permit_mynetworks; an
     * outside RCPT that is permitted ran every step of every class; a
     * refused one stopped where it was refused.  Their percentiles apart. */
    sub = xcalloc(n ? n : 1, sizeof *sub);
    double kmed[3], kp99[3];
    size_t kn[3];
    for (int k = 0; k < 3; k++) {
        size_t nsub = 0;
        for (size_t i = 0; i < n; i++)
            if (kind[i] == k)
                sub[nsub++] = samples[i];
        qsort(sub, nsub, sizeof *sub, cmp_double);
        kmed[k] = percentile_sorted(sub, nsub, 50) * 1e6;
        kp99[k] = percentile_sorted(sub, nsub, 99) * 1e6;
        kn[k] = nsub;
    }
    qsort(samples, n, sizeof *samples, cmp_double);
    double med = percentile_sorted(samples, n, 50) * 1e6;
    double p90 = percentile_sorted(samples, n, 90) * 1e6;
    double p99 = percentile_sorted(samples, n, 99) * 1e6;
    double max = n ? samples[n - 1] * 1e6 : 0;
    double rate = elapsed > 0 ? (double)n / elapsed : 0;
    printf("  configuration load + policy_new: %.1f ms\n", load_s * 1e3);
    printf("  %12s %12s %10s %10s %10s %10s\n", "evaluations", "evals/s", "median us", "p90 us",
           "p99 us", "max us");
    printf("  %12lu %12.0f %10.2f %10.2f %10.2f %10.2f\n", n, rate, med, p90, p99, max);
    static const char *const klabel[3] = {"trusted client (mynetworks)", "outside, permitted",
                                          "outside, refused"};
    for (int k = 0; k < 3; k++)
        printf("  %-28s %8zu evaluations, median %6.2f us, p99 %6.2f us\n", klabel[k], kn[k], kmed[k],
               kp99[k]);
    if (n) {
        printf("  verdicts: %.0f%% permit, %.0f%% reject, %.0f%% defer; refused by class:",
               100.0 * (double)npermit / (double)n, 100.0 * (double)nreject / (double)n,
               100.0 * (double)ndefer / (double)n);
        for (size_t i = 0; i <= NCLASS; i++)
            if (by_class[i])
                printf(" %s %lu", i < NCLASS ? class_names[i] : "other", by_class[i]);
        putchar('\n');
    }
    printf("  (%zu clients x %zu HELO names x %zu senders x %zu recipients, drawn at random;\n"
           "   evals/s counts the whole loop, the percentiles time policy_eval alone)\n",
           nc, sizeof helos / sizeof helos[0], sizeof senders / sizeof senders[0],
           sizeof rcpts / sizeof rcpts[0]);
    if (o->kv)
        printf("RESULT part=rcpt evals=%lu elapsed_s=%.3f rate=%.0f median_us=%.3f p90_us=%.3f "
               "p99_us=%.3f max_us=%.3f permit=%lu reject=%lu defer=%lu load_ms=%.3f "
               "trusted_median_us=%.3f trusted_p99_us=%.3f passed_median_us=%.3f passed_p99_us=%.3f "
               "refused_median_us=%.3f refused_p99_us=%.3f\n",
               n, elapsed, rate, med, p90, p99, max, npermit, nreject, ndefer, load_s * 1e3, kmed[0],
               kp99[0], kmed[1], kp99[1], kmed[2], kp99[2]);
    rc = 0;

out:
    free(samples);
    free(sub);
    free(kind);
    policy_free(&pol);
    config_free(&cfg);
    buf_free(&dir);
    buf_free(&path);
    buf_free(&err);
    buf_free(&warn);
    return rc;
}
