/* HTTP requests for the ACME client: libcurl's multi interface driven by a
 * libuv loop (uv_poll per socket, one uv_timer), so no call ever blocks the
 * loop. One fetch_t per loop; requests run concurrently. */
#ifndef PS_FETCH_H
#define PS_FETCH_H

#include <stddef.h>
#include <uv.h>

typedef struct fetch fetch_t;

typedef struct fetch_resp {
    long status;        /* HTTP status; 0 when the transfer failed */
    const char *error;  /* curl's reason when status is 0 */
    char *body;         /* NUL-terminated */
    size_t len;
    /* the response fields the ACME client needs, NULL when absent */
    const char *nonce;        /* Replay-Nonce */
    const char *location;     /* Location */
    const char *retry_after;  /* Retry-After */
    const char *content_type; /* Content-Type */
} fetch_resp_t;

/* RESP is valid during the call only. */
typedef void (*fetch_cb)(void *arg, const fetch_resp_t *resp);

/* CA_FILE (NULL: the system's bundle, ca_bundle_system) is what HTTPS peers
 * are checked against. Returns NULL when libcurl cannot start. */
fetch_t *fetch_new(uv_loop_t *loop, const char *ca_file);
/* Every request of F from now on looks its host up again and opens its own
 * connection (active health checks: the name may have moved). */
void fetch_set_fresh(fetch_t *f);
/* Cancels the requests under way (their callbacks do not run) and frees F
 * once libuv has closed its handles. */
void fetch_free(fetch_t *f);

/* METHOD is "GET", "HEAD" or "POST" (with BODY as application/jose+json).
 * ACCEPT may be NULL. CB runs exactly once, from the loop, never from
 * inside this call. Returns 0, or when the request cannot be made (CB then
 * never runs) UV_ENOMEM, or UV_EINVAL when libcurl refuses the transfer
 * (a call from inside one of its callbacks, say). */
int fetch_start(fetch_t *f, const char *method, const char *url, const char *body,
                const char *accept, fetch_cb cb, void *arg);

/* The same with a whole-request time limit (fetch_start: 30 s). */
int fetch_start_timeout(fetch_t *f, const char *method, const char *url, const char *body,
                        const char *accept, long timeout_ms, fetch_cb cb, void *arg);

#endif
