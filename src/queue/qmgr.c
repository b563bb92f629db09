/*
 * qmgr: the queue manager's loop side.  Keeps the messages it knows (a
 * hash table by queue ID; the ones waiting to be loaded in a FIFO), loads
 * envelopes on the pool within qmgr_message_active_limit, routes every
 * pending recipient, turns them into delivery requests per destination
 * (qmgr-sched.c decides which may start), starts them (smtpc on the loop,
 * Maildir on the pool, discard/error/retry at once), logs each
 * recipient's outcome in Postfix's format, has it recorded durably
 * (qmgr-jobs.c), and hands a message whose requests are all done to the
 * finishing job.  Also: the deferred queue scan timer, the control
 * socket's requests, configuration generations.  See qmgr.h and
 * docs/queue.md.
 *
 * Ownership: everything here belongs to the loop thread.  A pool job owns
 * the objects it was given until its done callback runs (a message in
 * M_LOADING or M_FINISHING, a request being recorded); the loop does not
 * touch them meanwhile.  A configuration generation lives while the
 * queue manager, a message routed with it or a request uses it.
 *
 * Never: start two rounds of one message at once; mark a recipient before
 * its agent reported; remove a file before every recipient is D; touch
 * qmgr state from a pool thread; deliver a FILTER message around its
 * filter; read hold/.
 */
#include "queue/qmgr-private.h"

#include "core/log.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define QMGR_MIN_BUCKETS 1024
#define QMGR_LOAD_BATCH 64      /* envelopes read per pool job */
#define QMGR_LOAD_JOBS 2        /* load jobs in flight */
/* Pool jobs in flight at once: the pool is shared with the spool writers,
 * so queue work must leave threads free for a session's commit. */
#define QMGR_POOL_JOBS 3
/* Maildir deliveries in flight at once, for the same reason. */
#define QMGR_LOCAL_JOBS 2
/* fds kept for other uses when sizing the messages in memory. */
#define QMGR_FD_RESERVE 256

#define TRANSPORT_UNAVAILABLE "mail transport unavailable"

static void pump(qmgr_t *q);
static void load_more(qmgr_t *q);
static void msg_check_done(qmsg_t *m);
static void destroy(qmgr_t *q);
static void scan_start(qmgr_t *q, bool all);

/* ------------------------------------------------------------------ */
/* configuration generations                                            */

static char *str_param(const params_t *p, param_id id)
{
    const char *v = param_str(p, id);
    return xstrdup(v ? v : "");
}

static unsigned gen_seq;

static qgen_t *gen_new(const config_t *cfg, dns_t *dns, buf_t *err)
{
    router_t *router = router_new(cfg, err);
    if (!router)
        return NULL;
    qgen_t *g = xcalloc(1, sizeof *g);
    const params_t *p = config_main(cfg);
    g->cfg = cfg;
    g->router = router;
    g->dns = dns ? dns_ref(dns) : NULL;
    g->refs = 1;
    g->seq = ++gen_seq;
    g->min_backoff = param_int(p, PARAM_minimal_backoff_time);
    g->max_backoff = param_int(p, PARAM_maximal_backoff_time);
    g->run_delay = param_int(p, PARAM_queue_run_delay);
    g->max_lifetime = param_int(p, PARAM_maximal_queue_lifetime);
    g->bounce_lifetime = param_int(p, PARAM_bounce_queue_lifetime);
    g->delay_warning = param_int(p, PARAM_delay_warning_time);
    g->active_limit = param_int(p, PARAM_qmgr_message_active_limit);
    g->rcpt_limit = param_int(p, PARAM_qmgr_message_recipient_limit);
    g->bounce_size_limit = param_int(p, PARAM_bounce_size_limit);
    g->myhostname = str_param(p, PARAM_myhostname);
    g->myorigin = str_param(p, PARAM_myorigin);
    g->double_bounce_sender = str_param(p, PARAM_double_bounce_sender);
    g->notice_rcpt = str_param(p, PARAM_2bounce_notice_recipient);
    /* "This is me", for the client's loop detection. */
    g->listen = config_listen_addrs(cfg, &g->nlisten);
    g->self.myhostname = g->myhostname;
    g->self.listen = (const char *const *)g->listen;
    g->self.nlisten = g->nlisten;
    return g;
}

static qgen_t *gen_ref(qgen_t *g)
{
    g->refs++;
    return g;
}

void qmgr_gen_unref(qgen_t **gp)
{
    qgen_t *g = *gp;
    *gp = NULL;
    if (!g || --g->refs > 0)
        return;
    router_free(&g->router);
    dns_unref(&g->dns);
    config_listen_free(g->listen, g->nlisten);
    free(g->myhostname);
    free(g->myorigin);
    free(g->double_bounce_sender);
    free(g->notice_rcpt);
    config_free(&g->owned);
    free(g);
}

/* The scheduler's transport of that name, its limits taken from the
 * newest configuration (or from t when that one does not know it). */
static qtrans_t *trans_for(qmgr_t *q, const char *name, const transport_t *t)
{
    qtrans_t *tr = qsched_transport(q->sched, name);
    if (tr->limits_seq == q->cur->seq)
        return tr;
    const transport_t *cur = config_transport(q->cur->cfg, name);
    if (cur)
        t = cur;
    tr->limits_seq = q->cur->seq;
    if (!t)
        return tr;
    long long maxproc = t->maxproc > 0 ? t->maxproc : 1;
    if (t->kind == TK_LOCAL && maxproc > QMGR_LOCAL_JOBS)
        maxproc = QMGR_LOCAL_JOBS;
    qsched_set_limits(q->sched, tr, (unsigned)(maxproc > 100000 ? 100000 : maxproc),
                      (unsigned)t->concurrency_limit);
    return tr;
}

/* ------------------------------------------------------------------ */
/* the message table                                                    */

static unsigned hash_id(const char *id)
{
    return hash_str(HASH_INIT, id);
}

static qmsg_t *find(qmgr_t *q, const char *id)
{
    for (qmsg_t *m = q->table[hash_id(id) % q->nbuckets]; m; m = m->hnext)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

static void table_remove(qmgr_t *q, qmsg_t *m)
{
    qmsg_t **pp = &q->table[hash_id(m->id) % q->nbuckets];
    while (*pp && *pp != m)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = m->hnext;
}

static void rcpt_clear(qrcpt_t *r)
{
    free(r->text);
    free(r->reply);
    free(r->relay);
    memset(r, 0, sizeof *r);
}

void qmgr_req_free(qreq_t *r)
{
    for (size_t u = 0; u < r->nunit; u++) {
        free(r->units[u].idx);
        free(r->units[u].text);
        free(r->units[u].reply);
    }
    free(r->units);
    free(r->srcpt);
    free(r->tname);
    free(r->nexthop);
    free(r->spool_root);
    free(r->delims);
    qmgr_gen_unref(&r->gen);
    free(r);
}

/* A message's in-memory state of one round, dropped (the file stays). */
static void msg_unload(qmgr_t *q, qmsg_t *m)
{
    if (m->r) {
        for (size_t i = 0; i < m->qf.nrcpt; i++)
            rcpt_clear(&m->r[i]);
        free(m->r);
        m->r = NULL;
    }
    if (m->state != M_WAIT) {
        if (q->nmem > 0)
            q->nmem--;
        q->nrcpt_mem -= q->nrcpt_mem >= m->qf.nrcpt ? m->qf.nrcpt : q->nrcpt_mem;
    }
    qfile_free(&m->qf);
    qmgr_gen_unref(&m->gen);
}

static void msg_free(qmgr_t *q, qmsg_t *m)
{
    msg_unload(q, m);
    free(m);
}

static void load_fifo_push(qmgr_t *q, qmsg_t *m)
{
    m->state = M_WAIT;
    m->lnext = NULL;
    if (q->load_tail)
        q->load_tail->lnext = m;
    else
        q->load_head = m;
    q->load_tail = m;
    q->nwait++;
}

static qmsg_t *enqueue(qmgr_t *q, const char *id, bool scanned)
{
    qmsg_t *m = find(q, id);
    if (m) {
        if (m->state != M_WAIT)
            m->again = true;   /* one round at a time: look again after this one */
        if (!scanned)
            m->scanned = false;
        return m;
    }
    m = xcalloc(1, sizeof *m);
    m->q = q;
    m->qf.mark_fd = -1;
    m->scanned = scanned;
    str_copy(m->id, id, sizeof m->id);
    unsigned b = hash_id(m->id) % q->nbuckets;
    m->hnext = q->table[b];
    q->table[b] = m;
    load_fifo_push(q, m);
    return m;
}

/* Dropped from memory: the file is elsewhere, removed, or waits in
 * deferred/ (or in active/ for the next scan tick). */
static void msg_drop(qmgr_t *q, qmsg_t *m)
{
    table_remove(q, m);
    msg_free(q, m);
}

void qmgr_retry_later(qmgr_t *q, const char *id)
{
    q->retry_ids = xrealloc(q->retry_ids, (q->nretry + 1) * sizeof *q->retry_ids);
    q->retry_ids[q->nretry++] = xstrdup(id);
}

/* ------------------------------------------------------------------ */
/* pool jobs, within QMGR_POOL_JOBS                                     */

typedef struct pslot {
    qmgr_t *q;
    pool_fn work, done;
    void *arg;
} pslot_t;

static void pslot_work(void *arg)
{
    pslot_t *s = arg;
    s->work(s->arg);
}

static void pool_next(qmgr_t *q);

static void pslot_done(void *arg)
{
    pslot_t *s = arg;
    qmgr_t *q = s->q;
    s->done(s->arg);
    free(s);
    q->pool_busy--;
    q->busy--;
    if (q->dead) {
        if (q->busy == 0)
            destroy(q);
        return;
    }
    pool_next(q);
}

static void pool_next(qmgr_t *q)
{
    /* When stopping or being freed, waiting jobs still run: they record
     * results that must not be lost. */
    while (q->pj_head && (q->pool_busy < QMGR_POOL_JOBS || q->dead)) {
        pjob_t *j = q->pj_head;
        q->pj_head = j->next;
        if (!q->pj_head)
            q->pj_tail = NULL;
        pslot_t *s = xcalloc(1, sizeof *s);
        s->q = q;
        s->work = j->work;
        s->done = j->done;
        s->arg = j->arg;
        q->pool_busy++;
        pool_submit(q->pool, j->chain, pslot_work, pslot_done, s);
        free(j);
    }
}

void qmgr_pool_submit(qmgr_t *q, const void *chain, pool_fn work, pool_fn done, void *arg)
{
    pjob_t *j = xcalloc(1, sizeof *j);
    j->chain = chain;
    j->work = work;
    j->done = done;
    j->arg = arg;
    if (q->pj_tail)
        q->pj_tail->next = j;
    else
        q->pj_head = j;
    q->pj_tail = j;
    q->busy++;   /* counted from now: shutdown waits for it */
    pool_next(q);
}

bool qmgr_job_finished(qmgr_t *q)
{
    return !q->dead;
}

/* ------------------------------------------------------------------ */
/* logging                                                              */

static const char *status_word(int result)
{
    switch (result) {
    case RR_SENT:
        return "sent";
    case RR_BOUNCE:
        return "bounced";
    default:
        return "deferred";
    }
}

static void log_unit(qreq_t *r, qunit_t *u)
{
    qmsg_t *m = r->m;
    buf_t line = BUF_INIT;
    for (size_t k = 0; k < u->nidx; k++) {
        const char *rcpt = m->qf.rcpts[u->idx[k]];
        qmgr_logline_t l = {
            .to = u->addr,
            .orig = strcmp(u->addr, rcpt) != 0 ? rcpt : NULL,
            .relay = r->relay[0] ? r->relay : "none",
            .arrival = m->qf.arrival_usec,
            .t_load = m->t_load,
            .t_start = r->t_start,
            .t_conn = r->t_conn,
            .t_end = r->t_end,
            .dsn = u->dsn,
            .status = status_word(u->result),
            .text = u->text ? u->text : "",
            .tls = r->sreq.tls,
        };
        buf_reset(&line);
        qmgr_format_rcpt(&l, &line);
        log_info(r->prog, "%s: %s", m->id, buf_cstr(&line));
    }
    buf_free(&line);
}

/* ------------------------------------------------------------------ */
/* requests                                                             */

static void unit_set(qunit_t *u, int result, const char *dsn, const char *text, const char *reply)
{
    u->result = result;
    str_copy(u->dsn, dsn && *dsn ? dsn : (result == RR_SENT ? "2.0.0" : result == RR_BOUNCE ? "5.0.0" : "4.0.0"),
             sizeof u->dsn);
    free(u->text);
    free(u->reply);
    u->text = xstrdup(text ? text : "");
    u->reply = reply && *reply ? xstrdup(reply) : NULL;
}

/* Every unit of r gets the same outcome (a request that never ran). */
static void req_fail_all(qreq_t *r, int result, const char *dsn, const char *text)
{
    long long now = now_usec();
    r->t_start = r->t_end = now;
    r->t_conn = 0;
    for (size_t u = 0; u < r->nunit; u++)
        unit_set(&r->units[u], result, dsn, text, NULL);
}

static void req_suspend(qreq_t *r, qdest_t *d)
{
    buf_t t = BUF_INIT;
    buf_printf(&t, "delivery temporarily suspended: %s", d->dead_text ? d->dead_text : "");
    r->prog = "qmgr";
    r->suspended = true;
    str_copy(r->relay, "none", sizeof r->relay);
    req_fail_all(r, RR_DEFER, d->dead_dsn, buf_cstr(&t));
    buf_free(&t);
}

static void smtpc_done(smtpc_request_t *sr, void *arg)
{
    qreq_t *r = arg;
    qmgr_t *q = r->q;
    q->busy--;
    if (q->dead) {
        smtpc_request_clear(sr);
        qmgr_req_free(r);
        if (q->busy == 0)
            destroy(q);
        return;
    }
    r->t_start = sr->t_start;
    r->t_conn = sr->t_conn;
    r->t_end = sr->t_end ? sr->t_end : now_usec();
    str_copy(r->relay, sr->relay[0] ? sr->relay : "none", sizeof r->relay);
    r->dest_failed = sr->dest_failed;
    for (size_t u = 0; u < r->nunit; u++) {
        smtpc_rcpt_t *c = &r->srcpt[u];
        int res = c->status == SMTPC_SENT ? RR_SENT : c->status == SMTPC_BOUNCE ? RR_BOUNCE : RR_DEFER;
        unit_set(&r->units[u], res, c->dsn, c->text ? c->text : "", c->reply);
    }
    smtpc_request_clear(sr);
    qmgr_req_done(r);
}

static void start_req(qmgr_t *q, qreq_t *r)
{
    r->t_start = now_usec();
    if (r->t->kind == TK_LOCAL) {
        q->local_busy++;
        qmgr_job_local(r);
        return;
    }
    /* SMTP or LMTP: the client runs on the loop; strings are borrowed
     * from the message and the request, which outlive the delivery. */
    smtpc_request_t *s = &r->sreq;
    qfile_t *qf = &r->m->qf;
    memset(s, 0, sizeof *s);
    r->srcpt = xcalloc(r->nunit, sizeof *r->srcpt);
    for (size_t u = 0; u < r->nunit; u++)
        r->srcpt[u].addr = r->units[u].addr;
    s->queue_id = r->m->id;
    s->path = qf->path;
    s->content_offset = qf->content_offset;
    s->content_size = qf->content_size;
    s->sender = qf->sender;
    s->body_type = qf->body_type;
    s->smtputf8 = qf->smtputf8;
    s->client_name = qf->client_name;
    s->client_addr = qf->client_addr;
    s->helo = qf->helo;
    s->protocol = qf->protocol;
    s->rcpts = r->srcpt;
    s->nrcpt = r->nunit;
    s->transport = r->t;
    s->nexthop = r->nexthop;
    s->dns = r->gen->dns;
    s->self = &r->gen->self;
    s->done = smtpc_done;
    s->arg = r;
    q->busy++;
    smtpc_deliver(q->smtpc, s);
}

static void pump(qmgr_t *q)
{
    qitem_t *it;
    if (q->stopping || q->dead)
        return;
    while ((it = qsched_next(q->sched)) != NULL)
        start_req(q, (qreq_t *)it);
}

/* The agent is done with r (or r never ran): log every recipient, fail
 * the destination's other requests when it could not be reached, and
 * have the results recorded. */
void qmgr_req_done(qreq_t *r)
{
    qmgr_t *q = r->q;
    qdest_t *d = r->item.dest;
    for (size_t u = 0; u < r->nunit; u++)
        log_unit(r, &r->units[u]);
    if (d) {
        if (r->t->kind == TK_LOCAL && q->local_busy > 0)
            q->local_busy--;
        /* Not reached at all: skip it for minimal_backoff_time, and its
         * waiting requests are deferred now with the same reason. */
        const qunit_t *why = NULL;
        for (size_t u = 0; u < r->nunit && r->dest_failed; u++)
            if (r->units[u].result == RR_DEFER) {
                why = &r->units[u];
                break;
            }
        if (why && !qsched_is_dead(q->sched, d, now_usec())) {
            /* A dead destination is kept (never freed) until it revives. */
            qsched_kill(q->sched, d, now_usec() + r->gen->min_backoff * 1000000LL, why->text, why->dsn);
            qitem_t *it;
            while ((it = qsched_take(q->sched, d)) != NULL) {
                qreq_t *o = (qreq_t *)it;
                req_suspend(o, d);
                qmgr_req_done(o);
            }
        }
        qsched_done(q->sched, &r->item);
    }
    qmgr_job_record(r);
    pump(q);
}

/* The record job reported: the statuses it wrote are now the file's, and
 * each recipient's outcome is kept for the finishing job. */
void qmgr_req_recorded(qreq_t *r, const char *fail_text)
{
    qmsg_t *m = r->m;
    for (size_t u = 0; u < r->nunit; u++) {
        qunit_t *un = &r->units[u];
        for (size_t k = 0; k < un->nidx; k++) {
            size_t i = un->idx[k];
            qrcpt_t *rc = &m->r[i];
            rcpt_clear(rc);
            rc->when = r->t_end;
            rc->relay = xstrdup(r->relay[0] ? r->relay : "none");
            if (un->result != RR_DEFER && m->qf.rcpt_status[i] == QF_PENDING) {
                /* Delivered (or failed) but not recorded: it stays pending
                 * and is tried again later: a duplicate, never a loss. */
                rc->result = RR_DEFER;
                str_copy(rc->dsn, "4.3.0", sizeof rc->dsn);
                buf_t t = BUF_INIT;
                buf_printf(&t, "cannot record the delivery status: %s", fail_text ? fail_text : "I/O error");
                rc->text = buf_steal(&t);
                continue;
            }
            rc->result = un->result;
            str_copy(rc->dsn, un->dsn, sizeof rc->dsn);
            rc->text = xstrdup(un->text ? un->text : "");
            rc->reply = un->reply ? xstrdup(un->reply) : NULL;
        }
    }
    qmgr_req_free(r);
    if (m->nreq > 0)
        m->nreq--;
    msg_check_done(m);
}

/* ------------------------------------------------------------------ */
/* routing a loaded message                                             */

typedef struct group {
    char *tname, *nexthop, *rcpt;   /* rcpt: per-recipient (local) destinations */
    const transport_t *t;
    qunit_t *units;
    size_t nunit;
} group_t;

static qreq_t *req_new(qmsg_t *m, const char *tname, const char *nexthop, const transport_t *t)
{
    qreq_t *r = xcalloc(1, sizeof *r);
    r->q = m->q;
    r->m = m;
    r->gen = gen_ref(m->gen);
    r->t = t;
    r->tname = xstrdup(tname ? tname : "");
    r->nexthop = xstrdup(nexthop ? nexthop : "");
    r->prog = "qmgr";
    m->nreq++;
    return r;
}

static void unit_add_idx(qunit_t *u, size_t i)
{
    u->idx = xrealloc(u->idx, (u->nidx + 1) * sizeof *u->idx);
    u->idx[u->nidx++] = i;
}

/* Requests that are done without running (routing failures, discard,
 * error, retry, dead destinations), completed once routing is over: by
 * then the message knows all its requests, so the last one can see that
 * it is the last (removal_records_it in qmgr-jobs.c). */
typedef struct nowlist {
    qitem_t *head, **tail;
} nowlist_t;

static void now_push(nowlist_t *l, qreq_t *r)
{
    r->item.next = NULL;
    *l->tail = &r->item;
    l->tail = &r->item.next;
}

/* One request at once for recipient i: logged and recorded without a
 * destination. */
static void immediate(nowlist_t *now, qmsg_t *m, size_t i, const char *addr, const char *prog,
                      const char *tname, const char *nexthop, int result, const char *dsn, const char *text)
{
    qreq_t *r = req_new(m, tname, nexthop, NULL);
    r->units = xcalloc(1, sizeof *r->units);
    r->nunit = 1;
    r->units[0].addr = addr;
    unit_add_idx(&r->units[0], i);
    r->prog = prog;
    str_copy(r->relay, "none", sizeof r->relay);
    req_fail_all(r, result, dsn, text);
    now_push(now, r);
}

/* The transports that answer without delivering: discard(8), error(8)
 * and retry(8).  Their next hop is "[d.s.n ]text", as in Postfix; error
 * and retry keep their class whatever code it names. */
typedef struct instant {
    transport_kind kind;
    const char *prog;     /* the service its log line names */
    int result;
    const char *dsn;      /* when the next hop names none */
    bool own_class;       /* a code of another class is replaced by dsn */
    const char *text;     /* when the next hop has no text */
} instant_t;

static const instant_t instants[] = {
    {TK_DISCARD, "discard", RR_SENT, "2.0.0", false, "discarded"},
    {TK_ERROR, "error", RR_BOUNCE, "5.0.0", true, "delivery failed"},
    {TK_RETRY, "retry", RR_DEFER, "4.0.0", true, "delivery deferred"},
};

/* Recipient i answered at once when t is one of those; false otherwise. */
static bool answer_at_once(nowlist_t *now, qmsg_t *m, size_t i, const char *addr, const transport_t *t,
                           const route_t *rt)
{
    for (size_t k = 0; k < ARRAY_LEN(instants); k++) {
        const instant_t *in = &instants[k];
        if (in->kind != t->kind)
            continue;
        char dsn[16];
        const char *text;
        qmgr_split_dsn(rt->nexthop, in->dsn, dsn, &text);
        if (in->own_class && dsn[0] != in->dsn[0])
            str_copy(dsn, in->dsn, sizeof dsn);
        immediate(now, m, i, addr, in->prog, rt->transport, rt->nexthop, in->result, dsn, *text ? text : in->text);
        return true;
    }
    return false;
}

static bool is_double_bounce_rcpt(const qgen_t *g, const char *addr, const route_t *rt)
{
    const char *dbs = g->double_bounce_sender;
    if (!*dbs || rt->cls != ROUTE_LOCAL)
        return false;
    size_t n = strlen(dbs);
    return str_nieq(addr, dbs, n) && (addr[n] == '@' || addr[n] == 0);
}

static void route_msg(qmgr_t *q, qmsg_t *m)
{
    qfile_t *qf = &m->qf;
    qgen_t *g = m->gen;
    group_t *groups = NULL;
    size_t ngroups = 0;
    nowlist_t now = {NULL, &now.head};

    m->nreq++;   /* held while routing, so the message cannot finish midway */
    for (size_t i = 0; i < qf->nrcpt; i++) {
        if (qf->rcpt_status[i] != QF_PENDING)
            continue;
        /* A REDIRECT stands for every recipient, BCC ones too: one address. */
        const char *addr = qf->redirect ? qf->redirect : qf->rcpts[i];
        route_t rt;
        memset(&rt, 0, sizeof rt);
        int rc = qf->filter ? route_spec(g->router, qf->filter, addr, "content_filter", &rt)
                            : route_recipient(g->router, addr, &rt);
        if (rc != 0) {
            immediate(&now, m, i, addr, "qmgr", "", "", RR_DEFER, "4.3.0",
                      rt.nexthop[0] ? rt.nexthop : "address resolver failure");
            continue;
        }
        if (!qf->filter && is_double_bounce_rcpt(g, addr, &rt)) {
            immediate(&now, m, i, addr, "discard", "discard", "", RR_SENT, "2.0.0", "discarded");
            continue;
        }
        const transport_t *t = config_transport(g->cfg, rt.transport);
        if (!t) {
            immediate(&now, m, i, addr, "qmgr", rt.transport, rt.nexthop, RR_DEFER, "4.3.0", TRANSPORT_UNAVAILABLE);
            continue;
        }
        if (answer_at_once(&now, m, i, addr, t, &rt))
            continue;
        const char *per_rcpt = t->kind == TK_LOCAL ? addr : NULL;
        group_t *gr = NULL;
        for (size_t k = 0; k < ngroups && !gr; k++)
            if (strcmp(groups[k].tname, rt.transport) == 0 && str_ieq(groups[k].nexthop, rt.nexthop) &&
                ((!per_rcpt && !groups[k].rcpt) || (per_rcpt && groups[k].rcpt && str_ieq(groups[k].rcpt, per_rcpt))))
                gr = &groups[k];
        if (!gr) {
            groups = xrealloc(groups, (ngroups + 1) * sizeof *groups);
            gr = &groups[ngroups++];
            memset(gr, 0, sizeof *gr);
            gr->tname = xstrdup(rt.transport);
            gr->nexthop = xstrdup(rt.nexthop);
            gr->rcpt = per_rcpt ? xstrdup(per_rcpt) : NULL;
            gr->t = t;
        }
        /* The same address twice is one RCPT (and one unit for all the
         * recipients it stands for). */
        qunit_t *u = NULL;
        for (size_t k = 0; k < gr->nunit && !u; k++)
            if (strcmp(gr->units[k].addr, addr) == 0)
                u = &gr->units[k];
        if (!u) {
            gr->units = xrealloc(gr->units, (gr->nunit + 1) * sizeof *gr->units);
            u = &gr->units[gr->nunit++];
            memset(u, 0, sizeof *u);
            u->addr = addr;
        }
        unit_add_idx(u, i);
    }

    long long t_now = now_usec();
    for (size_t k = 0; k < ngroups; k++) {
        group_t *gr = &groups[k];
        qtrans_t *tr = trans_for(q, gr->tname, gr->t);
        qdest_t *d = qsched_dest(q->sched, tr, gr->nexthop, gr->rcpt);
        size_t per = (size_t)gr->t->recipient_limit;
        for (size_t u0 = 0; u0 < gr->nunit; u0 += per) {
            size_t n = gr->nunit - u0 < per ? gr->nunit - u0 : per;
            qreq_t *r = req_new(m, gr->tname, gr->nexthop, gr->t);
            r->units = xcalloc(n, sizeof *r->units);
            memcpy(r->units, gr->units + u0, n * sizeof *r->units);
            r->nunit = n;
            r->prog = gr->t->kind == TK_LMTP ? "lmtp" : gr->t->kind == TK_LOCAL ? "local" : "smtp";
            if (gr->t->kind == TK_LOCAL) {
                r->spool_root = str_param(gr->t->params, PARAM_mail_spool_directory);
                r->delims = str_param(gr->t->params, PARAM_recipient_delimiter);
            }
            if (qsched_is_dead(q->sched, d, t_now)) {
                req_suspend(r, d);
                now_push(&now, r);
            } else {
                qsched_push(q->sched, d, &r->item);
            }
        }
        free(gr->units);   /* the units' contents moved to the requests */
        free(gr->tname);
        free(gr->nexthop);
        free(gr->rcpt);
    }
    free(groups);
    m->nreq--;
    while (now.head) {
        qitem_t *it = now.head;
        now.head = it->next;
        qmgr_req_done((qreq_t *)it);
    }
    msg_check_done(m);   /* nothing was pending at all */
    pump(q);
}

/* ------------------------------------------------------------------ */
/* message life                                                         */

void qmgr_msg_loaded(qmsg_t *m, int outcome, const char *err)
{
    qmgr_t *q = m->q;
    switch (outcome) {
    case LOAD_OK:
        break;
    case LOAD_GONE:
        if (m->scanned)
            log_debug("qmgr", "%s: queue file gone before delivery", m->id);
        else
            log_warn("qmgr", "%s: queue file vanished before delivery", m->id);
        msg_drop(q, m);
        return;
    case LOAD_CORRUPT:
        msg_drop(q, m);   /* logged by the job, with the reason */
        return;
    default:
        log_warn("qmgr", "%s: cannot read queue file: %s", m->id, err ? err : "");
        qmgr_retry_later(q, m->id);
        msg_drop(q, m);
        return;
    }
    if (q->stopping) {
        msg_drop(q, m);   /* stays in active/ for the next start */
        return;
    }
    m->state = M_ACTIVE;
    m->again = false;
    m->t_load = now_usec();
    q->nrcpt_mem += m->qf.nrcpt;
    m->gen = gen_ref(q->cur);
    m->r = xcalloc(m->qf.nrcpt, sizeof *m->r);
    log_info("qmgr", "%s: from=<%s>, size=%ld, nrcpt=%zu (queue active)", m->id, m->qf.sender,
             m->qf.content_size, m->qf.nrcpt);
    route_msg(q, m);
}

static void msg_check_done(qmsg_t *m)
{
    if (m->state != M_ACTIVE || m->nreq > 0 || m->q->dead)
        return;
    m->state = M_FINISHING;
    qmgr_job_finish(m);
}

void qmgr_msg_finished(qmsg_t *m, int outcome, char **notices, size_t nnotices)
{
    qmgr_t *q = m->q;
    for (size_t i = 0; i < nnotices; i++) {
        if (!q->stopping)
            enqueue(q, notices[i], false);
        free(notices[i]);
    }
    free(notices);
    bool again = m->again;
    if (outcome == FIN_KEPT) {
        /* Still in active/ (a disk error): look again at the next tick. */
        qmgr_retry_later(q, m->id);
        again = false;
    }
    if (again && outcome != FIN_REMOVED && !q->stopping) {
        /* Enqueued while it was finishing (a flush moved it back, a
         * release): read it again from whatever queue it is in now. */
        msg_unload(q, m);
        m->again = false;
        m->scanned = true;
        load_fifo_push(q, m);
    } else {
        msg_drop(q, m);
    }
    load_more(q);
}

static size_t mem_limit(const qmgr_t *q)
{
    size_t lim = q->cur->active_limit > 0 ? (size_t)q->cur->active_limit : 1;
    return lim < q->fd_limit ? lim : q->fd_limit;
}

static void load_more(qmgr_t *q)
{
    if (q->stopping || q->dead)
        return;
    while (q->load_head && q->load_jobs < QMGR_LOAD_JOBS) {
        qmsg_t *batch[QMGR_LOAD_BATCH];
        size_t n = 0;
        while (q->load_head && n < QMGR_LOAD_BATCH && q->nmem < mem_limit(q) &&
               (q->nmem == 0 || q->nrcpt_mem < (size_t)q->cur->rcpt_limit)) {
            qmsg_t *m = q->load_head;
            q->load_head = m->lnext;
            if (!q->load_head)
                q->load_tail = NULL;
            m->lnext = NULL;
            q->nwait--;
            m->state = M_LOADING;
            q->nmem++;
            batch[n++] = m;
        }
        if (n == 0)
            return;
        q->load_jobs++;
        qmgr_job_load(q, batch, n);
    }
}

/* qmgr-jobs.c calls this when a load job's results have been handed over. */
void qmgr_load_job_done(qmgr_t *q)
{
    if (q->load_jobs > 0)
        q->load_jobs--;
    load_more(q);
}

/* ------------------------------------------------------------------ */
/* the deferred queue scan                                              */

typedef struct scanjob {
    qmgr_t *q;
    bool all;
    char **ids;
    size_t nids, nfiles;
    long long t0, t1;
    buf_t err;
    int rc;
} scanjob_t;

static void scan_work(void *arg)
{
    scanjob_t *j = arg;
    j->t0 = now_usec();
    j->rc = spool_scan_deferred(j->q->spool, j->t0 / 1000000, j->all, &j->ids, &j->nids, &j->nfiles, &j->err);
    j->t1 = now_usec();
}

static void scan_done(void *arg)
{
    scanjob_t *j = arg;
    qmgr_t *q = j->q;
    if (qmgr_job_finished(q)) {
        q->scanning = false;
        if (j->rc != 0) {
            log_warn("qmgr", "deferred queue scan: %s", buf_cstr(&j->err));
        } else if (j->nids > 0) {
            log_info("qmgr", "deferred queue scan: %zu files, %zu due, %lld ms", j->nfiles, j->nids,
                     (j->t1 - j->t0) / 1000);
        } else {
            log_debug("qmgr", "deferred queue scan: %zu files, 0 due", j->nfiles);
        }
        /* Files moved to active/ must reach memory even when stopping
         * (then they simply stay in active/ for the next start). */
        for (size_t i = 0; i < j->nids && !q->stopping; i++)
            enqueue(q, j->ids[i], true);
        if (q->flush_wanted) {
            /* A flush arrived while this scan ran: everything, once more. */
            q->flush_wanted = false;
            scan_start(q, true);
        }
        load_more(q);
    }
    spool_free_ids(j->ids, j->nids);
    buf_free(&j->err);
    free(j);
}

static void scan_start(qmgr_t *q, bool all)
{
    if (q->stopping || q->dead)
        return;
    if (q->scanning) {
        q->flush_wanted = q->flush_wanted || all;
        return;
    }
    scanjob_t *j = xcalloc(1, sizeof *j);
    j->q = q;
    j->all = all;
    q->scanning = true;
    qmgr_pool_submit(q, NULL, scan_work, scan_done, j);
}

static void timer_arm(qmgr_t *q)
{
    long long d = q->cur->run_delay > 0 ? q->cur->run_delay : 1;
    struct timeval tv = {(time_t)d, 0};
    evtimer_add(q->scan_timer, &tv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    qmgr_t *q = arg;
    (void)fd;
    (void)what;
    if (q->stopping || q->dead)
        return;
    /* Messages that could not be read or moved last time. */
    char **ids = q->retry_ids;
    size_t n = q->nretry;
    q->retry_ids = NULL;
    q->nretry = 0;
    for (size_t i = 0; i < n; i++)
        enqueue(q, ids[i], true);
    spool_free_ids(ids, n);
    qsched_gc(q->sched, now_usec());
    scan_start(q, false);
    load_more(q);
    timer_arm(q);
}

/* ------------------------------------------------------------------ */
/* the control socket                                                   */

static size_t rescan_active(qmgr_t *q)
{
    buf_t dir = BUF_INIT;
    size_t added = 0;
    buf_printf(&dir, "%s/active", spool_dir(q->spool));
    DIR *d = opendir(buf_cstr(&dir));
    buf_free(&dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!spool_valid_id(de->d_name) || find(q, de->d_name))
            continue;
        enqueue(q, de->d_name, true);
        added++;
    }
    closedir(d);
    return added;
}

static long count_deferred(qmgr_t *q)
{
    buf_t dir = BUF_INIT;
    long n = 0;
    buf_printf(&dir, "%s/deferred", spool_dir(q->spool));
    DIR *d = opendir(buf_cstr(&dir));
    buf_free(&dir);
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += spool_valid_id(de->d_name) && de->d_type != DT_DIR;
    closedir(d);
    return n;
}

void qmgr_control(void *arg, const char *cmd, const char *cmd_arg, buf_t *reply)
{
    qmgr_t *q = arg;
    if (strcmp(cmd, "ping") == 0) {
        buf_printf(reply, "ok %ld", (long)getpid());
    } else if (strcmp(cmd, "flush") == 0 && (!cmd_arg || !*cmd_arg)) {
        /* The reply counts the deferred queue (one readdir, nothing else on
         * the loop); the renames run on the pool as a scan that takes
         * every file, due or not.  Dead destinations get another chance. */
        long n = q->stopping ? 0 : count_deferred(q);
        if (n < 0) {
            buf_printf(reply, "error cannot read the deferred queue: %s", strerror(errno));
        } else {
            qsched_revive_all(q->sched);
            scan_start(q, true);
            buf_printf(reply, "ok %ld", n);
            log_info("qmgr", "flush: %ld deferred message%s", n, n == 1 ? "" : "s");
        }
        pump(q);
    } else if (strcmp(cmd, "flush") == 0) {
        buf_t err = BUF_INIT;
        if (!spool_valid_id(cmd_arg)) {
            buf_printf(reply, "error %s: invalid queue id", cmd_arg);
        } else if (spool_move(q->spool, cmd_arg, QUEUE_DEFERRED, QUEUE_ACTIVE, &err) != 0) {
            if (errno == ENOENT)
                buf_printf(reply, "error %s: not in the deferred queue", cmd_arg);
            else
                buf_printf(reply, "error %s: %s", cmd_arg, buf_cstr(&err));
        } else {
            qsched_revive_all(q->sched);
            if (!q->stopping)
                enqueue(q, cmd_arg, false);
            buf_puts(reply, "ok 1");
            load_more(q);
            pump(q);
        }
        buf_free(&err);
    } else if (strcmp(cmd, "rescan") == 0) {
        size_t n = q->stopping ? 0 : rescan_active(q);
        buf_printf(reply, "ok %zu", n);
        if (n)
            log_info("qmgr", "rescan of the active queue: %zu new message%s", n, n == 1 ? "" : "s");
        load_more(q);
    } else {
        buf_puts(reply, "error unknown command");
    }
}

/* ------------------------------------------------------------------ */
/* the public API                                                       */

static size_t fd_budget(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 100000;
    if (rl.rlim_cur <= QMGR_FD_RESERVE + 32)
        return 16;
    /* Half of what is left: sessions, sockets and tables need the rest. */
    return (size_t)(rl.rlim_cur - QMGR_FD_RESERVE) / 2;
}

qmgr_t *qmgr_new(struct event_base *base, pool_t *pool, spool_t *spool, const config_t *cfg,
                 dns_t *dns, buf_t *err)
{
    qgen_t *g = gen_new(cfg, dns, err);
    if (!g)
        return NULL;
    qmgr_t *q = xcalloc(1, sizeof *q);
    q->base = base;
    q->pool = pool;
    q->spool = spool;
    q->cur = g;
    q->smtpc = smtpc_new(base, pool);
    q->sched = qsched_new();
    q->fd_limit = fd_budget();
    q->nbuckets = QMGR_MIN_BUCKETS;
    while (q->nbuckets < (size_t)g->active_limit && q->nbuckets < (1u << 20))
        q->nbuckets *= 2;
    q->table = xcalloc(q->nbuckets, sizeof *q->table);
    q->scan_timer = evtimer_new(base, on_tick, q);
    /* The first scan at once: deferred mail that came due while moat was down. */
    struct timeval now = {0, 0};
    evtimer_add(q->scan_timer, &now);
    return q;
}

int qmgr_set_config(qmgr_t *q, config_t *cfg, dns_t *dns, buf_t *err)
{
    qgen_t *g = gen_new(cfg, dns, err);
    if (!g)
        return -1;
    g->owned = cfg;
    qmgr_gen_unref(&q->cur);
    q->cur = g;
    /* New limits for the known transports; queue_run_delay from the next tick. */
    for (qtrans_t *tr = qsched_transports(q->sched); tr; tr = tr->next)
        trans_for(q, tr->name, NULL);
    size_t added = q->stopping ? 0 : rescan_active(q);
    if (added)
        log_info("qmgr", "rescan of the active queue: %zu new message%s", added, added == 1 ? "" : "s");
    load_more(q);
    pump(q);
    return 0;
}

void qmgr_enqueue(qmgr_t *q, const char *queue_id)
{
    if (!spool_valid_id(queue_id)) {
        log_warn("qmgr", "ignoring invalid queue id \"%s\"", queue_id ? queue_id : "");
        return;
    }
    if (q->stopping || q->dead)
        return;   /* in active/: the next start delivers it */
    enqueue(q, queue_id, false);
    load_more(q);
}

void qmgr_stop(qmgr_t *q)
{
    q->stopping = true;
    if (q->scan_timer)
        evtimer_del(q->scan_timer);
}

unsigned qmgr_busy(const qmgr_t *q)
{
    return q->busy;
}

/* Free everything: every message (with its requests: waiting ones are in
 * the scheduler's queues, running ones are done by now), destinations,
 * generations. */
static void destroy(qmgr_t *q)
{
    qsched_t *s = q->sched;
    /* Waiting requests: take them out of every destination first. */
    qitem_t *it;
    while ((it = qsched_next(s)) != NULL) {
        qsched_done(s, it);
        qmgr_req_free((qreq_t *)it);
    }
    for (size_t b = 0; b < q->nbuckets; b++) {
        qmsg_t *m = q->table[b];
        while (m) {
            qmsg_t *next = m->hnext;
            msg_free(q, m);
            m = next;
        }
    }
    free(q->table);
    qsched_free(&q->sched);
    spool_free_ids(q->retry_ids, q->nretry);
    if (q->scan_timer)
        event_free(q->scan_timer);
    qmgr_gen_unref(&q->cur);
    free(q);
}

void qmgr_free(qmgr_t **qp)
{
    qmgr_t *q = *qp;
    if (!q)
        return;
    *qp = NULL;
    q->stopping = true;
    q->dead = true;
    if (q->scan_timer)
        evtimer_del(q->scan_timer);
    /* In-flight SMTP requests still finish (their done callbacks see dead). */
    smtpc_free(&q->smtpc);
    pool_next(q);   /* waiting pool jobs run now, so busy reaches 0 */
    if (q->busy == 0)
        destroy(q);
}
