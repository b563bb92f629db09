/*
 * maps: the type-independent half of the lookup-table interface (see
 * maps.h): parse "type:name", resolve the file, dispatch to the type's
 * vtable, and notice changed files.
 */
#include "maps/map-private.h"

#include "core/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const map_ops_t *const types[] = {
    &map_ops_hash, &map_ops_btree, &map_ops_lmdb, &map_ops_texthash, &map_ops_regexp,
    &map_ops_pcre, &map_ops_cidr, &map_ops_inline, &map_ops_static,
};

const char *const map_types[] = {"hash", "btree", "lmdb", "texthash", "regexp",
                                 "pcre", "cidr", "inline", "static", NULL};

void map_fold_key(const char *key, buf_t *out)
{
    size_t n = strlen(key);
    buf_reset(out);
    buf_reserve(out, n);
    for (size_t i = 0; i < n; i++)
        out->data[i] = (char)lc((unsigned char)key[i]);
    out->len = n;
    out->data[n] = 0;
}

map_t *map_open(const char *spec, const char *basedir, buf_t *err)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec) {
        buf_printf(err, "%s: not a table (expected type:name)\n", spec);
        return NULL;
    }
    size_t tl = (size_t)(colon - spec);
    const map_ops_t *ops = NULL;
    for (size_t i = 0; i < ARRAY_LEN(types); i++)
        if (strlen(types[i]->type) == tl && str_nieq(types[i]->type, spec, tl))
            ops = types[i];
    if (!ops) {
        buf_printf(err, "%s: unsupported table type \"%.*s\" (moat knows: hash, btree, lmdb, "
                        "texthash, regexp, pcre, cidr, inline, static)\n",
                   spec, (int)tl, spec);
        return NULL;
    }
    map_t *m = xcalloc(1, sizeof *m);
    m->ops = ops;
    m->spec = xstrdup(spec);
    m->name = xstrdup(colon + 1);
    if (ops->has_file) {
        if (!*m->name) {
            buf_printf(err, "%s: missing file name\n", spec);
            map_close(&m);
            return NULL;
        }
        buf_t p = BUF_INIT;
        if (m->name[0] != '/' && basedir && *basedir)
            buf_printf(&p, "%s/%s", basedir, m->name);
        else
            buf_puts(&p, m->name);
        m->path = buf_steal(&p);
    }
    if (ops->open(m, err) != 0) {
        map_close(&m);
        return NULL;
    }
    return m;
}

void map_close(map_t **pm)
{
    map_t *m = *pm;
    if (!m)
        return;
    if (m->impl && m->ops->close)
        m->ops->close(m);
    free(m->spec);
    free(m->name);
    free(m->path);
    free(m);
    *pm = NULL;
}

const char *map_name(const map_t *m)
{
    return m->spec;
}

map_status map_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin)
{
    buf_reset(value);
    if (origin) {
        origin->file = NULL;
        origin->line = 0;
    }
    return m->ops->lookup(m, key, value, origin);
}

bool map_changed(const map_t *m)
{
    if (!m->path || !m->st.st_ino)
        return false;
    struct stat st;
    if (stat(m->path, &st) != 0)
        return true;
    return st.st_ino != m->st.st_ino || st.st_size != m->st.st_size ||
           st.st_mtim.tv_sec != m->st.st_mtim.tv_sec || st.st_mtim.tv_nsec != m->st.st_mtim.tv_nsec;
}
