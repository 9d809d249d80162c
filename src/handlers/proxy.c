/* One request's exchange with an upstream: pick and connect, send the
 * rewritten head and stream the body up, parse the response and stream it
 * down, then pool or close the upstream connection. After a 101, a tunnel.
 *
 * About 1,000 lines because it is one state machine over one proxy_req_t:
 * the retry decides from what the request pump sent, the response pump
 * from what the retry left, the tunnel from both; split by step, each part
 * would reach into the others' state. What needs none of it lives
 * elsewhere: heads are built in http_out.c, connections pooled in
 * upstream.c, bodies filtered in filter.c. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "exchange.h"
#include "sock.h"
#include "handlers.h"
#include "log.h"

static llhttp_settings_t resp_settings;

static const char CRLF[] = "\r\n";
static const char LAST_CHUNK[] = HTTP_LAST_CHUNK;

/* One request's exchange with its upstreams: the handler's state in the
 * exchange (xreq_t.hstate, lent for the request), zeroed by proxy_start. */
typedef struct proxy_req {
    up_conn_t *up;
    up_pool_t *pool;
    size_t olen;    /* the upstream request head in obuf, kept for a retry */
    uint64_t tried; /* bit i: upstream i was tried for this request */
    int attempts;   /* upstreams dialled or taken for this request (lb_retries) */
    int replayable; /* the whole request is still at hand: it may go again */
    char *replay;   /* its body, in rbuf, when replayable */
    size_t replay_len;
    uint64_t t_head_sent; /* uv_now() when the head went up (unhealthy_latency) */
    uint64_t try_deadline;
    /* the answer when no try succeeds: Caddy's, the last failure of an
     * upstream it would have tried too, 503 when it would have tried none */
    int fail_status;
    int try_counts; /* the upstream tried now is one Caddy would have tried */
    unsigned head_sent : 1;  /* the request head went upstream */
    unsigned req_sent : 1;   /* all of the request went upstream */
    unsigned resp_done : 1;  /* the whole response was read from upstream */
    unsigned resp_head : 1;  /* the response head is parsed, paused on it */
    unsigned resp_bytes : 1; /* the upstream sent anything at all */
    unsigned resp_sent : 1;  /* all of the response went to the client (or is queued) */
    unsigned wrote : 1;      /* some of the request went to this upstream connection */
    int req_framing;         /* enum http_framing, towards the upstream */
    uint64_t req_length;     /* the body's length with HTTP_BODY_LENGTH */
    uint64_t body_up;        /* body bytes this upstream got after the head */
    int resp_framing;        /* enum http_framing, towards the client */
    char up_chunk[HTTP_CHUNK_LINE_MAX];   /* chunk-size line of the body going up */
    char down_chunk[HTTP_CHUNK_LINE_MAX]; /* chunk-size line of the body going down */
} proxy_req_t;

_Static_assert(sizeof(proxy_req_t) <= EXCHANGE_HANDLER_STATE, "proxy_req_t fits xreq_t.hstate");

static proxy_req_t *pr(const exchange_t *x)
{
    return (proxy_req_t *)x->cur->hstate;
}

/* Whether X relays with U, asked after a step that may have finished X's
 * request (its state gone back to the worker; a pipelined next one may
 * have begun) or moved it to another upstream: a proxy_req_t taken before
 * that step is not to be read. */
static int relays_with(const exchange_t *x, const up_conn_t *u)
{
    return x->cur != NULL && pr(x)->up == u;
}

/* Queues LEN body bytes at BODY in IOV as FRAMING wants them: as they
 * are, or as one chunk whose size line is written into CHUNK
 * (HTTP_CHUNK_LINE_MAX). Nothing for none: an empty chunk would end the
 * body. */
static void add_body(uv_buf_t *iov, unsigned *n, int framing, char *chunk, char *body, size_t len)
{
    if (len == 0)
        return;
    if (framing == HTTP_BODY_CHUNKED)
        iov[(*n)++] = (uv_buf_t){.base = chunk, .len = http_chunk_line(chunk, len)};
    iov[(*n)++] = (uv_buf_t){.base = body, .len = len};
    if (framing == HTTP_BODY_CHUNKED)
        iov[(*n)++] = (uv_buf_t){.base = (char *)CRLF, .len = 2};
}

/* The same for the NB slices of BODY (a body filter's output) as one
 * chunk. Returns their length. */
static size_t add_body_slices(uv_buf_t *iov, unsigned *n, int framing, char *chunk,
                              const uv_buf_t *body, unsigned nb)
{
    size_t len = 0;
    for (unsigned i = 0; i < nb; i++)
        len += body[i].len;
    if (len == 0)
        return 0;
    if (framing == HTTP_BODY_CHUNKED)
        iov[(*n)++] = (uv_buf_t){.base = chunk, .len = http_chunk_line(chunk, len)};
    for (unsigned i = 0; i < nb; i++)
        if (body[i].len > 0)
            iov[(*n)++] = body[i];
    if (framing == HTTP_BODY_CHUNKED)
        iov[(*n)++] = (uv_buf_t){.base = (char *)CRLF, .len = 2};
    return len;
}

/* The end of a body: the last chunk when chunked (no trailers). */
static void add_end(uv_buf_t *iov, unsigned *n, int framing)
{
    if (framing == HTTP_BODY_CHUNKED)
        iov[(*n)++] = uv_buf_init((char *)LAST_CHUNK, sizeof(LAST_CHUNK) - 1);
}

static const cfg_proxy_t *proxy_cfg(const exchange_t *x)
{
    return &x->cur->route.handler->u.proxy;
}

static exchange_t *owner(const up_conn_t *u)
{
    return u->owner;
}

static void proxy_try(exchange_t *x);
static void proxy_abort(exchange_t *x);
static void proxy_pump_request(exchange_t *x);
static void proxy_tunnel_from_client(exchange_t *x);
static void on_up_connected(up_conn_t *u, int status);
static void pump_response(exchange_t *x);
static void tunnel_from_upstream(exchange_t *x);

static up_target_t *target_of(const exchange_t *x)
{
    return (up_target_t *)pr(x)->pool->target; /* its health fields are atomics, shared */
}

static int idempotent(int method)
{
    return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS ||
           method == HTTP_PUT || method == HTTP_DELETE || method == HTTP_TRACE;
}

/* ---- failures ----------------------------------------------------------- */

/* Closes this request's upstream connection, if any, for WHY (enum
 * metrics_close). */
static void drop_up(exchange_t *x, int why)
{
    proxy_req_t *q = pr(x);
    if (q->up == NULL)
        return;
    up_close(q->up, why);
    q->up = NULL;
}

static void proxy_abort(exchange_t *x)
{
    drop_up(x, METRICS_CLOSE_FAILED);
}

/* Whether the request may be sent again without a risk of doing its work
 * twice (RFC 9110 9.2.2): an idempotent method, or an Idempotency-Key
 * field (as Go's transport takes it); a proxy must not retry others. */
static int retry_safe(const exchange_t *x)
{
    return idempotent(x->cur->req.parser.method) ||
           http_head_find(&x->cur->req, "idempotency-key") != NULL ||
           http_head_find(&x->cur->req, "x-idempotency-key") != NULL;
}

/* The upstream failed this request (ERR: a libuv error, or PS_EPROTO for a
 * response we cannot relay). Retry where that cannot duplicate work, else
 * 502/504 if the client has seen nothing yet, else cut the client off. */
static void up_failed(exchange_t *x, int err)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    const char *why = err == PS_EPROTO ? "malformed response" : uv_strerror(err);
    /* a pooled connection the upstream closed just as we reused it (its
     * idle timeout ran out first): the upstream closed it, no failure of
     * its own, and the request goes once more on a fresh connection when
     * that cannot run it twice: a safe one whose body is still at hand,
     * or one none of which went out (as Go's transport) */
    int closed = u->reused && !q->resp_bytes &&
                 (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE);
    int stale = closed && q->replayable && (retry_safe(x) || !q->wrote);
    if (!closed) {
        log_warn("exchange %llu %s: upstream %s: %s (state %s)", (unsigned long long)x->id,
                 x->peer_ip, u->pool->target->hostport, why, exchange_resp_name(x->rs));
        /* a reset is the upstream going away: out at once; the rest counts */
        up_target_failed(target_of(x), proxy_cfg(x), err == UV_ECONNRESET, why);
    } else if (!stale) {
        log_warn("exchange %llu %s: upstream %s closed a pooled connection as it was reused (%s); "
                 "the request is not retried: it may have run", (unsigned long long)x->id,
                 x->peer_ip, u->pool->target->hostport, why);
    }
    drop_up(x, closed ? METRICS_CLOSE_UPSTREAM : METRICS_CLOSE_FAILED);
    if (x->rs == XRESP_CLOSED)
        return;
    if (stale) {
        exchange_resp_to(x, XRESP_PREPARE);
        q->up = up_dial(q->pool, x, proxy_cfg(x)->dial_timeout, on_up_connected);
        return;
    }
    /* nothing came back and the request can be sent again unchanged: an
     * idempotent one without a body goes to another upstream; anything else
     * might run twice (a POST whose upstream died after reading it) */
    if (!q->resp_bytes && !x->write_pending && q->replayable &&
        idempotent(x->cur->req.parser.method) && err != UV_ETIMEDOUT) {
        exchange_resp_to(x, XRESP_PREPARE);
        if (q->try_counts)
            q->fail_status = 502;
        proxy_try(x);
        return;
    }
    if (x->resp_started || x->write_pending) {
        exchange_close(x);
        return;
    }
    int status = err == UV_ETIMEDOUT ? 504 : 502;
    x->keep_alive = x->keep_alive && x->rq == XREQ_DONE;
    exchange_respond(x, status, NULL, NULL, 0);
}

static void fail_request(exchange_t *x, int status)
{
    const cfg_proxy_t *p = proxy_cfg(x);
    log_warn("exchange %llu %s: no upstream answered: %d", (unsigned long long)x->id, x->peer_ip,
             status);
    if (status == 503) {
        /* no upstream available: tell the client when it is worth coming back */
        char ra[48];
        uint64_t secs = p->lb_try_duration > 1000 ? (p->lb_try_duration + 999) / 1000 : 1;
        snprintf(ra, sizeof(ra), "Retry-After: %llu\r\n", (unsigned long long)secs);
        exchange_respond(x, 503, ra, NULL, 0);
        return;
    }
    exchange_respond(x, status, NULL, NULL, 0);
}


/* ---- timers ------------------------------------------------------------- */

static void on_up_timeout(deadline_t *d)
{
    up_conn_t *u = d->data;
    exchange_t *x = owner(u);
    if (x == NULL)
        return;
    if (x->rs == XRESP_TUNNEL) {
        exchange_close(x);
        return;
    }
    up_failed(x, UV_ETIMEDOUT);
}

static void up_arm_timer(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    if (u == NULL || u->state != UP_S_ACTIVE)
        return;
    const cfg_proxy_t *p = proxy_cfg(x);
    uint64_t ms = 0;
    if (x->rs == XRESP_TUNNEL)
        ms = 0; /* the client side's idle clock covers both */
    else if (u->write_pending)
        ms = p->write_timeout;
    else if (x->write_pending)
        ms = 0; /* we stopped reading it; the client's write clock runs */
    else if (!x->resp_started)
        ms = q->req_sent ? p->response_header_timeout : 0;
    else
        ms = p->read_timeout;
    if (ms == 0)
        deadline_stop(&u->timer);
    else
        deadline_start(&u->timer, on_up_timeout, ms);
}

/* ---- reading from the upstream ------------------------------------------ */

static void on_up_read(up_conn_t *u, ssize_t nread);

static void update_up_reading(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    if (q->up != NULL)
        up_update_reading(q->up);
}

static void tunnel_shutdown_done(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void tunnel_check_end(exchange_t *x);

static void on_up_read(up_conn_t *u, ssize_t nread)
{
    exchange_t *x = owner(u);
    proxy_req_t *q = pr(x);
    if (nread < 0) {
        u->eof = 1;
        uv_read_stop((uv_stream_t *)&u->tcp);
        if (x->rs == XRESP_TUNNEL) {
            if (nread != UV_EOF) {
                exchange_close(x);
                return;
            }
            tunnel_check_end(x);
            return;
        }
        llhttp_t *p = &u->resp.parser;
        if (nread == UV_EOF && x->resp_started && !q->resp_done &&
            llhttp_message_needs_eof(p)) {
            /* a close-delimited body ends here (RFC 9112 6.3 rule 8) */
            if (llhttp_get_errno(p) == HPE_PAUSED)
                llhttp_resume(p);
            if (llhttp_finish(p) == HPE_OK || q->resp_done) {
                pump_response(x);
                return;
            }
        }
        if (q->resp_done)
            return; /* complete already; the connection just won't be pooled */
        if (nread == UV_EOF && x->resp_started && (x->write_pending || u->rstart < u->rlen))
            return; /* what came before the close goes out first (pump_response) */
        up_failed(x, (int)nread);
        return;
    }
    q->resp_bytes = 1;
    if (x->rs == XRESP_TUNNEL)
        tunnel_from_upstream(x);
    else if (x->rs == XRESP_RELAY)
        pump_response(x);
    if (x->rs != XRESP_CLOSED && relays_with(x, u)) {
        update_up_reading(x);
        up_arm_timer(x);
    }
}

/* ---- the response ------------------------------------------------------- */

static int on_resp_begin(llhttp_t *p)
{
    up_conn_t *u = container_of(p, up_conn_t, resp.parser);
    http_head_reset(&u->resp);
    return 0;
}

static int on_resp_headers(llhttp_t *p)
{
    up_conn_t *u = container_of(p, up_conn_t, resp.parser);
    exchange_t *x = owner(u);
    pr(x)->resp_head = 1;
    /* a response to HEAD, a 1xx, 204 or 304 has no body whatever its
     * fields say (RFC 9112 6.3); llhttp cannot know the method and waits
     * for a 304's Content-Length bytes, so tell it as its "return 1"
     * would, and pause to relay the head */
    if (http_response_bodiless(p->status_code, x->head_method))
        p->flags |= F_SKIPBODY;
    return HPE_PAUSED;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    up_conn_t *u = container_of(p, up_conn_t, resp.parser);
    http_body_append(&u->body, &u->body_len, at, len);
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    up_conn_t *u = container_of(p, up_conn_t, resp.parser);
    if (p->status_code < 200)
        return 0; /* an interim response; the final one follows */
    pr(owner(u))->resp_done = 1;
    return HPE_PAUSED;
}

static void settings_init(void)
{
    http_settings_init(&resp_settings);
    resp_settings.on_message_begin = on_resp_begin;
    resp_settings.on_headers_complete = on_resp_headers;
    resp_settings.on_body = on_resp_body;
    resp_settings.on_message_complete = on_resp_complete;
}

static int client_http10(const exchange_t *x)
{
    return x->cur->req.parser.http_major == 1 && x->cur->req.parser.http_minor == 0;
}

static void start_tunnel(exchange_t *x);

/* Builds the head the client gets into hbuf and queues it in IOV. Returns
 * 0, 1 when the exchange became a tunnel, -1 when it failed. */
static int relay_head(exchange_t *x, uv_buf_t *iov, unsigned *n)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    llhttp_t *p = &u->resp.parser;
    int status = p->status_code;
    if (http_head_analyze(&u->resp) != 0 || (status == 101 && !x->upgrade)) {
        up_failed(x, PS_EPROTO);
        return -1;
    }
    int interim = status < 200 && status != 101;
    if (interim && client_http10(x))
        return 0; /* RFC 9110 15.2: no 1xx to an HTTP/1.0 client */

    http_resp_out_t r;
    memset(&r, 0, sizeof(r));
    r.resp = &u->resp;
    r.vars = &x->cur->vars;
    r.http10 = client_http10(x);
    filter_head_t fh;
    if (!interim) {
        int refused = filter_head(x->cur->route.filters, x->cur->route.n_filters, &fh) < 0;
        r.body_filtered = fh.n_body > 0;
        /* HTTP/2 frames the body itself: the bytes as they are, ended with the stream */
        q->resp_framing = http_response_framing(
            &u->resp, x->head_method, r.http10 || x->xport->version == 2, r.body_filtered);
        if (refused || (fh.n_body > 0 && q->resp_framing != HTTP_BODY_NONE &&
                        filter_body_open(&fh, &x->bodyf) < 0)) {
            /* a filter refused: the failure is ours, not the upstream's */
            proxy_abort(x);
            if (x->resp_started)
                exchange_close(x);
            else
                exchange_respond(x, 500, NULL, NULL, 0);
            return -1;
        }
        r.down = &proxy_cfg(x)->header_down;
        r.ops = fh.ops;
        r.n_ops = fh.n_ops;
        r.upgrade = status == 101;
        /* the client is still sending: after this response we must close */
        if (x->rq != XREQ_DONE || q->resp_framing == HTTP_BODY_EOF)
            x->keep_alive = 0;
        const cfg_proxy_t *px = proxy_cfg(x);
        const cfg_status_t *us = &px->unhealthy_status;
        if (us->code != 0 && (us->is_class ? status / 100 == us->code : status == us->code)) {
            char why[32];
            snprintf(why, sizeof(why), "status %d", status);
            up_target_failed(target_of(x), px, 0, why);
        }
        if (px->unhealthy_latency != 0 &&
            uv_now(&x->w->loop) - q->t_head_sent > px->unhealthy_latency)
            up_target_failed(target_of(x), px, 0, "slow response head");
        r.keep_alive = x->keep_alive;
        r.framing = q->resp_framing;
        x->status = status;
    }
    if (x->hbuf == NULL)
        x->hbuf = buf_get(&x->w->bufs);
    int len = http_build_response(x->hbuf, x->w->bufs.size, &r);
    if (len < 0) {
        up_failed(x, PS_EPROTO);
        return -1;
    }
    iov[(*n)++] = uv_buf_init(x->hbuf, (unsigned)len);
    if (!interim)
        x->resp_started = 1;
    if (status == 101) {
        int wr = exchange_write(x, iov, *n);
        *n = 0;
        if (wr < 0) {
            exchange_close(x);
            return -1;
        }
        start_tunnel(x);
        return 1;
    }
    return 0;
}

/* How long U may idle in the pool: keepalive, or less when the upstream
 * announced a shorter idle timeout (Keep-Alive: timeout=N, Node.js's 5 s):
 * closing it first, with a margin, keeps a request from meeting the
 * upstream's close. 0: not at all. */
static uint64_t idle_ms(const cfg_proxy_t *p, const up_conn_t *u)
{
    int secs = u->resp.keep_alive_secs;
    if (secs < 0)
        return p->keepalive;
    uint64_t ms = (uint64_t)secs * 1000;
    ms -= ms / 2 < 1000 ? ms / 2 : 1000;
    return ms < p->keepalive ? ms : p->keepalive;
}

static void proxy_finish(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    const cfg_proxy_t *p = proxy_cfg(x);
    q->up = NULL;
    /* pool it only if both messages were framed cleanly to their ends */
    if (q->req_sent && !u->write_pending && !u->eof && !p->keepalive_off &&
        llhttp_should_keep_alive(&u->resp.parser) && u->rstart == u->rlen) {
        deadline_stop(&u->timer);
        up_release(u, p, x->targets, idle_ms(p, u));
    } else {
        up_close(u, METRICS_CLOSE_NOT_REUSABLE);
    }
    if (x->rq != XREQ_DONE)
        x->keep_alive = 0;
    exchange_done(x);
}

/* Writes what pump_response gathered; 0, or -1 when the client is gone. */
static int flush_response(exchange_t *x, uv_buf_t *iov, unsigned *n)
{
    up_conn_t *u = pr(x)->up;
    if (*n == 0)
        return 0;
    int r = exchange_write(x, iov, *n);
    *n = 0;
    if (r < 0) {
        exchange_close(x);
        return -1;
    }
    if (r == 1 && u->rstart == u->rlen)
        u->rstart = u->rlen = 0; /* all went out: the buffer is free again */
    return 0;
}

/* Passes the upstream's body bytes of this pass (the last ones when the
 * response is done) through the response's body filters and queues what
 * they hand on in IOV. 0, or -1 when a filter failed: the response is cut
 * (its head is out), the failure ours, not the upstream's. */
static int filter_response_body(exchange_t *x, uv_buf_t *iov, unsigned *n)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    uv_buf_t body = {.base = u->body, .len = u->body_len}, out[FILTER_BODY_IOV];
    int k = filter_body_run(x->bodyf, &body, u->body_len > 0, q->resp_done, out);
    if (k < 0) {
        log_warn("exchange %llu: a response body filter failed; the response is cut",
                 (unsigned long long)x->id);
        proxy_abort(x);
        exchange_close(x);
        return -1;
    }
    x->bytes_out += add_body_slices(iov, n, q->resp_framing, q->down_chunk, out, (unsigned)k);
    return 0;
}

static void pump_response(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    uv_buf_t iov[4 + FILTER_BODY_IOV]; /* a head, a chunk line, the body, CRLF, the last chunk */
    unsigned n = 0;
    while (x->rs == XRESP_RELAY && !x->write_pending && !q->resp_sent) {
        int head = 0;
        u->body = NULL;
        u->body_len = 0;
        if (!q->resp_done) {
            llhttp_t *p = &u->resp.parser;
            int paused = llhttp_get_errno(p) == HPE_PAUSED;
            if (!paused && u->rstart == u->rlen)
                break;
            if (paused)
                llhttp_resume(p);
            const char *start = u->rbuf + u->rstart;
            llhttp_errno_t err = llhttp_execute(p, start, u->rlen - u->rstart);
            if (err == HPE_OK) {
                u->rstart = u->rlen;
                /* a head fills the buffer and is not over: its fields are
                 * slices of the buffer, which cannot take a byte more, so
                 * no read would ever end it (this once left the request
                 * hanging with no clock running); the limit is the one a
                 * client's head meets, max_header_size and some */
                if (!x->resp_started && u->rlen == x->w->bufs.size) {
                    log_debug("exchange %llu: upstream response head over %zu bytes",
                              (unsigned long long)x->id, x->w->bufs.size);
                    up_failed(x, PS_EPROTO);
                    return;
                }
            } else if (err == HPE_PAUSED) {
                u->rstart = (size_t)(llhttp_get_error_pos(p) - u->rbuf);
            } else {
                log_debug("exchange %llu: upstream response: %s", (unsigned long long)x->id,
                          llhttp_get_error_reason(p));
                up_failed(x, PS_EPROTO);
                return;
            }
            if (q->resp_head) {
                q->resp_head = 0;
                head = 1;
                if (relay_head(x, iov, &n) != 0)
                    return;
            }
        }
        if (x->bodyf != NULL) {
            if ((u->body_len > 0 || q->resp_done) && filter_response_body(x, iov, &n) < 0)
                return;
        } else if (u->body_len > 0 && q->resp_framing != HTTP_BODY_NONE) {
            add_body(iov, &n, q->resp_framing, q->down_chunk, u->body, u->body_len);
            x->bytes_out += u->body_len;
        }
        if (q->resp_done) {
            add_end(iov, &n, q->resp_framing);
            q->resp_sent = 1;
        }
        /* a final head goes out with the body bytes behind it: one writev
         * (an interim one goes alone: the next head is built in hbuf too;
         * a body filter's output must be out before its next call) */
        if (head && x->resp_started && !q->resp_done && n <= 2 && x->bodyf == NULL)
            continue;
        if (flush_response(x, iov, &n) < 0)
            return;
    }
    if (x->rs == XRESP_RELAY && flush_response(x, iov, &n) < 0)
        return;
    if (x->rs != XRESP_RELAY || q->up != u || x->write_pending)
        return;
    if (q->resp_sent)
        proxy_finish(x);
    else if (u->eof && u->rstart == u->rlen)
        up_failed(x, UV_EOF); /* the upstream cut it short; all it sent is out */
}

static void proxy_on_client_written(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    if (x->rs == XRESP_TUNNEL) {
        if (u != NULL && u->rstart == u->rlen)
            u->rstart = u->rlen = 0;
        tunnel_from_upstream(x);
        return;
    }
    if (u == NULL)
        return;
    if (u->rstart == u->rlen)
        u->rstart = u->rlen = 0;
    pump_response(x);
    if (x->rs == XRESP_RELAY && relays_with(x, u)) {
        update_up_reading(x);
        up_arm_timer(x);
    }
}

/* ---- the request -------------------------------------------------------- */

static void on_up_written(void *conn, int status)
{
    up_conn_t *u = conn; /* closing or not, freed only from a later callback */
    u->write_pending = 0;
    if (status == UV_ECANCELED)
        return;
    exchange_t *x = owner(u);
    if (x == NULL)
        return;
    if (status < 0) {
        up_failed(x, status);
        return;
    }
    if (x->rstart == x->rlen && !(x->rq == XREQ_DONE && pr(x)->replayable))
        x->rstart = x->rlen = x->head_end; /* sent: the body area is free again */
    up_arm_timer(x);
    if (x->rs == XRESP_TUNNEL) {
        proxy_tunnel_from_client(x);
    } else {
        exchange_process(x); /* decrypts (TLS) and parses what waited, sends it up */
        return;
    }
    if (x->rs != XRESP_CLOSED) {
        exchange_update_reading(x);
        exchange_arm_timer(x);
        up_arm_timer(x);
    }
}

/* The body would break the framing its head gave the upstream (the
 * framing invariant, http_body_keeps_framing): nothing more goes up, the
 * upstream connection (which may hold part of it) is closed, and the
 * request ends as malformed. */
static void framing_broken(exchange_t *x, size_t len)
{
    log_warn("exchange %llu %s: request body does not match its framing (%llu bytes up, %zu more, "
             "%s): not forwarded", (unsigned long long)x->id, x->peer_ip,
             (unsigned long long)pr(x)->body_up, len, x->rq == XREQ_DONE ? "ended" : "open");
    proxy_abort(x);
    exchange_malformed(x);
}

static void proxy_pump_request(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    if (x->rs != XRESP_RELAY || u == NULL || u->write_pending)
        return;
    uv_buf_t iov[6];
    unsigned n = 0;
    int resend = 0; /* the head goes again, to another upstream (a retry) */
    if (!q->head_sent) {
        iov[n++] = uv_buf_init(x->obuf, (unsigned)q->olen);
        q->head_sent = 1;
        q->body_up = 0;
        q->t_head_sent = uv_now(&x->w->loop);
        resend = x->rq == XREQ_DONE;
    }
    char *body = NULL;
    size_t len = 0;
    /* a paused parser may complete a bodiless request without new bytes */
    if (x->rq != XREQ_DONE &&
        (x->rstart < x->rlen || llhttp_get_errno(&x->cur->req.parser) == HPE_PAUSED)) {
        llhttp_errno_t err = exchange_parse(x);
        if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
            /* a broken body (bad chunk): the upstream got part of it */
            log_debug("exchange %llu: request body: %s", (unsigned long long)x->id,
                      llhttp_get_error_reason(&x->cur->req.parser));
            proxy_abort(x);
            x->keep_alive = 0;
            if (x->resp_started || x->write_pending)
                exchange_close(x);
            else
                exchange_respond(x, http_request_error_status(&x->cur->req, err), NULL, NULL, 0);
            return;
        }
        body = x->body;
        len = x->body_len;
        /* a body that arrived whole in one pass stays in the buffer, so the
         * request can go to another upstream if this one dies without a word */
        q->replayable = resend == 0 && x->rq == XREQ_DONE && x->bytes_in == x->body_len;
        if (q->replayable) {
            q->replay = x->body;
            q->replay_len = x->body_len;
        }
    } else if (resend && x->rq == XREQ_DONE && q->replayable) {
        body = q->replay;
        len = q->replay_len;
    }
    int ends = x->rq == XREQ_DONE && !q->req_sent;
    /* every body byte that goes up passes here, whichever protocol brought it */
    if (http_body_keeps_framing(q->req_framing, q->req_length, q->body_up, len, ends) < 0) {
        framing_broken(x, len);
        return;
    }
    add_body(iov, &n, q->req_framing, q->up_chunk, body, len);
    q->body_up += len;
    if (ends) {
        add_end(iov, &n, q->req_framing);
        q->req_sent = 1;
    }
    if (n == 0)
        return;
    int r = sock_write((uv_stream_t *)&u->tcp, &u->wr, iov, n, on_up_written);
    if (r < 0) {
        up_failed(x, r);
        return;
    }
    q->wrote = 1;
    if (r == 0)
        u->write_pending = 1;
    else if (x->rstart == x->rlen && !(x->rq == XREQ_DONE && q->replayable))
        x->rstart = x->rlen = x->head_end; /* free for more body (a replay keeps it) */
    up_arm_timer(x);
}

/* The upstream connection is ready: send the head, then the body. */
static void on_up_ready(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    up_conn_t *u = q->up;
    const cfg_proxy_t *p = proxy_cfg(x);
    http_head_init(&u->resp, HTTP_RESPONSE, &resp_settings);
    if (u->rbuf == NULL)
        u->rbuf = buf_get(&x->w->bufs);
    if (u->resp.hdrs == NULL)
        u->resp.hdrs = (http_hdr_t *)buf_get(&x->w->tables);
    u->rstart = u->rlen = 0;
    u->on_read = on_up_read;
    if (x->obuf == NULL)
        x->obuf = buf_get(&x->w->bufs);
    http_req_out_t r;
    memset(&r, 0, sizeof(r));
    r.req = &x->cur->req;
    r.vars = &x->cur->vars;
    r.ops = &p->header_up;
    r.client_ip = x->peer_ip;
    r.https = x->https;
    r.trusted = cfg_cidr_contains(p->trusted, p->n_trusted, &x->peer.sa);
    r.framing = q->req_framing;
    r.length = q->req_length;
    r.upgrade = x->upgrade;
    int len = http_build_request(x->obuf, x->w->bufs.size, &r);
    if (len < 0) {
        proxy_abort(x);
        exchange_respond(x, 431, NULL, NULL, 0);
        return;
    }
    q->olen = (size_t)len;
    q->head_sent = q->req_sent = q->resp_done = q->resp_head = q->resp_bytes = 0;
    q->resp_sent = q->wrote = 0;
    exchange_resp_to(x, XRESP_RELAY);
    update_up_reading(x);
    /* send the head and what is buffered of the body; on TLS that loop
     * also decrypts what waited while we connected */
    exchange_process(x);
}

static void on_up_connected(up_conn_t *u, int status)
{
    exchange_t *x = owner(u);
    proxy_req_t *q = pr(x);
    if (status < 0) {
        log_warn("exchange %llu %s: upstream %s: dial failed: %s", (unsigned long long)x->id,
                 x->peer_ip, u->pool->target->hostport, uv_strerror(status));
        /* refused or unreachable: out at once; a timeout counts towards max_fails */
        up_target_failed(target_of(x), proxy_cfg(x), status != UV_ETIMEDOUT, uv_strerror(status));
        proxy_abort(x);
        if (q->try_counts)
            q->fail_status = status == UV_ETIMEDOUT ? 504 : 502;
        proxy_try(x);
        return;
    }
    on_up_ready(x);
}

static void proxy_try(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    const cfg_proxy_t *p = proxy_cfg(x);
    worker_t *w = x->w;
    int pick = UP_PICK_HEALTHY;
    int i = -1;
    if (p->lb_retries < 0 || q->attempts <= p->lb_retries)
        i = up_select(&w->up, p, x->targets, q->tried, x->peer_ip, &pick);
    if (i < 0) {
        /* lb_try_duration: keep trying every lb_try_interval until it runs out */
        uint64_t now = uv_now(&w->loop);
        if (q->try_deadline != 0 && now < q->try_deadline) {
            uint64_t left = q->try_deadline - now;
            q->tried = 0;
            exchange_start_timer(x, left < p->lb_try_interval ? left : p->lb_try_interval);
            return;
        }
        if (pick == UP_PICK_CLOSED) {
            log_warn("exchange %llu: every upstream fails its health check "
                     "(health_fail_closed)", (unsigned long long)x->id);
            fail_request(x, 503);
        } else {
            /* as Caddy: the last dial or exchange error (502, 504), also
             * after lb_try_duration; 503 only when no upstream was
             * available to try at all */
            fail_request(x, q->fail_status);
        }
        return;
    }
    /* Caddy tries no upstream its checks took out (passive ones only when
     * fail_duration is given: it has none by default); psproxy still dials
     * them as a probe, but their failure is not Caddy's */
    q->try_counts = pick == UP_PICK_HEALTHY || (pick == UP_PICK_PASSIVE && !p->fail_duration_set);
    q->attempts++;
    q->tried |= 1ull << i;
    up_target_t *tg = up_target_find(x->targets, p->ups[i].hostport);
    q->pool = up_pool_get(&w->up, tg);
    x->cur->vars.upstream_hostport =
        uv_buf_init((char *)p->ups[i].hostport, strlen(p->ups[i].hostport));
    q->up = up_take(q->pool, x);
    if (q->up != NULL) {
        on_up_ready(x);
        return;
    }
    /* a name that does not resolve fails in on_up_connected, as a
     * refused dial: the next upstream is tried from there */
    q->up = up_dial(q->pool, x, p->dial_timeout, on_up_connected);
}

static void proxy_on_retry_timer(exchange_t *x)
{
    proxy_try(x);
}

static void proxy_start(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    /* the chunk-size lines at its end are written before each use */
    memset(q, 0, offsetof(proxy_req_t, up_chunk));
    const cfg_proxy_t *p = proxy_cfg(x);
    const llhttp_t *req = &x->cur->req.parser;
    /* a declared length over the limit never reaches the upstream */
    if (x->cur->route.body_limit != 0 && (req->flags & F_CONTENT_LENGTH) &&
        req->content_length > x->cur->route.body_limit) {
        x->keep_alive = 0;
        exchange_respond(x, 413, NULL, NULL, 0);
        return;
    }
    exchange_resp_to(x, XRESP_PREPARE);
    deadline_stop(&x->timer);
    q->req_framing = http_request_framing(&x->cur->req);
    /* llhttp counts content_length down as the body passes: keep it now */
    q->req_length = q->req_framing == HTTP_BODY_LENGTH ? x->cur->req.parser.content_length : 0;
    q->tried = 0;
    q->attempts = 0;
    q->pool = NULL;
    q->fail_status = 503; /* Caddy's "no upstreams available" */
    q->try_counts = 0;
    q->replayable = q->req_framing == HTTP_BODY_NONE; /* a body must arrive whole first */
    q->replay = NULL;
    q->replay_len = 0;
    q->try_deadline = p->lb_try_duration > 0 ? uv_now(&x->w->loop) + p->lb_try_duration : 0;
    proxy_try(x);
}

static void proxy_on_client_eof(exchange_t *x)
{
    /* the request is whole; a half-closed client still gets its response */
    if (x->rs == XRESP_TUNNEL)
        tunnel_check_end(x);
}

/* ---- tunnel ------------------------------------------------------------- */

static void tunnel_check_end(exchange_t *x)
{
    up_conn_t *u = pr(x)->up;
    if (u == NULL) {
        exchange_close(x);
        return;
    }
    /* pass each side's EOF on once its bytes are out; done when both ended */
    if (x->eof && x->rstart == x->rlen && !u->write_pending && !uv_is_closing((uv_handle_t *)&u->tcp) &&
        u->sreq.handle == NULL)
        uv_shutdown(&u->sreq, (uv_stream_t *)&u->tcp, tunnel_shutdown_done);
    if (u->eof && u->rstart == u->rlen && !x->write_pending)
        x->xport->shutdown_write(x);
    if (x->rs == XRESP_CLOSED)
        return;
    if (x->eof && u->eof && !x->write_pending && !u->write_pending)
        exchange_close(x);
}

static void proxy_tunnel_from_client(exchange_t *x)
{
    up_conn_t *u = pr(x)->up;
    if (u == NULL) {
        exchange_close(x);
        return;
    }
    for (;;) {
        x->xport->fill(x); /* TLS: more may be decrypted now that there is room */
        x->xport->input_eof(x); /* a close_notify read: its end is passed on */
        if (x->rs == XRESP_CLOSED || u->write_pending || x->rstart == x->rlen)
            break;
        uv_buf_t b = uv_buf_init(x->rbuf + x->rstart, (unsigned)(x->rlen - x->rstart));
        int r = sock_write((uv_stream_t *)&u->tcp, &u->wr, &b, 1, on_up_written);
        if (r < 0) {
            exchange_close(x);
            return;
        }
        x->rstart = x->rlen;
        if (r == 0) {
            u->write_pending = 1;
            break;
        }
        x->rstart = x->rlen = 0;
    }
    if (x->rs != XRESP_CLOSED)
        tunnel_check_end(x);
}

static void tunnel_from_upstream(exchange_t *x)
{
    up_conn_t *u = pr(x)->up;
    if (!x->write_pending && u->rstart < u->rlen) {
        uv_buf_t b = uv_buf_init(u->rbuf + u->rstart, (unsigned)(u->rlen - u->rstart));
        int r = exchange_write(x, &b, 1);
        if (r < 0) {
            exchange_close(x);
            return;
        }
        u->rstart = u->rlen;
        if (r == 1)
            u->rstart = u->rlen = 0;
    }
    if (x->rs == XRESP_TUNNEL) {
        update_up_reading(x);
        tunnel_check_end(x);
    }
}

/* Seconds a tunnel's socket may be silent before TCP asks the peer
 * whether it is still there: a tunnel has no idle timeout of its own. */
#define PROXY_TUNNEL_KEEPALIVE_S 30

static void start_tunnel(exchange_t *x)
{
    proxy_req_t *q = pr(x);
    exchange_access_log(x);
    exchange_resp_to(x, XRESP_TUNNEL);
    x->xport->keepalive(x, PROXY_TUNNEL_KEEPALIVE_S);
    uv_tcp_keepalive(&q->up->tcp, 1, PROXY_TUNNEL_KEEPALIVE_S);
    /* the head is relayed; what follows either head is the new protocol */
    deadline_stop(&q->up->timer);
    /* nothing is replayed from here on: on_up_written frees the buffer
     * once a write is out (kept for a replay, it filled up under an
     * upstream that reads slowly and the client was never read again) */
    q->replayable = 0;
    x->head_end = 0;
    tunnel_from_upstream(x);
    if (x->rs == XRESP_TUNNEL)
        proxy_tunnel_from_client(x);
    if (x->rs == XRESP_TUNNEL) {
        exchange_update_reading(x);
        exchange_arm_timer(x);
    }
}

/* ---- the handler -------------------------------------------------------- */

static int proxy_body_blocked(const exchange_t *x)
{
    proxy_req_t *q = pr(x);
    return q->up != NULL && q->up->write_pending;
}

static const char *proxy_upstream(const exchange_t *x)
{
    proxy_req_t *q = pr(x);
    return q->pool != NULL ? q->pool->target->hostport : NULL;
}

const handler_ops_t proxy_handler = {
    .name = "reverse_proxy",
    .init = settings_init,
    .start = proxy_start,
    .request_body = proxy_pump_request,
    .client_written = proxy_on_client_written,
    .client_eof = proxy_on_client_eof,
    .tunnel_input = proxy_tunnel_from_client,
    .timer = proxy_on_retry_timer,
    .abort = proxy_abort,
    .body_blocked = proxy_body_blocked,
    .upstream = proxy_upstream,
};
