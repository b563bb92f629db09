/*
 * hbc: header and body checks with Postfix's header_checks(5) semantics.
 *
 * Four classes of input, each with its own list of tables (any table type
 * of src/maps; first table, first match in file order wins):
 *   HBC_HEADER  header_checks         the primary message headers
 *   HBC_MIME    mime_header_checks    the MIME headers of every part
 *   HBC_NESTED  nested_header_checks  the headers of attached messages
 *   HBC_BODY    body_checks           body lines, one at a time
 * A header is looked up as one logical header, unfolded (the line breaks
 * of its continuation lines removed, the white space kept), without its
 * final newline; a body line without its newline.
 *
 * The result of a lookup is parsed into an action.  Everything Postfix's
 * cleanup does with it (which message state it changes, what it logs) is
 * the caller's (content.c); hbc only compiles the tables, looks up, and
 * parses the action with its code, enhanced status code and text.
 *
 * Tables are opened once per configuration generation (hbc_new) and are
 * used by one thread at a time (the loop).  Lookups do not allocate on
 * the hot path: the result's buffers are reused.
 */
#ifndef MOAT_CONTENT_HBC_H
#define MOAT_CONTENT_HBC_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/buf.h"
#include "maps/maps.h"

typedef enum { HBC_HEADER, HBC_MIME, HBC_NESTED, HBC_BODY, HBC__COUNT } hbc_class;

typedef enum {
    HBC_NONE,      /* no match, DUNNO or OK: the line passes unchanged */
    HBC_REJECT,    /* REJECT [text] or 5NN text: the message is refused */
    HBC_DEFER,     /* DEFER [text] or 4NN text: the message is refused, try again */
    HBC_WARN,      /* WARN [text]: log, the line passes */
    HBC_INFO,      /* INFO [text]: log, the line passes */
    HBC_DISCARD,   /* DISCARD [text]: accept and drop the message; further checks skipped */
    HBC_HOLD,      /* HOLD [text]: the message goes to the hold queue */
    HBC_IGNORE,    /* IGNORE: the line is removed from the message */
    HBC_REPLACE,   /* REPLACE text: the line is replaced by text */
    HBC_PREPEND,   /* PREPEND text: text is inserted before the line */
    HBC_REDIRECT,  /* REDIRECT addr: all recipients replaced by addr */
    HBC_BCC,       /* BCC addr: addr added as a recipient */
    HBC_FILTER,    /* FILTER transport:destination: the message goes there */
    HBC_TEMPFAIL,  /* the table failed: treat as DEFER (451 4.3.0), logged */
} hbc_action;

typedef struct hbc_result {
    hbc_action act;
    int code;              /* REJECT/DEFER: the SMTP code to reply with (550, 451, or NNN) */
    char dsn[12];          /* REJECT/DEFER: the enhanced status code ("5.7.1") */
    buf_t text;            /* the action's text: reply text (default filled in), the
                              REPLACE/PREPEND line, the address, transport:dest, or the
                              WARN/INFO/HOLD/DISCARD note ("" when none) */
    const char *table;     /* the table that matched (map_name), for logs and traces */
    map_origin_t origin;   /* its file:line when it has lines */
} hbc_result_t;

typedef struct hbc hbc_t;

/* Open the tables of header_checks, mime_header_checks,
 * nested_header_checks and body_checks in p (relative names against
 * basedir).  A class whose list is empty is off.  NULL with every problem
 * as "file:line: message" (or "PARAM: message") lines in err. */
hbc_t *hbc_new(const params_t *p, const char *basedir, buf_t *err);
void hbc_free(hbc_t **h);

/* Is class c on (it has at least one table)? */
bool hbc_on(const hbc_t *h, hbc_class c);

/* Look up text (NUL-terminated; len bytes) in class c's tables.  out must
 * have been zeroed once (hbc_result_init) and is reused: its text is reset
 * first.  Returns out->act.  An action that is not valid for the class or
 * malformed (REPLACE without text, REDIRECT without an address, an
 * unknown keyword) logs a warning with file:line and counts as HBC_NONE,
 * as Postfix does. */
hbc_action hbc_check(hbc_t *h, hbc_class c, const char *text, size_t len, hbc_result_t *out);

void hbc_result_init(hbc_result_t *r);
void hbc_result_free(hbc_result_t *r);

/* "reject", "warning", "info", "discard", "hold", "ignore", "replace",
 * "prepend", "redirect", "bcc", "filter": Postfix's log verb for an action. */
const char *hbc_action_verb(hbc_action a);
/* "header_checks", "mime_header_checks", "nested_header_checks", "body_checks". */
const char *hbc_class_param(hbc_class c);

#endif
