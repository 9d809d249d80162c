/* An HTTP/2 stream's exchange (stream.h): allocated when the stream opens,
 * freed once the stream and the exchange are both done with it. */
#include "stream.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"

/* How long a finished stream may take to end before it is reset. */
#define STREAM_LINGER_MS 2000

typedef struct stream_x {
    exchange_t x;
    h2_stream_t *s;
    int in_process; /* sx_process is on the stack */
    tls_conn_t *tls; /* the connection's, while its session lives */
} stream_x_t;

static h2_stream_t *stream_of(const exchange_t *x)
{
    return container_of(x, stream_x_t, x)->s;
}

/* ---- the transport ops -------------------------------------------------- */

static int sx_write(exchange_t *x, uv_buf_t *bufs, unsigned n)
{
    return h2_stream_write(stream_of(x), bufs, n, x->head_method);
}

static void sx_update_reading(exchange_t *x)
{
    h2_stream_update(stream_of(x)); /* the window is a stream's reading */
}

static size_t sx_fill(exchange_t *x)
{
    (void)x;
    return 0; /* DATA frames fill the buffer (stream_body) */
}

static void sx_process(exchange_t *x)
{
    stream_x_t *sx = container_of(x, stream_x_t, x);
    if (sx->in_process)
        return; /* the caller up the stack goes on looping */
    sx->in_process = 1;
    while (x->rs != XRESP_CLOSED && exchange_step(x, 0))
        ;
    sx->in_process = 0;
    if (x->rs != XRESP_CLOSED && x->rs != XRESP_DONE) {
        exchange_update_reading(x);
        exchange_arm_timer(x);
    }
}

/* A stream's body: DATA frames' bytes as they are, no framing; the request
 * ends with the stream's END_STREAM. */
static llhttp_errno_t sx_parse(exchange_t *x)
{
    size_t n = x->rlen - x->rstart;
    x->bytes_in += n;
    if (x->rs == XRESP_LOCAL) {
        x->rstart = x->rlen = 0; /* answered here: read and dropped */
    } else if (n > 0) {
        if (x->cur->route.body_limit != 0 && x->bytes_in > x->cur->route.body_limit) {
            x->cur->req.err_status = 413;
            llhttp_set_error_reason(&x->cur->req.parser, "request body too large");
            return HPE_USER;
        }
        x->body = x->rbuf + x->rstart;
        x->body_len = n;
        x->rstart = x->rlen;
    }
    if (h2_stream_input_ended(stream_of(x))) {
        exchange_req_to(x, XREQ_DONE);
        return HPE_PAUSED;
    }
    return HPE_OK;
}

static int sx_input_ended(const exchange_t *x)
{
    return h2_stream_input_ended(stream_of(x));
}

/* The response is complete: end the stream; the exchange closes with it
 * (stream_close), or on its own clock when the stream never ends. */
static void sx_finish(exchange_t *x)
{
    /* what is left in the buffer is never read: its window goes back now,
     * so a client still sending is not held up while the stream ends */
    x->rstart = x->rlen = 0;
    h2_stream_update(stream_of(x));
    exchange_start_timer(x, STREAM_LINGER_MS);
    h2_stream_end(stream_of(x)); /* last: the stream may close (and X with it) */
}

static void on_closed(deadline_t *d)
{
    stream_x_t *sx = container_of(d, stream_x_t, x.timer);
    worker_t *w = sx->x.w;
    exchange_dispose(&sx->x);
    h2_stream_free(sx->s);
    buf_put(&w->stream_xs, (char *)sx);
}

static void sx_close(exchange_t *x)
{
    h2_stream_detach(stream_of(x)); /* RST_STREAM unless the stream is over */
    deadline_close(&x->timer, on_closed);
}

static void sx_malformed(exchange_t *x)
{
    h2_stream_malformed(stream_of(x)); /* RST_STREAM(PROTOCOL_ERROR), RFC 9113 8.1.1 */
    exchange_close(x);
}

/* No tunnel runs on a stream (no Upgrade in HTTP/2). */
static void sx_shutdown_write(exchange_t *x)
{
    (void)x;
}

static int sx_input_eof(exchange_t *x)
{
    return x->eof;
}

static void sx_keepalive(exchange_t *x, unsigned secs)
{
    (void)x;
    (void)secs;
}

static tls_conn_t *sx_tls(const exchange_t *x)
{
    const stream_x_t *sx = container_of(x, stream_x_t, x);
    return h2_stream_parent(sx->s) != NULL ? sx->tls : NULL;
}

static const xport_ops_t stream_xport = {
    .version = 2,
    .write = sx_write,
    .update_reading = sx_update_reading,
    .fill = sx_fill,
    .process = sx_process,
    .parse = sx_parse,
    .input_ended = sx_input_ended,
    .finish = sx_finish,
    .close = sx_close,
    .malformed = sx_malformed,
    .shutdown_write = sx_shutdown_write,
    .input_eof = sx_input_eof,
    .keepalive = sx_keepalive,
    .tls = sx_tls,
};

/* ---- what the session asks ---------------------------------------------- */

exchange_t *stream_open(const exchange_t *cx, tls_conn_t *tls, h2_stream_t *s)
{
    stream_x_t *sx = (stream_x_t *)(void *)buf_get(&cx->w->stream_xs);
    memset(sx, 0, sizeof(*sx));
    exchange_t *x = &sx->x;
    exchange_init(x, &stream_xport, cx->w, cx->cfg, cx->targets, cx->listener);
    x->peer = cx->peer;
    memcpy(x->peer_ip, cx->peer_ip, sizeof(x->peer_ip));
    memcpy(x->peer_port, cx->peer_port, sizeof(x->peer_port));
    sx->s = s;
    sx->tls = tls;
    /* the whole head (HEADERS and CONTINUATIONs) within read_header */
    exchange_start_timer(x, x->cfg->timeouts.read_header);
    return x;
}

void stream_head(exchange_t *x, char *head, int len)
{
    if (x->rs == XRESP_CLOSED)
        return;
    exchange_begin_request(x);
    llhttp_errno_t err = HPE_USER;
    if (len > 0)
        err = llhttp_execute(&x->cur->req.parser, head, (size_t)len);
    else
        x->t_start = uv_hrtime();
    x->added_fields = h2_stream_added_fields(stream_of(x)) != 0;
    /* the body comes in rbuf, which holds nothing else (DATA that came
     * with the head may be there already): the head stays in HEAD, which
     * lives as long as the stream */
    x->rstart = x->head_end = 0;
    deadline_stop(&x->timer);
    if (err == HPE_PAUSED && x->rq == XREQ_BODY) {
        exchange_route(x, 0);
        return;
    }
    int st = len < 0 ? -len : http_request_error_status(&x->cur->req, err);
    log_debug("exchange %llu %s: h2 stream: %d %s", (unsigned long long)x->id, x->peer_ip, st,
              http_reason(st));
    exchange_respond_error(x, st);
}

ssize_t stream_body(exchange_t *x, const char *data, size_t len)
{
    if (x->rs == XRESP_LOCAL || x->rs == XRESP_DONE || x->rs == XRESP_CLOSED)
        return -1; /* answered already */
    if (len == 0)
        return 0;
    if (x->rbuf == NULL)
        x->rbuf = buf_get(&x->w->bufs);
    size_t room = x->w->bufs.size - x->rlen;
    size_t fit = len < room ? len : room;
    memcpy(x->rbuf + x->rlen, data, fit);
    x->rlen += fit;
    return (ssize_t)fit;
}

size_t stream_buffered(const exchange_t *x)
{
    return x->rlen;
}

void stream_input(exchange_t *x)
{
    if (x->rs != XRESP_CLOSED)
        sx_process(x);
}

void stream_written(exchange_t *x)
{
    exchange_written(x);
    if (x->rs != XRESP_CLOSED && x->rs != XRESP_DONE && x->rs != XRESP_NONE) {
        exchange_update_reading(x);
        exchange_arm_timer(x);
    }
}

void stream_close(exchange_t *x)
{
    exchange_close(x);
}

size_t stream_size(void)
{
    return sizeof(stream_x_t);
}
