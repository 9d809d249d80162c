/* An HTTP/2 server session in one process, for unit tests and fuzzing: the
 * real h2.c, h2_msg.c and nghttp2 on a parent conn with no socket and no
 * TLS, fed one "read" at a time. The harness stands in for conn.c and
 * proxy.c (it lends the session an h2_host_ops_t of its own): each
 * stream's HTTP/1.1 head is parsed and checked by
 * http.c and rebuilt as the upstream head psproxy writes, its body is
 * framed as proxy.c frames it and passes the same framing invariant
 * (http_body_keeps_framing), and what would go upstream is recorded per
 * stream. Then each stream is answered "200 ok", as an upstream would.
 *
 * Not thread-safe; one harness at a time per thread. */
#ifndef PS_H2_HARNESS_H
#define PS_H2_HARNESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct h2h_stream {
    int32_t id;
    int answered;  /* the 4xx psproxy answered itself; 0 when forwarded */
    int forwarded; /* an upstream head was written */
    int complete;  /* the whole request went upstream */
    int broken;    /* the framing invariant refused a piece of the body */
    int framing;   /* enum http_framing of the upstream request */
    char *up;      /* the bytes written upstream */
    size_t up_len;
    /* what the client saw (from the server's frames) */
    int status; /* :status of the final response; 0 none */
    int rst;    /* RST_STREAM error code; -1 none */
    int ended;  /* the response ended (END_STREAM) */
    struct h2h_stream *next;
} h2h_stream_t;

typedef struct h2h h2h_t;

/* A session as psproxy starts one after ALPN h2 (its SETTINGS are out). */
h2h_t *h2h_new(size_t max_header_size);
void h2h_free(h2h_t *t);

/* One read of the client's bytes, handed to the session as h2_on_input
 * hands a read; then the loop runs until nothing more is due (flushes,
 * responses, window updates). */
void h2h_read(h2h_t *t, const void *p, size_t n);

/* The streams in the order they opened, and one by id (NULL if none). */
h2h_stream_t *h2h_streams(h2h_t *t);
h2h_stream_t *h2h_stream(h2h_t *t, int32_t id);
/* The GOAWAY error code the server sent; -1 none. */
int h2h_goaway(h2h_t *t);

/* The framing invariant, read from the upstream's side: S's bytes parse
 * (llhttp) as at most one request and nothing after it: exactly one,
 * complete, when s->complete; its body BODY (BLEN bytes) when BODY is not
 * NULL and it is complete. Returns NULL, or what is wrong. */
const char *h2h_check_upstream(const h2h_stream_t *s, const void *body, size_t blen);

/* ---- frames a client sends ---------------------------------------------- */

/* A growing byte string. */
typedef struct h2h_bytes {
    uint8_t *p;
    size_t len, cap;
} h2h_bytes_t;

void h2h_put(h2h_bytes_t *b, const void *p, size_t n);
void h2h_bytes_free(h2h_bytes_t *b);

/* The connection preface and an empty SETTINGS frame. */
void h2h_preface(h2h_bytes_t *b);
/* A frame: 9-byte header and payload. */
void h2h_frame(h2h_bytes_t *b, uint8_t type, uint8_t flags, int32_t sid, const void *p, size_t n);

/* A client's HPACK encoder (nghttp2's deflater). */
typedef struct h2h_enc h2h_enc_t;
h2h_enc_t *h2h_enc_new(void);
void h2h_enc_free(h2h_enc_t *e);
/* A HEADERS frame (END_HEADERS, and END_STREAM when END) on SID with the
 * fields NAMES[i]: VALUES[i]. Returns 0, or -1 when they cannot be encoded. */
int h2h_headers(h2h_bytes_t *b, h2h_enc_t *e, int32_t sid, int end, const char *const *names,
                const char *const *values, size_t n);

#endif
