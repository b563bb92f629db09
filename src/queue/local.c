/*
 * local: delivery to Maildirs under mail_spool_directory, as Postfix's
 * local(8) does when mail_spool_directory ends in '/'.  See
 * docs/local-delivery.md.
 *
 * Owns: mailbox naming (local_mailbox_name) and the Maildir protocol: write
 * tmp/UNIQUE, fsync it, move it to new/UNIQUE without replacing anything,
 * fsync new/.  Runs on pool threads; blocking is its job.
 *
 * Never: let a recipient choose a path outside mail_spool_directory (the
 * mailbox name is escaped so it cannot hold '/', be "." or "..", or start
 * with '.'); leave a partial file in new/; create mail_spool_directory
 * itself (a missing root is an unmounted disk or a typo, not a reason to
 * deliver somewhere new).
 */
#include "queue/qmgr.h"

#include "core/fileio.h"
#include "core/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (64 * 1024)

void local_mailbox_name(const char *local, const char *delimiters, buf_t *out)
{
    size_t n = strlen(local);
    buf_reset(out);
    /* The extension starts at the first delimiter; searching from the second
     * byte keeps "+foo" whole rather than naming an empty mailbox. */
    if (delimiters && *delimiters && n > 1) {
        size_t k = 1 + strcspn(local + 1, delimiters);
        if (k < n)
            n = k;
    }
    if (n == 0) {
        /* No local part can produce "%00" (NUL never occurs in one). */
        buf_puts(out, "%00");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int c = lc((unsigned char)local[i]);
        bool plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                     c == '-' || (c == '.' && i > 0);
        if (plain)
            buf_putc(out, (char)c);
        else
            buf_printf(out, "%%%02X", (unsigned)c);
    }
}

/* The local part of an address: before the last '@', quotes removed
 * ("john doe"@x -> john doe) so that quoting does not change the mailbox. */
static char *local_part(const char *addr)
{
    const char *at = strrchr(addr, '@');
    size_t n = at ? (size_t)(at - addr) : strlen(addr);
    if (n >= 2 && addr[0] == '"' && addr[n - 1] == '"') {
        char *out = xmalloc(n), *o = out;
        for (size_t i = 1; i < n - 1; i++) {
            if (addr[i] == '\\' && i + 1 < n - 1)
                i++;
            *o++ = addr[i];
        }
        *o = 0;
        return out;
    }
    return xstrndup(addr, n);
}

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static char host_name[256];

/* Maildir's unique names end in the host name, with '/' and ':' written
 * as \057 and \072 because those bytes mean something in a Maildir. */
static void host_init(void)
{
    char h[200];
    buf_t b = BUF_INIT;
    if (gethostname(h, sizeof h - 1) != 0 || !h[0])
        str_copy(h, "localhost", sizeof h);
    h[sizeof h - 1] = 0;
    for (const char *p = h; *p; p++) {
        if (*p == '/')
            buf_puts(&b, "\\057");
        else if (*p == ':')
            buf_puts(&b, "\\072");
        else
            buf_putc(&b, *p);
    }
    str_copy(host_name, buf_cstr(&b), sizeof host_name);
    buf_free(&b);
}

static atomic_ulong delivery_counter;

/* mkdir that is fine with an existing directory; a new entry is made
 * durable by fsyncing the parent, or a crash could lose a whole mailbox
 * whose messages were already reported delivered. */
static int make_dir(const char *path, const char *parent, buf_t *detail)
{
    struct stat st;
    if (mkdir(path, 0700) == 0) {
        if (fsync_dir(parent) != 0) {
            buf_printf(detail, "fsync %s: %s", parent, strerror(errno));
            return -1;
        }
        return 0;
    }
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (errno == EEXIST)
        errno = ENOTDIR;
    buf_printf(detail, "create maildir %s: %s", path, strerror(errno));
    return -1;
}

/* A header value: control bytes cannot occur (the queue file holds what the
 * session accepted) but must never start a new header line if they did. */
static void put_header_value(buf_t *b, const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        buf_putc(b, (*p < 0x20 || *p == 0x7F) ? '?' : (char)*p);
}

/* Copy the queue file's content after the two headers. */
static int copy_content(const qfile_t *q, int out, const char *tmp, buf_t *detail)
{
    int in = open(q->path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        buf_printf(detail, "open queue file %s: %s", q->path, strerror(errno));
        return -1;
    }
    char *chunk = xmalloc(COPY_CHUNK);
    long long off = q->content_offset, left = q->content_size;
    int rc = 0;
    while (left > 0) {
        size_t want = left > COPY_CHUNK ? COPY_CHUNK : (size_t)left;
        ssize_t r = pread(in, chunk, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            buf_printf(detail, "read queue file %s: %s", q->path,
                       r < 0 ? strerror(errno) : "unexpected end of file");
            rc = -1;
            break;
        }
        if (write_all(out, chunk, (size_t)r) != 0) {
            buf_printf(detail, "write maildir file %s: %s", tmp, strerror(errno));
            rc = -1;
            break;
        }
        off += r;
        left -= r;
    }
    free(chunk);
    close(in);
    return rc;
}

int local_deliver_to(const char *spool_root, const char *delimiters, const qfile_t *q,
                     size_t rcpt_index, buf_t *detail)
{
    buf_t name = BUF_INIT, mbox = BUF_INIT, sub = BUF_INIT, tmp = BUF_INIT, dst = BUF_INIT;
    buf_t head = BUF_INIT;
    struct stat st;
    int fd = -1, rc = -1;

    buf_reset(detail);
    if (rcpt_index >= q->nrcpt) {
        buf_puts(detail, "no such recipient");
        return -1;
    }
    size_t rootlen = spool_root ? strlen(spool_root) : 0;
    if (rootlen == 0 || spool_root[rootlen - 1] != '/') {
        buf_printf(detail, "mail_spool_directory \"%s\" does not end in /; moat delivers to Maildir only",
                   spool_root ? spool_root : "");
        return -1;
    }
    if (stat(spool_root, &st) != 0) {
        buf_printf(detail, "mail_spool_directory %s: %s", spool_root, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        buf_printf(detail, "mail_spool_directory %s: not a directory", spool_root);
        return -1;
    }

    char *local = local_part(q->rcpts[rcpt_index]);
    local_mailbox_name(local, delimiters, &name);
    free(local);
    buf_printf(&mbox, "%s%s", spool_root, buf_cstr(&name));
    if (make_dir(buf_cstr(&mbox), spool_root, detail) != 0)
        goto out;
    static const char *const parts[] = {"tmp", "new", "cur"};
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
        buf_reset(&sub);
        buf_printf(&sub, "%s/%s", buf_cstr(&mbox), parts[i]);
        if (make_dir(buf_cstr(&sub), buf_cstr(&mbox), detail) != 0)
            goto out;
    }

    pthread_once(&host_once, host_init);
    long long t = now_usec();
    unsigned long nth = atomic_fetch_add(&delivery_counter, 1) + 1;
    buf_t uniq = BUF_INIT;
    buf_printf(&uniq, "%lld.M%06lldP%ldQ%lu.%s", t / 1000000, t % 1000000, (long)getpid(), nth,
               host_name);
    buf_printf(&tmp, "%s/tmp/%s", buf_cstr(&mbox), buf_cstr(&uniq));
    buf_printf(&dst, "%s/new/%s", buf_cstr(&mbox), buf_cstr(&uniq));
    buf_free(&uniq);

    fd = open(buf_cstr(&tmp), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        buf_printf(detail, "create maildir file %s: %s", buf_cstr(&tmp), strerror(errno));
        goto out;
    }
    buf_puts(&head, "Return-Path: <");
    put_header_value(&head, q->sender ? q->sender : "");
    buf_puts(&head, ">\nDelivered-To: ");
    put_header_value(&head, q->rcpts[rcpt_index]);
    buf_putc(&head, '\n');
    if (write_all(fd, head.data, head.len) != 0) {
        buf_printf(detail, "write maildir file %s: %s", buf_cstr(&tmp), strerror(errno));
        goto fail_tmp;
    }
    if (copy_content(q, fd, buf_cstr(&tmp), detail) != 0)
        goto fail_tmp;
    if (fsync(fd) != 0) {
        buf_printf(detail, "fsync maildir file %s: %s", buf_cstr(&tmp), strerror(errno));
        goto fail_tmp;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        buf_printf(detail, "close maildir file %s: %s", buf_cstr(&tmp), strerror(errno));
        goto fail_tmp;
    }
    if (rename_noreplace(buf_cstr(&tmp), buf_cstr(&dst)) != 0) {
        buf_printf(detail, "move maildir file to %s: %s", buf_cstr(&dst), strerror(errno));
        goto fail_tmp;
    }
    buf_reset(&sub);
    buf_printf(&sub, "%s/new", buf_cstr(&mbox));
    if (fsync_dir(buf_cstr(&sub)) != 0) {
        /* Not known to be durable and about to be retried: avoid a duplicate. */
        buf_printf(detail, "fsync %s: %s", buf_cstr(&sub), strerror(errno));
        unlink(buf_cstr(&dst));
        goto out;
    }
    buf_reset(detail);
    buf_puts(detail, buf_cstr(&dst));
    rc = 0;
    goto out;

fail_tmp:
    if (fd >= 0)
        close(fd);
    fd = -1;
    unlink(buf_cstr(&tmp));
out:
    if (fd >= 0)
        close(fd);
    buf_free(&name);
    buf_free(&mbox);
    buf_free(&sub);
    buf_free(&tmp);
    buf_free(&dst);
    buf_free(&head);
    return rc;
}

int local_deliver_maildir(const params_t *params, const qfile_t *q, size_t rcpt_index,
                          buf_t *detail)
{
    return local_deliver_to(param_str(params, PARAM_mail_spool_directory),
                            param_str(params, PARAM_recipient_delimiter), q, rcpt_index, detail);
}
