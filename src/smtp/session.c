/*
 * session: one SMTP server session, RFC 5321 receiving side.
 *
 * Bytes → lines (or content, in DATA/BDAT) → commands → replies.  The
 * command table at the bottom drives the state machine; content goes
 * through the data decoder (data.c) into a spool writer.  Replies to
 * pipelined commands are queued in order and flushed together.
 * XFORWARD (one transaction's client, for the queue file, Received: and
 * the log only) and XCLIENT (a new client identity for everything) come
 * from authorized peers; xattr.c parses their arguments.
 *
 * Ownership: the session owns its bufferevent, transaction state and
 * spool writer; it holds one reference on its configuration generation.
 * It is never freed from inside one of its own callbacks: session_close
 * marks it and the reaper frees it from a fresh loop callback.  While a
 * spool commit is in flight (busy), the session waits for the commit
 * callback even if the client has gone: an accepted message is always
 * handed to the queue manager.
 *
 * Never: read past a bounded limit without counting it, emit a bare CR
 * or LF into the queue, or send 250 before the spool says the message is
 * durable.
 */
#include "smtp/smtpd.h"

#include "content/clamd.h"
#include "content/content.h"
#include "core/log.h"
#include "core/util.h"
#include "smtp/addr.h"
#include "smtp/data.h"
#include "smtp/proxy.h"
#include "smtp/xattr.h"
#include "policy/peer.h"
#include "policy/anvil.h"
#include "sasl/sasl.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ST_TLS: a TLS handshake runs (nothing is read as SMTP); ST_AUTH: the
 * next line is a SASL response. */
enum { ST_PROXY, ST_CMD, ST_DATA, ST_BDAT, ST_TLS, ST_AUTH };

/* Command indexes, in the order Postfix prints them at disconnect.  The
 * handlers up to C_BDAT may wait for the memo (DNS, the store). */
enum { C_HELO, C_EHLO, C_XCLIENT, C_XFORWARD, C_STARTTLS, C_AUTH, C_MAIL, C_RCPT, C_DATA, C_BDAT, C_RSET,
       C_NOOP, C_VRFY, C_HELP, C_QUIT, C_UNKNOWN, C__COUNT };

#define OUTPUT_HIGH_WATER (256 * 1024)   /* stop reading commands while replies pile up */
#define INPUT_HIGH_WATER (1024 * 1024)   /* stop reading from a client that runs ahead */
#define SPOOL_HIGH_WATER (1024 * 1024)   /* stop reading content while the disk catches up */

typedef struct session {
    server_t *srv;
    smtpd_svc_t *sv;
    const params_t *p;
    struct bufferevent *bev;     /* the connection: a socket bufferevent, or an OpenSSL one over fd
                                    (or over under) once TLS runs */
    struct bufferevent *under;   /* implicit TLS after a PROXY header: the socket bufferevent below */
    unsigned linger;             /* closing: 10 ms waits for under's output to drain */
    int fd;                      /* the session closes it (bufferevents never do: STARTTLS swaps them) */
    struct event *timer;         /* error sleep and spool backpressure */
    struct sockaddr_storage peer;
    struct sockaddr_storage local;   /* our end of the connection (permit_inet_interfaces); family 0: unknown */
    char addr[INET6_ADDRSTRLEN];
    char name[256];              /* forward-confirmed client host name, or "unknown" */
    char reverse[256];           /* the PTR name, or "unknown" */
    char name_code, reverse_code, forward_code;   /* policy/peer.h */
    char client[320];            /* "name[addr]" for log lines */
    int state;
    bool closing, reaping, busy, eof, paused, skipping, shutdown;
    bool quit_sent;
    const char *last_cmd;        /* for "timeout after X" */
    char *helo;
    bool esmtp;
    unsigned errors, junk;
    unsigned ok[C__COUNT], total[C__COUNT];
    char *delayed_reply;         /* an error reply waiting for smtpd_error_sleep_time */

    /* transaction */
    bool in_mail;
    addr_t sender;
    char **rcpts;
    size_t nrcpt;
    bool counted;           /* in anvil's connection count (anvil_conn_open) */
    char qid[QUEUE_ID_MAX];
    long long arrival;
    bool smtputf8;
    char body_type[12];
    spool_writer_t *writer;
    data_dec_t dec;
    buf_t chunk;
    size_t msg_size;
    unsigned long long size_decl;  /* MAIL FROM SIZE=, 0 when none */
    bool too_big, bdat_used, bdat_last, bdat_discard;
    unsigned long long bdat_left, bdat_size;
    const char *bdat_error;      /* reply for a discarded BDAT chunk */
    content_msg_t *content;      /* the cleanup stage: MIME, header/body checks (content/content.h) */
    buf_t cout;                  /* its output, on its way to the spool and the scanner */
    bool content_judged;         /* its verdict is applied (finish_message runs again after a wait) */
    scan_t *scan;                /* the virus scan of this message (content/clamd.h), or NULL */
    size_t scan_sent;            /* bytes given to the scanner */
    bool scan_skipped;           /* over content_scanner_size_limit: not scanned */
    bool scan_wait;              /* the end of the message waits for the scanner's verdict */
    int scan_result;             /* -1 none yet, else the scan_status */
    char *scan_detail;           /* the virus name or the failure */

    /* restrictions (policy/restrict.h) */
    verdict_t v;                 /* reused for every evaluation */
    buf_t vtext;                 /* the verdict's reply as sent (footer included) */
    char *access_denied;         /* smtpd_delay_reject = no and CONNECT was refused: every command gets 503 */
    char *dip_client, *dip_helo, *dip_sender;   /* postponed defer_if_permit replies (delay_reject = no) */
    bool pipelined_early;        /* the client sent ahead without PIPELINING (reject_unauth_pipelining) */
    bool discard;                /* a DISCARD action: accept, then drop the message */
    buf_t prepend;               /* PREPEND headers for this message, each ending in "\n" */
    bool hold;                   /* a HOLD action: the message goes to the hold queue */
    char *redirect, *filter;     /* REDIRECT / FILTER actions (the last one wins) */
    buf_t bcc;                   /* BCC addresses, each ending in "\n" */
    buf_t top;                   /* header lines for the top of the message (X-Virus-Status) */
    buf_t bdat_reply;            /* a data-restriction reply that follows a BDAT chunk */

    /* XFORWARD / XCLIENT (smtp/xattr.h) */
    bool xfwd;                   /* XFORWARD attributes apply to the next transaction */
    xattrs_t fwd;                /* those attributes; the ones never given are unavailable */
    char *login;                 /* XCLIENT LOGIN: the SASL login name the restrictions see */

    /* TLS (tls/tls.h) */
    SSL *ssl;                    /* NULL: plaintext */
    bool starttls_wait;          /* "220 Ready to start TLS" sent: swap once it is written */
    tls_info_t *tls;             /* what the handshake negotiated; NULL: plaintext */

    /* AUTH (sasl/sasl.h) */
    sasl_conv_t *sasl;           /* an exchange in progress (state ST_AUTH or waiting for the backend) */
    char sasl_mech[24];          /* its mechanism */
    char *sasl_user, *sasl_method;   /* after 235 */
    char *sasl_sender;           /* MAIL FROM AUTH= of this transaction (xtext-decoded), NULL */

    /* DNS (dns/dns.h): the session's answers, and what waits for them */
    dns_memo_t *memo;
    int waiting;                 /* W_*: what runs again when the memo wakes us (busy is set meanwhile) */
    const struct command *pend_cmd;   /* W_CMD: the command to run again, with its argument */
    char *pend_arg;
} session_t;

enum { W_NONE, W_NAMES, W_GREET, W_CMD, W_EOD, W_TLS };
#define CMD_PENDING 2   /* a command handler's answer: waiting for DNS, run me again */

static void dns_wake(void *arg);

static void process_input(session_t *s);
static void session_close(session_t *s);

/* ---------- replies and logging ---------- */

static void reply_raw(session_t *s, const char *text, size_t len)
{
    if (!s->bev || s->reaping)
        return;
    bufferevent_write(s->bev, text, len);
}

static void reply(session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error_reply(session_t *s, const char *text);
/* One reply line: fmt + CRLF. */
static void format_reply(buf_t *b, const char *fmt, va_list ap)
{
    buf_vprintf(b, fmt, ap);
    buf_puts(b, "\r\n");
}

static void reply(session_t *s, const char *fmt, ...)
{
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    format_reply(&b, fmt, ap);
    va_end(ap);
    reply_raw(s, b.data, b.len);
    buf_free(&b);
}

static void error_sleep_done(evutil_socket_t fd, short what, void *arg)
{
    session_t *s = arg;
    if (s->delayed_reply) {
        reply_raw(s, s->delayed_reply, strlen(s->delayed_reply));
        xfree(&s->delayed_reply);
    }
    s->busy = false;
    process_input(s);
}

/* An error reply: counts toward the soft and hard limits, and past the soft
 * limit is sent only after smtpd_error_sleep_time (tarpitting). */
static void reply_error(session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_error(session_t *s, const char *fmt, ...)
{
    buf_t b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    format_reply(&b, fmt, ap);
    va_end(ap);
    s->errors++;
    note_error_reply(s, buf_cstr(&b));
    long long sleep_s = param_int(s->p, PARAM_smtpd_error_sleep_time);
    if (s->errors >= (unsigned)param_int(s->p, PARAM_smtpd_soft_error_limit) && sleep_s > 0
        && !s->closing) {
        struct timeval tv = {(time_t)sleep_s, 0};
        s->delayed_reply = buf_steal(&b);
        s->busy = true;
        evtimer_del(s->timer);
        event_assign(s->timer, server_base(s->srv), -1, 0, error_sleep_done, s);
        evtimer_add(s->timer, &tv);
        return;
    }
    reply_raw(s, b.data, b.len);
    buf_free(&b);
}

static const char *proto_name(const session_t *s)
{
    return s->esmtp ? "ESMTP" : "SMTP";
}

/* "NOQUEUE: reject: RCPT from host[addr]: 554 5.7.1 text; from=<> to=<> proto=ESMTP helo=<>",
 * with " rule=CLASS:RESTRICTION table=FILE:LINE" after it when the restriction
 * engine decided (v). */
static void log_event(session_t *s, const char *what, const char *stage, const char *replytext,
                      const char *from, const char *to, const char *helo, const verdict_t *v)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s: %s: %s from %s: %s;", s->qid[0] ? s->qid : "NOQUEUE", what, stage, s->client,
               replytext);
    if (from)
        buf_printf(&b, " from=<%s>", from);
    if (to)
        buf_printf(&b, " to=<%s>", to);
    buf_printf(&b, " proto=%s", proto_name(s));
    if (helo)
        buf_printf(&b, " helo=<%s>", helo);
    if (v && v->rule[0])
        buf_printf(&b, " rule=%s", v->rule);
    if (v && v->origin.file)
        buf_printf(&b, " table=%s:%d", v->origin.file, v->origin.line);
    log_info("smtpd", "%s", buf_cstr(&b));
    buf_free(&b);
}

static void log_reject(session_t *s, const char *stage, const char *replytext, const char *to)
{
    log_event(s, "reject", stage, replytext, s->in_mail ? s->sender.full : NULL, to, s->helo, NULL);
}

/* ---------------------------------------------------------- restrictions */

static void fill_pstate(session_t *s, pstate_t *st)
{
    memset(st, 0, sizeof *st);
    st->peer = (const struct sockaddr *)&s->peer;
    st->client_addr = s->addr;
    st->client_name = s->name;
    st->reverse_name = s->reverse;
    st->name_code = s->name_code;
    st->reverse_code = s->reverse_code;
    st->forward_code = s->forward_code;
    st->dns = s->memo;
    st->helo = s->helo;
    st->sender = s->in_mail ? s->sender.full : NULL;
    st->protocol = proto_name(s);
    st->nrcpt = (unsigned)s->nrcpt;
    st->pipelined_early = s->pipelined_early;
    st->sasl_user = s->sasl_user ? s->sasl_user : s->login;   /* AUTH, else XCLIENT LOGIN */
    st->sasl_method = s->sasl_user ? s->sasl_method : NULL;
    st->sasl_sender = s->sasl_sender;
    if (s->tls) {
        st->tls_protocol = s->tls->protocol;
        st->tls_cipher = s->tls->cipher;
        st->tls_keysize = (unsigned)s->tls->cipher_bits;
        if (s->tls->peer_cert) {
            st->ccert_subject = s->tls->peer_cn;
            st->ccert_issuer = s->tls->issuer_cn;
            st->ccert_fingerprint = s->tls->fingerprint;
            st->ccert_pubkey_fingerprint = s->tls->pkey_fingerprint;
            st->ccert_verified = s->tls->peer_verified;
        }
    }
    st->local = s->local.ss_family ? (const struct sockaddr *)&s->local : NULL;
    st->queue_id = s->qid[0] ? s->qid : NULL;
    /* Postfix's size attribute: what MAIL FROM declared, then what came. */
    st->size = s->msg_size ? s->msg_size : s->size_decl;
    st->service = s->sv->svc->name;
}

/* Every error reply: the abuse limits count 5xx replies (anvil.h). */
static void note_error_reply(session_t *s, const char *text)
{
    if (text[0] != '5' || !s->sv->policy)
        return;
    pstate_t st;
    fill_pstate(s, &st);
    policy_note_event(s->sv->policy, &st, PE_REJECT_5XX);
}

/* The engine's own lines: "warning: ..." at warning level (WARN actions
 * too: they exist to warn), the per-event lines with the queue ID. */
static void log_policy_lines(session_t *s, const verdict_t *v)
{
    const char *p = buf_cstr(&v->warnings);
    while (*p) {
        const char *nl = strchr(p, '\n');
        int n = (int)(nl ? (size_t)(nl - p) : strlen(p));
        const char *id = s->qid[0] ? s->qid : "NOQUEUE";
        if (n >= 9 && strncmp(p, "warning: ", 9) == 0)
            log_warn("smtpd", "%.*s", n - 9, p + 9);
        else if (n >= 6 && strncmp(p, "warn: ", 6) == 0)
            log_warn("smtpd", "%s: %.*s", id, n, p);
        else
            log_info("smtpd", "%s: %.*s", id, n, p);
        p += n + (nl ? 1 : 0);
    }
}

/* (RCPT uses policy_rcpt and logs the engine's lines only once it knows
 * whether the recipient opens the queue file, so that an accepted first
 * recipient's "hold:", "redirect:" ... lines carry the queue ID.) */
static vstatus_t session_policy(session_t *s, pcmd_t cmd, const pstate_t *st)
{
    verdict_reset(&s->v);
    vstatus_t vs = policy_eval(s->sv->policy, cmd, st, &s->v, NULL);
    if (vs != V_PENDING)
        log_policy_lines(s, &s->v);
    return vs;
}

/* Wait for the memo: nothing is read or run until what (W_*) runs again. */
static void wait_dns(session_t *s, int what)
{
    s->waiting = what;
    s->busy = true;
}

/* Start the queries the restrictions will want, now that st has more data. */
static void prefetch(session_t *s)
{
    pstate_t st;
    fill_pstate(s, &st);
    policy_prefetch(s->sv->policy, &st);
}

/* Send text (one or more reply lines without the final CRLF), after
 * sleep_s seconds ("sleep N" restrictions) without blocking the loop. */
static void send_text(session_t *s, const char *text, bool error, unsigned sleep_s)
{
    if (sleep_s > 0 && !s->closing && !s->delayed_reply) {
        buf_t b = BUF_INIT;
        buf_printf(&b, "%s\r\n", text);
        if (error) {
            s->errors++;
            note_error_reply(s, text);
        }
        s->delayed_reply = buf_steal(&b);
        s->busy = true;
        struct timeval tv = {(time_t)sleep_s, 0};
        evtimer_del(s->timer);
        event_assign(s->timer, server_base(s->srv), -1, 0, error_sleep_done, s);
        evtimer_add(s->timer, &tv);
        return;
    }
    if (error)
        reply_error(s, "%s", text);
    else
        reply(s, "%s", text);
}

/* A refusal by the engine: log it like Postfix (plus rule= and table=),
 * then answer with the footer. */
static void policy_refuse(session_t *s, const pstate_t *st, const char *stage, const char *from, const char *to,
                          const char *helo)
{
    log_event(s, "reject", stage, buf_cstr(&s->v.reply), from, to, helo, &s->v);
    policy_reply_text(s->sv->policy, &s->v, st, &s->vtext);
    /* A recipient refused as unknown (x.1.1) counts towards the
     * dictionary-attack limit. */
    const char *r = buf_cstr(&s->v.reply);
    if (to && strlen(r) > 9 && strncmp(r + 5, ".1.1", 4) == 0)
        policy_note_event(s->sv->policy, st, PE_UNKNOWN_RCPT);
    if (s->v.code == 421) {
        /* as Postfix: a 421 reply ends the session */
        s->errors++;
        reply(s, "%s", buf_cstr(&s->vtext));
        session_close(s);
        return;
    }
    send_text(s, buf_cstr(&s->vtext), true, s->v.sleep);
}

/* A permitted MAIL/RCPT/DATA: its message actions join the transaction. */
static void take_actions(session_t *s)
{
    if (s->v.prepend.len)
        buf_append(&s->prepend, s->v.prepend.data, s->v.prepend.len);
    if (s->v.discard)
        s->discard = true;
    if (s->v.hold)
        s->hold = true;
    if (s->v.redirect.len) {
        free(s->redirect);
        s->redirect = xstrdup(buf_cstr(&s->v.redirect));
    }
    if (s->v.filter.len) {
        free(s->filter);
        s->filter = xstrdup(buf_cstr(&s->v.filter));
    }
    if (s->v.bcc.len)
        buf_append(&s->bcc, s->v.bcc.data, s->v.bcc.len);
}

static bool delay_reject(const session_t *s)
{
    return policy_delay_reject(s->sv->policy);
}

/* ---------- transaction state ---------- */

static void reset_transaction(session_t *s)
{
    if (s->writer) {
        spool_writer_abort(s->writer);
        s->writer = NULL;
    }
    addr_free(&s->sender);
    for (size_t i = 0; i < s->nrcpt; i++)
        free(s->rcpts[i]);
    xfree(&s->rcpts);
    s->nrcpt = 0;
    s->in_mail = false;
    s->qid[0] = 0;
    s->smtputf8 = false;
    s->body_type[0] = 0;
    s->msg_size = 0;
    s->size_decl = 0;
    s->too_big = s->bdat_used = s->bdat_last = s->bdat_discard = false;
    s->bdat_left = s->bdat_size = 0;
    s->bdat_error = NULL;
    buf_reset(&s->chunk);
    content_free(&s->content);
    buf_reset(&s->cout);
    s->content_judged = false;
    if (s->scan) {
        scan_cancel(s->scan);
        s->scan = NULL;
    }
    s->scan_sent = 0;
    s->scan_skipped = s->scan_wait = false;
    s->scan_result = -1;
    xfree(&s->scan_detail);
    s->discard = false;
    buf_reset(&s->prepend);
    xfree(&s->dip_sender);
    s->hold = false;
    xfree(&s->redirect);
    xfree(&s->filter);
    buf_reset(&s->bcc);
    buf_reset(&s->top);
    xfree(&s->sasl_sender);
    /* XFORWARD_README: the attributes last for one transaction (RSET or
     * the end of DATA ends it; so does HELO/EHLO, which implies RSET). */
    s->xfwd = false;
}

/* ---------- lifecycle ---------- */

static void log_disconnect(session_t *s)
{
    static const char *names[C__COUNT] = {"helo", "ehlo",  "xclient", "xforward", "starttls", "auth",
                                          "mail", "rcpt",  "data",    "bdat",     "rset",     "noop",
                                          "vrfy", "help",  "quit",    "unknown"};
    buf_t b = BUF_INIT;
    unsigned ok = 0, total = 0;
    buf_printf(&b, "disconnect from %s", s->client);
    for (int i = 0; i < C__COUNT; i++) {
        if (!s->total[i])
            continue;
        ok += s->ok[i];
        total += s->total[i];
        if (s->ok[i] == s->total[i])
            buf_printf(&b, " %s=%u", names[i], s->ok[i]);
        else
            buf_printf(&b, " %s=%u/%u", names[i], s->ok[i], s->total[i]);
    }
    if (ok == total)
        buf_printf(&b, " commands=%u", ok);
    else
        buf_printf(&b, " commands=%u/%u", ok, total);
    log_info("smtpd", "%s", buf_cstr(&b));
    buf_free(&b);
}

static void reap(evutil_socket_t fd, short what, void *arg)
{
    session_t *s = arg;
    if (s->state != ST_PROXY)
        log_disconnect(s);
    if (s->counted)
        anvil_conn_close(s->sv->svc->name, s->addr);
    reset_transaction(s);
    sasl_end(&s->sasl);
    /* close_notify while the SSL's BIO still has its bufferevents (non-
     * blocking, best effort); the SSL itself after them. */
    if (s->ssl && s->quit_sent && s->tls && s->bev)
        SSL_shutdown(s->ssl);
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->under)
        bufferevent_free(s->under);
    if (s->ssl)
        SSL_free(s->ssl);
    if (s->fd >= 0)
        close(s->fd);
    free(s->tls);
    free(s->sasl_user);
    free(s->sasl_method);
    event_free(s->timer);
    free(s->helo);
    free(s->delayed_reply);
    buf_free(&s->chunk);
    buf_free(&s->cout);
    verdict_free(&s->v);
    buf_free(&s->vtext);
    free(s->access_denied);
    free(s->dip_client);
    free(s->dip_helo);
    buf_free(&s->prepend);
    buf_free(&s->bcc);
    buf_free(&s->top);
    buf_free(&s->bdat_reply);
    dns_memo_free(&s->memo);
    free(s->pend_arg);
    free(s->login);
    server_session_removed(s->srv, (struct session *)s);
    s->sv->nsessions--;
    gen_release(s->sv->gen);
    free(s);
}

/* Free on a fresh loop callback, never inside our own.  A pending spool
 * commit keeps the session alive until its callback has run. */
static void reap_later(session_t *s);

static void linger_done(evutil_socket_t fd, short what, void *arg)
{
    reap_later(arg);
}

static void reap_later(session_t *s)
{
    if (s->reaping)
        return;
    s->closing = true;
    if (s->busy && s->writer && !s->scan_wait)
        return;   /* commit_done() calls us again */
    if (s->bev && s->under && s->linger < 200 && evbuffer_get_length(bufferevent_get_output(s->under)) > 0) {
        /* TLS over the PROXY socket bufferevent: the last reply's records
         * are still on their way to the socket (at most 2 s more). */
        s->linger++;
        struct timeval tv = {0, 10000};
        evtimer_del(s->timer);
        event_assign(s->timer, server_base(s->srv), -1, 0, linger_done, s);
        evtimer_add(s->timer, &tv);
        return;
    }
    s->reaping = true;
    evtimer_del(s->timer);
    if (s->bev)
        bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    event_base_once(server_base(s->srv), -1, EV_TIMEOUT, reap, s, NULL);
}

/* Close after the queued replies are written. */
static void session_close(session_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    if (!s->bev) {
        reap_later(s);
        return;
    }
    bufferevent_disable(s->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
        reap_later(s);
}

static void tls_start(session_t *s);

static void on_write(struct bufferevent *bev, void *arg)
{
    session_t *s = arg;
    if (s->starttls_wait && !s->closing) {
        /* "220 Ready to start TLS" is on the wire: the handshake follows */
        s->starttls_wait = false;
        s->busy = false;
        tls_start(s);
        return;
    }
    if (s->closing) {
        reap_later(s);
        return;
    }
    if (s->paused) {
        s->paused = false;
        process_input(s);
    }
}

static void tls_established(session_t *s);

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    session_t *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        tls_established(s);
        return;
    }
    if (s->state == ST_TLS && (what & (BEV_EVENT_TIMEOUT | BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
        /* The handshake failed: nothing can be said to the client any
         * more (the stream is neither plaintext nor TLS). */
        buf_t e = BUF_INIT;
        /* libevent moves OpenSSL's error queue into the bufferevent */
        unsigned long code;
        while ((code = bufferevent_get_openssl_error(s->bev)) != 0) {
            char one[256];
            ERR_error_string_n(code, one, sizeof one);
            buf_printf(&e, "%s%s", e.len ? "; " : "", one);
        }
        if (!e.len)
            tls_errors(&e);
        if (what & BEV_EVENT_TIMEOUT)
            log_info("smtpd", "SSL_accept error from %s: timeout", s->client);
        else if (e.len)
            log_info("smtpd", "SSL_accept error from %s: %s", s->client, buf_cstr(&e));
        else
            log_info("smtpd", "SSL_accept error from %s: lost connection", s->client);
        log_info("smtpd", "lost connection after %s from %s", s->last_cmd, s->client);
        buf_free(&e);
        s->closing = true;
        reap_later(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->closing) {
            reap_later(s);
            return;
        }
        if (s->state == ST_PROXY) {
            log_warn("smtpd", "haproxy read: time limit exceeded from [%s]", s->addr);
            reap_later(s);
            return;
        }
        log_info("smtpd", "timeout after %s from %s", s->last_cmd, s->client);
        reply(s, "421 4.4.2 %s Error: timeout exceeded", s->sv->myhostname);
        session_close(s);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        s->eof = true;
        if (s->busy)
            return;   /* finish the commit first; process_input closes after */
        process_input(s);
        return;
    }
    /* BEV_EVENT_ERROR: the connection is gone. */
    if (!s->closing && !s->quit_sent && s->state != ST_PROXY)
        log_info("smtpd", "lost connection after %s from %s", s->last_cmd, s->client);
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    reap_later(s);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    process_input(arg);
}

static void set_client(session_t *s, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, s->addr, sizeof s->addr);
        memcpy(&s->peer, sa, sizeof *in);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            struct sockaddr_in in = {0};
            in.sin_family = AF_INET;
            in.sin_port = in6->sin6_port;
            memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
            set_client(s, (const struct sockaddr *)&in);
            return;
        }
        inet_ntop(AF_INET6, &in6->sin6_addr, s->addr, sizeof s->addr);
        memcpy(&s->peer, sa, sizeof *in6);
    } else {
        str_copy(s->addr, "unknown", sizeof s->addr);
    }
    str_copy(s->name, "unknown", sizeof s->name);
    str_copy(s->reverse, "unknown", sizeof s->reverse);
    s->name_code = s->reverse_code = s->forward_code = 5;
    snprintf(s->client, sizeof s->client, "%s[%s]", s->name, s->addr);
}

/* The greeting, after the client restrictions when smtpd_delay_reject = no. */
static void greet_policy(session_t *s)
{
    if (s->shutdown) {
        reply(s, "421 4.3.2 %s Service shutting down", s->sv->myhostname);
        session_close(s);
        return;
    }
    unsigned sleep_s = 0;
    {
        /* As Postfix: a refused client gets the refusal instead of the
         * greeting, and 503 for every command but QUIT.  With
         * smtpd_delay_reject only the limits run now (a 421 hangs up). */
        pstate_t st;
        fill_pstate(s, &st);
        vstatus_t vs = session_policy(s, PCMD_CONNECT, &st);
        if (vs == V_PENDING) {
            wait_dns(s, W_GREET);
            return;
        }
        if (vs != V_PERMIT) {
            policy_refuse(s, &st, "CONNECT", NULL, NULL, NULL);
            if (!s->closing)
                s->access_denied = xstrdup(buf_cstr(&s->vtext));
            return;
        }
        if (s->v.postponed.len)
            s->dip_client = xstrdup(buf_cstr(&s->v.postponed));
        sleep_s = s->v.sleep;
    }
    buf_t g = BUF_INIT;
    buf_printf(&g, "220 %s", param_str(s->p, PARAM_smtpd_banner));
    send_text(s, buf_cstr(&g), false, sleep_s);
    buf_free(&g);
}

static bool wrapper_mode(const session_t *s)
{
    return s->sv->tls && tls_server_wrapper(s->sv->tls);
}

static int tls_rate_ok(session_t *s);

static void greet(session_t *s)
{
    s->state = ST_CMD;
    s->last_cmd = "CONNECT";
    log_info("smtpd", "connect from %s", s->client);
    if (wrapper_mode(s)) {
        /* implicit TLS: the handshake comes before the greeting */
        int rc = tls_rate_ok(s);
        if (rc == CMD_PENDING)
            wait_dns(s, W_TLS);
        else if (rc == 1)
            tls_start(s);
        return;
    }
    greet_policy(s);
}

/* ---------- TLS ---------- */

/* The new-TLS-session rate limit, before a handshake (as Postfix: checked
 * before, counted after, so that resumed sessions cost nothing).  1: go
 * on; 0: refused (replied or closing); CMD_PENDING: the store answers
 * later. */
static int tls_rate_ok(session_t *s)
{
    pstate_t st;
    fill_pstate(s, &st);
    vstatus_t vs = session_policy(s, PCMD_STARTTLS, &st);
    if (vs == V_PENDING)
        return CMD_PENDING;
    if (vs == V_PERMIT)
        return 1;
    log_warn("smtpd", "%s: STARTTLS refused: %s", s->client, buf_cstr(&s->v.reply));
    if (wrapper_mode(s)) {
        session_close(s);   /* a plaintext reply means nothing to a TLS client */
        return 0;
    }
    policy_refuse(s, &st, "STARTTLS", NULL, NULL, s->helo);
    return 0;
}

/* Swap the connection to TLS and start the server handshake.  Plaintext
 * the client pipelined after STARTTLS is thrown away (CVE-2011-0411):
 * only what the handshake authenticates may be read as SMTP.  After a
 * PROXY header with implicit TLS, the ClientHello may already be in the
 * socket bufferevent's input: TLS then filters over it instead. */
static void tls_start(session_t *s)
{
    struct event_base *base = server_base(s->srv);
    SSL *ssl = s->bev ? tls_server_ssl(s->sv->tls) : NULL;
    if (!ssl) {
        buf_t e = BUF_INIT;
        tls_errors(&e);
        log_warn("smtpd", "%s: cannot start TLS: %s", s->client, e.len ? buf_cstr(&e) : "no connection");
        buf_free(&e);
        if (wrapper_mode(s) || !s->bev) {
            session_close(s);
            return;
        }
        reply_error(s, "454 4.7.0 TLS not available due to local problem");
        bufferevent_enable(s->bev, EV_READ);
        process_input(s);
        return;
    }
    struct bufferevent *old = s->bev;
    size_t pending = evbuffer_get_length(bufferevent_get_input(old));
    if (pending && wrapper_mode(s)) {
        s->under = old;
        s->bev = bufferevent_openssl_filter_new(base, old, ssl, BUFFEREVENT_SSL_ACCEPTING, 0);
    } else {
        if (pending)
            log_warn("smtpd", "%s: discarding %zu bytes of plaintext pipelined after STARTTLS", s->client,
                     pending);
        bufferevent_free(old);
        s->bev = bufferevent_openssl_socket_new(base, s->fd, ssl, BUFFEREVENT_SSL_ACCEPTING, 0);
    }
    s->ssl = ssl;
    s->state = ST_TLS;
    if (!s->bev) {
        log_warn("smtpd", "%s: cannot start TLS: out of memory", s->client);
        s->closing = true;
        reap_later(s);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH_WATER);
    struct timeval tv = {(time_t)param_int(s->p, PARAM_smtpd_starttls_timeout), 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* The handshake is done: log it, count a new session, and start over as
 * RFC 3207 4.2 requires (nothing the client said in plaintext survives),
 * or greet (implicit TLS). */
static void tls_established(session_t *s)
{
    s->tls = xcalloc(1, sizeof *s->tls);
    tls_info_get(s->ssl, param_str(s->p, PARAM_smtpd_tls_fingerprint_digest), s->tls);
    if (tls_server_loglevel(s->sv->tls) >= 1)
        tls_info_log(s->tls, "smtpd", true, s->client);
    struct timeval tv = {(time_t)param_int(s->p, PARAM_smtpd_timeout), 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    if (!s->tls->resumed) {
        pstate_t st;
        fill_pstate(s, &st);
        policy_note_event(s->sv->policy, &st, PE_NEW_TLS);
    }
    s->state = ST_CMD;
    if (wrapper_mode(s)) {
        greet_policy(s);
        return;
    }
    s->ok[C_STARTTLS]++;
    reset_transaction(s);
    xfree(&s->helo);
    s->esmtp = false;
    xfree(&s->sasl_user);
    xfree(&s->sasl_method);
    process_input(s);
}

/* The client's names (smtpd_peername_lookup), then the greeting; the
 * DNS lists for its address are already asked by then. */
static void client_names(session_t *s)
{
    peer_names_t pn;
    if (!param_bool(s->p, PARAM_smtpd_peername_lookup) || !strcmp(s->addr, "unknown")) {
        peer_names_unknown(&pn);
    } else if (!peer_names_lookup(s->memo, s->addr, &pn, NULL)) {
        wait_dns(s, W_NAMES);
        return;
    }
    if (pn.warning[0])
        log_warn("smtpd", "%s", pn.warning);
    str_copy(s->name, pn.name, sizeof s->name);
    str_copy(s->reverse, pn.reverse, sizeof s->reverse);
    s->name_code = pn.name_code;
    s->reverse_code = pn.reverse_code;
    s->forward_code = pn.forward_code;
    snprintf(s->client, sizeof s->client, "%s[%s]", s->name, s->addr);
    prefetch(s);   /* the lists about the names */
    greet(s);
}

static void begin(session_t *s)
{
    /* From here on smtpd_timeout applies (the PROXY header had its own),
     * also while the names are looked up. */
    long long t = param_int(s->p, PARAM_smtpd_timeout);
    struct timeval tv = {(time_t)t, 0};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    if (!s->memo)
        s->memo = dns_memo_new(s->sv->gen->dns, dns_wake, s);
    anvil_conn_open(s->sv->svc->name, s->addr);
    s->counted = true;
    prefetch(s);   /* the lists about the address */
    client_names(s);
}

void session_start(server_t *srv, smtpd_svc_t *sv, int fd, const struct sockaddr *peer)
{
    session_t *s = xcalloc(1, sizeof *s);
    s->srv = srv;
    s->sv = sv;
    s->p = sv->p;
    s->scan_result = -1;
    sv->gen->refs++;
    sv->nsessions++;
    set_client(s, peer);
    socklen_t local_len = sizeof s->local;
    if (getsockname(fd, (struct sockaddr *)&s->local, &local_len) != 0)
        s->local.ss_family = 0;
    s->fd = fd;
    /* Replies are whole writes already; with Nagle on, TLS (which turns
     * one reply into a session ticket and a record) waited for the
     * client's delayed ACK, 40 ms on every new TLS session. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->bev = bufferevent_socket_new(server_base(srv), fd, 0);
    s->timer = evtimer_new(server_base(srv), error_sleep_done, s);
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    /* Bound what one client can make us buffer; reading resumes as we drain. */
    bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH_WATER);
    /* Implicit TLS: leave the ClientHello in the socket until the TLS
     * bufferevent reads it (tls_start). */
    bufferevent_enable(s->bev, wrapper_mode(s) && !sv->proxy ? EV_WRITE : EV_READ | EV_WRITE);
    server_session_added(srv, (struct session *)s);
    verdict_init(&s->v);
    s->last_cmd = "CONNECT";
    if (sv->proxy) {
        s->state = ST_PROXY;
        long long t = param_int(s->p, PARAM_smtpd_upstream_proxy_timeout);
        struct timeval tv = {(time_t)t, 0};
        bufferevent_set_timeouts(s->bev, &tv, &tv);
        return;
    }
    begin(s);
}

void session_shutdown(struct session *ss, bool now)
{
    session_t *s = (session_t *)ss;
    s->shutdown = true;
    if (s->closing || s->state == ST_PROXY)
        return;
    if (now || (!s->in_mail && !s->busy && s->state == ST_CMD)) {
        reply(s, "421 4.3.2 %s Service shutting down", s->sv->myhostname);
        if (s->writer && !s->busy) {
            spool_writer_abort(s->writer);
            s->writer = NULL;
        }
        session_close(s);
    }
}

/* ---------- PROXY protocol ---------- */

static bool read_proxy(session_t *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return false;
    if (len > PROXY_V2_MAX)
        len = PROXY_V2_MAX;
    const unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)len);
    proxy_info_t info;
    const char *why = "malformed header";
    long n = proxy_parse(data, len, &info, &why);
    if (n == 0 && len < PROXY_V2_MAX)
        return false;
    if (n <= 0) {
        log_warn("smtpd", "haproxy read: %s from [%s]", n == 0 ? "header too long" : why, s->addr);
        reap_later(s);
        return false;
    }
    evbuffer_drain(in, (size_t)n);
    if (wrapper_mode(s))
        bufferevent_disable(s->bev, EV_READ);   /* the rest is the TLS handshake's */
    if (!info.local) {
        set_client(s, (const struct sockaddr *)&info.src);
        memcpy(&s->local, &info.dst, sizeof s->local);   /* the address the client dialled */
    }
    begin(s);
    return true;
}

/* ---------- commands ---------- */

static bool pipelining_violation(session_t *s, const char *verb, bool last_in_group)
{
    if (!param_bool(s->p, PARAM_smtpd_forbid_unauth_pipelining))
        return false;
    struct evbuffer *in = bufferevent_get_input(s->bev);
    if (evbuffer_get_length(in) == 0)
        return false;
    if (s->esmtp && !last_in_group)
        return false;
    char peek[64];
    size_t n = evbuffer_copyout(in, peek, sizeof peek - 1);
    peek[n] = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)peek[i] < 0x20 || (unsigned char)peek[i] > 0x7e)
            peek[i] = '?';
    log_info("smtpd", "improper command pipelining after %s from %s: %s", verb, s->client, peek);
    reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
    session_close(s);
    return true;
}

/* ---------- XFORWARD and XCLIENT ---------- */

/* Is the client (as XCLIENT may have replaced it) in list?  1 yes, 0 no,
 * -1 when a table of the list failed (logged). */
static int xauth(session_t *s, addrlist_t *list, const char *param)
{
    buf_t why = BUF_INIT;
    al_result r = addrlist_match(list, s->addr, &why);
    if (r == AL_ERROR)
        log_warn("smtpd", "%s: %s", param, buf_cstr(&why));
    buf_free(&why);
    return r == AL_MATCH ? 1 : r == AL_ERROR ? -1 : 0;
}

/* A list that decides who may use a command could not be read: as
 * Postfix, neither allow nor refuse; end the session with a 4xx. */
static void local_data_error(session_t *s, const char *kind, const char *what)
{
    if (strcmp(kind, "command") == 0)
        log_warn("smtpd", "don't know if command %s should be allowed from %s", what, s->client);
    else
        log_warn("smtpd", "don't know if %s %s should be announced to %s", kind, what, s->client);
    reply(s, "421 4.3.0 %s Server local data error", s->sv->myhostname);
    session_close(s);
}

/* The checks XFORWARD and XCLIENT share, in Postfix's order: not inside
 * a transaction, some arguments, an authorized client. */
static bool x_permitted(session_t *s, const char *verb, const char *arg, addrlist_t *list, const char *param)
{
    if (s->in_mail) {
        reply_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return false;
    }
    while (*arg == ' ' || *arg == '\t')
        arg++;
    if (!*arg) {
        reply_error(s, "501 5.5.4 Syntax: %s attribute=value...", verb);
        return false;
    }
    int ok = xauth(s, list, param);
    if (ok < 0) {
        local_data_error(s, "command", verb);
        return false;
    }
    if (!ok) {
        reply_error(s, "550 5.7.0 Error: insufficient authorization");
        return false;
    }
    return true;
}

#define XAVAIL(a, id) ((a)->status[id] == XA_AVAILABLE)

/* XFORWARD: what a content filter or proxy knows about the client it
 * received the next message from.  It changes the queue file's client
 * attributes, the Received: header and the "client=" log line of the next
 * transaction only; restrictions still see the real client. */
static int cmd_xforward(session_t *s, char *arg)
{
    if (!x_permitted(s, "XFORWARD", arg, s->sv->xforward_hosts, "smtpd_authorized_xforward_hosts"))
        return -1;
    xattrs_t *a = xmalloc(sizeof *a);
    buf_t r = BUF_INIT;
    int rc = xattr_parse(XCMD_XFORWARD, arg, a, &r);
    if (rc != 0) {
        reply_error(s, "%s", buf_cstr(&r));
    } else {
        /* The first XFORWARD of a transaction starts from "everything
         * unavailable"; later ones overwrite what they name. */
        if (!s->xfwd) {
            memset(&s->fwd, 0, sizeof s->fwd);
            memset(s->fwd.status, XA_UNAVAILABLE, sizeof s->fwd.status);
            s->xfwd = true;
        }
        for (int id = 0; id < XA__COUNT; id++) {
            if (!(a->given & (1u << id)))
                continue;
            s->fwd.given |= 1u << id;
            s->fwd.status[id] = a->status[id];
            memcpy(s->fwd.value[id], a->value[id], sizeof s->fwd.value[id]);
        }
        reply(s, "250 2.0.0 Ok");
    }
    buf_free(&r);
    free(a);
    return rc;
}

/* "ID: client=name[addr]", and with XFORWARD Postfix's
 * ", orig_queue_id=IDENT, orig_client=name[addr]" after it. */
static void log_client(session_t *s)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s: client=%s", s->qid, s->client);
    if (s->sasl_user) {
        buf_printf(&b, ", sasl_method=%s, sasl_username=%s", s->sasl_method, s->sasl_user);
        if (s->sasl_sender)
            buf_printf(&b, ", sasl_sender=%s", s->sasl_sender);
    }
    if (!s->xfwd) {
        log_info("smtpd", "%s", buf_cstr(&b));
        buf_free(&b);
        return;
    }
    const xattrs_t *f = &s->fwd;
    if (XAVAIL(f, XA_IDENT))
        buf_printf(&b, ", orig_queue_id=%s", f->value[XA_IDENT]);
    buf_printf(&b, ", orig_client=%s", XAVAIL(f, XA_NAME) ? f->value[XA_NAME] : "unknown");
    if (XAVAIL(f, XA_ADDR))
        buf_printf(&b, "[%s]", f->value[XA_ADDR]);
    log_info("smtpd", "%s", buf_cstr(&b));
    buf_free(&b);
}

/* Text address + port -> sockaddr (family 0 when addr is not an address). */
static void text_sockaddr(const char *addr, const char *port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    unsigned p = port && *port ? (unsigned)strtoul(port, NULL, 10) : 0;
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, addr, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
    } else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
    }
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t size)
{
    out[0] = 0;
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)size);
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)size);
}

static unsigned sockaddr_portnum(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static void sockaddr_port(const struct sockaddr_storage *ss, char *out, size_t size)
{
    snprintf(out, size, "%u", sockaddr_portnum(ss));
}

/* XCLIENT: an authorized proxy or test tool replaces the client's
 * identity for everything that follows (restrictions, logs, Received:,
 * the queue file).  The session then starts over with a new greeting,
 * as Postfix's does; HELO and PROTO survive only when XCLIENT gave them.
 * The names are taken as given: no DNS lookup is repeated. */
static int cmd_xclient(session_t *s, char *arg)
{
    if (!x_permitted(s, "XCLIENT", arg, s->sv->xclient_hosts, "smtpd_authorized_xclient_hosts"))
        return -1;
    xattrs_t *a = xmalloc(sizeof *a);
    buf_t r = BUF_INIT;
    if (xattr_parse(XCMD_XCLIENT, arg, a, &r) != 0) {
        reply_error(s, "%s", buf_cstr(&r));
        buf_free(&r);
        free(a);
        return -1;
    }
    buf_free(&r);
#define GIVEN(id) (a->given & (1u << (id)))
    char before[sizeof s->client];
    str_copy(before, s->client, sizeof before);
    if (GIVEN(XA_NAME)) {
        str_copy(s->name, XAVAIL(a, XA_NAME) ? a->value[XA_NAME] : "unknown", sizeof s->name);
        s->name_code = s->forward_code = a->status[XA_NAME];
        if (!GIVEN(XA_REVERSE_NAME)) {
            /* A verified name is its own PTR name. */
            str_copy(s->reverse, s->name, sizeof s->reverse);
            s->reverse_code = s->name_code;
        }
    }
    if (GIVEN(XA_REVERSE_NAME)) {
        str_copy(s->reverse, XAVAIL(a, XA_REVERSE_NAME) ? a->value[XA_REVERSE_NAME] : "unknown",
                 sizeof s->reverse);
        s->reverse_code = a->status[XA_REVERSE_NAME];
    }
    if (GIVEN(XA_ADDR) || GIVEN(XA_PORT)) {
        char port[8];
        sockaddr_port(&s->peer, port, sizeof port);
        if (GIVEN(XA_PORT))
            str_copy(port, XAVAIL(a, XA_PORT) ? a->value[XA_PORT] : "0", sizeof port);
        if (GIVEN(XA_ADDR)) {
            /* the connection now counts for the client XCLIENT names */
            if (s->counted)
                anvil_conn_close(s->sv->svc->name, s->addr);
            str_copy(s->addr, XAVAIL(a, XA_ADDR) ? a->value[XA_ADDR] : "unknown", sizeof s->addr);
            if (s->counted)
                anvil_conn_open(s->sv->svc->name, s->addr);
        }
        text_sockaddr(s->addr, port, &s->peer);
    }
    if (GIVEN(XA_DESTADDR) || GIVEN(XA_DESTPORT)) {
        char addr[INET6_ADDRSTRLEN], port[8];
        sockaddr_port(&s->local, port, sizeof port);
        sockaddr_text(&s->local, addr, sizeof addr);
        if (GIVEN(XA_DESTPORT))
            str_copy(port, XAVAIL(a, XA_DESTPORT) ? a->value[XA_DESTPORT] : "0", sizeof port);
        if (GIVEN(XA_DESTADDR))
            str_copy(addr, XAVAIL(a, XA_DESTADDR) ? a->value[XA_DESTADDR] : "", sizeof addr);
        text_sockaddr(addr, port, &s->local);
    }
    if (GIVEN(XA_LOGIN)) {
        xfree(&s->login);
        if (XAVAIL(a, XA_LOGIN))
            s->login = xstrdup(a->value[XA_LOGIN]);
    }
    snprintf(s->client, sizeof s->client, "%s[%s]", s->name, s->addr);
    log_info("smtpd", "xclient from %s: client=%s%s%s", before, s->client, s->login ? ", login=" : "",
             s->login ? s->login : "");

    /* Start over, as a new session would (Postfix: the greeting stage). */
    reset_transaction(s);
    xfree(&s->helo);
    if (GIVEN(XA_HELO) && XAVAIL(a, XA_HELO))
        s->helo = xstrdup(a->value[XA_HELO]);
    s->esmtp = GIVEN(XA_PROTO) && XAVAIL(a, XA_PROTO) && strcmp(a->value[XA_PROTO], "ESMTP") == 0;
    xfree(&s->access_denied);
    xfree(&s->dip_client);
    xfree(&s->dip_helo);
#undef GIVEN
    free(a);
    prefetch(s);   /* the lists about the new address and names */
    greet_policy(s);
    return 0;
}

/* The AUTH mechanisms to announce to this client, or NULL: AUTH is on,
 * the session is encrypted or smtpd_tls_auth_only = no, and the client
 * is not in smtpd_sasl_exceptions_networks. */
static const char *auth_offer(session_t *s)
{
    if (!s->sv->sasl || (!s->ssl && param_bool(s->p, PARAM_smtpd_tls_auth_only)))
        return NULL;
    if (xauth(s, s->sv->sasl_exceptions, "smtpd_sasl_exceptions_networks") != 0)
        return NULL;   /* listed (or the list failed: do not offer) */
    const char *m = sasl_server_mechanisms(s->sv->sasl, s->ssl != NULL);
    return *m ? m : NULL;
}

static int cmd_helo_common(session_t *s, char *arg, bool esmtp)
{
    char *name = arg;
    while (*name == ' ')
        name++;
    char *end = name;
    while (*end && *end != ' ')
        end++;
    *end = 0;
    if (!*name) {
        reply_error(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return -1;
    }
    if (strlen(name) > 255)
        name[255] = 0;
    unsigned sleep_s = 0;
    if (!delay_reject(s)) {
        pstate_t st;
        fill_pstate(s, &st);
        st.helo = name;
        st.sender = NULL;
        st.protocol = esmtp ? "ESMTP" : "SMTP";
        vstatus_t vs = session_policy(s, PCMD_HELO, &st);
        if (vs == V_PENDING)
            return CMD_PENDING;
        if (vs != V_PERMIT) {
            policy_refuse(s, &st, esmtp ? "EHLO" : "HELO", NULL, NULL, name);
            return -1;
        }
        xfree(&s->dip_helo);
        if (s->v.postponed.len)
            s->dip_helo = xstrdup(buf_cstr(&s->v.postponed));
        sleep_s = s->v.sleep;
    }
    unsigned which = 0;
    if (esmtp) {
        /* XCLIENT and XFORWARD are announced to the clients allowed to use them. */
        int xc = xauth(s, s->sv->xclient_hosts, "smtpd_authorized_xclient_hosts");
        int xf = xc < 0 ? 0 : xauth(s, s->sv->xforward_hosts, "smtpd_authorized_xforward_hosts");
        if (xc < 0 || xf < 0) {
            local_data_error(s, "EHLO feature", xc < 0 ? "XCLIENT" : "XFORWARD");
            return -1;
        }
        which = (xc ? EHLO_XCLIENT : 0) | (xf ? EHLO_XFORWARD : 0);
        if (s->sv->tls && !s->ssl)
            which |= EHLO_STARTTLS;
    }
    reset_transaction(s);
    free(s->helo);
    s->helo = xstrdup(name);
    s->esmtp = esmtp;
    prefetch(s);   /* the HELO name */
    const char *mechs = esmtp ? auth_offer(s) : NULL;
    if (mechs) {
        char *r = smtpd_ehlo_build(s->p, s->sv->myhostname, which, mechs);
        send_text(s, r, false, sleep_s);
        free(r);
    } else if (esmtp)
        send_text(s, s->sv->ehlo_replies[which], false, sleep_s);
    else
        reply(s, "250 %s", s->sv->myhostname);
    return 0;
}

static int cmd_helo(session_t *s, char *arg) { return cmd_helo_common(s, arg, false); }
static int cmd_ehlo(session_t *s, char *arg) { return cmd_helo_common(s, arg, true); }

/* Split "KEY=VALUE KEY ..." parameters; returns the next one or NULL. */
static char *next_param(char **cursor, char **value)
{
    char *p = *cursor;
    while (*p == ' ')
        p++;
    if (!*p)
        return NULL;
    char *key = p;
    while (*p && *p != ' ')
        p++;
    if (*p)
        *p++ = 0;
    *cursor = p;
    char *eq = strchr(key, '=');
    *value = NULL;
    if (eq) {
        *eq = 0;
        *value = eq + 1;
    }
    return key;
}

static int cmd_mail(session_t *s, char *arg)
{
    if (param_bool(s->p, PARAM_smtpd_helo_required) && !s->helo) {
        reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return -1;
    }
    if (s->in_mail) {
        reply_error(s, "503 5.5.1 Error: nested MAIL command");
        return -1;
    }
    if (!str_istarts(arg, "FROM:")) {
        reply_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return -1;
    }
    const char *rest, *why;
    addr_t a;
    if (addr_parse_path(arg + 5, ADDR_ALLOW_NULL | ADDR_UTF8, true, &a, &rest, &why) != 0) {
        reply_error(s, "501 %s", why);
        return -1;
    }
    char *params = xstrdup(rest), *cursor = params, *key, *val;
    bool utf8 = false;
    char body[12] = "";
    char *auth = NULL;
    int rc = 0;
    long long limit = param_int(s->p, PARAM_message_size_limit);
    s->size_decl = 0;
    while (rc == 0 && (key = next_param(&cursor, &val))) {
        if (str_ieq(key, "SIZE")) {
            char *end;
            errno = 0;
            unsigned long long n = val ? strtoull(val, &end, 10) : 0;
            if (!val || !*val || *end || errno || !isdigit((unsigned char)*val)) {
                reply_error(s, "501 5.5.4 Bad message size syntax");
                rc = -1;
            } else if (limit > 0 && n > (unsigned long long)limit) {
                reply_error(s, "552 5.3.4 Message size exceeds fixed limit");
                rc = -1;
            } else {
                s->size_decl = n;
            }
        } else if (str_ieq(key, "BODY")) {
            if (val && (str_ieq(val, "8BITMIME") || str_ieq(val, "7BIT"))) {
                str_copy(body, val, sizeof body);
                str_lower(body);
            } else {
                reply_error(s, "501 5.5.4 Bad message body type");
                rc = -1;
            }
        } else if (str_ieq(key, "SMTPUTF8") && !val && param_bool(s->p, PARAM_smtputf8_enable)) {
            utf8 = true;
        } else if (str_ieq(key, "AUTH") && s->sv->sasl) {
            /* RFC 4954 5: the original submitter, xtext; it means
             * something only from an authenticated client (ignored
             * otherwise, as the RFC says). */
            char dec[512];
            if (!val || !*val || xtext_decode(val, dec, sizeof dec) != 0) {
                reply_error(s, "501 5.5.4 Bad AUTH parameter syntax");
                rc = -1;
            } else if (s->sasl_user) {
                free(auth);
                auth = xstrdup(dec);
            }
        } else {
            reply_error(s, "555 5.5.4 Unsupported option: %s", key);
            rc = -1;
        }
    }
    free(params);
    if (rc == 0 && a.is_utf8 && !utf8) {
        reply_error(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
        rc = -1;
    }
    if (rc != 0) {
        addr_free(&a);
        free(auth);
        return rc;
    }
    unsigned sleep_s = 0;
    {
        /* with smtpd_delay_reject only the limits run now (message rate) */
        pstate_t st;
        fill_pstate(s, &st);
        st.sender = a.full;
        st.sasl_sender = auth;
        vstatus_t vs = session_policy(s, PCMD_MAIL, &st);
        if (vs == V_PENDING) {
            addr_free(&a);
            free(auth);
            return CMD_PENDING;
        }
        if (vs != V_PERMIT) {
            policy_refuse(s, &st, "MAIL", a.full, NULL, s->helo);
            addr_free(&a);
            free(auth);
            return -1;
        }
        sleep_s = s->v.sleep;
    }
    s->sender = a;
    s->in_mail = true;
    s->sasl_sender = auth;
    s->smtputf8 = utf8;
    str_copy(s->body_type, body[0] == '8' ? "8BITMIME" : body[0] ? "7BIT" : "", sizeof s->body_type);
    s->arrival = now_usec();
    if (!delay_reject(s)) {
        take_actions(s);
        if (s->v.postponed.len)
            s->dip_sender = xstrdup(buf_cstr(&s->v.postponed));
    }
    prefetch(s);   /* the sender's domain */
    send_text(s, "250 2.1.0 Ok", false, sleep_s);
    return 0;
}

static int cmd_rcpt(session_t *s, char *arg)
{
    if (!s->in_mail) {
        reply_error(s, "503 5.5.1 Error: need MAIL command");
        return -1;
    }
    if (!str_istarts(arg, "TO:")) {
        reply_error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
        return -1;
    }
    const char *rest, *why;
    addr_t a;
    if (addr_parse_path(arg + 3, ADDR_UTF8, false, &a, &rest, &why) != 0) {
        reply_error(s, "501 %s", why);
        return -1;
    }
    int rc = 0;
    while (*rest == ' ')
        rest++;
    if (*rest) {
        char *params = xstrdup(rest), *cursor = params, *val;
        char *key = next_param(&cursor, &val);
        reply_error(s, "555 5.5.4 Unsupported option: %s", key ? key : "");
        free(params);
        rc = -1;
    } else if (a.is_utf8 && !s->smtputf8) {
        reply_error(s, "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
        rc = -1;
    } else if (s->nrcpt >= (size_t)param_int(s->p, PARAM_smtpd_recipient_limit)) {
        reply_error(s, "452 4.5.3 Error: too many recipients");
        rc = -1;
    }
    if (rc != 0) {
        addr_free(&a);
        return rc;
    }
    /* Postfix: a bare <postmaster> is exempt from every restriction. */
    bool postmaster = !a.domain[0] && str_ieq(a.full, "postmaster");
    if (!a.domain[0]) {
        /* RFC 5321 4.5.1: <postmaster> (and any bare local part) is ours. */
        const char *dom = policy_bare_domain(s->sv->policy, param_str(s->p, PARAM_myorigin));
        if (dom) {
            buf_t full = BUF_INIT;
            buf_printf(&full, "%s@%s", a.full, dom);
            free(a.full);
            a.full = buf_steal(&full);
            free(a.domain);
            a.domain = xstrdup(dom);
            str_lower(a.domain);
        }
    }
    pstate_t st;
    fill_pstate(s, &st);
    st.recipient = a.full;
    const char *dip = s->dip_client ? s->dip_client : s->dip_helo ? s->dip_helo : s->dip_sender;
    /* Quiet: the engine's lines are logged once the queue ID exists. */
    vstatus_t vs = policy_rcpt(s->sv->policy, &st, postmaster, s->discard, delay_reject(s) ? NULL : dip, &s->v, NULL);
    if (vs == V_PENDING) {
        addr_free(&a);
        return CMD_PENDING;
    }
    if (vs != V_PERMIT) {
        log_policy_lines(s, &s->v);
        policy_refuse(s, &st, "RCPT", s->sender.full, a.full, s->helo);
        addr_free(&a);
        return -1;
    }
    take_actions(s);
    if (!s->qid[0]) {
        spool_new_queue_id(server_spool(s->srv), s->qid);
        log_client(s);
    }
    log_policy_lines(s, &s->v);   /* now that the queue ID exists */
    s->rcpts = xrealloc(s->rcpts, (s->nrcpt + 1) * sizeof *s->rcpts);
    s->rcpts[s->nrcpt++] = a.full;
    a.full = NULL;
    addr_free(&a);
    send_text(s, "250 2.1.5 Ok", false, s->v.sleep);
    return 0;
}

/* The client the queue file and the Received: header name: the real one,
 * or what XFORWARD said.  addr NULL: a forwarded local submission
 * (XFORWARD ADDR=[UNAVAILABLE]), whose other attributes are ignored. */
typedef struct origin {
    const char *name, *addr, *helo, *proto;
} origin_t;

static origin_t message_origin(const session_t *s)
{
    /* RFC 3848: ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both) */
    static const char *const esmtp[4] = {"ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"};
    const char *proto = s->esmtp ? esmtp[(s->tls ? 1 : 0) + (s->sasl_user ? 2 : 0)] : proto_name(s);
    origin_t o = {s->name, s->addr, s->helo, proto};
    if (!s->xfwd)
        return o;
    const xattrs_t *f = &s->fwd;
    o.proto = XAVAIL(f, XA_PROTO) ? f->value[XA_PROTO] : "unknown";
    if (!XAVAIL(f, XA_ADDR)) {
        o.name = "unknown";
        o.addr = NULL;
        o.helo = NULL;
        return o;
    }
    o.name = XAVAIL(f, XA_NAME) ? f->value[XA_NAME] : "unknown";
    o.addr = f->value[XA_ADDR];
    o.helo = XAVAIL(f, XA_HELO) ? f->value[XA_HELO] : NULL;
    return o;
}

/* RFC 5322 date for Received: */
static void rfc5322_date(char *out, size_t size)
{
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, size, "%a, %d %b %Y %H:%M:%S %z (%Z)", &tm);
}

static void scan_done(void *arg, scan_status st, const char *detail);
static void finish_message(session_t *s);

/* The content stage's output → the queue file and the scanner. */
static void content_out(session_t *s)
{
    if (!s->cout.len)
        return;
    spool_writer_append(s->writer, s->cout.data, s->cout.len);
    if (s->scan) {
        long long limit = s->sv->scan.size_limit;
        if (limit > 0 && s->scan_sent + s->cout.len > (unsigned long long)limit) {
            /* Let clamd go now rather than at the end of the message. */
            scan_cancel(s->scan);
            s->scan = NULL;
            s->scan_skipped = true;
        } else {
            scan_write(s->scan, s->cout.data, s->cout.len);
            s->scan_sent += s->cout.len;
        }
    }
    buf_reset(&s->cout);
}

static void emit(session_t *s, const char *p, size_t n)
{
    content_feed(s->content, p, n, &s->cout);
    content_out(s);
}

static void start_message(session_t *s, data_mode mode)
{
    origin_t o = message_origin(s);
    envelope_t env = {
        .queue_id = s->qid,
        .arrival_usec = s->arrival,
        .client_name = o.name,
        .client_addr = o.addr ? o.addr : "unknown",
        .helo = o.helo ? o.helo : "",
        .protocol = o.proto,
        .sender = s->sender.full,
        .rcpts = (const char *const *)s->rcpts,
        .nrcpt = s->nrcpt,
        .body_type = s->body_type,
        .smtputf8 = s->smtputf8,
    };
    s->writer = spool_writer_new(server_spool(s->srv), &env);
    data_dec_init(&s->dec, mode);
    s->msg_size = 0;
    s->too_big = false;

    /* Everything that goes into the queue file passes the content stage,
     * our own headers too: header_checks see them, as Postfix's cleanup
     * sees smtpd's Received:. */
    content_env_t cenv = {
        .queue_id = s->qid,
        .client = s->client,
        .sender = s->sender.full,
        .rcpt = s->rcpts[0],
        .proto = o.proto,
        .helo = s->helo ? s->helo : "",
    };
    s->content = content_new(s->sv->content, &cenv,
                             (s->sv->receive_override & RO_NO_HEADER_BODY) ? CONTENT_NO_CHECKS : 0);
    /* no_milters: the scanner is moat's milter, and a re-injection port
     * gets mail that was scanned on its way in. */
    if (s->sv->scan.scanner && !(s->sv->receive_override & RO_NO_MILTERS))
        s->scan = scan_start(s->sv->scan.scanner, server_base(s->srv), scan_done, s);

    /* PREPEND actions go above our Received: header, as in Postfix. */
    if (s->prepend.len)
        emit(s, s->prepend.data, s->prepend.len);

    char date[64];
    rfc5322_date(date, sizeof date);
    buf_t r = BUF_INIT;
    if (o.addr) {
        buf_printf(&r, "Received: from %s (%s [%s])\n", o.helo ? o.helo : o.name, o.name, o.addr);
        if (s->tls && param_bool(s->p, PARAM_smtpd_tls_received_header)) {
            buf_puts(&r, "\t");
            tls_info_received(s->tls, param_bool(s->p, PARAM_smtpd_tls_ask_ccert), &r);
            buf_puts(&r, "\n");
        }
        if (s->sasl_user && param_bool(s->p, PARAM_smtpd_sasl_authenticated_header))
            buf_printf(&r, "\t(Authenticated sender: %s)\n", s->sasl_user);
        buf_puts(&r, "\tby ");
    } else {
        buf_puts(&r, "Received: by ");   /* a forwarded local submission has no "from" */
    }
    buf_printf(&r, "%s (%s) with %s%s id %s", s->sv->myhostname, param_str(s->p, PARAM_mail_name),
               s->smtputf8 ? "UTF8" : "", s->smtputf8 ? "SMTP" : o.proto, s->qid);
    if (s->nrcpt == 1)
        buf_printf(&r, "\n\tfor <%s>; %s\n", s->rcpts[0], date);
    else
        buf_printf(&r, ";\n\t%s\n", date);
    emit(s, r.data, r.len);
    buf_free(&r);
}

/* Decoded content → size check, the content stage, spool and scanner. */
static void take_chunk(session_t *s)
{
    if (!s->chunk.len)
        return;
    long long limit = param_int(s->p, PARAM_message_size_limit);
    s->msg_size += s->chunk.len;
    if (limit > 0 && s->msg_size > (size_t)limit)
        s->too_big = true;
    if (!s->too_big && s->writer)
        emit(s, s->chunk.data, s->chunk.len);
    buf_reset(&s->chunk);
}

/* smtpd_forbid_bare_newline_exclusions: a table that fails counts as
 * "not excluded", so reject mode still applies (fail closed). */
static bool bare_nl_excluded(session_t *s)
{
    return addrlist_match(s->sv->bare_nl_exclusions, s->addr, NULL) == AL_MATCH;
}

static bool bare_newline_rejected(session_t *s)
{
    if (s->sv->bare_nl_mode != BARE_NL_REJECT)
        return false;
    if (s->dec.bare_lf == 0 && s->dec.bare_cr == 0)
        return false;
    return !bare_nl_excluded(s);
}

static void commit_done(void *arg, bool ok, const char *errtext)
{
    session_t *s = arg;
    s->writer = NULL;
    s->busy = false;
    if (ok) {
        const char *mid = s->content ? content_message_id(s->content) : NULL;
        log_info("cleanup", "%s: message-id=<%s>", s->qid, mid ? mid : "");
        /* A held message waits in hold/ until someone releases it. */
        if (!s->hold)
            qmgr_enqueue(server_qmgr(s->srv), s->qid);
        pstate_t st;
        fill_pstate(s, &st);
        policy_record_correspondents(s->sv->policy, &st, (const char *const *)s->rcpts, s->nrcpt);
        reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
        s->ok[s->bdat_used ? C_BDAT : C_DATA]++;
    } else {
        log_warn("cleanup", "%s: queue file write error: %s", s->qid, errtext ? errtext : "unknown");
        reply(s, "451 4.3.0 Error: queue file write error");
    }
    reset_transaction(s);
    if (s->closing) {
        reap_later(s);
        return;
    }
    if (s->shutdown) {
        session_shutdown((struct session *)s, false);
        return;
    }
    process_input(s);
}

/* The message actions go into the queue file (docs/queue.md): BCC
 * addresses that are already recipients are dropped, as Postfix's cleanup
 * drops duplicate recipients. */
static void commit_with_actions(session_t *s)
{
    const char **bcc = NULL;
    size_t nbcc = 0;
    char *list = s->bcc.len ? xstrdup(buf_cstr(&s->bcc)) : NULL;
    for (char *p = list, *nl; p && *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        bool dup = false;
        for (size_t i = 0; i < s->nrcpt && !dup; i++)
            dup = str_ieq(s->rcpts[i], p);
        for (size_t i = 0; i < nbcc && !dup; i++)
            dup = str_ieq(bcc[i], p);
        if (!dup) {
            bcc = xrealloc(bcc, (nbcc + 1) * sizeof *bcc);
            bcc[nbcc++] = p;
        }
    }
    spool_actions_t act = {
        .hold = s->hold,
        /* A FILTER action wins over the service's content_filter, as in
         * Postfix; "-o content_filter=" (empty) records nothing. */
        .filter = s->filter ? s->filter : s->sv->content_filter,
        .redirect = s->redirect,
        .bcc = bcc,
        .nbcc = nbcc,
        .headers = s->top.len ? buf_cstr(&s->top) : NULL,
    };
    spool_writer_actions(s->writer, &act);
    free(bcc);
    free(list);
    s->busy = true;
    spool_writer_commit(s->writer, commit_done, s);
}

/* "QID: reject: virus NAME from host[addr]; from=<s> to=<r> proto=P
 * helo=<h>: text", in the form of the content stage's lines. */
static void log_virus(session_t *s, const char *verb, const char *name, const char *text)
{
    origin_t o = message_origin(s);
    log_info("cleanup", "%s: %s: virus %s from %s; from=<%s> to=<%s> proto=%s helo=<%s>: %s", s->qid, verb, name,
             s->client, s->sender.full, s->nrcpt ? s->rcpts[0] : "", o.proto, s->helo ? s->helo : "", text);
}

/* The content stage's verdict, once.  1: decided (a reply was sent, or
 * the scanner's verdict is awaited); 0: go on. */
static int judge_content(session_t *s)
{
    if (s->content_judged)
        return 0;
    s->content_judged = true;
    const content_verdict_t *cv = content_verdict(s->content);
    if (cv->outcome != CV_PASS) {
        /* The content stage logged the reject line, as Postfix's cleanup does. */
        reply_error(s, "%s", buf_cstr(&cv->reply));
        reset_transaction(s);
        return 1;
    }
    if (cv->discard)
        s->discard = true;
    if (cv->hold)
        s->hold = true;
    /* Header and body checks come after the access tables: their
     * REDIRECT and FILTER win, as in Postfix. */
    if (cv->redirect) {
        free(s->redirect);
        s->redirect = xstrdup(cv->redirect);
    }
    if (cv->filter) {
        free(s->filter);
        s->filter = xstrdup(cv->filter);
    }
    buf_append(&s->bcc, cv->bcc.data, cv->bcc.len);
    if (s->scan_skipped)
        log_info("cleanup", "%s: virus scan skipped: message larger than content_scanner_size_limit (%lld bytes)",
                 s->qid, s->sv->scan.size_limit);
    if (!s->scan)
        return 0;
    if (s->discard) {
        scan_cancel(s->scan);
        s->scan = NULL;
        return 0;
    }
    s->scan_wait = true;
    s->busy = true;
    scan_finish(s->scan);
    return 1;
}

/* The scanner's verdict, once it is there.  1: replied; 0: go on. */
static int judge_scan(session_t *s)
{
    int r = s->scan_result;
    if (r < 0)
        return 0;
    s->scan_result = -1;
    const char *d = s->scan_detail ? s->scan_detail : "";
    if (r == SCAN_FAILED)
        log_warn("cleanup", "%s: virus scanner %s failed: %s", s->qid, scanner_name(s->sv->scan.scanner), d);
    scan_decision_t dec = {0};
    scan_decide(&s->sv->scan, (scan_status)r, d, &dec);
    if (dec.verb)
        log_virus(s, dec.verb, d, dec.note);
    s->hold |= dec.hold;
    s->discard |= dec.discard;
    buf_append(&s->top, dec.header.data, dec.header.len);
    int rc = 0;
    if (dec.refuse) {
        reply_error(s, "%s", buf_cstr(&dec.reply));
        reset_transaction(s);
        rc = 1;
    }
    scan_decision_free(&dec);
    return rc;
}

static void scan_done(void *arg, scan_status st, const char *detail)
{
    session_t *s = arg;
    s->scan = NULL;   /* it frees itself when this returns */
    s->scan_wait = false;
    if (s->closing || s->reaping)
        return;
    s->busy = false;
    s->scan_result = (int)st;
    free(s->scan_detail);
    s->scan_detail = xstrdup(detail ? detail : "");
    finish_message(s);
    if (!s->busy && !s->closing)
        process_input(s);
}

/* The end of DATA or BDAT LAST: reject, or commit and answer when durable.
 * It runs again after a wait (the scanner, DNS for the end-of-data
 * restrictions); every step below runs once. */
static void finish_message(session_t *s)
{
    s->state = ST_CMD;
    if (!s->content_judged && !s->too_big) {
        content_finish(s->content, &s->cout);
        content_out(s);
    }
    if (s->too_big) {
        log_reject(s, "END-OF-MESSAGE", "552 5.3.4 Message size exceeds fixed limit", NULL);
        reply_error(s, "552 5.3.4 Message size exceeds fixed limit");
        reset_transaction(s);
        return;
    }
    if (bare_newline_rejected(s)) {
        long long code = param_int(s->p, PARAM_smtpd_forbid_bare_newline_reject_code);
        buf_t t = BUF_INIT;
        buf_printf(&t, "%lld 5.5.2 Error: bare <%s> received", code, s->dec.bare_lf ? "LF" : "CR");
        log_reject(s, "END-OF-MESSAGE", buf_cstr(&t), NULL);
        reply_error(s, "%s", buf_cstr(&t));
        buf_free(&t);
        reset_transaction(s);
        return;
    }
    if (judge_content(s) || judge_scan(s))
        return;
    unsigned sleep_s = 0;
    if (!s->discard) {
        pstate_t st;
        fill_pstate(s, &st);
        st.recipient = s->nrcpt == 1 ? s->rcpts[0] : NULL;
        vstatus_t vs = session_policy(s, PCMD_EOD, &st);
        if (vs == V_PENDING) {
            wait_dns(s, W_EOD);
            return;
        }
        if (vs != V_PERMIT) {
            policy_refuse(s, &st, "END-OF-MESSAGE", s->sender.full, st.recipient, s->helo);
            reset_transaction(s);
            return;
        }
        take_actions(s);   /* end-of-data actions count too (PREPEND is refused there) */
        sleep_s = s->v.sleep;
    }
    if (s->discard) {
        /* DISCARD: the client hears success, nothing is queued. */
        spool_writer_abort(s->writer);
        s->writer = NULL;
        log_info("smtpd", "%s: discard: END-OF-MESSAGE from %s: message dropped by a DISCARD action; from=<%s>",
                 s->qid, s->client, s->sender.full);
        s->ok[s->bdat_used ? C_BDAT : C_DATA]++;
        buf_t t = BUF_INIT;
        buf_printf(&t, "250 2.0.0 Ok: queued as %s", s->qid);
        send_text(s, buf_cstr(&t), false, sleep_s);
        buf_free(&t);
        reset_transaction(s);
        if (s->shutdown)
            session_shutdown((struct session *)s, false);
        return;
    }
    commit_with_actions(s);
}

static int cmd_data(session_t *s, char *arg)
{
    if (*arg) {
        reply_error(s, "501 5.5.4 Syntax: DATA");
        return -1;
    }
    if (!s->in_mail) {
        reply_error(s, "503 5.5.1 Error: need RCPT command");   /* Postfix's text */
        return -1;
    }
    if (s->bdat_used) {
        reply_error(s, "503 5.5.1 Error: DATA after BDAT");
        return -1;
    }
    if (!s->nrcpt) {
        reply_error(s, "503 5.5.1 Error: need RCPT command");
        return -1;
    }
    unsigned sleep_s = 0;
    if (!s->discard) {
        pstate_t st;
        fill_pstate(s, &st);
        st.recipient = s->nrcpt == 1 ? s->rcpts[0] : NULL;
        vstatus_t vs = session_policy(s, PCMD_DATA, &st);
        if (vs == V_PENDING)
            return CMD_PENDING;
        if (vs != V_PERMIT) {
            policy_refuse(s, &st, "DATA", s->sender.full, st.recipient, s->helo);
            return -1;
        }
        take_actions(s);
        sleep_s = s->v.sleep;
    }
    start_message(s, DATA_MODE_DOT);
    s->state = ST_DATA;
    send_text(s, "354 End data with <CR><LF>.<CR><LF>", false, sleep_s);
    return 1;   /* counted when the message is queued */
}

static int cmd_bdat(session_t *s, char *arg)
{
    char *p = arg, *end;
    bool last = false;
    if (!isdigit((unsigned char)*p) || strlen(p) > 40) {
        reply(s, "501 5.5.4 Syntax: BDAT count [LAST]");
        session_close(s);
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(p, &end, 10);
    while (*end == ' ')
        end++;
    if (str_ieq(end, "LAST"))
        last = true;
    else if (*end || errno) {
        reply(s, "501 5.5.4 Syntax: BDAT count [LAST]");
        session_close(s);
        return -1;
    }
    s->state = ST_BDAT;
    s->bdat_left = n;
    s->bdat_size = n;
    s->bdat_last = last;
    s->bdat_error = NULL;
    if (!s->nrcpt)
        s->bdat_error = "503 5.5.1 Error: need RCPT command";
    else if (s->bdat_discard)
        s->bdat_error = "503 5.5.1 Error: BDAT after failed BDAT";
    if (!s->bdat_error && !s->bdat_used && !s->discard) {
        /* smtpd_data_restrictions apply to the first chunk, as to DATA. */
        pstate_t st;
        fill_pstate(s, &st);
        st.recipient = s->nrcpt == 1 ? s->rcpts[0] : NULL;
        vstatus_t vs = session_policy(s, PCMD_DATA, &st);
        if (vs == V_PENDING)
            return CMD_PENDING;
        if (vs != V_PERMIT) {
            log_event(s, "reject", "BDAT", buf_cstr(&s->v.reply), s->sender.full, st.recipient, s->helo, &s->v);
            policy_reply_text(s->sv->policy, &s->v, &st, &s->bdat_reply);
            s->bdat_error = buf_cstr(&s->bdat_reply);
        } else {
            take_actions(s);
        }
    }
    if (s->bdat_error)
        return 1;   /* the reply follows the chunk */
    if (!s->bdat_used) {
        s->bdat_used = true;
        start_message(s, DATA_MODE_BDAT);
    }
    return 1;
}

static int cmd_rset(session_t *s, char *arg)
{
    reset_transaction(s);
    reply(s, "250 2.0.0 Ok");
    return 0;
}

static int cmd_noop(session_t *s, char *arg)
{
    reply(s, "250 2.0.0 Ok");
    return 0;
}

static int cmd_vrfy(session_t *s, char *arg)
{
    if (param_bool(s->p, PARAM_disable_vrfy_command)) {
        reply_error(s, "502 5.5.1 VRFY command is disabled");
        return -1;
    }
    while (*arg == ' ')
        arg++;
    if (!*arg) {
        reply_error(s, "501 5.5.4 Syntax: VRFY address");
        return -1;
    }
    const char *rest, *why;
    addr_t a;
    if (addr_parse_path(arg, ADDR_UTF8, false, &a, &rest, &why) != 0) {
        reply_error(s, "501 %s", why);
        return -1;
    }
    reply(s, "252 2.0.0 %s", a.full);
    addr_free(&a);
    return 0;
}

static int cmd_help(session_t *s, char *arg)
{
    reply(s, "214 2.0.0 Commands: HELO EHLO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT");
    return 0;
}

static int cmd_starttls(session_t *s, char *arg)
{
    if (*arg) {
        reply_error(s, "501 5.5.4 Syntax: STARTTLS");
        return -1;
    }
    if (s->ssl) {
        reply_error(s, "554 5.5.1 Error: TLS already active");
        return -1;
    }
    if (!s->sv->tls) {
        reply_error(s, "502 5.5.1 Error: command not implemented");
        return -1;
    }
    if (s->in_mail) {
        reply_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return -1;
    }
    int rc = tls_rate_ok(s);
    if (rc != 1)
        return rc == CMD_PENDING ? CMD_PENDING : -1;
    reply(s, "220 2.0.0 Ready to start TLS");
    /* Read nothing more as plaintext; on_write starts the handshake once
     * the reply is out.  Counted when the handshake succeeds. */
    s->starttls_wait = true;
    s->busy = true;
    bufferevent_disable(s->bev, EV_READ);
    return 1;
}

/* ---------- AUTH (RFC 4954) ---------- */

static void auth_done(void *arg, const sasl_reply_t *r);

static int cmd_auth(session_t *s, char *arg)
{
    if (!s->sv->sasl) {
        reply_error(s, "503 5.5.1 Error: authentication not enabled");
        return -1;
    }
    if (!s->ssl && param_bool(s->p, PARAM_smtpd_tls_auth_only)) {
        reply_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return -1;
    }
    if (xauth(s, s->sv->sasl_exceptions, "smtpd_sasl_exceptions_networks") != 0) {
        reply_error(s, "503 5.5.1 Error: authentication not enabled");
        return -1;
    }
    if (!s->helo) {
        reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
        return -1;
    }
    if (s->sasl_user) {
        reply_error(s, "503 5.5.1 Error: already authenticated");
        return -1;
    }
    if (s->in_mail) {
        reply_error(s, "503 5.5.1 Error: MAIL transaction in progress");
        return -1;
    }
    char *mech = arg, *initial = arg;
    while (*initial && *initial != ' ')
        initial++;
    if (*initial)
        *initial++ = 0;
    while (*initial == ' ')
        initial++;
    if (!*mech || strchr(initial, ' ')) {
        reply_error(s, "501 5.5.4 Syntax: AUTH mechanism");
        return -1;
    }
    if (!sasl_server_has_mechanism(s->sv->sasl, mech, s->ssl != NULL)) {
        reply_error(s, "504 5.5.4 Unrecognized authentication type");
        return -1;
    }
    pstate_t st;
    fill_pstate(s, &st);
    vstatus_t vs = session_policy(s, PCMD_AUTH, &st);   /* smtpd_client_auth_rate_limit */
    if (vs == V_PENDING)
        return CMD_PENDING;
    if (vs != V_PERMIT) {
        log_warn("smtpd", "%s: AUTH refused: %s", s->client, buf_cstr(&s->v.reply));
        policy_refuse(s, &st, "AUTH", NULL, NULL, s->helo);
        return -1;
    }
    char laddr[INET6_ADDRSTRLEN];
    sockaddr_text(&s->local, laddr, sizeof laddr);
    sasl_peer_t peer = {.client_addr = s->addr,
                        .local_addr = laddr,
                        .client_port = sockaddr_portnum(&s->peer),
                        .local_port = sockaddr_portnum(&s->local),
                        .tls = s->ssl != NULL};
    str_copy(s->sasl_mech, mech, sizeof s->sasl_mech);
    for (char *m = s->sasl_mech; *m; m++)
        *m = (char)toupper((unsigned char)*m);
    s->state = ST_AUTH;
    s->busy = true;   /* until the backend answers (auth_done) */
    s->sasl = sasl_start(s->sv->sasl, s->sasl_mech, *initial ? initial : NULL, &peer, auth_done, s);
    return 1;   /* counted when it succeeds */
}

/* Postfix's failure line (fail2ban reads it): never a password, never a
 * response; the user name when the backend knows it. */
static void auth_log_failure(session_t *s, const sasl_reply_t *r)
{
    log_warn("smtpd", "%s: SASL %s authentication failed: %s%s%s", s->client, s->sasl_mech,
             r->reason && *r->reason ? r->reason : "authentication failure", r->user ? ", sasl_username=" : "",
             r->user ? r->user : "");
}

static void auth_done(void *arg, const sasl_reply_t *r)
{
    session_t *s = arg;
    s->busy = false;
    if (s->closing) {
        sasl_end(&s->sasl);
        return;
    }
    switch (r->status) {
    case SASL_CONTINUE:
        reply(s, "334 %s", r->challenge ? r->challenge : "");
        break;   /* ST_AUTH: the next line is the response */
    case SASL_OK:
        s->state = ST_CMD;
        sasl_end(&s->sasl);
        s->sasl_user = xstrdup(r->user ? r->user : "");
        s->sasl_method = xstrdup(s->sasl_mech);
        s->ok[C_AUTH]++;
        reply(s, "235 2.7.0 Authentication successful");
        break;
    case SASL_FAIL:
        s->state = ST_CMD;
        sasl_end(&s->sasl);
        auth_log_failure(s, r);
        reply_error(s, "535 5.7.8 Error: authentication failed: %s",
                    r->reason && *r->reason ? r->reason : "authentication failure");
        break;
    case SASL_TEMP:
        s->state = ST_CMD;
        sasl_end(&s->sasl);
        auth_log_failure(s, r);
        reply_error(s, "454 4.7.0 Temporary authentication failure: %s",
                    r->reason && *r->reason ? r->reason : "backend unavailable");
        break;
    case SASL_MALFORMED:
        s->state = ST_CMD;
        sasl_end(&s->sasl);
        auth_log_failure(s, r);
        reply_error(s, "501 5.5.2 Cannot decode response");
        break;
    }
    if (!s->busy)
        process_input(s);
}

/* A line of the client during an AUTH exchange: a response, or "*". */
static void auth_response(session_t *s, const char *line)
{
    if (strcmp(line, "*") == 0) {
        sasl_end(&s->sasl);
        s->state = ST_CMD;
        log_warn("smtpd", "%s: SASL %s authentication aborted", s->client, s->sasl_mech);
        reply_error(s, "501 5.7.0 Authentication aborted");
        return;
    }
    s->busy = true;
    sasl_step(s->sasl, line);
}

static int cmd_quit(session_t *s, char *arg)
{
    reply(s, "221 2.0.0 Bye");
    s->quit_sent = true;
    session_close(s);
    return 0;
}

static const struct command {
    const char *verb;
    int idx;
    int (*fn)(session_t *s, char *arg);
    bool junk;            /* counts toward smtpd_junk_command_limit */
    bool last_in_group;   /* RFC 2920: the client must wait for its reply */
} commands[] = {
    {"HELO", C_HELO, cmd_helo, false, true},
    {"EHLO", C_EHLO, cmd_ehlo, false, true},
    /* XCLIENT is answered with a new greeting: the client must wait for it. */
    {"XCLIENT", C_XCLIENT, cmd_xclient, false, true},
    {"XFORWARD", C_XFORWARD, cmd_xforward, false, false},
    /* After STARTTLS the client must wait: what it sent on is discarded. */
    {"STARTTLS", C_STARTTLS, cmd_starttls, false, true},
    {"AUTH", C_AUTH, cmd_auth, false, true},
    {"MAIL", C_MAIL, cmd_mail, false, false},
    {"RCPT", C_RCPT, cmd_rcpt, false, false},
    {"DATA", C_DATA, cmd_data, false, true},
    {"BDAT", C_BDAT, cmd_bdat, false, false},
    {"RSET", C_RSET, cmd_rset, true, false},
    {"NOOP", C_NOOP, cmd_noop, true, true},
    {"VRFY", C_VRFY, cmd_vrfy, true, true},
    {"HELP", C_HELP, cmd_help, true, true},
    {"QUIT", C_QUIT, cmd_quit, false, false},
};

static void run_command(session_t *s, char *line)
{
    char *verb = line, *arg = line;
    while (*arg && *arg != ' ')
        arg++;
    if (*arg)
        *arg++ = 0;
    while (*arg == ' ' || *arg == '\t')
        arg++;   /* Postfix splits on any run of white space */
    const struct command *c = NULL;
    for (size_t i = 0; i < ARRAY_LEN(commands); i++)
        if (str_ieq(verb, commands[i].verb))
            c = &commands[i];
    if (!c) {
        s->total[C_UNKNOWN]++;
        s->last_cmd = "UNKNOWN";
        if (policy_forbidden_command(s->sv->policy, verb)) {
            /* A web or proxy request, or a message sent without DATA: the
             * peer does not speak SMTP, so nothing it sends next matters.
             * Postfix logs the whole line (arguments rejoined), cut at 100. */
            if (arg > verb + strlen(verb))
                verb[strlen(verb)] = ' ';
            char shown[101];
            str_copy(shown, line, sizeof shown);
            for (char *p = shown; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                    *p = '?';
            log_warn("smtpd", "non-SMTP command from %s: %s", s->client, shown);
            reply(s, "221 2.7.0 Error: I can break rules, too. Goodbye.");
            s->quit_sent = true;
            session_close(s);
            return;
        }
        if (s->access_denied)
            reply_error(s, "503 5.7.0 Error: access denied for %s", s->client);
        else
            reply_error(s, "502 5.5.2 Error: command not recognized");
        return;
    }
    s->last_cmd = c->verb;
    s->total[c->idx]++;
    if (c->junk && ++s->junk > (unsigned)param_int(s->p, PARAM_smtpd_junk_command_limit))
        s->errors++;
    if (s->access_denied && c->idx != C_QUIT) {
        reply_error(s, "503 5.7.0 Error: access denied for %s", s->client);   /* RFC 5321 3.1 */
        return;
    }
    /* smtpd_tls_security_level = encrypt: only what leads to TLS before it. */
    if (s->sv->tls_required && !s->ssl && c->idx != C_HELO && c->idx != C_EHLO && c->idx != C_STARTTLS
        && c->idx != C_NOOP && c->idx != C_RSET && c->idx != C_QUIT && c->idx != C_XCLIENT
        && c->idx != C_XFORWARD) {
        reply_error(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    /* Postfix's SMTPD_FLAG_ILL_PIPELINING: sticky for the session. */
    if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0
        && (!s->esmtp || !s->sv->pipelining_offered || c->last_in_group))
        s->pipelined_early = true;
    if (pipelining_violation(s, c->verb, c->last_in_group))
        return;
    if (s->memo)
        dns_memo_clear(s->memo);   /* each command sees fresh answers */
    char *saved = c->idx <= C_BDAT ? xstrdup(arg) : NULL;   /* the handlers that may wait for the memo */
    int rc = c->fn(s, arg);
    if (rc == CMD_PENDING) {
        s->pend_cmd = c;
        s->pend_arg = saved;
        wait_dns(s, W_CMD);
        return;
    }
    free(saved);
    if (rc == 0)
        s->ok[c->idx]++;
}

/* The memo has answers: run again what waited for them. */
static void dns_wake(void *arg)
{
    session_t *s = arg;
    int what = s->waiting;
    if (s->reaping || what == W_NONE)
        return;   /* a prefetched answer nobody waits for */
    s->waiting = W_NONE;
    s->busy = false;
    switch (what) {
    case W_NAMES:
        client_names(s);
        break;
    case W_GREET:
        greet_policy(s);
        break;
    case W_TLS: {
        int rc = tls_rate_ok(s);
        if (rc == CMD_PENDING) {
            wait_dns(s, W_TLS);
            return;
        }
        if (rc == 1)
            tls_start(s);
        return;
    }
    case W_EOD:
        finish_message(s);
        break;
    case W_CMD: {
        const struct command *c = s->pend_cmd;
        char *line = xstrdup(s->pend_arg);
        int rc = c->fn(s, line);
        free(line);
        if (rc == CMD_PENDING) {
            wait_dns(s, W_CMD);
            return;
        }
        xfree(&s->pend_arg);
        if (rc == 0)
            s->ok[c->idx]++;
        break;
    }
    }
    if (!s->busy)
        process_input(s);
}

/* ---------- input ---------- */

/* Feed DATA content from the input buffer to the decoder. */
static void read_data(session_t *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (s->state == ST_DATA && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        bool done = false;
        size_t used = data_dec_feed(&s->dec, v.iov_base, v.iov_len, &s->chunk, &done);
        evbuffer_drain(in, used);
        take_chunk(s);
        if (done)
            finish_message(s);
    }
}

static void read_bdat(session_t *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    while (s->state == ST_BDAT && s->bdat_left > 0 && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = v.iov_len;
        if (n > s->bdat_left)
            n = (size_t)s->bdat_left;
        if (s->bdat_error) {
            evbuffer_drain(in, n);
        } else {
            bool done;
            data_dec_feed(&s->dec, v.iov_base, n, &s->chunk, &done);
            evbuffer_drain(in, n);
            take_chunk(s);
        }
        s->bdat_left -= n;
    }
    if (s->state != ST_BDAT || s->bdat_left > 0)
        return;
    s->state = ST_CMD;
    if (s->bdat_error) {
        reply_error(s, "%s", s->bdat_error);
        if (s->bdat_used)
            s->bdat_discard = true;
        return;
    }
    if (s->bdat_last) {
        data_dec_finish(&s->dec, &s->chunk);
        take_chunk(s);
        finish_message(s);
        return;
    }
    s->ok[C_BDAT]++;
    reply(s, "250 2.0.0 Ok: %llu bytes", s->bdat_size);
}

static void resume_after_backlog(evutil_socket_t fd, short what, void *arg)
{
    session_t *s = arg;
    s->busy = false;
    process_input(s);
}

/* One command line, or false when none is complete yet. */
static bool read_command(session_t *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    bool auth = s->state == ST_AUTH;
    size_t limit = (size_t)param_int(s->p, auth ? PARAM_smtpd_sasl_response_limit : PARAM_line_length_limit);
    struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
    if (lf.pos < 0) {
        size_t len = evbuffer_get_length(in);
        if (len > limit) {
            /* Over-long: discard what we have; reply when the line ends. */
            evbuffer_drain(in, len);
            s->skipping = true;
        }
        return false;
    }
    size_t linelen = (size_t)lf.pos;   /* without the LF */
    if (s->skipping || linelen > limit) {
        evbuffer_drain(in, linelen + 1);
        s->skipping = false;
        if (auth) {
            sasl_end(&s->sasl);
            s->state = ST_CMD;
            reply_error(s, "500 5.5.6 Authentication exchange line is too long");
            return true;
        }
        s->last_cmd = "UNKNOWN";
        reply_error(s, "500 5.5.2 Error: line too long");
        return true;
    }
    char *line = xmalloc(linelen + 1);
    evbuffer_remove(in, line, linelen + 1);
    line[linelen] = 0;
    bool bare_lf = !(linelen > 0 && line[linelen - 1] == '\r');
    if (!bare_lf)
        line[--linelen] = 0;
    if (bare_lf && s->sv->bare_nl_mode == BARE_NL_REJECT
        && !bare_nl_excluded(s)) {
        long long code = param_int(s->p, PARAM_smtpd_forbid_bare_newline_reject_code);
        log_info("smtpd", "disconnect: bare <LF> received from %s", s->client);
        reply(s, "%lld 5.5.2 Error: bare <LF> received", code);
        session_close(s);
        free(line);
        return true;
    }
    if (auth) {
        auth_response(s, line);
    } else if (memchr(line, 0, linelen)) {
        s->last_cmd = "UNKNOWN";
        reply_error(s, "500 5.5.2 Error: NUL character in command");
    } else {
        run_command(s, line);
    }
    free(line);
    return true;
}

static void process_input(session_t *s)
{
    while (!s->closing && !s->busy && s->bev) {
        if (s->errors >= (unsigned)param_int(s->p, PARAM_smtpd_hard_error_limit)) {
            log_info("smtpd", "too many errors after %s from %s", s->last_cmd, s->client);
            reply(s, "421 4.7.0 %s Error: too many errors", s->sv->myhostname);
            session_close(s);
            return;
        }
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > OUTPUT_HIGH_WATER) {
            s->paused = true;   /* on_write resumes us */
            return;
        }
        if ((s->writer && spool_writer_backlog(s->writer) > SPOOL_HIGH_WATER)
            || (s->scan && scan_backlog(s->scan) > SPOOL_HIGH_WATER)) {
            struct timeval tv = {0, 10000};
            s->busy = true;
            evtimer_del(s->timer);
            event_assign(s->timer, server_base(s->srv), -1, 0, resume_after_backlog, s);
            evtimer_add(s->timer, &tv);
            return;
        }
        size_t before = evbuffer_get_length(bufferevent_get_input(s->bev));
        int state = s->state;
        switch (s->state) {
        case ST_PROXY:
            if (!read_proxy(s))
                goto out;
            break;
        case ST_DATA:
            read_data(s);
            break;
        case ST_BDAT:
            read_bdat(s);
            break;
        case ST_TLS:
            goto out;   /* the handshake reads for itself */
        default:
            if (!read_command(s))
                goto out;
            break;
        }
        if (state == s->state && before == evbuffer_get_length(bufferevent_get_input(s->bev))
            && s->state != ST_CMD)
            break;   /* waiting for more content */
    }
out:
    if (s->eof && !s->busy && !s->closing) {
        if (!s->quit_sent)
            log_info("smtpd", "lost connection after %s from %s", s->last_cmd, s->client);
        session_close(s);
    }
}
