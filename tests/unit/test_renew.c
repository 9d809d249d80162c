/* Unit tests for the renewal arithmetic: due times, ARI windows and
 * refetches, back-off with jitter, and the Retry-After and RFC 3339
 * parsers, all with exact expected values. */
#include "renew.h"

#include <limits.h>
#include <stdint.h>

#include "test.h"

#define DAY 86400
#define NB 1700000000      /* an arbitrary notBefore, 2023-11-14 */
#define JAN2 1735790400    /* 2025-01-02T04:00:00Z */
#define RFC_DATE 784111777 /* Sun, 06 Nov 1994 08:49:37 GMT */

TEST(ninety_day_cert_is_due_at_day_sixty)
{
    CHECK_INT(renew_due_by_lifetime(NB, NB + 90 * DAY), NB + 60 * DAY);
}

TEST(six_day_cert_is_due_at_day_three)
{
    CHECK_INT(renew_due_by_lifetime(NB, NB + 6 * DAY), NB + 3 * DAY);
}

TEST(short_lived_profile_is_due_at_half)
{
    /* Let's Encrypt "shortlived": 160 hours. */
    CHECK_INT(renew_due_by_lifetime(NB, NB + 160 * 3600), NB + 80 * 3600);
}

TEST(ten_day_cert_already_uses_a_third)
{
    CHECK_INT(renew_due_by_lifetime(NB, NB + 10 * DAY), NB + 10 * DAY - 10 * DAY / 3);
    CHECK_INT(renew_due_by_lifetime(NB, NB + 10 * DAY - 1), NB + (10 * DAY - 1) / 2 + 1);
}

TEST(forty_five_day_cert_is_due_at_day_thirty)
{
    CHECK_INT(renew_due_by_lifetime(NB, NB + 45 * DAY), NB + 30 * DAY);
}

TEST(never_valid_cert_is_due_at_its_end)
{
    CHECK_INT(renew_due_by_lifetime(NB, NB), NB);
    CHECK_INT(renew_due_by_lifetime(NB, NB - 5), NB - 5);
}

TEST(lifetime_survives_extreme_times)
{
    /* The difference does not fit in int64; a third of it still lands
     * inside the range. */
    int64_t due = renew_due_by_lifetime(INT64_MIN, INT64_MAX);
    CHECK(due > 0 && due < INT64_MAX);
}

TEST(window_pick_hits_both_ends)
{
    CHECK_INT(renew_pick_in_window(100, 200, 0), 100);
    CHECK_INT(renew_pick_in_window(100, 200, UINT32_MAX), 200);
    CHECK_INT(renew_pick_in_window(100, 200, 1u << 31), 150);
    CHECK_INT(renew_pick_in_window(100, 200, UINT32_MAX / 2), 149);
}

TEST(window_pick_empty_or_reversed_gives_start)
{
    CHECK_INT(renew_pick_in_window(500, 500, 12345), 500);
    CHECK_INT(renew_pick_in_window(500, 400, UINT32_MAX), 500);
}

TEST(window_pick_stays_inside_huge_window)
{
    CHECK_INT(renew_pick_in_window(INT64_MIN, INT64_MAX, 0), INT64_MIN);
    CHECK_INT(renew_pick_in_window(INT64_MIN, INT64_MAX, UINT32_MAX), INT64_MAX);
    CHECK_INT(renew_pick_in_window(JAN2, JAN2 + DAY, UINT32_MAX), JAN2 + DAY);
}

TEST(window_pick_is_monotonic_in_rnd)
{
    int64_t prev = renew_pick_in_window(JAN2, JAN2 + 2 * DAY, 0);
    uint32_t r = 0;

    for (int i = 0; i < 1000; i++) {
        r += 4294967u;
        int64_t t = renew_pick_in_window(JAN2, JAN2 + 2 * DAY, r);
        CHECK(t >= prev && t <= JAN2 + 2 * DAY);
        prev = t;
    }
}

TEST(ari_refetch_defaults_to_six_hours)
{
    CHECK_INT(renew_ari_refetch(JAN2, -1), JAN2 + 6 * 3600);
}

TEST(ari_refetch_clamps_retry_after)
{
    CHECK_INT(renew_ari_refetch(JAN2, 0), JAN2 + 60);
    CHECK_INT(renew_ari_refetch(JAN2, 10), JAN2 + 60);
    CHECK_INT(renew_ari_refetch(JAN2, 60), JAN2 + 60);
    CHECK_INT(renew_ari_refetch(JAN2, 3600), JAN2 + 3600);
    CHECK_INT(renew_ari_refetch(JAN2, DAY), JAN2 + DAY);
    CHECK_INT(renew_ari_refetch(JAN2, 7 * DAY), JAN2 + DAY);
}

TEST(backoff_follows_lets_encrypt_steps)
{
    /* rnd 2^31 is the middle of the jitter range. */
    CHECK_INT(renew_backoff(1, -1, 1u << 31), 60);
    CHECK_INT(renew_backoff(2, -1, 1u << 31), 600);
    CHECK_INT(renew_backoff(3, -1, 1u << 31), 6000);
    CHECK_INT(renew_backoff(4, -1, 1u << 31), DAY);
    CHECK_INT(renew_backoff(5, -1, 1u << 31), DAY);
    CHECK_INT(renew_backoff(INT_MAX, -1, 1u << 31), DAY);
}

TEST(backoff_jitter_ends_are_ten_percent)
{
    CHECK_INT(renew_backoff(1, -1, 0), 54);
    CHECK_INT(renew_backoff(1, -1, UINT32_MAX), 66);
    CHECK_INT(renew_backoff(2, -1, 0), 540);
    CHECK_INT(renew_backoff(2, -1, UINT32_MAX), 660);
    CHECK_INT(renew_backoff(3, -1, 0), 5400);
    CHECK_INT(renew_backoff(3, -1, UINT32_MAX), 6600);
    CHECK_INT(renew_backoff(4, -1, 0), 77760);
    CHECK_INT(renew_backoff(4, -1, UINT32_MAX), 95040);
}

TEST(backoff_jitter_stays_in_bounds)
{
    static const int64_t base[] = {60, 600, 6000, DAY};
    uint32_t r = 1;

    for (int f = 1; f <= 4; f++) {
        for (int i = 0; i < 2000; i++) {
            r = r * 1664525u + 1013904223u; /* Numerical Recipes LCG */
            int64_t d = renew_backoff(f, -1, r);
            CHECK(d >= base[f - 1] * 9 / 10 && d <= base[f - 1] * 11 / 10);
        }
    }
}

TEST(backoff_never_sooner_than_retry_after)
{
    CHECK_INT(renew_backoff(1, 3600, UINT32_MAX), 3600);
    CHECK_INT(renew_backoff(2, 0, 0), 540);
    CHECK_INT(renew_backoff(4, 3600, 0), 77760);
    CHECK_INT(renew_backoff(4, 7 * DAY, 0), 7 * DAY);
}

TEST(backoff_without_failures_is_zero_or_retry_after)
{
    CHECK_INT(renew_backoff(0, -1, UINT32_MAX), 0);
    CHECK_INT(renew_backoff(-3, -1, 0), 0);
    CHECK_INT(renew_backoff(0, 120, 0), 120);
}

TEST(retry_after_delta_seconds)
{
    CHECK_INT(renew_parse_retry_after("120", JAN2), 120);
    CHECK_INT(renew_parse_retry_after("0", JAN2), 0);
    CHECK_INT(renew_parse_retry_after(" 86400\t", JAN2), DAY);
    CHECK_INT(renew_parse_retry_after("99999999999999999999999", JAN2), INT32_MAX);
}

TEST(retry_after_imf_fixdate)
{
    const char *d = "Sun, 06 Nov 1994 08:49:37 GMT";

    CHECK_INT(renew_parse_retry_after(d, RFC_DATE - 100), 100);
    CHECK_INT(renew_parse_retry_after(d, RFC_DATE), 0);
    CHECK_INT(renew_parse_retry_after(d, RFC_DATE + 100), 0);
    CHECK_INT(renew_parse_retry_after("Thu, 02 Jan 2025 04:00:00 GMT", JAN2 - 3600), 3600);
    CHECK_INT(renew_parse_retry_after("Sat, 29 Feb 2000 00:00:00 GMT", 951782400 - 1), 1);
}

TEST(retry_after_garbage_is_minus_one)
{
    CHECK_INT(renew_parse_retry_after(NULL, JAN2), -1);
    CHECK_INT(renew_parse_retry_after("", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("  ", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("-5", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("12a", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("1 2", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("1.5", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("sun, 06 nov 1994 08:49:37 GMT", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("Sun, 31 Feb 1994 08:49:37 GMT", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMTx", JAN2), -1);
    /* The obsolete forms (RFC 850, asctime) are not accepted. */
    CHECK_INT(renew_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", JAN2), -1);
    CHECK_INT(renew_parse_retry_after("Sun Nov  6 08:49:37 1994", JAN2), -1);
}

TEST(rfc3339_utc)
{
    CHECK_INT(renew_parse_rfc3339("2025-01-02T04:00:00Z"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-02t04:00:00z"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-02 04:00:00Z"), JAN2);
    CHECK_INT(renew_parse_rfc3339("1970-01-01T00:00:00Z"), 0);
    CHECK_INT(renew_parse_rfc3339("2024-02-29T12:00:00Z"), 1709208000);
    CHECK_INT(renew_parse_rfc3339("2000-02-29T00:00:00Z"), 951782400);
}

TEST(rfc3339_fraction_is_dropped)
{
    CHECK_INT(renew_parse_rfc3339("2025-01-02T04:00:00.5Z"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-02T04:00:00.999999999Z"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-02T04:00:00.123+00:00"), JAN2);
}

TEST(rfc3339_offsets)
{
    CHECK_INT(renew_parse_rfc3339("2025-01-02T09:30:00+05:30"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-02T05:00:00+01:00"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-01T23:00:00-05:00"), JAN2);
    CHECK_INT(renew_parse_rfc3339("2025-01-02T04:00:00-00:00"), JAN2);
}

TEST(rfc3339_leap_second_is_next_minute)
{
    CHECK_INT(renew_parse_rfc3339("2016-12-31T23:59:60Z"), 1483228800);
}

TEST(rfc3339_garbage_is_minus_one)
{
    static const char *const bad[] = {
        "",
        "garbage",
        "2025-01-02",
        "2025-01-02T04:00:00",
        "2025-01-02T04:00Z",
        "2025-1-02T04:00:00Z",
        "2025-01-02X04:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-00-01T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2025-04-31T00:00:00Z",
        "2025-01-00T00:00:00Z",
        "2025-01-02T24:00:00Z",
        "2025-01-02T04:60:00Z",
        "2025-01-02T04:00:61Z",
        "2025-01-02T04:00:00.Z",
        "2025-01-02T04:00:00ZZ",
        "2025-01-02T04:00:00 Z",
        "2025-01-02T04:00:00+0530",
        "2025-01-02T04:00:00+24:00",
        "2025-01-02T04:00:00+05:60",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",
    };

    CHECK_INT(renew_parse_rfc3339(NULL), -1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (renew_parse_rfc3339(bad[i]) != -1)
            TEST_FAIL("accepted \"%s\"", bad[i]);
    }
}

TEST_MAIN()
