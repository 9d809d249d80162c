/* Deadlines on a real loop: they fire once, at or after the due time,
 * however often they moved; moving later leaves the heap as it was;
 * stopping or closing means no call; a closed callback comes from the
 * loop, after the call that closed; many deadlines fire in due order. */
#include <stdlib.h>
#include <unistd.h>

#include "deadline.h"
#include "test.h"

static int fired;
static uint64_t fired_at;

static void on_due(deadline_t *d)
{
    fired++;
    fired_at = uv_now(d->q->loop);
}

static void setup(uv_loop_t *loop, deadline_queue_t *q, deadline_t *d)
{
    uv_loop_init(loop);
    deadline_queue_init(loop, q);
    deadline_init(q, d, NULL);
    fired = 0;
    fired_at = 0;
}

static void teardown(uv_loop_t *loop, deadline_queue_t *q, deadline_t *d)
{
    deadline_close(d, NULL);
    deadline_queue_close(q);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(loop), 0);
}

TEST(fires_once_when_due)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    setup(&loop, &q, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 30);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 30);
    CHECK(!deadline_armed(&d));
    teardown(&loop, &q, &d);
}

TEST(moved_later_keeps_its_place_and_fires_at_the_new_time)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    setup(&loop, &q, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 20);
    uint64_t key = d.u.key, timer_at = q.timer_at;
    deadline_start(&d, on_due, 80);
    CHECK(d.u.key == key);        /* no heap work */
    CHECK(q.timer_at == timer_at); /* nor timer work */
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 80);
    teardown(&loop, &q, &d);
}

TEST(moved_earlier_fires_at_the_earlier_time)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    setup(&loop, &q, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 5000);
    deadline_start(&d, on_due, 20);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 20);
    CHECK(fired_at < t0 + 5000);
    teardown(&loop, &q, &d);
}

TEST(stopped_never_fires)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    setup(&loop, &q, &d);
    deadline_start(&d, on_due, 20);
    deadline_stop(&d);
    CHECK(!deadline_armed(&d));
    uv_run(&loop, UV_RUN_DEFAULT); /* its place comes up without a call */
    CHECK_INT(fired, 0);
    CHECK_INT(d.slot, 0); /* and it left the heap */
    teardown(&loop, &q, &d);
}

TEST(stopped_then_started_fires_at_the_new_time_only)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    setup(&loop, &q, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 20);
    deadline_stop(&d);
    deadline_start(&d, on_due, 60);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 60);
    teardown(&loop, &q, &d);
}

static void on_due_again(deadline_t *d)
{
    on_due(d);
    if (fired < 3)
        deadline_start(d, on_due_again, 10);
}

TEST(restarted_from_its_own_callback)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    setup(&loop, &q, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due_again, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 3);
    CHECK(fired_at >= t0 + 30);
    teardown(&loop, &q, &d);
}

static int order[2], n_order;

static void on_first(deadline_t *d)
{
    (void)d;
    order[n_order++] = 1;
}

static void on_second(deadline_t *d)
{
    (void)d;
    order[n_order++] = 2;
}

/* A late timer finds both overdue: the one moved later (placed first,
 * due last) fires after the other, as their due times say. */
TEST(overdue_together_they_fire_in_due_order)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t a, b;
    uv_loop_init(&loop);
    deadline_queue_init(&loop, &q);
    deadline_init(&q, &a, NULL);
    deadline_init(&q, &b, NULL);
    n_order = 0;
    deadline_start(&a, on_second, 10);
    deadline_start(&b, on_first, 20);
    deadline_start(&a, on_second, 30); /* keeps its place at 10 */
    usleep(60 * 1000);                 /* the loop comes back late */
    uv_update_time(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(n_order, 2);
    CHECK_INT(order[0], 1);
    CHECK_INT(order[1], 2);
    deadline_close(&a, NULL);
    deadline_close(&b, NULL);
    deadline_queue_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
}

static int closed;
static int closing; /* deadline_close is on the stack */

static void on_closed(deadline_t *d)
{
    CHECK(d->data == &closed);
    CHECK_INT(closing, 0); /* from the loop, not from inside the close */
    closed++;
}

TEST(closed_never_fires_and_is_told_from_the_loop)
{
    uv_loop_t loop;
    deadline_queue_t q;
    deadline_t d;
    uv_loop_init(&loop);
    deadline_queue_init(&loop, &q);
    deadline_init(&q, &d, &closed);
    fired = closed = 0;
    deadline_start(&d, on_due, 10);
    closing = 1;
    deadline_close(&d, on_closed);
    closing = 0;
    CHECK_INT(closed, 0);
    uint64_t t0 = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 0);
    CHECK_INT(closed, 1);
    /* the last deadline gone, the timer stopped: the loop did not wait for it */
    CHECK(uv_now(&loop) < t0 + 10);
    deadline_queue_close(&q);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
}

/* Many deadlines, started, moved, stopped and closed at random: each
 * fires exactly when a model says, never before its due time, and in
 * the order of their due times. */
#define N_MANY 200

static deadline_t many[N_MANY];
static uint64_t model_due[N_MANY]; /* 0: not armed */
static int closed_many[N_MANY];
static int order_ok;
static uint64_t last_fired_due;
static int n_fired;

static void on_many(deadline_t *d)
{
    int i = (int)(d - many);
    uint64_t now = uv_now(d->q->loop);
    if (model_due[i] == 0 || now < model_due[i])
        order_ok = 0; /* not armed, or early */
    if (model_due[i] < last_fired_due)
        order_ok = 0;
    last_fired_due = model_due[i];
    model_due[i] = 0;
    n_fired++;
}

/* The heap's own invariant: each key at least its parent's, each slot
 * where its node is. */
static int heap_ok(const deadline_queue_t *q)
{
    for (uint32_t i = 0; i < q->n; i++) {
        if (q->heap[i]->slot != i + 1)
            return 0;
        if (i > 0 && q->heap[(i - 1) / 2]->u.key > q->heap[i]->u.key)
            return 0;
    }
    return 1;
}

static void on_many_closed(deadline_t *d)
{
    closed_many[d - many]++;
}

TEST(many_fire_as_a_model_says_in_due_order)
{
    uv_loop_t loop;
    deadline_queue_t q;
    uv_loop_init(&loop);
    deadline_queue_init(&loop, &q);
    srand(7);
    order_ok = 1;
    n_fired = 0;
    last_fired_due = 0;
    for (int i = 0; i < N_MANY; i++) {
        deadline_init(&q, &many[i], NULL);
        model_due[i] = 0;
        closed_many[i] = 0;
    }
    uint64_t now = uv_now(&loop);
    for (int step = 0; step < 5000; step++) {
        int i = rand() % N_MANY;
        if (closed_many[i] != 0 || many[i].q == NULL)
            continue;
        switch (rand() % 8) {
        case 0:
            deadline_stop(&many[i]);
            model_due[i] = 0;
            break;
        case 1:
            if (rand() % 3 == 0) {
                deadline_close(&many[i], on_many_closed);
                many[i].q = NULL; /* not to be used again */
                model_due[i] = 0;
            }
            break;
        default: {
            uint64_t ms = 1 + (uint64_t)(rand() % 60);
            deadline_start(&many[i], on_many, ms);
            model_due[i] = now + ms;
            break;
        }
        }
        CHECK_INT(deadline_armed(&many[i]), model_due[i] != 0);
        CHECK(heap_ok(&q));
    }
    int armed = 0;
    for (int i = 0; i < N_MANY; i++)
        armed += model_due[i] != 0;
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(order_ok);
    CHECK_INT(n_fired, armed);
    for (int i = 0; i < N_MANY; i++) {
        CHECK(model_due[i] == 0);
        if (many[i].q != NULL)
            deadline_close(&many[i], on_many_closed);
    }
    deadline_queue_close(&q); /* after the closed callbacks still due */
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N_MANY; i++)
        CHECK_INT(closed_many[i], 1);
    CHECK_INT(q.n, 0);
    CHECK_INT(uv_loop_close(&loop), 0);
}

TEST_MAIN()
