/*
 * sstep_testlib: what the tests of stateful steps share (test_sstep.c,
 * test_greylist.c): a loop with a pool, a real LMDB store in a temporary
 * directory, a resolver that answers nothing (127.0.0.1 port 9) with a
 * memo that counts its wakes, a configuration from main.cf text, the
 * environment and effects list an engine would give a step, and the
 * buffers it writes into.  Header-only (static inline).
 */
#ifndef MOAT_TEST_SSTEP_TESTLIB_H
#define MOAT_TEST_SSTEP_TESTLIB_H

#include "harness.h"
#include "store_testlib.h"

#include "config/config.h"
#include "dns/dns.h"
#include "policy/sstep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ssx {
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
} ssx_t;

static inline config_t *ssx_cfg(const char *main_cf)
{
    buf_t err = BUF_INIT;
    config_t *c = config_load_text(main_cf, NULL, &err, NULL);
    if (!c)
        harness_fail(__FILE__, __LINE__, "config: %s", buf_cstr(&err));
    buf_free(&err);
    return c;
}

static inline void ssx_wake(void *arg)
{
    ((ssx_t *)arg)->wakes++;
}

/* dns_timeout_ms: how soon the silent resolver gives up (DNS allow
 * lists in a test time out fast). */
static inline void ssx_open(ssx_t *f, const char *main_cf, int dns_timeout_ms)
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
    dns_opts_t o = {.forwarders = "127.0.0.1@9", .timeout_ms = dns_timeout_ms, .cache_max = 100};
    f->dns = dns_new(f->l.base, &o, &err);
    f->memo = dns_memo_new(f->dns, ssx_wake, f);
    f->cfg = ssx_cfg(main_cf);
    f->env = (policy_env_t){.store = f->store, .commit = true};
    f->fx = ss_fx_new();
    f->st.dns = f->memo;
    buf_free(&spec);
    buf_free(&err);
}

static inline void ssx_close(ssx_t *f)
{
    st_run_for(&f->l, 0.3);   /* let the last effects land (their keys are freed by their callbacks) */
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

/* Run the loop until the memo woke us (bounded: a broken test, not a
 * timing assertion). */
static inline void ssx_wait(ssx_t *f)
{
    int before = f->wakes;
    double end = now_mono() + 10;
    while (f->wakes == before && now_mono() < end)
        event_base_loop(f->l.base, EVLOOP_ONCE);
}

/* The context an engine gives a step for cmd. */
static inline ss_ctx_t ssx_ctx(ssx_t *f, pcmd_t cmd, const char *step)
{
    return (ss_ctx_t){.st = &f->st, .cmd = cmd, .p = config_main(f->cfg), .env = &f->env, .memo = f->memo,
                      .step = step, .top = "recipient", .now = time(NULL), .trace = &f->trace,
                      .warnings = &f->warnings, .prepend = &f->prepend, .fx = f->fx};
}

#endif
