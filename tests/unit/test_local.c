/* Unit tests for src/queue/local.c: mailbox names and Maildir delivery.
 * (The queue manager's own tests are in test_qmgr.c.) */
#include "harness.h"
#include "queue_testlib.h"

#include "core/buf.h"
#include "core/pool.h"
#include "config/config.h"
#include "core/util.h"
#include "queue/qmgr.h"
#include "queue/spool.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char *mkpath(const char *fmt_dir, const char *a, const char *b)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s%s%s", fmt_dir, a, b ? b : "");
    return buf_steal(&p);
}

static void name_is(const char *local, const char *delims, const char *want)
{
    buf_t b = BUF_INIT;
    buf_puts(&b, "stale");
    local_mailbox_name(local, delims, &b);
    CHECK_STR(buf_cstr(&b), want);
    buf_free(&b);
}

TEST(local_mailbox_names)
{
    name_is("User", "+", "user");
    name_is("user+ext", "+", "user");
    name_is("user-ext+x", "+-", "user");
    name_is("user+ext", "", "user%2Bext");
    name_is("user+ext", NULL, "user%2Bext");
    name_is("+foo", "+", "%2Bfoo");            /* never an empty base */
    name_is("a+", "+", "a");
    name_is("John.Smith_1-2", "", "john.smith_1-2");
    name_is(".", "", "%2E");
    name_is("..", "", "%2E.");
    name_is("../etc/passwd", "", "%2E.%2Fetc%2Fpasswd");
    name_is(".hidden", "", "%2Ehidden");
    name_is("a/b", "", "a%2Fb");
    name_is("a%b", "", "a%25b");                /* '%' escaped: the mapping is one-to-one */
    name_is("john doe", "", "john%20doe");
    name_is("\xC3\x84" "B", "", "%C3%84b");    /* UTF-8 bytes, ASCII lower-cased */
    name_is("", "+", "%00");
}

/* A fixture: a spool with one committed message, read back as a qfile. */
typedef struct lfx {
    char dir[64];
    char root[128];
    struct event_base *base;
    pool_t *pool;
    spool_t *sp;
    qfile_t q;
} lfx_t;

static void on_commit(void *arg, bool ok, const char *errtext)
{
    (void)errtext;
    *(int *)arg = ok ? 1 : -1;
}

static int lfx_open(lfx_t *fx, const char *const *rcpts, size_t nrcpt, const char *content)
{
    buf_t err = BUF_INIT, p = BUF_INIT;
    char id[QUEUE_ID_MAX];
    int done = 0;
    memset(fx, 0, sizeof *fx);
    str_copy(fx->dir, "/tmp/moat-local-XXXXXX", sizeof fx->dir);
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->root, sizeof fx->root, "%s/mail/", fx->dir);
    if (mkdir(fx->root, 0700) != 0)
        return -1;
    fx->base = event_base_new();
    fx->pool = pool_new(fx->base, 2);
    buf_printf(&p, "%s/queue", fx->dir);
    fx->sp = spool_open(buf_cstr(&p), fx->pool, &err);
    if (!fx->sp)
        return -1;
    spool_new_queue_id(fx->sp, id);
    envelope_t e = {.queue_id = id, .arrival_usec = now_usec(), .client_name = "localhost",
                    .client_addr = "127.0.0.1", .helo = "client.test", .protocol = "ESMTP",
                    .sender = "alice@example.org", .rcpts = rcpts, .nrcpt = nrcpt,
                    .body_type = "", .smtputf8 = false};
    spool_writer_t *w = spool_writer_new(fx->sp, &e);
    spool_writer_append(w, content, strlen(content));
    spool_writer_commit(w, on_commit, &done);
    while (!done)
        event_base_loop(fx->base, EVLOOP_ONCE);
    if (done != 1)
        return -1;
    spool_active_path(fx->sp, id, &p);
    int rc = qfile_read(buf_cstr(&p), &fx->q, &err);
    buf_free(&p);
    buf_free(&err);
    return rc;
}

static void lfx_close(lfx_t *fx)
{
    qfile_free(&fx->q);
    spool_close(&fx->sp);
    pool_free(&fx->pool);
    if (fx->base)
        event_base_free(fx->base);
    rm_rf(fx->dir);
}

static const char *const rcpts3[] = {"User+Box@Example.COM", "\"john doe\"@example.com",
                                     "postmaster"};
static const char body[] = "Received: from client.test\nSubject: test\n\nHello.\n.dot line\n";

TEST(local_delivery_writes_one_file)
{
    lfx_t fx;
    REQUIRE(lfx_open(&fx, rcpts3, 3, body) == 0);
    buf_t detail = BUF_INIT;
    CHECK(local_deliver_to(fx.root, "+", &fx.q, 0, &detail) == 0);

    char *mbox = mkpath(fx.root, "user", NULL);
    char *newd = mkpath(mbox, "/new", NULL), *tmpd = mkpath(mbox, "/tmp", NULL);
    char *curd = mkpath(mbox, "/cur", NULL);
    char *name = NULL;
    CHECK_INT(list_dir(newd, &name), 1);
    CHECK_INT(list_dir(tmpd, NULL), 0);
    CHECK_INT(list_dir(curd, NULL), 0);
    REQUIRE(name);
    char *file = mkpath(newd, "/", name);
    CHECK_STR(buf_cstr(&detail), file);   /* detail names the delivered file */
    char *got = slurp(file);
    buf_t want = BUF_INIT;
    buf_printf(&want, "Return-Path: <alice@example.org>\nDelivered-To: User+Box@Example.COM\n%s", body);
    CHECK_STR(got, buf_cstr(&want));
    struct stat st;
    CHECK(stat(file, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(stat(mbox, &st) == 0 && (st.st_mode & 0777) == 0700);
    /* time.M<usec>P<pid>Q<n>.<host> */
    CHECK(strstr(name, ".M") != NULL && strstr(name, "P") != NULL && strstr(name, "Q") != NULL);
    CHECK(strchr(name, '/') == NULL && strchr(name, ':') == NULL);

    /* A second delivery gets its own name. */
    CHECK(local_deliver_to(fx.root, "+", &fx.q, 0, &detail) == 0);
    CHECK_INT(list_dir(newd, NULL), 2);

    /* Quoted local part; unqualified address. */
    CHECK(local_deliver_to(fx.root, "+", &fx.q, 1, &detail) == 0);
    char *jd = mkpath(fx.root, "john%20doe/new", NULL);
    CHECK_INT(list_dir(jd, NULL), 1);
    CHECK(local_deliver_to(fx.root, "+", &fx.q, 2, &detail) == 0);
    char *pm = mkpath(fx.root, "postmaster/new", NULL);
    CHECK_INT(list_dir(pm, NULL), 1);
    CHECK(local_deliver_to(fx.root, "+", &fx.q, 3, &detail) == -1);

    free(jd);
    free(pm);
    free(got);
    free(file);
    free(name);
    free(mbox);
    free(newd);
    free(tmpd);
    free(curd);
    buf_free(&want);
    buf_free(&detail);
    lfx_close(&fx);
}

TEST(local_delivery_refuses_bad_roots)
{
    lfx_t fx;
    REQUIRE(lfx_open(&fx, rcpts3, 1, body) == 0);
    buf_t detail = BUF_INIT;
    char *noslash = mkpath(fx.dir, "/mail", NULL);
    CHECK(local_deliver_to(noslash, "+", &fx.q, 0, &detail) == -1);
    CHECK(strstr(buf_cstr(&detail), "Maildir") != NULL);
    CHECK(local_deliver_to("", "+", &fx.q, 0, &detail) == -1);
    CHECK(local_deliver_to(NULL, "+", &fx.q, 0, &detail) == -1);
    char *missing = mkpath(fx.dir, "/nomail/", NULL);
    CHECK(local_deliver_to(missing, "+", &fx.q, 0, &detail) == -1);
    CHECK(strstr(buf_cstr(&detail), "No such file") != NULL);
    CHECK(access(missing, F_OK) != 0);   /* the root is never created */
    CHECK_INT(list_dir(fx.root, NULL), 0);

    /* A non-directory where the mailbox belongs. */
    char *blocker = mkpath(fx.root, "user", NULL);
    int fd = open(blocker, O_WRONLY | O_CREAT, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    CHECK(local_deliver_to(fx.root, "+", &fx.q, 0, &detail) == -1);
    CHECK(strstr(buf_cstr(&detail), "user") != NULL);
    free(blocker);
    free(noslash);
    free(missing);
    buf_free(&detail);
    lfx_close(&fx);
}

TEST(local_delivery_failure_leaves_nothing_in_new)
{
    /* A write that fails part-way (a file size limit stands in for a full
     * disk; it applies to root too): -1, and neither tmp/ nor new/ keeps
     * a partial file. */
    buf_t big = BUF_INIT;
    for (int i = 0; i < 4000; i++)
        buf_puts(&big, "0123456789012345678901234567890123456789012345678901234567890123\n");
    struct rlimit old, lim;
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    lfx_t fx;
    REQUIRE(lfx_open(&fx, rcpts3, 1, buf_cstr(&big)) == 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 100000;
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    buf_t detail = BUF_INIT;
    int rc = local_deliver_to(fx.root, "+", &fx.q, 0, &detail);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, oldsig);
    CHECK(rc == -1);
    CHECK(strstr(buf_cstr(&detail), "write maildir file") != NULL);
    char *newd = mkpath(fx.root, "user/new", NULL), *tmpd = mkpath(fx.root, "user/tmp", NULL);
    CHECK_INT(list_dir(newd, NULL), 0);
    CHECK_INT(list_dir(tmpd, NULL), 0);
    free(newd);
    free(tmpd);
    buf_free(&detail);
    buf_free(&big);
    lfx_close(&fx);
}
