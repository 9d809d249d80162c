/* HTTP/1.1 through the real worker, on one loop: the paths where a peer
 * misbehaves or goes away (tests/loop/test_loop_h1.c has the common ones). */
#include "loop_fixture.h"

#include <stdio.h>
#include <string.h>

#include "conn.h"
#include "test.h"

#define CONF                                                                                       \
    "{\n"                                                                                          \
    "\tadmin off\n"                                                                                \
    "\tgrace_period 500ms\n"                                                                       \
    "\tservers {\n"                                                                                \
    "\t\ttimeouts {\n"                                                                             \
    "\t\t\tread_header 1s\n"                                                                       \
    "\t\t\tread_body 1s\n"                                                                         \
    "\t\t\twrite 2s\n"                                                                             \
    "\t\t\tidle 2s\n"                                                                              \
    "\t\t}\n"                                                                                      \
    "\t}\n"                                                                                        \
    "}\n"                                                                                          \
    "\n"                                                                                           \
    "http://:@PORT@ {\n"                                                                           \
    "\trespond /local \"here\" 201\n"                                                              \
    "\treverse_proxy 127.0.0.1:@UP@\n"                                                             \
    "}\n"

/* What psproxy adds to every request it sends up from 127.0.0.1. */
#define FWD                                                                                        \
    "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.test\r\n"

/* ---- the upstream's response cannot be relayed -------------------------- */

/* 40,000 bytes of one field: more than a read buffer (max_header_size,
 * 32 KiB by default, and 4 KiB) holds */
#define BIG_FIELD 40000
static char big_head[BIG_FIELD + 128];

/* An upstream response head that does not fit the read buffer can never
 * be relayed (its fields are slices of the buffer): 502, the upstream
 * connection closed, the client's kept for its next request. This once
 * hung with no clock running until the client gave up. */
TEST(upstream_head_larger_than_the_read_buffer_is_502)
{
    size_t o = (size_t)snprintf(big_head, sizeof(big_head), "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big_head + o, 'a', BIG_FIELD);
    o += BIG_FIELD;
    o += (size_t)snprintf(big_head + o, sizeof(big_head) - o, "\r\nContent-Length: 2\r\n\r\nok");
    const lt_step_t up0[] = {
        LT_READ_HEAD(),
        {LT_OP_WRITE, big_head, o, NULL, NULL},
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /big HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WRITE("GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    CHECK(o > t.w.bufs.size);
    lt_upstream(&t, 0, up0);
    lt_upstream(&t, 1, up1);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    /* psproxy's socket to u0 still holds unread bytes: its close is a reset */
    CHECK_STR(lt_events(&t, "u0"), "u0: accept\n"
                                   "u0: GET /big\n"
                                   "u0: reset\n");
    CHECK_STR(lt_events(&t, "c0 u1"), "c0: 502\n"
                                      "c0: body \"\"\n"
                                      "u1: accept\n"
                                      "u1: GET /next\n"
                                      "c0: 200\n"
                                      "c0: body \"ok\"\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    lt_end(&t);
}

/* A 101 to a request that asked for no upgrade would turn the connection
 * into a tunnel the client never wanted: 502, and nothing the upstream
 * sent after it reaches the client. */
TEST(upstream_101_to_a_request_without_upgrade_is_502)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                 "Upgrade: websocket\r\n\r\nsecret"),
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /plain HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "c"), "c0: 502\n"
                                  "c0: body \"\"\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
    /* the upstream connection is not pooled: it ends */
    CHECK_INT(t.n_ups, 1);
    CHECK(t.n_ups == 1 && t.ups[0]->eof != 0);
    lt_end(&t);
}

/* RFC 9110 15.2: an HTTP/1.0 client gets no 1xx; the final response
 * reaches it whole. An HTTP/1.1 client gets the 1xx first. */
TEST(interim_response_reaches_an_http11_client_but_not_an_http10_one)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const lt_step_t client11[] = {
        LT_WRITE("GET /hints HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_RESPONSE(),
        LT_WRITE("GET /hints HTTP/1.0\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client11);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, "c"), "c0: 103\n"
                                  "c0: body \"\"\n"
                                  "c0: 200\n"
                                  "c0: body \"ok\"\n"
                                  "c0: 200\n"
                                  "c0: body \"ok\"\n"
                                  "c0: eof\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    lt_end(&t);
}

/* ---- requests psproxy does not forward ---------------------------------- */

/* psproxy is no forward proxy: a CONNECT is refused and the connection
 * ends; the bytes after it (the tunnel the client hoped for) never reach
 * an upstream. (Its authority-form target fails the target check, 400,
 * before routing's 405 for CONNECT.) */
TEST(connect_is_refused_and_reaches_no_upstream)
{
    static const lt_step_t client[] = {
        LT_WRITE("CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"
                 "GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "c0: 400\n"
                                 "c0: body \"\"\n"
                                 "c0: eof\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n");
    CHECK_INT(t.n_ups, 0);
    lt_end(&t);
}

/* A request answered here whose chunked body breaks: the answer still
 * goes out, but nothing after the broken framing can be told apart from
 * the body, so the connection ends after the answer and the "request"
 * behind it is never proxied (no smuggling past a local answer). */
TEST(broken_chunked_body_of_a_local_answer_ends_the_connection)
{
    static const lt_step_t client[] = {
        LT_WRITE("POST /local HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "zz\r\nhello\r\n0\r\n\r\n"
                 "GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "c0: 201\n"
                                 "c0: body \"here\"\n"
                                 "c0: eof\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 201 Created\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        "Content-Length: 4\r\nConnection: close\r\n\r\nhere");
    CHECK_INT(t.n_ups, 0);
    lt_end(&t);
}

/* ---- the client goes away ----------------------------------------------- */

/* The proxy read its client's EOF (white box: the worker's one connection). */
static int lt_client_shut(lt_t *t)
{
    return t->w.conns != NULL && t->w.conns->x.eof;
}

static int up0_got_a(lt_t *t)
{
    return t->n_ups > 0 && strstr(lt_rx(t->ups[0]), "GET /a ") != NULL;
}

/* A client that half-closes with a request answered and the start of
 * another head buffered: the whole one is answered, the partial one can
 * never complete, so the connection closes at once (no 408 after
 * read_header, nothing sent up). */
TEST(half_closed_client_with_a_partial_head_gets_its_answer_then_the_end)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WAIT(lt_client_shut),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\nGET /b HTTP/1.1\r\nHo"),
        LT_WAIT(up0_got_a),
        LT_SHUTDOWN(),
        LT_RESPONSE(),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /a\n"
                                 "c0: 200\n"
                                 "c0: body \"a\"\n"
                                 "c0: eof\n");
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
    CHECK_STR(lt_rx(t.ups[0]), "GET /a HTTP/1.1\r\nHost: example.test\r\n" FWD "\r\n");
    /* at once, not after read_header (1 s) */
    CHECK(lt_time(&t, "c0: eof") - lt_time(&t, "c0: 200") < 500);
    lt_end(&t);
}

/* ---- the upstream pool -------------------------------------------------- */

#define CONF_KEEPALIVE(KEEPALIVE)                                                                  \
    "{\n"                                                                                          \
    "\tadmin off\n"                                                                                \
    "\tgrace_period 500ms\n"                                                                       \
    "}\n"                                                                                          \
    "\n"                                                                                           \
    "http://:@PORT@ {\n"                                                                           \
    "\treverse_proxy 127.0.0.1:@UP@ {\n"                                                           \
    "\t\ttransport http {\n"                                                                       \
    "\t\t\tkeepalive " KEEPALIVE "\n"                                                              \
    "\t\t}\n"                                                                                      \
    "\t}\n"                                                                                        \
    "}\n"
#define KEEPALIVE_MS 150

static int up0_ended(lt_t *t)
{
    return t->n_ups > 0 && t->ups[0]->eof != 0;
}

/* A pooled connection idle for keepalive is closed by psproxy; the next
 * request dials a new one. */
TEST(pooled_upstream_connection_is_closed_after_keepalive)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WAIT(up0_ended),
        LT_WRITE("GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_KEEPALIVE("150ms")), 0);
    lt_upstream(&t, 0, up0);
    lt_upstream(&t, 1, up1);
    lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /a\n"
                                 "c0: 200\n"
                                 "c0: body \"a\"\n"
                                 "u0: eof\n"
                                 "u1: accept\n"
                                 "u1: GET /b\n"
                                 "c0: 200\n"
                                 "c0: body \"b\"\n");
    int64_t idle = lt_time(&t, "u0: eof") - lt_time(&t, "c0: body \"a\"");
    CHECK(idle >= KEEPALIVE_MS - 10); /* loop time, taken at the callbacks */
    CHECK(idle < KEEPALIVE_MS + 1000);
    lt_end(&t);
}

/* The upstream closes a pooled connection just as psproxy reuses it: the
 * request REQ (without a body) goes again on a fresh connection, once, and
 * the client never hears of it; EVENTS is what happens meanwhile. */
static void bodiless_is_sent_again(const char *req, const char *events)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_CLOSE(), /* read it, never answered */
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
        LT_END(),
    };
    const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        {LT_OP_WRITE, req, strlen(req), NULL, NULL},
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_KEEPALIVE("2s")), 0);
    lt_upstream(&t, 0, up0);
    lt_upstream(&t, 1, up1);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), events);
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
                        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb");
    lt_end(&t);
}

TEST(request_without_body_on_a_pooled_connection_the_upstream_closed_is_sent_again)
{
    bodiless_is_sent_again("DELETE /b HTTP/1.1\r\nHost: example.test\r\n\r\n",
                           "u0: accept\nu0: GET /a\nc0: 200\nc0: body \"a\"\n"
                           "u0: DELETE /b\nu0: close\nu1: accept\nu1: DELETE /b\n"
                           "c0: 200\nc0: body \"b\"\n");
}

/* The same with a body: PUT is idempotent (RFC 9110 9.2.2) and its body
 * came whole, so it goes again, body and all. */
TEST(idempotent_request_with_body_on_a_pooled_connection_the_upstream_closed_is_sent_again)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_READ(5),
        LT_CLOSE(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_READ(5),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        LT_WRITE("PUT /b HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhello"),
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_KEEPALIVE("2s")), 0);
    lt_upstream(&t, 0, up0);
    lt_upstream(&t, 1, up1);
    lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /a\n"
                                 "c0: 200\n"
                                 "c0: body \"a\"\n"
                                 "u0: PUT /b\n"
                                 "u0: body \"hello\"\n"
                                 "u0: close\n"
                                 "u1: accept\n"
                                 "u1: PUT /b\n"
                                 "u1: body \"hello\"\n"
                                 "c0: 200\n"
                                 "c0: body \"b\"\n");
    lt_end(&t);
}

/* A POST, with a body or without: the upstream may have acted on it
 * before it closed, and a proxy must not retry it (RFC 9110 9.2.2): 502,
 * sent once. */
static void post_is_not_sent_twice(const char *post, const char *events)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"),
        LT_READ_HEAD(),
        LT_CLOSE(),
    };
    const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_RESPONSE(),
        {LT_OP_WRITE, post, strlen(post), NULL, NULL},
        LT_RESPONSE(),
        LT_DONE(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF_KEEPALIVE("2s")), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    CHECK_STR(lt_events(&t, ""), events);
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
    CHECK_INT(t.n_ups, 1);
    lt_end(&t);
}

TEST(post_on_a_pooled_connection_the_upstream_closed_is_502_not_sent_twice)
{
    post_is_not_sent_twice("POST /b HTTP/1.1\r\nHost: example.test\r\n\r\n",
                           "u0: accept\nu0: GET /a\nc0: 200\nc0: body \"a\"\n"
                           "u0: POST /b\nu0: close\nc0: 502\nc0: body \"\"\n");
    post_is_not_sent_twice("POST /b HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n"
                           "\r\nhello",
                           "u0: accept\nu0: GET /a\nc0: 200\nc0: body \"a\"\n"
                           "u0: POST /b\nu0: close\nc0: 502\nc0: body \"\"\n");
}

/* Unless it carries an Idempotency-Key: the client says running it twice
 * is safe (as Go's transport reads it). */
TEST(post_with_an_idempotency_key_on_a_pooled_connection_the_upstream_closed_is_sent_again)
{
    bodiless_is_sent_again("POST /b HTTP/1.1\r\nHost: example.test\r\nIdempotency-Key: \"8e03\"\r\n"
                           "\r\n",
                           "u0: accept\nu0: GET /a\nc0: 200\nc0: body \"a\"\n"
                           "u0: POST /b\nu0: close\nu1: accept\nu1: POST /b\n"
                           "c0: 200\nc0: body \"b\"\n");
}

/* ---- a tunnel after 101 ------------------------------------------------- */

/* 64 MiB: more than the kernel buffers between client, proxy and upstream
 * hold, so the proxy must stop reading the client */
#define TUNNEL_FLOOD (64u << 20)

/* The proxy stopped reading its client (white box: its one connection). */
static int proxy_holds_client(lt_t *t)
{
    return t->w.conns != NULL && t->w.conns->tcp.read_cb == NULL;
}

/* After a 101 the client floods the tunnel while the upstream reads
 * nothing: psproxy stops reading the client (one buffer held, never more),
 * and once the upstream reads again every byte arrives, in order. */
TEST(tunnel_holds_a_client_flooding_a_stalled_upstream_and_loses_no_byte)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                 "Upgrade: test\r\n\r\n"),
        LT_READ_STOP(),
        LT_WAIT(proxy_holds_client),
        LT_NOTE("held"),
        LT_READ_START(),
        LT_READ(TUNNEL_FLOOD),
        LT_DONE(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /t HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\n"
                 "Upgrade: test\r\n\r\n"),
        LT_HEAD(),
        LT_FLOOD(TUNNEL_FLOOD),
        LT_END(),
    };
    lt_t t;
    CHECK_INT(lt_start(&t, CONF), 0);
    lt_upstream(&t, 0, up0);
    lt_peer_t *c = lt_client(&t, client);
    CHECK_INT(lt_run(&t), 0);
    char want[256];
    snprintf(want, sizeof(want),
             "u0: accept\n"
             "u0: GET /t\n"
             "u0: held\n"
             "u0: body [%u bytes]\n",
             TUNNEL_FLOOD);
    CHECK_STR(lt_events(&t, "u"), want);
    CHECK_INT(c->status, 101);
    CHECK_INT(c->flood_queued, TUNNEL_FLOOD);
    /* what went up after the request head is the flood, byte for byte */
    lt_peer_t *u = t.n_ups > 0 ? t.ups[0] : NULL;
    CHECK(u != NULL);
    const char *head_end = u != NULL ? strstr(u->rx, "\r\n\r\n") : NULL;
    CHECK(head_end != NULL);
    size_t off = (size_t)(head_end + 4 - u->rx);
    CHECK_INT(u->rx_len - off, TUNNEL_FLOOD);
    size_t bad = 0;
    for (size_t i = 0; i < TUNNEL_FLOOD && bad == 0; i++)
        if (u->rx[off + i] != lt_pattern(i))
            bad = i + 1;
    CHECK_INT(bad, 0);
    lt_end(&t);
}

TEST_MAIN()
