/* Socket writes: now if the socket takes them, else queued. */
#include "sock.h"

#include <stddef.h>

int sock_write(uv_stream_t *s, uv_write_t *req, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    int w = uv_try_write(s, bufs, n);
    if (w < 0 && w != UV_EAGAIN)
        return w;
    size_t done = w > 0 ? (size_t)w : 0;
    while (n > 0 && done >= bufs->len) {
        done -= bufs->len;
        bufs++;
        n--;
    }
    if (n == 0)
        return 1;
    bufs->base += done;
    bufs->len -= done;
    int err = uv_write(req, s, bufs, n, cb);
    return err < 0 ? err : 0;
}
