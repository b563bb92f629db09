/*
 * fuzz_regexp: a regexp: table from arbitrary text.  The input is written
 * to a temporary file and opened; then a few keys taken from the input
 * (each of its lines, the text between its delimiters, and the whole
 * input) are looked up.  fuzz_pcre.c includes this file with
 * FUZZ_RE_TYPE "pcre": the two table types share their parser.
 *
 * Checks the contract, not just "no crash": an open fails exactly when it
 * reported errors, every error line starts with "path:" and ends with a
 * newline, a lookup answers one of the three outcomes, and a found
 * value's origin is this file and a line inside it.
 */
#include "core/buf.h"
#include "core/util.h"
#include "maps/maps.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FUZZ_RE_TYPE
#define FUZZ_RE_TYPE "regexp"
#endif

/* Big enough for tables with some structure, small enough that each run
 * stays fast. */
#define FUZZ_MAX_INPUT 4096
#define FUZZ_MAX_KEY 80

static char path[64];

/* glibc's regcomp copies the operand of "+" and of "{n}" (a+ is aa*),
 * so stacked or nested repetition ("a++++", "a{99}{99}") grows the
 * compiled tree multiplicatively: a configuration-time cost a postmaster
 * can choose (Postfix pays it too), not a bug.  Skip inputs whose
 * repetition factors multiply past a bound, counting each "+" as 2. */
static bool repetition_too_big(const uint8_t *d, size_t n)
{
    unsigned long long prod = 1;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '+') {
            prod *= 2;
        } else if (d[i] == '{' && i + 1 < n && d[i + 1] >= '0' && d[i + 1] <= '9') {
            unsigned long long v = 0;
            for (size_t j = i + 1; j < n && d[j] >= '0' && d[j] <= '9' && v < 100000; j++)
                v = v * 10 + (d[j] - '0');
            prod *= v > 1 ? v : 1;
        }
        if (prod > 20000)
            return true;
    }
    return false;
}

static void remove_table(void)
{
    unlink(path);
}

static void check_errors(const buf_t *err)
{
    const char *s = buf_cstr(err);
    if (err->len == 0 || s[err->len - 1] != '\n')
        abort();
    size_t pl = strlen(path);
    for (const char *line = s; *line;) {
        if (strncmp(line, path, pl) != 0 || line[pl] != ':')
            abort();
        line = strchr(line, '\n') + 1;
    }
}

static void lookup(map_t *m, const char *key, size_t len, int nlines, buf_t *value)
{
    char k[FUZZ_MAX_KEY + 1];
    if (len > FUZZ_MAX_KEY)
        len = FUZZ_MAX_KEY;
    memcpy(k, key, len);
    k[len] = 0;
    map_origin_t o;
    map_status st = map_lookup(m, k, value, &o);
    if (st == MAP_FOUND || st == MAP_TEMPFAIL) {
        if (!o.file || strcmp(o.file, path) != 0 || o.line < 1 || o.line > nlines)
            abort();
        if (strlen(buf_cstr(value)) > value->len)
            abort();
    } else if (st != MAP_NOTFOUND || o.file != NULL) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT || repetition_too_big(data, size))
        return 0;
    if (!path[0]) {
        str_copy(path, "/tmp/moat-fuzz-" FUZZ_RE_TYPE "-XXXXXX", sizeof path);
        int fd = mkstemp(path);
        if (fd < 0)
            abort();
        close(fd);
        atexit(remove_table);
    }
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);

    int nlines = 1;
    for (size_t i = 0; i < size; i++)
        if (data[i] == '\n' && i + 1 < size)
            nlines++;

    char spec[96];
    snprintf(spec, sizeof spec, FUZZ_RE_TYPE ":%s", path);
    buf_t err = BUF_INIT, value = BUF_INIT;
    map_t *m = map_open(spec, NULL, &err);
    if (!m) {
        check_errors(&err);
    } else {
        if (err.len != 0)
            abort();
        const char *s = (const char *)data;
        /* Keys: every line (up to NUL), then the text between the first
         * two occurrences of each line's first byte, then everything. */
        int n = 0;
        for (size_t pos = 0; pos < size && n < 32; n++) {
            const char *nl = memchr(s + pos, '\n', size - pos);
            size_t len = nl ? (size_t)(nl - (s + pos)) : size - pos;
            const char *nul = memchr(s + pos, 0, len);
            size_t klen = nul ? (size_t)(nul - (s + pos)) : len;
            lookup(m, s + pos, klen, nlines, &value);
            if (klen > 2) {
                const char *end = memchr(s + pos + 1, s[pos], klen - 1);
                if (end)
                    lookup(m, s + pos + 1, (size_t)(end - (s + pos + 1)), nlines, &value);
            }
            pos += len + 1;
        }
        const char *nul = memchr(s, 0, size);
        lookup(m, s, nul ? (size_t)(nul - s) : size, nlines, &value);
        lookup(m, "", 0, nlines, &value);
        map_close(&m);
        if (m)
            abort();
    }
    buf_free(&err);
    buf_free(&value);
    return 0;
}
