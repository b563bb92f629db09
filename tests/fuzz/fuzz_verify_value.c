/*
 * fuzz_verify_value: the cached probe result parser (values come from a
 * shared store anyone with Redis access can write) must never crash; a
 * value it accepts must survive an encode/decode round trip unchanged.
 */
#include "core/buf.h"
#include "core/util.h"
#include "queue/verify.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xstrndup((const char *)data, size);
    verify_status_t st;
    long long updated;
    char dsn[16];
    const char *text = NULL;
    if (verify_decode(s, &st, &updated, dsn, &text) == 0) {
        buf_t v = BUF_INIT;
        verify_encode(&v, st, updated, dsn, text ? text : "");
        verify_status_t st2;
        long long up2;
        char dsn2[16];
        const char *text2 = NULL;
        if (verify_decode(buf_cstr(&v), &st2, &up2, dsn2, &text2) != 0 || st2 != st || up2 != updated ||
            strcmp(dsn2, dsn) != 0)
            abort();
        buf_free(&v);
    }
    free(s);
    return 0;
}
