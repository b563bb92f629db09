/*
 * prefilter: a Vectorscan (Hyperscan) multi-pattern prefilter for the
 * regexp: and pcre: tables (map_re_common.c).
 *
 * A table with many rules would otherwise run every pattern on every key
 * (Postfix does exactly that).  At open the table offers each rule's
 * positive pattern; those Vectorscan can compile are put into one
 * block-mode database, compiled in prefilter mode, which is allowed to
 * report a pattern that the real engine would not match but never to miss
 * one it would.  A lookup scans the key once, which yields the set of
 * candidate rules; the table's usual walk in file order then skips the
 * covered rules that are not candidates.  PCRE2 or POSIX regexec still
 * decides every rule it tries and fills $n, so answers are unchanged.
 *
 * Eligibility is conservative: a pattern is left out (the table always
 * tries it) when Vectorscan refuses it, when it can match the empty
 * string, or when its meaning under Vectorscan's PCRE syntax might be
 * narrower than under the table's own engine (POSIX bracket expressions
 * with a backslash, GNU \< \> \` \' and back-references, collating
 * elements, BRE, PCRE's extended mode, verbs, Unicode properties).
 *
 * The switch: re_prefilter_set_mode() (tests, the bench), else the
 * environment variable MOAT_RE_PREFILTER=off|auto|always, read at each
 * table open.  auto (the default) builds a database when between
 * RE_PREFILTER_MIN_RULES and RE_PREFILTER_MAX_RULES rules are eligible.
 */
#ifndef MOAT_MAPS_PREFILTER_H
#define MOAT_MAPS_PREFILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "maps/maps.h"

/* Below this many covered rules a table is walked as before.  A scan
 * costs about as much as two or three PCRE2-JIT patterns on a line, but
 * glibc's regexec is ten times slower than that (10 rules over 1 MB: 26
 * ms without the prefilter, 2.4 ms with it; 5 pcre rules: about even). */
#define RE_PREFILTER_MIN_RULES 3
/* Above this many, auto leaves the table alone: Vectorscan's compile time
 * grows faster than linearly (2,000 body rules: about 3 s; 10,000
 * dynamic-address patterns: minutes), and the table is opened at every
 * start and reload. */
#define RE_PREFILTER_MAX_RULES 4000

typedef enum {
    RE_PREFILTER_DEFAULT = -1, /* set_mode only: back to the environment's choice */
    RE_PREFILTER_OFF = 0,
    RE_PREFILTER_AUTO,
    RE_PREFILTER_ALWAYS, /* any table with one covered rule (tests) */
} re_prefilter_mode_t;

/* Process-wide; applies to tables opened afterwards. */
void re_prefilter_set_mode(re_prefilter_mode_t mode);
re_prefilter_mode_t re_prefilter_mode(void);

typedef enum { RE_DIALECT_PCRE, RE_DIALECT_POSIX } re_dialect_t;

typedef struct re_prefilter re_prefilter_t;

/* A builder for one table; rule ids are the table's rule indices. */
re_prefilter_t *re_prefilter_new(re_dialect_t dialect);

/* Offer rule id's pattern with its table flag letters (as in the file;
 * each occurrence toggles).  line: for debug messages.  False when the
 * pattern is not eligible by its syntax or flags (the rule is tried on
 * every key); Vectorscan may still refuse an accepted one in build. */
bool re_prefilter_offer(re_prefilter_t *pf, size_t id, const char *pattern, const char *flags,
                        size_t nflags, int line);

/* Compile what was offered for a table of nids rules, if at least
 * min_rules and at most max_rules (0: no limit) were.  Returns the number
 * of rules covered; 0 (with the reason in why when it is more than "too
 * few or too many rules") means the builder is useless: free it. */
size_t re_prefilter_build(re_prefilter_t *pf, size_t nids, size_t min_rules, size_t max_rules,
                          const char *path, buf_t *why);

/* Is rule id in the database (its non-candidacy proves a miss)? */
bool re_prefilter_covers(const re_prefilter_t *pf, size_t id);

/* Scan key.  0: the candidate bit set is valid until the next scan;
 * -1: the scan failed and the caller must try every rule. */
int re_prefilter_scan(re_prefilter_t *pf, const char *key, size_t len);

/* The candidate bit set of the last successful scan: bit id of word
 * id / 64. */
const uint64_t *re_prefilter_candidates(const re_prefilter_t *pf);

/* Database size in bytes (for the docs' and the bench's figures). */
size_t re_prefilter_db_size(const re_prefilter_t *pf);

void re_prefilter_free(re_prefilter_t **pf);

/* For tests and the bench: of a regexp:/pcre: table, the rules its
 * prefilter covers and its rule count (if/endif lines count as rules).
 * False when m is not such a table or has no prefilter. */
bool re_table_prefilter_info(const map_t *m, size_t *covered, size_t *rules);

#endif
