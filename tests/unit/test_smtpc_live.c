/*
 * Event-loop tests of the SMTP/LMTP client against a scripted server in
 * the same process (a libevent listener on 127.0.0.1, ephemeral port):
 * the exact bytes the client sends (CRLF, dot-stuffing, SIZE=, BODY=,
 * XFORWARD, PIPELINING in one write), per-recipient results and texts,
 * LMTP replies per recipient, dropped connections, garbage, timeouts,
 * SIZE/SMTPUTF8 refusals, the 8-bit downgrade, connection reuse with
 * RSET, and shutdown with deliveries in flight.  MX handling is tested
 * in test_smtpc_dns.c against an in-process DNS server.
 */
#include "harness.h"
#include "smtpc_testlib.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *MSG = "Received: from x\nSubject: test\n\n.leading dot\nline two\n..two dots\n.\nlast line\n";

TEST(smtpc_live_pipelined_basic)
{
    tworld_t w;
    tworld_init(&w, "smtp_helo_name = client.example.test\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-srv.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n";
    treq_t *r = treq_new(&w, MSG, "8BITMIME");
    treq_rcpt(r, "a@example.test");
    treq_rcpt(r, "b@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(r->req.rcpts[1].status, SMTPC_SENT);
    CHECK_STR(r->req.rcpts[0].dsn, "2.0.0");
    CHECK_STR(r->req.rcpts[0].text, "250 2.0.0 Ok: queued as TEST1");
    CHECK_STR(r->req.rcpts[0].reply, "250 2.0.0 Ok: queued as TEST1");
    char relay[64];
    snprintf(relay, sizeof relay, "127.0.0.1[127.0.0.1]:%d", s->port);
    CHECK_STR(r->req.relay, relay);
    CHECK(!r->req.dest_failed);
    CHECK(!r->req.reused);
    CHECK(r->req.t_start <= r->req.t_conn && r->req.t_conn <= r->req.t_end);
    /* Exact bytes. */
    const char *log = buf_cstr(&s->log);
    CHECK(strstr(log, "EHLO client.example.test\r\n") != NULL);
    char mail[128];
    snprintf(mail, sizeof mail, "MAIL FROM:<sender@example.org> SIZE=%zu BODY=8BITMIME\r\n", strlen(MSG));
    CHECK(strstr(log, mail) != NULL);
    CHECK(strstr(log, "RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n") != NULL);
    CHECK_STR(buf_cstr(&s->data), "Received: from x\r\nSubject: test\r\n\r\n..leading dot\r\nline two\r\n"
                                  "...two dots\r\n..\r\nlast line\r\n.\r\n");
    /* MAIL, two RCPT and DATA arrived together. */
    CHECK(s->max_batch >= 4);
    CHECK_INT(s->transactions, 1);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_per_rcpt_replies_no_pipelining)
{
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-srv.test\r\n250 8BITMIME\r\n";
    tsrv_rcpt(s, "soft@example.test", "450 4.2.0 try later");
    tsrv_rcpt(s, "bad@example.test", "550-5.1.1 no such\r\n550 5.1.1 user here");
    treq_t *r = treq_new(&w, "Subject: x\n\nbody", "");
    treq_rcpt(r, "ok@example.test");
    treq_rcpt(r, "soft@example.test");
    treq_rcpt(r, "bad@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(r->req.rcpts[1].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[1].dsn, "4.2.0");
    CHECK_STR(r->req.rcpts[1].text,
              "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 try later (in reply to RCPT TO command)");
    CHECK_INT(r->req.rcpts[2].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[2].dsn, "5.1.1");
    CHECK_STR(r->req.rcpts[2].text, "host 127.0.0.1[127.0.0.1] said: 550-5.1.1 no such 550 5.1.1 user here "
                                    "(in reply to RCPT TO command)");
    CHECK_STR(r->req.rcpts[2].reply, "550-5.1.1 no such 550 5.1.1 user here");
    CHECK_INT(s->max_batch, 1);
    /* Content without a final newline gets one before the dot. */
    CHECK_STR(buf_cstr(&s->data), "Subject: x\r\n\r\nbody\r\n.\r\n");
    /* No SIZE keyword from the server: no SIZE= parameter. */
    CHECK(strstr(buf_cstr(&s->log), "MAIL FROM:<sender@example.org>\r\n") != NULL);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_all_rejected)
{
    for (int pipe = 0; pipe < 2; pipe++) {
        tworld_t w;
        tworld_init(&w, NULL);
        tsrv_t *s = tsrv_new(&w, NULL);
        s->ehlo = pipe ? "250-srv.test\r\n250 PIPELINING\r\n" : "250 srv.test\r\n";
        s->rcpt_default = "550 5.1.1 nobody";
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_rcpt(r, "b@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
        CHECK_INT(r->req.rcpts[1].status, SMTPC_BOUNCE);
        CHECK_INT(s->transactions, 0);
        CHECK_INT(s->data.len, 0);
        /* Without PIPELINING no DATA at all; with it, DATA's 554 is ignored. */
        CHECK((strstr(buf_cstr(&s->log), "DATA\r\n") != NULL) == (pipe == 1));
        CHECK(!r->req.dest_failed);
        treq_free(r);
        tworld_free(&w);
    }
}

TEST(smtpc_live_mail_rejected)
{
    tworld_t w;
    tworld_init(&w, "smtp_connection_cache_on_demand = no\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-srv.test\r\n250 8BITMIME\r\n";
    s->mail = "553 5.7.1 sender refused";
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_rcpt(r, "b@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(r->req.rcpts[i].status, SMTPC_BOUNCE);
        CHECK_STR(r->req.rcpts[i].dsn, "5.7.1");
        CHECK_STR(r->req.rcpts[i].text,
                  "host 127.0.0.1[127.0.0.1] said: 553 5.7.1 sender refused (in reply to MAIL FROM command)");
    }
    CHECK(strstr(buf_cstr(&s->log), "RCPT TO") == NULL);
    treq_free(r);

    /* With PIPELINING the RCPT and DATA replies that follow are ignored. */
    s->ehlo = "250-srv.test\r\n250 PIPELINING\r\n";
    s->mail = "452 4.3.1 full";
    buf_reset(&s->log);
    r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_rcpt(r, "b@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(r->req.rcpts[i].status, SMTPC_DEFER);
        CHECK_STR(r->req.rcpts[i].text,
                  "host 127.0.0.1[127.0.0.1] said: 452 4.3.1 full (in reply to MAIL FROM command)");
    }
    CHECK(strstr(buf_cstr(&s->log), "RCPT TO:<b@example.test>\r\nDATA\r\n") != NULL);
    CHECK_INT(s->data.len, 0);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_data_replies)
{
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    s->data_end = "452 4.3.1 insufficient storage";
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_rcpt(r, "b@example.test");
    tsrv_rcpt(s, "b@example.test", "550 5.1.1 no");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].text,
              "host 127.0.0.1[127.0.0.1] said: 452 4.3.1 insufficient storage (in reply to end of DATA command)");
    CHECK_INT(r->req.rcpts[1].status, SMTPC_BOUNCE);
    treq_free(r);

    s->data_end = NULL;
    s->data_reply = "554 5.6.0 no thanks";
    r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].text,
              "host 127.0.0.1[127.0.0.1] said: 554 5.6.0 no thanks (in reply to DATA command)");
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_lmtp_per_recipient)
{
    tworld_t w;
    tworld_init(&w, "lmtp_lhlo_name = lhlo.example.test\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-lmtp.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n";
    s->lmtp_end[0] = "250 2.0.0 <a@example.test> saved";
    s->lmtp_end[1] = "552 5.2.2 <b@example.test> over quota";
    s->lmtp_end[2] = "451 4.3.0 <d@example.test> try again";
    tsrv_rcpt(s, "c@example.test", "550 5.1.1 unknown");
    treq_t *r = treq_new(&w, MSG, "");
    r->t.kind = TK_LMTP;
    r->t.name = "lmtp";
    treq_rcpt(r, "a@example.test");
    treq_rcpt(r, "b@example.test");
    treq_rcpt(r, "c@example.test");
    treq_rcpt(r, "d@example.test");
    char nh[64];
    snprintf(nh, sizeof nh, "inet:127.0.0.1:%d", s->port);
    treq_nexthop(r, nh);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK(strstr(buf_cstr(&s->log), "LHLO lhlo.example.test\r\n") != NULL);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_STR(r->req.rcpts[0].text, "250 2.0.0 <a@example.test> saved");
    CHECK_INT(r->req.rcpts[1].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[1].text, "host 127.0.0.1[127.0.0.1] said: 552 5.2.2 <b@example.test> over quota "
                                    "(in reply to end of DATA command)");
    CHECK_INT(r->req.rcpts[2].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[2].text,
              "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 unknown (in reply to RCPT TO command)");
    CHECK_INT(r->req.rcpts[3].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[3].dsn, "4.3.0");
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_lmtp_unix_socket)
{
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new_unix(&w);
    s->ehlo = "250-lmtp.test\r\n250 PIPELINING\r\n";
    s->lmtp_end[0] = "250 2.0.0 ok";
    treq_t *r = treq_new(&w, MSG, "");
    r->t.kind = TK_LMTP;
    treq_rcpt(r, "a@example.test");
    char nh[300];
    snprintf(nh, sizeof nh, "unix:%s", s->path);
    treq_nexthop(r, nh);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    char relay[300];
    snprintf(relay, sizeof relay, "mx.example.test[%s]", s->path);
    CHECK_STR(r->req.relay, relay);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_drop_mid_data)
{
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    s->drop_at = "data";
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.4.2");
    CHECK(strncmp(r->req.rcpts[0].text, "lost connection with 127.0.0.1[127.0.0.1] while sending ", 56) == 0);
    CHECK(!r->req.dest_failed);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_drop_at_greeting)
{
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    s->drop_at = "greeting";
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].text,
              "lost connection with 127.0.0.1[127.0.0.1] while receiving the initial server greeting");
    CHECK(r->req.dest_failed);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_garbage)
{
    static const char *stages[] = {"greeting", "ehlo", "mail", "rcpt", "data", "data_end"};
    for (size_t i = 0; i < ARRAY_LEN(stages); i++) {
        tworld_t w;
        tworld_init(&w, NULL);
        tsrv_t *s = tsrv_new(&w, NULL);
        s->garbage_at = stages[i];
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
        CHECK_STR(r->req.rcpts[0].dsn, "4.5.0");
        CHECK(strstr(r->req.rcpts[0].text, "host 127.0.0.1[127.0.0.1] said: xyz (protocol error") != NULL);
        if (!strstr(r->req.rcpts[0].text, "protocol error"))
            harness_fail(__FILE__, __LINE__, "%s: %s", stages[i], r->req.rcpts[0].text);
        treq_free(r);
        tworld_free(&w);
    }
}

TEST(smtpc_live_bad_replies)
{
    /* A line too long, a reply before any command, a wrong class. */
    static const char *greet[] = {NULL, "220 hi\r\n250 unasked", "220-a\r\n221 mismatched"};
    for (size_t i = 0; i < ARRAY_LEN(greet); i++) {
        tworld_t w;
        tworld_init(&w, NULL);
        tsrv_t *s = tsrv_new(&w, NULL);
        char *long_line = NULL;
        if (!greet[i]) {
            long_line = xmalloc(6000);
            memset(long_line, 'x', 5999);
            long_line[5999] = 0;
            memcpy(long_line, "220 ", 4);
            s->greeting = long_line;
        } else {
            s->greeting = greet[i];
        }
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
        static const char *why[] = {"(protocol error: reply line too long)",
                                    "250 unasked (protocol error: reply before the command was sent)",
                                    "221 mismatched (protocol error in the initial server greeting)"};
        if (!strstr(r->req.rcpts[0].text, why[i]))
            harness_fail(__FILE__, __LINE__, "%zu: %s", i, r->req.rcpts[0].text);
        CHECK_INT(s->transactions, 0);
        treq_free(r);
        tworld_free(&w);
        free(long_line);
    }
    /* 354 to MAIL is a protocol error too, not a bounce. */
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    s->mail = "354 what";
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].text,
              "host 127.0.0.1[127.0.0.1] said: 354 what (protocol error in reply to MAIL FROM command)");
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_greeting_refused)
{
    for (int skip = 0; skip < 2; skip++) {
        tworld_t w;
        tworld_init(&w, skip ? "smtp_skip_5xx_greeting = yes\n" : "smtp_skip_5xx_greeting = no\n");
        tsrv_t *s = tsrv_new(&w, NULL);
        s->greeting = "554 5.7.1 go away";
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, skip ? SMTPC_DEFER : SMTPC_BOUNCE);
        CHECK_STR(r->req.rcpts[0].dsn, skip ? "4.7.1" : "5.7.1");
        CHECK_STR(r->req.rcpts[0].text, "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away");
        treq_free(r);
        tworld_free(&w);
    }
}

TEST(smtpc_live_helo_fallback)
{
    tworld_t w;
    tworld_init(&w, "smtp_helo_name = me.example.test\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "502 5.5.2 no EHLO here";
    treq_t *r = treq_new(&w, MSG, "8BITMIME");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK(strstr(buf_cstr(&s->log), "EHLO me.example.test\r\nHELO me.example.test\r\n") != NULL);
    treq_free(r);
    tworld_free(&w);

    tworld_init(&w, "smtp_never_send_ehlo = yes\n");
    s = tsrv_new(&w, NULL);
    s->helo = "550 5.7.1 not you";
    r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK(strstr(buf_cstr(&s->log), "EHLO") == NULL);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].text, "host 127.0.0.1[127.0.0.1] refused to talk to me: 550 5.7.1 not you");
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_connect_refused)
{
    tworld_t w;
    tworld_init(&w, NULL);
    int port = tfree_port();
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    char nh[64], want[128];
    snprintf(nh, sizeof nh, "[127.0.0.1]:%d", port);
    treq_nexthop(r, nh);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.4.1");
    snprintf(want, sizeof want, "connect to 127.0.0.1[127.0.0.1]:%d: Connection refused", port);
    CHECK_STR(r->req.rcpts[0].text, want);
    CHECK_STR(r->req.relay, "none");
    CHECK(r->req.dest_failed);
    CHECK(r->req.rcpts[0].reply == NULL);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_timeout)
{
    tworld_t w;
    tworld_init(&w, "smtp_helo_timeout = 1s\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->silent = true;
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.4.2");
    CHECK_STR(r->req.rcpts[0].text,
              "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting");
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_xforward)
{
    tworld_t w;
    tworld_init(&w, "smtp_send_xforward_command = yes\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-srv.test\r\n250-PIPELINING\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE IDENT\r\n";
    treq_t *r = treq_new(&w, MSG, "");
    r->req.client_name = "client.example.org";
    r->req.client_addr = "192.0.2.1";
    r->req.helo = "helo.example.org";
    r->req.protocol = "ESMTP";
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK(strstr(buf_cstr(&s->log), "XFORWARD NAME=client.example.org ADDR=192.0.2.1\r\n"
                                    "XFORWARD PROTO=ESMTP HELO=helo.example.org IDENT=ABCDEF SOURCE=REMOTE\r\n"
                                    "MAIL FROM:") != NULL);
    treq_free(r);

    /* Not offered: not sent.  Refused: every recipient gets the reply. */
    s->ehlo = "250-srv.test\r\n250 XFORWARD NAME ADDR\r\n";
    s->xforward = "550 5.7.0 insufficient authorization";
    buf_reset(&s->log);
    r = treq_new(&w, MSG, "");
    r->req.client_name = "unknown";
    r->req.client_addr = "127.0.0.1";
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK(strstr(buf_cstr(&s->log), "XFORWARD ADDR=127.0.0.1") == NULL);
    CHECK(strstr(buf_cstr(&s->log), "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.1\r\n") != NULL);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].text, "host 127.0.0.1[127.0.0.1] said: 550 5.7.0 insufficient authorization "
                                    "(in reply to XFORWARD name/address command)");
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_size_and_smtputf8)
{
    tworld_t w;
    /* Each request sees the server's new EHLO: no cached connections. */
    tworld_init(&w, "smtp_connection_cache_on_demand = no\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-srv.test\r\n250 SIZE 20\r\n";
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].dsn, "5.3.4");
    char want[160];
    snprintf(want, sizeof want, "message size %zu exceeds size limit 20 of server 127.0.0.1[127.0.0.1]",
             strlen(MSG));
    CHECK_STR(r->req.rcpts[0].text, want);
    CHECK(strstr(buf_cstr(&s->log), "MAIL FROM") == NULL);
    treq_free(r);

    s->ehlo = "250-srv.test\r\n250 8BITMIME\r\n";
    r = treq_new(&w, MSG, "");
    r->req.smtputf8 = true;
    treq_rcpt(r, "j\xc3\xb6rg@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].dsn, "5.6.7");
    CHECK_STR(r->req.rcpts[0].text, "SMTPUTF8 is required, but was not offered by host 127.0.0.1[127.0.0.1]");
    treq_free(r);

    /* Requested but not needed (all ASCII): sent without the parameter. */
    buf_reset(&s->log);
    r = treq_new(&w, MSG, "");
    r->req.smtputf8 = true;
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK(strstr(buf_cstr(&s->log), "MAIL FROM:<sender@example.org>\r\n") != NULL);
    treq_free(r);

    /* Offered: the parameter goes with MAIL. */
    s->ehlo = "250-srv.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
    buf_reset(&s->log);
    r = treq_new(&w, MSG, "8BITMIME");
    r->req.smtputf8 = true;
    treq_rcpt(r, "j\xc3\xb6rg@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK(strstr(buf_cstr(&s->log), "MAIL FROM:<sender@example.org> BODY=8BITMIME SMTPUTF8\r\n") != NULL);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_8bit_downgrade)
{
    const char *msg8 = "Subject: caf\xc3\xa9\n\nCaf\xc3\xa9 cr\xc3\xa8me\n.dot\n";
    for (int disable = 0; disable < 2; disable++) {
        tworld_t w;
        tworld_init(&w, disable ? "disable_mime_output_conversion = yes\n" : NULL);
        tsrv_t *s = tsrv_new(&w, NULL);
        s->ehlo = "250-srv.test\r\n250 PIPELINING\r\n";
        treq_t *r = treq_new(&w, msg8, disable ? "8BITMIME" : "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
        CHECK(strstr(buf_cstr(&s->log), "BODY=8BITMIME") == NULL);
        if (disable) {
            CHECK_STR(buf_cstr(&s->data),
                      "Subject: caf\xc3\xa9\r\n\r\nCaf\xc3\xa9 cr\xc3\xa8me\r\n..dot\r\n.\r\n");
        } else {
            CHECK_STR(buf_cstr(&s->data), "Subject: caf\xc3\xa9\r\nMIME-Version: 1.0\r\n"
                                          "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                                          "Caf=C3=A9 cr=C3=A8me\r\n..dot\r\n.\r\n");
        }
        treq_free(r);
        tworld_free(&w);
    }
}

TEST(smtpc_live_big_content)
{
    /* Several chunks, a dot at the start of a chunk and at line starts. */
    size_t n = 700 * 1024;
    char *big = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (i % 100 == 99) ? '\n' : (i % 100 == 0) ? '.' : (char)('a' + i % 26);
    big[n] = 0;
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    treq_t *r = treq_new(&w, big, "7BIT");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    /* Every line: a doubled dot, 98 letters, CRLF; then the final dot. */
    CHECK_INT(s->data.len, n / 100 * 102 + 3);
    const char *d = buf_cstr(&s->data);
    CHECK(strncmp(d, "..bcd", 5) == 0);
    CHECK(strncmp(d + 102, "..", 2) == 0);
    CHECK(strcmp(d + s->data.len - 5, "\r\n.\r\n") == 0);
    treq_free(r);
    tworld_free(&w);
    free(big);
}

TEST(smtpc_live_reuse)
{
    tworld_t w;
    tworld_init(&w, "smtp_connection_cache_time_limit = 30s\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->ehlo = "250-srv.test\r\n250 PIPELINING\r\n";
    for (int i = 0; i < 3; i++) {
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
        CHECK(r->req.reused == (i > 0));
        CHECK_INT(smtpc_cached(w.c), 1);
        CHECK_INT(smtpc_busy(w.c), 0);
        treq_free(r);
    }
    CHECK_INT(s->sessions, 1);
    CHECK_INT(s->rsets, 2);
    CHECK_INT(s->transactions, 3);
    /* Another transport name: another connection. */
    treq_t *r = treq_new(&w, MSG, "");
    r->t.name = "relay";
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    CHECK(!r->req.reused);
    CHECK_INT(s->sessions, 2);
    CHECK_INT(smtpc_cached(w.c), 2);
    treq_free(r);
    /* smtpc_free says QUIT on every cached connection. */
    smtpc_free(&w.c);
    tworld_spin(&w, 0.3);
    CHECK_INT(s->quits, 2);
    tworld_free(&w);
}

TEST(smtpc_live_reuse_rset_fails)
{
    tworld_t w;
    tworld_init(&w, "smtp_connection_cache_time_limit = 30s\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    s->rset = "421 4.4.2 closing";
    for (int i = 0; i < 2; i++) {
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
        CHECK(!r->req.reused);
        treq_free(r);
    }
    CHECK_INT(s->sessions, 2);
    CHECK_INT(s->rsets, 1);
    tworld_free(&w);
}

TEST(smtpc_live_cache_limits)
{
    /* Count limit 1: every message its own connection, never cached. */
    tworld_t w;
    tworld_init(&w, "smtp_connection_reuse_count_limit = 1\n");
    tsrv_t *s = tsrv_new(&w, NULL);
    for (int i = 0; i < 2; i++) {
        treq_t *r = treq_new(&w, MSG, "");
        treq_rcpt(r, "a@example.test");
        treq_nexthop_srv(r, s);
        treq_run(&w, r);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
        CHECK_INT(smtpc_cached(w.c), 0);
        treq_free(r);
    }
    tworld_spin(&w, 0.2);
    CHECK_INT(s->sessions, 2);
    CHECK_INT(s->quits, 2);
    tworld_free(&w);

    /* The idle limit passes: QUIT. */
    tworld_init(&w, "smtp_connection_cache_time_limit = 1s\n");
    s = tsrv_new(&w, NULL);
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    CHECK_INT(smtpc_cached(w.c), 1);
    treq_free(r);
    tworld_spin(&w, 1.6);
    CHECK_INT(smtpc_cached(w.c), 0);
    CHECK_INT(s->quits, 1);
    tworld_free(&w);

    /* The server closes an idle cached connection: it leaves the cache. */
    tworld_init(&w, "smtp_connection_cache_time_limit = 30s\n");
    s = tsrv_new(&w, NULL);
    r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    treq_run(&w, r);
    CHECK_INT(smtpc_cached(w.c), 1);
    treq_free(r);
    tsrv_close_all(s);
    tworld_spin(&w, 0.3);
    CHECK_INT(smtpc_cached(w.c), 0);
    tworld_free(&w);
}

TEST(smtpc_live_bad_nexthop_and_free_in_flight)
{
    tworld_t w;
    tworld_init(&w, NULL);
    treq_t *r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop(r, "[127.0.0.1");
    smtpc_deliver(w.c, &r->req);
    CHECK(!r->done);   /* never from inside smtpc_deliver */
    treq_wait(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.3.5");
    CHECK(strncmp(r->req.rcpts[0].text, "bad next hop \"[127.0.0.1\"", 25) == 0);
    treq_free(r);

    /* smtpc_free with a delivery in flight: it still finishes. */
    tsrv_t *s = tsrv_new(&w, NULL);
    r = treq_new(&w, MSG, "");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    smtpc_deliver(w.c, &r->req);
    smtpc_free(&w.c);
    CHECK(w.c == NULL);
    treq_wait(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    tworld_spin(&w, 0.2);
    CHECK_INT(s->quits, 1);
    treq_free(r);
    tworld_free(&w);
}

TEST(smtpc_live_missing_queue_file)
{
    tworld_t w;
    tworld_init(&w, NULL);
    tsrv_t *s = tsrv_new(&w, NULL);
    treq_t *r = treq_new(&w, MSG, "7BIT");
    treq_rcpt(r, "a@example.test");
    treq_nexthop_srv(r, s);
    unlink(r->path);
    treq_run(&w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.3.0");
    CHECK_STR(r->req.rcpts[0].text, "local data error while talking to 127.0.0.1[127.0.0.1]");
    CHECK_INT(s->transactions, 0);
    treq_free(r);
    tworld_free(&w);
}
