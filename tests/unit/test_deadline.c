/* Deadlines on a real loop: they fire once, at or after the due time,
 * however often they moved; moving later leaves libuv's timer where it
 * was; stopping or closing means no call. */
#include "deadline.h"
#include "test.h"

static int fired;
static uint64_t fired_at;

static void on_due(uv_timer_t *t)
{
    fired++;
    fired_at = uv_now(t->loop);
}

static uint64_t run(uv_loop_t *loop)
{
    uint64_t start = uv_now(loop);
    uv_run(loop, UV_RUN_DEFAULT);
    return start;
}

static void setup(uv_loop_t *loop, deadline_t *d)
{
    uv_loop_init(loop);
    deadline_init(loop, d, NULL);
    fired = 0;
    fired_at = 0;
}

static void teardown(uv_loop_t *loop, deadline_t *d)
{
    deadline_close(d, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(loop), 0);
}

TEST(fires_once_when_due)
{
    uv_loop_t loop;
    deadline_t d;
    setup(&loop, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 30);
    run(&loop);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 30);
    CHECK(!deadline_armed(&d));
    teardown(&loop, &d);
}

TEST(moved_later_keeps_the_timer_and_fires_at_the_new_time)
{
    uv_loop_t loop;
    deadline_t d;
    setup(&loop, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 20);
    uint64_t heap_due = uv_timer_get_due_in(&d.timer);
    deadline_start(&d, on_due, 80);
    CHECK_INT(uv_timer_get_due_in(&d.timer), heap_due); /* no heap work */
    run(&loop);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 80);
    teardown(&loop, &d);
}

TEST(moved_earlier_fires_at_the_earlier_time)
{
    uv_loop_t loop;
    deadline_t d;
    setup(&loop, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 5000);
    deadline_start(&d, on_due, 20);
    run(&loop);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 20);
    CHECK(fired_at < t0 + 5000);
    teardown(&loop, &d);
}

TEST(stopped_never_fires)
{
    uv_loop_t loop;
    deadline_t d;
    setup(&loop, &d);
    deadline_start(&d, on_due, 20);
    deadline_stop(&d);
    CHECK(!deadline_armed(&d));
    run(&loop); /* the timer lapses without a call */
    CHECK_INT(fired, 0);
    teardown(&loop, &d);
}

TEST(stopped_then_started_fires_at_the_new_time_only)
{
    uv_loop_t loop;
    deadline_t d;
    setup(&loop, &d);
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due, 20);
    deadline_stop(&d);
    deadline_start(&d, on_due, 60);
    run(&loop);
    CHECK_INT(fired, 1);
    CHECK(fired_at >= t0 + 60);
    teardown(&loop, &d);
}

static void on_due_again(uv_timer_t *t)
{
    deadline_t *d = t->data;
    on_due(t);
    if (fired < 3)
        deadline_start(d, on_due_again, 10);
}

TEST(restarted_from_its_own_callback)
{
    uv_loop_t loop;
    deadline_t d;
    setup(&loop, &d);
    d.timer.data = &d;
    uint64_t t0 = uv_now(&loop);
    deadline_start(&d, on_due_again, 10);
    run(&loop);
    CHECK_INT(fired, 3);
    CHECK(fired_at >= t0 + 30);
    teardown(&loop, &d);
}

static int closed;

static void on_close(uv_handle_t *h)
{
    CHECK(h->data == &closed);
    closed++;
}

TEST(closed_never_fires)
{
    uv_loop_t loop;
    deadline_t d;
    uv_loop_init(&loop);
    deadline_init(&loop, &d, &closed);
    fired = closed = 0;
    deadline_start(&d, on_due, 10);
    deadline_close(&d, on_close);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(fired, 0);
    CHECK_INT(closed, 1);
    CHECK_INT(uv_loop_close(&loop), 0);
}

TEST_MAIN()
