/*
 * route: where a recipient's mail goes (see route.h), as Postfix's
 * trivial-rewrite(8) resolves it: the address class from mydestination
 * and relay_domains, the class's transport and next hop (local_transport,
 * relay_transport, default_transport, relayhost), then transport_maps in
 * transport(5)'s key order with its result rules.
 *
 * Owns: the transport_maps tables, the mydestination and relay_domains
 * lists (src/policy/domlist: the same matching the restrictions use), and
 * copies of the parameter values it needs.  Borrows cfg (for the kind of
 * each transport a result names): a router lives no longer than the
 * configuration generation it was made from.
 *
 * Never: guess when a table fails (route_recipient answers -1 and the
 * caller defers), rewrite a next hop ("[host]:port" stays as written), or
 * block (tables are in memory or LMDB; no DNS here: MX lookups are the
 * SMTP client's).
 */
#include "queue/route.h"

#include "core/util.h"
#include "maps/maps.h"
#include "policy/domlist.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_MAX 1024

struct router {
    const config_t *cfg;
    domlist_t *mydest, *relay;
    map_t **tmaps;            /* transport_maps, in order */
    size_t ntmaps;
    bool tm_parent;           /* parent_domain_matches_subdomains lists transport_maps */
    char *class_spec[3];      /* local_transport, relay_transport, default_transport, by route_class_t */
    char *relayhost, *myorigin, *delim;
    buf_t value, why;         /* lookup scratch */
};

static const param_id class_param[3] = {PARAM_local_transport, PARAM_relay_transport, PARAM_default_transport};

static bool is_pattern_table(const char *spec)
{
    return str_istarts(spec, "regexp:") || str_istarts(spec, "pcre:") || str_istarts(spec, "cidr:");
}

/* tmaps_param/relayhost_param: transport_maps and relayhost, or the
 * address_verify_* overrides for verification probes. */
static router_t *router_make(const config_t *cfg, param_id tmaps_param, param_id relayhost_param, buf_t *err)
{
    const params_t *p = config_main(cfg);
    router_t *r = xcalloc(1, sizeof *r);
    r->cfg = cfg;
    const char *dir = param_str(p, PARAM_config_directory);
    int errors = 0;
    buf_t why = BUF_INIT;
    const char *const *items, *const *styles;
    size_t nstyles = param_list(p, PARAM_parent_domain_matches_subdomains, &styles);

    size_t n = param_list(p, PARAM_mydestination, &items);
    if (!(r->mydest = domlist_new("mydestination", items, n, DL_EXACT, dir, &why))) {
        param_where_lines(p, PARAM_mydestination, buf_cstr(&why), err);
        errors++;
    }
    buf_reset(&why);
    n = param_list(p, PARAM_relay_domains, &items);
    if (!(r->relay = domlist_new("relay_domains", items, n, domlist_parent_style(styles, nstyles, "relay_domains"),
                                 dir, &why))) {
        param_where_lines(p, PARAM_relay_domains, buf_cstr(&why), err);
        errors++;
    }
    r->tm_parent = domlist_parent_style(styles, nstyles, "transport_maps") == DL_PARENT;

    n = param_list(p, tmaps_param, &items);
    r->tmaps = xcalloc(n ? n : 1, sizeof *r->tmaps);
    for (size_t i = 0; i < n; i++) {
        buf_reset(&why);
        if (!strchr(items[i], ':')) {
            param_where(p, tmaps_param, err);
            buf_printf(err, "%s: \"%s\": need type:table\n", param_name(tmaps_param), items[i]);
            errors++;
            continue;
        }
        map_t *m = map_open(items[i], dir, &why);
        if (!m) {
            param_where_lines(p, tmaps_param, why.len ? buf_cstr(&why) : "cannot open table", err);
            errors++;
            continue;
        }
        r->tmaps[r->ntmaps++] = m;
    }
    for (int c = 0; c < 3; c++) {
        const char *spec = param_str(p, class_param[c]);
        if (!*spec || *spec == ':') {
            param_where(p, class_param[c], err);
            buf_printf(err, "%s: \"%s\": need a transport name (transport or transport:nexthop)\n",
                       param_name(class_param[c]), spec);
            errors++;
        }
        r->class_spec[c] = xstrdup(spec);
    }
    r->relayhost = xstrdup(param_str(p, relayhost_param));
    r->myorigin = xstrdup(param_str(p, PARAM_myorigin));
    r->delim = xstrdup(param_str(p, PARAM_recipient_delimiter));
    buf_free(&why);
    if (errors)
        router_free(&r);
    return r;
}

router_t *router_new(const config_t *cfg, buf_t *err)
{
    return router_make(cfg, PARAM_transport_maps, PARAM_relayhost, err);
}

router_t *router_new_probe(const config_t *cfg, buf_t *err)
{
    return router_make(cfg, PARAM_address_verify_transport_maps, PARAM_address_verify_relayhost, err);
}

void router_free(router_t **pr)
{
    router_t *r = *pr;
    if (!r)
        return;
    domlist_free(&r->mydest);
    domlist_free(&r->relay);
    for (size_t i = 0; i < r->ntmaps; i++)
        map_close(&r->tmaps[i]);
    free(r->tmaps);
    for (int c = 0; c < 3; c++)
        free(r->class_spec[c]);
    free(r->relayhost);
    free(r->myorigin);
    free(r->delim);
    buf_free(&r->value);
    buf_free(&r->why);
    free(r);
    *pr = NULL;
}

/* The routing state of one recipient while it is resolved. */
typedef struct rctx {
    char addr[ADDR_MAX];      /* local@domain, the domain in lower case */
    const char *domain;       /* inside addr */
    size_t llen;              /* local part length */
    route_class_t cls;
    char transport[256];
    char nexthop[1024];
    char origin[300];
} rctx_t;

static int fail(route_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(route_t *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->nexthop, sizeof out->nexthop, fmt, ap);
    va_end(ap);
    return -1;
}

/* Split rcpt, qualify it (myorigin), fold the domain (one trailing dot
 * dropped), find its class.  -1 (reason in out->nexthop) when a domain
 * table failed or the address does not fit. */
static int classify(router_t *r, const char *rcpt, rctx_t *x, route_t *out)
{
    const char *at = strrchr(rcpt, '@');
    size_t llen = at ? (size_t)(at - rcpt) : strlen(rcpt);
    const char *dom = at && at[1] ? at + 1 : r->myorigin;
    int n = snprintf(x->addr, sizeof x->addr, "%.*s@%s", (int)llen, rcpt, dom);
    if (n < 0 || (size_t)n >= sizeof x->addr)
        return fail(out, "recipient address too long");
    x->llen = llen;
    char *d = x->addr + llen + 1;
    str_lower(d);
    size_t dl = strlen(d);
    if (dl > 1 && d[dl - 1] == '.' && d[dl - 2] != '.')
        d[dl - 1] = 0;
    x->domain = d;
    switch (domlist_match(r->mydest, d, &r->why)) {
    case DL_MATCH:
        x->cls = ROUTE_LOCAL;
        return 0;
    case DL_ERROR:
        return fail(out, "mydestination: %s", buf_cstr(&r->why));
    default:
        break;
    }
    switch (domlist_match(r->relay, d, &r->why)) {
    case DL_MATCH:
        x->cls = ROUTE_RELAY;
        return 0;
    case DL_ERROR:
        return fail(out, "relay_domains: %s", buf_cstr(&r->why));
    default:
        x->cls = ROUTE_DEFAULT;
        return 0;
    }
}

/* The class's own transport and next hop: *_transport ("transport" or
 * "transport:nexthop"); without a next hop there, relayhost for the relay
 * and default classes, else the recipient domain. */
static void class_default(const router_t *r, rctx_t *x)
{
    const char *spec = r->class_spec[x->cls];
    const char *colon = strchr(spec, ':');
    size_t tl = colon ? (size_t)(colon - spec) : strlen(spec);
    snprintf(x->transport, sizeof x->transport, "%.*s", (int)tl, spec);
    const char *param = param_name(class_param[x->cls]);
    if (colon && colon[1]) {
        str_copy(x->nexthop, colon + 1, sizeof x->nexthop);
        str_copy(x->origin, param, sizeof x->origin);
    } else if (x->cls != ROUTE_LOCAL && *r->relayhost) {
        str_copy(x->nexthop, r->relayhost, sizeof x->nexthop);
        snprintf(x->origin, sizeof x->origin, "%s, relayhost", param);
    } else {
        str_copy(x->nexthop, x->domain, sizeof x->nexthop);
        str_copy(x->origin, param, sizeof x->origin);
    }
}

static transport_kind kind_of(const router_t *r, const char *name, bool *known)
{
    const transport_t *t = config_transport(r->cfg, name);
    *known = t != NULL;
    return t ? t->kind : TK_SMTP;
}

static bool is_error_kind(const router_t *r, const char *name)
{
    bool known;
    transport_kind k = kind_of(r, name, &known);
    if (known)
        return k == TK_ERROR || k == TK_RETRY;
    return strcmp(name, "error") == 0 || strcmp(name, "retry") == 0;
}

/* transport(5)'s result rules (Postfix's update_entry):
 *   ":"           nothing changes
 *   ":nexthop"    the next hop only
 *   "transport"   and "transport:": the transport, next hop reset to the
 *                 recipient domain ("Address is undeliverable" for error
 *                 and retry)
 *   "transport:nexthop"  both; the next hop is everything after the
 *                 first ':' ("[10.0.0.1]:1767", "5.1.1 text") */
static void apply_result(const router_t *r, rctx_t *x, const char *value)
{
    const char *colon = strchr(value, ':');
    size_t tl = colon ? (size_t)(colon - value) : strlen(value);
    const char *nh = colon ? colon + 1 : "";
    if (tl == 0) {
        if (*nh)
            str_copy(x->nexthop, nh, sizeof x->nexthop);
        return;
    }
    snprintf(x->transport, sizeof x->transport, "%.*s", (int)tl, value);
    if (*nh)
        str_copy(x->nexthop, nh, sizeof x->nexthop);
    else if (is_error_kind(r, x->transport))
        str_copy(x->nexthop, "Address is undeliverable", sizeof x->nexthop);
    else
        str_copy(x->nexthop, x->domain, sizeof x->nexthop);
}

/* One transport_maps key against every table in turn. */
static map_status tmaps_key(router_t *r, const char *key, bool full, char *origin, size_t osize)
{
    for (size_t i = 0; i < r->ntmaps; i++) {
        if (!full && is_pattern_table(map_name(r->tmaps[i])))
            continue;   /* pattern tables see the full address only (Postfix's DICT_FLAG_FIXED) */
        map_origin_t o = {0};
        map_status st = map_lookup(r->tmaps[i], key, &r->value, &o);
        if (st == MAP_NOTFOUND)
            continue;
        if (st == MAP_FOUND) {
            if (o.file)
                snprintf(origin, osize, "transport_maps %s:%d", map_name(r->tmaps[i]), o.line);
            else
                snprintf(origin, osize, "transport_maps %s", map_name(r->tmaps[i]));
        } else {
            snprintf(origin, osize, "transport_maps %s: lookup of %s failed: %s", map_name(r->tmaps[i]), key,
                     buf_cstr(&r->value));
        }
        return st;
    }
    return MAP_NOTFOUND;
}

/* transport(5)'s key order: the address, the address without its
 * extension, the domain, each parent (".parent", or "parent" when
 * parent_domain_matches_subdomains lists transport_maps), then "*". */
static map_status tmaps_find(router_t *r, const rctx_t *x, char *origin, size_t osize)
{
    map_status st = tmaps_key(r, x->addr, true, origin, osize);
    if (st != MAP_NOTFOUND)
        return st;
    size_t ext = *r->delim ? strcspn(x->addr, r->delim) : x->llen;
    if (ext > 0 && ext < x->llen) {
        char stripped[ADDR_MAX];
        snprintf(stripped, sizeof stripped, "%.*s@%s", (int)ext, x->addr, x->domain);
        if ((st = tmaps_key(r, stripped, false, origin, osize)) != MAP_NOTFOUND)
            return st;
    }
    for (const char *key = x->domain; *key;) {
        if ((st = tmaps_key(r, key, false, origin, osize)) != MAP_NOTFOUND)
            return st;
        const char *next = strchr(key + 1, '.');
        if (!next)
            break;
        key = r->tm_parent ? next + 1 : next;
    }
    return tmaps_key(r, "*", false, origin, osize);
}

/* Copy the result out: local transports take the recipient domain as
 * their next hop (route.h); names and next hops must fit. */
static int finish(const router_t *r, rctx_t *x, route_t *out)
{
    bool known;
    transport_kind k = kind_of(r, x->transport, &known);
    if (known && k == TK_LOCAL)
        str_copy(x->nexthop, x->domain, sizeof x->nexthop);
    bool text = known ? (k == TK_ERROR || k == TK_RETRY) : is_error_kind(r, x->transport);
    if (!*x->transport || strlen(x->transport) >= sizeof out->transport)
        return fail(out, "%s: transport name \"%.60s\" empty or too long", x->origin, x->transport);
    if (strlen(x->nexthop) >= sizeof out->nexthop && !text)
        return fail(out, "%s: next hop too long", x->origin);
    if (!*x->nexthop)
        str_copy(x->nexthop, text ? "Address is undeliverable" : x->domain, sizeof x->nexthop);
    out->cls = x->cls;
    str_copy(out->transport, x->transport, sizeof out->transport);
    str_copy(out->nexthop, x->nexthop, sizeof out->nexthop);
    str_copy(out->origin, x->origin, sizeof out->origin);
    return 0;
}

int route_recipient(router_t *r, const char *rcpt, route_t *out)
{
    memset(out, 0, sizeof *out);
    rctx_t x;
    if (classify(r, rcpt, &x, out) != 0)
        return -1;
    class_default(r, &x);
    if (r->ntmaps) {
        char origin[sizeof x.origin];
        switch (tmaps_find(r, &x, origin, sizeof origin)) {
        case MAP_TEMPFAIL:
            return fail(out, "%s", origin);
        case MAP_FOUND:
            apply_result(r, &x, buf_cstr(&r->value));
            str_copy(x.origin, origin, sizeof x.origin);
            break;
        case MAP_NOTFOUND:
            break;
        }
    }
    return finish(r, &x, out);
}

int route_spec(router_t *r, const char *spec, const char *rcpt, const char *origin, route_t *out)
{
    memset(out, 0, sizeof *out);
    const char *colon = strchr(spec, ':');
    if (!colon)
        return fail(out, "%s: \"%.200s\": not transport:nexthop", origin, spec);
    rctx_t x;
    if (classify(r, rcpt, &x, out) != 0)
        return -1;
    class_default(r, &x);
    size_t tl = (size_t)(colon - spec);
    if (tl)
        snprintf(x.transport, sizeof x.transport, "%.*s", (int)tl, spec);
    if (colon[1])
        str_copy(x.nexthop, colon + 1, sizeof x.nexthop);
    str_copy(x.origin, origin, sizeof x.origin);
    return finish(r, &x, out);
}

int route_is_relay_domain(router_t *r, const char *domain)
{
    switch (domlist_match(r->relay, domain, NULL)) {
    case DL_MATCH: return 1;
    case DL_ERROR: return -1;
    default: return 0;
    }
}
