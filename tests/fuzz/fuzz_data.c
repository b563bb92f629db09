/*
 * fuzz_data: the DATA/BDAT decoder must give the same answer however the
 * input is cut, and the same answer as an independent reference (a plain
 * substring search for CRLF.CRLF, then line splitting).  Input: byte 0
 * picks the mode, whether to call data_dec_finish, and a seed for random
 * cut points; the rest is the message.  Any difference aborts.
 */
#include "core/buf.h"
#include "smtp/data.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    buf_t out;
    size_t consumed;
    bool done;
    unsigned long bare_lf, bare_cr, lines;
} result_t;

/* Feed with cut points from next_cut (NULL: all at once). */
static void run(data_mode mode, const char *in, size_t len, bool finish, uint32_t seed,
                int how, result_t *r)
{
    data_dec_t d;
    size_t off = 0;
    memset(r, 0, sizeof *r);
    data_dec_init(&d, mode);
    while (!r->done) {
        size_t avail;
        if (how == 0)
            avail = len;
        else if (how == 1)
            avail = off + 1;
        else {
            seed = seed * 1103515245u + 12345u;
            avail = off + (seed >> 16) % 17;
        }
        if (avail > len)
            avail = len;
        size_t n = data_dec_feed(&d, in + off, avail - off, &r->out, &r->done);
        if (!r->done && off + n != avail)
            abort(); /* must consume all it is given until the end */
        off += n;
        if (off == len)
            break;
    }
    if (r->done) {
        /* Once done, it takes nothing more. */
        bool again = false;
        if (data_dec_feed(&d, in + off, len - off, &r->out, &again) != 0 || !again)
            abort();
    }
    if (finish && !r->done)
        data_dec_finish(&d, &r->out);
    r->consumed = off;
    r->bare_lf = d.bare_lf;
    r->bare_cr = d.bare_cr;
    r->lines = d.lines;
}

static void reference(data_mode mode, const char *in, size_t len, bool finish, result_t *r)
{
    size_t content = len;
    memset(r, 0, sizeof *r);
    r->consumed = len;
    if (mode == DATA_MODE_DOT) {
        for (size_t i = 0; i + 3 <= len + 0; i++) {
            /* "\r\n" + input: position i in input is the dot. */
            bool crlf_before = i == 0 || (i >= 2 && in[i - 2] == '\r' && in[i - 1] == '\n');
            if (crlf_before && memcmp(in + i, ".\r\n", 3) == 0) {
                content = i;
                r->consumed = i + 3;
                r->done = true;
                break;
            }
        }
    }
    size_t start = 0, i = 0;
    bool held_cr = false;
    while (i < content) {
        size_t eol_len;
        if (in[i] == '\n') {
            r->bare_lf++;
            eol_len = 1;
        } else if (in[i] == '\r') {
            if (i + 1 == content) {
                held_cr = true;
                break;
            }
            if (in[i + 1] == '\n') {
                eol_len = 2;
            } else {
                r->bare_cr++;
                eol_len = 1;
            }
        } else {
            i++;
            continue;
        }
        size_t s = start;
        if (mode == DATA_MODE_DOT && s < i && in[s] == '.')
            s++;
        buf_append(&r->out, in + s, i - s);
        buf_putc(&r->out, '\n');
        r->lines++;
        i += eol_len;
        start = i;
    }
    size_t s = start;
    if (mode == DATA_MODE_DOT && s < i && in[s] == '.')
        s++;
    buf_append(&r->out, in + s, i - s);
    if (finish && !r->done && (i > start || held_cr)) {
        buf_putc(&r->out, '\n');
        r->lines++;
        if (held_cr)
            r->bare_cr++;
    }
}

static void same_or_die(const result_t *a, const result_t *b)
{
    if (a->out.len != b->out.len || memcmp(buf_cstr(&a->out), buf_cstr(&b->out), a->out.len) != 0 ||
        a->consumed != b->consumed || a->done != b->done || a->bare_lf != b->bare_lf ||
        a->bare_cr != b->bare_cr || a->lines != b->lines)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    data_mode mode = (data[0] & 1) ? DATA_MODE_BDAT : DATA_MODE_DOT;
    bool finish = (data[0] & 2) != 0;
    uint32_t seed = data[0] >> 2;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    result_t ref, r;
    reference(mode, in, len, finish, &ref);
    if (memchr(buf_cstr(&ref.out), '\r', ref.out.len))
        abort();
    for (int how = 0; how < 3; how++) {
        run(mode, in, len, finish, seed, how, &r);
        same_or_die(&r, &ref);
        /* The smuggling defence in one line: no CR ever comes out, and
         * every line the decoder counts ends in "\n". */
        if (memchr(buf_cstr(&r.out), '\r', r.out.len))
            abort();
        unsigned long nl = 0;
        for (size_t i = 0; i < r.out.len; i++)
            nl += r.out.data[i] == '\n';
        if (nl != r.lines)
            abort();
        buf_free(&r.out);
    }
    buf_free(&ref.out);
    return 0;
}
