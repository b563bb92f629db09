/*
 * addrlist: a client address list as Postfix's mynetworks reads it — a
 * netlist (addresses, CIDR prefixes, "!" excludes) that may also name
 * tables ("type:table": the client address is the key, any value
 * matches) and files ("/file/name": its words are more items, # starts a
 * comment line).  First match wins; a "!" item that matches ends the walk
 * with "no match".
 *
 * Also the machine's own interface addresses (getifaddrs), as
 * mynetworks_style (host, subnet, class) and inet_interfaces = all need
 * them.
 */
#ifndef MOAT_POLICY_ADDRLIST_H
#define MOAT_POLICY_ADDRLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef struct addrlist addrlist_t;

typedef enum { AL_NOMATCH, AL_MATCH, AL_ERROR } al_result;

/* Compile items (relative table names against config_dir).  NULL with one
 * or more "NAME: message\n" lines in err: a bad address or prefix, a table
 * that does not open, an unreadable file, "!" before a file name. */
addrlist_t *addrlist_new(const char *name, const char *const *items, size_t n, const char *config_dir, buf_t *err);
/* Match a textual address ("192.0.2.1", "2001:db8::1").  AL_ERROR: a
 * table failed (the reason is in why); AL_MATCH: why (if not NULL) names
 * the item that matched. */
al_result addrlist_match(addrlist_t *al, const char *addr, buf_t *why);
/* Has a table or file it read changed on disk? */
bool addrlist_changed(const addrlist_t *al);
void addrlist_free(addrlist_t **al);

/* The machine's addresses as netlist items appended to out, separated by
 * spaces: style "host" ("192.0.2.1/32 [2001:db8::1]/128"), "subnet" (each
 * address's network: "192.0.2.0/24"), or "class" (IPv4 class A/B/C
 * networks; IPv6 keeps its subnet, as Postfix).  IPv6 link-local
 * addresses are left out (they need a scope).  -1 with a message in err
 * for an unknown style or when getifaddrs fails. */
int addrlist_local_items(const char *style, buf_t *out, buf_t *err);

#endif
