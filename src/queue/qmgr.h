/*
 * qmgr: the queue manager.  Takes queue IDs (new commits, start-up
 * recovery, the deferred queue's scans, the control socket), reads each
 * message's envelope, routes its pending recipients (route.h), groups them
 * by destination (transport + next hop) into delivery requests, runs the
 * requests within each destination's concurrency limit and each
 * transport's process limit, records every result durably in the queue
 * file, sends non-delivery notices (bounce.h), and moves what is left to
 * deferred/ with a backoff.  docs/queue.md has the design.
 *
 * Everything runs on the loop thread; disk work (reading envelopes, marks,
 * logs, Maildir delivery, notices, renames) runs on the pool; SMTP/LMTP
 * deliveries run on the loop in smtpc.
 */
#ifndef MOAT_QUEUE_QMGR_H
#define MOAT_QUEUE_QMGR_H

#include "config/config.h"
#include "core/buf.h"
#include "core/pool.h"
#include "dns/dns.h"
#include "queue/spool.h"

struct event_base;
typedef struct qmgr qmgr_t;

/* A queue manager on base.  cfg is borrowed: the caller keeps it alive
 * until qmgr_free (later configurations given to qmgr_set_config belong
 * to the queue manager).  dns may be NULL (then only literal next hops
 * such as [127.0.0.1]:25 work); the queue manager takes its own reference.
 * Starts the deferred queue's scan timer (a first scan at once).  NULL
 * with err when the routing tables cannot be opened. */
qmgr_t *qmgr_new(struct event_base *base, pool_t *pool, spool_t *spool, const config_t *cfg,
                 dns_t *dns, buf_t *err);
/* After a reload: messages loaded from now on are routed with cfg, which
 * the queue manager now owns (freed when the last request that uses it
 * has finished; requests in flight finish with the configuration they
 * started with).  Also rescans active/ for messages it does not know
 * (released from hold/).  -1 with err (cfg stays the caller's) when the
 * routing tables cannot be opened: the previous configuration stays. */
int qmgr_set_config(qmgr_t *q, config_t *cfg, dns_t *dns, buf_t *err);
/* A message is in active/ (committed, recovered, released). */
void qmgr_enqueue(qmgr_t *q, const char *queue_id);
/* The control socket's handler (control.h's qctl_handler_fn, arg = q):
 * "flush" (every deferred message due now, dead destinations revived),
 * "flush ID", "rescan", "ping". */
void qmgr_control(void *arg, const char *cmd, const char *cmd_arg, buf_t *reply);
/* Shutdown: start nothing new (deliveries, loads, scans); what is in
 * flight finishes and is recorded.  Messages stay in active/ and are
 * recovered at the next start. */
void qmgr_stop(qmgr_t *q);
/* Work in flight: deliveries and the queue manager's pool jobs (shutdown
 * waits for 0). */
unsigned qmgr_busy(const qmgr_t *q);
/* Frees everything.  Call it after qmgr_busy() reached 0; a queue manager
 * freed with work in flight finishes freeing itself when the last of it
 * completes (keep the pool and the spool alive until then). */
void qmgr_free(qmgr_t **q);

/* Local delivery to a Maildir (blocking; pool threads).  Returns 0 and
 * the file name in detail, or -1 with the reason in detail. */
int local_deliver_maildir(const params_t *params, const qfile_t *q, size_t rcpt_index,
                          buf_t *detail);
/* Mailbox directory name for a recipient local part: lower-cased, address
 * extension removed per recipient_delimiter, unsafe bytes escaped (%XX) so
 * the name can never leave mail_spool_directory. */
void local_mailbox_name(const char *local, const char *delimiters, buf_t *out);

/* local_deliver_maildir() with the two parameter values given directly:
 * spool_root is mail_spool_directory (must end in '/'), delimiters is
 * recipient_delimiter. */
int local_deliver_to(const char *spool_root, const char *delimiters, const qfile_t *q,
                     size_t rcpt_index, buf_t *detail);

#endif
