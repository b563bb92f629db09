/*
 * map-private: the table-type vtable.  Each type lives in its own file
 * (map_text.c, map_cidr.c, map_lmdb.c, map_regexp.c, map_pcre.c) and
 * registers a map_ops_t in maps.c's type table.
 */
#ifndef MOAT_MAPS_MAP_PRIVATE_H
#define MOAT_MAPS_MAP_PRIVATE_H

#include <sys/stat.h>

#include "maps/maps.h"

typedef struct map_ops {
    const char *type;
    bool has_file;   /* name is a file path (made absolute against basedir) */
    /* Parse/open; m->name (and m->path when has_file) are set.  On error
     * append "file:line: message\n" lines to err and return -1. */
    int (*open)(map_t *m, buf_t *err);
    map_status (*lookup)(map_t *m, const char *key, buf_t *value, map_origin_t *origin);
    void (*close)(map_t *m);
} map_ops_t;

struct map {
    const map_ops_t *ops;
    char *spec;     /* "type:name" as given */
    char *name;     /* the part after "type:" */
    char *path;     /* absolute file path (has_file types), else NULL */
    struct stat st; /* of path at open, for map_changed */
    void *impl;     /* the type's own state */
};

extern const map_ops_t map_ops_texthash, map_ops_inline, map_ops_static, map_ops_cidr,
    map_ops_lmdb, map_ops_hash, map_ops_btree, map_ops_regexp, map_ops_pcre;

/* Fold ASCII upper case to lower case into out (reset first). */
void map_fold_key(const char *key, buf_t *out);

#endif
