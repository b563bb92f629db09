/*
 * queue_testlib: the file helpers the queue manager's tests share
 * (test_qmgr.c, test_local.c): remove a temporary tree, count a
 * directory's entries, read a whole file.  Header-only (static inline),
 * so each test file takes what it uses without an unused-function warning.
 */
#ifndef MOAT_TEST_QUEUE_TESTLIB_H
#define MOAT_TEST_QUEUE_TESTLIB_H

#include "core/buf.h"
#include "core/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static inline void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Number of entries in dir (-1 when missing); the last name in *name. */
static inline int list_dir(const char *dir, char **name)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    if (name)
        *name = NULL;
    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        if (name) {
            free(*name);
            *name = xstrdup(de->d_name);
        }
    }
    closedir(d);
    return n;
}

/* The whole file (malloc'd; "" when empty), or NULL when it cannot be opened. */
static inline char *slurp(const char *path)
{
    buf_t b = BUF_INIT;
    char tmp[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0)
        buf_append(&b, tmp, (size_t)r);
    close(fd);
    return b.data ? buf_steal(&b) : xstrdup("");
}

#endif
