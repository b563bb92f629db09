/* Unit tests for src/config: main.cf/master.cf syntax, expansion, types,
 * parameter classes, services, show and doc. */
#include "harness.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char master_one[] = "127.0.0.1:2525 inet n - n - - smtpd\n";

typedef struct ld {
    buf_t err, warn;
    config_t *cfg;
} ld_t;

static void ld_text(ld_t *l, const char *main_cf, const char *master_cf)
{
    buf_reset(&l->err);
    buf_reset(&l->warn);
    config_free(&l->cfg);
    l->cfg = config_load_text(main_cf, master_cf, &l->err, &l->warn);
}

static void ld_free(ld_t *l)
{
    config_free(&l->cfg);
    buf_free(&l->err);
    buf_free(&l->warn);
}

#define ERR_HAS(l, s) CHECK(strstr(buf_cstr(&(l)->err), (s)) != NULL)
#define WARN_HAS(l, s) CHECK(strstr(buf_cstr(&(l)->warn), (s)) != NULL)
#define MAINP(l) config_main((l)->cfg)

/* Loads main_cf (with a one-service master.cf), requires success. */
#define LOAD_OK(l, main_cf)                                                        \
    do {                                                                           \
        ld_text((l), (main_cf), master_one);                                       \
        if (!(l)->cfg)                                                             \
            fprintf(stderr, "unexpected load errors:\n%s", buf_cstr(&(l)->err));   \
        REQUIRE((l)->cfg != NULL);                                                 \
    } while (0)
#define LOAD_FAILS(l, main_cf)                     \
    do {                                           \
        ld_text((l), (main_cf), master_one);       \
        REQUIRE((l)->cfg == NULL);                 \
    } while (0)

/* --- a scratch configuration directory --- */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/moat-config-test.XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? xstrdup(d) : NULL;
}

static void put_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    if (!fp)
        return;
    fputs(text, fp);
    fclose(fp);
}

static void rm_dir(char **dir)
{
    char path[PATH_MAX];
    static const char *const names[] = {"main.cf", "master.cf"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        snprintf(path, sizeof path, "%s/%s", *dir, names[i]);
        unlink(path);
    }
    rmdir(*dir);
    xfree(dir);
}

/* --- registry and the embedded default --- */

TEST(config_registry_defaults_load_clean)
{
    ld_t l = {0};
    LOAD_OK(&l, "");
    /* No default refers to an undefined name, none fails its type. */
    CHECK_STR(buf_cstr(&l.warn), "");
    CHECK_STR(buf_cstr(&l.err), "");
    CHECK_INT(param_int(MAINP(&l), PARAM_smtpd_timeout), 300);
    CHECK_INT(param_int(MAINP(&l), PARAM_message_size_limit), 10240000);
    CHECK(param_bool(MAINP(&l), PARAM_smtputf8_enable));
    CHECK(!param_bool(MAINP(&l), PARAM_disable_vrfy_command));
    CHECK_STR(param_name(PARAM_smtpd_banner), "smtpd_banner");
    CHECK_STR(param_str(MAINP(&l), PARAM_mail_version), param_str(MAINP(&l), PARAM_mail_version));
    CHECK(!param_is_set(MAINP(&l), PARAM_smtpd_banner));
    CHECK_STR(config_ignored(l.cfg), "");
    ld_free(&l);
}

TEST(config_embedded_default_loads)
{
    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(NULL, &err, &warn);
    REQUIRE(cfg != NULL);
    CHECK_STR(buf_cstr(&err), "");
    CHECK_STR(buf_cstr(&warn), "");
    REQUIRE(config_nservices(cfg) == 1);
    const service_t *s = config_service(cfg, 0);
    CHECK_STR(s->host, "127.0.0.1");
    CHECK_STR(s->port, "2525");
    CHECK_INT(s->maxproc, 0);
    CHECK_STR(s->file, "<embedded>/master.cf");
    CHECK_INT(s->line, 1);
    const params_t *p = config_main(cfg);
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(want, sizeof want, "%s/var/queue", cwd);
    CHECK_STR(param_str(p, PARAM_queue_directory), want);
    snprintf(want, sizeof want, "%s/var/mail/", cwd);
    CHECK_STR(param_str(p, PARAM_mail_spool_directory), want);
    CHECK_STR(param_str(p, PARAM_maillog_file), "/dev/stderr");
    CHECK_STR(param_str(p, PARAM_config_directory), cwd);
    const char *const *items;
    size_t n = param_list(p, PARAM_mydestination, &items);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(items[0], param_str(p, PARAM_myhostname));
        CHECK_STR(items[1], "localhost");
        CHECK_STR(items[2], "example.test");
        CHECK(items[3] == NULL);
    }
    config_free(&cfg);
    CHECK(cfg == NULL);
    config_free(&cfg);   /* NULL is fine */
    buf_free(&err);
    buf_free(&warn);
}

/* --- main.cf syntax --- */

TEST(config_parse_basic_lines)
{
    ld_t l = {0};
    LOAD_OK(&l, "# a comment\n"
                "\n"
                "   # an indented comment\n"
                "smtpd_banner=tight ESMTP\n"
                "mail_name    =    spaced   \n"
                "recipient_delimiter =\n"
                "syslog_name = a # not a comment\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_banner), "tight ESMTP");
    CHECK_STR(param_str(MAINP(&l), PARAM_mail_name), "spaced");
    CHECK_STR(param_str(MAINP(&l), PARAM_recipient_delimiter), "");
    CHECK(param_is_set(MAINP(&l), PARAM_recipient_delimiter));
    CHECK_STR(param_str(MAINP(&l), PARAM_syslog_name), "a # not a comment");
    const char *file;
    int line;
    CHECK(param_origin(MAINP(&l), PARAM_mail_name, &file, &line));
    CHECK_STR(file, "<text>/main.cf");
    CHECK_INT(line, 5);
    CHECK(!param_origin(MAINP(&l), PARAM_myorigin, &file, &line));
    CHECK(file == NULL && line == 0);
    ld_free(&l);
}

TEST(config_parse_continuation)
{
    ld_t l = {0};
    LOAD_OK(&l, "mynetworks = 10.0.0.0/8,\n"
                "    192.168.0.0/16\n"
                "# a comment between continuation lines\n"
                "\t172.16.0.0/12\r\n"
                "mail_name = x\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_mynetworks), "10.0.0.0/8, 192.168.0.0/16 172.16.0.0/12");
    const char *const *it;
    REQUIRE(param_list(MAINP(&l), PARAM_mynetworks, &it) == 3);
    CHECK_STR(it[2], "172.16.0.0/12");
    CHECK_STR(param_str(MAINP(&l), PARAM_mail_name), "x");

    LOAD_FAILS(&l, "  mail_name = x\n   more\nsyslog_name = y\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: logical line must not start with white space\n");
    ld_free(&l);
}

TEST(config_parse_errors_name_file_line)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "mail_name = ok\n\nmyhostname mx.example.test\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:3: missing '=' after parameter name\n");
    LOAD_FAILS(&l, "= value\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: missing parameter name before '='\n");
    LOAD_FAILS(&l, "mail-name = x\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: bad parameter name \"mail-name\" (use letters, digits and _)\n");
    ld_free(&l);
}

TEST(config_parse_duplicate_last_wins)
{
    ld_t l = {0};
    LOAD_OK(&l, "mail_name = first\nsyslog_name = s\nmail_name = second\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_mail_name), "second");
    CHECK_STR(buf_cstr(&l.warn), "<text>/main.cf:3: warning: mail_name: overrides the setting at line 1\n");
    ld_free(&l);
}

/* --- expansion --- */

TEST(config_expand_every_form)
{
    ld_t l = {0};
    LOAD_OK(&l, "full = F\n"
                "empty =\n"
                "smtpd_banner = [$full] [${full}] [$(full)] [${full?yes}] [${empty?no}] "
                "[${full:no}] [${empty:yes}] [${full?{A}:{B}}] [${empty?{A}:{B}}] [${full?{ braced }}] "
                "[$$full] [$$] [${nosuch?x}] [${nosuch:unset}]\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_banner),
              "[F] [F] [F] [yes] [] [] [yes] [A] [B] [ braced ] [$full] [$] [] [unset]");
    /* Conditional text is itself expanded. */
    LOAD_OK(&l, "a = 1\nb = two\nmail_name = ${a?<$b>}${a?$(b)}\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_mail_name), "<two>two");
    ld_free(&l);
}

TEST(config_expand_recursive_user_names)
{
    ld_t l = {0};
    LOAD_OK(&l, "my_inner = 10.0.0.0/8\n"
                "mynetworks = $my_outer 127.0.0.0/8\n"
                "my_outer = $my_inner, 192.168.0.0/16\n"
                "myhostname = mx.example.test\n"
                "myorigin = $mydomain\n");
    const char *const *it;
    REQUIRE(param_list(MAINP(&l), PARAM_mynetworks, &it) == 3);
    CHECK_STR(it[0], "10.0.0.0/8");
    CHECK_STR(it[1], "192.168.0.0/16");
    CHECK_STR(it[2], "127.0.0.0/8");
    CHECK_STR(param_str(MAINP(&l), PARAM_myorigin), "example.test");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_banner), "mx.example.test ESMTP moat");
    /* Defaults that reference other parameters see the settings. */
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_forbid_bare_newline_exclusions), "10.0.0.0/8, 192.168.0.0/16 127.0.0.0/8");
    CHECK_STR(buf_cstr(&l.warn), "");
    ld_free(&l);
}

TEST(config_expand_loops_are_errors)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "my_a = $my_b\nmy_b = ${my_a}\nmail_name = $my_a\n");
    ERR_HAS(&l, "expansion loop: $my_a -> $my_b -> $my_a");
    ERR_HAS(&l, "<text>/main.cf:2: my_b: expansion loop");
    LOAD_FAILS(&l, "myorigin = x$myorigin\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: myorigin: expansion loop: $myorigin -> $myorigin\n");
    /* A loop inside a conditional is a loop too. */
    LOAD_FAILS(&l, "mail_name = ${mail_name?x}\n");
    ERR_HAS(&l, "mail_name: expansion loop");
    ld_free(&l);
}

TEST(config_expand_undefined_is_empty_with_warning)
{
    ld_t l = {0};
    LOAD_OK(&l, "smtpd_banner = x $nosuch y\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_banner), "x  y");
    CHECK_STR(buf_cstr(&l.warn), "<text>/main.cf:1: warning: smtpd_banner: $nosuch is not defined (it expands to nothing)\n");
    /* A registry name with an empty value is defined: no warning. */
    LOAD_OK(&l, "smtpd_banner = [$recipient_delimiter]\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_banner), "[]");
    CHECK_STR(buf_cstr(&l.warn), "");
    ld_free(&l);
}

TEST(config_expand_syntax_errors)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "smtpd_banner = costs $ 5\n");
    CHECK_STR(buf_cstr(&l.err),
              "<text>/main.cf:1: smtpd_banner: '$' must be followed by a parameter name (write $$ for a literal $)\n");
    LOAD_FAILS(&l, "smtpd_banner = ${myhostname\n");
    ERR_HAS(&l, "<text>/main.cf:1: smtpd_banner: missing '}'");
    LOAD_FAILS(&l, "smtpd_banner = $(myhostname\n");
    ERR_HAS(&l, "missing ')'");
    LOAD_FAILS(&l, "smtpd_banner = ${{$mail_name} == {moat}?yes}\n");
    ERR_HAS(&l, "relational expressions are not supported");
    LOAD_FAILS(&l, "smtpd_banner = ${}\n");
    ERR_HAS(&l, "missing parameter name");
    LOAD_FAILS(&l, "smtpd_banner = ${mail_name!x}\n");
    ERR_HAS(&l, "unexpected character after the parameter name");
    LOAD_FAILS(&l, "smtpd_banner = ${mail_name?{a} junk}\n");
    ERR_HAS(&l, "unexpected text after '}'");
    ld_free(&l);
}

TEST(config_expand_size_is_bounded)
{
    /* Each level quadruples: 4^12 bytes unless the limit stops it. */
    buf_t m = BUF_INIT;
    buf_puts(&m, "my_0 = xxxxxxxx\n");
    for (int i = 1; i <= 12; i++)
        buf_printf(&m, "my_%d = $my_%d$my_%d$my_%d$my_%d\n", i, i - 1, i - 1, i - 1, i - 1);
    buf_puts(&m, "mail_name = $my_12\n");
    ld_t l = {0};
    LOAD_FAILS(&l, buf_cstr(&m));
    ERR_HAS(&l, "too long after $name expansion");
    ld_free(&l);
    buf_free(&m);
}

TEST(config_many_errors_are_capped)
{
    buf_t m = BUF_INIT;
    for (int i = 0; i < 20000; i++)
        buf_printf(&m, "bad line %d\n", i);
    ld_t l = {0};
    LOAD_FAILS(&l, buf_cstr(&m));
    CHECK(l.err.len < 70 * 1024);
    ERR_HAS(&l, "<text>/main.cf:1: missing '=' after parameter name\n");
    ERR_HAS(&l, "too many messages; the rest are not shown");
    ld_free(&l);
    buf_free(&m);
}

/* --- types --- */

TEST(config_type_int)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "message_size_limit = 10M\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: bad integer value for message_size_limit: \"10M\"\n");
    LOAD_FAILS(&l, "\n\nmoat_io_threads = 65\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:3: moat_io_threads: 65 is above the maximum 64\n");
    LOAD_FAILS(&l, "moat_io_threads = 0\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: moat_io_threads: 0 is below the minimum 1\n");
    LOAD_FAILS(&l, "message_size_limit = -1\n");
    ERR_HAS(&l, "bad integer value");
    LOAD_FAILS(&l, "message_size_limit = 99999999999999999999999\n");
    ERR_HAS(&l, "bad integer value");
    LOAD_OK(&l, "my_size = 512\nmessage_size_limit = ${my_size}000\nmoat_io_threads = 64\n");
    CHECK_INT(param_int(MAINP(&l), PARAM_message_size_limit), 512000);
    CHECK_INT(param_int(MAINP(&l), PARAM_moat_io_threads), 64);
    ld_free(&l);
}

TEST(config_type_bool)
{
    ld_t l = {0};
    LOAD_OK(&l, "disable_vrfy_command = YES\nsmtputf8_enable = False\nsmtpd_helo_required = 1\n");
    CHECK(param_bool(MAINP(&l), PARAM_disable_vrfy_command));
    CHECK_INT(param_int(MAINP(&l), PARAM_disable_vrfy_command), 1);
    CHECK(!param_bool(MAINP(&l), PARAM_smtputf8_enable));
    CHECK(param_bool(MAINP(&l), PARAM_smtpd_helo_required));
    LOAD_FAILS(&l, "smtpd_helo_required = maybe\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: bad boolean value for smtpd_helo_required: \"maybe\" (use yes or no)\n");
    ld_free(&l);
}

TEST(config_type_time)
{
    ld_t l = {0};
    LOAD_OK(&l, "smtpd_timeout = 5m\nsmtpd_error_sleep_time = 7\nmoat_shutdown_timeout = 1w\n"
                "queue_run_delay = 2h\nsmtpd_upstream_proxy_timeout = 1d\n"
                "delay_warning_time = 4\nmaximal_queue_lifetime = 2\n");
    CHECK_INT(param_int(MAINP(&l), PARAM_smtpd_timeout), 300);
    CHECK_INT(param_int(MAINP(&l), PARAM_smtpd_error_sleep_time), 7);
    CHECK_INT(param_int(MAINP(&l), PARAM_moat_shutdown_timeout), 7 * 86400);
    CHECK_INT(param_int(MAINP(&l), PARAM_queue_run_delay), 7200);
    CHECK_INT(param_int(MAINP(&l), PARAM_smtpd_upstream_proxy_timeout), 86400);
    /* A bare number takes the unit of the default: 0h, 5d. */
    CHECK_INT(param_int(MAINP(&l), PARAM_delay_warning_time), 4 * 3600);
    CHECK_INT(param_int(MAINP(&l), PARAM_maximal_queue_lifetime), 2 * 86400);
    LOAD_FAILS(&l, "smtpd_timeout = 5x\n");
    ERR_HAS(&l, "<text>/main.cf:1: bad time value for smtpd_timeout: \"5x\"");
    LOAD_FAILS(&l, "smtpd_timeout = 1h30m\n");
    ERR_HAS(&l, "bad time value for smtpd_timeout");
    LOAD_FAILS(&l, "smtpd_timeout = 0\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: smtpd_timeout: 0 is below the minimum 1\n");
    ld_free(&l);
}

TEST(config_type_list_and_braces)
{
    ld_t l = {0};
    LOAD_OK(&l, "smtpd_discard_ehlo_keywords = a,b  c ,, d\t,e\n"
                "mynetworks = { 10.0.0.1 with spaces }, {x}, inline:{ a=b, c=d }, {a}{b}, {}\n");
    const char *const *it;
    REQUIRE(param_list(MAINP(&l), PARAM_smtpd_discard_ehlo_keywords, &it) == 5);
    CHECK_STR(it[0], "a");
    CHECK_STR(it[3], "d");
    CHECK_STR(it[4], "e");
    REQUIRE(param_list(MAINP(&l), PARAM_mynetworks, &it) == 5);
    CHECK_STR(it[0], "10.0.0.1 with spaces");
    CHECK_STR(it[1], "x");
    CHECK_STR(it[2], "inline:{ a=b, c=d }");
    CHECK_STR(it[3], "{a}{b}");
    CHECK_STR(it[4], "");
    /* Any value splits, not only lists. */
    REQUIRE(param_list(MAINP(&l), PARAM_smtpd_banner, &it) == 3);
    REQUIRE(param_list(MAINP(&l), PARAM_recipient_delimiter, &it) == 0);
    CHECK(it[0] == NULL);
    LOAD_FAILS(&l, "mynetworks = { 10.0.0.1\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:1: mynetworks: unbalanced '{' or '}' in \"{ 10.0.0.1\"\n");
    LOAD_FAILS(&l, "mynetworks = 10.0.0.1 }\n");
    ERR_HAS(&l, "unbalanced");
    ld_free(&l);
}

/* --- parameter classes --- */

TEST(config_pending_nondefault_is_error)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "mail_name = x\nsmtpd_milters = inet:127.0.0.1:8891\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:2: smtpd_milters: not supported by this version of moat\n");
    LOAD_FAILS(&l, "soft_bounce = yes\n");
    ERR_HAS(&l, "soft_bounce: not supported");
    LOAD_FAILS(&l, "canonical_maps = hash:/etc/moat/canonical\n");
    ERR_HAS(&l, "canonical_maps: not supported");
    LOAD_FAILS(&l, "sender_canonical_maps = regexp:/etc/moat/canonical\n");
    ERR_HAS(&l, "sender_canonical_maps: not supported");
    /* Equal to the default after typing: accepted. */
    LOAD_OK(&l, "smtpd_delay_reject = TRUE\n"
                "unverified_sender_reject_code = 450\n"
                "smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated, defer_unauth_destination\n"
                "smtpd_client_restrictions =\n"
                "anvil_rate_time_unit = 1m\n"
                "address_verify_map = btree:${data_directory}/verify_cache\n"
                "default_rbl_reply = $rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
                "$rbl_domain${rbl_reason?; $rbl_reason}\n");
    CHECK(param_is_set(MAINP(&l), PARAM_smtpd_delay_reject));
    /* PF_RAW: kept as written, and its template names are not "undefined". */
    CHECK(strstr(param_str(MAINP(&l), PARAM_default_rbl_reply), "$rbl_code") != NULL);
    CHECK_STR(buf_cstr(&l.warn), "");
    ld_free(&l);
}

TEST(config_ignored_are_listed)
{
    ld_t l = {0};
    LOAD_OK(&l, "biff = no\nalias_maps =\ncompatibility_level = 3.6\nmail_name = x\n");
    CHECK_STR(config_ignored(l.cfg), "alias_maps, biff, compatibility_level");
    CHECK_STR(buf_cstr(&l.warn), "");
    /* Still typed. */
    LOAD_FAILS(&l, "biff = sometimes\n");
    ERR_HAS(&l, "bad boolean value for biff");
    ld_free(&l);
}

TEST(config_unknown_names)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "mail_name = x\nsmtpd_frobnicate = yes\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/main.cf:2: unknown parameter smtpd_frobnicate (it looks like it affects "
                                "filtering; moat will not ignore it)\n");
    static const char *const filtering[] = {"x_restrictions", "my_checks", "sender_access", "my_rbl_sites",
                                            "x_reject_code", "alias_db_maps", "my_milter", "pre_filter",
                                            "greylist_delays", "use_spf", "dkim_keys"};
    for (size_t i = 0; i < ARRAY_LEN(filtering); i++) {
        char m[128];
        snprintf(m, sizeof m, "%s = 1\n", filtering[i]);
        LOAD_FAILS(&l, m);
        ERR_HAS(&l, "unknown parameter");
        ERR_HAS(&l, filtering[i]);
    }
    /* Referenced by $name somewhere: the user's own variable. */
    LOAD_OK(&l, "my_rbl_list = zen.dnsbl.test\nsmtpd_banner = ${my_rbl_list?x}\n");
    CHECK_STR(buf_cstr(&l.warn), "");
    /* Anything else unknown and unused: a warning like postconf's. */
    LOAD_OK(&l, "\nmy_note = hello world\n");
    CHECK_STR(buf_cstr(&l.warn), "<text>/main.cf:2: warning: unused parameter: my_note=hello world\n");
    ld_free(&l);
}

TEST(config_special_values)
{
    ld_t l = {0};
    LOAD_FAILS(&l, "mail_spool_directory = /var/mail\n");
    CHECK_STR(buf_cstr(&l.err),
              "<text>/main.cf:1: mail_spool_directory: moat delivers to Maildir only; end the path with /\n");
    LOAD_OK(&l, "smtpd_forbid_bare_newline = yes\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_forbid_bare_newline), "normalize");
    LOAD_OK(&l, "smtpd_forbid_bare_newline = Reject\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_forbid_bare_newline), "reject");
    LOAD_OK(&l, "smtpd_forbid_bare_newline = no\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_forbid_bare_newline), "no");
    LOAD_FAILS(&l, "smtpd_forbid_bare_newline = sometimes\n");
    ERR_HAS(&l, "smtpd_forbid_bare_newline: bad value \"sometimes\"");
    LOAD_OK(&l, "smtpd_upstream_proxy_protocol = HAProxy\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_smtpd_upstream_proxy_protocol), "haproxy");
    LOAD_FAILS(&l, "smtpd_upstream_proxy_protocol = nginx\n");
    ERR_HAS(&l, "smtpd_upstream_proxy_protocol: bad value \"nginx\"");
    LOAD_OK(&l, "inet_protocols = ipv4, ipv6\n");
    const char *const *it;
    REQUIRE(param_list(MAINP(&l), PARAM_inet_protocols, &it) == 2);
    CHECK_STR(it[1], "ipv6");
    LOAD_FAILS(&l, "inet_protocols = ipv4, ipv5\n");
    ERR_HAS(&l, "inet_protocols: unknown address family \"ipv5\"");
    LOAD_FAILS(&l, "inet_protocols =\n");
    ERR_HAS(&l, "inet_protocols: no address family given");
    LOAD_FAILS(&l, "queue_directory =\n");
    ERR_HAS(&l, "queue_directory: must not be empty");
    LOAD_OK(&l, "mail_version = 9.9\n");
    WARN_HAS(&l, "mail_version is read-only");
    CHECK(strcmp(param_str(MAINP(&l), PARAM_mail_version), "9.9") != 0);
    ld_free(&l);
}

TEST(config_computed_defaults)
{
    char h[256] = "";
    REQUIRE(gethostname(h, sizeof h - 1) == 0);
    buf_t want = BUF_INIT;
    buf_puts(&want, h);
    if (!strchr(h, '.'))
        buf_puts(&want, ".localdomain");
    ld_t l = {0};
    LOAD_OK(&l, "");
    CHECK_STR(param_str(MAINP(&l), PARAM_myhostname), buf_cstr(&want));
    const char *dot = strchr(buf_cstr(&want), '.');
    CHECK_STR(param_str(MAINP(&l), PARAM_mydomain), dot[1] ? dot + 1 : "localdomain");
    LOAD_OK(&l, "myhostname = mx.example.test\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_mydomain), "example.test");
    const char *const *it;
    REQUIRE(param_list(MAINP(&l), PARAM_mydestination, &it) == 3);
    CHECK_STR(it[0], "mx.example.test");
    CHECK_STR(it[1], "localhost.example.test");
    LOAD_OK(&l, "myhostname = gateway\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_mydomain), "localdomain");
    LOAD_OK(&l, "myhostname = mx.example.test\nmydomain = other.test\n");
    CHECK_STR(param_str(MAINP(&l), PARAM_mydomain), "other.test");
    ld_free(&l);
    buf_free(&want);
}

/* --- directories and paths --- */

TEST(config_directory_and_relative_paths)
{
    char *dir = tmpdir();
    REQUIRE(dir != NULL);
    put_file(dir, "main.cf", "config_directory = .\n"
                             "queue_directory = queue\n"
                             "data_directory = ./data\n"
                             "mail_spool_directory = ./\n"
                             "my_maps = hash:$config_directory/access\n"
                             "smtpd_banner = $my_maps\n");
    put_file(dir, "master.cf", "2525 inet n - n - 7 smtpd\n");
    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(dir, &err, &warn);
    if (!cfg)
        fprintf(stderr, "%s", buf_cstr(&err));
    REQUIRE(cfg != NULL);
    char real[PATH_MAX], want[PATH_MAX + 64];
    REQUIRE(realpath(dir, real) != NULL);
    const params_t *p = config_main(cfg);
    CHECK_STR(param_str(p, PARAM_config_directory), real);
    snprintf(want, sizeof want, "%s/queue", real);
    CHECK_STR(param_str(p, PARAM_queue_directory), want);
    snprintf(want, sizeof want, "%s/data", real);
    CHECK_STR(param_str(p, PARAM_data_directory), want);
    snprintf(want, sizeof want, "%s/", real);
    CHECK_STR(param_str(p, PARAM_mail_spool_directory), want);
    snprintf(want, sizeof want, "hash:%s/access", real);
    CHECK_STR(param_str(p, PARAM_smtpd_banner), want);
    REQUIRE(config_nservices(cfg) == 1);
    CHECK(config_service(cfg, 0)->host == NULL);
    CHECK_STR(config_service(cfg, 0)->port, "2525");
    CHECK_INT(config_service(cfg, 0)->maxproc, 7);
    CHECK(config_service(cfg, 1) == NULL);
    CHECK_STR(buf_cstr(&warn), "");
    config_free(&cfg);

    /* Errors name the directory as given. */
    put_file(dir, "main.cf", "mail_name = x\nmessage_size_limit = big\n");
    buf_reset(&err);
    cfg = config_load(dir, &err, NULL);
    CHECK(cfg == NULL);
    snprintf(want, sizeof want, "%s/main.cf:2: bad integer value for message_size_limit: \"big\"\n", dir);
    CHECK_STR(buf_cstr(&err), want);

    /* No master.cf: the Postfix default service, with a warning. */
    snprintf(want, sizeof want, "%s/master.cf", dir);
    unlink(want);
    put_file(dir, "main.cf", "mail_name = x\n");
    buf_reset(&err);
    buf_reset(&warn);
    cfg = config_load(dir, &err, &warn);
    REQUIRE(cfg != NULL);
    CHECK(strstr(buf_cstr(&warn), "master.cf: warning: not found; using the default service") != NULL);
    REQUIRE(config_nservices(cfg) == 1);
    CHECK_STR(config_service(cfg, 0)->name, "smtp");
    CHECK(config_service(cfg, 0)->host == NULL);
    CHECK_STR(config_service(cfg, 0)->port, "25");
    config_free(&cfg);

    /* No main.cf: an error. */
    snprintf(want, sizeof want, "%s/main.cf", dir);
    unlink(want);
    buf_reset(&err);
    cfg = config_load(dir, &err, NULL);
    CHECK(cfg == NULL);
    CHECK(strstr(buf_cstr(&err), "main.cf: cannot read: No such file or directory") != NULL);
    buf_reset(&err);
    CHECK(config_load("/nonexistent/moat-dir", &err, NULL) == NULL);
    CHECK(strstr(buf_cstr(&err), "/nonexistent/moat-dir: cannot use as configuration directory") != NULL);

    rm_dir(&dir);
    buf_free(&err);
    buf_free(&warn);
}

/* --- master.cf --- */

TEST(config_master_service_forms)
{
    ld_t l = {0};
    ld_text(&l, "",
            "# services\n"
            "smtp      inet  n       -       n       -       -       smtpd\n"
            "127.0.0.1:2525 inet n - n - 100 smtpd -v\n"
            "[::1]:10025 inet n - n - - smtpd\n"
            "submission inet n - y - - smtpd\n"
            "  -o syslog_name=moat/submission\n"
            "smtps inet n - y - - smtpd\n");
    if (!l.cfg)
        fprintf(stderr, "%s", buf_cstr(&l.err));
    REQUIRE(l.cfg != NULL);
    REQUIRE(config_nservices(l.cfg) == 5);
    const service_t *s = config_service(l.cfg, 0);
    CHECK_STR(s->name, "smtp");
    CHECK(s->host == NULL);
    CHECK_STR(s->port, "25");
    CHECK_INT(s->line, 2);
    s = config_service(l.cfg, 1);
    CHECK_STR(s->host, "127.0.0.1");
    CHECK_STR(s->port, "2525");
    CHECK_INT(s->maxproc, 100);
    s = config_service(l.cfg, 2);
    CHECK_STR(s->host, "::1");
    CHECK_STR(s->port, "10025");
    s = config_service(l.cfg, 3);
    CHECK_STR(s->port, "587");
    CHECK_STR(param_str(s->params, PARAM_syslog_name), "moat/submission");
    CHECK_STR(param_str(config_main(l.cfg), PARAM_syslog_name), "moat");
    CHECK_STR(config_service(l.cfg, 4)->port, "465");
    ld_free(&l);
}

TEST(config_master_same_port_twice_is_error)
{
    ld_t l = {0};
    ld_text(&l, "", "smtps inet n - n - - smtpd\nsubmissions inet n - n - - smtpd\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/master.cf:2: submissions: same address and port as the service at line 1");
    ld_text(&l, "", "2525 inet n - n - - smtpd\n2525 inet n - n - - smtpd\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/master.cf:2: duplicate service 2525/inet");
    ld_free(&l);
}

TEST(config_master_ignored_services)
{
    ld_t l = {0};
    ld_text(&l, "",
            "smtp      inet  n       -       y       -       1       postscreen\n"
            "smtpd     pass  -       -       y       -       -       smtpd\n"
            "127.0.0.1:10025 inet n - n - - smtpd\n"
            "pickup    unix  n       -       y       60      1       pickup\n"
            "cleanup   unix  n       -       y       -       0       cleanup\n"
            "maildrop  unix  -       n       n       -       -       pipe\n"
            "  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}\n"
            "qmgr      fifo  n       -       n       300?    1       qmgr\n");
    if (!l.cfg)
        fprintf(stderr, "%s", buf_cstr(&l.err));
    REQUIRE(l.cfg != NULL);
    CHECK_INT(config_nservices(l.cfg), 1);
    CHECK_STR(config_ignored_services(l.cfg), "smtp/inet (postscreen), smtpd/pass (smtpd), pickup/unix (pickup), "
                                              "cleanup/unix (cleanup), maildrop/unix (pipe), qmgr/fifo (qmgr)");
    CHECK_STR(buf_cstr(&l.warn), "<text>/master.cf: warning: services moat does not run (ignored): smtp/inet "
                                 "(postscreen), smtpd/pass (smtpd), pickup/unix (pickup), cleanup/unix (cleanup), "
                                 "maildrop/unix (pipe), qmgr/fifo (qmgr)\n");
    ld_free(&l);
}

TEST(config_master_errors)
{
    ld_t l = {0};
    ld_text(&l, "", "smtp inet n - n - - \n");
    CHECK_STR(buf_cstr(&l.err), "<text>/master.cf:1: missing fields (want: service type private unpriv chroot "
                                "wakeup maxproc command)\n<text>/master.cf: no smtpd inet service: moat would not "
                                "listen anywhere\n");
    ld_text(&l, "", "smtp tcp n - n - - smtpd\n");
    ERR_HAS(&l, "<text>/master.cf:1: unknown service type \"tcp\"");
    ld_text(&l, "", "smtp inet n x n - - smtpd\n");
    ERR_HAS(&l, "<text>/master.cf:1: bad unpriv field \"x\" (use y, n or -)");
    ld_text(&l, "", "smtp inet n - n - many smtpd\n");
    ERR_HAS(&l, "<text>/master.cf:1: bad maxproc field \"many\"");
    ld_text(&l, "", "smtp inet n - n soon - smtpd\n");
    ERR_HAS(&l, "<text>/master.cf:1: bad wakeup field \"soon\"");
    ld_text(&l, "", "nosuchport-xyz inet n - n - - smtpd\n");
    ERR_HAS(&l, "<text>/master.cf:1: nosuchport-xyz: unknown service port");
    ld_text(&l, "", "::1:25 inet n - n - - smtpd\n");
    ERR_HAS(&l, "write an IPv6 address in brackets");
    ld_text(&l, "", "127.0.0.1:70000 inet n - n - - smtpd\n");
    ERR_HAS(&l, "port out of range");
    ld_text(&l, "", "[::1 inet n - n - - smtpd\n");
    ERR_HAS(&l, "missing ']'");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o smtpd_banner=hello world\n");
    ERR_HAS(&l, "<text>/master.cf:1: unexpected argument \"world\"");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o smtpd_banner\n");
    ERR_HAS(&l, "<text>/master.cf:1: -o smtpd_banner: missing '='");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o\n");
    ERR_HAS(&l, "-o without name=value");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o { smtpd_banner = x\n");
    ERR_HAS(&l, "<text>/master.cf:1: unbalanced '{' or '}'");
    ld_text(&l, "", "pickup unix n - y 60 1 pickup\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/master.cf: no smtpd inet service: moat would not listen anywhere\n");
    ld_text(&l, "", "");
    ERR_HAS(&l, "no smtpd inet service");
    ld_text(&l, "", "  2525 inet n - n - - smtpd\n");
    ERR_HAS(&l, "<text>/master.cf:1: logical line must not start with white space");
    ld_free(&l);
}

TEST(config_master_overrides)
{
    ld_t l = {0};
    ld_text(&l,
            "my_host = main.example\n"
            "smtpd_banner = $my_host ESMTP\n"
            "mail_name = Main\n",
            "2525 inet n - n - - smtpd\n"
            "2526 inet n - n - - smtpd -o my_host=svc.example\n"
            "2527 inet n - n - - smtpd -o { smtpd_banner = $my_note and $mail_name } -o my_note=hello\n"
            "2528 inet n - n - - smtpd -o{mail_name=Braced} -v -o smtpd_timeout=10 -o smtpd_timeout=20\n");
    if (!l.cfg)
        fprintf(stderr, "%s", buf_cstr(&l.err));
    REQUIRE(l.cfg != NULL);
    REQUIRE(config_nservices(l.cfg) == 4);
    CHECK_STR(param_str(config_main(l.cfg), PARAM_smtpd_banner), "main.example ESMTP");
    CHECK(config_service(l.cfg, 0)->params == config_main(l.cfg));
    CHECK_STR(param_str(config_service(l.cfg, 0)->params, PARAM_smtpd_banner), "main.example ESMTP");
    /* A main.cf value that references an overridden name sees the override. */
    CHECK_STR(param_str(config_service(l.cfg, 1)->params, PARAM_smtpd_banner), "svc.example ESMTP");
    /* An override that references a name defined by another override. */
    CHECK_STR(param_str(config_service(l.cfg, 2)->params, PARAM_smtpd_banner), "hello and Main");
    const params_t *p4 = config_service(l.cfg, 3)->params;
    CHECK_STR(param_str(p4, PARAM_mail_name), "Braced");
    CHECK_INT(param_int(p4, PARAM_smtpd_timeout), 20);
    CHECK(param_is_set(p4, PARAM_smtpd_timeout));
    CHECK(!param_is_set(config_main(l.cfg), PARAM_smtpd_timeout));
    const char *file;
    int line;
    CHECK(param_origin(p4, PARAM_mail_name, &file, &line));
    CHECK_STR(file, "<text>/master.cf");
    CHECK_INT(line, 4);
    WARN_HAS(&l, "<text>/master.cf:4: warning: smtpd_timeout: overrides the setting at line 4");

    /* Overrides follow main.cf's rules, at master.cf:line. */
    ld_text(&l, "", "2525 inet n - n - - smtpd\n2526 inet n - n - - smtpd -o smtpd_timeout=soon\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/master.cf:2: bad time value for smtpd_timeout: \"soon\" (a number and an "
                                "optional unit: s, m, h, d or w)\n");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o soft_bounce=yes\n");
    CHECK_STR(buf_cstr(&l.err), "<text>/master.cf:1: soft_bounce: not supported by this version "
                                "of moat\n");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o smtpd_bogus=1\n");
    ERR_HAS(&l, "<text>/master.cf:1: unknown parameter smtpd_bogus");
    ld_text(&l, "", "2525 inet n - n - - smtpd -o my_thing=1\n");
    CHECK(l.cfg != NULL);
    WARN_HAS(&l, "<text>/master.cf:1: warning: unused parameter: my_thing=1");
    /* A pending default that refers to an overridden pending name. */
    ld_text(&l, "", "2525 inet n - n - - smtpd -o virtual_maps=hash:/etc/moat/v\n");
    ERR_HAS(&l, "virtual_maps: not supported");
    /* Ignored names set by -o are listed too. */
    ld_text(&l, "", "2525 inet n - n - - smtpd -o biff=no\n");
    CHECK_STR(config_ignored(l.cfg), "biff");
    ld_free(&l);
}

/* --- show and doc --- */

TEST(config_show_forms)
{
    ld_t l = {0};
    LOAD_OK(&l, "myhostname = mx.example.test\n"
                "smtpd_banner = $myhostname hi\n"
                "my_list = a b\n"
                "mynetworks = $my_list\n");
    buf_t out = BUF_INIT, err = BUF_INIT;
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_NONDEFAULT, NULL, 0, &out, &err), 0);
    CHECK_STR(buf_cstr(&out), "my_list = a b\n"
                              "myhostname = mx.example.test\n"
                              "mynetworks = $my_list\n"
                              "smtpd_banner = $myhostname hi\n");
    buf_reset(&out);
    config_show(l.cfg, CONFIG_SHOW_NONDEFAULT | CONFIG_SHOW_EXPAND, NULL, 0, &out, &err);
    CHECK_STR(buf_cstr(&out), "my_list = a b\n"
                              "myhostname = mx.example.test\n"
                              "mynetworks = a b\n"
                              "smtpd_banner = mx.example.test hi\n");
    buf_reset(&out);
    char *names[] = {"smtpd_banner", "nosuch", "recipient_delimiter", "my_list", "mydomain"};
    CHECK_INT(config_show(l.cfg, 0, names, 5, &out, &err), 1);
    CHECK_STR(buf_cstr(&out), "smtpd_banner = $myhostname hi\nrecipient_delimiter =\nmy_list = a b\n"
                              "mydomain = example.test\n");
    CHECK_STR(buf_cstr(&err), "moat: warning: nosuch: unknown parameter\n");
    buf_reset(&out);
    buf_reset(&err);
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_DEFAULTS, names, 1, &out, &err), 0);
    CHECK_STR(buf_cstr(&out), "smtpd_banner = $myhostname ESMTP $mail_name\n");
    buf_reset(&out);
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_DEFAULTS | CONFIG_SHOW_EXPAND, (char *[]){"myorigin"}, 1, &out, &err), 0);
    CHECK(strcmp(buf_cstr(&out), "myorigin = mx.example.test\n") != 0);   /* main.cf is not seen */
    /* -d: user-defined names do not exist. */
    buf_reset(&out);
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_DEFAULTS, (char *[]){"my_list"}, 1, &out, &err), 1);
    /* Everything: registry + user names, sorted. */
    buf_reset(&out);
    config_show(l.cfg, 0, NULL, 0, &out, &err);
    const char *all = buf_cstr(&out);
    CHECK(strstr(all, "\nmy_list = a b\nmydestination = $myhostname, localhost.$mydomain, localhost\n") != NULL);
    CHECK(strstr(all, "2bounce_notice_recipient = postmaster\naccess_map_defer_code = 450\n") == all);
    int lines = 0;
    for (const char *c = all; *c; c++)
        lines += *c == '\n';
    CHECK_INT(lines, PARAM__COUNT + 1);
    buf_reset(&out);
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_MASTER, NULL, 0, &out, &err), 0);
    CHECK_STR(buf_cstr(&out), "127.0.0.1:2525 inet  n       -       n       -       -       smtpd\n");
    buf_free(&out);
    buf_free(&err);
    ld_free(&l);
}

TEST(config_doc_covers_registry)
{
    buf_t out = BUF_INIT;
    config_doc(&out);
    const char *d = buf_cstr(&out);
    CHECK(strncmp(d, "# moat configuration reference\n", 31) == 0);
    CHECK(strstr(d, "## Accepted and ignored\n") != NULL);
    CHECK(strstr(d, "## Not supported yet\n") != NULL);
    for (int id = 0; id < PARAM__COUNT; id++) {
        char cellname[128];
        snprintf(cellname, sizeof cellname, "| `%s` |", param_name((param_id)id));
        CHECK(strstr(d, cellname) != NULL);
    }
    /* Deterministic: the committed docs/configuration.md is compared with it. */
    buf_t again = BUF_INIT;
    config_doc(&again);
    CHECK_STR(buf_cstr(&again), d);
    CHECK(strstr(d, "127.0.0.1:2525 inet n - n - - smtpd") != NULL);
    buf_free(&again);
    buf_free(&out);
}

/* --- delivery transports (master.cf unix services, built-ins, per-transport limits) --- */

TEST(config_transports_from_master)
{
    ld_t l = {0};
    ld_text(&l, "default_process_limit = 7\n",
            "127.0.0.1:2525 inet n - n - - smtpd\n"
            "relay     unix  -       -       n       -       2       smtp\n"
            "  -o smtp_helo_timeout=5 -o { smtp_helo_name = gw.example.test }\n"
            "scan      unix  -       -       n       -       -       lmtp\n"
            "retry     unix  -       -       n       -       0       error\n"
            "bounceit  unix  -       -       n       -       -       error\n"
            "mine      unix  -       -       n       -       -       retry\n"
            "pickup    unix  n       -       y       60      1       pickup\n"
            "virtual   unix  -       n       n       -       -       virtual\n");
    if (!l.cfg)
        fprintf(stderr, "%s", buf_cstr(&l.err));
    REQUIRE(l.cfg != NULL);
    /* the transport lines are no longer "services moat does not run" */
    CHECK_STR(config_ignored_services(l.cfg), "pickup/unix (pickup), virtual/unix (virtual)");
    const transport_t *t = config_transport(l.cfg, "relay");
    REQUIRE(t != NULL);
    CHECK_STR(t->name, "relay");
    CHECK_INT(t->kind, TK_SMTP);
    CHECK_INT(t->maxproc, 2);
    CHECK_STR(t->file, "<text>/master.cf");
    CHECK_INT(t->line, 2);
    /* -o overrides apply to this transport only */
    CHECK_INT(param_int(t->params, PARAM_smtp_helo_timeout), 5);
    CHECK_STR(param_str(t->params, PARAM_smtp_helo_name), "gw.example.test");
    CHECK_INT(param_int(MAINP(&l), PARAM_smtp_helo_timeout), 300);
    CHECK_INT(param_int(config_transport(l.cfg, "smtp")->params, PARAM_smtp_helo_timeout), 300);
    t = config_transport(l.cfg, "scan");
    REQUIRE(t != NULL);
    CHECK_INT(t->kind, TK_LMTP);
    CHECK_INT(t->maxproc, 7);            /* "-": default_process_limit */
    CHECK(t->params == MAINP(&l));       /* no -o: main.cf's set */
    /* Postfix's retry service runs error(8), which defers under that name */
    CHECK_INT(config_transport(l.cfg, "retry")->kind, TK_RETRY);
    CHECK(config_transport(l.cfg, "retry")->maxproc > 1000000);   /* maxproc 0: no limit */
    CHECK_INT(config_transport(l.cfg, "bounceit")->kind, TK_ERROR);
    CHECK_INT(config_transport(l.cfg, "mine")->kind, TK_RETRY);
    CHECK(config_transport(l.cfg, "pickup") == NULL);
    CHECK(config_transport(l.cfg, "virtual") == NULL);
    CHECK(config_transport(l.cfg, "nosuch") == NULL);
    /* built-ins for what master.cf does not declare */
    t = config_transport(l.cfg, "smtp");
    REQUIRE(t != NULL);
    CHECK_INT(t->kind, TK_SMTP);
    CHECK(t->file == NULL);
    CHECK_INT(t->maxproc, 7);
    CHECK_INT(config_transport(l.cfg, "lmtp")->kind, TK_LMTP);
    CHECK_INT(config_transport(l.cfg, "local")->kind, TK_LOCAL);
    CHECK_INT(config_transport(l.cfg, "discard")->kind, TK_DISCARD);
    CHECK_INT(config_transport(l.cfg, "error")->kind, TK_ERROR);
    ld_free(&l);
}

TEST(config_transports_builtin_only)
{
    /* the embedded default declares no unix service: every transport is built in */
    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(NULL, &err, &warn);
    REQUIRE(cfg != NULL);
    static const struct {
        const char *name;
        transport_kind kind;
    } want[] = {{"smtp", TK_SMTP}, {"relay", TK_SMTP}, {"lmtp", TK_LMTP}, {"local", TK_LOCAL},
                {"discard", TK_DISCARD}, {"error", TK_ERROR}, {"retry", TK_RETRY}};
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        const transport_t *t = config_transport(cfg, want[i].name);
        REQUIRE(t != NULL);
        CHECK_INT(t->kind, want[i].kind);
        CHECK_INT(t->maxproc, 100);
        CHECK(t->params == config_main(cfg));
    }
    CHECK_STR(config_ignored_services(cfg), "");
    config_free(&cfg);
    buf_free(&err);
    buf_free(&warn);
}

TEST(config_transport_limits)
{
    ld_t l = {0};
    ld_text(&l,
            "relay_destination_concurrency_limit = 2\n"
            "default_destination_recipient_limit = 40\n"
            "scan_destination_concurrency_limit = 3\n"
            "scan_initial_destination_concurrency = 1\n"
            "scan_destination_rate_delay = 2m\n"
            "scan_destination_concurrency_negative_feedback = 1/concurrency\n"
            "my_limit = 9\n"
            "dovecot_destination_recipient_limit = $my_limit\n",
            "2525 inet n - n - - smtpd\n"
            "scan unix - - n - 2 smtp -o scan_destination_recipient_limit=5\n"
            "dovecot unix - - n - - lmtp\n");
    if (!l.cfg)
        fprintf(stderr, "%s", buf_cstr(&l.err));
    REQUIRE(l.cfg != NULL);
    CHECK_STR(buf_cstr(&l.warn), "");
    const transport_t *relay = config_transport(l.cfg, "relay"), *scan = config_transport(l.cfg, "scan");
    const transport_t *smtp = config_transport(l.cfg, "smtp"), *local = config_transport(l.cfg, "local");
    const transport_t *dovecot = config_transport(l.cfg, "dovecot");
    const char *cc = "destination_concurrency_limit", *rl = "destination_recipient_limit";
    param_id dcc = PARAM_default_destination_concurrency_limit, drl = PARAM_default_destination_recipient_limit;
    /* registry names (their own defaults), user-defined names, fallbacks */
    CHECK_INT(transport_limit(relay, cc, dcc), 2);
    CHECK_INT(transport_limit(smtp, cc, dcc), 20);
    CHECK_INT(transport_limit(local, cc, dcc), 2);    /* local_destination_concurrency_limit's default */
    CHECK_INT(transport_limit(scan, cc, dcc), 3);
    CHECK_INT(transport_limit(scan, rl, drl), 5);     /* from its -o */
    CHECK_INT(transport_limit(relay, rl, drl), 40);
    CHECK_INT(transport_limit(dovecot, rl, drl), 9);  /* $name expanded */
    CHECK_INT(transport_limit(dovecot, cc, dcc), 20);
    CHECK_INT(transport_limit(scan, "destination_rate_delay", dcc), 120);
    /* The two the queue manager reads, computed once at load. */
    CHECK_INT(relay->concurrency_limit, 2);
    CHECK_INT(local->concurrency_limit, 2);
    CHECK_INT(scan->recipient_limit, 5);
    CHECK_INT(relay->recipient_limit, 40);
    /* accepted, and listed as not used by moat */
    CHECK_STR(config_ignored(l.cfg), "scan_destination_concurrency_negative_feedback, scan_destination_rate_delay, "
                                     "scan_initial_destination_concurrency");
    ld_free(&l);
}

TEST(config_transport_limit_errors)
{
    ld_t l = {0};
    ld_text(&l, "relay_destination_concurrency_limit = many\n", "2525 inet n - n - - smtpd\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/main.cf:1: bad integer value for relay_destination_concurrency_limit: \"many\"");
    ld_text(&l, "scan_destination_concurrency_limit = many\n",
            "2525 inet n - n - - smtpd\nscan unix - - n - - smtp\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/main.cf:1: bad integer value for scan_destination_concurrency_limit: \"many\"");
    ld_text(&l, "scan_destination_recipient_limit = 0\n", "2525 inet n - n - - smtpd\nscan unix - - n - - smtp\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/main.cf:1: scan_destination_recipient_limit: 0 is out of range (1 or more)");
    ld_text(&l, "", "2525 inet n - n - - smtpd\nscan unix - - n - - smtp -o scan_destination_rate_delay=soon\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/master.cf:2: bad time value for scan_destination_rate_delay: \"soon\"");
    ld_text(&l, "smtp_destination_concurrency_negative_feedback = lots\n", "2525 inet n - n - - smtpd\n");
    CHECK(l.cfg == NULL);
    ERR_HAS(&l, "<text>/main.cf:1: bad feedback value for smtp_destination_concurrency_negative_feedback");
    /* not a transport: an unknown name, as before (a warning) */
    ld_text(&l, "nosuch_destination_concurrency_limit = 3\n", "2525 inet n - n - - smtpd\n");
    REQUIRE(l.cfg != NULL);
    WARN_HAS(&l, "<text>/main.cf:1: warning: unused parameter: nosuch_destination_concurrency_limit=3");
    ld_free(&l);
}

TEST(config_show_master_transports)
{
    ld_t l = {0};
    ld_text(&l, "",
            "2525 inet n - n - - smtpd\n"
            "scan unix - - n - 2 smtp -o smtp_helo_timeout=5\n"
            "pickup unix n - y 60 1 pickup\n"
            "127.0.0.1:10026 inet n - n - - smtpd\n");
    REQUIRE(l.cfg != NULL);
    buf_t out = BUF_INIT, err = BUF_INIT;
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_MASTER, NULL, 0, &out, &err), 0);
    CHECK_STR(buf_cstr(&out), "2525       inet  n       -       n       -       -       smtpd\n"
                              "scan       unix  -       -       n       -       2       smtp -o smtp_helo_timeout=5\n"
                              "127.0.0.1:10026 inet  n       -       n       -       -       smtpd\n");
    /* a built-in shows when named, as the master.cf line it stands for */
    buf_reset(&out);
    CHECK_INT(config_show(l.cfg, CONFIG_SHOW_MASTER, (char *[]){"relay", "scan/unix", "scan/inet"}, 3, &out, &err), 1);
    CHECK_STR(buf_cstr(&out), "scan       unix  -       -       n       -       2       smtp -o smtp_helo_timeout=5\n"
                              "relay      unix  -       -       n       -       -       smtp\n");
    CHECK_STR(buf_cstr(&err), "moat: warning: scan/inet: unknown service\n");
    buf_free(&out);
    buf_free(&err);
    ld_free(&l);
}
