/* Active health checks: one timer per checked upstream on the control loop,
 * HTTP GETs through libcurl (fetch.c), consecutive passes and failures
 * before a verdict changes, every change logged once with its reason. */
#include "health.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch.h"
#include "log.h"

struct check {
    health_t *h;
    up_target_t *t;
    const cfg_proxy_t *p; /* whose health_* settings apply */
    uv_timer_t timer;
    health_counts_t counts;
    regex_t body_re; /* health_body, a regular expression as in Caddy */
    int has_re;
    char url[512];
};

int health_verdict(health_counts_t *c, int passed, int down, const cfg_proxy_t *p)
{
    if (passed) {
        c->fails = 0;
        c->passes++;
        return down && c->passes >= p->health_passes ? 0 : down;
    }
    c->passes = 0;
    c->fails++;
    return !down && c->fails >= p->health_fails ? 1 : down;
}

/* A reverse_proxy with checks, to log fail-open once per episode. */
struct group {
    const cfg_proxy_t *p;
    int all_down;
};

struct health {
    fetch_t *fetch;
    up_targets_t *targets;
    struct check *checks;
    size_t n_checks;
    struct group *groups;
    size_t n_groups;
    int pending_closes;
};

static void on_check_timer(uv_timer_t *t);

static int status_matches(const cfg_status_t *s, long status)
{
    return s->is_class ? status / 100 == s->code : status == s->code;
}

/* Every upstream of a checked reverse_proxy failing its check: traffic goes
 * to them anyway (fail open) unless health_fail_closed; say so once. */
static void update_groups(health_t *h)
{
    for (size_t g = 0; g < h->n_groups; g++) {
        struct group *gr = &h->groups[g];
        int all = 1;
        for (size_t i = 0; i < gr->p->n_ups && all; i++) {
            const up_target_t *t = up_target_find(h->targets, gr->p->ups[i].hostport);
            all = t != NULL && atomic_load(&t->active_down);
        }
        if (all == gr->all_down)
            continue;
        gr->all_down = all;
        const char *first = gr->p->ups[0].hostport;
        if (all && !gr->p->health_fail_closed)
            log_warn("health: every upstream of reverse_proxy %s... fails its check: fail open, "
                     "traffic goes to them anyway", first);
        else if (all)
            log_warn("health: every upstream of reverse_proxy %s... fails its check: 503 "
                     "(health_fail_closed)", first);
        else
            log_info("health: reverse_proxy %s...: an upstream passes again; fail open left",
                     first);
    }
}

static void on_check(void *arg, const fetch_resp_t *r)
{
    struct check *c = arg;
    const cfg_proxy_t *p = c->p;
    char why[256] = "";
    if (r->status == 0)
        snprintf(why, sizeof(why), "%s", r->error != NULL ? r->error : "no answer");
    else if (!status_matches(&p->health_status, r->status))
        snprintf(why, sizeof(why), "status %ld", r->status);
    else if (c->has_re && regexec(&c->body_re, r->body, 0, NULL, 0) != 0)
        snprintf(why, sizeof(why), "body does not match \"%s\"", p->health_body);
    int down = atomic_load(&c->t->active_down);
    int now_down = health_verdict(&c->counts, why[0] == '\0', down, p);
    if (now_down != down) {
        atomic_store(&c->t->active_down, now_down);
        if (now_down)
            log_warn("health: upstream %s unhealthy: %s (%s)", c->t->hostport, why, c->url);
        else
            log_info("health: upstream %s healthy again", c->t->hostport);
    }
    update_groups(c->h);
    uv_timer_start(&c->timer, on_check_timer, p->health_interval, 0);
}

static void on_check_timer(uv_timer_t *t)
{
    struct check *c = t->data;
    if (fetch_start_timeout(c->h->fetch, "GET", c->url, NULL, NULL, (long)c->p->health_timeout,
                            on_check, c) != 0)
        uv_timer_start(&c->timer, on_check_timer, c->p->health_interval, 0);
}

health_t *health_start(uv_loop_t *loop, const cfg_t *cfg, up_targets_t *targets)
{
    size_t n = 0;
    for (size_t i = 0; i < targets->n; i++)
        n += targets->checks[i] != NULL;
    if (n == 0)
        return NULL;
    health_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        abort();
    h->fetch = fetch_new(loop, NULL);
    if (h->fetch == NULL) {
        log_err("health: cannot start libcurl: no active health checks");
        free(h);
        return NULL;
    }
    /* each check reaches what the name is now, as a new dial by a worker
     * would (libcurl looks the name up itself, off this loop) */
    fetch_set_fresh(h->fetch);
    h->targets = up_targets_ref(targets);
    h->checks = calloc(n, sizeof(*h->checks));
    h->groups = calloc(n, sizeof(*h->groups));
    if (h->checks == NULL || h->groups == NULL)
        abort();
    for (size_t i = 0; i < targets->n; i++) {
        up_target_t *t = targets->items[i];
        if (targets->checks[i] == NULL)
            continue;
        struct check *c = &h->checks[h->n_checks++];
        c->h = h;
        c->t = t;
        c->p = targets->checks[i];
        char port[16];
        snprintf(port, sizeof(port), "%d", c->p->health_port);
        int v6 = strchr(t->host, ':') != NULL;
        snprintf(c->url, sizeof(c->url), "http://%s%s%s:%s%s", v6 ? "[" : "", t->host,
                 v6 ? "]" : "", c->p->health_port != 0 ? port : t->port, c->p->health_uri);
        /* config/reverse_proxy.c compiled it once: it is valid */
        c->has_re = c->p->health_body != NULL &&
                    regcomp(&c->body_re, c->p->health_body, REG_EXTENDED | REG_NOSUB) == 0;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        /* the first check at once: start healthy, learn the truth quickly */
        uv_timer_start(&c->timer, on_check_timer, 0, 0);
        size_t g = 0;
        while (g < h->n_groups && h->groups[g].p != c->p)
            g++;
        if (g == h->n_groups)
            h->groups[h->n_groups++].p = c->p;
    }
    log_info("health: checking %zu upstream%s", h->n_checks, h->n_checks == 1 ? "" : "s");
    return h;
}

static void on_timer_closed(uv_handle_t *handle)
{
    struct check *c = handle->data;
    health_t *h = c->h;
    if (c->has_re)
        regfree(&c->body_re);
    if (--h->pending_closes > 0)
        return;
    up_targets_unref(h->targets);
    free(h->checks);
    free(h->groups);
    free(h);
}

void health_stop(health_t *h)
{
    if (h == NULL)
        return;
    fetch_free(h->fetch);
    h->pending_closes = (int)h->n_checks;
    for (size_t i = 0; i < h->n_checks; i++)
        uv_close((uv_handle_t *)&h->checks[i].timer, on_timer_closed);
}
