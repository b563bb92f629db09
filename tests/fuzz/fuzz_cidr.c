/*
 * fuzz_cidr: arbitrary text as a cidr: table.  map_open must either
 * succeed or explain every failure as file:line lines; a successful table
 * must answer lookups (fixed addresses, and words taken from the input)
 * with a non-empty value and an origin line inside the file.  The table
 * goes through a scratch file in /dev/shm (or /tmp), since cidr: reads
 * files.
 */
#include "maps/maps.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[128];

static void remove_file(void)
{
    unlink(path);
}

static void write_file(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/moat-fuzz-cidr-%ld", dir, (long)getpid());
        atexit(remove_file);
    }
    FILE *fp = fopen(path, "w");
    if (!fp)
        abort();
    if (size && fwrite(data, 1, size, fp) != size)
        abort();
    fclose(fp);
}

static void check_lookup(map_t *m, const char *key, int lines, buf_t *val)
{
    map_origin_t o;
    map_status s = map_lookup(m, key, val, &o);
    if (s == MAP_TEMPFAIL)
        abort();   /* an in-memory table has nothing to fail on */
    if (s == MAP_FOUND && (val->len == 0 || !o.file || strcmp(o.file, path) != 0 || o.line < 1 ||
                           o.line > lines))
        abort();
    if (s == MAP_NOTFOUND && val->len != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    write_file(data, size);
    int lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    char spec[160];
    snprintf(spec, sizeof spec, "cidr:%s", path);
    buf_t err = BUF_INIT, val = BUF_INIT;
    map_t *m = map_open(spec, NULL, &err);
    if (!m) {
        /* Every message line names the file. */
        if (err.len == 0)
            abort();
        const char *p = err.data;
        while (*p) {
            if (strncmp(p, path, strlen(path)) != 0)
                abort();
            const char *nl = strchr(p, '\n');
            if (!nl)
                abort();
            p = nl + 1;
        }
    } else {
        static const char *const keys[] = {"1.2.3.4", "0.0.0.0", "255.255.255.255", "10.0.0.1",
                                           "::", "::1", "2001:db8::1", "::ffff:1.2.3.4",
                                           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "x", ""};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            check_lookup(m, keys[i], lines, &val);
        /* Words of the input: patterns often are addresses themselves. */
        char word[64];
        size_t i = 0;
        for (int n = 0; n < 32 && i < size; n++) {
            while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '!' ||
                                data[i] == '['))
                i++;
            size_t k = 0;
            while (i < size && k < sizeof word - 1 && data[i] != ' ' && data[i] != '\t' && data[i] != '\n' &&
                   data[i] != '/' && data[i] != ']' && data[i] != 0)
                word[k++] = (char)data[i++];
            word[k] = 0;
            while (i < size && data[i] != ' ' && data[i] != '\t' && data[i] != '\n')
                i++;
            check_lookup(m, word, lines, &val);
        }
        if (map_changed(m))
            abort();
        map_close(&m);
    }
    buf_free(&err);
    buf_free(&val);
    return 0;
}
