/*
 * qmgr: hands queued messages to delivery and retries the ones that
 * could not be delivered.  (The full queue manager with deferred/hold
 * queues, transports and bounces is a later issue; this one delivers
 * mydestination recipients to Maildirs, honours a queue file's REDIRECT
 * and BCC records, and defers FILTER messages until content filters
 * arrive.  It never looks into hold/.)
 *
 * Every delivery runs on the pool: read the queue file, deliver each
 * recipient not yet done, record each success durably in the queue file,
 * and remove the file once every recipient is done.  A recipient that
 * fails is retried after queue_run_delay: at-least-once, never zero.
 */
#ifndef MOAT_QUEUE_QMGR_H
#define MOAT_QUEUE_QMGR_H

#include "config/config.h"
#include "core/pool.h"
#include "queue/spool.h"

struct event_base;
typedef struct qmgr qmgr_t;

qmgr_t *qmgr_new(struct event_base *base, pool_t *pool, spool_t *spool, const params_t *params);
/* After a reload: new deliveries use these parameters (the caller keeps
 * params alive until the next call or qmgr_free).  Also rescans active/
 * on the pool and enqueues the IDs it does not know: that is how a held
 * message moved from hold/ to active/ gets delivered. */
void qmgr_set_params(qmgr_t *q, const params_t *params);
/* A message was committed to active/ (or found there at start-up). */
void qmgr_enqueue(qmgr_t *q, const char *queue_id);
/* Deliveries in flight (shutdown waits for 0). */
unsigned qmgr_busy(const qmgr_t *q);
void qmgr_free(qmgr_t **q);

/* Local delivery to a Maildir (blocking; pool threads).  Returns 0 and
 * the file name in detail, or -1 with the reason in detail. */
int local_deliver_maildir(const params_t *params, const qfile_t *q, size_t rcpt_index,
                          buf_t *detail);
/* Mailbox directory name for a recipient local part: lower-cased, address
 * extension removed per recipient_delimiter, unsafe bytes escaped (%XX) so
 * the name can never leave mail_spool_directory. */
void local_mailbox_name(const char *local, const char *delimiters, buf_t *out);

/* --- Added by the queue module (src/queue/local.c) --- */

/* local_deliver_maildir() with the two parameter values given directly:
 * spool_root is mail_spool_directory (must end in '/'), delimiters is
 * recipient_delimiter.  The delivery job calls this with values copied on
 * the loop thread (a reload may free the params_t meanwhile). */
int local_deliver_to(const char *spool_root, const char *delimiters, const qfile_t *q,
                     size_t rcpt_index, buf_t *detail);

#endif
