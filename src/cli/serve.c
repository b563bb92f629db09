/*
 * serve: `moat serve` — the daemon.  Loads the configuration, claims the
 * queue (its control socket), recovers it, starts the queue manager,
 * opens the listeners and runs the event loop until SIGTERM.
 *
 * Order matters for the durability promise: the control socket is bound
 * first (a second daemon on the same queue refuses to start before it
 * could touch anything), the queue is recovered (incomplete files
 * removed, complete ones scheduled) before any port opens, and on SIGTERM
 * the loop runs until every session has ended, every delivery in flight
 * has been recorded and every disk job has finished, so nothing
 * acknowledged is half-written.  SIGHUP reloads: a configuration that
 * fails to load or bind is logged and the running one stays.
 *
 * The server and the queue manager each get their own config_t (loaded
 * from the same files): each keeps its generations alive as long as its
 * own users need them.
 */
#include "cli/cli.h"

#include "config/config.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/util.h"
#include "core/version.h"
#include "queue/control.h"
#include "queue/qmgr.h"
#include "queue/spool.h"
#include "smtp/smtpd.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct daemon {
    struct event_base *base;
    const char *confdir;       /* NULL: embedded default */
    char *queue_dir;
    pool_t *pool;
    spool_t *spool;
    qmgr_t *qmgr;
    config_t *qcfg;            /* a reference to the first configuration, borrowed by the queue manager */
    dns_t *dns;                /* the queue manager's resolver */
    char *dns_key;
    qctl_t *ctl;
    server_t *srv;
    struct event *sig_term, *sig_int, *sig_hup, *drain_timer;
    double stop_started;
    bool stopping, forced;
} daemon_t;

static const char *confname(const daemon_t *d)
{
    return d->confdir ? d->confdir : "<embedded>";
}

/* Log warnings and a one-time list of ignored Postfix parameters. */
static void log_config_notes(const config_t *cfg, const buf_t *warn)
{
    const char *p = buf_cstr(warn);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n)
            log_warn("master", "%.*s", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
    const char *ign = config_ignored(cfg);
    if (*ign)
        log_info("master", "ignoring Postfix parameters that moat does not use: %s", ign);
    ign = config_ignored_services(cfg);
    if (*ign)
        log_info("master", "ignoring master.cf services that moat does not run: %s", ign);
}

static void log_errors(const buf_t *err)
{
    const char *p = buf_cstr(err);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n)
            log_error("master", "%.*s", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

static int open_log(const params_t *p)
{
    return log_open(param_str(p, PARAM_syslog_name), param_str(p, PARAM_syslog_facility),
                    param_str(p, PARAM_maillog_file));
}

/* data_directory and the Maildir root exist from the start (the embedded
 * default keeps them under the current directory). */
static void make_dirs(const params_t *p)
{
    const char *dirs[] = {param_str(p, PARAM_data_directory), param_str(p, PARAM_mail_spool_directory)};
    for (size_t i = 0; i < ARRAY_LEN(dirs); i++)
        if (*dirs[i] && mkdir_p(dirs[i], 0755) != 0)
            log_warn("master", "cannot create directory %s: %m", dirs[i]);
}

/* The queue manager's resolver: the running one while the dns_*
 * parameters did not change (its cache survives a reload).  Borrowed:
 * d keeps a reference, the queue manager takes its own. */
static dns_t *qmgr_resolver(daemon_t *d, const params_t *p, buf_t *err)
{
    buf_t key = BUF_INIT;
    smtpd_resolver_new(p, NULL, &key, err);
    if (!d->dns || strcmp(d->dns_key, buf_cstr(&key)) != 0) {
        dns_t *dns = smtpd_resolver_new(p, d->base, NULL, err);
        if (dns) {
            dns_unref(&d->dns);
            d->dns = dns;
            free(d->dns_key);
            d->dns_key = buf_steal(&key);
        }
    }
    buf_free(&key);
    return d->dns;
}

/* The queue manager's side of a reload: a reference to the configuration
 * the server just took (requests in flight keep the old one). */
static void qmgr_reload(daemon_t *d, config_t *cfg)
{
    buf_t err = BUF_INIT;
    config_t *qcfg = config_ref(cfg);
    dns_t *dns = qmgr_resolver(d, config_main(qcfg), &err);
    if (qmgr_set_config(d->qmgr, qcfg, dns, &err) != 0)
        config_free(&qcfg);
    if (!qcfg) {
        log_errors(&err);
        log_warn("master", "reload: the queue manager keeps its running configuration");
    }
    buf_free(&err);
}

/* The control socket (`moat queue flush` ...), answered by the queue manager. */
static void on_control(void *arg, const char *cmd, const char *cmd_arg, buf_t *reply)
{
    daemon_t *d = arg;
    if (d->qmgr)
        qmgr_control(d->qmgr, cmd, cmd_arg, reply);
    else
        buf_puts(reply, "error the queue manager is starting");
}

/* Every message in memory holds its queue file open (for its marks):
 * allow as many descriptors as the system lets us. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("master", "cannot raise the open file limit: %m");
    }
}

static void reload(daemon_t *d)
{
    buf_t err = BUF_INIT, warn = BUF_INIT;
    log_info("master", "reload -- version %s, configuration %s", MOAT_VERSION, confname(d));
    config_t *cfg = config_load(d->confdir, &err, &warn);
    if (!cfg) {
        log_errors(&err);
        log_warn("master", "reload failed: keeping the running configuration");
        goto out;
    }
    const params_t *p = config_main(cfg);
    if (strcmp(param_str(p, PARAM_queue_directory), d->queue_dir) != 0)
        log_warn("master", "queue_directory changed: restart moat for that to take effect");
    if (server_configure(d->srv, cfg, &err) != 0) {
        log_errors(&err);
        log_warn("master", "reload failed: keeping the running configuration");
        config_free(&cfg);
        goto out;
    }
    /* cfg now belongs to the server's current generation. */
    qmgr_reload(d, cfg);
    make_dirs(p);
    if (open_log(p) != 0)
        log_warn("master", "cannot open maillog_file %s: %m", param_str(p, PARAM_maillog_file));
    log_config_notes(cfg, &warn);
out:
    buf_free(&err);
    buf_free(&warn);
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    daemon_t *d = arg;
    const config_t *cfg = server_config(d->srv);
    double limit = (double)param_int(config_main(cfg), PARAM_moat_shutdown_timeout);
    double waited = now_mono() - d->stop_started;
    if (!d->forced && waited >= limit) {
        d->forced = true;
        log_info("master", "shutdown timeout: closing %u sessions", server_nsessions(d->srv));
        server_close_sessions(d->srv, true);
    }
    if (server_nsessions(d->srv) == 0 && pool_pending(d->pool) == 0 && qmgr_busy(d->qmgr) == 0) {
        event_base_loopexit(d->base, NULL);
        return;
    }
    /* Deliveries that outlive the timeout (every client stage has its own
     * timeout, so this is a remote server stuck beyond them): their
     * messages stay in active/ and are delivered again at the next start. */
    if (d->forced && waited >= limit + 5 && server_nsessions(d->srv) == 0 && pool_pending(d->pool) == 0) {
        log_warn("master", "shutdown timeout: abandoning %u deliveries in flight (their messages stay queued)",
                 qmgr_busy(d->qmgr));
        log_info("master", "stopped -- version %s", MOAT_VERSION);
        log_close();
        _exit(0);
    }
    struct timeval tv = {0, 50000};
    evtimer_add(d->drain_timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    daemon_t *d = arg;
    if (sig == SIGHUP) {
        reload(d);
        return;
    }
    if (d->stopping)
        return;
    d->stopping = true;
    d->stop_started = now_mono();
    log_info("master", "terminating on signal %d", (int)sig);
    qmgr_stop(d->qmgr);
    server_stop_listening(d->srv);
    server_close_sessions(d->srv, false);
    drain_check(-1, 0, d);
}

static void recovered(void *arg, const char *queue_id)
{
    qmgr_enqueue(arg, queue_id);
}

static void serve_usage(FILE *f)
{
    fprintf(f, "usage: moat serve [-c DIR] [-v]\n"
               "  Run the SMTP gateway in the foreground.\n"
               "  -c DIR  read DIR/main.cf and DIR/master.cf (Postfix syntax);\n"
               "          without -c, the embedded default configuration serves\n"
               "          127.0.0.1:2525 and delivers to ./var/mail/\n"
               "  -v      verbose logging\n"
               "  Signals: SIGHUP reloads the configuration; SIGTERM stops accepting,\n"
               "  lets sessions finish (moat_shutdown_timeout) and exits 0.\n");
}

int cmd_serve(int argc, char **argv)
{
    daemon_t d = {0};
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    char confbuf[PATH_MAX];
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (!realpath(optarg, confbuf)) {
                fprintf(stderr, "moat: %s: %m\n", optarg);
                return 1;
            }
            d.confdir = confbuf;
            break;
        case 'v':
            log_verbose++;
            break;
        case 'h':
            serve_usage(stdout);
            return 0;
        default:
            serve_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        serve_usage(stderr);
        return 2;
    }

    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load(d.confdir, &err, &warn);
    if (!cfg) {
        fputs(buf_cstr(&err), stderr);
        buf_free(&err);
        buf_free(&warn);
        return 1;
    }
    const params_t *p = config_main(cfg);
    if (open_log(p) != 0) {
        fprintf(stderr, "moat: cannot open maillog_file %s: %m\n", param_str(p, PARAM_maillog_file));
        config_free(&cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    evthread_use_pthreads();
    d.base = event_base_new();
    d.queue_dir = xstrdup(param_str(p, PARAM_queue_directory));
    d.pool = pool_new(d.base, (int)param_int(p, PARAM_moat_io_threads));
    int status = 1;
    d.spool = spool_open(d.queue_dir, d.pool, &err);
    if (!d.spool) {
        fprintf(stderr, "moat: %s\n", buf_cstr(&err));
        log_error("master", "%s", buf_cstr(&err));
        config_free(&cfg);
        goto done;
    }
    make_dirs(p);
    /* First: a second daemon on this queue must stop here, before its
     * recovery could remove the first one's files in incoming/. */
    d.ctl = qctl_listen(d.base, d.queue_dir, on_control, &d, &err);
    if (!d.ctl)
        goto startup_error;
    d.qcfg = config_ref(cfg);
    dns_t *dns = qmgr_resolver(&d, config_main(d.qcfg), &err);
    if (!dns)
        goto startup_error;
    d.qmgr = qmgr_new(d.base, d.pool, d.spool, d.qcfg, dns, &err);
    if (!d.qmgr)
        goto startup_error;
    d.srv = server_new(d.base, d.spool, d.qmgr);

    int removed = spool_recover(d.spool, recovered, d.qmgr);
    if (removed > 0)
        log_info("master", "removed %d incomplete queue files", removed);
    if (server_configure(d.srv, cfg, &err) != 0) {
        fputs(buf_cstr(&err), stderr);
        log_errors(&err);
        config_free(&cfg);
        goto done;
    }
    log_info("master", "daemon started -- version %s, configuration %s", MOAT_VERSION, confname(&d));
    log_config_notes(cfg, &warn);

    d.sig_term = evsignal_new(d.base, SIGTERM, on_signal, &d);
    d.sig_int = evsignal_new(d.base, SIGINT, on_signal, &d);
    d.sig_hup = evsignal_new(d.base, SIGHUP, on_signal, &d);
    d.drain_timer = evtimer_new(d.base, drain_check, &d);
    evsignal_add(d.sig_term, NULL);
    evsignal_add(d.sig_int, NULL);
    evsignal_add(d.sig_hup, NULL);

    event_base_dispatch(d.base);

    log_info("master", "stopped -- version %s", MOAT_VERSION);
    event_free(d.sig_term);
    event_free(d.sig_int);
    event_free(d.sig_hup);
    event_free(d.drain_timer);
    status = 0;
    goto done;
startup_error:
    fprintf(stderr, "moat: %s\n", buf_cstr(&err));
    log_errors(&err);
    config_free(&cfg);
done:
    buf_free(&err);
    buf_free(&warn);
    qctl_close(&d.ctl);
    server_free(&d.srv);
    /* Before the pool: a queue manager with jobs left (a failed start)
     * finishes freeing itself in their callbacks, which pool_free runs. */
    qmgr_free(&d.qmgr);
    pool_free(&d.pool);        /* nothing pending: drain_check waited for it */
    config_free(&d.qcfg);      /* after the queue manager, which borrowed it */
    dns_unref(&d.dns);
    free(d.dns_key);
    spool_close(&d.spool);
    free(d.queue_dir);
    event_base_free(d.base);
    log_close();
    return status;
}
