/*
 * cmd_config: `moat config check | show | doc`, the postconf of moat.
 *
 * check  load a configuration the way `moat serve` does; every error as
 *        file:line: message on stderr and exit 1, else exit 0.
 * show   print parameters like postconf (-n, -d, -x, -M, names).
 * doc    print docs/configuration.md, generated from the registry.
 *
 * Owns nothing beyond one call.  Must never start services or touch the
 * queue: it only reads configuration files.
 */
#include "cli/cli.h"
#include "config/config.h"
#include "core/buf.h"
#include "queue/route.h"
#include "smtp/smtpd.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char usage_check[] =
    "usage: moat config check [-c DIR]\n"
    "  Load DIR/main.cf and DIR/master.cf (default: the embedded configuration)\n"
    "  and report every problem as file:line: message.  Exit 1 on any error.\n";
static const char usage_show[] =
    "usage: moat config show [-c DIR] [-n | -d] [-x] [NAME...]\n"
    "       moat config show [-c DIR] -M [SERVICE...]\n"
    "  Print parameters as name = value, sorted, like postconf:\n"
    "  -n  only parameters set in main.cf    -d  registry defaults\n"
    "  -x  expand $name references           -M  master.cf services moat runs\n";
static const char usage_doc[] =
    "usage: moat config doc\n"
    "  Print the configuration reference (docs/configuration.md) in markdown.\n";

static void usage_all(FILE *fp)
{
    fprintf(fp, "usage: moat config check|show|doc [options]   (moat config help COMMAND)\n\n%s\n%s\n%s",
            usage_check, usage_show, usage_doc);
}

static const struct option long_opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};

/* Parse options of one subcommand; returns -1 to go on, else an exit code. */
typedef struct opts {
    const char *dir;
    int flags;
} opts_t;

static int get_opts(int argc, char **argv, const char *optstring, const char *usage, opts_t *o)
{
    int c;
    /* glibc: 0 re-initializes getopt completely, even after main's use. */
    optind = 0;
    opterr = 1;
    while ((c = getopt_long(argc, argv, optstring, long_opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->dir = optarg; break;
        case 'n': o->flags |= CONFIG_SHOW_NONDEFAULT; break;
        case 'd': o->flags |= CONFIG_SHOW_DEFAULTS; break;
        case 'x': o->flags |= CONFIG_SHOW_EXPAND; break;
        case 'M': o->flags |= CONFIG_SHOW_MASTER; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    return -1;
}

static config_t *load(const char *dir, bool quiet_warnings)
{
    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(dir, &err, &warn);
    if (!quiet_warnings || !cfg)
        cli_put(stderr, &warn);
    cli_put(stderr, &err);
    buf_free(&err);
    buf_free(&warn);
    return cfg;
}

static int do_check(int argc, char **argv)
{
    opts_t o = {0};
    int rc = get_opts(argc, argv, "c:h", usage_check, &o);
    if (rc >= 0)
        return rc;
    if (optind < argc) {
        fputs(usage_check, stderr);
        return 2;
    }
    config_t *cfg = load(o.dir, false);
    if (!cfg)
        return 1;
    buf_t err = BUF_INIT;
    /* The daemon opens the routing tables at start-up too: the same
     * errors, before any port opens. */
    router_t *router = NULL;
    if (server_check_config(cfg, &err) != 0 || !(router = router_new(cfg, &err))) {
        cli_put(stderr, &err);
        buf_free(&err);
        config_free(&cfg);
        return 1;
    }
    router_free(&router);
    buf_free(&err);
    if (*config_ignored(cfg))
        fprintf(stderr, "moat: ignored Postfix parameters (moat has no such part): %s\n", config_ignored(cfg));
    printf("moat: configuration OK: %zu services\n", config_nservices(cfg));
    config_free(&cfg);
    return 0;
}

static int do_show(int argc, char **argv)
{
    opts_t o = {0};
    int rc = get_opts(argc, argv, "c:ndxMh", usage_show, &o);
    if (rc >= 0)
        return rc;
    if ((o.flags & CONFIG_SHOW_NONDEFAULT) && (o.flags & CONFIG_SHOW_DEFAULTS)) {
        fputs("moat: config show: -n and -d exclude each other\n", stderr);
        return 2;
    }
    /* Warnings belong to `config check`; show stays quiet unless it fails. */
    config_t *cfg = load(o.dir, true);
    if (!cfg)
        return 1;
    buf_t out = BUF_INIT, err = BUF_INIT;
    int unknown = config_show(cfg, o.flags, argv + optind, argc - optind, &out, &err);
    cli_put(stdout, &out);
    cli_put(stderr, &err);
    buf_free(&out);
    buf_free(&err);
    config_free(&cfg);
    return unknown ? 1 : 0;
}

static int do_doc(int argc, char **argv)
{
    opts_t o = {0};
    int rc = get_opts(argc, argv, "h", usage_doc, &o);
    if (rc >= 0)
        return rc;
    if (optind < argc) {
        fputs(usage_doc, stderr);
        return 2;
    }
    buf_t out = BUF_INIT;
    config_doc(&out);
    cli_put(stdout, &out);
    buf_free(&out);
    return 0;
}

int cmd_config(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *usage;
    } subs[] = {{"check", do_check, usage_check}, {"show", do_show, usage_show}, {"doc", do_doc, usage_doc}};

    if (argc < 2) {
        usage_all(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        for (size_t i = 0; argc > 2 && i < sizeof subs / sizeof subs[0]; i++) {
            if (strcmp(argv[2], subs[i].name) == 0) {
                fputs(subs[i].usage, stdout);
                return 0;
            }
        }
        usage_all(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strcmp(sub, subs[i].name) == 0)
            return subs[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "moat: config: unknown command \"%s\"\n", sub);
    usage_all(stderr);
    return 2;
}
