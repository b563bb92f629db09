/*
 * netlist: a list of client networks — IPv4/IPv6 addresses and CIDR
 * prefixes, as mynetworks and smtpd_forbid_bare_newline_exclusions take
 * them ("127.0.0.0/8", "[::1]/128", "192.0.2.1", "!10.0.0.0/8").
 * First match wins; a "!" item excludes.  (The table forms of these
 * parameters — type:table, /file/name — come with the restriction engine.)
 */
#ifndef MOAT_POLICY_NETLIST_H
#define MOAT_POLICY_NETLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/buf.h"

typedef struct netlist netlist_t;

/* Parse items; NULL with "NAME: bad network address: ITEM" in err. */
netlist_t *netlist_new(const char *param_name, const char *const *items, size_t n, buf_t *err);
bool netlist_match(const netlist_t *nl, const struct sockaddr *sa);
bool netlist_match_text(const netlist_t *nl, const char *addr);
void netlist_free(netlist_t **nl);

#endif
