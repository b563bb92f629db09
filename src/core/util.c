/*
 * util: see util.h.  Allocation failure aborts through log_panic().
 */
#include "core/util.h"

#include "core/buf.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/time.h>

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        log_panic("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        log_panic("out of memory allocating %zu x %zu bytes", nmemb, size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        log_panic("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = xmalloc(len + 1);
    memcpy(d, s, len);
    d[len] = 0;
    return d;
}

void xfree(void *pp)
{
    void **p = pp;
    if (p && *p) {
        free(*p);
        *p = NULL;
    }
}

void str_lower(char *s)
{
    for (; *s; s++)
        *s = (char)lc((unsigned char)*s);
}

bool str_ieq(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

bool str_nieq(const char *a, const char *b, size_t n)
{
    return strncasecmp(a, b, n) == 0;
}

bool str_istarts(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool str_all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

char *str_trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        memmove(s, s + 1, strlen(s));
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = 0;
    return s;
}

size_t str_copy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (size) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = 0;
    }
    return n;
}

double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long long now_usec(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
}

int mkdir_p(const char *path, unsigned mode)
{
    char *p = xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0)
            continue;
        char c = *s;
        *s = 0;
        struct stat st;
        if (mkdir(p, (mode_t)mode) != 0) {
            if (errno != EEXIST) {
                rc = -1;
                break;
            }
            if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
                errno = ENOTDIR;
                rc = -1;
                break;
            }
        }
        *s = c;
        if (!c)
            break;
    }
    int saved = errno;
    free(p);
    errno = saved;
    return rc;
}

void b64dec_feed(b64dec_t *d, const char *p, size_t n, buf_t *out)
{
    buf_reserve(out, n);
    unsigned char *o = (unsigned char *)out->data + out->len;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = base64_value((unsigned char)p[i]);
        if (v < 0)
            continue;
        d->bits = (d->bits << 6) | (unsigned)v;
        d->nbits += 6;
        if (d->nbits >= 8) {
            d->nbits -= 8;
            o[k++] = (unsigned char)((d->bits >> d->nbits) & 0xff);
            d->bits &= (1u << d->nbits) - 1;
        }
    }
    out->len += k;
    out->data[out->len] = 0;
}
