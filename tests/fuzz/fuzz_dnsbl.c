/*
 * fuzz_dnsbl: the pure DNS-list code on arbitrary input, split on '\n':
 *
 *   line 1   a list spec (parsed with and without weights)
 *   line 2   an answer / client address / domain, matched against the
 *            spec, classified, and turned into query names; its bytes
 *            also drive the list-health state machine
 *   the rest a reply template, expanded and checked like a reply
 *
 * Beyond "no crash, no leak", the invariants of dnsbl.h are checked: a
 * parsed spec is normalized and bounded, a failed one says why and holds
 * nothing; query names are valid DNS names ending in the zone; an expanded
 * template has no control bytes it did not have, stays bounded, and is the
 * template itself when there is no '$'; a broken list always has a reason
 * and is logged at most once per period.
 */
#include "policy/dnsbl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_dnsbl: %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

enum { VALUE_MAX = 64 };

static const char *const names[] = {"rbl_code", "rbl_class", "rbl_what", "rbl_domain", "rbl_reason", "e", "c", "d"};
static const char *const values[] = {"554", "Client host", "192.0.2.1", "zen.dnsbl.test", "Listed\r\n\x01!", "", "\x7f\xff\t", "$x ${e}"};

static const char *get(void *arg, const char *name, size_t len)
{
    (void)arg;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return values[i];
    return NULL;
}

static void check_name(const buf_t *q, bool ok, const char *zone)
{
    if (!ok) {
        CHECK(q->len == 0);
        return;
    }
    const char *s = buf_cstr(q);
    CHECK(q->len > 0 && q->len <= 253 && strlen(s) == q->len);
    size_t label = 0;
    for (size_t i = 0; i < q->len; i++) {
        char c = s[i];
        if (c == '.') {
            CHECK(label > 0);
            label = 0;
        } else {
            CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_');
            CHECK(++label <= 63);
        }
    }
    CHECK(label > 0);
    size_t zl = strlen(zone);
    CHECK(q->len > zl + 1 && s[q->len - zl - 1] == '.' && strcmp(s + q->len - zl, zone) == 0);
}

static void check_site(const char *spec, bool with_weight, const char *addr)
{
    dnsbl_site_t s;
    buf_t err = BUF_INIT, q = BUF_INIT;
    if (dnsbl_site_parse(spec, with_weight, &s, &err) != 0) {
        CHECK(err.len > 0);
        CHECK(s.zone == NULL && s.filter_text == NULL && s.priv == NULL);
        buf_free(&err);
        return;
    }
    CHECK(err.len == 0);
    size_t zl = strlen(s.zone);
    CHECK(zl > 0 && zl <= 253 && s.zone[zl - 1] != '.');
    for (size_t i = 0; i < zl; i++)
        CHECK(!(s.zone[i] >= 'A' && s.zone[i] <= 'Z'));
    CHECK((s.filter_text == NULL) == (s.priv == NULL));
    CHECK(s.weight >= -1000000 && s.weight <= 1000000);
    if (!with_weight)
        CHECK(s.weight == 1 && !strchr(spec, '*'));
    bool m = dnsbl_site_match(&s, addr);
    if (!s.filter_text)
        CHECK(m == (dnsbl_classify(addr) != DNSBL_ANS_FOREIGN));
    else if (m)
        CHECK(strlen(addr) >= 7);   /* only dotted quads match */
    /* A filter written as a plain address matches that address. */
    unsigned a, b, c, d;
    char tail;
    if (s.filter_text && sscanf(s.filter_text, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 &&
        !strchr(s.filter_text, '[')) {
        char text[32];
        snprintf(text, sizeof text, "%u.%u.%u.%u", a, b, c, d);
        CHECK(dnsbl_site_match(&s, text));
    }
    check_name(&q, dnsbl_query_name_addr(addr, s.zone, &q), s.zone);
    check_name(&q, dnsbl_query_name_domain(addr, s.zone, &q), s.zone);
    check_name(&q, dnsbl_query_name_addr("2001:db8::1", s.zone, &q), s.zone);
    dnsbl_site_free(&s);
    buf_free(&q);
    buf_free(&err);
}

static void check_template(const char *tmpl, size_t len)
{
    buf_t out = BUF_INIT;
    template_expand(tmpl, get, NULL, &out);
    CHECK(strlen(buf_cstr(&out)) == out.len);
    /* Each template byte gives at most one value or itself. */
    CHECK(out.len <= len * VALUE_MAX + 1);
    bool tmpl_ctl = false;
    for (size_t i = 0; i < len; i++)
        tmpl_ctl |= (unsigned char)tmpl[i] < 0x20 || (unsigned char)tmpl[i] >= 0x7f;
    if (!tmpl_ctl)
        for (size_t i = 0; i < out.len; i++)
            CHECK((unsigned char)out.data[i] >= 0x20 && (unsigned char)out.data[i] < 0x7f);
    if (!memchr(tmpl, '$', len))
        CHECK(out.len == len && memcmp(buf_cstr(&out), tmpl, len) == 0);
    int code = 0;
    char dsn[16];
    const char *text = NULL;
    if (dnsbl_reply_parse(buf_cstr(&out), &code, dsn, sizeof dsn, &text)) {
        CHECK(code >= 400 && code <= 599);
        CHECK(dsn[0] == out.data[0] && dsn[1] == '.');
        CHECK(text && *text);
    }
    buf_free(&out);
}

/* Each byte of ops is one step of simulated time and one call. */
static void check_health(const unsigned char *ops, size_t n)
{
    enum { PERIOD = 7 };
    dnsbl_health_t *h = dnsbl_health_new(PERIOD);
    buf_t name = BUF_INIT, why = BUF_INIT;
    static const char *const zones[] = {"a.test", "b.test"};
    static const char *const answers[] = {"127.0.0.2", "127.255.255.254", "192.0.2.1", NULL};
    time_t now = 1000, last_log[2] = {-100, -100};
    dnsbl_health_domain_list(h, "b.test");
    for (size_t i = 0; i < n && i < 4096; i++) {
        unsigned op = ops[i];
        int zi = op & 1;
        const char *z = zones[zi];
        now += (op >> 5) & 3;   /* 0..3 seconds pass */
        switch ((op >> 1) & 7) {
        case 0:
            if (dnsbl_health_probe_due(h, z, now, &name))
                CHECK(name.len > strlen(z));
            else
                CHECK(name.len == 0);
            break;
        case 1: dnsbl_health_probe(h, z, op & 0x80, false, now); break;
        case 2: dnsbl_health_probe(h, z, op & 0x80, true, now); break;
        case 3: dnsbl_health_probe_answer(h, z, answers[(op >> 5) & 3], op & 0x80, now); break;
        case 4: {
            const char *a = answers[(op >> 5) & 3];
            dnsbl_health_bad_answer(h, z, dnsbl_classify(a), a, now);
            if (a && dnsbl_classify(a) != DNSBL_ANS_LISTED)
                CHECK(dnsbl_health_broken(h, z, NULL));
            break;
        }
        case 5: dnsbl_health_ignored(h, z); break;
        default:
            if (dnsbl_health_should_log(h, z, now)) {
                CHECK(now - last_log[zi] >= PERIOD);
                last_log[zi] = now;
            }
            break;
        }
        bool broken = dnsbl_health_broken(h, z, &why);
        CHECK(broken == (why.len > 0));
    }
    dnsbl_health_stats_t st;
    dnsbl_health_get_stats(h, "a.test", &st);
    CHECK(st.broken_probes <= st.probes);
    buf_free(&name);
    buf_free(&why);
    dnsbl_health_free(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 14)
        return 0;
    char *copy = malloc(size + 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    copy[size] = 0;
    char *spec = copy, *addr = "", *tmpl = "";
    size_t tlen = 0;
    char *nl = memchr(copy, '\n', size);
    if (nl) {
        *nl = 0;
        addr = nl + 1;
        char *nl2 = memchr(addr, '\n', size - (size_t)(addr - copy));
        if (nl2) {
            *nl2 = 0;
            tmpl = nl2 + 1;
            tlen = size - (size_t)(tmpl - copy);
        }
    }
    check_site(spec, true, addr);
    check_site(spec, false, addr);
    (void)dnsbl_classify(addr);
    /* Embedded NULs end the strings early; the template checks need its
     * real C-string length. */
    check_template(tmpl, strnlen(tmpl, tlen));
    check_health((const unsigned char *)addr, strlen(addr));
    free(copy);
    return 0;
}
