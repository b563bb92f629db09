/*
 * spf: a complete RFC 7208 evaluator on moat's asynchronous resolver
 * (docs/spf.md).  moat does not use libspf2: its DNS is synchronous and
 * its last release is from 2012.
 *
 * Evaluation is replayable, like every DNS step of the restriction
 * engine: spf_eval() runs check_host() from the top against the session's
 * memo (dns/dns.h).  When an answer it needs is not in the memo yet it
 * asks for it — and for every other query it can already name (all MX
 * hosts' addresses, the targets of a PTR answer, ...), so independent
 * lookups run in parallel — and returns SPF_PENDING; the caller waits for
 * the memo's wake and calls spf_eval() again, which then gets further.
 * The answers stay in the memo, so a replay costs no DNS traffic.  The
 * RFC's limits (10 DNS-querying terms, 10 MX names, 10 PTR names, 2 void
 * lookups) are counted per evaluation, so a record loop ends in
 * permerror, never in recursion without end.
 */
#ifndef MOAT_POLICY_SPF_H
#define MOAT_POLICY_SPF_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "dns/dns.h"

typedef enum {
    SPF_NONE,
    SPF_NEUTRAL,
    SPF_PASS,
    SPF_FAIL,
    SPF_SOFTFAIL,
    SPF_TEMPERROR,
    SPF_PERMERROR,
    SPF_PENDING,   /* not a result: call again when the memo wakes */
} spf_result_t;

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror". */
const char *spf_result_name(spf_result_t r);
/* The reverse; -1 when unknown. */
int spf_result_parse(const char *s);

/* What one evaluation is about (RFC 7208 section 4.1). */
typedef struct spf_request {
    const char *ip;          /* the client address, IPv4 or IPv6 text */
    const char *sender;      /* MAIL FROM address ("" for <>) */
    const char *helo;        /* the HELO/EHLO name ("" when unknown) */
    const char *receiver;    /* this host's name, for %{r} (myhostname) */
    bool helo_identity;      /* check the HELO identity (postmaster@helo) instead of MAIL FROM */
    long long now;           /* seconds since the epoch, for %{t} */
    const char *default_explanation;  /* the explanation of a fail whose domain gives none
                                       * (a macro-string, expanded like exp= text); NULL:
                                       * SPF_DEFAULT_EXPLANATION's form below */
} spf_request_t;

typedef struct spf_answer {
    spf_result_t result;
    char domain[256];        /* the domain that was checked (sender's, or the HELO name) */
    char mechanism[256];     /* the term that matched ("ip4:192.0.2.0/24", "-all", "default"), "" */
    buf_t explanation;       /* fail: the exp= text after macro expansion, or the default explanation */
    buf_t problem;           /* permerror/temperror: what went wrong, naming the offending term */
    buf_t trace;             /* one line per step ("include:_spf.example.com -> pass"), when asked */
} spf_answer_t;

void spf_answer_init(spf_answer_t *a);
void spf_answer_reset(spf_answer_t *a);
void spf_answer_free(spf_answer_t *a);

/* Run check_host() for req with the answers in memo (see above).
 * trace: fill a->trace.  Returns a result, or SPF_PENDING. */
spf_result_t spf_eval(dns_memo_t *memo, const spf_request_t *req, bool trace, spf_answer_t *a);

/* The default explanation when a domain gives none (RFC 7208 6.2 leaves it
 * to the receiver): "See https://www.open-spf.org/Why?s=%{S}&i=%{I}&ip=%{C}&r=%{R}"
 * expanded like exp= text. */
#define SPF_DEFAULT_EXPLANATION "See https://www.open-spf.org/Why"

/* --- pure parts, for the unit tests and the fuzzers --- */

/* Syntax of one SPF record ("v=spf1 ..."): 0 when it parses, -1 with the
 * offending term in why. */
int spf_record_check(const char *record, buf_t *why);

/* Expand a macro-string (RFC 7208 section 7) for req, the current domain
 * and, for exp= text, exp = true (then c, r and t are allowed).  -1 with
 * a reason in why for a malformed macro. */
int spf_macro_expand(const char *in, const spf_request_t *req, const char *domain, bool exp, buf_t *out,
                     buf_t *why);

/* The Received-SPF header field value (RFC 7208 section 9.1), without the
 * field name: "pass (mx.example.org: domain of a@example.com designates
 * 192.0.2.1 as permitted sender) client-ip=192.0.2.1;
 * envelope-from="a@example.com"; helo=mail.example.com;" */
void spf_received_value(const spf_request_t *req, const spf_answer_t *a, buf_t *out);

#endif
