/*
 * harness: a tiny unit-test harness.  A test is TEST(name) { ... } in any
 * tests/unit/ source file; it registers itself at load time.  CHECK() records a
 * failure and continues; REQUIRE() returns from the test.  The runner
 * (tests/unit/main.c) prints one line per failure and ends with
 * "unit: N passed, N failed".  Usage: unit [substring-filter].
 */
#ifndef MOAT_TEST_HARNESS_H
#define MOAT_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

typedef void (*test_fn)(void);
void harness_register(const char *name, const char *file, test_fn fn);
void harness_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                        \
    static void test_##name(void);                                        \
    __attribute__((constructor)) static void register_##name(void)        \
    { harness_register(#name, __FILE__, test_##name); }                   \
    static void test_##name(void)

#define CHECK(cond)                                                       \
    do { if (!(cond)) harness_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); } while (0)
#define REQUIRE(cond)                                                     \
    do { if (!(cond)) { harness_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond); return; } } while (0)
#define CHECK_STR(a, b)                                                   \
    do { const char *a_ = (a), *b_ = (b);                                 \
         if (!a_ || !b_ || strcmp(a_, b_) != 0)                           \
             harness_fail(__FILE__, __LINE__, "%s == \"%s\", want \"%s\"", \
                          #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");    \
    } while (0)
#define CHECK_INT(a, b)                                                   \
    do { long long a_ = (long long)(a), b_ = (long long)(b);              \
         if (a_ != b_)                                                    \
             harness_fail(__FILE__, __LINE__, "%s == %lld, want %lld", #a, a_, b_); \
    } while (0)

#endif
