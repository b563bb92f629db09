/*
 * addr: RFC 5321 path parsing for MAIL FROM and RCPT TO.
 *
 * Accepts "<path>" (or, leniently like Postfix, a bare address without
 * angle brackets), strips an RFC 5321 source route ("<@a,@b:user@dom>"),
 * handles quoted local parts ("\"john doe\"@dom", with backslash pairs),
 * address literals ("user@[192.0.2.1]", "user@[IPv6:2001:db8::1]"), and
 * UTF-8 local parts and domains only when ADDR_UTF8 is given (SMTPUTF8).
 * Never reads past the terminating NUL; never allocates on failure.
 */
#ifndef MOAT_SMTP_ADDR_H
#define MOAT_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct addr {
    char *full;   /* as stored and logged: local@domain (quoted local part kept
                     quoted only when it needs quotes); "" for the null path */
    char *local;  /* local part, unquoted (quotes and backslashes removed) */
    char *domain; /* domain as given but ASCII-lower-cased, or "[literal]"; "" if none */
    bool is_null; /* the null reverse-path <> */
    bool is_utf8; /* contains non-ASCII bytes */
} addr_t;

#define ADDR_ALLOW_NULL 0x1 /* <> is valid (MAIL FROM) */
#define ADDR_UTF8 0x2       /* SMTPUTF8 was given: UTF-8 allowed */

/*
 * Parse the path at s (leading spaces allowed).  On success fills *out
 * (malloc'd strings; release with addr_free), sets *rest to the first byte
 * after the path (ESMTP parameters follow, possibly after spaces) and
 * returns 0.  On failure returns -1, leaves *out zeroed, and sets *why to
 * a static reply tail with enhanced status code, e.g.
 * "5.1.7 Bad sender address syntax" / "5.1.3 Bad recipient address syntax"
 * (the caller chooses 501 and which of the two texts by context: pass
 * is_sender to pick 5.1.7 vs 5.1.3).
 */
int addr_parse_path(const char *s, unsigned flags, bool is_sender, addr_t *out,
                    const char **rest, const char **why);
void addr_free(addr_t *a);

/* Is the domain syntactically a hostname (LDH labels, dots) or an address literal? */
bool addr_valid_domain(const char *domain, bool utf8);

#endif
