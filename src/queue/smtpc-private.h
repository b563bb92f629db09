/*
 * smtpc-private: the pure parts of the SMTP/LMTP client (smtpc-proto.c),
 * shared by the client's state machine (smtpc*.c), its unit tests and the
 * fuzzer: EHLO keyword parsing, XFORWARD command building, xtext, content
 * dot-stuffing, port names, "is this address:port me?" and the texts that
 * go into results.  Nothing here touches the loop, a socket or a file.
 */
#ifndef MOAT_QUEUE_SMTPC_PRIVATE_H
#define MOAT_QUEUE_SMTPC_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "queue/smtpc.h"

/* A reply line longer than this (without CRLF) is a protocol error. */
#define SMTPC_LINE_MAX 4096
/* A reply (all its lines) larger than this is a protocol error. */
#define SMTPC_REPLY_MAX (64 * 1024)
/* XFORWARD command lines stay below this many bytes, CRLF included. */
#define SMTPC_XFORWARD_LINE_MAX 512

/* XFORWARD attributes a server announced (bit mask). */
enum {
    SMTPC_XF_NAME = 1,
    SMTPC_XF_ADDR = 2,
    SMTPC_XF_PORT = 4,
    SMTPC_XF_PROTO = 8,
    SMTPC_XF_HELO = 16,
    SMTPC_XF_IDENT = 32,
    SMTPC_XF_SOURCE = 64,
};

/* What the server offered in its EHLO/LHLO reply. */
typedef struct smtpc_ehlo {
    bool pipelining, eightbit, smtputf8, size;
    bool starttls;          /* STARTTLS (RFC 3207) */
    long long size_limit;   /* SIZE n; 0 when absent or not a number */
    unsigned xforward;      /* SMTPC_XF_* */
} smtpc_ehlo_t;

/* Parse the keyword lines (every line but the first) of a complete
 * EHLO/LHLO reply. */
void smtpc_ehlo_parse(const smtpc_reply_t *r, smtpc_ehlo_t *f);

/* Release what a reply holds (smtpc_reply_reset keeps the memory). */
void smtpc_reply_free(smtpc_reply_t *r);

/* RFC 3461 xtext of s appended to out ('+', '=', and bytes outside
 * 33..126 as "+XX"). */
void smtpc_xtext(buf_t *out, const char *s);

/* The original client as XFORWARD describes it. */
typedef struct smtpc_xfwd_in {
    const char *name, *addr, *proto, *helo, *ident;   /* NULL/"" -> [UNAVAILABLE] */
    bool local_source;                                 /* SOURCE=LOCAL (else REMOTE) */
} smtpc_xfwd_in_t;

/* The XFORWARD commands to send for the attributes in offered, as
 * Postfix groups them: group 1 NAME ADDR, group 2 PROTO HELO IDENT
 * SOURCE; a group with no offered attribute is not sent; a group whose
 * line would reach SMTPC_XFORWARD_LINE_MAX is split over several
 * commands (and a value too long for any line is cut).  Each command
 * (without CRLF) is appended to out followed by '\n'; groups[k] (when
 * not NULL, room for 8) gets the group number of command k.  Returns the
 * number of commands. */
size_t smtpc_xforward_cmds(const smtpc_xfwd_in_t *in, unsigned offered, buf_t *out, int *groups);

/* Append content to out with CRLF line ends and leading dots doubled.
 * *bol says whether the next byte starts a line (true at the start of
 * the content); it is updated so the content can come in pieces split
 * anywhere.  A lone CR is passed through unchanged. */
void smtpc_dotstuff(bool *bol, const char *in, size_t n, buf_t *out);

/* A TCP port from a number or one of the service names moat knows
 * ("smtp", "lmtp", "submission", "submissions", "smtps"; anything else
 * through getservbyname).  -1 when it is neither. */
int smtpc_port_number(const char *port);

/* Is (addr, port) one of the listen entries of self?  An entry
 * "addr:port" or "[addr]:port" matches that address (compared as
 * addresses, so "::1" equals "0:0::1"; "localhost:port" any loopback
 * address); "*:port" matches any loopback address, any address another
 * entry names, and any address in local_addrs (this host's interfaces;
 * may be NULL). */
bool smtpc_is_self_addr(const smtpc_self_t *self, const char *addr, int port,
                        const char *const *local_addrs, size_t nlocal);

/* Append at most max bytes of s[0..n) to out, bytes outside 0x20..0x7e
 * as '?', and "..." when cut. */
void smtpc_printable(buf_t *out, const char *s, size_t n, size_t max);

/* Does the text hold a byte >= 0x80? */
bool smtpc_has_8bit(const char *s);

/* Is addr (text) a loopback address (127.0.0.0/8, ::1)? */
bool smtpc_is_loopback(const char *addr);

#endif
