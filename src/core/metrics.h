/* Counters for /metrics, one set per worker (written by its worker only;
 * the admin handler adds them up when scraped). */
#ifndef PS_METRICS_H
#define PS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define METRICS_BUCKETS 12
#define METRICS_SERIES 128
#define METRICS_NAME 64 /* an upstream slot's name, with its NUL */

/* requests_total{site, code, upstream}: a few series, found by name */
struct metrics_series {
    char site[64];
    char upstream[64];
    int code_class; /* 1..5 */
    uint64_t count;
};

/* Why a connection to an upstream closed (closes_total{reason}). */
enum metrics_close {
    METRICS_CLOSE_IDLE_TIMEOUT,   /* idle for its keep-alive, or the upstream's Keep-Alive timeout */
    METRICS_CLOSE_UPSTREAM,       /* the upstream closed it while idle, or as it was reused */
    METRICS_CLOSE_POOL_FULL,      /* keepalive_idle_conns(_per_host) had enough idle */
    METRICS_CLOSE_NOT_REUSABLE,   /* the exchange did not end cleanly framed with keep-alive */
    METRICS_CLOSE_FAILED,         /* an error or timeout on it, or its request was abandoned */
    METRICS_CLOSE_RETIRED,        /* a reload or stop, or its address left the name's answer */
    METRICS_CLOSES
};
extern const char *const metrics_close_names[METRICS_CLOSES];

/* One upstream's connection counters in one worker (the pools' churn).
 * Written by that worker only: metrics_bump. */
struct metrics_upstream {
    char name[METRICS_NAME]; /* its hostport; set before the slot is counted in n_upstreams */
    atomic_ullong dials;       /* connections opened */
    atomic_ullong dial_errors; /* dials that failed */
    atomic_ullong reuses;      /* requests sent on a pooled connection */
    atomic_ullong closes[METRICS_CLOSES];
};

#define METRICS_UPSTREAMS 64

/* One worker's counters. The atomics are written by their worker only and
 * read by a scrape on the control thread, all relaxed (metrics.c,
 * exchange/conn.c): each is a count on its own, publishes no other data,
 * and a scrape may see one a moment ahead of another. */
typedef struct metrics {
    uv_mutex_t lock; /* the series table: the worker adds, the scraper reads */
    struct metrics_series series[METRICS_SERIES];
    size_t n_series;
    atomic_ullong buckets[METRICS_BUCKETS]; /* request duration, le = metrics_le[i] */
    atomic_ullong duration_sum_us;
    atomic_ullong duration_count;
    atomic_llong open_conns;
    atomic_ullong tls_handshakes;
    atomic_ullong tls_failures;
    atomic_ullong requests_h1; /* by protocol */
    atomic_ullong requests_h2;
    atomic_ullong h2_conns;    /* connections that chose h2 */
    /* upstream slots, added by the worker and never removed; a scrape reads
     * the first n_upstreams (acquire: their names are written before) */
    struct metrics_upstream upstreams[METRICS_UPSTREAMS];
    atomic_size_t n_upstreams;
} metrics_t;

extern const double metrics_le[METRICS_BUCKETS]; /* seconds; the last is +Inf */

void metrics_init(metrics_t *m);
void metrics_dispose(metrics_t *m);
/* One request answered: STATUS to a request for SITE (a host), served by
 * UPSTREAM (NULL: answered here), in DURATION_US, over HTTP/2 when H2. */
void metrics_request(metrics_t *m, const char *site, int status, const char *upstream,
                     uint64_t duration_us, int h2);

/* The slot for upstream NAME, added on first use (by M's worker only);
 * past METRICS_UPSTREAMS the last one counts them all as "other". */
struct metrics_upstream *metrics_upstream(metrics_t *m, const char *name);

/* Adds one to a counter only its worker writes: a plain load and store,
 * no locked instruction on the hot path; a scrape reads it relaxed. */
static inline void metrics_bump(atomic_ullong *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

#endif
