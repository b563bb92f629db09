/*
 * Unit tests for src/smtp/proxy.c: good v1/v2 headers (each also fed at
 * every split point: need-more until complete, then exactly its length,
 * even with the SMTP session's first bytes behind it), and bad headers.
 */
#include "harness.h"

#include "smtp/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const unsigned char SIG[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* Build a v2 header: signature, ver/cmd, fam/proto, length, then body. */
static size_t v2(unsigned char *out, unsigned char vercmd, unsigned char famproto,
                 const unsigned char *body, size_t blen)
{
    memcpy(out, SIG, 12);
    out[12] = vercmd;
    out[13] = famproto;
    out[14] = (unsigned char)(blen >> 8);
    out[15] = (unsigned char)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static const unsigned char V4_BODY[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0, 25};

static void v6_body(unsigned char *b)
{
    struct in6_addr a;
    inet_pton(AF_INET6, "2001:db8::1", &a);
    memcpy(b, &a, 16);
    inet_pton(AF_INET6, "2001:db8::2", &a);
    memcpy(b + 16, &a, 16);
    b[32] = 0xff; b[33] = 0xff; /* 65535 */
    b[34] = 0x01; b[35] = 0xd1; /* 465 */
}

/* Feed hdr (len n) at every split point, with and without trailing bytes
 * after it; check need-more before the end and n at the end. */
static void check_splits(const unsigned char *hdr, size_t n, const char *what)
{
    unsigned char buf[PROXY_V2_MAX + 32];
    proxy_info_t pi;
    const char *why = NULL;
    memcpy(buf, hdr, n);
    memcpy(buf + n, "EHLO x\r\n", 8);
    for (size_t k = 0; k < n; k++) {
        long r = proxy_parse(buf, k, &pi, &why);
        if (r != 0) {
            harness_fail(__FILE__, __LINE__, "%s: prefix %zu gave %ld (%s)", what, k, r,
                         r < 0 && why ? why : "");
            return;
        }
    }
    for (size_t extra = 0; extra <= 8; extra++) {
        long r = proxy_parse(buf, n + extra, &pi, &why);
        if (r != (long)n)
            harness_fail(__FILE__, __LINE__, "%s: with %zu extra bytes gave %ld, want %zu", what,
                         extra, r, n);
    }
}

static void check_v4(const proxy_info_t *pi, const char *src, unsigned sport, const char *dst,
                     unsigned dport)
{
    char a[INET_ADDRSTRLEN];
    const struct sockaddr_in *s = (const struct sockaddr_in *)&pi->src;
    const struct sockaddr_in *d = (const struct sockaddr_in *)&pi->dst;
    CHECK_INT(pi->local, 0);
    CHECK_INT(s->sin_family, AF_INET);
    CHECK_INT(d->sin_family, AF_INET);
    CHECK_INT(pi->srclen, sizeof(struct sockaddr_in));
    CHECK_INT(pi->dstlen, sizeof(struct sockaddr_in));
    CHECK_STR(inet_ntop(AF_INET, &s->sin_addr, a, sizeof a), src);
    CHECK_STR(inet_ntop(AF_INET, &d->sin_addr, a, sizeof a), dst);
    CHECK_INT(ntohs(s->sin_port), sport);
    CHECK_INT(ntohs(d->sin_port), dport);
}

static void check_v6(const proxy_info_t *pi, const char *src, unsigned sport, const char *dst,
                     unsigned dport)
{
    char a[INET6_ADDRSTRLEN];
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&pi->src;
    const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)&pi->dst;
    CHECK_INT(pi->local, 0);
    CHECK_INT(s->sin6_family, AF_INET6);
    CHECK_INT(d->sin6_family, AF_INET6);
    CHECK_INT(pi->srclen, sizeof(struct sockaddr_in6));
    CHECK_INT(pi->dstlen, sizeof(struct sockaddr_in6));
    CHECK_STR(inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof a), src);
    CHECK_STR(inet_ntop(AF_INET6, &d->sin6_addr, a, sizeof a), dst);
    CHECK_INT(ntohs(s->sin6_port), sport);
    CHECK_INT(ntohs(d->sin6_port), dport);
}

static long parse_str(const char *s, proxy_info_t *pi, const char **why)
{
    return proxy_parse((const unsigned char *)s, strlen(s), pi, why);
}

TEST(proxy_v1_good)
{
    proxy_info_t pi;
    const char *why = NULL;
    const char *h;

    h = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n";
    CHECK_INT(parse_str(h, &pi, &why), strlen(h));
    check_v4(&pi, "192.0.2.1", 56324, "198.51.100.2", 25);
    check_splits((const unsigned char *)h, strlen(h), "v1 tcp4");

    h = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
    CHECK_INT(parse_str(h, &pi, &why), strlen(h));
    check_v4(&pi, "0.0.0.0", 0, "255.255.255.255", 65535);

    h = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 587\r\n";
    CHECK_INT(parse_str(h, &pi, &why), strlen(h));
    check_v6(&pi, "2001:db8::1", 65535, "2001:db8::2", 587);
    check_splits((const unsigned char *)h, strlen(h), "v1 tcp6");

    h = "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n";
    CHECK_INT(parse_str(h, &pi, &why), strlen(h));
    check_v6(&pi, "::ffff:192.0.2.1", 1, "::1", 2);

    h = "PROXY UNKNOWN\r\n";
    CHECK_INT(parse_str(h, &pi, &why), strlen(h));
    CHECK_INT(pi.local, 1);
    CHECK_INT(pi.srclen, 0);
    check_splits((const unsigned char *)h, strlen(h), "v1 unknown");

    /* The spec's longest line is exactly 107 bytes. */
    h = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    CHECK_INT(strlen(h), PROXY_V1_MAX);
    CHECK_INT(parse_str(h, &pi, &why), PROXY_V1_MAX);
    CHECK_INT(pi.local, 1);
    check_splits((const unsigned char *)h, strlen(h), "v1 unknown max");

    h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    CHECK_INT(parse_str(h, &pi, &why), strlen(h));
    check_v6(&pi, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    check_splits((const unsigned char *)h, strlen(h), "v1 tcp6 max");
}

TEST(proxy_v2_good)
{
    unsigned char h[PROXY_V2_MAX], body[PROXY_V2_MAX];
    proxy_info_t pi;
    const char *why = NULL;
    size_t n;

    n = v2(h, 0x21, 0x11, V4_BODY, sizeof V4_BODY);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 28);
    check_v4(&pi, "192.0.2.1", 56324, "198.51.100.2", 25);
    check_splits(h, n, "v2 tcp4");

    v6_body(body);
    n = v2(h, 0x21, 0x21, body, 36);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 52);
    check_v6(&pi, "2001:db8::1", 65535, "2001:db8::2", 465);
    check_splits(h, n, "v2 tcp6");

    /* TLVs after the addresses (ALPN "smtp", then a NOOP pad) are skipped. */
    memcpy(body, V4_BODY, 12);
    static const unsigned char tlvs[] = {0x01, 0x00, 0x04, 's', 'm', 't', 'p', 0x04, 0x00, 0x03, 0, 0, 0};
    memcpy(body + 12, tlvs, sizeof tlvs);
    n = v2(h, 0x21, 0x11, body, 12 + sizeof tlvs);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 16 + 12 + sizeof tlvs);
    check_v4(&pi, "192.0.2.1", 56324, "198.51.100.2", 25);
    check_splits(h, n, "v2 tcp4 tlv");

    /* LOCAL (a health check): addresses ignored, whatever the family. */
    n = v2(h, 0x20, 0x00, NULL, 0);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 16);
    CHECK_INT(pi.local, 1);
    check_splits(h, n, "v2 local");
    n = v2(h, 0x20, 0x11, V4_BODY, sizeof V4_BODY);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 28);
    CHECK_INT(pi.local, 1);
    CHECK_INT(pi.srclen, 0);
    n = v2(h, 0x20, 0x12, NULL, 0); /* LOCAL ignores even a UDP family */
    CHECK_INT(proxy_parse(h, n, &pi, &why), 16);
    CHECK_INT(pi.local, 1);

    /* PROXY with UNSPEC or AF_UNIX: use the real endpoints. */
    n = v2(h, 0x21, 0x00, NULL, 0);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 16);
    CHECK_INT(pi.local, 1);
    memset(body, 0, 216);
    memcpy(body, "/run/haproxy.sock", 17);
    n = v2(h, 0x21, 0x31, body, 216);
    CHECK_INT(proxy_parse(h, n, &pi, &why), 16 + 216);
    CHECK_INT(pi.local, 1);
    check_splits(h, n, "v2 unix");

    /* The largest header we take. */
    memset(body, 0, sizeof body);
    memcpy(body, V4_BODY, 12);
    body[12] = 0x04; /* one NOOP TLV filling the rest */
    body[13] = (unsigned char)((PROXY_V2_MAX - 16 - 15) >> 8);
    body[14] = (unsigned char)(PROXY_V2_MAX - 16 - 15);
    n = v2(h, 0x21, 0x11, body, PROXY_V2_MAX - 16);
    CHECK_INT(n, PROXY_V2_MAX);
    CHECK_INT(proxy_parse(h, n, &pi, &why), PROXY_V2_MAX);
    check_v4(&pi, "192.0.2.1", 56324, "198.51.100.2", 25);
    check_splits(h, n, "v2 max");
}

TEST(proxy_v1_bad)
{
    static const char *const bad[] = {
        "GET / HTTP/1.0\r\n",
        "EHLO client.example\r\n",
        "proxy TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
        "PROXY\r\n",
        "PROXY \r\n",
        "PROXYTCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\rX",
        "PROXY TCP4  192.0.2.1 198.51.100.2 56324 25\r\n",
        "PROXY TCP4 192.0.2.1  198.51.100.2 56324 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25 \r\n",
        "PROXY  TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25 26\r\n",
        "PROXY TCP4 192.0.2.1\t198.51.100.2 56324 25\r\n",
        "PROXY tcp4 192.0.2.1 198.51.100.2 56324 25\r\n",
        "PROXY TCP5 192.0.2.1 198.51.100.2 56324 25\r\n",
        "PROXY TCP4\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY UNKNOWN\x01\r\n",
        "PROXY TCP4 2001:db8::1 198.51.100.2 56324 25\r\n",
        "PROXY TCP6 192.0.2.1 2001:db8::2 56324 25\r\n",
        "PROXY TCP4 192.0.2.256 198.51.100.2 56324 25\r\n",
        "PROXY TCP4 192.0.2 198.51.100.2 56324 25\r\n",
        "PROXY TCP4 192.0.2.01 198.51.100.2 56324 25\r\n",
        "PROXY TCP4 example.com 198.51.100.2 56324 25\r\n",
        "PROXY TCP6 2001:db8:::1 2001:db8::2 1 2\r\n",
        "PROXY TCP6 2001:db8::1%eth0 2001:db8::2 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 025 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 +25 25\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 25 0x19\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 100000 25\r\n",
    };
    proxy_info_t pi;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = NULL;
        long r = parse_str(bad[i], &pi, &why);
        if (r != -1)
            harness_fail(__FILE__, __LINE__, "\"%s\" gave %ld", bad[i], r);
        else if (!why || !*why)
            harness_fail(__FILE__, __LINE__, "\"%s\": no reason", bad[i]);
    }

    /* Too long: more than 107 bytes without CRLF is refused without
     * waiting for more, and a CRLF arriving one byte too late is too. */
    char longl[200];
    memset(longl, 'f', sizeof longl);
    memcpy(longl, "PROXY UNKNOWN ", 14);
    const char *why = NULL;
    CHECK_INT(proxy_parse((unsigned char *)longl, 100, &pi, &why), 0);
    CHECK_INT(proxy_parse((unsigned char *)longl, 107, &pi, &why), -1);
    CHECK_INT(proxy_parse((unsigned char *)longl, sizeof longl, &pi, &why), -1);
    memcpy(longl + 106, "\r\n", 2); /* 108 bytes with the CRLF */
    CHECK_INT(proxy_parse((unsigned char *)longl, 108, &pi, &why), -1);
    memcpy(longl + 105, "\r\n", 2); /* 107: fine */
    CHECK_INT(proxy_parse((unsigned char *)longl, 108, &pi, &why), 107);
}

TEST(proxy_early_verdicts)
{
    proxy_info_t pi;
    const char *why = NULL;
    /* Prefixes of either signature need more; the first wrong byte fails. */
    CHECK_INT(parse_str("", &pi, &why), 0);
    CHECK_INT(parse_str("P", &pi, &why), 0);
    CHECK_INT(parse_str("PROX", &pi, &why), 0);
    CHECK_INT(parse_str("PROXY", &pi, &why), 0);
    CHECK_INT(parse_str("PROXY TCP4 1", &pi, &why), 0);
    CHECK_INT(parse_str("PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r", &pi, &why), 0);
    CHECK_INT(parse_str("E", &pi, &why), -1);
    CHECK_INT(parse_str("PRONTO", &pi, &why), -1);
    CHECK_INT(parse_str("\r\n\r\n", &pi, &why), 0);
    CHECK_INT(parse_str("\r\n\r\nX", &pi, &why), -1);
    CHECK_INT(parse_str("\r\nEHLO", &pi, &why), -1);
    /* A byte no v1 line may hold fails at once. */
    CHECK_INT(parse_str("PROXY TCP4 1\n", &pi, &why), -1);
    CHECK_INT(proxy_parse((const unsigned char *)"PROXY TCP4 \0", 12, &pi, &why), -1);
}

TEST(proxy_v2_bad)
{
    unsigned char h[PROXY_V2_MAX + 64];
    proxy_info_t pi;
    const char *why = NULL;
    size_t n;

    n = v2(h, 0x21, 0x11, V4_BODY, sizeof V4_BODY);
    h[11] = 'X'; /* signature */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x11, 0x11, V4_BODY, sizeof V4_BODY); /* version 1 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x31, 0x11, V4_BODY, sizeof V4_BODY); /* version 3 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x22, 0x11, V4_BODY, sizeof V4_BODY); /* command 2 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x41, V4_BODY, sizeof V4_BODY); /* family 4 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x13, V4_BODY, sizeof V4_BODY); /* protocol 3 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x12, V4_BODY, sizeof V4_BODY); /* UDP over IPv4 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x22, V4_BODY, sizeof V4_BODY); /* UDP over IPv6 */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x32, V4_BODY, sizeof V4_BODY); /* unix datagram */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x11, V4_BODY, 8); /* IPv4 block too short */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);
    n = v2(h, 0x21, 0x21, V4_BODY, 12); /* IPv6 block too short */
    CHECK_INT(proxy_parse(h, n, &pi, &why), -1);

    /* Oversize: refused as soon as the length field is in, not after
     * waiting for 64 KiB that will never be read. */
    v2(h, 0x21, 0x11, NULL, 0);
    h[14] = (unsigned char)((PROXY_V2_MAX - 15) >> 8);
    h[15] = (unsigned char)(PROXY_V2_MAX - 15);
    CHECK_INT(proxy_parse(h, 16, &pi, &why), -1);
    h[14] = 0xff;
    h[15] = 0xff;
    CHECK_INT(proxy_parse(h, 16, &pi, &why), -1);
    CHECK(why && strstr(why, "too long"));
    /* ...and bad version/command are also known at 16 bytes. */
    n = v2(h, 0x22, 0x11, V4_BODY, sizeof V4_BODY);
    CHECK_INT(proxy_parse(h, 16, &pi, &why), -1);
    /* A valid header is still partial one byte short. */
    n = v2(h, 0x21, 0x11, V4_BODY, sizeof V4_BODY);
    CHECK_INT(proxy_parse(h, n - 1, &pi, &why), 0);
}

TEST(proxy_out_untouched_on_failure)
{
    proxy_info_t pi;
    const char *why = NULL;
    memset(&pi, 0xab, sizeof pi);
    CHECK_INT(parse_str("PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n", &pi, &why), -1);
    CHECK(((unsigned char *)&pi)[0] == 0xab);
    const char *good = "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n";
    CHECK_INT(parse_str(good, &pi, &why), strlen(good));
    check_v4(&pi, "192.0.2.1", 1, "198.51.100.2", 2);
}
