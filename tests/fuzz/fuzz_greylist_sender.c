/*
 * fuzz_greylist_sender: greylist_sender_norm (postgrey's sender
 * substitutions: BATV, SRS, extensions, VERP numbers) on arbitrary bytes
 * (cut at the first NUL) must never crash or leak, never grow its input,
 * never produce an upper-case ASCII letter, and keep the null sender
 * null.  The key built from the result must split back into the same
 * parts when the sender has an '@' and no '/' (what the CLI lists).
 */
#include "core/buf.h"
#include "core/util.h"
#include "policy/greylist.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = xstrndup((const char *)data, size);
    size_t n = strlen(s);
    buf_t out = BUF_INIT;
    greylist_sender_norm(s, &out);
    if (out.len > n || strlen(buf_cstr(&out)) != out.len)
        abort();
    if (n == 0 && out.len)
        abort();
    for (size_t i = 0; i < out.len; i++)
        if (out.data[i] >= 'A' && out.data[i] <= 'Z')
            abort();
    if (out.len && strchr(out.data, '@') && !strchr(out.data, '/')) {
        buf_t key = BUF_INIT, id = BUF_INIT, snd = BUF_INIT, rcpt = BUF_INIT;
        greylist_key("192.0.2.0", out.data, "user@example.test", &key);
        if (key.len > 480)
            abort();
        if (!greylist_key_split(buf_cstr(&key), &id, &snd, &rcpt))
            abort();
        if (strcmp(buf_cstr(&id), "192.0.2.0") || strcmp(buf_cstr(&rcpt), "user@example.test"))
            abort();
        if (snd.data[0] != '#' && strcmp(buf_cstr(&snd), out.data))
            abort();
        buf_free(&key);
        buf_free(&id);
        buf_free(&snd);
        buf_free(&rcpt);
    }
    buf_free(&out);
    free(s);
    return 0;
}
