/*
 * Unit tests for src/content/content.c, the cleanup stage, with real
 * tables (regexp and pcre files in a temporary directory, the seeds'
 * files): every header_checks(5) action and its log line, the edits in
 * the output, the classes (primary, MIME, nested, body), the attachment
 * name copy, body_checks_size_limit and body_checks_decode, the MIME
 * errors, the fast path, and every split of the input into feeds.
 */
#include "harness.h"
#include "scratch.h"

#include "config/config.h"
#include "content/content.h"
#include "core/log.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct cx {
    char dir[64];
    config_t *cfg;
    content_cfg_t *cc;
    buf_t err, out, log, trace;
    char *msgid;
    content_verdict_t v;   /* a copy of the verdict's scalars and strings */
    char reply[512], why[512], bcc[512], redirect[256], filter[256];
} cx_t;

static void cx_init(cx_t *x)
{
    memset(x, 0, sizeof *x);
    scratch_make(x->dir, sizeof x->dir, "content");
}

static void cx_done(cx_t *x)
{
    content_cfg_free(&x->cc);
    config_free(&x->cfg);
    scratch_remove(x->dir);
    buf_free(&x->err);
    buf_free(&x->out);
    buf_free(&x->log);
    buf_free(&x->trace);
    free(x->msgid);
}

static void cx_file(cx_t *x, const char *name, const char *text)
{
    scratch_file(x->dir, name, text);
}

/* main.cf text with "%D" for the fixture directory, "%S" for the seeds' tables. */
static bool cx_load(cx_t *x, const char *main_cf)
{
    content_cfg_free(&x->cc);
    config_free(&x->cfg);
    buf_reset(&x->err);
    /* "%S" first, then "%D" (scratch.h). */
    buf_t seeded = BUF_INIT, text = BUF_INIT;
    char *seeds = realpath("../shared/examples/seed-gateway", NULL);
    for (const char *p = main_cf; *p; p++) {
        if (p[0] == '%' && p[1] == 'S') {
            buf_puts(&seeded, seeds ? seeds : "/nonexistent");
            p++;
        } else {
            buf_putc(&seeded, *p);
        }
    }
    free(seeds);
    scratch_expand(&text, buf_cstr(&seeded), x->dir);
    buf_free(&seeded);
    x->cfg = config_load_text(buf_cstr(&text), NULL, &x->err, NULL);
    buf_free(&text);
    if (!x->cfg)
        return false;
    x->cc = content_cfg_new(config_main(x->cfg), x->dir, &x->err);
    return x->cc != NULL;
}

static void trace_fn(void *arg, const content_event_t *ev)
{
    buf_t *t = arg;
    if (ev->res)
        buf_printf(t, "%s %s: %.*s\n", hbc_class_param(ev->cls), hbc_action_verb(ev->res->act),
                   (int)ev->len, ev->line);
    else
        buf_printf(t, "note %s\n", ev->note);
}

static char log_path[64];

/* Run msg through a fresh content_msg_t, fed in pieces of `split` bytes
 * (0: all at once); the output, the verdict and the log lines land in x. */
static const cx_t *cx_run_flags(cx_t *x, const char *msg, size_t split, unsigned flags)
{
    snprintf(log_path, sizeof log_path, "/tmp/moat-content-log.XXXXXX");
    int fd = mkstemp(log_path);
    if (fd >= 0)
        close(fd);
    log_open("moat", "mail", log_path);
    content_env_t env = {"4ABC", "host[1.2.3.4]", "a@b", "c@d", "ESMTP", "h"};
    content_msg_t *m = content_new(x->cc, &env, flags);
    buf_reset(&x->out);
    buf_reset(&x->trace);
    content_set_trace(m, trace_fn, &x->trace);
    size_t n = strlen(msg);
    if (split == 0)
        split = n ? n : 1;
    for (size_t i = 0; i < n; i += split)
        content_feed(m, msg + i, n - i < split ? n - i : split, &x->out);
    content_finish(m, &x->out);
    const content_verdict_t *v = content_verdict(m);
    x->v.outcome = v->outcome;
    x->v.discard = v->discard;
    x->v.hold = v->hold;
    str_copy(x->reply, buf_cstr(&v->reply), sizeof x->reply);
    str_copy(x->why, buf_cstr(&v->why), sizeof x->why);
    str_copy(x->bcc, buf_cstr(&v->bcc), sizeof x->bcc);
    str_copy(x->redirect, v->redirect ? v->redirect : "", sizeof x->redirect);
    str_copy(x->filter, v->filter ? v->filter : "", sizeof x->filter);
    free(x->msgid);
    x->msgid = content_message_id(m) ? xstrdup(content_message_id(m)) : NULL;
    content_free(&m);
    const char *keep = getenv("MOAT_UNIT_LOG");
    log_open("moat", "mail", keep ? keep : "/dev/null");
    buf_reset(&x->log);
    FILE *fp = fopen(log_path, "r");
    if (fp) {
        char line[4096];
        while (fgets(line, sizeof line, fp)) {
            /* keep what follows "moat/cleanup[pid]: " */
            const char *p = strstr(line, "/cleanup[");
            p = p ? strstr(p, "]: ") : NULL;
            buf_puts(&x->log, p ? p + 3 : line);
        }
        fclose(fp);
    }
    unlink(log_path);
    return x;
}

static const cx_t *cx_run(cx_t *x, const char *msg) { return cx_run_flags(x, msg, 0, 0); }

static bool has(const buf_t *b, const char *s) { return strstr(buf_cstr(b), s) != NULL; }

static const char simple[] = "Received: from x\n"
                             "Message-ID: <id1@example>\n"
                             "Subject: hello\n"
                             "  world\n"
                             "\n"
                             "line one\n"
                             "line two\n";

TEST(content_fast_path_copies)
{
    cx_t x;
    cx_init(&x);
    REQUIRE(cx_load(&x, ""));
    CHECK(!content_cfg_checks(x.cc));
    for (size_t split = 0; split < 20; split++) {
        cx_run_flags(&x, simple, split, 0);
        CHECK_STR(buf_cstr(&x.out), simple);
        CHECK_STR(x.msgid, "id1@example");
        CHECK_INT(x.v.outcome, CV_PASS);
    }
    /* an unterminated last line gets its newline, in the body... */
    cx_run(&x, "Subject: x\n\nno newline");
    CHECK_STR(buf_cstr(&x.out), "Subject: x\n\nno newline\n");
    /* ...and in the headers */
    cx_run(&x, "Subject: x");
    CHECK_STR(buf_cstr(&x.out), "Subject: x\n");
    cx_run(&x, "");
    CHECK_STR(buf_cstr(&x.out), "");
    CHECK(x.msgid == NULL);
    cx_done(&x);
}

TEST(content_reject_header_and_log)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc", "/^Subject: hello +world$/ REJECT go away\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\n"));
    CHECK(content_cfg_checks(x.cc));
    for (size_t split = 0; split < 12; split++) {
        cx_run_flags(&x, simple, split, 0);
        CHECK_INT(x.v.outcome, CV_REJECT);
        CHECK_STR(x.reply, "550 5.7.1 go away");
    }
    CHECK(has(&x.log, "4ABC: reject: header Subject: hello  world from host[1.2.3.4]; from=<a@b> "
                      "to=<c@d> proto=ESMTP helo=<h>: 5.7.1 go away\n"));
    /* unfolded: the line break goes, the white space stays */
    cx_file(&x, "hc", "/^Subject: hello  world$/ REJECT\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\n"));
    cx_run(&x, simple);
    CHECK_INT(x.v.outcome, CV_REJECT);
    CHECK_STR(x.reply, "550 5.7.1 message content rejected");
    CHECK(has(&x.log, "4ABC: reject: header Subject: hello  world from host[1.2.3.4]; from=<a@b> "
                      "to=<c@d> proto=ESMTP helo=<h>: 5.7.1 message content rejected\n"));
    CHECK(strstr(x.why, "header_checks regexp:") != NULL);
    CHECK(strstr(x.why, " line 1") != NULL);
    /* the output is still written */
    CHECK_STR(buf_cstr(&x.out), simple);
    cx_done(&x);
}

TEST(content_reject_codes_and_defer)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc",
            "/^Subject: a/ 554 5.7.0 no a\n"
            "/^Subject: b/ DEFER try later\n"
            "/^Subject: c/ 450 busy\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\n"));
    cx_run(&x, "Subject: a\n\n");
    CHECK_INT(x.v.outcome, CV_REJECT);
    CHECK_STR(x.reply, "554 5.7.0 no a");
    cx_run(&x, "Subject: b\n\n");
    CHECK_INT(x.v.outcome, CV_DEFER);
    CHECK(x.reply[0] == '4');
    CHECK(strstr(x.reply, "try later") != NULL);
    cx_run(&x, "Subject: c\n\n");
    CHECK_INT(x.v.outcome, CV_DEFER);
    CHECK(strncmp(x.reply, "450 4.", 6) == 0);
    /* the first reject decides, the later ones are not even looked at */
    cx_run(&x, "Subject: a\nSubject: b\n\n");
    CHECK_STR(x.reply, "554 5.7.0 no a");
    CHECK(!has(&x.log, "try later"));
    cx_done(&x);
}

TEST(content_header_edits)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc",
            "/^X-Drop:/ IGNORE\n"
            "/^X-Old: (.*)/ REPLACE X-New: $1\n"
            "/^X-Mark:/ PREPEND X-Marked: yes\n"
            "/^X-Id:/ REPLACE Message-ID: <new@id>\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\n"));
    cx_run(&x, "X-Drop: a\n b\n c\nX-Old: v\n w\nX-Mark: 1\nX-Id: z\n\nbody\n");
    CHECK_STR(buf_cstr(&x.out), "X-New: v w\nX-Marked: yes\nX-Mark: 1\nMessage-ID: <new@id>\n\nbody\n");
    CHECK_STR(x.msgid, "new@id");
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK(has(&x.log, "4ABC: replace: header X-Old: v w from host[1.2.3.4]; from=<a@b> to=<c@d> "
                      "proto=ESMTP helo=<h>: X-New: v w\n"));
    CHECK(has(&x.log, "4ABC: prepend: header X-Mark: 1 from"));
    CHECK(!has(&x.log, "X-Drop"));  /* Postfix does not log IGNORE */
    CHECK(has(&x.trace, "header_checks ignore: X-Drop: a b c\n"));
    cx_done(&x);
}

TEST(content_body_edits_and_limit)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "bc",
            "/^drop/ IGNORE\n"
            "/^old (.*)/ REPLACE new $1\n"
            "/^mark/ PREPEND marked:\n"
            "/^late/ REJECT too late\n");
    REQUIRE(cx_load(&x, "body_checks = regexp:%D/bc\nbody_checks_size_limit = 30\n"));
    cx_run(&x, "Subject: s\n\ndrop me\nold x\nmark\nkeep\n0123456789012345678901234567890\nlate\n");
    CHECK_STR(buf_cstr(&x.out),
              "Subject: s\n\nnew x\nmarked:\nmark\nkeep\n0123456789012345678901234567890\nlate\n");
    /* "late" is past body_checks_size_limit */
    CHECK_INT(x.v.outcome, CV_PASS);
    /* each part counts from its own start */
    cx_run(&x, "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n"
               "0123456789012345678901234567890\nlate\n--b\n\nlate\n--b--\n");
    CHECK_INT(x.v.outcome, CV_REJECT);
    CHECK(has(&x.log, "4ABC: reject: body late from host[1.2.3.4]; from=<a@b> to=<c@d> proto=ESMTP "
                      "helo=<h>: 5.7.1 too late\n"));
    cx_done(&x);
}

TEST(content_message_actions)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc",
            "/^X-Hold:/ HOLD held for review\n"
            "/^X-Redirect: (.*)/ REDIRECT $1\n"
            "/^X-Bcc: (.*)/ BCC $1\n"
            "/^X-Filter: (.*)/ FILTER $1\n"
            "/^X-Warn:/ WARN watch this\n"
            "/^X-Info:/ INFO fyi\n"
            "/^X-Discard:/ DISCARD dropped\n"
            "/^X-Reject:/ REJECT\n"
            "/^X-Ok:/ OK\n"
            "/^X-Dunno:/ DUNNO\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\n"));
    cx_run(&x, "X-Hold: 1\nX-Hold: 2\nX-Bcc: b1@x\nX-Bcc: b2@x\nX-Filter: smtp:[a]\n"
               "X-Filter: smtp:[b]\nX-Warn: w\nX-Info: i\nX-Ok: k\nX-Dunno: d\n\nbody\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK(x.v.hold);
    CHECK_STR(x.bcc, "b1@x\nb2@x\n");
    CHECK_STR(x.filter, "smtp:[b]");
    CHECK(has(&x.log, "4ABC: hold: header X-Hold: 1 from host[1.2.3.4]; from=<a@b> to=<c@d> "
                      "proto=ESMTP helo=<h>: held for review\n"));
    CHECK(!has(&x.log, "X-Hold: 2"));  /* logged once, as Postfix */
    CHECK(has(&x.log, "4ABC: warning: header X-Warn: w from host[1.2.3.4]; from=<a@b> to=<c@d> "
                      "proto=ESMTP helo=<h>: watch this\n"));
    CHECK(has(&x.log, "4ABC: info: header X-Info: i from"));
    CHECK(has(&x.log, "4ABC: bcc: header X-Bcc: b2@x from"));
    CHECK(has(&x.log, "4ABC: filter: header X-Filter: smtp:[b] from"));
    CHECK(!has(&x.log, "X-Ok"));
    /* DISCARD and REDIRECT stop the checks */
    cx_run(&x, "X-Discard: 1\nX-Reject: 1\n\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK(x.v.discard);
    CHECK(has(&x.log, "4ABC: discard: header X-Discard: 1 from"));
    cx_run(&x, "X-Redirect: r@x\nX-Reject: 1\n\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK_STR(x.redirect, "r@x");
    CHECK(has(&x.log, "4ABC: redirect: header X-Redirect: r@x from"));
    cx_done(&x);
}

TEST(content_classes)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc", "/^Subject: top/ WARN h\n/^Content-Type: message\\/delivery-status/ REJECT no DSN\n");
    cx_file(&x, "mc", "/^X-Part:/ WARN m\n/^Content-Type:.*name=\"?.*\\.exe\"?$/ REJECT no exe\n");
    cx_file(&x, "nc", "/^Subject: inner/ WARN n\n");
    cx_file(&x, "bc", "/^inner body/ WARN b\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\nmime_header_checks = regexp:%D/mc\n"
                        "nested_header_checks = regexp:%D/nc\nbody_checks = regexp:%D/bc\n"));
    const char *msg = "Subject: top\n"
                      "Content-Type: multipart/mixed; boundary=b\n\n"
                      "--b\nX-Part: 1\nSubject: top\nContent-Type: message/rfc822\n\n"
                      "Subject: inner\nX-Part: 2\n\ninner body\n"
                      "--b--\n";
    cx_run(&x, msg);
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK_STR(buf_cstr(&x.trace), "header_checks warning: Subject: top\n"
                                  "mime_header_checks warning: X-Part: 1\n"
                                  "nested_header_checks warning: Subject: inner\n"
                                  "body_checks warning: inner body\n");
    /* A primary Content-Type: header_checks, then mime_header_checks. */
    cx_run(&x, "Content-Type: message/delivery-status; x\n\n");
    CHECK_STR(x.reply, "550 5.7.1 no DSN");
    cx_run(&x, "Content-Type: application/x; name=a.exe\n\n");
    CHECK_STR(x.reply, "550 5.7.1 no exe");
    CHECK(strstr(x.why, "mime_header_checks") == x.why);
    cx_done(&x);
}

TEST(content_attachment_name_copy)
{
    cx_t x;
    cx_init(&x);
    REQUIRE(access("../shared/examples/seed-gateway/mime_header_checks", R_OK) == 0);
    REQUIRE(cx_load(&x, "mime_header_checks = regexp:%S/mime_header_checks\n"));
    const char *plain = "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                        "Content-Disposition: attachment; filename=\"virus.exe\"\n\nx\n--b--\n";
    cx_run(&x, plain);
    CHECK_STR(x.reply, "550 5.7.1 Attachment type not allowed");
    /* RFC 2231 */
    cx_run(&x, "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
               "Content-Disposition: attachment;\n filename*0*=UTF-8''vir%75s;\n filename*1=\".e\";\n"
               " filename*2*=xe\n\nx\n--b--\n");
    CHECK_INT(x.v.outcome, CV_REJECT);
    CHECK_STR(x.reply, "550 5.7.1 Attachment type not allowed");
    CHECK(has(&x.log, "4ABC: reject: header Content-Disposition: attachment; filename=\"virus.exe\" "
                      "from host[1.2.3.4];"));
    /* RFC 2047 */
    cx_run(&x, "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
               "Content-Type: application/octet-stream;\n name=\"=?UTF-8?B?dmlydXMuc2Ny?=\"\n\nx\n--b--\n");
    CHECK_INT(x.v.outcome, CV_REJECT);
    /* an encoded harmless name passes */
    cx_run(&x, "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
               "Content-Type: application/octet-stream;\n name=\"=?UTF-8?Q?report=2Epdf?=\"\n\nx\n--b--\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    cx_done(&x);
}

TEST(content_seed_rules)
{
    cx_t x;
    cx_init(&x);
    REQUIRE(cx_load(&x, "header_checks = regexp:%S/header_checks\n"
                        "mime_header_checks = regexp:%S/mime_header_checks\n"
                        "body_checks = pcre:%S/body_checks\n"));
    cx_run(&x, "To: list-outgoing@example.com\n\n");
    CHECK_STR(x.reply, "550 5.7.1 Use list@example.com instead of the outgoing address");
    cx_run(&x, "To: owner-list-outgoing@example.com\n\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    cx_run(&x, "To: a%b@c@example.com\n\n");
    CHECK_STR(x.reply, "550 5.7.1 Directed routing rejected");
    cx_run(&x, "Content-Type: multipart/report; report-type=delivery-status;\n boundary=x\n\n");
    CHECK_STR(x.reply, "550 5.7.1 no third-party DSNs");
    cx_run(&x, "Subject: s\n\nCall 4-9-5 (74o now\n");
    CHECK_STR(x.reply, "550 5.7.1 Spam advertising detected");
    cx_run(&x, "Subject: s\n\nnothing to see\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    cx_done(&x);
}

TEST(content_body_decode)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "bc", "/^buy cheap pills$/ REJECT spam\n");
    /* "hello\r\nbuy cheap pills\r\n" */
    const char *msg = "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                      "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
                      "aGVsbG8NCmJ1eSBjaGVh\ncCBwaWxscw0K\n--b\n"
                      "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
                      "ok=\n\n--b--\n";
    REQUIRE(cx_load(&x, "body_checks = regexp:%D/bc\n"));
    cx_run(&x, msg);
    CHECK_INT(x.v.outcome, CV_PASS);
    REQUIRE(cx_load(&x, "body_checks = regexp:%D/bc\nbody_checks_decode = yes\n"));
    cx_run(&x, msg);
    CHECK_INT(x.v.outcome, CV_REJECT);
    CHECK_STR(x.reply, "550 5.7.1 spam");
    CHECK(has(&x.log, "4ABC: reject: body buy cheap pills from"));
    CHECK(strstr(buf_cstr(&x.out), "aGVsbG8NCmJ1eSBjaGVh\ncCBwaWxscw0K\n") != NULL);
    /* quoted-printable with a soft break */
    cx_run(&x, "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
               "buy che=\nap pills\n");
    CHECK_INT(x.v.outcome, CV_REJECT);
    /* a non-text part is not decoded */
    cx_run(&x, "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
               "YnV5IGNoZWFwIHBpbGxz\n");
    CHECK_INT(x.v.outcome, CV_PASS);
    cx_done(&x);
}

TEST(content_mime_errors)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc", "/^X-Never:/ REJECT\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\nmime_nesting_limit = 2\n"));
    const char *deep = "Content-Type: multipart/mixed; boundary=a\n\n--a\n"
                       "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                       "Content-Type: multipart/mixed; boundary=c\n\n--c\n\nx\n";
    cx_run(&x, deep);
    CHECK_INT(x.v.outcome, CV_REJECT);
    CHECK_STR(x.reply, "550 5.6.0 MIME nesting exceeds safety limit");
    CHECK(has(&x.log, "4ABC: reject: mime-error MIME nesting exceeds safety limit: Content-Type: "
                      "multipart/mixed; boundary=c from host[1.2.3.4]; from=<a@b> to=<c@d>\n"));
    CHECK(has(&x.trace, "note MIME nesting exceeds safety limit\n"));
    /* without checks the message passes */
    REQUIRE(cx_load(&x, "mime_nesting_limit = 2\n"));
    cx_run(&x, deep);
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK_STR(buf_cstr(&x.out), deep);
    /* strict_mime_encoding_domain rejects on its own */
    REQUIRE(cx_load(&x, "strict_mime_encoding_domain = yes\n"));
    const char *bad = "Content-Type: multipart/mixed; boundary=a\nContent-Transfer-Encoding: base64\n\n"
                      "--a\n\nx\n--a--\n";
    cx_run(&x, bad);
    CHECK_STR(x.reply, "550 5.6.0 invalid message/* or multipart/* encoding domain");
    CHECK_STR(buf_cstr(&x.out), bad);
    /* receive_override_options = no_header_body_checks: nothing is checked */
    cx_run_flags(&x, bad, 0, CONTENT_NO_CHECKS);
    CHECK_INT(x.v.outcome, CV_PASS);
    cx_done(&x);
}

TEST(content_no_checks_flag)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc", "/^Subject:/ REJECT\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\n"));
    cx_run_flags(&x, simple, 3, CONTENT_NO_CHECKS);
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK_STR(buf_cstr(&x.out), simple);
    CHECK_STR(x.msgid, "id1@example");
    cx_done(&x);
}

TEST(content_long_lines_and_big_header)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "bc", "/^b+$/ WARN long\n");
    REQUIRE(cx_load(&x, "body_checks = regexp:%D/bc\nline_length_limit = 512\nheader_size_limit = 1024\n"));
    buf_t msg = BUF_INIT;
    buf_puts(&msg, "Subject: ");
    for (int i = 0; i < 100000; i++)
        buf_putc(&msg, 'a');
    buf_puts(&msg, "\nTo: x\n\n");
    for (int i = 0; i < 1500; i++)
        buf_putc(&msg, 'b');
    buf_puts(&msg, "\nend\n");
    for (size_t split = 0; split < 1200; split += 199) {
        cx_run_flags(&x, buf_cstr(&msg), split, 0);
        /* the header is cut to header_size_limit, the body line is kept whole */
        const char *out = buf_cstr(&x.out);
        const char *to = strstr(out, "\nTo: x\n\n");
        REQUIRE(to != NULL);
        CHECK_INT(to - out, 1024);
        CHECK_INT(strlen(to + 8), 1500 + 5);
        /* the long line is checked in three pieces */
        CHECK_INT(x.v.outcome, CV_PASS);
        const char *t = buf_cstr(&x.trace);
        int warns = 0;
        for (const char *p = t; (p = strstr(p, "body_checks warning:")); p++)
            warns++;
        CHECK_INT(warns, 3);
        CHECK(has(&x.trace, "note header truncated at header_size_limit\n"));
    }
    CHECK(has(&x.log, "warning: mime-error message header length exceeds safety limit"));
    buf_free(&msg);
    cx_done(&x);
}

TEST(content_nul_and_8bit)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "bc", "/tail/ REJECT\n");
    REQUIRE(cx_load(&x, "body_checks = regexp:%D/bc\n"));
    static const char msg[] = "Subject: \xff\xfe\n\nnul\0byte\n\xc3\x28 tail\n";
    content_env_t env = {"Q", "h[1]", "", "", "", ""};
    content_msg_t *m = content_new(x.cc, &env, 0);
    buf_t out = BUF_INIT;
    content_feed(m, msg, sizeof msg - 1, &out);
    content_finish(m, &out);
    CHECK_INT(out.len, sizeof msg - 1);
    CHECK(memcmp(out.data, msg, sizeof msg - 1) == 0);
    CHECK_INT(content_verdict(m)->outcome, CV_REJECT);
    content_free(&m);
    buf_free(&out);
    cx_done(&x);
}

/* Output, verdict and log do not depend on how the content is fed. */
TEST(content_every_split_same_result)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "hc", "/^X-Drop:/ IGNORE\n/^X-Rep: (.*)/ REPLACE X-New: $1\n/^Subject:/ PREPEND X-Seen: 1\n");
    cx_file(&x, "bc", "/^drop/ IGNORE\n/^rep (.*)/ REPLACE new $1\n/^pre/ PREPEND before\n/^b{500}/ WARN long\n/^hidden$/ WARN decoded\n");
    REQUIRE(cx_load(&x, "header_checks = regexp:%D/hc\nbody_checks = regexp:%D/bc\n"
                        "line_length_limit = 512\nbody_checks_decode = yes\n"));
    buf_t msg = BUF_INIT;
    buf_puts(&msg, "X-Drop: 1\n 2\nSubject: s\nX-Rep: a\n\tb\n"
                   "Content-Type: multipart/mixed; boundary=\"==b\"\n\npro\n--==b\n"
                   "Content-Type: text/plain\n\n"
                   "drop me\nrep x\npre\n--==b\n"
                   "Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n"
                   "hid=\nden\nrep y\n--==b\n\n");
    for (int i = 0; i < 1300; i++)
        buf_putc(&msg, 'b');
    buf_puts(&msg, "\ndrop\n--==b--\nepilog without newline");
    cx_run(&x, buf_cstr(&msg));
    char *ref_out = xstrdup(buf_cstr(&x.out));
    char *ref_log = xstrdup(buf_cstr(&x.log));
    CHECK(strstr(ref_out, "X-Seen: 1\nSubject: s\nX-New: a\tb\n") == ref_out);
    CHECK(strstr(ref_out, "\n\nnew x\nbefore\npre\n") != NULL);
    /* decoded lines are checked, but not edited */
    CHECK(strstr(ref_out, "\nhid=\nden\nrep y\n") != NULL);
    CHECK(has(&x.log, "warning: body hidden from"));
    CHECK(strstr(ref_out, "bbbb\n--==b--\nepilog without newline\n") != NULL);
    CHECK(strstr(ref_out, "\ndrop\n") == NULL);
    CHECK(has(&x.log, "warning: body bbbb"));
    for (size_t split = 1; split < 90; split += 7) {
        cx_run_flags(&x, buf_cstr(&msg), split, 0);
        CHECK_STR(buf_cstr(&x.out), ref_out);
        CHECK_STR(buf_cstr(&x.log), ref_log);
    }
    free(ref_out);
    free(ref_log);
    buf_free(&msg);
    cx_done(&x);
}

/* What bad input gets: bounded work, a clean verdict. */
TEST(content_hostile_shapes)
{
    cx_t x;
    cx_init(&x);
    cx_file(&x, "mc", "/name=.*\\.exe/ REJECT exe\n");
    REQUIRE(cx_load(&x, "mime_header_checks = regexp:%D/mc\n"));
    buf_t msg = BUF_INIT;
    /* 10,000 parts, the last one bad */
    buf_puts(&msg, "Content-Type: multipart/mixed; boundary=p\n\n");
    for (int i = 0; i < 10000; i++)
        buf_printf(&msg, "--p\nContent-Type: text/plain; name=f%d.txt\n\nx\n", i);
    buf_puts(&msg, "--p\nContent-Type: application/x; name=last.exe\n\nx\n--p--\n");
    cx_run(&x, buf_cstr(&msg));
    CHECK_STR(x.reply, "550 5.7.1 exe");
    /* 1,000 levels: the nesting error (checks are configured) */
    buf_reset(&msg);
    for (int i = 0; i < 1000; i++)
        buf_printf(&msg, "Content-Type: multipart/mixed; boundary=l%d\n\n--l%d\n", i, i);
    cx_run(&x, buf_cstr(&msg));
    CHECK_STR(x.reply, "550 5.6.0 MIME nesting exceeds safety limit");
    CHECK_INT(x.out.len, msg.len);
    /* a 10 MB header: cut to header_size_limit, the message passes */
    buf_reset(&msg);
    buf_puts(&msg, "X-Big: ");
    for (int i = 0; i < 10 * 1024 * 1024 / 64; i++)
        buf_puts(&msg, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    buf_puts(&msg, "\nSubject: after\n\nbody\n");
    cx_run_flags(&x, buf_cstr(&msg), 65536, 0);
    CHECK_INT(x.v.outcome, CV_PASS);
    CHECK_INT(x.out.len, 102400 + strlen("\nSubject: after\n\nbody\n"));
    buf_free(&msg);
    cx_done(&x);
}
