/*
 * config-private: what the files of src/config share and nobody else sees.
 *
 * registry.c  the parameter table built from params.def, name lookup,
 *             value syntax (integers, booleans, times, lists)
 * syntax.c    logical lines, master.cf tokens, diagnostics
 * expand.c    $name expansion and the resolved parameter sets (params_t)
 * config.c    loading main.cf + master.cf, services, the public accessors
 * show.c      `moat config show` and `moat config doc`
 */
#ifndef MOAT_CONFIG_PRIVATE_H
#define MOAT_CONFIG_PRIVATE_H

#include "config/config.h"
#include "core/buf.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* --- the registry (registry.c) --- */

typedef struct pdef {
    const char *name;
    param_type type;
    const char *def;     /* default, as written */
    long long min, max;  /* max 0: no upper bound */
    int flags;
    const char *desc;
} pdef_t;

typedef struct pgroup {
    const char *id;
    const char *title;
    int first;           /* registry index of the group's first parameter */
} pgroup_t;

extern const pdef_t cf_reg[PARAM__COUNT];
extern const pgroup_t cf_groups[];
extern const size_t cf_ngroups;

/* Registry index of name[0..len), or -1. */
int cf_reg_find(const char *name, size_t len);
/* Does an unknown name look like it changes what mail is accepted? */
bool cf_looks_filtering(const char *name);
/* Parameter names are [A-Za-z0-9_]+ (the characters $name can reference). */
static inline bool cf_namechar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Value syntax.  Each returns false on bad syntax and leaves *out alone. */
bool cf_parse_int(const char *s, long long *out);
bool cf_parse_bool(const char *s, long long *out);
/* unit: the unit a bare number takes ('s', 'm', 'h', 'd' or 'w'). */
bool cf_parse_time(const char *s, char unit, long long *out);
/* The unit of a default time value ("300s" -> 's', "5d" -> 'd'). */
char cf_time_unit(const char *def);

/* Split a list value: items separated by commas and/or white space; an item
 * that is one { ... } group loses its braces and the white space just inside
 * them.  Returns one malloc'd block: a NULL-terminated pointer array followed
 * by the item text (free the block to free everything).  *unbalanced is set
 * when a brace is not matched (the split still happens). */
const char **cf_split(const char *s, size_t *n, bool *unbalanced);
/* The tokenizer under cf_split and cf_fields: skip separators (white
 * space, and commas when commas is true), then return the end of the next
 * token (a { } group keeps its separators) and set *start; NULL at the end
 * of s.  Sets *unbalanced on a stray or unclosed brace. */
const char *cf_token(const char *c, bool commas, const char **start, bool *unbalanced);

/* --- syntax (syntax.c) --- */

#define CF_WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n' || (c) == '\f' || (c) == '\v')

typedef struct cf_line {
    char *text;   /* joined logical line, trimmed */
    int line;     /* line number of its first physical line */
} cf_line_t;

/* Postfix logical lines: a line that starts with white space continues the
 * previous one; blank lines and lines whose first non-blank is '#' are
 * dropped.  Errors go to err as "file:N: ...". */
size_t cf_logical_lines(const char *text, const char *file, cf_line_t **out, buf_t *err);
void cf_lines_free(cf_line_t **lines, size_t n);

/* master.cf fields: split on white space, a { ... } group (nesting) is one
 * field even when it holds spaces.  Returns a malloc'd array of malloc'd
 * strings; *unbalanced as for cf_split. */
char **cf_fields(const char *s, size_t *n, bool *unbalanced);
void cf_fields_free(char ***f, size_t n);

/* Append "file:line: message\n" ("file: message" when line is 0) to b
 * unless that exact line is already there: a problem found again while
 * building each service's parameter set is reported once.  b may be NULL. */
void cf_msg(buf_t *b, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void cf_vmsg(buf_t *b, const char *file, int line, const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
/* Same, with "warning: " after the location. */
void cf_warn(buf_t *b, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Quote a value for a message: at most 80 bytes, control bytes escaped.
 * Returns a pointer into q (reset first). */
const char *cf_quote(buf_t *q, const char *s);

/* --- settings and resolved sets (expand.c) --- */

typedef struct setting {
    char *name;
    char *raw;          /* value as written, white space trimmed */
    const char *file;   /* owned by the config_t */
    int line;
    int id;             /* registry index, or -1 for a user-defined name */
} setting_t;

typedef struct uparam {
    const setting_t *def;
    char *val;          /* expanded */
} uparam_t;

struct params {
    char *val[PARAM__COUNT];              /* expanded (PF_RAW: as written) */
    long long num[PARAM__COUNT];          /* PT_INT, PT_TIME seconds, PT_BOOL 0/1 */
    const char **items[PARAM__COUNT];     /* cf_split blocks */
    size_t nitems[PARAM__COUNT];
    const setting_t *def[PARAM__COUNT];   /* NULL: the default applies */
    uparam_t *user;                       /* user-defined names visible here */
    size_t nuser;
};

typedef struct svc {
    service_t pub;      /* first: config_service() hands out &svc->pub */
    char *mline;        /* the master.cf line, re-spaced like postconf -M */
    setting_t *ov;      /* -o overrides, later ones replacing earlier ones */
    size_t nov;
} svc_t;

/* A delivery transport: a master.cf "unix" service whose command is a
 * delivery agent moat has, or a built-in (mline NULL). */
typedef struct xport {
    transport_t pub;    /* first: config_transport() hands out &xp->pub */
    char *name;         /* pub.name points here */
    char *mline;        /* the master.cf line, re-spaced like postconf -M; NULL: built-in */
    char *builtin_line; /* what a built-in stands for, as a master.cf line */
    setting_t *ov;      /* -o overrides */
    size_t nov;
    bool maxproc_default; /* "-": default_process_limit, known once params exist */
} xport_t;

struct config {
    int refs;            /* config_ref/config_free (loop thread only) */
    char *dir;           /* absolute config_directory; relative paths resolve here */
    char *main_file;     /* names used in messages */
    char *master_file;
    char *hostname;      /* the system host name, for the myhostname default */
    setting_t *set;      /* main.cf, one entry per name (the last one wins) */
    size_t nset;
    params_t *main;
    svc_t *svc;
    size_t nsvc;
    char *ignored;
    char *ignored_services;
    /* Added with the delivery transports: */
    xport_t *xp;         /* master.cf transports in file order, then the built-ins */
    size_t nxp;
};

/* Per-transport parameter names ("<transport>_<suffix>", as Postfix's
 * qmgr reads them): the suffix part of name when its prefix is a transport
 * of cfg, else NULL.  *is_time: the value is a time (rate delays). */
const char *cf_transport_suffix(const config_t *cfg, const char *name, bool *is_time);

/* The embedded default configuration (config.c), also shown by config_doc. */
extern const char cf_embedded_main[];
extern const char cf_embedded_master[];

/* Build the resolved set seen by main.cf (ov NULL) or by a service with
 * its -o overrides.  with_main false: registry defaults only (show -d).
 * Every value is expanded, typed and checked; problems go to err/warn.
 * Returns NULL when there was an error. */
params_t *cf_params_build(const config_t *cfg, const setting_t *ov, size_t nov, bool with_main,
                          buf_t *err, buf_t *warn);
void cf_params_free(params_t **p);

/* Collect the names referenced by $name in text (every branch of a
 * conditional counts) into refs (a '\n'-separated list). */
void cf_scan_refs(const char *text, buf_t *refs);
bool cf_is_referenced(const buf_t *refs, const char *name);

#endif
