/*
 * fuzz_pcre: a pcre: table from arbitrary text, through the same driver
 * and contract checks as fuzz_regexp (the two table types share their
 * parser; only the pattern engine differs).  PCRE2 bounds its own
 * compiled size, so the repetition guard there is merely conservative.
 */
#define FUZZ_RE_TYPE "pcre"
#include "fuzz_regexp.c"
