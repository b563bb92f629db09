/*
 * Unit tests for src/content/mime.c, the streaming MIME parser alone:
 * folding and the "name :" normalisation, the end of a header section
 * (empty line or a non-header line), multipart boundaries and nesting,
 * message/rfc822, the limits (nesting, header size, boundary length),
 * strict encoding domains, parameters (quoted strings, RFC 2231, RFC
 * 2047), the body decoders, every split of a message into pieces, and
 * Ryan Finnie's MIME torture test with counts checked by hand.
 */
#include "harness.h"

#include "content/mime.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A recorder: one line of text per callback.
 *   H<class>:<text>           a header (class P, M, N; "\n" inside shown as "|")
 *   E<class>                  end of a header section
 *   B<depth>:<type>/<sub>:<enc>[ b][ c]:<text>   a body line or piece
 *   X<err>                    an error */
typedef struct rec {
    buf_t log;
    int headers, bodies, boundaries, errors, trunc, nested, multipart;
    size_t max_depth;
} rec_t;

static const char cls_ch[] = "PMN";

static void r_header(void *arg, const mime_header_t *h)
{
    rec_t *r = arg;
    buf_printf(&r->log, "H%c:", cls_ch[h->cls]);
    for (size_t i = 0; i < h->len; i++)
        buf_putc(&r->log, h->text[i] == '\n' ? '|' : h->text[i]);
    buf_putc(&r->log, '\n');
    r->headers++;
    r->trunc += h->truncated;
    r->nested += h->cls == MIME_HDR_NESTED;
    r->multipart += h->cls == MIME_HDR_MULTIPART;
}

static void r_end(void *arg, mime_hdr_class cls)
{
    rec_t *r = arg;
    buf_printf(&r->log, "E%c\n", cls_ch[cls]);
}

static void r_body(void *arg, const mime_body_t *b)
{
    rec_t *r = arg;
    buf_printf(&r->log, "B%d:%s/%s:%d%s%s:", b->part->depth, b->part->type, b->part->subtype,
               (int)b->part->enc, b->boundary ? " b" : "", b->cont ? " c" : "");
    buf_append(&r->log, b->text, b->len);
    buf_putc(&r->log, '\n');
    r->bodies++;
    r->boundaries += b->boundary;
    if ((size_t)b->part->depth > r->max_depth)
        r->max_depth = (size_t)b->part->depth;
}

static void r_error(void *arg, int err, const char *text, size_t len)
{
    rec_t *r = arg;
    (void)text;
    (void)len;
    buf_printf(&r->log, "X%d\n", err);
    r->errors++;
}

static const mime_cb_t rec_cb = {r_header, r_end, r_body, r_error};

static mime_opts_t opts_default(void)
{
    mime_opts_t o = {102400, 2048, 100, false, false};
    return o;
}

/* Feed text line by line (pieces of at most piece bytes; 0: whole lines). */
static void feed(mime_t *m, const char *s, size_t piece)
{
    size_t n = strlen(s);
    const char *end = s + n;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t len = nl ? (size_t)(nl - s) : (size_t)(end - s);
        while (piece && len > piece) {
            mime_update(m, s, piece, true);
            s += piece;
            len -= piece;
        }
        mime_update(m, s, len, false);
        s += len + (nl ? 1 : 0);
    }
    mime_finish(m);
}

static char *run(const char *msg, const mime_opts_t *o, rec_t *r)
{
    memset(r, 0, sizeof *r);
    mime_t *m = mime_new(o, &rec_cb, r);
    feed(m, msg, 0);
    mime_free(&m);
    return buf_steal(&r->log);
}

TEST(mime_folding_and_normalisation)
{
    mime_opts_t o = opts_default();
    rec_t r;
    char *s = run("Subject: a\n  b\n\tc\nX-Old :  v\nTo: x\n\nbody\n", &o, &r);
    CHECK_STR(s, "HP:Subject: a|  b|\tc\n"
                 "HP:X-Old:  v\n"
                 "HP:To: x\n"
                 "EP\n"
                 "B0:text/plain:0:\n"
                 "B0:text/plain:0:body\n");
    free(s);
}

TEST(mime_non_header_ends_section)
{
    mime_opts_t o = opts_default();
    rec_t r;
    /* Postfix inserts the missing empty line. */
    char *s = run("Subject: a\nnot a header line\n more\n", &o, &r);
    CHECK_STR(s, "HP:Subject: a\nEP\nB0:text/plain:0:\nB0:text/plain:0:not a header line\n"
                 "B0:text/plain:0: more\n");
    free(s);
    /* A message that starts with the body (an mbox From_ line). */
    s = run("From a@b Thu Oct 23\nSubject: x\n", &o, &r);
    CHECK_STR(s, "EP\nB0:text/plain:0:\nB0:text/plain:0:From a@b Thu Oct 23\n"
                 "B0:text/plain:0:Subject: x\n");
    free(s);
    CHECK_INT(mime_is_header("Subject: x", 10), 7);
    CHECK_INT(mime_is_header("Sub ject: x", 11), 0);
    CHECK_INT(mime_is_header(": x", 3), 0);
    CHECK_INT(mime_is_header(" X: x", 5), 0);
    CHECK_INT(mime_is_header("X\x80: x", 5), 0);
    CHECK_INT(mime_is_header("X  \t: x", 7), 1);
}

TEST(mime_multipart)
{
    mime_opts_t o = opts_default();
    rec_t r;
    char *s = run("Content-Type: multipart/mixed; boundary=\"b1\"\n"
                  "\n"
                  "prolog\n"
                  "--b1\n"
                  "Content-Type: text/html\n"
                  "Content-Transfer-Encoding: BASE64\n"
                  "\n"
                  "PGI+\n"
                  "--b1 trailing cruft\n"
                  "\n"
                  "plain part\n"
                  "--b1--\n"
                  "epilog\n",
                  &o, &r);
    CHECK_STR(s, "HP:Content-Type: multipart/mixed; boundary=\"b1\"\n"
                 "EP\n"
                 "B0:/:0:\n"
                 "B0:/:0:prolog\n"
                 "B1:text/plain:0 b:--b1\n"
                 "HM:Content-Type: text/html\n"
                 "HM:Content-Transfer-Encoding: BASE64\n"
                 "EM\n"
                 "B1:text/html:4:\n"
                 "B1:text/html:4:PGI+\n"
                 "B1:text/plain:0 b:--b1 trailing cruft\n"
                 "EM\n"
                 "B1:text/plain:0:\n"
                 "B1:text/plain:0:plain part\n"
                 "B0:/:0 b:--b1--\n"
                 "B0:/:0:epilog\n");
    free(s);
}

TEST(mime_inner_boundary_closes_inner_levels)
{
    mime_opts_t o = opts_default();
    rec_t r;
    char *s = run("Content-Type: multipart/mixed; boundary=outer\n\n"
                  "--outer\n"
                  "Content-Type: multipart/alternative; boundary=inner\n\n"
                  "--inner\n\ninner part\n"
                  "--outer\n\nsecond outer part\n"
                  "--inner\n"   /* no longer a boundary */
                  "--outer--\n",
                  &o, &r);
    CHECK(strstr(s, "B2:text/plain:0:inner part\n") != NULL);
    CHECK(strstr(s, "B1:text/plain:0:second outer part\n") != NULL);
    CHECK(strstr(s, "B1:text/plain:0:--inner\n") != NULL);
    CHECK(strstr(s, "B0:/:0 b:--outer--\n") != NULL);
    CHECK_INT(r.boundaries, 4);
    free(s);
}

TEST(mime_digest_and_rfc822)
{
    mime_opts_t o = opts_default();
    rec_t r;
    char *s = run("Content-Type: multipart/digest; boundary=d\n\n"
                  "--d\n\n"              /* defaults to message/rfc822 */
                  "Subject: inner\n"
                  "Content-Type: text/plain\n\n"
                  "inner body\n"
                  "--d\n"
                  "Content-Type: message/rfc822\n\n"
                  "From: x\n\nhi\n"
                  "--d--\n",
                  &o, &r);
    CHECK(strstr(s, "HN:Subject: inner\n") != NULL);
    CHECK(strstr(s, "HN:Content-Type: text/plain\n") != NULL);
    CHECK(strstr(s, "B2:text/plain:0:inner body\n") != NULL);
    CHECK(strstr(s, "HM:Content-Type: message/rfc822\n") != NULL);
    CHECK(strstr(s, "HN:From: x\n") != NULL);
    CHECK(strstr(s, "B2:text/plain:0:hi\n") != NULL);
    CHECK_INT(r.nested, 3);
    free(s);
    /* message/global too; message/partial is not looked into */
    s = run("Content-Type: message/global\n\nSubject: g\n\nx\n", &o, &r);
    CHECK(strstr(s, "HN:Subject: g\n") != NULL);
    free(s);
    s = run("Content-Type: message/partial; id=1\n\nSubject: g\n\nx\n", &o, &r);
    CHECK(strstr(s, "HN:") == NULL);
    free(s);
}

TEST(mime_nesting_limit)
{
    mime_opts_t o = opts_default();
    o.nesting_limit = 3;
    rec_t r;
    buf_t msg = BUF_INIT;
    for (int i = 0; i < 6; i++)
        buf_printf(&msg, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
    buf_puts(&msg, "Subject: deep\n\ndeep body\n--b0--\n");
    char *s = run(buf_cstr(&msg), &o, &r);
    CHECK_INT(r.errors, 1);                  /* reported once */
    CHECK(strstr(s, "X1\n") != NULL);
    CHECK_INT(r.max_depth, 3);
    /* levels 4..6 are plain body of the deepest part */
    CHECK(strstr(s, "B3:/:0:--b3\n") != NULL);
    CHECK(strstr(s, "B3:/:0:Subject: deep\n") != NULL);
    CHECK(strstr(s, "B0:/:0 b:--b0--\n") != NULL);
    free(s);
    buf_free(&msg);

    /* message/rfc822 levels count too */
    for (int i = 0; i < 10; i++)
        buf_puts(&msg, "Content-Type: message/rfc822\n\n");
    buf_puts(&msg, "Subject: x\n\nbody\n");
    s = run(buf_cstr(&msg), &o, &r);
    CHECK_INT(r.errors, 1);
    CHECK_INT(r.nested, 3);
    CHECK_INT(r.max_depth, 3);
    free(s);
    buf_free(&msg);
}

TEST(mime_deep_nesting_is_bounded)
{
    /* 1,000 levels with the default limit of 100, and 10,000 parts. */
    mime_opts_t o = opts_default();
    rec_t r;
    buf_t msg = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        buf_printf(&msg, "Content-Type: multipart/mixed; boundary=level%d\n\n--level%d\n", i, i);
    buf_puts(&msg, "\nx\n");
    char *s = run(buf_cstr(&msg), &o, &r);
    CHECK_INT(r.errors, 1);
    CHECK_INT(r.max_depth, 100);
    free(s);
    buf_reset(&msg);
    buf_puts(&msg, "Content-Type: multipart/mixed; boundary=p\n\n");
    for (int i = 0; i < 10000; i++)
        buf_puts(&msg, "--p\nContent-Type: text/plain; name=a.txt\n\nx\n");
    buf_puts(&msg, "--p--\n");
    s = run(buf_cstr(&msg), &o, &r);
    CHECK_INT(r.errors, 0);
    CHECK_INT(r.multipart, 10000);
    CHECK_INT(r.boundaries, 10001);
    free(s);
    buf_free(&msg);
}

TEST(mime_header_size_limit)
{
    mime_opts_t o = opts_default();
    o.header_size_limit = 1024;
    rec_t r;
    memset(&r, 0, sizeof r);
    mime_t *m = mime_new(&o, &rec_cb, &r);
    char piece[500];
    memset(piece, 'a', sizeof piece);
    mime_update(m, "Subject: ", 9, true);
    for (int i = 0; i < 20; i++)
        mime_update(m, piece, sizeof piece, true);
    mime_update(m, "", 0, false);
    mime_update(m, " folded", 7, false);
    mime_update(m, "To: y", 5, false);
    mime_update(m, "", 0, false);
    mime_finish(m);
    CHECK_INT(r.trunc, 1);
    CHECK_INT(r.errors, 1);
    CHECK(mime_errors(m) & MIME_ERR_TRUNC_HEADER);
    /* the second header is intact, and the section ends normally */
    CHECK(strstr(buf_cstr(&r.log), "\nHP:To: y\nEP\n") != NULL);
    const char *h = strstr(buf_cstr(&r.log), "HP:Subject: ");
    REQUIRE(h != NULL);
    const char *e = strchr(h, '\n');
    CHECK_INT(e - h - 3, 1024);
    mime_free(&m);
    buf_free(&r.log);
}

TEST(mime_boundary_length_limit)
{
    /* As Postfix: the stored boundary is cut and compared as a prefix. */
    mime_opts_t o = opts_default();
    o.boundary_length_limit = 4;
    rec_t r;
    char *s = run("Content-Type: multipart/mixed; boundary=abcdefgh\n\n"
                  "--abcdefgh\nContent-Type: text/html\n\nx\n--abcdefgh--\n",
                  &o, &r);
    CHECK_INT(r.multipart, 1);
    CHECK_INT(r.boundaries, 2);
    free(s);
}

TEST(mime_encoding_domain)
{
    mime_opts_t o = opts_default();
    o.report_encoding_domain = true;
    rec_t r;
    char *s = run("Content-Type: multipart/mixed; boundary=b\n"
                  "Content-Transfer-Encoding: base64\n\n--b\n\nx\n--b--\n",
                  &o, &r);
    CHECK_INT(r.errors, 1);
    CHECK(strstr(s, "X4\n") != NULL);
    free(s);
    s = run("Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nSubject: x\n\n", &o, &r);
    CHECK_INT(r.errors, 0);
    free(s);
    s = run("Content-Type: message/partial\nContent-Transfer-Encoding: 8bit\n\nx\n", &o, &r);
    CHECK_INT(r.errors, 1);
    free(s);
    s = run("Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nx\n", &o, &r);
    CHECK_INT(r.errors, 0);
    free(s);
    o.report_encoding_domain = false;
    s = run("Content-Type: multipart/mixed; boundary=b\n"
            "Content-Transfer-Encoding: base64\n\n--b\n\nx\n--b--\n",
            &o, &r);
    CHECK_INT(r.errors, 0);
    free(s);
    CHECK_STR(mime_error_text(MIME_ERR_ENCODING_DOMAIN), "invalid message/* or multipart/* encoding domain");
    CHECK_STR(mime_error_text(MIME_ERR_NESTING | MIME_ERR_TRUNC_HEADER), "MIME nesting exceeds safety limit");
}

TEST(mime_disable)
{
    mime_opts_t o = opts_default();
    o.disable_mime = true;
    rec_t r;
    char *s = run("Content-Type: multipart/mixed; boundary=b\n\n--b\nSubject: x\n\ny\n--b--\n", &o, &r);
    CHECK_INT(r.multipart, 0);
    CHECK_INT(r.boundaries, 0);
    CHECK_INT(r.headers, 1);
    free(s);
}

TEST(mime_pieces_and_boundaries)
{
    /* A boundary at the start of a continued piece is not one. */
    mime_opts_t o = opts_default();
    rec_t r;
    memset(&r, 0, sizeof r);
    mime_t *m = mime_new(&o, &rec_cb, &r);
    feed(m, "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n", 0);
    mime_free(&m);
    buf_free(&r.log);
    memset(&r, 0, sizeof r);
    m = mime_new(&o, &rec_cb, &r);
    mime_update(m, "Content-Type: multipart/mixed; boundary=b", 41, false);
    mime_update(m, "", 0, false);
    mime_update(m, "xxxx", 4, true);
    mime_update(m, "--b", 3, false);
    mime_update(m, "--b", 3, false);
    mime_finish(m);
    CHECK_INT(r.boundaries, 1);
    CHECK(strstr(buf_cstr(&r.log), "B0:/:0 c:xxxx\nB0:/:0:--b\nB1:text/plain:0 b:--b\n") != NULL);
    mime_free(&m);
    buf_free(&r.log);
}

/* The same message cut at every piece size gives the same structure. */
TEST(mime_every_split)
{
    const char *msg = "Subject: hello\n world\nContent-Type: multipart/mixed;\n boundary=\"=_x\"\n\n"
                      "--=_x\nContent-Type: message/rfc822\n\nFrom: a\n\ninner\n--=_x--\n";
    mime_opts_t o = opts_default();
    rec_t r;
    char *ref = run(msg, &o, &r);
    int ref_headers = r.headers, ref_bound = r.boundaries;
    for (size_t piece = 16; piece < 80; piece++) {
        memset(&r, 0, sizeof r);
        mime_t *m = mime_new(&o, &rec_cb, &r);
        feed(m, msg, piece);
        mime_free(&m);
        CHECK_INT(r.headers, ref_headers);
        /* a boundary split into pieces is still found (its first piece) */
        CHECK_INT(r.boundaries, ref_bound);
        buf_free(&r.log);
    }
    free(ref);
}

TEST(mime_params)
{
    buf_t out = BUF_INIT;
    const char *h = "Content-Type: application/octet-stream; name=\"a \\\"q\\\".exe\"";
    CHECK_INT(mime_param(h, strlen(h), "name", &out), 1);
    CHECK_STR(buf_cstr(&out), "a \"q\".exe");
    h = "Content-Disposition: attachment;\n\tfilename=plain.txt ; size=3";
    CHECK_INT(mime_param(h, strlen(h), "filename", &out), 1);
    CHECK_STR(buf_cstr(&out), "plain.txt");
    CHECK_INT(mime_param(h, strlen(h), "name", &out), 0);
    CHECK_INT(mime_param(h, strlen(h), "size", &out), 1);
    CHECK_STR(buf_cstr(&out), "3");
    /* RFC 2231 */
    h = "Content-Disposition: attachment; filename*=UTF-8''vir%75s.%65xe";
    CHECK_INT(mime_param(h, strlen(h), "filename", &out), 2);
    CHECK_STR(buf_cstr(&out), "virus.exe");
    h = "Content-Disposition: attachment; filename*1=\"us.e\"; filename*2*=%78e;\n"
        " filename*0*=us-ascii'en'vir";
    CHECK_INT(mime_param(h, strlen(h), "filename", &out), 2);
    CHECK_STR(buf_cstr(&out), "virus.exe");
    /* RFC 2047, adjacent words joined */
    h = "Content-Type: application/x; name=\"=?UTF-8?B?dmlydXM=?= =?iso-8859-1?Q?=2Eex?=\n"
        " =?utf-8?q?e?=\"";
    CHECK_INT(mime_param(h, strlen(h), "name", &out), 2);
    CHECK_STR(buf_cstr(&out), "virus.exe");
    h = "Content-Type: application/x; name==?bogus";
    CHECK_INT(mime_param(h, strlen(h), "name", &out), 1);
    CHECK_STR(buf_cstr(&out), "=?bogus");
    /* a semicolon inside quotes is not a separator */
    h = "Content-Type: text/plain; a=\"x;name=evil\"; name=good";
    CHECK_INT(mime_param(h, strlen(h), "name", &out), 1);
    CHECK_STR(buf_cstr(&out), "good");
    buf_reset(&out);
    CHECK(mime_decode_words("a =?x?q?b_c?= d", 15, &out));
    CHECK_STR(buf_cstr(&out), "a b c d");
    buf_free(&out);
    char t[32], st[64];
    CHECK(mime_content_type(" Text/HTML ; charset=x", 22, t, st));
    CHECK_STR(t, "text");
    CHECK_STR(st, "html");
    CHECK(!mime_content_type(" ; x", 4, t, st));
}

typedef struct dec_rec {
    buf_t out;
    int lines;
} dec_rec_t;

static void dec_cb(void *arg, const char *text, size_t len, bool cont)
{
    dec_rec_t *d = arg;
    buf_append(&d->out, text, len);
    buf_puts(&d->out, cont ? "+" : "|");
    d->lines++;
}

TEST(mime_decoders)
{
    mime_dec_t d = {0};
    dec_rec_t r = {BUF_INIT, 0};
    /* "hello world\r\nsecond line\r\nlast" in base64, cut mid-quantum */
    mime_dec_init(&d, MIME_ENC_BASE64, 2048);
    const char *b64 = "aGVsbG8gd29ybGQNCnNlY29uZCBsaW5lDQpsYXN0";
    mime_dec_line(&d, b64, 10, false, dec_cb, &r);
    mime_dec_line(&d, b64 + 10, strlen(b64) - 10, false, dec_cb, &r);
    mime_dec_flush(&d, dec_cb, &r);
    CHECK_STR(buf_cstr(&r.out), "hello world|second line|last|");
    buf_reset(&r.out);
    /* quoted-printable: soft breaks, escapes, trailing white space */
    mime_dec_init(&d, MIME_ENC_QP, 2048);
    mime_dec_line(&d, "caf=C3=A9 and a so=", 19, false, dec_cb, &r);
    mime_dec_line(&d, "ft break   ", 11, false, dec_cb, &r);
    mime_dec_line(&d, "bad =ZZ escape=3D", 17, false, dec_cb, &r);
    mime_dec_flush(&d, dec_cb, &r);
    CHECK_STR(buf_cstr(&r.out), "caf\xc3\xa9 and a soft break|bad =ZZ escape=|");
    buf_reset(&r.out);
    /* long decoded lines come out in pieces */
    mime_dec_init(&d, MIME_ENC_QP, 4);
    mime_dec_line(&d, "abcdefghij", 10, false, dec_cb, &r);
    mime_dec_flush(&d, dec_cb, &r);
    CHECK_STR(buf_cstr(&r.out), "abcd+efgh+ij|");
    mime_dec_free(&d);
    buf_free(&r.out);
}

static char *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    buf_t b = BUF_INIT;
    char tmp[4096];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, fp)) > 0)
        buf_append(&b, tmp, k);
    fclose(fp);
    *n = b.len;
    return buf_steal(&b);
}

TEST(mime_torture_test)
{
    size_t n;
    char *msg = slurp("../shared/testdata/mime/rf-mime-torture-test-1.0.eml", &n);
    REQUIRE(msg != NULL);
    mime_opts_t o = opts_default();
    rec_t r;
    /* As stored, the first line is an mbox "From " line: no headers at all. */
    char *s = run(msg, &o, &r);
    CHECK_INT(r.headers, 0);
    CHECK_INT(r.boundaries, 0);
    free(s);
    /* Without it.  The counts agree with Python's email package walking
     * the same file (headers per section, parts + 1 boundaries per
     * multipart, +1 depth per multipart or message level). */
    const char *start = strchr(msg, '\n') + 1;
    s = run(start, &o, &r);
    CHECK_INT(r.errors, 0);
    CHECK_INT(r.headers - r.nested - r.multipart, 7);  /* primary headers */
    CHECK_INT(r.boundaries, 51);
    CHECK_INT(r.nested, 82);
    CHECK_INT(r.multipart, 91);
    CHECK_INT(r.max_depth, 6);
    CHECK(strstr(s, "HN:Subject: plain jane message\n") != NULL);
    free(s);
    free(msg);
}

/* A boundary line longer than a piece does not hide the part's headers. */
TEST(mime_long_boundary_line)
{
    mime_opts_t o = opts_default();
    rec_t r;
    buf_t msg = BUF_INIT;
    buf_puts(&msg, "Content-Type: multipart/mixed; boundary=b\n\n--b");
    for (int i = 0; i < 3000; i++)
        buf_putc(&msg, i % 50 ? 'x' : ':');
    buf_puts(&msg, "\nContent-Type: application/x; name=a.exe\n\nbody\n--b--\n");
    memset(&r, 0, sizeof r);
    mime_t *m = mime_new(&o, &rec_cb, &r);
    feed(m, buf_cstr(&msg), 1000);
    mime_free(&m);
    CHECK_INT(r.multipart, 1);
    CHECK(strstr(buf_cstr(&r.log), "HM:Content-Type: application/x; name=a.exe\n") != NULL);
    CHECK_INT(r.boundaries, 5);  /* the boundary line's 4 pieces and the closing one */
    buf_free(&r.log);
    buf_free(&msg);
}
