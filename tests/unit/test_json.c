/* Unit tests for json.c: the answers Go's encoding/json Valid gives, which
 * decide Caddy's respond Content-Type. */
#include "json.h"

#include <stdlib.h>

#include "test.h"

static int valid(const char *s)
{
    return json_valid(s, strlen(s));
}

TEST(json_accepts_every_kind_of_value)
{
    CHECK(valid("{\"a\":1}"));
    CHECK(valid(" [1, -0.5e+3, 2E-1, true, false, null, \"x\", {}, []] "));
    CHECK(valid("{\"a\":{\"b\":[{\"c\":\"\\u00e9\\n\\\"\\\\\\/\"}]}, \"d\" : 0}"));
    CHECK(valid("\t\r\n42\n"));
    CHECK(valid("\"bytes \xc3\xa9 and \xff pass\"")); /* Go does not check UTF-8 */
}

TEST(json_refuses_what_go_refuses)
{
    static const char *const bad[] = {
        "",         " ",         "{",           "{\"a\":1",   "{\"a\" 1}",   "{a:1}",
        "{\"a\":1,}", "[1,]",     "[1 2]",       "01",         "1.",          ".5",
        "+1",       "1e",        "-",           "tru",        "nul",         "\"\\x\"",
        "\"a\tb\"", "\"\\u12g4\"", "{} {}",      "[]]",        "\"open",      "{\"a\"}",
        "NaN",      "'a'",       "{\"a\":1}x",  "\xc2\xa0{}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid(bad[i]))
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        CHECK(!valid(bad[i]));
    }
}

TEST(json_nesting_is_bounded_as_in_go)
{
    size_t n = JSON_MAX_DEPTH + 1;
    char *s = malloc(2 * n + 1);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';
    CHECK(!valid(s)); /* one level past Go's limit */
    CHECK(json_valid(s + 1, 2 * n - 2));
    free(s);
}

TEST(json_embedded_nul_is_not_whitespace)
{
    CHECK(!json_valid("{}\0", 3));
    CHECK(json_valid("{}\0", 2));
}

TEST_MAIN()
