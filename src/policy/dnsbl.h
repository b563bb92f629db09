/*
 * dnsbl: the DNS-list pieces of the restriction engine that need no
 * network: list specifications with reply filters and weights, query
 * names (reversed IPv4 octets, IPv6 nibbles), reply templates
 * (default_rbl_reply, rbl_reply_maps), and the health of each list.
 * restrict.c does the lookups (through dns_memo_t) and calls these.
 */
#ifndef MOAT_POLICY_DNSBL_H
#define MOAT_POLICY_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"

/* One list as written in a restriction or in dnsbl_sites:
 *   zone                       any A record in 127.0.0.0/8 lists
 *   zone=127.0.0.2             exactly this answer
 *   zone=127.0.0.[2..11]       per-octet ranges [a..b] and sets [a;b;c],
 *   zone=127.0.[0..255].[2;4]  as Postfix's reply filters
 *   zone*3, zone=127.0.0.4*-5  (dnsbl_sites only) a weight, default 1
 * The zone is lower-cased, without a trailing dot. */
typedef struct dnsbl_site {
    char *zone;
    char *filter_text;     /* "127.0.0.[2..11]" as written, NULL when none */
    int weight;            /* 1 unless "*N" */
    void *priv;            /* the compiled filter (dnsbl.c) */
} dnsbl_site_t;

/* Parse spec into s.  with_weight: accept "*N" (dnsbl_sites).  Returns 0,
 * or -1 with a one-line reason in err ("bad reply filter \"127.0.0.x\"",
 * "empty DNS list name", "bad weight \"*x\""); err is reset first.
 *
 * Strict: a filter has exactly four octets, each a number 0..255 or a
 * bracketed set of ';'-separated numbers and a..b ranges (a <= b, no empty
 * item); a zone is dot-separated labels of letters, digits, '-' and '_'
 * (1..63 octets each, at most 253 in all); a weight is an optional sign
 * and at most seven digits (|N| <= 1000000, so sums cannot overflow).
 * s is zeroed first and holds nothing to free after a failure. */
int dnsbl_site_parse(const char *spec, bool with_weight, dnsbl_site_t *s, buf_t *err);
void dnsbl_site_free(dnsbl_site_t *s);
/* Does the dotted-quad answer addr satisfy the site's filter?  Without a
 * filter: any address in 127.0.0.0/8.  Anything but a dotted quad (IPv6
 * text, garbage) never matches.  Callers classify the answer first
 * (dnsbl_classify): an error code can satisfy a wide filter. */
bool dnsbl_site_match(const dnsbl_site_t *s, const char *addr);

/* The DNS name to look up for a client address in zone:
 * "192.0.2.1" -> "1.2.0.192.ZONE"; IPv6 -> 32 nibbles, least significant
 * first ("...8.b.d.0.1.0.0.2.ZONE"); an IPv4-mapped IPv6 address is
 * treated as IPv4.  For a domain (RHSBL): "DOMAIN.ZONE" with DOMAIN
 * lower-cased and without a trailing dot.  Returns false when the result
 * would not be a valid DNS name (over 253 octets, a label over 63, an empty
 * label, a character other than letters, digits, '-' and '_'), when addr
 * is not an IP address, and, like Postfix, for a domain that is an address
 * ("[192.0.2.1]", or a last label of digits only: lists refuse "IP
 * queries").  The zone is lower-cased and loses a trailing dot too.  out is
 * reset first; it is empty after false. */
bool dnsbl_query_name_addr(const char *addr, const char *zone, buf_t *out);
bool dnsbl_query_name_domain(const char *domain, const char *zone, buf_t *out);

/* Answers that are not listings but signs of trouble:
 *   DNSBL_ANS_LISTED     in 127.0.0.0/8, not an error code
 *   DNSBL_ANS_ERRCODE    127.255.255.0/24 (Spamhaus-style "your resolver
 *                        is refused / over quota" codes)
 *   DNSBL_ANS_FOREIGN    outside 127.0.0.0/8 (wildcards aimed at
 *                        abusers of public resolvers), or not an IPv4 address */
typedef enum { DNSBL_ANS_LISTED, DNSBL_ANS_ERRCODE, DNSBL_ANS_FOREIGN } dnsbl_ans_t;
dnsbl_ans_t dnsbl_classify(const char *addr);
const char *dnsbl_ans_name(dnsbl_ans_t a);   /* "listed", "error code", "foreign" */

/* ------------------------------------------------------------- templates */

/* Expand a Postfix reply template: $name, ${name}, ${name?text} (text
 * when name is non-empty), ${name:text} (text when name is empty), $$ is
 * a literal '$'; text inside ${...?...} is itself expanded.  get returns
 * a name's value or NULL when the name is unknown (then the reference is
 * copied as written).  Control characters in values become '?'.
 *
 * Details, as Postfix's mac_expand: a name is letters, digits and '_';
 * $(name) is accepted like ${name}; a '$' not followed by a name, '$', '{'
 * or '(' is literal, and so is a "${" that is never closed (the rest is
 * copied as written); braces inside the conditional text nest.  Only the
 * template is expanded, never a value (a value holding "$x" stays "$x").
 * "Control characters" means every byte outside printable ASCII (also TAB,
 * DEL and 8-bit bytes: an SMTP reply is ASCII).  Nesting deeper than 16
 * levels is copied as written.  out is reset first. */
typedef const char *(*template_get_t)(void *arg, const char *name, size_t len);
void template_expand(const char *tmpl, template_get_t get, void *arg, buf_t *out);

/* Postfix's checks on an expanded RBL reply (rbl_reject_reply): it must
 * start with a 4xx or 5xx code and a space; an enhanced status code may
 * follow, else "X.7.1"; the status code's class is forced to the reply
 * code's ("554 4.7.1 x" gives 5.7.1); an empty text becomes "Service
 * unavailable".  So "554 Service unavailable; ..." gives 554, "5.7.1",
 * "Service unavailable; ...".  text points into reply.  Returns false for
 * a reply without such a code: Postfix then logs "warning: rbl response
 * code configuration error: REPLY" and answers 450 4.7.1 Service
 * unavailable.  (The reply class fix-up of smtpd_dsn_fix is the caller's.) */
bool dnsbl_reply_parse(const char *reply, int *code, char *dsn, size_t dsn_size, const char **text);

/* ----------------------------------------------------------- list health */

/* Each list's health, checked with RFC 5782's test points: 127.0.0.1 must
 * not be listed (a list that lists it answers everything: dead, or
 * refusing us with a wildcard), and an answer in 127.255.255.0/24 is an
 * error code.  A broken list's answers are ignored until a later probe
 * passes; problems are logged once per period, and counted.  Not locked:
 * one tracker per event loop (worker). */
typedef struct dnsbl_health dnsbl_health_t;

dnsbl_health_t *dnsbl_health_new(unsigned period_s);
void dnsbl_health_free(dnsbl_health_t **h);

/* zone lists domains (RHSBL): its test point is "invalid.ZONE" (RFC 5782
 * section 5) instead of "1.0.0.127.ZONE", because domain lists such as
 * Spamhaus' DBL answer an IP query with a code in 127.0.0.0/8 and would
 * look broken.  Call once per zone at configuration time. */
void dnsbl_health_domain_list(dnsbl_health_t *h, const char *zone);

/* Before using zone's answers at time now: true when a probe is due (never
 * probed, the last one is older than the period, or the last one had no
 * answer); the caller then also looks up name (A record) and reports it
 * with dnsbl_health_probe.  Asking changes nothing: the answer stays true
 * for every caller until a probe is reported (so a session that resumes
 * after its lookup, or one that went away, needs no book-keeping).  A
 * clock that went back makes the probe due.  While a probe is due the
 * list's state from the last period still applies.  name is reset first,
 * and left empty when no probe is due. */
bool dnsbl_health_probe_due(dnsbl_health_t *h, const char *zone, time_t now, buf_t *name);
/* The probe's answer: listed = the test point returned an address in
 * 127.0.0.0/8 (the list answers everything), tempfail = no answer (the
 * state is kept and the probe is due again next time).  Not listed: the
 * list is healthy again, whatever broke it. */
void dnsbl_health_probe(dnsbl_health_t *h, const char *zone, bool listed, bool tempfail, time_t now);
/* The same with the answer itself, for a better reason text: addr is the
 * test point's first A record, NULL when it has none (NXDOMAIN/NODATA).
 * Any address is a failed probe (a foreign one too: a wildcard). */
void dnsbl_health_probe_answer(dnsbl_health_t *h, const char *zone, const char *addr, bool tempfail, time_t now);
/* An answer seen for zone was an error code or foreign: marks the list
 * broken until the next passing probe. */
void dnsbl_health_bad_answer(dnsbl_health_t *h, const char *zone, dnsbl_ans_t what, const char *addr, time_t now);
/* Is zone currently to be ignored?  reason (may be NULL; reset first) gets
 * why, worded to follow "dnsbl ZONE: " and precede ": ignoring its
 * answers", e.g. "answers the RFC 5782 test point 127.0.0.1 with 127.0.0.2",
 * "answered 127.255.255.254, an error code (queries refused or over
 * quota)", "answered 192.0.2.1, outside 127.0.0.0/8". */
bool dnsbl_health_broken(const dnsbl_health_t *h, const char *zone, buf_t *reason);
/* Returns true at most once per period per zone while it is broken (the
 * period runs from the last true answer, across recoveries): the
 * caller then logs the warning ("warning: dnsbl zen.dnsbl.test: answers
 * the RFC 5782 test point 127.0.0.1 with 127.0.0.2: ignoring its answers"). */
bool dnsbl_health_should_log(dnsbl_health_t *h, const char *zone, time_t now);
typedef struct dnsbl_health_stats { uint64_t probes, broken_probes, error_codes, foreign, ignored; } dnsbl_health_stats_t;
/* probes: probes answered (tempfail not counted); broken_probes: those
 * that failed; error_codes, foreign: dnsbl_health_bad_answer calls;
 * ignored: answers dropped because their list was broken (the caller
 * calls dnsbl_health_ignored for each).  An unknown zone has all zero. */
void dnsbl_health_ignored(dnsbl_health_t *h, const char *zone);
void dnsbl_health_get_stats(const dnsbl_health_t *h, const char *zone, dnsbl_health_stats_t *s);

#endif
