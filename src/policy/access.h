/*
 * access: the lookup keys of access(5), in Postfix's order.  The
 * restriction engine tries each key against a table until one is found.
 *
 *   client address  1.2.3.4, 1.2.3, 1.2, 1        (IPv6: the compressed
 *                   form, then truncated at each last ':' in turn)
 *   host name       a.b.example, then parents: b.example, example
 *                   (".b.example", ".example" when parent domains do not
 *                   match subdomains: parent_domain_matches_subdomains)
 *   email address   user+ext@domain, user@domain, domain (+ parents as for
 *                   host names), user+ext@, user@; the null sender is the
 *                   single key smtpd_null_access_lookup_key ("<>")
 *
 * No heap allocation: keys are built in a stack buffer and passed to the
 * callback, which returns 0 to continue or non-zero to stop (that value
 * is returned).  Keys are not case-folded here (the tables do that).
 */
#ifndef MOAT_POLICY_ACCESS_H
#define MOAT_POLICY_ACCESS_H

#include <stdbool.h>

typedef int (*access_key_fn)(const char *key, void *arg);

int access_keys_addr(const char *ip, access_key_fn fn, void *arg);
int access_keys_host(const char *host, bool parent_matches_subdomains, access_key_fn fn, void *arg);
/* addr is "local@domain" (or "" for the null sender); delimiters is
 * recipient_delimiter ("" for none). */
int access_keys_email(const char *addr, const char *delimiters, bool parent_matches_subdomains,
                      const char *null_key, access_key_fn fn, void *arg);

#endif
