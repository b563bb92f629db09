/* Unit tests for src/tls/tls_client.c: the client's global level (and
 * the legacy switches), Postfix's policy table syntax, lookup keys with
 * parent domains, certificate name matching, policy lookups through a
 * real texthash table (file:line in errors, cipher floors per level),
 * the engine's failure modes, and real handshakes over BIO pairs against
 * a plain OpenSSL server: trusted / matched / expired / wrong name /
 * self-signed, SNI, the summary line, session resumption and the shared
 * engine cache.  Certificates come from tls_testlib.h, made once. */
#include "harness.h"
#include "tls_testlib.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "queue/smtpc-private.h"
#include "tls/tls_client.h"

#include <openssl/ssl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ fixture */

static struct {
    bool made, ok;
    tt_pki_t pki;
    tt_cert_t good, wrong, expired, self;
} fx;

static void fixture_free(void)
{
    tt_cert_free(&fx.good);
    tt_cert_free(&fx.wrong);
    tt_cert_free(&fx.expired);
    tt_cert_free(&fx.self);
    tt_pki_free(&fx.pki);
}

/* ECDSA keys: fast enough under ASan to make once per run. */
static bool fixture(void)
{
    if (fx.made)
        return fx.ok;
    fx.made = true;
    fx.ok = tt_pki_init(&fx.pki, "moat client test CA") &&
            tt_issue(&fx.pki, "mx.test", &(tt_opts_t){.ec = true, .san = {"mx.test", "mx.dest.test"}}, &fx.good) &&
            tt_issue(&fx.pki, "other.test", &(tt_opts_t){.ec = true}, &fx.wrong) &&
            tt_issue(&fx.pki, "mx.test", &(tt_opts_t){.ec = true, .days = -1}, &fx.expired) &&
            tt_issue(&fx.pki, "mx.test", &(tt_opts_t){.ec = true, .self_signed = true}, &fx.self);
    atexit(fixture_free);
    return fx.ok;
}

static config_t *load(const char *main_cf)
{
    buf_t err = BUF_INIT;
    config_t *cfg = config_load_text(main_cf, NULL, &err, NULL);
    if (!cfg)
        fprintf(stderr, "config: %s\n", buf_cstr(&err));
    buf_free(&err);
    return cfg;
}

/* ----------------------------------------------------------- levels */

static int level_of(const char *main_cf, tls_level_t *l, buf_t *err, buf_t *notes)
{
    config_t *cfg = load(main_cf);
    if (!cfg)
        return -2;
    int r = tls_client_global_level(config_main(cfg), l, err, notes);
    config_free(&cfg);
    return r;
}

TEST(tls_client_global_level_and_legacy)
{
    tls_level_t l;
    buf_t err = BUF_INIT, notes = BUF_INIT;
    CHECK_INT(level_of("", &l, &err, &notes), 0);
    CHECK_INT(l, TLS_LEV_NONE);
    CHECK_INT(level_of("smtp_use_tls = yes\n", &l, &err, &notes), 0);
    CHECK_INT(l, TLS_LEV_MAY);
    /* smtp_tls_enforce_peername defaults to yes: enforce means verify. */
    CHECK_INT(level_of("smtp_enforce_tls = yes\n", &l, &err, &notes), 0);
    CHECK_INT(l, TLS_LEV_VERIFY);
    CHECK_INT(level_of("smtp_enforce_tls = yes\nsmtp_tls_enforce_peername = no\nsmtp_use_tls = yes\n", &l, &err,
                       &notes),
              0);
    CHECK_INT(l, TLS_LEV_ENCRYPT);
    /* The level, when set, wins over the legacy switches. */
    CHECK_INT(level_of("smtp_tls_security_level = none\nsmtp_enforce_tls = yes\n", &l, &err, &notes), 0);
    CHECK_INT(l, TLS_LEV_NONE);
    CHECK_INT(level_of("smtp_tls_security_level = Secure\n", &l, &err, &notes), 0);
    CHECK_INT(l, TLS_LEV_SECURE);
    CHECK_INT(notes.len, 0);
    CHECK_INT(level_of("smtp_tls_security_level = dane\n", &l, &err, &notes), 0);
    CHECK_INT(l, TLS_LEV_MAY);
    CHECK(strstr(buf_cstr(&notes), "DNSSEC") != NULL);
    CHECK_INT(err.len, 0);
    CHECK_INT(level_of("smtp_tls_security_level = dane-only\n", &l, &err, &notes), -1);
    CHECK(strstr(buf_cstr(&err), "\"dane-only\" is not supported") != NULL);
    buf_reset(&err);
    CHECK_INT(level_of("smtp_tls_security_level = fingerprint\n", &l, &err, &notes), -1);
    buf_reset(&err);
    CHECK_INT(level_of("smtp_tls_security_level = mandatory\n", &l, &err, &notes), -1);
    CHECK_STR(buf_cstr(&err), "smtp_tls_security_level: invalid level \"mandatory\"");
    buf_free(&err);
    buf_free(&notes);
}

/* ----------------------------------------------------- policy syntax */

TEST(tls_client_policy_parse_attributes)
{
    tls_policy_t pol;
    buf_t why = BUF_INIT, notes = BUF_INIT;
    CHECK_INT(tls_policy_parse("verify match=hostname:.example.com protocols=>=TLSv1.3 ciphers=high", &pol,
                               &why, &notes),
              0);
    CHECK_INT(pol.level, TLS_LEV_VERIFY);
    REQUIRE(pol.nmatch == 2);
    CHECK_STR(pol.match[0], "hostname");
    CHECK_STR(pol.match[1], ".example.com");
    CHECK_STR(pol.protocols, ">=TLSv1.3");
    CHECK_STR(pol.grade, "high");
    CHECK(!pol.has_exclude);
    CHECK_INT(why.len, 0);
    /* match= may repeat; commas separate like white space. */
    CHECK_INT(tls_policy_parse("SECURE,match=a.test match=b.test:c.test", &pol, &why, &notes), 0);
    CHECK_INT(pol.level, TLS_LEV_SECURE);
    REQUIRE(pol.nmatch == 3);
    CHECK_STR(pol.match[2], "c.test");
    CHECK_INT(tls_policy_parse("encrypt exclude=3DES:RC4 protocols=!SSLv2:!SSLv3", &pol, &why, &notes), 0);
    CHECK_INT(pol.level, TLS_LEV_ENCRYPT);
    CHECK(pol.has_exclude);
    CHECK_STR(pol.exclude, "3DES:RC4");
    CHECK_STR(pol.protocols, "!SSLv2:!SSLv3");
    CHECK_INT(notes.len, 0);
    /* Attributes with TLS off are ignored, with a note. */
    CHECK_INT(tls_policy_parse("none ciphers=high", &pol, &why, &notes), 0);
    CHECK_INT(pol.level, TLS_LEV_NONE);
    CHECK(strstr(buf_cstr(&notes), "ignoring attribute \"ciphers=high\" with TLS disabled") != NULL);
    buf_reset(&notes);
    /* dane degrades to may (no DNSSEC here), as Postfix does without it. */
    CHECK_INT(tls_policy_parse("dane", &pol, &why, &notes), 0);
    CHECK_INT(pol.level, TLS_LEV_MAY);
    CHECK(strstr(buf_cstr(&notes), "using \"may\"") != NULL);
    CHECK_INT(why.len, 0);
    buf_free(&why);
    buf_free(&notes);
}

static const char *parse_error(const char *value, buf_t *why)
{
    tls_policy_t pol;
    buf_reset(why);
    if (tls_policy_parse(value, &pol, why, NULL) == 0)
        return "(accepted)";
    return buf_cstr(why);
}

TEST(tls_client_policy_parse_errors)
{
    buf_t why = BUF_INIT;
    CHECK_STR(parse_error("", &why), "invalid empty policy");
    CHECK_STR(parse_error("  , ", &why), "invalid empty policy");
    CHECK_STR(parse_error("maybe", &why), "invalid security level \"maybe\"");
    CHECK_STR(parse_error("may match=mx.test", &why), "attribute \"match\" invalid at security level \"may\"");
    CHECK_STR(parse_error("encrypt match=mx.test", &why),
              "attribute \"match\" invalid at security level \"encrypt\"");
    CHECK_STR(parse_error("verify match=", &why), "attribute \"match\" has empty value");
    CHECK_STR(parse_error("verify ciphers=", &why), "attribute \"ciphers\" has empty value");
    CHECK_STR(parse_error("verify ciphers=high ciphers=medium", &why),
              "attribute \"ciphers\" is specified multiple times");
    CHECK_STR(parse_error("verify protocols=TLSv1.2 protocols=TLSv1.3", &why),
              "attribute \"protocols\" is specified multiple times");
    CHECK_STR(parse_error("verify frobnicate=yes", &why), "invalid attribute name: \"frobnicate\"");
    CHECK_STR(parse_error("verify hostname", &why), "malformed attribute/value pair \"hostname\"");
    CHECK_STR(parse_error("verify =x", &why), "malformed attribute/value pair \"=x\"");
    CHECK_STR(parse_error("secure tafile=/etc/ta.pem", &why), "attribute \"tafile\" is not supported");
    CHECK_STR(parse_error("dane-only", &why), "security level \"dane-only\" is not supported");
    CHECK_STR(parse_error("fingerprint match=AB:CD", &why), "security level \"fingerprint\" is not supported");
    /* Too many names is an error, never a silently shorter list. */
    CHECK_STR(parse_error("verify match=a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q", &why), "more than 16 match names");
    buf_free(&why);
}

TEST(tls_client_policy_keys_parents)
{
    buf_t k = BUF_INIT;
    CHECK_INT(tls_policy_keys("A.B.Example.COM", false, &k), 4);
    CHECK_STR(buf_cstr(&k), "a.b.example.com\n.b.example.com\n.example.com\n.com\n");
    buf_reset(&k);
    CHECK_INT(tls_policy_keys("example.com", false, &k), 2);
    CHECK_STR(buf_cstr(&k), "example.com\n.com\n");
    buf_reset(&k);
    /* Explicit next hops match only themselves. */
    CHECK_INT(tls_policy_keys("[MX.example.com]:587", false, &k), 1);
    CHECK_STR(buf_cstr(&k), "[mx.example.com]:587\n");
    buf_reset(&k);
    CHECK_INT(tls_policy_keys("[mx.example.com]", false, &k), 1);
    CHECK_STR(buf_cstr(&k), "[mx.example.com]\n");
    buf_reset(&k);
    CHECK_INT(tls_policy_keys("mx.example.com:2525", false, &k), 1);
    buf_reset(&k);
    CHECK_INT(tls_policy_keys("192.0.2.1", false, &k), 1);
    CHECK_STR(buf_cstr(&k), "192.0.2.1\n");
    buf_reset(&k);
    CHECK_INT(tls_policy_keys("[2001:db8::1]:25", false, &k), 1);
    buf_reset(&k);
    /* LMTP: without "inet:"; a Unix socket has no TLS at all. */
    CHECK_INT(tls_policy_keys("inet:lmtp.example.com:24", true, &k), 1);
    CHECK_STR(buf_cstr(&k), "lmtp.example.com:24\n");
    buf_reset(&k);
    CHECK_INT(tls_policy_keys("unix:/var/run/lmtp", true, &k), 0);
    CHECK_INT(tls_policy_keys("", false, &k), 0);
    CHECK_INT(k.len, 0);
    buf_free(&k);
}

/* ---------------------------------------------------- name matching */

static bool matches(const char *certname, const char *list, const char *nexthop, const char *host)
{
    tls_policy_t pol;
    buf_t why = BUF_INIT;
    char value[512];
    snprintf(value, sizeof value, "secure match=%s", list);
    bool ok = tls_policy_parse(value, &pol, &why, NULL) == 0 &&
              tls_client_name_matches(certname, &pol, nexthop, host);
    buf_free(&why);
    return ok;
}

TEST(tls_client_name_matching)
{
    /* hostname: the MX host (or [host]); case does not matter. */
    CHECK(matches("mx1.example.com", "hostname", "example.com", "MX1.Example.COM"));
    CHECK(!matches("mx2.example.com", "hostname", "example.com", "mx1.example.com"));
    /* nexthop: the destination itself only. */
    CHECK(matches("example.com", "nexthop", "example.com", "mx1.example.com"));
    CHECK(!matches("mx1.example.com", "nexthop", "example.com", "mx1.example.com"));
    /* dot-nexthop: any subdomain, not the domain itself. */
    CHECK(matches("mx1.example.com", "dot-nexthop", "example.com", "x"));
    CHECK(matches("a.b.example.com", "dot-nexthop", "example.com", "x"));
    CHECK(!matches("example.com", "dot-nexthop", "example.com", "x"));
    CHECK(!matches("badexample.com", "dot-nexthop", "example.com", "x"));
    /* Literal names, and ".name" for its subdomains. */
    CHECK(matches("mail.example.net", "mail.example.net", "example.com", "x"));
    CHECK(!matches("mail.example.net", "example.net", "example.com", "x"));
    CHECK(matches("smtp.example.net", ".example.net", "example.com", "x"));
    CHECK(!matches("example.net", ".example.net", "example.com", "x"));
    /* A list: any entry will do. */
    CHECK(matches("example.com", "hostname:nexthop", "example.com", "mx1.example.com"));
    /* Wildcards: one label, a real one, and only as the whole first label. */
    CHECK(matches("*.example.com", "hostname", "example.com", "mx1.example.com"));
    CHECK(!matches("*.example.com", "hostname", "example.com", "a.b.example.com"));
    CHECK(!matches("*.example.com", "nexthop", "example.com", "x"));
    CHECK(!matches("*.example.com", "hostname", "example.com", ".example.com"));
    CHECK(!matches("f*.example.com", "hostname", "example.com", "foo.example.com"));
    CHECK(!matches("*.*.example.com", "hostname", "example.com", "a.b.example.com"));
    CHECK(!matches("*.", "hostname", "example.com", "a."));
    /* A wildcard certificate is a subdomain for dot-nexthop (Postfix). */
    CHECK(matches("*.example.com", "dot-nexthop", "example.com", "x"));
    /* Nothing to compare: no match. */
    CHECK(!matches("", "hostname", "example.com", ""));
    CHECK(!matches("mx.test", "hostname", "example.com", ""));
}

/* The client sees STARTTLS in the EHLO reply (smtpc-proto.c). */
TEST(tls_client_ehlo_starttls_keyword)
{
    smtpc_reply_t r = {0};
    smtpc_ehlo_t f;
    const char *lines[] = {"250-mx.test", "250-PIPELINING", "250-starttls", "250 8BITMIME"};
    for (size_t i = 0; i < 4; i++)
        CHECK_INT(smtpc_reply_feed(&r, lines[i], strlen(lines[i])), i == 3 ? 1 : 0);
    smtpc_ehlo_parse(&r, &f);
    CHECK(f.starttls);
    CHECK(f.pipelining);
    smtpc_reply_reset(&r);
    /* In the greeting line it is no keyword; as a prefix of another neither. */
    const char *other[] = {"250-STARTTLS mx.test", "250 STARTTLSX"};
    for (size_t i = 0; i < 2; i++)
        smtpc_reply_feed(&r, other[i], strlen(other[i]));
    smtpc_ehlo_parse(&r, &f);
    CHECK(!f.starttls);
    smtpc_reply_free(&r);
}

/* --------------------------------------------- lookups with a table */

typedef struct tdir {
    char dir[64];
    char file[128];
} tdir_t;

static bool tdir_make(tdir_t *t, const char *content)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/moat-tlsc.XXXXXX");
    if (!mkdtemp(t->dir))
        return false;
    snprintf(t->file, sizeof t->file, "%s/tls_policy", t->dir);
    FILE *f = fopen(t->file, "w");
    if (!f)
        return false;
    fputs(content, f);
    fclose(f);
    return true;
}

static void tdir_free(tdir_t *t)
{
    unlink(t->file);
    rmdir(t->dir);
}

static const char TABLE[] = "example.com        secure match=.example.com\n"
                            ".sub.example.org   verify\n"
                            "[10.0.0.1]:587     encrypt protocols=TLSv1.3\n"
                            "broken.test        verify match=\n"
                            "dane.test          dane\n"
                            "none.test          none\n"
                            "weak.test          may ciphers=low\n"
                            "excl.test          verify exclude=3DES\n";

TEST(tls_client_policy_table_lookups)
{
    tdir_t t;
    REQUIRE(tdir_make(&t, TABLE));
    char main_cf[512];
    snprintf(main_cf, sizeof main_cf,
             "smtp_tls_security_level = may\nsmtp_tls_policy_maps = texthash:%s\nsmtp_tls_exclude_ciphers = RC4\n",
             t.file);
    config_t *cfg = load(main_cf);
    REQUIRE(cfg);
    const params_t *p = config_main(cfg);
    tls_client_t *tc = tls_client_new(p, "smtp");
    CHECK(tls_client_engine_ok(tc, NULL));
    tls_policy_t pol;
    buf_t why = BUF_INIT;

    CHECK_INT(tls_client_policy(tc, p, "example.com", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_SECURE);
    REQUIRE(pol.nmatch == 1);
    CHECK_STR(pol.match[0], ".example.com");
    CHECK(strstr(pol.source, "tls_policy:1") != NULL);
    CHECK(strstr(pol.ciphers, "!aNULL") != NULL);
    CHECK(strstr(pol.ciphers, "!RC4") != NULL);
    CHECK_INT(pol.proto_min, TLS1_2_VERSION);

    /* "example.com" is exact: its subdomains fall through to the global
     * level (".example.com" would cover them). */
    CHECK_INT(tls_client_policy(tc, p, "mx.example.com", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_MAY);
    CHECK_STR(pol.source, "smtp_tls_security_level");
    CHECK(strstr(pol.ciphers, "!RC4") != NULL);
    CHECK(strstr(pol.ciphers, "!aNULL") == NULL);

    /* Parent domain entries; the default match list for verify. */
    CHECK_INT(tls_client_policy(tc, p, "a.b.sub.example.org", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_VERIFY);
    REQUIRE(pol.nmatch == 1);
    CHECK_STR(pol.match[0], "hostname");
    CHECK(strstr(pol.source, "tls_policy:2") != NULL);

    /* [host]:port as written; the mandatory floor for encrypt. */
    CHECK_INT(tls_client_policy(tc, p, "[10.0.0.1]:587", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_ENCRYPT);
    CHECK_INT(pol.proto_min, TLS1_3_VERSION);
    CHECK(strstr(pol.ciphers, "!eNULL") != NULL);
    CHECK_INT(tls_client_policy(tc, p, "[10.0.0.1]", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_MAY);

    /* exclude= replaces the parameters' exclusions, keeps the floor. */
    CHECK_INT(tls_client_policy(tc, p, "excl.test", false, &pol, &why), 0);
    CHECK(strstr(pol.ciphers, "!3DES") != NULL);
    CHECK(strstr(pol.ciphers, "!RC4") == NULL);
    CHECK(strstr(pol.ciphers, "!aNULL") != NULL);

    CHECK_INT(tls_client_policy(tc, p, "dane.test", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_MAY);
    CHECK_INT(tls_client_policy(tc, p, "none.test", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_NONE);
    CHECK_INT(why.len, 0);

    /* A bad entry never weakens the policy: the lookup fails. */
    CHECK_INT(tls_client_policy(tc, p, "broken.test", false, &pol, &why), -1);
    CHECK(strstr(buf_cstr(&why), "tls_policy:4: TLS policy for \"broken.test\": attribute \"match\" has empty value") !=
          NULL);
    buf_reset(&why);
    CHECK_INT(tls_client_policy(tc, p, "weak.test", false, &pol, &why), -1);
    CHECK(strstr(buf_cstr(&why), "low") != NULL);
    buf_reset(&why);

    /* LMTP to a Unix socket: no TLS, whatever the level. */
    CHECK_INT(tls_client_policy(tc, p, "unix:/run/lmtp", true, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_NONE);
    CHECK_INT(tls_client_policy(tc, p, "inet:example.com", true, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_SECURE);

    tls_client_unref(&tc);
    CHECK(tc == NULL);
    config_free(&cfg);
    buf_free(&why);
    tdir_free(&t);
}

TEST(tls_client_policy_configuration_errors)
{
    buf_t why = BUF_INIT;
    tls_policy_t pol;
    /* A table that cannot be opened: every lookup fails (closed). */
    config_t *cfg = load("smtp_tls_security_level = may\nsmtp_tls_policy_maps = texthash:/nonexistent/tls_policy\n");
    REQUIRE(cfg);
    tls_client_t *tc = tls_client_new(config_main(cfg), "smtp");
    CHECK_INT(tls_client_policy(tc, config_main(cfg), "example.com", false, &pol, &why), -1);
    CHECK(strstr(buf_cstr(&why), "/nonexistent/tls_policy") != NULL);
    tls_client_unref(&tc);
    config_free(&cfg);

    buf_reset(&why);
    cfg = load("smtp_tls_policy_maps = tls_policy\n");
    REQUIRE(cfg);
    tc = tls_client_new(config_main(cfg), "smtp");
    CHECK_INT(tls_client_policy(tc, config_main(cfg), "example.com", false, &pol, &why), -1);
    CHECK(strstr(buf_cstr(&why), "need type:table") != NULL);
    tls_client_unref(&tc);
    config_free(&cfg);

    buf_reset(&why);
    cfg = load("smtp_tls_security_level = paranoid\n");
    REQUIRE(cfg);
    tc = tls_client_new(config_main(cfg), "smtp");
    CHECK_INT(tls_client_policy(tc, config_main(cfg), "example.com", false, &pol, &why), -1);
    CHECK(strstr(buf_cstr(&why), "invalid level \"paranoid\"") != NULL);
    tls_client_unref(&tc);
    config_free(&cfg);

    /* A bad cipher grade in the parameters. */
    buf_reset(&why);
    cfg = load("smtp_tls_security_level = encrypt\nsmtp_tls_mandatory_ciphers = export\n");
    REQUIRE(cfg);
    tc = tls_client_new(config_main(cfg), "smtp");
    CHECK_INT(tls_client_policy(tc, config_main(cfg), "example.com", false, &pol, &why), -1);
    CHECK(strstr(buf_cstr(&why), "ciphers:") != NULL);
    tls_client_unref(&tc);
    config_free(&cfg);

    /* Unreadable trust anchors: the engine is unavailable, the policy
     * itself is fine (encrypt defers, may goes on in plaintext). */
    buf_reset(&why);
    cfg = load("smtp_tls_security_level = encrypt\nsmtp_tls_CAfile = /nonexistent/ca.pem\n");
    REQUIRE(cfg);
    tc = tls_client_new(config_main(cfg), "smtp");
    CHECK(!tls_client_engine_ok(tc, &why));
    CHECK(strstr(buf_cstr(&why), "trust anchors") != NULL);
    CHECK_INT(tls_client_policy(tc, config_main(cfg), "example.com", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_ENCRYPT);
    buf_reset(&why);
    CHECK(tls_client_ssl(tc, &pol, "mx.test", "127.0.0.1", 25, &why) == NULL);
    tls_client_unref(&tc);
    config_free(&cfg);

    /* No TLS configured at all: no engine is built, level none. */
    cfg = load("");
    REQUIRE(cfg);
    tc = tls_client_new(config_main(cfg), "smtp");
    CHECK(!tls_client_engine_ok(tc, NULL));
    CHECK_INT(tls_client_policy(tc, config_main(cfg), "example.com", false, &pol, &why), 0);
    CHECK_INT(pol.level, TLS_LEV_NONE);
    tls_client_unref(&tc);
    config_free(&cfg);
    buf_free(&why);
}

/* ------------------------------------------------------ handshakes */

static bool starts(const char *s, const char *prefix)
{
    bool ok = strncmp(s, prefix, strlen(prefix)) == 0;
    if (!ok)
        fprintf(stderr, "\"%s\" does not start with \"%s\"\n", s, prefix);
    return ok;
}

static SSL_CTX *server_ctx(const tt_cert_t *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    if (SSL_CTX_use_certificate(ctx, c->cert) != 1 || SSL_CTX_use_PrivateKey(ctx, c->key) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

typedef struct hs {
    config_t *cfg;
    tls_client_t *tc;
    tls_policy_t pol;
} hs_t;

static bool hs_init(hs_t *h, const char *level, const char *extra, const char *nexthop)
{
    char main_cf[1024];
    snprintf(main_cf, sizeof main_cf, "smtp_tls_security_level = %s\nsmtp_tls_CAfile = %s\n%s", level,
             fx.pki.ca_file, extra ? extra : "");
    memset(h, 0, sizeof *h);
    h->cfg = load(main_cf);
    if (!h->cfg)
        return false;
    h->tc = tls_client_new(config_main(h->cfg), "smtp");
    buf_t why = BUF_INIT;
    int r = tls_client_policy(h->tc, config_main(h->cfg), nexthop, false, &h->pol, &why);
    if (r != 0)
        fprintf(stderr, "policy: %s\n", buf_cstr(&why));
    buf_free(&why);
    return r == 0;
}

static void hs_free(hs_t *h)
{
    tls_client_unref(&h->tc);
    config_free(&h->cfg);
}

/* One handshake of h's client with a server holding cert; the verdict
 * in res, SNI as the server saw it in sni.  false: no handshake. */
static bool shake(hs_t *h, SSL_CTX *sctx, const char *servername, const char *nexthop, tls_client_result_t *res,
                  char *sni, size_t snilen, bool *resumed)
{
    buf_t err = BUF_INIT;
    SSL *cli = tls_client_ssl(h->tc, &h->pol, servername, "127.0.0.1", 25, &err);
    if (!cli) {
        fprintf(stderr, "tls_client_ssl: %s\n", buf_cstr(&err));
        buf_free(&err);
        return false;
    }
    buf_free(&err);
    SSL *srv = SSL_new(sctx);
    bool ok = srv && tt_handshake(cli, srv) && tt_exchange(cli, srv);
    if (ok) {
        tls_client_verify(cli, &h->pol, nexthop, servername, "smtp", "mx.test[127.0.0.1]:25", 0, res);
        const char *n = SSL_get_servername(srv, TLSEXT_NAMETYPE_host_name);
        if (sni)
            str_copy(sni, n ? n : "", snilen);
        if (resumed)
            *resumed = SSL_session_reused(cli) == 1;
    }
    /* As the client's QUIT does: close_notify keeps the session good. */
    if (ok)
        tls_client_shutdown(cli, NULL);
    SSL_free(srv);
    tls_client_ssl_free(&cli);
    CHECK(cli == NULL);
    return ok;
}

TEST(tls_client_handshake_verdicts)
{
    REQUIRE(fixture());
    SSL_CTX *good = server_ctx(&fx.good), *wrong = server_ctx(&fx.wrong), *expired = server_ctx(&fx.expired),
            *self = server_ctx(&fx.self);
    REQUIRE(good && wrong && expired && self);
    hs_t h;
    REQUIRE(hs_init(&h, "verify", NULL, "[mx.test]"));
    tls_client_result_t r;
    char sni[64];
    bool resumed = true;

    REQUIRE(shake(&h, good, "mx.test", "mx.test", &r, sni, sizeof sni, &resumed));
    CHECK(r.trusted);
    CHECK(r.matched);
    CHECK(r.info.peer_cert);
    CHECK_STR(r.names, "mx.test, mx.dest.test");
    CHECK_STR(sni, "mx.test");
    CHECK(!resumed);
    buf_t line = BUF_INIT;
    tls_client_summary(&r, "mx.test[127.0.0.1]:25", &line);
    CHECK(starts(buf_cstr(&line), "Verified TLS connection established to mx.test[127.0.0.1]:25: TLSv1.3 with cipher "));
    char brief[96];
    tls_client_brief(&r, brief, sizeof brief);
    CHECK(starts(brief, "TLSv1.3/TLS_"));

    /* The second SAN matches too (hostname = the MX host). */
    REQUIRE(shake(&h, good, "mx.dest.test", "dest.test", &r, sni, sizeof sni, NULL));
    CHECK(r.trusted && r.matched);

    /* A good chain with the wrong name: trusted, not matched. */
    REQUIRE(shake(&h, wrong, "mx.test", "mx.test", &r, NULL, 0, NULL));
    CHECK(r.trusted);
    CHECK(!r.matched);
    CHECK_STR(r.names, "other.test");
    buf_reset(&line);
    tls_client_summary(&r, "p", &line);
    CHECK(starts(buf_cstr(&line), "Trusted TLS connection established to p: TLSv1.3 with cipher "));

    /* Expired and self-signed: not trusted (the handshake still ends). */
    REQUIRE(shake(&h, expired, "mx.test", "mx.test", &r, NULL, 0, NULL));
    CHECK(!r.trusted);
    CHECK(!r.matched);
    buf_reset(&line);
    tls_client_summary(&r, "p", &line);
    CHECK(starts(buf_cstr(&line), "Untrusted TLS connection established to p: TLSv1.3 with cipher "));
    REQUIRE(shake(&h, self, "mx.test", "mx.test", &r, NULL, 0, NULL));
    CHECK(!r.trusted);
    hs_free(&h);

    /* secure with the default match list: nexthop, dot-nexthop. */
    REQUIRE(hs_init(&h, "secure", NULL, "dest.test"));
    REQUIRE(shake(&h, good, "mx.dest.test", "dest.test", &r, NULL, 0, NULL));
    CHECK(r.trusted && r.matched);
    REQUIRE(shake(&h, good, "mx.test", "other.test", &r, NULL, 0, NULL));
    CHECK(r.trusted && !r.matched);
    hs_free(&h);

    /* may: names are not checked; an address gets no SNI. */
    REQUIRE(hs_init(&h, "may", NULL, "[127.0.0.1]"));
    REQUIRE(shake(&h, wrong, "127.0.0.1", "127.0.0.1", &r, sni, sizeof sni, NULL));
    CHECK(r.trusted);
    CHECK(!r.matched);
    CHECK_STR(sni, "");
    hs_free(&h);

    /* The policy's protocols bound the handshake. */
    REQUIRE(hs_init(&h, "encrypt", "smtp_tls_mandatory_protocols = TLSv1.3\n", "[mx.test]"));
    SSL_CTX_set_max_proto_version(wrong, TLS1_2_VERSION);
    CHECK(!shake(&h, wrong, "mx.test", "mx.test", &r, NULL, 0, NULL));
    ERR_clear_error();
    hs_free(&h);
    REQUIRE(hs_init(&h, "encrypt", NULL, "[mx.test]"));
    REQUIRE(shake(&h, wrong, "mx.test", "mx.test", &r, NULL, 0, NULL));
    CHECK_STR(r.info.protocol, "TLSv1.2");
    hs_free(&h);

    buf_free(&line);
    SSL_CTX_free(good);
    SSL_CTX_free(wrong);
    SSL_CTX_free(expired);
    SSL_CTX_free(self);
}

TEST(tls_client_session_resumption)
{
    REQUIRE(fixture());
    SSL_CTX *good = server_ctx(&fx.good);
    REQUIRE(good);
    hs_t h;
    tls_client_result_t r;
    bool resumed = false;
    REQUIRE(hs_init(&h, "verify", NULL, "[mx.test]"));
    REQUIRE(shake(&h, good, "mx.test", "mx.test", &r, NULL, 0, &resumed));
    CHECK(!resumed);
    REQUIRE(shake(&h, good, "mx.test", "mx.test", &r, NULL, 0, &resumed));
    CHECK(resumed);
    /* A resumed session keeps its verdict. */
    CHECK(r.trusted && r.matched);
    CHECK(r.info.resumed);
    /* Another server name is another cache entry. */
    REQUIRE(shake(&h, good, "mx.dest.test", "dest.test", &r, NULL, 0, &resumed));
    CHECK(!resumed);
    hs_free(&h);

    /* smtp_tls_session_cache_timeout = 0: never resumed. */
    REQUIRE(hs_init(&h, "verify", "smtp_tls_session_cache_timeout = 0\n", "[mx.test]"));
    REQUIRE(shake(&h, good, "mx.test", "mx.test", &r, NULL, 0, &resumed));
    REQUIRE(shake(&h, good, "mx.test", "mx.test", &r, NULL, 0, &resumed));
    CHECK(!resumed);
    hs_free(&h);
    SSL_CTX_free(good);
}

TEST(tls_client_engine_cache_shares_and_renews)
{
    REQUIRE(fixture());
    /* A CA file of our own, so the test can change it. */
    tdir_t t;
    REQUIRE(tdir_make(&t, ""));
    char ca[160];
    snprintf(ca, sizeof ca, "%s/ca.pem", t.dir);
    REQUIRE(tt_write_pem(ca, NULL, &fx.pki.ca, 1));
    char main_cf[512], other_cf[512];
    snprintf(main_cf, sizeof main_cf, "smtp_tls_security_level = may\nsmtp_tls_CAfile = %s\n", ca);
    snprintf(other_cf, sizeof other_cf, "smtp_tls_security_level = encrypt\nsmtp_tls_CAfile = %s\n", ca);
    config_t *c1 = load(main_cf), *c2 = load(main_cf), *c3 = load(other_cf), *c4 = load(main_cf);
    REQUIRE(c1 && c2 && c3 && c4);
    tls_client_cache_t *cc = tls_client_cache_new();
    tls_client_t *a = tls_client_get(cc, config_main(c1), "smtp");
    tls_client_t *b = tls_client_get(cc, config_main(c1), "smtp");
    tls_client_t *c = tls_client_get(cc, config_main(c2), "smtp");   /* same values, another load */
    tls_client_t *d = tls_client_get(cc, config_main(c3), "smtp");   /* other values */
    tls_client_t *e = tls_client_get(cc, config_main(c1), "lmtp");   /* other program in its log lines */
    CHECK(a == b);
    CHECK(a == c);
    CHECK(a != d);
    CHECK(a != e);
    /* The trust anchors change on disk: the next configuration that
     * comes along gets a new engine; holders keep theirs. */
    FILE *f = fopen(ca, "a");
    REQUIRE(f);
    fputs("\n", f);
    fclose(f);
    tls_client_t *g = tls_client_get(cc, config_main(c4), "smtp");
    CHECK(g != a);
    CHECK(tls_client_engine_ok(a, NULL));
    CHECK(tls_client_engine_ok(g, NULL));
    tls_client_t *h = tls_client_get(cc, config_main(c2), "smtp");
    CHECK(h == g);
    tls_client_unref(&a);
    tls_client_unref(&b);
    tls_client_unref(&c);
    tls_client_unref(&d);
    tls_client_unref(&e);
    tls_client_unref(&g);
    tls_client_unref(&h);
    tls_client_cache_free(&cc);
    CHECK(cc == NULL);
    config_free(&c1);
    config_free(&c2);
    config_free(&c3);
    config_free(&c4);
    unlink(ca);
    tdir_free(&t);
}
