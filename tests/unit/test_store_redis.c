/*
 * Tests for the state store's Redis backend against a real redis-server
 * (redis_testlib.h): the common suite, expiry as Redis reports it,
 * databases, a server that is down, comes back, or hangs (SIGSTOP), and
 * closing with requests in flight.  Skipped, saying why, only when
 * redis-server is not installed (`make test` installs it).
 */
#include "harness.h"
#include "redis_testlib.h"
#include "store_testlib.h"

static bool have_redis(const char *test)
{
    if (redis_test_available())
        return true;
    printf("skip %s: redis-server is not installed (scripts/deps.sh installs it)\n", test);
    return false;
}

TEST(store_redis_suite)
{
    if (!have_redis("store_redis_suite"))
        return;
    redis_test_t r = {0};
    REQUIRE(redis_test_start(&r, 0) == 0);
    store_suite(r.url);
    /* What the suite left behind is plain Redis data. */
    char out[128];
    CHECK(redis_test_cmd(&r, "GET suite:n", out, sizeof out) == 0);
    CHECK_STR(out, "-3");
    CHECK(redis_test_cmd(&r, "TTL suite:forever", out, sizeof out) == 0);
    CHECK_STR(out, ":-1");
    redis_test_cleanup(&r);
}

/* Redis expires entries itself; the store reports what Redis says. */
TEST(store_redis_expiry_and_databases)
{
    if (!have_redis("store_redis_expiry_and_databases"))
        return;
    redis_test_t r = {0};
    REQUIRE(redis_test_start(&r, 0) == 0);
    st_loop_t l;
    st_loop_init(&l);
    buf_t err = BUF_INIT, url3 = BUF_INIT;
    store_t *s0 = store_open(l.base, l.pool, r.url, &err);
    buf_printf(&url3, "redis://127.0.0.1:%d/3", r.port);
    store_t *s3 = store_open(l.base, l.pool, buf_cstr(&url3), &err);
    REQUIRE(s0 && s3);
    CHECK(s0 != s3);
    st_res_t x = {0};
    CHECK_INT(st_set(&l, s0, "k", "zero", 30, &x), ST_OK);
    CHECK_INT(st_set(&l, s3, "k", "three", 0, &x), ST_OK);
    CHECK_INT(st_get(&l, s0, "k", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "zero");
    CHECK(st_near(x.expires, (long long)time(NULL) + 30));
    CHECK_INT(st_get(&l, s3, "k", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "three");
    char out[64];
    CHECK(redis_test_cmd(&r, "TTL k", out, sizeof out) == 0);   /* db 0 */
    CHECK(out[0] == ':' && atoi(out + 1) > 0 && atoi(out + 1) <= 30);
    /* Let Redis expire it (a millisecond): gone for the store too. */
    CHECK(redis_test_cmd(&r, "PEXPIRE k 1", out, sizeof out) == 0);
    CHECK_STR(out, ":1");
    usleep(20000);
    CHECK_INT(st_get(&l, s0, "k", &x), ST_NOTFOUND);
    CHECK_INT(st_incr(&l, s0, "k", 2, 40, &x), ST_OK);
    CHECK_INT(x.num, 2);
    CHECK(redis_test_cmd(&r, "TTL k", out, sizeof out) == 0);
    CHECK(out[0] == ':' && atoi(out + 1) > 30 && atoi(out + 1) <= 40);
    /* Not a string: an error that names the key, not a crash. */
    CHECK(redis_test_cmd(&r, "LPUSH list x", out, sizeof out) == 0);
    CHECK_INT(st_get(&l, s0, "list", &x), ST_ERROR);
    CHECK(strstr(buf_cstr(&x.err), "list") != NULL);
    CHECK_INT(st_incr(&l, s0, "list", 1, 10, &x), ST_ERROR);
    /* An out-of-range database fails every request, saying why. */
    buf_t bad = BUF_INIT;
    buf_printf(&bad, "redis://127.0.0.1:%d/999", r.port);
    store_t *sb = store_open(l.base, l.pool, buf_cstr(&bad), &err);
    REQUIRE(sb);
    CHECK_INT(st_get(&l, sb, "k", &x), ST_ERROR);
    CHECK(strstr(buf_cstr(&x.err), "SELECT") != NULL);
    store_close(&sb);
    buf_free(&bad);
    store_close(&s0);
    store_close(&s3);
    st_res_free(&x);
    buf_free(&err);
    buf_free(&url3);
    st_loop_free(&l);
    redis_test_cleanup(&r);
}

/* Down: ST_ERROR at once, naming the server; back: works again (after
 * the backoff, skipped here on the test clock). */
TEST(store_redis_down_and_back)
{
    if (!have_redis("store_redis_down_and_back"))
        return;
    redis_test_t r = {0};
    REQUIRE(redis_test_start(&r, 0) == 0);
    st_loop_t l;
    st_loop_init(&l);
    buf_t err = BUF_INIT, want = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, r.url, &err);
    REQUIRE(s);
    buf_printf(&want, "redis 127.0.0.1:%d: ", r.port);
    st_res_t x = {0};
    CHECK_INT(st_set(&l, s, "k", "v", 0, &x), ST_OK);
    redis_test_stop(&r);
    st_run_for(&l, 0.1);   /* the loop sees the connection close */
    for (int i = 0; i < 5; i++) {
        CHECK_INT(st_get(&l, s, "k", &x), ST_ERROR);
        CHECK(strncmp(buf_cstr(&x.err), buf_cstr(&want), want.len) == 0);
    }
    CHECK(strstr(buf_cstr(&x.err), "refused") != NULL);
    /* every kind of request, scan included */
    CHECK_INT(st_incr(&l, s, "n", 1, 10, &x), ST_ERROR);
    CHECK_INT(st_del(&l, s, "k", &x), ST_ERROR);
    st_scan_t sc = {0};
    CHECK_INT(st_scan(&l, s, "", &sc), ST_ERROR);
    CHECK_INT(sc.entries, 0);
    st_scan_free(&sc);
    /* A store opened while the server is down opens all the same. */
    buf_t other = BUF_INIT;
    buf_printf(&other, "redis://127.0.0.1:%d/1", r.port);
    store_t *s1 = store_open(l.base, l.pool, buf_cstr(&other), &err);
    CHECK(s1 != NULL);
    if (s1)
        CHECK_INT(st_get(&l, s1, "k", &x), ST_ERROR);
    REQUIRE(redis_test_start(&r, r.port) == 0);
    store_test_advance(60);
    CHECK_INT(st_set(&l, s, "k", "again", 0, &x), ST_OK);
    CHECK_INT(st_get(&l, s, "k", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "again");
    if (s1)
        CHECK_INT(st_get(&l, s1, "k", &x), ST_NOTFOUND);
    /* A restart while idle: the next request reconnects at once. */
    redis_test_stop(&r);
    REQUIRE(redis_test_start(&r, r.port) == 0);
    st_run_for(&l, 0.1);
    CHECK_INT(st_set(&l, s, "k", "third", 0, &x), ST_OK);
    store_test_advance(-60);
    store_close(&s1);
    store_close(&s);
    buf_free(&other);
    st_res_free(&x);
    buf_free(&err);
    buf_free(&want);
    st_loop_free(&l);
    redis_test_cleanup(&r);
}

/* A hung server (SIGSTOP): requests answer ST_ERROR after the timeout;
 * once it runs again, requests work again. */
TEST(store_redis_hung_server)
{
    if (!have_redis("store_redis_hung_server"))
        return;
    redis_test_t r = {0};
    REQUIRE(redis_test_start(&r, 0) == 0);
    st_loop_t l;
    st_loop_init(&l);
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, r.url, &err);
    REQUIRE(s);
    st_res_t x = {0}, y = {0};
    CHECK_INT(st_set(&l, s, "k", "v", 0, &x), ST_OK);
    /* A short deadline only for what goes to the stopped server, so a
     * busy test machine cannot make the live requests time out. */
    store_test_redis_timeout(300);
    redis_test_pause(&r);
    /* two requests in flight: both fail */
    st_res_reset(&y);
    store_get(s, "k", st_res_cb, &y);
    CHECK_INT(st_get(&l, s, "k", &x), ST_ERROR);
    CHECK(strstr(buf_cstr(&x.err), "no reply") != NULL);
    st_run_until(&l, &y.calls, 1, 10);
    CHECK_INT(y.calls, 1);
    CHECK_INT(y.st, ST_ERROR);
    /* a reconnect to the stopped server hangs too */
    CHECK_INT(st_get(&l, s, "k", &x), ST_ERROR);
    redis_test_resume(&r);
    store_test_redis_timeout(0);
    store_test_advance(60);
    CHECK_INT(st_get(&l, s, "k", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "v");
    store_test_advance(-60);
    /* closing with a request stuck on a stopped server: no callback */
    store_test_redis_timeout(300);
    redis_test_pause(&r);
    st_res_reset(&y);
    store_get(s, "k", st_res_cb, &y);
    store_incr(s, "n", 1, 5, st_res_cb, &y);
    store_close(&s);
    st_run_for(&l, 0.5);
    CHECK_INT(y.calls, 0);
    redis_test_resume(&r);
    store_test_redis_timeout(0);
    st_res_free(&x);
    st_res_free(&y);
    buf_free(&err);
    st_loop_free(&l);
    redis_test_cleanup(&r);
}

/* Closing while requests (a scan among them) wait on a live server. */
TEST(store_redis_close_in_flight)
{
    if (!have_redis("store_redis_close_in_flight"))
        return;
    redis_test_t r = {0};
    REQUIRE(redis_test_start(&r, 0) == 0);
    st_loop_t l;
    st_loop_init(&l);
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, r.url, &err);
    REQUIRE(s);
    st_res_t x = {0}, y = {0};
    st_scan_t sc = {0};
    CHECK_INT(st_set(&l, s, "a", "1", 0, &x), ST_OK);
    st_res_reset(&y);
    store_get(s, "a", st_res_cb, &y);
    store_set(s, "b", "2", 1, 0, st_res_cb, &y);
    store_scan(s, "", st_scan_each, st_scan_done, &sc);
    store_get(s, "", st_res_cb, &y);
    store_close(&s);
    st_run_for(&l, 0.3);
    CHECK_INT(y.calls, 0);
    CHECK_INT(sc.res.calls, 0);
    CHECK_INT(sc.entries, 0);
    st_scan_free(&sc);
    st_res_free(&x);
    st_res_free(&y);
    buf_free(&err);
    st_loop_free(&l);
    redis_test_cleanup(&r);
}

/* A password in the URL: AUTH before SELECT; a wrong one fails every
 * request with the server's reason. */
TEST(store_redis_auth)
{
    if (!have_redis("store_redis_auth"))
        return;
    redis_test_t r = {0};
    REQUIRE(redis_test_start(&r, 0) == 0);
    char out[64];
    REQUIRE(redis_test_cmd(&r, "CONFIG SET requirepass s3cret", out, sizeof out) == 0);
    CHECK_STR(out, "+OK");
    st_loop_t l;
    st_loop_init(&l);
    buf_t err = BUF_INIT, good = BUF_INIT, bad = BUF_INIT;
    buf_printf(&good, "redis://:s3cret@127.0.0.1:%d/2", r.port);
    buf_printf(&bad, "redis://default:wrong@127.0.0.1:%d/2", r.port);
    store_t *sg = store_open(l.base, l.pool, buf_cstr(&good), &err);
    store_t *sb = store_open(l.base, l.pool, buf_cstr(&bad), &err);
    store_t *sn = store_open(l.base, l.pool, r.url, &err);
    REQUIRE(sg && sb && sn);
    st_res_t x = {0};
    CHECK_INT(st_set(&l, sg, "k", "v", 0, &x), ST_OK);
    CHECK_INT(st_get(&l, sg, "k", &x), ST_OK);
    CHECK_INT(st_get(&l, sb, "k", &x), ST_ERROR);
    CHECK(strstr(buf_cstr(&x.err), "AUTH") != NULL);
    CHECK(strstr(buf_cstr(&x.err), "wrong") == NULL);   /* never the password */
    CHECK_INT(st_get(&l, sn, "k", &x), ST_ERROR);
    store_close(&sg);
    store_close(&sb);
    store_close(&sn);
    st_res_free(&x);
    buf_free(&err);
    buf_free(&good);
    buf_free(&bad);
    st_loop_free(&l);
    redis_test_cleanup(&r);
}
