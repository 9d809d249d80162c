/* Unit tests for acme_json.c: reading the CA's JSON and our metadata. */
#include "acme_json.h"

#include <string.h>

#include "test.h"

static cJSON *meta(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL);
    return j;
}

TEST(meta_backoff_reads_failures_and_next_attempt)
{
    cJSON *m = meta("{\"failures\": 2, \"next_attempt\": 1764640800}");
    int failures = 0;
    int64_t next = 0;
    CHECK_INT(acme_meta_backoff(m, &failures, &next), 1);
    CHECK_INT(failures, 2);
    CHECK_INT(next, 1764640800);
    cJSON_Delete(m);
}

/* Found by fuzz_store: (int64_t)1e30 is undefined behaviour (UBSan:
 * "outside the range of representable values"); a damaged metadata file
 * must read as no back-off instead. */
TEST(meta_backoff_ignores_a_next_attempt_beyond_int64)
{
    static const char *const bad[] = {
        "{\"failures\": 1, \"next_attempt\": 1e30}",
        "{\"failures\": 1, \"next_attempt\": -1e300}",
        "{\"failures\": 1, \"next_attempt\": 1e999}",
        "{\"failures\": 1, \"next_attempt\": \"soon\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *m = meta(bad[i]);
        int failures = 0;
        int64_t next = 0;
        CHECK_INT(acme_meta_backoff(m, &failures, &next), 0);
        cJSON_Delete(m);
    }
}

TEST(directory_lists_urls_and_offered_profiles)
{
    acme_dir_t d;
    CHECK_INT(acme_dir_parse("{\"newNonce\":\"n\",\"newAccount\":\"a\",\"newOrder\":\"o\","
                             "\"meta\":{\"profiles\":{\"classic\":\"\",\"shortlived\":\"\"}}}",
                             "tlsserver", &d),
              0);
    CHECK_STR(d.new_nonce, "n");
    CHECK_STR(d.new_order, "o");
    CHECK(d.renewal_info == NULL);
    CHECK_INT(d.profile_offered, 0);
    CHECK_STR(d.offered, "classic, shortlived");
    acme_dir_dispose(&d);
    CHECK_INT(acme_dir_parse("not json", NULL, &d), -1);
    acme_dir_dispose(&d);
}

/* An array where an object of profiles belongs: its elements have no
 * names, which used to go to "%s" as NULL. */
TEST(directory_with_profiles_as_an_array_offers_none)
{
    acme_dir_t d;
    CHECK_INT(acme_dir_parse("{\"meta\":{\"profiles\":[\"classic\"]}}", "classic", &d), 0);
    CHECK_INT(d.profile_offered, 0);
    CHECK_STR(d.offered, "");
    acme_dir_dispose(&d);
}

TEST(authz_error_names_the_failed_challenge)
{
    cJSON *z = meta("{\"status\":\"invalid\",\"challenges\":[{\"type\":\"http-01\",\"error\":"
                    "{\"detail\":\"Connection refused\"}}]}");
    char why[128];
    acme_authz_error(z, why, sizeof(why));
    CHECK_STR(why, "http-01: Connection refused");
    CHECK(acme_authz_challenge(z, "http-01") != NULL);
    CHECK(acme_authz_challenge(z, "tls-alpn-01") == NULL);
    cJSON_Delete(z);
}

TEST(ari_window_needs_start_before_end)
{
    int64_t start, end;
    CHECK_INT(acme_ari_window("{\"suggestedWindow\":{\"start\":\"2025-01-02T04:00:00Z\","
                              "\"end\":\"2025-01-03T04:00:00Z\"}}",
                              &start, &end),
              0);
    CHECK_INT(end - start, 86400);
    CHECK_INT(acme_ari_window("{\"suggestedWindow\":{\"start\":\"2025-01-03T04:00:00Z\","
                              "\"end\":\"2025-01-02T04:00:00Z\"}}",
                              &start, &end),
              -1);
    CHECK_INT(acme_ari_window(NULL, &start, &end), -1);
}

TEST_MAIN()
