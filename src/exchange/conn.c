/* The client connection: accepts, runs the TLS handshake and the reading
 * side of the record pump, and carries requests as the HTTP/1.1 transport
 * of the exchange it embeds (exchange.h): reads heads and bodies into it,
 * writes its responses, then the next request, or lingers and closes. When
 * ALPN chose h2 it hosts the HTTP/2 session instead (h2.c), whose streams
 * are exchanges of their own (stream.c). */
#include "conn.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "log.h"
#include "stream.h"

#define CONN_LINGER_MS 2000

static exchange_t *begin_exchange(conn_t *c);

static conn_t *conn_of(const exchange_t *x)
{
    return container_of(x, conn_t, x);
}

const char *conn_state_name(int state)
{
    static const char *const names[] = {"handshake", "read_head", "exchange", "h2", "linger",
                                        "closing"};
    return state >= 0 && state < (int)PS_ARRAY_SIZE(names) ? names[state] : "?";
}

static void conn_set_state(conn_t *c, int state)
{
    log_debug("conn %llu: %s -> %s", (unsigned long long)c->x.id, conn_state_name(c->state),
              conn_state_name(state));
    c->state = state;
}

/* ---- lifetime ----------------------------------------------------------- */

static void closed_one(conn_t *c)
{
    if (--c->pending_closes > 0)
        return;
    if (c->tls != NULL) {
        tls_conn_dispose(c->tls);
        free(c->tls);
    }
    sock_wreq_release(&c->wr); /* its callback ran: nothing is queued on it */
    free(c->sreq);
    worker_t *w = c->x.w;
    exchange_dispose(&c->x);
    free(c);
    worker_conn_closed(w); /* a socket closed: the accept cap counts those */
}

static void on_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void on_clock_closed(deadline_t *d)
{
    closed_one(conn_of(d->data));
}

void conn_close(conn_t *c)
{
    if (c->state == CONN_S_CLOSING)
        return;
    conn_set_state(c, CONN_S_CLOSING);
    exchange_abort(&c->x);
    h2_session_close(c->h2);
    c->h2 = NULL;
    worker_t *w = c->x.w;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&w->metrics.open_conns, 1, memory_order_relaxed);
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    deadline_close(&c->x.timer, on_clock_closed);
    worker_drained(w);
}

static void conn_drain(conn_t *c)
{
    c->x.keep_alive = 0;
    if (c->state == CONN_S_H2) {
        h2_goaway(c->h2); /* it closes once its streams are answered */
        return;
    }
    int idle = (c->state == CONN_S_READ_HEAD && !c->x.head_started && c->x.rlen == 0 &&
                !c->write_pending) ||
               c->state == CONN_S_HANDSHAKE || c->state == CONN_S_LINGER;
    if (idle)
        conn_close(c);
}

/* ---- timers ------------------------------------------------------------- */

/* The connection's clocks (handshake, idle, head, linger, HTTP/2): they
 * run on its exchange's timer only while no exchange does (begin_exchange
 * stops them; the exchange's own callback takes over). */
static void conn_on_timeout(deadline_t *d)
{
    conn_t *c = conn_of(d->data);
    switch (c->state) {
    case CONN_S_READ_HEAD:
        if (c->x.rlen > 0 && !c->write_pending) {
            log_debug("conn %llu: request head not read in time", (unsigned long long)c->x.id);
            exchange_respond_error(begin_exchange(c), 408);
            return;
        }
        break;
    case CONN_S_H2:
        switch (h2_on_timeout(c->h2)) {
        case H2_ENDING:
            h2_session_close(c->h2);
            c->h2 = NULL;
            conn_linger(c);
            return;
        case H2_IDLE:
            return; /* a GOAWAY went out: it closes once that is written */
        default:
            break; /* timed out */
        }
        break;
    case CONN_S_HANDSHAKE:
        log_debug("conn %llu %s: TLS handshake not done in time", (unsigned long long)c->x.id,
                  c->x.peer_ip);
        break;
    default:
        break;
    }
    conn_close(c);
}

static void conn_arm_timer(conn_t *c)
{
    const cfg_t *cfg = c->x.cfg;
    uint64_t ms = 0;
    switch (c->state) {
    case CONN_S_HANDSHAKE:
        return; /* read_header runs from the accept */
    case CONN_S_READ_HEAD:
        /* slowloris: the head must arrive whole in read_header, however it trickles */
        if (c->write_pending) {
            ms = cfg->timeouts.write;
        } else if (c->x.rlen > 0 || c->n_requests == 0) {
            /* a new connection (after its TLS handshake too) owes its first head */
            if (c->head_clock)
                return; /* it runs from the head's first byte, however slowly the rest trickles */
            c->head_clock = 1;
            ms = cfg->timeouts.read_header;
        } else {
            c->head_clock = 0;
            ms = cfg->timeouts.idle;
        }
        break;
    case CONN_S_EXCHANGE:
        exchange_arm_timer(&c->x); /* the exchange's own clock */
        return;
    case CONN_S_H2:
        switch (h2_phase(c->h2)) {
        case H2_ENDING:
            ms = 1; /* close from the loop, not from under the session */
            break;
        case H2_IDLE:
            ms = c->write_pending ? cfg->timeouts.write : cfg->timeouts.idle;
            break;
        default:
            ms = c->write_pending ? cfg->timeouts.write : 0; /* streams have their own */
            break;
        }
        break;
    case CONN_S_LINGER:
        if (deadline_armed(&c->x.timer))
            return;
        ms = CONN_LINGER_MS;
        break;
    default:
        return;
    }
    if (ms == 0)
        deadline_stop(&c->x.timer);
    else
        deadline_start(&c->x.timer, conn_on_timeout, ms);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static int start_h2(conn_t *c);
static void conn_process(conn_t *c);
static void conn_update_reading(conn_t *c);

/* The head is in (or an answer is due before it is): the exchange's states
 * and clock rule until it is done. */
static exchange_t *begin_exchange(conn_t *c)
{
    exchange_begin_request(&c->x); /* an answer to a head never read whole needs one too */
    conn_set_state(c, CONN_S_EXCHANGE);
    deadline_stop(&c->x.timer);
    c->head_clock = 0;
    return &c->x;
}

/* ---- writing ------------------------------------------------------------ */

static void on_shutdown(uv_shutdown_t *req, int status);
static void release_idle_buffer(conn_t *c);

static void conn_write_done(conn_t *c)
{
    c->write_pending = 0;
    if (c->state == CONN_S_EXCHANGE) {
        exchange_written(&c->x);
    } else if (c->state == CONN_S_H2) {
        h2_on_written(c->h2);
        if (c->state == CONN_S_H2 && !c->write_pending)
            release_idle_buffer(c); /* OpenSSL's buffers too, once no stream is open */
    }
    if (c->state != CONN_S_CLOSING) {
        conn_update_reading(c);
        conn_arm_timer(c);
    }
}

static void on_client_written(void *owner, int status)
{
    conn_t *c = owner;
    if (status == UV_ECANCELED || c->state == CONN_S_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_write_done(c);
}

static void on_tls_written(void *owner, int status);

/* TLS: writes the records waiting (tls.c's pump): 1 all out, 0 a write is
 * in flight and on_tls_written goes on, <0 failed. */
static int tls_pump(conn_t *c)
{
    return tls_conn_flush(c->tls, (uv_stream_t *)&c->tcp, &c->wr, on_tls_written);
}

static void on_tls_written(void *owner, int status)
{
    conn_t *c = owner;
    if (status == UV_ECANCELED || c->state == CONN_S_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    int r = tls_conn_sent(c->tls, (uv_stream_t *)&c->tcp, &c->wr, on_tls_written);
    if (r == 0)
        return;
    if (r < 0) {
        conn_close(c);
        return;
    }
    if (c->write_pending)
        conn_write_done(c);
    else
        release_idle_buffer(c); /* a flush of our own (a ticket, an alert) ended */
}

/* Writes BUFS to the client, queued on wr if need be: 1 written, 0 queued
 * (write_pending until conn_write_done), <0 on error. */
static int conn_write(conn_t *c, uv_buf_t *bufs, unsigned n)
{
    int r;
    if (c->tls != NULL)
        r = tls_conn_send(c->tls, (uv_stream_t *)&c->tcp, &c->wr, bufs, n, on_tls_written);
    else
        r = sock_write((uv_stream_t *)&c->tcp, &c->wr, bufs, n, on_client_written);
    if (r == 0)
        c->write_pending = 1;
    return r;
}

static void conn_shutdown_write(conn_t *c)
{
    if (c->sreq != NULL || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->tls != NULL) {
        tls_conn_close_notify(c->tls);
        if (tls_pump(c) < 0) {
            conn_close(c);
            return;
        }
    }
    /* libuv shuts down once the queued writes are out; the request is
     * freed with the connection (libuv calls back before it closes) */
    c->sreq = malloc(sizeof(*c->sreq));
    if (c->sreq == NULL)
        abort();
    c->sreq->data = c;
    if (uv_shutdown(c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

/* ---- reading ------------------------------------------------------------ */

static void conn_update_reading(conn_t *c)
{
    /* a request in flight keeps reading too: pipelined requests queue in the
     * buffer, and an early EOF tells us the client went away */
    exchange_t *x = &c->x;
    int room = c->tls != NULL ? !tls_conn_in_full(c->tls)
                              : x->rbuf == NULL || x->rlen < x->w->bufs.size;
    int want = c->state != CONN_S_CLOSING && !x->eof && !(c->tls && c->tls->sock_eof) && room;
    int reading = c->tcp.read_cb != NULL;
    if (want && !reading)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else if (!want && reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn_t *c = h->data;
    exchange_t *x = &c->x;
    (void)hint;
    if (c->tls != NULL) {
        *buf = tls_conn_in_space(c->tls); /* ciphertext; plaintext comes in conn_fill */
        return;
    }
    if (x->rbuf == NULL)
        x->rbuf = buf_get(&x->w->bufs);
    *buf = uv_buf_init(x->rbuf + x->rlen, (unsigned)(x->w->bufs.size - x->rlen));
}

/* Once per quiet period (no bytes from the client since): a connection that
 * went quiet twice in a row within CONN_TLS_HOT_MS is sending requests back
 * to back and keeps OpenSSL's record buffers, the sweep frees them when it
 * stays quiet; any other gives them back now. A handshake and one request,
 * the common idle keep-alive, never hold them. */
static void tls_went_quiet(conn_t *c)
{
    if (c->tls_quiet != CONN_TLS_BUSY)
        return;
    worker_t *w = c->x.w;
    uint64_t now = uv_now(&w->loop);
    int quick = c->tls_quiet_at != 0 && now - c->tls_quiet_at < CONN_TLS_HOT_MS;
    c->tls_streak = quick ? (c->tls_streak < 3 ? c->tls_streak + 1 : 3) : 0;
    c->tls_quiet_at = now;
    if (c->tls_streak >= 2 && !w->finished) {
        c->tls_quiet = CONN_TLS_HOLDING;
        if (!uv_is_active((uv_handle_t *)&w->tls_sweep))
            uv_timer_start(&w->tls_sweep, conn_tls_sweep, CONN_TLS_SWEEP_MS, CONN_TLS_SWEEP_MS);
        return;
    }
    tls_conn_free_engine_buffers(c->tls);
    c->tls_quiet = CONN_TLS_RELEASED;
}

void conn_tls_sweep(uv_timer_t *t)
{
    worker_t *w = t->data;
    int holding = 0;
    for (conn_t *c = w->conns; c != NULL; c = c->next) {
        if (c->tls_quiet == CONN_TLS_HOLDING) {
            c->tls_quiet = CONN_TLS_SWEPT;
            holding = 1;
        } else if (c->tls_quiet == CONN_TLS_SWEPT) {
            tls_conn_free_engine_buffers(c->tls);
            c->tls_quiet = CONN_TLS_RELEASED;
        }
    }
    if (!holding)
        uv_timer_stop(t);
}

static void release_idle_buffer(conn_t *c)
{
    /* an idle keep-alive connection holds no buffer; an HTTP/2 one has no
     * stream open */
    exchange_t *x = &c->x;
    int idle = c->state == CONN_S_READ_HEAD || (c->state == CONN_S_H2 && h2_phase(c->h2) == H2_IDLE);
    if (x->rbuf != NULL && x->rlen == 0 && (c->state == CONN_S_READ_HEAD || c->state == CONN_S_H2)) {
        buf_put(&x->w->bufs, x->rbuf);
        x->rbuf = NULL;
    }
    if (c->tls != NULL && !c->tls->writing && idle) {
        tls_conn_release_idle(c->tls);
        tls_went_quiet(c);
    }
}

static void on_client_eof(conn_t *c)
{
    c->x.eof = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    switch (c->state) {
    case CONN_S_READ_HEAD:
        if (!c->write_pending)
            conn_close(c); /* idle, or gone mid-head: nobody to answer */
        break;
    case CONN_S_EXCHANGE:
        exchange_client_eof(&c->x);
        break;
    default:
        conn_close(c);
        break;
    }
}

/* TLS: decrypts what fits into the read buffer; returns the plaintext
 * bytes added (0 on plain HTTP). */
static size_t conn_fill(conn_t *c)
{
    tls_conn_t *t = c->tls;
    exchange_t *x = &c->x;
    size_t added = 0;
    if (t == NULL || c->state == CONN_S_HANDSHAKE || c->state == CONN_S_CLOSING || c->tls_eof)
        return 0;
    for (;;) {
        if (x->rbuf == NULL)
            x->rbuf = buf_get(&x->w->bufs);
        size_t room = x->w->bufs.size - x->rlen;
        if (room == 0)
            break;
        ssize_t n = tls_conn_read(t, x->rbuf + x->rlen, room);
        if (n > 0) {
            x->rlen += (size_t)n;
            added += (size_t)n;
            continue;
        }
        if (n == UV_EOF)
            c->tls_eof = 1; /* acted on once the plaintext before it is used */
        else if (n < 0)
            conn_close(c);
        break;
    }
    /* reading may have produced records to send (alerts, key updates) */
    if (c->state != CONN_S_CLOSING && tls_conn_out(t).len > 0 && tls_pump(c) < 0)
        conn_close(c);
    return added;
}

/* TLS: ciphertext arrived (or the socket ended): handshake, then plaintext. */
static void on_tls_input(conn_t *c)
{
    tls_conn_t *t = c->tls;
    worker_t *w = c->x.w;
    if (c->state == CONN_S_HANDSHAKE) {
        int r = tls_conn_handshake(t);
        int wr = tls_pump(c); /* the server's flight, or the alert */
        if (r < 0 || wr < 0 || (r == 0 && t->sock_eof)) {
            atomic_fetch_add_explicit(&w->metrics.tls_failures, 1, memory_order_relaxed);
            conn_close(c);
            return;
        }
        if (r == 0)
            return;
        atomic_fetch_add_explicit(&w->metrics.tls_handshakes, 1, memory_order_relaxed);
        if (log_enabled(LOG_DEBUG)) {
            char d[128];
            log_debug("conn %llu %s: %s", (unsigned long long)c->x.id, c->x.peer_ip,
                      tls_conn_describe(t, d, sizeof(d)));
        }
        conn_set_state(c, CONN_S_READ_HEAD);
        if (tls_conn_is_acme(t)) {
            /* RFC 8737 3: the handshake was the answer; nothing follows */
            c->x.keep_alive = 0;
            conn_linger(c);
            return;
        }
        if (tls_conn_is_h2(t)) {
            if (start_h2(c) < 0)
                conn_close(c);
            else if (c->state == CONN_S_H2)
                release_idle_buffer(c);
            return;
        }
    }
    switch (c->state) {
    case CONN_S_H2:
        h2_on_input(c->h2);
        if (c->state == CONN_S_H2)
            release_idle_buffer(c);
        break;
    case CONN_S_LINGER:
        t->in_start = t->in_len = 0; /* drained and dropped */
        if (t->sock_eof)
            conn_close(c);
        break;
    case CONN_S_EXCHANGE:
        if (c->x.rs == XRESP_TUNNEL) {
            c->x.ops->tunnel_input(&c->x);
            break;
        }
        conn_process(c);
        break;
    default:
        conn_process(c);
        break;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    exchange_t *x = &c->x;
    (void)buf;
    if (nread == 0) {
        release_idle_buffer(c);
        return;
    }
    if (nread < 0 && nread != UV_EOF) {
        conn_close(c);
        return;
    }
    if (c->tls != NULL) {
        if (nread == UV_EOF) {
            c->tls->sock_eof = 1;
        } else {
            tls_conn_received(c->tls, (size_t)nread);
            c->tls_quiet = CONN_TLS_BUSY;
        }
        on_tls_input(c);
    } else if (nread == UV_EOF) {
        release_idle_buffer(c);
        on_client_eof(c);
        return;
    } else {
        x->rlen += (size_t)nread;
        if (c->state == CONN_S_LINGER) {
            x->rstart = x->rlen = 0; /* drained and dropped */
        } else if (c->state == CONN_S_EXCHANGE && x->rs == XRESP_TUNNEL) {
            x->ops->tunnel_input(x);
        } else {
            conn_process(c);
            return; /* it updates reading and the timer */
        }
    }
    if (c->state != CONN_S_CLOSING) {
        conn_update_reading(c);
        conn_arm_timer(c);
    }
}

/* ---- parsing ------------------------------------------------------------ */

/* HTTP/1.1 framing: llhttp over what is buffered, the head from offset 0,
 * then the body (exchange.c's callbacks gather it in x->body). */
static llhttp_errno_t h1_parse(exchange_t *x)
{
    exchange_begin_request(x);
    llhttp_t *p = &x->cur->req.parser;
    if (llhttp_get_errno(p) == HPE_PAUSED)
        llhttp_resume(p); /* paused on the head; now the body */
    const char *start = x->rbuf + x->rstart;
    /* A pass that begins after the head is body up to the message's end,
     * where the parser pauses. The check reads it before llhttp, whose
     * on_body compacts the data over the framing, and stops at the end. */
    if (x->rq == XREQ_BODY && x->cur->req.te_chunked &&
        http_chunk_check(&x->cur->chunk_check, start, x->rlen - x->rstart) < 0) {
        llhttp_set_error_reason(p, "malformed chunked framing");
        return HPE_USER;
    }
    llhttp_errno_t err = llhttp_execute(p, start, x->rlen - x->rstart);
    if (err == HPE_OK)
        x->rstart = x->rlen;
    else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        x->rstart = (size_t)(llhttp_get_error_pos(p) - x->rbuf);
    if (err == HPE_PAUSED_UPGRADE)
        exchange_req_to(x, XREQ_DONE);
    return err;
}

/* ---- lingering ---------------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0 && c->state != CONN_S_CLOSING)
        conn_close(c);
}

/* Half-close and drain before closing, so a client still sending does not
 * get a RST that destroys the response it has not read yet. */
void conn_linger(conn_t *c)
{
    if (c->x.eof) {
        conn_close(c);
        return;
    }
    conn_set_state(c, CONN_S_LINGER);
    c->x.rstart = c->x.rlen = 0;
    deadline_stop(&c->x.timer);
    conn_shutdown_write(c);
    if (c->state == CONN_S_CLOSING)
        return;
    conn_update_reading(c);
    conn_arm_timer(c);
}

/* ---- the HTTP/1.1 transport of its exchange ----------------------------- */

static int h1_write(exchange_t *x, uv_buf_t *bufs, unsigned n)
{
    return conn_write(conn_of(x), bufs, n);
}

static void h1_update_reading(exchange_t *x)
{
    conn_update_reading(conn_of(x));
}

static size_t h1_fill(exchange_t *x)
{
    return conn_fill(conn_of(x));
}

static void h1_process(exchange_t *x)
{
    conn_process(conn_of(x));
}

static int h1_input_ended(const exchange_t *x)
{
    (void)x;
    return 0; /* the parser finds the end of an HTTP/1.1 request */
}

/* The response is out: the next request, or the end. */
static void h1_finish(exchange_t *x)
{
    conn_t *c = conn_of(x);
    if (!x->keep_alive) {
        conn_linger(c);
        return;
    }
    exchange_reset(x);
    conn_set_state(c, CONN_S_READ_HEAD);
    if (x->eof && x->rstart == x->rlen) {
        conn_close(c);
        return;
    }
    /* the next (pipelined) head starts at offset 0 so it can use the whole
     * buffer and its slices stay put */
    if (x->rstart > 0) {
        memmove(x->rbuf, x->rbuf + x->rstart, x->rlen - x->rstart);
        x->rlen -= x->rstart;
        x->rstart = 0;
    }
    c->head_clock = 0;
    conn_process(c);
}

static void h1_close(exchange_t *x)
{
    conn_close(conn_of(x));
}

static void h1_malformed(exchange_t *x)
{
    if (x->resp_started || x->write_pending) {
        exchange_close(x);
        return;
    }
    exchange_req_to(x, XREQ_BROKEN); /* the rest of the request is dropped */
    exchange_respond(x, 400, NULL, NULL, 0);
}

static void h1_shutdown_write(exchange_t *x)
{
    conn_shutdown_write(conn_of(x));
}

static int h1_input_eof(exchange_t *x)
{
    conn_t *c = conn_of(x);
    if (c->tls_eof && !x->eof) {
        x->eof = 1; /* the client's close_notify */
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    return x->eof;
}

static void h1_keepalive(exchange_t *x, unsigned secs)
{
    uv_tcp_keepalive(&conn_of(x)->tcp, 1, secs);
}

static tls_conn_t *h1_tls(const exchange_t *x)
{
    return conn_of(x)->tls;
}

static const xport_ops_t h1_xport = {
    .version = 1,
    .write = h1_write,
    .update_reading = h1_update_reading,
    .fill = h1_fill,
    .process = h1_process,
    .parse = h1_parse,
    .input_ended = h1_input_ended,
    .finish = h1_finish,
    .close = h1_close,
    .malformed = h1_malformed,
    .shutdown_write = h1_shutdown_write,
    .input_eof = h1_input_eof,
    .keepalive = h1_keepalive,
    .tls = h1_tls,
};

/* The head is parsed in place: route it. */
static void conn_on_head(conn_t *c)
{
    exchange_t *x = begin_exchange(c);
    x->head_end = x->rstart;
    c->n_requests++;
    /* a head that came whole in one read never met conn_process's size check */
    exchange_route(x, x->head_end > x->cfg->max_header_size ? 431 : 0);
}

/* Parses what is buffered and acts on it; safe to call again any time. */
static void conn_process(conn_t *c)
{
    exchange_t *x = &c->x;
    if (c->in_process)
        return; /* the caller up the stack goes on looping */
    c->in_process = 1;
    while (c->state != CONN_S_CLOSING) {
        size_t got = conn_fill(c); /* TLS: decrypt what the buffer has room for */
        if (c->state == CONN_S_READ_HEAD) {
            if (c->write_pending || x->rstart == x->rlen)
                break;
            llhttp_errno_t err = exchange_parse(x);
            if (err == HPE_PAUSED && x->rq == XREQ_BODY) {
                conn_on_head(c);
                continue;
            }
            if (err != HPE_OK) {
                exchange_respond_error(begin_exchange(c),
                                       http_request_error_status(&x->cur->req, err));
                continue;
            }
            if (x->rlen > x->cfg->max_header_size || x->rlen == x->w->bufs.size) {
                int st = x->cur->req.n_hdrs == 0 && x->cur->req.field_state == 0 ? 414 : 431;
                exchange_respond_error(begin_exchange(c), st);
                continue;
            }
            break;
        }
        if (c->state == CONN_S_EXCHANGE && exchange_step(x, got))
            continue;
        break;
    }
    c->in_process = 0;
    /* TLS: the close_notify (or EOF) counts once the plaintext before it is used */
    if (c->tls_eof && !x->eof && c->state != CONN_S_CLOSING)
        on_client_eof(c);
    /* half-closed: every whole request buffered before the EOF was answered */
    if (x->eof && c->state == CONN_S_READ_HEAD && !c->write_pending)
        conn_close(c);
    if (c->state != CONN_S_CLOSING) {
        if (x->rstart == x->rlen && c->state == CONN_S_READ_HEAD && !c->write_pending &&
            !x->head_started) {
            x->rstart = x->rlen = 0;
            release_idle_buffer(c);
        }
        conn_update_reading(c);
        conn_arm_timer(c);
    }
}

/* ---- HTTP/2: what the session asks of the connection -------------------- */

static uv_buf_t h2_read(conn_t *c, size_t *added)
{
    *added = conn_fill(c);
    return uv_buf_init(c->x.rbuf, (unsigned)c->x.rlen);
}

static void h2_consume(conn_t *c)
{
    c->x.rlen = 0;
}

static int h2_writing(const conn_t *c)
{
    return c->write_pending;
}

static int h2_ended(const conn_t *c)
{
    return c->tls_eof || c->tls->sock_eof;
}

static exchange_t *h2_stream_open(conn_t *c, h2_stream_t *s)
{
    return stream_open(&c->x, c->tls, s);
}

static const h2_host_ops_t h2_ops = {
    .read = h2_read,
    .consume = h2_consume,
    .write = conn_write,
    .writing = h2_writing,
    .ended = h2_ended,
    .close = conn_close,
    .arm_timer = conn_arm_timer,
    .open_exchange = h2_stream_open,
    .take_head = stream_head,
    .take_body = stream_body,
    .held_bytes = stream_buffered,
    .input_ready = stream_input,
    .output_taken = stream_written,
    .close_exchange = stream_close,
};

/* The handshake chose h2: our SETTINGS, then the client's preface. */
static int start_h2(conn_t *c)
{
    worker_t *w = c->x.w;
    h2_host_t host = {&h2_ops, w, c->x.cfg->max_header_size, c->x.id, c->x.peer_ip};
    c->h2 = h2_session_new(c, &host);
    if (c->h2 == NULL)
        return PS_EPROTO;
    conn_set_state(c, CONN_S_H2);
    atomic_fetch_add_explicit(&w->metrics.h2_conns, 1, memory_order_relaxed);
    if (w->draining)
        h2_goaway(c->h2);
    h2_on_input(c->h2); /* the client's preface may be decrypted already */
    return 0;
}

/* ---- accepting ---------------------------------------------------------- */

static void peer_name(exchange_t *x, const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        x->peer.in6 = *s6;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], x->peer_ip, sizeof(x->peer_ip));
        else
            inet_ntop(AF_INET6, &s6->sin6_addr, x->peer_ip, sizeof(x->peer_ip));
        snprintf(x->peer_port, sizeof(x->peer_port), "%u", ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        x->peer.in4 = *s4;
        inet_ntop(AF_INET, &s4->sin_addr, x->peer_ip, sizeof(x->peer_ip));
        snprintf(x->peer_port, sizeof(x->peer_port), "%u", ntohs(s4->sin_port));
    }
}

void conn_accept(listener_t *l)
{
    worker_t *w = l->w;
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    exchange_init(&c->x, &h1_xport, w, w->cfg, w->targets, l->cl);
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    sock_wreq_init(&c->wr, &w->wreqs, c);
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    atomic_fetch_add_explicit(&w->metrics.open_conns, 1, memory_order_relaxed);

    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        peer_name(&c->x, &ss);
    if (c->x.https) {
        c->tls = malloc(sizeof(*c->tls));
        if (c->tls == NULL || tls_conn_init(c->tls, w->tls, &w->bufs) != 0) {
            free(c->tls);
            c->tls = NULL;
            log_err("conn %llu %s: cannot start TLS", (unsigned long long)c->x.id, c->x.peer_ip);
            conn_close(c);
            return;
        }
        c->state = CONN_S_HANDSHAKE;
    } else {
        conn_set_state(c, CONN_S_READ_HEAD);
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    /* a new connection must send its first head within read_header */
    c->head_clock = 1;
    deadline_start(&c->x.timer, conn_on_timeout, c->x.cfg->timeouts.read_header);
}

/* ---- what the worker asks of its connections ---------------------------- */

static void drain_all(worker_t *w)
{
    for (conn_t *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_drain(c);
    }
}

static void close_all(worker_t *w)
{
    while (w->conns != NULL)
        conn_close(w->conns);
}

/* HTTP/2 clients reconnect for the new config (GOAWAY), as Caddy's do; an
 * HTTP/1.1 connection takes it at its next one. */
static void on_reloaded(worker_t *w)
{
    for (conn_t *c = w->conns; c != NULL; c = c->next)
        if (c->state == CONN_S_H2)
            h2_goaway(c->h2);
}

static void init_pools(worker_t *w, size_t max_free)
{
    buf_pool_init(&w->h2_streams, h2_stream_size(), max_free);
    buf_pool_init(&w->stream_xs, stream_size(), max_free);
    buf_pool_init(&w->xreqs, sizeof(xreq_t), max_free);
}

const worker_conn_ops_t conn_worker_ops = {
    .accept = conn_accept,
    .drain = drain_all,
    .close_all = close_all,
    .reloaded = on_reloaded,
    .init_pools = init_pools,
};
