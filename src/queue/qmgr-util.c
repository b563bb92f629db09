/*
 * qmgr-util: the queue manager's small pure helpers: Postfix's delay
 * format, enhanced status codes at the start of a text, the backoff, and
 * the recipient log line.  No I/O, no clock, no state.
 */
#include "queue/qmgr-private.h"

#include <stdio.h>
#include <string.h>

void qmgr_fmt_delay(char *out, size_t n, long long usec)
{
    double s = usec > 0 ? (double)usec / 1e6 : 0;
    int prec = s >= 10 ? 0 : s >= 1 ? 1 : 2;
    snprintf(out, n, "%.*f", prec, s);
    if (strchr(out, '.')) {
        size_t len = strlen(out);
        while (len > 0 && out[len - 1] == '0')
            out[--len] = 0;
        if (len > 0 && out[len - 1] == '.')
            out[--len] = 0;
    }
}

static size_t digits(const char *p, size_t max)
{
    size_t n = 0;
    while (n < max && p[n] >= '0' && p[n] <= '9')
        n++;
    return n;
}

void qmgr_split_dsn(const char *text, const char *def, char dsn[16], const char **rest)
{
    const char *p = text ? text : "";
    size_t a, b, c;
    /* class "." subject(1-3 digits) "." detail(1-3 digits), then a space or the end */
    if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && (a = digits(p + 2, 3)) > 0 &&
        p[2 + a] == '.' && (b = digits(p + 3 + a, 3)) > 0 && (c = 3 + a + b, p[c] == 0 || p[c] == ' ')) {
        snprintf(dsn, 16, "%.*s", (int)c, p);
        p += c;
        while (*p == ' ')
            p++;
        *rest = p;
        return;
    }
    snprintf(dsn, 16, "%s", def);
    *rest = p;
}

long long qmgr_backoff(long long age_sec, long long min_sec, long long max_sec)
{
    if (max_sec < min_sec)
        max_sec = min_sec;
    if (age_sec < min_sec)
        return min_sec;
    if (age_sec > max_sec)
        return max_sec;
    return age_sec;
}

void qmgr_qualify(const char *addr, const char *domain, buf_t *out)
{
    buf_reset(out);
    buf_puts(out, addr);
    if (!strchr(addr, '@') && domain && *domain)
        buf_printf(out, "@%s", domain);
}

void qmgr_format_rcpt(const qmgr_logline_t *l, buf_t *out)
{
    char total[32], a[32], b[32], c[32], d[32];
    long long t_conn = l->t_conn ? l->t_conn : l->t_start;
    /* a: arrival until the queue manager took the message; b: until this
     * delivery began; c: connection set-up; d: the transmission. */
    qmgr_fmt_delay(total, sizeof total, l->t_end - l->arrival);
    qmgr_fmt_delay(a, sizeof a, l->t_load - l->arrival);
    qmgr_fmt_delay(b, sizeof b, l->t_start - l->t_load);
    qmgr_fmt_delay(c, sizeof c, t_conn - l->t_start);
    qmgr_fmt_delay(d, sizeof d, l->t_end - t_conn);
    buf_printf(out, "to=<%s>, ", l->to);
    if (l->orig)
        buf_printf(out, "orig_to=<%s>, ", l->orig);
    buf_printf(out, "relay=%s, delay=%s, delays=%s/%s/%s/%s, dsn=%s, status=%s (%s)", l->relay, total,
               a, b, c, d, l->dsn, l->status, l->text);
    if (l->tls && *l->tls)
        buf_printf(out, ", tls=%s", l->tls);
}
