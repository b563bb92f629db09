/*
 * restrict: the Postfix restriction language — smtpd_*_restrictions,
 * smtpd_restriction_classes, access(5) tables — compiled once per
 * configuration load and evaluated per SMTP command.
 *
 * A restriction list compiles into an array of steps; evaluating a class
 * walks its steps in order.  A step answers at once with one of:
 *   PERMIT   (OK, permit_*: ends this class; the next class runs)
 *   REJECT   (5xx or 4xx: ends the whole evaluation for this command)
 *   DUNNO    (continue with the next step; the end of a list permits)
 * DEFER_IF_PERMIT / DEFER_IF_REJECT / warn_if_reject are remembered in
 * the evaluation state as in Postfix.  A step that needs a DNS answer
 * not yet known starts the query (through st->dns, the caller's memo)
 * and the whole evaluation answers V_PENDING with nothing recorded: the
 * caller waits for the memo's wake and calls policy_eval again, which
 * replays the same steps over the memo's answers (so every side effect,
 * trace line and log line happens once, in the final pass).
 * check_policy_service waits the same way, for its policy server's
 * answer (policysvc.h), stored in the memo under the service and the
 * request text.  Steps that need a remote store arrive with later
 * issues; until then the compiler refuses them with a clear error, never
 * skips them.
 *
 * One code path, two doors: the SMTP session and `moat check` both call
 * policy_eval() with a pstate_t; with a trace attached, every class,
 * step, lookup key, table line and the verdict are recorded.
 */
#ifndef MOAT_POLICY_RESTRICT_H
#define MOAT_POLICY_RESTRICT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "config/config.h"
#include "core/buf.h"
#include "dns/dns.h"
#include "maps/maps.h"

typedef enum {
    RC_CLIENT,     /* smtpd_client_restrictions */
    RC_HELO,       /* smtpd_helo_restrictions */
    RC_SENDER,     /* smtpd_sender_restrictions */
    RC_RELAY,      /* smtpd_relay_restrictions */
    RC_RECIPIENT,  /* smtpd_recipient_restrictions */
    RC_DATA,       /* smtpd_data_restrictions */
    RC_EOD,        /* smtpd_end_of_data_restrictions */
    RC_ETRN,       /* smtpd_etrn_restrictions */
    RC_POLICY,     /* policy_restrictions (a master.cf policy service; added with the state issue) */
    RC__COUNT
} rclass_t;

/* Which SMTP command is being decided; policy_eval runs the classes that
 * belong to it (with smtpd_delay_reject = yes, RCPT runs client, helo,
 * sender, relay and recipient; CONNECT/HELO/MAIL run nothing). */
/* PCMD_STARTTLS and PCMD_AUTH (the TLS issue) run the limits only, no
 * class: the new-TLS-session rate (read before the handshake; a new,
 * not resumed, session is counted after it with PE_NEW_TLS) and the AUTH
 * command rate (counted and checked per AUTH command).  A refusal is
 * "421 4.7.0 <myhostname> Error: too many new TLS sessions from <addr>"
 * or "450 4.7.1 Error: too many AUTH commands from <addr>" (Postfix's
 * texts). */
typedef enum { PCMD_CONNECT, PCMD_HELO, PCMD_MAIL, PCMD_RCPT, PCMD_DATA, PCMD_EOD, PCMD_ETRN, PCMD_STARTTLS,
               PCMD_AUTH } pcmd_t;

typedef struct policy policy_t;

/* Compile every restriction parameter of p (one service's values),
 * opening every table they name (relative names against config_dir).
 * NULL with "file:line: message\n" lines in err for: an unknown
 * restriction or class, a table that does not open, a restriction that a
 * later moat issue brings ("reject_rbl_client: not supported by this
 * version of moat"), a missing argument, and a configuration that could
 * make moat an open relay (neither smtpd_relay_restrictions nor
 * smtpd_recipient_restrictions ends unauthorized destinations). */
policy_t *policy_new(const params_t *p, const char *config_dir, buf_t *err);
void policy_free(policy_t **pol);
/* Has a table file changed on disk since policy_new?  The owner then
 * builds a new policy (and keeps the old one if that fails). */
bool policy_tables_changed(const policy_t *pol);

/* What the session knows; the session owns every string. */
typedef struct pstate {
    const struct sockaddr *peer;   /* the client address */
    const char *client_addr;       /* "192.0.2.1" */
    const char *client_name;       /* verified name or "unknown" */
    const char *reverse_name;      /* PTR name or "unknown" */
    const char *helo;              /* NULL before HELO/EHLO */
    const char *sender;            /* NULL before MAIL; "" for <> */
    const char *recipient;         /* the RCPT being decided (RCPT only) */
    const char *protocol;          /* "SMTP"/"ESMTP" */
    unsigned nrcpt;                /* accepted recipients so far */
    bool pipelined_early;          /* the client sent ahead without PIPELINING (reject_unauth_pipelining) */
    const char *sasl_user;         /* NULL: not authenticated */
    /* Added with permit_inet_interfaces (fields after the original ones): */
    const struct sockaddr *local;  /* the server's end of the connection; NULL: unknown (moat check) */
    /* Added with the DNS issue: */
    dns_memo_t *dns;               /* the session's DNS answers; NULL: DNS steps answer 451 4.3.5 */
    char name_code;                /* client_name: 0 verified (forward-confirmed), 4 temporary failure,
                                      5 no name or not confirmed (Postfix's peer codes) */
    char reverse_code;             /* reverse_name: 0 found, 4 temporary failure, 5 no PTR */
    char forward_code;             /* forward confirmation of reverse_name: 0 confirmed, 4 temporary, 5 not */
    /* Added with the policy client (check_policy_service request
     * attributes; NULL/0 when unknown): */
    const char *queue_id;          /* once the queue file exists */
    const char *instance;          /* the same for every request of one transaction, new for the next
                                      (Postfix's instance); NULL: the engine derives one from the memo,
                                      the client address and the sender */
    unsigned long long size;       /* MAIL FROM SIZE=, the actual size at end of data */
    const char *sasl_method;       /* with sasl_user */
    const char *sasl_sender;       /* MAIL FROM AUTH= */
    bool stress;                   /* the server is under stress (Postfix's "stress=yes") */
    const char *tls_protocol;      /* NULL: plaintext (then cipher and keysize are not sent) */
    const char *tls_cipher;
    unsigned tls_keysize;
    const char *ccert_subject, *ccert_issuer;            /* the certificate's subject and issuer CN */
    const char *ccert_fingerprint, *ccert_pubkey_fingerprint;
    /* Added with the state issue: */
    const char *service;           /* the master.cf service name (per-service connection counts); NULL: "smtp" */
    /* Added with the TLS issue (tls_protocol etc. above are filled now): */
    bool ccert_verified;           /* the client certificate chains to smtpd_tls_CAfile/CApath */
} pstate_t;

typedef enum { V_PERMIT, V_REJECT, V_DEFER, V_PENDING } vstatus_t;

typedef struct verdict {
    vstatus_t status;
    int code;                  /* reply code when not V_PERMIT */
    buf_t reply;               /* the complete reply text, e.g. "554 5.7.1 <a@b>: Relay access denied" */
    char rule[160];            /* "recipient:check_recipient_access hash:/etc/moat/access" */
    map_origin_t origin;       /* the table line that decided, if any */
    /* Actions that apply to the message once accepted (access results). */
    bool discard, hold;
    buf_t prepend;             /* header lines to prepend, each ending in "\n" */
    buf_t warnings;            /* WARN/INFO/warn_if_reject lines to log, each ending in "\n" */
    /* Added with the engine (fields after the original ones): */
    unsigned sleep;            /* seconds the reply waits ("sleep N"): the caller delays it, never blocks */
    buf_t postponed;           /* smtpd_delay_reject = no: a defer_if_permit reply raised at CONNECT,
                                  HELO or MAIL, which Postfix answers at the next RCPT; "" when none */
    /* Added with the queue actions: access(5) results that need the queue
     * (meaningful when the verdict permits; v->hold above too). */
    buf_t redirect;            /* REDIRECT address (the last one wins); "" when none */
    buf_t filter;              /* FILTER transport:destination (the last one wins); "" when none */
    buf_t bcc;                 /* BCC addresses, each ending in "\n" */
} verdict_t;

void verdict_init(verdict_t *v);
void verdict_reset(verdict_t *v);
void verdict_free(verdict_t *v);

/* Decide one command.  Returns v->status.  trace may be NULL; otherwise
 * one human-readable line per event is appended ("  client: permit_mynetworks: 127.0.0.1 matches 127.0.0.0/8 -> OK").
 * Tables that fail at run time make the verdict V_DEFER with
 * "451 4.3.0 <...>: Temporary lookup failure" and a warning line. */
vstatus_t policy_eval(policy_t *pol, pcmd_t cmd, const pstate_t *st, verdict_t *v, buf_t *trace);

/* --- Added with the engine (declarations below the original ones) --- */

/* Start the DNS queries the compiled restrictions will need, for every
 * input st already has (client address and names, HELO name, sender,
 * recipient), so their answers are cached by the time the steps run.
 * Needs st->dns; records nothing. */
void policy_prefetch(policy_t *pol, const pstate_t *st);

/* Notes on the contract above:
 *  - PCMD_ETRN: the ETRN domain is passed in st->recipient.
 *  - PCMD_DATA / PCMD_EOD: st->recipient is the recipient when there is
 *    exactly one (Postfix logs it), else NULL.
 *  - v->warnings lines are either "warning: TEXT" (log at warning level)
 *    or Postfix's per-event lines without the queue ID, such as
 *    "reject_warning: RCPT from host[addr]: 554 5.7.1 ...; from=<a> to=<b>
 *    proto=ESMTP helo=<h>", "warn: ...", "info: ...", "discard: ...",
 *    "permit: ..." (the caller prefixes "QUEUEID: " or "NOQUEUE: ").
 *  - v->prepend and v->discard are meaningful when the verdict permits. */

/* The reply as sent: v->reply plus smtpd_reject_footer (with $client_address,
 * $client_name, $helo_name, $sender, $recipient expanded), lines joined by
 * CRLF, no final CRLF.  Empty for V_PERMIT. */
void policy_reply_text(const policy_t *pol, const verdict_t *v, const pstate_t *st, buf_t *out);

/* smtpd_delay_reject of the compiled configuration. */
bool policy_delay_reject(const policy_t *pol);

/* smtpd_forbidden_commands: is verb (the first word of a command line
 * that names no SMTP command moat knows) a sign that the peer speaks
 * another protocol?  True for a listed word (any case), a verb found in a
 * listed table, and any verb shaped like a message header ("Subject:"),
 * as Postfix.  The session then answers "221 2.7.0 Error: I can break
 * rules, too. Goodbye." and ends.  A table that fails counts as no match
 * (Postfix ignores lookup errors here: the command is refused anyway). */
bool policy_forbidden_command(policy_t *pol, const char *verb);

/* Is domain (any case, trailing dot allowed) one of mydestination's?
 * (Exact names, as Postfix's resolve_local; relay_domains is not
 * "local": restrictions see it through reject_unauth_destination &co.) */
bool policy_local_domain(const policy_t *pol, const char *domain);
/* The domain that completes a recipient given without one (<postmaster>):
 * myorigin when it is local, else the first mydestination domain; NULL
 * when nothing is local. */
const char *policy_bare_domain(const policy_t *pol, const char *myorigin);

/* The whole RCPT decision, as both doors (the session and moat check)
 * make it: policy_eval(PCMD_RCPT) unless exempt (<postmaster>) or
 * discarding (DISCARD already applies to the message); then a
 * defer_if_permit postponed from CONNECT, HELO or MAIL (postponed: its
 * reply, or NULL), rule "postponed:defer_if_permit".  A permitted
 * recipient is accepted whatever its domain: the queue manager delivers
 * it as src/queue/route.h resolves it (the relay guard is the
 * restrictions' reject_unauth_destination, which policy_new insists on).
 * st->recipient is the recipient being decided. */
vstatus_t policy_rcpt(policy_t *pol, const pstate_t *st, bool exempt, bool discarding, const char *postponed,
                      verdict_t *v, buf_t *trace);

/* The policy delegation request check_policy_service sends for cmd and
 * st (Postfix 3.7's attributes in its order, then Postfix 3.8's
 * compatibility_level and mail_version, and the final empty line), with
 * policy_context context.  Deterministic: the same command and state give
 * the same text (the memo key of the answer). */
void policy_request_text(const policy_t *pol, pcmd_t cmd, const pstate_t *st, const char *context, buf_t *out);

/* --- Added with the state issue --- */

struct store;
struct verify;

/* What the compiled restrictions may use at run time; the owner (the
 * server's generation, `moat check`, the policy service) opens it and
 * keeps it alive as long as the policy.  Without one (or with NULL
 * members) the steps that need it answer as their *_fail_action says. */
typedef struct policy_env {
    struct store *store;      /* state_store; NULL: could not be opened (store_error says why) */
    const char *store_error;
    struct verify *verify;    /* address verification probes (src/queue/verify.h) */
    bool commit;              /* write the evaluations' effects (greylist triplets, counters) to the store */
} policy_env_t;

/* What policy_needs() reports. */
#define PN_STORE 1u    /* check_greylist, rate or abuse limits, correspondents, reject_unverified_* */
#define PN_VERIFY 2u   /* reject_unverified_sender / reject_unverified_recipient */
unsigned policy_needs(const policy_t *pol);
/* Copied; the pointers must stay valid until the next call or policy_free. */
void policy_set_env(policy_t *pol, const policy_env_t *env);

/* Session events the abuse limits count (smtpd_client_reject_limit,
 * smtpd_client_unknown_recipient_limit); the counting is asynchronous and
 * needs no answer: a client that reaches a limit is blocked, which the
 * next command's evaluation sees (421 4.7.0, and the session hangs up). */
typedef enum { PE_REJECT_5XX, PE_UNKNOWN_RCPT,
               PE_NEW_TLS /* a new (not resumed) TLS session: smtpd_client_new_tls_session_rate_limit */
} pevent_t;
void policy_note_event(policy_t *pol, const pstate_t *st, pevent_t ev);

/* A message from st's client was accepted for these recipients: when
 * correspondent_allow_list = yes and the client is trusted (SASL
 * authenticated, or in mynetworks), remember each recipient for
 * permit_known_correspondent. */
void policy_record_correspondents(policy_t *pol, const pstate_t *st, const char *const *rcpts, size_t n);

/* A Postfix policy request (the policy service): evaluate
 * policy_restrictions for cmd (from the request's protocol_state) with
 * Postfix's reply class for that state (Client host / Helo command /
 * Sender address / Recipient address / Data command / End-of-data / Etrn
 * command).  The rate limits do not run (Postfix's own smtpd has them).
 * An empty policy_restrictions permits. */
vstatus_t policy_eval_delegated(policy_t *pol, pcmd_t cmd, const pstate_t *st, verdict_t *v, buf_t *trace);

#endif
