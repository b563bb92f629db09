/*
 * fuzz_policyreply: the policy delegation client's reply parser
 * (policysvc_reply_parse) on arbitrary bytes, as a policy server could
 * send them.  A complete reply must end at an empty line inside the
 * input, hold an action without line ends, and be reported complete at
 * no earlier prefix; an unfinished one must be within the size limit.
 * The action then goes through the UTF-8 check and back out as a request
 * attribute, which must stay one line.
 */
#include "core/buf.h"
#include "policy/action.h"
#include "policy/policysvc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    buf_t action = BUF_INIT, attr = BUF_INIT;
    size_t used = 0;
    bool has = false;
    const char *why = NULL;
    int rc = policysvc_reply_parse(in, size, &used, &action, &has, &why);
    if (rc < -1 || rc > 1)
        abort();
    if (rc == -1 && (!why || !*why))
        abort();
    if (rc == 0 && size > POLICYSVC_REPLY_MAX)
        abort();
    if (rc == 1) {
        if (used == 0 || used > size || used > POLICYSVC_REPLY_MAX || in[used - 1] != '\n')
            abort();
        if (used >= 2 && !(in[used - 2] == '\n' || (in[used - 2] == '\r' && (used < 3 || in[used - 3] == '\n'))))
            abort();
        if (has && (memchr(action.data, '\n', action.len) || action.len >= used))
            abort();
        if (!has && action.len)
            abort();
        /* no shorter prefix is a complete reply */
        size_t cuts[] = {0, used / 2, used - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            buf_t a2 = BUF_INIT;
            size_t u2 = 0;
            bool h2;
            const char *w2 = NULL;
            if (policysvc_reply_parse(in, cuts[i], &u2, &a2, &h2, &w2) != 0)
                abort();
            buf_free(&a2);
        }
        if (has) {
            (void)policysvc_valid_utf8(buf_cstr(&action));
            action_t a;
            action_parse(buf_cstr(&action), &a);
            policysvc_attr(&attr, "action", buf_cstr(&action));
            const char *nl = memchr(attr.data, '\n', attr.len);
            if (!nl || (size_t)(nl - attr.data) != attr.len - 1)
                abort();
        }
    }
    buf_free(&action);
    buf_free(&attr);
    return 0;
}
