/*
 * smtpc-session: the SMTP/LMTP client's conversations (see smtpc.c for
 * the whole; docs/smtp-client.md for texts and parameters).  Connects,
 * reads the greeting, EHLO/HELO/LHLO, then the transaction: commands are
 * queued with the reply each expects; with PIPELINING they all go out at
 * once and replies are matched in order, without it one at a time.
 * Content is read from the queue file on the pool in 64 KiB chunks,
 * converted there (CRLF, dot-stuffing) and queued on the socket; reading
 * pauses while the socket's output holds more than 256 KiB.  A message
 * for a server without 8BITMIME is read whole and downgraded on the pool.
 * STARTTLS (after EHLO, as the delivery's TLS policy says) swaps the
 * socket's bufferevent for an OpenSSL one (tls/tls_client.h does the
 * OpenSSL side); the certificate is judged after the handshake, then EHLO
 * is sent again.
 *
 * Ownership: a connection is never freed inside its own callback:
 * smtpc_conn_close marks it and the callback's end frees it.  The socket
 * is the connection's own: bufferevents never close it, and its SSL is
 * freed after them and before it.  A content job in flight belongs to
 * its delivery, which waits for it.
 *
 * Never: block the loop, trust a server's reply (bounded lines, checked
 * codes, no reply before its command: anything odd is a deferral with a
 * logged protocol error), send content to a server that has no
 * accepted recipient, read anything a server sent in plaintext after its
 * reply to STARTTLS, or go on without TLS where the policy requires it.
 */
#include "queue/smtpc-int.h"

#include "core/log.h"
#include "core/util.h"
#include "queue/mime8.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void conn_free(conn_t *conn);
static void on_drain(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void txn_start(dlv_t *d);
static void pump(dlv_t *d);
static void submit_chunk(dlv_t *d);

static long long tparam(const params_t *p, bool lmtp, param_id s, param_id l)
{
    return param_int(p, lmtp ? l : s);
}

static const char *kind_reply_to(xkind_t k)
{
    switch (k) {
    case X_GREET: return "initial server greeting";
    case X_EHLO: return "EHLO command";
    case X_HELO: return "HELO command";
    case X_LHLO: return "LHLO command";
    case X_XFWD1: return "XFORWARD name/address command";
    case X_XFWD2: return "XFORWARD helo/protocol command";
    case X_MAIL: return "MAIL FROM command";
    case X_RCPT: return "RCPT TO command";
    case X_DATA: return "DATA command";
    case X_DOT: return "end of DATA command";
    case X_RSET: return "RSET probe";
    case X_PROBE_RSET: return "RSET command";
    case X_STARTTLS: return "STARTTLS command";
    }
    return "command";
}

static const char *kind_stage(xkind_t k)
{
    switch (k) {
    case X_GREET: return "receiving the initial server greeting";
    case X_EHLO: return "performing the EHLO handshake";
    case X_HELO: return "performing the HELO handshake";
    case X_LHLO: return "performing the LHLO handshake";
    case X_XFWD1: return "sending XFORWARD name/address";
    case X_XFWD2: return "sending XFORWARD protocol/helo_name";
    case X_MAIL: return "sending MAIL FROM";
    case X_RCPT: return "sending RCPT TO";
    case X_DATA: return "sending DATA command";
    case X_DOT: return "sending end of data -- message may be sent more than once";
    case X_RSET: return "sending RSET probe";
    case X_PROBE_RSET: return "sending RSET";
    case X_STARTTLS: return "receiving the STARTTLS response";
    }
    return "talking";
}

static size_t out_len(const conn_t *conn)
{
    return conn->bev ? evbuffer_get_length(bufferevent_get_output(conn->bev)) : 0;
}

/* What the connection was doing, for "timed out while ..." texts. */
static const char *conn_stage(const conn_t *conn)
{
    const dlv_t *d = conn->d;
    if (d && (d->phase == PH_CONTENT || (d->phase == PH_DOT && out_len(conn) > 0)))
        return "sending message body";
    if (conn->exp_n > 0)
        return kind_stage(conn->exp[conn->exp_head].kind);
    if (d && (d->phase == PH_LOAD || d->phase == PH_TXN))
        return "sending MAIL FROM";
    return "receiving the initial server greeting";
}

/* The reply as Postfix shows it: the raw lines joined by spaces. */
static void reply_flat(const smtpc_reply_t *r, buf_t *out)
{
    const char *s = buf_cstr(&r->lines);
    for (size_t i = 0; i < r->lines.len; i++)
        buf_putc(out, s[i] == '\n' ? ' ' : s[i]);
}

static void reply_dsn(const smtpc_reply_t *r, char dsn[16])
{
    if (r->dsn[0])
        str_copy(dsn, r->dsn, 16);
    else
        snprintf(dsn, 16, "%d.0.0", r->code / 100);
}

/* One recipient's answer from a server reply. */
static void rcpt_from_reply(dlv_t *d, size_t i, const smtpc_reply_t *r, xkind_t k)
{
    conn_t *conn = d->conn;
    char dsn[16];
    reply_dsn(r, dsn);
    buf_t flat = BUF_INIT, text = BUF_INIT;
    reply_flat(r, &flat);
    int cls = r->code / 100;
    if (cls == 2) {
        smtpc_rcpt_set(d, i, SMTPC_SENT, dsn, buf_cstr(&flat), buf_cstr(&flat), true);
    } else {
        buf_printf(&text, "host %s said: %s (in reply to %s)", conn->namaddr, buf_cstr(&flat), kind_reply_to(k));
        smtpc_rcpt_set(d, i, cls == 5 ? SMTPC_BOUNCE : SMTPC_DEFER, dsn, buf_cstr(&text), buf_cstr(&flat),
                       cls == 5);
        if (cls == 4)
            log_debug(d->prog, "%s: <%s>: %s", d->req->queue_id, d->req->rcpts[i].addr, buf_cstr(&text));
    }
    buf_free(&flat);
    buf_free(&text);
}

static void conn_timer_set(conn_t *conn, long long secs)
{
    if (!conn->timer)
        return;
    evtimer_del(conn->timer);
    if (secs > 0) {
        struct timeval tv = {(time_t)secs, 0};
        evtimer_add(conn->timer, &tv);
    }
}

static long long kind_timeout(const conn_t *conn, xkind_t k)
{
    const params_t *p = conn->p;
    bool l = conn->lmtp;
    switch (k) {
    case X_GREET:
    case X_EHLO:
    case X_HELO:
    case X_LHLO: return tparam(p, l, PARAM_smtp_helo_timeout, PARAM_lmtp_lhlo_timeout);
    case X_XFWD1:
    case X_XFWD2: return param_int(p, PARAM_smtp_xforward_timeout);
    case X_MAIL: return tparam(p, l, PARAM_smtp_mail_timeout, PARAM_lmtp_mail_timeout);
    case X_RCPT: return tparam(p, l, PARAM_smtp_rcpt_timeout, PARAM_lmtp_rcpt_timeout);
    case X_DATA: return tparam(p, l, PARAM_smtp_data_init_timeout, PARAM_lmtp_data_init_timeout);
    case X_DOT: return tparam(p, l, PARAM_smtp_data_done_timeout, PARAM_lmtp_data_done_timeout);
    case X_RSET:
    case X_PROBE_RSET: return tparam(p, l, PARAM_smtp_rset_timeout, PARAM_lmtp_rset_timeout);
    case X_STARTTLS: return param_int(p, PARAM_smtp_starttls_timeout);
    }
    return 300;
}

/* Arm the connection's timer for what it waits for now. */
static void conn_rearm(conn_t *conn)
{
    const dlv_t *d = conn->d;
    if (!d || conn->dead)
        return;
    if (conn->handshaking)
        conn_timer_set(conn, param_int(conn->p, PARAM_smtp_starttls_timeout));
    else if (d->phase == PH_CONTENT || (d->phase == PH_DOT && out_len(conn) > 0))
        conn_timer_set(conn,
                       tparam(conn->p, conn->lmtp, PARAM_smtp_data_xfer_timeout, PARAM_lmtp_data_xfer_timeout));
    else if (conn->exp_n > 0)
        conn_timer_set(conn, kind_timeout(conn, conn->exp[conn->exp_head].kind));
    else
        conn_timer_set(conn, 0);
}

static void expect_push(conn_t *conn, xkind_t k, size_t rcpt)
{
    if (conn->exp_head + conn->exp_n == conn->exp_cap) {
        if (conn->exp_head > 0) {
            memmove(conn->exp, conn->exp + conn->exp_head, conn->exp_n * sizeof *conn->exp);
            conn->exp_head = 0;
        } else {
            conn->exp_cap = conn->exp_cap ? conn->exp_cap * 2 : 16;
            conn->exp = xrealloc(conn->exp, conn->exp_cap * sizeof *conn->exp);
        }
    }
    conn->exp[conn->exp_head + conn->exp_n].kind = k;
    conn->exp[conn->exp_head + conn->exp_n].rcpt = rcpt;
    conn->exp[conn->exp_head + conn->exp_n].gen = conn->rd_gen;
    conn->exp_n++;
}

static expect_t expect_pop(conn_t *conn)
{
    expect_t e = conn->exp[conn->exp_head];
    conn->exp_head++;
    conn->exp_n--;
    if (conn->exp_n == 0)
        conn->exp_head = 0;
    return e;
}

static void conn_write(conn_t *conn, const char *line)
{
    if (conn->d)
        log_debug(conn->d->prog, "%s: > %s: %s", conn->d->req->queue_id, conn->relay, line);
    bufferevent_write(conn->bev, line, strlen(line));
    bufferevent_write(conn->bev, "\r\n", 2);
}

void smtpc_cache_remove(conn_t *conn)
{
    if (!conn->cached)
        return;
    smtpc_t *c = conn->c;
    for (conn_t **pp = &c->cache; *pp; pp = &(*pp)->next) {
        if (*pp == conn) {
            *pp = conn->next;
            break;
        }
    }
    conn->next = NULL;
    conn->cached = false;
    c->ncached--;
}

static void conn_free(conn_t *conn)
{
    smtpc_cache_remove(conn);
    if (conn->cev)
        event_free(conn->cev);
    if (conn->bev) {
        evbuffer_remove_cb(bufferevent_get_output(conn->bev), on_drain, conn);
        bufferevent_free(conn->bev);
    }
    if (conn->old_bev)
        bufferevent_free(conn->old_bev);
    /* The SSL after its bufferevent, the socket after both. */
    tls_client_ssl_free(&conn->ssl);
    if (conn->fd >= 0)
        close(conn->fd);
    if (conn->timer)
        event_free(conn->timer);
    smtpc_reply_free(&conn->reply);
    free(conn->exp);
    free(conn->key);
    free(conn);
}

/* Close now, or at the end of the callback we are in. */
void smtpc_conn_close(conn_t *conn)
{
    smtpc_cache_remove(conn);
    conn->d = NULL;
    if (conn->in_cb) {
        conn->dead = true;
        if (conn->cev)
            event_del(conn->cev);
        if (conn->bev)
            bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
        if (conn->timer)
            evtimer_del(conn->timer);
        return;
    }
    conn_free(conn);
}

/* Say QUIT (when the conversation is in step and nothing is queued) and
 * close.  The reply is not awaited: nothing depends on it. */
void smtpc_conn_quit(conn_t *conn)
{
    if (conn->bev && !conn->broken && !conn->handshaking && conn->exp_n == 0 && out_len(conn) == 0) {
        if (conn->tls) {
            tls_client_shutdown(conn->ssl, "QUIT\r\n");
        } else if (conn->fd >= 0) {
            ssize_t w = send(conn->fd, "QUIT\r\n", 6, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
        }
    }
    smtpc_conn_close(conn);
}

static void conn_enter(conn_t *conn) { conn->in_cb++; }

static void conn_leave(conn_t *conn)
{
    if (--conn->in_cb > 0)
        return;
    if (conn->dead) {
        conn_free(conn);
        return;
    }
    if (conn->old_bev) {
        /* The plaintext bufferevent outlived the callback that swapped it
         * out: its input was still being walked. */
        bufferevent_free(conn->old_bev);
        conn->old_bev = NULL;
    }
}

/* Give a connection back after a transaction: to the cache when it may
 * carry another message, else QUIT. */
static void conn_release(conn_t *conn)
{
    smtpc_t *c = conn->c;
    const params_t *p = conn->p;
    conn->d = NULL;
    long long reuse_count = param_int(p, PARAM_smtp_connection_reuse_count_limit);
    long long age = (now_usec() - conn->created) / 1000000;
    if (conn->broken || conn->dead || c->closing || !conn->bev || conn->exp_n > 0 || out_len(conn) > 0 ||
        !param_bool(p, PARAM_smtp_connection_cache_on_demand) ||
        (reuse_count > 0 && conn->uses >= (unsigned long long)reuse_count) ||
        age >= param_int(p, PARAM_smtp_connection_reuse_time_limit)) {
        smtpc_conn_quit(conn);
        return;
    }
    conn->cached = true;
    conn->next = c->cache;
    c->cache = conn;
    c->ncached++;
    conn_timer_set(conn, param_int(p, PARAM_smtp_connection_cache_time_limit));
}

/* The transaction on this connection is over and the connection is in
 * step: hand it back, then the next server or the end. */
static void session_end(dlv_t *d)
{
    conn_t *conn = d->conn;
    d->conn = NULL;
    d->gen++;
    if (conn)
        conn_release(conn);
    smtpc_try_next(d);
}

/* The session failed as a whole (connection, timeout, protocol, a
 * refusal before MAIL).  dsn/text apply to every recipient still open. */
static void session_fail(dlv_t *d, const char *dsn, const char *text, const char *reply, bool quit)
{
    conn_t *conn = d->conn;
    d->conn = NULL;
    d->gen++;
    if (d->probing) {
        /* A cached connection that no longer works: quietly start afresh. */
        d->probing = false;
        if (conn)
            smtpc_conn_close(conn);
        log_debug(d->prog, "%s: cached connection unusable (%s); connecting anew", d->req->queue_id, text);
        smtpc_resolve(d);
        return;
    }
    smtpc_fail_pending(d, dsn, text, reply);
    if (dsn[0] == '4')
        log_debug(d->prog, "%s: %s", d->req->queue_id, text);
    if (conn) {
        if (quit)
            smtpc_conn_quit(conn);
        else
            smtpc_conn_close(conn);
    }
    if (dsn[0] == '5')
        d->no_more = true;
    smtpc_try_next(d);
}

/* The connection under a delivery is gone (refused, lost, timed out): it
 * is never reused, and the delivery fails over with the formatted text. */
static void conn_lost(conn_t *conn, const char *dsn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_lost(conn_t *conn, const char *dsn, const char *fmt, ...)
{
    buf_t text = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&text, fmt, ap);
    va_end(ap);
    conn->broken = true;
    session_fail(conn->d, dsn, buf_cstr(&text), NULL, false);
    buf_free(&text);
}

/* kind: the reply that was awaited; -1: the one at the head, if any. */
static void protocol_error(conn_t *conn, const char *line, size_t len, const char *why, int kind)
{
    dlv_t *d = conn->d;
    buf_t text = BUF_INIT, shown = BUF_INIT;
    smtpc_printable(&shown, line, len, 200);
    if (kind < 0 && conn->exp_n > 0)
        kind = (int)conn->exp[conn->exp_head].kind;
    const char *what = kind >= 0 ? kind_reply_to((xkind_t)kind) : NULL;
    if (why)
        buf_printf(&text, "host %s said: %s (protocol error: %s)", conn->namaddr, buf_cstr(&shown), why);
    else if (kind == X_GREET)
        buf_printf(&text, "host %s said: %s (protocol error in the initial server greeting)", conn->namaddr,
                   buf_cstr(&shown));
    else
        buf_printf(&text, "host %s said: %s (protocol error in reply to %s)", conn->namaddr, buf_cstr(&shown),
                   what ? what : "command");
    conn->broken = true;
    if (d) {
        if (!d->probing)
            log_warn(d->prog, "%s: %s", d->req->queue_id, buf_cstr(&text));
        session_fail(d, "4.5.0", buf_cstr(&text), NULL, false);
    } else {
        smtpc_conn_close(conn);
    }
    buf_free(&text);
    buf_free(&shown);
}

/* A reply that refuses the session ("refused to talk to me"). */
static void session_refused(dlv_t *d, const smtpc_reply_t *r, bool greeting)
{
    char dsn[16];
    reply_dsn(r, dsn);
    if (greeting && dsn[0] == '5' && param_bool(d->p, PARAM_smtp_skip_5xx_greeting))
        dsn[0] = '4';
    buf_t flat = BUF_INIT, text = BUF_INIT;
    reply_flat(r, &flat);
    buf_printf(&text, "host %s refused to talk to me: %s", d->conn->namaddr, buf_cstr(&flat));
    if (r->code == 421)
        d->conn->broken = true;
    session_fail(d, dsn, buf_cstr(&text), buf_cstr(&flat), true);
    buf_free(&flat);
    buf_free(&text);
}

static void send_hello(dlv_t *d, xkind_t k)
{
    conn_t *conn = d->conn;
    buf_t line = BUF_INIT;
    const char *name = d->lmtp ? param_str(d->p, PARAM_lmtp_lhlo_name) : param_str(d->p, PARAM_smtp_helo_name);
    const char *verb = k == X_LHLO ? "LHLO" : k == X_EHLO ? "EHLO" : "HELO";
    buf_printf(&line, "%s %s", verb, name && *name ? name : "localhost");
    conn_write(conn, buf_cstr(&line));
    expect_push(conn, k, 0);
    conn_rearm(conn);
    buf_free(&line);
}

static void session_ready(dlv_t *d)
{
    conn_t *conn = d->conn;
    d->phase = PH_TXN;
    if (!d->any_ready) {
        d->req->t_conn = now_usec();
        d->any_ready = true;
    }
    d->sessions++;
    str_copy(d->req->relay, conn->relay, sizeof d->req->relay);
    str_copy(d->req->tls, conn->tls ? conn->tls_brief : "", sizeof d->req->tls);
    txn_start(d);
}

void smtpc_txn_clear(dlv_t *d)
{
    for (size_t i = 0; i < d->ncmd; i++)
        free(d->cmds[i].line);
    free(d->cmds);
    d->cmds = NULL;
    d->ncmd = d->cmd_next = 0;
    d->nacc = d->ndot = 0;
    d->txn_failed = false;
    d->stream_wait = false;
}

static void cmd_add(dlv_t *d, xkind_t k, size_t rcpt, const char *line)
{
    d->cmds = xrealloc(d->cmds, (d->ncmd + 1) * sizeof *d->cmds);
    d->cmds[d->ncmd].kind = k;
    d->cmds[d->ncmd].rcpt = rcpt;
    d->cmds[d->ncmd].line = xstrdup(line);
    d->ncmd++;
}

static bool needs_smtputf8(const smtpc_request_t *req)
{
    if (!req->smtputf8)
        return false;
    if (smtpc_has_8bit(req->sender))
        return true;
    for (size_t i = 0; i < req->nrcpt; i++)
        if (smtpc_has_8bit(req->rcpts[i].addr))
            return true;
    return false;
}

static void rjob_free(rjob_t *j)
{
    buf_free(&j->out);
    free(j->path);
    free(j);
}

static void rjob_work(void *arg)
{
    rjob_t *j = arg;
    if (j->fd < 0) {
        j->fd = open(j->path, O_RDONLY | O_CLOEXEC);
        if (j->fd < 0) {
            j->err = errno;
            j->errwhat = "open";
            return;
        }
    }
    buf_t raw = BUF_INIT;
    long long want = j->len;
    buf_reserve(&raw, (size_t)want);
    long long got = 0;
    while (got < want) {
        ssize_t r = pread(j->fd, raw.data + got, (size_t)(want - got), (off_t)(j->off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            j->err = r < 0 ? errno : EIO;
            j->errwhat = r < 0 ? "read" : "read (file shorter than its content size)";
            buf_free(&raw);
            return;
        }
        got += r;
    }
    raw.len = (size_t)got;
    raw.data[raw.len] = 0;
    if (j->whole && j->convert && mime8_has_8bit(raw.data, raw.len)) {
        buf_t conv = BUF_INIT;
        j->downgraded = mime8_downgrade(raw.data, raw.len, MIME_NESTING_LIMIT, &conv) > 0;
        buf_free(&raw);
        raw = conv;
    }
    smtpc_dotstuff(&j->bol, buf_cstr(&raw), raw.len, &j->out);
    buf_free(&raw);
}

static void local_data_error(dlv_t *d, const rjob_t *j)
{
    buf_t text = BUF_INIT;
    log_warn(d->prog, "%s: %s %s: %s", d->req->queue_id, j->errwhat, d->req->path, strerror(j->err));
    buf_printf(&text, "local data error while talking to %s", d->conn ? d->conn->namaddr : "none");
    d->no_more = true;
    if (d->conn)
        d->conn->broken = d->phase != PH_LOAD;
    session_fail(d, "4.3.0", buf_cstr(&text), NULL, d->phase == PH_LOAD);
    buf_free(&text);
}

static void end_content(dlv_t *d)
{
    conn_t *conn = d->conn;
    struct evbuffer *out = bufferevent_get_output(conn->bev);
    if (!d->bol)
        evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, ".\r\n", 3);
    d->phase = PH_DOT;
    if (d->lmtp) {
        for (size_t k = 0; k < d->nacc; k++)
            expect_push(conn, X_DOT, d->acc[k]);
    } else {
        expect_push(conn, X_DOT, 0);
    }
    conn_rearm(conn);
}

static void rjob_done(void *arg)
{
    rjob_t *j = arg;
    dlv_t *d = j->d;
    d->njobs--;
    if (j->fd >= 0 && j->fd != d->fd) {
        if (d->fd < 0)
            d->fd = j->fd;
        else
            close(j->fd);
    }
    if (d->want_finish) {
        rjob_free(j);
        if (d->njobs == 0)
            smtpc_finalize(d);
        return;
    }
    if (j->whole && !j->err && !d->have_whole) {
        /* The converted content does not depend on the session. */
        buf_free(&d->whole);
        d->whole = j->out;
        j->out = (buf_t)BUF_INIT;
        d->have_whole = true;
    }
    if (j->gen != d->gen || !d->conn) {
        rjob_free(j);
        return;
    }
    if (j->err) {
        local_data_error(d, j);
        rjob_free(j);
        return;
    }
    if (j->whole) {
        if (j->downgraded)
            log_debug(d->prog, "%s: 8-bit content downgraded to quoted-printable for %s", d->req->queue_id,
                      d->conn->relay);
        rjob_free(j);
        txn_start(d);
        return;
    }
    evbuffer_add(bufferevent_get_output(d->conn->bev), j->out.data ? j->out.data : "", j->out.len);
    d->sent_off += j->len;
    d->bol = j->bol;
    rjob_free(j);
    if (d->sent_off >= d->req->content_size)
        end_content(d);
    else if (out_len(d->conn) < OUT_HIGH)
        submit_chunk(d);
    else
        d->stream_wait = true;
}

static void submit_job(dlv_t *d, bool whole)
{
    rjob_t *j = xcalloc(1, sizeof *j);
    j->d = d;
    j->gen = d->gen;
    j->whole = whole;
    j->convert = whole && !param_bool(d->p, PARAM_disable_mime_output_conversion);
    j->path = xstrdup(d->req->path ? d->req->path : "");
    j->fd = d->fd;
    if (whole) {
        j->off = d->req->content_offset;
        j->len = d->req->content_size;
        j->bol = true;
    } else {
        long long left = d->req->content_size - d->sent_off;
        j->off = d->req->content_offset + d->sent_off;
        j->len = left < CHUNK ? left : CHUNK;
        j->bol = d->bol;
    }
    /* One chain per delivery: jobs run in order, and the first one's
     * open is seen by the next. */
    d->njobs++;
    pool_submit(d->c->pool, d, rjob_work, rjob_done, j);
}

static void submit_chunk(dlv_t *d) { submit_job(d, false); }

static void start_content(dlv_t *d)
{
    conn_t *conn = d->conn;
    d->phase = PH_CONTENT;
    conn_rearm(conn);
    if (d->use_whole) {
        evbuffer_add(bufferevent_get_output(conn->bev), d->whole.data ? d->whole.data : "", d->whole.len);
        /* The whole content ended where the dot-stuffer left it. */
        d->bol = d->whole.len == 0 || d->whole.data[d->whole.len - 1] == '\n';
        end_content(d);
        return;
    }
    d->sent_off = 0;
    d->bol = true;
    if (d->req->content_size <= 0) {
        end_content(d);
        return;
    }
    submit_chunk(d);
}

static void txn_start(dlv_t *d)
{
    conn_t *conn = d->conn;
    smtpc_request_t *req = d->req;
    smtpc_txn_clear(d);
    if (smtpc_pending(d) == 0) {
        session_end(d);
        return;
    }
    /* Address verification (req->probe): MAIL, the RCPTs, then RSET
     * instead of DATA, so the server never sees content and the
     * connection stays reusable; no SIZE, BODY or XFORWARD. */
    if (!req->probe && conn->f.size_limit > 0 && req->content_size > conn->f.size_limit) {
        buf_t text = BUF_INIT;
        buf_printf(&text, "message size %ld exceeds size limit %lld of server %s", req->content_size,
                   conn->f.size_limit, conn->namaddr);
        smtpc_fail_pending(d, "5.3.4", buf_cstr(&text), NULL);
        buf_free(&text);
        session_end(d);
        return;
    }
    if (needs_smtputf8(req) && !conn->f.smtputf8) {
        buf_t text = BUF_INIT;
        buf_printf(&text, "SMTPUTF8 is required, but was not offered by host %s", conn->namaddr);
        smtpc_fail_pending(d, "5.6.7", buf_cstr(&text), NULL);
        buf_free(&text);
        session_end(d);
        return;
    }
    const char *bt = req->body_type ? req->body_type : "";
    d->use_whole = !req->probe && !conn->f.eightbit && !param_bool(d->p, PARAM_disable_mime_output_conversion) &&
                   !str_ieq(bt, "7BIT");
    if (d->use_whole && !d->have_whole) {
        d->phase = PH_LOAD;
        conn_timer_set(conn, 0);
        submit_job(d, true);
        return;
    }
    d->phase = PH_TXN;
    conn->uses++;
    buf_t line = BUF_INIT;
    bool xfwd = param_bool(d->p, d->lmtp ? PARAM_lmtp_send_xforward_command : PARAM_smtp_send_xforward_command);
    if (xfwd && conn->f.xforward && !req->probe) {
        unsigned offered = conn->f.xforward;
        smtpc_xfwd_in_t in = {0};
        const char *name = req->client_name, *addr = req->client_addr;
        in.name = name && *name && strcmp(name, "unknown") != 0 ? name : NULL;
        in.addr = addr && *addr && strcmp(addr, "unknown") != 0 ? addr : NULL;
        in.proto = req->protocol;
        in.helo = req->helo;
        in.ident = req->queue_id;
        in.local_source = smtpc_is_loopback(addr);
        if (!in.name && !in.addr)
            offered &= ~(unsigned)(SMTPC_XF_NAME | SMTPC_XF_ADDR);
        int groups[8];
        size_t n = smtpc_xforward_cmds(&in, offered, &line, groups);
        const char *s = buf_cstr(&line);
        for (size_t k = 0; k < n; k++) {
            const char *nl = strchr(s, '\n');
            char *one = xstrndup(s, (size_t)(nl - s));
            cmd_add(d, k < 8 && groups[k] == 1 ? X_XFWD1 : X_XFWD2, 0, one);
            free(one);
            s = nl + 1;
        }
        buf_reset(&line);
    }
    buf_printf(&line, "MAIL FROM:<%s>", req->sender ? req->sender : "");
    if (conn->f.size && !req->probe)
        buf_printf(&line, " SIZE=%ld", req->content_size);
    if (str_ieq(bt, "8BITMIME") && conn->f.eightbit && !req->probe)
        buf_puts(&line, " BODY=8BITMIME");
    if (req->smtputf8 && conn->f.smtputf8)
        buf_puts(&line, " SMTPUTF8");
    cmd_add(d, X_MAIL, 0, buf_cstr(&line));
    for (size_t i = 0; i < req->nrcpt; i++) {
        if (d->final[i])
            continue;
        buf_reset(&line);
        buf_printf(&line, "RCPT TO:<%s>", req->rcpts[i].addr);
        cmd_add(d, X_RCPT, i, buf_cstr(&line));
    }
    if (req->probe)
        cmd_add(d, X_PROBE_RSET, 0, "RSET");
    else
        cmd_add(d, X_DATA, 0, "DATA");
    buf_free(&line);
    free(d->acc);
    d->acc = xcalloc(req->nrcpt + 1, sizeof *d->acc);
    pump(d);
}

/* Everything answered and nothing left to send: the transaction is over. */
static void txn_check_end(dlv_t *d)
{
    conn_t *conn = d->conn;
    if (!conn || conn->exp_n > 0 || d->cmd_next < d->ncmd)
        return;
    if (d->phase == PH_TXN || d->phase == PH_DOT)
        session_end(d);
}

static void pump(dlv_t *d)
{
    conn_t *conn = d->conn;
    bool pipe = conn->f.pipelining;
    while (d->cmd_next < d->ncmd) {
        if (!pipe && conn->exp_n > 0)
            break;
        cmd_t *cmd = &d->cmds[d->cmd_next];
        if (!pipe && (d->txn_failed || (cmd->kind == X_DATA && d->nacc == 0))) {
            d->cmd_next = d->ncmd;
            break;
        }
        conn_write(conn, cmd->line);
        expect_push(conn, cmd->kind, cmd->rcpt);
        d->cmd_next++;
    }
    conn_rearm(conn);
    txn_check_end(d);
}

/* A refusal of the whole transaction (XFORWARD, MAIL): every recipient
 * still open gets it; later pipelined replies are ignored. */
static void txn_fail(dlv_t *d, const smtpc_reply_t *r, xkind_t k)
{
    char dsn[16];
    reply_dsn(r, dsn);
    buf_t flat = BUF_INIT, text = BUF_INIT;
    reply_flat(r, &flat);
    buf_printf(&text, "host %s said: %s (in reply to %s)", d->conn->namaddr, buf_cstr(&flat), kind_reply_to(k));
    smtpc_fail_pending(d, dsn, buf_cstr(&text), buf_cstr(&flat));
    d->txn_failed = true;
    buf_free(&flat);
    buf_free(&text);
}

/* A 421 anywhere: the server is closing; whatever was open fails with it. */
static void reply_421(dlv_t *d, const smtpc_reply_t *r, xkind_t k)
{
    buf_t flat = BUF_INIT, text = BUF_INIT;
    char dsn[16];
    reply_dsn(r, dsn);
    reply_flat(r, &flat);
    buf_printf(&text, "host %s said: %s (in reply to %s)", d->conn->namaddr, buf_cstr(&flat), kind_reply_to(k));
    d->conn->broken = true;
    session_fail(d, dsn, buf_cstr(&text), buf_cstr(&flat), false);
    buf_free(&flat);
    buf_free(&text);
}

static void wrong_class(conn_t *conn, const smtpc_reply_t *r, xkind_t k)
{
    buf_t flat = BUF_INIT;
    reply_flat(r, &flat);
    protocol_error(conn, flat.data ? flat.data : "", flat.len, NULL, (int)k);
    buf_free(&flat);
}

/* ------------------------------------------------------------ STARTTLS */

/* A TLS requirement that this server cannot meet: the next server may. */
static void tls_fail(dlv_t *d, const char *dsn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tls_fail(dlv_t *d, const char *dsn, const char *fmt, ...)
{
    buf_t text = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&text, fmt, ap);
    va_end(ap);
    session_fail(d, dsn, buf_cstr(&text), NULL, true);
    buf_free(&text);
}

/* EHLO (or HELO, LHLO) answered: STARTTLS when the policy and the
 * server allow it, a deferral when the policy requires TLS that is not
 * there, else the transaction. */
static void hello_done(dlv_t *d)
{
    conn_t *conn = d->conn;
    const tls_policy_t *pol = &d->pol;
    if (!conn->tls) {
        if (conn->f.starttls && pol->level == TLS_LEV_NONE && param_bool(d->p, PARAM_smtp_tls_note_starttls_offer))
            log_info(d->prog, "Host offered STARTTLS: [%s]", conn->host);
        bool engine = tls_client_engine_ok(d->tc, NULL);
        if (pol->level >= TLS_LEV_MAY && conn->f.starttls && !conn->tls_plain && engine) {
            conn_write(conn, "STARTTLS");
            expect_push(conn, X_STARTTLS, 0);
            conn_rearm(conn);
            return;
        }
        if (pol->level >= TLS_LEV_ENCRYPT) {
            if (!conn->f.starttls)
                tls_fail(d, "4.7.4", "TLS is required, but was not offered by host %s", conn->namaddr);
            else if (!engine)
                tls_fail(d, "4.7.5", "TLS is required, but our TLS engine is unavailable");
            else
                tls_fail(d, "4.7.0", "TLS is required, but unavailable");
            return;
        }
    }
    session_ready(d);
}

/* The handshake did not complete (an alert, garbage, a lost connection,
 * the smtp_starttls_timeout).  The server's state is unknown, so the
 * connection goes.  At level may the same server gets the mail in
 * plaintext on a new connection (Postfix's rule: otherwise a server with
 * broken TLS and no other MX would never get mail); above, the next
 * server is tried. */
static void handshake_failed(conn_t *conn, const char *why, const char *lib)
{
    dlv_t *d = conn->d;
    conn->handshaking = false;
    conn->broken = true;
    log_info(d->prog, "SSL_connect error to %s: %s", conn->relay, why);
    if (lib && *lib)
        log_warn(d->prog, "TLS library problem: %s", lib);
    if (d->pol.level != TLS_LEV_MAY) {
        session_fail(d, "4.7.5", "Cannot start TLS: handshake failure", NULL, false);
        return;
    }
    target_t t;
    memset(&t, 0, sizeof t);
    str_copy(t.name, conn->host, sizeof t.name);
    str_copy(t.addr, conn->addr, sizeof t.addr);
    t.port = conn->port;
    log_info(d->prog, "%s: TLS handshake with %s failed; trying again in plaintext", d->req->queue_id,
             conn->relay);
    d->conn = NULL;
    d->gen++;
    smtpc_conn_close(conn);
    d->plain_next = true;
    if (smtpc_conn_open(d, &t) < 0) {
        int e = errno;
        buf_t text = BUF_INIT;
        d->plain_next = false;
        buf_printf(&text, "connect to %s[%s]:%d: %s", t.name, t.addr, t.port, strerror(e));
        smtpc_fail_pending(d, "4.4.1", buf_cstr(&text), NULL);
        buf_free(&text);
        smtpc_try_next(d);
    }
}

/* "220" to STARTTLS: the socket now speaks TLS through an OpenSSL
 * bufferevent; the plaintext one is retired (freed once the read
 * callback that got here is done with its input). */
static void start_tls(dlv_t *d)
{
    conn_t *conn = d->conn;
    struct evbuffer *in = bufferevent_get_input(conn->bev);
    size_t extra = evbuffer_get_length(in);
    if (extra > 0) {
        /* Nothing the server sent in plaintext after its 220 can be
         * trusted (RFC 3207 section 4.2): it is dropped, unread. */
        log_warn(d->prog, "%s: %s sent %zu byte%s after its reply to STARTTLS; discarded", d->req->queue_id,
                 conn->namaddr, extra, extra == 1 ? "" : "s");
        evbuffer_drain(in, extra);
    }
    buf_t err = BUF_INIT;
    SSL *ssl = tls_client_ssl(d->tc, &d->pol, conn->host, conn->addr, conn->port, &err);
    struct bufferevent *nb = ssl ? tls_client_bev_new(conn->c->base, conn->fd, ssl) : NULL;
    if (!nb) {
        if (ssl) {
            tls_client_ssl_free(&ssl);
            buf_puts(&err, "cannot make an OpenSSL bufferevent");
        }
        handshake_failed(conn, buf_cstr(&err), NULL);
        buf_free(&err);
        return;
    }
    buf_free(&err);
    struct bufferevent *old = conn->bev;
    evbuffer_remove_cb(bufferevent_get_output(old), on_drain, conn);
    bufferevent_disable(old, EV_READ | EV_WRITE);
    bufferevent_setcb(old, NULL, NULL, NULL, NULL);
    if (conn->in_cb > 0)
        conn->old_bev = old;
    else
        bufferevent_free(old);
    conn->ssl = ssl;
    conn->bev = nb;
    conn->handshaking = true;
    bufferevent_setcb(nb, on_read, NULL, on_event, conn);
    evbuffer_add_cb(bufferevent_get_output(nb), on_drain, conn);
    bufferevent_enable(nb, EV_READ | EV_WRITE);
    conn_rearm(conn);
}

/* The handshake is done: judge the certificate for the level, then
 * EHLO again with everything the plaintext EHLO said forgotten. */
static void handshake_done(conn_t *conn)
{
    dlv_t *d = conn->d;
    conn->handshaking = false;
    conn->tls = true;
    int loglevel = (int)param_int(d->p, PARAM_smtp_tls_loglevel);
    tls_client_result_t res;
    tls_client_verify(conn->ssl, &d->pol, d->host, conn->host, d->prog, conn->relay, loglevel, &res);
    tls_client_brief(&res, conn->tls_brief, sizeof conn->tls_brief);
    if (loglevel >= 1) {
        buf_t line = BUF_INIT;
        tls_client_summary(&res, conn->relay, &line);
        log_info(d->prog, "%s", buf_cstr(&line));
        buf_free(&line);
    }
    if (d->pol.level >= TLS_LEV_VERIFY && !res.trusted) {
        tls_fail(d, "4.7.5", "Server certificate not trusted");
        return;
    }
    if (d->pol.level >= TLS_LEV_VERIFY && !res.matched) {
        tls_fail(d, "4.7.5", "Server certificate not verified");
        return;
    }
    memset(&conn->f, 0, sizeof conn->f);
    send_hello(d, d->lmtp ? X_LHLO : X_EHLO);
}

static void on_reply(conn_t *conn, expect_t e, const smtpc_reply_t *r)
{
    dlv_t *d = conn->d;
    int cls = r->code / 100;
    log_debug(d->prog, "%s: < %s: %d%s%s", d->req->queue_id, conn->relay, r->code, r->text.len ? " " : "",
              buf_cstr(&r->text));
    if (r->code == 421 && e.kind != X_GREET && e.kind != X_EHLO && e.kind != X_HELO && e.kind != X_LHLO) {
        reply_421(d, r, e.kind);
        return;
    }
    switch (e.kind) {
    case X_GREET:
        if (cls == 2) {
            d->phase = PH_HELLO;
            send_hello(d, d->lmtp ? X_LHLO : param_bool(d->p, PARAM_smtp_never_send_ehlo) ? X_HELO : X_EHLO);
        } else if (cls == 3) {
            wrong_class(conn, r, e.kind);
        } else {
            session_refused(d, r, true);
        }
        return;
    case X_EHLO:
        if (cls == 2) {
            smtpc_ehlo_parse(r, &conn->f);
            hello_done(d);
        } else if (r->code == 421) {
            session_refused(d, r, false);
        } else {
            send_hello(d, X_HELO);
        }
        return;
    case X_HELO:
    case X_LHLO:
        if (cls == 2) {
            if (e.kind == X_LHLO)
                smtpc_ehlo_parse(r, &conn->f);
            else
                memset(&conn->f, 0, sizeof conn->f);
            hello_done(d);
        } else {
            session_refused(d, r, false);
        }
        return;
    case X_STARTTLS:
        if (cls == 2) {
            start_tls(d);
        } else if (cls == 3) {
            wrong_class(conn, r, e.kind);
        } else if (d->pol.level >= TLS_LEV_ENCRYPT) {
            /* Never a bounce for a TLS requirement: the class goes to 4. */
            char dsn[16];
            buf_t flat = BUF_INIT, text = BUF_INIT;
            reply_dsn(r, dsn);
            dsn[0] = '4';
            reply_flat(r, &flat);
            buf_printf(&text, "TLS is required, but host %s refused to start TLS: %s", conn->namaddr,
                       buf_cstr(&flat));
            session_fail(d, dsn, buf_cstr(&text), buf_cstr(&flat), true);
            buf_free(&flat);
            buf_free(&text);
        } else {
            conn->f.starttls = false;
            session_ready(d);   /* may: on in plaintext */
        }
        return;
    case X_RSET:
        if (cls == 2) {
            d->probing = false;
            d->req->reused = true;
            session_ready(d);
        } else {
            buf_t flat = BUF_INIT;
            reply_flat(r, &flat);
            conn->broken = true;
            session_fail(d, "4.0.0", buf_cstr(&flat), NULL, false);
            buf_free(&flat);
        }
        return;
    case X_XFWD1:
    case X_XFWD2:
    case X_MAIL:
        if (!d->txn_failed) {
            if (cls == 3) {
                wrong_class(conn, r, e.kind);
                return;
            }
            if (cls != 2)
                txn_fail(d, r, e.kind);
        }
        break;
    case X_RCPT:
        if (!d->txn_failed) {
            if (cls == 3) {
                wrong_class(conn, r, e.kind);
                return;
            }
            if (cls == 2 && !d->req->probe)
                d->acc[d->nacc++] = e.rcpt;
            else
                rcpt_from_reply(d, e.rcpt, r, X_RCPT);
        }
        break;
    case X_DATA:
        if (d->txn_failed || d->nacc == 0) {
            /* With PIPELINING, DATA went out before the refusals came
             * back; its reply says nothing.  A server that wants content
             * now gets none: the connection goes. */
            if (cls == 3)
                conn->broken = true;
            break;
        }
        if (cls == 3) {
            start_content(d);
            return;
        }
        if (cls == 2) {
            wrong_class(conn, r, e.kind);
            return;
        }
        for (size_t k = 0; k < d->nacc; k++)
            rcpt_from_reply(d, d->acc[k], r, X_DATA);
        break;
    case X_PROBE_RSET:
        /* The server did not reset: never reuse what state it is in. */
        if (cls != 2)
            conn->broken = true;
        break;
    case X_DOT:
        if (cls == 3) {
            wrong_class(conn, r, e.kind);
            return;
        }
        if (d->lmtp) {
            rcpt_from_reply(d, e.rcpt, r, X_DOT);
            d->ndot++;
        } else {
            for (size_t k = 0; k < d->nacc; k++)
                rcpt_from_reply(d, d->acc[k], r, X_DOT);
        }
        break;
    }
    pump(d);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn_t *conn = arg;
    conn_enter(conn);
    conn->rd_gen++;
    struct evbuffer *in = bufferevent_get_input(bev);
    char line[SMTPC_LINE_MAX + 2];
    while (!conn->dead && evbuffer_get_length(in) > 0) {
        size_t eol = 0;
        struct evbuffer_ptr at = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_LF);
        /* A line whose end has not come yet is as long as what has. */
        size_t len = at.pos < 0 ? evbuffer_get_length(in) : (size_t)at.pos;
        if (len > SMTPC_LINE_MAX) {
            size_t k = evbuffer_copyout(in, line, 200);
            if (conn->d)
                protocol_error(conn, line, k, "reply line too long", -1);
            else
                smtpc_conn_close(conn);
            break;
        }
        if (at.pos < 0)
            break;
        evbuffer_remove(in, line, len);
        evbuffer_drain(in, eol);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        line[len] = 0;
        if (!conn->d) {
            /* An idle cached connection speaks only to say goodbye. */
            smtpc_conn_close(conn);
            break;
        }
        if (conn->exp_n == 0) {
            protocol_error(conn, line, len, "reply without a command", -1);
            break;
        }
        int r = smtpc_reply_feed(&conn->reply, line, len);
        if (r < 0) {
            smtpc_reply_reset(&conn->reply);
            protocol_error(conn, line, len, NULL, -1);
            break;
        }
        if (r == 0)
            continue;
        if (conn->exp[conn->exp_head].gen == conn->rd_gen) {
            smtpc_reply_reset(&conn->reply);
            protocol_error(conn, line, len, "reply before the command was sent", -1);
            break;
        }
        expect_t e = expect_pop(conn);
        on_reply(conn, e, &conn->reply);
        smtpc_reply_reset(&conn->reply);
    }
    conn_leave(conn);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_t *conn = arg;
    if (conn->handshaking && conn->d) {
        if (what & BEV_EVENT_CONNECTED) {
            conn_enter(conn);
            handshake_done(conn);
            conn_leave(conn);
        } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
            int e = errno;
            buf_t lib = BUF_INIT;
            conn_enter(conn);
            const char *why = tls_client_bev_error(bev, &lib) > 0 ? "handshake failed"
                              : (what & BEV_EVENT_EOF) || e == 0 ? "lost connection"
                                                                 : strerror(e);
            handshake_failed(conn, why, buf_cstr(&lib));
            conn_leave(conn);
            buf_free(&lib);
        }
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    conn_enter(conn);
    if (conn->tls) {
        buf_t lib = BUF_INIT;
        if (tls_client_bev_error(bev, &lib) > 0 && conn->d)
            log_warn(conn->d->prog, "TLS library problem: %s", buf_cstr(&lib));
        buf_free(&lib);
    }
    if (!conn->d)
        smtpc_conn_close(conn);
    else
        conn_lost(conn, "4.4.2", "lost connection with %s while %s", conn->namaddr, conn_stage(conn));
    conn_leave(conn);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    conn_t *conn = arg;
    (void)fd;
    (void)what;
    conn_enter(conn);
    if (!conn->d)
        smtpc_conn_quit(conn);   /* idle longer than smtp_connection_cache_time_limit */
    else if (conn->handshaking)
        handshake_failed(conn, "timed out", NULL);
    else
        conn_lost(conn, "4.4.2", "conversation with %s timed out while %s", conn->namaddr, conn_stage(conn));
    conn_leave(conn);
}

/* Output drained: progress for the transfer timeout, room for content. */
static void on_drain(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    conn_t *conn = arg;
    dlv_t *d = conn->d;
    if (info->n_deleted == 0 || !d || conn->dead)
        return;
    if (d->phase == PH_CONTENT || d->phase == PH_DOT)
        conn_rearm(conn);
    if (d->stream_wait && evbuffer_get_length(buf) <= OUT_LOW) {
        d->stream_wait = false;
        submit_chunk(d);
    }
}

static void conn_connected(conn_t *conn)
{
    smtpc_t *c = conn->c;
    /* The socket stays the connection's: STARTTLS puts another
     * bufferevent on it, and the SSL must go before it closes. */
    conn->bev = bufferevent_socket_new(c->base, conn->fd, 0);
    bufferevent_setcb(conn->bev, on_read, NULL, on_event, conn);
    evbuffer_add_cb(bufferevent_get_output(conn->bev), on_drain, conn);
    bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
    dlv_t *d = conn->d;
    d->phase = PH_HELLO;
    str_copy(d->req->relay, conn->relay, sizeof d->req->relay);
    expect_push(conn, X_GREET, 0);
    conn_rearm(conn);
}

static void connect_failed(conn_t *conn, int err)
{
    conn_lost(conn, "4.4.1", "connect to %s: %s", conn->relay, strerror(err));
}

static void on_connect(evutil_socket_t fd, short what, void *arg)
{
    conn_t *conn = arg;
    conn_enter(conn);
    event_free(conn->cev);
    conn->cev = NULL;
    if (what & EV_TIMEOUT) {
        connect_failed(conn, ETIMEDOUT);
    } else {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt((int)fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
            err = errno;
        if (err)
            connect_failed(conn, err);
        else
            conn_connected(conn);
    }
    conn_leave(conn);
}

/* Start connecting to t.  -1 with errno when it failed at once. */
int smtpc_conn_open(dlv_t *d, const target_t *t)
{
    smtpc_t *c = d->c;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    if (t->unix_path) {
        struct sockaddr_un *su = (struct sockaddr_un *)&ss;
        if (strlen(t->addr) >= sizeof su->sun_path) {
            errno = ENAMETOOLONG;
            return -1;
        }
        su->sun_family = AF_UNIX;
        str_copy(su->sun_path, t->addr, sizeof su->sun_path);
        sl = sizeof *su;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, t->addr, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons((unsigned short)t->port);
            sl = sizeof *s4;
        } else if (inet_pton(AF_INET6, t->addr, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((unsigned short)t->port);
            sl = sizeof *s6;
        } else {
            errno = EINVAL;
            return -1;
        }
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r = connect(fd, (struct sockaddr *)&ss, sl);
    if (r < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    conn_t *conn = xcalloc(1, sizeof *conn);
    conn->c = c;
    conn->d = d;
    conn->fd = fd;
    conn->p = d->p;
    conn->lmtp = d->lmtp;
    conn->key = xstrdup(d->key);
    conn->created = now_usec();
    str_copy(conn->host, t->name, sizeof conn->host);
    str_copy(conn->addr, t->addr, sizeof conn->addr);
    conn->port = t->port;
    conn->tls_sig = d->tls_sig;
    conn->tls_plain = d->plain_next;
    d->plain_next = false;
    if (t->unix_path) {
        snprintf(conn->namaddr, sizeof conn->namaddr, "%s[%s]", t->name, t->addr);
        str_copy(conn->relay, conn->namaddr, sizeof conn->relay);
    } else {
        snprintf(conn->namaddr, sizeof conn->namaddr, "%s[%s]", t->name, t->addr);
        snprintf(conn->relay, sizeof conn->relay, "%s:%d", conn->namaddr, t->port);
    }
    conn->timer = evtimer_new(c->base, on_timer, conn);
    d->conn = conn;
    d->phase = PH_CONNECT;
    if (r == 0) {
        conn_connected(conn);
        return 0;
    }
    conn->cev = event_new(c->base, fd, EV_WRITE, on_connect, conn);
    long long ct = tparam(d->p, d->lmtp, PARAM_smtp_connect_timeout, PARAM_lmtp_connect_timeout);
    struct timeval tv = {(time_t)ct, 0};
    event_add(conn->cev, ct > 0 ? &tv : NULL);
    return 0;
}


void smtpc_probe(dlv_t *d, conn_t *conn)
{
    conn->d = d;
    d->conn = conn;
    d->probing = true;
    d->phase = PH_RSET;
    conn_write(conn, "RSET");
    expect_push(conn, X_RSET, 0);
    conn_rearm(conn);
}
