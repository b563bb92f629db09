/*
 * sstep: the stateful steps' helpers against a real LMDB store — reads
 * through the memo (pending once, then the same answer on every replay),
 * increments done once per memo key, a read instead of an increment when
 * nothing may be written, the effects list committed once, the store
 * failure policy.
 */
#include "harness.h"
#include "sstep_testlib.h"

#include "config/config.h"
#include "dns/dns.h"
#include "policy/sstep.h"

#include <stdlib.h>
#include <string.h>

TEST(sstep_get_pending_then_replayed)
{
    ssx_t f;
    ssx_open(&f, "myhostname = mx.test\n", 5000);
    st_res_t x = {0};
    CHECK_INT(st_set(&f.l, f.store, "k:a", "hello world", 60, &x), ST_OK);
    ss_ctx_t c = ssx_ctx(&f, PCMD_RCPT, "check_test");
    ss_value_t v;
    CHECK_INT(ss_store_get(&c, "k:a", &v), SG_PENDING);
    ssx_wait(&f);
    CHECK_INT(ss_store_get(&c, "k:a", &v), SG_FOUND);
    CHECK_STR(v.data, "hello world");
    CHECK(v.expires > 0);
    /* a missing key: pending once, then missing */
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_PENDING);
    ssx_wait(&f);
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_MISSING);
    /* the same answer on a replay, even after the store changed */
    CHECK_INT(st_set(&f.l, f.store, "k:none", "now here", 60, &x), ST_OK);
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_MISSING);
    dns_memo_clear(f.memo);   /* the next command sees fresh data */
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_PENDING);
    ssx_wait(&f);
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_FOUND);
    CHECK_STR(v.data, "now here");
    st_res_free(&x);
    ssx_close(&f);
}

TEST(sstep_incr_once_per_command_and_read_only_without_commit)
{
    ssx_t f;
    ssx_open(&f, "myhostname = mx.test\n", 5000);
    ss_ctx_t c = ssx_ctx(&f, PCMD_RCPT, "check_test");
    long long n = -1;
    const char *why = NULL;
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_PENDING);
    ssx_wait(&f);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);
    CHECK_INT(n, 1);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);   /* replayed, not repeated */
    CHECK_INT(n, 1);
    dns_memo_clear(f.memo);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_PENDING);
    ssx_wait(&f);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);
    CHECK_INT(n, 2);
    /* moat check: a read plus the increment, nothing written */
    f.env.commit = false;
    dns_memo_clear(f.memo);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_PENDING);
    ssx_wait(&f);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);
    CHECK_INT(n, 3);
    st_res_t x = {0};
    CHECK_INT(st_get(&f.l, f.store, "rate:x", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "2");
    st_res_free(&x);
    ssx_close(&f);
}

TEST(sstep_effects_commit_once)
{
    ssx_t f;
    ssx_open(&f, "myhostname = mx.test\n", 5000);
    ss_ctx_t c = ssx_ctx(&f, PCMD_RCPT, "check_test");
    ss_fx_set(&c, "grey:a", "1 2 0", 100);
    ss_fx_incr(&c, "greyok:a", 1, 100);
    ss_fx_incr(&c, "greyok:a", 1, 100);
    CHECK_INT(ss_fx_count(f.fx), 3);
    buf_t t = BUF_INIT;
    ss_fx_trace(f.fx, &t);
    CHECK(strstr(buf_cstr(&t), "state: set grey:a = \"1 2 0\" (ttl 100s)") != NULL);
    CHECK(strstr(buf_cstr(&t), "state: incr greyok:a by 1") != NULL);
    ss_fx_commit(f.fx, f.store);
    CHECK_INT(ss_fx_count(f.fx), 0);
    ss_fx_commit(f.fx, f.store);   /* nothing left to write twice */
    st_run_for(&f.l, 0.3);
    st_res_t x = {0};
    CHECK_INT(st_get(&f.l, f.store, "grey:a", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "1 2 0");
    CHECK_INT(st_get(&f.l, f.store, "greyok:a", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "2");
    ss_fx_del(&c, "grey:a");
    ss_fx_commit(f.fx, f.store);
    st_run_for(&f.l, 0.3);
    CHECK_INT(st_get(&f.l, f.store, "grey:a", &x), ST_NOTFOUND);
    st_res_free(&x);
    buf_free(&t);
    ssx_close(&f);
}

TEST(sstep_store_failure_defers_or_skips)
{
    ssx_t f;
    ssx_open(&f, "myhostname = mx.test\n", 5000);
    f.env = (policy_env_t){.store = NULL, .store_error = "redis 127.0.0.1:1: Connection refused"};
    ss_ctx_t c = ssx_ctx(&f, PCMD_RCPT, "check_test");
    ss_value_t v;
    CHECK_INT(ss_store_get(&c, "k", &v), SG_ERROR);
    CHECK_STR(v.error, "redis 127.0.0.1:1: Connection refused");
    CHECK_INT(ss_store_failed(&c, v.error), SS_REJECT);
    CHECK_INT(c.code, 451);
    CHECK_STR(c.dsn, "4.3.0");
    CHECK_STR(c.text, "Temporary state store failure");
    CHECK(strstr(buf_cstr(&f.warnings), "warning: check_test: state store (not open): redis 127.0.0.1:1") != NULL);
    config_free(&f.cfg);
    buf_t err = BUF_INIT;
    f.cfg = config_load_text("state_store_fail_action = skip\n", NULL, &err, NULL);
    REQUIRE(f.cfg);
    c = ssx_ctx(&f, PCMD_RCPT, "check_test");
    CHECK_INT(ss_store_failed(&c, "down"), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.trace), "state_store_fail_action = skip") != NULL);
    buf_free(&err);
    ssx_close(&f);
}
