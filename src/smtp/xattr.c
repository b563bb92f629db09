/*
 * xattr: XFORWARD / XCLIENT argument parsing (see xattr.h).
 *
 * Owns nothing beyond the caller's xattrs_t.  Never: accept a value the
 * session would have to check again, echo a control character in a
 * reply, or read past the terminating NUL.  Every reply it builds is a
 * 501 with enhanced code 5.5.4, as Postfix's.
 */
#include "smtp/xattr.h"

#include "core/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[XA__COUNT] = {
    [XA_NAME] = "NAME",       [XA_ADDR] = "ADDR",     [XA_PORT] = "PORT",
    [XA_PROTO] = "PROTO",     [XA_HELO] = "HELO",     [XA_SOURCE] = "SOURCE",
    [XA_IDENT] = "IDENT",     [XA_REVERSE_NAME] = "REVERSE_NAME",
    [XA_LOGIN] = "LOGIN",     [XA_DESTADDR] = "DESTADDR", [XA_DESTPORT] = "DESTPORT",
};

/* Which attributes each command takes (the EHLO keyword lists below). */
#define BIT(id) (1u << (id))
static const unsigned allowed[2] = {
    [XCMD_XFORWARD] = BIT(XA_NAME) | BIT(XA_ADDR) | BIT(XA_PROTO) | BIT(XA_HELO) | BIT(XA_SOURCE) | BIT(XA_PORT)
                      | BIT(XA_IDENT),
    [XCMD_XCLIENT] = BIT(XA_NAME) | BIT(XA_ADDR) | BIT(XA_PROTO) | BIT(XA_HELO) | BIT(XA_REVERSE_NAME)
                     | BIT(XA_PORT) | BIT(XA_LOGIN) | BIT(XA_DESTADDR) | BIT(XA_DESTPORT),
};

const char *xattr_keywords(xcmd_t cmd)
{
    return cmd == XCMD_XFORWARD ? "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"
                                : "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT";
}

const char *xattr_name(xattr_id id)
{
    return (unsigned)id < XA__COUNT ? names[id] : "?";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int xtext_decode(const char *in, char *out, size_t size)
{
    size_t n = 0;
    if (size == 0)
        return -1;
    for (const char *p = in; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '+') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi * 16 + lo);
            if (c == 0)
                return -1;
            p += 2;
        } else if (c < '!' || c > '~' || c == '=') {
            return -1;
        }
        if (n + 1 >= size)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = 0;
    return 0;
}

bool xattr_valid_hostname(const char *s)
{
    size_t len = strlen(s), label = 0;
    bool non_digit = false;
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char c = s[i];
        if (c == '.' || c == 0) {
            /* a label ends: not empty, no hyphen at either end */
            if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)c) && c != '-' && c != '_')
            return false;
        if (!isdigit((unsigned char)c))
            non_digit = true;
        label++;
    }
    return non_digit;
}

/* "192.0.2.1", "2001:db8::1" or "IPv6:2001:db8::1" -> normalized text. */
static bool parse_addr(const char *v, char *out, size_t size)
{
    unsigned char bin[sizeof(struct in6_addr)];
    if (str_istarts(v, "IPv6:")) {
        if (inet_pton(AF_INET6, v + 5, bin) != 1)
            return false;
        return inet_ntop(AF_INET6, bin, out, (socklen_t)size) != NULL;
    }
    if (inet_pton(AF_INET, v, bin) == 1)
        return inet_ntop(AF_INET, bin, out, (socklen_t)size) != NULL;
    if (inet_pton(AF_INET6, v, bin) == 1)
        return inet_ntop(AF_INET6, bin, out, (socklen_t)size) != NULL;
    return false;
}

static bool valid_port(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 5 || !str_all_digits(v))
        return false;
    return strtol(v, NULL, 10) <= 65535;
}

/* Control bytes and non-ASCII become '?' (Postfix's printable()); with
 * neuter, also white space and the characters that would confuse a
 * Received: header or a log line. */
static void censor(char *v, bool neuter)
{
    for (char *p = v; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c > 0x7e || (neuter && strchr(" <>()\\\";@", c)))
            *p = '?';
    }
}

static void upper(char *s)
{
    for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
}

static void bad_syntax(buf_t *reply, const char *what, const char *value)
{
    char shown[XA_VALUE_MAX + 1];
    str_copy(shown, value, sizeof shown);
    censor(shown, false);
    buf_printf(reply, "501 5.5.4 Bad %s syntax: %s", what, shown);
}

/* Check and store one decoded value. */
static int take(xcmd_t cmd, xattr_id id, char *v, xattrs_t *out, buf_t *reply)
{
    char *dst = out->value[id];
    out->given |= BIT(id);
    dst[0] = 0;
    if (str_ieq(v, "[UNAVAILABLE]")) {
        out->status[id] = XA_UNAVAILABLE;
        return 0;
    }
    if (str_ieq(v, "[TEMPUNAVAIL]") && cmd == XCMD_XCLIENT
        && (id == XA_NAME || id == XA_REVERSE_NAME)) {
        out->status[id] = XA_TEMPUNAVAIL;
        return 0;
    }
    out->status[id] = XA_AVAILABLE;
    switch (id) {
    case XA_NAME:
    case XA_REVERSE_NAME:
        if (!xattr_valid_hostname(v))
            goto bad;
        str_copy(dst, v, XA_VALUE_MAX + 1);
        return 0;
    case XA_ADDR:
    case XA_DESTADDR:
        if (!parse_addr(v, dst, XA_VALUE_MAX + 1))
            goto bad;
        return 0;
    case XA_PORT:
    case XA_DESTPORT:
        if (!valid_port(v))
            goto bad;
        str_copy(dst, v, XA_VALUE_MAX + 1);
        return 0;
    case XA_PROTO:
        if (cmd == XCMD_XCLIENT) {
            if (!str_ieq(v, "SMTP") && !str_ieq(v, "ESMTP"))
                goto bad;
            str_copy(dst, v, XA_VALUE_MAX + 1);
            upper(dst);
            return 0;
        }
        if (strlen(v) > 64)
            goto bad;
        censor(v, true);
        str_copy(dst, v, XA_VALUE_MAX + 1);
        return 0;
    case XA_SOURCE:
        if (!str_ieq(v, "LOCAL") && !str_ieq(v, "REMOTE"))
            goto bad;
        str_copy(dst, v, XA_VALUE_MAX + 1);
        upper(dst);
        return 0;
    case XA_HELO:
    case XA_IDENT:
        censor(v, true);
        str_copy(dst, v, XA_VALUE_MAX + 1);
        return 0;
    case XA_LOGIN:
        censor(v, false);
        for (char *p = v; *p; p++)
            if (*p == ' ')
                *p = '?';
        str_copy(dst, v, XA_VALUE_MAX + 1);
        return 0;
    default:
        break;
    }
bad:
    out->status[id] = XA_UNAVAILABLE;
    dst[0] = 0;
    bad_syntax(reply, names[id], v);
    return -1;
}

int xattr_parse(xcmd_t cmd, const char *args, xattrs_t *out, buf_t *reply)
{
    const char *verb = cmd == XCMD_XFORWARD ? "XFORWARD" : "XCLIENT";
    memset(out, 0, sizeof *out);
    for (int i = 0; i < XA__COUNT; i++)
        out->status[i] = XA_UNAVAILABLE;
    const char *p = args;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) {
        buf_printf(reply, "501 5.5.4 Syntax: %s attribute=value...", verb);
        return -1;
    }
    while (*p) {
        const char *tok = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        size_t toklen = (size_t)(p - tok);
        while (*p == ' ' || *p == '\t')
            p++;
        const char *eq = memchr(tok, '=', toklen);
        if (!eq || eq + 1 == tok + toklen || eq == tok) {
            buf_puts(reply, "501 5.5.4 Error: attribute=value expected");
            return -1;
        }
        size_t namelen = (size_t)(eq - tok), rawlen = toklen - namelen - 1;
        if (rawlen > XA_VALUE_MAX) {
            buf_puts(reply, "501 5.5.4 Error: attribute value too long");
            return -1;
        }
        char name[32], raw[XA_VALUE_MAX + 1], val[XA_VALUE_MAX + 1];
        memcpy(raw, eq + 1, rawlen);
        raw[rawlen] = 0;
        int id = -1;
        if (namelen < sizeof name) {
            memcpy(name, tok, namelen);
            name[namelen] = 0;
            for (int k = 0; k < XA__COUNT; k++)
                if ((allowed[cmd] & BIT(k)) && str_ieq(names[k], name))
                    id = k;
        }
        if (id < 0) {
            char shown[64];
            size_t n = namelen < sizeof shown - 1 ? namelen : sizeof shown - 1;
            memcpy(shown, tok, n);
            shown[n] = 0;
            censor(shown, false);
            buf_printf(reply, "501 5.5.4 Bad %s attribute name: %s", verb, shown);
            return -1;
        }
        str_copy(name, names[id], sizeof name);
        if (xtext_decode(raw, val, sizeof val) != 0) {
            bad_syntax(reply, name, raw);
            return -1;
        }
        if (take(cmd, (xattr_id)id, val, out, reply) != 0)
            return -1;
    }
    return 0;
}
