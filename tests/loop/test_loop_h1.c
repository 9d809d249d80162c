/* HTTP/1.1 through the real worker, on one loop: keep-alive, request
 * framing, upstream failures, backpressure and timeouts, each as the
 * sequence of events the client and the upstream saw. */
#include "loop_fixture.h"

#include <stdio.h>
#include <string.h>

#include "test.h"

/* The proxy under test; READ_HEADER, READ_BODY, WRITE and RESPONSE_HEADER
 * are the timeouts the scenarios meet (small, so a timeout test stays
 * fast). */
#define GLOBAL_WITH(READ_HEADER, READ_BODY, WRITE)                                                 \
    "{\n"                                                                                          \
    "\tadmin off\n"                                                                                \
    "\tgrace_period 500ms\n"                                                                       \
    "\tservers {\n"                                                                                \
    "\t\ttimeouts {\n"                                                                             \
    "\t\t\tread_header " READ_HEADER "\n"                                                          \
    "\t\t\tread_body " READ_BODY "\n"                                                              \
    "\t\t\twrite " WRITE "\n"                                                                      \
    "\t\t\tidle 2s\n"                                                                              \
    "\t\t}\n"                                                                                      \
    "\t}\n"                                                                                        \
    "}\n"                                                                                          \
    "\n"
#define PROXY_WITH(RESPONSE_HEADER)                                                                \
    "\treverse_proxy 127.0.0.1:@UP@ {\n"                                                           \
    "\t\ttransport http {\n"                                                                       \
    "\t\t\tdial_timeout 1s\n"                                                                      \
    "\t\t\tresponse_header_timeout " RESPONSE_HEADER "\n"                                          \
    "\t\t}\n"                                                                                      \
    "\t}\n"
#define CONF_WITH(READ_HEADER, READ_BODY, WRITE, RESPONSE_HEADER)                                  \
    GLOBAL_WITH(READ_HEADER, READ_BODY, WRITE)                                                     \
    "http://:@PORT@ {\n" PROXY_WITH(RESPONSE_HEADER) "}\n"
#define CONF CONF_WITH("1s", "200ms", "2s", "200ms")
#define READ_BODY_MS 200
#define RESPONSE_HEADER_MS 200
#define READ_HEADER_SHORT_MS 150
#define WRITE_SHORT_MS 400 /* apart from the others, so the timing says which fired */

/* One site, two handlers: /local is answered here, the rest proxied. */
#define CONF_LOCAL                                                                                 \
    GLOBAL_WITH("1s", "200ms", "2s")                                                               \
    "http://:@PORT@ {\n"                                                                           \
    "\trespond /local \"here\" 201\n" PROXY_WITH("200ms") "}\n"

/* respond's answer to /local on a connection that goes on, or ends. */
#define LOCAL_201                                                                                  \
    "HTTP/1.1 201 Created\r\nContent-Type: text/plain; charset=utf-8\r\n"                          \
    "Content-Length: 4\r\n\r\nhere"
#define LOCAL_201_CLOSE                                                                            \
    "HTTP/1.1 201 Created\r\nContent-Type: text/plain; charset=utf-8\r\n"                          \
    "Content-Length: 4\r\nConnection: close\r\n\r\nhere"

/* What psproxy adds to every request it sends up from 127.0.0.1. */
#define FWD "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
#define FWD_HOST "X-Forwarded-Host: example.test\r\n"

static int up0_has_hello(lt_t *t)
{
    return t->n_ups > 0 && strstr(lt_rx(t->ups[0]), "hello") != NULL;
}

static int up0_has_hel(lt_t *t)
{
    return t->n_ups > 0 && strstr(lt_rx(t->ups[0]), "\r\nhel") != NULL;
}

static int up0_closed(lt_t *t)
{
    return t->n_ups > 0 && t->ups[0]->closed;
}

/* What the upstream's connection number I received ("" when none). */
static const char *up_rx(lt_t *t, int i)
{
    return lt_rx(i < t->n_ups ? t->ups[i] : NULL);
}

/* The proxy ended its upstream connection (EOF or reset). */
static int up0_ended(lt_t *t)
{
    return t->n_ups > 0 && t->ups[0]->eof != 0;
}

static int up0_has_hello_chunk(lt_t *t)
{
    return t->n_ups > 0 && strstr(lt_rx(t->ups[0]), "5\r\nhello\r\n") != NULL;
}

/* ---- 1. exchanges ------------------------------------------------------- */

TEST(get_keep_alive_reuses_client_and_upstream_connections)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WRITE("GET /b HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* one client connection, one upstream connection (pooled between) */
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /a\n"
                                 "c0: 200\n"
                                 "c0: body \"a\"\n"
                                 "u0: GET /b\n"
                                 "c0: 200\n"
                                 "c0: body \"bb\"\n");
    CHECK_INT(t.n_ups, 1);
    /* the hop-by-hop Connection is not passed on */
    CHECK_STR(lt_rx(t.ups[0]), "GET /a HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n"
                               "GET /b HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb");
    CHECK_INT(c->eof, 0);
    lt_end(&t);
}

static int request_state_lent(lt_t *t)
{
    return t->w.xreqs.in_use == 1;
}

static int request_state_back(lt_t *t)
{
    return t->w.xreqs.in_use == 0;
}

/* What a request needs in flight (xreq_t: its head, route, handler state)
 * is lent from the head's first byte to its end: a keep-alive connection
 * between requests holds none. */
TEST(request_state_is_lent_while_a_request_is_in_flight_and_back_between_requests)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHo"),
        LT_WAIT(request_state_lent),
        LT_WRITE("st: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WAIT(request_state_back),
        LT_NOTE("idle"),
        LT_WRITE("GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WAIT(request_state_back),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "c0"), "c0: 200\n"
                                   "c0: body \"a\"\n"
                                   "c0: idle\n"
                                   "c0: 200\n"
                                   "c0: body \"bb\"\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb");
    lt_end(&t);
}

TEST(post_content_length_body_reaches_upstream_exactly)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ(5),
        LT_READ(6),
        LT_WRITE("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        LT_END(),
    };
    /* the body in two writes, the second once the first is upstream */
    static const lt_step_t client[] = {
        LT_WRITE("POST /p HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\nhello"),
        LT_WAIT(up0_has_hello),
        LT_WRITE(" world"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: POST /p\n"
                                 "u0: body \"hello\"\n"
                                 "u0: body \" world\"\n"
                                 "c0: 201\n"
                                 "c0: body \"\"\n");
    /* the framing field is psproxy's own, written last */
    CHECK_STR(lt_rx(t.ups[0]), "POST /p HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST
                               "Content-Length: 11\r\n\r\nhello world");
    CHECK_STR(lt_rx(c), "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    lt_end(&t);
}

TEST(post_chunked_body_goes_up_as_one_chunk_per_read)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ_TO("hel\r\n"),
        LT_READ_TO("0\r\n\r\n"),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    /* a chunk split across two writes, the last chunk with the second:
     * psproxy sends what each read brought as a chunk of its own */
    static const lt_step_t client[] = {
        LT_WRITE("POST /c HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "b\r\nhel"),
        LT_WAIT(up0_has_hel),
        LT_WRITE("lo world\r\n0\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: POST /c\n"
                                 "u0: body \"3\\r\\nhel\\r\\n\"\n"
                                 "u0: body \"8\\r\\nlo world\\r\\n0\\r\\n\\r\\n\"\n"
                                 "c0: 200\n"
                                 "c0: body \"ok\"\n");
    CHECK_STR(lt_rx(t.ups[0]), "POST /c HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST
                               "Transfer-Encoding: chunked\r\n\r\n"
                               "3\r\nhel\r\n8\r\nlo world\r\n0\r\n\r\n");
    lt_end(&t);
}

TEST(half_closed_client_gets_its_response_on_a_pooled_upstream_connection)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WRITE("GET /h HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_SHUTDOWN(),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* conn.c: "half-closed: every whole request buffered before the EOF
     * was answered"; then the connection closes */
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /a\n"
                                 "c0: 200\n"
                                 "c0: body \"a\"\n"
                                 "u0: GET /h\n"
                                 "c0: 200\n"
                                 "c0: body \"ok\"\n"
                                 "c0: eof\n");
    lt_end(&t);
}

/* The same request on a fresh upstream connection: the client's EOF
 * arrives while psproxy dials (CONN_S_CONNECT_UP), the parser still paused
 * on the head. A request without a body is whole all the same, so it is
 * answered, as with a pooled connection above (this once dropped it). */
TEST(half_closed_client_gets_its_response_on_a_fresh_upstream_connection)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /h HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_SHUTDOWN(),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /h\n"
                                 "c0: 200\n"
                                 "c0: body \"ok\"\n"
                                 "c0: eof\n");
    lt_end(&t);
}

/* ---- 2. the upstream fails ---------------------------------------------- */

TEST(upstream_closing_mid_head_is_502_and_the_connection_stays_usable)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Le"),
        LT_CLOSE(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WRITE("GET /2 HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_upstream(&t, 1, up1);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* bytes came back, so the GET is not retried (proxy.c up_failed); the
     * request was whole, so the client connection is kept */
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /1\n"
                                 "u0: close\n"
                                 "c0: 502\n"
                                 "c0: body \"\"\n"
                                 "u1: accept\n"
                                 "u1: GET /2\n"
                                 "c0: 200\n"
                                 "c0: body \"ok\"\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    lt_end(&t);
}

TEST(upstream_closing_mid_body_truncates_and_closes_the_client)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
        LT_CLOSE(),
    };
    /* a second request pipelined behind the first: it must never be
     * answered on a connection whose response broke off */
    static const lt_step_t client[] = {
        LT_WRITE("GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n"
                 "GET /2 HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: GET /1\n"
                                  "u0: close\n");
    CHECK_STR(lt_events(&t, "c"), "c0: 200\n"
                                  "c0: eof mid-body [5 bytes]\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    CHECK_STR(lt_rx(t.ups[0]), "GET /1 HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n");
    CHECK_INT(t.n_ups, 1);
    lt_end(&t);
}

TEST(upstream_closing_after_a_chunked_head_never_ends_the_chunked_body)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        LT_CLOSE(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: GET /1\n"
                                  "u0: close\n");
    CHECK_STR(lt_events(&t, "c"), "c0: 200\n"
                                  "c0: eof mid-body [0 bytes]\n");
    /* no last chunk: a cut response must not look complete */
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    lt_end(&t);
}

TEST(upstream_closing_mid_chunk_never_ends_the_chunked_body)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4\r\nwo"),
        LT_CLOSE(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /1 HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "c"), "c0: 200\n"
                                  "c0: eof mid-body [7 bytes]\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "7\r\nhellowo\r\n");
    lt_end(&t);
}

/* 64 MiB: more than the kernel buffers between upstream, proxy and client
 * can hold, so the proxy must stop reading the upstream */
#define FLOOD_LEN (64u << 20)

/* The client stops reading after the head of a FLOOD_LEN body the
 * upstream (UP0's script) sends, then resumes once the upstream closed:
 * every byte the upstream did send reaches the client, then the close. */
static void run_cut_short_body(const lt_step_t *up0)
{
    static const lt_step_t client[] = {
        LT_WRITE("GET /big HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_READ_STOP(),
        LT_WAIT(up0_closed),
        LT_READ_START(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    lt_peer_t *u = t.n_ups > 0 ? t.ups[0] : NULL;
    CHECK(u != NULL);
    if (u == NULL) {
        lt_end(&t);
        return;
    }
    /* the upstream could send only part of it before it closed */
    CHECK(u->flood_sent > 0 && u->flood_sent < FLOOD_LEN);
    char want[256];
    snprintf(want, sizeof(want),
             "u0: accept\n"
             "u0: GET /big\n"
             "c0: 200\n"
             "u0: close\n"
             "c0: eof mid-body [%llu bytes]\n",
             (unsigned long long)u->flood_sent);
    CHECK_STR(lt_events(&t, ""), want);
    CHECK_INT(c->body_len, u->flood_sent);
    CHECK(c->pattern_ok);
    lt_end(&t);
}

/* The upstream floods until the proxy stops reading it (the client's
 * socket is full), then closes. */
TEST(upstream_closing_while_the_client_does_not_read_loses_no_byte)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n"),
        LT_FLOOD(FLOOD_LEN),
        LT_WAIT(lt_proxy_holds_upstream),
        LT_CLOSE(),
    };
    run_cut_short_body(up0);
}

/* The same, with the upstream's close arriving while psproxy's write to
 * the stalled client is pending and its buffer has room, so it reads the
 * EOF at once. The queued write and the bytes read after it still reach
 * the client before it is cut off (this once closed it at the EOF, 12 KiB
 * short of what the upstream sent). */
TEST(upstream_closing_while_a_write_to_the_client_is_pending_loses_no_byte)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n"),
        /* small pieces: little is in flight when the write goes pending */
        LT_FEED(1024, lt_proxy_client_write_pending),
        LT_CLOSE(),
    };
    run_cut_short_body(up0);
}

/* ---- 3. timers ---------------------------------------------------------- */

TEST(client_stalling_mid_body_is_closed_after_read_body)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ(5),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("POST /slow HTTP/1.1\r\nHost: example.test\r\nContent-Length: 10\r\n\r\nhello"),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* conn.c on_timeout in PROXY: the exchange cannot complete, so both
     * connections close; no 408 (the upstream may have answered already) */
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: POST /slow\n"
                                  "u0: body \"hello\"\n"
                                  "u0: eof\n");
    CHECK_STR(lt_events(&t, "c"), "c0: eof\n");
    CHECK_STR(lt_rx(c), "");
    /* read_body runs from the last body bytes, which left after the write */
    int64_t waited = lt_time(&t, "c0: eof") - (int64_t)c->t_writes[0];
    CHECK(waited >= READ_BODY_MS);
    CHECK(waited < READ_BODY_MS + 1000);
    lt_end(&t);
}

TEST(client_stalling_mid_head_gets_408_after_read_header)
{
    static const lt_step_t client[] = {
        LT_WRITE("GET /slow HTTP/1.1\r\nHost: exam"),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_WITH("150ms", "200ms", "2s", "200ms")), 0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "c0: 408\n"
                                 "c0: body \"\"\n"
                                 "c0: eof\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n");
    CHECK_INT(t.n_ups, 0);
    /* read_header runs from the accept, which came after the connect */
    int64_t waited = lt_time(&t, "c0: 408") - (int64_t)c->t_connect;
    CHECK(waited >= READ_HEADER_SHORT_MS);
    CHECK(waited < READ_HEADER_SHORT_MS + 1000);
    lt_end(&t);
}

TEST(upstream_silent_past_response_header_timeout_is_504)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_END(), /* no answer */
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /slow HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WRITE("GET /again HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_upstream(&t, 1, up1);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* the upstream connection is dropped, the client's is kept */
    CHECK_STR(lt_events(&t, "u0"), "u0: accept\n"
                                   "u0: GET /slow\n"
                                   "u0: eof\n");
    CHECK_STR(lt_events(&t, "c0 u1"), "c0: 504\n"
                                      "c0: body \"\"\n"
                                      "u1: accept\n"
                                      "u1: GET /again\n"
                                      "c0: 200\n"
                                      "c0: body \"ok\"\n");
    /* response_header_timeout runs from the end of the request upstream */
    int64_t waited = lt_time(&t, "c0: 504") - (int64_t)c->t_writes[0];
    CHECK(waited >= RESPONSE_HEADER_MS);
    CHECK(waited < RESPONSE_HEADER_MS + 1000);
    CHECK_STR(lt_rx(c), "HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    lt_end(&t);
}

/* The client stops reading while a large response streams: psproxy's write
 * to it stays pending and it stops reading the upstream (backpressure), so
 * no upstream clock runs (proxy.c up_arm_timer) and the exchange's write
 * clock is the one that ends it: the upstream connection and the client's
 * close together, WRITE_SHORT_MS after the write went pending. */
TEST(client_not_reading_is_closed_with_its_upstream_after_write)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n"),
        LT_FLOOD(FLOOD_LEN),
        LT_WAIT(lt_proxy_holds_upstream),
        LT_NOTE("held"),
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /big HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_READ_STOP(),
        LT_WAIT(up0_ended),
        LT_READ_START(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_WITH("1s", "200ms", "400ms", "200ms")), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* the proxy's socket to the upstream still holds unread bytes: its
     * close is a reset */
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: GET /big\n"
                                  "u0: held\n"
                                  "u0: reset\n");
    /* the client gets what reached its socket before the close, then the
     * end: a cut body, never a whole one */
    char want[128];
    snprintf(want, sizeof(want), "c0: 200\nc0: eof mid-body [%llu bytes]\n",
             (unsigned long long)c->body_len);
    CHECK_STR(lt_events(&t, "c"), want);
    CHECK(c->body_len > 0 && c->body_len < FLOOD_LEN);
    CHECK(c->pattern_ok);
    /* the write clock starts when a write goes pending, after the request */
    int64_t waited = lt_time(&t, "u0: reset") - (int64_t)c->t_writes[0];
    CHECK(waited >= WRITE_SHORT_MS);
    CHECK(waited < WRITE_SHORT_MS + 1000);
    lt_end(&t);
}

/* ---- 4. one connection, several handlers -------------------------------- */

/* The connection's one exchange serves each request in turn, whichever
 * handler routing picks for it: pipelined requests wait in the buffer for
 * the answer before theirs, a local answer between two proxied ones. */
TEST(local_and_proxied_answers_share_one_keep_alive_connection_in_order)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
                 "GET /local HTTP/1.1\r\nHost: example.test\r\n\r\n"
                 "GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_RESPONSE(),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_LOCAL), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* the upstream's /b goes up in the same turn as the local answer goes
     * out: the peers are compared apart */
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: GET /a\n"
                                  "u0: GET /b\n");
    CHECK_STR(lt_events(&t, "c"), "c0: 200\n"
                                  "c0: body \"a\"\n"
                                  "c0: 201\n"
                                  "c0: body \"here\"\n"
                                  "c0: 200\n"
                                  "c0: body \"bb\"\n");
    /* exactly the two proxied heads, on one pooled upstream connection */
    CHECK_STR(up_rx(&t, 0), "GET /a HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n"
                               "GET /b HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n");
    CHECK_INT(t.n_ups, 1);
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na" LOCAL_201
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb");
    CHECK_INT(c->eof, 0);
    lt_end(&t);
}

/* A body sent to a local answer is read and dropped in place, with either
 * framing: the request behind it is parsed from its first byte and
 * proxied, and the connection goes on. */
TEST(body_of_a_request_answered_here_is_dropped_and_the_connection_goes_on)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("POST /local HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\n"
                 "hello world"
                 "GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_RESPONSE(),
        LT_WRITE("POST /local HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n0\r\n\r\n"
                 "GET /c HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_LOCAL), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: GET /b\n"
                                  "u0: GET /c\n");
    CHECK_STR(lt_events(&t, "c"), "c0: 201\n"
                                  "c0: body \"here\"\n"
                                  "c0: 200\n"
                                  "c0: body \"b\"\n"
                                  "c0: 201\n"
                                  "c0: body \"here\"\n"
                                  "c0: 200\n"
                                  "c0: body \"c\"\n");
    /* no byte of either body went up */
    CHECK_STR(up_rx(&t, 0), "GET /b HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n"
                               "GET /c HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST "\r\n");
    CHECK_INT(t.n_ups, 1);
    CHECK_INT(c->eof, 0);
    lt_end(&t);
}

/* A local answer to a request whose body is still coming cannot keep the
 * connection (exchange_respond: only a request read whole does): the
 * answer says so, and the connection ends after it while the rest of the
 * body is drained. */
TEST(body_still_coming_when_answered_here_ends_the_connection_after_the_answer)
{
    static const lt_step_t client[] = {
        LT_WRITE("POST /local HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\n"
                 "hello"),
        LT_RESPONSE(),
        LT_WRITE(" world"),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_LOCAL), 0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "c0: 201\n"
                                 "c0: body \"here\"\n"
                                 "c0: eof\n");
    CHECK_STR(lt_rx(c), LOCAL_201_CLOSE);
    CHECK_INT(t.n_ups, 0);
    lt_end(&t);
}

/* ---- 5. the request body breaks its framing ----------------------------- */

/* A chunked body whose framing breaks after routing, while it streams up:
 * the upstream got part of a request that can never be whole, so its
 * connection is closed (never pooled); nothing of a response went out, so
 * the client gets a 400 and its connection ends after it. */
TEST(chunked_body_breaking_mid_body_is_400_and_closes_the_upstream)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ_TO("hello\r\n"),
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("POST /c HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n"),
        LT_WAIT(up0_has_hello_chunk),
        LT_WRITE("zz\r\nworld\r\n0\r\n\r\n"), /* not a chunk size */
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: POST /c\n"
                                  "u0: body \"5\\r\\nhello\\r\\n\"\n"
                                  "u0: eof\n");
    CHECK_STR(lt_events(&t, "c"), "c0: 400\n"
                                  "c0: body \"\"\n"
                                  "c0: eof\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n");
    /* not a byte of the broken part went up */
    CHECK_STR(up_rx(&t, 0), "POST /c HTTP/1.1\r\nHost: example.test\r\n" FWD FWD_HOST
                               "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    CHECK_INT(t.n_ups, 1);
    lt_end(&t);
}

/* The same once the upstream's answer began to reach the client: no 400
 * can follow a response head, so both connections are cut, and the
 * client's body ends short of its Content-Length. */
TEST(chunked_body_breaking_after_the_response_began_closes_both_connections)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ_TO("hello\r\n"),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("POST /c HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n"),
        LT_HEAD(),
        LT_WRITE("zz\r\nworld\r\n0\r\n\r\n"),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "u"), "u0: accept\n"
                                  "u0: POST /c\n"
                                  "u0: body \"5\\r\\nhello\\r\\n\"\n"
                                  "u0: eof\n");
    CHECK_STR(lt_events(&t, "c"), "c0: 200\n"
                                  "c0: eof mid-body [5 bytes]\n");
    /* the request was not whole when the head went out: no keep-alive */
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
                        "hello");
    lt_end(&t);
}

TEST_MAIN()
