/*
 * xattr: the argument lists of XFORWARD and XCLIENT, Postfix's SMTP
 * extensions that let a trusted peer (a content filter, a proxy) tell the
 * server about the client behind it: "NAME=mx.example.org ADDR=192.0.2.1
 * ...", each value xtext-encoded (RFC 3461: "+XX" for a byte), or
 * [UNAVAILABLE] (any case), or for XCLIENT NAME / REVERSE_NAME also
 * [TEMPUNAVAIL].
 *
 * Pure: parse and validate one command's arguments into xattrs_t, or
 * produce the complete 501 reply.  What the values change is the
 * session's business (session.c).  Values that reach headers and logs
 * never contain control characters, white space or the characters
 * " <>()\\\";@" in HELO/PROTO/IDENT (replaced by '?', as Postfix does);
 * NAME, ADDR, PORT, SOURCE and the XCLIENT PROTO are checked strictly.
 */
#ifndef MOAT_SMTP_XATTR_H
#define MOAT_SMTP_XATTR_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef enum { XCMD_XFORWARD, XCMD_XCLIENT } xcmd_t;

typedef enum {
    XA_NAME,          /* client host name */
    XA_ADDR,          /* client address (stored without "IPv6:", normalized) */
    XA_PORT,          /* client port */
    XA_PROTO,         /* XFORWARD: any protocol name; XCLIENT: SMTP or ESMTP */
    XA_HELO,          /* the name the client gave in HELO/EHLO */
    XA_SOURCE,        /* XFORWARD: LOCAL or REMOTE */
    XA_IDENT,         /* XFORWARD: the upstream queue ID */
    XA_REVERSE_NAME,  /* XCLIENT: the PTR name */
    XA_LOGIN,         /* XCLIENT: the SASL login name */
    XA_DESTADDR,      /* XCLIENT: the server address the client connected to */
    XA_DESTPORT,      /* XCLIENT: the server port */
    XA__COUNT
} xattr_id;

#define XA_VALUE_MAX 255   /* longest value, before and after decoding (Postfix's limit) */

/* status[] values: Postfix's peer codes, so NAME's status is the name code. */
#define XA_AVAILABLE 0
#define XA_TEMPUNAVAIL 4   /* [TEMPUNAVAIL]: XCLIENT NAME and REVERSE_NAME only */
#define XA_UNAVAILABLE 5   /* [UNAVAILABLE] */

typedef struct xattrs {
    unsigned given;                          /* bit (1u << id) per attribute the command named */
    char status[XA__COUNT];                  /* XA_AVAILABLE, XA_TEMPUNAVAIL or XA_UNAVAILABLE */
    char value[XA__COUNT][XA_VALUE_MAX + 1]; /* decoded and checked; "" unless XA_AVAILABLE */
} xattrs_t;

/* The EHLO keyword line for cmd, e.g. "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT". */
const char *xattr_keywords(xcmd_t cmd);
/* "NAME", "ADDR", ... */
const char *xattr_name(xattr_id id);

/* Parse the arguments of one command (the text after the verb).  0 with
 * *out filled (a repeated attribute: the last one counts); -1 with the
 * whole reply line, e.g. "501 5.5.4 Bad NAME syntax: a..b", in reply
 * (client text in it is made printable).  Never reads past the NUL. */
int xattr_parse(xcmd_t cmd, const char *args, xattrs_t *out, buf_t *reply);

/* RFC 3461 xtext: "+XX" (two upper-case hex digits) stands for a byte;
 * every other byte must be printable ASCII other than '+' and '='.
 * Decodes into out (size bytes, NUL-terminated).  -1 on malformed text,
 * an encoded NUL, or when out is too small. */
int xtext_decode(const char *in, char *out, size_t size);

/* Postfix's host-name syntax: 1..255 bytes of dot-separated labels of
 * letters, digits, '-' and '_' (1..63 each, no leading or trailing '-'),
 * not all digits (that would be an address). */
bool xattr_valid_hostname(const char *s);

#endif
