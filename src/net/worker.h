/* Workers: one thread and event loop each, with their own SO_REUSEPORT
 * listeners, client connections and upstream pools. A worker knows its
 * connections only through the ops the layer above hands it (exchange/
 * conn.c): it accepts, drains and stops, and never looks inside one. */
#ifndef PS_WORKER_H
#define PS_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "config.h"
#include "deadline.h"
#include "metrics.h"
#include "tls.h"
#include "upstream.h"

typedef struct worker worker_t;
struct conn;
struct alog;

typedef struct listener {
    uv_tcp_t tcp;
    worker_t *w;
    const cfg_listener_t *cl;
    int paused; /* at the connection limit: an accepted connection waits in
                 * libuv, which accepts no more here until we take it */
} listener_t;

/* What the connection layer does for a worker. */
typedef struct worker_conn_ops {
    /* Takes one connection from L's backlog; one it cannot serve is closed
     * (worker_conn_closed follows either way once its handles close). */
    void (*accept)(listener_t *l);
    /* Stopping: idle connections close now, busy ones after their response. */
    void (*drain)(worker_t *w);
    /* The grace period is over: every connection closes now. */
    void (*close_all)(worker_t *w);
    /* A new config arrived: connections that must learn of it are told
     * (HTTP/2 sessions send GOAWAY); the others take it at their next one. */
    void (*reloaded)(worker_t *w);
    /* Sizes the pools the connection layer keeps in W (the worker cannot
     * see their types); each keeps at most MAX_FREE spare. */
    void (*init_pools)(worker_t *w, size_t max_free);
} worker_conn_ops_t;

/* What one config generation gives a worker. The references (cfg, targets)
 * go with it. */
typedef struct worker_gen {
    cfg_t *cfg;
    up_targets_t *targets;
    tls_server_t *tls; /* NULL without HTTPS listeners */
    unsigned max_conns; /* this worker's share of max_connections */
} worker_gen_t;

struct worker {
    /* read-only: what the connections of this worker share */
    uv_loop_t loop;
    deadline_queue_t deadlines; /* the clocks of its connections, exchanges, upstreams */
    int index;
    cfg_t *cfg;            /* the snapshot new connections get */
    up_targets_t *targets; /* its upstreams (referenced) */
    tls_server_t *tls;     /* NULL without HTTPS listeners */
    const struct alog *alog;
    const worker_conn_ops_t *ops;
    buf_pool_t bufs;
    buf_pool_t tables; /* header tables for heads being parsed */
    /* the connection layer's: an HTTP/2 stream's state (h2.c) and its
     * exchange (stream.c), one each per request; pooled, as a session
     * opens them ten at a time, more than malloc's per-thread cache keeps */
    buf_pool_t h2_streams, stream_xs;
    /* the exchange layer's: the state of a request in flight (xreq_t), so
     * that an idle connection does not carry it */
    buf_pool_t xreqs;
    /* write requests, for the writes a socket pushes back (sock.h) */
    buf_pool_t wreqs;
    metrics_t metrics;
    up_pools_t up;     /* one pool per upstream target */
    uv_timer_t tls_sweep; /* the connection layer's periodic timer */
    int draining;      /* stopping: no new connections, none kept alive */
    int finished;      /* its last handles are closing: start no timer */
    /* the connection layer's: its list of open connections (NULL when none
     * is left, which the worker checks while draining) and their ids */
    struct conn *conns;
    uint64_t next_conn_id;
    /* private */
    uv_thread_t thread;
    uv_async_t wakeup; /* the control thread asks: reload, or stop */
    uv_timer_t grace;  /* a graceful stop's deadline */
    uv_timer_t trim;   /* gives a burst's pooled buffers back */
    listener_t **listeners; /* each its own allocation: a reload adds and removes */
    size_t n_listeners;
    _Atomic(worker_gen_t *) reload; /* a new config for the worker to take */
    unsigned n_conns;   /* client connections open, closing ones included */
    unsigned max_conns;
    uint64_t accept_warned_at; /* loop time of the last accept warning */
    atomic_int stop;
};

/* Sets W up on its own loop with GEN (whose references it takes), writing
 * access logs to ALOG and handing connections to OPS. No socket yet. */
void worker_init(worker_t *w, int index, worker_gen_t gen, const struct alog *alog,
                 const worker_conn_ops_t *ops);

/* Opens every listener of the worker's config. Returns 0, or the error of
 * the first that could not be bound (logged with its port). */
int worker_listen(worker_t *w);

/* Runs the worker's loop on a thread of its own. 0, or a libuv error. */
int worker_start(worker_t *w);

/* From any thread: W takes GEN (its references go with it) on its own
 * thread. Of two reloads before it wakes, the last wins. */
void worker_reload(worker_t *w, worker_gen_t gen);

/* From any thread: a graceful stop. No new connections; idle ones close;
 * requests in flight finish until grace_period, then everything closes. */
void worker_stop(worker_t *w);

/* After worker_stop: waits for the thread, then frees what W holds. */
void worker_join(worker_t *w);

/* A worker whose loop ended on the caller's thread (tests run it there):
 * frees what W holds. */
void worker_dispose(worker_t *w);

/* A worker whose thread never ran: stops it on this thread and frees it. */
void worker_abort(worker_t *w);

/* A client connection's handles have closed (its descriptor is free):
 * a listener paused at the connection limit may accept again. */
void worker_conn_closed(worker_t *w);

/* The worker's last connection closed while it drains: let it end. */
void worker_drained(worker_t *w);

/* The I/O buffer size for CFG: a whole head fits, with room to add fields. */
size_t worker_buffer_size(const cfg_t *cfg);

#endif
