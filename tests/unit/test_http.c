/* Unit tests for http.c: recording heads, the RFC 9112 checks, and the
 * rewriting of request and response heads. */
#include "http.h"

#include <string.h>

#include "test.h"

static llhttp_settings_t settings;
static int complete;
static http_table_t table_;

static int on_headers_complete(llhttp_t *p)
{
    complete = 1;
    return HPE_PAUSED;
}

/* Parses TEXT as one head into H (kept in BUF, which must outlive H).
 * Returns the llhttp error; HPE_PAUSED means the head is complete. */
static llhttp_errno_t parse(http_head_t *h, llhttp_type_t type, char *buf, const char *text)
{
    http_settings_init(&settings);
    settings.on_headers_complete = on_headers_complete;
    http_head_init(h, type, &settings);
    h->hdrs = table_.hdrs;
    strcpy(buf, text);
    complete = 0;
    return llhttp_execute(&h->parser, buf, strlen(buf));
}

/* Parses TEXT in pieces of STEP bytes, as reads would deliver it. */
static llhttp_errno_t parse_split(http_head_t *h, char *buf, const char *text, size_t step)
{
    http_settings_init(&settings);
    settings.on_headers_complete = on_headers_complete;
    http_head_init(h, HTTP_REQUEST, &settings);
    h->hdrs = table_.hdrs;
    strcpy(buf, text);
    size_t len = strlen(buf);
    llhttp_errno_t err = HPE_OK;
    for (size_t off = 0; off < len && err == HPE_OK; off += step)
        err = llhttp_execute(&h->parser, buf + off, off + step > len ? len - off : step);
    return err;
}

static int analyze(const char *text)
{
    static char buf[8192];
    static http_head_t h;
    llhttp_errno_t err = parse(&h, HTTP_REQUEST, buf, text);
    if (err != HPE_PAUSED)
        return http_request_error_status(&h, err);
    return http_head_analyze(&h);
}

static const char *build_request(const char *text, int trusted, const cfg_hdr_ops_t *ops,
                                 int framing)
{
    static char in[8192], out[8192];
    static http_head_t h;
    llhttp_errno_t err = parse(&h, HTTP_REQUEST, in, text);
    if (err != HPE_PAUSED || http_head_analyze(&h) != 0)
        return "(bad request)";
    http_vars_t v;
    http_vars_from_request(&v, &h, 0, "10.0.0.7", "5555");
    v.upstream_hostport = uv_buf_init("127.0.0.1:8080", 14);
    http_req_out_t r = {&h,      &v,      ops, "10.0.0.7", 0, trusted, framing,
                       framing == HTTP_BODY_LENGTH ? h.parser.content_length : 0, 0};
    int n = http_build_request(out, sizeof(out), &r);
    if (n < 0)
        return "(overflow)";
    out[n] = '\0';
    return out;
}

TEST(head_fields_are_slices_even_when_split_across_reads)
{
    char buf[512];
    http_head_t h;
    const char *req = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Long: some value  \r\n\r\n";
    for (size_t step = 1; step < 8; step++) {
        CHECK_INT(parse_split(&h, buf, req, step), HPE_PAUSED);
        CHECK_INT(h.n_hdrs, 2);
        CHECK(http_token_eq(h.url, "/a/b?c=d"));
        CHECK(http_token_eq(h.hdrs[1].name, "x-long"));
        CHECK(http_token_eq(h.hdrs[1].value, "some value"));
    }
}

TEST(empty_header_value_is_kept)
{
    char buf[256];
    http_head_t h;
    CHECK_INT(parse(&h, HTTP_REQUEST, buf, "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n"),
              HPE_PAUSED);
    CHECK_INT(h.n_hdrs, 2);
    CHECK_INT(h.hdrs[1].value.len, 0);
}

TEST(obs_fold_is_rejected)
{
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), 400);
}

TEST(empty_field_name_is_rejected)
{
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), 400);
}

TEST(bare_lf_in_a_request_head_is_rejected)
{
    CHECK_INT(analyze("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400);
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a \r\nX:\t\r\n\r\n"), 0);
    CHECK_INT(analyze("GET / HTTP/1.0\r\n\r\n"), 0);
}

TEST(http11_request_without_host_is_400)
{
    CHECK_INT(analyze("GET / HTTP/1.1\r\n\r\n"), 400);
    CHECK_INT(analyze("GET / HTTP/1.0\r\n\r\n"), 0);
}

TEST(two_host_fields_are_400)
{
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
}

TEST(invalid_host_is_400)
{
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    CHECK_INT(analyze("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), 0);
}

TEST(unknown_transfer_coding_is_501)
{
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n"), 501);
}

TEST(chunked_not_final_is_400)
{
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
              400);
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), 400);
}

TEST(chunked_twice_is_400)
{
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n"),
              400);
}

TEST(transfer_encoding_in_http10_is_400)
{
    CHECK_INT(analyze("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

TEST(content_length_with_transfer_encoding_is_refused_by_the_parser)
{
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n"),
              400);
}

TEST(differing_content_lengths_are_refused)
{
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
              400);
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n"), 400);
    CHECK_INT(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"), 400);
}

TEST(too_many_headers_is_431)
{
    char req[8192] = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < HTTP_MAX_HEADERS; i++)
        sprintf(req + strlen(req), "X-%d: v\r\n", i);
    strcat(req, "\r\n");
    static char buf[8192];
    static http_head_t h;
    llhttp_errno_t err = parse(&h, HTTP_REQUEST, buf, req);
    CHECK_INT(err, HPE_USER);
    CHECK_INT(http_request_error_status(&h, err), 431);
}

TEST(too_long_uri_is_414)
{
    static char req[HTTP_MAX_URI + 100], buf[HTTP_MAX_URI + 100];
    static http_head_t h;
    strcpy(req, "GET /");
    memset(req + 5, 'a', HTTP_MAX_URI);
    strcpy(req + 5 + HTTP_MAX_URI, " HTTP/1.1\r\nHost: a\r\n\r\n");
    llhttp_errno_t err = parse(&h, HTTP_REQUEST, buf, req);
    CHECK_INT(http_request_error_status(&h, err), 414);
}

TEST(absolute_form_sets_host_and_origin_target)
{
    const char *out = build_request("GET http://example.com:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
                                    0, NULL, HTTP_BODY_NONE);
    CHECK(strncmp(out, "GET /p?q HTTP/1.1\r\n", 19) == 0);
    CHECK(strstr(out, "X-Forwarded-Host: example.com:81\r\n") != NULL);
}

TEST(request_keeps_host_and_sets_forwarded_headers)
{
    const char *out = build_request(
        "GET /x HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n", 0, NULL,
        HTTP_BODY_NONE);
    CHECK_STR(out, "GET /x HTTP/1.1\r\n"
                   "Host: api.example.com\r\n"
                   "Accept: */*\r\n"
                   "X-Forwarded-For: 10.0.0.7\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: api.example.com\r\n"
                   "\r\n");
}

TEST(untrusted_forwarded_headers_are_replaced)
{
    const char *out = build_request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n"
                                    "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
                                    0, NULL, HTTP_BODY_NONE);
    CHECK(strstr(out, "1.2.3.4") == NULL);
    CHECK(strstr(out, "X-Forwarded-For: 10.0.0.7\r\n") != NULL);
    CHECK(strstr(out, "X-Forwarded-Proto: http\r\n") != NULL);
    CHECK(strstr(out, "X-Forwarded-Host: a\r\n") != NULL);
}

TEST(trusted_forwarded_for_is_appended_to)
{
    const char *out = build_request("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n"
                                    "X-Forwarded-For: 5.6.7.8\r\n\r\n",
                                    1, NULL, HTTP_BODY_NONE);
    CHECK(strstr(out, "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\n") != NULL);
}

TEST(connection_cannot_remove_content_length_or_host)
{
    /* without its Content-Length the body would reach the upstream as a request */
    const char *out = build_request("POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, "
                                    "Host\r\nContent-Length: 3\r\n\r\n",
                                    0, NULL, HTTP_BODY_LENGTH);
    CHECK(strstr(out, "\r\nContent-Length: 3\r\n") != NULL);
    CHECK(strstr(out, "\r\nHost: a\r\n") != NULL);
}

TEST(hop_by_hop_and_connection_listed_fields_are_removed)
{
    const char *out = build_request(
        "POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
        "Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\n"
        "Upgrade: websocket\r\nTransfer-Encoding: chunked\r\nX-Keep: k\r\n\r\n",
        0, NULL, HTTP_BODY_CHUNKED);
    CHECK(strstr(out, "X-Secret") == NULL);
    CHECK(strstr(out, "Keep-Alive") == NULL);
    CHECK(strstr(out, "Proxy-Connection") == NULL);
    CHECK(strstr(out, "TE:") == NULL);
    CHECK(strstr(out, "Trailer") == NULL);
    CHECK(strstr(out, "Upgrade") == NULL);
    CHECK(strstr(out, "Connection") == NULL);
    CHECK(strstr(out, "X-Keep: k\r\n") != NULL);
    /* re-framed by us, once */
    const char *te = strstr(out, "Transfer-Encoding: chunked\r\n");
    CHECK(te != NULL && strstr(te + 3, "Transfer-Encoding") == NULL);
}

TEST(header_up_ops_set_add_delete_default)
{
    cfg_tmpl_part_t up = {CFG_VAR_UPSTREAM_HOSTPORT, NULL, 0};
    cfg_tmpl_part_t lit = {CFG_VAR_NONE, "v", 1};
    cfg_hdr_op_t ops[] = {
        {CFG_HDR_SET, "Host", {"{upstream_hostport}", &up, 1}},
        {CFG_HDR_DEL, "X-Drop*", {NULL, NULL, 0}},
        {CFG_HDR_ADD, "X-Add", {"v", &lit, 1}},
        {CFG_HDR_DEFAULT, "X-Present", {"v", &lit, 1}},
        {CFG_HDR_DEFAULT, "X-Absent", {"v", &lit, 1}},
    };
    cfg_hdr_ops_t list = {ops, 5, 0};
    const char *out = build_request("GET / HTTP/1.1\r\nHost: a\r\nX-Drop-Me: 1\r\nX-Dropped: 2\r\n"
                                    "X-Add: old\r\nX-Present: p\r\n\r\n",
                                    0, &list, HTTP_BODY_NONE);
    CHECK(strstr(out, "Host: 127.0.0.1:8080\r\n") != NULL);
    CHECK(strstr(out, "\r\nHost: a\r\n") == NULL);
    CHECK(strstr(out, "X-Drop") == NULL);
    CHECK(strstr(out, "X-Add: old\r\n") != NULL && strstr(out, "X-Add: v\r\n") != NULL);
    CHECK(strstr(out, "X-Present: p\r\n") != NULL && strstr(out, "X-Present: v") == NULL);
    CHECK(strstr(out, "X-Absent: v\r\n") != NULL);
}

/* The framing invariant: what may follow a request head upstream. */
TEST(body_keeps_framing_only_with_exactly_the_declared_bytes)
{
    /* no body declared: not one byte, whatever the timing */
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_NONE, 0, 0, 0, 1), 0);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_NONE, 0, 0, 0, 0), 0);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_NONE, 0, 0, 1, 0), -1);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_NONE, 0, 0, 40, 1), -1);
    /* a length: pieces up to it, the end exactly at it */
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 0, 4, 0), 0);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 4, 6, 1), 0);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 10, 0, 1), 0);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 4, 7, 0), -1);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 4, 5, 1), -1);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 0, 0, 1), -1);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, 10, 11, 0, 0), -1);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_LENGTH, UINT64_MAX, UINT64_MAX - 1, 2, 0), -1);
    /* chunked: each piece is a chunk of its own */
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_CHUNKED, 0, 0, 0, 1), 0);
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_CHUNKED, 0, 123, 4096, 0), 0);
    /* a request body is never close-delimited */
    CHECK_INT(http_body_keeps_framing(HTTP_BODY_EOF, 0, 0, 1, 0), -1);
}

TEST(request_framing_fields_are_written_by_psproxy)
{
    /* the client's spelling goes, ours comes once */
    const char *out = build_request("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 003\r\n\r\n", 0,
                                    NULL, HTTP_BODY_LENGTH);
    CHECK(strstr(out, "content-length") == NULL);
    const char *cl = strstr(out, "\r\nContent-Length: 3\r\n");
    CHECK(cl != NULL && strstr(cl + 3, "Content-Length") == NULL);
    /* a POST that says it has no body still says so */
    out = build_request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0, NULL,
                        HTTP_BODY_NONE);
    CHECK(strstr(out, "\r\nContent-Length: 0\r\n") != NULL);
    out = build_request("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, NULL, HTTP_BODY_NONE);
    CHECK(strstr(out, "Content-Length") == NULL && strstr(out, "Transfer-Encoding") == NULL);
}

/* header_up on Content-Length or Transfer-Encoding would let the body
 * reach the upstream outside its framing; Go's transport (so Caddy)
 * ignores such fields in a request's header map too. */
TEST(header_up_cannot_change_request_framing)
{
    cfg_tmpl_part_t lit = {CFG_VAR_NONE, "99", 2};
    cfg_tmpl_part_t ch = {CFG_VAR_NONE, "chunked", 7};
    cfg_hdr_op_t ops[] = {
        {CFG_HDR_DEL, "Content-Length", {NULL, NULL, 0}},
        {CFG_HDR_SET, "content-length", {"99", &lit, 1}},
        {CFG_HDR_ADD, "Transfer-Encoding", {"chunked", &ch, 1}},
        {CFG_HDR_DEFAULT, "Content-Length", {"99", &lit, 1}},
    };
    cfg_hdr_ops_t list = {ops, 4, 0};
    const char *out = build_request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 0,
                                    &list, HTTP_BODY_LENGTH);
    const char *cl = strstr(out, "\r\nContent-Length: 5\r\n");
    CHECK(cl != NULL && strstr(cl + 3, "Content-Length") == NULL);
    CHECK(strstr(out, "99") == NULL && strstr(out, "Transfer-Encoding") == NULL);
    out = build_request("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
                        &list, HTTP_BODY_CHUNKED);
    const char *te = strstr(out, "\r\nTransfer-Encoding: chunked\r\n");
    CHECK(te != NULL && strstr(te + 3, "Transfer-Encoding") == NULL);
    CHECK(strstr(out, "Content-Length") == NULL && strstr(out, "content-length") == NULL);
}

TEST(http10_request_without_host_gets_the_upstream_as_host)
{
    const char *out = build_request("GET / HTTP/1.0\r\n\r\n", 0, NULL, HTTP_BODY_NONE);
    CHECK(strstr(out, "Host: 127.0.0.1:8080\r\n") != NULL);
    CHECK(strstr(out, "X-Forwarded-Host") == NULL);
}

TEST(request_head_that_does_not_fit_is_an_error)
{
    static char in[512], out[64];
    static http_head_t h;
    parse(&h, HTTP_REQUEST, in, "GET /some/long/path HTTP/1.1\r\nHost: example.com\r\n\r\n");
    CHECK_INT(http_head_analyze(&h), 0);
    http_vars_t v;
    http_vars_from_request(&v, &h, 0, "1.1.1.1", "1");
    http_req_out_t r = {&h, &v, NULL, "1.1.1.1", 0, 0, HTTP_BODY_NONE, 0, 0};
    CHECK_INT(http_build_request(out, sizeof(out), &r), -1);
}

/* A response head for TEXT with header_down DOWN and the site's op lists
 * OPS, framed as FRAMING for a client KEEP_ALIVE and HTTP10 says. */
static const char *build_resp(const char *text, int framing, int keep_alive, int http10,
                              const cfg_hdr_ops_t *down, const cfg_hdr_ops_t *const *ops,
                              unsigned n)
{
    static char in[4096], out[4096];
    static http_head_t h;
    if (parse(&h, HTTP_RESPONSE, in, text) != HPE_PAUSED || http_head_analyze(&h) != 0)
        return "(bad response)";
    http_vars_t v;
    memset(&v, 0, sizeof(v));
    http_resp_out_t r;
    memset(&r, 0, sizeof(r));
    r.resp = &h;
    r.vars = &v;
    r.down = down;
    r.ops = ops;
    r.n_ops = n;
    r.framing = framing;
    r.keep_alive = keep_alive;
    r.http10 = http10;
    int k = http_build_response(out, sizeof(out), &r);
    if (k < 0)
        return "(overflow)";
    out[k] = '\0';
    return out;
}

static const char *build_response(const char *text, int framing, int keep_alive, int http10)
{
    return build_resp(text, framing, keep_alive, http10, NULL, NULL, 0);
}

static const char *build_with_ops(const char *text, const cfg_hdr_ops_t *down,
                                  const cfg_hdr_ops_t *const *ops, unsigned n)
{
    return build_resp(text, HTTP_BODY_LENGTH, 1, 0, down, ops, n);
}

static cfg_tmpl_part_t part_v = {CFG_VAR_NONE, "v", 1};
static cfg_tmpl_part_t part_d = {CFG_VAR_NONE, "d", 1};
#define OP(kind, name, part) {kind, name, {"x", part, part != NULL}}

static const char UPSTREAM_X[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: u\r\n\r\n";

/* issue #19: Caddy's `header` sets its field before the handler runs, and
 * reverse_proxy adds the upstream's values after: both go out, Caddy's
 * first; `+` adds Caddy's value before the upstream's. */
TEST(header_before_the_handler_and_the_upstream_value_after)
{
    cfg_hdr_op_t set[] = {OP(CFG_HDR_SET, "X", &part_v)};
    cfg_hdr_ops_t l_set = {set, 1, 0};
    const cfg_hdr_ops_t *ops[] = {&l_set};
    const char *out = build_with_ops(UPSTREAM_X, NULL, ops, 1);
    const char *a = strstr(out, "X: v\r\n"), *b = strstr(out, "X: u\r\n");
    CHECK(a != NULL && b != NULL && a < b);

    cfg_hdr_op_t add[] = {OP(CFG_HDR_ADD, "X", &part_v)};
    cfg_hdr_ops_t l_add = {add, 1, 0};
    ops[0] = &l_add;
    out = build_with_ops(UPSTREAM_X, NULL, ops, 1);
    a = strstr(out, "X: v\r\n"), b = strstr(out, "X: u\r\n");
    CHECK(a != NULL && b != NULL && a < b);
}

/* A deferred `header` (defer, '>', a deletion) works on the final fields:
 * its set replaces the upstream's value, its deletion removes it. */
TEST(deferred_header_replaces_or_removes_the_upstream_value)
{
    cfg_hdr_op_t set[] = {OP(CFG_HDR_SET, "X", &part_v)};
    cfg_hdr_ops_t l_set = {set, 1, 1};
    const cfg_hdr_ops_t *ops[] = {&l_set};
    const char *out = build_with_ops(UPSTREAM_X, NULL, ops, 1);
    CHECK(strstr(out, "X: v\r\n") != NULL && strstr(out, "X: u") == NULL);

    cfg_hdr_op_t del[] = {OP(CFG_HDR_DEL, "X", NULL)};
    cfg_hdr_ops_t l_del = {del, 1, 1};
    ops[0] = &l_del;
    out = build_with_ops(UPSTREAM_X, NULL, ops, 1);
    CHECK(strstr(out, "\r\nX:") == NULL);
    CHECK(strstr(out, "Content-Length: 2\r\n") != NULL);
}

/* Each deferred `header` wraps the writer of the ones before it, so the
 * last one applies first: a deletion that comes earlier in the site wins. */
TEST(deferred_headers_apply_the_last_first)
{
    cfg_hdr_op_t del[] = {OP(CFG_HDR_DEL, "Y", NULL)};
    cfg_hdr_op_t set[] = {OP(CFG_HDR_SET, "Y", &part_v)};
    cfg_hdr_ops_t l_del = {del, 1, 1}, l_set = {set, 1, 1};
    const cfg_hdr_ops_t *ops[] = {&l_del, &l_set};
    const char *out = build_with_ops(UPSTREAM_X, NULL, ops, 2);
    CHECK(strstr(out, "Y:") == NULL);
    const cfg_hdr_ops_t *swapped[] = {&l_set, &l_del};
    out = build_with_ops(UPSTREAM_X, NULL, swapped, 2);
    CHECK(strstr(out, "Y: v\r\n") != NULL);
}

/* header_down works on the upstream's fields before they join the site's;
 * a `?` default only where the final fields lack it. */
TEST(header_down_applies_to_the_upstream_fields_and_defaults_fill_gaps)
{
    cfg_hdr_op_t down[] = {OP(CFG_HDR_SET, "X", &part_d)};
    cfg_hdr_ops_t l_down = {down, 1, 0};
    cfg_hdr_op_t set[] = {OP(CFG_HDR_SET, "X", &part_v)};
    cfg_hdr_ops_t l_set = {set, 1, 0};
    const cfg_hdr_ops_t *ops[] = {&l_set};
    const char *out = build_with_ops(UPSTREAM_X, &l_down, ops, 1);
    const char *a = strstr(out, "X: v\r\n"), *b = strstr(out, "X: d\r\n");
    CHECK(a != NULL && b != NULL && a < b && strstr(out, "X: u") == NULL);

    cfg_hdr_op_t def[] = {OP(CFG_HDR_DEFAULT, "X", &part_v), OP(CFG_HDR_DEFAULT, "Z", &part_v)};
    cfg_hdr_ops_t l_def = {def, 2, 1};
    ops[0] = &l_def;
    out = build_with_ops(UPSTREAM_X, NULL, ops, 1);
    CHECK(strstr(out, "X: u\r\n") != NULL && strstr(out, "X: v") == NULL);
    CHECK(strstr(out, "Z: v\r\n") != NULL);
}

/* The response's framing is psproxy's: no op removes or rewrites it. */
TEST(header_ops_never_touch_response_framing)
{
    cfg_hdr_op_t ops_[] = {OP(CFG_HDR_DEL, "Content-Length", NULL),
                           OP(CFG_HDR_SET, "Transfer-Encoding", &part_v)};
    cfg_hdr_ops_t l = {ops_, 2, 1};
    const cfg_hdr_ops_t *ops[] = {&l};
    const char *out = build_with_ops(UPSTREAM_X, &l, ops, 1);
    CHECK(strstr(out, "Content-Length: 2\r\n") != NULL);
    CHECK(strstr(out, "Transfer-Encoding") == NULL);
}

TEST(response_is_rechunked_and_hop_by_hop_removed)
{
    const char *out = build_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
                                     "Content-Type: text/plain\r\n\r\n",
                                     HTTP_BODY_CHUNKED, 1, 0);
    CHECK_STR(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n");
}

TEST(response_says_close_when_the_client_conn_ends)
{
    const char *out = build_response("HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n",
                                     HTTP_BODY_LENGTH, 0, 0);
    CHECK_STR(out, "HTTP/1.1 404 Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

TEST(http10_client_keep_alive_is_explicit)
{
    const char *out = build_response("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                                     HTTP_BODY_LENGTH, 1, 1);
    CHECK(strstr(out, "Connection: keep-alive\r\n") != NULL);
}

TEST(response_without_reason_gets_the_standard_one)
{
    const char *out = build_response("HTTP/1.1 204 \r\n\r\n", HTTP_BODY_NONE, 1, 0);
    CHECK(strncmp(out, "HTTP/1.1 204 No Content\r\n", 25) == 0);
}

TEST(simple_response_has_length_and_type)
{
    char out[512];
    int n = http_build_simple(out, sizeof(out), 502, NULL, "x", 1, 0, 0);
    CHECK(n > 0);
    out[n] = '\0';
    CHECK_STR(out, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: 1\r\nConnection: close\r\n\r\nx");
    n = http_build_simple(out, sizeof(out), 200, NULL, "body", 4, 1, 1);
    out[n] = '\0';
    CHECK(strstr(out, "Content-Length: 4\r\n\r\n") != NULL);
    CHECK(strstr(out, "body") == NULL); /* HEAD: head only */
}

TEST(host_without_port)
{
    CHECK(http_token_eq(http_host_without_port(uv_buf_init("a.example:8080", 14)), "a.example"));
    CHECK(http_token_eq(http_host_without_port(uv_buf_init("[::1]:80", 8)), "::1"));
    CHECK(http_token_eq(http_host_without_port(uv_buf_init("a.example", 9)), "a.example"));
}

TEST(placeholders_expand_from_the_request)
{
    static char in[512];
    static http_head_t h;
    parse(&h, HTTP_REQUEST, in, "GET /p/q?x=1 HTTP/1.1\r\nHost: site.test:8443\r\n\r\n");
    CHECK_INT(http_head_analyze(&h), 0);
    http_vars_t v;
    http_vars_from_request(&v, &h, 1, "192.0.2.1", "40000");
    cfg_tmpl_part_t parts[] = {
        {CFG_VAR_SCHEME, NULL, 0}, {CFG_VAR_NONE, "://", 3}, {CFG_VAR_HOST, NULL, 0},
        {CFG_VAR_PATH, NULL, 0},   {CFG_VAR_NONE, "#", 1},   {CFG_VAR_QUERY, NULL, 0},
        {CFG_VAR_NONE, "#", 1},    {CFG_VAR_METHOD, NULL, 0}, {CFG_VAR_NONE, "#", 1},
        {CFG_VAR_REMOTE_HOST, NULL, 0},
    };
    cfg_tmpl_t t = {"", parts, sizeof(parts) / sizeof(parts[0])};
    char out[256];
    size_t len = 0;
    CHECK_INT(http_tmpl_expand(&t, &v, out, sizeof(out), &len), 0);
    out[len] = '\0';
    CHECK_STR(out, "https://site.test/p/q#x=1#GET#192.0.2.1");
    len = 0;
    CHECK_INT(http_tmpl_expand(&t, &v, out, 5, &len), -1);
}

/* Found by fuzz_request: a placeholder with no value ({query} without a
 * '?') is a NULL slice, and copying it was memcpy(dst, NULL, 0), which
 * UBSan rejects. */
TEST(empty_placeholder_in_header_up_expands_to_nothing)
{
    cfg_tmpl_part_t parts[] = {{CFG_VAR_NONE, "q=", 2}, {CFG_VAR_QUERY, NULL, 0}};
    cfg_hdr_op_t ops[] = {{CFG_HDR_SET, "X-Query", {"q={query}", parts, 2}}};
    cfg_hdr_ops_t list = {ops, 1, 0};
    const char *out = build_request("GET /p HTTP/1.1\r\nHost: a\r\n\r\n", 0, &list,
                                    HTTP_BODY_NONE);
    CHECK(strstr(out, "X-Query: q=\r\n") != NULL);
}

/* Found by fuzz_request: llhttp 8 reports an empty value at the start of
 * the next line, and the CRLF check took that line for the value's end. */
TEST(empty_value_followed_by_a_field_is_accepted)
{
    CHECK_INT(analyze("GET / HTTP/1.1\r\nX-Empty:\r\nHost: a\r\n\r\n"), 0);
    CHECK_INT(analyze("GET / HTTP/1.1\r\nX-Empty: \r\nAccept: */*\r\nHost: a\r\n\r\n"), 0);
}

static int resp_complete;

static int on_resp_headers_complete(llhttp_t *p)
{
    if (http_response_bodiless(p->status_code, 0))
        p->flags |= F_SKIPBODY; /* as proxy.c on_resp_headers */
    return 0;
}

static int on_resp_message_complete(llhttp_t *p)
{
    resp_complete = 1;
    return 0;
}

/* Found by fuzz_response: llhttp 8 waits for a 304's Content-Length bytes
 * (the representation's length, RFC 9110 8.6), so the exchange stalled
 * until read_timeout and the client connection was cut. */
TEST(response_304_with_content_length_ends_with_its_head)
{
    CHECK_INT(http_response_bodiless(304, 0), 1);
    CHECK_INT(http_response_bodiless(204, 0), 1);
    CHECK_INT(http_response_bodiless(103, 0), 1);
    CHECK_INT(http_response_bodiless(200, 1), 1);
    CHECK_INT(http_response_bodiless(200, 0), 0);
    static char buf[] = "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n";
    llhttp_settings_t s;
    http_settings_init(&s);
    s.on_headers_complete = on_resp_headers_complete;
    s.on_message_complete = on_resp_message_complete;
    http_head_t h;
    http_head_init(&h, HTTP_RESPONSE, &s);
    h.hdrs = table_.hdrs;
    resp_complete = 0;
    CHECK_INT(llhttp_execute(&h.parser, buf, strlen(buf)), HPE_OK);
    CHECK_INT(resp_complete, 1);
}

/* Found by fuzz_request: llhttp 8 takes FF and HTAB in a request-target,
 * and header_up's {uri} then put them into a field value no upstream
 * parses. */
TEST(control_bytes_in_the_request_target_are_400)
{
    CHECK_INT(analyze("GET /a\fb HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    CHECK_INT(analyze("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    CHECK_INT(analyze("GET /a%09b HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
}

/* Found by fuzz_response: llhttp 8 takes a one-digit status, and 0 passed
 * for an interim response that leaves the client waiting for a final one. */
TEST(response_status_below_100_is_a_bad_response)
{
    CHECK_STR(build_response("HTTP/1.1 0 \r\nContent-Length: 0\r\n\r\n", HTTP_BODY_LENGTH, 1, 0),
              "(bad response)");
    CHECK_STR(build_response("HTTP/1.1 99 X\r\nContent-Length: 0\r\n\r\n", HTTP_BODY_LENGTH, 1, 0),
              "(bad response)");
    CHECK(strncmp(build_response("HTTP/1.1 100 Continue\r\n\r\n", HTTP_BODY_NONE, 1, 0),
                  "HTTP/1.1 100 ", 13) == 0);
}

/* A head with byte C put into a field name at POS (0: before it, 1:
 * inside, 2: at its end), parsed and analyzed: 0 when accepted. */
static int analyze_name_byte(llhttp_type_t type, int c, int pos)
{
    static char buf[256];
    static http_head_t h;
    const char *start = type == HTTP_REQUEST ? "GET / HTTP/1.1\r\nHost: a\r\n" : "HTTP/1.1 200 OK\r\n";
    const char *name[] = {"", "X", "XY"};
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s%s", start, pos == 0 ? "" : "X");
    buf[n++] = (char)c;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s: v\r\nContent-Length: 0\r\n\r\n",
                          pos == 1 ? "Y" : pos == 0 ? name[1] : "");
    http_settings_init(&settings);
    settings.on_headers_complete = on_headers_complete;
    http_head_init(&h, type, &settings);
    h.hdrs = table_.hdrs;
    if (llhttp_execute(&h.parser, buf, n) != HPE_PAUSED)
        return -1;
    return http_head_analyze(&h);
}

/* A field name is a token (RFC 9110 5.1): llhttp and http_head_analyze
 * together refuse every other byte in it, wherever it stands, in
 * requests (400) and responses (502). A colon inside ends the name. */
TEST(field_names_take_tchars_only)
{
    for (int type = 0; type < 2; type++)
        for (int pos = 0; pos < 3; pos++)
            for (int c = 0; c < 256; c++) {
                if (c == ':' && pos != 0)
                    continue;
                if ((c == '\r' || c == '\n') && pos == 0)
                    continue; /* a line break there is the head's end, not a name */
                llhttp_type_t t = type == 0 ? HTTP_REQUEST : HTTP_RESPONSE;
                int st = analyze_name_byte(t, c, pos);
                if ((st == 0) != http_is_tchar((unsigned char)c))
                    TEST_FAIL("%s: byte %d at %d: %d", type == 0 ? "request" : "response", c, pos,
                              st);
            }
}

TEST(tchar_is_exactly_rfc_9110s_set)
{
    const char *set = "!#$%&'*+-.^_`|~0123456789"
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (int c = 0; c < 256; c++)
        CHECK_INT(http_is_tchar((unsigned char)c), c != 0 && strchr(set, c) != NULL);
}

static int keep_alive(const char *v)
{
    return http_keep_alive_timeout(uv_buf_init((char *)v, strlen(v)));
}

/* issue #23: an upstream's announced idle timeout, so the pool lets its
 * connections go before the upstream closes them */
TEST(keep_alive_timeout_is_read_from_the_field_value)
{
    CHECK_INT(keep_alive("timeout=5"), 5);
    CHECK_INT(keep_alive("timeout=5, max=1000"), 5);       /* Node.js, Apache */
    CHECK_INT(keep_alive("max=100, Timeout = 60"), 60);    /* any order, any case, OWS */
    CHECK_INT(keep_alive("timeout=\"20\""), 20);            /* quoted */
    CHECK_INT(keep_alive("timeout=0"), 0);
    CHECK_INT(keep_alive("timeout=7, timeout=9"), 7);     /* the first counts */
    CHECK_INT(keep_alive("timeout=99999999999"), 86400 * 365);
    /* none */
    CHECK_INT(keep_alive(""), -1);
    CHECK_INT(keep_alive("max=5"), -1);
    CHECK_INT(keep_alive("timeouts=5"), -1);
    CHECK_INT(keep_alive("timeout"), -1);
    CHECK_INT(keep_alive("timeout="), -1);
    CHECK_INT(keep_alive("timeout=5s"), -1);
    CHECK_INT(keep_alive("timeout=-1"), -1);
    CHECK_INT(keep_alive("timeout=\""), -1);
}

TEST(keep_alive_timeout_of_a_response_head)
{
    static char in[512];
    http_head_t h;
    CHECK_INT(parse(&h, HTTP_RESPONSE, in,
                    "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n"),
              HPE_PAUSED);
    CHECK_INT(http_head_analyze(&h), 0);
    CHECK_INT(h.keep_alive_secs, 5);
    CHECK_INT(parse(&h, HTTP_RESPONSE, in, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
              HPE_PAUSED);
    CHECK_INT(http_head_analyze(&h), 0);
    CHECK_INT(h.keep_alive_secs, -1);
}

static int chunk_check_all(const char *body, size_t piece)
{
    http_chunk_check_t k;
    http_chunk_check_init(&k);
    size_t len = strlen(body);
    int r = 0;
    for (size_t i = 0; i < len && r == 0; i += piece)
        r = http_chunk_check(&k, body + i, len - i < piece ? len - i : piece);
    return r;
}

TEST(chunk_check_takes_strict_framing_in_any_pieces)
{
    const char *ok[] = {
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "A;name=val;x\r\n0123456789\r\n0\r\n\r\n",
        "00003\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
        "1\r\n\r\r\n0\r\n\r\n", /* data may hold CR and LF */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        for (size_t piece = 1; piece <= 7; piece += 3)
            CHECK_INT(chunk_check_all(ok[i], piece), 1);
    CHECK_INT(chunk_check_all("5\r\nhel", 2), 0); /* not over yet */
}

/* What llhttp 8 takes and a strict front end reads differently. */
TEST(chunk_check_refuses_lenient_framing)
{
    const char *bad[] = {
        "3\rXabc\r\n0\r\n\r\n",  /* any byte after a size line's CR */
        "3\r\nabcXY0\r\n\r\n",    /* any two bytes after data */
        "3\r\nabc\rX0\r\n\r\n",
        "3\r\nabc\n0\r\n\r\n",   /* bare LF after data */
        "3\nabc\r\n0\r\n\r\n",   /* bare LF after the size */
        "0\r\n\n",                   /* bare LF ends the body */
        "0\r\nX: 1\n\r\n",          /* bare LF ends a trailer */
        "\r\n0\r\n\r\n",          /* no size */
        "x\r\n",
        " 3\r\nabc\r\n0\r\n\r\n",
        "-3\r\nabc\r\n0\r\n\r\n",
        "11111111111111111\r\n",     /* beyond 64 bits */
        "3;a\x01b\r\nabc\r\n0\r\n\r\n",
        "0\r\nX: 1\r\n 2\r\n\r\n",      /* obs-fold in a trailer */
        "0\r\n\tX: 1\r\n\r\n",         /* whitespace before a trailer */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(chunk_check_all(bad[i], 1), -1);
        CHECK_INT(chunk_check_all(bad[i], 64), -1);
    }
}

/* Trailers are parsed for their syntax and dropped: they never take a
 * place in the head's table, and a trailer split between reads (whose
 * pieces are not adjacent once the body's buffer moved) is no obs-fold. */
TEST(trailer_fields_are_not_head_fields)
{
    static char buf[512];
    static http_head_t h;
    llhttp_settings_t s;
    static http_table_t fields_;
    http_settings_init(&s);
    http_head_init(&h, HTTP_REQUEST, &s);
    h.hdrs = fields_.hdrs;
    const char *head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *body[] = {"1\r\nx\r\n0\r\nX-Tr", "ailer: t", "t\r\nX-Two: 2\r\n\r\n"};
    strcpy(buf, head);
    CHECK_INT(llhttp_execute(&h.parser, buf, strlen(buf)), HPE_OK);
    CHECK_INT(h.n_hdrs, 2);
    for (size_t i = 0; i < 3; i++) {
        strcpy(buf + 100, body[i]); /* each piece somewhere else, as after a compaction */
        CHECK_INT(llhttp_execute(&h.parser, buf + 100, strlen(body[i])), HPE_OK);
    }
    CHECK_INT(h.n_hdrs, 2);
    CHECK(http_token_eq(h.hdrs[1].name, "transfer-encoding"));
}

TEST(chunk_check_stops_at_the_end_of_the_body)
{
    http_chunk_check_t k;
    http_chunk_check_init(&k);
    /* what follows the body is the next request's: not read */
    CHECK_INT(http_chunk_check(&k, "0\r\n\r\nGET / HTTP/1.1\r\n", 22), 1);
}

TEST(chunk_line_is_lowercase_hex_and_crlf)
{
    char out[HTTP_CHUNK_LINE_MAX];
    CHECK_INT(http_chunk_line(out, 0), 3);
    CHECK(memcmp(out, "0\r\n", 3) == 0);
    CHECK_INT(http_chunk_line(out, 0x1a2b), 6);
    CHECK(memcmp(out, "1a2b\r\n", 6) == 0);
    CHECK_INT(http_chunk_line(out, SIZE_MAX), 18);
    CHECK(memcmp(out, "ffffffffffffffff\r\n", 18) == 0);
}

TEST_MAIN()
