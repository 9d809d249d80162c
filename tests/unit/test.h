/* A minimal unit-test runner: TEST(name) defines a case, TEST_MAIN() in
 * one file per binary runs them all (or those whose name contains the
 * first argument), each TAP-style line says ok/not ok, the exit status
 * fails when any case failed. One executable per module under test.
 *
 * A failed CHECK ends its case at once, saying file:line and the values
 * compared, so nothing after it runs on a state the check found wrong. A
 * fixture that owns resources (sockets, a loop) registers its teardown
 * with test_on_fail; it runs before the case ends. While the fixture holds
 * the case where it cannot leave (a running loop), test_hold_failures()
 * keeps checks from ending it: they record the failure, and the case ends
 * when the fixture lets go. */
#ifndef PS_TEST_H
#define PS_TEST_H

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
};

extern struct test_case test_cases[];
extern int test_n_cases;
extern int test_failed_now;
extern const char *test_todo_now;
extern jmp_buf test_jmp;
extern int test_held;                 /* >0: a failed check records and goes on */
extern void (*test_cleanup)(void *);  /* run when a check ends the case */
extern void *test_cleanup_arg;

#define TEST_MAX 512

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void test_register_##name(void)                            \
    {                                                                                              \
        if (test_n_cases < TEST_MAX)                                                               \
            test_cases[test_n_cases++] = (struct test_case){#name, test_##name};                   \
    }                                                                                              \
    static void test_##name(void)

/* Ends the case: its fixture's teardown first, while the case's frame (and
 * the fixture on it) is still there, then back to the runner. */
static inline void test_end_case(void)
{
    void (*cleanup)(void *) = test_cleanup;
    test_cleanup = NULL;
    if (cleanup != NULL) {
        test_held++; /* checks in the teardown only record */
        cleanup(test_cleanup_arg);
        test_held--;
    }
    longjmp(test_jmp, 1);
}

/* Marks the case failed and, unless failures are held, ends it. */
static inline void test_fail_now(void)
{
    test_failed_now = 1;
    if (test_held == 0)
        test_end_case();
}

/* Fails the case with a message of its own (printf format), at file:line. */
#define TEST_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        test_fail_now();                                                                           \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TEST_FAIL("check failed: %s", #cond);                                                  \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_)                                                                            \
            TEST_FAIL("%s == %lld, expected %lld", #a, va_, vb_);                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0)                                   \
            TEST_FAIL("%s == \"%s\", expected \"%s\"", #a, sa_ ? sa_ : "(null)",                   \
                      sb_ ? sb_ : "(null)");                                                       \
    } while (0)

/* FN(ARG) tears the case's fixture down if a check ends it; NULL: none. */
static inline void test_on_fail(void (*fn)(void *), void *arg)
{
    test_cleanup = fn;
    test_cleanup_arg = arg;
}

/* Checks record their failure without ending the case until the matching
 * test_release_failures(); then a failure recorded meanwhile ends it. */
static inline void test_hold_failures(void)
{
    test_held++;
}

static inline void test_release_failures(void)
{
    if (--test_held == 0 && test_failed_now)
        test_end_case();
}

/* The case shows a known bug: it asserts the right behaviour, and TAP's
 * TODO directive keeps its failure from failing the run (meson counts an
 * expected failure; once the bug is fixed it reports an unexpected pass,
 * and the mark goes). */
#define TEST_TODO(reason) (test_todo_now = (reason))

/* Defines the registry and main(); include in exactly one file per binary.
 * The TAP plan counts the cases the filter selects. */
#define TEST_MAIN()                                                                                \
    struct test_case test_cases[TEST_MAX];                                                         \
    int test_n_cases;                                                                              \
    int test_failed_now;                                                                           \
    const char *test_todo_now;                                                                     \
    jmp_buf test_jmp;                                                                              \
    int test_held;                                                                                 \
    void (*test_cleanup)(void *);                                                                  \
    void *test_cleanup_arg;                                                                        \
    static int test_selected(int i, int argc, char **argv)                                         \
    {                                                                                              \
        return argc < 2 || strstr(test_cases[i].name, argv[1]) != NULL;                            \
    }                                                                                              \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        /* volatile: kept across the longjmp that ends a failed case */                          \
        volatile int failed = 0, run = 0;                                                          \
        int plan = 0;                                                                              \
        for (int i = 0; i < test_n_cases; i++)                                                     \
            plan += test_selected(i, argc, argv);                                                  \
        printf("1..%d\n", plan);                                                                   \
        for (int i = 0; i < test_n_cases; i++) {                                                   \
            if (!test_selected(i, argc, argv))                                                     \
                continue;                                                                          \
            test_failed_now = 0;                                                                   \
            test_todo_now = NULL;                                                                  \
            test_held = 0;                                                                         \
            test_on_fail(NULL, NULL);                                                              \
            if (setjmp(test_jmp) == 0)                                                             \
                test_cases[i].fn();                                                                \
            run++;                                                                                 \
            failed += test_failed_now && test_todo_now == NULL;                                    \
            printf("%s %d - %s%s%s\n", test_failed_now ? "not ok" : "ok", run,                     \
                   test_cases[i].name, test_todo_now ? " # TODO " : "",                            \
                   test_todo_now ? test_todo_now : "");                                            \
            fflush(stdout);                                                                        \
        }                                                                                          \
        fprintf(stderr, "%d passed, %d failed\n", run - failed, failed);                           \
        return failed ? 1 : 0;                                                                     \
    }

#endif
