/*
 * cmd_content: `moat content check`, one message through the content stage
 * the server runs at the end of DATA (docs/content.md).
 *
 *   moat content check [-c DIR] [--service NAME] [--client HOST[ADDR]]
 *                      [--helo NAME] [--sender ADDR] [--rcpt ADDR]
 *                      [--trace] [--scan] [--output] [FILE]
 *
 * It loads the configuration as `moat serve` does, compiles the chosen
 * smtpd service's content settings with content_cfg_new (the call the
 * server makes), reads the message from FILE or standard input (CRLF
 * becomes LF; a leading mbox "From " line stays a line of the message),
 * feeds it through content_new/content_feed/content_finish, and prints:
 *
 *   decision: CLASS FILE:LINE: VERB: header|body TEXT[: DETAIL]
 *   note: CLASS: header|body TEXT: NOTE     (--trace: the MIME notes)
 *   scanner: clean | infected NAME | failed REASON | skipped REASON   (--scan)
 *   result: accept [hold] [redirect=ADDR] [bcc=ADDR,...] [filter=T:D]
 *         | reject CODE X.Y.Z TEXT | defer CODE X.Y.Z TEXT | discard
 *   output:                                  (--output; the queued message follows)
 *
 * Exit status as `moat check`: 0 the message would be accepted (a DISCARD
 * or HOLD is accepted too: the client gets 250); 1 it would be rejected
 * or deferred; 2 usage or configuration error (file:line: message).
 *
 * Owns one config_t, one content_cfg_t and, with --scan, one event base
 * and scanner for the command.  Never opens a listener or touches the
 * queue; the content stage's own log lines (Postfix's cleanup lines) go
 * to standard error, formatted as in the mail log (syslog_name).  Every
 * decision is content.c's; the scanner verdict means what it means in
 * the session (clamd.h scan_decide).
 */
#include "cli/cli.h"

#include "config/config.h"
#include "content/clamd.h"
#include "content/content.h"
#include "content/hbc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "smtp/smtpd.h"

#include <event2/event.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: moat content check [-c DIR] [--service NAME] [--client HOST[ADDR]]\n"
    "                          [--helo NAME] [--sender ADDR] [--rcpt ADDR]\n"
    "                          [--trace] [--scan] [--output] [FILE]\n"
    "  Run one message (FILE, or standard input) through the content checks of\n"
    "  an smtpd service exactly as `moat serve -c DIR` would at the end of DATA:\n"
    "  MIME parsing, header_checks, mime_header_checks, nested_header_checks and\n"
    "  body_checks.  Prints one line per decision and a final result line:\n"
    "    decision: CLASS FILE:LINE: ACTION: header|body TEXT[: DETAIL]\n"
    "    result: accept [hold] [redirect=ADDR] [bcc=ADDR,...] [filter=T:D]\n"
    "          | reject CODE X.Y.Z TEXT | defer CODE X.Y.Z TEXT | discard\n"
    "  -c DIR            read DIR/main.cf and DIR/master.cf (default: the\n"
    "                    embedded configuration)\n"
    "  --service NAME    the master.cf service (default: the first smtpd one)\n"
    "  --client H[A]     the client for log lines (default: unknown[127.0.0.1])\n"
    "  --helo NAME       its HELO name (default: none)\n"
    "  --sender ADDR     the envelope sender (default: <>)\n"
    "  --rcpt ADDR       the first recipient (default: none)\n"
    "  --trace           also print the MIME parser's notes (a header cut, a\n"
    "                    MIME error)\n"
    "  --scan            also send the message to content_scanner (clamd) and\n"
    "                    print \"scanner: clean|infected NAME|failed REASON\"\n"
    "  --output          print the message as it would be queued, after a line\n"
    "                    \"output:\"\n"
    "  The content stage's log lines go to standard error.\n"
    "  Exit status: 0 the message would be accepted; 1 it would be rejected or\n"
    "  deferred; 2 usage or configuration error (file:line: message).\n";

/* How much of a checked line a decision shows (Postfix's logs cut at 200). */
#define SHOW_MAX 200

static int usage_error(const char *msg)
{
    if (msg)
        fprintf(stderr, "moat content: %s\n", msg);
    fputs(usage_text, stderr);
    return 2;
}

/* The checked text on one output line: control bytes other than TAB
 * (an unfolded header keeps its continuation's white space) shown as '?',
 * cut at SHOW_MAX bytes ("..." marks the cut). */
static void show_text(buf_t *o, const char *s, size_t n)
{
    size_t k = n > SHOW_MAX ? SHOW_MAX : n;
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        buf_putc(o, (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c);
    }
    if (n > k)
        buf_puts(o, "...");
}

static void show_oneline(buf_t *o, const char *s)
{
    show_text(o, s, strlen(s));
}

typedef struct trace_ctx {
    bool trace;
    buf_t line;
} trace_ctx_t;

static void on_event(void *arg, const content_event_t *ev)
{
    trace_ctx_t *t = arg;
    const char *kind = ev->cls == HBC_BODY ? "body" : "header";
    buf_t *o = &t->line;
    buf_reset(o);
    if (ev->res && (ev->res->act != HBC_NONE || t->trace)) {
        const hbc_result_t *r = ev->res;
        buf_printf(o, "decision: %s ", hbc_class_param(ev->cls));
        if (r->origin.file)
            buf_printf(o, "%s:%d", r->origin.file, r->origin.line);
        else
            buf_puts(o, r->table ? r->table : "?");
        buf_printf(o, ": %s: %s ", hbc_action_verb(r->act), kind);
        show_text(o, ev->line, ev->len);
        switch (r->act) {
        case HBC_REJECT:
        case HBC_DEFER:
        case HBC_TEMPFAIL:
            buf_printf(o, ": %d %s ", r->code, r->dsn);
            show_oneline(o, buf_cstr(&r->text));
            break;
        case HBC_NONE:
        case HBC_IGNORE:
            break;
        default:
            if (r->text.len) {
                buf_puts(o, ": ");
                show_oneline(o, buf_cstr(&r->text));
            }
            break;
        }
    } else if (ev->note && t->trace) {
        buf_printf(o, "note: %s: %s ", hbc_class_param(ev->cls), kind);
        show_text(o, ev->line ? ev->line : "", ev->line ? ev->len : 0);
        buf_puts(o, ": ");
        show_oneline(o, ev->note);
    } else {
        return;
    }
    buf_putc(o, '\n');
    cli_put(stdout, o);
}

/* The scan of the message, driven on a private loop. */
typedef struct scan_ctx {
    bool done;
    scan_status st;
    char *detail;
} scan_ctx_t;

static void scan_cb(void *arg, scan_status st, const char *detail)
{
    scan_ctx_t *c = arg;
    c->done = true;
    c->st = st;
    free(c->detail);
    c->detail = xstrdup(detail ? detail : "");
}

/* The message in pieces, CRLF → LF (a CR at the end of one piece waits
 * for the next). */
typedef struct reader {
    FILE *fp;
    bool cr;           /* a CR is held back */
    char in[65536];
    buf_t out;
} reader_t;

/* The next piece in r->out; false at the end (and on a read error, with
 * errno set). */
static bool read_piece(reader_t *r)
{
    buf_reset(&r->out);
    size_t n = fread(r->in, 1, sizeof r->in, r->fp);
    if (n == 0) {
        if (r->cr) {
            buf_putc(&r->out, '\r');
            r->cr = false;
            return true;
        }
        return false;
    }
    size_t i = 0;
    if (r->cr) {
        if (r->in[0] != '\n')
            buf_putc(&r->out, '\r');
        r->cr = false;
    }
    for (; i < n; i++) {
        char c = r->in[i];
        if (c == '\r') {
            if (i + 1 == n) {
                r->cr = true;
                break;
            }
            if (r->in[i + 1] == '\n')
                continue;
        }
        buf_putc(&r->out, c);
    }
    return true;
}

typedef struct opts {
    const char *dir, *service, *client, *helo, *sender, *rcpt, *file;
    bool trace, scan, output;
} opts_t;

/* Run the message through; returns the exit status. */
static int run(const opts_t *o, const service_t *sv, const content_cfg_t *ccfg, unsigned ro, FILE *in)
{
    int rc = 0;
    buf_t err = BUF_INIT;
    struct event_base *base = NULL;
    scan_settings_t ss = {0};
    scan_t *scan = NULL;
    scan_ctx_t sctx = {0};
    bool scan_wanted = o->scan && !(ro & RO_NO_MILTERS);
    size_t scan_sent = 0;
    bool scan_skipped = false;

    if (o->scan) {
        if (scan_settings_load(sv->params, &ss, &err) != 0) {
            cli_put(stderr, &err);
            buf_free(&err);
            return 2;
        }
        if (scan_wanted && !ss.scanner) {
            fprintf(stderr, "moat: content: --scan: content_scanner is not set for service %s\n", sv->name);
            scan_settings_free(&ss);
            buf_free(&err);
            return 2;
        }
        if (scan_wanted) {
            signal(SIGPIPE, SIG_IGN);
            base = event_base_new();
            scan = scan_start(ss.scanner, base, scan_cb, &sctx);
        }
    }

    content_env_t env = {
        .queue_id = "(check)",
        .client = o->client,
        .sender = o->sender,
        .rcpt = o->rcpt,
        .proto = "ESMTP",
        .helo = o->helo,
    };
    content_msg_t *m = content_new(ccfg, &env, (ro & RO_NO_HEADER_BODY) ? CONTENT_NO_CHECKS : 0);
    trace_ctx_t tctx = {.trace = o->trace};
    content_set_trace(m, on_event, &tctx);

    reader_t *r = xcalloc(1, sizeof *r);
    r->fp = in;
    buf_t out = BUF_INIT, queued = BUF_INIT;
    bool read_error = false, first = true;
    for (bool last = false; !last;) {
        buf_reset(&out);
        if (read_piece(r)) {
            if (first && r->out.len >= 5 && !memcmp(r->out.data, "From ", 5))
                fprintf(stderr, "moat content: note: the message starts with an mbox \"From \" line: it is no "
                                "header, so the header section ends before it (as in the server); remove it "
                                "to check the headers\n");
            first = false;
            content_feed(m, r->out.data, r->out.len, &out);
        } else {
            read_error = ferror(in) != 0;
            content_finish(m, &out);
            last = true;
        }
        if (o->output)
            buf_append(&queued, out.data, out.len);
        if (scan && out.len) {
            if (ss.size_limit > 0 && scan_sent + out.len > (unsigned long long)ss.size_limit) {
                scan_cancel(scan);
                scan = NULL;
                scan_skipped = true;
            } else {
                scan_write(scan, out.data, out.len);
                scan_sent += out.len;
                event_base_loop(base, EVLOOP_NONBLOCK);
            }
        }
    }
    if (read_error) {
        fprintf(stderr, "moat: content: %s: read error: %s\n", o->file ? o->file : "(stdin)", strerror(errno));
        rc = 2;
        goto done;
    }

    const content_verdict_t *cv = content_verdict(m);
    bool reject = false, defer = false, discard = cv->discard, hold = cv->hold;
    const char *reply = NULL;
    const char *vreply = NULL;
    scan_decision_t dec = {0};
    buf_t top = BUF_INIT;   /* X-Virus-Status, as the session puts it at the top */

    if (o->scan) {
        if (!scan_wanted) {
            printf("scanner: skipped (receive_override_options = no_milters)\n");
        } else if (scan_skipped) {
            printf("scanner: skipped (message larger than content_scanner_size_limit = %lld bytes)\n", ss.size_limit);
        } else if (scan) {
            scan_finish(scan);
            scan = NULL;   /* it frees itself after the callback */
            while (!sctx.done)
                if (event_base_loop(base, EVLOOP_ONCE) != 0)
                    break;
            if (!sctx.done) {
                sctx.done = true;
                sctx.st = SCAN_FAILED;
                sctx.detail = xstrdup("the event loop stopped");
            }
            buf_t line = BUF_INIT;
            const char *d = sctx.detail ? sctx.detail : "";
            buf_puts(&line, "scanner: ");
            buf_puts(&line, sctx.st == SCAN_CLEAN ? "clean" : sctx.st == SCAN_INFECTED ? "infected " : "failed ");
            if (sctx.st != SCAN_CLEAN)
                show_oneline(&line, d);
            buf_putc(&line, '\n');
            cli_put(stdout, &line);
            buf_free(&line);
            /* As the session applies it, to a message the checks let pass. */
            if (cv->outcome == CV_PASS && !discard) {
                scan_decide(&ss, sctx.st, d, &dec);
                hold |= dec.hold;
                discard |= dec.discard;
                buf_append(&top, dec.header.data, dec.header.len);
                if (dec.refuse) {
                    vreply = buf_cstr(&dec.reply);
                    reject = vreply[0] == '5';
                    defer = !reject;
                }
            }
        }
    }

    if (cv->outcome == CV_REJECT) {
        reject = true;
        reply = buf_cstr(&cv->reply);
    } else if (cv->outcome == CV_DEFER) {
        defer = true;
        reply = buf_cstr(&cv->reply);
    } else if (vreply) {
        reply = vreply;
    }
    buf_t res = BUF_INIT;
    bool queue_it = false;
    if (reject || defer) {
        buf_printf(&res, "result: %s ", reject ? "reject" : "defer");
        show_oneline(&res, reply);
        rc = 1;
    } else if (discard) {
        buf_puts(&res, "result: discard");
    } else {
        queue_it = true;
        buf_puts(&res, "result: accept");
        if (hold)
            buf_puts(&res, " hold");
        if (cv->redirect)
            buf_printf(&res, " redirect=%s", cv->redirect);
        if (cv->bcc.len) {
            buf_puts(&res, " bcc=");
            for (const char *p = buf_cstr(&cv->bcc); *p;) {
                size_t n = strcspn(p, "\n");
                buf_append(&res, p, n);
                p += n;
                if (*p)
                    p++;
                if (*p)
                    buf_putc(&res, ',');
            }
        }
        if (cv->filter)
            buf_printf(&res, " filter=%s", cv->filter);
    }
    buf_putc(&res, '\n');
    cli_put(stdout, &res);
    buf_free(&res);
    if (o->output) {
        fputs("output:\n", stdout);
        if (queue_it) {
            cli_put(stdout, &top);
            cli_put(stdout, &queued);
        }
    }
    fflush(stdout);
    scan_decision_free(&dec);
    buf_free(&top);
done:
    if (scan)
        scan_cancel(scan);
    content_free(&m);
    buf_free(&tctx.line);
    buf_free(&r->out);
    free(r);
    buf_free(&out);
    buf_free(&queued);
    free(sctx.detail);
    scan_settings_free(&ss);
    if (base)
        event_base_free(base);
    buf_free(&err);
    return rc;
}

int cmd_content(int argc, char **argv)
{
    enum { O_SERVICE = 256, O_CLIENT, O_HELO, O_SENDER, O_RCPT, O_TRACE, O_SCAN, O_OUTPUT };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"service", required_argument, NULL, O_SERVICE},
        {"client", required_argument, NULL, O_CLIENT},
        {"helo", required_argument, NULL, O_HELO},
        {"sender", required_argument, NULL, O_SENDER},
        {"from", required_argument, NULL, O_SENDER},
        {"rcpt", required_argument, NULL, O_RCPT},
        {"trace", no_argument, NULL, O_TRACE},
        {"scan", no_argument, NULL, O_SCAN},
        {"output", no_argument, NULL, O_OUTPUT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || strcmp(argv[1], "check") != 0) {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
            fputs(usage_text, stdout);
            return 0;
        }
        return usage_error(argc < 2 ? "missing subcommand (check)" : "unknown subcommand (want: check)");
    }
    argc--;
    argv++;
    opts_t o = {.client = "unknown[127.0.0.1]", .helo = "", .sender = "", .rcpt = ""};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': o.dir = optarg; break;
        case O_SERVICE: o.service = optarg; break;
        case O_CLIENT: o.client = optarg; break;
        case O_HELO: o.helo = optarg; break;
        case O_SENDER: o.sender = optarg; break;
        case O_RCPT: o.rcpt = optarg; break;
        case O_TRACE: o.trace = true; break;
        case O_SCAN: o.scan = true; break;
        case O_OUTPUT: o.output = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage_error(NULL);
        }
    }
    if (optind + 1 < argc)
        return usage_error("one message at a time");
    if (optind < argc && strcmp(argv[optind], "-") != 0)
        o.file = argv[optind];
    /* "<a@b>" as well as "a@b"; "<>" is the null sender. */
    char *sender = NULL, *rcpt = NULL;
    size_t sl = strlen(o.sender), rl = strlen(o.rcpt);
    if (sl >= 2 && o.sender[0] == '<' && o.sender[sl - 1] == '>')
        o.sender = sender = xstrndup(o.sender + 1, sl - 2);
    if (rl >= 2 && o.rcpt[0] == '<' && o.rcpt[rl - 1] == '>')
        o.rcpt = rcpt = xstrndup(o.rcpt + 1, rl - 2);

    int rc = 2;
    buf_t err = BUF_INIT, warn = BUF_INIT;
    FILE *in = stdin;
    content_cfg_t *ccfg = NULL;
    config_t *cfg = config_load(o.dir, &err, &warn);
    cli_put(stderr, &warn);
    const service_t *sv = cfg ? cli_smtpd_service(cfg, o.service, "content", &err) : NULL;
    unsigned ro = 0;
    if (sv) {
        const char *const *items;
        size_t n = param_list(sv->params, PARAM_receive_override_options, &items);
        buf_t why = BUF_INIT;
        if (smtpd_receive_override(items, n, &ro, &why) != 0) {
            param_where(sv->params, PARAM_receive_override_options, &err);
            buf_printf(&err, "%s\n", buf_cstr(&why));
        } else {
            ccfg = content_cfg_new(sv->params, param_str(sv->params, PARAM_config_directory), &err);
        }
        buf_free(&why);
    }
    if (!ccfg) {
        cli_put(stderr, &err);
        if (!err.len)
            fputs("moat: content: the configuration did not load\n", stderr);
        goto out;
    }
    if (o.file && !(in = fopen(o.file, "rb"))) {
        fprintf(stderr, "moat: content: %s: %s\n", o.file, strerror(errno));
        in = NULL;
        goto out;
    }
    /* The stage's log lines, formatted as in the mail log, on stderr. */
    log_open(param_str(sv->params, PARAM_syslog_name), param_str(sv->params, PARAM_syslog_facility), "/dev/stderr");
    if (ro & RO_NO_HEADER_BODY)
        fprintf(stderr, "moat: content: note: service %s has receive_override_options = no_header_body_checks: "
                        "nothing is checked\n", sv->name);
    rc = run(&o, sv, ccfg, ro, in);
out:
    if (in && in != stdin)
        fclose(in);
    content_cfg_free(&ccfg);
    config_free(&cfg);
    buf_free(&err);
    buf_free(&warn);
    free(sender);
    free(rcpt);
    return rc;
}
