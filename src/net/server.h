/* Workers and listeners: one event loop per thread, each with its own
 * SO_REUSEPORT listening sockets, connections and upstream pools. */
#ifndef PS_SERVER_H
#define PS_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "access_log.h"
#include "buf.h"
#include "certs.h"
#include "tls.h"
#include "config.h"
#include "metrics.h"

typedef struct conn conn_t;
typedef struct up_pool up_pool_t;
typedef struct up_targets up_targets_t;

typedef struct listener {
    uv_tcp_t tcp;
    struct worker *w;
    const cfg_listener_t *cl;
    int paused; /* at the connection limit: an accepted connection waits in
                 * libuv, which accepts no more here until we take it */
} listener_t;

typedef struct worker {
    /* private, owned by the worker thread once it runs */
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup; /* the control thread asks the worker to stop */
    uv_timer_t grace;  /* a graceful stop's deadline */
    uv_timer_t tls_sweep; /* frees quiet TLS connections' buffers (conn.c) */
    uv_timer_t trim;      /* gives a burst's pooled buffers back */
    int draining;      /* stopping: no new connections, none kept alive */
    int finished;      /* its last handles are closing */
    int index;
    cfg_t *cfg;        /* the snapshot new connections get */
    up_targets_t *targets; /* its upstreams (referenced) */
    const alog_t *alog;
    tls_server_t *tls; /* NULL without HTTPS listeners */
    buf_pool_t bufs;
    buf_pool_t tables; /* header tables for heads being parsed */
    metrics_t metrics;
    listener_t **listeners; /* each its own allocation: a reload adds and removes */
    size_t n_listeners;
    _Atomic(struct reload *) reload; /* a new config for the worker to take */
    conn_t *conns;     /* every open client connection, for shutdown */
    up_pool_t *pools;  /* one per upstream address */
    uint64_t next_conn_id;
    unsigned n_conns;   /* client connections open, closing ones included */
    unsigned max_conns; /* this worker's share of max_connections */
    uint64_t accept_warned_at; /* loop time of the last accept warning */
    uint32_t rand_state;
    atomic_int stop;
} worker_t;

struct reload {
    cfg_t *cfg;
    unsigned max_conns;
    up_targets_t *targets; /* referenced */
    tls_server_t *tls;
};

typedef struct srv {
    cfg_t *cfg;
    alog_t alog;
    certs_t *certs;
    tls_server_t *tls;
    struct acme *acme; /* NULL when no name is managed */
    struct health *health; /* active checks; NULL when none */
    void (*on_fatal)(void *arg, const char *why); /* the ACME setup cannot work: stop */
    void *fatal_arg;
    up_targets_t *targets;
    worker_t *workers;
    int n_workers;
} srv_t;

/* Binds every listener of CFG in every worker and starts the worker
 * threads. Returns 0, or an error after logging what could not be bound. */
int srv_start(srv_t *s, cfg_t *cfg);

/* SIGHUP: loads PATH again; a bad config is logged with file:line and the
 * running one stays. A good one is swapped in: new connections get it,
 * connections already open finish on theirs, unchanged listeners stay
 * open. Returns 0 when the new config serves. */
int srv_reload(srv_t *s, const char *path, uv_loop_t *loop);

/* Loads the manual certificates (tls CERT KEY) of CFG's HTTPS sites into
 * the store. Returns 0, or -1 after logging what failed: at start that
 * stops psproxy; on SIGHUP the certificates already served stay. */
int srv_load_certs(srv_t *s, const cfg_t *cfg);

/* Starts the control loop's services on LOOP: active health checks, and the
 * ACME client for the HTTPS names without a manual certificate. 0, or -1
 * after logging why. */
int srv_start_control(srv_t *s, uv_loop_t *loop);
/* The ACME settings of CFG, and the names ACME manages (HTTPS hosts of
 * sites without tls CERT KEY), at most MAX. */
struct acme_config;
void srv_acme_config(const cfg_t *cfg, struct acme_config *ac);
size_t srv_managed_names(const cfg_t *cfg, const char **names, size_t max);

/* Stops it; its handles close on LOOP. */
void srv_stop_control(srv_t *s);

/* Stops every worker (closing listeners and connections) and joins them. */
void srv_stop(srv_t *s);

/* A client connection's handles have closed (its descriptor is free):
 * a listener paused at the connection limit may accept again. */
void srv_conn_closed(worker_t *w);

/* The worker's last connection closed while it drains: let it end. */
void srv_worker_drained(worker_t *w);

/* A pseudo-random number for load balancing, per worker. */
uint32_t srv_rand(worker_t *w);

#endif
