/* An exchange: one request and its response, whichever protocol carries
 * it. An HTTP/1.1 connection (conn.c) embeds the one it serves at a time;
 * an HTTP/2 stream (stream.c) allocates one. The exchange reads its
 * request through the transport's ops (xport_ops_t), routes it, runs the
 * handler routing picked (handler.h) and writes the answer back through
 * the same ops, so neither it nor a handler names a protocol.
 *
 * Its request and its response each have a state; every change goes
 * through exchange_req_to / exchange_resp_to, which check it against the
 * table of allowed transitions (exchange.c). Handlers keep their
 * per-request state in x->cur->hstate, never in new fields here. */
#ifndef PS_EXCHANGE_H
#define PS_EXCHANGE_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deadline.h"
#include "handler.h"
#include "http.h"
#include "log.h"
#include "route.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

/* Room for a handler's per-request state (xreq_t.hstate). */
#define EXCHANGE_HANDLER_STATE 160

/* How much of the request was read. */
enum xreq_state {
    XREQ_HEAD,   /* its head is being read */
    XREQ_BODY,   /* the head is complete (the parser paused on it); body bytes may follow */
    XREQ_DONE,   /* all of it was read */
    XREQ_BROKEN, /* it broke its framing: nothing more of it is used */
};

/* Where its response is. */
enum xresp_state {
    XRESP_NONE,    /* not routed yet */
    XRESP_PREPARE, /* routed; the handler gets ready (reverse_proxy: an
                    * upstream), the request body waits */
    XRESP_RELAY,   /* the handler runs: request body to it, response from it */
    XRESP_LOCAL,   /* a response made here; the request body is read and dropped */
    XRESP_TUNNEL,  /* after 101: opaque bytes both ways */
    XRESP_DONE,    /* all of it is out; the exchange ends */
    XRESP_CLOSED,  /* ended, early or not: the handler let go, buffers returned */
};

/* What a transport does for the exchanges it carries. */
typedef struct xport_ops {
    int version; /* HTTP major version: 2 frames bodies itself (no chunking) */
    /* Response bytes: 1 taken now, 0 queued (exchange_written follows),
     * <0 failed. */
    int (*write)(exchange_t *x, uv_buf_t *bufs, unsigned n);
    /* Reads from the client as buffer space and the exchange's state allow. */
    void (*update_reading)(exchange_t *x);
    /* TLS: decrypts what fits into the exchange's buffer; the bytes added. */
    size_t (*fill)(exchange_t *x);
    /* Reads and acts on what is buffered (exchange_step until it waits). */
    void (*process)(exchange_t *x);
    /* Parses what is buffered of the request (the head too, on HTTP/1.1);
     * body bytes gather in x->body. */
    llhttp_errno_t (*parse)(exchange_t *x);
    /* The client ended the request's input with nothing left to parse
     * (HTTP/2: END_STREAM). */
    int (*input_ended)(const exchange_t *x);
    /* The exchange is over (XRESP_DONE): the next request, or the end of
     * the connection or stream. */
    void (*finish)(exchange_t *x);
    /* The exchange ends early (XRESP_CLOSED): close what carries it. */
    void (*close)(exchange_t *x);
    /* The request broke its framing after it was routed: HTTP/2 resets the
     * stream; HTTP/1.1 answers 400 while it can, else closes. */
    void (*malformed)(exchange_t *x);
    /* A tunnel's client side (HTTP/1.1 after 101). shutdown_write: our
     * side ends once what is queued is out (a close_notify first on TLS). */
    void (*shutdown_write)(exchange_t *x);
    /* Whether the client ended its input, counting a TLS close_notify read
     * so far: that one sets x->eof and stops reading here. */
    int (*input_eof)(exchange_t *x);
    /* TCP keepalive every SECS: a tunnel has no idle timeout of its own. */
    void (*keepalive)(exchange_t *x, unsigned secs);
    /* The TLS session under it, for the log; NULL for none. */
    tls_conn_t *(*tls)(const exchange_t *x);
} xport_ops_t;

/* What a request holds only while it is in flight: lent by the worker
 * (worker_t.xreqs) from the first byte of its head (HTTP/2: its HEADERS)
 * to its end, so an idle keep-alive connection does not carry it. */
typedef struct xreq {
    /* the head is parsed in place: its fields are slices of the exchange's
     * rbuf, so a head stays at [0, head_end) until the exchange is done */
    http_head_t req;
    http_vars_t vars;
    route_t route;            /* what serves it */
    http_chunk_check_t chunk_check; /* a chunked body's framing, strictly */
    /* the running handler's own state (its start zeroes what it uses) */
    _Alignas(max_align_t) unsigned char hstate[EXCHANGE_HANDLER_STATE];
    http_table_t table;       /* the head's fields (req.hdrs) */
} xreq_t;

struct exchange {
    const xport_ops_t *xport;
    deadline_t timer; /* its clock, and the connection's between exchanges */
    /* who it serves, under which config (held for its life) */
    worker_t *w;
    cfg_t *cfg;
    up_targets_t *targets;
    const cfg_listener_t *listener;
    uint64_t id;
    /* the client's address: TCP listeners only, so IPv4 or IPv6 (not a
     * sockaddr_storage: 100 bytes less on every connection) */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } peer;
    char peer_ip[INET6_ADDRSTRLEN];
    char peer_port[8];
    int https;

    int rq; /* enum xreq_state */
    int rs; /* enum xresp_state */

    xreq_t *cur; /* the request in flight; NULL between requests */
    char *rbuf;
    size_t rstart, rlen; /* [rstart, rlen) read but not yet parsed */
    size_t head_end;
    char *body;          /* body bytes of this parse pass, compacted in place */
    size_t body_len;
    const handler_ops_t *ops; /* the handler running it; NULL before routing */
    unsigned keep_alive : 1;    /* its connection may serve another request */
    /* response bytes the transport has not taken yet: on HTTP/1.1 the
     * connection's own write_pending is set with it, but that one also
     * covers what is not the exchange's (an HTTP/2 session's frames) */
    unsigned write_pending : 1;
    unsigned eof : 1;           /* the client ended its input (HTTP/1.1: shut its side) */
    unsigned head_method : 1;   /* HEAD: the response has no body */
    unsigned upgrade : 1;       /* the request asks for a protocol upgrade */
    unsigned resp_started : 1;  /* bytes of the response went to the client */
    unsigned counted : 1;       /* it is in /metrics and the access log */
    unsigned added_fields : 1;  /* HTTP/2: the head's last field is our framing, not the client's */
    unsigned head_started : 1;  /* llhttp began a head and has not finished it */

    char *obuf; /* a head the handler builds: the upstream's, or extra fields */
    char *hbuf; /* the response head for the client */
    filter_body_t *bodyf; /* the body filters claiming this response; NULL: none */
    int status;        /* the status sent, for the log */
    uint64_t t_start;  /* uv_hrtime() at the head */
    uint64_t bytes_in; /* request body bytes read */
    uint64_t bytes_out; /* response body bytes sent */
};

const char *exchange_req_name(int rq);
const char *exchange_resp_name(int rs);
/* 1 when FROM may become TO (staying put is always allowed). */
int exchange_req_allowed(int from, int to);
int exchange_resp_allowed(int from, int to);

/* The transitions allowed (exchange.c): bit TO of row FROM. */
extern const unsigned exchange_req_next[];
extern const unsigned exchange_resp_next[];
/* A change the tables refuse: logged, and fatal where assertions are on. */
void exchange_bad_transition(const exchange_t *x, int resp, int to);
void exchange_log_transition(const exchange_t *x, int resp, int to);

/* State changes, checked against the transitions allowed. Inline: they
 * run several times per request. X's state is always valid (only these
 * set it); TO is one of the enum's values. */
static inline void exchange_req_to(exchange_t *x, int rq)
{
    if (x->rq == rq)
        return;
    if (!(exchange_req_next[x->rq] & (1u << rq)))
        exchange_bad_transition(x, 0, rq);
    if (log_enabled(LOG_DEBUG))
        exchange_log_transition(x, 0, rq);
    x->rq = rq;
}

static inline void exchange_resp_to(exchange_t *x, int rs)
{
    if (x->rs == rs)
        return;
    if (!(exchange_resp_next[x->rs] & (1u << rs)))
        exchange_bad_transition(x, 1, rs);
    if (log_enabled(LOG_DEBUG))
        exchange_log_transition(x, 1, rs);
    x->rs = rs;
}

/* Sets X up for its transport OPS on worker W under CFG and TARGETS (both
 * referenced here) for a client of LISTENER. */
void exchange_init(exchange_t *x, const xport_ops_t *ops, worker_t *w, cfg_t *cfg,
                   up_targets_t *targets, const cfg_listener_t *listener);
/* Lets go of what X holds (buffers, references); its timer is closed
 * already. */
void exchange_dispose(exchange_t *x);


/* The request head is complete and the parser paused on it: check, route,
 * start the handler. ST: a status to answer instead, or 0. */
void exchange_route(exchange_t *x, int st);

/* Makes progress on what is buffered for X once: body bytes to the
 * handler, or dropped under a local answer. 1 when it moved, 0 when it
 * waits. GOT: bytes the transport just added. */
int exchange_step(exchange_t *x, size_t got);
/* Reads and acts on what is buffered, through the transport; safe to call
 * again any time. */
void exchange_process(exchange_t *x);
/* The client ended its input (its socket, or a TLS close_notify). */
void exchange_client_eof(exchange_t *x);

/* Writes BUFS to the client. Returns 1 taken, 0 queued (write_pending set
 * until exchange_written), <0 on error. */
int exchange_write(exchange_t *x, uv_buf_t *bufs, unsigned n);
/* The transport took what exchange_write queued. */
void exchange_written(exchange_t *x);

/* Parses what is buffered (exchange_t.body: the body bytes of this pass). */
llhttp_errno_t exchange_parse(exchange_t *x);
void exchange_update_reading(exchange_t *x);

/* Starts X's timer for MS; in XRESP_PREPARE it runs the handler's timer
 * op (reverse_proxy: the next try). */
void exchange_start_timer(exchange_t *x, uint64_t ms);
/* Re-arms X's timer for what it waits on now. */
void exchange_arm_timer(exchange_t *x);

/* The one finish path: logs, lets go of the request's buffers and hands
 * the end to the transport (the next request, or the end). */
void exchange_done(exchange_t *x);
/* The one early end: idempotent; aborts the handler (which lets go of its
 * upstream), then closes what carries X. */
void exchange_close(exchange_t *x);
/* The handler lets go and the buffers go back, without closing the
 * transport (its own close runs this). */
void exchange_abort(exchange_t *x);

/* Answers with a response made here (error pages, respond, redir); the
 * connection closes afterwards unless KEEP_ALIVE and the request was read
 * whole. */
void exchange_respond(exchange_t *x, int status, const char *extra, const char *body, size_t len);
/* The request turned out malformed after it was routed: see xport_ops_t. */
void exchange_malformed(exchange_t *x);
/* An error answer for a request that could not be read (a status of
 * http_request_error_status); the connection closes after it. */
void exchange_respond_error(exchange_t *x, int status);
/* A local answer is written: finish once the request is read too. */
void exchange_respond_maybe_done(exchange_t *x);

/* Writes the access log line (once) when the site has `log`; counts the
 * request in /metrics. */
void exchange_access_log(exchange_t *x);

/* The request is a fresh one: routing and handler cleared; its state is
 * lent at its first byte (exchange_begin_request). */
void exchange_reset(exchange_t *x);
/* Lends X a request's state (x->cur) with a fresh parser, unless it has
 * one: before a head is parsed. */
void exchange_begin_request(exchange_t *x);

/* The transport's pieces of HTTP/1.1 parsing: the llhttp settings every
 * exchange's parser uses (its callbacks fill the exchange). */
const llhttp_settings_t *exchange_parser_settings(void);

#endif
