/* HTTP/1.1 message heads: llhttp glue that records the head as slices of the
 * read buffer, the RFC 9112 checks llhttp leaves to us, and the rewriting of
 * heads on their way through the proxy (hop-by-hop removal, X-Forwarded-*,
 * re-framing, header ops). Pure functions: no I/O, no allocation. */
#ifndef PS_HTTP_H
#define PS_HTTP_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <uv.h>

#include "config.h"

#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_CONN_TOKENS 16
#define HTTP_MAX_URI 8192

typedef struct http_hdr {
    uv_buf_t name;
    uv_buf_t value;
} http_hdr_t;

/* What a head borrows while it is in use, so an idle connection does not
 * carry it: its fields and its Connection options. http_head_t.hdrs
 * points at the first member. */
typedef struct http_table {
    http_hdr_t hdrs[HTTP_MAX_HEADERS];
    uv_buf_t conn_tokens[HTTP_MAX_CONN_TOKENS]; /* Connection options to strip */
} http_table_t;

#define HTTP_HDR_TABLE_SIZE sizeof(http_table_t)

/* How a message body is delimited. */
enum http_framing {
    HTTP_BODY_NONE = 0, /* no body (HEAD, 1xx, 204, 304, Content-Length: 0) */
    HTTP_BODY_LENGTH,   /* Content-Length bytes */
    HTTP_BODY_CHUNKED,  /* chunked coding */
    HTTP_BODY_EOF,      /* until the connection closes (responses only) */
};

typedef struct http_head {
    /* private: llhttp and the field being assembled across reads */
    llhttp_t parser;
    int field_state; /* 0 none, 1 in a name, 2 in a value */

    /* public, valid while the read buffer holding the head is */
    uv_buf_t url;    /* request-target as received */
    uv_buf_t reason; /* response reason phrase */
    /* HTTP_MAX_HEADERS fields: the hdrs of an http_table_t the owner lends
     * while a head is in use and takes back when idle (idle connections
     * stay small) */
    http_hdr_t *hdrs;
    unsigned n_hdrs;
    int err_status; /* the 4xx/5xx a failed callback chose; 0 = 400 */

    /* read-only, set by http_head_analyze() */
    uv_buf_t host;      /* authority without port rules applied: Host or absolute-form */
    uv_buf_t target;    /* origin-form target: path?query */
    unsigned n_conn_tokens; /* in the table: http_conn_tokens */
    unsigned conn_close : 1;
    unsigned conn_upgrade : 1;
    unsigned has_host : 1;
    unsigned te_chunked : 1; /* Transfer-Encoding present (and "chunked") */
    int keep_alive_secs;     /* a response's Keep-Alive timeout; -1: none */
} http_head_t;

/* H's Connection options, in the table it borrowed. */
static inline uv_buf_t *http_conn_tokens(const http_head_t *h)
{
    return ((http_table_t *)(void *)h->hdrs)->conn_tokens;
}

/* Fills the callbacks that record heads into an http_head_t; the owner then
 * sets on_headers_complete, on_body and on_message_complete and reaches
 * itself with container_of() from the http_head_t. */
void http_settings_init(llhttp_settings_t *s);

/* Starts a head: llhttp_init; clears the recorded fields. h->hdrs must
 * point to a table before llhttp parses a head (see http_head_t). */
void http_head_init(http_head_t *h, llhttp_type_t type, const llhttp_settings_t *s);
void http_head_reset(http_head_t *h);

/* RFC 9110/9112 checks on a complete head, beyond llhttp's. Returns 0, or
 * the status to answer (400, 501) for a request; for a response any
 * non-zero value means malformed (502). */
int http_head_analyze(http_head_t *h);

/* Returns the first header named NAME (case-insensitive) or NULL. */
const http_hdr_t *http_head_find(const http_head_t *h, const char *name);

/* The idle timeout a Keep-Alive field VALUE announces (RFC 2068
 * 19.7.1.1, still sent by Node.js, Tomcat and others: "timeout=5,
 * max=100"), in seconds; -1 when it names none. Its first timeout
 * counts; one that is not all digits is none. */
int http_keep_alive_timeout(uv_buf_t value);

/* True when A equals the literal LIT, ignoring case. Inline so that the
 * length of a literal is a constant and most mismatches cost one compare:
 * the hot path classifies every header name with it. */
static inline int http_token_eq(uv_buf_t a, const char *lit)
{
    size_t n = __builtin_strlen(lit);
    return a.len == n && (n == 0 || strncasecmp(a.base, lit, n) == 0);
}

/* True for a tchar (RFC 9110 5.6.2), the bytes of a token: ALPHA, DIGIT
 * and !#$%&'*+-.^_`|~. Inline, a bit of two masks (bit c of the first for
 * c < 64, bit c - 64 of the second): every byte of every field name
 * passes here on the hot path. */
static inline int http_is_tchar(unsigned char c)
{
    if (c < 64)
        return (int)((0x03ff6cfa00000000ull >> c) & 1);
    return c < 128 && ((0x57ffffffc7fffffeull >> (c - 64)) & 1);
}

/* The status an llhttp error maps to for a request: 400, or err_status. */
int http_request_error_status(const http_head_t *h, llhttp_errno_t err);

const char *http_reason(int status);

/* Values for placeholders, filled from the request at hand. */
typedef struct http_vars {
    uv_buf_t host, hostport, uri, path, query, method, scheme, remote_host, remote_port,
        upstream_hostport;
} http_vars_t;

void http_vars_from_request(http_vars_t *v, const http_head_t *req, int https,
                            const char *remote_host, const char *remote_port);

/* Appends T expanded into OUT (at *len, capacity CAP). Returns 0 or -1 when
 * it does not fit. */
int http_tmpl_expand(const cfg_tmpl_t *t, const http_vars_t *v, char *out, size_t cap,
                     size_t *len);

/* Appends the fields an answer made here gets (it has no others), in the
 * order http_build_response applies ops: the site's `header` ops that are
 * not deferred, then OWN, the handler's own field (respond's Content-Type),
 * unless they set that field already, then the deferred ops, the last
 * first. OWN may be NULL. Returns 0 or -1 when they do not fit. */
int http_expand_ops(const cfg_hdr_ops_t *const *ops, unsigned n, const http_vars_t *v, char *out,
                    size_t cap, size_t *len, const http_hdr_t *own);

/* What the upstream request head is built from. */
typedef struct http_req_out {
    const http_head_t *req;
    const http_vars_t *vars;
    const cfg_hdr_ops_t *ops; /* header_up, may be NULL */
    const char *client_ip;
    int https;          /* X-Forwarded-Proto */
    int trusted;        /* the peer is a trusted proxy: keep its X-Forwarded-* */
    int framing;        /* enum http_framing of the body we send */
    uint64_t length;    /* its length, with HTTP_BODY_LENGTH */
    int upgrade;        /* keep Upgrade and send Connection: upgrade */
} http_req_out_t;

/* Writes the upstream request head into OUT. Its framing fields are
 * psproxy's, from FRAMING and LENGTH: neither the client's Content-Length
 * or Transfer-Encoding nor a header_up op on them reaches the upstream (as
 * Go's transport, so Caddy, ignores them). Returns its length, or -1 when
 * it does not fit in CAP. */
int http_build_request(char *out, size_t cap, const http_req_out_t *r);

typedef struct http_resp_out {
    const http_head_t *resp;
    const http_vars_t *vars;
    const cfg_hdr_ops_t *down;       /* reverse_proxy's header_down, may be NULL */
    const cfg_hdr_ops_t *const *ops; /* the site's matching `header` ops, in route order */
    unsigned n_ops;
    int framing;                 /* enum http_framing of the body we send */
    int keep_alive;              /* the client connection stays open */
    int http10;                  /* the client spoke HTTP/1.0 */
    int upgrade;                 /* a 101 we tunnel: keep Upgrade */
    int body_filtered;           /* a filter rewrites the body: the upstream's
                                  * Content-Length no longer holds */
} http_resp_out_t;

/* Writes the response head for the client into OUT, its fields built as
 * Caddy's handlers build a response's header map: the site's `header` ops
 * that are not deferred first (they run before the handler), then the
 * upstream's fields (hop-by-hop removed) with header_down applied to them,
 * added after; then each deferred `header`, the last one first (each
 * wraps the writer of the ones before it). Within one list: adds, sets,
 * deletions, then defaults. No op touches Content-Length or
 * Transfer-Encoding: the framing is psproxy's. Returns the length, or -1
 * when it does not fit in CAP. */
int http_build_response(char *out, size_t cap, const http_resp_out_t *r);

/* Whether FIELDS ("Name: value\r\n" lines, or NULL) has a field NAME
 * (case-insensitive). */
int http_fields_have(const char *fields, const char *name);

/* A complete response made by psproxy itself: status line, the given extra
 * header lines (each ending in CRLF, may be NULL), Content-Length and body.
 * HEAD requests get the head only. Returns its length, or -1 when it does
 * not fit in CAP. */
int http_build_simple(char *out, size_t cap, int status, const char *extra, const char *body,
                      size_t body_len, int keep_alive, int head_only);

/* How the body of an analyzed request is framed on its way upstream:
 * chunked stays chunked (re-chunked), a non-zero Content-Length stays,
 * anything else has no body (RFC 9112 6.3). */
int http_request_framing(const http_head_t *req);

/* The framing invariant (docs/ARCHITECTURE.md): the body bytes that follow
 * a request head upstream are exactly the body that head declares. With
 * FRAMING (and DECLARED bytes for HTTP_BODY_LENGTH), SENT bytes gone up
 * and LEN more, ENDS when the request ends with them: returns 0 when they
 * keep to it, -1 when they would break it (a body where none was declared,
 * more than declared, or an end before the declared length). */
int http_body_keeps_framing(int framing, uint64_t declared, uint64_t sent, size_t len, int ends);

/* RFC 9112 6.3 rule 1: a response to HEAD, and any 1xx, 204 or 304, ends
 * with its head whatever its fields say (a 304 may carry the
 * Content-Length of the representation). llhttp 8 knows only 100 and 101
 * itself; the owner sets F_SKIPBODY in on_headers_complete when this is 1. */
int http_response_bodiless(int status, int head_method);

/* How the body of an analyzed response HEAD is framed for the client:
 * none for a 101, an answer to HEAD, 204 and 304; Content-Length kept
 * unless chunked too, or unless the body is REWRITTEN (a body filter);
 * else chunked for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones
 * (HTTP10). */
int http_response_framing(const http_head_t *resp, int head_method, int http10, int rewritten);

/* Body bytes llhttp hands over in pieces (chunk framing between them):
 * appends AT..LEN to the slice at *BODY (*LEN bytes), moving it down over
 * the parsed framing so the slice stays contiguous. AT must lie after the
 * slice in the same buffer. */
void http_body_append(char **body, size_t *body_len, const char *at, size_t len);

/* RFC 9112 7.1 chunked framing checked byte by byte beside llhttp 8, which
 * takes any two bytes after chunk data and any byte after a size line's
 * CR: a front end that insists on CRLF would read such a body differently,
 * so psproxy refuses it rather than re-frame it. Incremental: bytes may
 * come in any pieces. */
typedef struct http_chunk_check {
    int state;     /* private */
    uint64_t left; /* private: data bytes left in the current chunk */
} http_chunk_check_t;

void http_chunk_check_init(http_chunk_check_t *k);

/* Feeds the next LEN bytes of a chunked body. Returns 0 while the framing
 * is sound so far, 1 once the body ended (the last chunk and trailers),
 * -1 at the first byte that breaks it. Bytes after the end are not read. */
int http_chunk_check(http_chunk_check_t *k, const char *p, size_t len);

#define HTTP_CHUNK_LINE_MAX 20
#define HTTP_LAST_CHUNK "0\r\n\r\n"

/* Writes the size line of a LEN-byte chunk ("1a\r\n") into OUT, which
 * holds HTTP_CHUNK_LINE_MAX bytes. Returns its length. */
size_t http_chunk_line(char *out, size_t len);

/* Strips ":port" (and brackets of an IPv6 literal) from a Host value. */
uv_buf_t http_host_without_port(uv_buf_t hostport);

#endif
