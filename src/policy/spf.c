/*
 * spf: check_host() of RFC 7208 on the session's DNS memo (spf.h), the
 * explanation of a fail, and the Received-SPF header field.
 *
 * spf_eval() is a replay: each call evaluates from the top, taking every
 * answer from the memo.  The first answer that is missing stops the walk
 * (the memo was asked for it, so the caller is woken when it arrives);
 * before the walk unwinds, every lookup that can already be named is
 * started without a wake: the addresses of all MX hosts or PTR names of
 * the mechanism at hand, then the lookups of the terms that follow in
 * each record on the include/redirect stack (within what is left of the
 * 10-lookup budget, never past an "all").  So the independent queries of
 * one evaluation run in parallel while the result stays exactly the
 * sequential one of the RFC.  Everything is counted per evaluation (DNS
 * terms, void lookups), so a record loop ends in permerror.
 *
 * Choices where RFC 7208 leaves room (docs/spf.md, "Details"):
 *  - void lookups are counted for the lookup a term itself makes (a, mx,
 *    exists; include/redirect end in permerror anyway), not for the
 *    address lookups of MX hosts or PTR names, nor for the PTR lookup
 *    (its owner is the client, not the domain);
 *  - a TEMPFAIL on an MX host's address lookup is a temperror (section 5);
 *    on a PTR name's it skips the name (section 5.5);
 *  - ptr: the first 10 PTR names are taken, then those under the target
 *    are validated;
 *  - a name that cannot be looked up after expansion (empty label, label
 *    over 63 octets, a space) does not exist: the term does not match,
 *    and no void lookup is counted.
 *
 * Owns nothing between calls: the answer the caller gives, and per call
 * the parsed records and buffers of its context.  Never logs, never
 * blocks, never reads the clock (the request carries %{t}).
 */
#include "policy/spf.h"
#include "policy/spf-private.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_EXP_TEXT SPF_DEFAULT_EXPLANATION "?s=%{S}&i=%{I}&ip=%{C}&r=%{R}"

static const char *const result_names[] = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror",
                                           "pending"};

const char *spf_result_name(spf_result_t r)
{
    return (unsigned)r < ARRAY_LEN(result_names) ? result_names[r] : "unknown";
}

int spf_result_parse(const char *s)
{
    for (int i = 0; i < (int)SPF_PENDING; i++)
        if (str_ieq(s, result_names[i]))
            return i;
    return -1;
}

void spf_answer_init(spf_answer_t *a)
{
    memset(a, 0, sizeof *a);
}

void spf_answer_reset(spf_answer_t *a)
{
    a->result = SPF_NONE;
    a->domain[0] = 0;
    a->mechanism[0] = 0;
    buf_reset(&a->explanation);
    buf_reset(&a->problem);
    buf_reset(&a->trace);
}

void spf_answer_free(spf_answer_t *a)
{
    buf_free(&a->explanation);
    buf_free(&a->problem);
    buf_free(&a->trace);
    spf_answer_init(a);
}

/* ------------------------------------------------------------- context */

typedef enum { T_MATCH, T_NOMATCH, T_PENDING, T_TEMPERROR, T_PERMERROR } tres_t;

/* What one check_host() decided, and what its explanation needs. */
typedef struct outcome {
    char mechanism[256];
    char *exp;                  /* the deciding record's exp= domain-spec, or NULL */
    char domain[256];           /* that record's domain (%{d} in the explanation) */
} outcome_t;

typedef struct ctx {
    dns_memo_t *memo;
    const spf_request_t *req;
    spf_answer_t *a;
    bool tracing;
    int depth;                  /* include/redirect nesting, for the trace */
    spf_identity_t id;
    int fam;                    /* 4, 6; 0: the client address is not one */
    unsigned char ip[16];
    buf_t ip_i, ip_c, rev;      /* %{i}, %{c}, the PTR query name */
    dns_type_t addr_type;       /* A or AAAA: what a, mx and ptr look up */
    int lookups, voids;
    int prefetch_budget;        /* -1 until the walk first stops */
    bool quiet;                 /* prefetching: no waking lookups, no trace, no problem */
    const char *p_domain;       /* the domain %{p} is expanded for */
    buf_t p_val;
} ctx_t;

static void outcome_free(outcome_t *o)
{
    xfree(&o->exp);
}

/* s with every octet outside printable ASCII as \xHH, for the trace and
 * the problem text. */
static void put_clean(buf_t *out, const char *s, size_t max)
{
    size_t i = 0;
    for (; s[i] && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '\\')
            buf_putc(out, (char)ch);
        else
            buf_printf(out, "\\x%02x", ch);
    }
    if (s[i])
        buf_puts(out, "...");
}

static void tr(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tr(ctx_t *c, const char *fmt, ...)
{
    if (!c->tracing || c->quiet)
        return;
    buf_t *t = &c->a->trace;
    for (int i = 0; i < c->depth; i++)
        buf_puts(t, "  ");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(t, fmt, ap);
    va_end(ap);
    buf_putc(t, '\n');
}

/* The first error of an evaluation is the one reported: errors end it. */
static void set_problem(ctx_t *c, const char *fmt, va_list ap)
{
    if (c->quiet || c->a->problem.len)
        return;
    buf_vprintf(&c->a->problem, fmt, ap);
    tr(c, "error: %s", buf_cstr(&c->a->problem));
}

static tres_t perm(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static tres_t perm(ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_problem(c, fmt, ap);
    va_end(ap);
    return T_PERMERROR;
}

static tres_t temp(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static tres_t temp(ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_problem(c, fmt, ap);
    va_end(ap);
    return T_TEMPERROR;
}

static spf_result_t to_result(tres_t t)
{
    return t == T_TEMPERROR ? SPF_TEMPERROR : t == T_PENDING ? SPF_PENDING : SPF_PERMERROR;
}

/* The memo's answer, NULL while the query runs (the caller is then woken
 * when it completes).  Quiet: only started. */
static const dns_answer_t *lookup(ctx_t *c, dns_type_t type, const char *name)
{
    if (c->quiet) {
        dns_memo_prefetch(c->memo, type, name);
        return NULL;
    }
    dns_how_t how;
    const dns_answer_t *ans = dns_memo_get(c->memo, type, name, &how);
    if (ans && c->tracing) {
        buf_t line = BUF_INIT;
        dns_trace_answer(&line, ans, &how);
        tr(c, "%s", buf_cstr(&line));
        buf_free(&line);
    }
    return ans;
}

static void prefetch(ctx_t *c, dns_type_t type, const char *name)
{
    dns_memo_prefetch(c->memo, type, name);
}

static bool same_address(const ctx_t *c, const char *text)
{
    unsigned char b[16];
    if (inet_pton(c->fam == 4 ? AF_INET : AF_INET6, text, b) != 1)
        return false;
    return memcmp(b, c->ip, c->fam == 4 ? 4 : 16) == 0;
}

static bool has_address(const ctx_t *c, const dns_answer_t *ans)
{
    for (size_t i = 0; ans->status == DNS_OK && i < ans->n; i++)
        if (same_address(c, ans->rr[i].data))
            return true;
    return false;
}

/* name is domain or a name under it (no final dots, any case). */
static bool at_or_under(const char *name, const char *domain)
{
    size_t n = strlen(name), d = strlen(domain);
    if (n == d)
        return str_ieq(name, domain);
    return d > 0 && n > d && name[n - d - 1] == '.' && str_ieq(name + n - d, domain);
}

/* ----------------------------------------------------------- %{p} */

/* Section 7.3: a PTR name of the client whose addresses include it,
 * preferring the domain itself, then a name under it; "unknown" when
 * there is none or DNS fails.  NULL while lookups run. */
static const char *get_p(void *arg)
{
    ctx_t *c = arg;
    if (c->quiet)
        return NULL;
    const dns_answer_t *ptr = lookup(c, DNS_T_PTR, buf_cstr(&c->rev));
    if (!ptr)
        return NULL;
    if (ptr->status != DNS_OK)
        return "unknown";
    size_t n = ptr->n < SPF_MAX_PTR ? ptr->n : SPF_MAX_PTR;
    const dns_answer_t *fwd[SPF_MAX_PTR] = {0};
    bool blocked = false;
    for (size_t i = 0; i < n; i++) {
        const char *name = ptr->rr[i].data;
        if (!*name)
            continue;
        if (blocked) {
            prefetch(c, c->addr_type, name);
            continue;
        }
        fwd[i] = lookup(c, c->addr_type, name);
        blocked = fwd[i] == NULL;
    }
    if (blocked)
        return NULL;
    const char *best = NULL;
    int rank = 0;
    for (size_t i = 0; i < n; i++) {
        if (!fwd[i] || !has_address(c, fwd[i]))
            continue;
        const char *name = ptr->rr[i].data;
        int r = str_ieq(name, c->p_domain) ? 3 : at_or_under(name, c->p_domain) ? 2 : 1;
        if (r > rank) {
            rank = r;
            best = name;
        }
    }
    if (!best)
        return "unknown";
    buf_reset(&c->p_val);
    buf_puts(&c->p_val, best);
    return buf_cstr(&c->p_val);
}

static void env_for(ctx_t *c, const char *domain, spf_macro_env_t *env)
{
    spf_env_base(env, c->req, &c->id, buf_cstr(&c->ip_i), buf_cstr(&c->ip_c), c->fam);
    env->d = domain;
    env->get_p = get_p;
    env->arg = c;
    c->p_domain = domain;
}

/* The name a term or modifier looks up: its domain-spec expanded for
 * domain (or domain itself), ready for a query (spf_query_name; *ok
 * false: it cannot be one).  0 ready, 1 pending (%{p}), -1 permerror. */
static int target(ctx_t *c, const char *spec, const char *domain, const char *term, buf_t *name, bool *ok)
{
    buf_reset(name);
    *ok = false;
    if (!spec) {
        buf_puts(name, domain);
    } else {
        spf_macro_env_t env;
        env_for(c, domain, &env);
        buf_t why = BUF_INIT;
        int r = spf_expand(spec, strlen(spec), &env, SPF_MS_DOMAIN, name, &why);
        if (r < 0)
            perm(c, "%s: %s", term, buf_cstr(&why));
        buf_free(&why);
        if (r != 0)
            return r;
    }
    *ok = spf_query_name(name);
    return 0;
}

/* ------------------------------------------------------------ limits */

static bool count_lookup(ctx_t *c, const char *term)
{
    if (++c->lookups <= SPF_MAX_DNS_TERMS)
        return true;
    perm(c, "too many DNS lookups: \"%s\" would be number %d (at most %d, RFC 7208 section 4.6.4)", term,
         c->lookups, SPF_MAX_DNS_TERMS);
    return false;
}

static tres_t void_lookup(ctx_t *c, const char *term, const dns_answer_t *ans)
{
    tr(c, "%s: %s %s is %s: void lookup number %d", term, dns_type_name(ans->type), ans->name,
       dns_status_name(ans->status), c->voids + 1);
    if (++c->voids > SPF_MAX_VOID)
        return perm(c, "too many void lookups: \"%s\" is number %d (at most %d, RFC 7208 section 4.6.4)", term,
                    c->voids, SPF_MAX_VOID);
    return T_NOMATCH;
}

static tres_t dns_temp(ctx_t *c, const char *term, const dns_answer_t *ans)
{
    return temp(c, "%s: DNS %s %s: %s", term, dns_type_name(ans->type), ans->name,
                ans->error[0] ? ans->error : "temporary failure");
}

/* --------------------------------------------------------- mechanisms */

static spf_result_t check_host(ctx_t *c, const char *domain, outcome_t *out);

static bool addr_in(const ctx_t *c, const char *text, const spf_term_t *t)
{
    unsigned char b[16];
    if (inet_pton(c->fam == 4 ? AF_INET : AF_INET6, text, b) != 1)
        return false;
    return spf_ip_in(c->fam, c->ip, b, c->fam == 4 ? t->cidr4 : t->cidr6);
}

static tres_t eval_a(ctx_t *c, const spf_term_t *t, const char *name)
{
    const dns_answer_t *ans = lookup(c, c->addr_type, name);
    if (!ans)
        return T_PENDING;
    if (ans->status == DNS_TEMPFAIL)
        return dns_temp(c, t->text, ans);
    if (ans->status != DNS_OK)
        return void_lookup(c, t->text, ans);
    for (size_t i = 0; i < ans->n; i++)
        if (addr_in(c, ans->rr[i].data, t))
            return T_MATCH;
    return T_NOMATCH;
}

static tres_t eval_mx(ctx_t *c, const spf_term_t *t, const char *name)
{
    const dns_answer_t *mx = lookup(c, DNS_T_MX, name);
    if (!mx)
        return T_PENDING;
    if (mx->status == DNS_TEMPFAIL)
        return dns_temp(c, t->text, mx);
    if (mx->status != DNS_OK)
        return void_lookup(c, t->text, mx);
    if (mx->n > SPF_MAX_MX)
        return perm(c, "%s: %s has %zu MX records (at most %d, RFC 7208 section 4.6.4)", t->text, name, mx->n,
                    SPF_MAX_MX);
    /* Every host's addresses are asked for at once; they are judged in
     * MX order, so the result is the sequential one. */
    bool blocked = false;
    for (size_t i = 0; i < mx->n; i++) {
        const char *host = mx->rr[i].data;
        if (!*host)
            continue;   /* a null MX (RFC 7505) names no host */
        if (blocked) {
            prefetch(c, c->addr_type, host);
            continue;
        }
        const dns_answer_t *h = lookup(c, c->addr_type, host);
        if (!h) {
            blocked = true;
            continue;
        }
        if (h->status == DNS_TEMPFAIL)
            return dns_temp(c, t->text, h);
        for (size_t k = 0; h->status == DNS_OK && k < h->n; k++)
            if (addr_in(c, h->rr[k].data, t))
                return T_MATCH;
    }
    return blocked ? T_PENDING : T_NOMATCH;
}

static tres_t eval_ptr(ctx_t *c, const spf_term_t *t, const char *name)
{
    const dns_answer_t *ptr = lookup(c, DNS_T_PTR, buf_cstr(&c->rev));
    if (!ptr)
        return T_PENDING;
    if (ptr->status != DNS_OK)
        return T_NOMATCH;   /* section 5.5: a DNS error here is no match */
    size_t n = ptr->n < SPF_MAX_PTR ? ptr->n : SPF_MAX_PTR;
    if (ptr->n > n)
        tr(c, "%s: only the first %d of %zu PTR names are checked", t->text, SPF_MAX_PTR, ptr->n);
    bool blocked = false;
    for (size_t i = 0; i < n; i++) {
        const char *host = ptr->rr[i].data;
        if (!*host || !at_or_under(host, name))
            continue;
        if (blocked) {
            prefetch(c, c->addr_type, host);
            continue;
        }
        const dns_answer_t *h = lookup(c, c->addr_type, host);
        if (!h) {
            blocked = true;
            continue;
        }
        /* A failed lookup skips the name (section 5.5). */
        if (has_address(c, h))
            return T_MATCH;
    }
    return blocked ? T_PENDING : T_NOMATCH;
}

static tres_t eval_exists(ctx_t *c, const spf_term_t *t, const char *name)
{
    const dns_answer_t *ans = lookup(c, DNS_T_A, name);   /* A even for an IPv6 client (5.7) */
    if (!ans)
        return T_PENDING;
    if (ans->status == DNS_TEMPFAIL)
        return dns_temp(c, t->text, ans);
    if (ans->status != DNS_OK)
        return void_lookup(c, t->text, ans);
    return T_MATCH;
}

static tres_t eval_include(ctx_t *c, const spf_term_t *t, const char *name)
{
    outcome_t sub = {0};
    c->depth++;
    spf_result_t r = check_host(c, name, &sub);
    c->depth--;
    outcome_free(&sub);
    if (r != SPF_PENDING)
        tr(c, "%s: check_host(%s) = %s", t->text, name, spf_result_name(r));
    switch (r) {
    case SPF_PASS: return T_MATCH;
    case SPF_FAIL:
    case SPF_SOFTFAIL:
    case SPF_NEUTRAL: return T_NOMATCH;
    case SPF_TEMPERROR: return T_TEMPERROR;
    case SPF_NONE: return perm(c, "%s: %s has no SPF record", t->text, name);
    case SPF_PENDING: return T_PENDING;
    default: return T_PERMERROR;
    }
}

static tres_t eval_term(ctx_t *c, const spf_term_t *t, const char *domain)
{
    switch (t->mech) {
    case SPF_M_ALL: return T_MATCH;
    case SPF_M_IP4: return c->fam == 4 && spf_ip_in(4, c->ip, t->net, t->cidr4) ? T_MATCH : T_NOMATCH;
    case SPF_M_IP6: return c->fam == 6 && spf_ip_in(6, c->ip, t->net, t->cidr6) ? T_MATCH : T_NOMATCH;
    default: break;
    }
    if (!count_lookup(c, t->text))
        return T_PERMERROR;
    buf_t name = BUF_INIT;
    bool ok;
    int e = target(c, t->spec, domain, t->text, &name, &ok);
    if (e != 0) {
        buf_free(&name);
        return e > 0 ? T_PENDING : T_PERMERROR;
    }
    tres_t r;
    if (t->mech == SPF_M_INCLUDE) {
        r = eval_include(c, t, buf_cstr(&name));
    } else if (t->mech == SPF_M_PTR) {
        r = eval_ptr(c, t, buf_cstr(&name));
    } else if (!ok) {
        tr(c, "%s: \"%s\" cannot be looked up: no match", t->text, buf_cstr(&name));
        r = T_NOMATCH;
    } else if (t->mech == SPF_M_A) {
        r = eval_a(c, t, buf_cstr(&name));
    } else if (t->mech == SPF_M_MX) {
        r = eval_mx(c, t, buf_cstr(&name));
    } else {
        r = eval_exists(c, t, buf_cstr(&name));
    }
    buf_free(&name);
    return r;
}

/* ------------------------------------------------------------ prefetch */

static void prefetch_name(ctx_t *c, spf_mech_t mech, const char *spec, const char *domain)
{
    if (mech == SPF_M_PTR) {
        prefetch(c, DNS_T_PTR, buf_cstr(&c->rev));
        return;
    }
    buf_t name = BUF_INIT;
    bool ok;
    if (target(c, spec, domain, "", &name, &ok) == 0 && ok) {
        dns_type_t type = mech == SPF_M_A ? c->addr_type
                        : mech == SPF_M_MX ? DNS_T_MX
                        : mech == SPF_M_EXISTS ? DNS_T_A
                                               : DNS_T_TXT;
        prefetch(c, type, buf_cstr(&name));
    }
    buf_free(&name);
}

/* The walk stopped at a term of rec: start the lookups of the terms
 * after it (and of its redirect=) that can be named without DNS. */
static void prefetch_rest(ctx_t *c, const spf_record_t *rec, size_t from, const char *domain)
{
    if (c->prefetch_budget < 0)
        c->prefetch_budget = SPF_MAX_DNS_TERMS - c->lookups;
    bool was = c->quiet;
    c->quiet = true;
    size_t i = from;
    for (; i < rec->n && c->prefetch_budget > 0; i++) {
        const spf_term_t *t = &rec->terms[i];
        if (t->mech == SPF_M_ALL)
            break;   /* nothing after it is ever reached */
        if (t->mech == SPF_M_IP4 || t->mech == SPF_M_IP6)
            continue;
        c->prefetch_budget--;
        prefetch_name(c, t->mech, t->spec, domain);
    }
    if (i == rec->n && rec->redirect && !rec->has_all && c->prefetch_budget > 0) {
        c->prefetch_budget--;
        prefetch_name(c, SPF_M_INCLUDE, rec->redirect, domain);
    }
    c->quiet = was;
}

/* ---------------------------------------------------------- check_host */

static spf_result_t qualifier_result(char q)
{
    return q == '-' ? SPF_FAIL : q == '~' ? SPF_SOFTFAIL : q == '?' ? SPF_NEUTRAL : SPF_PASS;
}

static spf_result_t eval_record(ctx_t *c, const spf_record_t *rec, const char *domain, outcome_t *out)
{
    for (size_t i = 0; i < rec->n; i++) {
        const spf_term_t *t = &rec->terms[i];
        tres_t m = eval_term(c, t, domain);
        if (m == T_PENDING) {
            prefetch_rest(c, rec, i + 1, domain);
            return SPF_PENDING;
        }
        if (m != T_MATCH && m != T_NOMATCH)
            return to_result(m);
        if (m == T_NOMATCH) {
            tr(c, "%s: %s -> no match", domain, t->text);
            continue;
        }
        spf_result_t r = qualifier_result(t->qual);
        tr(c, "%s: %s -> match: %s", domain, t->text, spf_result_name(r));
        str_copy(out->mechanism, t->text, sizeof out->mechanism);
        out->exp = rec->exp ? xstrdup(rec->exp) : NULL;
        return r;
    }
    /* Section 6.1: redirect= only when nothing matched, and never in a
     * record that has "all". */
    if (rec->redirect && !rec->has_all) {
        char term[300];
        snprintf(term, sizeof term, "redirect=%s", rec->redirect);
        if (!count_lookup(c, term))
            return SPF_PERMERROR;
        buf_t name = BUF_INIT;
        bool ok;
        int e = target(c, rec->redirect, domain, term, &name, &ok);
        if (e != 0) {
            buf_free(&name);
            return e > 0 ? SPF_PENDING : SPF_PERMERROR;
        }
        tr(c, "%s: %s", domain, term);
        outcome_t sub = {0};
        c->depth++;
        spf_result_t r = check_host(c, buf_cstr(&name), &sub);
        c->depth--;
        if (r == SPF_NONE)
            r = to_result(perm(c, "%s: %s has no SPF record", term, buf_cstr(&name)));
        if (r != SPF_PENDING)
            tr(c, "%s: check_host(%s) = %s", term, buf_cstr(&name), spf_result_name(r));
        buf_free(&name);
        /* The target's result, mechanism and explanation replace ours. */
        str_copy(out->mechanism, sub.mechanism, sizeof out->mechanism);
        str_copy(out->domain, sub.domain, sizeof out->domain);
        out->exp = sub.exp;
        return r;
    }
    str_copy(out->mechanism, "default", sizeof out->mechanism);
    tr(c, "%s: no mechanism matched: neutral", domain);
    return SPF_NEUTRAL;
}

static spf_result_t check_host(ctx_t *c, const char *domain, outcome_t *out)
{
    str_copy(out->domain, domain, sizeof out->domain);
    if (!spf_domain_ok(domain)) {
        tr(c, "\"%s\" is not a valid domain name: none", domain);
        return SPF_NONE;
    }
    const dns_answer_t *ans = lookup(c, DNS_T_TXT, domain);
    if (!ans)
        return SPF_PENDING;
    if (ans->status == DNS_TEMPFAIL)
        return to_result(temp(c, "DNS TXT %s: %s", domain, ans->error[0] ? ans->error : "temporary failure"));
    const char *txt = NULL;
    size_t found = 0;
    for (size_t i = 0; ans->status == DNS_OK && i < ans->n; i++) {
        if (spf_is_record(ans->rr[i].data)) {
            found++;
            if (!txt)
                txt = ans->rr[i].data;
        }
    }
    if (found == 0) {
        tr(c, "%s: no SPF record: none", domain);
        return SPF_NONE;
    }
    if (found > 1)
        return to_result(perm(c, "%s has %zu SPF records (at most one, RFC 7208 section 4.5)", domain, found));
    if (c->tracing) {
        buf_t t = BUF_INIT;
        put_clean(&t, txt, 512);
        tr(c, "%s: record \"%s\"", domain, buf_cstr(&t));
        buf_free(&t);
    }
    spf_record_t rec;
    buf_t why = BUF_INIT;
    spf_result_t r;
    if (spf_record_parse(txt, &rec, &why) != 0) {
        r = to_result(perm(c, "%s: %s", domain, buf_cstr(&why)));
    } else {
        r = eval_record(c, &rec, domain, out);
        spf_record_free(&rec);
    }
    buf_free(&why);
    return r;
}

/* ----------------------------------------------------------- explain */

/* Section 6.2: the exp= text of the deciding record, or the default; a
 * problem with exp= is never an error.  0 done, 1 pending. */
static int explain(ctx_t *c, const outcome_t *o)
{
    buf_t *x = &c->a->explanation;
    buf_reset(x);
    if (o->exp) {
        buf_t name = BUF_INIT, why = BUF_INIT;
        spf_macro_env_t env;
        env_for(c, o->domain, &env);
        int e = spf_expand(o->exp, strlen(o->exp), &env, SPF_MS_DOMAIN, &name, &why);
        const dns_answer_t *t = NULL;
        if (e == 0 && spf_query_name(&name)) {
            t = lookup(c, DNS_T_TXT, buf_cstr(&name));
            if (!t)
                e = 1;
        }
        if (t && t->status == DNS_OK && t->n == 1) {
            e = spf_expand(t->rr[0].data, strlen(t->rr[0].data), &env, SPF_MS_EXPLAIN, x, &why);
            if (e == 0)
                tr(c, "exp=%s: \"%s\"", o->exp, buf_cstr(x));
            else if (e < 0)
                tr(c, "exp=%s: %s: the default explanation", o->exp, buf_cstr(&why));
        } else if (t) {
            tr(c, "exp=%s: TXT %s: %s: the default explanation", o->exp, buf_cstr(&name),
               t->status == DNS_OK ? "more than one record" : dns_status_name(t->status));
        } else if (e <= 0) {
            tr(c, "exp=%s: no name to look up: the default explanation", o->exp);
        }
        buf_free(&name);
        buf_free(&why);
        if (e > 0) {
            buf_reset(x);
            return 1;
        }
        if (e == 0 && t && t->status == DNS_OK && t->n == 1)
            return 0;
        buf_reset(x);
    }
    const char *tmpl = c->req->default_explanation ? c->req->default_explanation : DEFAULT_EXP_TEXT;
    spf_macro_env_t env;
    env_for(c, o->domain, &env);
    buf_t why = BUF_INIT;
    int e = spf_expand(tmpl, strlen(tmpl), &env, SPF_MS_EXPLAIN, x, &why);
    buf_free(&why);
    if (e > 0)
        return 1;
    if (e < 0) {
        buf_reset(x);
        buf_puts(x, tmpl);
    }
    return 0;
}

/* ------------------------------------------------------------ spf_eval */

static void ctx_init(ctx_t *c, dns_memo_t *memo, const spf_request_t *req, spf_answer_t *a, bool trace)
{
    memset(c, 0, sizeof *c);
    c->memo = memo;
    c->req = req;
    c->a = a;
    c->tracing = trace;
    c->prefetch_budget = -1;
    spf_identity_init(&c->id, req);
    c->fam = spf_ip_parse(req->ip ? req->ip : "", c->ip);
    if (c->fam) {
        spf_ip_dotted(c->fam, c->ip, &c->ip_i);
        spf_ip_text(c->fam, c->ip, &c->ip_c);
        spf_ip_reverse_name(c->fam, c->ip, &c->rev);
    }
    c->addr_type = c->fam == 6 ? DNS_T_AAAA : DNS_T_A;
}

static void ctx_free(ctx_t *c)
{
    spf_identity_free(&c->id);
    buf_free(&c->ip_i);
    buf_free(&c->ip_c);
    buf_free(&c->rev);
    buf_free(&c->p_val);
}

spf_result_t spf_eval(dns_memo_t *memo, const spf_request_t *req, bool trace, spf_answer_t *a)
{
    spf_answer_reset(a);
    ctx_t c;
    ctx_init(&c, memo, req, a, trace);
    const char *domain = buf_cstr(&c.id.domain);
    str_copy(a->domain, domain, sizeof a->domain);
    if (trace) {
        buf_t s = BUF_INIT;
        put_clean(&s, buf_cstr(&c.id.sender), 300);
        tr(&c, "check_host: identity %s, sender %s, client %s", c.id.helo ? "helo" : "mailfrom", buf_cstr(&s),
           c.fam ? buf_cstr(&c.ip_c) : "?");
        buf_free(&s);
    }
    spf_result_t r;
    outcome_t o = {0};
    if (!c.fam) {
        r = to_result(perm(&c, "the client address \"%.64s\" is not an IP address", req->ip ? req->ip : ""));
    } else {
        r = check_host(&c, domain, &o);
        if (r != SPF_PENDING)
            str_copy(a->mechanism, r == SPF_TEMPERROR || r == SPF_PERMERROR || r == SPF_NONE ? "" : o.mechanism,
                     sizeof a->mechanism);
        if (r == SPF_FAIL && explain(&c, &o) != 0)
            r = SPF_PENDING;
    }
    outcome_free(&o);
    if (r == SPF_PENDING) {
        /* Not a result: keep nothing that looks like one. */
        a->mechanism[0] = 0;
        buf_reset(&a->explanation);
        buf_reset(&a->problem);
    } else {
        tr(&c, "result: %s", spf_result_name(r));
    }
    a->result = r;
    ctx_free(&c);
    return r;
}

/* ------------------------------------------------------- Received-SPF */

static bool is_atext(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-/=?^_`{|}~", ch));
}

/* A key-value pair's value: a dot-atom as it is, anything else as a
 * quoted-string; octets a header cannot carry become '?'. */
static void put_value(buf_t *out, const char *s)
{
    size_t n = strlen(s);
    bool atom = n > 0 && s[0] != '.' && s[n - 1] != '.';
    for (size_t i = 0; atom && i < n; i++)
        atom = is_atext((unsigned char)s[i]) || (s[i] == '.' && s[i + 1] != '.');
    if (atom) {
        buf_puts(out, s);
        return;
    }
    buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            buf_putc(out, '\\');
        buf_putc(out, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
    }
    buf_putc(out, '"');
}

/* Text inside the comment: parentheses and backslashes quoted. */
static void put_ctext(buf_t *out, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '(' || ch == ')' || ch == '\\')
            buf_putc(out, '\\');
        buf_putc(out, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
    }
}

void spf_received_value(const spf_request_t *req, const spf_answer_t *a, buf_t *out)
{
    spf_identity_t id;
    spf_identity_init(&id, req);
    unsigned char ip[16];
    int fam = spf_ip_parse(req->ip ? req->ip : "", ip);
    buf_t ipt = BUF_INIT, comment = BUF_INIT;
    if (fam)
        spf_ip_text(fam, ip, &ipt);
    else
        buf_puts(&ipt, req->ip ? req->ip : "");
    const char *who = buf_cstr(&id.sender), *addr = buf_cstr(&ipt);
    spf_result_t r = a->result == SPF_PENDING ? SPF_NONE : a->result;
    if (req->receiver && *req->receiver)
        buf_printf(&comment, "%s: ", req->receiver);
    switch (r) {
    case SPF_PASS: buf_printf(&comment, "domain of %s designates %s as permitted sender", who, addr); break;
    case SPF_FAIL: buf_printf(&comment, "domain of %s does not designate %s as permitted sender", who, addr); break;
    case SPF_SOFTFAIL:
        buf_printf(&comment, "transitioning domain of %s does not designate %s as permitted sender", who, addr);
        break;
    case SPF_NEUTRAL: buf_printf(&comment, "%s is neither permitted nor denied by domain of %s", addr, who); break;
    case SPF_TEMPERROR: buf_printf(&comment, "temporary error in processing during lookup of %s", who); break;
    case SPF_PERMERROR: buf_printf(&comment, "permanent error in processing domain of %s", who); break;
    default: buf_printf(&comment, "domain of %s does not designate permitted sender hosts", who); break;
    }
    buf_printf(out, "%s (", spf_result_name(r));
    put_ctext(out, buf_cstr(&comment));
    buf_puts(out, ") client-ip=");
    put_value(out, addr);
    buf_puts(out, "; envelope-from=\"");
    /* always a quoted-string, as RFC 7208's examples write it */
    for (const char *s = req->sender ? req->sender : ""; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            buf_putc(out, '\\');
        buf_putc(out, ch >= 0x20 && ch < 0x7f ? (char)ch : '?');
    }
    buf_puts(out, "\"; helo=");
    put_value(out, req->helo ? req->helo : "");
    buf_putc(out, ';');
    if ((r == SPF_TEMPERROR || r == SPF_PERMERROR) && a->problem.len) {
        buf_puts(out, " problem=");
        put_value(out, buf_cstr(&a->problem));
        buf_putc(out, ';');
    }
    if (req->receiver && *req->receiver) {
        buf_puts(out, " receiver=");
        put_value(out, req->receiver);
        buf_putc(out, ';');
    }
    buf_printf(out, " identity=%s;", id.helo ? "helo" : "mailfrom");
    if (a->mechanism[0] && strcmp(a->mechanism, "default") != 0) {
        buf_puts(out, " mechanism=");
        put_value(out, a->mechanism);
        buf_putc(out, ';');
    }
    buf_free(&ipt);
    buf_free(&comment);
    spf_identity_free(&id);
}
