/* Unit tests for regexp: and pcre: tables (src/maps/map_regexp.c,
 * map_pcre.c, map_re_common.c): every syntax form, substitution,
 * negation, if/endif, flags, first match wins, origins, and refusal of
 * every malformed line with file:line. */
#include "harness.h"

#include "core/util.h"
#include "maps/maps.h"
#include "maps/prefilter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A table written to a temporary file and opened as "type:path". */
typedef struct fx {
    char path[64];
    map_t *m;
    buf_t err, val;
    map_origin_t origin;
    map_status st;
} fx_t;

static bool fx_write(fx_t *fx, const char *text, size_t len)
{
    str_copy(fx->path, "/tmp/moat-re-XXXXXX", sizeof fx->path);
    int fd = mkstemp(fx->path);
    if (fd < 0)
        return false;
    bool ok = write(fd, text, len) == (ssize_t)len;
    close(fd);
    return ok;
}

static map_t *fx_open_len(fx_t *fx, const char *type, const char *text, size_t len)
{
    memset(fx, 0, sizeof *fx);
    if (!fx_write(fx, text, len))
        return NULL;
    char spec[128];
    snprintf(spec, sizeof spec, "%s:%s", type, fx->path);
    fx->m = map_open(spec, NULL, &fx->err);
    return fx->m;
}

static map_t *fx_open(fx_t *fx, const char *type, const char *text)
{
    return fx_open_len(fx, type, text, strlen(text));
}

static void fx_done(fx_t *fx)
{
    map_close(&fx->m);
    unlink(fx->path);
    buf_free(&fx->err);
    buf_free(&fx->val);
}

/* The value, "-" for not found, "TEMPFAIL: reason" for a temporary error. */
static const char *get(fx_t *fx, const char *key)
{
    fx->st = map_lookup(fx->m, key, &fx->val, &fx->origin);
    if (fx->st == MAP_NOTFOUND)
        return "-";
    if (fx->st == MAP_TEMPFAIL) {
        static char tf[512];
        snprintf(tf, sizeof tf, "TEMPFAIL: %s", buf_cstr(&fx->val));
        return tf;
    }
    return buf_cstr(&fx->val);
}

/* Does err name path:line? */
static bool names_line(const fx_t *fx, int line, const char *text)
{
    char want[96];
    snprintf(want, sizeof want, "%s:%d: ", fx->path, line);
    const char *e = buf_cstr(&fx->err);
    for (const char *p = e; (p = strstr(p, want)) != NULL; p++) {
        if (p != e && p[-1] != '\n')
            continue;
        const char *eol = strchr(p, '\n');
        if (!text)
            return true;
        const char *hit = strstr(p, text);
        if (hit && (!eol || hit < eol))
            return true;
    }
    return false;
}

static const char *const both[] = {"regexp", "pcre"};

TEST(maps_re_first_match_and_origin)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        REQUIRE(fx_open(&fx, both[k],
                        "# leading comment\n"
                        "\n"
                        "/^postmaster@/      OK\n"
                        "/[%!@].*[%!@]/      550 Sender-specified routing rejected\n"
                        "   # an indented comment is still a comment\n"
                        "/@example\\.test$/  REJECT local\n"
                        "/example/           second\n") != NULL);
        CHECK_STR(get(&fx, "postmaster@example.test"), "OK");
        CHECK_INT(fx.origin.line, 3);
        CHECK_STR(fx.origin.file, fx.path);
        CHECK_STR(get(&fx, "a%b@example.test"), "550 Sender-specified routing rejected");
        CHECK_INT(fx.origin.line, 4);
        CHECK_STR(get(&fx, "user@example.test"), "REJECT local");
        CHECK_INT(fx.origin.line, 6);
        CHECK_STR(get(&fx, "example.org"), "second");
        CHECK_INT(fx.origin.line, 7);
        CHECK_STR(get(&fx, "nothing"), "-");
        CHECK(fx.origin.file == NULL);
        /* The whole key is searched; keys are not case-folded, patterns
         * are case-insensitive by default. */
        CHECK_STR(get(&fx, "POSTMASTER@Example.TEST"), "OK");
        fx_done(&fx);
    }
}

TEST(maps_re_case_flag)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        REQUIRE(fx_open(&fx, both[k], "/^Subject: URGENT/i  exact\n/^subject: urgent/  folded\n") != NULL);
        CHECK_STR(get(&fx, "Subject: URGENT"), "exact");
        CHECK_STR(get(&fx, "Subject: urgent"), "folded");
        CHECK_STR(get(&fx, "SUBJECT: Urgent"), "folded");
        CHECK_STR(get(&fx, "subject: URGENT"), "folded");
        fx_done(&fx);
        /* "ii" toggles twice: back to the default. */
        REQUIRE(fx_open(&fx, both[k], "/abc/ii x\n") != NULL);
        CHECK_STR(get(&fx, "ABC"), "x");
        fx_done(&fx);
    }
}

TEST(maps_re_substitution)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        REQUIRE(fx_open(&fx, both[k],
                        "/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead\n"
                        "/^(a)(b)?(c)$/          [$1][$2][$3]\n"
                        "/^(d)(e)$/              $(2)$1 costs $$5\n"
                        "/^f(.*)$/               <$1>\n"
                        "/^lit$/                 $$ and $${1}\n"
                        "/^w(..)/                whole=$0 part=$1\n"
                        "/^(1)(2)(3)(4)(5)(6)(7)(8)(9)(0)(X)$/  $11$10$9$1\n") != NULL);
        CHECK_STR(get(&fx, "list-outgoing@example.test"), "550 Use list@example.test instead");
        CHECK_STR(get(&fx, "abc"), "[a][b][c]");
        /* A group that took no part, or matched nothing, adds nothing. */
        CHECK_STR(get(&fx, "ac"), "[a][][c]");
        CHECK_STR(get(&fx, "de"), "ed costs $5");
        CHECK_STR(get(&fx, "f"), "<>");
        CHECK_STR(get(&fx, "lit"), "$ and ${1}");
        CHECK_STR(get(&fx, "wxyz"), "whole=wxy part=xy");
        CHECK_STR(get(&fx, "1234567890X"), "X091");
        fx_done(&fx);
    }
}

TEST(maps_re_negation)
{
    fx_t fx;
    /* regexp's two-pattern form, straight from regexp_table(5). */
    REQUIRE(fx_open(&fx, "regexp",
                    "/^(.*)-outgoing@(.*)$/!/^owner-/  550 Use ${1}@${2} instead\n"
                    "!/@/                             553 no domain\n"
                    "!!/^double/                      two negations cancel\n"
                    "/^a/!!/b/                        a and b\n") != NULL);
    CHECK_STR(get(&fx, "list-outgoing@example.test"), "550 Use list@example.test instead");
    CHECK_INT(fx.origin.line, 1);
    CHECK_STR(get(&fx, "owner-list-outgoing@example.test"), "-");
    CHECK_STR(get(&fx, "localpart"), "553 no domain");
    CHECK_INT(fx.origin.line, 2);
    CHECK_STR(get(&fx, "double@x"), "two negations cancel");
    CHECK_STR(get(&fx, "ab@x"), "a and b");
    CHECK_STR(get(&fx, "ac@x"), "-");
    fx_done(&fx);

    REQUIRE(fx_open(&fx, "pcre",
                    "/^(?!owner-)(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead\n"
                    "! /@/                             553 no domain\n") != NULL);
    CHECK_STR(get(&fx, "list-outgoing@example.test"), "550 Use list@example.test instead");
    CHECK_STR(get(&fx, "owner-list-outgoing@example.test"), "-");
    CHECK_STR(get(&fx, "localpart"), "553 no domain");
    fx_done(&fx);
}

TEST(maps_re_if_endif)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        REQUIRE(fx_open(&fx, both[k],
                        "if /true/\n"                  /* 1 */
                        "/1/\t1\n"                     /* 2 */
                        "IF /false/\n"                 /* 3 */
                        "/2/\t2\n"                     /* 4 */
                        "ENDIF\n"                      /* 5 */
                        "/3/\t3\n"                     /* 6 */
                        "endif\n"                      /* 7 */
                        "if !/xyzzy/\n"                /* 8 */
                        "if/bar/\n"                    /* 9 */
                        "/(elbereth)/\t($1)\n"         /* 10 */
                        "!/find/\t\tno licence\n"      /* 11 */
                        "endif\t \n"                   /* 12 */
                        "endif\n"                      /* 13 */
                        "/^z/ after\n") != NULL);      /* 14 */
        CHECK_STR(get(&fx, "true"), "-");
        CHECK_STR(get(&fx, "true1"), "1");
        CHECK_INT(fx.origin.line, 2);
        CHECK_STR(get(&fx, "true2"), "-");
        CHECK_STR(get(&fx, "truefalse2"), "2");
        CHECK_STR(get(&fx, "3"), "-");
        CHECK_STR(get(&fx, "true3"), "3");
        CHECK_STR(get(&fx, "bar/find"), "-");
        CHECK_STR(get(&fx, "bar/whynot"), "no licence");
        CHECK_INT(fx.origin.line, 11);
        CHECK_STR(get(&fx, "bar/elbereth"), "(elbereth)");
        CHECK_STR(get(&fx, "say/elbereth"), "-");
        CHECK_STR(get(&fx, "xyzzy-bar"), "-");
        /* A failed condition skips its block, not the rest of the file. */
        CHECK_STR(get(&fx, "zap"), "after");
        CHECK_STR(get(&fx, "zap-true-false"), "after");
        fx_done(&fx);
    }
}

TEST(maps_re_continuation)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        /* The seed's multi-line response: the newline goes, the
         * continuation's own leading white space stays; comments and blank
         * lines in between are dropped without ending the line. */
        REQUIRE(fx_open(&fx, both[k],
                        "# A multi-line response\n"
                        "/^turkey@whereever.com$/\n"
                        " 550 This user is an odd one. You really don't want to send mail to them\n"
                        "# a comment inside\n"
                        "\n"
                        " as it only makes their head spin.   \n"
                        "/^two/ a\n"
                        "\tb\n"
                        "/^(three)/ $1\n"
                        "    ${1}\r\n") != NULL);
        CHECK_STR(get(&fx, "turkey@whereever.com"),
                  "550 This user is an odd one. You really don't want to send mail to them"
                  " as it only makes their head spin.");
        CHECK_INT(fx.origin.line, 2);
        CHECK_STR(get(&fx, "two"), "a\tb");
        CHECK_INT(fx.origin.line, 7);
        CHECK_STR(get(&fx, "three"), "three    three");
        CHECK_INT(fx.origin.line, 9);
        fx_done(&fx);
    }
}

TEST(maps_re_delimiters)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        REQUIRE(fx_open(&fx, both[k],
                        "~^[[:alnum:]+/]{60,}$~  base64\n"
                        "|^a/b$|                 slash inside\n"
                        "/^c\\/d$/               escaped slash\n"
                        "%^pct$%                 percent delimiter\n"
                        "/^sp ace$/              pattern with a space\n"
                        "!~^x~                   not x\n") != NULL);
        char b64[80];
        memset(b64, 'Q', 70);
        b64[70] = 0;
        CHECK_STR(get(&fx, b64), "base64");
        CHECK_STR(get(&fx, "a/b"), "slash inside");
        CHECK_STR(get(&fx, "c/d"), "escaped slash");
        CHECK_STR(get(&fx, "pct"), "percent delimiter");
        CHECK_STR(get(&fx, "sp ace"), "pattern with a space");
        CHECK_STR(get(&fx, "xylophone"), "-");
        CHECK_STR(get(&fx, "other"), "not x");
        fx_done(&fx);
    }
}

TEST(maps_re_regexp_flags)
{
    fx_t fx;
    /* x toggles REG_EXTENDED off: in a basic expression + and () are
     * ordinary characters. */
    REQUIRE(fx_open(&fx, "regexp",
                    "/^a+b$/x      basic\n"
                    "/^(c)+$/      extended $1\n"
                    "/^line2$/m    multiline\n"
                    "/^one.two$/   dot-newline\n") != NULL);
    CHECK_STR(get(&fx, "a+b"), "basic");
    CHECK_STR(get(&fx, "aab"), "-");
    CHECK_STR(get(&fx, "ccc"), "extended c");
    CHECK_STR(get(&fx, "line1\nline2"), "multiline");
    /* Without m a newline is an ordinary character: . matches it. */
    CHECK_STR(get(&fx, "one\ntwo"), "dot-newline");
    fx_done(&fx);
    REQUIRE(fx_open(&fx, "regexp", "/^line2$/ plain\n/^one.two$/m  nl\n") != NULL);
    CHECK_STR(get(&fx, "line1\nline2"), "-");
    CHECK_STR(get(&fx, "one\ntwo"), "-");
    fx_done(&fx);
}

TEST(maps_re_pcre_flags)
{
    fx_t fx;
    REQUIRE(fx_open(&fx, "pcre",
                    "/^one.two$/     dotall-default\n"
                    "/^three.four$/s no-dotall\n"
                    "/^line2$/m      multiline\n"
                    "/^ e x t $/x    extended\n"
                    "/b/A            anchored\n"
                    "/end$/E         dollar-endonly\n"
                    "/^<(.+)>/U      ungreedy $1\n"
                    "/^X$/X          obsolete-X\n"
                    "/^\\d+$/        digits\n") != NULL);
    CHECK_STR(get(&fx, "one\ntwo"), "dotall-default");
    CHECK_STR(get(&fx, "three\nfour"), "-");
    CHECK_STR(get(&fx, "threeXfour"), "no-dotall");
    CHECK_STR(get(&fx, "line1\nline2"), "multiline");
    CHECK_STR(get(&fx, "ext"), "extended");
    CHECK_STR(get(&fx, "bcd"), "anchored");
    CHECK_STR(get(&fx, "abc"), "-");
    CHECK_STR(get(&fx, "the end"), "dollar-endonly");
    CHECK_STR(get(&fx, "the end\n"), "-");
    CHECK_STR(get(&fx, "<a><b>"), "ungreedy a");
    CHECK_STR(get(&fx, "x"), "obsolete-X");
    CHECK_STR(get(&fx, "12345"), "digits");
    fx_done(&fx);
    /* Byte mode: a key that is not UTF-8 is just bytes. */
    REQUIRE(fx_open(&fx, "pcre", "/^\\xff+(.)$/  high $1\n/(?:4|\xd1\x87)-(?:9|g)/ phone\n") != NULL);
    CHECK_STR(get(&fx, "\xff\xff" "z"), "high z");
    CHECK_STR(get(&fx, "call \xd1\x87-g now"), "phone");
    CHECK_STR(get(&fx, "call 4-9 now"), "phone");
    fx_done(&fx);
}

TEST(maps_re_pcre_match_error_is_tempfail)
{
    fx_t fx;
    /* Without the prefilter, which would prove the rule cannot match this
     * key and never run it (test_prefilter.c). */
    re_prefilter_set_mode(RE_PREFILTER_OFF);
    REQUIRE(fx_open(&fx, "pcre", "/^x/ early\n/^(a+)+$/ catastrophic\n/./ anything\n") != NULL);
    re_prefilter_set_mode(RE_PREFILTER_DEFAULT);
    char key[64];
    memset(key, 'a', 40);
    str_copy(key + 40, "!", sizeof key - 40);
    const char *v = get(&fx, key);
    CHECK_INT(fx.st, MAP_TEMPFAIL);
    CHECK(strncmp(v, "TEMPFAIL: ", 10) == 0);
    CHECK(strstr(v, ":2: pcre2_match: ") != NULL);
    CHECK_INT(fx.origin.line, 2);
    /* The table keeps working afterwards. */
    CHECK_STR(get(&fx, "xyz"), "early");
    CHECK_STR(get(&fx, "aaa"), "catastrophic");
    fx_done(&fx);
}

typedef struct bad {
    const char *type; /* NULL: both */
    const char *text;
    int line;
    const char *msg;
} bad_t;

static const bad_t bad_lines[] = {
    {NULL, "/abc result\n", 1, "no closing delimiter \"/\""},
    {NULL, "/ok/ x\n/abc\\/ result\n", 2, "no closing delimiter"},
    {NULL, "/a/q x\n", 1, "unknown"},
    {"regexp", "/a/ x\n/(a/ y\n", 2, "bad regular expression"},
    {"pcre", "/a/ x\n/(/ y\n", 2, "error in regex at offset 1: missing closing parenthesis"},
    {NULL, "/(a)/ $2\n", 1, "out of range replacement index \"2\""},
    {NULL, "/(a)/ ${99999999999999}\n", 1, "out of range replacement index"},
    {NULL, "!/(a)/ $1\n", 1, "negative pattern"},
    {"regexp", "/a/!/(b)/ ok\n!/(a)/!/b/ $1\n", 2, "negative pattern"},
    {NULL, "/a/ x\nendif\n", 2, "endif without matching if"},
    {NULL, "if /a/\n/b/ x\n", 1, "if without matching endif"},
    {NULL, "if /a/ junk\n/b/ x\nendif\n", 1, "extra text after the if pattern: \"junk\""},
    {NULL, "if /a/\n  /b/ x\nendif\n", 1, "do not indent"},
    {NULL, "if /a/\nendif foo\n", 2, "extra text after endif: \"foo\""},
    {NULL, "/a/ x\n/b/\n", 2, "no result"},
    {NULL, "/a/ x\n!\n", 2, "no pattern"},
    {NULL, "if\nendif\n", 1, "no pattern"},
    {NULL, "foo bar\n", 1, "not a rule"},
    {NULL, "iffy /a/\n", 1, "not a rule"},
    {NULL, "/a/ $x\n", 1, "non-numeric replacement index \"x\""},
    {NULL, "/(a)/ $1x\n", 1, "non-numeric replacement index \"1x\""},
    {NULL, "/(a)/ ${1\n", 1, "unterminated"},
    {NULL, "/a/ costs $\n", 1, "without a number"},
    {NULL, "/a/ costs $ 5\n", 1, "without a number"},
    {NULL, "  /a/ x\n", 1, "no line to continue"},
    {NULL, "# c\n\t/a/ x\n/b/ y\n", 2, "no line to continue"},
    {"pcre", "/a/!/b/ x\n", 1, "unknown pcre flag \"!\""},
    {"regexp", "/a/s x\n", 1, "unknown regexp flag \"s\""},
    {"pcre", "/a/is x\n/a/isz y\n", 2, "unknown pcre flag \"z\""},
};

TEST(maps_re_errors_name_file_and_line)
{
    for (size_t i = 0; i < ARRAY_LEN(bad_lines); i++) {
        const bad_t *b = &bad_lines[i];
        for (size_t k = 0; k < 2; k++) {
            if (b->type && strcmp(b->type, both[k]) != 0)
                continue;
            fx_t fx;
            map_t *m = fx_open(&fx, both[k], b->text);
            CHECK(m == NULL);
            if (!names_line(&fx, b->line, b->msg))
                harness_fail(__FILE__, __LINE__, "%s case %zu: want %s:%d: ...%s..., got: %s", both[k], i,
                             fx.path, b->line, b->msg, buf_cstr(&fx.err));
            fx_done(&fx);
        }
    }
}

TEST(maps_re_errors_all_reported)
{
    fx_t fx;
    REQUIRE(fx_open(&fx, "regexp",
                    "/ok/ fine\n"       /* 1 */
                    "/(x/ bad\n"        /* 2 */
                    "endif\n"           /* 3 */
                    "if /a/\n"          /* 4 */
                    "if /b/\n"          /* 5 */
                    "/y/\n") == NULL);  /* 6 */
    CHECK(names_line(&fx, 2, NULL));
    CHECK(names_line(&fx, 3, "endif without"));
    CHECK(names_line(&fx, 4, "if without"));
    CHECK(names_line(&fx, 5, "if without"));
    CHECK(names_line(&fx, 6, "no result"));
    CHECK(!names_line(&fx, 1, NULL));
    fx_done(&fx);

    /* A bad if line still opens a block: its endif is not reported too. */
    REQUIRE(fx_open(&fx, "pcre", "if /(/\n/a/ b\nendif\n") == NULL);
    CHECK(names_line(&fx, 1, "error in regex"));
    CHECK(!names_line(&fx, 3, NULL));
    fx_done(&fx);

    /* A NUL byte is refused, not silently cut. */
    REQUIRE(fx_open_len(&fx, "pcre", "/a/ x\n/b/ y\0z\n", 14) == NULL);
    CHECK(names_line(&fx, 2, "NUL"));
    fx_done(&fx);

    /* A flood of bad lines is summarised. */
    buf_t big = BUF_INIT;
    for (int i = 0; i < 200; i++)
        buf_puts(&big, "nonsense\n");
    REQUIRE(fx_open(&fx, "regexp", buf_cstr(&big)) == NULL);
    CHECK(names_line(&fx, 50, NULL));
    CHECK(!names_line(&fx, 51, NULL));
    CHECK(strstr(buf_cstr(&fx.err), ": 150 more errors\n") != NULL);
    fx_done(&fx);
    buf_free(&big);
}

TEST(maps_re_missing_file_and_empty_table)
{
    for (size_t k = 0; k < 2; k++) {
        buf_t err = BUF_INIT;
        char spec[96];
        snprintf(spec, sizeof spec, "%s:/nonexistent/moat-re-table", both[k]);
        CHECK(map_open(spec, NULL, &err) == NULL);
        CHECK(strstr(buf_cstr(&err), "/nonexistent/moat-re-table: cannot open") != NULL);
        buf_free(&err);

        fx_t fx;
        REQUIRE(fx_open(&fx, both[k], "# only comments\n\n   \n") != NULL);
        CHECK_STR(get(&fx, "anything"), "-");
        fx_done(&fx);
    }
}

TEST(maps_re_relative_path_and_changed)
{
    fx_t fx;
    REQUIRE(fx_open(&fx, "regexp", "/a/ one\n") != NULL);
    map_t *m2;
    {
        buf_t err = BUF_INIT;
        char spec[160];
        snprintf(spec, sizeof spec, "regexp:%s", fx.path + 5); /* strip "/tmp/" */
        m2 = map_open(spec, "/tmp", &err);
        CHECK(m2 != NULL);
        buf_free(&err);
    }
    REQUIRE(m2 != NULL);
    buf_t v = BUF_INIT;
    CHECK_INT(map_lookup(m2, "a", &v, NULL), MAP_FOUND);
    CHECK_STR(buf_cstr(&v), "one");
    CHECK(!map_changed(fx.m));
    FILE *f = fopen(fx.path, "a");
    REQUIRE(f != NULL);
    fputs("/b/ two\n", f);
    fclose(f);
    CHECK(map_changed(fx.m));
    map_close(&m2);
    buf_free(&v);
    fx_done(&fx);
}

/* The seeds' tables (shared/examples/seed-gateway), inline so the unit
 * binary needs nothing beside it; tests/proto/test_postfix_regexp.py
 * opens the files themselves. */
TEST(maps_re_seed_tables)
{
    fx_t fx;
    REQUIRE(fx_open(&fx, "regexp",
                    "# 003: third-party DSNs; 004: sender-specified routing, a worm, an exploder\n"
                    "/^Content-Type: multipart\\/report; report-type=delivery-status\\;/       REJECT no third-party DSNs\n"
                    "/^Content-Type: message\\/delivery-status; /     REJECT no third-party DSNs\n"
                    "/^Subject: C:\\\\CoolProgs\\\\Pretty Park\\.exe/  REJECT\n"
                    "/^(To|Cc):.*[%!@].*@/                   550 Directed routing rejected\n"
                    "/^To: (.*)-outgoing@(.*)$/!/^To: owner-.*/      550 Use ${1}@${2} instead of the outgoing address\n") != NULL);
    CHECK_STR(get(&fx, "Content-Type: multipart/report; report-type=delivery-status; boundary=x"),
              "REJECT no third-party DSNs");
    CHECK_STR(get(&fx, "content-type: Message/Delivery-Status; x"), "REJECT no third-party DSNs");
    CHECK_STR(get(&fx, "Subject: C:\\CoolProgs\\Pretty Park.exe"), "REJECT");
    CHECK_STR(get(&fx, "To: user%other@relay.test@example.test"), "550 Directed routing rejected");
    CHECK_INT(fx.origin.line, 5);
    CHECK_STR(get(&fx, "To: user@example.test"), "-");
    CHECK_STR(get(&fx, "To: list-outgoing@example.test"),
              "550 Use list@example.test instead of the outgoing address");
    CHECK_INT(fx.origin.line, 6);
    CHECK_STR(get(&fx, "To: owner-list-outgoing@example.test"), "-");
    fx_done(&fx);

    REQUIRE(fx_open(&fx, "regexp",
                    "/^Content-(Disposition|Type).*name\\s*=\\s*\"?.*\\.(bat|com|exe|pif|scr|vbs|cpl|lnk)\"?\\s*$/i   REJECT Attachment type not allowed\n") != NULL);
    CHECK_STR(get(&fx, "Content-Disposition: attachment; filename=\"Update-KB3374-x86.exe\""),
              "REJECT Attachment type not allowed");
    CHECK_STR(get(&fx, "Content-Type: application/octet-stream; name=\"a.PIF\""), "-");
    CHECK_STR(get(&fx, "Content-Type: text/plain; name=\"notes.txt\""), "-");
    fx_done(&fx);

    REQUIRE(fx_open(&fx, "regexp",
                    "/^dsl.*\\..*\\..*/i       553 AUTO_DSL You have been identified as a spammer. Go Away.\n"
                    "/[ax]dsl.*\\..*\\..*/i    553 AUTO_XDSL You have been identified as a spammer. Go Away.\n"
                    "/pool.*\\..*\\..*/i       553 AUTO_POOL You have been identified as a spammer. Go Away.\n") != NULL);
    CHECK_STR(get(&fx, "adsl-1-2-3.isp.test"), "553 AUTO_XDSL You have been identified as a spammer. Go Away.");
    CHECK_STR(get(&fx, "dsl12.isp.test"), "553 AUTO_DSL You have been identified as a spammer. Go Away.");
    CHECK_STR(get(&fx, "pool-9.dyn.isp.test"), "553 AUTO_POOL You have been identified as a spammer. Go Away.");
    /* i turns the default case-insensitivity off. */
    CHECK_STR(get(&fx, "POOL-9.DYN.ISP.TEST"), "-");
    CHECK_STR(get(&fx, "mail.example.test"), "-");
    fx_done(&fx);

    REQUIRE(fx_open(&fx, "pcre", "/.*bounces\\@/   REJECT\n/confirm-return.*\\@/    REJECT\n") != NULL);
    CHECK_STR(get(&fx, "list-bounces@lists.test"), "REJECT");
    CHECK_STR(get(&fx, "confirm-return-123@lists.test"), "REJECT");
    CHECK_STR(get(&fx, "someone@lists.test"), "-");
    fx_done(&fx);

    REQUIRE(fx_open(&fx, "pcre",
                    "/(?:4|\xd1\x87)[\\s\\-.]*(?:9|g)[\\s\\-.]*(?:5|s)[\\s\\-.]*[\\(\\s\\-.]*(?:7|\xd1\x82)"
                    "[\\s\\-.]*(?:4|\xd1\x87)[\\s\\-.]*(?:0|o|\xd0\xbe)/i  REJECT Spam advertising detected\n") != NULL);
    CHECK_STR(get(&fx, "Call us: 495-740 today"), "REJECT Spam advertising detected");
    CHECK_STR(get(&fx, "Call us: \xd1\x87-g-s (\xd1\x82 4.o"), "REJECT Spam advertising detected");
    CHECK_STR(get(&fx, "Call us: 495-741 today"), "-");
    fx_done(&fx);

    /* Seed 004's pcre examples, $0 included (a moat extension: Postfix
     * refuses $0). */
    REQUIRE(fx_open(&fx, "pcre",
                    "/^(?!owner-)(.*)-outgoing@(connect.com.au)$/    550 Use ${1}@${2} instead of the outgoing address\n"
                    "/^friend@(?!somewhere.com).*$/         550 Stick it $0\n") != NULL);
    CHECK_STR(get(&fx, "staff-outgoing@connect.com.au"), "550 Use staff@connect.com.au instead of the outgoing address");
    CHECK_STR(get(&fx, "owner-staff-outgoing@connect.com.au"), "-");
    CHECK_STR(get(&fx, "friend@else.test"), "550 Stick it friend@else.test");
    CHECK_STR(get(&fx, "friend@somewhere.com"), "-");
    fx_done(&fx);
}

/* Each lookup's result stands alone: the buffer is reset, a long value
 * followed by a short one leaves nothing behind. */
TEST(maps_re_value_reset)
{
    for (size_t k = 0; k < 2; k++) {
        fx_t fx;
        REQUIRE(fx_open(&fx, both[k], "/^long(.*)/ a very long result $1\n/^s/ s\n") != NULL);
        CHECK_STR(get(&fx, "longxxxxxxxxxxxxxxxxxxxxxxxxx"), "a very long result xxxxxxxxxxxxxxxxxxxxxxxxx");
        CHECK_STR(get(&fx, "s"), "s");
        CHECK_INT(fx.val.len, 1);
        fx_done(&fx);
    }
}
