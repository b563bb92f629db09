/*
 * Unit tests for src/dns: the wire-format parser (hand-built packets),
 * query-name checks, answer formatting, moat's cache (with the clock
 * passed in), and the resolver's callback rules (coalescing, cancel,
 * unref, the memo's wake) on names libunbound answers itself
 * ("localhost", "*.invalid"), so no packet leaves the process.
 */
#include "harness.h"

#include "core/util.h"
#include "dns/dns-private.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------ packet builder */

typedef struct pkt {
    unsigned char b[8192];
    size_t n;
} pkt_t;

static void p_u8(pkt_t *p, unsigned v) { p->b[p->n++] = (unsigned char)v; }
static void p_u16(pkt_t *p, unsigned v) { p_u8(p, v >> 8); p_u8(p, v & 0xff); }
static void p_u32(pkt_t *p, unsigned v) { p_u16(p, v >> 16); p_u16(p, v & 0xffff); }

/* A name uncompressed; "" is the root. */
static void p_name(pkt_t *p, const char *name)
{
    while (*name) {
        size_t l = strcspn(name, ".");
        p_u8(p, (unsigned)l);
        memcpy(p->b + p->n, name, l);
        p->n += l;
        name += l;
        if (*name == '.')
            name++;
    }
    p_u8(p, 0);
}

/* Header and one question; counts are patched by p_counts. */
static void p_start(pkt_t *p, unsigned rcode, const char *qname, unsigned qtype)
{
    p->n = 0;
    p_u16(p, 0x1234);
    p_u16(p, 0x8180 | rcode);
    p_u16(p, 1);
    p_u16(p, 0);
    p_u16(p, 0);
    p_u16(p, 0);
    p_name(p, qname);
    p_u16(p, qtype);
    p_u16(p, 1);
}

static void p_counts(pkt_t *p, unsigned an, unsigned ns)
{
    p->b[6] = (unsigned char)(an >> 8);
    p->b[7] = (unsigned char)an;
    p->b[8] = (unsigned char)(ns >> 8);
    p->b[9] = (unsigned char)ns;
}

/* Owner, type, class IN, ttl and a placeholder RDLENGTH; returns where
 * the RDLENGTH is, for p_rr_end. */
static size_t p_rr(pkt_t *p, const char *owner, unsigned type, unsigned ttl)
{
    p_name(p, owner);
    p_u16(p, type);
    p_u16(p, 1);
    p_u32(p, ttl);
    p_u16(p, 0);
    return p->n - 2;
}

static void p_rr_end(pkt_t *p, size_t at)
{
    size_t len = p->n - at - 2;
    p->b[at] = (unsigned char)(len >> 8);
    p->b[at + 1] = (unsigned char)len;
}

static void p_a(pkt_t *p, const char *owner, unsigned ttl, unsigned a, unsigned b, unsigned c, unsigned d)
{
    size_t at = p_rr(p, owner, DNS_T_A, ttl);
    p_u8(p, a); p_u8(p, b); p_u8(p, c); p_u8(p, d);
    p_rr_end(p, at);
}

static void p_host(pkt_t *p, const char *owner, unsigned type, unsigned ttl, const char *target)
{
    size_t at = p_rr(p, owner, type, ttl);
    p_name(p, target);
    p_rr_end(p, at);
}

static void p_mx(pkt_t *p, const char *owner, unsigned ttl, unsigned pref, const char *target)
{
    size_t at = p_rr(p, owner, DNS_T_MX, ttl);
    p_u16(p, pref);
    p_name(p, target);
    p_rr_end(p, at);
}

static void p_soa(pkt_t *p, const char *owner, unsigned ttl, unsigned minimum)
{
    size_t at = p_rr(p, owner, 6, ttl);
    p_name(p, "ns.test");
    p_name(p, "hostmaster.test");
    p_u32(p, 1);
    p_u32(p, 3600);
    p_u32(p, 600);
    p_u32(p, 86400);
    p_u32(p, minimum);
    p_rr_end(p, at);
}

static dns_answer_t *parse(const pkt_t *p, dns_type_t t, const char *name)
{
    return dns_msg_parse(p->b, p->n, t, name);
}

static char *fmt(const dns_answer_t *a)
{
    static char out[1024];
    buf_t b = BUF_INIT;
    dns_answer_format(a, &b);
    str_copy(out, buf_cstr(&b), sizeof out);
    buf_free(&b);
    return out;
}

/* ----------------------------------------------------------- the parser */

TEST(dns_msg_a_records)
{
    pkt_t p;
    p_start(&p, 0, "Listed.Client.TEST", DNS_T_A);
    p_a(&p, "listed.client.test", 300, 127, 0, 0, 2);
    p_a(&p, "LISTED.client.test", 120, 127, 0, 0, 4);
    p_counts(&p, 2, 0);
    dns_answer_t *a = parse(&p, DNS_T_A, "listed.client.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 2);
    CHECK_STR(a->rr[0].data, "127.0.0.2");
    CHECK_STR(a->rr[1].data, "127.0.0.4");
    CHECK_INT(a->ttl, 120);
    CHECK_STR(a->name, "listed.client.test");
    CHECK_STR(fmt(a), "127.0.0.2 127.0.0.4");
    dns_answer_unref(&a);
    CHECK(a == NULL);
}

TEST(dns_msg_aaaa)
{
    pkt_t p;
    p_start(&p, 0, "aaaaonly.test", DNS_T_AAAA);
    size_t at = p_rr(&p, "aaaaonly.test", DNS_T_AAAA, 300);
    static const unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x23};
    for (int i = 0; i < 16; i++)
        p_u8(&p, v6[i]);
    p_rr_end(&p, at);
    p_counts(&p, 1, 0);
    dns_answer_t *a = parse(&p, DNS_T_AAAA, "aaaaonly.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 1);
    CHECK_STR(a->rr[0].data, "2001:db8::23");
    dns_answer_unref(&a);

    /* A 4-byte AAAA is malformed, not an address. */
    p_start(&p, 0, "x.test", DNS_T_AAAA);
    p_a(&p, "x.test", 300, 1, 2, 3, 4);
    p.b[p.n - 4 - 10 + 1] = DNS_T_AAAA;   /* the record's TYPE low byte */
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_AAAA, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    CHECK_STR(a->error, "malformed answer");
    dns_answer_unref(&a);
}

TEST(dns_msg_mx_sorted_and_null)
{
    pkt_t p;
    p_start(&p, 0, "hasmx.test", DNS_T_MX);
    p_mx(&p, "hasmx.test", 300, 20, "MX2.hasmx.test");
    p_mx(&p, "hasmx.test", 300, 10, "mx1.hasmx.test");
    p_mx(&p, "hasmx.test", 300, 10, "a.hasmx.test");
    p_counts(&p, 3, 0);
    dns_answer_t *a = parse(&p, DNS_T_MX, "hasmx.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 3);
    CHECK_INT(a->rr[0].pref, 10);
    CHECK_STR(a->rr[0].data, "a.hasmx.test");
    CHECK_STR(a->rr[1].data, "mx1.hasmx.test");
    CHECK_INT(a->rr[2].pref, 20);
    CHECK_STR(a->rr[2].data, "mx2.hasmx.test");
    CHECK_STR(fmt(a), "10 a.hasmx.test, 10 mx1.hasmx.test, 20 mx2.hasmx.test");
    dns_answer_unref(&a);

    /* RFC 7505 null MX: "0 ." is the root, data "" */
    p_start(&p, 0, "nullmx.test", DNS_T_MX);
    p_mx(&p, "nullmx.test", 300, 0, "");
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_MX, "nullmx.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 1);
    CHECK_INT(a->rr[0].pref, 0);
    CHECK_STR(a->rr[0].data, "");
    CHECK_STR(fmt(a), "0 .");
    dns_answer_unref(&a);
}

TEST(dns_msg_txt_strings)
{
    pkt_t p;
    p_start(&p, 0, "2.0.0.127.zen.dnsbl.test", DNS_T_TXT);
    size_t at = p_rr(&p, "2.0.0.127.zen.dnsbl.test", DNS_T_TXT, 300);
    const char *parts[] = {"v=spf1 ", "ip4:192.0.2.0/24", " -all"};
    for (size_t i = 0; i < 3; i++) {
        p_u8(&p, (unsigned)strlen(parts[i]));
        memcpy(p.b + p.n, parts[i], strlen(parts[i]));
        p.n += strlen(parts[i]);
    }
    p_rr_end(&p, at);
    at = p_rr(&p, "2.0.0.127.zen.dnsbl.test", DNS_T_TXT, 300);
    p_u8(&p, 5);
    memcpy(p.b + p.n, "a\tb\"c", 5);
    p.n += 5;
    p_u8(&p, 0);   /* an empty character-string */
    p_rr_end(&p, at);
    p_counts(&p, 2, 0);
    dns_answer_t *a = parse(&p, DNS_T_TXT, "2.0.0.127.zen.dnsbl.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 2);
    CHECK_STR(a->rr[0].data, "v=spf1 ip4:192.0.2.0/24 -all");
    CHECK_STR(a->rr[1].data, "a?b\"c");
    CHECK_STR(fmt(a), "\"v=spf1 ip4:192.0.2.0/24 -all\", \"a?b\\\"c\"");
    dns_answer_unref(&a);

    /* A character-string running past RDLENGTH */
    p_start(&p, 0, "t.test", DNS_T_TXT);
    at = p_rr(&p, "t.test", DNS_T_TXT, 300);
    p_u8(&p, 10);
    p_u8(&p, 'x');
    p_rr_end(&p, at);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_TXT, "t.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    dns_answer_unref(&a);
}

TEST(dns_msg_ptr_and_ns)
{
    pkt_t p;
    p_start(&p, 0, "2.0.0.127.in-addr.arpa", DNS_T_PTR);
    p_host(&p, "2.0.0.127.in-addr.arpa", DNS_T_PTR, 300, "Listed.Client.Test");
    p_counts(&p, 1, 0);
    dns_answer_t *a = parse(&p, DNS_T_PTR, "2.0.0.127.in-addr.arpa");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 1);
    CHECK_STR(a->rr[0].data, "listed.client.test");
    dns_answer_unref(&a);

    p_start(&p, 0, "hasmx.test", DNS_T_NS);
    p_host(&p, "hasmx.test", DNS_T_NS, 300, "ns1.hasmx.test");
    p_host(&p, "hasmx.test", DNS_T_NS, 300, "ns2.hasmx.test");
    p_counts(&p, 2, 0);
    a = parse(&p, DNS_T_NS, "hasmx.test");
    REQUIRE(a->n == 2);
    CHECK_STR(fmt(a), "ns1.hasmx.test ns2.hasmx.test");
    dns_answer_unref(&a);

    /* Name bytes that cannot be a host name come out escaped. */
    p_start(&p, 0, "odd.test", DNS_T_PTR);
    size_t at = p_rr(&p, "odd.test", DNS_T_PTR, 300);
    p_u8(&p, 3);
    p_u8(&p, 'a');
    p_u8(&p, '.');
    p_u8(&p, ' ');
    p_u8(&p, 4);
    memcpy(p.b + p.n, "test", 4);
    p.n += 4;
    p_u8(&p, 0);
    p_rr_end(&p, at);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_PTR, "odd.test");
    REQUIRE(a->n == 1);
    CHECK_STR(a->rr[0].data, "a\\046\\032.test");
    dns_answer_unref(&a);
}

TEST(dns_msg_cname_chain)
{
    pkt_t p;
    p_start(&p, 0, "alias.test", DNS_T_A);
    p_host(&p, "alias.test", 5, 200, "middle.test");
    p_host(&p, "middle.test", 5, 100, "Final.test");
    p_a(&p, "final.test", 300, 127, 0, 0, 20);
    p_a(&p, "alias.test", 300, 10, 9, 9, 9);     /* not the chain's end: ignored */
    p_a(&p, "elsewhere.test", 300, 10, 8, 8, 8);
    p_counts(&p, 5, 0);
    dns_answer_t *a = parse(&p, DNS_T_A, "alias.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 1);
    CHECK_STR(a->rr[0].data, "127.0.0.20");
    CHECK_INT(a->ttl, 100);
    dns_answer_unref(&a);

    /* A chain to a name without records of the type: NODATA */
    p_start(&p, 0, "alias.test", DNS_T_MX);
    p_host(&p, "alias.test", 5, 200, "final.test");
    p_soa(&p, "test", 60, 30);
    p_counts(&p, 1, 1);
    a = parse(&p, DNS_T_MX, "alias.test");
    CHECK_INT(a->status, DNS_NODATA);
    CHECK_INT(a->ttl, 30);
    dns_answer_unref(&a);

    /* A CNAME loop never ends: a temporary failure, not a hang */
    p_start(&p, 0, "a.test", DNS_T_A);
    p_host(&p, "a.test", 5, 200, "b.test");
    p_host(&p, "b.test", 5, 200, "a.test");
    p_counts(&p, 2, 0);
    a = parse(&p, DNS_T_A, "a.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    dns_answer_unref(&a);
}

TEST(dns_msg_compression)
{
    /* owner names as pointers to the question (offset 12), and an MX
     * target "mx1" + pointer to the question's "hasmx.test" */
    pkt_t p;
    p_start(&p, 0, "hasmx.test", DNS_T_MX);
    p_u16(&p, 0xc00c);
    p_u16(&p, DNS_T_MX);
    p_u16(&p, 1);
    p_u32(&p, 300);
    size_t at = p.n;
    p_u16(&p, 0);
    p_u16(&p, 10);
    p_u8(&p, 3);
    memcpy(p.b + p.n, "mx1", 3);
    p.n += 3;
    p_u16(&p, 0xc00c);
    p_rr_end(&p, at);
    p_counts(&p, 1, 0);
    dns_answer_t *a = parse(&p, DNS_T_MX, "hasmx.test");
    CHECK_INT(a->status, DNS_OK);
    REQUIRE(a->n == 1);
    CHECK_STR(a->rr[0].data, "mx1.hasmx.test");
    dns_answer_unref(&a);

    /* A name that points at itself */
    p_start(&p, 0, "x.test", DNS_T_A);
    size_t self = p.n;
    p_u16(&p, 0xc000 | (unsigned)self);
    p_u16(&p, DNS_T_A);
    p_u16(&p, 1);
    p_u32(&p, 300);
    p_u16(&p, 4);
    p_u32(&p, 0x7f000001);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    CHECK_STR(a->error, "malformed answer");
    dns_answer_unref(&a);

    /* Two labels pointing at each other */
    p_start(&p, 0, "x.test", DNS_T_A);
    size_t l1 = p.n;
    p_u8(&p, 1);
    p_u8(&p, 'a');
    p_u16(&p, 0xc000 | (unsigned)(l1 + 4));
    p_u8(&p, 1);                        /* l1 + 4 */
    p_u8(&p, 'b');
    p_u16(&p, 0xc000 | (unsigned)l1);
    p_u16(&p, DNS_T_A);
    p_u16(&p, 1);
    p_u32(&p, 300);
    p_u16(&p, 4);
    p_u32(&p, 0x7f000001);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    dns_answer_unref(&a);

    /* A pointer past the end */
    p_start(&p, 0, "x.test", DNS_T_A);
    p_u16(&p, 0xc000 | 0x3fff);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    dns_answer_unref(&a);
}

TEST(dns_msg_truncated_everywhere)
{
    /* Every proper prefix of a good answer is a temporary failure (the
     * counts promise more than is there); ASan watches the reads. */
    pkt_t p;
    p_start(&p, 0, "hasmx.test", DNS_T_MX);
    p_mx(&p, "hasmx.test", 300, 10, "mx1.hasmx.test");
    p_mx(&p, "hasmx.test", 300, 20, "mx2.hasmx.test");
    p_soa(&p, "test", 60, 60);
    p_counts(&p, 2, 1);
    for (size_t n = 0; n < p.n; n++) {
        unsigned char *copy = xmalloc(n ? n : 1);
        memcpy(copy, p.b, n);
        dns_answer_t *a = dns_msg_parse(copy, n, DNS_T_MX, "hasmx.test");
        if (a->status != DNS_TEMPFAIL)
            harness_fail(__FILE__, __LINE__, "prefix of %zu bytes: status %d", n, a->status);
        dns_answer_unref(&a);
        free(copy);
    }
    dns_answer_t *a = dns_msg_parse(p.b, p.n, DNS_T_MX, "hasmx.test");
    CHECK_INT(a->status, DNS_OK);
    CHECK_INT(a->n, 2);
    dns_answer_unref(&a);

    /* Header counts far beyond the packet */
    p_start(&p, 0, "x.test", DNS_T_A);
    p_counts(&p, 65535, 65535);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    dns_answer_unref(&a);
}

TEST(dns_msg_negative_ttls)
{
    pkt_t p;
    /* NXDOMAIN: min(SOA TTL, SOA minimum) */
    p_start(&p, 3, "nx.test", DNS_T_A);
    p_soa(&p, "test", 300, 45);
    p_counts(&p, 0, 1);
    dns_answer_t *a = parse(&p, DNS_T_A, "nx.test");
    CHECK_INT(a->status, DNS_NXDOMAIN);
    CHECK_INT(a->ttl, 45);
    CHECK_STR(fmt(a), "NXDOMAIN");
    dns_answer_unref(&a);

    p_start(&p, 3, "nx.test", DNS_T_A);
    p_soa(&p, "test", 20, 600);
    p_counts(&p, 0, 1);
    a = parse(&p, DNS_T_A, "nx.test");
    CHECK_INT(a->ttl, 20);
    dns_answer_unref(&a);

    /* NXDOMAIN without SOA: DNS_NEG_TTL_NO_SOA */
    p_start(&p, 3, "nx.test", DNS_T_A);
    p_counts(&p, 0, 0);
    a = parse(&p, DNS_T_A, "nx.test");
    CHECK_INT(a->status, DNS_NXDOMAIN);
    CHECK_INT(a->ttl, DNS_NEG_TTL_NO_SOA);
    dns_answer_unref(&a);

    /* NODATA, capped at DNS_NEG_TTL_MAX */
    p_start(&p, 0, "aonly.test", DNS_T_MX);
    p_soa(&p, "test", 86400, 86400);
    p_counts(&p, 0, 1);
    a = parse(&p, DNS_T_MX, "aonly.test");
    CHECK_INT(a->status, DNS_NODATA);
    CHECK_INT(a->ttl, DNS_NEG_TTL_MAX);
    CHECK_STR(fmt(a), "NODATA");
    dns_answer_unref(&a);

    /* A positive TTL with the top bit set counts as 0 (RFC 2181) */
    p_start(&p, 0, "x.test", DNS_T_A);
    p_a(&p, "x.test", 0x80000000u, 127, 0, 0, 1);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_OK);
    CHECK_INT(a->ttl, 0);
    dns_answer_unref(&a);
}

TEST(dns_msg_rcodes)
{
    pkt_t p;
    p_start(&p, 2, "servfail.test", DNS_T_A);
    p_counts(&p, 0, 0);
    dns_answer_t *a = parse(&p, DNS_T_A, "servfail.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    CHECK_STR(a->error, "SERVFAIL");
    CHECK_STR(fmt(a), "TEMPFAIL (SERVFAIL)");
    dns_answer_unref(&a);

    p_start(&p, 5, "x.test", DNS_T_A);
    p_a(&p, "x.test", 300, 127, 0, 0, 1);   /* records do not rescue a REFUSED */
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    CHECK_STR(a->error, "REFUSED");
    dns_answer_unref(&a);

    p_start(&p, 15, "x.test", DNS_T_A);
    p_counts(&p, 0, 0);
    a = parse(&p, DNS_T_A, "x.test");
    CHECK_STR(a->error, "RCODE 15");
    dns_answer_unref(&a);

    /* NOERROR and records of another type only: NODATA */
    p_start(&p, 0, "nothing.test", DNS_T_A);
    size_t at = p_rr(&p, "nothing.test", DNS_T_TXT, 300);
    p_u8(&p, 2);
    p_u8(&p, 'h');
    p_u8(&p, 'i');
    p_rr_end(&p, at);
    p_counts(&p, 1, 0);
    a = parse(&p, DNS_T_A, "nothing.test");
    CHECK_INT(a->status, DNS_NODATA);
    dns_answer_unref(&a);

    a = dns_msg_parse((const unsigned char *)"", 0, DNS_T_A, "x.test");
    CHECK_INT(a->status, DNS_TEMPFAIL);
    dns_answer_unref(&a);
}

/* ------------------------------------------------------------ names */

TEST(dns_name_checks)
{
    char out[DNS_KEY_MAX + 1];
    CHECK(dns_name_norm("Mail.Example.TEST.", out));
    CHECK_STR(out, "mail.example.test");
    CHECK(dns_name_norm("2.0.0.127.zen.dnsbl.test", out));
    CHECK_STR(out, "2.0.0.127.zen.dnsbl.test");
    CHECK(dns_name_norm("_dmarc.x-y.test", out));
    CHECK(!dns_name_norm("", out));
    CHECK(!dns_name_norm(".", out));
    CHECK(!dns_name_norm("a..b", out));
    CHECK(!dns_name_norm(".a", out));
    CHECK(!dns_name_norm("a..", out));
    /* any octet but NUL may be in a label: escaped as the reply parser does */
    CHECK(dns_name_norm("a b.test", out));
    CHECK_STR(out, "a\\032b.test");
    CHECK(dns_name_norm("a\\.b.test", out));
    CHECK_STR(out, "a\\092.b.test");
    CHECK(dns_name_norm("caf\xc3\xa9.test", out));
    CHECK_STR(out, "caf\\195\\169.test");

    char label[70];
    memset(label, 'a', 63);
    strcpy(label + 63, ".test");
    CHECK(dns_name_norm(label, out));
    memset(label, 'a', 64);
    strcpy(label + 64, ".test");
    CHECK(!dns_name_norm(label, out));

    /* 253 octets is the most a name may have without its final dot */
    char name[300];
    size_t n = 0;
    while (n + 2 <= 253) {
        name[n++] = 'a';
        name[n++] = '.';
    }
    name[n++] = 'b';   /* 253 */
    name[n] = 0;
    CHECK_INT(strlen(name), 253);
    CHECK(dns_name_norm(name, out));
    name[n++] = 'c';
    name[n] = 0;
    CHECK(!dns_name_norm(name, out));
}

TEST(dns_types_and_status_names)
{
    CHECK_INT(dns_type_parse("mx"), DNS_T_MX);
    CHECK_INT(dns_type_parse("AAAA"), DNS_T_AAAA);
    CHECK_INT(dns_type_parse("Ptr"), DNS_T_PTR);
    CHECK_INT(dns_type_parse("CNAME"), -1);
    CHECK_STR(dns_type_name(DNS_T_TXT), "TXT");
    CHECK_STR(dns_type_name(DNS_T_NS), "NS");
    CHECK_STR(dns_status_name(DNS_NXDOMAIN), "NXDOMAIN");
    CHECK_STR(dns_status_name(DNS_TEMPFAIL), "TEMPFAIL");

    dns_answer_t *a = dns_answer_tempfail(DNS_T_A, "x.test", "timeout after %g s", 2.0);
    CHECK_STR(fmt(a), "TEMPFAIL (timeout after 2 s)");
    dns_answer_unref(&a);
    a = dns_answer_new(DNS_T_A, "x.test", DNS_OK);
    dns_answer_add(a, "127.0.0.2", 0);
    CHECK(dns_answer_ref(a) == a);
    CHECK_INT(a->refs, 2);
    dns_answer_t *b = a;
    dns_answer_unref(&b);
    CHECK(b == NULL);
    CHECK_INT(a->refs, 1);
    CHECK_STR(fmt(a), "127.0.0.2");
    dns_answer_unref(&a);
    dns_answer_unref(&a);   /* NULL: nothing */
    a = dns_answer_new(DNS_T_NS, "x.test", DNS_OK);
    dns_answer_add(a, "", 0);
    dns_answer_add(a, "ns.x.test", 0);
    CHECK_STR(fmt(a), ". ns.x.test");
    dns_answer_unref(&a);
}

/* ------------------------------------------------------------ the cache */

static dns_answer_t *ans(const char *name, dns_status_t st, unsigned ttl)
{
    dns_answer_t *a = dns_answer_new(DNS_T_A, name, st);
    if (st == DNS_OK)
        dns_answer_add(a, "127.0.0.1", 0);
    a->ttl = ttl;
    return a;
}

TEST(dns_cache_expiry)
{
    dns_cache_t *c = dns_cache_new(100);
    dns_answer_t *a = ans("a.test", DNS_OK, 10);
    CHECK(dns_cache_put(c, a, 1000.0));
    dns_answer_unref(&a);
    CHECK(dns_cache_get(c, DNS_T_A, "a.test", 1000.0) != NULL);
    CHECK(dns_cache_get(c, DNS_T_A, "a.test", 1009.9) != NULL);
    CHECK(dns_cache_get(c, DNS_T_MX, "a.test", 1001.0) == NULL);   /* another type */
    CHECK(dns_cache_get(c, DNS_T_A, "b.test", 1001.0) == NULL);
    CHECK(dns_cache_get(c, DNS_T_A, "a.test", 1010.0) == NULL);    /* expired: dropped */
    CHECK_INT(dns_cache_count(c), 0);

    /* negative answers are kept for their TTL too */
    a = ans("nx.test", DNS_NXDOMAIN, 60);
    CHECK(dns_cache_put(c, a, 0.0));
    dns_answer_unref(&a);
    dns_answer_t *got = dns_cache_get(c, DNS_T_A, "nx.test", 59.0);
    REQUIRE(got != NULL);
    CHECK_INT(got->status, DNS_NXDOMAIN);

    /* never: TEMPFAIL, TTL 0 */
    a = dns_answer_tempfail(DNS_T_A, "t.test", "SERVFAIL");
    a->ttl = 300;
    CHECK(!dns_cache_put(c, a, 0.0));
    dns_answer_unref(&a);
    a = ans("zero.test", DNS_OK, 0);
    CHECK(!dns_cache_put(c, a, 0.0));
    dns_answer_unref(&a);
    CHECK(dns_cache_get(c, DNS_T_A, "t.test", 0.0) == NULL);
    CHECK(dns_cache_get(c, DNS_T_A, "zero.test", 0.0) == NULL);
    CHECK_INT(dns_cache_count(c), 1);

    /* a newer answer replaces the old one */
    a = ans("nx.test", DNS_OK, 5);
    CHECK(dns_cache_put(c, a, 100.0));
    dns_answer_unref(&a);
    got = dns_cache_get(c, DNS_T_A, "nx.test", 101.0);
    REQUIRE(got != NULL);
    CHECK_INT(got->status, DNS_OK);
    CHECK_INT(dns_cache_count(c), 1);
    dns_cache_free(&c);
    CHECK(c == NULL);
}

TEST(dns_cache_bound_and_lru)
{
    dns_cache_t *c = dns_cache_new(3);
    char name[32];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "n%d.test", i);
        dns_answer_t *a = ans(name, DNS_OK, 300);
        dns_cache_put(c, a, 0.0);
        dns_answer_unref(&a);
    }
    /* n0 used: n1 is now the least recently used */
    CHECK(dns_cache_get(c, DNS_T_A, "n0.test", 1.0) != NULL);
    dns_answer_t *a = ans("n3.test", DNS_OK, 300);
    dns_cache_put(c, a, 1.0);
    dns_answer_unref(&a);
    CHECK_INT(dns_cache_count(c), 3);
    CHECK(dns_cache_get(c, DNS_T_A, "n1.test", 2.0) == NULL);
    CHECK(dns_cache_get(c, DNS_T_A, "n0.test", 2.0) != NULL);
    CHECK(dns_cache_get(c, DNS_T_A, "n2.test", 2.0) != NULL);
    CHECK(dns_cache_get(c, DNS_T_A, "n3.test", 2.0) != NULL);
    dns_cache_free(&c);

    /* Many more inserts than the bound: the count never passes it, and
     * an answer the cache dropped stays valid for whoever holds it. */
    c = dns_cache_new(1000);
    dns_answer_t *keep = ans("keep.test", DNS_OK, 300);
    dns_cache_put(c, keep, 0.0);
    for (int i = 0; i < 50000; i++) {
        snprintf(name, sizeof name, "m%d.test", i);
        a = ans(name, i % 3 ? DNS_OK : DNS_NODATA, 1 + (unsigned)(i % 7));
        dns_cache_put(c, a, (double)i / 1000.0);
        dns_answer_unref(&a);
        if (dns_cache_count(c) > 1000) {
            harness_fail(__FILE__, __LINE__, "count %zu over the bound", dns_cache_count(c));
            break;
        }
    }
    CHECK(dns_cache_get(c, DNS_T_A, "keep.test", 50.0) == NULL);
    CHECK_STR(keep->name, "keep.test");
    CHECK_INT(keep->refs, 1);
    dns_answer_unref(&keep);
    /* the most recent ones are there */
    CHECK(dns_cache_get(c, DNS_T_A, "m49999.test", 50.0) != NULL);
    dns_cache_free(&c);
}

/* ----------------------------------------- the resolver, without network */

typedef struct cbrec {
    int calls;
    bool from_cache;
    dns_status_t status;
    char data[64];
    dns_t **unref_me;          /* drop this reference inside the callback */
    dns_query_t **cancel_me;   /* cancel this handle inside the callback */
    int *in_lookup;            /* nonzero while dns_lookup runs */
    bool called_inside;
} cbrec_t;

static void rec_cb(dns_answer_t *a, bool from_cache, void *arg)
{
    cbrec_t *r = arg;
    r->calls++;
    r->from_cache = from_cache;
    r->status = a->status;
    str_copy(r->data, a->n ? a->rr[0].data : "", sizeof r->data);
    if (r->in_lookup && *r->in_lookup)
        r->called_inside = true;
    if (r->cancel_me) {
        dns_cancel(*r->cancel_me);
        *r->cancel_me = NULL;
    }
    if (r->unref_me)
        dns_unref(r->unref_me);
}

static void spin(struct event_base *base, const int *until)
{
    for (int i = 0; i < 200 && !*until; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* libunbound answers local names before ub_resolve_event returns, and
 * the answer goes into moat's cache at once: with the cache on, a second
 * lookup is a cache hit, so tests of waiters sharing a flight turn the
 * cache off. */
static dns_t *local_resolver(struct event_base *base, bool no_cache)
{
    buf_t err = BUF_INIT;
    /* A forwarder that is never asked: every name below is one that
     * libunbound answers from its built-in local zones. */
    dns_opts_t o = {.forwarders = "127.0.0.1@9", .timeout_ms = 5000, .cache_max = 100,
                    .no_cache = no_cache};
    dns_t *d = dns_new(base, &o, &err);
    if (!d)
        harness_fail(__FILE__, __LINE__, "dns_new: %s", buf_cstr(&err));
    buf_free(&err);
    return d;
}

TEST(dns_forwarder_forms)
{
    struct event_base *base = event_base_new();
    const char *good[] = {"127.0.0.1", "127.0.0.1@5353", "[127.0.0.1]:5353", "[::1]", "[::1]:53",
                          "::1", "::1@53", "10.0.0.1:53", "127.0.0.1@5353, [::1]:53 192.0.2.1"};
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        buf_t err = BUF_INIT;
        dns_opts_t o = {.forwarders = good[i]};
        dns_t *d = dns_new(base, &o, &err);
        if (!d)
            harness_fail(__FILE__, __LINE__, "\"%s\" refused: %s", good[i], buf_cstr(&err));
        dns_unref(&d);
        buf_free(&err);
    }
    const char *bad[] = {"dns.example", "127.0.0.1@", "127.0.0.1@0", "127.0.0.1@65536", "[::1",
                         "[::1]x", "::1:53x", "127.0.0.1@53x", "[dns.example]:53"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf_t err = BUF_INIT;
        dns_opts_t o = {.forwarders = bad[i]};
        dns_t *d = dns_new(base, &o, &err);
        if (d) {
            harness_fail(__FILE__, __LINE__, "\"%s\" accepted", bad[i]);
            dns_unref(&d);
        } else {
            CHECK(strstr(buf_cstr(&err), "bad forwarder") != NULL);
        }
        buf_free(&err);
    }
    event_base_free(base);
}

TEST(dns_resolver_local_answers)
{
    struct event_base *base = event_base_new();
    dns_t *d = local_resolver(base, true);
    REQUIRE(d);
    int in_lookup = 0;

    /* Two waiters on one question: one upstream query; neither called
     * from inside dns_lookup, even though libunbound answers at once. */
    cbrec_t r1 = {.in_lookup = &in_lookup}, r2 = {.in_lookup = &in_lookup};
    in_lookup = 1;
    dns_query_t *q1 = dns_lookup(d, DNS_T_A, "LocalHost.", rec_cb, &r1);
    dns_query_t *q2 = dns_lookup(d, DNS_T_A, "localhost", rec_cb, &r2);
    in_lookup = 0;
    CHECK(q1 != NULL && q2 != NULL);
    CHECK_INT(r1.calls + r2.calls, 0);
    spin(base, &r2.calls);
    CHECK_INT(r1.calls, 1);
    CHECK_INT(r2.calls, 1);
    CHECK(!r1.called_inside && !r2.called_inside);
    CHECK(!r1.from_cache);
    CHECK_INT(r1.status, DNS_OK);
    CHECK_STR(r1.data, "127.0.0.1");
    dns_stats_t st;
    dns_get_stats(d, &st);
    CHECK_INT(st.lookups, 2);
    CHECK_INT(st.queries, 1);
    CHECK_INT(st.coalesced, 1);
    CHECK_INT(st.in_flight, 0);
    CHECK_INT(st.cached, 0);
    dns_unref(&d);

    /* With the cache: the second lookup is answered inside dns_lookup,
     * from_cache set, and counted as a hit */
    d = local_resolver(base, false);
    REQUIRE(d);
    cbrec_t r3 = {0}, r4 = {0};
    CHECK(dns_lookup(d, DNS_T_A, "localhost", rec_cb, &r3) != NULL);
    spin(base, &r3.calls);
    CHECK(!r3.from_cache);
    CHECK(dns_lookup(d, DNS_T_A, "localhost", rec_cb, &r4) == NULL);
    CHECK_INT(r4.calls, 1);
    CHECK(r4.from_cache);
    CHECK_STR(r4.data, "127.0.0.1");
    dns_get_stats(d, &st);
    CHECK_INT(st.cache_hits, 1);
    CHECK_INT(st.cached, 1);
    CHECK_INT(st.queries, 1);

    /* An impossible name: NXDOMAIN at once, no query */
    cbrec_t r5 = {0};
    CHECK(dns_lookup(d, DNS_T_MX, "bad..name", rec_cb, &r5) == NULL);
    CHECK_INT(r5.calls, 1);
    CHECK_INT(r5.status, DNS_NXDOMAIN);

    /* RFC 6761 .invalid stays local: NXDOMAIN, negative-cached */
    cbrec_t r6 = {0};
    CHECK(dns_lookup(d, DNS_T_A, "x.invalid", rec_cb, &r6) != NULL);
    spin(base, &r6.calls);
    CHECK_INT(r6.status, DNS_NXDOMAIN);
    dns_get_stats(d, &st);
    CHECK_INT(st.queries, 2);
    CHECK_INT(st.cached, 2);
    dns_unref(&d);
    event_base_free(base);
}

TEST(dns_resolver_cancel_and_unref)
{
    struct event_base *base = event_base_new();
    dns_t *d = local_resolver(base, true);
    REQUIRE(d);

    /* cancel one waiter: the other still gets its answer */
    cbrec_t r1 = {0}, r2 = {0};
    dns_query_t *q1 = dns_lookup(d, DNS_T_AAAA, "localhost", rec_cb, &r1);
    dns_query_t *q2 = dns_lookup(d, DNS_T_AAAA, "localhost", rec_cb, &r2);
    REQUIRE(q1 && q2);
    dns_cancel(q1);
    spin(base, &r2.calls);
    CHECK_INT(r1.calls, 0);
    CHECK_INT(r2.calls, 1);
    CHECK_STR(r2.data, "::1");

    /* a waiter that cancels the next one from its callback */
    cbrec_t r3 = {0}, r4 = {0};
    dns_query_t *q3 = dns_lookup(d, DNS_T_A, "a.invalid", rec_cb, &r3);
    dns_query_t *q4 = dns_lookup(d, DNS_T_A, "a.invalid", rec_cb, &r4);
    REQUIRE(q3 && q4);
    r3.cancel_me = &q4;
    spin(base, &r3.calls);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_INT(r3.calls, 1);
    CHECK_INT(r4.calls, 0);

    /* the last reference dropped with lookups in flight: no callback,
     * nothing leaks (LeakSanitizer) */
    cbrec_t r5 = {0};
    CHECK(dns_lookup(d, DNS_T_A, "b.invalid", rec_cb, &r5) != NULL);
    dns_t *extra = dns_ref(d);
    dns_unref(&d);
    CHECK(d == NULL);
    dns_unref(&extra);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_INT(r5.calls, 0);

    /* the last reference dropped inside the first of two callbacks */
    d = local_resolver(base, true);
    REQUIRE(d);
    cbrec_t r6 = {0}, r7 = {0};
    r6.unref_me = &d;
    CHECK(dns_lookup(d, DNS_T_A, "c.invalid", rec_cb, &r6) != NULL);
    CHECK(dns_lookup(d, DNS_T_A, "c.invalid", rec_cb, &r7) != NULL);
    spin(base, &r6.calls);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_INT(r6.calls, 1);
    CHECK_INT(r7.calls, 0);
    CHECK(d == NULL);
    event_base_free(base);
}

typedef struct wakerec {
    int wakes;
    int *in_call;
    bool inside;
} wakerec_t;

static void on_wake(void *arg)
{
    wakerec_t *w = arg;
    w->wakes++;
    if (*w->in_call)
        w->inside = true;
}

TEST(dns_memo_wake_and_cache)
{
    struct event_base *base = event_base_new();
    dns_t *d = local_resolver(base, false);
    REQUIRE(d);
    int in_call = 0;
    wakerec_t w = {.in_call = &in_call};
    dns_memo_t *m = dns_memo_new(d, on_wake, &w);
    dns_unref(&d);   /* the memo keeps the resolver alive */

    dns_how_t how = {.cached = true, .ms = 99};
    in_call = 1;
    CHECK(dns_memo_get(m, DNS_T_A, "localhost", &how) == NULL);
    CHECK(dns_memo_get(m, DNS_T_A, "LOCALHOST.", &how) == NULL);   /* started once */
    dns_memo_prefetch(m, DNS_T_AAAA, "localhost");
    in_call = 0;
    CHECK_INT(dns_memo_outstanding(m), 2);
    spin(base, &w.wakes);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_INT(w.wakes, 1);   /* one wake; the prefetch wakes nobody */
    CHECK(!w.inside);
    CHECK_INT(dns_memo_outstanding(m), 0);

    const dns_answer_t *a = dns_memo_get(m, DNS_T_A, "localhost", &how);
    REQUIRE(a != NULL);
    CHECK_INT(a->status, DNS_OK);
    CHECK(!how.cached);
    a = dns_memo_get(m, DNS_T_AAAA, "localhost", NULL);
    REQUIRE(a != NULL);
    CHECK_STR(a->rr[0].data, "::1");

    /* cleared: the next get comes from the resolver's cache, at once */
    dns_memo_clear(m);
    a = dns_memo_get(m, DNS_T_A, "localhost", &how);
    REQUIRE(a != NULL);
    CHECK(how.cached);
    CHECK_INT(w.wakes, 1);

    /* freed with a query outstanding: no wake afterwards, no leak */
    CHECK(dns_memo_get(m, DNS_T_MX, "z.invalid", NULL) == NULL);
    CHECK_INT(dns_memo_outstanding(m), 1);
    dns_memo_free(&m);
    CHECK(m == NULL);
    for (int i = 0; i < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_INT(w.wakes, 1);
    event_base_free(base);
}
