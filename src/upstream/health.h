/* Active health checks: on the control loop, a GET of health_uri for every
 * upstream of a reverse_proxy that names one, every health_interval. The
 * verdict goes to the shared target (an atomic), which the workers read. */
#ifndef PS_HEALTH_H
#define PS_HEALTH_H

#include <uv.h>

#include "config.h"
#include "upstream.h"

typedef struct health health_t;

/* Consecutive results of one upstream's checks. */
typedef struct health_counts {
    int passes, fails;
} health_counts_t;

/* Counts one result (PASSED) and returns the verdict: 1 down, 0 up, from
 * DOWN (the verdict so far) and P's health_passes / health_fails. */
int health_verdict(health_counts_t *c, int passed, int down, const cfg_proxy_t *p);

/* Starts the checks for the targets of CFG on LOOP; NULL when there are none
 * (or libcurl cannot start, which is logged). */
health_t *health_start(uv_loop_t *loop, const cfg_t *cfg, up_targets_t *targets);
/* Stops them; memory goes once libuv has closed the timers. */
void health_stop(health_t *h);

#endif
