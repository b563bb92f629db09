/*
 * proxy: HAProxy PROXY protocol v1 (text) and v2 (binary) header parser,
 * for services with smtpd_upstream_proxy_protocol = haproxy.
 *
 * Resumable: call with everything received so far; it answers "need more",
 * "done after N bytes" or "malformed".  No allocation.
 */
#ifndef MOAT_SMTP_PROXY_H
#define MOAT_SMTP_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct proxy_info {
    int local;                     /* 1: v1 UNKNOWN or v2 LOCAL: keep the real peer addresses */
    struct sockaddr_storage src;   /* the original client (when !local) */
    struct sockaddr_storage dst;   /* the address it connected to */
    socklen_t srclen, dstlen;
} proxy_info_t;

#define PROXY_V1_MAX 107   /* longest v1 line incl. CRLF */
#define PROXY_V2_MAX 4096  /* we refuse larger v2 headers (the 16-byte fixed
                              part included) */

/* >0: header complete, that many bytes consumed; 0: need more data;
 * -1: malformed (why: static text, e.g. "bad PROXY v1 address").
 * *out is written only when the header is complete.  v2 UDP families are
 * refused; v2 UNSPEC and AF_UNIX give local = 1 (docs/smtp-input.md). */
long proxy_parse(const unsigned char *data, size_t len, proxy_info_t *out, const char **why);

#endif
