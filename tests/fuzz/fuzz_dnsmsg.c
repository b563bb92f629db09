/*
 * fuzz_dnsmsg: dns_msg_parse on arbitrary bytes must never read outside
 * the packet, crash, hang or leak, and what it returns must keep dns.h's
 * promises: a known status, at least one record for DNS_OK and none
 * otherwise, an error text for DNS_TEMPFAIL, host names in lower case
 * without a trailing dot, MX sorted, TTLs within the caps.
 *
 * Input: byte 0 picks the question type (A, NS, PTR, MX, TXT, AAAA);
 * the rest is the DNS message.  The question name is the message's own
 * first question name when it is plain (the seeds are real answers, so
 * their records match), else "x.test".  The bytes also go through
 * dns_name_norm as a string.
 */
#include "core/util.h"
#include "dns/dns-private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const dns_type_t types[] = {DNS_T_A, DNS_T_NS, DNS_T_PTR, DNS_T_MX, DNS_T_TXT, DNS_T_AAAA};

/* The first question name if it is uncompressed, valid and plain. */
static void question_name(const uint8_t *p, size_t n, char out[DNS_KEY_MAX + 1])
{
    char text[300];
    size_t pos = 12, o = 0;
    str_copy(out, "x.test", DNS_KEY_MAX + 1);
    while (pos < n && p[pos] != 0) {
        size_t l = p[pos];
        if (l > 63 || pos + 1 + l > n || o + l + 1 >= sizeof text)
            return;
        if (o)
            text[o++] = '.';
        memcpy(text + o, p + pos + 1, l);
        o += l;
        pos += 1 + l;
    }
    text[o] = 0;
    if (memchr(text, 0, o))
        return;
    char canon[DNS_KEY_MAX + 1];
    if (dns_name_norm(text, canon))
        str_copy(out, canon, DNS_KEY_MAX + 1);
}

static void check_host(const char *s)
{
    size_t n = strlen(s);
    if (n && s[n - 1] == '.')
        abort();
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    dns_type_t type = types[data[0] % ARRAY_LEN(types)];
    const uint8_t *pkt = data + 1;
    size_t len = size - 1;
    /* An exact-size copy, so that ASan sees any read past the end. */
    uint8_t *copy = xmalloc(len ? len : 1);
    memcpy(copy, pkt, len);

    char qname[DNS_KEY_MAX + 1];
    question_name(copy, len, qname);
    dns_answer_t *a = dns_msg_parse(copy, len, type, qname);
    if (!a || a->type != type || strcmp(a->name, qname) != 0 || a->refs != 1)
        abort();
    switch (a->status) {
    case DNS_OK:
        if (a->n < 1 || a->ttl > DNS_TTL_MAX)
            abort();
        break;
    case DNS_NODATA:
    case DNS_NXDOMAIN:
        if (a->n != 0 || a->ttl > DNS_NEG_TTL_MAX)
            abort();
        break;
    case DNS_TEMPFAIL:
        if (a->n != 0 || !a->error[0])
            abort();
        break;
    default:
        abort();
    }
    for (size_t i = 0; i < a->n; i++) {
        const char *d = a->rr[i].data;
        if (!d)
            abort();
        if (type == DNS_T_MX || type == DNS_T_NS || type == DNS_T_PTR)
            check_host(d);
        if (type == DNS_T_MX && i && (a->rr[i - 1].pref > a->rr[i].pref ||
                                      (a->rr[i - 1].pref == a->rr[i].pref &&
                                       strcmp(a->rr[i - 1].data, d) > 0)))
            abort();
        if (type == DNS_T_TXT)
            for (const char *c = d; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f)
                    abort();
    }
    buf_t out = BUF_INIT;
    dns_answer_format(a, &out);
    if (strlen(buf_cstr(&out)) != out.len)
        abort();
    buf_free(&out);
    dns_answer_unref(&a);

    /* The same bytes as a query name */
    char *name = xstrndup((const char *)pkt, len);
    char canon[DNS_KEY_MAX + 1];
    if (dns_name_norm(name, canon)) {
        size_t n = strlen(canon);
        if (n == 0 || n > DNS_KEY_MAX || canon[0] == '.' || canon[n - 1] == '.' || strstr(canon, ".."))
            abort();
        check_host(canon);
    }
    free(name);
    free(copy);
    return 0;
}
