/*
 * listfile: see listfile.h.  The one reader of "/file/name" list items:
 * domlist and addrlist differ in what an item means, not in how files,
 * '!' and comments are read.
 *
 * Owns the names and stats of the files it read (until listfiles_free);
 * the items it hands out live only for the call.  Never: follow files
 * without a depth bound, read more than FILE_SIZE_MAX of one, or keep
 * going quietly past a file it cannot read (the list would match less
 * than it says).
 */
#include "policy/listfile.h"

#include "core/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FILE_DEPTH_MAX 8     /* files naming files: enough for any sane layout, bounded for loops */
#define FILE_SIZE_MAX (4 << 20)

struct listfile_seen {
    char *path;
    struct stat st;
};

typedef struct walk {
    listfiles_t *lf;
    const char *name;
    listfile_item_fn fn;
    void *ctx;
    buf_t *err;
    int errors;
} walk_t;

static void walk_items(walk_t *w, const char *const *items, size_t n, int depth);

static void walk_file(walk_t *w, const char *path, int depth)
{
    if (depth >= FILE_DEPTH_MAX) {
        buf_printf(w->err, "%s: \"%s\": files nested more than %d deep\n", w->name, path, FILE_DEPTH_MAX);
        w->errors++;
        return;
    }
    FILE *fp = fopen(path, "r");
    struct stat st;
    if (!fp || fstat(fileno(fp), &st) != 0) {
        buf_printf(w->err, "%s: \"%s\": cannot open: %s\n", w->name, path, strerror(errno));
        w->errors++;
        if (fp)
            fclose(fp);
        return;
    }
    listfiles_t *lf = w->lf;
    lf->seen = xrealloc(lf->seen, (lf->n + 1) * sizeof *lf->seen);
    lf->seen[lf->n].path = xstrdup(path);
    lf->seen[lf->n].st = st;
    lf->n++;

    buf_t text = BUF_INIT;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0 && text.len < FILE_SIZE_MAX)
        buf_append(&text, chunk, got);
    fclose(fp);
    /* Words separated by commas and white space; a line whose first
     * non-blank is '#' is a comment. */
    char **items = NULL;
    size_t n = 0;
    char *p = text.data ? text.data : (char *)"";
    while (*p) {
        char *eol = strchr(p, '\n');
        if (eol)
            *eol = 0;
        char *q = p + strspn(p, " \t\r");
        if (*q != '#') {
            char *save = NULL;
            for (char *tok = strtok_r(q, " \t\r,", &save); tok; tok = strtok_r(NULL, " \t\r,", &save)) {
                items = xrealloc(items, (n + 1) * sizeof *items);
                items[n++] = tok;
            }
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    walk_items(w, (const char *const *)items, n, depth + 1);
    free(items);
    buf_free(&text);
}

static void walk_items(walk_t *w, const char *const *items, size_t n, int depth)
{
    for (size_t i = 0; i < n; i++) {
        const char *item = items[i];
        bool negate = false;
        while (*item == '!') {
            negate = !negate;
            item++;
        }
        if (!*item) {
            buf_printf(w->err, "%s: \"%s\": no pattern after '!'\n", w->name, items[i]);
            w->errors++;
            continue;
        }
        if (item[0] == '/') {
            if (negate) {
                buf_printf(w->err, "%s: \"%s\": '!' before a file name is not supported; put the '!' "
                                   "before the items inside the file\n", w->name, items[i]);
                w->errors++;
                continue;
            }
            walk_file(w, item, depth);
            continue;
        }
        if (!w->fn(w->ctx, item, negate, items[i]))
            w->errors++;
    }
}

int listfile_walk(listfiles_t *lf, const char *name, const char *const *items, size_t n, listfile_item_fn fn,
                  void *ctx, buf_t *err)
{
    walk_t w = {.lf = lf, .name = name, .fn = fn, .ctx = ctx, .err = err};
    walk_items(&w, items, n, 0);
    return w.errors;
}

map_t *listfile_open_table(const char *name, const char *spec, const char *config_dir, buf_t *err)
{
    buf_t why = BUF_INIT;
    map_t *m = map_open(spec, config_dir, &why);
    if (!m) {
        buf_printf(err, "%s: %s", name, why.len ? buf_cstr(&why) : "cannot open table\n");
        if (why.len && why.data[why.len - 1] != '\n')
            buf_putc(err, '\n');
    }
    buf_free(&why);
    return m;
}

bool listfiles_changed(const listfiles_t *lf)
{
    for (size_t i = 0; i < lf->n; i++) {
        struct stat st;
        const struct stat *o = &lf->seen[i].st;
        if (stat(lf->seen[i].path, &st) != 0 || st.st_mtime != o->st_mtime || st.st_size != o->st_size ||
            st.st_ino != o->st_ino)
            return true;
    }
    return false;
}

void listfiles_free(listfiles_t *lf)
{
    for (size_t i = 0; i < lf->n; i++)
        free(lf->seen[i].path);
    free(lf->seen);
    lf->seen = NULL;
    lf->n = 0;
}
