/* Unit tests for src/queue/route.c: address classes, *_transport and
 * relayhost, transport_maps keys and results (transport(5)), relay_domains
 * names and tables, route_spec, and what router_new refuses. */
#include "harness.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "queue/route.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct rt {
    char dir[64];
    config_t *cfg;
    router_t *r;
    buf_t err;
    route_t out;
} rt_t;

static void rt_file(rt_t *t, const char *name, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", t->dir, name);
    FILE *fp = fopen(p, "w");
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
}

static void rt_init(rt_t *t)
{
    memset(t, 0, sizeof *t);
    str_copy(t->dir, "/tmp/moat-route-test.XXXXXX", sizeof t->dir);
    if (!mkdtemp(t->dir))
        t->dir[0] = 0;
}

static const char base_master[] = "127.0.0.1:2525 inet n - n - - smtpd\n"
                                  "scan unix - - n - 2 smtp\n"
                                  "dovecot unix - - n - - lmtp\n"
                                  "bounceit unix - - n - - error\n";

/* main.cf = a fixed head + main_cf ("%D" is the fixture directory). */
static bool rt_load(rt_t *t, const char *main_cf)
{
    router_free(&t->r);
    config_free(&t->cfg);
    buf_reset(&t->err);
    buf_t text = BUF_INIT;
    buf_printf(&text, "config_directory = %s\nmyhostname = mx.example.test\nmydomain = example.test\n"
                      "myorigin = $mydomain\nmydestination = $myhostname, localhost\n",
               t->dir);
    for (const char *p = main_cf; *p; p++) {
        if (p[0] == '%' && p[1] == 'D') {
            buf_puts(&text, t->dir);
            p++;
        } else {
            buf_putc(&text, *p);
        }
    }
    t->cfg = config_load_text(buf_cstr(&text), base_master, &t->err, NULL);
    buf_free(&text);
    if (!t->cfg)
        return false;
    t->r = router_new(t->cfg, &t->err);
    return t->r != NULL;
}

static void rt_done(rt_t *t)
{
    router_free(&t->r);
    config_free(&t->cfg);
    buf_free(&t->err);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (t->dir[0] && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", t->dir);
}

/* "class transport:nexthop (origin)" of rcpt, or "FAIL: reason". */
static const char *rt(rt_t *t, const char *rcpt)
{
    static char line[1024];
    if (route_recipient(t->r, rcpt, &t->out) != 0) {
        snprintf(line, sizeof line, "FAIL: %s", t->out.nexthop);
        return line;
    }
    static const char *const cls[] = {"local", "relay", "default"};
    snprintf(line, sizeof line, "%s %s:%s (%s)", cls[t->out.cls], t->out.transport, t->out.nexthop, t->out.origin);
    return line;
}

static const char *spec(rt_t *t, const char *s, const char *rcpt)
{
    static char line[1024];
    if (route_spec(t->r, s, rcpt, "content_filter", &t->out) != 0) {
        snprintf(line, sizeof line, "FAIL: %s", t->out.nexthop);
        return line;
    }
    snprintf(line, sizeof line, "%s:%s (%s)", t->out.transport, t->out.nexthop, t->out.origin);
    return line;
}

TEST(route_classes_and_defaults)
{
    rt_t t;
    rt_init(&t);
    REQUIRE(rt_load(&t, "relay_domains = example.test, relay.test\n"));
    CHECK_STR(rt(&t, "u@mx.example.test"), "local local:mx.example.test (local_transport)");
    CHECK_STR(rt(&t, "u@LOCALHOST."), "local local:localhost (local_transport)");
    CHECK_STR(rt(&t, "u@example.test"), "relay relay:example.test (relay_transport)");
    /* relay_domains: a listed domain matches its subdomains (Postfix's default
     * parent_domain_matches_subdomains lists relay_domains) */
    CHECK_STR(rt(&t, "u@a.b.Relay.Test"), "relay relay:a.b.relay.test (relay_transport)");
    CHECK_STR(rt(&t, "u@elsewhere.test"), "default smtp:elsewhere.test (default_transport)");
    CHECK_STR(rt(&t, "u@xrelay.test"), "default smtp:xrelay.test (default_transport)");
    CHECK_STR(rt(&t, "u@[192.0.2.1]"), "default smtp:[192.0.2.1] (default_transport)");
    /* unqualified: myorigin ($mydomain here, a relay domain) */
    CHECK_STR(rt(&t, "postmaster"), "relay relay:example.test (relay_transport)");
    CHECK_STR(rt(&t, "postmaster@"), "relay relay:example.test (relay_transport)");
    CHECK_INT(route_is_relay_domain(t.r, "sub.relay.test"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "mx.example.test"), 1);   /* a subdomain of example.test */
    CHECK_INT(route_is_relay_domain(t.r, "elsewhere.test"), 0);
    rt_done(&t);
}

TEST(route_relayhost_and_class_transports)
{
    rt_t t;
    rt_init(&t);
    REQUIRE(rt_load(&t, "relay_domains = relay.test\nrelayhost = [10.0.0.1]:2525\n"));
    CHECK_STR(rt(&t, "u@relay.test"), "relay relay:[10.0.0.1]:2525 (relay_transport, relayhost)");
    CHECK_STR(rt(&t, "u@far.test"), "default smtp:[10.0.0.1]:2525 (default_transport, relayhost)");
    /* never for local mail */
    CHECK_STR(rt(&t, "u@localhost"), "local local:localhost (local_transport)");
    /* a next hop in *_transport wins over relayhost */
    REQUIRE(rt_load(&t, "relay_domains = relay.test\nrelayhost = [10.0.0.1]\n"
                        "relay_transport = scan:[127.0.0.1]:10025\ndefault_transport = error:outbound mail is off\n"
                        "local_transport = dovecot:unix:/run/dovecot/lmtp\n"));
    CHECK_STR(rt(&t, "u@relay.test"), "relay scan:[127.0.0.1]:10025 (relay_transport)");
    CHECK_STR(rt(&t, "u@far.test"), "default error:outbound mail is off (default_transport)");
    CHECK_STR(rt(&t, "u@mx.example.test"), "local dovecot:unix:/run/dovecot/lmtp (local_transport)");
    /* a transport of kind local takes the recipient domain as next hop */
    REQUIRE(rt_load(&t, "local_transport = local:$myhostname\n"));
    CHECK_STR(rt(&t, "u@localhost"), "local local:localhost (local_transport)");
    rt_done(&t);
}

TEST(route_transport_maps_keys)
{
    rt_t t;
    rt_init(&t);
    rt_file(&t, "transport",
            "user+ext@special.test  dovecot:unix:/run/lmtp\n"
            "user@special.test      smtp:[10.0.0.1]:2525\n"
            "special.test           error:5.1.1 no such domain here\n"
            ".sub.test              relay:[127.0.0.1]:1767\n"
            "sub.test               scan:[192.0.2.9]\n");
    REQUIRE(rt_load(&t, "recipient_delimiter = +\nrelay_domains = sub.test\ntransport_maps = texthash:%D/transport\n"));
    /* user+ext@domain, then user@domain (extension dropped), then the domain */
    CHECK(strstr(rt(&t, "user+ext@special.test"), "default dovecot:unix:/run/lmtp (transport_maps texthash:") != NULL);
    CHECK(strstr(rt(&t, "user+ext@special.test"), "/transport:1)") != NULL);
    CHECK(strstr(rt(&t, "user+other@special.test"), " smtp:[10.0.0.1]:2525 ") != NULL);
    CHECK(strstr(rt(&t, "USER@Special.Test"), " smtp:[10.0.0.1]:2525 ") != NULL);
    CHECK(strstr(rt(&t, "other@special.test"), " error:5.1.1 no such domain here ") != NULL);
    CHECK(strstr(t.out.origin, "/transport:3") != NULL);
    /* the domain itself, then ".parent" for subdomains */
    CHECK(strstr(rt(&t, "u@sub.test"), "relay scan:[192.0.2.9] ") != NULL);
    CHECK(strstr(rt(&t, "u@a.b.sub.test"), "relay relay:[127.0.0.1]:1767 ") != NULL);
    CHECK(strstr(t.out.origin, "/transport:4") != NULL);
    /* nothing matches: the class default */
    CHECK_STR(rt(&t, "u@nomatch.test"), "default smtp:nomatch.test (default_transport)");
    /* parent_domain_matches_subdomains = transport_maps: "sub.test" matches
     * subdomains and ".sub.test" is not asked */
    REQUIRE(rt_load(&t, "parent_domain_matches_subdomains = relay_domains transport_maps\n"
                        "relay_domains = sub.test\ntransport_maps = texthash:%D/transport\n"));
    CHECK(strstr(rt(&t, "u@a.b.sub.test"), "relay scan:[192.0.2.9] ") != NULL);
    rt_done(&t);
}

TEST(route_transport_maps_results)
{
    rt_t t;
    rt_init(&t);
    rt_file(&t, "transport",
            "hop.test     :[192.0.2.7]:26\n"
            "keep.test    :\n"
            "bare.test    scan\n"
            "colon.test   scan:\n"
            "err.test     error\n"
            "err2.test    bounceit:\n"
            "gone.test    discard:\n"
            "tunnel.test  relay:[127.0.0.1]:1767\n"
            "lmtp.test    lmtp:inet:127.0.0.1:24\n"
            "odd.test     nosuchtransport:x.test\n"
            "*            smtp:fallback.test\n");
    REQUIRE(rt_load(&t, "relay_domains = hop.test keep.test bare.test colon.test tunnel.test\n"
                        "relayhost = [10.9.9.9]\ntransport_maps = texthash:%D/transport\n"));
    /* ":nexthop": the class's transport, this next hop */
    CHECK(strstr(rt(&t, "u@hop.test"), "relay relay:[192.0.2.7]:26 ") != NULL);
    /* ":": nothing changes (relayhost still applies) */
    CHECK(strstr(rt(&t, "u@keep.test"), "relay relay:[10.9.9.9] ") != NULL);
    /* "transport" and "transport:": the next hop is the recipient domain, not relayhost */
    CHECK(strstr(rt(&t, "u@bare.test"), "relay scan:bare.test ") != NULL);
    CHECK(strstr(rt(&t, "u@colon.test"), "relay scan:colon.test ") != NULL);
    /* error without text, by name or by kind */
    CHECK(strstr(rt(&t, "u@err.test"), " error:Address is undeliverable ") != NULL);
    CHECK(strstr(rt(&t, "u@err2.test"), " bounceit:Address is undeliverable ") != NULL);
    CHECK(strstr(rt(&t, "u@gone.test"), " discard:gone.test ") != NULL);
    /* seed 003's tunnel: the next hop as written */
    CHECK(strstr(rt(&t, "u@tunnel.test"), "relay relay:[127.0.0.1]:1767 ") != NULL);
    CHECK(strstr(rt(&t, "u@lmtp.test"), " lmtp:inet:127.0.0.1:24 ") != NULL);
    /* an unknown transport is the queue manager's problem (it defers) */
    CHECK(strstr(rt(&t, "u@odd.test"), " nosuchtransport:x.test ") != NULL);
    /* "*" last */
    CHECK(strstr(rt(&t, "u@anything.test"), "default smtp:fallback.test ") != NULL);
    /* ... also for local domains: transport_maps comes first for every class */
    CHECK(strstr(rt(&t, "u@localhost"), "local smtp:fallback.test ") != NULL);
    rt_done(&t);
}

TEST(route_transport_maps_pattern_tables)
{
    rt_t t;
    rt_init(&t);
    rt_file(&t, "transport.re", "/^vip@/    scan:[192.0.2.1]\n/\\.test$/  relay:[192.0.2.2]\n");
    REQUIRE(rt_load(&t, "recipient_delimiter = +\ntransport_maps = regexp:%D/transport.re\n"));
    CHECK(strstr(rt(&t, "vip@a.test"), " scan:[192.0.2.1] ") != NULL);
    CHECK(strstr(rt(&t, "x@a.test"), " relay:[192.0.2.2] ") != NULL);
    /* only the full address: "vip+x@b.example" is not retried as "vip@b.example" */
    CHECK(strstr(rt(&t, "vip+x@b.example"), " smtp:b.example ") != NULL);
    rt_done(&t);
}

TEST(route_relay_domains_tables_and_files)
{
    rt_t t;
    rt_init(&t);
    rt_file(&t, "relays", "example.org OK\n");
    rt_file(&t, "relays.re", "/^mx[0-9]+\\.example\\.net$/ OK\n");
    rt_file(&t, "relaylist", "# relayed\nlisted.test, other.test\n");
    REQUIRE(rt_load(&t, "relay_domains = texthash:%D/relays regexp:%D/relays.re %D/relaylist !no.example.com "
                        "example.com\n"));
    CHECK_INT(route_is_relay_domain(t.r, "example.org"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "a.b.Example.ORG"), 1);   /* the table is asked for each parent */
    CHECK_INT(route_is_relay_domain(t.r, "mx12.example.net"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "a.mx12.example.net"), 0); /* pattern tables: the domain only */
    CHECK_INT(route_is_relay_domain(t.r, "listed.test"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "x.other.test"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "example.com"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "no.example.com"), 0);      /* the exclusion comes first */
    CHECK_INT(route_is_relay_domain(t.r, "yes.example.com"), 1);
    CHECK_STR(rt(&t, "u@a.example.org"), "relay relay:a.example.org (relay_transport)");
    /* without relay_domains in parent_domain_matches_subdomains: ".domain" items and keys */
    rt_file(&t, "relays", ".example.org OK\n");
    REQUIRE(rt_load(&t, "parent_domain_matches_subdomains =\nrelay_domains = texthash:%D/relays .example.com\n"));
    CHECK_INT(route_is_relay_domain(t.r, "a.example.org"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "example.org"), 0);
    CHECK_INT(route_is_relay_domain(t.r, "a.example.com"), 1);
    CHECK_INT(route_is_relay_domain(t.r, "example.com"), 0);
    rt_done(&t);
}

TEST(route_spec_forms)
{
    rt_t t;
    rt_init(&t);
    REQUIRE(rt_load(&t, "relay_domains = relay.test\nrelayhost = [10.0.0.9]\n"));
    CHECK_STR(spec(&t, "smtp:[127.0.0.1]:10025", "u@relay.test"), "smtp:[127.0.0.1]:10025 (content_filter)");
    /* empty parts: the recipient class's default */
    CHECK_STR(spec(&t, ":[127.0.0.1]:10025", "u@relay.test"), "relay:[127.0.0.1]:10025 (content_filter)");
    CHECK_STR(spec(&t, "scan:", "u@far.test"), "scan:[10.0.0.9] (content_filter)");
    /* local_transport = local:$myhostname names the local class's next hop */
    CHECK_STR(spec(&t, "scan:", "u@localhost"), "scan:mx.example.test (content_filter)");
    CHECK_STR(spec(&t, "local:", "u@far.test"), "local:far.test (content_filter)");
    CHECK_STR(spec(&t, "smtp", "u@far.test"), "FAIL: content_filter: \"smtp\": not transport:nexthop");
    rt_done(&t);
}

TEST(route_router_new_refuses)
{
    rt_t t;
    rt_init(&t);
    CHECK(!rt_load(&t, "transport_maps = texthash:%D/missing\n"));
    CHECK(strstr(buf_cstr(&t.err), "<text>/main.cf:6: ") != NULL);
    CHECK(strstr(buf_cstr(&t.err), "missing") != NULL);
    CHECK(!rt_load(&t, "relay_transport =\n"));
    CHECK(strstr(buf_cstr(&t.err), "<text>/main.cf:6: relay_transport: \"\": need a transport name") != NULL);
    CHECK(!rt_load(&t, "default_transport = :[10.0.0.1]\n"));
    CHECK(strstr(buf_cstr(&t.err), "default_transport") != NULL);
    CHECK(!rt_load(&t, "relay_domains = texthash:%D/nosuch\n"));
    CHECK(strstr(buf_cstr(&t.err), "<text>/main.cf:6: relay_domains: ") != NULL);
    CHECK(!rt_load(&t, "transport_maps = example.com\n"));
    CHECK(strstr(buf_cstr(&t.err), "need type:table") != NULL);
    rt_done(&t);
}

TEST(route_embedded_default)
{
    buf_t err = BUF_INIT;
    config_t *cfg = config_load(NULL, &err, NULL);
    REQUIRE(cfg != NULL);
    router_t *r = router_new(cfg, &err);
    REQUIRE(r != NULL);
    route_t out;
    CHECK_INT(route_recipient(r, "u@example.test", &out), 0);
    CHECK_INT(out.cls, ROUTE_LOCAL);
    CHECK_STR(out.transport, "local");
    CHECK_INT(route_recipient(r, "u@remote.example", &out), 0);
    CHECK_STR(out.transport, "smtp");
    CHECK_STR(out.nexthop, "remote.example");
    router_free(&r);
    config_free(&cfg);
    buf_free(&err);
}
