/*
 * Unit tests for the pure parts of the SMTP/LMTP client
 * (src/queue/smtpc-proto.c): next-hop syntax, the reply parser (fed whole
 * and line by line, multi-line, enhanced codes, garbage), EHLO keywords,
 * xtext and XFORWARD commands, dot-stuffing split at every byte, ports
 * and the "this is me" test.  The event-loop tests are in
 * test_smtpc_live.c.
 */
#include "harness.h"

#include "core/util.h"
#include "queue/smtpc-private.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- next hop */

typedef struct nh_case {
    const char *in;
    bool lmtp;
    int rc;
    const char *host, *port;
    bool mx, unix_path;
} nh_case_t;

TEST(smtpc_nexthop_forms)
{
    static const nh_case_t cases[] = {
        {"example.com", false, 0, "example.com", "", true, false},
        {"example.com:2525", false, 0, "example.com", "2525", true, false},
        {"[mail.example.com]", false, 0, "mail.example.com", "", false, false},
        {"[192.0.2.1]:1767", false, 0, "192.0.2.1", "1767", false, false},
        {"[2001:db8::1]:25", false, 0, "2001:db8::1", "25", false, false},
        {"[IPv6:2001:db8::1]", false, 0, "2001:db8::1", "", false, false},
        {"192.0.2.7", false, 0, "192.0.2.7", "", false, false},
        {"example.com:smtp", false, 0, "example.com", "smtp", true, false},
        {"inet:lmtp.example.com:24", true, 0, "lmtp.example.com", "24", false, false},
        {"inet:lmtp.example.com", true, 0, "lmtp.example.com", "", false, false},
        {"inet:[::1]:2424", true, 0, "::1", "2424", false, false},
        {"unix:/var/run/dovecot/lmtp", true, 0, "/var/run/dovecot/lmtp", "", false, true},
        {"unix:private/dovecot-lmtp", true, 0, "private/dovecot-lmtp", "", false, true},
        {"[127.0.0.1]:24", true, 0, "127.0.0.1", "24", false, false},
        {"host.example", true, 0, "host.example", "", false, false},
        {"", false, -1, "", "", false, false},
        {"[192.0.2.1", false, -1, "", "", false, false},
        {"[192.0.2.1]x", false, -1, "", "", false, false},
        {"[]:25", false, -1, "", "", false, false},
        {"2001:db8::1", false, -1, "", "", false, false},
        {"example.com:", false, -1, "", "", false, false},
        {"example.com:25 x", false, -1, "", "", false, false},
        {"a.example, b.example", false, -1, "", "", false, false},
        {"unix:", true, -1, "", "", false, false},
        {"inet:", true, -1, "", "", false, false},
        /* unix: means nothing to SMTP: a host "unix" with port "/x" is refused. */
        {"unix:/x", false, -1, "", "", false, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const nh_case_t *c = &cases[i];
        char host[256], port[32];
        bool mx = !c->mx, ux = !c->unix_path;
        buf_t err = BUF_INIT;
        int rc = smtpc_parse_nexthop(c->in, c->lmtp, host, sizeof host, port, sizeof port, &mx, &ux, &err);
        if (rc != c->rc) {
            harness_fail(__FILE__, __LINE__, "nexthop \"%s\": rc %d, want %d (%s)", c->in, rc, c->rc,
                         buf_cstr(&err));
        } else if (rc == 0) {
            CHECK_STR(host, c->host);
            CHECK_STR(port, c->port);
            CHECK(mx == c->mx);
            CHECK(ux == c->unix_path);
        } else {
            CHECK(err.len > 0);
        }
        buf_free(&err);
    }
}

TEST(smtpc_nexthop_too_long)
{
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char host[256], port[32];
    bool mx, ux;
    buf_t err = BUF_INIT;
    CHECK_INT(smtpc_parse_nexthop(big, false, host, sizeof host, port, sizeof port, &mx, &ux, &err), -1);
    CHECK(strstr(buf_cstr(&err), "too long") != NULL);
    buf_free(&err);
}

/* --------------------------------------------------------------- replies */

/* Feed text (lines separated by \n) and return the last rc. */
static int feed_all(smtpc_reply_t *r, const char *text)
{
    int rc = 0;
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, "\n");
        rc = smtpc_reply_feed(r, p, n);
        if (rc != 0)
            return rc;
        p += n;
        if (*p == '\n')
            p++;
    }
    return rc;
}

TEST(smtpc_reply_single_and_dsn)
{
    smtpc_reply_t r = {0};
    CHECK_INT(feed_all(&r, "250 2.1.5 Ok"), 1);
    CHECK_INT(r.code, 250);
    CHECK_STR(r.dsn, "2.1.5");
    CHECK_STR(buf_cstr(&r.text), "2.1.5 Ok");
    CHECK_STR(buf_cstr(&r.lines), "250 2.1.5 Ok");
    CHECK_INT(r.nlines, 1);
    smtpc_reply_reset(&r);
    CHECK_INT(feed_all(&r, "354 End data with <CR><LF>.<CR><LF>"), 1);
    CHECK_INT(r.code, 354);
    CHECK_STR(r.dsn, "");
    smtpc_reply_reset(&r);
    /* The enhanced code's class must match the reply code. */
    CHECK_INT(feed_all(&r, "550 4.1.1 odd"), 1);
    CHECK_STR(r.dsn, "");
    smtpc_reply_reset(&r);
    CHECK_INT(feed_all(&r, "451 4.3.0"), 1);
    CHECK_STR(r.dsn, "4.3.0");
    smtpc_reply_reset(&r);
    CHECK_INT(feed_all(&r, "550 5.1.1234 too many digits"), 1);
    CHECK_STR(r.dsn, "");
    smtpc_reply_reset(&r);
    CHECK_INT(feed_all(&r, "250"), 1);
    CHECK_INT(r.code, 250);
    CHECK_STR(buf_cstr(&r.text), "");
    smtpc_reply_free(&r);
}

TEST(smtpc_reply_multiline)
{
    smtpc_reply_t r = {0};
    const char *gmail = "550-5.1.1 The email account that you tried to reach does not exist.\n"
                        "550-5.1.1 Please try double-checking the recipient's email address\n"
                        "550 5.1.1 for typos.";
    CHECK_INT(smtpc_reply_feed(&r, gmail, strcspn(gmail, "\n")), 0);
    const char *l2 = gmail + strcspn(gmail, "\n") + 1;
    CHECK_INT(smtpc_reply_feed(&r, l2, strcspn(l2, "\n")), 0);
    const char *l3 = l2 + strcspn(l2, "\n") + 1;
    CHECK_INT(smtpc_reply_feed(&r, l3, strlen(l3)), 1);
    CHECK_INT(r.code, 550);
    CHECK_STR(r.dsn, "5.1.1");
    CHECK_INT(r.nlines, 3);
    CHECK_STR(buf_cstr(&r.lines), gmail);
    CHECK(strstr(buf_cstr(&r.text), "exist. 5.1.1 Please") != NULL);
    smtpc_reply_free(&r);
}

TEST(smtpc_reply_garbage)
{
    static const char *bad[] = {
        "xyz", "25", "2500 ok", "250x", "abc def", "650 too big", "150 too small", "099 zero",
        "250\tok", "-250 ok", "25a ok", "250 bell\a",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        smtpc_reply_t r = {0};
        int rc = smtpc_reply_feed(&r, bad[i], strlen(bad[i]));
        if (rc != -1)
            harness_fail(__FILE__, __LINE__, "\"%s\": rc %d, want -1", bad[i], rc);
        smtpc_reply_free(&r);
    }
    /* Mismatched codes in one reply. */
    smtpc_reply_t r = {0};
    CHECK_INT(smtpc_reply_feed(&r, "250-first", 9), 0);
    CHECK_INT(smtpc_reply_feed(&r, "251 second", 10), -1);
    smtpc_reply_free(&r);
    /* A reply that never ends is cut off. */
    smtpc_reply_t big = {0};
    char line[1000];
    memset(line, 'x', sizeof line);
    memcpy(line, "250-", 4);
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = smtpc_reply_feed(&big, line, sizeof line);
    CHECK_INT(rc, -1);
    smtpc_reply_free(&big);
}

TEST(smtpc_ehlo_keywords)
{
    smtpc_reply_t r = {0};
    CHECK_INT(feed_all(&r, "250-mx.example.test hello\n250-PIPELINING\n250-SIZE 10240000\n250-8bitmime\n"
                           "250-SMTPUTF8\n250-XFORWARD NAME ADDR PROTO HELO SOURCE IDENT\n250-STARTTLS\n"
                           "250 ENHANCEDSTATUSCODES"),
              1);
    smtpc_ehlo_t f;
    smtpc_ehlo_parse(&r, &f);
    CHECK(f.pipelining);
    CHECK(f.size);
    CHECK_INT(f.size_limit, 10240000);
    CHECK(f.eightbit);
    CHECK(f.smtputf8);
    CHECK_INT(f.xforward, SMTPC_XF_NAME | SMTPC_XF_ADDR | SMTPC_XF_PROTO | SMTPC_XF_HELO | SMTPC_XF_SOURCE |
                              SMTPC_XF_IDENT);
    smtpc_reply_reset(&r);
    /* The greeting line is not a keyword; SIZE without a number; SIZE=n. */
    CHECK_INT(feed_all(&r, "250-PIPELINING\n250 SIZE"), 1);
    smtpc_ehlo_parse(&r, &f);
    CHECK(!f.pipelining);
    CHECK(f.size);
    CHECK_INT(f.size_limit, 0);
    smtpc_reply_reset(&r);
    CHECK_INT(feed_all(&r, "250-x\n250-SIZE=2048\n250 SIZE12"), 1);
    smtpc_ehlo_parse(&r, &f);
    CHECK(f.size);
    CHECK_INT(f.size_limit, 2048);
    smtpc_reply_reset(&r);
    CHECK_INT(feed_all(&r, "250 only.greeting"), 1);
    smtpc_ehlo_parse(&r, &f);
    CHECK(!f.size && !f.pipelining && !f.eightbit && f.xforward == 0);
    smtpc_reply_free(&r);
}

/* ------------------------------------------------------------- XFORWARD */

TEST(smtpc_xtext_and_xforward)
{
    buf_t b = BUF_INIT;
    smtpc_xtext(&b, "a+b=c d\x01\xc3\xa9");
    CHECK_STR(buf_cstr(&b), "a+2Bb+3Dc+20d+01+C3+A9");
    buf_reset(&b);

    smtpc_xfwd_in_t in = {.name = "client.example", .addr = "192.0.2.1", .proto = "ESMTP",
                          .helo = "helo example", .ident = "ABC123", .local_source = false};
    int groups[8];
    unsigned all =
        SMTPC_XF_NAME | SMTPC_XF_ADDR | SMTPC_XF_PROTO | SMTPC_XF_HELO | SMTPC_XF_IDENT | SMTPC_XF_SOURCE;
    CHECK_INT(smtpc_xforward_cmds(&in, all, &b, groups), 2);
    CHECK_STR(buf_cstr(&b), "XFORWARD NAME=client.example ADDR=192.0.2.1\n"
                            "XFORWARD PROTO=ESMTP HELO=helo+20example IDENT=ABC123 SOURCE=REMOTE\n");
    CHECK_INT(groups[0], 1);
    CHECK_INT(groups[1], 2);
    buf_reset(&b);
    /* Only what the server offers; unknown values as [UNAVAILABLE]. */
    smtpc_xfwd_in_t none = {.ident = "X", .local_source = true};
    CHECK_INT(smtpc_xforward_cmds(&none, SMTPC_XF_ADDR | SMTPC_XF_HELO | SMTPC_XF_SOURCE, &b, NULL), 2);
    CHECK_STR(buf_cstr(&b), "XFORWARD ADDR=[UNAVAILABLE]\nXFORWARD HELO=[UNAVAILABLE] SOURCE=LOCAL\n");
    buf_reset(&b);
    CHECK_INT(smtpc_xforward_cmds(&in, 0, &b, NULL), 0);
    CHECK_INT(b.len, 0);
    /* Long values: every line stays below 512 bytes with CRLF. */
    char name[300], helo[400];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    memset(helo, ' ', sizeof helo - 1);   /* xtext triples these */
    helo[sizeof helo - 1] = 0;
    smtpc_xfwd_in_t big = {.name = name, .addr = "192.0.2.1", .proto = "ESMTP", .helo = helo, .ident = "I"};
    buf_reset(&b);
    size_t n = smtpc_xforward_cmds(&big, all, &b, groups);
    CHECK(n >= 3);
    const char *p = buf_cstr(&b);
    bool saw_helo = false, saw_ident = false;
    for (size_t k = 0; k < n; k++) {
        size_t ln = strcspn(p, "\n");
        CHECK(ln + 2 < 512);
        CHECK(strncmp(p, "XFORWARD ", 9) == 0);
        if (strstr(p, " HELO=+20+20") && strstr(p, " HELO=+20+20") < p + ln)
            saw_helo = true;
        if (strstr(p, " IDENT=I") && strstr(p, " IDENT=I") < p + ln)
            saw_ident = true;
        p += ln + 1;
    }
    CHECK(saw_helo && saw_ident);
    buf_free(&b);
}

/* --------------------------------------------------------------- content */

TEST(smtpc_dotstuff_every_split)
{
    const char *in = ".start\nmid.dle\n..two\n\n.\nend without newline.";
    const char *want = "..start\r\nmid.dle\r\n...two\r\n\r\n..\r\nend without newline.";
    size_t n = strlen(in);
    for (size_t cut = 0; cut <= n; cut++) {
        for (size_t cut2 = cut; cut2 <= n; cut2 += 3) {
            buf_t out = BUF_INIT;
            bool bol = true;
            smtpc_dotstuff(&bol, in, cut, &out);
            smtpc_dotstuff(&bol, in + cut, cut2 - cut, &out);
            smtpc_dotstuff(&bol, in + cut2, n - cut2, &out);
            if (strcmp(buf_cstr(&out), want) != 0)
                harness_fail(__FILE__, __LINE__, "split %zu/%zu: \"%s\"", cut, cut2, buf_cstr(&out));
            CHECK(!bol);
            buf_free(&out);
        }
    }
    buf_t out = BUF_INIT;
    bool bol = true;
    smtpc_dotstuff(&bol, "a\n", 2, &out);
    CHECK(bol);
    CHECK_STR(buf_cstr(&out), "a\r\n");
    buf_free(&out);
}

/* ------------------------------------------------------------ misc */

TEST(smtpc_ports)
{
    CHECK_INT(smtpc_port_number("25"), 25);
    CHECK_INT(smtpc_port_number("smtp"), 25);
    CHECK_INT(smtpc_port_number("LMTP"), 24);
    CHECK_INT(smtpc_port_number("65535"), 65535);
    CHECK_INT(smtpc_port_number("65536"), -1);
    CHECK_INT(smtpc_port_number("0"), -1);
    CHECK_INT(smtpc_port_number(""), -1);
    CHECK_INT(smtpc_port_number("999999"), -1);
    CHECK_INT(smtpc_port_number("no-such-service-here"), -1);
}

TEST(smtpc_self_addresses)
{
    const char *listen[] = {"127.0.0.1:2525", "[::1]:2526", "*:25", "192.0.2.10:587"};
    smtpc_self_t self = {.myhostname = "mx.example.test", .listen = listen, .nlisten = 4};
    CHECK(smtpc_is_self_addr(&self, "127.0.0.1", 2525, NULL, 0));
    CHECK(!smtpc_is_self_addr(&self, "127.0.0.2", 2525, NULL, 0));
    CHECK(!smtpc_is_self_addr(&self, "127.0.0.1", 2526, NULL, 0));
    CHECK(smtpc_is_self_addr(&self, "0:0::1", 2526, NULL, 0));
    /* "*:25": loopback, addresses other entries name, this host's interfaces. */
    CHECK(smtpc_is_self_addr(&self, "127.0.0.77", 25, NULL, 0));
    CHECK(smtpc_is_self_addr(&self, "::1", 25, NULL, 0));
    CHECK(smtpc_is_self_addr(&self, "192.0.2.10", 25, NULL, 0));
    CHECK(!smtpc_is_self_addr(&self, "192.0.2.11", 25, NULL, 0));
    const char *local[] = {"198.51.100.5"};
    CHECK(smtpc_is_self_addr(&self, "198.51.100.5", 25, local, 1));
    CHECK(!smtpc_is_self_addr(&self, "198.51.100.5", 26, local, 1));
    CHECK(!smtpc_is_self_addr(NULL, "127.0.0.1", 25, NULL, 0));
    const char *lh[] = {"localhost:10026"};
    smtpc_self_t named = {.listen = lh, .nlisten = 1};
    CHECK(smtpc_is_self_addr(&named, "127.0.0.1", 10026, NULL, 0));
    CHECK(!smtpc_is_self_addr(&named, "192.0.2.1", 10026, NULL, 0));
    CHECK(!smtpc_is_self_addr(&self, "not-an-address", 25, NULL, 0));
    CHECK(smtpc_is_loopback("127.1.2.3"));
    CHECK(smtpc_is_loopback("::1"));
    CHECK(!smtpc_is_loopback("::2"));
    CHECK(!smtpc_is_loopback("10.0.0.1"));
    CHECK(!smtpc_is_loopback(NULL));
}

TEST(smtpc_printable_text)
{
    buf_t b = BUF_INIT;
    smtpc_printable(&b, "ab\x01\xff" "cd", 6, 4);
    CHECK_STR(buf_cstr(&b), "ab??...");
    buf_free(&b);
    CHECK(smtpc_has_8bit("caf\xc3\xa9"));
    CHECK(!smtpc_has_8bit("cafe"));
    CHECK(!smtpc_has_8bit(NULL));
}
