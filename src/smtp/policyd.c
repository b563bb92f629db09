/*
 * policyd: the master.cf "policy" service — Postfix's policy delegation
 * protocol (name=value lines, an empty line ends a request; one
 * "action=..." line and an empty line answer it), served by moat's
 * restriction engine over policy_restrictions.
 *
 * Ownership: a session owns its bufferevent, its request parser, its
 * verdict and its memo (the DNS answers and store reads of one request:
 * cleared when the next request starts), and holds one reference on its
 * configuration generation, like an SMTP session.  Requests are answered
 * in the order they came; while one waits for the memo nothing else is
 * read.  A session is freed from a fresh loop callback, never inside its
 * own.
 *
 * Never: block the loop, answer OK (that would end Postfix's own list
 * before its relay check), or read a request past its stated bounds.
 */
#include "smtp/policyd.h"

#include "core/log.h"
#include "core/util.h"
#include "smtp/smtpd.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the parser */

void preq_init(preq_t *r)
{
    memset(r, 0, sizeof *r);
}

void preq_reset(preq_t *r)
{
    buf_reset(&r->text);
    buf_reset(&r->line);
    r->n = 0;
    r->done = false;
}

void preq_free(preq_t *r)
{
    buf_free(&r->text);
    buf_free(&r->line);
    r->n = 0;
}

/* One complete line (no LF).  0, 1 at the empty line, -1 with *why. */
static int take_line(preq_t *r, const char *why_buf[1])
{
    const char *s = r->line.data ? r->line.data : "";
    size_t len = r->line.len;
    if (len && s[len - 1] == '\r')
        len--;
    if (len == 0)
        return 1;
    if (memchr(s, 0, len)) {
        why_buf[0] = "NUL byte in a request line";
        return -1;
    }
    const char *eq = memchr(s, '=', len);
    if (!eq) {
        why_buf[0] = "request line without \"=\"";
        return -1;
    }
    if (eq == s) {
        why_buf[0] = "empty attribute name";
        return -1;
    }
    if (r->n >= PREQ_ATTRS_MAX) {
        why_buf[0] = "too many attributes in one request";
        return -1;
    }
    r->off[r->n][0] = r->text.len;
    buf_append(&r->text, s, (size_t)(eq - s));
    buf_putc(&r->text, 0);
    r->off[r->n][1] = r->text.len;
    buf_append(&r->text, eq + 1, (size_t)(s + len - eq - 1));
    buf_putc(&r->text, 0);
    r->n++;
    return 0;
}

int preq_feed(preq_t *r, const char *data, size_t len, size_t *used, const char **why)
{
    size_t i = 0;
    *used = 0;
    while (i < len) {
        const char *lf = memchr(data + i, '\n', len - i);
        size_t take = lf ? (size_t)(lf - (data + i)) : len - i;
        if (r->line.len + take + (lf ? 1 : 0) > PREQ_LINE_MAX) {
            *why = "request line too long";
            *used = i;
            return -1;
        }
        buf_append(&r->line, data + i, take);
        i += take;
        if (!lf)
            break;
        i++;   /* the LF */
        int rc = take_line(r, why);
        buf_reset(&r->line);
        if (rc != 0) {
            *used = i;
            if (rc == 1)
                r->done = true;
            return rc;
        }
    }
    *used = i;
    return 0;
}

const char *preq_get(const preq_t *r, const char *name)
{
    for (size_t k = r->n; k-- > 0;)
        if (strcmp(r->text.data + r->off[k][0], name) == 0)
            return r->text.data + r->off[k][1];
    return NULL;
}

/* ------------------------------------------------ request -> engine state */

/* An attribute that is absent or empty counts as unknown. */
static const char *val(const preq_t *r, const char *name)
{
    const char *v = preq_get(r, name);
    return v && *v ? v : NULL;
}

static bool known_name(const char *v)
{
    return v && *v && !str_ieq(v, "unknown");
}

/* addr + port into ss; false when addr is not a numeric address. */
static bool make_sockaddr(const char *addr, const char *port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    unsigned long p = port ? strtoul(port, NULL, 10) : 0;
    if (p > 65535)
        p = 0;
    if (!addr)
        return false;
    struct sockaddr_in *in = (struct sockaddr_in *)(void *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)ss;
    if (inet_pton(AF_INET, addr, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        return true;
    }
    const char *a = addr;
    char tmp[INET6_ADDRSTRLEN + 8];
    if (str_istarts(a, "ipv6:")) {   /* Postfix's form in some lists; never in requests, but cheap */
        str_copy(tmp, a + 5, sizeof tmp);
        a = tmp;
    }
    if (inet_pton(AF_INET6, a, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        return true;
    }
    return false;
}

int preq_pstate(const preq_t *r, const char *service, preq_state_t *out, const char **why)
{
    static const struct {
        const char *name;
        pcmd_t cmd;
    } states[] = {
        {"CONNECT", PCMD_CONNECT}, {"EHLO", PCMD_HELO}, {"HELO", PCMD_HELO}, {"MAIL", PCMD_MAIL},
        {"RCPT", PCMD_RCPT}, {"VRFY", PCMD_RCPT}, {"DATA", PCMD_DATA}, {"END-OF-MESSAGE", PCMD_EOD},
        {"ETRN", PCMD_ETRN},
    };
    memset(out, 0, sizeof *out);
    const char *req = preq_get(r, "request");
    if (!req || strcmp(req, "smtpd_access_policy") != 0) {
        *why = req ? "not a smtpd_access_policy request" : "no request attribute";
        return -1;
    }
    const char *state = preq_get(r, "protocol_state");
    size_t k = 0;
    while (state && k < ARRAY_LEN(states) && !str_ieq(state, states[k].name))
        k++;
    if (!state || k == ARRAY_LEN(states)) {
        *why = state ? "unknown protocol_state" : "no protocol_state attribute";
        return -1;
    }
    out->cmd = states[k].cmd;
    out->state = states[k].name;
    pstate_t *st = &out->st;

    const char *addr = val(r, "client_address");
    st->client_addr = addr ? addr : "unknown";
    if (make_sockaddr(addr, val(r, "client_port"), &out->peer))
        st->peer = (const struct sockaddr *)&out->peer;
    if (make_sockaddr(val(r, "server_address"), val(r, "server_port"), &out->local))
        st->local = (const struct sockaddr *)&out->local;

    /* Postfix sends client_name only when the name was forward-confirmed
     * (else "unknown"), reverse_client_name whenever a PTR exists; a
     * temporary failure is not told apart, so it counts as none. */
    const char *name = val(r, "client_name"), *rev = val(r, "reverse_client_name");
    st->client_name = known_name(name) ? name : "unknown";
    st->name_code = known_name(name) ? 0 : 5;
    st->reverse_name = known_name(rev) ? rev : (known_name(name) ? name : "unknown");
    st->reverse_code = known_name(rev) || known_name(name) ? 0 : 5;
    st->forward_code = known_name(name) ? 0 : 5;

    st->helo = val(r, "helo_name");
    /* sender="" is the null sender once there is a MAIL command; before
     * it (and at a VRFY outside a transaction) there is no sender. */
    const char *sender = preq_get(r, "sender");
    bool in_mail = out->cmd == PCMD_MAIL || out->cmd == PCMD_RCPT || out->cmd == PCMD_DATA || out->cmd == PCMD_EOD;
    if (str_ieq(out->state, "VRFY") && sender && !*sender)
        in_mail = false;
    st->sender = in_mail ? (sender ? sender : "") : NULL;
    st->recipient = out->cmd == PCMD_ETRN ? val(r, "etrn_domain") : val(r, "recipient");
    st->protocol = val(r, "protocol_name");
    if (!st->protocol)
        st->protocol = "SMTP";
    const char *v = val(r, "recipient_count");
    st->nrcpt = v ? (unsigned)strtoul(v, NULL, 10) : 0;
    v = val(r, "size");
    st->size = v ? strtoull(v, NULL, 10) : 0;
    st->queue_id = val(r, "queue_id");
    st->instance = val(r, "instance");
    st->sasl_user = val(r, "sasl_username");
    st->sasl_method = val(r, "sasl_method");
    st->sasl_sender = val(r, "sasl_sender");
    v = val(r, "stress");
    st->stress = v && str_ieq(v, "yes");
    st->tls_protocol = val(r, "encryption_protocol");
    if (st->tls_protocol) {
        st->tls_cipher = val(r, "encryption_cipher");
        v = val(r, "encryption_keysize");
        st->tls_keysize = v ? (unsigned)strtoul(v, NULL, 10) : 0;
    }
    st->ccert_subject = val(r, "ccert_subject");
    st->ccert_issuer = val(r, "ccert_issuer");
    st->ccert_fingerprint = val(r, "ccert_fingerprint");
    st->ccert_pubkey_fingerprint = val(r, "ccert_pubkey_fingerprint");
    /* Postfix sends the subject of a trusted (verified) certificate only */
    st->ccert_verified = st->ccert_subject && *st->ccert_subject;
    st->service = service;
    return 0;
}

/* ------------------------------------------------------ verdict -> action */

/* Text for one action line: line ends and other controls become spaces. */
static void put_clean(buf_t *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf_putc(out, ch < 0x20 || ch == 0x7f ? ' ' : (char)ch);
    }
}

/* The first line of a "\n"-separated list. */
static void put_first(buf_t *out, const char *word, const buf_t *list)
{
    const char *s = buf_cstr(list);
    const char *nl = strchr(s, '\n');
    buf_printf(out, "%s ", word);
    put_clean(out, s, nl ? (size_t)(nl - s) : strlen(s));
}

/* Where the engine's "<name>: Class rejected: " prefix ends in text (just
 * after the code and DSN), or text itself when there is none. */
static const char *skip_class_prefix(const char *text)
{
    static const char *const classes[] = {"Client host", "Helo command", "Sender address", "Recipient address",
                                          "Data command", "End-of-data", "Etrn command"};
    if (*text != '<')
        return text;
    const char *end = strstr(text, ">: ");
    if (!end)
        return text;
    const char *cls = end + 3;
    for (size_t i = 0; i < ARRAY_LEN(classes); i++) {
        size_t n = strlen(classes[i]);
        if (strncmp(cls, classes[i], n) == 0 && strncmp(cls + n, " rejected: ", 11) == 0)
            return cls + n + 11;
    }
    return text;
}

void policyd_action(const verdict_t *v, buf_t *out)
{
    if (v->status == V_PERMIT || v->status == V_PENDING) {
        if (v->discard)
            buf_puts(out, "DISCARD");
        else if (v->hold)
            buf_puts(out, "HOLD");
        else if (v->redirect.len)
            put_first(out, "REDIRECT", &v->redirect);
        else if (v->filter.len)
            put_first(out, "FILTER", &v->filter);
        else if (v->prepend.len)
            put_first(out, "PREPEND", &v->prepend);
        else if (v->bcc.len)
            put_first(out, "BCC", &v->bcc);
        else
            buf_puts(out, "DUNNO");
        return;
    }
    const char *s = buf_cstr(&v->reply);
    /* Only the first line: Postfix's action is one line. */
    const char *nl = strpbrk(s, "\r\n");
    size_t n = nl ? (size_t)(nl - s) : strlen(s);
    char *line = xstrndup(s, n);
    const char *p = line;
    /* "NNN X.Y.Z " kept, then the text without the class prefix. */
    size_t head = 0;
    if (strlen(p) >= 4 && p[0] >= '2' && p[0] <= '5' && p[3] == ' ') {
        head = 4;
        size_t d = strspn(p + head, "0123456789.");
        if (d >= 5 && p[head + d] == ' ')
            head += d + 1;
    }
    if (head == 0) {
        /* Never an action Postfix would misread: a verdict always has a code. */
        buf_printf(out, "%d ", v->code >= 400 && v->code <= 599 ? v->code : 451);
    }
    put_clean(out, p, head);
    const char *rest = skip_class_prefix(p + head);
    put_clean(out, rest, strlen(rest));
    if (!*rest && head)
        buf_puts(out, "Access denied");
    free(line);
}

/* ------------------------------------------------------------ the service */

#define OUTPUT_HIGH_WATER (64 * 1024)
#define INPUT_HIGH_WATER (256 * 1024)

typedef struct pconn {
    struct pconn *prev, *next;
    server_t *srv;
    smtpd_svc_t *sv;
    struct bufferevent *bev;
    char addr[INET6_ADDRSTRLEN];  /* the connection's peer: the Postfix smtpd */
    preq_t req;
    preq_state_t ps;
    dns_memo_t *memo;
    verdict_t v;
    buf_t action;
    unsigned nreq;
    bool waiting;                 /* a request waits for the memo */
    bool paused;                  /* reading stopped until our answers drain */
    bool eof, closing, reaping, shutdown;
} pconn_t;

static pconn_t *all_conns;
static unsigned nconns;

static void process_input(pconn_t *c);

static void reap(evutil_socket_t fd, short what, void *arg)
{
    pconn_t *c = arg;
    (void)fd;
    (void)what;
    log_info("policy", "disconnect from [%s] requests=%u", c->addr, c->nreq);
    if (c->bev)
        bufferevent_free(c->bev);
    dns_memo_free(&c->memo);
    preq_free(&c->req);
    verdict_free(&c->v);
    buf_free(&c->action);
    if (c->prev)
        c->prev->next = c->next;
    else
        all_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    nconns--;
    c->sv->nsessions--;
    gen_release(c->sv->gen);
    free(c);
}

static void reap_later(pconn_t *c)
{
    if (c->reaping)
        return;
    c->reaping = c->closing = true;
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_base_once(server_base(c->srv), -1, EV_TIMEOUT, reap, c, NULL);
}

/* Close once the answers already queued are written. */
static void conn_close(pconn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (!c->bev) {
        reap_later(c);
        return;
    }
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        reap_later(c);
}

/* The engine's own lines, as the SMTP session logs them. */
static void log_engine_lines(const pconn_t *c)
{
    const char *p = buf_cstr(&c->v.warnings);
    const char *id = c->ps.st.queue_id ? c->ps.st.queue_id : "NOQUEUE";
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = (int)(nl ? (size_t)(nl - p) : strlen(p));
        if (n >= 9 && strncmp(p, "warning: ", 9) == 0)
            log_warn("policy", "%.*s", n - 9, p + 9);
        else if (n >= 6 && strncmp(p, "warn: ", 6) == 0)
            log_warn("policy", "%s: %.*s", id, n, p);
        else if (n)
            log_info("policy", "%s: %.*s", id, n, p);
        p += n + (nl ? 1 : 0);
    }
}

static void answer(pconn_t *c, const char *action)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "action=%s\n\n", action);
}

/* Evaluate the complete request in c->req (again, after a wake). */
static void run_request(pconn_t *c)
{
    c->ps.st.dns = c->memo;
    vstatus_t vs = policy_eval_delegated(c->sv->policy, c->ps.cmd, &c->ps.st, &c->v, NULL);
    if (vs == V_PENDING) {
        c->waiting = true;
        return;
    }
    c->waiting = false;
    log_engine_lines(c);
    buf_reset(&c->action);
    policyd_action(&c->v, &c->action);
    const pstate_t *st = &c->ps.st;
    log_info("policy", "%s[%s]: %s from=<%s> to=<%s>: action=%s%s%s", st->client_name, st->client_addr,
             c->ps.state, st->sender ? st->sender : "", st->recipient ? st->recipient : "",
             buf_cstr(&c->action), c->v.rule[0] ? " rule=" : "", c->v.rule);
    answer(c, buf_cstr(&c->action));
    preq_reset(&c->req);
}

/* A request just became complete. */
static void start_request(pconn_t *c)
{
    c->nreq++;
    dns_memo_clear(c->memo);   /* each request sees fresh answers */
    const char *why = NULL;
    if (preq_pstate(&c->req, c->sv->svc->name, &c->ps, &why) != 0) {
        /* Well-formed but not something to decide: a temporary answer
         * (never a permit), and the connection stays usable. */
        log_warn("policy", "request %u from [%s]: %s", c->nreq, c->addr, why);
        answer(c, "DEFER_IF_PERMIT 4.3.5 Policy request not understood");
        preq_reset(&c->req);
        return;
    }
    run_request(c);
}

static void process_input(pconn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->waiting && !c->closing) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > OUTPUT_HIGH_WATER) {
            /* The client does not read its answers: wait for on_write. */
            c->paused = true;
            bufferevent_disable(c->bev, EV_READ);
            return;
        }
        struct evbuffer_iovec iov;
        if (evbuffer_get_length(in) == 0 || evbuffer_peek(in, -1, NULL, &iov, 1) < 1 || iov.iov_len == 0)
            break;
        size_t used = 0;
        const char *why = NULL;
        int rc = preq_feed(&c->req, iov.iov_base, iov.iov_len, &used, &why);
        evbuffer_drain(in, used);
        if (rc < 0) {
            /* Nothing after a malformed line can be trusted to be a
             * request boundary: Postfix's client falls back to its
             * default action and reconnects. */
            log_warn("policy", "malformed request from [%s]: %s", c->addr, why);
            conn_close(c);
            return;
        }
        if (rc == 1)
            start_request(c);
    }
    if (!c->waiting && (c->eof || c->shutdown))
        conn_close(c);
}

static void on_wake(void *arg)
{
    pconn_t *c = arg;
    if (c->reaping || !c->waiting)
        return;   /* an answer nobody waits for */
    run_request(c);
    if (!c->waiting)
        process_input(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process_input(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    pconn_t *c = arg;
    (void)bev;
    if (c->closing) {
        reap_later(c);
        return;
    }
    if (c->paused) {
        c->paused = false;
        bufferevent_enable(c->bev, EV_READ);
        process_input(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    pconn_t *c = arg;
    (void)bev;
    if (what & BEV_EVENT_TIMEOUT) {
        if (!c->closing)
            log_info("policy", "timeout after %u requests from [%s]", c->nreq, c->addr);
        reap_later(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* A client may half-close and still read what it asked for. */
        c->eof = true;
        if (!c->waiting)
            process_input(c);
        return;
    }
    if (!c->closing)
        log_info("policy", "lost connection after %u requests from [%s]", c->nreq, c->addr);
    bufferevent_free(c->bev);
    c->bev = NULL;
    reap_later(c);
}

void policyd_start(server_t *srv, smtpd_svc_t *sv, int fd, const struct sockaddr *peer)
{
    pconn_t *c = xcalloc(1, sizeof *c);
    c->srv = srv;
    c->sv = sv;
    sv->gen->refs++;
    sv->nsessions++;
    str_copy(c->addr, "unknown", sizeof c->addr);
    if (peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)peer)->sin_addr, c->addr, sizeof c->addr);
    else if (peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr, c->addr,
                  sizeof c->addr);
    preq_init(&c->req);
    verdict_init(&c->v);
    c->memo = dns_memo_new(sv->gen->dns, on_wake, c);
    c->next = all_conns;
    if (all_conns)
        all_conns->prev = c;
    all_conns = c;
    nconns++;
    c->bev = bufferevent_socket_new(server_base(srv), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, INPUT_HIGH_WATER);
    /* smtpd_timeout, reused: the same "idle client" bound as an SMTP
     * session's; Postfix closes idle policy connections itself after
     * smtpd_policy_service_max_idle (300s), the same default. */
    struct timeval tv = {(time_t)param_int(sv->p, PARAM_smtpd_timeout), 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_info("policy", "connect from [%s]", c->addr);
}

void policyd_service_ready(const smtpd_svc_t *sv)
{
    const char *const *items;
    if (param_list(sv->p, PARAM_policy_restrictions, &items) == 0)
        log_warn("policy", "service %s (%s:%d): policy_restrictions is empty: every request gets DUNNO",
                 sv->svc->name, sv->svc->file, sv->svc->line);
}

unsigned policyd_nsessions(void)
{
    return nconns;
}

void policyd_close_all(bool now)
{
    for (pconn_t *c = all_conns; c; c = c->next) {
        c->shutdown = true;
        if (c->closing)
            continue;
        if (now || !c->waiting)
            conn_close(c);
    }
}
