/*
 * access: see access.h.  Keys longer than ACCESS_KEY_MAX are skipped
 * (they cannot be in a table built from lines of sane length, and a
 * hostile address must not make us allocate).
 */
#include "policy/access.h"

#include "core/util.h"

#include <stdio.h>
#include <string.h>

#define ACCESS_KEY_MAX 1024

int access_keys_addr(const char *ip, access_key_fn fn, void *arg)
{
    char key[ACCESS_KEY_MAX];
    if (str_copy(key, ip, sizeof key) >= sizeof key || !*key)
        return 0;
    char delim = strchr(key, ':') ? ':' : '.';
    for (;;) {
        int rc = fn(key, arg);
        if (rc)
            return rc;
        char *last = strrchr(key, delim);
        if (!last || last == key)
            return 0;
        *last = 0;
    }
}

int access_keys_host(const char *host, bool parent, access_key_fn fn, void *arg)
{
    if (!*host || strlen(host) >= ACCESS_KEY_MAX)
        return 0;
    int rc = fn(host, arg);
    if (rc)
        return rc;
    for (const char *dot = strchr(host + 1, '.'); dot; dot = strchr(dot + 1, '.')) {
        if (!dot[1])
            break;
        rc = fn(parent ? dot + 1 : dot, arg);
        if (rc)
            return rc;
    }
    return 0;
}

int access_keys_email(const char *addr, const char *delimiters, bool parent,
                      const char *null_key, access_key_fn fn, void *arg)
{
    char key[ACCESS_KEY_MAX];
    if (!*addr)
        return fn(null_key, arg);
    const char *at = strrchr(addr, '@');
    size_t local_len = at ? (size_t)(at - addr) : strlen(addr);
    const char *domain = at ? at + 1 : "";
    if (strlen(addr) + 2 > sizeof key)
        return 0;

    /* The local part without its extension ("user" of "user+ext"). */
    size_t base_len = local_len;
    if (delimiters && *delimiters) {
        for (size_t i = 1; i < local_len; i++) {
            if (strchr(delimiters, addr[i])) {
                base_len = i;
                break;
            }
        }
    }
    int rc;
    if (at) {
        if ((rc = fn(addr, arg)))
            return rc;
        if (base_len < local_len) {
            snprintf(key, sizeof key, "%.*s@%s", (int)base_len, addr, domain);
            if ((rc = fn(key, arg)))
                return rc;
        }
        if (*domain && (rc = access_keys_host(domain, parent, fn, arg)))
            return rc;
    }
    snprintf(key, sizeof key, "%.*s@", (int)local_len, addr);
    if ((rc = fn(key, arg)))
        return rc;
    if (base_len < local_len) {
        snprintf(key, sizeof key, "%.*s@", (int)base_len, addr);
        if ((rc = fn(key, arg)))
            return rc;
    }
    return 0;
}
