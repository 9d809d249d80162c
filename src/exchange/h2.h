/* HTTP/2 to clients (RFC 9113) on a TLS connection that chose h2 in ALPN:
 * a transport. libnghttp2 frames the connection; the session hands each
 * stream's request up to an exchange (stream.c) and
 * takes its response down, through the ops that layer lends it
 * (h2_host_ops_t), and knows nothing else of it. A request head arrives
 * written as HTTP/1.1 (h2_msg.c) and is parsed and checked like any other,
 * its body bytes go to the exchange's buffer, and what the exchange writes,
 * an HTTP/1.1 response head and then body bytes, leaves as HEADERS and
 * DATA frames. So routing, limits, header rules, upstream pools and health
 * are the same code for both protocols.
 *
 * Flow control bounds the memory: a stream's receive window is its
 * exchange's read buffer, and a stream's response is read from its
 * upstream only as fast as the client's window lets DATA frames go out, so
 * a slow stream holds its own buffers and no others. */
#ifndef PS_H2_H
#define PS_H2_H

#include <sys/types.h>
#include <uv.h>

typedef struct conn conn_t;         /* the connection layer's; opaque here */
typedef struct exchange exchange_t; /* a stream's exchange; opaque here */
typedef struct h2_session h2_session_t;
typedef struct h2_stream h2_stream_t;
struct worker;

#define H2_MAX_STREAMS 100

/* What the parent connection's timer should do. */
enum h2_phase {
    H2_BUSY,   /* streams are open */
    H2_IDLE,   /* no stream: the idle timeout runs */
    H2_ENDING, /* GOAWAY is out and nothing is left, or the session failed */
};

/* What the connection layer does for a session: C is the parent
 * connection, X a stream's exchange (open_exchange made it). */
typedef struct h2_host_ops {
    /* Decrypts what waits into C's buffer (*ADDED: bytes it added) and
     * returns all of C's plaintext not consumed yet. */
    uv_buf_t (*read)(conn_t *c, size_t *added);
    /* The session took all of what read returned. */
    void (*consume)(conn_t *c);
    /* Writes frames to C: <0 on error, else written or queued (then
     * writing() is 1 until h2_on_written). */
    int (*write)(conn_t *c, uv_buf_t *bufs, unsigned n);
    int (*writing)(const conn_t *c);
    /* The client closed its side (the session ends once it read the rest). */
    int (*ended)(const conn_t *c);
    void (*close)(conn_t *c);
    /* Re-arms C's timer for what it waits on now (h2_phase). */
    void (*arm_timer)(conn_t *c);

    /* A new stream S: the exchange that will carry its request. */
    exchange_t *(*open_exchange)(conn_t *c, h2_stream_t *s);
    /* The request head, HEAD..LEN as HTTP/1.1, or -status to answer. */
    void (*take_head)(exchange_t *x, char *head, int len);
    /* Request body bytes: copies what fits into the exchange's buffer and
     * returns how many; -1 when it takes no more (it answered already: the
     * bytes are dropped). DATA NULL, LEN 0 only asks which. */
    ssize_t (*take_body)(exchange_t *x, const char *data, size_t len);
    /* Body bytes in the exchange's buffer not used yet (the window). */
    size_t (*held_bytes)(const exchange_t *x);
    /* New body bytes or the request's end: the exchange acts on them. */
    void (*input_ready)(exchange_t *x);
    /* DATA frames took what the exchange's last h2_stream_write queued. */
    void (*output_taken)(exchange_t *x);
    /* The stream is gone (reset, or the session ends): the exchange
     * closes; it calls h2_stream_detach and later h2_stream_free. */
    void (*close_exchange)(exchange_t *x);
} h2_host_ops_t;

/* What the parent lends the session. */
typedef struct h2_host {
    const h2_host_ops_t *ops;
    struct worker *w;       /* loop, buffers */
    size_t max_header_size; /* SETTINGS_MAX_HEADER_LIST_SIZE, and 431 beyond */
    uint64_t id;            /* the connection's, for logs */
    const char *peer_ip;
} h2_host_t;

/* The handshake chose h2: a session on C, our SETTINGS queued; NULL when
 * nghttp2 could not start one. The caller feeds it with h2_on_input. */
h2_session_t *h2_session_new(conn_t *c, const h2_host_t *host);
/* Plaintext may be waiting on the parent connection. */
void h2_on_input(h2_session_t *h);
/* The parent's write finished. */
void h2_on_written(h2_session_t *h);
/* Graceful end (reload, stop, idle): GOAWAY, then close once the streams
 * in flight are answered. */
void h2_goaway(h2_session_t *h);
/* The parent's timer fired. Returns H2_ENDING: the session is over (close
 * it, then linger); H2_IDLE: a GOAWAY went out, wait for it; H2_BUSY: the
 * connection timed out (close it). */
int h2_on_timeout(h2_session_t *h);
int h2_phase(const h2_session_t *h);
/* conn_close of the parent: its streams close, the session goes (freed
 * from the loop). */
void h2_session_close(h2_session_t *h);

/* A response for the stream: 1 when taken now, 0 when the bytes are still
 * needed (output_taken follows), <0 on error. HEAD_METHOD: the response
 * has no body. */
int h2_stream_write(h2_stream_t *s, uv_buf_t *bufs, unsigned n, int head_method);
/* The stream's response is complete. */
void h2_stream_end(h2_stream_t *s);
/* Window updates for the body bytes that left the exchange's buffer, and
 * what waited beyond it. */
void h2_stream_update(h2_stream_t *s);
/* The stream's id (0 once it is closed or reset), for logs. */
int32_t h2_stream_id(const h2_stream_t *s);
/* The connection the stream came on; NULL once the session is gone. */
conn_t *h2_stream_parent(const h2_stream_t *s);
/* 1 when the request head's last field is psproxy's framing, not one the
 * client sent (see h2_req_finish), else 0. */
int h2_stream_added_fields(const h2_stream_t *s);
/* The client ended the stream's request (END_STREAM) and all of it went to
 * the exchange. */
int h2_stream_input_ended(const h2_stream_t *s);
/* The stream's request is malformed: its reset says PROTOCOL_ERROR. */
void h2_stream_malformed(h2_stream_t *s);
/* The exchange closes: RST_STREAM unless the stream is over. */
void h2_stream_detach(h2_stream_t *s);
/* The exchange's memory goes (its last close callback ran). */
void h2_stream_free(h2_stream_t *s);
/* Bytes of a stream's state (the worker pools them: h2_streams). */
size_t h2_stream_size(void);

#endif
