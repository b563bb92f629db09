/*
 * cli_util: small things every `moat` subcommand shares (the error line
 * format).  Not part of the daemon's paths.
 */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "moat %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}
