/*
 * peer: the client's host names from DNS, as Postfix's smtpd_peer does:
 * the PTR name of the address (the "reverse" name) and whether that name
 * resolves back to the address (forward-confirmed reverse DNS: then it is
 * the client name; otherwise the client name is "unknown").
 */
#ifndef MOAT_POLICY_PEER_H
#define MOAT_POLICY_PEER_H

#include <stdbool.h>

#include "core/buf.h"
#include "dns/dns.h"

typedef struct peer_names {
    char name[256];       /* forward-confirmed name, or "unknown" */
    char reverse[256];    /* PTR name, or "unknown" */
    char name_code;       /* 0 confirmed, 4 temporary failure, 5 none or not confirmed */
    char reverse_code;    /* 0 PTR found, 4 temporary failure, 5 none */
    char forward_code;    /* 0 confirmed, 4 temporary failure, 5 not confirmed (or no PTR) */
    char warning[600];    /* Postfix's warning about the names ("hostname X does not resolve to
                             address Y"), "" when none */
} peer_names_t;

/* Fill out from the memo's answers for addr ("192.0.2.1", "2001:db8::1").
 * Returns false while an answer is missing: the queries are running, and
 * the caller waits for the memo's wake and calls again.  trace (may be
 * NULL) gets a "  client: dns: TYPE NAME -> ANSWER (cache|N ms)" line
 * per answer used. */
bool peer_names_lookup(dns_memo_t *m, const char *addr, peer_names_t *out, buf_t *trace);

/* Without DNS (smtpd_peername_lookup = no, or an address that has no
 * reverse zone): both names "unknown", codes 5. */
void peer_names_unknown(peer_names_t *out);

#endif
