/*
 * clamd: the INSTREAM client for content_scanner (see clamd.h).
 *
 * Owns: per scanner, the parsed address; per scan, one non-blocking
 * stream socket, its read/write events, one timer, the bytes not yet
 * handed to the kernel and the reply read so far.  The socket is plain
 * (no bufferevent) so that every send can carry MSG_NOSIGNAL and the
 * backlog is exactly what we still hold.
 *
 * The wire: "zINSTREAM\0", then chunks <uint32 big-endian length><bytes>,
 * then a zero-length chunk; clamd answers one NUL-terminated line.
 * Message bytes collect in `pending`; whole CHUNK-sized pieces are framed
 * into `out` at once, a shorter tail only when `out` has drained (so a
 * session that writes line by line costs one send per loop turn, not one
 * per line).  clamd may answer before we are done (its StreamMaxLength,
 * "INSTREAM size limit exceeded. ERROR") and close: a failed send stops
 * the sending, never the reading, so that reply is still seen.
 *
 * Never: blocks, raises SIGPIPE, calls the caller back from inside one of
 * its own functions (every verdict is delivered from a loop event, and a
 * failure only after scan_finish), or calls back after scan_cancel.
 */
#include "content/clamd.h"

#include "core/endpoint.h"
#include "core/util.h"

#include <event2/event.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* clamd takes chunks of any size up to StreamMaxLength; 64 KB keeps the
 * framing cost negligible and each send reasonably sized. */
#define CHUNK (64 * 1024)
/* A verdict line is short; anything longer without its NUL is not clamd. */
#define REPLY_MAX 1024
/* The most of a name or reason we keep (it ends up in replies and headers). */
#define DETAIL_MAX 200

struct scanner {
    char *name;                /* the spec as given */
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned timeout_ms;
};

struct scan {
    scanner_t *sc;
    struct event_base *base;
    scan_done_fn cb;
    void *arg;
    int fd;                    /* -1 once closed */
    struct event *rev, *wev, *timer, *report;
    bool connecting;
    bool wev_on, timer_on;
    bool finished;             /* scan_finish was called */
    bool send_dead;            /* clamd stopped taking bytes: waiting for its reply or EOF */
    bool have_result;          /* status/detail hold the verdict */
    bool in_cb;                /* scan_cancel is then a no-op: deliver() frees */
    buf_t pending;             /* message bytes not yet framed */
    buf_t out;                 /* framed bytes; out_off of them sent */
    size_t out_off;
    buf_t reply;
    char send_error[160];      /* why sending stopped, for when no reply follows */
    scan_status status;
    buf_t detail;
};

/* ---------------------------------------------------------- the reply */

/* Printable ASCII only, cut at DETAIL_MAX: the text goes into SMTP
 * replies, headers and log lines. */
static void put_clean(buf_t *b, const char *s, size_t n)
{
    if (n > DETAIL_MAX)
        n = DETAIL_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf_putc(b, c >= 0x20 && c < 0x7f ? (char)c : '?');
    }
}

scan_status clamd_parse_reply(const char *s, size_t n, buf_t *detail)
{
    static const char prefix[] = "stream: ", found[] = " FOUND", error[] = " ERROR";
    const size_t plen = sizeof prefix - 1, flen = sizeof found - 1, elen = sizeof error - 1;
    buf_reset(detail);
    while (n && (s[n - 1] == '\0' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    if (n == 0) {
        buf_puts(detail, "empty reply");
        return SCAN_FAILED;
    }
    bool clean_text = memchr(s, 0, n) == NULL;
    if (clean_text && n == plen + 2 && memcmp(s, "stream: OK", n) == 0)
        return SCAN_CLEAN;
    if (clean_text && n > plen + flen && memcmp(s, prefix, plen) == 0 && memcmp(s + n - flen, found, flen) == 0) {
        put_clean(detail, s + plen, n - plen - flen);
        return SCAN_INFECTED;
    }
    if (clean_text && n >= elen && memcmp(s + n - elen, error, elen) == 0) {
        put_clean(detail, s, n);
        return SCAN_FAILED;
    }
    buf_puts(detail, "unexpected reply: ");
    put_clean(detail, s, n);
    return SCAN_FAILED;
}

/* ------------------------------------------------------------ scanner */

scanner_t *scanner_new(const char *spec, const char *base_dir, unsigned timeout_ms, buf_t *err)
{
    if (!spec || !str_istarts(spec, "clamd:")) {
        buf_printf(err, "content_scanner: \"%s\": need clamd:unix:/path or clamd:inet:host:port", spec ? spec : "");
        return NULL;
    }
    const char *ep = spec + 6;
    if (!str_istarts(ep, "unix:") && !str_istarts(ep, "inet:")) {
        buf_printf(err, "content_scanner: \"%s\": need clamd:unix:/path or clamd:inet:host:port", spec);
        return NULL;
    }
    scanner_t *sc = xcalloc(1, sizeof *sc);
    buf_t why = BUF_INIT;
    char *text = NULL;   /* the resolved address: the caller logs the spec instead */
    if (endpoint_resolve(ep, false, base_dir, &sc->sa, &sc->salen, &text, &why) != 0) {
        /* endpoint's message names the part after "clamd:"; name the whole. */
        const char *w = buf_cstr(&why);
        size_t skip = strlen(ep) + 4;   /* "\"EP\": " */
        if (why.len > skip && w[0] == '"' && strncmp(w + 1, ep, strlen(ep)) == 0)
            w += skip;
        buf_printf(err, "content_scanner: \"%s\": %s", spec, w);
        buf_free(&why);
        free(sc);
        return NULL;
    }
    buf_free(&why);
    free(text);
    sc->name = xstrdup(spec);
    sc->timeout_ms = timeout_ms ? timeout_ms : 1;
    return sc;
}

void scanner_free(scanner_t **scp)
{
    scanner_t *sc = scp ? *scp : NULL;
    if (!sc)
        return;
    *scp = NULL;
    free(sc->name);
    free(sc);
}

const char *scanner_name(const scanner_t *sc)
{
    return sc->name;
}

/* --------------------------------------------------------------- scan */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);
static void on_report(evutil_socket_t fd, short what, void *arg);

static size_t unsent(const scan_t *s)
{
    return s->out.len - s->out_off;
}

static void frame(scan_t *s, const char *data, size_t n)
{
    unsigned char hdr[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                            (unsigned char)n};
    if (s->out_off && s->out_off == s->out.len) {
        buf_reset(&s->out);
        s->out_off = 0;
    }
    buf_append(&s->out, hdr, sizeof hdr);
    if (n)
        buf_append(&s->out, data, n);
}

/* Is clamd the one we are waiting for?  Then the timer runs: while
 * connecting, while bytes wait for the socket (each send that makes
 * progress restarts it) and while the verdict is owed. */
static bool waiting_on_clamd(const scan_t *s)
{
    if (s->fd < 0 || s->have_result)
        return false;
    return s->connecting || s->send_dead || unsent(s) || s->pending.len || s->finished;
}

static void timer_sync(scan_t *s, bool progress)
{
    if (!waiting_on_clamd(s)) {
        if (s->timer_on)
            evtimer_del(s->timer);
        s->timer_on = false;
        return;
    }
    if (s->timer_on && !progress)
        return;
    struct timeval tv = {(time_t)(s->sc->timeout_ms / 1000), (suseconds_t)(s->sc->timeout_ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
    s->timer_on = true;
}

static void want_write(scan_t *s, bool on)
{
    if (on == s->wev_on || s->fd < 0)
        return;
    if (on)
        event_add(s->wev, NULL);
    else
        event_del(s->wev);
    s->wev_on = on;
}

static void close_socket(scan_t *s)
{
    if (s->fd < 0)
        return;
    event_del(s->rev);
    event_del(s->wev);
    s->wev_on = false;
    close(s->fd);
    s->fd = -1;
    buf_free(&s->out);
    buf_free(&s->pending);
    s->out_off = 0;
}

static void scan_free(scan_t *s)
{
    close_socket(s);
    event_free(s->rev);
    event_free(s->wev);
    event_free(s->timer);
    event_free(s->report);
    buf_free(&s->reply);
    buf_free(&s->detail);
    free(s);
}

/* The verdict is known (or the scan has failed): stop talking to clamd. */
static void set_result(scan_t *s, scan_status st, const char *detail)
{
    if (s->have_result)
        return;
    s->have_result = true;
    s->status = st;
    if (detail) {
        buf_reset(&s->detail);
        buf_puts(&s->detail, detail);
    }
    close_socket(s);
    timer_sync(s, false);
}

static void set_failed(scan_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_failed(scan_t *s, const char *fmt, ...)
{
    if (s->have_result)
        return;
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    set_result(s, SCAN_FAILED, text);
}

/* Hand the verdict over; from loop events only.  The scan is gone after. */
static void deliver(scan_t *s)
{
    s->in_cb = true;
    s->cb(s->arg, s->status, buf_cstr(&s->detail));
    s->in_cb = false;
    scan_free(s);
}

/* A verdict reached from a loop event: delivered now if the caller has
 * finished writing, otherwise kept for scan_finish. */
static void maybe_deliver(scan_t *s)
{
    if (s->have_result && s->finished)
        deliver(s);
}

scan_t *scan_start(scanner_t *sc, struct event_base *base, scan_done_fn cb, void *arg)
{
    scan_t *s = xcalloc(1, sizeof *s);
    s->sc = sc;
    s->base = base;
    s->cb = cb;
    s->arg = arg;
    s->fd = -1;
    s->timer = evtimer_new(base, on_timer, s);
    s->report = event_new(base, -1, 0, on_report, s);
    int fd = socket(sc->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        s->rev = event_new(base, -1, 0, on_read, s);
        s->wev = event_new(base, -1, 0, on_write, s);
        set_failed(s, "socket: %s", strerror(errno));
        return s;
    }
    s->fd = fd;
    s->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, s);
    s->wev = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, s);
    buf_append(&s->out, "zINSTREAM", sizeof "zINSTREAM");   /* with its NUL */
    if (connect(fd, (const struct sockaddr *)&sc->sa, sc->salen) != 0) {
        if (errno != EINPROGRESS) {
            /* A unix socket answers at once; EAGAIN there is a full
             * listen queue, which we do not wait out. */
            if (errno == EAGAIN)
                set_failed(s, "connect: clamd's listen queue is full");
            else
                set_failed(s, "connect: %s", strerror(errno));
            return s;
        }
        s->connecting = true;
    } else {
        event_add(s->rev, NULL);
    }
    want_write(s, true);
    timer_sync(s, true);
    return s;
}

void scan_write(scan_t *s, const char *data, size_t len)
{
    if (s->fd < 0 || s->have_result || s->send_dead || s->finished || len == 0)
        return;   /* nobody to send it to: the failure is reported at the end */
    if (s->pending.len) {
        size_t take = CHUNK - s->pending.len < len ? CHUNK - s->pending.len : len;
        buf_append(&s->pending, data, take);
        data += take;
        len -= take;
        if (s->pending.len == CHUNK) {
            frame(s, s->pending.data, s->pending.len);
            buf_reset(&s->pending);
        }
    }
    for (; len >= CHUNK; data += CHUNK, len -= CHUNK)
        frame(s, data, CHUNK);
    if (len)
        buf_append(&s->pending, data, len);
    if (!s->connecting)
        want_write(s, true);
    timer_sync(s, false);
}

size_t scan_backlog(const scan_t *s)
{
    if (s->fd < 0 || s->have_result || s->send_dead)
        return 0;
    return s->pending.len + unsent(s);
}

void scan_finish(scan_t *s)
{
    if (s->finished)
        return;
    s->finished = true;
    if (s->have_result) {
        event_active(s->report, EV_TIMEOUT, 1);
        return;
    }
    if (s->send_dead) {
        timer_sync(s, false);
        return;   /* the reply, EOF or the timer decides */
    }
    if (s->pending.len) {
        frame(s, s->pending.data, s->pending.len);
        buf_free(&s->pending);
    }
    frame(s, NULL, 0);
    if (!s->connecting)
        want_write(s, true);
    timer_sync(s, true);
}

void scan_cancel(scan_t *s)
{
    if (!s)
        return;
    if (!s->in_cb)
        scan_free(s);
}

/* ------------------------------------------------------------- events */

static void on_report(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    deliver(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    scan_t *s = arg;
    s->timer_on = false;
    const char *doing = s->connecting ? "connecting"
                        : s->send_dead || (s->finished && !unsent(s) && !s->pending.len) ? "waiting for the verdict"
                                                                                           : "sending";
    set_failed(s, "timeout %s", doing);
    maybe_deliver(s);
}

/* Sending is over for good (clamd closed, or the socket broke): keep
 * reading, since clamd's reply may already be on its way. */
static void send_stopped(scan_t *s, int err)
{
    snprintf(s->send_error, sizeof s->send_error, "sending: %s", strerror(err));
    s->send_dead = true;
    want_write(s, false);
    buf_free(&s->out);
    buf_free(&s->pending);
    s->out_off = 0;
    timer_sync(s, true);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    scan_t *s = arg;
    if (s->connecting) {
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
            e = errno;
        if (e) {
            set_failed(s, "connect: %s", strerror(e));
            maybe_deliver(s);
            return;
        }
        s->connecting = false;
        event_add(s->rev, NULL);
    }
    bool progress = false;
    for (;;) {
        if (!unsent(s) && s->pending.len) {
            frame(s, s->pending.data, s->pending.len);
            buf_reset(&s->pending);
        }
        size_t n = unsent(s);
        if (!n)
            break;
        ssize_t w = send(fd, s->out.data + s->out_off, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            send_stopped(s, errno);
            return;
        }
        s->out_off += (size_t)w;
        progress = true;
        if ((size_t)w < n)
            break;
    }
    if (!unsent(s) && !s->pending.len) {
        buf_reset(&s->out);
        s->out_off = 0;
        want_write(s, false);
    }
    timer_sync(s, progress);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    scan_t *s = arg;
    char tmp[512];
    for (;;) {
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (s->reply.len)
                set_failed(s, "reading: %s after a partial reply", strerror(errno));
            else if (s->send_dead)
                set_failed(s, "%s", s->send_error);
            else
                set_failed(s, "reading: %s", strerror(errno));
            maybe_deliver(s);
            return;
        }
        if (r == 0) {
            if (s->reply.len)
                set_failed(s, "connection closed in the middle of the reply");
            else if (s->send_dead)
                set_failed(s, "%s", s->send_error);
            else
                set_failed(s, "connection closed before the verdict");
            maybe_deliver(s);
            return;
        }
        const char *nul = memchr(tmp, 0, (size_t)r);
        size_t take = nul ? (size_t)(nul - tmp) : (size_t)r;
        if (s->reply.len + take > REPLY_MAX) {
            set_failed(s, "reply too long");
            maybe_deliver(s);
            return;
        }
        buf_append(&s->reply, tmp, take);
        if (!nul)
            continue;
        buf_t detail = BUF_INIT;
        scan_status st = clamd_parse_reply(s->reply.data, s->reply.len, &detail);
        /* A clean verdict before the whole message went out would vouch
         * for bytes clamd never saw. */
        if (st == SCAN_CLEAN && (!s->finished || unsent(s) || s->send_dead))
            set_failed(s, "a clean verdict before the end of the message");
        else
            set_result(s, st, buf_cstr(&detail));
        buf_free(&detail);
        maybe_deliver(s);
        return;
    }
}

/* ------------------------------------------------------------------ */
/* the service's settings and what a verdict means                     */

int scan_settings_load(const params_t *p, scan_settings_t *out, buf_t *err)
{
    static const char *const actions[] = {[VIRUS_REJECT] = "reject", [VIRUS_HOLD] = "hold",
                                          [VIRUS_DISCARD] = "discard", [VIRUS_HEADER] = "header"};
    memset(out, 0, sizeof *out);
    int bad = 0;
    const char *va = param_str(p, PARAM_content_scanner_virus_action);
    int found = -1;
    for (size_t i = 0; i < ARRAY_LEN(actions); i++)
        if (str_ieq(va, actions[i]))
            found = (int)i;
    if (found < 0) {
        param_where(p, PARAM_content_scanner_virus_action, err);
        buf_printf(err, "content_scanner_virus_action: unknown value \"%s\" (known: reject, hold, discard, header)\n",
                   va);
        bad = -1;
    }
    out->virus_action = found < 0 ? VIRUS_REJECT : (virus_action_t)found;
    const char *fa = param_str(p, PARAM_content_scanner_fail_action);
    out->fail_accept = str_ieq(fa, "accept");
    if (!out->fail_accept && !str_ieq(fa, "defer")) {
        param_where(p, PARAM_content_scanner_fail_action, err);
        buf_printf(err, "content_scanner_fail_action: unknown value \"%s\" (known: defer, accept)\n", fa);
        bad = -1;
    }
    out->size_limit = param_int(p, PARAM_content_scanner_size_limit);
    const char *spec = param_str(p, PARAM_content_scanner);
    while (*spec == ' ' || *spec == '\t')
        spec++;
    if (*spec && bad == 0) {
        long long t = param_int(p, PARAM_content_scanner_timeout);
        unsigned ms = t > 4000000 ? 4000000000u : (unsigned)(t * 1000);
        buf_t why = BUF_INIT;
        out->scanner = scanner_new(spec, param_str(p, PARAM_queue_directory), ms, &why);
        if (!out->scanner) {
            param_where_lines(p, PARAM_content_scanner, buf_cstr(&why), err);
            bad = -1;
        }
        buf_free(&why);
    }
    return bad;
}

void scan_settings_free(scan_settings_t *s)
{
    scanner_free(&s->scanner);
}

/* A header value from the scanner's words: printable, one line, short. */
static void status_header(buf_t *b, const char *status, const char *detail)
{
    buf_printf(b, "X-Virus-Status: %s (", status);
    for (size_t i = 0; detail[i] && i < 200; i++)
        buf_putc(b, (unsigned char)detail[i] < 0x20 || detail[i] == 0x7f ? ' ' : detail[i]);
    buf_puts(b, ")\n");
}

void scan_decide(const scan_settings_t *s, scan_status st, const char *detail, scan_decision_t *d)
{
    d->refuse = d->hold = d->discard = false;
    buf_reset(&d->reply);
    buf_reset(&d->header);
    d->verb = d->note = NULL;
    if (!detail)
        detail = "";
    if (st == SCAN_INFECTED) {
        switch (s->virus_action) {
        case VIRUS_REJECT:
            d->refuse = true;
            buf_printf(&d->reply, "554 5.7.0 message rejected: virus found: %s", detail);
            d->verb = "reject";
            d->note = buf_cstr(&d->reply) + 4;
            break;
        case VIRUS_HOLD:
            d->hold = true;
            d->verb = "hold";
            d->note = "message held: virus found";
            break;
        case VIRUS_DISCARD:
            d->discard = true;
            d->verb = "discard";
            d->note = "message dropped: virus found";
            break;
        case VIRUS_HEADER:
            status_header(&d->header, "Infected", detail);
            d->verb = "warning";
            d->note = "message accepted with X-Virus-Status: Infected";
            break;
        }
    } else if (st == SCAN_FAILED) {
        if (s->fail_accept) {
            status_header(&d->header, "Unscanned", detail);
        } else {
            d->refuse = true;
            buf_puts(&d->reply, "451 4.3.0 Error: virus scanner unavailable");
        }
    }
}

void scan_decision_free(scan_decision_t *d)
{
    buf_free(&d->reply);
    buf_free(&d->header);
}
