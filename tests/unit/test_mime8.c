/*
 * Unit tests for src/queue/mime8.c, the 8-bit to 7-bit downgrade: plain
 * messages, multipart with 8-bit and 7-bit parts, message/rfc822
 * nesting, a missing closing boundary, the nesting limit, parts that
 * claim quoted-printable or base64 but hold 8-bit bytes, labels only,
 * and quoted-printable edge cases (trailing white space, '=', long
 * lines), each checked by decoding the output again here.
 */
#include "harness.h"

#include "core/util.h"
#include "queue/mime8.h"

#include <stdlib.h>
#include <string.h>

/* Quoted-printable decoding, strict enough to catch encoder mistakes:
 * only "=XX" (upper-case hex) and "=" before LF are allowed escapes. */
static bool qp_dec(const char *s, size_t n, buf_t *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=') {
            buf_putc(out, s[i]);
            continue;
        }
        if (i + 1 < n && s[i + 1] == '\n') {
            i++;
            continue;
        }
        const char *a = i + 2 < n ? strchr(hex, s[i + 1]) : NULL, *b = a ? strchr(hex, s[i + 2]) : NULL;
        if (!a || !b || !s[i + 1] || !s[i + 2])
            return false;
        buf_putc(out, (char)((a - hex) * 16 + (b - hex)));
        i += 2;
    }
    return true;
}

/* Every line at most max bytes, no byte >= 0x80, no trailing white space. */
static bool qp_shape_ok(const char *s, size_t n, size_t max)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80)
            return false;
        if (c == '\n') {
            if (i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
                return false;
            col = 0;
            continue;
        }
        if (++col > max)
            return false;
    }
    return n == 0 || (s[n - 1] != ' ' && s[n - 1] != '\t');
}

static char *downgrade(const char *in, unsigned limit, int *rc)
{
    buf_t out = BUF_INIT;
    *rc = mime8_downgrade(in, strlen(in), limit, &out);
    if (!out.data)
        buf_puts(&out, "");
    return buf_steal(&out);
}

TEST(mime8_has_8bit)
{
    CHECK(!mime8_has_8bit("plain ascii\n", 12));
    CHECK(mime8_has_8bit("caf\xc3\xa9", 5));
    CHECK(mime8_has_8bit("\x80", 1));
    CHECK(!mime8_has_8bit("", 0));
}

TEST(mime8_seven_bit_unchanged)
{
    const char *in = "Subject: x\nContent-Transfer-Encoding: 8bit\n\nonly ascii\n";
    int rc;
    char *out = downgrade(in, 100, &rc);
    CHECK_INT(rc, 0);
    CHECK_STR(out, in);
    free(out);
}

TEST(mime8_single_part)
{
    int rc;
    char *out = downgrade("From: a@b\nSubject: hi\n\nCaf\xc3\xa9 = 1\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "From: a@b\nSubject: hi\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n"
                   "Caf=C3=A9 =3D 1\n");
    free(out);
    /* A declared 8bit encoding is replaced where it stands, folded or not. */
    out = downgrade("MIME-Version: 1.0\nContent-Transfer-Encoding:\n 8bit\nX-After: yes\n\n\xff\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\nX-After: yes\n\n=FF\n");
    free(out);
    /* 8-bit bytes in a header stay; a 7-bit body labelled 8bit is relabelled. */
    out = downgrade("Subject: \xc3\xa9\nContent-Transfer-Encoding: 8bit\n\nascii\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Subject: \xc3\xa9\nContent-Transfer-Encoding: 7bit\n\nascii\n");
    free(out);
    /* No header at all. */
    out = downgrade("\xe9t\xe9\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=E9t=E9\n");
    free(out);
}

TEST(mime8_multipart)
{
    const char *in = "MIME-Version: 1.0\n"
                     "Content-Type: multipart/mixed; boundary=\"b1\"\n"
                     "Content-Transfer-Encoding: 8bit\n"
                     "\n"
                     "preamble\n"
                     "--b1\n"
                     "Content-Type: text/plain; charset=utf-8\n"
                     "Content-Transfer-Encoding: 8bit\n"
                     "\n"
                     "gr\xc3\xbc\xc3\x9f dich\n"
                     "--b1\n"
                     "Content-Type: text/plain\n"
                     "\n"
                     "seven bit = fine\n"
                     "--b1--\n"
                     "epilogue\n";
    int rc;
    char *out = downgrade(in, 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "MIME-Version: 1.0\n"
                   "Content-Type: multipart/mixed; boundary=\"b1\"\n"
                   "Content-Transfer-Encoding: 7bit\n"
                   "\n"
                   "preamble\n"
                   "--b1\n"
                   "Content-Type: text/plain; charset=utf-8\n"
                   "Content-Transfer-Encoding: quoted-printable\n"
                   "\n"
                   "gr=C3=BC=C3=9F dich\n"
                   "--b1\n"
                   "Content-Type: text/plain\n"
                   "\n"
                   "seven bit = fine\n"
                   "--b1--\n"
                   "epilogue\n");
    free(out);
}

TEST(mime8_rfc822_nesting)
{
    const char *in = "Content-Type: multipart/mixed; boundary=outer\n"
                     "\n"
                     "--outer\n"
                     "Content-Type: message/rfc822\n"
                     "Content-Transfer-Encoding: 8bit\n"
                     "\n"
                     "Subject: inner\n"
                     "Content-Type: multipart/alternative; boundary=\"in ner\"\n"
                     "\n"
                     "--in ner\n"
                     "\n"
                     "\xc3\xa0 bient\xc3\xb4t\n"
                     "--in ner--\n"
                     "--outer--\n";
    int rc;
    char *out = downgrade(in, 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Type: multipart/mixed; boundary=outer\n"
                   "\n"
                   "--outer\n"
                   "Content-Type: message/rfc822\n"
                   "Content-Transfer-Encoding: 7bit\n"
                   "\n"
                   "Subject: inner\n"
                   "Content-Type: multipart/alternative; boundary=\"in ner\"\n"
                   "\n"
                   "--in ner\n"
                   "Content-Transfer-Encoding: quoted-printable\n"
                   "\n"
                   "=C3=A0 bient=C3=B4t\n"
                   "--in ner--\n"
                   "--outer--\n");
    free(out);
    /* Nesting limit 1: the inner multipart is one leaf, encoded whole. */
    const char *two = "Content-Type: multipart/mixed; boundary=a\n\n--a\n"
                      "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n\xff\n--b--\n--a--\n";
    out = downgrade(two, 1, &rc);
    CHECK_INT(rc, 1);
    CHECK(strstr(out, "Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: quoted-printable\n\n"
                      "--b\n\n=FF\n--b--\n--a--\n") != NULL);
    free(out);
}

TEST(mime8_missing_boundary)
{
    /* No closing boundary: the last part runs to the end. */
    int rc;
    char *out = downgrade("Content-Type: multipart/mixed; boundary=zz\n\n--zz\n\n\xc3\xa9t\xc3\xa9\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Type: multipart/mixed; boundary=zz\n\n--zz\n"
                   "Content-Transfer-Encoding: quoted-printable\n\n=C3=A9t=C3=A9\n");
    free(out);
    /* A boundary that never occurs: the body is one leaf. */
    out = downgrade("Content-Type: multipart/mixed; boundary=nope\n\n\xff\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Type: multipart/mixed; boundary=nope\n"
                   "MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n=FF\n");
    free(out);
    /* 8-bit preamble and epilogue are escaped too. */
    out = downgrade("Content-Type: multipart/mixed; boundary=q\n\n\xff pre\n--q\n\nok\n--q--\n\xfe post\n", 100,
                    &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Type: multipart/mixed; boundary=q\n\n=FF pre\n--q\n\nok\n--q--\n=FE post\n");
    free(out);
}

TEST(mime8_declared_qp_and_base64)
{
    int rc;
    /* Claims quoted-printable, holds a raw 8-bit byte: decoded, encoded cleanly. */
    char *out = downgrade("Content-Transfer-Encoding: quoted-printable\n\na=3Db \xe9=\nc\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Transfer-Encoding: quoted-printable\n\na=3Db =E9c\n");
    free(out);
    /* Claims base64 with stray 8-bit bytes: readers skip them, so do we. */
    out = downgrade("Content-Transfer-Encoding: base64\n\naGVs\xff" "bG8=\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Transfer-Encoding: base64\n\naGVsbG8=\n");
    free(out);
    /* An encoding nobody knows: quoted-printable like 8bit. */
    out = downgrade("Content-Transfer-Encoding: x-weird\n\n\xff\n", 100, &rc);
    CHECK_INT(rc, 1);
    CHECK_STR(out, "Content-Transfer-Encoding: quoted-printable\n\n=FF\n");
    free(out);
}

TEST(mime8_qp_edges)
{
    buf_t body = BUF_INIT;
    /* Trailing white space, '=', a tab, a CR, a very long line, an empty line. */
    buf_puts(&body, "trailing spaces  \n");
    buf_puts(&body, "tab at end\t\n");
    buf_puts(&body, "x = y\n");
    buf_puts(&body, "cr\rin line\n");
    buf_puts(&body, "\n");
    for (int i = 0; i < 60; i++)
        buf_puts(&body, "\xc3\xa9 ");
    buf_puts(&body, "end\n");
    for (int i = 0; i < 300; i++)
        buf_putc(&body, (char)('a' + i % 26));
    buf_puts(&body, "\n=\n ");   /* an '=' line; the last line is one space, no LF */
    buf_t in = BUF_INIT;
    buf_puts(&in, "Content-Transfer-Encoding: 8bit\n\n");
    buf_append(&in, body.data, body.len);
    buf_t out = BUF_INIT;
    CHECK_INT(mime8_downgrade(in.data, in.len, 100, &out), 1);
    const char *sep = strstr(buf_cstr(&out), "\n\n");
    REQUIRE(sep != NULL);
    CHECK(strncmp(buf_cstr(&out), "Content-Transfer-Encoding: quoted-printable\n\n", 45) == 0);
    const char *enc = sep + 2;
    size_t en = out.len - (size_t)(enc - out.data);
    CHECK(qp_shape_ok(enc, en, 76));
    CHECK(strstr(enc, "trailing spaces =20\n") != NULL);
    CHECK(strstr(enc, "tab at end=09\n") != NULL);
    CHECK(strstr(enc, "x =3D y\n") != NULL);
    CHECK(strstr(enc, "cr=0Din line\n") != NULL);
    CHECK(en > 8 && strcmp(enc + en - 8, "\n=3D\n=20") == 0);
    buf_t dec = BUF_INIT;
    CHECK(qp_dec(enc, en, &dec));
    CHECK_INT(dec.len, body.len);
    CHECK(dec.len == body.len && memcmp(dec.data, body.data, body.len) == 0);
    buf_free(&dec);
    buf_free(&out);
    buf_free(&in);
    buf_free(&body);
}

TEST(mime8_qp_line_lengths_exhaustive)
{
    /* Lines of every length from 1 to 200 of mixed bytes decode back and
     * never exceed 76 characters, wherever the escapes fall. */
    for (size_t len = 1; len <= 200; len++) {
        for (int mix = 0; mix < 3; mix++) {
            buf_t body = BUF_INIT;
            for (size_t i = 0; i < len; i++) {
                unsigned char c = mix == 0 ? 0xe9 : mix == 1 ? (i % 3 ? 'a' : 0xff) : (i % 7 == 6 ? ' ' : '=');
                buf_putc(&body, (char)c);
            }
            buf_puts(&body, "\n\xff\n");
            buf_t in = BUF_INIT, out = BUF_INIT, dec = BUF_INIT;
            buf_puts(&in, "X: y\n\n");
            buf_append(&in, body.data, body.len);
            mime8_downgrade(in.data, in.len, 100, &out);
            const char *enc = strstr(buf_cstr(&out), "\n\n") + 2;
            size_t en = out.len - (size_t)(enc - out.data);
            if (!qp_shape_ok(enc, en, 76) || !qp_dec(enc, en, &dec) || dec.len != body.len ||
                memcmp(dec.data, body.data, body.len) != 0)
                harness_fail(__FILE__, __LINE__, "len %zu mix %d", len, mix);
            buf_free(&body);
            buf_free(&in);
            buf_free(&out);
            buf_free(&dec);
        }
    }
}
