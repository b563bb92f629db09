/*
 * restrict-private: what the files of the restriction engine share, and
 * what its unit tests reach into.
 *
 * checks.c    name and address syntax as Postfix judges it (valid_hostname,
 *             valid_hostaddr, valid_mailhost_addr) and the enhanced status
 *             code fix-up per reply class (smtpd_dsn_fix)
 * restrict.c  compiling restriction lists, evaluating them, verdicts
 */
#ifndef MOAT_POLICY_RESTRICT_PRIVATE_H
#define MOAT_POLICY_RESTRICT_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>

/* Host name syntax, Postfix's rules: LDH labels (and '_') of at most 63
 * bytes, at most 255 in all, no leading/trailing dot or hyphen, not all
 * digits.  wildcard: a first label "*" is allowed ("*.example.com");
 * utf8: bytes >= 0x80 count as letters (SMTPUTF8 domains). */
bool rs_valid_hostname(const char *name, bool wildcard, bool utf8);
/* Dotted-quad IPv4 (four decimal octets <= 255, first octet not 0 unless
 * the whole address is zeros). */
bool rs_valid_ipv4_hostaddr(const char *addr);
/* IPv6 text form as Postfix accepts it: hex fields, one "::", an IPv4
 * tail after at most six colons. */
bool rs_valid_ipv6_hostaddr(const char *addr);
/* Either of the above, by the presence of ':'. */
bool rs_valid_hostaddr(const char *addr);
/* An address literal's inside: "IPv6:..." (any case) or IPv4. */
bool rs_valid_mailhost_addr(const char *addr);

/* Postfix's smtpd_dsn_fix: an address status (x.1.y) in a reply about
 * something else is misleading; map it for the reply class ("Sender
 * address", "Recipient address"; other classes get x.0.0).  Writes the
 * result to out (size >= 12).  Returns true when it changed the code. */
bool rs_dsn_fix(const char *dsn, const char *reply_class, char *out, size_t size);

#endif
