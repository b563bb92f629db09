/*
 * proxy: the HAProxy PROXY protocol header, v1 (text) and v2 (binary).
 *
 * Stateless and resumable: each call looks at everything received so far
 * and answers need-more, done-after-N, or malformed, so the caller simply
 * calls again when more bytes arrive.  It owns nothing and allocates
 * nothing; it fills the caller's proxy_info_t only on success.
 *
 * It must never read beyond len, never wait forever for bytes that cannot
 * make a valid header (a v1 line longer than 107 bytes, a v2 header longer
 * than PROXY_V2_MAX, a byte no header can contain), and never accept an
 * address that does not match the family it claims.
 */
#include "smtp/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const unsigned char V2_SIG[12] = {'\r', '\n', '\r', '\n', 0,   '\r',
                                         '\n', 'Q',  'U',  'I',  'T', '\n'};
static const char V1_SIG[] = "PROXY ";
#define V1_SIG_LEN 6
#define V2_HDR_LEN 16

static long fail(const char **why, const char *text)
{
    if (why)
        *why = text;
    return -1;
}

/* Decimal port 0..65535, no sign, no leading zero (except "0" itself). */
static int parse_port(const char *s, size_t n)
{
    unsigned v = 0;
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v > 65535 ? -1 : (int)v;
}

/* Fill a sockaddr of family af from the text address and port tokens. */
static int v1_sockaddr(int af, const char *a, size_t alen, const char *port, size_t plen,
                       struct sockaddr_storage *ss, socklen_t *sslen)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    int pt = parse_port(port, plen);
    if (pt < 0 || alen == 0 || alen >= sizeof tmp)
        return -1;
    memcpy(tmp, a, alen);
    tmp[alen] = 0;
    memset(ss, 0, sizeof *ss);
    if (af == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, tmp, &sin->sin_addr) != 1)
            return -1;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pt);
        *sslen = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        /* inet_pton(AF_INET6) would also take an IPv4-mapped form with a
         * dotted tail, which is a valid IPv6 address: that is fine. */
        if (inet_pton(AF_INET6, tmp, &sin6->sin6_addr) != 1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)pt);
        *sslen = sizeof *sin6;
    }
    return 0;
}

/* The line (without CRLF) is "PROXY " + the rest; n is its length. */
static long v1_line(const char *line, size_t n, proxy_info_t *out, const char **why)
{
    const char *p = line + V1_SIG_LEN, *end = line + n;
    const char *tok[4];
    size_t toklen[4];
    int af;

    if ((size_t)(end - p) >= 7 && memcmp(p, "UNKNOWN", 7) == 0 &&
        (p + 7 == end || p[7] == ' ')) {
        /* The spec lets the proxy put anything after UNKNOWN; it is
         * ignored and the real connection endpoints are used. */
        out->local = 1;
        return 0;
    }
    if ((size_t)(end - p) >= 5 && memcmp(p, "TCP4 ", 5) == 0)
        af = AF_INET;
    else if ((size_t)(end - p) >= 5 && memcmp(p, "TCP6 ", 5) == 0)
        af = AF_INET6;
    else
        return fail(why, "bad PROXY v1 protocol (want TCP4, TCP6 or UNKNOWN)");
    p += 5;

    /* Exactly four tokens separated by single spaces. */
    for (int i = 0; i < 4; i++) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *e = (i < 3) ? sp : end;
        if (!e || (i == 3 && sp))
            return fail(why, "bad PROXY v1 field count");
        if (e == p)
            return fail(why, "bad PROXY v1 spacing");
        tok[i] = p;
        toklen[i] = (size_t)(e - p);
        p = e + (i < 3);
    }
    if (v1_sockaddr(af, tok[0], toklen[0], tok[2], toklen[2], &out->src, &out->srclen) < 0 ||
        v1_sockaddr(af, tok[1], toklen[1], tok[3], toklen[3], &out->dst, &out->dstlen) < 0)
        return fail(why, "bad PROXY v1 address or port");
    return 0;
}

static long parse_v1(const unsigned char *data, size_t len, proxy_info_t *out, const char **why)
{
    /* The CR of the CRLF must sit below this index for the line, CRLF
     * included, to fit in PROXY_V1_MAX bytes. */
    size_t cr_lim = PROXY_V1_MAX - 1;
    size_t lim = len < cr_lim ? len : cr_lim;

    /* Refuse as soon as a byte no valid line can hold arrives, instead of
     * waiting for the CRLF or the length limit. */
    for (size_t i = V1_SIG_LEN; i < lim; i++) {
        unsigned char c = data[i];
        if (c == '\r') {
            if (i + 1 == len)
                return 0;
            if (data[i + 1] != '\n')
                return fail(why, "bad PROXY v1 line ending");
            long r = v1_line((const char *)data, i, out, why);
            return r < 0 ? r : (long)(i + 2);
        }
        if (c < 0x20 || c > 0x7e)
            return fail(why, "bad character in PROXY v1 header");
    }
    if (len >= cr_lim)
        return fail(why, "PROXY v1 header too long");
    return 0;
}

static long parse_v2(const unsigned char *data, size_t len, proxy_info_t *out, const char **why)
{
    if (len < V2_HDR_LEN)
        return 0;
    unsigned ver = data[12] >> 4, cmd = data[12] & 0x0f;
    unsigned fam = data[13] >> 4, proto = data[13] & 0x0f;
    size_t alen = ((size_t)data[14] << 8) | data[15];
    size_t total = V2_HDR_LEN + alen;
    const unsigned char *a = data + V2_HDR_LEN;

    if (ver != 2)
        return fail(why, "bad PROXY v2 version");
    if (cmd > 1)
        return fail(why, "bad PROXY v2 command");
    if (total > PROXY_V2_MAX)
        return fail(why, "PROXY v2 header too long");
    if (cmd == 1 && (fam > 3 || proto > 2))
        return fail(why, "bad PROXY v2 address family or protocol");
    if (cmd == 1 && proto == 2)
        return fail(why, "PROXY v2 datagram transport is not SMTP");
    if (len < total)
        return 0;

    /* LOCAL (a health check from the proxy itself) ignores the address
     * block entirely, as the spec requires; so do UNSPEC and AF_UNIX,
     * which carry nothing an SMTP policy could use. */
    if (cmd == 0 || fam == 0 || fam == 3 || proto == 0) {
        out->local = 1;
        return (long)total;
    }
    if (fam == 1) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *d4 = (struct sockaddr_in *)&out->dst;
        if (alen < 12)
            return fail(why, "PROXY v2 IPv4 address block too short");
        s4->sin_family = d4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        memcpy(&d4->sin_addr, a + 4, 4);
        memcpy(&s4->sin_port, a + 8, 2); /* both already in network order */
        memcpy(&d4->sin_port, a + 10, 2);
        out->srclen = out->dstlen = sizeof(struct sockaddr_in);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&out->dst;
        if (alen < 36)
            return fail(why, "PROXY v2 IPv6 address block too short");
        s6->sin6_family = d6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        memcpy(&d6->sin6_addr, a + 16, 16);
        memcpy(&s6->sin6_port, a + 32, 2);
        memcpy(&d6->sin6_port, a + 34, 2);
        out->srclen = out->dstlen = sizeof(struct sockaddr_in6);
    }
    /* Anything after the addresses is TLVs (ALPN, SSL info, ...); moat
     * uses none of them, so they are skipped whole. */
    return (long)total;
}

long proxy_parse(const unsigned char *data, size_t len, proxy_info_t *out, const char **why)
{
    proxy_info_t tmp;
    long r;
    size_t n;

    memset(&tmp, 0, sizeof tmp);
    if (len == 0)
        return 0;
    if (data[0] == V2_SIG[0]) {
        n = len < sizeof V2_SIG ? len : sizeof V2_SIG;
        if (memcmp(data, V2_SIG, n) != 0)
            return fail(why, "bad PROXY v2 signature");
        if (len < sizeof V2_SIG)
            return 0;
        r = parse_v2(data, len, &tmp, why);
    } else {
        n = len < V1_SIG_LEN ? len : V1_SIG_LEN;
        if (memcmp(data, V1_SIG, n) != 0)
            return fail(why, "no PROXY protocol header");
        if (len < V1_SIG_LEN)
            return 0;
        r = parse_v1(data, len, &tmp, why);
    }
    if (r > 0)
        *out = tmp;
    return r;
}
