/* Unit tests for src/policy/access: access(5) lookup-key order. */
#include "harness.h"

#include "core/buf.h"
#include "policy/access.h"

static int collect(const char *key, void *arg)
{
    buf_t *b = arg;
    if (b->len)
        buf_putc(b, '|');
    buf_puts(b, key);
    return 0;
}

static int stop_at_domain(const char *key, void *arg)
{
    buf_t *b = arg;
    collect(key, b);
    return strcmp(key, "example.com") == 0 ? 7 : 0;
}

TEST(access_keys_ipv4_and_ipv6)
{
    buf_t b = BUF_INIT;
    access_keys_addr("192.0.2.10", collect, &b);
    CHECK_STR(buf_cstr(&b), "192.0.2.10|192.0.2|192.0|192");
    buf_reset(&b);
    access_keys_addr("2001:db8::1", collect, &b);
    CHECK_STR(buf_cstr(&b), "2001:db8::1|2001:db8:|2001:db8|2001");
    buf_free(&b);
}

TEST(access_keys_host_parent_styles)
{
    buf_t b = BUF_INIT;
    access_keys_host("mail.sub.example.com", true, collect, &b);
    CHECK_STR(buf_cstr(&b), "mail.sub.example.com|sub.example.com|example.com|com");
    buf_reset(&b);
    access_keys_host("mail.sub.example.com", false, collect, &b);
    CHECK_STR(buf_cstr(&b), "mail.sub.example.com|.sub.example.com|.example.com|.com");
    buf_free(&b);
}

TEST(access_keys_email_order)
{
    buf_t b = BUF_INIT;
    access_keys_email("user+foo@mail.example.com", "+", true, "<>", collect, &b);
    CHECK_STR(buf_cstr(&b), "user+foo@mail.example.com|user@mail.example.com|mail.example.com|"
                            "example.com|com|user+foo@|user@");
    buf_reset(&b);
    access_keys_email("user@example.com", "", true, "<>", collect, &b);
    CHECK_STR(buf_cstr(&b), "user@example.com|example.com|com|user@");
    buf_reset(&b);
    access_keys_email("", "", true, "<>", collect, &b);
    CHECK_STR(buf_cstr(&b), "<>");
    buf_reset(&b);
    access_keys_email("postmaster", "", true, "<>", collect, &b);
    CHECK_STR(buf_cstr(&b), "postmaster@");
    buf_reset(&b);
    /* A leading delimiter is not an extension. */
    access_keys_email("+x@d.example", "+", false, "<>", collect, &b);
    CHECK_STR(buf_cstr(&b), "+x@d.example|d.example|.example|+x@");
    buf_reset(&b);
    CHECK_INT(access_keys_email("a@x.example.com", "", true, "<>", stop_at_domain, &b), 7);
    CHECK_STR(buf_cstr(&b), "a@x.example.com|x.example.com|example.com");
    buf_free(&b);
}
