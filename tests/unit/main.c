/*
 * The unit-test runner: runs every registered TEST, or those whose name
 * contains argv[1].  Exit status 1 when any CHECK failed.
 */
#include "harness.h"

#include "core/log.h"

#include <stdarg.h>
#include <stdlib.h>

typedef struct { const char *name, *file; test_fn fn; } test_t;
static test_t tests[1024];
static int ntests, cur_failed;

void harness_register(const char *name, const char *file, test_fn fn)
{
    if (ntests == (int)(sizeof tests / sizeof tests[0])) {
        fprintf(stderr, "harness: too many tests\n");
        exit(2);
    }
    tests[ntests].name = name;
    tests[ntests].file = file;
    tests[ntests].fn = fn;
    ntests++;
}

void harness_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    cur_failed++;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    /* Modules log as they work; keep the runner's output to results. */
    const char *logfile = getenv("MOAT_UNIT_LOG");
    log_open("moat", "mail", logfile ? logfile : "/dev/null");
    for (int i = 0; i < ntests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1]))
            continue;
        cur_failed = 0;
        tests[i].fn();
        if (cur_failed) {
            fprintf(stderr, "FAIL %s (%s)\n", tests[i].name, tests[i].file);
            failed++;
        } else {
            passed++;
        }
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
