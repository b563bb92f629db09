/* Unit tests for src/queue/control.c: a real event loop with qctl_listen in
 * the test thread, qctl_request (and raw clients) from a second thread;
 * the request shapes, ping, unknown commands, too-long requests, stale
 * socket replacement, refusing a second daemon, no-daemon errors. */
#include "harness.h"

#include "core/buf.h"
#include "core/util.h"
#include "queue/control.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct qc_call {
    char cmd[32];
    char arg[64];
    int n;
} qc_call_t;

static void qc_handler(void *arg, const char *cmd, const char *cmd_arg, buf_t *reply)
{
    qc_call_t *c = arg;
    str_copy(c->cmd, cmd, sizeof c->cmd);
    str_copy(c->arg, cmd_arg ? cmd_arg : "(none)", sizeof c->arg);
    c->n++;
    if (strcmp(cmd, "flush") == 0 && cmd_arg)
        buf_printf(reply, "ok 1");
    else if (strcmp(cmd, "flush") == 0)
        buf_printf(reply, "ok 3");
    else
        buf_puts(reply, "ok 0\nsmuggled");
}

/* A client job run on a second thread while the test thread runs the loop. */
typedef struct qc_job {
    const char *qdir;
    const char *cmd, *arg;
    const char *raw;     /* instead of qctl_request: send these bytes, read one line */
    size_t rawlen;
    bool shut;           /* shutdown(SHUT_WR) after the raw bytes */
    unsigned timeout_ms;
    int rc, err;
    buf_t reply, errtext;
    atomic_int done;
} qc_job_t;

static void qc_raw(qc_job_t *j)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/%s", j->qdir, QCTL_SOCKET);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    j->rc = -1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        j->err = errno;
        if (fd >= 0)
            close(fd);
        return;
    }
    if (j->rawlen)
        (void)!send(fd, j->raw, j->rawlen, MSG_NOSIGNAL);
    if (j->shut)
        shutdown(fd, SHUT_WR);
    char tmp[256];
    ssize_t r;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, 10000) > 0 && (r = recv(fd, tmp, sizeof tmp, 0)) > 0)
        buf_append(&j->reply, tmp, (size_t)r);
    close(fd);
    j->rc = 0;
}

static void *qc_client(void *arg)
{
    qc_job_t *j = arg;
    if (j->raw)
        qc_raw(j);
    else {
        j->rc = qctl_request(j->qdir, j->cmd, j->arg, j->timeout_ms ? j->timeout_ms : 5000, &j->reply,
                             &j->errtext);
        j->err = errno;
    }
    atomic_store(&j->done, 1);
    return NULL;
}

static void qc_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    qc_job_t *j = ((void **)arg)[0];
    struct event_base *base = ((void **)arg)[1];
    if (atomic_load(&j->done))
        event_base_loopbreak(base);
}

/* Run job on a thread; spin the loop (if any) until it is done. */
static void qc_run(struct event_base *base, qc_job_t *j)
{
    pthread_t t;
    buf_reset(&j->reply);
    buf_reset(&j->errtext);
    atomic_store(&j->done, 0);
    pthread_create(&t, NULL, qc_client, j);
    if (base) {
        void *pair[2] = {j, base};
        struct event *tick = event_new(base, -1, EV_PERSIST, qc_tick, pair);
        struct timeval tv = {0, 5000};
        event_add(tick, &tv);
        event_base_dispatch(base);
        event_free(tick);
    }
    pthread_join(t, NULL);
}

static int qc_mkdir(char *dir, size_t size)
{
    str_copy(dir, "/tmp/moat-qctl-XXXXXX", size);
    return mkdtemp(dir) ? 0 : -1;
}

static void qc_cleanup(const char *dir)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s", dir, QCTL_SOCKET);
    unlink(buf_cstr(&p));
    rmdir(dir);
    buf_free(&p);
}

/* Bind (and maybe listen on) dir/control without serving it. */
static int qc_bind(const char *dir, bool do_listen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s/%s", dir, QCTL_SOCKET);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0 || (do_listen && listen(fd, 4) != 0)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

TEST(qctl_requests_and_replies)
{
    char dir[64];
    REQUIRE(qc_mkdir(dir, sizeof dir) == 0);
    struct event_base *base = event_base_new();
    qc_call_t calls = {0};
    buf_t err = BUF_INIT;
    qctl_t *ctl = qctl_listen(base, dir, qc_handler, &calls, &err);
    REQUIRE(ctl != NULL);

    buf_t sock = BUF_INIT;
    buf_printf(&sock, "%s/%s", dir, QCTL_SOCKET);
    struct stat st;
    CHECK(lstat(buf_cstr(&sock), &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);

    qc_job_t j = {.qdir = dir, .cmd = "ping"};
    qc_run(base, &j);
    CHECK_INT(j.rc, 0);
    buf_t want = BUF_INIT;
    buf_printf(&want, "ok %ld", (long)getpid());
    CHECK_STR(buf_cstr(&j.reply), buf_cstr(&want));
    CHECK_INT(calls.n, 0);   /* ping is answered by control.c */

    j.cmd = "flush";
    qc_run(base, &j);
    CHECK_INT(j.rc, 0);
    CHECK_STR(buf_cstr(&j.reply), "ok 3");
    CHECK_STR(calls.cmd, "flush");
    CHECK_STR(calls.arg, "(none)");

    j.arg = "0123ABCDEF";
    qc_run(base, &j);
    CHECK_STR(buf_cstr(&j.reply), "ok 1");
    CHECK_STR(calls.arg, "0123ABCDEF");

    /* The handler's reply stays one line. */
    j.cmd = "rescan";
    j.arg = NULL;
    qc_run(base, &j);
    CHECK_STR(buf_cstr(&j.reply), "ok 0 smuggled");
    CHECK_STR(calls.cmd, "rescan");
    int seen = calls.n;

    /* Bad shapes never reach the handler. */
    const char *bad[][2] = {{"flush", "../x"}, {"rescan", "A1"}, {"ping", "A1"}, {"FLUSH", NULL},
                            {"delete", "A1"}, {"flush", "A1 B2"}, {"", NULL}};
    const char *want_reply[] = {"error invalid queue id", "error unknown command", "error unknown command",
                                "error unknown command",  "error unknown command", "error unknown command",
                                "error unknown command"};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        j.cmd = bad[i][0];
        j.arg = bad[i][1];
        qc_run(base, &j);
        CHECK_INT(j.rc, 0);
        CHECK_STR(buf_cstr(&j.reply), want_reply[i]);
    }
    CHECK_INT(calls.n, seen);

    /* Raw clients: CRLF is fine; a missing LF before EOF too; over 512 bytes is not. */
    buf_putc(&want, '\n');
    qc_job_t r = {.qdir = dir, .raw = "ping\r\n", .rawlen = 6};
    qc_run(base, &r);
    CHECK_STR(buf_cstr(&r.reply), buf_cstr(&want));
    r.raw = "ping";
    r.rawlen = 4;
    r.shut = true;
    qc_run(base, &r);
    CHECK_STR(buf_cstr(&r.reply), buf_cstr(&want));
    r.shut = false;
    char big[700];
    memset(big, 'a', sizeof big);
    r.raw = big;
    r.rawlen = sizeof big;
    qc_run(base, &r);
    CHECK_STR(buf_cstr(&r.reply), "error request too long\n");
    r.raw = "flush\0 x\n";
    r.rawlen = 9;
    qc_run(base, &r);
    CHECK_STR(buf_cstr(&r.reply), "error unknown command\n");

    qctl_close(&ctl);
    CHECK(ctl == NULL);
    CHECK(lstat(buf_cstr(&sock), &st) != 0 && errno == ENOENT);

    /* No daemon: ENOENT, as `moat queue` reports it. */
    j.cmd = "ping";
    qc_run(NULL, &j);
    CHECK_INT(j.rc, -1);
    CHECK_INT(j.err, ENOENT);
    CHECK_STR(buf_cstr(&j.reply), "");
    CHECK(j.errtext.len > 0);

    buf_free(&j.reply);
    buf_free(&j.errtext);
    buf_free(&r.reply);
    buf_free(&r.errtext);
    buf_free(&want);
    buf_free(&sock);
    buf_free(&err);
    event_base_free(base);
    qc_cleanup(dir);
}

TEST(qctl_stale_socket_and_second_daemon)
{
    char dir[64];
    REQUIRE(qc_mkdir(dir, sizeof dir) == 0);
    struct event_base *base = event_base_new();
    qc_call_t calls = {0};
    buf_t err = BUF_INIT;

    /* A socket file nobody listens on: the client sees ECONNREFUSED, and
     * a daemon replaces it. */
    int fd = qc_bind(dir, false);
    REQUIRE(fd >= 0);
    close(fd);
    qc_job_t j = {.qdir = dir, .cmd = "ping"};
    qc_run(NULL, &j);
    CHECK_INT(j.rc, -1);
    CHECK_INT(j.err, ECONNREFUSED);
    qctl_t *ctl = qctl_listen(base, dir, qc_handler, &calls, &err);
    CHECK_STR(buf_cstr(&err), "");
    REQUIRE(ctl != NULL);
    qc_run(base, &j);
    CHECK_INT(j.rc, 0);
    CHECK(strncmp(buf_cstr(&j.reply), "ok ", 3) == 0);

    /* A second daemon on the same queue is refused, and the first keeps its socket. */
    qctl_t *ctl2 = qctl_listen(base, dir, qc_handler, &calls, &err);
    CHECK(ctl2 == NULL);
    CHECK(strstr(buf_cstr(&err), "another moat daemon is running on this queue") != NULL);
    qc_run(base, &j);
    CHECK_INT(j.rc, 0);
    qctl_close(&ctl);

    /* Another process listening (answering nothing yet) counts as a daemon;
     * a client that gets no reply gives up with ETIMEDOUT. */
    fd = qc_bind(dir, true);
    REQUIRE(fd >= 0);
    buf_reset(&err);
    ctl2 = qctl_listen(base, dir, qc_handler, &calls, &err);
    CHECK(ctl2 == NULL);
    CHECK(strstr(buf_cstr(&err), "another moat daemon") != NULL);
    j.timeout_ms = 100;
    qc_run(NULL, &j);
    CHECK_INT(j.rc, -1);
    CHECK_INT(j.err, ETIMEDOUT);
    close(fd);

    /* Not a socket: left alone. */
    buf_t sock = BUF_INIT;
    buf_printf(&sock, "%s/%s", dir, QCTL_SOCKET);
    unlink(buf_cstr(&sock));
    FILE *f = fopen(buf_cstr(&sock), "w");
    REQUIRE(f != NULL);
    fclose(f);
    buf_reset(&err);
    ctl2 = qctl_listen(base, dir, qc_handler, &calls, &err);
    CHECK(ctl2 == NULL);
    CHECK(strstr(buf_cstr(&err), "not a socket") != NULL);
    struct stat st;
    CHECK(lstat(buf_cstr(&sock), &st) == 0 && S_ISREG(st.st_mode));
    CHECK_INT(calls.n, 0);

    buf_free(&sock);
    buf_free(&j.reply);
    buf_free(&j.errtext);
    buf_free(&err);
    event_base_free(base);
    qc_cleanup(dir);
}
