/*
 * maps: lookup tables behind one interface, named "type:name" as in
 * Postfix (hash:/etc/moat/access, regexp:/etc/moat/header_checks,
 * cidr:..., pcre:..., texthash:..., inline:{...}, static:text).
 *
 * A lookup has four outcomes, kept apart everywhere (STYLE.md rule 8):
 * found, not found, temporary failure (the table cannot be read right
 * now: the caller answers 4xx), configuration error (caught at open).
 * Lookups do no heap allocation on the hot path: the value is written
 * into a caller-owned, reused buf_t.
 *
 * Case folding follows Postfix: indexed and text tables fold keys to
 * lower case (at build and at lookup); regexp/pcre patterns match
 * case-insensitively unless the table says otherwise; cidr keys are
 * addresses.  Thread-safety: a map_t is used by one thread at a time.
 */
#ifndef MOAT_MAPS_MAPS_H
#define MOAT_MAPS_MAPS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef enum {
    MAP_FOUND,
    MAP_NOTFOUND,
    MAP_TEMPFAIL,   /* e.g. the file vanished or is corrupt at run time */
} map_status;

typedef struct map map_t;

/* Where a found value came from, for traces and log lines (`file:line`).
 * file is NULL for tables without lines (static:, inline:). */
typedef struct map_origin {
    const char *file;
    int line;
} map_origin_t;

/* Open "type:name".  A relative file name is taken relative to basedir
 * (config_directory), which may be NULL.  NULL on error with
 * "file:line: message" (or "type:name: message") lines appended to err:
 * an unknown type, an unreadable file, any malformed line. */
map_t *map_open(const char *spec, const char *basedir, buf_t *err);
void map_close(map_t **m);

/* The spec as given ("regexp:/etc/moat/x"), for messages. */
const char *map_name(const map_t *m);

/* Look up key.  On MAP_FOUND the value is in *value (reset first) and,
 * if origin is not NULL, where it came from.  On MAP_TEMPFAIL the reason
 * is in *value. */
map_status map_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin);

/* Has the table's file changed on disk since it was opened (mtime, size,
 * inode)?  The owner reopens it (and keeps the old one on error). */
bool map_changed(const map_t *m);

/* `moat map build FILE`: read "key value" lines from FILE (postmap(1)
 * syntax: # comments, continuation lines starting with white space, the
 * first white space separates key and value, keys folded to lower case)
 * and write FILE.lmdb atomically (temporary file + rename).  -1 with
 * "file:line: message" in err.  Warnings ("file:line: warning: ...", e.g.
 * a duplicate key, of which the first wins) are appended to err on success
 * too. */
int map_build(const char *file, buf_t *err);

/* The table types moat knows, for docs and `moat map` help. */
extern const char *const map_types[];

#endif
