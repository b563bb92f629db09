/*
 * cmd_sasl: `moat sasl`, the postmaster's tools for SMTP AUTH
 * (docs/auth.md).
 *
 *   test USER [MECH]   one real exchange (PLAIN or LOGIN) with the
 *                      configured backend, through the code the server
 *                      uses (sasl_server_new, sasl_start, sasl_step), on a
 *                      private event loop, like `doveadm auth test`
 *   hash [--scheme S]  a crypt(3) hash of a password for
 *                      smtpd_sasl_password_maps
 *
 * Both read the password from stdin (one line; without echo on a
 * terminal).  Owns: the configuration, loop, pool and server it builds
 * for one command.  Never: prints or logs the password or a response.
 */
#include "cli/cli.h"

#include "core/buf.h"
#include "core/pool.h"
#include "core/util.h"
#include "sasl/sasl.h"

#include <event2/event.h>

#include <crypt.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* Exit statuses of `moat sasl test` (docs/auth.md). */
enum { EXIT_AUTH_OK = 0, EXIT_AUTH_FAIL = 1, EXIT_AUTH_TEMP = 2, EXIT_USAGE = 3 };

static const char usage_text[] =
    "usage: moat sasl [-c DIR] [-s SERVICE] test USER [MECH]\n"
    "       moat sasl hash [--scheme yescrypt|sha512]\n"
    "  test USER [MECH]  authenticate USER with the password read from stdin\n"
    "                    through the configured AUTH backend (smtpd_sasl_type),\n"
    "                    as a TLS client would; MECH is PLAIN (default) or LOGIN.\n"
    "                    Prints \"ok: ...\", \"fail: ...\" or \"temporary failure: ...\"\n"
    "  hash              print a crypt(3) hash of the password read from stdin,\n"
    "                    for smtpd_sasl_password_maps (default scheme: yescrypt)\n"
    "  -c DIR      read DIR/main.cf and DIR/master.cf (default: the embedded\n"
    "              configuration)\n"
    "  -s SERVICE  the parameters of that master.cf smtpd service (default: the\n"
    "              first with smtpd_sasl_auth_enable = yes, else main.cf)\n"
    "  Exit status: 0 authenticated (or hash printed), 1 authentication failed,\n"
    "  2 temporary failure (backend unreachable, timeout, table error),\n"
    "  3 usage or configuration error (\"moat sasl: ...\" on stderr).\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "moat sasl: %s\n", why);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

/* One line from stdin, without its line end; echo off on a terminal.
 * NULL at end of input. */
static char *read_password(void)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fputs("Password: ", stderr);
        fflush(stderr);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    return line;
}

static void free_password(char **p)
{
    if (*p) {
        explicit_bzero(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

static void wipe(buf_t *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    buf_reset(b);
}

/* ------------------------------------------------------------- hash */

static int do_hash(const char *scheme)
{
    const char *prefix;
    if (!scheme || strcmp(scheme, "yescrypt") == 0)
        prefix = "$y$";
    else if (strcmp(scheme, "sha512") == 0)
        prefix = "$6$";
    else
        return usage("--scheme: yescrypt or sha512");
    char *pw = read_password();
    if (!pw || !*pw) {
        free_password(&pw);
        cli_fail("sasl", "hash: no password on stdin");
        return EXIT_USAGE;
    }
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    const char *out = NULL;
    if (crypt_gensalt_rn(prefix, 0, NULL, 0, setting, (int)sizeof setting))
        out = crypt_rn(pw, setting, cd, (int)sizeof *cd);
    free_password(&pw);
    int rc = EXIT_AUTH_OK;
    if (!out || out[0] == '*') {
        cli_fail("sasl", "hash: crypt(3) cannot make a %s hash here", scheme ? scheme : "yescrypt");
        rc = EXIT_USAGE;
    } else {
        printf("%s\n", out);
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

/* ------------------------------------------------------------- test */

typedef struct waiter {
    bool done;
    sasl_status_t status;
    buf_t challenge, user, reason;
} waiter_t;

static void on_reply(void *arg, const sasl_reply_t *r)
{
    waiter_t *w = arg;
    w->done = true;
    w->status = r->status;
    buf_reset(&w->challenge);
    buf_reset(&w->user);
    buf_reset(&w->reason);
    if (r->challenge)
        buf_puts(&w->challenge, r->challenge);
    if (r->user)
        buf_puts(&w->user, r->user);
    if (r->reason)
        buf_puts(&w->reason, r->reason);
}

static const params_t *pick_params(const config_t *cfg, const char *name, const char **label)
{
    size_t n = config_nservices(cfg);
    for (size_t i = 0; i < n; i++) {
        const service_t *sv = config_service(cfg, i);
        if (sv->kind != SK_SMTPD)
            continue;
        if (name ? strcmp(sv->name, name) == 0 : param_bool(sv->params, PARAM_smtpd_sasl_auth_enable)) {
            *label = sv->name;
            return sv->params;
        }
    }
    if (name)
        return NULL;
    *label = "main.cf";
    return config_main(cfg);
}

static void wait_reply(struct event_base *base, waiter_t *w)
{
    while (!w->done)
        event_base_loop(base, EVLOOP_ONCE);
}

/* The exchange itself: the initial response for PLAIN, the two answers
 * LOGIN asks for. */
static int exchange(sasl_server_t *srv, struct event_base *base, const char *user, const char *mech,
                    const char *password)
{
    sasl_peer_t peer = {.client_addr = "", .local_addr = "", .tls = true};
    bool plain = strcmp(mech, "PLAIN") == 0;
    buf_t raw = BUF_INIT, resp = BUF_INIT;
    if (plain) {
        buf_putc(&raw, 0);
        buf_puts(&raw, user);
        buf_putc(&raw, 0);
        buf_puts(&raw, password);
        sasl_b64_encode(raw.data, raw.len, &resp);
    }
    waiter_t w = {0};
    sasl_conv_t *conv = sasl_start(srv, mech, plain ? buf_cstr(&resp) : NULL, &peer, on_reply, &w);
    int rounds = 0;
    for (;;) {
        wait_reply(base, &w);
        if (w.status != SASL_CONTINUE)
            break;
        /* PLAIN: the response again to a server that wants it after an
         * empty challenge; LOGIN: the user name, then the password. */
        if (++rounds > (plain ? 1 : 2)) {
            sasl_end(&conv);
            buf_reset(&w.reason);
            buf_puts(&w.reason, "unexpected challenge from the backend");
            w.status = SASL_FAIL;
            break;
        }
        wipe(&resp);
        if (plain)
            sasl_b64_encode(raw.data, raw.len, &resp);
        else
            sasl_b64_encode(rounds == 1 ? user : password, strlen(rounds == 1 ? user : password), &resp);
        w.done = false;
        sasl_step(conv, buf_cstr(&resp));
    }
    sasl_end(&conv);
    wipe(&raw);
    wipe(&resp);
    buf_free(&raw);
    buf_free(&resp);

    int rc;
    switch (w.status) {
    case SASL_OK:
        printf("ok: %s authenticated (mechanism %s)\n", buf_cstr(&w.user), mech);
        rc = EXIT_AUTH_OK;
        break;
    case SASL_TEMP:
        printf("temporary failure: %s\n", buf_cstr(&w.reason));
        rc = EXIT_AUTH_TEMP;
        break;
    default:
        printf("fail: %s: %s\n", user, w.reason.len ? buf_cstr(&w.reason) : "authentication failed");
        rc = EXIT_AUTH_FAIL;
        break;
    }
    buf_free(&w.challenge);
    buf_free(&w.user);
    buf_free(&w.reason);
    return rc;
}

static int do_test(const char *dir, const char *service, const char *user, const char *mech_arg)
{
    char mech[16];
    str_copy(mech, mech_arg ? mech_arg : "PLAIN", sizeof mech);
    for (char *q = mech; *q; q++)
        if (*q >= 'a' && *q <= 'z')
            *q = (char)(*q - 32);
    if (strcmp(mech, "PLAIN") != 0 && strcmp(mech, "LOGIN") != 0)
        return usage("test: MECH is PLAIN or LOGIN");
    if (!*user)
        return usage("test: empty USER");

    buf_t err = BUF_INIT;
    config_t *cfg = config_load(dir, &err, NULL);
    struct event_base *base = NULL;
    pool_t *pool = NULL;
    sasl_server_t *srv = NULL;
    char *password = NULL;
    int rc = EXIT_USAGE;
    const char *label = NULL;
    const params_t *p = cfg ? pick_params(cfg, service, &label) : NULL;
    if (!cfg) {
        fputs(buf_cstr(&err), stderr);
        cli_fail("sasl", "the configuration has errors");
    } else if (!p) {
        cli_fail("sasl", "no smtpd service \"%s\" in master.cf", service);
    } else if (!param_bool(p, PARAM_smtpd_sasl_auth_enable)) {
        if (service)
            cli_fail("sasl", "smtpd_sasl_auth_enable = no for service %s", label);
        else
            cli_fail("sasl", "smtpd_sasl_auth_enable = no in main.cf and every smtpd service");
    } else if (!(password = read_password())) {
        cli_fail("sasl", "test: no password on stdin");
    } else {
        base = event_base_new();
        pool = pool_new(base, 1);
        if (sasl_server_new(p, base, pool, &srv, &err) < 0 || !srv) {
            fputs(buf_cstr(&err), stderr);
            cli_fail("sasl", "cannot set up the AUTH backend");
        } else {
            rc = exchange(srv, base, user, mech, password);
        }
    }
    free_password(&password);
    sasl_server_free(&srv);
    pool_free(&pool);   /* after the server: a finished crypt job still reports here */
    if (base)
        event_base_free(base);
    config_free(&cfg);
    buf_free(&err);
    return rc;
}

int cmd_sasl(int argc, char **argv)
{
    enum { O_SCHEME = 256 };
    static const struct option opts[] = {
        {"scheme", required_argument, NULL, O_SCHEME},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *service = NULL, *scheme = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': dir = optarg; break;
        case 's': service = optarg; break;
        case O_SCHEME: scheme = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage(NULL);
        }
    }
    if (optind >= argc)
        return usage("a command is needed: test or hash");
    const char *cmd = argv[optind++];
    if (strcmp(cmd, "hash") == 0) {
        if (optind != argc)
            return usage("hash takes no arguments");
        return do_hash(scheme);
    }
    if (strcmp(cmd, "test") == 0) {
        if (scheme)
            return usage("--scheme belongs to hash");
        if (optind >= argc || argc - optind > 2)
            return usage("test USER [MECH]");
        return do_test(dir, service, argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL);
    }
    return usage("unknown command (test or hash)");
}
