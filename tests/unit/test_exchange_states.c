/* The exchange's request and response states (src/exchange/exchange.c):
 * the transitions its life takes are allowed, the ones no code path may
 * take are refused, and taking one anyway stops a debug build. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exchange.h"
#include "test.h"

/* Each path through a list of response states is allowed step by step. */
static int resp_path(const int *s, int n)
{
    for (int i = 1; i < n; i++)
        if (!exchange_resp_allowed(s[i - 1], s[i])) {
            fprintf(stderr, "  refused: %s -> %s\n", exchange_resp_name(s[i - 1]),
                    exchange_resp_name(s[i]));
            return 0;
        }
    return 1;
}

TEST(the_paths_of_an_exchange_are_allowed)
{
    /* proxied, then the next request on the connection */
    CHECK(resp_path((int[]){XRESP_NONE, XRESP_PREPARE, XRESP_RELAY, XRESP_DONE, XRESP_NONE}, 5));
    /* a retry on another upstream, then a 502 made here */
    CHECK(resp_path((int[]){XRESP_NONE, XRESP_PREPARE, XRESP_RELAY, XRESP_PREPARE, XRESP_LOCAL,
                            XRESP_DONE, XRESP_CLOSED}, 7));
    /* respond, redir, errors */
    CHECK(resp_path((int[]){XRESP_NONE, XRESP_LOCAL, XRESP_DONE}, 3));
    /* a WebSocket: after 101 only the close ends it */
    CHECK(resp_path((int[]){XRESP_NONE, XRESP_PREPARE, XRESP_RELAY, XRESP_TUNNEL, XRESP_CLOSED},
                    5));
    /* the request: head, body, done, the next head; or broken anywhere */
    CHECK(exchange_req_allowed(XREQ_HEAD, XREQ_BODY));
    CHECK(exchange_req_allowed(XREQ_BODY, XREQ_DONE));
    CHECK(exchange_req_allowed(XREQ_DONE, XREQ_HEAD));
    CHECK(exchange_req_allowed(XREQ_HEAD, XREQ_BROKEN));
    CHECK(exchange_req_allowed(XREQ_BODY, XREQ_BROKEN));
    CHECK(exchange_req_allowed(XREQ_DONE, XREQ_BROKEN));
}

TEST(every_live_state_may_close_and_stay)
{
    for (int s = XRESP_NONE; s <= XRESP_CLOSED; s++) {
        CHECK(exchange_resp_allowed(s, s));
        CHECK(exchange_resp_allowed(s, XRESP_CLOSED));
    }
    for (int s = XREQ_HEAD; s <= XREQ_BROKEN; s++)
        CHECK(exchange_req_allowed(s, s));
}

TEST(transitions_no_path_takes_are_refused)
{
    /* a response made here never turns into a relayed one, nor back */
    CHECK(!exchange_resp_allowed(XRESP_LOCAL, XRESP_RELAY));
    CHECK(!exchange_resp_allowed(XRESP_LOCAL, XRESP_PREPARE));
    /* routing comes before the handler runs, and before anything is done */
    CHECK(!exchange_resp_allowed(XRESP_NONE, XRESP_RELAY));
    CHECK(!exchange_resp_allowed(XRESP_NONE, XRESP_DONE));
    CHECK(!exchange_resp_allowed(XRESP_PREPARE, XRESP_DONE));
    CHECK(!exchange_resp_allowed(XRESP_PREPARE, XRESP_TUNNEL));
    /* a tunnel has no response end and no way back to HTTP */
    CHECK(!exchange_resp_allowed(XRESP_TUNNEL, XRESP_DONE));
    CHECK(!exchange_resp_allowed(XRESP_TUNNEL, XRESP_RELAY));
    CHECK(!exchange_resp_allowed(XRESP_TUNNEL, XRESP_LOCAL));
    /* a finished exchange runs nothing more; a closed one nothing at all */
    CHECK(!exchange_resp_allowed(XRESP_DONE, XRESP_RELAY));
    CHECK(!exchange_resp_allowed(XRESP_DONE, XRESP_LOCAL));
    for (int s = XRESP_NONE; s < XRESP_CLOSED; s++)
        CHECK(!exchange_resp_allowed(XRESP_CLOSED, s));
    /* the request: no skipping the body state, no going back */
    CHECK(!exchange_req_allowed(XREQ_HEAD, XREQ_DONE));
    CHECK(!exchange_req_allowed(XREQ_BODY, XREQ_HEAD));
    CHECK(!exchange_req_allowed(XREQ_DONE, XREQ_BODY));
    CHECK(!exchange_req_allowed(XREQ_BROKEN, XREQ_HEAD));
    CHECK(!exchange_req_allowed(XREQ_BROKEN, XREQ_DONE));
    /* out of range */
    CHECK(!exchange_resp_allowed(-1, XRESP_NONE));
    CHECK(!exchange_resp_allowed(XRESP_NONE, XRESP_CLOSED + 1));
    CHECK(!exchange_req_allowed(XREQ_BROKEN + 1, XREQ_HEAD));
}

/* Runs one state change in a child; returns its wait status. */
static int in_child(int resp, int from, int to)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        exchange_t x;
        memset(&x, 0, sizeof(x));
        x.id = 7;
        if (resp) {
            x.rs = from;
            exchange_resp_to(&x, to);
        } else {
            x.rq = from;
            exchange_req_to(&x, to);
        }
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

/* Every build keeps assertions (b_ndebug=false, the release's too): one
 * without them fails here rather than pass without checking. */
TEST(a_refused_transition_stops_the_build)
{
    int st = in_child(1, XRESP_LOCAL, XRESP_RELAY);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    st = in_child(0, XREQ_BROKEN, XREQ_HEAD);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    /* an allowed one does not */
    st = in_child(1, XRESP_RELAY, XRESP_TUNNEL);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST_MAIN()
