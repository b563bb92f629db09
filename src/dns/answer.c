/*
 * answer: dns_answer_t (reference counted, immutable once published),
 * type and status names, and the one-line text form used by `moat dns`,
 * `moat check` traces and log lines.
 *
 * An answer is built by one owner (the parser, the resolver) and then
 * only shared: after the first dns_answer_ref nobody may change it.
 * No clock, no network, no logging here.
 */
#include "dns/dns-private.h"

#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    dns_type_t t;
    const char *name;
} types[] = {
    {DNS_T_A, "A"}, {DNS_T_NS, "NS"}, {DNS_T_PTR, "PTR"},
    {DNS_T_MX, "MX"}, {DNS_T_TXT, "TXT"}, {DNS_T_AAAA, "AAAA"},
};

const char *dns_type_name(dns_type_t t)
{
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        if (types[i].t == t)
            return types[i].name;
    return "?";
}

int dns_type_parse(const char *s)
{
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        if (str_ieq(s, types[i].name))
            return (int)types[i].t;
    return -1;
}

const char *dns_status_name(dns_status_t s)
{
    switch (s) {
    case DNS_OK: return "OK";
    case DNS_NODATA: return "NODATA";
    case DNS_NXDOMAIN: return "NXDOMAIN";
    case DNS_TEMPFAIL: return "TEMPFAIL";
    }
    return "?";
}

const char *dns_rcode_name(unsigned rcode, char buf[16])
{
    static const char *const names[] = {
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
        "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE",
    };
    if (rcode < ARRAY_LEN(names))
        return names[rcode];
    snprintf(buf, 16, "RCODE %u", rcode & 0xfff);   /* rcodes have 12 bits */
    return buf;
}

dns_answer_t *dns_answer_new(dns_type_t type, const char *name, dns_status_t status)
{
    dns_answer_t *a = xcalloc(1, sizeof *a);
    a->type = type;
    a->name = xstrdup(name);
    a->status = status;
    a->refs = 1;
    return a;
}

void dns_answer_add(dns_answer_t *a, const char *data, unsigned pref)
{
    /* Grow by doubling: answers are small, but a hostile one may carry
     * thousands of records and must not cost quadratic time. */
    if ((a->n & (a->n - 1)) == 0) {
        size_t cap = a->n ? a->n * 2 : 1;
        a->rr = xrealloc(a->rr, cap * sizeof *a->rr);
    }
    a->rr[a->n].data = xstrdup(data);
    a->rr[a->n].pref = pref;
    a->n++;
}

dns_answer_t *dns_answer_tempfail(dns_type_t type, const char *name, const char *fmt, ...)
{
    dns_answer_t *a = dns_answer_new(type, name, DNS_TEMPFAIL);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->error, sizeof a->error, fmt, ap);
    va_end(ap);
    return a;
}

static int cmp_mx(const void *x, const void *y)
{
    const dns_rr_t *a = x, *b = y;
    if (a->pref != b->pref)
        return a->pref < b->pref ? -1 : 1;
    return strcmp(a->data, b->data);
}

void dns_answer_sort(dns_answer_t *a)
{
    if (a->type == DNS_T_MX && a->n > 1)
        qsort(a->rr, a->n, sizeof *a->rr, cmp_mx);
}

dns_answer_t *dns_answer_ref(dns_answer_t *a)
{
    if (a)
        a->refs++;
    return a;
}

void dns_answer_unref(dns_answer_t **ap)
{
    dns_answer_t *a = ap ? *ap : NULL;
    if (!a)
        return;
    *ap = NULL;
    if (--a->refs > 0)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->rr[i].data);
    free(a->rr);
    free(a->name);
    free(a);
}

/* TXT data in double quotes, with '"' and '\' escaped, so that records
 * holding spaces or commas stay apart. */
static void put_quoted(buf_t *out, const char *s)
{
    buf_putc(out, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_putc(out, '\\');
        buf_putc(out, *s);
    }
    buf_putc(out, '"');
}

void dns_answer_format(const dns_answer_t *a, buf_t *out)
{
    switch (a->status) {
    case DNS_OK:
        break;
    case DNS_TEMPFAIL:
        buf_printf(out, "TEMPFAIL (%s)", a->error[0] ? a->error : "unknown error");
        return;
    default:
        buf_puts(out, dns_status_name(a->status));
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        const dns_rr_t *r = &a->rr[i];
        switch (a->type) {
        case DNS_T_MX:
            buf_printf(out, "%s%u %s", i ? ", " : "", r->pref, r->data[0] ? r->data : ".");
            break;
        case DNS_T_TXT:
            if (i)
                buf_puts(out, ", ");
            put_quoted(out, r->data);
            break;
        default:
            /* the root (an NS or PTR of ".") shows as "." */
            buf_printf(out, "%s%s", i ? " " : "", r->data[0] || a->type == DNS_T_A ||
                                                      a->type == DNS_T_AAAA ? r->data : ".");
            break;
        }
    }
}
