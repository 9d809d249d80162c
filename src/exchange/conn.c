/* The client connection state machine: read and check request heads, route
 * them, run the handler routing picked (handler.h), then the next request;
 * the TLS record pump and the HTTP/2 host ops too.
 *
 * Over 1,000 lines because it is still the HTTP/1.1 transport and the
 * exchange in one (docs/ARCHITECTURE.md, "The request pipeline"); the
 * exchange split that issue #21 asks for divides it. */
#include "conn.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "common.h"
#include "log.h"

#define CONN_LINGER_MS 2000

static llhttp_settings_t req_settings;
static uv_once_t settings_once = UV_ONCE_INIT;

const char *conn_state_name(int state)
{
    static const char *const names[] = {"handshake", "read_head", "connect_up", "proxy", "respond",
                                        "tunnel",    "h2",        "linger",     "closing"};
    return state >= 0 && state < (int)PS_ARRAY_SIZE(names) ? names[state] : "?";
}

void conn_set_state(conn_t *c, int state)
{
    log_debug("conn %llu: %s -> %s", (unsigned long long)c->id, conn_state_name(c->state),
              conn_state_name(state));
    c->state = state;
}

/* ---- lifetime ----------------------------------------------------------- */

static void release_request_bufs(conn_t *c)
{
    buf_put(&c->w->bufs, c->obuf);
    buf_put(&c->w->bufs, c->hbuf);
    c->obuf = c->hbuf = NULL;
}

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->pending_closes > 0)
        return;
    buf_put(&c->w->bufs, c->rbuf);
    buf_put(&c->w->tables, (char *)c->req.hdrs);
    if (c->tls != NULL) {
        tls_conn_dispose(c->tls);
        free(c->tls);
    }
    cfg_unref(c->cfg);
    up_targets_unref(c->targets);
    worker_t *w = c->w;
    int stream = c->h2s != NULL;
    if (stream)
        h2_stream_free(c->h2s);
    free(c);
    if (!stream)
        worker_conn_closed(w); /* a socket closed: the accept cap counts those */
}

void conn_close(conn_t *c)
{
    if (c->state == CONN_S_CLOSING)
        return;
    conn_set_state(c, CONN_S_CLOSING);
    if (c->ops != NULL && c->ops->abort != NULL)
        c->ops->abort(c);
    release_request_bufs(c);
    if (c->h2s != NULL) {
        /* a stream conn: no socket, not in the worker's list */
        h2_stream_detach(c->h2s);
        c->pending_closes = 1;
        uv_close((uv_handle_t *)&c->timer, on_closed);
        return;
    }
    h2_session_close(c->h2);
    c->h2 = NULL;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    atomic_fetch_sub_explicit(&c->w->metrics.open_conns, 1, memory_order_relaxed);
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    worker_drained(c->w);
}

static void conn_drain(conn_t *c)
{
    c->keep_alive = 0;
    if (c->state == CONN_S_H2) {
        h2_goaway(c->h2); /* it closes once its streams are answered */
        return;
    }
    int idle = (c->state == CONN_S_READ_HEAD && !c->head_started && c->rlen == 0 &&
                !c->write_pending) ||
               c->state == CONN_S_HANDSHAKE || c->state == CONN_S_LINGER;
    if (idle)
        conn_close(c);
}

/* ---- timers ------------------------------------------------------------- */

static void on_timeout(uv_timer_t *t)
{
    conn_t *c = t->data;
    switch (c->state) {
    case CONN_S_READ_HEAD:
        if (c->rlen > 0 && !c->write_pending) {
            log_debug("conn %llu: request head not read in time", (unsigned long long)c->id);
            c->keep_alive = 0;
            conn_respond(c, 408, NULL, NULL, 0);
            return;
        }
        break;
    case CONN_S_CONNECT_UP:
        if (c->ops->timer != NULL) {
            c->ops->timer(c);
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
        log_debug("conn %llu %s: TLS handshake not done in time", (unsigned long long)c->id,
                  c->peer_ip);
        break;
    case CONN_S_PROXY:
        log_info("conn %llu %s: client timed out in state %s", (unsigned long long)c->id,
                 c->peer_ip, conn_state_name(c->state));
        break;
    default:
        break;
    }
    conn_close(c);
}

void conn_start_timer(conn_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timeout, ms, 0);
}

void conn_arm_timer(conn_t *c)
{
    const cfg_t *cfg = c->cfg;
    uint64_t ms = 0;
    switch (c->state) {
    case CONN_S_HANDSHAKE:
        return; /* read_header runs from the accept */
    case CONN_S_READ_HEAD:
        /* slowloris: the head must arrive whole in read_header, however it trickles */
        if (c->write_pending) {
            ms = cfg->timeouts.write;
        } else if (c->rlen > 0 || c->n_requests == 0) {
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
    case CONN_S_CONNECT_UP:
        return; /* the upstream side has its own clock */
    case CONN_S_PROXY:
    case CONN_S_RESPOND:
    case CONN_S_TUNNEL:
        /* a tunnel has no idle limit: as in Caddy, a WebSocket lives while
         * both ends keep it (TCP keepalive finds one that vanished) */
        if (c->write_pending)
            ms = cfg->timeouts.write;
        else if (!c->req_done && c->state != CONN_S_TUNNEL &&
                 !(c->ops != NULL && c->ops->body_blocked != NULL && c->ops->body_blocked(c)))
            ms = cfg->timeouts.read_body; /* a stalled upstream has its own clock */
        break;
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
        if (uv_is_active((uv_handle_t *)&c->timer))
            return;
        ms = CONN_LINGER_MS;
        break;
    default:
        return;
    }
    if (ms == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static int start_h2(conn_t *c);

/* ---- writing ------------------------------------------------------------ */

static void respond_maybe_done(conn_t *c);
static void on_shutdown(uv_shutdown_t *req, int status);
static void release_idle_buffer(conn_t *c);

void conn_write_done(conn_t *c)
{
    c->write_pending = 0;
    if (c->state == CONN_S_RESPOND || c->state == CONN_S_READ_HEAD)
        respond_maybe_done(c);
    else if ((c->state == CONN_S_PROXY || c->state == CONN_S_TUNNEL) &&
             c->ops->client_written != NULL)
        c->ops->client_written(c);
    else if (c->state == CONN_S_H2) {
        h2_on_written(c->h2);
        if (c->state == CONN_S_H2 && !c->write_pending)
            release_idle_buffer(c); /* OpenSSL's buffers too, once no stream is open */
    }
    if (c->state != CONN_S_CLOSING) {
        conn_update_reading(c);
        conn_arm_timer(c);
    }
}

static void on_client_written(uv_write_t *req, int status)
{
    conn_t *c = container_of(req, conn_t, wreq);
    if (status == UV_ECANCELED || c->state == CONN_S_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_write_done(c);
}

static void on_tls_written(uv_write_t *req, int status);

/* TLS: writes the records waiting (tls.c's pump): 1 all out, 0 a write is
 * in flight and on_tls_written goes on, <0 failed. */
static int tls_pump(conn_t *c)
{
    return tls_conn_flush(c->tls, (uv_stream_t *)&c->tcp, &c->wreq, on_tls_written);
}

static void on_tls_written(uv_write_t *req, int status)
{
    conn_t *c = container_of(req, conn_t, wreq);
    if (status == UV_ECANCELED || c->state == CONN_S_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    int r = tls_conn_sent(c->tls, (uv_stream_t *)&c->tcp, &c->wreq, on_tls_written);
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

int conn_write(conn_t *c, uv_buf_t *bufs, unsigned n)
{
    int r;
    if (c->h2s != NULL) {
        r = h2_stream_write(c->h2s, bufs, n, c->head_method);
    } else if (c->tls != NULL) {
        r = tls_conn_send(c->tls, (uv_stream_t *)&c->tcp, &c->wreq, bufs, n, on_tls_written);
    } else {
        r = sock_write((uv_stream_t *)&c->tcp, &c->wreq, bufs, n, on_client_written);
    }
    if (r == 0) {
        c->write_pending = 1;
        conn_arm_timer(c);
    }
    return r;
}

void conn_shutdown_write(conn_t *c)
{
    if (c->h2s != NULL || c->sreq.handle != NULL || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->tls != NULL) {
        tls_conn_close_notify(c->tls);
        if (tls_pump(c) < 0) {
            conn_close(c);
            return;
        }
    }
    /* libuv shuts down once the queued writes are out */
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

/* ---- reading ------------------------------------------------------------ */

void conn_update_reading(conn_t *c)
{
    if (c->h2s != NULL) {
        h2_stream_update(c->h2s); /* the window is a stream conn's reading */
        return;
    }
    /* a request in flight keeps reading too: pipelined requests queue in the
     * buffer, and an early EOF tells us the client went away */
    int room = c->tls != NULL ? !tls_conn_in_full(c->tls)
                              : c->rbuf == NULL || c->rlen < c->w->bufs.size;
    int want = c->state != CONN_S_CLOSING && !c->eof && !(c->tls && c->tls->sock_eof) && room;
    int reading = c->tcp.read_cb != NULL;
    if (want && !reading)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else if (!want && reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn_t *c = h->data;
    if (c->tls != NULL) {
        *buf = tls_conn_in_space(c->tls); /* ciphertext; plaintext comes in conn_fill */
        return;
    }
    if (c->rbuf == NULL)
        c->rbuf = buf_get(&c->w->bufs);
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(c->w->bufs.size - c->rlen));
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
    uint64_t now = uv_now(&c->w->loop);
    int quick = c->tls_quiet_at != 0 && now - c->tls_quiet_at < CONN_TLS_HOT_MS;
    c->tls_streak = quick ? (c->tls_streak < 3 ? c->tls_streak + 1 : 3) : 0;
    c->tls_quiet_at = now;
    if (c->tls_streak >= 2 && !c->w->finished) {
        c->tls_quiet = CONN_TLS_HOLDING;
        if (!uv_is_active((uv_handle_t *)&c->w->tls_sweep))
            uv_timer_start(&c->w->tls_sweep, conn_tls_sweep, CONN_TLS_SWEEP_MS,
                           CONN_TLS_SWEEP_MS);
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
    int idle = c->state == CONN_S_READ_HEAD || (c->state == CONN_S_H2 && h2_phase(c->h2) == H2_IDLE);
    if (c->rbuf != NULL && c->rlen == 0 && (c->state == CONN_S_READ_HEAD || c->state == CONN_S_H2)) {
        buf_put(&c->w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    if (c->tls != NULL && !c->tls->writing && idle) {
        tls_conn_release_idle(c->tls);
        tls_went_quiet(c);
    }
}


static void on_client_eof(conn_t *c)
{
    c->eof = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    switch (c->state) {
    case CONN_S_READ_HEAD:
        if (!c->write_pending)
            conn_close(c); /* idle, or gone mid-head: nobody to answer */
        break;
    case CONN_S_CONNECT_UP:
    case CONN_S_PROXY:
    case CONN_S_TUNNEL:
        /* a request without a body is whole once its head is (the parser
         * stays paused on it until the upstream is ready) */
        if (!c->req_done && c->state != CONN_S_TUNNEL &&
            !(c->head_done && http_request_framing(&c->req) == HTTP_BODY_NONE))
            conn_close(c); /* gone mid-request: the exchange cannot complete */
        else if (c->ops->client_eof != NULL)
            c->ops->client_eof(c);
        break;
    case CONN_S_RESPOND:
        if (!c->req_done)
            conn_close(c);
        break; /* else the response is written, then we close */
    default:
        conn_close(c);
        break;
    }
}

size_t conn_fill(conn_t *c)
{
    tls_conn_t *t = c->tls;
    size_t added = 0;
    if (t == NULL || c->state == CONN_S_HANDSHAKE || c->state == CONN_S_CLOSING || c->tls_eof)
        return 0;
    for (;;) {
        if (c->rbuf == NULL)
            c->rbuf = buf_get(&c->w->bufs);
        size_t room = c->w->bufs.size - c->rlen;
        if (room == 0)
            break;
        ssize_t n = tls_conn_read(t, c->rbuf + c->rlen, room);
        if (n > 0) {
            c->rlen += (size_t)n;
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
    if (c->state == CONN_S_HANDSHAKE) {
        int r = tls_conn_handshake(t);
        int w = tls_pump(c); /* the server's flight, or the alert */
        if (r < 0 || w < 0 || (r == 0 && t->sock_eof)) {
            atomic_fetch_add_explicit(&c->w->metrics.tls_failures, 1, memory_order_relaxed);
            conn_close(c);
            return;
        }
        if (r == 0)
            return;
        atomic_fetch_add_explicit(&c->w->metrics.tls_handshakes, 1, memory_order_relaxed);
        if (log_enabled(LOG_DEBUG)) {
            char d[128];
            log_debug("conn %llu %s: %s", (unsigned long long)c->id, c->peer_ip,
                      tls_conn_describe(t, d, sizeof(d)));
        }
        conn_set_state(c, CONN_S_READ_HEAD);
        if (tls_conn_is_acme(t)) {
            /* RFC 8737 3: the handshake was the answer; nothing follows */
            c->keep_alive = 0;
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
    case CONN_S_TUNNEL:
        c->ops->tunnel_input(c);
        break;
    default:
        conn_process(c);
        break;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
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
        c->rlen += (size_t)nread;
        switch (c->state) {
        case CONN_S_LINGER:
            c->rstart = c->rlen = 0; /* drained and dropped */
            break;
        case CONN_S_TUNNEL:
            c->ops->tunnel_input(c);
            break;
        default:
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

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = container_of(p, conn_t, req.parser);
    http_head_reset(&c->req);
    c->head_started = 1;
    c->t_start = uv_hrtime(); /* a vDSO clock read: for the log and /metrics */
    c->counted = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *c = container_of(p, conn_t, req.parser);
    c->head_done = 1;
    http_chunk_check_init(&c->chunk_check);
    return HPE_PAUSED; /* route and get an upstream before the body flows */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = container_of(p, conn_t, req.parser);
    c->bytes_in += len;
    if (c->state == CONN_S_RESPOND)
        return 0; /* answered here: the body is read and dropped */
    if (c->route.body_limit != 0 && c->bytes_in > c->route.body_limit) {
        c->req.err_status = 413; /* a chunked body grew past request_body max_size */
        llhttp_set_error_reason(p, "request body too large");
        return HPE_USER;
    }
    /* chunk framing between the pieces is parsed already: close the gaps so
     * one contiguous slice (one chunk upstream) carries this pass's data */
    http_body_append(&c->body, &c->body_len, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = container_of(p, conn_t, req.parser);
    c->req_done = 1;
    return HPE_PAUSED; /* the next pipelined request waits for this response */
}

static void settings_init(void)
{
    http_settings_init(&req_settings);
    req_settings.on_message_begin = on_message_begin;
    req_settings.on_headers_complete = on_headers_complete;
    req_settings.on_body = on_body;
    req_settings.on_message_complete = on_message_complete;
}

/* A stream conn's body: DATA frames' bytes as they are, no framing; the
 * request ends with the stream's END_STREAM. */
static llhttp_errno_t stream_body(conn_t *c)
{
    size_t n = c->rlen - c->rstart;
    c->bytes_in += n;
    if (c->state == CONN_S_RESPOND) {
        c->rstart = c->rlen = 0; /* answered here: read and dropped */
    } else if (n > 0) {
        if (c->route.body_limit != 0 && c->bytes_in > c->route.body_limit) {
            c->req.err_status = 413;
            llhttp_set_error_reason(&c->req.parser, "request body too large");
            return HPE_USER;
        }
        c->body = c->rbuf + c->rstart;
        c->body_len = n;
        c->rstart = c->rlen;
    }
    if (h2_stream_input_ended(c->h2s)) {
        c->req_done = 1;
        return HPE_PAUSED;
    }
    return HPE_OK;
}

llhttp_errno_t conn_parse(conn_t *c)
{
    llhttp_t *p = &c->req.parser;
    c->body = NULL;
    c->body_len = 0;
    if (c->req_done)
        return llhttp_get_errno(p);
    if (c->h2s != NULL)
        return stream_body(c);
    if (llhttp_get_errno(p) == HPE_PAUSED)
        llhttp_resume(p); /* paused on the head; now the body */
    if (c->req.hdrs == NULL)
        c->req.hdrs = (http_hdr_t *)buf_get(&c->w->tables);
    const char *start = c->rbuf + c->rstart;
    /* A pass that begins after the head is body up to the message's end,
     * where the parser pauses. The check reads it before llhttp, whose
     * on_body compacts the data over the framing, and stops at the end. */
    if (c->head_done && c->req.te_chunked &&
        http_chunk_check(&c->chunk_check, start, c->rlen - c->rstart) < 0) {
        llhttp_set_error_reason(p, "malformed chunked framing");
        return HPE_USER;
    }
    llhttp_errno_t err = llhttp_execute(p, start, c->rlen - c->rstart);
    if (err == HPE_OK)
        c->rstart = c->rlen;
    else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        c->rstart = (size_t)(llhttp_get_error_pos(p) - c->rbuf);
    if (err == HPE_PAUSED_UPGRADE)
        c->req_done = 1;
    return err;
}

/* ---- answering here ----------------------------------------------------- */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = container_of(req, conn_t, sreq);
    if (status < 0 && c->state != CONN_S_CLOSING)
        conn_close(c);
}

/* Half-close and drain before closing, so a client still sending does not
 * get a RST that destroys the response it has not read yet. */
void conn_linger(conn_t *c)
{
    if (c->h2s != NULL) {
        conn_access_log(c);
        conn_set_state(c, CONN_S_LINGER);
        release_request_bufs(c);
        uv_timer_stop(&c->timer);
        conn_arm_timer(c); /* closes it if the stream is not over in time */
        h2_stream_end(c->h2s);  /* last: the stream may close (and C with it) */
        return;
    }
    if (c->eof) {
        conn_close(c);
        return;
    }
    conn_access_log(c); /* an answer that ends the connection counts too */
    conn_set_state(c, CONN_S_LINGER);
    release_request_bufs(c);
    c->rstart = c->rlen = 0;
    uv_timer_stop(&c->timer);
    conn_shutdown_write(c);
    if (c->state == CONN_S_CLOSING)
        return;
    conn_update_reading(c);
    conn_arm_timer(c);
}

static void respond_maybe_done(conn_t *c)
{
    if (c->write_pending || c->state == CONN_S_CLOSING)
        return;
    if (!c->keep_alive)
        conn_linger(c);
    else if (c->req_done)
        conn_request_done(c);
}

void conn_respond(conn_t *c, int status, const char *extra, const char *body, size_t len)
{
    if (c->state == CONN_S_READ_HEAD && c->head_done) {
        /* drop what is buffered of the body now: if it was all there, the
         * connection can stay open */
        conn_set_state(c, CONN_S_RESPOND);
        llhttp_errno_t err = conn_parse(c);
        if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
            c->keep_alive = 0;
    }
    conn_set_state(c, CONN_S_RESPOND);
    if (!c->req_done || c->upgrade)
        c->keep_alive = 0;
    if (c->hbuf == NULL)
        c->hbuf = buf_get(&c->w->bufs);
    int n = http_build_simple(c->hbuf, c->w->bufs.size, status, extra, body, len, c->keep_alive,
                              c->head_method);
    if (n < 0) {
        n = http_build_simple(c->hbuf, c->w->bufs.size, 500, NULL, NULL, 0, 0, 0);
        c->keep_alive = 0;
        status = 500;
    }
    c->status = status;
    c->bytes_out = c->head_method ? 0 : len;
    uv_buf_t b = uv_buf_init(c->hbuf, (unsigned)n);
    int r = conn_write(c, &b, 1);
    if (r < 0) {
        conn_close(c);
        return;
    }
    if (r == 1)
        respond_maybe_done(c);
}

void conn_malformed(conn_t *c)
{
    c->keep_alive = 0;
    if (c->h2s != NULL) {
        h2_stream_malformed(c->h2s); /* RST_STREAM(PROTOCOL_ERROR), RFC 9113 8.1.1 */
        conn_close(c);
    } else if (c->resp_started || c->write_pending) {
        conn_close(c);
    } else {
        c->req_done = 0; /* the rest of the request is dropped */
        conn_respond(c, 400, NULL, NULL, 0);
    }
}

static void respond_error(conn_t *c, int status)
{
    log_debug("conn %llu %s: %d %s: %s", (unsigned long long)c->id, c->peer_ip, status,
              http_reason(status), llhttp_get_error_reason(&c->req.parser));
    c->keep_alive = 0;
    c->req_done = 0;
    conn_respond(c, status, NULL, NULL, 0);
}

/* ---- routing ------------------------------------------------------------ */

/* The head is complete and the parser paused on it: check, route, act.
 * ST: a status to answer instead, or 0. */
static void conn_route(conn_t *c, int st)
{
    llhttp_t *p = &c->req.parser;
    c->head_done = 1;
    c->head_clock = 0;
    c->head_started = 0;
    c->n_requests++;
    if (st == 0)
        st = http_head_analyze(&c->req);
    if (st != 0) {
        respond_error(c, st);
        return;
    }
    c->keep_alive = llhttp_should_keep_alive(p);
    c->head_method = p->method == HTTP_HEAD;
    c->upgrade = p->upgrade;
    if (p->method == HTTP_CONNECT) {
        c->keep_alive = 0;
        conn_respond(c, 405, NULL, NULL, 0);
        return;
    }
    http_vars_from_request(&c->vars, &c->req, c->https, c->peer_ip, c->peer_port);
    route_pick(&c->route, c->cfg, c->listener, c->https, &c->vars);
    c->bytes_in = c->bytes_out = 0;
    c->ops = handler_of(c->route.id);
    if (c->ops == NULL) {
        log_err("conn %llu: no handler registered for route %d", (unsigned long long)c->id,
                c->route.id);
        c->keep_alive = 0;
        conn_respond(c, 500, NULL, NULL, 0);
        return;
    }
    c->ops->start(c);
}

static void conn_on_head(conn_t *c)
{
    c->head_end = c->rstart;
    /* a head that came whole in one read never met conn_process's size check */
    conn_route(c, c->head_end > c->cfg->max_header_size ? 431 : 0);
}

static void conn_stream_head(conn_t *c, char *head, int len)
{
    if (c->state == CONN_S_CLOSING)
        return;
    if (c->req.hdrs == NULL)
        c->req.hdrs = (http_hdr_t *)buf_get(&c->w->tables);
    c->head_done = 0;
    llhttp_errno_t err = HPE_USER;
    if (len > 0)
        err = llhttp_execute(&c->req.parser, head, (size_t)len);
    else
        c->t_start = uv_hrtime();
    /* the body comes in rbuf, which holds nothing else (DATA that came
     * with the head may be there already): the head stays in HEAD, which
     * lives as long as the stream */
    c->rstart = c->head_end = 0;
    if (err == HPE_PAUSED && c->head_done) {
        conn_route(c, 0);
        return;
    }
    int st = len < 0 ? -len : http_request_error_status(&c->req, err);
    c->n_requests++;
    log_debug("conn %llu %s: h2 stream: %d %s", (unsigned long long)c->id, c->peer_ip, st,
              http_reason(st));
    c->head_done = 0;
    c->keep_alive = 0;
    c->req_done = 0;
    conn_respond(c, st, NULL, NULL, 0);
}

void conn_process(conn_t *c)
{
    if (c->in_process)
        return; /* the caller up the stack goes on looping */
    c->in_process = 1;
    while (c->state != CONN_S_CLOSING) {
        size_t got = conn_fill(c); /* TLS: decrypt what the buffer has room for */
        if (c->state == CONN_S_READ_HEAD) {
            if (c->write_pending || c->rstart == c->rlen)
                break;
            c->head_done = 0;
            llhttp_errno_t err = conn_parse(c);
            if (err == HPE_PAUSED && c->head_done) {
                conn_on_head(c);
                continue;
            }
            if (err != HPE_OK) {
                respond_error(c, http_request_error_status(&c->req, err));
                continue;
            }
            if (c->rlen > c->cfg->max_header_size || c->rlen == c->w->bufs.size) {
                respond_error(c, c->req.n_hdrs == 0 && c->req.field_state == 0 ? 414 : 431);
                continue;
            }
            break;
        }
        if (c->state == CONN_S_RESPOND) {
            /* a stream conn's request may end with no byte (END_STREAM) */
            if (c->req_done ||
                (c->rstart == c->rlen && !(c->h2s != NULL && h2_stream_input_ended(c->h2s))))
                break;
            llhttp_errno_t err = conn_parse(c);
            if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
                c->keep_alive = 0;
                c->rstart = c->rlen;
            }
            respond_maybe_done(c);
            continue;
        }
        if (c->state == CONN_S_PROXY) {
            size_t rstart = c->rstart, rlen = c->rlen;
            c->ops->request_body(c);
            /* TLS: while this makes progress, go round again: what was sent
             * made room, and OpenSSL may hold more that no socket event
             * would announce */
            if (c->state == CONN_S_PROXY && got == 0 && c->rstart == rstart && c->rlen == rlen)
                break;
            continue;
        }
        break;
    }
    c->in_process = 0;
    /* TLS: the close_notify (or EOF) counts once the plaintext before it is used */
    if (c->tls_eof && !c->eof && c->state != CONN_S_CLOSING)
        on_client_eof(c);
    /* half-closed: every whole request buffered before the EOF was answered */
    if (c->eof && c->state == CONN_S_READ_HEAD && !c->write_pending)
        conn_close(c);
    if (c->state != CONN_S_CLOSING) {
        if (c->rstart == c->rlen && c->state == CONN_S_READ_HEAD && !c->write_pending &&
            !c->head_started) {
            c->rstart = c->rlen = 0;
            release_idle_buffer(c);
        }
        conn_update_reading(c);
        conn_arm_timer(c);
    }
}

void conn_access_log(conn_t *c)
{
    if (c->counted || c->status == 0)
        return;
    c->counted = 1;
    const char *upstream =
        c->ops != NULL && c->ops->upstream != NULL ? c->ops->upstream(c) : NULL;
    const char *site = c->route.site != NULL && c->route.site->n_addrs > 0 ? c->route.site->addrs[0].host : NULL;
    metrics_request(&c->w->metrics, site != NULL && site[0] ? site : "*", c->status, upstream,
                    (uv_hrtime() - c->t_start) / 1000, c->h2s != NULL);
    if (c->route.site == NULL || !c->route.site->log.enabled)
        return;
    /* built only for a site that logs; everything is a slice of what the
     * connection holds until the request is done */
    alog_entry_t e = {0};
    e.remote_ip = c->peer_ip;
    e.remote_port = c->peer_port;
    e.method = c->vars.method;
    e.host = c->vars.hostport;
    e.uri = c->req.url;
    e.proto = c->h2s != NULL ? "HTTP/2.0" : c->req.parser.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    e.req_hdrs = c->req.hdrs;
    e.n_req_hdrs = c->req.n_hdrs;
    if (c->h2s != NULL && e.n_req_hdrs > 0)
        e.n_req_hdrs -= (unsigned)h2_stream_added_fields(c->h2s); /* not the client's */
    tls_info_t tls;
    const conn_t *tc = c->h2s != NULL ? h2_stream_parent(c->h2s) : c;
    if (tc != NULL && tc->tls != NULL) {
        tls_conn_info(tc->tls, &tls);
        e.tls = &tls;
    }
    /* the head the client got is still in hbuf (released after this) */
    if (c->hbuf != NULL)
        e.resp_head = uv_buf_init(c->hbuf, (unsigned)c->w->bufs.size);
    e.resp_local = c->state == CONN_S_RESPOND;
    e.status = c->status;
    e.bytes_read = c->bytes_in;
    e.size = c->bytes_out;
    e.duration_ns = uv_hrtime() - c->t_start;
    e.upstream = upstream;
    alog_write(c->w->alog, c->route.site, &e);
}

void conn_request_done(conn_t *c)
{
    if (c->state != CONN_S_TUNNEL)
        conn_access_log(c);
    release_request_bufs(c);
    if (c->w->draining || c->h2s != NULL)
        c->keep_alive = 0; /* stopping, or a stream: this was its last response */
    buf_put(&c->w->tables, (char *)c->req.hdrs); /* lent again at the next head */
    c->req.hdrs = NULL;
    if (!c->keep_alive) {
        conn_linger(c);
        return;
    }
    /* each request starts with a fresh parser: after an upgrade the
     * upstream refused, llhttp would otherwise take the next head for the
     * upgraded protocol (HPE_PAUSED_UPGRADE) */
    llhttp_reset(&c->req.parser);
    c->head_done = c->req_done = c->resp_started = 0;
    c->upgrade = c->head_method = 0;
    c->route.site = NULL;
    c->route.handler = NULL;
    c->route.n_filters = 0;
    c->ops = NULL;
    c->status = 0;
    conn_set_state(c, CONN_S_READ_HEAD);
    if (c->eof && c->rstart == c->rlen) {
        conn_close(c);
        return;
    }
    /* the next (pipelined) head starts at offset 0 so it can use the whole
     * buffer and its slices stay put */
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rlen - c->rstart);
        c->rlen -= c->rstart;
        c->rstart = 0;
    }
    c->head_end = 0;
    c->head_clock = 0;
    conn_process(c);
}

/* ---- accepting ---------------------------------------------------------- */

/* A conn on worker W serving LISTENER under CFG (referenced) and TARGETS:
 * a socket's or a stream's. */
static conn_t *conn_new(worker_t *w, cfg_t *cfg, up_targets_t *targets,
                        const cfg_listener_t *listener)
{
    uv_once(&settings_once, settings_init);
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->w = w;
    c->id = ++w->next_conn_id * 64 + (uint64_t)w->index;
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->cfg = cfg_ref(cfg);
    c->targets = up_targets_ref(targets); /* with the config: a reload does not change them */
    c->listener = listener;
    c->https = listener->scheme == CFG_SCHEME_HTTPS;
    c->keep_alive = 1;
    http_head_init(&c->req, HTTP_REQUEST, &req_settings);
    return c;
}

/* HTTP/2: a stream conn of PARENT for S, waiting for its request head. */
static conn_t *conn_new_stream(conn_t *parent, h2_stream_t *s)
{
    conn_t *c = conn_new(parent->w, parent->cfg, parent->targets, parent->listener);
    c->peer = parent->peer;
    memcpy(c->peer_ip, parent->peer_ip, sizeof(c->peer_ip));
    memcpy(c->peer_port, parent->peer_port, sizeof(c->peer_port));
    c->h2s = s;
    c->state = CONN_S_READ_HEAD;
    /* the whole head (HEADERS and CONTINUATIONs) within read_header */
    c->head_clock = 1;
    uv_timer_start(&c->timer, on_timeout, c->cfg->timeouts.read_header, 0);
    return c;
}

/* ---- HTTP/2: what the session asks of the connection and its streams ---- */

static uv_buf_t h2_read(conn_t *c, size_t *added)
{
    *added = conn_fill(c);
    return uv_buf_init(c->rbuf, (unsigned)c->rlen);
}

static void h2_consume(conn_t *c)
{
    c->rlen = 0;
}

static int h2_writing(const conn_t *c)
{
    return c->write_pending;
}

static int h2_ended(const conn_t *c)
{
    return c->tls_eof || c->tls->sock_eof;
}

static ssize_t h2_stream_body(conn_t *sc, const char *data, size_t len)
{
    if (sc->state == CONN_S_RESPOND || sc->state == CONN_S_LINGER ||
        sc->state == CONN_S_CLOSING)
        return -1; /* answered already */
    if (len == 0)
        return 0;
    if (sc->rbuf == NULL)
        sc->rbuf = buf_get(&sc->w->bufs);
    size_t room = sc->w->bufs.size - sc->rlen;
    size_t fit = len < room ? len : room;
    memcpy(sc->rbuf + sc->rlen, data, fit);
    sc->rlen += fit;
    return (ssize_t)fit;
}

static size_t h2_stream_buffered(const conn_t *sc)
{
    return sc->rlen;
}

static void h2_stream_input(conn_t *sc)
{
    if (sc->state != CONN_S_CLOSING)
        conn_process(sc);
}

static const h2_host_ops_t h2_ops = {
    .read = h2_read,
    .consume = h2_consume,
    .write = conn_write,
    .writing = h2_writing,
    .ended = h2_ended,
    .close = conn_close,
    .arm_timer = conn_arm_timer,
    .stream_open = conn_new_stream,
    .stream_head = conn_stream_head,
    .stream_body = h2_stream_body,
    .stream_buffered = h2_stream_buffered,
    .stream_input = h2_stream_input,
    .stream_written = conn_write_done,
    .stream_close = conn_close,
};

/* The handshake chose h2: our SETTINGS, then the client's preface. */
static int start_h2(conn_t *c)
{
    h2_host_t host = {&h2_ops, c->w, c->cfg->max_header_size, c->id, c->peer_ip};
    c->h2 = h2_session_new(c, &host);
    if (c->h2 == NULL)
        return PS_EPROTO;
    conn_set_state(c, CONN_S_H2);
    atomic_fetch_add_explicit(&c->w->metrics.h2_conns, 1, memory_order_relaxed);
    if (c->w->draining)
        h2_goaway(c->h2);
    h2_on_input(c->h2); /* the client's preface may be decrypted already */
    return 0;
}

void conn_accept(listener_t *l)
{
    worker_t *w = l->w;
    conn_t *c = conn_new(w, w->cfg, w->targets, l->cl);
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
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
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        c->peer = ss;
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
            if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
                inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], c->peer_ip, sizeof(c->peer_ip));
            else
                inet_ntop(AF_INET6, &s6->sin6_addr, c->peer_ip, sizeof(c->peer_ip));
            snprintf(c->peer_port, sizeof(c->peer_port), "%u", ntohs(s6->sin6_port));
        } else {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, c->peer_ip, sizeof(c->peer_ip));
            snprintf(c->peer_port, sizeof(c->peer_port), "%u", ntohs(s4->sin_port));
        }
    }
    if (c->https) {
        c->tls = malloc(sizeof(*c->tls));
        if (c->tls == NULL || tls_conn_init(c->tls, w->tls, &w->bufs) != 0) {
            free(c->tls);
            c->tls = NULL;
            log_err("conn %llu %s: cannot start TLS", (unsigned long long)c->id, c->peer_ip);
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
    uv_timer_start(&c->timer, on_timeout, c->cfg->timeouts.read_header, 0);
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

const worker_conn_ops_t conn_worker_ops = {
    .accept = conn_accept,
    .drain = drain_all,
    .close_all = close_all,
    .reloaded = on_reloaded,
};
