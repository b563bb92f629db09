/*
 * buf: the one growable byte buffer.
 *
 * Invariants: len < cap whenever data != NULL, and data[len] == 0, so the
 * contents can always be used as a C string (they may also hold NUL bytes;
 * len is the truth).  A zeroed buf_t is a valid empty buffer; buf_cstr()
 * returns "" for it.  Formatting is always bounded.
 */
#ifndef MOAT_CORE_BUF_H
#define MOAT_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

#define BUF_INIT {NULL, 0, 0}

void buf_free(buf_t *b);
void buf_reset(buf_t *b);                 /* len = 0, keeps memory */
void buf_reserve(buf_t *b, size_t extra); /* room for extra more bytes + NUL */
void buf_append(buf_t *b, const void *p, size_t n);
void buf_putc(buf_t *b, char c);
void buf_puts(buf_t *b, const char *s);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(buf_t *b, const char *fmt, va_list ap);
void buf_consume(buf_t *b, size_t n);     /* drop n bytes from the front */
void buf_truncate(buf_t *b, size_t len);
static inline const char *buf_cstr(const buf_t *b) { return b->data ? b->data : ""; }
/* Hand the contents to the caller (malloc'd, NUL-terminated); b becomes empty. */
char *buf_steal(buf_t *b);

#endif
