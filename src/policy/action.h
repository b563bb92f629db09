/*
 * action: parse the result of an access(5) table lookup into an action.
 *
 *   OK, all-numeric            accept (ends the current restriction class)
 *   DUNNO                      as if not found; continue
 *   REJECT [text]              access_map_reject_code (554), 5.7.1
 *   DEFER [text]               access_map_defer_code (450), 4.7.1
 *   4NN text / 5NN text        this code; text may start with x.y.z
 *   DEFER_IF_REJECT [text]     defer if a later restriction rejects
 *   DEFER_IF_PERMIT [text]     defer if a later restriction permits
 *   DISCARD [text], HOLD [text], WARN [text], INFO [text]
 *   PREPEND header: value, REDIRECT addr, FILTER transport:dest, BCC addr
 *   anything else              a restriction list or class name to run
 *
 * Keywords are case-insensitive.  The parsed action points into the
 * caller's value string (no allocation).
 */
#ifndef MOAT_POLICY_ACTION_H
#define MOAT_POLICY_ACTION_H

typedef enum {
    ACT_OK,
    ACT_DUNNO,
    ACT_REJECT,        /* REJECT, or an explicit 5NN */
    ACT_DEFER,         /* DEFER, or an explicit 4NN */
    ACT_DEFER_IF_REJECT,
    ACT_DEFER_IF_PERMIT,
    ACT_DISCARD,
    ACT_HOLD,
    ACT_WARN,
    ACT_INFO,
    ACT_PREPEND,
    ACT_REDIRECT,
    ACT_FILTER,
    ACT_BCC,
    ACT_RESTRICTIONS,  /* text is a restriction list or class name */
    ACT_INVALID,       /* text explains; callers answer 4xx and log */
} action_kind;

typedef struct action {
    action_kind kind;
    int code;          /* 0: the kind's default code parameter applies */
    char dsn[12];      /* enhanced status code given in the text, or "" */
    const char *text;  /* the rest (after the keyword, code and dsn), trimmed at the start */
} action_t;

void action_parse(const char *value, action_t *out);
const char *action_name(action_kind kind);

#endif
