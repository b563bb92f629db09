/*
 * data_ref: an independent reference for the DATA/BDAT decoder, shared by
 * tests/unit/test_data.c and tests/fuzz/fuzz_data.c.  Header-only (static
 * functions) so the fuzz build needs no extra object.
 */
#ifndef MOAT_TEST_DATA_REF_H
#define MOAT_TEST_DATA_REF_H

#include "core/buf.h"
#include "smtp/data.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    buf_t out;
    size_t consumed;
    bool done;
    unsigned long bare_lf, bare_cr, lines;
} result_t;

/*
 * The reference: find the terminator as a plain substring search on
 * "\r\n" + input, then cut the content into lines.  It shares no code or
 * structure with the state machine.
 */
static void reference(data_mode mode, const char *in, size_t len, bool finish, result_t *r)
{
    size_t content = len;
    memset(r, 0, sizeof *r);
    r->consumed = len;
    if (mode == DATA_MODE_DOT) {
        char *pre = malloc(len + 2);
        pre[0] = '\r';
        pre[1] = '\n';
        memcpy(pre + 2, in, len);
        for (size_t i = 0; i + 5 <= len + 2; i++) {
            if (memcmp(pre + i, "\r\n.\r\n", 5) == 0) {
                content = i;          /* bytes of input before the dot */
                r->consumed = i + 3;  /* ".\r\n" after them */
                r->done = true;
                break;
            }
        }
        free(pre);
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
                held_cr = true; /* not yet known what it is */
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
    /* The unfinished last line: its text is emitted as it comes. */
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

static bool same(const result_t *a, const result_t *b)
{
    return a->out.len == b->out.len && memcmp(buf_cstr(&a->out), buf_cstr(&b->out), a->out.len) == 0 &&
           a->consumed == b->consumed && a->done == b->done && a->bare_lf == b->bare_lf &&
           a->bare_cr == b->bare_cr && a->lines == b->lines;
}

#endif
