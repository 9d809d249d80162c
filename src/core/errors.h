/* Project error codes and their names. A function that can fail in more
 * than one way returns 0 or one negative int saying which: a libuv code
 * (UV_E*, uv.h UV_ERRNO_MAP; on Unix the same as -errno), or one of the
 * codes below, which sit under UV_ERRNO_MAX so that one int carries both.
 * STYLE.md "3. Errors". */
#ifndef PS_ERRORS_H
#define PS_ERRORS_H

#include <uv.h>

/* The configuration is wrong: file:line and what was expected are in the
 * caller's err buffer. */
#define PS_ECONFIG (UV_ERRNO_MAX - 1)
/* A peer broke its protocol (a malformed HTTP head, a TLS alert, an HTTP/2
 * stream gone), or sealed data failed authentication (seal.h). */
#define PS_EPROTO (UV_ERRNO_MAX - 2)
/* The ACME CA answered with an error status (its problem document,
 * acme_problem_text(), says why) where a result was expected. */
#define PS_ECA (UV_ERRNO_MAX - 3)
/* A stored certificate has expired: there is nothing to serve. */
#define PS_EEXPIRED (UV_ERRNO_MAX - 4)

/* A short English name for ERR, for logs: the project codes above by name,
 * a libuv code as uv_strerror() words it, another -errno as strerror()
 * does. Never NULL; the string is static or this thread's (valid until its
 * next call), never to be freed. */
const char *ps_strerror(int err);

#endif
