/*
 * Unit tests for address verification (src/queue/verify.c): the cache
 * value codec, the probe sender, and the verifier's state machine against
 * the scripted SMTP server of smtpc_testlib.h (accept a@, refuse b@ with
 * 550 5.1.1, or never answer), with the memory cache and with a real LMDB
 * store: answers from the loop, never inside verify_query; one probe per
 * address; the domain limit; no DATA ever; results cached as the
 * address_verify_* parameters say.
 */
#include "harness.h"
#include "smtpc_testlib.h"
#include "store_testlib.h"

#include "core/util.h"
#include "policy/unverified.h"
#include "queue/verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ codec */

TEST(verify_codec_round_trip)
{
    buf_t b = BUF_INIT;
    verify_encode(&b, VR_UNDELIVERABLE, 1700000000, "5.1.1",
                  "host mx[127.0.0.1] said: 550 5.1.1 <b@x>: User unknown (in reply to RCPT TO command)");
    CHECK_STR(buf_cstr(&b), "U 1700000000 5.1.1 host mx[127.0.0.1] said: 550 5.1.1 <b@x>: User unknown "
                            "(in reply to RCPT TO command)");
    verify_status_t st;
    long long at;
    char dsn[16];
    const char *text;
    REQUIRE(verify_decode(buf_cstr(&b), &st, &at, dsn, &text) == 0);
    CHECK_INT(st, VR_UNDELIVERABLE);
    CHECK(at == 1700000000);
    CHECK_STR(dsn, "5.1.1");
    CHECK_STR(text, "host mx[127.0.0.1] said: 550 5.1.1 <b@x>: User unknown (in reply to RCPT TO command)");

    buf_reset(&b);
    verify_encode(&b, VR_DELIVERABLE, 5, "", "");
    CHECK_STR(buf_cstr(&b), "D 5 - ");
    REQUIRE(verify_decode(buf_cstr(&b), &st, &at, dsn, &text) == 0);
    CHECK_INT(st, VR_DELIVERABLE);
    CHECK_STR(dsn, "");
    CHECK_STR(text, "");
    buf_reset(&b);
    verify_encode(&b, VR_TEMPFAIL, 9, "4.4.1", "connect to x: refused");
    REQUIRE(verify_decode(buf_cstr(&b), &st, &at, dsn, &text) == 0);
    CHECK_INT(st, VR_TEMPFAIL);
    CHECK_STR(text, "connect to x: refused");
    buf_free(&b);
}

TEST(verify_codec_refuses_garbage)
{
    verify_status_t st;
    long long at;
    char dsn[16];
    const char *text;
    const char *bad[] = {"", "X 1 - t", "D", "D x - t", "D 12", "D 12 -", "D 12 0123456789abcdefgh t", "P 1 - t",
                         "D  1 - t"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        CHECK(verify_decode(bad[i], &st, &at, dsn, &text) == -1);
    CHECK(verify_decode(NULL, &st, &at, dsn, &text) == -1);
}

static void sender_of(const char *main_extra, long long now, buf_t *out)
{
    buf_t err = BUF_INIT;
    config_t *cfg = config_load_text(main_extra, NULL, &err, NULL);
    REQUIRE(cfg != NULL);
    buf_reset(out);
    verify_probe_sender(config_main(cfg), now, out);
    config_free(&cfg);
    buf_free(&err);
}

TEST(verify_probe_sender_forms)
{
    buf_t s = BUF_INIT;
    sender_of("myorigin = origin.test\n", 100, &s);
    CHECK_STR(buf_cstr(&s), "double-bounce@origin.test");
    sender_of("myorigin = origin.test\naddress_verify_sender = <>\n", 100, &s);
    CHECK_STR(buf_cstr(&s), "");
    sender_of("myorigin = origin.test\naddress_verify_sender =\n", 100, &s);
    CHECK_STR(buf_cstr(&s), "");
    sender_of("myorigin = origin.test\naddress_verify_sender = probe@other.test\n", 100, &s);
    CHECK_STR(buf_cstr(&s), "probe@other.test");
    sender_of("myorigin = origin.test\naddress_verify_sender = probe\naddress_verify_sender_ttl = 1h\n", 7300, &s);
    CHECK_STR(buf_cstr(&s), "probe2@origin.test");
    sender_of("myorigin = origin.test\naddress_verify_sender = probe\naddress_verify_sender_ttl = 1h\n", 11000, &s);
    CHECK_STR(buf_cstr(&s), "probe3@origin.test");
    buf_free(&s);
}

/* ------------------------------------------------- the state machine */

typedef struct vans {
    int calls;
    verify_status_t st;
    char text[600];
    char dsn[16];
} vans_t;

static void vans_cb(void *arg, const verify_result_t *r)
{
    vans_t *a = arg;
    a->calls++;
    a->st = r->status;
    str_copy(a->text, r->text ? r->text : "", sizeof a->text);
    str_copy(a->dsn, r->dsn, sizeof a->dsn);
}

typedef struct vworld {
    tworld_t w;
    tsrv_t *srv;
    char tmap[160];
    verify_t *v;
} vworld_t;

/* A world whose ok.test goes to a scripted server (b@ok.test refused),
 * gone.test to the error transport, example.test is local. */
static void vworld_init(vworld_t *vw, const char *extra, bool silent)
{
    int port = tfree_port();
    char path[] = "/tmp/moat-verify-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    char tbl[300];
    int n = snprintf(tbl, sizeof tbl,
                     "ok.test relay:[127.0.0.1]:%d\nother.test relay:[127.0.0.1]:%d\n"
                     "gone.test error:5.1.2 This domain is gone\nlater.test retry:4.3.2 Not now\n",
                     port, port);
    REQUIRE(write(fd, tbl, (size_t)n) == n);
    close(fd);
    str_copy(vw->tmap, path, sizeof vw->tmap);
    buf_t cf = BUF_INIT;
    buf_printf(&cf, "mydestination = example.test\nrelay_domains = ok.test, other.test, gone.test, later.test\n"
                    "transport_maps = texthash:%s\nmyorigin = origin.test\nsmtp_rcpt_timeout = 1s\n%s",
               path, extra ? extra : "");
    tworld_init(&vw->w, buf_cstr(&cf));
    buf_free(&cf);
    vw->srv = tsrv_new_at(&vw->w, NULL, port);
    vw->srv->silent = silent;
    tsrv_rcpt(vw->srv, "b@ok.test", "550 5.1.1 <b@ok.test>: User unknown");
    vw->v = NULL;
}

static verify_t *vworld_verifier(vworld_t *vw, store_t *store)
{
    buf_t err = BUF_INIT;
    verify_t *v = verify_new(vw->w.base, vw->w.pool, NULL, vw->w.cfg, store, &vw->w.self, &err);
    if (!v)
        harness_fail(__FILE__, __LINE__, "verify_new: %s", buf_cstr(&err));
    buf_free(&err);
    return v;
}

static void vworld_free(vworld_t *vw)
{
    verify_free(&vw->v);
    /* probes still in flight end when their server hangs up; the last
     * one frees what the verifier left */
    tsrv_close_all(vw->srv);
    tworld_spin(&vw->w, 0.2);
    tworld_free(&vw->w);
    unlink(vw->tmap);
}

/* Run the loop until every answer came (a bound for a broken test, not a
 * timing assertion). */
static void wait_answers(vworld_t *vw, vans_t *a, int n)
{
    for (int i = 0; i < 400; i++) {
        bool all = true;
        for (int k = 0; k < n; k++)
            if (a[k].calls == 0)
                all = false;
        if (all)
            return;
        tworld_spin(&vw->w, 0.025);
    }
}

static int count_in(const buf_t *log, const char *what)
{
    int n = 0;
    for (const char *p = buf_cstr(log); (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

TEST(verify_probe_accepts_refuses_and_never_sends_data)
{
    vworld_t vw;
    vworld_init(&vw, NULL, false);
    vw.v = vworld_verifier(&vw, NULL);
    vans_t a[2] = {{0}};
    verify_query(vw.v, "A@ok.test", vans_cb, &a[0]);
    verify_query(vw.v, "b@ok.test", vans_cb, &a[1]);
    CHECK_INT(a[0].calls + a[1].calls, 0);   /* never inside verify_query */
    wait_answers(&vw, a, 2);
    CHECK_INT(a[0].calls, 1);
    CHECK_INT(a[0].st, VR_DELIVERABLE);
    CHECK_INT(a[1].calls, 1);
    CHECK_INT(a[1].st, VR_UNDELIVERABLE);
    CHECK_STR(a[1].dsn, "5.1.1");
    CHECK_STR(a[1].text, "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <b@ok.test>: User unknown "
                         "(in reply to RCPT TO command)");
    const buf_t *log = &vw.srv->log;
    CHECK(strstr(buf_cstr(log), "MAIL FROM:<double-bounce@origin.test>\r\n") != NULL);
    CHECK(strstr(buf_cstr(log), "RCPT TO:<A@ok.test>\r\n") != NULL);   /* asked as given */
    CHECK_INT(count_in(log, "RSET\r\n"), 2);
    CHECK_INT(count_in(log, "DATA"), 0);
    CHECK_INT(vw.srv->transactions, 0);

    /* cached now (memory): no new probe */
    int rcpts = count_in(log, "RCPT TO:");
    vans_t b[2] = {{0}};
    verify_query(vw.v, "a@ok.test", vans_cb, &b[0]);
    verify_query(vw.v, "b@ok.test", vans_cb, &b[1]);
    CHECK_INT(b[0].calls + b[1].calls, 0);
    wait_answers(&vw, b, 2);
    CHECK_INT(b[0].st, VR_DELIVERABLE);
    CHECK_INT(b[1].st, VR_UNDELIVERABLE);
    CHECK(strstr(b[1].text, "said: 550 5.1.1") != NULL);
    CHECK_INT(count_in(log, "RCPT TO:"), rcpts);
    vworld_free(&vw);
}

TEST(verify_negative_cache_off_probes_again)
{
    vworld_t vw;
    vworld_init(&vw, "address_verify_negative_cache = no\n", false);
    vw.v = vworld_verifier(&vw, NULL);
    for (int i = 0; i < 2; i++) {
        vans_t a = {0};
        verify_query(vw.v, "b@ok.test", vans_cb, &a);
        wait_answers(&vw, &a, 1);
        CHECK_INT(a.st, VR_UNDELIVERABLE);
    }
    CHECK_INT(count_in(&vw.srv->log, "RCPT TO:<b@ok.test>"), 2);
    vworld_free(&vw);
}

TEST(verify_one_probe_per_address)
{
    vworld_t vw;
    vworld_init(&vw, NULL, false);
    vw.v = vworld_verifier(&vw, NULL);
    vans_t a[5] = {{0}};
    for (int i = 0; i < 5; i++)
        verify_query(vw.v, "b@ok.test", vans_cb, &a[i]);
    CHECK_INT(verify_probes_running(vw.v), 1);
    wait_answers(&vw, a, 5);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(a[i].calls, 1);
        CHECK_INT(a[i].st, VR_UNDELIVERABLE);
    }
    CHECK_INT(count_in(&vw.srv->log, "RCPT TO:<b@ok.test>"), 1);
    vworld_free(&vw);
}

TEST(verify_in_progress_and_domain_limit)
{
    /* a server that never answers: probes stay in flight */
    vworld_t vw;
    vworld_init(&vw, "address_verify_poll_count = 1\naddress_verify_probe_domain_limit = 1\n"
                     "smtp_helo_timeout = 30s\nsmtp_connect_timeout = 30s\n",
                true);
    vw.v = vworld_verifier(&vw, NULL);
    vans_t a[3] = {{0}};
    verify_query(vw.v, "x@ok.test", vans_cb, &a[0]);
    verify_query(vw.v, "y@ok.test", vans_cb, &a[1]);
    verify_query(vw.v, "z@other.test", vans_cb, &a[2]);
    CHECK_INT(verify_probes_running(vw.v), 2);   /* one per domain */
    CHECK_INT(verify_probes_queued(vw.v), 1);
    wait_answers(&vw, a, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(a[i].calls, 1);
        CHECK_INT(a[i].st, VR_IN_PROGRESS);
        CHECK_STR(a[i].text, "");
    }
    /* freed with probes in flight: they end on their own (ASan checks) */
    vworld_free(&vw);
}

TEST(verify_cancel_means_no_callback)
{
    vworld_t vw;
    vworld_init(&vw, NULL, false);
    vw.v = vworld_verifier(&vw, NULL);
    vans_t a = {0}, b = {0};
    void *h = verify_query(vw.v, "a@ok.test", vans_cb, &a);
    verify_query(vw.v, "a@ok.test", vans_cb, &b);
    verify_cancel(h);
    wait_answers(&vw, &b, 1);
    tworld_spin(&vw.w, 0.05);
    CHECK_INT(a.calls, 0);
    CHECK_INT(b.calls, 1);
    CHECK_INT(b.st, VR_DELIVERABLE);
    vworld_free(&vw);
}

TEST(verify_transports_without_a_probe)
{
    vworld_t vw;
    vworld_init(&vw, NULL, false);
    vw.v = vworld_verifier(&vw, NULL);
    vans_t a[3] = {{0}};
    verify_query(vw.v, "anyone@example.test", vans_cb, &a[0]);
    verify_query(vw.v, "x@gone.test", vans_cb, &a[1]);
    verify_query(vw.v, "x@later.test", vans_cb, &a[2]);
    CHECK_INT(a[0].calls + a[1].calls + a[2].calls, 0);
    wait_answers(&vw, a, 3);
    CHECK_INT(a[0].st, VR_DELIVERABLE);
    CHECK_INT(a[1].st, VR_UNDELIVERABLE);
    CHECK_STR(a[1].dsn, "5.1.2");
    CHECK_STR(a[1].text, "This domain is gone");
    CHECK_INT(a[2].st, VR_TEMPFAIL);
    CHECK_STR(a[2].dsn, "4.3.2");
    CHECK_STR(a[2].text, "Not now");
    CHECK_INT(vw.srv->sessions, 0);
    vworld_free(&vw);
}

TEST(verify_results_live_in_the_store)
{
    vworld_t vw;
    vworld_init(&vw, NULL, false);
    char dir[] = "/tmp/moat-verify-store-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char spec[100];
    snprintf(spec, sizeof spec, "lmdb:%s", dir);
    buf_t err = BUF_INIT;
    store_t *store = store_open(vw.w.base, vw.w.pool, spec, &err);
    REQUIRE(store != NULL);
    vw.v = vworld_verifier(&vw, store);
    vans_t a[2] = {{0}};
    verify_query(vw.v, "a@ok.test", vans_cb, &a[0]);
    verify_query(vw.v, "b@ok.test", vans_cb, &a[1]);
    wait_answers(&vw, a, 2);
    CHECK_INT(a[1].st, VR_UNDELIVERABLE);
    tworld_spin(&vw.w, 0.1);   /* the writes */

    /* a new verifier on the same store (another process would be alike)
     * answers from it, without a connection */
    verify_free(&vw.v);
    int sessions = vw.srv->sessions;
    vw.v = vworld_verifier(&vw, store);
    vans_t b[2] = {{0}};
    verify_query(vw.v, "a@ok.test", vans_cb, &b[0]);
    verify_query(vw.v, "B@OK.test", vans_cb, &b[1]);
    wait_answers(&vw, b, 2);
    CHECK_INT(b[0].st, VR_DELIVERABLE);
    CHECK_INT(b[1].st, VR_UNDELIVERABLE);
    CHECK(strstr(b[1].text, "said: 550 5.1.1 <b@ok.test>: User unknown") != NULL);
    CHECK_INT(vw.srv->sessions, sessions);

    verify_free(&vw.v);
    store_close(&store);
    vworld_free(&vw);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    buf_free(&err);
}

/* ------------------------------------------- the restriction step */

static ss_status_t step_once(const char *sender, const char *rcpt, pcmd_t cmd, bool is_sender, ss_ctx_t *c,
                             buf_t *warnings)
{
    static config_t *cfg;
    if (!cfg) {
        buf_t err = BUF_INIT;
        cfg = config_load_text("myorigin = origin.test\n", NULL, &err, NULL);
        buf_free(&err);
    }
    static pstate_t st;
    memset(&st, 0, sizeof st);
    st.sender = sender;
    st.recipient = rcpt;
    static policy_env_t env;
    memset(&env, 0, sizeof env);
    *c = (ss_ctx_t){.st = &st, .cmd = cmd, .p = config_main(cfg), .env = &env, .memo = NULL,
                    .step = is_sender ? "reject_unverified_sender" : "reject_unverified_recipient",
                    .top = "recipient", .warnings = warnings};
    return unverified_step(c, is_sender);
}

TEST(verify_step_skips_and_fails_closed)
{
    ss_ctx_t c;
    buf_t w = BUF_INIT;
    /* the null sender, a sender without a domain, no sender yet: nothing to verify */
    CHECK_INT(step_once("", "u@x.test", PCMD_RCPT, true, &c, &w), SS_DUNNO);
    CHECK_INT(step_once("postmaster", "u@x.test", PCMD_RCPT, true, &c, &w), SS_DUNNO);
    CHECK_INT(step_once(NULL, NULL, PCMD_HELO, true, &c, &w), SS_DUNNO);
    /* the recipient step only at RCPT */
    CHECK_INT(step_once("a@b.test", "u@x.test", PCMD_DATA, false, &c, &w), SS_DUNNO);
    CHECK_INT(w.len, 0);
    /* no verifier here: a server configuration problem, never a permit */
    CHECK_INT(step_once("a@b.test", "u@x.test", PCMD_RCPT, true, &c, &w), SS_REJECT);
    CHECK_INT(c.code, 451);
    CHECK_STR(c.dsn, "4.3.5");
    CHECK_STR(c.text, "Server configuration problem");
    CHECK(c.whole_text);
    CHECK(strstr(buf_cstr(&w), "warning: ") == buf_cstr(&w));
    buf_reset(&w);
    CHECK_INT(step_once("a@b.test", "u@x.test", PCMD_RCPT, false, &c, &w), SS_REJECT);
    CHECK_INT(c.code, 451);
    buf_free(&w);
}
