/*
 * fuzz_maptext: arbitrary text as a texthash: table, as the source of
 * `moat map build` (then read back as hash:), and as inline:{...} and
 * static:{...} names.
 *
 * Differential: texthash and the compiled table read the same syntax, so
 * they must agree — both refuse the file, or both answer every probe key
 * (words of the input) with the same value and origin line.  The one
 * allowed difference: a key longer than LMDB's limit fails only the build.
 * Files live in /dev/shm (or /tmp) under a per-process name.
 */
#include "maps/maps.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[128], lpath[160];

static void remove_files(void)
{
    unlink(path);
    unlink(lpath);
}

static void write_file(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/moat-fuzz-maptext-%ld", dir, (long)getpid());
        snprintf(lpath, sizeof lpath, "%s.lmdb", path);
        atexit(remove_files);
    }
    FILE *fp = fopen(path, "w");
    if (!fp)
        abort();
    if (size && fwrite(data, 1, size, fp) != size)
        abort();
    fclose(fp);
}

/* Up to max words of the input (white-space separated), lower and upper
 * cased alike, as probe keys. */
static size_t words(const uint8_t *data, size_t size, char out[][80], size_t max)
{
    size_t n = 0, i = 0;
    while (i < size && n < max) {
        while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
            i++;
        size_t k = 0;
        while (i < size && data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r') {
            if (k < 79 && data[i])
                out[n][k++] = (char)data[i];
            i++;
        }
        out[n][k] = 0;
        if (k)
            n++;
    }
    return n;
}

static void texthash_vs_build(const uint8_t *data, size_t size)
{
    write_file(data, size);
    char spec[200];
    buf_t err = BUF_INIT, berr = BUF_INIT, v1 = BUF_INIT, v2 = BUF_INIT;
    snprintf(spec, sizeof spec, "texthash:%s", path);
    map_t *t = map_open(spec, NULL, &err);
    unlink(lpath);
    int built = map_build(path, &berr);
    if (!t && built == 0)
        abort();
    if (t && built != 0 && !strstr(buf_cstr(&berr), "key longer than"))
        abort();
    if (t && built == 0) {
        snprintf(spec, sizeof spec, "hash:%s", path);
        map_t *h = map_open(spec, NULL, &err);
        if (!h)
            abort();
        static char probe[48][80];
        size_t n = words(data, size, probe, 48);
        for (size_t i = 0; i < n; i++) {
            map_origin_t o1, o2;
            map_status s1 = map_lookup(t, probe[i], &v1, &o1);
            map_status s2 = map_lookup(h, probe[i], &v2, &o2);
            if (s1 == MAP_TEMPFAIL || s1 != s2)
                abort();
            if (s1 == MAP_FOUND && (v1.len != v2.len || memcmp(v1.data, v2.data, v1.len) != 0 ||
                                    o1.line != o2.line || o1.line < 1 || v1.len == 0))
                abort();
        }
        map_close(&h);
    }
    map_close(&t);
    unlink(lpath);
    buf_free(&err);
    buf_free(&berr);
    buf_free(&v1);
    buf_free(&v2);
}

static void named(const char *type, const uint8_t *data, size_t size)
{
    buf_t spec = BUF_INIT, err = BUF_INIT, v = BUF_INIT;
    buf_printf(&spec, "%s:{", type);
    for (size_t i = 0; i < size; i++)
        if (data[i])
            buf_putc(&spec, (char)data[i]);
    buf_putc(&spec, '}');
    map_t *m = map_open(buf_cstr(&spec), NULL, &err);
    if (!m) {
        /* The message names the table as given. */
        if (strncmp(buf_cstr(&err), buf_cstr(&spec), spec.len) != 0)
            abort();
    } else {
        static char probe[16][80];
        size_t n = words(data, size, probe, 16);
        for (size_t i = 0; i < n; i++) {
            /* "k=v" words probe k. */
            char *eq = strchr(probe[i], '=');
            if (eq)
                *eq = 0;
            map_origin_t o;
            map_status s = map_lookup(m, probe[i], &v, &o);
            if (s == MAP_TEMPFAIL || (s == MAP_FOUND && o.file != NULL))
                abort();
        }
        if (strcmp(type, "static") == 0 && map_lookup(m, "any", &v, NULL) != MAP_FOUND)
            abort();
        map_close(&m);
    }
    buf_free(&spec);
    buf_free(&err);
    buf_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 14)
        return 0;
    /* The first byte picks the door, so one corpus serves all three. */
    switch (data[0] % 4) {
    case 0:
    case 1: texthash_vs_build(data + 1, size - 1); break;
    case 2: named("inline", data + 1, size - 1); break;
    default: named("static", data + 1, size - 1); break;
    }
    return 0;
}
