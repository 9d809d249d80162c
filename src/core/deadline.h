/* A timeout that moves without touching libuv's timer heap. The hot path
 * re-arms a connection's clock several times per request (idle, head,
 * write, each upstream wait), and almost every time the new deadline is
 * later than the one running. A deadline keeps the libuv timer where it
 * is and only records the new due time: when the timer fires before it,
 * it re-arms itself for the rest. Stopping only clears the due time. So
 * heap work happens when a deadline moves earlier or actually expires,
 * not per request (the lazy timers of nginx and HAProxy). Not
 * thread-safe: one loop. */
#ifndef PS_DEADLINE_H
#define PS_DEADLINE_H

#include <stdint.h>
#include <uv.h>

typedef struct deadline {
    uv_timer_t timer; /* .data is the owner's, as on a plain timer */
    uv_timer_cb cb;   /* called with &timer once DUE is reached */
    uint64_t due;     /* loop time it expires at; 0: not armed */
} deadline_t;

void deadline_init(uv_loop_t *loop, deadline_t *d, void *data);

/* Arms D to call CB MS milliseconds from the loop's now, replacing any
 * deadline it had. */
void deadline_start(deadline_t *d, uv_timer_cb cb, uint64_t ms);

/* Disarms D: CB is not called until it is started again. */
static inline void deadline_stop(deadline_t *d)
{
    d->due = 0;
}

static inline int deadline_armed(const deadline_t *d)
{
    return d->due != 0;
}

/* Closes the handle: CLOSE_CB gets &d->timer (whose .data the owner may
 * set first), as uv_close would. */
void deadline_close(deadline_t *d, uv_close_cb close_cb);

#endif
