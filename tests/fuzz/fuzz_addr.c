/*
 * fuzz_addr: addr_parse_path on arbitrary bytes must never crash or leak,
 * and every accepted path must round-trip: "<full>" parses again to the
 * same full, local and domain.  Byte 0 picks the flags and the
 * sender/recipient role; the rest (cut at the first NUL) is the path.
 */
#include "core/util.h"
#include "smtp/addr.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0] & (ADDR_ALLOW_NULL | ADDR_UTF8);
    bool sender = (data[0] & 4) != 0;
    char *s = xstrndup((const char *)data + 1, size - 1);
    size_t slen = strlen(s);

    addr_t a;
    const char *rest = NULL, *why = NULL;
    (void)addr_valid_domain(s, (flags & ADDR_UTF8) != 0);
    if (addr_parse_path(s, flags, sender, &a, &rest, &why) != 0) {
        if (!why || a.full || a.local || a.domain)
            abort();
        if (strncmp(why, "5.1.7 ", 6) && strncmp(why, "5.1.3 ", 6) && strncmp(why, "5.6.7 ", 6))
            abort();
        free(s);
        return 0;
    }
    if (rest < s || rest > s + slen)
        abort();
    if (*rest && *rest != ' ' && *rest != '\t')
        abort();
    if (strlen(a.full) > 512 || strlen(a.local) > 256 || strlen(a.domain) > 255)
        abort();
    if (a.is_null != (a.full[0] == 0))
        abort();
    if (a.domain[0] && !addr_valid_domain(a.domain, (flags & ADDR_UTF8) != 0))
        abort();
    for (const char *p = a.full; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f || (c >= 0x80 && !(flags & ADDR_UTF8)))
            abort();
    }
    /* The domain is lower-cased, the literal tag "IPv6:" aside. */
    const char *d = a.domain;
    if (strncmp(d, "[IPv6:", 6) == 0)
        d += 6;
    for (; *d; d++)
        if (*d >= 'A' && *d <= 'Z')
            abort();

    size_t n = strlen(a.full) + 3;
    char *again = xmalloc(n);
    snprintf(again, n, "<%s>", a.full);
    addr_t b;
    if (addr_parse_path(again, flags | ADDR_ALLOW_NULL, sender, &b, &rest, &why) != 0)
        abort();
    if (strcmp(a.full, b.full) || strcmp(a.local, b.local) || strcmp(a.domain, b.domain) ||
        a.is_utf8 != b.is_utf8 || *rest)
        abort();
    addr_free(&b);
    free(again);
    addr_free(&a);
    free(s);
    return 0;
}
