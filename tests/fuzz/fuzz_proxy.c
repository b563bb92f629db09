/*
 * fuzz_proxy: proxy_parse on arbitrary bytes must stay in bounds, and its
 * verdicts must be consistent across prefixes, the way a session sees
 * them arrive: once a prefix is complete (n) or malformed (-1), every
 * longer input says the same; before a complete header every prefix
 * says "need more".
 */
#include "smtp/proxy.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    proxy_info_t pi;
    const char *why = NULL;
    if (size > PROXY_V2_MAX + 64)
        size = PROXY_V2_MAX + 64;
    long full = proxy_parse(data, size, &pi, &why);
    if (full < -1 || full > (long)size)
        abort();
    if (full == -1 && (!why || !*why))
        abort();
    if (full > 0) {
        if (full > PROXY_V2_MAX)
            abort();
        if (!pi.local) {
            int fam = pi.src.ss_family;
            if ((fam != AF_INET && fam != AF_INET6) || pi.dst.ss_family != fam)
                abort();
            socklen_t want = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
            if (pi.srclen != want || pi.dstlen != want)
                abort();
        }
    }
    /* Every prefix, in a few steps so a large input stays cheap. */
    size_t step = size > 512 ? 7 : 1;
    for (size_t k = 0; k <= size; k += step) {
        proxy_info_t p2;
        long r = proxy_parse(data, k, &p2, &why);
        if (full > 0 && (size_t)full > k && r != 0)
            abort();
        if (full > 0 && (size_t)full <= k && r != full)
            abort();
        if (r == -1 && full != -1)
            abort();
        if (r > 0 && r != full)
            abort();
    }
    return 0;
}
