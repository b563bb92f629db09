/*
 * fuzz_route: master.cf transport lines and envelope recipients through
 * config_load_text() → router_new() → route_recipient() / route_spec().
 *
 * The input is split at the first 0x01 byte: before it, more master.cf
 * lines (after a fixed smtpd service: transports, their -o overrides,
 * maxproc); after it, recipients, one per line (what clients send, as the
 * queue file keeps it).  main.cf is fixed: relay_domains with a
 * subdomain-matching name, an exclusion and an inline table,
 * transport_maps with every result form, relayhost.  Nothing touches the
 * file system (inline tables only).
 *
 * Contract checked beyond "no crash": a resolved route has a transport
 * name and a next hop (NUL-terminated, within their arrays) and a valid
 * class; a failure says why; every transport the configuration has
 * answers transport_limit() within the registry's bounds.
 */
#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"
#include "queue/route.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_MAX 8192

static const char fixed_main[] =
    "myhostname = mx.example.test\n"
    "mydestination = $myhostname, localhost, example.test\n"
    "relay_domains = relay.test, !no.relay.test, inline:{ tabled.test=1 }\n"
    "recipient_delimiter = +-\n"
    "relayhost = [192.0.2.25]:2525\n"
    "transport_maps = inline:{ {user@special.test = lmtp:unix:/run/lmtp}, {special.test = error:5.1.1 gone}, "
    "{.relay.test = relay:[127.0.0.1]:1767}, {keep.test = :}, {hop.test = :[192.0.2.9]}, {bare.test = scan}, "
    "{* = smtp:} }\n"
    "scan_destination_concurrency_limit = 3\n";
static const char fixed_master[] = "127.0.0.1:2525 inet n - n - - smtpd\n";

static void check_route(int rc, const route_t *r)
{
    if (memchr(r->transport, 0, sizeof r->transport) == NULL || memchr(r->nexthop, 0, sizeof r->nexthop) == NULL ||
        memchr(r->origin, 0, sizeof r->origin) == NULL)
        abort();
    if (rc == 0) {
        if (!r->transport[0] || !r->nexthop[0] || !r->origin[0])
            abort();
        if (r->cls != ROUTE_LOCAL && r->cls != ROUTE_RELAY && r->cls != ROUTE_DEFAULT)
            abort();
    } else if (rc != -1 || !r->nexthop[0]) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > INPUT_MAX)
        return 0;
    char *text = xstrndup((const char *)data, size);
    char *rcpts = strchr(text, '\x01');
    if (rcpts)
        *rcpts++ = 0;
    buf_t master = BUF_INIT, err = BUF_INIT;
    buf_puts(&master, fixed_master);
    buf_puts(&master, text);
    buf_putc(&master, '\n');
    config_t *cfg = config_load_text(fixed_main, buf_cstr(&master), &err, NULL);
    if ((cfg == NULL) != (err.len > 0))
        abort();
    router_t *r = cfg ? router_new(cfg, &err) : NULL;
    if (cfg && !r)
        abort();   /* the fixed main.cf always routes */
    if (r) {
        static const char *const names[] = {"smtp", "relay", "lmtp", "local", "discard", "error", "retry", "scan"};
        for (size_t i = 0; i < ARRAY_LEN(names); i++) {
            const transport_t *t = config_transport(cfg, names[i]);
            if (i < 7 && !t)
                abort();   /* the built-ins always exist */
            if (t && (t->maxproc < 1 || transport_limit(t, "destination_concurrency_limit",
                                                        PARAM_default_destination_concurrency_limit) < 1 ||
                      transport_limit(t, "destination_recipient_limit",
                                      PARAM_default_destination_recipient_limit) < 1))
                abort();
        }
        for (char *line = rcpts; line && *line;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = 0;
            route_t out;
            check_route(route_recipient(r, line, &out), &out);
            check_route(route_spec(r, line, "u@relay.test", "content_filter", &out), &out);
            const char *at = strrchr(line, '@');
            (void)route_is_relay_domain(r, at ? at + 1 : line);
            line = nl ? nl + 1 : NULL;
        }
    }
    router_free(&r);
    config_free(&cfg);
    buf_free(&master);
    buf_free(&err);
    free(text);
    return 0;
}
