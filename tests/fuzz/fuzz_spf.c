/*
 * fuzz_spf: the pure parts of the SPF evaluator on arbitrary input, split
 * on '\n':
 *
 *   line 1   an SPF record (checked as it is and with "v=spf1 " in front)
 *   line 2   a macro-string, expanded as a domain-spec and as exp= text
 *   line 3   the sender, line 4 the HELO name, line 5 the client address
 *
 * Beyond "no crash, no leak, no undefined behaviour", the contracts of
 * spf.h and spf-private.h are checked: a refused record or macro says
 * why in printable ASCII and a parsed one holds well-formed terms; an
 * expansion stays within SPF_EXPAND_MAX; a name made ready for a query
 * is a valid one; the Received-SPF value is one line of printable ASCII
 * for every result.
 */
#include "policy/spf-private.h"
#include "policy/spf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_spf: %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static void check_printable(const buf_t *b)
{
    for (size_t i = 0; i < b->len; i++)
        CHECK(b->data[i] >= 0x20 && b->data[i] < 0x7f);
}

static void check_record(const char *rec)
{
    buf_t why = BUF_INIT;
    int rc = spf_record_check(rec, &why);
    if (rc != 0) {
        CHECK(why.len > 0);
        check_printable(&why);
    } else {
        CHECK(why.len == 0);
        CHECK(spf_is_record(rec));
        spf_record_t r;
        CHECK(spf_record_parse(rec, &r, &why) == 0);
        for (size_t i = 0; i < r.n; i++) {
            const spf_term_t *t = &r.terms[i];
            CHECK(t->text[0] && !strchr(t->text, ' '));
            CHECK(strchr("+-~?", t->qual));
            CHECK(t->cidr4 >= 0 && t->cidr4 <= 32 && t->cidr6 >= 0 && t->cidr6 <= 128);
            if (t->mech == SPF_M_INCLUDE || t->mech == SPF_M_EXISTS)
                CHECK(t->spec && t->spec[0]);
            if (t->spec)
                CHECK(spf_macro_string_ok(t->spec, strlen(t->spec), SPF_MS_DOMAIN, NULL));
        }
        if (r.redirect)
            CHECK(spf_macro_string_ok(r.redirect, strlen(r.redirect), SPF_MS_DOMAIN, NULL));
        spf_record_free(&r);
    }
    buf_free(&why);
}

static void check_macro(const char *ms, const spf_request_t *req)
{
    buf_t out = BUF_INIT, why = BUF_INIT;
    for (int exp = 0; exp < 2; exp++) {
        int rc = spf_macro_expand(ms, req, NULL, exp, &out, &why);
        if (rc != 0) {
            CHECK(rc == -1 && out.len == 0 && why.len > 0);
            check_printable(&why);
            /* Refused as exp text means refused as a domain-spec too,
             * unless only the length was the problem. */
            if (exp && !strstr(buf_cstr(&why), "longer than"))
                CHECK(!spf_macro_string_ok(ms, strlen(ms), SPF_MS_DOMAIN, NULL));
            continue;
        }
        CHECK(why.len == 0 && out.len <= SPF_EXPAND_MAX);
        if (!exp) {
            CHECK(spf_macro_string_ok(ms, strlen(ms), SPF_MS_MODIFIER, NULL));
            if (spf_query_name(&out)) {
                CHECK(out.len > 0 && out.len <= SPF_NAME_MAX && out.data[out.len - 1] != '.');
                size_t label = 0;
                for (size_t i = 0; i < out.len; i++) {
                    if (out.data[i] == '.') {
                        CHECK(label > 0);
                        label = 0;
                    } else {
                        CHECK(out.data[i] != 0);   /* other octets are queried escaped */
                        CHECK(++label <= SPF_LABEL_MAX);
                    }
                }
            }
        }
    }
    buf_free(&out);
    buf_free(&why);
}

static void check_received(const spf_request_t *req)
{
    spf_answer_t a;
    spf_answer_init(&a);
    buf_puts(&a.problem, req->sender);
    snprintf(a.mechanism, sizeof a.mechanism, "%s", req->helo);
    buf_t out = BUF_INIT;
    for (int r = SPF_NONE; r <= SPF_PENDING; r++) {
        a.result = (spf_result_t)r;
        buf_reset(&out);
        spf_received_value(req, &a, &out);
        CHECK(out.len > 0 && strlen(buf_cstr(&out)) == out.len);
        check_printable(&out);
    }
    buf_free(&out);
    spf_answer_free(&a);
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
    char *line[5] = {"", "", "", "", ""};
    char *p = copy;
    for (int i = 0; i < 5 && p; i++) {
        line[i] = p;
        char *nl = strchr(p, '\n');
        if (nl)
            *nl++ = 0;
        p = nl;
    }
    check_record(line[0]);
    buf_t prefixed = BUF_INIT;
    buf_printf(&prefixed, "v=spf1 %s", line[0]);
    check_record(buf_cstr(&prefixed));
    buf_free(&prefixed);

    spf_request_t req = {.ip = line[4][0] ? line[4] : "192.0.2.1", .sender = line[2], .helo = line[3],
                         .receiver = "mx.example.org", .now = 1700000000};
    check_macro(line[1], &req);
    check_received(&req);
    (void)spf_domain_ok(line[1]);
    free(copy);
    return 0;
}
