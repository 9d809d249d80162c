/* sock_write on a real socket (a socketpair under a libuv pipe handle):
 * what the socket takes goes now, the rest is queued in order behind it,
 * nothing passes queued bytes, and a closed peer is an error, not SIGPIPE;
 * a write request comes from the pool only for a write that queues, and
 * goes back once its callback is over. */
#include "sock.h"
#include "test.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static uv_loop_t loop;
static uv_pipe_t pipe_h;
static buf_pool_t wreqs;
static sock_wreq_t wr;
static int peer;
static int written;
static int write_status;

static void *last_owner;

static void on_written(void *owner, int status)
{
    last_owner = owner; /* the writer's own, as sock_wreq_init set it */
    written++;
    write_status = status;
}

static void open_pair(void)
{
    int fds[2];
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    int small = 4096;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    uv_loop_init(&loop);
    uv_pipe_init(&loop, &pipe_h, 0);
    CHECK_INT(uv_pipe_open(&pipe_h, fds[0]), 0);
    peer = fds[1];
    buf_pool_init(&wreqs, sizeof(uv_write_t), 16);
    sock_wreq_init(&wr, &wreqs, &wr);
    written = 0;
    write_status = 1;
}

static void close_pair(void)
{
    uv_close((uv_handle_t *)&pipe_h, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
    sock_wreq_release(&wr);
    CHECK(wr.req == NULL);
    CHECK_INT(wreqs.in_use, 0); /* every request went back */
    buf_pool_dispose(&wreqs);
    if (peer >= 0)
        close(peer);
}

/* Reads everything the peer has, up to CAP, while running the loop. */
static size_t drain(char *out, size_t cap, size_t want)
{
    size_t got = 0;
    while (got < want) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t r = recv(peer, out + got, cap - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else
            usleep(1000);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    return got;
}

TEST(all_taken_now_is_one_and_no_callback)
{
    open_pair();
    char a[] = "head ", b[] = "body";
    uv_buf_t bufs[2] = {uv_buf_init(a, 5), uv_buf_init(b, 4)};
    CHECK_INT(sock_write((uv_stream_t *)&pipe_h, &wr, bufs, 2, on_written), 1);
    CHECK(wr.req == NULL); /* no request for a write that went now */
    char got[16] = {0};
    CHECK_INT(drain(got, sizeof(got), 9), 9);
    CHECK_STR(got, "head body");
    CHECK_INT(written, 0);
    close_pair();
}

TEST(the_rest_is_queued_in_order_behind_what_went_now)
{
    open_pair();
    enum { BIG = 1 << 20 };
    static char data[BIG], got[BIG + 16];
    for (size_t i = 0; i < BIG; i++)
        data[i] = (char)(i * 7 + i / 251);
    uv_buf_t buf = uv_buf_init(data, BIG);
    CHECK_INT(sock_write((uv_stream_t *)&pipe_h, &wr, &buf, 1, on_written), 0);
    CHECK(wr.req != NULL && wr.queued); /* taken from the pool for the rest */
    /* queued bytes are ahead: a second writer's write may not pass them */
    sock_wreq_t wr2;
    sock_wreq_init(&wr2, &wreqs, &wr2);
    char tail[] = "tail";
    uv_buf_t t = uv_buf_init(tail, 4);
    CHECK_INT(sock_write((uv_stream_t *)&pipe_h, &wr2, &t, 1, on_written), 0);
    CHECK(wr2.req != NULL && wr2.req != wr.req);
    CHECK_INT(drain(got, sizeof(got), BIG + 4), BIG + 4);
    CHECK(wr.req == NULL && wr2.req == NULL); /* back in the pool after their callbacks */
    CHECK(memcmp(got, data, BIG) == 0);
    CHECK(memcmp(got + BIG, "tail", 4) == 0);
    CHECK_INT(written, 2);
    CHECK(last_owner == &wr2); /* the tail was called back last, with its writer's owner */
    CHECK_INT(write_status, 0);
    close_pair();
}

TEST(a_closed_peer_is_an_error_not_a_signal)
{
    open_pair();
    close(peer);
    peer = -1;
    char a[] = "x";
    uv_buf_t buf = uv_buf_init(a, 1);
    int r = sock_write((uv_stream_t *)&pipe_h, &wr, &buf, 1, on_written);
    CHECK(r == UV_EPIPE || r == UV_ECONNRESET);
    close_pair();
}

TEST_MAIN()
