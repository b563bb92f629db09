/*
 * MX handling of the SMTP client against an in-process DNS server (see
 * tdns_new in test_smtpc_lib.c) and scripted SMTP servers on several
 * loopback addresses sharing one port: preference order and fallback,
 * A/AAAA when there is no MX, null MX, NXDOMAIN, SERVFAIL, MX hosts
 * without addresses, mail loops (by name and by address), equal
 * preferences in random order, and the address and session limits.
 */
#include "harness.h"
#include "smtpc_testlib.h"

#include "core/util.h"

#include <stdio.h>
#include <string.h>

static const char *MSG = "Subject: mx\n\nhello\n";

static const char *TABLE = "mxpref.dns.test MX 10 mx1.dns.test\n"
                           "mxpref.dns.test MX 20 mx2.dns.test\n"
                           "mxfallback.dns.test MX 10 dead.dns.test\n"
                           "mxfallback.dns.test MX 20 mx2.dns.test\n"
                           "mx1.dns.test A 127.0.0.61\n"
                           "mx2.dns.test A 127.0.0.62\n"
                           "dead.dns.test A 127.0.0.60\n"
                           "amx.dns.test A 127.0.0.63\n"
                           "noaddr.dns.test MX 10 nowhere.dns.test\n"
                           "nullmx.dns.test MX 0 .\n"
                           "gone.dns.test NXDOMAIN\n"
                           "fail.dns.test SERVFAIL\n"
                           "loop.dns.test MX 10 mx.example.test\n"
                           "loopworse.dns.test MX 5 mx1.dns.test\n"
                           "loopworse.dns.test MX 10 mx.example.test\n"
                           "loopworse.dns.test MX 20 mx2.dns.test\n"
                           "loopequal.dns.test MX 10 mx1.dns.test\n"
                           "loopequal.dns.test MX 10 mx.example.test\n"
                           "selfaddr.dns.test MX 10 me.dns.test\n"
                           "me.dns.test A 127.0.0.1\n"
                           "equal.dns.test MX 10 mx1.dns.test\n"
                           "equal.dns.test MX 10 mx2.dns.test\n"
                           "six.dns.test AAAA ::1\n";

typedef struct mxw {
    tworld_t w;
    int port;
    tsrv_t *mx1, *mx2, *amx;
} mxw_t;

static void mxw_init(mxw_t *m, const char *extra)
{
    tworld_init(&m->w, extra);
    tdns_new(&m->w, TABLE);
    m->port = tfree_port();
    m->mx1 = tsrv_new_at(&m->w, "127.0.0.61", m->port);
    m->mx2 = tsrv_new_at(&m->w, "127.0.0.62", m->port);
    m->amx = tsrv_new_at(&m->w, "127.0.0.63", m->port);
}

static treq_t *mx_req(mxw_t *m, const char *domain, const char *rcpt)
{
    treq_t *r = treq_new(&m->w, MSG, "");
    treq_rcpt(r, rcpt ? rcpt : "user@example.test");
    char nh[300];
    snprintf(nh, sizeof nh, "%s:%d", domain, m->port);
    treq_nexthop(r, nh);
    return r;
}

TEST(smtpc_dns_mx_preference_and_fallback)
{
    mxw_t m;
    mxw_init(&m, NULL);
    treq_t *r = mx_req(&m, "mxpref.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(m.mx1->transactions, 1);
    CHECK_INT(m.mx2->sessions, 0);
    char relay[128];
    snprintf(relay, sizeof relay, "mx1.dns.test[127.0.0.61]:%d", m.port);
    CHECK_STR(r->req.relay, relay);
    treq_free(r);

    /* The best MX refuses connections: the next one takes the mail. */
    r = mx_req(&m, "mxfallback.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(m.mx2->transactions, 1);
    snprintf(relay, sizeof relay, "mx2.dns.test[127.0.0.62]:%d", m.port);
    CHECK_STR(r->req.relay, relay);
    treq_free(r);
    tworld_free(&m.w);
}

TEST(smtpc_dns_soft_failure_tries_next_mx)
{
    mxw_t m;
    mxw_init(&m, "smtp_connection_cache_on_demand = no\n");
    tsrv_rcpt(m.mx1, "grey@example.test", "450 4.7.1 greylisted");
    treq_t *r = treq_new(&m.w, MSG, "");
    treq_rcpt(r, "ok@example.test");
    treq_rcpt(r, "grey@example.test");
    char nh[64];
    snprintf(nh, sizeof nh, "mxpref.dns.test:%d", m.port);
    treq_nexthop(r, nh);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(r->req.rcpts[1].status, SMTPC_SENT);
    CHECK_INT(m.mx1->transactions, 1);
    CHECK_INT(m.mx2->transactions, 1);
    CHECK(strstr(buf_cstr(&m.mx2->log), "RCPT TO:<grey@example.test>") != NULL);
    CHECK(strstr(buf_cstr(&m.mx2->log), "RCPT TO:<ok@example.test>") == NULL);
    treq_free(r);

    /* Every MX soft-fails: the last failure's text. */
    m.mx1->greeting = "421 4.3.2 busy";
    m.mx2->greeting = "450 4.3.2 also busy";
    r = mx_req(&m, "mxpref.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK(strstr(r->req.rcpts[0].text, "mx2.dns.test[127.0.0.62] refused to talk to me: 450 4.3.2 also busy") !=
          NULL);
    CHECK(r->req.dest_failed);
    treq_free(r);
    tworld_free(&m.w);
}

TEST(smtpc_dns_no_mx_and_bracket_host)
{
    mxw_t m;
    mxw_init(&m, NULL);
    treq_t *r = mx_req(&m, "amx.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(m.amx->transactions, 1);
    treq_free(r);

    /* [host]: no MX lookup, the host's own address. */
    r = treq_new(&m.w, MSG, "");
    treq_rcpt(r, "u@example.test");
    char nh[64];
    snprintf(nh, sizeof nh, "[mx2.dns.test]:%d", m.port);
    treq_nexthop(r, nh);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(m.mx2->transactions, 1);
    treq_free(r);
    tworld_free(&m.w);
}

TEST(smtpc_dns_failures)
{
    mxw_t m;
    mxw_init(&m, NULL);
    struct {
        const char *domain, *dsn, *text;
        int status;
    } cases[] = {
        {"nullmx.dns.test", "5.1.10", "Domain nullmx.dns.test does not accept mail (nullMX)", SMTPC_BOUNCE},
        {"gone.dns.test", "5.4.4",
         "Host or domain name not found. Name service error for name=gone.dns.test type=MX: Host not found",
         SMTPC_BOUNCE},
        {"noaddr.dns.test", "5.4.4",
         "Host or domain name not found. Name service error for name=nowhere.dns.test type=A: Host not found",
         SMTPC_BOUNCE},
        {"fail.dns.test", "4.4.3",
         "Host or domain name not found. Name service error for name=fail.dns.test type=MX: Host not found, "
         "try again",
         SMTPC_DEFER},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        treq_t *r = mx_req(&m, cases[i].domain, NULL);
        treq_run(&m.w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, cases[i].status);
        CHECK_STR(r->req.rcpts[0].dsn, cases[i].dsn);
        if (strncmp(r->req.rcpts[0].text, cases[i].text, strlen(cases[i].text)) != 0)
            harness_fail(__FILE__, __LINE__, "%s: \"%s\"", cases[i].domain, r->req.rcpts[0].text);
        CHECK_STR(r->req.relay, "none");
        CHECK(r->req.dest_failed == (cases[i].status == SMTPC_DEFER));
        treq_free(r);
    }
    tworld_free(&m.w);

    mxw_init(&m, "smtp_defer_if_no_mx_address_found = yes\n");
    treq_t *r = mx_req(&m, "noaddr.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.4.4");
    treq_free(r);
    tworld_free(&m.w);
}

TEST(smtpc_dns_loops)
{
    mxw_t m;
    mxw_init(&m, NULL);
    char want[128];
    /* The best MX is us (by name). */
    treq_t *r = mx_req(&m, "loop.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].dsn, "5.4.6");
    snprintf(want, sizeof want, "mail for loop.dns.test:%d loops back to myself", m.port);
    CHECK_STR(r->req.rcpts[0].text, want);
    treq_free(r);
    /* A better MX than us is used; worse ones are dropped. */
    m.mx1->greeting = "421 4.3.2 busy";
    r = mx_req(&m, "loopworse.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_INT(m.mx1->sessions, 1);
    CHECK_INT(m.mx2->sessions, 0);
    treq_free(r);
    /* An MX as good as us: nothing left. */
    r = mx_req(&m, "loopequal.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].dsn, "5.4.6");
    treq_free(r);
    tworld_free(&m.w);

    /* By address: an MX host whose address and port we listen on. */
    mxw_init(&m, NULL);
    char lis[64];
    snprintf(lis, sizeof lis, "*:%d", m.port);
    m.w.listen[0] = lis;
    r = mx_req(&m, "selfaddr.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].dsn, "5.4.6");
    treq_free(r);
    /* A literal next hop that is us. */
    r = treq_new(&m.w, MSG, "");
    treq_rcpt(r, "u@example.test");
    char nh[64];
    snprintf(nh, sizeof nh, "[127.0.0.9]:%d", m.port);
    treq_nexthop(r, nh);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_BOUNCE);
    CHECK_STR(r->req.rcpts[0].dsn, "5.4.6");
    treq_free(r);
    tworld_free(&m.w);
}

TEST(smtpc_dns_equal_preference_random)
{
    mxw_t m;
    mxw_init(&m, "smtp_connection_cache_on_demand = no\n");
    for (int i = 0; i < 24; i++) {
        treq_t *r = mx_req(&m, "equal.dns.test", NULL);
        treq_run(&m.w, r);
        REQUIRE(r->done);
        CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
        treq_free(r);
    }
    CHECK_INT(m.mx1->transactions + m.mx2->transactions, 24);
    CHECK(m.mx1->transactions > 0);
    CHECK(m.mx2->transactions > 0);
    tworld_free(&m.w);
}

TEST(smtpc_dns_limits)
{
    /* One address only: the dead best MX, then no more tries. */
    mxw_t m;
    mxw_init(&m, "smtp_mx_address_limit = 1\n");
    treq_t *r = mx_req(&m, "mxfallback.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK_STR(r->req.rcpts[0].dsn, "4.4.1");
    char want[128];
    snprintf(want, sizeof want, "connect to dead.dns.test[127.0.0.60]:%d: Connection refused", m.port);
    CHECK_STR(r->req.rcpts[0].text, want);
    CHECK_INT(m.mx2->sessions, 0);
    treq_free(r);
    tworld_free(&m.w);

    /* One session only: a soft RCPT failure is final at the first MX. */
    mxw_init(&m, "smtp_mx_session_limit = 1\n");
    m.mx1->rcpt_default = "451 4.3.0 later";
    r = mx_req(&m, "mxpref.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_DEFER);
    CHECK(strstr(r->req.rcpts[0].text, "451 4.3.0 later (in reply to RCPT TO command)") != NULL);
    CHECK_INT(m.mx2->sessions, 0);
    treq_free(r);
    tworld_free(&m.w);
}

TEST(smtpc_dns_ipv6_only)
{
    mxw_t m;
    mxw_init(&m, NULL);
    tsrv_t *six = tsrv_new_at(&m.w, "::1", m.port);
    if (!six->lis) {
        tworld_free(&m.w);
        return;   /* no IPv6 loopback here */
    }
    treq_t *r = mx_req(&m, "six.dns.test", NULL);
    treq_run(&m.w, r);
    REQUIRE(r->done);
    CHECK_INT(r->req.rcpts[0].status, SMTPC_SENT);
    CHECK_INT(six->transactions, 1);
    char relay[128];
    snprintf(relay, sizeof relay, "six.dns.test[::1]:%d", m.port);
    CHECK_STR(r->req.relay, relay);
    treq_free(r);
    tworld_free(&m.w);
}
