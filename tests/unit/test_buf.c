/* The per-worker buffer pool: reuse, its bound, and trimming what a burst
 * left behind. */
#include "buf.h"
#include "test.h"

TEST(returned_buffer_is_reused)
{
    buf_pool_t p;
    buf_pool_init(&p, 64, 4);
    char *a = buf_get(&p);
    buf_put(&p, a);
    CHECK(buf_get(&p) == a);
    CHECK_INT(p.in_use, 1);
    buf_put(&p, a);
    buf_pool_dispose(&p);
}

TEST(free_list_is_bounded)
{
    buf_pool_t p;
    buf_pool_init(&p, 64, 2);
    char *b[3] = {buf_get(&p), buf_get(&p), buf_get(&p)};
    for (int i = 0; i < 3; i++)
        buf_put(&p, b[i]);
    CHECK_INT(p.n_free, 2);
    CHECK_INT(p.in_use, 0);
    buf_pool_dispose(&p);
}

/* A peak far above the stack's first room comes back whole: the next
 * peak takes it again without malloc; MAX_FREE still bounds it. */
TEST(free_list_grows_to_the_peak_up_to_its_bound)
{
    enum { PEAK = 1000, BOUND = 600 };
    static char *b[PEAK];
    buf_pool_t p;
    buf_pool_init(&p, 64, BOUND);
    for (int i = 0; i < PEAK; i++)
        b[i] = buf_get(&p);
    for (int i = 0; i < PEAK; i++)
        buf_put(&p, b[i]);
    CHECK_INT(p.n_free, BOUND);
    CHECK_INT(p.in_use, 0);
    for (int i = 0; i < BOUND; i++) /* the same buffers, last in first out */
        CHECK(buf_get(&p) == b[BOUND - 1 - i]);
    CHECK_INT(p.n_free, 0);
    for (int i = 0; i < BOUND; i++)
        buf_put(&p, b[i]);
    buf_pool_dispose(&p);
}

TEST(trim_frees_what_stayed_unused_since_the_last_trim)
{
    buf_pool_t p;
    buf_pool_init(&p, 64, 16);
    char *b[10];
    for (int i = 0; i < 10; i++) /* a burst */
        b[i] = buf_get(&p);
    for (int i = 0; i < 10; i++)
        buf_put(&p, b[i]);
    /* the burst's buffers were taken since the start: all count as used */
    CHECK_INT(buf_pool_trim(&p, 2), 0);
    CHECK_INT(p.n_free, 10);
    /* steady state: one buffer goes out and back between trims */
    buf_put(&p, buf_get(&p));
    CHECK_INT(buf_pool_trim(&p, 2), 7); /* 9 never moved, 2 kept */
    CHECK_INT(p.n_free, 3);
    /* then nothing moves for a whole interval: down to KEEP */
    CHECK_INT(buf_pool_trim(&p, 2), 1);
    CHECK_INT(p.n_free, 2);
    CHECK_INT(buf_pool_trim(&p, 2), 0);
    buf_pool_dispose(&p);
}

TEST(trim_keeps_buffers_in_use_out_of_it)
{
    buf_pool_t p;
    buf_pool_init(&p, 64, 8);
    char *held = buf_get(&p);
    CHECK_INT(buf_pool_trim(&p, 0), 0);
    buf_put(&p, held);
    CHECK_INT(p.n_free, 1);
    CHECK_INT(buf_pool_trim(&p, 0), 0); /* it came back since the last trim */
    CHECK_INT(buf_pool_trim(&p, 0), 1);
    CHECK_INT(p.n_free, 0);
    buf_pool_dispose(&p);
}

TEST_MAIN()
