/*
 * fuzz_smtpreply: the SMTP client's parsers on arbitrary bytes.  The
 * input is split into lines and fed to the reply parser (complete
 * replies also to the EHLO keyword parser); the first line is parsed as
 * a next hop (SMTP and LMTP forms); the whole input goes through the
 * content dot-stuffer in two pieces, and undoing the stuffing must give
 * the input back; the lines also serve as XFORWARD values, and every
 * command built must stay below 512 bytes.
 */
#include "core/buf.h"
#include "queue/smtpc-private.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reply(const smtpc_reply_t *r)
{
    if (r->code < 200 || r->code > 599 || r->nlines < 1 || r->lines.len < 3)
        abort();
    if (r->dsn[0] && r->dsn[0] - '0' != r->code / 100)
        abort();
    smtpc_ehlo_t f;
    smtpc_ehlo_parse(r, &f);
    if (f.size_limit < 0)
        abort();
}

static void check_nexthop(const char *s, bool lmtp)
{
    char host[256], port[32];
    bool mx, ux;
    buf_t err = BUF_INIT;
    int rc = smtpc_parse_nexthop(s, lmtp, host, sizeof host, port, sizeof port, &mx, &ux, &err);
    if (rc == 0 && (!host[0] || strlen(host) >= sizeof host || strlen(port) >= sizeof port || (ux && mx)))
        abort();
    if (rc != 0 && (rc != -1 || err.len == 0))
        abort();
    buf_free(&err);
}

static void check_dotstuff(const char *in, size_t n)
{
    buf_t out = BUF_INIT;
    bool bol = true;
    size_t cut = n / 2;
    smtpc_dotstuff(&bol, in, cut, &out);
    smtpc_dotstuff(&bol, in + cut, n - cut, &out);
    /* Undo: lines end at CRLF (only converted LFs make one); a line
     * that starts with '.' lost one. */
    buf_t back = BUF_INIT;
    const char *p = buf_cstr(&out), *end = p + out.len;
    while (p < end) {
        const char *crlf = NULL;
        for (const char *q = p; q + 1 < end; q++)
            if (q[0] == '\r' && q[1] == '\n') {
                crlf = q;
                break;
            }
        const char *le = crlf ? crlf : end;
        const char *s = p;
        if (s < le && *s == '.') {
            if (s + 1 >= le || s[1] != '.')
                abort();
            s++;
        }
        buf_append(&back, s, (size_t)(le - s));
        if (crlf)
            buf_putc(&back, '\n');
        p = crlf ? crlf + 2 : end;
    }
    if (back.len != n || (n && memcmp(back.data, in, n) != 0))
        abort();
    buf_free(&out);
    buf_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    smtpc_reply_t r = {0};
    const char *vals[6] = {NULL};
    int nv = 0;
    size_t pos = 0;
    bool first = true;
    while (pos < size) {
        const char *nl = memchr(text + pos, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : size - pos;
        char *line = text + pos;
        line[n] = 0;
        size_t ln = n && line[n - 1] == '\r' ? n - 1 : n;
        if (first) {
            check_nexthop(line, false);
            check_nexthop(line, true);
            first = false;
        }
        if (nv < 6)
            vals[nv++] = line;
        int rc = smtpc_reply_feed(&r, line, ln);
        if (rc < -1 || rc > 1)
            abort();
        if (rc == 1)
            check_reply(&r);
        if (rc != 0)
            smtpc_reply_reset(&r);
        pos += n + 1;
    }
    smtpc_reply_free(&r);
    smtpc_xfwd_in_t in = {vals[0], vals[1], vals[2], vals[3], vals[4], nv > 5};
    buf_t cmds = BUF_INIT;
    int groups[8];
    size_t nc = smtpc_xforward_cmds(&in, size ? data[0] : 0x7f, &cmds, groups);
    const char *p = buf_cstr(&cmds);
    for (size_t k = 0; k < nc; k++) {
        size_t ln = strcspn(p, "\n");
        if (ln + 2 >= 512 || strncmp(p, "XFORWARD ", 9) != 0)
            abort();
        for (size_t i = 0; i < ln; i++)
            if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] >= 0x7f)
                abort();
        p += ln + 1;
    }
    buf_free(&cmds);
    free(text);
    check_dotstuff((const char *)data, size);
    return 0;
}
