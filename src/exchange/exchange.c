/* One request and its response, whichever transport carries it: its
 * states and their checked transitions, routing, the handler it runs, the
 * answers made here, its clock, its log line and its one finish path. See
 * exchange.h. */
#include "exchange.h"

#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "common.h"
#include "log.h"

static llhttp_settings_t req_settings;
static uv_once_t settings_once = UV_ONCE_INIT;

/* ---- states ------------------------------------------------------------- */

#define BIT(s) (1u << (s))

/* Where each request state may go (staying put is always allowed). */
const unsigned exchange_req_next[] = {
    [XREQ_HEAD] = BIT(XREQ_BODY) | BIT(XREQ_BROKEN),
    [XREQ_BODY] = BIT(XREQ_DONE) | BIT(XREQ_BROKEN),
    [XREQ_DONE] = BIT(XREQ_HEAD) | BIT(XREQ_BROKEN), /* HEAD: the next one on the connection */
    [XREQ_BROKEN] = 0,
};

/* Where each response state may go. */
const unsigned exchange_resp_next[] = {
    [XRESP_NONE] = BIT(XRESP_PREPARE) | BIT(XRESP_LOCAL) | BIT(XRESP_CLOSED),
    [XRESP_PREPARE] = BIT(XRESP_RELAY) | BIT(XRESP_LOCAL) | BIT(XRESP_CLOSED),
    /* PREPARE again: a retry on another upstream */
    [XRESP_RELAY] = BIT(XRESP_PREPARE) | BIT(XRESP_LOCAL) | BIT(XRESP_TUNNEL) | BIT(XRESP_DONE) |
                    BIT(XRESP_CLOSED),
    [XRESP_LOCAL] = BIT(XRESP_DONE) | BIT(XRESP_CLOSED),
    [XRESP_TUNNEL] = BIT(XRESP_CLOSED),
    [XRESP_DONE] = BIT(XRESP_NONE) | BIT(XRESP_CLOSED), /* NONE: the next one on the connection */
    [XRESP_CLOSED] = 0,
};

const char *exchange_req_name(int rq)
{
    static const char *const names[] = {"head", "body", "done", "broken"};
    return rq >= 0 && rq < (int)PS_ARRAY_SIZE(names) ? names[rq] : "?";
}

const char *exchange_resp_name(int rs)
{
    static const char *const names[] = {"none", "prepare", "relay", "local",
                                        "tunnel", "done", "closed"};
    return rs >= 0 && rs < (int)PS_ARRAY_SIZE(names) ? names[rs] : "?";
}

int exchange_req_allowed(int from, int to)
{
    if (from < XREQ_HEAD || from > XREQ_BROKEN || to < XREQ_HEAD || to > XREQ_BROKEN)
        return 0;
    return from == to || (exchange_req_next[from] & BIT(to)) != 0;
}

int exchange_resp_allowed(int from, int to)
{
    if (from < XRESP_NONE || from > XRESP_CLOSED || to < XRESP_NONE || to > XRESP_CLOSED)
        return 0;
    return from == to || (exchange_resp_next[from] & BIT(to)) != 0;
}

/* A transition the table does not allow is a bug in psproxy: said loudly,
 * and fatal where assertions are on (tests, debug builds). */
void exchange_bad_transition(const exchange_t *x, int resp, int to)
{
    log_err("exchange %llu: %s state %s -> %s is not a transition", (unsigned long long)x->id,
            resp ? "response" : "request",
            resp ? exchange_resp_name(x->rs) : exchange_req_name(x->rq),
            resp ? exchange_resp_name(to) : exchange_req_name(to));
#ifndef NDEBUG
    abort();
#endif
}

void exchange_log_transition(const exchange_t *x, int resp, int to)
{
    log_debug("exchange %llu: %s %s -> %s", (unsigned long long)x->id,
              resp ? "response" : "request",
              resp ? exchange_resp_name(x->rs) : exchange_req_name(x->rq),
              resp ? exchange_resp_name(to) : exchange_req_name(to));
}

/* ---- parsing ------------------------------------------------------------ */

static int on_message_begin(llhttp_t *p)
{
    exchange_t *x = p->data;
    x->head_started = 1;
    x->t_start = uv_hrtime(); /* a vDSO clock read: for the log and /metrics */
    x->counted = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    exchange_t *x = p->data;
    exchange_req_to(x, XREQ_BODY);
    http_chunk_check_init(&x->cur->chunk_check);
    return HPE_PAUSED; /* route and get the handler ready before the body flows */
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    exchange_t *x = p->data;
    x->bytes_in += len;
    if (x->rs == XRESP_LOCAL)
        return 0; /* answered here: the body is read and dropped */
    if (x->cur->route.body_limit != 0 && x->bytes_in > x->cur->route.body_limit) {
        x->cur->req.err_status = 413; /* a chunked body grew past request_body max_size */
        llhttp_set_error_reason(p, "request body too large");
        return HPE_USER;
    }
    /* chunk framing between the pieces is parsed already: close the gaps so
     * one contiguous slice (one chunk upstream) carries this pass's data */
    http_body_append(&x->body, &x->body_len, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    exchange_t *x = p->data;
    exchange_req_to(x, XREQ_DONE);
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

const llhttp_settings_t *exchange_parser_settings(void)
{
    uv_once(&settings_once, settings_init);
    return &req_settings;
}

llhttp_errno_t exchange_parse(exchange_t *x)
{
    x->body = NULL;
    x->body_len = 0;
    if (x->rq == XREQ_DONE)
        return llhttp_get_errno(&x->cur->req.parser);
    return x->xport->parse(x);
}

void exchange_update_reading(exchange_t *x)
{
    x->xport->update_reading(x);
}

void exchange_process(exchange_t *x)
{
    x->xport->process(x);
}

/* ---- lifetime ----------------------------------------------------------- */

static void exchange_on_timeout(deadline_t *d);

void exchange_init(exchange_t *x, const xport_ops_t *ops, worker_t *w, cfg_t *cfg,
                   up_targets_t *targets, const cfg_listener_t *listener)
{
    x->xport = ops;
    x->w = w;
    x->id = ++w->next_conn_id * 64 + (uint64_t)w->index;
    deadline_init(&w->deadlines, &x->timer, x);
    x->cfg = cfg_ref(cfg);
    x->targets = up_targets_ref(targets); /* with the config: a reload does not change them */
    x->listener = listener;
    x->https = listener->scheme == CFG_SCHEME_HTTPS;
    x->keep_alive = 1;
}

void exchange_begin_request(exchange_t *x)
{
    if (x->cur != NULL)
        return;
    xreq_t *r = (xreq_t *)(void *)buf_get(&x->w->xreqs);
    /* one head per lend: on_message_begin finds it reset. The placeholders
     * are filled at routing; until then only the route is read (a site's
     * log, a body limit), and none is set */
    http_head_init(&r->req, HTTP_REQUEST, exchange_parser_settings());
    r->req.parser.data = x;
    r->req.hdrs = r->table.hdrs;
    memset(&r->route, 0, offsetof(route_t, filters));
    r->route.n_filters = 0;
    x->cur = r;
}

/* The request's state goes back to the worker; the next head borrows it
 * again. */
static void end_request(exchange_t *x)
{
    buf_put(&x->w->xreqs, (char *)x->cur);
    x->cur = NULL;
}

static void release_request_bufs(exchange_t *x)
{
    buf_put(&x->w->bufs, x->obuf);
    buf_put(&x->w->bufs, x->hbuf);
    x->obuf = x->hbuf = NULL;
    if (x->bodyf != NULL) {
        filter_body_close(x->bodyf);
        x->bodyf = NULL;
    }
}

void exchange_dispose(exchange_t *x)
{
    release_request_bufs(x);
    buf_put(&x->w->bufs, x->rbuf);
    end_request(x);
    x->rbuf = NULL;
    cfg_unref(x->cfg);
    up_targets_unref(x->targets);
}

void exchange_abort(exchange_t *x)
{
    if (x->rs == XRESP_CLOSED)
        return;
    exchange_resp_to(x, XRESP_CLOSED);
    if (x->ops != NULL && x->ops->abort != NULL)
        x->ops->abort(x);
    release_request_bufs(x);
    deadline_stop(&x->timer);
}

void exchange_close(exchange_t *x)
{
    if (x->rs == XRESP_CLOSED)
        return;
    exchange_abort(x);
    x->xport->close(x);
}

void exchange_reset(exchange_t *x)
{
    /* each request starts with a fresh parser (exchange_begin_request):
     * after an upgrade the upstream refused, llhttp would otherwise take
     * the next head for the upgraded protocol (HPE_PAUSED_UPGRADE) */
    exchange_req_to(x, XREQ_HEAD);
    exchange_resp_to(x, XRESP_NONE);
    x->resp_started = x->upgrade = x->head_method = 0;
    x->ops = NULL;
    x->status = 0;
    x->head_end = 0;
}

void exchange_done(exchange_t *x)
{
    exchange_access_log(x);
    release_request_bufs(x);
    end_request(x);
    x->ops = NULL; /* its handler is done: nothing to abort from here on */
    deadline_stop(&x->timer);
    if (x->w->draining)
        x->keep_alive = 0; /* stopping: this was the connection's last response */
    exchange_resp_to(x, XRESP_DONE);
    x->xport->finish(x);
}

/* ---- timers ------------------------------------------------------------- */

/* The exchange's clock (the transport may run its own on the same timer
 * between exchanges, with its own callback). */
static void exchange_on_timeout(deadline_t *d)
{
    exchange_t *x = d->data;
    switch (x->rs) {
    case XRESP_PREPARE:
        if (x->ops->timer != NULL) {
            x->ops->timer(x);
            return;
        }
        break;
    case XRESP_RELAY:
        log_info("exchange %llu %s: client timed out (%s)", (unsigned long long)x->id, x->peer_ip,
                 exchange_req_name(x->rq));
        break;
    default:
        break; /* the head (HTTP/2), a write, or a stream that never ended */
    }
    exchange_close(x);
}

void exchange_start_timer(exchange_t *x, uint64_t ms)
{
    deadline_start(&x->timer, exchange_on_timeout, ms);
}

void exchange_arm_timer(exchange_t *x)
{
    const cfg_t *cfg = x->cfg;
    uint64_t ms = 0;
    switch (x->rs) {
    case XRESP_RELAY:
    case XRESP_LOCAL:
    case XRESP_TUNNEL:
        /* a tunnel has no idle limit: as in Caddy, a WebSocket lives while
         * both ends keep it (TCP keepalive finds one that vanished) */
        if (x->write_pending)
            ms = cfg->timeouts.write;
        else if (x->rq != XREQ_DONE && x->rs != XRESP_TUNNEL &&
                 !(x->ops != NULL && x->ops->body_blocked != NULL && x->ops->body_blocked(x)))
            ms = cfg->timeouts.read_body; /* a stalled upstream has its own clock */
        break;
    default:
        /* NONE: the transport's head clock; PREPARE: the handler's; DONE:
         * the transport's end */
        return;
    }
    if (ms == 0)
        deadline_stop(&x->timer);
    else
        deadline_start(&x->timer, exchange_on_timeout, ms);
}

/* ---- writing ------------------------------------------------------------ */

int exchange_write(exchange_t *x, uv_buf_t *bufs, unsigned n)
{
    int r = x->xport->write(x, bufs, n);
    if (r == 0) {
        x->write_pending = 1;
        exchange_arm_timer(x);
    }
    return r;
}

void exchange_written(exchange_t *x)
{
    x->write_pending = 0;
    if (x->rs == XRESP_LOCAL)
        exchange_respond_maybe_done(x);
    else if ((x->rs == XRESP_RELAY || x->rs == XRESP_TUNNEL) && x->ops->client_written != NULL)
        x->ops->client_written(x);
}

/* ---- the request's input ------------------------------------------------ */

int exchange_step(exchange_t *x, size_t got)
{
    if (x->rs == XRESP_LOCAL) {
        if (x->rq == XREQ_DONE)
            return 0;
        if (x->rq == XREQ_BROKEN) {
            if (x->rstart == x->rlen)
                return 0;
            x->rstart = x->rlen; /* nothing more of it is used */
            return 1;
        }
        /* an HTTP/2 request may end with no byte (END_STREAM) */
        if (x->rstart == x->rlen && !x->xport->input_ended(x))
            return 0;
        llhttp_errno_t err = exchange_parse(x);
        if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
            x->keep_alive = 0;
            x->rstart = x->rlen;
            exchange_req_to(x, XREQ_BROKEN);
        }
        exchange_respond_maybe_done(x);
        return 1;
    }
    if (x->rs == XRESP_RELAY) {
        size_t rstart = x->rstart, rlen = x->rlen;
        x->ops->request_body(x);
        /* TLS: while this makes progress, go round again: what was sent
         * made room, and OpenSSL may hold more that no socket event would
         * announce */
        int waits = x->rs == XRESP_RELAY && got == 0 && x->rstart == rstart && x->rlen == rlen;
        return !waits;
    }
    return 0;
}

void exchange_client_eof(exchange_t *x)
{
    x->eof = 1;
    switch (x->rs) {
    case XRESP_PREPARE:
    case XRESP_RELAY:
    case XRESP_TUNNEL:
        /* a request without a body is whole once its head is (the parser
         * stays paused on it until the handler is ready) */
        if (x->rq != XREQ_DONE && x->rs != XRESP_TUNNEL &&
            !(x->rq == XREQ_BODY && http_request_framing(&x->cur->req) == HTTP_BODY_NONE))
            exchange_close(x); /* gone mid-request: the exchange cannot complete */
        else if (x->ops->client_eof != NULL)
            x->ops->client_eof(x);
        break;
    case XRESP_LOCAL:
        if (x->rq != XREQ_DONE)
            exchange_close(x);
        break; /* else the response is written, then the connection closes */
    default:
        exchange_close(x);
        break;
    }
}

/* ---- answering here ----------------------------------------------------- */

void exchange_respond_maybe_done(exchange_t *x)
{
    if (x->write_pending || x->rs != XRESP_LOCAL)
        return;
    if (!x->keep_alive || x->rq == XREQ_DONE)
        exchange_done(x);
}

void exchange_respond(exchange_t *x, int status, const char *extra, const char *body, size_t len)
{
    if (x->rs == XRESP_NONE && x->rq == XREQ_BODY) {
        /* drop what is buffered of the body now: if it was all there, the
         * connection can stay open */
        exchange_resp_to(x, XRESP_LOCAL);
        llhttp_errno_t err = exchange_parse(x);
        if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
            x->keep_alive = 0;
    }
    exchange_resp_to(x, XRESP_LOCAL);
    if (x->rq != XREQ_DONE || x->upgrade)
        x->keep_alive = 0;
    if (x->hbuf == NULL)
        x->hbuf = buf_get(&x->w->bufs);
    int n = http_build_simple(x->hbuf, x->w->bufs.size, status, extra, body, len, x->keep_alive,
                              x->head_method);
    if (n < 0) {
        n = http_build_simple(x->hbuf, x->w->bufs.size, 500, NULL, NULL, 0, 0, 0);
        x->keep_alive = 0;
        status = 500;
    }
    x->status = status;
    x->bytes_out = x->head_method ? 0 : len;
    uv_buf_t b = uv_buf_init(x->hbuf, (unsigned)n);
    int r = exchange_write(x, &b, 1);
    if (r < 0) {
        exchange_close(x);
        return;
    }
    if (r == 1)
        exchange_respond_maybe_done(x);
}

void exchange_malformed(exchange_t *x)
{
    x->keep_alive = 0;
    x->xport->malformed(x);
}

void exchange_respond_error(exchange_t *x, int status)
{
    log_debug("exchange %llu %s: %d %s: %s", (unsigned long long)x->id, x->peer_ip, status,
              http_reason(status), llhttp_get_error_reason(&x->cur->req.parser));
    x->keep_alive = 0;
    exchange_req_to(x, XREQ_BROKEN);
    exchange_respond(x, status, NULL, NULL, 0);
}

/* ---- routing ------------------------------------------------------------ */

void exchange_route(exchange_t *x, int st)
{
    llhttp_t *p = &x->cur->req.parser;
    x->head_started = 0;
    if (st == 0)
        st = http_head_analyze(&x->cur->req);
    if (st != 0) {
        exchange_respond_error(x, st);
        return;
    }
    x->keep_alive = llhttp_should_keep_alive(p);
    x->head_method = p->method == HTTP_HEAD;
    x->upgrade = p->upgrade;
    if (p->method == HTTP_CONNECT) {
        x->keep_alive = 0;
        exchange_respond(x, 405, NULL, NULL, 0);
        return;
    }
    http_vars_from_request(&x->cur->vars, &x->cur->req, x->https, x->peer_ip, x->peer_port);
    route_pick(&x->cur->route, x->cfg, x->listener, x->https, &x->cur->vars);
    x->bytes_in = x->bytes_out = 0;
    x->ops = handler_of(x->cur->route.id);
    if (x->ops == NULL) {
        log_err("exchange %llu: no handler registered for route %d", (unsigned long long)x->id,
                x->cur->route.id);
        x->keep_alive = 0;
        exchange_respond(x, 500, NULL, NULL, 0);
        return;
    }
    x->ops->start(x);
}

/* ---- the log ------------------------------------------------------------ */

void exchange_access_log(exchange_t *x)
{
    if (x->counted || x->status == 0)
        return;
    x->counted = 1;
    int h2 = x->xport->version == 2;
    const char *upstream =
        x->ops != NULL && x->ops->upstream != NULL ? x->ops->upstream(x) : NULL;
    const cfg_site_t *s = x->cur->route.site;
    const char *site = s != NULL && s->n_addrs > 0 ? s->addrs[0].host : NULL;
    metrics_request(&x->w->metrics, site != NULL && site[0] ? site : "*", x->status, upstream,
                    (uv_hrtime() - x->t_start) / 1000, h2);
    if (s == NULL || !s->log.enabled)
        return;
    /* built only for a site that logs; everything is a slice of what the
     * exchange holds until it is done */
    alog_entry_t e = {0};
    e.remote_ip = x->peer_ip;
    e.remote_port = x->peer_port;
    e.method = x->cur->vars.method;
    e.host = x->cur->vars.hostport;
    e.uri = x->cur->req.url;
    e.proto = h2 ? "HTTP/2.0" : x->cur->req.parser.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    e.req_hdrs = x->cur->req.hdrs;
    e.n_req_hdrs = x->cur->req.n_hdrs;
    if (x->added_fields && e.n_req_hdrs > 0)
        e.n_req_hdrs--; /* not the client's */
    tls_info_t tls;
    tls_conn_t *t = x->xport->tls(x);
    if (t != NULL) {
        tls_conn_info(t, &tls);
        e.tls = &tls;
    }
    /* the head the client got is still in hbuf (released after this) */
    if (x->hbuf != NULL)
        e.resp_head = uv_buf_init(x->hbuf, (unsigned)x->w->bufs.size);
    e.resp_local = x->rs == XRESP_LOCAL;
    e.status = x->status;
    e.bytes_read = x->bytes_in;
    e.size = x->bytes_out;
    e.duration_ns = uv_hrtime() - x->t_start;
    e.upstream = upstream;
    alog_write(x->w->alog, s, &e);
}
