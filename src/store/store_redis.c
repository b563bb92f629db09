/*
 * store_redis: the shared state store, redis://[[user:]password@]host[:port][/db].
 *
 * One hiredis asynchronous connection on the caller's libevent loop
 * (hiredis's own libevent adapter).  Commands:
 *   get   MULTI GET PTTL EXEC         (value and expiry, atomically)
 *   set   SET key value [EX ttl]
 *   incr  MULTI SET key 0 EX ttl NX, INCRBY EXEC   (a new key gets the
 *         ttl, an existing one keeps its own: a fixed-window counter);
 *         INCRBY alone without a ttl
 *   del   DEL
 *   scan  SCAN cursor MATCH escaped-prefix* COUNT 500, then MULTI MGET
 *         PTTL... EXEC for each batch of keys
 * No scripts: a Redis with scripting disabled works too.
 *
 * Connection: opened at store_open without waiting; AUTH and SELECT go
 * first on every new connection, and the connection counts as up when
 * SELECT answers.  When it fails, requests in flight answer ST_ERROR
 * "redis HOST:PORT: REASON", and so does every request until the backoff
 * (1 s, 2 s, 4 s ... 30 s) has passed; the next request after that
 * reconnects.  A connection that was up and closes (a Redis restart, the
 * server's idle timeout) may be reopened by the next request at once.
 * Replies come in order, so the oldest command waiting for one carries the
 * deadline (2 s): when it passes, the server is taken to be hung and the
 * connection is dropped (every waiting request answers ST_ERROR).
 * Warnings are logged once per change of state (down, then up again), not
 * per request.
 *
 * A host name is resolved once, when the store opens (getaddrinfo blocks;
 * hiredis would resolve on every reconnect, on the loop).
 *
 * Owns: the hiredis context, the queue of commands awaiting replies, the
 * timer.  Must never free the context inside a hiredis callback other
 * than through redisAsyncFree (which hiredis defers), and never call a
 * user callback (store.c delivers).
 */
#include "store/store-private.h"

#include "core/log.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BACKOFF_MIN 1.0
#define BACKOFF_MAX 30.0
#define SCAN_COUNT "500"

static unsigned timeout_ms = 2000;

void store_test_redis_timeout(unsigned ms)
{
    timeout_ms = ms ? ms : 2000;
}

typedef enum { K_AUTH, K_SELECT, K_GET, K_SET, K_INCR, K_INCR_TX, K_DEL, K_SCAN, K_SCANGET } kind_t;

typedef struct rd rd_t;

/* A command whose reply is awaited (MULTI and the queued commands of a
 * transaction have none of their own: the EXEC carries the request). */
typedef struct cmd {
    struct cmd *next;
    rd_t *d;
    store_req_t *r;             /* NULL for AUTH and SELECT */
    kind_t kind;
    double deadline;            /* monotonic, real clock */
    char **keys;                /* K_SCANGET: the keys asked for */
    size_t nkeys;
} cmd_t;

struct rd {
    store_t *s;
    char *host, *addr, *user, *pass;
    char *label;                /* "HOST:PORT", for messages */
    int port, db;
    redisAsyncContext *ac;
    bool up;                    /* SELECT answered on ac */
    bool down_logged;           /* a failure was logged: log the recovery */
    bool ever_up;
    double next_try, backoff;   /* store_mono() */
    buf_t reason;               /* why the last connection failed */
    cmd_t *head, *tail;         /* awaiting replies, oldest first */
    struct event *timer;
};

/* ---------- the command queue and its deadline ---------- */

static void arm(rd_t *d)
{
    if (!d->head) {
        event_del(d->timer);
        return;
    }
    double left = d->head->deadline - now_mono();
    if (left < 0)
        left = 0;
    struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
    event_add(d->timer, &tv);
}

static void unlink_cmd(rd_t *d, cmd_t *c)
{
    cmd_t *prev = NULL;
    for (cmd_t *q = d->head; q; prev = q, q = q->next)
        if (q == c) {
            if (prev)
                prev->next = c->next;
            else
                d->head = c->next;
            if (d->tail == c)
                d->tail = prev;
            break;
        }
    c->next = NULL;
}

static void free_cmd(cmd_t *c)
{
    for (size_t i = 0; i < c->nkeys; i++)
        free(c->keys[i]);
    free(c->keys);
    free(c);
}

static cmd_t *new_cmd(rd_t *d, store_req_t *r, kind_t kind)
{
    cmd_t *c = xcalloc(1, sizeof *c);
    c->d = d;
    c->r = r;
    c->kind = kind;
    return c;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

/* Send one command; c (may be NULL: no reply wanted) joins the queue. */
static int send_argv(rd_t *d, cmd_t *c, int argc, const char **argv, const size_t *lens)
{
    if (!d->ac)
        return -1;
    if (c) {
        c->deadline = now_mono() + timeout_ms / 1000.0;
        if (d->tail)
            d->tail->next = c;
        else
            d->head = c;
        d->tail = c;
    }
    int rc = redisAsyncCommandArgv(d->ac, c ? on_reply : NULL, c, argc, argv, lens);
    if (rc != REDIS_OK) {
        if (c)
            unlink_cmd(d, c);
        return -1;
    }
    if (c && d->head == c)
        arm(d);
    return 0;
}

/* A command of string arguments (NULL-terminated list). */
static int send_strs(rd_t *d, cmd_t *c, ...)
{
    const char *argv[8];
    size_t lens[8];
    int n = 0;
    va_list ap;
    va_start(ap, c);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 8) {
        argv[n] = a;
        lens[n] = strlen(a);
        n++;
    }
    va_end(ap);
    return send_argv(d, c, n, argv, lens);
}

/* ---------- connection state ---------- */

/* The connection ac failed (or closed): forget it, set the reason, log a
 * change of state once.  Does not free ac: hiredis does, or the caller.
 * idle: it was up and nothing was waiting (a restart, an idle timeout). */
static void conn_down(rd_t *d, redisAsyncContext *ac, bool idle, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conn_down(rd_t *d, redisAsyncContext *ac, bool idle, const char *fmt, ...)
{
    if (!ac || d->ac != ac)
        return;   /* already handled */
    bool was_up = d->up;
    d->ac = NULL;
    d->up = false;
    buf_reset(&d->reason);
    buf_printf(&d->reason, "redis %s: ", d->label);
    size_t why = d->reason.len;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&d->reason, fmt, ap);
    va_end(ap);
    if (was_up && idle) {
        /* Nothing lost: the next request reconnects at once. */
        log_debug("store", "%s", buf_cstr(&d->reason));
        d->next_try = 0;
        d->backoff = BACKOFF_MIN;
        return;
    }
    if (!d->down_logged) {
        log_warn("store", "redis %s: %s%s", d->label, was_up ? "connection lost: " : "",
                 buf_cstr(&d->reason) + why);
        d->down_logged = true;
    }
    /* A lost live connection may be retried at once; a failed attempt
     * waits, longer each time. */
    if (was_up) {
        d->next_try = 0;
        d->backoff = BACKOFF_MIN;
    } else {
        d->next_try = store_mono() + d->backoff;
        d->backoff = d->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : d->backoff * 2;
    }
}

/* Drop the connection on purpose (timeout, bad SELECT): pending commands
 * get their NULL replies from hiredis and fail with d->reason. */
static void conn_drop(rd_t *d, redisAsyncContext *ac)
{
    if (ac)
        redisAsyncFree(ac);
    arm(d);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rd_t *d = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this returns; pending commands get NULL. */
        conn_down(d, ac, false, "%s", ac->errstr[0] ? ac->errstr : "cannot connect");
        return;
    }
    redisEnableKeepAlive(&ac->c);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rd_t *d = ac->data;
    bool idle = d->head == NULL;
    conn_down(d, ac, idle, "%s", status == REDIS_OK || !ac->errstr[0] ? "connection closed" : ac->errstr);
}

static bool conn_start(rd_t *d)
{
    redisAsyncContext *ac = redisAsyncConnect(d->addr ? d->addr : d->host, d->port);
    if (!ac) {
        buf_reset(&d->reason);
        buf_printf(&d->reason, "redis %s: cannot allocate a connection", d->label);
        return false;
    }
    ac->data = d;
    d->ac = ac;
    d->up = false;
    if (ac->err) {
        conn_down(d, ac, false, "%s", ac->errstr);
        redisAsyncFree(ac);
        return false;
    }
    redisLibeventAttach(ac, d->s->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    int rc = 0;
    if (d->pass) {
        cmd_t *c = new_cmd(d, NULL, K_AUTH);
        rc = d->user ? send_strs(d, c, "AUTH", d->user, d->pass, NULL) : send_strs(d, c, "AUTH", d->pass, NULL);
        if (rc != 0)
            free_cmd(c);
    }
    if (rc == 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", d->db);
        cmd_t *c = new_cmd(d, NULL, K_SELECT);
        if ((rc = send_strs(d, c, "SELECT", db, NULL)) != 0)
            free_cmd(c);
    }
    if (rc != 0) {
        conn_down(d, ac, false, "cannot send: %s", ac->errstr[0] ? ac->errstr : "connection closing");
        conn_drop(d, ac);
        return false;
    }
    return true;
}

/* A connection to send on: the current one, or a new one when the
 * backoff allows; false (reason in d->reason) otherwise. */
static bool conn_ready(rd_t *d)
{
    if (d->ac)
        return true;
    if (store_mono() < d->next_try)
        return false;
    return conn_start(d);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    rd_t *d = arg;
    if (!d->head)
        return;
    if (d->head->deadline > now_mono()) {
        arm(d);
        return;
    }
    redisAsyncContext *ac = d->ac;
    if (!ac)
        return;   /* hiredis is still handing back a dead connection's commands */
    conn_down(d, ac, false, "no reply within %u ms", timeout_ms);
    conn_drop(d, ac);
}

/* ---------- requests ---------- */

static void fail_req(rd_t *d, store_req_t *r)
{
    store_req_fail(r, "%s", d->reason.len ? buf_cstr(&d->reason) : "redis: not connected");
    store_req_finish(r);
}

static void send_failed(rd_t *d, store_req_t *r, cmd_t *c)
{
    free_cmd(c);
    if (d->ac && d->ac->errstr[0]) {
        store_req_fail(r, "redis %s: %s", d->label, d->ac->errstr);
        store_req_finish(r);
    } else {
        fail_req(d, r);
    }
}

static void send_scan(rd_t *d, store_req_t *r)
{
    if (!conn_ready(d)) {
        fail_req(d, r);
        return;
    }
    buf_t pat = BUF_INIT;
    for (const char *p = r->key; *p; p++) {
        if (strchr("*?[]\\", *p))
            buf_putc(&pat, '\\');
        buf_putc(&pat, *p);
    }
    buf_putc(&pat, '*');
    cmd_t *c = new_cmd(d, r, K_SCAN);
    const char *cursor = r->pos.len ? buf_cstr(&r->pos) : "0";
    int rc = send_strs(d, c, "SCAN", cursor, "MATCH", buf_cstr(&pat), "COUNT", SCAN_COUNT, NULL);
    buf_free(&pat);
    if (rc != 0)
        send_failed(d, r, c);
}

static void rd_start(store_t *s, store_req_t *r)
{
    rd_t *d = s->impl;
    if (r->op == SOP_SCAN) {
        send_scan(d, r);
        return;
    }
    if (!conn_ready(d)) {
        fail_req(d, r);
        return;
    }
    const char *key = r->key;
    char ttl[16], by[24];
    snprintf(ttl, sizeof ttl, "%u", r->ttl);
    snprintf(by, sizeof by, "%lld", r->by);
    cmd_t *c = NULL;
    int rc = 0;
    switch (r->op) {
    case SOP_GET:
        c = new_cmd(d, r, K_GET);
        if ((rc = send_strs(d, NULL, "MULTI", NULL)) == 0 && (rc = send_strs(d, NULL, "GET", key, NULL)) == 0 &&
            (rc = send_strs(d, NULL, "PTTL", key, NULL)) == 0)
            rc = send_strs(d, c, "EXEC", NULL);
        break;
    case SOP_SET: {
        c = new_cmd(d, r, K_SET);
        const char *argv[] = {"SET", key, r->val.data ? r->val.data : "", "EX", ttl};
        size_t lens[] = {3, strlen(key), r->val.len, 2, strlen(ttl)};
        rc = send_argv(d, c, r->ttl ? 5 : 3, argv, lens);
        break;
    }
    case SOP_INCR:
        if (r->ttl) {
            c = new_cmd(d, r, K_INCR_TX);
            if ((rc = send_strs(d, NULL, "MULTI", NULL)) == 0 &&
                (rc = send_strs(d, NULL, "SET", key, "0", "EX", ttl, "NX", NULL)) == 0 &&
                (rc = send_strs(d, NULL, "INCRBY", key, by, NULL)) == 0)
                rc = send_strs(d, c, "EXEC", NULL);
        } else {
            c = new_cmd(d, r, K_INCR);
            rc = send_strs(d, c, "INCRBY", key, by, NULL);
        }
        break;
    case SOP_DEL:
        c = new_cmd(d, r, K_DEL);
        rc = send_strs(d, c, "DEL", key, NULL);
        break;
    default:
        break;
    }
    if (rc != 0)
        send_failed(d, r, c);
}

static void rd_resume(store_t *s, store_req_t *r)
{
    send_scan(s->impl, r);
}

/* A reply that is an error: its text for the request. */
static bool reply_error(rd_t *d, store_req_t *r, const redisReply *rep, const char *what)
{
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        store_req_fail(r, "redis %s: %s \"%s\": %s", d->label, what, r->key, rep->str);
        return true;
    }
    return false;
}

static void unexpected(rd_t *d, store_req_t *r, const char *what)
{
    store_req_fail(r, "redis %s: %s \"%s\": unexpected reply", d->label, what, r->key);
}

static long long expiry_of(long long pttl)
{
    return pttl >= 0 ? (store_now_ms() + pttl + 999) / 1000 : 0;
}

static void got_get(rd_t *d, store_req_t *r, const redisReply *rep)
{
    if (reply_error(d, r, rep, "GET"))
        return;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        unexpected(d, r, "GET");
        return;
    }
    const redisReply *v = rep->element[0], *t = rep->element[1];
    if (reply_error(d, r, v, "GET") || reply_error(d, r, t, "PTTL"))
        return;
    if (v->type == REDIS_REPLY_NIL || (t->type == REDIS_REPLY_INTEGER && t->integer == -2)) {
        r->status = ST_NOTFOUND;
        return;
    }
    if (v->type != REDIS_REPLY_STRING || t->type != REDIS_REPLY_INTEGER) {
        unexpected(d, r, "GET");
        return;
    }
    r->status = ST_OK;
    buf_append(&r->val, v->str, v->len);
    r->expires = expiry_of(t->integer);
}

static void got_int(rd_t *d, store_req_t *r, const redisReply *rep, const char *what)
{
    if (reply_error(d, r, rep, what))
        return;
    if (rep->type != REDIS_REPLY_INTEGER) {
        unexpected(d, r, what);
        return;
    }
    r->status = ST_OK;
    r->num = rep->integer;
}

static void got_scan(rd_t *d, cmd_t *c, const redisReply *rep)
{
    store_req_t *r = c->r;
    if (reply_error(d, r, rep, "SCAN"))
        goto finish;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_ARRAY) {
        unexpected(d, r, "SCAN");
        goto finish;
    }
    buf_reset(&r->pos);
    buf_append(&r->pos, rep->element[0]->str, rep->element[0]->len);
    bool last = strcmp(buf_cstr(&r->pos), "0") == 0;
    const redisReply *keys = rep->element[1];
    if (keys->elements == 0) {
        if (last) {
            r->status = ST_OK;
            goto finish;
        }
        send_scan(d, r);   /* an empty step of the iteration */
        return;
    }
    size_t n = keys->elements;
    cmd_t *g = new_cmd(d, r, K_SCANGET);
    g->keys = xcalloc(n, sizeof *g->keys);
    const char **argv = xcalloc(n + 1, sizeof *argv);
    size_t *lens = xcalloc(n + 1, sizeof *lens);
    argv[0] = "MGET";
    lens[0] = 4;
    for (size_t i = 0; i < n; i++) {
        const redisReply *k = keys->element[i];
        g->keys[g->nkeys++] = k->type == REDIS_REPLY_STRING ? xstrndup(k->str, k->len) : xstrdup("");
        argv[i + 1] = g->keys[i];
        lens[i + 1] = strlen(g->keys[i]);
    }
    int rc = send_strs(d, NULL, "MULTI", NULL);
    if (rc == 0)
        rc = send_argv(d, NULL, (int)n + 1, argv, lens);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = send_strs(d, NULL, "PTTL", g->keys[i], NULL);
    if (rc == 0)
        rc = send_strs(d, g, "EXEC", NULL);
    free(argv);
    free(lens);
    if (rc != 0)
        send_failed(d, r, g);
    return;
finish:
    store_req_finish(r);
}

static void got_scanget(rd_t *d, cmd_t *c, const redisReply *rep)
{
    store_req_t *r = c->r;
    if (reply_error(d, r, rep, "MGET"))
        return;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != c->nkeys + 1 ||
        rep->element[0]->type != REDIS_REPLY_ARRAY || rep->element[0]->elements != c->nkeys) {
        unexpected(d, r, "MGET");
        return;
    }
    const redisReply *vals = rep->element[0];
    for (size_t i = 0; i < c->nkeys; i++) {
        const redisReply *v = vals->element[i], *t = rep->element[i + 1];
        if (v->type != REDIS_REPLY_STRING || t->type != REDIS_REPLY_INTEGER || t->integer == -2)
            continue;   /* gone since SCAN, or not a string */
        if (!*c->keys[i] || strlen(c->keys[i]) > STORE_KEY_MAX)
            continue;
        store_req_item(r, c->keys[i], strlen(c->keys[i]), v->str, v->len, expiry_of(t->integer));
    }
    r->status = ST_OK;
    r->more = strcmp(buf_cstr(&r->pos), "0") != 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    cmd_t *c = priv;
    rd_t *d = c->d;
    const redisReply *rep = reply;
    unlink_cmd(d, c);
    if (d->ac == ac)
        arm(d);
    if (!rep) {
        /* The connection went (or is being freed on purpose). */
        conn_down(d, ac, false, "%s", ac->err && ac->errstr[0] ? ac->errstr : "connection closed");
        if (c->r)
            fail_req(d, c->r);
        free_cmd(c);
        return;
    }
    store_req_t *r = c->r;
    switch (c->kind) {
    case K_AUTH:
    case K_SELECT:
        if (rep->type == REDIS_REPLY_ERROR) {
            conn_down(d, ac, false, "%s: %s", c->kind == K_AUTH ? "AUTH" : "SELECT", rep->str);
            redisAsyncFree(ac);   /* hiredis defers it past this callback */
        } else if (c->kind == K_SELECT && d->ac == ac) {
            d->up = true;
            d->backoff = BACKOFF_MIN;
            if (d->down_logged) {
                log_info("store", "redis %s: connected%s", d->label, d->ever_up ? " again" : "");
                d->down_logged = false;
            }
            d->ever_up = true;
        }
        free_cmd(c);
        return;
    case K_GET:
        got_get(d, r, rep);
        break;
    case K_SET:
        if (!reply_error(d, r, rep, "SET"))
            r->status = ST_OK;
        break;
    case K_INCR:
        got_int(d, r, rep, "INCRBY");
        break;
    case K_INCR_TX:
        if (reply_error(d, r, rep, "INCRBY"))
            break;
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2)
            unexpected(d, r, "INCRBY");
        else
            got_int(d, r, rep->element[1], "INCRBY");
        break;
    case K_DEL:
        got_int(d, r, rep, "DEL");
        if (r->status == ST_OK && r->num == 0)
            r->status = ST_NOTFOUND;
        r->num = 0;
        break;
    case K_SCAN:
        got_scan(d, c, rep);
        free_cmd(c);
        return;
    case K_SCANGET:
        got_scanget(d, c, rep);
        break;
    }
    free_cmd(c);
    store_req_finish(r);
}

/* ---------- open and close ---------- */

typedef struct url {
    char *user, *pass, *host;
    int port, db;
} url_t;

static void url_free(url_t *u)
{
    free(u->user);
    free(u->pass);
    free(u->host);
}

static int parse_url(const char *spec, url_t *u, buf_t *err)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    const char *p = spec + 8;   /* after "redis://" */
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *at = memrchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p)
                u->user = xstrndup(p, (size_t)(colon - p));
            u->pass = xstrndup(colon + 1, (size_t)(at - colon - 1));
        } else {
            u->pass = xstrndup(p, (size_t)(at - p));
        }
        p = at + 1;
    }
    const char *hend, *portp = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb)
            goto bad;
        u->host = xstrndup(p + 1, (size_t)(rb - p - 1));
        hend = rb + 1;
        if (hend < end && *hend != ':')
            goto bad;
        if (hend < end)
            portp = hend + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        u->host = xstrndup(p, (size_t)(hend - p));
        if (colon)
            portp = colon + 1;
    }
    if (!*u->host)
        goto bad;
    if (portp) {
        char *e;
        long port = strtol(portp, &e, 10);
        if (portp == end || e != end || port < 1 || port > 65535)
            goto bad;
        u->port = (int)port;
    }
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 1000000 || !(slash[1] >= '0' && slash[1] <= '9'))
            goto bad;
        u->db = (int)db;
    }
    return 0;
bad:
    buf_printf(err, "state store \"%s\": not a redis URL (want redis://host:port/db, e.g. "
                    "redis://127.0.0.1:6379/0)", spec);
    url_free(u);
    return -1;
}

static int rd_canon(const char *spec, buf_t *key, buf_t *err)
{
    url_t u;
    if (parse_url(spec, &u, err) != 0)
        return -1;
    bool v6 = strchr(u.host, ':') != NULL;
    buf_puts(key, "redis://");
    if (u.pass)   /* "pw@" and ":pw@" both mean a password alone */
        buf_printf(key, "%s:%s@", u.user ? u.user : "", u.pass);
    buf_printf(key, "%s%s%s:%d/%d", v6 ? "[" : "", u.host, v6 ? "]" : "", u.port, u.db);
    url_free(&u);
    return 0;
}

static int rd_open(store_t *s, buf_t *err)
{
    url_t u;
    if (parse_url(s->canon, &u, err) != 0)
        return -1;
    rd_t *d = xcalloc(1, sizeof *d);
    d->s = s;
    d->host = u.host;
    d->user = u.user;
    d->pass = u.pass;
    d->port = u.port;
    d->db = u.db;
    buf_t l = BUF_INIT;
    bool v6 = strchr(d->host, ':') != NULL;
    buf_printf(&l, "%s%s%s:%d", v6 ? "[" : "", d->host, v6 ? "]" : "", d->port);
    d->label = buf_steal(&l);
    /* Resolve a name now, not on the loop at each reconnect. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *ai = NULL;
    unsigned char tmp[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, d->host, tmp) != 1 && inet_pton(AF_INET6, d->host, tmp) != 1) {
        int rc = getaddrinfo(d->host, NULL, &hints, &ai);
        if (rc == 0 && ai) {
            char a[INET6_ADDRSTRLEN];
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a, sizeof a, NULL, 0, NI_NUMERICHOST) == 0)
                d->addr = xstrdup(a);
            freeaddrinfo(ai);
        } else {
            /* hiredis resolves it at each attempt; say why it may block. */
            log_warn("store", "redis %s: cannot resolve %s now (%s): resolving again at each connection",
                     d->label, d->host, gai_strerror(rc));
        }
    }
    d->backoff = BACKOFF_MIN;
    d->timer = evtimer_new(s->base, on_timer, d);
    s->impl = d;
    conn_start(d);   /* no waiting: a failure shows in the first requests */
    return 0;
}

static void rd_quiesce(store_t *s)
{
    rd_t *d = s->impl;
    redisAsyncContext *ac = d->ac;
    if (ac) {
        d->ac = NULL;
        d->up = false;
        buf_reset(&d->reason);
        buf_printf(&d->reason, "redis %s: store closed", d->label);
        redisAsyncFree(ac);   /* pending commands come back NULL: their requests were cancelled */
    }
    event_del(d->timer);
}

static void rd_revive(store_t *s)
{
    rd_t *d = s->impl;
    d->next_try = 0;
}

static void rd_destroy(store_t *s)
{
    rd_t *d = s->impl;
    if (d->ac) {
        redisAsyncContext *ac = d->ac;
        d->ac = NULL;
        redisAsyncFree(ac);
    }
    while (d->head) {
        cmd_t *c = d->head;
        d->head = c->next;
        free_cmd(c);
    }
    event_free(d->timer);
    free(d->host);
    free(d->addr);
    free(d->user);
    free(d->pass);
    free(d->label);
    buf_free(&d->reason);
    free(d);
    s->impl = NULL;
}

const store_backend_t store_backend_redis = {
    .scheme = "redis",
    .canon = rd_canon,
    .open = rd_open,
    .start = rd_start,
    .resume = rd_resume,
    .quiesce = rd_quiesce,
    .revive = rd_revive,
    .destroy = rd_destroy,
};
