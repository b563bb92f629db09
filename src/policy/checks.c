/*
 * checks: the syntax judgements the restriction engine makes about HELO
 * names, address domains and address literals, with Postfix's rules (its
 * util/valid_hostname regression data is the reference: see
 * tests/unit/test_restrict.c), and the enhanced-status-code fix-up per
 * reply class.
 *
 * Pure functions over NUL-terminated text: no allocation, no locale
 * (ASCII classes by hand), never read past the terminator.
 */
#include "policy/restrict-private.h"

#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOSTNAME_MAX 255
#define LABEL_MAX 63

static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_xdigit(int c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

bool rs_valid_hostname(const char *name, bool wildcard, bool utf8)
{
    size_t len = strlen(name);
    if (len == 0 || len > HOSTNAME_MAX)
        return false;
    size_t label = 0;
    bool non_numeric = false;
    for (const char *cp = name; *cp; cp++) {
        unsigned char ch = (unsigned char)*cp;
        if (is_alpha(ch) || is_digit(ch) || ch == '_' || (utf8 && ch >= 0x80)) {
            if (++label > LABEL_MAX)
                return false;
            if (!is_digit(ch))
                non_numeric = true;
        } else if (ch == '.') {
            if (label == 0 || cp[1] == 0)
                return false;   /* misplaced delimiter */
            label = 0;
        } else if (ch == '-') {
            if (label == 0 || cp[1] == '.' || cp[1] == 0)
                return false;   /* misplaced hyphen */
            if (++label > LABEL_MAX)
                return false;
            non_numeric = true;
        } else if (ch == '*' && wildcard && cp == name && cp[1] == '.') {
            label = 1;          /* "*." : the first label only */
            non_numeric = true;
        } else {
            return false;
        }
    }
    /* "1.2.3.4" and "321" are addresses or garbage, never host names. */
    return non_numeric;
}

bool rs_valid_ipv4_hostaddr(const char *addr)
{
    if (!*addr)
        return false;
    bool in_octet = false;
    int count = 0, val = 0;
    for (const char *cp = addr; *cp; cp++) {
        unsigned char ch = (unsigned char)*cp;
        if (is_digit(ch)) {
            if (!in_octet) {
                in_octet = true;
                val = 0;
                count++;
            }
            val = val * 10 + (ch - '0');
            if (val > 255)
                return false;
        } else if (ch == '.') {
            if (!in_octet || cp[1] == 0)
                return false;   /* misplaced dot */
            /* 0.x.y.z is "this network", not a host; 0.0.0.0 is kept. */
            if (count == 1 && val == 0 && addr[strspn(addr, "0.")])
                return false;
            in_octet = false;
        } else {
            return false;
        }
    }
    return count == 4;
}

bool rs_valid_ipv6_hostaddr(const char *addr)
{
    size_t len = strlen(addr);
    if (len == 0 || len > 45)
        return false;
    int colons = 0;
    for (const char *cp = addr; *cp; cp++)
        colons += *cp == ':';
    if (colons < 2 || colons > 7)
        return false;
    const char *dbl = strstr(addr, "::");
    if (dbl && strstr(dbl + 1, "::"))
        return false;   /* two "::", or ":::" */
    if (addr[0] == ':' && addr[1] != ':')
        return false;   /* bad null first field */
    if (addr[len - 1] == ':' && addr[len - 2] != ':')
        return false;   /* bad null last field */
    const char *field = addr;
    for (;;) {
        const char *end = strchr(field, ':');
        size_t n = end ? (size_t)(end - field) : strlen(field);
        if (memchr(field, '.', n)) {
            /* IPv4 tail: the last field, with room for its 32 bits. */
            if (end || colons > 6)
                return false;
            return rs_valid_ipv4_hostaddr(field);
        }
        if (n > 4)
            return false;
        for (size_t i = 0; i < n; i++)
            if (!is_xdigit((unsigned char)field[i]))
                return false;
        if (!end)
            return true;
        field = end + 1;
    }
}

bool rs_valid_hostaddr(const char *addr)
{
    return strchr(addr, ':') ? rs_valid_ipv6_hostaddr(addr) : rs_valid_ipv4_hostaddr(addr);
}

bool rs_valid_mailhost_addr(const char *addr)
{
    if (str_istarts(addr, "IPv6:"))
        return rs_valid_ipv6_hostaddr(addr + 5);
    return rs_valid_ipv4_hostaddr(addr);
}

bool rs_dsn_fix(const char *dsn, const char *reply_class, char *out, size_t size)
{
    str_copy(out, dsn, size);
    /* Only address statuses (x.1.y) can be misleading. */
    if (!(dsn[0] && dsn[1] == '.' && dsn[2] == '1' && dsn[3] == '.' && is_digit((unsigned char)dsn[4])))
        return false;
    int detail = atoi(dsn + 4);
    int fixed = detail;
    char sub = '1';
    if (strcmp(reply_class, "Sender address") == 0) {
        static const int map[] = {0, 7, 8, 7, 7, 0, 7, 7, 8};   /* x.1.N -> x.1.map[N] */
        if (detail >= 1 && detail <= 8)
            fixed = map[detail];
    } else if (strcmp(reply_class, "Recipient address") == 0) {
        if (detail == 7)
            fixed = 3;
        else if (detail == 8)
            fixed = 2;
    } else {
        sub = '0';
        fixed = 0;
    }
    if (sub == '1' && fixed == detail)
        return false;
    snprintf(out, size, "%c.%c.%d", dsn[0], sub, fixed);
    return true;
}
