/* HTTP/1.1 through the real worker, on one loop: the paths where a peer
 * misbehaves or goes away (tests/loop/test_loop_h1.c has the common ones). */
#include "loop_fixture.h"

#include <stdio.h>
#include <string.h>

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
#define FWD "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: example.test\r\n"

#define START(t, conf)                                                                             \
    do {                                                                                           \
        if (lt_start((t), (conf)) != 0) {                                                          \
            CHECK(!"lt_start");                                                                    \
            return;                                                                                \
        }                                                                                          \
    } while (0)

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
    START(&t, CONF);
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

TEST_MAIN()
