/*
 * msg: DNS messages in wire format (RFC 1035 section 4) to dns_answer_t,
 * and the check of query names.
 *
 * The reply comes from libunbound, which builds it from what a server on
 * the network sent, so every byte is untrusted: each read is checked
 * against the message length, compression pointers are followed a
 * bounded number of times (a looping packet ends as "malformed"), names
 * are limited to 255 octets on the wire, and a record's data must end
 * exactly where its RDLENGTH says.  Hand-written rather than libresolv's
 * ns_parserr so that these rules are visible in one place and the fuzzer
 * (tests/fuzz/fuzz_dnsmsg.c) exercises exactly them.
 *
 * Owns nothing beyond the answer it returns.  Must never read outside
 * the packet, allocate in proportion to anything but the packet's size,
 * or trust a count in the header.
 */
#include "dns/dns-private.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_CNAME 5
#define T_SOA 6
#define C_IN 1

/* A name as text: up to 255 wire octets, each of which may become a
 * four-character \DDD escape. */
#define TEXT_MAX 1024
/* Every label costs at least two wire octets, so a legal name has at
 * most 127 labels; more pointer hops than that means a loop. */
#define MAX_HOPS 128

/* --------------------------------------------------------------- names */

bool dns_name_norm(const char *in, char out[DNS_KEY_MAX + 1])
{
    size_t n = strlen(in);
    if (n && in[n - 1] == '.')
        n--;
    if (n == 0 || n > DNS_NAME_MAX)
        return false;
    size_t label = 0, o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            out[o++] = '.';
            continue;
        }
        if (c == 0 || ++label > 63)
            return false;
        if (c <= ' ' || c >= 0x7f || c == '\\') {
            /* a label may hold any octet (an SPF macro can make a space);
             * libunbound reads the escape, and answers come back so */
            o += (size_t)snprintf(out + o, DNS_KEY_MAX + 1 - o, "\\%03u", c);
        } else {
            out[o++] = (char)lc(c);
        }
    }
    if (label == 0)
        return false;
    out[o] = 0;
    return true;
}

/* ------------------------------------------------------------- reading */

typedef struct msg {
    const unsigned char *p;
    size_t len;
} msg_t;

static unsigned get16(const msg_t *m, size_t off)
{
    return (unsigned)m->p[off] << 8 | m->p[off + 1];
}

static uint32_t get32(const msg_t *m, size_t off)
{
    return (uint32_t)m->p[off] << 24 | (uint32_t)m->p[off + 1] << 16 |
           (uint32_t)m->p[off + 2] << 8 | m->p[off + 3];
}

/* The name at off as canonical text (lower case, no trailing dot, ""
 * for the root; octets that cannot appear in a plain name, and '.' or
 * '\' inside a label, as \DDD).  *end: the offset just after the name
 * where it starts (after the first pointer, if any).  false: malformed. */
static bool read_name(const msg_t *m, size_t off, char out[TEXT_MAX], size_t *end)
{
    size_t pos = off, o = 0, wire = 1;
    int hops = 0;
    bool jumped = false;
    for (;;) {
        if (pos >= m->len)
            return false;
        unsigned c = m->p[pos];
        if ((c & 0xc0) == 0xc0) {
            if (pos + 1 >= m->len || ++hops > MAX_HOPS)
                return false;
            if (!jumped)
                *end = pos + 2;
            jumped = true;
            pos = get16(m, pos) & 0x3fff;
            continue;
        }
        if (c & 0xc0)   /* 0x40 and 0x80: obsolete or unassigned label types */
            return false;
        if (c == 0) {
            if (!jumped)
                *end = pos + 1;
            break;
        }
        if (pos + 1 + c > m->len)
            return false;
        wire += c + 1;
        if (wire > 255)
            return false;
        if (o)
            out[o++] = '.';
        for (unsigned i = 1; i <= c; i++) {
            unsigned char b = m->p[pos + i];
            if (b <= ' ' || b >= 0x7f || b == '.' || b == '\\') {
                /* 4 bytes per octet at most: 255 * 4 < TEXT_MAX */
                o += (size_t)snprintf(out + o, TEXT_MAX - o, "\\%03u", b);
            } else {
                out[o++] = (char)lc(b);
            }
        }
        pos += 1 + c;
    }
    out[o] = 0;
    return true;
}

/* One resource record of the answer or authority section. */
typedef struct rr {
    char *owner;
    unsigned type, class;
    uint32_t ttl;
    size_t rdata, rdlen;
} rr_t;

/* Parse the record at *off; advances *off past it. */
static bool read_rr(const msg_t *m, size_t *off, rr_t *r)
{
    char owner[TEXT_MAX];
    size_t pos;
    if (!read_name(m, *off, owner, &pos))
        return false;
    if (pos + 10 > m->len)
        return false;
    r->type = get16(m, pos);
    r->class = get16(m, pos + 2);
    r->ttl = get32(m, pos + 4);
    if (r->ttl & 0x80000000u)   /* RFC 2181 section 8: treat as zero */
        r->ttl = 0;
    r->rdlen = get16(m, pos + 8);
    r->rdata = pos + 10;
    if (r->rdata + r->rdlen > m->len)
        return false;
    r->owner = xstrdup(owner);
    *off = r->rdata + r->rdlen;
    return true;
}

/* A name that fills the record's data exactly, from byte skip on. */
static bool rdata_name(const msg_t *m, const rr_t *r, size_t skip, char out[TEXT_MAX])
{
    size_t end;
    if (r->rdlen < skip + 1)
        return false;
    /* Reading may follow pointers anywhere, but the name's own bytes
     * must stay inside the record. */
    msg_t sub = {m->p, r->rdata + r->rdlen};
    return read_name(&sub, r->rdata + skip, out, &end) && end == r->rdata + r->rdlen;
}

/* The record's data as dns.h describes it; false: malformed. */
static bool add_record(dns_answer_t *a, const msg_t *m, const rr_t *r)
{
    char text[TEXT_MAX];
    const unsigned char *d = m->p + r->rdata;
    switch (a->type) {
    case DNS_T_A:
        if (r->rdlen != 4)
            return false;
        inet_ntop(AF_INET, d, text, sizeof text);
        dns_answer_add(a, text, 0);
        return true;
    case DNS_T_AAAA:
        if (r->rdlen != 16)
            return false;
        inet_ntop(AF_INET6, d, text, sizeof text);
        dns_answer_add(a, text, 0);
        return true;
    case DNS_T_NS:
    case DNS_T_PTR:
        if (!rdata_name(m, r, 0, text))
            return false;
        dns_answer_add(a, text, 0);
        return true;
    case DNS_T_MX:
        if (r->rdlen < 3 || !rdata_name(m, r, 2, text))
            return false;
        dns_answer_add(a, text, get16(m, r->rdata));
        return true;
    case DNS_T_TXT: {
        /* The character-strings concatenated; at most 65535 bytes. */
        buf_t b = BUF_INIT;
        size_t i = 0;
        while (i < r->rdlen) {
            size_t n = d[i++];
            if (i + n > r->rdlen) {
                buf_free(&b);
                return false;
            }
            for (size_t k = 0; k < n; k++) {
                unsigned char c = d[i + k];
                buf_putc(&b, (c < 0x20 || c == 0x7f) ? '?' : (char)c);
            }
            i += n;
        }
        dns_answer_add(a, buf_cstr(&b), 0);
        buf_free(&b);
        return true;
    }
    }
    return false;
}

static void free_rrs(rr_t *rr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rr[i].owner);
    free(rr);
}

static uint32_t min32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

dns_answer_t *dns_msg_parse(const unsigned char *pkt, size_t len, dns_type_t type, const char *name)
{
    msg_t m = {pkt, len};
    if (len < 12)
        return dns_answer_tempfail(type, name, "malformed answer");
    unsigned rcode = pkt[3] & 0x0f;
    unsigned qd = get16(&m, 4), an = get16(&m, 6), ns = get16(&m, 8);

    size_t off = 12;
    for (unsigned i = 0; i < qd; i++) {
        char q[TEXT_MAX];
        if (!read_name(&m, off, q, &off) || off + 4 > len)
            return dns_answer_tempfail(type, name, "malformed answer");
        off += 4;
    }
    if (rcode != 0 && rcode != 3) {
        char b[16];
        return dns_answer_tempfail(type, name, "%s", dns_rcode_name(rcode, b));
    }

    /* Every record takes at least 11 bytes, so the header's counts can
     * claim no more records than the packet could hold. */
    size_t cap = (size_t)an + ns, max = (len - off) / 11;
    if (cap > max)
        cap = max;
    rr_t *rr = xcalloc(cap ? cap : 1, sizeof *rr);
    size_t n = 0;
    for (unsigned i = 0; i < an + ns; i++) {
        if (n == cap || !read_rr(&m, &off, &rr[n])) {
            free_rrs(rr, n);
            return dns_answer_tempfail(type, name, "malformed answer");
        }
        n++;
    }
    size_t nan = an;   /* rr[0, nan): answer section; the rest: authority */

    /* Follow CNAMEs from the question name.  A chain longer than the
     * answer section has records must loop. */
    char target[TEXT_MAX];
    str_copy(target, name, sizeof target);
    uint32_t ttl = DNS_TTL_MAX;
    bool bad = false;
    for (size_t step = 0; step <= nan && !bad; step++) {
        size_t i;
        for (i = 0; i < nan; i++)
            if (rr[i].type == T_CNAME && rr[i].class == C_IN && strcmp(rr[i].owner, target) == 0)
                break;
        if (i == nan)
            break;
        char next[TEXT_MAX];
        if (!rdata_name(&m, &rr[i], 0, next) || step == nan) {
            bad = true;
            break;
        }
        ttl = min32(ttl, rr[i].ttl);
        str_copy(target, next, sizeof target);
    }

    dns_answer_t *a = NULL;
    if (!bad && rcode == 0) {
        a = dns_answer_new(type, name, DNS_OK);
        uint32_t rttl = DNS_TTL_MAX;
        for (size_t i = 0; i < nan && !bad; i++) {
            if (rr[i].type != (unsigned)type || rr[i].class != C_IN || strcmp(rr[i].owner, target))
                continue;
            if (!add_record(a, &m, &rr[i]))
                bad = true;
            rttl = min32(rttl, rr[i].ttl);
        }
        if (!bad && a->n) {
            a->ttl = min32(ttl, rttl);
            dns_answer_sort(a);
        } else if (!bad) {
            a->status = DNS_NODATA;
        }
    } else if (!bad) {
        a = dns_answer_new(type, name, DNS_NXDOMAIN);
    }

    if (a && !bad && a->status != DNS_OK) {
        /* RFC 2308 section 5: the SOA's own TTL and its MINIMUM field,
         * whichever is smaller. */
        uint32_t neg = DNS_NEG_TTL_NO_SOA;
        bool soa = false;
        for (size_t i = nan; i < n && !bad; i++) {
            if (rr[i].type != T_SOA || rr[i].class != C_IN)
                continue;
            char mname[TEXT_MAX], rname[TEXT_MAX];
            size_t p;
            msg_t sub = {pkt, rr[i].rdata + rr[i].rdlen};
            if (!read_name(&sub, rr[i].rdata, mname, &p) || !read_name(&sub, p, rname, &p) ||
                p + 20 != sub.len) {
                bad = true;
                break;
            }
            uint32_t v = min32(rr[i].ttl, get32(&m, p + 16));
            neg = soa ? min32(neg, v) : v;
            soa = true;
        }
        a->ttl = min32(neg, DNS_NEG_TTL_MAX);
        /* Keep the NODATA-with-CNAME TTL no longer than the chain. */
        a->ttl = min32(a->ttl, ttl);
    }
    free_rrs(rr, n);
    if (bad) {
        dns_answer_unref(&a);
        return dns_answer_tempfail(type, name, "malformed answer");
    }
    return a;
}
