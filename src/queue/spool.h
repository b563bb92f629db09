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
/* The pool its disk work runs on (the server's other file work shares it). */
pool_t *spool_pool(const spool_t *sp);

/* A new queue ID, unique in this queue: uppercase hex, like Postfix's short IDs. */
void spool_new_queue_id(spool_t *sp, char out[QUEUE_ID_MAX]);

/* Start-up recovery, blocking (called before any port opens): remove every
 * leftover in incoming/ (an interrupted write: never delivered), move files
 * in active/ and deferred/ that fail validation to corrupt/ (logged), and
 * return the IDs of complete files in active/ through cb (deferred/ is not
 * reported: the queue manager's scans pick its files up when they are
 * due). Returns how many leftovers were removed. */
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
    /* Header lines ("Name: value\n" each) to put at the very top of the
     * content, decided after the content was written (the virus scanner's
     * X-Virus-Status).  The commit moves the content on disk to make room:
     * a rare path, paid only by the messages that get such a header. */
    const char *headers;
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
    /* Added with the full queue manager (issue 5): */
    char *rcpt_status;    /* per recipient: QF_PENDING, QF_DONE or QF_FAILED */
    int mark_fd;          /* qfile_open_marks(): marks go through this fd ... */
    bool mark_open;       /* ... when this is true (qfile_free closes it) */
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

/* --- Added with the full queue manager (issue 5) --- */

/* The queues, as directories under queue_directory (docs/queue.md). */
typedef enum {
    QUEUE_INCOMING,
    QUEUE_ACTIVE,
    QUEUE_DEFERRED,   /* file mtime = the time of the next delivery attempt */
    QUEUE_HOLD,
    QUEUE_CORRUPT,
    QUEUE__COUNT
} queue_t;

/* "incoming", "active", "deferred", "hold", "corrupt". */
const char *spool_queue_name(queue_t q);
/* out = queue_directory/QUEUE/ID. */
void spool_path(const spool_t *sp, queue_t q, const char *queue_id, buf_t *out);
/* Which queue holds ID now (active, deferred, hold, incoming, corrupt
 * are tried in that order); -1 when none.  Blocking (stat). */
int spool_find(const spool_t *sp, const char *queue_id);
/* Blocking: move ID from one queue to another with RENAME_NOREPLACE and
 * fsync both directories.  -1 with errno ENOENT when ID is not in from
 * (someone else moved or removed it first: renames are the only locking
 * between the daemon and `moat queue`), EEXIST when to already has it. */
int spool_move(spool_t *sp, const char *queue_id, queue_t from, queue_t to, buf_t *err);
/* Blocking: remove ID from queue q and its defer/bounce logs; fsync the
 * directory.  -1 with errno ENOENT when it was not there. */
int spool_delete(spool_t *sp, const char *queue_id, queue_t q, buf_t *err);
/* Blocking, for pool threads: write a complete message (envelope +
 * content, LF lines) as a new queue file in active/ with the durable
 * commit steps of spool_writer_commit (fsync file, rename, fsync active/).
 * env->queue_id NULL: a new ID.  The ID is copied to id_out.  Used for
 * bounces. */
int spool_inject(spool_t *sp, const envelope_t *env, const char *content, size_t len,
                 char id_out[QUEUE_ID_MAX], buf_t *err);

/* Recipient status bytes in a queue file. */
#define QF_PENDING 'P'    /* not yet delivered */
#define QF_DONE 'D'       /* delivered, discarded, or its bounce is queued */
#define QF_FAILED 'F'     /* failed for good; its reason is in the bounce log, the notice not yet queued */
/* qfile_t.rcpt_status[i] holds one of those bytes (rcpt_done[i] stays:
 * 1 exactly when the byte is QF_DONE).  qfile_mark() rewrites the byte in
 * place (pwrite + fdatasync), like qfile_mark_done(). */
int qfile_mark(qfile_t *q, size_t i, char status, buf_t *err);
/* Open q->path for writing and keep the fd in q (mark_fd): later marks go
 * through it, so they land in the file even after it was renamed to
 * another queue (hold/) while a delivery ran.  Blocking.  -1 with err. */
int qfile_open_marks(qfile_t *q, buf_t *err);

/* Blocking, for pool threads: the deferred queue scan.  Renames every file
 * of deferred/ whose mtime (its next attempt) is <= now_sec -- every file
 * when all is true -- into active/ (RENAME_NOREPLACE; a file someone else
 * moved first is skipped), fsyncs both directories once, and returns the
 * moved IDs (malloc'd array of malloc'd strings; free with
 * spool_free_ids).  One readdir, one fstatat per file, no open.
 * *nfiles: the entries looked at.  -1 with err when deferred/ cannot be read. */
int spool_scan_deferred(spool_t *sp, long long now_sec, bool all, char ***ids, size_t *nids,
                        size_t *nfiles, buf_t *err);
void spool_free_ids(char **ids, size_t n);

/* Per-message logs next to the queues, as Postfix's defer/ and bounce/:
 *   queue_directory/defer/ID    the last attempt's reason per deferred
 *                               recipient (replaced as a whole, atomically,
 *                               after each attempt; for `moat queue list`)
 *   queue_directory/bounce/ID   one record per recipient that failed for
 *                               good (appended and fsync'd BEFORE the
 *                               recipient is marked QF_FAILED, so a crash
 *                               never loses a reason the bounce needs)
 * One line per record, fields separated by one space, each %XX-encoded
 * like queue file values ("" written as "-"):
 *   RCPT ORIG_RCPT DSN WHEN_USEC RELAY TEXT REPLY                         */
typedef enum { QLOG_DEFER, QLOG_BOUNCE } qlog_kind_t;
typedef struct qlog_rec {
    char *rcpt;        /* the recipient as in the queue file */
    char *orig;        /* original recipient when redirected, else "" */
    char *dsn;         /* "4.4.1" */
    long long when_usec;
    char *relay;       /* "mx.example.com[192.0.2.1]:25" or "none" */
    char *text;        /* the reason as logged */
    char *reply;       /* the server's reply, "" when none */
} qlog_rec_t;
/* Read a log; a missing file is 0 records.  -1 with err on read errors;
 * malformed lines are skipped (the log is advisory except for bounces,
 * whose writer fsyncs whole lines). */
int qlog_read(const spool_t *sp, qlog_kind_t kind, const char *queue_id, qlog_rec_t **recs, size_t *n,
              buf_t *err);
void qlog_free(qlog_rec_t **recs, size_t n);
/* QLOG_DEFER: replace the whole log (tmp file + rename).  QLOG_BOUNCE:
 * append the records and fdatasync.  Blocking. */
int qlog_write(spool_t *sp, qlog_kind_t kind, const char *queue_id, const qlog_rec_t *recs, size_t n,
               buf_t *err);
/* Remove both logs of ID (missing is fine). */
void qlog_remove(spool_t *sp, const char *queue_id);

/* --- Value encoding: queue file values and defer/bounce log fields --- */

/* Append v (NULL: "") to b with '%', control bytes and DEL -- and the
 * space too when space is true (a field separator) -- as %XX. */
void spool_encode_value(buf_t *b, const char *v, bool space);
/* Undo spool_encode_value on s[0..n): a malloc'd string, or NULL when
 * malformed (a raw control byte or DEL, a bad escape, or %00). */
char *spool_decode_value(const char *s, size_t n);

#endif
