/* Deadlines (deadline.h): a heap of due times under one libuv timer that
 * runs for the earliest; one that comes up early moves on to its due time. */
#include "deadline.h"

#include <stdlib.h>

#include "common.h"

/* ---- the heap ----------------------------------------------------------- */

static void place(deadline_queue_t *q, deadline_t *d, uint32_t i)
{
    q->heap[i] = d;
    d->slot = i + 1;
}

static void sift_up(deadline_queue_t *q, uint32_t i)
{
    deadline_t *d = q->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (q->heap[parent]->u.key <= d->u.key)
            break;
        place(q, q->heap[parent], i);
        i = parent;
    }
    place(q, d, i);
}

static void sift_down(deadline_queue_t *q, uint32_t i)
{
    deadline_t *d = q->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= q->n)
            break;
        if (child + 1 < q->n && q->heap[child + 1]->u.key < q->heap[child]->u.key)
            child++;
        if (d->u.key <= q->heap[child]->u.key)
            break;
        place(q, q->heap[child], i);
        i = child;
    }
    place(q, d, i);
}

static void heap_insert(deadline_queue_t *q, deadline_t *d)
{
    if (q->n == q->cap) {
        uint32_t cap = q->cap != 0 ? q->cap * 2 : 64;
        deadline_t **heap = realloc(q->heap, cap * sizeof(*heap));
        if (heap == NULL)
            abort();
        q->heap = heap;
        q->cap = cap;
    }
    place(q, d, q->n++);
    sift_up(q, q->n - 1);
}

static void heap_remove(deadline_queue_t *q, deadline_t *d)
{
    uint32_t i = d->slot - 1;
    d->slot = 0;
    deadline_t *last = q->heap[--q->n];
    if (i == q->n)
        return; /* it was the last */
    place(q, last, i);
    if (i > 0 && q->heap[(i - 1) / 2]->u.key > last->u.key)
        sift_up(q, i);
    else
        sift_down(q, i);
}

/* ---- the timer ---------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* The timer runs for the heap's first key, or not at all. */
static void arm(deadline_queue_t *q)
{
    if (q->n == 0) {
        if (q->timer_at != 0)
            uv_timer_stop(&q->timer);
        q->timer_at = 0;
        return;
    }
    uint64_t at = q->heap[0]->u.key;
    if (q->timer_at != 0 && q->timer_at <= at)
        return; /* it fires first and carries on from there */
    uint64_t now = uv_now(q->loop);
    q->timer_at = at;
    uv_timer_start(&q->timer, on_timer, at > now ? at - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    deadline_queue_t *q = t->data;
    q->timer_at = 0;
    uint64_t now = uv_now(q->loop);
    while (q->n > 0 && q->heap[0]->u.key <= now) {
        deadline_t *d = q->heap[0];
        if (d->due == 0) {
            heap_remove(q, d); /* stopped since: it just leaves */
            continue;
        }
        if (d->due != d->u.key) {
            /* moved later since it was placed: to its own place, so that
             * deadlines overdue together (a late timer) fire in due order */
            d->u.key = d->due;
            sift_down(q, 0);
            continue;
        }
        heap_remove(q, d);
        d->due = 0;
        d->cb(d); /* may start, stop or close any deadline, D too */
    }
    arm(q);
}

/* ---- closing ------------------------------------------------------------ */

static void finish(deadline_queue_t *q)
{
    free(q->heap);
    q->heap = NULL;
    q->n = q->cap = 0;
    uv_close((uv_handle_t *)&q->timer, NULL);
    uv_close((uv_handle_t *)&q->closer, NULL);
}

static void on_closer(uv_idle_t *h)
{
    deadline_queue_t *q = h->data;
    /* what these callbacks close is told at the next turn, as with uv_close */
    deadline_t *d = q->closed;
    q->closed = NULL;
    q->closed_tail = &q->closed;
    uv_idle_stop(h);
    while (d != NULL) {
        deadline_t *next = d->u.next;
        d->cb(d); /* may free D */
        d = next;
    }
    if (q->finishing && q->closed == NULL)
        finish(q);
}

void deadline_close(deadline_t *d, deadline_cb closed)
{
    deadline_queue_t *q = d->q;
    if (d->slot != 0) {
        heap_remove(q, d);
        if (q->n == 0)
            arm(q); /* nothing left to run for: the loop may end */
    }
    d->due = 0;
    if (closed == NULL)
        return;
    d->cb = closed;
    d->u.next = NULL;
    *q->closed_tail = d;
    q->closed_tail = &d->u.next;
    if (!uv_is_active((uv_handle_t *)&q->closer))
        uv_idle_start(&q->closer, on_closer);
}

/* ---- the API ------------------------------------------------------------ */

void deadline_queue_init(uv_loop_t *loop, deadline_queue_t *q)
{
    *q = (deadline_queue_t){.loop = loop};
    q->closed_tail = &q->closed;
    uv_timer_init(loop, &q->timer);
    q->timer.data = q;
    uv_idle_init(loop, &q->closer);
    q->closer.data = q;
}

void deadline_queue_close(deadline_queue_t *q)
{
    q->finishing = 1;
    if (q->closed == NULL)
        finish(q);
}

void deadline_init(deadline_queue_t *q, deadline_t *d, void *data)
{
    *d = (deadline_t){.q = q, .data = data};
}

void deadline_start(deadline_t *d, deadline_cb cb, uint64_t ms)
{
    deadline_queue_t *q = d->q;
    uint64_t now = uv_now(q->loop);
    d->cb = cb;
    /* due is never 0 while armed: a zero-length deadline at loop time 0
     * is due at 1 (the timer runs on the next iteration all the same) */
    d->due = now + ms != 0 ? now + ms : 1;
    if (d->slot != 0) {
        if (d->u.key <= d->due)
            return; /* its place comes up first and it moves on from there */
        d->u.key = d->due;
        sift_up(q, d->slot - 1);
    } else {
        d->u.key = d->due;
        heap_insert(q, d);
    }
    arm(q);
}
