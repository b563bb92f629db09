/*
 * control: the daemon's control socket (queue_directory/control) and the
 * blocking client `moat queue` uses.  See control.h for the protocol.
 *
 * Server side, on the loop thread: a listener, and per connection one
 * bufferevent that reads one request line (at most QCTL_LINE_MAX bytes,
 * within QCTL_IDLE_SEC), answers one line and closes once the reply has
 * been written.  control.c checks the command's shape (known name, the
 * argument it takes) and answers "ping" itself; the daemon's handler sees
 * only flush, flush ID and rescan.
 *
 * A socket file left by a dead daemon is replaced only when connect() to
 * it fails with ECONNREFUSED: a daemon that answers keeps its socket and
 * the newcomer refuses to start, so two daemons never share one queue.
 *
 * Never: block the loop (the server side does no disk work beyond the
 * bind); remove a socket file that is not the one this process bound;
 * keep a connection that sends nothing.
 */
#include "queue/control.h"

#include "core/log.h"
#include "core/util.h"
#include "queue/spool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define QCTL_LINE_MAX 512     /* request bytes before the LF */
#define QCTL_IDLE_SEC 5       /* a client that sends nothing is dropped */
#define QCTL_REPLY_MAX 4096   /* the client stops reading here */

typedef struct qconn {
    struct qconn *next, *prev;
    qctl_t *ctl;
    struct bufferevent *bev;
    bool answered;
} qconn_t;

struct qctl {
    struct event_base *base;
    struct evconnlistener *lev;
    struct event *retry;       /* re-enables accepting after an accept error */
    char *path;
    dev_t dev;                 /* of the socket file we bound */
    ino_t ino;
    qctl_handler_fn fn;
    void *arg;
    qconn_t *conns;
};

/* ------------------------------------------------------------------ */
/* server                                                               */

static void conn_free(qconn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->ctl->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    /* bufferevent_free is safe inside the bufferevent's own callbacks:
     * libevent defers the release until the callback returns. */
    bufferevent_free(c->bev);
    free(c);
}

static void send_reply(qconn_t *c, const char *text)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add(out, text, strlen(text));
    evbuffer_add(out, "\n", 1);
    c->answered = true;
    /* Nothing more is read: one request per connection. */
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_enable(c->bev, EV_WRITE);
}

/* Check the request's shape ("cmd" or "cmd arg", one space) and answer it. */
static void dispatch(qconn_t *c, char *line)
{
    buf_t reply = BUF_INIT;
    char *arg = strchr(line, ' ');
    bool shaped = true;
    if (arg) {
        *arg++ = 0;
        shaped = *arg && !strchr(arg, ' ');
    }
    if (!shaped) {
        buf_puts(&reply, "error unknown command");
    } else if (strcmp(line, "ping") == 0 && !arg) {
        buf_printf(&reply, "ok %ld", (long)getpid());
    } else if (strcmp(line, "rescan") == 0 && !arg) {
        c->ctl->fn(c->ctl->arg, "rescan", NULL, &reply);
    } else if (strcmp(line, "flush") == 0) {
        if (arg && !spool_valid_id(arg))
            buf_puts(&reply, "error invalid queue id");
        else
            c->ctl->fn(c->ctl->arg, "flush", arg, &reply);
    } else {
        buf_puts(&reply, "error unknown command");
    }
    if (reply.len == 0)
        buf_puts(&reply, "error no reply");
    /* One line: a reply must not smuggle a second one. */
    for (size_t i = 0; i < reply.len; i++)
        if (reply.data[i] == '\n' || reply.data[i] == '\r' || reply.data[i] == 0)
            reply.data[i] = ' ';
    send_reply(c, buf_cstr(&reply));
    buf_free(&reply);
}

/* The request's n bytes (its LF removed) from the front of in. */
static void take_request(qconn_t *c, struct evbuffer *in, size_t n)
{
    char *line = xmalloc(n + 1);
    evbuffer_remove(in, line, n);
    line[n] = 0;
    if (n > 0 && line[n - 1] == '\r')
        line[--n] = 0;
    if (memchr(line, 0, n))
        send_reply(c, "error unknown command");
    else
        dispatch(c, line);
    free(line);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    qconn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->answered)
        return;
    struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
    if (lf.pos < 0) {
        if (evbuffer_get_length(in) > QCTL_LINE_MAX)
            send_reply(c, "error request too long");
        return;
    }
    if ((size_t)lf.pos > QCTL_LINE_MAX) {
        send_reply(c, "error request too long");
        return;
    }
    take_request(c, in, (size_t)lf.pos);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    qconn_t *c = arg;
    /* The write callback runs when the output has drained. */
    if (c->answered && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    qconn_t *c = arg;
    (void)bev;
    if ((what & BEV_EVENT_EOF) && !c->answered) {
        /* A request without its LF, then EOF: take what came.  (libevent
         * has frozen the input's end here: read from it, never add.) */
        struct evbuffer *in = bufferevent_get_input(c->bev);
        size_t n = evbuffer_get_length(in);
        if (n > 0 && n <= QCTL_LINE_MAX) {
            take_request(c, in, n);
            return;   /* the peer only shut down its side: the reply still goes out */
        }
    }
    conn_free(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    qctl_t *ctl = arg;
    (void)l;
    (void)sa;
    (void)salen;
    struct bufferevent *bev = bufferevent_socket_new(ctl->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    qconn_t *c = xcalloc(1, sizeof *c);
    c->ctl = ctl;
    c->bev = bev;
    c->next = ctl->conns;
    if (ctl->conns)
        ctl->conns->prev = c;
    ctl->conns = c;
    struct timeval tv = {QCTL_IDLE_SEC, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_enable(bev, EV_READ);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    qctl_t *ctl = arg;
    evconnlistener_enable(ctl->lev);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    qctl_t *ctl = arg;
    int e = EVUTIL_SOCKET_ERROR();
    log_warn("qmgr", "control socket: accept: %s", strerror(e));
    /* Out of descriptors: pause rather than spin on the ready socket. */
    evconnlistener_disable(l);
    struct timeval tv = {0, 200000};
    evtimer_add(ctl->retry, &tv);
}

static int socket_address(const char *path, struct sockaddr_un *sun, buf_t *err)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun->sun_path) {
        buf_printf(err, "control socket path too long (at most %zu bytes): %s", sizeof sun->sun_path - 1,
                   path);
        errno = ENAMETOOLONG;
        return -1;
    }
    str_copy(sun->sun_path, path, sizeof sun->sun_path);
    return 0;
}

static char *control_path(const char *queue_dir)
{
    buf_t p = BUF_INIT;
    size_t n = strlen(queue_dir);
    while (n > 1 && queue_dir[n - 1] == '/')
        n--;
    buf_printf(&p, "%.*s/%s", (int)n, queue_dir, QCTL_SOCKET);
    return buf_steal(&p);
}

/* A socket file is there already: is a daemon behind it?  0 when the file
 * may be replaced (connect refused: its daemon is gone), -1 with err
 * otherwise. */
static int check_stale(const char *path, const struct sockaddr_un *sun, buf_t *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;   /* gone meanwhile */
    if (!S_ISSOCK(st.st_mode)) {
        buf_printf(err, "%s exists and is not a socket; remove it if no moat daemon uses this queue", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        buf_printf(err, "socket: %s", strerror(errno));
        return -1;
    }
    int r = connect(fd, (const struct sockaddr *)sun, sizeof *sun);
    int e = errno;
    close(fd);
    if (r == 0) {
        buf_printf(err, "another moat daemon is running on this queue (%s answers)", path);
        return -1;
    }
    if (e == ECONNREFUSED)
        return 0;
    if (e == EAGAIN) {
        /* Its backlog is full: someone is very much alive. */
        buf_printf(err, "another moat daemon is running on this queue (%s is busy)", path);
        return -1;
    }
    buf_printf(err, "connect %s: %s", path, strerror(e));
    return -1;
}

qctl_t *qctl_listen(struct event_base *base, const char *queue_dir, qctl_handler_fn fn, void *arg,
                    buf_t *err)
{
    struct sockaddr_un sun;
    char *path = control_path(queue_dir);
    int fd = -1;
    if (socket_address(path, &sun, err) != 0)
        goto fail;
    if (check_stale(path, &sun, err) != 0)
        goto fail;
    if (unlink(path) != 0 && errno != ENOENT) {
        buf_printf(err, "remove stale %s: %s", path, strerror(errno));
        goto fail;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        buf_printf(err, "socket: %s", strerror(errno));
        goto fail;
    }
    if (bind(fd, (const struct sockaddr *)&sun, sizeof sun) != 0) {
        if (errno == EADDRINUSE)
            buf_printf(err, "another moat daemon is running on this queue (%s was bound first)", path);
        else
            buf_printf(err, "bind %s: %s", path, strerror(errno));
        goto fail;
    }
    /* The queue directory is 0700 already; the socket says so too. */
    struct stat st;
    if (chmod(path, 0600) != 0 || lstat(path, &st) != 0) {
        buf_printf(err, "chmod %s: %s", path, strerror(errno));
        unlink(path);
        goto fail;
    }
    if (listen(fd, 16) != 0) {
        buf_printf(err, "listen %s: %s", path, strerror(errno));
        unlink(path);
        goto fail;
    }
    qctl_t *ctl = xcalloc(1, sizeof *ctl);
    ctl->base = base;
    ctl->path = path;
    ctl->dev = st.st_dev;
    ctl->ino = st.st_ino;
    ctl->fn = fn;
    ctl->arg = arg;
    ctl->lev = evconnlistener_new(base, on_accept, ctl, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!ctl->lev) {
        buf_printf(err, "listen %s: cannot create the listener", path);
        unlink(path);
        free(ctl);
        goto fail;
    }
    evconnlistener_set_error_cb(ctl->lev, on_accept_error);
    ctl->retry = evtimer_new(base, on_retry, ctl);
    return ctl;

fail:
    if (fd >= 0)
        close(fd);
    free(path);
    return NULL;
}

void qctl_close(qctl_t **cp)
{
    qctl_t *ctl = *cp;
    if (!ctl)
        return;
    while (ctl->conns)
        conn_free(ctl->conns);
    if (ctl->retry)
        event_free(ctl->retry);
    evconnlistener_free(ctl->lev);
    /* Only our own socket: never one a later daemon bound after us. */
    struct stat st;
    if (lstat(ctl->path, &st) == 0 && st.st_dev == ctl->dev && st.st_ino == ctl->ino)
        unlink(ctl->path);
    free(ctl->path);
    free(ctl);
    *cp = NULL;
}

/* ------------------------------------------------------------------ */
/* client                                                               */

/* Milliseconds left until deadline (monotonic seconds), at least 0. */
static int ms_left(double deadline)
{
    double left = (deadline - now_mono()) * 1000.0;
    return left <= 0 ? 0 : left > 2e9 ? 2000000000 : (int)left;
}

/* Wait for fd to be ready for events; 0, or -1 with errno (ETIMEDOUT). */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int ms = ms_left(deadline);
        if (ms == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        int r = poll(&p, 1, ms);
        if (r > 0)
            return 0;
        if (r == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR)
            return -1;
    }
}

int qctl_request(const char *queue_dir, const char *cmd, const char *cmd_arg, unsigned timeout_ms,
                 buf_t *reply, buf_t *err)
{
    struct sockaddr_un sun;
    char *path = control_path(queue_dir);
    double deadline = now_mono() + timeout_ms / 1000.0;
    buf_t req = BUF_INIT;
    int fd = -1, rc = -1, e = 0;
    buf_reset(reply);
    if (socket_address(path, &sun, err) != 0) {
        e = errno;
        goto out;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        e = errno;
        buf_printf(err, "socket: %s", strerror(e));
        goto out;
    }
    if (connect(fd, (const struct sockaddr *)&sun, sizeof sun) != 0) {
        e = errno;
        if (e == EAGAIN || e == EINPROGRESS) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (wait_fd(fd, POLLOUT, deadline) != 0)
                e = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
                e = errno;
            else
                e = soerr;
        }
        if (e != 0) {
            buf_printf(err, "connect %s: %s", path, strerror(e));
            goto out;
        }
    }
    buf_puts(&req, cmd);
    if (cmd_arg && *cmd_arg)
        buf_printf(&req, " %s", cmd_arg);
    buf_putc(&req, '\n');
    for (size_t off = 0; off < req.len;) {
        ssize_t w = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, deadline) == 0)
            continue;
        e = errno;
        buf_printf(err, "send to %s: %s", path, strerror(e));
        goto out;
    }
    for (;;) {
        char tmp[512];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r > 0) {
            buf_append(reply, tmp, (size_t)r);
            char *lf = memchr(reply->data, '\n', reply->len);
            if (lf) {
                buf_truncate(reply, (size_t)(lf - reply->data));
                if (reply->len && reply->data[reply->len - 1] == '\r')
                    buf_truncate(reply, reply->len - 1);
                rc = 0;
                goto out;
            }
            if (reply->len > QCTL_REPLY_MAX) {
                e = EPROTO;
                buf_printf(err, "%s: reply too long", path);
                goto out;
            }
            continue;
        }
        if (r == 0) {
            e = EPROTO;
            buf_printf(err, "%s: the daemon closed the connection without a reply", path);
            goto out;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && wait_fd(fd, POLLIN, deadline) == 0)
            continue;
        e = errno;
        if (e == ETIMEDOUT)
            buf_printf(err, "%s: no reply within %u ms", path, timeout_ms);
        else
            buf_printf(err, "read from %s: %s", path, strerror(e));
        goto out;
    }
out:
    if (rc != 0)
        buf_reset(reply);
    if (fd >= 0)
        close(fd);
    free(path);
    buf_free(&req);
    errno = e;
    return rc;
}
