/*
 * policysvc: the client side of Postfix's policy delegation protocol
 * (SMTPD_POLICY_README), for check_policy_service.
 *
 * A request is "name=value" lines and an empty line; the reply is
 * "name=value" lines and an empty line, of which only "action" counts
 * (any access(5) result; other attributes are ignored).  One request at
 * a time per connection: the protocol has no request identifiers.
 *
 * A policysvc_t is one endpoint (inet:host:port or unix:/path) with its
 * settings (smtpd_policy_service_* or the per-service { ... } form).  It
 * is shared by every policy that names the same endpoint with the same
 * settings in this process (reference counted), so all sessions of a
 * configuration generation, and the next generation when nothing
 * changed, use one set of connections:
 *   - a free connection is reused, up to max_ttl after it was opened and
 *     request_limit requests; an unused one is closed after max_idle, or
 *     as soon as the server closes it;
 *   - a request takes a free connection, else opens one (at most
 *     connection_limit), else waits (at most timeout) for one to free up;
 *   - connecting, then sending the request and receiving the whole reply,
 *     may each take timeout; a failed attempt (refused, closed, timed
 *     out, malformed reply) closes its connection and, after retry_delay,
 *     is tried again on a fresh one, up to try_limit attempts in all;
 *     then the caller gets the failure and applies default_action.
 * Everything runs on the caller's libevent loop; nothing blocks (except
 * that an inet host given by name is looked up once, in policysvc_open).
 * Loop thread only.
 */
#ifndef MOAT_POLICY_POLICYSVC_H
#define MOAT_POLICY_POLICYSVC_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct event_base;

/* The settings, as main.cf's smtpd_policy_service_* parameters name them
 * (times in seconds). */
typedef struct policysvc_opts {
    unsigned timeout;            /* smtpd_policy_service_timeout */
    unsigned max_idle;           /* smtpd_policy_service_max_idle */
    unsigned max_ttl;            /* smtpd_policy_service_max_ttl */
    unsigned try_limit;          /* smtpd_policy_service_try_limit (>= 1) */
    unsigned retry_delay;        /* smtpd_policy_service_retry_delay */
    unsigned request_limit;      /* smtpd_policy_service_request_limit (0: none) */
    unsigned connection_limit;   /* smtpd_policy_service_connection_limit (moat) */
    const char *default_action;  /* smtpd_policy_service_default_action */
    const char *policy_context;  /* smtpd_policy_service_policy_context */
} policysvc_opts_t;

typedef struct policysvc policysvc_t;
typedef struct policysvc_req policysvc_req_t;

/* items[0] is the endpoint: "inet:host:port" (host a name, an IPv4
 * address or [IPv6]) or "unix:/path" (relative: against queue_dir, as
 * Postfix's "unix:private/policy").  items[1..n-1] are per-service
 * settings "name=value" (the main.cf name without
 * "smtpd_policy_service_"; white space around "=" allowed), overriding
 * defaults.  The same endpoint with the same settings gives the same
 * service, with one more reference.  NULL with one line of reason in err
 * (no "file:line: "). */
policysvc_t *policysvc_open(const char *const *items, size_t n, const policysvc_opts_t *defaults,
                            const char *queue_dir, buf_t *err);
policysvc_t *policysvc_ref(policysvc_t *s);
/* Drop one reference; the last one closes the connections (requests
 * still running keep their own references until they end). */
void policysvc_close(policysvc_t **s);

const char *policysvc_name(const policysvc_t *s);   /* the endpoint as written: "inet:127.0.0.1:10023" */
/* The endpoint and every setting, as one line: equal keys mean one
 * service (the memo key of a request starts with it). */
const char *policysvc_key(const policysvc_t *s);
const policysvc_opts_t *policysvc_settings(const policysvc_t *s);

/* ---------------------------------------------------------- requests */

typedef struct policysvc_result {
    bool ok;                /* a complete reply arrived */
    const char *action;     /* ok: the action attribute (the first one); NULL when the reply had none */
    const char *error;      /* !ok: why the last attempt failed */
    unsigned attempts;      /* attempts made (1..try_limit) */
    unsigned ms;            /* from policysvc_request to the result */
} policysvc_result_t;

/* r and its strings are borrowed for the call. */
typedef void (*policysvc_cb)(void *arg, const policysvc_result_t *r);

/* Send request (complete: attribute lines and the final empty line, as
 * policysvc_attr builds them) on base.  cb runs exactly once, later, from
 * the loop (never inside this call), unless policysvc_cancel(handle) ran
 * first; the handle is dead once cb has started.  Inside cb the caller
 * may make or cancel other requests and drop its reference. */
policysvc_req_t *policysvc_request(policysvc_t *s, struct event_base *base, const char *request, policysvc_cb cb,
                                   void *arg);
/* No callback after this.  A request already sent leaves its connection
 * reading the reply (to throw it away) before the connection is reused. */
void policysvc_cancel(policysvc_req_t *r);

typedef struct policysvc_stats {
    unsigned long connects;     /* connections opened (attempted) */
    unsigned long requests;     /* requests written to a connection */
    unsigned long replies;      /* complete replies read */
    unsigned long failures;     /* attempts that failed */
    unsigned long reused;       /* requests sent on a connection that had served one before */
    unsigned open;              /* connections open now */
    unsigned idle;              /* ... of which free */
    unsigned waiting;           /* requests waiting for a connection */
} policysvc_stats_t;
void policysvc_get_stats(const policysvc_t *s, policysvc_stats_t *st);

/* ----------------------------------------------- the protocol, pure */

/* Append "name=value\n".  Postfix's protocol forbids newlines (and NUL)
 * in values and Postfix itself writes values as they are; moat writes
 * every control character except TAB as '?', so a value can never start
 * an attribute of its own. */
void policysvc_attr(buf_t *req, const char *name, const char *value);

/* The longest reply accepted: attribute lines and the empty line. */
#define POLICYSVC_REPLY_MAX 16384

/* Parse a reply from data[0, len): lines "name=value" (a final CR
 * before the LF is dropped) up to an empty line.  Returns 1 when the
 * reply is complete (*used: its length; *has_action and action: the
 * first "action" attribute's value), 0 when more bytes are needed, -1
 * when it is malformed (a line without "=", an empty attribute name, a
 * NUL byte, or more than POLICYSVC_REPLY_MAX bytes without the end):
 * *why says which. */
int policysvc_reply_parse(const char *data, size_t len, size_t *used, buf_t *action, bool *has_action,
                          const char **why);

/* Is s well-formed UTF-8 (no overlong forms, no surrogates, at most
 * U+10FFFF)?  Postfix refuses a policy action that is not, when SMTPUTF8
 * is on. */
bool policysvc_valid_utf8(const char *s);

#endif
