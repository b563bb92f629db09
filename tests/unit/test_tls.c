/* Unit tests for src/tls (server half and the shared parts): levels,
 * protocol lists, cipher grades, configuration errors with file:line,
 * RSA + ECDSA, real handshakes over BIO pairs against a plain OpenSSL
 * client, what tls_info_get reads, the log and Received: texts, client
 * certificates and resumption.  Certificates come from tls_testlib.h,
 * made once for the whole file. */
#include "harness.h"
#include "tls_testlib.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "tls/tls.h"

#include <openssl/ssl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ fixture */

static struct {
    bool made, ok;
    tt_pki_t pki;
    tt_cert_t rsa, ec, alice, stranger;
} fx;

static void fixture_free(void)
{
    tt_cert_free(&fx.rsa);
    tt_cert_free(&fx.ec);
    tt_cert_free(&fx.alice);
    tt_cert_free(&fx.stranger);
    tt_pki_free(&fx.pki);
}

static bool fixture(void)
{
    if (fx.made)
        return fx.ok;
    fx.made = true;
    fx.ok = tt_pki_init(&fx.pki, "moat test CA") && tt_issue(&fx.pki, "mx.test", &(tt_opts_t){0}, &fx.rsa) &&
            tt_issue(&fx.pki, "mx.test", &(tt_opts_t){.ec = true}, &fx.ec) &&
            tt_issue(&fx.pki, "alice", &(tt_opts_t){.ec = true, .client = true}, &fx.alice) &&
            tt_issue(&fx.pki, "mallory", &(tt_opts_t){.ec = true, .client = true, .self_signed = true}, &fx.stranger);
    atexit(fixture_free);
    return fx.ok;
}

/* A server from main.cf text (and optionally master.cf: the first
 * service's parameters).  Returns tls_server_new's result. */
static int server_from(const char *main_cf, const char *master_cf, tls_server_t **t, buf_t *err)
{
    buf_t warn = BUF_INIT;
    *t = NULL;
    config_t *cfg = config_load_text(main_cf, master_cf, err, &warn);
    buf_free(&warn);
    if (!cfg)
        return -2;
    const params_t *p = master_cf ? config_service(cfg, 0)->params : config_main(cfg);
    int rc = tls_server_new(p, "smtp", t, err);
    config_free(&cfg);
    return rc;
}

/* main.cf for a "may" server with the RSA certificate, plus extra lines. */
static char *rsa_main(const char *extra)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n%s",
               fx.rsa.cert_file, fx.rsa.key_file, extra ? extra : "");
    return buf_steal(&b);
}

typedef struct {
    SSL *cli, *srv;
    bool ok;
    tls_info_t info;
} conn_t;

/* One connection from a client made with cctx (and a session to resume,
 * or NULL) to t; the handshake, one byte each way, and the server's
 * tls_info. */
static void conn_run(conn_t *c, tls_server_t *t, SSL_CTX *cctx, SSL_SESSION *resume)
{
    memset(c, 0, sizeof *c);
    c->srv = tls_server_ssl(t);
    c->cli = SSL_new(cctx);
    if (!c->srv || !c->cli)
        return;
    if (resume)
        SSL_set_session(c->cli, resume);
    c->ok = tt_handshake(c->cli, c->srv) && tt_exchange(c->cli, c->srv);
    if (c->ok)
        tls_info_get(c->srv, "sha256", &c->info);
    ERR_clear_error();
}

/* A clean end: both sides send close_notify.  Without it OpenSSL treats
 * the session as broken and never resumes it (SSL_free removes it from
 * the cache and marks it not resumable). */
static void conn_free(conn_t *c)
{
    if (c->ok) {
        SSL_shutdown(c->cli);
        SSL_shutdown(c->srv);
    }
    SSL_free(c->cli);
    SSL_free(c->srv);
    c->cli = c->srv = NULL;
}

/* Log lines while fn runs, via a scratch maillog file. */
static char log_path[64];

static void log_capture_start(void)
{
    snprintf(log_path, sizeof log_path, "/tmp/moat-tls-log.XXXXXX");
    int fd = mkstemp(log_path);
    if (fd >= 0)
        close(fd);
    log_open("moat", "mail", log_path);
}

static char *log_capture_end(void)
{
    const char *keep = getenv("MOAT_UNIT_LOG");
    log_open("moat", "mail", keep ? keep : "/dev/null");
    FILE *fp = fopen(log_path, "r");
    buf_t b = BUF_INIT;
    if (fp) {
        char line[2048];
        while (fgets(line, sizeof line, fp))
            buf_puts(&b, line);
        fclose(fp);
    }
    unlink(log_path);
    return buf_steal(&b);
}

/* ------------------------------------------------------------- levels */

TEST(tls_level_parse_names)
{
    tls_level_t l = TLS_LEV_SECURE;
    CHECK(tls_level_parse("none", false, &l) && l == TLS_LEV_NONE);
    CHECK(tls_level_parse("may", false, &l) && l == TLS_LEV_MAY);
    CHECK(tls_level_parse("Encrypt", false, &l) && l == TLS_LEV_ENCRYPT);
    CHECK(!tls_level_parse("verify", false, &l));
    CHECK(!tls_level_parse("secure", false, &l));
    CHECK(tls_level_parse("verify", true, &l) && l == TLS_LEV_VERIFY);
    CHECK(tls_level_parse("secure", true, &l) && l == TLS_LEV_SECURE);
    CHECK(!tls_level_parse("dane", true, &l));
    CHECK(!tls_level_parse("", false, &l));
    CHECK(!tls_level_parse("maybe", false, &l));
    CHECK_STR(tls_level_name(TLS_LEV_ENCRYPT), "encrypt");
    CHECK_STR(tls_level_name(TLS_LEV_NONE), "none");
}

/* ---------------------------------------------------------- protocols */

static bool range_of(const char *list, int *min, int *max, buf_t *err)
{
    /* Split as the config's list parser does: commas and white space. */
    char copy[256];
    str_copy(copy, list, sizeof copy);
    const char *items[16];
    size_t n = 0;
    for (char *tok = strtok(copy, ", \t"); tok && n < ARRAY_LEN(items); tok = strtok(NULL, ", \t"))
        items[n++] = tok;
    buf_reset(err);
    *min = *max = -1;
    return tls_protocol_range(items, n, min, max, err);
}

TEST(tls_protocol_range_forms)
{
    buf_t err = BUF_INIT;
    int lo, hi;
    CHECK(range_of(">=TLSv1.2", &lo, &hi, &err) && lo == TLS1_2_VERSION && hi == 0);
    CHECK(range_of(">= TLSv1.3", &lo, &hi, &err) && lo == TLS1_3_VERSION && hi == 0);
    CHECK(range_of("<=TLSv1.2", &lo, &hi, &err) && lo == TLS1_VERSION && hi == TLS1_2_VERSION);
    CHECK(range_of(">=TLSv1.1 <=TLSv1.2", &lo, &hi, &err) && lo == TLS1_1_VERSION && hi == TLS1_2_VERSION);
    CHECK(range_of("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", &lo, &hi, &err) && lo == TLS1_2_VERSION && hi == 0);
    CHECK(range_of("!SSLv2:!SSLv3", &lo, &hi, &err) && lo == TLS1_VERSION && hi == 0);
    CHECK(range_of("!TLSv1.3", &lo, &hi, &err) && lo == TLS1_VERSION && hi == TLS1_2_VERSION);
    CHECK(range_of("TLSv1.2", &lo, &hi, &err) && lo == TLS1_2_VERSION && hi == TLS1_2_VERSION);
    CHECK(range_of("TLSv1.2 TLSv1.3", &lo, &hi, &err) && lo == TLS1_2_VERSION && hi == 0);
    CHECK(range_of("tlsv1.3", &lo, &hi, &err) && lo == TLS1_3_VERSION && hi == 0);
    /* empty: everything moat speaks */
    CHECK(range_of("", &lo, &hi, &err) && lo == TLS1_VERSION && hi == 0);
    /* a hole keeps the newest run, not the old versions below it */
    CHECK(range_of("TLSv1, TLSv1.3", &lo, &hi, &err) && lo == TLS1_3_VERSION && hi == 0);
    CHECK(range_of("!TLSv1.2", &lo, &hi, &err) && lo == TLS1_3_VERSION && hi == 0);
    /* SSLv2/SSLv3 are names, never protocols */
    CHECK(range_of("SSLv3, TLSv1.2", &lo, &hi, &err) && lo == TLS1_2_VERSION && hi == TLS1_2_VERSION);
    CHECK(!range_of("SSLv3", &lo, &hi, &err));
    CHECK(strstr(buf_cstr(&err), "no TLS protocol version left") != NULL);
    CHECK(!range_of(">=TLSv1.3, <=TLSv1.2", &lo, &hi, &err));
    CHECK(!range_of("TLSv9", &lo, &hi, &err));
    CHECK_STR(buf_cstr(&err), "unknown protocol \"TLSv9\"");
    CHECK(!range_of("!TLSv1.4", &lo, &hi, &err));
    CHECK_STR(buf_cstr(&err), "unknown protocol \"!TLSv1.4\"");
    CHECK(!range_of(">=", &lo, &hi, &err));
    buf_free(&err);
}

/* ------------------------------------------------------------ ciphers */

TEST(tls_cipher_list_grades)
{
    buf_t err = BUF_INIT, out = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load_text("tls_high_cipherlist = HIGH:!aNULL\n", NULL, &err, &warn);
    REQUIRE(cfg);
    const params_t *p = config_main(cfg);
    CHECK(tls_cipher_list(p, "high", NULL, 0, &out, &err));
    CHECK_STR(buf_cstr(&out), "HIGH:!aNULL");
    buf_reset(&out);
    const char *ex[] = {"aNULL", "MD5:RC4", "3DES"};
    CHECK(tls_cipher_list(p, "medium", ex, 3, &out, &err));
    CHECK_STR(buf_cstr(&out), "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH:!aNULL:!MD5:!RC4:!3DES");
    buf_reset(&out);
    CHECK(!tls_cipher_list(p, "low", NULL, 0, &out, &err));
    CHECK(strstr(buf_cstr(&err), "\"low\" is not supported") != NULL);
    buf_reset(&err);
    CHECK(!tls_cipher_list(p, "export", NULL, 0, &out, &err));
    CHECK(!tls_cipher_list(p, "null", NULL, 0, &out, &err));
    buf_reset(&err);
    CHECK(!tls_cipher_list(p, "strong", NULL, 0, &out, &err));
    CHECK(strstr(buf_cstr(&err), "unknown cipher grade \"strong\"") != NULL);
    buf_reset(&err);
    const char *bad[] = {"!RC4"};
    CHECK(!tls_cipher_list(p, "high", bad, 1, &out, &err));
    CHECK(strstr(buf_cstr(&err), "invalid cipher exclusion \"!RC4\"") != NULL);
    config_free(&cfg);
    buf_free(&err);
    buf_free(&out);
    buf_free(&warn);
}

/* ------------------------------------------------ configuration errors */

TEST(tls_server_none_and_may_without_cert)
{
    buf_t err = BUF_INIT;
    tls_server_t *t = (tls_server_t *)1;
    CHECK_INT(server_from("", NULL, &t, &err), 0);
    CHECK(t == NULL);
    CHECK_INT(server_from("smtpd_tls_security_level = none\nsmtpd_use_tls = yes\n", NULL, &t, &err), 0);
    CHECK(t == NULL);
    /* may without a certificate: a warning, and no STARTTLS */
    log_capture_start();
    CHECK_INT(server_from("smtpd_tls_security_level = may\n", NULL, &t, &err), 0);
    char *log = log_capture_end();
    CHECK(t == NULL);
    CHECK_STR(buf_cstr(&err), "");
    CHECK(strstr(log, "warning: smtp: no server certificate") != NULL);
    CHECK(strstr(log, "TLS won't be enabled") != NULL);
    free(log);
    /* smtpd_use_tls = yes is may */
    CHECK_INT(server_from("smtpd_use_tls = yes\n", NULL, &t, &err), 0);
    CHECK(t == NULL);
    buf_free(&err);
}

TEST(tls_server_encrypt_needs_cert)
{
    buf_t err = BUF_INIT;
    tls_server_t *t = NULL;
    CHECK_INT(server_from("myhostname = mx.test\nsmtpd_tls_security_level = encrypt\n", NULL, &t, &err), -1);
    CHECK(t == NULL);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:2: smtpd_tls_security_level = encrypt needs a server certificate") !=
          NULL);
    buf_reset(&err);
    CHECK_INT(server_from("smtpd_enforce_tls = yes\n", NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:1: smtpd_enforce_tls = yes needs a server certificate") != NULL);
    buf_reset(&err);
    /* wrapper mode is TLS or nothing, whatever the level */
    CHECK_INT(server_from("\nsmtpd_tls_wrappermode = yes\n", NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:2: smtpd_tls_wrappermode = yes needs a server certificate") != NULL);
    buf_free(&err);
}

TEST(tls_server_config_errors)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, text = BUF_INIT;
    tls_server_t *t = NULL;

    /* a missing file, named with the parameter's file:line */
    CHECK_INT(server_from("smtpd_tls_security_level = may\n\nsmtpd_tls_cert_file = /nonexistent/cert.pem\n", NULL, &t,
                          &err),
              -1);
    CHECK_STR(buf_cstr(&err), "<text>/main.cf:3: smtpd_tls_cert_file: /nonexistent/cert.pem: No such file or directory\n");
    buf_reset(&err);

    /* a key that is not the certificate's */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n",
               fx.rsa.cert_file, fx.ec.key_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:2: smtpd_tls_cert_file: ") == buf_cstr(&err));
    CHECK(strstr(buf_cstr(&err), "does not match its certificate") != NULL);
    CHECK(strstr(buf_cstr(&err), fx.ec.key_file) != NULL);
    buf_reset(&err);
    buf_reset(&text);

    /* a key file without a key: its own line */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n",
               fx.rsa.cert_file, fx.pki.ca_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    buf_reset(&text);
    buf_printf(&text, "<text>/main.cf:3: smtpd_tls_key_file: %s: no private key found\n", fx.pki.ca_file);
    CHECK_STR(buf_cstr(&err), buf_cstr(&text));
    buf_reset(&err);
    buf_reset(&text);

    /* cert_file without key_file: the key must be in the same file, and a
     * missing one is blamed on cert_file's line */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\n", fx.rsa.cert_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:2: smtpd_tls_key_file: ") == buf_cstr(&err));
    CHECK(strstr(buf_cstr(&err), "no private key found") != NULL);
    buf_reset(&err);
    buf_reset(&text);

    /* a bad protocol, a bad grade, a bad digest, a bad level: all reported */
    char *m = rsa_main("smtpd_tls_protocols = >=TLSv1.2, !TLSv2\nsmtpd_tls_ciphers = export\n"
                       "smtpd_tls_fingerprint_digest = sha7\n");
    CHECK_INT(server_from(m, NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:4: smtpd_tls_protocols: unknown protocol \"!TLSv2\"\n") != NULL);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:5: smtpd_tls_ciphers: cipher grade \"export\" is not supported") !=
          NULL);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:6: smtpd_tls_fingerprint_digest: unknown digest \"sha7\"") != NULL);
    free(m);
    buf_reset(&err);
    CHECK_INT(server_from("smtpd_tls_security_level = required\n", NULL, &t, &err), -1);
    CHECK_STR(buf_cstr(&err),
              "<text>/main.cf:1: smtpd_tls_security_level: unknown level \"required\" (none, may or encrypt)\n");
    buf_reset(&err);

    /* at encrypt the mandatory protocols count, not smtpd_tls_protocols */
    m = rsa_main("smtpd_tls_security_level = encrypt\nsmtpd_tls_protocols = bogus\n"
                 "smtpd_tls_mandatory_protocols = SSLv3\n");
    CHECK_INT(server_from(m, NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "smtpd_tls_mandatory_protocols: no TLS protocol version left") != NULL);
    CHECK(strstr(buf_cstr(&err), "bogus") == NULL);
    free(m);
    buf_reset(&err);

    /* a CAfile that is not there */
    m = rsa_main("smtpd_tls_CAfile = /nonexistent/ca.pem\n");
    CHECK_INT(server_from(m, NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:4: smtpd_tls_CAfile: /nonexistent/ca.pem: ") == buf_cstr(&err));
    free(m);
    buf_reset(&err);

    /* a CApath that is not a directory */
    m = rsa_main("smtpd_tls_CApath = /nonexistent/certs\n");
    CHECK_INT(server_from(m, NULL, &t, &err), -1);
    CHECK_STR(buf_cstr(&err), "<text>/main.cf:4: smtpd_tls_CApath: /nonexistent/certs: No such file or directory\n");
    free(m);
    buf_reset(&err);
    m = rsa_main("smtpd_tls_CApath = /dev/null\n");
    CHECK_INT(server_from(m, NULL, &t, &err), -1);
    CHECK_STR(buf_cstr(&err), "<text>/main.cf:4: smtpd_tls_CApath: /dev/null: not a directory\n");
    free(m);
    buf_reset(&err);

    /* from a master.cf -o: the service's line is the origin */
    CHECK_INT(server_from("smtpd_tls_security_level = may\n",
                          "127.0.0.1:2525 inet n - n - - smtpd\n  -o smtpd_tls_cert_file=/nonexistent/x.pem\n", &t,
                          &err),
              -1);
    CHECK_STR(buf_cstr(&err), "<text>/master.cf:1: smtpd_tls_cert_file: /nonexistent/x.pem: No such file or directory\n");
    buf_free(&err);
    buf_free(&text);
}

TEST(tls_server_chain_file_errors)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, text = BUF_INIT;
    tls_server_t *t = NULL;
    /* a certificate before its key */
    char path[256];
    snprintf(path, sizeof path, "%s/cert-first.pem", fx.pki.dir);
    X509 *certs[1] = {fx.rsa.cert};
    REQUIRE(tt_write_pem(path, NULL, certs, 1));
    FILE *fp = fopen(path, "a");
    REQUIRE(fp);
    BIO *b = BIO_new_fp(fp, BIO_NOCLOSE);
    PEM_write_bio_PrivateKey(b, fx.rsa.key, NULL, NULL, 0, NULL, NULL);
    BIO_free(b);
    fclose(fp);
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s\n", path);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "<text>/main.cf:2: smtpd_tls_chain_files: ") == buf_cstr(&err));
    CHECK(strstr(buf_cstr(&err), "PEM object 1: a certificate before any private key") != NULL);
    buf_reset(&err);
    buf_reset(&text);
    /* a key alone */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s\n", fx.rsa.key_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "is not followed by its certificate") != NULL);
    buf_reset(&err);
    buf_reset(&text);
    /* two RSA chains: one key per algorithm */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s, %s\n", fx.rsa.chain_file,
               fx.rsa.chain_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "one key per algorithm") != NULL);
    buf_reset(&err);
    buf_reset(&text);
    /* a chain may span files: the key in one, its certificate in the next */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s %s\n", fx.ec.key_file,
               fx.ec.cert_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), 0);
    CHECK(t != NULL);
    tls_server_free(&t);
    buf_reset(&err);
    buf_reset(&text);
    /* a key whose certificate is not the next object: named by its own file */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s %s\n", fx.ec.key_file,
               fx.rsa.chain_file);
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), fx.ec.key_file) != NULL);
    CHECK(strstr(buf_cstr(&err), "the private key (PEM object 1) is not followed by its certificate") != NULL);
    buf_reset(&err);
    buf_reset(&text);
    /* not PEM at all */
    buf_printf(&text, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = /dev/null\n");
    CHECK_INT(server_from(buf_cstr(&text), NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "no private key and certificate found") != NULL);
    unlink(path);
    buf_free(&err);
    buf_free(&text);
}

/* -------------------------------------------------------- handshakes */

TEST(tls_server_handshake_info)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, rcv = BUF_INIT;
    tls_server_t *t = NULL;
    char *m = rsa_main("smtpd_tls_loglevel = 1\n");
    REQUIRE(server_from(m, NULL, &t, &err) == 0 && t != NULL);
    free(m);
    CHECK(tls_server_level(t) == TLS_LEV_MAY);
    CHECK(!tls_server_wrapper(t));
    CHECK_INT(tls_server_loglevel(t), 1);

    SSL_CTX *cctx = tt_client_ctx();
    REQUIRE(cctx);
    SSL_CTX_set1_groups_list(cctx, "X25519");
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK_STR(c.info.protocol, "TLSv1.3");
    CHECK_STR(c.info.cipher, "TLS_AES_256_GCM_SHA384");
    CHECK_INT(c.info.cipher_bits, 256);
    CHECK_INT(c.info.alg_bits, 256);
    CHECK_STR(c.info.kex, "X25519");
    CHECK_STR(c.info.sig, "RSA-PSS");
    CHECK_INT(c.info.sig_bits, 2048);
    CHECK_STR(c.info.digest, "SHA256");
    CHECK(!c.info.resumed);
    CHECK(!c.info.peer_cert);
    CHECK(!c.info.peer_verified);
    CHECK_STR(c.info.fingerprint, "");

    tls_info_received(&c.info, false, &rcv);
    CHECK_STR(buf_cstr(&rcv), "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
                              "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\n"
                              "\t(No client certificate requested)");
    buf_reset(&rcv);
    tls_info_received(&c.info, true, &rcv);
    CHECK(strstr(buf_cstr(&rcv), "SHA256)\n\t(Client did not present a certificate)") != NULL);

    log_capture_start();
    tls_info_log(&c.info, "smtpd", true, "client.test[127.0.0.1]");
    tls_info_log(&c.info, "smtp", false, "mx.test[127.0.0.1]:25");
    char *log = log_capture_end();
    CHECK(strstr(log, "moat/smtpd[") != NULL);
    CHECK(strstr(log, ": Anonymous TLS connection established from client.test[127.0.0.1]: TLSv1.3 with cipher "
                      "TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 "
                      "bits) server-digest SHA256\n") != NULL);
    CHECK(strstr(log, "moat/smtp[") != NULL);
    CHECK(strstr(log, ": Anonymous TLS connection established to mx.test[127.0.0.1]:25: TLSv1.3") != NULL);
    free(log);
    conn_free(&c);

    /* TLS 1.2: Postfix's line has no TLS 1.3 details */
    SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK_STR(c.info.protocol, "TLSv1.2");
    CHECK_STR(c.info.cipher, "ECDHE-RSA-AES256-GCM-SHA384");
    CHECK_STR(c.info.kex, "");
    CHECK_STR(c.info.sig, "");
    buf_reset(&rcv);
    tls_info_received(&c.info, false, &rcv);
    CHECK_STR(buf_cstr(&rcv), "(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\n"
                              "\t(No client certificate requested)");
    conn_free(&c);

    /* TLS 1.1 is below the default smtpd_tls_protocols */
    SSL_CTX_set_min_proto_version(cctx, TLS1_1_VERSION);
    SSL_CTX_set_max_proto_version(cctx, TLS1_1_VERSION);
    conn_run(&c, t, cctx, NULL);
    CHECK(!c.ok);
    conn_free(&c);

    SSL_CTX_free(cctx);
    tls_server_free(&t);
    CHECK(t == NULL);
    buf_free(&err);
    buf_free(&rcv);
}

TEST(tls_server_ecdh_curve_text)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT;
    tls_server_t *t = NULL;
    buf_t m = BUF_INIT;
    buf_printf(&m, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s\n", fx.ec.chain_file);
    REQUIRE(server_from(buf_cstr(&m), NULL, &t, &err) == 0 && t != NULL);
    SSL_CTX *cctx = tt_client_ctx();
    SSL_CTX_set1_groups_list(cctx, "P-256");
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK_STR(c.info.kex, "ECDHE (P-256)");
    CHECK_STR(c.info.sig, "ECDSA (P-256)");
    CHECK_INT(c.info.sig_bits, 256);
    buf_t rcv = BUF_INIT;
    tls_info_received(&c.info, false, &rcv);
    CHECK(strstr(buf_cstr(&rcv), "\n\t key-exchange ECDHE (P-256) server-signature ECDSA (P-256) server-digest SHA256)") !=
          NULL);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);
    buf_free(&rcv);
    buf_free(&m);
    buf_free(&err);
}

TEST(tls_server_rsa_and_ecdsa)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, m = BUF_INIT;
    /* both through chain files, EC first: the order of algorithms is free */
    buf_printf(&m, "smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s %s\n", fx.ec.chain_file,
               fx.rsa.chain_file);
    /* and the legacy pairs: RSA in cert_file, ECDSA in eccert_file */
    buf_t m2 = BUF_INIT;
    buf_printf(&m2, "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n"
                    "smtpd_tls_eccert_file = %s\nsmtpd_tls_eckey_file = %s\n",
               fx.rsa.chain_file, fx.rsa.chain_file, fx.ec.cert_file, fx.ec.key_file);
    const char *confs[] = {buf_cstr(&m), buf_cstr(&m2)};
    for (int k = 0; k < 2; k++) {
        tls_server_t *t = NULL;
        REQUIRE(server_from(confs[k], NULL, &t, &err) == 0 && t != NULL);
        SSL_CTX *ec = tt_client_ctx(), *rsa = tt_client_ctx();
        SSL_CTX_set1_sigalgs_list(ec, "ecdsa_secp256r1_sha256");
        SSL_CTX_set1_sigalgs_list(rsa, "rsa_pss_rsae_sha256");
        conn_t c;
        conn_run(&c, t, ec, NULL);
        CHECK(c.ok);
        CHECK_STR(c.info.sig, "ECDSA (P-256)");
        CHECK(SSL_get0_peer_certificate(c.cli) && X509_cmp(SSL_get0_peer_certificate(c.cli), fx.ec.cert) == 0);
        conn_free(&c);
        conn_run(&c, t, rsa, NULL);
        CHECK(c.ok);
        CHECK_STR(c.info.sig, "RSA-PSS");
        CHECK_INT(c.info.sig_bits, 2048);
        CHECK(SSL_get0_peer_certificate(c.cli) && X509_cmp(SSL_get0_peer_certificate(c.cli), fx.rsa.cert) == 0);
        /* the chain file's CA certificate goes out with the leaf */
        STACK_OF(X509) *sent = SSL_get_peer_cert_chain(c.cli);
        CHECK(sent && sk_X509_num(sent) == 2);
        conn_free(&c);
        SSL_CTX_free(ec);
        SSL_CTX_free(rsa);
        tls_server_free(&t);
    }
    buf_free(&m);
    buf_free(&m2);
    buf_free(&err);
}

/* -------------------------------------------------- client certificates */

TEST(tls_server_client_certificates)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, rcv = BUF_INIT, m = BUF_INIT;
    buf_printf(&m, "smtpd_tls_ask_ccert = yes\nsmtpd_tls_CAfile = %s\n", fx.pki.ca_file);
    char *main_cf = rsa_main(buf_cstr(&m));
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);

    /* a certificate from the CA: verified, with its names and fingerprints */
    SSL_CTX *cctx = tt_client_ctx();
    REQUIRE(SSL_CTX_use_certificate(cctx, fx.alice.cert) == 1 && SSL_CTX_use_PrivateKey(cctx, fx.alice.key) == 1);
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK(c.info.peer_cert);
    CHECK(c.info.peer_verified);
    CHECK_STR(c.info.peer_cn, "alice");
    CHECK_STR(c.info.issuer_cn, "moat test CA");
    char fp[200];
    tt_fingerprint(fx.alice.cert, "sha256", false, fp, sizeof fp);
    CHECK_STR(c.info.fingerprint, fp);
    CHECK_INT(strlen(fp), 95);
    tt_fingerprint(fx.alice.cert, "sha256", true, fp, sizeof fp);
    CHECK_STR(c.info.pkey_fingerprint, fp);
    CHECK(strcmp(c.info.fingerprint, c.info.pkey_fingerprint) != 0);
    tls_info_received(&c.info, true, &rcv);
    CHECK(strstr(buf_cstr(&rcv), ")\n\t(Client CN \"alice\", Issuer \"moat test CA\" (verified OK))") != NULL);
    log_capture_start();
    tls_info_log(&c.info, "smtpd", true, "c.test[127.0.0.1]");
    char *log = log_capture_end();
    CHECK(strstr(log, "Trusted TLS connection established from c.test[127.0.0.1]: TLSv1.3") != NULL);
    free(log);
    /* another digest */
    tls_info_t i2;
    tls_info_get(c.srv, "sha1", &i2);
    tt_fingerprint(fx.alice.cert, "sha1", false, fp, sizeof fp);
    CHECK_STR(i2.fingerprint, fp);
    CHECK_INT(strlen(fp), 59);
    tls_info_get(c.srv, NULL, &i2);
    CHECK_STR(i2.fingerprint, "");
    CHECK(i2.peer_cert);
    conn_free(&c);
    SSL_CTX_free(cctx);

    /* a stranger's self-signed certificate: the handshake goes on, not verified */
    cctx = tt_client_ctx();
    REQUIRE(SSL_CTX_use_certificate(cctx, fx.stranger.cert) == 1 &&
            SSL_CTX_use_PrivateKey(cctx, fx.stranger.key) == 1);
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK(c.info.peer_cert);
    CHECK(!c.info.peer_verified);
    CHECK_STR(c.info.peer_cn, "mallory");
    CHECK_STR(c.info.issuer_cn, "mallory");
    CHECK(c.info.fingerprint[0] != 0);
    buf_reset(&rcv);
    tls_info_received(&c.info, true, &rcv);
    CHECK(strstr(buf_cstr(&rcv), "(Client CN \"mallory\", Issuer \"mallory\" (not verified))") != NULL);
    log_capture_start();
    tls_info_log(&c.info, "smtpd", true, "c.test[127.0.0.1]");
    log = log_capture_end();
    CHECK(strstr(log, "Untrusted TLS connection established from c.test[127.0.0.1]") != NULL);
    free(log);
    conn_free(&c);
    SSL_CTX_free(cctx);

    /* no certificate at all */
    cctx = tt_client_ctx();
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK(!c.info.peer_cert);
    buf_reset(&rcv);
    tls_info_received(&c.info, true, &rcv);
    CHECK(strstr(buf_cstr(&rcv), "\n\t(Client did not present a certificate)") != NULL);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);

    /* without ask_ccert the server asks nothing: a client certificate stays home */
    main_cf = rsa_main(NULL);
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    cctx = tt_client_ctx();
    SSL_CTX_use_certificate(cctx, fx.alice.cert);
    SSL_CTX_use_PrivateKey(cctx, fx.alice.key);
    conn_run(&c, t, cctx, NULL);
    REQUIRE(c.ok);
    CHECK(!c.info.peer_cert);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);

    buf_free(&err);
    buf_free(&rcv);
    buf_free(&m);
}

TEST(tls_server_require_client_certificate)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, m = BUF_INIT;
    buf_printf(&m, "smtpd_tls_security_level = encrypt\nsmtpd_tls_req_ccert = yes\nsmtpd_tls_CAfile = %s\n",
               fx.pki.ca_file);
    char *main_cf = rsa_main(buf_cstr(&m));
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    CHECK(tls_server_level(t) == TLS_LEV_ENCRYPT);
    SSL_CTX *cctx = tt_client_ctx();
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    CHECK(!c.ok);   /* no certificate: the handshake fails */
    conn_free(&c);
    SSL_CTX_use_certificate(cctx, fx.alice.cert);
    SSL_CTX_use_PrivateKey(cctx, fx.alice.key);
    conn_run(&c, t, cctx, NULL);
    CHECK(c.ok);
    CHECK(c.info.peer_verified);
    conn_free(&c);
    SSL_CTX_free(cctx);
    /* required means trusted (Postfix): a stranger's certificate fails */
    cctx = tt_client_ctx();
    SSL_CTX_use_certificate(cctx, fx.stranger.cert);
    SSL_CTX_use_PrivateKey(cctx, fx.stranger.key);
    conn_run(&c, t, cctx, NULL);
    CHECK(!c.ok);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);

    /* req_ccert at level may: Postfix's note, and only asked */
    buf_reset(&m);
    buf_printf(&m, "smtpd_tls_req_ccert = yes\nsmtpd_tls_CAfile = %s\n", fx.pki.ca_file);
    main_cf = rsa_main(buf_cstr(&m));
    log_capture_start();
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    char *log = log_capture_end();
    CHECK(strstr(log, "Can't require client certs unless TLS is required") != NULL);
    free(log);
    free(main_cf);
    cctx = tt_client_ctx();
    conn_run(&c, t, cctx, NULL);
    CHECK(c.ok);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);
    buf_free(&err);
    buf_free(&m);
}

/* --------------------------------------------------------- resumption */

static SSL_SESSION *first_session(tls_server_t *t, SSL_CTX *cctx, bool *resumed)
{
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    SSL_SESSION *s = c.ok ? SSL_get1_session(c.cli) : NULL;
    *resumed = c.info.resumed;
    conn_free(&c);
    return s;
}

TEST(tls_server_resumption)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT;
    char *main_cf = rsa_main(NULL);
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);

    /* TLS 1.3 with a ticket */
    SSL_CTX *cctx = tt_client_ctx();
    bool resumed = true;
    SSL_SESSION *sess = first_session(t, cctx, &resumed);
    REQUIRE(sess);
    CHECK(!resumed);
    CHECK(SSL_SESSION_is_resumable(sess));
    conn_t c;
    conn_run(&c, t, cctx, sess);
    CHECK(c.ok);
    CHECK(c.info.resumed);
    CHECK(SSL_session_reused(c.cli) == 1);
    buf_t rcv = BUF_INIT;
    tls_info_received(&c.info, false, &rcv);
    CHECK(strstr(buf_cstr(&rcv), "(using TLSv1.3 with cipher ") == buf_cstr(&rcv));
    buf_free(&rcv);
    conn_free(&c);

    /* across a reload: a new context from the same parameters still
     * opens the tickets (the keys are the process's) */
    tls_server_t *t2 = NULL;
    REQUIRE(server_from(main_cf, NULL, &t2, &err) == 0 && t2 != NULL);
    conn_run(&c, t2, cctx, sess);
    CHECK(c.ok);
    CHECK(c.info.resumed);
    conn_free(&c);
    tls_server_free(&t2);
    SSL_SESSION_free(sess);

    /* a session of another service is not resumed here */
    buf_t w = BUF_INIT;
    config_t *cfg = config_load_text(main_cf, NULL, &err, &w);
    REQUIRE(cfg);
    REQUIRE(tls_server_new(config_main(cfg), "submission", &t2, &err) == 0 && t2);
    sess = first_session(t2, cctx, &resumed);
    REQUIRE(sess);
    conn_run(&c, t, cctx, sess);
    CHECK(c.ok);
    CHECK(!c.info.resumed);
    conn_free(&c);
    SSL_SESSION_free(sess);
    tls_server_free(&t2);
    config_free(&cfg);
    buf_free(&w);

    /* TLS 1.2 without tickets: the server's session cache */
    SSL_CTX *c12 = tt_client_ctx();
    SSL_CTX_set_max_proto_version(c12, TLS1_2_VERSION);
    SSL_CTX_set_options(c12, SSL_OP_NO_TICKET);
    sess = first_session(t, c12, &resumed);
    REQUIRE(sess);
    CHECK(SSL_SESSION_get_ticket_lifetime_hint(sess) == 0);
    conn_run(&c, t, c12, sess);
    CHECK(c.ok);
    CHECK(c.info.resumed);
    CHECK_STR(c.info.protocol, "TLSv1.2");
    conn_free(&c);
    SSL_SESSION_free(sess);
    /* TLS 1.2 with a ticket */
    SSL_CTX_clear_options(c12, SSL_OP_NO_TICKET);
    sess = first_session(t, c12, &resumed);
    REQUIRE(sess);
    conn_run(&c, t, c12, sess);
    CHECK(c.ok);
    CHECK(c.info.resumed);
    conn_free(&c);
    SSL_SESSION_free(sess);
    SSL_CTX_free(c12);
    tls_server_free(&t);
    free(main_cf);

    /* timeout 0: no resumption at all */
    main_cf = rsa_main("smtpd_tls_session_cache_timeout = 0\n");
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    sess = first_session(t, cctx, &resumed);
    if (sess) {
        conn_run(&c, t, cctx, sess);
        CHECK(c.ok);
        CHECK(!c.info.resumed);
        conn_free(&c);
        SSL_SESSION_free(sess);
    }
    free(main_cf);
    tls_server_free(&t);
    SSL_CTX_free(cctx);
    buf_free(&err);
}

TEST(tls_server_client_cert_survives_resumption)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, m = BUF_INIT;
    buf_printf(&m, "smtpd_tls_ask_ccert = yes\nsmtpd_tls_CAfile = %s\n", fx.pki.ca_file);
    char *main_cf = rsa_main(buf_cstr(&m));
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    SSL_CTX *cctx = tt_client_ctx();
    SSL_CTX_use_certificate(cctx, fx.alice.cert);
    SSL_CTX_use_PrivateKey(cctx, fx.alice.key);
    bool resumed;
    SSL_SESSION *sess = first_session(t, cctx, &resumed);
    REQUIRE(sess);
    conn_t c;
    conn_run(&c, t, cctx, sess);
    CHECK(c.ok);
    CHECK(c.info.resumed);
    /* what permit_tls_clientcerts looks at is still there */
    CHECK(c.info.peer_cert);
    CHECK(c.info.peer_verified);
    CHECK_STR(c.info.peer_cn, "alice");
    char fp[200];
    tt_fingerprint(fx.alice.cert, "sha256", false, fp, sizeof fp);
    CHECK_STR(c.info.fingerprint, fp);
    conn_free(&c);
    SSL_SESSION_free(sess);
    SSL_CTX_free(cctx);
    tls_server_free(&t);
    buf_free(&err);
    buf_free(&m);
}

/* ------------------------------------------------------ logs, errors */

TEST(tls_server_loglevel2_states)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT;
    char *main_cf = rsa_main("smtpd_tls_loglevel = 2\n");
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    SSL_CTX *cctx = tt_client_ctx();
    log_capture_start();
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    char *log = log_capture_end();
    CHECK(c.ok);
    CHECK(strstr(log, "smtpd[") != NULL);
    CHECK(strstr(log, ": SSL_accept:before SSL initialization\n") != NULL);
    CHECK(strstr(log, ": SSL_accept:SSLv3/TLS write server hello\n") != NULL);
    free(log);
    conn_free(&c);

    /* at level 1 there are none */
    tls_server_free(&t);
    main_cf = rsa_main("smtpd_tls_loglevel = 1\n");
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    log_capture_start();
    conn_run(&c, t, cctx, NULL);
    log = log_capture_end();
    CHECK(strstr(log, "SSL_accept:") == NULL);
    free(log);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);
    buf_free(&err);
}

TEST(tls_errors_queue)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT, e = BUF_INIT;
    char *main_cf = rsa_main(NULL);
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    /* garbage instead of a ClientHello */
    SSL *srv = tls_server_ssl(t);
    REQUIRE(srv);
    BIO *in = BIO_new_mem_buf("EHLO client.test\r\n", -1), *out = BIO_new(BIO_s_mem());
    SSL_set_bio(srv, in, out);
    CHECK(SSL_do_handshake(srv) <= 0);
    tls_errors(&e);
    CHECK(strstr(buf_cstr(&e), "error:") == buf_cstr(&e));
    CHECK(strstr(buf_cstr(&e), "SSL routines") != NULL);
    CHECK(strchr(buf_cstr(&e), '\n') == NULL);
    buf_reset(&e);
    tls_errors(&e);   /* emptied */
    CHECK_STR(buf_cstr(&e), "");
    SSL_free(srv);
    tls_server_free(&t);
    buf_free(&err);
    buf_free(&e);
}

TEST(tls_server_wrapper_mode)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT;
    /* wrapper mode: mandatory protocols and ciphers, level reported as encrypt */
    char *main_cf = rsa_main("smtpd_tls_wrappermode = yes\nsmtpd_tls_mandatory_protocols = TLSv1.3\n"
                             "smtpd_tls_protocols = >=TLSv1.2\n");
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    CHECK(tls_server_wrapper(t));
    CHECK(tls_server_level(t) == TLS_LEV_ENCRYPT);
    SSL_CTX *cctx = tt_client_ctx();
    SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    CHECK(!c.ok);
    conn_free(&c);
    SSL_CTX_set_max_proto_version(cctx, 0);
    conn_run(&c, t, cctx, NULL);
    CHECK(c.ok);
    CHECK_STR(c.info.protocol, "TLSv1.3");
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);
    buf_free(&err);
}

TEST(tls_server_cipher_exclusions_apply)
{
    REQUIRE(fixture());
    buf_t err = BUF_INIT;
    /* TLS 1.2 with AES-256-GCM excluded picks another suite */
    char *main_cf = rsa_main("smtpd_tls_exclude_ciphers = AES256\n");
    tls_server_t *t = NULL;
    REQUIRE(server_from(main_cf, NULL, &t, &err) == 0 && t != NULL);
    free(main_cf);
    SSL_CTX *cctx = tt_client_ctx();
    SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
    conn_t c;
    conn_run(&c, t, cctx, NULL);
    CHECK(c.ok);
    CHECK(strstr(c.info.cipher, "AES256") == NULL);
    CHECK(c.info.cipher[0] != 0);
    conn_free(&c);
    SSL_CTX_free(cctx);
    tls_server_free(&t);
    /* exclusions that leave nothing are a configuration error */
    main_cf = rsa_main("smtpd_tls_exclude_ciphers = ALL\n");
    CHECK_INT(server_from(main_cf, NULL, &t, &err), -1);
    CHECK(strstr(buf_cstr(&err), "smtpd_tls_ciphers: no cipher matches") != NULL);
    free(main_cf);
    buf_free(&err);
}
