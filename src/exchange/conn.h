/* A client connection: the HTTP/1.1 transport (it reads request heads and
 * bodies into the exchange it embeds, one request at a time, and writes
 * their responses), over TLS or not; or, when ALPN chose h2, the host of
 * an HTTP/2 session whose streams are exchanges of their own (stream.c).
 * It knows nothing of handlers. */
#ifndef PS_CONN_H
#define PS_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "exchange.h"
#include "h2.h"
#include "sock.h"
#include "tls.h"
#include "worker.h"

enum conn_state {
    CONN_S_HANDSHAKE, /* TLS: the handshake is under way; no plaintext yet */
    CONN_S_READ_HEAD, /* no request in flight: idle, or reading a head from offset 0 */
    CONN_S_EXCHANGE,  /* its exchange runs (the exchange's states say where) */
    CONN_S_H2,        /* HTTP/2: nghttp2 frames the connection, its streams are exchanges */
    CONN_S_LINGER,    /* last response written, write side shut; draining until EOF */
    CONN_S_CLOSING,   /* uv_close called; freed when the close callbacks ran */
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
    sock_wreq_t wr;          /* the one write to the client queued */
    uv_shutdown_t *sreq;     /* the half-close under way (conn_linger) */
    tls_conn_t *tls;    /* NULL on plain HTTP */
    h2_session_t *h2;   /* HTTP/2: the session (CONN_S_H2) */
    conn_t *prev, *next; /* the worker's list */
    int state;           /* enum conn_state */
    int pending_closes;
    unsigned write_pending : 1; /* a write of ours is queued (wr) */
    unsigned eof : 1;           /* the client shut its side */
    unsigned in_process : 1;    /* conn_process() is on the stack */
    unsigned head_clock : 1;    /* the read_header timer runs for the head being read */
    unsigned head_started : 1;  /* llhttp began a head and has not finished it */
    unsigned tls_eof : 1;       /* TLS: the peer closed; act once the plaintext is used */
    /* TLS: OpenSSL's record buffers stay with a connection that keeps
     * sending requests and go back once it is quiet (see tls_went_quiet) */
    unsigned tls_quiet : 2;   /* enum conn_tls_quiet */
    unsigned tls_streak : 2;  /* quiet periods in a row that began quickly */
    uint64_t tls_quiet_at;    /* loop time its last quiet period began; 0 never */
    uint32_t n_requests;      /* heads read on this connection */
    /* HTTP/1.1: the exchange of the request being served; it holds who
     * the client is, the config and the read buffer (the connection reads
     * into it) for the connection's life. Its timer is the connection's
     * too: the handshake, idle, head, linger and HTTP/2 clocks run on it
     * while no exchange does (one timer per connection, not two) */
    exchange_t x;
};

/* What a worker asks of its connections (accept, drain, reload, stop). */
extern const worker_conn_ops_t conn_worker_ops;

/* Accepts a connection from the listener. */
void conn_accept(listener_t *l);

/* The last response is out: half-close and drain, then close. */
void conn_linger(conn_t *c);

/* The one door out: idempotent; aborts its exchange (whose handler lets go
 * of its upstream), closes the streams of an HTTP/2 session, then closes. */
void conn_close(conn_t *c);

/* The worker's periodic timer: frees the record buffers of TLS connections
 * that stayed quiet; stops itself when no connection holds any. */
void conn_tls_sweep(uv_timer_t *t);

const char *conn_state_name(int state);

#endif
