/*
 * hbc: header and body checks (see hbc.h).
 *
 * Owns the tables of the four check classes and one reused value buffer.
 * A table named by more than one class (mime_header_checks and
 * nested_header_checks default to $header_checks) is opened once and
 * shared.  The action grammar common with access(5) is policy/action's;
 * what only header_checks(5) has (IGNORE, REPLACE, PREPEND of any text on
 * body lines) is parsed here.  Reply codes, enhanced codes and default
 * texts follow Postfix's cleanup.
 *
 * Must never: allocate per lookup (buffers are reused), change message
 * state (content.c acts on the result), or treat a failed lookup as a
 * pass (it is HBC_TEMPFAIL).
 */
#include "content/hbc.h"

#include "core/log.h"
#include "core/util.h"
#include "policy/action.h"

#include <stdlib.h>
#include <string.h>

static const param_id class_params[HBC__COUNT] = {
    PARAM_header_checks,
    PARAM_mime_header_checks,
    PARAM_nested_header_checks,
    PARAM_body_checks,
};

struct hbc {
    map_t **all;       /* every table opened, each once; owned */
    char **specs;      /* their specs as written, to share repeats */
    size_t nall;
    map_t **maps[HBC__COUNT];   /* per class, pointing into all */
    size_t nmaps[HBC__COUNT];
    buf_t value;       /* the lookup result, reused */
    buf_t scratch;     /* a rewritten action for action_parse, reused */
};

/* Postfix's cleanup replies (cleanup_stat_detail): content rejected or
 * deferred by a check, and a table that could not be read (Postfix's
 * cleanup then fails the message as a queue file write error). */
#define REJECT_CODE 550
#define REJECT_DSN "5.7.1"
#define REJECT_TEXT "message content rejected"
#define DEFER_CODE 451
#define DEFER_DSN "4.7.1"
#define DEFER_TEXT "service unavailable"
#define TEMPFAIL_CODE 451
#define TEMPFAIL_DSN "4.3.0"
#define TEMPFAIL_TEXT "Error: queue file write error"

const char *hbc_class_param(hbc_class c)
{
    return (unsigned)c < HBC__COUNT ? param_name(class_params[c]) : "?";
}

const char *hbc_action_verb(hbc_action a)
{
    switch (a) {
    /* Postfix logs a refusal as "reject" whatever its code. */
    case HBC_REJECT: return "reject";
    case HBC_DEFER: return "reject";
    case HBC_TEMPFAIL: return "reject";
    case HBC_WARN: return "warning";
    case HBC_INFO: return "info";
    case HBC_DISCARD: return "discard";
    case HBC_HOLD: return "hold";
    case HBC_IGNORE: return "ignore";
    case HBC_REPLACE: return "replace";
    case HBC_PREPEND: return "prepend";
    case HBC_REDIRECT: return "redirect";
    case HBC_BCC: return "bcc";
    case HBC_FILTER: return "filter";
    case HBC_NONE: break;
    }
    return "dunno";
}

static map_t *open_shared(hbc_t *h, const char *spec, const char *basedir, buf_t *why)
{
    for (size_t i = 0; i < h->nall; i++)
        if (!strcmp(h->specs[i], spec))
            return h->all[i];
    map_t *m = map_open(spec, basedir, why);
    if (!m)
        return NULL;
    h->all = xrealloc(h->all, (h->nall + 1) * sizeof *h->all);
    h->specs = xrealloc(h->specs, (h->nall + 1) * sizeof *h->specs);
    h->all[h->nall] = m;
    h->specs[h->nall] = xstrdup(spec);
    h->nall++;
    return m;
}

hbc_t *hbc_new(const params_t *p, const char *basedir, buf_t *err)
{
    hbc_t *h = xcalloc(1, sizeof *h);
    buf_t why = BUF_INIT;
    int errors = 0;
    const char **failed = NULL;   /* specs that did not open (they live in p) */
    size_t nfailed = 0;

    for (int c = 0; c < HBC__COUNT; c++) {
        param_id pid = class_params[c];
        const char *const *items;
        size_t n = param_list(p, pid, &items);
        h->maps[c] = xcalloc(n ? n : 1, sizeof *h->maps[c]);
        for (size_t i = 0; i < n; i++) {
            buf_reset(&why);
            if (!strchr(items[i], ':')) {
                param_where(p, pid, err);
                buf_printf(err, "%s: \"%s\": need type:table\n", param_name(pid), items[i]);
                errors++;
                continue;
            }
            bool failed_before = false;
            for (size_t k = 0; k < nfailed && !failed_before; k++)
                failed_before = !strcmp(failed[k], items[i]);
            if (failed_before) {
                errors++;   /* said once, for the class that named it first */
                continue;
            }
            map_t *m = open_shared(h, items[i], basedir, &why);
            if (!m) {
                failed = xrealloc(failed, (nfailed + 1) * sizeof *failed);
                failed[nfailed++] = items[i];
                param_where_lines(p, pid, why.len ? buf_cstr(&why) : "cannot open table", err);
                errors++;
                continue;
            }
            h->maps[c][h->nmaps[c]++] = m;
        }
    }
    buf_free(&why);
    free(failed);
    if (errors)
        hbc_free(&h);
    return h;
}

void hbc_free(hbc_t **hp)
{
    hbc_t *h = hp ? *hp : NULL;
    if (!h)
        return;
    for (size_t i = 0; i < h->nall; i++) {
        map_close(&h->all[i]);
        free(h->specs[i]);
    }
    free(h->all);
    free(h->specs);
    for (int c = 0; c < HBC__COUNT; c++)
        free(h->maps[c]);
    buf_free(&h->value);
    buf_free(&h->scratch);
    free(h);
    *hp = NULL;
}

bool hbc_on(const hbc_t *h, hbc_class c)
{
    return h && (unsigned)c < HBC__COUNT && h->nmaps[c] > 0;
}

void hbc_result_init(hbc_result_t *r)
{
    memset(r, 0, sizeof *r);
}

void hbc_result_free(hbc_result_t *r)
{
    buf_free(&r->text);
    memset(r, 0, sizeof *r);
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Does s start with a header name and its colon ("Name:", "Name :"), as
 * PREPEND and REPLACE in the header classes need? */
static bool is_header(const char *s)
{
    const char *q = s;
    while (*q > ' ' && *q < 127 && *q != ':')
        q++;
    if (q == s)
        return false;
    q = skip_ws(q);
    return *q == ':';
}

static void set_reply(hbc_result_t *out, hbc_action act, int code, const char *dsn, const char *text)
{
    out->act = act;
    out->code = code;
    str_copy(out->dsn, dsn, sizeof out->dsn);
    buf_reset(&out->text);
    buf_puts(&out->text, text);
}

/* A matched value that is no valid action: Postfix logs it and lets the
 * line pass. */
static hbc_action bad_action(hbc_class c, const char *value, const char *why, hbc_result_t *out)
{
    if (out->origin.file)
        log_warn("cleanup", "%s, line %d: %s in %s: %s", out->origin.file, out->origin.line, why,
                 hbc_class_param(c), value);
    else
        log_warn("cleanup", "%s: %s in %s: %s", out->table ? out->table : "?", why, hbc_class_param(c),
                 value);
    out->act = HBC_NONE;
    out->code = 0;
    out->dsn[0] = 0;
    buf_reset(&out->text);
    return HBC_NONE;
}

static hbc_action parse_value(hbc_t *h, hbc_class c, const char *value, hbc_result_t *out)
{
    const char *v = skip_ws(value);
    size_t wl = strcspn(v, " \t");
    const char *rest = skip_ws(v + wl);
    bool header_class = c != HBC_BODY;

    /* What only header_checks(5) has, or has with other rules. */
    if (wl == 6 && str_nieq(v, "IGNORE", 6)) {
        out->act = HBC_IGNORE;
        return out->act;
    }
    if ((wl == 7 && str_nieq(v, "REPLACE", 7)) || (wl == 7 && str_nieq(v, "PREPEND", 7))) {
        bool replace = lc((unsigned char)v[0]) == 'r';
        if (!*rest)
            return bad_action(c, value, replace ? "REPLACE needs text" : "PREPEND needs text", out);
        if (header_class && !is_header(rest))
            return bad_action(c, value,
                              replace ? "REPLACE needs \"headername: headervalue\""
                                      : "PREPEND needs \"headername: headervalue\"",
                              out);
        out->act = replace ? HBC_REPLACE : HBC_PREPEND;
        buf_puts(&out->text, rest);
        return out->act;
    }

    action_t a;
    action_parse(v, &a);
    if (a.kind == ACT_INVALID && wl == 6 && str_nieq(v, "REJECT", 6) && rest[0] == '4') {
        /* A REJECT whose text starts with a 4.x.x enhanced code (which
         * action_parse calls a mismatch) defers, as in Postfix's cleanup. */
        buf_reset(&h->scratch);
        buf_puts(&h->scratch, "DEFER ");
        buf_puts(&h->scratch, rest);
        action_parse(buf_cstr(&h->scratch), &a);
    }
    switch (a.kind) {
    case ACT_OK:
    case ACT_DUNNO:
        out->act = HBC_NONE;
        return out->act;
    case ACT_REJECT:
        set_reply(out, HBC_REJECT, a.code ? a.code : REJECT_CODE, a.dsn[0] ? a.dsn : REJECT_DSN,
                  *a.text ? a.text : REJECT_TEXT);
        return out->act;
    case ACT_DEFER:
        set_reply(out, HBC_DEFER, a.code ? a.code : DEFER_CODE, a.dsn[0] ? a.dsn : DEFER_DSN,
                  *a.text ? a.text : DEFER_TEXT);
        return out->act;
    case ACT_WARN:
    case ACT_INFO:
    case ACT_HOLD:
    case ACT_DISCARD:
        /* The note is kept as written: an x.y.z at its start is no
         * reply code here. */
        out->act = a.kind == ACT_WARN ? HBC_WARN
                 : a.kind == ACT_INFO ? HBC_INFO
                 : a.kind == ACT_HOLD ? HBC_HOLD
                                      : HBC_DISCARD;
        buf_puts(&out->text, rest);
        return out->act;
    case ACT_REDIRECT:
    case ACT_BCC:
        if (!strchr(a.text, '@'))
            return bad_action(c, value, "need user@domain", out);
        /* fall through */
    case ACT_FILTER:
        out->act = a.kind == ACT_REDIRECT ? HBC_REDIRECT : a.kind == ACT_BCC ? HBC_BCC : HBC_FILTER;
        buf_puts(&out->text, a.text);
        return out->act;
    case ACT_PREPEND: /* handled above */
    case ACT_DEFER_IF_REJECT:
    case ACT_DEFER_IF_PERMIT:
    case ACT_RESTRICTIONS:
        break;
    case ACT_INVALID:
        return bad_action(c, value, a.text, out);
    }
    return bad_action(c, value, "unknown command", out);
}

hbc_action hbc_check(hbc_t *h, hbc_class c, const char *text, size_t len, hbc_result_t *out)
{
    (void)len; /* tables take C strings: an embedded NUL ends the key, as in Postfix */
    out->act = HBC_NONE;
    out->code = 0;
    out->dsn[0] = 0;
    buf_reset(&out->text);
    out->table = NULL;
    out->origin.file = NULL;
    out->origin.line = 0;
    if (!h || (unsigned)c >= HBC__COUNT)
        return HBC_NONE;

    for (size_t i = 0; i < h->nmaps[c]; i++) {
        map_t *m = h->maps[c][i];
        map_status st = map_lookup(m, text, &h->value, &out->origin);
        if (st == MAP_NOTFOUND)
            continue;
        out->table = map_name(m);
        if (st == MAP_TEMPFAIL) {
            log_warn("cleanup", "%s: %s map lookup problem: %s -- message not accepted, try again later",
                     map_name(m), hbc_class_param(c), buf_cstr(&h->value));
            out->origin.file = NULL;
            out->origin.line = 0;
            set_reply(out, HBC_TEMPFAIL, TEMPFAIL_CODE, TEMPFAIL_DSN, TEMPFAIL_TEXT);
            return out->act;
        }
        return parse_value(h, c, buf_cstr(&h->value), out);
    }
    out->origin.file = NULL;
    out->origin.line = 0;
    return HBC_NONE;
}
