/*
 * fileio: the blocking file primitives durable writes are built from.
 * Called on pool threads and at start-up, never on the event loop.
 * Each returns 0, or -1 with errno set.
 */
#ifndef MOAT_CORE_FILEIO_H
#define MOAT_CORE_FILEIO_H

#include <stddef.h>

/* write(2) until all n bytes are written (EINTR retried; 0 → EIO). */
int write_all(int fd, const void *p, size_t n);
/* fsync a directory, so entries created or renamed in it survive a crash. */
int fsync_dir(const char *path);
/* rename that never replaces an existing target (RENAME_NOREPLACE, or
 * link + unlink where the file system lacks it): EEXIST if to exists. */
int rename_noreplace(const char *from, const char *to);

#endif
