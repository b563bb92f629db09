/*
 * dns-private: the pieces of the resolver that need no network, shared
 * by dns.c, the unit tests (tests/unit/test_dns.c) and the fuzzer
 * (tests/fuzz/fuzz_dnsmsg.c): answers, query-name checks, the wire-format
 * parser and moat's answer cache.  Nothing here touches libunbound or the
 * event loop, and nothing here reads a clock: callers pass "now".
 */
#ifndef MOAT_DNS_DNS_PRIVATE_H
#define MOAT_DNS_DNS_PRIVATE_H

#include "dns/dns.h"

#include <stdarg.h>

/* A query name in text: at most 253 octets without the trailing dot. */
#define DNS_NAME_MAX 253
/* A normalised name as text: octets that are not printable ASCII (and
 * the backslash) are written \DDD, as the reply parser writes them. */
#define DNS_KEY_MAX (DNS_NAME_MAX * 4)
/* Caps, as unbound's own defaults (cache-max-ttl, cache-max-negative-ttl). */
#define DNS_TTL_MAX 86400u
#define DNS_NEG_TTL_MAX 3600u
/* Negative answers whose authority section carries no SOA. */
#define DNS_NEG_TTL_NO_SOA 60u

struct event_base;
/* dns.c: the loop the resolver runs on (memo.c creates its events there). */
struct event_base *dns_event_base(const dns_t *d);

/* ------------------------------------------------------------ answer.c */

/* A fresh answer with one reference; name is copied as given. */
dns_answer_t *dns_answer_new(dns_type_t type, const char *name, dns_status_t status);
/* Append one record (data copied). */
void dns_answer_add(dns_answer_t *a, const char *data, unsigned pref);
/* DNS_TEMPFAIL with error formatted (truncated to fit a->error). */
dns_answer_t *dns_answer_tempfail(dns_type_t type, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* MX: by preference, then name (the order dns.h promises). */
void dns_answer_sort(dns_answer_t *a);
/* "SERVFAIL", "REFUSED", ... ; "RCODE 12" for the rest (buf holds 16). */
const char *dns_rcode_name(unsigned rcode, char buf[16]);

/* --------------------------------------------------------------- msg.c */

/* Check a query name and write its canonical form to out: ASCII lower
 * case, no trailing dot, octets that are not printable ASCII (space
 * included) and '\' as \DDD (libunbound reads those escapes; an SPF
 * macro can put any octet into a label).  Refused (false): "" and ".", an
 * empty label, a label over 63 octets, a name over DNS_NAME_MAX octets,
 * a NUL. */
bool dns_name_norm(const char *in, char out[DNS_KEY_MAX + 1]);

/* Turn a DNS reply in wire format into an answer to (type, name), name
 * in canonical form.  CNAME chains inside the answer section are
 * followed from name; records of type owned by the chain's end are the
 * answer.  Status from the rcode (NOERROR with records: DNS_OK, without:
 * DNS_NODATA; NXDOMAIN; anything else DNS_TEMPFAIL naming the rcode); a
 * malformed message is DNS_TEMPFAIL "malformed answer".  ttl: the
 * smallest TTL of the records used (chain included), capped at
 * DNS_TTL_MAX; negative answers min(SOA TTL, SOA minimum) from the
 * authority section, capped at DNS_NEG_TTL_MAX, DNS_NEG_TTL_NO_SOA
 * without a SOA.  Never reads outside pkt[0, len). */
dns_answer_t *dns_msg_parse(const unsigned char *pkt, size_t len, dns_type_t type, const char *name);

/* ------------------------------------------------------------- cache.c */

/* Answers keyed by type + canonical name, each kept until now passes its
 * TTL, at most max of them: inserting beyond max drops the least
 * recently used entry (O(1): no scan of the table). */
typedef struct dns_cache dns_cache_t;

dns_cache_t *dns_cache_new(size_t max);
void dns_cache_free(dns_cache_t **c);
/* The live answer for (type, name), borrowed; NULL when absent or
 * expired (an expired entry is dropped).  A hit makes it most recent. */
dns_answer_t *dns_cache_get(dns_cache_t *c, dns_type_t type, const char *name, double now);
/* Keep a (the cache takes its own reference) for a->ttl seconds from
 * now, replacing an older answer to the same question.  DNS_TEMPFAIL
 * and ttl 0 are not kept.  Returns whether it was kept. */
bool dns_cache_put(dns_cache_t *c, dns_answer_t *a, double now);
size_t dns_cache_count(const dns_cache_t *c);

#endif
