/*
 * Unit tests for src/smtp/data.c, the DATA/BDAT content decoder.
 *
 * Every case is fed whole, one byte at a time, and split at every position
 * into two pieces; all three must agree with each other, with the expected
 * text written in the table, and with a deliberately different reference
 * decoder below (whole-buffer search for CRLF.CRLF, then line splitting).
 * A deterministic pseudo-random sweep over the alphabet {a . CR LF} then
 * compares the decoder with the reference on thousands of short inputs.
 */
#include "harness.h"

#include "core/buf.h"
#include "smtp/data.h"
#include "data_ref.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


static void result_free(result_t *r)
{
    buf_free(&r->out);
}

/* Feed in pieces of the given sizes (0 = the rest), the way a session
 * does: offer everything not yet consumed, stop feeding once done. */
static void run_pieces(data_mode mode, const char *in, size_t len, const size_t *cuts,
                       size_t ncuts, bool finish, result_t *r)
{
    data_dec_t d;
    size_t off = 0, avail = 0;
    memset(r, 0, sizeof *r);
    data_dec_init(&d, mode);
    for (size_t i = 0; i <= ncuts && !r->done; i++) {
        avail = i < ncuts ? cuts[i] : len;
        if (avail > len)
            avail = len;
        if (avail < off)
            continue;
        size_t n = data_dec_feed(&d, in + off, avail - off, &r->out, &r->done);
        off += n;
        /* Before the terminator everything offered is consumed (a held CR
         * counts as consumed); after it nothing more is taken. */
        if (!r->done && off != avail)
            harness_fail(__FILE__, __LINE__, "consumed %zu of %zu without done", off, avail);
    }
    if (finish && !r->done)
        data_dec_finish(&d, &r->out);
    r->consumed = off;
    r->bare_lf = d.bare_lf;
    r->bare_cr = d.bare_cr;
    r->lines = d.lines;
}

static void run_whole(data_mode mode, const char *in, size_t len, bool finish, result_t *r)
{
    run_pieces(mode, in, len, NULL, 0, finish, r);
}

static void run_bytes(data_mode mode, const char *in, size_t len, bool finish, result_t *r)
{
    size_t *cuts = calloc(len + 1, sizeof *cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    run_pieces(mode, in, len, cuts, len, finish, r);
    free(cuts);
}


static void show(const char *what, const char *in, size_t len, const result_t *got, const result_t *want)
{
    buf_t a = BUF_INIT, b = BUF_INIT, c = BUF_INIT;
    const buf_t *src[3] = {NULL, &got->out, &want->out};
    buf_t *dst[3] = {&a, &b, &c};
    for (int k = 0; k < 3; k++) {
        const char *p = k ? buf_cstr(src[k]) : in;
        size_t n = k ? src[k]->len : len;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '\r')
                buf_puts(dst[k], "\\r");
            else if (p[i] == '\n')
                buf_puts(dst[k], "\\n");
            else
                buf_putc(dst[k], p[i]);
        }
    }
    harness_fail(__FILE__, __LINE__,
                 "%s: input \"%s\": got \"%s\" consumed=%zu done=%d lf=%lu cr=%lu lines=%lu; "
                 "want \"%s\" consumed=%zu done=%d lf=%lu cr=%lu lines=%lu",
                 what, a.data, b.data, got->consumed, got->done, got->bare_lf, got->bare_cr,
                 got->lines, c.data, want->consumed, want->done, want->bare_lf, want->bare_cr,
                 want->lines);
    buf_free(&a);
    buf_free(&b);
    buf_free(&c);
}

/* Whole, byte by byte, every two-piece split: all must equal want.
 * Returns the number of mismatches. */
static int check_all_ways(data_mode mode, const char *in, size_t len, bool finish,
                          const result_t *want)
{
    int bad = 0;
    result_t r;
    run_whole(mode, in, len, finish, &r);
    if (!same(&r, want)) {
        show("whole", in, len, &r, want);
        bad++;
    }
    result_free(&r);
    run_bytes(mode, in, len, finish, &r);
    if (!same(&r, want)) {
        show("bytes", in, len, &r, want);
        bad++;
    }
    result_free(&r);
    for (size_t cut = 0; cut <= len && !bad; cut++) {
        run_pieces(mode, in, len, &cut, 1, finish, &r);
        if (!same(&r, want)) {
            show("split", in, len, &r, want);
            bad++;
        }
        result_free(&r);
    }
    return bad;
}

typedef struct {
    data_mode mode;
    const char *in;
    size_t len;
    const char *out;   /* after feeding everything (no finish) */
    size_t out_len;
    long consumed;     /* -1: all of it */
    bool done;
    unsigned long bare_lf, bare_cr;
} dcase_t;

#define S(lit) lit, sizeof(lit) - 1
#define DOT DATA_MODE_DOT
#define BDAT DATA_MODE_BDAT

static const dcase_t cases[] = {
    /* The terminator, and only the real one. */
    {DOT, S(".\r\n"), S(""), 3, true, 0, 0},
    {DOT, S("a\r\n.\r\n"), S("a\n"), 6, true, 0, 0},
    {DOT, S("a\r\n.\r\nQUIT\r\n"), S("a\n"), 6, true, 0, 0},
    {DOT, S(".\r\nMAIL FROM:<x@y>\r\n"), S(""), 3, true, 0, 0},
    {DOT, S("\r\n\r\n.\r\n"), S("\n\n"), -1, true, 0, 0},
    {DOT, S("Subject: x\r\n\r\nbody\r\n.\r\n"), S("Subject: x\n\nbody\n"), -1, true, 0, 0},
    /* Smuggling variants: all content, none ends the message. */
    {DOT, S("a\n.\nb"), S("a\n\nb"), -1, false, 2, 0},
    {DOT, S("a\n.\r\nb"), S("a\n\nb"), -1, false, 1, 0},
    {DOT, S("a\r\n.\nb"), S("a\n\nb"), -1, false, 1, 0},
    {DOT, S("a\r.\rb"), S("a\n\nb"), -1, false, 0, 2},
    {DOT, S("a\r\n.\rb"), S("a\n\nb"), -1, false, 0, 1},
    {DOT, S("a\r\n.\r\r\nb"), S("a\n\n\nb"), -1, false, 0, 1},
    {DOT, S("a\r\n. \r\nb"), S("a\n \nb"), -1, false, 0, 0},
    {DOT, S("a\r\n..\r\nb"), S("a\n.\nb"), -1, false, 0, 0},
    {DOT, S("a\r\n.\n.\r\nb"), S("a\n\n\nb"), -1, false, 1, 0},
    {DOT, S("\n.\n"), S("\n\n"), -1, false, 2, 0},
    {DOT, S("\n.\r\n"), S("\n\n"), -1, false, 1, 0},
    {DOT, S("\r\n.\n"), S("\n\n"), -1, false, 1, 0},
    {DOT, S("\r.\r\n"), S("\n\n"), -1, false, 0, 1},
    {DOT, S("x\r.\r\nafter"), S("x\n\nafter"), -1, false, 0, 1},
    {DOT, S("x\n.\r\nnext"), S("x\n\nnext"), -1, false, 1, 0},
    {DOT, S("a\r\n.\r\x00\r\nb"), S("a\n\n\x00\nb"), -1, false, 0, 1},
    /* ...but a real CRLF.CRLF after any of them still ends it. */
    {DOT, S("a\n.\nb\r\n.\r\n"), S("a\n\nb\n"), -1, true, 2, 0},
    {DOT, S("a\r\n.\r\r\n.\r\nX"), S("a\n\n\n"), 10, true, 0, 1},
    {DOT, S("x\n.\r\n.\r\nnext"), S("x\n\n"), 8, true, 1, 0},
    {DOT, S("\r\r\n.\r\n"), S("\n\n"), -1, true, 0, 1},
    {DOT, S("a\rb\nc\r\n.\r\n"), S("a\nb\nc\n"), -1, true, 1, 1},
    /* Held bytes at the end of the input. */
    {DOT, S("\r.\r"), S("\n"), -1, false, 0, 1},
    {DOT, S("\r\n.\r"), S("\n"), -1, false, 0, 0},
    {DOT, S("abc\r"), S("abc"), -1, false, 0, 0},
    {DOT, S("abc\r\n."), S("abc\n"), -1, false, 0, 0},
    {DOT, S("."), S(""), -1, false, 0, 0},
    {DOT, S(""), S(""), 0, false, 0, 0},
    /* Dot-unstuffing on every line, whatever ended the one before. */
    {DOT, S("..foo\r\n.\r\n"), S(".foo\n"), -1, true, 0, 0},
    {DOT, S(".foo\r\n.\r\n"), S("foo\n"), -1, true, 0, 0},
    {DOT, S("a\r\n.bar\nx.\r\n.\r\n"), S("a\nbar\nx.\n"), -1, true, 1, 0},
    {DOT, S("a\n..b\r.c\r\n.\r\n"), S("a\n.b\nc\n"), -1, true, 1, 1},
    {DOT, S("...\r\n.\r\n"), S("..\n"), -1, true, 0, 0},
    {DOT, S("a.b\r\n. .\r\n.\r\n"), S("a.b\n .\n"), -1, true, 0, 0},
    /* Ordinary bytes, NULs and 8-bit data pass untouched. */
    {DOT, S("\x00\xff\x80z\r\n.\r\n"), S("\x00\xff\x80z\n"), -1, true, 0, 0},
    {DOT, S("tab\there\r\n.\r\n"), S("tab\there\n"), -1, true, 0, 0},
    /* BDAT: no dots, no terminator, same line-end rules. */
    {BDAT, S("a\r\n.\r\nb"), S("a\n.\nb"), -1, false, 0, 0},
    {BDAT, S("..x\r\n.\r\n"), S("..x\n.\n"), -1, false, 0, 0},
    {BDAT, S("a\rb\nc\r\n"), S("a\nb\nc\n"), -1, false, 1, 1},
    {BDAT, S("a\r"), S("a"), -1, false, 0, 0},
    {BDAT, S("\r\r\r\n"), S("\n\n\n"), -1, false, 0, 2},
    {BDAT, S("\n\n"), S("\n\n"), -1, false, 2, 0},
};

static unsigned long count_nl(const buf_t *b)
{
    unsigned long n = 0;
    for (size_t i = 0; i < b->len; i++)
        n += b->data[i] == '\n';
    return n;
}

/* The expected result written in the table entry. */
static void table_want(const dcase_t *c, result_t *w)
{
    memset(w, 0, sizeof *w);
    buf_append(&w->out, c->out, c->out_len);
    w->consumed = c->consumed < 0 ? c->len : (size_t)c->consumed;
    w->done = c->done;
    w->bare_lf = c->bare_lf;
    w->bare_cr = c->bare_cr;
}

TEST(data_table)
{
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const dcase_t *c = &cases[k];
        result_t want, ref;
        table_want(c, &want);
        want.lines = count_nl(&want.out);
        /* The table, the reference and the decoder all agree. */
        reference(c->mode, c->in, c->len, false, &ref);
        if (!same(&ref, &want))
            show("reference vs table", c->in, c->len, &ref, &want);
        check_all_ways(c->mode, c->in, c->len, false, &want);
        result_free(&ref);
        /* With data_dec_finish (BDAT LAST, or a dropped DATA). */
        reference(c->mode, c->in, c->len, true, &ref);
        check_all_ways(c->mode, c->in, c->len, true, &ref);
        result_free(&ref);
        result_free(&want);
    }
}

/* A tiny deterministic generator: the same inputs on every run. */
static uint32_t rng_state = 0x12345678u;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

TEST(data_random_vs_reference)
{
    static const char alphabet[] = "a.\r\n\r\n.";
    char in[24];
    int bad = 0;
    for (int iter = 0; iter < 4000 && bad < 5; iter++) {
        size_t len = rng() % sizeof in;
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rng() % (sizeof alphabet - 1)];
        data_mode mode = (iter & 1) ? DATA_MODE_BDAT : DATA_MODE_DOT;
        for (int fin = 0; fin < 2; fin++) {
            result_t ref;
            reference(mode, in, len, fin, &ref);
            bad += check_all_ways(mode, in, len, fin, &ref);
            CHECK(memchr(buf_cstr(&ref.out), '\r', ref.out.len) == NULL);
            result_free(&ref);
        }
    }
    CHECK_INT(bad, 0);
}

TEST(data_nothing_after_terminator)
{
    data_dec_t d;
    buf_t out = BUF_INIT;
    bool done = false;
    const char in[] = "hi\r\n.\r\nRSET\r\n";
    data_dec_init(&d, DATA_MODE_DOT);
    CHECK_INT(data_dec_feed(&d, in, sizeof in - 1, &out, &done), 7);
    CHECK(done);
    CHECK_STR(buf_cstr(&out), "hi\n");
    /* Once done, the decoder takes nothing more and says so again. */
    done = false;
    CHECK_INT(data_dec_feed(&d, in + 7, sizeof in - 8, &out, &done), 0);
    CHECK(done);
    data_dec_finish(&d, &out);
    CHECK_STR(buf_cstr(&out), "hi\n");
    CHECK_INT(d.lines, 1);
    buf_free(&out);
}

TEST(data_done_cleared_while_running)
{
    data_dec_t d;
    buf_t out = BUF_INIT;
    bool done = true;
    data_dec_init(&d, DATA_MODE_DOT);
    CHECK_INT(data_dec_feed(&d, "x\r\n", 3, &out, &done), 3);
    CHECK(!done);
    CHECK_INT(data_dec_feed(&d, "", 0, &out, &done), 0);
    CHECK(!done);
    buf_free(&out);
}

TEST(data_long_line_streams)
{
    /* A partial line is handed out as it arrives: the decoder keeps no
     * copy, so a huge line costs it nothing. */
    data_dec_t d;
    buf_t out = BUF_INIT;
    bool done = false;
    char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    data_dec_init(&d, DATA_MODE_DOT);
    for (int i = 0; i < 256; i++) {
        CHECK_INT(data_dec_feed(&d, chunk, sizeof chunk, &out, &done), sizeof chunk);
        REQUIRE(out.len == (size_t)(i + 1) * sizeof chunk);
    }
    CHECK_INT(data_dec_feed(&d, "\r", 1, &out, &done), 1);
    CHECK_INT(out.len, 256 * sizeof chunk);
    CHECK_INT(data_dec_feed(&d, "\n.\r\n", 4, &out, &done), 4);
    CHECK(done);
    CHECK_INT(out.len, 256 * sizeof chunk + 1);
    CHECK(out.data[out.len - 1] == '\n');
    CHECK_INT(d.lines, 1);
    buf_free(&out);
}

TEST(data_many_line_ends_in_one_chunk)
{
    /* Many bare LFs and no CR, then many bare CRs and no LF, in one chunk:
     * the scan must find each line end and count every one. */
    buf_t in = BUF_INIT, out = BUF_INIT;
    for (int i = 0; i < 20000; i++)
        buf_puts(&in, "line\n");
    for (int i = 0; i < 20000; i++)
        buf_puts(&in, ".dot\r");
    buf_puts(&in, "\r\n.\r\n");
    data_dec_t d;
    bool done = false;
    data_dec_init(&d, DATA_MODE_DOT);
    CHECK_INT(data_dec_feed(&d, in.data, in.len, &out, &done), in.len);
    CHECK(done);
    CHECK_INT(d.bare_lf, 20000);
    CHECK_INT(d.bare_cr, 20000);
    CHECK_INT(d.lines, 40001);
    CHECK_INT(out.len, 20000 * 5 + 20000 * 4 + 1);
    CHECK(memchr(out.data, '\r', out.len) == NULL);
    CHECK(strncmp(out.data + 100000, "dot\ndot\n", 8) == 0);
    buf_free(&in);
    buf_free(&out);
}

TEST(data_bdat_chunks_and_finish)
{
    /* BDAT chunks may split anywhere, even between CR and LF. */
    data_dec_t d;
    buf_t out = BUF_INIT;
    bool done = false;
    data_dec_init(&d, DATA_MODE_BDAT);
    CHECK_INT(data_dec_feed(&d, "From: a\r", 8, &out, &done), 8);
    CHECK_INT(data_dec_feed(&d, "\n\r\n.body", 8, &out, &done), 8);
    CHECK(!done);
    CHECK_STR(buf_cstr(&out), "From: a\n\n.body");
    data_dec_finish(&d, &out);
    CHECK_STR(buf_cstr(&out), "From: a\n\n.body\n");
    CHECK_INT(d.lines, 3);
    CHECK_INT(d.bare_cr + d.bare_lf, 0);
    /* Finish on an empty or cleanly ended message adds nothing. */
    buf_reset(&out);
    data_dec_init(&d, DATA_MODE_BDAT);
    data_dec_finish(&d, &out);
    CHECK_INT(out.len, 0);
    CHECK_INT(d.lines, 0);
    buf_free(&out);
}
