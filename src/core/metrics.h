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

/* requests_total{site, code, upstream}: a few series, found by name */
struct metrics_series {
    char site[64];
    char upstream[64];
    int code_class; /* 1..5 */
    uint64_t count;
};

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
} metrics_t;

extern const double metrics_le[METRICS_BUCKETS]; /* seconds; the last is +Inf */

void metrics_init(metrics_t *m);
void metrics_dispose(metrics_t *m);
/* One request answered: STATUS to a request for SITE (a host), served by
 * UPSTREAM (NULL: answered here), in DURATION_US, over HTTP/2 when H2. */
void metrics_request(metrics_t *m, const char *site, int status, const char *upstream,
                     uint64_t duration_us, int h2);

#endif
