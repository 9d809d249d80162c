/* Naming error codes (errors.h). */
#include "errors.h"

#include <stdio.h>
#include <string.h>

/* Whether ERR is one of libuv's codes (uv.h UV_ERRNO_MAP). */
static int uv_knows(int err)
{
#define PS_UV_CASE(name, msg) case UV_##name:
    switch (err) {
        UV_ERRNO_MAP(PS_UV_CASE)
        return 1;
    default:
        return 0;
    }
#undef PS_UV_CASE
}

const char *ps_strerror(int err)
{
    static _Thread_local char buf[64];

    switch (err) {
    case PS_ECONFIG:
        return "invalid configuration";
    case PS_EPROTO:
        return "protocol error: malformed data or failed authentication";
    case PS_ECA:
        return "the CA answered with an error";
    case PS_EEXPIRED:
        return "certificate expired";
    default:
        break;
    }
    /* uv_strerror() leaks a string for a code it does not know */
    if (uv_knows(err))
        return uv_strerror(err);
    if (err < 0 && err > -4096) /* another errno value (Linux keeps them under 4096) */
        return strerror_r(-err, buf, sizeof(buf));
    snprintf(buf, sizeof(buf), "unknown error %d", err);
    return buf;
}
