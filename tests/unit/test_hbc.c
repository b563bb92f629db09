/*
 * Tests of src/content/hbc.c: the four classes and their tables, every
 * header_checks(5) action with its code, enhanced code and text, first
 * table / first match, $N substitution, malformed actions (a warning with
 * file:line, the line passes), a table that fails at run time, and the
 * seeds' rules (shared/examples/seed-gateway, or $MOAT_SHARED) on the
 * lines the issue names.
 */
#include "harness.h"
#include "scratch.h"

#include "config/config.h"
#include "content/hbc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "maps/maps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <unistd.h>

typedef struct {
    char dir[64];
    config_t *cfg;
    hbc_t *h;
    hbc_result_t r;
    buf_t err;
} hx_t;

static void hx_write(const hx_t *x, const char *name, const char *text)
{
    scratch_file(x->dir, name, text);
}

static void hx_init(hx_t *x)
{
    memset(x, 0, sizeof *x);
    scratch_make(x->dir, sizeof x->dir, "hbc");
    hbc_result_init(&x->r);
}

/* Load main_cf (with "%D" replaced by the scratch directory) and open the
 * checks; NULL (with x->err) on error. */
static hbc_t *hx_open(hx_t *x, const char *main_cf)
{
    buf_t text = BUF_INIT;
    scratch_expand(&text, main_cf, x->dir);
    buf_reset(&x->err);
    x->cfg = config_load_text(buf_cstr(&text), NULL, &x->err, NULL);
    buf_free(&text);
    if (!x->cfg)
        return NULL;
    x->h = hbc_new(config_main(x->cfg), x->dir, &x->err);
    return x->h;
}

static void hx_done(hx_t *x)
{
    hbc_free(&x->h);
    config_free(&x->cfg);
    hbc_result_free(&x->r);
    buf_free(&x->err);
    scratch_remove(x->dir);
}

static hbc_action hx_check(hx_t *x, hbc_class c, const char *line)
{
    return hbc_check(x->h, c, line, strlen(line), &x->r);
}

/* Log lines written while a test runs, via a scratch maillog file. */
static char hbc_log_path[64];

static void hbc_log_start(void)
{
    snprintf(hbc_log_path, sizeof hbc_log_path, "/tmp/moat-hbc-log.XXXXXX");
    int fd = mkstemp(hbc_log_path);
    if (fd >= 0)
        close(fd);
    log_open("moat", "mail", hbc_log_path);
}

static void hbc_log_end(buf_t *out)
{
    const char *keep = getenv("MOAT_UNIT_LOG");
    log_open("moat", "mail", keep ? keep : "/dev/null");
    FILE *fp = fopen(hbc_log_path, "r");
    if (fp) {
        char line[2048];
        while (fgets(line, sizeof line, fp))
            buf_puts(out, line);
        fclose(fp);
    }
    unlink(hbc_log_path);
}

static const char every_action[] =
    "/^Subject: r1$/ REJECT\n"                                   /* 1 */
    "/^Subject: r2$/ REJECT go away\n"                           /* 2 */
    "/^Subject: r3$/ REJECT 5.7.0 not here\n"                    /* 3 */
    "/^Subject: r4$/ REJECT 4.7.0 come back later\n"             /* 4 */
    "/^Subject: d1$/ DEFER\n"                                    /* 5 */
    "/^Subject: d2$/ DEFER 4.3.5 busy\n"                         /* 6 */
    "/^Subject: n1$/ 554 5.7.9 nope\n"                           /* 7 */
    "/^Subject: n2$/ 450 try later\n"                            /* 8 */
    "/^Subject: n3$/ 521 no thanks\n"                            /* 9 */
    "/^Subject: w1$/ WARN watch this\n"                          /* 10 */
    "/^Subject: w2$/ WARN\n"                                     /* 11 */
    "/^Subject: i1$/ INFO noted\n"                               /* 12 */
    "/^Subject: x1$/ DISCARD gone\n"                             /* 13 */
    "/^Subject: h1$/ HOLD 5.7.1 quarantine\n"                    /* 14 */
    "/^Subject: g1$/ IGNORE\n"                                   /* 15 */
    "/^Subject: p1$/ REPLACE X-Subject: clean\n"                 /* 16 */
    "/^Subject: p2$/ PREPEND X-Flag: yes\n"                      /* 17 */
    "/^Subject: t1$/ REDIRECT spam@example.test\n"               /* 18 */
    "/^Subject: b1$/ BCC audit@example.test\n"                   /* 19 */
    "/^Subject: f1$/ FILTER smtp:[127.0.0.1]:10025\n"            /* 20 */
    "/^Subject: u1$/ DUNNO\n"                                    /* 21 */
    "/^Subject: o1$/ OK\n"                                       /* 22 */
    "/^Subject: l1$/ reject lower case\n"                        /* 23 */
    "/^Subject: l2$/ Replace X-Lower: yes\n"                     /* 24 */
    "/^Subject: r5$/ REJECT 4.5 percent off is spam\n"           /* 25 */
    ;

TEST(hbc_every_action)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "hc", every_action);
    REQUIRE(hx_open(&x, "header_checks = regexp:%D/hc\n") != NULL);
    hbc_result_t *r = &x.r;

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: r1"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "message content rejected");
    CHECK_INT(r->origin.line, 1);
    REQUIRE(r->origin.file != NULL);
    CHECK(strstr(r->origin.file, "/hc") != NULL);
    REQUIRE(r->table != NULL);
    CHECK(!strncmp(r->table, "regexp:", 7));

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: r2"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "go away");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: r3"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.0");
    CHECK_STR(buf_cstr(&r->text), "not here");

    /* Postfix's cleanup: a 4.x.x code in a REJECT text defers. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: r4"), HBC_DEFER);
    CHECK_INT(r->code, 451);
    CHECK_STR(r->dsn, "4.7.0");
    CHECK_STR(buf_cstr(&r->text), "come back later");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: d1"), HBC_DEFER);
    CHECK_INT(r->code, 451);
    CHECK_STR(r->dsn, "4.7.1");
    CHECK_STR(buf_cstr(&r->text), "service unavailable");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: d2"), HBC_DEFER);
    CHECK_INT(r->code, 451);
    CHECK_STR(r->dsn, "4.3.5");
    CHECK_STR(buf_cstr(&r->text), "busy");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: n1"), HBC_REJECT);
    CHECK_INT(r->code, 554);
    CHECK_STR(r->dsn, "5.7.9");
    CHECK_STR(buf_cstr(&r->text), "nope");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: n2"), HBC_DEFER);
    CHECK_INT(r->code, 450);
    CHECK_STR(r->dsn, "4.7.1");
    CHECK_STR(buf_cstr(&r->text), "try later");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: n3"), HBC_REJECT);
    CHECK_INT(r->code, 521);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "no thanks");

    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: w1"), HBC_WARN);
    CHECK_STR(buf_cstr(&r->text), "watch this");
    CHECK_INT(r->code, 0);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: w2"), HBC_WARN);
    CHECK_STR(buf_cstr(&r->text), "");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: i1"), HBC_INFO);
    CHECK_STR(buf_cstr(&r->text), "noted");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: x1"), HBC_DISCARD);
    CHECK_STR(buf_cstr(&r->text), "gone");
    /* A note is kept as written, enhanced-code look-alike and all. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: h1"), HBC_HOLD);
    CHECK_STR(buf_cstr(&r->text), "5.7.1 quarantine");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: g1"), HBC_IGNORE);
    CHECK_STR(buf_cstr(&r->text), "");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: p1"), HBC_REPLACE);
    CHECK_STR(buf_cstr(&r->text), "X-Subject: clean");
    CHECK_INT(r->origin.line, 16);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: p2"), HBC_PREPEND);
    CHECK_STR(buf_cstr(&r->text), "X-Flag: yes");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: t1"), HBC_REDIRECT);
    CHECK_STR(buf_cstr(&r->text), "spam@example.test");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: b1"), HBC_BCC);
    CHECK_STR(buf_cstr(&r->text), "audit@example.test");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: f1"), HBC_FILTER);
    CHECK_STR(buf_cstr(&r->text), "smtp:[127.0.0.1]:10025");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: u1"), HBC_NONE);
    CHECK_INT(r->origin.line, 21);   /* matched, and says where */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: o1"), HBC_NONE);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: l1"), HBC_REJECT);
    CHECK_STR(buf_cstr(&r->text), "lower case");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: l2"), HBC_REPLACE);
    CHECK_STR(buf_cstr(&r->text), "X-Lower: yes");

    /* Only a real enhanced code turns a REJECT into a deferral. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: r5"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "4.5 percent off is spam");

    /* No match: nothing is left over from the last result. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: nothing"), HBC_NONE);
    CHECK_STR(buf_cstr(&r->text), "");
    CHECK_INT(r->code, 0);
    CHECK_STR(r->dsn, "");
    CHECK(r->table == NULL);
    CHECK(r->origin.file == NULL);
    hx_done(&x);
}

TEST(hbc_action_verbs_and_class_names)
{
    CHECK_STR(hbc_action_verb(HBC_REJECT), "reject");
    CHECK_STR(hbc_action_verb(HBC_DEFER), "reject");
    CHECK_STR(hbc_action_verb(HBC_TEMPFAIL), "reject");
    CHECK_STR(hbc_action_verb(HBC_WARN), "warning");
    CHECK_STR(hbc_action_verb(HBC_INFO), "info");
    CHECK_STR(hbc_action_verb(HBC_DISCARD), "discard");
    CHECK_STR(hbc_action_verb(HBC_HOLD), "hold");
    CHECK_STR(hbc_action_verb(HBC_IGNORE), "ignore");
    CHECK_STR(hbc_action_verb(HBC_REPLACE), "replace");
    CHECK_STR(hbc_action_verb(HBC_PREPEND), "prepend");
    CHECK_STR(hbc_action_verb(HBC_REDIRECT), "redirect");
    CHECK_STR(hbc_action_verb(HBC_BCC), "bcc");
    CHECK_STR(hbc_action_verb(HBC_FILTER), "filter");
    CHECK_STR(hbc_class_param(HBC_HEADER), "header_checks");
    CHECK_STR(hbc_class_param(HBC_MIME), "mime_header_checks");
    CHECK_STR(hbc_class_param(HBC_NESTED), "nested_header_checks");
    CHECK_STR(hbc_class_param(HBC_BODY), "body_checks");
}

/* Malformed actions: a warning naming file and line, and the line
 * passes (Postfix's cleanup does the same). */
TEST(hbc_bad_actions_warn_and_pass)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "hc",
             "/^X-A:/ FROBNICATE now\n"          /* 1 */
             "/^X-B:/ REPLACE no colon here\n"   /* 2 */
             "/^X-C:/ REPLACE\n"                 /* 3 */
             "/^X-D:/ PREPEND\n"                 /* 4 */
             "/^X-E:/ REDIRECT nobody\n"         /* 5 */
             "/^X-F:/ FILTER nocolon\n"          /* 6 */
             "/^X-G:/ DEFER 5.7.1 mismatch\n"    /* 7 */
             "/^X-H:/ 250 fine\n"                /* 8 */
             "/^X-I:/ DEFER_IF_PERMIT x\n"       /* 9 */
             "/^X-J:/ PREPEND not a header\n");  /* 10 */
    REQUIRE(hx_open(&x, "header_checks = regexp:%D/hc\n") != NULL);
    buf_t log = BUF_INIT;
    hbc_log_start();
    static const char *const lines[] = {"X-A: 1", "X-B: 1", "X-C: 1", "X-D: 1", "X-E: 1",
                                        "X-F: 1", "X-G: 1", "X-H: 1", "X-I: 1", "X-J: 1"};
    for (size_t i = 0; i < ARRAY_LEN(lines); i++) {
        CHECK_INT(hx_check(&x, HBC_HEADER, lines[i]), HBC_NONE);
        CHECK_INT(x.r.origin.line, (int)i + 1);
        CHECK_STR(buf_cstr(&x.r.text), "");
    }
    hbc_log_end(&log);
    const char *l = buf_cstr(&log);
    CHECK(strstr(l, "cleanup") != NULL);
    CHECK(strstr(l, "warning: ") != NULL);
    CHECK(strstr(l, "/hc, line 1: unknown command in header_checks: FROBNICATE now") != NULL);
    CHECK(strstr(l, "/hc, line 2: ") != NULL);
    CHECK(strstr(l, "/hc, line 5: ") != NULL);
    CHECK(strstr(l, "/hc, line 10: ") != NULL);
    for (int i = 1; i <= 10; i++) {
        char want[32];
        snprintf(want, sizeof want, "/hc, line %d: ", i);
        CHECK(strstr(l, want) != NULL);
    }
    buf_free(&log);

    /* Body lines need no header form: PREPEND and REPLACE take any text. */
    hx_done(&x);
    hx_init(&x);
    hx_write(&x, "bc",
             "/^old text/ REPLACE new text\n"
             "/^marker/ PREPEND a line before\n"
             "/^drop me/ IGNORE\n");
    REQUIRE(hx_open(&x, "body_checks = regexp:%D/bc\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_BODY, "old text here"), HBC_REPLACE);
    CHECK_STR(buf_cstr(&x.r.text), "new text");
    CHECK_INT(hx_check(&x, HBC_BODY, "marker"), HBC_PREPEND);
    CHECK_STR(buf_cstr(&x.r.text), "a line before");
    CHECK_INT(hx_check(&x, HBC_BODY, "drop me"), HBC_IGNORE);
    hx_done(&x);
}

TEST(hbc_classes_and_defaults)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "hc", "/^Subject: spam/ REJECT header\n");
    hx_write(&x, "bc", "/buy now/ REJECT body\n");
    /* mime_ and nested_header_checks default to $header_checks. */
    REQUIRE(hx_open(&x, "header_checks = regexp:%D/hc\nbody_checks = regexp:%D/bc\n") != NULL);
    for (int c = 0; c < HBC__COUNT; c++)
        CHECK(hbc_on(x.h, (hbc_class)c));
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: spam"), HBC_REJECT);
    CHECK_STR(buf_cstr(&x.r.text), "header");
    CHECK_INT(hx_check(&x, HBC_MIME, "Subject: spam"), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_NESTED, "Subject: spam"), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_BODY, "Subject: spam"), HBC_NONE);
    CHECK_INT(hx_check(&x, HBC_BODY, "please buy now"), HBC_REJECT);
    CHECK_STR(buf_cstr(&x.r.text), "body");
    CHECK_INT(hx_check(&x, HBC_HEADER, "please buy now"), HBC_NONE);
    hx_done(&x);

    /* Each class its own tables; an empty list turns a class off. */
    hx_init(&x);
    hx_write(&x, "hc", "/^X-Any:/ WARN primary\n");
    hx_write(&x, "mhc", "/^X-Any:/ WARN mime\n");
    hx_write(&x, "nhc", "/^X-Any:/ WARN nested\n");
    REQUIRE(hx_open(&x, "header_checks = regexp:%D/hc\n"
                        "mime_header_checks = regexp:%D/mhc\n"
                        "nested_header_checks = pcre:%D/nhc\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_HEADER, "X-Any: 1"), HBC_WARN);
    CHECK_STR(buf_cstr(&x.r.text), "primary");
    CHECK_INT(hx_check(&x, HBC_MIME, "X-Any: 1"), HBC_WARN);
    CHECK_STR(buf_cstr(&x.r.text), "mime");
    CHECK(strstr(x.r.origin.file, "/mhc") != NULL);
    CHECK_INT(hx_check(&x, HBC_NESTED, "X-Any: 1"), HBC_WARN);
    CHECK_STR(buf_cstr(&x.r.text), "nested");
    CHECK(!strncmp(x.r.table, "pcre:", 5));
    CHECK(!hbc_on(x.h, HBC_BODY));
    CHECK_INT(hx_check(&x, HBC_BODY, "X-Any: 1"), HBC_NONE);
    hx_done(&x);

    /* Nothing configured: every class off, every line passes. */
    hx_init(&x);
    REQUIRE(hx_open(&x, "") != NULL);
    for (int c = 0; c < HBC__COUNT; c++) {
        CHECK(!hbc_on(x.h, (hbc_class)c));
        CHECK_INT(hx_check(&x, (hbc_class)c, "Subject: x"), HBC_NONE);
    }
    hx_done(&x);
}

/* The first table with a match decides, even with DUNNO: later tables
 * are not asked (Postfix's maps_find). */
TEST(hbc_first_table_first_match)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "hc", "/^Subject: a/ REJECT first table\n/^Subject: ab/ REJECT first table, line 2\n"
                       "/^Subject: keep/ DUNNO\n");
    hx_write(&x, "hc2", "/^Subject: / REJECT second table\n");
    REQUIRE(hx_open(&x, "header_checks = regexp:%D/hc, regexp:%D/hc2\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: abc"), HBC_REJECT);
    CHECK_STR(buf_cstr(&x.r.text), "first table");
    CHECK_INT(x.r.origin.line, 1);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: zzz"), HBC_REJECT);
    CHECK_STR(buf_cstr(&x.r.text), "second table");
    CHECK(strstr(x.r.origin.file, "/hc2") != NULL);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: keep"), HBC_NONE);
    CHECK_INT(x.r.origin.line, 3);
    hx_done(&x);
}

TEST(hbc_pcre_substitution)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "pc",
             "/^Subject: (\\S+) for (\\S+)$/ REJECT no $1 for $2\n"
             "/^X-Tag: (.*)$/ REPLACE X-Old-Tag: ${1}\n"
             "/^From: .*<(.*)@(.*)>/ BCC copy+$1@$2\n");
    REQUIRE(hx_open(&x, "header_checks = pcre:%D/pc\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: pills for you"), HBC_REJECT);
    CHECK_STR(buf_cstr(&x.r.text), "no pills for you");
    CHECK_INT(x.r.code, 550);
    CHECK_INT(hx_check(&x, HBC_HEADER, "X-Tag: blue  green"), HBC_REPLACE);
    CHECK_STR(buf_cstr(&x.r.text), "X-Old-Tag: blue  green");
    CHECK_INT(hx_check(&x, HBC_HEADER, "From: Ann <ann@example.test>"), HBC_BCC);
    CHECK_STR(buf_cstr(&x.r.text), "copy+ann@example.test");
    hx_done(&x);
}

TEST(hbc_open_errors)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "hc", "/^Subject: ok/ REJECT\n/unclosed( REJECT\n");
    CHECK(hx_open(&x, "header_checks = regexp:%D/hc\n") == NULL);
    CHECK(strstr(buf_cstr(&x.err), "/hc:2: ") != NULL);
    CHECK(strstr(buf_cstr(&x.err), "main.cf:1: ") != NULL);
    hx_done(&x);

    hx_init(&x);
    CHECK(hx_open(&x, "\n\nbody_checks = regexp:%D/missing\n") == NULL);
    CHECK(strstr(buf_cstr(&x.err), "main.cf:3: ") != NULL);
    CHECK(strstr(buf_cstr(&x.err), "missing") != NULL);
    hx_done(&x);

    hx_init(&x);
    CHECK(hx_open(&x, "mime_header_checks = notatable\n") == NULL);
    CHECK(strstr(buf_cstr(&x.err), "mime_header_checks: \"notatable\": need type:table") != NULL);
    hx_done(&x);

    /* Relative names are taken against the base directory. */
    hx_init(&x);
    hx_write(&x, "hc", "/^Subject: rel/ DISCARD relative\n");
    REQUIRE(hx_open(&x, "header_checks = regexp:hc\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: rel"), HBC_DISCARD);
    hx_done(&x);
}

/* A table that cannot be read at run time is a temporary failure, never
 * a pass: a compiled table written over in place. */
TEST(hbc_tempfail)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "hc", "subject:x REJECT\n");
    char src[128], db[128];
    snprintf(src, sizeof src, "%s/hc", x.dir);
    snprintf(db, sizeof db, "%s/hc.lmdb", x.dir);
    buf_t e = BUF_INIT;
    REQUIRE(map_build(src, &e) == 0);
    buf_free(&e);
    REQUIRE(hx_open(&x, "header_checks = hash:%D/hc\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_HEADER, "subject:x"), HBC_REJECT);
    FILE *f = fopen(db, "a");
    REQUIRE(f != NULL);
    fputs("scribble", f);
    fclose(f);
    buf_t log = BUF_INIT;
    hbc_log_start();
    CHECK_INT(hx_check(&x, HBC_HEADER, "subject:x"), HBC_TEMPFAIL);
    hbc_log_end(&log);
    CHECK_INT(x.r.code, 451);
    CHECK_STR(x.r.dsn, "4.3.0");
    CHECK_STR(buf_cstr(&x.r.text), "Error: queue file write error");
    CHECK(strstr(buf_cstr(&log), "header_checks") != NULL);
    CHECK(strstr(buf_cstr(&log), "changed in place") != NULL);
    buf_free(&log);
    unlink(db);
    hx_done(&x);
}

/* The result is reused between lookups: no growth once warm. */
TEST(hbc_result_reused)
{
    hx_t x;
    hx_init(&x);
    hx_write(&x, "bc", "/^(.*)$/ REPLACE [$1]\n");
    REQUIRE(hx_open(&x, "body_checks = regexp:%D/bc\n") != NULL);
    CHECK_INT(hx_check(&x, HBC_BODY, "a rather long body line to size the buffers once"), HBC_REPLACE);
    const char *data = x.r.text.data;
    for (int i = 0; i < 100; i++)
        CHECK_INT(hx_check(&x, HBC_BODY, "short"), HBC_REPLACE);
    CHECK(x.r.text.data == data);
    CHECK_STR(buf_cstr(&x.r.text), "[short]");
    hx_done(&x);
}

/* The seeds' tables as shipped (shared/examples/seed-gateway), on the
 * lines the issue names. */
static bool seed_path(char *out, size_t size, const char *name)
{
    const char *root = getenv("MOAT_SHARED");
    char rel[512], abs[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/examples/seed-gateway/%s", root ? root : "../shared", name);
    if (!realpath(rel, abs)) {
        harness_fail(__FILE__, __LINE__, "cannot open %s (set MOAT_SHARED)", rel);
        return false;
    }
    str_copy(out, abs, size);
    return true;
}

TEST(hbc_seed_rules)
{
    char hc[512], mhc[512], bc[512], main_cf[2048];
    REQUIRE(seed_path(hc, sizeof hc, "header_checks"));
    REQUIRE(seed_path(mhc, sizeof mhc, "mime_header_checks"));
    REQUIRE(seed_path(bc, sizeof bc, "body_checks"));
    snprintf(main_cf, sizeof main_cf,
             "header_checks = regexp:%s\nmime_header_checks = regexp:%s\nbody_checks = pcre:%s\n", hc, mhc, bc);
    hx_t x;
    hx_init(&x);
    if (!hx_open(&x, main_cf)) {
        harness_fail(__FILE__, __LINE__, "%s", buf_cstr(&x.err));
        hx_done(&x);
        return;
    }
    hbc_result_t *r = &x.r;

    /* 003: third-party DSNs. */
    CHECK_INT(hx_check(&x, HBC_HEADER,
                       "Content-Type: multipart/report; report-type=delivery-status;\tboundary=\"b1\""),
              HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "no third-party DSNs");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Content-Type: message/delivery-status; charset=us-ascii"),
              HBC_REJECT);
    CHECK_STR(buf_cstr(&r->text), "no third-party DSNs");
    CHECK_INT(hx_check(&x, HBC_HEADER, "Content-Type: multipart/mixed; boundary=\"b1\""), HBC_NONE);

    /* 004: the Pretty Park worm, with the default text. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Subject: C:\\CoolProgs\\Pretty Park.exe"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(buf_cstr(&r->text), "message content rejected");

    /* 004: sender-specified routing, /[%!@].*@/ . */
    CHECK_INT(hx_check(&x, HBC_HEADER, "To: user%other.test@relay.example.test"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "Directed routing rejected");
    CHECK_INT(r->origin.line, 5);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Cc: host!user@example.test"), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_HEADER, "Cc: \"a@b\" <c@example.test>"), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_HEADER, "To: user@example.test"), HBC_NONE);

    /* 004: the exploder, the negation and ${1}@${2} in the reply. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "To: list-outgoing@lists.example.test"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(buf_cstr(&r->text), "Use list@lists.example.test instead of the outgoing address");
    CHECK_INT(r->origin.line, 6);
    CHECK_INT(hx_check(&x, HBC_HEADER, "To: owner-list-outgoing@lists.example.test"), HBC_NONE);

    /* 001: attachments by extension (mime_header_checks).  The table's
     * trailing "i" makes it case-sensitive (Postfix's regexp flags). */
    CHECK_INT(hx_check(&x, HBC_MIME, "Content-Disposition: attachment; filename=\"virus.exe\""), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "Attachment type not allowed");
    CHECK_INT(hx_check(&x, HBC_MIME, "Content-Type: application/octet-stream; name=setup.scr"), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_MIME, "Content-Type: application/x-msdownload;  name=\"run.pif\""), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_MIME, "Content-Disposition: attachment; filename=\"report.pdf\""), HBC_NONE);
    CHECK_INT(hx_check(&x, HBC_MIME, "Content-Disposition: attachment; filename=\"exe.txt\""), HBC_NONE);
    CHECK_INT(hx_check(&x, HBC_MIME, "Content-Type: text/plain; charset=us-ascii"), HBC_NONE);
    /* Not a primary-header rule. */
    CHECK_INT(hx_check(&x, HBC_HEADER, "Content-Disposition: attachment; filename=\"virus.exe\""), HBC_NONE);

    /* 001: phone numbers with letter substitutions (body_checks, pcre). */
    CHECK_INT(hx_check(&x, HBC_BODY, "Call us now: 495-740 12 12"), HBC_REJECT);
    CHECK_INT(r->code, 550);
    CHECK_STR(r->dsn, "5.7.1");
    CHECK_STR(buf_cstr(&r->text), "Spam advertising detected");
    CHECK_INT(hx_check(&x, HBC_BODY, "tel. 4 g 5 (7-4-o"), HBC_REJECT);
    CHECK_INT(hx_check(&x, HBC_BODY, "\xd1\x87" "9s.\xd1\x82" "4\xd0\xbe"), HBC_REJECT);
    /* The trailing "i" makes this table case-sensitive too. */
    CHECK_INT(hx_check(&x, HBC_BODY, "TEL 4G5 74O"), HBC_NONE);
    CHECK_INT(hx_check(&x, HBC_BODY, "Meeting at 4:95 in room 740"), HBC_NONE);
    CHECK_INT(hx_check(&x, HBC_BODY, "see you at 10"), HBC_NONE);
    hx_done(&x);
}
