/*
 * sstep: what a stateful restriction step (check_greylist,
 * reject_unverified_*, permit_known_correspondent, the rate limits) sees of
 * the engine, so that each lives in its own module without knowing
 * restrict.c's insides.
 *
 * The engine (restrict.c) fills an ss_ctx_t for the step, calls the
 * module, and turns the answer into its own verdict:
 *   SS_DUNNO            next step
 *   SS_PERMIT           as OK (ends the class)
 *   SS_REJECT           c->code/c->dsn/c->text become the reply, with the
 *                       engine's reply class ("<rcpt>: Recipient address
 *                       rejected: " + text), rule name and warn_if_reject
 *   SS_DEFER_IF_PERMIT  remembered as defer_if_permit with that reply
 *   SS_PENDING          the whole evaluation answers V_PENDING; the caller
 *                       runs it again when the memo wakes it
 *
 * Waiting: every asynchronous read goes through the session's memo
 * (ss_store_get / ss_store_incr here, or dns_memo_ext for the module's own
 * work), so a re-run pass sees the same answers and a step is replayed, not
 * repeated.  Writes that must happen once go into the effects list
 * (ss_fx_*): the engine commits them to the store after the final pass
 * (the one that is not pending) and only when the environment says so
 * (the server: yes; `moat check`: no, unless asked).
 */
#ifndef MOAT_POLICY_SSTEP_H
#define MOAT_POLICY_SSTEP_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "config/config.h"
#include "core/buf.h"
#include "dns/dns.h"
#include "policy/restrict.h"
#include "store/store.h"

typedef enum { SS_DUNNO, SS_PERMIT, SS_REJECT, SS_DEFER_IF_PERMIT, SS_PENDING } ss_status_t;

typedef struct ss_fx ss_fx_t;   /* the effects of one evaluation (engine-owned) */

typedef struct ss_ctx {
    /* in */
    const pstate_t *st;
    pcmd_t cmd;
    const params_t *p;          /* the service's parameters */
    const policy_env_t *env;    /* store (may be NULL: could not be opened), verifier, commit */
    dns_memo_t *memo;           /* st->dns; NULL: no loop (asynchronous steps answer 451 4.3.5) */
    const char *step;           /* the step's text ("check_greylist") for traces and logs */
    const char *top;            /* the class being evaluated ("recipient"), for traces */
    time_t now;
    /* out: the engine's buffers */
    buf_t *trace;               /* NULL when not tracing: use ss_trace() */
    buf_t *warnings;            /* verdict warnings: use ss_log() */
    buf_t *prepend;             /* header lines to add when the mail is accepted ("X-Greylist: ...\n") */
    ss_fx_t *fx;
    /* out: the reply for SS_REJECT / SS_DEFER_IF_PERMIT (via ss_reply) */
    int code;
    char dsn[16];
    char text[512];             /* without code and DSN; the engine adds the reply class prefix */
    bool whole_text;            /* text is the whole reply after code and DSN (no "<addr>: Class rejected: ") */
} ss_ctx_t;

/* A trace line ("  <top>: <step>: " + text), when tracing. */
void ss_trace(ss_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A log line with the verdict: level "warning" or "info" (the session
 * logs it with the queue ID; `moat check` prints it). */
void ss_log(ss_ctx_t *c, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Fill the reply and return status (SS_REJECT or SS_DEFER_IF_PERMIT). */
ss_status_t ss_reply(ss_ctx_t *c, ss_status_t status, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The state store is unreachable (or was not opened) for this step:
 * state_store_fail_action decides — "defer": 451 4.3.0 <what>: Temporary
 * state store failure (SS_REJECT); "skip": SS_DUNNO with an info line.
 * Always logs a warning with the reason. */
ss_status_t ss_store_failed(ss_ctx_t *c, const char *why);

typedef enum { SG_FOUND, SG_MISSING, SG_ERROR, SG_PENDING } ss_get_t;

typedef struct ss_value {
    const char *data;      /* SG_FOUND: the value (NUL-terminated; valid until the memo is cleared) */
    size_t len;
    long long expires;     /* SG_FOUND: absolute expiry (0: none) */
    const char *error;     /* SG_ERROR: why */
} ss_value_t;

/* A store read through the memo (key "store:" + key): the first pass
 * starts it and answers SG_PENDING (the module returns SS_PENDING); later
 * passes of the same command get the same answer.  Values with a NUL byte
 * are not supported (keep values text). */
ss_get_t ss_store_get(ss_ctx_t *c, const char *key, ss_value_t *out);
/* An increment whose result the step needs (rate counters): done once
 * per command and key through the memo (a replayed pass sees the same
 * *num).  With env->commit false it reads instead and adds by (nothing
 * changes: `moat check`).  SG_FOUND with *num, SG_ERROR, SG_PENDING. */
ss_get_t ss_store_incr(ss_ctx_t *c, const char *key, long long by, unsigned ttl, long long *num,
                       const char **error);

/* Writes for the final pass (see the top). */
void ss_fx_set(ss_ctx_t *c, const char *key, const char *value, unsigned ttl);
void ss_fx_incr(ss_ctx_t *c, const char *key, long long by, unsigned ttl);
void ss_fx_del(ss_ctx_t *c, const char *key);

/* --- engine side (restrict.c) --- */
ss_fx_t *ss_fx_new(void);
void ss_fx_free(ss_fx_t **fx);
void ss_fx_reset(ss_fx_t *fx);
size_t ss_fx_count(const ss_fx_t *fx);
/* Describe the effects into trace ("  state: set grey:... ttl 3024000"). */
void ss_fx_trace(const ss_fx_t *fx, buf_t *trace);
/* Send them to store (fire and forget; a failure is logged as a warning)
 * and empty the list. */
void ss_fx_commit(ss_fx_t *fx, store_t *store);

#endif
