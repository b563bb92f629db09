/*
 * data: the DATA/BDAT content decoder (see data.h for the rules).
 *
 * A resumable state machine over the raw bytes the client sends after DATA
 * (or inside BDAT chunks).  It owns nothing but the few fields of data_dec_t;
 * decoded lines go straight into the caller's buffer, so the decoder's own
 * memory stays constant however long a line is.  The only input it ever
 * holds back is a single CR (and, at the start of a DOT-mode line, the
 * leading "." that is dropped anyway), until the next byte shows what it is.
 *
 * It must never emit a lone CR, never end DATA anywhere but at a real
 * <CRLF>.<CRLF>, and never consume a byte after that terminator: those
 * three are the SMTP-smuggling defence.  Runs of ordinary bytes are found
 * with memchr and appended in one piece, because every message passes here.
 */
#include "smtp/data.h"

#include <string.h>

/* Values of data_dec_t.state. */
enum {
    ST_BOL,    /* at the start of a line (crlf_before: how the last one ended) */
    ST_MID,    /* inside a line: ordinary bytes are copied through */
    ST_CR,     /* held a CR: CRLF if an LF follows, a bare CR otherwise */
    ST_DOT,    /* DOT mode, after a real CRLF, a leading "." was dropped */
    ST_DOT_CR, /* ... followed by a CR: an LF next makes the terminator */
    ST_DONE    /* the terminator was consumed; nothing more is accepted */
};

void data_dec_init(data_dec_t *d, data_mode mode)
{
    memset(d, 0, sizeof *d);
    d->mode = mode;
    d->state = ST_BOL;
    /* The CRLF that ended the DATA command counts as the first CRLF of
     * "<CRLF>.<CRLF>", so an empty message is just ".\r\n". */
    d->crlf_before = true;
}

static void end_line(data_dec_t *d, buf_t *out, bool crlf)
{
    buf_putc(out, '\n');
    d->lines++;
    d->crlf_before = crlf;
    d->state = ST_BOL;
}

/* Find the first CR or LF in [p, end).  next_cr/next_lf cache the last
 * memchr answers for this feed call (NULL: none before end), so each byte
 * is scanned at most once per character whatever the mix of line ends;
 * searching only for one of them per line would be quadratic on a chunk
 * that has many of one and none of the other. */
typedef struct {
    const char *end;
    const char *next_cr, *next_lf;
    bool cr_valid, lf_valid;
} scan_t;

static const char *scan_eol(scan_t *s, const char *p)
{
    if (!s->cr_valid || (s->next_cr && s->next_cr < p)) {
        s->next_cr = memchr(p, '\r', (size_t)(s->end - p));
        s->cr_valid = true;
    }
    if (!s->lf_valid || (s->next_lf && s->next_lf < p)) {
        s->next_lf = memchr(p, '\n', (size_t)(s->end - p));
        s->lf_valid = true;
    }
    const char *cr = s->next_cr, *lf = s->next_lf;
    if (!cr)
        return lf;
    if (!lf)
        return cr;
    return cr < lf ? cr : lf;
}

size_t data_dec_feed(data_dec_t *d, const char *in, size_t len, buf_t *out, bool *done)
{
    const char *p = in, *end = in + len;
    scan_t sc = {.end = end};

    if (done)
        *done = d->state == ST_DONE;
    if (d->state == ST_DONE)
        return 0;

    while (p < end) {
        char c = *p;
        switch (d->state) {
        case ST_BOL:
            if (c == '.' && d->mode == DATA_MODE_DOT) {
                /* Every line loses its leading dot; only one that follows a
                 * real CRLF may also be the start of the terminator. */
                p++;
                d->state = d->crlf_before ? ST_DOT : ST_MID;
                break;
            }
            d->state = ST_MID;
            break; /* reconsider c as the first byte of the line */

        case ST_MID: {
            const char *eol = scan_eol(&sc, p);
            if (!eol) {
                buf_append(out, p, (size_t)(end - p));
                p = end;
                break;
            }
            if (*eol == '\n') {
                /* A bare LF: copy the line and its end in one append. */
                buf_append(out, p, (size_t)(eol - p) + 1);
                d->lines++;
                d->bare_lf++;
                d->crlf_before = false;
                d->state = ST_BOL;
            } else {
                if (eol > p)
                    buf_append(out, p, (size_t)(eol - p));
                d->state = ST_CR;
            }
            p = eol + 1;
            break;
        }

        case ST_CR:
            if (c == '\n') {
                p++;
                end_line(d, out, true);
            } else {
                /* The held CR was bare: it ends the line by itself, and c
                 * starts the next one (which is not after a real CRLF). */
                d->bare_cr++;
                end_line(d, out, false);
            }
            break;

        case ST_DOT:
            if (c == '\r') {
                p++;
                d->state = ST_DOT_CR;
            } else {
                d->state = ST_MID; /* an ordinary dot-stuffed line */
            }
            break;

        case ST_DOT_CR:
            if (c == '\n') {
                p++;
                d->state = ST_DONE;
                if (done)
                    *done = true;
                return (size_t)(p - in);
            }
            /* ".\r" then something else: the line was "." (now empty) and
             * ended with a bare CR; c begins the next line. */
            d->bare_cr++;
            end_line(d, out, false);
            break;

        default: /* ST_DONE cannot be reached inside the loop */
            return (size_t)(p - in);
        }
    }
    return len;
}

void data_dec_finish(data_dec_t *d, buf_t *out)
{
    switch (d->state) {
    case ST_CR:
    case ST_DOT_CR:
        d->bare_cr++;
        end_line(d, out, false);
        break;
    case ST_MID:
    case ST_DOT:
        end_line(d, out, false);
        break;
    default: /* at a line start or done: nothing is pending */
        break;
    }
}
