/*
 * fuzz_bounce: bounce_build() on arbitrary original content and arbitrary
 * reasons.  The content is whatever a client sent, and the reasons are
 * whatever a remote server answered, so neither may crash the builder,
 * stretch a line past 998 bytes, put a non-ASCII byte into the
 * explanation or the delivery-status part, or break the MIME structure.
 *
 * Input: byte 0 picks the kind; bytes 1-2 are bounce_size_limit (0-65535);
 * then the recipient address, the reason text and the server reply, each
 * ended by a NUL; the rest (NULs and all) is the original content.
 */
#include "core/buf.h"
#include "core/util.h"
#include "queue/bounce.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The next NUL-ended field (empty when the input ran out). */
static char *field(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nul = memchr(*p, 0, (size_t)(end - *p));
    size_t n = nul ? (size_t)(nul - *p) : (size_t)(end - *p);
    char *s = xstrndup((const char *)*p, n);
    *p += n + (nul ? 1 : 0);
    return s;
}

static size_t count(const char *hay, size_t len, const char *needle)
{
    size_t n = 0, nl = strlen(needle);
    const char *p = hay, *end = hay + len;
    while ((p = memmem(p, (size_t)(end - p), needle, nl)) != NULL) {
        n++;
        p += nl;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const uint8_t *p = data + 3, *end = data + size;
    bounce_kind_t kind = (bounce_kind_t)(data[0] % 3);
    size_t limit = (size_t)data[1] << 8 | data[2];
    char *addr = field(&p, end), *text = field(&p, end), *reply = field(&p, end);
    const char *content = (const char *)p;
    size_t clen = (size_t)(end - p);

    bounce_info_t info = {
        .kind = kind,
        .myhostname = "mx.example.net",
        .queue_id = "00F0418A2B3C4D",
        .sender = (data[0] & 4) ? addr : "alice@example.org",
        .notify = "alice@example.org",
        .client_name = "client.example.org",
        .client_addr = "192.0.2.7",
        .arrival_usec = 1700000000000000LL,
        .now_usec = 1700000120123456LL,
        .retry_until_usec = kind == BOUNCE_DELAYED ? 1700432000000000LL : 0,
        .size_limit = limit,
    };
    bounce_rcpt_t r[2] = {
        {.addr = addr, .orig = (data[0] & 8) ? text : NULL, .dsn = reply, .text = text,
         .reply = (data[0] & 16) ? reply : NULL, .remote_mta = (data[0] & 32) ? text : NULL,
         .last_attempt_usec = 1700000060000000LL},
        {.addr = "bob@example.com", .dsn = "5.1.1", .text = reply, .reply = NULL},
    };
    buf_t out = BUF_INIT;
    bounce_build(&info, r, (data[0] & 64) ? 2 : 1, content, clen, &out);

    /* No line over 998 bytes, LF line ends. */
    size_t cur = 0;
    for (size_t i = 0; i < out.len; i++) {
        if (out.data[i] == '\n')
            cur = 0;
        else if (++cur > 998)
            abort();
    }

    /* The boundary: once in the header, then in exactly four delimiters. */
    const char *b = strstr(out.data, "boundary=\"");
    if (!b)
        abort();
    b += 10;
    const char *q = strchr(b, '"');
    if (!q || q - b < 1 || q - b > 70)
        abort();
    char *bd = xstrndup(b, (size_t)(q - b));
    if (count(out.data, out.len, bd) != 5)
        abort();
    buf_t delim = BUF_INIT;
    buf_printf(&delim, "\n--%s", bd);
    const char *d[4];
    const char *s = out.data, *oend = out.data + out.len;
    for (int k = 0; k < 4; k++) {
        d[k] = memmem(s, (size_t)(oend - s), delim.data, delim.len);
        if (!d[k])
            abort();
        s = d[k] + delim.len;
    }
    if (strcmp(d[3] + delim.len, "--\n") != 0)
        abort();

    /* Parts 1 and 2 are printable ASCII. */
    for (const char *c = d[0]; c < d[2]; c++)
        if (*c != '\n' && *c != '\t' && ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f))
            abort();

    /* Part 3: the header only when the message is too big (or a warning):
     * no empty line inside, and no more than the limit plus what folding
     * inserted. */
    bool headers_only = kind == BOUNCE_DELAYED || clen > limit;
    const char *ph = d[2] + delim.len + 1;
    const char *body = memmem(ph, (size_t)(d[3] - ph), "\n\n", 2);
    if (!body)
        abort();
    body += 2;
    size_t blen = (size_t)(d[3] - body);
    bool is_headers = strncmp(ph, "Content-Description: Undelivered Message Headers\n", 49) == 0;
    if (is_headers != headers_only)
        abort();
    if (headers_only) {
        if (blen > limit + 2 * (limit / 997 + 1))
            abort();
        if ((blen && body[0] == '\n') || memmem(body, blen, "\n\n", 2))
            abort();
    } else if (blen < clen) {
        abort();   /* the whole message only grows (line splits) */
    }

    buf_free(&delim);
    free(bd);
    buf_free(&out);
    free(addr);
    free(text);
    free(reply);
    return 0;
}
