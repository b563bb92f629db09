/*
 * spf-private: the pieces of the SPF evaluator shared by its files
 * (spf_record.c: record syntax; spf_macro.c: macros and names; spf.c: the
 * evaluator and the header) and by the unit tests.  Nothing here does
 * DNS or reads a clock.
 */
#ifndef MOAT_POLICY_SPF_PRIVATE_H
#define MOAT_POLICY_SPF_PRIVATE_H

#include "policy/spf.h"

#include <stdbool.h>
#include <stddef.h>

/* RFC 7208 section 4.6.4 and our own bounds. */
enum {
    SPF_MAX_DNS_TERMS = 10,     /* include, a, mx, ptr, exists, redirect */
    SPF_MAX_MX = 10,            /* more MX records than this: permerror */
    SPF_MAX_PTR = 10,           /* PTR names beyond this are ignored */
    SPF_MAX_VOID = 2,           /* NXDOMAIN / empty answers */
    SPF_NAME_MAX = 253,         /* a domain name in text, no final dot */
    SPF_LABEL_MAX = 63,
    SPF_EXPAND_MAX = 8192,      /* one macro-string's expansion */
    SPF_DIGITS_MAX = 128,       /* a digit transformer above this keeps every part anyway */
};

typedef enum {
    SPF_M_ALL,
    SPF_M_INCLUDE,
    SPF_M_A,
    SPF_M_MX,
    SPF_M_PTR,
    SPF_M_IP4,
    SPF_M_IP6,
    SPF_M_EXISTS,
} spf_mech_t;

typedef struct spf_term {
    char qual;                 /* '+', '-', '~' or '?' (given or implied '+') */
    spf_mech_t mech;
    char *text;                /* the term as written, qualifier included */
    char *spec;                /* the domain-spec; NULL when the term has none */
    int cidr4, cidr6;          /* prefix lengths, 32 and 128 unless given */
    unsigned char net[16];     /* ip4 (first 4 octets) and ip6 networks */
} spf_term_t;

typedef struct spf_record {
    spf_term_t *terms;         /* mechanisms, in order */
    size_t n;
    char *redirect;            /* the redirect= domain-spec, NULL when none */
    char *exp;                 /* the exp= domain-spec, NULL when none */
    bool has_all;              /* an "all" anywhere: redirect= is ignored */
} spf_record_t;

/* ------------------------------------------------------- spf_record.c */

/* Is txt an SPF version 1 record: "v=spf1" in any case, then a space or
 * the end (RFC 7208 section 4.5)? */
bool spf_is_record(const char *txt);
/* Parse a whole record (every term checked before any is evaluated:
 * section 4.6).  -1 with the offending term named in why; r holds
 * nothing to free then. */
int spf_record_parse(const char *txt, spf_record_t *r, buf_t *why);
void spf_record_free(spf_record_t *r);

/* -------------------------------------------------------- spf_macro.c */

typedef enum {
    SPF_MS_DOMAIN,             /* a domain-spec: no c, r, t; no spaces */
    SPF_MS_MODIFIER,           /* an unknown modifier's value: any letter */
    SPF_MS_EXPLAIN,            /* exp= text: any letter, spaces allowed */
} spf_ms_kind_t;

/* The syntax of a macro-string of len octets (section 7.1); for
 * SPF_MS_DOMAIN also the domain-end rule ("." toplabel ["."], or a macro
 * at the end).  false with a reason in why (appended). */
bool spf_macro_string_ok(const char *s, size_t len, spf_ms_kind_t kind, buf_t *why);
/* RFC 7208's toplabel: letters and digits with at least one letter, or
 * letters, digits and inner '-'. */
bool spf_toplabel_ok(const char *s, size_t len);

/* The identity checked (section 4.1 and 2.3): the sender address with
 * "postmaster" for an empty local-part, or "postmaster@HELO" for <> and
 * for the HELO check, split into its local-part and domain (without a
 * final dot). */
typedef struct spf_identity {
    buf_t sender, local, domain;
    bool helo;                 /* the HELO identity */
} spf_identity_t;
void spf_identity_init(spf_identity_t *id, const spf_request_t *req);
void spf_identity_free(spf_identity_t *id);

/* What the macro letters expand to.  p is asked for through get_p only
 * when a macro uses it (NULL get_p: "unknown"); get_p returns NULL while
 * the answer is not known yet (the expansion is then pending). */
typedef struct spf_macro_env {
    const char *s, *l, *o, *d, *h, *r;
    const char *i;             /* dotted quad, or 32 dot-separated nibbles */
    const char *c;             /* dotted quad, or RFC 5952 text */
    const char *v;             /* "in-addr" or "ip6" */
    long long t;
    const char *(*get_p)(void *arg);
    void *arg;
} spf_macro_env_t;

/* The letters that depend only on the request: s l o h r i c v t, with
 * d = the identity's domain; get_p unset.  Pointers borrowed from id, i
 * (%{i}) and c (%{c}). */
void spf_env_base(spf_macro_env_t *env, const spf_request_t *req, const spf_identity_t *id, const char *i,
                  const char *c, int fam);

/* Expand s[0, len) into out (appended).  0 done; 1 pending (%{p} not
 * known yet); -1 a malformed macro, or an expansion over SPF_EXPAND_MAX,
 * with why (appended). */
int spf_expand(const char *s, size_t len, const spf_macro_env_t *env, spf_ms_kind_t kind, buf_t *out, buf_t *why);

/* The client address: 4 or 6 (an IPv4-mapped IPv6 address is 4, its
 * IPv4 part in ip[0..3]), 0 when text is not an address. */
int spf_ip_parse(const char *text, unsigned char ip[16]);
/* %{i}, %{c} and the reverse (PTR) name of an address of family fam. */
void spf_ip_dotted(int fam, const unsigned char *ip, buf_t *out);
void spf_ip_text(int fam, const unsigned char *ip, buf_t *out);
void spf_ip_reverse_name(int fam, const unsigned char *ip, buf_t *out);
/* Is the address ip (family fam) inside net/prefix? */
bool spf_ip_in(int fam, const unsigned char *ip, const unsigned char *net, int prefix);

/* A domain as check_host() takes it (section 4.3): ASCII, labels of 1..63
 * octets, at most 253 octets, two labels or more, a toplabel as RFC 7208
 * defines it (so no domain literals).  A final dot is allowed. */
bool spf_domain_ok(const char *d);
/* A name after macro expansion, made ready to look up (section 7.3):
 * without its final dot, and cut from the left, whole labels at a time,
 * to SPF_NAME_MAX octets.  Returns false when the result still cannot be
 * a query name (empty, an empty label, a label over 63 octets, octets no
 * host name has): such names are never looked up. */
bool spf_query_name(buf_t *name);

#endif
