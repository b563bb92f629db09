/*
 * policyd: moat as a Postfix policy server — a master.cf service whose
 * command is "policy" (`127.0.0.1:10040 inet n - n - - policy`) answers
 * the requests of Postfix's check_policy_service with moat's own engine
 * (policy_restrictions, evaluated by policy_eval_delegated).
 *
 * Two layers, as the SMTP side has them: a request parser (bytes ->
 * attributes, resumable at any byte boundary, bounded), with the mapping
 * of a request to the engine's pstate_t and of a verdict to an action
 * (pure functions, for the unit tests and the fuzzer), and the sessions
 * on the event loop (policyd.c).
 */
#ifndef MOAT_SMTP_POLICYD_H
#define MOAT_SMTP_POLICYD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "policy/restrict.h"

/* Limits on one request.  Postfix 3.7 sends about 35 attributes; its
 * longest values are addresses and certificate names, far below a line
 * of PREQ_LINE_MAX. */
#define PREQ_LINE_MAX 8192     /* bytes of one "name=value" line, LF included */
#define PREQ_ATTRS_MAX 128     /* attributes of one request */

typedef struct preq {
    buf_t text;                /* "name\0value\0" pairs */
    size_t off[PREQ_ATTRS_MAX][2];   /* offsets of each pair's name and value in text */
    size_t n;
    buf_t line;                /* the line being read (a request may arrive in pieces) */
    bool done;                 /* a complete request is held (until preq_reset) */
} preq_t;

void preq_init(preq_t *r);
/* Forget the request (and any partial line): ready for the next one. */
void preq_reset(preq_t *r);
void preq_free(preq_t *r);

/* Feed bytes.  Returns 1 when a request is complete (the empty line was
 * read: *used counts the bytes through it; the rest belongs to the next
 * request), 0 when every byte was taken and more are needed (*used =
 * len), -1 when the request is malformed (*why: a line without "=", an
 * empty name, a NUL byte, a line longer than PREQ_LINE_MAX, more than
 * PREQ_ATTRS_MAX attributes): the connection cannot be trusted further.
 * A CR before the LF is dropped.  After 1, call preq_reset before
 * feeding the next request. */
int preq_feed(preq_t *r, const char *data, size_t len, size_t *used, const char **why);

/* The value of the attribute name (the last one given when repeated),
 * or NULL. */
const char *preq_get(const preq_t *r, const char *name);

/* A request, as the engine sees it: st points into r and into this
 * struct (which must stay put while st is used). */
typedef struct preq_state {
    pstate_t st;
    pcmd_t cmd;
    const char *state;                 /* protocol_state as sent: "RCPT" */
    struct sockaddr_storage peer, local;
} preq_state_t;

/* Map a complete request.  -1 with *why when the request is not a
 * smtpd_access_policy request or its protocol_state is not one moat
 * knows (CONNECT, EHLO, HELO, MAIL, RCPT, VRFY (decided as RCPT), DATA,
 * END-OF-MESSAGE, ETRN).  service becomes st.service. */
int preq_pstate(const preq_t *r, const char *service, preq_state_t *out, const char **why);

/* The action for a verdict of policy_eval_delegated (no "action=" and
 * no line end): a permit is DUNNO (Postfix goes on with its own list; OK
 * would skip its relay check), or the one permit-side action the verdict
 * carries (DISCARD, HOLD, REDIRECT, FILTER, PREPEND of the first header,
 * BCC, in that order of precedence: Postfix takes one action per reply);
 * a reject or defer is its reply "NNN X.Y.Z text" without the engine's
 * "<name>: Class rejected: " prefix (Postfix adds its own) and with any
 * line end turned into a space. */
void policyd_action(const verdict_t *v, buf_t *out);

/* ---- the service (policyd.c) ---- */

struct server;
struct smtpd_svc;

/* A new connection accepted by a listener of a policy service. */
void policyd_start(struct server *srv, struct smtpd_svc *sv, int fd, const struct sockaddr *peer);
/* A generation's policy service was compiled: warn once when its
 * policy_restrictions is empty (every request then gets DUNNO). */
void policyd_service_ready(const struct smtpd_svc *sv);
/* Policy sessions open in this process, and telling them all to end
 * (now: at once; else after the request being answered).  The SMTP
 * session registry does not hold them (server.c's array is of SMTP
 * sessions). */
unsigned policyd_nsessions(void);
void policyd_close_all(bool now);

#endif
