/* Response bodies through the filter chain (src/exchange/filter.c), on
 * the real worker: what a body filter hands on is the body the client
 * gets, framed by psproxy (the Content-Length that no longer holds is
 * gone), and each response's filter state is opened once and closed once
 * however the exchange ends. The filter is upper_filter.h's. */
#include "loop_fixture.h"

#include <stdio.h>
#include <string.h>

#include "test.h"
#include "upper_filter.h"

/* `header` is the directive the test filter stands in for. */
#define CONF                                                                                       \
    "{\n"                                                                                          \
    "\tadmin off\n"                                                                                \
    "\tgrace_period 500ms\n"                                                                       \
    "}\n"                                                                                          \
    "\n"                                                                                           \
    "http://:@PORT@ {\n"                                                                           \
    "\theader X-Filtered yes\n"                                                                    \
    "\trespond /local \"here\" 201\n"                                                              \
    "\treverse_proxy 127.0.0.1:@UP@\n"                                                             \
    "}\n"

#define GET(path) "GET " path " HTTP/1.1\r\nHost: example.test\r\n\r\n"
#define FILTERED_HEAD "HTTP/1.1 200 OK\r\nX-Filtered: yes\r\nTransfer-Encoding: chunked\r\n\r\n"

static int filter_called(lt_t *t)
{
    (void)t;
    return upper_seen.calls > 0;
}

/* Runs the scenario: the proxy with the test filter (REFUSE_OPEN: it
 * cannot open), upstream connection 0 playing UP0 (NULL: none), one client
 * playing CLIENT, which it returns. */
static lt_peer_t *run(lt_t *t, const lt_step_t *up0, const lt_step_t *client, int refuse_open)
{
    CHECK_INT(lt_start(t, CONF), 0);
    upper_filter_install();
    upper_seen.refuse_open = refuse_open;
    if (up0 != NULL)
        lt_upstream(t, 0, up0);
    lt_peer_t *c = lt_client(t, client);
    CHECK_INT(lt_run(t), 0);
    return c;
}

TEST(a_filtered_body_goes_chunked_and_the_connection_goes_on)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE(GET("/a")), LT_RESPONSE(), LT_WRITE(GET("/b")), LT_RESPONSE(), LT_DONE(),
    };
    lt_t t;
    lt_peer_t *c = run(&t, up0, client, 0);
    CHECK_STR(lt_events(&t, ""), "u0: accept\n"
                                 "u0: GET /a\n"
                                 "c0: 200\n"
                                 "c0: body \"HELLO|END\"\n"
                                 "u0: GET /b\n"
                                 "c0: 200\n"
                                 "c0: body \"WORLD|END\"\n");
    /* the upstream's Content-Length is gone: the body is not 5 bytes now */
    CHECK_STR(lt_rx(c), FILTERED_HEAD "9\r\nHELLO|END\r\n0\r\n\r\n" FILTERED_HEAD
                                      "9\r\nWORLD|END\r\n0\r\n\r\n");
    CHECK_INT(c->eof, 0);
    CHECK_INT(t.n_ups, 1); /* the upstream connection was pooled between */
    CHECK_INT(upper_seen.opens, 2);
    lt_end(&t);
    CHECK_INT(upper_seen.closes, 2);
}

/* The proxy ended its upstream connection. */
static int up0_ended(lt_t *t)
{
    return t->n_ups > 0 && t->ups[0]->eof != 0;
}

static int filter_called_twice(lt_t *t)
{
    (void)t;
    return upper_seen.calls > 1;
}

TEST(what_the_filter_hands_on_goes_out_as_it_comes_and_nothing_for_a_call_that_holds_all)
{
    /* the first call gets "h" and holds it back: no chunk goes out (an
     * empty one would end the body); the second hands on "HE", the last
     * the rest */
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nh"),
        LT_WAIT(filter_called),
        LT_WRITE("el"),
        LT_WAIT(filter_called_twice),
        LT_WRITE("lox"),
        LT_END(),
    };
    static const lt_step_t client[] = {LT_WRITE(GET("/a")), LT_RESPONSE(), LT_DONE()};
    lt_t t;
    lt_peer_t *c = run(&t, up0, client, 0);
    CHECK_STR(lt_rx(c), FILTERED_HEAD "2\r\nHE\r\n8\r\nLLOX|END\r\n0\r\n\r\n");
    CHECK_INT(upper_seen.calls, 3);
    lt_end(&t);
    CHECK_INT(upper_seen.closes, 1);
}

TEST(an_http10_client_gets_the_filtered_body_up_to_the_close)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("GET /a HTTP/1.0\r\nHost: example.test\r\n\r\n"),
        LT_EOF(),
        LT_DONE(),
    };
    lt_t t;
    lt_peer_t *c = run(&t, up0, client, 0);
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nX-Filtered: yes\r\nConnection: close\r\n\r\nHELLO|END");
    CHECK_STR(lt_events(&t, "c"), "c0: 200\nc0: body \"HELLO|END\"\nc0: eof\n");
    lt_end(&t);
    CHECK_INT(upper_seen.opens, 1);
    CHECK_INT(upper_seen.closes, 1);
}

TEST(a_head_request_loses_the_length_and_opens_no_filter)
{
    /* the body a GET would get is the filter's, whose length is unknown */
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE("HEAD /a HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_DONE(),
    };
    lt_t t;
    lt_peer_t *c = run(&t, up0, client, 0);
    CHECK_STR(lt_rx(c), "HTTP/1.1 200 OK\r\nX-Filtered: yes\r\n\r\n");
    lt_end(&t);
    CHECK_INT(upper_seen.opens, 0);
}

TEST(an_answer_made_here_is_filtered_whole_and_keeps_an_exact_length)
{
    static const lt_step_t client[] = {
        LT_WRITE(GET("/local")),
        LT_HEAD(),
        LT_RESPONSE(),
        LT_WRITE("HEAD /local HTTP/1.1\r\nHost: example.test\r\n\r\n"),
        LT_HEAD(),
        LT_DONE(),
    };
    lt_t t;
    lt_peer_t *c = run(&t, NULL, client, 0);
    /* a HEAD gets the length its GET's body has */
    CHECK_STR(lt_rx(c), "HTTP/1.1 201 Created\r\nX-Filtered: yes\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\nHERE|END"
                        "HTTP/1.1 201 Created\r\nX-Filtered: yes\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\n");
    CHECK_INT(t.n_ups, 0);
    lt_end(&t);
    CHECK_INT(upper_seen.opens, 2);
    CHECK_INT(upper_seen.closes, 2);
}

TEST(an_upstream_cut_mid_body_closes_the_client_and_the_filter_once)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
        LT_WAIT(filter_called),
        LT_CLOSE(),
        LT_END(),
    };
    static const lt_step_t client[] = {LT_WRITE(GET("/a")), LT_EOF(), LT_DONE()};
    lt_t t;
    lt_peer_t *c = run(&t, up0, client, 0);
    /* what the filter handed on went out; no last chunk: the body is cut */
    CHECK_STR(lt_rx(c), FILTERED_HEAD "4\r\nHELL\r\n");
    lt_end(&t);
    CHECK_INT(upper_seen.opens, 1);
    CHECK_INT(upper_seen.closes, 1);
}

TEST(a_filter_failing_mid_body_cuts_the_response_and_closes_the_upstream)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhel"),
        LT_WAIT(filter_called),
        LT_WRITE("lo!"),
        LT_END(),
    };
    static const lt_step_t client[] = {
        LT_WRITE(GET("/a")), LT_EOF(), LT_WAIT(up0_ended), LT_DONE(),
    };
    lt_t t;
    lt_peer_t *c = run(&t, up0, client, 0);
    CHECK_STR(lt_rx(c), FILTERED_HEAD "2\r\nHE\r\n");
    lt_end(&t);
    CHECK_INT(upper_seen.closes, 1);
}

TEST(a_filter_that_cannot_open_makes_a_500_before_anything_went_out)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        LT_END(),
    };
    /* the upstream connection, its response unread, is not pooled */
    static const lt_step_t client[] = {
        LT_WRITE(GET("/a")), LT_RESPONSE(), LT_WAIT(up0_ended), LT_DONE(),
    };
    lt_t t;
    run(&t, up0, client, 1);
    CHECK_STR(lt_events(&t, "c"), "c0: 500\nc0: body \"\"\n");
    lt_end(&t);
    CHECK_INT(upper_seen.closes, 0);
}

TEST_MAIN()
