/*
 * spool: the durable queue directory, queue IDs, the queue file format
 * (writer and reader, and the %XX value encoding that qops.c's logs
 * share), recipient status marks, injection of complete
 * messages (notices), start-up recovery and the deferred queue scan.  See
 * spool.h for the contract and docs/queue.md for the format and the
 * durability argument.  (Moves between queues and the defer/bounce logs
 * are in qops.c.)
 *
 * Ownership: a writer's fields are split by thread.  "loop" fields are
 * touched only on the loop thread (append, backlog, done callbacks);
 * "pool" fields only by the writer's own pool jobs, which the pool runs one
 * at a time in submission order because they share one chain key (the
 * writer), so they need no lock.  A job copies whatever its done callback
 * needs into the job itself, because the next job of the chain may already
 * be running when the callback reads it.
 *
 * Never: block the loop thread (every open, write, fsync and rename runs on
 * the pool); report a commit as ok before the data, the rename and the
 * directory entry are all on stable storage; replace an existing queue file;
 * change anything in a committed file but a recipient's status byte;
 * touch hold/ during recovery (held mail stays held across restarts).
 */
#include "queue/spool.h"

#include "core/fileio.h"
#include "core/log.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_FLUSH_AT (64 * 1024)   /* a write job takes the buffer beyond this */
#define QF_MAGIC "MOAT-QUEUE 1"      /* first line: format name and version */
#define QF_MAGIC2 "MOAT-QUEUE 2"     /* version 1 + action records after the content */
#define QF_MAGIC_NAME "MOAT-QUEUE "
#define QF_TRAILER_WORD "MOAT-END "
#define QF_TRAILER_DIGITS 20
#define QF_TRAILER_LEN (sizeof QF_TRAILER_WORD - 1 + QF_TRAILER_DIGITS + 1)
#define QF_RCPT_PREFIX "rcpt "
#define QF_BCC_PREFIX "bcc "
/* The shortest recipient line, "rcpt P x\n": bounds nrcpt by the file size. */
#define QF_MIN_RCPT_LINE 9

struct spool {
    char *dir;
    char *incoming, *active, *corrupt, *hold, *deferred;
    char *defer_log, *bounce_log;   /* defer/ and bounce/: per-message logs (qops.c) */
    pool_t *pool;
};

struct spool_writer {
    spool_t *sp;
    char id[QUEUE_ID_MAX];
    char *inpath, *actpath, *holdpath;   /* immutable after spool_writer_new */
    const char *refuse;         /* set at new: the envelope cannot be written */

    /* loop */
    buf_t cur, spare;           /* appends go to cur; spare is a recycled buffer */
    size_t size, backlog;
    bool failed;                /* a job failed: appends are dropped from now on */
    buf_t extra;                /* action records, written after the content */
    bool hold;                  /* the commit goes to hold/ */
    buf_t top;                  /* header lines to insert above the content at commit */
    size_t env_len;             /* where the content starts in the file */

    /* pool */
    buf_t env;                  /* the envelope text, written by the create job */
    int fd;
    bool created;
    int err;                    /* first errno, 0 while all is well */
};

enum { WJ_CREATE, WJ_WRITE, WJ_COMMIT, WJ_ABORT };

static void spool_job_work(void *arg);
static void spool_job_done(void *arg);

typedef struct wjob {
    spool_writer_t *w;
    int kind;
    buf_t data;                 /* WRITE, COMMIT: bytes to write */
    size_t content_size;        /* COMMIT: for the trailer */
    buf_t extra;                /* COMMIT: action records */
    buf_t top;                  /* COMMIT: header lines to insert above the content */
    bool hold;                  /* COMMIT: into hold/ */
    spool_commit_cb cb;
    void *arg;
    bool failed;                /* result, for the done callback */
    char errtext[160];
} wjob_t;

/* ------------------------------------------------------------------ */
/* small file helpers (blocking; pool threads or start-up)             */

static int make_dir(const char *path, buf_t *err)
{
    if (mkdir_p(path, 0700) == 0)
        return 0;
    buf_printf(err, "create directory %s: %s", path, strerror(errno));
    return -1;
}

static char *join(const char *a, const char *b)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s", a, b);
    return buf_steal(&p);
}

/* ------------------------------------------------------------------ */
/* the spool                                                            */

spool_t *spool_open(const char *queue_dir, pool_t *pool, buf_t *err)
{
    if (!queue_dir || !*queue_dir) {
        buf_puts(err, "queue_directory is empty");
        return NULL;
    }
    spool_t *sp = xcalloc(1, sizeof *sp);
    sp->dir = xstrdup(queue_dir);
    for (size_t n = strlen(sp->dir); n > 1 && sp->dir[n - 1] == '/'; n--)
        sp->dir[n - 1] = 0;
    sp->incoming = join(sp->dir, "incoming");
    sp->active = join(sp->dir, "active");
    sp->corrupt = join(sp->dir, "corrupt");
    sp->hold = join(sp->dir, "hold");
    sp->deferred = join(sp->dir, "deferred");
    sp->defer_log = join(sp->dir, "defer");
    sp->bounce_log = join(sp->dir, "bounce");
    sp->pool = pool;
    if (make_dir(sp->dir, err) != 0 || make_dir(sp->incoming, err) != 0 ||
        make_dir(sp->active, err) != 0 || make_dir(sp->corrupt, err) != 0 ||
        make_dir(sp->hold, err) != 0 || make_dir(sp->deferred, err) != 0 ||
        make_dir(sp->defer_log, err) != 0 || make_dir(sp->bounce_log, err) != 0) {
        spool_close(&sp);
        return NULL;
    }
    /* The subdirectories' own entries must survive a crash as well. */
    if (fsync_dir(sp->dir) != 0) {
        buf_printf(err, "fsync %s: %s", sp->dir, strerror(errno));
        spool_close(&sp);
        return NULL;
    }
    return sp;
}

void spool_close(spool_t **spp)
{
    spool_t *sp = *spp;
    if (!sp)
        return;
    free(sp->dir);
    free(sp->incoming);
    free(sp->active);
    free(sp->corrupt);
    free(sp->hold);
    free(sp->deferred);
    free(sp->defer_log);
    free(sp->bounce_log);
    free(sp);
    *spp = NULL;
}

pool_t *spool_pool(const spool_t *sp)
{
    return sp->pool;
}

const char *spool_dir(const spool_t *sp)
{
    return sp->dir;
}

/*
 * 14 uppercase hex digits: 6 of seconds (mod 2^24, about 194 days), 5 of
 * microseconds, 3 of the process ID.  The microsecond clock is made
 * strictly increasing per process (a second ID in the same microsecond
 * takes the next one), so a process never repeats an ID; processes differ
 * in their PID bits.  A collision that slips through anyway (a PID 4096
 * apart, in the same microsecond) is caught by O_EXCL and RENAME_NOREPLACE
 * and costs a 4xx, never a message.
 */
static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static long long id_last;

void spool_new_queue_id(spool_t *sp, char out[QUEUE_ID_MAX])
{
    (void)sp;
    long long t = now_usec();
    pthread_mutex_lock(&id_lock);
    if (t <= id_last)
        t = id_last + 1;
    id_last = t;
    pthread_mutex_unlock(&id_lock);
    unsigned long long sec = (unsigned long long)(t / 1000000), usec = (unsigned long long)(t % 1000000);
    snprintf(out, QUEUE_ID_MAX, "%06llX%05llX%03X", sec & 0xFFFFFFull, usec,
             (unsigned)getpid() & 0xFFFu);
}

bool spool_valid_id(const char *s)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'A' && s[n] <= 'F')))
            return false;
    return n > 0 && n < QUEUE_ID_MAX;
}

void spool_active_path(const spool_t *sp, const char *queue_id, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s", sp->active, queue_id);
}

void spool_hold_path(const spool_t *sp, const char *queue_id, buf_t *out)
{
    buf_reset(out);
    buf_printf(out, "%s/%s", sp->hold, queue_id);
}

int spool_release(spool_t *sp, const char *queue_id, buf_t *err)
{
    buf_t from = BUF_INIT, to = BUF_INIT;
    int rc = 0;
    if (!spool_valid_id(queue_id)) {
        buf_puts(err, "invalid queue id");
        return -1;
    }
    spool_hold_path(sp, queue_id, &from);
    spool_active_path(sp, queue_id, &to);
    if (rename_noreplace(buf_cstr(&from), buf_cstr(&to)) != 0) {
        buf_printf(err, "rename %s to %s: %s", buf_cstr(&from), buf_cstr(&to), strerror(errno));
        rc = -1;
    } else if (fsync_dir(sp->active) != 0 || fsync_dir(sp->hold) != 0) {
        /* The new name first: a crash leaves the message in one place or the other. */
        buf_printf(err, "fsync after releasing %s: %s", queue_id, strerror(errno));
        rc = -1;
    }
    buf_free(&from);
    buf_free(&to);
    return rc;
}

int spool_remove(spool_t *sp, const char *queue_id, buf_t *err)
{
    buf_t path = BUF_INIT;
    int rc = 0;
    if (!spool_valid_id(queue_id)) {
        buf_puts(err, "invalid queue id");
        return -1;
    }
    spool_active_path(sp, queue_id, &path);
    if (unlink(buf_cstr(&path)) != 0 && errno != ENOENT) {
        buf_printf(err, "remove %s: %s", buf_cstr(&path), strerror(errno));
        rc = -1;
    } else if (fsync_dir(sp->active) != 0) {
        buf_printf(err, "fsync %s: %s", sp->active, strerror(errno));
        rc = -1;
    }
    buf_free(&path);
    return rc;
}

/* DIR/NAME -> corrupt/NAME (corrupt/NAME.USEC when taken); DIR is
 * active/ or deferred/. */
static int quarantine_name(spool_t *sp, const char *dir, const char *name, buf_t *dest, buf_t *err)
{
    char *from = join(dir, name);
    int rc = 0;
    buf_reset(dest);
    buf_printf(dest, "%s/%s", sp->corrupt, name);
    int r = rename_noreplace(from, buf_cstr(dest));
    if (r != 0 && errno == EEXIST) {
        buf_reset(dest);
        buf_printf(dest, "%s/%s.%lld", sp->corrupt, name, now_usec());
        r = rename_noreplace(from, buf_cstr(dest));
    }
    if (r != 0) {
        buf_printf(err, "rename %s to %s: %s", from, buf_cstr(dest), strerror(errno));
        rc = -1;
    } else if (fsync_dir(sp->corrupt) != 0 || fsync_dir(dir) != 0) {
        buf_printf(err, "fsync after moving %s: %s", from, strerror(errno));
        rc = -1;
    }
    free(from);
    return rc;
}

int spool_quarantine(spool_t *sp, const char *queue_id, buf_t *err)
{
    buf_t dest = BUF_INIT;
    if (!spool_valid_id(queue_id)) {
        buf_puts(err, "invalid queue id");
        return -1;
    }
    int rc = quarantine_name(sp, sp->active, queue_id, &dest, err);
    buf_free(&dest);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void spool_free_ids(char **ids, size_t n)
{
    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
}

/* Every name in dir but . and .. (sorted: IDs begin with the time, so
 * name order is roughly arrival order).  -1 when dir cannot be read. */
static int list_names(const char *dir, char ***names, size_t *n)
{
    struct dirent *de;
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            *names = xrealloc(*names, cap * sizeof **names);
        }
        (*names)[(*n)++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof **names, cmp_str);
    return 0;
}

/* Read every file of one queue (active/ or deferred/); move the ones that
 * fail to corrupt/.  Keeps the valid names in names[0..return value). */
static size_t validate_queue(spool_t *sp, const char *dir, const char *qname, char **names, size_t n)
{
    size_t nvalid = 0;
    for (size_t i = 0; i < n; i++) {
        char *p = join(dir, names[i]);
        qfile_t q;
        buf_t why = BUF_INIT, dest = BUF_INIT, err = BUF_INIT;
        struct stat st;
        bool ok = false;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            log_warn("qmgr", "unexpected directory in queue: %s/%s (left alone)", qname, names[i]);
            free(p);
            free(names[i]);
            continue;
        }
        if (qfile_read(p, &q, &why) == 0) {
            if (strcmp(q.queue_id, names[i]) == 0)
                ok = true;
            else
                buf_printf(&why, "queue id %s does not match the file name", q.queue_id);
            qfile_free(&q);
        }
        if (ok) {
            names[nvalid++] = names[i];
        } else if (quarantine_name(sp, dir, names[i], &dest, &err) == 0) {
            log_warn("qmgr", "corrupt queue file %s/%s: %s; moved to %s", qname, names[i],
                     buf_cstr(&why), buf_cstr(&dest));
            free(names[i]);
        } else {
            log_error("qmgr", "corrupt queue file %s/%s: %s; cannot move it aside: %s", qname,
                      names[i], buf_cstr(&why), buf_cstr(&err));
            free(names[i]);
        }
        buf_free(&why);
        buf_free(&dest);
        buf_free(&err);
        free(p);
    }
    return nvalid;
}

int spool_recover(spool_t *sp, void (*cb)(void *arg, const char *queue_id), void *arg)
{
    int removed = 0;
    char **names;
    size_t n;
    if (list_names(sp->incoming, &names, &n) != 0) {
        log_error("qmgr", "open queue directory %s: %m", sp->incoming);
        return -1;
    }
    /* Anything here was never acknowledged with 250: the client still has it. */
    for (size_t i = 0; i < n; i++) {
        char *p = join(sp->incoming, names[i]);
        if (unlink(p) == 0) {
            log_warn("qmgr", "removed incomplete queue file incoming/%s", names[i]);
            removed++;
        } else {
            log_warn("qmgr", "cannot remove incomplete queue file %s: %m", p);
        }
        free(p);
    }
    spool_free_ids(names, n);
    if (removed > 0 && fsync_dir(sp->incoming) != 0)
        log_warn("qmgr", "fsync %s: %m", sp->incoming);

    /* deferred/ is validated like active/ but not reported: the scans of
     * the running queue manager take its files when they are due. */
    if (list_names(sp->deferred, &names, &n) != 0) {
        log_error("qmgr", "open queue directory %s: %m", sp->deferred);
        return -1;
    }
    spool_free_ids(names, validate_queue(sp, sp->deferred, "deferred", names, n));

    if (list_names(sp->active, &names, &n) != 0) {
        log_error("qmgr", "open queue directory %s: %m", sp->active);
        return -1;
    }
    size_t nvalid = validate_queue(sp, sp->active, "active", names, n);
    /* Report after the scan so a callback cannot disturb it. */
    for (size_t i = 0; i < nvalid; i++)
        if (cb)
            cb(arg, names[i]);
    spool_free_ids(names, nvalid);
    return removed;
}

int spool_scan_deferred(spool_t *sp, long long now_sec, bool all, char ***ids, size_t *nids,
                        size_t *nfiles, buf_t *err)
{
    size_t cap = 0;
    struct dirent *de;
    *ids = NULL;
    *nids = 0;
    *nfiles = 0;
    DIR *d = opendir(sp->deferred);
    if (!d) {
        buf_printf(err, "open %s: %s", sp->deferred, strerror(errno));
        return -1;
    }
    buf_t from = BUF_INIT, to = BUF_INIT;
    int dfd = dirfd(d);
    while ((de = readdir(d)) != NULL) {
        if (!spool_valid_id(de->d_name))
            continue;   /* ".", "..", and debris a human must look at */
        struct stat st;
        if (de->d_type == DT_DIR)
            continue;
        ++*nfiles;
        if (!all) {
            /* The mtime is the time of the next attempt. */
            if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
                (long long)st.st_mtime > now_sec)
                continue;
        }
        buf_reset(&from);
        buf_reset(&to);
        buf_printf(&from, "%s/%s", sp->deferred, de->d_name);
        buf_printf(&to, "%s/%s", sp->active, de->d_name);
        /* ENOENT: `moat queue` moved or deleted it first; EEXIST: a file of
         * that name is in active/ already (left for a human, never replaced). */
        if (rename_noreplace(buf_cstr(&from), buf_cstr(&to)) != 0) {
            if (errno == EEXIST)
                log_warn("qmgr", "%s: in both deferred/ and active/; the deferred copy stays", de->d_name);
            continue;
        }
        if (*nids == cap) {
            cap = cap ? cap * 2 : 64;
            *ids = xrealloc(*ids, cap * sizeof **ids);
        }
        (*ids)[(*nids)++] = xstrdup(de->d_name);
    }
    closedir(d);
    buf_free(&from);
    buf_free(&to);
    /* Once per scan: a crash before this leaves each file in one of the
     * two queues, and both are recovered. */
    if (*nids > 0 && (fsync_dir(sp->active) != 0 || fsync_dir(sp->deferred) != 0))
        log_warn("qmgr", "fsync after the deferred queue scan: %m");
    if (*nids > 1)
        qsort(*ids, *nids, sizeof **ids, cmp_str);
    return 0;
}

/* ------------------------------------------------------------------ */
/* value encoding (queue file values, defer/bounce log fields)          */

void spool_encode_value(buf_t *b, const char *v, bool space)
{
    for (const unsigned char *p = (const unsigned char *)(v ? v : ""); *p; p++) {
        if (*p == '%' || *p < 0x20 || *p == 0x7F || (space && *p == ' '))
            buf_printf(b, "%%%02X", *p);
        else
            buf_putc(b, (char)*p);
    }
}

char *spool_decode_value(const char *s, size_t n)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 1 < n ? hex_value((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else if (c < 0x20 || c == 0x7F) {
            free(out);
            return NULL;
        } else {
            *o++ = (char)c;
        }
    }
    *o = 0;
    return out;
}

/* ------------------------------------------------------------------ */
/* the queue file: writing                                              */

/* "key value\n"; '%', control bytes and DEL become %XX, so a value can
 * never end its line early. */
static void put_field(buf_t *b, const char *key, const char *v)
{
    buf_puts(b, key);
    buf_putc(b, ' ');
    spool_encode_value(b, v, false);
    buf_putc(b, '\n');
}

static void serialize_envelope(buf_t *b, const envelope_t *env, const char *id)
{
    char num[32];
    buf_puts(b, QF_MAGIC "\n");
    put_field(b, "id", id);
    snprintf(num, sizeof num, "%lld", env->arrival_usec > 0 ? env->arrival_usec : 0);
    put_field(b, "arrival", num);
    put_field(b, "client_name", env->client_name);
    put_field(b, "client_addr", env->client_addr);
    put_field(b, "helo", env->helo);
    put_field(b, "protocol", env->protocol);
    put_field(b, "sender", env->sender);
    put_field(b, "body_type", env->body_type);
    put_field(b, "smtputf8", env->smtputf8 ? "yes" : "no");
    snprintf(num, sizeof num, "%zu", env->nrcpt);
    put_field(b, "nrcpt", num);
    for (size_t i = 0; i < env->nrcpt; i++)
        put_field(b, "rcpt P", env->rcpts[i]);
    buf_puts(b, "content\n");
}

static bool body_type_ok(const char *t)
{
    return !t || !*t || strcmp(t, "7BIT") == 0 || strcmp(t, "8BITMIME") == 0;
}

spool_writer_t *spool_writer_new(spool_t *sp, const envelope_t *env)
{
    spool_writer_t *w = xcalloc(1, sizeof *w);
    w->sp = sp;
    w->fd = -1;
    if (env->queue_id && *env->queue_id)
        str_copy(w->id, env->queue_id, sizeof w->id);
    else
        spool_new_queue_id(sp, w->id);
    /* The ID becomes a file name: only our own alphabet may reach the disk,
     * and never a truncated ID that differs from the one the session logged. */
    if (!spool_valid_id(w->id) || (env->queue_id && strlen(env->queue_id) >= QUEUE_ID_MAX)) {
        w->refuse = "invalid queue id";
        str_copy(w->id, "INVALID", sizeof w->id);
    } else if (env->nrcpt == 0 || !env->rcpts) {
        w->refuse = "no recipients";
    } else if (!body_type_ok(env->body_type)) {
        w->refuse = "invalid body type";
    } else {
        for (size_t i = 0; i < env->nrcpt; i++)
            if (!env->rcpts[i] || !*env->rcpts[i])
                w->refuse = "empty recipient";
    }
    w->inpath = join(sp->incoming, w->id);
    w->actpath = join(sp->active, w->id);
    w->holdpath = join(sp->hold, w->id);
    if (!w->refuse)
        serialize_envelope(&w->env, env, w->id);

    wjob_t *j = xcalloc(1, sizeof *j);
    j->w = w;
    j->kind = WJ_CREATE;
    pool_submit(sp->pool, w, spool_job_work, spool_job_done, j);
    return w;
}

static void fail(spool_writer_t *w, const char *what, const char *path)
{
    if (w->err)
        return;
    w->err = errno ? errno : EIO;
    log_warn("cleanup", "%s: queue file write error: %s %s: %s", w->id, what, path,
             strerror(w->err));
}

static void job_create(spool_writer_t *w)
{
    if (w->refuse) {
        errno = EINVAL;
        w->err = EINVAL;
        log_warn("cleanup", "%s: queue file not written: %s", w->id, w->refuse);
        return;
    }
    w->fd = open(w->inpath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (w->fd < 0) {
        fail(w, "create", w->inpath);
        return;
    }
    w->created = true;
    w->env_len = w->env.len;
    if (write_all(w->fd, w->env.data, w->env.len) != 0)
        fail(w, "write", w->inpath);
    buf_free(&w->env);
}

static void discard_file(spool_writer_t *w)
{
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    if (w->created && unlink(w->inpath) != 0 && errno != ENOENT)
        log_warn("cleanup", "%s: remove %s: %m", w->id, w->inpath);
    w->created = false;
}

/*
 * The durable commit steps shared by the writer and spool_inject: the
 * file's bytes are all written; fsync it, close it (checked: some file
 * systems report write errors only there), rename it from incoming/ into
 * its queue without replacing anything, fsync that directory.  fd is
 * closed in every case.  -1 with errno and *step naming what failed; when
 * the rename happened but its fsync failed, the renamed file is removed
 * again (the caller reports failure, and a surviving copy would become a
 * duplicate).  A file still in incoming/ is the caller's to remove.
 */
static int durable_commit(int fd, const char *inpath, const char *dest, const char *destdir,
                          const char **step, const char **where)
{
    *where = inpath;
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        *step = "fsync";
        return -1;
    }
    if (close(fd) != 0) {
        *step = "close";
        return -1;
    }
    if (rename_noreplace(inpath, dest) != 0) {
        *step = "rename to";
        *where = dest;
        return -1;
    }
    if (fsync_dir(destdir) != 0) {
        int e = errno;
        *step = "fsync directory";
        *where = destdir;
        if (unlink(dest) != 0)
            log_warn("cleanup", "remove %s: %m", dest);
        fsync_dir(destdir);
        errno = e;
        return -1;
    }
    return 0;
}

static void put_trailer(char out[QF_TRAILER_LEN + 1], size_t content_size)
{
    snprintf(out, QF_TRAILER_LEN + 1, QF_TRAILER_WORD "%020zu\n", content_size);
}

/* Make room for n bytes at start by moving the len bytes there towards
 * the end of the file (from the back, in blocks), then write ins there. */
static int insert_at(int fd, off_t start, size_t len, const char *ins, size_t n)
{
    enum { BLOCK = 65536 };
    char *blk = xmalloc(BLOCK);
    int rc = 0;
    errno = 0;
    for (size_t left = len; left > 0 && rc == 0;) {
        size_t k = left < BLOCK ? left : BLOCK;
        off_t off = start + (off_t)(left - k);
        if (pread(fd, blk, k, off) != (ssize_t)k || pwrite(fd, blk, k, off + (off_t)n) != (ssize_t)k)
            rc = -1;
        left -= k;
    }
    if (rc == 0 && pwrite(fd, ins, n, start) != (ssize_t)n)
        rc = -1;
    free(blk);
    if (rc != 0 && errno == 0)
        errno = EIO;
    return rc;
}

static void job_commit(spool_writer_t *w, wjob_t *j)
{
    char trailer[QF_TRAILER_LEN + 1];

    if (w->err)
        goto failed;
    if (write_all(w->fd, j->data.data, j->data.len) != 0) {
        fail(w, "write", w->inpath);
        goto failed;
    }
    if (j->top.len) {
        /* Every byte of the content is in the file now: open the gap. */
        if (insert_at(w->fd, (off_t)w->env_len, j->content_size, j->top.data, j->top.len) != 0
            || lseek(w->fd, 0, SEEK_END) < 0) {
            fail(w, "write", w->inpath);
            goto failed;
        }
        j->content_size += j->top.len;
    }
    put_trailer(trailer, j->content_size);
    if (write_all(w->fd, j->extra.data, j->extra.len) != 0 ||
        write_all(w->fd, trailer, QF_TRAILER_LEN) != 0) {
        fail(w, "write", w->inpath);
        goto failed;
    }
    /* Only a file with action records says version 2, so a file without
     * them stays readable by a moat that knows version 1 only.  Same
     * length, so the envelope offsets do not move. */
    if (j->extra.len &&
        pwrite(w->fd, QF_MAGIC2, strlen(QF_MAGIC2), 0) != (ssize_t)strlen(QF_MAGIC2)) {
        fail(w, "write", w->inpath);
        goto failed;
    }
    const char *step, *where;
    int fd = w->fd;
    w->fd = -1;
    if (durable_commit(fd, w->inpath, j->hold ? w->holdpath : w->actpath,
                       j->hold ? w->sp->hold : w->sp->active, &step, &where) != 0) {
        fail(w, step, where);
        goto failed;
    }
    w->created = false;
    return;

failed:
    discard_file(w);
    j->failed = true;
    snprintf(j->errtext, sizeof j->errtext, "4.3.0 Error: queue file write error (%s)",
             w->refuse ? w->refuse : strerror(w->err ? w->err : EIO));
}

int spool_inject(spool_t *sp, const envelope_t *env, const char *content, size_t len,
                 char id_out[QUEUE_ID_MAX], buf_t *err)
{
    char id[QUEUE_ID_MAX], trailer[QF_TRAILER_LEN + 1];
    const char *why = NULL;
    if (env->queue_id && *env->queue_id)
        str_copy(id, env->queue_id, sizeof id);
    else
        spool_new_queue_id(sp, id);
    if (!spool_valid_id(id) || (env->queue_id && strlen(env->queue_id) >= QUEUE_ID_MAX))
        why = "invalid queue id";
    else if (env->nrcpt == 0 || !env->rcpts)
        why = "no recipients";
    else if (!body_type_ok(env->body_type))
        why = "invalid body type";
    for (size_t i = 0; !why && i < env->nrcpt; i++)
        if (!env->rcpts[i] || !*env->rcpts[i])
            why = "empty recipient";
    if (why) {
        buf_printf(err, "queue file not written: %s", why);
        errno = EINVAL;
        return -1;
    }
    buf_t data = BUF_INIT;
    serialize_envelope(&data, env, id);
    buf_append(&data, content, len);
    put_trailer(trailer, len);
    buf_append(&data, trailer, QF_TRAILER_LEN);

    char *inpath = join(sp->incoming, id), *dest = join(sp->active, id);
    const char *step = "create", *where = inpath;
    int rc = -1, saved = 0;
    int fd = open(inpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        if (write_all(fd, data.data, data.len) != 0) {
            saved = errno;
            step = "write";
            close(fd);
            unlink(inpath);
        } else if (durable_commit(fd, inpath, dest, sp->active, &step, &where) != 0) {
            saved = errno;
            unlink(inpath);   /* ENOENT after a rename: nothing left to remove */
        } else {
            rc = 0;
        }
    } else {
        saved = errno;
    }
    if (rc != 0) {
        buf_printf(err, "queue file write error: %s %s: %s", step, where, strerror(saved ? saved : EIO));
        errno = saved ? saved : EIO;
    } else {
        str_copy(id_out, id, QUEUE_ID_MAX);
    }
    free(inpath);
    free(dest);
    buf_free(&data);
    return rc;
}

static void spool_job_work(void *arg)
{
    wjob_t *j = arg;
    spool_writer_t *w = j->w;
    switch (j->kind) {
    case WJ_CREATE:
        job_create(w);
        break;
    case WJ_WRITE:
        if (!w->err && write_all(w->fd, j->data.data, j->data.len) != 0)
            fail(w, "write", w->inpath);
        break;
    case WJ_COMMIT:
        job_commit(w, j);
        break;
    case WJ_ABORT:
        discard_file(w);
        break;
    }
    if (w->err)
        j->failed = true;
}

static void writer_free(spool_writer_t *w)
{
    buf_free(&w->cur);
    buf_free(&w->spare);
    buf_free(&w->env);
    buf_free(&w->extra);
    buf_free(&w->top);
    free(w->inpath);
    free(w->actpath);
    free(w->holdpath);
    free(w);
}

static void spool_job_done(void *arg)
{
    wjob_t *j = arg;
    spool_writer_t *w = j->w;
    switch (j->kind) {
    case WJ_CREATE:
    case WJ_WRITE:
        w->backlog -= j->data.len;
        if (j->failed && !w->failed) {
            w->failed = true;
            w->backlog -= w->cur.len;   /* never written now: drop it */
            buf_free(&w->cur);
        }
        if (!w->spare.data && j->data.data) {
            buf_reset(&j->data);
            w->spare = j->data;
            j->data = (buf_t)BUF_INIT;
        }
        break;
    case WJ_COMMIT:
        j->cb(j->arg, !j->failed, j->failed ? j->errtext : NULL);
        writer_free(w);
        break;
    case WJ_ABORT:
        writer_free(w);
        break;
    }
    buf_free(&j->data);
    buf_free(&j->extra);
    buf_free(&j->top);
    free(j);
}

static void submit(spool_writer_t *w, int kind, spool_commit_cb cb, void *arg)
{
    wjob_t *j = xcalloc(1, sizeof *j);
    j->w = w;
    j->kind = kind;
    j->cb = cb;
    j->arg = arg;
    if (kind == WJ_WRITE || kind == WJ_COMMIT) {
        /* Double buffering: the job owns this buffer; appends go to the spare. */
        j->data = w->cur;
        w->cur = w->spare;
        w->spare = (buf_t)BUF_INIT;
        j->content_size = w->size;
    }
    if (kind == WJ_COMMIT) {
        j->extra = w->extra;
        w->extra = (buf_t)BUF_INIT;
        j->top = w->top;
        w->top = (buf_t)BUF_INIT;
        j->hold = w->hold;
    }
    pool_submit(w->sp->pool, w, spool_job_work, spool_job_done, j);
}

void spool_writer_append(spool_writer_t *w, const char *data, size_t len)
{
    w->size += len;
    if (w->failed)
        return;   /* the commit will fail: keep no memory for it */
    buf_append(&w->cur, data, len);
    w->backlog += len;
    if (w->cur.len > SPOOL_FLUSH_AT)
        submit(w, WJ_WRITE, NULL, NULL);
}

size_t spool_writer_backlog(const spool_writer_t *w)
{
    return w->backlog;
}

size_t spool_writer_size(const spool_writer_t *w)
{
    return w->size;
}

const char *spool_writer_id(const spool_writer_t *w)
{
    return w->id;
}

/* Records in a fixed order (filter, redirect, bcc...), each at most once
 * but bcc; the reader insists on that order. */
void spool_writer_actions(spool_writer_t *w, const spool_actions_t *a)
{
    buf_reset(&w->extra);
    buf_reset(&w->top);
    if (a->headers)
        buf_puts(&w->top, a->headers);
    w->hold = a->hold;
    if (a->filter && *a->filter)
        put_field(&w->extra, "filter", a->filter);
    if (a->redirect && *a->redirect)
        put_field(&w->extra, "redirect", a->redirect);
    for (size_t i = 0; i < a->nbcc; i++)
        if (a->bcc[i] && *a->bcc[i])
            put_field(&w->extra, "bcc P", a->bcc[i]);
}

void spool_writer_commit(spool_writer_t *w, spool_commit_cb cb, void *arg)
{
    submit(w, WJ_COMMIT, cb, arg);
}

void spool_writer_abort(spool_writer_t *w)
{
    buf_free(&w->cur);
    submit(w, WJ_ABORT, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* the queue file: reading                                              */

typedef struct reader {
    FILE *f;
    char *line;
    size_t cap;
    size_t len;        /* of line, without the LF */
    long long off;     /* file offset of the line's first byte */
    long long next;    /* file offset after it */
    int lineno;
} reader_t;

/* One LF-terminated line without NUL bytes; -1 at EOF or when malformed. */
static int next_line(reader_t *r)
{
    ssize_t n = getline(&r->line, &r->cap, r->f);
    if (n <= 0 || r->line[n - 1] != '\n')
        return -1;
    if (memchr(r->line, 0, (size_t)n))
        return -1;
    r->lineno++;
    r->off = r->next;
    r->next += n;
    r->len = (size_t)n - 1;
    r->line[r->len] = 0;
    return 0;
}

/* "key value": the decoded value, or NULL (with err) when the line is another. */
static char *field(reader_t *r, const char *key, buf_t *err)
{
    size_t k = strlen(key);
    if (next_line(r) != 0) {
        buf_printf(err, "line %d: missing \"%s\" (truncated?)", r->lineno + 1, key);
        return NULL;
    }
    if (r->len < k + 1 || memcmp(r->line, key, k) != 0 || r->line[k] != ' ') {
        buf_printf(err, "line %d: expected \"%s\"", r->lineno, key);
        return NULL;
    }
    char *v = spool_decode_value(r->line + k + 1, r->len - k - 1);
    if (!v)
        buf_printf(err, "line %d: bad encoding in \"%s\"", r->lineno, key);
    return v;
}

static bool all_digits(const char *s, size_t maxlen)
{
    size_t n = strlen(s);
    if (n == 0 || n > maxlen)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool status_ok(char c)
{
    return c == QF_PENDING || c == QF_DONE || c == QF_FAILED;
}

static int parse(reader_t *r, qfile_t *q, long long fsize, buf_t *err)
{
    char *v;

    if (next_line(r) != 0 || (strcmp(r->line, QF_MAGIC) != 0 && strcmp(r->line, QF_MAGIC2) != 0)) {
        if (r->lineno == 1 && strncmp(r->line, QF_MAGIC_NAME, strlen(QF_MAGIC_NAME)) == 0)
            buf_printf(err, "unsupported queue file version \"%s\"", r->line);
        else
            buf_puts(err, "not a moat queue file");
        return -1;
    }
    q->version = strcmp(r->line, QF_MAGIC) == 0 ? 1 : 2;
    if (!(q->queue_id = field(r, "id", err)))
        return -1;
    if (!spool_valid_id(q->queue_id)) {
        buf_printf(err, "line %d: invalid queue id", r->lineno);
        return -1;
    }
    if (!(v = field(r, "arrival", err)))
        return -1;
    if (!all_digits(v, 18)) {
        buf_printf(err, "line %d: invalid arrival time", r->lineno);
        free(v);
        return -1;
    }
    q->arrival_usec = strtoll(v, NULL, 10);
    free(v);
    if (!(q->client_name = field(r, "client_name", err)) ||
        !(q->client_addr = field(r, "client_addr", err)) || !(q->helo = field(r, "helo", err)) ||
        !(q->protocol = field(r, "protocol", err)) || !(q->sender = field(r, "sender", err)) ||
        !(q->body_type = field(r, "body_type", err)))
        return -1;
    if (!body_type_ok(q->body_type)) {
        buf_printf(err, "line %d: invalid body type", r->lineno);
        return -1;
    }
    if (!(v = field(r, "smtputf8", err)))
        return -1;
    if (strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
        buf_printf(err, "line %d: smtputf8 must be yes or no", r->lineno);
        free(v);
        return -1;
    }
    q->smtputf8 = v[0] == 'y';
    free(v);
    if (!(v = field(r, "nrcpt", err)))
        return -1;
    long long nrcpt = all_digits(v, 9) ? strtoll(v, NULL, 10) : 0;
    free(v);
    /* The file size bounds the count, so a hostile count cannot allocate much. */
    if (nrcpt < 1 || nrcpt > fsize / QF_MIN_RCPT_LINE) {
        buf_printf(err, "line %d: invalid recipient count", r->lineno);
        return -1;
    }
    q->rcpts = xcalloc((size_t)nrcpt, sizeof *q->rcpts);
    q->rcpt_done = xcalloc((size_t)nrcpt, sizeof *q->rcpt_done);
    q->rcpt_status = xcalloc((size_t)nrcpt, sizeof *q->rcpt_status);
    q->rcpt_offset = xcalloc((size_t)nrcpt, sizeof *q->rcpt_offset);
    for (long long i = 0; i < nrcpt; i++) {
        size_t k = strlen(QF_RCPT_PREFIX);
        if (next_line(r) != 0 || r->len < k + 3 || memcmp(r->line, QF_RCPT_PREFIX, k) != 0 ||
            !status_ok(r->line[k]) || r->line[k + 1] != ' ') {
            buf_printf(err, "line %d: expected recipient %lld of %lld", r->lineno, i + 1, nrcpt);
            return -1;
        }
        char *a = spool_decode_value(r->line + k + 2, r->len - k - 2);
        if (!a) {
            buf_printf(err, "line %d: bad encoding in recipient", r->lineno);
            return -1;
        }
        q->rcpts[i] = a;
        q->rcpt_done[i] = r->line[k] == QF_DONE;
        q->rcpt_status[i] = r->line[k];
        q->rcpt_offset[i] = (long)(r->off + (long long)k);
        q->nrcpt = (size_t)i + 1;
    }
    if (next_line(r) != 0 || strcmp(r->line, "content") != 0) {
        buf_printf(err, "line %d: expected \"content\"", r->lineno);
        return -1;
    }
    q->content_offset = (long)r->next;
    return 0;
}

/* "key value" with this key on the current line: the decoded value, or
 * NULL (err set only when the key matched but the value is bad). */
static char *this_field(reader_t *r, const char *key, bool *bad, buf_t *err)
{
    size_t k = strlen(key);
    if (r->len < k + 1 || memcmp(r->line, key, k) != 0 || r->line[k] != ' ')
        return NULL;
    char *v = spool_decode_value(r->line + k + 1, r->len - k - 1);
    if (!v || !*v) {
        buf_printf(err, "line %d: bad value in \"%s\"", r->lineno, key);
        *bad = true;
        free(v);
        return NULL;
    }
    return v;
}

/* Version 2: the action records between the content and the trailer, in
 * their fixed order: filter?, redirect?, then "bcc S address" lines, which
 * join the recipients (status byte and all). */
static int parse_extra(reader_t *r, qfile_t *q, long long start, long long end, buf_t *err)
{
    enum { X_FILTER, X_REDIRECT, X_BCC } at = X_FILTER;
    bool bad = false;
    if (fseeko(r->f, (off_t)start, SEEK_SET) != 0) {
        buf_puts(err, "cannot seek to the action records");
        return -1;
    }
    r->next = start;
    while (r->next < end) {
        if (next_line(r) != 0 || r->next > end) {
            buf_puts(err, "action records: malformed or truncated");
            return -1;
        }
        char *v;
        size_t k = strlen(QF_BCC_PREFIX);
        if (at <= X_FILTER && (v = this_field(r, "filter", &bad, err)) != NULL) {
            q->filter = v;
            at = X_REDIRECT;
        } else if (!bad && at <= X_REDIRECT && (v = this_field(r, "redirect", &bad, err)) != NULL) {
            q->redirect = v;
            at = X_BCC;
        } else if (!bad && r->len >= k + 3 && memcmp(r->line, QF_BCC_PREFIX, k) == 0 &&
                   status_ok(r->line[k]) && r->line[k + 1] == ' ') {
            char *a = spool_decode_value(r->line + k + 2, r->len - k - 2);
            if (!a || !*a) {
                free(a);
                buf_printf(err, "action records: bad encoding in bcc");
                return -1;
            }
            size_t n = q->nrcpt + 1;
            q->rcpts = xrealloc(q->rcpts, n * sizeof *q->rcpts);
            q->rcpt_done = xrealloc(q->rcpt_done, n * sizeof *q->rcpt_done);
            q->rcpt_status = xrealloc(q->rcpt_status, n * sizeof *q->rcpt_status);
            q->rcpt_offset = xrealloc(q->rcpt_offset, n * sizeof *q->rcpt_offset);
            q->rcpts[n - 1] = a;
            q->rcpt_done[n - 1] = r->line[k] == QF_DONE;
            q->rcpt_status[n - 1] = r->line[k];
            q->rcpt_offset[n - 1] = (long)(r->off + (long long)k);
            q->nrcpt = n;
            q->nbcc++;
            at = X_BCC;
        } else {
            if (!bad)
                buf_printf(err, "action records: unexpected \"%.20s\"", r->line);
            return -1;
        }
    }
    return 0;
}

int qfile_read(const char *path, qfile_t *out, buf_t *err)
{
    struct stat st;
    char trailer[QF_TRAILER_LEN];
    reader_t r;
    int saved;

    memset(out, 0, sizeof *out);
    out->mark_fd = -1;
    memset(&r, 0, sizeof r);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        saved = errno;
        buf_printf(err, "open %s: %s", path, strerror(saved));
        errno = saved;
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        saved = errno;
        buf_printf(err, "stat %s: %s", path, strerror(saved));
        close(fd);
        errno = saved;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        buf_puts(err, "not a regular file");
        goto malformed_fd;
    }
    if (st.st_size < (off_t)(sizeof QF_MAGIC + QF_TRAILER_LEN)) {
        buf_puts(err, "file too short (truncated?)");
        goto malformed_fd;
    }
    ssize_t got = pread(fd, trailer, QF_TRAILER_LEN, st.st_size - (off_t)QF_TRAILER_LEN);
    if (got < 0) {
        saved = errno;
        buf_printf(err, "read %s: %s", path, strerror(saved));
        close(fd);
        errno = saved;
        return -1;
    }
    long long csize = -1;
    if ((size_t)got == QF_TRAILER_LEN &&
        memcmp(trailer, QF_TRAILER_WORD, strlen(QF_TRAILER_WORD)) == 0 &&
        trailer[QF_TRAILER_LEN - 1] == '\n') {
        csize = 0;
        for (size_t i = strlen(QF_TRAILER_WORD); i < QF_TRAILER_LEN - 1; i++) {
            if (trailer[i] < '0' || trailer[i] > '9' || csize > (LLONG_MAX - 9) / 10) {
                csize = -1;
                break;
            }
            csize = csize * 10 + (trailer[i] - '0');
        }
    }
    if (csize < 0) {
        buf_puts(err, "no end-of-file trailer (incomplete file)");
        goto malformed_fd;
    }

    r.f = fdopen(fd, "r");
    if (!r.f) {
        saved = errno;
        buf_printf(err, "fdopen %s: %s", path, strerror(saved));
        close(fd);
        errno = saved;
        return -1;
    }
    if (parse(&r, out, (long long)st.st_size, err) != 0)
        goto malformed;
    long long extra_end = (long long)st.st_size - (long long)QF_TRAILER_LEN;
    if (csize > (long long)st.st_size || (long long)out->content_offset + csize > extra_end ||
        (out->version == 1 && (long long)out->content_offset + csize != extra_end)) {
        buf_printf(err, "content length %lld does not match the file size", csize);
        goto malformed;
    }
    if (out->version == 2 && parse_extra(&r, out, (long long)out->content_offset + csize, extra_end, err) != 0)
        goto malformed;
    out->content_size = (long)csize;
    out->path = xstrdup(path);
    free(r.line);
    fclose(r.f);
    return 0;

malformed_fd:
    close(fd);
    qfile_free(out);
    errno = EBADMSG;
    return -1;
malformed:
    free(r.line);
    fclose(r.f);
    qfile_free(out);
    errno = EBADMSG;
    return -1;
}

void qfile_free(qfile_t *q)
{
    if (!q)
        return;
    free(q->path);
    free(q->queue_id);
    free(q->client_name);
    free(q->client_addr);
    free(q->helo);
    free(q->protocol);
    free(q->sender);
    free(q->body_type);
    for (size_t i = 0; q->rcpts && i < q->nrcpt; i++)
        free(q->rcpts[i]);
    free(q->rcpts);
    free(q->rcpt_done);
    free(q->rcpt_status);
    free(q->rcpt_offset);
    free(q->filter);
    free(q->redirect);
    if (q->mark_open)
        close(q->mark_fd);
    memset(q, 0, sizeof *q);
    q->mark_fd = -1;
}

int qfile_open_marks(qfile_t *q, buf_t *err)
{
    if (q->mark_open)
        return 0;
    if (!q->path) {
        buf_puts(err, "no queue file");
        return -1;
    }
    int fd = open(q->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        buf_printf(err, "open %s: %s", q->path, strerror(e));
        errno = e;
        return -1;
    }
    q->mark_fd = fd;
    q->mark_open = true;
    return 0;
}

int qfile_mark(qfile_t *q, size_t i, char status, buf_t *err)
{
    char c = 0;
    if (i >= q->nrcpt || !q->path) {
        buf_puts(err, "no such recipient");
        return -1;
    }
    if (!status_ok(status)) {
        buf_puts(err, "invalid recipient status");
        return -1;
    }
    /* Through the fd the queue manager opened when it loaded the file, so
     * the mark lands in the file wherever it was renamed to meanwhile. */
    bool own = !q->mark_open;
    int fd = own ? open(q->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW) : q->mark_fd;
    if (fd < 0) {
        buf_printf(err, "open %s: %s", q->path, strerror(errno));
        return -1;
    }
    int rc = 0;
    /* Check the byte first: a replaced or edited file must not be patched blindly. */
    if (pread(fd, &c, 1, (off_t)q->rcpt_offset[i]) != 1 || !status_ok(c)) {
        buf_printf(err, "%s: recipient %zu status byte not found", q->path, i + 1);
        rc = -1;
    } else if (c != status && (pwrite(fd, &status, 1, (off_t)q->rcpt_offset[i]) != 1 || fdatasync(fd) != 0)) {
        buf_printf(err, "update %s: %s", q->path, strerror(errno ? errno : EIO));
        rc = -1;
    }
    if (own && close(fd) != 0 && rc == 0) {
        buf_printf(err, "close %s: %s", q->path, strerror(errno));
        rc = -1;
    }
    if (rc == 0) {
        q->rcpt_status[i] = status;
        q->rcpt_done[i] = status == QF_DONE;
    }
    return rc;
}

int qfile_mark_done(qfile_t *q, size_t i, buf_t *err)
{
    return qfile_mark(q, i, QF_DONE, err);
}
