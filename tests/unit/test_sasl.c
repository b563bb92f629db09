/* Unit tests for src/sasl (the AUTH backends): base64 and the PLAIN
 * layout, the security options, building a server from main.cf text,
 * the moat backend end to end on an event loop and a worker pool (a
 * texthash table of yescrypt and SHA-512-crypt hashes made here with
 * crypt_gensalt), the Dovecot protocol lines, and the dovecot backend
 * against a scripted Dovecot on the test's own loop (a unix socket in
 * /tmp): handshake, multiplexed requests, challenges, CANCEL, timeouts,
 * a lost connection and the reconnect, an overlong line, a reload that
 * keeps the connection. */
#include "harness.h"

#include "config/config.h"
#include "core/pool.h"
#include "core/util.h"
#include "sasl/sasl-private.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <crypt.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ------------------------------------------------------------ base64 */

TEST(sasl_b64_rfc4648_vectors)
{
    static const char *const v[][2] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < ARRAY_LEN(v); i++) {
        buf_reset(&b);
        sasl_b64_encode(v[i][0], strlen(v[i][0]), &b);
        CHECK_STR(buf_cstr(&b), v[i][1]);
        CHECK(sasl_b64_decode(v[i][1], &b));
        CHECK_INT(b.len, strlen(v[i][0]));
        CHECK_STR(buf_cstr(&b), v[i][0]);
    }
    buf_free(&b);
}

TEST(sasl_b64_binary_and_empty)
{
    buf_t b = BUF_INIT, d = BUF_INIT;
    const char bin[] = {0, 'a', 'l', 'i', 'c', 'e', 0, 's', '\xff', '\x80'};
    sasl_b64_encode(bin, sizeof bin, &b);
    CHECK_STR(buf_cstr(&b), "AGFsaWNlAHP/gA==");
    CHECK(sasl_b64_decode(buf_cstr(&b), &d));
    CHECK_INT(d.len, sizeof bin);
    CHECK(memcmp(d.data, bin, sizeof bin) == 0);
    /* "=" (an empty initial response) and an empty line are empty */
    CHECK(sasl_b64_decode("=", &d));
    CHECK_INT(d.len, 0);
    CHECK(sasl_b64_decode("", &d));
    CHECK_INT(d.len, 0);
    buf_free(&b);
    buf_free(&d);
}

TEST(sasl_b64_rejects_malformed)
{
    static const char *const bad[] = {
        "Zg=", "Zg", "Z", "==", "====", "Z===", "Zm9v=", "Zg==Zg==", "Zm 9v", "Zm9v\r\n",
        "Zm9-", "Zm9_", "Zh==",   /* bits under the padding */
        "Zm9=",                   /* ditto, one pad */
        "*",
    };
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (sasl_b64_decode(bad[i], &b))
            harness_fail(__FILE__, __LINE__, "accepted \"%s\"", bad[i]);
    buf_free(&b);
}

/* ------------------------------------------------------------ PLAIN */

TEST(sasl_plain_split_cases)
{
    const char *u = NULL, *p = NULL;
    CHECK(sasl_plain_split("\0alice\0secret", 13, &u, &p));
    CHECK_STR(u, "alice");
    CHECK_STR(p, "secret");
    /* authzid equal to authcid is no proxy authorization */
    CHECK(sasl_plain_split("alice\0alice\0pw", 14, &u, &p));
    CHECK_STR(u, "alice");
    CHECK_STR(p, "pw");
    /* an empty password is a layout PLAIN allows (the check then fails) */
    CHECK(sasl_plain_split("\0alice\0", 7, &u, &p));
    CHECK_STR(p, "");
    /* someone else's authzid */
    CHECK(!sasl_plain_split("bob\0alice\0pw", 12, &u, &p));
    CHECK_INT(sasl_plain_parse("bob\0alice\0pw", 12, &u, &p), -2);
    CHECK_INT(sasl_plain_parse("alic\0alice\0pw", 13, &u, &p), -2);
    /* malformed */
    CHECK_INT(sasl_plain_parse("\0\0pw", 4, &u, &p), -1);          /* empty authcid */
    CHECK_INT(sasl_plain_parse("\0alice", 6, &u, &p), -1);         /* one NUL */
    CHECK_INT(sasl_plain_parse("alice", 5, &u, &p), -1);
    CHECK_INT(sasl_plain_parse("\0alice\0pw\0x", 11, &u, &p), -1); /* three */
    CHECK_INT(sasl_plain_parse("", 0, &u, &p), -1);
}

/* ------------------------------------------------------------ options */

TEST(sasl_security_parse_and_filter)
{
    const char *items[] = {"noanonymous", "NoPlainText", "nodictionary", "noactive", "mutual_auth",
                           "forward_secrecy"};
    unsigned sec = 0;
    const char *bad = NULL;
    CHECK(sasl_security_parse(items, 2, &sec, &bad));
    CHECK_INT(sec, SASL_SEC_NOANONYMOUS | SASL_SEC_NOPLAINTEXT);
    CHECK(sasl_security_parse(items, 6, &sec, &bad));
    CHECK_INT(sec, 0x3f);
    CHECK(sasl_security_parse(items, 0, &sec, &bad));
    CHECK_INT(sec, 0);
    const char *wrong[] = {"noanonymous", "noplain"};
    CHECK(!sasl_security_parse(wrong, 2, &sec, &bad));
    CHECK_STR(bad, "noplain");

    unsigned plain = SASL_MF_PLAINTEXT | SASL_MF_DICTIONARY;
    CHECK(sasl_mech_allowed(plain, SASL_SEC_NOANONYMOUS));
    CHECK(!sasl_mech_allowed(plain, SASL_SEC_NOPLAINTEXT));
    CHECK(!sasl_mech_allowed(plain, SASL_SEC_NODICTIONARY));
    CHECK(!sasl_mech_allowed(SASL_MF_ANONYMOUS, SASL_SEC_NOANONYMOUS));
    CHECK(sasl_mech_allowed(SASL_MF_ANONYMOUS, 0));
    CHECK(!sasl_mech_allowed(SASL_MF_ACTIVE, SASL_SEC_NOACTIVE));
    CHECK(!sasl_mech_allowed(SASL_MF_DICTIONARY, SASL_SEC_MUTUAL_AUTH));
    CHECK(sasl_mech_allowed(SASL_MF_DICTIONARY | SASL_MF_MUTUAL_AUTH, SASL_SEC_MUTUAL_AUTH));
    CHECK(!sasl_mech_allowed(0, SASL_SEC_FORWARD_SECRECY));
    CHECK(sasl_mech_allowed(SASL_MF_FORWARD_SECRECY, SASL_SEC_FORWARD_SECRECY));
    CHECK(!sasl_mech_allowed(SASL_MF_PRIVATE, 0));   /* never announced */

    CHECK(sasl_mech_name_ok("SCRAM-SHA-256"));
    CHECK(sasl_mech_name_ok("X_1"));
    CHECK(!sasl_mech_name_ok(""));
    CHECK(!sasl_mech_name_ok("plain"));
    CHECK(!sasl_mech_name_ok("PLAIN LOGIN"));
    CHECK(!sasl_mech_name_ok("ABCDEFGHIJKLMNOPQRSTU"));   /* 21 */
}

/* ------------------------------------------------------------ fixtures */

typedef struct tdir {
    char path[64];
} tdir_t;

static void tdir_make(tdir_t *d)
{
    str_copy(d->path, "/tmp/moat-sasl-XXXXXX", sizeof d->path);
    if (!mkdtemp(d->path))
        d->path[0] = 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static void tdir_rm(tdir_t *d)
{
    if (d->path[0])
        nftw(d->path, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *make_hash(const char *prefix, const char *password)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    if (!crypt_gensalt_rn(prefix, 0, NULL, 0, setting, sizeof setting))
        return NULL;
    const char *h = crypt_rn(password, setting, &cd, sizeof cd);
    return h && h[0] != '*' ? xstrdup(h) : NULL;
}

typedef struct got {
    int calls;
    bool inside;          /* set around sasl_start/sasl_step: a callback then is a bug */
    bool called_inside;
    sasl_status_t status;
    buf_t challenge, user, reason;
    bool has_user;
} got_t;

static void on_reply(void *arg, const sasl_reply_t *r)
{
    got_t *g = arg;
    if (g->inside)
        g->called_inside = true;
    g->calls++;
    g->status = r->status;
    buf_reset(&g->challenge);
    buf_reset(&g->user);
    buf_reset(&g->reason);
    g->has_user = r->user != NULL;
    if (r->challenge)
        buf_puts(&g->challenge, r->challenge);
    if (r->user)
        buf_puts(&g->user, r->user);
    if (r->reason)
        buf_puts(&g->reason, r->reason);
}

static void got_free(got_t *g)
{
    buf_free(&g->challenge);
    buf_free(&g->user);
    buf_free(&g->reason);
}

static void stop_loop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* Run the loop until *count reaches want (a guard of 10 s keeps a broken
 * backend from hanging the suite; no test depends on timing). */
static bool run_until(struct event_base *base, const int *count, int want)
{
    bool expired = false;
    struct event *guard = evtimer_new(base, stop_loop, &expired);
    struct timeval tv = {10, 0};
    evtimer_add(guard, &tv);
    while (*count < want && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    return *count >= want;
}

/* Run the loop for a little while (lets replies that must NOT come show up). */
static void run_for(struct event_base *base, double seconds)
{
    bool expired = false;
    struct event *guard = evtimer_new(base, stop_loop, &expired);
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    evtimer_add(guard, &tv);
    while (!expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
}

static config_t *load(const char *main_cf, buf_t *err)
{
    buf_reset(err);
    return config_load_text(main_cf, NULL, err, NULL);
}

/* ------------------------------------------------------------ building */

TEST(sasl_server_new_disabled_is_null)
{
    buf_t err = BUF_INIT;
    config_t *cfg = load("smtpd_sasl_type = cyrus\n", &err);
    REQUIRE(cfg);
    sasl_server_t *s = (sasl_server_t *)1;
    CHECK_INT(sasl_server_new(config_main(cfg), NULL, NULL, &s, &err), 0);
    CHECK(s == NULL);
    CHECK_INT(err.len, 0);
    config_free(&cfg);
    buf_free(&err);
}

TEST(sasl_server_new_config_errors)
{
    buf_t err = BUF_INIT;
    sasl_server_t *s = NULL;
    config_t *cfg = load("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\n", &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), NULL, NULL, &s, &err), -1);
    CHECK(s == NULL);
    CHECK(strstr(buf_cstr(&err), "main.cf:2: smtpd_sasl_type: cyrus SASL is not supported; use dovecot, or moat "
                                 "with smtpd_sasl_password_maps\n") != NULL);
    config_free(&cfg);

    cfg = load("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = pam\n", &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), NULL, NULL, &s, &err), -1);
    CHECK(strstr(buf_cstr(&err), "main.cf:2: smtpd_sasl_type: unknown type \"pam\"") != NULL);
    config_free(&cfg);

    cfg = load("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_security_options = noanonymous, nosuch\n", &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), NULL, NULL, &s, &err), -1);
    CHECK(strstr(buf_cstr(&err), "main.cf:2: smtpd_sasl_security_options: unknown option \"nosuch\"") != NULL);
    config_free(&cfg);

    cfg = load("smtpd_sasl_auth_enable = yes\n\nsmtpd_sasl_tls_security_options = bogus\n", &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), NULL, NULL, &s, &err), -1);
    CHECK(strstr(buf_cstr(&err), "main.cf:3: smtpd_sasl_tls_security_options: unknown option \"bogus\"") != NULL);
    config_free(&cfg);

    cfg = load("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = moat\n", &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), NULL, NULL, &s, &err), -1);
    CHECK(strstr(buf_cstr(&err), "main.cf:2: smtpd_sasl_type: moat needs smtpd_sasl_password_maps") != NULL);
    config_free(&cfg);

    struct event_base *base = event_base_new();
    pool_t *pool = pool_new(base, 1);
    cfg = load("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = moat\n"
               "smtpd_sasl_password_maps = texthash:/nonexistent/moat-sasl-passwd\n",
               &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), base, pool, &s, &err), -1);
    CHECK(strstr(buf_cstr(&err), "main.cf:3: ") != NULL);
    CHECK(strstr(buf_cstr(&err), "moat-sasl-passwd") != NULL);
    config_free(&cfg);

    cfg = load("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_path = inet:127.0.0.1\n", &err);
    REQUIRE(cfg);
    CHECK_INT(sasl_server_new(config_main(cfg), base, pool, &s, &err), -1);
    CHECK(strstr(buf_cstr(&err), "main.cf:2: smtpd_sasl_path: ") != NULL);
    config_free(&cfg);

    pool_free(&pool);
    event_base_free(base);
    buf_free(&err);
}

/* ------------------------------------------------------------ moat backend */

typedef struct moatfix {
    tdir_t dir;
    struct event_base *base;
    pool_t *pool;
    config_t *cfg;
    sasl_server_t *srv;
    buf_t err;
} moatfix_t;

static bool moatfix_open(moatfix_t *f, const char *extra_main)
{
    memset(f, 0, sizeof *f);
    tdir_make(&f->dir);
    if (!f->dir.path[0])
        return false;
    char *y = make_hash(NULL, "secret");           /* the default: yescrypt */
    char *six = make_hash("$6$", "hunter2");
    char *y2 = make_hash("$y$", "open sesame");
    if (!y || !six || !y2 || strncmp(y, "$y$", 3) != 0 || strncmp(six, "$6$", 3) != 0) {
        free(y);
        free(six);
        free(y2);
        return false;
    }
    buf_t t = BUF_INIT, m = BUF_INIT;
    buf_printf(&t,
               "alice %s\n"
               "bob %s\n"
               "carol {CRYPT}%s\n"
               "dave secret\n"
               "erin {SHA512-CRYPT}%s\n"
               "frank $6$rounds=notanumber$xyz\n",
               y, six, y2, six);
    buf_t path = BUF_INIT;
    buf_printf(&path, "%s/sasl_passwd", f->dir.path);
    write_file(buf_cstr(&path), buf_cstr(&t));
    buf_printf(&m, "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = moat\nsmtpd_sasl_password_maps = texthash:%s\n%s",
               buf_cstr(&path), extra_main ? extra_main : "");
    f->cfg = load(buf_cstr(&m), &f->err);
    f->base = event_base_new();
    f->pool = pool_new(f->base, 2);
    bool ok = f->cfg && sasl_server_new(config_main(f->cfg), f->base, f->pool, &f->srv, &f->err) == 0 && f->srv;
    if (!ok)
        fprintf(stderr, "test_sasl: %s", buf_cstr(&f->err));
    free(y);
    free(six);
    free(y2);
    buf_free(&t);
    buf_free(&m);
    buf_free(&path);
    return ok;
}

static void moatfix_close(moatfix_t *f)
{
    sasl_server_free(&f->srv);
    pool_free(&f->pool);
    if (f->base)
        event_base_free(f->base);
    config_free(&f->cfg);
    buf_free(&f->err);
    tdir_rm(&f->dir);
}

static const sasl_peer_t tls_peer = {"192.0.2.7", "192.0.2.1", 41000, 587, true};

static sasl_conv_t *start(sasl_server_t *s, const char *mech, const char *initial, got_t *g)
{
    g->inside = true;
    sasl_conv_t *c = sasl_start(s, mech, initial, &tls_peer, on_reply, g);
    g->inside = false;
    return c;
}

static void step(sasl_conv_t *c, const char *resp, got_t *g)
{
    g->inside = true;
    sasl_step(c, resp);
    g->inside = false;
}

/* One PLAIN exchange with an initial response; the final status. */
static sasl_status_t plain_once(moatfix_t *f, const char *user, const char *pw, got_t *g)
{
    buf_t raw = BUF_INIT, b = BUF_INIT;
    buf_putc(&raw, 0);
    buf_puts(&raw, user);
    buf_putc(&raw, 0);
    buf_puts(&raw, pw);
    sasl_b64_encode(raw.data, raw.len, &b);
    g->calls = 0;
    sasl_conv_t *c = start(f->srv, "plain", buf_cstr(&b), g);
    bool done = run_until(f->base, &g->calls, 1);
    sasl_end(&c);
    buf_free(&raw);
    buf_free(&b);
    return done ? g->status : (sasl_status_t)-1;
}

TEST(sasl_moat_mechanisms_and_options)
{
    moatfix_t f;
    REQUIRE(moatfix_open(&f, "smtpd_sasl_security_options = noanonymous, noplaintext\n"
                             "smtpd_sasl_tls_security_options = noanonymous\n"));
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "");
    CHECK_STR(sasl_server_mechanisms(f.srv, true), "PLAIN LOGIN");
    CHECK(sasl_server_has_mechanism(f.srv, "login", true));
    CHECK(!sasl_server_has_mechanism(f.srv, "PLAIN", false));
    CHECK(!sasl_server_has_mechanism(f.srv, "CRAM-MD5", true));
    /* a mechanism the session should not have offered: refused, later */
    got_t g = {0};
    sasl_peer_t plain_peer = {"192.0.2.7", "", 0, 0, false};
    g.inside = true;
    sasl_conv_t *c = sasl_start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &plain_peer, on_reply, &g);
    g.inside = false;
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK(!g.called_inside);
    CHECK_INT(g.status, SASL_FAIL);
    CHECK_STR(buf_cstr(&g.reason), "mechanism not available");
    sasl_end(&c);
    got_free(&g);
    moatfix_close(&f);

    REQUIRE(moatfix_open(&f, NULL));
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "PLAIN LOGIN");   /* default: noanonymous */
    moatfix_close(&f);
}

TEST(sasl_moat_plain_right_wrong_unknown)
{
    moatfix_t f;
    REQUIRE(moatfix_open(&f, NULL));
    got_t g = {0};
    CHECK_INT(plain_once(&f, "alice", "secret", &g), SASL_OK);
    CHECK_STR(buf_cstr(&g.user), "alice");
    CHECK(!g.called_inside);
    CHECK_INT(plain_once(&f, "bob", "hunter2", &g), SASL_OK);      /* SHA-512-crypt */
    CHECK_STR(buf_cstr(&g.user), "bob");
    CHECK_INT(plain_once(&f, "carol", "open sesame", &g), SASL_OK); /* {CRYPT} prefix */
    CHECK_INT(plain_once(&f, "erin", "hunter2", &g), SASL_OK);     /* {SHA512-CRYPT} prefix */
    CHECK_INT(plain_once(&f, "ALICE", "secret", &g), SASL_OK);     /* tables fold keys */
    CHECK_STR(buf_cstr(&g.user), "ALICE");

    CHECK_INT(plain_once(&f, "alice", "Secret", &g), SASL_FAIL);
    CHECK_STR(buf_cstr(&g.user), "alice");
    CHECK_STR(buf_cstr(&g.reason), "authentication failure");
    CHECK_INT(plain_once(&f, "alice", "", &g), SASL_FAIL);
    CHECK_INT(plain_once(&f, "bob", "secret", &g), SASL_FAIL);
    /* an unknown user: the same answer as a wrong password */
    CHECK_INT(plain_once(&f, "mallory", "secret", &g), SASL_FAIL);
    CHECK_STR(buf_cstr(&g.user), "mallory");
    CHECK_STR(buf_cstr(&g.reason), "authentication failure");
    /* the right password of a user with a plaintext value is refused */
    CHECK_INT(plain_once(&f, "dave", "secret", &g), SASL_TEMP);
    CHECK_STR(buf_cstr(&g.reason), "server configuration error");
    /* a hash crypt cannot use */
    CHECK_INT(plain_once(&f, "frank", "x", &g), SASL_TEMP);
    /* a control character in a user name never reaches the table or a log */
    CHECK_INT(plain_once(&f, "al\x01ice", "secret", &g), SASL_FAIL);
    CHECK(!g.has_user);
    got_free(&g);
    moatfix_close(&f);
}

TEST(sasl_moat_plain_without_initial_and_malformed)
{
    moatfix_t f;
    REQUIRE(moatfix_open(&f, NULL));
    got_t g = {0};
    sasl_conv_t *c = start(f.srv, "PLAIN", NULL, &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_CONTINUE);
    CHECK_STR(buf_cstr(&g.challenge), "");
    step(c, "AGFsaWNlAHNlY3JldA==", &g);   /* \0alice\0secret */
    CHECK(run_until(f.base, &g.calls, 2));
    CHECK(!g.called_inside);
    CHECK_INT(g.status, SASL_OK);
    CHECK_STR(buf_cstr(&g.user), "alice");
    sasl_end(&c);

    g.calls = 0;
    c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA", &g);   /* padding missing */
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_MALFORMED);
    sasl_end(&c);

    g.calls = 0;
    c = start(f.srv, "PLAIN", "=", &g);   /* empty: no PLAIN layout */
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_MALFORMED);
    CHECK_STR(buf_cstr(&g.reason), "malformed PLAIN response");
    sasl_end(&c);

    g.calls = 0;
    c = start(f.srv, "PLAIN", "Ym9iAGFsaWNlAHNlY3JldA==", &g);   /* bob\0alice\0secret */
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_FAIL);
    CHECK_STR(buf_cstr(&g.reason), "proxy authorization is not supported");
    sasl_end(&c);
    got_free(&g);
    moatfix_close(&f);
}

TEST(sasl_moat_login_two_steps)
{
    moatfix_t f;
    REQUIRE(moatfix_open(&f, NULL));
    got_t g = {0};
    buf_t b = BUF_INIT;
    sasl_conv_t *c = start(f.srv, "LOGIN", NULL, &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_CONTINUE);
    CHECK_STR(buf_cstr(&g.challenge), "VXNlcm5hbWU6");
    sasl_b64_encode("bob", 3, &b);
    step(c, buf_cstr(&b), &g);
    CHECK(run_until(f.base, &g.calls, 2));
    CHECK_INT(g.status, SASL_CONTINUE);
    CHECK_STR(buf_cstr(&g.challenge), "UGFzc3dvcmQ6");
    buf_reset(&b);
    sasl_b64_encode("hunter2", 7, &b);
    step(c, buf_cstr(&b), &g);
    CHECK(run_until(f.base, &g.calls, 3));
    CHECK(!g.called_inside);
    CHECK_INT(g.status, SASL_OK);
    CHECK_STR(buf_cstr(&g.user), "bob");
    sasl_end(&c);

    /* the user name as initial response; then a wrong password */
    g.calls = 0;
    buf_reset(&b);
    sasl_b64_encode("alice", 5, &b);
    c = start(f.srv, "LOGIN", buf_cstr(&b), &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_STR(buf_cstr(&g.challenge), "UGFzc3dvcmQ6");
    step(c, "d3Jvbmc=", &g);   /* wrong */
    CHECK(run_until(f.base, &g.calls, 2));
    CHECK_INT(g.status, SASL_FAIL);
    CHECK_STR(buf_cstr(&g.user), "alice");
    sasl_end(&c);

    /* malformed base64 at the password step; a NUL in the user name */
    g.calls = 0;
    c = start(f.srv, "LOGIN", "YWxpY2U=", &g);
    CHECK(run_until(f.base, &g.calls, 1));
    step(c, "c2VjcmV0!", &g);
    CHECK(run_until(f.base, &g.calls, 2));
    CHECK_INT(g.status, SASL_MALFORMED);
    sasl_end(&c);
    g.calls = 0;
    c = start(f.srv, "LOGIN", "YQBi", &g);   /* a\0b */
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_MALFORMED);
    sasl_end(&c);
    buf_free(&b);
    got_free(&g);
    moatfix_close(&f);
}

TEST(sasl_moat_end_during_crypt_and_free_with_exchange_alive)
{
    moatfix_t f;
    REQUIRE(moatfix_open(&f, NULL));
    got_t g = {0};
    /* ended while its crypt runs: no callback, the job cleans up alone */
    sasl_conv_t *c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g);
    sasl_end(&c);
    CHECK(c == NULL);
    while (pool_pending(f.pool))
        event_base_loop(f.base, EVLOOP_ONCE);
    run_for(f.base, 0.05);
    CHECK_INT(g.calls, 0);

    /* the owner drops the server (a reload) while an exchange is open:
     * the exchange still finishes */
    c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g);
    sasl_server_free(&f.srv);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_OK);
    sasl_end(&c);
    sasl_end(&c);   /* NULL-safe */
    got_free(&g);
    moatfix_close(&f);
}

/* sasl_end from inside the callback (what a session does) */
static void end_in_callback(void *arg, const sasl_reply_t *r)
{
    sasl_conv_t **cp = arg;
    (void)r;
    sasl_end(cp);
}

TEST(sasl_moat_end_inside_callback)
{
    moatfix_t f;
    REQUIRE(moatfix_open(&f, NULL));
    sasl_conv_t *c = sasl_start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &tls_peer, end_in_callback, &c);
    while (c)
        event_base_loop(f.base, EVLOOP_ONCE);
    moatfix_close(&f);   /* ASan: nothing leaked, nothing used after free */
}

/* ------------------------------------------------------------ Dovecot lines */

TEST(sasl_dovecot_parse_handshake_lines)
{
    dv_line_t l = {0};
    const char *why = NULL;
    CHECK_INT(sasl_dovecot_parse("VERSION\t1\t2", 11, &l, &why), 0);
    CHECK_INT(l.kind, DV_VERSION);
    CHECK_INT(l.major, 1);
    CHECK_INT(l.minor, 2);
    const char *m = "MECH\tSCRAM-SHA-1\tmutual-auth\tdictionary\tnew-flag";
    CHECK_INT(sasl_dovecot_parse(m, strlen(m), &l, &why), 0);
    CHECK_INT(l.kind, DV_MECH);
    CHECK_STR(buf_cstr(&l.name), "SCRAM-SHA-1");
    CHECK_INT(l.mech_flags, SASL_MF_MUTUAL_AUTH | SASL_MF_DICTIONARY);
    m = "MECH\tPLAIN\tplaintext";
    CHECK_INT(sasl_dovecot_parse(m, strlen(m), &l, &why), 0);
    CHECK_INT(l.mech_flags, SASL_MF_PLAINTEXT);
    m = "MECH\tANONYMOUS\tanonymous\tforward-secrecy\tactive\tprivate";
    CHECK_INT(sasl_dovecot_parse(m, strlen(m), &l, &why), 0);
    CHECK_INT(l.mech_flags, SASL_MF_ANONYMOUS | SASL_MF_FORWARD_SECRECY | SASL_MF_ACTIVE | SASL_MF_PRIVATE);
    CHECK_INT(sasl_dovecot_parse("SPID\t4242", 9, &l, &why), 0);
    CHECK_INT(l.kind, DV_SPID);
    CHECK_INT(sasl_dovecot_parse("CUID\t7", 6, &l, &why), 0);
    CHECK_INT(l.kind, DV_CUID);
    CHECK_INT(sasl_dovecot_parse("COOKIE\tabc", 10, &l, &why), 0);
    CHECK_INT(l.kind, DV_COOKIE);
    CHECK_INT(sasl_dovecot_parse("DONE", 4, &l, &why), 0);
    CHECK_INT(l.kind, DV_DONE);
    CHECK_INT(sasl_dovecot_parse("NEWTHING\tx", 10, &l, &why), 0);
    CHECK_INT(l.kind, DV_OTHER);
    CHECK_INT(sasl_dovecot_parse("", 0, &l, &why), 0);
    CHECK_INT(l.kind, DV_OTHER);
    /* malformed */
    CHECK_INT(sasl_dovecot_parse("VERSION\t1", 9, &l, &why), -1);
    CHECK_STR(why, "malformed VERSION");
    CHECK_INT(sasl_dovecot_parse("VERSION\tx\t2", 11, &l, &why), -1);
    CHECK_INT(sasl_dovecot_parse("MECH", 4, &l, &why), -1);
    CHECK_INT(sasl_dovecot_parse("MECH\t", 5, &l, &why), -1);
    sasl_dovecot_line_free(&l);
}

TEST(sasl_dovecot_parse_replies)
{
    dv_line_t l = {0};
    const char *why = NULL;
    const char *s = "OK\t7\tuser=alice\tfoo=bar";
    CHECK_INT(sasl_dovecot_parse(s, strlen(s), &l, &why), 0);
    CHECK_INT(l.kind, DV_OK);
    CHECK_INT(l.id, 7);
    CHECK(l.has_user);
    CHECK_STR(buf_cstr(&l.user), "alice");
    s = "OK\t8";
    CHECK_INT(sasl_dovecot_parse(s, strlen(s), &l, &why), 0);
    CHECK(!l.has_user);
    s = "FAIL\t3\treason=Bad\001npass\001t!\ttemp\tuser=b\0011ob";
    CHECK_INT(sasl_dovecot_parse(s, strlen(s), &l, &why), 0);
    CHECK_INT(l.kind, DV_FAIL);
    CHECK_INT(l.id, 3);
    CHECK(l.temp);
    CHECK_STR(buf_cstr(&l.reason), "Bad\npass\t!");
    CHECK_STR(buf_cstr(&l.user), "b\001ob");
    s = "FAIL\t4\tcode=temp_fail";
    CHECK_INT(sasl_dovecot_parse(s, strlen(s), &l, &why), 0);
    CHECK(l.temp);
    CHECK(!l.has_reason);
    s = "FAIL\t5\tuser=x\tcode=authz_fail";
    CHECK_INT(sasl_dovecot_parse(s, strlen(s), &l, &why), 0);
    CHECK(!l.temp);
    s = "CONT\t9\tVXNlcm5hbWU6";
    CHECK_INT(sasl_dovecot_parse(s, strlen(s), &l, &why), 0);
    CHECK_INT(l.kind, DV_CONT);
    CHECK_INT(l.id, 9);
    CHECK_STR(buf_cstr(&l.data), "VXNlcm5hbWU6");
    CHECK_INT(sasl_dovecot_parse("CONT\t10", 7, &l, &why), 0);
    CHECK_STR(buf_cstr(&l.data), "");
    CHECK_INT(sasl_dovecot_parse("CONT\t4294967295\t", 16, &l, &why), 0);
    CHECK_INT(l.id, 4294967295u);
    /* malformed */
    CHECK_INT(sasl_dovecot_parse("OK", 2, &l, &why), -1);
    CHECK_STR(why, "malformed OK");
    CHECK_INT(sasl_dovecot_parse("FAIL\tx", 6, &l, &why), -1);
    CHECK_INT(sasl_dovecot_parse("CONT\t4294967296", 15, &l, &why), -1);
    CHECK_INT(sasl_dovecot_parse("OK\t-1", 5, &l, &why), -1);
    CHECK_INT(sasl_dovecot_parse("OK\t\tuser=x", 10, &l, &why), -1);
    sasl_dovecot_line_free(&l);
}

TEST(sasl_dovecot_escaping)
{
    buf_t e = BUF_INIT, u = BUF_INIT;
    const char raw[] = "a\tb\nc\001d\re\0f";
    sasl_dovecot_escape(&e, raw, sizeof raw - 1);
    CHECK_INT(e.len, 16);
    CHECK(memcmp(e.data, "a\001tb\001nc\0011d\001re\0010f", 16) == 0);
    CHECK(!memchr(e.data, '\t', e.len) && !memchr(e.data, '\n', e.len));
    sasl_dovecot_unescape(&u, e.data, e.len);
    CHECK_INT(u.len, sizeof raw - 1);
    CHECK(memcmp(u.data, raw, sizeof raw - 1) == 0);
    /* an escape before another character stands for that character; a
     * lone one at the end for nothing; "l" is an old spelling of LF */
    buf_reset(&u);
    sasl_dovecot_unescape(&u, "x\001yz\001l\001", 7);
    CHECK_STR(buf_cstr(&u), "xyz\n");
    buf_free(&e);
    buf_free(&u);
}

TEST(sasl_dovecot_auth_lines)
{
    buf_t b = BUF_INIT;
    sasl_peer_t peer = {"192.0.2.7", "192.0.2.1", 41000, 587, true};
    sasl_dovecot_auth_line(&b, 12, "PLAIN", "smtp", &peer, "AGFsaWNlAHNlY3JldA==");
    CHECK_STR(buf_cstr(&b), "AUTH\t12\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=192.0.2.7\tlport=587"
                            "\trport=41000\tsecured\tresp=AGFsaWNlAHNlY3JldA==\n");
    buf_reset(&b);
    sasl_peer_t bare = {"", "", 0, 0, false};
    sasl_dovecot_auth_line(&b, 1, "LOGIN", "sub\tmit", &bare, NULL);
    CHECK_STR(buf_cstr(&b), "AUTH\t1\tLOGIN\tservice=sub\001tmit\tnologin\n");
    buf_reset(&b);
    sasl_peer_t v6 = {"::1", NULL, 0, 25, false};
    sasl_dovecot_auth_line(&b, 2, "PLAIN", "smtp", &v6, "=");
    CHECK_STR(buf_cstr(&b), "AUTH\t2\tPLAIN\tservice=smtp\tnologin\trip=::1\tlport=25\tresp=\n");
    buf_free(&b);
}

/* ------------------------------------------------------------ a scripted Dovecot */

typedef struct fake {
    struct event_base *base;
    struct evconnlistener *lis;
    struct bufferevent *bev;      /* the current client connection */
    int conns;                    /* connections accepted */
    int lines;                    /* lines received */
    buf_t got;                    /* every line received, LF-terminated */
    const char *hello;            /* sent on accept: the handshake */
    bool auto_ok;                 /* answer AUTH with OK user=<the PLAIN authcid> */
    char path[128];
} fake_t;

static const char default_hello[] = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
                                    "MECH\tCRAM-MD5\tdictionary\nMECH\tGSSAPI\tprivate\n"
                                    "MECH\tANONYMOUS\tanonymous\nMECH\tbad name\nSPID\t1\nCUID\t1\n"
                                    "COOKIE\tc0ffee\nDONE\n";

static void fake_send(fake_t *f, const char *text)
{
    if (f->bev)
        bufferevent_write(f->bev, text, strlen(text));
}

static void fake_read(struct bufferevent *bev, void *arg)
{
    fake_t *f = arg;
    char *line;
    size_t n;
    while ((line = evbuffer_readln(bufferevent_get_input(bev), &n, EVBUFFER_EOL_LF))) {
        buf_append(&f->got, line, n);
        buf_putc(&f->got, '\n');
        f->lines++;
        if (f->auto_ok && strncmp(line, "AUTH\t", 5) == 0) {
            unsigned id = (unsigned)strtoul(line + 5, NULL, 10);
            char reply[64];
            snprintf(reply, sizeof reply, "OK\t%u\tuser=auto%u\n", id, id);
            fake_send(f, reply);
        }
        free(line);
    }
}

static void fake_event(struct bufferevent *bev, short what, void *arg)
{
    fake_t *f = arg;
    (void)what;
    if (f->bev == bev) {
        bufferevent_free(bev);
        f->bev = NULL;
    }
}

static void fake_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    fake_t *f = arg;
    if (f->bev)
        bufferevent_free(f->bev);
    f->bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(f->bev, fake_read, NULL, fake_event, f);
    bufferevent_enable(f->bev, EV_READ | EV_WRITE);
    f->conns++;
    if (f->hello)
        fake_send(f, f->hello);
}

static bool fake_listen(fake_t *f)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    str_copy(un.sun_path, f->path, sizeof un.sun_path);
    unlink(f->path);
    f->lis = evconnlistener_new_bind(f->base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&un,
                                     (int)sizeof un);
    return f->lis != NULL;
}

static void fake_close_conn(fake_t *f)
{
    if (f->bev) {
        bufferevent_free(f->bev);
        f->bev = NULL;
    }
}

static void fake_stop(fake_t *f)
{
    fake_close_conn(f);
    if (f->lis) {
        evconnlistener_free(f->lis);
        f->lis = NULL;
    }
    unlink(f->path);
}

typedef struct dvfix {
    tdir_t dir;
    struct event_base *base;
    config_t *cfg;
    sasl_server_t *srv;
    fake_t fake;
    buf_t err;
    double saved_timeout, saved_min;
} dvfix_t;

static config_t *dv_config(dvfix_t *f, const char *extra)
{
    buf_t m = BUF_INIT;
    buf_printf(&m, "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_path = %s\nsmtpd_sasl_service = submission\n%s",
               f->fake.path, extra ? extra : "");
    config_t *cfg = load(buf_cstr(&m), &f->err);
    buf_free(&m);
    return cfg;
}

static bool dvfix_open(dvfix_t *f, bool listen, const char *extra)
{
    memset(f, 0, sizeof *f);
    f->saved_timeout = sasl_dovecot_timeout;
    f->saved_min = sasl_dovecot_backoff_min;
    sasl_dovecot_backoff_min = 0.05;
    tdir_make(&f->dir);
    f->base = event_base_new();
    f->fake.base = f->base;
    f->fake.hello = default_hello;
    snprintf(f->fake.path, sizeof f->fake.path, "%s/auth", f->dir.path);
    if (listen && !fake_listen(&f->fake))
        return false;
    f->cfg = dv_config(f, extra);
    return f->cfg && sasl_server_new(config_main(f->cfg), f->base, NULL, &f->srv, &f->err) == 0 && f->srv;
}

static void dvfix_close(dvfix_t *f)
{
    sasl_server_free(&f->srv);
    fake_stop(&f->fake);
    buf_free(&f->fake.got);
    if (f->base)
        event_base_free(f->base);
    config_free(&f->cfg);
    buf_free(&f->err);
    tdir_rm(&f->dir);
    sasl_dovecot_timeout = f->saved_timeout;
    sasl_dovecot_backoff_min = f->saved_min;
}

/* The line the fake received that starts with prefix, or NULL. */
static const char *got_line(const fake_t *f, const char *prefix)
{
    const char *s = buf_cstr(&f->got);
    size_t n = strlen(prefix);
    for (const char *l = s; *l;) {
        if (strncmp(l, prefix, n) == 0)
            return l;
        const char *nl = strchr(l, '\n');
        if (!nl)
            break;
        l = nl + 1;
    }
    return NULL;
}

static bool mechs_are(dvfix_t *f, bool tls, const char *want)
{
    return strcmp(sasl_server_mechanisms(f->srv, tls), want) == 0;
}

/* Wait until the announced list (plaintext session) is want. */
static bool wait_mechs(dvfix_t *f, const char *want)
{
    for (int i = 0; i < 400 && !mechs_are(f, false, want); i++)
        run_for(f->base, 0.01);
    return mechs_are(f, false, want);
}

TEST(sasl_dovecot_handshake_and_request)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, true, NULL));
    /* nothing to offer before the handshake */
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "");
    CHECK(!sasl_server_has_mechanism(f.srv, "PLAIN", false));
    /* a request now waits for the handshake, then goes out */
    got_t g = {0};
    sasl_conv_t *c = start(f.srv, "plain", "AGFsaWNlAHNlY3JldA==", &g);
    CHECK(run_until(f.base, &f.fake.lines, 3));
    CHECK(got_line(&f.fake, "VERSION\t1\t") != NULL);
    char cpid[32];
    snprintf(cpid, sizeof cpid, "CPID\t%ld\n", (long)getpid());
    CHECK(got_line(&f.fake, cpid) != NULL);
    CHECK(got_line(&f.fake, "AUTH\t1\tPLAIN\tservice=submission\tnologin\tlip=192.0.2.1\trip=192.0.2.7\tlport=587"
                            "\trport=41000\tsecured\tresp=AGFsaWNlAHNlY3JldA==\n") != NULL);
    /* private mechanisms and impossible names are never announced;
     * noanonymous (the default) drops ANONYMOUS */
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "PLAIN LOGIN CRAM-MD5");
    CHECK(sasl_server_has_mechanism(f.srv, "cram-md5", true));
    CHECK(!sasl_server_has_mechanism(f.srv, "GSSAPI", true));
    fake_send(&f.fake, "OK\t1\tuser=alice@example.test\n");
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK(!g.called_inside);
    CHECK_INT(g.status, SASL_OK);
    CHECK_STR(buf_cstr(&g.user), "alice@example.test");
    sasl_end(&c);
    CHECK(got_line(&f.fake, "CANCEL") == NULL);   /* finished: nothing to cancel */
    got_free(&g);
    dvfix_close(&f);
}

TEST(sasl_dovecot_security_options_filter)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, true, "smtpd_sasl_security_options = noanonymous, noplaintext\n"
                                 "smtpd_sasl_tls_security_options = nodictionary\n"));
    REQUIRE(wait_mechs(&f, "CRAM-MD5"));
    CHECK_STR(sasl_server_mechanisms(f.srv, true), "PLAIN LOGIN ANONYMOUS");
    /* a request for a mechanism the options exclude never reaches Dovecot */
    got_t g = {0};
    sasl_peer_t plain_peer = {"192.0.2.7", "", 0, 0, false};
    sasl_conv_t *c = sasl_start(f.srv, "PLAIN", "=", &plain_peer, on_reply, &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_FAIL);
    CHECK(got_line(&f.fake, "AUTH") == NULL);
    sasl_end(&c);
    got_free(&g);
    dvfix_close(&f);
}

TEST(sasl_dovecot_multiplexed_and_challenges)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, true, NULL));
    REQUIRE(wait_mechs(&f, "PLAIN LOGIN CRAM-MD5"));
    got_t g1 = {0}, g2 = {0};
    sasl_conv_t *c1 = start(f.srv, "LOGIN", NULL, &g1);
    sasl_conv_t *c2 = start(f.srv, "PLAIN", "=", &g2);
    CHECK(run_until(f.base, &f.fake.lines, 4));
    CHECK(got_line(&f.fake, "AUTH\t1\tLOGIN\tservice=submission\tnologin\t") != NULL);
    CHECK(got_line(&f.fake, "AUTH\t2\tPLAIN\t") != NULL);
    CHECK(strstr(buf_cstr(&f.fake.got), "\tresp=\n") != NULL);
    /* answers out of order, each to its own exchange */
    fake_send(&f.fake, "FAIL\t2\treason=Password mismatch\tuser=bob\nCONT\t1\tVXNlcm5hbWU6\n");
    CHECK(run_until(f.base, &g2.calls, 1));
    CHECK(run_until(f.base, &g1.calls, 1));
    CHECK_INT(g2.status, SASL_FAIL);
    CHECK_STR(buf_cstr(&g2.reason), "Password mismatch");
    CHECK_STR(buf_cstr(&g2.user), "bob");
    CHECK_INT(g1.status, SASL_CONTINUE);
    CHECK_STR(buf_cstr(&g1.challenge), "VXNlcm5hbWU6");
    sasl_end(&c2);
    /* the client's answer goes out as CONT; bad base64 never does */
    step(c1, "not base64!", &g1);
    CHECK(run_until(f.base, &g1.calls, 2));
    CHECK_INT(g1.status, SASL_MALFORMED);
    sasl_end(&c1);   /* still open at Dovecot: cancelled */
    CHECK(run_until(f.base, &f.fake.lines, 5));
    CHECK(got_line(&f.fake, "CANCEL\t1\n") != NULL);
    CHECK(got_line(&f.fake, "CONT") == NULL);

    g1.calls = 0;
    c1 = start(f.srv, "LOGIN", NULL, &g1);
    CHECK(run_until(f.base, &f.fake.lines, 6));
    fake_send(&f.fake, "CONT\t3\tVXNlcm5hbWU6\n");
    CHECK(run_until(f.base, &g1.calls, 1));
    step(c1, "Ym9i", &g1);
    CHECK(run_until(f.base, &f.fake.lines, 7));
    CHECK(got_line(&f.fake, "CONT\t3\tYm9i\n") != NULL);
    /* a temporary failure, with an unprintable reason cleaned */
    fake_send(&f.fake, "FAIL\t3\ttemp\treason=db\001ndown\n");
    CHECK(run_until(f.base, &g1.calls, 2));
    CHECK_INT(g1.status, SASL_TEMP);
    CHECK_STR(buf_cstr(&g1.reason), "db?down");
    sasl_end(&c1);
    /* replies for ids nobody waits for are ignored */
    fake_send(&f.fake, "OK\t99\tuser=ghost\n");
    run_for(f.base, 0.05);
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "PLAIN LOGIN CRAM-MD5");
    CHECK_INT(f.fake.conns, 1);
    got_free(&g1);
    got_free(&g2);
    dvfix_close(&f);
}

TEST(sasl_dovecot_timeout_cancels)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, true, NULL));
    REQUIRE(wait_mechs(&f, "PLAIN LOGIN CRAM-MD5"));
    sasl_dovecot_timeout = 0.2;
    got_t g = {0};
    sasl_conv_t *c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_TEMP);
    CHECK_STR(buf_cstr(&g.reason), "timeout waiting for the authentication server");
    sasl_end(&c);
    CHECK(run_until(f.base, &f.fake.lines, 4));
    CHECK(got_line(&f.fake, "CANCEL\t1\n") != NULL);
    /* the late answer is dropped, the connection stays */
    fake_send(&f.fake, "OK\t1\tuser=alice\n");
    run_for(f.base, 0.05);
    CHECK_INT(g.calls, 1);
    CHECK_INT(f.fake.conns, 1);
    got_free(&g);
    dvfix_close(&f);
}

TEST(sasl_dovecot_connection_loss_and_reconnect)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, true, NULL));
    REQUIRE(wait_mechs(&f, "PLAIN LOGIN CRAM-MD5"));
    got_t g1 = {0}, g2 = {0};
    sasl_conv_t *c1 = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g1);
    sasl_conv_t *c2 = start(f.srv, "LOGIN", NULL, &g2);
    CHECK(run_until(f.base, &f.fake.lines, 4));
    fake_send(&f.fake, "CONT\t2\tVXNlcm5hbWU6\n");
    CHECK(run_until(f.base, &g2.calls, 1));
    /* Dovecot goes away: the waiting exchange fails at once, the one
     * waiting for its client on its next step */
    f.fake.hello = NULL;   /* the next connection hangs in the handshake */
    fake_close_conn(&f.fake);
    CHECK(run_until(f.base, &g1.calls, 1));
    CHECK_INT(g1.status, SASL_TEMP);
    CHECK_STR(buf_cstr(&g1.reason), "lost connection to the authentication server");
    CHECK_INT(g2.calls, 1);
    step(c2, "Ym9i", &g2);
    CHECK(run_until(f.base, &g2.calls, 2));
    CHECK_INT(g2.status, SASL_TEMP);
    sasl_end(&c1);
    sasl_end(&c2);
    /* the last list stays announced (a client then gets 454, not 5xx) */
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "PLAIN LOGIN CRAM-MD5");
    /* reconnects; a request during that handshake waits for it */
    CHECK(run_until(f.base, &f.fake.conns, 2));
    g1.calls = 0;
    c1 = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g1);
    run_for(f.base, 0.05);
    CHECK_INT(g1.calls, 0);
    f.fake.auto_ok = true;
    fake_send(&f.fake, "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nDONE\n");
    CHECK(run_until(f.base, &g1.calls, 1));
    CHECK_INT(g1.status, SASL_OK);
    CHECK_STR(buf_cstr(&g1.user), "auto3");   /* ids go on counting across connections */
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "PLAIN");
    sasl_end(&c1);
    got_free(&g1);
    got_free(&g2);
    dvfix_close(&f);
}

TEST(sasl_dovecot_down_from_the_start)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, false, NULL));   /* no socket yet */
    CHECK_STR(sasl_server_mechanisms(f.srv, false), "");
    got_t g = {0};
    sasl_conv_t *c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK(!g.called_inside);
    CHECK_INT(g.status, SASL_TEMP);
    CHECK_STR(buf_cstr(&g.reason), "no connection to the authentication server");
    sasl_end(&c);
    /* Dovecot starts: the backoff retry finds it */
    REQUIRE(fake_listen(&f.fake));
    CHECK(wait_mechs(&f, "PLAIN LOGIN CRAM-MD5"));
    got_free(&g);
    dvfix_close(&f);
}

TEST(sasl_dovecot_protocol_errors_reconnect)
{
    dvfix_t f;
    /* a reply before DONE, a wrong major version, an overlong line */
    static const char *const hellos[] = {
        "VERSION\t1\t2\nOK\t1\tuser=x\n",
        "VERSION\t2\t0\nMECH\tPLAIN\nDONE\n",
        "DONE\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(hellos); i++) {
        REQUIRE(dvfix_open(&f, true, NULL));
        f.fake.hello = hellos[i];
        CHECK(run_until(f.base, &f.fake.conns, 2));   /* dropped, and tried again */
        CHECK_STR(sasl_server_mechanisms(f.srv, false), "");
        dvfix_close(&f);
    }
    REQUIRE(dvfix_open(&f, true, NULL));
    REQUIRE(wait_mechs(&f, "PLAIN LOGIN CRAM-MD5"));
    got_t g = {0};
    sasl_conv_t *c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g);
    CHECK(run_until(f.base, &f.fake.lines, 3));
    char *big = xmalloc(SASL_DOVECOT_LINE_MAX + 64);
    memset(big, 'A', SASL_DOVECOT_LINE_MAX + 62);
    memcpy(big, "CONT\t1\t", 7);
    big[SASL_DOVECOT_LINE_MAX + 62] = '\n';
    big[SASL_DOVECOT_LINE_MAX + 63] = 0;
    fake_send(&f.fake, big);
    free(big);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_TEMP);
    sasl_end(&c);
    CHECK(run_until(f.base, &f.fake.conns, 2));
    got_free(&g);
    dvfix_close(&f);
}

TEST(sasl_dovecot_reload_keeps_the_connection)
{
    dvfix_t f;
    REQUIRE(dvfix_open(&f, true, NULL));
    REQUIRE(wait_mechs(&f, "PLAIN LOGIN CRAM-MD5"));
    /* the next generation's server, then the old one goes */
    sasl_server_t *next = NULL;
    REQUIRE(sasl_server_new(config_main(f.cfg), f.base, NULL, &next, &f.err) == 0 && next);
    CHECK_STR(sasl_server_mechanisms(next, false), "PLAIN LOGIN CRAM-MD5");   /* known at once */
    sasl_server_free(&f.srv);
    f.srv = next;
    f.fake.auto_ok = true;
    got_t g = {0};
    sasl_conv_t *c = start(f.srv, "PLAIN", "AGFsaWNlAHNlY3JldA==", &g);
    CHECK(run_until(f.base, &g.calls, 1));
    CHECK_INT(g.status, SASL_OK);
    CHECK_INT(f.fake.conns, 1);
    sasl_end(&c);
    got_free(&g);
    dvfix_close(&f);
}
