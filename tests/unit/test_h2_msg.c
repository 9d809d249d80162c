/* HTTP/2 request fields written as an HTTP/1.1 head, and HTTP/1.1 response
 * heads turned into HEADERS fields (h2_msg.c). */
#include <string.h>

#include "common.h"
#include "h2_msg.h"
#include "test.h"

static char buf[4096];

static void field(h2_req_t *r, const char *n, const char *v)
{
    CHECK_INT(h2_req_field(r, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v)), 0);
}

/* The head of a request with FIELDS (name, value, ..., NULL). */
static const char *head_of(int end_stream, size_t limit, const char *const *fields, int *len)
{
    h2_req_t r;
    h2_req_init(&r, buf, sizeof(buf), limit);
    for (size_t i = 0; fields[i] != NULL; i += 2)
        field(&r, fields[i], fields[i + 1]);
    *len = h2_req_finish(&r, end_stream);
    if (*len > 0)
        buf[*len] = '\0';
    return buf;
}

TEST(get_becomes_request_line_and_host_from_authority)
{
    const char *f[] = {":method", "GET", ":scheme", "https", ":authority", "a.test",
                       ":path", "/x?y=1", "accept", "*/*", NULL};
    int len;
    CHECK_STR(head_of(1, 1000, f, &len), "GET /x?y=1 HTTP/1.1\r\naccept: */*\r\n"
                                         "host: a.test\r\n\r\n");
}

TEST(body_without_length_is_sent_chunked_with_length_kept)
{
    const char *f[] = {":method", "PUT", ":path", "/u", ":authority", "a", NULL};
    int len;
    CHECK_STR(head_of(0, 1000, f, &len),
              "PUT /u HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n");
    const char *g[] = {":method", "PUT", ":path", "/u", ":authority", "a",
                       "content-length", "5", NULL};
    CHECK_STR(head_of(0, 1000, g, &len),
              "PUT /u HTTP/1.1\r\ncontent-length: 5\r\nhost: a\r\n\r\n");
}

TEST(post_without_body_says_content_length_zero_get_does_not)
{
    const char *f[] = {":method", "POST", ":path", "/p", ":authority", "a", NULL};
    int len;
    CHECK_STR(head_of(1, 1000, f, &len), "POST /p HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n");
    const char *g[] = {":method", "DELETE", ":path", "/p", ":authority", "a", NULL};
    CHECK_STR(head_of(1, 1000, g, &len), "DELETE /p HTTP/1.1\r\nhost: a\r\n\r\n");
}

TEST(cookie_crumbs_join_in_order_around_other_fields)
{
    const char *f[] = {":method", "GET", ":path", "/", ":authority", "a", "cookie", "a=1",
                       "x", "1", "cookie", "b=2", "cookie", "c=3", NULL};
    int len;
    CHECK_STR(head_of(1, 1000, f, &len),
              "GET / HTTP/1.1\r\nx: 1\r\nhost: a\r\ncookie: a=1; b=2; c=3\r\n\r\n");
}

TEST(host_field_is_used_without_authority_and_must_match_it_otherwise)
{
    const char *f[] = {":method", "GET", ":path", "/", "host", "h.test", NULL};
    int len;
    CHECK_STR(head_of(1, 1000, f, &len), "GET / HTTP/1.1\r\nhost: h.test\r\n\r\n");
    const char *same[] = {":method", "GET", ":path", "/", ":authority", "A.test", "host",
                          "a.TEST", NULL};
    CHECK_STR(head_of(1, 1000, same, &len), "GET / HTTP/1.1\r\nhost: A.test\r\n\r\n");
    const char *other[] = {":method", "GET", ":path", "/", ":authority", "a", "host", "b", NULL};
    head_of(1, 1000, other, &len);
    CHECK_INT(len, -400);
}

TEST(connect_uses_authority_as_target)
{
    const char *f[] = {":method", "CONNECT", ":authority", "a:443", NULL};
    int len;
    CHECK_STR(head_of(0, 1000, f, &len),
              "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\ntransfer-encoding: chunked\r\n\r\n");
}

TEST(missing_method_is_400)
{
    const char *f[] = {":path", "/", ":authority", "a", NULL};
    int len;
    head_of(1, 1000, f, &len);
    CHECK_INT(len, -400);
}

TEST(head_over_the_limit_is_431_and_never_overflows)
{
    char big[3000];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *f[] = {":method", "GET", ":path", "/", ":authority", "a", "x", big, NULL};
    int len;
    head_of(1, 1000, f, &len);
    CHECK_INT(len, -431);
    /* larger than the buffer itself: still 431, nothing written past it */
    h2_req_t r;
    h2_req_init(&r, buf, 64, 10000);
    field(&r, ":method", "GET");
    field(&r, ":path", big);
    field(&r, "cookie", big);
    CHECK_INT(h2_req_finish(&r, 1), -431);
}

TEST(decoded_bytes_far_over_the_limit_end_the_session)
{
    h2_req_t r;
    h2_req_init(&r, buf, sizeof(buf), 100);
    int rc = 0;
    int n = 0;
    while (rc == 0 && n < 100000) {
        rc = h2_req_field(&r, (const uint8_t *)"x", 1, (const uint8_t *)"0123456789", 10);
        n++;
    }
    CHECK_INT(rc, -1);
    /* 43 bytes a field as RFC 9113 counts it: past 4 x 100 + 64 KiB */
    CHECK(n > (100 * 4 + 65536) / 43 && n < (100 * 4 + 65536) / 43 + 3);
}

TEST(trailers_are_counted_not_written)
{
    const char *f[] = {":method", "PUT", ":path", "/u", ":authority", "a", NULL};
    int len;
    h2_req_t r;
    h2_req_init(&r, buf, sizeof(buf), 1000);
    for (size_t i = 0; f[i] != NULL; i += 2)
        field(&r, f[i], f[i + 1]);
    len = h2_req_finish(&r, 0);
    CHECK(len > 0);
    uint64_t before = r.decoded;
    field(&r, "x-trailer", "v");
    CHECK_INT(r.len, len);
    CHECK(r.decoded == before + 9 + 1 + 32);
}

TEST(response_head_becomes_lowercase_fields_without_connection_ones)
{
    char head[] = "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                  "Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-A:  v  \r\n"
                  "Upgrade: h2c\r\n\r\nBODY";
    nghttp2_nv nv[8];
    char status[4];
    size_t hl = 0;
    int n = h2_resp_head(head, strlen(head), nv, 8, status, &hl);
    CHECK_INT(n, 3);
    CHECK_STR(status, "201");
    CHECK(nv[0].namelen == 7 && memcmp(nv[0].name, ":status", 7) == 0);
    CHECK(nv[1].namelen == 12 && memcmp(nv[1].name, "content-type", 12) == 0);
    CHECK(nv[1].valuelen == 10 && memcmp(nv[1].value, "text/plain", 10) == 0);
    CHECK(nv[2].namelen == 3 && memcmp(nv[2].name, "x-a", 3) == 0);
    CHECK(nv[2].valuelen == 1 && nv[2].value[0] == 'v');
    CHECK_INT(hl, strlen(head) - 4);
}

TEST(incomplete_or_bad_response_heads_are_refused)
{
    nghttp2_nv nv[5];
    char status[4];
    size_t hl;
    char a[] = "HTTP/1.1 200 OK\r\nX: 1\r\n";
    CHECK_INT(h2_resp_head(a, strlen(a), nv, 4, status, &hl), PS_EPROTO);
    char b[] = "HTTP/1.1 2x0 OK\r\n\r\n";
    CHECK_INT(h2_resp_head(b, strlen(b), nv, 4, status, &hl), PS_EPROTO);
    char c[] = "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n";
    CHECK_INT(h2_resp_head(c, strlen(c), nv, 4, status, &hl), PS_EPROTO);
    char e[] = "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n";
    CHECK_INT(h2_resp_head(e, strlen(e), nv, 4, status, &hl), PS_EPROTO); /* no field in h2 */
    /* a sound head with more fields than room: not malformed */
    char d[] = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    CHECK_INT(h2_resp_head(d, strlen(d), nv, 4, status, &hl), UV_ENOBUFS);
    CHECK_INT(h2_resp_head(d, strlen(d), nv, 5, status, &hl), 5);
}

TEST_MAIN()
