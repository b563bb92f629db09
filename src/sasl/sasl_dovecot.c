/*
 * sasl_dovecot: the dovecot backend — a client of Dovecot's
 * authentication protocol (version 1.x, the auth-client socket), the
 * same conversation Postfix's smtpd has with it.
 *
 *   C: VERSION 1 2, CPID <pid>        S: VERSION, MECH..., SPID, CUID, COOKIE, DONE
 *   C: AUTH <id> <mech> service=.. nologin lip= rip= lport= rport= [secured] [resp=]
 *   S: CONT <id> <b64> | OK <id> user=.. | FAIL <id> [reason=..] [temp] [user=..]
 *   C: CONT <id> <b64> | CANCEL <id>
 *
 * Owns: one connection per event loop and socket address for the whole
 * process (a registry; every sasl_server_t naming that address holds a
 * reference, so a reload that builds new servers keeps the connection),
 * the mechanism list of its last handshake, the table of requests in
 * flight keyed by id, and the queue of requests that arrived during a
 * handshake.  Each request waits at most sasl_dovecot_timeout for an
 * answer; a lost connection answers every request waiting on it with
 * SASL_TEMP and is retried with a backoff of 1 s doubling to 30 s.
 *
 * Never: sends a line it built from unchecked client text (responses
 * must be base64 first; other values are tab-escaped), trusts a line
 * from Dovecot beyond SASL_DOVECOT_LINE_MAX, calls a caller back from
 * here (replies go through sasl_reply_later), or logs a response.
 */
#include "sasl/sasl-private.h"

#include "core/endpoint.h"
#include "core/log.h"
#include "core/util.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

double sasl_dovecot_timeout = 30.0;
double sasl_dovecot_backoff_min = 1.0;
double sasl_dovecot_backoff_max = 30.0;

/* ------------------------------------------------------------ the lines */

void sasl_dovecot_escape(buf_t *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        const char *esc = ch == 0 ? "\0010" : ch == '\001' ? "\0011" : ch == '\t' ? "\001t"
                        : ch == '\r' ? "\001r" : ch == '\n' ? "\001n" : NULL;
        if (esc)
            buf_append(out, esc, 2);
        else
            buf_putc(out, ch);
    }
}

void sasl_dovecot_unescape(buf_t *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\001') {
            buf_putc(out, s[i]);
            continue;
        }
        if (++i == len)
            break;   /* a lone escape at the end stands for nothing */
        switch (s[i]) {
        case '0': buf_putc(out, '\0'); break;
        case '1': buf_putc(out, '\001'); break;
        case 't': buf_putc(out, '\t'); break;
        case 'r': buf_putc(out, '\r'); break;
        case 'n':
        case 'l': buf_putc(out, '\n'); break;   /* older documents say l */
        default: buf_putc(out, s[i]); break;
        }
    }
}

static bool parse_uint(const char *s, size_t n, unsigned *out)
{
    if (n == 0 || n > 10)
        return false;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > UINT_MAX)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool field_is(const char *f, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n == w && memcmp(f, word, w) == 0;
}

static bool field_value(const char *f, size_t n, const char *name, const char **v, size_t *vn)
{
    size_t w = strlen(name);
    if (n <= w || memcmp(f, name, w) != 0 || f[w] != '=')
        return false;
    *v = f + w + 1;
    *vn = n - w - 1;
    return true;
}

static const struct {
    const char *word;
    unsigned flag;
} mech_words[] = {
    {"anonymous", SASL_MF_ANONYMOUS},   {"plaintext", SASL_MF_PLAINTEXT},
    {"dictionary", SASL_MF_DICTIONARY}, {"active", SASL_MF_ACTIVE},
    {"forward-secrecy", SASL_MF_FORWARD_SECRECY}, {"mutual-auth", SASL_MF_MUTUAL_AUTH},
    {"private", SASL_MF_PRIVATE},
};

int sasl_dovecot_parse(const char *line, size_t len, dv_line_t *out, const char **why)
{
    buf_reset(&out->name);
    buf_reset(&out->data);
    buf_reset(&out->user);
    buf_reset(&out->reason);
    out->major = out->minor = out->id = out->mech_flags = 0;
    out->temp = out->has_user = out->has_reason = false;
    out->kind = DV_OTHER;

    /* fields: [start, end) pairs over line */
    const char *f[32];
    size_t fl[32];
    size_t nf = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != '\t')
            continue;
        if (nf < ARRAY_LEN(f)) {
            f[nf] = line + start;
            fl[nf] = i - start;
            nf++;
        }
        start = i + 1;
    }
    const char *cmd = f[0];
    size_t cn = fl[0];
    if (field_is(cmd, cn, "VERSION")) {
        out->kind = DV_VERSION;
        if (nf < 3 || !parse_uint(f[1], fl[1], &out->major) || !parse_uint(f[2], fl[2], &out->minor)) {
            *why = "malformed VERSION";
            return -1;
        }
        return 0;
    }
    if (field_is(cmd, cn, "MECH")) {
        out->kind = DV_MECH;
        if (nf < 2 || fl[1] == 0) {
            *why = "malformed MECH";
            return -1;
        }
        sasl_dovecot_unescape(&out->name, f[1], fl[1]);
        if (out->name.len == 0) {   /* a lone escape character unescapes to nothing */
            *why = "malformed MECH";
            return -1;
        }
        for (size_t i = 2; i < nf; i++)
            for (size_t k = 0; k < ARRAY_LEN(mech_words); k++)
                if (field_is(f[i], fl[i], mech_words[k].word))
                    out->mech_flags |= mech_words[k].flag;
        return 0;
    }
    if (field_is(cmd, cn, "SPID") || field_is(cmd, cn, "CUID") || field_is(cmd, cn, "COOKIE")) {
        out->kind = cmd[0] == 'S' ? DV_SPID : cmd[1] == 'U' ? DV_CUID : DV_COOKIE;
        if (nf >= 2)
            sasl_dovecot_unescape(&out->data, f[1], fl[1]);
        return 0;
    }
    if (field_is(cmd, cn, "DONE")) {
        out->kind = DV_DONE;
        return 0;
    }
    bool ok = field_is(cmd, cn, "OK"), cont = field_is(cmd, cn, "CONT"), fail = field_is(cmd, cn, "FAIL");
    if (!ok && !cont && !fail)
        return 0;   /* DV_OTHER: a newer server's command, ignored */
    out->kind = ok ? DV_OK : cont ? DV_CONT : DV_FAIL;
    if (nf < 2 || !parse_uint(f[1], fl[1], &out->id)) {
        *why = ok ? "malformed OK" : cont ? "malformed CONT" : "malformed FAIL";
        return -1;
    }
    if (cont) {
        if (nf >= 3)
            sasl_dovecot_unescape(&out->data, f[2], fl[2]);
        return 0;
    }
    for (size_t i = 2; i < nf; i++) {
        const char *v;
        size_t vn;
        if (field_value(f[i], fl[i], "user", &v, &vn)) {
            buf_reset(&out->user);
            sasl_dovecot_unescape(&out->user, v, vn);
            out->has_user = true;
        } else if (fail && field_value(f[i], fl[i], "reason", &v, &vn)) {
            buf_reset(&out->reason);
            sasl_dovecot_unescape(&out->reason, v, vn);
            out->has_reason = true;
        } else if (fail && field_is(f[i], fl[i], "temp")) {
            out->temp = true;
        } else if (fail && field_value(f[i], fl[i], "code", &v, &vn) && vn == 9 && memcmp(v, "temp_fail", 9) == 0) {
            out->temp = true;   /* newer servers say code=temp_fail */
        }
    }
    return 0;
}

void sasl_dovecot_line_free(dv_line_t *l)
{
    buf_free(&l->name);
    buf_free(&l->data);
    buf_free(&l->user);
    buf_free(&l->reason);
}

void sasl_dovecot_auth_line(buf_t *out, unsigned id, const char *mech, const char *service, const sasl_peer_t *peer,
                            const char *initial)
{
    buf_printf(out, "AUTH\t%u\t", id);
    sasl_dovecot_escape(out, mech, strlen(mech));
    buf_puts(out, "\tservice=");
    sasl_dovecot_escape(out, service, strlen(service));
    /* Authentication only: Dovecot must not treat this as a login it
     * has to prepare a mail session for. */
    buf_puts(out, "\tnologin");
    if (peer && peer->local_addr && *peer->local_addr) {
        buf_puts(out, "\tlip=");
        sasl_dovecot_escape(out, peer->local_addr, strlen(peer->local_addr));
    }
    if (peer && peer->client_addr && *peer->client_addr) {
        buf_puts(out, "\trip=");
        sasl_dovecot_escape(out, peer->client_addr, strlen(peer->client_addr));
    }
    if (peer && peer->local_port)
        buf_printf(out, "\tlport=%u", peer->local_port);
    if (peer && peer->client_port)
        buf_printf(out, "\trport=%u", peer->client_port);
    if (peer && peer->tls)
        buf_puts(out, "\tsecured");
    if (initial) {
        buf_puts(out, "\tresp=");
        if (strcmp(initial, "=") != 0)
            sasl_dovecot_escape(out, initial, strlen(initial));
    }
    buf_putc(out, '\n');
}

/* ------------------------------------------------------------ the connection */

#define DV_BUCKETS 64

enum { DS_DOWN, DS_HANDSHAKE, DS_READY };

struct dv_conn {
    int refs;
    struct event_base *base;
    char *where;                  /* the address, for messages and the registry */
    struct sockaddr_storage sa;
    socklen_t salen;
    struct bufferevent *bev;
    struct event *timer;          /* DOWN: the next attempt; HANDSHAKE: its deadline */
    int state;
    bool got_version;
    bool ever_ready;
    double backoff;
    char **names;                 /* the last handshake's mechanisms */
    unsigned *flags;
    size_t n;
    char **hs_names;              /* the handshake in progress */
    unsigned *hs_flags;
    size_t hs_n, hs_cap;
    unsigned next_id;
    sasl_conv_t *ids[DV_BUCKETS];
    sasl_conv_t *wait_head, *wait_tail;
    char error[256];              /* the last failure, "" after a good handshake */
    dv_line_t line;
    dv_conn_t *next;
};

static dv_conn_t *registry;

static void mechs_free(char ***names, unsigned **flags, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*names)[i]);
    xfree(names);
    xfree(flags);
    *n = 0;
}

static void arm(struct event *ev, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(ev, &tv);
}

static void conn_write(dv_conn_t *c, const buf_t *b)
{
    if (c->bev)
        bufferevent_write(c->bev, b->data, b->len);
}

static void id_add(dv_conn_t *c, sasl_conv_t *v)
{
    sasl_conv_t **b = &c->ids[v->id % DV_BUCKETS];
    v->next = *b;
    *b = v;
    v->registered = true;
}

static sasl_conv_t *id_find(dv_conn_t *c, unsigned id)
{
    for (sasl_conv_t *v = c->ids[id % DV_BUCKETS]; v; v = v->next)
        if (v->id == id)
            return v;
    return NULL;
}

static void id_remove(dv_conn_t *c, sasl_conv_t *v)
{
    if (!v->registered)
        return;
    for (sasl_conv_t **pp = &c->ids[v->id % DV_BUCKETS]; *pp; pp = &(*pp)->next)
        if (*pp == v) {
            *pp = v->next;
            break;
        }
    v->next = NULL;
    v->registered = false;
}

static void wait_remove(dv_conn_t *c, sasl_conv_t *v)
{
    sasl_conv_t *prev = NULL;
    for (sasl_conv_t *q = c->wait_head; q; prev = q, q = q->next)
        if (q == v) {
            if (prev)
                prev->next = q->next;
            else
                c->wait_head = q->next;
            if (c->wait_tail == q)
                c->wait_tail = prev;
            v->next = NULL;
            return;
        }
}

static void send_cancel(dv_conn_t *c, unsigned id)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "CANCEL\t%u\n", id);
    conn_write(c, &b);
    buf_free(&b);
}

static void wipe_tail(sasl_conv_t *v)
{
    if (v->tail.data)
        explicit_bzero(v->tail.data, v->tail.cap);
    buf_reset(&v->tail);
}

static void conn_connect(dv_conn_t *c);

/* The connection is gone (or never came): answer what waits on it, keep
 * the mechanism list of the last good handshake, try again later. */
static void conn_lost(dv_conn_t *c, const char *why)
{
    bool was_ready = c->state == DS_READY;
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->state = DS_DOWN;
    c->got_version = false;
    mechs_free(&c->hs_names, &c->hs_flags, &c->hs_n);
    c->hs_cap = 0;

    char msg[sizeof c->error];
    snprintf(msg, sizeof msg, "%s: %s", was_ready ? "lost connection" : "cannot connect", why);
    if (strcmp(msg, c->error) != 0)   /* one line per outage and cause, not one per retry */
        log_warn("smtpd", "SASL: Dovecot at %s: %s", c->where, msg);
    str_copy(c->error, msg, sizeof c->error);

    for (size_t b = 0; b < DV_BUCKETS; b++) {
        while (c->ids[b]) {
            sasl_conv_t *v = c->ids[b];
            id_remove(c, v);
            if (v->state == CV_SENT)
                sasl_reply_later(v, SASL_TEMP, NULL, NULL, "lost connection to the authentication server");
            else
                v->lost = true;   /* the client is typing; its next step learns it */
        }
    }
    while (c->wait_head) {
        sasl_conv_t *v = c->wait_head;
        wait_remove(c, v);
        wipe_tail(v);
        sasl_reply_later(v, SASL_TEMP, NULL, NULL, "cannot connect to the authentication server");
    }
    arm(c->timer, c->backoff);
    c->backoff = c->backoff * 2 > sasl_dovecot_backoff_max ? sasl_dovecot_backoff_max : c->backoff * 2;
}

static void send_request(dv_conn_t *c, sasl_conv_t *v)
{
    if (++c->next_id == 0)
        c->next_id = 1;
    v->id = c->next_id;
    id_add(c, v);
    buf_t b = BUF_INIT;
    buf_printf(&b, "AUTH\t%u\t", v->id);
    buf_append(&b, v->tail.data, v->tail.len);
    conn_write(c, &b);
    explicit_bzero(b.data, b.cap);
    buf_free(&b);
    wipe_tail(v);
    v->state = CV_SENT;
    sasl_conv_timeout(v, sasl_dovecot_timeout);
}

static bool conn_offers(const dv_conn_t *c, const sasl_conv_t *v)
{
    unsigned sec = v->tls ? v->srv->sec_tls : v->srv->sec_plain;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->names[i], v->mech) == 0)
            return sasl_mech_allowed(c->flags[i], sec);
    return false;
}

static void handshake_done(dv_conn_t *c)
{
    mechs_free(&c->names, &c->flags, &c->n);
    c->names = c->hs_names;
    c->flags = c->hs_flags;
    c->n = c->hs_n;
    c->hs_names = NULL;
    c->hs_flags = NULL;
    c->hs_n = c->hs_cap = 0;
    c->state = DS_READY;
    c->ever_ready = true;
    c->backoff = sasl_dovecot_backoff_min;
    event_del(c->timer);
    if (c->error[0])
        log_info("smtpd", "SASL: Dovecot at %s: connected", c->where);
    c->error[0] = 0;
    while (c->wait_head) {
        sasl_conv_t *v = c->wait_head;
        wait_remove(c, v);
        if (conn_offers(c, v)) {
            send_request(c, v);
        } else {
            wipe_tail(v);
            sasl_reply_later(v, SASL_FAIL, NULL, NULL, "mechanism not available");
        }
    }
}

static bool usable_name(const buf_t *b)
{
    if (b->len == 0 || b->len > 255 || strlen(buf_cstr(b)) != b->len)
        return false;
    for (size_t i = 0; i < b->len; i++) {
        unsigned char ch = (unsigned char)b->data[i];
        if (ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

/* A reason from Dovecot goes into an SMTP reply and the log: one line of
 * printable text, not too long. */
static void clean_reason(buf_t *b, const char *fallback)
{
    if (b->len == 0)
        buf_puts(b, fallback);
    if (b->len > 200)
        buf_truncate(b, 200);
    for (size_t i = 0; i < b->len; i++) {
        unsigned char ch = (unsigned char)b->data[i];
        if (ch < 0x20 || ch == 0x7f)
            b->data[i] = '?';
    }
}

static bool b64_shape(const buf_t *b)
{
    buf_t tmp = BUF_INIT;
    bool ok = b->len == 0 || sasl_b64_decode(buf_cstr(b), &tmp);
    buf_free(&tmp);
    return ok && strlen(buf_cstr(b)) == b->len;
}

/* One line from Dovecot; -1 when the connection was dropped. */
static int conn_line(dv_conn_t *c, const char *text, size_t n)
{
    dv_line_t *l = &c->line;
    const char *why = NULL;
    char msg[160];
    if (sasl_dovecot_parse(text, n, l, &why) < 0) {
        snprintf(msg, sizeof msg, "protocol error: %s", why);
        conn_lost(c, msg);
        return -1;
    }
    if (c->state == DS_HANDSHAKE) {
        switch (l->kind) {
        case DV_VERSION:
            if (l->major != 1) {
                snprintf(msg, sizeof msg, "unsupported protocol version %u.%u", l->major, l->minor);
                conn_lost(c, msg);
                return -1;
            }
            c->got_version = true;
            return 0;
        case DV_MECH:
            if (!sasl_mech_name_ok(buf_cstr(&l->name)))
                return 0;   /* not a name an EHLO line may carry */
            if (c->hs_n == c->hs_cap) {
                c->hs_cap = c->hs_cap ? c->hs_cap * 2 : 8;
                c->hs_names = xrealloc(c->hs_names, c->hs_cap * sizeof *c->hs_names);
                c->hs_flags = xrealloc(c->hs_flags, c->hs_cap * sizeof *c->hs_flags);
            }
            c->hs_names[c->hs_n] = xstrdup(buf_cstr(&l->name));
            c->hs_flags[c->hs_n] = l->mech_flags;
            c->hs_n++;
            return 0;
        case DV_DONE:
            if (!c->got_version) {
                conn_lost(c, "protocol error: DONE before VERSION");
                return -1;
            }
            handshake_done(c);
            return 0;
        case DV_OK:
        case DV_CONT:
        case DV_FAIL:
            conn_lost(c, "protocol error: a reply during the handshake");
            return -1;
        default:
            return 0;
        }
    }
    if (l->kind != DV_OK && l->kind != DV_CONT && l->kind != DV_FAIL)
        return 0;
    sasl_conv_t *v = id_find(c, l->id);
    if (!v || v->state != CV_SENT) {
        log_debug("smtpd", "SASL: Dovecot at %s: reply for unknown request %u ignored", c->where, l->id);
        return 0;
    }
    sasl_conv_untime(v);
    if (l->kind == DV_CONT) {
        if (!b64_shape(&l->data)) {
            send_cancel(c, v->id);
            id_remove(c, v);
            sasl_reply_later(v, SASL_TEMP, NULL, NULL, "malformed challenge from the authentication server");
            return 0;
        }
        sasl_reply_later(v, SASL_CONTINUE, buf_cstr(&l->data), NULL, NULL);
        return 0;
    }
    id_remove(c, v);
    if (l->kind == DV_OK) {
        if (!l->has_user || !usable_name(&l->user))
            sasl_reply_later(v, SASL_TEMP, NULL, NULL, "the authentication server sent no usable user name");
        else
            sasl_reply_later(v, SASL_OK, NULL, buf_cstr(&l->user), NULL);
        return 0;
    }
    clean_reason(&l->reason, l->temp ? "temporary failure" : "authentication failure");
    sasl_reply_later(v, l->temp ? SASL_TEMP : SASL_FAIL, NULL,
                     l->has_user && usable_name(&l->user) ? buf_cstr(&l->user) : NULL, buf_cstr(&l->reason));
    return 0;
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    dv_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = 0;
        char *text = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
        if (!text) {
            if (evbuffer_get_length(in) > SASL_DOVECOT_LINE_MAX)
                conn_lost(c, "protocol error: line too long");
            return;
        }
        if (n > SASL_DOVECOT_LINE_MAX) {
            free(text);
            conn_lost(c, "protocol error: line too long");
            return;
        }
        int rc = conn_line(c, text, n);
        free(text);
        if (rc < 0)
            return;
    }
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    dv_conn_t *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_EOF) {
        conn_lost(c, "connection closed");
        return;
    }
    int e = EVUTIL_SOCKET_ERROR();
    conn_lost(c, e ? evutil_socket_error_to_string(e) : "connection error");
}

static void conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dv_conn_t *c = arg;
    if (c->state == DS_DOWN)
        conn_connect(c);
    else if (c->state == DS_HANDSHAKE)
        conn_lost(c, "timeout during the handshake");
}

static void conn_connect(dv_conn_t *c)
{
    c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        conn_lost(c, "cannot create a socket");
        return;
    }
    bufferevent_setcb(c->bev, conn_read, NULL, conn_event, c);
    errno = 0;
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&c->sa, (int)c->salen) < 0) {
        int e = errno ? errno : EVUTIL_SOCKET_ERROR();
        conn_lost(c, e ? strerror(e) : "connect failed");
        return;
    }
    c->state = DS_HANDSHAKE;
    c->got_version = false;
    /* Our half of the handshake waits in the output buffer until the
     * connection is up. */
    buf_t b = BUF_INIT;
    buf_printf(&b, "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
    conn_write(c, &b);
    buf_free(&b);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    arm(c->timer, sasl_dovecot_timeout);
}

static void conn_unref(dv_conn_t *c)
{
    if (!c || --c->refs > 0)
        return;
    for (dv_conn_t **pp = &registry; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (c->bev)
        bufferevent_free(c->bev);
    event_free(c->timer);
    mechs_free(&c->names, &c->flags, &c->n);
    mechs_free(&c->hs_names, &c->hs_flags, &c->hs_n);
    sasl_dovecot_line_free(&c->line);
    free(c->where);
    free(c);
}

/* smtpd_sasl_path: "inet:host:port", "unix:/path", or a path (relative:
 * against queue_directory).  Fills sa/salen and where; -1 with a message. */
static int resolve(dv_conn_t *c, const char *path, const char *queue_dir, buf_t *why)
{
    return endpoint_resolve(path, true, queue_dir, &c->sa, &c->salen, &c->where, why);
}

/* ------------------------------------------------------------ backend */

int sasl_dovecot_open(sasl_server_t *s, const params_t *p, buf_t *err)
{
    if (!s->base) {
        param_where(p, PARAM_smtpd_sasl_type, err);
        buf_puts(err, "smtpd_sasl_type: dovecot needs an event loop\n");
        return -1;
    }
    dv_conn_t probe = {0};
    buf_t why = BUF_INIT;
    const char *path = param_str(p, PARAM_smtpd_sasl_path);
    if (resolve(&probe, path, param_str(p, PARAM_queue_directory), &why) < 0) {
        param_where(p, PARAM_smtpd_sasl_path, err);
        buf_printf(err, "smtpd_sasl_path: %s\n", buf_cstr(&why));
        buf_free(&why);
        free(probe.where);
        return -1;
    }
    buf_free(&why);
    for (dv_conn_t *c = registry; c; c = c->next)
        if (c->base == s->base && strcmp(c->where, probe.where) == 0) {
            c->refs++;
            s->conn = c;
            free(probe.where);
            return 0;
        }
    dv_conn_t *c = xcalloc(1, sizeof *c);
    *c = probe;
    c->refs = 1;
    c->base = s->base;
    c->backoff = sasl_dovecot_backoff_min;
    c->timer = evtimer_new(s->base, conn_timer, c);
    if (!c->timer)
        log_panic("sasl: evtimer_new failed");
    c->next = registry;
    registry = c;
    s->conn = c;
    conn_connect(c);
    return 0;
}

void sasl_dovecot_close(sasl_server_t *s)
{
    conn_unref(s->conn);
    s->conn = NULL;
}

size_t sasl_dovecot_mechs(sasl_server_t *s, const char *const **names, const unsigned **flags)
{
    dv_conn_t *c = s->conn;
    *names = (const char *const *)c->names;
    *flags = c->flags;
    return c->ever_ready ? c->n : 0;
}

void sasl_dovecot_start(sasl_conv_t *v, const char *initial, const sasl_peer_t *peer)
{
    dv_conn_t *c = v->srv->conn;
    if (initial && !(strcmp(initial, "=") == 0 || sasl_b64_decode(initial, &v->tail))) {
        buf_reset(&v->tail);
        sasl_reply_later(v, SASL_MALFORMED, NULL, NULL, "invalid base64 data in the initial response");
        return;
    }
    if (v->tail.data)
        explicit_bzero(v->tail.data, v->tail.cap);
    buf_reset(&v->tail);
    if (c->state == DS_DOWN) {
        sasl_reply_later(v, SASL_TEMP, NULL, NULL, "no connection to the authentication server");
        return;
    }
    if (c->state == DS_READY && !conn_offers(c, v)) {
        sasl_reply_later(v, SASL_FAIL, NULL, NULL, "mechanism not available");
        return;
    }
    /* The line without its first two fields: the id comes when it is sent. */
    sasl_dovecot_auth_line(&v->tail, 0, v->mech, v->srv->service, peer, initial);
    const char *rest = strchr(v->tail.data + 5, '\t');   /* after "AUTH\t0" */
    buf_consume(&v->tail, (size_t)(rest + 1 - v->tail.data));
    if (c->state == DS_READY) {
        send_request(c, v);
        return;
    }
    v->state = CV_QUEUED;
    v->next = NULL;
    if (c->wait_tail)
        c->wait_tail->next = v;
    else
        c->wait_head = v;
    c->wait_tail = v;
    sasl_conv_timeout(v, sasl_dovecot_timeout);
}

void sasl_dovecot_step(sasl_conv_t *v, const char *response)
{
    dv_conn_t *c = v->srv->conn;
    if (v->lost || !v->registered || c->state != DS_READY) {
        sasl_reply_later(v, SASL_TEMP, NULL, NULL, "lost connection to the authentication server");
        return;
    }
    buf_t b = BUF_INIT;
    bool ok = sasl_b64_decode(response, &b);
    if (b.data)
        explicit_bzero(b.data, b.cap);
    buf_reset(&b);
    if (!ok) {
        buf_free(&b);
        sasl_reply_later(v, SASL_MALFORMED, NULL, NULL, "invalid base64 data");
        return;
    }
    buf_printf(&b, "CONT\t%u\t%s\n", v->id, response);
    conn_write(c, &b);
    explicit_bzero(b.data, b.cap);
    buf_free(&b);
    v->state = CV_SENT;
    sasl_conv_timeout(v, sasl_dovecot_timeout);
}

void sasl_dovecot_timed_out(sasl_conv_t *v)
{
    dv_conn_t *c = v->srv->conn;
    if (v->state == CV_SENT) {
        if (v->registered) {
            send_cancel(c, v->id);
            id_remove(c, v);
        }
        sasl_reply_later(v, SASL_TEMP, NULL, NULL, "timeout waiting for the authentication server");
    } else if (v->state == CV_QUEUED) {
        wait_remove(c, v);
        wipe_tail(v);
        sasl_reply_later(v, SASL_TEMP, NULL, NULL, "timeout connecting to the authentication server");
    }
}

void sasl_dovecot_end(sasl_conv_t *v)
{
    dv_conn_t *c = v->srv->conn;
    if (v->registered) {
        /* Still open at Dovecot (the client gave up, or went away). */
        send_cancel(c, v->id);
        id_remove(c, v);
    }
    if (v->state == CV_QUEUED)
        wait_remove(c, v);
    wipe_tail(v);
}
