/* TLS termination with OpenSSL 3 over libuv: the server context (protocols,
 * ciphers, SNI from the certificate store, ALPN, session tickets with
 * rotating keys, a session cache) and per-connection state that moves
 * records through our own buffers instead of a socket. */
#ifndef PS_TLS_H
#define PS_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "buf.h"
#include "certs.h"
#include "sock.h"

typedef struct tls_server tls_server_t;

/* One context for every HTTPS listener. DEFAULT_NAME (may be NULL) is the
 * certificate name for clients that send no SNI. Returns NULL with the
 * reason in ERR. */
tls_server_t *tls_server_new(certs_t *store, const char *default_name, char *err, size_t errlen);
void tls_server_free(tls_server_t *s);

/* Whether ALPN offers h2 before http/1.1. Set before the workers use S. */
void tls_server_set_h2(tls_server_t *s, int on);

/* A new session ticket key; the previous one still decrypts (and its
 * tickets are renewed). Call from a timer, any thread. */
void tls_server_rotate_tickets(tls_server_t *s);

#define TLS_TICKET_ROTATE_MS (12 * 3600 * 1000)

typedef struct tls_conn {
    SSL *ssl;
    buf_pool_t *bufs;
    /* ciphertext from the socket, not yet consumed by OpenSSL */
    char *in;
    size_t in_start, in_len;
    /* ciphertext for the socket: [out_sent, out_len) not yet written */
    char *out;
    size_t out_sent, out_len;
    /* the plaintext of the send in progress, encrypted as room allows */
    uv_buf_t pend[8];
    unsigned n_pend;
    size_t pend_done;      /* plaintext bytes of pend encrypted so far */
    size_t inflight;       /* ciphertext bytes of the socket write in flight */
    unsigned handshake_done : 1;
    unsigned sock_eof : 1; /* the socket read EOF */
    unsigned peer_closed : 1; /* close_notify received */
    unsigned writing : 1;  /* read-only: a socket write is in flight */
} tls_conn_t;

/* Returns 0, or UV_ENOMEM when OpenSSL cannot make a connection object. */
int tls_conn_init(tls_conn_t *t, tls_server_t *s, buf_pool_t *bufs);
void tls_conn_dispose(tls_conn_t *t);

/* Room for the socket to read ciphertext into (taking a buffer from the
 * pool when needed); len 0 when full. Then tls_conn_received(). */
uv_buf_t tls_conn_in_space(tls_conn_t *t);
void tls_conn_received(tls_conn_t *t, size_t n);
int tls_conn_in_full(const tls_conn_t *t);

/* Drives the handshake with what has arrived: 1 done, 0 needs more
 * input, <0 failed (PS_EPROTO). Output to send may be waiting after any. */
int tls_conn_handshake(tls_conn_t *t);

/* Decrypts into DST: the count, 0 when more input is needed, UV_EOF when
 * the peer closed, <0 on a protocol error. */
ssize_t tls_conn_read(tls_conn_t *t, char *dst, size_t cap);

/* True when plaintext or ciphertext is waiting to be read. */
int tls_conn_readable(const tls_conn_t *t);

/* Encrypts from the N plaintext buffers, skipping the first *DONE bytes,
 * as much as the output buffer takes; advances *DONE. <0 on error. */
int tls_conn_encrypt(tls_conn_t *t, const uv_buf_t *bufs, unsigned n, size_t *done);

/* Queues a close_notify alert. */
void tls_conn_close_notify(tls_conn_t *t);

/* The record pump: the connection's socket S and its writer W, whose
 * callback CB (the owner's) calls tls_conn_sent. Each returns
 * 1 when everything is written, 0 when a socket write is in flight (CB
 * follows), <0 when writing failed (PS_EPROTO: OpenSSL refused). */

/* Sends the plaintext BUFS (at most 8, kept by the caller until done):
 * encrypts as the output buffer takes it and writes the records. */
int tls_conn_send(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, uv_buf_t *bufs, unsigned n,
                  sock_written_cb cb);
/* Writes the records waiting (alerts, key updates, a close_notify). */
int tls_conn_flush(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, sock_written_cb cb);
/* The write in flight went out: goes on with what is left. */
int tls_conn_sent(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, sock_written_cb cb);

/* Ciphertext waiting for the socket; after writing some, mark it sent. */
uv_buf_t tls_conn_out(const tls_conn_t *t);
void tls_conn_out_sent(tls_conn_t *t, size_t n);

/* Gives idle buffers back to the pool (keep-alive connections hold none). */
void tls_conn_release_idle(tls_conn_t *t);

/* Frees OpenSSL's own record buffers (~34 KiB) unless a record is in
 * them; OpenSSL allocates them again when the connection next moves. */
void tls_conn_free_engine_buffers(tls_conn_t *t);

/* True for a TLS-ALPN-01 validation handshake: nothing follows it. */
int tls_conn_is_acme(const tls_conn_t *t);

/* True when ALPN chose h2. */
int tls_conn_is_h2(const tls_conn_t *t);

/* What an access log says of a connection, as Go's tls.ConnectionState
 * (so Caddy) does. */
typedef struct tls_info {
    int resumed;             /* the handshake resumed a session */
    unsigned version;        /* the protocol's number: 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
    unsigned cipher_suite;   /* its IANA number */
    uv_buf_t alpn;           /* the protocol ALPN chose; empty when none */
    const char *server_name; /* the client's SNI; "" when it sent none */
} tls_info_t;

/* Fills INFO for a connection whose handshake is done; its strings live
 * as long as T. */
void tls_conn_info(const tls_conn_t *t, tls_info_t *info);

/* The negotiated protocol and ALPN, for logs and tests. */
const char *tls_conn_describe(const tls_conn_t *t, char *buf, size_t len);

#endif
