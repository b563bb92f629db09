/*
 * domlist: see domlist.h.  Items keep their order: each is one entry (a
 * name or a table); files are read once at compile time (listfile) and
 * their words spliced in where the file was named, as Postfix's match_list
 * does.
 *
 * Owns its tables and the names of the files it read.  Never: answer "no
 * match" for a table that failed (DL_ERROR instead: relay_domains deciding
 * wrongly either way is worse than a 4xx), or allocate per match (the
 * domain is folded into a stack buffer).
 */
#include "policy/domlist.h"

#include "core/util.h"
#include "maps/maps.h"
#include "policy/listfile.h"

#include <stdlib.h>
#include <string.h>

#define DOMAIN_MAX 512   /* longer than any domain (253): such input matches nothing */

typedef struct entry {
    bool negate;
    char *name;          /* lower case, trailing dot removed; NULL for a table */
    map_t *map;
    bool fixed;          /* a table that may be asked for parent domains */
    char *text;          /* the item as written */
} entry_t;

struct domlist {
    entry_t *e;
    size_t n;
    dl_style style;
    listfiles_t files;   /* the /file/name items it read */
    buf_t value;         /* lookup scratch */
};

typedef struct dctx {
    domlist_t *dl;
    const char *name;
    const char *config_dir;
    buf_t *err;
} dctx_t;

/* "type:name" with a type of letters and digits (a domain has no ':'). */
static bool is_table(const char *item)
{
    size_t tl = strspn(item, "abcdefghijklmnopqrstuvwxyz0123456789_");
    return tl > 0 && item[tl] == ':';
}

/* Pattern tables see the whole domain, never its parents (Postfix's
 * DICT_FLAG_FIXED): a regexp would otherwise match "com". */
static bool is_fixed_table(const char *spec)
{
    return !str_istarts(spec, "regexp:") && !str_istarts(spec, "pcre:") && !str_istarts(spec, "cidr:");
}

/* Lower case, one trailing dot dropped ("foo." but not "foo.."). */
static size_t fold(const char *in, char *out, size_t size)
{
    size_t n = strlen(in);
    if (n >= size)
        return 0;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)lc((unsigned char)in[i]);
    out[n] = 0;
    if (n > 1 && out[n - 1] == '.' && out[n - 2] != '.')
        out[--n] = 0;
    return n;
}

/* One item of the list (listfile_walk has read the files and the '!'s). */
static bool add_item(void *ctx, const char *item, bool negate, const char *written)
{
    dctx_t *d = ctx;
    domlist_t *dl = d->dl;
    entry_t e = {.negate = negate};
    if (is_table(item)) {
        e.map = listfile_open_table(d->name, item, d->config_dir, d->err);
        if (!e.map)
            return false;
        e.fixed = is_fixed_table(item);
    } else {
        char folded[DOMAIN_MAX];
        if (!fold(item, folded, sizeof folded)) {
            buf_printf(d->err, "%s: \"%.80s...\": not a domain name\n", d->name, item);
            return false;
        }
        e.name = xstrdup(folded);
    }
    e.text = xstrdup(written);
    dl->e = xrealloc(dl->e, (dl->n + 1) * sizeof *dl->e);
    dl->e[dl->n++] = e;
    return true;
}

domlist_t *domlist_new(const char *name, const char *const *items, size_t n, dl_style style, const char *config_dir,
                       buf_t *err)
{
    domlist_t *dl = xcalloc(1, sizeof *dl);
    dl->style = style;
    dctx_t d = {.dl = dl, .name = name, .config_dir = config_dir, .err = err};
    if (listfile_walk(&dl->files, name, items, n, add_item, &d, err))
        domlist_free(&dl);
    return dl;
}

void domlist_free(domlist_t **pdl)
{
    domlist_t *dl = *pdl;
    if (!dl)
        return;
    for (size_t i = 0; i < dl->n; i++) {
        free(dl->e[i].name);
        free(dl->e[i].text);
        map_close(&dl->e[i].map);
    }
    free(dl->e);
    listfiles_free(&dl->files);
    buf_free(&dl->value);
    free(dl);
    *pdl = NULL;
}

/* Postfix's match_hostname for a name item. */
static bool name_matches(const domlist_t *dl, const char *domain, size_t dlen, const char *pattern)
{
    if (strcmp(domain, pattern) == 0)
        return true;
    size_t plen = strlen(pattern);
    if (plen >= dlen)
        return false;
    const char *tail = domain + dlen - plen;
    if (dl->style == DL_PARENT)
        return tail[-1] == '.' && strcmp(tail, pattern) == 0;
    if (dl->style == DL_DOT)
        return pattern[0] == '.' && strcmp(tail, pattern) == 0;
    return false;
}

/* The table, with the domain and then (fixed tables) each parent. */
static map_status table_matches(domlist_t *dl, const entry_t *e, const char *domain, buf_t *why)
{
    for (const char *key = domain; *key;) {
        if (key == domain || e->fixed) {
            map_origin_t origin = {0};
            map_status st = map_lookup(e->map, key, &dl->value, &origin);
            if (st == MAP_FOUND) {
                if (why) {
                    if (origin.file)
                        buf_printf(why, "%s:%d (key %s)", e->text, origin.line, key);
                    else
                        buf_printf(why, "%s (key %s)", e->text, key);
                }
                return MAP_FOUND;
            }
            if (st == MAP_TEMPFAIL) {
                if (why)
                    buf_printf(why, "%s: lookup of %s failed: %s", e->text, key, buf_cstr(&dl->value));
                return MAP_TEMPFAIL;
            }
        }
        const char *next = dl->style == DL_EXACT ? NULL : strchr(key + 1, '.');
        if (!next)
            break;
        key = dl->style == DL_PARENT ? next + 1 : next;
    }
    return MAP_NOTFOUND;
}

dl_result domlist_match(domlist_t *dl, const char *domain, buf_t *why)
{
    if (why)
        buf_reset(why);
    if (!dl || !domain)
        return DL_NOMATCH;
    char d[DOMAIN_MAX];
    size_t dlen = fold(domain, d, sizeof d);
    if (dlen == 0)
        return DL_NOMATCH;
    for (size_t i = 0; i < dl->n; i++) {
        const entry_t *e = &dl->e[i];
        bool hit;
        if (e->name) {
            hit = name_matches(dl, d, dlen, e->name);
            if (hit && why)
                buf_puts(why, e->text);
        } else {
            map_status st = table_matches(dl, e, d, why);
            if (st == MAP_TEMPFAIL)
                return DL_ERROR;
            hit = st == MAP_FOUND;
        }
        if (hit) {
            if (e->negate) {
                if (why) {
                    /* say which exclusion decided */
                    buf_t tmp = BUF_INIT;
                    buf_printf(&tmp, "excluded by %s", buf_cstr(why));
                    buf_reset(why);
                    buf_puts(why, buf_cstr(&tmp));
                    buf_free(&tmp);
                }
                return DL_NOMATCH;
            }
            return DL_MATCH;
        }
    }
    return DL_NOMATCH;
}

bool domlist_empty(const domlist_t *dl)
{
    return !dl || dl->n == 0;
}

bool domlist_changed(const domlist_t *dl)
{
    if (!dl)
        return false;
    for (size_t i = 0; i < dl->n; i++)
        if (dl->e[i].map && map_changed(dl->e[i].map))
            return true;
    return listfiles_changed(&dl->files);
}

dl_style domlist_parent_style(const char *const *items, size_t n, const char *feature)
{
    for (size_t i = 0; i < n; i++)
        if (str_ieq(items[i], feature))
            return DL_PARENT;
    return DL_DOT;
}
