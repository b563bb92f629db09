/*
 * util: allocation that never returns NULL, and small string helpers.
 *
 * Allocation failure is not a condition moat tries to survive: x*alloc
 * log a panic and abort.  Everything here is safe to call from any thread.
 */
#ifndef MOAT_CORE_UTIL_H
#define MOAT_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* free(*p) and set *p = NULL; accepts NULL and *p == NULL. */
void xfree(void *pp);

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ASCII-only case folding (locale independent). */
static inline int lc(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
/* The value of a hex digit of either case; -1 when c is not one. */
static inline int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}
/* The value of an RFC 4648 base64 character; -1 for anything else ('='
 * included). */
static inline int base64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}
/* A base64 decoder that runs across calls (a body split into lines).
 * Characters outside the alphabet (line ends, '=', junk) are skipped, as
 * mail readers do.  Start from a zeroed b64dec_t. */
typedef struct b64dec {
    unsigned bits;
    int nbits;
} b64dec_t;
struct buf;
/* Decode n characters; the bytes are appended to out. */
void b64dec_feed(b64dec_t *d, const char *p, size_t n, struct buf *out);
/* FNV-1a over a string, continuing from h (start with HASH_INIT, mixing
 * in anything else first); the _lc form folds ASCII case.  For the hash
 * tables of the resolver, its cache and the queue manager. */
#define HASH_INIT 2166136261u
static inline unsigned hash_str(unsigned h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}
static inline unsigned hash_str_lc(unsigned h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)lc((unsigned char)*s)) * 16777619u;
    return h;
}
void str_lower(char *s);
bool str_ieq(const char *a, const char *b);
bool str_nieq(const char *a, const char *b, size_t n);
/* Does s start with prefix, ignoring ASCII case? */
bool str_istarts(const char *s, const char *prefix);
/* Non-empty and only ASCII digits? */
bool str_all_digits(const char *s);
/* Trim ASCII white space in place at both ends; returns s. */
char *str_trim(char *s);
/* Copy with truncation; always NUL-terminates when size > 0. Returns strlen(src). */
size_t str_copy(char *dst, const char *src, size_t size);

/* mkdir -p: create path and any missing parents (mode for each).  0, or -1
 * with errno (ENOTDIR when a component exists and is not a directory). */
int mkdir_p(const char *path, unsigned mode);

/* Monotonic clock in seconds (double) and wall clock in microseconds. */
double now_mono(void);
long long now_usec(void);

#endif
