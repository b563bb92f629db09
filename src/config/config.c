/*
 * config: loads main.cf and master.cf (from a directory, from text, or the
 * embedded default), applies the rules for names moat does not implement,
 * and builds the resolved parameter set of main.cf, of each smtpd (or
 * policy) service and of each delivery transport (master.cf "unix" services that
 * run smtp, lmtp, local, discard, error or retry, and the built-ins that
 * Postfix's stock master.cf declares).
 *
 * The config_t owns every string, setting and parameter set it hands out;
 * it is immutable after config_load returns.  Loading must never half
 * succeed: any error frees everything and returns NULL, so an unknown or
 * unsupported filtering setting can never run as a silent permit.
 */
#include "config/config-private.h"
#include "core/util.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* `make run` in a checkout: unprivileged port, state under ./var, log to
 * the terminal. */
const char cf_embedded_main[] =
    "# moat's embedded default: runs unprivileged in a source checkout\n"
    "# $myhostname too, so <postmaster> (completed with $myorigin) is local\n"
    "mydestination = $myhostname, localhost, example.test\n"
    "queue_directory = var/queue\n"
    "data_directory = var/data\n"
    "mail_spool_directory = var/mail/\n"
    "maillog_file = /dev/stderr\n";
const char cf_embedded_master[] = "127.0.0.1:2525 inet n - n - - smtpd\n";
/* What Postfix would run without a master.cf entry of ours. */
static const char default_master[] = "smtp inet n - n - - smtpd\n";

enum { MAX_FILE = 16 * 1024 * 1024 };

/* --- main.cf --- */

static void setting_clear(setting_t *s)
{
    xfree(&s->name);
    xfree(&s->raw);
}

/* Add or replace (the last one wins, as in Postfix). */
static void add_setting(setting_t **v, size_t *n, const char *name, size_t nlen, const char *raw,
                        const char *file, int line, buf_t *warn)
{
    for (size_t i = 0; i < *n; i++) {
        setting_t *s = &(*v)[i];
        if (strncmp(s->name, name, nlen) == 0 && s->name[nlen] == 0) {
            cf_warn(warn, file, line, "%s: overrides the setting at line %d", s->name, s->line);
            free(s->raw);
            s->raw = xstrdup(raw);
            s->line = line;
            return;
        }
    }
    *v = xrealloc(*v, (*n + 1) * sizeof **v);
    setting_t *s = &(*v)[(*n)++];
    s->name = xstrndup(name, nlen);
    s->raw = xstrdup(raw);
    s->file = file;
    s->line = line;
    s->id = cf_reg_find(name, nlen);
}

static bool valid_name(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!cf_namechar((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* "name = value" with optional white space around '='; value may be empty. */
static void parse_main(config_t *cfg, const char *text, buf_t *err, buf_t *warn)
{
    cf_line_t *l;
    size_t n = cf_logical_lines(text, cfg->main_file, &l, err);
    buf_t q = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        const char *s = l[i].text, *e = s;
        while (*e && *e != '=' && !CF_WS(*e))
            e++;
        const char *eq = e;
        while (CF_WS(*eq))
            eq++;
        if (e == s) {
            cf_msg(err, cfg->main_file, l[i].line, "missing parameter name before '='");
            continue;
        }
        if (*eq != '=') {
            cf_msg(err, cfg->main_file, l[i].line, "missing '=' after parameter name");
            continue;
        }
        if (!valid_name(s, (size_t)(e - s))) {
            char *nm = xstrndup(s, (size_t)(e - s));
            cf_msg(err, cfg->main_file, l[i].line, "bad parameter name \"%s\" (use letters, digits and _)",
                   cf_quote(&q, nm));
            free(nm);
            continue;
        }
        const char *v = eq + 1;
        while (CF_WS(*v))
            v++;
        add_setting(&cfg->set, &cfg->nset, s, (size_t)(e - s), v, cfg->main_file, l[i].line, warn);
    }
    buf_free(&q);
    cf_lines_free(&l, n);
}

/* --- master.cf --- */

static bool is_one_of(const char *s, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

/* Port as decimal text: a number, a services(5) name, or one of the
 * submission names some systems lack in /etc/services. */
static char *resolve_port(const char *p)
{
    static const struct {
        const char *name;
        int port;
    } fallback[] = {{"smtp", 25}, {"submission", 587}, {"smtps", 465}, {"submissions", 465}};
    char num[16];
    if (str_all_digits(p)) {
        long v = strlen(p) <= 5 ? strtol(p, NULL, 10) : 0;
        if (v < 1 || v > 65535)
            return NULL;
        snprintf(num, sizeof num, "%ld", v);
        return xstrdup(num);
    }
    struct servent *se = getservbyname(p, "tcp");
    if (se) {
        snprintf(num, sizeof num, "%d", ntohs((unsigned short)se->s_port));
        return xstrdup(num);
    }
    for (size_t i = 0; i < ARRAY_LEN(fallback); i++) {
        if (strcmp(p, fallback[i].name) == 0) {
            snprintf(num, sizeof num, "%d", fallback[i].port);
            return xstrdup(num);
        }
    }
    return NULL;
}

/* Service name forms: port, host:port, [ipv6]:port.  Returns NULL, or a
 * static reason. */
static const char *parse_listen(const char *name, char **host, char **port)
{
    const char *ps = name;
    *host = *port = NULL;
    if (name[0] == '[') {
        const char *close = strchr(name, ']');
        if (!close)
            return "missing ']'";
        if (close[1] != ':')
            return "missing ':port' after ']'";
        *host = xstrndup(name + 1, (size_t)(close - name - 1));
        ps = close + 2;
    } else {
        const char *colon = strrchr(name, ':');
        if (colon) {
            *host = xstrndup(name, (size_t)(colon - name));
            if (strchr(*host, ':'))
                return "write an IPv6 address in brackets: [address]:port";
            ps = colon + 1;
        }
    }
    if (*host && !**host)
        return "empty host before ':'";
    if (!*ps)
        return "missing port";
    *port = resolve_port(ps);
    if (!*port)
        return str_all_digits(ps) ? "port out of range" : "unknown service port";
    return NULL;
}

/* One -o argument: "name=value", or a "{ name = value }" group whose
 * value may hold spaces. */
static void parse_override(config_t *cfg, setting_t **ov, size_t *nov, const char *arg, int line, buf_t *err,
                           buf_t *warn)
{
    buf_t q = BUF_INIT;
    const char *s = arg, *end = arg + strlen(arg);
    if (*s == '{') {
        if (end[-1] != '}' || end - s < 2) {
            cf_msg(err, cfg->master_file, line, "-o %s: missing '}'", cf_quote(&q, arg));
            goto out;
        }
        s++;
        end--;
    }
    while (s < end && CF_WS(*s))
        s++;
    while (end > s && CF_WS(end[-1]))
        end--;
    const char *eq = memchr(s, '=', (size_t)(end - s));
    if (!eq) {
        cf_msg(err, cfg->master_file, line, "-o %s: missing '='", cf_quote(&q, arg));
        goto out;
    }
    const char *ne = eq, *v = eq + 1;
    while (ne > s && CF_WS(ne[-1]))
        ne--;
    while (v < end && CF_WS(*v))
        v++;
    if (!valid_name(s, (size_t)(ne - s))) {
        cf_msg(err, cfg->master_file, line, "-o %s: bad parameter name", cf_quote(&q, arg));
        goto out;
    }
    char *val = xstrndup(v, (size_t)(end - v));
    add_setting(ov, nov, s, (size_t)(ne - s), val, cfg->master_file, line, warn);
    free(val);
out:
    buf_free(&q);
}

/* Arguments after the command: -o overrides; other daemon flags are
 * accepted and ignored; anything else is a mistake worth an error (a value
 * with spaces not in { }). */
static void parse_args(config_t *cfg, setting_t **ov, size_t *nov, char **f, size_t nf, int line, buf_t *err,
                       buf_t *warn)
{
    static const char *const with_value[] = {"-n", "-s", "-t", NULL};
    buf_t q = BUF_INIT;
    for (size_t i = 8; i < nf; i++) {
        const char *a = f[i];
        if (strcmp(a, "-o") == 0) {
            if (i + 1 >= nf)
                cf_msg(err, cfg->master_file, line, "-o without name=value");
            else
                parse_override(cfg, ov, nov, f[++i], line, err, warn);
        } else if (strncmp(a, "-o", 2) == 0) {
            parse_override(cfg, ov, nov, a + 2, line, err, warn);
        } else if (a[0] == '-') {
            if (is_one_of(a, with_value))
                i++;
        } else {
            cf_msg(err, cfg->master_file, line,
                   "unexpected argument \"%s\" (a value with spaces goes in -o { name = value })", cf_quote(&q, a));
        }
    }
    buf_free(&q);
}

static char *master_line(char **f, size_t nf)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "%-10s %-5s %-7s %-7s %-7s %-7s %-7s %s", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
    for (size_t i = 8; i < nf; i++)
        buf_printf(&b, " %s", f[i]);
    return buf_steal(&b);
}

static bool check_fields(config_t *cfg, char **f, int line, buf_t *err)
{
    static const char *const types[] = {"inet", "unix", "unix-dgram", "fifo", "pass", NULL};
    static const char *const flag_names[] = {"private", "unpriv", "chroot"};
    buf_t q = BUF_INIT;
    bool ok = true;
    if (!is_one_of(f[1], types)) {
        cf_msg(err, cfg->master_file, line, "unknown service type \"%s\"", cf_quote(&q, f[1]));
        ok = false;
    }
    for (int i = 0; i < 3; i++) {
        if (strcmp(f[2 + i], "y") && strcmp(f[2 + i], "n") && strcmp(f[2 + i], "-")) {
            cf_msg(err, cfg->master_file, line, "bad %s field \"%s\" (use y, n or -)", flag_names[i],
                   cf_quote(&q, f[2 + i]));
            ok = false;
        }
    }
    size_t wl = strlen(f[5]);
    char *wake = xstrndup(f[5], wl && f[5][wl - 1] == '?' ? wl - 1 : wl);
    if (strcmp(f[5], "-") && !str_all_digits(wake)) {
        cf_msg(err, cfg->master_file, line, "bad wakeup field \"%s\" (use -, or seconds)", cf_quote(&q, f[5]));
        ok = false;
    }
    free(wake);
    if (strcmp(f[6], "-") && !(str_all_digits(f[6]) && strlen(f[6]) <= 7)) {
        cf_msg(err, cfg->master_file, line, "bad maxproc field \"%s\" (use -, or a number)", cf_quote(&q, f[6]));
        ok = false;
    }
    buf_free(&q);
    return ok;
}

/* --- delivery transports --- */

/* The delivery agents moat has, by master.cf command.  Postfix runs its
 * retry service as "error" (error(8) defers when its service name is
 * retry); "retry" as a command is moat's own spelling of the same. */
static bool agent_kind(const char *service, const char *command, transport_kind *kind)
{
    static const struct {
        const char *command;
        transport_kind kind;
    } agents[] = {{"smtp", TK_SMTP}, {"lmtp", TK_LMTP}, {"local", TK_LOCAL},
                  {"discard", TK_DISCARD}, {"error", TK_ERROR}, {"retry", TK_RETRY}};
    for (size_t i = 0; i < ARRAY_LEN(agents); i++) {
        if (strcmp(command, agents[i].command) == 0) {
            if (kind)
                *kind = agents[i].kind == TK_ERROR && strcmp(service, "retry") == 0 ? TK_RETRY : agents[i].kind;
            return true;
        }
    }
    return false;
}

static xport_t *new_transport(config_t *cfg, const char *name)
{
    cfg->xp = xrealloc(cfg->xp, (cfg->nxp + 1) * sizeof *cfg->xp);
    xport_t *xp = &cfg->xp[cfg->nxp++];
    memset(xp, 0, sizeof *xp);
    xp->name = xstrdup(name);
    xp->pub.name = xp->name;
    return xp;
}

static void add_transport(config_t *cfg, char **f, size_t nf, int line, buf_t *err, buf_t *warn)
{
    xport_t *xp = new_transport(cfg, f[0]);
    agent_kind(f[0], f[7], &xp->pub.kind);
    xp->pub.file = cfg->master_file;
    xp->pub.line = line;
    xp->mline = master_line(f, nf);
    if (strcmp(f[6], "-") == 0)
        xp->maxproc_default = true;
    else
        xp->pub.maxproc = atoi(f[6]) > 0 ? atoi(f[6]) : INT_MAX;   /* master.cf 0: no limit */
    parse_args(cfg, &xp->ov, &xp->nov, f, nf, line, err, warn);
}

/* The transports Postfix's stock master.cf declares, for a master.cf that
 * does not (moat's embedded default declares none). */
static void add_builtin_transports(config_t *cfg)
{
    static const struct {
        const char *name, *command;
    } builtin[] = {{"smtp", "smtp"}, {"relay", "smtp"}, {"lmtp", "lmtp"}, {"local", "local"},
                   {"discard", "discard"}, {"error", "error"}, {"retry", "error"}};
    for (size_t i = 0; i < ARRAY_LEN(builtin); i++) {
        if (config_transport(cfg, builtin[i].name))
            continue;
        xport_t *xp = new_transport(cfg, builtin[i].name);
        agent_kind(builtin[i].name, builtin[i].command, &xp->pub.kind);
        xp->maxproc_default = true;
        /* as upstream Postfix's master.cf writes them (local runs privileged there) */
        char *unpriv = strcmp(builtin[i].name, "local") == 0 ? "n" : "-";
        char *fields[] = {(char *)builtin[i].name, "unix", "-", unpriv, "n", "-", "-", (char *)builtin[i].command};
        xp->builtin_line = master_line(fields, ARRAY_LEN(fields));
    }
}

static void parse_master(config_t *cfg, const char *text, buf_t *err, buf_t *warn)
{
    cf_line_t *l;
    size_t n = cf_logical_lines(text, cfg->master_file, &l, err);
    buf_t ign = BUF_INIT, seen = BUF_INIT, q = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        int line = l[i].line;
        size_t nf;
        bool unbalanced;
        char **f = cf_fields(l[i].text, &nf, &unbalanced);
        if (unbalanced) {
            cf_msg(err, cfg->master_file, line, "unbalanced '{' or '}'");
        } else if (nf < 8) {
            cf_msg(err, cfg->master_file, line,
                   "missing fields (want: service type private unpriv chroot wakeup maxproc command)");
        } else if (check_fields(cfg, f, line, err)) {
            /* Postfix's key: the same name twice with one type is a mistake. */
            buf_t key = BUF_INIT;
            buf_printf(&key, "%s/%s", f[0], f[1]);
            if (cf_is_referenced(&seen, key.data)) {
                cf_msg(err, cfg->master_file, line, "duplicate service %s", cf_quote(&q, key.data));
            } else {
                buf_printf(&seen, "%s\n", key.data);
                bool policy = strcmp(f[7], "policy") == 0;
                if (policy && strcmp(f[1], "inet") != 0) {
                    /* Never a silent skip: Postfix would find no policy server there. */
                    cf_msg(err, cfg->master_file, line, "%s: a policy service must be of type inet "
                           "(host:port), not %s", cf_quote(&q, f[0]), f[1]);
                } else if (strcmp(f[1], "inet") == 0 && (policy || strcmp(f[7], "smtpd") == 0)) {
                    cfg->svc = xrealloc(cfg->svc, (cfg->nsvc + 1) * sizeof *cfg->svc);
                    svc_t *sv = &cfg->svc[cfg->nsvc++];
                    memset(sv, 0, sizeof *sv);
                    sv->pub.name = xstrdup(f[0]);
                    sv->pub.file = cfg->master_file;
                    sv->pub.line = line;
                    sv->pub.maxproc = strcmp(f[6], "-") ? atoi(f[6]) : 0;
                    sv->pub.kind = policy ? SK_POLICY : SK_SMTPD;
                    sv->mline = master_line(f, nf);
                    const char *why = parse_listen(f[0], &sv->pub.host, &sv->pub.port);
                    if (why)
                        cf_msg(err, cfg->master_file, line, "%s: %s", cf_quote(&q, f[0]), why);
                    for (size_t k = 0; !why && k + 1 < cfg->nsvc; k++) {
                        const service_t *o = &cfg->svc[k].pub;
                        bool same_host = (!o->host && !sv->pub.host) ||
                                         (o->host && sv->pub.host && strcmp(o->host, sv->pub.host) == 0);
                        if (same_host && o->port && strcmp(o->port, sv->pub.port) == 0)
                            cf_msg(err, cfg->master_file, line, "%s: same address and port as the service at line %d",
                                   cf_quote(&q, f[0]), o->line);
                    }
                    parse_args(cfg, &sv->ov, &sv->nov, f, nf, line, err, warn);
                } else if (strcmp(f[1], "unix") == 0 && agent_kind(f[0], f[7], NULL)) {
                    add_transport(cfg, f, nf, line, err, warn);
                } else {
                    buf_printf(&ign, "%s%s/%s (%s)", ign.len ? ", " : "", f[0], f[1], f[7]);
                }
            }
            buf_free(&key);
        }
        cf_fields_free(&f, nf);
    }
    if (ign.len)
        cf_warn(warn, cfg->master_file, 0, "services moat does not run (ignored): %s", ign.data);
    cfg->ignored_services = buf_steal(&ign);
    buf_free(&seen);
    buf_free(&q);
    cf_lines_free(&l, n);
}

/* --- per-transport parameters --- */

/* Postfix's per-transport parameter suffixes.  moat's scheduler reads the
 * two marked used (transport_limit); the others are accepted, checked
 * and listed among the ignored parameters. */
typedef enum { SV_INT, SV_TIME, SV_FEEDBACK } suffix_value;
static const struct {
    const char *suffix;
    suffix_value type;
    bool used;
} xport_suffix[] = {
    {"destination_concurrency_limit", SV_INT, true},
    {"destination_recipient_limit", SV_INT, true},
    {"delivery_slot_cost", SV_INT, false},
    {"delivery_slot_discount", SV_INT, false},
    {"delivery_slot_loan", SV_INT, false},
    {"destination_concurrency_failed_cohort_limit", SV_INT, false},
    {"destination_concurrency_negative_feedback", SV_FEEDBACK, false},
    {"destination_concurrency_positive_feedback", SV_FEEDBACK, false},
    {"destination_rate_delay", SV_TIME, false},
    {"extra_recipient_limit", SV_INT, false},
    {"initial_destination_concurrency", SV_INT, false},
    {"minimum_delivery_slots", SV_INT, false},
    {"recipient_limit", SV_INT, false},
    {"recipient_refill_delay", SV_TIME, false},
    {"recipient_refill_limit", SV_INT, false},
    {"time_limit", SV_TIME, false},
    {"transport_rate_delay", SV_TIME, false},
};

static int suffix_index(const config_t *cfg, const char *name)
{
    for (size_t k = 0; k < cfg->nxp; k++) {
        size_t tl = strlen(cfg->xp[k].name);
        if (strncmp(name, cfg->xp[k].name, tl) != 0 || name[tl] != '_')
            continue;
        for (size_t i = 0; i < ARRAY_LEN(xport_suffix); i++)
            if (strcmp(name + tl + 1, xport_suffix[i].suffix) == 0)
                return (int)i;
    }
    return -1;
}

const char *cf_transport_suffix(const config_t *cfg, const char *name, bool *is_time)
{
    int i = suffix_index(cfg, name);
    if (i < 0)
        return NULL;
    *is_time = xport_suffix[i].type == SV_TIME;
    return xport_suffix[i].suffix;
}

/* Postfix's feedback syntax: a number, "N/M", or "N/concurrency". */
static bool feedback_ok(const char *v)
{
    long long n;
    const char *slash = strchr(v, '/');
    if (!slash)
        return cf_parse_int(v, &n);
    char *num = xstrndup(v, (size_t)(slash - v));
    bool ok = cf_parse_int(num, &n) && (strcmp(slash + 1, "concurrency") == 0 || cf_parse_int(slash + 1, &n));
    free(num);
    return ok;
}

/* The values of user-defined per-transport names in settings s (seen
 * through p, so $name references are expanded): numbers or times. */
static void transport_limits(transport_t *t);
static void check_transport_values(const config_t *cfg, const setting_t *s, size_t n, const params_t *p, buf_t *err)
{
    buf_t q = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        int k;
        if (s[i].id >= 0 || (k = suffix_index(cfg, s[i].name)) < 0)
            continue;
        const char *v = param_user(p, s[i].name, NULL, NULL);
        long long num;
        if (!v)
            continue;
        switch (xport_suffix[k].type) {
        case SV_INT:
            if (!cf_parse_int(v, &num))
                cf_msg(err, s[i].file, s[i].line, "bad integer value for %s: \"%s\"", s[i].name, cf_quote(&q, v));
            else if (xport_suffix[k].used && num < 1)
                cf_msg(err, s[i].file, s[i].line, "%s: %lld is out of range (1 or more)", s[i].name, num);
            break;
        case SV_TIME:
            if (!cf_parse_time(v, 's', &num))
                cf_msg(err, s[i].file, s[i].line,
                       "bad time value for %s: \"%s\" (a number and an optional unit: s, m, h, d or w)", s[i].name,
                       cf_quote(&q, v));
            break;
        case SV_FEEDBACK:
            if (!feedback_ok(v))
                cf_msg(err, s[i].file, s[i].line,
                       "bad feedback value for %s: \"%s\" (a number, N/M or N/concurrency)", s[i].name,
                       cf_quote(&q, v));
            break;
        }
    }
    buf_free(&q);
}

/* --- the rules for names moat does not implement --- */

static void check_names(config_t *cfg, const setting_t *s, size_t n, const buf_t *refs, buf_t *err, buf_t *warn)
{
    buf_t q = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (s[i].id == PARAM_mail_version)
            cf_warn(warn, s[i].file, s[i].line, "mail_version is read-only; this setting is ignored");
        bool is_time;
        if (s[i].id >= 0 || cf_is_referenced(refs, s[i].name) || cf_transport_suffix(cfg, s[i].name, &is_time))
            continue;
        if (cf_looks_filtering(s[i].name))
            cf_msg(err, s[i].file, s[i].line,
                   "unknown parameter %s (it looks like it affects filtering; moat will not ignore it)", s[i].name);
        else
            cf_warn(warn, s[i].file, s[i].line, "unused parameter: %s=%s", s[i].name, cf_quote(&q, s[i].raw));
    }
    buf_free(&q);
}

/* smtpd_restriction_classes names parameters of its own ("foo" in
 * "smtpd_restriction_classes = foo" + "foo = check_sender_access ..."):
 * those names are known, like names referenced with $name. */
static void known_class_names(const config_t *cfg, buf_t *refs)
{
    for (size_t k = 0; k <= cfg->nsvc; k++) {
        const setting_t *s = k == 0 ? cfg->set : cfg->svc[k - 1].ov;
        size_t n = k == 0 ? cfg->nset : cfg->svc[k - 1].nov;
        for (size_t i = 0; i < n; i++) {
            if (s[i].id != PARAM_smtpd_restriction_classes)
                continue;
            size_t nitems;
            bool unbalanced = false;
            const char **items = cf_split(s[i].raw, &nitems, &unbalanced);
            for (size_t j = 0; j < nitems; j++)
                buf_printf(refs, "%s\n", items[j]);
            free((void *)items);
        }
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Add s[i].name to names when it is a per-transport name moat does not
 * use (and not there yet). */
static void unused_transport_names(const config_t *cfg, const setting_t *s, size_t n, const char ***names,
                                   size_t *count)
{
    for (size_t i = 0; i < n; i++) {
        int k;
        if (s[i].id >= 0 || (k = suffix_index(cfg, s[i].name)) < 0 || xport_suffix[k].used)
            continue;
        bool dup = false;
        for (size_t j = 0; !dup && j < *count; j++)
            dup = strcmp((*names)[j], s[i].name) == 0;
        if (!dup) {
            *names = xrealloc(*names, (*count + 1) * sizeof **names);
            (*names)[(*count)++] = s[i].name;
        }
    }
}

static char *ignored_list(const config_t *cfg)
{
    const char **names = xcalloc(PARAM__COUNT, sizeof *names);
    size_t n = 0;
    for (int id = 0; id < PARAM__COUNT; id++) {
        if (!(cf_reg[id].flags & PF_IGNORED))
            continue;
        bool set = cfg->main->def[id] != NULL;
        for (size_t k = 0; !set && k < cfg->nsvc; k++)
            set = cfg->svc[k].pub.params->def[id] != NULL;
        for (size_t k = 0; !set && k < cfg->nxp; k++)
            set = cfg->xp[k].pub.params->def[id] != NULL;
        if (set)
            names[n++] = cf_reg[id].name;
    }
    unused_transport_names(cfg, cfg->set, cfg->nset, &names, &n);
    for (size_t k = 0; k < cfg->nsvc; k++)
        unused_transport_names(cfg, cfg->svc[k].ov, cfg->svc[k].nov, &names, &n);
    for (size_t k = 0; k < cfg->nxp; k++)
        unused_transport_names(cfg, cfg->xp[k].ov, cfg->xp[k].nov, &names, &n);
    qsort(names, n, sizeof names[0], cmp_str);
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
    free(names);
    return buf_steal(&b);
}

static void system_hostname(config_t *cfg)
{
    char h[256] = "";
    if (gethostname(h, sizeof h - 1) != 0 || !h[0])
        str_copy(h, "localhost", sizeof h);
    h[sizeof h - 1] = 0;
    buf_t b = BUF_INIT;
    buf_puts(&b, h);
    /* Postfix's fallback for a host name that is not fully qualified. */
    if (!strchr(h, '.'))
        buf_puts(&b, ".localdomain");
    cfg->hostname = buf_steal(&b);
}

/* cfg arrives with dir, main_file and master_file set; takes it over. */
static config_t *load_common(config_t *cfg, const char *main_text, const char *master_text, buf_t *err_out,
                             buf_t *warn_out)
{
    /* Private buffers: failure is "any error in this load", and the dedup
     * in cf_msg must not see lines of an earlier load. */
    buf_t err = BUF_INIT, warn = BUF_INIT, refs = BUF_INIT;
    system_hostname(cfg);
    parse_main(cfg, main_text, &err, &warn);
    if (!master_text) {
        cf_warn(&warn, cfg->master_file, 0, "not found; using the default service \"smtp inet n - n - - smtpd\" (port 25)");
        master_text = default_master;
    }
    parse_master(cfg, master_text, &err, &warn);
    add_builtin_transports(cfg);

    for (size_t i = 0; i < cfg->nset; i++)
        cf_scan_refs(cfg->set[i].raw, &refs);
    for (size_t k = 0; k < cfg->nsvc; k++)
        for (size_t i = 0; i < cfg->svc[k].nov; i++)
            cf_scan_refs(cfg->svc[k].ov[i].raw, &refs);
    for (size_t k = 0; k < cfg->nxp; k++)
        for (size_t i = 0; i < cfg->xp[k].nov; i++)
            cf_scan_refs(cfg->xp[k].ov[i].raw, &refs);
    known_class_names(cfg, &refs);
    check_names(cfg, cfg->set, cfg->nset, &refs, &err, &warn);
    for (size_t k = 0; k < cfg->nsvc; k++)
        check_names(cfg, cfg->svc[k].ov, cfg->svc[k].nov, &refs, &err, &warn);
    for (size_t k = 0; k < cfg->nxp; k++)
        check_names(cfg, cfg->xp[k].ov, cfg->xp[k].nov, &refs, &err, &warn);

    cfg->main = cf_params_build(cfg, NULL, 0, true, &err, &warn);
    bool all = cfg->main != NULL;
    for (size_t k = 0; k < cfg->nsvc; k++) {
        svc_t *sv = &cfg->svc[k];
        sv->pub.params = sv->nov ? cf_params_build(cfg, sv->ov, sv->nov, true, &err, &warn) : cfg->main;
        all = all && sv->pub.params;
    }
    for (size_t k = 0; k < cfg->nxp; k++) {
        xport_t *xp = &cfg->xp[k];
        xp->pub.params = xp->nov ? cf_params_build(cfg, xp->ov, xp->nov, true, &err, &warn) : cfg->main;
        all = all && xp->pub.params;
        if (xp->pub.params && xp->maxproc_default)
            xp->pub.maxproc = (int)param_int(xp->pub.params, PARAM_default_process_limit);
    }
    if (all) {
        check_transport_values(cfg, cfg->set, cfg->nset, cfg->main, &err);
        for (size_t k = 0; k < cfg->nsvc; k++)
            check_transport_values(cfg, cfg->svc[k].ov, cfg->svc[k].nov, cfg->svc[k].pub.params, &err);
        for (size_t k = 0; k < cfg->nxp; k++)
            check_transport_values(cfg, cfg->xp[k].ov, cfg->xp[k].nov, cfg->xp[k].pub.params, &err);
        for (size_t k = 0; k < cfg->nxp; k++)
            transport_limits(&cfg->xp[k].pub);
    }
    if (cfg->nsvc == 0)
        cf_msg(&err, cfg->master_file, 0, "no smtpd inet service: moat would not listen anywhere");
    if (all)
        cfg->ignored = ignored_list(cfg);

    if (err_out)
        buf_append(err_out, err.data ? err.data : "", err.len);
    if (warn_out)
        buf_append(warn_out, warn.data ? warn.data : "", warn.len);
    bool failed = err.len > 0;
    buf_free(&err);
    buf_free(&warn);
    buf_free(&refs);
    if (failed)
        config_free(&cfg);
    return cfg;
}

static config_t *new_config(const char *dir, const char *label)
{
    config_t *cfg = xcalloc(1, sizeof *cfg);
    cfg->refs = 1;
    buf_t b = BUF_INIT;
    cfg->dir = xstrdup(dir);
    buf_printf(&b, "%s/main.cf", label);
    cfg->main_file = buf_steal(&b);
    buf_printf(&b, "%s/master.cf", label);
    cfg->master_file = buf_steal(&b);
    return cfg;
}

config_t *config_load_text(const char *main_cf, const char *master_cf, buf_t *err, buf_t *warn)
{
    char *cwd = getcwd(NULL, 0);
    if (!cwd) {
        if (err)
            buf_printf(err, "moat: cannot determine the current directory: %s\n", strerror(errno));
        return NULL;
    }
    config_t *cfg = new_config(cwd, "<text>");
    free(cwd);
    return load_common(cfg, main_cf ? main_cf : "", master_cf, err, warn);
}

/* Whole file as a string; NULL with errno set (EINVAL: NUL byte, EFBIG:
 * too large). */
static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return NULL;
    buf_t b = BUF_INIT;
    char chunk[8192];
    size_t n;
    int e = 0;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0) {
        if (memchr(chunk, 0, n))
            e = EINVAL;
        else if (b.len + n > MAX_FILE)
            e = EFBIG;
        if (e)
            break;
        buf_append(&b, chunk, n);
    }
    if (!e && ferror(fp))
        e = errno ? errno : EIO;
    fclose(fp);
    if (e) {
        buf_free(&b);
        errno = e;
        return NULL;
    }
    return buf_steal(&b);
}

static const char *read_error(int e)
{
    return e == EINVAL ? "contains a NUL byte" : e == EFBIG ? "file too large" : strerror(e);
}

config_t *config_load(const char *dir, buf_t *err, buf_t *warn)
{
    if (!dir) {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) {
            if (err)
                buf_printf(err, "moat: cannot determine the current directory: %s\n", strerror(errno));
            return NULL;
        }
        config_t *cfg = new_config(cwd, "<embedded>");
        free(cwd);
        return load_common(cfg, cf_embedded_main, cf_embedded_master, err, warn);
    }

    char *abs = realpath(dir, NULL);
    struct stat st;
    if (!abs || stat(abs, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (err)
            buf_printf(err, "%s: cannot use as configuration directory: %s\n", dir,
                       abs ? "not a directory" : strerror(errno));
        free(abs);
        return NULL;
    }
    /* Messages name the files the way the user named the directory. */
    char *label = xstrdup(dir);
    for (size_t l = strlen(label); l > 1 && label[l - 1] == '/'; l--)
        label[l - 1] = 0;
    config_t *cfg = new_config(abs, strcmp(label, "/") == 0 ? "" : label);
    free(label);
    free(abs);

    char *main_text = read_file(cfg->main_file);
    if (!main_text) {
        if (err)
            buf_printf(err, "%s: cannot read: %s\n", cfg->main_file, read_error(errno));
        config_free(&cfg);
        return NULL;
    }
    char *master_text = read_file(cfg->master_file);
    if (!master_text && errno != ENOENT) {
        if (err)
            buf_printf(err, "%s: cannot read: %s\n", cfg->master_file, read_error(errno));
        free(main_text);
        config_free(&cfg);
        return NULL;
    }
    cfg = load_common(cfg, main_text, master_text, err, warn);
    free(main_text);
    free(master_text);
    return cfg;
}

config_t *config_ref(config_t *cfg)
{
    cfg->refs++;
    return cfg;
}

void config_free(config_t **pcfg)
{
    config_t *cfg = *pcfg;
    if (!cfg)
        return;
    *pcfg = NULL;
    if (--cfg->refs > 0)
        return;
    for (size_t k = 0; k < cfg->nsvc; k++) {
        svc_t *sv = &cfg->svc[k];
        if (sv->pub.params != cfg->main)
            cf_params_free(&sv->pub.params);
        free(sv->pub.name);
        free(sv->pub.host);
        free(sv->pub.port);
        free(sv->mline);
        for (size_t i = 0; i < sv->nov; i++)
            setting_clear(&sv->ov[i]);
        free(sv->ov);
    }
    free(cfg->svc);
    for (size_t k = 0; k < cfg->nxp; k++) {
        xport_t *xp = &cfg->xp[k];
        if (xp->pub.params != cfg->main) {
            params_t *pp = (params_t *)xp->pub.params;
            cf_params_free(&pp);
        }
        free(xp->name);
        free(xp->mline);
        free(xp->builtin_line);
        for (size_t i = 0; i < xp->nov; i++)
            setting_clear(&xp->ov[i]);
        free(xp->ov);
    }
    free(cfg->xp);
    cf_params_free(&cfg->main);
    for (size_t i = 0; i < cfg->nset; i++)
        setting_clear(&cfg->set[i]);
    free(cfg->set);
    free(cfg->dir);
    free(cfg->main_file);
    free(cfg->master_file);
    free(cfg->hostname);
    free(cfg->ignored);
    free(cfg->ignored_services);
    free(cfg);
}

const params_t *config_main(const config_t *cfg)
{
    return cfg->main;
}

size_t config_nservices(const config_t *cfg)
{
    return cfg->nsvc;
}

const service_t *config_service(const config_t *cfg, size_t i)
{
    return i < cfg->nsvc ? &cfg->svc[i].pub : NULL;
}

char **config_listen_addrs(const config_t *cfg, size_t *n)
{
    size_t total = config_nservices(cfg);
    char **out = xcalloc(total ? total : 1, sizeof *out);
    *n = 0;
    for (size_t i = 0; i < total; i++) {
        const service_t *s = config_service(cfg, i);
        if (s->kind != SK_SMTPD)
            continue;
        buf_t b = BUF_INIT;
        const char *port = s->port ? s->port : "25";
        if (!s->host || !*s->host)
            buf_printf(&b, "*:%s", port);
        else if (strchr(s->host, ':'))
            buf_printf(&b, "[%s]:%s", s->host, port);
        else
            buf_printf(&b, "%s:%s", s->host, port);
        out[(*n)++] = buf_steal(&b);
    }
    return out;
}

void config_listen_free(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

const char *config_ignored(const config_t *cfg)
{
    return cfg->ignored ? cfg->ignored : "";
}

const char *config_ignored_services(const config_t *cfg)
{
    return cfg->ignored_services ? cfg->ignored_services : "";
}

const transport_t *config_transport(const config_t *cfg, const char *name)
{
    for (size_t k = 0; k < cfg->nxp; k++)
        if (strcmp(cfg->xp[k].name, name) == 0)
            return &cfg->xp[k].pub;
    return NULL;
}

static int clamp_limit(long long v)
{
    return v < 1 ? 1 : v > 100000 ? 100000 : (int)v;
}

/* The two limits the queue manager reads for every message, once. */
static void transport_limits(transport_t *t)
{
    t->concurrency_limit = clamp_limit(
        transport_limit(t, "destination_concurrency_limit", PARAM_default_destination_concurrency_limit));
    t->recipient_limit = clamp_limit(
        transport_limit(t, "destination_recipient_limit", PARAM_default_destination_recipient_limit));
}

long long transport_limit(const transport_t *t, const char *suffix, param_id fallback)
{
    char name[256];
    int n = snprintf(name, sizeof name, "%s_%s", t->name, suffix);
    if (n > 0 && (size_t)n < sizeof name) {
        /* A registry name keeps its own default (local_destination_concurrency_limit = 2). */
        int id = cf_reg_find(name, (size_t)n);
        if (id >= 0)
            return param_int(t->params, (param_id)id);
        const char *v = param_user(t->params, name, NULL, NULL);
        long long num;
        /* the load checked the value; time suffixes read as seconds */
        if (v && (cf_parse_int(v, &num) || cf_parse_time(v, 's', &num)))
            return num;
    }
    return param_int(t->params, fallback);
}
