/* Socket writes as the hot path wants them: now when the socket takes
 * the bytes (send/sendmsg: no request, no callback), queued otherwise. */
#ifndef PS_SOCK_H
#define PS_SOCK_H

#include <uv.h>

/* Writes BUFS to S now if the socket takes them, else queues the rest on
 * REQ (CB follows). BUFS may be advanced past what went out. Returns 1
 * when all went out now, 0 when queued, <0 on error. */
int sock_write(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb);

#endif
