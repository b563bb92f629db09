/*
 * endpoint: the address of a helper service that moat connects to over a
 * stream socket — a policy server (check_policy_service), Dovecot's auth
 * socket (smtpd_sasl_path) — in Postfix's forms: inet:HOST:PORT (a
 * name, an address, or [IPv6 address]), unix:PATH, and where the caller
 * allows it a bare path.  Names are resolved once, when the
 * configuration is loaded, never later on the event loop.
 */
#ifndef MOAT_CORE_ENDPOINT_H
#define MOAT_CORE_ENDPOINT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "core/buf.h"

/* Fill sa, salen and *text (malloc'ed: "127.0.0.1:10040", "[::1]:25" or
 * the socket's full path).  A relative unix path is taken against
 * base_dir (may be NULL).  bare_path_ok: a spec without "inet:"/"unix:"
 * is a unix socket path.  -1 with "\"SPEC\": what is wrong" in why. */
int endpoint_resolve(const char *spec, bool bare_path_ok, const char *base_dir, struct sockaddr_storage *sa,
                     socklen_t *salen, char **text, buf_t *why);

#endif
