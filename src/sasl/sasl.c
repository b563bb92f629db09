/*
 * sasl: the front of the AUTH backends (see sasl.h): building a server
 * from the parameters, the mechanism lists after the security options,
 * the exchange object and its reply delivery, and the pure helpers
 * (base64, the PLAIN layout, option words).
 *
 * Owns: sasl_server_t (reference counted: the owner holds one reference
 * and every live exchange another, so a reload may drop a server while
 * sessions still talk through it) and sasl_conv_t.  Every reply reaches
 * its caller through the exchange's own event, so a callback never runs
 * on the stack of sasl_start or sasl_step; sasl_end from inside that
 * callback is deferred until the callback returns.
 *
 * Never: logs or keeps a response or a password longer than the step
 * that needs it; blocks the loop.
 */
#include "sasl/sasl-private.h"

#include "core/log.h"
#include "core/util.h"

#include <event2/event.h>

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ base64 */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* Strict: a multiple of four, "=" only as the last one or two, and the
 * bits the padding hides must be zero, so that every accepted input is
 * the one encoding of its bytes. */
bool sasl_b64_decode(const char *in, buf_t *out)
{
    buf_reset(out);
    size_t n = strlen(in);
    if (n == 1 && in[0] == '=')
        return true;
    if (n % 4)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        const unsigned char *q = (const unsigned char *)in + i;
        bool last = i + 4 == n;
        int v0 = base64_value(q[0]), v1 = base64_value(q[1]);
        if (v0 < 0 || v1 < 0)
            return false;
        if (last && q[2] == '=' && q[3] == '=') {
            if (v1 & 0x0f)
                return false;
            buf_putc(out, (char)(v0 << 2 | v1 >> 4));
            break;
        }
        int v2 = base64_value(q[2]);
        if (v2 < 0)
            return false;
        if (last && q[3] == '=') {
            if (v2 & 0x03)
                return false;
            buf_putc(out, (char)(v0 << 2 | v1 >> 4));
            buf_putc(out, (char)((v1 & 0x0f) << 4 | v2 >> 2));
            break;
        }
        int v3 = base64_value(q[3]);
        if (v3 < 0)
            return false;
        char tri[3] = {(char)(v0 << 2 | v1 >> 4), (char)((v1 & 0x0f) << 4 | v2 >> 2), (char)((v2 & 0x03) << 6 | v3)};
        buf_append(out, tri, 3);
    }
    return true;
}

void sasl_b64_encode(const void *data, size_t len, buf_t *out)
{
    const unsigned char *p = data;
    buf_reserve(out, (len + 2) / 3 * 4);
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        buf_putc(out, b64_alphabet[v >> 18 & 63]);
        buf_putc(out, b64_alphabet[v >> 12 & 63]);
        buf_putc(out, i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=');
        buf_putc(out, i + 2 < len ? b64_alphabet[v & 63] : '=');
    }
}

/* ------------------------------------------------------------ PLAIN */

int sasl_plain_parse(const char *data, size_t len, const char **authcid, const char **passwd)
{
    const char *nul1 = memchr(data, 0, len);
    if (!nul1)
        return -1;
    const char *cid = nul1 + 1;
    size_t rest = len - (size_t)(cid - data);
    const char *nul2 = memchr(cid, 0, rest);
    if (!nul2 || nul2 == cid)
        return -1;   /* no separator, or an empty authcid (RFC 4616 needs one) */
    const char *pw = nul2 + 1;
    if (memchr(pw, 0, len - (size_t)(pw - data)))
        return -1;   /* a third NUL */
    *authcid = cid;
    *passwd = pw;
    /* An authzid equal to the authcid asks for nothing more than none. */
    size_t zlen = (size_t)(nul1 - data);
    if (zlen && !(zlen == (size_t)(nul2 - cid) && memcmp(data, cid, zlen) == 0))
        return -2;
    return 0;
}

bool sasl_plain_split(const char *data, size_t len, const char **authcid, const char **passwd)
{
    return sasl_plain_parse(data, len, authcid, passwd) == 0;
}

/* ------------------------------------------------------------ options */

static const struct {
    const char *word;
    unsigned bit;
} sec_words[] = {
    {"noanonymous", SASL_SEC_NOANONYMOUS},   {"noplaintext", SASL_SEC_NOPLAINTEXT},
    {"noactive", SASL_SEC_NOACTIVE},         {"nodictionary", SASL_SEC_NODICTIONARY},
    {"mutual_auth", SASL_SEC_MUTUAL_AUTH},   {"forward_secrecy", SASL_SEC_FORWARD_SECRECY},
};

bool sasl_security_parse(const char *const *items, size_t n, unsigned *out, const char **bad)
{
    *out = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < ARRAY_LEN(sec_words) && !str_ieq(items[i], sec_words[k].word))
            k++;
        if (k == ARRAY_LEN(sec_words)) {
            *bad = items[i];
            return false;
        }
        *out |= sec_words[k].bit;
    }
    return true;
}

bool sasl_mech_allowed(unsigned f, unsigned sec)
{
    if (f & SASL_MF_PRIVATE)
        return false;
    if ((sec & SASL_SEC_NOANONYMOUS) && (f & SASL_MF_ANONYMOUS))
        return false;
    if ((sec & SASL_SEC_NOPLAINTEXT) && (f & SASL_MF_PLAINTEXT))
        return false;
    if ((sec & SASL_SEC_NOACTIVE) && (f & SASL_MF_ACTIVE))
        return false;
    if ((sec & SASL_SEC_NODICTIONARY) && (f & SASL_MF_DICTIONARY))
        return false;
    if ((sec & SASL_SEC_MUTUAL_AUTH) && !(f & SASL_MF_MUTUAL_AUTH))
        return false;
    if ((sec & SASL_SEC_FORWARD_SECRECY) && !(f & SASL_MF_FORWARD_SECRECY))
        return false;
    return true;
}

bool sasl_mech_name_ok(const char *name)
{
    size_t n = 0;
    for (; name[n]; n++) {
        char ch = name[n];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return false;
    }
    return n >= 1 && n <= 20;
}

/* ------------------------------------------------------------ server */

static const char *const moat_names[] = {"PLAIN", "LOGIN"};
static const unsigned moat_flags[] = {SASL_MF_PLAINTEXT | SASL_MF_DICTIONARY, SASL_MF_PLAINTEXT | SASL_MF_DICTIONARY};

static int parse_security(const params_t *p, param_id id, unsigned *out, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, id, &items);
    const char *bad = NULL;
    if (sasl_security_parse(items, n, out, &bad))
        return 0;
    param_where(p, id, err);
    buf_printf(err,
               "%s: unknown option \"%s\" (noanonymous, noplaintext, noactive, nodictionary, mutual_auth, "
               "forward_secrecy)\n",
               param_name(id), bad);
    return -1;
}

static void server_unref(sasl_server_t *s)
{
    if (--s->refs > 0)
        return;
    if (s->type == SASL_T_DOVECOT)
        sasl_dovecot_close(s);
    else
        sasl_moat_close(s);
    free(s->service);
    buf_free(&s->mechs);
    free(s);
}

int sasl_server_new(const params_t *p, struct event_base *base, pool_t *pool, sasl_server_t **out, buf_t *err)
{
    *out = NULL;
    if (!param_bool(p, PARAM_smtpd_sasl_auth_enable))
        return 0;
    const char *type = param_str(p, PARAM_smtpd_sasl_type);
    int t;
    if (str_ieq(type, "dovecot")) {
        t = SASL_T_DOVECOT;
    } else if (str_ieq(type, "moat")) {
        t = SASL_T_MOAT;
    } else if (str_ieq(type, "cyrus")) {
        param_where(p, PARAM_smtpd_sasl_type, err);
        buf_puts(err, "smtpd_sasl_type: cyrus SASL is not supported; use dovecot, or moat with "
                      "smtpd_sasl_password_maps\n");
        return -1;
    } else {
        param_where(p, PARAM_smtpd_sasl_type, err);
        buf_printf(err, "smtpd_sasl_type: unknown type \"%s\" (dovecot or moat)\n", type);
        return -1;
    }
    unsigned sec_plain = 0, sec_tls = 0;
    int bad = parse_security(p, PARAM_smtpd_sasl_security_options, &sec_plain, err);
    bad |= parse_security(p, PARAM_smtpd_sasl_tls_security_options, &sec_tls, err);
    if (bad)
        return -1;
    sasl_server_t *s = xcalloc(1, sizeof *s);
    s->refs = 1;
    s->type = t;
    s->base = base;
    s->pool = pool;
    s->sec_plain = sec_plain;
    s->sec_tls = sec_tls;
    s->service = xstrdup(param_str(p, PARAM_smtpd_sasl_service));
    int rc = t == SASL_T_DOVECOT ? sasl_dovecot_open(s, p, err) : sasl_moat_open(s, p, err);
    if (rc < 0) {
        server_unref(s);
        return -1;
    }
    *out = s;
    return 0;
}

void sasl_server_free(sasl_server_t **sp)
{
    if (!sp || !*sp)
        return;
    server_unref(*sp);
    *sp = NULL;
}

static size_t server_mechs(sasl_server_t *s, const char *const **names, const unsigned **flags)
{
    if (s->type == SASL_T_DOVECOT)
        return sasl_dovecot_mechs(s, names, flags);
    *names = moat_names;
    *flags = moat_flags;
    return ARRAY_LEN(moat_names);
}

const char *sasl_server_mechanisms(sasl_server_t *s, bool tls)
{
    const char *const *names;
    const unsigned *flags;
    size_t n = server_mechs(s, &names, &flags);
    unsigned sec = tls ? s->sec_tls : s->sec_plain;
    buf_reset(&s->mechs);
    for (size_t i = 0; i < n; i++) {
        if (!sasl_mech_allowed(flags[i], sec))
            continue;
        if (s->mechs.len)
            buf_putc(&s->mechs, ' ');
        buf_puts(&s->mechs, names[i]);
    }
    return buf_cstr(&s->mechs);
}

bool sasl_server_has_mechanism(sasl_server_t *s, const char *mech, bool tls)
{
    const char *const *names;
    const unsigned *flags;
    size_t n = server_mechs(s, &names, &flags);
    unsigned sec = tls ? s->sec_tls : s->sec_plain;
    for (size_t i = 0; i < n; i++)
        if (str_ieq(names[i], mech))
            return sasl_mech_allowed(flags[i], sec);
    return false;
}

/* ------------------------------------------------------------ exchanges */

static void conv_free(sasl_conv_t *c)
{
    if (c->srv->type == SASL_T_DOVECOT)
        sasl_dovecot_end(c);
    else
        sasl_moat_end(c);
    event_free(c->ev);
    /* The challenge and user are not secrets, but LOGIN's user was typed
     * next to a password: wipe what held client input. */
    if (c->login_user.data)
        explicit_bzero(c->login_user.data, c->login_user.cap);
    buf_free(&c->login_user);
    buf_free(&c->challenge);
    buf_free(&c->user);
    buf_free(&c->reason);
    buf_free(&c->tail);
    sasl_server_t *s = c->srv;
    free(c);
    server_unref(s);
}

static void conv_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sasl_conv_t *c = arg;
    if (!c->ready && c->srv->type == SASL_T_DOVECOT) {
        sasl_dovecot_timed_out(c);   /* stores a reply (or nothing when there is no request) */
        event_del(c->ev);            /* it is delivered now, not once more */
    }
    if (!c->ready)
        return;
    c->ready = false;
    sasl_reply_t r = {
        .status = c->status,
        .challenge = c->status == SASL_CONTINUE ? buf_cstr(&c->challenge) : NULL,
        .user = c->user.len || c->status == SASL_OK ? buf_cstr(&c->user) : NULL,
        .reason = c->status != SASL_CONTINUE && c->status != SASL_OK ? buf_cstr(&c->reason) : NULL,
    };
    if (c->status != SASL_CONTINUE)
        c->state = CV_DONE;
    c->in_callback = true;
    c->fn(c->arg, &r);
    c->in_callback = false;
    if (c->dead)
        conv_free(c);
}

void sasl_reply_later(sasl_conv_t *c, sasl_status_t st, const char *challenge, const char *user, const char *reason)
{
    c->status = st;
    buf_reset(&c->challenge);
    buf_reset(&c->user);
    buf_reset(&c->reason);
    if (challenge)
        buf_puts(&c->challenge, challenge);
    if (user)
        buf_puts(&c->user, user);
    if (reason)
        buf_puts(&c->reason, reason);
    c->ready = true;
    if (st != SASL_CONTINUE)
        c->state = CV_DONE;
    else
        c->state = CV_CLIENT;
    struct timeval now = {0, 0};
    event_add(c->ev, &now);
}

void sasl_conv_timeout(sasl_conv_t *c, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(c->ev, &tv);
}

void sasl_conv_untime(sasl_conv_t *c)
{
    if (!c->ready)
        event_del(c->ev);
}

sasl_conv_t *sasl_start(sasl_server_t *s, const char *mech, const char *initial, const sasl_peer_t *peer,
                        sasl_done_fn fn, void *arg)
{
    sasl_conv_t *c = xcalloc(1, sizeof *c);
    s->refs++;
    c->srv = s;
    c->fn = fn;
    c->arg = arg;
    c->tls = peer && peer->tls;
    c->ev = event_new(s->base, -1, 0, conv_event, c);
    if (!c->ev)
        log_panic("sasl: event_new failed");
    str_copy(c->mech, mech ? mech : "", sizeof c->mech);
    for (char *q = c->mech; *q; q++)
        if (*q >= 'a' && *q <= 'z')
            *q = (char)(*q - 32);
    if (!mech || strlen(mech) >= sizeof c->mech || !sasl_mech_name_ok(c->mech)) {
        sasl_reply_later(c, SASL_FAIL, NULL, NULL, "mechanism not available");
        return c;
    }
    if (s->type == SASL_T_DOVECOT) {
        sasl_dovecot_start(c, initial, peer);
        return c;
    }
    if (!sasl_server_has_mechanism(s, c->mech, c->tls)) {
        sasl_reply_later(c, SASL_FAIL, NULL, NULL, "mechanism not available");
        return c;
    }
    sasl_moat_start(c, initial);
    return c;
}

void sasl_step(sasl_conv_t *c, const char *response)
{
    if (c->state != CV_CLIENT || c->ready) {
        /* A caller that steps when no challenge is outstanding: refuse
         * rather than guess. */
        log_warn("smtpd", "sasl: step outside a challenge (mechanism %s)", c->mech);
        sasl_reply_later(c, SASL_TEMP, NULL, NULL, "internal error");
        return;
    }
    if (c->srv->type == SASL_T_DOVECOT)
        sasl_dovecot_step(c, response ? response : "");
    else
        sasl_moat_step(c, response ? response : "");
}

void sasl_end(sasl_conv_t **cp)
{
    if (!cp || !*cp)
        return;
    sasl_conv_t *c = *cp;
    *cp = NULL;
    if (c->in_callback) {
        c->dead = true;
        c->ready = false;
        return;
    }
    conv_free(c);
}
