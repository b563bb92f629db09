/*
 * client: the load itself — one libevent loop driving many SMTP client
 * sessions against one loopback server.
 *
 * Owns the sessions (struct sess), their sockets and the loop's events.
 * A session keeps the commands it has sent and not yet seen answered in a
 * small FIFO, so the same code serves lock-step and PIPELINING: each reply
 * is matched to the oldest outstanding command.  Sessions are never freed
 * inside their own callbacks: a finished session goes on the dead list and
 * the reaper (an event made active on demand) frees it and launches the
 * next one.
 *
 * The client shares the machine with the server it measures, so it spends
 * as few system calls as it can: one persistent read event per socket
 * (whose first readiness also reports the connect), writes straight to the
 * socket after each batch of replies, and a write event only when the
 * kernel would not take everything at once.
 *
 * TLS (--starttls, --tls) keeps the same shape: the socket stays
 * non-blocking and one OpenSSL object per session drives it directly
 * (SSL_set_fd), so a handshake step or an SSL_read runs from the same
 * read and write events.  With --resume every --concurrency slot keeps
 * the session its last connection ended with and offers it on the next.
 *
 * Must never: run unbounded (every run ends by --count and by
 * --max-seconds), talk to a non-loopback address (main.c checks), or
 * decide whether a figure is good.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Outstanding replies a session can wait for: MAIL, every RCPT, then
 * DATA or RSET, the dot and QUIT. */
#define QMAX (BENCH_MAX_RCPT + 8)
/* Longest reply line accepted; RFC 5321 allows 512, servers send less. */
#define REPLY_LINE_MAX 2048
/* Input buffer: a whole pipelined batch of replies fits. */
#define INBUF_SIZE 8192

struct client;

struct sess {
    struct client *c;
    int fd;
    struct event *rev;            /* persistent read, with the reply timeout */
    struct event *wev;            /* only while output waits for the kernel */
    struct evbuffer *out;
    size_t inlen;
    char in[INBUF_SIZE];
    struct sess *prev, *next;     /* c->live (doubly) or c->dead (next only) */
    SSL *ssl;                     /* once TLS starts */
    int slot;                     /* --resume: index into c->slot_sess, -1 for none */
    double t_tls;                 /* the handshake began */
    unsigned long seq;
    enum stage q[QMAX];           /* commands sent and not yet answered, oldest first */
    unsigned qhead, qlen;
    int ml_code;                  /* code of a multi-line reply being read, else 0 */
    size_t rcpt_sent, rcpt_answered, rcpt_ok, rcpt_5xx;
    double t_start, t_mail, t_dot;
    bool offers_pipelining;
    bool pipelined;               /* this session sends command groups */
    bool connected;
    bool holding;                 /* idle: EHLO answered, waiting for the hold to end */
    bool handshaking;             /* the TLS handshake is under way */
    bool tls_done;                /* ... and finished: the stream is TLS now */
    bool quit_sent;
    bool txn_failed;
    bool dot_pending;             /* the dot is queued; t_dot is set when it leaves */
    bool counted, ok;             /* outcome recorded, and which */
    bool counts_active;           /* occupies a --concurrency slot */
    bool dead;
};

struct client {
    const struct bench_opts *o;
    struct bench_stats *st;
    struct event_base *base;
    struct event *reaper, *deadline, *hold_timer;
    struct sess *live, *dead;
    unsigned long launched;
    unsigned active;
    unsigned long holding;
    bool stopping;                /* --max-seconds passed: launch nothing more */
    bool hold_started, hold_over;
    double t_hold;
    const struct timeval *tv_timeout;   /* a libevent common timeout */
    msgtmpl_t msg;
    SSL_CTX *ssl_ctx;             /* one client context for the run */
    SSL_SESSION **slot_sess;      /* --resume: the last session of each slot */
    int *free_slots;              /* stack of unused slot numbers */
    unsigned nfree;
};

static void note_error(struct client *c, const char *what, int err)
{
    if (c->st->first_error[0] == '\0')
        snprintf(c->st->first_error, sizeof(c->st->first_error), "%s: %s", what,
                 strerror(err));
}

/* The first TLS failure, for the report: OpenSSL's reason, or the
 * system's when OpenSSL has none. */
static void note_tls_error(struct client *c, const char *what)
{
    unsigned long e = ERR_peek_error();
    if (c->st->first_error[0] == '\0') {
        if (e) {
            char text[128];
            ERR_error_string_n(e, text, sizeof(text));
            snprintf(c->st->first_error, sizeof(c->st->first_error), "%s: %s", what, text);
        } else if (errno) {
            note_error(c, what, errno);
        }
    }
    ERR_clear_error();
}

static void wake_reaper(struct client *c)
{
    event_active(c->reaper, EV_TIMEOUT, 0);
}

static void push(struct sess *s, enum stage st)
{
    if (s->qlen == QMAX) {
        /* Cannot happen: the most a session queues is bounded above. */
        fprintf(stderr, "moat-bench: internal error: reply queue full\n");
        abort();
    }
    s->q[(s->qhead + s->qlen) % QMAX] = st;
    s->qlen++;
}

static enum stage pop(struct sess *s)
{
    enum stage st = s->q[s->qhead];
    s->qhead = (s->qhead + 1) % QMAX;
    s->qlen--;
    return st;
}

/* The stage a failure now would be blamed on. */
static enum stage cur_stage(const struct sess *s)
{
    if (!s->connected)
        return ST_CONNECT;
    if (s->handshaking)
        return ST_TLS;
    if (s->qlen > 0)
        return s->q[s->qhead];
    return s->quit_sent ? ST_QUIT : ST_EHLO;
}

static void outcome(struct sess *s, bool ok)
{
    if (s->counted)
        return;
    s->counted = true;
    s->ok = ok;
    if (ok)
        s->c->st->ok++;
    else
        s->c->st->failed++;
}

/* End the session.  normal: it ended by our QUIT, not by a failure. */
static void sess_close(struct sess *s, bool normal)
{
    struct client *c = s->c;
    if (s->dead)
        return;
    double now = mono_now();
    s->dead = true;
    outcome(s, false);   /* no-op when the transaction already counted */
    if (normal && s->ok)
        samples_add(&c->st->session, now - s->t_start);
    if (c->o->mode != MODE_IDLE)
        c->st->t_end = now;
    if (s->counts_active) {
        s->counts_active = false;
        c->active--;
    }
    if (s->holding) {
        s->holding = false;
        c->holding--;
    }
    if (s->rev != NULL)
        event_del(s->rev);
    if (s->wev != NULL)
        event_del(s->wev);
    if (s->ssl != NULL) {
        if (normal && s->tls_done) {
            /* A session that ended with QUIT is a good one: mark it shut
             * down, or OpenSSL would never offer it again. */
            SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
            SSL_SESSION *ss = s->slot >= 0 ? SSL_get1_session(s->ssl) : NULL;
            if (ss != NULL && SSL_SESSION_is_resumable(ss)) {
                SSL_SESSION_free(c->slot_sess[s->slot]);
                c->slot_sess[s->slot] = ss;
            } else {
                SSL_SESSION_free(ss);
            }
        }
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->slot >= 0) {
        c->free_slots[c->nfree++] = s->slot;
        s->slot = -1;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        c->live = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = NULL;
    s->next = c->dead;
    c->dead = s;
    wake_reaper(c);
}

static void sess_fail(struct sess *s, enum stage st, enum fail_kind k)
{
    s->c->st->fails[st][k]++;
    sess_close(s, false);
}

static void send_cmd(struct sess *s, enum stage st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_cmd(struct sess *s, enum stage st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(s->out, fmt, ap);
    va_end(ap);
    push(s, st);
}

static void send_quit(struct sess *s)
{
    if (s->quit_sent)
        return;
    s->quit_sent = true;
    send_cmd(s, ST_QUIT, "QUIT\r\n");
}

static void send_rcpt(struct sess *s)
{
    const struct bench_opts *o = s->c->o;
    send_cmd(s, ST_RCPT, "RCPT TO:<%s>\r\n", o->rcpt[s->rcpt_sent]);
    s->rcpt_sent++;
}

static void txn_fail(struct sess *s)
{
    s->txn_failed = true;
    outcome(s, false);
}

static void begin_txn(struct sess *s)
{
    const struct bench_opts *o = s->c->o;
    s->t_mail = mono_now();
    send_cmd(s, ST_MAIL, "MAIL FROM:<%s>\r\n", o->from);
    if (!s->pipelined)
        return;
    while (s->rcpt_sent < o->nrcpt)
        send_rcpt(s);
    if (o->mode == MODE_SEND) {
        send_cmd(s, ST_DATA, "DATA\r\n");
    } else {
        send_cmd(s, ST_RSET, "RSET\r\n");
        send_quit(s);
    }
}

static void send_body(struct sess *s)
{
    struct client *c = s->c;
    struct evbuffer *out = s->out;
    char hdr[1024];
    size_t n = msg_header(&c->msg, c->o, s->seq, hdr, sizeof(hdr));
    evbuffer_add(out, hdr, n);
    if (c->msg.body_len > 0)
        evbuffer_add_reference(out, c->msg.body, c->msg.body_len, NULL, NULL);
    evbuffer_add(out, ".\r\n", 3);
    push(s, ST_DOT);
    /* Until the output drains, the queueing time stands in. */
    s->t_dot = mono_now();
    s->dot_pending = true;
    if (s->pipelined)
        send_quit(s);
}

/* Every RCPT has been answered. */
static void after_rcpts(struct sess *s, double now)
{
    const struct bench_opts *o = s->c->o;
    if (o->mode == MODE_REJECT) {
        if (!s->txn_failed && s->rcpt_5xx == o->nrcpt) {
            samples_add(&s->c->st->txn, now - s->t_mail);
            outcome(s, true);
        } else {
            txn_fail(s);
        }
        if (!s->pipelined)
            send_cmd(s, ST_RSET, "RSET\r\n");
        return;
    }
    if (s->pipelined)
        return;   /* DATA is already on its way */
    if (s->txn_failed || s->rcpt_ok == 0) {
        txn_fail(s);
        send_quit(s);
        return;
    }
    send_cmd(s, ST_DATA, "DATA\r\n");
}

static void begin_hold(struct sess *s)
{
    struct client *c = s->c;
    s->holding = true;
    c->holding++;
    outcome(s, true);
    if (s->counts_active) {
        s->counts_active = false;
        c->active--;
    }
    /* An idle connection is the point: no reply timeout while holding.
     * event_add() with no timeout keeps an old one, so delete first. */
    event_del(s->rev);
    event_add(s->rev, NULL);
    wake_reaper(c);
}

static void tls_start(struct sess *s);

static void on_reply(struct sess *s, enum stage st, int code)
{
    struct client *c = s->c;
    const struct bench_opts *o = c->o;
    double now = mono_now();
    c->st->codes[st][code]++;

    switch (st) {
    case ST_GREETING:
        if (code != 220) {
            sess_close(s, false);
            return;
        }
        if (o->mode == MODE_HANDSHAKE && s->tls_done) {
            send_quit(s);   /* implicit TLS: the handshake is behind us */
            return;
        }
        send_cmd(s, ST_EHLO, "EHLO %s\r\n", o->helo);
        return;
    case ST_EHLO:
        if (code != 250) {
            sess_close(s, false);
            return;
        }
        if (o->tls == TLS_STARTTLS && !s->tls_done) {
            send_cmd(s, ST_STARTTLS, "STARTTLS\r\n");
            return;
        }
        samples_add(&c->st->setup, now - s->t_start);
        if (o->mode == MODE_IDLE) {
            begin_hold(s);
            return;
        }
        if (o->pipelining && !s->offers_pipelining)
            c->st->no_pipelining++;
        s->pipelined = o->pipelining && s->offers_pipelining;
        begin_txn(s);
        return;
    case ST_MAIL:
        if (code / 100 != 2) {
            txn_fail(s);
            if (!s->pipelined)
                send_quit(s);
            return;
        }
        if (!s->pipelined)
            send_rcpt(s);
        return;
    case ST_RCPT:
        s->rcpt_answered++;
        if (code / 100 == 2)
            s->rcpt_ok++;
        else if (code / 100 == 5)
            s->rcpt_5xx++;
        if (!s->pipelined && !s->txn_failed && s->rcpt_sent < o->nrcpt) {
            send_rcpt(s);
            return;
        }
        if (s->rcpt_answered == s->rcpt_sent)
            after_rcpts(s, now);
        return;
    case ST_DATA:
        if (code == 354) {
            send_body(s);
            return;
        }
        txn_fail(s);
        send_quit(s);
        return;
    case ST_DOT:
        if (code / 100 == 2 && !s->txn_failed) {
            samples_add(&c->st->txn, now - s->t_mail);
            samples_add(&c->st->dot, now - s->t_dot);
            outcome(s, true);
        } else {
            txn_fail(s);
        }
        send_quit(s);
        return;
    case ST_RSET:
        send_quit(s);
        return;
    case ST_QUIT:
        sess_close(s, true);
        return;
    case ST_STARTTLS:
        if (code != 220) {
            sess_close(s, false);
            return;
        }
        tls_start(s);
        return;
    default:
        sess_fail(s, st, F_PROTOCOL);
        return;
    }
}

/* One reply line, without its CRLF. */
static void on_line(struct sess *s, const char *line, size_t len)
{
    if (len < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
        line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-')) {
        sess_fail(s, cur_stage(s), F_PROTOCOL);
        return;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    bool more = len > 3 && line[3] == '-';
    if (s->qlen == 0 && s->holding) {
        /* An idle connection told it is being closed (a 421 on timeout or
         * shutdown): the server's right, not a protocol error. */
        s->c->st->closed_in_hold++;
        sess_close(s, false);
        return;
    }
    if (s->qlen == 0 || (s->ml_code != 0 && code != s->ml_code)) {
        sess_fail(s, cur_stage(s), F_PROTOCOL);
        return;
    }
    if (s->q[s->qhead] == ST_EHLO && len >= 14 && strncasecmp(line + 4, "PIPELINING", 10) == 0 &&
        (len == 14 || line[14] == ' '))
        s->offers_pipelining = true;
    if (more) {
        s->ml_code = code;
        return;
    }
    s->ml_code = 0;
    on_reply(s, pop(s), code);
}

/* Hand queued output to TLS; false when the session failed. */
static bool flush_tls(struct sess *s)
{
    while (evbuffer_get_length(s->out) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(s->out, -1, NULL, &v, 1) < 1)
            break;
        /* A retried write may see a longer first chunk (more was queued
         * behind it): SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER and partial
         * writes make that legal. */
        size_t len = v.iov_len > 65536 ? 65536 : v.iov_len;
        ERR_clear_error();
        errno = 0;
        int n = SSL_write(s->ssl, v.iov_base, (int)len);
        if (n > 0) {
            evbuffer_drain(s->out, (size_t)n);
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) {
            event_add(s->wev, NULL);
            return true;
        }
        if (e == SSL_ERROR_WANT_READ)
            return true;
        enum stage st = cur_stage(s);
        note_tls_error(s->c, stage_name(st));
        sess_fail(s, st, e == SSL_ERROR_SSL ? F_TLS : F_CLOSED);
        return false;
    }
    return true;
}

/* Hand queued output to the kernel (or to TLS); what it will not take yet
 * waits for the write event. */
static void flush(struct sess *s)
{
    if (s->dead || s->handshaking || evbuffer_get_length(s->out) == 0)
        return;
    if (s->ssl != NULL) {
        if (!flush_tls(s) || evbuffer_get_length(s->out) > 0)
            return;
    } else {
        int n = evbuffer_write(s->out, s->fd);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            note_error(s->c, stage_name(cur_stage(s)), errno);
            sess_fail(s, cur_stage(s), s->connected ? F_CLOSED : F_CONNECT);
            return;
        }
        if (evbuffer_get_length(s->out) > 0) {
            event_add(s->wev, NULL);
            return;
        }
    }
    /* The whole message, dot included, has left for the kernel. */
    if (s->dot_pending) {
        s->dot_pending = false;
        s->t_dot = mono_now();
    }
}

/* The peer closed, reset or never accepted the connection. */
static void on_close(struct sess *s, int err)
{
    struct client *c = s->c;
    enum stage st = cur_stage(s);
    if (!s->connected) {
        note_error(c, "connect", err ? err : ECONNRESET);
        sess_fail(s, ST_CONNECT, F_CONNECT);
        return;
    }
    if (s->qlen == 0 && !s->handshaking) {
        /* Closed while nothing was asked: only an idle connection can be here. */
        if (s->holding)
            c->st->closed_in_hold++;
        sess_close(s, s->quit_sent);
        return;
    }
    if (err)
        note_error(c, stage_name(st), err);
    sess_fail(s, st, F_CLOSED);
}

/* Read what the socket (or TLS) has: > 0 bytes, 0 the peer closed, -1
 * with errno EAGAIN for nothing more yet, or another errno (EPROTO: TLS
 * says the stream is broken). */
static ssize_t sess_read(struct sess *s, char *buf, size_t cap)
{
    if (s->ssl == NULL)
        return read(s->fd, buf, cap);
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(s->ssl, buf, (int)cap);
    if (n > 0)
        return n;
    switch (SSL_get_error(s->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        event_add(s->wev, NULL);
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0)
            return 0;
        return -1;
    default:
        note_tls_error(s->c, stage_name(cur_stage(s)));
        errno = EPROTO;
        return -1;
    }
}

/* Everything there is to read now, reply by reply; then what the replies
 * asked for goes out in one write. */
static void read_input(struct sess *s)
{
    for (;;) {
        ssize_t n = sess_read(s, s->in + s->inlen, sizeof(s->in) - s->inlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            if (errno == EPROTO) {
                sess_fail(s, cur_stage(s), F_TLS);
                return;
            }
            on_close(s, errno);
            return;
        }
        if (n == 0) {
            on_close(s, 0);
            return;
        }
        s->connected = true;
        s->inlen += (size_t)n;

        size_t pos = 0;
        while (!s->dead && !s->handshaking) {
            char *nl = memchr(s->in + pos, '\n', s->inlen - pos);
            if (nl == NULL)
                break;
            size_t end = (size_t)(nl - s->in);
            size_t len = end - pos;
            if (len > 0 && s->in[end - 1] == '\r')
                len--;
            if (len > REPLY_LINE_MAX) {
                sess_fail(s, cur_stage(s), F_PROTOCOL);
                return;
            }
            s->in[pos + len] = '\0';
            on_line(s, s->in + pos, len);
            pos = end + 1;
        }
        if (s->dead)
            return;
        if (s->handshaking) {
            /* Plaintext after "220 Ready to start TLS" is not ours to
             * read (the server could not have meant it). */
            s->inlen = 0;
            return;
        }
        if (pos > 0) {
            memmove(s->in, s->in + pos, s->inlen - pos);
            s->inlen -= pos;
        }
        if (s->inlen > REPLY_LINE_MAX) {
            /* A partial line already longer than any reply line may be. */
            sess_fail(s, cur_stage(s), F_PROTOCOL);
            return;
        }
        /* Plaintext: one read per readiness (the event is level-triggered).
         * TLS: OpenSSL may hold decrypted bytes the socket no longer
         * announces, so read until it says there is nothing more. */
        if (s->ssl == NULL)
            break;
    }
    flush(s);
}

/* The handshake is done: on to what the mode wants next. */
static void tls_established(struct sess *s)
{
    struct client *c = s->c;
    const struct bench_opts *o = c->o;
    s->handshaking = false;
    s->tls_done = true;
    samples_add(&c->st->handshake, mono_now() - s->t_tls);
    if (SSL_session_reused(s->ssl) == 1)
        c->st->tls_resumed++;
    else
        c->st->tls_full++;
    if (o->mode == MODE_HANDSHAKE) {
        outcome(s, true);
        if (o->tls == TLS_STARTTLS)
            send_quit(s);
        /* implicit: QUIT once the greeting is read */
    } else if (o->tls == TLS_STARTTLS) {
        /* RFC 3207: forget what the first EHLO said, ask again */
        s->offers_pipelining = false;
        send_cmd(s, ST_EHLO, "EHLO %s\r\n", o->helo);
    }
    read_input(s);
}

/* One step of the client handshake, from the read or write event. */
static void tls_step(struct sess *s)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        tls_established(s);
        return;
    }
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return;
    if (e == SSL_ERROR_WANT_WRITE) {
        event_add(s->wev, NULL);
        return;
    }
    bool closed = e != SSL_ERROR_SSL && ERR_peek_error() == 0;
    note_tls_error(s->c, "TLS handshake");
    sess_fail(s, ST_TLS, closed ? F_CLOSED : F_TLS);
}

static void tls_start(struct sess *s)
{
    struct client *c = s->c;
    s->ssl = SSL_new(c->ssl_ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
        note_tls_error(c, "TLS setup");
        sess_fail(s, ST_TLS, F_TLS);
        return;
    }
    SSL_set_connect_state(s->ssl);
    if (s->slot >= 0 && c->slot_sess[s->slot] != NULL)
        SSL_set_session(s->ssl, c->slot_sess[s->slot]);
    s->handshaking = true;
    s->t_tls = mono_now();
    tls_step(s);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sess *s = arg;
    if (s->handshaking)
        tls_step(s);
    else
        flush(s);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sess *s = arg;

    if (what & EV_TIMEOUT) {
        /* Connected but never greeted, or never connected at all? */
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        if (!s->connected && getpeername(s->fd, (struct sockaddr *)&peer, &plen) == 0)
            s->connected = true;
        sess_fail(s, cur_stage(s), F_TIMEOUT);
        return;
    }
    if (s->handshaking) {
        s->connected = true;
        tls_step(s);
        return;
    }
    read_input(s);
}

static void launch(struct client *c)
{
    const struct bench_opts *o = c->o;
    struct sess *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "moat-bench: out of memory\n");
        exit(2);
    }
    s->c = c;
    s->fd = -1;
    s->slot = c->nfree > 0 ? c->free_slots[--c->nfree] : -1;
    s->seq = ++c->launched;
    s->t_start = mono_now();
    s->counts_active = true;
    c->active++;
    c->st->started++;
    s->next = c->live;
    if (c->live != NULL)
        c->live->prev = s;
    c->live = s;

    s->fd = socket(o->dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        note_error(c, "socket", errno);
        sess_fail(s, ST_CONNECT, F_CONNECT);
        return;
    }
    if (o->have_src || o->have_range) {
        /* Choose the port at connect(), as for an unbound socket, so
         * that TIME_WAIT pairs from earlier runs do not exhaust bind(). */
        int one = 1;
        (void)setsockopt(s->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_storage src;
        socklen_t srclen = o->srclen;
        if (o->have_range) {
            /* Sessions take the block's addresses in launch order, so a
             * run of at most range_size sessions never repeats a client. */
            struct sockaddr_in *a = (struct sockaddr_in *)&src;
            memset(&src, 0, sizeof(src));
            a->sin_family = AF_INET;
            a->sin_addr.s_addr =
                htonl((uint32_t)(o->range_base + (o->range_next + s->seq - 1) % o->range_size));
            srclen = sizeof(*a);
        } else {
            memcpy(&src, &o->src, sizeof(src));
        }
        if (bind(s->fd, (const struct sockaddr *)&src, srclen) < 0) {
            note_error(c, "bind", errno);
            sess_fail(s, ST_CONNECT, F_CONNECT);
            return;
        }
    }
    /* Each write is a whole command group; Nagle would only add the
     * client's own delays to the server's figures. */
    int nodelay = 1;
    (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
    s->out = evbuffer_new();
    s->rev = event_new(c->base, s->fd, EV_READ | EV_PERSIST, read_cb, s);
    s->wev = event_new(c->base, s->fd, EV_WRITE, write_cb, s);
    if (s->out == NULL || s->rev == NULL || s->wev == NULL) {
        fprintf(stderr, "moat-bench: out of memory\n");
        exit(2);
    }
    if (connect(s->fd, (const struct sockaddr *)&o->dst, o->dstlen) < 0 && errno != EINPROGRESS) {
        note_error(c, "connect", errno);
        sess_fail(s, ST_CONNECT, F_CONNECT);
        return;
    }
    /* No write event for the connect: the greeting (or the error) makes
     * the socket readable, and the reply timeout covers both. */
    push(s, ST_GREETING);
    event_add(s->rev, c->tv_timeout);
    /* Implicit TLS: the ClientHello waits in the kernel for the connect. */
    if (o->tls == TLS_IMPLICIT)
        tls_start(s);
}

static void fill(struct client *c)
{
    while (!c->stopping && c->launched < c->o->count && c->active < c->o->concurrency)
        launch(c);
}

static struct timeval to_tv(double secs)
{
    struct timeval tv;
    if (secs < 0)
        secs = 0;
    tv.tv_sec = (time_t)secs;
    tv.tv_usec = (suseconds_t)((secs - (double)tv.tv_sec) * 1e6);
    return tv;
}

static void hold_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    c->hold_over = true;
    c->st->hold_seconds = mono_now() - c->t_hold;
    c->st->open_at_quit = c->holding;
    struct sess *next;
    for (struct sess *s = c->live; s != NULL; s = next) {
        next = s->next;   /* flush() may end s, which moves it to the dead list */
        if (!s->holding)
            continue;
        s->holding = false;
        c->holding--;
        event_add(s->rev, c->tv_timeout);
        send_quit(s);
        flush(s);
    }
    wake_reaper(c);
}

/* idle: once every connection is up (or failed), hold them all. */
static void maybe_start_hold(struct client *c)
{
    const struct bench_opts *o = c->o;
    if (o->mode != MODE_IDLE || c->hold_started || c->stopping || c->active > 0 ||
        c->launched < o->count)
        return;
    c->hold_started = true;
    c->t_hold = mono_now();
    c->st->open_at_hold = c->holding;
    /* Keep a little of --max-seconds for the QUITs. */
    double left = o->max_seconds - (c->t_hold - c->st->t_begin) - 2.0;
    double hold = o->hold < left ? o->hold : left;
    if (hold < 0 || c->holding == 0)
        hold = 0;
    /* run.sh waits for this line before it samples the server's memory. */
    printf("idle: %lu of %lu connections open, holding for %.1f s\n", c->holding, o->count, hold);
    fflush(stdout);
    struct timeval tv = to_tv(hold);
    evtimer_add(c->hold_timer, &tv);
}

static void sess_free(struct sess *s)
{
    if (s->rev != NULL)
        event_free(s->rev);
    if (s->wev != NULL)
        event_free(s->wev);
    if (s->out != NULL)
        evbuffer_free(s->out);
    free(s);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    while (c->dead != NULL) {
        struct sess *s = c->dead;
        c->dead = s->next;
        sess_free(s);
    }
    fill(c);
    maybe_start_hold(c);
    bool all_launched = c->stopping || c->launched >= c->o->count;
    bool hold_done = c->o->mode != MODE_IDLE || c->hold_over || c->stopping;
    if (c->live == NULL && all_launched && hold_done)
        event_base_loopbreak(c->base);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    c->stopping = true;
    if (c->o->mode == MODE_IDLE && c->hold_started && !c->hold_over) {
        c->st->hold_seconds = mono_now() - c->t_hold;
        c->st->open_at_quit = c->holding;
    }
    while (c->live != NULL)
        sess_fail(c->live, cur_stage(c->live), F_DEADLINE);
    wake_reaper(c);
}

int bench_run(const struct bench_opts *o, struct bench_stats *st)
{
    struct client c;
    memset(&c, 0, sizeof(c));
    c.o = o;
    c.st = st;
    msg_init(&c.msg, o);
    st->msg_size = c.msg.hdr_len + c.msg.body_len;

    if (o->tls != TLS_OFF) {
        c.ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (c.ssl_ctx == NULL) {
            fprintf(stderr, "moat-bench: cannot create a TLS context\n");
            msg_free(&c.msg);
            return -1;
        }
        /* The bench measures the server, it does not judge its certificate. */
        SSL_CTX_set_verify(c.ssl_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(c.ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* A server that closes after 221 without close_notify is normal for SMTP. */
        SSL_CTX_set_options(c.ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
        /* Sessions are kept per slot by hand, never in OpenSSL's cache. */
        SSL_CTX_set_session_cache_mode(c.ssl_ctx, SSL_SESS_CACHE_OFF);
        if (o->resume) {
            c.slot_sess = calloc(o->concurrency, sizeof(*c.slot_sess));
            c.free_slots = calloc(o->concurrency, sizeof(*c.free_slots));
            if (c.slot_sess == NULL || c.free_slots == NULL) {
                fprintf(stderr, "moat-bench: out of memory\n");
                exit(2);
            }
            for (unsigned i = 0; i < o->concurrency; i++)
                c.free_slots[c.nfree++] = (int)(o->concurrency - 1 - i);
        }
    }

    c.base = event_base_new();
    if (c.base == NULL) {
        fprintf(stderr, "moat-bench: cannot create an event base\n");
        msg_free(&c.msg);
        return -1;
    }
    /* Every session waits with the same timeout: a common timeout keeps
     * them in one queue instead of the general timer heap. */
    struct timeval tv = to_tv(o->timeout);
    c.tv_timeout = event_base_init_common_timeout(c.base, &tv);
    c.reaper = event_new(c.base, -1, 0, reap_cb, &c);
    c.deadline = evtimer_new(c.base, deadline_cb, &c);
    c.hold_timer = evtimer_new(c.base, hold_cb, &c);
    if (c.reaper == NULL || c.deadline == NULL || c.hold_timer == NULL) {
        fprintf(stderr, "moat-bench: cannot create events\n");
        return -1;
    }
    struct timeval dl = to_tv(o->max_seconds);
    evtimer_add(c.deadline, &dl);

    st->t_begin = mono_now();
    st->t_end = st->t_begin;
    fill(&c);
    wake_reaper(&c);
    event_base_dispatch(c.base);

    /* The loop ends only with no live session; free what the reaper has not. */
    while (c.live != NULL)
        sess_fail(c.live, cur_stage(c.live), F_DEADLINE);
    while (c.dead != NULL) {
        struct sess *s = c.dead;
        c.dead = s->next;
        sess_free(s);
    }
    event_free(c.reaper);
    event_free(c.deadline);
    event_free(c.hold_timer);
    event_base_free(c.base);
    msg_free(&c.msg);
    if (c.slot_sess != NULL)
        for (unsigned i = 0; i < o->concurrency; i++)
            SSL_SESSION_free(c.slot_sess[i]);
    free(c.slot_sess);
    free(c.free_slots);
    SSL_CTX_free(c.ssl_ctx);
    return 0;
}
