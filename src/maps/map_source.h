/*
 * map_source: the logical-line reader for table source files (postmap(1),
 * texthash, cidr_table(5) syntax), shared by the table types that read
 * text: map_text.c (texthash), map_cidr.c, map_lmdb.c (moat map build).
 *
 * Rules (Postfix's readlline, stricter where Postfix only warns):
 *   - empty and white-space-only lines are ignored, as are lines whose
 *     first non-white-space character is '#'; neither ends a logical line;
 *   - a line starting with white space continues the logical line (its
 *     leading white space is kept, so words stay apart);
 *   - one trailing '\r' per physical line is dropped (CRLF files);
 *   - errors (not warnings as in Postfix): a continuation line with no
 *     line to continue, a NUL byte.
 * Line numbers are those of the first physical line of a logical line.
 * The whole file is read into memory at open: tables are read once per
 * configuration load, never on the hot path.
 */
#ifndef MOAT_MAPS_MAP_SOURCE_H
#define MOAT_MAPS_MAP_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "core/buf.h"

typedef struct map_src {
    const char *path;   /* as given, for messages (not owned) */
    char *text;         /* the whole file, NUL-terminated */
    size_t len, pos;
    int lineno;         /* physical lines consumed */
    int first;          /* first physical line of the current logical line */
    bool orphan;        /* inside a continuation with nothing to continue */
    buf_t line;         /* the current logical line */
    struct stat st;     /* fstat of the file after it was read */
} map_src_t;

/* Read path.  0, or -1 with "path: message\n" appended to err. */
int map_src_open(map_src_t *s, const char *path, buf_t *err);
/* Read from memory instead (fuzzers, tests); text is copied. */
void map_src_open_mem(map_src_t *s, const char *name, const char *text, size_t len);
/* The next logical line into s->line (s->first = its line number):
 * 1, 0 at the end, or -1 with "path:line: message\n" appended to err;
 * after -1 the caller may go on calling to collect further errors. */
int map_src_next(map_src_t *s, buf_t *err);
void map_src_close(map_src_t *s);

/* Split a postmap-style logical line in place: the key runs to the first
 * white space outside double quotes ('\' escapes the next character; the
 * quotes stay part of the key, as in postmap), the value is the rest with
 * surrounding white space removed.  NULL, or why the line is malformed. */
const char *map_src_split(char *line, char **key, char **value);

static inline bool map_isspace(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

#endif
