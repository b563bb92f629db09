/*
 * fuzz_tls_policy: the TLS configuration parsers must never crash or
 * read out of bounds on any table value or parameter: smtp_tls_policy_maps
 * values (tls_policy_parse), protocol lists (tls_protocol_range), the
 * policy lookup keys of a next hop (tls_policy_keys) and certificate name
 * matching (tls_client_name_matches).  The first byte picks the parser.
 */
#include "core/buf.h"
#include "core/util.h"
#include "tls/tls.h"
#include "tls/tls_client.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *s = xstrndup((const char *)data + 1, size - 1);
    buf_t why = BUF_INIT, notes = BUF_INIT, keys = BUF_INIT;
    switch (data[0] % 4) {
    case 0: {
        tls_policy_t pol;
        if (tls_policy_parse(s, &pol, &why, &notes) == 0 && pol.level > TLS_LEV_SECURE)
            abort();   /* a parsed policy always has a known level */
        break;
    }
    case 1: {
        /* a protocol list: items split at commas and white space */
        const char *items[32];
        size_t n = 0;
        for (char *tok = strtok(s, ", \t"); tok && n < 32; tok = strtok(NULL, ", \t"))
            items[n++] = tok;
        int min = 0, max = 0;
        tls_protocol_range(items, n, &min, &max, &why);
        break;
    }
    case 2:
        tls_policy_keys(s, data[0] & 4, &keys);
        break;
    case 3: {
        /* "certname\nnexthop\nhostname" against a secure policy */
        char *nexthop = strchr(s, '\n');
        char *host = nexthop ? strchr(nexthop + 1, '\n') : NULL;
        if (nexthop)
            *nexthop++ = 0;
        if (host)
            *host++ = 0;
        tls_policy_t pol;
        if (tls_policy_parse("secure match=nexthop:dot-nexthop:hostname:.example.com", &pol, &why, NULL) == 0)
            tls_client_name_matches(s, &pol, nexthop ? nexthop : "example.com", host ? host : "mx.example.com");
        break;
    }
    }
    buf_free(&why);
    buf_free(&notes);
    buf_free(&keys);
    free(s);
    return 0;
}
