/*
 * dns: moat's asynchronous resolver.  libunbound runs on the caller's
 * libevent loop (ub_ctx_create_event: no thread, no child process, no
 * blocking call); in front of it moat keeps its own answer cache so a warm
 * answer costs one hash lookup and so the trace can say "from cache".
 * docs/dns.md ("The resolver") has the design and the figures.
 *
 *  - A, AAAA, MX, TXT, PTR, NS lookups, answers parsed into dns_answer_t
 *    (CNAME chains inside the answer followed).
 *  - Positive answers cached for their smallest TTL (at most a day),
 *    NXDOMAIN/NODATA for min(SOA TTL, SOA minimum) of the authority
 *    section (RFC 2308; at most an hour, 60 s without a SOA); temporary
 *    failures and TTL 0 are never cached.  At most opts.cache_max
 *    answers, the least recently used going first.
 *  - Identical in-flight queries (type + name, any case) are coalesced:
 *    one upstream query, every waiter called back.
 *  - Every query has a deadline (opts.timeout_ms); libunbound retransmits
 *    inside it; when it passes, the waiters get DNS_TEMPFAIL "timeout".
 *
 * Two layers: dns_t (the process-wide resolver and cache) and dns_memo_t
 * (one per session or `moat check` run: the answers this session has seen,
 * so that a restriction evaluated twice sees the same data, and the
 * session's wake-up when a query it waits for completes).
 */
#ifndef MOAT_DNS_DNS_H
#define MOAT_DNS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct event_base;

typedef enum {
    DNS_T_A = 1,
    DNS_T_NS = 2,
    DNS_T_PTR = 12,
    DNS_T_MX = 15,
    DNS_T_TXT = 16,
    DNS_T_AAAA = 28,
} dns_type_t;

typedef enum {
    DNS_OK,        /* rr[0..n-1] hold the records, n >= 1 */
    DNS_NODATA,    /* the name exists, with no record of this type */
    DNS_NXDOMAIN,  /* the name does not exist */
    DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, resolver unreachable, malformed answer */
} dns_status_t;

typedef struct dns_rr {
    /* A/AAAA: the address as text ("192.0.2.1", "2001:db8::1");
     * NS/PTR/MX: the host name, lower case, no trailing dot ("" for the
     * root, as in a null MX "0 ."); TXT: the character-strings of one
     * record concatenated (RFC 7208 style), bytes < 0x20 or 0x7f as '?'. */
    char *data;
    unsigned pref;  /* MX preference; 0 for other types */
} dns_rr_t;

typedef struct dns_answer {
    dns_type_t type;
    char *name;           /* the query name, lower case, no trailing dot */
    dns_status_t status;
    char error[96];       /* DNS_TEMPFAIL: "SERVFAIL", "timeout after 10 s", "REFUSED", ... */
    size_t n;
    dns_rr_t *rr;         /* MX: sorted by preference, then name */
    uint32_t ttl;         /* seconds this answer may be cached */
    int refs;             /* private: dns_answer_ref/unref */
} dns_answer_t;

typedef struct dns_opts {
    /* "127.0.0.1@5353, [::1]:53 ..." (unbound's addr@port and Postfix's
     * [addr]:port both accepted): forward every query there.  NULL or ""
     * means the system resolver (the nameservers of /etc/resolv.conf). */
    const char *forwarders;
    unsigned timeout_ms;  /* per query; 0 means 10000 */
    size_t cache_max;     /* answers kept; 0 means 100000 */
    bool no_cache;        /* bypass moat's cache (benchmarks and diagnostics:
                           * libunbound's own cache still answers) */
} dns_opts_t;

typedef struct dns dns_t;

/* NULL with a message in err (an unparsable forwarder, libunbound refusing
 * an option, resolv.conf unreadable). */
dns_t *dns_new(struct event_base *base, const dns_opts_t *opts, buf_t *err);
/* Reference counted: the server holds one reference, every memo another,
 * so a resolver replaced on reload lives until its last session ends.
 * The last unref cancels what is in flight (no callback runs) and frees. */
dns_t *dns_ref(dns_t *d);
void dns_unref(dns_t **d);

const char *dns_type_name(dns_type_t t);   /* "A", "MX", ... */
int dns_type_parse(const char *s);         /* any case; -1 when unknown */
const char *dns_status_name(dns_status_t s);   /* "OK", "NODATA", "NXDOMAIN", "TEMPFAIL" */
/* "127.0.0.2 127.0.0.4", "10 mx.example.test", "NXDOMAIN", "TEMPFAIL (timeout after 2 s)" */
void dns_answer_format(const dns_answer_t *a, buf_t *out);

dns_answer_t *dns_answer_ref(dns_answer_t *a);
void dns_answer_unref(dns_answer_t **a);

/* ----------------------------------------------------------- raw lookups */

typedef struct dns_query dns_query_t;
/* a is borrowed for the call (dns_answer_ref to keep it); from_cache says
 * whether moat's cache answered without any network query (also true for
 * the NXDOMAIN of an impossible name, which needs no query). */
typedef void (*dns_cb_t)(dns_answer_t *a, bool from_cache, void *arg);

/* Look name up.  A cached answer calls cb before dns_lookup returns and
 * the result is NULL.  Otherwise the result is a handle and cb runs once,
 * later, from the loop (never from inside libunbound), unless
 * dns_cancel(handle) ran first; the handle is dead once cb has started.
 * Inside cb the caller may look up, cancel other handles, or drop its
 * dns_t reference (then no further callback runs).  name may have a
 * trailing dot and any case; a syntactically impossible name (empty
 * label, label over 63 octets, name over 253, or octets no host name has:
 * controls, space, '\', non-ASCII) answers NXDOMAIN at once, without a
 * query. */
dns_query_t *dns_lookup(dns_t *d, dns_type_t type, const char *name, dns_cb_t cb, void *arg);
void dns_cancel(dns_query_t *q);

typedef struct dns_stats {
    uint64_t lookups;     /* dns_lookup calls */
    uint64_t cache_hits;
    uint64_t coalesced;   /* lookups that joined an identical in-flight query */
    uint64_t queries;     /* queries handed to libunbound */
    uint64_t timeouts;    /* questions whose deadline passed */
    uint64_t tempfails;   /* questions answered DNS_TEMPFAIL, including timeouts */
    size_t in_flight;     /* questions with waiters still to be answered */
    size_t cached;        /* answers in moat's cache now */
} dns_stats_t;
void dns_get_stats(const dns_t *d, dns_stats_t *s);

/* --------------------------------------------------- per-session memo */

typedef struct dns_memo dns_memo_t;

/* How a memo answer was obtained, for the trace. */
typedef struct dns_how {
    bool cached;          /* moat's cache had it */
    unsigned ms;          /* otherwise: milliseconds from query to answer */
} dns_how_t;

/* Append the trace text of a memo answer: "dns: MX example.test -> 10
 * mx.example.test (cache)", or "... (3 ms)". */
void dns_trace_answer(buf_t *out, const dns_answer_t *a, const dns_how_t *how);

/* wake(arg) runs from its own loop callback (never inside a dns_memo_*
 * call or a resolver callback) after a query that dns_memo_get returned
 * NULL for has completed; several completions may share one wake. */
dns_memo_t *dns_memo_new(dns_t *d, void (*wake)(void *arg), void *arg);
/* Cancels the memo's interest in every outstanding query (no wake after),
 * drops its answers and its resolver reference. */
void dns_memo_free(dns_memo_t **m);

/* The answer for (type, name): the memo's own, else the resolver cache's
 * (then kept in the memo), else the query is started (once per memo) and
 * the result is NULL: the caller returns "pending" and is woken later.
 * how may be NULL. */
const dns_answer_t *dns_memo_get(dns_memo_t *m, dns_type_t type, const char *name, dns_how_t *how);
/* Start the query now (if the memo does not have it yet) without asking
 * to be woken: prefetch for a check that will run later. */
void dns_memo_prefetch(dns_memo_t *m, dns_type_t type, const char *name);
/* Queries and dns_memo_ext operations started through this memo that
 * have not completed (`moat check` waits until this is 0). */
size_t dns_memo_outstanding(const dns_memo_t *m);
/* Forget the answers (keep the outstanding queries): called at the start
 * of each new SMTP command, so a long session sees fresh data and the
 * memo stays small. */
void dns_memo_clear(dns_memo_t *m);

/* ------------------------------- other asynchronous lookups in the memo */

/* The restriction engine's other waits (a policy service's answer, a
 * state-store read, an address-verification probe) use the same memo and
 * the same wake as DNS: a result is a string stored under a key the caller
 * chooses ("policy:inet:127.0.0.1:10023:<request digest>").  Cleared with
 * the DNS answers by dns_memo_clear. */
typedef struct memo_op memo_op_t;
/* Begin the work for key; call memo_op_done(op, value) later, on the loop,
 * exactly once, unless cancel(handle) ran first.  Returns the handle
 * cancel gets (may be NULL when start finished synchronously by calling
 * memo_op_done inside start: allowed). */
typedef void *(*memo_start_fn)(void *start_arg, const char *key, memo_op_t *op);
typedef void (*memo_cancel_fn)(void *handle);

/* The value stored under key; else starts the work (once per memo and
 * key) and returns NULL: the caller answers "pending" and is woken when
 * memo_op_done ran.  A NULL value given to memo_op_done is stored as "". */
const char *dns_memo_ext(dns_memo_t *m, const char *key, memo_start_fn start, memo_cancel_fn cancel,
                         void *start_arg);
void memo_op_done(memo_op_t *op, const char *value);
/* The event loop of the memo that started op (the resolver's loop), for
 * the work's own events.  Valid inside the memo_start_fn and while op is
 * outstanding; NULL once the memo that started it is gone. */
struct event_base *memo_op_base(const memo_op_t *op);

#endif
