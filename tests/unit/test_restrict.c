/* Unit tests for src/policy/restrict (the restriction engine) and
 * src/policy/checks (host name syntax, DSN fix-up).  Policies are built
 * from config_load_text() with tables in a temporary directory; expected
 * replies are Postfix's (the .ref files in shared/testdata/postfix/smtpd). */
#include "harness.h"

#include "config/config.h"
#include "core/util.h"
#include "maps/maps.h"
#include "policy/restrict-private.h"
#include "policy/restrict.h"
#include "restrict_testlib.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define BASE_MAIN "myhostname = mx.example.test\nmydestination = example.test, localhost\nmynetworks = 127.0.0.0/8\n"

static bool rx_load(rx_t *x, const char *main_cf)
{
    return rx_load_base(x, BASE_MAIN, main_cf);
}

static pstate_t ps(const char *addr, const char *helo, const char *sender, const char *rcpt)
{
    pstate_t st;
    memset(&st, 0, sizeof st);
    st.client_addr = addr;
    st.client_name = "unknown";
    st.reverse_name = "unknown";
    st.helo = helo;
    st.sender = sender;
    st.recipient = rcpt;
    st.protocol = "ESMTP";
    return st;
}

static vstatus_t rx_eval(rx_t *x, pcmd_t cmd, const pstate_t *st)
{
    buf_reset(&x->trace);
    return policy_eval(x->pol, cmd, st, &x->v, &x->trace);
}

/* RCPT from addr with HELO, MAIL, RCPT given; returns the reply ("" for a permit). */
static const char *rx_rcpt(rx_t *x, const char *addr, const char *helo, const char *sender, const char *rcpt)
{
    pstate_t st = ps(addr, helo, sender, rcpt);
    rx_eval(x, PCMD_RCPT, &st);
    return buf_cstr(&x->v.reply);
}

#define REPLY(x, a, h, s, r) rx_rcpt((x), (a), (h), (s), (r))
#define ERR_HAS(x, s) CHECK(strstr(buf_cstr(&(x)->err), (s)) != NULL)
#define WARN_HAS(x, s) CHECK(strstr(buf_cstr(&(x)->v.warnings), (s)) != NULL)

/* ------------------------------------------------------------ syntax */

/* shared/testdata/postfix/util/valid_hostname.in/.ref: for each input,
 * whether valid_hostname and valid_hostaddr complain (a warning line
 * from either means "invalid").  -1: not judged by the reference. */
static const struct {
    const char *in;
    int hostname, hostaddr;
} vh_ref[] = {
    {"123456789012345678901234567890123456789012345678901234567890123", 0, 0},
    {"1234567890123456789012345678901234567890123456789012345678901234", 0, 0},
    {"a.123456789012345678901234567890123456789012345678901234567890123.b", 1, 0},
    {"a.1234567890123456789012345678901234567890123456789012345678901234.b", 0, 0},
    {"1.2.3.4", 0, 1},
    {"321.255.255.255", 0, 0},
    {"0.0.0.0", 0, 1},
    {"255.255.255.255", 0, 1},
    {"0.255.255.255", 0, 0},
    {"1.2.3.321", 0, 0},
    {"1.2.3", 0, 0},
    {"1.2.3.4.5", 0, 0},
    {"1..2.3.4", 0, 0},
    {".1.2.3.4", 0, 0},
    {"1.2.3.4.5.", 0, 0},
    {"1", 0, 0},
    {".", 0, 0},
    {"", 0, 0},
    {"321", 0, 0},
    {"f", 1, 0},
    {"f.2.3.4", 1, 0},
    {"1f.2.3.4", 1, 0},
    {"f1.2.3.4", 1, 0},
    {"1.2f.3.4", 1, 0},
    {"1.f2.3.4", 1, 0},
    {"1.2.3.4f", 1, 0},
    {"1.2.3.f4", 1, 0},
    {"1.2.3.f", 1, 0},
    {"-.a.b", 0, 0},
    {"a.-.b", 0, 0},
    {"a.b.-", 0, 0},
    {"-aa.b.b", 0, 0},
    {"aa-.b.b", 0, 0},
    {"a.-bb.b", 0, 0},
    {"a.bb-.b", 0, 0},
    {"a.b.-bb", 0, 0},
    {"a.b.bb-", 0, 0},
    {"a-a.b-b", 1, 0},
    {":", 0, 0},
    {"::", 0, 1},
    {":::", 0, 0},
    {"a::", 0, 1},
    {"::a", 0, 1},
    {"::1.2.3.4", 0, 1},
    {"a:a:a:a:a:1.2.3.4", 0, 1},
    {"a:a:a:a:a:a:1.2.3.4", 0, 1},
    {"a:a:a:a:a:a:a:1.2.3.4", 0, 0},
    {"a:a:a:a:a:a:1.2.3.", 0, 0},
    {"a:a:a:a:a:a:1.2.3", 0, 0},
    {"a:a:a:a:a:a:a:a", 0, 1},
    {"a:a:a:a:a:a:a:a:a", 0, 0},
    {"g:a:a:a:a:a:a:a", 0, 0},
    {"a::b", 0, 1},
    {":a::b", 0, 0},
    {"a::b:", 0, 0},
};

/* The reference's wildcard cases (valid_hostname with wildcards allowed). */
static const struct {
    const char *in;
    int ok;
} vh_wild[] = {
    {"*.foo.bar", 1}, {"*foo.bar", 0}, {"foo.*.bar", 0}, {"foo*bar", 0}, {"foo.bar*", 0}, {"*", 0},
};

TEST(restrict_valid_hostname_postfix_reference)
{
    for (size_t i = 0; i < ARRAY_LEN(vh_ref); i++) {
        bool h = rs_valid_hostname(vh_ref[i].in, false, false);
        bool a = rs_valid_hostaddr(vh_ref[i].in);
        if (h != (vh_ref[i].hostname == 1))
            harness_fail(__FILE__, __LINE__, "valid_hostname(\"%s\") == %d", vh_ref[i].in, h);
        if (a != (vh_ref[i].hostaddr == 1))
            harness_fail(__FILE__, __LINE__, "valid_hostaddr(\"%s\") == %d", vh_ref[i].in, a);
    }
    for (size_t i = 0; i < ARRAY_LEN(vh_wild); i++) {
        if (rs_valid_hostname(vh_wild[i].in, true, false) != (vh_wild[i].ok == 1))
            harness_fail(__FILE__, __LINE__, "valid_hostname(\"%s\", wildcard)", vh_wild[i].in);
        CHECK(!rs_valid_hostname(vh_wild[i].in, false, false));
    }
    /* 255 bytes in all at most; UTF-8 only when asked. */
    char longname[300];
    memset(longname, 'a', sizeof longname);
    for (int i = 60; i < 290; i += 61)
        longname[i] = '.';
    longname[256] = 0;
    CHECK(!rs_valid_hostname(longname, false, false));
    longname[255] = 0;
    CHECK(rs_valid_hostname(longname, false, false));
    CHECK(!rs_valid_hostname("b\xc3\xbc.example", false, false));
    CHECK(rs_valid_hostname("b\xc3\xbc.example", false, true));
    CHECK(rs_valid_hostname("under_score.example", false, false));
}

TEST(restrict_valid_mailhost_addr)
{
    CHECK(rs_valid_mailhost_addr("1.2.3.4"));
    CHECK(rs_valid_mailhost_addr("IPv6:::1"));
    CHECK(rs_valid_mailhost_addr("ipv6:2001:db8::1"));
    CHECK(!rs_valid_mailhost_addr("::1"));          /* IPv6 needs its tag */
    CHECK(!rs_valid_mailhost_addr("IPv6:::::"));
    CHECK(!rs_valid_mailhost_addr("1.2.3"));
    CHECK(!rs_valid_mailhost_addr(""));
}

TEST(restrict_dsn_fix_per_class)
{
    /* shared/testdata/postfix/smtpd/smtpd_check_dsn.ref */
    static const struct {
        const char *in, *cls, *out;
    } t[] = {
        {"4.1.1", "Client host", "4.0.0"},       {"4.1.8", "Helo command", "4.0.0"},
        {"4.4.0", "Client host", "4.4.0"},       {"4.1.1", "Sender address", "4.1.7"},
        {"4.1.2", "Sender address", "4.1.8"},    {"4.1.3", "Sender address", "4.1.7"},
        {"4.1.4", "Sender address", "4.1.7"},    {"4.1.5", "Sender address", "4.1.0"},
        {"4.1.6", "Sender address", "4.1.7"},    {"4.1.7", "Sender address", "4.1.7"},
        {"4.1.8", "Sender address", "4.1.8"},    {"4.1.1", "Recipient address", "4.1.1"},
        {"4.1.7", "Recipient address", "4.1.3"}, {"4.1.8", "Recipient address", "4.1.2"},
        {"5.7.1", "Recipient address", "5.7.1"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        char out[12];
        rs_dsn_fix(t[i].in, t[i].cls, out, sizeof out);
        CHECK_STR(out, t[i].out);
    }
}

/* ------------------------------------------------------------ relay */

TEST(restrict_default_relay_restrictions)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, ""));
    /* Postfix's default smtpd_relay_restrictions: outsiders get a 4xx. */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@other.test"),
              "454 4.7.1 <u@other.test>: Relay access denied");
    CHECK_INT(x.v.status, V_DEFER);
    CHECK_INT(x.v.code, 454);
    CHECK_STR(x.v.rule, "relay:defer_unauth_destination");
    CHECK(x.v.origin.file == NULL);
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@Example.TEST."), "");
    CHECK_INT(x.v.status, V_PERMIT);
    CHECK_STR(REPLY(&x, "127.0.0.1", "c.test", "a@b.test", "u@other.test"), "");   /* permit_mynetworks */
    /* Routed local parts are not ours to accept for outsiders. */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u%other.test@example.test"),
              "454 4.7.1 <u%other.test@example.test>: Relay access denied");
    /* permit_sasl_authenticated */
    pstate_t st = ps("192.0.2.1", "c.test", "a@b.test", "u@other.test");
    st.sasl_user = "alice";
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_PERMIT);
    CHECK(strstr(buf_cstr(&x.trace), "permit_sasl_authenticated -> OK") != NULL);
    rx_done(&x);
}

TEST(restrict_unauth_destination_variants)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_relay_restrictions =\n"
                        "smtpd_recipient_restrictions = permit_auth_destination, reject\n"
                        "relay_domains_reject_code = 550\n"));
    /* shared/testdata/postfix/smtpd/smtpd_check.ref2 */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "user@foo.org"),
              "554 5.7.1 <user@foo.org>: Recipient address rejected: Access denied");
    CHECK_STR(x.v.rule, "recipient:reject");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "user@localhost"), "");
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = reject_unauth_destination, permit\n"
                        "relay_domains_reject_code = 550\n"));
    CHECK_STR(REPLY(&x, "127.0.0.1", "c.test", "a@b.test", "user@foo.org"),
              "550 5.7.1 <user@foo.org>: Relay access denied");
    CHECK_STR(x.v.rule, "recipient:reject_unauth_destination");
    rx_done(&x);
}

TEST(restrict_open_relay_guard)
{
    rx_t x;
    rx_init(&x);
    CHECK(!rx_load(&x, "smtpd_relay_restrictions = permit_mynetworks, permit\n"
                       "smtpd_recipient_restrictions = permit\n"));
    ERR_HAS(&x, "<text>/main.cf: neither smtpd_relay_restrictions nor smtpd_recipient_restrictions ends "
                "unauthorized destinations (reject_unauth_destination): moat refuses to run as an open relay\n");
    /* After warn_if_reject it does not count; inside a class it does. */
    CHECK(!rx_load(&x, "smtpd_relay_restrictions = warn_if_reject reject_unauth_destination\n"));
    CHECK(rx_load(&x, "smtpd_restriction_classes = guard\nguard = reject_unauth_destination\n"
                      "smtpd_relay_restrictions = permit_mynetworks, guard\n"));
    CHECK(rx_load(&x, "smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks, reject\n"));
    rx_done(&x);
}

/* ------------------------------------------------------------ access tables */

/* From shared/testdata/postfix/smtpd/smtpd_check_access. */
static const char check_access[] =
    "bad.domain\t\t554 match bad.domain\n"
    "friend.bad.domain\tOK\n"
    "bad-sender@\t\t554 match bad-sender@\n"
    "bad-sender@good.domain\tOK\n"
    "131.155.210\t\t554 match 131.155.210\n"
    "131.155.210.17\t\tOK\n"
    "131.155.210.19\t\tREJECT\n"
    "reject@this.address\t554 match reject@this.address\n"
    "dunno.com\t\tdunno\n"
    "foo.dunno.com\t\treject\n"
    "44.33.22\t\tdunno\n"
    "44.33.22.11\t\tREJECT\n"
    "44.33\t\t\tREJECT\n"
    "reject@dunno.domain\tREJECT\n"
    "ok@dunno.domain\t\tOK\n"
    "dunno.domain\t\tDUNNO\n"
    "reject@reject.domain\tREJECT\n"
    "ok@reject.domain\tOK\n"
    "reject.domain\t\tREJECT\n"
    "<>\t\t\t550 Go away postmaster\n"
    "rejecttext@bad.domain\treject text\n"
    "spike.porcupine.org\treject ns or mx server spike.porcupine.org\n";

TEST(restrict_check_client_access_postfix_reference)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "access", check_access);
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\n"
                        "smtpd_client_restrictions = permit_mynetworks, texthash:%D/access\n"));
    static const struct {
        const char *name, *addr, *reply;
    } t[] = {
        {"random.bad.domain", "123.123.123.123",
         "554 5.7.1 <random.bad.domain[123.123.123.123]>: Client host rejected: match bad.domain"},
        {"friend.bad.domain", "123.123.123.123", ""},
        {"bad.domain", "123.123.123.123", "554 5.7.1 <bad.domain[123.123.123.123]>: Client host rejected: match bad.domain"},
        {"wzv.win.tue.nl", "131.155.210.17", ""},
        {"aa.win.tue.nl", "131.155.210.18",
         "554 5.7.1 <aa.win.tue.nl[131.155.210.18]>: Client host rejected: match 131.155.210"},
        {"unknown", "127.0.0.1", ""},
        /* smtpd_acl.ref */
        {"foo.dunno.com", "131.155.210.17", "554 5.7.1 <foo.dunno.com[131.155.210.17]>: Client host rejected: Access denied"},
        {"bar.dunno.com", "131.155.210.19", ""},
        {"bar.duno.com", "131.155.210.19", "554 5.7.1 <bar.duno.com[131.155.210.19]>: Client host rejected: Access denied"},
        {"bar.duno.com", "44.33.22.11", "554 5.7.1 <bar.duno.com[44.33.22.11]>: Client host rejected: Access denied"},
        {"bar.duno.com", "44.33.22.55", ""},
        {"bar.duno.com", "44.33.44.33", "554 5.7.1 <bar.duno.com[44.33.44.33]>: Client host rejected: Access denied"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        pstate_t st = ps(t[i].addr, NULL, NULL, NULL);
        st.client_name = t[i].name;
        rx_eval(&x, PCMD_CONNECT, &st);
        CHECK_STR(buf_cstr(&x.v.reply), t[i].reply);
    }
    /* The table line that decided. */
    pstate_t st = ps("123.123.123.123", NULL, NULL, NULL);
    st.client_name = "bad.domain";
    rx_eval(&x, PCMD_CONNECT, &st);
    CHECK(strncmp(x.v.rule, "client:texthash:", 16) == 0);
    REQUIRE(x.v.origin.file != NULL);
    CHECK(strstr(x.v.origin.file, "/access") != NULL);
    CHECK_INT(x.v.origin.line, 1);
    rx_done(&x);
}

TEST(restrict_check_sender_access_postfix_reference)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "access", check_access);
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\n"
                        "smtpd_sender_restrictions = check_sender_access texthash:%D/access\n"));
    static const struct {
        const char *sender, *reply;
    } t[] = {
        {"bad-sender@any.domain", "554 5.7.1 <bad-sender@any.domain>: Sender address rejected: match bad-sender@"},
        {"bad-sender@good.domain", ""},
        {"reject@this.address", "554 5.7.1 <reject@this.address>: Sender address rejected: match reject@this.address"},
        {"Reject@this.address", "554 5.7.1 <Reject@this.address>: Sender address rejected: match reject@this.address"},
        {"foo@bad.domain", "554 5.7.1 <foo@bad.domain>: Sender address rejected: match bad.domain"},
        {"foo@Bad.domain", "554 5.7.1 <foo@Bad.domain>: Sender address rejected: match bad.domain"},
        {"foo@random.bad.domain", "554 5.7.1 <foo@random.bad.domain>: Sender address rejected: match bad.domain"},
        {"foo@friend.bad.domain", ""},
        {"reject@dunno.domain", "554 5.7.1 <reject@dunno.domain>: Sender address rejected: Access denied"},
        {"ok@dunno.domain", ""},
        {"anyone@dunno.domain", ""},
        {"anyone@reject.domain", "554 5.7.1 <anyone@reject.domain>: Sender address rejected: Access denied"},
        {"ok@reject.domain", ""},
        {"", "550 5.7.1 <>: Sender address rejected: Go away postmaster"},
        {"rejecttext@bad.domain", "554 5.7.1 <rejecttext@bad.domain>: Sender address rejected: text"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        pstate_t st = ps("192.0.2.1", "c.test", t[i].sender, NULL);
        rx_eval(&x, PCMD_MAIL, &st);
        CHECK_STR(buf_cstr(&x.v.reply), t[i].reply);
    }
    /* smtpd_null_access_lookup_key */
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\nsmtpd_null_access_lookup_key = <nobody>\n"
                        "smtpd_sender_restrictions = check_sender_access inline:{<nobody>=REJECT}\n"));
    pstate_t st = ps("192.0.2.1", "c.test", "", NULL);
    rx_eval(&x, PCMD_MAIL, &st);
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 <>: Sender address rejected: Access denied");
    rx_done(&x);
}

TEST(restrict_check_helo_and_recipient_access)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "access", check_access);
    REQUIRE(rx_load(&x, "recipient_delimiter = +\nmydestination = example.test, dunno.domain\n"
                        "smtpd_helo_restrictions = check_helo_access texthash:%D/access\n"
                        "smtpd_recipient_restrictions = texthash:%D/access, reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "random.bad.domain", "a@b.test", "u@example.test"),
              "554 5.7.1 <random.bad.domain>: Helo command rejected: match bad.domain");
    CHECK_STR(REPLY(&x, "192.0.2.1", "friend.bad.domain", "a@b.test", "u@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "foo.dunno.com", "a@b.test", "u@example.test"),
              "554 5.7.1 <foo.dunno.com>: Helo command rejected: Access denied");
    /* A bare table in the recipient list is check_recipient_access; extensions go. */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "reject+ext@dunno.domain"),
              "554 5.7.1 <reject+ext@dunno.domain>: Recipient address rejected: Access denied");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "ok+ext@dunno.domain"), "");
    /* recipient restrictions run before relay restrictions (Postfix before
     * compatibility_level 3.6), unless asked otherwise */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "reject@this.address"),
              "554 5.7.1 <reject@this.address>: Recipient address rejected: match reject@this.address");
    CHECK(strncmp(x.v.rule, "recipient:texthash:", 19) == 0);
    REQUIRE(rx_load(&x, "smtpd_relay_before_recipient_restrictions = yes\n"
                        "smtpd_recipient_restrictions = texthash:%D/access, reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "reject@this.address"),
              "454 4.7.1 <reject@this.address>: Relay access denied");
    CHECK_STR(x.v.rule, "relay:defer_unauth_destination");
    rx_done(&x);
}

TEST(restrict_parent_domain_matches_subdomains)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "parent_domain_matches_subdomains = relay_domains\n"
                        "smtpd_sender_restrictions = check_sender_access inline:{ {.bad.test=REJECT}, "
                        "{bad.test=REJECT whole} }\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@x.bad.test", "u@example.test"),
              "554 5.7.1 <a@x.bad.test>: Sender address rejected: Access denied");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@bad.test", "u@example.test"),
              "554 5.7.1 <a@bad.test>: Sender address rejected: whole");
    rx_done(&x);
}

TEST(restrict_pattern_tables_see_the_full_key)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "re", "/^test$/ REJECT partial key matched\n/^evil@/ REJECT evil\n");
    rx_file(&x, "nets", "192.0.2.0/24 REJECT documentation net\n");
    REQUIRE(rx_load(&x, "smtpd_sender_restrictions = check_sender_access regexp:%D/re\n"
                        "smtpd_client_restrictions = check_client_access cidr:%D/nets\n"));
    CHECK_STR(REPLY(&x, "198.51.100.1", "c.test", "a@b.test", "u@example.test"), "");
    CHECK_STR(REPLY(&x, "198.51.100.1", "c.test", "evil@b.test", "u@example.test"),
              "554 5.7.1 <evil@b.test>: Sender address rejected: evil");
    CHECK_STR(REPLY(&x, "192.0.2.9", "c.test", "a@b.test", "u@example.test"),
              "554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: documentation net");
    rx_done(&x);
}

/* ------------------------------------------------------------ evaluation */

TEST(restrict_permit_ends_only_its_class)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = check_client_access inline:{192.0.2.1=OK}, reject\n"
                        "smtpd_sender_restrictions = check_sender_access inline:{spam.test=REJECT}\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@spam.test", "u@example.test"),
              "554 5.7.1 <a@spam.test>: Sender address rejected: Access denied");
    CHECK_STR(x.v.rule, "sender:check_sender_access inline:{spam.test=REJECT}");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@ok.test", "u@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.2", "c.test", "a@ok.test", "u@example.test"),
              "554 5.7.1 <unknown[192.0.2.2]>: Client host rejected: Access denied");
    CHECK_STR(x.v.rule, "client:reject");
    /* DUNNO continues with the next step. */
    REQUIRE(rx_load(&x, "smtpd_sender_restrictions = check_sender_access inline:{a@x.test=DUNNO}, "
                        "check_sender_access inline:{x.test=REJECT}\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@x.test", "u@example.test"),
              "554 5.7.1 <a@x.test>: Sender address rejected: Access denied");
    rx_done(&x);
}

TEST(restrict_delay_reject)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = reject\n"
                        "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n"));
    pstate_t st = ps("192.0.2.1", NULL, NULL, NULL);
    /* yes (the default): nothing is decided before RCPT */
    CHECK_INT(rx_eval(&x, PCMD_CONNECT, &st), V_PERMIT);
    st.helo = "nodots";
    CHECK_INT(rx_eval(&x, PCMD_HELO, &st), V_PERMIT);
    st.sender = "a@b.test";
    CHECK_INT(rx_eval(&x, PCMD_MAIL, &st), V_PERMIT);
    st.recipient = "u@example.test";
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied");
    /* no: each class at its own command */
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\n"
                        "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n"
                        "smtpd_sender_restrictions = reject_non_fqdn_sender\n"));
    CHECK(!policy_delay_reject(x.pol));
    st = ps("192.0.2.1", "nodots", NULL, NULL);
    CHECK_INT(rx_eval(&x, PCMD_HELO, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname");
    st.helo = "c.test";
    st.sender = "a@nodots";
    CHECK_INT(rx_eval(&x, PCMD_MAIL, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "504 5.5.2 <a@nodots>: Sender address rejected: need fully-qualified address");
    st.helo = "nodots";
    st.sender = "a@b.test";
    st.recipient = "u@example.test";
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_PERMIT);   /* not again at RCPT */
    /* A defer_if_permit at CONNECT is answered at RCPT: the caller keeps it. */
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\nsmtpd_client_restrictions = defer_if_permit\n"));
    st = ps("192.0.2.1", NULL, NULL, NULL);
    CHECK_INT(rx_eval(&x, PCMD_CONNECT, &st), V_PERMIT);
    CHECK_STR(buf_cstr(&x.v.postponed),
              "450 4.7.0 <unknown[192.0.2.1]>: Client host rejected: defer_if_permit requested");
    rx_done(&x);
}

TEST(restrict_defer_if_permit)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = check_client_access inline:{ {192.0.2.3=DEFER_IF_PERMIT try later} }\n"
                        "smtpd_recipient_restrictions = check_recipient_access inline:{no@example.test=REJECT}, "
                        "reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.3", "c.test", "a@b.test", "u@example.test"),
              "450 4.7.1 <unknown[192.0.2.3]>: Client host rejected: try later");
    CHECK_INT(x.v.status, V_DEFER);
    CHECK_STR(x.v.rule, "client:check_client_access inline:{ {192.0.2.3=DEFER_IF_PERMIT try later} }");
    /* a later reject wins */
    CHECK_STR(REPLY(&x, "192.0.2.3", "c.test", "a@b.test", "no@example.test"),
              "554 5.7.1 <no@example.test>: Recipient address rejected: Access denied");
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "a@b.test", "u@example.test"), "");
    /* the restriction form, and the first reason wins */
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = defer_if_permit, "
                        "check_recipient_access inline:{u@example.test=DEFER_IF_PERMIT}, reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "a@b.test", "u@example.test"),
              "450 4.7.0 <u@example.test>: Recipient address rejected: defer_if_permit requested");
    rx_done(&x);
}

TEST(restrict_defer_if_reject)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = check_recipient_access inline:{ {a@example.test=DEFER_IF_REJECT maybe} }, "
                        "check_recipient_access inline:{a@example.test=REJECT, b@example.test=REJECT}, reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "s@b.test", "a@example.test"),
              "450 4.7.1 <a@example.test>: Recipient address rejected: maybe");
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "s@b.test", "b@example.test"),
              "554 5.7.1 <b@example.test>: Recipient address rejected: Access denied");
    /* it spans relay and recipient (one stage in Postfix) ... */
    REQUIRE(rx_load(&x, "smtpd_relay_before_recipient_restrictions = yes\n"
                        "smtpd_relay_restrictions = defer_if_reject, permit_mynetworks, reject_unauth_destination\n"
                        "smtpd_recipient_restrictions = check_recipient_access inline:{a@example.test=REJECT}\n"));
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "s@b.test", "a@example.test"),
              "450 4.7.0 <a@example.test>: Recipient address rejected: defer_if_reject requested");
    /* ... but not a client-class one into the recipient class: Postfix
     * starts each stage afresh (SMTPD_CHECK_RESET). */
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = defer_if_reject\n"
                        "smtpd_recipient_restrictions = check_recipient_access inline:{a@example.test=REJECT}\n"));
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "s@b.test", "a@example.test"),
              "554 5.7.1 <a@example.test>: Recipient address rejected: Access denied");
    /* a 4xx is not turned into anything */
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = defer_if_reject, defer, reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.4", "c.test", "s@b.test", "a@example.test"),
              "450 4.3.2 <a@example.test>: Recipient address rejected: Try again later");
    rx_done(&x);
}

TEST(restrict_warn_if_reject)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_helo_restrictions = warn_if_reject reject_non_fqdn_helo_hostname, "
                        "reject_invalid_helo_hostname\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "nodots", "a@b.test", "u@example.test"), "");
    WARN_HAS(&x, "reject_warning: RCPT from unknown[192.0.2.1]: 504 5.5.2 <nodots>: Helo command rejected: "
                 "need fully-qualified hostname; from=<a@b.test> to=<u@example.test> proto=ESMTP helo=<nodots>\n");
    /* only the next restriction: the one after it rejects */
    CHECK_STR(REPLY(&x, "192.0.2.1", "bad!name", "a@b.test", "u@example.test"),
              "501 5.5.2 <bad!name>: Helo command rejected: Invalid name");
    /* it covers a whole class run as that next restriction */
    REQUIRE(rx_load(&x, "smtpd_restriction_classes = strict\nstrict = reject_non_fqdn_sender, reject\n"
                        "smtpd_sender_restrictions = warn_if_reject strict, reject_non_fqdn_sender\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@example.test"), "");
    WARN_HAS(&x, "reject_warning: RCPT from unknown[192.0.2.1]: 554 5.7.1 <a@b.test>: Sender address rejected: "
                 "Access denied");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@nodots", "u@example.test"),
              "504 5.5.2 <a@nodots>: Sender address rejected: need fully-qualified address");
    rx_done(&x);
}

TEST(restrict_reply_codes)
{
    rx_t x;
    rx_init(&x);
    /* smtpd_check.ref: "defer_code 444" */
    REQUIRE(rx_load(&x, "defer_code = 444\nsmtpd_delay_reject = no\nsmtpd_helo_restrictions = defer\n"));
    pstate_t st = ps("131.155.210.17", "foobar", NULL, NULL);
    CHECK_INT(rx_eval(&x, PCMD_HELO, &st), V_DEFER);
    CHECK_STR(buf_cstr(&x.v.reply), "444 4.3.2 <foobar>: Helo command rejected: Try again later");
    CHECK_INT(x.v.code, 444);
    REQUIRE(rx_load(&x, "reject_code = 550\naccess_map_reject_code = 450\naccess_map_defer_code = 451\n"
                        "non_fqdn_reject_code = 550\nsmtpd_relay_restrictions =\n"
                        "smtpd_recipient_restrictions = check_recipient_access inline:{r@example.test=REJECT, "
                        "d@example.test=DEFER, x@example.test=reject}, reject_non_fqdn_recipient, "
                        "reject_unauth_destination\n"));
    /* the enhanced code's class follows the reply code */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "r@example.test"),
              "450 4.7.1 <r@example.test>: Recipient address rejected: Access denied");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "d@example.test"),
              "451 4.7.1 <d@example.test>: Recipient address rejected: Access denied");
    /* table results are actions, whatever their case: "reject" is REJECT */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "x@example.test"),
              "450 4.7.1 <x@example.test>: Recipient address rejected: Access denied");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "x@nodots"),
              "550 5.5.2 <x@nodots>: Recipient address rejected: need fully-qualified address");
    rx_done(&x);
}

TEST(restrict_table_results_and_dsn)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "codes", "a@example.test 550 5.1.1 no such user here\n"
                         "b@example.test 452 too busy\n"
                         "c@example.test REJECT 5.1.7 mapped\n"
                         "d@example.test DEFER 4.2.2 full\n"
                         "e@example.test 12345\n"
                         "f@example.test REJECT 4.1.1 wrong class\n"
                         "g@example.test 250 no\n"
                         "user@4.1.1_dsn reject 4.1.1 reject\n");
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = check_recipient_access texthash:%D/codes, "
                        "reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "a@example.test"),
              "550 5.1.1 <a@example.test>: Recipient address rejected: no such user here");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "b@example.test"),
              "452 4.7.1 <b@example.test>: Recipient address rejected: too busy");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "c@example.test"),
              "554 5.1.3 <c@example.test>: Recipient address rejected: mapped");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "d@example.test"),
              "450 4.2.2 <d@example.test>: Recipient address rejected: full");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "e@example.test"), "");   /* all-numeric: OK */
    /* malformed results fail closed, with a warning naming the entry */
    /* the enhanced code's class follows the action (Postfix) */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "f@example.test"),
              "554 5.1.1 <f@example.test>: Recipient address rejected: wrong class");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "user@4.1.1_dsn"),
              "554 5.1.1 <user@4.1.1_dsn>: Recipient address rejected: reject");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "s@b.test", "g@example.test"), "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "warning: access table texthash:");
    WARN_HAS(&x, "entry \"g@example.test\" has a bad result \"250 no\"");
    rx_done(&x);
}

TEST(restrict_actions)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "act", "discard@x.test DISCARD\n"
                       "discardtext@x.test DISCARD text\n"
                       "prepend@x.test PREPEND X-Seen: by moat\n"
                       "warn@x.test WARN looks odd\n"
                       "info@x.test INFO just so\n"
                       "hold@x.test HOLD\n"
                       "redirect@x.test REDIRECT a@b.test\n"
                       "filter@x.test FILTER smtp:[127.0.0.1]:10025\n"
                       "bcc@x.test BCC a@b.test\n"
                       "ok@x.test OK\n");
    REQUIRE(rx_load(&x, "smtpd_sender_restrictions = check_sender_access texthash:%D/act, reject\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "discard@x.test", "u@example.test"), "");
    CHECK(x.v.discard);
    WARN_HAS(&x, "discard: RCPT from unknown[192.0.2.1]: <discard@x.test>: Sender address triggers DISCARD action;");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "discardtext@x.test", "u@example.test"), "");
    WARN_HAS(&x, "<discardtext@x.test>: Sender address text;");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "prepend@x.test", "u@example.test"),
              "554 5.7.1 <prepend@x.test>: Sender address rejected: Access denied");   /* PREPEND goes on */
    CHECK_STR(buf_cstr(&x.v.prepend), "X-Seen: by moat\n");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "warn@x.test", "u@example.test"),
              "554 5.7.1 <warn@x.test>: Sender address rejected: Access denied");
    WARN_HAS(&x, "warn: RCPT from unknown[192.0.2.1]: looks odd; from=<warn@x.test>");
    REPLY(&x, "192.0.2.1", "c.test", "info@x.test", "u@example.test");
    WARN_HAS(&x, "info: RCPT from unknown[192.0.2.1]: just so;");
    /* HOLD, REDIRECT, FILTER, BCC: remembered, and the list goes on (here to its reject). */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "hold@x.test", "u@example.test"),
              "554 5.7.1 <hold@x.test>: Sender address rejected: Access denied");
    CHECK(x.v.hold);
    WARN_HAS(&x, "hold: RCPT from unknown[192.0.2.1]: <hold@x.test>: Sender address triggers HOLD action; "
                 "from=<hold@x.test> to=<u@example.test>");
    REPLY(&x, "192.0.2.1", "c.test", "redirect@x.test", "u@example.test");
    CHECK_STR(buf_cstr(&x.v.redirect), "a@b.test");
    WARN_HAS(&x, "redirect: RCPT from unknown[192.0.2.1]: <redirect@x.test>: Sender address triggers REDIRECT a@b.test;");
    REPLY(&x, "192.0.2.1", "c.test", "filter@x.test", "u@example.test");
    CHECK_STR(buf_cstr(&x.v.filter), "smtp:[127.0.0.1]:10025");
    WARN_HAS(&x, "filter: RCPT from unknown[192.0.2.1]: <filter@x.test>: Sender address triggers FILTER "
                 "smtp:[127.0.0.1]:10025;");
    REPLY(&x, "192.0.2.1", "c.test", "bcc@x.test", "u@example.test");
    CHECK_STR(buf_cstr(&x.v.bcc), "a@b.test\n");
    WARN_HAS(&x, "bcc: RCPT from unknown[192.0.2.1]: <bcc@x.test>: Sender address triggers BCC a@b.test;");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "ok@x.test", "u@example.test"), "");
    CHECK(!x.v.discard);
    CHECK_STR(buf_cstr(&x.v.warnings), "");
    /* With smtpd_delay_reject = no, message actions at CONNECT are skipped (Postfix). */
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\n"
                        "smtpd_client_restrictions = check_client_access inline:{192.0.2.1=HOLD}\n"));
    pstate_t st = ps("192.0.2.1", NULL, NULL, NULL);
    CHECK_INT(rx_eval(&x, PCMD_CONNECT, &st), V_PERMIT);
    WARN_HAS(&x, "action HOLD is always skipped");
    /* PREPEND after the message is too late */
    REQUIRE(rx_load(&x, "smtpd_end_of_data_restrictions = check_sender_access inline:{ {a@b.test=PREPEND X-A: 1} }\n"));
    st = ps("192.0.2.1", "c.test", "a@b.test", NULL);
    st.nrcpt = 1;
    CHECK_INT(rx_eval(&x, PCMD_EOD, &st), V_PERMIT);
    CHECK_STR(buf_cstr(&x.v.prepend), "");
    WARN_HAS(&x, "action PREPEND must be used before smtpd_end_of_data_restrictions");
    /* REDIRECT/BCC without user@domain: fail closed (Postfix ignores the entry). */
    REQUIRE(rx_load(&x, "smtpd_sender_restrictions = check_sender_access inline:{ {a@b.test=REDIRECT nobody} }\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@example.test"), "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "requires user@domain target");
    /* Actions at end-of-data are kept (only PREPEND is too late there). */
    REQUIRE(rx_load(&x, "smtpd_end_of_data_restrictions = check_sender_access inline:{ {a@b.test=HOLD} }\n"));
    st = ps("192.0.2.1", "c.test", "a@b.test", NULL);
    st.nrcpt = 1;
    CHECK_INT(rx_eval(&x, PCMD_EOD, &st), V_PERMIT);
    CHECK(x.v.hold);
    WARN_HAS(&x, "hold: END-OF-MESSAGE from unknown[192.0.2.1]: <a@b.test>: Sender address triggers HOLD action;");
    rx_done(&x);
}

TEST(restrict_classes_and_recursion)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "rcpt", "strict@example.test strict\n"
                        "open@example.test permissive\n"
                        "loop@example.test looping\n"
                        "both@example.test reject_non_fqdn_sender reject\n"
                        "bogus@example.test no_such_restriction\n"
                        "tbl@example.test check_sender_access hash:/etc/x\n");
    rx_file(&x, "loop", "loop@example.test looping\n");
    CHECK(rx_load(&x, "smtpd_restriction_classes = strict, permissive, looping\n"
                      "strict = reject_non_fqdn_sender, check_sender_access inline:{spam.test=REJECT}\n"
                      "permissive = permit\n"
                      "looping = check_recipient_access texthash:%D/loop\n"
                      "smtpd_recipient_restrictions = check_recipient_access texthash:%D/rcpt, "
                      "check_sender_access inline:{ {spam.test=REJECT spam} }, reject_unauth_destination\n"));
    REQUIRE(x.pol != NULL);
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@spam.test", "strict@example.test"),
              "554 5.7.1 <a@spam.test>: Sender address rejected: Access denied");
    CHECK_STR(x.v.rule, "recipient:check_sender_access inline:{spam.test=REJECT}");
    CHECK(x.v.origin.file == NULL);   /* inline tables have no lines */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@nodots", "strict@example.test"),
              "504 5.5.2 <a@nodots>: Sender address rejected: need fully-qualified address");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@good.test", "strict@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@spam.test", "open@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@spam.test", "other@example.test"),
              "554 5.7.1 <a@spam.test>: Sender address rejected: spam");
    /* a list as a result; a plain reject there uses the table's reply class */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@good.test", "both@example.test"),
              "554 5.7.1 <both@example.test>: Recipient address rejected: Access denied");
    CHECK_STR(x.v.rule, "recipient:reject");
    REQUIRE(x.v.origin.file != NULL);
    CHECK_INT(x.v.origin.line, 4);
    /* a result that loops: bounded, then 451 */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@good.test", "loop@example.test"), "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "causes unreasonable recursion");
    /* results that do not compile fail closed */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@good.test", "bogus@example.test"),
              "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "no_such_restriction");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@good.test", "tbl@example.test"),
              "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "a table inside an access table result");
    /* twice: the cached compilation gives the same answer */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@good.test", "bogus@example.test"),
              "451 4.3.5 Server configuration error");
    rx_done(&x);
}

TEST(restrict_class_errors)
{
    rx_t x;
    rx_init(&x);
    CHECK(!rx_load(&x, "smtpd_restriction_classes = nodef\n"));
    ERR_HAS(&x, "<text>/main.cf:4: restriction class \"nodef\" needs a definition");
    CHECK(!rx_load(&x, "smtpd_restriction_classes = a, b\na = permit_mynetworks, b\nb = a\n"
                       "smtpd_recipient_restrictions = a\n"));
    ERR_HAS(&x, "includes itself (a -> b -> a)");
    CHECK(!rx_load(&x, "smtpd_restriction_classes = c\nc = frobnicate\n"));
    ERR_HAS(&x, "<text>/main.cf:5: unknown restriction \"frobnicate\"\n");
    /* class names are known parameters: no "unused parameter" warning */
    buf_t warn = BUF_INIT, err = BUF_INIT;
    config_t *cfg = config_load_text("smtpd_restriction_classes = my_class\nmy_class = reject\n"
                                     "smtpd_recipient_restrictions = my_class\n", NULL, &err, &warn);
    CHECK(cfg != NULL);
    CHECK(strstr(buf_cstr(&warn), "my_class") == NULL);
    if (cfg) {
        const char *file;
        int line;
        CHECK_STR(param_user(config_main(cfg), "my_class", &file, &line), "reject");
        CHECK_INT(line, 2);
        CHECK(param_user(config_main(cfg), "other", NULL, NULL) == NULL);
    }
    config_free(&cfg);
    /* a filtering-looking name is fine too once it is a class */
    cfg = config_load_text("smtpd_restriction_classes = smtpd_strict\nsmtpd_strict = reject\n", NULL, &err, &warn);
    CHECK(cfg != NULL);
    config_free(&cfg);
    buf_free(&warn);
    buf_free(&err);
    rx_done(&x);
}

TEST(restrict_compile_errors_name_file_and_line)
{
    rx_t x;
    rx_init(&x);
    CHECK(!rx_load(&x, "smtpd_client_restrictions = permit_mynetworks, frob\n"));
    CHECK_STR(buf_cstr(&x.err), "<text>/main.cf:4: unknown restriction \"frob\"\n");
    CHECK(!rx_load(&x, "smtpd_client_restrictions = reject_rbl_client zen.example=127.0.0.x\n"));
    ERR_HAS(&x, "<text>/main.cf:4: reject_rbl_client zen.example=127.0.0.x: ");
    CHECK(!rx_load(&x, "smtpd_client_restrictions = reject_dnsbl_score\n"));
    ERR_HAS(&x, "<text>/main.cf:4: reject_dnsbl_score: dnsbl_sites is empty");
    CHECK(!rx_load(&x, "reject_tempfail_action = dunno\n"));
    ERR_HAS(&x, "reject_tempfail_action: \"dunno\": specify defer_if_permit or defer");
    CHECK(!rx_load(&x, "smtpd_sender_restrictions = check_sender_access\n"));
    ERR_HAS(&x, "check_sender_access: missing table (type:name)");
    CHECK(!rx_load(&x, "smtpd_sender_restrictions = check_sender_access reject\n"));
    ERR_HAS(&x, "check_sender_access: bad argument \"reject\": need type:table");
    CHECK(!rx_load(&x, "smtpd_sender_restrictions = check_sender_access texthash:%D/missing\n"));
    ERR_HAS(&x, "<text>/main.cf:4: ");
    ERR_HAS(&x, "missing");
    CHECK(!rx_load(&x, "smtpd_data_restrictions = texthash:%D/x\n"));
    ERR_HAS(&x, "a table in smtpd_data_restrictions needs one of check_client_access");
    CHECK(!rx_load(&x, "smtpd_helo_restrictions = sleep x\n"));
    ERR_HAS(&x, "sleep: bad argument \"x\"");
    CHECK(!rx_load(&x, "mynetworks = hash:/etc/x\n"));
    ERR_HAS(&x, "mynetworks");
    /* several problems: all reported */
    CHECK(!rx_load(&x, "smtpd_helo_restrictions = frob1\nsmtpd_sender_restrictions = frob2\n"));
    ERR_HAS(&x, "<text>/main.cf:4: unknown restriction \"frob1\"\n");
    ERR_HAS(&x, "<text>/main.cf:5: unknown restriction \"frob2\"\n");
    rx_done(&x);
}

TEST(restrict_tempfail_is_451_never_permit)
{
    rx_t x;
    rx_init(&x);
    char path[300];
    rx_file(&x, "rcpts", "blocked@example.test REJECT\n");
    snprintf(path, sizeof path, "%s/rcpts", x.dir);
    buf_t err = BUF_INIT;
    REQUIRE(map_build(path, &err) == 0);
    buf_free(&err);
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = warn_if_reject check_recipient_access hash:%D/rcpts, "
                        "reject_unauth_destination\n"));
    CHECK(!policy_tables_changed(x.pol));
    /* Rewrite the compiled table in place: every lookup must fail. */
    snprintf(path, sizeof path, "%s/rcpts.lmdb", x.dir);
    FILE *fp = fopen(path, "r+");
    REQUIRE(fp != NULL);
    fputs("garbage", fp);
    fclose(fp);
    truncate(path, 7);
    CHECK(policy_tables_changed(x.pol));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@example.test"),
              "451 4.3.0 <u@example.test>: Temporary lookup failure");
    CHECK_INT(x.v.status, V_DEFER);
    CHECK(strstr(x.v.rule, "check_recipient_access hash:") != NULL);
    WARN_HAS(&x, "lookup error for \"u@example.test\"");
    rx_done(&x);
}

TEST(restrict_helo_checks)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\n"
                        "smtpd_helo_restrictions = reject_invalid_hostname, reject_non_fqdn_hostname\n"));
    static const struct {
        const char *helo, *reply;
    } t[] = {
        {"foo.bar.", ""},
        {"foo.bar", ""},
        {"foo", "504 5.5.2 <foo>: Helo command rejected: need fully-qualified hostname"},
        {"[123.123.123.123]", ""},
        {"[::]", "501 5.5.2 <[::]>: Helo command rejected: invalid ip address"},
        {"[ipv6:::]", ""},
        {"[ipv6::::]", "501 5.5.2 <[ipv6::::]>: Helo command rejected: invalid ip address"},
        {"[1.2.3]", "501 5.5.2 <[1.2.3]>: Helo command rejected: invalid ip address"},
        {"bad_name!.test", "501 5.5.2 <bad_name!.test>: Helo command rejected: Invalid name"},
        {"1.2.3.4", "504 5.5.2 <1.2.3.4>: Helo command rejected: need fully-qualified hostname"},
    };
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        pstate_t st = ps("192.0.2.1", t[i].helo, NULL, NULL);
        rx_eval(&x, PCMD_HELO, &st);
        CHECK_STR(buf_cstr(&x.v.reply), t[i].reply);
    }
    /* smtpd_check.ref: permit_naked_ip_address (deprecated, warned) */
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\n"
                        "smtpd_helo_restrictions = permit_naked_ip_address, reject_non_fqdn_hostname\n"));
    static const struct {
        const char *helo, *reply;
    } n[] = {
        {"[1.2.3.4]", ""},
        {"[321.255.255.255]", "501 5.5.2 <[321.255.255.255]>: Helo command rejected: invalid ip address"},
        {"1.2.3.4", ""},
        {"0.255.255.255", "501 5.5.2 <0.255.255.255>: Helo command rejected: invalid ip address"},
        {"1..2.3.4", "501 5.5.2 <1..2.3.4>: Helo command rejected: invalid ip address"},
    };
    for (size_t i = 0; i < ARRAY_LEN(n); i++) {
        pstate_t st = ps("192.0.2.1", n[i].helo, NULL, NULL);
        rx_eval(&x, PCMD_HELO, &st);
        CHECK_STR(buf_cstr(&x.v.reply), n[i].reply);
        WARN_HAS(&x, "warning: restriction permit_naked_ip_address is deprecated.");
    }
    rx_done(&x);
}

TEST(restrict_non_fqdn_addresses)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_sender_restrictions = reject_non_fqdn_sender\nsmtpd_relay_restrictions =\n"
                        "smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "foo@foo.bar.", "u@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "foo@foo", "u@example.test"),
              "504 5.5.2 <foo@foo>: Sender address rejected: need fully-qualified address");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "foo", "u@example.test"),
              "504 5.5.2 <foo>: Sender address rejected: need fully-qualified address");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "", "u@example.test"), "");   /* the null sender */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@[192.0.2.7]", "u@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "foo@foo"),
              "504 5.5.2 <foo@foo>: Recipient address rejected: need fully-qualified address");
    rx_done(&x);
}

TEST(restrict_multi_recipient_bounce_pipelining_sleep)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_recipient_restrictions = reject_unauth_pipelining, reject_multi_recipient_bounce, "
                        "sleep 2, sleep 1, reject_unauth_destination\n"
                        "smtpd_data_restrictions = reject_multi_recipient_bounce\n"));
    pstate_t st = ps("192.0.2.1", "c.test", "", "a@example.test");
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_PERMIT);
    CHECK_INT(x.v.sleep, 3);
    st.nrcpt = 1;
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "550 5.5.3 <a@example.test>: Recipient address rejected: Multi-recipient bounce");
    CHECK_INT(x.v.sleep, 0);
    st.recipient = "a@example.test";
    CHECK_INT(rx_eval(&x, PCMD_DATA, &st), V_PERMIT);   /* one recipient at DATA is fine */
    st.nrcpt = 2;
    st.recipient = NULL;
    CHECK_INT(rx_eval(&x, PCMD_DATA, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce");
    st = ps("192.0.2.1", "c.test", "a@b.test", "a@example.test");
    st.pipelined_early = true;
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply),
              "503 5.5.0 <a@example.test>: Recipient address rejected: Improper use of SMTP command pipelining");
    rx_done(&x);
}

TEST(restrict_data_eod_etrn)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_data_restrictions = check_sender_access inline:{d@b.test=REJECT}\n"
                        "smtpd_end_of_data_restrictions = check_sender_access inline:{ok@b.test=OK}, reject_x\n"
                        "smtpd_restriction_classes = reject_x\nreject_x = reject\n"
                        "smtpd_etrn_restrictions = check_etrn_access inline:{bad.test=REJECT}, permit\n"));
    pstate_t st = ps("192.0.2.1", "c.test", "d@b.test", "u@example.test");
    st.nrcpt = 1;
    CHECK_INT(rx_eval(&x, PCMD_DATA, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 <d@b.test>: Sender address rejected: Access denied");
    st.sender = "e@b.test";
    CHECK_INT(rx_eval(&x, PCMD_DATA, &st), V_PERMIT);
    CHECK_INT(rx_eval(&x, PCMD_EOD, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied");
    CHECK_STR(x.v.rule, "end_of_data:reject");
    st = ps("192.0.2.1", "c.test", NULL, "x.bad.test");
    CHECK_INT(rx_eval(&x, PCMD_ETRN, &st), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 <x.bad.test>: Etrn command rejected: Access denied");
    st.recipient = "good.test";
    CHECK_INT(rx_eval(&x, PCMD_ETRN, &st), V_PERMIT);
    rx_done(&x);
}

TEST(restrict_reverse_client_ok_is_forbidden)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = check_reverse_client_hostname_access inline:{ {unknown=REJECT no PTR} }\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@example.test"),
              "554 5.7.1 <unknown>: Unverified Client host rejected: no PTR");
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = check_reverse_client_hostname_access inline:{unknown=OK}\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@example.test"), "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "this is not allowed for security reasons");
    rx_done(&x);
}

TEST(restrict_permit_log_and_trace)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_log_access_permit_actions = permit_mynetworks\n"));
    CHECK_STR(REPLY(&x, "127.0.0.1", "c.test", "a@b.test", "u@example.test"), "");
    WARN_HAS(&x, "permit: RCPT from unknown[127.0.0.1]: action=permit_mynetworks for Client host=unknown[127.0.0.1];");
    CHECK(strstr(buf_cstr(&x.trace), "  relay: permit_mynetworks -> OK\n") != NULL);
    CHECK(strstr(buf_cstr(&x.trace), "  verdict: permit\n") != NULL);
    REQUIRE(rx_load(&x, "smtpd_log_access_permit_actions = static:all\n"
                        "smtpd_sender_restrictions = check_sender_access inline:{a@b.test=OK}\n"));
    REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@example.test");
    WARN_HAS(&x, "action=OK for Sender address=a@b.test from inline:{a@b.test=OK}");
    CHECK(strstr(buf_cstr(&x.trace), "a@b.test found: OK") != NULL);
    rx_done(&x);
}

TEST(restrict_reply_footer)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_reject_footer = Call us, $client_address.\\nQuote ${recipient}.\n"
                        "smtpd_recipient_restrictions = reject\n"));
    pstate_t st = ps("192.0.2.1", "c.test", "a@b.test", "u@example.test");
    rx_eval(&x, PCMD_RCPT, &st);
    policy_reply_text(x.pol, &x.v, &st, &x.reply);
    CHECK_STR(buf_cstr(&x.reply), "554-5.7.1 <u@example.test>: Recipient address rejected: Access denied\r\n"
                                  "554-5.7.1 Call us, 192.0.2.1.\r\n"
                                  "554 5.7.1 Quote u@example.test.");
    /* the log keeps the one-line reply */
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 <u@example.test>: Recipient address rejected: Access denied");
    REQUIRE(rx_load(&x, "smtpd_reject_footer = \\c (ref $nothing)\nsmtpd_recipient_restrictions = reject\n"));
    rx_eval(&x, PCMD_RCPT, &st);
    policy_reply_text(x.pol, &x.v, &st, &x.reply);
    CHECK_STR(buf_cstr(&x.reply), "554 5.7.1 <u@example.test>: Recipient address rejected: Access denied (ref $nothing)");
    REQUIRE(rx_load(&x, ""));
    st.recipient = "u@example.test";
    rx_eval(&x, PCMD_RCPT, &st);
    policy_reply_text(x.pol, &x.v, &st, &x.reply);
    CHECK_STR(buf_cstr(&x.reply), "");   /* a permit has no reply */
    rx_done(&x);
}

/* ------------------------------------- mynetworks, inet_interfaces, ... */

/* Client list "permit_X, reject": is addr permitted? */
static bool rx_client_ok(rx_t *x, const char *addr, const struct sockaddr *local)
{
    pstate_t st = ps(addr, "c.test", "a@b.test", "u@example.test");
    st.local = local;
    return rx_eval(x, PCMD_RCPT, &st) == V_PERMIT;
}

TEST(restrict_mynetworks_tables_and_files)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "nets.cidr", "192.0.2.0/24 whatever\n");
    rx_file(&x, "hosts", "198.51.100.7 yes\n");
    /* the file's items name a table by its full path */
    char more[600];
    snprintf(more, sizeof more, "# trusted\n!203.0.113.9, 203.0.113.0/24\n  cidr:%s/nets.cidr\n", x.dir);
    rx_file(&x, "more", more);
    REQUIRE(rx_load(&x, "mynetworks = !192.0.2.66 texthash:%D/hosts %D/more [2001:db8::]/32\n"
                        "smtpd_client_restrictions = permit_mynetworks, reject\n"));
    CHECK(rx_client_ok(&x, "198.51.100.7", NULL));     /* table: the address is the key */
    CHECK(!rx_client_ok(&x, "198.51.100.8", NULL));
    CHECK(rx_client_ok(&x, "203.0.113.1", NULL));      /* from the file */
    CHECK(!rx_client_ok(&x, "203.0.113.9", NULL));     /* the file's own exclusion comes first */
    CHECK(rx_client_ok(&x, "192.0.2.1", NULL));        /* the file's table */
    CHECK(!rx_client_ok(&x, "192.0.2.66", NULL));      /* excluded before the file */
    CHECK(rx_client_ok(&x, "2001:db8::5", NULL));
    CHECK(!rx_client_ok(&x, "127.0.0.1", NULL));
    rx_client_ok(&x, "192.0.2.1", NULL);
    CHECK(strstr(buf_cstr(&x.trace), "192.0.2.1 matches cidr:") != NULL);
    CHECK(!policy_tables_changed(x.pol));
    /* failures name the parameter */
    CHECK(!rx_load(&x, "mynetworks = %D/nonexistent\n"));
    ERR_HAS(&x, "mynetworks: \"");
    ERR_HAS(&x, "cannot open");
    CHECK(!rx_load(&x, "mynetworks = !%D/more\n"));
    ERR_HAS(&x, "'!' before a file name is not supported");
    CHECK(!rx_load(&x, "mynetworks = 192.0.2.1/8\n"));
    ERR_HAS(&x, "<text>/main.cf:");
    ERR_HAS(&x, "bad network address");
    rx_file(&x, "loop", "");
    char loop[300];
    snprintf(loop, sizeof loop, "%s/loop", x.dir);
    rx_file(&x, "loop", loop);   /* a file naming itself */
    CHECK(!rx_load(&x, "mynetworks = %D/loop\n"));
    ERR_HAS(&x, "nested more than");
    rx_done(&x);
}

/* A policy from main.cf text without BASE_MAIN's mynetworks. */
static bool rx_load_bare(rx_t *x, const char *main_cf)
{
    policy_free(&x->pol);
    config_free(&x->cfg);
    buf_reset(&x->err);
    x->cfg = config_load_text(main_cf, NULL, &x->err, NULL);
    if (!x->cfg)
        return false;
    x->pol = policy_new(config_main(x->cfg), x->dir, &x->err);
    return x->pol != NULL;
}

TEST(restrict_mynetworks_style)
{
    rx_t x;
    rx_init(&x);
    const char *tail = "myhostname = mx.example.test\nsmtpd_client_restrictions = permit_mynetworks, reject\n";
    char cf[400];
    /* neither set: moat's loopback default */
    REQUIRE(rx_load_bare(&x, tail));
    CHECK(rx_client_ok(&x, "127.0.0.9", NULL));
    CHECK(rx_client_ok(&x, "::1", NULL));
    CHECK(!rx_client_ok(&x, "198.51.100.1", NULL));
    /* host: the machine's own addresses only (every Linux machine has 127.0.0.1/8 on lo) */
    snprintf(cf, sizeof cf, "mynetworks_style = host\n%s", tail);
    REQUIRE(rx_load_bare(&x, cf));
    CHECK(rx_client_ok(&x, "127.0.0.1", NULL));
    CHECK(!rx_client_ok(&x, "127.0.0.9", NULL));
    CHECK(!rx_client_ok(&x, "198.51.100.1", NULL));
    /* subnet: lo's 127.0.0.0/8 */
    snprintf(cf, sizeof cf, "mynetworks_style = subnet\n%s", tail);
    REQUIRE(rx_load_bare(&x, cf));
    CHECK(rx_client_ok(&x, "127.0.0.9", NULL));
    CHECK(rx_client_ok(&x, "127.200.0.1", NULL));
    CHECK(!rx_client_ok(&x, "198.51.100.1", NULL));
    /* class: 127 is class A */
    snprintf(cf, sizeof cf, "mynetworks_style = class\n%s", tail);
    REQUIRE(rx_load_bare(&x, cf));
    CHECK(rx_client_ok(&x, "127.1.2.3", NULL));
    CHECK(!rx_client_ok(&x, "198.51.100.1", NULL));
    /* mynetworks wins over the style */
    snprintf(cf, sizeof cf, "mynetworks_style = subnet\nmynetworks = 198.51.100.0/24\n%s", tail);
    REQUIRE(rx_load_bare(&x, cf));
    CHECK(rx_client_ok(&x, "198.51.100.1", NULL));
    CHECK(!rx_client_ok(&x, "127.0.0.1", NULL));
    snprintf(cf, sizeof cf, "mynetworks_style = galaxy\n%s", tail);
    CHECK(!rx_load_bare(&x, cf));
    ERR_HAS(&x, "<text>/main.cf:1: mynetworks_style: unknown style \"galaxy\"");
    rx_done(&x);
}

TEST(restrict_permit_inet_interfaces)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "inet_interfaces = 127.0.0.7, [::1]\n"
                        "smtpd_client_restrictions = permit_inet_interfaces, reject\n"));
    CHECK(rx_client_ok(&x, "127.0.0.7", NULL));
    CHECK(rx_client_ok(&x, "::1", NULL));
    CHECK(!rx_client_ok(&x, "127.0.0.1", NULL));
    REQUIRE(rx_load(&x, "inet_interfaces = loopback-only\n"
                        "smtpd_client_restrictions = permit_inet_interfaces, reject\n"));
    CHECK(rx_client_ok(&x, "127.0.0.1", NULL));
    CHECK(!rx_client_ok(&x, "127.0.0.7", NULL));
    /* all: the connection's own address */
    REQUIRE(rx_load(&x, "smtpd_client_restrictions = permit_inet_interfaces, reject\n"));
    struct sockaddr_in local = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.5", &local.sin_addr);
    CHECK(rx_client_ok(&x, "127.0.0.5", (const struct sockaddr *)&local));
    CHECK(strstr(buf_cstr(&x.trace), "is the connection's local address 127.0.0.5") != NULL);
    CHECK(!rx_client_ok(&x, "127.0.0.6", (const struct sockaddr *)&local));
    struct sockaddr_in6 local6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:127.0.0.5", &local6.sin6_addr);
    CHECK(rx_client_ok(&x, "127.0.0.5", (const struct sockaddr *)&local6));
    /* all without a connection (moat check): the interface addresses */
    CHECK(rx_client_ok(&x, "127.0.0.1", NULL));
    CHECK(!rx_client_ok(&x, "198.51.100.1", NULL));
    /* names are not addresses: refused only when the restriction is used */
    REQUIRE(rx_load(&x, "inet_interfaces = mx.example.test\n"));
    CHECK(!rx_load(&x, "inet_interfaces = mx.example.test\n"
                       "smtpd_client_restrictions = permit_inet_interfaces\n"));
    ERR_HAS(&x, "permit_inet_interfaces needs addresses");
    rx_done(&x);
}

TEST(restrict_unlisted_recipient_and_sender)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, "smtpd_sender_restrictions = reject_unlisted_sender\n"
                        "smtpd_recipient_restrictions = reject_unlisted_recipient, check_recipient_maps, "
                        "reject_unauth_destination\n"));
    /* local domain: every local part exists */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "anyone@example.test", "nosuchuser@example.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "is in a local domain: every local part exists") != NULL);
    /* other domains: nothing to look up; the relay check decides */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@elsewhere.test", "u@elsewhere.test"),
              "554 5.7.1 <u@elsewhere.test>: Relay access denied");
    CHECK(strstr(buf_cstr(&x.trace), "u@elsewhere.test is neither in a local domain nor in relay_domains") != NULL);
    /* the second name of the same check does not look again (Postfix's rcptmap_checked) */
    CHECK(strstr(buf_cstr(&x.trace), "check_recipient_maps: u@elsewhere.test was checked already") != NULL);
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "", "u@example.test"), "");
    rx_done(&x);
}

TEST(restrict_forbidden_commands)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, ""));
    CHECK(policy_forbidden_command(x.pol, "GET"));
    CHECK(policy_forbidden_command(x.pol, "post"));
    CHECK(policy_forbidden_command(x.pol, "CONNECT"));
    CHECK(policy_forbidden_command(x.pol, "Subject:"));   /* a header sent as a command */
    CHECK(policy_forbidden_command(x.pol, "X-Mailer:"));
    CHECK(!policy_forbidden_command(x.pol, "XYZZY"));
    CHECK(!policy_forbidden_command(x.pol, ":"));
    CHECK(!policy_forbidden_command(x.pol, ""));
    rx_file(&x, "forbid", "put 1\nhead 1\n");
    REQUIRE(rx_load(&x, "smtpd_forbidden_commands = OPTIONS texthash:%D/forbid\n"));
    CHECK(policy_forbidden_command(x.pol, "options"));
    CHECK(policy_forbidden_command(x.pol, "PUT"));
    CHECK(!policy_forbidden_command(x.pol, "GET"));
    CHECK(policy_forbidden_command(x.pol, "From:"));
    CHECK(!rx_load(&x, "smtpd_forbidden_commands = GET texthash:%D/missing\n"));
    ERR_HAS(&x, "<text>/main.cf:4: ");
    rx_done(&x);
}

/* ------------------------------------------------------------ relay_domains */

TEST(restrict_relay_domains_are_authorized)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "relays", "table.test OK\n");
    REQUIRE(rx_load(&x, "relay_domains = relay.test, texthash:%D/relays\n"
                        "smtpd_recipient_restrictions = reject_unauth_destination\n"));
    /* Postfix's default relay restrictions end in defer_unauth_destination: relay_domains passes both */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@relay.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "  relay: defer_unauth_destination: u@relay.test is in relay_domains (relay.test)\n") !=
          NULL);
    CHECK(strstr(buf_cstr(&x.trace), "reject_unauth_destination: u@relay.test is in relay_domains (relay.test)") != NULL);
    /* subdomains too (relay_domains is in parent_domain_matches_subdomains) */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@a.Relay.Test."), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@x.table.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "is in relay_domains (texthash:") != NULL);
    CHECK(strstr(buf_cstr(&x.trace), "/relays:1 (key table.test))") != NULL);
    /* smtpd_recipient_restrictions run first (smtpd_relay_before_recipient_restrictions = no) */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@notrelay.test"),
              "554 5.7.1 <u@notrelay.test>: Relay access denied");
    CHECK(strstr(buf_cstr(&x.trace), "u@notrelay.test is neither in mydestination nor in relay_domains") != NULL);
    /* a routed local part is never authorized */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u%other.test@relay.test"),
              "554 5.7.1 <u%other.test@relay.test>: Relay access denied");
    /* permit_auth_destination */
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nsmtpd_relay_restrictions =\n"
                        "smtpd_recipient_restrictions = permit_auth_destination, reject\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@relay.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "permit_auth_destination -> OK") != NULL);
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@other.test"),
              "554 5.7.1 <u@other.test>: Recipient address rejected: Access denied");
    /* the relay guard is satisfied either way, and the guard's text is unchanged */
    REQUIRE(rx_load(&x, "relay_domains =\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@relay.test"),
              "454 4.7.1 <u@relay.test>: Relay access denied");
    rx_done(&x);
}

TEST(restrict_relay_recipient_maps)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "rcpts", "known@relay.test x\nMixed@relay.test x\n@open.test x\n");
    REQUIRE(rx_load(&x, "relay_domains = relay.test open.test\nrecipient_delimiter = +\n"
                        "relay_recipient_maps = texthash:%D/rcpts\n"
                        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"));
    /* smtpd_reject_unlisted_recipient (yes): after the restrictions permit */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "unknown@relay.test"),
              "550 5.1.1 <unknown@relay.test>: Recipient address rejected: User unknown in relay recipient table");
    CHECK_INT(x.v.status, V_REJECT);
    CHECK_STR(x.v.rule, "recipient:smtpd_reject_unlisted_recipient");
    CHECK(strstr(buf_cstr(&x.trace), "smtpd_reject_unlisted_recipient: @relay.test not found in texthash:") != NULL);
    /* even for trusted clients (Postfix: mynetworks does not skip it) */
    CHECK_STR(REPLY(&x, "127.0.0.1", "c.test", "a@b.test", "unknown@relay.test"),
              "550 5.1.1 <unknown@relay.test>: Recipient address rejected: User unknown in relay recipient table");
    /* the address, the address without its extension, then @domain */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "known@relay.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "smtpd_reject_unlisted_recipient: known@relay.test found in relay_recipient_maps "
                                     "texthash:") != NULL);
    CHECK(strstr(buf_cstr(&x.trace), "/rcpts:1\n") != NULL);
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "known+tag@Relay.Test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "mixed@relay.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "anyone@open.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "@open.test found in relay_recipient_maps") != NULL);
    /* not relay domains: nothing to check */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "nobody@example.test"), "");
    CHECK_STR(REPLY(&x, "127.0.0.1", "c.test", "a@b.test", "nobody@far.test"), "");
    /* a rejection by the restrictions comes first */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "u@far.test"), "554 5.7.1 <u@far.test>: Relay access denied");
    /* the code, and the explicit restriction (which then counts as done) */
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nrelay_recipient_maps = texthash:%D/rcpts\n"
                        "unknown_relay_recipient_reject_code = 450\n"
                        "smtpd_recipient_restrictions = reject_unlisted_recipient, permit_mynetworks, "
                        "reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "127.0.0.1", "c.test", "a@b.test", "unknown@relay.test"),
              "450 4.1.1 <unknown@relay.test>: Recipient address rejected: User unknown in relay recipient table");
    CHECK_STR(x.v.rule, "recipient:reject_unlisted_recipient");
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nrelay_recipient_maps = texthash:%D/rcpts\n"
                        "smtpd_recipient_restrictions = warn_if_reject reject_unlisted_recipient, "
                        "reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "unknown@relay.test"), "");
    WARN_HAS(&x, "reject_warning: RCPT from unknown[192.0.2.1]: 550 5.1.1 <unknown@relay.test>: Recipient address "
                 "rejected: User unknown in relay recipient table;");
    /* DISCARD: nothing to deliver, nothing to check */
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nrelay_recipient_maps = texthash:%D/rcpts\n"
                        "smtpd_recipient_restrictions = check_recipient_access inline:{unknown@relay.test=DISCARD}, "
                        "reject_unauth_destination\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "unknown@relay.test"), "");
    CHECK(x.v.discard);
    /* receive_override_options = no_unknown_recipient_checks (a re-injection service) */
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nrelay_recipient_maps = texthash:%D/rcpts\n"
                        "receive_override_options = no_unknown_recipient_checks\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@b.test", "unknown@relay.test"), "");
    CHECK(strstr(buf_cstr(&x.trace), "skipped (receive_override_options = no_unknown_recipient_checks)") != NULL);
    /* a table that does not open is a load error naming the line */
    CHECK(!rx_load(&x, "relay_recipient_maps = texthash:%D/missing\n"));
    ERR_HAS(&x, "<text>/main.cf:4: ");
    CHECK(!rx_load(&x, "relay_recipient_maps = relay.test\n"));
    ERR_HAS(&x, "relay_recipient_maps: \"relay.test\": need type:table");
    rx_done(&x);
}

TEST(restrict_unlisted_sender_relay)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "rcpts", "known@relay.test x\n");
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nrelay_recipient_maps = texthash:%D/rcpts\n"
                        "smtpd_sender_restrictions = reject_unlisted_sender\n"));
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "forged@relay.test", "known@relay.test"),
              "550 5.1.0 <forged@relay.test>: Sender address rejected: User unknown in relay recipient table");
    CHECK_STR(x.v.rule, "sender:reject_unlisted_sender");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "known@relay.test", "known@relay.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "", "known@relay.test"), "");   /* the null sender */
    CHECK_STR(REPLY(&x, "192.0.2.1", "c.test", "a@elsewhere.test", "known@relay.test"), "");
    rx_done(&x);
}

TEST(restrict_check_relay_domains)
{
    rx_t x;
    rx_init(&x);
    /* the obsolete restriction (removed in Postfix 3.9), as older Postfix:
     * a client whose name is in relay_domains, or an authorized
     * destination; otherwise "Relay access denied" in the recipient's words */
    REQUIRE(rx_load(&x, "relay_domains = relay.test\nsmtpd_relay_restrictions =\n"
                        "smtpd_recipient_restrictions = check_relay_domains\n"));
    pstate_t st = ps("192.0.2.7", "c.test", "a@b.test", "u@far.test");
    st.client_name = "gw.relay.test";
    CHECK_INT(rx_eval(&x, PCMD_RCPT, &st), V_PERMIT);
    CHECK(strstr(buf_cstr(&x.trace), "check_relay_domains: the client gw.relay.test is in relay_domains (relay.test)") !=
          NULL);
    CHECK_STR(REPLY(&x, "192.0.2.7", "c.test", "a@b.test", "u@sub.relay.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.7", "c.test", "a@b.test", "u@example.test"), "");
    CHECK_STR(REPLY(&x, "192.0.2.7", "c.test", "a@b.test", "u@far.test"),
              "554 5.7.1 <u@far.test>: Recipient address rejected: Relay access denied");
    CHECK_STR(x.v.rule, "recipient:check_relay_domains");
    rx_done(&x);
}

TEST(restrict_rcpt_relays_what_restrictions_permit)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(rx_load(&x, ""));
    /* no builtin:no_relay_transport any more: a permitted outside domain is relayed */
    pstate_t st = ps("127.0.0.1", "c.test", "a@b.test", "u@far.test");
    buf_reset(&x.trace);
    CHECK_INT(policy_rcpt(x.pol, &st, false, false, NULL, &x.v, &x.trace), V_PERMIT);
    CHECK_STR(x.v.rule, "");
    st = ps("192.0.2.1", "c.test", "a@b.test", "u@far.test");
    CHECK_INT(policy_rcpt(x.pol, &st, false, false, NULL, &x.v, NULL), V_DEFER);
    CHECK_STR(x.v.rule, "relay:defer_unauth_destination");
    rx_done(&x);
}

TEST(restrict_postponed_deferral_before_implicit_recipient_check)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "rcpts", "known@relay.test x\n");
    /* smtpd_delay_reject = no: a defer_if_permit raised at MAIL answers at
     * RCPT before Postfix's implicit recipient table check would reject */
    REQUIRE(rx_load(&x, "smtpd_delay_reject = no\nrelay_domains = relay.test\n"
                        "relay_recipient_maps = texthash:%D/rcpts\n"));
    pstate_t st = ps("192.0.2.1", "c.test", "a@b.test", "unknown@relay.test");
    CHECK_INT(policy_rcpt(x.pol, &st, false, false, "450 4.7.1 <a@b.test>: Sender address rejected: later", &x.v,
                          NULL),
              V_DEFER);
    CHECK_STR(buf_cstr(&x.v.reply), "450 4.7.1 <a@b.test>: Sender address rejected: later");
    CHECK_STR(x.v.rule, "postponed:defer_if_permit");
    CHECK_INT(policy_rcpt(x.pol, &st, false, false, NULL, &x.v, NULL), V_REJECT);
    CHECK_STR(x.v.rule, "recipient:smtpd_reject_unlisted_recipient");
    rx_done(&x);
}
