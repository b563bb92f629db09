/*
 * policysvc: the policy delegation client (see policysvc.h).
 *
 * Owns: the process-wide list of services; per service its connections
 * (a bufferevent and a timer each) and the requests waiting for one; per
 * request its text and its timer.  A request holds a reference to its
 * service, so a service lives until its last request has ended even when
 * every policy that named it is gone.
 *
 * Never: blocks the loop (the one exception: a host name in an inet
 * endpoint is resolved once, when the service is opened), calls a
 * request's callback from inside policysvc_request, sends a request on a
 * connection that is still owed a reply, reuses a connection whose peer
 * sent more than one reply, or touches a connection after handing a
 * result to its caller (the caller may drop the last reference there).
 */
#include "policy/policysvc.h"

#include "core/endpoint.h"
#include "core/log.h"
#include "core/util.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

enum { C_CONNECTING, C_BUSY, C_IDLE };

typedef struct conn conn_t;

struct policysvc_req {
    policysvc_t *svc;
    struct event_base *base;
    char *text;
    size_t len;
    policysvc_cb cb;
    void *arg;
    unsigned attempts;
    double started;
    conn_t *conn;              /* the connection carrying this attempt, or NULL */
    struct event *timer;       /* waiting for a connection (timeout), for a retry, or to report */
    bool queued;               /* in svc's wait queue */
    bool giving_up;            /* the timer reports the failure */
    policysvc_req_t *next;     /* the wait queue */
    char error[200];
};

struct conn {
    policysvc_t *svc;
    struct event_base *base;
    struct bufferevent *bev;
    struct event *timer;       /* connecting or busy: the deadline; idle: max_idle or the end of max_ttl */
    int state;
    double born;
    unsigned served;           /* requests sent on it */
    policysvc_req_t *req;      /* connecting or busy: the request; NULL once cancelled (the reply is dropped) */
    conn_t *next;
};

struct policysvc {
    int refs;
    char *name;                /* as written */
    char *key;
    char *addr_text;           /* the address connected to, for messages */
    policysvc_opts_t o;        /* default_action and policy_context owned */
    struct sockaddr_storage sa;
    socklen_t salen;
    conn_t *conns;
    unsigned nconns;
    policysvc_req_t *wait_head, *wait_tail;
    policysvc_stats_t st;      /* open/idle/waiting are computed */
    buf_t reply;               /* the action of the reply being parsed */
    policysvc_t *next;         /* the process-wide list */
};

static policysvc_t *services;

/* ------------------------------------------------------------ protocol */

void policysvc_attr(buf_t *req, const char *name, const char *value)
{
    buf_puts(req, name);
    buf_putc(req, '=');
    for (const unsigned char *p = (const unsigned char *)(value ? value : ""); *p; p++)
        buf_putc(req, (*p < 0x20 && *p != '\t') || *p == 0x7f ? '?' : (char)*p);
    buf_putc(req, '\n');
}

int policysvc_reply_parse(const char *data, size_t len, size_t *used, buf_t *action, bool *has_action,
                          const char **why)
{
    size_t pos = 0;
    *has_action = false;
    buf_reset(action);
    for (;;) {
        const char *line = data + pos;
        const char *nl = memchr(line, '\n', len - pos);
        if (!nl) {
            if (len > POLICYSVC_REPLY_MAX) {
                *why = "reply too long";
                return -1;
            }
            return 0;
        }
        size_t n = (size_t)(nl - line);
        pos += n + 1;
        if (pos > POLICYSVC_REPLY_MAX) {
            *why = "reply too long";
            return -1;
        }
        if (n && line[n - 1] == '\r')
            n--;
        if (n == 0) {
            *used = pos;
            return 1;
        }
        if (memchr(line, 0, n)) {
            *why = "NUL byte in reply";
            return -1;
        }
        const char *eq = memchr(line, '=', n);
        if (!eq) {
            *why = "reply line without \"=\"";
            return -1;
        }
        if (eq == line) {
            *why = "reply line without attribute name";
            return -1;
        }
        /* Only the action counts; the first one wins (the protocol lets a
         * server repeat an attribute and a client keep either). */
        if (!*has_action && eq - line == 6 && memcmp(line, "action", 6) == 0) {
            buf_append(action, eq + 1, n - (size_t)(eq + 1 - line));
            *has_action = true;
        }
    }
}

bool policysvc_valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, need;
        unsigned long cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3, cp = c & 0x07;
        } else {
            return false;
        }
        p++;
        for (unsigned i = 0; i < need; i++, p++) {
            if ((*p & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (*p & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------- opening */

/* "10", "10s", "5m", "1h", "1d", "1w": seconds, at least 1. */
static bool parse_time(const char *s, unsigned *out)
{
    unsigned long long v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned)(*p++ - '0');
        if (v > 100000000ULL)
            return false;
    }
    unsigned long long mul = 1;
    if (*p) {
        switch (*p++) {
        case 's': mul = 1; break;
        case 'm': mul = 60; break;
        case 'h': mul = 3600; break;
        case 'd': mul = 86400; break;
        case 'w': mul = 7 * 86400; break;
        default: return false;
        }
        if (*p)
            return false;
    }
    v *= mul;
    if (v < 1 || v > 0x7fffffffULL)
        return false;
    *out = (unsigned)v;
    return true;
}

static bool parse_count(const char *s, unsigned min, unsigned *out)
{
    if (!str_all_digits(s) || strlen(s) > 9)
        return false;
    unsigned v = (unsigned)strtoul(s, NULL, 10);
    if (v < min)
        return false;
    *out = v;
    return true;
}

/* One "name=value" setting of the { ... } form. */
static int apply_setting(const char *item, policysvc_opts_t *o, const char **def_action, const char **context,
                         char **copy, buf_t *err)
{
    const char *eq = strchr(item, '=');
    if (!eq) {
        buf_printf(err, "\"%s\": a setting is name=value (enclose it in { } when the value has spaces)", item);
        return -1;
    }
    char *name = xstrndup(item, (size_t)(eq - item));
    str_trim(name);
    *copy = xstrdup(eq + 1);
    char *value = str_trim(*copy);
    int rc = 0;
    unsigned *t = NULL;
    if (strcmp(name, "timeout") == 0)
        t = &o->timeout;
    else if (strcmp(name, "max_idle") == 0)
        t = &o->max_idle;
    else if (strcmp(name, "max_ttl") == 0)
        t = &o->max_ttl;
    else if (strcmp(name, "retry_delay") == 0)
        t = &o->retry_delay;
    if (t) {
        if (!parse_time(value, t)) {
            buf_printf(err, "%s=%s: need a time of at least 1 second (10s, 5m, 1h)", name, value);
            rc = -1;
        }
    } else if (strcmp(name, "try_limit") == 0 || strcmp(name, "request_limit") == 0 ||
               strcmp(name, "connection_limit") == 0) {
        unsigned *n = name[1] == 'r' ? &o->try_limit : name[0] == 'r' ? &o->request_limit : &o->connection_limit;
        unsigned min = n == &o->request_limit ? 0 : 1;
        if (!parse_count(value, min, n)) {
            buf_printf(err, "%s=%s: need a whole number of at least %u", name, value, min);
            rc = -1;
        }
    } else if (strcmp(name, "default_action") == 0) {
        if (!*value) {
            buf_printf(err, "default_action: empty");
            rc = -1;
        }
        *def_action = value;
    } else if (strcmp(name, "policy_context") == 0) {
        *context = value;
    } else {
        buf_printf(err, "unknown setting \"%s\" (timeout, max_idle, max_ttl, try_limit, retry_delay, "
                        "default_action, request_limit, policy_context, connection_limit)", name);
        rc = -1;
    }
    free(name);
    return rc;
}

/* The endpoint's address: inet:host:port (host a name, an address or
 * [an IPv6 address]) or unix:/path. */
static int resolve_endpoint(policysvc_t *s, const char *ep, const char *queue_dir, buf_t *err)
{
    return endpoint_resolve(ep, false, queue_dir, &s->sa, &s->salen, &s->addr_text, err);
}

static void svc_free(policysvc_t *s);

policysvc_t *policysvc_open(const char *const *items, size_t n, const policysvc_opts_t *defaults,
                            const char *queue_dir, buf_t *err)
{
    if (n == 0) {
        buf_puts(err, "missing server endpoint (inet:host:port or unix:/path)");
        return NULL;
    }
    policysvc_t *s = xcalloc(1, sizeof *s);
    s->refs = 1;
    s->name = xstrdup(items[0]);
    s->o = *defaults;
    const char *def_action = defaults->default_action ? defaults->default_action : "";
    const char *context = defaults->policy_context ? defaults->policy_context : "";
    char **copies = xcalloc(n, sizeof *copies);
    int rc = resolve_endpoint(s, items[0], queue_dir, err);
    for (size_t i = 1; rc == 0 && i < n; i++)
        rc = apply_setting(items[i], &s->o, &def_action, &context, &copies[i], err);
    if (rc == 0 && !*def_action) {
        buf_puts(err, "default_action: empty");
        rc = -1;
    }
    if (rc == 0) {
        s->o.default_action = xstrdup(def_action);
        s->o.policy_context = xstrdup(context);
        if (s->o.try_limit < 1)
            s->o.try_limit = 1;
        if (s->o.connection_limit < 1)
            s->o.connection_limit = 1;
        if (s->o.timeout < 1)
            s->o.timeout = 1;
    }
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    free(copies);
    if (rc != 0) {
        s->o.default_action = s->o.policy_context = NULL;
        svc_free(s);
        return NULL;
    }
    buf_t key = BUF_INIT;
    buf_printf(&key, "%s|%s|timeout=%u|max_idle=%u|max_ttl=%u|try_limit=%u|retry_delay=%u|request_limit=%u|"
                     "connection_limit=%u|default_action=%s|policy_context=%s",
               s->name, s->addr_text, s->o.timeout, s->o.max_idle, s->o.max_ttl, s->o.try_limit, s->o.retry_delay,
               s->o.request_limit, s->o.connection_limit, s->o.default_action, s->o.policy_context);
    s->key = buf_steal(&key);
    for (policysvc_t *o = services; o; o = o->next) {
        if (strcmp(o->key, s->key) == 0) {
            svc_free(s);
            return policysvc_ref(o);
        }
    }
    s->next = services;
    services = s;
    return s;
}

policysvc_t *policysvc_ref(policysvc_t *s)
{
    s->refs++;
    return s;
}

const char *policysvc_name(const policysvc_t *s)
{
    return s->name;
}

const char *policysvc_key(const policysvc_t *s)
{
    return s->key;
}

const policysvc_opts_t *policysvc_settings(const policysvc_t *s)
{
    return &s->o;
}

void policysvc_get_stats(const policysvc_t *s, policysvc_stats_t *st)
{
    *st = s->st;
    st->open = s->nconns;
    st->idle = st->waiting = 0;
    for (const conn_t *c = s->conns; c; c = c->next)
        st->idle += c->state == C_IDLE;
    for (const policysvc_req_t *r = s->wait_head; r; r = r->next)
        st->waiting++;
}

/* ---------------------------------------------------------- connections */

static void conn_free(conn_t *c)
{
    policysvc_t *s = c->svc;
    for (conn_t **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    s->nconns--;
    if (c->timer)
        event_free(c->timer);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

static void svc_free(policysvc_t *s)
{
    while (s->conns)
        conn_free(s->conns);
    for (policysvc_t **pp = &services; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    free(s->name);
    free(s->key);
    free(s->addr_text);
    free((char *)s->o.default_action);
    free((char *)s->o.policy_context);
    buf_free(&s->reply);
    free(s);
}

void policysvc_close(policysvc_t **sp)
{
    policysvc_t *s = sp ? *sp : NULL;
    if (!s)
        return;
    *sp = NULL;
    if (--s->refs == 0)
        svc_free(s);
}

static void arm(struct event *ev, double seconds)
{
    if (seconds < 0)
        seconds = 0;
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    evtimer_add(ev, &tv);
}

/* Can c carry one more request? */
static bool conn_fresh(const conn_t *c)
{
    const policysvc_opts_t *o = &c->svc->o;
    if (o->request_limit && c->served >= o->request_limit)
        return false;
    return now_mono() - c->born < (double)o->max_ttl;
}

static void conn_send(conn_t *c, policysvc_req_t *r)
{
    policysvc_t *s = c->svc;
    c->req = r;
    r->conn = c;
    if (c->state == C_CONNECTING)
        return;   /* sent once connected */
    if (c->served)
        s->st.reused++;
    c->state = C_BUSY;
    c->served++;
    s->st.requests++;
    evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
    bufferevent_write(c->bev, r->text, r->len);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    evtimer_del(c->timer);
    arm(c->timer, s->o.timeout);
}

static void attempt_failed(policysvc_req_t *r, const char *why);
static void start_attempt(policysvc_req_t *r);
static void unqueue(policysvc_t *s, policysvc_req_t *r);
static void finish(policysvc_req_t *r, bool ok, const char *action);

/* A connection is free again: the next waiting request takes it (or a
 * new connection, when this one is gone). */
static void serve_waiting(policysvc_t *s)
{
    while (s->wait_head) {
        conn_t *idle = NULL;
        for (conn_t *c = s->conns; c; c = c->next)
            if (c->state == C_IDLE && c->base == s->wait_head->base)
                idle = c;
        if (!idle && s->nconns >= s->o.connection_limit)
            return;
        policysvc_req_t *r = s->wait_head;
        unqueue(s, r);
        evtimer_del(r->timer);
        r->attempts--;   /* the wait was part of this attempt */
        start_attempt(r);
    }
}

/* The attempt on c failed: the connection goes, the request may retry. */
static void conn_fail(conn_t *c, const char *why)
{
    policysvc_t *s = c->svc;
    policysvc_req_t *r = c->req;
    char text[200];
    snprintf(text, sizeof text, "%s", why);
    conn_free(c);
    if (r) {
        r->conn = NULL;
        attempt_failed(r, text);
    }
    serve_waiting(s);
}

static void idle_arm(conn_t *c)
{
    const policysvc_opts_t *o = &c->svc->o;
    double left = (double)o->max_ttl - (now_mono() - c->born);
    double wait = (double)o->max_idle < left ? (double)o->max_idle : left;
    evtimer_del(c->timer);
    arm(c->timer, wait);
}

/* A complete reply (or a cancelled request's connect) leaves c free. */
static void conn_release(conn_t *c, bool reusable)
{
    policysvc_t *s = c->svc;
    c->req = NULL;
    if (reusable && conn_fresh(c)) {
        c->state = C_IDLE;
        idle_arm(c);
        /* Reading stays on: an idle connection that the server closes, or
         * that receives anything, is closed at once. */
        bufferevent_enable(c->bev, EV_READ);
    } else {
        conn_free(c);
    }
    serve_waiting(s);
}

static void conn_read(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    policysvc_t *s = c->svc;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (c->state != C_BUSY) {
        /* Nothing is owed on an idle connection. */
        conn_free(c);
        serve_waiting(s);
        return;
    }
    const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    size_t used = 0;
    bool has_action = false;
    const char *why = NULL;
    int rc = policysvc_reply_parse(data, len, &used, &s->reply, &has_action, &why);
    if (rc == 0)
        return;
    if (rc < 0) {
        conn_fail(c, why);
        return;
    }
    s->st.replies++;
    policysvc_req_t *r = c->req;
    bool extra = used < len;
    if (extra)
        log_warn("smtpd", "policy service %s: more than one reply to one request; closing the connection",
                 s->name);
    evbuffer_drain(in, len);
    /* The action is copied before the connection is released: the reply
     * buffer is the service's, and the next request may reuse it. */
    char *action = has_action ? xstrdup(buf_cstr(&s->reply)) : NULL;
    if (r)
        r->conn = NULL;
    conn_release(c, !extra);
    if (r)
        finish(r, true, action);
    free(action);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    conn_t *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->state = C_IDLE;   /* until conn_send makes it busy */
        if (c->req) {
            conn_send(c, c->req);
        } else {
            conn_release(c, true);   /* its request was cancelled meanwhile */
        }
        return;
    }
    char why[160];
    if (what & BEV_EVENT_EOF) {
        snprintf(why, sizeof why, "%s", c->state == C_BUSY ? "connection closed by server before the reply"
                                                           : "connection closed by server");
    } else {
        int e = EVUTIL_SOCKET_ERROR();
        snprintf(why, sizeof why, "%s: %s", c->state == C_CONNECTING ? "connect" : "connection error",
                 e ? evutil_socket_error_to_string(e) : "unknown error");
    }
    if (c->state == C_IDLE) {
        policysvc_t *s = c->svc;
        conn_free(c);
        serve_waiting(s);
        return;
    }
    conn_fail(c, why);
}

static void conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_t *c = arg;
    if (c->state == C_IDLE) {
        policysvc_t *s = c->svc;
        conn_free(c);
        serve_waiting(s);
        return;
    }
    char why[80];
    snprintf(why, sizeof why, "timeout after %us %s", c->svc->o.timeout,
             c->state == C_CONNECTING ? "connecting" : "waiting for the reply");
    conn_fail(c, why);
}

/* A new connection for r; NULL with why when it cannot even start. */
static conn_t *conn_open(policysvc_t *s, struct event_base *base, char *why, size_t size)
{
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        snprintf(why, size, "cannot create a connection");
        return NULL;
    }
    conn_t *c = xcalloc(1, sizeof *c);
    c->svc = s;
    c->base = base;
    c->bev = bev;
    c->state = C_CONNECTING;
    c->born = now_mono();
    c->timer = evtimer_new(base, conn_timer, c);
    if (!c->timer)
        log_panic("policysvc: evtimer_new failed");
    bufferevent_setcb(bev, conn_read, NULL, conn_event, c);
    /* Enough to see a reply that is too long, no more. */
    bufferevent_setwatermark(bev, EV_READ, 0, POLICYSVC_REPLY_MAX + 1);
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    s->st.connects++;
    errno = 0;
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&s->sa, (int)s->salen) < 0) {
        int e = EVUTIL_SOCKET_ERROR();
        snprintf(why, size, "connect: %s", e ? evutil_socket_error_to_string(e) : "failed");
        conn_free(c);
        return NULL;
    }
    arm(c->timer, s->o.timeout);
    return c;
}

/* ------------------------------------------------------------- requests */

static void unqueue(policysvc_t *s, policysvc_req_t *r)
{
    policysvc_req_t *prev = NULL;
    for (policysvc_req_t *q = s->wait_head; q; prev = q, q = q->next) {
        if (q == r) {
            if (prev)
                prev->next = r->next;
            else
                s->wait_head = r->next;
            if (s->wait_tail == r)
                s->wait_tail = prev;
            break;
        }
    }
    r->queued = false;
    r->next = NULL;
}

static void req_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    policysvc_req_t *r = arg;
    policysvc_t *s = r->svc;
    if (r->giving_up) {
        finish(r, false, NULL);
    } else if (r->queued) {
        unqueue(s, r);
        char why[80];
        snprintf(why, sizeof why, "no connection free within %us (connection_limit %u)", s->o.timeout,
                 s->o.connection_limit);
        attempt_failed(r, why);
    } else {
        start_attempt(r);   /* after retry_delay */
    }
}

static void start_attempt(policysvc_req_t *r)
{
    policysvc_t *s = r->svc;
    r->attempts++;
    /* A free connection of this loop that may still carry a request
     * (the spent ones go on the way). */
    conn_t *idle = NULL;
    for (conn_t *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != C_IDLE || c->base != r->base)
            continue;
        if (!conn_fresh(c)) {
            conn_free(c);
            continue;
        }
        if (!idle)
            idle = c;
    }
    if (idle) {
        conn_send(idle, r);
        return;
    }
    if (s->nconns < s->o.connection_limit) {
        char why[160];
        conn_t *c = conn_open(s, r->base, why, sizeof why);
        if (c)
            conn_send(c, r);
        else
            attempt_failed(r, why);
        return;
    }
    r->queued = true;
    if (s->wait_tail)
        s->wait_tail->next = r;
    else
        s->wait_head = r;
    s->wait_tail = r;
    evtimer_del(r->timer);
    arm(r->timer, s->o.timeout);
}

/* Another attempt after retry_delay, or the failure is reported (from
 * the loop: this may run inside policysvc_request). */
static void attempt_failed(policysvc_req_t *r, const char *why)
{
    policysvc_t *s = r->svc;
    s->st.failures++;
    snprintf(r->error, sizeof r->error, "%s", why);
    evtimer_del(r->timer);
    if (r->attempts < s->o.try_limit) {
        log_warn("smtpd", "policy service %s (%s): %s; trying again in %us (attempt %u of %u)", s->name,
                 s->addr_text, why, s->o.retry_delay, r->attempts + 1, s->o.try_limit);
        arm(r->timer, s->o.retry_delay);
    } else {
        r->giving_up = true;
        arm(r->timer, 0);
    }
}

static void req_free(policysvc_req_t *r)
{
    if (r->timer)
        event_free(r->timer);
    free(r->text);
    free(r);
}

/* Hand the result over; r and (possibly) its service are gone after. */
static void finish(policysvc_req_t *r, bool ok, const char *action)
{
    policysvc_t *s = r->svc;
    char error[sizeof r->error];
    str_copy(error, r->error, sizeof error);
    double ms = (now_mono() - r->started) * 1000.0;
    policysvc_result_t res = {
        .ok = ok,
        .action = ok ? action : NULL,
        .error = ok ? NULL : error,
        .attempts = r->attempts,
        .ms = ms < 0 ? 0 : (unsigned)(ms + 0.5),
    };
    policysvc_cb cb = r->cb;
    void *arg = r->arg;
    req_free(r);
    cb(arg, &res);
    policysvc_close(&s);
}

policysvc_req_t *policysvc_request(policysvc_t *s, struct event_base *base, const char *request, policysvc_cb cb,
                                   void *arg)
{
    policysvc_req_t *r = xcalloc(1, sizeof *r);
    r->svc = policysvc_ref(s);
    r->base = base;
    r->len = strlen(request);
    r->text = xstrndup(request, r->len);
    r->cb = cb;
    r->arg = arg;
    r->started = now_mono();
    r->timer = evtimer_new(base, req_timer, r);
    if (!r->timer)
        log_panic("policysvc: evtimer_new failed");
    start_attempt(r);
    return r;
}

void policysvc_cancel(policysvc_req_t *r)
{
    if (!r)
        return;
    policysvc_t *s = r->svc;
    if (r->conn) {
        /* The connection finishes what it started, without a request. */
        r->conn->req = NULL;
    } else if (r->queued) {
        unqueue(s, r);
    }
    req_free(r);
    policysvc_close(&s);
}
