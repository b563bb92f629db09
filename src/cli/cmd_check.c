/*
 * cmd_check: `moat check`, the second door onto the restriction engine.
 *
 * It loads a configuration exactly as `moat serve` does, compiles the
 * chosen service's policy with policy_new(), and walks one simulated
 * transaction (CONNECT, HELO/EHLO, MAIL, each RCPT, DATA, end of data)
 * through policy_eval(), printing per command the reply the server would
 * send and the rule (and table line) that decided; --trace adds the
 * engine's own trace.  `--script FILE` instead reads the line language of
 * Postfix's smtpd_check test driver (settings, client/helo/mail/rcpt),
 * which is how Postfix's regression data is replayed against moat.
 *
 * Owns one config_t and one policy_t for the length of the command.
 * Must never open a listener, touch the queue or a mail log: it only
 * reads configuration and table files.  It must answer what the server
 * answers, so every decision is the engine's: policy_eval() per command
 * and policy_rcpt() for RCPT (postponed DEFER_IF_PERMIT, the <postmaster>
 * exemption, DISCARD), exactly the calls the session makes.  What this
 * file still mirrors from src/smtp/session.c is protocol sequencing (503
 * after a refused command); the protocol tests run both doors on the same
 * cases.  With --trace, an accepted recipient also shows where the queue
 * manager would deliver it (route_recipient, or route_spec for a FILTER
 * action or content_filter), from the same router the daemon builds.
 * The client's TLS session and SASL login are described by options
 * (--tls, --ccert-*, --sasl-*): they fill the pstate_t as the session
 * does, and the STARTTLS and AUTH commands go through the engine's limits
 * (policy_eval with PCMD_STARTTLS / PCMD_AUTH) as in the server.
 */
#include "cli/cli.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "policy/peer.h"
#include "policy/restrict.h"
#include "queue/route.h"
#include "queue/verify.h"
#include "smtp/smtpd.h"

#include <event2/event.h>

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: moat check [-c DIR] --client IP [--client-name NAME] [--helo NAME]\n"
    "                  [--from ADDR] --rcpt ADDR [--rcpt ADDR...] [--esmtp|--smtp]\n"
    "                  [--tls [--tls-protocol P] [--tls-cipher C]]\n"
    "                  [--ccert-fingerprint FP [--ccert-pubkey-fingerprint FP]\n"
    "                   [--ccert-verified] [--ccert-subject CN] [--ccert-issuer CN]]\n"
    "                  [--sasl-user USER [--sasl-method M] [--sasl-sender ADDR]]\n"
    "                  [--service NAME] [--trace]\n"
    "       moat check [-c DIR] --script FILE|-\n"
    "  Simulate one SMTP transaction through the restriction engine, exactly as\n"
    "  `moat serve -c DIR` would decide it, and print one line per command:\n"
    "    COMMAND: REPLY[; rule=CLASS:RESTRICTION][ table=FILE:LINE]\n"
    "  --client IP         the client address (IPv4 or IPv6)\n"
    "  --client-name NAME  its verified host name (default: unknown)\n"
    "  --helo NAME         send HELO/EHLO NAME\n"
    "  --from ADDR         send MAIL FROM:<ADDR> (\"<>\" or \"\": the null sender)\n"
    "  --rcpt ADDR         send RCPT TO:<ADDR> (repeat for more recipients)\n"
    "  --esmtp | --smtp    EHLO and protocol ESMTP (default), or HELO and SMTP\n"
    "  --tls               the client used STARTTLS (or implicit TLS) first\n"
    "  --tls-protocol P    its TLS version (default TLSv1.3; implies --tls)\n"
    "  --tls-cipher C      its cipher (default TLS_AES_256_GCM_SHA384; implies --tls)\n"
    "  --ccert-fingerprint FP  it presented a client certificate with this\n"
    "                      fingerprint (smtpd_tls_fingerprint_digest; implies --tls)\n"
    "  --ccert-pubkey-fingerprint FP  ... whose public key has this fingerprint\n"
    "  --ccert-verified    ... and the certificate chains to smtpd_tls_CAfile\n"
    "  --ccert-subject CN, --ccert-issuer CN  its subject and issuer names\n"
    "  --sasl-user USER    as if the client had authenticated as USER\n"
    "  --sasl-method M     with mechanism M (default PLAIN)\n"
    "  --sasl-sender ADDR  and sent MAIL FROM:<...> AUTH=<ADDR>\n"
    "  --service NAME      the master.cf service (default: the first smtpd one)\n"
    "  --trace             also print every class, step, key and table line\n"
    "  --script FILE       read Postfix's smtpd_check driver language instead\n"
    "                      (docs/check.md); \"-\" reads standard input\n"
    "  Exit status: 0 every recipient would be accepted; 1 something would be\n"
    "  rejected or deferred; 2 usage or configuration error (file:line: message).\n";

/* The server's answers when nothing objects (session.c's texts). */
#define OK_MAIL "250 2.1.0 Ok"
#define OK_RCPT "250 2.1.5 Ok"
#define OK_DATA "354 End data with <CR><LF>.<CR><LF>"
#define OK_EOD "250 2.0.0 Ok: queued"
#define NO_RCPT "503 5.5.1 Error: need RCPT command"
#define OK_STARTTLS "220 2.0.0 Ready to start TLS"
#define OK_AUTH "235 2.7.0 Authentication successful"
/* After a 421 (or a refused implicit-TLS handshake): every later command. */
#define CLOSED "(not sent: the server closed the connection)"

typedef struct check_opts {
    const char *dir;          /* NULL: the embedded default */
    const char *client, *client_name, *helo, *from, *sasl_user, *service, *script;
    const char **rcpts;
    size_t nrcpt;
    bool smtp, trace;
    /* the TLS session and the login (the TLS issue) */
    bool tls, ccert_verified;
    const char *tls_protocol, *tls_cipher;
    const char *ccert_fp, *ccert_pk, *ccert_subject, *ccert_issuer;
    const char *sasl_method, *sasl_sender;
} check_opts_t;

#define DEFAULT_TLS_PROTOCOL "TLSv1.3"
#define DEFAULT_TLS_CIPHER "TLS_AES_256_GCM_SHA384"

/* The secret key bits of a cipher, from its name as OpenSSL spells it
 * ("TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
 * "TLS_CHACHA20_POLY1305_SHA256"): what the session reports as the key
 * size; 256 when the name does not say. */
static unsigned cipher_bits(const char *cipher)
{
    if (strstr(cipher, "128"))
        return 128;
    if (strstr(cipher, "3DES") || strstr(cipher, "DES-CBC3"))
        return 168;
    return 256;
}

/* The TLS part of the state, as the session fills it after a handshake. */
static void fill_tls(pstate_t *st, const check_opts_t *o)
{
    st->tls_protocol = o->tls_protocol ? o->tls_protocol : DEFAULT_TLS_PROTOCOL;
    st->tls_cipher = o->tls_cipher ? o->tls_cipher : DEFAULT_TLS_CIPHER;
    st->tls_keysize = cipher_bits(st->tls_cipher);
    if (o->ccert_fp) {
        st->ccert_fingerprint = o->ccert_fp;
        st->ccert_pubkey_fingerprint = o->ccert_pk;
        st->ccert_subject = o->ccert_subject;
        st->ccert_issuer = o->ccert_issuer;
        st->ccert_verified = o->ccert_verified;
    }
}

/* ---------- the client address ---------- */

typedef struct client_addr {
    struct sockaddr_storage ss;
    char text[INET6_ADDRSTRLEN];
} client_addr_t;

/* Parse "192.0.2.1", "2001:db8::1", "[2001:db8::1]" or "ipv6:..."; an
 * IPv4-mapped IPv6 address becomes IPv4, as the server does for its peers. */
static bool parse_client(const char *in, client_addr_t *out)
{
    char tmp[INET6_ADDRSTRLEN + 8];
    size_t n = strlen(in);
    if (n >= 2 && in[0] == '[' && in[n - 1] == ']') {
        in++;
        n -= 2;
    }
    if (n >= sizeof tmp)
        return false;
    memcpy(tmp, in, n);
    tmp[n] = 0;
    const char *a = str_istarts(tmp, "ipv6:") ? tmp + 5 : tmp;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (a == tmp && inet_pton(AF_INET, a, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, a, &in6->sin6_addr) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            struct in_addr v4;
            memcpy(&v4, &in6->sin6_addr.s6_addr[12], sizeof v4);
            memset(&out->ss, 0, sizeof out->ss);
            in4->sin_family = AF_INET;
            in4->sin_addr = v4;
        } else {
            in6->sin6_family = AF_INET6;
        }
    } else {
        return false;
    }
    const void *raw = in4->sin_family == AF_INET ? (const void *)&in4->sin_addr : (const void *)&in6->sin6_addr;
    return inet_ntop(in4->sin_family, raw, out->text, sizeof out->text) != NULL;
}

/* "<a@b>" -> "a@b"; "<>" -> "".  The result points into a copy owned by *keep. */
static const char *strip_brackets(const char *addr, char **keep)
{
    size_t n = strlen(addr);
    if (n >= 2 && addr[0] == '<' && addr[n - 1] == '>') {
        *keep = xstrndup(addr + 1, n - 2);
        return *keep;
    }
    *keep = NULL;
    return addr;
}

/* A recipient without a domain is completed as the server completes it
 * (policy_bare_domain). */
static char *complete_recipient(const policy_t *pol, const params_t *p, const char *rcpt)
{
    const char *dom = strchr(rcpt, '@') ? NULL : policy_bare_domain(pol, param_str(p, PARAM_myorigin));
    if (!dom)
        return xstrdup(rcpt);
    buf_t b = BUF_INIT;
    buf_printf(&b, "%s@%s", rcpt, dom);
    char *full = buf_steal(&b);
    str_lower(strchr(full, '@') + 1);
    return full;
}

/* ---------- DNS: the same resolver and waiting as a session ---------- */

typedef struct resolver {
    struct event_base *base;
    dns_t *dns;
    dns_memo_t *memo;
    char *key;           /* the dns_* parameters it was made with */
    bool woke;
} resolver_t;

static void resolver_wake(void *arg)
{
    ((resolver_t *)arg)->woke = true;
}

static void resolver_close(resolver_t *r)
{
    dns_memo_free(&r->memo);
    dns_unref(&r->dns);
    if (r->base)
        event_base_free(r->base);
    r->base = NULL;
    xfree(&r->key);
}

/* (Re)make the resolver when p's dns_* parameters differ from the last. */
static bool resolver_open(resolver_t *r, const params_t *p, buf_t *err)
{
    buf_t key = BUF_INIT;
    smtpd_resolver_new(p, NULL, &key, err);
    if (r->dns && strcmp(r->key, buf_cstr(&key)) == 0) {
        buf_free(&key);
        return true;
    }
    resolver_close(r);
    r->base = event_base_new();
    r->dns = smtpd_resolver_new(p, r->base, NULL, err);
    r->key = buf_steal(&key);
    if (r->dns)
        r->memo = dns_memo_new(r->dns, resolver_wake, r);
    return r->dns != NULL;
}

/* Run the loop until the memo has news; false when nothing is running
 * (the caller would wait forever: an engine bug, reported as such). */
static bool resolver_wait(resolver_t *r)
{
    if (!dns_memo_outstanding(r->memo))
        return false;
    r->woke = false;
    while (!r->woke)
        event_base_loop(r->base, EVLOOP_ONCE);
    return true;
}

/* As the session: each command starts with fresh answers (from moat's
 * cache when still valid), then waits for what is missing. */
static vstatus_t eval_wait(resolver_t *r, policy_t *pol, pcmd_t cmd, const pstate_t *st, verdict_t *v, buf_t *trace)
{
    dns_memo_clear(r->memo);
    vstatus_t vs;
    while ((vs = policy_eval(pol, cmd, st, v, trace)) == V_PENDING)
        if (!resolver_wait(r))
            break;
    return vs;
}

static vstatus_t rcpt_wait(resolver_t *r, policy_t *pol, const pstate_t *st, bool exempt, bool discarding,
                           const char *postponed, verdict_t *v, buf_t *trace)
{
    dns_memo_clear(r->memo);
    vstatus_t vs;
    size_t mark = trace ? trace->len : 0;
    while ((vs = policy_rcpt(pol, st, exempt, discarding, postponed, v, trace)) == V_PENDING) {
        if (trace)
            buf_truncate(trace, mark);
        if (!resolver_wait(r))
            break;
    }
    return vs;
}

/* The client's names as the server finds them (peer.h), traced. */
static void resolve_client(resolver_t *r, const char *addr, peer_names_t *pn, buf_t *trace)
{
    size_t mark = trace ? trace->len : 0;
    while (!peer_names_lookup(r->memo, addr, pn, trace)) {
        if (trace)
            buf_truncate(trace, mark);   /* the final pass traces every answer */
        if (!resolver_wait(r))
            break;
    }
    if (trace)
        buf_printf(trace, "  client: dns: name %s (%s), reverse name %s (%s)%s%s\n", pn->name,
                   pn->name_code == 0 ? "forward-confirmed" : pn->name_code == 4 ? "temporary failure" : "unknown",
                   pn->reverse, pn->reverse_code == 0 ? "found" : pn->reverse_code == 4 ? "temporary failure" : "none",
                   pn->warning[0] ? "; warning: " : "", pn->warning);
}

/* ---------- printing one decision ---------- */

static void print_lines(FILE *out, const char *prefix, const buf_t *b)
{
    const char *p = buf_cstr(b);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n)
            fprintf(out, "%s%.*s\n", prefix, (int)n, p);
        p += (nl ? (size_t)(nl - p) + 1 : n);
    }
}

/* "COMMAND: REPLY; rule=... table=file:line", more reply lines (a
 * multi-line smtpd_reject_footer) as "  | ", then what else the verdict
 * carries (log lines, message actions, a reply delay), then the trace.
 * reply NULL: the verdict's own v->reply. */
static void print_verdict(FILE *out, const char *label, const char *reply, const verdict_t *v,
                          const buf_t *trace)
{
    if (!reply)
        reply = buf_cstr(&v->reply);
    const char *eol = strpbrk(reply, "\r\n");
    fprintf(out, "%s: %.*s", label, (int)(eol ? (size_t)(eol - reply) : strlen(reply)), reply);
    if (v && v->rule[0])
        fprintf(out, "; rule=%s", v->rule);
    if (v && v->origin.file)
        fprintf(out, " table=%s:%d", v->origin.file, v->origin.line);
    fputc('\n', out);
    if (eol) {
        buf_t more = BUF_INIT;
        buf_puts(&more, eol + (eol[0] == '\r' && eol[1] == '\n' ? 2 : 1));
        print_lines(out, "  | ", &more);
        buf_free(&more);
    }
    if (!v)
        return;
    print_lines(out, "  log: ", &v->warnings);
    if (v->status == V_PERMIT) {
        if (v->discard)
            fputs("  action: DISCARD (the message is accepted and dropped)\n", out);
        if (v->hold)
            fputs("  action: HOLD\n", out);
        print_lines(out, "  action: PREPEND ", &v->prepend);
    }
    if (v->sleep)
        fprintf(out, "  action: the reply waits %u seconds (sleep)\n", v->sleep);
    if (trace)
        print_lines(out, "", trace);
}

/* ---------- loading ---------- */

/* What the options describe but the service would not let happen: said
 * on stderr, and simulated anyway (the postmaster may be testing a
 * change, and the restrictions' answers are still worth seeing). */
static void session_notes(const service_t *sv, const check_opts_t *o)
{
    const params_t *p = sv->params;
    bool wrapper = param_bool(p, PARAM_smtpd_tls_wrappermode);
    const char *level = param_str(p, PARAM_smtpd_tls_security_level);
    bool starttls = *level ? !str_ieq(level, "none")
                           : param_bool(p, PARAM_smtpd_use_tls) || param_bool(p, PARAM_smtpd_enforce_tls);
    if (o->tls && !wrapper && !starttls)
        fprintf(stderr, "moat: check: note: service %s offers no STARTTLS (smtpd_tls_security_level); "
                        "--tls is simulated anyway\n", sv->name);
    if (!o->sasl_user)
        return;
    if (!param_bool(p, PARAM_smtpd_sasl_auth_enable))
        fprintf(stderr, "moat: check: note: service %s has smtpd_sasl_auth_enable = no: its clients cannot "
                        "authenticate, and the SASL restrictions other than permit_sasl_authenticated are "
                        "ignored; --sasl-user is simulated anyway\n", sv->name);
    else if (param_bool(p, PARAM_smtpd_tls_auth_only) && !o->tls && !wrapper)
        fprintf(stderr, "moat: check: note: service %s has smtpd_tls_auth_only = yes: AUTH needs TLS (--tls); "
                        "--sasl-user is simulated anyway\n", sv->name);
}

/* ---------- one simulated transaction ---------- */

/*
 * The session's order and rules (src/smtp/session.c), so that both doors
 * agree: with smtpd_delay_reject = no, CONNECT/HELO/MAIL are decided at
 * once; a refused CONNECT makes every later command 503; a refused HELO
 * leaves no HELO name; a refused MAIL leaves no transaction; a
 * DEFER_IF_PERMIT raised early answers at the next permitted RCPT; a bare
 * <postmaster> skips the restrictions; DISCARD skips them for the rest of
 * the message.  Without --from no MAIL is simulated and the RCPTs are
 * decided with no sender (moat check's convenience).
 */
typedef struct sim {
    policy_t *pol;
    const params_t *p;
    pstate_t st;
    verdict_t v;
    buf_t trace, text;
    bool want_trace;
    bool refused;       /* anything rejected or deferred */
    bool discard;       /* a DISCARD action applies to the message */
    char *postponed;    /* delay_reject = no: a DEFER_IF_PERMIT reply waiting for RCPT */
    resolver_t *res;
    router_t *router;   /* where accepted mail goes (--trace) */
} sim_t;

static vstatus_t eval(sim_t *s, pcmd_t cmd)
{
    verdict_reset(&s->v);
    buf_reset(&s->trace);
    buf_reset(&s->text);
    vstatus_t r = eval_wait(s->res, s->pol, cmd, &s->st, &s->v, s->want_trace ? &s->trace : NULL);
    if (r != V_PERMIT) {
        s->refused = true;
        policy_reply_text(s->pol, &s->v, &s->st, &s->text);
    }
    return r;
}

static void show(sim_t *s, const char *label, const char *ok_reply)
{
    print_verdict(stdout, label, s->v.status == V_PERMIT ? ok_reply : buf_cstr(&s->text), &s->v,
                  s->want_trace ? &s->trace : NULL);
}

/* A reply of the server's own (not the engine's). */
static void show_plain(sim_t *s, const char *label, const char *reply)
{
    printf("%s: %s\n", label, reply);
    if (reply[0] != '2' && reply[0] != '3')
        s->refused = true;
}

static void keep_postponed(sim_t *s)
{
    if (s->v.postponed.len) {
        free(s->postponed);
        s->postponed = xstrdup(buf_cstr(&s->v.postponed));
    }
}

/* The trace line of an accepted recipient's delivery: a FILTER action
 * (the last one of the message wins, as in the queue file), else the
 * service's content_filter, else its route. */
static void trace_route(sim_t *s, const char *rcpt, const char *filter)
{
    static const char *const cls[] = {"local (mydestination)", "relay (relay_domains)", "default"};
    route_t r;
    int rc;
    const char *cf = param_str(s->p, PARAM_content_filter);
    if (filter && *filter)
        rc = route_spec(s->router, filter, rcpt, "FILTER action", &r);
    else if (*cf)
        rc = route_spec(s->router, cf, rcpt, "content_filter", &r);
    else
        rc = route_recipient(s->router, rcpt, &r);
    if (rc != 0)
        buf_printf(&s->trace, "  route: %s: delivery would be deferred: %s\n", rcpt, r.nexthop);
    else
        buf_printf(&s->trace, "  route: %s: class %s -> %s:%s (%s)\n", rcpt, cls[r.cls], r.transport, r.nexthop,
                   r.origin);
}

static int simulate(policy_t *pol, const service_t *sv, const check_opts_t *o, const client_addr_t *ca,
                    resolver_t *res, router_t *router)
{
    const params_t *p = sv->params;
    sim_t s = {.pol = pol, .p = p, .want_trace = o->trace, .res = res, .router = router};
    buf_t filter = BUF_INIT;   /* the message's FILTER action so far */
    buf_t names = BUF_INIT;   /* the trace of the name lookup, shown under CONNECT */
    verdict_init(&s.v);
    bool delay = policy_delay_reject(pol);
    /* --client-name: a verified name, as given; otherwise what DNS says. */
    peer_names_t pn;
    if (o->client_name) {
        peer_names_unknown(&pn);
        str_copy(pn.name, o->client_name, sizeof pn.name);
        str_copy(pn.reverse, o->client_name, sizeof pn.reverse);
        pn.name_code = pn.reverse_code = pn.forward_code = str_ieq(o->client_name, "unknown") ? 5 : 0;
    } else if (param_bool(p, PARAM_smtpd_peername_lookup)) {
        resolve_client(res, ca->text, &pn, o->trace ? &names : NULL);
    } else {
        peer_names_unknown(&pn);
    }
    const char *name = pn.name;
    s.st = (pstate_t){
        .peer = (const struct sockaddr *)&ca->ss,
        .client_addr = ca->text,
        .client_name = pn.name,
        .reverse_name = pn.reverse,
        .protocol = o->smtp ? "SMTP" : "ESMTP",
        .dns = res->memo,
        .service = sv->name,   /* the limits' log lines name it, as the server's */
        .name_code = pn.name_code,
        .reverse_code = pn.reverse_code,
        .forward_code = pn.forward_code,
    };
    policy_prefetch(pol, &s.st);
    buf_t label = BUF_INIT, ok = BUF_INIT, denied = BUF_INIT;
    char *from_copy = NULL;

    /* Implicit TLS: the new-TLS-session limit before the handshake, which
     * comes before the greeting; a refusal closes the connection without
     * a word (a plaintext reply means nothing to a TLS client). */
    bool wrapper = param_bool(p, PARAM_smtpd_tls_wrappermode);
    if (wrapper) {
        if (eval(&s, PCMD_STARTTLS) != V_PERMIT) {
            show(&s, "TLS handshake (smtpd_tls_wrappermode)", NULL);
            fputs("  log: wrapper mode: the server closes the connection without a reply\n", stdout);
            buf_puts(&denied, CLOSED);
        } else {
            show(&s, "TLS handshake (smtpd_tls_wrappermode)", "ok");
            fill_tls(&s.st, o);
        }
    }

    buf_printf(&label, "CONNECT from %s[%s]", name, ca->text);
    buf_printf(&ok, "220 %s", param_str(p, PARAM_smtpd_banner));
    if (denied.len) {
        show_plain(&s, buf_cstr(&label), buf_cstr(&denied));
    /* As the session: with smtpd_delay_reject only the limits run here. */
    } else if (eval(&s, PCMD_CONNECT) != V_PERMIT) {
        show(&s, buf_cstr(&label), NULL);
        /* RFC 5321 3.1: the session stays open, every command but QUIT gets 503. */
        buf_printf(&denied, "503 5.7.0 Error: access denied for %s[%s]", name, ca->text);
    } else {
        if (!delay)
            keep_postponed(&s);
        else if (s.want_trace)
            buf_puts(&s.trace, "  smtpd_delay_reject = yes: client, helo and sender restrictions run at RCPT\n");
        show(&s, buf_cstr(&label), buf_cstr(&ok));
    }
    print_lines(stdout, "", &names);
    buf_free(&names);

    /* STARTTLS right after the greeting (the EHLO below stands for the one
     * a client sends after the handshake): the new-TLS-session limit, then
     * the rest of the session sees the TLS state the options describe. */
    if (o->tls && !wrapper) {
        if (denied.len) {
            show_plain(&s, "STARTTLS", buf_cstr(&denied));
        } else if (eval(&s, PCMD_STARTTLS) != V_PERMIT) {
            show(&s, "STARTTLS", NULL);
            if (s.v.code == 421) {
                fputs("  log: the server closes the connection\n", stdout);
                buf_puts(&denied, CLOSED);
            }
        } else {
            show(&s, "STARTTLS", OK_STARTTLS);
            fill_tls(&s.st, o);
        }
    }

    const char *helo_verb = o->smtp ? "HELO" : "EHLO";
    if (o->helo) {
        buf_reset(&label);
        buf_printf(&label, "%s %s", helo_verb, o->helo);
        buf_reset(&ok);
        buf_printf(&ok, "250 %s", param_str(p, PARAM_myhostname));
        if (denied.len) {
            show_plain(&s, buf_cstr(&label), buf_cstr(&denied));
        } else {
            s.st.helo = o->helo;
            verdict_reset(&s.v);
            buf_reset(&s.trace);
            if (!delay && eval(&s, PCMD_HELO) != V_PERMIT) {
                show(&s, buf_cstr(&label), NULL);
                s.st.helo = NULL;   /* the session keeps no refused name */
            } else {
                if (!delay)
                    keep_postponed(&s);
                show(&s, buf_cstr(&label), buf_cstr(&ok));
            }
        }
    }

    /* AUTH after EHLO: the AUTH command rate limit; a refused AUTH leaves
     * the client unauthenticated.  The backend's answer is assumed
     * (--sasl-user says the password was right). */
    if (o->sasl_user) {
        const char *method = o->sasl_method ? o->sasl_method : "PLAIN";
        buf_reset(&label);
        buf_printf(&label, "AUTH %s", method);
        if (denied.len) {
            show_plain(&s, buf_cstr(&label), buf_cstr(&denied));
        } else if (eval(&s, PCMD_AUTH) != V_PERMIT) {
            show(&s, buf_cstr(&label), NULL);
        } else {
            show(&s, buf_cstr(&label), OK_AUTH);
            s.st.sasl_user = o->sasl_user;
            s.st.sasl_method = method;
            s.st.sasl_sender = o->sasl_sender;
        }
    }

    bool in_mail = !o->from;   /* without --from: RCPTs are decided with no sender */
    if (o->from) {
        const char *sender = strip_brackets(o->from, &from_copy);
        buf_reset(&label);
        buf_printf(&label, "MAIL FROM:<%s>", sender);
        if (denied.len) {
            show_plain(&s, buf_cstr(&label), buf_cstr(&denied));
        } else if (!s.st.helo && param_bool(p, PARAM_smtpd_helo_required)) {
            show_plain(&s, buf_cstr(&label), "503 5.5.1 Error: send HELO/EHLO first");
        } else {
            s.st.sender = sender;
            verdict_reset(&s.v);
            buf_reset(&s.trace);
            if (eval(&s, PCMD_MAIL) != V_PERMIT) {
                show(&s, buf_cstr(&label), NULL);
                s.st.sender = NULL;
            } else {
                in_mail = true;
                if (!delay) {
                    s.discard = s.v.discard;
                    keep_postponed(&s);
                }
                show(&s, buf_cstr(&label), OK_MAIL);
            }
        }
    }

    char **accepted = xcalloc(o->nrcpt + 1, sizeof *accepted);
    for (size_t i = 0; i < o->nrcpt; i++) {
        char *keep;
        const char *given = strip_brackets(o->rcpts[i], &keep);
        bool postmaster = !strchr(given, '@') && str_ieq(given, "postmaster");
        char *rcpt = complete_recipient(pol, p, given);
        free(keep);
        buf_reset(&label);
        buf_printf(&label, "RCPT TO:<%s>", rcpt);
        if (denied.len || !in_mail) {
            show_plain(&s, buf_cstr(&label), denied.len ? buf_cstr(&denied) : "503 5.5.1 Error: need MAIL command");
            free(rcpt);
            continue;
        }
        s.st.recipient = rcpt;
        buf_reset(&s.trace);
        buf_reset(&s.text);
        vstatus_t r = rcpt_wait(res, pol, &s.st, postmaster, s.discard, delay ? NULL : s.postponed, &s.v,
                                s.want_trace ? &s.trace : NULL);
        if (r != V_PERMIT) {
            s.refused = true;
            policy_reply_text(pol, &s.v, &s.st, &s.text);
        }
        if (r == V_PERMIT) {
            if (s.v.discard)
                s.discard = true;
            if (s.v.filter.len) {
                buf_reset(&filter);
                buf_puts(&filter, buf_cstr(&s.v.filter));
            }
            if (s.want_trace && !s.discard)
                trace_route(&s, rcpt, buf_cstr(&filter));
            accepted[s.st.nrcpt++] = rcpt;
        }
        show(&s, buf_cstr(&label), OK_RCPT);
        s.st.recipient = NULL;
        if (r != V_PERMIT)
            free(rcpt);
    }

    if (denied.len) {
        show_plain(&s, "DATA", buf_cstr(&denied));
    } else if (s.st.nrcpt == 0) {
        show_plain(&s, "DATA", NO_RCPT);
    } else {
        s.st.recipient = s.st.nrcpt == 1 ? accepted[0] : NULL;
        verdict_reset(&s.v);
        buf_reset(&s.trace);
        if (s.discard || eval(&s, PCMD_DATA) == V_PERMIT) {
            show(&s, "DATA", OK_DATA);
            if (s.v.discard)
                s.discard = true;
            verdict_reset(&s.v);
            buf_reset(&s.trace);
            if (s.discard || eval(&s, PCMD_EOD) == V_PERMIT) {
                bool dropped = s.discard || s.v.discard;
                show(&s, "END-OF-DATA", OK_EOD);
                if (dropped && !s.v.discard)
                    fputs("  action: DISCARD (the message is accepted and dropped)\n", stdout);
            } else {
                show(&s, "END-OF-DATA", NULL);
            }
        } else {
            show(&s, "DATA", NULL);
        }
    }

    for (size_t i = 0; i < s.st.nrcpt; i++)
        free(accepted[i]);
    free(accepted);
    free(from_copy);
    free(s.postponed);
    buf_free(&filter);
    buf_free(&label);
    buf_free(&ok);
    buf_free(&denied);
    buf_free(&s.trace);
    buf_free(&s.text);
    verdict_free(&s.v);
    return s.refused ? 1 : 0;
}

/* ---------- --script: Postfix's smtpd_check driver language ---------- */

/*
 * Settings accumulate into a main.cf text that is loaded with
 * config_load_text() and compiled with policy_new() before the next
 * query.  Postfix's driver reports a bad restriction only when a query
 * reaches it; moat compiles every list at once, so a list that fails
 * (named by its main.cf line) is left out of the compile and every
 * query that would run its class answers "451 4.3.5 Server
 * configuration error" after the reasons, while other queries go on.
 */

typedef struct setting {
    char *name, *value;
} setting_t;

typedef struct script {
    setting_t *set;
    size_t nset;
    const char *dir;        /* relative table names resolve here */
    config_t *cfg;
    policy_t *pol;
    bool dirty;
    buf_t errors;           /* reasons the whole policy could not be built */
    bool broken[RC__COUNT]; /* classes whose list failed to compile */
    buf_t class_err[RC__COUNT];
    bool trace;
    /* the driver's client state */
    client_addr_t ca;
    bool have_client;
    char *client_name, *helo, *sender, *rcpt;
    char *fingerprint;      /* "fingerprint FP": a TLS session with a (not verified) client certificate */
    char name_code;         /* "client NAME ADDR [CODE]": 0 ok, 4 temporary, 5 permanent */
    resolver_t res;
} script_t;

static const struct {
    const char *shortname;
    param_id id;
    rclass_t rc;
} class_params[] = {
    {"client_restrictions", PARAM_smtpd_client_restrictions, RC_CLIENT},
    {"helo_restrictions", PARAM_smtpd_helo_restrictions, RC_HELO},
    {"sender_restrictions", PARAM_smtpd_sender_restrictions, RC_SENDER},
    {"relay_restrictions", PARAM_smtpd_relay_restrictions, RC_RELAY},
    {"recipient_restrictions", PARAM_smtpd_recipient_restrictions, RC_RECIPIENT},
    {"data_restrictions", PARAM_smtpd_data_restrictions, RC_DATA},
    {"end_of_data_restrictions", PARAM_smtpd_end_of_data_restrictions, RC_EOD},
    {"etrn_restrictions", PARAM_smtpd_etrn_restrictions, RC_ETRN},
};

static setting_t *find_setting(script_t *sc, const char *name)
{
    for (size_t i = 0; i < sc->nset; i++)
        if (strcmp(sc->set[i].name, name) == 0)
            return &sc->set[i];
    return NULL;
}

static void set_value(script_t *sc, const char *name, const char *value)
{
    setting_t *s = find_setting(sc, name);
    if (!s) {
        sc->set = xrealloc(sc->set, (sc->nset + 1) * sizeof *sc->set);
        s = &sc->set[sc->nset++];
        s->name = xstrdup(name);
        s->value = NULL;
    }
    free(s->value);
    s->value = xstrdup(value);
    sc->dirty = true;
}

static const char *full_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(class_params); i++)
        if (strcmp(name, class_params[i].shortname) == 0)
            return param_name(class_params[i].id);
    return name;
}

/* Which class a main.cf parameter name feeds, or -1. */
static int class_of(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(class_params); i++)
        if (strcmp(name, param_name(class_params[i].id)) == 0)
            return (int)class_params[i].rc;
    return -1;
}

/* main.cf text; line_of[k] is the setting on line k+1 (or -1). */
static char *main_text(const script_t *sc, const bool *blank, int **line_of, int *nlines)
{
    buf_t b = BUF_INIT;
    *line_of = xcalloc(sc->nset + 1, sizeof **line_of);
    int n = 0;
    for (size_t i = 0; i < sc->nset; i++) {
        buf_printf(&b, "%s = %s\n", sc->set[i].name, blank && blank[i] ? "" : sc->set[i].value);
        (*line_of)[n++] = (int)i;
    }
    *nlines = n;
    return buf_steal(&b);
}

/* The setting named by an error line "<...>main.cf:N: ...", or -1. */
static int error_setting(const char *line, const int *line_of, int nlines)
{
    const char *m = strstr(line, "main.cf:");
    if (!m)
        return -1;
    long n = strtol(m + 8, NULL, 10);
    return (n >= 1 && n <= nlines) ? line_of[n - 1] : -1;
}

static const params_t *policy_params(const config_t *cfg)
{
    return config_nservices(cfg) ? config_service(cfg, 0)->params : config_main(cfg);
}

static void script_reset_policy(script_t *sc)
{
    policy_free(&sc->pol);
    config_free(&sc->cfg);
    buf_reset(&sc->errors);
    for (int c = 0; c < RC__COUNT; c++) {
        sc->broken[c] = false;
        buf_reset(&sc->class_err[c]);
    }
}

/* Build config + policy; lists that fail are blanked and remembered. */
static void script_build(script_t *sc)
{
    if (!sc->dirty)
        return;
    sc->dirty = false;
    script_reset_policy(sc);
    bool *blank = xcalloc(sc->nset + 1, sizeof *blank);
    /* Each round blanks at least one more list, so this ends. */
    for (size_t round = 0; round <= sc->nset + 1; round++) {
        int *line_of, nlines;
        char *text = main_text(sc, blank, &line_of, &nlines);
        buf_t err = BUF_INIT;
        sc->cfg = config_load_text(text, NULL, &err, NULL);
        if (sc->cfg)
            sc->pol = policy_new(policy_params(sc->cfg), sc->dir, &err);
        bool progress = false;
        if (!sc->pol) {
            const char *p = buf_cstr(&err);
            while (*p) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                char *line = xstrndup(p, n);
                int k = error_setting(line, line_of, nlines);
                int rc = k >= 0 ? class_of(sc->set[k].name) : -1;
                if (rc >= 0 && !blank[k]) {
                    blank[k] = true;
                    progress = true;
                }
                if (rc >= 0) {
                    sc->broken[rc] = true;
                    buf_printf(&sc->class_err[rc], "%s\n", line);
                }
                free(line);
                p += n + (nl ? 1 : 0);
            }
            if (!progress) {
                buf_reset(&sc->errors);
                buf_append(&sc->errors, err.data ? err.data : "", err.len);
                if (!sc->errors.len)
                    buf_puts(&sc->errors, "the configuration did not load\n");
            } else {
                config_free(&sc->cfg);
            }
        }
        buf_free(&err);
        free(text);
        free(line_of);
        if (sc->pol || !progress)
            break;
    }
    free(blank);
}

/* The classes the driver's query runs (Postfix's smtpd_check: with
 * smtpd_delay_reject the client, helo and sender lists run at RCPT). */
static bool query_hits_broken(const script_t *sc, pcmd_t cmd, buf_t *why)
{
    bool delay = sc->cfg ? param_bool(config_main(sc->cfg), PARAM_smtpd_delay_reject) : false;
    bool run[RC__COUNT] = {false};
    switch (cmd) {
    case PCMD_CONNECT: run[RC_CLIENT] = !delay; break;
    case PCMD_HELO: run[RC_HELO] = !delay; break;
    case PCMD_MAIL: run[RC_SENDER] = !delay; break;
    case PCMD_RCPT:
        run[RC_CLIENT] = run[RC_HELO] = run[RC_SENDER] = delay;
        run[RC_RELAY] = run[RC_RECIPIENT] = true;
        break;
    default: break;
    }
    bool hit = false;
    for (int c = 0; c < RC__COUNT; c++)
        if (run[c] && sc->broken[c]) {
            buf_append(why, sc->class_err[c].data ? sc->class_err[c].data : "", sc->class_err[c].len);
            hit = true;
        }
    return hit;
}

static void script_query(script_t *sc, pcmd_t cmd)
{
    script_build(sc);
    buf_t why = BUF_INIT;
    if (!sc->pol) {
        print_lines(stdout, "moat: error: ", &sc->errors);
        puts("451 4.3.5 Server configuration error");
        return;
    }
    if (query_hits_broken(sc, cmd, &why)) {
        print_lines(stdout, "moat: error: ", &why);
        puts("451 4.3.5 Server configuration error");
        buf_free(&why);
        return;
    }
    if (!resolver_open(&sc->res, config_main(sc->cfg), &why)) {
        print_lines(stdout, "moat: error: ", &why);
        puts("451 4.3.5 Server configuration error");
        buf_free(&why);
        return;
    }
    buf_free(&why);
    const char *name = sc->client_name ? sc->client_name : "unknown";
    pstate_t st = {
        .peer = (const struct sockaddr *)&sc->ca.ss,
        .client_addr = sc->have_client ? sc->ca.text : "unknown",
        .client_name = name,
        .reverse_name = name,
        .helo = sc->helo,
        .sender = sc->sender,
        .recipient = cmd == PCMD_RCPT ? sc->rcpt : NULL,
        .protocol = "SMTP",
        .dns = sc->res.memo,
        .name_code = sc->name_code,
        .reverse_code = sc->name_code,
        .forward_code = sc->name_code,
    };
    if (sc->fingerprint) {
        /* Postfix's driver: the certificate and its key share the print */
        check_opts_t o = {.ccert_fp = sc->fingerprint, .ccert_pk = sc->fingerprint};
        fill_tls(&st, &o);
    }
    verdict_t v;
    verdict_init(&v);
    buf_t trace = BUF_INIT;
    vstatus_t r = eval_wait(&sc->res, sc->pol, cmd, &st, &v, sc->trace ? &trace : NULL);
    print_lines(stdout, "moat: log: ", &v.warnings);
    if (sc->trace) {
        /* the engine indents its lines for the per-command layout; here
         * each is prefixed instead */
        buf_t flat = BUF_INIT;
        for (const char *q = buf_cstr(&trace); *q;) {
            while (*q == ' ')
                q++;
            const char *nl = strchr(q, '\n');
            size_t n = nl ? (size_t)(nl - q) + 1 : strlen(q);
            buf_append(&flat, q, n);
            q += n;
        }
        print_lines(stdout, "moat: trace: ", &flat);
        buf_free(&flat);
    }
    if (r == V_PERMIT) {
        puts("OK");
    } else {
        fputs(buf_cstr(&v.reply), stdout);
        if (v.rule[0])
            printf("; rule=%s", v.rule);
        if (v.origin.file)
            printf(" table=%s:%d", v.origin.file, v.origin.line);
        putchar('\n');
    }
    buf_free(&trace);
    verdict_free(&v);
}

static void replace(char **slot, const char *value)
{
    free(*slot);
    *slot = value ? xstrdup(value) : NULL;
}

/* One driver line, already echoed.  Words split on white space; { } keep
 * their contents (inline:{a=b, c=d}) in one word. */
static void script_line(script_t *sc, char *line)
{
    char *w[8];
    int nw = 0;
    char *p = line;
    while (*p && nw < (int)ARRAY_LEN(w)) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        w[nw++] = p;
        int depth = 0;
        while (*p && (depth > 0 || (*p != ' ' && *p != '\t'))) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
            p++;
        }
        if (*p)
            *p++ = 0;
    }
    if (nw == 0)
        return;
    const char *cmd = w[0];
    if (strcmp(cmd, "client") == 0 && (nw == 3 || nw == 4)) {
        if (!parse_client(w[2], &sc->ca)) {
            /* The driver takes any text ("client dummy dummy"): keep it as
             * the address text, with a peer of no family, which no network
             * list matches. */
            memset(&sc->ca, 0, sizeof sc->ca);
            str_copy(sc->ca.text, w[2], sizeof sc->ca.text);
        }
        sc->have_client = true;
        replace(&sc->client_name, w[1]);
        /* The driver's name status: "unknown" is a temporary failure
         * unless a code says otherwise (2 ok, 4 temporary, 5 permanent). */
        sc->name_code = strcmp(w[1], "unknown") == 0 ? 4 : 0;
        if (nw == 4)
            sc->name_code = w[3][0] == '2' ? 0 : w[3][0] == '4' ? 4 : 5;
        script_query(sc, PCMD_CONNECT);
        return;
    }
    if (nw == 2 && (strcmp(cmd, "helo") == 0 || strcmp(cmd, "mail") == 0 || strcmp(cmd, "rcpt") == 0)) {
        char *keep;
        const char *a = strip_brackets(w[1], &keep);
        pcmd_t pc = cmd[0] == 'h' ? PCMD_HELO : cmd[0] == 'm' ? PCMD_MAIL : PCMD_RCPT;
        replace(pc == PCMD_HELO ? &sc->helo : pc == PCMD_MAIL ? &sc->sender : &sc->rcpt, a);
        free(keep);
        script_query(sc, pc);
        return;
    }
    if (nw == 2 && strcmp(cmd, "restriction_class") == 0) {
        char *comma = strchr(w[1], ',');
        if (!comma || comma == w[1]) {
            puts("bad command");
            return;
        }
        *comma = 0;
        setting_t *cls = find_setting(sc, "smtpd_restriction_classes");
        bool listed = false;
        if (cls) {
            /* whole-word search in the existing list */
            size_t n = strlen(w[1]);
            for (const char *q = cls->value; (q = strstr(q, w[1])) != NULL; q += n)
                if ((q == cls->value || q[-1] == ' ') && (q[n] == 0 || q[n] == ' '))
                    listed = true;
        }
        if (!listed) {
            buf_t b = BUF_INIT;
            buf_printf(&b, "%s%s%s", cls ? cls->value : "", cls && cls->value[0] ? " " : "", w[1]);
            set_value(sc, "smtpd_restriction_classes", buf_cstr(&b));
            buf_free(&b);
        }
        set_value(sc, w[1], comma + 1);
        puts("OK");
        return;
    }
    if (nw == 2 && strcmp(cmd, "fingerprint") == 0) {
        replace(&sc->fingerprint, w[1]);
        puts("OK");
        return;
    }
    if (nw == 1 && (strcmp(cmd, "rewrite") == 0 || strcmp(cmd, "flush_dnsxl_cache") == 0)) {
        printf("moat: error: %s: not supported by this version of moat\n", cmd);
        puts("OK");
        return;
    }
    if (nw == 2) {
        /* Any main.cf parameter; problems surface at the next query. */
        set_value(sc, full_name(cmd), w[1]);
        puts("OK");
        return;
    }
    puts("bad command");
}

static int run_script(const check_opts_t *o)
{
    FILE *in = stdin;
    if (strcmp(o->script, "-") != 0 && !(in = fopen(o->script, "r"))) {
        fprintf(stderr, "moat: check: %s: %s\n", o->script, strerror(errno));
        return 2;
    }
    char cwd[PATH_MAX];
    script_t sc = {.trace = o->trace, .dirty = true};
    if (o->dir)
        sc.dir = o->dir;
    else
        sc.dir = getcwd(cwd, sizeof cwd) ? cwd : ".";
    /* Postfix's driver starts with an empty relay list.  moat refuses a
     * configuration that does not end unauthorized destinations, so the
     * stand-in permits at once (same outcome as an empty list) and names
     * reject_unauth_destination after it to satisfy that guard. */
    set_value(&sc, "smtpd_relay_restrictions", "permit, reject_unauth_destination");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) != -1) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        printf(">>> %s\n", line);
        if (line[0] == '#' || line[0] == 0)
            continue;
        script_line(&sc, line);
        fflush(stdout);
    }
    free(line);
    if (in != stdin)
        fclose(in);
    dns_memo_free(&sc.res.memo);   /* before the policy: it cancels policy requests */
    script_reset_policy(&sc);
    resolver_close(&sc.res);
    buf_free(&sc.errors);
    for (int c = 0; c < RC__COUNT; c++)
        buf_free(&sc.class_err[c]);
    for (size_t i = 0; i < sc.nset; i++) {
        free(sc.set[i].name);
        free(sc.set[i].value);
    }
    free(sc.set);
    free(sc.client_name);
    free(sc.helo);
    free(sc.sender);
    free(sc.rcpt);
    free(sc.fingerprint);
    return 0;
}

/* ---------- entry ---------- */

enum { O_CLIENT = 256, O_CLIENT_NAME, O_HELO, O_FROM, O_RCPT, O_ESMTP, O_SMTP, O_SASL, O_SERVICE, O_TRACE, O_SCRIPT,
       O_TLS, O_TLS_PROTOCOL, O_TLS_CIPHER, O_CCERT_FP, O_CCERT_PK, O_CCERT_VERIFIED, O_CCERT_SUBJECT,
       O_CCERT_ISSUER, O_SASL_METHOD, O_SASL_SENDER };

static const struct option long_opts[] = {
    {"client", required_argument, NULL, O_CLIENT},
    {"client-name", required_argument, NULL, O_CLIENT_NAME},
    {"helo", required_argument, NULL, O_HELO},
    {"from", required_argument, NULL, O_FROM},
    {"rcpt", required_argument, NULL, O_RCPT},
    {"esmtp", no_argument, NULL, O_ESMTP},
    {"smtp", no_argument, NULL, O_SMTP},
    {"sasl-user", required_argument, NULL, O_SASL},
    {"sasl-method", required_argument, NULL, O_SASL_METHOD},
    {"sasl-sender", required_argument, NULL, O_SASL_SENDER},
    {"tls", no_argument, NULL, O_TLS},
    {"tls-protocol", required_argument, NULL, O_TLS_PROTOCOL},
    {"tls-cipher", required_argument, NULL, O_TLS_CIPHER},
    {"ccert-fingerprint", required_argument, NULL, O_CCERT_FP},
    {"ccert-pubkey-fingerprint", required_argument, NULL, O_CCERT_PK},
    {"ccert-verified", no_argument, NULL, O_CCERT_VERIFIED},
    {"ccert-subject", required_argument, NULL, O_CCERT_SUBJECT},
    {"ccert-issuer", required_argument, NULL, O_CCERT_ISSUER},
    {"service", required_argument, NULL, O_SERVICE},
    {"trace", no_argument, NULL, O_TRACE},
    {"script", required_argument, NULL, O_SCRIPT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int usage_error(const char *msg)
{
    if (msg)
        fprintf(stderr, "moat: check: %s\n", msg);
    fputs(usage_text, stderr);
    return 2;
}

int cmd_check(int argc, char **argv)
{
    check_opts_t o = {0};
    char confbuf[PATH_MAX];
    int c, rc = 2;
    o.rcpts = xcalloc((size_t)argc + 1, sizeof *o.rcpts);
    optind = 0;   /* glibc: reinitialize completely */
    opterr = 1;
    while ((c = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (!realpath(optarg, confbuf)) {
                fprintf(stderr, "moat: check: %s: %s\n", optarg, strerror(errno));
                goto out;
            }
            o.dir = confbuf;
            break;
        case O_CLIENT: o.client = optarg; break;
        case O_CLIENT_NAME: o.client_name = optarg; break;
        case O_HELO: o.helo = optarg; break;
        case O_FROM: o.from = optarg; break;
        case O_RCPT: o.rcpts[o.nrcpt++] = optarg; break;
        case O_ESMTP: o.smtp = false; break;
        case O_SMTP: o.smtp = true; break;
        case O_SASL: o.sasl_user = optarg; break;
        case O_SASL_METHOD: o.sasl_method = optarg; break;
        case O_SASL_SENDER: o.sasl_sender = optarg; break;
        case O_TLS: o.tls = true; break;
        case O_TLS_PROTOCOL: o.tls_protocol = optarg; o.tls = true; break;
        case O_TLS_CIPHER: o.tls_cipher = optarg; o.tls = true; break;
        case O_CCERT_FP: o.ccert_fp = optarg; o.tls = true; break;
        case O_CCERT_PK: o.ccert_pk = optarg; o.tls = true; break;
        case O_CCERT_VERIFIED: o.ccert_verified = true; o.tls = true; break;
        case O_CCERT_SUBJECT: o.ccert_subject = optarg; o.tls = true; break;
        case O_CCERT_ISSUER: o.ccert_issuer = optarg; o.tls = true; break;
        case O_SERVICE: o.service = optarg; break;
        case O_TRACE: o.trace = true; break;
        case O_SCRIPT: o.script = optarg; break;
        case 'h':
            fputs(usage_text, stdout);
            rc = 0;
            goto out;
        default: rc = usage_error(NULL); goto out;
        }
    }
    if (optind < argc) {
        rc = usage_error("unexpected argument");
        goto out;
    }
    if (o.script) {
        if (o.client || o.nrcpt || o.from || o.helo || o.tls || o.sasl_user) {
            rc = usage_error("--script excludes --client/--helo/--from/--rcpt and the TLS and SASL options");
            goto out;
        }
        rc = run_script(&o);
        goto out;
    }
    client_addr_t ca;
    if (!o.client) {
        rc = usage_error("--client IP is required");
        goto out;
    }
    if (!parse_client(o.client, &ca)) {
        fprintf(stderr, "moat: check: --client %s: not an IPv4 or IPv6 address\n", o.client);
        goto out;
    }
    if (o.nrcpt == 0) {
        rc = usage_error("at least one --rcpt ADDR is required");
        goto out;
    }
    /* The session knows a certificate by its fingerprint: the other
     * certificate options describe that one. */
    if (!o.ccert_fp && (o.ccert_pk || o.ccert_verified || o.ccert_subject || o.ccert_issuer)) {
        rc = usage_error("--ccert-pubkey-fingerprint, --ccert-verified, --ccert-subject and --ccert-issuer "
                         "describe the certificate of --ccert-fingerprint FP");
        goto out;
    }
    if (!o.sasl_user && (o.sasl_method || o.sasl_sender)) {
        rc = usage_error("--sasl-method and --sasl-sender need --sasl-user USER");
        goto out;
    }

    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(o.dir, &err, &warn);
    cli_put(stderr, &warn);
    const service_t *sv = cfg ? cli_smtpd_service(cfg, o.service, "check", &err) : NULL;
    policy_t *pol = NULL;
    router_t *router = NULL;
    if (sv)
        pol = policy_new(sv->params, param_str(sv->params, PARAM_config_directory), &err);
    /* the daemon's queue manager would refuse to start without its router */
    if (pol)
        router = router_new(cfg, &err);
    if (!pol || !router) {
        cli_put(stderr, &err);
        if (!err.len)
            fputs("moat: check: the configuration did not load\n", stderr);
    } else {
        resolver_t res = {0};
        pool_t *pool = NULL;
        store_t *store = NULL;
        verify_t *verifier = NULL;
        buf_t why = BUF_INIT;
        if (resolver_open(&res, config_main(cfg), &err)) {
            /* The state the daemon would use, read but never written
             * (commit = false): a check leaves no greylist triplet or
             * counter behind. */
            if (policy_needs(pol) & PN_STORE) {
                pool = pool_new(res.base, 1);
                store = store_open(res.base, pool, param_str(sv->params, PARAM_state_store), &why);
                policy_env_t env = {.store = store, .store_error = store ? NULL : buf_cstr(&why)};
                /* a probe is a real SMTP conversation with the address's
                 * server: moat check makes it (the cache stays as it is) */
                if (policy_needs(pol) & PN_VERIFY) {
                    buf_t verr = BUF_INIT;
                    verifier = verify_new(res.base, pool, res.dns, cfg, NULL, NULL, &verr);
                    if (!verifier)
                        cli_put(stderr, &verr);
                    buf_free(&verr);
                    env.verify = verifier;
                }
                policy_set_env(pol, &env);
            }
            session_notes(sv, &o);
            fflush(stderr);
            rc = simulate(pol, sv, &o, &ca, &res, router);
        } else {
            cli_put(stderr, &err);
        }
        /* The policy first: its policy service connections live on the
         * resolver's loop, which must outlast them; the store before the
         * pool its LMDB work runs on. */
        dns_memo_free(&res.memo);
        policy_free(&pol);
        verify_free(&verifier);
        store_close(&store);
        pool_free(&pool);
        buf_free(&why);
        resolver_close(&res);
    }
    router_free(&router);
    policy_free(&pol);
    config_free(&cfg);
    buf_free(&err);
    buf_free(&warn);
out:
    free(o.rcpts);
    return rc;
}
