/* Unit tests for src/core: buf, util, pool. */
#include "harness.h"

#include "core/buf.h"
#include "core/pool.h"
#include "core/util.h"

#include <event2/event.h>
#include <stdlib.h>

TEST(buf_basics)
{
    buf_t b = BUF_INIT;
    CHECK_STR(buf_cstr(&b), "");
    buf_puts(&b, "hello");
    buf_printf(&b, " %d %s", 42, "x");
    CHECK_STR(buf_cstr(&b), "hello 42 x");
    CHECK_INT(b.len, 10);
    buf_consume(&b, 6);
    CHECK_STR(buf_cstr(&b), "42 x");
    buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%04d", i);
    CHECK_INT(b.len, 4000);
    CHECK(b.data[b.len] == 0);
    char *s = buf_steal(&b);
    CHECK(b.data == NULL && b.len == 0);
    CHECK(strncmp(s, "00000001", 8) == 0);
    free(s);
    buf_free(&b);
}

TEST(str_helpers)
{
    char t[] = "  \tab c \r\n";
    CHECK_STR(str_trim(t), "ab c");
    CHECK(str_ieq("MAIL", "mail"));
    CHECK(str_istarts("MAIL FROM:<>", "mail from:"));
    char d[4];
    CHECK_INT(str_copy(d, "abcdef", sizeof d), 6);
    CHECK_STR(d, "abc");
}

typedef struct { int order[8]; int n; int done; } chain_state;
typedef struct { chain_state *st; int id; } chain_job;

static void chain_work(void *arg)
{
    chain_job *j = arg;
    j->st->order[j->st->n++] = j->id;   /* chained: never concurrent */
}

static void chain_done(void *arg)
{
    chain_job *j = arg;
    j->st->done++;
}

TEST(pool_chain_order)
{
    struct event_base *base = event_base_new();
    pool_t *p = pool_new(base, 3);
    chain_state st = {{0}, 0, 0};
    chain_job jobs[8];
    for (int i = 0; i < 8; i++) {
        jobs[i].st = &st;
        jobs[i].id = i;
        pool_submit(p, &st, chain_work, chain_done, &jobs[i]);
    }
    while (st.done < 8)
        event_base_loop(base, EVLOOP_ONCE);
    for (int i = 0; i < 8; i++)
        CHECK_INT(st.order[i], i);
    CHECK_INT(pool_pending(p), 0);
    pool_free(&p);
    CHECK(p == NULL);
    event_base_free(base);
}
