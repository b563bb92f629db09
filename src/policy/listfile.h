/*
 * listfile: the items of a Postfix match list (mynetworks, relay_domains,
 * the other *_domains parameters) with its "/file/name" items read and
 * spliced in where they are named, as Postfix's match_list does:
 *
 *   !item        the item negated (each '!' toggles)
 *   /file/name   the file's words are more items: separated by commas and
 *                white space, a line whose first non-blank is '#' is a
 *                comment; a file may name files, 8 deep at most
 *
 * What an item means is the list's business (domlist, addrlist): each
 * other item goes to the list's function, in order.  The files read are
 * remembered with their stat, so the list can tell when one changed.
 */
#ifndef MOAT_POLICY_LISTFILE_H
#define MOAT_POLICY_LISTFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "maps/maps.h"

typedef struct listfile_seen listfile_seen_t;

/* The files a list read; {0} is empty. */
typedef struct listfiles {
    listfile_seen_t *seen;
    size_t n;
} listfiles_t;

/* One item: without its '!'s (never empty, never a file), negate when
 * they were odd, written as in the list (for messages).  false: the item
 * is wrong, and the function put a "NAME: ...\n" line in the error buffer. */
typedef bool (*listfile_item_fn)(void *ctx, const char *item, bool negate, const char *written);

/* Walk items, files spliced in; name is the parameter, for messages.
 * Returns how many items were wrong: each has a "NAME: ...\n" line in err
 * (an unreadable file, files nested too deep, nothing after '!', '!'
 * before a file name, or whatever fn said). */
int listfile_walk(listfiles_t *lf, const char *name, const char *const *items, size_t n, listfile_item_fn fn,
                  void *ctx, buf_t *err);

/* map_open for a "type:table" item; NULL with a "NAME: ...\n" line in err. */
map_t *listfile_open_table(const char *name, const char *spec, const char *config_dir, buf_t *err);

/* Has a file it read changed (or gone) since? */
bool listfiles_changed(const listfiles_t *lf);
void listfiles_free(listfiles_t *lf);

#endif
