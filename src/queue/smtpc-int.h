/*
 * smtpc-int: the SMTP/LMTP client's own state, shared by its three parts:
 * smtpc.c (requests from start to done(), the connection cache),
 * smtpc-session.c (connections, the protocol, the content) and
 * smtpc-dns.c (finding the servers of a next hop).  Only those files
 * include it; the pure helpers are in smtpc-private.h.
 */
#ifndef MOAT_QUEUE_SMTPC_INT_H
#define MOAT_QUEUE_SMTPC_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "queue/smtpc-private.h"
#include "queue/smtpc.h"
#include "tls/tls_client.h"

struct bufferevent;
struct event;

#define CHUNK (64 * 1024)
#define OUT_HIGH (256 * 1024)
#define OUT_LOW (64 * 1024)
#define MIME_NESTING_LIMIT 100

/* The reply a command waits for. */
typedef enum {
    X_GREET, X_EHLO, X_HELO, X_LHLO, X_XFWD1, X_XFWD2, X_MAIL, X_RCPT, X_DATA, X_DOT, X_RSET,
    X_PROBE_RSET,   /* the RSET that ends a probe transaction (req->probe) */
    X_STARTTLS,
} xkind_t;

typedef struct expect {
    xkind_t kind;
    size_t rcpt;   /* X_RCPT, X_DOT (LMTP): the recipient index */
    unsigned gen;  /* conn->rd_gen when the command was queued */
} expect_t;

typedef enum { PH_DNS, PH_CONNECT, PH_HELLO, PH_RSET, PH_LOAD, PH_TXN, PH_CONTENT, PH_DOT } phase_t;

typedef struct target {
    char name[256];
    char addr[128];   /* numeric address, or the socket path */
    int port;
    unsigned pref;
    bool unix_path;
} target_t;

typedef struct dlv dlv_t;

typedef struct conn {
    smtpc_t *c;
    dlv_t *d;                 /* the delivery talking on it; NULL while cached */
    int fd;                   /* the socket, the connection's own (bufferevents never close it) */
    struct event *cev;        /* connect completion */
    struct bufferevent *bev;
    struct bufferevent *old_bev;  /* the plaintext one after STARTTLS, freed at the callback's end */
    /* TLS */
    char host[256];           /* the server's name (MX host or [host]) and address */
    char addr[128];
    int port;
    SSL *ssl;                 /* after a 220 to STARTTLS; freed after the bufferevents */
    bool handshaking;         /* the TLS handshake is under way */
    bool tls;                 /* TLS is up */
    bool tls_plain;           /* a plaintext retry after a failed handshake (level may): no STARTTLS */
    unsigned tls_sig;         /* the policy the connection was made under (cache reuse) */
    char tls_brief[96];       /* "TLSv1.3/TLS_AES_256_GCM_SHA384" */
    struct event *timer;
    const params_t *p;
    bool lmtp;
    char *key;                /* cache key: transport name "\n" next hop */
    char namaddr[400];        /* "name[addr]" */
    char relay[420];          /* "name[addr]:port" */
    smtpc_ehlo_t f;
    bool broken;              /* out of sync or closing: never reused */
    bool dead;                /* closed inside a callback: freed at its end */
    int in_cb;
    smtpc_reply_t reply;
    expect_t *exp;
    size_t exp_head, exp_n, exp_cap;
    /* Counts read callbacks: bytes that are in the input while a command
     * is queued were sent before the server could have seen it. */
    unsigned rd_gen;
    long long created;        /* usec */
    unsigned uses;            /* transactions started on it */
    struct conn *next;        /* the cache list */
    bool cached;
} conn_t;

typedef struct cmd {
    xkind_t kind;
    size_t rcpt;
    char *line;
} cmd_t;

typedef struct mxhost {
    char name[256];
    unsigned pref;
    dns_answer_t *a4, *a6;
} mxhost_t;

typedef struct dq {
    dlv_t *d;
    size_t host;   /* index into hosts; (size_t)-1 for the MX query */
} dq_t;

struct dlv {
    smtpc_t *c;
    smtpc_request_t *req;
    const params_t *p;
    bool lmtp;
    const char *prog;
    dns_t *dns;
    char host[256], port[32];
    int portnum;
    bool mx, unix_path;
    char *key;
    bool *final;
    /* where to go */
    target_t *t;
    size_t nt, it;
    unsigned sessions;
    mxhost_t *hosts;
    size_t nhosts;
    size_t dns_pending;
    bool dns_issuing;
    bool no_more;             /* a failure that no other server changes */
    /* TLS: the engine (NULL over a Unix socket) and this next hop's policy */
    tls_client_t *tc;
    tls_policy_t pol;
    unsigned tls_sig;
    bool plain_next;          /* the next connection is a plaintext retry */
    /* the current session */
    conn_t *conn;
    phase_t phase;
    bool probing;             /* RSET on a cached connection */
    bool any_ready;
    cmd_t *cmds;
    size_t ncmd, cmd_next;
    size_t *acc;              /* recipients accepted in this transaction, in order */
    size_t nacc, ndot;
    bool txn_failed;
    /* content */
    int fd;
    unsigned njobs;           /* content jobs on the pool */
    bool want_finish, finished;
    unsigned gen;             /* bumped when a content stream is abandoned */
    long long sent_off;
    bool bol, stream_wait, use_whole, have_whole;
    buf_t whole;
    struct event *fin;
};

struct smtpc {
    struct event_base *base;
    pool_t *pool;
    unsigned busy;
    unsigned ncached;
    conn_t *cache;
    bool closing;
    tls_client_cache_t *tlsc; /* TLS engines by smtp_tls_* values */
    char **local_addrs;       /* this host's interface addresses */
    size_t nlocal;
    unsigned long long rng;   /* xorshift state: the order of equal MX preferences */
};

typedef struct rjob {
    dlv_t *d;
    unsigned gen;
    bool whole;
    bool convert;             /* whole: downgrade 8-bit content */
    char *path;
    int fd;
    long long off, len;
    bool bol;
    buf_t out;
    int err;
    const char *errwhat;
    bool downgraded;
} rjob_t;

/* --- smtpc.c --- */

/* Recipients without a final status. */
size_t smtpc_pending(const dlv_t *d);
/* Set a recipient's result (no-op once it is final). */
void smtpc_rcpt_set(dlv_t *d, size_t i, int status, const char *dsn, const char *text, const char *reply,
                    bool final);
/* A failure for every open recipient: 5xx bounces them for good, 4xx
 * leaves them open for the next server (the text stays otherwise). */
void smtpc_fail_pending(dlv_t *d, const char *dsn, const char *text, const char *reply);
/* The same, and no other server is tried. */
void smtpc_fail_all(dlv_t *d, const char *dsn, const char *text);
/* Connect to the next address, or end the delivery. */
void smtpc_try_next(dlv_t *d);
/* Every recipient has a status: schedule done() (after the content job
 * in flight, if any). */
void smtpc_finalize(dlv_t *d);

/* --- smtpc-session.c --- */

/* Start connecting to t; -1 with errno when that failed at once. */
int smtpc_conn_open(dlv_t *d, const target_t *t);
/* Use a cached connection: RSET first; if that fails, smtpc_resolve. */
void smtpc_probe(dlv_t *d, conn_t *conn);
void smtpc_conn_close(conn_t *conn);
void smtpc_conn_quit(conn_t *conn);
void smtpc_cache_remove(conn_t *conn);
void smtpc_txn_clear(dlv_t *d);

/* --- smtpc-dns.c --- */

/* Find the addresses of d's next hop (DNS or literal), then try them. */
void smtpc_resolve(dlv_t *d);

#endif
