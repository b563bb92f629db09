/*
 * fuzz_session: whole SMTP sessions.  Each input is what one client sends
 * (then it half-closes); the session runs on a real event loop with a
 * real spool and queue manager in a temporary directory, so the command
 * parser, ESMTP parameters, DATA/BDAT paths, limits and the commit path
 * are all exercised.  Input bytes 0..1 choose a variant: bare-newline
 * mode reject, and PROXY-protocol on.
 */
#include "config/config.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/util.h"
#include "queue/qmgr.h"
#include "queue/spool.h"
#include "smtp/smtpd.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct event_base *base;
static pool_t *pool;
static spool_t *spool;
static qmgr_t *qmgr;
static server_t *srv[4];

static server_t *make_server(const char *dir, int variant)
{
    char main_cf[2048], master_cf[256];
    snprintf(main_cf, sizeof main_cf,
             "myhostname = fuzz.example.test\n"
             "mydestination = example.test, localhost\n"
             "queue_directory = %s/queue\n"
             "data_directory = %s/data\n"
             "mail_spool_directory = %s/mail/\n"
             "smtpd_error_sleep_time = 0\n"
             "smtpd_timeout = 1s\n"
             "message_size_limit = 20000\n"
             "smtpd_recipient_limit = 5\n"
             "smtpd_forbid_bare_newline = %s\n"
             "mynetworks = 10.0.0.0/8\n"
             "%s",
             dir, dir, dir, (variant & 1) ? "reject" : "normalize",
             /* The socketpair peer is "unknown": only an allow-everything
              * list lets the fuzzer past XCLIENT/XFORWARD's 550. */
             (variant & 1) ? "smtpd_authorized_xclient_hosts = static:all\n"
                             "smtpd_authorized_xforward_hosts = static:all\n"
                           : "");
    /* The listener is closed right away: sessions are fed through a
     * socketpair.  Try a few loopback ports in case one is taken. */
    buf_t err = BUF_INIT;
    for (int attempt = 0; attempt < 50; attempt++) {
        snprintf(master_cf, sizeof master_cf, "127.0.0.1:%d inet n - n - - smtpd%s\n",
                 20000 + (int)((getpid() * 7 + attempt * 131 + variant) % 30000),
                 (variant & 2) ? " -o smtpd_upstream_proxy_protocol=haproxy" : "");
        config_t *cfg = config_load_text(main_cf, master_cf, &err, NULL);
        if (!cfg) {
            fprintf(stderr, "fuzz_session: config: %s\n", buf_cstr(&err));
            abort();
        }
        bool made = !qmgr;
        if (made)
            qmgr = qmgr_new(base, pool, spool, cfg, NULL, &err);   /* borrows cfg: the server keeps it */
        if (made && !qmgr) {
            fprintf(stderr, "fuzz_session: qmgr: %s\n", buf_cstr(&err));
            abort();
        }
        server_t *s = server_new(base, spool, qmgr);
        if (server_configure(s, cfg, &err) == 0) {
            server_stop_listening(s);
            buf_free(&err);
            return s;
        }
        server_free(&s);
        if (made)
            qmgr_free(&qmgr);
        config_free(&cfg);
        buf_reset(&err);
    }
    abort();
}

static char workdir[] = "/tmp/moat-fuzz-session-XXXXXX";

static void remove_workdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", workdir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_session: could not remove %s\n", workdir);
}

static void setup(void)
{
    char *dir = mkdtemp(workdir);
    if (!dir)
        abort();
    atexit(remove_workdir);
    log_open("moat", "mail", "/dev/null");
    base = event_base_new();
    pool = pool_new(base, 2);
    char q[300];
    snprintf(q, sizeof q, "%s/queue", dir);
    buf_t err = BUF_INIT;
    spool = spool_open(q, pool, &err);
    if (!spool)
        abort();
    for (int v = 0; v < 4; v++)
        srv[v] = make_server(dir, v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base)
        setup();
    if (size < 1 || size > 65536)
        return 0;
    server_t *s = srv[data[0] & 3];
    data++;
    size--;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    struct sockaddr_in peer = {0};
    peer.sin_family = AF_INET;
    peer.sin_port = htons(40000);
    inet_pton(AF_INET, "127.0.0.2", &peer.sin_addr);
    session_start(s, server_service(s, 0), sv[0], (struct sockaddr *)&peer);

    size_t off = 0;
    bool closed = false;
    char sink[65536];
    for (int i = 0; i < 20000; i++) {
        if (off < size) {
            ssize_t w = write(sv[1], data + off, size - off);
            if (w > 0)
                off += (size_t)w;
        } else if (!closed) {
            shutdown(sv[1], SHUT_WR);
            closed = true;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (read(sv[1], sink, sizeof sink) > 0)
            ;
        if (closed && server_nsessions(s) == 0 && pool_pending(pool) == 0)
            break;
        if (i > 100)
            usleep(100);
    }
    close(sv[1]);
    /* A session still open (e.g. waiting on its timeout) is closed now. */
    server_close_sessions(s, true);
    for (int i = 0; i < 2000 && (server_nsessions(s) > 0 || pool_pending(pool) > 0); i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(100);
    }
    return 0;
}
