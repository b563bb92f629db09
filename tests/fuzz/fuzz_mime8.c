/*
 * fuzz_mime8: the 8-bit downgrade on arbitrary messages must never
 * crash and must keep its promises: a message without 8-bit bytes comes
 * out unchanged (and "nothing converted"); otherwise every output line
 * that holds an 8-bit byte, or is longer than 998 bytes, is one the
 * input already had (header fields are never rewritten, everything else
 * is encoded), and "nothing converted" means a byte-for-byte copy.
 */
#include "core/buf.h"
#include "queue/mime8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024)
        return 0;
    const char *in = (const char *)data;
    unsigned limit = size ? 1 + data[size - 1] % 8 : 100;
    buf_t out = BUF_INIT;
    int rc = mime8_downgrade(in, size, limit, &out);
    if (rc != 0 && rc != 1)
        abort();
    if (rc == 0 && (out.len != size || (size && memcmp(out.data, in, size) != 0)))
        abort();
    if (!mime8_has_8bit(in, size) && rc != 0)
        abort();
    const char *p = buf_cstr(&out), *end = p + out.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if ((n > 998 || mime8_has_8bit(p, n)) && !memmem(in, size, p, n))
            abort();
        p += n + 1;
    }
    buf_free(&out);
    return 0;
}
