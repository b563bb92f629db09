/*
 * greylist: the check_greylist restriction (postgrey/gld behaviour on the
 * state store) and what `moat greylist` needs to read and edit entries.
 * See docs/greylist.md.
 */
#ifndef MOAT_POLICY_GREYLIST_H
#define MOAT_POLICY_GREYLIST_H

#include <stdbool.h>
#include <time.h>

#include "config/config.h"
#include "core/buf.h"
#include "policy/sstep.h"

typedef struct greylist greylist_t;

/* Compile the greylist_* parameters of p (tables against config_dir).
 * NULL with "parameter: message" in err (a table that does not open, an
 * unknown greylist_identity, greylist_identity = spf before check_spf
 * exists). */
greylist_t *greylist_new(const params_t *p, const char *config_dir, buf_t *err);
void greylist_free(greylist_t **g);
/* Has a table or list file of the allow lists changed on disk? */
bool greylist_tables_changed(const greylist_t *g);

/* check_greylist: decides at RCPT (elsewhere DUNNO with a trace line).
 * SS_REJECT "451 4.7.1 ... Greylisted ..." for a triplet still inside its
 * delay; SS_DUNNO when it passed (then c->prepend may get X-Greylist:),
 * allowed, or the store failed with state_store_fail_action = skip. */
ss_status_t greylist_step(greylist_t *g, ss_ctx_t *c);

/* ---- pure helpers (the step, `moat greylist`, unit tests, the fuzzer) ---- */

/* The sender as a triplet sees it (postgrey's substitutions): lower
 * case; BATV tags (prvs=TAG=local, prvs=local=TAG, msprvs1=TAG=local,
 * btv1==TAG==local) stripped; SRS0/SRS1 addresses turned back into the
 * original address; a "+extension" dropped; every run of digits that
 * stands alone between non-word characters ("bounce-1234-56") replaced
 * by '#'.  The null sender stays "".  out is reset first; it is never
 * longer than sender. */
void greylist_sender_norm(const char *sender, buf_t *out);

/* The client network of addr ("192.0.2.77" with 24 -> "192.0.2.0",
 * "2001:db8:1:2::5" with 64 -> "2001:db8:1:2::"); an IPv4-mapped IPv6
 * address counts as IPv4.  false when addr is not an address. */
bool greylist_ip_identity(const char *addr, int v4bits, int v6bits, buf_t *out);
/* The registrable (organisational) domain of a host name per the Public
 * Suffix List ("mx1.mail.example.co.uk" -> "example.co.uk"); false for a
 * public suffix itself, a bare label or an unusable name. */
bool greylist_org_domain(const char *name, buf_t *out);

/* A triplet's stored value: "<first_seen> <last_seen> <passed 0|1>". */
typedef struct grey_rec {
    long long first, last;
    bool passed;
} grey_rec_t;
bool greylist_rec_parse(const char *value, grey_rec_t *r);
void greylist_rec_format(const grey_rec_t *r, buf_t *out);

typedef enum {
    GD_NEW,      /* no record: create it, 451 for the whole delay */
    GD_WAIT,     /* retried too soon: 451 for *secs more */
    GD_PASS,     /* first retry inside the window: pass, delayed *secs */
    GD_PASSED,   /* passed before: pass */
    GD_EXPIRED,  /* first retry after the window: start again, as new */
} grey_decision_t;
grey_decision_t greylist_decide(const grey_rec_t *r, long long now, long long delay, long long window,
                                long long *secs);

/* "grey:<identity>/<sender>/<recipient>" (sender already normalised, ""
 * for the null sender; the recipient is lower-cased).  A sender or
 * recipient that would make the key too long for the store is replaced by
 * "#<hash>".  Split: the parts back (false for a key of another shape). */
void greylist_key(const char *identity, const char *sender, const char *rcpt, buf_t *out);
bool greylist_key_split(const char *key, buf_t *identity, buf_t *sender, buf_t *rcpt);

/* What `moat greylist allow/remove CLIENT` means by CLIENT under p's
 * settings: an address or network -> its client network, a host or
 * domain name -> itself, or (greylist_identity = fcrdns) its
 * organisational domain.  false with a reason in err. */
bool greylist_client_identity(const params_t *p, const char *client, buf_t *out, buf_t *err);

/* The X-Greylist: header line (with "\n") for a delay of secs at now. */
void greylist_header(const char *myhostname, long long secs, time_t now, buf_t *out);

#endif
