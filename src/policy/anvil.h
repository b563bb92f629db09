/*
 * anvil: per-client limits, like Postfix's anvil(8) but counted in the
 * state store so that several MX hosts share them: connection count (per
 * process and service, in memory), connection/message/recipient rates
 * (fixed windows of anvil_rate_time_unit), the new-TLS-session and AUTH
 * command rates (the TLS issue), and the abuse memory: clients
 * that collect too many 5xx replies ("five-fifties") or try too many
 * unknown recipients (dictionary attacks) are blocked for
 * smtpd_client_block_time.  See docs/limits.md.
 */
#ifndef MOAT_POLICY_ANVIL_H
#define MOAT_POLICY_ANVIL_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/buf.h"
#include "policy/sstep.h"

typedef struct anvil anvil_t;

/* Compile the limits of p.  NULL with "parameter: message" in err. */
anvil_t *anvil_new(const params_t *p, const char *config_dir, buf_t *err);
void anvil_free(anvil_t **a);
/* Has a table or list file of smtpd_client_event_limit_exceptions changed? */
bool anvil_tables_changed(const anvil_t *a);
/* Does any limit need the store (rates, abuse limits)? */
bool anvil_uses_store(const anvil_t *a);

/* Run by policy_eval before the restriction classes of every command
 * (not for delegated policy requests): blocked client (CONNECT and RCPT),
 * connection count and rate (CONNECT), message rate (MAIL), recipient
 * rate (RCPT), new TLS sessions (STARTTLS, and before an implicit-TLS
 * handshake: read, not counted; refused when one more would exceed the
 * limit), AUTH commands (AUTH: counted, refused over the limit); clients
 * in smtpd_client_event_limit_exceptions skip it all.  Refusals set
 * c->whole_text: "421 4.7.0 <myhostname> Error: too many connections from
 * <addr>" and the like (a 421 makes the session hang up; "450 4.7.1
 * Error: too many AUTH commands from <addr>" does not).  Store failures
 * skip with a warning (never a refusal). */
ss_status_t anvil_stage(anvil_t *a, ss_ctx_t *c);

/* Count one event of st's client (fire and forget through env->store,
 * only with env->commit): a 5xx reply or an unknown recipient (reaching
 * its limit writes the block), or a new TLS session (the rate STARTTLS
 * reads; only when smtpd_client_new_tls_session_rate_limit is set). */
void anvil_note(anvil_t *a, const policy_env_t *env, const pstate_t *st, pevent_t ev);

/* The in-memory connection count of this process, per service and
 * client address (the session opens and closes; anvil_stage reads). */
void anvil_conn_open(const char *service, const char *addr);
void anvil_conn_close(const char *service, const char *addr);
unsigned anvil_conn_count(const char *service, const char *addr);

/* --- pure helpers (the CLI and the unit tests use them) --- */

/* The identity blocks and abuse counters use: the address itself for
 * IPv4 (an IPv4-mapped IPv6 address counts as its IPv4 address), the /64
 * network for IPv6 ("2001:db8:1:2::/64").  false: not an address. */
bool anvil_block_id(const char *addr, char *out, size_t size);
/* The start of the fixed window of unit seconds that holds now. */
long long anvil_window_start(long long now, unsigned unit);
/* "rate:<kind>:<addr>:<window start>" appended to out. */
void anvil_rate_key(buf_t *out, const char *kind, const char *addr, long long now, unsigned unit);
/* The value of a block entry: "<reason> <since> <count>" (reason "5xx"
 * or "rcpt"; since: seconds since the epoch; count: the events that
 * reached the limit).  Parsing accepts a reason alone (since and count
 * 0); false for anything else. */
void anvil_block_value(buf_t *out, const char *reason, long long since, long long count);
bool anvil_block_parse(const char *value, char *reason, size_t rsize, long long *since, long long *count);
/* "5xx replies", "unknown recipients", "new TLS sessions" (tls), else
 * reason itself. */
const char *anvil_reason_text(const char *reason);

#endif
