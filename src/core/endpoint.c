/*
 * endpoint: "inet:host:port" / "unix:/path" → a socket address and its
 * text (see endpoint.h).  Owns nothing after it returns; never blocks
 * after load time (a host name is resolved here, once).
 */
#include "core/endpoint.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

static int unix_path(const char *spec, const char *path, const char *base_dir, struct sockaddr_storage *sa,
                     socklen_t *salen, char **text, buf_t *why)
{
    struct sockaddr_un *un = (struct sockaddr_un *)sa;
    char full[sizeof un->sun_path + 1];
    int n;
    if (!*path) {
        buf_printf(why, "\"%s\": no socket path", spec);
        return -1;
    }
    if (path[0] == '/' || !base_dir || !*base_dir)
        n = snprintf(full, sizeof full, "%s", path);
    else
        n = snprintf(full, sizeof full, "%s/%s", base_dir, path);
    if (n < 0 || (size_t)n >= sizeof un->sun_path) {
        buf_printf(why, "\"%s\": socket path too long", spec);
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, full, (size_t)n + 1);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
    *text = xstrdup(full);
    return 0;
}

int endpoint_resolve(const char *spec, bool bare_path_ok, const char *base_dir, struct sockaddr_storage *sa,
                     socklen_t *salen, char **text, buf_t *why)
{
    if (str_istarts(spec, "unix:"))
        return unix_path(spec, spec + 5, base_dir, sa, salen, text, why);
    if (!str_istarts(spec, "inet:")) {
        if (bare_path_ok)
            return unix_path(spec, spec, base_dir, sa, salen, text, why);
        buf_printf(why, "\"%s\": need inet:host:port or unix:/path", spec);
        return -1;
    }
    const char *hp = spec + 5;
    char host[256], port[64];
    const char *colon;
    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');
        if (!close || close[1] != ':' || (size_t)(close - hp - 1) >= sizeof host) {
            buf_printf(why, "\"%s\": need inet:[address]:port", spec);
            return -1;
        }
        memcpy(host, hp + 1, (size_t)(close - hp - 1));
        host[close - hp - 1] = 0;
        colon = close + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon || (size_t)(colon - hp) >= sizeof host) {
            buf_printf(why, "\"%s\": need inet:host:port", spec);
            return -1;
        }
        memcpy(host, hp, (size_t)(colon - hp));
        host[colon - hp] = 0;
    }
    if (str_copy(port, colon + 1, sizeof port) >= sizeof port || !*host || !*port) {
        buf_printf(why, "\"%s\": need inet:host:port", spec);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
#ifndef MOAT_FUZZING
    /* A name (or a service name): looked up once, now, as Postfix does.
     * Fuzzers never reach the network. */
    if (rc == EAI_NONAME) {
        hints.ai_flags = 0;
        rc = getaddrinfo(host, port, &hints, &res);
    }
#endif
    if (rc != 0 || !res) {
        buf_printf(why, "\"%s\": %s", spec, gai_strerror(rc));
        if (res)
            freeaddrinfo(res);
        return -1;
    }
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *salen = res->ai_addrlen;
    char addr[INET6_ADDRSTRLEN];
    unsigned pnum;
    if (res->ai_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)res->ai_addr;
        inet_ntop(AF_INET6, &a6->sin6_addr, addr, sizeof addr);
        pnum = ntohs(a6->sin6_port);
    } else {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)res->ai_addr;
        inet_ntop(AF_INET, &a4->sin_addr, addr, sizeof addr);
        pnum = ntohs(a4->sin_port);
    }
    freeaddrinfo(res);
    if (pnum == 0) {
        buf_printf(why, "\"%s\": port 0", spec);
        return -1;
    }
    buf_t b = BUF_INIT;
    buf_printf(&b, strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr, pnum);
    *text = buf_steal(&b);
    return 0;
}
