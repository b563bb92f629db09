/*
 * dns_testlib: the wire-format pieces of the unit tests' in-process DNS
 * servers (test_smtpc_lib.c, test_spf.c): reading the question of a
 * query and writing names and 16-bit fields of an answer.  Header-only
 * (static inline).
 */
#ifndef MOAT_TESTS_DNS_TESTLIB_H
#define MOAT_TESTS_DNS_TESTLIB_H

#include "core/buf.h"
#include "core/util.h"

#include <stdbool.h>
#include <string.h>

static inline void dnst_put16(buf_t *b, unsigned v)
{
    buf_putc(b, (char)(v >> 8));
    buf_putc(b, (char)(v & 0xff));
}

/* "a.example" as wire labels, ending with the root. */
static inline void dnst_put_name(buf_t *b, const char *name)
{
    while (*name) {
        size_t l = strcspn(name, ".");
        buf_putc(b, (char)l);
        buf_append(b, name, l);
        name += l;
        if (*name == '.')
            name++;
    }
    buf_putc(b, 0);
}

/* The question of an n-byte query: its name in lower case, its type, and
 * where the question ends.  false for a query too short or a name that
 * does not fit (no compression in questions). */
static inline bool dnst_question(const unsigned char *q, size_t n, char *name, size_t size, unsigned *qtype,
                                 size_t *qend)
{
    if (n < 17)
        return false;
    size_t pos = 12, k = 0;
    while (pos < n && q[pos]) {
        size_t l = q[pos++];
        if (pos + l > n || k + l + 1 >= size)
            return false;
        if (k)
            name[k++] = '.';
        for (size_t i = 0; i < l; i++)
            name[k++] = (char)lc(q[pos + i]);
        pos += l;
    }
    name[k] = 0;
    pos++;
    if (pos + 4 > n)
        return false;
    *qtype = (unsigned)(q[pos] << 8 | q[pos + 1]);
    *qend = pos + 4;
    return true;
}

#endif
