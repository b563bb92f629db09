/*
 * cmd_queue: `moat queue`, the mailq / postqueue / postsuper / postcat of
 * moat (docs/queue-tools.md).
 *
 *   list [--json]                      the queue, oldest first (mailq)
 *   show [--envelope] [--header] [--body] ID    one message (postcat -q)
 *   flush [ID]                         ask the daemon to deliver deferred mail now
 *   delete ID...|ALL [--deferred]      remove messages (postsuper -d)
 *   hold ID...|ALL                     active/deferred -> hold (postsuper -h)
 *   release ID...|ALL                  hold -> active, then rescan (postsuper -H)
 *   requeue ID...|ALL                  deferred -> active, then rescan (postsuper -r)
 *
 * Safe while the daemon runs: every change is one RENAME_NOREPLACE (or an
 * unlink) of a queue file, the daemon's own locking primitive, so whoever
 * is second gets ENOENT and looks again; the control socket only nudges
 * the daemon.  Nothing here opens a queue file for writing.
 *
 * Owns: the configuration it loads and one spool_t without a pool.  Never:
 * touch the disk for an argument that is not a queue ID; delete or move a
 * file in incoming/ (still being written); write a queue file's bytes.
 */
#include "cli/cli.h"

#include "config/config.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "queue/control.h"
#include "queue/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QCMD_TRIES 3             /* looks at a message that keeps moving */
#define QCMD_CTL_TIMEOUT_MS 10000
#define QBIT(q) (1u << (q))

static const char usage_text[] =
    "usage: moat queue [-c DIR] COMMAND [ARGS]\n"
    "  list [--json]          the queued messages, oldest first, like mailq:\n"
    "                         ID (* active, ! on hold), size, arrival, sender,\n"
    "                         each pending recipient with the last delay reason\n"
    "  show [--envelope] [--header] [--body] ID\n"
    "                         one message: envelope, recipients with their\n"
    "                         status and reason, action records, content\n"
    "  flush [ID]             ask the running daemon to deliver every deferred\n"
    "                         message (or ID) now\n"
    "  delete ID...|ALL [--deferred]\n"
    "                         remove messages (ALL: active, deferred and hold;\n"
    "                         with --deferred only the deferred queue)\n"
    "  hold ID...|ALL         put active or deferred messages on hold\n"
    "  release ID...|ALL      move held messages to the active queue\n"
    "  requeue ID...|ALL      move deferred messages to the active queue\n"
    "  -c DIR  read DIR/main.cf (queue_directory, maillog_file); default: the\n"
    "          embedded configuration\n"
    "  The commands work with or without a running daemon.  Exit status: 0 done,\n"
    "  1 an error (\"moat queue: ...\" on stderr), 2 usage.\n";

typedef struct qcmd {
    const char *queue_dir;
    spool_t *sp;
    const params_t *params;
    bool json, deferred_only;
    bool want_env, want_header, want_body;
} qcmd_t;

/* s for a terminal: control bytes and DEL as \xHH (reasons quote remote
 * servers, and a reply must not drive the postmaster's terminal).  The
 * result lives until eight more calls. */
static const char *vis(const char *s)
{
    static buf_t ring[8];
    static unsigned next;
    buf_t *b = &ring[next++ % ARRAY_LEN(ring)];
    buf_reset(b);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p < 0x20 || *p == 0x7F)
            buf_printf(b, "\\x%02X", *p);
        else
            buf_putc(b, (char)*p);
    }
    return buf_cstr(b);
}

static const char *plural(size_t n)
{
    return n == 1 ? "" : "s";
}

/* ------------------------------------------------------------------ */
/* reading the queue                                                    */

typedef struct qitem {
    char id[QUEUE_ID_MAX];
    queue_t queue;
    qfile_t qf;
    long long mtime;            /* the deferred queue: next attempt */
    qlog_rec_t *defer, *bounce;
    size_t ndefer, nbounce;
} qitem_t;

static void item_free(qitem_t *it)
{
    qfile_free(&it->qf);
    qlog_free(&it->defer, it->ndefer);
    qlog_free(&it->bounce, it->nbounce);
}

/* Read ID's queue file wherever it is now, looking again when it moves
 * under us.  0; -1 with errno ENOENT (gone), EBADMSG (malformed, why in
 * err) or another errno. */
static int item_load(qcmd_t *c, const char *id, int hint, qitem_t *it, buf_t *err)
{
    buf_t path = BUF_INIT;
    int rc = -1, e = ENOENT;
    memset(it, 0, sizeof *it);
    str_copy(it->id, id, sizeof it->id);
    for (int t = 0; t < QCMD_TRIES; t++) {
        int q = t == 0 && hint >= 0 ? hint : spool_find(c->sp, id);
        if (q < 0) {
            e = ENOENT;
            break;
        }
        spool_path(c->sp, (queue_t)q, id, &path);
        buf_reset(err);
        if (qfile_read(buf_cstr(&path), &it->qf, err) == 0) {
            struct stat st;
            it->queue = (queue_t)q;
            it->mtime = stat(buf_cstr(&path), &st) == 0 ? (long long)st.st_mtime : 0;
            rc = 0;
            break;
        }
        e = errno;
        if (e != ENOENT)
            break;
    }
    buf_free(&path);
    if (rc == 0) {
        buf_t lerr = BUF_INIT;
        /* The logs are advisory here: a reason that cannot be read is shown as none. */
        qlog_read(c->sp, QLOG_DEFER, id, &it->defer, &it->ndefer, &lerr);
        qlog_read(c->sp, QLOG_BOUNCE, id, &it->bounce, &it->nbounce, &lerr);
        buf_free(&lerr);
    }
    errno = e;
    return rc;
}

/* The last logged reason for recipient i: the bounce log for a failed
 * one, the defer log otherwise; NULL when there is none. */
static const qlog_rec_t *item_reason(const qitem_t *it, size_t i)
{
    const char *addr = it->qf.rcpts[i];
    const qlog_rec_t *recs = it->qf.rcpt_status[i] == QF_FAILED ? it->bounce : it->defer;
    size_t n = it->qf.rcpt_status[i] == QF_FAILED ? it->nbounce : it->ndefer;
    if (it->qf.rcpt_status[i] == QF_DONE)
        return NULL;
    for (size_t k = n; k-- > 0;)
        if (strcmp(recs[k].rcpt, addr) == 0)
            return &recs[k];
    return NULL;
}

static const char *status_word(char s)
{
    return s == QF_DONE ? "done" : s == QF_FAILED ? "failed" : "pending";
}

typedef struct qent {
    char *id;
    queue_t queue;
} qent_t;

/* Append the valid IDs of one queue directory to *ents. */
static void list_dir(qcmd_t *c, queue_t q, qent_t **ents, size_t *n, size_t *cap)
{
    buf_t d = BUF_INIT;
    buf_printf(&d, "%s/%s", c->queue_dir, spool_queue_name(q));
    DIR *dir = opendir(buf_cstr(&d));
    buf_free(&d);
    if (!dir)
        return;   /* a queue nobody created yet is empty */
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (!spool_valid_id(de->d_name))
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *ents = xrealloc(*ents, *cap * sizeof **ents);
        }
        (*ents)[*n].id = xstrdup(de->d_name);
        (*ents)[*n].queue = q;
        (*n)++;
    }
    closedir(dir);
}

static int cmp_ent(const void *a, const void *b)
{
    return strcmp(((const qent_t *)a)->id, ((const qent_t *)b)->id);
}

/* The IDs in the queues of mask, sorted, each once (a message that moved
 * while we read the directories shows up twice). */
static qent_t *list_queues(qcmd_t *c, unsigned mask, size_t *count)
{
    qent_t *ents = NULL;
    size_t n = 0, cap = 0, k = 0;
    for (int q = 0; q < QUEUE__COUNT; q++)
        if (mask & QBIT(q))
            list_dir(c, (queue_t)q, &ents, &n, &cap);
    if (n > 1)
        qsort(ents, n, sizeof *ents, cmp_ent);
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && strcmp(ents[k - 1].id, ents[i].id) == 0)
            free(ents[i].id);
        else
            ents[k++] = ents[i];
    }
    *count = k;
    return ents;
}

static void free_ents(qent_t *ents, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ents[i].id);
    free(ents);
}

static int cmp_item(const void *a, const void *b)
{
    const qitem_t *x = a, *y = b;
    if (x->qf.arrival_usec != y->qf.arrival_usec)
        return x->qf.arrival_usec < y->qf.arrival_usec ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* Every readable message in active/, deferred/ and hold/, oldest first.
 * A message that moves while we look is found again. */
static qitem_t *load_all(qcmd_t *c, size_t *count)
{
    unsigned shown = QBIT(QUEUE_ACTIVE) | QBIT(QUEUE_DEFERRED) | QBIT(QUEUE_HOLD);
    size_t n = 0, have = 0;
    qent_t *ents = list_queues(c, shown, &n);
    qitem_t *items = n ? xcalloc(n, sizeof *items) : NULL;
    buf_t err = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (item_load(c, ents[i].id, (int)ents[i].queue, &items[have], &err) != 0) {
            if (errno != ENOENT)
                cli_fail("queue", "%s: cannot read the queue file: %s", ents[i].id, buf_cstr(&err));
            continue;
        }
        if (!(shown & QBIT(items[have].queue))) {
            item_free(&items[have]);
            continue;
        }
        have++;
    }
    buf_free(&err);
    free_ents(ents, n);
    if (have > 1)
        qsort(items, have, sizeof *items, cmp_item);
    *count = have;
    return items;
}

/* "Sat Nov 21 10:00:00", as mailq prints the arrival time. */
static void fmt_time(long long sec, char *out, size_t size, bool year)
{
    time_t t = (time_t)sec;
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(out, size, year ? "%a %b %e %H:%M:%S %Y" : "%a %b %e %H:%M:%S", &tm))
        str_copy(out, "?", size);
}

/* ------------------------------------------------------------------ */
/* list                                                                 */

/* A JSON string: valid UTF-8 passes, control bytes and invalid bytes
 * become \u00XX (so any address prints as valid JSON). */
static void json_str(buf_t *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    buf_putc(b, '"');
    while (*p) {
        unsigned char ch = *p;
        size_t len = ch < 0x80 ? 1 : (ch & 0xE0) == 0xC0 ? 2 : (ch & 0xF0) == 0xE0 ? 3 : (ch & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = len > 0 && !(len == 2 && ch < 0xC2) && !(len == 4 && ch > 0xF4);
        for (size_t k = 1; ok && k < len; k++)
            ok = (p[k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            unsigned cp = ((ch & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
            ok = cp >= 0x800 && !(cp >= 0xD800 && cp <= 0xDFFF);
        } else if (ok && len == 4) {
            unsigned cp = ((ch & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (!ok || len == 0) {
            buf_printf(b, "\\u%04X", ch);
            p++;
        } else if (len == 1) {
            if (ch == '"' || ch == '\\')
                buf_printf(b, "\\%c", ch);
            else if (ch < 0x20 || ch == 0x7F)
                buf_printf(b, "\\u%04X", ch);
            else
                buf_putc(b, (char)ch);
            p++;
        } else {
            buf_append(b, p, len);
            p += len;
        }
    }
    buf_putc(b, '"');
}

static void list_json(const qitem_t *items, size_t n, buf_t *out)
{
    buf_puts(out, "[");
    for (size_t i = 0; i < n; i++) {
        const qitem_t *it = &items[i];
        buf_puts(out, i ? ",\n {" : "\n {");
        buf_puts(out, "\"id\": ");
        json_str(out, it->id);
        buf_printf(out, ", \"queue\": \"%s\", \"size\": %ld, \"arrival\": %lld, ", spool_queue_name(it->queue),
                   it->qf.content_size, it->qf.arrival_usec / 1000000);
        if (it->queue == QUEUE_DEFERRED)
            buf_printf(out, "\"next_attempt\": %lld, ", it->mtime);
        else
            buf_puts(out, "\"next_attempt\": null, ");
        buf_puts(out, "\"sender\": ");
        json_str(out, it->qf.sender);
        buf_puts(out, ", \"recipients\": [");
        for (size_t r = 0; r < it->qf.nrcpt; r++) {
            const qlog_rec_t *why = item_reason(it, r);
            buf_puts(out, r ? ", {\"address\": " : "{\"address\": ");
            json_str(out, it->qf.rcpts[r]);
            buf_printf(out, ", \"status\": \"%s\", \"reason\": ", status_word(it->qf.rcpt_status[r]));
            if (why)
                json_str(out, why->text);
            else
                buf_puts(out, "null");
            buf_puts(out, "}");
        }
        buf_puts(out, "]}");
    }
    buf_puts(out, n ? "\n]\n" : "]\n");
}

static void list_text(const qitem_t *items, size_t n, buf_t *out)
{
    /* mailq's columns, the ID column widened to moat's 14-digit IDs. */
    int idw = 14;
    unsigned long long total = 0;
    if (n == 0) {
        buf_puts(out, "Mail queue is empty\n");
        return;
    }
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(items[i].id) > idw)
            idw = (int)strlen(items[i].id);
    buf_printf(out, "%-*s %8s %-19s  %s\n", idw + 1, "-Queue ID-", "--Size--", "----Arrival Time---",
               "-Sender/Recipient-------");
    int rcol = idw + 1 + 1 + 8 + 1 + 19 + 2;
    for (size_t i = 0; i < n; i++) {
        const qitem_t *it = &items[i];
        char when[64];
        char mark = it->queue == QUEUE_ACTIVE ? '*' : it->queue == QUEUE_HOLD ? '!' : ' ';
        fmt_time(it->qf.arrival_usec / 1000000, when, sizeof when, false);
        buf_printf(out, "%s%c%*s %8ld %-19s  %s\n", it->id, mark, idw - (int)strlen(it->id), "",
                   it->qf.content_size, when, *it->qf.sender ? vis(it->qf.sender) : "MAILER-DAEMON");
        const char *last = NULL;
        for (size_t r = 0; r < it->qf.nrcpt; r++) {
            if (it->qf.rcpt_status[r] != QF_PENDING)
                continue;
            const qlog_rec_t *why = item_reason(it, r);
            const char *text = why ? why->text : NULL;
            /* One reason line for a run of recipients deferred for the same reason. */
            if (text && (!last || strcmp(last, text) != 0))
                buf_printf(out, "(%s)\n", vis(text));
            last = text;
            buf_printf(out, "%*s%s\n", rcol, "", vis(it->qf.rcpts[r]));
        }
        buf_putc(out, '\n');
        total += (unsigned long long)it->qf.content_size;
    }
    buf_printf(out, "-- %llu Kbytes in %zu Request%s.\n", (total + 1023) / 1024, n, plural(n));
}

static int do_list(qcmd_t *c)
{
    size_t n = 0;
    qitem_t *items = load_all(c, &n);
    buf_t out = BUF_INIT;
    if (c->json)
        list_json(items, n, &out);
    else
        list_text(items, n, &out);
    fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    for (size_t i = 0; i < n; i++)
        item_free(&items[i]);
    free(items);
    return 0;
}

/* ------------------------------------------------------------------ */
/* show                                                                 */

/* Copy the message content to stdout: all of it, or the header / body. */
static int print_content(const qitem_t *it, FILE *f, bool header, bool body)
{
    if (fseek(f, it->qf.content_offset, SEEK_SET) != 0)
        return -1;
    long left = it->qf.content_size;
    bool in_header = true, at_line_start = true;
    char buf[8192];
    while (left > 0) {
        size_t want = (size_t)(left < (long)sizeof buf ? left : (long)sizeof buf);
        size_t got = fread(buf, 1, want, f);
        if (got == 0)
            break;
        left -= (long)got;
        if (header && body) {
            fwrite(buf, 1, got, stdout);
            continue;
        }
        for (size_t i = 0; i < got; i++) {
            bool was_header = in_header;
            /* The header ends at its first empty line, which belongs to neither part. */
            if (in_header && at_line_start && buf[i] == '\n') {
                in_header = false;
                at_line_start = true;
                continue;
            }
            if ((was_header && header) || (!was_header && body))
                putchar(buf[i]);
            at_line_start = buf[i] == '\n';
        }
    }
    return left == 0 ? 0 : -1;
}

static int do_show(qcmd_t *c, const char *id)
{
    qitem_t it;
    buf_t err = BUF_INIT;
    FILE *f = NULL;
    int loaded = -1;
    /* The content is read through a descriptor opened on the file just
     * parsed; if it moved in between, parse it again where it is now. */
    for (int t = 0; t < QCMD_TRIES && !f; t++) {
        if ((loaded = item_load(c, id, -1, &it, &err)) != 0)
            break;
        if (!(f = fopen(it.qf.path, "re"))) {
            int e = errno;
            item_free(&it);
            loaded = -1;
            buf_reset(&err);
            buf_printf(&err, "open: %s", strerror(e));
            errno = e;
            if (e != ENOENT)
                break;
        }
    }
    if (loaded != 0) {
        int e = errno;
        int found = spool_find(c->sp, id);
        int rc;
        if (e == ENOENT && found < 0)
            rc = cli_fail("queue", "%s: no such message", id);
        else if (found == QUEUE_INCOMING)
            rc = cli_fail("queue", "%s: still being received (incoming queue)", id);
        else if (e == EBADMSG)
            rc = cli_fail("queue", "%s: malformed queue file in %s/: %s", id, found >= 0 ? spool_queue_name((queue_t)found) : "?",
                      buf_cstr(&err));
        else
            rc = cli_fail("queue", "%s: %s", id, buf_cstr(&err));
        buf_free(&err);
        return rc;
    }
    buf_free(&err);
    bool all = !c->want_env && !c->want_header && !c->want_body;
    const char *qn = spool_queue_name(it.queue);
    char when[64];
    if (all || c->want_env) {
        if (all)
            printf("*** ENVELOPE RECORDS %s/%s ***\n", qn, id);
        printf("queue_id: %s\nqueue: %s\n", id, qn);
        fmt_time(it.qf.arrival_usec / 1000000, when, sizeof when, true);
        printf("arrival_time: %s (%lld.%06lld)\n", when, it.qf.arrival_usec / 1000000, it.qf.arrival_usec % 1000000);
        if (it.queue == QUEUE_DEFERRED) {
            fmt_time(it.mtime, when, sizeof when, true);
            printf("next_attempt: %s\n", when);
        }
        printf("message_size: %ld\n", it.qf.content_size);
        printf("client_name: %s\nclient_address: %s\nhelo_name: %s\nprotocol: %s\n", vis(it.qf.client_name),
               vis(it.qf.client_addr), vis(it.qf.helo), vis(it.qf.protocol));
        printf("sender: %s\n", vis(it.qf.sender));
        printf("body_type: %s\nsmtputf8: %s\n", *it.qf.body_type ? it.qf.body_type : "-",
               it.qf.smtputf8 ? "yes" : "no");
        for (size_t r = 0; r < it.qf.nrcpt; r++) {
            const qlog_rec_t *why = item_reason(&it, r);
            bool bcc = r >= it.qf.nrcpt - it.qf.nbcc;
            printf("%s: %s [%s]", bcc ? "bcc" : "recipient", vis(it.qf.rcpts[r]), status_word(it.qf.rcpt_status[r]));
            if (why)
                printf(" (%s%s%s)", vis(why->dsn), *why->dsn ? " " : "", vis(why->text));
            putchar('\n');
        }
        if (it.qf.filter)
            printf("filter: %s\n", vis(it.qf.filter));
        if (it.qf.redirect)
            printf("redirect: %s\n", vis(it.qf.redirect));
    }
    int rc = 0;
    if (all || c->want_header || c->want_body) {
        if (all)
            printf("*** MESSAGE CONTENTS %s/%s ***\n", qn, id);
        fflush(stdout);
        if (print_content(&it, f, all || c->want_header, all || c->want_body) != 0)
            rc = cli_fail("queue", "%s: cannot read the message content: %s", id, strerror(errno ? errno : EIO));
    }
    if (all)
        printf("*** END OF MESSAGE %s/%s ***\n", qn, id);
    fclose(f);
    item_free(&it);
    return rc;
}

/* ------------------------------------------------------------------ */
/* flush                                                                */

static int no_daemon(qcmd_t *c)
{
    return cli_fail("queue", "the daemon is not running (queue_directory %s); messages are delivered at its next start",
                c->queue_dir);
}

static bool daemon_gone(int e)
{
    return e == ENOENT || e == ECONNREFUSED;
}

/* Make deferred files due now (mtime = now), so the next daemon start
 * delivers them at its first scan, as the no-daemon message promises. */
static void make_due(qcmd_t *c, const char *id)
{
    buf_t p = BUF_INIT;
    if (id) {
        spool_path(c->sp, QUEUE_DEFERRED, id, &p);
        utimensat(AT_FDCWD, buf_cstr(&p), NULL, AT_SYMLINK_NOFOLLOW);
    } else {
        buf_printf(&p, "%s/%s", c->queue_dir, spool_queue_name(QUEUE_DEFERRED));
        DIR *d = opendir(buf_cstr(&p));
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL)
            if (spool_valid_id(de->d_name))
                utimensat(dirfd(d), de->d_name, NULL, AT_SYMLINK_NOFOLLOW);
        if (d)
            closedir(d);
    }
    buf_free(&p);
}

static int do_flush(qcmd_t *c, const char *id)
{
    if (id) {
        int q = spool_find(c->sp, id);
        if (q < 0)
            return cli_fail("queue", "%s: no such message", id);
        if (q != QUEUE_DEFERRED)
            return cli_fail("queue", "%s: not in the deferred queue (it is in %s/)", id, spool_queue_name((queue_t)q));
    }
    buf_t reply = BUF_INIT, err = BUF_INIT;
    int rc;
    if (qctl_request(c->queue_dir, "flush", id, QCMD_CTL_TIMEOUT_MS, &reply, &err) != 0) {
        if (daemon_gone(errno)) {
            make_due(c, id);
            rc = no_daemon(c);
        } else {
            rc = cli_fail("queue", "flush: %s", buf_cstr(&err));
        }
    } else if (strncmp(buf_cstr(&reply), "ok", 2) == 0) {
        printf("%s\n", vis(buf_cstr(&reply)));
        rc = 0;
    } else {
        rc = cli_fail("queue", "the daemon says: %s", vis(buf_cstr(&reply)));
    }
    buf_free(&reply);
    buf_free(&err);
    return rc;
}

/* After a release or requeue: the daemon delivers what is new in active/. */
static void nudge(qcmd_t *c)
{
    buf_t reply = BUF_INIT, err = BUF_INIT;
    if (qctl_request(c->queue_dir, "rescan", NULL, QCMD_CTL_TIMEOUT_MS, &reply, &err) != 0) {
        if (daemon_gone(errno))
            printf("moat queue: the daemon is not running; messages are delivered at its next start\n");
        else
            cli_fail("queue", "rescan: %s (the daemon delivers the messages at its next rescan)", buf_cstr(&err));
    } else if (strncmp(buf_cstr(&reply), "ok", 2) != 0) {
        cli_fail("queue", "rescan: the daemon says: %s", buf_cstr(&reply));
    }
    buf_free(&reply);
    buf_free(&err);
}

/* ------------------------------------------------------------------ */
/* delete, hold, release, requeue                                       */

typedef enum { OP_DELETE, OP_HOLD, OP_RELEASE, OP_REQUEUE } op_kind_t;

typedef struct op {
    const char *name;
    unsigned from;             /* queues an explicit ID may be taken from */
    unsigned from_all;         /* queues ALL takes */
    queue_t to;                /* moves */
    const char *logtext;       /* "ID: <logtext>" in the mail log */
    const char *summary;       /* "moat queue: <summary> N messages" */
    const char *logsum;        /* "<logsum>: N messages" in the mail log (postsuper's words) */
} op_t;

static const op_t ops[] = {
    [OP_DELETE] = {"delete", QBIT(QUEUE_ACTIVE) | QBIT(QUEUE_DEFERRED) | QBIT(QUEUE_HOLD) | QBIT(QUEUE_CORRUPT),
                   QBIT(QUEUE_ACTIVE) | QBIT(QUEUE_DEFERRED) | QBIT(QUEUE_HOLD), QUEUE_ACTIVE, "removed",
                   "deleted", "Deleted"},
    [OP_HOLD] = {"hold", QBIT(QUEUE_ACTIVE) | QBIT(QUEUE_DEFERRED), QBIT(QUEUE_ACTIVE) | QBIT(QUEUE_DEFERRED),
                 QUEUE_HOLD, "placed on hold", "held", "Placed on hold"},
    [OP_RELEASE] = {"release", QBIT(QUEUE_HOLD), QBIT(QUEUE_HOLD), QUEUE_ACTIVE, "released from hold",
                    "released", "Released from hold"},
    [OP_REQUEUE] = {"requeue", QBIT(QUEUE_DEFERRED), QBIT(QUEUE_DEFERRED), QUEUE_ACTIVE, "requeued",
                    "requeued", "Requeued"},
};

typedef enum { R_DONE, R_SKIP, R_GONE, R_ERROR } op_result_t;

/* Why an explicit ID found in queue q is not taken; note: not an error. */
static const char *refusal(op_kind_t k, int q, bool *note)
{
    *note = false;
    if (q == QUEUE_INCOMING)
        return "still being received (incoming queue)";
    switch (k) {
    case OP_DELETE:
        return "not in the deferred queue";   /* only with --deferred */
    case OP_HOLD:
        *note = q == QUEUE_HOLD;
        return *note ? "already on hold" : "in the corrupt queue";
    case OP_RELEASE:
        *note = q == QUEUE_ACTIVE;
        return *note ? "already in the active queue" : "not on hold";
    case OP_REQUEUE:
        *note = q == QUEUE_ACTIVE || q == QUEUE_HOLD;
        return q == QUEUE_HOLD ? "on hold: it stays held (moat queue release delivers it)"
               : q == QUEUE_ACTIVE ? "already in the active queue"
                                   : "in the corrupt queue";
    }
    return "cannot be moved";
}

/* One message: find it, act, and look again when the daemon moved it
 * first (ENOENT), up to QCMD_TRIES times.  explicit: the user named it
 * (refusals are reported); else it came from ALL (they are skipped). */
static op_result_t op_one(qcmd_t *c, op_kind_t k, unsigned from, const char *id, bool explicit)
{
    const op_t *op = &ops[k];
    buf_t err = BUF_INIT;
    op_result_t res = R_ERROR;
    for (int t = 0; t < QCMD_TRIES; t++) {
        int q = spool_find(c->sp, id);
        if (q < 0) {
            res = R_GONE;
            break;
        }
        if (!(from & QBIT(q))) {
            bool note;
            const char *why = refusal(k, q, &note);
            if (explicit && note)
                printf("moat queue: %s: %s\n", id, why);
            else if (explicit)
                cli_fail("queue", "%s: %s", id, why);
            res = explicit && !note ? R_ERROR : R_SKIP;
            goto out;
        }
        buf_reset(&err);
        int r = k == OP_DELETE ? spool_delete(c->sp, id, (queue_t)q, &err)
                               : spool_move(c->sp, id, (queue_t)q, op->to, &err);
        if (r == 0) {
            log_info("postsuper", "%s: %s", id, op->logtext);
            res = R_DONE;
            goto out;
        }
        if (errno != ENOENT) {
            cli_fail("queue", "%s", buf_cstr(&err));
            res = R_ERROR;
            goto out;
        }
        res = R_ERROR;   /* it moved: look again */
    }
    if (res == R_GONE) {
        if (explicit)
            cli_fail("queue", "%s: no such message", id);
        res = explicit ? R_ERROR : R_SKIP;
    } else {
        cli_fail("queue", "%s: it keeps moving (the daemon is busy with it); try again", id);
    }
out:
    buf_free(&err);
    return res;
}

static int do_op(qcmd_t *c, op_kind_t k, char **args, int nargs)
{
    const op_t *op = &ops[k];
    size_t done = 0;
    int rc = 0;
    bool all = nargs == 1 && strcmp(args[0], "ALL") == 0;
    unsigned from = all ? op->from_all : op->from;
    if (k == OP_DELETE && c->deferred_only)
        from = QBIT(QUEUE_DEFERRED);
    if (all) {
        size_t n = 0;
        qent_t *ents = list_queues(c, from, &n);
        for (size_t i = 0; i < n; i++) {
            op_result_t r = op_one(c, k, from, ents[i].id, false);
            if (r == R_DONE)
                done++;
            else if (r == R_ERROR)
                rc = 1;
        }
        free_ents(ents, n);
    } else {
        for (int i = 0; i < nargs; i++) {
            op_result_t r = op_one(c, k, from, args[i], true);
            if (r == R_DONE)
                done++;
            else if (r == R_ERROR)
                rc = 1;
        }
    }
    printf("moat queue: %s %zu message%s\n", op->summary, done, plural(done));
    if (done > 0) {
        log_info("postsuper", "%s: %zu message%s", op->logsum, done, plural(done));
        if (k == OP_RELEASE || k == OP_REQUEUE)
            nudge(c);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* the command                                                          */

static const struct option long_opts[] = {
    {"json", no_argument, NULL, 'j'},        {"deferred", no_argument, NULL, 'd'},
    {"envelope", no_argument, NULL, 'e'},    {"header", no_argument, NULL, 'H'},
    {"body", no_argument, NULL, 'b'},        {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "moat queue: %s (moat queue --help)\n", why);
    else
        fputs(usage_text, stderr);
    return 2;
}

int cmd_queue(int argc, char **argv)
{
    qcmd_t c = {0};
    const char *dir = NULL;
    char confbuf[PATH_MAX];
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'c': dir = optarg; break;
        case 'j': c.json = true; break;
        case 'd': c.deferred_only = true; break;
        case 'e': c.want_env = true; break;
        case 'H': c.want_header = true; break;
        case 'b': c.want_body = true; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: return usage(NULL);
        }
    }
    if (optind >= argc)
        return usage("no command");
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    int op = -1;
    if (strcmp(cmd, "list") == 0) {
        if (nargs)
            return usage("list takes no arguments");
    } else if (strcmp(cmd, "show") == 0) {
        if (nargs != 1)
            return usage("show takes one queue ID");
    } else if (strcmp(cmd, "flush") == 0) {
        if (nargs > 1)
            return usage("flush takes at most one queue ID");
    } else {
        for (size_t i = 0; i < ARRAY_LEN(ops); i++)
            if (strcmp(cmd, ops[i].name) == 0)
                op = (int)i;
        if (op < 0)
            return usage("unknown command");
        if (nargs == 0)
            return usage("give queue IDs or ALL");
        for (int i = 0; i < nargs; i++)
            if (strcmp(args[i], "ALL") == 0 && nargs > 1)
                return usage("ALL stands alone");
    }
    if (c.json && strcmp(cmd, "list") != 0)
        return usage("--json is for list");
    if (c.deferred_only && op != OP_DELETE)
        return usage("--deferred is for delete");
    if ((c.want_env || c.want_header || c.want_body) && strcmp(cmd, "show") != 0)
        return usage("--envelope, --header and --body are for show");
    /* Arguments that are not queue IDs never reach the disk. */
    for (int i = 0; i < nargs; i++)
        if (strcmp(args[i], "ALL") != 0 && !spool_valid_id(args[i]))
            return cli_fail("queue", "%s: not a queue ID (1 to %d characters 0-9 A-F)", args[i], QUEUE_ID_MAX - 1);
    if ((strcmp(cmd, "show") == 0 || strcmp(cmd, "flush") == 0) && nargs == 1 && strcmp(args[0], "ALL") == 0)
        return usage("ALL is for delete, hold, release and requeue");

    if (dir) {
        if (!realpath(dir, confbuf))
            return cli_fail("queue", "%s: %s", dir, strerror(errno));
        dir = confbuf;
    }
    buf_t err = BUF_INIT;
    config_t *cfg = config_load(dir, &err, NULL);
    if (!cfg) {
        fputs(buf_cstr(&err), stderr);
        buf_free(&err);
        return 1;
    }
    c.params = config_main(cfg);
    c.queue_dir = param_str(c.params, PARAM_queue_directory);
    int rc = 1;
    struct stat st;
    if (stat(c.queue_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = cli_fail("queue", "queue_directory %s: %s", c.queue_dir, errno ? strerror(errno) : "not a directory");
        goto out;
    }
    c.sp = spool_open(c.queue_dir, NULL, &err);
    if (!c.sp) {
        rc = cli_fail("queue", "%s", buf_cstr(&err));
        goto out;
    }
    if (op >= 0 && log_open(param_str(c.params, PARAM_syslog_name), param_str(c.params, PARAM_syslog_facility),
                            param_str(c.params, PARAM_maillog_file)) != 0)
        cli_fail("queue", "cannot open maillog_file %s: %s", param_str(c.params, PARAM_maillog_file), strerror(errno));

    if (strcmp(cmd, "list") == 0)
        rc = do_list(&c);
    else if (strcmp(cmd, "show") == 0)
        rc = do_show(&c, args[0]);
    else if (strcmp(cmd, "flush") == 0)
        rc = do_flush(&c, nargs ? args[0] : NULL);
    else
        rc = do_op(&c, (op_kind_t)op, args, nargs);
    if (fflush(stdout) != 0 && rc == 0)
        rc = cli_fail("queue", "write: %s", strerror(errno));
out:
    spool_close(&c.sp);
    config_free(&cfg);
    buf_free(&err);
    return rc;
}
