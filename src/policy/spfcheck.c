/*
 * spfcheck: check_spf (see spfcheck.h).  Owns the compiled
 * spf_result_actions; evaluates through spf_eval() on the session's memo
 * and turns the result into a stateful-step answer.  Never blocks, never
 * writes state: an SPF result is recomputed (from cached DNS answers) for
 * every recipient, and its headers are added once, with the first one.
 */
#include "policy/spfcheck.h"

#include "core/util.h"
#include "policy/spf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a result does (spf_result_actions). */
typedef enum { SA_DUNNO, SA_REJECT, SA_DEFER, SA_WARN, SA_CUSTOM } sact_t;

typedef struct {
    sact_t act;
    int code;           /* SA_CUSTOM: "NNN X.Y.Z text" */
    char dsn[16];
    char *text;
} sact_def_t;

struct spf_check {
    sact_def_t act[SPF_PERMERROR + 1];
    bool check_helo;       /* spf_check_helo */
    bool received;         /* spf_received_header */
    bool auth_results;     /* spf_authentication_results */
    char *receiver;        /* myhostname */
};

static int parse_action(sact_def_t *d, const char *action)
{
    free(d->text);
    memset(d, 0, sizeof *d);
    /* "fail={550 5.7.1 text}": the braces only keep the spaces */
    char v[512];
    str_copy(v, action, sizeof v);
    size_t vn = strlen(v);
    if (vn >= 2 && v[0] == '{' && v[vn - 1] == '}') {
        v[vn - 1] = 0;
        memmove(v, v + 1, vn - 1);
    }
    if (str_ieq(v, "dunno") || str_ieq(v, "ok"))
        d->act = SA_DUNNO;
    else if (str_ieq(v, "reject"))
        d->act = SA_REJECT;
    else if (str_ieq(v, "defer"))
        d->act = SA_DEFER;
    else if (str_ieq(v, "warn"))
        d->act = SA_WARN;
    else {
        /* "550 5.7.23 text" (text may be empty): the code decides */
        char dsn[16] = "";
        int n = 0;
        if (!((v[0] == '4' || v[0] == '5') && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9'
              && (v[3] == ' ' || v[3] == 0)))
            return -1;
        d->code = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
        const char *rest = v + 3;
        while (*rest == ' ')
            rest++;
        if (sscanf(rest, "%15[0-9.]%n", dsn, &n) == 1 && dsn[0] == v[0] && dsn[1] == '.') {
            rest += n;
            while (*rest == ' ')
                rest++;
        } else {
            snprintf(dsn, sizeof dsn, "%c.7.1", v[0]);
        }
        str_copy(d->dsn, dsn, sizeof d->dsn);
        d->text = xstrdup(rest);
        d->act = SA_CUSTOM;
    }
    return 0;
}

spf_check_t *spf_check_new(const params_t *p, buf_t *err)
{
    spf_check_t *sp = xcalloc(1, sizeof *sp);
    sp->act[SPF_FAIL].act = SA_REJECT;
    sp->act[SPF_TEMPERROR].act = SA_DEFER;
    sp->check_helo = param_bool(p, PARAM_spf_check_helo);
    sp->received = param_bool(p, PARAM_spf_received_header);
    sp->auth_results = param_bool(p, PARAM_spf_authentication_results);
    sp->receiver = xstrdup(param_str(p, PARAM_myhostname));
    const char *const *items;
    size_t n = param_list(p, PARAM_spf_result_actions, &items);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        /* result=action; an action with spaces is written in { } */
        const char *eq = strchr(items[i], '=');
        char name[16];
        int r = -1;
        if (eq && (size_t)(eq - items[i]) < sizeof name) {
            memcpy(name, items[i], (size_t)(eq - items[i]));
            name[eq - items[i]] = 0;
            r = spf_result_parse(name);
        }
        if (r < 0 || r > SPF_PERMERROR || parse_action(&sp->act[r], eq + 1) != 0) {
            param_where(p, PARAM_spf_result_actions, err);
            buf_printf(err, "spf_result_actions: \"%s\": need result=action (results: none, neutral, pass, "
                            "fail, softfail, temperror, permerror; actions: dunno, reject, defer, warn, or "
                            "{NNN X.Y.Z text}, as in {fail=550 5.7.1 text})\n", items[i]);
            bad = 1;
        }
    }
    if (bad)
        spf_check_free(&sp);
    return sp;
}

void spf_check_free(spf_check_t **spp)
{
    spf_check_t *sp = *spp;
    if (!sp)
        return;
    for (size_t i = 0; i < ARRAY_LEN(sp->act); i++)
        free(sp->act[i].text);
    free(sp->receiver);
    free(sp);
    *spp = NULL;
}

/* One identity's evaluation; SPF_PENDING while answers are missing. */
static spf_result_t evaluate(ss_ctx_t *c, const char *receiver, bool helo, spf_answer_t *a)
{
    const pstate_t *st = c->st;
    spf_request_t req = {.ip = st->client_addr,
                         .sender = st->sender ? st->sender : "",
                         .helo = st->helo ? st->helo : "",
                         .receiver = receiver,
                         .helo_identity = helo,
                         .now = (long long)c->now};
    return spf_eval(c->memo, &req, c->trace != NULL, a);
}

static void trace_answer(ss_ctx_t *c, const char *identity, const spf_answer_t *a)
{
    const char *p = buf_cstr(&a->trace);
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = (int)(nl ? (size_t)(nl - p) : strlen(p));
        ss_trace(c, "spf: %.*s", n, p);
        p += n + (nl ? 1 : 0);
    }
    bool m = a->mechanism[0] != 0;
    ss_trace(c, "spf %s %s: %s%s%s%s", identity, a->domain, spf_result_name(a->result), m ? " (" : "",
             a->mechanism, m ? ")" : "");
}

/* The headers of an accepted message, once per transaction (with the
 * first accepted recipient). */
static void add_headers(spf_check_t *sp, ss_ctx_t *c, const spf_request_t *req, const spf_answer_t *a)
{
    if (!c->prepend || c->st->nrcpt > 0)
        return;
    if (sp->received) {
        buf_t v = BUF_INIT;
        spf_received_value(req, a, &v);
        buf_printf(c->prepend, "Received-SPF: %s\n", buf_cstr(&v));
        buf_free(&v);
    }
    if (sp->auth_results) {
        if (req->helo_identity)
            buf_printf(c->prepend, "Authentication-Results: %s; spf=%s smtp.helo=%s\n", sp->receiver,
                       spf_result_name(a->result), req->helo);
        else
            buf_printf(c->prepend, "Authentication-Results: %s; spf=%s smtp.mailfrom=%s\n", sp->receiver,
                       spf_result_name(a->result), req->sender);
    }
}

ss_status_t spf_check_step(spf_check_t *sp, ss_ctx_t *c)
{
    const pstate_t *st = c->st;
    if (!st->sender) {
        ss_trace(c, "no MAIL FROM yet -> DUNNO");
        return SS_DUNNO;
    }
    if (!c->memo)
        return ss_reply(c, SS_REJECT, 451, "4.3.5", "Server configuration problem");
    bool helo = !*st->sender;
    spf_answer_t a;
    spf_answer_init(&a);
    spf_result_t r;
    if (sp->check_helo && !helo && st->helo && *st->helo) {
        /* RFC 7208 2.3: a HELO fail decides; any other HELO result leaves
         * it to MAIL FROM */
        r = evaluate(c, sp->receiver, true, &a);
        if (r != SPF_PENDING && c->trace)
            trace_answer(c, "helo", &a);
        if (r == SPF_FAIL) {
            helo = true;
        } else if (r != SPF_PENDING) {
            spf_answer_reset(&a);
            r = evaluate(c, sp->receiver, false, &a);
            if (r != SPF_PENDING && c->trace)
                trace_answer(c, "mailfrom", &a);
        }
    } else {
        r = evaluate(c, sp->receiver, helo, &a);
        if (r != SPF_PENDING && c->trace)
            trace_answer(c, helo ? "helo" : "mailfrom", &a);
    }
    if (r == SPF_PENDING) {
        spf_answer_free(&a);
        return SS_PENDING;
    }
    r = a.result;
    spf_request_t req = {.ip = st->client_addr,
                         .sender = st->sender,
                         .helo = st->helo ? st->helo : "",
                         .receiver = sp->receiver,
                         .helo_identity = helo,
                         .now = (long long)c->now};
    const sact_def_t *d = &sp->act[r];
    ss_status_t out = SS_DUNNO;
    const char *why = a.problem.len ? buf_cstr(&a.problem) : "";
    switch (d->act) {
    case SA_REJECT:
        c->whole_text = true;
        out = ss_reply(c, SS_REJECT, 550, "5.7.23", "%s",
                       a.explanation.len ? buf_cstr(&a.explanation) : "SPF check failed");
        break;
    case SA_DEFER:
        c->whole_text = true;
        out = ss_reply(c, SS_REJECT, 451, "4.7.24", "Temporary SPF failure%s%s", *why ? ": " : "", why);
        break;
    case SA_CUSTOM:
        c->whole_text = true;
        out = ss_reply(c, SS_REJECT, d->code, d->dsn, "%s",
                       *d->text ? d->text : a.explanation.len ? buf_cstr(&a.explanation) : "SPF check failed");
        break;
    case SA_WARN:
        ss_log(c, "warning", "check_spf: %s: SPF %s for %s (%s)%s%s", st->client_addr, spf_result_name(r),
               a.domain, helo ? "helo" : "mailfrom", *why ? ": " : "", why);
        break;
    case SA_DUNNO:
        break;
    }
    /* the result in the log: a problem always, any result once */
    if (r == SPF_PERMERROR || r == SPF_TEMPERROR)
        ss_log(c, "warning", "check_spf: %s: SPF %s for %s: %s", st->client_addr, spf_result_name(r), a.domain,
               why);
    else if (out == SS_DUNNO && st->nrcpt == 0)
        ss_log(c, "info", "spf=%s identity=%s domain=%s%s%s", spf_result_name(r), helo ? "helo" : "mailfrom",
               a.domain, a.mechanism[0] ? " mechanism=" : "", a.mechanism);
    if (out == SS_DUNNO)
        add_headers(sp, c, &req, &a);
    spf_answer_free(&a);
    return out;
}

int spf_check_pass_domain(ss_ctx_t *c, char *out, size_t size)
{
    const pstate_t *st = c->st;
    if (!st->sender || !c->memo)
        return 0;
    spf_answer_t a;
    spf_answer_init(&a);
    spf_result_t r = evaluate(c, "", !*st->sender, &a);
    int rc = r == SPF_PENDING ? -1 : r == SPF_PASS ? 1 : 0;
    if (rc == 1)
        str_copy(out, a.domain, size);
    spf_answer_free(&a);
    return rc;
}
