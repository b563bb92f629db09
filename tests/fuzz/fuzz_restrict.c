/*
 * fuzz_restrict: restriction-list text → policy_new → policy_eval.
 *
 * The input becomes the value of smtpd_recipient_restrictions in a main.cf
 * that also defines a restriction class and a few inline: tables the text
 * can name.  When the policy compiles, every command is decided for
 * pstate values cut from the input itself (HELO name, sender, recipient,
 * client address), with a trace, and the reply is laid out with a footer.
 *
 * The input never reaches the file system: line breaks become spaces (so
 * it stays one parameter), '/' becomes '_' and relative table names
 * resolve against a directory that does not exist, so no table can name
 * a device or a FIFO.  Contract checked beyond "no crash": a failed
 * compile says why; a verdict that is not a permit has a 4xx/5xx reply.
 */
#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "policy/restrict.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_MAX 4096

static const char main_head[] =
    "myhostname = mx.example.test\n"
    "mydestination = example.test, localhost\n"
    "mynetworks = 127.0.0.0/8, !192.0.2.66, inline:{198.51.100.7=1}\n"
    "inet_interfaces = 127.0.0.1\n"
    "smtpd_reject_footer = see $client_address for ${recipient}\n"
    "smtpd_restriction_classes = cls, other\n"
    "cls = check_sender_access inline:{a@b.test=REJECT, c.test=OK, {d.test = 450 4.1.1 later}}, other\n"
    "other = check_client_access inline:{127.0.0.2=DUNNO, 127.0.0.3=cls}, warn_if_reject, reject_non_fqdn_sender\n"
    "smtpd_relay_restrictions = reject_unauth_destination\n"
    "smtpd_recipient_restrictions = ";

/* The n-th white-space word of s (n counted modulo the number of words),
 * copied into out; "" when s has none. */
static void word(const char *s, unsigned n, char *out, size_t size)
{
    unsigned count = 0;
    for (const char *p = s; *p;) {
        p += strspn(p, " \t,");
        if (!*p)
            break;
        count++;
        p += strcspn(p, " \t,");
    }
    out[0] = 0;
    if (!count)
        return;
    n %= count;
    for (const char *p = s;;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, " \t,");
        if (n-- == 0) {
            if (len >= size)
                len = size - 1;
            memcpy(out, p, len);
            out[len] = 0;
            return;
        }
        p += len;
    }
}

static void check_verdict(const verdict_t *v)
{
    if (v->status == V_PERMIT)
        return;
    const char *r = buf_cstr(&v->reply);
    if (!(r[0] == '4' || r[0] == '5') || v->code < 400 || v->code > 599)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INPUT_MAX)
        return 0;
    char *text = xstrndup((const char *)data, size);
    for (char *p = text; *p; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
        else if (*p == '/')
            *p = '_';
    }
    buf_t cf = BUF_INIT, err = BUF_INIT, trace = BUF_INIT, reply = BUF_INIT;
    buf_puts(&cf, main_head);
    buf_puts(&cf, text);
    buf_putc(&cf, '\n');
    config_t *cfg = config_load_text(buf_cstr(&cf), NULL, &err, NULL);
    if (!cfg)
        goto out;
    policy_t *pol = policy_new(config_main(cfg), "/nonexistent-moat-fuzz", &err);
    if (!pol) {
        if (!err.len)
            abort();   /* a refusal always says why */
        config_free(&cfg);
        goto out;
    }
    unsigned seed = 0;
    for (size_t i = 0; i < size; i++)
        seed = seed * 31 + data[i];
    char helo[64], sender[128], rcpt[128], verb[32];
    word(text, seed, helo, sizeof helo);
    word(text, seed >> 3, sender, sizeof sender);
    word(text, seed >> 6, rcpt, sizeof rcpt);
    word(text, 0, verb, sizeof verb);
    static const char *const addrs[] = {"127.0.0.1", "127.0.0.2", "127.0.0.3", "192.0.2.66", "198.51.100.7",
                                        "2001:db8::1", "::1"};
    const char *addr = addrs[seed % (sizeof addrs / sizeof addrs[0])];
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    pstate_t st = {
        .client_addr = addr,
        .client_name = (seed & 1) ? "unknown" : helo,
        .reverse_name = "unknown",
        .helo = (seed & 2) ? helo : NULL,
        .sender = (seed & 4) ? sender : "",
        .recipient = rcpt,
        .protocol = (seed & 8) ? "ESMTP" : "SMTP",
        .nrcpt = seed % 3,
        .pipelined_early = (seed & 16) != 0,
        .local = (seed & 32) ? (const struct sockaddr *)&local : NULL,
    };
    verdict_t v;
    verdict_init(&v);
    static const pcmd_t cmds[] = {PCMD_CONNECT, PCMD_HELO, PCMD_MAIL, PCMD_RCPT, PCMD_DATA, PCMD_EOD, PCMD_ETRN};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        buf_reset(&trace);
        policy_eval(pol, cmds[i], &st, &v, &trace);
        check_verdict(&v);
        policy_reply_text(pol, &v, &st, &reply);
        if ((v.status == V_PERMIT) != (reply.len == 0))
            abort();
    }
    /* the same command twice: cached table results must give the same answer */
    policy_eval(pol, PCMD_RCPT, &st, &v, NULL);
    vstatus_t first = v.status;
    policy_eval(pol, PCMD_RCPT, &st, &v, NULL);
    if (v.status != first)
        abort();
    (void)policy_forbidden_command(pol, verb);
    (void)policy_tables_changed(pol);
    verdict_free(&v);
    policy_free(&pol);
    config_free(&cfg);
out:
    buf_free(&cf);
    buf_free(&err);
    buf_free(&trace);
    buf_free(&reply);
    free(text);
    return 0;
}
