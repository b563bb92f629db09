/*
 * unverified: reject_unverified_sender and reject_unverified_recipient,
 * the restriction side of address verification (src/queue/verify.h).
 * See docs/verify.md.
 */
#ifndef MOAT_POLICY_UNVERIFIED_H
#define MOAT_POLICY_UNVERIFIED_H

#include <stdbool.h>

#include "policy/sstep.h"

/* sender: reject_unverified_sender (st->sender; the null sender and a
 * sender without a domain pass), else reject_unverified_recipient
 * (st->recipient).  Asks c->env->verify through the memo; answers as
 * Postfix: undeliverable -> unverified_*_reject_code "<addr>: Sender
 * address rejected: undeliverable address: host ... said: 550 ...";
 * in progress -> 450 4.1.x "Address verification in progress"; temporary
 * failure -> unverified_*_defer_code per unverified_*_tempfail_action. */
ss_status_t unverified_step(ss_ctx_t *c, bool sender);

#endif
