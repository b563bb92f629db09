/*
 * syntax: the layer under main.cf and master.cf: Postfix logical lines,
 * brace-aware field splitting, and the "file:line: message" diagnostics.
 *
 * Everything returned is malloc'd and owned by the caller.  Must never
 * interpret values: which names exist and what they mean is registry.c's
 * and expand.c's business.
 */
#include "config/config-private.h"
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void push_line(cf_line_t **v, size_t *n, size_t *cap, buf_t *cur, int line)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[*n].text = buf_steal(cur);
    (*v)[*n].line = line;
    (*n)++;
}

size_t cf_logical_lines(const char *text, const char *file, cf_line_t **out, buf_t *err)
{
    cf_line_t *v = NULL;
    size_t n = 0, cap = 0;
    buf_t cur = BUF_INIT;
    int lineno = 0, curline = 0;
    bool have = false;    /* a logical line is open */
    bool orphan = false;  /* dropping continuation lines that had no start */

    for (const char *p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        size_t b = 0, e = len;
        lineno++;
        while (e > 0 && CF_WS(p[e - 1]))
            e--;
        while (b < e && CF_WS(p[b]))
            b++;
        if (b == e || p[b] == '#') {
            /* blank or comment: dropped, even between continuation lines */
        } else if (b > 0) {
            if (have) {
                buf_putc(&cur, ' ');
                buf_append(&cur, p + b, e - b);
            } else if (!orphan) {
                cf_msg(err, file, lineno, "logical line must not start with white space");
                orphan = true;
            }
        } else {
            if (have)
                push_line(&v, &n, &cap, &cur, curline);
            buf_append(&cur, p, e);
            curline = lineno;
            have = true;
            orphan = false;
        }
        p = eol ? eol + 1 : p + len;
    }
    if (have)
        push_line(&v, &n, &cap, &cur, curline);
    buf_free(&cur);
    *out = v;
    return n;
}

void cf_lines_free(cf_line_t **lines, size_t n)
{
    if (!*lines)
        return;
    for (size_t i = 0; i < n; i++)
        free((*lines)[i].text);
    xfree(lines);
}

const char *cf_token(const char *c, bool commas, const char **start, bool *unbalanced)
{
#define SEP(ch) (CF_WS(ch) || (commas && (ch) == ','))
    while (*c && SEP(*c))
        c++;
    if (!*c)
        return NULL;
    *start = c;
    int depth = 0;
    for (; *c && (depth > 0 || !SEP(*c)); c++) {
        if (*c == '{')
            depth++;
        else if (*c == '}' && depth > 0)
            depth--;
        else if (*c == '}')
            *unbalanced = true;
    }
    if (depth > 0)
        *unbalanced = true;
    return c;
#undef SEP
}

char **cf_fields(const char *s, size_t *n, bool *unbalanced)
{
    char **v = NULL;
    size_t nv = 0, cap = 0;
    const char *start, *end;
    *unbalanced = false;
    for (const char *c = s; (end = cf_token(c, false, &start, unbalanced)); c = end) {
        if (nv == cap) {
            cap = cap ? cap * 2 : 12;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[nv++] = xstrndup(start, (size_t)(end - start));
    }
    *n = nv;
    return v;
}

void cf_fields_free(char ***f, size_t n)
{
    if (!*f)
        return;
    for (size_t i = 0; i < n; i++)
        free((*f)[i]);
    xfree(f);
}

static bool has_line(const buf_t *b, const char *line, size_t len)
{
    const char *d = buf_cstr(b), *end = d + b->len;
    for (const char *p = d; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (l == len && memcmp(p, line, len) == 0)
            return true;
        p += l;
    }
    return false;
}

/* Past this, messages are dropped: the dedup scan is linear, and nobody
 * reads the thousandth error of a file that is not a configuration. */
enum { MAX_MSG_BYTES = 64 * 1024 };

static void vmsg(buf_t *b, const char *file, int line, const char *kind, const char *fmt, va_list ap)
{
    if (!b || b->len >= MAX_MSG_BYTES)
        return;
    buf_t m = BUF_INIT;
    if (line > 0)
        buf_printf(&m, "%s:%d: %s", file, line, kind);
    else
        buf_printf(&m, "%s: %s", file, kind);
    buf_vprintf(&m, fmt, ap);
    buf_putc(&m, '\n');
    if (!has_line(b, m.data, m.len))
        buf_append(b, m.data, m.len);
    if (b->len >= MAX_MSG_BYTES)
        buf_printf(b, "%s: too many messages; the rest are not shown\n", file);
    buf_free(&m);
}

void cf_vmsg(buf_t *b, const char *file, int line, const char *fmt, va_list ap)
{
    vmsg(b, file, line, "", fmt, ap);
}

void cf_msg(buf_t *b, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(b, file, line, "", fmt, ap);
    va_end(ap);
}

void cf_warn(buf_t *b, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(b, file, line, "warning: ", fmt, ap);
    va_end(ap);
}

const char *cf_quote(buf_t *q, const char *s)
{
    enum { MAXQ = 80 };
    buf_reset(q);
    size_t i = 0;
    for (; s[i] && i < MAXQ; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            buf_printf(q, "\\x%02x", c);
        else
            buf_putc(q, (char)c);
    }
    if (s[i])
        buf_puts(q, "...");
    return buf_cstr(q);
}
