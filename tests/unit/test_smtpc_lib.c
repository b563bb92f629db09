/*
 * The SMTP client's test world (see smtpc_testlib.h): a scripted
 * SMTP/LMTP server and a table-driven DNS server, both on the test's own
 * event loop, loopback only, plus request helpers.  Test code only; no
 * TEST() here.
 */
#include "harness.h"
#include "dns_testlib.h"
#include "smtpc_testlib.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---------------------------------------------------------------- world */

void tworld_init(tworld_t *w, const char *main_extra)
{
    memset(w, 0, sizeof *w);
    signal(SIGPIPE, SIG_IGN);
    w->base = event_base_new();
    w->pool = pool_new(w->base, 2);
    w->c = smtpc_new(w->base, w->pool);
    str_copy(w->dir, "/tmp/moat-smtpc-XXXXXX", sizeof w->dir);
    if (!mkdtemp(w->dir))
        harness_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    buf_t cf = BUF_INIT, err = BUF_INIT;
    buf_printf(&cf, "myhostname = mx.example.test\nqueue_directory = %s\n%s", w->dir,
               main_extra ? main_extra : "");
    w->cfg = config_load_text(buf_cstr(&cf), NULL, &err, NULL);
    if (!w->cfg)
        harness_fail(__FILE__, __LINE__, "config: %s", buf_cstr(&err));
    w->p = w->cfg ? config_main(w->cfg) : NULL;
    buf_free(&cf);
    buf_free(&err);
    w->listen[0] = "127.0.0.1:2";
    w->self.myhostname = "mx.example.test";
    w->self.listen = w->listen;
    w->self.nlisten = 1;
}

typedef struct tdns_q {
    char name[256];
    char type[16];
    char data[256];
} tdns_rr_t;

struct tdns {
    tworld_t *w;
    int fd;
    struct event *ev;
    tdns_rr_t *rr;
    size_t nrr;
    int port;
};

static void tconn_free(tconn_t *t);

static void tsrv_free(tsrv_t *s)
{
    tsrv_close_all(s);
    if (s->lis)
        evconnlistener_free(s->lis);
    if (s->path[0])
        unlink(s->path);
    for (int i = 0; i < s->nrcpt; i++) {
        free(s->rcpt_addr[i]);
        free(s->rcpt_reply[i]);
    }
    buf_free(&s->log);
    buf_free(&s->data);
    free(s);
}

void tworld_spin(tworld_t *w, double secs)
{
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    event_base_loopexit(w->base, &tv);
    event_base_dispatch(w->base);
}

void tworld_free(tworld_t *w)
{
    if (w->c)
        smtpc_free(&w->c);
    for (int i = 0; i < w->nsrv; i++)
        tsrv_free(w->srv[i]);
    if (w->tdns) {
        event_free(w->tdns->ev);
        close(w->tdns->fd);
        free(w->tdns->rr);
        free(w->tdns);
    }
    dns_unref(&w->dns);
    pool_free(&w->pool);
    config_free(&w->cfg);
    event_base_free(w->base);
    char path[128];
    for (int i = 0; i < w->nfile; i++) {
        snprintf(path, sizeof path, "%s/q%d", w->dir, i);
        unlink(path);
    }
    rmdir(w->dir);
}

/* --------------------------------------------------------------- server */

enum { TC_CMD, TC_DATA };

struct tconn {
    tsrv_t *s;
    struct bufferevent *bev;
    int state;
    int naccepted;
    bool lmtp;
    bool dropped_data;
    tconn_t *next;
};

static void tconn_free(tconn_t *t)
{
    tsrv_t *s = t->s;
    for (tconn_t **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    bufferevent_free(t->bev);
    free(t);
}

void tsrv_close_all(tsrv_t *s)
{
    while (s->conns)
        tconn_free(s->conns);
}

static void say(tconn_t *t, const char *reply)
{
    size_t n = strlen(reply);
    bufferevent_write(t->bev, reply, n);
    if (n < 2 || reply[n - 2] != '\r' || reply[n - 1] != '\n')
        bufferevent_write(t->bev, "\r\n", 2);
}

static bool at(const char *stage, const char *name) { return stage && strcmp(stage, name) == 0; }

/* One command line (CRLF stripped).  false: the connection is gone. */
static bool tcmd(tconn_t *t, const char *line)
{
    tsrv_t *s = t->s;
    char verb[5] = {0};
    for (int i = 0; i < 4 && line[i]; i++)
        verb[i] = (char)(line[i] >= 'a' && line[i] <= 'z' ? line[i] - 32 : line[i]);
    if (s->silent)
        return true;
    if (!strcmp(verb, "EHLO") || !strcmp(verb, "LHLO")) {
        t->lmtp = !strcmp(verb, "LHLO");
        if (at(s->garbage_at, "ehlo"))
            say(t, "xyz");
        else
            say(t, s->ehlo ? s->ehlo : "250-srv.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    } else if (!strcmp(verb, "HELO")) {
        say(t, s->helo ? s->helo : "250 srv.test");
    } else if (!strncmp(line, "XFORWARD", 8)) {
        say(t, s->xforward ? s->xforward : "250 2.0.0 Ok");
    } else if (!strcmp(verb, "MAIL")) {
        t->naccepted = 0;
        if (at(s->drop_at, "mail")) {
            tconn_free(t);
            return false;
        }
        say(t, at(s->garbage_at, "mail") ? "xyz" : s->mail ? s->mail : "250 2.1.0 Ok");
    } else if (!strcmp(verb, "RCPT")) {
        if (at(s->drop_at, "rcpt")) {
            tconn_free(t);
            return false;
        }
        const char *reply = s->rcpt_default ? s->rcpt_default : "250 2.1.5 Ok";
        const char *lt = strchr(line, '<'), *gt = strrchr(line, '>');
        if (lt && gt && gt > lt) {
            size_t an = (size_t)(gt - lt - 1);
            for (int i = 0; i < s->nrcpt; i++)
                if (strlen(s->rcpt_addr[i]) == an && !strncmp(lt + 1, s->rcpt_addr[i], an))
                    reply = s->rcpt_reply[i];
        }
        if (at(s->garbage_at, "rcpt"))
            reply = "xyz";
        if (reply[0] == '2')
            t->naccepted++;
        say(t, reply);
    } else if (!strcmp(verb, "DATA")) {
        if (at(s->garbage_at, "data")) {
            say(t, "xyz");
        } else if (t->naccepted == 0) {
            say(t, "554 5.5.1 Error: no valid recipients");
        } else {
            const char *reply = s->data_reply ? s->data_reply : "354 go ahead";
            say(t, reply);
            if (reply[0] == '3') {
                t->state = TC_DATA;
                buf_reset(&s->data);
            }
        }
    } else if (!strcmp(verb, "RSET")) {
        s->rsets++;
        say(t, s->rset ? s->rset : "250 2.0.0 Ok");
    } else if (!strcmp(verb, "QUIT")) {
        s->quits++;
        say(t, "221 2.0.0 Bye");
        tconn_free(t);
        return false;
    } else if (!strcmp(verb, "NOOP")) {
        say(t, "250 2.0.0 Ok");
    } else {
        say(t, "502 5.5.2 Error: command not recognized");
    }
    return true;
}

/* One content line (CRLF included).  false: the connection is gone. */
static bool tdata(tconn_t *t, const char *line, size_t n)
{
    tsrv_t *s = t->s;
    if (at(s->drop_at, "data")) {
        tconn_free(t);
        return false;
    }
    buf_append(&s->data, line, n);
    if (n != 3 || memcmp(line, ".\r\n", 3) != 0)
        return true;
    t->state = TC_CMD;
    s->transactions++;
    if (at(s->drop_at, "data_end")) {
        tconn_free(t);
        return false;
    }
    if (at(s->garbage_at, "data_end")) {
        say(t, "xyz");
    } else if (t->lmtp) {
        for (int k = 0; k < t->naccepted; k++)
            say(t, k < 8 && s->lmtp_end[k] ? s->lmtp_end[k] : "250 2.0.0 Ok");
    } else if (s->data_end) {
        say(t, s->data_end);
    } else {
        char reply[64];
        snprintf(reply, sizeof reply, "250 2.0.0 Ok: queued as TEST%d", s->transactions);
        say(t, reply);
    }
    return true;
}

static void tread(struct bufferevent *bev, void *arg)
{
    tconn_t *t = arg;
    tsrv_t *s = t->s;
    struct evbuffer *in = bufferevent_get_input(bev);
    int batch = 0;
    for (;;) {
        size_t eol = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_LF);
        if (p.pos < 0)
            break;
        size_t n = (size_t)p.pos + eol;
        char *line = xmalloc(n + 1);
        evbuffer_remove(in, line, n);
        line[n] = 0;
        bool alive;
        if (t->state == TC_DATA) {
            alive = tdata(t, line, n);
        } else {
            buf_append(&s->log, line, n);
            batch++;
            if (batch > s->max_batch)
                s->max_batch = batch;
            line[n - eol] = 0;
            alive = tcmd(t, line);
        }
        free(line);
        if (!alive)
            return;
    }
}

static void tevent(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        tconn_free(arg);
}

static void taccept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int sl, void *arg)
{
    tsrv_t *s = arg;
    (void)lis;
    (void)sa;
    (void)sl;
    s->sessions++;
    if (at(s->drop_at, "greeting")) {
        close(fd);
        return;
    }
    tconn_t *t = xcalloc(1, sizeof *t);
    t->s = s;
    t->bev = bufferevent_socket_new(s->w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    t->next = s->conns;
    s->conns = t;
    bufferevent_setcb(t->bev, tread, NULL, tevent, t);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
    if (s->silent)
        return;
    say(t, at(s->garbage_at, "greeting") ? "xyz" : s->greeting ? s->greeting : "220 srv.test ESMTP");
}

static tsrv_t *tsrv_alloc(tworld_t *w)
{
    tsrv_t *s = xcalloc(1, sizeof *s);
    s->w = w;
    if (w->nsrv < 16)
        w->srv[w->nsrv++] = s;
    return s;
}

tsrv_t *tsrv_new(tworld_t *w, const char *addr) { return tsrv_new_at(w, addr, 0); }

tsrv_t *tsrv_new_at(tworld_t *w, const char *addr, int port)
{
    tsrv_t *s = tsrv_alloc(w);
    str_copy(s->addr, addr ? addr : "127.0.0.1", sizeof s->addr);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, s->addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)port);
        sl = sizeof *s4;
    } else {
        inet_pton(AF_INET6, s->addr, &s6->sin6_addr);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)port);
        sl = sizeof *s6;
    }
    s->lis = evconnlistener_new_bind(w->base, taccept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                     (struct sockaddr *)&ss, (int)sl);
    if (!s->lis) {
        harness_fail(__FILE__, __LINE__, "listen on %s: %s", s->addr, strerror(errno));
        return s;
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    getsockname(evconnlistener_get_fd(s->lis), (struct sockaddr *)&got, &gl);
    s->port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                             : ((struct sockaddr_in6 *)&got)->sin6_port);
    return s;
}

tsrv_t *tsrv_new_unix(tworld_t *w)
{
    tsrv_t *s = tsrv_alloc(w);
    snprintf(s->path, sizeof s->path, "%s/lmtp%d", w->dir, w->nsrv);
    struct sockaddr_un su;
    memset(&su, 0, sizeof su);
    su.sun_family = AF_UNIX;
    str_copy(su.sun_path, s->path, sizeof su.sun_path);
    s->lis = evconnlistener_new_bind(w->base, taccept, s, LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&su,
                                     (int)sizeof su);
    if (!s->lis)
        harness_fail(__FILE__, __LINE__, "listen on %s: %s", s->path, strerror(errno));
    return s;
}

void tsrv_rcpt(tsrv_t *s, const char *addr, const char *reply)
{
    if (s->nrcpt >= 8)
        return;
    s->rcpt_addr[s->nrcpt] = xstrdup(addr);
    s->rcpt_reply[s->nrcpt] = xstrdup(reply);
    s->nrcpt++;
}

int tfree_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof sin);
    socklen_t sl = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ------------------------------------------------------------------ DNS */

static int qtype_of(const char *t)
{
    return !strcmp(t, "A") ? 1 : !strcmp(t, "MX") ? 15 : !strcmp(t, "AAAA") ? 28 : -1;
}

static void tdns_read(evutil_socket_t fd, short what, void *arg)
{
    tdns_t *d = arg;
    (void)what;
    unsigned char q[512];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom((int)fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
    char name[256];
    unsigned qtype;
    size_t qend;
    if (n < 0 || !dnst_question(q, (size_t)n, name, sizeof name, &qtype, &qend))
        return;
    unsigned rcode = 3;   /* NXDOMAIN unless the name is known */
    buf_t ans = BUF_INIT;
    unsigned nans = 0;
    for (size_t i = 0; i < d->nrr; i++) {
        const tdns_rr_t *rr = &d->rr[i];
        if (!str_ieq(rr->name, name))
            continue;
        if (!strcmp(rr->type, "NXDOMAIN"))
            break;
        if (!strcmp(rr->type, "SERVFAIL")) {
            rcode = 2;
            break;
        }
        rcode = 0;
        if (qtype_of(rr->type) != (int)qtype)
            continue;
        dnst_put16(&ans, 0xc00c);
        dnst_put16(&ans, qtype);
        dnst_put16(&ans, 1);
        dnst_put16(&ans, 0);
        dnst_put16(&ans, 60);
        buf_t rd = BUF_INIT;
        if (qtype == 1) {
            unsigned char a[4];
            inet_pton(AF_INET, rr->data, a);
            buf_append(&rd, a, 4);
        } else if (qtype == 28) {
            unsigned char a[16];
            inet_pton(AF_INET6, rr->data, a);
            buf_append(&rd, a, 16);
        } else {
            unsigned pref = (unsigned)atoi(rr->data);
            const char *host = strchr(rr->data, ' ');
            dnst_put16(&rd, pref);
            dnst_put_name(&rd, host && strcmp(host + 1, ".") != 0 ? host + 1 : "");
        }
        dnst_put16(&ans, (unsigned)rd.len);
        buf_append(&ans, rd.data, rd.len);
        buf_free(&rd);
        nans++;
    }
    buf_t r = BUF_INIT;
    buf_append(&r, q, 2);
    dnst_put16(&r, 0x8180 | (q[2] & 1 ? 0x0100 : 0) | rcode);
    dnst_put16(&r, 1);
    dnst_put16(&r, nans);
    dnst_put16(&r, 0);
    dnst_put16(&r, 0);
    buf_append(&r, q + 12, qend - 12);
    buf_append(&r, ans.data ? ans.data : "", ans.len);
    sendto((int)fd, r.data, r.len, 0, (struct sockaddr *)&from, fl);
    buf_free(&r);
    buf_free(&ans);
}

void tdns_new(tworld_t *w, const char *table)
{
    tdns_t *d = xcalloc(1, sizeof *d);
    d->w = w;
    w->tdns = d;
    const char *p = table;
    while (*p) {
        size_t n = strcspn(p, "\n");
        char line[512];
        if (n && n < sizeof line) {
            memcpy(line, p, n);
            line[n] = 0;
            d->rr = xrealloc(d->rr, (d->nrr + 1) * sizeof *d->rr);
            tdns_rr_t *rr = &d->rr[d->nrr++];
            memset(rr, 0, sizeof *rr);
            int off = 0;
            if (sscanf(line, "%255s %15s %n", rr->name, rr->type, &off) >= 2 && off > 0)
                str_copy(rr->data, line + off, sizeof rr->data);
        }
        p += n;
        if (*p)
            p++;
    }
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(d->fd, (struct sockaddr *)&sin, sizeof sin);
    socklen_t sl = sizeof sin;
    getsockname(d->fd, (struct sockaddr *)&sin, &sl);
    d->port = ntohs(sin.sin_port);
    d->ev = event_new(w->base, d->fd, EV_READ | EV_PERSIST, tdns_read, d);
    event_add(d->ev, NULL);
    char fwd[64];
    snprintf(fwd, sizeof fwd, "127.0.0.1@%d", d->port);
    dns_opts_t o = {.forwarders = fwd, .timeout_ms = 3000, .cache_max = 1000};
    buf_t err = BUF_INIT;
    w->dns = dns_new(w->base, &o, &err);
    if (!w->dns)
        harness_fail(__FILE__, __LINE__, "dns_new: %s", buf_cstr(&err));
    buf_free(&err);
}

/* ------------------------------------------------------------- requests */

static void treq_done(smtpc_request_t *req, void *arg)
{
    treq_t *r = arg;
    (void)req;
    r->done = true;
}

treq_t *treq_new(tworld_t *w, const char *content, const char *body_type)
{
    treq_t *r = xcalloc(1, sizeof *r);
    r->w = w;
    snprintf(r->path, sizeof r->path, "%s/q%d", w->dir, w->nfile++);
    /* Bytes around the content that must never be sent. */
    static const char before[] = "MOAT-QUEUE junk before the content\n";
    static const char after[] = "MOAT-END junk after";
    FILE *fp = fopen(r->path, "w");
    if (fp) {
        fputs(before, fp);
        fwrite(content, 1, strlen(content), fp);
        fputs(after, fp);
        fclose(fp);
    }
    r->t.name = "smtp";
    r->t.kind = TK_SMTP;
    r->t.maxproc = 10;
    r->t.params = w->p;
    smtpc_request_t *q = &r->req;
    q->queue_id = "ABCDEF";
    q->path = r->path;
    q->content_offset = (long)strlen(before);
    q->content_size = (long)strlen(content);
    q->sender = "sender@example.org";
    q->body_type = body_type;
    q->rcpts = r->rcpts;
    q->transport = &r->t;
    q->nexthop = r->nexthop;
    q->dns = w->dns;
    q->self = &w->self;
    q->done = treq_done;
    q->arg = r;
    return r;
}

void treq_rcpt(treq_t *r, const char *addr)
{
    size_t i = r->req.nrcpt;
    if (i >= 8)
        return;
    r->addrs[i] = xstrdup(addr);
    r->rcpts[i].addr = r->addrs[i];
    r->req.nrcpt++;
}

void treq_nexthop(treq_t *r, const char *nexthop) { str_copy(r->nexthop, nexthop, sizeof r->nexthop); }

void treq_nexthop_srv(treq_t *r, const tsrv_t *s)
{
    snprintf(r->nexthop, sizeof r->nexthop, "[%s]:%d", s->addr, s->port);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

void treq_wait(tworld_t *w, treq_t *r)
{
    bool late = false;
    struct event *ev = evtimer_new(w->base, deadline_cb, &late);
    struct timeval tv = {20, 0};
    evtimer_add(ev, &tv);
    while (!r->done && !late)
        event_base_loop(w->base, EVLOOP_ONCE);
    event_free(ev);
    if (!r->done)
        harness_fail(__FILE__, __LINE__, "delivery did not finish within 20 s");
}

void treq_run(tworld_t *w, treq_t *r)
{
    r->req.dns = w->dns;
    smtpc_deliver(w->c, &r->req);
    treq_wait(w, r);
}

void treq_free(treq_t *r)
{
    if (r->done)
        smtpc_request_clear(&r->req);
    for (size_t i = 0; i < r->req.nrcpt; i++)
        free(r->addrs[i]);
    free(r);
}
