/*
 * spool: the durable queue directory.  One file per message:
 *   <queue_directory>/incoming/ID   while it is being written,
 *   <queue_directory>/active/ID     once complete and fsync'd,
 *   <queue_directory>/hold/ID       complete, but held (access HOLD): never
 *                                   delivered until moved to active/,
 *   <queue_directory>/corrupt/ID    when found unreadable at start-up.
 *
 * Durability contract: spool_writer_commit()'s callback reports ok only
 * after the file's data is fsync'd, it is renamed into active/, and the
 * active/ directory is fsync'd.  Only then may the session send 250.
 * All blocking file work runs on the pool; the loop never waits.
 *
 * The queue file format is documented in docs/queue.md.
 */
#ifndef MOAT_QUEUE_SPOOL_H
#define MOAT_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/pool.h"

#define QUEUE_ID_MAX 24   /* buffer size for a queue ID incl. NUL */

typedef struct spool spool_t;

typedef struct envelope {
    const char *queue_id;
    long long arrival_usec;    /* wall clock at MAIL FROM */
    const char *client_name;   /* "host" or "unknown" */
    const char *client_addr;   /* "192.0.2.1" */
    const char *helo;          /* "" when none */
    const char *protocol;      /* "SMTP", "ESMTP", ... */
    const char *sender;        /* "" for the null sender */
    const char *const *rcpts;  /* envelope recipients, as addr_t.full */
    size_t nrcpt;
    const char *body_type;     /* "", "7BIT" or "8BITMIME" */
    bool smtputf8;
} envelope_t;

/* Create (if needed) and open the queue tree under queue_dir. NULL + err on failure. */
spool_t *spool_open(const char *queue_dir, pool_t *pool, buf_t *err);
void spool_close(spool_t **sp);
const char *spool_dir(const spool_t *sp);

/* A new queue ID, unique in this queue: uppercase hex, like Postfix's short IDs. */
void spool_new_queue_id(spool_t *sp, char out[QUEUE_ID_MAX]);

/* Start-up recovery, blocking (called before any port opens): remove every
 * leftover in incoming/ (an interrupted write: never delivered), move files
 * in active/ that fail validation to corrupt/ (logged), and return the IDs
 * of complete files in active/ through cb. Returns how many leftovers were removed. */
int spool_recover(spool_t *sp, void (*cb)(void *arg, const char *queue_id), void *arg);

typedef struct spool_writer spool_writer_t;
typedef void (*spool_commit_cb)(void *arg, bool ok, const char *errtext);

/* Begin a message: copies *env; the file is created on the pool. */
spool_writer_t *spool_writer_new(spool_t *sp, const envelope_t *env);
/* Message content (lines end in LF; the Received: header first). Buffered;
 * full buffers are written on the pool in order. */
void spool_writer_append(spool_writer_t *w, const char *data, size_t len);
/* Bytes accepted by append but not yet written: the session stops reading
 * from its client while this is above its threshold. */
size_t spool_writer_backlog(const spool_writer_t *w);
/* Content bytes appended so far. */
size_t spool_writer_size(const spool_writer_t *w);
/* Message actions decided by the restrictions (access(5) HOLD, FILTER,
 * REDIRECT, BCC).  They are written after the content, so actions decided
 * at end-of-data still reach the file. */
typedef struct spool_actions {
    bool hold;                 /* commit into hold/ instead of active/ */
    const char *filter;        /* "transport:destination", or NULL */
    const char *redirect;      /* the one address that replaces all recipients, or NULL */
    const char *const *bcc;    /* extra recipients */
    size_t nbcc;
} spool_actions_t;

/* Record actions for the commit (loop thread, before spool_writer_commit;
 * a second call replaces the first).  Values are copied. */
void spool_writer_actions(spool_writer_t *w, const spool_actions_t *a);

/* Finish: write the rest and the trailer, fsync, rename into active/, fsync
 * the directory; then cb(arg, ok, errtext) on the loop thread.  The writer
 * frees itself after cb returns; the caller must not use w again. */
void spool_writer_commit(spool_writer_t *w, spool_commit_cb cb, void *arg);
/* Give up (client vanished, message rejected): the incoming file is removed
 * on the pool and w freed when that is done.  No callback. */
void spool_writer_abort(spool_writer_t *w);

/* Reading a queue file (used by delivery, on pool threads; blocking). */
typedef struct qfile {
    char *path;
    char *queue_id;
    long long arrival_usec;
    char *client_name, *client_addr, *helo, *protocol, *sender, *body_type;
    bool smtputf8;
    size_t nrcpt;
    char **rcpts;
    char *rcpt_done;      /* per recipient: 1 when delivered (recorded durably) */
    long *rcpt_offset;    /* file offset of each recipient's status byte */
    long content_offset;  /* where the message content starts */
    long content_size;
    /* Format version 2 (the records after the content; NULL/0 in version 1): */
    int version;
    char *filter;         /* FILTER transport:destination */
    char *redirect;       /* REDIRECT address: delivery goes there instead */
    size_t nbcc;          /* the last nbcc of rcpts came from BCC actions */
} qfile_t;

/* Parse and validate a complete queue file; -1 with err on malformed/incomplete. */
int qfile_read(const char *path, qfile_t *out, buf_t *err);
void qfile_free(qfile_t *q);
/* Durably mark recipient i delivered (pwrite of its status byte + fdatasync). */
int qfile_mark_done(qfile_t *q, size_t i, buf_t *err);

/* --- Added by the queue module (src/queue/spool.c) --- */

/* qfile_read() sets errno to EBADMSG when the file is malformed or
 * incomplete, and leaves the system's errno (ENOENT, EIO, ...) otherwise. */

/* The writer's queue ID (the one given in env, or a new one when env had none). */
const char *spool_writer_id(const spool_writer_t *w);
/* Is s a well-formed queue ID (1..QUEUE_ID_MAX-1 of [0-9A-F])?  Only such
 * names are ever used as file names. */
bool spool_valid_id(const char *s);
/* out = the path of active/ID. */
void spool_active_path(const spool_t *sp, const char *queue_id, buf_t *out);
/* Blocking (pool threads): a message is fully delivered: unlink active/ID
 * (already gone is fine) and fsync active/.  -1 with err on failure. */
int spool_remove(spool_t *sp, const char *queue_id, buf_t *err);
/* Blocking (pool threads): move an unreadable active/ID to corrupt/ID
 * (corrupt/ID.USEC when that name is taken) and fsync both directories. */
int spool_quarantine(spool_t *sp, const char *queue_id, buf_t *err);

/* --- Added with the access actions (HOLD, FILTER, REDIRECT, BCC) --- */

/* out = the path of hold/ID. */
void spool_hold_path(const spool_t *sp, const char *queue_id, buf_t *out);
/* Blocking: release a held message, hold/ID -> active/ID (never replacing
 * a file), both directories fsync'd.  The running daemon delivers it after
 * its next rescan of active/ (on SIGHUP).  -1 with err on failure. */
int spool_release(spool_t *sp, const char *queue_id, buf_t *err);

#endif
