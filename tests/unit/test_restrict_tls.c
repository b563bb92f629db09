/*
 * Tests for the TLS issue's restrictions in src/policy/restrict.c
 * (permit_tls_clientcerts, permit_tls_all_clientcerts, check_ccert_access,
 * check_sasl_access, reject_plaintext_session, the sender login mismatch
 * family with smtpd_sender_login_maps) and the STARTTLS / AUTH rate limits
 * of src/policy/anvil.c, evaluated through policy_eval() with a real LMDB
 * state store (sstep_testlib.h).  Expected replies are Postfix's
 * (smtpd_check.c texts).  What the session passes is set by hand in the
 * pstate_t: TLS protocol, certificate fingerprints, verification, login.
 */
#include "harness.h"
#include "restrict_testlib.h"
#include "sstep_testlib.h"

#include "config/config.h"
#include "core/util.h"
#include "maps/maps.h"
#include "policy/anvil.h"
#include "policy/restrict.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TX_BASE                                                                                          \
    "myhostname = mx.example.test\nmydestination = example.test, localhost\nmyorigin = example.test\n" \
    "mynetworks = 127.0.0.0/8\n"

#define FP_A "AA:BB:CC:DD:01"     /* a certificate fingerprint */
#define PK_A "11:22:33:44:01"     /* its public key's */
#define FP_B "AA:BB:CC:DD:02"
#define PK_B "11:22:33:44:02"

static bool tx_load(rx_t *x, const char *main_cf)
{
    return rx_load_base(x, TX_BASE, main_cf);
}

/* A client the way the session describes it; the tests add TLS and SASL. */
static pstate_t tx_st(const char *sender, const char *rcpt)
{
    pstate_t st;
    memset(&st, 0, sizeof st);
    st.client_addr = "192.0.2.9";
    st.client_name = "client.example.net";
    st.reverse_name = "client.example.net";
    st.helo = "client.example.net";
    st.sender = sender;
    st.recipient = rcpt;
    st.protocol = "ESMTP";
    return st;
}

static void tx_tls(pstate_t *st, const char *fp, const char *pk, bool verified, const char *cn)
{
    st->tls_protocol = "TLSv1.3";
    st->tls_cipher = "TLS_AES_256_GCM_SHA384";
    st->tls_keysize = 256;
    st->ccert_fingerprint = fp;
    st->ccert_pubkey_fingerprint = pk;
    st->ccert_verified = verified;
    st->ccert_subject = cn;
}

/* The RCPT decision: "" when permitted, else the reply. */
static const char *tx_rcpt(rx_t *x, const pstate_t *st)
{
    buf_reset(&x->trace);
    policy_eval(x->pol, PCMD_RCPT, st, &x->v, &x->trace);
    return buf_cstr(&x->v.reply);
}

#define TRACE_HAS(x, s) CHECK(strstr(buf_cstr(&(x)->trace), (s)) != NULL)
#define WARN_HAS(x, s) CHECK(strstr(buf_cstr(&(x)->v.warnings), (s)) != NULL)
#define ERR_HAS(x, s) CHECK(strstr(buf_cstr(&(x)->err), (s)) != NULL)

/* ------------------------------------------------------------- compiling */

TEST(restrict_tls_every_name_compiles)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "certs", FP_A " client-a\n");
    rx_file(&x, "ccert", FP_A " OK\n");
    rx_file(&x, "sasl", "alice OK\n");
    rx_file(&x, "logins", "alice@example.test alice\n");
    CHECK(tx_load(&x, "relay_clientcerts = texthash:%D/certs\nsmtpd_sender_login_maps = texthash:%D/logins\n"
                      "smtpd_client_restrictions = reject_plaintext_session, check_ccert_access texthash:%D/ccert\n"
                      "smtpd_sender_restrictions = reject_sender_login_mismatch, "
                      "reject_authenticated_sender_login_mismatch, reject_known_sender_login_mismatch, "
                      "reject_unauthenticated_sender_login_mismatch\n"
                      "smtpd_recipient_restrictions = permit_tls_clientcerts, permit_tls_all_clientcerts, "
                      "check_sasl_access texthash:%D/sasl, reject_unauth_destination\n"));
    CHECK_STR(buf_cstr(&x.err), "");
    CHECK(!policy_tables_changed(x.pol));
    /* the table-taking ones need one */
    CHECK(!tx_load(&x, "smtpd_client_restrictions = check_ccert_access\n"));
    ERR_HAS(&x, "check_ccert_access: missing table (type:name)");
    CHECK(!tx_load(&x, "smtpd_client_restrictions = check_sasl_access alice\n"));
    ERR_HAS(&x, "check_sasl_access: bad argument \"alice\": need type:table");
    rx_done(&x);
}

TEST(restrict_tls_table_lists_fail_only_when_used)
{
    rx_t x;
    rx_init(&x);
    /* a relay_clientcerts table that does not open: an error with a user */
    CHECK(!tx_load(&x, "relay_clientcerts = texthash:%D/missing\n"
                       "smtpd_recipient_restrictions = permit_tls_clientcerts, reject_unauth_destination\n"));
    ERR_HAS(&x, "<text>/main.cf:5: ");
    ERR_HAS(&x, "missing");
    CHECK(!tx_load(&x, "relay_clientcerts = client-a\n"
                       "smtpd_recipient_restrictions = permit_tls_all_clientcerts, reject_unauth_destination\n"));
    ERR_HAS(&x, "relay_clientcerts: \"client-a\": need type:table");
    CHECK(!tx_load(&x, "smtpd_sasl_auth_enable = yes\nsmtpd_sender_login_maps = texthash:%D/missing\n"
                       "smtpd_sender_restrictions = reject_known_sender_login_mismatch\n"));
    ERR_HAS(&x, "<text>/main.cf:6: ");

    /* unused: the configuration loads; a list an access table returns at
     * run time meets the broken table as a configuration error (4xx) */
    REQUIRE(tx_load(&x, "relay_clientcerts = texthash:%D/missing\nsmtpd_sender_login_maps = texthash:%D/missing\n"
                        "smtpd_recipient_restrictions = check_client_access "
                        "inline:{192.0.2.9=permit_tls_clientcerts}, check_client_access "
                        "inline:{192.0.2.10=reject_sender_login_mismatch}, reject_unauth_destination\n"));
    pstate_t st = tx_st("a@b.test", "u@example.test");
    CHECK_STR(tx_rcpt(&x, &st), "");   /* plaintext: the table is not needed */
    tx_tls(&st, FP_A, PK_A, false, "client-a");
    CHECK_STR(tx_rcpt(&x, &st), "451 4.3.5 Server configuration error");
    WARN_HAS(&x, "warning: relay_clientcerts: ");
    /* the login maps only matter with SASL on; without, the step warns */
    st = tx_st("a@b.test", "u@example.test");
    st.client_addr = "192.0.2.10";
    CHECK_STR(tx_rcpt(&x, &st), "");
    WARN_HAS(&x, "restriction `reject_sender_login_mismatch' ignored: no SASL support");
    rx_done(&x);
}

TEST(restrict_tls_tables_count_for_reload_and_fail_as_4xx)
{
    rx_t x;
    rx_init(&x);
    char path[300];
    buf_t err = BUF_INIT;
    rx_file(&x, "certs", FP_A " client-a\n");
    rx_file(&x, "logins", "alice@example.test alice\n");
    snprintf(path, sizeof path, "%s/certs", x.dir);
    REQUIRE(map_build(path, &err) == 0);
    snprintf(path, sizeof path, "%s/logins", x.dir);
    REQUIRE(map_build(path, &err) == 0);
    buf_free(&err);
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\nrelay_clientcerts = hash:%D/certs\n"
                        "smtpd_sender_login_maps = hash:%D/logins\n"
                        "smtpd_sender_restrictions = reject_sender_login_mismatch\n"
                        "smtpd_recipient_restrictions = permit_tls_clientcerts, reject_unauth_destination\n"));
    CHECK(!policy_tables_changed(x.pol));
    pstate_t st = tx_st("alice@example.test", "u@other.test");
    tx_tls(&st, FP_A, PK_A, false, "client-a");
    st.sasl_user = "alice";
    CHECK_STR(tx_rcpt(&x, &st), "");

    /* both compiled tables rewritten in place: every lookup fails */
    const char *names[] = {"certs.lmdb", "logins.lmdb"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        snprintf(path, sizeof path, "%s/%s", x.dir, names[i]);
        FILE *fp = fopen(path, "r+");
        REQUIRE(fp != NULL);
        fputs("garbage", fp);
        fclose(fp);
        CHECK(truncate(path, 7) == 0);
    }
    CHECK(policy_tables_changed(x.pol));
    /* the sender check comes first (delay_reject: sender, then recipient) */
    CHECK_STR(tx_rcpt(&x, &st), "451 4.3.0 <alice@example.test>: Temporary lookup failure");
    CHECK_INT(x.v.status, V_DEFER);
    WARN_HAS(&x, "lookup error for \"alice@example.test\"");
    st.sender = NULL;
    CHECK_STR(tx_rcpt(&x, &st), "451 4.3.0 <u@other.test>: Temporary lookup failure");
    WARN_HAS(&x, "warning: relay_clientcerts: lookup error for fingerprint '" FP_A "', pkey fingerprint " PK_A);
    CHECK_STR(x.v.rule, "recipient:permit_tls_clientcerts");
    rx_done(&x);
}

/* ----------------------------------------------------- client certificates */

TEST(restrict_tls_permit_clientcerts)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "certs", "# relay_clientcerts: the value is not used\n" FP_A " client-a\n" PK_B " client-b's key\n");
    REQUIRE(tx_load(&x, "relay_clientcerts = texthash:%D/certs\nsmtpd_log_access_permit_actions = static:all\n"
                        "smtpd_relay_restrictions = permit_tls_clientcerts, reject_unauth_destination\n"));
    const char *denied = "554 5.7.1 <u@other.test>: Relay access denied";
    pstate_t st = tx_st("a@b.test", "u@other.test");
    /* no TLS: the fingerprint the state might carry does not count */
    st.ccert_fingerprint = FP_A;
    CHECK_STR(tx_rcpt(&x, &st), denied);
    TRACE_HAS(&x, "permit_tls_clientcerts: no TLS session");
    /* TLS, no certificate */
    tx_tls(&st, NULL, NULL, false, NULL);
    CHECK_STR(tx_rcpt(&x, &st), denied);
    TRACE_HAS(&x, "permit_tls_clientcerts: the client sent no certificate");
    /* the certificate's fingerprint is listed; no trusted issuer needed */
    tx_tls(&st, FP_A, PK_A, false, "client-a");
    CHECK_STR(tx_rcpt(&x, &st), "");
    CHECK_INT(x.v.status, V_PERMIT);
    TRACE_HAS(&x, "permit_tls_clientcerts: fingerprint " FP_A " found in texthash:");
    TRACE_HAS(&x, "/certs:2");
    WARN_HAS(&x, "permit: RCPT from client.example.net[192.0.2.9]: action=permit_tls_clientcerts for Client "
                 "host=client.example.net[192.0.2.9]");
    /* ... or its public key's */
    tx_tls(&st, FP_B, PK_B, false, "client-b");
    CHECK_STR(tx_rcpt(&x, &st), "");
    TRACE_HAS(&x, "fingerprint " FP_B " not found");
    TRACE_HAS(&x, "public key fingerprint " PK_B " found");
    /* verified but not listed: this form does not care */
    tx_tls(&st, "EE:EE", "FF:FF", true, "client-c");
    CHECK_STR(tx_rcpt(&x, &st), denied);
    CHECK_STR(x.v.rule, "relay:reject_unauth_destination");
    rx_done(&x);
}

TEST(restrict_tls_permit_all_clientcerts)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "certs", FP_A " client-a\n");
    REQUIRE(tx_load(&x, "relay_clientcerts = texthash:%D/certs\n"
                        "smtpd_relay_restrictions = permit_tls_all_clientcerts, reject_unauth_destination\n"));
    const char *denied = "554 5.7.1 <u@other.test>: Relay access denied";
    pstate_t st = tx_st("a@b.test", "u@other.test");
    CHECK_STR(tx_rcpt(&x, &st), denied);
    /* any verified certificate */
    tx_tls(&st, "EE:EE", "FF:FF", true, "client-c");
    CHECK_STR(tx_rcpt(&x, &st), "");
    TRACE_HAS(&x, "permit_tls_all_clientcerts: the client certificate (client-c) is verified");
    /* unverified: denied, unless its fingerprint is listed (Postfix looks
     * relay_clientcerts up for this form too) */
    tx_tls(&st, "EE:EE", "FF:FF", false, "client-c");
    CHECK_STR(tx_rcpt(&x, &st), denied);
    TRACE_HAS(&x, "permit_tls_all_clientcerts: the client certificate is not verified");
    tx_tls(&st, FP_A, PK_A, false, "client-a");
    CHECK_STR(tx_rcpt(&x, &st), "");
    /* TLS without a certificate */
    tx_tls(&st, NULL, NULL, false, NULL);
    CHECK_STR(tx_rcpt(&x, &st), denied);
    /* an empty relay_clientcerts lists nobody */
    REQUIRE(tx_load(&x, "smtpd_relay_restrictions = permit_tls_all_clientcerts, reject_unauth_destination\n"));
    tx_tls(&st, FP_A, PK_A, false, "client-a");
    CHECK_STR(tx_rcpt(&x, &st), denied);
    TRACE_HAS(&x, "relay_clientcerts is empty");
    tx_tls(&st, FP_A, PK_A, true, "client-a");
    CHECK_STR(tx_rcpt(&x, &st), "");
    rx_done(&x);
}

TEST(restrict_tls_check_ccert_access)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "ccert", FP_A " REJECT revoked certificate\n" FP_B " DUNNO\n" PK_B " 450 4.7.1 key under review\n"
                         "CC:CC OK\n");
    REQUIRE(tx_load(&x, "smtpd_client_restrictions = check_ccert_access texthash:%D/ccert, reject_plaintext_session\n"
                        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"));
    pstate_t st = tx_st("a@b.test", "u@example.test");
    /* plaintext: nothing to look up, the next step decides */
    CHECK_STR(tx_rcpt(&x, &st), "450 4.7.1 Session encryption is required");
    TRACE_HAS(&x, "check_ccert_access texthash:");
    TRACE_HAS(&x, ": no TLS session");
    /* the certificate's fingerprint, reply class "Client certificate" with
     * its subject name; an unverified certificate is looked up too */
    tx_tls(&st, FP_A, PK_A, false, "bad.example.net");
    CHECK_STR(tx_rcpt(&x, &st), "554 5.7.1 <bad.example.net>: Client certificate rejected: revoked certificate");
    CHECK(strncmp(x.v.rule, "client:check_ccert_access texthash:", 35) == 0);
    CHECK(x.v.origin.file != NULL);
    CHECK_INT(x.v.origin.line, 1);
    /* DUNNO for the certificate: its public key still decides */
    tx_tls(&st, FP_B, PK_B, true, "review.example.net");
    CHECK_STR(tx_rcpt(&x, &st), "450 4.7.1 <review.example.net>: Client certificate rejected: key under review");
    CHECK_INT(x.v.status, V_DEFER);
    /* OK ends the class only: the relay class still runs */
    st.recipient = "u@other.test";
    tx_tls(&st, "CC:CC", "DD:DD", false, "ok.example.net");
    CHECK_STR(tx_rcpt(&x, &st), "554 5.7.1 <u@other.test>: Relay access denied");
    st.recipient = "u@example.test";
    CHECK_STR(tx_rcpt(&x, &st), "");
    /* unlisted, or no certificate: DUNNO */
    tx_tls(&st, "EE:EE", "FF:FF", false, "other.example.net");
    CHECK_STR(tx_rcpt(&x, &st), "");
    tx_tls(&st, NULL, NULL, false, NULL);
    CHECK_STR(tx_rcpt(&x, &st), "");
    TRACE_HAS(&x, ": the client sent no certificate");
    rx_done(&x);
}

/* -------------------------------------------------------------- SASL, TLS */

TEST(restrict_tls_check_sasl_access)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "sasl", "mallory REJECT account locked\nbob DUNNO\n");
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\n"
                        "smtpd_relay_restrictions = check_sasl_access texthash:%D/sasl, permit_sasl_authenticated, "
                        "reject_unauth_destination\n"));
    pstate_t st = tx_st("a@b.test", "u@other.test");
    st.sasl_user = "mallory";
    st.sasl_method = "PLAIN";
    CHECK_STR(tx_rcpt(&x, &st), "554 5.7.1 <mallory>: SASL login name rejected: account locked");
    CHECK(strncmp(x.v.rule, "relay:check_sasl_access texthash:", 33) == 0);
    st.sasl_user = "bob";
    CHECK_STR(tx_rcpt(&x, &st), "");
    st.sasl_user = "alice";
    CHECK_STR(tx_rcpt(&x, &st), "");
    TRACE_HAS(&x, "alice not found");
    /* not authenticated: nothing to look up */
    st.sasl_user = NULL;
    CHECK_STR(tx_rcpt(&x, &st), "554 5.7.1 <u@other.test>: Relay access denied");
    TRACE_HAS(&x, "the client is not authenticated");
    /* a login name with a control character is made printable in the reply */
    rx_file(&x, "sasl2", "/^evil/ REJECT\n");
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\n"
                        "smtpd_relay_restrictions = check_sasl_access regexp:%D/sasl2, reject_unauth_destination\n"));
    st.sasl_user = "evil\x01one";
    CHECK_STR(tx_rcpt(&x, &st), "554 5.7.1 <evil_one>: SASL login name rejected: Access denied");
    /* without SASL the restriction is ignored, with a warning (Postfix) */
    REQUIRE(tx_load(&x, "smtpd_relay_restrictions = check_sasl_access texthash:%D/sasl, permit_sasl_authenticated, "
                        "reject_unauth_destination\n"));
    st.sasl_user = "mallory";
    CHECK_STR(tx_rcpt(&x, &st), "");
    WARN_HAS(&x, "warning: restriction `check_sasl_access' ignored: no SASL support (smtpd_sasl_auth_enable = no)");
    rx_done(&x);
}

TEST(restrict_tls_reject_plaintext_session)
{
    rx_t x;
    rx_init(&x);
    REQUIRE(tx_load(&x, "smtpd_client_restrictions = reject_plaintext_session\n"));
    pstate_t st = tx_st("a@b.test", "u@example.test");
    CHECK_STR(tx_rcpt(&x, &st), "450 4.7.1 Session encryption is required");
    CHECK_STR(x.v.rule, "client:reject_plaintext_session");
    CHECK_INT(x.v.code, 450);
    tx_tls(&st, NULL, NULL, false, NULL);
    CHECK_STR(tx_rcpt(&x, &st), "");
    TRACE_HAS(&x, "reject_plaintext_session: the session is encrypted (TLSv1.3)");
    /* plaintext_reject_code, the enhanced code following it */
    REQUIRE(tx_load(&x, "plaintext_reject_code = 554\nsmtpd_delay_reject = no\n"
                        "smtpd_client_restrictions = reject_plaintext_session\n"));
    st = tx_st(NULL, NULL);
    buf_reset(&x.trace);
    CHECK_INT(policy_eval(x.pol, PCMD_CONNECT, &st, &x.v, &x.trace), V_REJECT);
    CHECK_STR(buf_cstr(&x.v.reply), "554 5.7.1 Session encryption is required");
    /* warn_if_reject turns it into a log line */
    REQUIRE(tx_load(&x, "smtpd_client_restrictions = warn_if_reject reject_plaintext_session\n"));
    st = tx_st("a@b.test", "u@example.test");
    CHECK_STR(tx_rcpt(&x, &st), "");
    WARN_HAS(&x, "reject_warning: RCPT from client.example.net[192.0.2.9]: 450 4.7.1 Session encryption is required");
    rx_done(&x);
}

/* ------------------------------------------------------ sender login names */

#define LOGINS                                      \
    "alice@example.test alice\n"                    \
    "shared@example.test alice, bob\tcarol\n"       \
    "@partner.test partner\n"                       \
    "dave dave\n"                                   \
    "owner@example.test ownerguy\n"                 \
    "bob@example.test bob\n"

static const char *mm(rx_t *x, const char *user, const char *sender)
{
    pstate_t st = tx_st(sender, "u@example.test");
    st.sasl_user = user;
    st.sasl_method = user ? "PLAIN" : NULL;
    return tx_rcpt(x, &st);
}

#define NOT_OWNED(s, u) "553 5.7.1 <" s ">: Sender address rejected: not owned by user " u
#define NOT_LOGGED(s) "553 5.7.1 <" s ">: Sender address rejected: not logged in"

TEST(restrict_tls_sender_login_mismatch)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "logins", LOGINS);
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\nrecipient_delimiter = +\n"
                        "smtpd_sender_login_maps = texthash:%D/logins\n"
                        "smtpd_sender_restrictions = reject_sender_login_mismatch\n"));
    /* an owner, also through an address extension and any case */
    CHECK_STR(mm(&x, "alice", "alice@example.test"), "");
    TRACE_HAS(&x, "alice@example.test found in texthash:");
    TRACE_HAS(&x, "alice is an owner");
    CHECK_STR(mm(&x, "alice", "alice+lists@example.test"), "");
    TRACE_HAS(&x, "alice+lists@example.test not found");
    CHECK_STR(mm(&x, "ALICE", "Alice@Example.TEST"), "");
    /* several owners, commas and white space */
    CHECK_STR(mm(&x, "bob", "shared@example.test"), "");
    CHECK_STR(mm(&x, "carol", "shared@example.test"), "");
    /* someone else's address: the table line that decided is the origin */
    CHECK_STR(mm(&x, "bob", "alice@example.test"), NOT_OWNED("alice@example.test", "bob"));
    CHECK_STR(x.v.rule, "sender:reject_sender_login_mismatch");
    CHECK_INT(x.v.origin.line, 1);
    CHECK_INT(x.v.status, V_REJECT);
    /* @domain */
    CHECK_STR(mm(&x, "partner", "anyone@partner.test"), "");
    CHECK_STR(mm(&x, "alice", "anyone@partner.test"), NOT_OWNED("anyone@partner.test", "alice"));
    /* a bare local part matches in local domains only ($myorigin,
     * mydestination), as Postfix's mail_addr_find */
    CHECK_STR(mm(&x, "dave", "dave@example.test"), "");
    TRACE_HAS(&x, "dave@example.test not found");
    CHECK_STR(mm(&x, "dave", "dave@localhost"), "");
    CHECK_STR(mm(&x, "dave", "dave@elsewhere.test"), NOT_OWNED("dave@elsewhere.test", "dave"));
    /* an address without a domain is in $myorigin */
    CHECK_STR(mm(&x, "alice", "alice"), "");
    /* an authenticated client with an ownerless sender: refused (the
     * known_ form allows it) */
    CHECK_STR(mm(&x, "alice", "nobody@nowhere.test"), NOT_OWNED("nobody@nowhere.test", "alice"));
    CHECK(x.v.origin.file == NULL);
    /* unauthenticated: an owned sender needs a login, others pass */
    CHECK_STR(mm(&x, NULL, "alice@example.test"), NOT_LOGGED("alice@example.test"));
    CHECK_STR(mm(&x, NULL, "alice+x@example.test"), NOT_LOGGED("alice+x@example.test"));
    CHECK_STR(mm(&x, NULL, "x@partner.test"), NOT_LOGGED("x@partner.test"));
    CHECK_STR(mm(&x, NULL, "nobody@nowhere.test"), "");
    /* the null sender has no owner */
    CHECK_STR(mm(&x, "alice", ""), "");
    CHECK_STR(mm(&x, NULL, ""), "");
    /* warn_if_reject makes it a log line */
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\nsmtpd_sender_login_maps = texthash:%D/logins\n"
                        "smtpd_sender_restrictions = warn_if_reject reject_sender_login_mismatch\n"));
    CHECK_STR(mm(&x, "bob", "alice@example.test"), "");
    WARN_HAS(&x, "reject_warning: RCPT from client.example.net[192.0.2.9]: " NOT_OWNED("alice@example.test", "bob"));
    rx_done(&x);
}

TEST(restrict_tls_sender_login_mismatch_variants)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "logins", LOGINS);
#define VARIANT(name) \
    "smtpd_sasl_auth_enable = yes\nsmtpd_sender_login_maps = texthash:%D/logins\nsmtpd_sender_restrictions = " name "\n"
    REQUIRE(tx_load(&x, VARIANT("reject_authenticated_sender_login_mismatch")));
    CHECK_STR(mm(&x, "bob", "alice@example.test"), NOT_OWNED("alice@example.test", "bob"));
    CHECK_STR(mm(&x, "bob", "nobody@nowhere.test"), NOT_OWNED("nobody@nowhere.test", "bob"));
    CHECK_STR(mm(&x, NULL, "alice@example.test"), "");
    TRACE_HAS(&x, "the client is not authenticated");

    REQUIRE(tx_load(&x, VARIANT("reject_unauthenticated_sender_login_mismatch")));
    CHECK_STR(mm(&x, NULL, "alice@example.test"), NOT_LOGGED("alice@example.test"));
    CHECK_STR(mm(&x, NULL, "nobody@nowhere.test"), "");
    CHECK_STR(mm(&x, "bob", "alice@example.test"), "");
    TRACE_HAS(&x, "the client is authenticated (bob)");

    /* known: only senders that have owners are checked */
    REQUIRE(tx_load(&x, VARIANT("reject_known_sender_login_mismatch")));
    CHECK_STR(mm(&x, "bob", "alice@example.test"), NOT_OWNED("alice@example.test", "bob"));
    CHECK_STR(mm(&x, "bob", "nobody@nowhere.test"), "");
    CHECK_STR(mm(&x, "alice", "alice@example.test"), "");
    CHECK_STR(mm(&x, NULL, "alice@example.test"), NOT_LOGGED("alice@example.test"));
    CHECK_STR(mm(&x, NULL, "nobody@nowhere.test"), "");

    /* an empty smtpd_sender_login_maps owns nothing: every authenticated
     * sender is refused by the strict forms (Postfix) */
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\n"
                        "smtpd_sender_restrictions = reject_sender_login_mismatch\n"));
    CHECK_STR(mm(&x, "alice", "alice@example.test"), NOT_OWNED("alice@example.test", "alice"));
    TRACE_HAS(&x, "smtpd_sender_login_maps is empty");
    CHECK_STR(mm(&x, NULL, "alice@example.test"), "");

    /* SASL off: every form is ignored, with a warning */
    const char *forms[] = {"reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
                           "reject_known_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch"};
    for (size_t i = 0; i < ARRAY_LEN(forms); i++) {
        char cf[300], want[200];
        snprintf(cf, sizeof cf, "smtpd_sender_login_maps = texthash:%%D/logins\nsmtpd_sender_restrictions = %s\n",
                 forms[i]);
        REQUIRE(tx_load(&x, cf));
        CHECK_STR(mm(&x, NULL, "alice@example.test"), "");
        CHECK_STR(mm(&x, "bob", "alice@example.test"), "");
        snprintf(want, sizeof want, "warning: restriction `%s' ignored: no SASL support", forms[i]);
        WARN_HAS(&x, want);
    }
#undef VARIANT
    rx_done(&x);
}

TEST(restrict_tls_sender_login_delimiters_and_patterns)
{
    rx_t x;
    rx_init(&x);
    rx_file(&x, "logins", LOGINS);
    rx_file(&x, "re", "/^([a-z]+)@regex\\.test$/ $1\n/^@pattern\\.test$/ anyone\n");
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\nrecipient_delimiter = +-\n"
                        "smtpd_sender_login_maps = regexp:%D/re, texthash:%D/logins\n"
                        "smtpd_sender_restrictions = reject_sender_login_mismatch\n"));
    /* any delimiter of recipient_delimiter */
    CHECK_STR(mm(&x, "bob", "bob-news@example.test"), "");
    CHECK_STR(mm(&x, "bob", "bob+news@example.test"), "");
    /* owner-foo and foo-request keep their '-' (Postfix's split_addr) */
    CHECK_STR(mm(&x, "ownerguy", "owner-list@example.test"), NOT_OWNED("owner-list@example.test", "ownerguy"));
    TRACE_HAS(&x, "owner-list@example.test not found");
    CHECK(strstr(buf_cstr(&x.trace), "owner@example.test") == NULL);
    CHECK_STR(mm(&x, "bob", "bob-request@example.test"), NOT_OWNED("bob-request@example.test", "bob"));
    /* a pattern table sees the whole address, never a partial key */
    CHECK_STR(mm(&x, "joe", "joe@regex.test"), "");
    CHECK_STR(mm(&x, "ann", "joe@regex.test"), NOT_OWNED("joe@regex.test", "ann"));
    CHECK_STR(mm(&x, NULL, "who@pattern.test"), "");
    TRACE_HAS(&x, "mismatch: @pattern.test not found in texthash:");
    CHECK(strstr(buf_cstr(&x.trace), "mismatch: @pattern.test not found in regexp:") == NULL);
    /* the full key goes to every table first; the partial ones skip the
     * pattern table */
    CHECK_STR(mm(&x, "alice", "alice+x@example.test"), "");
    TRACE_HAS(&x, "mismatch: alice+x@example.test not found in regexp:");
    CHECK(strstr(buf_cstr(&x.trace), "mismatch: alice@example.test not found in regexp:") == NULL);
    /* postmaster and MAILER-DAEMON are never split, whatever the delimiter */
    rx_file(&x, "split", "postm@example.test admin\nm@example.test admin\n");
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\nrecipient_delimiter = a\n"
                        "smtpd_sender_login_maps = texthash:%D/split\n"
                        "smtpd_sender_restrictions = reject_sender_login_mismatch\n"));
    CHECK_STR(mm(&x, NULL, "postmaster@example.test"), "");
    CHECK_STR(mm(&x, NULL, "mailer-daemon@example.test"), "");
    CHECK_STR(mm(&x, NULL, "postmark@example.test"), NOT_LOGGED("postmark@example.test"));
    /* an address literal of inet_interfaces is a local domain */
    REQUIRE(tx_load(&x, "smtpd_sasl_auth_enable = yes\ninet_interfaces = 127.0.0.1\n"
                        "smtpd_sender_login_maps = texthash:%D/logins\n"
                        "smtpd_sender_restrictions = reject_sender_login_mismatch\n"));
    CHECK_STR(mm(&x, "dave", "dave@[127.0.0.1]"), "");
    CHECK_STR(mm(&x, "dave", "dave@[192.0.2.1]"), NOT_OWNED("dave@[192.0.2.1]", "dave"));
    rx_done(&x);
}

/* ------------------------------------------------- STARTTLS and AUTH limits */

typedef struct lx {
    ssx_t f;
    policy_t *pol;
    verdict_t v;
} lx_t;

static void lx_open(lx_t *x, const char *main_cf)
{
    memset(x, 0, sizeof *x);
    ssx_open(&x->f, main_cf, 300);
    buf_t err = BUF_INIT;
    x->pol = policy_new(config_main(x->f.cfg), x->f.dir, &err);
    if (!x->pol)
        harness_fail(__FILE__, __LINE__, "policy_new: %s", buf_cstr(&err));
    else
        policy_set_env(x->pol, &x->f.env);
    buf_free(&err);
    verdict_init(&x->v);
    x->f.st = (pstate_t){.client_addr = "192.0.2.80", .client_name = "unknown", .reverse_name = "unknown",
                         .name_code = 5, .protocol = "ESMTP", .dns = x->f.memo, .service = "tlssvc"};
}

static void lx_close(lx_t *x)
{
    dns_memo_free(&x->f.memo);
    policy_free(&x->pol);
    verdict_free(&x->v);
    ssx_close(&x->f);
}

/* One command as the session runs it: a fresh memo, then passes until the
 * store answered. */
static vstatus_t lx_eval(lx_t *x, pcmd_t cmd)
{
    dns_memo_clear(x->f.memo);
    vstatus_t vs = V_PENDING;
    for (int pass = 0; pass < 10 && vs == V_PENDING; pass++) {
        buf_reset(&x->f.trace);
        vs = policy_eval(x->pol, cmd, &x->f.st, &x->v, &x->f.trace);
        if (vs == V_PENDING)
            ssx_wait(&x->f);
    }
    return vs;
}

/* The value of a store key once the fire-and-forget writes landed (a
 * bound on a broken test, not a timing assertion); "" when missing. */
static bool lx_key_is(lx_t *x, const char *key, const char *want)
{
    st_res_t r = {0};
    bool ok = false;
    for (int i = 0; i < 200 && !ok; i++) {
        store_status_t s = st_get(&x->f.l, x->f.store, key, &r);
        ok = *want ? s == ST_OK && strcmp(buf_cstr(&r.val), want) == 0 : s == ST_NOTFOUND;
        if (!ok)
            st_run_for(&x->f.l, 0.02);
    }
    st_res_free(&r);
    return ok;
}

static void lx_key(buf_t *out, const char *kind, const char *addr)
{
    buf_reset(out);
    anvil_rate_key(out, kind, addr, (long long)time(NULL), 86400);
}

#define LX_BASE                                                                                                  \
    "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\nanvil_rate_time_unit = 1d\n"                        \
    "smtpd_client_new_tls_session_rate_limit = 2\nsmtpd_client_auth_rate_limit = 2\n"                            \
    /* no class runs for STARTTLS and AUTH: this would refuse anything else */                                   \
    "smtpd_delay_reject = no\nsmtpd_client_restrictions = reject\n"

TEST(restrict_tls_starttls_rate_limit)
{
    lx_t x;
    lx_open(&x, LX_BASE);
    REQUIRE(x.pol);
    CHECK(policy_needs(x.pol) & PN_STORE);
    buf_t key = BUF_INIT;
    lx_key(&key, "tls", "192.0.2.80");

    /* nothing counted yet; STARTTLS reads the counter and counts nothing */
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_PERMIT);
    CHECK(strstr(buf_cstr(&x.f.trace), "smtpd_client_new_tls_session_rate_limit: rate:tls:192.0.2.80:") != NULL);
    CHECK(strstr(buf_cstr(&x.f.trace), "= 0 new sessions (limit 2)") != NULL);
    CHECK(strstr(buf_cstr(&x.f.trace), "client:") == NULL);   /* no class */
    CHECK(lx_key_is(&x, buf_cstr(&key), ""));
    /* each new session is counted after its handshake */
    policy_note_event(x.pol, &x.f.st, PE_NEW_TLS);
    CHECK(lx_key_is(&x, buf_cstr(&key), "1"));
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_PERMIT);
    policy_note_event(x.pol, &x.f.st, PE_NEW_TLS);
    CHECK(lx_key_is(&x, buf_cstr(&key), "2"));
    /* a third would exceed the limit: refused before the handshake */
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_DEFER);
    CHECK_STR(buf_cstr(&x.v.reply), "421 4.7.0 mx.example.test Error: too many new TLS sessions from 192.0.2.80");
    CHECK_STR(x.v.rule, "limits:anvil");
    CHECK_STR(buf_cstr(&x.v.warnings), "warning: New TLS session rate limit exceeded: 3 from unknown[192.0.2.80] "
                                       "for service tlssvc\n");
    CHECK(strstr(buf_cstr(&x.f.trace), "= 2 new sessions, one more exceeds 2 -> refused") != NULL);
    CHECK(lx_key_is(&x, buf_cstr(&key), "2"));   /* a refusal counts nothing */
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_DEFER);

    /* the exempt client: neither limited nor counted */
    x.f.st.client_addr = "127.0.0.1";
    lx_key(&key, "tls", "127.0.0.1");
    for (int i = 0; i < 3; i++)
        policy_note_event(x.pol, &x.f.st, PE_NEW_TLS);
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_PERMIT);
    CHECK(strstr(buf_cstr(&x.f.trace), "127.0.0.1 is exempt") != NULL);
    st_run_for(&x.f.l, 0.1);
    CHECK(lx_key_is(&x, buf_cstr(&key), ""));

    /* the store fails: the limit is skipped with a warning */
    x.f.st.client_addr = "192.0.2.80";
    policy_env_t broken = {.store = NULL, .store_error = "lmdb: cannot open", .commit = true};
    policy_set_env(x.pol, &broken);
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_PERMIT);
    CHECK(strstr(buf_cstr(&x.v.warnings), "warning: smtpd_client_new_tls_session_rate_limit: state store (not open): ")
          != NULL);
    CHECK(strstr(buf_cstr(&x.v.warnings), "limit skipped") != NULL);
    buf_free(&key);
    lx_close(&x);
}

TEST(restrict_tls_auth_rate_limit)
{
    lx_t x;
    lx_open(&x, LX_BASE);
    REQUIRE(x.pol);
    buf_t key = BUF_INIT;
    lx_key(&key, "auth", "192.0.2.80");
    /* every AUTH command counts, the third is over the limit */
    CHECK_INT(lx_eval(&x, PCMD_AUTH), V_PERMIT);
    CHECK(strstr(buf_cstr(&x.f.trace), "smtpd_client_auth_rate_limit: rate:auth:192.0.2.80:") != NULL);
    CHECK_INT(lx_eval(&x, PCMD_AUTH), V_PERMIT);
    CHECK(lx_key_is(&x, buf_cstr(&key), "2"));
    CHECK_INT(lx_eval(&x, PCMD_AUTH), V_DEFER);
    CHECK_STR(buf_cstr(&x.v.reply), "450 4.7.1 Error: too many AUTH commands from 192.0.2.80");
    CHECK_STR(buf_cstr(&x.v.warnings), "warning: AUTH command rate limit exceeded: 3 from unknown[192.0.2.80] "
                                       "for service tlssvc\n");
    CHECK(lx_key_is(&x, buf_cstr(&key), "3"));
    /* without commit (moat check) the counter is read, not written */
    policy_env_t dry = x.f.env;
    dry.commit = false;
    policy_set_env(x.pol, &dry);
    CHECK_INT(lx_eval(&x, PCMD_AUTH), V_DEFER);
    CHECK(strstr(buf_cstr(&x.v.warnings), "exceeded: 4 from") != NULL);
    st_run_for(&x.f.l, 0.1);
    CHECK(lx_key_is(&x, buf_cstr(&key), "3"));
    /* nor is a new TLS session counted without commit */
    policy_note_event(x.pol, &x.f.st, PE_NEW_TLS);
    st_run_for(&x.f.l, 0.1);
    lx_key(&key, "tls", "192.0.2.80");
    CHECK(lx_key_is(&x, buf_cstr(&key), ""));
    buf_free(&key);
    lx_close(&x);
}

TEST(restrict_tls_limits_off_and_events_apart)
{
    /* no TLS or AUTH limit: STARTTLS and AUTH need no store, and a new
     * TLS session is no abuse event (it must not count as an unknown
     * recipient or a 5xx reply) */
    lx_t x;
    lx_open(&x, "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\nanvil_rate_time_unit = 1d\n"
                "smtpd_client_unknown_recipient_limit = 1\nsmtpd_client_reject_limit = 1\n");
    REQUIRE(x.pol);
    CHECK_INT(lx_eval(&x, PCMD_STARTTLS), V_PERMIT);
    CHECK_STR(buf_cstr(&x.f.trace), "  verdict: permit\n");   /* no limit, no class */
    CHECK_INT(lx_eval(&x, PCMD_AUTH), V_PERMIT);
    policy_note_event(x.pol, &x.f.st, PE_NEW_TLS);
    st_run_for(&x.f.l, 0.1);
    buf_t key = BUF_INIT;
    lx_key(&key, "tls", "192.0.2.80");
    CHECK(lx_key_is(&x, buf_cstr(&key), ""));
    CHECK(lx_key_is(&x, "abuse:rcpt:192.0.2.80", ""));
    CHECK(lx_key_is(&x, "block:192.0.2.80", ""));
    /* a failed AUTH (535) is a 5xx reply like any other */
    policy_note_event(x.pol, &x.f.st, PE_REJECT_5XX);
    CHECK(lx_key_is(&x, "abuse:5xx:192.0.2.80", "1"));
    buf_free(&key);
    lx_close(&x);

    /* either limit alone needs the store */
    const char *one[] = {"smtpd_client_new_tls_session_rate_limit = 5\n", "smtpd_client_auth_rate_limit = 5\n"};
    for (size_t i = 0; i < ARRAY_LEN(one); i++) {
        rx_t t;
        rx_init(&t);
        REQUIRE(tx_load(&t, one[i]));
        CHECK(policy_needs(t.pol) & PN_STORE);
        rx_done(&t);
    }
    rx_t t;
    rx_init(&t);
    REQUIRE(tx_load(&t, ""));
    CHECK(!(policy_needs(t.pol) & PN_STORE));
    rx_done(&t);
}
