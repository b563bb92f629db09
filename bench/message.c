/*
 * message: the test message moat-bench sends.
 *
 * Owns one body buffer per run, shared by every session (sent by
 * reference, never copied).  Only the header block differs between
 * messages, and it is fixed-width, so every message has the same size.
 * The body must never need dot-stuffing: it is built from lower-case
 * words and spaces only, in CRLF lines of at most 72 characters, so no
 * line can start with "." and no line breaks the 78-character rule.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define LINE_TEXT 70   /* characters per body line before CRLF */

static const char *const words[] = {
    "moat", "bench", "message", "spool", "queue", "relay", "gateway", "filter",
    "loopback", "sender", "recipient", "envelope", "header", "body", "line",
    "reply", "greeting", "session", "transaction", "throughput", "latency",
    "the", "a", "of", "and", "to", "in", "is", "for", "on", "with", "as",
};

/* A fixed-seed generator: every run sends the same bytes. */
static unsigned long next_rand(unsigned long *state)
{
    *state = *state * 6364136223846793005UL + 1442695040888963407UL;
    return *state >> 33;
}

/* Fill out[0..n) with words and single spaces; the first byte is a letter. */
static void fill_line(char *out, size_t n, unsigned long *rs)
{
    size_t i = 0;
    while (i < n) {
        const char *w = words[next_rand(rs) % (sizeof(words) / sizeof(words[0]))];
        for (size_t k = 0; w[k] != '\0' && i < n; k++)
            out[i++] = w[k];
        if (i < n)
            out[i++] = ' ';
    }
}

size_t msg_header(const msgtmpl_t *m, const struct bench_opts *o, unsigned long seq,
                  char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "From: <%s>\r\n"
                     "To: <%s>\r\n"
                     "Subject: moat-bench test message %010lu\r\n"
                     "Date: %s\r\n"
                     "Message-ID: <%010lu.%ld@moat-bench.invalid>\r\n"
                     "\r\n",
                     o->from, o->nrcpt ? o->rcpt[0] : "", seq, m->date, seq, (long)getpid());
    if (n < 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}

void msg_init(msgtmpl_t *m, const struct bench_opts *o)
{
    memset(m, 0, sizeof(*m));
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Two-digit day keeps the header width fixed. */
    strftime(m->date, sizeof(m->date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

    char hdr[1024];
    m->hdr_len = msg_header(m, o, 0, hdr, sizeof(hdr));

    size_t want = o->size > m->hdr_len ? o->size - m->hdr_len : 0;
    /* A one-byte body cannot end in CRLF; send an empty line instead. */
    if (want == 1)
        want = 2;
    m->body = malloc(want + 1);
    if (m->body == NULL) {
        fprintf(stderr, "moat-bench: out of memory for a %zu-byte body\n", want);
        exit(2);
    }
    unsigned long rs = 20240229UL;
    size_t pos = 0;
    while (pos < want) {
        size_t rem = want - pos;
        size_t text;
        if (rem <= LINE_TEXT + 2)
            text = rem - 2;
        else if (rem == LINE_TEXT + 3)
            text = LINE_TEXT - 1;   /* leave 2 bytes, not 1, for the last line */
        else
            text = LINE_TEXT;
        fill_line(m->body + pos, text, &rs);
        pos += text;
        m->body[pos++] = '\r';
        m->body[pos++] = '\n';
    }
    m->body[pos] = '\0';
    m->body_len = pos;
}

void msg_free(msgtmpl_t *m)
{
    free(m->body);
    m->body = NULL;
    m->body_len = 0;
}
