/* Access log entries (access_log.c alog_format) against lines Caddy 2.6.2
 * wrote for the same requests (tests/integration/test_access_log_caddy.py
 * compares the running binaries). */
#include <string.h>

#include "access_log.h"
#include "test.h"

static char line[ALOG_LINE_MAX];
static http_hdr_t hdrs[16];

#define B(s) uv_buf_init((char *)(s), (unsigned)strlen(s))

/* 2026/12/06 03:36:59.364 UTC */
static const struct timespec at = {1796528219, 364123456};

static void set_hdrs(const char *const *f)
{
    unsigned n = 0;
    for (; f[2 * n] != NULL; n++)
        hdrs[n] = (http_hdr_t){B(f[2 * n]), B(f[2 * n + 1])};
}

static alog_entry_t entry(const char *const *req_fields, unsigned n, const char *resp_head)
{
    set_hdrs(req_fields);
    alog_entry_t e = {
        .remote_ip = "127.0.0.1",
        .remote_port = "37214",
        .proto = "HTTP/1.1",
        .method = B("GET"),
        .host = B("127.0.0.1:18481"),
        .uri = B("/echo?q=%22x"),
        .req_hdrs = hdrs,
        .n_req_hdrs = n,
        .resp_head = resp_head != NULL ? B(resp_head) : uv_buf_init(NULL, 0),
        .upstream = "127.0.0.1:43615",
        .status = 200,
        .size = 633,
        .duration_ns = 4652466,
    };
    return e;
}

static const char *fmt(const alog_entry_t *e, int style, int index)
{
    size_t n = alog_format(line, sizeof(line), e, style, index, &at);
    line[n] = '\0';
    return line;
}

static const char *const browser[] = {
    "Host",    "127.0.0.1:18481",      "User-Agent", "TestAgent/1.0", "Accept", "*/*",
    "Referer", "http://ref.example/x", NULL};
static const char *const resp_200 = "HTTP/1.1 200 OK\r\nContent-Length: 633\r\n"
                                    "Content-Type: application/json\r\n"
                                    "Connection: keep-alive\r\n\r\nbody";

TEST(json_entry_has_caddys_fields_in_caddys_order)
{
    alog_entry_t e = entry(browser, 4, resp_200);
    CHECK_STR(fmt(&e, ALOG_JSON, 0),
              "{\"level\":\"info\",\"ts\":1796528219.3641234,\"logger\":\"http.log.access.log0\","
              "\"msg\":\"handled request\",\"request\":{\"remote_ip\":\"127.0.0.1\","
              "\"remote_port\":\"37214\",\"proto\":\"HTTP/1.1\",\"method\":\"GET\","
              "\"host\":\"127.0.0.1:18481\",\"uri\":\"/echo?q=%22x\",\"headers\":{"
              "\"User-Agent\":[\"TestAgent/1.0\"],\"Accept\":[\"*/*\"],"
              "\"Referer\":[\"http://ref.example/x\"]}},\"bytes_read\":0,\"user_id\":\"\","
              "\"duration\":0.004652466,\"size\":633,\"status\":200,\"resp_headers\":{"
              "\"Content-Length\":[\"633\"],\"Content-Type\":[\"application/json\"]},"
              "\"upstream\":\"127.0.0.1:43615\"}\n");
}

TEST(console_entry_is_zaps_console_layout_with_caddys_colours)
{
    alog_entry_t e = entry(browser, 4, resp_200);
    e.upstream = NULL;
    e.status = 404;
    e.duration_ns = 2000000000;
    CHECK_STR(fmt(&e, ALOG_CONSOLE, 1),
              "2026/12/06 03:36:59.364\t\x1b[31mERROR\x1b[0m\thttp.log.access.log1\t"
              "handled request\t{\"request\": {\"remote_ip\": \"127.0.0.1\", "
              "\"remote_port\": \"37214\", \"proto\": \"HTTP/1.1\", \"method\": \"GET\", "
              "\"host\": \"127.0.0.1:18481\", \"uri\": \"/echo?q=%22x\", \"headers\": {"
              "\"User-Agent\": [\"TestAgent/1.0\"], \"Accept\": [\"*/*\"], "
              "\"Referer\": [\"http://ref.example/x\"]}}, \"bytes_read\": 0, "
              "\"user_id\": \"\", \"duration\": 2, \"size\": 633, \"status\": 404, "
              "\"resp_headers\": {\"Content-Length\": [\"633\"], "
              "\"Content-Type\": [\"application/json\"]}}\n");
}

TEST(console_plain_has_the_level_in_lower_case_without_colour)
{
    alog_entry_t e = entry(browser, 0, NULL);
    CHECK(strncmp(fmt(&e, ALOG_CONSOLE_PLAIN, 0), "2026/12/06 03:36:59.364\tinfo\t", 29) == 0);
    e.status = 502;
    CHECK(strncmp(fmt(&e, ALOG_CONSOLE_PLAIN, 0), "2026/12/06 03:36:59.364\terror\t", 30) == 0);
}

TEST(bare_log_writes_as_the_default_access_logger)
{
    alog_entry_t e = entry(browser, 0, NULL);
    CHECK(strstr(fmt(&e, ALOG_JSON, -1), "\"logger\":\"http.log.access\",") != NULL);
    CHECK(strstr(fmt(&e, ALOG_JSON, 12), "\"logger\":\"http.log.access.log12\",") != NULL);
}

TEST(header_names_are_canonical_and_repeats_share_one_key)
{
    const char *const f[] = {"x-dup",        "1", "X-DUP",   "2", "x_under", "u",
                             "x-wEIRD-cASE", "v", "X-Empty", "",  "x-trail", "  sp \t",
                             "we:rd",        "n", NULL};
    alog_entry_t e = entry(f, 7, NULL);
    CHECK(strstr(fmt(&e, ALOG_JSON, 0),
                 "\"headers\":{\"X-Dup\":[\"1\",\"2\"],\"X_under\":[\"u\"],"
                 "\"X-Weird-Case\":[\"v\"],\"X-Empty\":[\"\"],\"X-Trail\":[\"sp\"],"
                 "\"we:rd\":[\"n\"]}}") != NULL);
}

TEST(credentials_are_logged_without_their_values)
{
    const char *const f[] = {
        "Cookie",  "a=1",  "cookie", "b=2", "Authorization", "Bearer x", "proxy-authorization",
        "Basic y", "X-Ok", "1",      NULL};
    alog_entry_t e = entry(f, 5, "HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nset-cookie: t=2\r\n\r\n");
    const char *l = fmt(&e, ALOG_JSON, 0);
    CHECK(strstr(l, "\"headers\":{\"Cookie\":[],\"Authorization\":[],"
                    "\"Proxy-Authorization\":[],\"X-Ok\":[\"1\"]}") != NULL);
    CHECK(strstr(l, "\"resp_headers\":{\"Set-Cookie\":[]}") != NULL);
}

TEST(host_and_transfer_encoding_stay_out_of_the_request_map)
{
    const char *const f[] = {"Host",  "a", "Transfer-Encoding", "chunked", "Connection",
                             "close", NULL};
    alog_entry_t e = entry(f, 3, NULL);
    /* Go keeps Connection in r.Header; Host and Transfer-Encoding it takes out */
    CHECK(strstr(fmt(&e, ALOG_JSON, 0), "\"headers\":{\"Connection\":[\"close\"]}}") != NULL);
}

TEST(response_framing_is_left_out_and_a_local_answer_has_no_content_length)
{
    alog_entry_t e = entry(browser, 0,
                           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: x\r\n"
                           "Connection: close\r\nX-A: 1\r\n\r\n");
    CHECK(strstr(fmt(&e, ALOG_JSON, 0), "\"resp_headers\":{\"X-A\":[\"1\"]}") != NULL);
    e = entry(browser, 0,
              "HTTP/1.1 410 Gone\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: 3\r\n\r\nbye");
    e.resp_local = 1;
    CHECK(strstr(fmt(&e, ALOG_JSON, 0),
                 "\"resp_headers\":{\"Content-Type\":[\"text/plain; charset=utf-8\"]}") != NULL);
    e = entry(browser, 0, NULL);
    CHECK(strstr(fmt(&e, ALOG_JSON, 0), "\"resp_headers\":{}") != NULL);
}

TEST(strings_are_escaped_as_zap_escapes_them)
{
    /* valid UTF-8 as it is; each byte of a bad sequence U+FFFD (a lone
     * continuation, an overlong, a surrogate, a cut sequence); controls */
    const char *const f[] = {
        "X-Utf", "caf\xc3\xa9 \xe2\x82\xac", "X-Bad", "a\xff\x80\xc0\xaf\xed\xa0\x80\xe2\x82",
        "X-Q",   "\"q\\\t\x01\x7f",          NULL};
    alog_entry_t e = entry(f, 3, NULL);
    CHECK(strstr(fmt(&e, ALOG_JSON, 0),
                 "{\"X-Utf\":[\"caf\xc3\xa9 \xe2\x82\xac\"],"
                 "\"X-Bad\":[\"a\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"],"
                 "\"X-Q\":[\"\\\"q\\\\\\t\\u0001\x7f\"]}") != NULL);
}

TEST(tls_is_the_state_go_reports)
{
    tls_info_t t = {.resumed = 1,
                    .version = 0x0304,
                    .cipher_suite = 0x1301,
                    .alpn = B("h2"),
                    .server_name = "localhost"};
    alog_entry_t e = entry(browser, 0, NULL);
    e.tls = &t;
    e.proto = "HTTP/2.0";
    CHECK(strstr(fmt(&e, ALOG_JSON, 0),
                 "\"headers\":{},\"tls\":{\"resumed\":true,\"version\":772,"
                 "\"cipher_suite\":4865,\"proto\":\"h2\",\"server_name\":\"localhost\"}},") !=
          NULL);
}

TEST(an_entry_too_long_for_the_line_stays_one_valid_entry)
{
    static char big[ALOG_LINE_MAX];
    memset(big, '"', sizeof(big) - 1); /* each one escaped to two bytes */
    big[sizeof(big) - 1] = '\0';
    const char *const f[] = {"User-Agent", big, NULL};
    alog_entry_t e = entry(f, 1, resp_200);
    e.uri = B(big);
    const char *l = fmt(&e, ALOG_JSON, 0);
    size_t n = strlen(l);
    CHECK(n < sizeof(line) && l[n - 1] == '\n');
    CHECK(strstr(l, "\"headers\":{}},\"bytes_read\":0,") != NULL);
    CHECK(strstr(l, "\"resp_headers\":{},\"upstream\":\"127.0.0.1:43615\"}\n") != NULL);
}

TEST_MAIN()
