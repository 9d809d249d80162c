/* Upstream connections: resolve targets, dial, keep idle ones in a
 * per-worker pool, and pick which upstream serves a request. */
#include "upstream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "log.h"

/* ---- targets ------------------------------------------------------------ */

static void resolve(up_target_t *t, const char *host, const char *port)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int err = getaddrinfo(host, port, &hints, &res);
    if (err == EAI_NONAME || err == EAI_ADDRFAMILY) {
        /* AI_ADDRCONFIG hides ::1 and 127.0.0.1 on hosts with only loopback */
        hints.ai_flags = 0;
        err = getaddrinfo(host, port, &hints, &res);
    }
    if (err != 0) {
        t->resolve_err = err;
        log_err("upstream %s: cannot resolve %s: %s", t->hostport, host, gai_strerror(err));
        return;
    }
    for (struct addrinfo *ai = res; ai != NULL && t->n_addrs < UP_MAX_ADDRS; ai = ai->ai_next)
        memcpy(&t->addrs[t->n_addrs++], ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(res);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

up_target_t *up_target_find(up_targets_t *t, const char *hostport)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->items[i].hostport, hostport) == 0)
            return &t->items[i];
    return NULL;
}

up_targets_t *up_targets_new(const cfg_t *cfg)
{
    up_targets_t *t = calloc(1, sizeof(*t));
    size_t cap = 0;
    for (size_t s = 0; s < cfg->n_sites; s++) {
        const cfg_site_t *site = &cfg->sites[s];
        for (size_t h = 0; h < site->n_handlers; h++) {
            if (site->handlers[h].kind == CFG_H_PROXY)
                cap += site->handlers[h].u.proxy.n_ups;
        }
    }
    t->items = calloc(cap > 0 ? cap : 1, sizeof(up_target_t));
    if (t == NULL || t->items == NULL)
        abort();
    for (size_t s = 0; s < cfg->n_sites; s++) {
        const cfg_site_t *site = &cfg->sites[s];
        for (size_t h = 0; h < site->n_handlers; h++) {
            if (site->handlers[h].kind != CFG_H_PROXY)
                continue;
            const cfg_proxy_t *p = &site->handlers[h].u.proxy;
            for (size_t i = 0; i < p->n_ups; i++) {
                up_target_t *tg = up_target_find(t, p->ups[i].hostport);
                if (tg == NULL) {
                    /* its own copies: a reload frees the config while
                     * connections accepted before still use these */
                    tg = &t->items[t->n++];
                    tg->hostport = xstrdup(p->ups[i].hostport);
                    tg->host = xstrdup(p->ups[i].host);
                    tg->port = xstrdup(p->ups[i].port);
                    resolve(tg, p->ups[i].host, p->ups[i].port);
                }
                if (tg->checks == NULL && p->health_uri != NULL)
                    tg->checks = p;
            }
        }
    }
    return t;
}

void up_targets_free(up_targets_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free((char *)t->items[i].hostport);
        free((char *)t->items[i].host);
        free((char *)t->items[i].port);
    }
    free(t->items);
    free(t);
}

/* ---- pools -------------------------------------------------------------- */

up_pool_t *up_pool_get(worker_t *w, const up_target_t *target)
{
    /* by name: a reload brings new target objects for the same upstreams */
    for (up_pool_t *p = w->pools; p != NULL; p = p->next) {
        if (strcmp(p->target->hostport, target->hostport) == 0) {
            p->target = target;
            return p;
        }
    }
    up_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        abort();
    p->target = target;
    p->w = w;
    p->next = w->pools;
    w->pools = p;
    return p;
}

static void idle_unlink(up_conn_t *u)
{
    up_pool_t *p = u->pool;
    if (u->prev_idle != NULL)
        u->prev_idle->next_idle = u->next_idle;
    else
        p->idle = u->next_idle;
    if (u->next_idle != NULL)
        u->next_idle->prev_idle = u->prev_idle;
    u->next_idle = u->prev_idle = NULL;
    p->n_idle--;
}

static void on_closed(uv_handle_t *h)
{
    up_conn_t *u = h->data;
    if (--u->pending_closes > 0)
        return;
    buf_put(&u->pool->w->bufs, u->rbuf);
    buf_put(&u->pool->w->tables, (char *)u->resp.hdrs);
    free(u);
}

void up_close(up_conn_t *u)
{
    if (u->state == UP_S_CLOSING)
        return;
    if (u->state == UP_S_IDLE)
        idle_unlink(u);
    else
        u->pool->n_active--;
    log_debug("upstream %s: conn %llu closed", u->pool->target->hostport,
              (unsigned long long)u->id);
    u->state = UP_S_CLOSING;
    u->owner = NULL;
    u->pending_closes = 2;
    /* mid-redial the socket is closing already; on_redial_closed counts it */
    if (!uv_is_closing((uv_handle_t *)&u->tcp))
        uv_close((uv_handle_t *)&u->tcp, on_closed);
    uv_close((uv_handle_t *)&u->timer, on_closed);
}

/* One pair of callbacks for every state: switching them as a connection
 * goes idle and back would cost an epoll_ctl each way. */
static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    up_conn_t *u = h->data;
    static __thread char scratch[64];
    if (u->rbuf == NULL) /* idle: it has nothing to say (see on_read) */
        *buf = uv_buf_init(scratch, sizeof(scratch));
    else
        *buf = uv_buf_init(u->rbuf + u->rlen, (unsigned)(u->pool->w->bufs.size - u->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    up_conn_t *u = s->data;
    if (nread == 0)
        return;
    if (u->state != UP_S_ACTIVE) {
        /* an idle pooled connection: a byte is a protocol error, EOF is the
         * upstream closing it; either way it is done */
        up_close(u);
        return;
    }
    if (nread > 0)
        u->rlen += (size_t)nread;
    u->on_read(u, nread);
}

void up_update_reading(up_conn_t *u)
{
    int want = u->state == UP_S_IDLE ||
               (u->state == UP_S_ACTIVE && !u->eof && u->rlen < u->pool->w->bufs.size);
    int reading = u->tcp.read_cb != NULL;
    if (want && !reading)
        uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
    else if (!want && reading)
        uv_read_stop((uv_stream_t *)&u->tcp);
}

static void on_idle_timeout(uv_timer_t *t)
{
    up_close(t->data);
}

void up_release(up_conn_t *u, uint64_t keepalive_ms, int max_idle)
{
    up_pool_t *p = u->pool;
    if (keepalive_ms == 0 || p->n_idle >= max_idle || u->rstart != u->rlen ||
        atomic_load(&p->w->stop)) {
        up_close(u);
        return;
    }
    p->n_active--;
    u->state = UP_S_IDLE;
    u->owner = NULL;
    u->reused = 1;
    buf_put(&p->w->bufs, u->rbuf);
    u->rbuf = NULL;
    buf_put(&p->w->tables, (char *)u->resp.hdrs);
    u->resp.hdrs = NULL;
    u->rstart = u->rlen = 0;
    u->next_idle = p->idle;
    u->prev_idle = NULL;
    if (p->idle != NULL)
        p->idle->prev_idle = u;
    p->idle = u;
    p->n_idle++;
    up_update_reading(u);
    uv_timer_start(&u->timer, on_idle_timeout, keepalive_ms, 0);
}

up_conn_t *up_take(up_pool_t *p, void *owner)
{
    up_conn_t *u = p->idle;
    if (u == NULL)
        return NULL;
    idle_unlink(u);
    p->n_active++;
    u->state = UP_S_ACTIVE;
    u->owner = owner;
    uv_timer_stop(&u->timer);
    return u;
}

void up_pools_close_idle(worker_t *w)
{
    for (up_pool_t *p = w->pools; p != NULL; p = p->next)
        while (p->idle != NULL)
            up_close(p->idle);
}

void up_pools_free(worker_t *w)
{
    while (w->pools != NULL) {
        up_pool_t *p = w->pools;
        w->pools = p->next;
        free(p);
    }
}

/* ---- dialing ------------------------------------------------------------ */

static void dial_next(up_conn_t *u);

static void on_dial_timeout(uv_timer_t *t)
{
    up_conn_t *u = t->data;
    u->on_connect(u, u->dial_err != 0 ? u->dial_err : UV_ETIMEDOUT);
}

static void on_redial_closed(uv_handle_t *h)
{
    up_conn_t *u = h->data;
    if (u->state == UP_S_CLOSING) {
        on_closed(h);
        return;
    }
    dial_next(u);
}

static void on_connected(uv_connect_t *req, int status)
{
    up_conn_t *u = req->data;
    if (status == UV_ECANCELED || u->state == UP_S_CLOSING)
        return;
    if (status < 0 && u->addr_idx + 1 < u->pool->target->n_addrs) {
        /* the next address of the name (::1 refused, 127.0.0.1 listening) */
        u->addr_idx++;
        uv_close((uv_handle_t *)&u->tcp, on_redial_closed);
        return;
    }
    uv_timer_stop(&u->timer);
    if (status == 0) {
        uv_tcp_nodelay(&u->tcp, 1);
        u->state = UP_S_ACTIVE;
    }
    u->on_connect(u, status);
}

static void dial_next(up_conn_t *u)
{
    const struct sockaddr *sa = (const struct sockaddr *)&u->pool->target->addrs[u->addr_idx];
    uv_tcp_init(&u->pool->w->loop, &u->tcp);
    u->tcp.data = u;
    u->creq.data = u;
    int err = uv_tcp_connect(&u->creq, &u->tcp, sa, on_connected);
    if (err < 0) {
        /* report through the loop, never from inside up_dial's caller */
        u->dial_err = err;
        uv_timer_stop(&u->timer);
        uv_timer_start(&u->timer, on_dial_timeout, 0, 0);
    }
}

up_conn_t *up_dial(up_pool_t *p, void *owner, uint64_t timeout_ms, up_connect_cb cb)
{
    if (p->target->n_addrs == 0)
        return NULL;
    up_conn_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        abort();
    static __thread uint64_t next_id;
    u->id = ++next_id;
    u->pool = p;
    u->owner = owner;
    u->state = UP_S_CONNECTING;
    u->on_connect = cb;
    p->n_active++;
    uv_timer_init(&p->w->loop, &u->timer);
    u->timer.data = u;
    uv_timer_start(&u->timer, on_dial_timeout, timeout_ms, 0);
    dial_next(u);
    return u;
}

/* ---- passive health ------------------------------------------------------ */

int64_t up_now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

void up_target_failed(up_target_t *t, const cfg_proxy_t *p, int immediate, const char *why)
{
    up_target_failed_at(t, p, immediate, why, up_now_ms());
}

int up_target_out_at(const up_target_t *t, int64_t now)
{
    return atomic_load(&t->passive_until) > now;
}

void up_target_failed_at(up_target_t *t, const cfg_proxy_t *p, int immediate, const char *why,
                         int64_t now)
{
    if (p->fail_duration == 0)
        return; /* passive checks off */
    int out = immediate;
    if (!out) {
        /* max_fails within fail_duration (a window, not a sliding count) */
        int64_t start = atomic_load(&t->fail_window);
        if (now - start > (int64_t)p->fail_duration) {
            atomic_store(&t->fail_window, now);
            atomic_store(&t->passive_fails, 0);
        }
        out = atomic_fetch_add(&t->passive_fails, 1) + 1 >= p->max_fails;
    }
    if (!out)
        return;
    int64_t until = now + (int64_t)p->fail_duration;
    int64_t was = atomic_exchange(&t->passive_until, until);
    atomic_store(&t->passive_fails, 0);
    if (was <= now) /* once per episode, not per request */
        log_warn("upstream %s: unhealthy for %llums (passive: %s)", t->hostport,
                 (unsigned long long)p->fail_duration, why);
}

/* ---- balancing ---------------------------------------------------------- */

enum { UP_OK, UP_ACTIVE_DOWN, UP_PASSIVE_DOWN };

static int target_state(const up_target_t *tg, int64_t now)
{
    if (tg == NULL)
        return UP_PASSIVE_DOWN;
    if (atomic_load(&tg->passive_until) > now)
        return UP_PASSIVE_DOWN;
    if (atomic_load(&tg->active_down))
        return UP_ACTIVE_DOWN;
    return UP_OK;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The policy's pick among the upstreams whose bit is set in CAND. */
static int pick_of(worker_t *w, const cfg_proxy_t *p, up_targets_t *t, uint64_t cand, int n,
                   const char *client_ip)
{
    int avail = 0;
    for (int i = 0; i < n; i++)
        avail += (cand >> i) & 1;
    if (avail == 0)
        return -1;
    switch (p->lb_policy) {
    case CFG_LB_FIRST:
        for (int i = 0; i < n; i++)
            if (cand & (1ull << i))
                return i;
        return -1;
    case CFG_LB_ROUND_ROBIN: {
        /* one counter per reverse_proxy, shared by the workers (relaxed) */
        unsigned start = atomic_fetch_add_explicit((atomic_uint *)&p->rr_next, 1,
                                                   memory_order_relaxed);
        for (int k = 0; k < n; k++) {
            int i = (int)((start + (unsigned)k) % (unsigned)n);
            if (cand & (1ull << i))
                return i;
        }
        return -1;
    }
    case CFG_LB_LEAST_CONN: {
        int best = -1, best_active = 0, ties = 0;
        for (int i = 0; i < n; i++) {
            if (!(cand & (1ull << i)))
                continue;
            const up_target_t *tg = up_target_find(t, p->ups[i].hostport);
            int active = tg != NULL ? up_pool_get(w, tg)->n_active : 0;
            if (best < 0 || active < best_active) {
                best = i;
                best_active = active;
                ties = 1;
            } else if (active == best_active && srv_rand(w) % (unsigned)++ties == 0) {
                best = i; /* reservoir sampling breaks ties at random, as Caddy */
            }
        }
        return best;
    }
    case CFG_LB_IP_HASH: {
        /* the same client to the same upstream while the set stays the same */
        int k = (int)(fnv1a(client_ip != NULL ? client_ip : "") % (unsigned)avail);
        for (int i = 0; i < n; i++)
            if ((cand & (1ull << i)) && k-- == 0)
                return i;
        return -1;
    }
    default: { /* random */
        int k = (int)(srv_rand(w) % (unsigned)avail);
        for (int i = 0; i < n; i++)
            if ((cand & (1ull << i)) && k-- == 0)
                return i;
        return -1;
    }
    }
}

int up_select(worker_t *w, const cfg_proxy_t *p, up_targets_t *t, uint64_t tried,
              const char *client_ip, int *pick)
{
    int n = (int)p->n_ups;
    if (n > 64)
        n = 64;
    int64_t now = up_now_ms();
    uint64_t ok = 0, active_down = 0, passive_down = 0, checked_down = 0;
    for (int i = 0; i < n; i++) {
        if (tried & (1ull << i))
            continue;
        const up_target_t *tg = up_target_find(t, p->ups[i].hostport);
        int st = target_state(tg, now);
        if (st == UP_OK)
            ok |= 1ull << i;
        else if (st == UP_ACTIVE_DOWN)
            active_down |= 1ull << i;
        else
            passive_down |= 1ull << i;
        if (tg != NULL && atomic_load(&tg->active_down))
            checked_down |= 1ull << i; /* passively out too, but the active check decides */
    }
    *pick = UP_PICK_HEALTHY;
    if (ok != 0)
        return pick_of(w, p, t, ok, n, client_ip);
    if (active_down != 0) {
        if (p->health_fail_closed) {
            *pick = UP_PICK_CLOSED;
            return -1;
        }
        /* fail open: a health endpoint that fails alone is not an outage */
        *pick = UP_PICK_FAIL_OPEN;
        return pick_of(w, p, t, active_down, n, client_ip);
    }
    int i = pick_of(w, p, t, passive_down, n, client_ip);
    *pick = i >= 0 && (checked_down >> i) & 1 ? UP_PICK_FAIL_OPEN : UP_PICK_PASSIVE;
    return i;
}
