/* Unit tests for src/policy/policysvc (the policy delegation client: the
 * protocol text, connections, reuse, timeouts, retries), the memo's
 * generic results (src/dns/memo.c: dns_memo_ext, memo_op_done) and
 * check_policy_service in the engine (src/policy/restrict.c: the request
 * attributes, the answer as an access(5) result, default_action).  The
 * policy server is a small one on the test's own event loop, on a
 * loopback port or a unix socket in /tmp. */
#include "harness.h"

#include "config/config.h"
#include "core/util.h"
#include "dns/dns.h"
#include "policy/policysvc.h"
#include "policy/restrict.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ------------------------------------------------------- the protocol */

TEST(policysvc_attr_writes_controls_as_question_marks)
{
    buf_t b = BUF_INIT;
    policysvc_attr(&b, "helo_name", "evil\nrecipient=x@y\r\tz\x7f");
    policysvc_attr(&b, "sender", "");
    policysvc_attr(&b, "sasl_username", NULL);
    CHECK_STR(buf_cstr(&b), "helo_name=evil?recipient=x@y?\tz?\nsender=\nsasl_username=\n");
    buf_free(&b);
}

TEST(policysvc_reply_parse_cases)
{
    buf_t a = BUF_INIT;
    bool has;
    size_t used = 0;
    const char *why = NULL;
    /* other attributes around it are ignored; the first action wins */
    const char *r1 = "foo=bar\naction=REJECT no way\nx=\naction=OK\n\nnext";
    CHECK_INT(policysvc_reply_parse(r1, strlen(r1), &used, &a, &has, &why), 1);
    CHECK(has);
    CHECK_STR(buf_cstr(&a), "REJECT no way");
    CHECK_INT(used, strlen(r1) - 4);
    /* CRLF line ends are accepted */
    const char *r2 = "action=DUNNO\r\n\r\n";
    CHECK_INT(policysvc_reply_parse(r2, strlen(r2), &used, &a, &has, &why), 1);
    CHECK_STR(buf_cstr(&a), "DUNNO");
    /* no action: complete, without one */
    const char *r3 = "reason=none\n\n";
    CHECK_INT(policysvc_reply_parse(r3, strlen(r3), &used, &a, &has, &why), 1);
    CHECK(!has);
    CHECK_INT(policysvc_reply_parse("\n", 1, &used, &a, &has, &why), 1);
    CHECK(!has);
    /* "actions=" and "Action=" are other attributes */
    const char *r4 = "actions=OK\nAction=OK\n\n";
    CHECK_INT(policysvc_reply_parse(r4, strlen(r4), &used, &a, &has, &why), 1);
    CHECK(!has);
    /* an empty action value is one */
    CHECK_INT(policysvc_reply_parse("action=\n\n", 9, &used, &a, &has, &why), 1);
    CHECK(has);
    CHECK_STR(buf_cstr(&a), "");
    /* malformed */
    CHECK_INT(policysvc_reply_parse("action DUNNO\n\n", 14, &used, &a, &has, &why), -1);
    CHECK_STR(why, "reply line without \"=\"");
    CHECK_INT(policysvc_reply_parse("=DUNNO\n\n", 8, &used, &a, &has, &why), -1);
    CHECK_INT(policysvc_reply_parse("action=A\0B\n\n", 12, &used, &a, &has, &why), -1);
    CHECK_STR(why, "NUL byte in reply");
    /* incomplete */
    CHECK_INT(policysvc_reply_parse("action=DUNNO\n", 13, &used, &a, &has, &why), 0);
    CHECK_INT(policysvc_reply_parse("", 0, &used, &a, &has, &why), 0);
    buf_free(&a);
}

TEST(policysvc_reply_parse_at_every_split)
{
    const char *r = "a=1\naction=DEFER_IF_PERMIT Service unavailable\r\nb=2\n\n";
    size_t len = strlen(r);
    buf_t a = BUF_INIT;
    for (size_t k = 0; k <= len; k++) {
        bool has = false;
        size_t used = 0;
        const char *why = NULL;
        int rc = policysvc_reply_parse(r, k, &used, &a, &has, &why);
        if (k < len) {
            CHECK_INT(rc, 0);
        } else {
            CHECK_INT(rc, 1);
            CHECK_INT(used, len);
            CHECK(has);
            CHECK_STR(buf_cstr(&a), "DEFER_IF_PERMIT Service unavailable");
        }
    }
    buf_free(&a);
}

TEST(policysvc_reply_parse_too_long)
{
    buf_t big = BUF_INIT, a = BUF_INIT;
    bool has;
    size_t used;
    const char *why = NULL;
    buf_puts(&big, "action=");
    while (big.len <= POLICYSVC_REPLY_MAX)
        buf_putc(&big, 'x');
    /* no end in sight and already over the limit */
    CHECK_INT(policysvc_reply_parse(big.data, big.len, &used, &a, &has, &why), -1);
    CHECK_STR(why, "reply too long");
    /* complete, but longer than the limit */
    buf_puts(&big, "\n\n");
    CHECK_INT(policysvc_reply_parse(big.data, big.len, &used, &a, &has, &why), -1);
    /* just under: fine */
    buf_reset(&big);
    buf_puts(&big, "action=");
    while (big.len < POLICYSVC_REPLY_MAX - 2)
        buf_putc(&big, 'y');
    buf_puts(&big, "\n\n");
    CHECK_INT(policysvc_reply_parse(big.data, big.len, &used, &a, &has, &why), 1);
    CHECK_INT(a.len, POLICYSVC_REPLY_MAX - 2 - 7);
    buf_free(&big);
    buf_free(&a);
}

TEST(policysvc_valid_utf8_cases)
{
    CHECK(policysvc_valid_utf8("plain ascii"));
    CHECK(policysvc_valid_utf8("Gr\xc3\xbc\xc3\x9f" "e \xe2\x82\xac \xf0\x9f\x98\x80"));
    CHECK(!policysvc_valid_utf8("\xc3"));                 /* truncated */
    CHECK(!policysvc_valid_utf8("\xc0\xaf"));             /* overlong */
    CHECK(!policysvc_valid_utf8("\xe0\x80\xaf"));         /* overlong */
    CHECK(!policysvc_valid_utf8("\xed\xa0\x80"));         /* surrogate */
    CHECK(!policysvc_valid_utf8("\xf4\x90\x80\x80"));     /* beyond U+10FFFF */
    CHECK(!policysvc_valid_utf8("latin1 \xe9t\xe9"));
}

/* ------------------------------------------------------ opening services */

static policysvc_opts_t defaults(void)
{
    return (policysvc_opts_t){.timeout = 100, .max_idle = 300, .max_ttl = 1000, .try_limit = 2,
                              .retry_delay = 1, .request_limit = 0, .connection_limit = 100,
                              .default_action = "451 4.3.5 Server configuration problem", .policy_context = ""};
}

static policysvc_t *open_items(const char *const *items, size_t n, buf_t *err)
{
    policysvc_opts_t d = defaults();
    buf_reset(err);
    return policysvc_open(items, n, &d, "/var/spool/moat", err);
}

TEST(policysvc_open_endpoints_and_settings)
{
    buf_t err = BUF_INIT;
    const char *a[] = {"inet:127.0.0.1:10023"};
    policysvc_t *s1 = open_items(a, 1, &err);
    REQUIRE(s1);
    CHECK_STR(policysvc_name(s1), "inet:127.0.0.1:10023");
    CHECK_INT(policysvc_settings(s1)->timeout, 100);
    CHECK_STR(policysvc_settings(s1)->default_action, "451 4.3.5 Server configuration problem");
    /* the same endpoint and settings: the same service */
    policysvc_t *s2 = open_items(a, 1, &err);
    CHECK(s2 == s1);
    /* per-service settings: another one */
    const char *b[] = {"inet:127.0.0.1:10023", "timeout=10s", "default_action = DUNNO", "max_idle=5m",
                       "max_ttl=1h", "try_limit=3", "retry_delay=2", "request_limit=7", "policy_context=submission",
                       "connection_limit=4"};
    policysvc_t *s3 = open_items(b, ARRAY_LEN(b), &err);
    REQUIRE(s3);
    CHECK(s3 != s1);
    const policysvc_opts_t *o = policysvc_settings(s3);
    CHECK_INT(o->timeout, 10);
    CHECK_INT(o->max_idle, 300);
    CHECK_INT(o->max_ttl, 3600);
    CHECK_INT(o->try_limit, 3);
    CHECK_INT(o->retry_delay, 2);
    CHECK_INT(o->request_limit, 7);
    CHECK_INT(o->connection_limit, 4);
    CHECK_STR(o->default_action, "DUNNO");
    CHECK_STR(o->policy_context, "submission");
    CHECK(strstr(policysvc_key(s3), "default_action=DUNNO") != NULL);
    /* IPv6 and unix forms; a relative unix path is under the queue directory */
    const char *c[] = {"inet:[::1]:10040"};
    policysvc_t *s4 = open_items(c, 1, &err);
    CHECK(s4 != NULL);
    /* a host name is looked up (once, here): localhost is in /etc/hosts */
    const char *h[] = {"inet:localhost:10023"};
    policysvc_t *s6 = open_items(h, 1, &err);
    CHECK(s6 != NULL);
    policysvc_close(&s6);
    const char *d[] = {"unix:private/policy"};
    policysvc_t *s5 = open_items(d, 1, &err);
    REQUIRE(s5);
    CHECK(strstr(policysvc_key(s5), "/var/spool/moat/private/policy") != NULL);
    policysvc_close(&s1);
    policysvc_close(&s2);
    policysvc_close(&s3);
    policysvc_close(&s4);
    policysvc_close(&s5);
    CHECK(s1 == NULL);
    buf_free(&err);
}

TEST(policysvc_open_errors)
{
    buf_t err = BUF_INIT;
    static const struct {
        const char *items[3];
        size_t n;
        const char *want;
    } bad[] = {
        {{"127.0.0.1:10023"}, 1, "need inet:host:port or unix:/path"},
        {{"inet:127.0.0.1"}, 1, "need inet:host:port"},
        {{"inet:[::1]10023"}, 1, "need inet:[address]:port"},
        {{"unix:"}, 1, "no socket path"},
        {{"inet:127.0.0.1:10023", "timeout"}, 2, "a setting is name=value"},
        {{"inet:127.0.0.1:10023", "timeout=0"}, 2, "timeout=0: need a time of at least 1 second"},
        {{"inet:127.0.0.1:10023", "timeout=5x"}, 2, "need a time"},
        {{"inet:127.0.0.1:10023", "try_limit=0"}, 2, "try_limit=0: need a whole number of at least 1"},
        {{"inet:127.0.0.1:10023", "frobs=1"}, 2, "unknown setting \"frobs\""},
        {{"inet:127.0.0.1:10023", "default_action="}, 2, "default_action: empty"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        policysvc_t *s = open_items(bad[i].items, bad[i].n, &err);
        CHECK(s == NULL);
        if (!strstr(buf_cstr(&err), bad[i].want))
            harness_fail(__FILE__, __LINE__, "%s: error \"%s\", want \"%s\"", bad[i].items[0], buf_cstr(&err),
                         bad[i].want);
        policysvc_close(&s);
    }
    buf_free(&err);
}

/* ------------------------------------------- a policy server on the loop */

enum { TS_REPLY, TS_CLOSE, TS_SILENT, TS_CLOSE_FIRST, TS_REPLY_CLOSE, TS_EXTRA, TS_HUGE };

typedef struct tserv {
    struct event_base *base;
    struct evconnlistener *lis;
    int port;
    char path[108];              /* unix socket, when used */
    int mode;
    int closes_left;             /* TS_CLOSE_FIRST */
    int conns, requests;
    buf_t last;                  /* the last request */
    struct bufferevent *peers[32];
} tserv_t;

/* The value of attribute name in req ("" when absent). */
static void attr_value(const char *req, const char *name, char *out, size_t size)
{
    out[0] = 0;
    size_t nl = strlen(name);
    for (const char *p = req; *p;) {
        size_t n = strcspn(p, "\n");
        if (n > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t v = n - nl - 1 < size - 1 ? n - nl - 1 : size - 1;
            memcpy(out, p + nl + 1, v);
            out[v] = 0;
            return;
        }
        p += n + (p[n] ? 1 : 0);
    }
}

static void ts_drop(tserv_t *t, struct bufferevent *bev)
{
    for (size_t i = 0; i < ARRAY_LEN(t->peers); i++)
        if (t->peers[i] == bev)
            t->peers[i] = NULL;
    bufferevent_free(bev);
}

static void ts_written(struct bufferevent *bev, void *arg)
{
    tserv_t *t = arg;
    if (t->mode == TS_REPLY_CLOSE && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        ts_drop(t, bev);
}

static void ts_event(struct bufferevent *bev, short what, void *arg);

static void ts_read(struct bufferevent *bev, void *arg)
{
    tserv_t *t = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        struct evbuffer_ptr end = evbuffer_search(in, "\n\n", 2, NULL);
        if (end.pos < 0)
            return;
        size_t n = (size_t)end.pos + 2;
        buf_reset(&t->last);
        buf_reserve(&t->last, n);
        evbuffer_remove(in, t->last.data, n);
        t->last.len = n;
        t->last.data[n] = 0;
        t->requests++;
        char rcpt[256];
        attr_value(buf_cstr(&t->last), "recipient", rcpt, sizeof rcpt);
        if (t->mode == TS_CLOSE || (t->mode == TS_CLOSE_FIRST && t->closes_left > 0)) {
            t->closes_left--;
            ts_drop(t, bev);
            return;
        }
        if (t->mode == TS_SILENT)
            continue;
        if (t->mode == TS_HUGE) {
            buf_t big = BUF_INIT;
            buf_puts(&big, "action=REJECT ");
            while (big.len < POLICYSVC_REPLY_MAX + 100)
                buf_putc(&big, 'z');
            buf_puts(&big, "\n\n");
            bufferevent_write(bev, big.data, big.len);
            buf_free(&big);
            continue;
        }
        /* The reply names the recipient, so a test sees whose reply it got. */
        char reply[400];
        snprintf(reply, sizeof reply, "note=ignored\naction=REJECT for %s\n\n%s", rcpt,
                 t->mode == TS_EXTRA ? "action=OK\n\n" : "");
        bufferevent_write(bev, reply, strlen(reply));
        /* TS_REPLY_CLOSE: closed once the reply is out (not before: a
         * close with the request unread would be a reset). */
        bufferevent_setcb(bev, ts_read, ts_written, ts_event, t);
    }
}

static void ts_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    ts_drop(arg, bev);
}

static void ts_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int sl, void *arg)
{
    (void)lis;
    (void)sa;
    (void)sl;
    tserv_t *t = arg;
    struct bufferevent *bev = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
    t->conns++;
    for (size_t i = 0; i < ARRAY_LEN(t->peers); i++)
        if (!t->peers[i]) {
            t->peers[i] = bev;
            break;
        }
    bufferevent_setcb(bev, ts_read, NULL, ts_event, t);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static bool ts_start(tserv_t *t, struct event_base *base, int mode, bool unix_socket)
{
    memset(t, 0, sizeof *t);
    t->base = base;
    t->mode = mode;
    if (unix_socket) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        snprintf(t->path, sizeof t->path, "/tmp/moat-psvc-%d.sock", (int)getpid());
        unlink(t->path);
        str_copy(un.sun_path, t->path, sizeof un.sun_path);
        t->lis = evconnlistener_new_bind(base, ts_accept, t, LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&un,
                                         sizeof un);
        return t->lis != NULL;
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    t->lis = evconnlistener_new_bind(base, ts_accept, t, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                     (struct sockaddr *)&sin, sizeof sin);
    if (!t->lis)
        return false;
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    getsockname(evconnlistener_get_fd(t->lis), (struct sockaddr *)&got, &gl);
    t->port = ntohs(got.sin_port);
    return true;
}

static void ts_stop(tserv_t *t)
{
    for (size_t i = 0; i < ARRAY_LEN(t->peers); i++)
        if (t->peers[i])
            bufferevent_free(t->peers[i]);
    if (t->lis)
        evconnlistener_free(t->lis);
    if (t->path[0])
        unlink(t->path);
    buf_free(&t->last);
}

/* Run the loop until *flag, at most about 10 seconds. */
static void run_until(struct event_base *base, const int *flag)
{
    double end = now_mono() + 10;
    while (!*flag && now_mono() < end)
        event_base_loop(base, EVLOOP_ONCE);
}

/* Run the loop for a while (let connections settle). */
static void run_for(struct event_base *base, double seconds)
{
    double end = now_mono() + seconds;
    while (now_mono() < end)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

typedef struct answer {
    int calls;
    bool ok;
    char action[POLICYSVC_REPLY_MAX + 1];
    bool has_action;
    char error[200];
    unsigned attempts;
    int *inside;
    bool called_inside;
} answer_t;

static void on_answer(void *arg, const policysvc_result_t *r)
{
    answer_t *a = arg;
    a->calls++;
    a->ok = r->ok;
    a->has_action = r->action != NULL;
    str_copy(a->action, r->action ? r->action : "", sizeof a->action);
    str_copy(a->error, r->error ? r->error : "", sizeof a->error);
    a->attempts = r->attempts;
    if (a->inside && *a->inside)
        a->called_inside = true;
}

/* A service for t with the given extra settings. */
static policysvc_t *ts_service(const tserv_t *t, const char *const *settings, size_t n)
{
    char ep[160];
    if (t->path[0])
        snprintf(ep, sizeof ep, "unix:%s", t->path);
    else
        snprintf(ep, sizeof ep, "inet:127.0.0.1:%d", t->port);
    const char *items[12] = {ep};
    for (size_t i = 0; i < n && i < 11; i++)
        items[i + 1] = settings[i];
    buf_t err = BUF_INIT;
    policysvc_t *s = open_items(items, n + 1, &err);
    if (!s)
        harness_fail(__FILE__, __LINE__, "policysvc_open: %s", buf_cstr(&err));
    buf_free(&err);
    return s;
}

static const char *req_for(const char *rcpt, char *buf, size_t size)
{
    snprintf(buf, size, "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=%s\n\n", rcpt);
    return buf;
}

TEST(policysvc_client_reuses_one_connection)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_REPLY, false));
    policysvc_t *s = ts_service(&t, NULL, 0);
    REQUIRE(s);
    char rq[200];
    int inside = 0;
    for (int i = 0; i < 3; i++) {
        answer_t a = {.inside = &inside};
        char rcpt[40];
        snprintf(rcpt, sizeof rcpt, "u%d@example.test", i);
        inside = 1;
        policysvc_req_t *r = policysvc_request(s, base, req_for(rcpt, rq, sizeof rq), on_answer, &a);
        inside = 0;
        CHECK(r != NULL);
        CHECK_INT(a.calls, 0);
        run_until(base, &a.calls);
        CHECK_INT(a.calls, 1);
        CHECK(!a.called_inside);
        CHECK(a.ok);
        char want[80];
        snprintf(want, sizeof want, "REJECT for %s", rcpt);
        CHECK_STR(a.action, want);
        CHECK_INT(a.attempts, 1);
    }
    CHECK_INT(t.conns, 1);
    CHECK_INT(t.requests, 3);
    CHECK(strstr(buf_cstr(&t.last), "recipient=u2@example.test\n") != NULL);
    policysvc_stats_t st;
    policysvc_get_stats(s, &st);
    CHECK_INT(st.connects, 1);
    CHECK_INT(st.requests, 3);
    CHECK_INT(st.reused, 2);
    CHECK_INT(st.replies, 3);
    CHECK_INT(st.open, 1);
    CHECK_INT(st.idle, 1);
    policysvc_close(&s);
    ts_stop(&t);
    event_base_free(base);
}

TEST(policysvc_client_parallel_requests_and_connection_limit)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_REPLY, false));
    char rq1[200], rq2[200], rq3[200];
    /* two at once: two connections */
    policysvc_t *s = ts_service(&t, NULL, 0);
    REQUIRE(s);
    answer_t a1 = {0}, a2 = {0};
    policysvc_request(s, base, req_for("a@x.test", rq1, sizeof rq1), on_answer, &a1);
    policysvc_request(s, base, req_for("b@x.test", rq2, sizeof rq2), on_answer, &a2);
    run_until(base, &a1.calls);
    run_until(base, &a2.calls);
    CHECK_STR(a1.action, "REJECT for a@x.test");
    CHECK_STR(a2.action, "REJECT for b@x.test");
    CHECK_INT(t.conns, 2);
    policysvc_close(&s);

    /* connection_limit=1: the others wait their turn on the one connection */
    const char *one[] = {"connection_limit=1"};
    s = ts_service(&t, one, 1);
    REQUIRE(s);
    int before = t.conns;
    answer_t b1 = {0}, b2 = {0}, b3 = {0};
    policysvc_request(s, base, req_for("c@x.test", rq1, sizeof rq1), on_answer, &b1);
    policysvc_request(s, base, req_for("d@x.test", rq2, sizeof rq2), on_answer, &b2);
    policysvc_request(s, base, req_for("e@x.test", rq3, sizeof rq3), on_answer, &b3);
    policysvc_stats_t st;
    policysvc_get_stats(s, &st);
    CHECK_INT(st.waiting, 2);
    run_until(base, &b3.calls);
    CHECK_STR(b1.action, "REJECT for c@x.test");
    CHECK_STR(b2.action, "REJECT for d@x.test");
    CHECK_STR(b3.action, "REJECT for e@x.test");
    CHECK_INT(t.conns - before, 1);
    policysvc_close(&s);
    ts_stop(&t);
    event_base_free(base);
}

TEST(policysvc_client_retries_then_fails)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_CLOSE, false));
    policysvc_t *s = ts_service(&t, NULL, 0);   /* try_limit 2, retry_delay 1s */
    REQUIRE(s);
    char rq[200];
    answer_t a = {0};
    policysvc_request(s, base, req_for("u@x.test", rq, sizeof rq), on_answer, &a);
    run_until(base, &a.calls);
    CHECK_INT(a.calls, 1);
    CHECK(!a.ok);
    CHECK_INT(a.attempts, 2);
    CHECK_STR(a.error, "connection closed by server before the reply");
    CHECK_INT(t.requests, 2);
    CHECK_INT(t.conns, 2);

    /* the server drops the first attempt only: the retry answers */
    t.mode = TS_CLOSE_FIRST;
    t.closes_left = 1;
    answer_t b = {0};
    policysvc_request(s, base, req_for("v@x.test", rq, sizeof rq), on_answer, &b);
    run_until(base, &b.calls);
    CHECK(b.ok);
    CHECK_INT(b.attempts, 2);
    CHECK_STR(b.action, "REJECT for v@x.test");
    policysvc_close(&s);
    ts_stop(&t);

    /* nobody listens: refused, retried, failed */
    tserv_t gone;
    REQUIRE(ts_start(&gone, base, TS_REPLY, false));
    const char *fast[] = {"try_limit=1"};
    s = ts_service(&gone, fast, 1);
    ts_stop(&gone);
    answer_t c = {0};
    policysvc_request(s, base, req_for("w@x.test", rq, sizeof rq), on_answer, &c);
    run_until(base, &c.calls);
    CHECK(!c.ok);
    CHECK(strstr(c.error, "connect") != NULL);
    CHECK_INT(c.attempts, 1);
    policysvc_close(&s);
    event_base_free(base);
}

TEST(policysvc_client_timeout)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_SILENT, false));
    const char *quick[] = {"timeout=1", "try_limit=1"};
    policysvc_t *s = ts_service(&t, quick, 2);
    REQUIRE(s);
    char rq[200];
    answer_t a = {0};
    policysvc_request(s, base, req_for("u@x.test", rq, sizeof rq), on_answer, &a);
    run_until(base, &a.calls);
    CHECK(!a.ok);
    CHECK_STR(a.error, "timeout after 1s waiting for the reply");
    policysvc_stats_t st;
    policysvc_get_stats(s, &st);
    CHECK_INT(st.open, 0);   /* a connection that timed out is never reused */
    policysvc_close(&s);
    ts_stop(&t);
    event_base_free(base);
}

TEST(policysvc_client_request_limit_and_server_close)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_REPLY, false));
    const char *lim[] = {"request_limit=1"};
    policysvc_t *s = ts_service(&t, lim, 1);
    REQUIRE(s);
    char rq[200];
    for (int i = 0; i < 2; i++) {
        answer_t a = {0};
        policysvc_request(s, base, req_for("u@x.test", rq, sizeof rq), on_answer, &a);
        run_until(base, &a.calls);
        CHECK(a.ok);
    }
    CHECK_INT(t.conns, 2);
    policysvc_stats_t st;
    policysvc_get_stats(s, &st);
    CHECK_INT(st.reused, 0);
    CHECK_INT(st.open, 0);
    policysvc_close(&s);

    /* a server that closes after each reply: noticed while idle, so the
     * next request opens a fresh connection without a failed attempt */
    t.mode = TS_REPLY_CLOSE;
    s = ts_service(&t, NULL, 0);
    int before = t.conns;
    answer_t a = {0};
    policysvc_request(s, base, req_for("x@x.test", rq, sizeof rq), on_answer, &a);
    run_until(base, &a.calls);
    CHECK(a.ok);
    for (int i = 0; i < 100; i++) {
        policysvc_get_stats(s, &st);
        if (!st.open)
            break;
        event_base_loop(base, EVLOOP_ONCE);
    }
    CHECK_INT(st.open, 0);
    answer_t b = {0};
    policysvc_request(s, base, req_for("y@x.test", rq, sizeof rq), on_answer, &b);
    run_until(base, &b.calls);
    CHECK(b.ok);
    CHECK_INT(b.attempts, 1);
    CHECK_INT(t.conns - before, 2);
    policysvc_close(&s);
    ts_stop(&t);
    event_base_free(base);
}

TEST(policysvc_client_bad_replies)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    char rq[200];
    /* two replies to one request: the first counts, the connection goes */
    REQUIRE(ts_start(&t, base, TS_EXTRA, false));
    policysvc_t *s = ts_service(&t, NULL, 0);
    answer_t a = {0};
    policysvc_request(s, base, req_for("u@x.test", rq, sizeof rq), on_answer, &a);
    run_until(base, &a.calls);
    CHECK(a.ok);
    CHECK_STR(a.action, "REJECT for u@x.test");
    policysvc_stats_t st;
    policysvc_get_stats(s, &st);
    CHECK_INT(st.open, 0);
    policysvc_close(&s);
    ts_stop(&t);
    /* an over-long reply is a failed attempt */
    REQUIRE(ts_start(&t, base, TS_HUGE, false));
    const char *once[] = {"try_limit=1"};
    s = ts_service(&t, once, 1);
    answer_t b = {0};
    policysvc_request(s, base, req_for("u@x.test", rq, sizeof rq), on_answer, &b);
    run_until(base, &b.calls);
    CHECK(!b.ok);
    CHECK_STR(b.error, "reply too long");
    policysvc_close(&s);
    ts_stop(&t);
    event_base_free(base);
}

TEST(policysvc_client_cancel_keeps_the_connection_in_step)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_REPLY, false));
    const char *one[] = {"connection_limit=1"};
    policysvc_t *s = ts_service(&t, one, 1);
    REQUIRE(s);
    char rq1[200], rq2[200], rq3[200];
    /* cancelled while connecting: the connection serves the next one */
    answer_t a = {0}, b = {0}, c = {0};
    policysvc_req_t *r = policysvc_request(s, base, req_for("a@x.test", rq1, sizeof rq1), on_answer, &a);
    policysvc_cancel(r);
    policysvc_request(s, base, req_for("b@x.test", rq2, sizeof rq2), on_answer, &b);
    run_until(base, &b.calls);
    CHECK_INT(a.calls, 0);
    CHECK_STR(b.action, "REJECT for b@x.test");
    CHECK_INT(t.conns, 1);
    /* cancelled after it was sent: its reply is read and dropped, and the
     * next request gets its own */
    int sent = t.requests;
    r = policysvc_request(s, base, req_for("c@x.test", rq3, sizeof rq3), on_answer, &a);
    for (int i = 0; i < 200 && t.requests == sent; i++)
        event_base_loop(base, EVLOOP_ONCE);
    policysvc_cancel(r);
    policysvc_request(s, base, req_for("d@x.test", rq1, sizeof rq1), on_answer, &c);
    run_until(base, &c.calls);
    CHECK_INT(a.calls, 0);
    CHECK_STR(c.action, "REJECT for d@x.test");
    CHECK_INT(t.conns, 1);
    /* the last reference dropped while a request runs: it still ends */
    answer_t d = {0};
    policysvc_request(s, base, req_for("e@x.test", rq2, sizeof rq2), on_answer, &d);
    policysvc_close(&s);
    run_until(base, &d.calls);
    CHECK_STR(d.action, "REJECT for e@x.test");
    run_for(base, 0.05);
    ts_stop(&t);
    event_base_free(base);
}

TEST(policysvc_client_unix_socket)
{
    struct event_base *base = event_base_new();
    tserv_t t;
    REQUIRE(ts_start(&t, base, TS_REPLY, true));
    policysvc_t *s = ts_service(&t, NULL, 0);
    REQUIRE(s);
    char rq[200];
    answer_t a = {0};
    policysvc_request(s, base, req_for("u@x.test", rq, sizeof rq), on_answer, &a);
    run_until(base, &a.calls);
    CHECK(a.ok);
    CHECK_STR(a.action, "REJECT for u@x.test");
    policysvc_close(&s);
    ts_stop(&t);
    event_base_free(base);
}

/* ------------------------------------------------- the memo's generic ops */

typedef struct fake {
    struct event_base *base;
    int starts, cancels;
    bool sync;                   /* answer inside start */
    bool no_handle;              /* start returns NULL and answers later */
    memo_op_t *pending;          /* answered by fake_finish */
    struct event *ev;
} fake_t;

static void *fake_start(void *arg, const char *key, memo_op_t *op)
{
    fake_t *f = arg;
    f->starts++;
    CHECK(memo_op_base(op) == f->base);
    if (f->sync) {
        char v[100];
        snprintf(v, sizeof v, "value of %s", key);
        memo_op_done(op, v);
        return NULL;
    }
    f->pending = op;
    return f->no_handle ? NULL : f;
}

static void fake_cancel(void *handle)
{
    fake_t *f = handle;
    f->cancels++;
    f->pending = NULL;
}

typedef struct wake_count {
    int wakes;
} wake_count_t;

static void count_wake(void *arg)
{
    ((wake_count_t *)arg)->wakes++;
}

static dns_t *quiet_resolver(struct event_base *base)
{
    buf_t err = BUF_INIT;
    dns_opts_t o = {.forwarders = "127.0.0.1@9", .timeout_ms = 5000, .cache_max = 100};
    dns_t *d = dns_new(base, &o, &err);
    if (!d)
        harness_fail(__FILE__, __LINE__, "dns_new: %s", buf_cstr(&err));
    buf_free(&err);
    return d;
}

TEST(memo_ext_pending_wake_clear_and_free)
{
    struct event_base *base = event_base_new();
    dns_t *d = quiet_resolver(base);
    REQUIRE(d);
    wake_count_t w = {0};
    dns_memo_t *m = dns_memo_new(d, count_wake, &w);
    fake_t f = {.base = base};

    /* a synchronous answer comes back at once, without a wake */
    f.sync = true;
    CHECK_STR(dns_memo_ext(m, "k1", fake_start, fake_cancel, &f), "value of k1");
    CHECK_STR(dns_memo_ext(m, "k1", fake_start, fake_cancel, &f), "value of k1");
    CHECK_INT(f.starts, 1);
    CHECK_INT(dns_memo_outstanding(m), 0);

    /* a later answer: pending (started once), then one wake */
    f.sync = false;
    CHECK(dns_memo_ext(m, "k2", fake_start, fake_cancel, &f) == NULL);
    CHECK(dns_memo_ext(m, "k2", fake_start, fake_cancel, &f) == NULL);
    CHECK_INT(f.starts, 2);
    CHECK_INT(dns_memo_outstanding(m), 1);
    REQUIRE(f.pending != NULL);
    memo_op_done(f.pending, NULL);   /* stored as "" */
    f.pending = NULL;
    CHECK_INT(w.wakes, 0);           /* never from inside memo_op_done */
    run_for(base, 0.02);
    CHECK_INT(w.wakes, 1);
    CHECK_INT(dns_memo_outstanding(m), 0);
    CHECK_STR(dns_memo_ext(m, "k2", fake_start, fake_cancel, &f), "");

    /* cleared: complete values go, running ones stay */
    CHECK(dns_memo_ext(m, "k3", fake_start, fake_cancel, &f) == NULL);
    memo_op_t *k3 = f.pending;
    dns_memo_clear(m);
    CHECK_INT(dns_memo_outstanding(m), 1);
    f.sync = true;
    CHECK_STR(dns_memo_ext(m, "k1", fake_start, fake_cancel, &f), "value of k1");
    CHECK_INT(f.starts, 4);   /* k1 was asked again */
    f.sync = false;
    CHECK(dns_memo_ext(m, "k3", fake_start, fake_cancel, &f) == NULL);
    CHECK_INT(f.starts, 4);   /* k3 still running: not started again */
    memo_op_done(k3, "three");
    f.pending = NULL;
    run_for(base, 0.02);
    CHECK_INT(w.wakes, 2);
    CHECK_STR(dns_memo_ext(m, "k3", fake_start, fake_cancel, &f), "three");

    /* freed while running: cancelled through the handle, no wake */
    CHECK(dns_memo_ext(m, "k4", fake_start, fake_cancel, &f) == NULL);
    CHECK(f.pending != NULL);
    dns_memo_free(&m);
    CHECK_INT(f.cancels, 1);
    run_for(base, 0.02);
    CHECK_INT(w.wakes, 2);

    /* freed while running without a handle: the late answer is dropped */
    m = dns_memo_new(d, count_wake, &w);
    f.no_handle = true;
    CHECK(dns_memo_ext(m, "k5", fake_start, fake_cancel, &f) == NULL);
    memo_op_t *k5 = f.pending;
    dns_memo_free(&m);
    CHECK_INT(f.cancels, 1);
    memo_op_done(k5, "late");   /* frees the orphan (LeakSanitizer would say) */
    run_for(base, 0.02);
    CHECK_INT(w.wakes, 2);

    dns_unref(&d);
    event_base_free(base);
}

/* ------------------------------------------------------------ the engine */

#define PMAIN "myhostname = mx.example.test\nmydestination = example.test\nmynetworks = 127.0.0.0/8\n"

typedef struct px {
    config_t *cfg;
    policy_t *pol;
    buf_t err;
} px_t;

static bool px_load(px_t *x, const char *extra)
{
    policy_free(&x->pol);
    config_free(&x->cfg);
    buf_reset(&x->err);
    buf_t text = BUF_INIT;
    buf_printf(&text, "%s%s", PMAIN, extra);
    x->cfg = config_load_text(buf_cstr(&text), NULL, &x->err, NULL);
    buf_free(&text);
    if (x->cfg)
        x->pol = policy_new(config_main(x->cfg), "/tmp", &x->err);
    return x->pol != NULL;
}

static void px_done(px_t *x)
{
    policy_free(&x->pol);
    config_free(&x->cfg);
    buf_free(&x->err);
}

TEST(policysvc_request_text_every_attribute)
{
    px_t x = {0};
    REQUIRE(px_load(&x, "compatibility_level = 3.6\nsmtpd_recipient_restrictions = reject_unauth_destination\n"));
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    struct sockaddr_in6 local = {.sin6_family = AF_INET6, .sin6_port = htons(25)};
    inet_pton(AF_INET, "192.0.2.1", &peer.sin_addr);
    inet_pton(AF_INET6, "2001:db8::25", &local.sin6_addr);
    pstate_t st = {
        .peer = (struct sockaddr *)&peer,
        .local = (struct sockaddr *)&local,
        .client_addr = "192.0.2.1",
        .client_name = "mail.example.net",
        .reverse_name = "mail.example.net",
        .helo = "mail.example.net",
        .sender = "a@example.net",
        .recipient = "u@example.test",
        .protocol = "ESMTP",
        .nrcpt = 2,
        .sasl_user = "alice",
        .sasl_method = "PLAIN",
        .sasl_sender = "",
        .queue_id = "8045F2AB23",
        .instance = "123.456.7",
        .size = 12345,
        .tls_protocol = "TLSv1.3",
        .tls_cipher = "TLS_AES_256_GCM_SHA384",
        .tls_keysize = 256,
        .ccert_subject = "c.example.net",
        .ccert_issuer = "Example CA",
        .ccert_verified = true,
        .ccert_fingerprint = "C2:9D",
        .ccert_pubkey_fingerprint = "68:B3",
    };
    buf_t b = BUF_INIT;
    policy_request_text(x.pol, PCMD_RCPT, &st, "submission", &b);
    char want[2000];
    snprintf(want, sizeof want,
             "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.1\n"
             "client_name=mail.example.net\nclient_port=40000\nreverse_client_name=mail.example.net\n"
             "server_address=2001:db8::25\nserver_port=25\nhelo_name=mail.example.net\nsender=a@example.net\n"
             "recipient=u@example.test\nrecipient_count=0\nqueue_id=8045F2AB23\ninstance=123.456.7\nsize=12345\n"
             "etrn_domain=\nstress=\nsasl_method=PLAIN\nsasl_username=alice\nsasl_sender=\n"
             "ccert_subject=c.example.net\nccert_issuer=Example+20CA\nccert_fingerprint=C2:9D\n"
             "ccert_pubkey_fingerprint=68:B3\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\n"
             "encryption_keysize=256\npolicy_context=submission\ncompatibility_level=3.6\nmail_version=%s\n\n",
             param_str(config_main(x.cfg), PARAM_mail_version));
    CHECK_STR(buf_cstr(&b), want);

    /* DATA: the count of recipients (and the only one, when one) */
    st.recipient = NULL;
    policy_request_text(x.pol, PCMD_DATA, &st, "", &b);
    CHECK(strstr(buf_cstr(&b), "\nprotocol_state=DATA\n") != NULL);
    CHECK(strstr(buf_cstr(&b), "\nrecipient=\nrecipient_count=2\n") != NULL);
    policy_request_text(x.pol, PCMD_EOD, &st, "", &b);
    CHECK(strstr(buf_cstr(&b), "\nprotocol_state=END-OF-MESSAGE\n") != NULL);
    /* ETRN: its argument is etrn_domain, not a recipient */
    st.recipient = "relay.example.test";
    policy_request_text(x.pol, PCMD_ETRN, &st, "", &b);
    CHECK(strstr(buf_cstr(&b), "\nrecipient=\nrecipient_count=0\n") != NULL);
    CHECK(strstr(buf_cstr(&b), "\netrn_domain=relay.example.test\n") != NULL);
    /* HELO vs EHLO, CONNECT, and nothing known */
    pstate_t bare = {.protocol = "SMTP"};
    policy_request_text(x.pol, PCMD_HELO, &bare, "", &b);
    CHECK(strstr(buf_cstr(&b), "\nprotocol_state=HELO\nprotocol_name=SMTP\nclient_address=\nclient_name=unknown\n"
                               "client_port=0\nreverse_client_name=unknown\nserver_address=\nserver_port=0\n"
                               "helo_name=\nsender=\n") != NULL);
    CHECK(strstr(buf_cstr(&b), "\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n") != NULL);
    CHECK(strstr(buf_cstr(&b), "\nsasl_method=\nsasl_username=\n") != NULL);
    policy_request_text(x.pol, PCMD_CONNECT, &bare, "", &b);
    CHECK(strstr(buf_cstr(&b), "\nprotocol_state=CONNECT\n") != NULL);
    /* a made-up instance is stable for the same state, other for another sender */
    buf_t again = BUF_INIT;
    bare.sender = "x@y.test";
    policy_request_text(x.pol, PCMD_MAIL, &bare, "", &b);
    policy_request_text(x.pol, PCMD_MAIL, &bare, "", &again);
    CHECK_STR(buf_cstr(&b), buf_cstr(&again));
    bare.sender = "z@y.test";
    policy_request_text(x.pol, PCMD_MAIL, &bare, "", &again);
    char i1[64], i2[64];
    attr_value(buf_cstr(&b), "instance", i1, sizeof i1);
    attr_value(buf_cstr(&again), "instance", i2, sizeof i2);
    CHECK(i1[0] && i2[0] && strcmp(i1, i2) != 0);
    /* a control character in a value never starts an attribute */
    bare.helo = "bad\nsender=forged@x";
    policy_request_text(x.pol, PCMD_HELO, &bare, "", &b);
    CHECK(strstr(buf_cstr(&b), "\nhelo_name=bad?sender=forged@x\n") != NULL);
    CHECK(strstr(buf_cstr(&b), "\nsender=forged") == NULL);
    buf_free(&again);
    buf_free(&b);
    px_done(&x);
}

TEST(policysvc_compile_errors)
{
    px_t x = {0};
    CHECK(!px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service\n"));
    CHECK(strstr(buf_cstr(&x.err), "check_policy_service: missing argument") != NULL);
    CHECK(!px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service 127.0.0.1\n"));
    CHECK(strstr(buf_cstr(&x.err), "main.cf:4: check_policy_service 127.0.0.1: \"127.0.0.1\": need inet:host:port "
                                   "or unix:/path") != NULL);
    CHECK(!px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, "
                       "check_policy_service { inet:127.0.0.1:9, frob=1 }\n"));
    CHECK(strstr(buf_cstr(&x.err), "unknown setting \"frob\"") != NULL);
    CHECK(!px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, "
                       "check_policy_service { inet:127.0.0.1:9, { default_action=299 no } }\n"));
    CHECK(strstr(buf_cstr(&x.err), "default_action \"299 no\"") != NULL);
    CHECK(!px_load(&x, "smtpd_policy_service_default_action = 600 x\n"
                       "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service inet:127.0.0.1:9\n"));
    CHECK(strstr(buf_cstr(&x.err), "default_action \"600 x\"") != NULL);
    /* fine: both forms, braces with spaces inside a value */
    CHECK(px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service inet:127.0.0.1:9,"
                      " check_policy_service { inet:127.0.0.1:9, timeout=10s, "
                      "{ default_action = 451 4.3.5 See http://www.example.com/support1 } }\n"));
    px_done(&x);
}

typedef struct engine {
    struct event_base *base;
    dns_t *dns;
    dns_memo_t *memo;
    wake_count_t w;
    px_t x;
    verdict_t v;
    buf_t trace;
} engine_t;

static bool engine_start(engine_t *e, const char *main_extra)
{
    memset(e, 0, sizeof *e);
    e->base = event_base_new();
    e->dns = quiet_resolver(e->base);
    if (!e->dns)
        return false;
    e->memo = dns_memo_new(e->dns, count_wake, &e->w);
    verdict_init(&e->v);
    if (!px_load(&e->x, main_extra)) {
        harness_fail(__FILE__, __LINE__, "policy: %s", buf_cstr(&e->x.err));
        return false;
    }
    return true;
}

static void engine_stop(engine_t *e)
{
    dns_memo_free(&e->memo);
    px_done(&e->x);
    dns_unref(&e->dns);
    verdict_free(&e->v);
    buf_free(&e->trace);
    event_base_free(e->base);
}

/* RCPT as the session does it: pending, wait for the memo, again. */
static vstatus_t engine_rcpt(engine_t *e, const char *rcpt)
{
    pstate_t st = {.client_addr = "192.0.2.1", .client_name = "unknown", .reverse_name = "unknown",
                   .helo = "h.example.net", .sender = "a@example.net", .recipient = rcpt, .protocol = "ESMTP",
                   .dns = e->memo};
    dns_memo_clear(e->memo);
    vstatus_t vs;
    int rounds = 0;
    while ((vs = policy_eval(e->x.pol, PCMD_RCPT, &st, &e->v, NULL)) == V_PENDING && rounds++ < 5) {
        int before = e->w.wakes;
        double end = now_mono() + 10;
        while (e->w.wakes == before && now_mono() < end)
            event_base_loop(e->base, EVLOOP_ONCE);
    }
    if (vs != V_PENDING) {
        buf_reset(&e->trace);
        policy_eval(e->x.pol, PCMD_RCPT, &st, &e->v, &e->trace);   /* from the memo: same verdict, traced */
    }
    return vs;
}

TEST(policysvc_engine_answers_as_access_results)
{
    engine_t e;
    tserv_t t;
    char cf[300];
    REQUIRE(engine_start(&e, ""));
    /* the server's answers are "REJECT for <recipient>" */
    REQUIRE(ts_start(&t, e.base, TS_REPLY, false));
    snprintf(cf, sizeof cf,
             "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service inet:127.0.0.1:%d\n",
             t.port);
    REQUIRE(px_load(&e.x, cf));
    CHECK_INT(engine_rcpt(&e, "u@example.test"), V_REJECT);
    CHECK_STR(buf_cstr(&e.v.reply), "554 5.7.1 <u@example.test>: Recipient address rejected: for u@example.test");
    CHECK(strstr(e.v.rule, "recipient:check_policy_service inet:127.0.0.1:") == e.v.rule);
    CHECK(strstr(buf_cstr(&e.trace), ": request:\n") != NULL);
    CHECK(strstr(buf_cstr(&e.trace), "    recipient=u@example.test\n") != NULL);
    CHECK(strstr(buf_cstr(&e.trace), ": answer: action=REJECT for u@example.test (") != NULL);
    CHECK_INT(t.requests, 1);   /* the traced pass came from the memo */
    CHECK(strstr(buf_cstr(&t.last), "protocol_state=RCPT\n") != NULL);
    CHECK(strstr(buf_cstr(&t.last), "helo_name=h.example.net\n") != NULL);
    ts_stop(&t);
    engine_stop(&e);
}

/* A one-answer policy server for the engine tests: every request gets
 * reply (a complete reply text). */
typedef struct fixed {
    struct evconnlistener *lis;
    struct event_base *base;
    const char *reply;
    int port, requests;
    struct bufferevent *peer;
} fixed_t;

static void fixed_read(struct bufferevent *bev, void *arg)
{
    fixed_t *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end;
    while ((end = evbuffer_search(in, "\n\n", 2, NULL)).pos >= 0) {
        evbuffer_drain(in, (size_t)end.pos + 2);
        f->requests++;
        bufferevent_write(bev, f->reply, strlen(f->reply));
    }
}

static void fixed_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    fixed_t *f = arg;
    if (f->peer == bev)
        f->peer = NULL;
    bufferevent_free(bev);
}

static void fixed_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int sl, void *arg)
{
    (void)lis;
    (void)sa;
    (void)sl;
    fixed_t *f = arg;
    struct bufferevent *bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (f->peer)
        bufferevent_free(f->peer);
    f->peer = bev;
    bufferevent_setcb(bev, fixed_read, NULL, fixed_event, f);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static bool fixed_start(fixed_t *f, struct event_base *base, const char *reply)
{
    memset(f, 0, sizeof *f);
    f->base = base;
    f->reply = reply;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    f->lis = evconnlistener_new_bind(base, fixed_accept, f, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
                                     (struct sockaddr *)&sin, sizeof sin);
    if (!f->lis)
        return false;
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    getsockname(evconnlistener_get_fd(f->lis), (struct sockaddr *)&got, &gl);
    f->port = ntohs(got.sin_port);
    return true;
}

static void fixed_stop(fixed_t *f)
{
    if (f->peer)
        bufferevent_free(f->peer);
    if (f->lis)
        evconnlistener_free(f->lis);
}

/* The verdict for one RCPT when the policy server answers reply, with
 * restrictions "reject_unauth_destination, check_policy_service X, <after>". */
static vstatus_t one_answer(engine_t *e, fixed_t *f, const char *reply, const char *settings, const char *after)
{
    f->reply = reply;
    char cf[600];
    snprintf(cf, sizeof cf,
             "smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service "
             "{ inet:127.0.0.1:%d%s%s }%s%s\n",
             f->port, settings ? ", " : "", settings ? settings : "", after ? ", " : "", after ? after : "");
    if (!px_load(&e->x, cf)) {
        harness_fail(__FILE__, __LINE__, "policy: %s", buf_cstr(&e->x.err));
        return V_PENDING;
    }
    return engine_rcpt(e, "u@example.test");
}

TEST(policysvc_engine_actions_and_failures)
{
    engine_t e;
    fixed_t f;
    REQUIRE(engine_start(&e, ""));
    REQUIRE(fixed_start(&f, e.base, "action=DUNNO\n\n"));

    CHECK_INT(one_answer(&e, &f, "action=DUNNO\n\n", NULL, NULL), V_PERMIT);
    CHECK_INT(one_answer(&e, &f, "action=OK\n\n", NULL, "reject"), V_PERMIT);
    CHECK_INT(one_answer(&e, &f, "action=DUNNO\n\n", NULL, "reject"), V_REJECT);
    /* DEFER_IF_PERMIT: a 450 unless something rejects */
    CHECK_INT(one_answer(&e, &f, "action=DEFER_IF_PERMIT Greylisted, see http://example.test/\n\n", NULL, NULL),
              V_DEFER);
    CHECK_STR(buf_cstr(&e.v.reply), "450 4.7.1 <u@example.test>: Recipient address rejected: Greylisted, see "
                                    "http://example.test/");
    CHECK_INT(one_answer(&e, &f, "action=DEFER_IF_PERMIT later\n\n", NULL, "reject"), V_REJECT);
    /* a reply code and text of the server's own */
    CHECK_INT(one_answer(&e, &f, "action=450 4.2.0 Mailbox busy\n\n", NULL, NULL), V_DEFER);
    CHECK_STR(buf_cstr(&e.v.reply), "450 4.2.0 <u@example.test>: Recipient address rejected: Mailbox busy");
    /* message actions */
    CHECK_INT(one_answer(&e, &f, "action=PREPEND X-Policy: checked\n\n", NULL, NULL), V_PERMIT);
    CHECK_STR(buf_cstr(&e.v.prepend), "X-Policy: checked\n");
    CHECK_INT(one_answer(&e, &f, "action=HOLD\n\n", NULL, NULL), V_PERMIT);
    CHECK(e.v.hold);
    CHECK_INT(one_answer(&e, &f, "action=FILTER smtp:[127.0.0.1]:10025\n\n", NULL, NULL), V_PERMIT);
    CHECK_STR(buf_cstr(&e.v.filter), "smtp:[127.0.0.1]:10025");
    CHECK_INT(one_answer(&e, &f, "action=DISCARD\n\n", NULL, "reject"), V_PERMIT);
    CHECK(e.v.discard);
    /* a restriction list as the answer */
    CHECK_INT(one_answer(&e, &f, "action=reject_unauth_destination, reject\n\n", NULL, NULL), V_REJECT);
    CHECK_STR(buf_cstr(&e.v.reply), "554 5.7.1 <u@example.test>: Recipient address rejected: Access denied");

    /* no action: the default action, with a warning */
    CHECK_INT(one_answer(&e, &f, "reason=none\n\n", NULL, NULL), V_DEFER);
    CHECK_STR(buf_cstr(&e.v.reply), "451 4.3.5 <u@example.test>: Recipient address rejected: Server configuration "
                                    "problem");
    CHECK(strstr(buf_cstr(&e.v.warnings), "reply without an action attribute") != NULL);
    CHECK_INT(one_answer(&e, &f, "reason=none\n\n", "default_action=DUNNO", NULL), V_PERMIT);
    /* an action that is not UTF-8 */
    CHECK_INT(one_answer(&e, &f, "action=REJECT caf\xe9\n\n", "default_action=DUNNO", NULL), V_PERMIT);
    CHECK(strstr(buf_cstr(&e.v.warnings), "malformed UTF-8 in policy server") != NULL);
    /* a bad action: 451 4.3.5 Server configuration error, as for a table */
    CHECK_INT(one_answer(&e, &f, "action=REJECT 4.7.1 mismatch\n\n", NULL, NULL), V_REJECT);
    CHECK_INT(one_answer(&e, &f, "action=PREPEND nocolon\n\n", NULL, NULL), V_DEFER);
    CHECK_STR(buf_cstr(&e.v.reply), "451 4.3.5 Server configuration error");
    CHECK(strstr(buf_cstr(&e.v.warnings), "access table inet:127.0.0.1:") != NULL);
    CHECK(strstr(buf_cstr(&e.v.warnings), "entry \"policy query\" has a bad result") != NULL);

    /* a server that is gone: default_action after the tries */
    fixed_stop(&f);
    memset(&f, 0, sizeof f);
    REQUIRE(fixed_start(&f, e.base, "action=DUNNO\n\n"));
    int port = f.port;
    fixed_stop(&f);
    f.lis = NULL;
    f.port = port;
    CHECK_INT(one_answer(&e, &f, "", "try_limit=1, { default_action = DEFER_IF_PERMIT policy down }", NULL), V_DEFER);
    CHECK_STR(buf_cstr(&e.v.reply), "450 4.7.1 <u@example.test>: Recipient address rejected: policy down");
    CHECK(strstr(buf_cstr(&e.v.warnings), "warning: problem talking to server inet:127.0.0.1:") != NULL);
    CHECK(strstr(buf_cstr(&e.trace), "default_action DEFER_IF_PERMIT policy down") != NULL);
    CHECK_INT(one_answer(&e, &f, "", "try_limit=1, default_action=DUNNO", NULL), V_PERMIT);
    engine_stop(&e);
}

TEST(policysvc_engine_without_memo_is_a_server_error)
{
    px_t x = {0};
    REQUIRE(px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, "
                        "check_policy_service inet:127.0.0.1:9\n"));
    pstate_t st = {.client_addr = "192.0.2.1", .recipient = "u@example.test", .protocol = "SMTP"};
    verdict_t v;
    verdict_init(&v);
    CHECK_INT(policy_eval(x.pol, PCMD_RCPT, &st, &v, NULL), V_DEFER);
    CHECK_STR(buf_cstr(&v.reply), "451 4.3.5 Server configuration error");
    /* nor as an access table's answer (that list compiles at run time) */
    REQUIRE(px_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, check_recipient_access "
                        "inline:{{u@example.test = check_policy_service inet:127.0.0.1:9}}\n"));
    CHECK_INT(policy_eval(x.pol, PCMD_RCPT, &st, &v, NULL), V_DEFER);
    CHECK_STR(buf_cstr(&v.reply), "451 4.3.5 Server configuration error");
    CHECK(strstr(buf_cstr(&v.warnings), "a policy service inside an access table result") != NULL);
    verdict_free(&v);
    px_done(&x);
}
