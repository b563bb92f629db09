/*
 * fuzz_qlog: the defer/ and bounce/ log reader (qlog_read) on arbitrary
 * bytes.  The logs are parsed by the queue manager, the bounce builder and
 * `moat queue list`, so a damaged log must give records or skipped lines,
 * never a crash, a leak or a missing field.  (Fields may hold any byte but
 * NUL, CR and LF included: whoever displays them escapes them.)  Two
 * properties beyond that: what was read writes back and reads back the same
 * (encoding is lossless), and a record appended to a bounce log that ends
 * in any bytes (a torn line too) reads back as the last record.
 * The input goes to a private temp queue (qlog_read takes a queue ID).
 */
#include "core/buf.h"
#include "core/util.h"
#include "queue/spool.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FQ_ID "0FACE"

static char dir[64];
static spool_t *sp;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static void cleanup(void)
{
    spool_close(&sp);
    if (dir[0])
        nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void put(const char *sub, const uint8_t *data, size_t size)
{
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/%s", spool_dir(sp), sub);
    mkdir(buf_cstr(&p), 0700);
    buf_printf(&p, "/%s", FQ_ID);
    int fd = open(buf_cstr(&p), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size))
        abort();
    close(fd);
    buf_free(&p);
}

static bool present(const char *s)
{
    return s != NULL;
}

static bool same(const qlog_rec_t *a, const qlog_rec_t *b)
{
    return strcmp(a->rcpt, b->rcpt) == 0 && strcmp(a->orig, b->orig) == 0 && strcmp(a->dsn, b->dsn) == 0 &&
           a->when_usec == b->when_usec && strcmp(a->relay, b->relay) == 0 && strcmp(a->text, b->text) == 0 &&
           strcmp(a->reply, b->reply) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    buf_t err = BUF_INIT;
    if (!sp) {
        str_copy(dir, "/tmp/fuzz_qlog.XXXXXX", sizeof dir);
        if (!mkdtemp(dir))
            abort();
        atexit(cleanup);
        buf_t q = BUF_INIT;
        buf_printf(&q, "%s/queue", dir);
        sp = spool_open(buf_cstr(&q), NULL, &err);
        buf_free(&q);
        if (!sp)
            abort();
    }
    qlog_rec_t *recs = NULL, *again = NULL;
    size_t n = 0, n2 = 0;

    put("defer", data, size);
    if (qlog_read(sp, QLOG_DEFER, FQ_ID, &recs, &n, &err) != 0)
        abort();   /* a readable file is never an error: bad lines are skipped */
    for (size_t i = 0; i < n; i++) {
        const qlog_rec_t *r = &recs[i];
        if (!present(r->rcpt) || !present(r->orig) || !present(r->dsn) || !present(r->relay) ||
            !present(r->text) || !present(r->reply) || r->when_usec < 0)
            abort();
    }
    /* Write back (replace) and read again: the same records. */
    if (qlog_write(sp, QLOG_DEFER, FQ_ID, recs, n, &err) != 0)
        abort();
    if (qlog_read(sp, QLOG_DEFER, FQ_ID, &again, &n2, &err) != 0 || n2 != n)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!same(&recs[i], &again[i]))
            abort();
    qlog_free(&again, n2);

    /* Append after whatever the input left: the new record is the last one. */
    put("bounce", data, size);
    qlog_rec_t mine = {"fuzz@example.com", "", "5.0.0", 1, "none", "appended", ""};
    if (qlog_write(sp, QLOG_BOUNCE, FQ_ID, &mine, 1, &err) != 0)
        abort();
    if (qlog_read(sp, QLOG_BOUNCE, FQ_ID, &again, &n2, &err) != 0 || n2 == 0 || !same(&again[n2 - 1], &mine))
        abort();
    qlog_free(&again, n2);
    qlog_free(&recs, n);
    qlog_remove(sp, FQ_ID);
    buf_free(&err);
    return 0;
}
