/* Unit tests for src/queue/spool.c: queue IDs, the writer (with a real
 * event loop and pool), the queue file reader, status marks, recovery,
 * injection and the deferred queue scan. */
#include "harness.h"

#include "core/buf.h"
#include "core/pool.h"
#include "core/util.h"
#include "queue/spool.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------- helpers ---------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path);
    return unlink(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static char *path2(const char *a, const char *b)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s", a, b);
    return buf_steal(&p);
}

static char *path3(const char *a, const char *b, const char *c)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s/%s", a, b, c);
    return buf_steal(&p);
}

static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, data, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static char *read_file(const char *path, size_t *len)
{
    buf_t b = BUF_INIT;
    char tmp[8192];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0)
        buf_append(&b, tmp, (size_t)r);
    close(fd);
    *len = b.len;
    if (!b.data)
        return xstrdup("");
    return buf_steal(&b);
}

typedef struct fixture {
    char dir[64];
    struct event_base *base;
    pool_t *pool;
    spool_t *sp;
} fixture_t;

static int fx_open(fixture_t *fx)
{
    buf_t err = BUF_INIT;
    str_copy(fx->dir, "/tmp/moat-spool-XXXXXX", sizeof fx->dir);
    if (!mkdtemp(fx->dir))
        return -1;
    fx->base = event_base_new();
    fx->pool = pool_new(fx->base, 3);
    char *q = path2(fx->dir, "queue");
    fx->sp = spool_open(q, fx->pool, &err);
    free(q);
    if (!fx->sp)
        fprintf(stderr, "spool_open: %s\n", buf_cstr(&err));
    buf_free(&err);
    return fx->sp ? 0 : -1;
}

static void fx_drain(fixture_t *fx)
{
    while (pool_pending(fx->pool) > 0)
        event_base_loop(fx->base, EVLOOP_ONCE);
}

static void fx_close(fixture_t *fx)
{
    if (fx->pool)
        fx_drain(fx);
    spool_close(&fx->sp);
    pool_free(&fx->pool);
    if (fx->base)
        event_base_free(fx->base);
    rm_rf(fx->dir);
}

static char *qpath(fixture_t *fx, const char *sub, const char *name)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/queue/%s", fx->dir, sub);
    if (name)
        buf_printf(&p, "/%s", name);
    return buf_steal(&p);
}

static int qcount(fixture_t *fx, const char *sub)
{
    char *p = qpath(fx, sub, NULL);
    int n = count_entries(p);
    free(p);
    return n;
}

typedef struct commit_result {
    int called;
    bool ok;
    char errtext[200];
} commit_result_t;

static void on_commit(void *arg, bool ok, const char *errtext)
{
    commit_result_t *r = arg;
    r->called++;
    r->ok = ok;
    str_copy(r->errtext, errtext ? errtext : "", sizeof r->errtext);
}

static void wait_commit(fixture_t *fx, commit_result_t *r)
{
    while (!r->called)
        event_base_loop(fx->base, EVLOOP_ONCE);
}

static const char *const test_rcpts[] = {"bob@example.com", "carol@example.net"};

static envelope_t test_env(const char *id)
{
    envelope_t e = {
        .queue_id = id,
        .arrival_usec = 1700000000123456LL,
        .client_name = "mail.example.org",
        .client_addr = "192.0.2.1",
        .helo = "mail.example.org",
        .protocol = "ESMTP",
        .sender = "alice@example.org",
        .rcpts = test_rcpts,
        .nrcpt = 2,
        .body_type = "8BITMIME",
        .smtputf8 = true,
    };
    return e;
}

/* Commit a small message; returns its ID in id. */
static bool commit_small(fixture_t *fx, char id[QUEUE_ID_MAX], const char *content)
{
    commit_result_t r = {0};
    spool_new_queue_id(fx->sp, id);
    envelope_t e = test_env(id);
    spool_writer_t *w = spool_writer_new(fx->sp, &e);
    spool_writer_append(w, content, strlen(content));
    spool_writer_commit(w, on_commit, &r);
    wait_commit(fx, &r);
    return r.ok;
}

/* ---------- tests ---------- */

static int cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

TEST(spool_queue_id_format_and_unique)
{
    enum { N = 20000 };
    char (*ids)[QUEUE_ID_MAX] = xcalloc(N, QUEUE_ID_MAX);
    for (int i = 0; i < N; i++)
        spool_new_queue_id(NULL, ids[i]);
    for (int i = 0; i < N; i++) {
        size_t n = strlen(ids[i]);
        CHECK(n >= 12 && n <= 14);
        CHECK(spool_valid_id(ids[i]));
    }
    qsort(ids, N, QUEUE_ID_MAX, cmp_id);
    int dups = 0;
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            dups++;
    CHECK_INT(dups, 0);
    free(ids);

    CHECK(!spool_valid_id(""));
    CHECK(!spool_valid_id("../ABC"));
    CHECK(!spool_valid_id("abc123"));
    CHECK(!spool_valid_id("0123456789ABCDEF0123456789"));
    CHECK(spool_valid_id("0A1B2C3D4E5F"));
}

TEST(spool_commit_roundtrip_large)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    spool_new_queue_id(fx.sp, id);
    envelope_t e = test_env(id);
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    CHECK_STR(spool_writer_id(w), id);

    /* Pieces of many sizes, one bigger than the 64 KiB flush size. */
    buf_t want = BUF_INIT;
    size_t sizes[] = {1, 17, 4096, 70000, 3, 65536, 65537, 12345, 100, 200000, 9};
    size_t written = 0;
    for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
        char *piece = xmalloc(sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            piece[i] = (i % 61 == 60) ? '\n' : (char)('a' + (i + k) % 26);
        buf_append(&want, piece, sizes[k]);
        spool_writer_append(w, piece, sizes[k]);
        free(piece);
        /* Nothing is reported written until the loop runs a done callback. */
        CHECK_INT(spool_writer_backlog(w), want.len - written);
        CHECK_INT(spool_writer_size(w), want.len);
        if (k == 5) {
            while (pool_pending(fx.pool) > 0)
                event_base_loop(fx.base, EVLOOP_ONCE);
            /* The full buffers were written; what is left is below the flush size. */
            CHECK(spool_writer_backlog(w) <= 64 * 1024);
            written = want.len - spool_writer_backlog(w);
            CHECK(written > 0);
        }
    }
    commit_result_t r = {0};
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    CHECK_INT(r.called, 1);
    CHECK(r.ok);
    CHECK_INT(qcount(&fx, "incoming"), 0);
    CHECK_INT(qcount(&fx, "active"), 1);

    char *p = qpath(&fx, "active", id);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK_STR(q.queue_id, id);
    CHECK_STR(q.path, p);
    CHECK_INT(q.arrival_usec, 1700000000123456LL);
    CHECK_STR(q.client_name, "mail.example.org");
    CHECK_STR(q.client_addr, "192.0.2.1");
    CHECK_STR(q.helo, "mail.example.org");
    CHECK_STR(q.protocol, "ESMTP");
    CHECK_STR(q.sender, "alice@example.org");
    CHECK_STR(q.body_type, "8BITMIME");
    CHECK(q.smtputf8);
    REQUIRE(q.nrcpt == 2);
    CHECK_STR(q.rcpts[0], "bob@example.com");
    CHECK_STR(q.rcpts[1], "carol@example.net");
    CHECK(!q.rcpt_done[0] && !q.rcpt_done[1]);
    CHECK_INT(q.content_size, want.len);

    size_t flen = 0;
    char *file = read_file(p, &flen);
    REQUIRE(file != NULL);
    REQUIRE((size_t)q.content_offset + (size_t)q.content_size <= flen);
    CHECK(memcmp(file + q.content_offset, want.data, want.len) == 0);
    CHECK(file[q.rcpt_offset[0]] == 'P');
    free(file);
    qfile_free(&q);
    CHECK(q.path == NULL && q.rcpts == NULL);
    qfile_free(&q);   /* twice is harmless */
    free(p);
    buf_free(&err);
    buf_free(&want);
    fx_close(&fx);
}

TEST(spool_values_are_encoded)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    spool_new_queue_id(fx.sp, id);
    const char *rc[] = {"odd%rcpt\r\nx@example.com"};
    envelope_t e = test_env(id);
    e.helo = "evil\nrcpt D hacked@example.com";
    e.sender = "";
    e.client_name = "100%";
    e.rcpts = rc;
    e.nrcpt = 1;
    e.body_type = "";
    e.smtputf8 = false;
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    commit_result_t r = {0};
    spool_writer_commit(w, on_commit, &r);   /* empty content is a message too */
    wait_commit(&fx, &r);
    REQUIRE(r.ok);

    char *p = qpath(&fx, "active", id);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK_STR(q.helo, "evil\nrcpt D hacked@example.com");
    CHECK_STR(q.sender, "");
    CHECK_STR(q.client_name, "100%");
    CHECK_STR(q.body_type, "");
    CHECK(!q.smtputf8);
    REQUIRE(q.nrcpt == 1);
    CHECK_STR(q.rcpts[0], "odd%rcpt\r\nx@example.com");
    CHECK_INT(q.content_size, 0);
    qfile_free(&q);

    /* Every field stays on its own line: count the lines of the envelope. */
    size_t flen = 0;
    char *file = read_file(p, &flen);
    REQUIRE(file);
    CHECK(strstr(file, "\nrcpt D") == NULL);
    free(file);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_abort_removes_file)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    spool_new_queue_id(fx.sp, id);
    envelope_t e = test_env(id);
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    char big[100000];
    memset(big, 'x', sizeof big);
    spool_writer_append(w, big, sizeof big);
    fx_drain(&fx);
    CHECK_INT(qcount(&fx, "incoming"), 1);   /* being written */
    spool_writer_abort(w);
    fx_drain(&fx);
    CHECK_INT(qcount(&fx, "incoming"), 0);
    CHECK_INT(qcount(&fx, "active"), 0);
    fx_close(&fx);
}

TEST(spool_refuses_bad_envelopes)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    envelope_t e = test_env("../../etc/passwd");
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    commit_result_t r = {0};
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    CHECK(!r.ok);
    CHECK(strncmp(r.errtext, "4.3.0 ", 6) == 0);

    e = test_env("0123456789ABCDEF0123456789");   /* too long: never truncated */
    w = spool_writer_new(fx.sp, &e);
    memset(&r, 0, sizeof r);
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    CHECK(!r.ok);

    char id[QUEUE_ID_MAX];
    spool_new_queue_id(fx.sp, id);
    e = test_env(id);
    e.nrcpt = 0;
    w = spool_writer_new(fx.sp, &e);
    memset(&r, 0, sizeof r);
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    CHECK(!r.ok);
    CHECK_INT(qcount(&fx, "incoming"), 0);
    CHECK_INT(qcount(&fx, "active"), 0);
    fx_close(&fx);
}

TEST(spool_empty_id_gets_one)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    envelope_t e = test_env(NULL);
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    char id[QUEUE_ID_MAX];
    str_copy(id, spool_writer_id(w), sizeof id);
    CHECK(spool_valid_id(id));
    commit_result_t r = {0};
    spool_writer_append(w, "x\n", 2);
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    CHECK(r.ok);
    char *p = qpath(&fx, "active", id);
    CHECK(access(p, F_OK) == 0);
    free(p);
    fx_close(&fx);
}

TEST(spool_mark_done_survives_reread)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, id, "Subject: hi\n\nbody\n"));
    char *p = qpath(&fx, "active", id);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    struct stat before, after;
    REQUIRE(stat(p, &before) == 0);
    CHECK(qfile_mark_done(&q, 1, &err) == 0);
    CHECK(q.rcpt_done[1] == 1);
    CHECK(qfile_mark_done(&q, 5, &err) != 0);
    qfile_free(&q);
    REQUIRE(stat(p, &after) == 0);
    CHECK_INT(after.st_size, before.st_size);

    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK(q.rcpt_done[0] == 0);
    CHECK(q.rcpt_done[1] == 1);
    CHECK_STR(q.rcpts[1], "carol@example.net");
    CHECK(qfile_mark_done(&q, 1, &err) == 0);   /* idempotent */
    qfile_free(&q);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

static void on_recovered(void *arg, const char *id)
{
    buf_t *b = arg;
    buf_printf(b, "%s,", id);
}

TEST(spool_recover_sorts_out_the_queue)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id1[QUEUE_ID_MAX], id2[QUEUE_ID_MAX], id3[QUEUE_ID_MAX], id4[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, id1, "one\n"));
    REQUIRE(commit_small(&fx, id2, "two\n"));
    spool_new_queue_id(fx.sp, id3);
    spool_new_queue_id(fx.sp, id4);

    /* An interrupted write. */
    char *p = qpath(&fx, "incoming", id3);
    REQUIRE(write_file(p, "MOAT-QUEUE 1\nid ", 16) == 0);
    free(p);
    /* A truncated active file: a valid one without its trailer. */
    size_t len = 0;
    p = qpath(&fx, "active", id2);
    char *data = read_file(p, &len);
    free(p);
    REQUIRE(data && len > 30);
    p = qpath(&fx, "active", id4);
    REQUIRE(write_file(p, data, len - 30) == 0);
    free(p);
    /* A valid file under another file's name. */
    p = qpath(&fx, "active", "ABCDEF012345");
    REQUIRE(write_file(p, data, len) == 0);
    free(p);
    free(data);
    /* Garbage. */
    p = qpath(&fx, "active", "0000000GARBAGE");
    REQUIRE(write_file(p, "hello world\n", 12) == 0);
    free(p);

    buf_t got = BUF_INIT, want = BUF_INIT;
    CHECK_INT(spool_recover(fx.sp, on_recovered, &got), 1);
    buf_printf(&want, "%s,%s,", id1, id2);   /* IDs sort by time */
    CHECK_STR(buf_cstr(&got), buf_cstr(&want));
    CHECK_INT(qcount(&fx, "incoming"), 0);
    CHECK_INT(qcount(&fx, "active"), 2);
    CHECK_INT(qcount(&fx, "corrupt"), 3);
    p = qpath(&fx, "corrupt", id4);
    CHECK(access(p, F_OK) == 0);
    free(p);

    /* A second run finds a clean queue. */
    buf_reset(&got);
    CHECK_INT(spool_recover(fx.sp, on_recovered, &got), 0);
    CHECK_STR(buf_cstr(&got), buf_cstr(&want));
    CHECK_INT(qcount(&fx, "corrupt"), 3);

    /* A name already taken in corrupt/ does not lose the newcomer. */
    p = qpath(&fx, "active", id4);
    REQUIRE(write_file(p, "junk\n", 5) == 0);
    free(p);
    CHECK(spool_quarantine(fx.sp, id4, &got) == 0);
    CHECK_INT(qcount(&fx, "corrupt"), 4);
    buf_free(&got);
    buf_free(&want);
    fx_close(&fx);
}

TEST(spool_remove_active)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, id, "x\n"));
    buf_t err = BUF_INIT, p = BUF_INIT;
    spool_active_path(fx.sp, id, &p);
    CHECK(access(buf_cstr(&p), F_OK) == 0);
    CHECK(spool_remove(fx.sp, id, &err) == 0);
    CHECK(access(buf_cstr(&p), F_OK) != 0);
    CHECK(spool_remove(fx.sp, id, &err) == 0);   /* already gone is fine */
    CHECK(spool_remove(fx.sp, "../x", &err) != 0);
    buf_free(&err);
    buf_free(&p);
    fx_close(&fx);
}

TEST(spool_commit_fails_when_rename_fails)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char *act = qpath(&fx, "active", NULL);
    /* root ignores permissions: take the directory away instead. */
    if (geteuid() == 0)
        REQUIRE(rmdir(act) == 0);
    else
        REQUIRE(chmod(act, 0500) == 0);

    char id[QUEUE_ID_MAX];
    spool_new_queue_id(fx.sp, id);
    envelope_t e = test_env(id);
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    spool_writer_append(w, "Subject: x\n\nbody\n", 17);
    commit_result_t r = {0};
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    CHECK_INT(r.called, 1);
    CHECK(!r.ok);
    CHECK(strncmp(r.errtext, "4.3.0 ", 6) == 0);
    CHECK_INT(qcount(&fx, "incoming"), 0);
    if (geteuid() == 0)
        CHECK(mkdir(act, 0700) == 0);
    else
        CHECK(chmod(act, 0700) == 0);
    CHECK_INT(qcount(&fx, "active"), 0);
    free(act);
    fx_close(&fx);
}

TEST(spool_write_error_fails_commit)
{
    /* A file size limit makes write() fail with EFBIG mid-message, like a
     * full disk; it applies to root too. */
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    struct rlimit old, lim;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 100000;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);

    char id[QUEUE_ID_MAX];
    spool_new_queue_id(fx.sp, id);
    envelope_t e = test_env(id);
    spool_writer_t *w = spool_writer_new(fx.sp, &e);
    char chunk[16384];
    memset(chunk, 'y', sizeof chunk);
    chunk[sizeof chunk - 1] = '\n';
    for (int i = 0; i < 40; i++) {
        spool_writer_append(w, chunk, sizeof chunk);
        fx_drain(&fx);
    }
    /* Once a write failed, appends are not kept in memory. */
    CHECK(spool_writer_backlog(w) < 2 * sizeof chunk);
    CHECK_INT(spool_writer_size(w), 40 * sizeof chunk);
    commit_result_t r = {0};
    spool_writer_commit(w, on_commit, &r);
    wait_commit(&fx, &r);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, oldsig);
    CHECK(!r.ok);
    CHECK(strncmp(r.errtext, "4.3.0 ", 6) == 0);
    CHECK_INT(qcount(&fx, "incoming"), 0);
    CHECK_INT(qcount(&fx, "active"), 0);
    fx_close(&fx);
}

TEST(spool_qfile_read_rejects_malformed)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, id, "hello\n"));
    char *p = qpath(&fx, "active", id);
    size_t len = 0;
    char *good = read_file(p, &len);
    REQUIRE(good);
    char *t = path2(fx.dir, "t");
    qfile_t q;
    buf_t err = BUF_INIT;

    REQUIRE(write_file(t, good, len) == 0);
    CHECK(qfile_read(t, &q, &err) == 0);
    qfile_free(&q);

    struct { const char *from, *to; } edits[] = {
        {"MOAT-QUEUE 1", "MOAT-QUEUE 9"},      /* unknown version */
        {"nrcpt 2", "nrcpt 3"},                 /* count mismatch */
        {"nrcpt 2", "nrcpt 0"},
        {"rcpt P bob", "rcpt X bob"},           /* bad status byte */
        {"smtputf8 yes", "smtputf8 maybe"},
        {"body_type 8BITMIME", "body_type BINARY"},
        {"helo mail", "helo %0Gail"},           /* bad escape */
        {"helo mail", "helo %00il"},            /* NUL */
        {"arrival 1", "arrival x"},
        {"\ncontent\n", "\ncontenT\n"},
        {"MOAT-END 0", "MOAT-END x"},
        {"MOAT-END 00000000000000000006", "MOAT-END 00000000000000000005"},
    };
    for (size_t k = 0; k < ARRAY_LEN(edits); k++) {
        char *copy = xstrndup(good, len);
        char *at = strstr(copy, edits[k].from);
        REQUIRE(at);
        buf_t b = BUF_INIT;
        buf_append(&b, copy, (size_t)(at - copy));
        buf_puts(&b, edits[k].to);
        buf_puts(&b, at + strlen(edits[k].from));
        REQUIRE(write_file(t, b.data, b.len) == 0);
        buf_reset(&err);
        errno = 0;
        int rc = qfile_read(t, &q, &err);
        if (rc == 0)
            fprintf(stderr, "accepted edit %zu: %s -> %s\n", k, edits[k].from, edits[k].to);
        CHECK(rc == -1);
        CHECK(errno == EBADMSG);
        CHECK(err.len > 0);
        CHECK(q.rcpts == NULL && q.queue_id == NULL);
        buf_free(&b);
        free(copy);
    }
    /* Every truncation is rejected. */
    for (size_t cut = 0; cut < len; cut++) {
        REQUIRE(write_file(t, good, cut) == 0);
        CHECK(qfile_read(t, &q, &err) == -1);
    }
    /* Extra bytes after the trailer too. */
    buf_t b = BUF_INIT;
    buf_append(&b, good, len);
    buf_puts(&b, "x");
    REQUIRE(write_file(t, b.data, b.len) == 0);
    CHECK(qfile_read(t, &q, &err) == -1);
    buf_free(&b);

    unlink(t);
    errno = 0;
    CHECK(qfile_read(t, &q, &err) == -1);
    CHECK(errno == ENOENT);
    free(t);
    free(good);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_open_creates_tree)
{
    char dir[] = "/tmp/moat-spool-XXXXXX";
    REQUIRE(mkdtemp(dir));
    struct event_base *base = event_base_new();
    pool_t *pool = pool_new(base, 1);
    buf_t err = BUF_INIT;
    char *qd = path3(dir, "q", "");   /* trailing slash is fine */
    spool_t *sp = spool_open(qd, pool, &err);
    REQUIRE(sp);
    char *want = path2(dir, "q");
    CHECK_STR(spool_dir(sp), want);
    const char *subs[] = {"incoming", "active", "corrupt", "hold", "deferred", "defer", "bounce"};
    for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
        char *s = path3(dir, "q", subs[i]);
        struct stat st;
        CHECK(stat(s, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
        free(s);
    }
    spool_close(&sp);
    CHECK(sp == NULL);
    /* Opening again is fine; a file where a directory belongs is not. */
    sp = spool_open(qd, pool, &err);
    CHECK(sp != NULL);
    spool_close(&sp);
    char *inc = path3(dir, "q", "corrupt");
    rmdir(inc);
    write_file(inc, "x", 1);
    buf_reset(&err);
    CHECK(spool_open(qd, pool, &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "corrupt") != NULL);
    free(inc);
    free(want);
    free(qd);
    buf_free(&err);
    pool_free(&pool);
    event_base_free(base);
    rm_rf(dir);
}

/* ---------- access actions (HOLD, FILTER, REDIRECT, BCC): format version 2 ---------- */

static bool commit_with(fixture_t *fx, char id[QUEUE_ID_MAX], const char *content, const spool_actions_t *a)
{
    commit_result_t r = {0};
    spool_new_queue_id(fx->sp, id);
    envelope_t e = test_env(id);
    spool_writer_t *w = spool_writer_new(fx->sp, &e);
    spool_writer_append(w, content, strlen(content));
    spool_writer_actions(w, a);
    spool_writer_commit(w, on_commit, &r);
    wait_commit(fx, &r);
    return r.ok;
}

TEST(spool_actions_roundtrip)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    static const char *const bcc[] = {"archive@example.com", "odd%\x01@example.com"};
    spool_actions_t a = {.filter = "smtp:[127.0.0.1]:10025", .redirect = "boss@example.com", .bcc = bcc, .nbcc = 2};
    REQUIRE(commit_with(&fx, id, "Subject: x\n\nbody without final newline", &a));
    char *p = qpath(&fx, "active", id);
    size_t len = 0;
    char *data = read_file(p, &len);
    REQUIRE(data);
    CHECK(strncmp(data, "MOAT-QUEUE 2\n", 13) == 0);
    CHECK(strstr(data, "body without final newline"
                       "filter smtp:[127.0.0.1]:10025\nredirect boss@example.com\n"
                       "bcc P archive@example.com\nbcc P odd%25%01@example.com\nMOAT-END ") != NULL);

    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK_INT(q.version, 2);
    CHECK_STR(q.filter, "smtp:[127.0.0.1]:10025");
    CHECK_STR(q.redirect, "boss@example.com");
    CHECK_INT(q.nrcpt, 4);
    CHECK_INT(q.nbcc, 2);
    CHECK_STR(q.rcpts[2], "archive@example.com");
    CHECK_STR(q.rcpts[3], "odd%\x01@example.com");
    CHECK_INT(q.content_size, (long)strlen("Subject: x\n\nbody without final newline"));
    /* A BCC recipient's status byte is recorded like any other. */
    REQUIRE(qfile_mark_done(&q, 3, &err) == 0);
    qfile_free(&q);
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK(!q.rcpt_done[2] && q.rcpt_done[3]);
    qfile_free(&q);

    /* Every truncation of a version 2 file is refused, as in version 1. */
    free(data);
    data = read_file(p, &len);
    char *t = qpath(&fx, "corrupt", "TRUNC");
    for (size_t cut = 0; cut < len; cut++) {
        REQUIRE(write_file(t, data, cut) == 0);
        buf_reset(&err);
        if (qfile_read(t, &q, &err) == 0) {
            CHECK(!"a truncated version 2 file was accepted");
            qfile_free(&q);
        }
    }
    free(t);
    free(data);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_actions_records_out_of_order_refused)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    spool_actions_t a = {.filter = "smtp:x", .redirect = "r@example.com"};
    REQUIRE(commit_with(&fx, id, "x\n", &a));
    char *p = qpath(&fx, "active", id);
    size_t len = 0;
    char *data = read_file(p, &len);
    REQUIRE(data);
    /* Swap the two records (same length overall): the reader wants filter first. */
    char *f = strstr(data, "filter smtp:x\nredirect r@example.com\n");
    REQUIRE(f);
    memcpy(f, "redirect r@example.com\nfilter smtp:x\n", strlen("redirect r@example.com\nfilter smtp:x\n"));
    REQUIRE(write_file(p, data, len) == 0);
    qfile_t q;
    buf_t err = BUF_INIT;
    CHECK(qfile_read(p, &q, &err) != 0);
    CHECK_INT(errno, EBADMSG);
    CHECK(strstr(buf_cstr(&err), "action records") != NULL);
    /* Version 1 allows nothing between the content and the trailer. */
    memcpy(f, "filter smtp:x\nredirect r@example.com\n", strlen("filter smtp:x\nredirect r@example.com\n"));
    data[11] = '1';
    REQUIRE(write_file(p, data, len) == 0);
    buf_reset(&err);
    CHECK(qfile_read(p, &q, &err) != 0);
    CHECK(strstr(buf_cstr(&err), "does not match the file size") != NULL);
    free(data);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_no_actions_stays_version_1)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    spool_actions_t none = {0};
    REQUIRE(commit_with(&fx, id, "x\n", &none));
    char *p = qpath(&fx, "active", id);
    size_t len = 0;
    char *data = read_file(p, &len);
    REQUIRE(data);
    CHECK(strncmp(data, "MOAT-QUEUE 1\n", 13) == 0);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK_INT(q.version, 1);
    CHECK(q.filter == NULL && q.redirect == NULL && q.nbcc == 0);
    qfile_free(&q);
    free(data);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_hold_queue_and_release)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    CHECK_INT(qcount(&fx, "hold"), 0);   /* spool_open made it */
    char held[QUEUE_ID_MAX], normal[QUEUE_ID_MAX];
    spool_actions_t a = {.hold = true};
    REQUIRE(commit_with(&fx, held, "held\n", &a));
    REQUIRE(commit_small(&fx, normal, "normal\n"));
    CHECK_INT(qcount(&fx, "hold"), 1);
    CHECK_INT(qcount(&fx, "active"), 1);
    char *p = qpath(&fx, "hold", held);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK_STR(q.queue_id, held);
    qfile_free(&q);
    free(p);

    /* Recovery never touches hold/ and never reports a held message. */
    buf_t got = BUF_INIT;
    CHECK_INT(spool_recover(fx.sp, on_recovered, &got), 0);
    CHECK(strstr(buf_cstr(&got), normal) != NULL);
    CHECK(strstr(buf_cstr(&got), held) == NULL);
    CHECK_INT(qcount(&fx, "hold"), 1);

    /* Release: hold/ID -> active/ID; then recovery sees it. */
    CHECK(spool_release(fx.sp, held, &err) == 0);
    CHECK_INT(qcount(&fx, "hold"), 0);
    CHECK_INT(qcount(&fx, "active"), 2);
    buf_reset(&got);
    spool_recover(fx.sp, on_recovered, &got);
    CHECK(strstr(buf_cstr(&got), held) != NULL);
    /* Nothing to release, and never a path outside the queue. */
    buf_reset(&err);
    CHECK(spool_release(fx.sp, held, &err) != 0);
    CHECK(strstr(buf_cstr(&err), "No such file") != NULL);
    buf_reset(&err);
    CHECK(spool_release(fx.sp, "../active/X", &err) != 0);
    CHECK_STR(buf_cstr(&err), "invalid queue id");
    buf_free(&got);
    buf_free(&err);
    fx_close(&fx);
}

/* ---------- the full queue manager's part: F status, marks, inject, deferred/ ---------- */

TEST(spool_failed_status_and_marks)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, id, "Subject: f\n\nbody\n"));
    char *p = qpath(&fx, "active", id);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK(q.rcpt_status[0] == QF_PENDING && q.rcpt_status[1] == QF_PENDING);
    CHECK(!q.mark_open);
    CHECK(qfile_mark(&q, 0, QF_FAILED, &err) == 0);
    CHECK(q.rcpt_status[0] == QF_FAILED);
    CHECK(q.rcpt_done[0] == 0);   /* rcpt_done is 1 only for D */
    CHECK(qfile_mark(&q, 1, 'X', &err) != 0);
    CHECK(qfile_mark(&q, 2, QF_DONE, &err) != 0);
    qfile_free(&q);

    /* F is read back; F -> D as after its notice was queued. */
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK(q.rcpt_status[0] == QF_FAILED && q.rcpt_status[1] == QF_PENDING);
    CHECK(qfile_mark(&q, 0, QF_DONE, &err) == 0);
    CHECK(q.rcpt_done[0] == 1);
    qfile_free(&q);
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK(q.rcpt_status[0] == QF_DONE && q.rcpt_done[0] == 1);
    qfile_free(&q);

    /* A bcc line takes F as well. */
    char id2[QUEUE_ID_MAX];
    const char *bcc[] = {"archive@example.com"};
    spool_actions_t a = {.bcc = bcc, .nbcc = 1};
    REQUIRE(commit_with(&fx, id2, "x\n", &a));
    char *p2 = qpath(&fx, "active", id2);
    REQUIRE(qfile_read(p2, &q, &err) == 0);
    REQUIRE(q.nrcpt == 3);
    CHECK(qfile_mark(&q, 2, QF_FAILED, &err) == 0);
    qfile_free(&q);
    REQUIRE(qfile_read(p2, &q, &err) == 0);
    CHECK(q.rcpt_status[2] == QF_FAILED);
    CHECK_STR(q.rcpts[2], "archive@example.com");
    qfile_free(&q);
    free(p2);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_marks_follow_the_file_through_a_rename)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char id[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, id, "Subject: held\n\nbody\n"));
    char *p = qpath(&fx, "active", id), *h = qpath(&fx, "hold", id);
    qfile_t q;
    buf_t err = BUF_INIT;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    REQUIRE(qfile_open_marks(&q, &err) == 0);
    CHECK(q.mark_open && q.mark_fd >= 0);
    CHECK(qfile_open_marks(&q, &err) == 0);   /* once is enough */
    /* `moat queue hold` moves it while a delivery runs ... */
    REQUIRE(rename(p, h) == 0);
    /* ... and the delivery's mark still lands in the file. */
    CHECK(qfile_mark(&q, 1, QF_DONE, &err) == 0);
    qfile_free(&q);
    CHECK(!q.mark_open);
    REQUIRE(qfile_read(h, &q, &err) == 0);
    CHECK(q.rcpt_status[1] == QF_DONE);
    qfile_free(&q);
    /* Without a kept fd, a mark goes by path, and fails when the file left. */
    REQUIRE(qfile_read(h, &q, &err) == 0);
    REQUIRE(rename(h, p) == 0);
    buf_reset(&err);
    CHECK(qfile_mark(&q, 0, QF_DONE, &err) != 0);
    CHECK(strstr(buf_cstr(&err), "No such file") != NULL);
    qfile_free(&q);
    free(p);
    free(h);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_inject_writes_a_complete_file)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    const char *rcpt[] = {"alice@example.org"};
    envelope_t e = {.arrival_usec = 1700000000000001LL, .client_name = "localhost",
                    .client_addr = "127.0.0.1", .helo = "", .protocol = "local", .sender = "",
                    .rcpts = rcpt, .nrcpt = 1, .body_type = "", .smtputf8 = false};
    const char content[] = "From: MAILER-DAEMON\nSubject: notice\n\nline one\n";
    char id[QUEUE_ID_MAX] = "";
    buf_t err = BUF_INIT;
    REQUIRE(spool_inject(fx.sp, &e, content, strlen(content), id, &err) == 0);
    CHECK(spool_valid_id(id));
    CHECK_INT(qcount(&fx, "active"), 1);
    CHECK_INT(qcount(&fx, "incoming"), 0);
    char *p = qpath(&fx, "active", id);
    qfile_t q;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK_STR(q.queue_id, id);
    CHECK_STR(q.sender, "");
    CHECK_STR(q.protocol, "local");
    CHECK_INT(q.nrcpt, 1);
    CHECK_STR(q.rcpts[0], "alice@example.org");
    CHECK(q.rcpt_status[0] == QF_PENDING);
    CHECK_INT(q.content_size, strlen(content));
    size_t len;
    char *all = read_file(p, &len);
    REQUIRE(all != NULL);
    CHECK(memcmp(all + q.content_offset, content, strlen(content)) == 0);
    free(all);
    qfile_free(&q);

    /* A given ID is used, and never replaces a file. */
    char id2[QUEUE_ID_MAX];
    e.queue_id = "0ABCDEF0123456";
    REQUIRE(spool_inject(fx.sp, &e, "x\n", 2, id2, &err) == 0);
    CHECK_STR(id2, "0ABCDEF0123456");
    buf_reset(&err);
    CHECK(spool_inject(fx.sp, &e, "y\n", 2, id2, &err) != 0);
    CHECK(strstr(buf_cstr(&err), "exists") != NULL);
    CHECK_INT(qcount(&fx, "active"), 2);
    CHECK_INT(qcount(&fx, "incoming"), 0);   /* the loser left nothing behind */
    /* Refused before touching the disk. */
    e.queue_id = "../x";
    buf_reset(&err);
    CHECK(spool_inject(fx.sp, &e, "x\n", 2, id2, &err) != 0);
    e.queue_id = NULL;
    e.nrcpt = 0;
    buf_reset(&err);
    CHECK(spool_inject(fx.sp, &e, "x\n", 2, id2, &err) != 0);
    CHECK(strstr(buf_cstr(&err), "no recipients") != NULL);
    CHECK_INT(qcount(&fx, "active"), 2);
    free(p);
    buf_free(&err);
    fx_close(&fx);
}

static void set_mtime(const char *path, long long when)
{
    struct timespec ts[2] = {{(time_t)when, 0}, {(time_t)when, 0}};
    utimensat(AT_FDCWD, path, ts, 0);
}

static bool in_ids(char **ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

TEST(spool_deferred_scan_by_mtime)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char past[QUEUE_ID_MAX], now_due[QUEUE_ID_MAX], future[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, past, "a\n"));
    REQUIRE(commit_small(&fx, now_due, "b\n"));
    REQUIRE(commit_small(&fx, future, "c\n"));
    long long now = 1800000000;   /* the scan takes "now" from its caller */
    const char *ids3[] = {past, now_due, future};
    const long long when[] = {now - 100, now, now + 100};
    for (int i = 0; i < 3; i++) {
        char *a = qpath(&fx, "active", ids3[i]), *d = qpath(&fx, "deferred", ids3[i]);
        set_mtime(a, when[i]);
        REQUIRE(rename(a, d) == 0);
        free(a);
        free(d);
    }
    /* Debris that is not an ID is not touched. */
    char *junk = qpath(&fx, "deferred", "notes.txt");
    write_file(junk, "x", 1);
    free(junk);

    char **ids;
    size_t n, nfiles;
    buf_t err = BUF_INIT;
    REQUIRE(spool_scan_deferred(fx.sp, now, false, &ids, &n, &nfiles, &err) == 0);
    CHECK_INT(nfiles, 3);
    CHECK_INT(n, 2);
    CHECK(in_ids(ids, n, past) && in_ids(ids, n, now_due) && !in_ids(ids, n, future));
    spool_free_ids(ids, n);
    CHECK_INT(qcount(&fx, "active"), 2);
    CHECK_INT(qcount(&fx, "deferred"), 2);   /* future + notes.txt */

    /* A second scan finds nothing new; "flush" takes everything. */
    REQUIRE(spool_scan_deferred(fx.sp, now, false, &ids, &n, &nfiles, &err) == 0);
    CHECK_INT(n, 0);
    spool_free_ids(ids, n);
    REQUIRE(spool_scan_deferred(fx.sp, now, true, &ids, &n, &nfiles, &err) == 0);
    CHECK_INT(n, 1);
    CHECK(n == 1 && strcmp(ids[0], future) == 0);
    spool_free_ids(ids, n);
    CHECK_INT(qcount(&fx, "active"), 3);

    /* A name already in active/ is never replaced: the deferred copy stays. */
    char *a = qpath(&fx, "active", past), *d = qpath(&fx, "deferred", past);
    size_t len;
    char *copy = read_file(a, &len);
    REQUIRE(copy != NULL);
    write_file(d, copy, len);
    set_mtime(d, now - 5);
    REQUIRE(spool_scan_deferred(fx.sp, now, false, &ids, &n, &nfiles, &err) == 0);
    CHECK_INT(n, 0);
    spool_free_ids(ids, n);
    CHECK(access(d, F_OK) == 0);
    free(copy);
    free(a);
    free(d);
    buf_free(&err);
    fx_close(&fx);
}

TEST(spool_recover_validates_deferred)
{
    fixture_t fx = {0};
    REQUIRE(fx_open(&fx) == 0);
    char good[QUEUE_ID_MAX], act[QUEUE_ID_MAX];
    REQUIRE(commit_small(&fx, good, "good\n"));
    REQUIRE(commit_small(&fx, act, "active\n"));
    char *a = qpath(&fx, "active", good), *d = qpath(&fx, "deferred", good);
    REQUIRE(rename(a, d) == 0);
    char *bad = qpath(&fx, "deferred", "00AA00BB00CC");
    write_file(bad, "MOAT-QUEUE 1\ngarbage\n", 21);
    buf_t got = BUF_INIT;
    CHECK_INT(spool_recover(fx.sp, on_recovered, &got), 0);
    /* Only active/ is reported; the corrupt deferred file went to corrupt/. */
    CHECK(strstr(buf_cstr(&got), act) != NULL);
    CHECK(strstr(buf_cstr(&got), good) == NULL);
    CHECK(access(d, F_OK) == 0);
    CHECK(access(bad, F_OK) != 0);
    char *c = qpath(&fx, "corrupt", "00AA00BB00CC");
    CHECK(access(c, F_OK) == 0);
    free(c);
    free(bad);
    free(a);
    free(d);
    buf_free(&got);
    fx_close(&fx);
}
