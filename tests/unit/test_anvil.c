/*
 * Tests for src/policy/anvil.c: the pure helpers (block identity, rate
 * window keys, the block value codec), the in-memory connection count,
 * compiling the limits (errors name file:line), the stage without a
 * store (exemption, the connection count limit, store failures skip),
 * and the abuse notes against a real LMDB store (the block is written
 * when the count reaches the limit; exempt clients are never counted).
 */
#include "harness.h"
#include "queue_testlib.h"
#include "store_testlib.h"

#include "config/config.h"
#include "policy/anvil.h"
#include "policy/restrict.h"
#include "policy/sstep.h"

#include <stdlib.h>
#include <string.h>

TEST(anvil_block_id_forms)
{
    char id[80];
    CHECK(anvil_block_id("192.0.2.7", id, sizeof id));
    CHECK_STR(id, "192.0.2.7");
    CHECK(anvil_block_id("2001:db8:1:2:3:4:5:6", id, sizeof id));
    CHECK_STR(id, "2001:db8:1:2::/64");
    CHECK(anvil_block_id("2001:DB8:1:2::99", id, sizeof id));
    CHECK_STR(id, "2001:db8:1:2::/64");
    CHECK(anvil_block_id("::ffff:192.0.2.9", id, sizeof id));
    CHECK_STR(id, "192.0.2.9");
    CHECK(anvil_block_id("::1", id, sizeof id));
    CHECK_STR(id, "::/64");
    CHECK(!anvil_block_id("unknown", id, sizeof id));
    CHECK(!anvil_block_id("192.0.2.0/24", id, sizeof id));
    CHECK(!anvil_block_id("", id, sizeof id));
    CHECK(!anvil_block_id("2001:db8:1:2:3:4:5:6", id, 8));   /* too small: refused, not cut */
}

TEST(anvil_window_keys)
{
    CHECK(anvil_window_start(1000, 60) == 960);
    CHECK(anvil_window_start(960, 60) == 960);
    CHECK(anvil_window_start(1019, 60) == 960);
    CHECK(anvil_window_start(1020, 60) == 1020);
    CHECK(anvil_window_start(1234, 0) == 1234);
    buf_t k = BUF_INIT;
    anvil_rate_key(&k, "conn", "192.0.2.1", 3605, 3600);
    CHECK_STR(buf_cstr(&k), "rate:conn:192.0.2.1:3600");
    buf_reset(&k);
    /* the same window for every moment in it, another after it */
    anvil_rate_key(&k, "mail", "2001:db8::1", 7199, 3600);
    CHECK_STR(buf_cstr(&k), "rate:mail:2001:db8::1:3600");
    buf_reset(&k);
    anvil_rate_key(&k, "rcpt", "192.0.2.1", 7200, 3600);
    CHECK_STR(buf_cstr(&k), "rate:rcpt:192.0.2.1:7200");
    buf_free(&k);
}

TEST(anvil_block_value_codec)
{
    buf_t v = BUF_INIT;
    anvil_block_value(&v, "5xx", 1700000000, 10);
    CHECK_STR(buf_cstr(&v), "5xx 1700000000 10");
    char reason[16];
    long long since, count;
    CHECK(anvil_block_parse(buf_cstr(&v), reason, sizeof reason, &since, &count));
    CHECK_STR(reason, "5xx");
    CHECK(since == 1700000000);
    CHECK(count == 10);
    CHECK(anvil_block_parse("rcpt 5 7", reason, sizeof reason, &since, &count));
    CHECK_STR(reason, "rcpt");
    CHECK(since == 5 && count == 7);
    /* older or hand-written forms */
    CHECK(anvil_block_parse("manual", reason, sizeof reason, &since, &count));
    CHECK_STR(reason, "manual");
    CHECK(since == 0 && count == 0);
    CHECK(anvil_block_parse("5xx 42", reason, sizeof reason, &since, &count));
    CHECK(since == 42 && count == 0);
    /* junk */
    CHECK(!anvil_block_parse("", reason, sizeof reason, &since, &count));
    CHECK(!anvil_block_parse(" 1 2", reason, sizeof reason, &since, &count));
    CHECK(!anvil_block_parse("5xx x", reason, sizeof reason, &since, &count));
    CHECK(!anvil_block_parse("5xx 1 2x", reason, sizeof reason, &since, &count));
    CHECK(!anvil_block_parse("averyveryverylongreason 1 2", reason, 8, &since, &count));
    CHECK(!anvil_block_parse(NULL, reason, sizeof reason, &since, &count));
    CHECK_STR(anvil_reason_text("5xx"), "5xx replies");
    CHECK_STR(anvil_reason_text("rcpt"), "unknown recipients");
    CHECK_STR(anvil_reason_text("manual"), "manual");
    buf_free(&v);
}

TEST(anvil_conn_counting)
{
    CHECK_INT(anvil_conn_count("anvtest", "192.0.2.1"), 0);
    anvil_conn_open("anvtest", "192.0.2.1");
    anvil_conn_open("anvtest", "192.0.2.1");
    anvil_conn_open("anvtest", "192.0.2.2");
    anvil_conn_open("anvtest2", "192.0.2.1");
    CHECK_INT(anvil_conn_count("anvtest", "192.0.2.1"), 2);
    CHECK_INT(anvil_conn_count("anvtest", "192.0.2.2"), 1);
    CHECK_INT(anvil_conn_count("anvtest2", "192.0.2.1"), 1);
    /* the key is service and address, not a concatenation that could collide */
    CHECK_INT(anvil_conn_count("anvtest 192.0.2", "1"), 0);
    anvil_conn_close("anvtest", "192.0.2.1");
    CHECK_INT(anvil_conn_count("anvtest", "192.0.2.1"), 1);
    anvil_conn_close("anvtest", "192.0.2.1");
    anvil_conn_close("anvtest", "192.0.2.1");   /* one close too many: no underflow */
    CHECK_INT(anvil_conn_count("anvtest", "192.0.2.1"), 0);
    anvil_conn_close("anvtest", "192.0.2.2");
    anvil_conn_close("anvtest2", "192.0.2.1");
    CHECK_INT(anvil_conn_count("anvtest2", "192.0.2.1"), 0);
    /* NULL service means smtp */
    anvil_conn_open(NULL, "192.0.2.3");
    CHECK_INT(anvil_conn_count("smtp", "192.0.2.3"), 1);
    anvil_conn_close("smtp", "192.0.2.3");
    CHECK_INT(anvil_conn_count(NULL, "192.0.2.3"), 0);
    /* many clients: the table chains */
    char a[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(a, sizeof a, "10.%d.%d.1", i / 250, i % 250);
        anvil_conn_open("anvmany", a);
    }
    CHECK_INT(anvil_conn_count("anvmany", "10.3.0.1"), 1);
    for (int i = 0; i < 3000; i++) {
        snprintf(a, sizeof a, "10.%d.%d.1", i / 250, i % 250);
        anvil_conn_close("anvmany", a);
    }
    CHECK_INT(anvil_conn_count("anvmany", "10.3.0.1"), 0);
}

/* ------------------------------------------------------------- compiling */

typedef struct ax {
    config_t *cfg;
    anvil_t *a;
    buf_t err, trace, warnings;
    pstate_t st;
    ss_ctx_t c;
    policy_env_t env;
} ax_t;

static bool ax_init(ax_t *x, const char *main_cf)
{
    memset(x, 0, sizeof *x);
    x->cfg = config_load_text(main_cf, NULL, &x->err, NULL);
    if (!x->cfg)
        return false;
    x->a = anvil_new(config_main(x->cfg), "/tmp", &x->err);
    return x->a != NULL;
}

static ss_status_t ax_stage(ax_t *x, pcmd_t cmd, const char *addr)
{
    buf_reset(&x->trace);
    buf_reset(&x->warnings);
    x->st = (pstate_t){.client_addr = addr, .client_name = "unknown", .service = "anvsvc"};
    x->c = (ss_ctx_t){.st = &x->st, .cmd = cmd, .p = config_main(x->cfg), .env = &x->env, .step = "limits",
                      .top = "limits", .now = 1000000, .trace = &x->trace, .warnings = &x->warnings};
    return anvil_stage(x->a, &x->c);
}

static void ax_free(ax_t *x)
{
    anvil_free(&x->a);
    config_free(&x->cfg);
    buf_free(&x->err);
    buf_free(&x->trace);
    buf_free(&x->warnings);
}

#define AX_BASE "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\n"

TEST(anvil_new_errors)
{
    ax_t x;
    CHECK(!ax_init(&x, AX_BASE "smtpd_client_event_limit_exceptions = 10.0.0.0/8 not-a-network\n"));
    CHECK(strstr(buf_cstr(&x.err), "main.cf:3: ") != NULL);
    CHECK(strstr(buf_cstr(&x.err), "not-a-network") != NULL);
    ax_free(&x);

    REQUIRE(ax_init(&x, AX_BASE "smtpd_client_connection_count_limit = 0\n"));
    CHECK(!anvil_uses_store(x.a));   /* the count is in memory */
    ax_free(&x);
    REQUIRE(ax_init(&x, AX_BASE));
    CHECK(!anvil_uses_store(x.a));   /* defaults: only the connection count */
    ax_free(&x);
    const char *store_users[] = {
        "smtpd_client_connection_rate_limit = 1\n", "smtpd_client_message_rate_limit = 1\n",
        "smtpd_client_recipient_rate_limit = 1\n", "smtpd_client_reject_limit = 1\n",
        "smtpd_client_unknown_recipient_limit = 1\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(store_users); i++) {
        buf_t m = BUF_INIT;
        buf_printf(&m, "%s%s", AX_BASE, store_users[i]);
        REQUIRE(ax_init(&x, buf_cstr(&m)));
        CHECK(anvil_uses_store(x.a));
        ax_free(&x);
        buf_free(&m);
    }
    CHECK(!anvil_uses_store(NULL));
}

TEST(anvil_stage_connection_count_and_exemption)
{
    ax_t x;
    REQUIRE(ax_init(&x, AX_BASE "smtpd_client_connection_count_limit = 2\n"));
    anvil_conn_open("anvsvc", "192.0.2.50");
    anvil_conn_open("anvsvc", "192.0.2.50");
    CHECK(ax_stage(&x, PCMD_CONNECT, "192.0.2.50") == SS_DUNNO);
    CHECK(strstr(buf_cstr(&x.trace), "2 connections from 192.0.2.50 to anvsvc (limit 2)") != NULL);
    anvil_conn_open("anvsvc", "192.0.2.50");
    CHECK(ax_stage(&x, PCMD_CONNECT, "192.0.2.50") == SS_REJECT);
    CHECK_INT(x.c.code, 421);
    CHECK_STR(x.c.dsn, "4.7.0");
    CHECK_STR(x.c.text, "mx.example.test Error: too many connections from 192.0.2.50");
    CHECK(x.c.whole_text);
    CHECK_STR(buf_cstr(&x.warnings),
              "warning: Connection concurrency limit exceeded: 3 from unknown[192.0.2.50] for service anvsvc\n");
    /* the count applies at CONNECT only */
    CHECK(ax_stage(&x, PCMD_RCPT, "192.0.2.50") == SS_DUNNO);
    /* the exempt client (default: $mynetworks) skips, with one trace line */
    for (int i = 0; i < 3; i++)
        anvil_conn_open("anvsvc", "127.0.0.1");
    CHECK(ax_stage(&x, PCMD_CONNECT, "127.0.0.1") == SS_DUNNO);
    CHECK_STR(buf_cstr(&x.trace), "  limits: limits: 127.0.0.1 is exempt (smtpd_client_event_limit_exceptions: "
                                  "127.0.0.1/32)\n");
    CHECK_STR(buf_cstr(&x.warnings), "");
    for (int i = 0; i < 3; i++) {
        anvil_conn_close("anvsvc", "127.0.0.1");
        anvil_conn_close("anvsvc", "192.0.2.50");
    }
    /* an unknown client address is never limited */
    CHECK(ax_stage(&x, PCMD_CONNECT, "unknown") == SS_DUNNO);
    ax_free(&x);

    /* exceptions set on their own */
    REQUIRE(ax_init(&x, AX_BASE "smtpd_client_connection_count_limit = 1\n"
                                "smtpd_client_event_limit_exceptions = 192.0.2.0/24, !192.0.2.9\n"));
    anvil_conn_open("anvsvc", "192.0.2.8");
    anvil_conn_open("anvsvc", "192.0.2.8");
    anvil_conn_open("anvsvc", "127.0.0.1");
    anvil_conn_open("anvsvc", "127.0.0.1");
    CHECK(ax_stage(&x, PCMD_CONNECT, "192.0.2.8") == SS_DUNNO);
    CHECK(ax_stage(&x, PCMD_CONNECT, "127.0.0.1") == SS_REJECT);
    anvil_conn_close("anvsvc", "192.0.2.8");
    anvil_conn_close("anvsvc", "192.0.2.8");
    anvil_conn_close("anvsvc", "127.0.0.1");
    anvil_conn_close("anvsvc", "127.0.0.1");
    ax_free(&x);
}

TEST(anvil_stage_store_failure_skips)
{
    ax_t x;
    REQUIRE(ax_init(&x, AX_BASE "smtpd_client_connection_rate_limit = 1\nsmtpd_client_message_rate_limit = 1\n"
                                "smtpd_client_recipient_rate_limit = 1\nsmtpd_client_reject_limit = 1\n"));
    x.env.store_error = "redis 127.0.0.1:1: Connection refused";
    /* no memo and no store: every read fails, nothing is refused */
    CHECK(ax_stage(&x, PCMD_CONNECT, "192.0.2.60") == SS_DUNNO);
    CHECK(strstr(buf_cstr(&x.warnings), "warning: client blocks: state store (not open): ") != NULL);
    CHECK(strstr(buf_cstr(&x.warnings), "warning: smtpd_client_connection_rate_limit: state store (not open): ")
          != NULL);
    CHECK(strstr(buf_cstr(&x.trace), "limit skipped") == NULL);
    CHECK(strstr(buf_cstr(&x.trace), "-> skipped") != NULL);
    CHECK(ax_stage(&x, PCMD_MAIL, "192.0.2.60") == SS_DUNNO);
    CHECK(strstr(buf_cstr(&x.warnings), "smtpd_client_message_rate_limit") != NULL);
    CHECK(ax_stage(&x, PCMD_RCPT, "192.0.2.60") == SS_DUNNO);
    CHECK(strstr(buf_cstr(&x.warnings), "smtpd_client_recipient_rate_limit") != NULL);
    CHECK(strstr(buf_cstr(&x.warnings), "client blocks") != NULL);
    /* nothing to do for other commands: no trace at all */
    CHECK(ax_stage(&x, PCMD_HELO, "192.0.2.60") == SS_DUNNO);
    CHECK_STR(buf_cstr(&x.trace), "");
    ax_free(&x);
}

/* ------------------------------------------------- notes on a real store */

static store_status_t wait_key(st_loop_t *l, store_t *s, const char *key, st_res_t *r)
{
    /* the note's writes are fire and forget: look until they landed (a
     * bound on a broken test, not a timing assertion) */
    for (int i = 0; i < 200; i++) {
        if (st_get(l, s, key, r) == ST_OK)
            return ST_OK;
        st_run_for(l, 0.02);
    }
    return r->st;
}

TEST(anvil_note_blocks_at_limit)
{
    char t[] = "/tmp/moat-anvil-XXXXXX";
    char *dir = xstrdup(mkdtemp(t));
    buf_t spec = BUF_INIT, err = BUF_INIT;
    buf_printf(&spec, "lmdb:%s/state", dir);
    st_loop_t l;
    st_loop_init(&l);
    store_t *s = store_open(l.base, l.pool, buf_cstr(&spec), &err);
    REQUIRE(s);
    ax_t x;
    REQUIRE(ax_init(&x, AX_BASE "smtpd_client_reject_limit = 3\nsmtpd_client_unknown_recipient_limit = 2\n"
                                "smtpd_client_block_time = 600s\nsmtpd_client_abuse_window = 120s\n"));
    policy_env_t env = {.store = s, .commit = true};
    pstate_t st = {.client_addr = "192.0.2.70", .client_name = "unknown"};
    st_res_t r = {0};

    anvil_note(x.a, &env, &st, PE_REJECT_5XX);
    anvil_note(x.a, &env, &st, PE_REJECT_5XX);
    CHECK(wait_key(&l, s, "abuse:5xx:192.0.2.70", &r) == ST_OK);
    st_run_for(&l, 0.1);
    CHECK(st_get(&l, s, "block:192.0.2.70", &r) == ST_NOTFOUND);
    anvil_note(x.a, &env, &st, PE_REJECT_5XX);
    REQUIRE(wait_key(&l, s, "block:192.0.2.70", &r) == ST_OK);
    char reason[16];
    long long since, count;
    CHECK(anvil_block_parse(buf_cstr(&r.val), reason, sizeof reason, &since, &count));
    CHECK_STR(reason, "5xx");
    CHECK(count == 3);
    CHECK(since > 1600000000);
    CHECK(r.expires >= since + 590 && r.expires <= since + 602);
    CHECK(st_get(&l, s, "abuse:5xx:192.0.2.70", &r) == ST_OK);
    CHECK_STR(buf_cstr(&r.val), "3");

    /* IPv6: the /64 is counted and blocked */
    pstate_t st6 = {.client_addr = "2001:db8:5:6::1", .client_name = "unknown"};
    anvil_note(x.a, &env, &st6, PE_UNKNOWN_RCPT);
    st6.client_addr = "2001:db8:5:6::2";
    anvil_note(x.a, &env, &st6, PE_UNKNOWN_RCPT);
    REQUIRE(wait_key(&l, s, "block:2001:db8:5:6::/64", &r) == ST_OK);
    CHECK(anvil_block_parse(buf_cstr(&r.val), reason, sizeof reason, &since, &count));
    CHECK_STR(reason, "rcpt");
    CHECK(count == 2);

    /* exempt clients are never counted; without commit nothing is written */
    pstate_t lo = {.client_addr = "127.0.0.1", .client_name = "localhost"};
    for (int i = 0; i < 4; i++)
        anvil_note(x.a, &env, &lo, PE_REJECT_5XX);
    policy_env_t dry = {.store = s, .commit = false};
    pstate_t other = {.client_addr = "192.0.2.71", .client_name = "unknown"};
    for (int i = 0; i < 4; i++)
        anvil_note(x.a, &dry, &other, PE_REJECT_5XX);
    st_run_for(&l, 0.2);
    CHECK(st_get(&l, s, "abuse:5xx:127.0.0.1", &r) == ST_NOTFOUND);
    CHECK(st_get(&l, s, "block:127.0.0.1", &r) == ST_NOTFOUND);
    CHECK(st_get(&l, s, "abuse:5xx:192.0.2.71", &r) == ST_NOTFOUND);

    st_res_free(&r);
    ax_free(&x);
    store_close(&s);
    st_loop_free(&l);
    buf_free(&spec);
    buf_free(&err);
    rm_rf(dir);
    free(dir);
}
