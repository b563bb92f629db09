/*
 * route: where a recipient's mail goes, as Postfix's trivial-rewrite(8)
 * resolves it.  One router per configuration generation (it owns the open
 * transport_maps and relay_domains tables); lookups are synchronous and
 * run on the loop thread (tables are in memory or LMDB).
 *
 * Address classes, in Postfix's order:
 *   local    the domain is in mydestination          -> local_transport
 *   relay    the domain matches relay_domains         -> relay_transport
 *            (subdomains match too, as in Postfix)
 *   default  anything else                            -> default_transport
 * transport_maps (transport(5)) is consulted first for every class:
 * keys "user+ext@domain", "user@domain", "domain", ".parent" for each
 * parent domain, then "*".  A result "transport:nexthop" with an empty
 * part takes the class default for that part.  The next hop, when nothing
 * names one, is relayhost for the relay and default classes (when set),
 * else the recipient domain.  docs/routing.md has the details.
 */
#ifndef MOAT_QUEUE_ROUTE_H
#define MOAT_QUEUE_ROUTE_H

#include <stdbool.h>

#include "config/config.h"
#include "core/buf.h"

typedef enum { ROUTE_LOCAL, ROUTE_RELAY, ROUTE_DEFAULT } route_class_t;

typedef struct route {
    route_class_t cls;
    char transport[64];    /* transport name: "smtp", "relay", "local", "scan", "error" */
    /* Next hop as the transport understands it: "[127.0.0.1]:1767",
     * "example.com" (MX lookup), "mx.example.com:2525", "inet:host:24",
     * "unix:/path"; for error/retry the reason text; for local the
     * recipient domain.  Never empty for smtp/lmtp kinds. */
    char nexthop[512];
    /* Why: "transport_maps hash:/etc/moat/transport:3", "relay_transport",
     * "default_transport", "relayhost", "local_transport", "content_filter",
     * "FILTER action" (for -v logs, traces and `moat queue show`). */
    char origin[300];
} route_t;

typedef struct router router_t;

/* Compile the routing parameters of cfg's main.cf (mydestination,
 * relay_domains, transport_maps, relayhost, *_transport).  NULL + err
 * ("file:line: message") when a table cannot be opened. */
router_t *router_new(const config_t *cfg, buf_t *err);
/* The same for address verification probes: address_verify_transport_maps
 * and address_verify_relayhost in place of transport_maps and relayhost. */
router_t *router_new_probe(const config_t *cfg, buf_t *err);
void router_free(router_t **r);

/* Resolve one envelope recipient (an address without <>; an address
 * without @ takes myorigin).  0: *out filled.  -1: a table lookup failed
 * temporarily; out->nexthop holds the reason and the caller defers. */
int route_recipient(router_t *r, const char *rcpt, route_t *out);

/* A "transport:nexthop" value (content_filter, a FILTER action) for the
 * recipient rcpt: an empty transport is the recipient class's default, an
 * empty next hop the class's default next hop.  origin is copied into
 * out->origin.  -1 (with the reason in out->nexthop) when spec is not of
 * that form. */
int route_spec(router_t *r, const char *spec, const char *rcpt, const char *origin, route_t *out);

/* Is domain one of relay_domains (subdomains included)?  -1: table
 * lookup failed temporarily. */
int route_is_relay_domain(router_t *r, const char *domain);

#endif
