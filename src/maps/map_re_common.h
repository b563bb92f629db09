/*
 * map_re_common: the half of regexp: and pcre: tables that does not
 * depend on the pattern dialect (regexp_table(5), pcre_table(5)).
 *
 * It reads the file into logical lines, parses rules ("/pat/flags result",
 * "!/pat/ result", "/p1/!/p2/ result" where the dialect allows it,
 * "if /pat/" ... "endif"), checks every result's $n references, and runs
 * lookups: first match in file order wins, if-blocks whose condition fails
 * are skipped whole.  The dialect (map_regexp.c, map_pcre.c) supplies an
 * engine: compile one pattern, match one key, report capture offsets.
 *
 * Unlike Postfix, which warns and skips a bad line, opening fails on any
 * malformed line, with every problem reported as "file:line: message".
 */
#ifndef MOAT_MAPS_MAP_RE_COMMON_H
#define MOAT_MAPS_MAP_RE_COMMON_H

#include <stdbool.h>
#include <stddef.h>

#include "maps/map-private.h"

typedef struct re_engine {
    const char *type;       /* "regexp" or "pcre", for messages */
    const char *flag_chars; /* the flag letters the dialect knows */
    bool second_pattern;    /* "/p1/!/p2/ result" is allowed */
    /* Compile a NUL-terminated pattern with the given flag letters (each
     * one of flag_chars; a letter may repeat: each occurrence toggles).
     * want_groups: capture offsets will be asked for.  NULL with a
     * message in why on error; else *ngroups = its capture groups. */
    void *(*compile)(const char *pattern, const char *flags, size_t nflags, bool want_groups,
                     size_t *ngroups, buf_t *why);
    void (*free_pattern)(void *re);
    /* Per-table match state able to hold npairs (>= 1) group offsets,
     * made once at open so that lookups need not allocate. */
    void *(*state_new)(size_t npairs);
    void (*state_free)(void *st);
    /* 1 match, 0 no match, -1 error (reason in why).  npairs > 0 asks
     * for the offsets of groups 0..npairs-1 (read back with group()). */
    int (*match)(void *st, void *re, const char *key, size_t keylen, size_t npairs, buf_t *why);
    /* Offsets of group n of the last match; false if it took no part. */
    bool (*group)(void *st, size_t n, size_t *so, size_t *eo);
} re_engine_t;

/* The map_ops_t open/lookup/close bodies, shared by both table types. */
int re_table_open(map_t *m, const re_engine_t *eng, buf_t *err);
map_status re_table_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin);
void re_table_close(map_t *m);

#endif
