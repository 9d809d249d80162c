/* In-process event-loop tests: psproxy's real worker, a scripted upstream
 * server and scripted clients as handles on one uv loop, over loopback TCP,
 * run to completion on this thread. Every peer writes what it sees into one
 * event log that the test compares with the sequence it expects:
 *
 *     static const lt_step_t up0[] = {
 *         LT_READ_HEAD(), LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"), LT_END()};
 *     static const lt_step_t client[] = {
 *         LT_WRITE("GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), LT_RESPONSE(), LT_DONE()};
 *     lt_t t;
 *     lt_start(&t, "http://:@PORT@ {\n\treverse_proxy 127.0.0.1:@UP@\n}\n");
 *     lt_upstream(&t, 0, up0);
 *     lt_client(&t, client);
 *     lt_run(&t);
 *     CHECK_STR(lt_events(&t, ""), "u0: accept\nu0: GET /a\nc0: 200\nc0: body \"a\"\n");
 *     lt_end(&t);
 *
 * Events: "uN: accept", "uN: GET /a" (a head read), "uN: body \"...\"" (a
 * read step's bytes), "uN: close" (its script closed it), "uN: eof" or
 * "uN: reset" (the proxy closed it); "cN: 200" (a response head), "cN: body
 * \"...\"" (the response ended), "cN: eof [mid-head | mid-body [K bytes]]";
 * "uN: <text>" or "cN: <text>" (an LT_NOTE). Bytes are quoted up to 48 (\r \n
 * escaped), counted beyond. Only what one loop iteration cannot reorder
 * belongs in one expected sequence; compare the peers apart
 * (lt_events(&t, "u"), (&t, "c")) where two events are only simultaneous. */
#ifndef PS_LOOP_FIXTURE_H
#define PS_LOOP_FIXTURE_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "access_log.h"
#include "config.h"
#include "worker.h"

typedef struct lt lt_t;
typedef struct lt_peer lt_peer_t;

#define LT_MAX_PEERS 16
#define LT_MAX_WRITES 16
#define LT_MAX_EVENTS 256
#define LT_LOG_MAX 16384
#define LT_RX_KEEP 65536
#define LT_BODY_KEEP 64
#define LT_GUARD_MS 5000

/* What a peer's script does next. A step either acts and goes on at once,
 * or waits for its condition; the peer's callbacks and the loop's prepare
 * and check phases move it on. */
enum lt_op {
    LT_OP_END = 0,   /* the script is over; an upstream peer keeps reading */
    LT_OP_WRITE,     /* writes S (N bytes) and waits until it is written */
    LT_OP_FLOOD,     /* queues N bytes of lt_pattern and goes on at once */
    LT_OP_FEED,      /* writes N bytes of lt_pattern at a time, each once the last
                      * is written and the proxy read it, until PRED(t) holds */
    LT_OP_READ_HEAD, /* upstream: waits for a whole request head; logs its line */
    LT_OP_READ,      /* waits for N more bytes; logs them */
    LT_OP_READ_TO,   /* waits until S arrived; logs the bytes up to its end */
    LT_OP_HEAD,      /* client: waits for the next response head */
    LT_OP_RESPONSE,  /* client: waits for the next whole response */
    LT_OP_EOF,       /* waits for the peer's end (EOF, reset or error) */
    LT_OP_WAIT,      /* waits until PRED(t) holds, asked every loop iteration */
    LT_OP_READ_STOP, /* client: stops reading (backpressure) */
    LT_OP_READ_START,
    LT_OP_SHUTDOWN, /* half-closes our side */
    LT_OP_CLOSE,    /* closes the connection; logged */
    LT_OP_DONE,     /* the scenario is over: everything is torn down */
    LT_OP_NOTE,     /* logs "<name>: S" and goes on: marks where a wait ended */
};

typedef struct lt_step {
    int op;
    const char *s;
    size_t n;
    int (*pred)(lt_t *t);
    const char *what; /* LT_WAIT: named in the guard's message */
} lt_step_t;

/* clang-format off */
#define LT_END() {LT_OP_END, NULL, 0, NULL, NULL}
#define LT_WRITE(str) {LT_OP_WRITE, (str), sizeof(str) - 1, NULL, NULL}
#define LT_FLOOD(len) {LT_OP_FLOOD, NULL, (len), NULL, NULL}
#define LT_FEED(len, fn) {LT_OP_FEED, NULL, (len), (fn), #fn}
#define LT_READ_HEAD() {LT_OP_READ_HEAD, NULL, 0, NULL, NULL}
#define LT_READ(len) {LT_OP_READ, NULL, (len), NULL, NULL}
#define LT_READ_TO(str) {LT_OP_READ_TO, (str), sizeof(str) - 1, NULL, NULL}
#define LT_HEAD() {LT_OP_HEAD, NULL, 0, NULL, NULL}
#define LT_RESPONSE() {LT_OP_RESPONSE, NULL, 0, NULL, NULL}
#define LT_EOF() {LT_OP_EOF, NULL, 0, NULL, NULL}
#define LT_WAIT(fn) {LT_OP_WAIT, NULL, 0, (fn), #fn}
#define LT_READ_STOP() {LT_OP_READ_STOP, NULL, 0, NULL, NULL}
#define LT_READ_START() {LT_OP_READ_START, NULL, 0, NULL, NULL}
#define LT_SHUTDOWN() {LT_OP_SHUTDOWN, NULL, 0, NULL, NULL}
#define LT_CLOSE() {LT_OP_CLOSE, NULL, 0, NULL, NULL}
#define LT_DONE() {LT_OP_DONE, NULL, 0, NULL, NULL}
#define LT_NOTE(str) {LT_OP_NOTE, (str), sizeof(str) - 1, NULL, NULL}
/* clang-format on */

/* One side of a loopback connection: an upstream connection the scripted
 * server accepted, or a client. Lives until lt_end, so a test can look at
 * what it received after the run. */
struct lt_peer {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    /* read-only */
    lt_t *t;
    char name[8]; /* "u0", "c0": the prefix of its events */
    int client;
    /* what it received: every byte for an upstream peer; a client keeps
     * the first LT_RX_KEEP and counts the rest */
    char *rx;
    size_t rx_len, rx_cap;
    uint64_t rx_total;
    int eof;    /* its peer ended: 1 EOF, or a libuv error */
    int closed; /* uv_close called */
    /* bytes of LT_FLOOD and LT_FEED queued, and those the kernel took
     * before the close */
    uint64_t flood_queued, flood_sent;
    /* client: the responses as llhttp parsed them */
    int n_heads, n_responses;
    int status;          /* of the last head */
    uint64_t body_len;   /* of the response being read */
    uint64_t body_total; /* of all responses */
    int in_message;      /* a response started and has not ended */
    int pattern_ok;      /* every body byte so far is lt_pattern's */
    /* lt_now() when it began to connect (a client) and when each of its
     * LT_WRITEs went to the socket: anchors for timeout checks, taken
     * before the other side can see anything */
    uint64_t t_connect;
    uint64_t t_writes[LT_MAX_WRITES];
    int n_writes;
    /* private */
    const lt_step_t *script;
    size_t pc;
    size_t pos; /* read steps consumed rx up to here */
    int want_heads, want_responses;
    int reading, writes, parse_failed;
    llhttp_t parser;
    llhttp_settings_t settings;
    char *body; /* the body of the response being read, the first LT_BODY_KEEP */
    char *abuf; /* read buffer */
};

struct lt {
    /* public */
    void *data; /* the test's */
    /* the test's own handles close here (lt_finish, from LT_DONE or the guard) */
    void (*on_finish)(lt_t *t);
    /* the test's own waits: asked before and after every poll, as LT_WAIT is */
    void (*on_poll)(lt_t *t);
    worker_t w;
    cfg_t *cfg;
    alog_t alog;
    int port;                     /* the proxy's listener */
    int up_port;                  /* the scripted upstream server */
    lt_peer_t *ups[LT_MAX_PEERS]; /* accepted upstream connections, in order */
    lt_peer_t *clients[LT_MAX_PEERS];
    int n_ups, n_clients;
    int timed_out; /* the guard fired */
    uint64_t t_start;
    /* private */
    uv_tcp_t up_listener;
    uv_timer_t guard;
    uv_prepare_t prepare;
    uv_check_t check;
    const lt_step_t *up_scripts[LT_MAX_PEERS];
    int finished;
    int started;
    char log[LT_LOG_MAX];
    size_t log_len;
    uint64_t times[LT_MAX_EVENTS]; /* lt_now() of each event, in order */
    int n_events;
    char filtered[LT_LOG_MAX];
};

/* The byte at OFFSET of LT_FLOOD's stream (and what clients check bodies against). */
char lt_pattern(uint64_t offset);

/* Parses CONF (a Caddyfile in which every "@PORT@" is replaced by the
 * proxy's port and "@UP@" by the upstream server's), starts the upstream
 * server and a worker listening on the loop. Returns 0, or -1 with the
 * reason on stderr (nothing left to free). */
int lt_start(lt_t *t, const char *conf);

/* The same for a config with HTTPS sites: the worker serves TLS (h2 too
 * when the config allows it) from TLS, which the caller made and frees
 * after lt_end. */
int lt_start_tls(lt_t *t, const char *conf, tls_server_t *tls);

/* The script the upstream server's connection number I (in accept order)
 * plays. A connection without one reads and logs what it gets. */
void lt_upstream(lt_t *t, int i, const lt_step_t *script);

/* Starts a client connected to the proxy, playing SCRIPT. */
lt_peer_t *lt_client(lt_t *t, const lt_step_t *script);

/* Runs the loop until a script's LT_DONE (or the guard, LT_GUARD_MS) has
 * torn everything down. 0, or -1 when the guard fired. */
int lt_run(lt_t *t);

/* Ends the scenario now: no more events are logged, every peer closes and
 * the worker stops. LT_DONE calls it. */
void lt_finish(lt_t *t);

/* Frees what lt_start and the run left. Checks (as a test failure) that
 * the worker let go of every connection. */
void lt_end(lt_t *t);

/* Adds an event to the log (until lt_finish). */
void lt_event(lt_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The events whose text starts with one of the space-separated PREFIXES
 * ("" or NULL: all), one per line ending in '\n'. Valid until the next call. */
const char *lt_events(lt_t *t, const char *prefixes);

/* lt_now() at the first event that starts with TEXT, or -1. */
int64_t lt_time(lt_t *t, const char *text);

/* Received bytes as a string ("" when the peer does not exist). */
const char *lt_rx(const lt_peer_t *p);

/* Predicates for LT_WAIT, on the worker's own state (white box). */
/* A client connection of the proxy relays a response but stopped reading
 * its upstream: its buffer is full and the client is not taking bytes. */
int lt_proxy_holds_upstream(lt_t *t);

/* A client connection of the proxy relays a response, its write to the
 * client is pending (the client's socket takes no more), and it still
 * reads the upstream (its buffer has room). */
int lt_proxy_client_write_pending(lt_t *t);

/* An upstream connection of the proxy is not being read, whichever
 * protocol its client speaks (an HTTP/2 stream's exchange holds one too). */
int lt_proxy_upstream_read_stopped(lt_t *t);

/* Milliseconds since lt_start, in loop time (uv_now). */
uint64_t lt_now(lt_t *t);

#endif
