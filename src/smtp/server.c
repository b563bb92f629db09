/*
 * server: the smtpd listeners, the session registry, and configuration
 * generations (see smtpd.h).
 *
 * Listeners are keyed by their bound address; across a reload a listener
 * whose address is unchanged keeps its socket (no connection is refused
 * during a reload) and is pointed at the new generation's service.
 * Accepting enforces moat_max_sessions and the service's maxproc before
 * a session object exists: an over-limit client gets one 421 line.
 * A service's values are checked when its generation is compiled
 * (content_filter's form, receive_override_options' names, the XCLIENT
 * and XFORWARD lists), so a bad one fails the load with file:line.
 */
#include "smtp/smtpd.h"

#include "content/clamd.h"
#include "content/content.h"
#include "core/log.h"
#include "core/util.h"
#include "queue/verify.h"
#include "sasl/sasl.h"
#include "tls/tls.h"
#include "smtp/policyd.h"
#include "smtp/xattr.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct listener {
    struct listener *next;
    server_t *srv;
    struct evconnlistener *ev;
    char key[128];          /* "addr port" */
    smtpd_svc_t *sv;
    bool keep;              /* reload bookkeeping */
} listener_t;

typedef struct sess_node {
    struct sess_node *prev, *next;
    struct session *s;
} sess_node_t;

struct server {
    struct event_base *base;
    spool_t *spool;
    qmgr_t *qmgr;
    gen_t *gen;             /* current */
    listener_t *listeners;
    unsigned nsessions;
    struct session **sessions;   /* registry for shutdown */
    size_t nslots;
};

/* ---------- generations ---------- */

static void svc_free(smtpd_svc_t *sv)
{
    addrlist_free(&sv->bare_nl_exclusions);
    policy_free(&sv->policy);
    verify_free(&sv->verify);
    store_close(&sv->store);
    for (size_t i = 0; i < ARRAY_LEN(sv->ehlo_replies); i++)
        free(sv->ehlo_replies[i]);
    sv->ehlo_reply = NULL;   /* it was ehlo_replies[0] */
    free(sv->myhostname);
    addrlist_free(&sv->xclient_hosts);
    addrlist_free(&sv->xforward_hosts);
    free(sv->content_filter);
    tls_server_free(&sv->tls);
    sasl_server_free(&sv->sasl);
    addrlist_free(&sv->sasl_exceptions);
    content_cfg_free(&sv->content);
    scan_settings_free(&sv->scan);
}

void gen_release(gen_t *g)
{
    if (!g || --g->refs > 0)
        return;
    for (size_t i = 0; i < g->nsvc; i++)
        svc_free(&g->svcs[i]);
    free(g->svcs);
    config_free(&g->cfg);
    dns_unref(&g->dns);
    free(g->dns_key);
    free(g);
}

static bool keyword_discarded(const params_t *p, const char *kw)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_smtpd_discard_ehlo_keywords, &items);
    for (size_t i = 0; i < n; i++)
        if (str_ieq(items[i], kw))
            return true;
    return false;
}

/* The EHLO reply; which (EHLO_*) adds STARTTLS, XCLIENT and/or
 * XFORWARD, announced only to the clients that may use them, where
 * Postfix puts them. */
char *smtpd_ehlo_build(const params_t *p, const char *host, unsigned which, const char *mechs)
{
    const char *kw[14];
    char size[40];
    size_t n = 0;
    long long limit = param_int(p, PARAM_message_size_limit);
    if (limit > 0)
        snprintf(size, sizeof size, "SIZE %lld", limit);
    else
        str_copy(size, "SIZE", sizeof size);
    kw[n++] = "PIPELINING";
    kw[n++] = size;
    if (!param_bool(p, PARAM_disable_vrfy_command))
        kw[n++] = "VRFY";
    if (which & EHLO_STARTTLS)
        kw[n++] = "STARTTLS";
    buf_t auth = BUF_INIT, broken = BUF_INIT;
    if (mechs) {
        buf_printf(&auth, "AUTH %s", mechs);
        kw[n++] = buf_cstr(&auth);
        if (param_bool(p, PARAM_broken_sasl_auth_clients)) {
            buf_printf(&broken, "AUTH=%s", mechs);
            kw[n++] = buf_cstr(&broken);
        }
    }
    if (which & EHLO_XCLIENT)
        kw[n++] = xattr_keywords(XCMD_XCLIENT);
    if (which & EHLO_XFORWARD)
        kw[n++] = xattr_keywords(XCMD_XFORWARD);
    kw[n++] = "ENHANCEDSTATUSCODES";
    kw[n++] = "8BITMIME";
    if (param_bool(p, PARAM_smtputf8_enable))
        kw[n++] = "SMTPUTF8";
    kw[n++] = "CHUNKING";

    const char *keep[ARRAY_LEN(kw)];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char word[24];
        str_copy(word, kw[i], sizeof word);
        word[strcspn(word, " =")] = 0;   /* "AUTH=PLAIN" is discarded with AUTH */
        if (!keyword_discarded(p, word))
            keep[k++] = kw[i];
    }
    buf_t b = BUF_INIT;
    buf_printf(&b, "250%c%s", k ? '-' : ' ', host);
    for (size_t i = 0; i < k; i++)
        buf_printf(&b, "\r\n250%c%s", i + 1 < k ? '-' : ' ', keep[i]);
    buf_free(&auth);
    buf_free(&broken);
    return buf_steal(&b);
}

/* "file:line: " of a parameter's setting (or of `via`, the parameter its
 * default expands), else the service line. */
static void where(buf_t *err, const smtpd_svc_t *sv, param_id id, param_id via)
{
    const char *file;
    int line;
    if (param_origin(sv->p, id, &file, &line) || param_origin(sv->p, via, &file, &line))
        buf_printf(err, "%s:%d: ", file, line);
    else
        buf_printf(err, "%s:%d: ", sv->svc->file, sv->svc->line);
}

/* Append the lines of add that err does not hold yet: services without
 * -o overrides share main.cf's values and would repeat its messages. */
static void append_new_lines(buf_t *err, const buf_t *add)
{
    const char *p = buf_cstr(add);
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) + 1 : strlen(p);
        bool seen = false;
        for (const char *q = buf_cstr(err); !seen && *q;) {
            const char *qnl = strchr(q, '\n');
            size_t qn = qnl ? (size_t)(qnl - q) + 1 : strlen(q);
            seen = qn == n && memcmp(q, p, n) == 0;
            q += qn;
        }
        if (!seen) {
            buf_append(err, p, n);
            if (!nl)
                buf_putc(err, '\n');
        }
        p += n;
    }
}

dns_t *smtpd_resolver_new(const params_t *p, struct event_base *base, buf_t *key, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_dns_forwarders, &items);
    buf_t fwd = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        buf_printf(&fwd, "%s%s", i ? " " : "", items[i]);
    dns_opts_t o = {.forwarders = buf_cstr(&fwd),
                    .timeout_ms = (unsigned)param_int(p, PARAM_dns_timeout) * 1000u,
                    .cache_max = (size_t)param_int(p, PARAM_dns_cache_size)};
    if (key)
        buf_printf(key, "%s|%u|%zu", o.forwarders, o.timeout_ms, o.cache_max);
    dns_t *d = NULL;
    if (base) {
        buf_t why = BUF_INIT;
        d = dns_new(base, &o, &why);
        if (!d) {
            const char *file;
            int line;
            if (param_origin(p, PARAM_dns_forwarders, &file, &line))
                buf_printf(err, "%s:%d: ", file, line);
            buf_printf(err, "dns_forwarders: %s\n", buf_cstr(&why));
        }
        buf_free(&why);
    }
    buf_free(&fwd);
    return d;
}

/* The resolver for a new generation: the previous one's when the dns_*
 * parameters are the same (its cache and in-flight queries carry over),
 * else a new one.  -1 with "main.cf:N: ..." in err. */
static int gen_dns(gen_t *g, struct event_base *base, const gen_t *prev, buf_t *err)
{
    const params_t *p = config_main(g->cfg);
    buf_t key = BUF_INIT;
    smtpd_resolver_new(p, NULL, &key, err);
    if (prev && prev->dns && strcmp(prev->dns_key, buf_cstr(&key)) == 0)
        g->dns = dns_ref(prev->dns);
    else
        g->dns = smtpd_resolver_new(p, base, NULL, err);
    g->dns_key = buf_steal(&key);
    return g->dns ? 0 : -1;
}

int smtpd_receive_override(const char *const *items, size_t n, unsigned *out, buf_t *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } opts[] = {
        {"no_unknown_recipient_checks", RO_NO_UNKNOWN_RCPT},
        {"no_address_mappings", RO_NO_ADDRESS_MAPPINGS},
        {"no_header_body_checks", RO_NO_HEADER_BODY},
        {"no_milters", RO_NO_MILTERS},
    };
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < ARRAY_LEN(opts) && !str_ieq(items[i], opts[k].name))
            k++;
        if (k == ARRAY_LEN(opts)) {
            buf_printf(err, "receive_override_options: unknown value \"%s\" (known: no_unknown_recipient_checks, "
                            "no_address_mappings, no_header_body_checks, no_milters)",
                       items[i]);
            return -1;
        }
        bits |= opts[k].bit;
    }
    *out = bits;
    return 0;
}

/* One XCLIENT/XFORWARD authorization list. */
static addrlist_t *compile_hosts(const smtpd_svc_t *sv, param_id id, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(sv->p, id, &items);
    buf_t why = BUF_INIT;
    addrlist_t *al = addrlist_new(param_name(id), items, n, param_str(sv->p, PARAM_config_directory), &why);
    if (!al) {
        where(err, sv, id, id);
        buf_puts(err, buf_cstr(&why));
    }
    buf_free(&why);
    return al;
}

/* content_filter, receive_override_options and the XCLIENT/XFORWARD
 * lists of one service.  -1 with "file:line: ..." lines in err. */
static int compile_filter_params(smtpd_svc_t *sv, buf_t *err)
{
    int bad = 0;
    buf_t why = BUF_INIT;
    const char *const *items;
    size_t n = param_list(sv->p, PARAM_receive_override_options, &items);
    if (smtpd_receive_override(items, n, &sv->receive_override, &why) != 0) {
        where(err, sv, PARAM_receive_override_options, PARAM_receive_override_options);
        buf_printf(err, "%s\n", buf_cstr(&why));
        bad = -1;
    }
    buf_free(&why);

    /* Postfix's form is transport:destination; either part may be empty
     * (the queue manager then takes the recipient's defaults), the colon
     * may not be missing: such a value is a typo that would misroute mail. */
    const char *cf = param_str(sv->p, PARAM_content_filter);
    while (*cf == ' ' || *cf == '\t')
        cf++;
    if (*cf) {
        const char *colon = strchr(cf, ':');
        bool space = strpbrk(cf, " \t") != NULL;
        if (!colon || space) {
            where(err, sv, PARAM_content_filter, PARAM_content_filter);
            buf_printf(err, "content_filter: \"%s\": expected transport:destination, "
                            "e.g. smtp:[127.0.0.1]:10025\n", cf);
            bad = -1;
        } else {
            sv->content_filter = xstrdup(cf);
        }
    }

    sv->xclient_hosts = compile_hosts(sv, PARAM_smtpd_authorized_xclient_hosts, err);
    sv->xforward_hosts = compile_hosts(sv, PARAM_smtpd_authorized_xforward_hosts, err);
    if (!sv->xclient_hosts || !sv->xforward_hosts)
        bad = -1;
    return bad;
}

/* TLS and AUTH of one smtpd service.  pool is NULL for `moat config
 * check` (the backends validate, nothing runs).  -1 with "file:line: ..."
 * lines in err. */
static int compile_tls_sasl(smtpd_svc_t *sv, struct event_base *base, pool_t *pool, buf_t *err)
{
    buf_t why = BUF_INIT;
    int bad = 0;
    if (tls_server_new(sv->p, sv->svc->name, &sv->tls, &why) != 0)
        bad = -1;
    else if (sv->tls)
        sv->tls_required = tls_server_level(sv->tls) >= TLS_LEV_ENCRYPT || tls_server_wrapper(sv->tls);
    if (sasl_server_new(sv->p, base, pool, &sv->sasl, &why) != 0)
        bad = -1;
    append_new_lines(err, &why);
    buf_free(&why);
    if (sv->sasl) {
        sv->sasl_exceptions = compile_hosts(sv, PARAM_smtpd_sasl_exceptions_networks, err);
        if (!sv->sasl_exceptions)
            bad = -1;
    }
    return bad;
}

/* The content stage and the virus scanner of one smtpd service.  -1 with
 * "file:line: ..." lines in err. */
static int compile_content(smtpd_svc_t *sv, buf_t *err)
{
    int bad = 0;
    const char *confdir = param_str(sv->p, PARAM_config_directory);
    buf_t why = BUF_INIT;
    sv->content = content_cfg_new(sv->p, confdir, &why);
    if (!sv->content)
        bad = -1;
    append_new_lines(err, &why);
    buf_reset(&why);

    if (scan_settings_load(sv->p, &sv->scan, &why) != 0)
        bad = -1;
    append_new_lines(err, &why);
    buf_free(&why);
    return bad;
}

static gen_t *gen_new(config_t *cfg, struct event_base *base, pool_t *pool, const gen_t *prev, buf_t *err)
{
    gen_t *g = xcalloc(1, sizeof *g);
    g->cfg = cfg;
    g->refs = 1;
    g->nsvc = config_nservices(cfg);
    g->svcs = xcalloc(g->nsvc ? g->nsvc : 1, sizeof *g->svcs);
    for (size_t i = 0; i < g->nsvc; i++) {
        smtpd_svc_t *sv = &g->svcs[i];
        sv->svc = config_service(cfg, i);
        sv->p = sv->svc->params;
        sv->gen = g;
        sv->myhostname = xstrdup(param_str(sv->p, PARAM_myhostname));
        const char *mode = param_str(sv->p, PARAM_smtpd_forbid_bare_newline);
        sv->bare_nl_mode = str_ieq(mode, "reject") ? BARE_NL_REJECT
                           : str_ieq(mode, "no")   ? BARE_NL_NO
                                                   : BARE_NL_NORMALIZE;
        sv->proxy = str_ieq(param_str(sv->p, PARAM_smtpd_upstream_proxy_protocol), "haproxy");
        for (unsigned k = 0; k < ARRAY_LEN(sv->ehlo_replies); k++)
            sv->ehlo_replies[k] = smtpd_ehlo_build(sv->p, sv->myhostname, k, NULL);
        sv->ehlo_reply = sv->ehlo_replies[0];
        sv->pipelining_offered = !keyword_discarded(sv->p, "PIPELINING");
        const char *const *items;
        size_t n = param_list(sv->p, PARAM_smtpd_forbid_bare_newline_exclusions, &items);
        buf_t why = BUF_INIT;
        sv->bare_nl_exclusions = addrlist_new("smtpd_forbid_bare_newline_exclusions", items, n,
                                              param_str(sv->p, PARAM_config_directory), &why);
        if (!sv->bare_nl_exclusions) {
            where(err, sv, PARAM_smtpd_forbid_bare_newline_exclusions, PARAM_mynetworks);
            buf_puts(err, buf_cstr(&why));
        }
        buf_free(&why);
        if (!sv->bare_nl_exclusions || compile_filter_params(sv, err) != 0
            || (sv->svc->kind == SK_SMTPD && compile_tls_sasl(sv, base, pool, err) != 0)
            || (sv->svc->kind == SK_SMTPD && compile_content(sv, err) != 0)) {
            g->cfg = NULL;   /* the caller still owns cfg on failure */
            gen_release(g);
            return NULL;
        }
        sv->policy = policy_new(sv->p, param_str(sv->p, PARAM_config_directory), &why);
        append_new_lines(err, &why);
        buf_free(&why);
        if (!sv->policy) {
            /* Report every service's problems before giving up. */
            for (size_t k = i + 1; k < g->nsvc; k++) {
                const service_t *other = config_service(cfg, k);
                policy_t *pol = policy_new(other->params, param_str(other->params, PARAM_config_directory), &why);
                append_new_lines(err, &why);
                buf_free(&why);
                policy_free(&pol);
            }
            g->cfg = NULL;
            gen_release(g);
            return NULL;
        }
        if (sv->svc->kind == SK_POLICY)
            policyd_service_ready(sv);
    }
    if (gen_dns(g, base, prev, err) != 0) {
        g->cfg = NULL;
        gen_release(g);
        return NULL;
    }
    return g;
}

/* The run-time state the compiled policies need: the state store (one
 * per spec per process, reference counted, so a reload keeps it) and the
 * verification service.  Only for a server that runs (not config check). */
static int gen_state(gen_t *g, server_t *srv, buf_t *err)
{
    for (size_t i = 0; i < g->nsvc; i++) {
        smtpd_svc_t *sv = &g->svcs[i];
        unsigned needs = policy_needs(sv->policy);
        if (!needs)
            continue;
        buf_t why = BUF_INIT;
        const char *spec = param_str(sv->p, PARAM_state_store);
        sv->store = store_open(srv->base, spool_pool(srv->spool), spec, &why);
        if (!sv->store) {
            where(err, sv, PARAM_state_store, PARAM_state_store);
            buf_printf(err, "state_store: %s\n", buf_cstr(&why));
            buf_free(&why);
            return -1;
        }
        buf_free(&why);
        sv->env = (policy_env_t){.store = sv->store, .commit = true};
        if (needs & PN_VERIFY) {
            /* probes go through this process's own SMTP client; "this is
             * me" comes from the services in cfg (the queue manager's rule) */
            sv->verify = verify_new(srv->base, spool_pool(srv->spool), g->dns, g->cfg, sv->store, NULL, &why);
            if (!sv->verify) {
                buf_append(err, why.data, why.len);
                buf_free(&why);
                return -1;
            }
            sv->env.verify = sv->verify;
        }
        policy_set_env(sv->policy, &sv->env);
    }
    return 0;
}

/* ---------- accept ---------- */

static void reject_connection(int fd, const char *host, const char *why)
{
    char line[300];
    int n = snprintf(line, sizeof line, "421 4.7.0 %s Error: %s\r\n", host, why);
    if (n > 0) {
        ssize_t w = send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    listener_t *li = arg;
    server_t *srv = li->srv;
    smtpd_svc_t *sv = li->sv;
    char addr[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)sa)->sin_addr, addr, sizeof addr);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)sa)->sin6_addr, addr, sizeof addr);

    /* A policy client (Postfix) gets no SMTP line: it sees the close and
     * applies its default action. */
    bool policy = sv->svc->kind == SK_POLICY;
    unsigned open = server_nsessions(srv);
    if (open >= (unsigned)param_int(sv->p, PARAM_moat_max_sessions)) {
        log_warn("smtpd", "too many connections (moat_max_sessions = %u): refusing %s", open, addr);
        if (policy)
            close(fd);
        else
            reject_connection(fd, sv->myhostname, "too many connections");
        return;
    }
    if (sv->svc->maxproc > 0 && sv->nsessions >= (unsigned)sv->svc->maxproc) {
        log_warn("smtpd", "service %s: process limit %d reached: refusing %s", sv->svc->name,
                 sv->svc->maxproc, addr);
        if (policy)
            close(fd);
        else
            reject_connection(fd, sv->myhostname, "too many connections");
        return;
    }
    evutil_make_socket_nonblocking(fd);
    if (policy)
        policyd_start(srv, sv, fd, sa);
    else
        session_start(srv, sv, fd, sa);
}

static void reenable_listener(evutil_socket_t fd, short what, void *arg)
{
    evconnlistener_enable(arg);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    log_warn("master", "accept: %s", evutil_socket_error_to_string(e));
    /* EMFILE and friends: back off briefly instead of spinning. */
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        evconnlistener_disable(l);
        struct timeval tv = {0, 200000};
        event_base_once(evconnlistener_get_base(l), -1, EV_TIMEOUT, reenable_listener, l, &tv);
    }
}

/* ---------- listeners ---------- */

/* Expand a service into the addresses it binds. */
static int service_addrs(const service_t *svc, const params_t *p, struct addrinfo **out, buf_t *err)
{
    struct addrinfo hints = {0}, *res = NULL, *all = NULL, **tail = &all;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;

    const char *const *protos;
    size_t np = param_list(p, PARAM_inet_protocols, &protos);
    bool v4 = false, v6 = false;
    for (size_t i = 0; i < np; i++) {
        if (str_ieq(protos[i], "all") || str_ieq(protos[i], "ipv4"))
            v4 = true;
        if (str_ieq(protos[i], "all") || str_ieq(protos[i], "ipv6"))
            v6 = true;
    }
    hints.ai_family = v4 && v6 ? AF_UNSPEC : v6 ? AF_INET6 : AF_INET;

    const char *hosts_one[1];
    const char *const *hosts;
    size_t nh;
    if (svc->host) {
        hosts_one[0] = svc->host;
        hosts = hosts_one;
        nh = 1;
    } else {
        nh = param_list(p, PARAM_inet_interfaces, &hosts);
    }
    for (size_t i = 0; i < nh; i++) {
        const char *h = hosts[i];
        char tmp[256];
        if (str_ieq(h, "all")) {
            h = NULL;
        } else if (str_ieq(h, "loopback-only")) {
            h = v4 ? "127.0.0.1" : "::1";
        } else if (h[0] == '[') {
            str_copy(tmp, h + 1, sizeof tmp);
            char *rb = strchr(tmp, ']');
            if (rb)
                *rb = 0;
            h = tmp;
        }
        int rc = getaddrinfo(h, svc->port, &hints, &res);
        if (rc != 0) {
            buf_printf(err, "%s:%d: service %s: cannot resolve listen address %s: %s\n", svc->file,
                       svc->line, svc->name, h ? h : "*", gai_strerror(rc));
            freeaddrinfo(all);
            return -1;
        }
        *tail = res;
        while (*tail)
            tail = &(*tail)->ai_next;
    }
    *out = all;
    return 0;
}

static void addr_key(const struct addrinfo *ai, char *key, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "", port[8] = "";
    getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, port, sizeof port,
                NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(key, size, "%s %s", host, port);
}

static listener_t *find_listener(server_t *srv, const char *key)
{
    for (listener_t *l = srv->listeners; l; l = l->next)
        if (strcmp(l->key, key) == 0)
            return l;
    return NULL;
}

static listener_t *open_listener(server_t *srv, const struct addrinfo *ai, const char *key,
                                 smtpd_svc_t *sv, buf_t *err)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        buf_printf(err, "%s:%d: service %s: socket: %s\n", sv->svc->file, sv->svc->line,
                   sv->svc->name, strerror(errno));
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        buf_printf(err, "%s:%d: service %s: bind %s: %s\n", sv->svc->file, sv->svc->line,
                   sv->svc->name, key, strerror(errno));
        close(fd);
        return NULL;
    }
    listener_t *li = xcalloc(1, sizeof *li);
    li->srv = srv;
    li->sv = sv;
    str_copy(li->key, key, sizeof li->key);
    li->ev = evconnlistener_new(srv->base, on_accept, li, LEV_OPT_CLOSE_ON_FREE, 1024, fd);
    if (!li->ev) {
        buf_printf(err, "%s:%d: service %s: listen %s: %s\n", sv->svc->file, sv->svc->line,
                   sv->svc->name, key, strerror(errno));
        close(fd);
        free(li);
        return NULL;
    }
    evconnlistener_set_error_cb(li->ev, on_accept_error);
    return li;
}

server_t *server_new(struct event_base *base, spool_t *spool, qmgr_t *qmgr)
{
    server_t *srv = xcalloc(1, sizeof *srv);
    srv->base = base;
    srv->spool = spool;
    srv->qmgr = qmgr;
    return srv;
}

int server_configure(server_t *srv, config_t *cfg, buf_t *err)
{
    gen_t *g = gen_new(cfg, srv->base, spool_pool(srv->spool), srv->gen, err);
    if (!g)
        return -1;
    if (gen_state(g, srv, err) != 0) {
        g->cfg = NULL;   /* the caller still owns cfg on failure */
        gen_release(g);
        return -1;
    }
    listener_t *fresh = NULL;
    for (listener_t *l = srv->listeners; l; l = l->next)
        l->keep = false;

    for (size_t i = 0; i < g->nsvc; i++) {
        smtpd_svc_t *sv = &g->svcs[i];
        struct addrinfo *ai = NULL;
        if (service_addrs(sv->svc, sv->p, &ai, err) != 0)
            goto fail;
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
            char key[128];
            addr_key(a, key, sizeof key);
            listener_t *old = find_listener(srv, key);
            bool dup = false;
            for (listener_t *f = fresh; f; f = f->next)
                if (strcmp(f->key, key) == 0)
                    dup = true;
            if (dup) {
                buf_printf(err, "%s:%d: service %s: address %s is used by another service\n",
                           sv->svc->file, sv->svc->line, sv->svc->name, key);
                freeaddrinfo(ai);
                goto fail;
            }
            listener_t *li;
            if (old && !old->keep) {
                old->keep = true;
                li = xcalloc(1, sizeof *li);   /* placeholder that adopts old's socket below */
                str_copy(li->key, key, sizeof li->key);
                li->srv = srv;
                li->sv = sv;
                li->ev = NULL;
            } else {
                li = open_listener(srv, a, key, sv, err);
                if (!li) {
                    freeaddrinfo(ai);
                    goto fail;
                }
            }
            li->next = fresh;
            fresh = li;
        }
        freeaddrinfo(ai);
    }

    /* Commit: adopt kept sockets, close the rest, switch generations. */
    for (listener_t *f = fresh; f; f = f->next) {
        if (f->ev)
            continue;
        listener_t *old = find_listener(srv, f->key);
        f->ev = old->ev;
        old->ev = NULL;
        evconnlistener_set_cb(f->ev, on_accept, f);
        evconnlistener_set_error_cb(f->ev, on_accept_error);
    }
    server_stop_listening(srv);   /* what was not adopted above */
    srv->listeners = fresh;
    gen_t *old_gen = srv->gen;
    srv->gen = g;
    gen_release(old_gen);
    return 0;

fail:
    while (fresh) {
        listener_t *f = fresh;
        fresh = f->next;
        if (f->ev)
            evconnlistener_free(f->ev);
        free(f);
    }
    g->cfg = NULL;   /* the caller still owns cfg on failure */
    gen_release(g);
    return -1;
}

int server_check_config(config_t *cfg, buf_t *err)
{
    struct event_base *base = event_base_new();
    gen_t *g = gen_new(cfg, base, NULL, NULL, err);
    if (g) {
        g->cfg = NULL;   /* only compiled to see that it compiles */
        gen_release(g);
    }
    event_base_free(base);
    return g ? 0 : -1;
}

const config_t *server_config(const server_t *srv)
{
    return srv->gen ? srv->gen->cfg : NULL;
}

smtpd_svc_t *server_service(server_t *srv, size_t i)
{
    return srv->gen && i < srv->gen->nsvc ? &srv->gen->svcs[i] : NULL;
}

void server_stop_listening(server_t *srv)
{
    while (srv->listeners) {
        listener_t *l = srv->listeners;
        srv->listeners = l->next;
        if (l->ev)
            evconnlistener_free(l->ev);
        free(l);
    }
}

unsigned server_nsessions(const server_t *srv)
{
    return srv->nsessions + policyd_nsessions();
}

void server_session_added(server_t *srv, struct session *s)
{
    /* Registry: a dense array; order does not matter. */
    if (srv->nsessions == srv->nslots) {
        srv->nslots = srv->nslots ? srv->nslots * 2 : 64;
        srv->sessions = xrealloc(srv->sessions, srv->nslots * sizeof *srv->sessions);
    }
    srv->sessions[srv->nsessions++] = s;
}

void server_session_removed(server_t *srv, struct session *s)
{
    for (unsigned i = 0; i < srv->nsessions; i++) {
        if (srv->sessions[i] == s) {
            srv->sessions[i] = srv->sessions[--srv->nsessions];
            return;
        }
    }
}

void server_close_sessions(server_t *srv, bool now)
{
    /* session_shutdown never frees synchronously, so the array is stable. */
    for (unsigned i = 0; i < srv->nsessions; i++)
        session_shutdown(srv->sessions[i], now);
    policyd_close_all(now);
}

void server_free(server_t **psrv)
{
    server_t *srv = *psrv;
    if (!srv)
        return;
    server_stop_listening(srv);
    gen_release(srv->gen);
    free(srv->sessions);
    free(srv);
    *psrv = NULL;
}

struct event_base *server_base(server_t *srv) { return srv->base; }
spool_t *server_spool(server_t *srv) { return srv->spool; }
qmgr_t *server_qmgr(server_t *srv) { return srv->qmgr; }
