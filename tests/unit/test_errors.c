/* Unit tests for the project error codes and ps_strerror: project codes
 * by name, libuv's in libuv's words, other errno values in libc's. */
#include "errors.h"

#include <errno.h>
#include <string.h>
#include <uv.h>

#include "common.h"
#include "test.h"

TEST(project_codes_are_distinct_and_below_libuv)
{
    const int codes[] = {PS_ECONFIG, PS_EPROTO, PS_ECA, PS_EEXPIRED};

    for (size_t i = 0; i < PS_ARRAY_SIZE(codes); i++) {
        CHECK(codes[i] < UV_ERRNO_MAX);
        for (size_t j = i + 1; j < PS_ARRAY_SIZE(codes); j++)
            CHECK(codes[i] != codes[j]);
    }
}

TEST(project_codes_have_names)
{
    CHECK_STR(ps_strerror(PS_ECONFIG), "invalid configuration");
    CHECK_STR(ps_strerror(PS_EPROTO), "protocol error: malformed data or failed authentication");
    CHECK_STR(ps_strerror(PS_ECA), "the CA answered with an error");
    CHECK_STR(ps_strerror(PS_EEXPIRED), "certificate expired");
}

TEST(libuv_codes_read_as_uv_strerror)
{
    CHECK_STR(ps_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
    CHECK_STR(ps_strerror(UV_EINVAL), "invalid argument");
    CHECK_STR(ps_strerror(UV_EIO), "i/o error");
    CHECK_STR(ps_strerror(UV_EOF), "end of file");           /* libuv's own, not an errno */
    CHECK_STR(ps_strerror(-ENOMEM), uv_strerror(UV_ENOMEM)); /* -errno is UV_E* on Unix */
}

TEST(other_errno_values_read_as_strerror)
{
    /* ESTALE is no UV_E*: libuv would say "Unknown system error" */
    char want[64];
    snprintf(want, sizeof(want), "%s", strerror(ESTALE));
    CHECK_STR(ps_strerror(-ESTALE), want);
}

TEST(anything_else_is_unknown_with_its_number)
{
    char want[64];
    CHECK_STR(ps_strerror(7), "unknown error 7");
    snprintf(want, sizeof(want), "unknown error %d", UV_ERRNO_MAX - 100);
    CHECK_STR(ps_strerror(UV_ERRNO_MAX - 100), want);
}

TEST_MAIN()
