/*
 * fuzz_mime: arbitrary content through the MIME parser and the cleanup
 * stage.
 *
 * The first input byte picks a configuration (the fast path; header and
 * body checks from inline: tables with edits and message actions; the
 * same with body_checks_decode, strict_mime_encoding_domain and small
 * limits), the second seeds the split of the rest into feeds.  Contract
 * checked beyond "no crash": the output and the verdict do not depend on
 * how the content is split into feeds; the parser alone (small limits,
 * pieces of any size) never reports a part deeper than its nesting
 * limit; a rejected or deferred message has a 4xx/5xx reply.  Nothing
 * touches the file system.
 */
#include "config/config.h"
#include "content/content.h"
#include "content/mime.h"
#include "core/buf.h"
#include "core/util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_MAX (256 * 1024)

static const char *const configs[] = {
    "",
    "header_checks = inline:{X-D:1=IGNORE, {X-R:1=REPLACE X-Rep: 1}, {X-P:1=PREPEND X-Pre: 1},"
    " {X-B:1=REJECT no}, X-H:1=HOLD, {Message-ID:<a>=REPLACE Message-ID: <b>}}\n"
    "mime_header_checks = inline:{{Content-Type:a=REJECT mime}, X-M:1=IGNORE}\n"
    "nested_header_checks = inline:{X-N:1=WARN, X-D:1=IGNORE}\n"
    "body_checks = inline:{drop=IGNORE, {rep=REPLACE new}, {pre=PREPEND before}, bad=DISCARD,"
    " {defer=DEFER later}}\n",
    "header_checks = inline:{{X-B:1=REJECT no}}\n"
    "body_checks = inline:{bad=REJECT, {rep=REPLACE new}}\n"
    "body_checks_decode = yes\n"
    "strict_mime_encoding_domain = yes\n"
    "line_length_limit = 512\n"
    "header_size_limit = 1024\n"
    "mime_nesting_limit = 3\n"
    "mime_boundary_length_limit = 8\n"
    "body_checks_size_limit = 100\n",
};
#define NCONFIGS (sizeof configs / sizeof configs[0])

static config_t *cfg[NCONFIGS];
static content_cfg_t *ccfg[NCONFIGS];

static void setup(void)
{
    if (ccfg[0])
        return;
    for (size_t i = 0; i < NCONFIGS; i++) {
        buf_t err = BUF_INIT;
        cfg[i] = config_load_text(configs[i], NULL, &err, NULL);
        if (cfg[i])
            ccfg[i] = content_cfg_new(config_main(cfg[i]), "/nonexistent", &err);
        if (!ccfg[i]) {
            fprintf(stderr, "fuzz_mime: configuration %zu: %s\n", i, buf_cstr(&err));
            abort();
        }
        buf_free(&err);
    }
}

static uint32_t rng(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void run(size_t k, const char *in, size_t n, uint32_t seed, buf_t *out, int *outcome, buf_t *reply)
{
    content_env_t env = {"FUZZ", "h[127.0.0.1]", "s@x", "r@y", "ESMTP", "h"};
    content_msg_t *m = content_new(ccfg[k], &env, 0);
    size_t i = 0;
    while (i < n) {
        size_t step = seed ? 1 + rng(&seed) % 700 : n - i;
        if (step > n - i)
            step = n - i;
        content_feed(m, in + i, step, out);
        i += step;
    }
    content_finish(m, out);
    const content_verdict_t *v = content_verdict(m);
    *outcome = (int)v->outcome;
    buf_puts(reply, buf_cstr(&v->reply));
    if (v->outcome != CV_PASS && (v->reply.len < 3 || (v->reply.data[0] != '4' && v->reply.data[0] != '5')))
        abort();
    (void)content_message_id(m);
    content_free(&m);
}

typedef struct depth_rec {
    int max;
} depth_rec_t;

static void d_body(void *arg, const mime_body_t *b)
{
    depth_rec_t *d = arg;
    if (b->part->depth > d->max)
        d->max = b->part->depth;
}

static void d_header(void *arg, const mime_header_t *h)
{
    buf_t n = BUF_INIT;
    /* exercise the parameter parser on every header */
    (void)mime_param(h->text, h->len, "name", &n);
    (void)mime_param(h->text, h->len, "filename", &n);
    buf_free(&n);
    (void)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > INPUT_MAX)
        return 0;
    setup();
    size_t k = data[0] % NCONFIGS;
    uint32_t seed = data[1] | 1u;
    const char *in = (const char *)data + 2;
    size_t n = size - 2;

    buf_t out1 = BUF_INIT, out2 = BUF_INIT, r1 = BUF_INIT, r2 = BUF_INIT;
    int o1, o2;
    run(k, in, n, 0, &out1, &o1, &r1);
    run(k, in, n, seed, &out2, &o2, &r2);
    if (o1 != o2 || out1.len != out2.len || memcmp(buf_cstr(&out1), buf_cstr(&out2), out1.len) != 0
        || strcmp(buf_cstr(&r1), buf_cstr(&r2)) != 0)
        abort();
    buf_free(&out1);
    buf_free(&out2);
    buf_free(&r1);
    buf_free(&r2);

    /* The parser alone, small limits, pieces of any size. */
    mime_opts_t o = {1024, 4, 2, false, true};
    depth_rec_t d = {0};
    mime_cb_t cb = {d_header, NULL, d_body, NULL};
    mime_t *m = mime_new(&o, &cb, &d);
    size_t piece = 1 + data[1] % 64;
    const char *p = in, *end = in + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        while (len > piece) {
            mime_update(m, p, piece, true);
            p += piece;
            len -= piece;
        }
        mime_update(m, p, len, false);
        p += len + (nl ? 1 : 0);
    }
    mime_finish(m);
    mime_free(&m);
    if (d.max > o.nesting_limit)
        abort();
    return 0;
}
