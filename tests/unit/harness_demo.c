/* Cases that fail on purpose, for check_harness.py: what test.h does when
 * a check fails (the case ends there, its fixture is torn down first, held
 * failures end it when released, a TODO does not fail the run). Not a
 * test of psproxy; never in the suite by itself. */
#include <stdio.h>

#include "test.h"

TEST(a_failed_check_ends_its_case)
{
    CHECK_INT(1 + 1, 3);
    fprintf(stderr, "REACHED after the failed check\n");
}

TEST(passes)
{
    CHECK(1);
    CHECK_STR("a", "a");
}

static void fixture_down(void *arg)
{
    fprintf(stderr, "TEARDOWN of %s\n", (const char *)arg);
    CHECK(!"a check in the teardown only records");
    fprintf(stderr, "TEARDOWN went on\n");
}

TEST(a_fixture_is_torn_down_before_its_case_ends)
{
    test_on_fail(fixture_down, "the fixture");
    CHECK_STR("got", "want");
    fprintf(stderr, "REACHED after the fixture's failed check\n");
}

TEST(held_failures_end_the_case_when_released)
{
    test_hold_failures();
    CHECK(0);
    fprintf(stderr, "HELD: the case goes on\n");
    test_release_failures();
    fprintf(stderr, "REACHED after the release\n");
}

TEST(a_todo_fails_without_failing_the_run)
{
    TEST_TODO("a known bug");
    CHECK(0);
}

TEST_MAIN()
