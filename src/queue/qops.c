/*
 * qops: the operations on whole queue files and their logs that both the
 * daemon and `moat queue` use (spool.h, "Added with the full queue
 * manager", except spool_inject and qfile_mark, which live in spool.c):
 * queue names and paths, finding a message, moving it between queues,
 * deleting it, and the per-message defer/ and bounce/ logs.
 *
 * Everything here blocks (stat, rename, fsync): pool threads, start-up or
 * the command line, never the event loop.
 *
 * Renames are the only locking between the daemon and `moat queue`: a
 * move is one RENAME_NOREPLACE, so whoever comes second gets ENOENT (the
 * file left the source) or EEXIST (the target has it) and never replaces a
 * queue file.  errno survives the error text these functions build, since
 * callers decide on it.  Directories this file needs (deferred/, defer/,
 * bounce/, ...) are created on demand, so it does not depend on who
 * opened the spool first.
 *
 * Never: follow a name that is not a valid queue ID (every path here is
 * built from spool_valid_id names only); replace an existing queue file;
 * trust a log line (malformed lines are skipped, never half-used).
 */
#include "queue/spool.h"

#include "core/fileio.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QLOG_FIELDS 7
#define QLOG_DEFER_DIR "defer"
#define QLOG_BOUNCE_DIR "bounce"

static const char *const queue_names[QUEUE__COUNT] = {
    [QUEUE_INCOMING] = "incoming", [QUEUE_ACTIVE] = "active", [QUEUE_DEFERRED] = "deferred",
    [QUEUE_HOLD] = "hold",         [QUEUE_CORRUPT] = "corrupt",
};

const char *spool_queue_name(queue_t q)
{
    return (unsigned)q < QUEUE__COUNT ? queue_names[q] : "unknown";
}

void spool_path(const spool_t *sp, queue_t q, const char *queue_id, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s/%s", spool_dir(sp), spool_queue_name(q), queue_id);
}

static void dir_path(const spool_t *sp, const char *name, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s", spool_dir(sp), name);
}

/* Create queue_directory/NAME (0700) when it is missing, and make its
 * entry durable.  0, or -1 with errno. */
static int ensure_dir(const spool_t *sp, const char *name)
{
    buf_t p = BUF_INIT;
    int rc = 0;
    dir_path(sp, name, &p);
    if (mkdir(buf_cstr(&p), 0700) == 0) {
        /* Made by root (`moat queue` run as root): give it to the queue's
         * owner, or the daemon could not use it. */
        struct stat top;
        if (geteuid() == 0 && stat(spool_dir(sp), &top) == 0 && (top.st_uid != 0 || top.st_gid != 0) &&
            chown(buf_cstr(&p), top.st_uid, top.st_gid) != 0)
            rc = -1;
        if (rc == 0)
            rc = fsync_dir(spool_dir(sp));
    } else if (errno == EEXIST) {
        struct stat st;
        if (stat(buf_cstr(&p), &st) != 0)
            rc = -1;
        else if (!S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            rc = -1;
        }
    } else {
        rc = -1;
    }
    int e = errno;
    buf_free(&p);
    errno = e;
    return rc;
}

static bool is_file(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int spool_find(const spool_t *sp, const char *queue_id)
{
    static const queue_t order[] = {QUEUE_ACTIVE, QUEUE_DEFERRED, QUEUE_HOLD, QUEUE_INCOMING,
                                    QUEUE_CORRUPT};
    if (!spool_valid_id(queue_id)) {
        errno = EINVAL;
        return -1;
    }
    buf_t p = BUF_INIT;
    int found = -1;
    /* A second pass when nothing was found: a file renamed from a queue
     * not yet looked at into one already looked at is seen the second time. */
    for (int pass = 0; pass < 2 && found < 0; pass++) {
        for (size_t i = 0; i < ARRAY_LEN(order) && found < 0; i++) {
            spool_path(sp, order[i], queue_id, &p);
            if (is_file(buf_cstr(&p)))
                found = (int)order[i];
        }
    }
    buf_free(&p);
    if (found < 0)
        errno = ENOENT;
    return found;
}

int spool_move(spool_t *sp, const char *queue_id, queue_t from, queue_t to, buf_t *err)
{
    if (!spool_valid_id(queue_id) || (unsigned)from >= QUEUE__COUNT || (unsigned)to >= QUEUE__COUNT) {
        buf_puts(err, "invalid queue id or queue");
        errno = EINVAL;
        return -1;
    }
    buf_t src = BUF_INIT, dst = BUF_INIT, ddir = BUF_INIT;
    int rc = 0, e = 0;
    spool_path(sp, from, queue_id, &src);
    spool_path(sp, to, queue_id, &dst);
    dir_path(sp, spool_queue_name(to), &ddir);
    int r = rename_noreplace(buf_cstr(&src), buf_cstr(&dst));
    if (r != 0 && errno == ENOENT) {
        /* ENOENT also means "no target directory": tell that apart from
         * "the file left the source", which is what callers act on. */
        struct stat st;
        if (stat(buf_cstr(&ddir), &st) != 0 && errno == ENOENT) {
            if (ensure_dir(sp, spool_queue_name(to)) == 0)
                r = rename_noreplace(buf_cstr(&src), buf_cstr(&dst));
            else
                e = errno;
        } else {
            errno = ENOENT;
        }
    }
    if (r != 0) {
        e = e ? e : errno;
        buf_printf(err, "%s: move from %s to %s: %s", queue_id, spool_queue_name(from),
                   spool_queue_name(to), strerror(e));
        rc = -1;
    } else {
        /* The new name first: after a crash the file is in one place or the other. */
        buf_t sdir = BUF_INIT;
        dir_path(sp, spool_queue_name(from), &sdir);
        if (fsync_dir(buf_cstr(&ddir)) != 0 || fsync_dir(buf_cstr(&sdir)) != 0) {
            e = errno;
            buf_printf(err, "%s: fsync after moving to %s: %s", queue_id, spool_queue_name(to),
                       strerror(e));
            rc = -1;
        }
        buf_free(&sdir);
    }
    buf_free(&src);
    buf_free(&dst);
    buf_free(&ddir);
    if (rc != 0)
        errno = e;
    return rc;
}

int spool_delete(spool_t *sp, const char *queue_id, queue_t q, buf_t *err)
{
    if (!spool_valid_id(queue_id) || (unsigned)q >= QUEUE__COUNT) {
        buf_puts(err, "invalid queue id or queue");
        errno = EINVAL;
        return -1;
    }
    buf_t p = BUF_INIT;
    int rc = 0, e = 0;
    spool_path(sp, q, queue_id, &p);
    if (unlink(buf_cstr(&p)) != 0) {
        e = errno;
        buf_printf(err, "%s: remove from %s: %s", queue_id, spool_queue_name(q), strerror(e));
        rc = -1;
    } else {
        /* The logs belong to the message only while it exists: a failed
         * unlink (say ENOENT: it moved on) must leave them to the new owner. */
        qlog_remove(sp, queue_id);
        dir_path(sp, spool_queue_name(q), &p);
        if (fsync_dir(buf_cstr(&p)) != 0) {
            e = errno;
            buf_printf(err, "%s: fsync %s: %s", queue_id, buf_cstr(&p), strerror(e));
            rc = -1;
        }
    }
    buf_free(&p);
    if (rc != 0)
        errno = e;
    return rc;
}

/* ------------------------------------------------------------------ */
/* defer/ and bounce/ logs                                              */

/* The queue file's %XX encoding, plus the space (the field separator); ""
 * is written as "-" and a lone "-" as "%2D", so every field is one
 * non-empty token. */
static void put_token(buf_t *b, const char *v)
{
    if (!v || !*v)
        buf_putc(b, '-');
    else if (strcmp(v, "-") == 0)
        buf_puts(b, "%2D");
    else
        spool_encode_value(b, v, true);
}

/* Undo put_token; NULL when malformed (raw control byte, bad or %00 escape). */
static char *get_token(const char *s, size_t n)
{
    if (n == 1 && s[0] == '-')
        return xstrdup("");
    return spool_decode_value(s, n);
}

static void rec_clear(qlog_rec_t *r)
{
    free(r->rcpt);
    free(r->orig);
    free(r->dsn);
    free(r->relay);
    free(r->text);
    free(r->reply);
    memset(r, 0, sizeof *r);
}

/* One line (without its LF) into *r; false when it is not exactly seven
 * well-formed fields. */
static bool parse_rec(const char *line, size_t len, qlog_rec_t *r)
{
    const char *f[QLOG_FIELDS];
    size_t fl[QLOG_FIELDS];
    size_t nf = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != ' ')
            continue;
        if (i == start || nf == QLOG_FIELDS)
            return false;   /* an empty field (two spaces) or too many */
        f[nf] = line + start;
        fl[nf++] = i - start;
        start = i + 1;
    }
    if (nf != QLOG_FIELDS || fl[3] > 18)
        return false;
    long long when = 0;
    for (size_t i = 0; i < fl[3]; i++) {
        if (f[3][i] < '0' || f[3][i] > '9')
            return false;
        when = when * 10 + (f[3][i] - '0');
    }
    memset(r, 0, sizeof *r);
    r->when_usec = when;
    char **dst[] = {&r->rcpt, &r->orig, &r->dsn, NULL, &r->relay, &r->text, &r->reply};
    for (size_t i = 0; i < QLOG_FIELDS; i++) {
        if (!dst[i])
            continue;
        if (!(*dst[i] = get_token(f[i], fl[i]))) {
            rec_clear(r);
            return false;
        }
    }
    return true;
}

static const char *log_dir_name(qlog_kind_t kind)
{
    return kind == QLOG_BOUNCE ? QLOG_BOUNCE_DIR : QLOG_DEFER_DIR;
}

static void log_path(const spool_t *sp, qlog_kind_t kind, const char *queue_id, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s/%s", spool_dir(sp), log_dir_name(kind), queue_id);
}

int qlog_read(const spool_t *sp, qlog_kind_t kind, const char *queue_id, qlog_rec_t **recs, size_t *n,
              buf_t *err)
{
    *recs = NULL;
    *n = 0;
    if (!spool_valid_id(queue_id)) {
        buf_puts(err, "invalid queue id");
        errno = EINVAL;
        return -1;
    }
    buf_t p = BUF_INIT;
    log_path(sp, kind, queue_id, &p);
    int fd = open(buf_cstr(&p), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        int rc = 0;
        if (e != ENOENT) {
            buf_printf(err, "open %s: %s", buf_cstr(&p), strerror(e));
            rc = -1;
        }
        buf_free(&p);
        errno = e;
        return rc;
    }
    FILE *f = fdopen(fd, "r");
    if (!f) {
        int e = errno;
        close(fd);
        buf_printf(err, "fdopen %s: %s", buf_cstr(&p), strerror(e));
        buf_free(&p);
        errno = e;
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, have = 0, room = 0;
    ssize_t len;
    qlog_rec_t *out = NULL;
    errno = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        /* A line without its LF is a torn append: never trust it. */
        if (line[len - 1] != '\n' || memchr(line, 0, (size_t)len))
            continue;
        qlog_rec_t r;
        if (!parse_rec(line, (size_t)len - 1, &r))
            continue;
        if (have == room) {
            room = room ? room * 2 : 8;
            out = xrealloc(out, room * sizeof *out);
        }
        out[have++] = r;
    }
    int rc = 0;
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        buf_printf(err, "read %s: %s", buf_cstr(&p), strerror(e));
        qlog_free(&out, have);
        have = 0;
        rc = -1;
        errno = e;
    }
    free(line);
    fclose(f);
    buf_free(&p);
    *recs = out;
    *n = have;
    return rc;
}

void qlog_free(qlog_rec_t **recs, size_t n)
{
    if (!recs || !*recs)
        return;
    for (size_t i = 0; i < n; i++)
        rec_clear(&(*recs)[i]);
    free(*recs);
    *recs = NULL;
}

static void put_recs(buf_t *b, const qlog_rec_t *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const qlog_rec_t *r = &recs[i];
        put_token(b, r->rcpt);
        buf_putc(b, ' ');
        put_token(b, r->orig);
        buf_putc(b, ' ');
        put_token(b, r->dsn);
        buf_printf(b, " %lld ", r->when_usec > 0 ? r->when_usec : 0);
        put_token(b, r->relay);
        buf_putc(b, ' ');
        put_token(b, r->text);
        buf_putc(b, ' ');
        put_token(b, r->reply);
        buf_putc(b, '\n');
    }
}

/* defer/ID: write a temporary file beside it and rename it over the old
 * log, so a reader sees the old reasons or the new ones, never a mix.  No
 * fsync: the log is advisory (a crash may lose the latest reasons, never
 * a message).  No records: no log. */
static int write_defer(spool_t *sp, const char *queue_id, const buf_t *data, buf_t *err)
{
    buf_t path = BUF_INIT, tmp = BUF_INIT;
    int rc = -1, e = 0;
    log_path(sp, QLOG_DEFER, queue_id, &path);
    if (data->len == 0) {
        if (unlink(buf_cstr(&path)) != 0 && errno != ENOENT) {
            e = errno;
            buf_printf(err, "remove %s: %s", buf_cstr(&path), strerror(e));
        } else {
            rc = 0;
        }
        goto out;
    }
    buf_printf(&tmp, "%s.tmpXXXXXX", buf_cstr(&path));
    int fd = mkostemp(tmp.data, O_CLOEXEC);
    if (fd < 0) {
        e = errno;
        buf_printf(err, "create %s: %s", buf_cstr(&tmp), strerror(e));
        goto out;
    }
    if (write_all(fd, data->data, data->len) != 0) {
        e = errno;
        buf_printf(err, "write %s: %s", buf_cstr(&tmp), strerror(e));
        close(fd);
        unlink(buf_cstr(&tmp));
        goto out;
    }
    if (close(fd) != 0) {
        e = errno;
        buf_printf(err, "close %s: %s", buf_cstr(&tmp), strerror(e));
        unlink(buf_cstr(&tmp));
        goto out;
    }
    if (rename(buf_cstr(&tmp), buf_cstr(&path)) != 0) {
        e = errno;
        buf_printf(err, "rename %s: %s", buf_cstr(&tmp), strerror(e));
        unlink(buf_cstr(&tmp));
        goto out;
    }
    rc = 0;
out:
    buf_free(&path);
    buf_free(&tmp);
    if (rc != 0)
        errno = e;
    return rc;
}

/* bounce/ID: append whole lines and fdatasync; a new file's directory
 * entry is fsync'd too.  A file that ends in a torn line (a crash in an
 * earlier append) gets an LF first, so the torn line stays one malformed
 * line and never swallows the first new record. */
static int append_bounce(spool_t *sp, const char *queue_id, const buf_t *data, buf_t *err)
{
    buf_t path = BUF_INIT, dir = BUF_INIT;
    int rc = -1, e = 0;
    bool created = false;
    if (data->len == 0)
        return 0;
    log_path(sp, QLOG_BOUNCE, queue_id, &path);
    int fd = open(buf_cstr(&path), O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        fd = open(buf_cstr(&path), O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        created = fd >= 0;
        if (fd < 0 && errno == EEXIST)
            fd = open(buf_cstr(&path), O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        e = errno;
        buf_printf(err, "open %s: %s", buf_cstr(&path), strerror(e));
        goto out;
    }
    struct stat st;
    char last = '\n';
    if (fstat(fd, &st) != 0) {
        e = errno;
        buf_printf(err, "stat %s: %s", buf_cstr(&path), strerror(e));
        close(fd);
        goto out;
    }
    /* Cannot tell: an LF too many is an empty line, which readers skip. */
    if (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
        last = 0;
    if ((last != '\n' && write_all(fd, "\n", 1) != 0) || write_all(fd, data->data, data->len) != 0 ||
        fdatasync(fd) != 0) {
        e = errno;
        buf_printf(err, "append to %s: %s", buf_cstr(&path), strerror(e));
        close(fd);
        goto out;
    }
    if (close(fd) != 0) {
        e = errno;
        buf_printf(err, "close %s: %s", buf_cstr(&path), strerror(e));
        goto out;
    }
    dir_path(sp, QLOG_BOUNCE_DIR, &dir);
    if (created && fsync_dir(buf_cstr(&dir)) != 0) {
        e = errno;
        buf_printf(err, "fsync %s: %s", buf_cstr(&dir), strerror(e));
        goto out;
    }
    rc = 0;
out:
    buf_free(&path);
    buf_free(&dir);
    if (rc != 0)
        errno = e;
    return rc;
}

int qlog_write(spool_t *sp, qlog_kind_t kind, const char *queue_id, const qlog_rec_t *recs, size_t n,
               buf_t *err)
{
    if (!spool_valid_id(queue_id)) {
        buf_puts(err, "invalid queue id");
        errno = EINVAL;
        return -1;
    }
    if (ensure_dir(sp, log_dir_name(kind)) != 0) {
        int e = errno;
        buf_printf(err, "create directory %s/%s: %s", spool_dir(sp), log_dir_name(kind), strerror(e));
        errno = e;
        return -1;
    }
    buf_t data = BUF_INIT;
    put_recs(&data, recs, n);
    int rc = kind == QLOG_BOUNCE ? append_bounce(sp, queue_id, &data, err)
                                 : write_defer(sp, queue_id, &data, err);
    int e = errno;
    buf_free(&data);
    errno = e;
    return rc;
}

void qlog_remove(spool_t *sp, const char *queue_id)
{
    if (!spool_valid_id(queue_id))
        return;
    buf_t p = BUF_INIT;
    int e = errno;
    log_path(sp, QLOG_DEFER, queue_id, &p);
    unlink(buf_cstr(&p));
    log_path(sp, QLOG_BOUNCE, queue_id, &p);
    unlink(buf_cstr(&p));
    buf_free(&p);
    errno = e;
}
