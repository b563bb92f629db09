/*
 * pool: a small thread pool for blocking disk work (open, write, fsync,
 * rename) so the event loop never waits on the disk.
 *
 * work(arg) runs on a pool thread and must not touch loop-owned state
 * beyond arg; done(arg) then runs on the loop thread, in the next loop
 * iteration.  Jobs submitted with the same non-NULL `chain` key run one at
 * a time in submission order (a message's writes, then its fsync, then its
 * rename); other jobs run in parallel on `nthreads` threads.
 */
#ifndef MOAT_CORE_POOL_H
#define MOAT_CORE_POOL_H

struct event_base;
typedef struct pool pool_t;
typedef void (*pool_fn)(void *arg);

pool_t *pool_new(struct event_base *base, int nthreads);
void pool_submit(pool_t *p, const void *chain, pool_fn work, pool_fn done, void *arg);
/* Jobs queued or running (for drain at shutdown). */
unsigned pool_pending(const pool_t *p);
/* Wait for every job to finish, run their done callbacks, stop threads. */
void pool_free(pool_t **p);

#endif
