/*
 * spfcheck: the check_spf restriction (moat's name): the SPF result of
 * the client for the MAIL FROM identity (the HELO identity for <>, and
 * first with spf_check_helo = yes), mapped to an action by
 * spf_result_actions; Received-SPF: (RFC 7208 9.1) and
 * Authentication-Results: (RFC 8601) headers for mail that passes.  The
 * evaluation itself is spf.h's, through the session's DNS memo.  See
 * docs/spf.md.
 */
#ifndef MOAT_POLICY_SPFCHECK_H
#define MOAT_POLICY_SPFCHECK_H

#include "config/config.h"
#include "core/buf.h"
#include "policy/sstep.h"

typedef struct spf_check spf_check_t;

/* Compile spf_result_actions and the header switches of p.  NULL with
 * "file:line: spf_result_actions: ..." lines in err. */
spf_check_t *spf_check_new(const params_t *p, buf_t *err);
void spf_check_free(spf_check_t **sc);

/* The check_spf step (the engine calls it through its stateful-step
 * context; SS_PENDING while DNS answers are missing). */
ss_status_t spf_check_step(spf_check_t *sp, ss_ctx_t *c);

/* The SPF-authenticated domain of st's sender, for greylist_identity =
 * spf: 1 with the domain in out when the MAIL FROM (or, for <>, HELO)
 * identity passes; 0 when it does not; SS_PENDING-style -1 while DNS
 * answers are missing. */
int spf_check_pass_domain(ss_ctx_t *c, char *out, size_t size);

#endif
