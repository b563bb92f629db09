/*
 * moat block: the postmaster's view of the clients the abuse limits
 * blocked (src/policy/anvil.c writes "block:<id>" entries in the state
 * store): list them, remove one (its abuse counters too, so it starts
 * afresh), or export them for a firewall (plain lines, or an nftables
 * script for `nft -f -`).
 *
 * Works with or without a running daemon (the store is shared: LMDB
 * across processes, Redis across hosts).  Never writes anything but the
 * entries of the client named in `remove`.
 */
#include "cli/cli.h"

#include "core/buf.h"
#include "core/util.h"
#include "policy/anvil.h"
#include "store/store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: moat block [-c DIR] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  list                      blocked clients: address (or IPv6 /64), reason,\n"
    "                            since, expires\n"
    "  remove CLIENT...          unblock CLIENT (an address or IPv6 /64) and\n"
    "                            forget its abuse counters\n"
    "  export --format plain|nftables [--family inet|inet6] [--set NAME]\n"
    "                            print the blocked clients for a firewall: plain is\n"
    "                            one address or network per line; nftables is a\n"
    "                            script for `nft -f -` that fills the sets NAME\n"
    "                            (IPv4, default moat_blocked) and NAME6 (IPv6) of\n"
    "                            table inet filter (see docs/limits.md)\n"
    "\n"
    "  -c DIR  read DIR/main.cf (state_store); default: the embedded configuration\n"
    "\n"
    "exit status: 0 done, 1 an error or a CLIENT that is not blocked, 2 usage.\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "moat block: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

/* ------------------------------------------------------------- the scan */

typedef struct entry {
    char *id;
    char reason[32];
    long long since, count, expires;
} entry_t;

typedef struct scan {
    entry_t *v;
    size_t n, cap;
    bool done;
    store_status_t status;
    buf_t error;
} scan_t;

static void scan_each(void *arg, const char *key, const char *value, size_t len, long long expires)
{
    scan_t *s = arg;
    if (strncmp(key, "block:", 6) != 0)
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    entry_t *e = &s->v[s->n++];
    memset(e, 0, sizeof *e);
    e->id = xstrdup(key + 6);
    char *text = xstrndup(value, len);
    if (!anvil_block_parse(text, e->reason, sizeof e->reason, &e->since, &e->count))
        str_copy(e->reason, "?", sizeof e->reason);
    free(text);
    e->expires = expires;
}

static void scan_done(void *arg, const store_result_t *r)
{
    scan_t *s = arg;
    s->status = r->status;
    if (r->status == ST_ERROR)
        buf_puts(&s->error, r->error ? r->error : "scan failed");
    s->done = true;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    return strcmp(x->id, y->id);
}

static int scan_blocks(cli_state_t *cs, scan_t *s)
{
    memset(s, 0, sizeof *s);
    store_scan(cs->store, "block:", scan_each, scan_done, s);
    cli_state_wait(cs, &s->done);
    if (s->status == ST_ERROR) {
        fprintf(stderr, "moat block: state store %s: %s\n", store_spec(cs->store), buf_cstr(&s->error));
        return -1;
    }
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, cmp_entry);
    return 0;
}

static void scan_free(scan_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].id);
    free(s->v);
    buf_free(&s->error);
}

static void fmt_time(long long t, char *out, size_t size)
{
    if (!t) {
        str_copy(out, "-", size);
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* -------------------------------------------------------------- commands */

static int do_list(cli_state_t *cs)
{
    scan_t s;
    if (scan_blocks(cs, &s) != 0) {
        scan_free(&s);
        return 1;
    }
    if (!s.n) {
        printf("no blocked clients\n");
        scan_free(&s);
        return 0;
    }
    printf("%-28s %-20s %-20s %-20s %s\n", "CLIENT", "REASON", "SINCE", "EXPIRES", "EVENTS");
    for (size_t i = 0; i < s.n; i++) {
        const entry_t *e = &s.v[i];
        char since[32], exp[32];
        fmt_time(e->since, since, sizeof since);
        fmt_time(e->expires, exp, sizeof exp);
        char events[32] = "-";
        if (e->count)
            snprintf(events, sizeof events, "%lld", e->count);
        printf("%-28s %-20s %-20s %-20s %s\n", e->id, anvil_reason_text(e->reason), since, exp, events);
    }
    scan_free(&s);
    return 0;
}

typedef struct del {
    bool done;
    store_status_t status;
    buf_t error;
} del_t;

static void del_cb(void *arg, const store_result_t *r)
{
    del_t *d = arg;
    d->status = r->status;
    if (r->status == ST_ERROR)
        buf_puts(&d->error, r->error ? r->error : "delete failed");
    d->done = true;
}

/* Delete key; ST_OK, ST_NOTFOUND or ST_ERROR (reported). */
static store_status_t del_key(cli_state_t *cs, const char *key)
{
    del_t d = {0};
    store_del(cs->store, key, del_cb, &d);
    cli_state_wait(cs, &d.done);
    if (d.status == ST_ERROR)
        fprintf(stderr, "moat block: state store %s: %s: %s\n", store_spec(cs->store), key, buf_cstr(&d.error));
    buf_free(&d.error);
    return d.status;
}

static int do_remove(cli_state_t *cs, char **args, int nargs)
{
    int rc = 0;
    for (int i = 0; i < nargs; i++) {
        char id[96];
        /* An address names its block entry (IPv6: its /64); a /64 as
         * `list` prints it is taken as it is. */
        if (!anvil_block_id(args[i], id, sizeof id))
            str_copy(id, args[i], sizeof id);
        char key[128];
        snprintf(key, sizeof key, "block:%s", id);
        store_status_t st = del_key(cs, key);
        /* the counters too: a removed client starts from nothing */
        snprintf(key, sizeof key, "abuse:5xx:%s", id);
        if (del_key(cs, key) == ST_ERROR)
            st = ST_ERROR;
        snprintf(key, sizeof key, "abuse:rcpt:%s", id);
        if (del_key(cs, key) == ST_ERROR)
            st = ST_ERROR;
        if (st == ST_OK) {
            printf("removed %s\n", id);
        } else if (st == ST_NOTFOUND) {
            fprintf(stderr, "moat block: %s: not blocked\n", id);
            rc = 1;
        } else {
            rc = 1;
        }
    }
    return rc;
}

static bool is_v6(const char *id)
{
    return strchr(id, ':') != NULL;
}

static int do_export(cli_state_t *cs, const char *format, const char *family, const char *set)
{
    scan_t s;
    if (scan_blocks(cs, &s) != 0) {
        scan_free(&s);
        return 1;
    }
    bool want4 = !family || !strcmp(family, "inet");
    bool want6 = !family || !strcmp(family, "inet6");
    long long now = (long long)time(NULL);
    if (!strcmp(format, "plain")) {
        for (size_t i = 0; i < s.n; i++)
            if (is_v6(s.v[i].id) ? want6 : want4)
                printf("%s\n", s.v[i].id);
        scan_free(&s);
        return 0;
    }
    /* nftables: a snapshot that replaces the sets' contents in one
     * transaction (nft -f applies a file atomically). */
    char set4[128], set6[136];
    if (family && set) {
        str_copy(set4, set, sizeof set4);
        str_copy(set6, set, sizeof set6);
    } else {
        const char *base = set ? set : "moat_blocked";
        str_copy(set4, base, sizeof set4);
        snprintf(set6, sizeof set6, "%s6", base);
    }
    printf("# moat block export: %zu blocked client%s\n", s.n, s.n == 1 ? "" : "s");
    for (int fam = 4; fam <= 6; fam += 2) {
        if (fam == 4 ? !want4 : !want6)
            continue;
        const char *name = fam == 4 ? set4 : set6;
        printf("flush set inet filter %s\n", name);
        buf_t line = BUF_INIT;
        size_t n = 0;
        for (size_t i = 0; i < s.n; i++) {
            const entry_t *e = &s.v[i];
            if (is_v6(e->id) != (fam == 6))
                continue;
            buf_puts(&line, n++ ? ", " : "");
            buf_puts(&line, e->id);
            if (e->expires) {
                long long left = e->expires - now;
                buf_printf(&line, " timeout %llds", left > 0 ? left : 1);
            }
        }
        if (n)
            printf("add element inet filter %s { %s }\n", name, buf_cstr(&line));
        buf_free(&line);
    }
    scan_free(&s);
    return 0;
}

static const struct option long_opts[] = {
    {"format", required_argument, NULL, 'f'},
    {"family", required_argument, NULL, 'F'},
    {"set", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int cmd_block(int argc, char **argv)
{
    const char *dir = NULL, *format = NULL, *family = NULL, *set = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'c': dir = optarg; break;
        case 'f': format = optarg; break;
        case 'F': family = optarg; break;
        case 's': set = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage(NULL);
        }
    }
    if (optind >= argc)
        return usage("no command");
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    bool is_export = !strcmp(cmd, "export");
    if (!strcmp(cmd, "list") || is_export) {
        if (nargs)
            return usage("list and export take no arguments");
    } else if (!strcmp(cmd, "remove")) {
        if (!nargs)
            return usage("remove needs a CLIENT");
    } else {
        return usage("unknown command");
    }
    if (!is_export && (format || family || set))
        return usage("--format, --family and --set are for export");
    if (is_export) {
        if (!format)
            return usage("export needs --format plain or --format nftables");
        if (strcmp(format, "plain") && strcmp(format, "nftables"))
            return usage("--format is plain or nftables");
        if (family && strcmp(family, "inet") && strcmp(family, "inet6"))
            return usage("--family is inet or inet6");
        if (set && (!*set || strspn(set, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
                                 != strlen(set) || strlen(set) > 100))
            return usage("--set: a name of letters, digits and _");
        if (set && !strcmp(format, "plain"))
            return usage("--set is for --format nftables");
    }

    cli_state_t cs;
    buf_t err = BUF_INIT;
    if (cli_state_open(&cs, dir, &err) != 0) {
        fprintf(stderr, "moat block: %s", buf_cstr(&err));
        if (err.len && err.data[err.len - 1] != '\n')
            fputc('\n', stderr);
        buf_free(&err);
        return 1;
    }
    buf_free(&err);
    int rc;
    if (!strcmp(cmd, "list"))
        rc = do_list(&cs);
    else if (!strcmp(cmd, "remove"))
        rc = do_remove(&cs, args, nargs);
    else
        rc = do_export(&cs, format, family, set);
    cli_state_close(&cs);
    return rc;
}
