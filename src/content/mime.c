/*
 * mime: the streaming MIME structure parser (see mime.h), the parameter
 * parser for Content-Type / Content-Disposition values, and the body
 * decoders for body_checks_decode.
 *
 * Behaviour follows Postfix's mime_state (learned from its documentation
 * and code, written anew): a header ends at the next line that is not a
 * continuation; a section ends at an empty line or at the first line that
 * is not a header (Postfix then emits an empty line of its own, and so do
 * we); a boundary line closes every inner level; the stored boundary is
 * cut at mime_boundary_length_limit and compared as a prefix; a message
 * or multipart part may only name an encoding domain.  We also count
 * message/rfc822 levels against mime_nesting_limit (Postfix only counts
 * multipart levels) so that no input recurses without bound.
 *
 * Owns: one header buffer, the boundary stack, the part description.
 * Never: allocates per line once warmed up, looks back at earlier input,
 * or does anything quadratic in the input size.
 */
#include "content/mime.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

enum { ST_PRIMARY, ST_MULTIPART, ST_NESTED, ST_BODY };

typedef struct frame {
    size_t off, len;      /* the boundary in m->bounds */
    int msg_depth;        /* message/rfc822 levels outside this multipart */
    bool digest;          /* multipart/digest: parts default to message/rfc822 */
} frame_t;

struct mime {
    mime_opts_t o;
    mime_cb_t cb;
    void *arg;
    int state;
    bool prev_cont;
    int errs;
    /* the pending header */
    buf_t hdr;
    size_t hdr_name;
    bool hdr_trunc;
    /* the current entity */
    mime_part_t part;
    mime_enc domain;
    size_t body_off;
    int msg_depth;
    /* the boundary stack */
    frame_t *frames;
    int nframes, cap;
    buf_t bounds;
    buf_t tmp;
};

const char *mime_error_text(int err)
{
    if (err & MIME_ERR_NESTING)
        return "MIME nesting exceeds safety limit";
    if (err & MIME_ERR_TRUNC_HEADER)
        return "message header length exceeds safety limit";
    if (err & MIME_ERR_ENCODING_DOMAIN)
        return "invalid message/* or multipart/* encoding domain";
    return "MIME error";
}

static const struct {
    const char *name;
    mime_hdr_id id;
} known_headers[] = {
    {"content-type", MIME_H_CONTENT_TYPE},
    {"content-transfer-encoding", MIME_H_CONTENT_TRANSFER_ENCODING},
    {"content-disposition", MIME_H_CONTENT_DISPOSITION},
    {"content-description", MIME_H_CONTENT_DESCRIPTION},
    {"content-id", MIME_H_CONTENT_ID},
    {"mime-version", MIME_H_MIME_VERSION},
    {"message-id", MIME_H_MESSAGE_ID},
};

static const struct {
    const char *name;
    mime_enc enc, domain;
} encodings[] = {
    {"7bit", MIME_ENC_7BIT, MIME_ENC_7BIT},
    {"8bit", MIME_ENC_8BIT, MIME_ENC_8BIT},
    {"binary", MIME_ENC_BINARY, MIME_ENC_BINARY},
    {"base64", MIME_ENC_BASE64, MIME_ENC_7BIT},
    {"quoted-printable", MIME_ENC_QP, MIME_ENC_7BIT},
};

size_t mime_is_header(const char *text, size_t len)
{
    size_t n = 0;
    bool space = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ':')
            return n;
        if (c == ' ' || c == '\t') {
            if (n == 0)
                return 0;
            space = true;
            continue;
        }
        if (c == 0 || c >= 0x80 || c < 0x20 || c == 0x7f || space)
            return 0;
        n++;
    }
    return 0;
}

static mime_hdr_id header_id(const char *name, size_t n)
{
    for (size_t i = 0; i < ARRAY_LEN(known_headers); i++)
        if (strlen(known_headers[i].name) == n && str_nieq(name, known_headers[i].name, n))
            return known_headers[i].id;
    return MIME_H_OTHER;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* RFC 2045 token characters. */
static bool is_tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Skip white space and RFC 822 comments (nested, with \-escapes). */
static const char *skip_cfws(const char *p, const char *end)
{
    while (p < end) {
        if (is_ws(*p)) {
            p++;
        } else if (*p == '(') {
            int depth = 0;
            for (; p < end; p++) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                else if (*p == '(')
                    depth++;
                else if (*p == ')' && --depth == 0) {
                    p++;
                    break;
                }
            }
        } else {
            break;
        }
    }
    return p;
}

/* Past the next ';' that is not inside a quoted string, or end. */
static const char *skip_to_semi(const char *p, const char *end)
{
    bool q = false;
    for (; p < end; p++) {
        if (q && *p == '\\' && p + 1 < end)
            p++;
        else if (*p == '"')
            q = !q;
        else if (!q && *p == ';')
            return p + 1;
    }
    return end;
}

/* The value part of a header text (after the first colon). */
static const char *header_value(const char *text, size_t len, const char **end)
{
    *end = text + len;
    const char *c = memchr(text, ':', len);
    return c ? c + 1 : text + len;
}

bool mime_content_type(const char *value, size_t len, char type[32], char subtype[64])
{
    const char *end = value + len, *p = skip_cfws(value, end);
    size_t n = 0;
    for (; p < end && is_tchar((unsigned char)*p); p++)
        if (n + 1 < 32)
            type[n++] = (char)lc((unsigned char)*p);
    type[n] = 0;
    subtype[0] = 0;
    if (n == 0)
        return false;
    p = skip_cfws(p, end);
    if (p < end && *p == '/') {
        p = skip_cfws(p + 1, end);
        n = 0;
        for (; p < end && is_tchar((unsigned char)*p); p++)
            if (n + 1 < 64)
                subtype[n++] = (char)lc((unsigned char)*p);
        subtype[n] = 0;
    }
    return true;
}

/* --- Parameters ---------------------------------------------------------- */

typedef struct pscan {
    const char *p, *end;
} pscan_t;

/* The next "attr=value" of a parameter list; *quoted tells whether the
 * value (returned without its quotes, escapes still in) was quoted. */
static bool param_next(pscan_t *s, const char **attr, size_t *alen, const char **val,
                       size_t *vlen, bool *quoted)
{
    while (s->p < s->end) {
        const char *p = skip_cfws(s->p, s->end), *a = p;
        while (p < s->end && is_tchar((unsigned char)*p))
            p++;
        size_t an = (size_t)(p - a);
        p = skip_cfws(p, s->end);
        if (an == 0 || p >= s->end || *p != '=') {
            s->p = skip_to_semi(p, s->end);
            continue;
        }
        p = skip_cfws(p + 1, s->end);
        const char *v = p;
        if (p < s->end && *p == '"') {
            v = ++p;
            while (p < s->end && *p != '"') {
                if (*p == '\\' && p + 1 < s->end)
                    p++;
                p++;
            }
            *vlen = (size_t)(p - v);
            *quoted = true;
            s->p = skip_to_semi(p < s->end ? p + 1 : p, s->end);
        } else {
            /* Lenient: broken mailers write unquoted names with spaces. */
            while (p < s->end && *p != ';')
                p++;
            const char *e = p;
            while (e > v && is_ws(e[-1]))
                e--;
            *vlen = (size_t)(e - v);
            *quoted = false;
            s->p = p < s->end ? p + 1 : p;
        }
        *attr = a;
        *alen = an;
        *val = v;
        return true;
    }
    return false;
}

static void param_begin(pscan_t *s, const char *text, size_t len)
{
    const char *end;
    const char *v = header_value(text, len, &end);
    s->p = skip_to_semi(v, end);
    s->end = end;
}

static void unquote(const char *v, size_t n, bool quoted, buf_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (quoted && v[i] == '\\' && i + 1 < n)
            i++;
        if (v[i] == '\r' || v[i] == '\n')
            continue;  /* folding inside a quoted string */
        buf_putc(out, v[i]);
    }
}

static void pct_decode(const char *v, size_t n, buf_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (v[i] == '%' && i + 2 < n && (h = hex_value((unsigned char)v[i + 1])) >= 0
            && (l = hex_value((unsigned char)v[i + 2])) >= 0) {
            buf_putc(out, (char)(h * 16 + l));
            i += 2;
        } else if (v[i] != '\r' && v[i] != '\n') {
            buf_putc(out, v[i]);
        }
    }
}

/* Drop "charset'language'" from the first section of an RFC 2231 value. */
static void strip_charset(const char **v, size_t *n)
{
    const char *q1 = memchr(*v, '\'', *n);
    if (!q1)
        return;
    const char *q2 = memchr(q1 + 1, '\'', (size_t)(*v + *n - q1 - 1));
    if (!q2)
        return;
    *n -= (size_t)(q2 + 1 - *v);
    *v = q2 + 1;
}

#define MAX_SECTIONS 64

typedef struct section {
    int idx;
    bool ext, quoted;
    const char *v;
    size_t n;
} section_t;

int mime_param(const char *text, size_t len, const char *name, buf_t *out)
{
    size_t nl = strlen(name);
    pscan_t s;
    param_begin(&s, text, len);
    const char *a, *v, *plain = NULL, *ext = NULL;
    size_t an, vn, plain_n = 0, ext_n = 0;
    bool quoted, plain_q = false;
    section_t sec[MAX_SECTIONS];
    int nsec = 0;
    while (param_next(&s, &a, &an, &v, &vn, &quoted)) {
        if (an < nl || !str_nieq(a, name, nl))
            continue;
        if (an == nl) {
            if (!plain) {
                plain = v;
                plain_n = vn;
                plain_q = quoted;
            }
            continue;
        }
        if (a[nl] != '*')
            continue;
        if (an == nl + 1) {
            if (!ext) {
                ext = v;
                ext_n = vn;
            }
            continue;
        }
        /* name*N or name*N* */
        size_t i = nl + 1;
        int idx = 0;
        if (!(a[i] >= '0' && a[i] <= '9'))
            continue;
        for (; i < an && a[i] >= '0' && a[i] <= '9' && idx < 100000; i++)
            idx = idx * 10 + (a[i] - '0');
        bool e = false;
        if (i < an && a[i] == '*') {
            e = true;
            i++;
        }
        if (i != an || nsec == MAX_SECTIONS)
            continue;
        bool dup = false;
        for (int k = 0; k < nsec; k++)
            dup |= sec[k].idx == idx;
        if (dup)
            continue;
        /* insertion in index order */
        int k = nsec++;
        while (k > 0 && sec[k - 1].idx > idx) {
            sec[k] = sec[k - 1];
            k--;
        }
        sec[k] = (section_t){idx, e, quoted, v, vn};
    }
    buf_reset(out);
    if (nsec > 0 && sec[0].idx == 0) {
        for (int k = 0; k < nsec; k++) {
            const char *sv = sec[k].v;
            size_t sn = sec[k].n;
            if (sec[k].ext) {
                if (k == 0)
                    strip_charset(&sv, &sn);
                pct_decode(sv, sn, out);
            } else {
                unquote(sv, sn, sec[k].quoted, out);
            }
        }
        return 2;
    }
    if (ext) {
        size_t n = ext_n;
        const char *sv = ext;
            strip_charset(&sv, &n);
        pct_decode(sv, n, out);
        return 2;
    }
    if (!plain)
        return 0;
    unquote(plain, plain_n, plain_q, out);
    if (memmem(out->data ? out->data : "", out->len, "=?", 2)) {
        buf_t raw = BUF_INIT;
        buf_append(&raw, out->data, out->len);
        buf_reset(out);
        bool any = mime_decode_words(raw.data, raw.len, out);
        buf_free(&raw);
        if (any)
            return 2;
    }
    return 1;
}

/* --- RFC 2047 ------------------------------------------------------------ */

/* Longest encoded word we look for: bounds the work per "=?". */
#define WORD_MAX 1024

static void b64_bytes(const char *p, size_t n, buf_t *out)
{
    b64dec_t d = {0, 0};
    b64dec_feed(&d, p, n, out);
}

/* Decode one word at p ("=?cs?X?text?="); its length, or 0. */
static size_t decode_word(const char *p, size_t n, buf_t *out)
{
    if (n > WORD_MAX)
        n = WORD_MAX;
    size_t i = 2;
    while (i < n && p[i] != '?' && !is_ws(p[i]))
        i++;
    if (i == 2 || i + 3 >= n || p[i] != '?')
        return 0;
    char e = (char)lc((unsigned char)p[i + 1]);
    if ((e != 'b' && e != 'q') || p[i + 2] != '?')
        return 0;
    size_t t = i + 3, j = t;
    while (j + 1 < n && !(p[j] == '?' && p[j + 1] == '=') && !is_ws(p[j]))
        j++;
    if (j + 1 >= n || p[j] != '?' || p[j + 1] != '=')
        return 0;
    if (e == 'b') {
        b64_bytes(p + t, j - t, out);
    } else {
        for (size_t k = t; k < j; k++) {
            int h, l;
            if (p[k] == '_')
                buf_putc(out, ' ');
            else if (p[k] == '=' && k + 2 < j && (h = hex_value((unsigned char)p[k + 1])) >= 0
                     && (l = hex_value((unsigned char)p[k + 2])) >= 0) {
                buf_putc(out, (char)(h * 16 + l));
                k += 2;
            } else
                buf_putc(out, p[k]);
        }
    }
    return j + 2;
}

bool mime_decode_words(const char *text, size_t len, buf_t *out)
{
    bool any = false, only_ws = false;
    size_t mark = 0;
    for (size_t i = 0; i < len;) {
        if (text[i] == '=' && i + 1 < len && text[i + 1] == '?') {
            size_t before = out->len;
            size_t used = decode_word(text + i, len - i, out);
            if (used) {
                if (any && only_ws) {
                    /* white space between adjacent words is dropped */
                    size_t wlen = out->len - before;
                    memmove(out->data + mark, out->data + before, wlen);
                    buf_truncate(out, mark + wlen);
                }
                any = true;
                only_ws = true;
                mark = out->len;
                i += used;
                continue;
            }
        }
        if (!is_ws(text[i]))
            only_ws = false;
        if (text[i] != '\r' && text[i] != '\n')
            buf_putc(out, text[i]);
        i++;
    }
    return any;
}

/* --- The parser ---------------------------------------------------------- */

static void report(mime_t *m, int err, const char *text, size_t len)
{
    if ((m->errs & err) && err != MIME_ERR_TRUNC_HEADER)
        return;
    m->errs |= err;
    if (m->cb.error)
        m->cb.error(m->arg, err, text, len);
}

static int level(const mime_t *m) { return m->nframes + m->msg_depth; }

static void set_part(mime_t *m, const char *type, const char *subtype, int depth)
{
    str_copy(m->part.type, type, sizeof m->part.type);
    str_copy(m->part.subtype, subtype, sizeof m->part.subtype);
    m->part.is_text = strcmp(m->part.type, "text") == 0;
    m->part.enc = MIME_ENC_7BIT;
    m->part.depth = depth;
    m->domain = MIME_ENC_7BIT;
}

mime_t *mime_new(const mime_opts_t *o, const mime_cb_t *cb, void *arg)
{
    mime_t *m = xcalloc(1, sizeof *m);
    m->o = *o;
    if (m->o.nesting_limit < 1)
        m->o.nesting_limit = 1;
    if (m->o.header_size_limit < 1)
        m->o.header_size_limit = 1;
    if (m->o.boundary_length_limit < 1)
        m->o.boundary_length_limit = 1;
    m->cb = *cb;
    m->arg = arg;
    m->state = ST_PRIMARY;
    set_part(m, "text", "plain", 0);
    return m;
}

void mime_free(mime_t **mp)
{
    mime_t *m = *mp;
    if (!m)
        return;
    buf_free(&m->hdr);
    buf_free(&m->bounds);
    buf_free(&m->tmp);
    free(m->frames);
    free(m);
    *mp = NULL;
}

int mime_errors(const mime_t *m) { return m->errs; }

static void push(mime_t *m, const char *b, size_t n, bool digest)
{
    if (n > m->o.boundary_length_limit)
        n = m->o.boundary_length_limit;
    if (m->nframes == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->frames = xrealloc(m->frames, (size_t)m->cap * sizeof *m->frames);
    }
    m->frames[m->nframes++] = (frame_t){m->bounds.len, n, m->msg_depth, digest};
    buf_append(&m->bounds, b, n);
}

static void pop_to(mime_t *m, int n)
{
    m->nframes = n;
    buf_truncate(&m->bounds, n ? m->frames[n - 1].off + m->frames[n - 1].len : 0);
}

static void content_type(mime_t *m)
{
    const char *end;
    const char *v = header_value(m->hdr.data, m->hdr.len, &end);
    char type[32], subtype[64];
    if (!mime_content_type(v, (size_t)(end - v), type, subtype))
        return;
    str_copy(m->part.type, type, sizeof m->part.type);
    str_copy(m->part.subtype, subtype, sizeof m->part.subtype);
    m->part.is_text = strcmp(type, "text") == 0;
    if (strcmp(type, "multipart") != 0)
        return;
    /* Every boundary= is pushed, as Postfix does: a sender that gives
     * two cannot hide parts behind the one we did not look at. */
    bool digest = strcmp(subtype, "digest") == 0;
    pscan_t s;
    param_begin(&s, m->hdr.data, m->hdr.len);
    const char *a, *val;
    size_t an, vn;
    bool quoted;
    while (param_next(&s, &a, &an, &val, &vn, &quoted)) {
        if (an != 8 || !str_nieq(a, "boundary", 8))
            continue;
        buf_reset(&m->tmp);
        unquote(val, vn, quoted, &m->tmp);
        if (m->tmp.len == 0)
            continue;
        if (level(m) + 1 > m->o.nesting_limit) {
            report(m, MIME_ERR_NESTING, m->hdr.data, m->hdr.len);
            continue;
        }
        push(m, m->tmp.data, m->tmp.len, digest);
    }
}

static void content_encoding(mime_t *m)
{
    const char *end;
    const char *v = header_value(m->hdr.data, m->hdr.len, &end);
    const char *p = skip_cfws(v, end), *t = p;
    while (p < end && is_tchar((unsigned char)*p))
        p++;
    size_t n = (size_t)(p - t);
    for (size_t i = 0; i < ARRAY_LEN(encodings); i++)
        if (strlen(encodings[i].name) == n && str_nieq(t, encodings[i].name, n)) {
            m->part.enc = encodings[i].enc;
            m->domain = encodings[i].domain;
            return;
        }
}

static mime_hdr_class cur_class(const mime_t *m)
{
    return m->state == ST_MULTIPART ? MIME_HDR_MULTIPART
         : m->state == ST_NESTED    ? MIME_HDR_NESTED
                                    : MIME_HDR_PRIMARY;
}

static void flush_header(mime_t *m)
{
    mime_header_t h;
    h.cls = cur_class(m);
    h.id = header_id(m->hdr.data, m->hdr_name);
    h.is_mime = h.id != MIME_H_OTHER && h.id != MIME_H_MESSAGE_ID;
    h.truncated = m->hdr_trunc;
    h.text = m->hdr.data;
    h.len = m->hdr.len;
    h.name_len = m->hdr_name;
    if (!m->o.disable_mime) {
        if (h.id == MIME_H_CONTENT_TYPE)
            content_type(m);
        else if (h.id == MIME_H_CONTENT_TRANSFER_ENCODING)
            content_encoding(m);
    }
    if (m->cb.header)
        m->cb.header(m->arg, &h);
    buf_reset(&m->hdr);
    m->hdr_trunc = false;
}

/* Append to the pending header, keeping at most header_size_limit bytes. */
static void hdr_append(mime_t *m, const char *text, size_t len, bool newline)
{
    size_t lim = m->o.header_size_limit;
    size_t room = m->hdr.len < lim ? lim - m->hdr.len : 0;
    bool cut = false;
    if (newline) {
        if (room > 0) {
            buf_putc(&m->hdr, '\n');
            room--;
        } else {
            cut = true;
        }
    }
    if (len > room) {
        len = room;
        cut = true;
    }
    buf_append(&m->hdr, text, len);
    if (cut && !m->hdr_trunc) {
        m->hdr_trunc = true;
        report(m, MIME_ERR_TRUNC_HEADER, m->hdr.data, m->hdr.len);
    }
}

static void emit_body(mime_t *m, const char *text, size_t len, bool cont, bool boundary)
{
    mime_body_t b = {text, len, cont, boundary, boundary ? 0 : m->body_off, &m->part};
    if (!boundary)
        m->body_off += len + (cont ? 0 : 1);
    if (m->cb.body)
        m->cb.body(m->arg, &b);
}

static void start_body(mime_t *m)
{
    m->state = ST_BODY;
    m->body_off = 0;
    m->part.serial++;
}

static void check_domain(mime_t *m)
{
    const char *t = m->part.type, *s = m->part.subtype;
    bool bad = false;
    if (strcmp(t, "message") == 0) {
        if (strcmp(s, "partial") == 0 || strcmp(s, "external-body") == 0)
            bad = m->domain != MIME_ENC_7BIT;
        else
            bad = m->part.enc != m->domain;
    } else if (strcmp(t, "multipart") == 0) {
        bad = m->part.enc != m->domain;
    }
    if (bad) {
        const char *name = "unknown";
        for (size_t i = 0; i < ARRAY_LEN(encodings); i++)
            if (encodings[i].enc == m->part.enc)
                name = encodings[i].name;
        report(m, MIME_ERR_ENCODING_DOMAIN, name, strlen(name));
    }
}

static void body_line(mime_t *m, const char *text, size_t len, bool cont)
{
    bool boundary = false;
    if (m->nframes && !m->prev_cont && len >= 2 && text[0] == '-' && text[1] == '-') {
        for (int i = m->nframes - 1; i >= 0; i--) {
            const frame_t *f = &m->frames[i];
            /* A boundary longer than a line piece is matched on what the
             * first piece holds: otherwise a sender could hide every part
             * from the checks behind a boundary of line_length_limit
             * bytes or more. */
            size_t cmp = f->len;
            if (len - 2 < f->len) {
                if (!cont)
                    continue;
                cmp = len - 2;
            }
            if (memcmp(text + 2, m->bounds.data + f->off, cmp) != 0)
                continue;
            boundary = true;
            bool digest = f->digest;
            m->msg_depth = f->msg_depth;
            if (cmp == f->len && len - 2 - f->len >= 2 && text[2 + f->len] == '-' && text[3 + f->len] == '-') {
                pop_to(m, i);
                set_part(m, "", "", level(m));
                emit_body(m, text, len, cont, true);
                start_body(m);
                return;
            }
            pop_to(m, i + 1);
            m->state = ST_MULTIPART;
            if (digest)
                set_part(m, "message", "rfc822", level(m));
            else
                set_part(m, "text", "plain", level(m));
            break;
        }
    }
    emit_body(m, text, len, cont, boundary);
}

/* A line that is not part of a header ends the header section. */
static void end_section(mime_t *m, const char *text, size_t len, bool cont)
{
    mime_hdr_class cls = cur_class(m);
    if (m->cb.header_end)
        m->cb.header_end(m->arg, cls);
    if (m->o.report_encoding_domain && !m->o.disable_mime)
        check_domain(m);
    if (len == 0 && !cont) {
        const char *t = m->part.type, *s = m->part.subtype;
        if (!m->o.disable_mime && strcmp(t, "message") == 0
            && (strcmp(s, "rfc822") == 0 || strcmp(s, "global") == 0)) {
            if (level(m) + 1 > m->o.nesting_limit) {
                static const char what[] = "message/rfc822";
                report(m, MIME_ERR_NESTING, what, sizeof what - 1);
                start_body(m);
            } else {
                /* The blank line belongs to the enclosing part. */
                emit_body(m, text, 0, false, false);
                m->msg_depth++;
                m->state = ST_NESTED;
                set_part(m, "text", "plain", level(m));
                return;
            }
        } else if (strcmp(t, "multipart") == 0) {
            start_body(m);
            set_part(m, "", "", m->part.depth);
        } else {
            start_body(m);
        }
        emit_body(m, text, 0, false, false);
        return;
    }
    /* Not a header and not empty: Postfix inserts the missing empty line. */
    start_body(m);
    emit_body(m, "", 0, false, false);
    body_line(m, text, len, cont);
}

void mime_update(mime_t *m, const char *text, size_t len, bool cont)
{
    if (m->state != ST_BODY) {
        if (m->hdr.len > 0) {
            if (m->prev_cont) {
                hdr_append(m, text, len, false);
                m->prev_cont = cont;
                return;
            }
            if (len > 0 && (text[0] == ' ' || text[0] == '\t')) {
                hdr_append(m, text, len, true);
                m->prev_cont = cont;
                return;
            }
            flush_header(m);
        }
        if (m->prev_cont) {
            /* The rest of a long boundary line: it must not end the part's
             * header section before it starts (hiding its headers). */
            emit_body(m, text, len, cont, true);
            m->prev_cont = cont;
            return;
        }
        size_t n = mime_is_header(text, len);
        if (n > 0) {
            /* Normalise the obsolete "name :" to "name:", as Postfix. */
            size_t i = n;
            while (i < len && (text[i] == ' ' || text[i] == '\t'))
                i++;
            m->hdr_name = n;
            hdr_append(m, text, n, false);
            hdr_append(m, text + i, len - i, false);
            m->prev_cont = cont;
            return;
        }
        end_section(m, text, len, cont);
        m->prev_cont = cont;
        return;
    }
    body_line(m, text, len, cont);
    m->prev_cont = cont;
}

void mime_finish(mime_t *m)
{
    if (m->state != ST_BODY) {
        if (m->hdr.len > 0)
            flush_header(m);
        if (m->cb.header_end)
            m->cb.header_end(m->arg, cur_class(m));
        start_body(m);
    }
    m->prev_cont = false;
}

/* --- Body decoders ------------------------------------------------------- */

void mime_dec_init(mime_dec_t *d, mime_enc enc, size_t line_limit)
{
    d->enc = enc;
    d->line_limit = line_limit ? line_limit : 2048;
    d->b64 = (b64dec_t){0, 0};
    d->soft = false;
    buf_reset(&d->line);
}

void mime_dec_free(mime_dec_t *d)
{
    buf_free(&d->line);
    buf_free(&d->raw);
}

static void dec_byte(mime_dec_t *d, unsigned char c, mime_line_fn fn, void *arg)
{
    if (c == '\n') {
        if (d->line.len && d->line.data[d->line.len - 1] == '\r')
            buf_truncate(&d->line, d->line.len - 1);
        fn(arg, buf_cstr(&d->line), d->line.len, false);
        buf_reset(&d->line);
        return;
    }
    buf_putc(&d->line, (char)c);
    if (d->line.len >= d->line_limit) {
        fn(arg, d->line.data, d->line.len, true);
        buf_reset(&d->line);
    }
}

void mime_dec_line(mime_dec_t *d, const char *text, size_t len, bool cont, mime_line_fn fn, void *arg)
{
    if (d->enc == MIME_ENC_BASE64) {
        buf_reset(&d->raw);
        b64dec_feed(&d->b64, text, len, &d->raw);
        for (size_t i = 0; i < d->raw.len; i++)
            dec_byte(d, (unsigned char)d->raw.data[i], fn, arg);
        return;
    }
    if (d->enc == MIME_ENC_QP) {
        size_t n = len;
        if (!cont)
            while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t' || text[n - 1] == '\r'))
                n--;
        bool soft = !cont && n > 0 && text[n - 1] == '=';
        if (soft)
            n--;
        for (size_t i = 0; i < n; i++) {
            int h, l;
            if (text[i] == '=' && i + 2 < n && (h = hex_value((unsigned char)text[i + 1])) >= 0
                && (l = hex_value((unsigned char)text[i + 2])) >= 0) {
                dec_byte(d, (unsigned char)(h * 16 + l), fn, arg);
                i += 2;
            } else {
                dec_byte(d, (unsigned char)text[i], fn, arg);
            }
        }
        if (!cont && !soft)
            dec_byte(d, '\n', fn, arg);
        d->soft = soft;
        return;
    }
    for (size_t i = 0; i < len; i++)
        dec_byte(d, (unsigned char)text[i], fn, arg);
    if (!cont)
        dec_byte(d, '\n', fn, arg);
}

void mime_dec_flush(mime_dec_t *d, mime_line_fn fn, void *arg)
{
    if (d->line.len > 0)
        fn(arg, d->line.data, d->line.len, false);
    buf_reset(&d->line);
    d->b64 = (b64dec_t){0, 0};
    d->soft = false;
}
