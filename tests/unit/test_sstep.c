/*
 * sstep: the stateful steps' helpers against a real LMDB store — reads
 * through the memo (pending once, then the same answer on every replay),
 * increments done once per memo key, a read instead of an increment when
 * nothing may be written, the effects list committed once, the store
 * failure policy.
 */
#include "harness.h"
#include "store_testlib.h"

#include "config/config.h"
#include "dns/dns.h"
#include "policy/sstep.h"

#include <stdlib.h>
#include <string.h>

typedef struct sst_fixture {
    st_loop_t l;
    char *dir;
    store_t *store;
    dns_t *dns;
    dns_memo_t *memo;
    int wakes;
    config_t *cfg;
    policy_env_t env;
    ss_fx_t *fx;
    buf_t trace, warnings, prepend;
    pstate_t st;
} sst_fixture_t;

static void sst_wake(void *arg)
{
    ((sst_fixture_t *)arg)->wakes++;
}

static void sst_open(sst_fixture_t *f, const char *main_cf)
{
    memset(f, 0, sizeof *f);
    st_loop_init(&f->l);
    char t[] = "/tmp/moat-sstep-XXXXXX";
    f->dir = xstrdup(mkdtemp(t));
    buf_t spec = BUF_INIT, err = BUF_INIT;
    buf_printf(&spec, "lmdb:%s/state", f->dir);
    f->store = store_open(f->l.base, f->l.pool, buf_cstr(&spec), &err);
    if (!f->store)
        harness_fail(__FILE__, __LINE__, "store_open: %s", buf_cstr(&err));
    dns_opts_t o = {.forwarders = "127.0.0.1@9", .timeout_ms = 5000, .cache_max = 100};
    f->dns = dns_new(f->l.base, &o, &err);
    f->memo = dns_memo_new(f->dns, sst_wake, f);
    f->cfg = config_load_text(main_cf, NULL, &err, NULL);
    if (!f->cfg)
        harness_fail(__FILE__, __LINE__, "config: %s", buf_cstr(&err));
    f->env = (policy_env_t){.store = f->store, .commit = true};
    f->fx = ss_fx_new();
    f->st.dns = f->memo;
    buf_free(&spec);
    buf_free(&err);
}

static void sst_close(sst_fixture_t *f)
{
    dns_memo_free(&f->memo);
    dns_unref(&f->dns);
    store_close(&f->store);
    ss_fx_free(&f->fx);
    config_free(&f->cfg);
    buf_free(&f->trace);
    buf_free(&f->warnings);
    buf_free(&f->prepend);
    st_loop_free(&f->l);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    free(f->dir);
}

static ss_ctx_t sst_ctx(sst_fixture_t *f)
{
    return (ss_ctx_t){.st = &f->st, .cmd = PCMD_RCPT, .p = config_main(f->cfg), .env = &f->env,
                      .memo = f->memo, .step = "check_test", .top = "recipient", .trace = &f->trace,
                      .warnings = &f->warnings, .prepend = &f->prepend, .fx = f->fx};
}

/* Run the loop until the memo woke us (bounded). */
static void sst_wait(sst_fixture_t *f)
{
    int before = f->wakes;
    double end = now_mono() + 10;
    while (f->wakes == before && now_mono() < end)
        event_base_loop(f->l.base, EVLOOP_ONCE);
}

TEST(sstep_get_pending_then_replayed)
{
    sst_fixture_t f;
    sst_open(&f, "myhostname = mx.test\n");
    st_res_t x = {0};
    CHECK_INT(st_set(&f.l, f.store, "k:a", "hello world", 60, &x), ST_OK);
    ss_ctx_t c = sst_ctx(&f);
    ss_value_t v;
    CHECK_INT(ss_store_get(&c, "k:a", &v), SG_PENDING);
    sst_wait(&f);
    CHECK_INT(ss_store_get(&c, "k:a", &v), SG_FOUND);
    CHECK_STR(v.data, "hello world");
    CHECK(v.expires > 0);
    /* a missing key: pending once, then missing */
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_PENDING);
    sst_wait(&f);
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_MISSING);
    /* the same answer on a replay, even after the store changed */
    CHECK_INT(st_set(&f.l, f.store, "k:none", "now here", 60, &x), ST_OK);
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_MISSING);
    dns_memo_clear(f.memo);   /* the next command sees fresh data */
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_PENDING);
    sst_wait(&f);
    CHECK_INT(ss_store_get(&c, "k:none", &v), SG_FOUND);
    CHECK_STR(v.data, "now here");
    st_res_free(&x);
    sst_close(&f);
}

TEST(sstep_incr_once_per_command_and_read_only_without_commit)
{
    sst_fixture_t f;
    sst_open(&f, "myhostname = mx.test\n");
    ss_ctx_t c = sst_ctx(&f);
    long long n = -1;
    const char *why = NULL;
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_PENDING);
    sst_wait(&f);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);
    CHECK_INT(n, 1);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);   /* replayed, not repeated */
    CHECK_INT(n, 1);
    dns_memo_clear(f.memo);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_PENDING);
    sst_wait(&f);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);
    CHECK_INT(n, 2);
    /* moat check: a read plus the increment, nothing written */
    f.env.commit = false;
    dns_memo_clear(f.memo);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_PENDING);
    sst_wait(&f);
    CHECK_INT(ss_store_incr(&c, "rate:x", 1, 60, &n, &why), SG_FOUND);
    CHECK_INT(n, 3);
    st_res_t x = {0};
    CHECK_INT(st_get(&f.l, f.store, "rate:x", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "2");
    st_res_free(&x);
    sst_close(&f);
}

TEST(sstep_effects_commit_once)
{
    sst_fixture_t f;
    sst_open(&f, "myhostname = mx.test\n");
    ss_ctx_t c = sst_ctx(&f);
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
    sst_close(&f);
}

TEST(sstep_store_failure_defers_or_skips)
{
    sst_fixture_t f;
    sst_open(&f, "myhostname = mx.test\n");
    f.env = (policy_env_t){.store = NULL, .store_error = "redis 127.0.0.1:1: Connection refused"};
    ss_ctx_t c = sst_ctx(&f);
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
    c = sst_ctx(&f);
    CHECK_INT(ss_store_failed(&c, "down"), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.trace), "state_store_fail_action = skip") != NULL);
    buf_free(&err);
    sst_close(&f);
}
