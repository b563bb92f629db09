/*
 * config: Postfix-syntax configuration (main.cf + master.cf), the
 * parameter registry, and per-service resolved parameter sets.
 *
 * Every parameter is declared once, in params.def, with its type, default,
 * bounds, flags and a one-line description; parsing, validation,
 * `moat config show` and docs/configuration.md all come from that table.
 * Code reads values by id (PARAM_smtpd_timeout): an array index, no
 * string lookup on the hot path.
 *
 * A config_t is immutable once loaded; a reload builds a new one and
 * swaps it in (sessions keep a reference to the one they started with).
 */
#ifndef MOAT_CONFIG_CONFIG_H
#define MOAT_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef enum {
    PT_STR,   /* free text, $name-expanded */
    PT_INT,   /* integer within [min, max] */
    PT_BOOL,  /* yes/no (also true/false, 1/0) */
    PT_TIME,  /* number + optional unit s m h d w; a bare number takes the default's unit; value in seconds */
    PT_LIST,  /* list separated by commas and/or white space; { } groups keep spaces */
} param_type;

/* flags */
#define PF_IMPL 0x01    /* moat implements it */
#define PF_IGNORED 0x02 /* a Postfix parameter for parts moat does not have: accepted, listed once at start-up */
#define PF_PENDING 0x04 /* affects filtering but moat does not implement it yet: a non-default value is an error */
#define PF_MOAT 0x08    /* moat's own name, not a Postfix parameter */

typedef enum {
#define P(name, type, def, min, max, flags, desc) PARAM_##name,
#include "config/params.def"
#undef P
    PARAM__COUNT
} param_id;

typedef struct params params_t;   /* resolved values: main.cf, or main.cf + a service's -o */

const char *param_name(param_id id);
const char *param_str(const params_t *p, param_id id);     /* expanded text */
long long param_int(const params_t *p, param_id id);       /* PT_INT, PT_TIME (seconds), PT_BOOL (0/1) */
bool param_bool(const params_t *p, param_id id);
/* Items of a PT_LIST (or any) value split on commas/white space, { } groups
 * unwrapped; the array lives as long as p. */
size_t param_list(const params_t *p, param_id id, const char *const **items);
/* Was it given in main.cf or by -o (not a default)? */
bool param_is_set(const params_t *p, param_id id);

typedef struct service {
    char *name;       /* first master.cf field as written: "smtp", "127.0.0.1:10026" */
    char *host;       /* NULL: every address of inet_interfaces */
    char *port;       /* numeric port, as text */
    int maxproc;      /* 0: no per-service session cap ("-" in master.cf) */
    params_t *params; /* main.cf with this service's -o overrides applied */
    char *file;       /* where it was declared, for messages */
    int line;
    /* Added with the policy server: what the service runs (master.cf's
     * command field of an inet service). */
    enum { SK_SMTPD, SK_POLICY } kind;   /* smtpd(8) sessions, or Postfix policy requests (smtp/policyd.h) */
} service_t;

typedef struct config config_t;

/* Load DIR/main.cf and DIR/master.cf, or the embedded default when dir is
 * NULL.  On any error returns NULL and appends "file:line: message\n" lines
 * to err.  Warnings ("file:line: warning: ...") are appended to warn (may
 * be NULL) and do not fail the load. */
config_t *config_load(const char *dir, buf_t *err, buf_t *warn);
/* Another owner of the same configuration (the server's generation and
 * the queue manager share one load); config_free drops one reference and
 * frees with the last.  Loop thread only. */
config_t *config_ref(config_t *cfg);
void config_free(config_t **cfg);

const params_t *config_main(const config_t *cfg);
size_t config_nservices(const config_t *cfg);
const service_t *config_service(const config_t *cfg, size_t i);
/* "This is me" for the SMTP client's loop detection: the address of every
 * smtpd service as "host:port", "[v6]:port" or "*:port" (any local
 * address), malloc'd, in a malloc'd array of *n; free with
 * config_listen_free. */
char **config_listen_addrs(const config_t *cfg, size_t *n);
void config_listen_free(char **list, size_t n);
/* Postfix parameters that were set but do not apply to moat (PF_IGNORED),
 * as "name, name, ..."; "" when none. */
const char *config_ignored(const config_t *cfg);

/* `moat config show`: like postconf.  flags: CONFIG_SHOW_NONDEFAULT (-n),
 * CONFIG_SHOW_DEFAULTS (-d), CONFIG_SHOW_EXPAND (-x).  names NULL: all.
 * Unknown names produce "moat: warning: NAME: unknown parameter" in err.
 * Returns the number of unknown names. */
#define CONFIG_SHOW_NONDEFAULT 1
#define CONFIG_SHOW_DEFAULTS 2
#define CONFIG_SHOW_EXPAND 4
int config_show(const config_t *cfg, int flags, char *const *names, int nnames, buf_t *out, buf_t *err);

/* The registry itself, for docs generation: `moat config doc`. */
void config_doc(buf_t *out);

/* --- Added with the config module (declarations below the original ones) --- */

/* Flag: the value is a template expanded later with per-message names
 * ($rbl_code, $home ...), so it is kept as written, never expanded at load. */
#define PF_RAW 0x10

/* config_show flag: `moat config show -M`, the master.cf services moat runs,
 * one line each like `postconf -M`. */
#define CONFIG_SHOW_MASTER 8

/* Load from text instead of a directory (tests, the fuzzer).  Messages
 * name "<text>/main.cf:N"; master_cf NULL behaves like a missing master.cf.
 * Relative paths resolve against the current directory. */
config_t *config_load_text(const char *main_cf, const char *master_cf, buf_t *err, buf_t *warn);

/* master.cf lines moat does not run (unix/fifo/pass services, inet services
 * with commands other than smtpd), as "name/type (command), ..."; "" when none. */
const char *config_ignored_services(const config_t *cfg);

/* Where the value came from (main.cf or a master.cf -o), for traces that
 * name config file:line.  false (and *file NULL, *line 0) for a default. */
bool param_origin(const params_t *p, param_id id, const char **file, int *line);
/* Append "file:line: " where id was set to err (nothing for a default),
 * to prefix a message about it. */
void param_where(const params_t *p, param_id id, buf_t *err);
/* Each line of msgs (the last may lack its newline) to err, prefixed as
 * param_where does. */
void param_where_lines(const params_t *p, param_id id, const char *msgs, buf_t *err);

/* --- Added with the restriction engine --- */

/* A user-defined parameter visible in p (a name the registry does not
 * know, such as a restriction class listed in smtpd_restriction_classes),
 * expanded; NULL when it is not set.  *file and *line (either may be NULL)
 * say where it was set. */
const char *param_user(const params_t *p, const char *name, const char **file, int *line);

/* --- Added with the queue manager: delivery transports --- */

/* What a transport runs (master.cf's command field for a "unix" service). */
typedef enum {
    TK_SMTP,     /* smtp(8): the SMTP client (smtp, relay, content filters) */
    TK_LMTP,     /* lmtp(8): the same client speaking LMTP */
    TK_LOCAL,    /* local(8): moat's Maildir delivery */
    TK_DISCARD,  /* discard(8): drop, logged as sent */
    TK_ERROR,    /* error(8): bounce with the next-hop text as the reason */
    TK_RETRY,    /* retry(8): defer with the next-hop text as the reason */
} transport_kind;

typedef struct transport {
    const char *name;        /* "smtp", "relay", "scan" */
    transport_kind kind;
    int maxproc;             /* deliveries in flight at once for this transport:
                              * master.cf maxproc, default_process_limit for "-"
                              * and for the built-ins */
    const params_t *params;  /* main.cf + this transport's -o overrides */
    /* transport_limit(t, "destination_concurrency_limit" / "destination_
     * recipient_limit", ...), computed once at load (at least 1) */
    int concurrency_limit;
    int recipient_limit;
    const char *file;        /* where it was declared; NULL for a built-in */
    int line;
} transport_t;

/* A transport by name: a master.cf "unix" service whose command is smtp,
 * lmtp, local, discard, error or retry, or one of the built-ins that
 * Postfix's stock master.cf declares (smtp, relay, lmtp, local, discard,
 * error, retry) when master.cf does not.  NULL: no such transport. */
const transport_t *config_transport(const config_t *cfg, const char *name);

/* A per-transport limit as Postfix names it: "<transport>_<suffix>"
 * ("relay_destination_concurrency_limit", "scan_destination_recipient_limit"),
 * from t->params (main.cf or the transport's -o); when that name is not
 * set anywhere, the value of fallback (default_destination_concurrency_limit
 * ...).  Works for registry names (smtp_, relay_, lmtp_, local_ ...) and for
 * user-defined transports alike. */
long long transport_limit(const transport_t *t, const char *suffix, param_id fallback);

#endif
