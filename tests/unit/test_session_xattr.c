/*
 * Unit tests for src/smtp/xattr.c (XFORWARD / XCLIENT arguments) and the
 * receive_override_options parser in src/smtp/server.c: xtext decoding,
 * every attribute's accepted and refused forms, [UNAVAILABLE] and
 * [TEMPUNAVAIL], the exact 501 replies, and censoring of values that
 * reach headers and logs.
 */
#include "harness.h"

#include "smtp/smtpd.h"
#include "smtp/xattr.h"

#include <stdlib.h>
#include <string.h>

/* Parse; returns the reply ("" on success). */
static const char *parse(xcmd_t cmd, const char *args, xattrs_t *out)
{
    static buf_t r = BUF_INIT;
    buf_reset(&r);
    int rc = xattr_parse(cmd, args, out, &r);
    if (rc == 0 && r.len)
        return "success with a reply?";
    if (rc != 0 && !r.len)
        return "failure without a reply?";
    return buf_cstr(&r);
}

TEST(session_xtext_decode)
{
    char out[16];
    CHECK_INT(xtext_decode("plain.name", out, sizeof out), 0);
    CHECK_STR(out, "plain.name");
    CHECK_INT(xtext_decode("a+2Bb+3Dc", out, sizeof out), 0);
    CHECK_STR(out, "a+b=c");
    CHECK_INT(xtext_decode("sp+20ace", out, sizeof out), 0);
    CHECK_STR(out, "sp ace");
    CHECK_INT(xtext_decode("", out, sizeof out), 0);
    CHECK_STR(out, "");
    /* lower-case hex, short escapes, raw '+', '=' or space, NUL, overflow */
    CHECK_INT(xtext_decode("a+2b", out, sizeof out), -1);
    CHECK_INT(xtext_decode("a+2", out, sizeof out), -1);
    CHECK_INT(xtext_decode("a+", out, sizeof out), -1);
    CHECK_INT(xtext_decode("a=b", out, sizeof out), -1);
    CHECK_INT(xtext_decode("a b", out, sizeof out), -1);
    CHECK_INT(xtext_decode("a+00b", out, sizeof out), -1);
    CHECK_INT(xtext_decode("\x7f", out, sizeof out), -1);
    CHECK_INT(xtext_decode("0123456789abcdef", out, sizeof out), -1);
    CHECK_INT(xtext_decode("0123456789abcde", out, sizeof out), 0);
    CHECK_INT(xtext_decode("x", out, 0), -1);
}

TEST(session_xattr_hostname)
{
    CHECK(xattr_valid_hostname("mx.example.org"));
    CHECK(xattr_valid_hostname("localhost"));
    CHECK(xattr_valid_hostname("under_score.example"));
    CHECK(xattr_valid_hostname("a1-b2.example"));
    CHECK(!xattr_valid_hostname(""));
    CHECK(!xattr_valid_hostname("a..b"));
    CHECK(!xattr_valid_hostname(".a"));
    CHECK(!xattr_valid_hostname("a."));
    CHECK(!xattr_valid_hostname("-a.b"));
    CHECK(!xattr_valid_hostname("a-.b"));
    CHECK(!xattr_valid_hostname("192.0.2.1"));   /* an address, not a name */
    CHECK(!xattr_valid_hostname("a b"));
    CHECK(!xattr_valid_hostname("[192.0.2.1]"));
    char label[70];
    memset(label, 'a', 64);
    label[64] = 0;
    CHECK(!xattr_valid_hostname(label));
    label[63] = 0;
    CHECK(xattr_valid_hostname(label));
}

TEST(session_xforward_parse_all)
{
    xattrs_t a;
    CHECK_STR(parse(XCMD_XFORWARD,
                    "NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP HELO=spike.porcupine.org "
                    "SOURCE=remote PORT=4711 IDENT=3CF6B2AAE8",
                    &a), "");
    CHECK_STR(a.value[XA_NAME], "spike.porcupine.org");
    CHECK_STR(a.value[XA_ADDR], "168.100.189.2");
    CHECK_STR(a.value[XA_PROTO], "ESMTP");
    CHECK_STR(a.value[XA_HELO], "spike.porcupine.org");
    CHECK_STR(a.value[XA_SOURCE], "REMOTE");
    CHECK_STR(a.value[XA_PORT], "4711");
    CHECK_STR(a.value[XA_IDENT], "3CF6B2AAE8");
    for (int i = XA_NAME; i <= XA_IDENT; i++)
        CHECK_INT(a.status[i], XA_AVAILABLE);
    CHECK_INT(a.given, (1u << XA_NAME) | (1u << XA_ADDR) | (1u << XA_PROTO) | (1u << XA_HELO)
                           | (1u << XA_SOURCE) | (1u << XA_PORT) | (1u << XA_IDENT));
    /* names in any case, tabs and runs of spaces between */
    CHECK_STR(parse(XCMD_XFORWARD, "  name=a.example\t\taddr=IPV6:2001:DB8::1  ", &a), "");
    CHECK_STR(a.value[XA_NAME], "a.example");
    CHECK_STR(a.value[XA_ADDR], "2001:db8::1");
    CHECK_INT(a.given, (1u << XA_NAME) | (1u << XA_ADDR));
    CHECK_INT(a.status[XA_HELO], XA_UNAVAILABLE);   /* not given */
    /* the last of a repeated attribute counts */
    CHECK_STR(parse(XCMD_XFORWARD, "HELO=one HELO=two", &a), "");
    CHECK_STR(a.value[XA_HELO], "two");
}

TEST(session_xforward_unavailable)
{
    xattrs_t a;
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=[UNAVAILABLE] ADDR=[unavailable] HELO=[Unavailable] PROTO=[UNAVAILABLE]",
                    &a), "");
    CHECK_INT(a.status[XA_NAME], XA_UNAVAILABLE);
    CHECK_INT(a.status[XA_ADDR], XA_UNAVAILABLE);
    CHECK_INT(a.status[XA_HELO], XA_UNAVAILABLE);
    CHECK_STR(a.value[XA_NAME], "");
    CHECK(a.given & (1u << XA_NAME));
    /* [TEMPUNAVAIL] is XCLIENT's */
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=[TEMPUNAVAIL]", &a), "501 5.5.4 Bad NAME syntax: [TEMPUNAVAIL]");
}

TEST(session_xforward_xtext_values)
{
    xattrs_t a;
    /* HELO keeps what it says, but header-special characters become '?' */
    CHECK_STR(parse(XCMD_XFORWARD, "HELO=a+20b+3Cc+3E+28d+29", &a), "");
    CHECK_STR(a.value[XA_HELO], "a?b?c??d?");
    CHECK_STR(parse(XCMD_XFORWARD, "HELO=+5B192.0.2.1+5D", &a), "");
    CHECK_STR(a.value[XA_HELO], "[192.0.2.1]");
    CHECK_STR(parse(XCMD_XFORWARD, "IDENT=a+0Db", &a), "");
    CHECK_STR(a.value[XA_IDENT], "a?b");
    CHECK_STR(parse(XCMD_XFORWARD, "PROTO=ESMTPSA", &a), "");
    CHECK_STR(a.value[XA_PROTO], "ESMTPSA");
    /* an encoded name is decoded before it is checked */
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=mx+2Eexample.org", &a), "");
    CHECK_STR(a.value[XA_NAME], "mx.example.org");
}

TEST(session_xforward_errors)
{
    xattrs_t a;
    CHECK_STR(parse(XCMD_XFORWARD, "", &a), "501 5.5.4 Syntax: XFORWARD attribute=value...");
    CHECK_STR(parse(XCMD_XFORWARD, "   ", &a), "501 5.5.4 Syntax: XFORWARD attribute=value...");
    CHECK_STR(parse(XCMD_XFORWARD, "NAME", &a), "501 5.5.4 Error: attribute=value expected");
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=", &a), "501 5.5.4 Error: attribute=value expected");
    CHECK_STR(parse(XCMD_XFORWARD, "=x", &a), "501 5.5.4 Error: attribute=value expected");
    CHECK_STR(parse(XCMD_XFORWARD, "LOGIN=bob", &a), "501 5.5.4 Bad XFORWARD attribute name: LOGIN");
    CHECK_STR(parse(XCMD_XFORWARD, "FOO=bar", &a), "501 5.5.4 Bad XFORWARD attribute name: FOO");
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=bad..name", &a), "501 5.5.4 Bad NAME syntax: bad..name");
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=192.0.2.1", &a), "501 5.5.4 Bad NAME syntax: 192.0.2.1");
    CHECK_STR(parse(XCMD_XFORWARD, "ADDR=999.0.0.1", &a), "501 5.5.4 Bad ADDR syntax: 999.0.0.1");
    CHECK_STR(parse(XCMD_XFORWARD, "ADDR=mx.example", &a), "501 5.5.4 Bad ADDR syntax: mx.example");
    CHECK_STR(parse(XCMD_XFORWARD, "ADDR=[192.0.2.1]", &a), "501 5.5.4 Bad ADDR syntax: [192.0.2.1]");
    CHECK_STR(parse(XCMD_XFORWARD, "PORT=65536", &a), "501 5.5.4 Bad PORT syntax: 65536");
    CHECK_STR(parse(XCMD_XFORWARD, "PORT=-1", &a), "501 5.5.4 Bad PORT syntax: -1");
    CHECK_STR(parse(XCMD_XFORWARD, "SOURCE=elsewhere", &a), "501 5.5.4 Bad SOURCE syntax: elsewhere");
    CHECK_STR(parse(XCMD_XFORWARD, "HELO=a+2", &a), "501 5.5.4 Bad HELO syntax: a+2");
    CHECK_STR(parse(XCMD_XFORWARD, "HELO=a+00", &a), "501 5.5.4 Bad HELO syntax: a+00");
    /* a good attribute before a bad one does not make it a success */
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=ok.example ADDR=nope", &a), "501 5.5.4 Bad ADDR syntax: nope");
    /* 64 characters of protocol name at most, 255 of any value */
    char longv[400];
    memset(longv, 'P', 65);
    longv[65] = 0;
    char cmd[420];
    snprintf(cmd, sizeof cmd, "PROTO=%s", longv);
    buf_t want = BUF_INIT;
    buf_printf(&want, "501 5.5.4 Bad PROTO syntax: %s", longv);
    CHECK_STR(parse(XCMD_XFORWARD, cmd, &a), buf_cstr(&want));
    buf_free(&want);
    memset(longv, 'h', 256);
    longv[256] = 0;
    snprintf(cmd, sizeof cmd, "HELO=%s", longv);
    CHECK_STR(parse(XCMD_XFORWARD, cmd, &a), "501 5.5.4 Error: attribute value too long");
    longv[255] = 0;
    snprintf(cmd, sizeof cmd, "HELO=%s", longv);
    CHECK_STR(parse(XCMD_XFORWARD, cmd, &a), "");
    CHECK_INT(strlen(a.value[XA_HELO]), 255);
}

TEST(session_xattr_reply_is_printable)
{
    xattrs_t a;
    /* A control byte the client encoded is never echoed back raw. */
    CHECK_STR(parse(XCMD_XFORWARD, "ADDR=1+0D+0A2", &a), "501 5.5.4 Bad ADDR syntax: 1??2");
    CHECK_STR(parse(XCMD_XFORWARD, "N\x01ME=x", &a), "501 5.5.4 Bad XFORWARD attribute name: N?ME");
}

TEST(session_xclient_parse)
{
    xattrs_t a;
    CHECK_STR(parse(XCMD_XCLIENT,
                    "NAME=spike.porcupine.org ADDR=168.100.189.2 PORT=25 PROTO=esmtp HELO=spike "
                    "REVERSE_NAME=[TEMPUNAVAIL] LOGIN=wietse+40example.org DESTADDR=192.0.2.25 DESTPORT=587",
                    &a), "");
    CHECK_STR(a.value[XA_NAME], "spike.porcupine.org");
    CHECK_STR(a.value[XA_PROTO], "ESMTP");
    CHECK_INT(a.status[XA_REVERSE_NAME], XA_TEMPUNAVAIL);
    CHECK_STR(a.value[XA_LOGIN], "wietse@example.org");   /* '@' is fine in a login */
    CHECK_STR(a.value[XA_DESTADDR], "192.0.2.25");
    CHECK_STR(a.value[XA_DESTPORT], "587");
    CHECK_STR(parse(XCMD_XCLIENT, "NAME=[TEMPUNAVAIL]", &a), "");
    CHECK_INT(a.status[XA_NAME], XA_TEMPUNAVAIL);
    CHECK_STR(parse(XCMD_XCLIENT, "NAME=[unavailable]", &a), "");
    CHECK_INT(a.status[XA_NAME], XA_UNAVAILABLE);
    CHECK_STR(parse(XCMD_XCLIENT, "LOGIN=a+20b", &a), "");
    CHECK_STR(a.value[XA_LOGIN], "a?b");
    /* XCLIENT's PROTO is SMTP or ESMTP only; XFORWARD's attributes are not XCLIENT's */
    CHECK_STR(parse(XCMD_XCLIENT, "PROTO=LMTP", &a), "501 5.5.4 Bad PROTO syntax: LMTP");
    CHECK_STR(parse(XCMD_XCLIENT, "IDENT=X", &a), "501 5.5.4 Bad XCLIENT attribute name: IDENT");
    CHECK_STR(parse(XCMD_XCLIENT, "SOURCE=LOCAL", &a), "501 5.5.4 Bad XCLIENT attribute name: SOURCE");
    CHECK_STR(parse(XCMD_XCLIENT, "", &a), "501 5.5.4 Syntax: XCLIENT attribute=value...");
    CHECK_STR(parse(XCMD_XCLIENT, "DESTADDR=x", &a), "501 5.5.4 Bad DESTADDR syntax: x");
}

TEST(session_xattr_keywords)
{
    CHECK_STR(xattr_keywords(XCMD_XFORWARD), "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT");
    CHECK_STR(xattr_keywords(XCMD_XCLIENT), "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT");
    CHECK_STR(xattr_name(XA_REVERSE_NAME), "REVERSE_NAME");
    /* Every announced attribute parses. */
    xattrs_t a;
    CHECK_STR(parse(XCMD_XFORWARD, "NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PROTO=[UNAVAILABLE] HELO=[UNAVAILABLE] "
                                   "SOURCE=[UNAVAILABLE] PORT=[UNAVAILABLE] IDENT=[UNAVAILABLE]", &a), "");
    CHECK_STR(parse(XCMD_XCLIENT, "NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PROTO=[UNAVAILABLE] HELO=[UNAVAILABLE] "
                                  "REVERSE_NAME=[UNAVAILABLE] PORT=[UNAVAILABLE] LOGIN=[UNAVAILABLE] "
                                  "DESTADDR=[UNAVAILABLE] DESTPORT=[UNAVAILABLE]", &a), "");
}

TEST(session_receive_override_options)
{
    unsigned bits = 99;
    buf_t err = BUF_INIT;
    const char *good[] = {"no_unknown_recipient_checks", "NO_HEADER_BODY_CHECKS", "no_milters", "no_address_mappings"};
    CHECK_INT(smtpd_receive_override(good, 4, &bits, &err), 0);
    CHECK_INT(bits, RO_NO_UNKNOWN_RCPT | RO_NO_HEADER_BODY | RO_NO_MILTERS | RO_NO_ADDRESS_MAPPINGS);
    CHECK_INT(smtpd_receive_override(good, 0, &bits, &err), 0);
    CHECK_INT(bits, 0);
    CHECK_INT(err.len, 0);
    const char *bad[] = {"no_milters", "no_header_checks"};
    CHECK_INT(smtpd_receive_override(bad, 2, &bits, &err), -1);
    CHECK(strstr(buf_cstr(&err), "receive_override_options: unknown value \"no_header_checks\"") == buf_cstr(&err));
    buf_free(&err);
}
