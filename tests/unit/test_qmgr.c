/* Unit tests for src/queue/qmgr*.c end to end, with a real event loop,
 * pool and spool: local (Maildir) delivery, the discard/error/retry
 * transports via transport_maps, REDIRECT and FILTER records, bounce
 * notices (delivered to a local sender's Maildir), double bounces, expiry,
 * the deferred queue and its scans, corrupt files, the control handler.
 * SMTP delivery is covered by the protocol tests (tests/proto/test_queue_*.py). */
#include "harness.h"
#include "queue_testlib.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/pool.h"
#include "core/util.h"
#include "queue/qmgr.h"
#include "queue/spool.h"

#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct qfx {
    char dir[64];
    struct event_base *base;
    pool_t *pool;
    spool_t *sp;
    config_t *cfg;
    qmgr_t *qm;
} qfx_t;

static const char body[] = "Received: from client.test\nSubject: test\nMessage-ID: <t@client.test>\n\nHello.\n";

/* transport: lines for a texthash transport_maps table ("" for none). */
static int qfx_open(qfx_t *fx, const char *extra_main_cf, const char *transport)
{
    buf_t main_cf = BUF_INIT, err = BUF_INIT, p = BUF_INIT;
    memset(fx, 0, sizeof *fx);
    str_copy(fx->dir, "/tmp/moat-qmgr-XXXXXX", sizeof fx->dir);
    if (!mkdtemp(fx->dir))
        return -1;
    buf_printf(&p, "%s/transport", fx->dir);
    int fd = open(buf_cstr(&p), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, transport, strlen(transport)) != (ssize_t)strlen(transport))
        return -1;
    close(fd);
    buf_printf(&main_cf,
               "queue_directory = %s/queue\n"
               "mail_spool_directory = %s/mail/\n"
               "myhostname = host.example\n"
               "mydestination = example.com, localhost, $myhostname\n"
               "recipient_delimiter = +\n"
               "queue_run_delay = 1s\n"
               "minimal_backoff_time = 100s\n"
               "maximal_backoff_time = 200s\n"
               "transport_maps = texthash:%s\n%s",
               fx->dir, fx->dir, buf_cstr(&p), extra_main_cf ? extra_main_cf : "");
    fx->cfg = config_load_text(buf_cstr(&main_cf), NULL, &err, NULL);
    if (!fx->cfg) {
        fprintf(stderr, "config_load_text: %s\n", buf_cstr(&err));
        return -1;
    }
    buf_reset(&p);
    buf_printf(&p, "%s/mail", fx->dir);
    mkdir(buf_cstr(&p), 0700);
    fx->base = event_base_new();
    fx->pool = pool_new(fx->base, 2);
    buf_reset(&p);
    buf_printf(&p, "%s/queue", fx->dir);
    fx->sp = spool_open(buf_cstr(&p), fx->pool, &err);
    if (fx->sp)
        fx->qm = qmgr_new(fx->base, fx->pool, fx->sp, fx->cfg, NULL, &err);
    if (!fx->qm)
        fprintf(stderr, "qmgr: %s\n", buf_cstr(&err));
    buf_free(&main_cf);
    buf_free(&err);
    buf_free(&p);
    return fx->qm ? 0 : -1;
}

static void qfx_close(qfx_t *fx)
{
    qmgr_free(&fx->qm);
    while (fx->pool && pool_pending(fx->pool) > 0)
        event_base_loop(fx->base, EVLOOP_ONCE);
    spool_close(&fx->sp);
    pool_free(&fx->pool);
    if (fx->base)
        event_base_free(fx->base);
    config_free(&fx->cfg);
    rm_rf(fx->dir);
}

static void on_commit(void *arg, bool ok, const char *errtext)
{
    (void)errtext;
    *(int *)arg = ok ? 1 : -1;
}

static void qfx_commit_as(qfx_t *fx, const char *sender, const char *const *rcpts, size_t n,
                          const spool_actions_t *a, char id[QUEUE_ID_MAX])
{
    int done = 0;
    spool_new_queue_id(fx->sp, id);
    envelope_t e = {.queue_id = id, .arrival_usec = now_usec(), .client_name = "localhost",
                    .client_addr = "127.0.0.1", .helo = "client.test", .protocol = "ESMTP",
                    .sender = sender, .rcpts = rcpts, .nrcpt = n,
                    .body_type = "", .smtputf8 = false};
    spool_writer_t *w = spool_writer_new(fx->sp, &e);
    spool_writer_append(w, body, strlen(body));
    if (a)
        spool_writer_actions(w, a);
    spool_writer_commit(w, on_commit, &done);
    while (!done)
        event_base_loop(fx->base, EVLOOP_ONCE);
}

static void qfx_commit(qfx_t *fx, const char *const *rcpts, size_t n, char id[QUEUE_ID_MAX])
{
    qfx_commit_as(fx, "alice@example.com", rcpts, n, NULL, id);
}

/* Like qfx_commit, without running the loop (spool_inject blocks); age:
 * seconds since its arrival. */
static void qfx_inject_aged(qfx_t *fx, const char *rcpt, long long age, char id[QUEUE_ID_MAX])
{
    const char *rcpts[] = {rcpt};
    buf_t err = BUF_INIT;
    envelope_t e = {.arrival_usec = now_usec() - age * 1000000LL, .client_name = "localhost", .client_addr = "127.0.0.1",
                    .helo = "client.test", .protocol = "ESMTP", .sender = "alice@example.com",
                    .rcpts = rcpts, .nrcpt = 1, .body_type = "", .smtputf8 = false};
    if (spool_inject(fx->sp, &e, body, strlen(body), id, &err) != 0)
        fprintf(stderr, "spool_inject: %s\n", buf_cstr(&err));
    buf_free(&err);
}

static void qfx_inject(qfx_t *fx, const char *rcpt, char id[QUEUE_ID_MAX])
{
    qfx_inject_aged(fx, rcpt, 0, id);
}

/* Run until the queue manager is idle (its first scan included). */
static void qfx_run(qfx_t *fx)
{
    event_base_loop(fx->base, EVLOOP_NONBLOCK);
    double give_up = now_mono() + 30;
    while (qmgr_busy(fx->qm) > 0 && now_mono() < give_up)
        event_base_loop(fx->base, EVLOOP_ONCE);
}

static int qfx_count(qfx_t *fx, const char *sub)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s", fx->dir, sub);
    int n = list_dir(buf_cstr(&p), NULL);
    buf_free(&p);
    return n;
}

static char *qfx_path(qfx_t *fx, const char *a, const char *b)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s%s%s", fx->dir, a, b ? "/" : "", b ? b : "");
    return buf_steal(&p);
}

/* The only message in a Maildir's new/ (NULL when not exactly one). */
static char *maildir_one(qfx_t *fx, const char *mbox)
{
    char *dir = qfx_path(fx, "mail", mbox), *name = NULL;
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/new", dir);
    char *text = NULL;
    if (list_dir(buf_cstr(&p), &name) == 1) {
        buf_printf(&p, "/%s", name);
        text = slurp(buf_cstr(&p));
    }
    free(name);
    free(dir);
    buf_free(&p);
    return text;
}

TEST(qmgr_delivers_local_and_defers_the_rest)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "elsewhere.test retry:4.4.1 not today\n") == 0);
    static const char *const r1[] = {"a@example.com", "B+x@EXAMPLE.COM", "c@elsewhere.test",
                                     "root@host.example"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r1, 4, id);
    qmgr_enqueue(fx.qm, id);
    qmgr_enqueue(fx.qm, id);   /* a duplicate request is folded into the one message */
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/a/new"), 1);
    CHECK_INT(qfx_count(&fx, "mail/b/new"), 1);
    CHECK_INT(qfx_count(&fx, "mail/root/new"), 1);
    CHECK_INT(qfx_count(&fx, "mail/c"), -1);
    /* c@elsewhere.test is deferred: the file is in deferred/, its next
     * attempt (mtime) after the backoff, the reason in the defer log. */
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 1);
    char *p = qfx_path(&fx, "queue/deferred", id);
    buf_t err = BUF_INIT;
    qfile_t q;
    REQUIRE(qfile_read(p, &q, &err) == 0);
    CHECK(q.rcpt_done[0] && q.rcpt_done[1] && !q.rcpt_done[2] && q.rcpt_done[3]);
    CHECK(q.rcpt_status[2] == QF_PENDING);
    qfile_free(&q);
    struct stat st;
    REQUIRE(stat(p, &st) == 0);
    CHECK((long long)st.st_mtime >= now_usec() / 1000000 + 90);   /* minimal_backoff_time 100s */
    qlog_rec_t *recs;
    size_t n;
    REQUIRE(qlog_read(fx.sp, QLOG_DEFER, id, &recs, &n, &err) == 0);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(recs[0].rcpt, "c@elsewhere.test");
        CHECK_STR(recs[0].dsn, "4.4.1");
        CHECK_STR(recs[0].text, "not today");
    }
    qlog_free(&recs, n);

    /* Flushing brings it back at once; nobody is delivered twice. */
    buf_t reply = BUF_INIT;
    qmgr_control(fx.qm, "flush", NULL, &reply);
    CHECK_STR(buf_cstr(&reply), "ok 1");
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/a/new"), 1);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 1);
    free(p);
    buf_free(&reply);
    buf_free(&err);
    qfx_close(&fx);
}

TEST(qmgr_discard_and_removal)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "drop.test discard:2.7.0 policy drop\n* discard:\n") == 0);
    static const char *const r[] = {"x@drop.test", "y@other.test"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 2, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);
    CHECK_INT(qfx_count(&fx, "queue/defer"), 0);
    CHECK_INT(qfx_count(&fx, "queue/bounce"), 0);
    qfx_close(&fx);
}

TEST(qmgr_bounce_notice_to_the_sender)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "bad.test error:5.1.1 no such user here\n") == 0);
    static const char *const r[] = {"gone@bad.test", "ok@example.com"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 2, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    /* ok@ delivered; gone@ bounced: one notice to alice (local), the original removed. */
    CHECK_INT(qfx_count(&fx, "mail/ok/new"), 1);
    char *notice = maildir_one(&fx, "alice");
    REQUIRE(notice != NULL);
    CHECK(strstr(notice, "Return-Path: <>") != NULL);
    CHECK(strstr(notice, "multipart/report") != NULL);
    CHECK(strstr(notice, "Final-Recipient: rfc822; gone@bad.test") != NULL);
    CHECK(strstr(notice, "Status: 5.1.1") != NULL);
    CHECK(strstr(notice, "no such user here") != NULL);
    CHECK(strstr(notice, "ok@example.com") == NULL);   /* only the failed recipient */
    CHECK(strstr(notice, "Message-ID: <t@client.test>") != NULL);   /* the original returned */
    CHECK(strstr(notice, "Received: by host.example (moat)") != NULL);
    free(notice);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);
    CHECK_INT(qfx_count(&fx, "queue/bounce"), 0);
    qfx_close(&fx);
}

TEST(qmgr_null_sender_double_bounce_once)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "bad.test error:5.1.1 no such user\n") == 0);
    static const char *const r[] = {"gone@bad.test"};
    char id[QUEUE_ID_MAX];
    /* A notice that bounces goes to the postmaster, never to <>. */
    qfx_commit_as(&fx, "", r, 1, NULL, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    char *notice = maildir_one(&fx, "postmaster");
    REQUIRE(notice != NULL);
    CHECK(strstr(notice, "Return-Path: <double-bounce@host.example>") != NULL);
    CHECK(strstr(notice, "Final-Recipient: rfc822; gone@bad.test") != NULL);
    free(notice);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);

    /* A postmaster notice that fails is dropped: no third message. */
    char id2[QUEUE_ID_MAX];
    qfx_commit_as(&fx, "double-bounce@host.example", r, 1, NULL, id2);
    qmgr_enqueue(fx.qm, id2);
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/postmaster/new"), 1);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);
    qfx_close(&fx);
}

TEST(qmgr_expiry_returns_to_sender)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, "maximal_queue_lifetime = 0\n", "slow.test retry:4.4.1 still down\n") == 0);
    static const char *const r[] = {"x@slow.test"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 1, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    char *notice = maildir_one(&fx, "alice");
    REQUIRE(notice != NULL);
    CHECK(strstr(notice, "Final-Recipient: rfc822; x@slow.test") != NULL);
    CHECK(strstr(notice, "message expired") != NULL);
    CHECK(strstr(notice, "still down") != NULL);
    free(notice);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    qfx_close(&fx);
}

TEST(qmgr_redirect_and_filter_records)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "") == 0);
    static const char *const r[] = {"a@example.com", "b@example.com"};
    const char *bcc[] = {"c@example.com"};
    spool_actions_t a = {.redirect = "quarantine@example.com", .bcc = bcc, .nbcc = 1};
    char id[QUEUE_ID_MAX];
    qfx_commit_as(&fx, "alice@example.com", r, 2, &a, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    /* One delivery to the redirect address stands for all three. */
    CHECK_INT(qfx_count(&fx, "mail/quarantine/new"), 1);
    CHECK_INT(qfx_count(&fx, "mail/a"), -1);
    CHECK_INT(qfx_count(&fx, "mail/c"), -1);
    char *m = maildir_one(&fx, "quarantine");
    CHECK(m && strstr(m, "Delivered-To: quarantine@example.com") != NULL);
    free(m);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);

    /* A filter record takes every recipient to the filter's transport. */
    spool_actions_t f = {.filter = "discard:filtered"};
    char id2[QUEUE_ID_MAX];
    qfx_commit_as(&fx, "alice@example.com", r, 2, &f, id2);
    qmgr_enqueue(fx.qm, id2);
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/a"), -1);   /* never around the filter */
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);
    qfx_close(&fx);
}

TEST(qmgr_unknown_transport_defers)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "nowhere.test nosuch:[127.0.0.1]:1\n") == 0);
    static const char *const r[] = {"x@nowhere.test"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 1, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 1);
    qlog_rec_t *recs;
    size_t n;
    buf_t err = BUF_INIT;
    REQUIRE(qlog_read(fx.sp, QLOG_DEFER, id, &recs, &n, &err) == 0);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(recs[0].text, "mail transport unavailable");
        CHECK_STR(recs[0].dsn, "4.3.0");
    }
    qlog_free(&recs, n);
    buf_free(&err);
    qfx_close(&fx);
}

TEST(qmgr_scans_the_deferred_queue)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "") == 0);
    char due[QUEUE_ID_MAX], later[QUEUE_ID_MAX];
    /* Before the loop ever ran, so before the first scan. */
    qfx_inject(&fx, "due@example.com", due);
    qfx_inject(&fx, "later@example.com", later);
    long long now = now_usec() / 1000000;
    const char *ids[] = {due, later};
    const long long when[] = {now - 10, now + 3600};
    for (int i = 0; i < 2; i++) {
        char *a = qfx_path(&fx, "queue/active", ids[i]), *d = qfx_path(&fx, "queue/deferred", ids[i]);
        struct timespec ts[2] = {{(time_t)when[i], 0}, {(time_t)when[i], 0}};
        utimensat(AT_FDCWD, a, ts, 0);
        REQUIRE(rename(a, d) == 0);
        free(a);
        free(d);
    }
    /* The first scan runs at once: only the due message goes. */
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/due/new"), 1);
    CHECK_INT(qfx_count(&fx, "mail/later"), -1);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 1);

    buf_t reply = BUF_INIT;
    qmgr_control(fx.qm, "flush", "0ABC", &reply);
    CHECK_STR(buf_cstr(&reply), "error 0ABC: not in the deferred queue");
    buf_reset(&reply);
    qmgr_control(fx.qm, "flush", "../x", &reply);
    CHECK(strncmp(buf_cstr(&reply), "error", 5) == 0);
    buf_reset(&reply);
    qmgr_control(fx.qm, "flush", later, &reply);
    CHECK_STR(buf_cstr(&reply), "ok 1");
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/later/new"), 1);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);

    /* rescan finds what appeared in active/ behind its back (a release). */
    char rel[QUEUE_ID_MAX];
    static const char *const r3[] = {"released@example.com"};
    qfx_commit(&fx, r3, 1, rel);
    buf_reset(&reply);
    qmgr_control(fx.qm, "rescan", NULL, &reply);
    CHECK_STR(buf_cstr(&reply), "ok 1");
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/released/new"), 1);
    buf_reset(&reply);
    qmgr_control(fx.qm, "ping", NULL, &reply);
    CHECK(strncmp(buf_cstr(&reply), "ok ", 3) == 0);
    buf_reset(&reply);
    qmgr_control(fx.qm, "dance", NULL, &reply);
    CHECK_STR(buf_cstr(&reply), "error unknown command");
    buf_free(&reply);
    qfx_close(&fx);
}

TEST(qmgr_quarantines_corrupt_files)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "") == 0);
    char *bad = qfx_path(&fx, "queue/active", "00AA00BB00CC");
    int fd = open(bad, O_WRONLY | O_CREAT, 0600);
    REQUIRE(fd >= 0);
    CHECK(write(fd, "garbage\n", 8) == 8);
    close(fd);
    qmgr_enqueue(fx.qm, "00AA00BB00CC");
    qmgr_enqueue(fx.qm, "../../etc");   /* not an ID: ignored */
    qfx_run(&fx);
    CHECK(access(bad, F_OK) != 0);
    CHECK_INT(qfx_count(&fx, "queue/corrupt"), 1);

    /* A sound file under another message's name is not delivered. */
    static const char *const r[] = {"user@localhost"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 1, id);
    char *from = qfx_path(&fx, "queue/active", id);
    REQUIRE(rename(from, bad) == 0);
    qmgr_enqueue(fx.qm, "00AA00BB00CC");
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "queue/corrupt"), 2);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "mail/user"), -1);
    free(from);
    free(bad);
    qfx_close(&fx);
}

TEST(qmgr_local_failure_is_retried_from_deferred)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "") == 0);
    /* mail_spool_directory missing: the delivery is deferred. */
    char *root = qfx_path(&fx, "mail", NULL);
    REQUIRE(rmdir(root) == 0);
    static const char *const r[] = {"user@localhost"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 1, id);
    qmgr_enqueue(fx.qm, id);
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 1);
    REQUIRE(mkdir(root, 0700) == 0);
    buf_t reply = BUF_INIT;
    qmgr_control(fx.qm, "flush", NULL, &reply);
    CHECK_STR(buf_cstr(&reply), "ok 1");
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 0);
    CHECK_INT(qfx_count(&fx, "queue/active"), 0);
    CHECK_INT(qfx_count(&fx, "mail/user/new"), 1);
    buf_free(&reply);
    free(root);
    qfx_close(&fx);
}

TEST(qmgr_stop_leaves_messages_in_active)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, NULL, "") == 0);
    qmgr_stop(fx.qm);
    static const char *const r[] = {"user@localhost"};
    char id[QUEUE_ID_MAX];
    qfx_commit(&fx, r, 1, id);
    qmgr_enqueue(fx.qm, id);   /* too late: the next start delivers it */
    qfx_run(&fx);
    CHECK_INT(qmgr_busy(fx.qm), 0);
    CHECK_INT(qfx_count(&fx, "queue/active"), 1);
    CHECK_INT(qfx_count(&fx, "mail/user"), -1);
    qfx_close(&fx);
}

TEST(qmgr_delay_warning_once)
{
    qfx_t fx;
    REQUIRE(qfx_open(&fx, "delay_warning_time = 1m\n", "slow.test retry:4.4.1 still down\n") == 0);
    char id[QUEUE_ID_MAX], young[QUEUE_ID_MAX];
    qfx_inject_aged(&fx, "x@slow.test", 3600, id);   /* an hour old: warned */
    qfx_inject_aged(&fx, "y@slow.test", 0, young);   /* new: not yet */
    qmgr_enqueue(fx.qm, id);
    qmgr_enqueue(fx.qm, young);
    qfx_run(&fx);
    char *notice = maildir_one(&fx, "alice");
    REQUIRE(notice != NULL);
    CHECK(strstr(notice, "Subject: Delayed Mail (still being retried)") != NULL);
    CHECK(strstr(notice, "Final-Recipient: rfc822; x@slow.test") != NULL);
    CHECK(strstr(notice, "Action: delayed") != NULL);
    CHECK(strstr(notice, "Will-Retry-Until:") != NULL);
    CHECK(strstr(notice, "y@slow.test") == NULL);
    free(notice);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 2);
    /* The next attempts warn nobody again. */
    buf_t reply = BUF_INIT;
    qmgr_control(fx.qm, "flush", NULL, &reply);
    CHECK_STR(buf_cstr(&reply), "ok 2");
    qfx_run(&fx);
    CHECK_INT(qfx_count(&fx, "mail/alice/new"), 1);
    CHECK_INT(qfx_count(&fx, "queue/deferred"), 2);
    /* The marker lives in the defer log, next to the recipient's reason. */
    qlog_rec_t *recs;
    size_t n;
    buf_t err = BUF_INIT;
    REQUIRE(qlog_read(fx.sp, QLOG_DEFER, id, &recs, &n, &err) == 0);
    CHECK_INT(n, 2);
    qlog_free(&recs, n);
    buf_free(&err);
    buf_free(&reply);
    qfx_close(&fx);
}
