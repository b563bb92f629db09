/*
 * scratch: a unit test's private directory under /tmp, for table and
 * list files: made, filled, named in configuration text as "%D", and
 * removed with everything in it.  Header-only, for the test binary.
 */
#ifndef MOAT_TESTS_SCRATCH_H
#define MOAT_TESTS_SCRATCH_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"

/* dir = "/tmp/moat-TAG-XXXXXX", created; "" when that fails. */
static inline void scratch_make(char *dir, size_t size, const char *tag)
{
    snprintf(dir, size, "/tmp/moat-%s-XXXXXX", tag);
    if (!mkdtemp(dir))
        dir[0] = 0;
}

/* The file dir/name with text in it. */
static inline void scratch_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *fp = fopen(p, "w");
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
}

/* text with every "%D" replaced by dir, appended to out. */
static inline void scratch_expand(buf_t *out, const char *text, const char *dir)
{
    for (const char *p = text; *p; p++) {
        if (p[0] == '%' && p[1] == 'D') {
            buf_puts(out, dir);
            p++;
        } else {
            buf_putc(out, *p);
        }
    }
}

/* Remove dir and the files in it. */
static inline void scratch_remove(const char *dir)
{
    if (!dir[0])
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

#endif
