/* Unit tests for the health state machines: active thresholds
 * (health_passes / health_fails) and passive failures (max_fails within
 * fail_duration, immediate outs, expiry). */
#include "health.h"
#include "upstream.h"

#include <string.h>

#include "test.h"

static cfg_proxy_t proxy(int passes, int fails, uint64_t fail_duration, int max_fails)
{
    cfg_proxy_t p;
    memset(&p, 0, sizeof(p));
    p.health_passes = passes;
    p.health_fails = fails;
    p.fail_duration = fail_duration;
    p.max_fails = max_fails;
    return p;
}

TEST(active_goes_down_after_health_fails_in_a_row)
{
    cfg_proxy_t p = proxy(1, 3, 0, 1);
    health_counts_t c = {0, 0};
    int down = 0;
    down = health_verdict(&c, 0, down, &p);
    down = health_verdict(&c, 0, down, &p);
    CHECK_INT(down, 0);
    down = health_verdict(&c, 1, down, &p); /* a pass resets the count */
    down = health_verdict(&c, 0, down, &p);
    down = health_verdict(&c, 0, down, &p);
    CHECK_INT(down, 0);
    down = health_verdict(&c, 0, down, &p);
    CHECK_INT(down, 1);
}

TEST(active_comes_back_after_health_passes_in_a_row)
{
    cfg_proxy_t p = proxy(2, 1, 0, 1);
    health_counts_t c = {0, 0};
    int down = health_verdict(&c, 0, 0, &p);
    CHECK_INT(down, 1);
    down = health_verdict(&c, 1, down, &p);
    CHECK_INT(down, 1);
    down = health_verdict(&c, 0, down, &p); /* a failure resets the passes */
    down = health_verdict(&c, 1, down, &p);
    CHECK_INT(down, 1);
    down = health_verdict(&c, 1, down, &p);
    CHECK_INT(down, 0);
}

TEST(passive_immediate_failure_takes_it_out_for_fail_duration)
{
    cfg_proxy_t p = proxy(1, 1, 5000, 3);
    up_target_t t;
    memset(&t, 0, sizeof(t));
    t.hostport = "a:1";
    up_target_failed_at(&t, &p, 1, "refused", 1000);
    CHECK(up_target_out_at(&t, 1000));
    CHECK(up_target_out_at(&t, 5999));
    CHECK(!up_target_out_at(&t, 6000)); /* fail_duration expired */
}

TEST(passive_counts_max_fails_within_fail_duration)
{
    cfg_proxy_t p = proxy(1, 1, 5000, 3);
    up_target_t t;
    memset(&t, 0, sizeof(t));
    t.hostport = "a:1";
    up_target_failed_at(&t, &p, 0, "status 502", 10000);
    up_target_failed_at(&t, &p, 0, "status 502", 11000);
    CHECK(!up_target_out_at(&t, 11000));
    /* the window ran out: counting starts again */
    up_target_failed_at(&t, &p, 0, "status 502", 16001);
    CHECK(!up_target_out_at(&t, 16001));
    up_target_failed_at(&t, &p, 0, "status 502", 16500);
    up_target_failed_at(&t, &p, 0, "status 502", 17000);
    CHECK(up_target_out_at(&t, 17000));
    CHECK(!up_target_out_at(&t, 22000));
}

TEST(passive_checks_off_with_zero_fail_duration)
{
    cfg_proxy_t p = proxy(1, 1, 0, 1);
    up_target_t t;
    memset(&t, 0, sizeof(t));
    t.hostport = "a:1";
    up_target_failed_at(&t, &p, 1, "refused", 1000);
    CHECK(!up_target_out_at(&t, 1000));
}

/* lb_policy random (Caddy's default) picks among the upstreams in
 * service only, and each of them in turn: over 300 picks of three, one
 * passively out, the other two get at least a sixth each. */
TEST(random_policy_picks_every_upstream_in_service_and_none_out)
{
    cfg_upstream_t ups[3] = {{.hostport = "a:1"}, {.hostport = "b:1"}, {.hostport = "c:1"}};
    cfg_proxy_t p = proxy(1, 1, 10000, 1);
    p.ups = ups;
    p.n_ups = 3;
    p.lb_policy = CFG_LB_RANDOM;
    up_target_t tg[3];
    up_target_t *items[3];
    memset(tg, 0, sizeof(tg));
    for (int i = 0; i < 3; i++) {
        tg[i].hostport = ups[i].hostport;
        items[i] = &tg[i];
    }
    up_targets_t ts;
    memset(&ts, 0, sizeof(ts));
    ts.items = items;
    ts.n = 3;
    up_pools_t ps;
    up_pools_init(&ps, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0);
    up_target_failed(&tg[1], &p, 1, "refused"); /* b is out for fail_duration */
    int count[3] = {0, 0, 0};
    for (int k = 0; k < 300; k++) {
        int pick = -1;
        int i = up_select(&ps, &p, &ts, 0, "192.0.2.1", &pick);
        CHECK(i >= 0 && i < 3);
        CHECK_INT(pick, UP_PICK_HEALTHY);
        count[i]++;
    }
    CHECK_INT(count[1], 0);
    CHECK(count[0] >= 50 && count[2] >= 50);
    /* with a and c tried already, b is the one left: out, but tried as a
     * probe rather than failing the request */
    int pick = -1;
    CHECK_INT(up_select(&ps, &p, &ts, 1u | 4u, "192.0.2.1", &pick), 1);
    CHECK_INT(pick, UP_PICK_PASSIVE);
}

TEST_MAIN()
