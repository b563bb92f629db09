/*
 * data: the message-content decoder for DATA and BDAT.  Pure and
 * resumable: feed it bytes in pieces of any size; it produces content
 * lines ending in "\n" (the queue's form) and, for DATA, finds the end.
 *
 * Rules (the SMTP-smuggling defence lives here):
 *  - DATA ends only at <CR><LF>.<CR><LF>, where the first CRLF may be the
 *    one that ended the DATA command.  "\n.\n", "\r.\r", "\n.\r\n",
 *    "\r\n.\n", "\r\n.\r" and every other variant are ordinary content.
 *  - Dot-unstuffing (DATA only): a leading "." is removed from every line
 *    (so a lone "." that is not the terminator becomes an empty line).
 *  - A bare LF (LF not preceded by CR) and a bare CR (CR not followed by
 *    LF) both end a content line: the output never contains a lone CR, so
 *    no downstream server can read a line end the decoder did not emit.
 *    Each one is counted (bare_lf, bare_cr) so the session can reject the
 *    message when smtpd_forbid_bare_newline = reject.
 *  - Output for a CRLF-terminated input line is the line + "\n".
 */
#ifndef MOAT_SMTP_DATA_H
#define MOAT_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef enum { DATA_MODE_DOT, DATA_MODE_BDAT } data_mode;

typedef struct data_dec {
    data_mode mode;
    int state;          /* private */
    bool crlf_before;   /* private: previous line ended with a real CRLF */
    unsigned long bare_lf, bare_cr;  /* counts seen so far */
    unsigned long lines;             /* content lines emitted */
} data_dec_t;

void data_dec_init(data_dec_t *d, data_mode mode);

/* Consume up to len bytes, appending decoded content to out.  In DOT mode
 * stops right after the terminator and sets *done (bytes after it are not
 * consumed: they are the next pipelined command).  Returns bytes consumed.
 * A trailing CR may be held back internally until the next byte shows
 * what it is; the byte count still includes it. */
size_t data_dec_feed(data_dec_t *d, const char *in, size_t len, buf_t *out, bool *done);

/* BDAT LAST: flush a held CR and an unterminated last line (adds "\n"). */
void data_dec_finish(data_dec_t *d, buf_t *out);

#endif
