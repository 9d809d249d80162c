/* Deadlines (deadline.h): a libuv timer that fires no later than the due
 * time and re-arms itself when it fires early. */
#include "deadline.h"

#include "common.h"

static void on_fire(uv_timer_t *t)
{
    deadline_t *d = container_of(t, deadline_t, timer);
    if (d->due == 0)
        return; /* stopped since: the timer just lapses */
    uint64_t now = uv_now(t->loop);
    if (now < d->due) {
        /* moved later since it was set: run again for the rest */
        uv_timer_start(t, on_fire, d->due - now, 0);
        return;
    }
    d->due = 0;
    d->cb(t);
}

void deadline_init(uv_loop_t *loop, deadline_t *d, void *data)
{
    uv_timer_init(loop, &d->timer);
    d->timer.data = data;
    d->cb = NULL;
    d->due = 0;
}

void deadline_start(deadline_t *d, uv_timer_cb cb, uint64_t ms)
{
    uint64_t now = uv_now(d->timer.loop);
    d->cb = cb;
    /* due is never 0 while armed: a zero-length deadline at loop time 0
     * is due at 1 (libuv fires it on the next iteration all the same) */
    d->due = now + ms != 0 ? now + ms : 1;
    /* where the libuv timer runs is its own to say (uv_timer_get_due_in),
     * not a copy kept here */
    if (uv_is_active((uv_handle_t *)&d->timer) && uv_timer_get_due_in(&d->timer) <= ms)
        return; /* it fires first and carries on from there */
    uv_timer_start(&d->timer, on_fire, ms, 0);
}

void deadline_close(deadline_t *d, uv_close_cb close_cb)
{
    d->due = 0;
    uv_close((uv_handle_t *)&d->timer, close_cb);
}
