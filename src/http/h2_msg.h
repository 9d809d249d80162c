/* HTTP/2 messages in HTTP/1.1 form and back. A stream's request arrives as
 * decoded header fields (nghttp2 has checked them against RFC 9113 8.2 and
 * 8.3); h2_req_* writes them as the HTTP/1.1 head that conn.c parses and
 * checks like any other, so HTTP/2 requests meet the same rules, limits and
 * routing. The response conn.c writes for a stream is an HTTP/1.1 head;
 * h2_resp_head turns it into the fields of a HEADERS frame. Pure functions:
 * no I/O, no allocation. */
#ifndef PS_H2_MSG_H
#define PS_H2_MSG_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* A request head being written into BUF. The request line needs the
 * pseudo-header fields, which come first (RFC 9113 8.3); they and the
 * cookie crumbs (joined into one field, RFC 9113 8.2.3) are kept at the top
 * of BUF until the head is finished. */
typedef struct h2_req {
    char *buf;
    size_t cap;
    size_t limit;    /* max_header_size: a longer head is 431 */
    size_t len;      /* the head written so far, from BUF[0] */
    size_t top;      /* kept values live in BUF[top, cap) */
    uint64_t decoded; /* field bytes decoded, as RFC 9113 6.5.2 counts them */
    uv_buf_t method, path, authority, cookie;
    uint64_t length;          /* its value (nghttp2 checked it is one number) */
    unsigned has_length : 1;  /* content-length came */
    unsigned line_done : 1;   /* the request line is written */
    unsigned finished : 1;    /* the head is done: later fields (trailers) are only counted */
    unsigned added : 1;       /* the head's last field is ours (framing), not the client's */
    unsigned status : 10;     /* the 4xx to answer instead (0: none) */
} h2_req_t;

void h2_req_init(h2_req_t *r, char *buf, size_t cap, size_t limit);

/* Takes one decoded field (after h2_req_finish, a trailer: only counted).
 * Returns 0, or -1 when the fields decoded for this stream exceed what any
 * head may bring (HPACK bomb: end the session). */
int h2_req_field(h2_req_t *r, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);

/* Ends the head. END_STREAM: the request has no body (HEADERS carried
 * END_STREAM); else a body without content-length is sent chunked.
 * Returns the head's length in BUF, or -status (400, 431) to answer
 * instead. */
int h2_req_finish(h2_req_t *r, int end_stream);

/* An HTTP/1.1 response head HEAD..LEN (complete: it ends with an empty
 * line) as HEADERS fields: ":status", then the fields with their names
 * lowercased in place, minus the ones HTTP/2 forbids (RFC 9113 8.2.2).
 * STATUS (4 bytes) holds the :status value. Returns the number of fields
 * (at most MAX) and the head's length in *HEAD_LEN; PS_EPROTO when the head
 * is incomplete or malformed, or has a field HTTP/2 cannot carry;
 * UV_ENOBUFS when its fields are more than MAX. */
int h2_resp_head(char *head, size_t len, nghttp2_nv *nv, size_t max, char status[4],
                 size_t *head_len);

#endif
