/*
 * fuzz_data: the DATA/BDAT decoder must give the same answer however the
 * input is cut, and the same answer as an independent reference (a plain
 * substring search for CRLF.CRLF, then line splitting).  Input: byte 0
 * picks the mode, whether to call data_dec_finish, and a seed for random
 * cut points; the rest is the message.  Any difference aborts.
 */
#include "core/buf.h"
#include "smtp/data.h"
#include "../unit/data_ref.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


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

static void same_or_die(const result_t *a, const result_t *b)
{
    if (!same(a, b))
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
