/*
 * qmgr-jobs: the queue manager's disk work, each a pool job with a done
 * callback on the loop:
 *   load     read a batch of envelopes from active/ (content not read),
 *            keep an fd open for marks, quarantine unreadable files
 *   local    Maildir delivery of one request (local.c)
 *   record   make a request's results durable: bounce records appended
 *            and fsync'd BEFORE their recipients are marked F; sent
 *            recipients marked D (pwrite + fdatasync through the kept fd)
 *   finish   a message whose requests are all done: expiry, the defer
 *            log, the non-delivery notice (all F recipients in one,
 *            injected as a new message, then F -> D), and either removal
 *            (every recipient D) or the move to deferred/ with its next
 *            attempt as the file's mtime
 * Record and finish jobs of one message share a chain key (the message),
 * so they run in order and never at once.
 *
 * Ownership: a job works only on what it was handed (the message's qfile
 * and outcomes are not touched by the loop while a job has them); results
 * are applied to loop state in the done callbacks.  Log lines written here
 * are the ones whose order the job itself decides (notices, "removed").
 *
 * Never: mark F before the bounce record is on disk; mark D before the
 * agent reported success or the notice was queued; remove a file with a
 * recipient not D; send a notice to the null sender.
 */
#include "queue/qmgr-private.h"

#include "core/log.h"
#include "core/util.h"
#include "queue/bounce.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* load                                                                 */

typedef struct loadjob {
    qmgr_t *q;
    qmsg_t **msgs;
    size_t n;
    int *outcome;
    char **err;
} loadjob_t;

static void load_work(void *arg)
{
    loadjob_t *j = arg;
    buf_t path = BUF_INIT, err = BUF_INIT;
    for (size_t k = 0; k < j->n; k++) {
        qmsg_t *m = j->msgs[k];
        buf_reset(&err);
        spool_path(j->q->spool, QUEUE_ACTIVE, m->id, &path);
        int rc = qfile_read(buf_cstr(&path), &m->qf, &err);
        if (rc == 0 && strcmp(m->qf.queue_id, m->id) != 0) {
            buf_printf(&err, "queue id %s does not match the file name", m->qf.queue_id);
            qfile_free(&m->qf);
            errno = EBADMSG;
            rc = -1;
        }
        if (rc == 0 && qfile_open_marks(&m->qf, &err) != 0) {
            qfile_free(&m->qf);
            rc = -1;
        }
        if (rc == 0) {
            j->outcome[k] = LOAD_OK;
        } else if (errno == ENOENT) {
            j->outcome[k] = LOAD_GONE;
        } else if (errno == EBADMSG) {
            buf_t why = BUF_INIT;
            j->outcome[k] = LOAD_CORRUPT;
            if (spool_quarantine(j->q->spool, m->id, &why) == 0) {
                log_warn("qmgr", "%s: corrupt queue file: %s; moved to corrupt/", m->id, buf_cstr(&err));
            } else if (errno == ENOENT) {
                j->outcome[k] = LOAD_GONE;
            } else {
                log_error("qmgr", "%s: corrupt queue file: %s; cannot move it aside: %s", m->id,
                          buf_cstr(&err), buf_cstr(&why));
                j->outcome[k] = LOAD_ERROR;
            }
            buf_free(&why);
        } else {
            j->outcome[k] = LOAD_ERROR;
        }
        if (j->outcome[k] != LOAD_OK)
            j->err[k] = xstrdup(buf_cstr(&err));
    }
    buf_free(&path);
    buf_free(&err);
}

static void load_done(void *arg)
{
    loadjob_t *j = arg;
    qmgr_t *q = j->q;
    bool live = qmgr_job_finished(q);
    for (size_t k = 0; k < j->n; k++) {
        if (live)
            qmgr_msg_loaded(j->msgs[k], j->outcome[k], j->err[k]);
        free(j->err[k]);
    }
    free(j->msgs);
    free(j->outcome);
    free(j->err);
    free(j);
    if (live)
        qmgr_load_job_done(q);
}

void qmgr_job_load(qmgr_t *q, qmsg_t **msgs, size_t n)
{
    loadjob_t *j = xcalloc(1, sizeof *j);
    j->q = q;
    j->n = n;
    j->msgs = xcalloc(n, sizeof *j->msgs);
    memcpy(j->msgs, msgs, n * sizeof *msgs);
    j->outcome = xcalloc(n, sizeof *j->outcome);
    j->err = xcalloc(n, sizeof *j->err);
    qmgr_pool_submit(q, NULL, load_work, load_done, j);
}

/* ------------------------------------------------------------------ */
/* local delivery                                                       */

static void local_work(void *arg)
{
    qreq_t *r = arg;
    const qfile_t *qf = &r->m->qf;
    buf_t detail = BUF_INIT, text = BUF_INIT;
    for (size_t u = 0; u < r->nunit; u++) {
        qunit_t *un = &r->units[u];
        /* The Maildir agent delivers rcpts[i]: show it the unit's address
         * as the only recipient (Delivered-To: names it). */
        qfile_t view;
        memset(&view, 0, sizeof view);
        char *only[1] = {(char *)un->addr};
        view.path = qf->path;
        view.sender = qf->sender;
        view.content_offset = qf->content_offset;
        view.content_size = qf->content_size;
        view.rcpts = only;
        view.nrcpt = 1;
        buf_reset(&text);
        if (local_deliver_to(r->spool_root, r->delims, &view, 0, &detail) == 0) {
            un->result = RR_SENT;
            str_copy(un->dsn, "2.0.0", sizeof un->dsn);
            un->text = xstrdup("delivered to maildir");
            log_debug("local", "%s: to=<%s>: %s", r->m->id, un->addr, buf_cstr(&detail));
        } else {
            un->result = RR_DEFER;
            str_copy(un->dsn, "4.3.0", sizeof un->dsn);
            buf_printf(&text, "maildir delivery failed: %s", buf_cstr(&detail));
            un->text = buf_steal(&text);
        }
    }
    r->t_end = now_usec();
    buf_free(&detail);
    buf_free(&text);
}

static void local_done(void *arg)
{
    qreq_t *r = arg;
    if (!qmgr_job_finished(r->q)) {
        qmgr_req_free(r);
        return;
    }
    str_copy(r->relay, "local", sizeof r->relay);
    qmgr_req_done(r);
}

void qmgr_job_local(qreq_t *r)
{
    qmgr_pool_submit(r->q, NULL, local_work, local_done, r);
}

/* ------------------------------------------------------------------ */
/* record                                                               */

typedef struct recjob {
    qreq_t *r;
    qfile_t view;             /* the message's qfile with this job's own status arrays */
    char *status, *done;
    char *fail;               /* the first failure, for the deferral text */
} recjob_t;

static qlog_rec_t bounce_rec(const qreq_t *r, const qunit_t *u, size_t i)
{
    qlog_rec_t rec = {
        .rcpt = r->m->qf.rcpts[i],
        .orig = "",
        .dsn = (char *)u->dsn,
        .when_usec = r->t_end,
        .relay = (char *)(r->relay[0] ? r->relay : "none"),
        .text = u->text ? u->text : "",
        .reply = u->reply ? u->reply : "",
    };
    return rec;
}

static void record_work(void *arg)
{
    recjob_t *j = arg;
    qreq_t *r = j->r;
    buf_t err = BUF_INIT;
    qlog_rec_t *recs = NULL;
    size_t nrec = 0;
    for (size_t u = 0; u < r->nunit; u++) {
        qunit_t *un = &r->units[u];
        if (un->result != RR_BOUNCE)
            continue;
        recs = xrealloc(recs, (nrec + un->nidx) * sizeof *recs);
        for (size_t k = 0; k < un->nidx; k++)
            recs[nrec++] = bounce_rec(r, un, un->idx[k]);
    }
    /* The reason first, durably: a crash after the F mark must still find it. */
    bool bounce_ok = true;
    if (nrec > 0 && qlog_write(r->q->spool, QLOG_BOUNCE, r->m->id, recs, nrec, &err) != 0) {
        bounce_ok = false;
        log_warn("qmgr", "%s: cannot write the bounce log: %s", r->m->id, buf_cstr(&err));
        j->fail = xstrdup(buf_cstr(&err));
    }
    free(recs);
    for (size_t u = 0; u < r->nunit; u++) {
        qunit_t *un = &r->units[u];
        char to;
        if (un->result == RR_SENT)
            to = QF_DONE;
        else if (un->result == RR_BOUNCE && bounce_ok)
            to = QF_FAILED;
        else
            continue;
        for (size_t k = 0; k < un->nidx; k++) {
            buf_reset(&err);
            if (qfile_mark(&j->view, un->idx[k], to, &err) != 0) {
                log_warn("qmgr", "%s: cannot record delivery to <%s>: %s", r->m->id,
                         r->m->qf.rcpts[un->idx[k]], buf_cstr(&err));
                if (!j->fail)
                    j->fail = xstrdup(buf_cstr(&err));
            }
        }
    }
    buf_free(&err);
}

static void record_done(void *arg)
{
    recjob_t *j = arg;
    qreq_t *r = j->r;
    if (qmgr_job_finished(r->q)) {
        /* Only this request's recipients: other requests of the message
         * record theirs with their own copies. */
        qfile_t *qf = &r->m->qf;
        for (size_t u = 0; u < r->nunit; u++)
            for (size_t k = 0; k < r->units[u].nidx; k++) {
                size_t i = r->units[u].idx[k];
                qf->rcpt_status[i] = j->status[i];
                qf->rcpt_done[i] = j->done[i];
            }
        qmgr_req_recorded(r, j->fail);
    } else {
        qmgr_req_free(r);
    }
    free(j->status);
    free(j->done);
    free(j->fail);
    free(j);
}

/* The message's last request, all sent, everyone else already D: the
 * finishing job removes the file next, and that removal (unlink + fsync
 * of active/) records these deliveries as durably as the marks would, with
 * the same crash window (after the server's reply, before the record:
 * delivered again).  So the marks are skipped. */
static bool removal_records_it(const qreq_t *r)
{
    const qfile_t *qf = &r->m->qf;
    if (r->m->nreq != 1)
        return false;
    for (size_t u = 0; u < r->nunit; u++)
        if (r->units[u].result != RR_SENT)
            return false;
    size_t covered = 0;
    for (size_t u = 0; u < r->nunit; u++)
        covered += r->units[u].nidx;
    size_t done = 0;
    for (size_t i = 0; i < qf->nrcpt; i++)
        done += qf->rcpt_status[i] == QF_DONE;
    return done + covered == qf->nrcpt;
}

void qmgr_job_record(qreq_t *r)
{
    bool work = false;
    for (size_t u = 0; u < r->nunit; u++)
        work = work || r->units[u].result == RR_SENT || r->units[u].result == RR_BOUNCE;
    if (!work) {
        qmgr_req_recorded(r, NULL);   /* deferrals go to the defer log when the message finishes */
        return;
    }
    if (removal_records_it(r)) {
        qfile_t *qf = &r->m->qf;
        for (size_t u = 0; u < r->nunit; u++)
            for (size_t k = 0; k < r->units[u].nidx; k++) {
                qf->rcpt_status[r->units[u].idx[k]] = QF_DONE;
                qf->rcpt_done[r->units[u].idx[k]] = 1;
            }
        qmgr_req_recorded(r, NULL);
        return;
    }
    recjob_t *j = xcalloc(1, sizeof *j);
    qfile_t *qf = &r->m->qf;
    j->r = r;
    j->view = *qf;
    j->status = xmalloc(qf->nrcpt);
    j->done = xmalloc(qf->nrcpt);
    memcpy(j->status, qf->rcpt_status, qf->nrcpt);
    memcpy(j->done, qf->rcpt_done, qf->nrcpt);
    j->view.rcpt_status = j->status;
    j->view.rcpt_done = j->done;
    qmgr_pool_submit(r->q, r->m, record_work, record_done, j);
}

/* ------------------------------------------------------------------ */
/* finish                                                               */

typedef struct finjob {
    qmsg_t *m;
    int outcome;
    char **notices;
    size_t nnotices;
} finjob_t;

static size_t count_status(const qfile_t *qf, char st)
{
    size_t n = 0;
    for (size_t i = 0; i < qf->nrcpt; i++)
        n += qf->rcpt_status[i] == st;
    return n;
}

/* The original content for the notice: all of it when it fits in
 * bounce_size_limit, else enough for bounce_build to take the header. */
static int read_content(qfile_t *qf, long long limit, buf_t *out, buf_t *err)
{
    long long want = qf->content_size;
    if (limit >= 0 && want > limit + 1)
        want = limit + 1;
    bool own = !qf->mark_open;
    int fd = own ? open(qf->path, O_RDONLY | O_CLOEXEC) : qf->mark_fd;
    if (fd < 0) {
        buf_printf(err, "open %s: %s", qf->path, strerror(errno));
        return -1;
    }
    buf_reset(out);
    buf_reserve(out, (size_t)want + 1);
    long long off = qf->content_offset, left = want;
    int rc = 0;
    char chunk[65536];
    while (left > 0) {
        size_t n = left > (long long)sizeof chunk ? sizeof chunk : (size_t)left;
        ssize_t got = pread(fd, chunk, n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            buf_printf(err, "read %s: %s", qf->path, got < 0 ? strerror(errno) : "unexpected end of file");
            rc = -1;
            break;
        }
        buf_append(out, chunk, (size_t)got);
        off += got;
        left -= got;
    }
    if (own)
        close(fd);
    return rc;
}

static bool has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return true;
    return false;
}

/* Mark every F recipient D: their notice is queued (or deliberately not sent). */
static void fail_to_done(qmsg_t *m)
{
    buf_t err = BUF_INIT;
    for (size_t i = 0; i < m->qf.nrcpt; i++) {
        if (m->qf.rcpt_status[i] != QF_FAILED)
            continue;
        buf_reset(&err);
        if (qfile_mark(&m->qf, i, QF_DONE, &err) != 0)
            log_warn("qmgr", "%s: cannot record the notice for <%s>: %s", m->id, m->qf.rcpts[i], buf_cstr(&err));
    }
    buf_free(&err);
}

/* "host" of a relay "host[addr]:port" (NULL for none/local): Remote-MTA. */
static char *remote_mta(const char *relay)
{
    if (!relay || !*relay || strcmp(relay, "none") == 0 || strcmp(relay, "local") == 0)
        return NULL;
    char *host = xstrdup(relay);
    host[strcspn(host, "[")] = 0;
    return host;
}

static bool from_double_bounce(const qgen_t *g, const char *sender, const buf_t *dbs)
{
    return *sender && (str_ieq(sender, buf_cstr(dbs)) || str_ieq(sender, g->double_bounce_sender));
}

/* Build one notice about the message and queue it (spool_inject: durable
 * before this returns 0).  Logged as Postfix's bounce(8) does:
 * "ID: WHAT notification: NEWID". */
static int inject_notice(finjob_t *j, bounce_kind_t kind, const char *notify, const char *env_sender,
                         const bounce_rcpt_t *br, size_t nb, long long retry_until, const char *what)
{
    qmsg_t *m = j->m;
    qfile_t *qf = &m->qf;
    const qgen_t *g = m->gen;
    buf_t err = BUF_INIT, content = BUF_INIT, text = BUF_INIT, date = BUF_INIT;
    int rc = -1;
    char newid[QUEUE_ID_MAX], got[QUEUE_ID_MAX];
    long long now = now_usec();

    if (read_content(qf, g->bounce_size_limit, &content, &err) != 0) {
        log_warn("qmgr", "%s: cannot read the message for its notice: %s", m->id, buf_cstr(&err));
        goto out;
    }
    spool_new_queue_id(m->q->spool, newid);
    bounce_info_t info = {
        .kind = kind,
        .myhostname = g->myhostname,
        .queue_id = m->id,
        .sender = qf->sender,
        .notify = notify,
        .client_name = qf->client_name,
        .client_addr = qf->client_addr,
        .arrival_usec = qf->arrival_usec,
        .now_usec = now,
        .retry_until_usec = retry_until,
        .size_limit = g->bounce_size_limit > 0 ? (size_t)g->bounce_size_limit : 0,
    };
    bounce_date(now, &date);
    buf_printf(&text, "Received: by %s (moat)\n\tid %s; %s\n", g->myhostname, newid, buf_cstr(&date));
    bounce_build(&info, br, nb, content.data ? content.data : "", content.len, &text);
    envelope_t env = {
        .queue_id = newid,
        .arrival_usec = now,
        .client_name = "localhost",
        .client_addr = "127.0.0.1",
        .helo = g->myhostname,
        .protocol = "local",
        .sender = env_sender,
        .rcpts = &notify,
        .nrcpt = 1,
        .body_type = has_8bit(text.data, text.len) ? "8BITMIME" : "",
        .smtputf8 = has_8bit(notify, strlen(notify)),
    };
    if (spool_inject(m->q->spool, &env, text.data, text.len, got, &err) != 0) {
        log_warn("qmgr", "%s: cannot queue the %s notification: %s", m->id, what, buf_cstr(&err));
        goto out;
    }
    log_info("bounce", "%s: %s notification: %s", m->id, what, got);
    j->notices = xrealloc(j->notices, (j->nnotices + 1) * sizeof *j->notices);
    j->notices[j->nnotices++] = xstrdup(got);
    rc = 0;
out:
    buf_free(&err);
    buf_free(&content);
    buf_free(&text);
    buf_free(&date);
    return rc;
}

/* All F recipients of the message in one notice to the sender (or to the
 * postmaster when the message was itself a notice), then F -> D. */
static void send_notice(finjob_t *j)
{
    qmsg_t *m = j->m;
    qfile_t *qf = &m->qf;
    const qgen_t *g = m->gen;
    buf_t dbs = BUF_INIT, notify = BUF_INIT, err = BUF_INIT;

    qmgr_qualify(g->double_bounce_sender, g->myorigin, &dbs);
    if (from_double_bounce(g, qf->sender, &dbs)) {
        /* A postmaster notice that failed: nobody left to tell. */
        log_info("qmgr", "%s: from=<%s>: undeliverable postmaster notification discarded", m->id, qf->sender);
        fail_to_done(m);
        goto out;
    }
    bool dbl = !*qf->sender;   /* never a notice to <>: the postmaster gets it */
    if (dbl)
        qmgr_qualify(g->notice_rcpt, g->myorigin, &notify);
    else
        buf_puts(&notify, qf->sender);

    qlog_rec_t *recs = NULL;
    size_t nrecs = 0;
    if (qlog_read(m->q->spool, QLOG_BOUNCE, m->id, &recs, &nrecs, &err) != 0) {
        log_warn("qmgr", "%s: cannot read the bounce log: %s", m->id, buf_cstr(&err));
        nrecs = 0;
    }
    bounce_rcpt_t *br = xcalloc(qf->nrcpt, sizeof *br);
    size_t nb = 0;
    for (size_t i = 0; i < qf->nrcpt; i++) {
        if (qf->rcpt_status[i] != QF_FAILED)
            continue;
        const qlog_rec_t *rec = NULL;
        for (size_t k = 0; k < nrecs; k++)   /* the newest record for this recipient */
            if (strcmp(recs[k].rcpt, qf->rcpts[i]) == 0)
                rec = &recs[k];
        bounce_rcpt_t *b = &br[nb++];
        b->addr = qf->redirect ? qf->redirect : qf->rcpts[i];
        b->orig = qf->redirect ? qf->rcpts[i] : (rec && *rec->orig ? rec->orig : NULL);
        b->dsn = rec && *rec->dsn ? rec->dsn : "5.0.0";
        b->text = rec ? rec->text : "delivery failed";
        b->reply = rec && *rec->reply ? rec->reply : NULL;
        b->last_attempt_usec = rec ? rec->when_usec : now_usec();
        b->remote_mta = remote_mta(rec ? rec->relay : NULL);
    }
    if (inject_notice(j, dbl ? BOUNCE_DOUBLE : BOUNCE_FAILED, buf_cstr(&notify), dbl ? buf_cstr(&dbs) : "",
                      br, nb, 0, dbl ? "postmaster non-delivery" : "sender non-delivery") == 0)
        fail_to_done(m);   /* queued and durable: a crash before these marks sends it twice, never zero times */
    for (size_t i = 0; i < nb; i++)
        free((char *)br[i].remote_mta);
    free(br);
    qlog_free(&recs, nrecs);
out:
    buf_free(&dbs);
    buf_free(&notify);
    buf_free(&err);
}

/* The defer log's marker record of a sent delay warning: no recipient
 * (so `moat queue list` matches it to none), carried over each time the
 * log is rewritten, gone with the message. */
#define WARNED_TEXT "delay warning sent"

static bool is_warned_marker(const qlog_rec_t *r)
{
    return !*r->rcpt && strcmp(r->text, WARNED_TEXT) == 0;
}

static bool was_warned(qmsg_t *m)
{
    qlog_rec_t *recs = NULL;
    size_t n = 0;
    bool warned = false;
    buf_t err = BUF_INIT;
    if (qlog_read(m->q->spool, QLOG_DEFER, m->id, &recs, &n, &err) == 0)
        for (size_t i = 0; i < n && !warned; i++)
            warned = is_warned_marker(&recs[i]);
    qlog_free(&recs, n);
    buf_free(&err);
    return warned;
}

/* delay_warning_time: one warning per message to its sender, naming the
 * recipients still deferred and their last reasons.  True when sent. */
static bool send_delay_warning(finjob_t *j)
{
    qmsg_t *m = j->m;
    qfile_t *qf = &m->qf;
    const qgen_t *g = m->gen;
    bounce_rcpt_t *br = xcalloc(qf->nrcpt, sizeof *br);
    size_t nb = 0;
    for (size_t i = 0; i < qf->nrcpt; i++) {
        const qrcpt_t *rc = &m->r[i];
        if (qf->rcpt_status[i] != QF_PENDING)
            continue;
        bounce_rcpt_t *b = &br[nb++];
        b->addr = qf->redirect ? qf->redirect : qf->rcpts[i];
        b->orig = qf->redirect ? qf->rcpts[i] : NULL;
        b->dsn = rc->dsn[0] ? rc->dsn : "4.0.0";
        b->text = rc->text && *rc->text ? rc->text : "delivery temporarily deferred";
        b->reply = rc->reply;
        b->last_attempt_usec = rc->when ? rc->when : now_usec();
        b->remote_mta = remote_mta(rc->relay);
    }
    long long until = qf->arrival_usec + g->max_lifetime * 1000000LL;
    bool sent = nb > 0 && inject_notice(j, BOUNCE_DELAYED, qf->sender, "", br, nb, until, "sender delay") == 0;
    for (size_t i = 0; i < nb; i++)
        free((char *)br[i].remote_mta);
    free(br);
    return sent;
}

/* Deferred recipients of a message past its lifetime fail for good. */
static void expire(qmsg_t *m, qmgr_t *q)
{
    qfile_t *qf = &m->qf;
    buf_t err = BUF_INIT;
    qlog_rec_t *recs = xcalloc(qf->nrcpt, sizeof *recs);
    char **texts = xcalloc(qf->nrcpt, sizeof *texts);
    size_t n = 0;
    long long now = now_usec();
    for (size_t i = 0; i < qf->nrcpt; i++) {
        if (qf->rcpt_status[i] != QF_PENDING)
            continue;
        const qrcpt_t *rc = &m->r[i];
        buf_t t = BUF_INIT;
        if (rc->text && *rc->text)
            buf_printf(&t, "message expired; last attempt: %s", rc->text);
        else
            buf_puts(&t, "message expired");
        texts[n] = buf_steal(&t);
        recs[n] = (qlog_rec_t){
            .rcpt = qf->rcpts[i],
            .orig = "",
            .dsn = (char *)(rc->dsn[0] ? rc->dsn : "4.4.7"),
            .when_usec = rc->when ? rc->when : now,
            .relay = rc->relay ? rc->relay : "none",
            .text = texts[n],
            .reply = rc->reply ? rc->reply : "",
        };
        n++;
    }
    if (n > 0 && qlog_write(q->spool, QLOG_BOUNCE, m->id, recs, n, &err) != 0) {
        log_warn("qmgr", "%s: cannot write the bounce log: %s", m->id, buf_cstr(&err));
    } else if (n > 0) {
        log_info("qmgr", "%s: from=<%s>, status=expired, returned to sender", m->id, qf->sender);
        for (size_t i = 0; i < qf->nrcpt; i++) {
            if (qf->rcpt_status[i] != QF_PENDING)
                continue;
            buf_reset(&err);
            if (qfile_mark(qf, i, QF_FAILED, &err) != 0)
                log_warn("qmgr", "%s: cannot record the expiry of <%s>: %s", m->id, qf->rcpts[i], buf_cstr(&err));
        }
    }
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(recs);
    buf_free(&err);
}

/* This round's reasons for the pending recipients, for `moat queue list`
 * (and the delay warning's marker). */
static void write_defer_log(qmsg_t *m, qmgr_t *q, bool warned)
{
    qfile_t *qf = &m->qf;
    qlog_rec_t *recs = xcalloc(qf->nrcpt + 1, sizeof *recs);
    size_t n = 0;
    if (warned)
        recs[n++] = (qlog_rec_t){.rcpt = "", .orig = "", .dsn = "4.0.0", .when_usec = now_usec(),
                                 .relay = "none", .text = WARNED_TEXT, .reply = ""};
    buf_t err = BUF_INIT;
    for (size_t i = 0; i < qf->nrcpt; i++) {
        const qrcpt_t *rc = &m->r[i];
        if (qf->rcpt_status[i] != QF_PENDING || rc->result != RR_DEFER)
            continue;
        recs[n++] = (qlog_rec_t){
            .rcpt = qf->rcpts[i],
            .orig = "",
            .dsn = (char *)(rc->dsn[0] ? rc->dsn : "4.0.0"),
            .when_usec = rc->when,
            .relay = rc->relay ? rc->relay : "none",
            .text = rc->text ? rc->text : "",
            .reply = rc->reply ? rc->reply : "",
        };
    }
    if (n > 0 && qlog_write(q->spool, QLOG_DEFER, m->id, recs, n, &err) != 0)
        log_warn("qmgr", "%s: cannot write the defer log: %s", m->id, buf_cstr(&err));
    free(recs);
    buf_free(&err);
}

static void finish_work(void *arg)
{
    finjob_t *j = arg;
    qmsg_t *m = j->m;
    qmgr_t *q = m->q;
    qfile_t *qf = &m->qf;
    const qgen_t *g = m->gen;
    buf_t err = BUF_INIT;
    long long now = now_usec();
    long long age = now > qf->arrival_usec ? (now - qf->arrival_usec) / 1000000 : 0;
    long long lifetime = *qf->sender ? g->max_lifetime : g->bounce_lifetime;

    if (count_status(qf, QF_PENDING) > 0 && age >= lifetime)
        expire(m, q);
    if (count_status(qf, QF_PENDING) > 0) {
        bool warned = false;
        buf_t dbs = BUF_INIT;
        qmgr_qualify(g->double_bounce_sender, g->myorigin, &dbs);
        if (g->delay_warning > 0 && *qf->sender && !from_double_bounce(g, qf->sender, &dbs)) {
            warned = was_warned(m);
            if (!warned && age >= g->delay_warning)
                warned = send_delay_warning(j);
        }
        buf_free(&dbs);
        write_defer_log(m, q, warned);
    }
    if (count_status(qf, QF_FAILED) > 0)
        send_notice(j);

    if (count_status(qf, QF_PENDING) == 0 && count_status(qf, QF_FAILED) == 0) {
        /* Everyone is D: the logs first, so no orphan log outlives its file. */
        qlog_remove(q->spool, m->id);
        if (spool_remove(q->spool, m->id, &err) == 0) {
            log_info("qmgr", "%s: removed", m->id);
            j->outcome = FIN_REMOVED;
        } else {
            log_warn("qmgr", "%s: cannot remove queue file: %s", m->id, buf_cstr(&err));
            j->outcome = FIN_KEPT;
        }
        buf_free(&err);
        return;
    }
    /* The next attempt's time is the file's mtime, set before the move so
     * that a scan never sees it in deferred/ with an old one. */
    long long wait = qmgr_backoff(age, g->min_backoff, g->max_backoff);
    struct timespec ts[2] = {{(time_t)(now / 1000000 + wait), 0}, {(time_t)(now / 1000000 + wait), 0}};
    if (qf->mark_open ? futimens(qf->mark_fd, ts) != 0 : utimensat(AT_FDCWD, qf->path, ts, 0) != 0)
        log_warn("qmgr", "%s: cannot set the next attempt time: %m", m->id);
    if (spool_move(q->spool, m->id, QUEUE_ACTIVE, QUEUE_DEFERRED, &err) == 0) {
        j->outcome = FIN_DEFERRED;
    } else if (errno == ENOENT) {
        j->outcome = FIN_GONE;   /* `moat queue` held or deleted it meanwhile */
    } else {
        log_warn("qmgr", "%s: cannot move to the deferred queue: %s", m->id, buf_cstr(&err));
        j->outcome = FIN_KEPT;
    }
    buf_free(&err);
}

static void finish_done(void *arg)
{
    finjob_t *j = arg;
    if (qmgr_job_finished(j->m->q)) {
        qmgr_msg_finished(j->m, j->outcome, j->notices, j->nnotices);
    } else {
        for (size_t i = 0; i < j->nnotices; i++)
            free(j->notices[i]);
        free(j->notices);
    }
    free(j);
}

void qmgr_job_finish(qmsg_t *m)
{
    finjob_t *j = xcalloc(1, sizeof *j);
    j->m = m;
    qmgr_pool_submit(m->q, m, finish_work, finish_done, j);
}
