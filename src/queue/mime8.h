/*
 * mime8: 8-bit to 7-bit downgrade of a message for a server that does not
 * offer 8BITMIME (RFC 6152), as Postfix does unless
 * disable_mime_output_conversion = yes: every leaf part whose
 * Content-Transfer-Encoding is 8bit or binary (or absent, with 8-bit
 * bytes in its body) is re-encoded as quoted-printable and its header
 * says so; multipart and message/rfc822 parts are walked recursively (up
 * to a nesting limit), their own Content-Transfer-Encoding becoming 7bit.
 * Header fields are never changed except Content-Transfer-Encoding (8-bit
 * bytes in a header stay: there is no safe rewrite).  Pure, no I/O; a
 * libFuzzer target drives it.
 */
#ifndef MOAT_QUEUE_MIME8_H
#define MOAT_QUEUE_MIME8_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Does the content hold any byte >= 0x80? */
bool mime8_has_8bit(const char *in, size_t len);

/* in: the message as stored (LF line ends).  out: the downgraded message
 * (LF line ends; quoted-printable lines at most 76 characters).  Returns 1
 * when something was converted, 0 when the message had nothing to convert
 * (out is then a copy of in).  Malformed MIME (a missing boundary, nesting
 * deeper than nesting_limit) never fails: what cannot be parsed as parts is
 * encoded as one leaf. */
int mime8_downgrade(const char *in, size_t len, unsigned nesting_limit, buf_t *out);

#endif
