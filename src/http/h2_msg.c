/* HTTP/2 request fields to an HTTP/1.1 head, and an HTTP/1.1 response head
 * to HEADERS fields. See h2_msg.h. */
#include "h2_msg.h"

#include <string.h>
#include <strings.h>

#include "common.h"
#include "http.h"

/* A head whose decoded fields pass this many times the limit is an attack
 * on the decoder, not a request that is merely too large. */
#define H2_DECODED_FACTOR 4

void h2_req_init(h2_req_t *r, char *buf, size_t cap, size_t limit)
{
    memset(r, 0, sizeof(*r));
    r->buf = buf;
    r->cap = cap;
    r->limit = limit;
    r->top = cap;
}

static void put(h2_req_t *r, const void *p, size_t n)
{
    if (r->status != 0 || n == 0)
        return; /* an empty value may come as NULL */
    if (n > r->top - r->len) {
        r->status = 431;
        return;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
}

#define PUT_LIT(r, lit) put((r), (lit), sizeof(lit) - 1)

static void put_buf(h2_req_t *r, uv_buf_t b)
{
    put(r, b.base, b.len);
}

/* Keeps V at the top of the buffer until the head is finished. */
static uv_buf_t keep(h2_req_t *r, const uint8_t *v, size_t n)
{
    if (r->status != 0 || n > r->top - r->len) {
        r->status = 431;
        return uv_buf_init(NULL, 0);
    }
    r->top -= n;
    if (n > 0)
        memcpy(r->buf + r->top, v, n);
    return uv_buf_init(r->buf + r->top, (unsigned)n);
}

/* cookie crumbs become one field joined with "; " (RFC 9113 8.2.3). Only
 * cookies are kept after the pseudo-header fields, so the joined value is
 * the whole of [top, its end): move it down, add the crumb at its end. */
static void keep_cookie(h2_req_t *r, const uint8_t *v, size_t n)
{
    uv_buf_t old = r->cookie;
    if (old.len == 0) {
        r->cookie = keep(r, v, n);
        return;
    }
    size_t total = old.len + 2 + n;
    if (r->status != 0 || total - old.len > r->top - r->len) {
        r->status = 431;
        return;
    }
    r->top -= n + 2;
    char *dst = r->buf + r->top;
    memmove(dst, old.base, old.len);
    memcpy(dst + old.len, "; ", 2);
    if (n > 0)
        memcpy(dst + old.len + 2, v, n);
    r->cookie = uv_buf_init(dst, (unsigned)total);
}

static int is_lit(const uint8_t *p, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static void write_request_line(h2_req_t *r)
{
    if (r->line_done)
        return;
    r->line_done = 1;
    if (r->method.len == 0) {
        r->status = 400;
        return;
    }
    put_buf(r, r->method);
    PUT_LIT(r, " ");
    /* CONNECT has no :path; conn.c answers it 405 as on HTTP/1.1 */
    put_buf(r, r->path.len > 0 ? r->path : r->authority);
    PUT_LIT(r, " HTTP/1.1\r\n");
}

int h2_req_field(h2_req_t *r, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
    r->decoded += nlen + vlen + 32;
    if (r->decoded > (uint64_t)r->limit * H2_DECODED_FACTOR + 65536)
        return -1;
    if (r->status != 0 || r->finished)
        return 0; /* refused already, or trailers: decoded for HPACK's sake only */
    if (nlen > 0 && name[0] == ':') {
        if (is_lit(name, nlen, ":method"))
            r->method = keep(r, value, vlen);
        else if (is_lit(name, nlen, ":path"))
            r->path = keep(r, value, vlen);
        else if (is_lit(name, nlen, ":authority"))
            r->authority = keep(r, value, vlen);
        /* :scheme is https on this listener whatever it says; X-Forwarded-Proto tells */
        return 0;
    }
    if (is_lit(name, nlen, "host")) {
        /* RFC 9113 8.3.1: :authority wins; a Host naming another entity is
         * malformed. The pseudo-header fields came first, so it is known. */
        if (r->authority.len > 0) {
            if (vlen != r->authority.len ||
                strncasecmp((const char *)value, r->authority.base, vlen) != 0)
                r->status = 400;
            return 0;
        }
        /* no :authority: the host field is written as it came */
    }
    if (is_lit(name, nlen, "cookie")) {
        keep_cookie(r, value, vlen);
        return 0;
    }
    write_request_line(r);
    if (is_lit(name, nlen, "content-length")) {
        r->has_length = 1;
        r->length = 0;
        for (size_t i = 0; i < vlen && value[i] >= '0' && value[i] <= '9'; i++)
            r->length = r->length > UINT64_MAX / 10 ? UINT64_MAX
                                                    : r->length * 10 + (uint64_t)(value[i] - '0');
    }
    put(r, name, nlen);
    PUT_LIT(r, ": ");
    put(r, value, vlen);
    PUT_LIT(r, "\r\n");
    return 0;
}

static int needs_length(uv_buf_t method)
{
    /* as Go's transport: a POST, PUT or PATCH without a body says so */
    return http_token_eq(method, "POST") || http_token_eq(method, "PUT") ||
           http_token_eq(method, "PATCH");
}

int h2_req_finish(h2_req_t *r, int end_stream)
{
    r->finished = 1;
    write_request_line(r);
    if (r->authority.len > 0) {
        PUT_LIT(r, "host: ");
        put_buf(r, r->authority);
        PUT_LIT(r, "\r\n");
    }
    if (r->cookie.len > 0) {
        PUT_LIT(r, "cookie: ");
        put_buf(r, r->cookie);
        PUT_LIT(r, "\r\n");
    }
    if (!r->has_length) {
        r->added = !end_stream || needs_length(r->method);
        if (!end_stream)
            PUT_LIT(r, "transfer-encoding: chunked\r\n");
        else if (r->added)
            PUT_LIT(r, "content-length: 0\r\n");
    }
    PUT_LIT(r, "\r\n");
    if (r->status == 0 && r->len > r->limit)
        r->status = 431;
    return r->status != 0 ? -(int)r->status : (int)r->len;
}

/* ---- responses ---------------------------------------------------------- */

/* RFC 9113 8.2.2: connection-specific fields never go into HTTP/2 */
static int connection_specific(const char *n, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)n, (unsigned)len);
    return http_token_eq(b, "connection") || http_token_eq(b, "keep-alive") ||
           http_token_eq(b, "proxy-connection") || http_token_eq(b, "transfer-encoding") ||
           http_token_eq(b, "upgrade");
}

static const char *line_end(const char *p, const char *end)
{
    const char *q = memchr(p, '\r', (size_t)(end - p));
    return q != NULL && q + 1 < end && q[1] == '\n' ? q : NULL;
}

int h2_resp_head(char *head, size_t len, nghttp2_nv *nv, size_t max, char status[4],
                 size_t *head_len)
{
    const char *end = head + len;
    const char *eol = line_end(head, end);
    /* "HTTP/1.1 200 OK" */
    if (eol == NULL || eol - head < 12 || memcmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ')
        return PS_EPROTO;
    if (max == 0)
        return UV_ENOBUFS;
    for (int i = 0; i < 3; i++) {
        char d = head[9 + i];
        if (d < '0' || d > '9')
            return PS_EPROTO;
        status[i] = d;
    }
    status[3] = '\0';
    size_t n = 0;
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    char *p = (char *)eol + 2;
    for (;;) {
        eol = line_end(p, end);
        if (eol == NULL)
            return PS_EPROTO; /* not a complete head */
        if (eol == p)
            break;
        char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p)
            return PS_EPROTO;
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1;
        const char *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (!connection_specific(p, nlen)) {
            if (n == max)
                return UV_ENOBUFS;
            for (size_t i = 0; i < nlen; i++)
                if (p[i] >= 'A' && p[i] <= 'Z')
                    p[i] = (char)(p[i] - 'A' + 'a'); /* HTTP/2 names are lowercase */
            /* what we send must be a field a peer takes (no NUL, bare LF) */
            if (!nghttp2_check_header_name((const uint8_t *)p, nlen) ||
                !nghttp2_check_header_value((const uint8_t *)v, (size_t)(ve - v)))
                return PS_EPROTO;
            nv[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)v, nlen, (size_t)(ve - v),
                                   NGHTTP2_NV_FLAG_NONE};
        }
        p = (char *)eol + 2;
    }
    *head_len = (size_t)(eol + 2 - head);
    return (int)n;
}
