/* HTTP/2 to clients (RFC 9113) on a TLS connection that chose h2 in ALPN.
 * libnghttp2 frames the connection; each stream gets a conn_t of its own, a
 * "stream conn" with no socket, that conn.c and proxy.c run as they run an
 * HTTP/1.1 connection carrying one request: its request head arrives
 * written as HTTP/1.1 (h2_msg.c) and is parsed and checked like any other,
 * its body bytes arrive in its read buffer, and what it writes, an HTTP/1.1
 * response head and then body bytes, leaves as HEADERS and DATA frames. So
 * routing, limits, header rules, upstream pools and health are the same
 * code for both protocols.
 *
 * Flow control bounds the memory: a stream's receive window is its read
 * buffer, and a stream's response is read from its upstream only as fast as
 * the client's window lets DATA frames go out, so a slow stream holds its
 * own buffers and no others. */
#ifndef PS_H2_H
#define PS_H2_H

#include <uv.h>

typedef struct conn conn_t;
typedef struct h2_session h2_session_t;
typedef struct h2_stream h2_stream_t;

#define H2_MAX_STREAMS 100

/* What the parent connection's timer should do. */
enum h2_phase {
    H2_BUSY,   /* streams are open */
    H2_IDLE,   /* no stream: the idle timeout runs */
    H2_ENDING, /* GOAWAY is out and nothing is left, or the session failed */
};

/* The handshake chose h2: our SETTINGS, then the client's preface. */
int h2_start(conn_t *c);
/* Ciphertext arrived on the parent connection. */
void h2_on_input(conn_t *c);
/* The parent's write finished. */
void h2_on_written(conn_t *c);
/* Graceful end (reload, stop, idle): GOAWAY, then close once the streams
 * in flight are answered. */
void h2_goaway(conn_t *c);
/* The parent's timer fired. */
void h2_on_timeout(conn_t *c);
int h2_phase(const conn_t *c);
/* conn_close of the parent: its streams close, the session goes. */
void h2_session_close(conn_t *c);

/* conn_write for a stream conn: 1 when taken now, 0 when the bytes are
 * still needed (conn_write_done follows), <0 on error. */
int h2_stream_write(conn_t *sc, uv_buf_t *bufs, unsigned n);
/* The stream conn's response is complete. */
void h2_stream_end(conn_t *sc);
/* Window updates for the body bytes that left the stream's read buffer. */
void h2_stream_update(conn_t *sc);
/* The stream's id (0 once it is closed or reset), for logs. */
int32_t h2_stream_id(const conn_t *sc);
/* The connection the stream came on; NULL once the session is gone. */
conn_t *h2_stream_parent(const conn_t *sc);
/* 1 when the request head's last field is psproxy's framing, not one the
 * client sent (see h2_req_finish), else 0. */
int h2_stream_added_fields(const conn_t *sc);
/* The client ended the stream's request (END_STREAM). */
int h2_stream_input_ended(const conn_t *sc);
/* The stream's request is malformed: its reset (conn_close) says
 * PROTOCOL_ERROR. */
void h2_stream_malformed(conn_t *sc);
/* conn_close of a stream conn: RST_STREAM unless the stream is over. */
void h2_stream_detach(conn_t *sc);
/* The stream conn's memory goes (its last close callback ran). */
void h2_stream_free(conn_t *sc);

#endif
