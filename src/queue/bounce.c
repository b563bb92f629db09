/*
 * bounce: the text of delivery status notifications (RFC 3464 inside an
 * RFC 6522 multipart/report).  See docs/bounces.md for what a notice
 * looks like and when the queue manager sends one.
 *
 * Owns: the notice's wording and layout, the boundary, the typing of
 * addresses in the delivery-status part, and the reshaping of the
 * original content (header extraction, splitting of over-long lines).
 * Pure: no I/O, no clock (the caller passes every time), no locale, no
 * logging, so the unit tests and the fuzzer call it directly.
 *
 * Never: emit a line over 998 bytes (RFC 5322 2.1.1), let a byte outside
 * printable ASCII into the explanation or the delivery-status part (a
 * remote server may answer anything; RFC 3464 fields are US-ASCII), or
 * pick a boundary that occurs anywhere in a part's body.
 */
#include "queue/bounce.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define LINE_LIMIT 998  /* bytes per line, without the line end */
#define WRAP_COLS 78    /* the explanation part is wrapped for humans */
#define WRAP_INDENT 4   /* continuation lines of a recipient's reason */

static const char *nz(const char *s)
{
    return s ? s : "";
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* --- sanitizing ---------------------------------------------------------- */

/* Printable ASCII only, for the explanation and delivery-status parts:
 * white space and line ends become one space (a multi-line reply was
 * joined by the client; a CR or LF here must never start a line of its
 * own), other controls and each non-ASCII character become '?' (one '?'
 * per UTF-8 sequence, not per byte), and the ends are trimmed. */
static void clean_text(const char *s, buf_t *out)
{
    const unsigned char *p = (const unsigned char *)nz(s);
    bool space = false, prev8 = false;
    size_t start = out->len;
    for (; *p; p++) {
        unsigned c = *p;
        if (c >= 0x80) {
            /* A continuation byte after a non-ASCII byte belongs to the
             * same character. */
            if (!(prev8 && c >= 0x80 && c <= 0xBF)) {
                if (space && out->len > start)
                    buf_putc(out, ' ');
                space = false;
                buf_putc(out, '?');
            }
            prev8 = true;
            continue;
        }
        prev8 = false;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            space = true;
            continue;
        }
        if (space && out->len > start)
            buf_putc(out, ' ');
        space = false;
        buf_putc(out, (c < 0x20 || c == 0x7f) ? '?' : (char)c);
    }
}

/* A host name or queue ID from the configuration or the queue file: no
 * white space, printable ASCII only. */
static void clean_token(const char *s, buf_t *out)
{
    for (const unsigned char *p = (const unsigned char *)nz(s); *p; p++)
        buf_putc(out, (*p > 0x20 && *p < 0x7f) ? (char)*p : '?');
}

/* One code point from a UTF-8 string; invalid input (overlong forms,
 * surrogates, truncated sequences, values past U+10FFFF) decodes to
 * U+FFFD and consumes one byte. */
static uint32_t utf8_next(const unsigned char **pp)
{
    const unsigned char *p = *pp;
    uint32_t c = p[0], min;
    int n;
    if (c < 0x80) {
        *pp = p + 1;
        return c;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1, c &= 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2, c &= 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3, c &= 0x07, min = 0x10000;
    } else {
        *pp = p + 1;
        return 0xFFFD;
    }
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xC0) != 0x80) {   /* also stops at the NUL */
            *pp = p + 1;
            return 0xFFFD;
        }
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        *pp = p + 1;
        return 0xFFFD;
    }
    *pp = p + n + 1;
    return c;
}

/* Can the address go out as it is (printable ASCII, spaces allowed for
 * quoted local parts)? */
static bool addr_is_plain(const char *a)
{
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* RFC 6533 utf-8-addr-xtext: printable ASCII except '\', '+' and '=' as
 * it is, everything else as \x{HEX} (uppercase, no leading zeros).  The
 * 7-bit form, so the delivery-status part stays ASCII. */
static void addr_xtext(const char *a, buf_t *out)
{
    const unsigned char *p = (const unsigned char *)a;
    while (*p) {
        uint32_t c = utf8_next(&p);
        if (c > 0x20 && c < 0x7f && c != '\\' && c != '+' && c != '=')
            buf_putc(out, (char)c);
        else
            buf_printf(out, "\\x{%X}", (unsigned)c);
    }
}

/* "rfc822; ADDR", or "utf-8; XTEXT" for an address that is not plain
 * ASCII (RFC 6533 section 3); "rfc822;" for the null sender. */
static void typed_addr(const char *a, buf_t *out)
{
    a = nz(a);
    if (!*a) {
        buf_puts(out, "rfc822;");
    } else if (addr_is_plain(a)) {
        buf_puts(out, "rfc822; ");
        buf_puts(out, a);
    } else {
        buf_puts(out, "utf-8; ");
        addr_xtext(a, out);
    }
}

/* An address as the explanation shows it: as it is when plain, else in
 * the same xtext form as the delivery-status part (the part is
 * us-ascii, and the form is lossless). */
static void shown_addr(const char *a, buf_t *out)
{
    a = nz(a);
    if (addr_is_plain(a))
        buf_puts(out, a);
    else
        addr_xtext(a, out);
}

/* "5.1.1" shape (RFC 3463: class 2, 4 or 5; two numbers of 1-3 digits)? */
static bool dsn_valid(const char *d)
{
    if (!d || (d[0] != '2' && d[0] != '4' && d[0] != '5') || d[1] != '.')
        return false;
    d += 2;
    for (int part = 0; part < 2; part++) {
        int n = 0;
        while (*d >= '0' && *d <= '9' && n < 4)
            d++, n++;
        if (n < 1 || n > 3)
            return false;
        if (part == 0 && *d++ != '.')
            return false;
    }
    return *d == '\0';
}

/* --- line shaping ---------------------------------------------------------- */

/* s[0..n), which starts at column col of a header field's line, folded
 * at white space so no line exceeds LINE_LIMIT (RFC 5322 folding: the line
 * break goes before the blank, which starts the continuation line); a run
 * without white space that cannot fit is cut, and the continuation starts
 * with an inserted space so the pieces stay one field.  No final LF. */
static void put_folded(buf_t *out, const char *s, size_t n, size_t col)
{
    while (n > LINE_LIMIT - col) {
        size_t room = LINE_LIMIT - col, j = room;
        while (j >= 1 && !is_wsp(s[j]))
            j--;
        if (j >= 1) {
            buf_append(out, s, j);
            buf_putc(out, '\n');
            col = 0;
        } else {
            j = room;
            buf_append(out, s, j);
            buf_puts(out, "\n ");
            col = 1;
        }
        s += j;
        n -= j;
    }
    buf_append(out, s, n);
}

/* "Name: value" (value already on one line), folded. */
static void put_field(buf_t *out, const char *name, const char *value)
{
    size_t len = strlen(value);
    buf_puts(out, name);
    buf_putc(out, ':');
    if (len)
        buf_putc(out, ' ');
    put_folded(out, value, len, strlen(name) + (len ? 2 : 1));
    buf_putc(out, '\n');
}

static void put_spaces(buf_t *out, size_t n)
{
    while (n--)
        buf_putc(out, ' ');
}

/* Word-wrap text (clean_text output: single spaces) at WRAP_COLS,
 * continuation lines indented by indent.  A word that does not fit any
 * line is cut at LINE_LIMIT. */
static void put_wrapped(buf_t *out, const char *text, size_t indent)
{
    size_t col = 0;
    bool have_word = false;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t wl = strcspn(p, " ");
        const char *w = p;
        p += wl;
        if (have_word) {
            if (col + 1 + wl <= WRAP_COLS) {
                buf_putc(out, ' ');
                buf_append(out, w, wl);
                col += 1 + wl;
                continue;
            }
            buf_putc(out, '\n');
            put_spaces(out, indent);
            col = indent;
        }
        while (col + wl > LINE_LIMIT) {
            size_t chunk = LINE_LIMIT - col;
            buf_append(out, w, chunk);
            buf_putc(out, '\n');
            put_spaces(out, indent);
            col = indent;
            w += chunk;
            wl -= chunk;
        }
        buf_append(out, w, wl);
        col += wl;
        have_word = true;
    }
    buf_putc(out, '\n');
}

/* A paragraph of the explanation from a printf format. */
static void put_para(buf_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put_para(buf_t *out, const char *fmt, ...)
{
    buf_t raw = BUF_INIT, clean = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&raw, fmt, ap);
    va_end(ap);
    clean_text(buf_cstr(&raw), &clean);
    put_wrapped(out, buf_cstr(&clean), 0);
    buf_putc(out, '\n');
    buf_free(&raw);
    buf_free(&clean);
}

/* One header line of the original message (without its LF), folded when
 * it is too long.  last: the content's final line had no LF (the closing
 * boundary's line break ends it). */
static void put_orig_header_line(buf_t *out, const char *line, size_t n, bool last)
{
    put_folded(out, line, n, 0);
    if (!last)
        buf_putc(out, '\n');
}

/* A body line of the original: cut into LINE_LIMIT pieces.  The body has
 * no folding, so the cut is a plain line break (as an MTA that enforces
 * the limit on the way out would do). */
static void put_orig_body_line(buf_t *out, const char *line, size_t n, bool last)
{
    while (n > LINE_LIMIT) {
        buf_append(out, line, LINE_LIMIT);
        buf_putc(out, '\n');
        line += LINE_LIMIT;
        n -= LINE_LIMIT;
    }
    buf_append(out, line, n);
    if (!last)
        buf_putc(out, '\n');
}

/* The original content for part 3: all of it, or its header only (up to
 * the first empty line, or all of it when there is none), cut after the
 * last whole line that fits in limit bytes. */
static void put_original(buf_t *out, const char *content, size_t len, bool headers_only, size_t limit)
{
    size_t pos = 0;
    bool in_header = true;
    while (pos < len) {
        const char *line = content + pos;
        const char *eol = memchr(line, '\n', len - pos);
        size_t n = eol ? (size_t)(eol - line) : len - pos;
        size_t next = pos + n + (eol ? 1 : 0);
        bool last = eol == NULL;
        if (in_header && (n == 0 || (n == 1 && line[0] == '\r'))) {
            if (headers_only)
                break;
            in_header = false;
            buf_append(out, line, n);
            if (!last)
                buf_putc(out, '\n');
        } else if (headers_only) {
            if (next > limit)
                break;
            put_orig_header_line(out, line, n, last);
        } else if (in_header) {
            put_orig_header_line(out, line, n, last);
        } else {
            put_orig_body_line(out, line, n, last);
        }
        pos = next;
    }
}

/* --- dates ------------------------------------------------------------- */

void bounce_date(long long usec, buf_t *out)
{
    /* Our own names, not strftime's %a/%b: those follow LC_TIME, and RFC
     * 5322 wants English whatever the process locale is. */
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    long long sec = usec / 1000000;
    if (usec < 0 && usec % 1000000)
        sec--;
    time_t t = (time_t)sec;
    struct tm tm;
    if ((long long)t != sec || !localtime_r(&t, &tm) || tm.tm_wday < 0 || tm.tm_wday > 6 ||
        tm.tm_mon < 0 || tm.tm_mon > 11) {
        t = 0;   /* a time the C library cannot represent: the epoch, in UTC */
        gmtime_r(&t, &tm);
        tm.tm_gmtoff = 0;
    }
    long off = tm.tm_gmtoff;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    buf_printf(out, "%s, %02d %s %04lld %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday], tm.tm_mday,
               months[tm.tm_mon], (long long)tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign,
               off / 3600, (off % 3600) / 60);
}

/* --- the parts ------------------------------------------------------------ */

static void put_explanation(const bounce_info_t *info, const bounce_rcpt_t *rcpts, size_t n,
                            const char *host, buf_t *out)
{
    put_para(out, "This is a delivery report from the mail system at %s.", host);
    switch (info->kind) {
    case BOUNCE_DELAYED: {
        buf_t until = BUF_INIT;
        if (info->retry_until_usec > 0)
            bounce_date(info->retry_until_usec, &until);
        put_para(out, "This is only a warning. You do not need to send your message again.");
        put_para(out, "Your message has not reached the recipients listed below yet. The mail "
                      "system keeps trying %s%s. If it still cannot deliver the message by then, "
                      "it returns the message to you with another report.",
                 until.len ? "until " : "for a while", buf_cstr(&until));
        put_para(out, "If you have questions, write to the postmaster of this mail system and "
                      "include this report.");
        buf_free(&until);
        break;
    }
    case BOUNCE_DOUBLE:
        put_para(out, "A message with an empty envelope sender (usually a delivery report "
                      "itself) could not be delivered to the recipients listed below. It has no "
                      "sender to return it to, so this copy goes to the postmaster. The "
                      "message, or its header, is attached.");
        break;
    case BOUNCE_FAILED:
    default:
        put_para(out, "Your message could not be delivered to the recipients listed below, and "
                      "the mail system has stopped trying. The reason for each one follows; the "
                      "message, or its header when it is large, is attached.");
        put_para(out, "If you need help, write to the postmaster of this mail system and "
                      "include this report. You may delete your own text from the attached "
                      "message first.");
        break;
    }

    buf_t line = BUF_INIT, clean = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        const char *why = rcpts[i].text && *rcpts[i].text ? rcpts[i].text : rcpts[i].reply;
        buf_reset(&line);
        buf_reset(&clean);
        buf_putc(&line, '<');
        shown_addr(rcpts[i].addr, &line);
        buf_puts(&line, ">: ");
        clean_text(why, &clean);
        if (clean.len == 0)
            buf_puts(&clean, "no reason was recorded");
        buf_append(&line, clean.data, clean.len);
        if (i > 0)
            buf_putc(out, '\n');
        put_wrapped(out, buf_cstr(&line), WRAP_INDENT);
    }
    buf_free(&line);
    buf_free(&clean);
}

static void put_typed_field(buf_t *out, const char *name, const char *addr)
{
    buf_t v = BUF_INIT;
    typed_addr(addr, &v);
    put_field(out, name, buf_cstr(&v));
    buf_free(&v);
}

static void put_date_field(buf_t *out, const char *name, long long usec)
{
    buf_t v = BUF_INIT;
    bounce_date(usec, &v);
    put_field(out, name, buf_cstr(&v));
    buf_free(&v);
}

static void put_status(const bounce_info_t *info, const bounce_rcpt_t *rcpts, size_t n, const char *host,
                       buf_t *out)
{
    buf_t v = BUF_INIT;

    /* Per-message fields. */
    buf_printf(&v, "dns; %s", host);
    put_field(out, "Reporting-MTA", buf_cstr(&v));
    buf_reset(&v);
    clean_token(info->queue_id, &v);
    put_field(out, "X-Moat-Queue-ID", buf_cstr(&v));
    put_typed_field(out, "X-Moat-Sender", info->sender);
    const char *cname = nz(info->client_name), *caddr = nz(info->client_addr);
    if (*cname || *caddr) {
        buf_reset(&v);
        buf_puts(&v, "dns; ");
        if (*cname)
            clean_token(cname, &v);
        if (*cname && *caddr)
            buf_putc(&v, ' ');
        if (*caddr) {
            buf_puts(&v, *cname ? "([" : "[");
            clean_token(caddr, &v);
            buf_puts(&v, *cname ? "])" : "]");
        }
        put_field(out, "Received-From-MTA", buf_cstr(&v));
    }
    if (info->arrival_usec > 0)
        put_date_field(out, "Arrival-Date", info->arrival_usec);

    /* One block per recipient. */
    bool delayed = info->kind == BOUNCE_DELAYED;
    for (size_t i = 0; i < n; i++) {
        const bounce_rcpt_t *r = &rcpts[i];
        buf_putc(out, '\n');
        put_typed_field(out, "Final-Recipient", r->addr);
        if (r->orig && *r->orig)
            put_typed_field(out, "Original-Recipient", r->orig);
        put_field(out, "Action", delayed ? "delayed" : "failed");
        put_field(out, "Status", dsn_valid(r->dsn) ? r->dsn : delayed ? "4.0.0" : "5.0.0");
        if (r->remote_mta && *r->remote_mta) {
            buf_reset(&v);
            buf_puts(&v, "dns; ");
            clean_token(r->remote_mta, &v);
            put_field(out, "Remote-MTA", buf_cstr(&v));
        }
        /* The server's reply when there was one (and it says anything
         * once cleaned), else our own text. */
        buf_reset(&v);
        buf_puts(&v, "smtp; ");
        clean_text(r->reply, &v);
        if (v.len == 6) {
            buf_reset(&v);
            buf_puts(&v, "X-Moat; ");
            clean_text(r->text, &v);
            if (v.len == 8)
                buf_reset(&v);
        }
        if (v.len)
            put_field(out, "Diagnostic-Code", buf_cstr(&v));
        if (r->last_attempt_usec > 0)
            put_date_field(out, "Last-Attempt-Date", r->last_attempt_usec);
        if (delayed && info->retry_until_usec > 0)
            put_date_field(out, "Will-Retry-Until", info->retry_until_usec);
    }
    buf_free(&v);
}

static bool contains(const buf_t *b, const buf_t *needle)
{
    return b->len >= needle->len && memmem(b->data ? b->data : "", b->len, needle->data, needle->len) != NULL;
}

/* A boundary from the queue ID and the time (unique enough by itself),
 * changed with a counter until no part's body contains it anywhere, not
 * just at a line start: that check is simpler and stricter than RFC
 * 2046's.  At most 70 characters, all bchars. */
static void pick_boundary(const bounce_info_t *info, const buf_t *parts[3], buf_t *out)
{
    buf_t id = BUF_INIT;
    for (const char *p = nz(info->queue_id); *p && id.len < 23; p++) {
        char c = *p;
        bool ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        buf_putc(&id, ok ? c : '_');
    }
    for (unsigned k = 0;; k++) {
        buf_reset(out);
        buf_printf(out, "moat-%s.%lld", buf_cstr(&id), info->now_usec);
        if (k)
            buf_printf(out, "/%u", k);
        if (!contains(parts[0], out) && !contains(parts[1], out) && !contains(parts[2], out))
            break;
    }
    buf_free(&id);
}

void bounce_build(const bounce_info_t *info, const bounce_rcpt_t *rcpts, size_t n, const char *content,
                  size_t content_len, buf_t *out)
{
    buf_t host = BUF_INIT, p1 = BUF_INIT, p2 = BUF_INIT, p3 = BUF_INIT, boundary = BUF_INIT, v = BUF_INIT;
    clean_token(info->myhostname && *info->myhostname ? info->myhostname : "localhost", &host);
    if (!content)
        content_len = 0;

    put_explanation(info, rcpts, n, buf_cstr(&host), &p1);
    put_status(info, rcpts, n, buf_cstr(&host), &p2);
    /* Delay warnings never carry the message: it is still being delivered,
     * and the sender has it. */
    bool headers_only = info->kind == BOUNCE_DELAYED || content_len > info->size_limit;
    put_original(&p3, content ? content : "", content_len, headers_only, info->size_limit);
    const buf_t *parts[3] = {&p1, &p2, &p3};
    pick_boundary(info, parts, &boundary);
    const char *b = buf_cstr(&boundary);

    /* The notice's header. */
    buf_printf(&v, "MAILER-DAEMON@%s (Mail Delivery System)", buf_cstr(&host));
    put_field(out, "From", buf_cstr(&v));
    buf_reset(&v);
    buf_putc(&v, '<');
    /* The recipient may be a UTF-8 address (RFC 6532 allows it in the
     * header of an 8-bit message); only controls are unsafe. */
    for (const unsigned char *p = (const unsigned char *)nz(info->notify); *p; p++)
        buf_putc(&v, (*p < 0x20 || *p == 0x7f) ? '?' : (char)*p);
    buf_putc(&v, '>');
    put_field(out, "To", buf_cstr(&v));
    put_field(out, "Subject", info->kind == BOUNCE_DELAYED  ? "Delayed Mail (still being retried)"
                              : info->kind == BOUNCE_DOUBLE ? "Postmaster Copy: Undelivered Mail"
                                                            : "Undelivered Mail Returned to Sender");
    buf_reset(&v);
    bounce_date(info->now_usec, &v);
    put_field(out, "Date", buf_cstr(&v));
    buf_reset(&v);
    buf_putc(&v, '<');
    clean_token(info->queue_id, &v);
    buf_printf(&v, ".%lld@%s>", info->now_usec, buf_cstr(&host));
    put_field(out, "Message-Id", buf_cstr(&v));
    put_field(out, "Auto-Submitted", "auto-replied");
    put_field(out, "MIME-Version", "1.0");
    buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"%s\"\n", b);
    put_field(out, "Content-Transfer-Encoding", "8bit");
    buf_putc(out, '\n');
    buf_puts(out, "This is a MIME-formatted delivery status notification (RFC 3464).\n");

    /* The parts: every body is followed by "\n--boundary", whose line
     * break belongs to the delimiter (RFC 2046), so a body that does not
     * end in a line break still ends before it. */
    buf_printf(out, "\n--%s\n", b);
    buf_puts(out, "Content-Description: Notification\n"
                  "Content-Type: text/plain; charset=us-ascii\n\n");
    buf_append(out, p1.data, p1.len);

    buf_printf(out, "\n--%s\n", b);
    buf_puts(out, "Content-Description: Delivery report\n"
                  "Content-Type: message/delivery-status\n\n");
    buf_append(out, p2.data, p2.len);

    buf_printf(out, "\n--%s\n", b);
    if (headers_only)
        buf_puts(out, "Content-Description: Undelivered Message Headers\n"
                      "Content-Type: text/rfc822-headers\n");
    else
        buf_puts(out, "Content-Description: Undelivered Message\n"
                      "Content-Type: message/rfc822\n");
    buf_puts(out, "Content-Transfer-Encoding: 8bit\n\n");
    buf_append(out, p3.data, p3.len);
    buf_printf(out, "\n--%s--\n", b);

    buf_free(&host);
    buf_free(&p1);
    buf_free(&p2);
    buf_free(&p3);
    buf_free(&boundary);
    buf_free(&v);
}
