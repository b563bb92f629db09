/*
 * pool: see pool.h.
 *
 * Queue discipline: a FIFO of jobs; a worker takes the first job whose
 * chain key is not currently running.  Finished jobs go to a done list
 * and an eventfd wakes the loop, which runs their done callbacks.  The
 * loop thread owns `pending`; workers never call back into the loop.
 */
#include "core/pool.h"
#include "core/log.h"
#include "core/util.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct job {
    struct job *next;
    const void *chain;
    pool_fn work, done;
    void *arg;
} job_t;

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job_t *head, *tail;      /* waiting */
    job_t *done_head, *done_tail;
    const void **running;    /* chain keys in work, one slot per thread */
    int nthreads;
    pthread_t *threads;
    int stopping;
    int efd;
    struct event *ev;
    unsigned pending;        /* loop thread only */
};

static int chain_busy(pool_t *p, const void *chain)
{
    if (!chain)
        return 0;
    for (int i = 0; i < p->nthreads; i++)
        if (p->running[i] == chain)
            return 1;
    return 0;
}

/* Also busy when an earlier waiting job of the same chain exists: keeps order. */
static job_t *take_job(pool_t *p)
{
    job_t *prev = NULL;
    for (job_t *j = p->head; j; prev = j, j = j->next) {
        if (chain_busy(p, j->chain))
            continue;
        int earlier = 0;
        for (job_t *k = p->head; k != j; k = k->next)
            if (j->chain && k->chain == j->chain)
                earlier = 1;
        if (earlier)
            continue;
        if (prev)
            prev->next = j->next;
        else
            p->head = j->next;
        if (p->tail == j)
            p->tail = prev;
        j->next = NULL;
        return j;
    }
    return NULL;
}

static void *worker(void *arg)
{
    pool_t *p = arg;
    int slot;

    pthread_mutex_lock(&p->lock);
    for (slot = 0; slot < p->nthreads; slot++)
        if (pthread_equal(p->threads[slot], pthread_self()))
            break;
    for (;;) {
        job_t *j;
        while (!(j = take_job(p)) && !p->stopping)
            pthread_cond_wait(&p->cond, &p->lock);
        if (!j)
            break;
        p->running[slot] = j->chain;
        pthread_mutex_unlock(&p->lock);

        j->work(j->arg);

        pthread_mutex_lock(&p->lock);
        p->running[slot] = NULL;
        if (p->done_tail)
            p->done_tail->next = j;
        else
            p->done_head = j;
        p->done_tail = j;
        uint64_t one = 1;
        ssize_t w = write(p->efd, &one, sizeof one);
        (void)w;
        pthread_cond_broadcast(&p->cond);   /* a chain may have become free */
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void run_done(pool_t *p)
{
    job_t *list;
    pthread_mutex_lock(&p->lock);
    list = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list) {
        job_t *j = list;
        list = j->next;
        p->pending--;
        if (j->done)
            j->done(j->arg);
        free(j);
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    ssize_t r = read(fd, &n, sizeof n);
    (void)r;
    run_done(arg);
}

pool_t *pool_new(struct event_base *base, int nthreads)
{
    pool_t *p = xcalloc(1, sizeof *p);
    if (nthreads < 1)
        nthreads = 1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->nthreads = nthreads;
    p->threads = xcalloc((size_t)nthreads, sizeof *p->threads);
    p->running = xcalloc((size_t)nthreads, sizeof *p->running);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0)
        log_fatal("eventfd: %m");
    p->ev = event_new(base, p->efd, EV_READ | EV_PERSIST, on_wake, p);
    event_add(p->ev, NULL);
    pthread_mutex_lock(&p->lock);   /* workers look up their slot under the lock */
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0)
            log_fatal("pthread_create: %m");
    pthread_mutex_unlock(&p->lock);
    return p;
}

void pool_submit(pool_t *p, const void *chain, pool_fn work, pool_fn done, void *arg)
{
    job_t *j = xcalloc(1, sizeof *j);
    j->chain = chain;
    j->work = work;
    j->done = done;
    j->arg = arg;
    p->pending++;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

unsigned pool_pending(const pool_t *p)
{
    return p->pending;
}

void pool_free(pool_t **pp)
{
    pool_t *p = *pp;
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    run_done(p);
    event_free(p->ev);
    close(p->efd);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->threads);
    free(p->running);
    free(p);
    *pp = NULL;
}
