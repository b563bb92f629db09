/*
 * domlist: a domain list as Postfix's domain_list (match_list with
 * match_hostname) reads mydestination, relay_domains and the other
 * *_domains parameters:
 *
 *   example.com       the name itself; its subdomains too when the list's
 *                     feature is in parent_domain_matches_subdomains
 *   .example.com      subdomains of example.com (only when the feature is
 *                     not in parent_domain_matches_subdomains, as Postfix)
 *   !item             a match ends the walk with "no match"
 *   /file/name        the file's words are more items (# comment lines)
 *   type:table        looked up with the domain, then (fixed-string tables
 *                     only) each parent: "b.example.com", "example.com",
 *                     "com" with parent matching, ".example.com", ".com"
 *                     without; any value counts as a match
 *
 * First match wins; names and the domain compare without case, one
 * trailing dot ignored.  The same semantics for the restriction engine
 * (is this recipient ours?) and the router (which class is it?).
 * mydestination is a plain string list in Postfix (resolve_local): exact
 * names, tables asked for the domain only (DL_EXACT).
 */
#ifndef MOAT_POLICY_DOMLIST_H
#define MOAT_POLICY_DOMLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef struct domlist domlist_t;

typedef enum { DL_NOMATCH, DL_MATCH, DL_ERROR } dl_result;

typedef enum {
    DL_EXACT,    /* names and table keys: the domain itself only */
    DL_PARENT,   /* "example.com" matches subdomains; tables asked "example.com", "com" */
    DL_DOT,      /* ".example.com" matches subdomains; tables asked ".example.com", ".com" */
} dl_style;

/* Compile items (relative table names against config_dir); name is the
 * parameter, for messages.  NULL with "NAME: message\n" lines in err: a
 * table that does not open, an unreadable file, an empty item after '!',
 * '!' before a file. */
domlist_t *domlist_new(const char *name, const char *const *items, size_t n, dl_style style, const char *config_dir,
                       buf_t *err);
void domlist_free(domlist_t **dl);

/* Is domain in the list?  DL_MATCH: why (if not NULL; reset first) names
 * the item that matched ("example.com", or "hash:/etc/moat/relay:3 (key
 * example.com)").  DL_ERROR: a table failed; why holds the reason (the
 * caller answers 4xx, never "no match"). */
dl_result domlist_match(domlist_t *dl, const char *domain, buf_t *why);

/* No items at all (an empty parameter). */
bool domlist_empty(const domlist_t *dl);
/* Has a table or file it read changed on disk? */
bool domlist_changed(const domlist_t *dl);

/* The style of a *_domains feature: DL_PARENT when items (the value of
 * parent_domain_matches_subdomains) name it, else DL_DOT. */
dl_style domlist_parent_style(const char *const *items, size_t n, const char *feature);

#endif
