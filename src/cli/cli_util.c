/*
 * cli_util: small things every `moat` subcommand shares (the error line
 * format, writing a buffer out, choosing a service).  Not part of the
 * daemon's paths.
 */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void cli_put(FILE *fp, const buf_t *b)
{
    if (b->len)
        fwrite(b->data, 1, b->len, fp);
}

const service_t *cli_smtpd_service(const config_t *cfg, const char *name, const char *cmd, buf_t *err)
{
    size_t n = config_nservices(cfg);
    for (size_t i = 0; i < n; i++) {
        const service_t *sv = config_service(cfg, i);
        if (sv->kind == SK_SMTPD && (!name || strcmp(sv->name, name) == 0))
            return sv;
    }
    if (name)
        buf_printf(err, "moat: %s: no smtpd service \"%s\" in master.cf\n", cmd, name);
    else
        buf_printf(err, "moat: %s: master.cf has no smtpd service\n", cmd);
    return NULL;
}
