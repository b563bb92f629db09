/*
 * qmgr-private: the queue manager's insides, shared by its files:
 *   qmgr.c         messages, configuration generations, routing, results
 *   qmgr-sched.c   destinations and transports: who may start next (pure)
 *   qmgr-jobs.c    the pool jobs: loading envelopes, recording results,
 *                  finishing a message (notices, expiry, backoff, removal),
 *                  local delivery
 *   qmgr-util.c    small pure helpers (delay format, DSN codes, log lines)
 * Nothing outside src/queue/qmgr*.c includes this header, except the unit
 * tests of the pure parts.
 */
#ifndef MOAT_QUEUE_QMGR_PRIVATE_H
#define MOAT_QUEUE_QMGR_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "queue/qmgr.h"
#include "queue/route.h"
#include "queue/smtpc.h"

/* ------------------------------------------------------------------ */
/* the scheduler (qmgr-sched.c): pure bookkeeping, no I/O, no clock     */

typedef struct qsched qsched_t;
typedef struct qdest qdest_t;
typedef struct qtrans qtrans_t;

/* Embedded in whatever is scheduled (a delivery request). */
typedef struct qitem {
    struct qitem *next;
    qdest_t *dest;
} qitem_t;

struct qtrans {
    qtrans_t *next;           /* every transport, in creation order */
    char *name;
    unsigned busy;            /* items started and not done */
    unsigned maxproc;         /* at most this many busy */
    unsigned dest_limit;      /* per destination */
    unsigned limits_seq;      /* the configuration generation the limits came from */
    qdest_t *ring_head, *ring_tail;   /* destinations that could start one now */
};

struct qdest {
    qdest_t *hnext;           /* hash chain */
    qdest_t *rnext;           /* the transport's ring */
    qtrans_t *tr;
    char *nexthop;            /* as routed; for local: the next hop, then the recipient */
    char *rcpt;               /* local transports: one destination per recipient; else NULL */
    unsigned hash;
    qitem_t *head, *tail;     /* waiting */
    size_t nqueued;
    unsigned busy;
    bool in_ring;
    long long dead_until;     /* usec; 0: alive */
    char *dead_text;          /* why it is skipped (the failure that killed it) */
    char dead_dsn[16];
};

qsched_t *qsched_new(void);
/* Frees destinations and transports; items are the caller's. */
void qsched_free(qsched_t **s);
qtrans_t *qsched_transport(qsched_t *s, const char *name);
void qsched_set_limits(qsched_t *s, qtrans_t *t, unsigned maxproc, unsigned dest_limit);
/* Find or create; rcpt non-NULL for per-recipient destinations. */
qdest_t *qsched_dest(qsched_t *s, qtrans_t *t, const char *nexthop, const char *rcpt);
/* Queue an item for d (FIFO). */
void qsched_push(qsched_t *s, qdest_t *d, qitem_t *it);
/* The next item that may start: transports in turn, within a transport
 * its ready destinations in turn, so one busy destination never starves
 * the others.  The item counts as busy until qsched_done.  NULL: nothing
 * may start now. */
qitem_t *qsched_next(qsched_t *s);
/* A started item finished: its slot is free again.  May free the
 * destination (idle and alive): do not use it->dest afterwards. */
void qsched_done(qsched_t *s, qitem_t *it);
/* Is d skipped (dead) at time now?  A death that has passed revives d. */
bool qsched_is_dead(qsched_t *s, qdest_t *d, long long now);
/* d could not be reached: skip it until `until`; its waiting items are
 * the caller's to fail (qsched_take). */
void qsched_kill(qsched_t *s, qdest_t *d, long long until, const char *text, const char *dsn);
/* Take d's next waiting item without starting it (NULL: none).  Like
 * qsched_done, may free d when it becomes idle. */
qitem_t *qsched_take(qsched_t *s, qdest_t *d);
/* Every dead destination is alive again (flush). */
void qsched_revive_all(qsched_t *s);
/* Free idle destinations whose death has passed. */
void qsched_gc(qsched_t *s, long long now);
size_t qsched_ndest(const qsched_t *s);
/* The first transport (then ->next). */
qtrans_t *qsched_transports(qsched_t *s);

/* ------------------------------------------------------------------ */
/* pure helpers (qmgr-util.c)                                           */

/* Postfix's delay style: two decimals below 1 s, one below 10 s, whole
 * seconds above, trailing zeros dropped ("0.05", "1.2", "12", "0"). */
void qmgr_fmt_delay(char *out, size_t n, long long usec);
/* A leading RFC 3463 code ("5.1.1 text") goes to dsn and *rest points
 * after it (and its spaces); otherwise dsn = def and *rest = text. */
void qmgr_split_dsn(const char *text, const char *def, char dsn[16], const char **rest);
/* Seconds until the next attempt: the message's age, within [min, max]. */
long long qmgr_backoff(long long age_sec, long long min_sec, long long max_sec);
/* addr, with "@domain" added when it has none. */
void qmgr_qualify(const char *addr, const char *domain, buf_t *out);

/* One recipient line's text after "ID: ", Postfix's field order:
 * to=<TO>, [orig_to=<ORIG>, ]relay=RELAY, delay=D, delays=a/b/c/d, dsn=X, status=STATUS (TEXT)[, tls=V/CIPHER] */
typedef struct qmgr_logline {
    const char *to, *orig;     /* orig NULL: none */
    const char *relay;
    long long arrival, t_load, t_start, t_conn, t_end;   /* usec */
    const char *dsn, *status, *text;
    const char *tls;           /* "TLSv1.3/TLS_AES_256_GCM_SHA384" after the status text; NULL/"": plaintext */
} qmgr_logline_t;
void qmgr_format_rcpt(const qmgr_logline_t *l, buf_t *out);

/* ------------------------------------------------------------------ */
/* the queue manager's state (qmgr.c), seen by the jobs (qmgr-jobs.c)    */

/* One configuration generation: what routing and delivery read. */
typedef struct qgen {
    const config_t *cfg;
    config_t *owned;          /* cfg, when the queue manager frees it */
    router_t *router;
    dns_t *dns;
    smtpc_self_t self;
    char **listen;
    size_t nlisten;
    unsigned seq;             /* distinguishes generations */
    int refs;                 /* the current one + messages + requests */
    /* main.cf values, read once */
    long long min_backoff, max_backoff, run_delay, max_lifetime, bounce_lifetime, delay_warning;
    long long active_limit, rcpt_limit, bounce_size_limit;
    char *myhostname, *myorigin, *double_bounce_sender, *notice_rcpt;
} qgen_t;

enum { RR_NONE, RR_SENT, RR_BOUNCE, RR_DEFER };

/* A recipient's outcome in this round (loop-owned). */
typedef struct qrcpt {
    int result;
    char dsn[16];
    char *text, *reply, *relay;
    long long when;
} qrcpt_t;

enum { M_WAIT, M_LOADING, M_ACTIVE, M_FINISHING };

typedef struct qmsg {
    struct qmsg *hnext;       /* id hash */
    struct qmsg *lnext;       /* the load FIFO */
    struct qmgr *q;
    char id[QUEUE_ID_MAX];
    int state;
    bool again;               /* enqueued again while busy: look again afterwards */
    bool scanned;             /* found by a scan: a vanished file is no news */
    qfile_t qf;               /* M_ACTIVE/M_FINISHING: the envelope (content not loaded) */
    qrcpt_t *r;               /* per recipient */
    qgen_t *gen;              /* routed with */
    long long t_load;         /* usec: taken by the queue manager */
    unsigned nreq;            /* requests (and their record jobs) not finished */
} qmsg_t;

/* A delivery unit: one address sent, standing for one or more of the
 * message's recipients (a REDIRECT stands for all of them). */
typedef struct qunit {
    const char *addr;
    size_t *idx;
    size_t nidx;
    int result;               /* RR_* */
    char dsn[16];
    char *text, *reply;
} qunit_t;

typedef struct qreq {
    qitem_t item;             /* first: the scheduler's link */
    struct qmgr *q;
    qmsg_t *m;
    qgen_t *gen;
    const transport_t *t;
    char *tname, *nexthop;
    qunit_t *units;
    size_t nunit;
    const char *prog;         /* the agent, for log lines */
    char relay[300];
    bool dest_failed, suspended;
    long long t_start, t_conn, t_end;
    smtpc_request_t sreq;     /* smtp/lmtp */
    smtpc_rcpt_t *srcpt;
    /* local: values for the pool job */
    char *spool_root, *delims;
} qreq_t;

struct qmgr {
    struct event_base *base;
    pool_t *pool;
    spool_t *spool;
    qgen_t *cur;
    smtpc_t *smtpc;
    qsched_t *sched;
    qmsg_t **table;           /* id hash */
    size_t nbuckets;
    qmsg_t *load_head, *load_tail;   /* M_WAIT, in order */
    size_t nwait, nmem, nrcpt_mem;   /* waiting; in memory (loading..finishing); their recipients */
    size_t fd_limit;          /* messages in memory hold an fd each */
    unsigned busy;            /* deliveries + pool jobs in flight */
    unsigned pool_busy;       /* of which pool jobs */
    unsigned local_busy;      /* local deliveries on the pool */
    unsigned load_jobs;       /* load jobs in flight */
    struct pjob *pj_head, *pj_tail;  /* pool jobs waiting for a slot */
    char **retry_ids;         /* to enqueue again at the next scan tick */
    size_t nretry;
    struct event *scan_timer;
    bool scanning, flush_wanted, stopping, dead;
};

/* A pool job of the queue manager: queued in qmgr until a pool slot is
 * free, so a burst of queue work never keeps a session's commit waiting
 * behind it. */
typedef struct pjob {
    struct pjob *next;
    const void *chain;
    pool_fn work, done;
    void *arg;
} pjob_t;

/* qmgr.c */
void qmgr_pool_submit(struct qmgr *q, const void *chain, pool_fn work, pool_fn done, void *arg);
/* A pool job's done callback calls this first: false when the queue
 * manager is being freed (the job must only release what it holds). */
bool qmgr_job_finished(struct qmgr *q);
void qmgr_gen_unref(qgen_t **g);
void qmgr_msg_loaded(qmsg_t *m, int outcome, const char *err);
void qmgr_req_done(qreq_t *r);
/* The record job of r has run; fail_text: why a mark failed (or NULL).
 * Frees r. */
void qmgr_req_recorded(qreq_t *r, const char *fail_text);
void qmgr_req_free(qreq_t *r);
void qmgr_load_job_done(struct qmgr *q);
void qmgr_msg_finished(qmsg_t *m, int outcome, char **notices, size_t nnotices);
void qmgr_retry_later(struct qmgr *q, const char *id);

/* qmgr-jobs.c */
enum { LOAD_OK, LOAD_GONE, LOAD_CORRUPT, LOAD_ERROR };
enum { FIN_REMOVED, FIN_DEFERRED, FIN_GONE, FIN_KEPT };
void qmgr_job_load(struct qmgr *q, qmsg_t **msgs, size_t n);
void qmgr_job_local(qreq_t *r);
void qmgr_job_record(qreq_t *r);
void qmgr_job_finish(qmsg_t *m);

#endif
