/*
 * qmgr: the minimal queue manager.  Takes queue IDs (new commits and
 * start-up recovery), runs one delivery job per message on the pool, logs
 * the outcome like Postfix's qmgr(8) and local(8), removes finished
 * messages and retries the rest after queue_run_delay.  See qmgr.h and
 * docs/queue.md.
 *
 * Ownership: qmgr_t and its message table belong to the loop thread; a
 * delivery job gets copies of everything it needs (parameter values too,
 * because a reload may free the params_t while the job runs) and hands its
 * results back through the pool's done callback, the only place where
 * message state and timers change.
 *
 * Never: run two jobs for one message at once; remove a queue file before
 * every recipient's delivery is recorded in it; touch qmgr state from a
 * pool thread; deliver a FILTER message around its filter; read hold/.
 */
#include "queue/qmgr.h"

#include "core/log.h"
#include "core/util.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Delivery jobs in flight at once: the pool is shared with the spool
 * writers, and a burst of recovered messages must not keep a session's
 * commit waiting behind it. */
#define QMGR_MAX_JOBS 2
#define QMGR_BUCKETS 1024

#define NO_TRANSPORT "no transport for this domain in this version of moat"
#define FILTER_LATER "content filter delivery arrives with the queue issue"

enum { M_READY, M_RUNNING, M_WAITING };

typedef struct qmsg {
    struct qmsg *hnext;     /* hash bucket chain */
    struct qmsg *rnext;     /* ready FIFO */
    qmgr_t *q;
    char id[QUEUE_ID_MAX];
    int state;
    bool again;             /* enqueued again while running */
    bool scanned;           /* found by a rescan: a file gone meanwhile is no news */
    struct event *timer;    /* M_WAITING */
} qmsg_t;

struct qmgr {
    struct event_base *base;
    pool_t *pool;
    spool_t *spool;
    const params_t *params;
    qmsg_t *table[QMGR_BUCKETS];
    qmsg_t *ready_head, *ready_tail;
    unsigned busy;
    bool dead;              /* qmgr_free() ran while jobs were in flight */
    bool scanning;          /* a rescan of active/ is in flight */
};

enum { R_DONE_BEFORE, R_SENT, R_DEFERRED };

typedef struct rres {
    int status;
    bool local;
    char *text;             /* R_DEFERRED: the reason; R_SENT: the file */
    long long t_start, t_end;
} rres_t;

enum { J_OK, J_GONE, J_CORRUPT, J_ERROR };

typedef struct djob {
    qmgr_t *q;
    qmsg_t *m;
    /* inputs, copied on the loop thread */
    char *path, *spool_root, *delims, *myorigin;
    char **mydest;
    size_t nmydest;
    long long t_submit;
    /* results */
    int outcome;
    buf_t err;
    qfile_t qf;
    rres_t *res;
    bool all_done, removed;
} djob_t;

static unsigned bucket(const char *id)
{
    unsigned h = 5381;
    for (; *id; id++)
        h = h * 33 + (unsigned char)*id;
    return h % QMGR_BUCKETS;
}

static qmsg_t *find(qmgr_t *q, const char *id)
{
    for (qmsg_t *m = q->table[bucket(id)]; m; m = m->hnext)
        if (strcmp(m->id, id) == 0)
            return m;
    return NULL;
}

static void unlink_msg(qmgr_t *q, qmsg_t *m)
{
    qmsg_t **pp = &q->table[bucket(m->id)];
    while (*pp && *pp != m)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = m->hnext;
}

static void free_msg(qmsg_t *m)
{
    if (m->timer)
        event_free(m->timer);
    free(m);
}

qmgr_t *qmgr_new(struct event_base *base, pool_t *pool, spool_t *spool, const params_t *params)
{
    qmgr_t *q = xcalloc(1, sizeof *q);
    q->base = base;
    q->pool = pool;
    q->spool = spool;
    q->params = params;
    return q;
}

static void rescan(qmgr_t *q);

void qmgr_set_params(qmgr_t *q, const params_t *params)
{
    q->params = params;
    rescan(q);
}

unsigned qmgr_busy(const qmgr_t *q)
{
    return q->busy;
}

/* ------------------------------------------------------------------ */
/* the delivery job (pool thread)                                       */

static bool is_local_domain(const djob_t *j, const char *rcpt)
{
    const char *at = strrchr(rcpt, '@');
    /* An unqualified address belongs to myorigin, as Postfix would complete it. */
    const char *domain = at ? at + 1 : j->myorigin;
    if (!domain || !*domain)
        return false;
    for (size_t i = 0; i < j->nmydest; i++)
        if (str_ieq(j->mydest[i], domain))
            return true;
    return false;
}

/* The queue file's actions.  FILTER: every pending recipient waits for
 * the content filter transport (the queue issue); the file stays.
 * REDIRECT: one delivery to the redirect address stands for every pending
 * recipient (BCC ones too), which are all marked done when it succeeds. */
static void deliver_actions(djob_t *j, buf_t *detail)
{
    qfile_t *qf = &j->qf;
    int status = R_DEFERRED;
    bool local = false, pending = false;
    long long t_start = 0, t_end = 0;
    buf_t text = BUF_INIT;
    for (size_t i = 0; i < qf->nrcpt; i++)
        pending = pending || !qf->rcpt_done[i];
    if (pending) {
        t_start = now_usec();
        if (qf->filter) {
            buf_puts(&text, FILTER_LATER);
        } else if (!(local = is_local_domain(j, qf->redirect))) {
            buf_puts(&text, NO_TRANSPORT);
        } else {
            /* The Maildir agent delivers rcpts[i]: show it the redirect
             * address as the only recipient (Delivered-To: names it). */
            qfile_t view = *qf;
            char *only[1] = {qf->redirect};
            view.rcpts = only;
            view.nrcpt = 1;
            if (local_deliver_to(j->spool_root, j->delims, &view, 0, detail) == 0) {
                status = R_SENT;
                buf_puts(&text, buf_cstr(detail));
            } else {
                buf_printf(&text, "maildir delivery failed: %s", buf_cstr(detail));
            }
        }
        t_end = now_usec();
    }
    for (size_t i = 0; i < qf->nrcpt; i++) {
        rres_t *r = &j->res[i];
        if (qf->rcpt_done[i]) {
            r->status = R_DONE_BEFORE;
            continue;
        }
        r->status = status;
        r->local = local;
        r->t_start = t_start;
        r->t_end = t_end;
        r->text = xstrdup(buf_cstr(&text));
        if (status != R_SENT) {
            j->all_done = false;
            continue;
        }
        buf_reset(detail);
        /* Delivered but not recorded: the retry delivers again (a
         * duplicate, never a loss). */
        if (qfile_mark_done(qf, i, detail) != 0) {
            log_warn("qmgr", "%s: cannot record delivery to <%s>: %s", j->m->id, qf->rcpts[i],
                     buf_cstr(detail));
            j->all_done = false;
        }
    }
    buf_free(&text);
    if (j->all_done) {
        buf_reset(detail);
        if (spool_remove(j->q->spool, j->m->id, detail) == 0)
            j->removed = true;
        else
            log_warn("qmgr", "%s: cannot remove queue file: %s", j->m->id, buf_cstr(detail));
    }
}

static void deliver_work(void *arg)
{
    djob_t *j = arg;
    qfile_t *qf = &j->qf;
    buf_t detail = BUF_INIT;

    int rc = qfile_read(j->path, qf, &j->err);
    if (rc == 0 && strcmp(qf->queue_id, j->m->id) != 0) {
        buf_printf(&j->err, "queue id %s does not match the file name", qf->queue_id);
        qfile_free(qf);
        errno = EBADMSG;
        rc = -1;
    }
    if (rc != 0) {
        if (errno == ENOENT) {
            j->outcome = J_GONE;
        } else if (errno == EBADMSG) {
            buf_t why = BUF_INIT;
            j->outcome = J_CORRUPT;
            if (spool_quarantine(j->q->spool, j->m->id, &why) == 0) {
                log_warn("qmgr", "%s: corrupt queue file: %s; moved to corrupt/", j->m->id,
                         buf_cstr(&j->err));
            } else {
                log_error("qmgr", "%s: corrupt queue file: %s; cannot move it aside: %s",
                          j->m->id, buf_cstr(&j->err), buf_cstr(&why));
                j->outcome = J_ERROR;
            }
            buf_free(&why);
        } else {
            j->outcome = J_ERROR;
        }
        return;
    }
    j->outcome = J_OK;
    j->res = xcalloc(qf->nrcpt, sizeof *j->res);
    j->all_done = true;
    if (qf->filter || qf->redirect) {
        deliver_actions(j, &detail);
        buf_free(&detail);
        return;
    }
    for (size_t i = 0; i < qf->nrcpt; i++) {
        rres_t *r = &j->res[i];
        if (qf->rcpt_done[i]) {
            r->status = R_DONE_BEFORE;
            continue;
        }
        r->t_start = now_usec();
        r->local = is_local_domain(j, qf->rcpts[i]);
        if (!r->local) {
            r->status = R_DEFERRED;
            r->text = xstrdup(NO_TRANSPORT);
        } else if (local_deliver_to(j->spool_root, j->delims, qf, i, &detail) == 0) {
            r->status = R_SENT;
            r->text = xstrdup(buf_cstr(&detail));
            buf_reset(&detail);
            /* Delivered but not recorded: the retry delivers again (a
             * duplicate, never a loss). */
            if (qfile_mark_done(qf, i, &detail) != 0) {
                log_warn("qmgr", "%s: cannot record delivery to <%s>: %s", j->m->id,
                         qf->rcpts[i], buf_cstr(&detail));
                j->all_done = false;
            }
        } else {
            r->status = R_DEFERRED;
            buf_t t = BUF_INIT;
            buf_printf(&t, "maildir delivery failed: %s", buf_cstr(&detail));
            r->text = buf_steal(&t);
        }
        r->t_end = now_usec();
        if (r->status == R_DEFERRED)
            j->all_done = false;
    }
    if (j->all_done) {
        buf_reset(&detail);
        if (spool_remove(j->q->spool, j->m->id, &detail) == 0)
            j->removed = true;
        else
            log_warn("qmgr", "%s: cannot remove queue file: %s", j->m->id, buf_cstr(&detail));
    }
    buf_free(&detail);
}

/* ------------------------------------------------------------------ */
/* logging (loop thread)                                                */

/* Postfix's delay style: two decimals below 1s, one below 10s, whole
 * seconds above, trailing zeros dropped ("0.05", "1.2", "12", "0"). */
static void fmt_delay(char *out, size_t n, long long usec)
{
    double s = usec > 0 ? (double)usec / 1e6 : 0;
    int prec = s >= 10 ? 0 : s >= 1 ? 1 : 2;
    snprintf(out, n, "%.*f", prec, s);
    if (strchr(out, '.')) {
        size_t len = strlen(out);
        while (len > 0 && out[len - 1] == '0')
            out[--len] = 0;
        if (len > 0 && out[len - 1] == '.')
            out[--len] = 0;
    }
}

static void log_results(djob_t *j)
{
    qfile_t *qf = &j->qf;
    const char *id = j->m->id;

    log_info("qmgr", "%s: from=<%s>, size=%ld, nrcpt=%zu (queue active)", id, qf->sender,
             qf->content_size, qf->nrcpt);
    for (size_t i = 0; i < qf->nrcpt; i++) {
        rres_t *r = &j->res[i];
        char total[32], a[32], b[32], d[32];
        if (r->status == R_DONE_BEFORE)
            continue;
        /* a: arrival until qmgr took it; b: in qmgr until this delivery
         * began; c: connection setup (none for local); d: the delivery. */
        fmt_delay(total, sizeof total, r->t_end - qf->arrival_usec);
        fmt_delay(a, sizeof a, j->t_submit - qf->arrival_usec);
        fmt_delay(b, sizeof b, r->t_start - j->t_submit);
        fmt_delay(d, sizeof d, r->t_end - r->t_start);
        /* A redirected message names its new address, and the original
         * recipient as orig_to=, as Postfix does. */
        char to[600];
        if (qf->redirect && !qf->filter)
            snprintf(to, sizeof to, "%s>, orig_to=<%s", qf->redirect, qf->rcpts[i]);
        else
            snprintf(to, sizeof to, "%s", qf->rcpts[i]);
        if (r->status == R_SENT) {
            log_info("local", "%s: to=<%s>, relay=local, delay=%s, delays=%s/%s/0/%s, "
                     "dsn=2.0.0, status=sent (delivered to maildir)",
                     id, to, total, a, b, d);
            log_debug("local", "%s: to=<%s>: %s", id, to, r->text);
        } else {
            log_info(r->local ? "local" : "qmgr",
                     "%s: to=<%s>, relay=%s, delay=%s, delays=%s/%s/0/%s, "
                     "dsn=4.3.0, status=deferred (%s)",
                     id, to, r->local ? "local" : "none", total, a, b, d, r->text);
        }
    }
    if (j->removed)
        log_info("qmgr", "%s: removed", id);
}

static void free_job(djob_t *j)
{
    free(j->path);
    free(j->spool_root);
    free(j->delims);
    free(j->myorigin);
    for (size_t i = 0; i < j->nmydest; i++)
        free(j->mydest[i]);
    free(j->mydest);
    for (size_t i = 0; j->res && i < j->qf.nrcpt; i++)
        free(j->res[i].text);
    free(j->res);
    qfile_free(&j->qf);
    buf_free(&j->err);
    free(j);
}

/* ------------------------------------------------------------------ */
/* scheduling (loop thread)                                             */

static void pump(qmgr_t *q);
static void deliver_done(void *arg);

static void make_ready(qmgr_t *q, qmsg_t *m)
{
    m->state = M_READY;
    m->rnext = NULL;
    if (q->ready_tail)
        q->ready_tail->rnext = m;
    else
        q->ready_head = m;
    q->ready_tail = m;
}

static char *param_copy(const params_t *p, param_id id)
{
    const char *v = p ? param_str(p, id) : NULL;
    return xstrdup(v ? v : "");
}

static void start_job(qmgr_t *q, qmsg_t *m)
{
    djob_t *j = xcalloc(1, sizeof *j);
    buf_t path = BUF_INIT;
    j->q = q;
    j->m = m;
    spool_active_path(q->spool, m->id, &path);
    j->path = buf_steal(&path);
    j->spool_root = param_copy(q->params, PARAM_mail_spool_directory);
    j->delims = param_copy(q->params, PARAM_recipient_delimiter);
    j->myorigin = param_copy(q->params, PARAM_myorigin);
    if (q->params) {
        const char *const *items = NULL;
        size_t n = param_list(q->params, PARAM_mydestination, &items);
        j->mydest = xcalloc(n ? n : 1, sizeof *j->mydest);
        for (size_t i = 0; i < n; i++)
            j->mydest[i] = xstrdup(items[i]);
        j->nmydest = n;
    }
    j->t_submit = now_usec();
    m->state = M_RUNNING;
    q->busy++;
    pool_submit(q->pool, m, deliver_work, deliver_done, j);
}

static void pump(qmgr_t *q)
{
    while (!q->dead && q->busy < QMGR_MAX_JOBS && q->ready_head) {
        qmsg_t *m = q->ready_head;
        q->ready_head = m->rnext;
        if (!q->ready_head)
            q->ready_tail = NULL;
        m->rnext = NULL;
        start_job(q, m);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    qmsg_t *m = arg;
    (void)fd;
    (void)what;
    make_ready(m->q, m);
    pump(m->q);
}

static void schedule_retry(qmgr_t *q, qmsg_t *m)
{
    long long delay = q->params ? param_int(q->params, PARAM_queue_run_delay) : 300;
    struct timeval tv = {(time_t)(delay > 0 ? delay : 1), 0};
    if (!m->timer)
        m->timer = evtimer_new(q->base, on_retry, m);
    m->state = M_WAITING;
    evtimer_add(m->timer, &tv);
}

static void drop(qmgr_t *q, qmsg_t *m)
{
    unlink_msg(q, m);
    free_msg(m);
}

static void deliver_done(void *arg)
{
    djob_t *j = arg;
    qmgr_t *q = j->q;
    qmsg_t *m = j->m;
    bool retry = false;

    q->busy--;
    switch (j->outcome) {
    case J_OK:
        log_results(j);
        retry = !j->removed;
        break;
    case J_GONE:
        if (m->scanned)
            log_debug("qmgr", "%s: queue file gone before delivery", m->id);
        else
            log_warn("qmgr", "%s: queue file vanished before delivery", m->id);
        break;
    case J_CORRUPT:
        break;   /* logged by the job, with the reason */
    case J_ERROR:
        log_warn("qmgr", "%s: cannot read queue file: %s", m->id, buf_cstr(&j->err));
        retry = true;
        break;
    }
    free_job(j);

    if (q->dead) {
        /* qmgr_free() left this message to us; the file stays for recovery. */
        free_msg(m);
        if (q->busy == 0)
            free(q);
        return;
    }
    if (!retry) {
        drop(q, m);
    } else if (m->again) {
        m->again = false;
        make_ready(q, m);
    } else {
        schedule_retry(q, m);
    }
    pump(q);
}

static qmsg_t *enqueue(qmgr_t *q, const char *queue_id)
{
    qmsg_t *m = find(q, queue_id);
    if (!m) {
        m = xcalloc(1, sizeof *m);
        m->q = q;
        str_copy(m->id, queue_id, sizeof m->id);
        unsigned h = bucket(m->id);
        m->hnext = q->table[h];
        q->table[h] = m;
        make_ready(q, m);
    } else if (m->state == M_RUNNING) {
        m->again = true;   /* at most one job per message: run again after this one */
    } else if (m->state == M_WAITING) {
        evtimer_del(m->timer);
        make_ready(q, m);
    }
    return m;
}

void qmgr_enqueue(qmgr_t *q, const char *queue_id)
{
    if (!spool_valid_id(queue_id)) {
        log_warn("qmgr", "ignoring invalid queue id \"%s\"", queue_id ? queue_id : "");
        return;
    }
    qmsg_t *m = enqueue(q, queue_id);
    m->scanned = false;
    pump(q);
}

/* ------------------------------------------------------------------ */
/* rescanning active/ (a released hold/ID arrives there from outside)   */

typedef struct scan_job {
    qmgr_t *q;
    char *dir;
    char **ids;
    size_t n;
} scan_job_t;

static void scan_work(void *arg)
{
    scan_job_t *sj = arg;
    DIR *d = opendir(sj->dir);
    size_t cap = 0;
    if (!d) {
        log_warn("qmgr", "rescan: open %s: %m", sj->dir);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!spool_valid_id(de->d_name))
            continue;
        if (sj->n == cap) {
            cap = cap ? cap * 2 : 32;
            sj->ids = xrealloc(sj->ids, cap * sizeof *sj->ids);
        }
        sj->ids[sj->n++] = xstrdup(de->d_name);
    }
    closedir(d);
}

static void scan_done(void *arg)
{
    scan_job_t *sj = arg;
    qmgr_t *q = sj->q;
    size_t added = 0;
    q->busy--;
    q->scanning = false;
    for (size_t i = 0; i < sj->n; i++) {
        /* Known ones are being handled; only strangers are news. */
        if (!q->dead && !find(q, sj->ids[i])) {
            enqueue(q, sj->ids[i])->scanned = true;
            added++;
        }
        free(sj->ids[i]);
    }
    free(sj->ids);
    free(sj->dir);
    free(sj);
    if (q->dead) {
        if (q->busy == 0)
            free(q);
        return;
    }
    if (added)
        log_info("qmgr", "rescan of the active queue: %zu new message%s", added, added == 1 ? "" : "s");
    pump(q);
}

static void rescan(qmgr_t *q)
{
    if (q->scanning || q->dead)
        return;
    buf_t dir = BUF_INIT;
    buf_printf(&dir, "%s/active", spool_dir(q->spool));
    scan_job_t *sj = xcalloc(1, sizeof *sj);
    sj->q = q;
    sj->dir = buf_steal(&dir);
    q->scanning = true;
    q->busy++;
    pool_submit(q->pool, sj, scan_work, scan_done, sj);
}

void qmgr_free(qmgr_t **qp)
{
    qmgr_t *q = *qp;
    if (!q)
        return;
    *qp = NULL;
    /* Messages stay on disk: the next start-up recovers them. */
    for (size_t b = 0; b < QMGR_BUCKETS; b++) {
        qmsg_t *m = q->table[b];
        while (m) {
            qmsg_t *next = m->hnext;
            if (m->state != M_RUNNING)
                free_msg(m);   /* a running one is freed by its done callback */
            m = next;
        }
        q->table[b] = NULL;
    }
    q->ready_head = q->ready_tail = NULL;
    if (q->busy == 0)
        free(q);
    else
        q->dead = true;
}
