/*
 * action: see action.h.  Validation follows access(5): a 4NN/5NN must be
 * a real reply code, an enhanced code must agree with it in its first
 * digit, PREPEND needs a header, REDIRECT/BCC an address, FILTER a
 * transport:destination.  Anything malformed is ACT_INVALID, never a
 * silent permit.
 */
#include "policy/action.h"

#include "core/util.h"

#include <ctype.h>
#include <string.h>

static const struct {
    const char *word;
    action_kind kind;
} keywords[] = {
    {"OK", ACT_OK},
    {"DUNNO", ACT_DUNNO},
    {"REJECT", ACT_REJECT},
    {"DEFER", ACT_DEFER},
    {"DEFER_IF_REJECT", ACT_DEFER_IF_REJECT},
    {"DEFER_IF_PERMIT", ACT_DEFER_IF_PERMIT},
    {"DISCARD", ACT_DISCARD},
    {"HOLD", ACT_HOLD},
    {"WARN", ACT_WARN},
    {"INFO", ACT_INFO},
    {"PREPEND", ACT_PREPEND},
    {"REDIRECT", ACT_REDIRECT},
    {"FILTER", ACT_FILTER},
    {"BCC", ACT_BCC},
};

const char *action_name(action_kind kind)
{
    for (size_t i = 0; i < ARRAY_LEN(keywords); i++)
        if (keywords[i].kind == kind)
            return keywords[i].word;
    return kind == ACT_RESTRICTIONS ? "restriction" : "invalid";
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* "x.y.z" enhanced status code at p (class 2, 4 or 5)? Returns its length. */
static size_t dsn_len(const char *p)
{
    if ((p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.')
        return 0;
    size_t i = 2, digits = 0;
    while (isdigit((unsigned char)p[i]) && digits < 3)
        i++, digits++;
    if (!digits || p[i] != '.')
        return 0;
    i++;
    digits = 0;
    while (isdigit((unsigned char)p[i]) && digits < 3)
        i++, digits++;
    if (!digits || (p[i] && p[i] != ' ' && p[i] != '\t'))
        return 0;
    return i;
}

static void take_dsn(action_t *out, const char *p)
{
    size_t n = dsn_len(p);
    if (n && n < sizeof out->dsn) {
        memcpy(out->dsn, p, n);
        out->dsn[n] = 0;
        p = skip_ws(p + n);
    }
    out->text = p;
}

static void invalid(action_t *out, const char *why)
{
    out->kind = ACT_INVALID;
    out->code = 0;
    out->dsn[0] = 0;
    out->text = why;
}

void action_parse(const char *value, action_t *out)
{
    const char *v = skip_ws(value);
    out->code = 0;
    out->dsn[0] = 0;
    out->text = "";

    /* All-numeric: OK (access(5)), unless it is a three-digit reply code
     * followed by text. */
    size_t nd = strspn(v, "0123456789");
    if (nd && !v[nd]) {
        out->kind = ACT_OK;
        return;
    }
    if (nd == 3 && (v[3] == ' ' || v[3] == '\t')) {
        int code = (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0');
        if (v[0] != '4' && v[0] != '5') {
            invalid(out, "reply code must be 4NN or 5NN");
            return;
        }
        out->kind = v[0] == '4' ? ACT_DEFER : ACT_REJECT;
        out->code = code;
        take_dsn(out, skip_ws(v + 3));
        if (out->dsn[0] && out->dsn[0] != v[0])
            invalid(out, "enhanced status code does not match the reply code");
        return;
    }

    size_t wl = 0;
    while (v[wl] && v[wl] != ' ' && v[wl] != '\t')
        wl++;
    for (size_t i = 0; i < ARRAY_LEN(keywords); i++) {
        if (strlen(keywords[i].word) != wl || !str_nieq(keywords[i].word, v, wl))
            continue;
        out->kind = keywords[i].kind;
        const char *rest = skip_ws(v + wl);
        switch (out->kind) {
        case ACT_OK:
        case ACT_DUNNO:
            out->text = rest;
            return;
        case ACT_PREPEND: {
            const char *colon = strchr(rest, ':');
            if (!*rest || !colon || colon == rest)
                invalid(out, "PREPEND needs \"header: value\"");
            else
                out->text = rest;
            return;
        }
        case ACT_REDIRECT:
        case ACT_BCC:
            if (!*rest || strchr(rest, ' '))
                invalid(out, "REDIRECT and BCC need one address");
            else
                out->text = rest;
            return;
        case ACT_FILTER: {
            const char *colon = strchr(rest, ':');
            if (!*rest || !colon || colon == rest)
                invalid(out, "FILTER needs transport:destination");
            else
                out->text = rest;
            return;
        }
        default:
            take_dsn(out, rest);
            if (out->dsn[0] && ((out->kind == ACT_REJECT && out->dsn[0] != '5') ||
                                (out->kind == ACT_DEFER && out->dsn[0] != '4')))
                invalid(out, "enhanced status code does not match the action");
            return;
        }
    }
    if (!*v) {
        invalid(out, "empty result");
        return;
    }
    out->kind = ACT_RESTRICTIONS;
    out->text = v;
}
