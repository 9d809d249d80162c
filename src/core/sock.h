/* Socket writes as the hot path wants them: now when the socket takes
 * the bytes (send/sendmsg: no request, no callback), queued otherwise. */
#ifndef PS_SOCK_H
#define PS_SOCK_H

#include <uv.h>

#include "buf.h"

/* A queued write is over: OWNER (sock_wreq_t.data) and libuv's status. */
typedef void (*sock_written_cb)(void *owner, int status);

/* The write request of one socket's writer, taken from a pool only when
 * the socket pushes back: most writes go out at once and need none, and
 * an idle connection holds none (a uv_write_t is 192 bytes). */
typedef struct sock_wreq {
    uv_write_t *req;    /* NULL but while a write may be queued on it */
    buf_pool_t *pool;   /* of sizeof(uv_write_t) */
    void *data;         /* the owner, for the callback */
    sock_written_cb cb; /* of the write queued */
    unsigned queued;    /* a write is queued on req: its callback is to come */
} sock_wreq_t;

void sock_wreq_init(sock_wreq_t *w, buf_pool_t *pool, void *data);

/* Writes BUFS to S now if the socket takes them, else queues the rest on
 * W's request: CB follows, after which the request goes back to the pool
 * unless CB queued the next write on it. BUFS may be advanced past what
 * went out. Returns 1 when all went out now, 0 when queued, <0 on error. */
int sock_write(uv_stream_t *s, sock_wreq_t *w, uv_buf_t *bufs, unsigned n, sock_written_cb cb);

/* Gives W's request back to its pool unless a write is queued on it: when
 * the owner closes (its queued write was cancelled and called back). */
void sock_wreq_release(sock_wreq_t *w);

#endif
