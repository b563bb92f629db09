/*
 * unverified: reject_unverified_sender and reject_unverified_recipient
 * (contract in unverified.h; docs/verify.md).  The step asks the
 * verifier (src/queue/verify.h) through the session's memo, so a replayed
 * evaluation reads the same answer instead of asking again, and turns it
 * into Postfix's replies:
 *   deliverable       DUNNO
 *   undeliverable     unverified_*_reject_code X.1.7 (sender) / X.1.1
 *                     "<a>: Sender address rejected: undeliverable address: <why>"
 *   temporary failure unverified_*_defer_code "... unverified address: <why>",
 *                     as unverified_*_tempfail_action says
 *   in progress       the defer code, "... Address verification in progress",
 *                     as the tempfail action says
 * unverified_*_reject_reason replaces <why> when set.
 *
 * Owns nothing beyond one pass.  Never: answer without the verifier
 * (no verifier or no loop: 451 4.3.5, a server configuration problem),
 * or let a remote reply break our reply line (the text is cut and made
 * printable).
 */
#include "policy/unverified.h"

#include "core/util.h"
#include "queue/verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct uv_arg {
    struct verify *v;
    const char *addr;
} uv_arg_t;

/* The memo's value: "<S><dsn> <text>", S one of D U T P (verify.h's
 * statuses), dsn "-" when none. */
static void uv_answer(void *arg, const verify_result_t *r)
{
    static const char sc[] = {[VR_DELIVERABLE] = 'D', [VR_UNDELIVERABLE] = 'U', [VR_TEMPFAIL] = 'T',
                              [VR_IN_PROGRESS] = 'P'};
    buf_t v = BUF_INIT;
    buf_printf(&v, "%c%s %s", sc[r->status], r->dsn[0] ? r->dsn : "-", r->text ? r->text : "");
    memo_op_done(arg, buf_cstr(&v));
    buf_free(&v);
}

static void *uv_start(void *arg, const char *key, memo_op_t *op)
{
    (void)key;
    uv_arg_t *a = arg;
    return verify_query(a->v, a->addr, uv_answer, op);
}

static void uv_cancel(void *handle) { verify_cancel(handle); }

/* Peer text inside our reply: printable, one line, bounded. */
static void clean_text(const char *in, char *out, size_t size)
{
    size_t n = 0;
    for (; *in && n + 1 < size; in++)
        out[n++] = (*in >= 0x20 && *in < 0x7f) ? *in : ' ';
    out[n] = 0;
}

/* unverified_*_tempfail_action: defer_if_permit waits for the rest of
 * the evaluation, defer (and anything else) answers now. */
static ss_status_t temp_reply(ss_ctx_t *c, bool sender, int code, const char *dsn, const char *text)
{
    const char *act = param_str(c->p, sender ? PARAM_unverified_sender_tempfail_action
                                             : PARAM_unverified_recipient_tempfail_action);
    ss_status_t st = str_ieq(act, "defer_if_permit") ? SS_DEFER_IF_PERMIT : SS_REJECT;
    return ss_reply(c, st, code, dsn, "%s", text);
}

ss_status_t unverified_step(ss_ctx_t *c, bool sender)
{
    const pstate_t *st = c->st;
    const char *addr = sender ? st->sender : st->recipient;
    if (sender) {
        if (!addr) {
            ss_trace(c, "no sender yet -> DUNNO");
            return SS_DUNNO;
        }
        if (!*addr || !strchr(addr, '@')) {
            ss_trace(c, "%s -> DUNNO", *addr ? "sender without a domain" : "the null sender");
            return SS_DUNNO;
        }
    } else if (!addr || !*addr || c->cmd != PCMD_RCPT) {
        ss_trace(c, "no recipient -> DUNNO");
        return SS_DUNNO;
    }
    const char *cls = sender ? "Sender address" : "Recipient address";
    char dsn[16];
    c->whole_text = true;
    if (!c->env || !c->env->verify || !c->memo) {
        ss_log(c, "warning", "%s: %s", c->step ? c->step : "address verification",
               c->memo ? "no address verification service in this context" : "no event loop in this context");
        ss_trace(c, "address verification unavailable -> 451 4.3.5");
        return ss_reply(c, SS_REJECT, 451, "4.3.5", "Server configuration problem");
    }
    char key[1100];
    snprintf(key, sizeof key, "verify:%s", addr);
    str_lower(key);
    uv_arg_t arg = {c->env->verify, addr};
    const char *val = dns_memo_ext(c->memo, key, uv_start, uv_cancel, &arg);
    if (!val)
        return SS_PENDING;

    char kind = val[0];
    const char *sp = strchr(val, ' ');
    const char *why = sp ? sp + 1 : "";
    char rdsn[16] = "";
    if (sp && (size_t)(sp - val - 1) < sizeof rdsn)
        snprintf(rdsn, sizeof rdsn, "%.*s", (int)(sp - val - 1), val + 1);
    char text[400];
    clean_text(why, text, sizeof text);
    const char *reason = param_str(c->p, sender ? PARAM_unverified_sender_reject_reason
                                                : PARAM_unverified_recipient_reject_reason);
    bool alt = reason && *reason;
    switch (kind) {
    case 'D':
        ss_trace(c, "<%s>: deliverable -> DUNNO", addr);
        return SS_DUNNO;
    case 'U': {
        int code = (int)param_int(c->p, sender ? PARAM_unverified_sender_reject_code
                                               : PARAM_unverified_recipient_reject_code);
        snprintf(dsn, sizeof dsn, "%d.1.%d", code / 100, sender ? 7 : 1);
        ss_trace(c, "<%s>: undeliverable (%s %s) -> %d", addr, rdsn, text, code);
        return ss_reply(c, SS_REJECT, code, dsn, "<%s>: %s rejected: undeliverable address: %s", addr, cls,
                        alt ? reason : text);
    }
    case 'T':
    case 'P': {
        int code = (int)param_int(c->p, sender ? PARAM_unverified_sender_defer_code
                                               : PARAM_unverified_recipient_defer_code);
        snprintf(dsn, sizeof dsn, "%d.1.%d", code / 100, sender ? 7 : 1);
        char full[sizeof c->text];
        if (kind == 'P') {
            ss_trace(c, "<%s>: verification in progress -> %d", addr, code);
            snprintf(full, sizeof full, "<%s>: %s rejected: Address verification in progress", addr, cls);
        } else {
            ss_trace(c, "<%s>: temporary failure (%s %s) -> %d", addr, rdsn, text, code);
            snprintf(full, sizeof full, "<%s>: %s rejected: unverified address: %s", addr, cls,
                     alt ? reason : text);
        }
        return temp_reply(c, sender, code, dsn, full);
    }
    default:
        ss_log(c, "warning", "address verification: unexpected answer \"%.40s\"", val);
        return ss_reply(c, SS_REJECT, 451, "4.3.5", "Server configuration problem");
    }
}
