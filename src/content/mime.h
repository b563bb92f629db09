/*
 * mime: a one-pass, streaming MIME structure parser for the cleanup stage
 * (content.c), modelled on the behaviour of Postfix's mime_state: header
 * sections and folding, multipart boundaries, message/rfc822 nesting,
 * Content-Type / Content-Transfer-Encoding, and the safety limits.
 *
 * Input: content lines without their "\n", or pieces of a long line
 * (cont = true: the line goes on in the next call; no boundary is looked
 * for at the start of a continued piece).  Output: callbacks, in input
 * order, for each logical header (its raw text: the physical lines joined
 * with "\n", without the final newline), the end of each header section,
 * each body line or piece (with the part it belongs to), and errors.
 * Every byte of input comes back out through the header or body callback
 * (after the normalisation of "Name : value" to "Name: value" and the cut
 * of an over-long header), so a caller can rebuild the message from the
 * callbacks alone.
 *
 * Memory is bounded: one header (header_size_limit), and a boundary stack
 * of at most nesting_limit entries of at most boundary_length_limit bytes.
 * Nothing is allocated per line once the buffers have grown.
 *
 * Also here: the parameter parser for structured header values (quoted
 * strings, RFC 2231 continuations and charsets, RFC 2047 encoded words),
 * and streaming base64 / quoted-printable decoders for body_checks_decode.
 */
#ifndef MOAT_CONTENT_MIME_H
#define MOAT_CONTENT_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/util.h"

/* Where a header section is (Postfix's MIME_HDR_*). */
typedef enum {
    MIME_HDR_PRIMARY,    /* the message's own headers */
    MIME_HDR_MULTIPART,  /* after a --boundary line */
    MIME_HDR_NESTED,     /* at the start of a message/rfc822 (or message/global) part */
} mime_hdr_class;

typedef enum {
    MIME_ENC_7BIT,
    MIME_ENC_8BIT,
    MIME_ENC_BINARY,
    MIME_ENC_QP,
    MIME_ENC_BASE64,
} mime_enc;

/* Errors (each reported at most once per message, except TRUNC_HEADER,
 * reported once per over-long header). */
#define MIME_ERR_NESTING          0x1  /* "MIME nesting exceeds safety limit" */
#define MIME_ERR_TRUNC_HEADER     0x2  /* "message header length exceeds safety limit" */
#define MIME_ERR_ENCODING_DOMAIN  0x4  /* an encoding its message or multipart type does not allow */

/* Postfix's text for one error bit. */
const char *mime_error_text(int err);

/* Headers the parser knows by name. */
typedef enum {
    MIME_H_OTHER,
    MIME_H_CONTENT_TYPE,
    MIME_H_CONTENT_TRANSFER_ENCODING,
    MIME_H_CONTENT_DISPOSITION,
    MIME_H_CONTENT_DESCRIPTION,
    MIME_H_CONTENT_ID,
    MIME_H_MIME_VERSION,
    MIME_H_MESSAGE_ID,
} mime_hdr_id;

typedef struct mime_header {
    mime_hdr_class cls;
    mime_hdr_id id;
    bool is_mime;        /* a MIME header (Content-Type, -Transfer-Encoding,
                            -Disposition, -Description, -ID, MIME-Version):
                            Postfix checks these with mime_header_checks
                            wherever they are */
    bool truncated;      /* cut at header_size_limit */
    const char *text;    /* raw folded text, NUL-terminated, no final "\n" */
    size_t len;
    size_t name_len;     /* "Subject" in "Subject: ..." */
} mime_header_t;

/* The entity a body line belongs to. */
typedef struct mime_part {
    char type[32];       /* lower case: "text", "multipart", "" for other/prolog */
    char subtype[64];    /* lower case: "plain", "mixed", ... */
    mime_enc enc;
    int depth;           /* 0: the message body; +1 per multipart or message level */
    bool is_text;        /* type is "text" */
    unsigned serial;     /* changes whenever a new body (part) starts */
} mime_part_t;

typedef struct mime_body {
    const char *text;    /* not NUL-terminated */
    size_t len;
    bool cont;           /* a piece: the line continues in the next body call */
    bool boundary;       /* a --boundary or --boundary-- line */
    size_t offset;       /* bytes of this part's body before this piece
                            (line ends count 1), for body_checks_size_limit */
    const mime_part_t *part;
} mime_body_t;

typedef struct mime_cb {
    void (*header)(void *arg, const mime_header_t *h);
    /* The end of a header section (for every section, primary first). */
    void (*header_end)(void *arg, mime_hdr_class cls);
    void (*body)(void *arg, const mime_body_t *b);
    /* err is one MIME_ERR_* bit; text is the offending header or value. */
    void (*error)(void *arg, int err, const char *text, size_t len);
} mime_cb_t;

typedef struct mime_opts {
    size_t header_size_limit;      /* header_size_limit */
    size_t boundary_length_limit;  /* mime_boundary_length_limit */
    int nesting_limit;             /* mime_nesting_limit */
    bool disable_mime;             /* disable_mime_input_processing */
    bool report_encoding_domain;   /* strict_mime_encoding_domain */
} mime_opts_t;

typedef struct mime mime_t;

mime_t *mime_new(const mime_opts_t *o, const mime_cb_t *cb, void *arg);
void mime_free(mime_t **m);
/* One line (cont = false) or piece (cont = true) of content, without "\n". */
void mime_update(mime_t *m, const char *text, size_t len, bool cont);
/* The end of the content: the pending header is flushed. */
void mime_finish(mime_t *m);
/* MIME_ERR_* bits seen so far. */
int mime_errors(const mime_t *m);

/* Is text (len bytes) the start of a header ("name:" or the obsolete
 * "name :")?  The length of the name, or 0. */
size_t mime_is_header(const char *text, size_t len);

/* --- Parameters of structured header values ------------------------------ */

/* Find parameter `name` (case-insensitive) in a Content-Type or
 * Content-Disposition header text (the whole header, folded or not), and
 * put its value, decoded, in out: quoted strings unquoted (with \-escapes),
 * RFC 2231 forms (name*=charset'lang'%XX, name*0=.. name*1*=.., put
 * together in section order) percent-decoded, and RFC 2047 encoded words
 * (=?cs?B?..?= / =?cs?Q?..?=, white space between adjacent words dropped)
 * decoded; the bytes stay in their charset.  Returns 0 when absent, 1 for
 * a plain value, 2 when RFC 2231 or RFC 2047 encoding was decoded. */
int mime_param(const char *text, size_t len, const char *name, buf_t *out);

/* The lower-case type and subtype of a Content-Type header text (the
 * value part, "text/plain; ..."), truncated to the arrays' sizes. */
bool mime_content_type(const char *value, size_t len, char type[32], char subtype[64]);

/* Decode RFC 2047 encoded words in text into out (other text copied);
 * true when at least one word was decoded. */
bool mime_decode_words(const char *text, size_t len, buf_t *out);

/* --- Body decoders ------------------------------------------------------ */

/* Streaming base64 / quoted-printable decoder: encoded lines in, decoded
 * lines out (split at LF, a CR before it dropped; decoded lines longer
 * than line_limit come out as pieces with cont = true). */
typedef void (*mime_line_fn)(void *arg, const char *text, size_t len, bool cont);

typedef struct mime_dec {
    mime_enc enc;
    size_t line_limit;
    b64dec_t b64;        /* base64 bits carried between lines */
    buf_t raw;           /* base64: one line's bytes */
    bool soft;           /* qp: the last line ended in a soft line break */
    buf_t line;          /* the decoded line so far */
} mime_dec_t;

void mime_dec_init(mime_dec_t *d, mime_enc enc, size_t line_limit);
/* One encoded line or piece (cont: no line end after it). */
void mime_dec_line(mime_dec_t *d, const char *text, size_t len, bool cont, mime_line_fn fn, void *arg);
/* The end of the part: the last decoded line, if any, comes out. */
void mime_dec_flush(mime_dec_t *d, mime_line_fn fn, void *arg);
void mime_dec_free(mime_dec_t *d);

#endif
