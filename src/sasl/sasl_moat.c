/*
 * sasl_moat: the built-in backend — PLAIN and LOGIN decoded here, the
 * password checked against smtpd_sasl_password_maps (user name →
 * crypt(3) hash, any table type, first table that knows the user wins).
 *
 * Owns: the open tables of one server (one configuration generation:
 * a reload builds a new server, which opens them again), the crypt
 * setting used for unknown users, and one crypt job per exchange that is
 * checking a password.  A job owns copies of what it needs; when its
 * exchange ends first, the job finishes alone and frees itself.
 *
 * Never: runs crypt on the event loop (a yescrypt hash costs
 * milliseconds; it runs on the worker pool and the answer comes back on
 * the loop), compares a password with anything but crypt's output (a
 * table value that is not a "$id$" hash is refused, loudly), lets the
 * time of an answer depend on whether the user exists (an unknown user
 * costs one crypt with the setting of the last real hash, or of a fixed
 * yescrypt hash before any), compares hashes in time that depends on
 * where they differ, or keeps a password after its job.
 */
#include "sasl/sasl-private.h"

#include "core/log.h"
#include "core/util.h"
#include "maps/maps.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

struct crypt_job {
    sasl_conv_t *conv;     /* NULL once the exchange ended */
    char *password;
    char *setting;         /* the user's hash, or the unknown-user setting */
    char *user;
    bool real;             /* setting is the user's own hash */
    bool match;
    bool bad_setting;      /* crypt refused the setting */
};

static const char login_user_prompt[] = "VXNlcm5hbWU6";   /* "Username:" */
static const char login_pass_prompt[] = "UGFzc3dvcmQ6";   /* "Password:" */

static void wipe_free(char **p)
{
    if (*p) {
        explicit_bzero(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

static void wipe_buf(buf_t *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    buf_reset(b);
}

/* Equal strings?  The time depends on the lengths only (public: they
 * follow from the hash scheme), never on where the bytes differ. */
static bool ct_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t n = la < lb ? la : lb;
    volatile unsigned char acc = la != lb;
    for (size_t i = 0; i < n; i++)
        acc |= (unsigned char)(a[i] ^ b[i]);
    return acc == 0;
}

static void job_work(void *arg)
{
    crypt_job_t *j = arg;
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    const char *out = crypt_rn(j->password, j->setting, cd, (int)sizeof *cd);
    if (!out || out[0] == '*')
        j->bad_setting = true;
    else if (j->real)
        j->match = ct_equal(out, j->setting);
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    wipe_free(&j->password);
}

static void job_free(crypt_job_t *j)
{
    wipe_free(&j->password);
    free(j->setting);
    free(j->user);
    free(j);
}

static void job_done(void *arg)
{
    crypt_job_t *j = arg;
    sasl_conv_t *c = j->conv;
    if (c) {
        sasl_server_t *s = c->srv;
        c->job = NULL;
        if (j->real && j->bad_setting) {
            log_warn("smtpd", "smtpd_sasl_password_maps: the hash of \"%s\" is not one crypt(3) accepts", j->user);
            sasl_reply_later(c, SASL_TEMP, NULL, NULL, "server configuration error");
        } else if (j->match) {
            sasl_reply_later(c, SASL_OK, NULL, j->user, NULL);
        } else {
            sasl_reply_later(c, SASL_FAIL, NULL, *j->user ? j->user : NULL, "authentication failure");
        }
        if (j->real && !j->bad_setting && strcmp(s->dummy, j->setting) != 0) {
            /* Unknown users cost what this table's users cost. */
            free(s->dummy);
            s->dummy = j->setting;
            j->setting = NULL;
        }
    }
    job_free(j);
}

/* The crypt(3) hash in a table value: white space trimmed, a Dovecot-style
 * "{CRYPT}" / "{SHA512-CRYPT}" ... scheme prefix tolerated.  NULL when
 * the value is not a "$id$..." hash (plaintext, DES, anything else). */
static const char *value_hash(char *v)
{
    v = str_trim(v);
    if (v[0] == '{') {
        char *close = strchr(v, '}');
        if (!close || close - v < 6 || !str_nieq(close - 5, "CRYPT", 5))
            return NULL;
        v = close + 1;
    }
    if (v[0] != '$')
        return NULL;
    for (const char *q = v; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            return NULL;
    return v;
}

static bool user_ok(const char *u)
{
    size_t n = strlen(u);
    if (n > 255)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f)
            return false;
    return true;
}

static void verify(sasl_conv_t *c, const char *user, const char *password)
{
    sasl_server_t *s = c->srv;
    if (!user_ok(user)) {
        sasl_reply_later(c, SASL_FAIL, NULL, NULL, "authentication failure");
        return;
    }
    buf_t val = BUF_INIT;
    const char *hash = NULL;
    for (size_t i = 0; *user && i < s->nmaps && !hash; i++) {
        map_status st = map_lookup(s->maps[i], user, &val, NULL);
        if (st == MAP_NOTFOUND)
            continue;
        if (st == MAP_TEMPFAIL) {
            log_warn("smtpd", "%s: lookup of \"%s\" failed: %s", map_name(s->maps[i]), user, buf_cstr(&val));
            wipe_buf(&val);
            buf_free(&val);
            sasl_reply_later(c, SASL_TEMP, NULL, NULL, "password table lookup failed");
            return;
        }
        hash = value_hash(val.data ? val.data : (char *)"");
        if (!hash) {
            log_warn("smtpd", "%s: the value for \"%s\" is not a crypt(3) hash; plaintext passwords are refused",
                     map_name(s->maps[i]), user);
            wipe_buf(&val);
            buf_free(&val);
            sasl_reply_later(c, SASL_TEMP, NULL, NULL, "server configuration error");
            return;
        }
    }
    if (!s->pool) {
        wipe_buf(&val);
        buf_free(&val);
        sasl_reply_later(c, SASL_TEMP, NULL, NULL, "server configuration error");
        return;
    }
    crypt_job_t *j = xcalloc(1, sizeof *j);
    j->conv = c;
    j->password = xstrdup(password);
    j->setting = xstrdup(hash ? hash : s->dummy);
    j->user = xstrdup(user);
    j->real = hash != NULL;
    wipe_buf(&val);
    buf_free(&val);
    c->job = j;
    c->state = CV_CRYPT;
    pool_submit(s->pool, NULL, job_work, job_done, j);
}

/* Decode a response; MALFORMED (and false) when it is not base64 or
 * holds a NUL where LOGIN allows none. */
static bool decode(sasl_conv_t *c, const char *b64, buf_t *out, bool nul_ok)
{
    if (!sasl_b64_decode(b64, out)) {
        sasl_reply_later(c, SASL_MALFORMED, NULL, NULL, "invalid base64 data");
        return false;
    }
    if (!nul_ok && memchr(out->data ? out->data : "", 0, out->len)) {
        sasl_reply_later(c, SASL_MALFORMED, NULL, NULL, "malformed LOGIN response");
        return false;
    }
    return true;
}

static void plain_response(sasl_conv_t *c, const char *b64)
{
    buf_t d = BUF_INIT;
    if (decode(c, b64, &d, true)) {
        const char *user = NULL, *pw = NULL;
        int rc = d.len ? sasl_plain_parse(d.data, d.len, &user, &pw) : -1;
        if (rc == -1)
            sasl_reply_later(c, SASL_MALFORMED, NULL, NULL, "malformed PLAIN response");
        else if (rc == -2)
            sasl_reply_later(c, SASL_FAIL, NULL, user_ok(user) ? user : NULL, "proxy authorization is not supported");
        else
            verify(c, user, pw);
    }
    wipe_buf(&d);
    buf_free(&d);
}

static void login_response(sasl_conv_t *c, const char *b64)
{
    buf_t d = BUF_INIT;
    if (c->step == 0) {
        if (decode(c, b64, &d, false)) {
            wipe_buf(&c->login_user);
            buf_append(&c->login_user, d.data ? d.data : "", d.len);
            c->step = 1;
            sasl_reply_later(c, SASL_CONTINUE, login_pass_prompt, NULL, NULL);
        }
    } else if (decode(c, b64, &d, false)) {
        verify(c, buf_cstr(&c->login_user), buf_cstr(&d));
    }
    wipe_buf(&d);
    buf_free(&d);
}

void sasl_moat_start(sasl_conv_t *c, const char *initial)
{
    c->step = 0;
    bool plain = strcmp(c->mech, "PLAIN") == 0;
    if (!initial) {
        sasl_reply_later(c, SASL_CONTINUE, plain ? "" : login_user_prompt, NULL, NULL);
        return;
    }
    if (plain)
        plain_response(c, initial);
    else
        login_response(c, initial);
}

void sasl_moat_step(sasl_conv_t *c, const char *response)
{
    if (strcmp(c->mech, "PLAIN") == 0)
        plain_response(c, response);
    else
        login_response(c, response);
}

void sasl_moat_end(sasl_conv_t *c)
{
    if (c->job) {
        c->job->conv = NULL;   /* it finishes on the pool and frees itself */
        c->job = NULL;
    }
}

int sasl_moat_open(sasl_server_t *s, const params_t *p, buf_t *err)
{
    const char *const *items;
    size_t n = param_list(p, PARAM_smtpd_sasl_password_maps, &items);
    if (n == 0) {
        param_where(p, PARAM_smtpd_sasl_type, err);
        buf_puts(err, "smtpd_sasl_type: moat needs smtpd_sasl_password_maps (tables of user name → crypt(3) hash)\n");
        return -1;
    }
    if (!s->base) {
        param_where(p, PARAM_smtpd_sasl_type, err);
        buf_puts(err, "smtpd_sasl_type: moat needs an event loop\n");
        return -1;
    }
    /* No pool: `moat config check` validates the tables; nothing runs. */
    const char *dir = param_str(p, PARAM_config_directory);
    s->maps = xcalloc(n, sizeof *s->maps);
    int errors = 0;
    buf_t e = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        buf_reset(&e);
        map_t *m = map_open(items[i], dir, &e);
        if (!m) {
            param_where_lines(p, PARAM_smtpd_sasl_password_maps, buf_cstr(&e), err);
            errors++;
            continue;
        }
        s->maps[s->nmaps++] = m;
    }
    buf_free(&e);
    if (errors)
        return -1;
    /* The unknown-user setting until a real hash has been seen: the
     * library's default scheme (yescrypt) at its default cost. */
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn(NULL, 0, NULL, 0, setting, (int)sizeof setting) &&
        !crypt_gensalt_rn("$6$", 0, NULL, 0, setting, (int)sizeof setting)) {
        param_where(p, PARAM_smtpd_sasl_type, err);
        buf_puts(err, "smtpd_sasl_type: crypt_gensalt failed: no usable crypt(3) scheme\n");
        return -1;
    }
    s->dummy = xstrdup(setting);
    return 0;
}

void sasl_moat_close(sasl_server_t *s)
{
    for (size_t i = 0; i < s->nmaps; i++)
        map_close(&s->maps[i]);
    free(s->maps);
    s->maps = NULL;
    s->nmaps = 0;
    free(s->dummy);
    s->dummy = NULL;
}
