/*
 * greylist: the pure pieces (sender normalisation, client identities,
 * records, the decision table, keys, the CLI's client argument) and the
 * whole check_greylist step against a real LMDB store, with the clock
 * moved through ss_ctx_t.now instead of sleeping.
 */
#include "harness.h"
#include "sstep_testlib.h"

#include "config/config.h"
#include "dns/dns.h"
#include "policy/greylist.h"
#include "policy/sstep.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------- pure helpers */

static void norm_is(const char *in, const char *want, int line)
{
    buf_t out = BUF_INIT;
    greylist_sender_norm(in, &out);
    if (strcmp(buf_cstr(&out), want) != 0)
        harness_fail(__FILE__, line, "norm(\"%s\") == \"%s\", want \"%s\"", in, buf_cstr(&out), want);
    if (out.len > strlen(in))
        harness_fail(__FILE__, line, "norm(\"%s\") grew", in);
    buf_free(&out);
}
#define NORM(in, want) norm_is(in, want, __LINE__)

TEST(greylist_sender_norm_table)
{
    NORM("", "");
    NORM("User@Example.TEST", "user@example.test");
    NORM("plain", "plain");                                   /* no domain: as is (lower case) */
    /* VERP counters: numbers standing alone */
    NORM("bounce-1234-5678@list.test", "bounce-#-#@list.test");
    NORM("123@list.test", "#@list.test");
    NORM("list.42.x@list.test", "list.#.x@list.test");
    NORM("abc123@list.test", "abc123@list.test");             /* part of a word */
    NORM("123abc@list.test", "123abc@list.test");
    NORM("a_1@list.test", "a_1@list.test");                   /* '_' is a word character */
    NORM("user@mail2.list.test", "user@mail2.list.test");     /* the domain keeps its digits */
    /* extensions */
    NORM("owner+bounces-77@list.test", "owner@list.test");
    /* BATV */
    NORM("prvs=1234abcdef=user@example.test", "user@example.test");
    NORM("prvs=user=1234abcdef@example.test", "user@example.test");
    NORM("PRVS=0123456789=Bounce-42@Example.test", "bounce-#@example.test");
    NORM("prvs=a=b=c@example.test", "prvs=a=b=c@example.test");   /* not two fields: left */
    NORM("msprvs1=19422z6ubh5hv=bounces-123@ms.test", "bounces-#@ms.test");
    NORM("btv1==00abc11==user@bar.test", "user@bar.test");
    /* SRS */
    NORM("SRS0=HHH=TT=orig.test=alice@forwarder.test", "alice@orig.test");
    NORM("srs0+hhh=tt=orig.test=bob-12@fwd.test", "bob-#@orig.test");
    NORM("SRS1=HHH=first.test==HHH=TT=orig.test=carol@second.test", "carol@orig.test");
    NORM("SRS0=HHH=TT=orig.test=prvs=0123456789=dave@fwd.test", "dave@orig.test");
    NORM("SRS0=broken@fwd.test", "srs0=broken@fwd.test");     /* malformed: only lower-cased */
    NORM("SRS0=h=t=d=@fwd.test", "srs0=h=t=d=@fwd.test");
    NORM("SRS1=h=x@fwd.test", "srs1=h=x@fwd.test");
}

TEST(greylist_ip_identity_masks)
{
    buf_t o = BUF_INIT;
    CHECK(greylist_ip_identity("192.0.2.77", 24, 64, &o));
    CHECK_STR(buf_cstr(&o), "192.0.2.0");
    CHECK(greylist_ip_identity("192.0.2.77", 32, 64, &o));
    CHECK_STR(buf_cstr(&o), "192.0.2.77");
    CHECK(greylist_ip_identity("192.0.2.77", 20, 64, &o));
    CHECK_STR(buf_cstr(&o), "192.0.0.0");
    CHECK(greylist_ip_identity("192.0.2.77", 0, 64, &o));
    CHECK_STR(buf_cstr(&o), "0.0.0.0");
    CHECK(greylist_ip_identity("2001:db8:1:2:3:4:5:6", 24, 64, &o));
    CHECK_STR(buf_cstr(&o), "2001:db8:1:2::");
    CHECK(greylist_ip_identity("2001:db8:1:2:3:4:5:6", 24, 56, &o));
    CHECK_STR(buf_cstr(&o), "2001:db8:1::");
    CHECK(greylist_ip_identity("::ffff:198.51.100.9", 24, 64, &o));   /* mapped: IPv4 */
    CHECK_STR(buf_cstr(&o), "198.51.100.0");
    CHECK(!greylist_ip_identity("mx.example.test", 24, 64, &o));
    CHECK_STR(buf_cstr(&o), "");
    CHECK(!greylist_ip_identity("192.0.2.300", 24, 64, &o));
    CHECK(!greylist_ip_identity(NULL, 24, 64, &o));
    buf_free(&o);
}

TEST(greylist_org_domain_psl)
{
    buf_t o = BUF_INIT;
    CHECK(greylist_org_domain("mx1.mail.Example.co.uk", &o));
    CHECK_STR(buf_cstr(&o), "example.co.uk");
    CHECK(greylist_org_domain("out-17.smtp.example.com.", &o));
    CHECK_STR(buf_cstr(&o), "example.com");
    CHECK(greylist_org_domain("a.b.grey.test", &o));          /* unknown TLD: the last two labels */
    CHECK_STR(buf_cstr(&o), "grey.test");
    CHECK(!greylist_org_domain("co.uk", &o));                 /* a public suffix */
    CHECK(!greylist_org_domain("localhost", &o));
    CHECK(!greylist_org_domain("a..example.com", &o));
    CHECK(!greylist_org_domain("bad name.example.com", &o));
    CHECK(!greylist_org_domain("", &o));
    CHECK_STR(buf_cstr(&o), "");
    buf_free(&o);
}

TEST(greylist_records_round_trip)
{
    grey_rec_t r;
    buf_t o = BUF_INIT;
    CHECK(greylist_rec_parse("1700000000 1700000300 1", &r));
    CHECK_INT(r.first, 1700000000);
    CHECK_INT(r.last, 1700000300);
    CHECK(r.passed);
    greylist_rec_format(&r, &o);
    CHECK_STR(buf_cstr(&o), "1700000000 1700000300 1");
    CHECK(greylist_rec_parse("5 6 0", &r));
    CHECK(!r.passed);
    CHECK(!greylist_rec_parse("", &r));
    CHECK(!greylist_rec_parse("5 6", &r));
    CHECK(!greylist_rec_parse("5 6 2", &r));
    CHECK(!greylist_rec_parse("5 6 0 7", &r));
    CHECK(!greylist_rec_parse("x 6 0", &r));
    CHECK(!greylist_rec_parse("0 6 0", &r));
    CHECK(!greylist_rec_parse(NULL, &r));
    buf_free(&o);
}

TEST(greylist_decision_table)
{
    long long s = -1;
    const long long D = 300, W = 2 * 86400;
    CHECK_INT(greylist_decide(NULL, 1000, D, W, &s), GD_NEW);
    CHECK_INT(s, 300);
    grey_rec_t r = {.first = 1000, .last = 1000};
    CHECK_INT(greylist_decide(&r, 1000, D, W, &s), GD_WAIT);
    CHECK_INT(s, 300);
    CHECK_INT(greylist_decide(&r, 1299, D, W, &s), GD_WAIT);
    CHECK_INT(s, 1);
    CHECK_INT(greylist_decide(&r, 1300, D, W, &s), GD_PASS);
    CHECK_INT(s, 300);
    CHECK_INT(greylist_decide(&r, 1000 + W, D, W, &s), GD_PASS);
    CHECK_INT(s, W);
    CHECK_INT(greylist_decide(&r, 1001 + W, D, W, &s), GD_EXPIRED);
    CHECK_INT(s, 300);
    CHECK_INT(greylist_decide(&r, 900, D, W, &s), GD_WAIT);   /* clock went back: no longer than the delay */
    CHECK_INT(s, 300);
    r.passed = true;
    CHECK_INT(greylist_decide(&r, 1001 + W, D, W, &s), GD_PASSED);
    CHECK_INT(greylist_decide(&r, 1001, D, W, &s), GD_PASSED);
}

TEST(greylist_keys_build_and_split)
{
    buf_t k = BUF_INIT, i = BUF_INIT, s = BUF_INIT, r = BUF_INIT;
    greylist_key("192.0.2.0", "bounce-#@list.test", "User@Example.TEST", &k);
    CHECK_STR(buf_cstr(&k), "grey:192.0.2.0/bounce-#@list.test/user@example.test");
    CHECK(greylist_key_split(buf_cstr(&k), &i, &s, &r));
    CHECK_STR(buf_cstr(&i), "192.0.2.0");
    CHECK_STR(buf_cstr(&s), "bounce-#@list.test");
    CHECK_STR(buf_cstr(&r), "user@example.test");
    greylist_key("2001:db8::", "", "a/b@example.test", &k);
    CHECK_STR(buf_cstr(&k), "grey:2001:db8:://a/b@example.test");
    CHECK(greylist_key_split(buf_cstr(&k), &i, &s, &r));
    CHECK_STR(buf_cstr(&i), "2001:db8::");
    CHECK_STR(buf_cstr(&s), "");
    CHECK_STR(buf_cstr(&r), "a/b@example.test");
    greylist_key("example.test", "x/y@s.test", "r@example.test", &k);
    CHECK(greylist_key_split(buf_cstr(&k), &i, &s, &r));
    CHECK_STR(buf_cstr(&s), "x/y@s.test");
    CHECK_STR(buf_cstr(&r), "r@example.test");
    /* too long for the store: hashed parts, the same each time */
    char big[400];
    memset(big, 'a', sizeof big - 20);
    strcpy(big + sizeof big - 20, "@long.example.test");
    greylist_key("192.0.2.0", big, big, &k);
    CHECK(k.len <= 480);
    buf_t k2 = BUF_INIT;
    CHECK(greylist_key_split(buf_cstr(&k), &i, &s, &r));
    CHECK(s.data && s.data[0] == '#' && s.len == 17);
    CHECK_STR(buf_cstr(&r), big);   /* short enough once the sender is hashed */
    greylist_key("192.0.2.0", big, big, &k2);
    CHECK_STR(buf_cstr(&k2), buf_cstr(&k));
    greylist_key("192.0.2.0", big, "short@example.test", &k2);   /* only the long part */
    CHECK(strstr(buf_cstr(&k2), "/short@example.test") != NULL);
    /* both hashed when one is not enough */
    char huge[470];
    memset(huge, 'b', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    greylist_key("192.0.2.0", huge, huge, &k2);
    CHECK(k2.len <= 480);
    CHECK(greylist_key_split(buf_cstr(&k2), &i, &s, &r));
    CHECK(s.len == 17 && r.len == 17 && r.data[0] == '#');
    CHECK(!greylist_key_split("greyok:192.0.2.0", &i, &s, &r));
    CHECK(!greylist_key_split("grey:nothing", &i, &s, &r));
    buf_free(&k);
    buf_free(&k2);
    buf_free(&i);
    buf_free(&s);
    buf_free(&r);
}

TEST(greylist_header_line)
{
    buf_t h = BUF_INIT;
    greylist_header("mx.test", 312, (time_t)1700000000, &h);
    CHECK(strncmp(buf_cstr(&h), "X-Greylist: delayed 312 seconds by moat at mx.test; ", 52) == 0);
    CHECK(strstr(buf_cstr(&h), " 2023 ") != NULL);
    CHECK(strstr(buf_cstr(&h), "Nov") != NULL);
    CHECK(h.len > 0 && h.data[h.len - 1] == '\n');
    buf_free(&h);
}

TEST(greylist_cli_client_identity)
{
    config_t *cfg = ssx_cfg("greylist_client_netmask = 24\n");
    REQUIRE(cfg);
    const params_t *p = config_main(cfg);
    buf_t o = BUF_INIT, e = BUF_INIT;
    CHECK(greylist_client_identity(p, "192.0.2.77", &o, &e));
    CHECK_STR(buf_cstr(&o), "192.0.2.0");
    CHECK(greylist_client_identity(p, "192.0.2.0/24", &o, &e));
    CHECK_STR(buf_cstr(&o), "192.0.2.0");
    CHECK(greylist_client_identity(p, "[2001:db8:1:2::9]", &o, &e));
    CHECK_STR(buf_cstr(&o), "2001:db8:1:2::");
    CHECK(!greylist_client_identity(p, "192.0.0.0/16", &o, &e));
    CHECK(strstr(buf_cstr(&e), "wider than a client network") != NULL);
    buf_reset(&e);
    CHECK(!greylist_client_identity(p, "mx.example.test", &o, &e));
    CHECK(strstr(buf_cstr(&e), "greylist_identity = ip") != NULL);
    config_free(&cfg);
    cfg = ssx_cfg("greylist_identity = fcrdns\n");
    REQUIRE(cfg);
    CHECK(greylist_client_identity(config_main(cfg), "out-3.mail.Example.co.uk", &o, &e));
    CHECK_STR(buf_cstr(&o), "example.co.uk");
    buf_reset(&e);
    CHECK(!greylist_client_identity(config_main(cfg), "co.uk", &o, &e));
    CHECK(e.len > 0);
    config_free(&cfg);
    buf_free(&o);
    buf_free(&e);
}

TEST(greylist_new_refuses_bad_settings)
{
    struct {
        const char *main_cf, *want;
    } cases[] = {
        {"\ngreylist_identity = bogus\n", "<text>/main.cf:2: greylist_identity = bogus: unknown"},
        {"greylist_delay = 3h\ngreylist_retry_window = 1h\n", "<text>/main.cf:2: greylist_retry_window (3600s) is "
                                                             "shorter than greylist_delay (10800s)"},
        {"greylist_dnswl_sites = list.dnswl.test=127.0.x.1\n", "<text>/main.cf:1: greylist_dnswl_sites:"},
        {"greylist_recipient_allow_maps = postmaster@example.test\n",
         "<text>/main.cf:1: greylist_recipient_allow_maps: \"postmaster@example.test\" is not a type:table"},
        {"greylist_client_allow_maps = hash:/nonexistent/greylist-allow\n",
         "<text>/main.cf:1: greylist_client_allow_maps: "},
        {"greylist_client_allow_maps = 192.0.2.0/33\n", "<text>/main.cf:1: "},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        config_t *cfg = ssx_cfg(cases[i].main_cf);
        REQUIRE(cfg);
        buf_t err = BUF_INIT;
        greylist_t *g = greylist_new(config_main(cfg), NULL, &err);
        CHECK(g == NULL);
        if (strncmp(buf_cstr(&err), cases[i].want, strlen(cases[i].want)) != 0)
            harness_fail(__FILE__, __LINE__, "case %zu: err \"%s\", want \"%s...\"", i, buf_cstr(&err),
                         cases[i].want);
        CHECK(err.len > 0 && err.data[err.len - 1] == '\n');
        greylist_free(&g);
        buf_free(&err);
        config_free(&cfg);
    }
    config_t *cfg = ssx_cfg("greylist_client_allow_maps = 192.0.2.0/24, [2001:db8::]/32, mail.example.test, "
                           "inline:{ 198.51.100.7=OK }\n"
                           "greylist_recipient_allow_maps = inline:{ postmaster@=OK }\n"
                           "greylist_dnswl_sites = list.dnswl.test=127.0.[0..255].[1..3]\n");
    REQUIRE(cfg);
    buf_t err = BUF_INIT;
    greylist_t *g = greylist_new(config_main(cfg), NULL, &err);
    CHECK(g != NULL);
    CHECK_STR(buf_cstr(&err), "");
    greylist_free(&g);
    CHECK(g == NULL);
    buf_free(&err);
    config_free(&cfg);
}

/* ------------------------------------------------ the step, with a store */

typedef struct gl_fixture {
    ssx_t x;            /* the loop, store, memo, configuration, buffers, client state */
    greylist_t *g;
    long long now;
    /* the last answer */
    int code;
    char dsn[16];
    char text[512];
    bool whole_text;
} gl_fixture_t;

static void gl_open(gl_fixture_t *f, const char *main_cf)
{
    memset(f, 0, sizeof *f);
    /* nothing answers there: DNS allow lists time out (fast) */
    ssx_open(&f->x, main_cf, 300);
    buf_t err = BUF_INIT;
    f->g = greylist_new(config_main(f->x.cfg), NULL, &err);
    if (!f->g)
        harness_fail(__FILE__, __LINE__, "greylist_new: %s", buf_cstr(&err));
    f->x.st = (pstate_t){.client_addr = "192.0.2.77", .client_name = "unknown", .name_code = 5,
                         .sender = "bounce-17@sender.test", .recipient = "user@example.test", .dns = f->x.memo};
    f->now = 1700000000;
    buf_free(&err);
}

static void gl_close(gl_fixture_t *f)
{
    greylist_free(&f->g);
    ssx_close(&f->x);
}

/* Wait until key holds want (NULL: is missing): the effects are written
 * fire-and-forget, as the engine does. */
static bool gl_wait_value(gl_fixture_t *f, const char *key, const char *want)
{
    st_res_t x = {0};
    bool ok = false;
    double end = now_mono() + 10;
    while (!ok && now_mono() < end) {
        store_status_t s = st_get(&f->x.l, f->x.store, key, &x);
        ok = want ? s == ST_OK && strcmp(buf_cstr(&x.val), want) == 0 : s == ST_NOTFOUND;
        if (!ok)
            st_run_for(&f->x.l, 0.02);
    }
    st_res_free(&x);
    return ok;
}

/* One RCPT through check_greylist as the engine runs it: replayed until
 * it is not pending, then the effects committed. */
static ss_status_t gl_rcpt(gl_fixture_t *f, pcmd_t cmd)
{
    buf_reset(&f->x.trace);
    buf_reset(&f->x.warnings);
    buf_reset(&f->x.prepend);
    dns_memo_clear(f->x.memo);
    ss_status_t r;
    for (int pass = 0;; pass++) {
        ss_fx_reset(f->x.fx);
        buf_reset(&f->x.trace);
        buf_reset(&f->x.warnings);
        buf_reset(&f->x.prepend);
        ss_ctx_t c = {.st = &f->x.st, .cmd = cmd, .p = config_main(f->x.cfg), .env = &f->x.env, .memo = f->x.memo,
                      .step = "check_greylist", .top = "recipient", .now = (time_t)f->now, .trace = &f->x.trace,
                      .warnings = &f->x.warnings, .prepend = &f->x.prepend, .fx = f->x.fx};
        r = greylist_step(f->g, &c);
        f->code = c.code;
        memcpy(f->dsn, c.dsn, sizeof f->dsn);
        memcpy(f->text, c.text, sizeof f->text);
        f->whole_text = c.whole_text;
        if (r != SS_PENDING || pass > 5)
            break;
        int before = f->x.wakes;
        double end = now_mono() + 10;
        while (f->x.wakes == before && now_mono() < end)
            event_base_loop(f->x.l.base, EVLOOP_ONCE);
    }
    if (f->x.env.commit && f->x.store) {
        /* wait for the sets to land (the pool may run the next read
         * before a write otherwise): "  state: set KEY = "VALUE" (ttl Ns)" */
        buf_t t = BUF_INIT;
        ss_fx_trace(f->x.fx, &t);
        ss_fx_commit(f->x.fx, f->x.store);
        for (char *line = t.data; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = 0;
            char *eq = strstr(line, " = \"");
            char *end = eq ? strrchr(eq + 4, '"') : NULL;
            if (strncmp(line, "  state: set ", 13) == 0 && eq && end) {
                *eq = 0;
                *end = 0;
                if (!gl_wait_value(f, line + 13, eq + 4))
                    harness_fail(__FILE__, __LINE__, "%s never became %s", line + 13, eq + 4);
            }
            line = nl ? nl + 1 : NULL;
        }
        buf_free(&t);
    }
    return r;
}

static const char *TRIPLET = "grey:192.0.2.0/bounce-#@sender.test/user@example.test";

TEST(greylist_step_decisions_with_lmdb)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\ngreylist_delay = 300s\ngreylist_retry_window = 1d\n"
                "greylist_auto_allow_count = 2\n");
    /* new: 451 for the whole delay, the triplet created */
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_INT(f.code, 451);
    CHECK_STR(f.dsn, "4.7.1");
    CHECK_STR(f.text, "Greylisted, please try again in 300 seconds");
    CHECK(!f.whole_text);
    CHECK(strstr(buf_cstr(&f.x.trace), "new triplet") != NULL);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000000 0"));
    /* too soon: the rest of the delay; first_seen stays */
    f.now += 100;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_STR(f.text, "Greylisted, please try again in 200 seconds");
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000100 0"));
    /* another client network, same sender and recipient: its own triplet */
    f.x.st.client_addr = "198.51.100.1";
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_STR(f.text, "Greylisted, please try again in 300 seconds");
    /* same /24, another sender number (VERP): the same triplet */
    f.x.st.client_addr = "192.0.2.200";
    f.x.st.sender = "Bounce-99@Sender.TEST";
    f.now += 250;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.x.prepend), "X-Greylist: delayed 350 seconds") != NULL);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000350 1"));
    gl_close(&f);
}

TEST(greylist_step_pass_header_log_and_auto_allow)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\ngreylist_delay = 300s\ngreylist_auto_allow_count = 2\n");
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000000 0"));
    f.now += 312;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK(strncmp(buf_cstr(&f.x.prepend), "X-Greylist: delayed 312 seconds by moat at mx.test; ", 52) == 0);
    CHECK(strstr(buf_cstr(&f.x.warnings),
                 "info: greylist: pass: delayed 312 s: triplet 192.0.2.0/bounce-#@sender.test/user@example.test") !=
          NULL);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000312 1"));
    CHECK(gl_wait_value(&f, "greyok:192.0.2.0", "1"));
    /* passed before: passes, no header, no second count */
    f.now += 5000;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK_STR(buf_cstr(&f.x.prepend), "");
    CHECK_STR(buf_cstr(&f.x.warnings), "");
    CHECK(strstr(buf_cstr(&f.x.trace), "passed before") != NULL);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700005312 1"));
    CHECK(gl_wait_value(&f, "greyok:192.0.2.0", "1"));
    /* a second triplet passes: the identity reaches the count */
    f.x.st.recipient = "other@example.test";
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    f.now += 400;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.x.prepend), "delayed 400 seconds") != NULL);
    CHECK(gl_wait_value(&f, "greyok:192.0.2.0", "2"));
    /* from now on anything from 192.0.2.0/24 passes at once */
    f.x.st.recipient = "third@example.test";
    f.x.st.client_addr = "192.0.2.1";
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.x.trace), "auto-allowed") != NULL);
    CHECK_STR(buf_cstr(&f.x.prepend), "");
    CHECK(gl_wait_value(&f, "grey:192.0.2.0/bounce-#@sender.test/third@example.test", NULL));
    gl_close(&f);
}

TEST(greylist_step_retry_window_and_no_header)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\ngreylist_delay = 60s\ngreylist_retry_window = 1h\ngreylist_header = no\n"
                "greylist_auto_allow_count = 0\n");
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000000 0"));
    /* too late: starts again, as new */
    f.now += 3601;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_STR(f.text, "Greylisted, please try again in 60 seconds");
    CHECK(strstr(buf_cstr(&f.x.trace), "starting again") != NULL);
    CHECK(gl_wait_value(&f, TRIPLET, "1700003601 1700003601 0"));
    f.now += 60;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK_STR(buf_cstr(&f.x.prepend), "");   /* greylist_header = no */
    CHECK(gl_wait_value(&f, TRIPLET, "1700003601 1700003661 1"));
    CHECK(gl_wait_value(&f, "greyok:192.0.2.0", NULL));   /* auto-allow off: nothing counted */
    gl_close(&f);
}

TEST(greylist_step_other_commands_and_moat_check)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\n");
    CHECK_INT(gl_rcpt(&f, PCMD_MAIL), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.x.trace), "applies at RCPT") != NULL);
    CHECK_INT(gl_rcpt(&f, PCMD_DATA), SS_DUNNO);
    /* moat check: decides, writes nothing */
    f.x.env.commit = false;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_INT(ss_fx_count(f.x.fx), 1);
    st_run_for(&f.x.l, 0.1);
    CHECK(gl_wait_value(&f, TRIPLET, NULL));
    gl_close(&f);
}

TEST(greylist_step_allow_lists)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\n"
                "greylist_client_allow_maps = 10.0.0.0/8, !192.0.2.66, 192.0.2.0/26, good.example.test, "
                "inline:{ 198.51.100.5=OK, friends.test=yes, 203.0.113=DUNNO }\n"
                "greylist_recipient_allow_maps = inline:{ postmaster@=OK, abuse@example.test=OK, "
                "open.test=OK }\n"
                "parent_domain_matches_subdomains = smtpd_access_maps\n");
    struct {
        const char *addr, *name, *rcpt;
        ss_status_t want;
        const char *trace;
    } cases[] = {
        {"10.1.2.3", "unknown", "user@example.test", SS_DUNNO, "matches 10.0.0.0/8"},
        {"192.0.2.5", "unknown", "user@example.test", SS_DUNNO, "matches 192.0.2.0/26"},
        {"192.0.2.66", "unknown", "user@example.test", SS_REJECT, "new triplet"},   /* excluded */
        {"192.0.2.100", "unknown", "user@example.test", SS_REJECT, "triplet 192.0.2.0/"},
        {"192.0.2.100", "mx.good.example.test", "user@example.test", SS_DUNNO, "matches good.example.test"},
        {"198.51.100.5", "unknown", "user@example.test", SS_DUNNO, "198.51.100.5 found (OK)"},
        {"198.51.100.6", "a.b.friends.test", "user@example.test", SS_DUNNO, ": friends.test found (yes)"},
        {"203.0.113.9", "unknown", "user@example.test", SS_REJECT, "203.0.113 found: DUNNO"},
        {"203.0.113.9", "unknown", "postmaster@example.test", SS_DUNNO, "postmaster@ found"},
        {"203.0.113.9", "unknown", "Abuse@Example.test", SS_DUNNO, "Abuse@Example.test found (OK)"},
        {"203.0.113.9", "unknown", "x@mx.open.test", SS_DUNNO, "open.test found"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        f.x.st.client_addr = cases[i].addr;
        f.x.st.client_name = cases[i].name;
        f.x.st.recipient = cases[i].rcpt;
        ss_status_t r = gl_rcpt(&f, PCMD_RCPT);
        if (r != cases[i].want || !strstr(buf_cstr(&f.x.trace), cases[i].trace))
            harness_fail(__FILE__, __LINE__, "case %zu (%s %s %s): %d, trace:\n%s", i, cases[i].addr, cases[i].name,
                         cases[i].rcpt, (int)r, buf_cstr(&f.x.trace));
    }
    gl_close(&f);
}

TEST(greylist_step_dnswl_failure_does_not_allow)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\ngreylist_dnswl_sites = list.dnswl.test\n");
    /* the resolver answers nothing: the DNS allow list allows nothing */
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_STR(f.text, "Greylisted, please try again in 300 seconds");
    CHECK(strstr(buf_cstr(&f.x.warnings), "greylist_dnswl_sites: DNS lookup of 77.2.0.192.list.dnswl.test failed") !=
          NULL);
    gl_close(&f);
}

TEST(greylist_step_fcrdns_identity)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\ngreylist_identity = fcrdns\ngreylist_delay = 10s\n");
    f.x.st.client_addr = "192.0.2.10";
    f.x.st.client_name = "out-1.mail.bigsender.test";
    f.x.st.name_code = 0;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK(strstr(buf_cstr(&f.x.trace), "organisational domain of the forward-confirmed name") != NULL);
    CHECK(gl_wait_value(&f, "grey:bigsender.test/bounce-#@sender.test/user@example.test", "1700000000 1700000000 0"));
    /* the retry comes from another pool address, another network */
    f.x.st.client_addr = "198.51.100.20";
    f.x.st.client_name = "out-2.bigsender.test";
    f.now += 10;
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.x.prepend), "delayed 10 seconds") != NULL);
    /* a name that is not forward-confirmed counts for nothing: ip */
    f.x.st.name_code = 5;
    f.x.st.client_addr = "198.51.100.21";
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK(strstr(buf_cstr(&f.x.trace), "identity 198.51.100.0: client network 198.51.100.0/24") != NULL);
    gl_close(&f);
}

TEST(greylist_step_store_failure)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\n");
    f.x.env = (policy_env_t){.store = NULL, .store_error = "redis 127.0.0.1:1: Connection refused"};
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK_INT(f.code, 451);
    CHECK_STR(f.dsn, "4.3.0");
    CHECK(strstr(buf_cstr(&f.x.warnings), "Connection refused") != NULL);
    config_free(&f.x.cfg);
    f.x.cfg = ssx_cfg("state_store_fail_action = skip\n");
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_DUNNO);
    CHECK(strstr(buf_cstr(&f.x.trace), "state_store_fail_action = skip") != NULL);
    /* an allow-listed client never needs the store */
    gl_close(&f);
}

TEST(greylist_step_unreadable_value_starts_again)
{
    gl_fixture_t f;
    gl_open(&f, "myhostname = mx.test\n");
    st_res_t x = {0};
    CHECK_INT(st_set(&f.x.l, f.x.store, TRIPLET, "garbage", 0, &x), ST_OK);
    CHECK_INT(gl_rcpt(&f, PCMD_RCPT), SS_REJECT);
    CHECK(strstr(buf_cstr(&f.x.warnings), "unreadable value \"garbage\"") != NULL);
    CHECK(gl_wait_value(&f, TRIPLET, "1700000000 1700000000 0"));
    st_res_free(&x);
    gl_close(&f);
}
