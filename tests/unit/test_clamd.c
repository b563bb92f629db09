/* Unit tests for src/content/clamd (the INSTREAM client): the reply
 * parser, the content_scanner spec, and the client against a fake clamd
 * on the test's own event loop (loopback TCP or a unix socket in /tmp)
 * for the faults a real clamd will not produce on demand: refused,
 * silence (timeouts), a close in the middle of the stream, garbage, an
 * ERROR reply while we are still sending, a peer that stops reading.
 * A real clamd is exercised by tests/proto/test_virus.py. */
#include "harness.h"

#include "content/clamd.h"
#include "core/util.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ------------------------------------------------------------ the parser */

static scan_status parse(const char *s, buf_t *d)
{
    return clamd_parse_reply(s, strlen(s), d);
}

TEST(clamd_parse_reply_verdicts)
{
    buf_t d = BUF_INIT;
    CHECK_INT(parse("stream: OK", &d), SCAN_CLEAN);
    CHECK_STR(buf_cstr(&d), "");
    /* a trailing newline (clamd without the z prefix) and the NUL itself */
    CHECK_INT(clamd_parse_reply("stream: OK\0", 11, &d), SCAN_CLEAN);
    CHECK_INT(parse("stream: OK\n", &d), SCAN_CLEAN);
    CHECK_INT(parse("stream: Moat-Test-EICAR.UNOFFICIAL FOUND", &d), SCAN_INFECTED);
    CHECK_STR(buf_cstr(&d), "Moat-Test-EICAR.UNOFFICIAL");
    /* ExtendedDetectionInfo: the name as clamd writes it */
    CHECK_INT(parse("stream: Eicar-Signature(44d88612fea8a8f36de82e1278abb02f:68) FOUND", &d), SCAN_INFECTED);
    CHECK_STR(buf_cstr(&d), "Eicar-Signature(44d88612fea8a8f36de82e1278abb02f:68)");
    CHECK_INT(parse("INSTREAM size limit exceeded. ERROR", &d), SCAN_FAILED);
    CHECK_STR(buf_cstr(&d), "INSTREAM size limit exceeded. ERROR");
    CHECK_INT(parse("stream: Can't allocate memory ERROR", &d), SCAN_FAILED);
    CHECK_STR(buf_cstr(&d), "stream: Can't allocate memory ERROR");
    buf_free(&d);
}

TEST(clamd_parse_reply_garbage)
{
    buf_t d = BUF_INIT;
    CHECK_INT(parse("", &d), SCAN_FAILED);
    CHECK_STR(buf_cstr(&d), "empty reply");
    CHECK_INT(parse("\n", &d), SCAN_FAILED);
    CHECK_INT(parse("PONG", &d), SCAN_FAILED);
    CHECK_STR(buf_cstr(&d), "unexpected reply: PONG");
    /* near misses are not verdicts */
    CHECK_INT(parse("stream: OK then", &d), SCAN_FAILED);
    CHECK_INT(parse("stream:  FOUND", &d), SCAN_FAILED);   /* no name */
    CHECK_INT(parse("stream:   FOUND", &d), SCAN_INFECTED); /* a one-space name: still a detection */
    CHECK_STR(buf_cstr(&d), " ");
    CHECK_INT(parse("stream: FOUND", &d), SCAN_FAILED);
    CHECK_INT(parse("Stream: OK", &d), SCAN_FAILED);
    CHECK_INT(parse("1: stream: OK", &d), SCAN_FAILED);
    CHECK_INT(parse("ERROR", &d), SCAN_FAILED);
    CHECK_STR(buf_cstr(&d), "unexpected reply: ERROR");
    /* an embedded NUL or control bytes never reach the detail */
    CHECK_INT(clamd_parse_reply("stream: A\0B FOUND", 17, &d), SCAN_FAILED);
    CHECK_STR(buf_cstr(&d), "unexpected reply: stream: A?B FOUND");
    CHECK_INT(parse("stream: Evil\r\n250 ok\x80 FOUND", &d), SCAN_INFECTED);
    CHECK_STR(buf_cstr(&d), "Evil??250 ok?");
    /* long text is cut */
    buf_t big = BUF_INIT;
    buf_puts(&big, "stream: ");
    for (int i = 0; i < 1000; i++)
        buf_putc(&big, 'V');
    buf_puts(&big, " FOUND");
    CHECK_INT(clamd_parse_reply(big.data, big.len, &d), SCAN_INFECTED);
    CHECK_INT(d.len, 200);
    buf_free(&big);
    buf_free(&d);
}

/* ------------------------------------------------------------- the spec */

TEST(clamd_scanner_new_specs)
{
    buf_t err = BUF_INIT;
    scanner_t *sc = scanner_new("clamd:inet:127.0.0.1:3310", NULL, 1000, &err);
    REQUIRE(sc);
    CHECK_STR(scanner_name(sc), "clamd:inet:127.0.0.1:3310");
    scanner_free(&sc);
    CHECK(sc == NULL);
    scanner_free(&sc);
    sc = scanner_new("clamd:inet:[::1]:3310", NULL, 1000, &err);
    CHECK(sc != NULL);
    scanner_free(&sc);
    sc = scanner_new("clamd:unix:/run/clamav/clamd.ctl", NULL, 1000, &err);
    CHECK(sc != NULL);
    scanner_free(&sc);
    /* relative: under base_dir */
    sc = scanner_new("clamd:unix:private/clamd", "/var/spool/moat", 1000, &err);
    CHECK(sc != NULL);
    scanner_free(&sc);
    CHECK_INT(err.len, 0);
    static const struct {
        const char *spec, *want;
    } bad[] = {
        {"", "content_scanner: \"\": need clamd:unix:/path or clamd:inet:host:port"},
        {"inet:127.0.0.1:3310", "content_scanner: \"inet:127.0.0.1:3310\": need clamd:unix:/path"},
        {"clamd:/run/clamd.ctl", "content_scanner: \"clamd:/run/clamd.ctl\": need clamd:unix:/path"},
        {"clamd:inet:127.0.0.1", "content_scanner: \"clamd:inet:127.0.0.1\": need inet:host:port"},
        {"clamd:inet:[::1]3310", "content_scanner: \"clamd:inet:[::1]3310\": need inet:[address]:port"},
        {"clamd:unix:", "content_scanner: \"clamd:unix:\": no socket path"},
        {"clamd:inet:127.0.0.1:0", "content_scanner: \"clamd:inet:127.0.0.1:0\": port 0"},
        {"milter:inet:127.0.0.1:1", "content_scanner: \"milter:inet:127.0.0.1:1\": need clamd:"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf_reset(&err);
        sc = scanner_new(bad[i].spec, NULL, 1000, &err);
        CHECK(sc == NULL);
        if (strncmp(buf_cstr(&err), bad[i].want, strlen(bad[i].want)) != 0)
            harness_fail(__FILE__, __LINE__, "%s: error \"%s\", want \"%s...\"", bad[i].spec, buf_cstr(&err),
                         bad[i].want);
        scanner_free(&sc);
    }
    buf_free(&err);
}

/* ------------------------------------------------ a fake clamd on the loop */

enum {
    FK_VERDICT,      /* "stream: OK", or "stream: Fake.Virus FOUND" when the payload holds "EICAR" */
    FK_SILENT,       /* reads everything, never answers */
    FK_CLOSE,        /* closes without a word once `limit` payload bytes arrived */
    FK_GARBAGE,      /* answers "hello there" at the end */
    FK_ERROR,        /* past `limit` payload bytes: the size-limit ERROR, then closes */
    FK_NOREAD,       /* accepts and never reads */
    FK_PARTIAL,      /* at the end: "stream: O" and closes */
    FK_EARLY_OK,     /* answers "stream: OK" as soon as the command arrived */
};

typedef struct fake {
    struct event_base *base;
    struct evconnlistener *lis;
    int port;
    char path[108];
    int mode;
    size_t limit;
    int conns;
    struct bufferevent *peer;
    bool got_command;
    bool got_end;
    bool bad_framing;
    bool closing;            /* free the peer once the reply is out */
    size_t chunks;
    buf_t payload;
} fake_t;

static void fake_drop(fake_t *f)
{
    if (f->peer)
        bufferevent_free(f->peer);
    f->peer = NULL;
}

static void fake_reply(fake_t *f, const char *text)
{
    bufferevent_write(f->peer, text, strlen(text) + 1);
    f->closing = true;
}

static void fake_read(struct bufferevent *bev, void *arg)
{
    fake_t *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (f->closing || f->mode == FK_NOREAD)
        return;
    if (!f->got_command) {
        if (evbuffer_get_length(in) < 10)
            return;
        char cmd[10];
        evbuffer_remove(in, cmd, sizeof cmd);
        if (memcmp(cmd, "zINSTREAM", 10) != 0)
            f->bad_framing = true;
        f->got_command = true;
        if (f->mode == FK_EARLY_OK) {
            fake_reply(f, "stream: OK");
            return;
        }
    }
    while (!f->got_end) {
        unsigned char h[4];
        if (evbuffer_copyout(in, h, 4) < 4)
            return;
        size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (n > 1024 * 1024) {
            f->bad_framing = true;
            fake_drop(f);
            return;
        }
        if (evbuffer_get_length(in) < 4 + n)
            return;
        evbuffer_drain(in, 4);
        buf_reserve(&f->payload, n);
        evbuffer_remove(in, f->payload.data + f->payload.len, n);
        f->payload.len += n;
        f->payload.data[f->payload.len] = 0;
        if (n == 0) {
            f->got_end = true;
            break;
        }
        f->chunks++;
        if (f->mode == FK_CLOSE && f->payload.len >= f->limit) {
            fake_drop(f);
            return;
        }
        if (f->mode == FK_ERROR && f->payload.len > f->limit) {
            fake_reply(f, "INSTREAM size limit exceeded. ERROR");
            return;
        }
    }
    switch (f->mode) {
    case FK_VERDICT:
        fake_reply(f, memmem(f->payload.data, f->payload.len, "EICAR", 5) ? "stream: Fake.Virus FOUND"
                                                                              : "stream: OK");
        break;
    case FK_GARBAGE:
        fake_reply(f, "hello there");
        break;
    case FK_PARTIAL:
        bufferevent_write(f->peer, "stream: O", 9);
        f->closing = true;
        break;
    default:
        break;
    }
}

static void fake_written(struct bufferevent *bev, void *arg)
{
    (void)bev;
    fake_t *f = arg;
    if (f->closing)
        fake_drop(f);
}

static void fake_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    fake_drop(arg);
}

static void fake_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)lis;
    (void)sa;
    (void)salen;
    fake_t *f = arg;
    f->conns++;
    if (f->peer) {   /* one client at a time is all the tests need */
        close(fd);
        return;
    }
    f->peer = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(f->peer, fake_read, fake_written, fake_event, f);
    /* FK_NOREAD must leave the bytes in the kernel, so that the client's
     * socket fills up. */
    if (f->mode != FK_NOREAD)
        bufferevent_enable(f->peer, EV_READ | EV_WRITE);
}

static void fake_start(fake_t *f, struct event_base *base, int mode, bool unix_socket)
{
    memset(f, 0, sizeof *f);
    f->base = base;
    f->mode = mode;
    if (unix_socket) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(f->path, sizeof f->path, "/tmp/moat-clamd-test-%d.sock", (int)getpid());
        unlink(f->path);
        str_copy(un.sun_path, f->path, sizeof un.sun_path);
        f->lis = evconnlistener_new_bind(base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&un,
                                         sizeof un);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        f->lis = evconnlistener_new_bind(base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                         (struct sockaddr *)&sin, sizeof sin);
        if (f->lis) {
            socklen_t sl = sizeof sin;
            getsockname(evconnlistener_get_fd(f->lis), (struct sockaddr *)&sin, &sl);
            f->port = ntohs(sin.sin_port);
        }
    }
}

static void fake_stop(fake_t *f)
{
    fake_drop(f);
    if (f->lis)
        evconnlistener_free(f->lis);
    if (f->path[0])
        unlink(f->path);
    buf_free(&f->payload);
}

static scanner_t *fake_scanner(const fake_t *f, unsigned timeout_ms)
{
    char spec[160];
    if (f->path[0])
        snprintf(spec, sizeof spec, "clamd:unix:%s", f->path);
    else
        snprintf(spec, sizeof spec, "clamd:inet:127.0.0.1:%d", f->port);
    buf_t err = BUF_INIT;
    scanner_t *sc = scanner_new(spec, NULL, timeout_ms, &err);
    if (!sc)
        harness_fail(__FILE__, __LINE__, "scanner_new: %s", buf_cstr(&err));
    buf_free(&err);
    return sc;
}

/* ------------------------------------------------------- the client side */

typedef struct result {
    int calls;
    scan_status st;
    char detail[400];
} result_t;

static void on_done(void *arg, scan_status st, const char *detail)
{
    result_t *r = arg;
    r->calls++;
    r->st = st;
    snprintf(r->detail, sizeof r->detail, "%s", detail);
}

static void guard_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Run the loop until the verdict arrives (or a generous guard expires, so
 * a broken client fails the test instead of hanging it). */
static void run_until_done(struct event_base *base, result_t *r)
{
    bool expired = false;
    struct event *guard = evtimer_new(base, guard_fired, &expired);
    struct timeval tv = {20, 0};
    evtimer_add(guard, &tv);
    while (r->calls == 0 && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    if (expired)
        harness_fail(__FILE__, __LINE__, "no verdict");
}

/* A few turns of the loop without waiting for anything in particular. */
static void spin(struct event_base *base, int turns)
{
    for (int i = 0; i < turns; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Bytes from a repeating pattern, so the fake can check what arrived. */
static void pattern(buf_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_putc(b, (char)('a' + (i * 7 + i / 13) % 26));
}

/* Write msg in pieces of varying size (1 byte up to a few chunks). */
static void write_pieces(scan_t *s, const buf_t *msg)
{
    static const size_t sizes[] = {1, 7, 80, 1000, 65535, 65536, 65537, 200000, 3};
    size_t off = 0;
    for (size_t i = 0; off < msg->len; i++) {
        size_t n = sizes[i % ARRAY_LEN(sizes)];
        if (n > msg->len - off)
            n = msg->len - off;
        scan_write(s, msg->data + off, n);
        off += n;
    }
}

static void one_scan(int mode, bool unix_socket, const buf_t *msg, unsigned timeout_ms, size_t limit, fake_t *f,
                     result_t *r)
{
    struct event_base *base = event_base_new();
    fake_start(f, base, mode, unix_socket);
    f->limit = limit;
    memset(r, 0, sizeof *r);
    scanner_t *sc = fake_scanner(f, timeout_ms);
    if (f->lis && sc) {
        scan_t *s = scan_start(sc, base, on_done, r);
        write_pieces(s, msg);
        spin(base, 3);
        CHECK_INT(r->calls, 0);   /* nothing before scan_finish */
        scan_finish(s);
        CHECK_INT(r->calls, 0);   /* and nothing from inside it */
        run_until_done(base, r);
        spin(base, 3);            /* let the fake see the rest */
        CHECK_INT(r->calls, 1);
    }
    scanner_free(&sc);
    fake_stop(f);
    event_base_free(base);
}

TEST(clamd_scan_clean_and_infected_over_tcp)
{
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    pattern(&msg, 300000);   /* several chunks, written in odd pieces */
    one_scan(FK_VERDICT, false, &msg, 5000, 0, &f, &r);
    CHECK_INT(r.st, SCAN_CLEAN);
    CHECK_STR(r.detail, "");
    /* fake_stop freed the payload; check it in a second run that keeps it */
    buf_reset(&msg);
    buf_puts(&msg, "Subject: x\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n");
    one_scan(FK_VERDICT, false, &msg, 5000, 0, &f, &r);
    CHECK_INT(r.st, SCAN_INFECTED);
    CHECK_STR(r.detail, "Fake.Virus");
    buf_free(&msg);
}

TEST(clamd_scan_sends_the_exact_bytes)
{
    struct event_base *base = event_base_new();
    fake_t f;
    fake_start(&f, base, FK_VERDICT, false);
    REQUIRE(f.lis);
    scanner_t *sc = fake_scanner(&f, 5000);
    REQUIRE(sc);
    buf_t msg = BUF_INIT;
    pattern(&msg, 3 * 65536 + 11);
    result_t r = {0};
    scan_t *s = scan_start(sc, base, on_done, &r);
    write_pieces(s, &msg);
    scan_write(s, "", 0);   /* nothing: no empty chunk (that would end the stream) */
    scan_finish(s);
    run_until_done(base, &r);
    CHECK_INT(r.st, SCAN_CLEAN);
    CHECK(!f.bad_framing);
    CHECK(f.got_end);
    CHECK_INT(f.payload.len, msg.len);
    CHECK(f.payload.len == msg.len && memcmp(f.payload.data, msg.data, msg.len) == 0);
    /* no chunk above 64 KB, so at least four */
    CHECK(f.chunks >= 4);
    buf_free(&msg);
    scanner_free(&sc);
    fake_stop(&f);
    event_base_free(base);
}

TEST(clamd_scan_over_a_unix_socket)
{
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    buf_puts(&msg, "From: a@b\r\n\r\nEICAR in here\r\n");
    one_scan(FK_VERDICT, true, &msg, 5000, 0, &f, &r);
    CHECK_INT(r.st, SCAN_INFECTED);
    CHECK_STR(r.detail, "Fake.Virus");
    buf_reset(&msg);
    one_scan(FK_VERDICT, true, &msg, 5000, 0, &f, &r);   /* an empty message */
    CHECK_INT(r.st, SCAN_CLEAN);
    buf_free(&msg);
}

TEST(clamd_scan_refused)
{
    /* a port that was just free: bind, learn it, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    REQUIRE(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    char spec[80];
    snprintf(spec, sizeof spec, "clamd:inet:127.0.0.1:%d", ntohs(sin.sin_port));
    buf_t err = BUF_INIT;
    scanner_t *sc = scanner_new(spec, NULL, 5000, &err);
    REQUIRE(sc);
    struct event_base *base = event_base_new();
    result_t r = {0};
    scan_t *s = scan_start(sc, base, on_done, &r);
    scan_write(s, "hello\r\n", 7);
    spin(base, 5);
    CHECK_INT(r.calls, 0);
    CHECK_INT(scan_backlog(s), 0);   /* nobody to send to: the session must not wait */
    scan_write(s, "more\r\n", 6);
    CHECK_INT(scan_backlog(s), 0);
    scan_finish(s);
    CHECK_INT(r.calls, 0);
    run_until_done(base, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "connect: Connection refused");
    scanner_free(&sc);
    /* a unix socket that is not there fails at once, and is still reported
     * from the loop */
    sc = scanner_new("clamd:unix:/nonexistent/moat-clamd.sock", NULL, 5000, &err);
    REQUIRE(sc);
    memset(&r, 0, sizeof r);
    s = scan_start(sc, base, on_done, &r);
    scan_write(s, "x", 1);
    scan_finish(s);
    CHECK_INT(r.calls, 0);
    run_until_done(base, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "connect: No such file or directory");
    scanner_free(&sc);
    event_base_free(base);
    buf_free(&err);
}

TEST(clamd_scan_timeout_waiting_for_the_verdict)
{
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    pattern(&msg, 1000);
    one_scan(FK_SILENT, false, &msg, 100, 0, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "timeout waiting for the verdict");
    buf_free(&msg);
}

TEST(clamd_scan_timeout_while_sending)
{
    /* the fake never reads: the socket fills, the write makes no progress */
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    pattern(&msg, 16 * 1024 * 1024);
    struct event_base *base = event_base_new();
    fake_start(&f, base, FK_NOREAD, false);
    REQUIRE(f.lis);
    scanner_t *sc = fake_scanner(&f, 100);
    memset(&r, 0, sizeof r);
    scan_t *s = scan_start(sc, base, on_done, &r);
    scan_write(s, msg.data, msg.len);
    CHECK(scan_backlog(s) >= msg.len);
    spin(base, 10);
    /* the kernel took what it could; the rest is still ours */
    CHECK(scan_backlog(s) > 0);
    CHECK(scan_backlog(s) < msg.len + 1024);
    /* a slow SMTP client between writes is not clamd's fault: only
     * scan_finish and pending bytes make clamd the one we wait for */
    scan_finish(s);
    run_until_done(base, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "timeout sending");
    scanner_free(&sc);
    fake_stop(&f);
    event_base_free(base);
    buf_free(&msg);
}

TEST(clamd_scan_idle_caller_is_no_timeout)
{
    /* everything written has been sent; the caller is slow to send more:
     * no timeout fires while clamd owes us nothing */
    struct event_base *base = event_base_new();
    fake_t f;
    fake_start(&f, base, FK_VERDICT, false);
    REQUIRE(f.lis);
    scanner_t *sc = fake_scanner(&f, 50);
    result_t r = {0};
    scan_t *s = scan_start(sc, base, on_done, &r);
    scan_write(s, "line one\r\n", 10);
    /* wait well past the timeout with nothing pending */
    bool expired = false;
    struct event *guard = evtimer_new(base, guard_fired, &expired);
    struct timeval tv = {0, 300000};
    evtimer_add(guard, &tv);
    while (!expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    CHECK_INT(scan_backlog(s), 0);
    scan_write(s, "line two\r\n", 10);
    scan_finish(s);
    run_until_done(base, &r);
    CHECK_INT(r.st, SCAN_CLEAN);
    CHECK_STR(f.payload.data ? f.payload.data : "", "line one\r\nline two\r\n");
    scanner_free(&sc);
    fake_stop(&f);
    event_base_free(base);
}

TEST(clamd_scan_closed_mid_stream)
{
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    pattern(&msg, 4 * 1024 * 1024);
    one_scan(FK_CLOSE, false, &msg, 5000, 100000, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    /* the close shows as a failed send, a reset or the end of the
     * connection, whichever the client meets first */
    if (strncmp(r.detail, "sending: ", 9) != 0 && strcmp(r.detail, "reading: Connection reset by peer") != 0 &&
        strcmp(r.detail, "connection closed before the verdict") != 0)
        harness_fail(__FILE__, __LINE__, "detail: %s", r.detail);
    /* small message, closed after the last chunk and before a reply */
    buf_reset(&msg);
    pattern(&msg, 10);
    one_scan(FK_CLOSE, false, &msg, 5000, 1, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "connection closed before the verdict");
    buf_free(&msg);
}

TEST(clamd_scan_error_reply_while_still_sending)
{
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    pattern(&msg, 8 * 1024 * 1024);
    one_scan(FK_ERROR, false, &msg, 5000, 200000, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "INSTREAM size limit exceeded. ERROR");
    buf_free(&msg);
}

TEST(clamd_scan_garbage_and_partial_replies)
{
    fake_t f;
    result_t r;
    buf_t msg = BUF_INIT;
    pattern(&msg, 5000);
    one_scan(FK_GARBAGE, false, &msg, 5000, 0, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "unexpected reply: hello there");
    one_scan(FK_PARTIAL, false, &msg, 5000, 0, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "connection closed in the middle of the reply");
    /* "OK" before the message was all sent vouches for nothing */
    one_scan(FK_EARLY_OK, false, &msg, 5000, 0, &f, &r);
    CHECK_INT(r.st, SCAN_FAILED);
    CHECK_STR(r.detail, "a clean verdict before the end of the message");
    buf_free(&msg);
}

TEST(clamd_scan_cancel_any_time)
{
    struct event_base *base = event_base_new();
    fake_t f;
    fake_start(&f, base, FK_VERDICT, false);
    REQUIRE(f.lis);
    scanner_t *sc = fake_scanner(&f, 5000);
    result_t r = {0};
    /* at once */
    scan_t *s = scan_start(sc, base, on_done, &r);
    scan_cancel(s);
    /* in the middle of the stream */
    s = scan_start(sc, base, on_done, &r);
    buf_t msg = BUF_INIT;
    pattern(&msg, 500000);
    scan_write(s, msg.data, msg.len);
    spin(base, 5);
    scan_cancel(s);
    spin(base, 5);
    /* after scan_finish, with the verdict on its way */
    s = scan_start(sc, base, on_done, &r);
    scan_write(s, "x\r\n", 3);
    spin(base, 5);
    scan_finish(s);
    scan_cancel(s);
    /* after scan_finish of a failed scan: the report is already queued */
    buf_t err = BUF_INIT;
    scanner_t *gone = scanner_new("clamd:unix:/nonexistent/moat-clamd.sock", NULL, 5000, &err);
    REQUIRE(gone);
    buf_free(&err);
    s = scan_start(gone, base, on_done, &r);
    scan_finish(s);
    scan_cancel(s);
    scan_cancel(NULL);
    spin(base, 20);
    CHECK_INT(r.calls, 0);
    buf_free(&msg);
    scanner_free(&gone);
    scanner_free(&sc);
    fake_stop(&f);
    event_base_free(base);
}

/* The callback may cancel its own scan (a session tearing down): no
 * double free. */
static void cancel_in_cb(void *arg, scan_status st, const char *detail)
{
    (void)detail;
    scan_t **sp = arg;
    CHECK_INT(st, SCAN_CLEAN);
    scan_cancel(*sp);
    *sp = NULL;
}

TEST(clamd_scan_cancel_inside_the_callback)
{
    struct event_base *base = event_base_new();
    fake_t f;
    fake_start(&f, base, FK_VERDICT, false);
    REQUIRE(f.lis);
    scanner_t *sc = fake_scanner(&f, 5000);
    scan_t *s = NULL;
    s = scan_start(sc, base, cancel_in_cb, &s);
    scan_write(s, "x\r\n", 3);
    scan_finish(s);
    for (int i = 0; i < 2000 && s; i++)
        event_base_loop(base, EVLOOP_ONCE);
    CHECK(s == NULL);
    scanner_free(&sc);
    fake_stop(&f);
    event_base_free(base);
}

TEST(clamd_scan_many_at_once)
{
    /* one connection per message: several scans on one loop, interleaved */
    struct event_base *base = event_base_new();
    fake_t fk[4];
    scanner_t *sc[4];
    scan_t *s[4];
    result_t r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) {
        fake_start(&fk[i], base, FK_VERDICT, false);
        REQUIRE(fk[i].lis);
        sc[i] = fake_scanner(&fk[i], 5000);
        s[i] = scan_start(sc[i], base, on_done, &r[i]);
    }
    buf_t msg = BUF_INIT;
    pattern(&msg, 100000);
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 4; i++) {
            scan_write(s[i], msg.data, msg.len);
            if (i == 2 && round == 1)
                scan_write(s[i], "EICAR", 5);
            spin(base, 1);
        }
    for (int i = 0; i < 4; i++)
        scan_finish(s[i]);
    for (int i = 0; i < 4; i++)
        run_until_done(base, &r[i]);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(r[i].calls, 1);
        CHECK_INT(r[i].st, i == 2 ? SCAN_INFECTED : SCAN_CLEAN);
        CHECK_INT(fk[i].payload.len, 3 * msg.len + (i == 2 ? 5 : 0));
        scanner_free(&sc[i]);
        fake_stop(&fk[i]);
    }
    buf_free(&msg);
    event_base_free(base);
}
