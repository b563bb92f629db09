/*
 * map_lmdb: compiled tables — lmdb:FILE, and hash:FILE and btree:FILE,
 * which are the very same thing: moat has no Berkeley DB, so the
 * Postfix names everyone's main.cf uses map to one LMDB file, FILE.lmdb,
 * built from the postmap(1)-syntax source FILE by `moat map build FILE`
 * (map_build below).
 *
 * File format (docs/tables.md): one LMDB environment in a single file
 * (MDB_NOSUBDIR), the unnamed database holding
 *   folded key            -> "<source line>\t<value>"
 *   "\0moat-map" (marker) -> "1"   (format version; no source key has NUL)
 *
 * Publication is by rename only: a build writes FILE.lmdb.tmp.PID and
 * renames it over FILE.lmdb, so no process ever writes a file that a
 * reader has mapped.  That is why readers open with MDB_NOLOCK: there is
 * never a writer to coordinate with (and so no FILE.lmdb-lock file and no
 * need for write access to the directory).  A reader keeps the old inode
 * until its owner sees map_changed() (m->path is FILE.lmdb) and reopens.
 *
 * Someone writing FILE.lmdb in place (cp, a truncating editor) would pull
 * pages from under the mapping — SIGBUS or garbage.  Lookups therefore
 * fstat the open file and answer MAP_TEMPFAIL once its size or mtime has
 * moved; open checks the size against LMDB's last page.
 *
 * map_build appends warnings (duplicate keys: the first wins, as with
 * postmap; "key:" records) to err as "file:line: warning: ..." lines,
 * after any errors, whether or not it succeeds.
 *
 * Owns per map: the environment, one read transaction kept reset between
 * lookups (mdb_txn_renew/reset: no allocation per lookup) and a key
 * scratch buffer.  Must never write to a published FILE.lmdb.
 */
#include "maps/map-private.h"
#include "maps/map_source.h"

#include "core/fileio.h"
#include "core/util.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char marker_key[] = "\0moat-map";   /* sizeof - 1 bytes, leading NUL */
static const char marker_val[] = "1";

typedef struct lmdb_map {
    MDB_env *env;
    MDB_txn *txn;   /* read-only, reset while idle */
    MDB_dbi dbi;
    int fd;
    char *src;      /* FILE, the source, for origins */
    buf_t key;      /* folded key scratch */
    size_t maxkey;
} lmdb_map_t;

static void lmdb_free(lmdb_map_t *l)
{
    if (l->txn)
        mdb_txn_abort(l->txn);
    if (l->env)
        mdb_env_close(l->env);
    free(l->src);
    buf_free(&l->key);
    free(l);
}

static int lmdb_open(map_t *m, buf_t *err)
{
    lmdb_map_t *l = xcalloc(1, sizeof *l);
    l->src = m->path;
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s.lmdb", l->src);
    m->path = buf_steal(&p);   /* what map_changed() watches */

    int rc;
    struct stat st;
    if (stat(m->path, &st) != 0) {
        if (errno == ENOENT)
            buf_printf(err, "%s: no such file: run `moat map build %s`\n", m->path, l->src);
        else
            buf_printf(err, "%s: %s\n", m->path, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&l->env)) != 0) {
        buf_printf(err, "%s: %s\n", m->path, mdb_strerror(rc));
        goto fail;
    }
    rc = mdb_env_open(l->env, m->path, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK, 0);
    if (rc != 0) {
        buf_printf(err, "%s: cannot open: %s (rebuild it with `moat map build %s`)\n", m->path,
                   mdb_strerror(rc), l->src);
        goto fail;
    }
    /* The inode actually opened (it may have been renamed over since stat). */
    if (mdb_env_get_fd(l->env, &l->fd) != 0 || fstat(l->fd, &m->st) != 0) {
        buf_printf(err, "%s: cannot stat the open file\n", m->path);
        goto fail;
    }
    MDB_envinfo info;
    MDB_stat ms;
    mdb_env_info(l->env, &info);
    mdb_env_stat(l->env, &ms);
    long long need = ((long long)info.me_last_pgno + 1) * ms.ms_psize;
    if ((long long)m->st.st_size < need) {
        buf_printf(err, "%s: truncated (%lld bytes, LMDB needs %lld): rebuild it with `moat map build %s`\n",
                   m->path, (long long)m->st.st_size, need, l->src);
        goto fail;
    }
    if ((rc = mdb_txn_begin(l->env, NULL, MDB_RDONLY, &l->txn)) != 0 ||
        (rc = mdb_dbi_open(l->txn, NULL, 0, &l->dbi)) != 0) {
        buf_printf(err, "%s: %s\n", m->path, mdb_strerror(rc));
        goto fail;
    }
    MDB_val k = {sizeof marker_key - 1, (void *)marker_key}, v;
    rc = mdb_get(l->txn, l->dbi, &k, &v);
    if (rc != 0 || v.mv_size != 1 || memcmp(v.mv_data, marker_val, 1) != 0) {
        buf_printf(err, "%s: not a table built by `moat map build` (or a newer format): rebuild it\n",
                   m->path);
        goto fail;
    }
    mdb_txn_reset(l->txn);
    l->maxkey = (size_t)mdb_env_get_maxkeysize(l->env);
    m->impl = l;
    return 0;
fail:
    lmdb_free(l);
    return -1;
}

static map_status lmdb_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin)
{
    lmdb_map_t *l = m->impl;
    struct stat st;
    if (fstat(l->fd, &st) != 0) {
        buf_printf(value, "%s: fstat: %s", m->path, strerror(errno));
        return MAP_TEMPFAIL;
    }
    if (st.st_size != m->st.st_size || st.st_mtim.tv_sec != m->st.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != m->st.st_mtim.tv_nsec) {
        buf_printf(value, "%s: changed in place since it was opened (rebuild it with `moat map build`, "
                          "which replaces it atomically)", m->path);
        return MAP_TEMPFAIL;
    }
    map_fold_key(key, &l->key);
    if (l->key.len == 0 || l->key.len > l->maxkey)
        return MAP_NOTFOUND;   /* no such key can have been stored */
    int rc = mdb_txn_renew(l->txn);
    if (rc != 0) {
        buf_printf(value, "%s: %s", m->path, mdb_strerror(rc));
        return MAP_TEMPFAIL;
    }
    MDB_val k = {l->key.len, l->key.data}, v;
    rc = mdb_get(l->txn, l->dbi, &k, &v);
    map_status res = MAP_FOUND;
    if (rc == MDB_NOTFOUND) {
        res = MAP_NOTFOUND;
    } else if (rc != 0) {
        buf_printf(value, "%s: %s", m->path, mdb_strerror(rc));
        res = MAP_TEMPFAIL;
    } else {
        /* "<line>\t<value>" */
        const char *d = v.mv_data;
        size_t i = 0;
        long line = 0;
        while (i < v.mv_size && i < 10 && d[i] >= '0' && d[i] <= '9')
            line = line * 10 + (d[i++] - '0');
        if (i == 0 || i >= v.mv_size || d[i] != '\t') {
            buf_printf(value, "%s: corrupt record for key \"%s\": rebuild the table", m->path,
                       buf_cstr(&l->key));
            res = MAP_TEMPFAIL;
        } else {
            buf_append(value, d + i + 1, v.mv_size - i - 1);
            if (origin) {
                origin->file = l->src;
                origin->line = (int)line;
            }
        }
    }
    mdb_txn_reset(l->txn);
    return res;
}

static void lmdb_close(map_t *m)
{
    lmdb_free(m->impl);
    m->impl = NULL;
}

const map_ops_t map_ops_lmdb = {"lmdb", true, lmdb_open, lmdb_lookup, lmdb_close};
const map_ops_t map_ops_hash = {"hash", true, lmdb_open, lmdb_lookup, lmdb_close};
const map_ops_t map_ops_btree = {"btree", true, lmdb_open, lmdb_lookup, lmdb_close};

/* ---------- moat map build ---------- */

typedef struct rec {
    const char *key, *val;   /* into the source text (folded key in place) */
    size_t klen;
    int line;
} rec_t;

typedef struct recoff {
    size_t key, val, klen;
    int line;
} recoff_t;

static int rec_cmp(const void *a, const void *b)
{
    const rec_t *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);   /* the first line first */
}

/* One attempt at writing recs into a fresh tmp; MDB_MAP_FULL asks for a
 * bigger map and another attempt. */
static int write_lmdb(const char *tmp, const rec_t *recs, size_t n, size_t mapsize, mode_t mode,
                      buf_t *err)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    buf_t val = BUF_INIT;
    int rc;
    unlink(tmp);
    if ((rc = mdb_env_create(&env)) != 0 || (rc = mdb_env_set_mapsize(env, mapsize)) != 0 ||
        (rc = mdb_env_open(env, tmp, MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOSYNC, mode)) != 0)
        goto out;
    int fd;
    if (mdb_env_get_fd(env, &fd) == 0)
        (void)fchmod(fd, mode);   /* the source's read permissions, umask aside */
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0 || (rc = mdb_dbi_open(txn, NULL, 0, &dbi)) != 0)
        goto out;
    MDB_val k = {sizeof marker_key - 1, (void *)marker_key}, v = {1, (void *)marker_val};
    if ((rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND)) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (i && recs[i].klen == recs[i - 1].klen && memcmp(recs[i].key, recs[i - 1].key, recs[i].klen) == 0)
            continue;   /* a duplicate: the first one (by line) was written */
        buf_reset(&val);
        buf_printf(&val, "%d\t%s", recs[i].line, recs[i].val);
        MDB_val rk = {recs[i].klen, (void *)recs[i].key}, rv = {val.len, val.data};
        if ((rc = mdb_put(txn, dbi, &rk, &rv, MDB_APPEND)) != 0)
            goto out;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc == 0)
        rc = mdb_env_sync(env, 1);
out:
    if (txn)
        mdb_txn_abort(txn);
    if (env)
        mdb_env_close(env);
    buf_free(&val);
    if (rc != 0) {
        unlink(tmp);
        if (rc != MDB_MAP_FULL)
            buf_printf(err, "%s: %s\n", tmp, mdb_strerror(rc));
    }
    return rc;
}

int map_build(const char *file, buf_t *err)
{
    map_src_t src;
    if (map_src_open(&src, file, err) != 0)
        return -1;
    rec_t *recs = NULL;
    size_t n = 0, cap = 0, bytes = 0;
    int r, bad = 0;
    const size_t maxkey = 511;   /* LMDB's default MDB_MAXKEYSIZE; checked again below */
    /* Warnings go to err after the errors, and on success too. */
    buf_t warn = BUF_INIT;
    /* Records go into one arena, by offset while it grows. */
    buf_t arena = BUF_INIT;
    recoff_t *offs = NULL;
    while ((r = map_src_next(&src, err)) != 0) {
        if (r < 0) {
            bad++;
            continue;
        }
        char *key, *val;
        const char *why = map_src_split(src.line.data, &key, &val);
        if (why) {
            buf_printf(err, "%s:%d: %s\n", file, src.first, why);
            bad++;
            continue;
        }
        size_t kl = strlen(key);
        if (kl > maxkey) {
            buf_printf(err, "%s:%d: key longer than %zu bytes (the LMDB limit)\n", file, src.first, maxkey);
            bad++;
            continue;
        }
        if (key[kl - 1] == ':')
            buf_printf(&warn, "%s:%d: warning: record is in \"key: value\" format; is this an alias file?\n",
                       file, src.first);
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            offs = xrealloc(offs, cap * sizeof *offs);
        }
        str_lower(key);
        offs[n].key = arena.len;
        offs[n].klen = kl;
        buf_append(&arena, key, kl + 1);
        offs[n].val = arena.len;
        buf_puts(&arena, val);
        buf_putc(&arena, 0);
        offs[n].line = src.first;
        bytes += kl + strlen(val) + 16;
        n++;
    }
    struct stat sst = src.st;
    map_src_close(&src);
    if (bad) {
        free(offs);
        buf_free(&arena);
        buf_append(err, warn.data, warn.len);
        buf_free(&warn);
        return -1;
    }
    recs = xcalloc(n ? n : 1, sizeof *recs);
    for (size_t i = 0; i < n; i++) {
        recs[i].key = arena.data + offs[i].key;
        recs[i].klen = offs[i].klen;
        recs[i].val = arena.data + offs[i].val;
        recs[i].line = offs[i].line;
    }
    free(offs);
    qsort(recs, n, sizeof *recs, rec_cmp);
    for (size_t i = 1; i < n; i++)
        if (recs[i].klen == recs[i - 1].klen && memcmp(recs[i].key, recs[i - 1].key, recs[i].klen) == 0) {
            /* Postfix's postmap warns and keeps the first: so do we. */
            size_t f = i - 1;
            while (f && recs[f - 1].klen == recs[i].klen && memcmp(recs[f - 1].key, recs[i].key, recs[i].klen) == 0)
                f--;
            buf_printf(&warn, "%s:%d: warning: duplicate entry \"%s\": the first one (line %d) is used\n",
                       file, recs[i].line, recs[i].key, recs[f].line);
        }

    buf_t lpath = BUF_INIT, tmp = BUF_INIT;
    buf_printf(&lpath, "%s.lmdb", file);
    buf_printf(&tmp, "%s.tmp.%ld", buf_cstr(&lpath), (long)getpid());
    mode_t mode = (sst.st_mode & 0644) | 0600;
    /* LMDB pages carry per-node overhead; double the payload, and retry
     * with a bigger map if even that is too small. */
    size_t mapsize = ((bytes * 2 + (1u << 20)) | 0xffff) + 1;
    int rc = -1;
    for (int attempt = 0; attempt < 8; attempt++, mapsize *= 2) {
        rc = write_lmdb(tmp.data, recs, n, mapsize, mode, err);
        if (rc != MDB_MAP_FULL)
            break;
    }
    if (rc == MDB_MAP_FULL)
        buf_printf(err, "%s: %s\n", tmp.data, mdb_strerror(rc));
    int ret = -1;
    if (rc == 0) {
        if (rename(tmp.data, lpath.data) != 0) {
            buf_printf(err, "%s: rename to %s: %s\n", tmp.data, lpath.data, strerror(errno));
            unlink(tmp.data);
        } else {
            /* The rename itself must survive a crash too. */
            char *dir = xstrdup(lpath.data);
            char *slash = strrchr(dir, '/');
            if (slash)
                slash[slash == dir] = 0;   /* "/x.lmdb" lives in "/" */
            (void)fsync_dir(slash ? dir : ".");
            free(dir);
            ret = 0;
        }
    }
    buf_append(err, warn.data, warn.len);
    buf_free(&warn);
    free(recs);
    buf_free(&arena);
    buf_free(&lpath);
    buf_free(&tmp);
    return ret;
}
