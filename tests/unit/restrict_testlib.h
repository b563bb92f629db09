/*
 * restrict_testlib: the fixture of the restriction-engine tests
 * (test_restrict.c, test_restrict_tls.c): a policy compiled from main.cf
 * text, with its tables in a temporary directory that the fixture
 * removes.
 */
#ifndef MOAT_TESTS_RESTRICT_TESTLIB_H
#define MOAT_TESTS_RESTRICT_TESTLIB_H

#include "config/config.h"
#include "core/buf.h"
#include "policy/restrict.h"
#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rx {
    char dir[64];
    config_t *cfg;
    policy_t *pol;
    buf_t err, trace, reply;
    verdict_t v;
} rx_t;

static inline void rx_init(rx_t *x)
{
    memset(x, 0, sizeof *x);
    scratch_make(x->dir, sizeof x->dir, "restrict");
    verdict_init(&x->v);
}

static inline void rx_done(rx_t *x)
{
    policy_free(&x->pol);
    config_free(&x->cfg);
    scratch_remove(x->dir);
    buf_free(&x->err);
    buf_free(&x->trace);
    buf_free(&x->reply);
    verdict_free(&x->v);
}

/* A table or list file in the fixture directory. */
static inline void rx_file(rx_t *x, const char *name, const char *text)
{
    scratch_file(x->dir, name, text);
}

/* Load base + main_cf ("%D" stands for the fixture directory) and
 * compile the policy.  false when either fails (messages in x->err). */
static inline bool rx_load_base(rx_t *x, const char *base, const char *main_cf)
{
    policy_free(&x->pol);
    config_free(&x->cfg);
    buf_reset(&x->err);
    buf_t text = BUF_INIT;
    buf_puts(&text, base);
    scratch_expand(&text, main_cf, x->dir);
    x->cfg = config_load_text(buf_cstr(&text), NULL, &x->err, NULL);
    buf_free(&text);
    if (!x->cfg)
        return false;
    x->pol = policy_new(config_main(x->cfg), x->dir, &x->err);
    return x->pol != NULL;
}

#endif
