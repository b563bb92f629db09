/*
 * The SPF evaluator (src/policy/spf*.c): record syntax, macros (the RFC
 * 7208 section 7.4 examples among them), names, the Received-SPF text,
 * and check_host() itself against a small authoritative DNS server that
 * runs in this process on UDP 127.0.0.1 (answers from a table, query log
 * kept), reached through moat's real resolver and a session memo, so the
 * replay model is what is tested: PENDING, the wake, parallel lookups,
 * and a finished evaluation costing no further DNS traffic.
 */
#include "harness.h"
#include "dns_testlib.h"

#include "core/buf.h"
#include "core/util.h"
#include "dns/dns.h"
#include "policy/spf-private.h"
#include "policy/spf.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------ record syntax */

TEST(spf_record_syntax_good)
{
    static const char *const good[] = {
        "v=spf1",
        "V=SpF1 -ALL",
        "v=spf1  a  -all ",
        "v=spf1 a mx ptr ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com exists:%{i}.x.example ?all",
        "v=spf1 a/24//64 mx//64 a:example.com/0 mx:example.com//128 -all",
        "v=spf1 a:foo:bar/baz.example.com -all",
        "v=spf1 a:foo.example.xn--zckzah -all",
        "v=spf1 a:%{d} mx:%{o} exists:%{l1r-}.%{d2}._x.example.com. ptr:%{d}.example",
        "v=spf1 redirect=_spf.example.com",
        "v=spf1 exp=explain.%{d} -all",
        "v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
        "v=spf1 default=pass",
        "v=spf1 default=+",
        "v=spf1 foo=%{c}%{r}%{t}",
        "v=spf1 ip6:::1.1.1.1/0 ip4:1.1.1.1/0",
        "v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all",
        "v=spf1 redirect=t5.example.com ~all",
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        buf_t why = BUF_INIT;
        if (spf_record_check(good[i], &why) != 0)
            harness_fail(__FILE__, __LINE__, "\"%s\" refused: %s", good[i], buf_cstr(&why));
        buf_free(&why);
    }
}

TEST(spf_record_syntax_bad)
{
    static const struct {
        const char *record, *why;
    } bad[] = {
        {"v=spf10", "not an SPF record"},
        {"spf1 -all", "not an SPF record"},
        {"v=spf1 ip4:1.2.3.4 -all moo", "\"moo\": unknown mechanism"},
        {"v=spf1 moo.cow/far_out=man:dog/cat", "unknown mechanism"},
        {"v=spf1 redirect:t2.example.com", "\"redirect:t2.example.com\": unknown mechanism"},
        {"v=spf1 a:foo-bar -all", "\"a:foo-bar\""},
        {"v=spf1 a:111.222.33.44", "top-level label"},
        {"v=spf1 a:abc.123", "top-level label"},
        {"v=spf1 a:example.-com", "top-level label"},
        {"v=spf1 a:museum", "\"a:museum\""},
        {"v=spf1 a:museum.", "\"a:museum.\""},
        {"v=spf1 a:example.com:8080", "top-level label"},
        {"v=spf1 a:", "empty domain-spec"},
        {"v=spf1 a/33 -all", "bad IPv4 CIDR"},
        {"v=spf1 a//129 -all", "bad IPv6 CIDR"},
        {"v=spf1 a/24/64 -all", "\"a/24/64\""},
        {"v=spf1 mx/33", "bad IPv4 CIDR"},
        {"v=spf1 ip4:1.2.3.4/032", "bad IPv4 CIDR"},
        {"v=spf1 ip4:1.2.3.4/33", "bad IPv4 CIDR"},
        {"v=spf1 ip4", "needs \":network\""},
        {"v=spf1 ip4:1.2.3", "bad IPv4 network"},
        {"v=spf1 ip4:1.2.3.4:8080", "bad IPv4 network"},
        {"v=spf1 ip4:01.2.3.4", "bad IPv4 network"},
        {"v=spf1 ip4:1.2.3.4//32", "bad IPv4 network"},
        {"v=spf1 ip6::CAFE::BABE", "bad IPv6 network"},
        {"v=spf1 ip6:::1.1.1.1/129", "bad IPv6 CIDR"},
        {"v=spf1 ip6:::1.1.1.1//33", "bad IPv6 network"},
        {"v=spf1 -all.", "takes no argument"},
        {"v=spf1 -all:foobar", "takes no argument"},
        {"v=spf1 -all/8", "takes no argument"},
        {"v=spf1 ptr/0 -all", "\"ptr/0\""},
        {"v=spf1 ptr:", "empty domain-spec"},
        {"v=spf1 include", "needs \":domain\""},
        {"v=spf1 include: -all", "empty domain-spec"},
        {"v=spf1 include:ip5.example.com/24 -all", "top-level label"},
        {"v=spf1 exists", "needs"},
        {"v=spf1 exists:mail.example.com/24", "top-level label"},
        {"v=spf1 1up=foo", "\"1up=foo\""},
        {"v=spf1 =all", "unknown mechanism"},
        {"v=spf1 -all foo=%abc", "bad macro \"%a"},
        {"v=spf1 exp= -all", "empty domain-spec"},
        {"v=spf1 exp=-all", "\"exp=-all\""},
        {"v=spf1 ?all redirect=", "empty domain-spec"},
        {"v=spf1 exp=a.example.com -all exp=b.example.com", "appears twice"},
        {"v=spf1 redirect=a.example.com redirect=a.example.com", "appears twice"},
        {"v=spf1 -all exp=%{r}.example.com", "only allowed in exp= text"},
        {"v=spf1 a:%{a}.example.com -all", "unknown macro letter"},
        {"v=spf1 exists:%(ir).sbl.example.com ?all", "'%' must be followed"},
        {"v=spf1 exists:foo%.sbl.example.com ?all", "'%' must be followed"},
        {"v=spf1 exists:%{d0}.example.com", "must not be 0"},
        {"v=spf1 exists:%{d2x}.example.com", "expected transformers"},
        {"v=spf1 a:ctrl.example.com\rptr -all", "\\x0d"},
        {"v=spf1 a:foo.example.com\x01", "\\x01"},
        {"v=spf1 \x80" "a:example.net -all", "\"\\x80a:example.net\": unknown mechanism"},
        {"v=spf1 a:example.net \x96" "all", "\\x96all"},
        {"v=spf1 a:\xEF\xBB\xBFgarbage.example.net -all", "\\xef\\xbb\\xbf"},
        {"v=spf1 +redirect=x.example.com", "a modifier takes no qualifier"},
        {"v=spf1 mx:%{o}.", "must end in"},
        {"v=spf1 ip4:192.0.2.5\tinclude:x.example.com", "bad IPv4 network"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf_t why = BUF_INIT;
        if (spf_record_check(bad[i].record, &why) == 0)
            harness_fail(__FILE__, __LINE__, "\"%s\" accepted", bad[i].record);
        else if (!strstr(buf_cstr(&why), bad[i].why))
            harness_fail(__FILE__, __LINE__, "\"%s\": why \"%s\", want \"%s\" in it", bad[i].record, buf_cstr(&why),
                         bad[i].why);
        buf_free(&why);
    }
}

TEST(spf_record_parse_terms)
{
    spf_record_t r;
    buf_t why = BUF_INIT;
    REQUIRE(spf_record_parse("v=spf1 -A:%{d}/24//64 ~mx ?ip4:192.0.2.0/25 ip6:2001:DB8::/48 ALL exp=x.%{d} "
                             "redirect=r.example.com foo=bar",
                             &r, &why) == 0);
    REQUIRE(r.n == 5);
    CHECK(r.terms[0].qual == '-' && r.terms[0].mech == SPF_M_A);
    CHECK_STR(r.terms[0].spec, "%{d}");
    CHECK_INT(r.terms[0].cidr4, 24);
    CHECK_INT(r.terms[0].cidr6, 64);
    CHECK_STR(r.terms[0].text, "-A:%{d}/24//64");
    CHECK(r.terms[1].qual == '~' && r.terms[1].mech == SPF_M_MX && r.terms[1].spec == NULL);
    CHECK_INT(r.terms[1].cidr4, 32);
    CHECK_INT(r.terms[1].cidr6, 128);
    CHECK(r.terms[2].qual == '?' && r.terms[2].mech == SPF_M_IP4);
    CHECK_INT(r.terms[2].cidr4, 25);
    CHECK(r.terms[2].net[0] == 192 && r.terms[2].net[3] == 0);
    CHECK(r.terms[3].qual == '+' && r.terms[3].mech == SPF_M_IP6);
    CHECK_INT(r.terms[3].cidr6, 48);
    CHECK(r.terms[3].net[0] == 0x20 && r.terms[3].net[1] == 0x01 && r.terms[3].net[2] == 0x0d);
    CHECK(r.terms[4].mech == SPF_M_ALL && r.has_all);
    CHECK_STR(r.exp, "x.%{d}");
    CHECK_STR(r.redirect, "r.example.com");
    spf_record_free(&r);
    CHECK(spf_is_record("v=spf1"));
    CHECK(spf_is_record("V=SPF1 -all"));
    CHECK(!spf_is_record("v=spf1mx"));
    CHECK(!spf_is_record("v=spf10"));
    CHECK(!spf_is_record("v=spf"));
    CHECK(!spf_is_record(" v=spf1"));
    buf_free(&why);
}

/* -------------------------------------------------------------- macros */

static void expect_macro(int line, const spf_request_t *req, const char *domain, bool exp, const char *in,
                         const char *want)
{
    buf_t out = BUF_INIT, why = BUF_INIT;
    if (spf_macro_expand(in, req, domain, exp, &out, &why) != 0)
        harness_fail(__FILE__, line, "\"%s\": %s", in, buf_cstr(&why));
    else if (strcmp(buf_cstr(&out), want) != 0)
        harness_fail(__FILE__, line, "\"%s\" -> \"%s\", want \"%s\"", in, buf_cstr(&out), want);
    buf_free(&out);
    buf_free(&why);
}

TEST(spf_macro_rfc7208_examples)
{
    /* RFC 7208 section 7.4, every example. */
    spf_request_t req = {.ip = "192.0.2.3", .sender = "strong-bad@email.example.com", .helo = "mx.example.org",
                         .receiver = "mx.example.net", .now = 1700000000};
    const char *d = "email.example.com";
    expect_macro(__LINE__, &req, d, false, "%{s}", "strong-bad@email.example.com");
    expect_macro(__LINE__, &req, d, false, "%{o}", "email.example.com");
    expect_macro(__LINE__, &req, d, false, "%{d}", "email.example.com");
    expect_macro(__LINE__, &req, d, false, "%{d4}", "email.example.com");
    expect_macro(__LINE__, &req, d, false, "%{d3}", "email.example.com");
    expect_macro(__LINE__, &req, d, false, "%{d2}", "example.com");
    expect_macro(__LINE__, &req, d, false, "%{d1}", "com");
    expect_macro(__LINE__, &req, d, false, "%{dr}", "com.example.email");
    expect_macro(__LINE__, &req, d, false, "%{d2r}", "example.email");
    expect_macro(__LINE__, &req, d, false, "%{l}", "strong-bad");
    expect_macro(__LINE__, &req, d, false, "%{l-}", "strong.bad");
    expect_macro(__LINE__, &req, d, false, "%{lr}", "strong-bad");
    expect_macro(__LINE__, &req, d, false, "%{lr-}", "bad.strong");
    expect_macro(__LINE__, &req, d, false, "%{l1r-}", "strong");
    expect_macro(__LINE__, &req, d, false, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com");
    expect_macro(__LINE__, &req, d, false, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com");
    expect_macro(__LINE__, &req, d, false, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}",
                 "bad.strong.lp.3.2.0.192.in-addr._spf.example.com");
    expect_macro(__LINE__, &req, d, false, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
                 "3.2.0.192.in-addr.strong.lp._spf.example.com");
    expect_macro(__LINE__, &req, d, false, "%{d2}.trusted-domains.example.net",
                 "example.com.trusted-domains.example.net");
    req.ip = "2001:db8::cb01";
    expect_macro(__LINE__, &req, d, false, "%{ir}.%{v}._spf.%{d2}",
                 "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com");
}

TEST(spf_macro_letters_and_escapes)
{
    spf_request_t req = {.ip = "2001:DB8:0:0:0:0:0:1", .sender = "~jack&jill=up-a_b3.c@e8.example.com",
                         .helo = "JUMPIN' JUPITER", .receiver = "mx.example.net", .now = 1700000000};
    const char *d = "e8.example.com";
    /* upper case: the same value, URL-escaped (RFC 3986 unreserved stay) */
    expect_macro(__LINE__, &req, d, true, "http://example.com/why.html?l=%{L}",
                 "http://example.com/why.html?l=~jack%26jill%3Dup-a_b3.c");
    expect_macro(__LINE__, &req, d, false, "%{H}", "JUMPIN%27%20JUPITER");
    expect_macro(__LINE__, &req, d, false, "%{h}", "JUMPIN' JUPITER");
    expect_macro(__LINE__, &req, d, false, "%%%_%-", "% %20");
    expect_macro(__LINE__, &req, d, false, "%{v}", "ip6");
    expect_macro(__LINE__, &req, d, false, "%{i}",
                 "2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1");
    expect_macro(__LINE__, &req, d, false, "%{i2r}", "0.2");
    expect_macro(__LINE__, &req, d, false, "%{i2}", "0.1");
    /* only in exp= text: c (RFC 5952 form), r, t; and spaces */
    expect_macro(__LINE__, &req, d, true, "%{c} at %{r} since %{t}", "2001:db8::1 at mx.example.net since 1700000000");
    /* several delimiters, and a digit larger than the parts */
    req.sender = "foo-bar+zip+quux@e12.example.com";
    expect_macro(__LINE__, &req, d, false, "%{l2r+-}", "bar.foo");
    expect_macro(__LINE__, &req, d, false, "%{l99}", "foo-bar+zip+quux");
    expect_macro(__LINE__, &req, d, false, "%{l1000000000000r+-}", "quux.zip.bar.foo");
    expect_macro(__LINE__, &req, d, false, "%{o1}.%{D}", "com.e8.example.com");
    /* p without DNS, an IPv4-mapped client, no receiver */
    spf_request_t r2 = {.ip = "::ffff:192.0.2.7", .sender = "@example.net", .helo = "h.example"};
    expect_macro(__LINE__, &r2, NULL, true, "%{p} %{c} %{i} %{v} %{r} %{s} %{l} %{d}",
                 "unknown 192.0.2.7 192.0.2.7 in-addr unknown postmaster@example.net postmaster example.net");
    /* the null sender and the HELO identity: postmaster@HELO */
    spf_request_t r3 = {.ip = "192.0.2.7", .sender = "", .helo = "mail.example.org."};
    expect_macro(__LINE__, &r3, NULL, false, "%{s}|%{o}|%{d}|%{h}",
                 "postmaster@mail.example.org|mail.example.org|mail.example.org|mail.example.org.");
    spf_request_t r4 = {.ip = "192.0.2.7", .sender = "a@b.example", .helo = "h.example", .helo_identity = true};
    expect_macro(__LINE__, &r4, NULL, false, "%{s}", "postmaster@h.example");
}

TEST(spf_macro_errors)
{
    spf_request_t req = {.ip = "192.0.2.3", .sender = "a@example.com", .helo = "h"};
    static const char *const bad[] = {"%", "%a", "%{", "%{x}", "%{d", "%{d0}", "%{d2x}", "%{c}", "%{r}", "%{t}",
                                      "a b", "caf\xc3\xa9", "%{d}%"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf_t out = BUF_INIT, why = BUF_INIT;
        if (spf_macro_expand(bad[i], &req, NULL, false, &out, &why) == 0)
            harness_fail(__FILE__, __LINE__, "\"%s\" accepted: \"%s\"", bad[i], buf_cstr(&out));
        else
            CHECK(why.len > 0 && out.len == 0);
        buf_free(&out);
        buf_free(&why);
    }
    /* exp text allows spaces and c/r/t, but still no 8-bit octets */
    buf_t out = BUF_INIT, why = BUF_INIT;
    CHECK(spf_macro_expand("\xef\xbb\xbf" "Explanation", &req, NULL, true, &out, &why) != 0);
    /* expansion is bounded */
    buf_t big = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        buf_puts(&big, "%{s}");
    CHECK(spf_macro_expand(buf_cstr(&big), &req, NULL, false, &out, &why) != 0);
    CHECK(strstr(buf_cstr(&why), "longer than") != NULL);
    buf_free(&big);
    buf_free(&out);
    buf_free(&why);
}

TEST(spf_names)
{
    CHECK(spf_domain_ok("example.com"));
    CHECK(spf_domain_ok("example.com."));
    CHECK(spf_domain_ok("foo:bar/baz.example.com"));
    CHECK(spf_domain_ok("a12345678901234567890123456789012345678901234567890123456789012.example.com"));
    CHECK(!spf_domain_ok("a123456789012345678901234567890123456789012345678901234567890123.example.com"));
    CHECK(!spf_domain_ok("A...example.com"));
    CHECK(!spf_domain_ok("A2345678"));
    CHECK(!spf_domain_ok("[1.2.3.5]"));
    CHECK(!spf_domain_ok("1.2.3.5"));
    CHECK(!spf_domain_ok(""));
    CHECK(!spf_domain_ok("."));
    CHECK(!spf_domain_ok("a b.example.com"));

    /* section 7.3: over 253 octets, labels go from the left */
    buf_t n = BUF_INIT;
    buf_puts(&n, "foobar.");
    for (int i = 0; i < 8; i++)
        buf_puts(&n, "somewhat.long.exp.example.com.");
    buf_puts(&n, "example.com.");
    CHECK(spf_query_name(&n));
    CHECK(n.len <= 253);
    CHECK(strncmp(buf_cstr(&n), "somewhat.long.exp.example.com.somewhat", 38) == 0);
    CHECK(buf_cstr(&n)[n.len - 1] == 'm');
    buf_reset(&n);
    buf_puts(&n, "mail.example...com");
    CHECK(!spf_query_name(&n));
    buf_reset(&n);
    buf_puts(&n, "macro%percent  space%20url-space.example.com");
    CHECK(spf_query_name(&n));   /* spaces are octets like others: the resolver escapes them */
    buf_reset(&n);
    for (int i = 0; i < 70; i++)
        buf_putc(&n, 'x');
    buf_puts(&n, ".bar");
    CHECK(!spf_query_name(&n));
    buf_free(&n);

    unsigned char ip[16];
    CHECK_INT(spf_ip_parse("192.0.2.1", ip), 4);
    CHECK_INT(spf_ip_parse("::FFFF:1.2.3.4", ip), 4);
    CHECK(ip[0] == 1 && ip[3] == 4);
    CHECK_INT(spf_ip_parse("2001:db8::1", ip), 6);
    CHECK_INT(spf_ip_parse("1.2.3", ip), 0);
    buf_t r = BUF_INIT;
    CHECK_INT(spf_ip_parse("2001:db8::1", ip), 6);
    spf_ip_reverse_name(6, ip, &r);
    CHECK_STR(buf_cstr(&r), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    buf_reset(&r);
    CHECK_INT(spf_ip_parse("192.0.2.1", ip), 4);
    spf_ip_reverse_name(4, ip, &r);
    CHECK_STR(buf_cstr(&r), "1.2.0.192.in-addr.arpa");
    buf_free(&r);
    unsigned char net[16] = {192, 0, 2, 0};
    CHECK(spf_ip_in(4, ip, net, 24));
    CHECK(spf_ip_in(4, ip, net, 0));
    CHECK(!spf_ip_in(4, ip, net, 32));
    net[3] = 0x01;
    CHECK(spf_ip_in(4, ip, net, 32));
    net[2] = 3;
    CHECK(spf_ip_in(4, ip, net, 23));
    CHECK(!spf_ip_in(4, ip, net, 24));
}

TEST(spf_result_names)
{
    static const char *const names[] = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"};
    for (int i = 0; i < (int)ARRAY_LEN(names); i++) {
        CHECK_STR(spf_result_name((spf_result_t)i), names[i]);
        CHECK_INT(spf_result_parse(names[i]), i);
    }
    CHECK_INT(spf_result_parse("PASS"), SPF_PASS);
    CHECK_INT(spf_result_parse("pending"), -1);
    CHECK_INT(spf_result_parse("hardfail"), -1);
}

TEST(spf_received_header)
{
    spf_request_t req = {.ip = "192.0.2.1", .sender = "a@example.com", .helo = "mail.example.com",
                         .receiver = "mx.example.org"};
    spf_answer_t a;
    spf_answer_init(&a);
    a.result = SPF_PASS;
    str_copy(a.domain, "example.com", sizeof a.domain);
    str_copy(a.mechanism, "ip4:192.0.2.0/24", sizeof a.mechanism);
    buf_t out = BUF_INIT;
    spf_received_value(&req, &a, &out);
    CHECK_STR(buf_cstr(&out), "pass (mx.example.org: domain of a@example.com designates 192.0.2.1 as permitted "
                              "sender) client-ip=192.0.2.1; envelope-from=\"a@example.com\"; helo=mail.example.com; "
                              "receiver=mx.example.org; identity=mailfrom; mechanism=\"ip4:192.0.2.0/24\";");

    /* an error: the problem is quoted; the null sender checks the HELO */
    buf_reset(&out);
    spf_request_t r2 = {.ip = "2001:db8::1", .sender = "", .helo = "bad (helo)\"x"};
    a.result = SPF_PERMERROR;
    a.mechanism[0] = 0;
    buf_puts(&a.problem, "term \"moo\": unknown mechanism");
    spf_received_value(&r2, &a, &out);
    CHECK_STR(buf_cstr(&out), "permerror (permanent error in processing domain of postmaster@bad \\(helo\\)\"x) "
                              "client-ip=\"2001:db8::1\"; envelope-from=\"\"; helo=\"bad (helo)\\\"x\"; "
                              "problem=\"term \\\"moo\\\": unknown mechanism\"; identity=helo;");

    buf_reset(&out);
    a.result = SPF_NEUTRAL;
    str_copy(a.mechanism, "default", sizeof a.mechanism);
    spf_received_value(&req, &a, &out);
    static const char neutral[] = "neutral (mx.example.org: 192.0.2.1 is neither permitted nor denied by domain of "
                                  "a@example.com) ";
    CHECK(strncmp(buf_cstr(&out), neutral, strlen(neutral)) == 0);
    CHECK(strstr(buf_cstr(&out), "mechanism=") == NULL);
    CHECK(strstr(buf_cstr(&out), "problem=") == NULL);
    static const struct {
        spf_result_t r;
        const char *start;
    } words[] = {
        {SPF_FAIL, "fail (mx.example.org: domain of a@example.com does not designate 192.0.2.1 as permitted"},
        {SPF_SOFTFAIL, "softfail (mx.example.org: transitioning domain of a@example.com does not designate"},
        {SPF_NONE, "none (mx.example.org: domain of a@example.com does not designate permitted sender hosts)"},
        {SPF_TEMPERROR, "temperror (mx.example.org: temporary error in processing during lookup of a@example.com)"},
    };
    for (size_t i = 0; i < ARRAY_LEN(words); i++) {
        buf_reset(&out);
        a.result = words[i].r;
        spf_received_value(&req, &a, &out);
        if (strncmp(buf_cstr(&out), words[i].start, strlen(words[i].start)) != 0)
            harness_fail(__FILE__, __LINE__, "%s: \"%s\"", spf_result_name(words[i].r), buf_cstr(&out));
        /* one line, printable ASCII */
        for (size_t k = 0; k < out.len; k++)
            CHECK(out.data[k] >= 0x20 && out.data[k] < 0x7f);
    }
    buf_free(&out);
    spf_answer_free(&a);
}

/* ------------------------------------------- an in-process DNS server */

typedef struct zrr {
    char name[256];
    char type[16];
    char data[512];
} zrr_t;

typedef struct zone {
    int fd, port;
    struct event *ev;
    zrr_t *rr;
    size_t n;
    buf_t log;        /* "TYPE name\n" per query received */
    int queries;
} zone_t;

static int qtype_num(const char *t)
{
    static const struct {
        const char *n;
        int v;
    } m[] = {{"A", 1}, {"PTR", 12}, {"MX", 15}, {"TXT", 16}, {"AAAA", 28}};
    for (size_t i = 0; i < ARRAY_LEN(m); i++)
        if (!strcmp(t, m[i].n))
            return m[i].v;
    return -1;
}

static const char *qtype_text(unsigned t)
{
    return t == 1 ? "A" : t == 12 ? "PTR" : t == 15 ? "MX" : t == 16 ? "TXT" : t == 28 ? "AAAA" : "?";
}

/* Table lines "name TYPE data": A, AAAA, MX ("10 host"), TXT (the rest of
 * the line), PTR; "name NXDOMAIN", "name SERVFAIL", "name DROP" (never
 * answered).  A name with records but none of the type asked: NODATA;
 * a name not in the table: NXDOMAIN. */
static void zone_read(evutil_socket_t fd, short what, void *arg)
{
    zone_t *z = arg;
    (void)what;
    unsigned char q[512];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom((int)fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
    char name[256];
    unsigned qtype;
    size_t qend;
    if (n < 0 || !dnst_question(q, (size_t)n, name, sizeof name, &qtype, &qend))
        return;
    z->queries++;
    buf_printf(&z->log, "%s %s\n", qtype_text(qtype), name);
    unsigned rcode = 3, nans = 0;
    buf_t ans = BUF_INIT;
    for (size_t i = 0; i < z->n; i++) {
        const zrr_t *rr = &z->rr[i];
        if (!str_ieq(rr->name, name))
            continue;
        if (!strcmp(rr->type, "NXDOMAIN"))
            break;
        if (!strcmp(rr->type, "DROP")) {
            buf_free(&ans);
            return;
        }
        if (!strcmp(rr->type, "SERVFAIL")) {
            rcode = 2;
            break;
        }
        rcode = 0;
        if (qtype_num(rr->type) != (int)qtype)
            continue;
        buf_t rd = BUF_INIT;
        if (qtype == 1) {
            unsigned char a[4];
            inet_pton(AF_INET, rr->data, a);
            buf_append(&rd, a, 4);
        } else if (qtype == 28) {
            unsigned char a[16];
            inet_pton(AF_INET6, rr->data, a);
            buf_append(&rd, a, 16);
        } else if (qtype == 15) {
            const char *host = strchr(rr->data, ' ');
            dnst_put16(&rd, (unsigned)atoi(rr->data));
            dnst_put_name(&rd, host && strcmp(host + 1, ".") != 0 ? host + 1 : "");
        } else if (qtype == 12) {
            dnst_put_name(&rd, rr->data);
        } else {
            const char *s = rr->data;
            size_t left = strlen(s);
            do {
                size_t c = left > 255 ? 255 : left;
                buf_putc(&rd, (char)c);
                buf_append(&rd, s, c);
                s += c;
                left -= c;
            } while (left);
        }
        dnst_put16(&ans, 0xc00c);
        dnst_put16(&ans, qtype);
        dnst_put16(&ans, 1);
        dnst_put16(&ans, 0);
        dnst_put16(&ans, 60);
        dnst_put16(&ans, (unsigned)rd.len);
        buf_append(&ans, rd.data, rd.len);
        buf_free(&rd);
        nans++;
    }
    buf_t r = BUF_INIT;
    buf_append(&r, q, 2);
    dnst_put16(&r, 0x8480 | (q[2] & 1 ? 0x0100 : 0) | rcode);
    dnst_put16(&r, 1);
    dnst_put16(&r, nans);
    dnst_put16(&r, 0);
    dnst_put16(&r, 0);
    buf_append(&r, q + 12, qend - 12);
    buf_append(&r, ans.data ? ans.data : "", ans.len);
    sendto((int)fd, r.data, r.len, 0, (struct sockaddr *)&from, fl);
    buf_free(&r);
    buf_free(&ans);
}

typedef struct world {
    struct event_base *base;
    zone_t z;
    dns_t *dns;
    dns_memo_t *memo;
    bool woke;
    int evals;        /* spf_eval calls of the last run */
} world_t;

static void world_wake(void *arg)
{
    ((world_t *)arg)->woke = true;
}

static void world_init(world_t *w, const char *table, unsigned timeout_ms)
{
    memset(w, 0, sizeof *w);
    w->base = event_base_new();
    for (const char *p = table; *p;) {
        size_t n = strcspn(p, "\n");
        char line[700];
        if (n && n < sizeof line) {
            memcpy(line, p, n);
            line[n] = 0;
            w->z.rr = xrealloc(w->z.rr, (w->z.n + 1) * sizeof *w->z.rr);
            zrr_t *rr = &w->z.rr[w->z.n++];
            memset(rr, 0, sizeof *rr);
            int off = 0;
            if (sscanf(line, "%255s %15s %n", rr->name, rr->type, &off) >= 2 && off > 0)
                str_copy(rr->data, line + off, sizeof rr->data);
        }
        p += n;
        if (*p)
            p++;
    }
    w->z.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(w->z.fd, (struct sockaddr *)&sin, sizeof sin);
    socklen_t sl = sizeof sin;
    getsockname(w->z.fd, (struct sockaddr *)&sin, &sl);
    w->z.port = ntohs(sin.sin_port);
    w->z.ev = event_new(w->base, w->z.fd, EV_READ | EV_PERSIST, zone_read, &w->z);
    event_add(w->z.ev, NULL);
    char fwd[64];
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", w->z.port);
    dns_opts_t o = {.forwarders = fwd, .timeout_ms = timeout_ms ? timeout_ms : 3000, .cache_max = 1000};
    buf_t err = BUF_INIT;
    w->dns = dns_new(w->base, &o, &err);
    if (!w->dns)
        harness_fail(__FILE__, __LINE__, "dns_new: %s", buf_cstr(&err));
    buf_free(&err);
    w->memo = w->dns ? dns_memo_new(w->dns, world_wake, w) : NULL;
}

static void world_free(world_t *w)
{
    dns_memo_free(&w->memo);
    dns_unref(&w->dns);
    event_free(w->z.ev);
    close(w->z.fd);
    free(w->z.rr);
    buf_free(&w->z.log);
    event_base_free(w->base);
}

/* Evaluate until done, as a session does: wait for the wake, replay. */
static spf_result_t world_eval(world_t *w, const spf_request_t *req, spf_answer_t *a)
{
    spf_result_t r;
    w->evals = 0;
    while ((r = spf_eval(w->memo, req, true, a)) == SPF_PENDING) {
        w->evals++;
        if (dns_memo_outstanding(w->memo) == 0 || w->evals > 200) {
            harness_fail(__FILE__, __LINE__, "pending with %zu lookups running after %d passes",
                         dns_memo_outstanding(w->memo), w->evals);
            return r;
        }
        w->woke = false;
        while (!w->woke)
            event_base_loop(w->base, EVLOOP_ONCE);
    }
    w->evals++;
    return r;
}

/* One evaluation in a fresh world: result, mechanism and explanation or
 * problem checked (NULL: not checked). */
static void expect_spf(int line, const char *table, const char *ip, const char *sender, const char *helo,
                       spf_result_t want, const char *mechanism, const char *text)
{
    world_t w;
    world_init(&w, table, 600);
    if (!w.memo)
        return;
    spf_request_t req = {.ip = ip, .sender = sender, .helo = helo, .receiver = "mx.spf.test", .now = 1700000000,
                         .default_explanation = "DEFAULT"};
    spf_answer_t a;
    spf_answer_init(&a);
    spf_result_t r = world_eval(&w, &req, &a);
    if (r != want)
        harness_fail(__FILE__, line, "%s from %s: %s, want %s; problem: %s\ntrace:\n%s", sender, ip,
                     spf_result_name(r), spf_result_name(want), buf_cstr(&a.problem), buf_cstr(&a.trace));
    if (mechanism && strcmp(a.mechanism, mechanism) != 0)
        harness_fail(__FILE__, line, "mechanism \"%s\", want \"%s\"", a.mechanism, mechanism);
    const char *got = r == SPF_FAIL ? buf_cstr(&a.explanation) : buf_cstr(&a.problem);
    if (text && !strstr(got, text))
        harness_fail(__FILE__, line, "%s \"%s\", want \"%s\" in it", r == SPF_FAIL ? "explanation" : "problem", got,
                     text);
    spf_answer_free(&a);
    world_free(&w);
}

TEST(spf_eval_include_chain_and_replay)
{
    static const char table[] = "a.spf.test TXT v=spf1 include:b.spf.test -all\n"
                                "a.spf.test TXT some other text\n"
                                "b.spf.test TXT v=spf1 include:c.spf.test ~all\n"
                                "c.spf.test TXT v=spf1 ip4:127.0.0.0/24 -all\n";
    world_t w;
    world_init(&w, table, 0);
    REQUIRE(w.memo);
    spf_request_t req = {.ip = "127.0.0.5", .sender = "u@a.spf.test", .helo = "h.spf.test",
                         .receiver = "mx.spf.test", .now = 1};
    spf_answer_t a;
    spf_answer_init(&a);
    CHECK_INT(world_eval(&w, &req, &a), SPF_PASS);
    CHECK_STR(a.domain, "a.spf.test");
    CHECK_STR(a.mechanism, "include:b.spf.test");
    CHECK_INT(a.explanation.len, 0);
    CHECK_INT(w.z.queries, 3);
    CHECK_INT(w.evals, 4);   /* one pass per level of the chain, then the answer */
    CHECK(strstr(buf_cstr(&a.trace), "c.spf.test: ip4:127.0.0.0/24 -> match: pass") != NULL);
    CHECK(strstr(buf_cstr(&a.trace), "include:c.spf.test: check_host(c.spf.test) = pass") != NULL);
    CHECK(strstr(buf_cstr(&a.trace), "result: pass") != NULL);
    /* a replay is answered from the memo: no new query, no pending */
    CHECK_INT(spf_eval(w.memo, &req, false, &a), SPF_PASS);
    CHECK_INT(a.trace.len, 0);
    CHECK_INT(w.z.queries, 3);
    /* another client: fail, with the default explanation expanded */
    req.ip = "127.0.1.5";
    CHECK_INT(world_eval(&w, &req, &a), SPF_FAIL);
    CHECK_STR(a.mechanism, "-all");
    CHECK_STR(buf_cstr(&a.explanation),
              "See https://www.open-spf.org/Why?s=u%40a.spf.test&i=127.0.1.5&ip=127.0.1.5&r=mx.spf.test");
    CHECK_INT(w.z.queries, 3);
    spf_answer_free(&a);
    world_free(&w);
}

TEST(spf_eval_parallel_lookups)
{
    static const char table[] = "p.spf.test TXT v=spf1 a:h1.spf.test a:h2.spf.test mx:m.spf.test "
                                "include:i.spf.test ip4:10.0.0.1 ptr -all\n"
                                "h1.spf.test A 127.0.9.1\n"
                                "h2.spf.test A 127.0.9.2\n"
                                "m.spf.test MX 10 m1.spf.test\n"
                                "m.spf.test MX 20 m2.spf.test\n"
                                "m.spf.test MX 30 m3.spf.test\n"
                                "m1.spf.test A 127.0.9.11\n"
                                "m2.spf.test A 127.0.9.12\n"
                                "m3.spf.test A 127.0.0.7\n"
                                "i.spf.test TXT v=spf1 -all\n";
    world_t w;
    world_init(&w, table, 0);
    REQUIRE(w.memo);
    spf_request_t req = {.ip = "127.0.0.7", .sender = "u@p.spf.test", .helo = "h.spf.test"};
    spf_answer_t a;
    spf_answer_init(&a);
    /* pass 1 asks for the record only */
    CHECK_INT(spf_eval(w.memo, &req, false, &a), SPF_PENDING);
    CHECK_INT(dns_memo_outstanding(w.memo), 1);
    CHECK_INT(a.result, SPF_PENDING);
    w.woke = false;
    while (!w.woke)
        event_base_loop(w.base, EVLOOP_ONCE);
    /* pass 2 stops at a:h1 and starts every lookup the rest of the
     * record names: a:h2, mx:m, include:i, ptr */
    CHECK_INT(spf_eval(w.memo, &req, false, &a), SPF_PENDING);
    CHECK_INT(dns_memo_outstanding(w.memo), 5);
    CHECK_INT(world_eval(&w, &req, &a), SPF_PASS);
    CHECK_STR(a.mechanism, "mx:m.spf.test");
    /* the MX hosts were asked for together, and nothing twice */
    const char *log = buf_cstr(&w.z.log);
    CHECK(strstr(log, "A m1.spf.test\n") && strstr(log, "A m2.spf.test\n") && strstr(log, "A m3.spf.test\n"));
    CHECK(strstr(log, "PTR 7.0.0.127.in-addr.arpa\n") != NULL);
    CHECK_INT(w.z.queries, 9);
    spf_answer_free(&a);
    world_free(&w);
}

TEST(spf_eval_mechanisms)
{
    static const char table[] = "m.spf.test TXT v=spf1 -ip4:127.0.0.66 a:aa.spf.test/24 ip6:2001:db8:1::/48 "
                                "a:aa.spf.test//64 mx:mx.spf.test exists:%{ir}.ex.spf.test ?all\n"
                                "aa.spf.test A 127.0.5.1\n"
                                "aa.spf.test AAAA 2001:db8:2::1\n"
                                "mx.spf.test MX 0 .\n"
                                "mx.spf.test MX 10 mxh.spf.test\n"
                                "mxh.spf.test A 127.0.7.7\n"
                                "mxh.spf.test AAAA 2001:db8:7::7\n"
                                "8.0.0.127.ex.spf.test A 127.0.0.2\n"
                                "ptr.spf.test TXT v=spf1 ptr ~all\n"
                                "9.0.0.127.in-addr.arpa PTR other.test\n"
                                "9.0.0.127.in-addr.arpa PTR host9.ptr.spf.test\n"
                                "host9.ptr.spf.test A 127.0.0.9\n"
                                "10.0.0.127.in-addr.arpa PTR liar.ptr.spf.test\n"
                                "liar.ptr.spf.test A 127.0.0.99\n";
    expect_spf(__LINE__, table, "127.0.0.66", "x@m.spf.test", "h", SPF_FAIL, "-ip4:127.0.0.66", "DEFAULT");
    expect_spf(__LINE__, table, "127.0.5.200", "x@m.spf.test", "h", SPF_PASS, "a:aa.spf.test/24", NULL);
    expect_spf(__LINE__, table, "::ffff:127.0.5.200", "x@m.spf.test", "h", SPF_PASS, "a:aa.spf.test/24", NULL);
    expect_spf(__LINE__, table, "2001:db8:1:2::3", "x@m.spf.test", "h", SPF_PASS, "ip6:2001:db8:1::/48", NULL);
    expect_spf(__LINE__, table, "2001:db8:2::ffff", "x@m.spf.test", "h", SPF_PASS, "a:aa.spf.test//64", NULL);
    expect_spf(__LINE__, table, "127.0.7.7", "x@m.spf.test", "h", SPF_PASS, "mx:mx.spf.test", NULL);
    expect_spf(__LINE__, table, "2001:db8:7::7", "x@m.spf.test", "h", SPF_PASS, "mx:mx.spf.test", NULL);
    expect_spf(__LINE__, table, "127.0.0.8", "x@m.spf.test", "h", SPF_PASS, "exists:%{ir}.ex.spf.test", NULL);
    expect_spf(__LINE__, table, "127.0.0.1", "x@m.spf.test", "h", SPF_NEUTRAL, "?all", NULL);
    expect_spf(__LINE__, table, "127.0.0.9", "x@ptr.spf.test", "h", SPF_PASS, "ptr", NULL);
    expect_spf(__LINE__, table, "127.0.0.10", "x@ptr.spf.test", "h", SPF_SOFTFAIL, "~all", NULL);
    expect_spf(__LINE__, table, "127.0.0.11", "x@ptr.spf.test", "h", SPF_SOFTFAIL, "~all", NULL);
}

TEST(spf_eval_none_and_identities)
{
    static const char table[] = "txt.spf.test TXT not spf at all\n"
                                "helo.spf.test TXT v=spf1 a -all\n"
                                "helo.spf.test A 127.0.0.3\n"
                                "two.spf.test TXT v=spf1 -all\n"
                                "two.spf.test TXT V=SPF1 +all\n"
                                "bad.spf.test TXT v=spf1 ip4:127.0.0.1 -all moo\n"
                                "void.spf.test TXT v=spf1 a:n1.spf.test a:n2.spf.test a:n3.spf.test ?all\n"
                                "void2.spf.test TXT v=spf1 a:n1.spf.test mx:txt.spf.test ?all\n";
    expect_spf(__LINE__, table, "127.0.0.3", "x@txt.spf.test", "h", SPF_NONE, "", NULL);
    expect_spf(__LINE__, table, "127.0.0.3", "x@nowhere.spf.test", "h", SPF_NONE, "", NULL);
    expect_spf(__LINE__, table, "127.0.0.3", "x@nodots", "h", SPF_NONE, "", NULL);
    expect_spf(__LINE__, table, "127.0.0.3", "x@[127.0.0.3]", "h", SPF_NONE, "", NULL);
    /* the null sender: postmaster@HELO */
    expect_spf(__LINE__, table, "127.0.0.3", "", "helo.spf.test", SPF_PASS, "a", NULL);
    expect_spf(__LINE__, table, "127.0.0.4", "", "helo.spf.test", SPF_FAIL, "-all", "DEFAULT");
    expect_spf(__LINE__, table, "127.0.0.4", "", "nodots", SPF_NONE, "", NULL);
    expect_spf(__LINE__, table, "127.0.0.3", "x@two.spf.test", "h", SPF_PERMERROR, "",
               "two.spf.test has 2 SPF records");
    expect_spf(__LINE__, table, "127.0.0.1", "x@bad.spf.test", "h", SPF_PERMERROR, "", "\"moo\": unknown mechanism");
    expect_spf(__LINE__, table, "127.0.0.1", "x@void.spf.test", "h", SPF_PERMERROR, "",
               "too many void lookups: \"a:n3.spf.test\"");
    expect_spf(__LINE__, table, "127.0.0.1", "x@void2.spf.test", "h", SPF_NEUTRAL, "?all", NULL);
    expect_spf(__LINE__, table, "nonsense", "x@void2.spf.test", "h", SPF_PERMERROR, "", "not an IP address");

    /* the HELO identity asked for with a sender */
    world_t w;
    world_init(&w, table, 0);
    REQUIRE(w.memo);
    spf_request_t req = {.ip = "127.0.0.3", .sender = "x@txt.spf.test", .helo = "helo.spf.test",
                         .helo_identity = true};
    spf_answer_t a;
    spf_answer_init(&a);
    CHECK_INT(world_eval(&w, &req, &a), SPF_PASS);
    CHECK_STR(a.domain, "helo.spf.test");
    spf_answer_free(&a);
    world_free(&w);
}

TEST(spf_eval_limits)
{
    static const char table[] = "loop.spf.test TXT v=spf1 include:loop.spf.test -all\n"
                                "rloop.spf.test TXT v=spf1 ip4:10.1.1.1 redirect=rloop.spf.test\n"
                                "ten.spf.test TXT v=spf1 a a a a a a a a a a ip4:127.0.0.1 -all\n"
                                "eleven.spf.test TXT v=spf1 a a a a a a a a a a a ip4:127.0.0.1 -all\n"
                                "ten.spf.test A 127.0.0.200\n"
                                "eleven.spf.test A 127.0.0.200\n"
                                "mx.spf.test TXT v=spf1 mx -all\n"
                                "mx.spf.test MX 0 h.spf.test\nmx.spf.test MX 1 h.spf.test\n"
                                "mx.spf.test MX 2 h.spf.test\nmx.spf.test MX 3 h.spf.test\n"
                                "mx.spf.test MX 4 h.spf.test\nmx.spf.test MX 5 h.spf.test\n"
                                "mx.spf.test MX 6 h.spf.test\nmx.spf.test MX 7 h.spf.test\n"
                                "mx.spf.test MX 8 h.spf.test\nmx.spf.test MX 9 h.spf.test\n"
                                "mx.spf.test MX 10 h.spf.test\n"
                                "h.spf.test A 127.0.0.1\n"
                                "ptr.spf.test TXT v=spf1 ptr -all\n"
                                "5.0.0.127.in-addr.arpa PTR p1.test\n5.0.0.127.in-addr.arpa PTR p2.test\n"
                                "5.0.0.127.in-addr.arpa PTR p3.test\n5.0.0.127.in-addr.arpa PTR p4.test\n"
                                "5.0.0.127.in-addr.arpa PTR p5.test\n5.0.0.127.in-addr.arpa PTR p6.test\n"
                                "5.0.0.127.in-addr.arpa PTR p7.test\n5.0.0.127.in-addr.arpa PTR p8.test\n"
                                "5.0.0.127.in-addr.arpa PTR p9.test\n5.0.0.127.in-addr.arpa PTR p10.test\n"
                                "5.0.0.127.in-addr.arpa PTR x.ptr.spf.test\n"
                                "x.ptr.spf.test A 127.0.0.5\n";
    expect_spf(__LINE__, table, "127.0.0.1", "x@loop.spf.test", "h", SPF_PERMERROR, "", "too many DNS lookups");
    expect_spf(__LINE__, table, "127.0.0.1", "x@rloop.spf.test", "h", SPF_PERMERROR, "",
               "\"redirect=rloop.spf.test\" would be number 11");
    expect_spf(__LINE__, table, "127.0.0.1", "x@ten.spf.test", "h", SPF_PASS, "ip4:127.0.0.1", NULL);
    expect_spf(__LINE__, table, "127.0.0.1", "x@eleven.spf.test", "h", SPF_PERMERROR, "", "would be number 11");
    expect_spf(__LINE__, table, "127.0.0.1", "x@mx.spf.test", "h", SPF_PERMERROR, "", "has 11 MX records");
    /* only the first 10 PTR names count: x.ptr.spf.test is the 11th */
    expect_spf(__LINE__, table, "127.0.0.5", "x@ptr.spf.test", "h", SPF_FAIL, "-all", NULL);
}

TEST(spf_eval_dns_errors)
{
    static const char table[] = "sf.spf.test SERVFAIL\n"
                                "to.spf.test DROP\n"
                                "inc.spf.test TXT v=spf1 include:sf.spf.test -all\n"
                                "incnone.spf.test TXT v=spf1 include:empty.spf.test -all\n"
                                "empty.spf.test A 127.0.0.1\n"
                                "redir.spf.test TXT v=spf1 redirect=empty.spf.test\n"
                                "a.spf.test TXT v=spf1 a:to.spf.test -all\n"
                                "mx.spf.test TXT v=spf1 mx:m.spf.test -all\n"
                                "m.spf.test MX 10 ok.spf.test\nm.spf.test MX 20 sf.spf.test\n"
                                "ok.spf.test A 127.0.0.50\n"
                                "p.spf.test TXT v=spf1 ptr:spf.test -all\n"
                                "6.0.0.127.in-addr.arpa SERVFAIL\n";
    expect_spf(__LINE__, table, "127.0.0.1", "x@sf.spf.test", "h", SPF_TEMPERROR, "", "DNS TXT sf.spf.test");
    expect_spf(__LINE__, table, "127.0.0.1", "x@inc.spf.test", "h", SPF_TEMPERROR, "", "SERVFAIL");
    expect_spf(__LINE__, table, "127.0.0.1", "x@incnone.spf.test", "h", SPF_PERMERROR, "",
               "include:empty.spf.test: empty.spf.test has no SPF record");
    expect_spf(__LINE__, table, "127.0.0.1", "x@redir.spf.test", "h", SPF_PERMERROR, "", "has no SPF record");
    expect_spf(__LINE__, table, "127.0.0.1", "x@a.spf.test", "h", SPF_TEMPERROR, "", "a:to.spf.test: DNS A to.spf.test");
    /* a match before the failing MX host decides; a miss reaches it */
    expect_spf(__LINE__, table, "127.0.0.50", "x@mx.spf.test", "h", SPF_PASS, "mx:m.spf.test", NULL);
    expect_spf(__LINE__, table, "127.0.0.51", "x@mx.spf.test", "h", SPF_TEMPERROR, "", "mx:m.spf.test: DNS A sf");
    /* a PTR lookup that fails is no match, never an error */
    expect_spf(__LINE__, table, "127.0.0.6", "x@p.spf.test", "h", SPF_FAIL, "-all", NULL);
}

TEST(spf_eval_explanations)
{
    static const char table[] = "e1.spf.test TXT v=spf1 -all exp=why.%{d}\n"
                                "why.e1.spf.test TXT %{l} from %{c} is not allowed by %{d} (%{p}) %{r}\n"
                                "9.0.0.127.in-addr.arpa PTR host9.e1.spf.test\n"
                                "host9.e1.spf.test A 127.0.0.9\n"
                                "e2.spf.test TXT v=spf1 exp=no.spf.test redirect=e3.spf.test\n"
                                "e3.spf.test TXT v=spf1 -all exp=why3.spf.test\n"
                                "why3.spf.test TXT Redirected %{d}.\n"
                                "e4.spf.test TXT v=spf1 -all exp=two.spf.test\n"
                                "two.spf.test TXT one\ntwo.spf.test TXT two\n"
                                "e5.spf.test TXT v=spf1 -all exp=slow.spf.test\n"
                                "slow.spf.test DROP\n"
                                "e6.spf.test TXT v=spf1 -all exp=bad.spf.test\n"
                                "bad.spf.test TXT The %{x}-files.\n"
                                "e7.spf.test TXT v=spf1 include:e3.spf.test -all exp=mine.spf.test\n"
                                "mine.spf.test TXT Mine.\n"
                                "e8.spf.test TXT v=spf1 a:n1.spf.test a:n2.spf.test -all exp=none.spf.test\n";
    expect_spf(__LINE__, table, "127.0.0.9", "jo@e1.spf.test", "h", SPF_FAIL, "-all",
               "jo from 127.0.0.9 is not allowed by e1.spf.test (host9.e1.spf.test) mx.spf.test");
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e1.spf.test", "h", SPF_FAIL, "-all", "(unknown)");
    /* redirect: the target's exp= and domain */
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e2.spf.test", "h", SPF_FAIL, "-all", "Redirected e3.spf.test.");
    /* two records, a timeout, a bad macro: the default, never an error */
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e4.spf.test", "h", SPF_FAIL, "-all", "DEFAULT");
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e5.spf.test", "h", SPF_FAIL, "-all", "DEFAULT");
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e6.spf.test", "h", SPF_FAIL, "-all", "DEFAULT");
    /* include never uses the included domain's exp= */
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e7.spf.test", "h", SPF_FAIL, "-all", "Mine.");
    /* exp= is looked up after the result: not a void lookup */
    expect_spf(__LINE__, table, "127.0.0.8", "jo@e8.spf.test", "h", SPF_FAIL, "-all", "DEFAULT");
}
