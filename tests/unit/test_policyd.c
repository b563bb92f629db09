/*
 * test_policyd: the policy server's request parser (fed whole and split
 * at every byte position), the mapping of a request to the engine's
 * state, and the action written for each kind of verdict.
 */
#include "harness.h"

#include "core/buf.h"
#include "config/config.h"
#include "smtp/policyd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const char REQ[] = "request=smtpd_access_policy\n"
                          "protocol_state=RCPT\n"
                          "protocol_name=ESMTP\n"
                          "client_address=192.0.2.7\n"
                          "client_name=mail.example.org\n"
                          "client_port=40123\n"
                          "reverse_client_name=mail.example.org\n"
                          "server_address=127.0.0.1\n"
                          "server_port=25\n"
                          "helo_name=mail.example.org\n"
                          "sender=alice@example.org\n"
                          "recipient=bob@example.test\n"
                          "recipient_count=0\n"
                          "queue_id=\n"
                          "instance=1a.2b.3\n"
                          "size=1234\n"
                          "sasl_username=\n"
                          "encryption_protocol=TLSv1.3\n"
                          "encryption_cipher=TLS_AES_256_GCM_SHA384\n"
                          "encryption_keysize=256\n"
                          "stress=\n"
                          "future_attribute=whatever = with equals\n"
                          "\n";

static int feed_all(preq_t *r, const char *s, size_t len, size_t *used, const char **why)
{
    return preq_feed(r, s, len, used, why);
}

TEST(policyd_parse_whole_request)
{
    preq_t r;
    preq_init(&r);
    size_t used = 0;
    const char *why = NULL;
    CHECK_INT(feed_all(&r, REQ, strlen(REQ), &used, &why), 1);
    CHECK_INT(used, strlen(REQ));
    CHECK_STR(preq_get(&r, "protocol_state"), "RCPT");
    CHECK_STR(preq_get(&r, "queue_id"), "");
    CHECK_STR(preq_get(&r, "future_attribute"), "whatever = with equals");
    CHECK(preq_get(&r, "missing") == NULL);
    preq_free(&r);
}

TEST(policyd_parse_split_everywhere)
{
    size_t len = strlen(REQ);
    for (size_t cut = 0; cut <= len; cut++) {
        preq_t r;
        preq_init(&r);
        size_t used = 0;
        const char *why = NULL;
        int rc = preq_feed(&r, REQ, cut, &used, &why);
        CHECK_INT(rc, cut == len ? 1 : 0);
        CHECK_INT(used, cut);
        if (cut < len) {
            rc = preq_feed(&r, REQ + cut, len - cut, &used, &why);
            CHECK_INT(rc, 1);
            CHECK_INT(used, len - cut);
        }
        CHECK_STR(preq_get(&r, "sender"), "alice@example.org");
        CHECK_STR(preq_get(&r, "encryption_keysize"), "256");
        preq_free(&r);
    }
}

TEST(policyd_parse_two_requests_and_crlf)
{
    const char two[] = "request=smtpd_access_policy\r\nsender=a@x\r\n\r\nrequest=smtpd_access_policy\nsender=b@x\nsender=c@x\n\n";
    preq_t r;
    preq_init(&r);
    size_t used = 0, len = strlen(two);
    const char *why = NULL;
    REQUIRE(preq_feed(&r, two, len, &used, &why) == 1);
    CHECK_STR(preq_get(&r, "sender"), "a@x");
    size_t first = used;
    CHECK(first < len);
    preq_reset(&r);
    CHECK(preq_get(&r, "sender") == NULL);
    REQUIRE(preq_feed(&r, two + first, len - first, &used, &why) == 1);
    CHECK_INT(first + used, len);
    CHECK_STR(preq_get(&r, "sender"), "c@x");   /* the last one given */
    preq_free(&r);
}

static const char *bad(const char *s, size_t len)
{
    static char why_copy[80];
    preq_t r;
    preq_init(&r);
    size_t used = 0;
    const char *why = NULL;
    int rc = preq_feed(&r, s, len, &used, &why);
    why_copy[0] = 0;
    if (rc == -1 && why)
        snprintf(why_copy, sizeof why_copy, "%s", why);
    preq_free(&r);
    return rc == -1 ? why_copy : NULL;
}

TEST(policyd_parse_errors)
{
    CHECK_STR(bad("request=x\nno equals here\n\n", 26), "request line without \"=\"");
    CHECK_STR(bad("=value\n", 7), "empty attribute name");
    CHECK_STR(bad("a=b\0c\n", 6), "NUL byte in a request line");
    static char longline[PREQ_LINE_MAX + 10];
    memset(longline, 'x', sizeof longline);
    longline[0] = 'a';
    longline[1] = '=';
    CHECK_STR(bad(longline, sizeof longline), "request line too long");
    /* exactly at the bound: fine */
    longline[PREQ_LINE_MAX - 1] = '\n';
    CHECK(bad(longline, PREQ_LINE_MAX) == NULL);
    buf_t many = BUF_INIT;
    for (int i = 0; i <= PREQ_ATTRS_MAX; i++)
        buf_printf(&many, "a%d=%d\n", i, i);
    CHECK_STR(bad(many.data, many.len), "too many attributes in one request");
    buf_free(&many);
}

static int map(const char *text, preq_state_t *ps, preq_t *r)
{
    preq_init(r);
    size_t used;
    const char *why = NULL;
    if (preq_feed(r, text, strlen(text), &used, &why) != 1)
        return -2;
    return preq_pstate(r, "127.0.0.1:10040", ps, &why);
}

TEST(policyd_pstate_rcpt)
{
    preq_t r;
    preq_state_t ps;
    REQUIRE(map(REQ, &ps, &r) == 0);
    const pstate_t *st = &ps.st;
    CHECK_INT(ps.cmd, PCMD_RCPT);
    CHECK_STR(ps.state, "RCPT");
    CHECK_STR(st->client_addr, "192.0.2.7");
    CHECK_STR(st->client_name, "mail.example.org");
    CHECK_INT(st->name_code, 0);
    CHECK_INT(st->reverse_code, 0);
    CHECK_INT(st->forward_code, 0);
    REQUIRE(st->peer && st->peer->sa_family == AF_INET);
    CHECK_INT(ntohs(((const struct sockaddr_in *)(const void *)st->peer)->sin_port), 40123);
    REQUIRE(st->local != NULL);
    CHECK_STR(st->helo, "mail.example.org");
    CHECK_STR(st->sender, "alice@example.org");
    CHECK_STR(st->recipient, "bob@example.test");
    CHECK_STR(st->protocol, "ESMTP");
    CHECK(st->queue_id == NULL);
    CHECK_STR(st->instance, "1a.2b.3");
    CHECK_INT(st->size, 1234);
    CHECK(st->sasl_user == NULL);
    CHECK_STR(st->tls_protocol, "TLSv1.3");
    CHECK_INT(st->tls_keysize, 256);
    CHECK(!st->stress);
    CHECK_STR(st->service, "127.0.0.1:10040");
    preq_free(&r);
}

TEST(policyd_pstate_states_and_unknowns)
{
    preq_t r;
    preq_state_t ps;
    REQUIRE(map("request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=2001:db8::1\n"
                "client_name=unknown\nreverse_client_name=ptr.example\nsender=\nhelo_name=\n\n",
                &ps, &r) == 0);
    CHECK_INT(ps.cmd, PCMD_CONNECT);
    CHECK(ps.st.sender == NULL);    /* no MAIL yet */
    CHECK(ps.st.helo == NULL);
    CHECK_STR(ps.st.client_name, "unknown");
    CHECK_INT(ps.st.name_code, 5);
    CHECK_STR(ps.st.reverse_name, "ptr.example");
    CHECK_INT(ps.st.reverse_code, 0);
    CHECK_INT(ps.st.forward_code, 5);
    REQUIRE(ps.st.peer != NULL);
    CHECK_INT(ps.st.peer->sa_family, AF_INET6);
    CHECK_STR(ps.st.protocol, "SMTP");
    preq_free(&r);

    REQUIRE(map("request=smtpd_access_policy\nprotocol_state=MAIL\nsender=\nclient_address=unknown\n\n", &ps,
                &r) == 0);
    CHECK_STR(ps.st.sender, "");     /* the null sender */
    CHECK(ps.st.peer == NULL);
    CHECK_STR(ps.st.client_addr, "unknown");
    preq_free(&r);

    REQUIRE(map("request=smtpd_access_policy\nprotocol_state=VRFY\nsender=\nrecipient=x@y\n\n", &ps, &r) == 0);
    CHECK_INT(ps.cmd, PCMD_RCPT);
    CHECK(ps.st.sender == NULL);
    preq_free(&r);

    REQUIRE(map("request=smtpd_access_policy\nprotocol_state=ETRN\netrn_domain=example.net\nrecipient=\n\n", &ps,
                &r) == 0);
    CHECK_INT(ps.cmd, PCMD_ETRN);
    CHECK_STR(ps.st.recipient, "example.net");
    preq_free(&r);

    REQUIRE(map("request=smtpd_access_policy\nprotocol_state=end-of-message\nstress=yes\n\n", &ps, &r) == 0);
    CHECK_INT(ps.cmd, PCMD_EOD);
    CHECK(ps.st.stress);
    preq_free(&r);

    CHECK_INT(map("request=smtpd_access_policy\nprotocol_state=QUIT\n\n", &ps, &r), -1);
    preq_free(&r);
    CHECK_INT(map("request=junk\nprotocol_state=RCPT\n\n", &ps, &r), -1);
    preq_free(&r);
    CHECK_INT(map("protocol_state=RCPT\n\n", &ps, &r), -1);
    preq_free(&r);
}

static void action_of(const verdict_t *v, const char *want)
{
    buf_t out = BUF_INIT;
    policyd_action(v, &out);
    CHECK_STR(buf_cstr(&out), want);
    buf_free(&out);
}

TEST(policyd_action_texts)
{
    verdict_t v;
    verdict_init(&v);
    v.status = V_PERMIT;
    action_of(&v, "DUNNO");
    buf_puts(&v.bcc, "audit@example.test\n");
    action_of(&v, "BCC audit@example.test");
    buf_puts(&v.prepend, "X-Checked: yes\nX-Second: no\n");
    action_of(&v, "PREPEND X-Checked: yes");
    v.hold = true;
    action_of(&v, "HOLD");
    v.discard = true;
    action_of(&v, "DISCARD");
    verdict_reset(&v);

    v.status = V_REJECT;
    v.code = 554;
    buf_puts(&v.reply, "554 5.7.1 <a@b.test>: Sender address rejected: go away");
    action_of(&v, "554 5.7.1 go away");
    verdict_reset(&v);
    v.status = V_DEFER;
    v.code = 451;
    buf_puts(&v.reply, "451 4.7.1 Greylisted, retry in 300 seconds");
    action_of(&v, "451 4.7.1 Greylisted, retry in 300 seconds");
    verdict_reset(&v);
    v.status = V_REJECT;
    v.code = 550;
    buf_puts(&v.reply, "550 5.7.1 <x>: Client host rejected: line one\r\n550 5.7.1 line two");
    action_of(&v, "550 5.7.1 line one");
    verdict_reset(&v);
    v.status = V_REJECT;
    v.code = 554;
    buf_puts(&v.reply, "554 5.7.1 <a@b.test>: Recipient address rejected: ");
    action_of(&v, "554 5.7.1 Access denied");
    verdict_reset(&v);
    v.status = V_REJECT;
    v.code = 554;
    buf_puts(&v.reply, "<no code> \x01odd");
    action_of(&v, "554 <no code>  odd");
    verdict_free(&v);
}

TEST(policyd_master_cf_policy_service)
{
    buf_t err = BUF_INIT;
    config_t *cfg = config_load_text("", "127.0.0.1:2525 inet n - n - - smtpd\n"
                                         "127.0.0.1:10040 inet n - n - 20 policy\n"
                                         "  -o { policy_restrictions = check_greylist }\n",
                                     &err, NULL);
    REQUIRE(cfg != NULL);
    REQUIRE(config_nservices(cfg) == 2);
    CHECK_INT(config_service(cfg, 0)->kind, SK_SMTPD);
    const service_t *s = config_service(cfg, 1);
    CHECK_INT(s->kind, SK_POLICY);
    CHECK_STR(s->host, "127.0.0.1");
    CHECK_STR(s->port, "10040");
    CHECK_INT(s->maxproc, 20);
    const char *const *items;
    REQUIRE(param_list(s->params, PARAM_policy_restrictions, &items) == 1);
    CHECK_STR(items[0], "check_greylist");
    config_free(&cfg);

    /* A policy service alone is enough to run. */
    cfg = config_load_text("", "10040 inet n - n - - policy\n", &err, NULL);
    CHECK(cfg != NULL);
    config_free(&cfg);

    /* Never silently ignored: a unix policy service is an error. */
    buf_reset(&err);
    cfg = config_load_text("", "127.0.0.1:2525 inet n - n - - smtpd\npolicy unix - n n - - policy\n", &err, NULL);
    CHECK(cfg == NULL);
    CHECK(strstr(buf_cstr(&err), "master.cf:2: policy: a policy service must be of type inet") != NULL);
    buf_free(&err);
}
