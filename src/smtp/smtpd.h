/*
 * smtpd: the SMTP server side — listeners (server.c) and sessions
 * (session.c).  This header is the contract between the two and the
 * daemon (cli/serve.c).
 *
 * A configuration generation (gen) holds one loaded config_t and, per
 * smtpd service, the values compiled from it once (network lists,
 * domain lists, the restriction policy).  Sessions hold a reference to the generation they started
 * with, so a reload never changes a session under its feet; a generation
 * is freed when it is no longer current and its last session ends.
 */
#ifndef MOAT_SMTP_SMTPD_H
#define MOAT_SMTP_SMTPD_H

#include <stdbool.h>

#include "config/config.h"
#include "content/clamd.h"
#include "core/buf.h"
#include "core/pool.h"
#include "dns/dns.h"
#include "policy/addrlist.h"
#include "policy/restrict.h"
#include "queue/qmgr.h"
#include "queue/spool.h"

struct event_base;
typedef struct server server_t;
#define EHLO_VARIANTS_MAX 8
typedef struct gen gen_t;

/* Per service, per generation: everything a session reads. */
typedef struct smtpd_svc {
    const service_t *svc;
    const params_t *p;
    gen_t *gen;
    addrlist_t *bare_nl_exclusions; /* smtpd_forbid_bare_newline_exclusions (same forms as mynetworks) */
    int bare_nl_mode;               /* BARE_NL_* */
    bool proxy;                     /* smtpd_upstream_proxy_protocol = haproxy */
    char *ehlo_reply;               /* the complete EHLO reply, lines joined by CRLF, no final CRLF */
    unsigned nsessions;             /* sessions of this service in this generation (maxproc) */
    char *myhostname;
    policy_t *policy;               /* the smtpd_*_restrictions, compiled (policy/restrict.h) */
    bool pipelining_offered;        /* EHLO announces PIPELINING (not in smtpd_discard_ehlo_keywords) */
    /* Added with content filters (issue 5): */
    char *ehlo_replies[EHLO_VARIANTS_MAX];   /* the EHLO reply per EHLO_* combination (AUTH is
                                       added per session); [0] is ehlo_reply */
    addrlist_t *xclient_hosts;      /* smtpd_authorized_xclient_hosts */
    addrlist_t *xforward_hosts;     /* smtpd_authorized_xforward_hosts */
    char *content_filter;           /* content_filter ("transport:destination"), NULL when empty */
    unsigned receive_override;      /* receive_override_options, RO_* bits */
    /* Added with the state issue: */
    struct store *store;            /* state_store, when the policy needs it (one reference) */
    struct verify *verify;          /* address verification probes, when the policy needs them */
    policy_env_t env;               /* what the policy was given (policy_set_env) */
    /* Added with the TLS issue: */
    struct tls_server *tls;         /* STARTTLS / implicit TLS; NULL: no TLS on this service */
    bool tls_required;              /* smtpd_tls_security_level = encrypt (or wrapper mode) */
    struct sasl_server *sasl;       /* SMTP AUTH backend; NULL: smtpd_sasl_auth_enable = no */
    addrlist_t *sasl_exceptions;    /* smtpd_sasl_exceptions_networks: not offered AUTH */
    /* Added with the content issue: */
    struct content_cfg *content;    /* header/body checks and MIME limits (content/content.h) */
    scan_settings_t scan;           /* content_scanner and what its verdicts do (content/clamd.h) */
} smtpd_svc_t;

/* ehlo_replies[] index bits: the keywords announced to some clients only. */
#define EHLO_XCLIENT 1
#define EHLO_XFORWARD 2
#define EHLO_STARTTLS 4

/* The EHLO reply for p's service (lines joined by CRLF, no final CRLF),
 * with the EHLO_* keywords in which, and "AUTH mechs" (plus "AUTH=mechs"
 * with broken_sasl_auth_clients) when mechs is not NULL. */
char *smtpd_ehlo_build(const params_t *p, const char *host, unsigned which, const char *mechs);

/* receive_override_options (Postfix's names). */
#define RO_NO_UNKNOWN_RCPT 0x1      /* no_unknown_recipient_checks */
#define RO_NO_ADDRESS_MAPPINGS 0x2  /* no_address_mappings (moat has none) */
#define RO_NO_HEADER_BODY 0x4       /* no_header_body_checks (for the content checks to come) */
#define RO_NO_MILTERS 0x8           /* no_milters (for the milters to come) */

/* Parse a receive_override_options list into RO_* bits.  -1 with
 * "receive_override_options: ..." (no file:line) in err for an unknown
 * value. */
int smtpd_receive_override(const char *const *items, size_t n, unsigned *out, buf_t *err);

enum { BARE_NL_NO, BARE_NL_NORMALIZE, BARE_NL_REJECT };

struct gen {
    config_t *cfg;
    int refs;                /* the server's "current" ref + one per session */
    dns_t *dns;              /* the resolver (shared with the previous generation when
                                the dns_* parameters did not change: its cache survives) */
    char *dns_key;           /* those parameters, to compare on reload */
    size_t nsvc;
    smtpd_svc_t *svcs;
};

/* server.c */
server_t *server_new(struct event_base *base, spool_t *spool, qmgr_t *qmgr);
/* Install a loaded configuration: open listeners for its services
 * (keeping open sockets whose address did not change across a reload,
 * closing ones that went away).  On error (a port cannot be bound) returns
 * -1 with the reason in err and keeps the previous configuration. */
int server_configure(server_t *srv, config_t *cfg, buf_t *err);
/* Compile cfg's services as server_configure would, without opening
 * anything: the second half of `moat config check` (the resolver is set
 * up on a scratch event base, so bad dns_forwarders show too).  -1 with
 * "file:line: message" lines in err. */
int server_check_config(config_t *cfg, buf_t *err);
const config_t *server_config(const server_t *srv);
/* A resolver on base configured by p's dns_forwarders, dns_timeout and
 * dns_cache_size (for the server, `moat check` and `moat dns`).  key
 * (may be NULL) gets those values as one string, to compare; with base
 * NULL only key is filled.  NULL with "main.cf:N: ..." in err. */
dns_t *smtpd_resolver_new(const params_t *p, struct event_base *base, buf_t *key, buf_t *err);
/* The current generation's i-th smtpd service (tests and fuzzing feed
 * sessions through it without a listener). */
smtpd_svc_t *server_service(server_t *srv, size_t i);
void server_stop_listening(server_t *srv);
unsigned server_nsessions(const server_t *srv);
/* Tell every session to end: 421 at the next command boundary, or at once. */
void server_close_sessions(server_t *srv, bool now);
void server_free(server_t **srv);

/* session.c: a new connection on fd, accepted by a listener of svc. */
struct session;
void session_start(server_t *srv, smtpd_svc_t *svc, int fd, const struct sockaddr *peer);
void session_shutdown(struct session *s, bool now);

/* server.c services for sessions */
struct event_base *server_base(server_t *srv);
spool_t *server_spool(server_t *srv);
qmgr_t *server_qmgr(server_t *srv);
void server_session_added(server_t *srv, struct session *s);
void server_session_removed(server_t *srv, struct session *s);
void gen_release(gen_t *g);

#endif
