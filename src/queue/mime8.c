/*
 * mime8: 8-bit to 7-bit downgrade of a message for a server without
 * 8BITMIME (see mime8.h for the contract).
 *
 * An entity is a header block and a body.  Containers (every multipart type with
 * a boundary that occurs, message/rfc822) are walked recursively up to
 * the nesting limit; every leaf whose body holds 8-bit bytes is written
 * again as quoted-printable (or, when it already claims quoted-printable
 * or base64, decoded leniently and encoded cleanly), and its header gets
 * the matching Content-Transfer-Encoding.  Bytes that are not ours to
 * change (headers, 7-bit bodies, boundaries) are copied as they are, so
 * a message without 8-bit content comes out byte for byte.
 *
 * Owns nothing beyond its output buffer.  Never fails, never reads
 * outside [in, in+len), never changes a header field other than
 * Content-Transfer-Encoding, except that a top-level entity that gains a
 * Content-Transfer-Encoding also gains "MIME-Version: 1.0" when it had
 * none (the encoding header means nothing without it; Postfix does the
 * same).  Preamble and epilogue text of a multipart (which readers never
 * show) is quoted-printable escaped when it holds 8-bit bytes, so the
 * whole output is 7-bit outside header fields.
 */
#include "queue/mime8.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

/* Recursion stays well inside the stack whatever limit the caller passes. */
#define MIME8_DEPTH_CAP 200
#define QP_LINE 76

enum { CTE_NONE, CTE_7BIT, CTE_8BIT, CTE_BINARY, CTE_QP, CTE_B64, CTE_OTHER };

typedef struct field {
    size_t start, end;   /* [start, end) in the entity, continuation lines included */
} field_t;

typedef struct entity {
    const char *p;
    size_t n;
    field_t *fields;
    size_t nfields, capfields;
    size_t hdr_end;      /* where the header block ends */
    size_t body;         /* where the body starts */
    bool has_sep;        /* an empty line separates them */
    char type[32], subtype[64];
    bool has_type;
    char boundary[256];
    int cte;
    bool has_mime_version;
} entity_t;

bool mime8_has_8bit(const char *in, size_t len)
{
    const unsigned char *p = (const unsigned char *)in;
    for (size_t i = 0; i < len; i++)
        if (p[i] >= 0x80)
            return true;
    return false;
}

/* ------------------------------------------------------- header parsing */

static bool is_field_line(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (unsigned char)s[i] > 32 && (unsigned char)s[i] < 127 && s[i] != ':')
        i++;
    if (i == 0)
        return false;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i < n && s[i] == ':';
}

static size_t line_end(const char *p, size_t n, size_t pos)
{
    const char *nl = memchr(p + pos, '\n', n - pos);
    return nl ? (size_t)(nl - p) : n;
}

static void add_field(entity_t *e, size_t start, size_t end)
{
    if (e->nfields == e->capfields) {
        e->capfields = e->capfields ? e->capfields * 2 : 16;
        e->fields = xrealloc(e->fields, e->capfields * sizeof *e->fields);
    }
    e->fields[e->nfields].start = start;
    e->fields[e->nfields].end = end;
    e->nfields++;
}

static void split_header(entity_t *e)
{
    size_t pos = 0;
    bool first = true;
    e->hdr_end = e->body = e->n;
    e->has_sep = false;
    while (pos < e->n) {
        size_t le = line_end(e->p, e->n, pos);
        size_t next = le < e->n ? le + 1 : e->n;
        size_t ln = le - pos;
        const char *line = e->p + pos;
        if (ln == 0 || (ln == 1 && line[0] == '\r')) {
            e->hdr_end = pos;
            e->body = next;
            e->has_sep = true;
            return;
        }
        if (line[0] == ' ' || line[0] == '\t') {
            if (first) {
                e->hdr_end = e->body = pos;
                return;
            }
            e->fields[e->nfields - 1].end = next;
        } else if (is_field_line(line, ln)) {
            add_field(e, pos, next);
        } else {
            e->hdr_end = e->body = pos;
            return;
        }
        first = false;
        pos = next;
    }
}

/* The field's name matches (case-insensitive, up to the colon)? */
static bool field_is(const entity_t *e, const field_t *f, const char *name)
{
    size_t nl = strlen(name);
    const char *s = e->p + f->start;
    size_t n = f->end - f->start;
    if (n < nl || !str_nieq(s, name, nl))
        return false;
    size_t i = nl;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i < n && s[i] == ':';
}

/* The field's value, unfolded (CR/LF become spaces), at most max bytes. */
static void field_value(const entity_t *e, const field_t *f, char *out, size_t max)
{
    const char *s = e->p + f->start;
    size_t n = f->end - f->start;
    const char *colon = memchr(s, ':', n);
    size_t k = 0;
    if (colon) {
        for (const char *q = colon + 1; q < s + n && k + 1 < max; q++)
            out[k++] = (*q == '\r' || *q == '\n') ? ' ' : *q;
    }
    out[k] = 0;
}

/* Skip white space and (nested) comments. */
static const char *skip_cfws(const char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s != '(')
            return s;
        int depth = 0;
        while (*s) {
            if (*s == '\\' && s[1]) {
                s += 2;
                continue;
            }
            if (*s == '(')
                depth++;
            else if (*s == ')' && --depth == 0) {
                s++;
                break;
            }
            s++;
        }
    }
}

static bool tspecial(char c)
{
    return strchr("()<>@,;:\\\"/[]?= \t", c) != NULL || (unsigned char)c < 32 || (unsigned char)c >= 127;
}

/* A MIME token into out (lower case), returns the position after it. */
static const char *token(const char *s, char *out, size_t max)
{
    size_t k = 0;
    while (*s && !tspecial(*s)) {
        if (k + 1 < max)
            out[k++] = (char)lc((unsigned char)*s);
        s++;
    }
    out[k] = 0;
    return s;
}

static void parse_content_type(entity_t *e, const char *v)
{
    const char *s = skip_cfws(v);
    s = token(s, e->type, sizeof e->type);
    s = skip_cfws(s);
    if (*s == '/') {
        s = skip_cfws(s + 1);
        s = token(s, e->subtype, sizeof e->subtype);
    }
    e->has_type = e->type[0] != 0;
    for (;;) {
        s = skip_cfws(s);
        if (*s != ';') {
            /* Tolerate junk: look for the next parameter. */
            const char *semi = strchr(s, ';');
            if (!semi)
                return;
            s = semi;
        }
        s = skip_cfws(s + 1);
        char name[32];
        s = token(s, name, sizeof name);
        s = skip_cfws(s);
        if (*s != '=')
            continue;
        s = skip_cfws(s + 1);
        char val[sizeof e->boundary];
        size_t k = 0;
        if (*s == '"') {
            s++;
            while (*s && *s != '"') {
                if (*s == '\\' && s[1])
                    s++;
                if (k + 1 < sizeof val)
                    val[k++] = *s;
                s++;
            }
            if (*s == '"')
                s++;
        } else {
            while (*s && !tspecial(*s)) {
                if (k + 1 < sizeof val)
                    val[k++] = *s;
                s++;
            }
        }
        val[k] = 0;
        if (strcmp(name, "boundary") == 0 && !e->boundary[0])
            str_copy(e->boundary, val, sizeof e->boundary);
    }
}

static int parse_cte(const char *v)
{
    char t[32];
    token(skip_cfws(v), t, sizeof t);
    if (!t[0])
        return CTE_NONE;
    if (strcmp(t, "7bit") == 0)
        return CTE_7BIT;
    if (strcmp(t, "8bit") == 0)
        return CTE_8BIT;
    if (strcmp(t, "binary") == 0)
        return CTE_BINARY;
    if (strcmp(t, "quoted-printable") == 0)
        return CTE_QP;
    if (strcmp(t, "base64") == 0)
        return CTE_B64;
    return CTE_OTHER;
}

static void parse_entity(entity_t *e, const char *p, size_t n, bool digest)
{
    memset(e, 0, sizeof *e);
    e->p = p;
    e->n = n;
    split_header(e);
    bool seen_ct = false, seen_cte = false;
    char v[1024];
    for (size_t i = 0; i < e->nfields; i++) {
        const field_t *f = &e->fields[i];
        if (!seen_ct && field_is(e, f, "Content-Type")) {
            field_value(e, f, v, sizeof v);
            parse_content_type(e, v);
            seen_ct = true;
        } else if (!seen_cte && field_is(e, f, "Content-Transfer-Encoding")) {
            field_value(e, f, v, sizeof v);
            e->cte = parse_cte(v);
            seen_cte = true;
        } else if (field_is(e, f, "MIME-Version")) {
            e->has_mime_version = true;
        }
    }
    if (!e->has_type) {
        str_copy(e->type, digest ? "message" : "text", sizeof e->type);
        str_copy(e->subtype, digest ? "rfc822" : "plain", sizeof e->subtype);
    }
}

/* ------------------------------------------------------------ encoders */

static const char hexdig[] = "0123456789ABCDEF";

/* Quoted-printable (RFC 2045 6.7): the LF line structure is kept, lines
 * are at most QP_LINE characters (soft breaks), '=', controls, 8-bit
 * bytes and white space at the end of a line are escaped. */
static void qp_encode(const char *p, size_t n, buf_t *out)
{
    size_t col = 0;
    buf_reserve(out, n + n / 8 + 16);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n') {
            buf_putc(out, '\n');
            col = 0;
            continue;
        }
        bool last = i + 1 == n || p[i + 1] == '\n';
        bool plain = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last);
        size_t tl = plain ? 1 : 3;
        /* Keep room for the "=" of a soft break unless this ends the line. */
        if (col + tl > (last ? QP_LINE : QP_LINE - 1)) {
            buf_append(out, "=\n", 2);
            col = 0;
        }
        if (plain) {
            buf_putc(out, (char)c);
        } else {
            buf_putc(out, '=');
            buf_putc(out, hexdig[c >> 4]);
            buf_putc(out, hexdig[c & 15]);
        }
        col += tl;
    }
}

/* Lenient quoted-printable decoding: "=XX" and soft breaks are decoded,
 * anything else is kept as it is. */
static void qp_decode(const char *p, size_t n, buf_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '=') {
            buf_putc(out, p[i]);
            continue;
        }
        int hi = i + 2 < n ? hex_value((unsigned char)p[i + 1]) : -1;
        int lo = hi >= 0 ? hex_value((unsigned char)p[i + 2]) : -1;
        if (lo >= 0) {
            buf_putc(out, (char)(hi * 16 + lo));
            i += 2;
            continue;
        }
        size_t j = i + 1;
        while (j < n && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r'))
            j++;
        if (j == n || p[j] == '\n') {
            i = j;   /* soft break (or "=" at the very end) */
            continue;
        }
        buf_putc(out, '=');
    }
}


/* Decode ignoring every byte outside the alphabet (as readers do), then
 * encode again in lines of 76. */
static void b64_clean(const char *p, size_t n, buf_t *out)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    buf_t raw = BUF_INIT;
    const char *pad = memchr(p, '=', n);   /* decoding stops at the padding */
    b64dec_t d = {0, 0};
    b64dec_feed(&d, p, pad ? (size_t)(pad - p) : n, &raw);
    const unsigned char *r = (const unsigned char *)buf_cstr(&raw);
    size_t col = 0;
    for (size_t i = 0; i < raw.len; i += 3) {
        unsigned v = (unsigned)r[i] << 16;
        size_t k = raw.len - i;
        if (k > 1)
            v |= (unsigned)r[i + 1] << 8;
        if (k > 2)
            v |= r[i + 2];
        char q[4] = {alpha[(v >> 18) & 63], alpha[(v >> 12) & 63], k > 1 ? alpha[(v >> 6) & 63] : '=',
                     k > 2 ? alpha[v & 63] : '='};
        buf_append(out, q, 4);
        col += 4;
        if (col >= QP_LINE && i + 3 < raw.len) {
            buf_putc(out, '\n');
            col = 0;
        }
    }
    if (raw.len)
        buf_putc(out, '\n');
    buf_free(&raw);
}

/* ------------------------------------------------------------- walking */

static void entity_out(const char *p, size_t n, unsigned depth, unsigned limit, bool digest, bool top,
                       buf_t *out, int *changed);

/* Text nobody reads (preamble, epilogue): escaped only when it has to be. */
static void text_out(const char *p, size_t n, buf_t *out, int *changed)
{
    if (!mime8_has_8bit(p, n)) {
        buf_append(out, p, n);
        return;
    }
    qp_encode(p, n, out);
    *changed = 1;
}

/* The header block with its Content-Transfer-Encoding set to cte_text
 * (NULL: unchanged), then the separator. */
static void header_out(const entity_t *e, const char *cte_text, bool top, buf_t *out)
{
    bool written = false;
    for (size_t i = 0; i < e->nfields; i++) {
        const field_t *f = &e->fields[i];
        if (cte_text && field_is(e, f, "Content-Transfer-Encoding")) {
            if (!written)
                buf_printf(out, "Content-Transfer-Encoding: %s\n", cte_text);
            written = true;
            continue;
        }
        buf_append(out, e->p + f->start, f->end - f->start);
        /* A last field without its LF (input ended in the header). */
        if (f->end == e->n && e->n > 0 && e->p[e->n - 1] != '\n' && cte_text)
            buf_putc(out, '\n');
    }
    bool added = false;
    if (cte_text && !written) {
        if (top && !e->has_mime_version)
            buf_puts(out, "MIME-Version: 1.0\n");
        buf_printf(out, "Content-Transfer-Encoding: %s\n", cte_text);
        added = true;
    }
    /* Whatever sat between the fields and the body (a blank line, or
     * nothing when the body began without one). */
    buf_append(out, e->p + e->hdr_end, e->body - e->hdr_end);
    if (added && !e->has_sep && e->body < e->n)
        buf_putc(out, '\n');
}

typedef struct delim {
    size_t start, end;   /* the line, its LF included */
    bool close;
} delim_t;

/* The boundary lines of a multipart body, up to the first close. */
static size_t find_delims(const char *p, size_t n, const char *boundary, delim_t **out)
{
    size_t bl = strlen(boundary), nd = 0, cap = 0;
    delim_t *d = NULL;
    size_t pos = 0;
    while (pos < n) {
        size_t le = line_end(p, n, pos);
        size_t next = le < n ? le + 1 : n;
        size_t ln = le - pos;
        const char *s = p + pos;
        if (ln >= 2 + bl && s[0] == '-' && s[1] == '-' && memcmp(s + 2, boundary, bl) == 0) {
            const char *r = s + 2 + bl;
            size_t rn = ln - 2 - bl;
            bool close = rn >= 2 && r[0] == '-' && r[1] == '-';
            bool plain = true;
            for (size_t i = 0; i < rn && !close; i++)
                if (r[i] != ' ' && r[i] != '\t' && r[i] != '\r')
                    plain = false;
            if (close || plain) {
                if (nd == cap) {
                    cap = cap ? cap * 2 : 8;
                    d = xrealloc(d, cap * sizeof *d);
                }
                d[nd].start = pos;
                d[nd].end = next;
                d[nd].close = close;
                nd++;
                if (close)
                    break;
            }
        }
        pos = next;
    }
    *out = d;
    return nd;
}

static void leaf_out(const entity_t *e, bool top, buf_t *out, int *changed)
{
    const char *body = e->p + e->body;
    size_t bn = e->n - e->body;
    bool body8 = mime8_has_8bit(body, bn);
    switch (e->cte) {
    case CTE_QP:
        if (body8) {
            buf_t dec = BUF_INIT;
            qp_decode(body, bn, &dec);
            header_out(e, NULL, top, out);
            qp_encode(buf_cstr(&dec), dec.len, out);
            buf_free(&dec);
            *changed = 1;
            return;
        }
        break;
    case CTE_B64:
        if (body8) {
            header_out(e, NULL, top, out);
            b64_clean(body, bn, out);
            *changed = 1;
            return;
        }
        break;
    case CTE_8BIT:
    case CTE_BINARY:
        if (!body8) {
            /* Nothing to encode: only the label is wrong for a 7-bit server. */
            header_out(e, "7bit", top, out);
            buf_append(out, body, bn);
            *changed = 1;
            return;
        }
        /* FALLTHROUGH */
    default:
        if (body8) {
            header_out(e, "quoted-printable", top, out);
            qp_encode(body, bn, out);
            *changed = 1;
            return;
        }
        break;
    }
    buf_append(out, e->p, e->n);
}

static void multipart_out(const entity_t *e, const delim_t *d, size_t nd, unsigned depth, unsigned limit,
                          bool top, buf_t *out, int *changed)
{
    bool relabel = e->cte == CTE_8BIT || e->cte == CTE_BINARY;
    if (relabel)
        *changed = 1;
    header_out(e, relabel ? "7bit" : NULL, top, out);
    const char *p = e->p;
    size_t b0 = e->body;
    bool digest = strcmp(e->subtype, "digest") == 0;
    if (d[0].start > b0) {
        /* The LF before a boundary line belongs to the boundary. */
        text_out(p + b0, d[0].start - 1 - b0, out, changed);
        buf_putc(out, '\n');
    }
    for (size_t k = 0; k < nd; k++) {
        buf_append(out, p + d[k].start, d[k].end - d[k].start);
        if (d[k].close) {
            text_out(p + d[k].end, e->n - d[k].end, out, changed);
            return;
        }
        size_t a = d[k].end;
        if (k + 1 < nd) {
            size_t s = d[k + 1].start;
            if (s > a) {
                entity_out(p + a, s - 1 - a, depth + 1, limit, digest, false, out, changed);
                buf_putc(out, '\n');
            }
        } else {
            /* No closing boundary: the last part runs to the end. */
            entity_out(p + a, e->n - a, depth + 1, limit, digest, false, out, changed);
        }
    }
}

static void entity_out(const char *p, size_t n, unsigned depth, unsigned limit, bool digest, bool top,
                       buf_t *out, int *changed)
{
    if (!mime8_has_8bit(p, n)) {
        /* Only labels could be wrong; a 7-bit entity is sent as it is. */
        buf_append(out, p, n);
        return;
    }
    entity_t e;
    parse_entity(&e, p, n, digest);
    bool deeper_ok = depth < limit && depth < MIME8_DEPTH_CAP;
    if (deeper_ok && strcmp(e.type, "multipart") == 0 && e.boundary[0]) {
        delim_t *d = NULL;
        size_t nd = find_delims(p + e.body, n - e.body, e.boundary, &d);
        if (nd > 0) {
            for (size_t k = 0; k < nd; k++) {
                d[k].start += e.body;
                d[k].end += e.body;
            }
            multipart_out(&e, d, nd, depth, limit, top, out, changed);
            free(d);
            free(e.fields);
            return;
        }
        free(d);
    } else if (deeper_ok && strcmp(e.type, "message") == 0 && strcmp(e.subtype, "rfc822") == 0 &&
               (e.cte == CTE_NONE || e.cte == CTE_7BIT || e.cte == CTE_8BIT || e.cte == CTE_BINARY)) {
        bool relabel = e.cte == CTE_8BIT || e.cte == CTE_BINARY;
        if (relabel)
            *changed = 1;
        header_out(&e, relabel ? "7bit" : NULL, top, out);
        entity_out(p + e.body, n - e.body, depth + 1, limit, false, true, out, changed);
        free(e.fields);
        return;
    }
    leaf_out(&e, top, out, changed);
    free(e.fields);
}

int mime8_downgrade(const char *in, size_t len, unsigned nesting_limit, buf_t *out)
{
    if (!mime8_has_8bit(in, len)) {
        buf_append(out, in, len);
        return 0;
    }
    int changed = 0;
    entity_out(in, len, 0, nesting_limit, false, true, out, &changed);
    return changed;
}
