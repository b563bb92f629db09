/*
 * fuzz_anvil_block: the block value parser (values come from a shared
 * store anyone with Redis access can write) and the block identity of a
 * client address must never crash; an accepted value must round-trip
 * through anvil_block_value when it carried all three fields.
 */
#include "core/buf.h"
#include "core/util.h"
#include "policy/anvil.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xstrndup((const char *)data, size);
    char reason[32];
    long long since, count;
    if (anvil_block_parse(s, reason, sizeof reason, &since, &count)) {
        if (!reason[0] || strchr(reason, ' '))
            abort();
        (void)anvil_reason_text(reason);
        if (since && count) {
            buf_t v = BUF_INIT;
            anvil_block_value(&v, reason, since, count);
            char r2[32];
            long long s2, c2;
            if (!anvil_block_parse(buf_cstr(&v), r2, sizeof r2, &s2, &c2) || strcmp(r2, reason) || s2 != since
                || c2 != count)
                abort();
            buf_free(&v);
        }
    }
    char id[96];
    if (anvil_block_id(s, id, sizeof id) && !id[0])
        abort();
    free(s);
    return 0;
}
