/*
 * content: the cleanup stage of the DATA path (see content.h).  It splits
 * the content into lines and line pieces, drives the MIME parser (mime.h),
 * looks each header and body line up with hbc (hbc.h), writes the message
 * as it should be queued (IGNORE / REPLACE / PREPEND applied), and
 * collects the verdict, logging each action as Postfix's cleanup does.
 *
 * Fast path: with no checks to run and no strict MIME option, only the
 * primary headers go through the parser (for the Message-ID); the rest is
 * copied to out as it comes, once.
 *
 * Owns: the per-message state, the line held back between feeds, the
 * verdict.  Never: touches the network or the disk (log lines aside),
 * allocates per line on the hot path, or holds more than one logical
 * header (header_size_limit) or one line piece (line_length_limit).
 */
#include "content/content.h"

#include "content/mime.h"
#include "core/log.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

/* Postfix's cleanup text for a table that failed during the checks. */
#define TEMPFAIL_REPLY "451 4.3.0 Error: queue file write error"
/* Postfix's enhanced status code for the MIME errors it rejects. */
#define MIME_REJECT_CODE "550 5.6.0"
/* Postfix logs at most this much of a header or body line. */
#define LOG_TEXT_MAX 200
#define LOG_MIME_TEXT_MAX 100

struct content_cfg {
    hbc_t *hbc;
    size_t line_limit, header_limit, boundary_limit, body_limit;
    int nesting_limit;
    bool decode, strict, disable_mime, checks;
    bool mime_same[HBC__COUNT];  /* this class's list is mime_header_checks' */
};

struct content_msg {
    const content_cfg_t *cfg;
    char *qid, *client, *sender, *rcpt, *proto, *helo;
    bool checking;       /* header/body checks run */
    bool full;           /* the whole message goes through the parser */
    bool stopped;        /* REJECT, DEFER, DISCARD, REDIRECT seen: no more checks */
    bool passthru;       /* fast path, past the primary headers */
    bool last_nl;        /* passthru: out ends with a line end */
    bool in_piece;       /* the last piece handed on continues */
    bool finished;
    int mime_errs;       /* errors that reject at the end */
    mime_t *mime;
    buf_t line;          /* a line held back between feeds */
    buf_t *out;
    content_verdict_t v;
    hbc_result_t res;
    buf_t text;          /* the checked text: unfolded header, NUL-terminated body line */
    buf_t copy, name;    /* the attachment-name copy of a header */
    buf_t logbuf;
    char *msgid;
    mime_dec_t dec;
    bool dec_on;
    unsigned dec_serial;
    size_t dec_off;
    content_trace_fn trace;
    void *trace_arg;
};

/* --- Configuration ------------------------------------------------------- */

content_cfg_t *content_cfg_new(const params_t *p, const char *basedir, buf_t *err)
{
    hbc_t *h = hbc_new(p, basedir, err);
    if (!h)
        return NULL;
    content_cfg_t *c = xcalloc(1, sizeof *c);
    c->hbc = h;
    c->line_limit = (size_t)param_int(p, PARAM_line_length_limit);
    c->header_limit = (size_t)param_int(p, PARAM_header_size_limit);
    c->boundary_limit = (size_t)param_int(p, PARAM_mime_boundary_length_limit);
    c->body_limit = (size_t)param_int(p, PARAM_body_checks_size_limit);
    c->nesting_limit = (int)param_int(p, PARAM_mime_nesting_limit);
    c->decode = param_bool(p, PARAM_body_checks_decode);
    c->strict = param_bool(p, PARAM_strict_mime_encoding_domain);
    c->disable_mime = param_bool(p, PARAM_disable_mime_input_processing);
    if (c->line_limit < 1)
        c->line_limit = 2048;
    for (int k = 0; k < HBC__COUNT; k++)
        c->checks |= hbc_on(h, (hbc_class)k);
    const char *mime = param_str(p, PARAM_mime_header_checks);
    c->mime_same[HBC_HEADER] = strcmp(param_str(p, PARAM_header_checks), mime) == 0;
    c->mime_same[HBC_NESTED] = strcmp(param_str(p, PARAM_nested_header_checks), mime) == 0;
    return c;
}

void content_cfg_free(content_cfg_t **cp)
{
    content_cfg_t *c = *cp;
    if (!c)
        return;
    hbc_free(&c->hbc);
    free(c);
    *cp = NULL;
}

bool content_cfg_checks(const content_cfg_t *c) { return c && c->checks; }

/* --- Logging and the verdict --------------------------------------------- */

static const char *qid(const content_msg_t *m) { return *m->qid ? m->qid : "NOQUEUE"; }

/* Postfix's cleanup_act_log line:
 * "QID: verb: header TEXT from CLIENT; from=<s> to=<r> proto=P helo=<h>: extra" */
static void act_log(content_msg_t *m, const char *verb, const char *ctx, const char *text, size_t len,
                    const char *extra)
{
    buf_t *l = &m->logbuf;
    buf_reset(l);
    int n = (int)(len < LOG_TEXT_MAX ? len : LOG_TEXT_MAX);
    buf_printf(l, "%s: %s: %s %.*s from %s; from=<%s>", qid(m), verb, ctx, n, text,
               *m->client ? m->client : "unknown", m->sender);
    if (*m->rcpt)
        buf_printf(l, " to=<%s>", m->rcpt);
    if (*m->proto)
        buf_printf(l, " proto=%s", m->proto);
    if (*m->helo)
        buf_printf(l, " helo=<%s>", m->helo);
    if (extra && *extra)
        buf_printf(l, ": %s", extra);
    log_info("cleanup", "%s", buf_cstr(l));
}

static void trace_ev(content_msg_t *m, hbc_class c, const char *line, size_t len,
                     const hbc_result_t *res, const char *note)
{
    if (!m->trace)
        return;
    content_event_t ev = {c, line, len, res, note};
    m->trace(m->trace_arg, &ev);
}

static void set_why(content_msg_t *m, hbc_class c)
{
    buf_reset(&m->v.why);
    buf_printf(&m->v.why, "%s %s", hbc_class_param(c), m->res.table ? m->res.table : "");
    if (m->res.origin.file)
        buf_printf(&m->v.why, " line %d", m->res.origin.line);
}

static void set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = xstrdup(s);
}

/* Act on a match: the message actions go into the verdict, everything is
 * logged as Postfix logs it.  Returns the edit left for the caller
 * (HBC_IGNORE, HBC_REPLACE, HBC_PREPEND) or HBC_NONE. */
static hbc_action act(content_msg_t *m, hbc_class c, const char *text, size_t len)
{
    hbc_result_t *r = &m->res;
    const char *ctx = c == HBC_BODY ? "body" : "header";
    const char *rt = buf_cstr(&r->text);
    trace_ev(m, c, text, len, r, NULL);
    switch (r->act) {
    case HBC_REJECT:
    case HBC_DEFER: {
        m->v.outcome = r->act == HBC_REJECT ? CV_REJECT : CV_DEFER;
        buf_reset(&m->v.reply);
        buf_printf(&m->v.reply, "%d %s %s", r->code, r->dsn, rt);
        set_why(m, c);
        m->stopped = true;
        buf_t reason = BUF_INIT;
        buf_printf(&reason, "%s %s", r->dsn, rt);
        act_log(m, "reject", ctx, text, len, buf_cstr(&reason));
        buf_free(&reason);
        return HBC_NONE;
    }
    case HBC_TEMPFAIL:
        log_warn("cleanup", "%s: %s map lookup problem -- message not accepted, try again later",
                 qid(m), r->table ? r->table : hbc_class_param(c));
        m->v.outcome = CV_DEFER;
        buf_reset(&m->v.reply);
        buf_puts(&m->v.reply, TEMPFAIL_REPLY);
        buf_reset(&m->v.why);
        buf_printf(&m->v.why, "%s %s: lookup failed", hbc_class_param(c), r->table ? r->table : "");
        m->stopped = true;
        return HBC_NONE;
    case HBC_WARN:
        act_log(m, "warning", ctx, text, len, rt);
        return HBC_NONE;
    case HBC_INFO:
        act_log(m, "info", ctx, text, len, rt);
        return HBC_NONE;
    case HBC_DISCARD:
        act_log(m, "discard", ctx, text, len, rt);
        m->v.discard = true;
        set_why(m, c);
        m->stopped = true;
        return HBC_NONE;
    case HBC_HOLD:
        if (!m->v.hold && !m->v.discard) {
            act_log(m, "hold", ctx, text, len, rt);
            m->v.hold = true;
            if (m->v.why.len == 0)
                set_why(m, c);
        }
        return HBC_NONE;
    case HBC_REDIRECT:
        /* Postfix stops the checks after a REDIRECT as after a DISCARD. */
        set_str(&m->v.redirect, rt);
        act_log(m, "redirect", ctx, text, len, rt);
        m->stopped = true;
        return HBC_NONE;
    case HBC_BCC:
        buf_puts(&m->v.bcc, rt);
        buf_putc(&m->v.bcc, '\n');
        act_log(m, "bcc", ctx, text, len, rt);
        return HBC_NONE;
    case HBC_FILTER:
        set_str(&m->v.filter, rt);
        act_log(m, "filter", ctx, text, len, rt);
        return HBC_NONE;
    case HBC_IGNORE:
        return HBC_IGNORE;  /* Postfix does not log it */
    case HBC_REPLACE:
        act_log(m, "replace", ctx, text, len, rt);
        return HBC_REPLACE;
    case HBC_PREPEND:
        act_log(m, "prepend", ctx, text, len, rt);
        return HBC_PREPEND;
    case HBC_NONE:
        break;
    }
    return HBC_NONE;
}

/* --- Headers ------------------------------------------------------------- */

static void unfold(buf_t *dst, const char *s, size_t n)
{
    buf_reset(dst);
    buf_reserve(dst, n);
    const char *end = s + n;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t k = nl ? (size_t)(nl - s) : (size_t)(end - s);
        buf_append(dst, s, k);
        s += k + (nl ? 1 : 0);
    }
}

/* The normalised copy of a Content-Type / Content-Disposition header
 * whose name parameter was RFC 2231 or RFC 2047 encoded:
 *   Content-Disposition: attachment; filename="virus.exe"
 * false when the header has no such parameter. */
static bool name_copy(content_msg_t *m, const mime_header_t *h)
{
    static const char *const names[2][2] = {{"name", "filename"}, {"filename", "name"}};
    const char *const *try = names[h->id == MIME_H_CONTENT_DISPOSITION];
    const char *pname = NULL;
    for (int i = 0; i < 2 && !pname; i++)
        if (mime_param(h->text, h->len, try[i], &m->name) == 2)
            pname = try[i];
    if (!pname)
        return false;
    buf_t *c = &m->copy;
    buf_reset(c);
    buf_append(c, h->text, h->name_len);
    buf_puts(c, ": ");
    /* the type or disposition, unfolded, up to the first ';' */
    const char *end = h->text + h->len;
    const char *v = h->name_len < h->len ? h->text + h->name_len + 1 : end;
    while (v < end && (*v == ' ' || *v == '\t' || *v == '\n'))
        v++;
    const char *semi = v < end ? memchr(v, ';', (size_t)(end - v)) : NULL;
    const char *e = semi ? semi : end;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n'))
        e--;
    for (const char *p = v; p < e; p++)
        if (*p != '\n')
            buf_putc(c, *p);
    buf_printf(c, "; %s=\"", pname);
    for (size_t i = 0; i < m->name.len; i++) {
        char ch = m->name.data[i];
        buf_putc(c, ch == '\n' || ch == '\r' ? ' ' : ch);
    }
    buf_putc(c, '"');
    return true;
}

static void note_message_id(content_msg_t *m, const char *text, size_t len)
{
    if (m->msgid)
        return;
    const char *c = memchr(text, ':', len);
    if (!c)
        return;
    const char *p = c + 1, *end = text + len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n'))
        end--;
    if (p < end && *p == '<') {
        p++;
        const char *gt = memchr(p, '>', (size_t)(end - p));
        if (gt)
            end = gt;
    }
    buf_t id = BUF_INIT;
    for (; p < end; p++)
        if (*p != '\n')
            buf_putc(&id, *p);
    m->msgid = buf_steal(&id);
}

static hbc_class own_class(const mime_header_t *h)
{
    return h->cls == MIME_HDR_MULTIPART ? HBC_MIME : h->cls == MIME_HDR_NESTED ? HBC_NESTED : HBC_HEADER;
}

/* Look a header up: in its own class (header_checks for the primary
 * headers, nested_header_checks for an attached message's), and a MIME
 * header also in mime_header_checks when that is a different list.
 * (Postfix checks a MIME header only with mime_header_checks; we check
 * both so that the seeds' Content-Type rules in header_checks work next to
 * a separate mime_header_checks.)  Returns the edit to make. */
static hbc_action check_header(content_msg_t *m, const mime_header_t *h)
{
    const content_cfg_t *cfg = m->cfg;
    hbc_class own = own_class(h), cls[2];
    int n = 0;
    if (hbc_on(cfg->hbc, own))
        cls[n++] = own;
    if (h->is_mime && own != HBC_MIME && !cfg->mime_same[own] && hbc_on(cfg->hbc, HBC_MIME))
        cls[n++] = HBC_MIME;
    if (n == 0)
        return HBC_NONE;
    unfold(&m->text, h->text, h->len);
    bool copy_done = false, have_copy = false;
    for (int i = 0; i < n; i++) {
        hbc_class c = cls[i];
        const buf_t *checked = &m->text;
        hbc_action a = hbc_check(cfg->hbc, c, buf_cstr(&m->text), m->text.len, &m->res);
        if (a == HBC_NONE && h->is_mime
            && (h->id == MIME_H_CONTENT_TYPE || h->id == MIME_H_CONTENT_DISPOSITION)) {
            if (!copy_done) {
                have_copy = name_copy(m, h);
                copy_done = true;
            }
            if (have_copy) {
                checked = &m->copy;
                a = hbc_check(cfg->hbc, c, buf_cstr(&m->copy), m->copy.len, &m->res);
            }
        }
        if (a != HBC_NONE)
            return act(m, c, buf_cstr(checked), checked->len);
    }
    return HBC_NONE;
}

static void on_header(void *arg, const mime_header_t *h)
{
    content_msg_t *m = arg;
    buf_t *out = m->out;
    hbc_action edit = HBC_NONE;
    if (h->truncated)
        trace_ev(m, own_class(h), h->text, h->len, NULL, "header truncated at header_size_limit");
    if (m->checking && !m->stopped)
        edit = check_header(m, h);
    switch (edit) {
    case HBC_IGNORE:
        return;
    case HBC_REPLACE:
        buf_append(out, m->res.text.data, m->res.text.len);
        buf_putc(out, '\n');
        if (h->cls == MIME_HDR_PRIMARY) {
            size_t n = mime_is_header(m->res.text.data, m->res.text.len);
            if (n == 10 && str_nieq(m->res.text.data, "message-id", 10))
                note_message_id(m, m->res.text.data, m->res.text.len);
        }
        return;
    case HBC_PREPEND:
        buf_append(out, m->res.text.data, m->res.text.len);
        buf_putc(out, '\n');
        break;
    default:
        break;
    }
    buf_append(out, h->text, h->len);
    buf_putc(out, '\n');
    if (h->cls == MIME_HDR_PRIMARY && h->id == MIME_H_MESSAGE_ID)
        note_message_id(m, h->text, h->len);
}

static void on_header_end(void *arg, mime_hdr_class cls)
{
    content_msg_t *m = arg;
    if (cls == MIME_HDR_PRIMARY && !m->full)
        m->passthru = true;
}

/* --- Body ---------------------------------------------------------------- */

static void write_line(buf_t *out, const char *text, size_t len, bool cont)
{
    buf_append(out, text, len);
    if (!cont)
        buf_putc(out, '\n');
}

static void on_decoded(void *arg, const char *text, size_t len, bool cont)
{
    content_msg_t *m = arg;
    if (m->stopped)
        return;
    size_t lim = m->cfg->body_limit;
    if (lim && m->dec_off >= lim)
        return;
    m->dec_off += len + (cont ? 0 : 1);
    buf_reset(&m->text);
    buf_append(&m->text, text, len);
    if (hbc_check(m->cfg->hbc, HBC_BODY, buf_cstr(&m->text), m->text.len, &m->res) != HBC_NONE)
        (void)act(m, HBC_BODY, buf_cstr(&m->text), m->text.len);  /* no edits in decoded text */
}

static void dec_flush(content_msg_t *m)
{
    if (!m->dec_on)
        return;
    mime_dec_flush(&m->dec, on_decoded, m);
    m->dec_on = false;
}

static void on_body(void *arg, const mime_body_t *b)
{
    content_msg_t *m = arg;
    buf_t *out = m->out;
    if (!m->checking || m->stopped || !hbc_on(m->cfg->hbc, HBC_BODY)) {
        write_line(out, b->text, b->len, b->cont);
        return;
    }
    const mime_part_t *p = b->part;
    if (m->dec_on && (b->boundary || p->serial != m->dec_serial))
        dec_flush(m);
    if (m->cfg->decode && !b->boundary && p->is_text
        && (p->enc == MIME_ENC_BASE64 || p->enc == MIME_ENC_QP)) {
        if (!m->dec_on) {
            mime_dec_init(&m->dec, p->enc, m->cfg->line_limit);
            m->dec_on = true;
            m->dec_serial = p->serial;
            m->dec_off = 0;
        }
        mime_dec_line(&m->dec, b->text, b->len, b->cont, on_decoded, m);
        write_line(out, b->text, b->len, b->cont);
        return;
    }
    size_t lim = m->cfg->body_limit;
    hbc_action edit = HBC_NONE;
    if (lim == 0 || b->offset < lim) {
        buf_reset(&m->text);
        buf_append(&m->text, b->text, b->len);
        if (hbc_check(m->cfg->hbc, HBC_BODY, buf_cstr(&m->text), m->text.len, &m->res) != HBC_NONE)
            edit = act(m, HBC_BODY, buf_cstr(&m->text), m->text.len);
    }
    switch (edit) {
    case HBC_IGNORE:
        return;
    case HBC_REPLACE:
        write_line(out, m->res.text.data, m->res.text.len, b->cont);
        return;
    case HBC_PREPEND:
        write_line(out, m->res.text.data, m->res.text.len, false);
        break;
    default:
        break;
    }
    write_line(out, b->text, b->len, b->cont);
}

static void on_error(void *arg, int err, const char *text, size_t len)
{
    content_msg_t *m = arg;
    const char *what = mime_error_text(err);
    int n = (int)(len < LOG_MIME_TEXT_MAX ? len : LOG_MIME_TEXT_MAX);
    const char *client = *m->client ? m->client : "unknown";
    trace_ev(m, err == MIME_ERR_TRUNC_HEADER ? HBC_HEADER : HBC_MIME, text, len, NULL, what);
    if (err == MIME_ERR_TRUNC_HEADER) {
        /* Not an error for Postfix's cleanup: the excess is dropped. */
        log_info("cleanup", "%s: warning: mime-error %s: %.*s from %s; from=<%s> to=<%s>", qid(m),
                 what, n, text, client, m->sender, *m->rcpt ? m->rcpt : "unknown");
        return;
    }
    if (!m->full) {
        log_info("cleanup", "%s: warning: mime-error %s: %.*s from %s; from=<%s> to=<%s>", qid(m),
                 what, n, text, client, m->sender, *m->rcpt ? m->rcpt : "unknown");
        return;
    }
    log_info("cleanup", "%s: reject: mime-error %s: %.*s from %s; from=<%s> to=<%s>", qid(m), what, n,
             text, client, m->sender, *m->rcpt ? m->rcpt : "unknown");
    m->mime_errs |= err;
}

/* --- The message --------------------------------------------------------- */

content_msg_t *content_new(const content_cfg_t *cfg, const content_env_t *env, unsigned flags)
{
    content_msg_t *m = xcalloc(1, sizeof *m);
    m->cfg = cfg;
    m->qid = xstrdup(env && env->queue_id ? env->queue_id : "");
    m->client = xstrdup(env && env->client ? env->client : "");
    m->sender = xstrdup(env && env->sender ? env->sender : "");
    m->rcpt = xstrdup(env && env->rcpt ? env->rcpt : "");
    m->proto = xstrdup(env && env->proto ? env->proto : "");
    m->helo = xstrdup(env && env->helo ? env->helo : "");
    bool on = !(flags & CONTENT_NO_CHECKS);
    m->checking = on && cfg->checks;
    m->full = on && (cfg->checks || cfg->strict);
    m->last_nl = true;
    m->v.outcome = CV_PASS;
    hbc_result_init(&m->res);
    mime_opts_t o = {
        .header_size_limit = cfg->header_limit,
        .boundary_length_limit = cfg->boundary_limit,
        .nesting_limit = cfg->nesting_limit,
        .disable_mime = cfg->disable_mime,
        .report_encoding_domain = on && cfg->strict,
    };
    mime_cb_t cb = {on_header, on_header_end, on_body, on_error};
    m->mime = mime_new(&o, &cb, m);
    return m;
}

void content_set_trace(content_msg_t *m, content_trace_fn fn, void *arg)
{
    m->trace = fn;
    m->trace_arg = arg;
}

static void dispatch(content_msg_t *m, const char *text, size_t len, bool cont)
{
    m->in_piece = cont;
    mime_update(m->mime, text, len, cont);
    if (m->passthru)
        m->last_nl = !cont;
}

void content_feed(content_msg_t *m, const char *data, size_t len, buf_t *out)
{
    size_t limit = m->cfg->line_limit;
    m->out = out;
    while (len > 0) {
        if (m->passthru) {
            buf_append(out, data, len);
            m->last_nl = data[len - 1] == '\n';
            return;
        }
        const char *nl = memchr(data, '\n', len);
        size_t seg = nl ? (size_t)(nl - data) : len;
        if (m->line.len == 0) {
            if (nl && seg <= limit) {
                /* a whole line in this chunk: no copy */
                dispatch(m, data, seg, false);
                data += seg + 1;
                len -= seg + 1;
                continue;
            }
            if (seg > limit) {
                dispatch(m, data, limit, true);
                data += limit;
                len -= limit;
                continue;
            }
        }
        size_t room = limit - m->line.len;
        if (seg > room) {
            buf_append(&m->line, data, room);
            data += room;
            len -= room;
            dispatch(m, m->line.data, m->line.len, true);
            buf_reset(&m->line);
            continue;
        }
        buf_append(&m->line, data, seg);
        data += seg;
        len -= seg;
        if (nl) {
            dispatch(m, buf_cstr(&m->line), m->line.len, false);
            buf_reset(&m->line);
            data++;
            len--;
        }
    }
}

void content_finish(content_msg_t *m, buf_t *out)
{
    if (m->finished)
        return;
    m->finished = true;
    m->out = out;
    if (m->passthru) {
        if (!m->last_nl)
            buf_putc(out, '\n');
    } else {
        if (m->line.len > 0 || m->in_piece) {
            dispatch(m, buf_cstr(&m->line), m->line.len, false);
            buf_reset(&m->line);
        }
        mime_finish(m->mime);
    }
    dec_flush(m);
    if (m->mime_errs && m->v.outcome == CV_PASS && !m->v.discard) {
        const char *what = mime_error_text(m->mime_errs);
        m->v.outcome = CV_REJECT;
        buf_reset(&m->v.reply);
        buf_printf(&m->v.reply, "%s %s", MIME_REJECT_CODE, what);
        buf_reset(&m->v.why);
        buf_printf(&m->v.why, "MIME: %s", what);
    }
}

const content_verdict_t *content_verdict(const content_msg_t *m) { return &m->v; }

const char *content_message_id(const content_msg_t *m) { return m->msgid; }

void content_free(content_msg_t **mp)
{
    content_msg_t *m = *mp;
    if (!m)
        return;
    mime_free(&m->mime);
    mime_dec_free(&m->dec);
    hbc_result_free(&m->res);
    buf_free(&m->line);
    buf_free(&m->text);
    buf_free(&m->copy);
    buf_free(&m->name);
    buf_free(&m->logbuf);
    buf_free(&m->v.reply);
    buf_free(&m->v.bcc);
    buf_free(&m->v.why);
    free(m->v.redirect);
    free(m->v.filter);
    free(m->msgid);
    free(m->qid);
    free(m->client);
    free(m->sender);
    free(m->rcpt);
    free(m->proto);
    free(m->helo);
    free(m);
    *mp = NULL;
}
