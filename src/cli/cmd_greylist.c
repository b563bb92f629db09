/*
 * cmd_greylist: `moat greylist`, the postmaster's view of greylisting
 * state in state_store (docs/greylist.md).
 *
 *   list [--prefix P]     the triplets (grey:P...), one line each
 *   allow CLIENT          auto-allow an address, network or domain identity
 *   remove CLIENT|KEY     forget a client (its triplets and its pass count)
 *                         or one key (grey:... / greyok:...)
 *   stats                 how many triplets are pending and passed, how many
 *                         clients are auto-allowed
 *
 * Owns: the configuration and store it opens (cli_state) for the length
 * of one command.  Never: write anything but grey:/greyok: keys, or
 * write at all for list and stats.  Safe while daemons run: every change
 * is one store operation, as the daemons' own writes are.
 */
#include "cli/cli.h"

#include "core/buf.h"
#include "core/util.h"
#include "policy/greylist.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: moat greylist [-c DIR] COMMAND [ARGS]\n"
    "  list [--prefix P]    the greylisting triplets whose key starts with grey:P\n"
    "                       (P is an identity, or identity/sender...): identity,\n"
    "                       sender, recipient, first seen, age, pending|passed,\n"
    "                       expiry\n"
    "  allow CLIENT         never greylist CLIENT again (until greylist_max_age\n"
    "                       passes without mail from it): an address or network\n"
    "                       (its greylist_client_netmask network), or with\n"
    "                       greylist_identity = fcrdns a domain name\n"
    "  remove CLIENT|KEY    forget CLIENT (its triplets and its pass count), or\n"
    "                       one key as list and stats name them (grey:..., greyok:...)\n"
    "  stats                triplets pending and passed, clients auto-allowed\n"
    "  -c DIR  read DIR/main.cf (state_store, greylist_*); default: the embedded\n"
    "          configuration\n"
    "  Exit status: 0 done, 1 an error (\"moat greylist: ...\" on stderr), 2 usage.\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "moat greylist: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

/* Keys and values come from the store, which peers filled: control bytes
 * never reach the terminal as such. */
static void put_vis(buf_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            buf_printf(b, "\\x%02X", ch);
        else
            buf_putc(b, (char)ch);
    }
}

static void put_time(buf_t *b, long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char s[32];
    if (t <= 0 || !localtime_r(&tt, &tm) || !strftime(s, sizeof s, "%Y-%m-%d %H:%M:%S", &tm))
        buf_puts(b, "-");
    else
        buf_puts(b, s);
}

/* ------------------------------------------------------------- scanning */

typedef struct entry {
    char *key;
    char *value;
    long long expires;
} entry_t;

typedef struct scan {
    entry_t *e;
    size_t n, cap;
    bool done;
    store_status_t status;
    buf_t error;
} scan_t;

static void scan_each(void *arg, const char *key, const char *value, size_t len, long long expires)
{
    scan_t *s = arg;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->e = xrealloc(s->e, s->cap * sizeof *s->e);
    }
    s->e[s->n++] = (entry_t){xstrdup(key), xstrndup(value, len), expires};
}

static void scan_done(void *arg, const store_result_t *r)
{
    scan_t *s = arg;
    s->status = r->status;
    if (r->error)
        buf_puts(&s->error, r->error);
    s->done = true;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->key, ((const entry_t *)b)->key);
}

/* Every live entry under prefix, sorted by key; -1 with a message. */
static int scan_all(cli_state_t *cs, const char *prefix, scan_t *s)
{
    memset(s, 0, sizeof *s);
    store_scan(cs->store, prefix, scan_each, scan_done, s);
    cli_state_wait(cs, &s->done);
    if (s->status == ST_ERROR) {
        cli_fail("greylist", "%s: %s", store_spec(cs->store), buf_cstr(&s->error));
        return -1;
    }
    if (s->n)
        qsort(s->e, s->n, sizeof *s->e, entry_cmp);
    return 0;
}

static void scan_free(scan_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->e[i].key);
        free(s->e[i].value);
    }
    free(s->e);
    buf_free(&s->error);
}

/* One operation, waited for. */
typedef struct one {
    bool done;
    store_status_t status;
    buf_t error;
} one_t;

static void one_done(void *arg, const store_result_t *r)
{
    one_t *o = arg;
    o->status = r->status;
    if (r->error)
        buf_puts(&o->error, r->error);
    o->done = true;
}

static store_status_t del_key(cli_state_t *cs, const char *key, buf_t *why)
{
    one_t o = {0};
    store_del(cs->store, key, one_done, &o);
    cli_state_wait(cs, &o.done);
    if (o.status == ST_ERROR)
        buf_printf(why, "%s", buf_cstr(&o.error));
    buf_free(&o.error);
    return o.status;
}

/* ------------------------------------------------------------- commands */

static int do_list(cli_state_t *cs, const char *prefix)
{
    buf_t p = BUF_INIT, line = BUF_INIT, id = BUF_INIT, snd = BUF_INIT, rcpt = BUF_INIT;
    buf_printf(&p, "grey:%s", prefix ? prefix : "");
    scan_t s;
    int rc = scan_all(cs, buf_cstr(&p), &s) ? 1 : 0;
    long long now = (long long)time(NULL);
    for (size_t i = 0; !rc && i < s.n; i++) {
        grey_rec_t r;
        if (!greylist_key_split(s.e[i].key, &id, &snd, &rcpt) || !greylist_rec_parse(s.e[i].value, &r))
            continue;   /* not a triplet (a foreign key under grey:) */
        buf_reset(&line);
        put_vis(&line, id.data, id.len);
        buf_putc(&line, ' ');
        if (snd.len)
            put_vis(&line, snd.data, snd.len);
        else
            buf_puts(&line, "<>");
        buf_putc(&line, ' ');
        put_vis(&line, rcpt.data, rcpt.len);
        buf_putc(&line, ' ');
        put_time(&line, r.first);
        buf_printf(&line, " %llds %s ", now - r.first > 0 ? now - r.first : 0, r.passed ? "passed" : "pending");
        if (s.e[i].expires > 0)
            put_time(&line, s.e[i].expires);
        else
            buf_puts(&line, "never");
        buf_putc(&line, '\n');
        fputs(buf_cstr(&line), stdout);
    }
    scan_free(&s);
    buf_free(&p);
    buf_free(&line);
    buf_free(&id);
    buf_free(&snd);
    buf_free(&rcpt);
    return rc;
}

static int do_allow(cli_state_t *cs, const char *client)
{
    const params_t *p = config_main(cs->cfg);
    long long count = param_int(p, PARAM_greylist_auto_allow_count);
    if (count <= 0)
        return cli_fail("greylist", "greylist_auto_allow_count = 0: auto-allowing is off; list %s in greylist_client_allow_maps "
                    "instead",
                    client);
    buf_t id = BUF_INIT, err = BUF_INIT, key = BUF_INIT, val = BUF_INIT;
    int rc = 0;
    if (!greylist_client_identity(p, client, &id, &err)) {
        rc = cli_fail("greylist", "%s", buf_cstr(&err));
        goto done;
    }
    buf_printf(&key, "greyok:%s", buf_cstr(&id));
    buf_printf(&val, "%lld", count);
    long long ttl = param_int(p, PARAM_greylist_max_age);
    one_t o = {0};
    store_set(cs->store, buf_cstr(&key), val.data, val.len, (unsigned)ttl, one_done, &o);
    cli_state_wait(cs, &o.done);
    if (o.status == ST_ERROR)
        rc = cli_fail("greylist", "%s: %s", store_spec(cs->store), buf_cstr(&o.error));
    else
        printf("%s: auto-allowed (greylist_auto_allow_count = %lld) for greylist_max_age (%llds) after its last "
               "mail\n",
               buf_cstr(&key), count, ttl);
    buf_free(&o.error);
done:
    buf_free(&id);
    buf_free(&err);
    buf_free(&key);
    buf_free(&val);
    return rc;
}

static int do_remove(cli_state_t *cs, const char *what)
{
    buf_t why = BUF_INIT;
    int rc = 0;
    if (strncmp(what, "grey:", 5) == 0 || strncmp(what, "greyok:", 7) == 0) {
        store_status_t st = del_key(cs, what, &why);
        if (st == ST_ERROR)
            rc = cli_fail("greylist", "%s: %s", store_spec(cs->store), buf_cstr(&why));
        else if (st == ST_NOTFOUND)
            rc = cli_fail("greylist", "%s: no such entry", what);
        else
            printf("removed %s\n", what);
        buf_free(&why);
        return rc;
    }
    buf_t id = BUF_INIT, prefix = BUF_INIT, okkey = BUF_INIT;
    if (!greylist_client_identity(config_main(cs->cfg), what, &id, &why)) {
        rc = cli_fail("greylist", "%s", buf_cstr(&why));
        goto done;
    }
    buf_printf(&prefix, "grey:%s/", buf_cstr(&id));
    buf_printf(&okkey, "greyok:%s", buf_cstr(&id));
    scan_t s;
    if (scan_all(cs, buf_cstr(&prefix), &s)) {
        rc = 1;
        goto done;
    }
    size_t removed = 0;
    for (size_t i = 0; !rc && i <= s.n; i++) {
        const char *key = i < s.n ? s.e[i].key : buf_cstr(&okkey);
        buf_reset(&why);
        store_status_t st = del_key(cs, key, &why);
        if (st == ST_ERROR)
            rc = cli_fail("greylist", "%s: %s", store_spec(cs->store), buf_cstr(&why));
        else if (st == ST_OK)
            removed++;
    }
    scan_free(&s);
    if (!rc && !removed)
        rc = cli_fail("greylist", "%s: no greylisting entry for identity %s", what, buf_cstr(&id));
    else if (!rc)
        printf("removed %zu entr%s of identity %s\n", removed, removed == 1 ? "y" : "ies", buf_cstr(&id));
done:
    buf_free(&why);
    buf_free(&id);
    buf_free(&prefix);
    buf_free(&okkey);
    return rc;
}

static int do_stats(cli_state_t *cs)
{
    long long count = param_int(config_main(cs->cfg), PARAM_greylist_auto_allow_count);
    scan_t s;
    if (scan_all(cs, "grey", &s))
        return 1;
    size_t pending = 0, passed = 0, allowed = 0, counting = 0;
    for (size_t i = 0; i < s.n; i++) {
        grey_rec_t r;
        if (strncmp(s.e[i].key, "greyok:", 7) == 0) {
            long long n = strtoll(s.e[i].value, NULL, 10);
            if (count > 0 && n >= count)
                allowed++;
            else
                counting++;
        } else if (strncmp(s.e[i].key, "grey:", 5) == 0 && greylist_rec_parse(s.e[i].value, &r)) {
            if (r.passed)
                passed++;
            else
                pending++;
        }
    }
    scan_free(&s);
    printf("triplets pending: %zu\n", pending);
    printf("triplets passed: %zu\n", passed);
    printf("clients allowed: %zu\n", allowed);
    printf("clients counting: %zu\n", counting);
    return 0;
}

int cmd_greylist(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"prefix", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *prefix = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'c': dir = optarg; break;
        case 'p': prefix = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage(NULL);
        }
    }
    if (optind >= argc)
        return usage("no command");
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    if (strcmp(cmd, "list") == 0 || strcmp(cmd, "stats") == 0) {
        if (nargs)
            return usage("list and stats take no arguments");
        if (prefix && strcmp(cmd, "stats") == 0)
            return usage("--prefix goes with list");
    } else if (strcmp(cmd, "allow") == 0 || strcmp(cmd, "remove") == 0) {
        if (nargs != 1)
            return usage("allow and remove take one client (or key)");
        if (prefix)
            return usage("--prefix goes with list");
    } else {
        return usage("unknown command");
    }
    cli_state_t cs;
    buf_t err = BUF_INIT;
    if (cli_state_open(&cs, dir, &err) != 0) {
        fputs(buf_cstr(&err), stderr);
        if (err.len && err.data[err.len - 1] != '\n')
            fputc('\n', stderr);
        buf_free(&err);
        return 1;
    }
    buf_free(&err);
    int rc;
    if (strcmp(cmd, "list") == 0)
        rc = do_list(&cs, prefix);
    else if (strcmp(cmd, "stats") == 0)
        rc = do_stats(&cs);
    else if (strcmp(cmd, "allow") == 0)
        rc = do_allow(&cs, args[0]);
    else
        rc = do_remove(&cs, args[0]);
    cli_state_close(&cs);
    return rc;
}
