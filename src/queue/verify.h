/*
 * verify: address verification probes, as Postfix's verify(8) makes them,
 * on the event loop: an address is routed like mail (transport maps,
 * relayhost, MX lookup; address_verify_* overrides), and the SMTP client
 * (smtpc.h, probe mode) sends MAIL FROM:<address_verify_sender> and
 * RCPT TO:<address>, then RSET/QUIT, never DATA.  Results live in the
 * state store (key "vrfy:<address>") with positive/negative expiry and
 * refresh times; one probe at a time per address, at most
 * address_verify_probe_domain_limit per domain.  See docs/verify.md.
 */
#ifndef MOAT_QUEUE_VERIFY_H
#define MOAT_QUEUE_VERIFY_H

#include <stdbool.h>

#include "config/config.h"
#include "core/buf.h"
#include "core/pool.h"
#include "dns/dns.h"
#include "queue/smtpc.h"
#include "store/store.h"

struct event_base;
typedef struct verify verify_t;

/* cfg is referenced (config_ref) for its transports and routing; store
 * may be NULL (results then live in memory only, as with an empty
 * address_verify_map, which also keeps them in memory when a store is
 * given).  self NULL: "this is me" is built from cfg's services, as the
 * queue manager does.  NULL + err on bad address_verify_* settings (a
 * transport table that does not open). */
verify_t *verify_new(struct event_base *base, pool_t *pool, dns_t *dns, config_t *cfg, store_t *store,
                     const smtpc_self_t *self, buf_t *err);
/* Cancel waiting queries (no callback), let probes in flight end on their
 * own, free. */
void verify_free(verify_t **v);

typedef enum { VR_DELIVERABLE, VR_UNDELIVERABLE, VR_TEMPFAIL, VR_IN_PROGRESS } verify_status_t;

typedef struct verify_result {
    verify_status_t status;
    /* Why, as Postfix words it: "host mx.example.com[192.0.2.1] said: 550
     * 5.1.1 <bob@example.com>: User unknown (in reply to RCPT TO
     * command)", "connect to ...: Connection refused"; "" for
     * VR_DELIVERABLE and VR_IN_PROGRESS. */
    const char *text;
    char dsn[16];          /* "5.1.1", "4.4.1", "2.0.0" */
} verify_result_t;

typedef void (*verify_cb)(void *arg, const verify_result_t *r);

/* The verdict for addr (the cache, else a probe): cb runs once, on the
 * loop, never inside this call: with the cached result, the probe's
 * result, or VR_IN_PROGRESS after address_verify_poll_count ×
 * address_verify_poll_delay.  Returns a handle for verify_cancel. */
void *verify_query(verify_t *v, const char *addr, verify_cb cb, void *arg);
void verify_cancel(void *handle);

/* Probes in flight (started, not yet answered) and queued behind the
 * per-domain limit; for tests and the log. */
unsigned verify_probes_running(const verify_t *v);
unsigned verify_probes_queued(const verify_t *v);

/* --- pure helpers, exposed for unit tests --- */

/* The cache value: "<S> <updated> <dsn> <text>", S one of D (deliverable),
 * U (undeliverable), T (temporary failure); updated in seconds since the
 * epoch. */
void verify_encode(buf_t *out, verify_status_t st, long long updated, const char *dsn, const char *text);
/* 0 with the fields (*text points into val), -1 for a value that is not
 * one (the entry is then treated as missing). */
int verify_decode(const char *val, verify_status_t *st, long long *updated, char dsn[16], const char **text);
/* MAIL FROM of a probe at time now (address_verify_sender,
 * address_verify_sender_ttl, myorigin): "" for the null sender. */
void verify_probe_sender(const params_t *p, long long now, buf_t *out);

#endif
