/*
 * Unit tests for src/queue/bounce.c: the notice for each kind, the size
 * limit switch, 8-bit content, boundary collisions, folding of long
 * fields and long original lines, header extraction, dates.
 *
 * bounce_samples_written also writes one notice of each kind to
 * bounce-samples/ next to the unit binary (build/asan/bounce-samples/),
 * which tests/proto/test_bounce_format.py parses with Python's email
 * package through tests/proto/bounce_check.py.
 */
#include "harness.h"

#include "core/buf.h"
#include "core/util.h"
#include "queue/bounce.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define T_ARRIVAL 1700000000000000LL   /* Tue, 14 Nov 2023 22:13:20 UTC */
#define T_ATTEMPT 1700000060000000LL
#define T_NOW 1700000120123456LL
#define T_UNTIL 1700432000000000LL

static const char CONTENT[] =
    "Received: from client.example.org (client.example.org [192.0.2.7])\n"
    "\tby mx.example.net (moat) with ESMTP id 00F0418A2B3C4D\n"
    "From: Alice <alice@example.org>\n"
    "To: bob@example.com\n"
    "Subject: lunch\n"
    "Message-Id: <lunch-1@example.org>\n"
    "\n"
    "Shall we meet at noon?\n"
    "-- \n"
    "Alice\n";

/* Run f with TZ set to tz (restored afterwards, so other tests see the
 * process's zone). */
static char *saved_tz;
static void tz_set(const char *tz)
{
    const char *old = getenv("TZ");
    saved_tz = old ? xstrdup(old) : NULL;
    setenv("TZ", tz, 1);
    tzset();
}
static void tz_restore(void)
{
    if (saved_tz)
        setenv("TZ", saved_tz, 1);
    else
        unsetenv("TZ");
    xfree(&saved_tz);
    tzset();
}

static bounce_info_t base_info(bounce_kind_t kind)
{
    bounce_info_t i = {
        .kind = kind,
        .myhostname = "mx.example.net",
        .queue_id = "00F0418A2B3C4D",
        .sender = "alice@example.org",
        .notify = "alice@example.org",
        .client_name = "client.example.org",
        .client_addr = "192.0.2.7",
        .arrival_usec = T_ARRIVAL,
        .now_usec = T_NOW,
        .retry_until_usec = kind == BOUNCE_DELAYED ? T_UNTIL : 0,
        .size_limit = 50000,
    };
    return i;
}

static bounce_rcpt_t rcpt_550(void)
{
    bounce_rcpt_t r = {
        .addr = "bob@example.com",
        .dsn = "5.1.1",
        .text = "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: "
                "User unknown (in reply to RCPT TO command)",
        .reply = "550 5.1.1 <bob@example.com>: User unknown",
        .remote_mta = "mx.example.com",
        .last_attempt_usec = T_ATTEMPT,
    };
    return r;
}

/* The longest line (bytes before its LF) in b. */
static size_t longest_line(const buf_t *b)
{
    size_t max = 0, cur = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] == '\n') {
            if (cur > max)
                max = cur;
            cur = 0;
        } else {
            cur++;
        }
    }
    return cur > max ? cur : max;
}

/* The boundary parameter of the notice's Content-Type (malloc'd). */
static char *boundary_of(const buf_t *b)
{
    const char *p = strstr(buf_cstr(b), "boundary=\"");
    if (!p)
        return NULL;
    p += 10;
    const char *q = strchr(p, '"');
    return q ? xstrndup(p, (size_t)(q - p)) : NULL;
}

/* Part k (0..2) of the notice: its header and body, without the line
 * break that belongs to the next delimiter.  NULL when the structure is
 * not three parts and a closing delimiter. */
static char *part_of(const buf_t *b, int k)
{
    char *bd = boundary_of(b);
    if (!bd)
        return NULL;
    buf_t delim = BUF_INIT;
    buf_printf(&delim, "\n--%s", bd);
    const char *s = buf_cstr(b), *starts[4];
    int found = 0;
    for (const char *p = s; found < 4 && (p = strstr(p, buf_cstr(&delim))) != NULL; p += delim.len)
        starts[found++] = p;
    char *res = NULL;
    if (found == 4 && strncmp(starts[3] + delim.len, "--\n", 3) == 0 &&
        starts[3][delim.len + 3] == '\0' && !strstr(starts[3] + delim.len, buf_cstr(&delim) + 1)) {
        const char *from = starts[k] + delim.len + 1;   /* past "\n--B\n" */
        res = xstrndup(from, (size_t)(starts[k + 1] - from));
    }
    buf_free(&delim);
    free(bd);
    return res;
}

/* Does the text hold this whole line? */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static bool all_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80 || ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t'))
            return false;
    return true;
}

/* The header of the notice (up to the first empty line). */
static char *header_of(const buf_t *b)
{
    const char *e = strstr(buf_cstr(b), "\n\n");
    return e ? xstrndup(buf_cstr(b), (size_t)(e - buf_cstr(b)) + 1) : NULL;
}

TEST(bounce_date_fixed_zones)
{
    buf_t d = BUF_INIT;
    tz_set("UTC0");
    bounce_date(0, &d);
    CHECK_STR(buf_cstr(&d), "Thu, 01 Jan 1970 00:00:00 +0000");
    buf_reset(&d);
    bounce_date(1700000000999999LL, &d);
    CHECK_STR(buf_cstr(&d), "Tue, 14 Nov 2023 22:13:20 +0000");
    buf_reset(&d);
    bounce_date(-1, &d);   /* floor, not truncation toward zero */
    CHECK_STR(buf_cstr(&d), "Wed, 31 Dec 1969 23:59:59 +0000");
    tz_restore();

    tz_set("IST-5:30");
    buf_reset(&d);
    bounce_date(1700000000000000LL, &d);
    CHECK_STR(buf_cstr(&d), "Wed, 15 Nov 2023 03:43:20 +0530");
    tz_restore();

    tz_set("EST5");
    buf_reset(&d);
    bounce_date(1700000000000000LL, &d);
    CHECK_STR(buf_cstr(&d), "Tue, 14 Nov 2023 17:13:20 -0500");
    buf_reset(&d);
    bounce_date(951782400000000LL, &d);   /* 2000-02-29 00:00 UTC */
    CHECK_STR(buf_cstr(&d), "Mon, 28 Feb 2000 19:00:00 -0500");
    tz_restore();
    buf_free(&d);
}

TEST(bounce_failed_notice)
{
    tz_set("UTC0");
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r = rcpt_550();
    buf_t out = BUF_INIT;
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    tz_restore();

    char *hdr = header_of(&out);
    REQUIRE(hdr);
    CHECK(has_line(hdr, "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)"));
    CHECK(has_line(hdr, "To: <alice@example.org>"));
    CHECK(has_line(hdr, "Subject: Undelivered Mail Returned to Sender"));
    CHECK(has_line(hdr, "Date: Tue, 14 Nov 2023 22:15:20 +0000"));
    CHECK(has_line(hdr, "Message-Id: <00F0418A2B3C4D.1700000120123456@mx.example.net>"));
    CHECK(has_line(hdr, "Auto-Submitted: auto-replied"));
    CHECK(has_line(hdr, "MIME-Version: 1.0"));
    CHECK(has_line(hdr, "Content-Type: multipart/report; report-type=delivery-status;"));
    CHECK(has_line(hdr, "\tboundary=\"moat-00F0418A2B3C4D.1700000120123456\""));
    CHECK(has_line(hdr, "Content-Transfer-Encoding: 8bit"));
    free(hdr);

    char *p1 = part_of(&out, 0), *p2 = part_of(&out, 1), *p3 = part_of(&out, 2);
    REQUIRE(p1 && p2 && p3);
    CHECK(strncmp(p1, "Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n",
                  78) == 0);
    CHECK(strstr(p1, "mx.example.net") != NULL);
    CHECK(strstr(p1, "postmaster") != NULL);
    /* The reason, wrapped at 78 with an indented continuation. */
    CHECK(has_line(p1, "<bob@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1"));
    CHECK(has_line(p1, "    <bob@example.com>: User unknown (in reply to RCPT TO command)"));
    CHECK(all_ascii(p1));

    CHECK(strncmp(p2, "Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n",
                  76) == 0);
    const char *want2 =
        "Reporting-MTA: dns; mx.example.net\n"
        "X-Moat-Queue-ID: 00F0418A2B3C4D\n"
        "X-Moat-Sender: rfc822; alice@example.org\n"
        "Received-From-MTA: dns; client.example.org ([192.0.2.7])\n"
        "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        "\n"
        "Final-Recipient: rfc822; bob@example.com\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Remote-MTA: dns; mx.example.com\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: User unknown\n"
        "Last-Attempt-Date: Tue, 14 Nov 2023 22:14:20 +0000\n";
    CHECK_STR(p2 + 76, want2);

    CHECK(strncmp(p3, "Content-Description: Undelivered Message\nContent-Type: message/rfc822\n"
                      "Content-Transfer-Encoding: 8bit\n\n", 103) == 0);
    CHECK_STR(p3 + 103, CONTENT);   /* the original, byte for byte */
    CHECK(strstr(buf_cstr(&out), "Original-Recipient") == NULL);
    CHECK(strstr(buf_cstr(&out), "Will-Retry-Until") == NULL);
    CHECK(longest_line(&out) <= 78);
    free(p1);
    free(p2);
    free(p3);
    buf_free(&out);
}

TEST(bounce_delayed_notice)
{
    tz_set("UTC0");
    bounce_info_t info = base_info(BOUNCE_DELAYED);
    bounce_rcpt_t r = {
        .addr = "carol@example.net",
        .dsn = "4.4.1",
        .text = "connect to mx.example.net[192.0.2.9]:25: Connection refused",
        .last_attempt_usec = T_ATTEMPT,
    };
    buf_t out = BUF_INIT;
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    tz_restore();

    CHECK(has_line(buf_cstr(&out), "Subject: Delayed Mail (still being retried)"));
    char *p1 = part_of(&out, 0), *p2 = part_of(&out, 1), *p3 = part_of(&out, 2);
    REQUIRE(p1 && p2 && p3);
    /* Still retried until the date: the explanation says so. */
    CHECK(strstr(p1, "warning") != NULL);
    CHECK(strstr(p1, "Sun, 19 Nov 2023") != NULL);
    CHECK(has_line(p1, "<carol@example.net>: connect to mx.example.net[192.0.2.9]:25: Connection"));
    CHECK(has_line(p1, "    refused"));
    CHECK(has_line(p2, "Action: delayed"));
    CHECK(has_line(p2, "Status: 4.4.1"));
    CHECK(has_line(p2, "Diagnostic-Code: X-Moat; connect to mx.example.net[192.0.2.9]:25: Connection refused"));
    CHECK(has_line(p2, "Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000"));
    CHECK(strstr(p2, "Remote-MTA") == NULL);
    /* A small message, but a warning carries its header only. */
    CHECK(has_line(p3, "Content-Description: Undelivered Message Headers"));
    CHECK(has_line(p3, "Content-Type: text/rfc822-headers"));
    CHECK(strstr(p3, "Subject: lunch\n") != NULL);
    CHECK(strstr(p3, "Shall we meet") == NULL);
    free(p1);
    free(p2);
    free(p3);
    buf_free(&out);
}

TEST(bounce_double_notice)
{
    bounce_info_t info = base_info(BOUNCE_DOUBLE);
    info.sender = "";
    info.notify = "postmaster";
    bounce_rcpt_t r = rcpt_550();
    buf_t out = BUF_INIT;
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    char *hdr = header_of(&out);
    REQUIRE(hdr);
    CHECK(has_line(hdr, "Subject: Postmaster Copy: Undelivered Mail"));
    CHECK(has_line(hdr, "To: <postmaster>"));
    free(hdr);
    char *p1 = part_of(&out, 0), *p2 = part_of(&out, 1), *p3 = part_of(&out, 2);
    REQUIRE(p1 && p2 && p3);
    CHECK(strstr(p1, "postmaster") != NULL);
    CHECK(has_line(p2, "X-Moat-Sender: rfc822;"));   /* the null sender, no trailing space */
    CHECK(has_line(p2, "Action: failed"));
    CHECK(has_line(p3, "Content-Type: message/rfc822"));
    free(p1);
    free(p2);
    free(p3);
    buf_free(&out);
}

TEST(bounce_size_limit_switch)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r = rcpt_550();
    buf_t out = BUF_INIT;
    size_t len = strlen(CONTENT);

    info.size_limit = len;   /* exactly at the limit: the whole message */
    bounce_build(&info, &r, 1, CONTENT, len, &out);
    char *p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(has_line(p3, "Content-Type: message/rfc822"));
    CHECK(strstr(p3, "Shall we meet at noon?\n") != NULL);
    free(p3);

    info.size_limit = len - 1;   /* one byte over: the header only */
    buf_reset(&out);
    bounce_build(&info, &r, 1, CONTENT, len, &out);
    p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(has_line(p3, "Content-Description: Undelivered Message Headers"));
    CHECK(has_line(p3, "Content-Type: text/rfc822-headers"));
    const char *body = strstr(p3, "\n\n");
    REQUIRE(body);
    /* The whole original header (its last line break included), nothing more. */
    char *want = xstrndup(CONTENT, (size_t)(strstr(CONTENT, "\n\n") - CONTENT) + 1);
    CHECK_STR(body + 2, want);
    free(want);
    CHECK(strstr(p3, "Shall we meet") == NULL);
    free(p3);

    /* A header larger than the limit is cut after the last whole line. */
    info.size_limit = 140;   /* the two Received: lines are 67 + 55 bytes, From: 32 */
    buf_reset(&out);
    bounce_build(&info, &r, 1, CONTENT, len, &out);
    p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(strstr(p3, "\tby mx.example.net (moat) with ESMTP id 00F0418A2B3C4D\n") != NULL);
    CHECK(strstr(p3, "From: Alice") == NULL);
    free(p3);
    buf_free(&out);
}

TEST(bounce_header_extraction_edges)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    info.size_limit = 10;
    bounce_rcpt_t r = rcpt_550();
    buf_t out = BUF_INIT;

    /* No empty line, no final LF: all of it is header. */
    const char *noblank = "Subject: a header only message\nX-Tag: yes";
    bounce_build(&info, &r, 1, noblank, strlen(noblank), &out);
    info.size_limit = 1000;
    char *p3 = part_of(&out, 2);
    REQUIRE(p3);
    /* size_limit 10 < content: headers only, and 10 bytes hold no line. */
    CHECK(has_line(p3, "Content-Type: text/rfc822-headers"));
    CHECK(strstr(p3, "Subject:") == NULL);
    free(p3);

    /* A header and an empty line, no body: a message of its own. */
    const char *nobody = "Subject: nothing to say\n\n";
    buf_reset(&out);
    bounce_build(&info, &r, 1, nobody, strlen(nobody), &out);
    p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(has_line(p3, "Content-Type: message/rfc822"));
    CHECK(strstr(p3, "\n\nSubject: nothing to say\n\n") != NULL);
    free(p3);

    /* Delay warning of a message without a blank line and without a final
     * LF: the unterminated last line is part of the header. */
    info.kind = BOUNCE_DELAYED;
    info.retry_until_usec = T_UNTIL;
    buf_reset(&out);
    bounce_build(&info, &r, 1, noblank, strlen(noblank), &out);
    p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(has_line(p3, "Content-Type: text/rfc822-headers"));
    CHECK(strstr(p3, "\n\nSubject: a header only message\nX-Tag: yes") != NULL);
    free(p3);

    /* A CR LF empty line also ends the header. */
    const char *crlf = "Subject: crlf\r\n\r\nbody\r\n";
    buf_reset(&out);
    bounce_build(&info, &r, 1, crlf, strlen(crlf), &out);
    p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(strstr(p3, "Subject: crlf\r\n") != NULL);
    CHECK(strstr(p3, "body") == NULL);
    free(p3);

    /* No content at all. */
    buf_reset(&out);
    info.kind = BOUNCE_FAILED;
    bounce_build(&info, &r, 1, NULL, 0, &out);
    p3 = part_of(&out, 2);
    REQUIRE(p3);
    CHECK(has_line(p3, "Content-Type: message/rfc822"));
    free(p3);
    buf_free(&out);
}

TEST(bounce_8bit_content_and_text)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r = rcpt_550();
    /* A server may answer anything: UTF-8, Latin-1, controls, line breaks. */
    r.reply = "550 5.1.1 Benutzer unbekannt: \xc3\xbc\xc3\xa4 \xe9t\xe9\r\n\x01 ok";
    r.text = "host mx said: 550 \xe2\x82\xac\tend";
    const char *content = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\n"
                          "X-Raw: gr\xc3\xbc\xc3\x9f\x65\n"
                          "\n"
                          "K\xc3\xa4se \xff\xfe binary-ish\n";
    buf_t out = BUF_INIT;
    bounce_build(&info, &r, 1, content, strlen(content), &out);
    char *p1 = part_of(&out, 0), *p2 = part_of(&out, 1), *p3 = part_of(&out, 2);
    REQUIRE(p1 && p2 && p3);
    CHECK(all_ascii(p1));
    CHECK(all_ascii(p2));
    /* One '?' per character, controls too; white space runs become one space. */
    CHECK(has_line(p2, "Diagnostic-Code: smtp; 550 5.1.1 Benutzer unbekannt: ?? ?t? ? ok"));
    CHECK(has_line(p1, "<bob@example.com>: host mx said: 550 ? end"));
    /* The original travels unchanged, 8-bit and all. */
    CHECK(has_line(p3, "Content-Transfer-Encoding: 8bit"));
    CHECK(strstr(p3, content) != NULL);
    CHECK(strstr(buf_cstr(&out), "\nContent-Transfer-Encoding: 8bit\n\nThis is") != NULL);
    free(p1);
    free(p2);
    free(p3);
    buf_free(&out);
}

TEST(bounce_boundary_collision)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r = rcpt_550();
    buf_t content = BUF_INIT, out = BUF_INIT;
    /* The content holds the first two candidates (not at a line start, so
     * only a substring check catches the second one). */
    buf_puts(&content, "Subject: tricky\n\n--moat-00F0418A2B3C4D.1700000120123456\n");
    buf_puts(&content, "see moat-00F0418A2B3C4D.1700000120123456/1 here\n");
    bounce_build(&info, &r, 1, content.data, content.len, &out);
    char *bd = boundary_of(&out);
    REQUIRE(bd);
    CHECK_STR(bd, "moat-00F0418A2B3C4D.1700000120123456/2");
    CHECK(strlen(bd) <= 70);
    char *p3 = part_of(&out, 2);   /* exactly three parts and a closing delimiter */
    REQUIRE(p3);
    CHECK(strstr(p3, content.data) != NULL);
    free(p3);
    free(bd);

    /* The explanation can collide too (a server's text is not ours). */
    r.text = "moat-00F0418A2B3C4D.1700000120123456 is a strange reply";
    buf_reset(&out);
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    bd = boundary_of(&out);
    REQUIRE(bd);
    CHECK_STR(bd, "moat-00F0418A2B3C4D.1700000120123456/1");
    free(bd);

    /* A queue ID with odd bytes still makes a valid boundary. */
    info.queue_id = "AB \"x\"/\xff";
    buf_reset(&out);
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    bd = boundary_of(&out);
    REQUIRE(bd);
    CHECK_STR(bd, "moat-AB__x___.1700000120123456");
    free(bd);
    buf_free(&content);
    buf_free(&out);
}

TEST(bounce_long_diagnostic_folding)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r = rcpt_550();
    buf_t reply = BUF_INIT, out = BUF_INIT;
    buf_puts(&reply, "550 5.7.1");
    for (int i = 0; i < 400; i++)
        buf_printf(&reply, " word%d", i);
    r.reply = reply.data;
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    CHECK(longest_line(&out) <= 998);
    char *p2 = part_of(&out, 1);
    REQUIRE(p2);
    /* Unfolding (removing each line break before white space) gives the field back. */
    const char *f = strstr(p2, "Diagnostic-Code: ");
    REQUIRE(f);
    buf_t unfolded = BUF_INIT;
    int breaks = 0;
    for (const char *p = f; *p && !(*p == '\n' && p[1] != ' ' && p[1] != '\t'); p++) {
        if (*p == '\n')
            breaks++;
        else
            buf_putc(&unfolded, *p);
    }
    CHECK(breaks >= 2);
    CHECK(strncmp(buf_cstr(&unfolded), "Diagnostic-Code: smtp; ", 23) == 0);
    CHECK_STR(buf_cstr(&unfolded) + 23, reply.data);
    free(p2);

    /* Without any space: hard split, still at most 998 per line. */
    buf_reset(&reply);
    buf_puts(&reply, "550-");
    for (int i = 0; i < 2500; i++)
        buf_putc(&reply, (char)('a' + i % 26));
    r.reply = reply.data;
    r.text = reply.data;
    buf_reset(&out);
    bounce_build(&info, &r, 1, CONTENT, strlen(CONTENT), &out);
    CHECK(longest_line(&out) <= 998);
    p2 = part_of(&out, 1);
    REQUIRE(p2);
    /* Folded at the one space, then cut: a line filled to 998 bytes, the
     * rest after an inserted space, nothing lost. */
    f = strstr(p2, "Diagnostic-Code: smtp;");
    REQUIRE(f);
    CHECK(strstr(f, "\n 550-abc") != NULL);
    const char *nl = strchr(strstr(f, "\n 550-abc") + 1, '\n');
    REQUIRE(nl);
    CHECK_INT(nl - strstr(f, "\n 550-abc") - 1, 998);
    CHECK(nl[1] == ' ' && nl[2] != ' ');
    buf_reset(&unfolded);
    for (const char *p = f + 22; *p && !(*p == '\n' && p[1] != ' '); p++)
        if (*p != '\n')
            buf_putc(&unfolded, *p);
    CHECK_INT(unfolded.len, reply.len + 3);   /* the folded space and two inserted ones */
    free(p2);
    buf_free(&unfolded);
    buf_free(&reply);
    buf_free(&out);
}

TEST(bounce_long_original_lines)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r = rcpt_550();
    buf_t content = BUF_INIT, out = BUF_INIT;
    /* A header field with spaces, one without, and a long body line. */
    buf_puts(&content, "X-Spaces:");
    for (int i = 0; i < 300; i++)
        buf_puts(&content, " token");
    buf_puts(&content, "\nX-Solid: ");
    for (int i = 0; i < 2100; i++)
        buf_putc(&content, 'z');
    buf_puts(&content, "\nSubject: long\n\n");
    for (int i = 0; i < 2500; i++)
        buf_putc(&content, (char)('0' + i % 10));
    buf_puts(&content, "\nend\n");
    info.size_limit = content.len;
    bounce_build(&info, &r, 1, content.data, content.len, &out);
    CHECK(longest_line(&out) <= 998);
    char *p3 = part_of(&out, 2);
    REQUIRE(p3);
    /* The header stays one block of fields: every added line starts with
     * white space, and the first empty line is still the original one. */
    const char *hdr = strstr(p3, "\n\nX-Spaces:");
    REQUIRE(hdr);
    hdr += 2;
    const char *body = strstr(hdr, "\n\n");
    REQUIRE(body);
    int fields = 0;
    for (const char *p = hdr; p <= body; p = strchr(p, '\n') + 1)
        if (*p != ' ' && *p != '\t')
            fields++;
    CHECK_INT(fields, 3);
    /* Folding at spaces loses nothing: unfolded, X-Spaces is unchanged. */
    buf_t unf = BUF_INIT;
    for (const char *p = hdr; p < body && !(p[0] == '\n' && p[1] == 'X' && p[2] == '-' && p[3] == 'S' && p[4] == 'o');
         p++)
        if (*p != '\n')
            buf_putc(&unf, *p);
    CHECK(strncmp(buf_cstr(&unf), content.data, unf.len) == 0);
    CHECK_INT(unf.len, strlen("X-Spaces:") + 300 * 6);
    buf_free(&unf);
    /* The body line is cut into pieces of 998. */
    CHECK(strstr(body, "\n\n0123456789") != NULL);
    CHECK(strstr(p3, "\nend\n") != NULL);
    free(p3);
    buf_free(&content);
    buf_free(&out);
}

TEST(bounce_original_and_utf8_recipients)
{
    tz_set("UTC0");
    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r[2] = {rcpt_550(), rcpt_550()};
    r[0].orig = "bob.alias@example.com";
    r[1].addr = "j\xc3\xb8rn+x=y@example.com";   /* "jørn+x=y" */
    r[1].orig = NULL;
    r[1].remote_mta = NULL;
    r[1].reply = NULL;
    r[1].dsn = "bogus";
    r[1].last_attempt_usec = 0;
    buf_t out = BUF_INIT;
    bounce_build(&info, r, 2, CONTENT, strlen(CONTENT), &out);
    tz_restore();
    char *p1 = part_of(&out, 0), *p2 = part_of(&out, 1);
    REQUIRE(p1 && p2);
    const char *want =
        "\n"
        "Final-Recipient: rfc822; bob@example.com\n"
        "Original-Recipient: rfc822; bob.alias@example.com\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Remote-MTA: dns; mx.example.com\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: User unknown\n"
        "Last-Attempt-Date: Tue, 14 Nov 2023 22:14:20 +0000\n"
        "\n"
        "Final-Recipient: utf-8; j\\x{F8}rn\\x{2B}x\\x{3D}y@example.com\n"
        "Action: failed\n"
        "Status: 5.0.0\n"
        "Diagnostic-Code: X-Moat; host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: "
        "User unknown (in reply to RCPT TO command)\n";
    CHECK(strstr(p2, want) != NULL);
    CHECK(strlen(strstr(p2, want)) == strlen(want));   /* and nothing after it */
    CHECK(strstr(p1, "<j\\x{F8}rn\\x{2B}x\\x{3D}y@example.com>: host") != NULL);
    CHECK(all_ascii(p2));

    /* Invalid UTF-8 and controls in an address stay 7-bit and on one line. */
    r[1].addr = "bad\xff\n\xc3@example.com";
    buf_reset(&out);
    bounce_build(&info, r, 2, CONTENT, strlen(CONTENT), &out);
    free(p2);
    p2 = part_of(&out, 1);
    REQUIRE(p2);
    CHECK(has_line(p2, "Final-Recipient: utf-8; bad\\x{FFFD}\\x{A}\\x{FFFD}@example.com"));
    free(p1);
    free(p2);
    buf_free(&out);
}

TEST(bounce_many_recipients_and_missing_fields)
{
    bounce_info_t info = base_info(BOUNCE_FAILED);
    info.client_name = NULL;
    info.client_addr = NULL;
    info.arrival_usec = 0;
    info.myhostname = NULL;
    bounce_rcpt_t r[50];
    char names[50][32];
    for (int i = 0; i < 50; i++) {
        snprintf(names[i], sizeof names[i], "user%d@example.com", i);
        r[i] = (bounce_rcpt_t){.addr = names[i], .dsn = "5.0.0"};
    }
    buf_t out = BUF_INIT;
    bounce_build(&info, r, 50, CONTENT, strlen(CONTENT), &out);
    char *p1 = part_of(&out, 0), *p2 = part_of(&out, 1);
    REQUIRE(p1 && p2);
    CHECK(has_line(buf_cstr(&out), "From: MAILER-DAEMON@localhost (Mail Delivery System)"));
    CHECK(strstr(p2, "Received-From-MTA") == NULL);
    CHECK(strstr(p2, "Arrival-Date") == NULL);
    CHECK(strstr(p2, "Diagnostic-Code") == NULL);
    CHECK(has_line(p1, "<user49@example.com>: no reason was recorded"));
    int blocks = 0;
    for (const char *p = p2; (p = strstr(p, "\nFinal-Recipient: ")) != NULL; p++)
        blocks++;
    CHECK_INT(blocks, 50);
    free(p1);
    free(p2);

    /* A reply that is only white space is no reply; a reason that is only
     * white space is no reason. */
    r[0].reply = " \r\n";
    r[0].text = "the queue file says so";
    r[1].reply = NULL;
    r[1].text = "\t";
    buf_reset(&out);
    bounce_build(&info, r, 2, CONTENT, strlen(CONTENT), &out);
    p1 = part_of(&out, 0);
    p2 = part_of(&out, 1);
    REQUIRE(p1 && p2);
    CHECK(has_line(p2, "Diagnostic-Code: X-Moat; the queue file says so"));
    CHECK(strstr(strstr(p2, "user1@"), "Diagnostic-Code") == NULL);
    CHECK(has_line(p1, "<user0@example.com>: the queue file says so"));
    CHECK(has_line(p1, "<user1@example.com>: no reason was recorded"));
    free(p1);
    free(p2);

    /* Only the client's address known. */
    info.client_addr = "2001:db8::1";
    buf_reset(&out);
    bounce_build(&info, r, 1, CONTENT, strlen(CONTENT), &out);
    CHECK(has_line(buf_cstr(&out), "Received-From-MTA: dns; [2001:db8::1]"));
    buf_free(&out);
}

/* --- samples for tests/proto/test_bounce_format.py ----------------------- */

static bool sample_dir(buf_t *dir)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    buf_puts(dir, dirname(exe));
    buf_puts(dir, "/bounce-samples");
    return mkdir(buf_cstr(dir), 0755) == 0 || errno == EEXIST;
}

static bool write_sample(const buf_t *dir, const char *name, const buf_t *msg)
{
    buf_t path = BUF_INIT, tmp = BUF_INIT;
    buf_printf(&path, "%s/%s", buf_cstr(dir), name);
    buf_printf(&tmp, "%s.tmp", buf_cstr(&path));
    int fd = open(buf_cstr(&tmp), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write(fd, msg->data, msg->len) == (ssize_t)msg->len;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    ok = ok && rename(buf_cstr(&tmp), buf_cstr(&path)) == 0;
    buf_free(&path);
    buf_free(&tmp);
    return ok;
}

TEST(bounce_samples_written)
{
    buf_t dir = BUF_INIT, out = BUF_INIT, big = BUF_INIT;
    REQUIRE(sample_dir(&dir));

    bounce_info_t info = base_info(BOUNCE_FAILED);
    bounce_rcpt_t r[2] = {rcpt_550(), rcpt_550()};
    r[0].orig = "bob.alias@example.com";
    r[1].addr = "j\xc3\xb8rn@example.com";
    r[1].dsn = "5.2.2";
    r[1].reply = "552 5.2.2 Mailbox full";
    r[1].text = "host mx.example.com[192.0.2.1] said: 552 5.2.2 Mailbox full (in reply to end of DATA command)";
    bounce_build(&info, r, 2, CONTENT, strlen(CONTENT), &out);
    CHECK(write_sample(&dir, "failed.eml", &out));

    info = base_info(BOUNCE_DELAYED);
    bounce_rcpt_t d = {
        .addr = "carol@example.net",
        .dsn = "4.4.1",
        .text = "connect to mx.example.net[192.0.2.9]:25: Connection refused",
        .last_attempt_usec = T_ATTEMPT,
    };
    buf_reset(&out);
    bounce_build(&info, &d, 1, CONTENT, strlen(CONTENT), &out);
    CHECK(write_sample(&dir, "delayed.eml", &out));

    info = base_info(BOUNCE_DOUBLE);
    info.sender = "";
    info.notify = "postmaster";
    buf_reset(&out);
    bounce_build(&info, r, 1, CONTENT, strlen(CONTENT), &out);
    CHECK(write_sample(&dir, "double.eml", &out));

    /* Over the size limit, with 8-bit content, an over-long header line,
     * a boundary collision and a long diagnostic. */
    info = base_info(BOUNCE_FAILED);
    info.size_limit = 3000;
    buf_puts(&big, "Subject: gro\xc3\x9f\nX-Long:");
    for (int i = 0; i < 250; i++)
        buf_puts(&big, " filler");
    buf_puts(&big, "\nX-Trap: --moat-00F0418A2B3C4D.1700000120123456\n\n");
    for (int i = 0; i < 200; i++)
        buf_puts(&big, "K\xc3\xa4se und Brot, line of the body.\n");
    buf_t reply = BUF_INIT;
    buf_puts(&reply, "554 5.7.1 Rejected:");
    for (int i = 0; i < 200; i++)
        buf_puts(&reply, " because");
    bounce_rcpt_t l = rcpt_550();
    l.dsn = "5.7.1";
    l.reply = reply.data;
    buf_reset(&out);
    bounce_build(&info, &l, 1, big.data, big.len, &out);
    CHECK(longest_line(&out) <= 998);
    CHECK(write_sample(&dir, "headers-only.eml", &out));

    buf_free(&reply);
    buf_free(&big);
    buf_free(&dir);
    buf_free(&out);
}
