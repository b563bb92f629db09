/*
 * Tests for the state store's front (specs, the registry, delivery) and
 * its LMDB backend, on a real loop and pool: the common suite, expiry on a
 * test clock, the sweep, a full map, reopening while a job runs, and a
 * second process sharing the directory.
 */
#include "harness.h"
#include "queue_testlib.h"
#include "store_testlib.h"

#include <lmdb.h>
#include <sys/wait.h>

static char *tmpdir(void)
{
    char t[] = "/tmp/moat-store-XXXXXX";
    return xstrdup(mkdtemp(t));
}

static char *lmdb_spec(const char *dir, const char *sub)
{
    buf_t b = BUF_INIT;
    buf_printf(&b, "lmdb:%s/%s", dir, sub);
    return buf_steal(&b);
}

TEST(store_lmdb_suite)
{
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "state");
    store_suite(spec);
    /* The directory holds LMDB's two files, nothing else. */
    buf_t p = BUF_INIT;
    buf_printf(&p, "%s/state", dir);
    CHECK_INT(list_dir(buf_cstr(&p), NULL), 2);
    buf_free(&p);
    free(spec);
    rm_rf(dir);
    free(dir);
}

TEST(store_bad_specs)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    static const char *const bad[] = {
        "", "state", "hash:/x", "lmdb:", "redis://", "redis://:6379/0", "redis://h:0/0",
        "redis://h:65536", "redis://h:12x", "redis://h/x", "redis://h/-1", "redis://[::1/0",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        buf_t err = BUF_INIT;
        store_t *s = store_open(l.base, l.pool, bad[i], &err);
        CHECK(s == NULL);
        CHECK(err.len > 0);
        if (s)
            fprintf(stderr, "accepted bad spec \"%s\"\n", bad[i]);
        store_close(&s);
        buf_free(&err);
    }
    /* A file where the directory should be. */
    buf_t path = BUF_INIT, err = BUF_INIT;
    buf_printf(&path, "lmdb:%s/file", dir);
    FILE *f = fopen(buf_cstr(&path) + 5, "w");
    REQUIRE(f);
    fclose(f);
    CHECK(store_open(l.base, l.pool, buf_cstr(&path), &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "lmdb:") != NULL);
    /* An LMDB environment that is not a moat state store. */
    buf_reset(&path);
    buf_reset(&err);
    buf_printf(&path, "%s/other", dir);
    mkdir_p(buf_cstr(&path), 0700);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    REQUIRE(mdb_env_create(&env) == 0);
    REQUIRE(mdb_env_open(env, buf_cstr(&path), 0, 0600) == 0);
    REQUIRE(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    REQUIRE(mdb_dbi_open(txn, NULL, 0, &dbi) == 0);
    MDB_val k = {3, "key"}, v = {3, "val"};
    REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    buf_t spec = BUF_INIT;
    buf_printf(&spec, "lmdb:%s", buf_cstr(&path));
    CHECK(store_open(l.base, l.pool, buf_cstr(&spec), &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "not moat's state store") != NULL);
    buf_free(&spec);
    buf_free(&path);
    buf_free(&err);
    rm_rf(dir);
    free(dir);
    st_loop_free(&l);
}

/* Different spellings of one directory are one store; the spec given
 * first is the one store_spec() reports. */
TEST(store_lmdb_one_per_directory)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    buf_t a = BUF_INIT, b = BUF_INIT, err = BUF_INIT;
    buf_printf(&a, "lmdb:%s/st", dir);
    buf_printf(&b, "lmdb:%s/./st/", dir);
    store_t *s1 = store_open(l.base, l.pool, buf_cstr(&a), &err);
    store_t *s2 = store_open(l.base, l.pool, buf_cstr(&b), &err);
    REQUIRE(s1 && s2);
    CHECK(s1 == s2);
    CHECK_STR(store_spec(s2), buf_cstr(&a));
    /* another loop may not borrow it */
    struct event_base *other = event_base_new();
    CHECK(store_open(other, l.pool, buf_cstr(&a), &err) == NULL);
    CHECK(strstr(buf_cstr(&err), "another event loop") != NULL);
    event_base_free(other);
    store_close(&s1);
    st_res_t x = {0};
    CHECK_INT(st_set(&l, s2, "k", "v", 0, &x), ST_OK);
    store_close(&s2);
    st_res_free(&x);
    buf_free(&a);
    buf_free(&b);
    buf_free(&err);
    st_loop_free(&l);
    rm_rf(dir);
    free(dir);
}

/* Expiry on the test clock: an expired entry reads as not found, is
 * skipped by scans, restarts a counter, and the sweep deletes it. */
TEST(store_lmdb_expiry_and_sweep)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "state");
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    st_res_t x = {0};
    st_scan_t sc = {0};
    CHECK_INT(st_set(&l, s, "exp:short", "1", 5, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "exp:long", "2", 500, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "exp:never", "3", 0, &x), ST_OK);
    CHECK_INT(st_incr(&l, s, "exp:count", 5, 5, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "exp:del", "4", 5, &x), ST_OK);
    CHECK_INT(store_test_entries(s), 5);
    /* Not yet: a ttl is at least that many seconds. */
    store_test_advance(4);
    CHECK_INT(st_get(&l, s, "exp:short", &x), ST_OK);
    store_test_advance(3);
    CHECK_INT(st_get(&l, s, "exp:short", &x), ST_NOTFOUND);
    CHECK_INT(st_get(&l, s, "exp:long", &x), ST_OK);
    CHECK_INT(st_get(&l, s, "exp:never", &x), ST_OK);
    CHECK_INT(st_scan(&l, s, "exp:", &sc), ST_OK);
    CHECK_STR(buf_cstr(&sc.seen), "exp:long=2;exp:never=3;");
    CHECK_INT(st_del(&l, s, "exp:del", &x), ST_NOTFOUND);
    /* an expired counter starts again, with the new ttl */
    CHECK_INT(st_incr(&l, s, "exp:count", 1, 60, &x), ST_OK);
    CHECK_INT(x.num, 1);
    CHECK_INT(st_get(&l, s, "exp:count", &x), ST_OK);
    CHECK(st_near(x.expires, (long long)time(NULL) + 7 + 60));
    /* The expired ones are still there until the sweep. */
    CHECK_INT(store_test_entries(s), 4);
    store_test_sweep(s);
    double end = now_mono() + 10;
    while (store_test_entries(s) != 3 && now_mono() < end)
        st_run_for(&l, 0.02);
    CHECK_INT(store_test_entries(s), 3);
    store_test_advance(1000);
    store_test_sweep(s);
    end = now_mono() + 10;
    while (store_test_entries(s) != 1 && now_mono() < end)
        st_run_for(&l, 0.02);
    CHECK_INT(store_test_entries(s), 1);
    CHECK_INT(st_get(&l, s, "exp:never", &x), ST_OK);
    store_test_advance(-1007);
    store_close(&s);
    st_res_free(&x);
    st_scan_free(&sc);
    buf_free(&err);
    st_loop_free(&l);
    free(spec);
    rm_rf(dir);
    free(dir);
}

/* The sweep works in chunks of 10,000 entries: more than one chunk. */
TEST(store_lmdb_sweep_chunks)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "state");
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    st_res_t w = {0};
    char key[32];
    const int n = 25000;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "chunk:%06d", i);
        store_set(s, key, "x", 1, i % 2 ? 0 : 10, st_res_cb, &w);
    }
    st_run_until(&l, &w.calls, n, 120);
    CHECK_INT(w.calls, n);
    CHECK_INT(store_test_entries(s), n);
    store_test_advance(100);
    store_test_sweep(s);
    double end = now_mono() + 60;
    while (store_test_entries(s) != n / 2 && now_mono() < end)
        st_run_for(&l, 0.02);
    CHECK_INT(store_test_entries(s), n / 2);
    store_test_advance(-100);
    store_close(&s);
    st_res_free(&w);
    buf_free(&err);
    st_loop_free(&l);
    free(spec);
    rm_rf(dir);
    free(dir);
}

/* A store whose map is full answers ST_ERROR, saying so. */
TEST(store_lmdb_map_full)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "small");
    buf_t err = BUF_INIT;
    store_test_lmdb_mapsize(256 * 1024);
    store_t *s = store_open(l.base, l.pool, spec, &err);
    store_test_lmdb_mapsize(0);
    REQUIRE(s);
    st_res_t x = {0};
    char key[32], val[2000];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = 0;
    int i;
    for (i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "fill:%d", i);
        if (st_set(&l, s, key, val, 0, &x) != ST_OK)
            break;
    }
    CHECK(i < 1000);
    CHECK_INT(x.st, ST_ERROR);
    CHECK(strstr(buf_cstr(&x.err), "full") != NULL);
    /* reads still work, and so do writes once room is made */
    CHECK_INT(st_get(&l, s, "fill:0", &x), ST_OK);
    CHECK_INT(st_del(&l, s, "fill:0", &x), ST_OK);
    CHECK_INT(st_del(&l, s, "fill:1", &x), ST_OK);
    CHECK_INT(st_set(&l, s, "fill:new", "small", 0, &x), ST_OK);
    store_close(&s);
    st_res_free(&x);
    buf_free(&err);
    st_loop_free(&l);
    free(spec);
    rm_rf(dir);
    free(dir);
}

/* The last close while a pool job runs, then an open of the same spec
 * before the job is back: the store is revived, not opened twice. */
TEST(store_lmdb_reopen_while_busy)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "state");
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    st_res_t x = {0}, late = {0};
    CHECK_INT(st_set(&l, s, "k", "v", 0, &x), ST_OK);
    store_get(s, "k", st_res_cb, &late);
    store_t *old = s;
    store_close(&s);
    s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    CHECK(s == old);   /* the job was still out: the same store */
    CHECK_INT(st_get(&l, s, "k", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "v");
    CHECK_INT(late.calls, 0);
    store_close(&s);
    /* and a fresh open after everything settled */
    st_run_for(&l, 0.1);
    s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    CHECK_INT(st_get(&l, s, "k", &x), ST_OK);
    store_close(&s);
    st_res_free(&x);
    st_res_free(&late);
    buf_free(&err);
    st_loop_free(&l);
    free(spec);
    rm_rf(dir);
    free(dir);
}

/* Closing (and cancelling) from inside callbacks. */
static store_req_t *cancel_me;
static store_t *close_me;
static void close_in_cb(void *arg, const store_result_t *r)
{
    int *n = arg;
    (*n)++;
    store_cancel(cancel_me);
    store_close(&close_me);
}

static void close_in_each(void *arg, const char *key, const char *value, size_t len, long long expires)
{
    int *n = arg;
    (*n)++;
    store_close(&close_me);
}

static void count_done(void *arg, const store_result_t *r)
{
    int *n = arg;
    *n += 1000;
}

TEST(store_close_inside_callbacks)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "state");
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    st_res_t x = {0}, other = {0};
    CHECK_INT(st_set(&l, s, "a:1", "1", 0, &x), ST_OK);
    CHECK_INT(st_set(&l, s, "a:2", "2", 0, &x), ST_OK);
    /* Two immediate errors finish together; the first callback cancels
     * the second and closes the store. */
    int n = 0;
    close_me = s;
    store_get(s, "", close_in_cb, &n);
    cancel_me = store_get(s, "", st_res_cb, &other);
    st_run_for(&l, 0.2);
    CHECK_INT(n, 1);
    CHECK_INT(other.calls, 0);
    CHECK(close_me == NULL);
    /* each() closes the store: no more entries, no done. */
    s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    close_me = s;
    n = 0;
    store_scan(s, "a:", close_in_each, count_done, &n);
    st_run_for(&l, 0.2);
    CHECK_INT(n, 1);
    st_res_free(&x);
    st_res_free(&other);
    buf_free(&err);
    st_loop_free(&l);
    free(spec);
    rm_rf(dir);
    free(dir);
}

/* Another process (a fork, with its own loop and pool) shares the
 * directory: each sees the other's writes. */
TEST(store_lmdb_two_processes)
{
    st_loop_t l;
    st_loop_init(&l);
    char *dir = tmpdir();
    char *spec = lmdb_spec(dir, "shared");
    buf_t err = BUF_INIT;
    store_t *s = store_open(l.base, l.pool, spec, &err);
    REQUIRE(s);
    st_res_t x = {0};
    CHECK_INT(st_set(&l, s, "from:parent", "hello", 0, &x), ST_OK);
    CHECK_INT(st_incr(&l, s, "shared:count", 1, 0, &x), ST_OK);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* The parent's store is not ours: store_open must open afresh. */
        st_loop_t cl;
        st_loop_init(&cl);
        buf_t cerr = BUF_INIT;
        store_t *cs = store_open(cl.base, cl.pool, spec, &cerr);
        int bad = 0;
        st_res_t cx = {0};
        if (!cs || cs == s)
            _exit(10);
        if (st_get(&cl, cs, "from:parent", &cx) != ST_OK || strcmp(buf_cstr(&cx.val), "hello") != 0)
            bad |= 1;
        if (st_set(&cl, cs, "from:child", "world", 0, &cx) != ST_OK)
            bad |= 2;
        if (st_incr(&cl, cs, "shared:count", 10, 0, &cx) != ST_OK || cx.num != 11)
            bad |= 4;
        store_close(&cs);
        st_loop_free(&cl);
        _exit(bad);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_INT(WEXITSTATUS(status), 0);
    CHECK_INT(st_get(&l, s, "from:child", &x), ST_OK);
    CHECK_STR(buf_cstr(&x.val), "world");
    CHECK_INT(st_incr(&l, s, "shared:count", 100, 0, &x), ST_OK);
    CHECK_INT(x.num, 111);
    store_close(&s);
    st_res_free(&x);
    buf_free(&err);
    st_loop_free(&l);
    free(spec);
    rm_rf(dir);
    free(dir);
}

/* Redis URLs: defaults filled in, one key per server and database, and
 * the canonical form reads back as itself. */
TEST(store_redis_url_forms)
{
    static const char *const forms[][2] = {
        {"redis://127.0.0.1", "redis://127.0.0.1:6379/0"},
        {"redis://127.0.0.1/", "redis://127.0.0.1:6379/0"},
        {"redis://127.0.0.1:7000/5", "redis://127.0.0.1:7000/5"},
        {"redis://localhost:6379/0", "redis://localhost:6379/0"},
        {"redis://[::1]:7000/3", "redis://[::1]:7000/3"},
        {"redis://[::1]", "redis://[::1]:6379/0"},
        {"redis://:secret@h/2", "redis://:secret@h:6379/2"},
        {"redis://user:secret@h:1/0", "redis://user:secret@h:1/0"},
        {"redis://secret@h", "redis://:secret@h:6379/0"},
        {"redis://a:b@c@h:2", "redis://a:b@c@h:2/0"},   /* the last @ ends the password */
    };
    for (size_t i = 0; i < ARRAY_LEN(forms); i++) {
        buf_t key = BUF_INIT, again = BUF_INIT, err = BUF_INIT;
        CHECK_INT(store_backend_redis.canon(forms[i][0], &key, &err), 0);
        CHECK_STR(buf_cstr(&key), forms[i][1]);
        CHECK_INT(store_backend_redis.canon(buf_cstr(&key), &again, &err), 0);
        CHECK_STR(buf_cstr(&again), buf_cstr(&key));
        CHECK_INT(err.len, 0);
        buf_free(&key);
        buf_free(&again);
        buf_free(&err);
    }
}
