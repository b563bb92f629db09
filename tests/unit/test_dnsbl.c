/* Unit tests for src/policy/dnsbl: sites and reply filters, query names,
 * reply templates (with Postfix's default_rbl_reply and the templates of
 * its smtpd_exp test), and the list-health state machine over simulated
 * time. */
#include "harness.h"

#include "policy/dnsbl.h"

#include <stdlib.h>

/* ------------------------------------------------------------ helpers */

static bool parses(const char *spec, bool with_weight)
{
    dnsbl_site_t s;
    buf_t err = BUF_INIT;
    int rc = dnsbl_site_parse(spec, with_weight, &s, &err);
    if (rc == 0)
        dnsbl_site_free(&s);
    buf_free(&err);
    return rc == 0;
}

/* The error text for a spec that must fail ("" if it parsed). */
static const char *parse_error(const char *spec, bool with_weight)
{
    static char msg[256];
    dnsbl_site_t s;
    buf_t err = BUF_INIT;
    msg[0] = 0;
    if (dnsbl_site_parse(spec, with_weight, &s, &err) == 0) {
        dnsbl_site_free(&s);
    } else {
        snprintf(msg, sizeof msg, "%s", buf_cstr(&err));
        if (!msg[0])
            snprintf(msg, sizeof msg, "(failed without a message)");
    }
    buf_free(&err);
    return msg;
}

static bool filter_matches(const char *filter, const char *addr)
{
    char spec[256];
    snprintf(spec, sizeof spec, "list.test=%s", filter);
    dnsbl_site_t s;
    buf_t err = BUF_INIT;
    bool ok = dnsbl_site_parse(spec, false, &s, &err) == 0;
    bool m = ok && dnsbl_site_match(&s, addr);
    if (ok)
        dnsbl_site_free(&s);
    else
        harness_fail(__FILE__, __LINE__, "filter %s: %s", filter, buf_cstr(&err));
    buf_free(&err);
    return m;
}

/* ------------------------------------------------------- site parsing */

TEST(dnsbl_site_plain)
{
    dnsbl_site_t s;
    buf_t err = BUF_INIT;
    REQUIRE(dnsbl_site_parse("ZEN.DnsBL.test.", false, &s, &err) == 0);
    CHECK_STR(s.zone, "zen.dnsbl.test");
    CHECK(s.filter_text == NULL);
    CHECK(s.priv == NULL);
    CHECK_INT(s.weight, 1);
    CHECK_INT(err.len, 0);
    /* Without a filter: any answer in 127.0.0.0/8, nothing else. */
    CHECK(dnsbl_site_match(&s, "127.0.0.2"));
    CHECK(dnsbl_site_match(&s, "127.0.0.1"));
    CHECK(dnsbl_site_match(&s, "127.255.255.254"));
    CHECK(!dnsbl_site_match(&s, "128.0.0.2"));
    CHECK(!dnsbl_site_match(&s, "10.0.0.2"));
    CHECK(!dnsbl_site_match(&s, "::1"));
    CHECK(!dnsbl_site_match(&s, "127.0.0"));
    CHECK(!dnsbl_site_match(&s, ""));
    CHECK(!dnsbl_site_match(&s, NULL));
    dnsbl_site_free(&s);
    CHECK(s.zone == NULL);
    dnsbl_site_free(&s);   /* twice is harmless */
    buf_free(&err);
}

TEST(dnsbl_site_filter_and_weight)
{
    dnsbl_site_t s;
    buf_t err = BUF_INIT;
    REQUIRE(dnsbl_site_parse("list.dnswl.test=127.0.[2..15].[2;3]*-4", true, &s, &err) == 0);
    CHECK_STR(s.zone, "list.dnswl.test");
    CHECK_STR(s.filter_text, "127.0.[2..15].[2;3]");
    CHECK_INT(s.weight, -4);
    CHECK(dnsbl_site_match(&s, "127.0.2.2"));
    CHECK(dnsbl_site_match(&s, "127.0.15.3"));
    CHECK(dnsbl_site_match(&s, "127.0.9.3"));
    CHECK(!dnsbl_site_match(&s, "127.0.1.2"));
    CHECK(!dnsbl_site_match(&s, "127.0.16.2"));
    CHECK(!dnsbl_site_match(&s, "127.0.2.4"));
    CHECK(!dnsbl_site_match(&s, "127.1.2.2"));
    dnsbl_site_free(&s);

    REQUIRE(dnsbl_site_parse("zen.dnsbl.test*3", true, &s, &err) == 0);
    CHECK_STR(s.zone, "zen.dnsbl.test");
    CHECK(s.filter_text == NULL);
    CHECK_INT(s.weight, 3);
    dnsbl_site_free(&s);

    REQUIRE(dnsbl_site_parse("zen.dnsbl.test=127.0.0.4", true, &s, &err) == 0);
    CHECK_INT(s.weight, 1);
    CHECK_STR(s.filter_text, "127.0.0.4");
    CHECK(dnsbl_site_match(&s, "127.0.0.4"));
    CHECK(!dnsbl_site_match(&s, "127.0.0.2"));
    dnsbl_site_free(&s);

    REQUIRE(dnsbl_site_parse("a.test*+7", true, &s, &err) == 0);
    CHECK_INT(s.weight, 7);
    dnsbl_site_free(&s);
    REQUIRE(dnsbl_site_parse("a.test*0", true, &s, &err) == 0);
    CHECK_INT(s.weight, 0);
    dnsbl_site_free(&s);
    REQUIRE(dnsbl_site_parse("a.test*-1000000", true, &s, &err) == 0);
    CHECK_INT(s.weight, -1000000);
    dnsbl_site_free(&s);
    buf_free(&err);
}

TEST(dnsbl_filter_forms)
{
    /* A plain address. */
    CHECK(filter_matches("127.0.0.2", "127.0.0.2"));
    CHECK(!filter_matches("127.0.0.2", "127.0.0.3"));
    /* Ranges, inclusive at both ends. */
    CHECK(filter_matches("127.0.0.[2..11]", "127.0.0.2"));
    CHECK(filter_matches("127.0.0.[2..11]", "127.0.0.11"));
    CHECK(!filter_matches("127.0.0.[2..11]", "127.0.0.1"));
    CHECK(!filter_matches("127.0.0.[2..11]", "127.0.0.12"));
    /* Sets and sets of ranges. */
    CHECK(filter_matches("127.0.0.[2;4]", "127.0.0.4"));
    CHECK(!filter_matches("127.0.0.[2;4]", "127.0.0.3"));
    CHECK(filter_matches("127.0.0.[1;3..5]", "127.0.0.1"));
    CHECK(!filter_matches("127.0.0.[1;3..5]", "127.0.0.2"));
    CHECK(filter_matches("127.0.0.[1;3..5]", "127.0.0.3"));
    CHECK(filter_matches("127.0.0.[1;3..5]", "127.0.0.5"));
    CHECK(!filter_matches("127.0.0.[1;3..5]", "127.0.0.6"));
    CHECK(filter_matches("127.0.0.[7..9;1]", "127.0.0.1"));
    CHECK(filter_matches("127.0.0.[5]", "127.0.0.5"));
    CHECK(filter_matches("127.0.0.[3..3]", "127.0.0.3"));
    /* Patterns in any octet, the whole byte range. */
    CHECK(filter_matches("[0..255].[0..255].[0..255].[0..255]", "0.0.0.0"));
    CHECK(filter_matches("[0..255].[0..255].[0..255].[0..255]", "255.255.255.255"));
    CHECK(filter_matches("[126;127].0.[0..255].[2;10..20]", "126.0.200.15"));
    CHECK(!filter_matches("[126;127].0.[0..255].[2;10..20]", "128.0.200.15"));
    CHECK(filter_matches("0.0.0.0", "0.0.0.0"));
    /* Answers must be strict dotted quads. */
    CHECK(!filter_matches("127.0.0.2", "127.0.0.02"));
    CHECK(!filter_matches("127.0.0.2", "127.0.0.2 "));
    CHECK(!filter_matches("127.0.0.2", "127.0.2"));
    CHECK(!filter_matches("127.0.0.2", "::ffff:127.0.0.2"));
}

TEST(dnsbl_site_errors)
{
    /* Each error names its problem. */
    CHECK_STR(parse_error("", false), "empty DNS list name");
    CHECK_STR(parse_error("=127.0.0.2", false), "empty DNS list name");
    CHECK_STR(parse_error(".", false), "empty DNS list name");
    CHECK(strstr(parse_error("*3", true), "empty DNS list name") != NULL);
    CHECK(strstr(parse_error("bad..zone", false), "bad DNS list name \"bad..zone\"") != NULL);
    CHECK(strstr(parse_error(".zone.test", false), "bad DNS list name") != NULL);
    CHECK(strstr(parse_error("zone test", false), "bad DNS list name") != NULL);
    CHECK(strstr(parse_error("zone/test", false), "bad DNS list name") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.x", false), "bad reply filter \"127.0.0.x\"") != NULL);
    CHECK(strstr(parse_error("zone.test=", false), "bad reply filter \"\": empty") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.256", false), "out of range 0..255") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[1..256]", false), "out of range") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.0001", false), "more than three digits") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0", false), "need four octets") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.", false), "need four octets") != NULL);
    CHECK(strstr(parse_error("zone.test=127", false), "need four octets") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.1.2", false), "more than four octets") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.1x", false), "junk after the fourth octet") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0..1", false), "empty octet") != NULL);
    CHECK(strstr(parse_error("zone.test=.127.0.0.1", false), "empty octet") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[]", false), "empty item") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[1;]", false), "empty item") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[;1]", false), "empty item") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[1", false), "missing ']'") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[1.2]", false), "expected ';', '..' or ']'") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[1..]", false), "expected a number") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.[11..2]", false), "a > b") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.-1", false), "expected a number") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.1=2", false), "junk") != NULL);
    /* Weights: only where allowed, and only integers in bounds. */
    CHECK(strstr(parse_error("zone.test*3", false), "weight \"*3\" not allowed here") != NULL);
    CHECK(strstr(parse_error("zone.test*x", true), "bad weight \"*x\"") != NULL);
    CHECK(strstr(parse_error("zone.test*", true), "bad weight \"*\"") != NULL);
    CHECK(strstr(parse_error("zone.test*-", true), "bad weight") != NULL);
    CHECK(strstr(parse_error("zone.test*3*4", true), "bad weight") != NULL);
    CHECK(strstr(parse_error("zone.test*3=127.0.0.2", true), "bad weight") != NULL);
    CHECK(strstr(parse_error("zone.test*1000001", true), "bad weight") != NULL);
    CHECK(strstr(parse_error("zone.test*99999999999999999999", true), "bad weight") != NULL);
    CHECK(strstr(parse_error("zone.test=127.0.0.2*1.5", true), "bad weight") != NULL);
    /* Long names: a 63-octet label is fine, 64 is not. */
    char spec[400];
    memset(spec, 'a', 63);
    strcpy(spec + 63, ".test");
    CHECK(parses(spec, false));
    memset(spec, 'a', 64);
    strcpy(spec + 64, ".test");
    CHECK(strstr(parse_error(spec, false), "bad DNS list name") != NULL);
    /* 254 octets in all is too long. */
    char *p = spec;
    for (int i = 0; i < 4; i++) {
        memset(p, 'b', 62);
        p[62] = '.';
        p += 63;
    }
    strcpy(p, "ab");   /* 4*63 + 2 = 254 */
    CHECK(!parses(spec, false));
    p[1] = 0;          /* 253 */
    CHECK(parses(spec, false));
}

TEST(dnsbl_site_failure_leaves_nothing)
{
    dnsbl_site_t s;
    buf_t err = BUF_INIT;
    buf_puts(&err, "old text");
    CHECK(dnsbl_site_parse("zone.test=1.2.3.4.5", false, &s, &err) == -1);
    CHECK(s.zone == NULL && s.filter_text == NULL && s.priv == NULL);
    CHECK(strncmp(buf_cstr(&err), "bad reply filter", 16) == 0);   /* reset, not appended */
    dnsbl_site_free(&s);
    buf_free(&err);
}

/* ------------------------------------------------------ classification */

TEST(dnsbl_classify_answers)
{
    CHECK_INT(dnsbl_classify("127.0.0.2"), DNSBL_ANS_LISTED);
    CHECK_INT(dnsbl_classify("127.0.0.1"), DNSBL_ANS_LISTED);
    CHECK_INT(dnsbl_classify("127.255.254.255"), DNSBL_ANS_LISTED);
    CHECK_INT(dnsbl_classify("127.255.255.0"), DNSBL_ANS_ERRCODE);
    CHECK_INT(dnsbl_classify("127.255.255.252"), DNSBL_ANS_ERRCODE);
    CHECK_INT(dnsbl_classify("127.255.255.254"), DNSBL_ANS_ERRCODE);
    CHECK_INT(dnsbl_classify("127.255.255.255"), DNSBL_ANS_ERRCODE);
    CHECK_INT(dnsbl_classify("128.0.0.2"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("192.0.2.1"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("0.0.0.0"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("::1"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("::ffff:127.0.0.2"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("2001:db8::2"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("garbage"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("127.0.0"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify("127.0.0.2x"), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify(""), DNSBL_ANS_FOREIGN);
    CHECK_INT(dnsbl_classify(NULL), DNSBL_ANS_FOREIGN);
    CHECK_STR(dnsbl_ans_name(DNSBL_ANS_ERRCODE), "error code");
    CHECK_STR(dnsbl_ans_name(DNSBL_ANS_FOREIGN), "foreign");
    CHECK_STR(dnsbl_ans_name(DNSBL_ANS_LISTED), "listed");
}

/* --------------------------------------------------------- query names */

TEST(dnsbl_query_names_ipv4)
{
    buf_t q = BUF_INIT;
    CHECK(dnsbl_query_name_addr("192.0.2.1", "zen.dnsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "1.2.0.192.zen.dnsbl.test");
    CHECK(dnsbl_query_name_addr("127.0.0.2", "ZEN.DNSBL.Test.", &q));
    CHECK_STR(buf_cstr(&q), "2.0.0.127.zen.dnsbl.test");
    CHECK(dnsbl_query_name_addr("0.0.0.0", "x", &q));
    CHECK_STR(buf_cstr(&q), "0.0.0.0.x");
    CHECK(dnsbl_query_name_addr("255.254.253.252", "bl.test", &q));
    CHECK_STR(buf_cstr(&q), "252.253.254.255.bl.test");
    /* IPv4-mapped IPv6 is the IPv4 address. */
    CHECK(dnsbl_query_name_addr("::ffff:192.0.2.1", "zen.dnsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "1.2.0.192.zen.dnsbl.test");
    CHECK(dnsbl_query_name_addr("::FFFF:c000:0201", "zen.dnsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "1.2.0.192.zen.dnsbl.test");
    /* Not addresses. */
    CHECK(!dnsbl_query_name_addr("192.0.2", "zen.dnsbl.test", &q));
    CHECK_INT(q.len, 0);
    CHECK(!dnsbl_query_name_addr("192.0.2.256", "zen.dnsbl.test", &q));
    CHECK(!dnsbl_query_name_addr("192.0.2.1 ", "zen.dnsbl.test", &q));
    CHECK(!dnsbl_query_name_addr("[192.0.2.1]", "zen.dnsbl.test", &q));
    CHECK(!dnsbl_query_name_addr("host.example", "zen.dnsbl.test", &q));
    CHECK(!dnsbl_query_name_addr("", "zen.dnsbl.test", &q));
    CHECK(!dnsbl_query_name_addr(NULL, "zen.dnsbl.test", &q));
    /* Bad zones. */
    CHECK(!dnsbl_query_name_addr("192.0.2.1", "", &q));
    CHECK(!dnsbl_query_name_addr("192.0.2.1", ".", &q));
    CHECK(!dnsbl_query_name_addr("192.0.2.1", "a..b", &q));
    CHECK(!dnsbl_query_name_addr("192.0.2.1", "a b", &q));
    CHECK(!dnsbl_query_name_addr("192.0.2.1", NULL, &q));
    CHECK_INT(q.len, 0);
    buf_free(&q);
}

TEST(dnsbl_query_names_ipv6)
{
    buf_t q = BUF_INIT;
    CHECK(dnsbl_query_name_addr("2001:db8::1", "zen.dnsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.dnsbl.test");
    /* Written any way, the same address gives the same name. */
    buf_t q2 = BUF_INIT;
    CHECK(dnsbl_query_name_addr("2001:0DB8:0000:0000:0000:0000:0000:0001", "zen.dnsbl.test", &q2));
    CHECK_STR(buf_cstr(&q2), buf_cstr(&q));
    CHECK(dnsbl_query_name_addr("2001:db8:1234:5678:9abc:def0:fedc:ba98", "bl.test", &q));
    CHECK_STR(buf_cstr(&q), "8.9.a.b.c.d.e.f.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2.bl.test");
    CHECK(dnsbl_query_name_addr("::1", "bl.test", &q));
    CHECK_STR(buf_cstr(&q), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test");
    CHECK(!dnsbl_query_name_addr("2001:db8::1::2", "bl.test", &q));
    CHECK(!dnsbl_query_name_addr("fe80::1%eth0", "bl.test", &q));
    CHECK(!dnsbl_query_name_addr("IPv6:2001:db8::1", "bl.test", &q));
    buf_free(&q);
    buf_free(&q2);
}

TEST(dnsbl_query_names_length)
{
    /* An IPv6 query takes 64 octets; with a 189-octet zone it is 253. */
    char zone[300];
    char *p = zone;
    for (int i = 0; i < 3; i++) {
        memset(p, 'z', 60);
        p[60] = '.';
        p += 61;
    }
    memset(p, 'y', 6);
    p[6] = 0;   /* 3*61 + 6 = 189 */
    REQUIRE(strlen(zone) == 189);
    buf_t q = BUF_INIT;
    CHECK(dnsbl_query_name_addr("2001:db8::1", zone, &q));
    CHECK_INT(q.len, 253);
    p[6] = 'y';
    p[7] = 0;   /* 190: the name would be 254 */
    CHECK(!dnsbl_query_name_addr("2001:db8::1", zone, &q));
    CHECK_INT(q.len, 0);
    /* The same zone is fine for IPv4 (8 + 190). */
    CHECK(dnsbl_query_name_addr("10.20.30.40", zone, &q));
    CHECK_INT(q.len, 12 + 190);
    /* A 64-octet zone label. */
    char lz[80];
    memset(lz, 'l', 64);
    strcpy(lz + 64, ".test");
    CHECK(!dnsbl_query_name_addr("10.0.0.1", lz, &q));
    memset(lz, 'l', 63);
    strcpy(lz + 63, ".test");
    CHECK(dnsbl_query_name_addr("10.0.0.1", lz, &q));
    buf_free(&q);
}

TEST(dnsbl_query_names_domain)
{
    buf_t q = BUF_INIT;
    CHECK(dnsbl_query_name_domain("Example.TLD.", "rhsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "example.tld.rhsbl.test");
    CHECK(dnsbl_query_name_domain("mail-1.ex_ample.com", "RHSBL.test.", &q));
    CHECK_STR(buf_cstr(&q), "mail-1.ex_ample.com.rhsbl.test");
    CHECK(dnsbl_query_name_domain("localhost", "rhsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "localhost.rhsbl.test");
    CHECK(dnsbl_query_name_domain("1.2.3.example", "rhsbl.test", &q));
    CHECK_STR(buf_cstr(&q), "1.2.3.example.rhsbl.test");
    /* Not domains, or not valid DNS names. */
    CHECK(!dnsbl_query_name_domain("", "rhsbl.test", &q));
    CHECK_INT(q.len, 0);
    CHECK(!dnsbl_query_name_domain(".", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("example..tld", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain(".example.tld", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("example.tld..", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("exa mple.tld", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("user@example.tld", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("ex\nample.tld", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("[192.0.2.1]", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("192.0.2.1", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("example.123", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("12345", "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain(NULL, "rhsbl.test", &q));
    CHECK(!dnsbl_query_name_domain("example.tld", "", &q));
    CHECK_INT(q.len, 0);
    /* Length: labels up to 63, names up to 253. */
    char d[300];
    memset(d, 'd', 63);
    strcpy(d + 63, ".tld");
    CHECK(dnsbl_query_name_domain(d, "rhsbl.test", &q));
    memset(d, 'd', 64);
    strcpy(d + 64, ".tld");
    CHECK(!dnsbl_query_name_domain(d, "rhsbl.test", &q));
    char *p = d;
    for (int i = 0; i < 3; i++) {
        memset(p, 'x', 62);
        p[62] = '.';
        p += 63;
    }
    memset(p, 'x', 52);
    p[52] = 0;   /* 241 + ".rhsbl.test" (11) = 252 */
    CHECK(dnsbl_query_name_domain(d, "rhsbl.test", &q));
    CHECK_INT(q.len, 252);
    CHECK(dnsbl_query_name_domain(d, "rhsbl.tests", &q));
    CHECK_INT(q.len, 253);
    CHECK(!dnsbl_query_name_domain(d, "rhsbl.testss", &q));
    CHECK_INT(q.len, 0);
    buf_free(&q);
}

/* ----------------------------------------------------------- templates */

typedef struct kv {
    const char *name, *value;
} kv_t;

static const char *kv_get(void *arg, const char *name, size_t len)
{
    for (const kv_t *k = arg; k->name; k++)
        if (strlen(k->name) == len && memcmp(k->name, name, len) == 0)
            return k->value;
    return NULL;
}

static const kv_t rbl_vars[] = {
    {"rbl_code", "554"},
    {"rbl_class", "Client host"},
    {"rbl_what", "1.2.3.4"},
    {"rbl_domain", "zen.dnsbl.test"},
    {"rbl_reason", "Listed in zen"},
    {"rbl_txt", "Listed in zen"},
    {"client_address", "1.2.3.4"},
    {"empty", ""},
    {"x", "X"},
    {"y", "Y"},
    {"dollar", "$x ${y}"},
    {"ctl", "a\r\nb\tc\x7f" "d\x01\xc3\xa9"},
    {NULL, NULL},
};

static const char *expand(const char *tmpl)
{
    static char text[2048];
    buf_t out = BUF_INIT;
    template_expand(tmpl, kv_get, (void *)rbl_vars, &out);
    snprintf(text, sizeof text, "%s", buf_cstr(&out));
    buf_free(&out);
    return text;
}

#define DEFAULT_RBL_REPLY \
    "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}"

TEST(dnsbl_template_basics)
{
    CHECK_STR(expand(""), "");
    CHECK_STR(expand("plain text"), "plain text");
    CHECK_STR(expand("$x"), "X");
    CHECK_STR(expand("${x}"), "X");
    CHECK_STR(expand("$(x)"), "X");
    CHECK_STR(expand("a$x.b${y}c"), "aX.bYc");
    CHECK_STR(expand("$x$y"), "XY");
    /* $name takes every name character: "$xy" is the name xy (unknown). */
    CHECK_STR(expand("$xy"), "$xy");
    CHECK_STR(expand("${x}y"), "Xy");
    /* $$ is a dollar, and is not the start of a reference. */
    CHECK_STR(expand("$$"), "$");
    CHECK_STR(expand("$$x"), "$x");
    CHECK_STR(expand("$$$x"), "$X");
    CHECK_STR(expand("cost: 5$$"), "cost: 5$");
    /* A '$' that starts nothing is literal. */
    CHECK_STR(expand("$"), "$");
    CHECK_STR(expand("a $ b"), "a $ b");
    CHECK_STR(expand("$-x"), "$-x");
    CHECK_STR(expand("${"), "${");
    CHECK_STR(expand("${}"), "${}");
    CHECK_STR(expand("${x"), "${x");
    CHECK_STR(expand("${x y}"), "${x y}");
    CHECK_STR(expand("${x?abc"), "${x?abc");
    CHECK_STR(expand("${x?a{b}"), "${x?a{b}");
    CHECK_STR(expand("$("), "$(");
    CHECK_STR(expand("$(x}"), "$(x}");
    /* Unknown names stay as written, in every form. */
    CHECK_STR(expand("$nosuch"), "$nosuch");
    CHECK_STR(expand("${nosuch}"), "${nosuch}");
    CHECK_STR(expand("$(nosuch)"), "$(nosuch)");
    CHECK_STR(expand("${nosuch?text $x}"), "${nosuch?text $x}");
    CHECK_STR(expand("${nosuch:text}"), "${nosuch:text}");
    CHECK_STR(expand("[$nosuch] $x"), "[$nosuch] X");
}

TEST(dnsbl_template_conditionals)
{
    CHECK_STR(expand("${x?yes}"), "yes");
    CHECK_STR(expand("${x:no}"), "");
    CHECK_STR(expand("${empty?yes}"), "");
    CHECK_STR(expand("${empty:no}"), "no");
    CHECK_STR(expand("${empty}"), "");
    CHECK_STR(expand("$empty."), ".");
    CHECK_STR(expand("$(x?yes)"), "yes");
    /* The text is expanded, also nested conditionals. */
    CHECK_STR(expand("${x?[$y]}"), "[Y]");
    CHECK_STR(expand("${x?a${y?b${empty:c}d}e}"), "abcde");
    CHECK_STR(expand("${x?a${empty?b}c}"), "ac");
    CHECK_STR(expand("${empty:${x?${y}}}"), "Y");
    CHECK_STR(expand("${x?$$}"), "$");
    CHECK_STR(expand("${x?${nosuch}}"), "${nosuch}");
    /* Text of a branch not taken is not looked at. */
    CHECK_STR(expand("${empty?${x}$$}z"), "z");
    /* Braces in the text nest; the other bracket kind does not count. */
    CHECK_STR(expand("${x?{a}}"), "{a}");
    CHECK_STR(expand("${x?(a}"), "(a");
    CHECK_STR(expand("$(x?(a))"), "(a)");
    CHECK_STR(expand("${x?a:b}"), "a:b");
    CHECK_STR(expand("${x?}"), "");
    CHECK_STR(expand("${empty:}"), "");
}

TEST(dnsbl_template_values)
{
    /* Values are never expanded again. */
    CHECK_STR(expand("$dollar"), "$x ${y}");
    CHECK_STR(expand("${dollar?[$dollar]}"), "[$x ${y}]");
    /* Control characters, DEL and 8-bit bytes in values become '?';
     * the template's own text is kept. */
    CHECK_STR(expand("<$ctl>"), "<a??b?c?d???" ">");   /* split: "??>" is a trigraph */
    CHECK_STR(expand("tab\there"), "tab\there");
}

TEST(dnsbl_template_deep_nesting)
{
    /* 40 nested conditionals: all expanded up to the limit, the rest
     * copied as written, and no crash. */
    buf_t t = BUF_INIT, out = BUF_INIT;
    for (int i = 0; i < 40; i++)
        buf_puts(&t, "${x?");
    buf_puts(&t, "$y");
    for (int i = 0; i < 40; i++)
        buf_putc(&t, '}');
    template_expand(buf_cstr(&t), kv_get, (void *)rbl_vars, &out);
    CHECK(out.len > 0);
    CHECK(strstr(buf_cstr(&out), "${x?") != NULL);
    /* 10 levels are expanded completely. */
    buf_reset(&t);
    for (int i = 0; i < 10; i++)
        buf_puts(&t, "${x?<");
    buf_puts(&t, "$y");
    for (int i = 0; i < 10; i++)
        buf_puts(&t, ">}");
    template_expand(buf_cstr(&t), kv_get, (void *)rbl_vars, &out);
    CHECK_STR(buf_cstr(&out), "<<<<<<<<<<Y>>>>>>>>>>");
    buf_free(&t);
    buf_free(&out);
}

/* The final reply as restrict.c builds it: expand, then Postfix's
 * rbl_reject_reply checks. */
static const char *rbl_reply(const char *tmpl, const kv_t *vars)
{
    static char out[600];
    buf_t x = BUF_INIT;
    template_expand(tmpl, kv_get, (void *)vars, &x);
    int code;
    char dsn[16];
    const char *text;
    if (dnsbl_reply_parse(buf_cstr(&x), &code, dsn, sizeof dsn, &text))
        snprintf(out, sizeof out, "%d %s %s", code, dsn, text);
    else
        snprintf(out, sizeof out, "450 4.7.1 Service unavailable");
    buf_free(&x);
    return out;
}

TEST(dnsbl_template_postfix_default)
{
    CHECK_STR(expand(DEFAULT_RBL_REPLY),
              "554 Service unavailable; Client host [1.2.3.4] blocked using zen.dnsbl.test; Listed in zen");
    CHECK_STR(rbl_reply(DEFAULT_RBL_REPLY, rbl_vars),
              "554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.dnsbl.test; Listed in zen");
    /* Without a TXT record, as in Postfix's smtpd_check.ref. */
    static const kv_t no_txt[] = {
        {"rbl_code", "554"},       {"rbl_class", "Client host"}, {"rbl_what", "127.0.0.2"},
        {"rbl_domain", "dnsbltest.porcupine.org"}, {"rbl_reason", ""}, {NULL, NULL},
    };
    CHECK_STR(rbl_reply(DEFAULT_RBL_REPLY, no_txt),
              "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using dnsbltest.porcupine.org");
    /* smtpd_dns_filter.ref: the same with the zone's TXT reason. */
    static const kv_t txt[] = {
        {"rbl_code", "554"},       {"rbl_class", "Client host"}, {"rbl_what", "127.0.0.2"},
        {"rbl_domain", "dnsbltest.porcupine.org"}, {"rbl_reason", "DNS blocklist test"}, {NULL, NULL},
    };
    CHECK_STR(rbl_reply(DEFAULT_RBL_REPLY, txt), "554 5.7.1 Service unavailable; Client host [127.0.0.2] "
                                                 "blocked using dnsbltest.porcupine.org; DNS blocklist test");
    /* smtpd_exp.ref: rbl_reply_maps templates of Postfix's test table. */
    CHECK_STR(rbl_reply("$rbl_code SERVICE UNAVAILABLE; $rbl_class [$rbl_what] blocked using "
                        "$rbl_domain${rbl_reason?; $rbl_reason}",
                        txt),
              "554 5.7.1 SERVICE UNAVAILABLE; Client host [127.0.0.2] blocked using dnsbltest.porcupine.org; "
              "DNS blocklist test");
    static const kv_t txt3[] = {
        {"rbl_code", "554"},       {"rbl_class", "Client host"}, {"rbl_what", "127.0.0.3"},
        {"rbl_domain", "dnsbltest.porcupine.org"}, {"rbl_reason", "DNS blocklist test"}, {NULL, NULL},
    };
    CHECK_STR(rbl_reply("$rbl_code service unavailable; $rbl_class [$rbl_what] blocked using "
                        "$rbl_domain=127.0.0.3 ${rbl_reason?; $rbl_reason}",
                        txt3),
              "554 5.7.1 service unavailable; Client host [127.0.0.3] blocked using "
              "dnsbltest.porcupine.org=127.0.0.3 ; DNS blocklist test");
    /* A 4xx rbl_code gives a 4.7.1 status. */
    static const kv_t code450[] = {
        {"rbl_code", "450"},       {"rbl_class", "Sender address"}, {"rbl_what", "a@example.tld"},
        {"rbl_domain", "rhsbl.test"}, {"rbl_reason", ""}, {NULL, NULL},
    };
    CHECK_STR(rbl_reply(DEFAULT_RBL_REPLY, code450),
              "450 4.7.1 Service unavailable; Sender address [a@example.tld] blocked using rhsbl.test");
}

TEST(dnsbl_reply_parse_rules)
{
    int code = 0;
    char dsn[16];
    const char *text = NULL;
    CHECK(dnsbl_reply_parse("554 Blocked", &code, dsn, sizeof dsn, &text));
    CHECK_INT(code, 554);
    CHECK_STR(dsn, "5.7.1");
    CHECK_STR(text, "Blocked");
    /* A given status code is kept, its class follows the reply code. */
    CHECK(dnsbl_reply_parse("550 5.7.23 SPF says no", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "5.7.23");
    CHECK_STR(text, "SPF says no");
    CHECK(dnsbl_reply_parse("554 4.7.1 mixed", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "5.7.1");
    CHECK(dnsbl_reply_parse("451 5.3.0 mixed", &code, dsn, sizeof dsn, &text));
    CHECK_INT(code, 451);
    CHECK_STR(dsn, "4.3.0");
    CHECK(dnsbl_reply_parse("450 2.0.0 odd", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "4.0.0");
    /* Not a status code: part of the text. */
    CHECK(dnsbl_reply_parse("554 5.7 text", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "5.7.1");
    CHECK_STR(text, "5.7 text");
    CHECK(dnsbl_reply_parse("554 5.7.1234 text", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "5.7.1");
    CHECK_STR(text, "5.7.1234 text");
    CHECK(dnsbl_reply_parse("554 3.7.1 text", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "5.7.1");
    CHECK_STR(text, "3.7.1 text");
    CHECK(dnsbl_reply_parse("554 5.7.1x text", &code, dsn, sizeof dsn, &text));
    CHECK_STR(text, "5.7.1x text");
    /* Empty text. */
    CHECK(dnsbl_reply_parse("554 ", &code, dsn, sizeof dsn, &text));
    CHECK_STR(text, "Service unavailable");
    CHECK(dnsbl_reply_parse("554 5.7.2", &code, dsn, sizeof dsn, &text));
    CHECK_STR(dsn, "5.7.2");
    CHECK_STR(text, "Service unavailable");
    /* Bad codes. */
    CHECK(!dnsbl_reply_parse("554", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("554-text", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("250 ok", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("654 no", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("55 no", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("5x4 no", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("$rbl_code no", &code, dsn, sizeof dsn, &text));
    CHECK(!dnsbl_reply_parse("", &code, dsn, sizeof dsn, &text));
    /* A template without a code falls back like Postfix. */
    CHECK_STR(rbl_reply("Go away", rbl_vars), "450 4.7.1 Service unavailable");
}

/* ---------------------------------------------------------- list health */

TEST(dnsbl_health_probe_cycle)
{
    dnsbl_health_t *h = dnsbl_health_new(300);
    buf_t name = BUF_INIT, why = BUF_INIT;
    const char *z = "zen.dnsbl.test";
    time_t t = 1000000;

    /* Unknown lists are healthy. */
    CHECK(!dnsbl_health_broken(h, z, &why));
    CHECK_INT(why.len, 0);
    CHECK(!dnsbl_health_should_log(h, z, t));

    /* First look: a probe is due, and stays due until it is reported. */
    CHECK(dnsbl_health_probe_due(h, z, t, &name));
    CHECK_STR(buf_cstr(&name), "1.0.0.127.zen.dnsbl.test");
    CHECK(dnsbl_health_probe_due(h, z, t, &name));
    CHECK_STR(buf_cstr(&name), "1.0.0.127.zen.dnsbl.test");
    CHECK(dnsbl_health_probe_due(h, z, t + 10, &name));

    /* It passes: healthy, nothing due until the period is over. */
    dnsbl_health_probe(h, z, false, false, t + 1);
    CHECK(!dnsbl_health_broken(h, z, NULL));
    CHECK(!dnsbl_health_probe_due(h, z, t + 300, &name));
    CHECK_INT(name.len, 0);
    CHECK(dnsbl_health_probe_due(h, z, t + 301, &name));

    /* The next probe finds the test point listed. */
    dnsbl_health_probe_answer(h, z, "127.0.0.2", false, t + 302);
    CHECK(dnsbl_health_broken(h, z, &why));
    CHECK_STR(buf_cstr(&why), "answers the RFC 5782 test point 127.0.0.1 with 127.0.0.2");
    CHECK(dnsbl_health_broken(h, z, NULL));

    /* Logged once per period while broken. */
    CHECK(dnsbl_health_should_log(h, z, t + 302));
    CHECK(!dnsbl_health_should_log(h, z, t + 303));
    CHECK(!dnsbl_health_should_log(h, z, t + 601));
    CHECK(dnsbl_health_should_log(h, z, t + 602));
    CHECK(!dnsbl_health_should_log(h, z, t + 602));

    /* Answers are ignored and counted. */
    dnsbl_health_ignored(h, z);
    dnsbl_health_ignored(h, z);

    /* Still broken until a probe passes: one is due a period later. */
    CHECK(!dnsbl_health_probe_due(h, z, t + 500, &name));
    CHECK(dnsbl_health_broken(h, z, NULL));
    CHECK(dnsbl_health_probe_due(h, z, t + 602, &name));
    dnsbl_health_probe(h, z, false, false, t + 603);
    CHECK(!dnsbl_health_broken(h, z, &why));
    CHECK_INT(why.len, 0);
    CHECK(!dnsbl_health_should_log(h, z, t + 2000));

    dnsbl_health_stats_t st;
    dnsbl_health_get_stats(h, z, &st);
    CHECK_INT(st.probes, 3);
    CHECK_INT(st.broken_probes, 1);
    CHECK_INT(st.ignored, 2);
    CHECK_INT(st.error_codes, 0);
    CHECK_INT(st.foreign, 0);

    buf_free(&name);
    buf_free(&why);
    dnsbl_health_free(&h);
    CHECK(h == NULL);
    dnsbl_health_free(&h);
}

TEST(dnsbl_health_tempfail_keeps_state)
{
    dnsbl_health_t *h = dnsbl_health_new(60);
    buf_t name = BUF_INIT;
    const char *z = "bl.test";
    time_t t = 5000;
    CHECK(dnsbl_health_probe_due(h, z, t, &name));
    dnsbl_health_probe(h, z, true, false, t);   /* listed: broken */
    CHECK(dnsbl_health_broken(h, z, NULL));
    CHECK(dnsbl_health_probe_due(h, z, t + 60, &name));
    /* No answer: still broken, and the probe is due again at once. */
    dnsbl_health_probe(h, z, false, true, t + 61);
    CHECK(dnsbl_health_broken(h, z, NULL));
    CHECK(dnsbl_health_probe_due(h, z, t + 61, &name));
    CHECK(dnsbl_health_probe_due(h, z, t + 61, &name));
    dnsbl_health_probe(h, z, true, true, t + 62);   /* tempfail wins over listed */
    CHECK(dnsbl_health_broken(h, z, NULL));
    CHECK(dnsbl_health_probe_due(h, z, t + 63, &name));
    dnsbl_health_probe(h, z, false, false, t + 64);
    CHECK(!dnsbl_health_broken(h, z, NULL));

    /* A healthy list stays healthy through a tempfail. */
    CHECK(dnsbl_health_probe_due(h, z, t + 200, &name));
    dnsbl_health_probe(h, z, false, true, t + 200);
    CHECK(!dnsbl_health_broken(h, z, NULL));

    dnsbl_health_stats_t st;
    dnsbl_health_get_stats(h, z, &st);
    CHECK_INT(st.probes, 2);          /* tempfails are not answers */
    CHECK_INT(st.broken_probes, 1);
    buf_free(&name);
    dnsbl_health_free(&h);
}

TEST(dnsbl_health_due_until_reported)
{
    /* Asking does not claim the probe: a session that resumes after its
     * lookup, or another one, sees it due until someone reports. */
    dnsbl_health_t *h = dnsbl_health_new(100);
    buf_t name = BUF_INIT;
    CHECK(dnsbl_health_probe_due(h, "bl.test", 0, &name));
    CHECK(dnsbl_health_probe_due(h, "bl.test", 99, &name));
    CHECK(dnsbl_health_probe_due(h, "bl.test", 100, &name));
    dnsbl_health_probe(h, "bl.test", false, false, 100);
    CHECK(!dnsbl_health_probe_due(h, "bl.test", 199, &name));
    CHECK(dnsbl_health_probe_due(h, "bl.test", 200, &name));
    /* A clock that went back makes the probe due. */
    dnsbl_health_probe(h, "bl.test", false, false, 1000);
    CHECK(!dnsbl_health_probe_due(h, "bl.test", 1001, &name));
    CHECK(dnsbl_health_probe_due(h, "bl.test", 500, &name));
    dnsbl_health_probe(h, "bl.test", false, false, 500);
    CHECK(!dnsbl_health_probe_due(h, "bl.test", 501, &name));
    buf_free(&name);
    dnsbl_health_free(&h);
}

TEST(dnsbl_health_bad_answers)
{
    dnsbl_health_t *h = dnsbl_health_new(300);
    buf_t name = BUF_INIT, why = BUF_INIT;
    time_t t = 42;
    const char *z = "zen.dnsbl.test";

    CHECK(dnsbl_health_probe_due(h, z, t, &name));
    dnsbl_health_probe(h, z, false, false, t);
    CHECK(!dnsbl_health_broken(h, z, NULL));

    /* A listing is not a problem. */
    dnsbl_health_bad_answer(h, z, DNSBL_ANS_LISTED, "127.0.0.2", t + 1);
    CHECK(!dnsbl_health_broken(h, z, NULL));

    /* Spamhaus-style error code. */
    dnsbl_health_bad_answer(h, z, DNSBL_ANS_ERRCODE, "127.255.255.254", t + 2);
    CHECK(dnsbl_health_broken(h, z, &why));
    CHECK_STR(buf_cstr(&why), "answered 127.255.255.254, an error code (queries refused or over quota)");
    CHECK(dnsbl_health_should_log(h, z, t + 2));
    CHECK(!dnsbl_health_should_log(h, z, t + 3));

    /* A foreign answer while broken: reason follows, no second log line. */
    dnsbl_health_bad_answer(h, z, DNSBL_ANS_FOREIGN, "192.0.2.99", t + 4);
    CHECK(dnsbl_health_broken(h, z, &why));
    CHECK_STR(buf_cstr(&why), "answered 192.0.2.99, outside 127.0.0.0/8");
    CHECK(!dnsbl_health_should_log(h, z, t + 4));

    /* Broken until the next passing probe, which is not due before the
     * period is over. */
    CHECK(!dnsbl_health_probe_due(h, z, t + 299, &name));
    CHECK(dnsbl_health_broken(h, z, NULL));
    CHECK(dnsbl_health_probe_due(h, z, t + 300, &name));
    dnsbl_health_probe_answer(h, z, NULL, false, t + 300);
    CHECK(!dnsbl_health_broken(h, z, NULL));

    /* Broken again at once: still at most one log line per period. */
    dnsbl_health_bad_answer(h, z, DNSBL_ANS_FOREIGN, "198.51.100.1", t + 301);
    CHECK(!dnsbl_health_should_log(h, z, t + 301));
    CHECK(dnsbl_health_should_log(h, z, t + 302));

    dnsbl_health_stats_t st;
    dnsbl_health_get_stats(h, z, &st);
    CHECK_INT(st.error_codes, 1);
    CHECK_INT(st.foreign, 2);
    CHECK_INT(st.probes, 2);
    CHECK_INT(st.broken_probes, 0);
    buf_free(&name);
    buf_free(&why);
    dnsbl_health_free(&h);
}

TEST(dnsbl_health_probe_reasons)
{
    dnsbl_health_t *h = dnsbl_health_new(10);
    buf_t why = BUF_INIT, name = BUF_INIT;
    dnsbl_health_probe_answer(h, "a.test", "127.255.255.254", false, 1);
    CHECK(dnsbl_health_broken(h, "a.test", &why));
    CHECK_STR(buf_cstr(&why), "answers the RFC 5782 test point 127.0.0.1 with 127.255.255.254, an error code "
                              "(queries refused or over quota)");
    dnsbl_health_probe_answer(h, "b.test", "203.0.113.5", false, 1);
    CHECK(dnsbl_health_broken(h, "b.test", &why));
    CHECK_STR(buf_cstr(&why), "answers the RFC 5782 test point 127.0.0.1 with 203.0.113.5, outside 127.0.0.0/8");
    dnsbl_health_probe(h, "c.test", true, false, 1);
    CHECK(dnsbl_health_broken(h, "c.test", &why));
    CHECK_STR(buf_cstr(&why), "answers the RFC 5782 test point 127.0.0.1");

    /* A domain list is probed at invalid.ZONE. */
    dnsbl_health_domain_list(h, "dbl.test");
    CHECK(dnsbl_health_probe_due(h, "dbl.test", 1, &name));
    CHECK_STR(buf_cstr(&name), "invalid.dbl.test");
    dnsbl_health_probe_answer(h, "dbl.test", "127.0.1.2", false, 2);
    CHECK(dnsbl_health_broken(h, "dbl.test", &why));
    CHECK_STR(buf_cstr(&why), "answers the RFC 5782 test point invalid with 127.0.1.2");

    /* Zones are told apart, case-insensitively. */
    CHECK(!dnsbl_health_broken(h, "d.test", NULL));
    CHECK(dnsbl_health_broken(h, "A.TEST", NULL));
    dnsbl_health_stats_t st;
    dnsbl_health_get_stats(h, "nosuch.test", &st);
    CHECK_INT(st.probes + st.broken_probes + st.error_codes + st.foreign + st.ignored, 0);
    dnsbl_health_get_stats(h, "a.test", &st);
    CHECK_INT(st.broken_probes, 1);
    buf_free(&why);
    buf_free(&name);
    dnsbl_health_free(&h);
}

TEST(dnsbl_health_many_zones)
{
    /* More zones than the first allocation; each keeps its own state. */
    dnsbl_health_t *h = dnsbl_health_new(60);
    buf_t name = BUF_INIT;
    char z[32];
    for (int i = 0; i < 40; i++) {
        snprintf(z, sizeof z, "l%d.test", i);
        CHECK(dnsbl_health_probe_due(h, z, 0, &name));
        dnsbl_health_probe(h, z, i % 3 == 0, false, 0);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(z, sizeof z, "l%d.test", i);
        CHECK(dnsbl_health_broken(h, z, NULL) == (i % 3 == 0));
        CHECK(dnsbl_health_should_log(h, z, 1) == (i % 3 == 0));
    }
    buf_free(&name);
    dnsbl_health_free(&h);
}
