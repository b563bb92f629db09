/*
 * moat-bench: a loopback-only SMTP load generator (send, reject, idle,
 * handshake), in plaintext, over STARTTLS or over implicit TLS.
 *
 * This header is shared by the files of bench/ only; the bench links
 * nothing from src/ so that it measures moat from the outside, as a
 * client would.  Types here are plain structs: the program is small and
 * every part of it reads the options and writes the statistics.
 */
#ifndef MOAT_BENCH_BENCH_H
#define MOAT_BENCH_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

enum bench_mode { MODE_SEND, MODE_REJECT, MODE_IDLE, MODE_HANDSHAKE };

/* How a session gets to TLS: never, STARTTLS after the first EHLO, or a
 * handshake first thing after connect (smtps, port 465). */
enum bench_tls { TLS_OFF, TLS_STARTTLS, TLS_IMPLICIT };

/* Where in a session a reply or a failure happened. */
enum stage {
    ST_CONNECT,
    ST_GREETING,
    ST_EHLO,
    ST_MAIL,
    ST_RCPT,
    ST_DATA,
    ST_DOT,
    ST_RSET,
    ST_QUIT,
    ST_STARTTLS, /* the reply to STARTTLS */
    ST_TLS,      /* the TLS handshake itself (failures only, no reply) */
    ST_MAX
};

/* Failures that are not a reply code. */
enum fail_kind {
    F_CONNECT,   /* socket, bind or connect failed */
    F_TIMEOUT,   /* no reply within --timeout */
    F_CLOSED,    /* the server closed or reset the connection */
    F_PROTOCOL,  /* a reply line we could not parse, or one nobody asked for */
    F_DEADLINE,  /* still running when --max-seconds ran out */
    F_TLS,       /* the TLS handshake failed, or TLS said the stream is broken */
    F_MAX
};

#define BENCH_MAX_RCPT 100
#define BENCH_MAX_SIZE (64UL * 1024 * 1024)
#define BENCH_MAX_COUNT 10000000UL
#define BENCH_MAX_CONC 100000U
#define BENCH_REPLY_CODES 600

struct bench_opts {
    enum bench_mode mode;
    struct sockaddr_storage dst;
    socklen_t dstlen;
    struct sockaddr_storage src;   /* source address to bind, when have_src */
    socklen_t srclen;
    bool have_src;
    /* --bind-range: session k (from 0) binds range_base + (range_next + k) mod range_size,
     * every address of one IPv4 block in 127.0.0.0/8, starting at the address given. */
    bool have_range;
    unsigned long range_base;      /* the block's first address, host order */
    unsigned long range_size;      /* addresses in the block: 1 .. 2^24 */
    unsigned long range_next;      /* offset of the first session's address */
    char dst_text[64];             /* for the report: "127.0.0.1:25" */
    char src_text[64];
    unsigned long count;           /* sessions (send, reject) or connections (idle) */
    unsigned concurrency;          /* sessions in flight; idle: handshakes in flight */
    size_t size;                   /* message bytes, headers included, before dot-stuffing */
    const char *rcpt[BENCH_MAX_RCPT];
    size_t nrcpt;                  /* RCPT commands per transaction */
    const char *from;
    const char *helo;
    bool pipelining;
    double max_seconds;            /* the whole run, whatever happens */
    double timeout;                /* per reply */
    double hold;                   /* idle: how long to keep connections open */
    enum bench_tls tls;            /* --starttls, --tls */
    bool resume;                   /* --resume: offer each slot's previous TLS session */
    bool kv;                       /* also print one machine-readable RESULT line */
    bool quiet;                    /* no human report */
};

/* A growable array of latency samples, in seconds. */
typedef struct samples {
    double *v;
    size_t n, cap;
    bool sorted;
} samples_t;

struct bench_stats {
    unsigned long started;         /* sessions launched */
    unsigned long ok;              /* send: messages accepted; reject: transactions rejected;
                                    * idle: connections that reached the hold */
    unsigned long failed;          /* sessions whose transaction did not end as intended */
    unsigned long codes[ST_MAX][BENCH_REPLY_CODES];
    unsigned long fails[ST_MAX][F_MAX];
    unsigned long no_pipelining;   /* --pipelining asked, server did not offer it */
    unsigned long tls_full;        /* handshakes that made a new TLS session */
    unsigned long tls_resumed;     /* ... and that resumed one */
    /* idle */
    unsigned long open_at_hold;    /* connections open when the hold began */
    unsigned long open_at_quit;    /* ... and still open when it ended */
    unsigned long closed_in_hold;  /* closed by the server during the hold */
    double hold_seconds;           /* how long the hold actually lasted */
    samples_t txn;                 /* MAIL sent .. final reply of the transaction */
    samples_t dot;                 /* final dot written .. its reply (send) */
    samples_t session;             /* connect() .. session end */
    samples_t setup;               /* connect() .. EHLO reply (the one after STARTTLS) */
    samples_t handshake;           /* TLS handshake: first ClientHello write .. done */
    double t_begin, t_end;         /* first launch, last session that finished its work */
    size_t msg_size;               /* the message size actually sent */
    double cpu_seconds;            /* this process's user + system time for the run */
    char first_error[160];         /* the first system error seen, for the report */
};

/* main.c */
double mono_now(void);

/* stats.c */
void samples_add(samples_t *s, double v);
double samples_pct(samples_t *s, double pct);  /* nearest rank; 0 when empty */
void samples_free(samples_t *s);
const char *stage_name(enum stage st);
bool reply_expected(const struct bench_opts *o, enum stage st, int code);
void report_print(const struct bench_opts *o, struct bench_stats *st);
void report_kv(const struct bench_opts *o, struct bench_stats *st);
/* Unexpected replies plus failures that were not replies. */
unsigned long report_errors(const struct bench_opts *o, const struct bench_stats *st);

/* message.c: one message template per run.  The header block has the
 * same length for every message, so a shared body makes every message
 * exactly o->size bytes (or the header alone, if that is larger). */
typedef struct msgtmpl {
    char *body;
    size_t body_len;
    size_t hdr_len;
    char date[64];
} msgtmpl_t;

void msg_init(msgtmpl_t *m, const struct bench_opts *o);
/* Writes message seq's header block into out; returns its length (== m->hdr_len). */
size_t msg_header(const msgtmpl_t *m, const struct bench_opts *o, unsigned long seq,
                  char *out, size_t cap);
void msg_free(msgtmpl_t *m);

/* client.c: runs the whole load; returns 0, or -1 if the loop could not start. */
int bench_run(const struct bench_opts *o, struct bench_stats *st);

#endif
