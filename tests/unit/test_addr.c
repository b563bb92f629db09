/*
 * Unit tests for src/smtp/addr.c: a table of paths with the expected
 * full/local/domain/rest or the expected reply text, then the limits,
 * the round trip through "<full>", and addr_valid_domain.
 */
#include "harness.h"

#include "core/buf.h"
#include "core/util.h"
#include "smtp/addr.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define N ADDR_ALLOW_NULL
#define U ADDR_UTF8

static const char SYN_S[] = "5.1.7 Bad sender address syntax";
static const char SYN_R[] = "5.1.3 Bad recipient address syntax";
static const char NO8[] = "5.6.7 Must declare SMTPUTF8 to send unicode address";

typedef struct {
    const char *in;
    unsigned flags;
    bool sender;
    const char *why;   /* NULL: must be accepted */
    const char *full, *local, *domain;
    const char *rest;  /* what *rest points at */
} acase_t;

/* Accepted: in, flags, sender, NULL, full, local, domain, rest. */
#define OK(in, fl, full, local, dom, rest) {in, fl, true, NULL, full, local, dom, rest}
/* Refused as sender (5.1.7), recipient (5.1.3) or for 8-bit (5.6.7). */
#define BAD_S(in, fl) {in, fl, true, SYN_S, NULL, NULL, NULL, NULL}
#define BAD_R(in, fl) {in, fl, false, SYN_R, NULL, NULL, NULL, NULL}
#define BAD_8(in, fl) {in, fl, true, NO8, NULL, NULL, NULL, NULL}

static const acase_t cases[] = {
    /* Plain paths. */
    OK("<user@example.com>", 0, "user@example.com", "user", "example.com", ""),
    OK("<User@Example.COM>", 0, "User@example.com", "User", "example.com", ""),
    OK(" <a@b.example>", 0, "a@b.example", "a", "b.example", ""),
    OK("   <a@b.example> SIZE=100", 0, "a@b.example", "a", "b.example", " SIZE=100"),
    OK("<a@b.example>\tBODY=8BITMIME", 0, "a@b.example", "a", "b.example", "\tBODY=8BITMIME"),
    OK("<user@localhost>", 0, "user@localhost", "user", "localhost", ""),
    OK("<a.b.c@x-y.example>", 0, "a.b.c@x-y.example", "a.b.c", "x-y.example", ""),
    OK("<a+tag@example.com>", 0, "a+tag@example.com", "a+tag", "example.com", ""),
    OK("<!#$%&'*+-/=?^_`{|}~@example.com>", 0, "!#$%&'*+-/=?^_`{|}~@example.com",
       "!#$%&'*+-/=?^_`{|}~", "example.com", ""),
    OK("<1@2.3>", 0, "1@2.3", "1", "2.3", ""),
    OK("<a-@xn--bcher-kva.example>", 0, "a-@xn--bcher-kva.example", "a-", "xn--bcher-kva.example", ""),
    /* The null path. */
    OK("<>", N, "", "", "", ""),
    OK("<> BODY=7BIT", N, "", "", "", " BODY=7BIT"),
    OK("  <>", N, "", "", "", ""),
    /* Bare addresses, as Postfix accepts them. */
    OK("a@b.example", 0, "a@b.example", "a", "b.example", ""),
    OK("a@B.example SIZE=1", 0, "a@b.example", "a", "b.example", " SIZE=1"),
    OK(" a@b.example", 0, "a@b.example", "a", "b.example", ""),
    /* Source routes are dropped. */
    OK("<@a.example,@b.example:user@c.example>", 0, "user@c.example", "user", "c.example", ""),
    OK("<@a.example:user@c.example>", 0, "user@c.example", "user", "c.example", ""),
    OK("<@[192.0.2.1]:user@c.example>", 0, "user@c.example", "user", "c.example", ""),
    /* Quoted local parts: quotes kept in full only when needed. */
    OK("<\"john doe\"@x.example>", 0, "\"john doe\"@x.example", "john doe", "x.example", ""),
    OK("<\"john\"@x.example>", 0, "john@x.example", "john", "x.example", ""),
    OK("<\"a.b\"@x>", 0, "a.b@x", "a.b", "x", ""),
    OK("<\"a..b\"@x>", 0, "\"a..b\"@x", "a..b", "x", ""),
    OK("<\".a\"@x>", 0, "\".a\"@x", ".a", "x", ""),
    OK("<\"a\\\"b\"@x>", 0, "\"a\\\"b\"@x", "a\"b", "x", ""),
    OK("<\"a\\\\b\"@x>", 0, "\"a\\\\b\"@x", "a\\b", "x", ""),
    OK("<\"\\a\\b\"@x>", 0, "ab@x", "ab", "x", ""),
    OK("<\"a@b\"@x>", 0, "\"a@b\"@x", "a@b", "x", ""),
    OK("<\"a>b\"@x>", 0, "\"a>b\"@x", "a>b", "x", ""),
    OK("<\"\"@x>", 0, "\"\"@x", "", "x", ""),
    OK("\"a b\"@x rest", 0, "\"a b\"@x", "a b", "x", " rest"),
    /* No domain: the session decides what that means. */
    OK("<postmaster>", 0, "postmaster", "postmaster", "", ""),
    OK("<Postmaster>", 0, "Postmaster", "Postmaster", "", ""),
    OK("postmaster", 0, "postmaster", "postmaster", "", ""),
    OK("<\"post master\">", 0, "\"post master\"", "post master", "", ""),
    /* Address literals. */
    OK("<user@[192.0.2.1]>", 0, "user@[192.0.2.1]", "user", "[192.0.2.1]", ""),
    OK("<user@[IPv6:2001:db8::1]>", 0, "user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", ""),
    OK("<user@[ipv6:2001:DB8::1]>", 0, "user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", ""),
    OK("<user@[IPv6:::ffff:192.0.2.1]>", 0, "user@[IPv6:::ffff:192.0.2.1]", "user",
       "[IPv6:::ffff:192.0.2.1]", ""),
    /* SMTPUTF8. */
    OK("<\xc3\xbcser@example.com>", U, "\xc3\xbcser@example.com", "\xc3\xbcser", "example.com", ""),
    OK("<user@B\xc3\x9c" "cher.Example>", U, "user@b\xc3\x9c" "cher.example", "user",
       "b\xc3\x9c" "cher.example", ""),
    OK("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>", U,
       "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a",
       "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", ""),
    OK("<\"\xc3\xbc x\"@y>", U, "\"\xc3\xbc x\"@y", "\xc3\xbc x", "y", ""),
    OK("<\"\xc3\xbc\"@y>", U, "\xc3\xbc@y", "\xc3\xbc", "y", ""),
    OK("<\xf0\x9f\x98\x80@x>", U, "\xf0\x9f\x98\x80@x", "\xf0\x9f\x98\x80", "x", ""),
    OK("<a@b> x", U | N, "a@b", "a", "b", " x"),

    /* The null path where it is not allowed. */
    BAD_R("<>", 0),
    BAD_S("<>", U),
    /* Empty labels in the local part (stricter than Postfix, on purpose). */
    BAD_S("<a..b@x>", 0),
    BAD_S("<.a@x>", 0),
    BAD_S("<a.@x>", 0),
    BAD_R("<a..b@x>", 0),
    /* Domains. */
    BAD_S("<a@b..c>", 0),
    BAD_S("<a@.b>", 0),
    BAD_S("<a@b.>", 0),
    BAD_S("<a@-b.c>", 0),
    BAD_S("<a@b-.c>", 0),
    BAD_S("<a@b_c.d>", 0),
    BAD_S("<a@>", 0),
    BAD_S("<a@b@c>", 0),
    BAD_S("<a@b c>", 0),
    BAD_S("a@b>", 0),
    BAD_S("a@", 0),
    /* Literals. */
    BAD_S("<a@[1.2.3]>", 0),
    BAD_S("<a@[256.1.1.1]>", 0),
    BAD_S("<a@[01.2.3.4]>", 0),
    BAD_S("<a@[1.2.3.4.5]>", 0),
    BAD_S("<a@[IPv6:zz::1]>", 0),
    BAD_S("<a@[IPv6:1.2.3.4]>", 0),
    BAD_S("<a@[IPv6:2001:db8::1%eth0]>", 0),
    BAD_S("<a@[tag:content]>", 0),
    BAD_S("<a@[]>", 0),
    BAD_S("<a@[1.2.3.4]x>", 0),
    BAD_S("<a@[1.2.3.4>", 0),
    BAD_S("<a@1.2.3.4]>", 0),
    /* Brackets and what follows them. */
    BAD_S("<a@b", 0),
    BAD_S("<a@b>x", 0),
    BAD_S("<a@b>>", 0),
    BAD_S("<<a@b>>", 0),
    BAD_S("< a@b>", 0),
    BAD_S("<a@b >", 0),
    BAD_S("<a b@c>", 0),
    BAD_S("", 0),
    BAD_S("   ", 0),
    BAD_S("<", 0),
    /* Source routes. */
    BAD_S("<@a.example user@c>", 0),
    BAD_S("<@a.example,b.example:user@c>", 0),
    BAD_S("<@:user@c>", 0),
    BAD_S("<@a.example:>", 0),
    BAD_S("<@a..example:u@c>", 0),
    BAD_S("@a.example:u@c", 0),
    /* Quoting. */
    BAD_S("<\"abc@x>", 0),
    BAD_S("<\"a\tb\"@x>", 0),
    BAD_S("<\"a\x7f\"@x>", 0),
    BAD_S("<\"a\\\x01\"@x>", 0),
    BAD_S("<\"a\"b@x>", 0),
    BAD_S("<a\"b\"@x>", 0),
    /* Control characters anywhere. */
    BAD_S("<a\x01" "b@x>", 0),
    BAD_S("<a@b\r\n>", 0),
    BAD_S("<a\x7f@x>", 0),
    BAD_S("<a@b\x7f>", U),
    /* 8-bit without SMTPUTF8. */
    BAD_8("<\xc3\xbcser@example.com>", 0),
    BAD_8("<user@b\xc3\xbc" "cher.example>", 0),
    BAD_8("<\"\xc3\xbc\"@x>", 0),
    BAD_8("<\"\\\xc3\xbc\"@x>", 0),
    BAD_8("<@b\xc3\xbc.example:u@x>", 0),
    BAD_8("\xc3\xbc@x", N),
    /* Malformed UTF-8 even with SMTPUTF8. */
    BAD_S("<\xc3\x28@x>", U),
    BAD_S("<\xc0\xaf@x>", U),
    BAD_S("<\xe0\x80\xaf@x>", U),
    BAD_S("<\xed\xa0\x80@x>", U),
    BAD_S("<\xf4\x90\x80\x80@x>", U),
    BAD_S("<\xf5\x80\x80\x80@x>", U),
    BAD_S("<\xc2\x80@x>", U),
    BAD_S("<\x80@x>", U),
    BAD_S("<a@b.c\xff>", U),
    BAD_S("<\xe4\xbe@x>", U),
    BAD_S("<\xe4\xbe", U),
    BAD_S("<\"\\\xc3\xbc\"@x>", U),
};

static void check_case(const acase_t *c)
{
    addr_t a;
    const char *rest = NULL, *why = NULL;
    int r = addr_parse_path(c->in, c->flags, c->sender, &a, &rest, &why);
    if (c->why) {
        if (r != -1) {
            harness_fail(__FILE__, __LINE__, "\"%s\": accepted as \"%s\", want \"%s\"", c->in,
                         a.full, c->why);
            addr_free(&a);
            return;
        }
        if (!why || strcmp(why, c->why) != 0)
            harness_fail(__FILE__, __LINE__, "\"%s\": why \"%s\", want \"%s\"", c->in,
                         why ? why : "(null)", c->why);
        if (a.full || a.local || a.domain || a.is_null || a.is_utf8)
            harness_fail(__FILE__, __LINE__, "\"%s\": out not zeroed on failure", c->in);
        return;
    }
    if (r != 0) {
        harness_fail(__FILE__, __LINE__, "\"%s\": refused (%s)", c->in, why ? why : "?");
        return;
    }
    if (strcmp(a.full, c->full) || strcmp(a.local, c->local) || strcmp(a.domain, c->domain) ||
        strcmp(rest, c->rest))
        harness_fail(__FILE__, __LINE__,
                     "\"%s\": full \"%s\" local \"%s\" domain \"%s\" rest \"%s\"; "
                     "want \"%s\" \"%s\" \"%s\" \"%s\"",
                     c->in, a.full, a.local, a.domain, rest, c->full, c->local, c->domain, c->rest);
    if (a.is_null != (c->full[0] == 0))
        harness_fail(__FILE__, __LINE__, "\"%s\": is_null %d", c->in, a.is_null);
    bool eight = false;
    for (const char *p = c->full; *p; p++)
        eight |= (unsigned char)*p >= 0x80;
    if (a.is_utf8 != eight)
        harness_fail(__FILE__, __LINE__, "\"%s\": is_utf8 %d", c->in, a.is_utf8);
    /* rest points into the input, after the path. */
    if (rest < c->in || rest > c->in + strlen(c->in))
        harness_fail(__FILE__, __LINE__, "\"%s\": rest outside the input", c->in);

    /* What we store and log must parse back to itself. */
    buf_t b = BUF_INIT;
    addr_t a2;
    buf_printf(&b, "<%s>", a.full);
    if (addr_parse_path(buf_cstr(&b), c->flags | ADDR_ALLOW_NULL, true, &a2, &rest, &why) != 0) {
        harness_fail(__FILE__, __LINE__, "\"%s\": \"%s\" does not re-parse", c->in, buf_cstr(&b));
    } else {
        if (strcmp(a2.full, a.full) || strcmp(a2.local, a.local) || strcmp(a2.domain, a.domain))
            harness_fail(__FILE__, __LINE__, "\"%s\": round trip gives \"%s\"", c->in, a2.full);
        addr_free(&a2);
    }
    buf_free(&b);
    addr_free(&a);
    if (a.full || a.local || a.domain)
        harness_fail(__FILE__, __LINE__, "addr_free left pointers");
}

TEST(addr_table)
{
    CHECK(sizeof cases / sizeof cases[0] >= 60);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i]);
}

/* Build "<" + local + "@" + domain + ">" with the given part lengths. */
static char *make_path(size_t local_len, const char *label_fill, size_t domain_len)
{
    buf_t b = BUF_INIT;
    buf_putc(&b, '<');
    for (size_t i = 0; i < local_len; i++)
        buf_putc(&b, 'l');
    if (domain_len) {
        buf_putc(&b, '@');
        /* labels of 50 octets separated by dots, domain_len in all */
        for (size_t i = 0; i < domain_len; i++)
            buf_putc(&b, (i % 51 == 50 && i + 1 < domain_len) ? '.' : label_fill[0]);
    }
    buf_putc(&b, '>');
    return buf_steal(&b);
}

static int parse_ok(const char *s)
{
    addr_t a;
    const char *rest, *why;
    int r = addr_parse_path(s, 0, true, &a, &rest, &why);
    if (r == 0)
        addr_free(&a);
    return r;
}

TEST(addr_limits)
{
    char *p;
    /* Local part: 256 octets accepted, 257 refused. */
    p = make_path(256, "d", 10);
    CHECK_INT(parse_ok(p), 0);
    free(p);
    p = make_path(257, "d", 10);
    CHECK_INT(parse_ok(p), -1);
    free(p);
    /* Domain: 255 octets accepted, 256 refused. */
    p = make_path(1, "d", 255);
    CHECK_INT(parse_ok(p), 0);
    free(p);
    p = make_path(1, "d", 256);
    CHECK_INT(parse_ok(p), -1);
    free(p);
    /* Both at their limits: full is 512 octets and still fits. */
    p = make_path(256, "d", 255);
    addr_t a;
    const char *rest, *why;
    REQUIRE(addr_parse_path(p, 0, false, &a, &rest, &why) == 0);
    CHECK_INT(strlen(a.full), 512);
    addr_free(&a);
    free(p);

    /* A label of 63 octets is fine, 64 is not. */
    char lab[80];
    memset(lab, 'q', sizeof lab);
    buf_t b = BUF_INIT;
    buf_printf(&b, "<u@%.*s.example>", 63, lab);
    CHECK_INT(parse_ok(buf_cstr(&b)), 0);
    buf_reset(&b);
    buf_printf(&b, "<u@%.*s.example>", 64, lab);
    CHECK_INT(parse_ok(buf_cstr(&b)), -1);

    /* A quoted local part counts as written: 254 inside + 2 quotes. */
    buf_reset(&b);
    buf_putc(&b, '<');
    buf_putc(&b, '"');
    for (int i = 0; i < 127; i++)
        buf_puts(&b, "\\\"");
    buf_puts(&b, "\"@x>");
    REQUIRE(addr_parse_path(buf_cstr(&b), 0, true, &a, &rest, &why) == 0);
    CHECK_INT(strlen(a.local), 127);
    CHECK_INT(strlen(a.full), 256 + 2);
    addr_free(&a);
    buf_reset(&b);
    buf_putc(&b, '<');
    buf_putc(&b, '"');
    for (int i = 0; i < 128; i++)
        buf_puts(&b, "\\\"");
    buf_puts(&b, "\"@x>");
    CHECK_INT(parse_ok(buf_cstr(&b)), -1);

    /* A very long source route is refused, not walked forever. */
    buf_reset(&b);
    buf_putc(&b, '<');
    for (int i = 0; i < 200; i++)
        buf_puts(&b, "@relay.example,");
    buf_puts(&b, "@last.example:u@x>");
    CHECK_INT(parse_ok(buf_cstr(&b)), -1);
    buf_free(&b);
}

TEST(addr_null_args)
{
    /* rest and why are optional. */
    addr_t a;
    CHECK_INT(addr_parse_path("<a@b>", 0, true, &a, NULL, NULL), 0);
    CHECK_STR(a.full, "a@b");
    addr_free(&a);
    CHECK_INT(addr_parse_path("<a..b@c>", 0, true, &a, NULL, NULL), -1);
    addr_free(NULL);
    addr_free(&a); /* on a zeroed result: harmless */
}

TEST(addr_sender_vs_recipient_text)
{
    addr_t a;
    const char *why = NULL;
    CHECK_INT(addr_parse_path("<a@@b>", 0, true, &a, NULL, &why), -1);
    CHECK_STR(why, SYN_S);
    CHECK_INT(addr_parse_path("<a@@b>", 0, false, &a, NULL, &why), -1);
    CHECK_STR(why, SYN_R);
    CHECK_INT(addr_parse_path("<\xc3\xbc@b>", 0, false, &a, NULL, &why), -1);
    CHECK_STR(why, NO8);
}

TEST(addr_valid_domain_cases)
{
    CHECK(addr_valid_domain("example.com", false));
    CHECK(addr_valid_domain("EXAMPLE.com", false));
    CHECK(addr_valid_domain("a", false));
    CHECK(addr_valid_domain("xn--bcher-kva.example", false));
    CHECK(addr_valid_domain("[192.0.2.1]", false));
    CHECK(addr_valid_domain("[IPv6:2001:db8::1]", false));
    CHECK(addr_valid_domain("[IPv6:::1]", false));
    CHECK(addr_valid_domain("b\xc3\xbc" "cher.example", true));
    CHECK(!addr_valid_domain("b\xc3\xbc" "cher.example", false));
    CHECK(!addr_valid_domain("", false));
    CHECK(!addr_valid_domain(NULL, false));
    CHECK(!addr_valid_domain("a..b", false));
    CHECK(!addr_valid_domain("a.b.", false));
    CHECK(!addr_valid_domain(".a.b", false));
    CHECK(!addr_valid_domain("-a.b", false));
    CHECK(!addr_valid_domain("a-.b", false));
    CHECK(!addr_valid_domain("a_b.c", false));
    CHECK(!addr_valid_domain("a b", false));
    CHECK(!addr_valid_domain("a>b", false));
    CHECK(!addr_valid_domain("[192.0.2.1", false));
    CHECK(!addr_valid_domain("[192.0.2.1]x", false));
    CHECK(!addr_valid_domain("[x:y]", false));
    CHECK(!addr_valid_domain("[IPv6:]", false));
    CHECK(!addr_valid_domain("\xc3\x28.example", true));
}
