/* Upstreams: targets, per-worker pools of idle keep-alive connections,
 * dialing (names looked up off the loop, answers reused about a second),
 * and the choice of upstream for a request. */
#ifndef PS_UPSTREAM_H
#define PS_UPSTREAM_H

#include <netinet/in.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "buf.h"
#include "deadline.h"
#include "metrics.h"
#include "resolve.h"
#include "sock.h"

/* One upstream address as the config names it; workers read it without
 * locks. A name is looked up by each worker when it dials (up_dial), never
 * here: the address it stands for may change while psproxy runs. A reload
 * that names the same upstream again shares this object, so its health and
 * its workers' pools carry over; it lives while a table or a pool holds it. */
typedef struct up_target {
    atomic_int refs;
    const char *hostport;
    const char *host, *port;
    int literal; /* host is an IP address: literal_addr, never looked up */
    struct sockaddr_storage literal_addr;
    /* health, shared by every worker without locks: the active check's
     * verdict (control loop) and passive failures (any worker) */
    atomic_int active_down;
    atomic_llong passive_until; /* up_now_ms() until which it is out */
    atomic_llong fail_window;   /* start of the window counting failures */
    atomic_int passive_fails;
    /* idle pooled connections to it in every worker, for the caps
     * (keepalive_idle_conns...) and /metrics */
    atomic_int idle;
} up_target_t;

/* A monotonic clock in ms, the same in every thread. */
int64_t up_now_ms(void);

/* A failure seen by a request (refused, reset, bad status, too slow):
 * IMMEDIATE takes the target out at once for fail_duration, else it counts
 * towards max_fails within fail_duration. WHY is logged when it goes out. */
void up_target_failed(up_target_t *t, const cfg_proxy_t *p, int immediate, const char *why);
/* The same at a given up_now_ms() (tests), and whether T is out at NOW. */
void up_target_failed_at(up_target_t *t, const cfg_proxy_t *p, int immediate, const char *why,
                         int64_t now);
int up_target_out_at(const up_target_t *t, int64_t now);

/* The upstreams of one config generation. Refcounted: the server, each
 * worker, each connection accepted under it and the health checks hold it;
 * the last to let go frees it (from any thread). */
typedef struct up_targets {
    atomic_int refs;
    up_target_t **items;
    /* per item: the first reverse_proxy with health_uri for it, in the
     * config that made the table (valid while that config lives) */
    const cfg_proxy_t **checks;
    size_t n;
} up_targets_t;

/* The upstreams named in CFG, each once, with one reference. One PREV (the
 * table being replaced, or NULL) names too is the same object: health and
 * pools carry over. Nothing is looked up (IP literals are parsed): a name
 * that does not resolve yet is no error, as in Caddy; dials to it fail
 * (502) until it does. */
up_targets_t *up_targets_new(const cfg_t *cfg, const up_targets_t *prev);
up_targets_t *up_targets_ref(up_targets_t *t);
void up_targets_unref(up_targets_t *t);
/* Tables and targets alive in the process (/metrics: old generations let go). */
long up_targets_live(void);
long up_target_objects_live(void);

enum up_state {
    UP_S_RESOLVING,  /* no socket: waiting for the pool's lookup of the name,
                      * or about to report that it does not resolve */
    UP_S_CONNECTING, /* dialing one of the pool's addresses for the name */
    UP_S_ACTIVE,     /* serving one request for its owner */
    UP_S_IDLE,       /* in the pool; any byte or EOF closes it */
    UP_S_CLOSING,    /* uv_close called */
};

typedef struct up_conn up_conn_t;
typedef struct up_pool up_pool_t;

/* A worker's upstream side: its pools, and what they borrow from the
 * worker (loop, buffers, stop flag). One per worker, used by its thread
 * only. */
typedef struct up_pools {
    /* read-only, set by up_pools_init */
    uv_loop_t *loop;
    deadline_queue_t *deadlines; /* the connections' clocks */
    buf_pool_t *wreqs;      /* write requests, for writes that must queue */
    buf_pool_t *bufs;       /* upstream reads */
    buf_pool_t *tables;     /* response header tables */
    const atomic_int *stop; /* the worker stops: released connections close */
    metrics_t *metrics;     /* the worker's: dials, reuses, closes per upstream */
    int index;              /* the worker's, for logs */
    /* private */
    up_pool_t *first;
    uint32_t rand_state;
} up_pools_t;

void up_pools_init(up_pools_t *ps, uv_loop_t *loop, deadline_queue_t *deadlines,
                   buf_pool_t *wreqs, buf_pool_t *bufs, buf_pool_t *tables,
                   const atomic_int *stop, metrics_t *metrics, int index);

/* A pseudo-random number for load balancing, per worker. */
uint32_t up_rand(up_pools_t *ps);

typedef void (*up_connect_cb)(up_conn_t *u, int status);
/* Bytes arrived in rbuf[rlen - NREAD, rlen), or NREAD < 0 is EOF/error. */
typedef void (*up_read_cb)(up_conn_t *u, ssize_t nread);

struct up_pool {
    /* read-only */
    up_target_t *target; /* referenced */
    up_pools_t *set;     /* the worker's pools, this one among them */
    struct metrics_upstream *stats; /* in the worker's metrics */
    /* private */
    up_conn_t *idle; /* most recently used first: warm connections win */
    int n_idle;
    int n_active;  /* resolving, connecting or serving: for least_conn */
    int n_closing; /* closed, their handles not yet: the pool must outlive them */
    struct up_pool *next;
    /* the name's addresses for this worker (a cache per worker: no lock) */
    res_answer_t answer;
    uv_getaddrinfo_t lookup; /* in flight while looking_up; the pool outlives it */
    unsigned looking_up : 1;
    up_conn_t *waiting; /* UP_S_RESOLVING connections waiting for the lookup */
};

struct up_conn {
    uv_tcp_t tcp;
    deadline_t timer;
    uv_connect_t creq;
    sock_wreq_t wr; /* the one write to the upstream queued */
    uv_shutdown_t sreq;
    /* read-only */
    up_pool_t *pool;
    int state; /* enum up_state */
    uint64_t id;
    /* public: the owner's while UP_S_ACTIVE */
    void *owner;
    http_head_t resp;
    char *rbuf;
    size_t rstart, rlen; /* [rstart, rlen) read but not yet parsed */
    char *body;          /* body bytes of this parse pass, compacted in place */
    size_t body_len;
    unsigned reused : 1;        /* it served a request before: a failure may be a stale conn */
    unsigned write_pending : 1; /* a write is queued (wr) */
    unsigned eof : 1;           /* the upstream closed its side */
    unsigned opened : 1;        /* connected once: its close is counted */
    /* private */
    up_conn_t *next_idle, *prev_idle;
    up_conn_t *next_wait, *prev_wait; /* in pool->waiting */
    up_connect_cb on_connect;
    up_read_cb on_read; /* the owner's, while UP_S_ACTIVE */
    int addr_idx;       /* into pool->answer, while it has gen */
    uint32_t gen;       /* the pool's answer.gen its address came from */
    int pending_closes;
    uint64_t dial_timeout;
    int dial_err;           /* the failure to report, or a connect that failed on a cached answer */
    unsigned waits : 1;     /* in pool->waiting */
    unsigned looked_up : 1; /* it waited for a lookup: a failed dial is final */
    unsigned relook : 1;    /* its socket closes before it looks the name up again */
};

/* The worker's pool for TARGET, created on first use. */
up_pool_t *up_pool_get(up_pools_t *ps, up_target_t *target);
up_target_t *up_target_find(up_targets_t *t, const char *hostport);

/* An idle pooled connection, now UP_S_ACTIVE and owned by OWNER, or NULL.
 * One to an address the name no longer has is closed, not handed out; an
 * expired answer is looked up again in the background (nobody waits). */
up_conn_t *up_take(up_pool_t *p, void *owner);

/* Dials a new connection for OWNER; CB reports 0 or the error (a name
 * that does not resolve: UV_EAI_*), always from the loop, never from
 * inside this call. With a fresh answer for the name it connects at once;
 * else it waits (UP_S_RESOLVING) for a lookup in libuv's thread pool,
 * within TIMEOUT_MS like the connect. When every address of a cached
 * answer fails, the answer is dropped and the name looked up once more
 * before CB hears of it. Returns the connection. */
up_conn_t *up_dial(up_pool_t *p, void *owner, uint64_t timeout_ms, up_connect_cb cb);

/* Reads into u->rbuf for the owner while the buffer has room; the socket
 * keeps reading across idle and active so reuse costs no epoll_ctl. */
void up_update_reading(up_conn_t *u);

/* Returns a healthy connection, whose exchange for proxy P (of table T)
 * ended cleanly, to the pool for IDLE_MS; or closes it when that is 0 or
 * P's caps (keepalive_idle_conns, _per_host: idle connections in every
 * worker) have enough. Without a cap the pool keeps every connection
 * released to it, most recently used first, each until it idled IDLE_MS:
 * what the peak in use over the last IDLE_MS needed, no more, so a steady
 * load never redials. The caller no longer owns it. */
void up_release(up_conn_t *u, const cfg_proxy_t *p, up_targets_t *t, uint64_t idle_ms);

/* Closes U in any state, for WHY (enum metrics_close, counted when it had
 * connected); the caller no longer owns it. */
void up_close(up_conn_t *u, int why);

/* Closes every pooled idle connection of the worker (at stop), and cancels
 * lookups nobody waits for. */
void up_pools_close_idle(up_pools_t *ps);
/* Frees the pools of upstreams CURRENT (the worker's table) no longer
 * names once nothing uses them (their idle connections are closed now).
 * Run after a reload and from the worker's trim timer. */
void up_pools_retire(up_pools_t *ps, const up_targets_t *current);
void up_pools_free(up_pools_t *ps);

/* What up_select picked from: Caddy, which neither fails open nor probes,
 * would have tried only a healthy one, so a failed try of the others does
 * not decide the answer (proxy.c). */
enum up_pick {
    UP_PICK_HEALTHY = 0, /* passes every check */
    UP_PICK_FAIL_OPEN,   /* only the active check rejects it */
    UP_PICK_PASSIVE,     /* a passive check took it out: the dial is a probe */
    UP_PICK_CLOSED,      /* nothing: health_fail_closed refused (-1 returned) */
};

/* Picks an upstream index from P not in TRIED (bit i = index i tried), by
 * the policy, among the healthy ones; when none is, fail open to those
 * only the active check rejects (unless health_fail_closed), then to those
 * passive checks took out (a dial is the best probe then). -1 when none is
 * left. *PICK says which (enum up_pick). CLIENT_IP feeds ip_hash. */
int up_select(up_pools_t *ps, const cfg_proxy_t *p, up_targets_t *t, uint64_t tried,
              const char *client_ip, int *pick);

#endif
