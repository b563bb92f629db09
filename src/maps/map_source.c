/*
 * map_source: logical lines of table source files (see map_source.h).
 *
 * Owns a private copy of the file text and the current line.  Must never
 * be used on the event loop: it reads whole files with blocking I/O.
 */
#include "maps/map_source.h"

#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One read of the whole file into s->text, with fstat before and after. */
static int read_once(map_src_t *s, int fd, struct stat *before, buf_t *err)
{
    buf_t text = BUF_INIT;
    if (fstat(fd, before) != 0 || lseek(fd, 0, SEEK_SET) < 0) {
        buf_printf(err, "%s: %s\n", s->path, strerror(errno));
        return -1;
    }
    for (;;) {
        buf_reserve(&text, 65536);
        ssize_t n = read(fd, text.data + text.len, text.cap - text.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            buf_printf(err, "%s: read error: %s\n", s->path, strerror(errno));
            buf_free(&text);
            return -1;
        }
        if (n == 0)
            break;
        text.len += (size_t)n;
        text.data[text.len] = 0;
    }
    if (fstat(fd, &s->st) != 0)
        memset(&s->st, 0, sizeof s->st);
    xfree(&s->text);
    s->len = text.len;
    s->text = text.data ? buf_steal(&text) : xstrdup("");
    return 0;
}

int map_src_open(map_src_t *s, const char *path, buf_t *err)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        buf_printf(err, "%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    /* A file being written while we read it may be half old, half new:
     * read again (a few times) until it holds still, as Postfix does. */
    for (int tries = 0; tries < 5; tries++) {
        struct stat before;
        if (read_once(s, fd, &before, err) != 0) {
            close(fd);
            xfree(&s->text);
            return -1;
        }
        if (before.st_size == s->st.st_size && before.st_mtim.tv_sec == s->st.st_mtim.tv_sec &&
            before.st_mtim.tv_nsec == s->st.st_mtim.tv_nsec && (size_t)s->st.st_size == s->len)
            break;
    }
    close(fd);
    return 0;
}

void map_src_open_mem(map_src_t *s, const char *name, const char *text, size_t len)
{
    memset(s, 0, sizeof *s);
    s->path = name;
    s->text = xmalloc(len + 1);
    if (len)
        memcpy(s->text, text, len);
    s->text[len] = 0;
    s->len = len;
}

void map_src_close(map_src_t *s)
{
    xfree(&s->text);
    buf_free(&s->line);
}

int map_src_next(map_src_t *s, buf_t *err)
{
    buf_reset(&s->line);
    while (s->pos < s->len) {
        const char *p = s->text + s->pos;
        const char *nl = memchr(p, '\n', s->len - s->pos);
        size_t n = nl ? (size_t)(nl - p) : s->len - s->pos;
        size_t start = s->pos;
        s->pos += n + (nl != NULL);
        s->lineno++;
        if (n && p[n - 1] == '\r')
            n--;
        size_t i = 0;
        while (i < n && map_isspace((unsigned char)p[i]))
            i++;
        bool nul = memchr(p, 0, n) != NULL;
        if (!nul && (i == n || p[i] == '#'))
            continue;   /* blank or comment: does not end a logical line */
        if (i == 0 && s->line.len) {
            /* The start of the next logical line: leave it for the next call. */
            s->pos = start;
            s->lineno--;
            return 1;
        }
        if (nul) {
            /* Drop the damaged logical line, continuations included. */
            buf_printf(err, "%s:%d: NUL byte in line\n", s->path, s->lineno);
            buf_reset(&s->line);
            s->orphan = true;
            return -1;
        }
        if (i > 0) {
            if (s->orphan)
                continue;
            if (s->line.len == 0) {
                buf_printf(err, "%s:%d: continuation line (starts with white space) with no "
                                "line to continue\n", s->path, s->lineno);
                s->orphan = true;
                return -1;
            }
            buf_append(&s->line, p, n);
            continue;
        }
        s->orphan = false;
        s->first = s->lineno;
        buf_append(&s->line, p, n);
    }
    return s->line.len ? 1 : 0;
}

const char *map_src_split(char *line, char **key, char **value)
{
    char *p = line;
    while (map_isspace((unsigned char)*p))
        p++;
    *key = p;
    bool quoted = false;
    for (; *p; p++) {
        if (*p == '\\') {
            if (p[1] == 0)
                break;
            p++;
        } else if (*p == '"') {
            quoted = !quoted;
        } else if (map_isspace((unsigned char)*p) && !quoted) {
            break;
        }
    }
    if (quoted)
        return "unbalanced '\"' in key";
    if (*p)
        *p++ = 0;
    while (map_isspace((unsigned char)*p))
        p++;
    *value = p;
    size_t n = strlen(p);
    while (n && map_isspace((unsigned char)p[n - 1]))
        p[--n] = 0;
    if (!**key || !**value)
        return "expected format: key whitespace value";
    return NULL;
}
