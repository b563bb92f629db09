/*
 * sstep: the helpers stateful restriction steps share (see sstep.h):
 * replies, traces and log lines into the engine's buffers, store reads and
 * increments through the session's memo, and the list of writes committed
 * after the final pass.
 */
#include "policy/sstep.h"

#include "core/log.h"
#include "core/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ss_trace(ss_ctx_t *c, const char *fmt, ...)
{
    if (!c->trace)
        return;
    buf_printf(c->trace, "  %s: %s: ", c->top ? c->top : "state", c->step ? c->step : "state");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(c->trace, fmt, ap);
    va_end(ap);
    buf_putc(c->trace, '\n');
}

void ss_log(ss_ctx_t *c, const char *level, const char *fmt, ...)
{
    if (!c->warnings)
        return;
    buf_printf(c->warnings, "%s: ", level);
    va_list ap;
    va_start(ap, fmt);
    size_t at = c->warnings->len;
    buf_vprintf(c->warnings, fmt, ap);
    va_end(ap);
    /* one log line per entry: peer text never splits it */
    for (size_t i = at; i < c->warnings->len; i++)
        if (c->warnings->data[i] == '\n' || c->warnings->data[i] == '\r')
            c->warnings->data[i] = ' ';
    buf_putc(c->warnings, '\n');
}

ss_status_t ss_reply(ss_ctx_t *c, ss_status_t status, int code, const char *dsn, const char *fmt, ...)
{
    c->code = code;
    str_copy(c->dsn, dsn, sizeof c->dsn);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->text, sizeof c->text, fmt, ap);
    va_end(ap);
    return status;
}

ss_status_t ss_store_failed(ss_ctx_t *c, const char *why)
{
    const char *action = param_str(c->p, PARAM_state_store_fail_action);
    ss_log(c, "warning", "%s: state store %s: %s", c->step ? c->step : "state",
           c->env && c->env->store ? store_spec(c->env->store) : "(not open)", why ? why : "unavailable");
    if (str_ieq(action, "skip")) {
        ss_trace(c, "state store failed (%s): state_store_fail_action = skip", why ? why : "unavailable");
        return SS_DUNNO;
    }
    ss_trace(c, "state store failed (%s): state_store_fail_action = defer", why ? why : "unavailable");
    return ss_reply(c, SS_REJECT, 451, "4.3.0", "Temporary state store failure");
}

/* ------------------------------------------------------- memo operations */

/* The memo's value of a store operation: "F<expires> <value>" (found),
 * "M" (missing), "E<reason>" (error), "N<number>" (increment). */
typedef struct store_op_arg {
    store_t *store;
    const char *key;
    long long by;    /* incr */
    unsigned ttl;
    int kind;        /* 0 get, 1 incr */
} store_op_arg_t;

static void store_op_done(void *arg, const store_result_t *r)
{
    buf_t v = BUF_INIT;
    if (r->status == ST_ERROR)
        buf_printf(&v, "E%s", r->error ? r->error : "failed");
    else if (r->status == ST_NOTFOUND)
        buf_puts(&v, "M");
    else if (r->value)
        buf_printf(&v, "F%lld %.*s", r->expires, (int)r->len, r->value);
    else
        buf_printf(&v, "N%lld", r->num);
    memo_op_done(arg, buf_cstr(&v));
    buf_free(&v);
}

static void *store_op_start(void *arg, const char *key, memo_op_t *op)
{
    (void)key;
    store_op_arg_t *a = arg;
    if (a->kind == 1)
        return store_incr(a->store, a->key, a->by, a->ttl, store_op_done, op);
    return store_get(a->store, a->key, store_op_done, op);
}

static void store_op_cancel(void *handle)
{
    if (handle)
        store_cancel(handle);
}

static const char *memo_store(ss_ctx_t *c, store_op_arg_t *a, const char **error)
{
    if (!c->memo) {
        *error = "no event loop in this context";
        return NULL;
    }
    if (!c->env || !c->env->store) {
        *error = c->env && c->env->store_error ? c->env->store_error : "state_store is not open";
        return NULL;
    }
    a->store = c->env->store;
    buf_t key = BUF_INIT;
    buf_printf(&key, "store:%s:%s", a->kind == 1 ? "incr" : "get", a->key);
    const char *val = dns_memo_ext(c->memo, buf_cstr(&key), store_op_start, store_op_cancel, a);
    buf_free(&key);
    return val;
}

ss_get_t ss_store_get(ss_ctx_t *c, const char *key, ss_value_t *out)
{
    memset(out, 0, sizeof *out);
    store_op_arg_t a = {.key = key, .kind = 0};
    const char *error = NULL;
    const char *val = memo_store(c, &a, &error);
    if (error) {
        out->error = error;
        return SG_ERROR;
    }
    if (!val)
        return SG_PENDING;
    if (val[0] == 'E') {
        out->error = val + 1;
        return SG_ERROR;
    }
    if (val[0] != 'F')
        return SG_MISSING;
    char *end;
    out->expires = strtoll(val + 1, &end, 10);
    out->data = *end == ' ' ? end + 1 : end;
    out->len = strlen(out->data);
    return SG_FOUND;
}

ss_get_t ss_store_incr(ss_ctx_t *c, const char *key, long long by, unsigned ttl, long long *num,
                       const char **error)
{
    *num = 0;
    *error = NULL;
    bool commit = c->env && c->env->commit;
    store_op_arg_t a = {.key = key, .kind = commit ? 1 : 0, .by = by, .ttl = ttl};
    const char *val = memo_store(c, &a, error);
    if (*error)
        return SG_ERROR;
    if (!val)
        return SG_PENDING;
    if (val[0] == 'E') {
        *error = val + 1;
        return SG_ERROR;
    }
    if (val[0] == 'N') {
        *num = strtoll(val + 1, NULL, 10);
    } else if (val[0] == 'F') {
        /* a read (no commit): the value as it would become */
        const char *sp = strchr(val, ' ');
        *num = (sp ? strtoll(sp + 1, NULL, 10) : 0) + by;
    } else {
        *num = by;
    }
    return SG_FOUND;
}

/* ---------------------------------------------------------------- effects */

typedef struct fx_item {
    char op;            /* 's' set, 'i' incr, 'd' delete */
    char *key;
    char *value;
    long long by;
    unsigned ttl;
} fx_item_t;

struct ss_fx {
    fx_item_t *items;
    size_t n, cap;
};

ss_fx_t *ss_fx_new(void)
{
    return xcalloc(1, sizeof(ss_fx_t));
}

void ss_fx_reset(ss_fx_t *fx)
{
    if (!fx)
        return;
    for (size_t i = 0; i < fx->n; i++) {
        free(fx->items[i].key);
        free(fx->items[i].value);
    }
    fx->n = 0;
}

void ss_fx_free(ss_fx_t **fx)
{
    if (!*fx)
        return;
    ss_fx_reset(*fx);
    free((*fx)->items);
    free(*fx);
    *fx = NULL;
}

size_t ss_fx_count(const ss_fx_t *fx)
{
    return fx ? fx->n : 0;
}

static void fx_add(ss_ctx_t *c, char op, const char *key, const char *value, long long by, unsigned ttl)
{
    ss_fx_t *fx = c->fx;
    if (!fx)
        return;
    if (fx->n == fx->cap) {
        fx->cap = fx->cap ? fx->cap * 2 : 4;
        fx->items = xrealloc(fx->items, fx->cap * sizeof *fx->items);
    }
    fx->items[fx->n++] = (fx_item_t){op, xstrdup(key), value ? xstrdup(value) : NULL, by, ttl};
}

void ss_fx_set(ss_ctx_t *c, const char *key, const char *value, unsigned ttl)
{
    fx_add(c, 's', key, value, 0, ttl);
}

void ss_fx_incr(ss_ctx_t *c, const char *key, long long by, unsigned ttl)
{
    fx_add(c, 'i', key, NULL, by, ttl);
}

void ss_fx_del(ss_ctx_t *c, const char *key)
{
    fx_add(c, 'd', key, NULL, 0, 0);
}

void ss_fx_trace(const ss_fx_t *fx, buf_t *trace)
{
    if (!fx || !trace)
        return;
    for (size_t i = 0; i < fx->n; i++) {
        const fx_item_t *it = &fx->items[i];
        if (it->op == 's')
            buf_printf(trace, "  state: set %s = \"%s\" (ttl %us)\n", it->key, it->value, it->ttl);
        else if (it->op == 'i')
            buf_printf(trace, "  state: incr %s by %lld (ttl %us)\n", it->key, it->by, it->ttl);
        else
            buf_printf(trace, "  state: delete %s\n", it->key);
    }
}

static void fx_done(void *arg, const store_result_t *r)
{
    char *key = arg;
    if (r->status == ST_ERROR)
        log_warn("state", "state store write of %s failed: %s", key, r->error ? r->error : "error");
    free(key);
}

void ss_fx_commit(ss_fx_t *fx, store_t *store)
{
    if (!fx)
        return;
    for (size_t i = 0; store && i < fx->n; i++) {
        fx_item_t *it = &fx->items[i];
        char *key = xstrdup(it->key);
        if (it->op == 's')
            store_set(store, it->key, it->value, strlen(it->value), it->ttl, fx_done, key);
        else if (it->op == 'i')
            store_incr(store, it->key, it->by, it->ttl, fx_done, key);
        else
            store_del(store, it->key, fx_done, key);
    }
    ss_fx_reset(fx);
}
