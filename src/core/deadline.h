/* Timeouts for connections, exchanges and upstream connections, kept by
 * one queue per loop: a binary heap of small nodes under one libuv timer,
 * not a 152-byte uv_timer_t each (the lazy timers of nginx and HAProxy).
 *
 * The hot path re-arms a connection's clock several times per request
 * (idle, head, write, each upstream wait), and almost every time the new
 * deadline is later than the one running. A deadline then only records
 * the new due time and stays where it sits in the heap: when its place
 * comes up early, it moves on to the rest. Stopping only clears the due
 * time. So heap work happens when a deadline moves earlier, expires or
 * closes, not per request. Not thread-safe: one loop. */
#ifndef PS_DEADLINE_H
#define PS_DEADLINE_H

#include <stdint.h>
#include <uv.h>

typedef struct deadline deadline_t;
typedef struct deadline_queue deadline_queue_t;
typedef void (*deadline_cb)(deadline_t *d);

struct deadline {
    deadline_queue_t *q;
    void *data;     /* the owner's */
    deadline_cb cb; /* called once DUE is reached; closing: the closed callback */
    uint64_t due;   /* loop time it expires at; 0: not armed */
    union {
        uint64_t key;     /* in the heap: where it sits (<= due while armed) */
        deadline_t *next; /* closing: the next one to be told */
    } u;
    uint32_t slot; /* 1 + its index in the heap; 0: not in it */
};

struct deadline_queue {
    uv_loop_t *loop;
    uv_timer_t timer;  /* runs for the heap's first key */
    uv_idle_t closer;  /* tells the closed callbacks, from the loop */
    deadline_t **heap; /* a binary min-heap by u.key */
    uint32_t n, cap;
    uint64_t timer_at; /* loop time the timer fires; 0: it is not running */
    deadline_t *closed, **closed_tail; /* closed, their callbacks still to run */
    unsigned finishing : 1; /* deadline_queue_close: no more deadlines */
};

void deadline_queue_init(uv_loop_t *loop, deadline_queue_t *q);

/* Closes the queue's handles once the closed callbacks still due have
 * run; no deadline of Q may be used after. */
void deadline_queue_close(deadline_queue_t *q);

void deadline_init(deadline_queue_t *q, deadline_t *d, void *data);

/* Arms D to call CB MS milliseconds from the loop's now, replacing any
 * deadline it had. */
void deadline_start(deadline_t *d, deadline_cb cb, uint64_t ms);

/* Disarms D: CB is not called until it is started again. */
static inline void deadline_stop(deadline_t *d)
{
    d->due = 0;
}

static inline int deadline_armed(const deadline_t *d)
{
    return d->due != 0;
}

/* Takes D out of its queue; CLOSED (if not NULL) gets D from the loop
 * soon after, never from inside this call, as uv_close's callback would:
 * the owner may free D's memory there. */
void deadline_close(deadline_t *d, deadline_cb closed);

#endif
