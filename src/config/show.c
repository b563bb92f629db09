/*
 * show: `moat config show` (postconf's output forms) and `moat config doc`
 * (docs/configuration.md, generated from the registry so the reference
 * can never disagree with the code).
 *
 * Reads a loaded config_t; owns only its temporaries.  Must never print
 * anything that depends on the machine in config_doc: the committed file
 * is compared byte for byte with its output.
 */
#include "config/config-private.h"
#include "core/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct row {
    const char *name;
    int id;              /* registry index, or -1 */
    const setting_t *u;  /* the main.cf setting of a user-defined name */
} row_t;

static int cmp_row(const void *a, const void *b)
{
    return strcmp(((const row_t *)a)->name, ((const row_t *)b)->name);
}

static const char *user_val(const params_t *p, const setting_t *u)
{
    for (size_t i = 0; i < p->nuser; i++)
        if (strcmp(p->user[i].def->name, u->name) == 0)
            return p->user[i].val;
    return "";
}

/* The value one row shows.  Unexpanded values are as written, except
 * where the written form would mislead: config_directory is always the
 * directory in use, and computed defaults show what was computed. */
static const char *row_value(const config_t *cfg, const params_t *dp, const row_t *r, int flags)
{
    bool expand = flags & CONFIG_SHOW_EXPAND;
    if (flags & CONFIG_SHOW_DEFAULTS) {
        bool computed = r->id == PARAM_myhostname || r->id == PARAM_mydomain;
        return expand || computed ? dp->val[r->id] : cf_reg[r->id].def;
    }
    if (r->id < 0)
        return expand ? user_val(cfg->main, r->u) : r->u->raw;
    const setting_t *d = cfg->main->def[r->id];
    if (expand || r->id == PARAM_config_directory || r->id == PARAM_mail_version ||
        (!d && (r->id == PARAM_myhostname || r->id == PARAM_mydomain)))
        return cfg->main->val[r->id];
    return d ? d->raw : cf_reg[r->id].def;
}

static void put_row(buf_t *out, const char *name, const char *v)
{
    if (*v)
        buf_printf(out, "%s = %s\n", name, v);
    else
        buf_printf(out, "%s =\n", name);
}

static bool row_shown(const config_t *cfg, const row_t *r, int flags)
{
    if (flags & CONFIG_SHOW_DEFAULTS)
        return r->id >= 0;
    if (flags & CONFIG_SHOW_NONDEFAULT)
        return r->id < 0 || cfg->main->def[r->id] != NULL;
    return true;
}

static bool find_row(const config_t *cfg, const char *name, row_t *r)
{
    r->name = name;
    r->u = NULL;
    r->id = cf_reg_find(name, strlen(name));
    if (r->id >= 0)
        return true;
    for (size_t i = 0; i < cfg->nset; i++) {
        if (strcmp(cfg->set[i].name, name) == 0) {
            r->u = &cfg->set[i];
            return true;
        }
    }
    return false;
}

/* Does a -M argument ("smtp", "smtp/unix") name service n of type type? */
static bool names_service(const char *arg, const char *n, const char *type)
{
    size_t l = strlen(n);
    return strcmp(arg, n) == 0 || (strncmp(arg, n, l) == 0 && arg[l] == '/' && strcmp(arg + l + 1, type) == 0);
}

typedef struct mrow {
    const char *name, *type, *line_text;
    int line;       /* master.cf line; 0: a built-in transport */
} mrow_t;

static int cmp_mrow(const void *a, const void *b)
{
    const mrow_t *x = a, *y = b;
    if ((x->line == 0) != (y->line == 0))
        return x->line == 0 ? 1 : -1;
    return x->line - y->line;
}

/* The smtpd services and delivery transports moat runs, in master.cf
 * order, like postconf -M.  Built-in transports (not in master.cf) show
 * only when named. */
static int show_master(const config_t *cfg, char *const *names, int nnames, buf_t *out, buf_t *err)
{
    int unknown = 0;
    size_t n = 0;
    mrow_t *rows = xcalloc(cfg->nsvc + cfg->nxp + 1, sizeof *rows);
    for (size_t k = 0; k < cfg->nsvc; k++)
        rows[n++] = (mrow_t){cfg->svc[k].pub.name, "inet", cfg->svc[k].mline, cfg->svc[k].pub.line};
    for (size_t k = 0; k < cfg->nxp; k++) {
        const xport_t *xp = &cfg->xp[k];
        rows[n++] = (mrow_t){xp->name, "unix", xp->mline ? xp->mline : xp->builtin_line, xp->mline ? xp->pub.line : 0};
    }
    qsort(rows, n, sizeof *rows, cmp_mrow);
    for (int i = 0; i < nnames; i++) {
        bool found = false;
        for (size_t k = 0; k < n; k++)
            found = found || names_service(names[i], rows[k].name, rows[k].type);
        if (!found) {
            buf_printf(err, "moat: warning: %s: unknown service\n", names[i]);
            unknown++;
        }
    }
    for (size_t k = 0; k < n; k++) {
        bool want = nnames == 0 && rows[k].line > 0;
        for (int i = 0; !want && i < nnames; i++)
            want = names_service(names[i], rows[k].name, rows[k].type);
        if (want)
            buf_printf(out, "%s\n", rows[k].line_text);
    }
    free(rows);
    return unknown;
}

int config_show(const config_t *cfg, int flags, char *const *names, int nnames, buf_t *out, buf_t *err)
{
    buf_t scratch = BUF_INIT;
    if (!err)
        err = &scratch;
    if (flags & CONFIG_SHOW_MASTER) {
        int u = show_master(cfg, names, names ? nnames : 0, out, err);
        buf_free(&scratch);
        return u;
    }
    /* -d needs the defaults expanded in a world without main.cf. */
    params_t *dp = NULL;
    if (flags & CONFIG_SHOW_DEFAULTS) {
        buf_t e = BUF_INIT;
        dp = cf_params_build(cfg, NULL, 0, false, &e, NULL);
        buf_free(&e);
        if (!dp) {
            buf_puts(err, "moat: panic: the registry defaults do not load\n");
            buf_free(&scratch);
            return 0;
        }
    }
    int unknown = 0;
    if (names && nnames > 0) {
        for (int i = 0; i < nnames; i++) {
            row_t r;
            if (!find_row(cfg, names[i], &r) || ((flags & CONFIG_SHOW_DEFAULTS) && r.id < 0)) {
                buf_printf(err, "moat: warning: %s: unknown parameter\n", names[i]);
                unknown++;
            } else if (row_shown(cfg, &r, flags)) {
                put_row(out, r.name, row_value(cfg, dp, &r, flags));
            }
        }
    } else {
        row_t *rows = xcalloc(PARAM__COUNT + cfg->nset, sizeof *rows);
        size_t n = 0;
        for (int id = 0; id < PARAM__COUNT; id++)
            rows[n++] = (row_t){cf_reg[id].name, id, NULL};
        for (size_t i = 0; i < cfg->nset; i++)
            if (cfg->set[i].id < 0)
                rows[n++] = (row_t){cfg->set[i].name, -1, &cfg->set[i]};
        qsort(rows, n, sizeof *rows, cmp_row);
        for (size_t i = 0; i < n; i++)
            if (row_shown(cfg, &rows[i], flags))
                put_row(out, rows[i].name, row_value(cfg, dp, &rows[i], flags));
        free(rows);
    }
    cf_params_free(&dp);
    buf_free(&scratch);
    return unknown;
}

/* --- docs/configuration.md --- */

static const char *type_name(param_type t)
{
    switch (t) {
    case PT_STR: return "text";
    case PT_INT: return "integer";
    case PT_BOOL: return "yes/no";
    case PT_TIME: return "time";
    case PT_LIST: return "list";
    }
    return "?";
}

/* Table cells: a '|' would end the cell. */
static void cell(buf_t *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            buf_puts(out, "\\|");
        else
            buf_putc(out, *s);
    }
}

static void doc_default(buf_t *out, int id)
{
    const char *d = cf_reg[id].def;
    if (id == PARAM_myhostname)
        buf_puts(out, "(the system host name)");
    else if (id == PARAM_mydomain)
        buf_puts(out, "(computed from myhostname)");
    else if (id == PARAM_config_directory)
        buf_puts(out, "(the -c directory)");
    else if (!*d)
        buf_puts(out, "(empty)");
    else {
        /* A backtick inside a code span would end it. */
        bool tick = strchr(d, '`') != NULL;
        buf_puts(out, tick ? "`` " : "`");
        cell(out, d);
        buf_puts(out, tick ? " ``" : "`");
    }
}

static void doc_bounds(buf_t *out, int id)
{
    const pdef_t *r = &cf_reg[id];
    if (r->type != PT_INT && r->type != PT_TIME)
        return;
    if (r->max)
        buf_printf(out, " (%lld..%lld%s)", r->min, r->max, r->type == PT_TIME ? " s" : "");
    else if (r->min)
        buf_printf(out, " (at least %lld%s)", r->min, r->type == PT_TIME ? " s" : "");
}

static void doc_table(buf_t *out, const int *ids, size_t n)
{
    buf_puts(out, "| name | type | default | description |\n|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        buf_printf(out, "| `%s` | %s", cf_reg[id].name, type_name(cf_reg[id].type));
        doc_bounds(out, id);
        buf_puts(out, " | ");
        doc_default(out, id);
        buf_puts(out, " | ");
        cell(out, cf_reg[id].desc);
        buf_puts(out, " |\n");
    }
    buf_putc(out, '\n');
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(cf_reg[*(const int *)a].name, cf_reg[*(const int *)b].name);
}

/* Parameters with all of `with` and none of `without`, sorted by name;
 * group -1: any group. */
static size_t select_ids(int *ids, int group, int with, int without)
{
    size_t n = 0;
    for (int id = 0; id < PARAM__COUNT; id++) {
        int g = 0;
        for (size_t k = 0; k < cf_ngroups; k++)
            if (cf_groups[k].first <= id)
                g = (int)k;
        if ((group < 0 || g == group) && (cf_reg[id].flags & with) == with && !(cf_reg[id].flags & without))
            ids[n++] = id;
    }
    qsort(ids, n, sizeof *ids, cmp_id);
    return n;
}

static const char doc_intro[] =
    "# moat configuration reference\n"
    "\n"
    "<!-- Generated by `moat config doc` from src/config/params.def; do not edit.\n"
    "     tests/proto/test_config_cli.py fails when this file and the registry differ. -->\n"
    "\n"
    "moat reads Postfix's two files from one directory (`moat serve -c DIR`,\n"
    "`moat config check -c DIR`): `main.cf` for parameters and `master.cf` for the\n"
    "services it listens on. Without `-c` it runs on an embedded default meant for a\n"
    "source checkout (see the end of this page). `moat config show` prints the\n"
    "result like `postconf` (`-n` set values only, `-d` defaults, `-x` expanded,\n"
    "`-M` services).\n"
    "\n"
    "## main.cf syntax\n"
    "\n"
    "- `name = value`; white space around `=` does not matter, and the value may\n"
    "  be empty.\n"
    "- A line that starts with white space continues the previous line.\n"
    "- A line whose first non-blank character is `#` is a comment; blank lines are\n"
    "  ignored. `#` later in a line is part of the value.\n"
    "- A parameter given twice: the last one wins, with a warning.\n"
    "- Errors name the place: `/etc/moat/main.cf:12: missing '=' after parameter name`.\n"
    "\n"
    "### Expansion\n"
    "\n"
    "Values are expanded once, at load:\n"
    "\n"
    "| form | result |\n"
    "|---|---|\n"
    "| `$name`, `${name}`, `$(name)` | the value of `name` |\n"
    "| `${name?text}`, `${name?{text}}` | `text` when `name` is not empty |\n"
    "| `${name:text}`, `${name:{text}}` | `text` when `name` is empty |\n"
    "| `${name?{text1}:{text2}}` | `text1` when `name` is not empty, else `text2` |\n"
    "| `$$` | a literal `$` |\n"
    "\n"
    "Expansion is recursive and sees names you define yourself (`my_nets = ...`,\n"
    "then `mynetworks = $my_nets`). An undefined name expands to nothing, with a\n"
    "warning. A loop (`a = $b`, `b = $a`) is an error. Postfix 3.0's relational\n"
    "expressions (`${{$x} == {y}?...}`) are not supported and are an error.\n"
    "A value of a service with `-o` overrides is expanded with the overrides\n"
    "visible, so `-o smtpd_banner=$x` and any default that refers to an\n"
    "overridden name both see the override.\n"
    "\n"
    "### Types\n"
    "\n"
    "- **integer**: digits only, within the bounds shown in the tables (`10M` is an\n"
    "  error).\n"
    "- **yes/no**: `yes`, `no`, `true`, `false`, `1`, `0`, in any case.\n"
    "- **time**: a number and an optional unit `s`, `m`, `h`, `d` or `w`; a bare\n"
    "  number takes the unit of the default (`delay_warning_time = 4` means 4 hours).\n"
    "- **list**: items separated by commas and/or white space. An item written as\n"
    "  `{ ... }` keeps its inner spaces and loses the braces (Postfix 3.0), e.g.\n"
    "  `check_client_access { inline:{ 1.2.3.4=REJECT } }`.\n"
    "- **text**: anything.\n"
    "\n"
    "Every value given and every default is checked at load; a bad one is an\n"
    "error naming file and line.\n"
    "\n"
    "### Paths\n"
    "\n"
    "`config_directory` is always the directory moat was started with (`-c DIR`,\n"
    "made absolute); a `config_directory` line in main.cf is accepted and\n"
    "overridden. Relative values of `queue_directory`, `data_directory` and\n"
    "`mail_spool_directory` are made absolute against it (against the current\n"
    "directory for the embedded default). `mail_spool_directory` must end in `/`:\n"
    "moat delivers to Maildir only.\n"
    "\n"
    "### Computed defaults\n"
    "\n"
    "`myhostname` empty or unset: the system host name, with `.localdomain`\n"
    "appended when it has no dot. `mydomain` empty or unset: `myhostname` without\n"
    "its first label (`localdomain` when nothing is left).\n"
    "\n"
    "## Parameter classes\n"
    "\n"
    "Every name in main.cf (or in a master.cf `-o`) is one of:\n"
    "\n"
    "- **implemented**: the tables below.\n"
    "- **accepted and ignored**: Postfix parameters for parts of Postfix moat does\n"
    "  not have (installation paths, local(8) delivery, queue timing). Their values\n"
    "  are checked for type and otherwise change nothing; the ones set are listed\n"
    "  once at start-up. Note `local_recipient_maps`: moat has no local user\n"
    "  table, so every local part of a `mydestination` domain is accepted.\n"
    "- **not supported yet**: filtering and routing parameters of later versions.\n"
    "  Setting one to anything other than its default is an error,\n"
    "  `main.cf:N: NAME: not supported by this version of moat`: a\n"
    "  configuration never loses a restriction silently.\n"
    "- **unknown** (in none of the lists): if the name looks like it affects\n"
    "  filtering (`smtpd_*`, `*_restrictions`, `*_checks`, `*_access`, `*rbl*`,\n"
    "  `*_reject_code`, `*_maps`, `*milter*`, `*_filter`, `*greylist*`, `*spf*`,\n"
    "  `*dkim*`) it is an error, unless some value refers to it as `$name` (then it\n"
    "  is your own variable). Any other unknown name gets a warning\n"
    "  `unused parameter: NAME=VALUE` unless it is referred to.\n"
    "\n"
    "## master.cf\n"
    "\n"
    "Postfix's master(5) syntax: `service type private unpriv chroot wakeup maxproc\n"
    "command [args]`, continuation lines start with white space, `#` starts a\n"
    "comment line. moat runs the lines of type `inet` with command `smtpd`:\n"
    "\n"
    "- service: `port`, `host:port` or `[ipv6]:port`; a port is a number or a\n"
    "  name (`smtp` 25, `submission` 587, `smtps`/`submissions` 465). Without a\n"
    "  host the service listens on `inet_interfaces`.\n"
    "- maxproc: the most sessions of that service at once; `-` means no cap of\n"
    "  its own (`moat_max_sessions` still applies).\n"
    "- `-o name=value` and `-o { name = value with spaces }` override main.cf for\n"
    "  that service; they follow the same rules as main.cf lines. Other flags\n"
    "  (`-v`, ...) are ignored; any other argument is an error (a value with\n"
    "  spaces belongs in `-o { ... }`).\n"
    "\n"
    "Every other line (unix, fifo and pass services; inet services running other\n"
    "commands, such as `postscreen`) is checked for syntax and reported once as\n"
    "ignored. A master.cf without an smtpd inet service is an error. Without a\n"
    "master.cf moat runs `smtp inet n - n - - smtpd` (port 25) and warns.\n"
    "\n";

static const char doc_embedded[] =
    "## The embedded default\n"
    "\n"
    "Without `-c`, moat loads this (messages name it `<embedded>/main.cf:N`), so\n"
    "`make run` works unprivileged in a checkout:\n"
    "\n"
    "```\n";

void config_doc(buf_t *out)
{
    int ids[PARAM__COUNT];
    buf_puts(out, doc_intro);
    buf_puts(out, "## Parameters\n\n");
    for (size_t g = 0; g < cf_ngroups; g++) {
        size_t n = select_ids(ids, (int)g, PF_IMPL, 0);
        if (n == 0)
            continue;
        buf_printf(out, "### %s\n\n", cf_groups[g].title);
        doc_table(out, ids, n);
    }
    size_t n = select_ids(ids, -1, PF_IGNORED, 0);
    buf_puts(out, "## Accepted and ignored\n\n"
                  "Postfix parameters for parts moat does not have. A value is checked for\n"
                  "type, then changes nothing.\n\n");
    doc_table(out, ids, n);
    n = select_ids(ids, -1, PF_PENDING, 0);
    buf_puts(out, "## Not supported yet\n\n"
                  "Filtering and routing parameters that later versions implement. Any value\n"
                  "other than the default (after expansion, compared as the type says) is a\n"
                  "load error.\n\n");
    doc_table(out, ids, n);
    buf_puts(out, doc_embedded);
    buf_printf(out, "# main.cf\n%s\n# master.cf\n%s```\n", cf_embedded_main, cf_embedded_master);
}
