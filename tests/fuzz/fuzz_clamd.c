/*
 * fuzz_clamd: the clamd client's reply parser (clamd_parse_reply) on
 * arbitrary bytes, as a broken or hostile clamd could send them.  The
 * detail must be printable ASCII of bounded length (it goes into SMTP
 * replies, headers and log lines); a CLEAN verdict only for the exact
 * "stream: OK"; an INFECTED one only for "stream: NAME FOUND" with a
 * non-empty name; the verdict must not change when a NUL or a newline is
 * appended (clamd ends a reply with either).
 */
#include "content/clamd.h"
#include "core/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t trimmed(const char *s, size_t n)
{
    while (n && (s[n - 1] == 0 || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    buf_t d = BUF_INIT, d2 = BUF_INIT;
    scan_status st = clamd_parse_reply(in, size, &d);
    if (st != SCAN_CLEAN && st != SCAN_INFECTED && st != SCAN_FAILED)
        abort();
    if (d.len > 240 || strlen(buf_cstr(&d)) != d.len)
        abort();
    for (size_t i = 0; i < d.len; i++)
        if ((unsigned char)d.data[i] < 0x20 || (unsigned char)d.data[i] > 0x7e)
            abort();
    size_t n = trimmed(in, size);
    if (st == SCAN_CLEAN && (n != 10 || memcmp(in, "stream: OK", 10) != 0 || d.len))
        abort();
    if (st == SCAN_INFECTED && (n < 15 || memcmp(in, "stream: ", 8) != 0 || memcmp(in + n - 6, " FOUND", 6) != 0 ||
                                d.len == 0))
        abort();
    if (st == SCAN_FAILED && d.len == 0)
        abort();
    /* the terminator does not matter */
    char *more = malloc(size + 1);
    memcpy(more, in, size);
    more[size] = (size & 1) ? '\n' : 0;
    if (clamd_parse_reply(more, size + 1, &d2) != st || d2.len != d.len || memcmp(d2.data, d.data, d.len) != 0)
        abort();
    free(more);
    buf_free(&d);
    buf_free(&d2);
    return 0;
}
