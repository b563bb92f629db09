/*
 * anvil: per-client limits (see anvil.h and docs/limits.md).
 *
 * What lives where: the connection count is this process's own (a small
 * hash table of "service address" -> open sessions, fed by the session);
 * rate counters, abuse counters and blocks live in the state store, so
 * every moat that shares the store shares them.  Keys:
 *   rate:conn:<addr>:<window start>   connections   (ttl anvil_rate_time_unit)
 *   rate:mail:<addr>:<window start>   MAIL commands
 *   rate:rcpt:<addr>:<window start>   RCPT commands
 *   rate:tls:<addr>:<window start>    new (not resumed) TLS sessions
 *   rate:auth:<addr>:<window start>   AUTH commands
 *   abuse:5xx:<id>                    5xx replies   (ttl smtpd_client_abuse_window)
 *   abuse:rcpt:<id>                   unknown recipients
 *   block:<id>                        "<reason> <since> <count>" (ttl smtpd_client_block_time)
 * where <id> is the address for IPv4 and the /64 network for IPv6 (one
 * host there owns a whole /64 and can hop inside it).
 *
 * Reads go through the session's memo (sstep.h), so a re-run evaluation
 * counts nothing twice.  Must never refuse a client because the store
 * failed (a warning and the limit is skipped), never keep a pointer to
 * the anvil_t in an asynchronous callback (a reload frees it), never
 * count an exempt client.
 */
#include "policy/anvil.h"

#include "core/log.h"
#include "core/util.h"
#include "policy/addrlist.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct anvil {
    long long conn_count;      /* smtpd_client_connection_count_limit */
    long long conn_rate;       /* smtpd_client_connection_rate_limit */
    long long msg_rate;        /* smtpd_client_message_rate_limit */
    long long rcpt_rate;       /* smtpd_client_recipient_rate_limit */
    long long tls_rate;        /* smtpd_client_new_tls_session_rate_limit */
    long long auth_rate;       /* smtpd_client_auth_rate_limit */
    unsigned unit;             /* anvil_rate_time_unit */
    long long reject_limit;    /* smtpd_client_reject_limit */
    long long unknown_limit;   /* smtpd_client_unknown_recipient_limit */
    unsigned window;           /* smtpd_client_abuse_window */
    unsigned block_time;       /* smtpd_client_block_time */
    addrlist_t *exceptions;    /* smtpd_client_event_limit_exceptions; NULL: none */
};

/* ------------------------------------------------------------ pure helpers */

bool anvil_block_id(const char *addr, char *out, size_t size)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!addr || !size)
        return false;
    if (inet_pton(AF_INET, addr, &a4) == 1) {
        char text[INET_ADDRSTRLEN];
        if (!inet_ntop(AF_INET, &a4, text, sizeof text))
            return false;
        return str_copy(out, text, size) < size;
    }
    if (inet_pton(AF_INET6, addr, &a6) == 1) {
        /* An IPv4-mapped address is the IPv4 client it stands for. */
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            char text[INET_ADDRSTRLEN];
            if (!inet_ntop(AF_INET, &a6.s6_addr[12], text, sizeof text))
                return false;
            return str_copy(out, text, size) < size;
        }
        memset(&a6.s6_addr[8], 0, 8);
        char text[INET6_ADDRSTRLEN];
        if (!inet_ntop(AF_INET6, &a6, text, sizeof text))
            return false;
        return snprintf(out, size, "%s/64", text) < (int)size;
    }
    return false;
}

long long anvil_window_start(long long now, unsigned unit)
{
    if (!unit)
        return now;
    return now - now % (long long)unit;
}

void anvil_rate_key(buf_t *out, const char *kind, const char *addr, long long now, unsigned unit)
{
    buf_printf(out, "rate:%s:%s:%lld", kind, addr, anvil_window_start(now, unit));
}

void anvil_block_value(buf_t *out, const char *reason, long long since, long long count)
{
    buf_printf(out, "%s %lld %lld", reason, since, count);
}

bool anvil_block_parse(const char *value, char *reason, size_t rsize, long long *since, long long *count)
{
    *since = *count = 0;
    if (rsize)
        reason[0] = 0;
    if (!value)
        return false;
    const char *sp = strchr(value, ' ');
    size_t rlen = sp ? (size_t)(sp - value) : strlen(value);
    if (!rlen || rlen >= rsize)
        return false;
    memcpy(reason, value, rlen);
    reason[rlen] = 0;
    if (!sp)
        return true;   /* a reason alone (written by hand): no times known */
    char *end;
    *since = strtoll(sp + 1, &end, 10);
    if (end == sp + 1 || (*end && *end != ' '))
        return false;
    if (*end == ' ') {
        const char *c = end + 1;
        *count = strtoll(c, &end, 10);
        if (end == c || *end)
            return false;
    }
    return true;
}

const char *anvil_reason_text(const char *reason)
{
    if (!strcmp(reason, "5xx"))
        return "5xx replies";
    if (!strcmp(reason, "rcpt"))
        return "unknown recipients";
    if (!strcmp(reason, "tls"))
        return "new TLS sessions";
    return reason;
}

/* -------------------------------------------------------- connection count */

typedef struct conn_ent {
    struct conn_ent *next;
    unsigned count;
    char key[];    /* "service address" */
} conn_ent_t;

#define CONN_BUCKETS 1024u
static conn_ent_t *conn_tab[CONN_BUCKETS];

static unsigned conn_hash(const char *service, const char *addr)
{
    unsigned h = hash_str(HASH_INIT, service);
    h = (h ^ ' ') * 16777619u;
    return hash_str(h, addr) % CONN_BUCKETS;
}

static conn_ent_t **conn_find(const char *service, const char *addr)
{
    if (!service)
        service = "smtp";
    size_t sl = strlen(service);
    conn_ent_t **pp = &conn_tab[conn_hash(service, addr)];
    for (; *pp; pp = &(*pp)->next) {
        const char *k = (*pp)->key;
        if (!strncmp(k, service, sl) && k[sl] == ' ' && !strcmp(k + sl + 1, addr))
            return pp;
    }
    return pp;
}

void anvil_conn_open(const char *service, const char *addr)
{
    if (!addr)
        return;
    if (!service)
        service = "smtp";
    conn_ent_t **pp = conn_find(service, addr);
    if (!*pp) {
        size_t n = strlen(service) + 1 + strlen(addr) + 1;
        conn_ent_t *e = xcalloc(1, sizeof *e + n);
        snprintf(e->key, n, "%s %s", service, addr);
        *pp = e;
    }
    (*pp)->count++;
}

void anvil_conn_close(const char *service, const char *addr)
{
    if (!addr)
        return;
    conn_ent_t **pp = conn_find(service, addr);
    conn_ent_t *e = *pp;
    if (!e)
        return;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}

unsigned anvil_conn_count(const char *service, const char *addr)
{
    if (!addr)
        return 0;
    conn_ent_t **pp = conn_find(service, addr);
    return *pp ? (*pp)->count : 0;
}

/* ------------------------------------------------------------- compiling */

anvil_t *anvil_new(const params_t *p, const char *config_dir, buf_t *err)
{
    anvil_t *a = xcalloc(1, sizeof *a);
    a->conn_count = param_int(p, PARAM_smtpd_client_connection_count_limit);
    a->conn_rate = param_int(p, PARAM_smtpd_client_connection_rate_limit);
    a->msg_rate = param_int(p, PARAM_smtpd_client_message_rate_limit);
    a->rcpt_rate = param_int(p, PARAM_smtpd_client_recipient_rate_limit);
    a->tls_rate = param_int(p, PARAM_smtpd_client_new_tls_session_rate_limit);
    a->auth_rate = param_int(p, PARAM_smtpd_client_auth_rate_limit);
    a->unit = (unsigned)param_int(p, PARAM_anvil_rate_time_unit);
    a->reject_limit = param_int(p, PARAM_smtpd_client_reject_limit);
    a->unknown_limit = param_int(p, PARAM_smtpd_client_unknown_recipient_limit);
    a->window = (unsigned)param_int(p, PARAM_smtpd_client_abuse_window);
    a->block_time = (unsigned)param_int(p, PARAM_smtpd_client_block_time);

    /* The default follows mynetworks; when only mynetworks_style is set,
     * mynetworks is computed from the interfaces (as the engine does), so
     * the exceptions must be too. */
    const char *const *items;
    size_t n = param_list(p, PARAM_smtpd_client_event_limit_exceptions, &items);
    param_id origin = PARAM_smtpd_client_event_limit_exceptions;
    buf_t computed = BUF_INIT, why = BUF_INIT;
    char **split = NULL;
    if (!param_is_set(p, PARAM_smtpd_client_event_limit_exceptions) && !param_is_set(p, PARAM_mynetworks)
        && param_is_set(p, PARAM_mynetworks_style)) {
        origin = PARAM_mynetworks_style;
        if (addrlist_local_items(param_str(p, PARAM_mynetworks_style), &computed, &why) != 0) {
            param_where_lines(p, origin, buf_cstr(&why), err);
            buf_free(&why);
            buf_free(&computed);
            anvil_free(&a);
            return NULL;
        }
        /* split the computed items on spaces */
        size_t cap = 8;
        split = xcalloc(cap, sizeof *split);
        n = 0;
        char *s = computed.data;
        while (s && *s) {
            while (*s == ' ')
                s++;
            if (!*s)
                break;
            if (n + 1 >= cap) {
                cap *= 2;
                split = xrealloc(split, cap * sizeof *split);
            }
            split[n++] = s;
            while (*s && *s != ' ')
                s++;
            if (*s)
                *s++ = 0;
        }
        items = (const char *const *)split;
    }
    if (n) {
        a->exceptions = addrlist_new("smtpd_client_event_limit_exceptions", items, n, config_dir, &why);
        if (!a->exceptions) {
            param_where_lines(p, origin, buf_cstr(&why), err);
            free(split);
            buf_free(&why);
            buf_free(&computed);
            anvil_free(&a);
            return NULL;
        }
    }
    free(split);
    buf_free(&why);
    buf_free(&computed);
    return a;
}

bool anvil_tables_changed(const anvil_t *a)
{
    return a->exceptions && addrlist_changed(a->exceptions);
}

void anvil_free(anvil_t **a)
{
    if (!*a)
        return;
    addrlist_free(&(*a)->exceptions);
    free(*a);
    *a = NULL;
}

static bool abuse_on(const anvil_t *a)
{
    return a->reject_limit > 0 || a->unknown_limit > 0;
}

bool anvil_uses_store(const anvil_t *a)
{
    return a && (a->conn_rate > 0 || a->msg_rate > 0 || a->rcpt_rate > 0 || a->tls_rate > 0 || a->auth_rate > 0 ||
                 abuse_on(a));
}

/* Is addr in smtpd_client_event_limit_exceptions?  A table that fails
 * counts as exempt: limits must never refuse a client for our own
 * trouble (the warning says so). */
static bool exempt(anvil_t *a, const char *addr, buf_t *why, bool *failed)
{
    *failed = false;
    if (!a->exceptions)
        return false;
    al_result r = addrlist_match(a->exceptions, addr, why);
    if (r == AL_ERROR)
        *failed = true;
    return r != AL_NOMATCH;
}

/* ------------------------------------------------------------- the stage */

static const char *service_of(const pstate_t *st)
{
    return st->service && *st->service ? st->service : "smtp";
}

/* A blocked client: 421 with the reason, the session hangs up. */
static ss_status_t blocked_reply(ss_ctx_t *c, const char *id, const ss_value_t *val)
{
    char reason[32];
    long long since, count;
    const char *addr = c->st->client_addr;
    const char *host = param_str(c->p, PARAM_myhostname);
    if (!anvil_block_parse(val->data, reason, sizeof reason, &since, &count))
        str_copy(reason, "blocked", sizeof reason);
    long long left = val->expires ? val->expires - (long long)c->now : 0;
    ss_trace(c, "%s is blocked (block:%s = \"%s\", %lld seconds left) -> 421", addr, id, val->data,
             left > 0 ? left : 0);
    if (count)
        ss_log(c, "warning", "blocked client refused: %s[%s] for service %s: %lld %s", c->st->client_name
               ? c->st->client_name : "unknown", addr, service_of(c->st), count, anvil_reason_text(reason));
    else
        ss_log(c, "warning", "blocked client refused: %s[%s] for service %s: %s", c->st->client_name
               ? c->st->client_name : "unknown", addr, service_of(c->st), anvil_reason_text(reason));
    c->whole_text = true;
    if (!strcmp(reason, "5xx"))
        return ss_reply(c, SS_REJECT, 421, "4.7.0", "%s Error: too many errors from %s", host, addr);
    if (!strcmp(reason, "rcpt"))
        return ss_reply(c, SS_REJECT, 421, "4.7.0", "%s Error: too many unknown recipients from %s", host, addr);
    return ss_reply(c, SS_REJECT, 421, "4.7.0", "%s Error: %s is blocked (%s)", host, addr, reason);
}

/* The outcome of a rate counter: -1 pending, 0 go on, 1 over the limit
 * (*num says how far). */
static int rate_check(ss_ctx_t *c, const char *kind, long long limit, unsigned unit, const char *param,
                      long long *num)
{
    buf_t key = BUF_INIT;
    anvil_rate_key(&key, kind, c->st->client_addr, (long long)c->now, unit);
    const char *error = NULL;
    ss_get_t g = ss_store_incr(c, buf_cstr(&key), 1, unit, num, &error);
    int rc = 0;
    if (g == SG_PENDING) {
        rc = -1;
    } else if (g == SG_ERROR) {
        ss_log(c, "warning", "%s: state store %s: %s: limit skipped", param,
               c->env && c->env->store ? store_spec(c->env->store) : "(not open)", error ? error : "failed");
        ss_trace(c, "%s: state store failed (%s) -> skipped", param, error ? error : "failed");
    } else if (*num > limit) {
        ss_trace(c, "%s: %s = %lld > %lld -> refused", param, buf_cstr(&key), *num, limit);
        rc = 1;
    } else {
        ss_trace(c, "%s: %s = %lld (limit %lld)", param, buf_cstr(&key), *num, limit);
    }
    buf_free(&key);
    return rc;
}

/* The new-TLS-session counter, read and not counted (a session is
 * counted once its handshake made a new one, anvil_note): -1 pending, 0
 * go on (or the store failed: skipped), 1 this handshake would exceed the
 * limit (*num: the sessions so far). */
static int tls_check(ss_ctx_t *c, long long limit, unsigned unit, long long *num)
{
    static const char param[] = "smtpd_client_new_tls_session_rate_limit";
    buf_t key = BUF_INIT;
    anvil_rate_key(&key, "tls", c->st->client_addr, (long long)c->now, unit);
    ss_value_t val;
    int rc = 0;
    *num = 0;
    switch (ss_store_get(c, buf_cstr(&key), &val)) {
    case SG_PENDING:
        rc = -1;
        break;
    case SG_ERROR:
        ss_log(c, "warning", "%s: state store %s: %s: limit skipped", param,
               c->env && c->env->store ? store_spec(c->env->store) : "(not open)", val.error ? val.error : "failed");
        ss_trace(c, "%s: state store failed (%s) -> skipped", param, val.error ? val.error : "failed");
        break;
    case SG_FOUND:
        *num = strtoll(val.data, NULL, 10);
        /* fall through */
    case SG_MISSING:
        /* Postfix refuses when this session would make the count exceed
         * the limit; counting before the handshake spares it. */
        if (*num >= limit) {
            ss_trace(c, "%s: %s = %lld new sessions, one more exceeds %lld -> refused", param, buf_cstr(&key), *num,
                     limit);
            rc = 1;
        } else {
            ss_trace(c, "%s: %s = %lld new sessions (limit %lld)", param, buf_cstr(&key), *num, limit);
        }
        break;
    }
    buf_free(&key);
    return rc;
}

/* The block entry of the client, through the memo: -1 pending, 0 not
 * blocked (or the store failed: skipped), 1 blocked (the reply is set). */
static int block_check(ss_ctx_t *c, const char *id, ss_status_t *out)
{
    char key[96];
    snprintf(key, sizeof key, "block:%s", id);
    ss_value_t val;
    switch (ss_store_get(c, key, &val)) {
    case SG_PENDING:
        return -1;
    case SG_ERROR:
        ss_log(c, "warning", "client blocks: state store %s: %s: check skipped",
               c->env && c->env->store ? store_spec(c->env->store) : "(not open)", val.error ? val.error : "failed");
        ss_trace(c, "block check: state store failed (%s) -> skipped", val.error ? val.error : "failed");
        return 0;
    case SG_MISSING:
        ss_trace(c, "%s is not blocked", id);
        return 0;
    case SG_FOUND:
        break;
    }
    *out = blocked_reply(c, id, &val);
    return 1;
}

ss_status_t anvil_stage(anvil_t *a, ss_ctx_t *c)
{
    if (!a || !c->st || !c->st->client_addr || !strcmp(c->st->client_addr, "unknown"))
        return SS_DUNNO;
    const pstate_t *st = c->st;
    bool want_block = abuse_on(a) && (c->cmd == PCMD_CONNECT || c->cmd == PCMD_RCPT);
    bool want_count = c->cmd == PCMD_CONNECT && a->conn_count > 0;
    bool want_crate = c->cmd == PCMD_CONNECT && a->conn_rate > 0;
    bool want_mrate = c->cmd == PCMD_MAIL && a->msg_rate > 0;
    bool want_rrate = c->cmd == PCMD_RCPT && a->rcpt_rate > 0;
    bool want_tls = c->cmd == PCMD_STARTTLS && a->tls_rate > 0;
    bool want_arate = c->cmd == PCMD_AUTH && a->auth_rate > 0;
    if (!want_block && !want_count && !want_crate && !want_mrate && !want_rrate && !want_tls && !want_arate)
        return SS_DUNNO;

    buf_t why = BUF_INIT;
    bool failed;
    if (exempt(a, st->client_addr, &why, &failed)) {
        if (failed) {
            ss_log(c, "warning", "smtpd_client_event_limit_exceptions: %s: limits skipped for %s", buf_cstr(&why),
                   st->client_addr);
            ss_trace(c, "smtpd_client_event_limit_exceptions failed (%s) -> limits skipped", buf_cstr(&why));
        } else {
            ss_trace(c, "%s is exempt (smtpd_client_event_limit_exceptions: %s)", st->client_addr, buf_cstr(&why));
        }
        buf_free(&why);
        return SS_DUNNO;
    }
    buf_free(&why);

    char id[INET6_ADDRSTRLEN + 8];
    if (!anvil_block_id(st->client_addr, id, sizeof id))
        str_copy(id, st->client_addr, sizeof id);
    const char *name = st->client_name ? st->client_name : "unknown";
    const char *service = service_of(st);
    const char *host = param_str(c->p, PARAM_myhostname);

    /* Start every store operation of this command before waiting for
     * any, so that the client waits for one round trip, not several. */
    ss_status_t blocked = SS_DUNNO;
    long long crate = 0, mrate = 0, rrate = 0, tls = 0, arate = 0;
    int b = want_block ? block_check(c, id, &blocked) : 0;
    int cr = want_crate ? rate_check(c, "conn", a->conn_rate, a->unit, "smtpd_client_connection_rate_limit", &crate) : 0;
    int mr = want_mrate ? rate_check(c, "mail", a->msg_rate, a->unit, "smtpd_client_message_rate_limit", &mrate) : 0;
    int rr = want_rrate ? rate_check(c, "rcpt", a->rcpt_rate, a->unit, "smtpd_client_recipient_rate_limit", &rrate) : 0;
    int tr = want_tls ? tls_check(c, a->tls_rate, a->unit, &tls) : 0;
    int ar = want_arate ? rate_check(c, "auth", a->auth_rate, a->unit, "smtpd_client_auth_rate_limit", &arate) : 0;
    if (b < 0 || cr < 0 || mr < 0 || rr < 0 || tr < 0 || ar < 0)
        return SS_PENDING;
    if (b > 0)
        return blocked;

    if (want_count) {
        unsigned n = anvil_conn_count(service, st->client_addr);
        if ((long long)n > a->conn_count) {
            ss_trace(c, "smtpd_client_connection_count_limit: %u connections from %s to %s > %lld -> refused", n,
                     st->client_addr, service, a->conn_count);
            ss_log(c, "warning", "Connection concurrency limit exceeded: %u from %s[%s] for service %s", n, name,
                   st->client_addr, service);
            c->whole_text = true;
            return ss_reply(c, SS_REJECT, 421, "4.7.0", "%s Error: too many connections from %s", host,
                            st->client_addr);
        }
        ss_trace(c, "smtpd_client_connection_count_limit: %u connections from %s to %s (limit %lld)", n,
                 st->client_addr, service, a->conn_count);
    }
    if (cr > 0) {
        ss_log(c, "warning", "Connection rate limit exceeded: %lld from %s[%s] for service %s", crate, name,
               st->client_addr, service);
        c->whole_text = true;
        return ss_reply(c, SS_REJECT, 421, "4.7.0", "%s Error: too many connections from %s", host,
                        st->client_addr);
    }
    if (mr > 0) {
        ss_log(c, "warning", "Message delivery request rate limit exceeded: %lld from %s[%s] for service %s", mrate,
               name, st->client_addr, service);
        c->whole_text = true;
        return ss_reply(c, SS_REJECT, 450, "4.7.1", "Error: too much mail from %s", st->client_addr);
    }
    if (rr > 0) {
        ss_log(c, "warning", "Recipient address rate limit exceeded: %lld from %s[%s] for service %s", rrate, name,
               st->client_addr, service);
        c->whole_text = true;
        return ss_reply(c, SS_REJECT, 450, "4.7.1", "Error: too many recipients from %s", st->client_addr);
    }
    if (tr > 0) {
        /* the count this handshake would make, as Postfix logs it */
        ss_log(c, "warning", "New TLS session rate limit exceeded: %lld from %s[%s] for service %s", tls + 1, name,
               st->client_addr, service);
        c->whole_text = true;
        return ss_reply(c, SS_REJECT, 421, "4.7.0", "%s Error: too many new TLS sessions from %s", host,
                        st->client_addr);
    }
    if (ar > 0) {
        ss_log(c, "warning", "AUTH command rate limit exceeded: %lld from %s[%s] for service %s", arate, name,
               st->client_addr, service);
        c->whole_text = true;
        return ss_reply(c, SS_REJECT, 450, "4.7.1", "Error: too many AUTH commands from %s", st->client_addr);
    }
    return SS_DUNNO;
}

/* ------------------------------------------------------------ abuse notes */

/* One counted event on its way through the store.  Holds copies of what
 * the callbacks need (the anvil_t may be gone by then).  Every note in
 * flight is on a list: a store closed under it drops its callback, and
 * the list keeps that visible rather than lost. */
typedef struct note {
    struct note *prev, *next;
    store_t *store;
    long long limit;    /* 0: count only (new TLS sessions) */
    unsigned window, block_time;
    char reason[8];     /* "5xx", "rcpt" or "tls" */
    char id[INET6_ADDRSTRLEN + 8];
} note_t;

static note_t *notes;

static void note_unlink(note_t *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        notes = n->next;
    if (n->next)
        n->next->prev = n->prev;
    free(n);
}

static void block_written(void *arg, const store_result_t *r)
{
    note_t *n = arg;
    if (r->status == ST_ERROR)
        log_warn("anvil", "cannot block %s: state store %s: %s", n->id, store_spec(n->store),
                 r->error ? r->error : "write failed");
    note_unlink(n);
}

static void note_counted(void *arg, const store_result_t *r)
{
    note_t *n = arg;
    if (r->status == ST_ERROR) {
        log_warn("anvil", "cannot count %s from %s: state store %s: %s", anvil_reason_text(n->reason), n->id,
                 store_spec(n->store), r->error ? r->error : "failed");
        note_unlink(n);
        return;
    }
    /* Block when the count reaches the limit, and again at every further
     * multiple of it: each process sees each value once (the increment is
     * atomic), so one writer per step, and a client still counting after
     * its block expired is blocked again. */
    if (n->limit <= 0 || r->num < n->limit || r->num % n->limit != 0) {
        note_unlink(n);
        return;
    }
    log_warn("anvil", "blocking %s for %u seconds: %lld %s in %u seconds", n->id, n->block_time, r->num,
             anvil_reason_text(n->reason), n->window);
    buf_t v = BUF_INIT;
    anvil_block_value(&v, n->reason, (long long)time(NULL), r->num);
    char key[96];
    snprintf(key, sizeof key, "block:%s", n->id);
    store_set(n->store, key, v.data, v.len, n->block_time, block_written, n);
    buf_free(&v);
}

void anvil_note(anvil_t *a, const policy_env_t *env, const pstate_t *st, pevent_t ev)
{
    if (!a || !env || !env->commit || !env->store || !st || !st->client_addr)
        return;
    long long limit = ev == PE_REJECT_5XX ? a->reject_limit : ev == PE_UNKNOWN_RCPT ? a->unknown_limit : a->tls_rate;
    if (limit <= 0)
        return;
    buf_t why = BUF_INIT;
    bool failed;
    bool skip = exempt(a, st->client_addr, &why, &failed);
    if (failed)
        log_warn("anvil", "smtpd_client_event_limit_exceptions: %s: %s not counted", buf_cstr(&why), st->client_addr);
    buf_free(&why);
    if (skip)
        return;
    note_t *n = xcalloc(1, sizeof *n);
    buf_t key = BUF_INIT;
    if (ev == PE_NEW_TLS) {
        /* a rate like the others: per address and window, no block */
        if (str_copy(n->id, st->client_addr, sizeof n->id) >= sizeof n->id || !strcmp(st->client_addr, "unknown")) {
            free(n);
            return;
        }
        str_copy(n->reason, "tls", sizeof n->reason);
        anvil_rate_key(&key, "tls", st->client_addr, (long long)time(NULL), a->unit);
    } else {
        if (!anvil_block_id(st->client_addr, n->id, sizeof n->id)) {
            free(n);
            return;
        }
        n->limit = limit;
        str_copy(n->reason, ev == PE_REJECT_5XX ? "5xx" : "rcpt", sizeof n->reason);
        buf_printf(&key, "abuse:%s:%s", n->reason, n->id);
    }
    n->store = env->store;
    n->window = a->window;
    n->block_time = a->block_time;
    n->next = notes;
    if (notes)
        notes->prev = n;
    notes = n;
    store_incr(env->store, buf_cstr(&key), 1, ev == PE_NEW_TLS ? a->unit : a->window, note_counted, n);
    buf_free(&key);
}
