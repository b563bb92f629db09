/*
 * fuzz_xattr: XFORWARD / XCLIENT argument lists (src/smtp/xattr.c) on
 * arbitrary text.  The first byte picks the command.  Whatever the input,
 * the parser stays in bounds, answers exactly one of "parsed" or a 501
 * reply, and what it accepts is safe to put in a Received: header or a
 * log line: printable ASCII only, and no header-special characters in the
 * values that go there verbatim.
 */
#include "smtp/xattr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2048)
        return 0;
    xcmd_t cmd = (data[0] & 1) ? XCMD_XCLIENT : XCMD_XFORWARD;
    /* The session hands over a NUL-free command line. */
    char *args = malloc(size);
    size_t n = 0;
    for (size_t i = 1; i < size; i++)
        if (data[i] && data[i] != '\r' && data[i] != '\n')
            args[n++] = (char)data[i];
    args[n] = 0;

    xattrs_t a;
    buf_t reply = BUF_INIT;
    int rc = xattr_parse(cmd, args, &a, &reply);
    if (rc == 0) {
        if (reply.len)
            abort();
        for (int id = 0; id < XA__COUNT; id++) {
            const char *v = a.value[id];
            size_t len = strnlen(v, sizeof a.value[id]);
            if (len == sizeof a.value[id])
                abort();   /* not terminated */
            if (a.status[id] != XA_AVAILABLE && len)
                abort();
            for (size_t k = 0; k < len; k++) {
                unsigned char c = (unsigned char)v[k];
                if (c < 0x21 || c > 0x7e)
                    abort();
                if ((id == XA_HELO || id == XA_NAME || id == XA_ADDR || id == XA_PROTO || id == XA_IDENT)
                    && strchr("<>()\\\";@", c))
                    abort();
            }
        }
    } else {
        const char *r = buf_cstr(&reply);
        if (rc != -1 || strncmp(r, "501 5.5.4 ", 10) != 0)
            abort();
        for (const char *p = r; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                abort();
    }
    buf_free(&reply);
    free(args);
    return 0;
}
