/* HTTP/1.1 heads: recording them as slices while llhttp parses, checking
 * what llhttp leaves to us, and the framing of their bodies. Writing heads
 * for the other side is http_out.c. */
#include "http.h"

#include <assert.h>
#include <string.h>
#include <strings.h>

#include "common.h"

/* ---- recording the head ------------------------------------------------ */

/* llhttp may hand one field over in several calls when it spans reads. The
 * read buffer is contiguous and never moves while a head is parsed, so the
 * pieces are adjacent and a slice just grows. */
static void slice_grow(uv_buf_t *s, const char *at, size_t len)
{
    if (s->base == NULL)
        s->base = (char *)at;
    s->len += len;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    http_head_t *h = container_of(p, http_head_t, parser);
    slice_grow(&h->url, at, len);
    if (h->url.len > HTTP_MAX_URI) {
        h->err_status = 414;
        llhttp_set_error_reason(p, "URI too long");
        return HPE_USER;
    }
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    http_head_t *h = container_of(p, http_head_t, parser);
    slice_grow(&h->reason, at, len);
    return 0;
}

/* Trailer fields (after a chunked body's last chunk) are not the head's:
 * they are dropped, so they neither take places in its table nor are
 * checked as its slices (the body's buffer moves under them between
 * reads). A request's trailer lines are checked by http_chunk_check. */
static int trailing(const llhttp_t *p)
{
    return (p->flags & F_TRAILING) != 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    http_head_t *h = container_of(p, http_head_t, parser);
    if (trailing(p))
        return 0;
    assert(h->hdrs != NULL); /* the owner lends the table before parsing */
    if (h->field_state != 1) {
        if (h->n_hdrs == HTTP_MAX_HEADERS) {
            h->err_status = 431;
            llhttp_set_error_reason(p, "too many header fields");
            return HPE_USER;
        }
        http_hdr_t *hdr = &h->hdrs[h->n_hdrs++];
        hdr->name = uv_buf_init((char *)at, 0);
        hdr->value = uv_buf_init(NULL, 0);
        h->field_state = 1;
    }
    slice_grow(&h->hdrs[h->n_hdrs - 1].name, at, len);
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    http_head_t *h = container_of(p, http_head_t, parser);
    if (trailing(p))
        return 0;
    uv_buf_t *v = h->n_hdrs > 0 ? &h->hdrs[h->n_hdrs - 1].value : NULL;
    /* llhttp accepts obs-fold as a value in pieces that are not adjacent;
     * RFC 9112 5.2 lets us reject it, and a proxy should */
    if (v == NULL || h->field_state == 0 ||
        (h->field_state == 2 && v->base != NULL && v->base + v->len != at)) {
        llhttp_set_error_reason(p, "obsolete line folding");
        return HPE_USER;
    }
    h->field_state = 2;
    slice_grow(v, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    http_head_t *h = container_of(p, http_head_t, parser);
    if (trailing(p))
        return 0;
    uv_buf_t *v = &h->hdrs[h->n_hdrs - 1].value;
    /* llhttp drops leading OWS; the trailing OWS is ours to drop (RFC 9110 5.5) */
    while (v->len > 0 && (v->base[v->len - 1] == ' ' || v->base[v->len - 1] == '\t'))
        v->len--;
    h->field_state = 0;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    http_head_t *h = container_of(p, http_head_t, parser);
    if (trailing(p))
        return 0;
    /* a field with an empty value gets no on_header_value call */
    h->field_state = 2;
    return 0;
}

void http_settings_init(llhttp_settings_t *s)
{
    llhttp_settings_init(s);
    s->on_url = on_url;
    s->on_status = on_status;
    s->on_header_field = on_header_field;
    s->on_header_value = on_header_value;
    s->on_header_field_complete = on_header_field_complete;
    s->on_header_value_complete = on_header_value_complete;
}

void http_head_reset(http_head_t *h)
{
    h->field_state = 0;
    h->url = uv_buf_init(NULL, 0);
    h->reason = uv_buf_init(NULL, 0);
    h->n_hdrs = 0;
    h->err_status = 0;
    h->host = uv_buf_init(NULL, 0);
    h->target = uv_buf_init(NULL, 0);
    h->n_conn_tokens = 0;
    h->conn_close = 0;
    h->conn_upgrade = 0;
    h->has_host = 0;
    h->te_chunked = 0;
    h->keep_alive_secs = -1;
}

void http_head_init(http_head_t *h, llhttp_type_t type, const llhttp_settings_t *s)
{
    llhttp_init(&h->parser, type, s);
    http_head_reset(h);
}

/* ---- checks ------------------------------------------------------------- */

const http_hdr_t *http_head_find(const http_head_t *h, const char *name)
{
    for (unsigned i = 0; i < h->n_hdrs; i++)
        if (http_token_eq(h->hdrs[i].name, name))
            return &h->hdrs[i];
    return NULL;
}

/* Calls FN on each comma-separated element of V with OWS trimmed (RFC 9110
 * 5.6.1); empty elements are skipped. Stops at a non-zero return. */
static int for_each_element(uv_buf_t v, int (*fn)(uv_buf_t el, void *arg), void *arg)
{
    size_t i = 0;
    while (i <= v.len) {
        size_t start = i;
        while (i < v.len && v.base[i] != ',')
            i++;
        size_t end = i;
        while (start < end && (v.base[start] == ' ' || v.base[start] == '\t'))
            start++;
        while (end > start && (v.base[end - 1] == ' ' || v.base[end - 1] == '\t'))
            end--;
        if (end > start) {
            int r = fn(uv_buf_init(v.base + start, end - start), arg);
            if (r != 0)
                return r;
        }
        i++;
    }
    return 0;
}

static int keep_alive_param(uv_buf_t el, void *arg)
{
    int *secs = arg;
    static const char name[] = "timeout";
    size_t n = sizeof(name) - 1;
    if (el.len <= n || strncasecmp(el.base, name, n) != 0)
        return 0;
    size_t i = n;
    while (i < el.len && (el.base[i] == ' ' || el.base[i] == '\t'))
        i++;
    if (i == el.len || el.base[i++] != '=')
        return 0;
    while (i < el.len && (el.base[i] == ' ' || el.base[i] == '\t'))
        i++;
    size_t end = el.len;
    if (i < end && el.base[i] == '"' && el.base[end - 1] == '"' && end - i >= 2) {
        i++; /* a quoted-string of digits, as some servers send */
        end--;
    }
    int v = 0;
    if (i == end)
        return 1;
    for (; i < end; i++) {
        if (el.base[i] < '0' || el.base[i] > '9')
            return 1; /* the timeout, but not a number: none */
        v = v * 10 + (el.base[i] - '0');
        if (v > 86400 * 365)
            v = 86400 * 365; /* a year is forever enough */
    }
    *secs = v;
    return 1;
}

int http_keep_alive_timeout(uv_buf_t value)
{
    int secs = -1;
    for_each_element(value, keep_alive_param, &secs);
    return secs;
}

static int add_conn_token(uv_buf_t el, void *arg)
{
    http_head_t *h = arg;
    if (http_token_eq(el, "close"))
        h->conn_close = 1;
    else if (http_token_eq(el, "upgrade"))
        h->conn_upgrade = 1;
    if (h->n_conn_tokens == HTTP_MAX_CONN_TOKENS)
        return 400;
    http_conn_tokens(h)[h->n_conn_tokens++] = el;
    return 0;
}

struct te_state {
    int n, chunked_at, unknown;
};

static int check_coding(uv_buf_t el, void *arg)
{
    struct te_state *st = arg;
    /* a coding may carry parameters (";q=..." is for TE, not here) */
    if (http_token_eq(el, "chunked")) {
        if (st->chunked_at >= 0)
            return 400; /* chunked twice: RFC 9112 6.1 */
        st->chunked_at = st->n;
    } else if (!http_token_eq(el, "gzip") && !http_token_eq(el, "x-gzip") &&
               !http_token_eq(el, "deflate") && !http_token_eq(el, "compress") &&
               !http_token_eq(el, "x-compress")) {
        st->unknown = 1;
    }
    st->n++;
    return 0;
}

/* Host = uri-host [ ":" port ] (RFC 9110 7.2): reg-name, IPv4 or [IPv6]. */
static int valid_host(uv_buf_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = v.base[i];
        if (c <= ' ' || c >= 0x7f || strchr("/?#@\"<>\\^`{|}", c) != NULL)
            return 0;
    }
    return 1;
}

/* Whether the line ending at AT (after optional OWS) ends in CRLF, within
 * the head that ends at END. */
static int crlf_at(const char *at, const char *end)
{
    while (at < end && (*at == ' ' || *at == '\t'))
        at++;
    return end - at >= 2 && at[0] == '\r' && at[1] == '\n';
}

/* RFC 9112 2.2 lets a recipient take a bare LF for CRLF, and llhttp 8 does
 * after the request-line and at the end of the head; a proxy must not, or a
 * front end that insists on CRLF frames the stream differently. Checked on
 * the paused parser, whose position is just past the head; the head is
 * contiguous and its slices point into it. */
static int request_lines_end_in_crlf(const http_head_t *h)
{
    const llhttp_t *p = &h->parser;
    if (llhttp_get_errno(p) != HPE_PAUSED || llhttp_get_error_pos(p) == NULL)
        return 1; /* not paused on the head: nothing to check against */
    const char *end = llhttp_get_error_pos(p);
    /* request-line: the target, then " HTTP/d.d" (llhttp checked it) */
    if (h->url.base == NULL || end - (h->url.base + h->url.len) < 9 ||
        !crlf_at(h->url.base + h->url.len + 9, end))
        return 0;
    for (unsigned i = 0; i < h->n_hdrs; i++) {
        const http_hdr_t *hdr = &h->hdrs[i];
        /* an empty value's slice may start on the next line (llhttp 8
         * reports it there), so measure from the colon instead */
        const char *at = hdr->value.len > 0 ? hdr->value.base + hdr->value.len
                                            : hdr->name.base + hdr->name.len + 1;
        if (!crlf_at(at, end))
            return 0;
    }
    return end[-2] == '\r' && end[-1] == '\n'; /* the empty line */
}

/* llhttp 8 (not built strict) lets HTAB and FF through in a
 * request-target; RFC 9112 3.2 allows neither, and {uri} would carry them
 * into header_up values, where no parser takes them. */
static int valid_target(uv_buf_t url)
{
    for (size_t i = 0; i < url.len; i++) {
        unsigned char c = url.base[i];
        if (c <= ' ' || c == 0x7f)
            return 0;
    }
    return 1;
}

static int analyze_request(http_head_t *h)
{
    llhttp_t *p = &h->parser;
    int http11 = p->http_major == 1 && p->http_minor == 1;

    if (!request_lines_end_in_crlf(h))
        return 400;

    /* request-target forms, RFC 9112 3.2 */
    uv_buf_t url = h->url;
    if (!valid_target(url))
        return 400;
    uv_buf_t authority = uv_buf_init(NULL, 0);
    if (url.len > 0 && url.base[0] == '/') {
        h->target = url;
    } else if (url.len == 1 && url.base[0] == '*' && p->method == HTTP_OPTIONS) {
        h->target = url;
    } else if ((url.len > 7 && strncasecmp(url.base, "http://", 7) == 0) ||
               (url.len > 8 && strncasecmp(url.base, "https://", 8) == 0)) {
        size_t i = url.base[4] == ':' ? 7 : 8;
        size_t start = i;
        while (i < url.len && url.base[i] != '/' && url.base[i] != '?')
            i++;
        authority = uv_buf_init(url.base + start, i - start);
        if (i < url.len && url.base[i] == '/')
            h->target = uv_buf_init(url.base + i, url.len - i);
        else
            h->target = uv_buf_init(url.len == i ? "/" : "/?", 1); /* "?q" needs '/' first */
        if (i < url.len && url.base[i] == '?')
            return 400; /* keep it simple: absolute-form with empty path and a query */
        if (authority.len == 0 || !valid_host(authority))
            return 400;
    } else {
        return 400;
    }

    unsigned n_host = 0;
    struct te_state te = {0, -1, 0};
    int te_seen = 0;
    for (unsigned i = 0; i < h->n_hdrs; i++) {
        const http_hdr_t *hdr = &h->hdrs[i];
        if (http_token_eq(hdr->name, "host")) {
            n_host++;
            h->host = hdr->value;
        } else if (http_token_eq(hdr->name, "connection")) {
            if (for_each_element(hdr->value, add_conn_token, h) != 0)
                return 400;
        } else if (http_token_eq(hdr->name, "transfer-encoding")) {
            te_seen = 1;
            int r = for_each_element(hdr->value, check_coding, &te);
            if (r != 0)
                return r;
        }
    }
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1, and a valid one */
    if (n_host > 1 || (http11 && n_host == 0))
        return 400;
    if (n_host == 1 && !valid_host(h->host))
        return 400;
    h->has_host = n_host == 1;
    if (authority.base != NULL)
        h->host = authority; /* RFC 9112 3.2.2: absolute-form wins over Host */

    if (te_seen) {
        /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means broken framing */
        if (!http11)
            return 400;
        if (te.unknown)
            return 501;
        /* RFC 9112 6.3: chunked must be final; other codings we don't relay */
        if (te.n == 0 || te.chunked_at != te.n - 1)
            return 400;
        if (te.n > 1)
            return 501;
        h->te_chunked = 1;
    }
    return 0;
}

static int analyze_response(http_head_t *h)
{
    /* status-code is 3DIGIT (RFC 9112 4); llhttp 8 takes "0" too, which
     * would pass for an interim response and leave the client waiting */
    if (h->parser.status_code < 100)
        return 502;
    for (unsigned i = 0; i < h->n_hdrs; i++) {
        const http_hdr_t *hdr = &h->hdrs[i];
        if (http_token_eq(hdr->name, "connection")) {
            if (for_each_element(hdr->value, add_conn_token, h) != 0)
                return 502;
        } else if (http_token_eq(hdr->name, "transfer-encoding")) {
            h->te_chunked = 1;
        } else if (http_token_eq(hdr->name, "keep-alive") && h->keep_alive_secs < 0) {
            h->keep_alive_secs = http_keep_alive_timeout(hdr->value);
        }
    }
    return 0;
}

int http_head_analyze(http_head_t *h)
{
    for (unsigned i = 0; i < h->n_hdrs; i++) {
        /* a field-name is a token, one tchar at least (RFC 9110 5.1).
         * llhttp 8 refuses every other byte in a name but two: it takes
         * ": v" as a field with an empty name, and spaces inside or at the
         * end of one ("X Y: v", "X : v"). test_http checks all 256. */
        const uv_buf_t *n = &h->hdrs[i].name;
        if (n->len == 0 || memchr(n->base, ' ', n->len) != NULL)
            return h->parser.type == HTTP_REQUEST ? 400 : 502;
    }
    return h->parser.type == HTTP_REQUEST ? analyze_request(h) : analyze_response(h);
}

int http_request_error_status(const http_head_t *h, llhttp_errno_t err)
{
    if (err == HPE_USER && h->err_status != 0)
        return h->err_status;
    return 400;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 421: return "Misdirected Request";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

/* ---- framing ------------------------------------------------------------ */

int http_request_framing(const http_head_t *req)
{
    const llhttp_t *p = &req->parser;
    if (req->te_chunked)
        return HTTP_BODY_CHUNKED;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0)
        return HTTP_BODY_LENGTH;
    return HTTP_BODY_NONE;
}

int http_body_keeps_framing(int framing, uint64_t declared, uint64_t sent, size_t len, int ends)
{
    switch (framing) {
    case HTTP_BODY_NONE:
        return sent == 0 && len == 0 ? 0 : -1;
    case HTTP_BODY_LENGTH:
        if (sent > declared || len > declared - sent)
            return -1;
        return !ends || sent + len == declared ? 0 : -1;
    case HTTP_BODY_CHUNKED:
        return 0; /* each piece goes up as a chunk of its own */
    default:
        return -1; /* a request body is never close-delimited */
    }
}

int http_response_bodiless(int status, int head_method)
{
    return head_method || (status >= 100 && status < 200) || status == 204 || status == 304;
}

int http_response_framing(const http_head_t *resp, int head_method, int http10, int rewritten)
{
    const llhttp_t *p = &resp->parser;
    if (http_response_bodiless(p->status_code, head_method))
        return HTTP_BODY_NONE; /* 101 too: what follows it is the tunnel's */
    if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED) && !rewritten)
        return HTTP_BODY_LENGTH;
    /* chunked, close-delimited or rewritten: re-chunk for HTTP/1.1 clients
     * so their connection survives; 1.0 reads to close */
    return http10 ? HTTP_BODY_EOF : HTTP_BODY_CHUNKED;
}

void http_body_append(char **body, size_t *body_len, const char *at, size_t len)
{
    if (*body == NULL)
        *body = (char *)at;
    else if (*body + *body_len != at)
        memmove(*body + *body_len, at, len);
    *body_len += len;
}

enum chunk_state {
    CK_SIZE_FIRST, /* a size line's first hex digit */
    CK_SIZE,       /* more hex digits, ';' or CR */
    CK_EXT,        /* a chunk extension, up to CR */
    CK_SIZE_LF,    /* the LF of a size line */
    CK_DATA,       /* chunk data */
    CK_DATA_CR,    /* the CRLF after chunk data */
    CK_DATA_LF,
    CK_LINE_START, /* a trailer field line, or the empty line that ends the body */
    CK_TRAILER,    /* in a trailer field line */
    CK_TRAILER_LF,
    CK_END_LF,     /* the LF of the final empty line */
    CK_DONE,
};

void http_chunk_check_init(http_chunk_check_t *k)
{
    k->state = CK_SIZE_FIRST;
    k->left = 0;
}

/* The value of the hex digit C (either case), or -1. */
static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Bytes a chunk extension or a trailer line may hold: field-vchar, SP,
 * HTAB (RFC 9110 5.5); llhttp checks the finer grammar. */
static int line_byte_ok(unsigned char c)
{
    return c == '\t' || (c >= ' ' && c != 0x7f);
}

int http_chunk_check(http_chunk_check_t *k, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        int hex;
        switch (k->state) {
        case CK_SIZE_FIRST:
        case CK_SIZE:
            if ((hex = hex_value(c)) >= 0) {
                if (k->left > (UINT64_MAX >> 4))
                    return -1;
                k->left = k->left << 4 | (uint64_t)hex;
                k->state = CK_SIZE;
            } else if (k->state == CK_SIZE && c == ';') {
                k->state = CK_EXT;
            } else if (k->state == CK_SIZE && c == '\r') {
                k->state = CK_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case CK_EXT:
            if (c == '\r')
                k->state = CK_SIZE_LF;
            else if (!line_byte_ok(c))
                return -1;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                return -1;
            k->state = k->left == 0 ? CK_LINE_START : CK_DATA;
            break;
        case CK_DATA: {
            size_t take = len - i < k->left ? len - i : (size_t)k->left;
            k->left -= take;
            i += take - 1;
            if (k->left == 0)
                k->state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (c != '\r')
                return -1;
            k->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                return -1;
            k->state = CK_SIZE_FIRST;
            break;
        case CK_LINE_START:
            /* a trailer line never starts with whitespace: obs-fold, or a
             * field with space before it (RFC 9112 5.2, 2.2) */
            if (c == '\r')
                k->state = CK_END_LF;
            else if (c != ' ' && c != '\t' && line_byte_ok(c))
                k->state = CK_TRAILER;
            else
                return -1;
            break;
        case CK_TRAILER:
            if (c == '\r')
                k->state = CK_TRAILER_LF;
            else if (!line_byte_ok(c))
                return -1;
            break;
        case CK_TRAILER_LF:
            if (c != '\n')
                return -1;
            k->state = CK_LINE_START;
            break;
        case CK_END_LF:
            if (c != '\n')
                return -1;
            k->state = CK_DONE;
            return 1;
        default: /* CK_DONE */
            return 1;
        }
    }
    return k->state == CK_DONE ? 1 : 0;
}

size_t http_chunk_line(char *out, size_t len)
{
    /* hex digits by hand, as put_uint: this runs for every chunk relayed */
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[len & 0xf];
        len >>= 4;
    } while (len > 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}
