/*
 * fuzz_qfile: qfile_read() and the status marks on arbitrary bytes.  The reader is what decides
 * at start-up whether a file in active/ is a message or debris, so it must
 * reject anything malformed without crashing, leaking or reading past the
 * file; an accepted file must satisfy the invariants delivery relies on.
 * The input goes to a private temp file (qfile_read takes a path).
 */
#include "core/buf.h"
#include "core/util.h"
#include "queue/spool.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64];

static void cleanup(void)
{
    if (path[0])
        unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz_qfile.%ld", (long)getpid());
        atexit(cleanup);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    if (size > 0 && write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);

    qfile_t q;
    buf_t err = BUF_INIT;
    if (qfile_read(path, &q, &err) == 0) {
        /* What delivery relies on. */
        if (q.nrcpt == 0 || !spool_valid_id(q.queue_id))
            abort();
        if (q.content_offset < 0 || q.content_size < 0 ||
            (size_t)q.content_offset + (size_t)q.content_size > size)
            abort();
        for (size_t i = 0; i < q.nrcpt; i++) {
            if (!q.rcpts[i] || !q.rcpts[i][0])
                abort();
            if (q.rcpt_offset[i] < 0 || (size_t)q.rcpt_offset[i] >= size)
                abort();
            char c = (char)data[q.rcpt_offset[i]];
            if ((c == QF_DONE) != (q.rcpt_done[i] != 0) || q.rcpt_status[i] != c ||
                (c != QF_DONE && c != QF_PENDING && c != QF_FAILED))
                abort();
        }
        /* Marking recipients (through a kept fd, then by path) must keep
         * the file valid and change exactly the one byte. */
        if (qfile_open_marks(&q, &err) == 0 && qfile_mark(&q, 0, QF_FAILED, &err) == 0 &&
            qfile_mark_done(&q, q.nrcpt - 1, &err) == 0) {
            qfile_t again;
            if (qfile_read(path, &again, &err) != 0 || !again.rcpt_done[again.nrcpt - 1] ||
                (q.nrcpt > 1 && again.rcpt_status[0] != QF_FAILED))
                abort();
            for (size_t i = 1; i + 1 < again.nrcpt; i++)
                if (again.rcpt_status[i] != q.rcpt_status[i])
                    abort();
            qfile_free(&again);
        }
        qfile_free(&q);
    } else if (err.len == 0) {
        abort();   /* a rejection always says why */
    }
    buf_free(&err);
    return 0;
}
