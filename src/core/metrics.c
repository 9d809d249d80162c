/* Per-worker counters. The series table takes a lock that only a scrape
 * ever contends; the rest are relaxed atomics (why: metrics.h). */
#include "metrics.h"

#include <stdio.h>
#include <string.h>

const double metrics_le[METRICS_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,   1,    2.5,   10,   -1};

const char *const metrics_close_names[METRICS_CLOSES] = {
    [METRICS_CLOSE_IDLE_TIMEOUT] = "idle_timeout", [METRICS_CLOSE_UPSTREAM] = "upstream_closed",
    [METRICS_CLOSE_POOL_FULL] = "pool_full",       [METRICS_CLOSE_NOT_REUSABLE] = "not_reusable",
    [METRICS_CLOSE_FAILED] = "failed",             [METRICS_CLOSE_RETIRED] = "retired",
};

void metrics_init(metrics_t *m)
{
    memset(m, 0, sizeof(*m));
    uv_mutex_init(&m->lock);
}

void metrics_dispose(metrics_t *m)
{
    uv_mutex_destroy(&m->lock);
}

void metrics_request(metrics_t *m, const char *site, int status, const char *upstream,
                     uint64_t duration_us, int h2)
{
    atomic_fetch_add_explicit(h2 ? &m->requests_h2 : &m->requests_h1, 1, memory_order_relaxed);
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    if (site == NULL)
        site = "";
    if (upstream == NULL)
        upstream = "";
    uv_mutex_lock(&m->lock);
    size_t i = 0;
    while (i < m->n_series &&
           !(m->series[i].code_class == cls && strcmp(m->series[i].site, site) == 0 &&
             strcmp(m->series[i].upstream, upstream) == 0))
        i++;
    if (i == m->n_series && m->n_series < METRICS_SERIES) {
        struct metrics_series *s = &m->series[m->n_series++];
        snprintf(s->site, sizeof(s->site), "%s", site);
        snprintf(s->upstream, sizeof(s->upstream), "%s", upstream);
        s->code_class = cls;
    }
    if (i < m->n_series)
        m->series[i].count++;
    uv_mutex_unlock(&m->lock);
    double secs = (double)duration_us / 1e6;
    for (int b = 0; b < METRICS_BUCKETS; b++) {
        if (metrics_le[b] < 0 || secs <= metrics_le[b]) {
            atomic_fetch_add_explicit(&m->buckets[b], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&m->duration_sum_us, duration_us, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->duration_count, 1, memory_order_relaxed);
}

struct metrics_upstream *metrics_upstream(metrics_t *m, const char *name)
{
    /* only this worker adds, so its own read of the count needs no order */
    size_t n = atomic_load_explicit(&m->n_upstreams, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (strncmp(m->upstreams[i].name, name, sizeof(m->upstreams[i].name) - 1) == 0)
            return &m->upstreams[i];
    if (n == METRICS_UPSTREAMS)
        return &m->upstreams[n - 1];
    struct metrics_upstream *u = &m->upstreams[n];
    snprintf(u->name, sizeof(u->name), "%s", n + 1 == METRICS_UPSTREAMS ? "other" : name);
    /* release: a scrape that sees the new count sees the name */
    atomic_store_explicit(&m->n_upstreams, n + 1, memory_order_release);
    return u;
}
