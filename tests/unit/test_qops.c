/* Unit tests for src/queue/qops.c: queue names and paths, spool_find,
 * spool_move (ENOENT/EEXIST, directories made on demand), spool_delete
 * (logs go with the file), and the defer/bounce logs (round trip of odd
 * bytes, replace vs append, torn and malformed lines). */
#include "harness.h"

#include "core/buf.h"
#include "core/util.h"
#include "queue/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int qo_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

typedef struct qo_fx {
    char dir[64];
    spool_t *sp;
} qo_fx_t;

static int qo_open(qo_fx_t *fx)
{
    buf_t err = BUF_INIT, q = BUF_INIT;
    str_copy(fx->dir, "/tmp/moat-qops-XXXXXX", sizeof fx->dir);
    if (!mkdtemp(fx->dir))
        return -1;
    buf_printf(&q, "%s/queue", fx->dir);
    fx->sp = spool_open(buf_cstr(&q), NULL, &err);
    if (!fx->sp)
        fprintf(stderr, "spool_open: %s\n", buf_cstr(&err));
    buf_free(&err);
    buf_free(&q);
    return fx->sp ? 0 : -1;
}

static void qo_close(qo_fx_t *fx)
{
    spool_close(&fx->sp);
    nftw(fx->dir, qo_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* queue_directory/SUB/NAME */
static char *qo_path(qo_fx_t *fx, const char *sub, const char *name)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/queue/%s/%s", fx->dir, sub, name);
    return buf_steal(&p);
}

static int qo_put(qo_fx_t *fx, const char *sub, const char *name, const char *text)
{
    char *p = qo_path(fx, sub, name);
    buf_t d = BUF_INIT;
    buf_printf(&d, "%s/queue/%s", fx->dir, sub);
    mkdir(buf_cstr(&d), 0700);
    buf_free(&d);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    free(p);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, text, strlen(text));
    close(fd);
    return w == (ssize_t)strlen(text) ? 0 : -1;
}

static bool qo_exists(qo_fx_t *fx, const char *sub, const char *name)
{
    char *p = qo_path(fx, sub, name);
    struct stat st;
    bool r = lstat(p, &st) == 0;
    free(p);
    return r;
}

static char *qo_slurp(qo_fx_t *fx, const char *sub, const char *name)
{
    char *p = qo_path(fx, sub, name);
    buf_t b = BUF_INIT;
    char tmp[4096];
    int fd = open(p, O_RDONLY);
    free(p);
    if (fd < 0)
        return NULL;
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0)
        buf_append(&b, tmp, (size_t)r);
    close(fd);
    return b.data ? buf_steal(&b) : xstrdup("");
}

TEST(qops_queue_names_and_paths)
{
    qo_fx_t fx;
    REQUIRE(qo_open(&fx) == 0);
    CHECK_STR(spool_queue_name(QUEUE_INCOMING), "incoming");
    CHECK_STR(spool_queue_name(QUEUE_ACTIVE), "active");
    CHECK_STR(spool_queue_name(QUEUE_DEFERRED), "deferred");
    CHECK_STR(spool_queue_name(QUEUE_HOLD), "hold");
    CHECK_STR(spool_queue_name(QUEUE_CORRUPT), "corrupt");
    buf_t p = BUF_INIT, want = BUF_INIT;
    buf_puts(&p, "junk that must go");
    spool_path(fx.sp, QUEUE_DEFERRED, "ABC123", &p);
    buf_printf(&want, "%s/queue/deferred/ABC123", fx.dir);
    CHECK_STR(buf_cstr(&p), buf_cstr(&want));
    buf_free(&p);
    buf_free(&want);
    qo_close(&fx);
}

TEST(qops_find_in_order)
{
    qo_fx_t fx;
    REQUIRE(qo_open(&fx) == 0);
    errno = 0;
    CHECK_INT(spool_find(fx.sp, "A1"), -1);
    CHECK_INT(errno, ENOENT);
    errno = 0;
    CHECK_INT(spool_find(fx.sp, "../active/A1"), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(spool_find(fx.sp, "a1"), -1);   /* lower case is not an ID */

    REQUIRE(qo_put(&fx, "corrupt", "A1", "x") == 0);
    CHECK_INT(spool_find(fx.sp, "A1"), QUEUE_CORRUPT);
    REQUIRE(qo_put(&fx, "incoming", "A1", "x") == 0);
    CHECK_INT(spool_find(fx.sp, "A1"), QUEUE_INCOMING);
    REQUIRE(qo_put(&fx, "hold", "A1", "x") == 0);
    CHECK_INT(spool_find(fx.sp, "A1"), QUEUE_HOLD);
    REQUIRE(qo_put(&fx, "deferred", "A1", "x") == 0);
    CHECK_INT(spool_find(fx.sp, "A1"), QUEUE_DEFERRED);
    REQUIRE(qo_put(&fx, "active", "A1", "x") == 0);
    CHECK_INT(spool_find(fx.sp, "A1"), QUEUE_ACTIVE);

    /* A directory by that name is not a message. */
    char *d = qo_path(&fx, "active", "B2");
    REQUIRE(mkdir(d, 0700) == 0);
    free(d);
    CHECK_INT(spool_find(fx.sp, "B2"), -1);
    qo_close(&fx);
}

TEST(qops_move_semantics)
{
    qo_fx_t fx;
    buf_t err = BUF_INIT;
    REQUIRE(qo_open(&fx) == 0);
    REQUIRE(qo_put(&fx, "active", "C3", "message C3") == 0);

    /* deferred/ does not exist yet (spool_open may not make it): made on demand. */
    char *dd = qo_path(&fx, "deferred", "");
    rmdir(dd);
    free(dd);
    CHECK_INT(spool_move(fx.sp, "C3", QUEUE_ACTIVE, QUEUE_DEFERRED, &err), 0);
    CHECK_STR(buf_cstr(&err), "");
    CHECK(!qo_exists(&fx, "active", "C3"));
    char *s = qo_slurp(&fx, "deferred", "C3");
    CHECK_STR(s, "message C3");
    free(s);

    /* Second mover loses: ENOENT, nothing changes. */
    errno = 0;
    CHECK_INT(spool_move(fx.sp, "C3", QUEUE_ACTIVE, QUEUE_HOLD, &err), -1);
    CHECK_INT(errno, ENOENT);
    CHECK(strstr(buf_cstr(&err), "C3") != NULL);
    CHECK(!qo_exists(&fx, "hold", "C3"));
    CHECK(qo_exists(&fx, "deferred", "C3"));

    /* Never replace: EEXIST, both files intact. */
    REQUIRE(qo_put(&fx, "hold", "C3", "another C3") == 0);
    buf_reset(&err);
    errno = 0;
    CHECK_INT(spool_move(fx.sp, "C3", QUEUE_DEFERRED, QUEUE_HOLD, &err), -1);
    CHECK_INT(errno, EEXIST);
    s = qo_slurp(&fx, "hold", "C3");
    CHECK_STR(s, "another C3");
    free(s);
    s = qo_slurp(&fx, "deferred", "C3");
    CHECK_STR(s, "message C3");
    free(s);

    /* A missing source queue directory is ENOENT too. */
    char *cd = qo_path(&fx, "corrupt", "");
    rmdir(cd);
    free(cd);
    errno = 0;
    CHECK_INT(spool_move(fx.sp, "C3", QUEUE_CORRUPT, QUEUE_ACTIVE, &err), -1);
    CHECK_INT(errno, ENOENT);

    /* Names outside the ID alphabet never reach the disk. */
    errno = 0;
    CHECK_INT(spool_move(fx.sp, "../hold/C3", QUEUE_DEFERRED, QUEUE_ACTIVE, &err), -1);
    CHECK_INT(errno, EINVAL);
    CHECK(qo_exists(&fx, "hold", "C3"));

    /* The file keeps its mtime (the deferred queue's "next attempt"). */
    char *p = qo_path(&fx, "deferred", "C3");
    struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
    REQUIRE(utimensat(AT_FDCWD, p, ts, 0) == 0);
    free(p);
    buf_reset(&err);
    CHECK_INT(spool_move(fx.sp, "C3", QUEUE_DEFERRED, QUEUE_ACTIVE, &err), 0);
    p = qo_path(&fx, "active", "C3");
    struct stat st;
    CHECK(stat(p, &st) == 0 && st.st_mtime == 1000000000);
    free(p);
    buf_free(&err);
    qo_close(&fx);
}

static qlog_rec_t qo_rec(const char *rcpt, const char *orig, const char *dsn, long long when,
                         const char *relay, const char *text, const char *reply)
{
    qlog_rec_t r = {(char *)rcpt, (char *)orig, (char *)dsn, when, (char *)relay, (char *)text,
                    (char *)reply};
    return r;
}

TEST(qops_log_roundtrip_odd_bytes)
{
    qo_fx_t fx;
    buf_t err = BUF_INIT;
    REQUIRE(qo_open(&fx) == 0);
    qlog_rec_t in[4];
    in[0] = qo_rec("bob@example.com", "", "4.4.1", 1700000000123456LL, "none",
                   "connect to 127.0.0.1[127.0.0.1]:1: Connection refused", "");
    in[1] = qo_rec("-", "orig with space@x", "5.1.1", 0, "mx.example.com[192.0.2.1]:25",
                   "100% sure\tand\r\nmore - %41", "550 5.1.1 <-> user unknown\x7f");
    in[2] = qo_rec("\xc3\xa9l\xc3\xa8ve@\xc3\xa9" "cole.fr", "--", " ", 1, "%", "-", "- -");
    in[3] = qo_rec("x@y", "", "", 42, "", "", "");
    qlog_rec_t *out = NULL;
    size_t n = 99;

    /* No log yet: zero records, not an error. */
    CHECK_INT(qlog_read(fx.sp, QLOG_DEFER, "D4", &out, &n, &err), 0);
    CHECK_INT(n, 0);
    CHECK(out == NULL);

    /* defer/ and bounce/ are made on demand. */
    CHECK_INT(qlog_write(fx.sp, QLOG_DEFER, "D4", in, 4, &err), 0);
    CHECK_STR(buf_cstr(&err), "");
    CHECK_INT(qlog_write(fx.sp, QLOG_BOUNCE, "D4", in, 4, &err), 0);
    for (int k = 0; k < 2; k++) {
        REQUIRE(qlog_read(fx.sp, k ? QLOG_BOUNCE : QLOG_DEFER, "D4", &out, &n, &err) == 0);
        REQUIRE(n == 4);
        for (size_t i = 0; i < 4; i++) {
            CHECK_STR(out[i].rcpt, in[i].rcpt);
            CHECK_STR(out[i].orig, in[i].orig);
            CHECK_STR(out[i].dsn, in[i].dsn);
            CHECK_INT(out[i].when_usec, in[i].when_usec);
            CHECK_STR(out[i].relay, in[i].relay);
            CHECK_STR(out[i].text, in[i].text);
            CHECK_STR(out[i].reply, in[i].reply);
        }
        qlog_free(&out, n);
        CHECK(out == NULL);
    }
    /* One line per record, seven single-space fields. */
    char *raw = qo_slurp(&fx, "defer", "D4");
    REQUIRE(raw != NULL);
    int lines = 0;
    for (char *p = raw; *p; p++)
        lines += *p == '\n';
    CHECK_INT(lines, 4);
    CHECK(strncmp(raw, "bob@example.com - 4.4.1 1700000000123456 none connect%20to%20", 61) == 0);
    free(raw);
    buf_free(&err);
    qo_close(&fx);
}

TEST(qops_log_defer_replaces_bounce_appends)
{
    qo_fx_t fx;
    buf_t err = BUF_INIT;
    REQUIRE(qo_open(&fx) == 0);
    qlog_rec_t a = qo_rec("a@x", "", "4.0.0", 1, "none", "first", "");
    qlog_rec_t b = qo_rec("b@x", "", "4.0.0", 2, "none", "second", "");
    qlog_rec_t *out = NULL;
    size_t n = 0;

    CHECK_INT(qlog_write(fx.sp, QLOG_DEFER, "E5", &a, 1, &err), 0);
    CHECK_INT(qlog_write(fx.sp, QLOG_DEFER, "E5", &b, 1, &err), 0);
    REQUIRE(qlog_read(fx.sp, QLOG_DEFER, "E5", &out, &n, &err) == 0);
    REQUIRE(n == 1);
    CHECK_STR(out[0].text, "second");
    qlog_free(&out, n);
    /* No leftover temporary files beside it. */
    char *tmpl = qo_path(&fx, "defer", "");
    int count = 0;
    DIR *d = opendir(tmpl);
    free(tmpl);
    REQUIRE(d != NULL);
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        count += de->d_name[0] != '.';
    closedir(d);
    CHECK_INT(count, 1);
    /* An empty defer log is no log. */
    CHECK_INT(qlog_write(fx.sp, QLOG_DEFER, "E5", NULL, 0, &err), 0);
    CHECK(!qo_exists(&fx, "defer", "E5"));

    CHECK_INT(qlog_write(fx.sp, QLOG_BOUNCE, "E5", &a, 1, &err), 0);
    CHECK_INT(qlog_write(fx.sp, QLOG_BOUNCE, "E5", &b, 1, &err), 0);
    REQUIRE(qlog_read(fx.sp, QLOG_BOUNCE, "E5", &out, &n, &err) == 0);
    REQUIRE(n == 2);
    CHECK_STR(out[0].text, "first");
    CHECK_STR(out[1].text, "second");
    qlog_free(&out, n);
    buf_free(&err);
    qo_close(&fx);
}

TEST(qops_log_skips_torn_and_malformed_lines)
{
    qo_fx_t fx;
    buf_t err = BUF_INIT;
    REQUIRE(qo_open(&fx) == 0);
    REQUIRE(qo_put(&fx, "bounce", "F6",
                   "good@x - 5.0.0 7 none why -\n"
                   "six@x - 5.0.0 7 none why\n"                 /* 6 fields */
                   "eight@x - 5.0.0 7 none why - extra\n"       /* 8 fields */
                   "two@x  - 5.0.0 7 none why -\n"              /* empty field */
                   "bad@x - 5.0.0 7x none why -\n"              /* when not digits */
                   "nul@x - 5.0.0 7 none w%00hy -\n"            /* %00 */
                   "esc@x - 5.0.0 7 none w%4 -\n"               /* short escape */
                   "ctl@x - 5.0.0 7 none w\thy -\n"             /* raw control byte */
                   "\n"
                   "also@x - 5.0.0 8 none also%20good -\n"
                   "torn@x - 5.0.0 9 no") == 0);                /* no LF: torn */
    qlog_rec_t *out = NULL;
    size_t n = 0;
    REQUIRE(qlog_read(fx.sp, QLOG_BOUNCE, "F6", &out, &n, &err) == 0);
    REQUIRE(n == 2);
    CHECK_STR(out[0].rcpt, "good@x");
    CHECK_STR(out[0].reply, "");
    CHECK_STR(out[1].text, "also good");
    CHECK_INT(out[1].when_usec, 8);
    qlog_free(&out, n);

    /* An append after the torn line starts on a line of its own. */
    qlog_rec_t c = qo_rec("new@x", "", "5.1.1", 10, "none", "new", "");
    CHECK_INT(qlog_write(fx.sp, QLOG_BOUNCE, "F6", &c, 1, &err), 0);
    REQUIRE(qlog_read(fx.sp, QLOG_BOUNCE, "F6", &out, &n, &err) == 0);
    REQUIRE(n == 3);
    CHECK_STR(out[2].rcpt, "new@x");
    qlog_free(&out, n);

    /* Bad IDs are refused without touching the disk. */
    CHECK_INT(qlog_read(fx.sp, QLOG_BOUNCE, "../bounce/F6", &out, &n, &err), -1);
    CHECK_INT(qlog_write(fx.sp, QLOG_DEFER, "f6", &c, 1, &err), -1);
    buf_free(&err);
    qo_close(&fx);
}

TEST(qops_delete_takes_logs_along)
{
    qo_fx_t fx;
    buf_t err = BUF_INIT;
    REQUIRE(qo_open(&fx) == 0);
    qlog_rec_t a = qo_rec("a@x", "", "4.0.0", 1, "none", "why", "");
    REQUIRE(qo_put(&fx, "deferred", "A7", "m") == 0);
    REQUIRE(qlog_write(fx.sp, QLOG_DEFER, "A7", &a, 1, &err) == 0);
    REQUIRE(qlog_write(fx.sp, QLOG_BOUNCE, "A7", &a, 1, &err) == 0);

    /* Not in that queue: ENOENT, and the logs stay with the message. */
    errno = 0;
    CHECK_INT(spool_delete(fx.sp, "A7", QUEUE_ACTIVE, &err), -1);
    CHECK_INT(errno, ENOENT);
    CHECK(qo_exists(&fx, "defer", "A7"));
    CHECK(qo_exists(&fx, "deferred", "A7"));

    buf_reset(&err);
    CHECK_INT(spool_delete(fx.sp, "A7", QUEUE_DEFERRED, &err), 0);
    CHECK_STR(buf_cstr(&err), "");
    CHECK(!qo_exists(&fx, "deferred", "A7"));
    CHECK(!qo_exists(&fx, "defer", "A7"));
    CHECK(!qo_exists(&fx, "bounce", "A7"));

    /* qlog_remove alone: missing is fine. */
    REQUIRE(qlog_write(fx.sp, QLOG_DEFER, "B8", &a, 1, &err) == 0);
    qlog_remove(fx.sp, "B8");
    qlog_remove(fx.sp, "B8");
    CHECK(!qo_exists(&fx, "defer", "B8"));
    errno = 0;
    CHECK_INT(spool_delete(fx.sp, "B8/", QUEUE_DEFERRED, &err), -1);
    CHECK_INT(errno, EINVAL);
    buf_free(&err);
    qo_close(&fx);
}
