/* Unit tests for the regexp:/pcre: prefilter (src/maps/prefilter.c and
 * its use in map_re_common.c): the same table opened with the prefilter
 * off and forced on must give the same status, value and origin line for
 * every key.  Hand-written sets cover the flags, negations, "/p1/!/p2/",
 * if/endif and $n; generated sets (a fixed pseudo-random sequence) cover
 * the combinations; the seed-gateway tables are checked as shipped.  A
 * test that asserts equality also asserts that the prefilter took part,
 * or it would prove nothing. */
#include "harness.h"

#include "core/util.h"
#include "maps/maps.h"
#include "maps/prefilter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One table file opened twice: without (off) and with (on) the prefilter. */
typedef struct pair {
    char path[64];
    map_t *off, *on;
    size_t covered, rules;
    buf_t err;
} pair_t;

static void pair_done(pair_t *p)
{
    map_close(&p->off);
    map_close(&p->on);
    unlink(p->path);
    buf_free(&p->err);
}

/* 0: both opened; 1: neither (the table is bad for the engine: nothing
 * is left open); -1: they disagree or the file could not be written. */
static int pair_open(pair_t *p, const char *type, const char *text, re_prefilter_mode_t mode)
{
    memset(p, 0, sizeof *p);
    str_copy(p->path, "/tmp/moat-pf-XXXXXX", sizeof p->path);
    int fd = mkstemp(p->path);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len;
    close(fd);
    char spec[128];
    snprintf(spec, sizeof spec, "%s:%s", type, p->path);
    if (ok) {
        re_prefilter_set_mode(RE_PREFILTER_OFF);
        p->off = map_open(spec, NULL, &p->err);
        re_prefilter_set_mode(mode);
        p->on = map_open(spec, NULL, &p->err);
        re_prefilter_set_mode(RE_PREFILTER_DEFAULT);
    }
    if (ok && p->off && p->on) {
        if (!re_table_prefilter_info(p->on, &p->covered, &p->rules))
            p->covered = p->rules = 0;
        return 0;
    }
    int rc = ok && !p->off && !p->on ? 1 : -1;
    if (rc < 0 || mode != RE_PREFILTER_ALWAYS || getenv("PF_VERBOSE"))
        fprintf(stderr, "%s:%s: %s%s", type, p->path, buf_cstr(&p->err), getenv("PF_VERBOSE") ? text : "");
    pair_done(p);
    return rc;
}

/* Look key up in both; false (and a failure naming the table and the
 * key) when they disagree on anything the caller sees. */
static bool same(pair_t *p, const char *key, const char *file, int line, const char *table)
{
    buf_t v1 = BUF_INIT, v2 = BUF_INIT;
    map_origin_t o1 = {0}, o2 = {0};
    map_status s1 = map_lookup(p->off, key, &v1, &o1);
    map_status s2 = map_lookup(p->on, key, &v2, &o2);
    bool ok = s1 == s2 && (s1 == MAP_NOTFOUND || (strcmp(buf_cstr(&v1), buf_cstr(&v2)) == 0 &&
                                                  o1.line == o2.line));
    if (!ok)
        harness_fail(file, line, "key \"%s\": off %d \"%s\" line %d, on %d \"%s\" line %d; table:\n%s",
                     key, s1, buf_cstr(&v1), o1.line, s2, buf_cstr(&v2), o2.line, table);
    buf_free(&v1);
    buf_free(&v2);
    return ok;
}

/* The answer of the prefiltered table: "-", the value, or "TEMPFAIL". */
static const char *on_get(pair_t *p, const char *key, buf_t *v)
{
    map_status s = map_lookup(p->on, key, v, NULL);
    return s == MAP_FOUND ? buf_cstr(v) : s == MAP_NOTFOUND ? "-" : "TEMPFAIL";
}

#define SAME_ALL(p, keys, table)                                            \
    do {                                                                    \
        for (size_t k_ = 0; k_ < sizeof(keys) / sizeof *(keys); k_++)       \
            same((p), (keys)[k_], __FILE__, __LINE__, (table));             \
    } while (0)

static const char *const hand_keys[] = {
    "",
    "a",
    "abc",
    "ABC",
    "xabcx",
    "Subject: hello world",
    "subject: HELLO",
    "To: list-outgoing@example.com",
    "To: owner-list-outgoing@example.com",
    "To: a%b@c@example.com",
    "Cc: x!y@z",
    "line one\nline two",
    "foo\n",
    "foo\nbar",
    "\nfoo",
    "aaa",
    "aaab",
    "abab",
    "xyzzy",
    "x.y",
    "x-y",
    "12345",
    "call 495-740 now",
    "4 9 5 7 4 0",
    "tab\there",
    "v\vtab",
    "\xe9t\xe9",
    "\xc9T\xc9",
    "\xff\xfe",
    "word boundary",
    "wordboundary",
    "end.",
    "the end",
    "the end\n",
    "<a><b>",
    "Content-Disposition: attachment; filename=\"virus.exe\"",
    "Content-Type: application/octet-stream; name=x.PIF",
    "http://example.com/buy-now",
    "HTTP://SPAM.EXAMPLE/viagra",
};

TEST(prefilter_pcre_hand_written)
{
    static const char table[] =
        "/^subject: hello/ subject-hello\n"
        "/^Subject: HELLO/ subject-exact\n"
        "/^SUBJECT: hello/i subject-case-sensitive\n"
        "if /^to:/\n"
        "if !/owner-/\n"
        "/^to: (.*)-outgoing@(.*)$/ use ${1}@${2}\n"
        "endif\n"
        "/@.*@/ to-two-ats\n"
        "endif\n"
        "/[%!@].*@/ directed-routing\n"
        "/(?:4|\xd1\x87)[\\s\\-.]*(?:9|g)[\\s\\-.]*(?:5|s)/ phone\n"
        "/https?:\\/\\/[^\\/]+\\/(buy|viagra)/ url $1\n"
        "/[[:digit:]]{5}/ five-digits\n"
        "/end\\.$/ end-dot\n"
        "/(a)(b)(c)/ abc=$3$2$1\n"
        "/^(\\w+)\\s+(\\w+)$/ two-words $2 $1\n"
        "/x\\.y/ x-dot-y\n"
        "/x.y/s x-any-y-nodotall\n"
        "/^foo$/m multiline-foo\n"
        "/^bar$/ bar-singleline\n"
        "/foo$/E foo-end-only\n"
        "/^bcd/A anchored\n"
        "/<.+>/U ungreedy\n"
        "/(?i)xyzzy/ inline-i\n"
        "/(?-i)Xyzzy/ inline-minus-i\n"
        "!/[a-z]/ no-lower\n"
        "/\\bword\\b/ whole-word\n"
        "/(a)\\1/ backref-aa\n"
        "/(?<=x)a/ lookbehind\n"
        "/a(?=b)/ lookahead\n"
        "/a(?!b)c/ neg-lookahead\n"
        "/\\x{e9}t/ latin1-e-t\n"
        "/\\t/ tab\n"
        "/\\v/ vertical-space\n"
        "/\\xff\\xfe/ high-bytes\n"
        "/(?x) w o r d/ extended-inline\n"
        "/w o r d/x extended-flag\n"
        "/^$/ empty-key\n"
        "/\\pL\\pL/ unicode-property\n"
        "/(*UCP)\\w/ ucp-verb\n"
        "/a?/ empty-matcher\n";
    pair_t p;
    REQUIRE(0 == pair_open(&p, "pcre", table, RE_PREFILTER_ALWAYS));
    /* Most patterns are covered; x, \p, (*UCP) and the empty matchers
     * are not. */
    CHECK(p.covered >= 25);
    CHECK(p.covered < p.rules);
    SAME_ALL(&p, hand_keys, table);
    buf_t v = BUF_INIT;
    CHECK_STR(on_get(&p, "To: list-outgoing@example.com", &v), "use list@example.com");
    CHECK_STR(on_get(&p, "To: a%b@c@example.com", &v), "to-two-ats");
    CHECK_STR(on_get(&p, "Cc: x!y@z", &v), "directed-routing");
    CHECK_STR(on_get(&p, "call 495-740 now", &v), "phone");
    CHECK_STR(on_get(&p, "HTTP://SPAM.EXAMPLE/viagra", &v), "url viagra");
    CHECK_STR(on_get(&p, "12345", &v), "five-digits");
    CHECK_STR(on_get(&p, "1234", &v), "no-lower");
    buf_free(&v);
    pair_done(&p);
}

TEST(prefilter_regexp_hand_written)
{
    static const char table[] =
        "/^Subject: C:\\\\CoolProgs\\\\Pretty Park\\.exe/ REJECT\n"
        "/^(To|Cc):.*[%!@].*@/ 550 Directed routing rejected\n"
        "/^To: (.*)-outgoing@(.*)$/!/^To: owner-.*/ 550 Use ${1}@${2} instead\n"
        "/^Content-(Disposition|Type).*name\\s*=\\s*\"?.*\\.(bat|com|exe|pif|scr)\"?\\s*$/ ext $2\n"
        "/^subject: hello/ subject-hello\n"
        "/^SUBJECT: hello/i subject-case-sensitive\n"
        "/(a)(b)(c)/ abc=$3$2$1\n"
        "/x\\.y/ x-dot-y\n"
        "/x.y/ x-any-y\n"
        "/^foo$/m newline-foo\n"
        "/^bar$/ bar-whole\n"
        "/foo$/ foo-end\n"
        "/a{2,}b/ interval\n"
        "/a{,3}z/ gnu-interval\n"
        "/[[:digit:]]{5}/ five-digits\n"
        "/[^[:alpha:] ]{3}/ three-non-alpha\n"
        "/[\\d]/ bracket-backslash\n"
        "/\\<word\\>/ gnu-word\n"
        "/\\bword\\b/ gnu-b\n"
        "/(ab)\\1/ backref\n"
        "/[[.-.]]/ collating\n"
        "/[[=e=]]x/ equivalence\n"
        "/a+?b/ plus-question\n"
        "/x*+y/ star-plus\n"
        "/\\n/ letter-n-escape\n"
        "/w(o|0)rd/x basic-re\n"
        "!/[a-z]/ no-lower\n"
        "if /^to:/\n"
        "/example/ to-example\n"
        "endif\n"
        "if !/e/\n"
        "/x/ x-without-e\n"
        "endif\n"
        "/^$/ empty-key\n"
        "/tab.here/ tab-any\n";
    pair_t p;
    REQUIRE(0 == pair_open(&p, "regexp", table, RE_PREFILTER_ALWAYS));
    CHECK(p.covered >= 18);
    CHECK(p.covered < p.rules);
    SAME_ALL(&p, hand_keys, table);
    static const char *const more[] = {"aab", "aaaz", "a{,3}z", "nz", "word", "abab", "xxy",
                                       "x+y", "hyphen", "-", "ex", "\xe9x", "aa+?b", "w0rd",
                                       "w(o|0)rd", "ab", "tabxhere"};
    SAME_ALL(&p, more, table);
    buf_t v = BUF_INIT;
    CHECK_STR(on_get(&p, "To: list-outgoing@example.com", &v), "550 Use list@example.com instead");
    CHECK_STR(on_get(&p, "To: a%b@c@example.com", &v), "550 Directed routing rejected");
    CHECK_STR(on_get(&p, "Content-Disposition: attachment; filename=\"virus.exe\"", &v), "ext exe");
    CHECK_STR(on_get(&p, "Content-Type: application/octet-stream; name=x.PIF", &v), "ext PIF");
    CHECK_STR(on_get(&p, "subject: HELLO", &v), "subject-hello");
    buf_free(&v);
    pair_done(&p);
}

/* The seed-gateway tables as shipped (../shared, or $MOAT_SHARED). */
static bool seed_read(const char *name, buf_t *out)
{
    const char *root = getenv("MOAT_SHARED");
    char path[512];
    snprintf(path, sizeof path, "%s/examples/seed-gateway/%s", root ? root : "../shared", name);
    FILE *f = fopen(path, "r");
    if (!f) {
        harness_fail(__FILE__, __LINE__, "cannot open %s (set MOAT_SHARED)", path);
        return false;
    }
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
    return true;
}

static const char *const seed_keys[] = {
    "Content-Type: multipart/report; report-type=delivery-status;",
    "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
    "content-type: MULTIPART/REPORT; REPORT-TYPE=DELIVERY-STATUS;",
    "Content-Type: message/delivery-status; x",
    "Content-Type: message/delivery-status",
    "Subject: C:\\CoolProgs\\Pretty Park.exe",
    "Subject: C:\\CoolProgs\\Pretty ParkXexe",
    "To: a%b@example.com",
    "To: user@example.com",
    "Cc: x!y@example.com",
    "To: list-outgoing@example.com",
    "To: owner-list-outgoing@example.com",
    "From: list-outgoing@example.com",
    "Content-Disposition: attachment; filename=\"virus.exe\"",
    "Content-Disposition: attachment; filename=virus.EXE",
    "Content-Type: application/x-msdownload; name=\"a.scr\"  ",
    "Content-Type: text/plain; name=\"a.txt\"",
    "Content-Disposition: attachment; filename=\"virus.exe.txt\"",
    "Call us: 495-740 today",
    "Call us: 4 9 5 (7 4 0)",
    "\xd1\x87-g-s-\xd1\x82-4-\xd0\xbe",
    "495 741",
    "hello world",
    "",
    "owner-foo@example.com",
    "foo-outgoing@example.com",
    "dsl-1-2-3-4.example.net",
    "1-2-3-4.dsl.example.net",
    "adsl123.example.com",
    "ppp-10-0-0-1.example.com",
    "mail.example.com",
    "host-1-2.dyn.example.org",
    "bounces@example.com",
    "list-bounces@example.com",
    "confirm-return-12@example.com",
    "confirm@example.com",
};

/* Every seed table on its own and all of one type together, with the
 * prefilter forced on (they are below the automatic threshold). */
TEST(prefilter_seed_tables)
{
    static const struct {
        const char *type, *file;
    } seeds[] = {
        {"regexp", "header_checks"},   {"regexp", "mime_header_checks"},
        {"pcre", "body_checks"},       {"pcre", "access_sender.pcre"},
        {"regexp", "dsl_stoplist.txt"},
    };
    buf_t all_regexp = BUF_INIT, all_pcre = BUF_INIT;
    for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) {
        buf_t text = BUF_INIT;
        REQUIRE(seed_read(seeds[i].file, &text));
        buf_append(strcmp(seeds[i].type, "pcre") == 0 ? &all_pcre : &all_regexp, text.data, text.len);
        pair_t p;
        bool opened = pair_open(&p, seeds[i].type, buf_cstr(&text), RE_PREFILTER_ALWAYS) == 0;
        CHECK(opened);
        if (opened) {
            CHECK(p.covered > 0);
            SAME_ALL(&p, seed_keys, buf_cstr(&text));
            pair_done(&p);
        }
        buf_free(&text);
    }
    pair_t p;
    REQUIRE(0 == pair_open(&p, "regexp", buf_cstr(&all_regexp), RE_PREFILTER_ALWAYS));
    CHECK(p.covered > 0);
    SAME_ALL(&p, seed_keys, buf_cstr(&all_regexp));
    buf_t v = BUF_INIT;
    CHECK_STR(on_get(&p, "To: list-outgoing@example.com", &v),
              "550 Use list@example.com instead of the outgoing address");
    CHECK_STR(on_get(&p, "From: list-outgoing@example.com", &v), "-");
    CHECK(strncmp(on_get(&p, "Content-Disposition: attachment; filename=\"virus.exe\"", &v),
                  "REJECT", 6) == 0);
    pair_done(&p);
    REQUIRE(0 == pair_open(&p, "pcre", buf_cstr(&all_pcre), RE_PREFILTER_ALWAYS));
    CHECK(p.covered > 0);
    SAME_ALL(&p, seed_keys, buf_cstr(&all_pcre));
    CHECK(strncmp(on_get(&p, "Call us: 4 9 5 (7 4 0)", &v), "REJECT", 6) == 0);
    CHECK_STR(on_get(&p, "495 741", &v), "-");
    pair_done(&p);
    buf_free(&v);
    buf_free(&all_regexp);
    buf_free(&all_pcre);
}

/* ---- generated tables ---- */

typedef struct gen {
    uint64_t s;
    bool pcre;
    int groups; /* capturing groups of the pattern being made */
    int closed; /* of which closed: a back-reference may name them */
    bool basic; /* regexp: a basic RE (the x flag) */
    bool alt;   /* a top-level "|" was made: glibc refuses \1 after it */
    buf_t out;
} gen_t;

static uint64_t rnd(gen_t *g)
{
    uint64_t x = g->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t pick(gen_t *g, size_t n)
{
    return (size_t)(rnd(g) >> 33) % n;
}

static bool chance(gen_t *g, unsigned percent)
{
    return pick(g, 100) < percent;
}

static void gen_alt(gen_t *g, int depth);

/* One atom and maybe a quantifier.  Both dialects share most of the
 * syntax; each also gets the constructs only it knows (and some the
 * prefilter must refuse, so those paths run too). */
static void gen_atom(gen_t *g, int depth)
{
    static const char *const common[] = {"a", "b", "c", "x", "y", "A", "B", "1", "-", ".", "\\.",
                                         "\\-", "[abc]", "[^ab]", "[a-c]", "[[:digit:]]",
                                         "[[:alpha:]]", "[[:space:]]", "[x-z1]", " ", "[]a]"};
    static const char *const pcre_only[] = {"\\d", "\\w", "\\s", "\\S", "\\W", "[\\d.]", "\\x41",
                                            "\\t", "\\n", "[\\s-]", "\\h"};
    static const char *const ere_only[] = {"\\w", "\\s", "[\\a]", "\\W", "[[:upper:]]"};
    bool quantifiable = true;
    size_t k = pick(g, 100);
    if (k < 12 && depth < 2) {
        bool capture = !g->pcre || chance(g, 70);
        buf_puts(&g->out, capture ? "(" : "(?:");
        if (capture)
            g->groups++;
        gen_alt(g, depth + 1);
        buf_putc(&g->out, ')');
        if (capture)
            g->closed++;
    } else if (k < 22) {
        buf_puts(&g->out, g->pcre ? pcre_only[pick(g, sizeof pcre_only / sizeof *pcre_only)]
                                  : ere_only[pick(g, sizeof ere_only / sizeof *ere_only)]);
    } else if (k < 25 && depth == 0 && !g->alt && g->closed > 0 && !g->pcre && !g->basic) {
        buf_puts(&g->out, "\\1"); /* glibc ERE back-reference (ineligible) */
    } else if (k < 25 && g->pcre) {
        static const char *const zw[] = {"\\b", "(?=a)", "(?!b)", "(?<=x)", "\\B"};
        buf_puts(&g->out, zw[pick(g, sizeof zw / sizeof *zw)]);
        quantifiable = false;
    } else {
        buf_puts(&g->out, common[pick(g, sizeof common / sizeof *common)]);
    }
    if (!quantifiable || !chance(g, 30))
        return;
    static const char *const q[] = {"*", "+", "?", "{2}", "{1,2}", "{0,1}", "{2,}"};
    buf_puts(&g->out, q[pick(g, sizeof q / sizeof *q)]);
    if (g->pcre && chance(g, 10))
        buf_putc(&g->out, '?'); /* lazy */
}

static void gen_seq(gen_t *g, int depth)
{
    size_t n = 1 + pick(g, 4);
    for (size_t i = 0; i < n; i++)
        gen_atom(g, depth);
}

static void gen_alt(gen_t *g, int depth)
{
    gen_seq(g, depth);
    while (chance(g, 20)) {
        buf_putc(&g->out, '|');
        if (depth == 0)
            g->alt = true;
        gen_seq(g, depth);
    }
}

/* "/pattern/flags" appended to line; *groups = its capturing groups. */
static void gen_pattern(gen_t *g, buf_t *line, int *groups, bool *basic)
{
    buf_reset(&g->out);
    g->groups = g->closed = 0;
    g->alt = false;
    g->basic = !g->pcre && chance(g, 3);
    if (chance(g, 25))
        buf_putc(&g->out, '^');
    if (g->pcre && chance(g, 5))
        buf_puts(&g->out, chance(g, 50) ? "(?i)" : "(?-i)");
    gen_alt(g, 0);
    if (chance(g, 20))
        buf_putc(&g->out, '$');
    buf_putc(line, '/');
    buf_append(line, g->out.data, g->out.len);
    buf_putc(line, '/');
    *basic = g->basic;
    static const char pflags[] = "iimsAEU";
    static const char rflags[] = "iimm";
    size_t nf = chance(g, 50) ? 0 : 1 + pick(g, 2);
    for (size_t i = 0; i < nf; i++)
        buf_putc(line, g->pcre ? pflags[pick(g, sizeof pflags - 1)] : rflags[pick(g, sizeof rflags - 1)]);
    if (g->basic)
        buf_putc(line, 'x'); /* a basic RE: different syntax, never covered */
    *groups = *basic ? 0 : g->groups;
}

/* A table of about n rules with negations, "/p1/!/p2/" (regexp), if
 * blocks (nested up to two deep) and $n results. */
static void gen_table(gen_t *g, size_t n, buf_t *table)
{
    buf_reset(table);
    buf_t line = BUF_INIT;
    int open_ifs = 0;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&line);
        if (open_ifs > 0 && chance(g, 15)) {
            buf_puts(table, "endif\n");
            open_ifs--;
            continue;
        }
        int groups;
        bool basic;
        if (open_ifs < 2 && chance(g, 8)) {
            buf_puts(&line, chance(g, 30) ? "if !" : "if ");
            gen_pattern(g, &line, &groups, &basic);
            buf_append(table, line.data, line.len);
            buf_putc(table, '\n');
            open_ifs++;
            continue;
        }
        bool neg = chance(g, 12);
        if (neg)
            buf_putc(&line, '!');
        gen_pattern(g, &line, &groups, &basic);
        if (!g->pcre && chance(g, 12)) {
            int g2;
            bool b2;
            buf_putc(&line, '!');
            gen_pattern(g, &line, &g2, &b2);
        }
        buf_printf(&line, " R%zu", i);
        if (!neg && groups > 0 && chance(g, 50))
            buf_printf(&line, " [$%d]", 1 + (int)pick(g, (size_t)groups));
        buf_append(table, line.data, line.len);
        buf_putc(table, '\n');
    }
    while (open_ifs-- > 0)
        buf_puts(table, "endif\n");
    buf_free(&line);
}

static void gen_key(gen_t *g, buf_t *key)
{
    static const char alphabet[] = "abcxyAB1-. \n\t_z";
    static const char *const frags[] = {"abc", "ab", "xy", "AB", "1", "a-b", "x.y", "aa", "bb",
                                        "11111", "to:", "\n", "cab", "\xe9", "word"};
    buf_reset(key);
    size_t n = pick(g, 9);
    for (size_t i = 0; i < n; i++) {
        if (chance(g, 50))
            buf_puts(key, frags[pick(g, sizeof frags / sizeof *frags)]);
        else
            buf_putc(key, alphabet[pick(g, sizeof alphabet - 1)]);
    }
}

/* Many generated tables of each dialect: the ones both engines accept
 * (a generated pattern may be invalid in one of them) are compared on
 * many keys. */
static void generated(bool pcre, uint64_t seed, size_t tables, size_t rules, size_t keys)
{
    gen_t g = {.s = seed, .pcre = pcre};
    buf_t table = BUF_INIT, key = BUF_INIT;
    size_t opened = 0, covered = 0, total = 0, fails = 0;
    for (size_t t = 0; t < tables && fails < 5; t++) {
        gen_table(&g, rules, &table);
        pair_t p;
        int rc = pair_open(&p, pcre ? "pcre" : "regexp", buf_cstr(&table), RE_PREFILTER_ALWAYS);
        /* Both or neither: the prefilter never makes a table unopenable. */
        CHECK(rc >= 0);
        if (rc != 0)
            continue;
        opened++;
        covered += p.covered;
        total += p.rules;
        for (size_t k = 0; k < keys; k++) {
            gen_key(&g, &key);
            if (!same(&p, buf_cstr(&key), __FILE__, __LINE__, buf_cstr(&table)))
                fails++;
        }
        pair_done(&p);
    }
    /* Enough tables opened and enough rules were covered for the
     * comparison to mean something. */
    CHECK(opened * 2 > tables);
    CHECK(covered * 2 > total);
    buf_free(&table);
    buf_free(&key);
    buf_free(&g.out);
}

TEST(prefilter_generated_pcre)
{
    generated(true, 0x9e3779b97f4a7c15ULL, 25, 30, 800);
}

TEST(prefilter_generated_regexp)
{
    generated(false, 0xc2b2ae3d27d4eb4fULL, 30, 30, 800);
}

/* One large table each, above the automatic threshold. */
TEST(prefilter_generated_large)
{
    generated(true, 0x165667b19e3779f9ULL, 1, 200, 3000);
    generated(false, 0x27d4eb2f165667c5ULL, 1, 200, 3000);
}

/* ---- the switch, the threshold, the builder ---- */

TEST(prefilter_switch_and_threshold)
{
    buf_t small = BUF_INIT, big = BUF_INIT;
    for (int i = 0; i < RE_PREFILTER_MIN_RULES; i++) {
        if (i + 1 < RE_PREFILTER_MIN_RULES)
            buf_printf(&small, "/word%d/ R%d\n", i, i);
        buf_printf(&big, "/word%d/ R%d\n", i, i);
    }
    pair_t p;
    /* auto: below the threshold no prefilter, at it one. */
    REQUIRE(0 == pair_open(&p, "pcre", buf_cstr(&small), RE_PREFILTER_AUTO));
    CHECK_INT(p.covered, 0);
    CHECK(!re_table_prefilter_info(p.on, &p.covered, &p.rules));
    pair_done(&p);
    REQUIRE(0 == pair_open(&p, "regexp", buf_cstr(&big), RE_PREFILTER_AUTO));
    CHECK_INT(p.covered, RE_PREFILTER_MIN_RULES);
    CHECK_INT(p.rules, RE_PREFILTER_MIN_RULES);
    buf_t v = BUF_INIT;
    CHECK_STR(on_get(&p, "say word1 now", &v), "R1");
    CHECK_STR(on_get(&p, "say nothing", &v), "-");
    pair_done(&p);
    /* always: even a small table. */
    REQUIRE(0 == pair_open(&p, "pcre", buf_cstr(&small), RE_PREFILTER_ALWAYS));
    CHECK_INT(p.covered, RE_PREFILTER_MIN_RULES - 1);
    pair_done(&p);
    /* off: none, whatever the size. */
    REQUIRE(0 == pair_open(&p, "pcre", buf_cstr(&big), RE_PREFILTER_OFF));
    CHECK(!re_table_prefilter_info(p.on, &p.covered, &p.rules));
    pair_done(&p);
    /* The environment decides when the program has not. */
    const char *old = getenv("MOAT_RE_PREFILTER");
    char *saved = old ? xstrdup(old) : NULL;
    setenv("MOAT_RE_PREFILTER", "off", 1);
    CHECK_INT(re_prefilter_mode(), RE_PREFILTER_OFF);
    REQUIRE(0 == pair_open(&p, "pcre", buf_cstr(&big), RE_PREFILTER_DEFAULT));
    CHECK(!re_table_prefilter_info(p.on, &p.covered, &p.rules));
    pair_done(&p);
    setenv("MOAT_RE_PREFILTER", "always", 1);
    CHECK_INT(re_prefilter_mode(), RE_PREFILTER_ALWAYS);
    re_prefilter_set_mode(RE_PREFILTER_OFF);
    CHECK_INT(re_prefilter_mode(), RE_PREFILTER_OFF);
    re_prefilter_set_mode(RE_PREFILTER_DEFAULT);
    unsetenv("MOAT_RE_PREFILTER");
    CHECK_INT(re_prefilter_mode(), RE_PREFILTER_AUTO);
    if (saved)
        setenv("MOAT_RE_PREFILTER", saved, 1);
    free(saved);
    buf_free(&v);
    buf_free(&small);
    buf_free(&big);
}

/* Which patterns the builder takes, by their syntax. */
TEST(prefilter_eligibility)
{
    static const struct {
        re_dialect_t d;
        const char *pat, *flags;
        bool ok;
    } cases[] = {
        {RE_DIALECT_POSIX, "^(To|Cc):.*[%!@].*@", "", true},
        {RE_DIALECT_POSIX, "a\\.b\\;c\\/d", "", true},
        {RE_DIALECT_POSIX, "[[:digit:]]{3,5}", "i", true},
        {RE_DIALECT_POSIX, "[]a-]x", "", true},
        {RE_DIALECT_POSIX, "(a|b)*c+d?e{2}f{1,}", "m", true},
        {RE_DIALECT_POSIX, "[\\d]", "", false},
        {RE_DIALECT_POSIX, "\\<word\\>", "", false},
        {RE_DIALECT_POSIX, "\\`start", "", false},
        {RE_DIALECT_POSIX, "end\\'", "", false},
        {RE_DIALECT_POSIX, "(a)\\1", "", false},
        {RE_DIALECT_POSIX, "\\n", "", false},
        {RE_DIALECT_POSIX, "\\s\\S\\w\\W", "", true},
        {RE_DIALECT_POSIX, "[\\s]", "", false},
        {RE_DIALECT_POSIX, "[[.a.]]", "", false},
        {RE_DIALECT_POSIX, "[[=e=]]", "", false},
        {RE_DIALECT_POSIX, "[[:upper:]]", "", false}, /* i is on by default */
        {RE_DIALECT_POSIX, "[[:upper:]]", "i", true},
        {RE_DIALECT_POSIX, "a{,3}", "", false},
        {RE_DIALECT_POSIX, "a{x}", "", false},
        {RE_DIALECT_POSIX, "a*+", "", false},
        {RE_DIALECT_POSIX, "a+?", "", false},
        {RE_DIALECT_POSIX, "*a", "", false},
        {RE_DIALECT_POSIX, "(*a)", "", false},
        {RE_DIALECT_POSIX, "(?:a)", "", false},
        {RE_DIALECT_POSIX, "a|+b", "", false},
        {RE_DIALECT_POSIX, "[abc", "", false},
        {RE_DIALECT_POSIX, "word", "x", false},  /* basic RE */
        {RE_DIALECT_POSIX, "word", "xx", true},
        {RE_DIALECT_PCRE, "(?:4|\xd1\x87)[\\s\\-.]*(?:9|g)", "i", true},
        {RE_DIALECT_PCRE, "(a)\\1(?=b)(?<!c)", "", true},
        {RE_DIALECT_PCRE, "(?i)abc(?-s:.)", "AEU", true},
        {RE_DIALECT_PCRE, "w o r d", "x", false},
        {RE_DIALECT_PCRE, "(?x) w o r d", "", false},
        {RE_DIALECT_PCRE, "(?ix-s:a b)", "", false},
        {RE_DIALECT_PCRE, "(*UTF)a", "", false},
        {RE_DIALECT_PCRE, "a(*COMMIT)b", "", false},
        {RE_DIALECT_PCRE, "\\pL", "", false},
        {RE_DIALECT_PCRE, "\\P{Lu}", "", false},
        {RE_DIALECT_PCRE, "\\X", "", false},
        {RE_DIALECT_PCRE, "a\\C", "", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        re_prefilter_t *pf = re_prefilter_new(cases[i].d);
        bool ok = re_prefilter_offer(pf, 0, cases[i].pat, cases[i].flags, strlen(cases[i].flags), 1);
        if (ok != cases[i].ok)
            harness_fail(__FILE__, __LINE__, "%s \"%s\" flags \"%s\": offer %d, want %d",
                         cases[i].d == RE_DIALECT_PCRE ? "pcre" : "regexp", cases[i].pat,
                         cases[i].flags, ok, cases[i].ok);
        re_prefilter_free(&pf);
        CHECK(pf == NULL);
    }
}

/* Build and scan directly: Vectorscan's refusals (found per pattern and
 * through the compile error) leave the rest covered, and a scan sets
 * exactly the candidate bits, cleared again by the next scan. */
TEST(prefilter_builder_and_scan)
{
    re_prefilter_t *pf = re_prefilter_new(RE_DIALECT_PCRE);
    CHECK(re_prefilter_offer(pf, 0, "alpha", "", 0, 1));
    CHECK(re_prefilter_offer(pf, 2, "a?", "", 0, 3));       /* empty: always tried */
    CHECK(re_prefilter_offer(pf, 3, "x\\Ky", "", 0, 4));    /* \K: refused */
    CHECK(re_prefilter_offer(pf, 4, "beta|gamma", "", 0, 5));
    CHECK(re_prefilter_offer(pf, 70, "^delta$", "i", 1, 71)); /* case-sensitive */
    CHECK(re_prefilter_offer(pf, 99, "\\Gx", "", 0, 100));  /* \G: refused */
    buf_t why = BUF_INIT;
    CHECK_INT(re_prefilter_build(pf, 100, 1, 0, "test", &why), 3);
    CHECK_INT(why.len, 0);
    CHECK(re_prefilter_db_size(pf) > 0);
    CHECK(re_prefilter_covers(pf, 0));
    CHECK(!re_prefilter_covers(pf, 1));
    CHECK(!re_prefilter_covers(pf, 2));
    CHECK(!re_prefilter_covers(pf, 3));
    CHECK(re_prefilter_covers(pf, 4));
    CHECK(re_prefilter_covers(pf, 70));
    CHECK(!re_prefilter_covers(pf, 99));
    CHECK(!re_prefilter_covers(pf, 1000));
    const uint64_t *c = re_prefilter_candidates(pf);
    REQUIRE(re_prefilter_scan(pf, "ALPHA and Gamma", 15) == 0);
    CHECK_INT(c[0], (1ULL << 0) | (1ULL << 4));
    CHECK_INT(c[1], 0);
    REQUIRE(re_prefilter_scan(pf, "delta", 5) == 0);
    CHECK_INT(c[0], 0);
    CHECK_INT(c[1], 1ULL << (70 - 64));
    REQUIRE(re_prefilter_scan(pf, "DELTA", 5) == 0);
    CHECK_INT(c[0] | c[1], 0);
    REQUIRE(re_prefilter_scan(pf, "", 0) == 0);
    CHECK_INT(c[0] | c[1], 0);
    re_prefilter_free(&pf);
    re_prefilter_free(&pf); /* NULL is fine */

    /* Too few for the threshold: nothing built, no reason given. */
    pf = re_prefilter_new(RE_DIALECT_POSIX);
    CHECK(re_prefilter_offer(pf, 0, "abc", "", 0, 1));
    CHECK_INT(re_prefilter_build(pf, 1, 2, 0, "test", &why), 0);
    CHECK_INT(why.len, 0);
    re_prefilter_free(&pf);
    /* Too many: the same. */
    pf = re_prefilter_new(RE_DIALECT_POSIX);
    CHECK(re_prefilter_offer(pf, 0, "abc", "", 0, 1));
    CHECK(re_prefilter_offer(pf, 1, "def", "", 0, 2));
    CHECK_INT(re_prefilter_build(pf, 2, 1, 1, "test", &why), 0);
    CHECK_INT(why.len, 0);
    re_prefilter_free(&pf);
    buf_free(&why);
}

/* A rule the prefilter proves cannot match is not run at all, so a key
 * that would exhaust PCRE2's match limit on it is a miss with the
 * prefilter (a temporary failure without it); a key it could match still
 * reaches it. */
TEST(prefilter_skips_unmatchable_rule)
{
    buf_t table = BUF_INIT;
    buf_puts(&table, "/^x/ early\n/^(a+)+$/ catastrophic\n");
    for (int i = 0; i < RE_PREFILTER_MIN_RULES; i++)
        buf_printf(&table, "/word%d/ R%d\n", i, i);
    pair_t p;
    REQUIRE(0 == pair_open(&p, "pcre", buf_cstr(&table), RE_PREFILTER_AUTO));
    CHECK_INT(p.covered, RE_PREFILTER_MIN_RULES + 2);
    char key[64];
    memset(key, 'a', 40);
    str_copy(key + 40, "!", sizeof key - 40);
    buf_t v = BUF_INIT;
    CHECK_INT(map_lookup(p.off, key, &v, NULL), MAP_TEMPFAIL);
    CHECK_INT(map_lookup(p.on, key, &v, NULL), MAP_NOTFOUND);
    CHECK_STR(on_get(&p, "aaa", &v), "catastrophic");
    CHECK_STR(on_get(&p, "xyz", &v), "early");
    CHECK_STR(on_get(&p, "a word2", &v), "R2");
    buf_free(&v);
    buf_free(&table);
    pair_done(&p);
}

/* Patterns of single characters joined by class repeats (the seeds'
 * phone numbers) go to Vectorscan weakened, with guards for the repeats
 * that took more than one character: every spacing must still match. */
TEST(prefilter_weakened_repeats)
{
    static const char pcre_table[] =
        "/(?:4|\xd1\x87)[\\s\\-.]*(?:9|g)[\\s\\-.]*(?:5|s)[\\s\\-.]*[\\(\\s\\-.]*(?:7|\xd1\x82)[\\s\\-.]*"
        "(?:4|\xd1\x87)[\\s\\-.]*(?:0|o|\xd0\xbe)/i seed\n"
        "/1[\\s.()-]*2[\\s.()-]*3[\\s.()-]+4/ p1234\n"
        "/5[\\s.()-]*5[\\s.()-]*5/ p555\n"
        "/6[ ]*7[ ]*8/ p678\n"
        "/a[xy]*?b/ lazy\n"
        "/c\\s+d/ c-d\n"
        "/(e)[.]*\\1/ backref\n"
        "/f[.]*+g/ possessive\n";
    static const char regexp_table[] =
        "/1[[:space:].()-]*2[[:space:].()-]*3[[:space:].()-]+4/ p1234\n"
        "/5[[:space:].()-]*5[[:space:].()-]*5/ p555\n"
        "/6[ ]*7[ ]*8/ p678\n"
        "/a[xy]*b/ axyb\n"
        "/c[[:space:]]+d/ c-d\n"
        "/(e|f)[.]*g/ efg\n"
        "/h\\.*i/ h-dots-i\n"
        "/j-*k/ j-k\n";
    static const char *const keys[] = {
        "1234", "123 4", "1 2 3 4", "1  2   3    4", "1..2((3))4", "12 34", "123", "1234x",
        "555", "5 5 5", "5    5....5", "55", "678", "6  7  8", "6 7 8", "6\t7 8",
        "ab", "axyxyb", "a b", "cd", "c d", "c   d", "ee", "e..e", "fg", "f...g", "eg", "e..g",
        "hi", "h.i", "h....i", "jk", "j-k", "j----k",
        "495740", "4 9 5 7 4 0", "4--9..5 (7  4 0", "\xd1\x87 g s \xd1\x82 \xd1\x87 \xd0\xbe",
        "4 9 5   (  7 4    o", "4 9 5 8 4 0",
    };
    pair_t p;
    REQUIRE(0 == pair_open(&p, "pcre", pcre_table, RE_PREFILTER_ALWAYS));
    CHECK(p.covered >= 6);
    SAME_ALL(&p, keys, pcre_table);
    buf_t v = BUF_INIT;
    CHECK_STR(on_get(&p, "1  2   3    4", &v), "p1234");
    CHECK_STR(on_get(&p, "4--9..5 (7  4 0", &v), "seed");
    CHECK_STR(on_get(&p, "4 9 5   (  7 4    o", &v), "seed");
    CHECK_STR(on_get(&p, "5    5....5", &v), "p555");
    CHECK_STR(on_get(&p, "6  7  8", &v), "p678");
    pair_done(&p);
    REQUIRE(0 == pair_open(&p, "regexp", regexp_table, RE_PREFILTER_ALWAYS));
    CHECK_INT(p.covered, 8);
    SAME_ALL(&p, keys, regexp_table);
    CHECK_STR(on_get(&p, "1..2((3))4", &v), "p1234");
    CHECK_STR(on_get(&p, "h....i", &v), "h-dots-i");
    CHECK_STR(on_get(&p, "j----k", &v), "j-k");
    CHECK_STR(on_get(&p, "f...g", &v), "efg");
    pair_done(&p);
    buf_free(&v);
}
