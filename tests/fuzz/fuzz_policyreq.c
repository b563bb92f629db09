/*
 * fuzz_policyreq: the policy server's request parser (preq_feed) on
 * arbitrary bytes, as a policy client could send them, fed whole and in
 * two pieces split at a byte the input chooses: both ways must agree on
 * the outcome and the bytes used, a complete request must end at its
 * empty line, and every complete request goes on through the mapping to
 * the engine's state and back out as an action (which must be one line).
 */
#include "core/buf.h"
#include "smtp/policyd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Feed until a request completes or fails; the total bytes used. */
static int feed(preq_t *r, const char *in, size_t size, size_t cut, size_t *total)
{
    size_t used = 0;
    const char *why = NULL;
    *total = 0;
    int rc = preq_feed(r, in, cut, &used, &why);
    *total = used;
    if (rc == 0 && cut < size) {
        rc = preq_feed(r, in + cut, size - cut, &used, &why);
        *total += used;
    }
    if (rc == -1 && (!why || !*why))
        abort();
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t cut = data[0] % size;
    const char *in = (const char *)data + 1;
    size--;
    if (cut > size)
        cut = size;

    preq_t a, b;
    preq_init(&a);
    preq_init(&b);
    size_t ua = 0, ub = 0;
    int ra = feed(&a, in, size, size, &ua);
    int rb = feed(&b, in, size, cut, &ub);
    if (ra != rb || (ra != -1 && ua != ub))
        abort();
    if (ra == 0 && ua != size)
        abort();
    if (ra == 1) {
        if (ua == 0 || in[ua - 1] != '\n' || a.n > PREQ_ATTRS_MAX)
            abort();
        if (a.n != b.n)
            abort();
        preq_state_t ps;
        const char *why = NULL;
        if (preq_pstate(&a, "fuzz", &ps, &why) == 0) {
            if (!ps.st.client_addr || !ps.st.client_name || !ps.state)
                abort();
            verdict_t v;
            verdict_init(&v);
            v.status = V_REJECT;
            v.code = 554;
            buf_printf(&v.reply, "554 5.7.1 <%s>: Recipient address rejected: %s",
                       ps.st.recipient ? ps.st.recipient : "", ps.st.sender ? ps.st.sender : "");
            buf_t out = BUF_INIT;
            policyd_action(&v, &out);
            if (memchr(out.data, '\n', out.len) || memchr(out.data, '\r', out.len))
                abort();
            buf_free(&out);
            verdict_free(&v);
        } else if (!why) {
            abort();
        }
    }
    preq_free(&a);
    preq_free(&b);
    return 0;
}
