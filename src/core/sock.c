/* Socket writes: now if the socket takes them, else queued. */
#include "sock.h"

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* What uv_try_write does, with send(2)/sendmsg(2) in place of its
 * write(2)/writev(2): on a socket those skip the VFS layer (vfs_write,
 * sock_write_iter, fsnotify), a kernel cost on every response. Returns the
 * bytes taken, UV_EAGAIN when none could be, or another error. */
static ssize_t try_send(uv_stream_t *s, const uv_buf_t *bufs, unsigned n)
{
    uv_os_fd_t fd;
    /* behind queued bytes nothing may pass; a socket not yet open takes none */
    if (uv_stream_get_write_queue_size(s) != 0 || uv_fileno((uv_handle_t *)s, &fd) != 0)
        return UV_EAGAIN;
    ssize_t w;
    do {
        if (n == 1) {
            w = send(fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            /* libuv lays uv_buf_t out as struct iovec on Unix */
            struct msghdr m = {.msg_iov = (struct iovec *)(void *)bufs, .msg_iovlen = n};
            w = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
    } while (w < 0 && errno == EINTR);
    if (w >= 0)
        return w;
    return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
}

void sock_wreq_init(sock_wreq_t *w, buf_pool_t *pool, void *data)
{
    *w = (sock_wreq_t){.pool = pool, .data = data};
}

/* Every queued write ends here, so no writer has to remember the request:
 * the owner's callback, then the request back unless it carries the next
 * write. W outlives the callback: its owner is freed from a later one. */
static void on_written(uv_write_t *req, int status)
{
    sock_wreq_t *w = req->data;
    w->queued = 0;
    w->cb(w->data, status);
    sock_wreq_release(w);
}

int sock_write(uv_stream_t *s, sock_wreq_t *w, uv_buf_t *bufs, unsigned n, sock_written_cb cb)
{
    ssize_t sent = try_send(s, bufs, n);
    if (sent < 0 && sent != UV_EAGAIN)
        return (int)sent;
    size_t done = sent > 0 ? (size_t)sent : 0;
    while (n > 0 && done >= bufs->len) {
        done -= bufs->len;
        bufs++;
        n--;
    }
    if (n == 0)
        return 1;
    bufs->base += done;
    bufs->len -= done;
    if (w->req == NULL) {
        w->req = (uv_write_t *)(void *)buf_get(w->pool);
        w->req->data = w;
    }
    int err = uv_write(w->req, s, bufs, n, on_written);
    if (err < 0)
        return err;
    w->cb = cb;
    w->queued = 1;
    return 0;
}

void sock_wreq_release(sock_wreq_t *w)
{
    if (w->req != NULL && !w->queued) {
        buf_put(w->pool, (char *)w->req);
        w->req = NULL;
    }
}
