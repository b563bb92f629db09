/*
 * expand: $name expansion and the resolved parameter sets (params_t).
 *
 * A set is built once, at load: every registry parameter and every
 * user-defined name is expanded (memoized, with loop detection), typed,
 * bounds-checked and split into list items, so that sessions read values
 * by id with plain array indexing.  The set seen by a service is built the
 * same way with that service's -o overrides looked up first, so a value
 * that references an overridden name sees the override.
 *
 * Owns the params_t it returns (strings and item blocks).  Must never be
 * called on the session path, and never keeps pointers into the settings
 * it was built from beyond the config_t that owns both.
 */
#include "config/config-private.h"
#include "core/util.h"
#include "core/version.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_NEW, ST_BUSY, ST_DONE };
enum {
    MAX_NEST = 64,            /* $name chains and ${a?${b?...}} nesting */
    MAX_VALUE = 256 * 1024,   /* one expanded value */
    MAX_TOTAL = 8 * 1024 * 1024, /* all values of one set: $a$a$a... chains grow exponentially */
};

typedef struct where {
    const char *pname;  /* the parameter whose text is being expanded */
    const char *file;
    int line;
} where_t;

typedef struct xctx {
    const config_t *cfg;
    const setting_t *ov;
    size_t nov;
    bool with_main;
    params_t *p;
    unsigned char *state;   /* per slot: registry ids, then p->user */
    unsigned char *bad;     /* per slot: its value is unreliable (an error on the way) */
    int stack[MAX_NEST + 1];  /* slots being computed, outermost first */
    int nstack;
    int nest;
    size_t total;
    bool too_long;          /* the length limit was reported */
    int nbad;               /* errors, plus uses of unreliable values */
    buf_t *err, *warn;
    buf_t *refs;            /* scan mode: collect names instead of expanding */
    buf_t q;                /* scratch for cf_quote */
} xctx;

static void expand_span(xctx *x, const char *s, size_t n, buf_t *out, const where_t *w);

static void xerr(xctx *x, const where_t *w, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void xerr(xctx *x, const where_t *w, const char *fmt, ...)
{
    x->nbad++;
    if (x->refs)
        return;
    va_list ap;
    va_start(ap, fmt);
    cf_vmsg(x->err, w->file, w->line, fmt, ap);
    va_end(ap);
}

static const char *slot_name(const xctx *x, int slot)
{
    return slot < PARAM__COUNT ? cf_reg[slot].name : x->p->user[slot - PARAM__COUNT].def->name;
}

static int slot_of(const xctx *x, const char *name, size_t len)
{
    int id = cf_reg_find(name, len);
    if (id >= 0)
        return id;
    for (size_t i = 0; i < x->p->nuser; i++) {
        const char *u = x->p->user[i].def->name;
        if (strncmp(u, name, len) == 0 && u[len] == 0)
            return PARAM__COUNT + (int)i;
    }
    return -1;
}

static const setting_t *find_def(const config_t *cfg, const setting_t *ov, size_t nov, bool with_main,
                                 const char *name)
{
    for (size_t i = 0; i < nov; i++)
        if (strcmp(ov[i].name, name) == 0)
            return &ov[i];
    if (with_main)
        for (size_t i = 0; i < cfg->nset; i++)
            if (strcmp(cfg->set[i].name, name) == 0)
                return &cfg->set[i];
    return NULL;
}

static void where_of(const xctx *x, int slot, where_t *w)
{
    const setting_t *d = slot < PARAM__COUNT ? x->p->def[slot] : x->p->user[slot - PARAM__COUNT].def;
    w->pname = slot_name(x, slot);
    w->file = d ? d->file : x->cfg->main_file;
    w->line = d ? d->line : 0;
}

/* Relative directories resolve against config_directory (the current
 * directory for the embedded default), so a configuration directory can be
 * moved as a whole. */
static void make_absolute(const config_t *cfg, buf_t *v)
{
    if (v->len == 0 || v->data[0] == '/')
        return;
    const char *r = v->data;
    bool slash = v->data[v->len - 1] == '/';
    while (r[0] == '.' && r[1] == '/') {
        r += 2;
        while (*r == '/')
            r++;
    }
    if (strcmp(r, ".") == 0)
        r = "";
    buf_t o = BUF_INIT;
    buf_puts(&o, cfg->dir);
    if ((*r || slash) && (o.len == 0 || o.data[o.len - 1] != '/'))
        buf_putc(&o, '/');
    buf_puts(&o, r);
    buf_free(v);
    *v = o;
}

static const char *value_of(xctx *x, int slot);

static void compute(xctx *x, int slot, buf_t *out)
{
    where_t w;
    where_of(x, slot, &w);
    if (slot >= PARAM__COUNT) {
        const setting_t *d = x->p->user[slot - PARAM__COUNT].def;
        expand_span(x, d->raw, strlen(d->raw), out, &w);
        return;
    }
    int id = slot;
    const setting_t *d = x->p->def[id];
    const char *raw = d ? d->raw : cf_reg[id].def;
    if (id == PARAM_config_directory)
        buf_puts(out, x->cfg->dir);   /* -c DIR wins over any main.cf line */
    else if (id == PARAM_mail_version)
        buf_puts(out, MOAT_VERSION);
    else if (cf_reg[id].flags & PF_RAW)
        buf_puts(out, raw);
    else
        expand_span(x, raw, strlen(raw), out, &w);

    if (id == PARAM_myhostname && out->len == 0) {
        buf_puts(out, x->cfg->hostname);
    } else if (id == PARAM_mydomain && out->len == 0) {
        const char *dot = strchr(value_of(x, PARAM_myhostname), '.');
        buf_puts(out, dot && dot[1] ? dot + 1 : "localdomain");
    } else if (id == PARAM_queue_directory || id == PARAM_data_directory || id == PARAM_mail_spool_directory) {
        make_absolute(x->cfg, out);
    }
}

static const char *value_of(xctx *x, int slot)
{
    char **val = slot < PARAM__COUNT ? &x->p->val[slot] : &x->p->user[slot - PARAM__COUNT].val;
    if (x->state[slot] == ST_DONE) {
        if (x->bad[slot])
            x->nbad++;
        return *val;
    }
    if (x->state[slot] == ST_BUSY || x->nstack >= MAX_NEST) {
        /* Reported at the parameter whose own text makes the last step. */
        where_t w;
        where_of(x, x->nstack ? x->stack[x->nstack - 1] : slot, &w);
        buf_t chain = BUF_INIT;
        int from = 0;
        for (int i = 0; i < x->nstack; i++)
            if (x->stack[i] == slot)
                from = i;
        for (int i = from; i < x->nstack; i++)
            buf_printf(&chain, "$%s -> ", slot_name(x, x->stack[i]));
        buf_printf(&chain, "$%s", slot_name(x, slot));
        if (x->state[slot] == ST_BUSY)
            xerr(x, &w, "%s: expansion loop: %s", w.pname, buf_cstr(&chain));
        else
            xerr(x, &w, "%s: $name references nested too deeply: %s", w.pname, buf_cstr(&chain));
        buf_free(&chain);
        return "";
    }
    x->state[slot] = ST_BUSY;
    x->stack[x->nstack++] = slot;
    int before = x->nbad;
    buf_t out = BUF_INIT;
    compute(x, slot, &out);
    *val = buf_steal(&out);
    x->nstack--;
    x->state[slot] = ST_DONE;
    x->bad[slot] = x->nbad != before;
    return *val;
}

static void put(xctx *x, buf_t *out, const char *s, size_t n, const where_t *w)
{
    if (!out || x->too_long)
        return;
    if (out->len + n > MAX_VALUE || x->total + n > MAX_TOTAL) {
        x->too_long = true;
        if (out->len + n > MAX_VALUE)
            xerr(x, w, "%s: value too long after $name expansion (limit %d bytes)", w->pname, MAX_VALUE);
        else
            xerr(x, w, "%s: values too long after $name expansion (limit %d bytes for all together)", w->pname,
                 MAX_TOTAL);
        return;
    }
    buf_append(out, s, n);
    x->total += n;
}

static void lookup(xctx *x, const char *name, size_t len, buf_t *out, const where_t *w)
{
    if (x->refs) {
        buf_append(x->refs, name, len);
        buf_putc(x->refs, '\n');
        return;
    }
    int slot = slot_of(x, name, len);
    if (slot < 0) {
        char *nm = xstrndup(name, len);
        cf_warn(x->warn, w->file, w->line, "%s: $%s is not defined (it expands to nothing)", w->pname, nm);
        free(nm);
        return;
    }
    const char *v = value_of(x, slot);
    put(x, out, v, strlen(v), w);
}

/* Index of the brace that closes the one at s[open], or n. */
static size_t match_brace(const char *s, size_t n, size_t open)
{
    int d = 0;
    for (size_t i = open; i < n; i++) {
        if (s[i] == '{')
            d++;
        else if (s[i] == '}' && --d == 0)
            return i;
    }
    return n;
}

static void bad_expr(xctx *x, const where_t *w, const char *what, const char *s, size_t n)
{
    char *t = xstrndup(s, n);
    xerr(x, w, "%s: %s in \"${%s}\"", w->pname, what, cf_quote(&x->q, t));
    free(t);
}

/* The inside of ${...} or $(...): name, name?text, name:text,
 * name?{text}:{text}. */
static void expand_braced(xctx *x, const char *in, size_t n, buf_t *out, const where_t *w)
{
    if (n && in[0] == '{') {
        bad_expr(x, w, "relational expressions are not supported", in, n);
        return;
    }
    size_t j = 0;
    while (j < n && cf_namechar((unsigned char)in[j]))
        j++;
    if (j == 0) {
        bad_expr(x, w, "missing parameter name", in, n);
        return;
    }
    if (j == n) {
        lookup(x, in, j, out, w);
        return;
    }
    char op = in[j];
    if (op != '?' && op != ':') {
        bad_expr(x, w, "unexpected character after the parameter name", in, n);
        return;
    }
    const char *t = in + j + 1;
    size_t tn = n - j - 1, k = 0;
    const char *t1 = t, *t2 = NULL;
    size_t n1 = tn, n2 = 0;
    while (k < tn && CF_WS(t[k]))
        k++;
    if (k < tn && t[k] == '{') {
        size_t e = match_brace(t, tn, k);
        if (e == tn) {
            bad_expr(x, w, "missing '}'", in, n);
            return;
        }
        t1 = t + k + 1;
        n1 = e - k - 1;
        for (k = e + 1; k < tn && CF_WS(t[k]); k++)
            ;
        if (op == '?' && k < tn && t[k] == ':') {
            for (k++; k < tn && CF_WS(t[k]); k++)
                ;
            e = k < tn && t[k] == '{' ? match_brace(t, tn, k) : tn;
            if (e == tn) {
                bad_expr(x, w, "expected {text} after ':'", in, n);
                return;
            }
            t2 = t + k + 1;
            n2 = e - k - 1;
            for (k = e + 1; k < tn && CF_WS(t[k]); k++)
                ;
        }
        if (k != tn) {
            bad_expr(x, w, "unexpected text after '}'", in, n);
            return;
        }
    }
    if (x->refs) {
        lookup(x, in, j, NULL, w);
        expand_span(x, t1, n1, NULL, w);
        if (t2)
            expand_span(x, t2, n2, NULL, w);
        return;
    }
    int slot = slot_of(x, in, j);
    bool nonempty = false;
    if (slot >= 0)
        nonempty = *value_of(x, slot) != 0;
    /* An undefined name in a condition is simply empty: that is what the
     * conditional forms are for, so no warning. */
    if (op == '?' && nonempty)
        expand_span(x, t1, n1, out, w);
    else if (op == '?' && t2)
        expand_span(x, t2, n2, out, w);
    else if (op == ':' && !nonempty)
        expand_span(x, t1, n1, out, w);
}

static void expand_span(xctx *x, const char *s, size_t n, buf_t *out, const where_t *w)
{
    if (++x->nest > MAX_NEST) {
        xerr(x, w, "%s: expressions nested too deeply", w->pname);
        x->nest--;
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t lit = i;
        while (i < n && s[i] != '$')
            i++;
        put(x, out, s + lit, i - lit, w);
        if (i >= n)
            break;
        if (i + 1 < n && s[i + 1] == '$') {
            put(x, out, "$", 1, w);
            i += 2;
            continue;
        }
        i++;
        if (i < n && (s[i] == '{' || s[i] == '(')) {
            char open = s[i], close = open == '{' ? '}' : ')';
            int level = 1;
            size_t j = i + 1;
            for (; j < n && level > 0; j++) {
                if (s[j] == open)
                    level++;
                else if (s[j] == close)
                    level--;
            }
            if (level > 0) {
                char *t = xstrndup(s + i - 1, n - i + 1);
                xerr(x, w, "%s: missing '%c' in \"%s\"", w->pname, close, cf_quote(&x->q, t));
                free(t);
                break;
            }
            expand_braced(x, s + i + 1, j - i - 2, out, w);
            i = j;
        } else {
            size_t j = i;
            while (j < n && cf_namechar((unsigned char)s[j]))
                j++;
            if (j == i) {
                xerr(x, w, "%s: '$' must be followed by a parameter name (write $$ for a literal $)", w->pname);
                break;
            }
            lookup(x, s + i, j - i, out, w);
            i = j;
        }
    }
    x->nest--;
}

void cf_scan_refs(const char *text, buf_t *refs)
{
    xctx x = {0};
    where_t w = {"", "", 0};
    x.refs = refs;
    expand_span(&x, text, strlen(text), NULL, &w);
    buf_free(&x.q);
}

bool cf_is_referenced(const buf_t *refs, const char *name)
{
    size_t len = strlen(name);
    const char *d = buf_cstr(refs);
    for (const char *p = d; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l == len && memcmp(p, name, len) == 0)
            return true;
        p += l + (nl ? 1 : 0);
    }
    return false;
}

/* --- typing and checks --- */

static bool same_value(int id, const char *a, const char *b)
{
    long long x, y;
    switch (cf_reg[id].type) {
    case PT_INT:
        return cf_parse_int(a, &x) && cf_parse_int(b, &y) && x == y;
    case PT_BOOL:
        return cf_parse_bool(a, &x) && cf_parse_bool(b, &y) && x == y;
    case PT_TIME: {
        char u = cf_time_unit(cf_reg[id].def);
        return cf_parse_time(a, u, &x) && cf_parse_time(b, u, &y) && x == y;
    }
    case PT_LIST: {
        size_t na, nb;
        bool ua, ub, same;
        const char **ia = cf_split(a, &na, &ua), **ib = cf_split(b, &nb, &ub);
        same = na == nb;
        for (size_t i = 0; same && i < na; i++)
            same = strcmp(ia[i], ib[i]) == 0;
        free((void *)ia);
        free((void *)ib);
        return same;
    }
    case PT_STR:
        break;
    }
    return strcmp(a, b) == 0;
}

static bool check_bounds(xctx *x, int id, long long v, const where_t *w)
{
    const pdef_t *r = &cf_reg[id];
    if (v < r->min) {
        xerr(x, w, "%s: %lld is below the minimum %lld", w->pname, v, r->min);
        return false;
    }
    if (r->max && v > r->max) {
        xerr(x, w, "%s: %lld is above the maximum %lld", w->pname, v, r->max);
        return false;
    }
    return true;
}

static bool in_set(const char *v, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(v, *set) == 0)
            return true;
    return false;
}

/* Type and per-parameter checks; false when the value is unusable. */
static bool check_param(xctx *x, int id)
{
    params_t *p = x->p;
    const pdef_t *r = &cf_reg[id];
    const char *v = p->val[id];
    where_t w;
    bool unbalanced, ok = true;
    long long num = 0;
    where_of(x, id, &w);

    p->items[id] = cf_split(v, &p->nitems[id], &unbalanced);
    switch (r->type) {
    case PT_INT:
        if (!cf_parse_int(v, &num)) {
            xerr(x, &w, "bad integer value for %s: \"%s\"", w.pname, cf_quote(&x->q, v));
            ok = false;
        } else {
            ok = check_bounds(x, id, num, &w);
        }
        break;
    case PT_BOOL:
        if (!cf_parse_bool(v, &num)) {
            xerr(x, &w, "bad boolean value for %s: \"%s\" (use yes or no)", w.pname, cf_quote(&x->q, v));
            ok = false;
        }
        break;
    case PT_TIME:
        if (!cf_parse_time(v, cf_time_unit(r->def), &num)) {
            xerr(x, &w, "bad time value for %s: \"%s\" (a number and an optional unit: s, m, h, d or w)", w.pname,
                 cf_quote(&x->q, v));
            ok = false;
        } else {
            ok = check_bounds(x, id, num, &w);
        }
        break;
    case PT_LIST:
        if (unbalanced) {
            xerr(x, &w, "%s: unbalanced '{' or '}' in \"%s\"", w.pname, cf_quote(&x->q, v));
            ok = false;
        }
        break;
    case PT_STR:
        break;
    }
    p->num[id] = num;
    if (!ok)
        return false;

    switch (id) {
    case PARAM_mail_spool_directory:
        if (!*v || v[strlen(v) - 1] != '/') {
            xerr(x, &w, "%s: moat delivers to Maildir only; end the path with /", w.pname);
            ok = false;
        }
        break;
    case PARAM_queue_directory:
    case PARAM_data_directory:
        if (!*v) {
            xerr(x, &w, "%s: must not be empty", w.pname);
            ok = false;
        }
        break;
    case PARAM_smtpd_forbid_bare_newline: {
        /* Stored canonical so the session compares one spelling. */
        static const char *const canon[] = {"normalize", "reject", "no"};
        const char *c = str_ieq(v, "yes") ? "normalize" : NULL;
        for (size_t i = 0; !c && i < ARRAY_LEN(canon); i++)
            if (str_ieq(v, canon[i]))
                c = canon[i];
        if (!c) {
            xerr(x, &w, "%s: bad value \"%s\" (use normalize, reject or no)", w.pname, cf_quote(&x->q, v));
            ok = false;
        } else if (strcmp(c, v) != 0) {
            free(p->val[id]);
            p->val[id] = xstrdup(c);
        }
        break;
    }
    case PARAM_smtpd_upstream_proxy_protocol:
        if (*v && !str_ieq(v, "haproxy")) {
            xerr(x, &w, "%s: bad value \"%s\" (use haproxy, or leave it empty)", w.pname, cf_quote(&x->q, v));
            ok = false;
        } else if (*v && strcmp(v, "haproxy") != 0) {
            free(p->val[id]);
            p->val[id] = xstrdup("haproxy");
        }
        break;
    case PARAM_inet_protocols: {
        static const char *const fams[] = {"all", "ipv4", "ipv6", NULL};
        if (p->nitems[id] == 0) {
            xerr(x, &w, "%s: no address family given (use all, ipv4 or ipv6)", w.pname);
            ok = false;
        }
        for (size_t i = 0; ok && i < p->nitems[id]; i++) {
            if (!in_set(p->items[id][i], fams)) {
                xerr(x, &w, "%s: unknown address family \"%s\" (use all, ipv4 or ipv6)", w.pname,
                     cf_quote(&x->q, p->items[id][i]));
                ok = false;
            }
        }
        break;
    }
    default:
        break;
    }
    return ok;
}

/* A PF_PENDING parameter may be set, but only to what the default would be
 * here: anything else asks for filtering moat cannot do yet. */
static void check_pending(xctx *x, int id)
{
    const setting_t *d = x->p->def[id];
    if (!d || !(cf_reg[id].flags & PF_PENDING))
        return;
    where_t w;
    where_of(x, id, &w);
    buf_t def = BUF_INIT;
    if (cf_reg[id].flags & PF_RAW)
        buf_puts(&def, cf_reg[id].def);
    else
        expand_span(x, cf_reg[id].def, strlen(cf_reg[id].def), &def, &w);
    if (!same_value(id, x->p->val[id], buf_cstr(&def)))
        xerr(x, &w, "%s: not supported by this version of moat", w.pname);
    buf_free(&def);
}

typedef struct slotkey {
    int rank, line, slot;
} slotkey_t;

static int cmp_slotkey(const void *a, const void *b)
{
    const slotkey_t *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank - y->rank;
    if (x->line != y->line)
        return x->line - y->line;
    return x->slot - y->slot;
}

params_t *cf_params_build(const config_t *cfg, const setting_t *ov, size_t nov, bool with_main, buf_t *err,
                          buf_t *warn)
{
    params_t *p = xcalloc(1, sizeof *p);
    xctx x = {.cfg = cfg, .ov = ov, .nov = nov, .with_main = with_main, .p = p, .err = err, .warn = warn};

    for (int id = 0; id < PARAM__COUNT; id++)
        p->def[id] = find_def(cfg, ov, nov, with_main, cf_reg[id].name);

    /* User-defined names visible here: main.cf's, then the overrides'. */
    size_t cap = (with_main ? cfg->nset : 0) + nov;
    p->user = xcalloc(cap ? cap : 1, sizeof *p->user);
    for (size_t pass = 0; pass < 2; pass++) {
        const setting_t *s = pass ? ov : cfg->set;
        size_t n = pass ? nov : (with_main ? cfg->nset : 0);
        for (size_t i = 0; i < n; i++) {
            if (s[i].id >= 0 || slot_of(&x, s[i].name, strlen(s[i].name)) >= 0)
                continue;
            p->user[p->nuser++].def = find_def(cfg, ov, nov, with_main, s[i].name);
        }
    }

    /* Work in file order (main.cf lines, then master.cf, then defaults) so
     * messages come out in the order a reader fixes them. */
    size_t nslots = PARAM__COUNT + p->nuser;
    slotkey_t *order = xcalloc(nslots, sizeof *order);
    for (size_t s = 0; s < nslots; s++) {
        const setting_t *d = s < PARAM__COUNT ? p->def[s] : p->user[s - PARAM__COUNT].def;
        order[s].rank = !d ? 2 : d->file == cfg->main_file ? 0 : 1;
        order[s].line = d ? d->line : 0;
        order[s].slot = (int)s;
    }
    qsort(order, nslots, sizeof *order, cmp_slotkey);
    x.state = xcalloc(nslots, 1);
    x.bad = xcalloc(nslots, 1);
    for (size_t s = 0; s < nslots; s++)
        value_of(&x, order[s].slot);
    for (size_t s = 0; s < nslots; s++) {
        int id = order[s].slot;
        if (id >= PARAM__COUNT)
            continue;
        /* A default can only go wrong through a bad setting it refers to
         * ($mynetworks in another list): once a setting failed, checking
         * defaults would repeat its message without a line number. */
        if (x.bad[id] || (order[s].rank == 2 && x.nbad)) {
            /* Keep the accessors safe even on a set that will be freed. */
            p->items[id] = cf_split("", &p->nitems[id], &(bool){false});
            continue;
        }
        if (check_param(&x, id))
            check_pending(&x, id);
    }
    free(order);
    free(x.state);
    free(x.bad);
    buf_free(&x.q);
    if (x.nbad)
        cf_params_free(&p);
    return p;
}

void cf_params_free(params_t **pp)
{
    params_t *p = *pp;
    if (!p)
        return;
    for (int id = 0; id < PARAM__COUNT; id++) {
        free(p->val[id]);
        free((void *)p->items[id]);
    }
    for (size_t i = 0; i < p->nuser; i++)
        free(p->user[i].val);
    free(p->user);
    xfree(pp);
}

/* --- the hot-path accessors: array indexing only --- */

const char *param_name(param_id id)
{
    return cf_reg[id].name;
}

const char *param_str(const params_t *p, param_id id)
{
    return p->val[id];
}

long long param_int(const params_t *p, param_id id)
{
    return p->num[id];
}

bool param_bool(const params_t *p, param_id id)
{
    return p->num[id] != 0;
}

size_t param_list(const params_t *p, param_id id, const char *const **items)
{
    *items = p->items[id];
    return p->nitems[id];
}

bool param_is_set(const params_t *p, param_id id)
{
    return p->def[id] != NULL;
}

bool param_origin(const params_t *p, param_id id, const char **file, int *line)
{
    const setting_t *d = p->def[id];
    *file = d ? d->file : NULL;
    *line = d ? d->line : 0;
    return d != NULL;
}

void param_where(const params_t *p, param_id id, buf_t *err)
{
    const char *file;
    int line;
    if (param_origin(p, id, &file, &line))
        buf_printf(err, "%s:%d: ", file, line);
}

void param_where_lines(const params_t *p, param_id id, const char *msgs, buf_t *err)
{
    while (*msgs) {
        const char *nl = strchr(msgs, '\n');
        size_t n = nl ? (size_t)(nl - msgs) : strlen(msgs);
        param_where(p, id, err);
        buf_append(err, msgs, n);
        buf_putc(err, '\n');
        msgs += n + (nl ? 1 : 0);
    }
}

const char *param_user(const params_t *p, const char *name, const char **file, int *line)
{
    for (size_t i = 0; i < p->nuser; i++) {
        const setting_t *d = p->user[i].def;
        if (d && strcmp(d->name, name) == 0) {
            if (file)
                *file = d->file;
            if (line)
                *line = d->line;
            return p->user[i].val ? p->user[i].val : "";
        }
    }
    if (file)
        *file = NULL;
    if (line)
        *line = 0;
    return NULL;
}
