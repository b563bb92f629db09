/*
 * restrict: the restriction engine (see restrict.h).  A configuration's
 * restriction parameters and smtpd_restriction_classes compile once into
 * arrays of steps; policy_eval walks them for one SMTP command with
 * Postfix's semantics (smtpd_check.c is the reference for the order of
 * things, the reply texts and the reply classes; its regression data in
 * shared/testdata/postfix/smtpd/ is the oracle).
 *
 * Owns: the compiled lists, every table they name (opened once per policy,
 * shared by equal specs), a cache of the restriction lists that access
 * tables return as results (compiled on first use, then reused), and one
 * lookup scratch buffer; also mynetworks (an addrlist: tables, files, or
 * what mynetworks_style computed), the inet_interfaces addresses and the
 * smtpd_forbidden_commands list the session asks about; and where mail may
 * go: mydestination and relay_domains (domlists, the router's matching
 * too), relay_recipient_maps, permit_mx_backup_networks; and the TLS and
 * SASL restrictions' tables, relay_clientcerts and smtpd_sender_login_maps
 * (they read what the session says of its TLS session and login in the
 * pstate_t; nothing here touches TLS itself).  A policy is used by one
 * thread at a time.
 *
 * check_policy_service asks a policy server (policysvc.h) through the
 * session's memo, as DNS steps do: the request text is part of the memo
 * key, the answer is an access(5) result.  The services are shared per
 * endpoint and settings across policies (policysvc_open).
 *
 * Never: permit on a failure (a table that fails, a result that does not
 * parse, too deep a recursion all answer 4xx), parse restriction names
 * per evaluation (except the first time a table returns a new list), or
 * allocate per step (replies go into the caller's reused verdict buffers;
 * deferred replies live in fixed arrays on the stack).
 */
#include "policy/restrict.h"

#include "core/log.h"
#include "core/util.h"
#include "policy/access.h"
#include "policy/action.h"
#include "policy/addrlist.h"
#include "policy/dnsbl.h"
#include "policy/domlist.h"
#include "policy/netlist.h"
#include "policy/anvil.h"
#include "policy/greylist.h"
#include "policy/spfcheck.h"
#include "policy/policysvc.h"
#include "policy/restrict-private.h"
#include "policy/sstep.h"
#include "policy/unverified.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECURSION_LIMIT 100      /* Postfix's bound on table-result nesting */
#define REPLY_MAX 510            /* RFC 5321 reply line, as Postfix truncates */
#define RESULT_CACHE_MAX 1024    /* distinct table results compiled and kept */
#define KEY_MAX 1024

typedef enum {
    R_PERMIT, R_REJECT, R_DEFER, R_DEFER_IF_PERMIT, R_DEFER_IF_REJECT, R_WARN_IF_REJECT, R_SLEEP,
    R_PERMIT_MYNETWORKS, R_PERMIT_SASL, R_PERMIT_AUTH_DEST, R_REJECT_UNAUTH_DEST, R_DEFER_UNAUTH_DEST,
    R_REJECT_UNAUTH_PIPELINING, R_REJECT_NON_FQDN_HELO, R_REJECT_INVALID_HELO, R_PERMIT_NAKED_IP,
    R_REJECT_NON_FQDN_SENDER, R_REJECT_NON_FQDN_RCPT, R_REJECT_MULTI_RCPT_BOUNCE,
    R_CHECK_CLIENT, R_CHECK_REVERSE_CLIENT, R_CHECK_HELO, R_CHECK_SENDER, R_CHECK_RCPT, R_CHECK_ETRN,
    R_TABLE,   /* a bare type:table: the check its list implies (check_<class>_access) */
    R_CLASS,   /* a smtpd_restriction_classes name */
    R_NONE,    /* "no implied check" (data and end-of-data lists) */
    /* Added with the remaining non-DNS restrictions: */
    R_PERMIT_INET_IF, R_REJECT_UNLISTED_RCPT, R_REJECT_UNLISTED_SENDER,
    /* Added with relay delivery: */
    R_CHECK_RELAY_DOMAINS,
    /* Added with the DNS issue (every DNS step between R_RBL_CLIENT and
     * R_DNS_ACCESS: policy_prefetch walks that range): */
    R_RBL_CLIENT, R_DNSWL_CLIENT, R_RHSBL_CLIENT, R_RHSBL_REVERSE, R_RHSBL_HELO, R_RHSBL_SENDER, R_RHSBL_RCPT,
    R_RHSWL_CLIENT, R_MAPS_RBL, R_DNSBL_SCORE,
    R_UNKNOWN_CLIENT, R_UNKNOWN_REVERSE, R_UNKNOWN_FORWARD, R_UNKNOWN_HELO, R_UNKNOWN_SENDER_DOMAIN,
    R_UNKNOWN_RCPT_DOMAIN, R_UNKNOWN_ADDRESS,
    R_MX_BACKUP,    /* permit_mx_backup (added with relay delivery) */
    R_DNS_ACCESS,   /* check_<target>_{a,mx,ns}_access: arg = target * 3 + which */
    /* Added with the policy client (not prefetched: its request needs the
     * whole command's state): */
    R_POLICY_SERVICE,
    /* Added with the state issue (sstep.h; not in table results): */
    R_GREYLIST, R_UNVERIFIED_SENDER, R_UNVERIFIED_RCPT, R_KNOWN_CORRESPONDENT,
    /* Added with the TLS issue: client certificates, SASL logins, TLS. */
    R_PERMIT_TLS_CLIENTCERTS, R_PERMIT_TLS_ALL, R_CHECK_CCERT, R_CHECK_SASL, R_REJECT_PLAINTEXT,
    R_LOGIN_MISMATCH, R_AUTH_LOGIN_MISMATCH, R_KNOWN_LOGIN_MISMATCH, R_UNAUTH_LOGIN_MISMATCH,
    /* Added with the SPF issue (an sstep.h step that needs the memo, not the store): */
    R_CHECK_SPF,
} rkind_t;

/* check_<target>_<which>_access */
enum { DT_CLIENT, DT_REVERSE, DT_HELO, DT_SENDER, DT_RCPT };
enum { DW_A, DW_MX, DW_NS };

enum { A_NONE, A_TABLE, A_NUMBER, A_WORD, A_POLICY };

typedef struct rdef {
    const char *name;
    rkind_t kind;
    int arg;
    const char *issue;   /* refused at compile time: "comes with the ISSUE issue" */
} rdef_t;

static const rdef_t rdefs[] = {
    {"permit", R_PERMIT, A_NONE, NULL},
    {"reject", R_REJECT, A_NONE, NULL},
    {"defer", R_DEFER, A_NONE, NULL},
    {"defer_if_permit", R_DEFER_IF_PERMIT, A_NONE, NULL},
    {"defer_if_reject", R_DEFER_IF_REJECT, A_NONE, NULL},
    {"warn_if_reject", R_WARN_IF_REJECT, A_NONE, NULL},
    {"sleep", R_SLEEP, A_NUMBER, NULL},
    {"permit_mynetworks", R_PERMIT_MYNETWORKS, A_NONE, NULL},
    {"permit_sasl_authenticated", R_PERMIT_SASL, A_NONE, NULL},
    {"permit_auth_destination", R_PERMIT_AUTH_DEST, A_NONE, NULL},
    {"reject_unauth_destination", R_REJECT_UNAUTH_DEST, A_NONE, NULL},
    {"defer_unauth_destination", R_DEFER_UNAUTH_DEST, A_NONE, NULL},
    {"reject_unauth_pipelining", R_REJECT_UNAUTH_PIPELINING, A_NONE, NULL},
    {"reject_non_fqdn_helo_hostname", R_REJECT_NON_FQDN_HELO, A_NONE, NULL},
    {"reject_non_fqdn_hostname", R_REJECT_NON_FQDN_HELO, A_NONE, NULL},
    {"reject_invalid_helo_hostname", R_REJECT_INVALID_HELO, A_NONE, NULL},
    {"reject_invalid_hostname", R_REJECT_INVALID_HELO, A_NONE, NULL},
    {"permit_naked_ip_address", R_PERMIT_NAKED_IP, A_NONE, NULL},
    {"reject_non_fqdn_sender", R_REJECT_NON_FQDN_SENDER, A_NONE, NULL},
    {"reject_non_fqdn_recipient", R_REJECT_NON_FQDN_RCPT, A_NONE, NULL},
    {"reject_multi_recipient_bounce", R_REJECT_MULTI_RCPT_BOUNCE, A_NONE, NULL},
    {"check_client_access", R_CHECK_CLIENT, A_TABLE, NULL},
    {"check_reverse_client_hostname_access", R_CHECK_REVERSE_CLIENT, A_TABLE, NULL},
    {"check_helo_access", R_CHECK_HELO, A_TABLE, NULL},
    {"check_sender_access", R_CHECK_SENDER, A_TABLE, NULL},
    {"check_recipient_access", R_CHECK_RCPT, A_TABLE, NULL},
    {"check_etrn_access", R_CHECK_ETRN, A_TABLE, NULL},
    {"reject_rbl_client", R_RBL_CLIENT, A_WORD, NULL},
    {"reject_rbl", R_RBL_CLIENT, A_WORD, NULL},
    {"reject_rhsbl_client", R_RHSBL_CLIENT, A_WORD, NULL},
    {"reject_rhsbl_reverse_client", R_RHSBL_REVERSE, A_WORD, NULL},
    {"reject_rhsbl_helo", R_RHSBL_HELO, A_WORD, NULL},
    {"reject_rhsbl_sender", R_RHSBL_SENDER, A_WORD, NULL},
    {"reject_rhsbl_recipient", R_RHSBL_RCPT, A_WORD, NULL},
    {"permit_dnswl_client", R_DNSWL_CLIENT, A_WORD, NULL},
    {"permit_rhswl_client", R_RHSWL_CLIENT, A_WORD, NULL},
    {"reject_maps_rbl", R_MAPS_RBL, A_NONE, NULL},
    {"reject_dnsbl_score", R_DNSBL_SCORE, A_NONE, NULL},
    {"reject_unknown_client_hostname", R_UNKNOWN_CLIENT, A_NONE, NULL},
    {"reject_unknown_client", R_UNKNOWN_CLIENT, A_NONE, NULL},
    {"reject_unknown_reverse_client_hostname", R_UNKNOWN_REVERSE, A_NONE, NULL},
    {"reject_unknown_forward_client_hostname", R_UNKNOWN_FORWARD, A_NONE, NULL},
    {"reject_unknown_helo_hostname", R_UNKNOWN_HELO, A_NONE, NULL},
    {"reject_unknown_hostname", R_UNKNOWN_HELO, A_NONE, NULL},
    {"reject_unknown_sender_domain", R_UNKNOWN_SENDER_DOMAIN, A_NONE, NULL},
    {"reject_unknown_recipient_domain", R_UNKNOWN_RCPT_DOMAIN, A_NONE, NULL},
    {"reject_unknown_address", R_UNKNOWN_ADDRESS, A_NONE, NULL},
    {"check_client_a_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_client_mx_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_client_ns_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_reverse_client_a_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_reverse_client_mx_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_reverse_client_ns_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_helo_a_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_helo_mx_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_helo_ns_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_sender_a_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_sender_mx_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_sender_ns_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_recipient_a_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_recipient_mx_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"check_recipient_ns_access", R_DNS_ACCESS, A_TABLE, NULL},
    {"permit_mx_backup", R_MX_BACKUP, A_NONE, NULL},
    /* Removed in Postfix 3.9; kept with its older semantics (see check_relay_domains()). */
    {"check_relay_domains", R_CHECK_RELAY_DOMAINS, A_NONE, NULL},
    /* Added with the policy client. */
    {"check_policy_service", R_POLICY_SERVICE, A_POLICY, NULL},
    /* Added with the state issue. */
    {"check_greylist", R_GREYLIST, A_NONE, NULL},
    {"reject_unverified_sender", R_UNVERIFIED_SENDER, A_NONE, NULL},
    {"reject_unverified_recipient", R_UNVERIFIED_RCPT, A_NONE, NULL},
    {"permit_known_correspondent", R_KNOWN_CORRESPONDENT, A_NONE, NULL},
    {"check_spf", R_CHECK_SPF, A_NONE, NULL},
    /* Added with the TLS issue. */
    {"permit_tls_clientcerts", R_PERMIT_TLS_CLIENTCERTS, A_NONE, NULL},
    {"permit_tls_all_clientcerts", R_PERMIT_TLS_ALL, A_NONE, NULL},
    {"check_ccert_access", R_CHECK_CCERT, A_TABLE, NULL},
    {"check_sasl_access", R_CHECK_SASL, A_TABLE, NULL},
    {"reject_plaintext_session", R_REJECT_PLAINTEXT, A_NONE, NULL},
    {"reject_sender_login_mismatch", R_LOGIN_MISMATCH, A_NONE, NULL},
    {"reject_authenticated_sender_login_mismatch", R_AUTH_LOGIN_MISMATCH, A_NONE, NULL},
    {"reject_known_sender_login_mismatch", R_KNOWN_LOGIN_MISMATCH, A_NONE, NULL},
    {"reject_unauthenticated_sender_login_mismatch", R_UNAUTH_LOGIN_MISMATCH, A_NONE, NULL},
    /* mydestination domains: every local part exists; relay_domains:
     * relay_recipient_maps (see unlisted()). */
    {"reject_unlisted_recipient", R_REJECT_UNLISTED_RCPT, A_NONE, NULL},
    {"check_recipient_maps", R_REJECT_UNLISTED_RCPT, A_NONE, NULL},
    {"reject_unlisted_sender", R_REJECT_UNLISTED_SENDER, A_NONE, NULL},
    {"permit_inet_interfaces", R_PERMIT_INET_IF, A_NONE, NULL},
};

typedef struct step {
    rkind_t kind;
    int arg;            /* sleep seconds; class index */
    map_t *map;         /* owned by pol->tables */
    bool pattern;       /* regexp/pcre/cidr: only the full key is looked up */
    dnsbl_site_t *site; /* DNS list steps: the list and its reply filter */
    char *text;         /* "check_sender_access hash:/etc/moat/x": rules and traces */
    policysvc_t *psvc;  /* check_policy_service: the service (one reference) */
} step_t;

typedef struct rlist {
    step_t *steps;
    size_t n;
} rlist_t;

typedef struct rclassdef {
    char *name;
    rlist_t list;
    int mark;           /* cycle check: 0 new, 1 on the path, 2 done */
} rclassdef_t;

typedef struct ptable {
    char *spec;
    map_t *map;
} ptable_t;

typedef struct cached {
    char *text;
    rlist_t list;
    char *error;        /* the result does not compile: why */
} cached_t;

struct policy {
    rlist_t top[RC__COUNT];
    rclassdef_t *classes;
    size_t nclasses;
    ptable_t *tables;
    size_t ntables;
    addrlist_t *mynetworks;   /* mynetworks, or what mynetworks_style computed */
    char **mydest;
    size_t nmydest;
    bool delay_reject, parent_match, permit_log_all, relay_first;
    char **permit_log;
    size_t npermit_log;
    int map_reject_code, map_defer_code, reject_code, defer_code, relay_code, non_fqdn_code,
        bad_name_code, mul_rcpt_code, pipelining_code;
    char *null_key, *delim, *footer;
    cached_t *cache;
    size_t ncache;
    cached_t overflow;  /* a result compiled when the cache is full, kept until the next one */
    buf_t value;        /* lookup scratch */
    /* Added with the remaining non-DNS restrictions: */
    bool inet_all;          /* inet_interfaces = all: the connection's local address is ours */
    netlist_t *inet_if;     /* inet_interfaces addresses (loopback-only: 127.0.0.1, ::1); with inet_all,
                               the interface addresses, for callers that know no local address */
    bool uses_inet_if;      /* a list names permit_inet_interfaces or permit_mx_backup */
    const char *inet_if_user; /* the first of them, for messages */
    char **forbid_words;    /* smtpd_forbidden_commands words */
    size_t nforbid_words;
    map_t **forbid_maps;    /* ... and tables */
    size_t nforbid_maps;
    /* Added with the DNS issue: */
    dnsbl_site_t *maps_rbl;   /* maps_rbl_domains (reject_maps_rbl) */
    size_t nmaps_rbl;
    dnsbl_site_t *score;      /* dnsbl_sites (reject_dnsbl_score) */
    size_t nscore;
    int score_threshold;
    map_t **rbl_maps;         /* rbl_reply_maps (the maps are in pol->tables) */
    size_t nrbl_maps;
    char *rbl_reply;          /* default_rbl_reply, as written */
    int maps_rbl_code, unknown_addr_code, unknown_client_code, unknown_host_code;
    bool tf_defer, addr_tf_defer, helo_tf_defer;   /* the *_tempfail_action is "defer" (else defer_if_permit) */
    dnsbl_health_t *health;
    verdict_t scratch;        /* policy_prefetch's throw-away verdict */
    /* Added with relay delivery: */
    domlist_t *mydest_list;   /* mydestination, as Postfix's resolve_local matches it */
    domlist_t *relay;         /* relay_domains */
    map_t **relay_rcpt;       /* relay_recipient_maps (the maps are in pol->tables) */
    size_t nrelay_rcpt;
    int relay_rcpt_code;      /* unknown_relay_recipient_reject_code */
    bool unlisted_rcpt;       /* smtpd_reject_unlisted_recipient */
    bool unlisted_sender;     /* smtpd_reject_unlisted_sender */
    bool no_unknown_rcpt;     /* receive_override_options = no_unknown_recipient_checks */
    addrlist_t *mx_networks;  /* permit_mx_backup_networks; NULL when empty */
    char *myhostname;
    buf_t why;                /* domain list scratch */
    /* Added with the policy client: */
    policysvc_opts_t psvc_defaults;  /* the smtpd_policy_service_* parameters (strings owned below) */
    char *psvc_default_action, *psvc_context;
    char *queue_dir;          /* relative unix: policy endpoints */
    char *compat_level, *mail_version;   /* request attributes */
    bool smtputf8;            /* smtputf8_enable: a policy action must be UTF-8 */
    /* Added with the state issue: */
    const params_t *params;   /* the service's parameters (the state steps read theirs at run time) */
    greylist_t *grey;         /* check_greylist settings (always compiled: cheap when unused) */
    spf_check_t *spf;         /* check_spf's spf_result_actions and headers (the same) */
    anvil_t *anvil;           /* the rate and abuse limits */
    unsigned needs;           /* PN_* of the compiled lists */
    policy_env_t env;
    ss_fx_t *fx;              /* the current evaluation's writes */
    bool corr_record;         /* correspondent_allow_list */
    unsigned corr_ttl;        /* correspondent_expire_time */
    /* Added with the TLS issue: */
    map_t **ccerts;           /* relay_clientcerts (the maps are in pol->tables) */
    size_t nccerts;
    map_t **login_maps;       /* smtpd_sender_login_maps (the maps are in pol->tables) */
    size_t nlogin;
    char *ccerts_broken;      /* relay_clientcerts did not open and no list named a user of it: why */
    char *login_broken;       /* ... smtpd_sender_login_maps */
    bool uses_ccerts, uses_login;   /* a compiled list names permit_tls_*clientcerts / a login mismatch check */
    bool sasl_enable;         /* smtpd_sasl_auth_enable: the SASL restrictions apply only with it (Postfix) */
    int plaintext_code;       /* plaintext_reject_code */
    char *myorigin;           /* the login maps' local-part keys: domains equal to it are local */
};

static const char *const class_names[RC__COUNT] = {"client", "helo", "sender", "relay", "recipient",
                                                    "data", "end_of_data", "etrn", "policy"};
static const param_id class_params[RC__COUNT] = {
    PARAM_smtpd_client_restrictions, PARAM_smtpd_helo_restrictions, PARAM_smtpd_sender_restrictions,
    PARAM_smtpd_relay_restrictions, PARAM_smtpd_recipient_restrictions, PARAM_smtpd_data_restrictions,
    PARAM_smtpd_end_of_data_restrictions, PARAM_smtpd_etrn_restrictions, PARAM_policy_restrictions};

/* ------------------------------------------------------------------ lists */

/* Split a restriction list the way main.cf lists split: commas and/or
 * white space; { } keep what they enclose together, and an item that is
 * one whole { ... } group loses the braces.  One malloc'd block: a
 * NULL-terminated pointer array followed by the item text. */
static char **split_list(const char *s, size_t *count)
{
    size_t len = strlen(s), n = 0;
    for (size_t i = 0; i < len; i++)
        n += s[i] == ',' || s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r';
    n += 2;
    char **items = xmalloc(n * sizeof *items + len + 1);
    char *text = (char *)(items + n);
    memcpy(text, s, len + 1);
    size_t k = 0;
    char *p = text;
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        char *start = p;
        int depth = 0;
        while (*p && (depth > 0 || !(*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))) {
            if (*p == '{')
                depth++;
            else if (*p == '}' && depth > 0)
                depth--;
            p++;
        }
        char *end = p;
        if (*p)
            *p++ = 0;
        if (*start == '{' && end > start + 1 && end[-1] == '}') {
            end[-1] = 0;
            start++;
            while (*start == ' ' || *start == '\t')
                start++;
            str_trim(start);
        }
        if (*start)
            items[k++] = start;
    }
    items[k] = NULL;
    *count = k;
    return items;
}

static void list_free(rlist_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->steps[i].text);
        policysvc_close(&l->steps[i].psvc);
        if (l->steps[i].site) {
            dnsbl_site_free(l->steps[i].site);
            free(l->steps[i].site);
        }
    }
    xfree(&l->steps);
    l->n = 0;
}

static void list_push(rlist_t *l, const step_t *s)
{
    l->steps = xrealloc(l->steps, (l->n + 1) * sizeof *l->steps);
    l->steps[l->n++] = *s;
}

/* ---------------------------------------------------------------- compile */

typedef struct cctx {
    policy_t *pol;
    const char *config_dir;
    const char *pname;     /* the parameter, for messages without a location */
    const char *file;
    int line;
    bool tables_ok;        /* false for lists returned by access tables */
    bool implied_check;    /* a bare table has a check to stand for */
    buf_t *err;
    int errors;
} cctx_t;

static void cmsg(cctx_t *cc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cmsg(cctx_t *cc, const char *fmt, ...)
{
    if (cc->file)
        buf_printf(cc->err, "%s:%d: ", cc->file, cc->line);
    else if (cc->pname)
        buf_printf(cc->err, "%s: ", cc->pname);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(cc->err, fmt, ap);
    va_end(ap);
    buf_putc(cc->err, '\n');
    cc->errors++;
}

static const rdef_t *find_rdef(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(rdefs); i++)
        if (str_ieq(rdefs[i].name, name))
            return &rdefs[i];
    return NULL;
}

static int find_class(const policy_t *pol, const char *name)
{
    for (size_t i = 0; i < pol->nclasses; i++)
        if (strcmp(pol->classes[i].name, name) == 0)
            return (int)i;
    return -1;
}

static bool is_pattern_table(const char *spec)
{
    return str_istarts(spec, "regexp:") || str_istarts(spec, "pcre:") || str_istarts(spec, "cidr:");
}

static map_t *open_table(cctx_t *cc, const char *spec)
{
    policy_t *pol = cc->pol;
    for (size_t i = 0; i < pol->ntables; i++)
        if (strcmp(pol->tables[i].spec, spec) == 0)
            return pol->tables[i].map;
    buf_t why = BUF_INIT;
    map_t *m = map_open(spec, cc->config_dir, &why);
    if (!m) {
        /* The table's own messages name its file:line; say which setting
         * named the table when the message does not. */
        const char *p = buf_cstr(&why);
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            if (cc->file)
                buf_printf(cc->err, "%s:%d: ", cc->file, cc->line);
            buf_append(cc->err, p, n);
            buf_putc(cc->err, '\n');
            p += n + (nl ? 1 : 0);
        }
        if (!why.len)
            cmsg(cc, "%s: cannot open table", spec);
        cc->errors++;
        buf_free(&why);
        return NULL;
    }
    buf_free(&why);
    pol->tables = xrealloc(pol->tables, (pol->ntables + 1) * sizeof *pol->tables);
    pol->tables[pol->ntables].spec = xstrdup(spec);
    pol->tables[pol->ntables].map = m;
    pol->ntables++;
    return m;
}

/* check_policy_service ENDPOINT, or { ENDPOINT, name=value, ... } (the
 * braces are gone by now: split_list unwraps a whole group). */
static int compile_policy_service(cctx_t *cc, const char *arg, step_t *st, buf_t *text)
{
    size_t n;
    char **items = split_list(arg, &n);
    buf_t why = BUF_INIT;
    st->psvc = policysvc_open((const char *const *)items, n, &cc->pol->psvc_defaults, cc->pol->queue_dir, &why);
    free(items);
    if (!st->psvc) {
        cmsg(cc, "check_policy_service %s: %s", arg, buf_cstr(&why));
        buf_free(&why);
        return -1;
    }
    buf_free(&why);
    /* The default action is an access(5) result like any answer: one that
     * could never apply is a start-up error, not a surprise at run time. */
    const char *def = policysvc_settings(st->psvc)->default_action;
    action_t a;
    action_parse(def, &a);
    if (a.kind == ACT_INVALID) {
        cmsg(cc, "check_policy_service %s: default_action \"%s\": %s", arg, def, a.text);
        policysvc_close(&st->psvc);
        return -1;
    }
    if (n > 1)
        buf_printf(text, "check_policy_service { %s }", arg);
    else
        buf_printf(text, "check_policy_service %s", arg);
    return 0;
}

static void compile_items(cctx_t *cc, const char *const *items, size_t n, rlist_t *out)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = items[i];
        step_t st = {0};
        buf_t text = BUF_INIT;
        if (strchr(name, ':')) {
            if (!cc->tables_ok) {
                cmsg(cc, "%s: a table inside an access table result (name a restriction class instead)", name);
                continue;
            }
            if (!cc->implied_check) {
                cmsg(cc, "%s: a table in %s needs one of check_client_access, check_helo_access, "
                         "check_sender_access, check_recipient_access before it", name, cc->pname);
                continue;
            }
            st.kind = R_TABLE;
            if (!(st.map = open_table(cc, name)))
                continue;
            st.pattern = is_pattern_table(name);
            st.text = xstrdup(name);
            list_push(out, &st);
            continue;
        }
        const rdef_t *d = find_rdef(name);
        if (d) {
            const char *arg = NULL;
            if (d->arg != A_NONE) {
                if (i + 1 >= n) {
                    cmsg(cc, "%s: missing %s", d->name,
                         d->arg == A_TABLE ? "table (type:name)" : d->arg == A_NUMBER ? "number" : "argument");
                    continue;
                }
                arg = items[++i];
            }
            if (d->issue) {
                cmsg(cc, "%s: not supported by this version of moat (comes with the %s issue)", d->name, d->issue);
                continue;
            }
            if (d->kind >= R_GREYLIST && d->kind <= R_KNOWN_CORRESPONDENT) {
                /* the owner opens the store for what the lists name */
                if (!cc->tables_ok) {
                    cmsg(cc, "%s: a state restriction inside an access table result (name a restriction class "
                             "instead)", d->name);
                    continue;
                }
                cc->pol->needs |= PN_STORE;
                if (d->kind == R_UNVERIFIED_SENDER || d->kind == R_UNVERIFIED_RCPT)
                    cc->pol->needs |= PN_VERIFY;
            }
            st.kind = d->kind;
            if (d->kind == R_PERMIT_TLS_CLIENTCERTS || d->kind == R_PERMIT_TLS_ALL)
                cc->pol->uses_ccerts = true;
            if (d->kind >= R_LOGIN_MISMATCH && d->kind <= R_UNAUTH_LOGIN_MISMATCH)
                cc->pol->uses_login = true;
            if ((d->kind == R_PERMIT_INET_IF || d->kind == R_MX_BACKUP) && !cc->pol->uses_inet_if) {
                cc->pol->uses_inet_if = true;
                cc->pol->inet_if_user = d->name;
            }
            if (d->arg == A_TABLE) {
                if (!strchr(arg, ':')) {
                    cmsg(cc, "%s: bad argument \"%s\": need type:table", d->name, arg);
                    continue;
                }
                if (!cc->tables_ok) {
                    cmsg(cc, "%s %s: a table inside an access table result (name a restriction class instead)",
                         d->name, arg);
                    continue;
                }
                if (!(st.map = open_table(cc, arg)))
                    continue;
                st.pattern = is_pattern_table(arg);
            } else if (d->arg == A_NUMBER) {
                if (!str_all_digits(arg) || strlen(arg) > 4) {
                    cmsg(cc, "%s: bad argument \"%s\": need a number of seconds (0-9999)", d->name, arg);
                    continue;
                }
                st.arg = atoi(arg);
            } else if (d->arg == A_POLICY) {
                /* Not in a list a table returns: that compiles at run time,
                 * and opening a service may look a host name up. */
                if (!cc->tables_ok) {
                    cmsg(cc, "%s %s: a policy service inside an access table result (name a restriction class "
                             "instead)", d->name, arg);
                    continue;
                }
                if (compile_policy_service(cc, arg, &st, &text) != 0)
                    continue;
            } else if (d->arg == A_WORD) {
                /* reject_rbl_client zone[=filter] and friends */
                buf_t why = BUF_INIT;
                st.site = xcalloc(1, sizeof *st.site);
                if (dnsbl_site_parse(arg, false, st.site, &why) != 0) {
                    cmsg(cc, "%s %s: %s", d->name, arg, buf_cstr(&why));
                    buf_free(&why);
                    free(st.site);
                    continue;
                }
                buf_free(&why);
                if (d->kind != R_RBL_CLIENT && d->kind != R_DNSWL_CLIENT)   /* a domain list: its test point is invalid.ZONE */
                    dnsbl_health_domain_list(cc->pol->health, st.site->zone);
            }
            if (d->kind == R_DNS_ACCESS) {
                /* check_<target>_<a|mx|ns>_access: the name says both */
                static const char *const targets[] = {"check_client_", "check_reverse_client_", "check_helo_",
                                                      "check_sender_", "check_recipient_"};
                for (int t = 0; t < (int)ARRAY_LEN(targets); t++) {
                    size_t tl = strlen(targets[t]);
                    if (strncmp(d->name, targets[t], tl) == 0 && strchr("amn", d->name[tl]) &&
                        d->name[tl + (d->name[tl] == 'a' ? 1 : 2)] == '_')
                        st.arg = t * 3 + (d->name[tl] == 'a' ? DW_A : d->name[tl] == 'm' ? DW_MX : DW_NS);
                }
            }
            if (d->kind == R_DNSBL_SCORE && !cc->pol->nscore) {
                cmsg(cc, "reject_dnsbl_score: dnsbl_sites is empty");
                continue;
            }
            if (d->kind == R_MAPS_RBL && !cc->pol->nmaps_rbl) {
                cmsg(cc, "reject_maps_rbl: maps_rbl_domains is empty");
                continue;
            }
            if (!text.len) {
                buf_puts(&text, d->name);
                if (arg)
                    buf_printf(&text, " %s", arg);
            }
            st.text = buf_steal(&text);
            list_push(out, &st);
            continue;
        }
        int ci = find_class(cc->pol, name);
        if (ci >= 0) {
            st.kind = R_CLASS;
            st.arg = ci;
            st.text = xstrdup(name);
            list_push(out, &st);
            continue;
        }
        cmsg(cc, "unknown restriction \"%s\"", name);
    }
}

/* Cycle check over class references: a class that reaches itself would
 * recurse without end. */
static bool class_cycle(policy_t *pol, int ci, buf_t *path)
{
    rclassdef_t *c = &pol->classes[ci];
    if (c->mark == 2)
        return false;
    size_t mark = path->len;
    buf_printf(path, "%s%s", path->len ? " -> " : "", c->name);
    if (c->mark == 1)
        return true;
    c->mark = 1;
    for (size_t i = 0; i < c->list.n; i++)
        if (c->list.steps[i].kind == R_CLASS && class_cycle(pol, c->list.steps[i].arg, path))
            return true;
    c->mark = 2;
    buf_truncate(path, mark);
    return false;
}

/* Does the list end unauthorized destinations?  (Postfix's has_required:
 * a step right after warn_if_reject does not count.) */
static bool has_relay_guard(const policy_t *pol, const rlist_t *l, int depth)
{
    if (depth > 32)
        return false;
    for (size_t i = 0; i < l->n; i++) {
        const step_t *s = &l->steps[i];
        if (s->kind == R_WARN_IF_REJECT) {
            i++;
            continue;
        }
        if (s->kind == R_REJECT_UNAUTH_DEST || s->kind == R_DEFER_UNAUTH_DEST || s->kind == R_REJECT ||
            s->kind == R_CHECK_RELAY_DOMAINS)
            return true;
        if (s->kind == R_CLASS && has_relay_guard(pol, &pol->classes[s->arg].list, depth + 1))
            return true;
    }
    return false;
}

/* mynetworks as written; or, when only mynetworks_style is set, computed
 * from the machine's interfaces as Postfix does.  Neither set: moat's
 * default (loopback), which the registry supplies. */
static int compile_mynetworks(policy_t *pol, const params_t *p, const char *config_dir, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_mynetworks, &items);
    buf_t why = BUF_INIT, computed = BUF_INIT;
    param_id origin = PARAM_mynetworks;
    char **split = NULL;
    if (!param_is_set(p, PARAM_mynetworks) && param_is_set(p, PARAM_mynetworks_style)) {
        origin = PARAM_mynetworks_style;
        if (addrlist_local_items(param_str(p, PARAM_mynetworks_style), &computed, &why) != 0) {
            param_where_lines(p, origin, buf_cstr(&why), err);
            buf_free(&why);
            buf_free(&computed);
            return 1;
        }
        split = split_list(buf_cstr(&computed), &n);
        items = (const char *const *)split;
    }
    pol->mynetworks = addrlist_new("mynetworks", items, n, config_dir, &why);
    int errors = pol->mynetworks ? 0 : 1;
    if (!pol->mynetworks)
        param_where_lines(p, origin, buf_cstr(&why), err);
    free(split);
    buf_free(&why);
    buf_free(&computed);
    return errors;
}

/* inet_interfaces for permit_inet_interfaces: "all" (the connection's own
 * address; the interface addresses when there is no connection, as in
 * moat check), "loopback-only", or addresses. */
static int compile_inet_interfaces(policy_t *pol, const params_t *p, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_inet_interfaces, &items);
    buf_t why = BUF_INIT, local = BUF_INIT;
    char **split = NULL;
    static const char *const loopback[] = {"127.0.0.1", "[::1]"};
    if (n == 1 && str_ieq(items[0], "all")) {
        pol->inet_all = true;
        if (addrlist_local_items("host", &local, &why) != 0) {
            param_where_lines(p, PARAM_inet_interfaces, buf_cstr(&why), err);
            buf_free(&why);
            buf_free(&local);
            return 1;
        }
        split = split_list(buf_cstr(&local), &n);
        items = (const char *const *)split;
    } else if (n == 1 && str_ieq(items[0], "loopback-only")) {
        items = loopback;
        n = ARRAY_LEN(loopback);
    }
    pol->inet_if = netlist_new("inet_interfaces", items, n, &why);
    int errors = 0;
    if (!pol->inet_if) {
        param_where(p, PARAM_inet_interfaces, err);
        buf_printf(err, "%s (%s needs addresses)\n", buf_cstr(&why), pol->inet_if_user);
        errors = 1;
    }
    free(split);
    buf_free(&why);
    buf_free(&local);
    return errors;
}

static int compile_forbidden(policy_t *pol, const params_t *p, const char *config_dir, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_smtpd_forbidden_commands, &items);
    cctx_t cc = {.pol = pol, .config_dir = config_dir, .tables_ok = true, .err = err,
                 .pname = "smtpd_forbidden_commands"};
    if (!param_origin(p, PARAM_smtpd_forbidden_commands, &cc.file, &cc.line))
        cc.file = NULL;
    pol->forbid_words = xcalloc(n ? n : 1, sizeof *pol->forbid_words);
    pol->forbid_maps = xcalloc(n ? n : 1, sizeof *pol->forbid_maps);
    for (size_t i = 0; i < n; i++) {
        if (strchr(items[i], ':')) {
            map_t *m = open_table(&cc, items[i]);
            if (m)
                pol->forbid_maps[pol->nforbid_maps++] = m;
        } else {
            pol->forbid_words[pol->nforbid_words++] = xstrdup(items[i]);
        }
    }
    return cc.errors;
}

/* One of the TLS issue's table lists (relay_clientcerts,
 * smtpd_sender_login_maps), opened as the lists that use it need.  A list
 * that does not open is an error when a compiled restriction uses it;
 * otherwise the reason is kept (*broken) and only a restriction list an
 * access table returns at run time can meet it (451 4.3.5, as a
 * configuration error), so that an unused parameter never stops a
 * configuration from loading (as Postfix, which opens such tables but
 * only complains when a lookup fails). */
static int compile_table_list(policy_t *pol, const params_t *p, param_id id, const char *config_dir, bool used,
                              map_t ***out, size_t *nout, char **broken, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, id, &items);
    *out = xcalloc(n ? n : 1, sizeof **out);
    *nout = 0;
    buf_t why = BUF_INIT;
    cctx_t cc = {.pol = pol, .config_dir = config_dir, .pname = param_name(id), .err = &why};
    if (!param_origin(p, id, &cc.file, &cc.line))
        cc.file = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strchr(items[i], ':')) {
            cmsg(&cc, "%s: \"%s\": need type:table", param_name(id), items[i]);
            continue;
        }
        map_t *m = open_table(&cc, items[i]);
        if (m)
            (*out)[(*nout)++] = m;
    }
    int errors = 0;
    if (cc.errors && used) {
        buf_append(err, why.data ? why.data : "", why.len);
        errors = cc.errors;
    } else if (cc.errors) {
        const char *w = buf_cstr(&why);
        *broken = xstrndup(w, strcspn(w, "\n"));
    }
    buf_free(&why);
    return errors;
}

/* Postfix's is_header(): a name of printable characters other than ':'
 * and white space, then ':' (white space may come before the colon). */
static int tempfail_action(const params_t *p, param_id id, bool *defer, buf_t *err)
{
    const char *v = param_str(p, id);
    if (str_ieq(v, "defer_if_permit")) {
        *defer = false;
    } else if (str_ieq(v, "defer")) {
        *defer = true;
    } else {
        param_where(p, id, err);
        buf_printf(err, "%s: \"%s\": specify defer_if_permit or defer\n", param_name(id), v);
        return 1;
    }
    return 0;
}

static int compile_sites(const params_t *p, param_id id, bool weights, dnsbl_site_t **out, size_t *nout, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, id, &items);
    int errors = 0;
    *out = xcalloc(n ? n : 1, sizeof **out);
    *nout = 0;
    for (size_t i = 0; i < n; i++) {
        buf_t why = BUF_INIT;
        if (dnsbl_site_parse(items[i], weights, &(*out)[*nout], &why) == 0) {
            (*nout)++;
        } else {
            param_where(p, id, err);
            buf_printf(err, "%s: \"%s\": %s\n", param_name(id), items[i], buf_cstr(&why));
            errors++;
        }
        buf_free(&why);
    }
    return errors;
}

/* The DNS lists and texts every DNS restriction shares. */
static int compile_dns(policy_t *pol, const params_t *p, const char *config_dir, buf_t *err)
{
    int errors = 0;
    pol->maps_rbl_code = (int)param_int(p, PARAM_maps_rbl_reject_code);
    pol->unknown_addr_code = (int)param_int(p, PARAM_unknown_address_reject_code);
    pol->unknown_client_code = (int)param_int(p, PARAM_unknown_client_reject_code);
    pol->unknown_host_code = (int)param_int(p, PARAM_unknown_hostname_reject_code);
    pol->score_threshold = (int)param_int(p, PARAM_reject_dnsbl_score);
    pol->rbl_reply = xstrdup(param_str(p, PARAM_default_rbl_reply));
    pol->health = dnsbl_health_new((unsigned)param_int(p, PARAM_dnsbl_health_check_interval));
    errors += tempfail_action(p, PARAM_reject_tempfail_action, &pol->tf_defer, err);
    errors += tempfail_action(p, PARAM_unknown_address_tempfail_action, &pol->addr_tf_defer, err);
    errors += tempfail_action(p, PARAM_unknown_helo_hostname_tempfail_action, &pol->helo_tf_defer, err);
    errors += compile_sites(p, PARAM_maps_rbl_domains, false, &pol->maps_rbl, &pol->nmaps_rbl, err);
    errors += compile_sites(p, PARAM_dnsbl_sites, true, &pol->score, &pol->nscore, err);
    const char *const *items;
    size_t n = param_list(p, PARAM_rbl_reply_maps, &items);
    pol->rbl_maps = xcalloc(n ? n : 1, sizeof *pol->rbl_maps);
    cctx_t cc = {.pol = pol, .config_dir = config_dir, .pname = "rbl_reply_maps", .err = err};
    if (!param_origin(p, PARAM_rbl_reply_maps, &cc.file, &cc.line))
        cc.file = NULL;
    for (size_t i = 0; i < n; i++) {
        map_t *m = open_table(&cc, items[i]);
        if (m)
            pol->rbl_maps[pol->nrbl_maps++] = m;
    }
    verdict_init(&pol->scratch);
    return errors + cc.errors;
}

static bool looks_like_header(const char *s)
{
    const char *p = s;
    while ((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && *p != ':')
        p++;
    if (p == s)
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == ':';
}

bool policy_forbidden_command(policy_t *pol, const char *verb)
{
    if (looks_like_header(verb))
        return true;
    for (size_t i = 0; i < pol->nforbid_words; i++)
        if (str_ieq(pol->forbid_words[i], verb))
            return true;
    for (size_t i = 0; i < pol->nforbid_maps; i++)
        if (map_lookup(pol->forbid_maps[i], verb, &pol->value, NULL) == MAP_FOUND)
            return true;
    return false;
}

static char *domain_norm(const char *d)
{
    char *s = xstrdup(d);
    str_lower(s);
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '.' && s[n - 2] != '.')
        s[n - 1] = 0;
    return s;
}

/* Where mail may go: mydestination (as compiled above, a plain list),
 * relay_domains, relay_recipient_maps, permit_mx_backup_networks, and the
 * switches of the unknown-recipient check. */
static int compile_relay(policy_t *pol, const params_t *p, const char *config_dir, buf_t *err)
{
    int errors = 0;
    buf_t why = BUF_INIT;
    pol->mydest_list = domlist_new("mydestination", (const char *const *)pol->mydest, pol->nmydest, DL_EXACT,
                                   config_dir, &why);
    if (!pol->mydest_list) {
        param_where_lines(p, PARAM_mydestination, buf_cstr(&why), err);
        errors++;
    }
    const char *const *items, *const *styles;
    size_t nstyles = param_list(p, PARAM_parent_domain_matches_subdomains, &styles);
    size_t n = param_list(p, PARAM_relay_domains, &items);
    buf_reset(&why);
    pol->relay = domlist_new("relay_domains", items, n, domlist_parent_style(styles, nstyles, "relay_domains"),
                             config_dir, &why);
    if (!pol->relay) {
        param_where_lines(p, PARAM_relay_domains, buf_cstr(&why), err);
        errors++;
    }
    n = param_list(p, PARAM_permit_mx_backup_networks, &items);
    if (n) {
        buf_reset(&why);
        pol->mx_networks = addrlist_new("permit_mx_backup_networks", items, n, config_dir, &why);
        if (!pol->mx_networks) {
            param_where_lines(p, PARAM_permit_mx_backup_networks, buf_cstr(&why), err);
            errors++;
        }
    }
    buf_free(&why);

    n = param_list(p, PARAM_relay_recipient_maps, &items);
    pol->relay_rcpt = xcalloc(n ? n : 1, sizeof *pol->relay_rcpt);
    cctx_t cc = {.pol = pol, .config_dir = config_dir, .pname = "relay_recipient_maps", .err = err};
    if (!param_origin(p, PARAM_relay_recipient_maps, &cc.file, &cc.line))
        cc.file = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!strchr(items[i], ':')) {
            cmsg(&cc, "relay_recipient_maps: \"%s\": need type:table", items[i]);
            continue;
        }
        map_t *m = open_table(&cc, items[i]);
        if (m)
            pol->relay_rcpt[pol->nrelay_rcpt++] = m;
    }
    errors += cc.errors;
    pol->relay_rcpt_code = (int)param_int(p, PARAM_unknown_relay_recipient_reject_code);
    pol->unlisted_rcpt = param_bool(p, PARAM_smtpd_reject_unlisted_recipient);
    pol->unlisted_sender = param_bool(p, PARAM_smtpd_reject_unlisted_sender);
    n = param_list(p, PARAM_receive_override_options, &items);
    for (size_t i = 0; i < n; i++)
        if (str_ieq(items[i], "no_unknown_recipient_checks"))
            pol->no_unknown_rcpt = true;
    pol->myhostname = xstrdup(param_str(p, PARAM_myhostname));
    return errors;
}

/* What every check_policy_service starts from (the { } form overrides). */
static void compile_policy_defaults(policy_t *pol, const params_t *p)
{
    policysvc_opts_t *o = &pol->psvc_defaults;
    o->timeout = (unsigned)param_int(p, PARAM_smtpd_policy_service_timeout);
    o->max_idle = (unsigned)param_int(p, PARAM_smtpd_policy_service_max_idle);
    o->max_ttl = (unsigned)param_int(p, PARAM_smtpd_policy_service_max_ttl);
    o->try_limit = (unsigned)param_int(p, PARAM_smtpd_policy_service_try_limit);
    o->retry_delay = (unsigned)param_int(p, PARAM_smtpd_policy_service_retry_delay);
    o->request_limit = (unsigned)param_int(p, PARAM_smtpd_policy_service_request_limit);
    o->connection_limit = (unsigned)param_int(p, PARAM_smtpd_policy_service_connection_limit);
    pol->psvc_default_action = xstrdup(param_str(p, PARAM_smtpd_policy_service_default_action));
    pol->psvc_context = xstrdup(param_str(p, PARAM_smtpd_policy_service_policy_context));
    o->default_action = pol->psvc_default_action;
    o->policy_context = pol->psvc_context;
    pol->queue_dir = xstrdup(param_str(p, PARAM_queue_directory));
    pol->compat_level = xstrdup(param_str(p, PARAM_compatibility_level));
    pol->mail_version = xstrdup(param_str(p, PARAM_mail_version));
    pol->smtputf8 = param_bool(p, PARAM_smtputf8_enable);
}

policy_t *policy_new(const params_t *p, const char *config_dir, buf_t *err)
{
    policy_t *pol = xcalloc(1, sizeof *pol);
    int errors = 0;
    const char *file;
    int line;

    pol->delay_reject = param_bool(p, PARAM_smtpd_delay_reject);
    pol->relay_first = param_bool(p, PARAM_smtpd_relay_before_recipient_restrictions);
    pol->map_reject_code = (int)param_int(p, PARAM_access_map_reject_code);
    pol->map_defer_code = (int)param_int(p, PARAM_access_map_defer_code);
    pol->reject_code = (int)param_int(p, PARAM_reject_code);
    pol->defer_code = (int)param_int(p, PARAM_defer_code);
    pol->relay_code = (int)param_int(p, PARAM_relay_domains_reject_code);
    pol->non_fqdn_code = (int)param_int(p, PARAM_non_fqdn_reject_code);
    pol->bad_name_code = (int)param_int(p, PARAM_invalid_hostname_reject_code);
    pol->mul_rcpt_code = (int)param_int(p, PARAM_multi_recipient_bounce_reject_code);
    pol->pipelining_code = (int)param_int(p, PARAM_unauth_pipelining_reject_code);
    pol->null_key = xstrdup(param_str(p, PARAM_smtpd_null_access_lookup_key));
    pol->delim = xstrdup(param_str(p, PARAM_recipient_delimiter));
    pol->footer = xstrdup(param_str(p, PARAM_smtpd_reject_footer));
    pol->sasl_enable = param_bool(p, PARAM_smtpd_sasl_auth_enable);
    pol->plaintext_code = (int)param_int(p, PARAM_plaintext_reject_code);
    pol->myorigin = xstrdup(param_str(p, PARAM_myorigin));

    const char *const *items;
    size_t n = param_list(p, PARAM_parent_domain_matches_subdomains, &items);
    for (size_t i = 0; i < n; i++)
        if (str_ieq(items[i], "smtpd_access_maps"))
            pol->parent_match = true;

    n = param_list(p, PARAM_mydestination, &items);
    pol->mydest = xcalloc(n ? n : 1, sizeof *pol->mydest);
    for (size_t i = 0; i < n; i++) {
        if (strchr(items[i], ':') || items[i][0] == '/') {
            if (param_origin(p, PARAM_mydestination, &file, &line))
                buf_printf(err, "%s:%d: ", file, line);
            buf_printf(err, "mydestination: \"%s\": table lookups are not supported by this version of moat; "
                            "list domain names\n", items[i]);
            errors++;
            continue;
        }
        pol->mydest[pol->nmydest++] = domain_norm(items[i]);
    }

    errors += compile_mynetworks(pol, p, config_dir, err);
    errors += compile_dns(pol, p, config_dir, err);
    errors += compile_relay(pol, p, config_dir, err);
    compile_policy_defaults(pol, p);
    pol->params = p;
    pol->fx = ss_fx_new();
    pol->corr_record = param_bool(p, PARAM_correspondent_allow_list);
    pol->corr_ttl = (unsigned)param_int(p, PARAM_correspondent_expire_time);
    if (pol->corr_record)
        pol->needs |= PN_STORE;
    if (!(pol->grey = greylist_new(p, config_dir, err)))
        errors++;
    if (!(pol->spf = spf_check_new(p, err)))
        errors++;
    if (!(pol->anvil = anvil_new(p, config_dir, err)))
        errors++;
    else if (anvil_uses_store(pol->anvil))
        pol->needs |= PN_STORE;

    n = param_list(p, PARAM_smtpd_log_access_permit_actions, &items);
    pol->permit_log = xcalloc(n ? n : 1, sizeof *pol->permit_log);
    for (size_t i = 0; i < n; i++) {
        if (str_ieq(items[i], "static:all")) {
            pol->permit_log_all = true;
        } else if (strchr(items[i], ':')) {
            if (param_origin(p, PARAM_smtpd_log_access_permit_actions, &file, &line))
                buf_printf(err, "%s:%d: ", file, line);
            buf_printf(err, "smtpd_log_access_permit_actions: \"%s\": only action names and static:all are "
                            "supported by this version of moat\n", items[i]);
            errors++;
        } else {
            pol->permit_log[pol->npermit_log++] = xstrdup(items[i]);
        }
    }

    /* Classes first: every list may name any class. */
    n = param_list(p, PARAM_smtpd_restriction_classes, &items);
    pol->classes = xcalloc(n ? n : 1, sizeof *pol->classes);
    for (size_t i = 0; i < n; i++) {
        if (find_class(pol, items[i]) >= 0)
            continue;
        pol->classes[pol->nclasses++].name = xstrdup(items[i]);
    }
    cctx_t cc = {.pol = pol, .config_dir = config_dir, .tables_ok = true, .implied_check = true, .err = err};
    for (size_t i = 0; i < pol->nclasses; i++) {
        rclassdef_t *c = &pol->classes[i];
        const char *value = param_user(p, c->name, &cc.file, &cc.line);
        cc.pname = c->name;
        if (!value || !*value) {
            if (!param_origin(p, PARAM_smtpd_restriction_classes, &cc.file, &cc.line))
                cc.file = NULL;
            cc.pname = "smtpd_restriction_classes";
            cmsg(&cc, "restriction class \"%s\" needs a definition (%s = restrictions...)", c->name, c->name);
            continue;
        }
        size_t ni;
        char **ci = split_list(value, &ni);
        compile_items(&cc, (const char *const *)ci, ni, &c->list);
        free(ci);
    }
    for (int rc = 0; rc < RC__COUNT; rc++) {
        cc.pname = param_name(class_params[rc]);
        if (!param_origin(p, class_params[rc], &cc.file, &cc.line))
            cc.file = NULL;
        cc.implied_check = rc != RC_DATA && rc != RC_EOD;
        n = param_list(p, class_params[rc], &items);
        compile_items(&cc, items, n, &pol->top[rc]);
    }
    errors += cc.errors;
    errors += compile_forbidden(pol, p, config_dir, err);
    if (pol->uses_inet_if) {
        errors += compile_inet_interfaces(pol, p, err);
    } else {
        /* for a restriction list an access table returns at run time; a
         * value that is no address list only matters when a list names it */
        buf_t ignored = BUF_INIT;
        compile_inet_interfaces(pol, p, &ignored);
        buf_free(&ignored);
    }

    errors += compile_table_list(pol, p, PARAM_relay_clientcerts, config_dir, pol->uses_ccerts, &pol->ccerts,
                                 &pol->nccerts, &pol->ccerts_broken, err);
    errors += compile_table_list(pol, p, PARAM_smtpd_sender_login_maps, config_dir, pol->uses_login,
                                 &pol->login_maps, &pol->nlogin, &pol->login_broken, err);

    buf_t path = BUF_INIT;
    for (size_t i = 0; i < pol->nclasses; i++) {
        buf_reset(&path);
        if (class_cycle(pol, (int)i, &path)) {
            if (param_user(p, pol->classes[i].name, &file, &line))
                buf_printf(err, "%s:%d: ", file, line);
            buf_printf(err, "restriction class \"%s\" includes itself (%s)\n", pol->classes[i].name,
                       buf_cstr(&path));
            errors++;
            break;
        }
    }
    buf_free(&path);

    if (!errors && !has_relay_guard(pol, &pol->top[RC_RELAY], 0) &&
        !has_relay_guard(pol, &pol->top[RC_RECIPIENT], 0)) {
        if (param_origin(p, PARAM_smtpd_relay_restrictions, &file, &line) ||
            param_origin(p, PARAM_smtpd_recipient_restrictions, &file, &line))
            buf_printf(err, "%s: ", file);
        buf_puts(err, "neither smtpd_relay_restrictions nor smtpd_recipient_restrictions ends unauthorized "
                      "destinations (reject_unauth_destination): moat refuses to run as an open relay\n");
        errors++;
    }
    if (errors) {
        policy_free(&pol);
        return NULL;
    }
    return pol;
}

void policy_free(policy_t **ppol)
{
    policy_t *pol = *ppol;
    if (!pol)
        return;
    for (int rc = 0; rc < RC__COUNT; rc++)
        list_free(&pol->top[rc]);
    for (size_t i = 0; i < pol->nclasses; i++) {
        free(pol->classes[i].name);
        list_free(&pol->classes[i].list);
    }
    free(pol->classes);
    for (size_t i = 0; i < pol->ntables; i++) {
        free(pol->tables[i].spec);
        map_close(&pol->tables[i].map);
    }
    free(pol->tables);
    addrlist_free(&pol->mynetworks);
    netlist_free(&pol->inet_if);
    for (size_t i = 0; i < pol->nforbid_words; i++)
        free(pol->forbid_words[i]);
    free(pol->forbid_words);
    free(pol->forbid_maps);   /* the maps themselves are in pol->tables */
    for (size_t i = 0; i < pol->nmydest; i++)
        free(pol->mydest[i]);
    free(pol->mydest);
    domlist_free(&pol->mydest_list);
    domlist_free(&pol->relay);
    free(pol->relay_rcpt);   /* the maps themselves are in pol->tables */
    addrlist_free(&pol->mx_networks);
    free(pol->myhostname);
    buf_free(&pol->why);
    free(pol->psvc_default_action);
    free(pol->psvc_context);
    greylist_free(&pol->grey);
    spf_check_free(&pol->spf);
    anvil_free(&pol->anvil);
    ss_fx_free(&pol->fx);
    free(pol->queue_dir);
    free(pol->compat_level);
    free(pol->mail_version);
    for (size_t i = 0; i < pol->npermit_log; i++)
        free(pol->permit_log[i]);
    free(pol->permit_log);
    for (size_t i = 0; i < pol->ncache; i++) {
        free(pol->cache[i].text);
        free(pol->cache[i].error);
        list_free(&pol->cache[i].list);
    }
    free(pol->cache);
    free(pol->overflow.text);
    free(pol->overflow.error);
    list_free(&pol->overflow.list);
    for (size_t i = 0; i < pol->nmaps_rbl; i++)
        dnsbl_site_free(&pol->maps_rbl[i]);
    free(pol->maps_rbl);
    for (size_t i = 0; i < pol->nscore; i++)
        dnsbl_site_free(&pol->score[i]);
    free(pol->score);
    free(pol->rbl_maps);
    free(pol->rbl_reply);
    dnsbl_health_free(&pol->health);
    verdict_free(&pol->scratch);
    free(pol->null_key);
    free(pol->delim);
    free(pol->footer);
    free(pol->ccerts);   /* the maps themselves are in pol->tables */
    free(pol->login_maps);
    free(pol->ccerts_broken);
    free(pol->login_broken);
    free(pol->myorigin);
    buf_free(&pol->value);
    free(pol);
    *ppol = NULL;
}

bool policy_tables_changed(const policy_t *pol)
{
    for (size_t i = 0; i < pol->ntables; i++)
        if (map_changed(pol->tables[i].map))
            return true;
    return addrlist_changed(pol->mynetworks) || domlist_changed(pol->relay) ||
           (pol->mx_networks && addrlist_changed(pol->mx_networks)) || greylist_tables_changed(pol->grey) ||
           anvil_tables_changed(pol->anvil);
}

bool policy_delay_reject(const policy_t *pol)
{
    return pol->delay_reject;
}

/* A restriction list returned by an access table: compiled the first time
 * the text is seen, then reused. */
static const cached_t *result_list(policy_t *pol, const char *text)
{
    for (size_t i = 0; i < pol->ncache; i++)
        if (strcmp(pol->cache[i].text, text) == 0)
            return &pol->cache[i];
    cached_t *c;
    if (pol->ncache < RESULT_CACHE_MAX) {
        pol->cache = xrealloc(pol->cache, (pol->ncache + 1) * sizeof *pol->cache);
        c = &pol->cache[pol->ncache++];
    } else {
        c = &pol->overflow;
        free(c->text);
        free(c->error);
        list_free(&c->list);
    }
    memset(c, 0, sizeof *c);
    c->text = xstrdup(text);
    buf_t err = BUF_INIT;
    cctx_t cc = {.pol = pol, .tables_ok = false, .implied_check = false, .err = &err};
    size_t n;
    char **items = split_list(text, &n);
    compile_items(&cc, (const char *const *)items, n, &c->list);
    free(items);
    if (cc.errors) {
        buf_truncate(&err, err.len && err.data[err.len - 1] == '\n' ? err.len - 1 : err.len);
        for (size_t i = 0; i < err.len; i++)
            if (err.data[i] == '\n')
                err.data[i] = ';';
        c->error = buf_steal(&err);
        list_free(&c->list);
    }
    buf_free(&err);
    return c;
}

/* ---------------------------------------------------------------- verdicts */

void verdict_init(verdict_t *v)
{
    memset(v, 0, sizeof *v);
    v->status = V_PERMIT;
}

void verdict_reset(verdict_t *v)
{
    v->status = V_PERMIT;
    v->code = 0;
    buf_reset(&v->reply);
    v->rule[0] = 0;
    v->origin.file = NULL;
    v->origin.line = 0;
    v->discard = v->hold = false;
    buf_reset(&v->prepend);
    buf_reset(&v->warnings);
    v->sleep = 0;
    buf_reset(&v->postponed);
    buf_reset(&v->redirect);
    buf_reset(&v->filter);
    buf_reset(&v->bcc);
}

void verdict_free(verdict_t *v)
{
    buf_free(&v->reply);
    buf_free(&v->prepend);
    buf_free(&v->warnings);
    buf_free(&v->postponed);
    buf_free(&v->redirect);
    buf_free(&v->filter);
    buf_free(&v->bcc);
    verdict_init(v);
}

/* --------------------------------------------------------------- evaluate */

enum { S_DUNNO = 0, S_OK = 1, S_REJECT = 2, S_PENDING = 3 };

typedef struct defer_state {
    bool active;
    char reply[REPLY_MAX + 1];   /* complete: "450 4.7.1 <x>: ..." */
    char rule[160];
    map_origin_t origin;
} defer_state_t;

typedef struct ectx {
    policy_t *pol;
    const pstate_t *st;
    verdict_t *v;
    buf_t *trace;
    pcmd_t cmd;
    const char *stage;        /* the command as Postfix logs it */
    const char *top;          /* the class being evaluated */
    rkind_t implied;          /* the check a bare table stands for */
    int recursion;
    int warn_if_reject;       /* recursion level that armed it; 0: off */
    defer_state_t dip, dir;
    map_origin_t origin;      /* the table line being acted on, if any */
    const step_t *step;
    char namaddr[320];
    bool prefetch;            /* policy_prefetch: start queries, decide nothing */
    bool pending;             /* a DNS answer this evaluation needs is not known yet */
    bool rcpt_checked;        /* the recipient went through check_rcpt_maps (unlisted()) */
    bool sender_checked;      /* ... the sender */
    int policy_default;       /* a policy service's default_action is being applied (nesting) */
} ectx_t;

static void trace(ectx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(ectx_t *c, const char *fmt, ...)
{
    if (!c->trace)
        return;
    buf_printf(c->trace, "  %s: ", c->top);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(c->trace, fmt, ap);
    va_end(ap);
    buf_putc(c->trace, '\n');
}

/* One log line per event, as Postfix's log_whatsup: the caller adds the
 * queue ID.  Peer text never splits the line. */
static void whatsup(ectx_t *c, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void whatsup(ectx_t *c, const char *what, const char *fmt, ...)
{
    buf_t *w = &c->v->warnings;
    size_t start = w->len;
    buf_printf(w, "%s: %s from %s: ", what, c->stage, c->namaddr);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(w, fmt, ap);
    va_end(ap);
    buf_putc(w, ';');
    const pstate_t *st = c->st;
    if (st->sender)
        buf_printf(w, " from=<%s>", st->sender);
    if (st->recipient && c->cmd != PCMD_ETRN)
        buf_printf(w, " to=<%s>", st->recipient);
    if (st->protocol)
        buf_printf(w, " proto=%s", st->protocol);
    if (st->helo)
        buf_printf(w, " helo=<%s>", st->helo);
    for (size_t i = start; i < w->len; i++)
        if (w->data[i] == '\n' || w->data[i] == '\r')
            w->data[i] = ' ';
    buf_putc(w, '\n');
    if (c->trace)
        trace(c, "log: %.*s", (int)(w->len - start - 1), w->data + start);
}

static void warnf(ectx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(ectx_t *c, const char *fmt, ...)
{
    buf_t *w = &c->v->warnings;
    size_t start = w->len;
    buf_puts(w, "warning: ");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(w, fmt, ap);
    va_end(ap);
    for (size_t i = start; i < w->len; i++)
        if (w->data[i] == '\n' || w->data[i] == '\r')
            w->data[i] = ' ';
    buf_putc(w, '\n');
    if (c->trace)
        trace(c, "%.*s", (int)(w->len - start - 1), w->data + start);
}

static void set_rule(ectx_t *c, char *rule, size_t size)
{
    snprintf(rule, size, "%s:%s", c->top, c->step ? c->step->text : "");
}

/* "NNN x.y.z text": code and enhanced code first, the text made printable
 * and cut at the RFC 5321 line length. */
static void format_reply(char *out, int code, const char *dsn, const char *fmt, va_list ap)
{
    int n = snprintf(out, REPLY_MAX + 1, "%d %s ", code, dsn);
    if (n > 0 && n < REPLY_MAX)
        vsnprintf(out + n, (size_t)(REPLY_MAX + 1 - n), fmt, ap);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

static int apply_reject(ectx_t *c, bool software, char *text, const char *rule, map_origin_t origin)
{
    bool warn = c->warn_if_reject && !software;
    /* An earlier DEFER_IF_REJECT turns this rejection into its deferral. */
    if (!warn && c->dir.active && text[0] == '5') {
        c->dir.active = false;
        c->warn_if_reject = 0;
        trace(c, "defer_if_reject turns \"%s\" into \"%s\"", text, c->dir.reply);
        return apply_reject(c, false, c->dir.reply, c->dir.rule, c->dir.origin);
    }
    /* The enhanced code's class follows the reply code (access_map_reject_code = 450 etc). */
    if (text[0] && text[1] && text[2] && text[3] == ' ' && text[4] && text[5] == '.')
        text[4] = text[0];
    if (warn) {
        whatsup(c, "reject_warning", "%s", text);
        return S_DUNNO;
    }
    verdict_t *v = c->v;
    buf_reset(&v->reply);
    buf_puts(&v->reply, text);
    v->code = atoi(text);
    v->status = text[0] == '4' ? V_DEFER : V_REJECT;
    str_copy(v->rule, rule, sizeof v->rule);
    v->origin = origin;
    trace(c, "%s -> %s", c->step ? c->step->text : "", text);
    return S_REJECT;
}

/* Postfix's smtpd_check_reject.  software: configuration or table
 * failures, which warn_if_reject must not turn into warnings. */
static int reject(ectx_t *c, bool software, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int reject(ectx_t *c, bool software, int code, const char *dsn, const char *fmt, ...)
{
    char text[REPLY_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    format_reply(text, code, dsn, fmt, ap);
    va_end(ap);
    if (code < 400 || code > 599) {
        warnf(c, "SMTP reply code configuration error: %s", text);
        str_copy(text, "450 4.7.1 Service unavailable", sizeof text);
    }
    char rule[sizeof c->v->rule];
    set_rule(c, rule, sizeof rule);
    return apply_reject(c, software, text, rule, c->origin);
}

/* Remember a deferral for later (the first reason wins, as in Postfix). */
static void defer_if(ectx_t *c, defer_state_t *d, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void defer_if(ectx_t *c, defer_state_t *d, int code, const char *dsn, const char *fmt, ...)
{
    if (d->active)
        return;
    va_list ap;
    va_start(ap, fmt);
    format_reply(d->reply, code, dsn, fmt, ap);
    va_end(ap);
    if (d->reply[3] == ' ' && d->reply[5] == '.')
        d->reply[4] = d->reply[0];
    d->active = true;
    set_rule(c, d->rule, sizeof d->rule);
    d->origin = c->origin;
    trace(c, "%s: remembered %s \"%s\"", c->step ? c->step->text : "",
          d == &c->dip ? "defer_if_permit" : "defer_if_reject", d->reply);
}

static int server_error(ectx_t *c)
{
    return reject(c, true, 451, "4.3.5", "Server configuration error");
}

/* smtpd_log_access_permit_actions */
static int acl_permit(ectx_t *c, const char *action, const char *rclass, const char *rname, const char *table)
{
    policy_t *pol = c->pol;
    bool log = pol->permit_log_all;
    for (size_t i = 0; !log && i < pol->npermit_log; i++)
        log = str_ieq(pol->permit_log[i], action);
    if (log)
        whatsup(c, "permit", "action=%s for %s=%s%s%s", action, rclass, rname, table ? " from " : "",
                table ? table : "");
    trace(c, "%s -> OK", c->step ? c->step->text : action);
    return S_OK;
}

/* Only where a message will follow can its actions apply (Postfix's
 * can_delegate_action / not_in_client_helo). */
static bool in_transaction(ectx_t *c, const char *table, const char *action)
{
    if (c->cmd == PCMD_ETRN) {
        warnf(c, "access table %s: action %s is unavailable in smtpd_etrn_restrictions", table, action);
        return false;
    }
    if (c->cmd == PCMD_CONNECT || c->cmd == PCMD_HELO) {
        warnf(c, "access table %s: with smtpd_delay_reject=no, action %s is always skipped in Client host "
                 "or Helo command restrictions", table, action);
        return false;
    }
    return true;
}

static int run_list(ectx_t *c, const rlist_t *l, const char *rname, const char *rclass);

/* "REJECT 4.1.1 text", "554 4.7.1 text": Postfix takes the enhanced code
 * and makes its class follow the reply code.  action_parse calls that a
 * mismatch; give it the corrected text (in fixed) and parse again. */
static void parse_result(const char *value, action_t *a, char *fixed, size_t size)
{
    action_parse(value, a);
    if (a->kind != ACT_INVALID)
        return;
    const char *v = value;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t wl = strcspn(v, " \t");
    char cls = 0;
    if (wl == 3 && v[0] >= '4' && v[0] <= '5' && v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9')
        cls = v[0];
    else if (wl == 6 && str_nieq(v, "REJECT", 6))
        cls = '5';
    else if ((wl == 5 && str_nieq(v, "DEFER", 5)) || (wl == 15 && (str_nieq(v, "DEFER_IF_REJECT", 15) ||
                                                                    str_nieq(v, "DEFER_IF_PERMIT", 15))))
        cls = '4';
    const char *d = v + wl;
    while (*d == ' ' || *d == '\t')
        d++;
    if (!cls || !(d[0] == '2' || d[0] == '4' || d[0] == '5') || d[1] != '.' || d[0] == cls ||
        strlen(value) >= size)
        return;
    str_copy(fixed, value, size);
    fixed[d - value] = cls;
    action_t again;
    action_parse(fixed, &again);
    if (again.kind != ACT_INVALID)
        *a = again;
}

/* An access(5) result from table (a table's name, or a policy service's
 * endpoint with key "policy query", as Postfix names them in warnings). */
static int apply_result(ectx_t *c, const char *table, const char *value, const char *key, const char *rname,
                        const char *rclass, map_origin_t origin)
{
    policy_t *pol = c->pol;
    action_t a;
    char fixed[REPLY_MAX + 1];
    parse_result(value, &a, fixed, sizeof fixed);
    map_origin_t saved = c->origin;
    c->origin = origin;
    int rc = S_DUNNO;
    char dsn[12];
    switch (a.kind) {
    case ACT_DUNNO:
        break;
    case ACT_OK:
        rc = acl_permit(c, "OK", rclass, rname, table);
        break;
    case ACT_REJECT:
        rs_dsn_fix(a.dsn[0] ? a.dsn : "5.7.1", rclass, dsn, sizeof dsn);
        rc = reject(c, false, a.code ? a.code : pol->map_reject_code, dsn, "<%s>: %s rejected: %s", rname, rclass,
                    *a.text ? a.text : "Access denied");
        break;
    case ACT_DEFER:
        rs_dsn_fix(a.dsn[0] ? a.dsn : "4.7.1", rclass, dsn, sizeof dsn);
        rc = reject(c, false, a.code ? a.code : pol->map_defer_code, dsn, "<%s>: %s rejected: %s", rname, rclass,
                    *a.text ? a.text : "Access denied");
        break;
    case ACT_DEFER_IF_PERMIT:
        rs_dsn_fix(a.dsn[0] ? a.dsn : "4.7.1", rclass, dsn, sizeof dsn);
        if (!c->warn_if_reject)
            defer_if(c, &c->dip, pol->map_defer_code, dsn, "<%s>: %s rejected: %s", rname, rclass,
                     *a.text ? a.text : "Service unavailable");
        else
            reject(c, false, pol->map_defer_code, dsn, "<%s>: %s rejected: %s", rname, rclass,
                   *a.text ? a.text : "Service unavailable");
        break;
    case ACT_DEFER_IF_REJECT:
        rs_dsn_fix(a.dsn[0] ? a.dsn : "4.7.1", rclass, dsn, sizeof dsn);
        defer_if(c, &c->dir, pol->map_defer_code, dsn, "<%s>: %s rejected: %s", rname, rclass,
                 *a.text ? a.text : "Service unavailable");
        break;
    case ACT_WARN:
        whatsup(c, "warn", "%s", a.text);
        break;
    case ACT_INFO:
        whatsup(c, "info", "%s", a.text);
        break;
    case ACT_DISCARD:
        if (!in_transaction(c, table, "DISCARD"))
            break;
        whatsup(c, "discard", "<%s>: %s %s", rname, rclass, *a.text ? a.text : "triggers DISCARD action");
        c->v->discard = true;
        rc = acl_permit(c, "DISCARD", rclass, rname, table);
        break;
    case ACT_PREPEND:
        if (!in_transaction(c, table, "PREPEND"))
            break;
        if (c->cmd == PCMD_EOD) {
            warnf(c, "access table %s: action PREPEND must be used before smtpd_end_of_data_restrictions", table);
            break;
        }
        {
            size_t start = c->v->prepend.len;
            buf_puts(&c->v->prepend, a.text);
            for (size_t i = start; i < c->v->prepend.len; i++)
                if (c->v->prepend.data[i] == '\n' || c->v->prepend.data[i] == '\r')
                    c->v->prepend.data[i] = ' ';
            buf_putc(&c->v->prepend, '\n');
        }
        break;
    /* HOLD, FILTER, REDIRECT, BCC: remembered for the message, and the
     * evaluation goes on (Postfix: "we may still change our mind"), so a
     * later restriction can still reject. */
    case ACT_HOLD:
        if (!in_transaction(c, table, "HOLD") || c->v->hold)
            break;
        whatsup(c, "hold", "<%s>: %s %s", rname, rclass, *a.text ? a.text : "triggers HOLD action");
        c->v->hold = true;
        break;
    case ACT_FILTER:
        if (!in_transaction(c, table, "FILTER"))
            break;
        whatsup(c, "filter", "<%s>: %s triggers FILTER %s", rname, rclass, a.text);
        buf_reset(&c->v->filter);
        buf_puts(&c->v->filter, a.text);
        break;
    case ACT_REDIRECT:
    case ACT_BCC:
        if (!in_transaction(c, table, action_name(a.kind)))
            break;
        if (!strchr(a.text, '@')) {
            /* Postfix warns and ignores the entry; a message that goes
             * elsewhere than configured is worse than a 4xx (fail closed). */
            warnf(c, "access table %s entry \"%s\" requires user@domain target", table, key);
            rc = server_error(c);
            break;
        }
        if (a.kind == ACT_REDIRECT) {
            whatsup(c, "redirect", "<%s>: %s triggers REDIRECT %s", rname, rclass, a.text);
            buf_reset(&c->v->redirect);
            buf_puts(&c->v->redirect, a.text);
        } else {
            whatsup(c, "bcc", "<%s>: %s triggers BCC %s", rname, rclass, a.text);
            buf_puts(&c->v->bcc, a.text);
            buf_putc(&c->v->bcc, '\n');
        }
        break;
    case ACT_RESTRICTIONS:
        if (c->recursion > RECURSION_LIMIT) {
            warnf(c, "access table %s entry \"%s\" causes unreasonable recursion", table, key);
            rc = server_error(c);
            break;
        }
        {
            const cached_t *cl = result_list(pol, a.text);
            if (cl->error) {
                warnf(c, "access table %s entry \"%s\" result \"%s\": %s", table, key, cl->text, cl->error);
                rc = server_error(c);
            } else {
                rc = run_list(c, &cl->list, rname, rclass);
            }
        }
        break;
    case ACT_INVALID:
        warnf(c, "access table %s entry \"%s\" has a bad result \"%s\": %s", table, key, value, a.text);
        rc = server_error(c);
        break;
    }
    c->origin = saved;
    return rc;
}

static int table_result(ectx_t *c, const step_t *s, const char *value, const char *key, const char *rname,
                        const char *rclass, map_origin_t origin)
{
    if (origin.file)
        trace(c, "%s: %s found at %s:%d: %s", s->text, key, origin.file, origin.line, value);
    else
        trace(c, "%s: %s found: %s", s->text, key, value);
    return apply_result(c, map_name(s->map), value, key, rname, rclass, origin);
}

typedef struct lookup {
    ectx_t *c;
    const step_t *s;
    bool pattern;
    int nkeys;
    map_status status;
    map_origin_t origin;
    char key[KEY_MAX + 1];
} lookup_t;

static int try_key(const char *key, void *arg)
{
    lookup_t *l = arg;
    /* Pattern tables see the whole string, never its parts (Postfix's
     * DICT_FLAG_FIXED): a regexp would otherwise match "com". */
    if (l->pattern && l->nkeys > 0)
        return 0;
    l->nkeys++;
    map_status st = map_lookup(l->s->map, key, &l->c->pol->value, &l->origin);
    if (st == MAP_NOTFOUND) {
        trace(l->c, "%s: %s not found", l->s->text, key);
        return 0;
    }
    l->status = st;
    str_copy(l->key, key, sizeof l->key);
    return 1;
}

static int lookup_done(ectx_t *c, lookup_t *l, const char *rname, const char *rclass)
{
    if (l->status == MAP_FOUND)
        return table_result(c, l->s, buf_cstr(&c->pol->value), l->key, rname, rclass, l->origin);
    if (l->status == MAP_TEMPFAIL) {
        warnf(c, "%s lookup error for \"%s\": %s", map_name(l->s->map), l->key, buf_cstr(&c->pol->value));
        return reject(c, true, 451, "4.3.0", "<%s>: Temporary lookup failure", rname);
    }
    trace(c, "%s: not found", l->s->text);
    return S_DUNNO;
}

static void lookup_init(lookup_t *l, ectx_t *c, const step_t *s)
{
    l->c = c;
    l->s = s;
    l->pattern = s->pattern;
    l->nkeys = 0;
    l->status = MAP_NOTFOUND;
    l->origin.file = NULL;
    l->origin.line = 0;
    l->key[0] = 0;
}

/* check_domain_access: the name, then its parent domains (not for a
 * numeric name: "1.2.3.4" has no parent "2.3.4"). */
static int check_domain(ectx_t *c, const step_t *s, const char *name, const char *rname, const char *rclass)
{
    lookup_t l;
    lookup_init(&l, c, s);
    if (rs_valid_hostaddr(name))
        try_key(name, &l);
    else
        access_keys_host(name, c->pol->parent_match, try_key, &l);
    return lookup_done(c, &l, rname, rclass);
}

/* check_namadr_access: the host name and its parents, then the address
 * and its networks. */
static int check_namadr(ectx_t *c, const step_t *s, const char *name, const char *addr, const char *rname,
                        const char *rclass)
{
    lookup_t l;
    lookup_init(&l, c, s);
    if (name && *name)
        access_keys_host(name, c->pol->parent_match, try_key, &l);
    if (l.status == MAP_NOTFOUND && addr && *addr) {
        l.nkeys = 0;
        access_keys_addr(addr, try_key, &l);
    }
    return lookup_done(c, &l, rname, rclass);
}

/* check_mail_access: user+ext@domain, user@domain, domain and parents,
 * user+ext@, user@; the null sender is smtpd_null_access_lookup_key. */
static int check_mail(ectx_t *c, const step_t *s, const char *addr, const char *rname, const char *rclass)
{
    lookup_t l;
    lookup_init(&l, c, s);
    if (!*addr)
        try_key(c->pol->null_key, &l);
    else
        access_keys_email(addr, c->pol->delim, c->pol->parent_match, c->pol->null_key, try_key, &l);
    return lookup_done(c, &l, rname, rclass);
}

/* Drop one trailing dot ("foo." but not "foo.."), as Postfix does before
 * judging a name. */
static const char *trim_dot(const char *name, char *buf, size_t size)
{
    size_t n = strlen(name);
    if (n > 1 && name[n - 1] == '.' && name[n - 2] != '.' && n < size) {
        memcpy(buf, name, n - 1);
        buf[n - 1] = 0;
        return buf;
    }
    return name;
}

static int reject_invalid_hostaddr(ectx_t *c, const char *addr, const char *rname, const char *rclass)
{
    char buf[300];
    const char *test = addr;
    size_t n = strlen(addr);
    if (addr[0] == '[' && n > 2 && addr[n - 1] == ']' && n - 2 < sizeof buf) {
        memcpy(buf, addr + 1, n - 2);
        buf[n - 2] = 0;
        test = buf;
    }
    if (rs_valid_mailhost_addr(test)) {
        trace(c, "%s: %s is a valid address", c->step->text, addr);
        return S_DUNNO;
    }
    return reject(c, false, c->pol->bad_name_code, "5.5.2", "<%s>: %s rejected: invalid ip address", rname, rclass);
}

static int reject_non_fqdn_address(ectx_t *c, const char *addr, const char *rname, const char *rclass)
{
    const char *at = strrchr(addr, '@');
    const char *domain = at ? at + 1 : "";
    size_t n = strlen(domain);
    if (domain[0] == '[' && n > 1 && domain[n - 1] == ']')
        return S_DUNNO;   /* an address literal is as qualified as it gets */
    char buf[300];
    const char *d = trim_dot(domain, buf, sizeof buf);
    if (!*d || !rs_valid_hostname(d, false, true) || !strchr(d, '.'))
        return reject(c, false, c->pol->non_fqdn_code, "4.5.2", "<%s>: %s rejected: need fully-qualified address",
                      rname, rclass);
    trace(c, "%s: %s is fully qualified", c->step->text, addr);
    return S_DUNNO;
}

/* An address's class as Postfix's resolver gives it to the restrictions:
 * local (mydestination), relay (relay_domains), anything else, or a
 * relay_domains table that failed (the reason in pol->why).  On
 * DEST_RELAY, pol->why names the relay_domains entry. */
typedef enum { DEST_OTHER, DEST_LOCAL, DEST_RELAY, DEST_ERROR } dest_t;

static dest_t dest_class(ectx_t *c, const char *addr)
{
    const char *at = strrchr(addr, '@');
    if (!at)
        return DEST_LOCAL;   /* unqualified: ours (Postfix appends $myorigin) */
    if (policy_local_domain(c->pol, at + 1))
        return DEST_LOCAL;
    switch (domlist_match(c->pol->relay, at + 1, &c->pol->why)) {
    case DL_MATCH: return DEST_RELAY;
    case DL_ERROR: return DEST_ERROR;
    default: return DEST_OTHER;
    }
}

/* A local part that still routes (% ! @) goes elsewhere, as Postfix's
 * resolver flags it (RESOLVE_FLAG_ROUTED): never an authorized destination. */
static bool routed(const char *addr)
{
    const char *at = strrchr(addr, '@');
    for (const char *p = addr; at && p < at; p++)
        if (*p == '%' || *p == '!' || *p == '@')
            return true;
    return false;
}

/* Postfix's reject_dict_retry for a relay_domains table that failed. */
static int dest_error(ectx_t *c, const char *addr)
{
    warnf(c, "relay_domains: %s", buf_cstr(&c->pol->why));
    return reject(c, true, 451, "4.3.0", "<%s>: Temporary lookup failure", addr);
}

/* Postfix's permit_auth_destination: is the recipient's domain one we
 * receive mail for (mydestination, relay_domains)?  Traced; DEST_ERROR
 * when a relay_domains table failed. */
static dest_t auth_dest(ectx_t *c, const step_t *s, const char *rcpt)
{
    if (routed(rcpt)) {
        trace(c, "%s: %s: the local part routes elsewhere (%% ! @): not an authorized destination", s->text, rcpt);
        return DEST_OTHER;
    }
    dest_t d = dest_class(c, rcpt);
    if (d == DEST_LOCAL)
        trace(c, "%s: %s is a local destination (mydestination)", s->text, rcpt);
    else if (d == DEST_RELAY)
        trace(c, "%s: %s is in relay_domains (%s)", s->text, rcpt, buf_cstr(&c->pol->why));
    else if (d == DEST_OTHER)
        trace(c, "%s: %s is neither in mydestination nor in relay_domains", s->text, rcpt);
    return d;
}

/* For checks that only need a yes (a table failure counts as no). */
static bool auth_destination(ectx_t *c, const char *rcpt)
{
    if (routed(rcpt))
        return false;
    dest_t d = dest_class(c, rcpt);
    return d == DEST_LOCAL || d == DEST_RELAY;
}

/* forbid_allowlist: a name the client chose must not buy an OK. */
static int forbid_ok(ectx_t *c, int status, const char *target)
{
    if (status != S_OK || c->v->discard)
        return status;
    warnf(c, "restriction %s returns OK for %s; this is not allowed for security reasons "
             "(use DUNNO instead of OK to make an exception)", c->step->text, target);
    return server_error(c);
}

static int run_check(ectx_t *c, rkind_t kind, const step_t *s)
{
    const pstate_t *st = c->st;
    switch (kind) {
    case R_CHECK_CLIENT:
        return check_namadr(c, s, st->client_name, st->client_addr, c->namaddr, "Client host");
    case R_CHECK_REVERSE_CLIENT: {
        const char *rev = st->reverse_name ? st->reverse_name : "unknown";
        return forbid_ok(c, check_namadr(c, s, rev, st->client_addr, rev, "Unverified Client host"), rev);
    }
    case R_CHECK_HELO:
        return st->helo ? check_domain(c, s, st->helo, st->helo, "Helo command") : S_DUNNO;
    case R_CHECK_SENDER:
        return st->sender ? check_mail(c, s, st->sender, st->sender, "Sender address") : S_DUNNO;
    case R_CHECK_RCPT:
        if (!st->recipient || c->cmd == PCMD_ETRN)
            return S_DUNNO;
        return check_mail(c, s, st->recipient, st->recipient, "Recipient address");
    case R_CHECK_ETRN:
        if (c->cmd != PCMD_ETRN || !st->recipient)
            return S_DUNNO;
        return check_domain(c, s, st->recipient, st->recipient, "Etrn command");
    default:
        warnf(c, "specify one of (check_client_access, check_reverse_client_hostname_access, check_helo_access, "
                 "check_sender_access, check_recipient_access, check_etrn_access) before restriction \"%s\"",
              s->text);
        return server_error(c);
    }
}

static int permit_mynetworks(ectx_t *c, const step_t *s, const char *rname)
{
    const char *addr = c->st->client_addr;
    buf_t why = BUF_INIT;
    al_result r = addrlist_match(c->pol->mynetworks, addr, &why);
    int rc = S_DUNNO;
    if (r == AL_MATCH) {
        trace(c, "%s: %s matches %s", s->text, addr, buf_cstr(&why));
        rc = acl_permit(c, "permit_mynetworks", "Client host", c->namaddr, NULL);
    } else if (r == AL_ERROR) {
        warnf(c, "mynetworks: %s", buf_cstr(&why));
        rc = reject(c, true, 451, "4.3.0", "<%s>: Temporary lookup failure", rname);
    } else {
        trace(c, "%s: %s is not in mynetworks%s%s", s->text, addr ? addr : "?", why.len ? ": excluded by " : "",
              buf_cstr(&why));
    }
    buf_free(&why);
    return rc;
}

/* Is sa the same address as the client's (st->client_addr)? */
static bool same_addr(const struct sockaddr *sa, const char *addr, char *text, size_t size)
{
    text[0] = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, text, (socklen_t)size);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6))
            inet_ntop(AF_INET, &a6->s6_addr[12], text, (socklen_t)size);
        else
            inet_ntop(AF_INET6, a6, text, (socklen_t)size);
    }
    return text[0] && addr && str_ieq(text, addr);
}

/* Postfix's permit_inet_interfaces: the client is this machine, talking to
 * one of the addresses moat listens on. */
static int permit_inet_interfaces(ectx_t *c, const step_t *s)
{
    const pstate_t *st = c->st;
    const char *addr = st->client_addr;
    bool in;
    char local[INET6_ADDRSTRLEN + 1];
    if (c->pol->inet_all && st->local) {
        in = same_addr(st->local, addr, local, sizeof local);
        trace(c, "%s: %s %s the connection's local address %s", s->text, addr ? addr : "?", in ? "is" : "is not",
              local[0] ? local : "?");
    } else {
        in = addr && netlist_match_text(c->pol->inet_if, addr);
        trace(c, "%s: %s %s one of inet_interfaces%s", s->text, addr ? addr : "?", in ? "is" : "is not",
              c->pol->inet_all ? " (the machine's interface addresses)" : "");
    }
    return in ? acl_permit(c, "permit_inet_interfaces", "Client host", c->namaddr, NULL) : S_DUNNO;
}

/* relay_recipient_maps, as Postfix's mail_addr_find asks it: the address,
 * the address without its extension (recipient_delimiter), then @domain;
 * key by key, each table in turn.  Pattern tables see the address only. */
static map_status relay_rcpt_find(ectx_t *c, const char *addr, char *key, size_t ksize, map_t **map,
                                  map_origin_t *origin)
{
    policy_t *pol = c->pol;
    const char *at = strrchr(addr, '@');
    size_t llen = (size_t)(at - addr);
    char keys[3][KEY_MAX + 1], domain[KEY_MAX + 1];
    int nkeys = 0;
    /* the domain in lower case, as the resolver hands it over */
    if (str_copy(domain, at + 1, sizeof domain) >= sizeof domain)
        return MAP_NOTFOUND;
    str_lower(domain);
    int n = snprintf(keys[nkeys++], sizeof keys[0], "%.*s@%s", (int)llen, addr, domain);
    if (n < 0 || (size_t)n >= sizeof keys[0])
        return MAP_NOTFOUND;
    /* shorter than the full key, so neither can be cut */
    size_t ext = *pol->delim ? strcspn(addr, pol->delim) : llen;
    if (ext > 0 && ext < llen && snprintf(keys[nkeys], sizeof keys[0], "%.*s@%s", (int)ext, addr, domain) > 0)
        nkeys++;
    if (snprintf(keys[nkeys], sizeof keys[0], "@%s", domain) > 0)
        nkeys++;
    for (int k = 0; k < nkeys; k++) {
        for (size_t i = 0; i < pol->nrelay_rcpt; i++) {
            if (k > 0 && is_pattern_table(map_name(pol->relay_rcpt[i])))
                continue;
            map_status st = map_lookup(pol->relay_rcpt[i], keys[k], &pol->value, origin);
            if (st == MAP_NOTFOUND) {
                trace(c, "%s: %s not found in %s", c->step->text, keys[k], map_name(pol->relay_rcpt[i]));
                continue;
            }
            str_copy(key, keys[k], ksize);
            *map = pol->relay_rcpt[i];
            return st;
        }
    }
    return MAP_NOTFOUND;
}

/* Postfix's check_rcpt_maps, behind reject_unlisted_recipient,
 * reject_unlisted_sender and their implicit forms (smtpd_reject_unlisted_*).
 * mydestination domains: every local part exists (moat has no local user
 * table: Postfix with an empty local_recipient_maps behaves the same).
 * relay_domains: the address must be in relay_recipient_maps when that is
 * set.  Other domains are not checked (Postfix neither).  Each address is
 * checked once per command (the explicit restriction, then the implicit
 * check, as Postfix's *_rcptmap_checked). */
static int unlisted(ectx_t *c, const step_t *s, const char *addr, bool sender)
{
    policy_t *pol = c->pol;
    bool *done = sender ? &c->sender_checked : &c->rcpt_checked;
    if (*done) {
        trace(c, "%s: %s was checked already", s->text, addr);
        return S_DUNNO;
    }
    *done = true;
    if (pol->no_unknown_rcpt) {
        trace(c, "%s: skipped (receive_override_options = no_unknown_recipient_checks)", s->text);
        return S_DUNNO;
    }
    switch (dest_class(c, addr)) {
    case DEST_ERROR:
        return dest_error(c, addr);
    case DEST_LOCAL:
        trace(c, "%s: %s is in a local domain: every local part exists (moat has no local user table)", s->text,
              addr);
        return S_DUNNO;
    case DEST_OTHER:
        trace(c, "%s: %s is neither in a local domain nor in relay_domains: no recipient table to check", s->text,
              addr);
        return S_DUNNO;
    case DEST_RELAY:
        break;
    }
    if (!pol->nrelay_rcpt) {
        trace(c, "%s: %s is in relay_domains (%s); relay_recipient_maps is empty: every address exists", s->text,
              addr, buf_cstr(&pol->why));
        return S_DUNNO;
    }
    char key[KEY_MAX + 1];
    map_t *m = NULL;
    map_origin_t origin = {0};
    switch (relay_rcpt_find(c, addr, key, sizeof key, &m, &origin)) {
    case MAP_FOUND:
        if (origin.file)
            trace(c, "%s: %s found in relay_recipient_maps %s at %s:%d", s->text, key, map_name(m), origin.file,
                  origin.line);
        else
            trace(c, "%s: %s found in relay_recipient_maps %s", s->text, key, map_name(m));
        return S_DUNNO;
    case MAP_TEMPFAIL:
        warnf(c, "%s lookup error for \"%s\": %s", map_name(m), key, buf_cstr(&pol->value));
        return reject(c, true, 451, "4.3.0", "<%s>: Temporary lookup failure", addr);
    case MAP_NOTFOUND:
        break;
    }
    return reject(c, false, pol->relay_rcpt_code, sender ? "5.1.0" : "5.1.1",
                  "<%s>: %s rejected: User unknown in relay recipient table", addr,
                  sender ? "Sender address" : "Recipient address");
}

/* The check Postfix runs after the restrictions when they did not run it
 * (smtpd_reject_unlisted_recipient / _sender), as one more step. */
static int implicit_unlisted(ectx_t *c, rclass_t rc, const char *addr)
{
    static step_t rstep = {.kind = R_REJECT_UNLISTED_RCPT, .text = "smtpd_reject_unlisted_recipient"};
    static step_t sstep = {.kind = R_REJECT_UNLISTED_SENDER, .text = "smtpd_reject_unlisted_sender"};
    bool sender = rc == RC_SENDER;
    c->top = class_names[rc];
    c->step = sender ? &sstep : &rstep;
    return unlisted(c, c->step, addr, sender);
}

/* check_relay_domains, as Postfix before 3.9 (which removed it): permit a
 * client whose host name matches relay_domains, or an authorized
 * destination; reject anything else. */
static int check_relay_domains(ectx_t *c, const step_t *s)
{
    const pstate_t *st = c->st;
    if (!st->recipient || c->cmd == PCMD_ETRN)
        return S_DUNNO;
    const char *name = st->client_name;
    if (name && *name) {
        dl_result r = domlist_match(c->pol->relay, name, &c->pol->why);
        if (r == DL_ERROR)
            return dest_error(c, st->recipient);
        if (r == DL_MATCH) {
            trace(c, "%s: the client %s is in relay_domains (%s)", s->text, name, buf_cstr(&c->pol->why));
            return acl_permit(c, "check_relay_domains", "Recipient address", st->recipient, NULL);
        }
    }
    switch (auth_dest(c, s, st->recipient)) {
    case DEST_ERROR:
        return dest_error(c, st->recipient);
    case DEST_LOCAL:
    case DEST_RELAY:
        return acl_permit(c, "check_relay_domains", "Recipient address", st->recipient, NULL);
    default:
        break;
    }
    return reject(c, false, c->pol->relay_code, "5.7.1", "<%s>: %s rejected: Relay access denied", st->recipient,
                  "Recipient address");
}

/* ------------------------------------------------------------ DNS steps */

/* The answer for (type, name) from the session's memo; NULL when it is not
 * known yet (the query is running: the step answers S_PENDING).  The final
 * pass traces each answer and whether it came from moat's cache. */
static const dns_answer_t *dq(ectx_t *c, dns_type_t type, const char *name)
{
    dns_how_t how;
    const dns_answer_t *a = dns_memo_get(c->st->dns, type, name, &how);
    if (!a) {
        c->pending = true;
        return NULL;
    }
    if (c->trace) {
        buf_t f = BUF_INIT;
        dns_trace_answer(&f, a, &how);
        trace(c, "%s", buf_cstr(&f));
        buf_free(&f);
    }
    return a;
}

static bool no_dns(ectx_t *c)
{
    if (c->st->dns)
        return false;
    warnf(c, "%s: no DNS resolver in this context", c->step->text);
    return true;
}

/* A reject_* check that could not decide because DNS failed: Postfix's
 * *_tempfail_action (defer_if_permit, or defer at once). */
static int tempfail(ectx_t *c, bool defer_now, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int tempfail(ectx_t *c, bool defer_now, int code, const char *dsn, const char *fmt, ...)
{
    char text[REPLY_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (defer_now || c->warn_if_reject)
        return reject(c, false, code, dsn, "%s", text);
    defer_if(c, &c->dip, code, dsn, "%s", text);
    return S_DUNNO;
}

static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : NULL;
}

/* ---- reject_unknown_* */

static int unknown_client(ectx_t *c, const step_t *s)
{
    const pstate_t *st = c->st;
    const char *what = s->kind == R_UNKNOWN_REVERSE ? "reverse hostname" : "hostname";
    char code = s->kind == R_UNKNOWN_CLIENT    ? st->name_code
                : s->kind == R_UNKNOWN_REVERSE ? st->reverse_code
                                               : (st->reverse_code ? st->reverse_code : st->forward_code);
    if (code == 0) {
        trace(c, "%s: the client's %s is known", s->text, what);
        return S_DUNNO;
    }
    /* Postfix: a temporary failure is a 450 at once (not defer_if_permit). */
    return reject(c, false, code == 4 ? 450 : c->pol->unknown_client_code, "4.7.1",
                  "Client host rejected: cannot find your %s, [%s]", what,
                  st->client_addr ? st->client_addr : "unknown");
}

/* Does name have an A, AAAA or MX record?  1 yes, 0 no (NXDOMAIN or no
 * such records), -1 temporary failure, -2 not known yet; *nullmx for a
 * null MX (RFC 7505).  All three queries start together. */
static int host_exists(ectx_t *c, const char *name, bool *nullmx, const char **error)
{
    const dns_answer_t *mx = dq(c, DNS_T_MX, name);
    const dns_answer_t *a = dq(c, DNS_T_A, name);
    const dns_answer_t *aaaa = dq(c, DNS_T_AAAA, name);
    *nullmx = false;
    if (!mx)
        return -2;
    if (mx->status == DNS_OK) {
        *nullmx = mx->n == 1 && mx->rr[0].data[0] == 0;
        return 1;
    }
    if (mx->status == DNS_NXDOMAIN)
        return 0;
    if (mx->status == DNS_TEMPFAIL) {
        *error = mx->error;
        return -1;
    }
    if ((a && a->status == DNS_OK) || (aaaa && aaaa->status == DNS_OK))
        return 1;
    if (!a || !aaaa)
        return -2;
    if (a->status == DNS_TEMPFAIL || aaaa->status == DNS_TEMPFAIL) {
        *error = a->status == DNS_TEMPFAIL ? a->error : aaaa->error;
        return -1;
    }
    return 0;
}

static int unknown_helo(ectx_t *c, const step_t *s)
{
    const char *helo = c->st->helo;
    if (!helo || helo[0] == '[')
        return S_DUNNO;   /* an address literal names no host (Postfix) */
    char buf[300];
    const char *h = trim_dot(helo, buf, sizeof buf);
    bool nullmx;
    const char *error = "";
    int r = host_exists(c, h, &nullmx, &error);
    if (r == -2)
        return S_PENDING;
    if (r == 1)
        return S_DUNNO;
    if (r == -1) {
        warnf(c, "%s: DNS lookup of %s failed: %s", s->text, h, error);
        return tempfail(c, c->pol->helo_tf_defer, 450, "4.7.1", "<%s>: Helo command rejected: Host not found", helo);
    }
    return reject(c, false, c->pol->unknown_host_code, "4.7.1", "<%s>: Helo command rejected: Host not found", helo);
}

/* reject_unknown_sender_domain / _recipient_domain: Postfix's
 * reject_unknown_mailhost.  Local domains are never checked. */
static int unknown_domain(ectx_t *c, const step_t *s, const char *addr, const char *rclass, bool sender)
{
    const char *d = addr ? domain_of(addr) : NULL;
    if (!d || !*d || d[0] == '[' || policy_local_domain(c->pol, d))
        return S_DUNNO;
    char buf[300];
    d = trim_dot(d, buf, sizeof buf);
    bool nullmx;
    const char *error = "";
    int r = host_exists(c, d, &nullmx, &error);
    if (r == -2)
        return S_PENDING;
    if (r == 1 && nullmx)
        return reject(c, false, sender ? 550 : 556, sender ? "5.7.27" : "5.1.10",
                      "<%s>: %s rejected: Domain %s does not accept mail (nullMX)", addr, rclass, d);
    if (r == 1)
        return S_DUNNO;
    const char *dsn = sender ? "4.1.8" : "4.1.2";
    if (r == -1) {
        warnf(c, "%s: DNS lookup of %s failed: %s", s->text, d, error);
        return tempfail(c, c->pol->addr_tf_defer, 450, dsn, "<%s>: %s rejected: Domain not found", addr, rclass);
    }
    return reject(c, false, c->pol->unknown_addr_code, dsn, "<%s>: %s rejected: Domain not found", addr, rclass);
}

/* ---- DNS lists */

/* The session's names in reply templates (rbl replies and
 * smtpd_reject_footer): client ("name[addr]"), client_address,
 * client_name (client_hostname), reverse_client_name, helo_name, sender,
 * sender_name, sender_domain, recipient, recipient_name, recipient_domain.
 * tmp holds values that are made up; NULL for another name. */
static const char *state_var(const pstate_t *st, const char *name, size_t n, char *tmp, size_t size)
{
#define IS(lit) (n == sizeof lit - 1 && memcmp(name, lit, n) == 0)
#define OR_EMPTY(v) ((v) ? (v) : "")
    if (IS("client")) {
        snprintf(tmp, size, "%s[%s]", st->client_name ? st->client_name : "unknown",
                 st->client_addr ? st->client_addr : "unknown");
        return tmp;
    }
    if (IS("client_address"))
        return OR_EMPTY(st->client_addr);
    if (IS("client_name") || IS("client_hostname"))
        return OR_EMPTY(st->client_name);
    if (IS("reverse_client_name"))
        return OR_EMPTY(st->reverse_name);
    if (IS("helo_name"))
        return OR_EMPTY(st->helo);
    if (IS("sender"))
        return OR_EMPTY(st->sender);
    if (IS("recipient"))
        return OR_EMPTY(st->recipient);
    const char *addr = NULL;
    if (IS("sender_name") || IS("sender_domain"))
        addr = OR_EMPTY(st->sender);
    else if (IS("recipient_name") || IS("recipient_domain"))
        addr = OR_EMPTY(st->recipient);
    if (!addr)
        return NULL;
    const char *at = strrchr(addr, '@');
    if (name[n - 1] == 'n')   /* ..._domain */
        return at ? at + 1 : "";
    size_t len = at ? (size_t)(at - addr) : strlen(addr);
    snprintf(tmp, size, "%.*s", (int)(len < size ? len : size - 1), addr);
    return tmp;
#undef OR_EMPTY
#undef IS
}

/* The expansion names of default_rbl_reply and rbl_reply_maps. */
typedef struct rblvars {
    ectx_t *c;
    const char *code, *domain, *reason, *what, *rclass;
    char tmp[320];
} rblvars_t;

static const char *rbl_get(void *arg, const char *name, size_t n)
{
    rblvars_t *r = arg;
#define IS(lit) (n == sizeof lit - 1 && memcmp(name, lit, n) == 0)
    if (IS("rbl_code"))
        return r->code;
    if (IS("rbl_domain"))
        return r->domain;
    if (IS("rbl_reason") || IS("rbl_txt"))
        return r->reason ? r->reason : "";
    if (IS("rbl_what"))
        return r->what;
    if (IS("rbl_class"))
        return r->rclass;
#undef IS
    return state_var(r->c->st, name, n, r->tmp, sizeof r->tmp);
}

/* A listed client or domain: the reply from rbl_reply_maps (keyed by the
 * list as written, zone=filter included) or default_rbl_reply. */
static int rbl_reject(ectx_t *c, const dnsbl_site_t *site, const char *spec, const char *what, const char *rclass,
                      const char *reason)
{
    policy_t *pol = c->pol;
    char code_text[8];
    snprintf(code_text, sizeof code_text, "%d", pol->maps_rbl_code);
    rblvars_t vars = {.c = c, .code = code_text, .domain = site ? site->zone : spec, .reason = reason, .what = what,
                      .rclass = rclass};
    const char *tmpl = pol->rbl_reply;
    /* The list as written (zone=filter), then the zone alone (Postfix). */
    const char *keys[2] = {spec, site && strcmp(spec, site->zone) != 0 ? site->zone : NULL};
    for (size_t i = 0; i < pol->nrbl_maps * 2 && tmpl == pol->rbl_reply; i++) {
        const char *key = keys[i / pol->nrbl_maps];
        if (!key)
            break;
        map_t *m = pol->rbl_maps[i % pol->nrbl_maps];
        map_origin_t origin = {0};
        map_status ms = map_lookup(m, key, &pol->value, &origin);
        if (ms == MAP_TEMPFAIL) {
            warnf(c, "%s lookup error for \"%s\": %s", map_name(m), key, buf_cstr(&pol->value));
            return reject(c, true, 451, "4.3.0", "Temporary lookup error");
        }
        if (ms == MAP_FOUND) {
            tmpl = buf_cstr(&pol->value);
            c->origin = origin;
            trace(c, "%s: rbl_reply_maps: %s found%s%s", c->step->text, key, origin.file ? " at " : "",
                  origin.file ? origin.file : "");
        }
    }
    buf_t out = BUF_INIT;
    template_expand(tmpl, rbl_get, &vars, &out);
    int code, rc;
    char dsn[12], fixed[12];
    const char *t;
    /* "NNN [x.y.z ]text": the template chooses the code. */
    if (dnsbl_reply_parse(buf_cstr(&out), &code, dsn, sizeof dsn, &t)) {
        rs_dsn_fix(dsn, rclass, fixed, sizeof fixed);
        rc = reject(c, false, code, fixed, "%s", t);
    } else {
        warnf(c, "rbl response code configuration error: %s", buf_cstr(&out));
        rc = reject(c, true, 450, "4.7.1", "Service unavailable");
    }
    buf_free(&out);
    return rc;
}

typedef enum { L_PENDING, L_NOT, L_LISTED, L_TEMPFAIL, L_IGNORED } listing_t;

/* Is the query name listed in site?  The first matching answer goes to
 * *hit.  A list that is broken (health) or answers with an error code
 * or a foreign address is ignored, with a warning once per period. */
static listing_t listed(ectx_t *c, const dnsbl_site_t *site, const char *qname, const char **hit,
                        const char **error)
{
    policy_t *pol = c->pol;
    time_t now = time(NULL);
    buf_t probe = BUF_INIT;
    listing_t out = L_NOT;
    const dns_answer_t *a = dq(c, DNS_T_A, qname);
    if (dnsbl_health_probe_due(pol->health, site->zone, now, &probe)) {
        const dns_answer_t *p = dq(c, DNS_T_A, buf_cstr(&probe));
        if (!p) {
            out = L_PENDING;
            goto done;
        }
        if (!c->prefetch)
            dnsbl_health_probe_answer(pol->health, site->zone, p->status == DNS_OK && p->n ? p->rr[0].data : NULL,
                                      p->status == DNS_TEMPFAIL, now);
    }
    if (!a) {
        out = L_PENDING;
        goto done;
    }
    if (a->status == DNS_TEMPFAIL) {
        *error = a->error;
        out = L_TEMPFAIL;
        goto done;
    }
    for (size_t i = 0; a->status == DNS_OK && i < a->n; i++) {
        dnsbl_ans_t k = dnsbl_classify(a->rr[i].data);
        if (k != DNSBL_ANS_LISTED) {
            if (!c->prefetch)
                dnsbl_health_bad_answer(pol->health, site->zone, k, a->rr[i].data, now);
            continue;
        }
        if (dnsbl_site_match(site, a->rr[i].data) && out != L_LISTED) {
            out = L_LISTED;
            *hit = a->rr[i].data;
        }
    }
    buf_t why = BUF_INIT;
    if (dnsbl_health_broken(pol->health, site->zone, &why)) {
        if (!c->prefetch && dnsbl_health_should_log(pol->health, site->zone, now))
            warnf(c, "dnsbl %s: %s: ignoring its answers", site->zone, buf_cstr(&why));
        if (out == L_LISTED && !c->prefetch)
            dnsbl_health_ignored(pol->health, site->zone);
        trace(c, "%s: list %s is broken (%s): answer ignored", c->step->text, site->zone, buf_cstr(&why));
        out = L_IGNORED;
    }
    buf_free(&why);
done:
    buf_free(&probe);
    return out;
}

/* The TXT reason of a listing: every record, " / " between them, at most
 * 500 bytes (Postfix); empty when none is published. */
static bool listing_reason(ectx_t *c, const char *qname, buf_t *reason)
{
    const dns_answer_t *t = dq(c, DNS_T_TXT, qname);
    if (!t)
        return false;
    for (size_t i = 0; t->status == DNS_OK && i < t->n && reason->len < 500; i++)
        buf_printf(reason, "%s%.*s", i ? " / " : "", (int)(500 - reason->len), t->rr[i].data);
    return true;
}

/* What a list step looks up: the client address (reject_rbl_client,
 * permit_dnswl_client) or a domain (the rhsbl family). */
static bool list_target(ectx_t *c, rkind_t kind, const char **what, const char **domain, const char **rclass)
{
    const pstate_t *st = c->st;
    *domain = NULL;
    switch (kind) {
    case R_RBL_CLIENT:
    case R_DNSWL_CLIENT:
    case R_MAPS_RBL:
    case R_DNSBL_SCORE:
        *what = st->client_addr, *rclass = "Client host";
        return st->client_addr && rs_valid_hostaddr(st->client_addr);
    case R_RHSBL_CLIENT:
    case R_RHSWL_CLIENT:
        *what = *domain = st->client_name, *rclass = "Client host";
        return st->client_name && !str_ieq(st->client_name, "unknown") && st->name_code == 0;
    case R_RHSBL_REVERSE:
        *what = *domain = st->reverse_name, *rclass = "Unverified Client host";
        return st->reverse_name && !str_ieq(st->reverse_name, "unknown") && st->reverse_code == 0;
    case R_RHSBL_HELO:
        *what = *domain = st->helo, *rclass = "Helo command";
        return st->helo && st->helo[0] != '[' && !rs_valid_hostaddr(st->helo);
    case R_RHSBL_SENDER:
        *what = st->sender, *rclass = "Sender address";
        *domain = st->sender ? domain_of(st->sender) : NULL;
        return *domain && **domain && **domain != '[';
    case R_RHSBL_RCPT:
        *what = st->recipient, *rclass = "Recipient address";
        *domain = st->recipient && c->cmd != PCMD_ETRN ? domain_of(st->recipient) : NULL;
        return *domain && **domain && **domain != '[';
    default:
        return false;
    }
}

/* reject_rbl_client, reject_rhsbl_*, permit_dnswl_client, permit_rhswl_client. */
static int dns_list(ectx_t *c, const step_t *s, const dnsbl_site_t *site, const char *spec)
{
    const char *what, *domain, *rclass;
    if (!list_target(c, s->kind, &what, &domain, &rclass)) {
        trace(c, "%s: nothing to look up", s->text);
        return S_DUNNO;
    }
    buf_t q = BUF_INIT;
    bool ok = domain ? dnsbl_query_name_domain(domain, site->zone, &q) : dnsbl_query_name_addr(what, site->zone, &q);
    if (!ok) {
        trace(c, "%s: %s makes no valid DNS name under %s", s->text, domain ? domain : what, site->zone);
        buf_free(&q);
        return S_DUNNO;
    }
    const char *hit = NULL, *error = "";
    buf_t reason = BUF_INIT;
    bool allow = s->kind == R_DNSWL_CLIENT || s->kind == R_RHSWL_CLIENT;
    int rc = S_DUNNO;
    switch (listed(c, site, buf_cstr(&q), &hit, &error)) {
    case L_PENDING:
        rc = S_PENDING;
        break;
    case L_NOT:
    case L_IGNORED:
        trace(c, "%s: %s is not listed", s->text, domain ? domain : what);
        break;
    case L_TEMPFAIL:
        warnf(c, "%s: DNS lookup of %s failed: %s", s->text, buf_cstr(&q), error);
        if (allow) {
            /* Postfix: an allow list that fails turns a later reject into a deferral. */
            defer_if(c, &c->dir, 450, "4.7.1", "<%s>: %s rejected: Service unavailable",
                     domain ? domain : what, rclass);
        } else {
            rc = tempfail(c, c->pol->tf_defer, 450, "4.7.1",
                          "<%s>: %s rejected: Service unavailable; %s lookup in %s failed temporarily",
                          domain ? what : c->namaddr, rclass, domain ? domain : what, site->zone);
        }
        break;
    case L_LISTED:
        trace(c, "%s: %s is listed in %s (%s)", s->text, domain ? domain : what, site->zone, hit);
        if (allow) {
            /* Never a way around reject_unauth_destination (Postfix). */
            if ((c->top == class_names[RC_RELAY] || c->top == class_names[RC_RECIPIENT]) && c->st->recipient &&
                !auth_destination(c, c->st->recipient)) {
                trace(c, "%s: ignored: it would override reject_unauth_destination", s->text);
                break;
            }
            rc = acl_permit(c, s->kind == R_DNSWL_CLIENT ? "permit_dnswl_client" : "permit_rhswl_client", rclass,
                            c->namaddr, NULL);
            break;
        }
        if (!listing_reason(c, buf_cstr(&q), &reason)) {
            rc = S_PENDING;
            break;
        }
        rc = rbl_reject(c, site, spec, what, rclass, reason.len ? buf_cstr(&reason) : NULL);
        break;
    }
    buf_free(&reason);
    buf_free(&q);
    return rc;
}

/* reject_dnsbl_score: every dnsbl_sites list in parallel; reject when the
 * weights of the lists that list the client reach reject_dnsbl_score.
 * Lists still running with a negative weight count as listed (so an allow
 * list can never be outrun) and the rest as not: a reject needs no more. */
static int dnsbl_score(ectx_t *c, const step_t *s)
{
    policy_t *pol = c->pol;
    const char *what, *domain, *rclass;
    if (!list_target(c, s->kind, &what, &domain, &rclass))
        return S_DUNNO;
    int sum = 0, pending_neg = 0, pending_pos = 0, failed_pos = 0;
    buf_t parts = BUF_INIT, zones = BUF_INIT, q = BUF_INIT;
    for (size_t i = 0; i < pol->nscore; i++) {
        const dnsbl_site_t *site = &pol->score[i];
        buf_reset(&q);
        if (!dnsbl_query_name_addr(what, site->zone, &q))
            continue;
        const char *hit = NULL, *error = "";
        listing_t l = listed(c, site, buf_cstr(&q), &hit, &error);
        if (l == L_PENDING) {
            if (site->weight < 0)
                pending_neg += site->weight;
            else
                pending_pos += site->weight;
            continue;
        }
        if (l == L_TEMPFAIL) {
            warnf(c, "%s: DNS lookup of %s failed: %s", s->text, buf_cstr(&q), error);
            if (site->weight > 0)
                failed_pos += site->weight;
        }
        buf_printf(&parts, "%s%s=%s", parts.len ? " " : "", site->zone,
                   l == L_LISTED ? hit : l == L_TEMPFAIL ? "tempfail" : l == L_IGNORED ? "ignored" : "none");
        if (l == L_LISTED) {
            sum += site->weight;
            buf_printf(&parts, "*%d", site->weight);
            if (site->weight > 0)
                buf_printf(&zones, "%s%s", zones.len ? ", " : "", site->zone);
        }
    }
    int rc = S_DUNNO;
    if (sum + pending_neg >= pol->score_threshold) {
        whatsup(c, "dnsbl_score", "%s score %d >= %d: %s%s", what, sum + pending_neg, pol->score_threshold,
                buf_cstr(&parts), pending_pos || pending_neg ? " (lists still running not waited for)" : "");
        char reason[64];
        snprintf(reason, sizeof reason, "DNSBL score %d", sum + pending_neg);
        rc = rbl_reject(c, NULL, buf_cstr(&zones), what, rclass, reason);
    } else if (pending_pos || pending_neg) {
        rc = S_PENDING;
    } else if (failed_pos && sum + failed_pos >= pol->score_threshold) {
        trace(c, "%s: score %d < %d, but lists that failed could reach it: %s", s->text, sum, pol->score_threshold,
              buf_cstr(&parts));
        rc = tempfail(c, pol->tf_defer, 450, "4.7.1", "<%s>: %s rejected: Service unavailable; DNS list lookups "
                      "failed temporarily", c->namaddr, rclass);
    } else {
        trace(c, "%s: score %d < %d: %s", s->text, sum, pol->score_threshold, buf_cstr(&parts));
    }
    buf_free(&parts);
    buf_free(&zones);
    buf_free(&q);
    return rc;
}

/* reject_maps_rbl: reject_rbl_client for each maps_rbl_domains list. */
static int maps_rbl(ectx_t *c, const step_t *s)
{
    policy_t *pol = c->pol;
    for (size_t i = 0; i < pol->nmaps_rbl; i++) {
        step_t one = *s;
        one.kind = R_RBL_CLIENT;
        int rc = dns_list(c, &one, &pol->maps_rbl[i], pol->maps_rbl[i].zone);
        if (rc != S_DUNNO)
            return rc;
    }
    return S_DUNNO;
}

/* ---- check_<target>_{a,mx,ns}_access */

#define SERVERS_MAX 10   /* host names examined per lookup, as Postfix's limit */

/* The addresses of host, each looked up as check_addr_access does. */
static int server_addrs(ectx_t *c, const step_t *s, const char *host, lookup_t *l, bool *pending)
{
    static const dns_type_t types[] = {DNS_T_A, DNS_T_AAAA};
    for (size_t t = 0; t < ARRAY_LEN(types); t++) {
        const dns_answer_t *a = dq(c, types[t], host);
        if (!a) {
            *pending = true;
            continue;
        }
        for (size_t i = 0; a->status == DNS_OK && i < a->n && l->status == MAP_NOTFOUND; i++) {
            l->nkeys = 0;
            access_keys_addr(a->rr[i].data, try_key, l);
        }
    }
    (void)s;
    return 0;
}

static int dns_access(ectx_t *c, const step_t *s)
{
    const pstate_t *st = c->st;
    int target = s->arg / 3, which = s->arg % 3;
    const char *name = NULL, *rname = NULL, *rclass = NULL;
    switch (target) {
    case DT_CLIENT:
        if (st->client_name && st->name_code == 0 && !str_ieq(st->client_name, "unknown"))
            name = st->client_name;
        rname = c->namaddr, rclass = "Client host";
        break;
    case DT_REVERSE:
        if (st->reverse_name && st->reverse_code == 0 && !str_ieq(st->reverse_name, "unknown"))
            name = st->reverse_name;
        rname = c->namaddr, rclass = "Unverified Client host";
        break;
    case DT_HELO:
        if (st->helo && st->helo[0] != '[' && !rs_valid_hostaddr(st->helo))
            name = st->helo;
        rname = st->helo, rclass = "Helo command";
        break;
    case DT_SENDER:
        if (st->sender && *st->sender)
            name = domain_of(st->sender);
        rname = st->sender, rclass = "Sender address";
        break;
    default:
        if (st->recipient && c->cmd != PCMD_ETRN)
            name = domain_of(st->recipient);
        rname = st->recipient, rclass = "Recipient address";
        break;
    }
    if (!name || !*name || name[0] == '[') {
        trace(c, "%s: nothing to look up", s->text);
        return S_DUNNO;
    }
    const char *at = strrchr(name, '@');   /* "user@domain" as a HELO name: its domain (Postfix) */
    if (at)
        name = at + 1;
    if (!*name)
        return S_DUNNO;
    char buf[300];
    name = trim_dot(name, buf, sizeof buf);
    lookup_t l;
    lookup_init(&l, c, s);
    bool pending = false;
    if (which == DW_A) {
        server_addrs(c, s, name, &l, &pending);
        if (pending && l.status == MAP_NOTFOUND)
            return S_PENDING;
        return lookup_done(c, &l, rname, rclass);
    }
    /* MX or NS hosts; a domain without MX is its own mail host, a name
     * without NS (or that does not exist) inherits its parent's. */
    dns_type_t type = which == DW_MX ? DNS_T_MX : DNS_T_NS;
    const char *owner = name;
    const dns_answer_t *a;
    for (;;) {
        if (!(a = dq(c, type, owner)))
            return S_PENDING;
        if ((a->status != DNS_NODATA && a->status != DNS_NXDOMAIN) || type == DNS_T_MX)
            break;
        const char *dot = strchr(owner, '.');
        if (!dot || !strchr(dot + 1, '.'))
            break;   /* no NS up to the top-level domain: nothing to check */
        owner = dot + 1;
    }
    if (a->status == DNS_TEMPFAIL) {
        warnf(c, "%s: DNS lookup of %s %s failed: %s", s->text, dns_type_name(type), owner, a->error);
        defer_if(c, &c->dir, 450, "4.4.3", "<%s>: %s rejected: Unable to look up %s host for %s", rname, rclass,
                 dns_type_name(type), name);
        return S_DUNNO;
    }
    const char *hosts[SERVERS_MAX];
    size_t nh = 0;
    if (a->status == DNS_OK) {
        for (size_t i = 0; i < a->n && nh < SERVERS_MAX; i++)
            if (a->rr[i].data[0])
                hosts[nh++] = a->rr[i].data;
    } else if (a->status == DNS_NODATA && type == DNS_T_MX) {
        hosts[nh++] = name;
    }
    for (size_t i = 0; i < nh && l.status == MAP_NOTFOUND; i++) {
        l.nkeys = 0;
        access_keys_host(hosts[i], c->pol->parent_match, try_key, &l);
        if (l.status == MAP_NOTFOUND)
            server_addrs(c, s, hosts[i], &l, &pending);
    }
    if (pending && l.status == MAP_NOTFOUND)
        return S_PENDING;
    return lookup_done(c, &l, rname, rclass);
}

/* ---- permit_mx_backup */

/* The addresses of host (A and AAAA together, as getaddrinfo): 1 some
 * (in *a4, *a6; either may have none), 0 none (*error says why, in the
 * words of glibc's getaddrinfo for has_my_addr, of Postfix's
 * dns_strerror for dns_text), -2 not known yet. */
/* Start both queries of host without tracing (the deciding pass traces);
 * false when an answer is still missing. */
static bool host_addrs_known(ectx_t *c, const char *host)
{
    bool known = dns_memo_get(c->st->dns, DNS_T_A, host, NULL) != NULL;
    known = dns_memo_get(c->st->dns, DNS_T_AAAA, host, NULL) != NULL && known;
    if (!known)
        c->pending = true;
    return known;
}

static int host_addrs(ectx_t *c, const char *host, const dns_answer_t **a4, const dns_answer_t **a6,
                      const char **gai_error, const char **dns_text)
{
    *a4 = dq(c, DNS_T_A, host);
    *a6 = dq(c, DNS_T_AAAA, host);
    if (!*a4 || !*a6)
        return -2;
    if ((*a4)->status == DNS_OK || (*a6)->status == DNS_OK)
        return 1;
    if ((*a4)->status == DNS_TEMPFAIL || (*a6)->status == DNS_TEMPFAIL) {
        *gai_error = gai_strerror(EAI_AGAIN);
        *dns_text = "Host not found, try again";
    } else if ((*a4)->status == DNS_NXDOMAIN) {
        *gai_error = gai_strerror(EAI_NONAME);
        *dns_text = "Host not found";
    } else {
        *gai_error = gai_strerror(EAI_NODATA);
        *dns_text = "Host found but no data record of requested type";
    }
    return 0;
}

/* Postfix's i_am_mx over rr[from..to): an MX host named like this host
 * (mydestination, myhostname), else one with an address of ours
 * (inet_interfaces).  1 yes, 0 no, -2 an answer is missing.  A host whose
 * addresses cannot be found turns a later rejection into a deferral. */
static int i_am_mx(ectx_t *c, const step_t *s, const dns_answer_t *mx, size_t from, size_t to, const char *rcpt)
{
    policy_t *pol = c->pol;
    for (size_t i = from; i < to; i++) {
        const char *host = mx->rr[i].data;
        if (*host && (policy_local_domain(pol, host) || str_ieq(host, pol->myhostname))) {
            trace(c, "%s: MX host %s is this host (%s)", s->text, host,
                  str_ieq(host, pol->myhostname) ? "myhostname" : "mydestination");
            return 1;
        }
    }
    /* every address query at once; then decide in MX order */
    bool pending = false;
    for (size_t i = from; i < to; i++)
        if (*mx->rr[i].data && !host_addrs_known(c, mx->rr[i].data))   /* a null MX names no host */
            pending = true;
    if (pending)
        return -2;
    for (size_t i = from; i < to; i++) {
        const char *host = mx->rr[i].data;
        if (!*host)
            continue;
        const dns_answer_t *a[2];
        const char *gai_error = "", *dns_text = "";
        if (host_addrs(c, host, &a[0], &a[1], &gai_error, &dns_text) == 0) {
            defer_if(c, &c->dir, 450, "4.4.4", "<%s>: %s rejected: Unable to look up mail exchanger host %s: %s", rcpt,
                     "Recipient address", host, gai_error);
            continue;
        }
        for (int t = 0; t < 2; t++) {
            for (size_t k = 0; a[t]->status == DNS_OK && k < a[t]->n; k++) {
                if (netlist_match_text(pol->inet_if, a[t]->rr[k].data)) {
                    trace(c, "%s: MX host %s has an address of this host (%s, inet_interfaces)", s->text, host,
                          a[t]->rr[k].data);
                    return 1;
                }
            }
        }
    }
    return 0;
}

/* Postfix's permit_mx_primary: every address of every best MX host is in
 * permit_mx_backup_networks.  1 yes, 0 no, -2 an answer is missing. */
static int primaries_allowed(ectx_t *c, const step_t *s, const dns_answer_t *mx, size_t np, const char *rcpt)
{
    bool pending = false;
    for (size_t i = 0; i < np; i++)
        if (*mx->rr[i].data && !host_addrs_known(c, mx->rr[i].data))
            pending = true;
    if (pending)
        return -2;
    buf_t why = BUF_INIT;
    int rc = 1;
    for (size_t i = 0; rc == 1 && i < np; i++) {
        const char *host = mx->rr[i].data;
        const dns_answer_t *a[2];
        const char *gai_error = "", *dns_text = "Host not found";
        if (!*host || host_addrs(c, host, &a[0], &a[1], &gai_error, &dns_text) == 0) {
            defer_if(c, &c->dir, 450, "4.4.4", "<%s>: %s rejected: Unable to look up host %s as mail exchanger: %s",
                     rcpt, "Recipient address", host, dns_text);
            rc = 0;
            break;
        }
        for (int t = 0; rc == 1 && t < 2; t++) {
            for (size_t k = 0; rc == 1 && a[t]->status == DNS_OK && k < a[t]->n; k++) {
                const char *addr = a[t]->rr[k].data;
                al_result r = addrlist_match(c->pol->mx_networks, addr, &why);
                if (r == AL_MATCH)
                    continue;
                rc = 0;
                if (r == AL_ERROR) {
                    warnf(c, "permit_mx_backup_networks: lookup error for address %s for %s: %s", addr, host,
                          buf_cstr(&why));
                    defer_if(c, &c->dir, 450, "4.4.4",
                             "<%s>: %s rejected: Unable to verify host %s as mail exchanger", rcpt,
                             "Recipient address", host);
                } else {
                    trace(c, "%s: address %s of best MX host %s is not in permit_mx_backup_networks", s->text, addr,
                          host);
                }
            }
        }
    }
    buf_free(&why);
    return rc;
}

/* permit_mx_backup, as Postfix: an authorized destination (mydestination,
 * relay_domains) is permitted at once; otherwise the recipient domain is
 * permitted when this host is one of its backup MX hosts but not one of
 * its best ones (mail from a best MX to us would loop), and, with
 * permit_mx_backup_networks, when every address of every best MX host is
 * in those networks.  A DNS failure turns a later rejection into a
 * deferral (defer_if_reject), never into a permit. */
static int mx_backup(ectx_t *c, const step_t *s)
{
    const pstate_t *st = c->st;
    if (!st->recipient || !*st->recipient || c->cmd == PCMD_ETRN)
        return S_DUNNO;
    const char *rcpt = st->recipient;
    switch (auth_dest(c, s, rcpt)) {
    case DEST_ERROR:
        return dest_error(c, rcpt);
    case DEST_LOCAL:
    case DEST_RELAY:
        return acl_permit(c, "permit_mx_backup", "Recipient address", rcpt, NULL);
    default:
        break;
    }
    const char *d = domain_of(rcpt);
    if (routed(rcpt) || !d || !*d || d[0] == '[')
        return S_DUNNO;
    char buf[300];
    d = trim_dot(d, buf, sizeof buf);
    const dns_answer_t *mx = dq(c, DNS_T_MX, d);
    if (!mx)
        return S_PENDING;
    if (mx->status != DNS_OK) {
        if (mx->status == DNS_TEMPFAIL) {
            warnf(c, "%s: DNS lookup of MX %s failed: %s", s->text, d, mx->error);
            defer_if(c, &c->dir, 450, "4.4.4",
                     "<%s>: %s rejected: Unable to look up mail exchanger information: Host not found, try again",
                     rcpt, "Recipient address");
        } else {
            trace(c, "%s: %s has no MX record: not a backup", s->text, d);
        }
        return S_DUNNO;
    }
    /* MX answers come sorted by preference: the best ones first */
    size_t np = 1;
    while (np < mx->n && mx->rr[np].pref == mx->rr[0].pref)
        np++;
    int r = i_am_mx(c, s, mx, 0, np, rcpt);
    if (r == -2)
        return S_PENDING;
    if (r == 1) {
        trace(c, "%s: this host is a best MX host of %s, not a backup", s->text, d);
        return S_DUNNO;
    }
    if (np == mx->n) {
        trace(c, "%s: %s has no backup MX host", s->text, d);
        return S_DUNNO;
    }
    r = i_am_mx(c, s, mx, np, mx->n, rcpt);
    if (r == -2)
        return S_PENDING;
    if (r == 0) {
        trace(c, "%s: this host is not an MX host of %s", s->text, d);
        return S_DUNNO;
    }
    if (c->pol->mx_networks) {
        r = primaries_allowed(c, s, mx, np, rcpt);
        if (r == -2)
            return S_PENDING;
        if (r == 0)
            return S_DUNNO;
        trace(c, "%s: every address of the best MX hosts of %s is in permit_mx_backup_networks", s->text, d);
    }
    return acl_permit(c, "permit_mx_backup", "Recipient address", rcpt, NULL);
}

static int dns_step(ectx_t *c, const step_t *s, const char *rname, const char *rclass)
{
    if (no_dns(c))
        return server_error(c);
    switch (s->kind) {
    case R_UNKNOWN_CLIENT:
    case R_UNKNOWN_REVERSE:
    case R_UNKNOWN_FORWARD:
        return unknown_client(c, s);
    case R_UNKNOWN_HELO:
        return unknown_helo(c, s);
    case R_UNKNOWN_SENDER_DOMAIN:
        return c->st->sender && *c->st->sender ? unknown_domain(c, s, c->st->sender, "Sender address", true) : S_DUNNO;
    case R_UNKNOWN_RCPT_DOMAIN:
        if (!c->st->recipient || c->cmd == PCMD_ETRN)
            return S_DUNNO;
        return unknown_domain(c, s, c->st->recipient, "Recipient address", false);
    case R_UNKNOWN_ADDRESS:
        /* The address this class is about. */
        if (strcmp(rclass, "Sender address") == 0 && *rname)
            return unknown_domain(c, s, rname, rclass, true);
        if (strcmp(rclass, "Recipient address") == 0 && *rname)
            return unknown_domain(c, s, rname, rclass, false);
        return S_DUNNO;
    case R_MAPS_RBL:
        return maps_rbl(c, s);
    case R_DNSBL_SCORE:
        return dnsbl_score(c, s);
    case R_DNS_ACCESS:
        return dns_access(c, s);
    case R_MX_BACKUP:
        return mx_backup(c, s);
    default:
        return dns_list(c, s, s->site, s->text + strcspn(s->text, " ") + 1);
    }
}

/* ------------------------------------------------- check_policy_service */

/* Postfix's default when a default action itself fails (nesting). */
#define POLICY_BUILTIN_DEFAULT "451 4.3.5 Server configuration problem"

static const char *stage_name(pcmd_t cmd, const pstate_t *st);

static unsigned sockaddr_port(const struct sockaddr *sa)
{
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

static void sockaddr_text(const struct sockaddr *sa, char *out, size_t size)
{
    out[0] = 0;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)size);
}

/* FNV-1a, for an instance made up when the caller gives none. */
static uint64_t fnv(uint64_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}

/* RFC 3461 xtext of s (NULL: nothing): '+', '=' and bytes outside
 * 33..126 as "+XX". */
static void xtext_append(buf_t *out, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 33 || c > 126 || c == '+' || c == '=')
            buf_printf(out, "+%02X", c);
        else
            buf_putc(out, (char)c);
    }
}

void policy_request_text(const policy_t *pol, pcmd_t cmd, const pstate_t *st, const char *context, buf_t *out)
{
    char num[32], addr[INET6_ADDRSTRLEN], instance[64];
    buf_reset(out);
    policysvc_attr(out, "request", "smtpd_access_policy");
    policysvc_attr(out, "protocol_state", stage_name(cmd, st));
    policysvc_attr(out, "protocol_name", st->protocol ? st->protocol : "SMTP");
    policysvc_attr(out, "client_address", st->client_addr ? st->client_addr : "");
    policysvc_attr(out, "client_name", st->client_name ? st->client_name : "unknown");
    snprintf(num, sizeof num, "%u", sockaddr_port(st->peer));
    policysvc_attr(out, "client_port", num);
    policysvc_attr(out, "reverse_client_name", st->reverse_name ? st->reverse_name : "unknown");
    sockaddr_text(st->local, addr, sizeof addr);
    policysvc_attr(out, "server_address", addr);
    snprintf(num, sizeof num, "%u", sockaddr_port(st->local));
    policysvc_attr(out, "server_port", num);
    policysvc_attr(out, "helo_name", st->helo ? st->helo : "");
    policysvc_attr(out, "sender", st->sender ? st->sender : "");
    /* RCPT's recipient; at DATA and end of data the only one, if one
     * (restrict.h); ETRN's argument is the etrn_domain. */
    bool rcpt_cmd = cmd == PCMD_RCPT || cmd == PCMD_DATA || cmd == PCMD_EOD;
    policysvc_attr(out, "recipient", rcpt_cmd && st->recipient ? st->recipient : "");
    snprintf(num, sizeof num, "%u", cmd == PCMD_DATA || cmd == PCMD_EOD ? st->nrcpt : 0);
    policysvc_attr(out, "recipient_count", num);
    policysvc_attr(out, "queue_id", st->queue_id ? st->queue_id : "");
    if (st->instance && *st->instance) {
        str_copy(instance, st->instance, sizeof instance);
    } else {
        /* Stable for a session's transaction, different for another
         * session or sender: the key of the memo must not change between
         * passes of one command. */
        char ptr[32];
        snprintf(ptr, sizeof ptr, "%p", (void *)st->dns);
        uint64_t h = fnv(fnv(fnv(14695981039346656037ULL, ptr), st->client_addr), st->sender);
        snprintf(instance, sizeof instance, "%x.%llx", (unsigned)getpid(), (unsigned long long)h);
    }
    policysvc_attr(out, "instance", instance);
    snprintf(num, sizeof num, "%llu", st->size);
    policysvc_attr(out, "size", num);
    policysvc_attr(out, "etrn_domain", cmd == PCMD_ETRN && st->recipient ? st->recipient : "");
    policysvc_attr(out, "stress", st->stress ? "yes" : "");
    bool sasl = st->sasl_user && *st->sasl_user;
    policysvc_attr(out, "sasl_method", sasl && st->sasl_method ? st->sasl_method : "");
    policysvc_attr(out, "sasl_username", sasl ? st->sasl_user : "");
    policysvc_attr(out, "sasl_sender", st->sasl_sender ? st->sasl_sender : "");
    /* As Postfix: the names of a verified certificate only, xtext-encoded */
    buf_t x = BUF_INIT;
    xtext_append(&x, st->ccert_verified ? st->ccert_subject : NULL);
    policysvc_attr(out, "ccert_subject", buf_cstr(&x));
    buf_reset(&x);
    xtext_append(&x, st->ccert_verified ? st->ccert_issuer : NULL);
    policysvc_attr(out, "ccert_issuer", buf_cstr(&x));
    buf_free(&x);
    policysvc_attr(out, "ccert_fingerprint", st->ccert_fingerprint ? st->ccert_fingerprint : "");
    policysvc_attr(out, "ccert_pubkey_fingerprint", st->ccert_pubkey_fingerprint ? st->ccert_pubkey_fingerprint : "");
    policysvc_attr(out, "encryption_protocol", st->tls_protocol ? st->tls_protocol : "");
    policysvc_attr(out, "encryption_cipher", st->tls_cipher ? st->tls_cipher : "");
    snprintf(num, sizeof num, "%u", st->tls_protocol ? st->tls_keysize : 0);
    policysvc_attr(out, "encryption_keysize", num);
    policysvc_attr(out, "policy_context", context ? context : "");
    policysvc_attr(out, "compatibility_level", pol->compat_level);
    policysvc_attr(out, "mail_version", pol->mail_version);
    buf_putc(out, '\n');
}

typedef struct policy_start_arg {
    policysvc_t *svc;
    const char *request;
} policy_start_arg_t;

/* The memo's value for a policy answer: "A attempts ms action",
 * "N attempts ms" (a reply without action), "E attempts ms error". */
static void policy_answer(void *arg, const policysvc_result_t *r)
{
    buf_t v = BUF_INIT;
    if (r->ok && r->action)
        buf_printf(&v, "A %u %u %s", r->attempts, r->ms, r->action);
    else if (r->ok)
        buf_printf(&v, "N %u %u", r->attempts, r->ms);
    else
        buf_printf(&v, "E %u %u %s", r->attempts, r->ms, r->error ? r->error : "failed");
    memo_op_done(arg, buf_cstr(&v));
    buf_free(&v);
}

static void *policy_start(void *arg, const char *key, memo_op_t *op)
{
    (void)key;
    policy_start_arg_t *a = arg;
    return policysvc_request(a->svc, memo_op_base(op), a->request, policy_answer, op);
}

static void policy_cancel(void *handle)
{
    policysvc_cancel(handle);
}

static int policy_service(ectx_t *c, const step_t *s, const char *rname, const char *rclass)
{
    const char *server = policysvc_name(s->psvc);
    if (!c->st->dns) {
        warnf(c, "%s: no event loop in this context", s->text);
        return server_error(c);
    }
    const policysvc_opts_t *o = policysvc_settings(s->psvc);
    buf_t req = BUF_INIT, key = BUF_INIT;
    policy_request_text(c->pol, c->cmd, c->st, o->policy_context, &req);
    buf_printf(&key, "policy:%s\n", policysvc_key(s->psvc));
    buf_append(&key, req.data, req.len);
    policy_start_arg_t arg = {s->psvc, buf_cstr(&req)};
    const char *val = dns_memo_ext(c->st->dns, buf_cstr(&key), policy_start, policy_cancel, &arg);
    buf_free(&key);
    if (!val) {
        buf_free(&req);
        c->pending = true;
        return S_PENDING;
    }
    if (c->trace) {
        trace(c, "%s: request:", s->text);
        const char *p = buf_cstr(&req);
        while (*p && *p != '\n') {
            size_t n = strcspn(p, "\n");
            trace(c, "    %.*s", (int)n, p);
            p += n + (p[n] ? 1 : 0);
        }
    }
    buf_free(&req);
    char kind = val[0];
    unsigned attempts = 0, ms = 0;
    int used = 0;
    if (sscanf(val, "%*c %u %u%n", &attempts, &ms, &used) < 2)
        used = (int)strlen(val);
    const char *text = val + used;
    if (*text == ' ')
        text++;
    char tries[32] = "";
    if (attempts > 1)
        snprintf(tries, sizeof tries, ", %u attempts", attempts);
    const char *why = NULL;
    char reason[300];
    if (kind == 'A') {
        trace(c, "%s: answer: action=%s (%u ms%s)", s->text, text, ms, tries);
        if (!c->pol->smtputf8 || policysvc_valid_utf8(text))
            return apply_result(c, server, text, "policy query", rname, rclass, (map_origin_t){0});
        warnf(c, "malformed UTF-8 in policy server %s response: \"%s\"", server, text);
        why = "malformed UTF-8 in the action";
    } else if (kind == 'N') {
        trace(c, "%s: answer without an action attribute (%u ms%s)", s->text, ms, tries);
        warnf(c, "policy server %s: reply without an action attribute", server);
        why = "no action in the reply";
    } else {
        trace(c, "%s: no answer: %s (%u ms%s)", s->text, text, ms, tries);
        warnf(c, "problem talking to server %s: %s", server, text);
        snprintf(reason, sizeof reason, "%s", text);
        why = reason;
    }
    /* Postfix: the default action is a table result like any answer; one
     * that leads to another failing policy query falls back to the
     * built-in default instead of looping. */
    const char *def = c->policy_default ? POLICY_BUILTIN_DEFAULT : o->default_action;
    trace(c, "%s: %s: default_action %s", s->text, why, def);
    c->policy_default++;
    int rc = apply_result(c, server, def, "policy query", rname, rclass, (map_origin_t){0});
    c->policy_default--;
    return rc;
}

/* ------------------------------------------------------- state steps */

static void ss_begin(ectx_t *c, ss_ctx_t *sc, const char *step)
{
    *sc = (ss_ctx_t){.st = c->st, .cmd = c->cmd, .p = c->pol->params, .env = &c->pol->env, .memo = c->st->dns,
                     .step = step, .top = c->top, .now = time(NULL), .trace = c->trace,
                     .warnings = &c->v->warnings, .prepend = &c->v->prepend, .fx = c->pol->fx};
}

/* A module's answer (sstep.h) as the engine's. */
static int ss_result(ectx_t *c, ss_ctx_t *sc, ss_status_t r, const char *rname, const char *rclass)
{
    switch (r) {
    case SS_PENDING:
        c->pending = true;
        return S_PENDING;
    case SS_PERMIT:
        return acl_permit(c, sc->step, rclass, rname, NULL);
    case SS_REJECT:
        if (sc->whole_text || !*rclass)
            return reject(c, false, sc->code, sc->dsn, "%s", sc->text);
        return reject(c, false, sc->code, sc->dsn, "<%s>: %s rejected: %s", rname, rclass, sc->text);
    case SS_DEFER_IF_PERMIT:
        if (sc->whole_text || !*rclass)
            return tempfail(c, false, sc->code, sc->dsn, "%s", sc->text);
        return tempfail(c, false, sc->code, sc->dsn, "<%s>: %s rejected: %s", rname, rclass, sc->text);
    case SS_DUNNO:
        break;
    }
    return S_DUNNO;
}

/* "corr:<address>", the address in lower case. */
static void correspondent_key(char *key, size_t size, const char *addr)
{
    snprintf(key, size, "corr:%s", addr);
    str_lower(key);
}

static int correspondent_step(ss_ctx_t *sc)
{
    const char *sender = sc->st->sender;
    if (!sender || !*sender) {
        ss_trace(sc, "no sender (or the null sender) -> DUNNO");
        return SS_DUNNO;
    }
    char key[KEY_MAX];
    correspondent_key(key, sizeof key, sender);
    ss_value_t val;
    switch (ss_store_get(sc, key, &val)) {
    case SG_PENDING:
        return SS_PENDING;
    case SG_ERROR:
        /* an allow list that cannot be read allows nothing */
        ss_log(sc, "warning", "permit_known_correspondent: state store: %s", val.error);
        ss_trace(sc, "state store failed (%s) -> DUNNO", val.error);
        return SS_DUNNO;
    case SG_MISSING:
        ss_trace(sc, "%s: not a known correspondent -> DUNNO", sender);
        return SS_DUNNO;
    case SG_FOUND:
        break;
    }
    ss_trace(sc, "%s: a known correspondent (a local user wrote to it; %s)", sender, val.data);
    return SS_PERMIT;
}

static int state_step(ectx_t *c, const step_t *s, const char *rname, const char *rclass)
{
    if (c->prefetch)
        return S_DUNNO;
    ss_ctx_t sc;
    ss_begin(c, &sc, s->text);
    ss_status_t r = SS_DUNNO;
    switch (s->kind) {
    case R_GREYLIST:
        r = greylist_step(c->pol->grey, &sc);
        break;
    case R_UNVERIFIED_SENDER:
        r = unverified_step(&sc, true);
        break;
    case R_UNVERIFIED_RCPT:
        r = unverified_step(&sc, false);
        break;
    case R_KNOWN_CORRESPONDENT:
        r = correspondent_step(&sc);
        break;
    case R_CHECK_SPF:
        r = spf_check_step(c->pol->spf, &sc);
        break;
    default:
        return server_error(c);
    }
    return ss_result(c, &sc, r, rname, rclass);
}

/* The rate and abuse limits, before the classes (anvil.h). */
static int limits_stage(ectx_t *c)
{
    static const step_t limits = {.kind = R_NONE, .text = (char *)"anvil"};
    const char *saved = c->top;
    c->top = "limits";
    c->step = &limits;
    ss_ctx_t sc;
    ss_begin(c, &sc, "anvil");
    int rc = ss_result(c, &sc, anvil_stage(c->pol->anvil, &sc), "", "");
    c->step = NULL;
    c->top = saved;
    return rc;
}

/* ------------------------------------------------ TLS and SASL steps */

/* A client certificate came with the TLS session: the session passes its
 * fingerprint whenever the client sent one, verified or not. */
static bool ccert_present(const pstate_t *st)
{
    return st->tls_protocol && st->ccert_fingerprint && *st->ccert_fingerprint;
}

/* permit_tls_clientcerts and permit_tls_all_clientcerts, as Postfix's
 * permit_tls_clientcerts: the "all" form permits a verified certificate
 * at once; both then look the certificate's fingerprint, then its public
 * key's, up in relay_clientcerts.  A listed fingerprint needs no trusted
 * issuer: the handshake proved that the client holds the key. */
static int permit_clientcerts(ectx_t *c, const step_t *s, const char *rname)
{
    policy_t *pol = c->pol;
    const pstate_t *st = c->st;
    const char *action = s->kind == R_PERMIT_TLS_ALL ? "permit_tls_all_clientcerts" : "permit_tls_clientcerts";
    if (!st->tls_protocol) {
        trace(c, "%s: no TLS session", s->text);
        return S_DUNNO;
    }
    if (s->kind == R_PERMIT_TLS_ALL && st->ccert_verified) {
        trace(c, "%s: the client certificate (%s) is verified", s->text,
              st->ccert_subject && *st->ccert_subject ? st->ccert_subject : "no subject name");
        return acl_permit(c, action, "Client host", c->namaddr, NULL);
    }
    if (!ccert_present(st)) {
        trace(c, "%s: the client sent no certificate", s->text);
        return S_DUNNO;
    }
    if (s->kind == R_PERMIT_TLS_ALL)
        trace(c, "%s: the client certificate is not verified", s->text);
    if (pol->ccerts_broken) {
        warnf(c, "relay_clientcerts: %s", pol->ccerts_broken);
        return server_error(c);
    }
    if (!pol->nccerts) {
        trace(c, "%s: relay_clientcerts is empty", s->text);
        return S_DUNNO;
    }
    const char *fp = st->ccert_fingerprint, *pk = st->ccert_pubkey_fingerprint;
    const char *keys[2] = {fp, pk};
    for (int k = 0; k < 2; k++) {
        if (!keys[k] || !*keys[k])
            continue;
        for (size_t i = 0; i < pol->nccerts; i++) {
            map_origin_t origin = {0};
            map_t *m = pol->ccerts[i];
            map_status ms = map_lookup(m, keys[k], &pol->value, &origin);
            if (ms == MAP_NOTFOUND) {
                trace(c, "%s: %s %s not found in %s", s->text, k ? "public key fingerprint" : "fingerprint", keys[k],
                      map_name(m));
                continue;
            }
            if (ms == MAP_TEMPFAIL) {
                warnf(c, "%s lookup error for \"%s\": %s", map_name(m), keys[k], buf_cstr(&pol->value));
                warnf(c, "relay_clientcerts: lookup error for fingerprint '%s', pkey fingerprint %s", fp,
                      pk ? pk : "");
                return reject(c, true, 451, "4.3.0", "<%s>: Temporary lookup failure", rname);
            }
            if (origin.file)
                trace(c, "%s: %s %s found in %s at %s:%d", s->text, k ? "public key fingerprint" : "fingerprint",
                      keys[k], map_name(m), origin.file, origin.line);
            else
                trace(c, "%s: %s %s found in %s", s->text, k ? "public key fingerprint" : "fingerprint", keys[k],
                      map_name(m));
            return acl_permit(c, action, "Client host", c->namaddr, NULL);
        }
    }
    return S_DUNNO;
}

/* check_ccert_access: the certificate's fingerprint, then its public
 * key's, each a whole key (Postfix); reply class "Client certificate"
 * with the certificate's subject name.  No trusted issuer needed. */
static int check_ccert(ectx_t *c, const step_t *s)
{
    const pstate_t *st = c->st;
    if (!ccert_present(st)) {
        trace(c, "%s: %s", s->text, st->tls_protocol ? "the client sent no certificate" : "no TLS session");
        return S_DUNNO;
    }
    const char *cn = st->ccert_subject ? st->ccert_subject : "";
    const char *keys[2] = {st->ccert_fingerprint, st->ccert_pubkey_fingerprint};
    for (int k = 0; k < 2; k++) {
        if (!keys[k] || !*keys[k])
            continue;
        lookup_t l;
        lookup_init(&l, c, s);
        try_key(keys[k], &l);
        if (l.status == MAP_NOTFOUND)
            continue;
        /* a DUNNO result for the certificate still lets its key decide */
        int rc = lookup_done(c, &l, cn, "Client certificate");
        if (rc != S_DUNNO)
            return rc;
    }
    return S_DUNNO;
}

/* The SASL restrictions apply only where AUTH is on (Postfix: the
 * restriction is ignored with a warning). */
static int sasl_ignored(ectx_t *c, const step_t *s)
{
    warnf(c, "restriction `%.*s' ignored: no SASL support (smtpd_sasl_auth_enable = no)", (int)strcspn(s->text, " "),
          s->text);
    return S_DUNNO;
}

/* check_sasl_access: the login name as the key (Postfix 2.11), reply
 * class "SASL login name"; for an authenticated client only. */
static int check_sasl(ectx_t *c, const step_t *s)
{
    const char *user = c->st->sasl_user;
    if (!c->pol->sasl_enable)
        return sasl_ignored(c, s);
    if (!user || !*user) {
        trace(c, "%s: the client is not authenticated", s->text);
        return S_DUNNO;
    }
    char sane[KEY_MAX + 1];
    str_copy(sane, user, sizeof sane);
    for (char *p = sane; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '_';
    lookup_t l;
    lookup_init(&l, c, s);
    try_key(user, &l);
    if (l.status == MAP_NOTFOUND)
        return S_DUNNO;
    return lookup_done(c, &l, sane, "SASL login name");
}

/* The length of a local part without its address extension (Postfix's
 * split_addr): llen when it has none or must keep it (postmaster,
 * MAILER-DAEMON; owner-foo and foo-request when '-' is a delimiter; an
 * extension that would leave nothing). */
static size_t local_base(const policy_t *pol, const char *local, size_t llen)
{
    const char *d = pol->delim;
    if (!*d || !llen)
        return llen;
    if ((llen == 10 && str_nieq(local, "postmaster", 10)) || (llen == 13 && str_nieq(local, "mailer-daemon", 13)))
        return llen;
    if (strchr(d, '-') && ((llen >= 6 && str_nieq(local, "owner-", 6)) ||
                           (llen > 8 && str_nieq(local + llen - 8, "-request", 8))))
        return llen;
    size_t n = 0;
    while (n < llen && !strchr(d, local[n]))
        n++;
    return n == 0 || n == llen ? llen : n;
}

/* Is domain one whose bare local parts the login maps may hold
 * (Postfix's mail_addr_find: $myorigin, mydestination, or an address
 * literal of inet_interfaces)?  domain is in lower case. */
static bool login_local_domain(const policy_t *pol, const char *domain)
{
    if (str_ieq(domain, pol->myorigin) || policy_local_domain(pol, domain))
        return true;
    size_t n = strlen(domain);
    if (n < 3 || domain[0] != '[' || domain[n - 1] != ']' || !pol->inet_if)
        return false;
    char addr[INET6_ADDRSTRLEN + 8];
    const char *in = domain + 1;
    n -= 2;
    if (n > 5 && str_nieq(in, "ipv6:", 5)) {
        in += 5;
        n -= 5;
    }
    if (n >= sizeof addr)
        return false;
    memcpy(addr, in, n);
    addr[n] = 0;
    return netlist_match_text(pol->inet_if, addr);
}

/* The owners of sender in smtpd_sender_login_maps, looked up as Postfix's
 * mail_addr_find does: user+ext@domain, user@domain; when the domain is
 * local also user+ext and user; then @domain (an address without a
 * domain is in $myorigin).  Key by key, each table in turn; a pattern
 * table sees the full address only.  The value is left in pol->value,
 * the key that matched in key and its table in *map. */
static map_status login_owners(ectx_t *c, const step_t *s, const char *sender, char *key, size_t ksize, map_t **map,
                               map_origin_t *origin)
{
    policy_t *pol = c->pol;
    const char *at = strrchr(sender, '@');
    size_t llen = at ? (size_t)(at - sender) : strlen(sender);
    char domain[KEY_MAX + 1], keys[5][KEY_MAX + 1];
    if (str_copy(domain, at ? at + 1 : pol->myorigin, sizeof domain) >= sizeof domain || llen > KEY_MAX)
        return MAP_NOTFOUND;   /* longer than any table line */
    str_lower(domain);
    size_t base = local_base(pol, sender, llen);
    int nkeys = 0;
    if (snprintf(keys[nkeys], sizeof keys[0], "%.*s@%s", (int)llen, sender, domain) >= (int)sizeof keys[0])
        return MAP_NOTFOUND;
    nkeys++;
    /* the later keys are shorter than the first, so none is cut */
    if (base < llen && snprintf(keys[nkeys], sizeof keys[0], "%.*s@%s", (int)base, sender, domain) > 0)
        nkeys++;
    if (login_local_domain(pol, domain)) {
        if (snprintf(keys[nkeys], sizeof keys[0], "%.*s", (int)llen, sender) > 0)
            nkeys++;
        if (base < llen && snprintf(keys[nkeys], sizeof keys[0], "%.*s", (int)base, sender) > 0)
            nkeys++;
    }
    if (snprintf(keys[nkeys], sizeof keys[0], "@%s", domain) > 0)
        nkeys++;
    for (int k = 0; k < nkeys; k++) {
        for (size_t i = 0; i < pol->nlogin; i++) {
            map_t *m = pol->login_maps[i];
            if (k > 0 && is_pattern_table(map_name(m)))
                continue;
            map_status ms = map_lookup(m, keys[k], &pol->value, origin);
            if (ms == MAP_NOTFOUND) {
                trace(c, "%s: %s not found in %s", s->text, keys[k], map_name(m));
                continue;
            }
            str_copy(key, keys[k], ksize);
            *map = m;
            return ms;
        }
    }
    return MAP_NOTFOUND;
}

/* Is user one of the owners (a list of login names, separated by commas
 * or white space, compared without regard to case)? */
static bool login_owned_by(const char *owners, const char *user)
{
    size_t ul = strlen(user);
    for (const char *p = owners; *p;) {
        p += strspn(p, ", \t\r\n");
        size_t n = strcspn(p, ", \t\r\n");
        if (n && n == ul && str_nieq(p, user, n))
            return true;
        p += n;
    }
    return false;
}

/* reject_sender_login_mismatch and its authenticated / known /
 * unauthenticated forms, as Postfix: an authenticated client must be one
 * of the sender's owners (the known form: when the sender has owners);
 * an unauthenticated client may not use a sender that has owners. */
static int login_mismatch(ectx_t *c, const step_t *s)
{
    policy_t *pol = c->pol;
    const pstate_t *st = c->st;
    if (!pol->sasl_enable)
        return sasl_ignored(c, s);
    const char *sender = st->sender;
    if (!sender || !*sender) {
        trace(c, "%s: %s", s->text, sender ? "the null sender has no owner" : "no sender");
        return S_DUNNO;
    }
    const char *user = st->sasl_user && *st->sasl_user ? st->sasl_user : NULL;
    if (user && s->kind == R_UNAUTH_LOGIN_MISMATCH) {
        trace(c, "%s: the client is authenticated (%s)", s->text, user);
        return S_DUNNO;
    }
    if (!user && s->kind == R_AUTH_LOGIN_MISMATCH) {
        trace(c, "%s: the client is not authenticated", s->text);
        return S_DUNNO;
    }
    if (pol->login_broken) {
        warnf(c, "smtpd_sender_login_maps: %s", pol->login_broken);
        return server_error(c);
    }
    char key[KEY_MAX + 1] = "";
    map_t *m = NULL;
    map_origin_t origin = {0};
    map_status ms = login_owners(c, s, sender, key, sizeof key, &m, &origin);
    if (ms == MAP_TEMPFAIL) {
        warnf(c, "%s lookup error for \"%s\": %s", map_name(m), key, buf_cstr(&pol->value));
        return reject(c, true, 451, "4.3.0", "<%s>: Temporary lookup failure", sender);
    }
    if (ms == MAP_FOUND) {
        if (origin.file)
            trace(c, "%s: %s found in %s at %s:%d: owners %s", s->text, key, map_name(m), origin.file, origin.line,
                  buf_cstr(&pol->value));
        else
            trace(c, "%s: %s found in %s: owners %s", s->text, key, map_name(m), buf_cstr(&pol->value));
    } else if (!pol->nlogin) {
        trace(c, "%s: smtpd_sender_login_maps is empty: %s has no owner", s->text, sender);
    } else {
        trace(c, "%s: %s has no owner", s->text, sender);
    }
    map_origin_t saved = c->origin;
    int rc = S_DUNNO;
    if (!user) {
        if (ms == MAP_FOUND) {
            c->origin = origin;
            rc = reject(c, false, 553, "5.7.1", "<%s>: Sender address rejected: not logged in", sender);
        }
    } else if (ms == MAP_FOUND) {
        if (login_owned_by(buf_cstr(&pol->value), user)) {
            trace(c, "%s: %s is an owner", s->text, user);
        } else {
            c->origin = origin;
            rc = reject(c, false, 553, "5.7.1", "<%s>: Sender address rejected: not owned by user %s", sender, user);
        }
    } else if (s->kind != R_KNOWN_LOGIN_MISMATCH) {
        rc = reject(c, false, 553, "5.7.1", "<%s>: Sender address rejected: not owned by user %s", sender, user);
    }
    c->origin = saved;
    return rc;
}

static int run_step(ectx_t *c, const step_t *s, const char *rname, const char *rclass)
{
    policy_t *pol = c->pol;
    const pstate_t *st = c->st;
    c->step = s;
    switch (s->kind) {
    case R_PERMIT:
        return acl_permit(c, "permit", rclass, rname, NULL);
    case R_REJECT:
        return reject(c, false, pol->reject_code, "5.7.1", "<%s>: %s rejected: Access denied", rname, rclass);
    case R_DEFER:
        return reject(c, false, pol->defer_code, "4.3.2", "<%s>: %s rejected: Try again later", rname, rclass);
    case R_DEFER_IF_PERMIT:
        if (!c->warn_if_reject)
            defer_if(c, &c->dip, 450, "4.7.0", "<%s>: %s rejected: defer_if_permit requested", rname, rclass);
        else
            reject(c, false, 450, "4.7.0", "<%s>: %s rejected: defer_if_permit requested", rname, rclass);
        return S_DUNNO;
    case R_DEFER_IF_REJECT:
        defer_if(c, &c->dir, 450, "4.7.0", "<%s>: %s rejected: defer_if_reject requested", rname, rclass);
        return S_DUNNO;
    case R_WARN_IF_REJECT:
        return S_DUNNO;   /* handled by run_list */
    case R_SLEEP:
        c->v->sleep += (unsigned)s->arg;
        trace(c, "%s: the reply waits %u s in all", s->text, c->v->sleep);
        return S_DUNNO;
    case R_PERMIT_MYNETWORKS:
        return permit_mynetworks(c, s, rname);
    case R_PERMIT_INET_IF:
        return permit_inet_interfaces(c, s);
    case R_REJECT_UNLISTED_RCPT:
        if (!st->recipient || !*st->recipient || c->cmd == PCMD_ETRN)
            return S_DUNNO;
        return unlisted(c, s, st->recipient, false);
    case R_REJECT_UNLISTED_SENDER:
        if (!st->sender || !*st->sender)
            return S_DUNNO;   /* the null sender is never unlisted */
        return unlisted(c, s, st->sender, true);
    case R_CHECK_RELAY_DOMAINS:
        return check_relay_domains(c, s);
    case R_PERMIT_SASL:
        if (st->sasl_user && *st->sasl_user)
            return acl_permit(c, "permit_sasl_authenticated", "Client host", c->namaddr, NULL);
        trace(c, "%s: not authenticated", s->text);
        return S_DUNNO;
    case R_PERMIT_AUTH_DEST:
        if (!st->recipient || c->cmd == PCMD_ETRN)
            return S_DUNNO;
        switch (auth_dest(c, s, st->recipient)) {
        case DEST_ERROR:
            return dest_error(c, st->recipient);
        case DEST_LOCAL:
        case DEST_RELAY:
            return acl_permit(c, "permit_auth_destination", "Recipient address", st->recipient, NULL);
        default:
            return S_DUNNO;
        }
    case R_REJECT_UNAUTH_DEST:
    case R_DEFER_UNAUTH_DEST:
        if (!st->recipient || c->cmd == PCMD_ETRN)
            return S_DUNNO;
        switch (auth_dest(c, s, st->recipient)) {
        case DEST_ERROR:
            return dest_error(c, st->recipient);
        case DEST_LOCAL:
        case DEST_RELAY:
            return S_DUNNO;
        default:
            break;
        }
        if (s->kind == R_REJECT_UNAUTH_DEST)
            return reject(c, false, pol->relay_code, "5.7.1", "<%s>: Relay access denied", st->recipient);
        return reject(c, false, pol->relay_code - 100, "4.7.1", "<%s>: Relay access denied", st->recipient);
    case R_REJECT_UNAUTH_PIPELINING:
        if (st->pipelined_early)
            return reject(c, false, pol->pipelining_code, "5.5.0",
                          "<%s>: %s rejected: Improper use of SMTP command pipelining", rname, rclass);
        return S_DUNNO;
    case R_REJECT_NON_FQDN_HELO:
        if (!st->helo)
            return S_DUNNO;
        if (st->helo[0] == '[')
            return reject_invalid_hostaddr(c, st->helo, st->helo, "Helo command");
        {
            char buf[300];
            const char *h = trim_dot(st->helo, buf, sizeof buf);
            if (!rs_valid_hostname(h, false, false) || !strchr(h, '.'))
                return reject(c, false, pol->non_fqdn_code, "5.5.2",
                              "<%s>: Helo command rejected: need fully-qualified hostname", st->helo);
        }
        return S_DUNNO;
    case R_REJECT_INVALID_HELO:
        if (!st->helo)
            return S_DUNNO;
        if (st->helo[0] == '[')
            return reject_invalid_hostaddr(c, st->helo, st->helo, "Helo command");
        {
            char buf[300];
            const char *h = trim_dot(st->helo, buf, sizeof buf);
            if (!rs_valid_hostname(h, false, false) && !rs_valid_hostaddr(h))
                return reject(c, false, pol->bad_name_code, "5.5.2", "<%s>: Helo command rejected: Invalid name",
                              st->helo);
        }
        return S_DUNNO;
    case R_PERMIT_NAKED_IP:
        warnf(c, "restriction permit_naked_ip_address is deprecated. Use permit_mynetworks or "
                 "permit_sasl_authenticated instead");
        if (st->helo && st->helo[strspn(st->helo, "0123456789.:")] == 0) {
            int rc = reject_invalid_hostaddr(c, st->helo, st->helo, "Helo command");
            return rc ? rc : acl_permit(c, "permit_naked_ip_address", "Helo command", st->helo, NULL);
        }
        return S_DUNNO;
    case R_REJECT_NON_FQDN_SENDER:
        if (st->sender && *st->sender)
            return reject_non_fqdn_address(c, st->sender, st->sender, "Sender address");
        return S_DUNNO;
    case R_REJECT_NON_FQDN_RCPT:
        if (st->recipient && c->cmd != PCMD_ETRN)
            return reject_non_fqdn_address(c, st->recipient, st->recipient, "Recipient address");
        return S_DUNNO;
    case R_REJECT_MULTI_RCPT_BOUNCE:
        if (st->sender && !*st->sender && st->nrcpt > (c->cmd == PCMD_RCPT ? 0u : 1u))
            return reject(c, false, pol->mul_rcpt_code, "5.5.3", "<%s>: %s rejected: Multi-recipient bounce", rname,
                          rclass);
        return S_DUNNO;
    case R_CHECK_CLIENT:
    case R_CHECK_REVERSE_CLIENT:
    case R_CHECK_HELO:
    case R_CHECK_SENDER:
    case R_CHECK_RCPT:
    case R_CHECK_ETRN:
        return run_check(c, s->kind, s);
    case R_TABLE:
        return run_check(c, c->implied, s);
    case R_CLASS:
        trace(c, "class %s", s->text);
        return run_list(c, &pol->classes[s->arg].list, rname, rclass);
    case R_RBL_CLIENT:
    case R_DNSWL_CLIENT:
    case R_RHSBL_CLIENT:
    case R_RHSBL_REVERSE:
    case R_RHSBL_HELO:
    case R_RHSBL_SENDER:
    case R_RHSBL_RCPT:
    case R_RHSWL_CLIENT:
    case R_MAPS_RBL:
    case R_DNSBL_SCORE:
    case R_UNKNOWN_CLIENT:
    case R_UNKNOWN_REVERSE:
    case R_UNKNOWN_FORWARD:
    case R_UNKNOWN_HELO:
    case R_UNKNOWN_SENDER_DOMAIN:
    case R_UNKNOWN_RCPT_DOMAIN:
    case R_UNKNOWN_ADDRESS:
    case R_MX_BACKUP:
    case R_DNS_ACCESS:
        return dns_step(c, s, rname, rclass);
    case R_POLICY_SERVICE:
        return policy_service(c, s, rname, rclass);
    case R_GREYLIST:
    case R_UNVERIFIED_SENDER:
    case R_UNVERIFIED_RCPT:
    case R_KNOWN_CORRESPONDENT:
    case R_CHECK_SPF:
        return state_step(c, s, rname, rclass);
    case R_PERMIT_TLS_CLIENTCERTS:
    case R_PERMIT_TLS_ALL:
        return permit_clientcerts(c, s, rname);
    case R_CHECK_CCERT:
        return check_ccert(c, s);
    case R_CHECK_SASL:
        return check_sasl(c, s);
    case R_REJECT_PLAINTEXT:
        if (st->tls_protocol) {
            trace(c, "%s: the session is encrypted (%s)", s->text, st->tls_protocol);
            return S_DUNNO;
        }
        return reject(c, false, pol->plaintext_code, "4.7.1", "Session encryption is required");
    case R_LOGIN_MISMATCH:
    case R_AUTH_LOGIN_MISMATCH:
    case R_KNOWN_LOGIN_MISMATCH:
    case R_UNAUTH_LOGIN_MISMATCH:
        return login_mismatch(c, s);
    case R_NONE:
        break;
    }
    return server_error(c);
}

/* Postfix's generic_checks: steps in order until one decides. */
static int run_list(ectx_t *c, const rlist_t *l, const char *rname, const char *rclass)
{
    int saved = c->recursion++;
    int status = S_DUNNO;
    for (size_t i = 0; i < l->n; i++) {
        const step_t *s = &l->steps[i];
        if (c->v->discard)
            break;
        if (s->kind == R_WARN_IF_REJECT) {
            if (!c->warn_if_reject)
                c->warn_if_reject = c->recursion;
            continue;
        }
        status = run_step(c, s, rname, rclass);
        if (c->warn_if_reject >= c->recursion)
            c->warn_if_reject = 0;
        if (status != S_DUNNO)
            break;
        if (c->dip.active && c->dir.active)
            break;
    }
    c->recursion = saved;
    /* A list that ended in warn_if_reject: nothing left for it to soften. */
    if (c->warn_if_reject >= c->recursion)
        c->warn_if_reject = 0;
    return status;
}

static rclass_t delegated_class(pcmd_t cmd)
{
    switch (cmd) {
    case PCMD_CONNECT: return RC_CLIENT;
    case PCMD_HELO: return RC_HELO;
    case PCMD_MAIL: return RC_SENDER;
    case PCMD_RCPT: return RC_RECIPIENT;
    case PCMD_DATA: return RC_DATA;
    case PCMD_EOD: return RC_EOD;
    case PCMD_ETRN: return RC_ETRN;
    case PCMD_STARTTLS:
    case PCMD_AUTH: break;
    }
    return RC_RECIPIENT;
}

/* One class, as one of Postfix's smtpd_check_* stages.  reset: start a
 * new stage (defer_if_reject and warn_if_reject do not carry over). */
static int stage(ectx_t *c, rclass_t rc, bool reset)
{
    const pstate_t *st = c->st;
    if (reset) {
        c->recursion = 0;
        c->warn_if_reject = 0;
        c->dir.active = false;
    }
    c->top = class_names[rc];
    c->step = NULL;
    const char *rname = "", *rclass = "";
    /* a delegated request (policy_restrictions): the class of its state */
    switch (rc == RC_POLICY ? delegated_class(c->cmd) : rc) {
    case RC_CLIENT:
        rname = c->namaddr, rclass = "Client host", c->implied = R_CHECK_CLIENT;
        break;
    case RC_HELO:
        rname = st->helo ? st->helo : "", rclass = "Helo command", c->implied = R_CHECK_HELO;
        break;
    case RC_SENDER:
        rname = st->sender ? st->sender : "", rclass = "Sender address", c->implied = R_CHECK_SENDER;
        break;
    case RC_RELAY:
    case RC_RECIPIENT:
        rname = st->recipient ? st->recipient : "", rclass = "Recipient address", c->implied = R_CHECK_RCPT;
        break;
    case RC_DATA:
        rname = "DATA", rclass = "Data command", c->implied = R_NONE;
        break;
    case RC_EOD:
        rname = "END-OF-MESSAGE", rclass = "End-of-data", c->implied = R_NONE;
        break;
    case RC_ETRN:
        rname = st->recipient ? st->recipient : "", rclass = "Etrn command", c->implied = R_CHECK_ETRN;
        break;
    default:
        break;
    }
    const rlist_t *l = &c->pol->top[rc];
    if (!l->n)
        return S_DUNNO;
    int status = run_list(c, l, rname, rclass);
    if (status == S_DUNNO)
        trace(c, "end of list -> permit");
    return status;
}

#define GO(status) ((status) != S_REJECT && (status) != S_PENDING)

/* The sender class, then (Postfix's smtpd_check_mail) the sender table
 * check when smtpd_reject_unlisted_sender asks for it. */
static int sender_stage(ectx_t *c)
{
    c->sender_checked = false;
    int status = stage(c, RC_SENDER, true);
    const char *sender = c->st->sender;
    if (GO(status) && c->pol->unlisted_sender && !c->sender_checked && !c->v->discard && sender && *sender) {
        int rc = implicit_unlisted(c, RC_SENDER, sender);
        if (rc == S_REJECT)
            status = rc;
    }
    return status;
}

static const char *stage_name(pcmd_t cmd, const pstate_t *st)
{
    switch (cmd) {
    case PCMD_CONNECT: return "CONNECT";
    case PCMD_HELO: return st->protocol && str_ieq(st->protocol, "ESMTP") ? "EHLO" : "HELO";
    case PCMD_MAIL: return "MAIL";
    case PCMD_RCPT: return "RCPT";
    case PCMD_DATA: return "DATA";
    case PCMD_EOD: return "END-OF-MESSAGE";
    case PCMD_ETRN: return "ETRN";
    case PCMD_STARTTLS: return "STARTTLS";
    case PCMD_AUTH: return "AUTH";
    }
    return "?";
}

static vstatus_t evaluate(policy_t *pol, pcmd_t cmd, const pstate_t *st, verdict_t *v, buf_t *trace_buf,
                          bool delegated)
{
    verdict_reset(v);
    ss_fx_reset(pol->fx);
    size_t trace_start = trace_buf ? trace_buf->len : 0;
    ectx_t c = {.pol = pol, .st = st, .v = v, .trace = trace_buf, .cmd = cmd, .top = "policy"};
    c.stage = stage_name(cmd, st);
    snprintf(c.namaddr, sizeof c.namaddr, "%s[%s]", st->client_name ? st->client_name : "unknown",
             st->client_addr ? st->client_addr : "unknown");
    bool delay = pol->delay_reject;
    bool final_dip = true;
    int status = S_DUNNO;
    /* A delegated request runs policy_restrictions only; a refusal by the
     * limits ends the command before its classes. */
    if (delegated)
        status = stage(&c, RC_POLICY, true);
    else if (pol->anvil)
        status = limits_stage(&c);
    switch (delegated || !GO(status) ? (pcmd_t)-1 : cmd) {
    case PCMD_CONNECT:
        final_dip = false;
        if (!delay)
            status = stage(&c, RC_CLIENT, true);
        break;
    case PCMD_HELO:
        final_dip = false;
        if (!delay && st->helo)
            status = stage(&c, RC_HELO, true);
        break;
    case PCMD_MAIL:
        final_dip = false;
        if (!delay && st->sender)
            status = sender_stage(&c);
        break;
    case PCMD_RCPT:
        if (delay) {
            status = stage(&c, RC_CLIENT, true);
            if (GO(status) && st->helo)
                status = stage(&c, RC_HELO, true);
            if (GO(status) && st->sender)
                status = sender_stage(&c);
        }
        if (GO(status) && st->recipient) {
            /* One stage in Postfix: a defer_if_reject spans both lists. */
            rclass_t first = pol->relay_first ? RC_RELAY : RC_RECIPIENT;
            rclass_t second = pol->relay_first ? RC_RECIPIENT : RC_RELAY;
            status = stage(&c, first, true);
            if (GO(status))
                status = stage(&c, second, false);
        }
        break;
    case PCMD_DATA:
        status = stage(&c, RC_DATA, true);
        break;
    case PCMD_EOD:
        status = stage(&c, RC_EOD, true);
        break;
    case PCMD_ETRN:
        if (delay) {
            status = stage(&c, RC_CLIENT, true);
            if (GO(status) && st->helo)
                status = stage(&c, RC_HELO, true);
        }
        if (GO(status))
            status = stage(&c, RC_ETRN, true);
        break;
    case PCMD_STARTTLS:
    case PCMD_AUTH:
        /* the limits only (above): no class and no implicit check */
        final_dip = false;
        break;
    default:
        break;
    }
    if (status == S_PENDING) {
        /* Nothing of this pass counts: the caller asks again once the
         * memo has the answers, and that pass records everything. */
        verdict_reset(v);
        v->status = V_PENDING;
        if (trace_buf)
            buf_truncate(trace_buf, trace_start);
        return V_PENDING;
    }
    if (GO(status) && c.dip.active) {
        if (final_dip) {
            /* A permit, but an earlier step could not decide: defer. */
            c.warn_if_reject = 0;
            c.dir.active = false;
            apply_reject(&c, false, c.dip.reply, c.dip.rule, c.dip.origin);
        } else {
            buf_puts(&v->postponed, c.dip.reply);
        }
    }
    /* Postfix's smtpd_check_rcpt ends with the recipient table check when
     * the restrictions neither rejected nor ran it. */
    if (!delegated && cmd == PCMD_RCPT && v->status == V_PERMIT && st->recipient && *st->recipient &&
        pol->unlisted_rcpt && !c.rcpt_checked && !v->discard)
        implicit_unlisted(&c, RC_RECIPIENT, st->recipient);
    /* The final pass: the state steps' writes happen now, once. */
    ss_fx_trace(pol->fx, trace_buf);
    if (pol->env.commit && pol->env.store)
        ss_fx_commit(pol->fx, pol->env.store);
    else
        ss_fx_reset(pol->fx);
    if (trace_buf) {
        c.top = "verdict";
        if (v->status == V_PERMIT)
            trace(&c, "permit%s%s", v->postponed.len ? "; postponed to RCPT: " : "", buf_cstr(&v->postponed));
        else
            trace(&c, "%s (rule=%s)", buf_cstr(&v->reply), v->rule);
    }
    return v->status;
}

vstatus_t policy_eval(policy_t *pol, pcmd_t cmd, const pstate_t *st, verdict_t *v, buf_t *trace)
{
    return evaluate(pol, cmd, st, v, trace, false);
}

vstatus_t policy_eval_delegated(policy_t *pol, pcmd_t cmd, const pstate_t *st, verdict_t *v, buf_t *trace)
{
    return evaluate(pol, cmd, st, v, trace, true);
}

unsigned policy_needs(const policy_t *pol)
{
    return pol->needs;
}

void policy_set_env(policy_t *pol, const policy_env_t *env)
{
    pol->env = env ? *env : (policy_env_t){0};
}

void policy_note_event(policy_t *pol, const pstate_t *st, pevent_t ev)
{
    anvil_note(pol->anvil, &pol->env, st, ev);
}

void policy_record_correspondents(policy_t *pol, const pstate_t *st, const char *const *rcpts, size_t n)
{
    if (!pol->corr_record || !pol->env.store || !pol->env.commit || !n)
        return;
    bool trusted = st->sasl_user && *st->sasl_user;
    if (!trusted && st->client_addr && pol->mynetworks)
        trusted = addrlist_match(pol->mynetworks, st->client_addr, NULL) == AL_MATCH;
    if (!trusted)
        return;
    ss_fx_reset(pol->fx);
    ss_ctx_t sc = {.fx = pol->fx};
    char key[KEY_MAX], stamp[32];
    snprintf(stamp, sizeof stamp, "%lld", (long long)time(NULL));
    for (size_t i = 0; i < n; i++) {
        if (!rcpts[i] || !*rcpts[i])
            continue;
        correspondent_key(key, sizeof key, rcpts[i]);
        ss_fx_set(&sc, key, stamp, pol->corr_ttl);
    }
    ss_fx_commit(pol->fx, pol->env.store);
}

void policy_prefetch(policy_t *pol, const pstate_t *st)
{
    if (!st->dns)
        return;
    ectx_t c = {.pol = pol, .st = st, .v = &pol->scratch, .cmd = PCMD_RCPT, .top = "prefetch", .prefetch = true};
    snprintf(c.namaddr, sizeof c.namaddr, "%s[%s]", st->client_name ? st->client_name : "unknown",
             st->client_addr ? st->client_addr : "unknown");
    const rlist_t *lists[RC__COUNT];
    size_t nl = 0;
    for (int rc = 0; rc < RC__COUNT; rc++)
        lists[nl++] = &pol->top[rc];
    for (size_t li = 0; li < nl + pol->nclasses; li++) {
        const rlist_t *l = li < nl ? lists[li] : &pol->classes[li - nl].list;
        for (size_t i = 0; i < l->n; i++) {
            const step_t *s = &l->steps[i];
            if (s->kind < R_RBL_CLIENT || s->kind > R_DNS_ACCESS)
                continue;
            /* reject_unknown_address needs its class: try both. */
            verdict_reset(&pol->scratch);
            c.step = s;
            c.recursion = RECURSION_LIMIT + 1;   /* table results are not followed */
            if (s->kind == R_UNKNOWN_ADDRESS) {
                if (st->sender && *st->sender)
                    dns_step(&c, s, st->sender, "Sender address");
                if (st->recipient)
                    dns_step(&c, s, st->recipient, "Recipient address");
            } else {
                dns_step(&c, s, "", "");
            }
        }
    }
    verdict_reset(&pol->scratch);
}

/* ------------------------------------------------------------- the reply */

typedef struct footer_vars {
    const pstate_t *st;
    char tmp[320];
} footer_vars_t;

static const char *footer_get(void *arg, const char *name, size_t n)
{
    footer_vars_t *f = arg;
    return state_var(f->st, name, n, f->tmp, sizeof f->tmp);
}

void policy_reply_text(const policy_t *pol, const verdict_t *v, const pstate_t *st, buf_t *out)
{
    buf_reset(out);
    if (v->status == V_PERMIT)
        return;
    const char *r = buf_cstr(&v->reply);
    const char *f = pol->footer;
    const char *sp = strlen(r) > 4 ? strchr(r + 4, ' ') : NULL;
    if (!*f || !sp || sp - r > 16) {
        buf_puts(out, r);
        return;
    }
    /* Expand the footer, then lay the whole text out as reply lines:
     * "\n" in the footer starts a line; a leading "\c" joins the reply's
     * last line instead of starting one. */
    buf_t text = BUF_INIT, expanded = BUF_INIT;
    buf_puts(&text, sp + 1);
    if (f[0] == '\\' && f[1] == 'c')
        f += 2;
    else
        buf_putc(&text, '\n');
    /* Each "\n"-separated piece is expanded on its own, so a value (a
     * sender with a backslash) can never start a reply line. */
    footer_vars_t vars = {.st = st};
    for (;;) {
        const char *nl = strstr(f, "\\n");
        char *piece = xstrndup(f, nl ? (size_t)(nl - f) : strlen(f));
        template_expand(piece, footer_get, &vars, &expanded);
        free(piece);
        for (const char *p = buf_cstr(&expanded); *p; p++)
            if ((unsigned char)*p >= 0x20 && *p != 0x7f)
                buf_putc(&text, *p);
        if (!nl)
            break;
        buf_putc(&text, '\n');
        f = nl + 2;
    }
    buf_free(&expanded);
    while (text.len && text.data[text.len - 1] == '\n')
        buf_truncate(&text, text.len - 1);
    char head[20];
    size_t hl = (size_t)(sp - r) + 1;   /* "554 5.7.1 " */
    memcpy(head, r, hl);
    head[hl] = 0;
    const char *t = buf_cstr(&text);
    while (*t) {
        const char *nl = strchr(t, '\n');
        size_t n = nl ? (size_t)(nl - t) : strlen(t);
        if (out->len)
            buf_puts(out, "\r\n");
        head[3] = nl ? '-' : ' ';
        buf_puts(out, head);
        buf_append(out, t, n);
        t += n + (nl ? 1 : 0);
    }
    buf_free(&text);
}

bool policy_local_domain(const policy_t *pol, const char *domain)
{
    /* mydestination holds names only (policy_new refuses tables), so the
     * list cannot fail */
    return domlist_match(pol->mydest_list, domain, NULL) == DL_MATCH;
}

const char *policy_bare_domain(const policy_t *pol, const char *myorigin)
{
    if (policy_local_domain(pol, myorigin))
        return myorigin;
    return pol->nmydest ? pol->mydest[0] : NULL;
}

vstatus_t policy_rcpt(policy_t *pol, const pstate_t *st, bool exempt, bool discarding, const char *postponed,
                      verdict_t *v, buf_t *trace)
{
    vstatus_t vs = V_PERMIT;
    verdict_reset(v);
    if (exempt || discarding) {
        if (trace)
            buf_printf(trace, "  %s\n", exempt ? "<postmaster> is exempt from every restriction"
                                                : "DISCARD applies: restrictions are skipped");
    } else {
        vs = policy_eval(pol, PCMD_RCPT, st, v, trace);
        /* Postfix answers a postponed deferral before its implicit
         * recipient table check, which policy_eval ran already. */
        bool implicit = (vs == V_REJECT || vs == V_DEFER) &&
                        strcmp(v->rule, "recipient:smtpd_reject_unlisted_recipient") == 0;
        if ((vs == V_PERMIT || implicit) && postponed) {
            buf_reset(&v->reply);
            buf_puts(&v->reply, postponed);
            v->code = atoi(postponed);
            v->status = vs = V_DEFER;
            str_copy(v->rule, "postponed:defer_if_permit", sizeof v->rule);
            v->origin = (map_origin_t){0};
            if (trace)
                buf_printf(trace, "  postponed defer_if_permit answers now: %s\n", postponed);
        }
    }
    return vs;
}
