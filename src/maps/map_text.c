/*
 * map_text: the table types whose contents live in memory —
 *   texthash:FILE        a postmap(1) source file read at open into a hash
 *   inline:{k=v, {k = text with spaces}}   the table is its own name
 *   static:TEXT, static:{ text }           every lookup finds TEXT
 *
 * Owns one immutable key/value store per map (kv_t: a string pool plus an
 * open-addressing index), built at open.  Lookups hash and compare the
 * caller's key with ASCII case folding on the fly, so they never allocate
 * and never write anywhere but the caller's value buffer.
 *
 * Postfix semantics (dict_thash, dict_inline, dict_static), with moat's
 * stricter errors (docs/compatibility.md): a malformed line is an error
 * naming file:line, not a skipped line.  Duplicate texthash keys keep the
 * first value and log a warning, as Postfix does; duplicate inline keys
 * are an error (Postfix silently keeps the last one).
 */
#include "maps/map-private.h"
#include "maps/map_source.h"

#include "core/log.h"
#include "core/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------- kv_t: immutable hash of folded keys ---------- */

typedef struct kv_ent {
    size_t key, val;   /* offsets into pool: offsets survive pool growth */
    uint64_t hash;
    int line;
} kv_ent_t;

typedef struct kv {
    buf_t pool;        /* "key\0value\0" ... */
    kv_ent_t *ents;
    size_t n, cap;
    uint32_t *index;   /* entry number + 1; 0 = empty slot */
    size_t mask;
} kv_t;

static uint64_t hash_folded(const char *s)
{
    uint64_t h = 14695981039346656037ULL;   /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)lc((unsigned char)*s);
        h *= 1099511628211ULL;
    }
    return h;
}

/* The key is folded here, once, so lookups compare against lower case. */
static void kv_add(kv_t *kv, const char *key, const char *val, int line)
{
    if (kv->n == kv->cap) {
        kv->cap = kv->cap ? kv->cap * 2 : 16;
        kv->ents = xrealloc(kv->ents, kv->cap * sizeof *kv->ents);
    }
    kv_ent_t *e = &kv->ents[kv->n++];
    e->key = kv->pool.len;
    for (const char *p = key; *p; p++)
        buf_putc(&kv->pool, (char)lc((unsigned char)*p));
    buf_putc(&kv->pool, 0);
    e->val = kv->pool.len;
    buf_puts(&kv->pool, val);
    buf_putc(&kv->pool, 0);
    e->hash = hash_folded(key);
    e->line = line;
}

static const kv_ent_t *kv_find(const kv_t *kv, const char *key)
{
    if (!kv->index)
        return NULL;
    uint64_t h = hash_folded(key);
    for (size_t i = h & kv->mask;; i = (i + 1) & kv->mask) {
        uint32_t slot = kv->index[i];
        if (!slot)
            return NULL;
        const kv_ent_t *e = &kv->ents[slot - 1];
        if (e->hash != h)
            continue;
        const char *a = kv->pool.data + e->key, *b = key;
        while (*a && (unsigned char)*a == lc((unsigned char)*b))
            a++, b++;
        if (!*a && !*b)
            return e;
    }
}

/* Index the entries in order.  A later duplicate of a key is reported
 * through dup(ctx, first, later) and left out of the index, so the first
 * one wins.  Returns the number of duplicates. */
static size_t kv_index(kv_t *kv, void (*dup)(void *, const kv_ent_t *, const kv_ent_t *),
                       void *ctx)
{
    size_t size = 16, dups = 0;
    while (size < kv->n * 2)
        size *= 2;
    kv->index = xcalloc(size, sizeof *kv->index);
    kv->mask = size - 1;
    for (size_t k = 0; k < kv->n; k++) {
        const kv_ent_t *e = &kv->ents[k];
        const kv_ent_t *old = kv_find(kv, kv->pool.data + e->key);
        if (old) {
            dups++;
            dup(ctx, old, e);
            continue;
        }
        size_t i = e->hash & kv->mask;
        while (kv->index[i])
            i = (i + 1) & kv->mask;
        kv->index[i] = (uint32_t)(k + 1);
    }
    return dups;
}

static void kv_free(kv_t *kv)
{
    buf_free(&kv->pool);
    free(kv->ents);
    free(kv->index);
    free(kv);
}

static map_status kv_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin)
{
    const kv_t *kv = m->impl;
    const kv_ent_t *e = kv_find(kv, key);
    if (!e)
        return MAP_NOTFOUND;
    buf_puts(value, kv->pool.data + e->val);
    if (origin) {
        origin->file = e->line ? m->path : NULL;
        origin->line = e->line;
    }
    return MAP_FOUND;
}

static void kv_close(map_t *m)
{
    kv_free(m->impl);
    m->impl = NULL;
}

/* ---------- texthash ---------- */

static void texthash_dup(void *ctx, const kv_ent_t *first, const kv_ent_t *later)
{
    const map_t *m = ctx;
    const kv_t *kv = m->impl;
    log_warn("maps", "%s:%d: duplicate entry \"%s\": the first one (line %d) is used", m->path,
             later->line, kv->pool.data + later->key, first->line);
}

static int texthash_open(map_t *m, buf_t *err)
{
    map_src_t src;
    if (map_src_open(&src, m->path, err) != 0)
        return -1;
    kv_t *kv = xcalloc(1, sizeof *kv);
    int r, bad = 0;
    while ((r = map_src_next(&src, err)) != 0) {
        if (r < 0) {
            bad++;
            continue;
        }
        char *key, *val;
        const char *why = map_src_split(src.line.data, &key, &val);
        if (why) {
            buf_printf(err, "%s:%d: %s\n", m->path, src.first, why);
            bad++;
            continue;
        }
        if (key[strlen(key) - 1] == ':')
            log_warn("maps", "%s:%d: record is in \"key: value\" format; is this an alias file?",
                     m->path, src.first);
        kv_add(kv, key, val, src.first);
    }
    m->st = src.st;
    map_src_close(&src);
    if (bad) {
        kv_free(kv);
        return -1;
    }
    m->impl = kv;
    kv_index(kv, texthash_dup, m);
    return 0;
}

/* ---------- inline ---------- */

static bool is_sep(int c)
{
    return c == ',' || map_isspace(c);
}

/* Trim white space at both ends of [*s, *e). */
static void trim_span(const char **s, const char **e)
{
    while (*s < *e && map_isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && map_isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

/* Parse inline:{...}: items separated by commas or white space; an item in
 * braces keeps its white space; each item is key=value, split at the
 * first '=' with white space around both trimmed. */
static const char *inline_parse(kv_t *kv, const char *name, buf_t *scratch)
{
    size_t len = strlen(name);
    if (len < 2 || name[0] != '{' || name[len - 1] != '}')
        return "bad syntax; need inline:{key=value, ...}";
    const char *p = name + 1, *end = name + len - 1;
    size_t count = 0;
    for (;;) {
        while (p < end && is_sep((unsigned char)*p))
            p++;
        if (p == end)
            break;
        /* One item: up to a separator outside braces. */
        const char *s = p;
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && --depth < 0)
                return "unbalanced '}'";
            else if (depth == 0 && is_sep((unsigned char)*p))
                break;
        }
        if (depth > 0)
            return "unbalanced '{'";
        const char *e = p;
        if (*s == '{') {
            /* The item is one brace group: its braces go, its spaces stay. */
            int d = 0;
            const char *q = s;
            for (; q < e; q++) {
                if (*q == '{')
                    d++;
                else if (*q == '}' && --d == 0)
                    break;
            }
            if (q + 1 != e)
                return "text after '}' in a { key = value } item";
            s++;
            e = q;
        }
        trim_span(&s, &e);
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq)
            return "missing '=' in key=value item";
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim_span(&ks, &ke);
        trim_span(&vs, &ve);
        if (ks == ke)
            return "missing key before '='";
        for (const char *c = ks; c < ke; c++)
            if (*c == 0 || map_isspace((unsigned char)*c))
                return "white space in a key";
        buf_reset(scratch);
        buf_append(scratch, ks, (size_t)(ke - ks));
        buf_putc(scratch, 0);
        size_t voff = scratch->len;
        buf_append(scratch, vs, (size_t)(ve - vs));
        kv_add(kv, scratch->data, scratch->data + voff, 0);
        count++;
    }
    if (!count)
        return "empty table; need inline:{key=value, ...}";
    return NULL;
}

typedef struct inline_dups {
    const kv_t *kv;
    buf_t *why;
} inline_dups_t;

static void inline_dup(void *ctx, const kv_ent_t *first, const kv_ent_t *later)
{
    inline_dups_t *d = ctx;
    (void)first;
    if (!d->why->len)
        buf_printf(d->why, "duplicate key \"%s\"", d->kv->pool.data + later->key);
}

static int inline_open(map_t *m, buf_t *err)
{
    kv_t *kv = xcalloc(1, sizeof *kv);
    buf_t scratch = BUF_INIT;
    const char *why = inline_parse(kv, m->name, &scratch);
    if (!why) {
        buf_reset(&scratch);
        inline_dups_t d = {kv, &scratch};
        if (kv_index(kv, inline_dup, &d))
            why = buf_cstr(&scratch);
    }
    if (why) {
        buf_printf(err, "%s: %s\n", m->spec, why);
        buf_free(&scratch);
        kv_free(kv);
        return -1;
    }
    buf_free(&scratch);
    m->impl = kv;
    return 0;
}

/* ---------- static ---------- */

static int static_open(map_t *m, buf_t *err)
{
    const char *s = m->name, *e = s + strlen(s);
    if (*s == '{') {
        /* The first brace must close at the very end. */
        int depth = 0;
        const char *q = s;
        for (; q < e; q++) {
            if (*q == '{')
                depth++;
            else if (*q == '}' && --depth == 0)
                break;
        }
        if (q + 1 != e) {
            buf_printf(err, "%s: bad syntax; need static:{ text }\n", m->spec);
            return -1;
        }
        s++, e--;
        trim_span(&s, &e);
    }
    if (s == e) {
        buf_printf(err, "%s: missing value; need static:TEXT or static:{ text }\n", m->spec);
        return -1;
    }
    m->impl = xstrndup(s, (size_t)(e - s));
    return 0;
}

static map_status static_lookup(map_t *m, const char *key, buf_t *value, map_origin_t *origin)
{
    (void)key;
    (void)origin;   /* no lines: map_lookup already cleared it */
    buf_puts(value, m->impl);
    return MAP_FOUND;
}

static void static_close(map_t *m)
{
    xfree(&m->impl);
}

const map_ops_t map_ops_texthash = {"texthash", true, texthash_open, kv_lookup, kv_close};
const map_ops_t map_ops_inline = {"inline", false, inline_open, kv_lookup, kv_close};
const map_ops_t map_ops_static = {"static", false, static_open, static_lookup, static_close};
