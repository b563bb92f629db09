/*
 * smtpc_testlib: what the SMTP client's event-loop tests share
 * (test_smtpc_lib.c): a world (loop, pool, client, configuration, temp
 * directory), a scripted SMTP/LMTP server on 127.0.0.1 or a Unix socket
 * that records every byte it receives, a tiny DNS server on UDP
 * 127.0.0.1, and request helpers that write a queue-like file and wait
 * for done().
 */
#ifndef MOAT_TEST_SMTPC_TESTLIB_H
#define MOAT_TEST_SMTPC_TESTLIB_H

#include <stdbool.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/pool.h"
#include "dns/dns.h"
#include "queue/smtpc.h"

struct event_base;
struct evconnlistener;
typedef struct tsrv tsrv_t;
typedef struct tdns tdns_t;

typedef struct tworld {
    struct event_base *base;
    pool_t *pool;
    smtpc_t *c;
    config_t *cfg;
    const params_t *p;
    dns_t *dns;              /* set by tdns_new */
    char dir[64];
    int nfile;
    tsrv_t *srv[16];
    int nsrv;
    tdns_t *tdns;
    smtpc_self_t self;
    const char *listen[4];
} tworld_t;

/* main_extra: more main.cf lines (may be NULL). */
void tworld_init(tworld_t *w, const char *main_extra);
void tworld_free(tworld_t *w);
/* Run the loop for secs. */
void tworld_spin(tworld_t *w, double secs);

typedef struct tconn tconn_t;

struct tsrv {
    tworld_t *w;
    struct evconnlistener *lis;
    int port;
    char path[108];
    char addr[64];
    /* the script: NULL means the default reply */
    const char *greeting, *ehlo, *helo, *mail, *rcpt_default, *data_reply, *data_end, *xforward, *rset;
    const char *lmtp_end[8];
    char *rcpt_addr[8], *rcpt_reply[8];
    int nrcpt;
    const char *drop_at;     /* greeting | mail | rcpt | data | data_end: close there */
    const char *garbage_at;  /* greeting | ehlo | mail | rcpt | data | data_end: answer "xyz" */
    bool silent;             /* never answer */
    /* what happened */
    buf_t log;               /* every command line, CRLF included */
    buf_t data;              /* the last transaction's content as received, final dot included */
    int sessions, transactions, rsets, quits, max_batch;
    tconn_t *conns;
};

/* A server on addr (NULL: 127.0.0.1), ephemeral port. */
tsrv_t *tsrv_new(tworld_t *w, const char *addr);
/* The same on a given port (0: ephemeral). */
tsrv_t *tsrv_new_at(tworld_t *w, const char *addr, int port);
tsrv_t *tsrv_new_unix(tworld_t *w);
void tsrv_rcpt(tsrv_t *s, const char *addr, const char *reply);
/* Drop every open connection (the server side closes). */
void tsrv_close_all(tsrv_t *s);
/* A TCP port on 127.0.0.1 nobody listens on (at the time of the call). */
int tfree_port(void);

/* A DNS server answering from a table: "name TYPE data" lines, e.g.
 * "mx.test MX 10 a.mx.test", "a.mx.test A 127.0.0.1", "gone.test
 * NXDOMAIN", "fail.test SERVFAIL".  A name in the table without the
 * asked type answers NODATA; an unknown name NXDOMAIN.  Sets w->dns. */
void tdns_new(tworld_t *w, const char *table);

typedef struct treq {
    tworld_t *w;
    smtpc_request_t req;
    transport_t t;
    smtpc_rcpt_t rcpts[8];
    char *addrs[8];
    char path[128];
    char nexthop[300];
    bool done;
} treq_t;

treq_t *treq_new(tworld_t *w, const char *content, const char *body_type);
void treq_rcpt(treq_t *r, const char *addr);
void treq_nexthop(treq_t *r, const char *nexthop);
/* "[127.0.0.1]:PORT" of s. */
void treq_nexthop_srv(treq_t *r, const tsrv_t *s);
/* smtpc_deliver, then wait for done (at most 20 s). */
void treq_run(tworld_t *w, treq_t *r);
void treq_wait(tworld_t *w, treq_t *r);
void treq_free(treq_t *r);

#endif
