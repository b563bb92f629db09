/*
 * fuzz_sasl: the AUTH backends' parsers on arbitrary bytes — base64 (a
 * client's responses), the PLAIN layout, and the Dovecot reply lines and
 * tab-escaping (what a Dovecot, or anything listening on its socket,
 * could send).  Invariants: base64 decoding is strict, so whatever it
 * accepts encodes back to the same text, and encoding then decoding
 * gives the bytes back; a PLAIN split points inside the input; every
 * Dovecot line either parses or names why not, and mechanism names,
 * users and reasons come out unescaped without running past the input;
 * escaped text holds no TAB, LF, CR or NUL and unescapes to the original.
 */
#include "core/buf.h"
#include "sasl/sasl-private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_b64(const char *s, size_t size)
{
    buf_t dec = BUF_INIT, enc = BUF_INIT;
    if (strlen(s) == size && sasl_b64_decode(s, &dec)) {
        sasl_b64_encode(dec.data, dec.len, &enc);
        if (strcmp(s, "=") == 0 ? enc.len != 0 : strcmp(buf_cstr(&enc), s) != 0)
            abort();
    }
    buf_reset(&enc);
    sasl_b64_encode(s, size, &enc);
    if (enc.len != (size + 2) / 3 * 4 || !sasl_b64_decode(buf_cstr(&enc), &dec))
        abort();
    if (dec.len != size || (size && memcmp(dec.data, s, size) != 0))
        abort();
    buf_free(&dec);
    buf_free(&enc);
}

static void check_plain(const char *s, size_t size)
{
    const char *user = NULL, *pw = NULL;
    int rc = sasl_plain_parse(s, size, &user, &pw);
    if (rc < -2 || rc > 0)
        abort();
    if (rc == 0 || rc == -2) {
        if (user <= s || user > s + size || pw <= user || pw > s + size || !*user)
            abort();
        if (user + strlen(user) + 1 != pw || pw + strlen(pw) != s + size)
            abort();
    }
    if (sasl_plain_split(s, size, &user, &pw) != (rc == 0))
        abort();
}

static void check_dovecot(const char *s, size_t size)
{
    dv_line_t l = {0};
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && s[i] != '\n')
            continue;
        const char *why = NULL;
        int rc = sasl_dovecot_parse(s + start, i - start, &l, &why);
        if (rc != 0 && (rc != -1 || !why || !*why))
            abort();
        if (rc == 0) {
            if (l.name.len > i - start || l.user.len > i - start || l.reason.len > i - start || l.data.len > i - start)
                abort();
            if (l.kind == DV_MECH && l.name.len == 0)
                abort();
            (void)sasl_mech_name_ok(buf_cstr(&l.name));
        }
        start = i + 1;
    }
    sasl_dovecot_line_free(&l);

    buf_t esc = BUF_INIT, back = BUF_INIT;
    sasl_dovecot_escape(&esc, s, size);
    if (memchr(esc.data ? esc.data : "", '\t', esc.len) || memchr(esc.data ? esc.data : "", '\n', esc.len) ||
        memchr(esc.data ? esc.data : "", '\r', esc.len) || memchr(esc.data ? esc.data : "", 0, esc.len))
        abort();
    sasl_dovecot_unescape(&back, esc.data ? esc.data : "", esc.len);
    if (back.len != size || (size && memcmp(back.data, s, size) != 0))
        abort();
    buf_free(&esc);
    buf_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    check_b64(s, size);
    check_plain(s, size);
    check_dovecot(s, size);
    free(s);
    return 0;
}
