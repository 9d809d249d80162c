/* A client connection and the exchange it carries: reads requests, routes
 * them, runs the handler routing picked (handler.h) and writes its answer.
 * Handlers see this struct (they run the exchange); a handler keeps its
 * own per-request state in hstate, never in new fields here. */
#ifndef PS_CONN_H
#define PS_CONN_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "h2.h"
#include "handler.h"
#include "http.h"
#include "route.h"
#include "sock.h"
#include "worker.h"
#include "tls.h"
#include "upstream.h"

/* Room for a handler's per-request state (conn_t.hstate). */
#define CONN_HANDLER_STATE 160

enum conn_state {
    CONN_S_HANDSHAKE,  /* TLS: the handshake is under way; no plaintext yet */
    CONN_S_READ_HEAD,  /* no request in flight: idle, or reading a head from offset 0 */
    CONN_S_CONNECT_UP, /* head parsed, parser paused; the handler gets ready
                        * (reverse_proxy: an upstream connection) */
    CONN_S_PROXY,      /* the handler runs: request body to it, response from it */
    CONN_S_RESPOND,    /* writing a response made here; request body read and dropped */
    CONN_S_TUNNEL,     /* after 101: opaque bytes both ways */
    CONN_S_H2,         /* HTTP/2: nghttp2 frames the connection, its streams are conns */
    CONN_S_LINGER,     /* last response written, write side shut; draining until EOF */
    CONN_S_CLOSING,    /* uv_close called; freed when the close callbacks ran */
};

/* A TLS connection between requests, as the buffer sweep sees it. */
enum conn_tls_quiet {
    CONN_TLS_BUSY = 0,  /* bytes came since it last went quiet */
    CONN_TLS_HOLDING,   /* quiet, keeping OpenSSL's buffers for the next request */
    CONN_TLS_SWEPT,     /* still quiet at one sweep: the next one frees them */
    CONN_TLS_RELEASED,  /* quiet, buffers given back */
};

/* A connection whose quiet periods begin within this of each other is busy:
 * it keeps OpenSSL's record buffers between requests; freed 1-2 sweeps after
 * it goes quiet. */
#define CONN_TLS_HOT_MS 1000
#define CONN_TLS_SWEEP_MS 1000

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;    /* the one write to the client in flight */
    uv_shutdown_t sreq;
    /* read-only */
    worker_t *w;
    cfg_t *cfg;         /* held for the connection's life */
    const cfg_listener_t *listener;
    uint64_t id;
    struct sockaddr_storage peer;
    char peer_ip[INET6_ADDRSTRLEN];
    char peer_port[8];
    int https;
    tls_conn_t *tls;     /* NULL on plain HTTP */
    h2_session_t *h2;    /* HTTP/2: the session (CONN_S_H2) */
    h2_stream_t *h2s;    /* a stream conn: no socket, one request of a session */
    /* private */
    conn_t *prev, *next; /* the worker's list */
    int state;           /* enum conn_state */
    int pending_closes;

    /* reading: the head is parsed in place and its fields are slices of
     * rbuf, so a request's head stays at [0, head_end) until it is done */
    http_head_t req;
    char *rbuf;
    size_t rstart, rlen; /* [rstart, rlen) read but not yet parsed */
    size_t head_end;
    char *body;          /* body bytes of this parse pass, compacted in place */
    size_t body_len;
    http_chunk_check_t chunk_check; /* a chunked body's framing, strictly */

    /* the request in flight */
    route_t route;              /* what serves it */
    const handler_ops_t *ops;   /* the handler running it; NULL before routing */
    http_vars_t vars;
    unsigned head_done : 1;     /* the head is complete, the parser paused on it */
    unsigned req_done : 1;      /* the whole request was read */
    unsigned keep_alive : 1;    /* the connection may serve another request */
    unsigned write_pending : 1; /* wreq is in flight */
    unsigned eof : 1;           /* the client shut its side */
    unsigned in_process : 1;    /* conn_process() is on the stack */
    unsigned head_method : 1;   /* HEAD: the response has no body */
    unsigned upgrade : 1;       /* the request asks for a protocol upgrade */
    unsigned resp_started : 1;  /* bytes of the response went to the client */
    unsigned head_clock : 1;    /* the read_header timer runs for the head being read */
    unsigned head_started : 1;  /* llhttp began a head and has not finished it */
    unsigned tls_eof : 1;       /* TLS: the peer closed; act once the plaintext is used */
    unsigned counted : 1;       /* this request is in /metrics and the access log */

    /* TLS: OpenSSL's record buffers stay with a connection that keeps
     * sending requests and go back once it is quiet (see tls_went_quiet) */
    uint64_t tls_quiet_at;    /* loop time its last quiet period began; 0 never */
    unsigned tls_quiet : 2;   /* enum conn_tls_quiet */
    unsigned tls_streak : 2;  /* quiet periods in a row that began quickly */

    /* the exchange's buffers and upstream table */
    up_targets_t *targets; /* of the config this request started with */
    char *obuf;     /* a head the handler builds: the upstream's, or extra fields */
    char *hbuf;     /* the response head for the client */
    /* the running handler's own state for this request (its start zeroes
     * what it uses): no allocation per request */
    _Alignas(max_align_t) unsigned char hstate[CONN_HANDLER_STATE];
    int status;                /* the status sent, for the log */
    uint64_t t_start;          /* uv_hrtime() at the head, when the site logs */
    uint64_t bytes_in;         /* request body bytes read */
    uint64_t bytes_out;        /* response body bytes sent */
    uint32_t n_requests;       /* heads read on this connection */
};

/* What a worker asks of its connections (accept, drain, reload, stop). */
extern const worker_conn_ops_t conn_worker_ops;

/* Accepts a connection from the listener. */
void conn_accept(listener_t *l);

/* A write of the conn's finished: go on with whatever waited for it. */
void conn_write_done(conn_t *c);

/* The last response is out: half-close and drain, then close (a stream
 * conn: end the stream). */
void conn_linger(conn_t *c);

/* The one door out: idempotent; aborts the handler (which lets go of its
 * upstream), then closes. */
void conn_close(conn_t *c);

/* The worker's periodic timer: frees the record buffers of TLS connections
 * that stayed quiet; stops itself when no connection holds any. */
void conn_tls_sweep(uv_timer_t *t);

void conn_set_state(conn_t *c, int state);
const char *conn_state_name(int state);

/* Writes BUFS to the client, through the one wreq. Returns 0 when written
 * or queued (write_pending then set until conn_on_written), <0 on error. */
int conn_write(conn_t *c, uv_buf_t *bufs, unsigned n);

/* Runs llhttp over the buffered bytes; gathers body bytes in c->body. */
llhttp_errno_t conn_parse(conn_t *c);

/* TLS: decrypts what fits into the read buffer; returns the plaintext
 * bytes added (0 on plain HTTP). */
size_t conn_fill(conn_t *c);

/* Ends our side of the stream (after a close_notify on TLS). */
void conn_shutdown_write(conn_t *c);

/* Parses what is buffered and acts on it; safe to call again any time. */
void conn_process(conn_t *c);

/* Starts or stops reading from the client as buffer space and state allow. */
void conn_update_reading(conn_t *c);

/* Starts the client timer for MS; in CONN_S_CONNECT_UP it runs the
 * handler's timer op (reverse_proxy: the next try). */
void conn_start_timer(conn_t *c, uint64_t ms);

/* Re-arms the client timer for what the connection waits on now. */
void conn_arm_timer(conn_t *c);

/* Writes the access log line when the site has `log`. */
void conn_access_log(conn_t *c);

/* The response is fully written: next request, linger, or close. */
void conn_request_done(conn_t *c);

/* Answers with a response made here (error pages, respond, redir); closes
 * afterwards unless KEEP_ALIVE and the request was read whole. */
void conn_respond(conn_t *c, int status, const char *extra, const char *body, size_t len);
/* The request turned out malformed after it was routed (its body broke the
 * framing of its head): an HTTP/2 stream is reset with PROTOCOL_ERROR; an
 * HTTP/1.1 one gets 400 if nothing of a response went out, else the
 * connection closes. Neither is reused. */
void conn_malformed(conn_t *c);


#endif
