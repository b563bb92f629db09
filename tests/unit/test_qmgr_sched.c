/* Unit tests for the queue manager's pure parts: the scheduler
 * (src/queue/qmgr-sched.c) and the helpers of src/queue/qmgr-util.c. */
#include "harness.h"

#include "core/buf.h"
#include "core/util.h"
#include "queue/qmgr-private.h"

#include <stdlib.h>

/* ---------- helpers ---------- */

TEST(qmgr_delay_format)
{
    char b[32];
    qmgr_fmt_delay(b, sizeof b, 0);
    CHECK_STR(b, "0");
    qmgr_fmt_delay(b, sizeof b, -5);
    CHECK_STR(b, "0");
    qmgr_fmt_delay(b, sizeof b, 50000);
    CHECK_STR(b, "0.05");
    qmgr_fmt_delay(b, sizeof b, 100000);
    CHECK_STR(b, "0.1");
    qmgr_fmt_delay(b, sizeof b, 1200000);
    CHECK_STR(b, "1.2");
    qmgr_fmt_delay(b, sizeof b, 3000000);
    CHECK_STR(b, "3");
    qmgr_fmt_delay(b, sizeof b, 12400000);
    CHECK_STR(b, "12");
    qmgr_fmt_delay(b, sizeof b, 4000);
    CHECK_STR(b, "0");
}

TEST(qmgr_dsn_prefix)
{
    char dsn[16];
    const char *rest;
    qmgr_split_dsn("5.1.1 user unknown", "5.0.0", dsn, &rest);
    CHECK_STR(dsn, "5.1.1");
    CHECK_STR(rest, "user unknown");
    qmgr_split_dsn("4.7.100   try later", "4.0.0", dsn, &rest);
    CHECK_STR(dsn, "4.7.100");
    CHECK_STR(rest, "try later");
    qmgr_split_dsn("5.2.2", "5.0.0", dsn, &rest);
    CHECK_STR(dsn, "5.2.2");
    CHECK_STR(rest, "");
    /* Not a code: the whole text, the default code. */
    qmgr_split_dsn("mailbox full", "5.0.0", dsn, &rest);
    CHECK_STR(dsn, "5.0.0");
    CHECK_STR(rest, "mailbox full");
    qmgr_split_dsn("5.1.1x nope", "5.0.0", dsn, &rest);
    CHECK_STR(dsn, "5.0.0");
    CHECK_STR(rest, "5.1.1x nope");
    qmgr_split_dsn("3.1.1 no", "4.0.0", dsn, &rest);
    CHECK_STR(dsn, "4.0.0");
    qmgr_split_dsn("5.1234.1 no", "4.0.0", dsn, &rest);
    CHECK_STR(dsn, "4.0.0");
    qmgr_split_dsn(NULL, "2.0.0", dsn, &rest);
    CHECK_STR(dsn, "2.0.0");
    CHECK_STR(rest, "");
}

TEST(qmgr_backoff_clamps_the_age)
{
    CHECK_INT(qmgr_backoff(0, 300, 4000), 300);
    CHECK_INT(qmgr_backoff(1000, 300, 4000), 1000);
    CHECK_INT(qmgr_backoff(99999, 300, 4000), 4000);
    CHECK_INT(qmgr_backoff(10, 300, 100), 300);   /* max below min: min wins */
}

TEST(qmgr_qualify_and_log_line)
{
    buf_t b = BUF_INIT;
    qmgr_qualify("postmaster", "example.org", &b);
    CHECK_STR(buf_cstr(&b), "postmaster@example.org");
    qmgr_qualify("a@b.test", "example.org", &b);
    CHECK_STR(buf_cstr(&b), "a@b.test");

    qmgr_logline_t l = {.to = "bob@example.com", .orig = NULL, .relay = "mx.example.com[192.0.2.1]:25",
                        .arrival = 1000000, .t_load = 1010000, .t_start = 1010000, .t_conn = 1210000,
                        .t_end = 1510000, .dsn = "2.0.0", .status = "sent",
                        .text = "250 2.0.0 Ok: queued as X"};
    buf_reset(&b);
    qmgr_format_rcpt(&l, &b);
    CHECK_STR(buf_cstr(&b), "to=<bob@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=0.51, "
                            "delays=0.01/0/0.2/0.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)");
    l.orig = "carol@example.com";
    l.t_conn = 0;   /* no connection: c is 0 */
    buf_reset(&b);
    qmgr_format_rcpt(&l, &b);
    CHECK_STR(buf_cstr(&b), "to=<bob@example.com>, orig_to=<carol@example.com>, relay=mx.example.com[192.0.2.1]:25, "
                            "delay=0.51, delays=0.01/0/0/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)");
    buf_free(&b);
}

/* ---------- the scheduler ---------- */

typedef struct titem {
    qitem_t it;   /* first */
    int dest, n;
} titem_t;

static titem_t *mk(int dest, int n)
{
    titem_t *t = xcalloc(1, sizeof *t);
    t->dest = dest;
    t->n = n;
    return t;
}

TEST(qmgr_sched_concurrency_limit_per_destination)
{
    qsched_t *s = qsched_new();
    qtrans_t *t = qsched_transport(s, "relay");
    qsched_set_limits(s, t, 100, 2);
    qdest_t *d = qsched_dest(s, t, "[127.0.0.1]:1767", NULL);
    CHECK(qsched_dest(s, t, "[127.0.0.1]:1767", NULL) == d);
    for (int i = 0; i < 20; i++)
        qsched_push(s, d, &mk(0, i)->it);
    titem_t *a = (titem_t *)qsched_next(s), *b = (titem_t *)qsched_next(s);
    REQUIRE(a && b);
    CHECK_INT(a->n, 0);   /* FIFO within a destination */
    CHECK_INT(b->n, 1);
    CHECK(qsched_next(s) == NULL);   /* the limit, 2 */
    qsched_done(s, &a->it);
    free(a);
    titem_t *c = (titem_t *)qsched_next(s);
    REQUIRE(c);
    CHECK_INT(c->n, 2);
    CHECK(qsched_next(s) == NULL);
    /* Drain: never more than 2 at once. */
    int started = 3, busy = 2, maxbusy = 2;
    titem_t *running[2] = {b, c};
    while (busy > 0) {
        titem_t *done = running[0];
        running[0] = running[1];
        running[1] = NULL;
        busy--;
        qsched_done(s, &done->it);
        free(done);
        titem_t *x;
        while ((x = (titem_t *)qsched_next(s)) != NULL) {
            running[busy++] = x;
            started++;
            if (busy > maxbusy)
                maxbusy = busy;
        }
    }
    CHECK_INT(started, 20);
    CHECK_INT(maxbusy, 2);
    CHECK_INT(qsched_ndest(s), 0);   /* idle destinations are freed */
    qsched_free(&s);
}

TEST(qmgr_sched_round_robin_and_maxproc)
{
    qsched_t *s = qsched_new();
    qtrans_t *t = qsched_transport(s, "smtp");
    qsched_set_limits(s, t, 3, 20);
    qdest_t *slow = qsched_dest(s, t, "slow.example", NULL);
    qdest_t *fast = qsched_dest(s, t, "FAST.example", NULL);
    CHECK(qsched_dest(s, t, "fast.EXAMPLE", NULL) == fast);   /* next hops ignore case */
    for (int i = 0; i < 10; i++)
        qsched_push(s, slow, &mk(1, i)->it);
    for (int i = 0; i < 2; i++)
        qsched_push(s, fast, &mk(2, i)->it);
    /* The slow destination queued first, yet the fast one gets every other turn. */
    titem_t *x1 = (titem_t *)qsched_next(s), *x2 = (titem_t *)qsched_next(s), *x3 = (titem_t *)qsched_next(s);
    REQUIRE(x1 && x2 && x3);
    CHECK_INT(x1->dest, 1);
    CHECK_INT(x2->dest, 2);
    CHECK_INT(x3->dest, 1);
    CHECK(qsched_next(s) == NULL);   /* maxproc 3 */
    qsched_done(s, &x1->it);
    titem_t *x4 = (titem_t *)qsched_next(s);
    REQUIRE(x4);
    CHECK_INT(x4->dest, 2);
    /* Another transport has its own process limit. */
    qtrans_t *l = qsched_transport(s, "local");
    qsched_set_limits(s, l, 1, 2);
    qdest_t *u1 = qsched_dest(s, l, "host", "a@example.com");
    qdest_t *u2 = qsched_dest(s, l, "host", "b@example.com");
    CHECK(u1 != u2);
    qsched_push(s, u1, &mk(3, 0)->it);
    qsched_push(s, u2, &mk(4, 0)->it);
    titem_t *y = (titem_t *)qsched_next(s);
    REQUIRE(y);
    CHECK(y->dest == 3 || y->dest == 4);
    CHECK(qsched_next(s) == NULL);
    titem_t *all[] = {x1, x2, x3, x4, y};
    for (size_t i = 1; i < ARRAY_LEN(all); i++)
        qsched_done(s, &all[i]->it);
    titem_t *z;
    while ((z = (titem_t *)qsched_next(s)) != NULL) {
        qsched_done(s, &z->it);
        free(z);
    }
    for (size_t i = 0; i < ARRAY_LEN(all); i++)
        free(all[i]);
    CHECK_INT(qsched_ndest(s), 0);
    qsched_free(&s);
}

TEST(qmgr_sched_dead_destinations)
{
    qsched_t *s = qsched_new();
    qtrans_t *t = qsched_transport(s, "smtp");
    qsched_set_limits(s, t, 10, 1);
    qdest_t *d = qsched_dest(s, t, "down.example", NULL);
    for (int i = 0; i < 3; i++)
        qsched_push(s, d, &mk(1, i)->it);
    titem_t *a = (titem_t *)qsched_next(s);
    REQUIRE(a);
    /* The first delivery could not connect: the destination dies, and the
     * caller takes its waiting items to defer them. */
    qsched_kill(s, d, 1000, "connect to down.example: Connection refused", "4.4.1");
    CHECK(qsched_is_dead(s, d, 500));
    CHECK_STR(d->dead_text, "connect to down.example: Connection refused");
    CHECK_STR(d->dead_dsn, "4.4.1");
    int taken = 0;
    qitem_t *it;
    while ((it = qsched_take(s, d)) != NULL) {
        taken++;
        free(it);
    }
    CHECK_INT(taken, 2);
    qsched_done(s, &a->it);
    free(a);
    /* Remembered while dead (not freed), nothing starts. */
    CHECK_INT(qsched_ndest(s), 1);
    CHECK(qsched_next(s) == NULL);
    qsched_gc(s, 999);
    CHECK_INT(qsched_ndest(s), 1);
    /* After the time passes, it is alive again. */
    CHECK(!qsched_is_dead(s, d, 1000));
    qsched_push(s, d, &mk(1, 9)->it);
    titem_t *b = (titem_t *)qsched_next(s);
    REQUIRE(b);
    CHECK_INT(b->n, 9);
    qsched_done(s, &b->it);
    free(b);
    CHECK_INT(qsched_ndest(s), 0);

    /* flush revives everything at once; gc forgets deaths that passed. */
    qdest_t *e = qsched_dest(s, t, "e.example", NULL), *f = qsched_dest(s, t, "f.example", NULL);
    qsched_kill(s, e, 5000, "x", "4.4.1");
    qsched_kill(s, f, 100, "y", NULL);
    CHECK_STR(f->dead_dsn, "4.0.0");
    qsched_gc(s, 200);
    CHECK_INT(qsched_ndest(s), 1);
    qsched_revive_all(s);
    CHECK_INT(qsched_ndest(s), 0);
    qsched_free(&s);
}

TEST(qmgr_sched_limits_change)
{
    qsched_t *s = qsched_new();
    qtrans_t *t = qsched_transport(s, "relay");
    CHECK(qsched_transport(s, "relay") == t);
    CHECK(qsched_transports(s) == t);
    qsched_set_limits(s, t, 10, 1);
    qdest_t *d = qsched_dest(s, t, "[127.0.0.1]:25", NULL);
    for (int i = 0; i < 4; i++)
        qsched_push(s, d, &mk(1, i)->it);
    titem_t *a = (titem_t *)qsched_next(s);
    REQUIRE(a);
    CHECK(qsched_next(s) == NULL);
    /* A reload raised the limit: waiting requests may start at once. */
    qsched_set_limits(s, t, 10, 3);
    titem_t *b = (titem_t *)qsched_next(s), *c = (titem_t *)qsched_next(s);
    CHECK(b && c);
    CHECK(qsched_next(s) == NULL);
    /* Lowered: nothing new starts until enough have finished. */
    qsched_set_limits(s, t, 10, 1);
    qsched_done(s, &a->it);
    CHECK(qsched_next(s) == NULL);
    qsched_done(s, &b->it);
    CHECK(qsched_next(s) == NULL);
    qsched_done(s, &c->it);
    titem_t *e = (titem_t *)qsched_next(s);
    CHECK(e != NULL);
    if (e) {
        qsched_done(s, &e->it);
        free(e);
    }
    free(a);
    free(b);
    free(c);
    qsched_free(&s);
}
