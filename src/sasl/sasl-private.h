/*
 * sasl-private: what the files of src/sasl share (the front in sasl.c,
 * the backends in sasl_dovecot.c and sasl_moat.c), plus the pure pieces
 * the unit tests and the fuzzer call directly: security options, the
 * Dovecot line parser and escaping.  Not for other modules: they use
 * sasl.h.
 */
#ifndef MOAT_SASL_SASL_PRIVATE_H
#define MOAT_SASL_SASL_PRIVATE_H

#include "sasl/sasl.h"

#include <stddef.h>

struct event;
struct map;

/* Mechanism properties, as Dovecot's MECH lines name them. */
enum {
    SASL_MF_ANONYMOUS = 1 << 0,
    SASL_MF_PLAINTEXT = 1 << 1,
    SASL_MF_DICTIONARY = 1 << 2,
    SASL_MF_ACTIVE = 1 << 3,
    SASL_MF_FORWARD_SECRECY = 1 << 4,
    SASL_MF_MUTUAL_AUTH = 1 << 5,
    SASL_MF_PRIVATE = 1 << 6,   /* never announced */
};

/* smtpd_sasl_security_options / smtpd_sasl_tls_security_options. */
enum {
    SASL_SEC_NOANONYMOUS = 1 << 0,
    SASL_SEC_NOPLAINTEXT = 1 << 1,
    SASL_SEC_NOACTIVE = 1 << 2,
    SASL_SEC_NODICTIONARY = 1 << 3,
    SASL_SEC_MUTUAL_AUTH = 1 << 4,
    SASL_SEC_FORWARD_SECRECY = 1 << 5,
};

/* The option words of items (any case) as SASL_SEC_* bits.  false with
 * *bad pointing at the first unknown word. */
bool sasl_security_parse(const char *const *items, size_t n, unsigned *out, const char **bad);
/* May a mechanism with these SASL_MF_* flags be offered under options sec? */
bool sasl_mech_allowed(unsigned mech_flags, unsigned sec);
/* A name RFC 4422 allows for a mechanism (1-20 of A-Z 0-9 - _). */
bool sasl_mech_name_ok(const char *name);

/* The PLAIN layout with the reason kept apart: 0 ok, -1 malformed, -2 a
 * well-formed response whose authzid names someone else. */
int sasl_plain_parse(const char *data, size_t len, const char **authcid, const char **passwd);

/* ------------------------------------------------------------ Dovecot */

/* Longest line accepted from Dovecot (its own limit is 16384). */
#define SASL_DOVECOT_LINE_MAX 65536

/* Tunables, variables only so that the unit tests can shorten them:
 * how long one request (and the handshake) may wait for Dovecot, and the
 * reconnect backoff. */
extern double sasl_dovecot_timeout;       /* 30 s */
extern double sasl_dovecot_backoff_min;   /* 1 s */
extern double sasl_dovecot_backoff_max;   /* 30 s */

typedef enum {
    DV_VERSION,   /* major, minor */
    DV_MECH,      /* name, mech_flags */
    DV_SPID,
    DV_CUID,
    DV_COOKIE,
    DV_DONE,
    DV_OK,        /* id; user (has_user) */
    DV_CONT,      /* id; data: the challenge, base64 as sent */
    DV_FAIL,      /* id; reason, user (has_user), temp */
    DV_OTHER,     /* a command this client does not know: ignored */
} dv_kind_t;

typedef struct dv_line {
    dv_kind_t kind;
    unsigned major, minor;
    unsigned id;
    unsigned mech_flags;
    bool temp, has_user, has_reason;
    buf_t name, data, user, reason;   /* unescaped */
} dv_line_t;

/* Parse one line from Dovecot (without its LF).  0, or -1 with *why for
 * a line this client cannot make sense of (a protocol error).  The
 * buffers of out are reset and refilled; free them with dv_line_free. */
int sasl_dovecot_parse(const char *line, size_t len, dv_line_t *out, const char **why);
void sasl_dovecot_line_free(dv_line_t *l);
/* Dovecot's tab-escaping: \001 escapes NUL, itself, TAB, CR and LF. */
void sasl_dovecot_escape(buf_t *out, const char *s, size_t len);
void sasl_dovecot_unescape(buf_t *out, const char *s, size_t len);
/* "AUTH\t<id>\t<mech>\tservice=...\tnologin[\tlip=..][\trip=..][\tlport=..]
 * [\trport=..][\tsecured][\tresp=<initial>]\n" (initial NULL: no resp;
 * "=": an empty one). */
void sasl_dovecot_auth_line(buf_t *out, unsigned id, const char *mech, const char *service,
                            const sasl_peer_t *peer, const char *initial);

/* ------------------------------------------------------------ shared */

enum { SASL_T_DOVECOT, SASL_T_MOAT };

typedef struct dv_conn dv_conn_t;
typedef struct crypt_job crypt_job_t;

struct sasl_server {
    int refs;                  /* the owner's, plus one per live exchange */
    int type;
    struct event_base *base;
    pool_t *pool;
    unsigned sec_plain, sec_tls;
    char *service;             /* smtpd_sasl_service */
    buf_t mechs;               /* sasl_server_mechanisms' answer */
    /* dovecot */
    dv_conn_t *conn;
    /* moat */
    struct map **maps;
    size_t nmaps;
    char *dummy;               /* crypt setting for unknown users (see sasl_moat.c) */
};

enum { CV_IDLE, CV_QUEUED, CV_SENT, CV_CLIENT, CV_CRYPT, CV_DONE };

struct sasl_conv {
    sasl_server_t *srv;
    sasl_done_fn fn;
    void *arg;
    struct event *ev;          /* delivers replies (0 s) and times requests out */
    int state;
    bool tls;
    bool ready;                /* a reply waits in status/challenge/user/reason */
    bool in_callback, dead;    /* sasl_end from inside fn: free after it returns */
    sasl_status_t status;
    buf_t challenge, user, reason;
    char mech[24];
    /* dovecot */
    unsigned id;
    bool registered;           /* in the connection's id table */
    bool lost;                 /* the connection went away while the client was typing */
    sasl_conv_t *next;         /* id-table chain or wait queue */
    buf_t tail;                /* the AUTH line after "AUTH\t<id>\t" */
    /* moat */
    int step;                  /* 0: PLAIN response / LOGIN user; 1: LOGIN password */
    buf_t login_user;
    crypt_job_t *job;
};

/* Store a reply and deliver it from the loop (never from the caller's
 * stack).  Strings may be NULL. */
void sasl_reply_later(sasl_conv_t *c, sasl_status_t st, const char *challenge, const char *user,
                      const char *reason);
/* Arm c->ev as a timeout (no reply waiting). */
void sasl_conv_timeout(sasl_conv_t *c, double seconds);
void sasl_conv_untime(sasl_conv_t *c);

/* Backends. */
int sasl_dovecot_open(sasl_server_t *s, const params_t *p, buf_t *err);
void sasl_dovecot_close(sasl_server_t *s);
/* The mechanisms Dovecot announced (last handshake): n, names, flags. */
size_t sasl_dovecot_mechs(sasl_server_t *s, const char *const **names, const unsigned **flags);
void sasl_dovecot_start(sasl_conv_t *c, const char *initial, const sasl_peer_t *peer);
void sasl_dovecot_step(sasl_conv_t *c, const char *response);
void sasl_dovecot_timed_out(sasl_conv_t *c);
void sasl_dovecot_end(sasl_conv_t *c);

int sasl_moat_open(sasl_server_t *s, const params_t *p, buf_t *err);
void sasl_moat_close(sasl_server_t *s);
void sasl_moat_start(sasl_conv_t *c, const char *initial);
void sasl_moat_step(sasl_conv_t *c, const char *response);
void sasl_moat_end(sasl_conv_t *c);

#endif
