/* Upstream connections: targets, dial (looking names up off the loop),
 * keep idle ones in a per-worker pool, and pick which upstream serves a
 * request. */
#include "upstream.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "common.h"
#include "log.h"

/* ---- targets ------------------------------------------------------------ */

/* An IP literal gets its one address now; a name is left to the workers. */
static void parse_literal(up_target_t *t)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV; /* no lookup, never blocks */
    if (getaddrinfo(t->host, t->port, &hints, &res) != 0)
        return;
    if (res->ai_addrlen <= sizeof(t->literal_addr)) {
        memcpy(&t->literal_addr, res->ai_addr, res->ai_addrlen);
        t->literal = 1;
    }
    freeaddrinfo(res);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

/* For /metrics only, updated relaxed: a count publishes no data, and a
 * scrape may see it a moment late. */
static atomic_long tables_live, targets_live;

long up_targets_live(void)
{
    return atomic_load(&tables_live);
}

long up_target_objects_live(void)
{
    return atomic_load(&targets_live);
}

up_target_t *up_target_find(up_targets_t *t, const char *hostport)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->items[i]->hostport, hostport) == 0)
            return t->items[i];
    return NULL;
}

static int table_has(const up_targets_t *t, const up_target_t *target)
{
    for (size_t i = 0; t != NULL && i < t->n; i++)
        if (t->items[i] == target)
            return 1;
    return 0;
}

static up_target_t *target_ref(up_target_t *tg)
{
    /* relaxed: the caller holds a reference already, so the target is alive
     * and visible to it; only the last unref must order (acq_rel below) */
    atomic_fetch_add_explicit(&tg->refs, 1, memory_order_relaxed);
    return tg;
}

static void target_unref(up_target_t *tg)
{
    /* acq_rel: the last owner sees every write the others made to it */
    if (atomic_fetch_sub_explicit(&tg->refs, 1, memory_order_acq_rel) != 1)
        return;
    free((char *)tg->hostport);
    free((char *)tg->host);
    free((char *)tg->port);
    free(tg);
    atomic_fetch_sub_explicit(&targets_live, 1, memory_order_relaxed);
}

/* A new target for UP; its own copies of the names: a reload frees the
 * config while connections accepted before still use the target. */
static up_target_t *target_new(const cfg_upstream_t *up)
{
    up_target_t *tg = calloc(1, sizeof(*tg));
    if (tg == NULL)
        abort();
    atomic_init(&tg->refs, 1);
    tg->hostport = xstrdup(up->hostport);
    tg->host = xstrdup(up->host);
    tg->port = xstrdup(up->port);
    parse_literal(tg);
    atomic_fetch_add_explicit(&targets_live, 1, memory_order_relaxed);
    return tg;
}

up_targets_t *up_targets_new(const cfg_t *cfg, const up_targets_t *prev)
{
    size_t cap = 0;
    for (size_t s = 0; s < cfg->n_sites; s++) {
        const cfg_site_t *site = &cfg->sites[s];
        for (size_t h = 0; h < site->n_handlers; h++) {
            if (site->handlers[h].kind == CFG_H_PROXY)
                cap += site->handlers[h].u.proxy.n_ups;
        }
    }
    up_targets_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    t->items = calloc(cap > 0 ? cap : 1, sizeof(*t->items));
    t->checks = calloc(cap > 0 ? cap : 1, sizeof(*t->checks));
    if (t->items == NULL || t->checks == NULL)
        abort();
    atomic_init(&t->refs, 1);
    for (size_t s = 0; s < cfg->n_sites; s++) {
        const cfg_site_t *site = &cfg->sites[s];
        for (size_t h = 0; h < site->n_handlers; h++) {
            if (site->handlers[h].kind != CFG_H_PROXY)
                continue;
            const cfg_proxy_t *p = &site->handlers[h].u.proxy;
            for (size_t i = 0; i < p->n_ups; i++) {
                size_t k = 0;
                while (k < t->n && strcmp(t->items[k]->hostport, p->ups[i].hostport) != 0)
                    k++;
                if (k == t->n) {
                    up_target_t *kept = NULL;
                    for (size_t j = 0; prev != NULL && j < prev->n && kept == NULL; j++)
                        if (strcmp(prev->items[j]->hostport, p->ups[i].hostport) == 0)
                            kept = prev->items[j];
                    t->items[t->n++] = kept != NULL ? target_ref(kept) : target_new(&p->ups[i]);
                }
                if (t->checks[k] == NULL && p->health_uri != NULL)
                    t->checks[k] = p;
            }
        }
    }
    atomic_fetch_add_explicit(&tables_live, 1, memory_order_relaxed);
    return t;
}

up_targets_t *up_targets_ref(up_targets_t *t)
{
    /* relaxed, as target_ref: taken by one who holds a reference already */
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void up_targets_unref(up_targets_t *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->n; i++)
        target_unref(t->items[i]);
    free(t->items);
    free(t->checks);
    free(t);
    atomic_fetch_sub_explicit(&tables_live, 1, memory_order_relaxed);
}

/* ---- pools -------------------------------------------------------------- */

void up_pools_init(up_pools_t *ps, uv_loop_t *loop, deadline_queue_t *deadlines,
                   buf_pool_t *wreqs, buf_pool_t *bufs, buf_pool_t *tables,
                   const atomic_int *stop, metrics_t *metrics, int index)
{
    memset(ps, 0, sizeof(*ps));
    ps->loop = loop;
    ps->deadlines = deadlines;
    ps->wreqs = wreqs;
    ps->bufs = bufs;
    ps->tables = tables;
    ps->stop = stop;
    ps->metrics = metrics;
    ps->index = index;
    ps->rand_state = (uint32_t)(uv_hrtime() ^ ((uint64_t)index * 2654435761u)) | 1;
}

uint32_t up_rand(up_pools_t *ps)
{
    /* xorshift32: cheap, per worker, good enough to spread load */
    uint32_t x = ps->rand_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    ps->rand_state = x;
    return x;
}

up_pool_t *up_pool_get(up_pools_t *ps, up_target_t *target)
{
    /* one target object per upstream across reloads (up_targets_new) */
    for (up_pool_t *p = ps->first; p != NULL; p = p->next)
        if (p->target == target)
            return p;
    up_pool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        abort();
    p->target = target_ref(target);
    p->set = ps;
    p->stats = metrics_upstream(ps->metrics, target->hostport);
    p->lookup.data = p;
    if (target->literal)
        res_store_literal(&p->answer, (const struct sockaddr *)&target->literal_addr);
    p->next = ps->first;
    ps->first = p;
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
    /* relaxed: a count for the caps and /metrics, publishing nothing */
    atomic_fetch_sub_explicit(&p->target->idle, 1, memory_order_relaxed);
}

static void wait_unlink(up_conn_t *u)
{
    up_pool_t *p = u->pool;
    if (!u->waits)
        return;
    if (u->prev_wait != NULL)
        u->prev_wait->next_wait = u->next_wait;
    else
        p->waiting = u->next_wait;
    if (u->next_wait != NULL)
        u->next_wait->prev_wait = u->prev_wait;
    u->next_wait = u->prev_wait = NULL;
    u->waits = 0;
}

static void closed_one(up_conn_t *u)
{
    if (--u->pending_closes > 0)
        return;
    buf_put(u->pool->set->bufs, u->rbuf);
    buf_put(u->pool->set->tables, (char *)u->resp.hdrs);
    sock_wreq_release(&u->wr); /* its callback ran: nothing is queued on it */
    u->pool->n_closing--;
    free(u);
}

static void on_closed(uv_handle_t *h)
{
    closed_one(h->data);
}

static void on_clock_closed(deadline_t *d)
{
    closed_one(d->data);
}

void up_close(up_conn_t *u, int why)
{
    if (u->state == UP_S_CLOSING)
        return;
    if (u->opened)
        metrics_bump(&u->pool->stats->closes[why]);
    /* resolving, it has no socket: never opened, or closed and its close
     * callback run (on_redial_closed) */
    int socket = u->state != UP_S_RESOLVING;
    if (u->state == UP_S_IDLE)
        idle_unlink(u);
    else
        u->pool->n_active--;
    wait_unlink(u); /* the lookup it waited for may still run: it finds it gone */
    log_debug("upstream %s: conn %llu closed: %s", u->pool->target->hostport,
              (unsigned long long)u->id, metrics_close_names[why]);
    u->state = UP_S_CLOSING;
    u->owner = NULL;
    u->pool->n_closing++;
    u->pending_closes = socket ? 2 : 1;
    /* mid-redial the socket is closing already; on_redial_closed counts it */
    if (socket && !uv_is_closing((uv_handle_t *)&u->tcp))
        uv_close((uv_handle_t *)&u->tcp, on_closed);
    deadline_close(&u->timer, on_clock_closed);
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
        *buf = uv_buf_init(u->rbuf + u->rlen, (unsigned)(u->pool->set->bufs->size - u->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    up_conn_t *u = s->data;
    if (nread == 0)
        return;
    if (u->state != UP_S_ACTIVE) {
        /* an idle pooled connection: a byte is a protocol error, EOF is the
         * upstream closing it; either way it is done */
        up_close(u, METRICS_CLOSE_UPSTREAM);
        return;
    }
    if (nread > 0)
        u->rlen += (size_t)nread;
    u->on_read(u, nread);
}

void up_update_reading(up_conn_t *u)
{
    int want = u->state == UP_S_IDLE ||
               (u->state == UP_S_ACTIVE && !u->eof && u->rlen < u->pool->set->bufs->size);
    int reading = u->tcp.read_cb != NULL;
    if (want && !reading)
        uv_read_start((uv_stream_t *)&u->tcp, on_alloc, on_read);
    else if (!want && reading)
        uv_read_stop((uv_stream_t *)&u->tcp);
}

/* Whether U's peer is still one of the name's addresses. Asked only after
 * a lookup moved the name (gen changed), so the hot path makes no syscall:
 * a connection to a container that was replaced is not reused, as a new
 * dial would not reach it either. */
static int still_listed(up_conn_t *u)
{
    up_pool_t *p = u->pool;
    if (u->gen == p->answer.gen)
        return 1;
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    if (uv_tcp_getpeername(&u->tcp, (struct sockaddr *)&sa, &len) != 0 ||
        !res_contains(&p->answer, (const struct sockaddr *)&sa))
        return 0;
    u->gen = p->answer.gen;
    return 1;
}

static void lookup_start(up_pool_t *p);

static void on_idle_timeout(deadline_t *d)
{
    up_close(d->data, METRICS_CLOSE_IDLE_TIMEOUT);
}

/* Counts U's pool in as one more idle connection, unless P's caps have
 * enough: returns 0 then, and nothing is counted. The count is shared by
 * every worker; an add that overshoots is taken back, so two workers at
 * the edge never keep one too many to one upstream. Across several
 * upstreams keepalive_idle_conns adds their counts, which a worker may
 * change meanwhile: it holds to within a connection per worker. */
static int idle_admit(up_pool_t *pool, const cfg_proxy_t *p, up_targets_t *t)
{
    atomic_int *idle = &pool->target->idle;
    int before = atomic_fetch_add_explicit(idle, 1, memory_order_relaxed);
    int all = before + 1;
    if (p->keepalive_idle_conns > 0 && p->n_ups > 1) {
        all = 0;
        for (size_t i = 0; i < p->n_ups; i++) {
            const up_target_t *tg = up_target_find(t, p->ups[i].hostport);
            if (tg != NULL)
                all += atomic_load_explicit(&tg->idle, memory_order_relaxed);
        }
    }
    if ((p->keepalive_idle_conns_per_host > 0 && before >= p->keepalive_idle_conns_per_host) ||
        (p->keepalive_idle_conns > 0 && all > p->keepalive_idle_conns)) {
        atomic_fetch_sub_explicit(idle, 1, memory_order_relaxed);
        return 0;
    }
    return 1;
}

void up_release(up_conn_t *u, const cfg_proxy_t *p, up_targets_t *t, uint64_t idle_ms)
{
    up_pool_t *pool = u->pool;
    int why = -1;
    if (idle_ms == 0 || u->rstart != u->rlen)
        why = METRICS_CLOSE_NOT_REUSABLE;
    else if (atomic_load(pool->set->stop) || !still_listed(u))
        why = METRICS_CLOSE_RETIRED;
    else if (!idle_admit(pool, p, t))
        why = METRICS_CLOSE_POOL_FULL;
    if (why >= 0) {
        up_close(u, why);
        return;
    }
    pool->n_active--;
    u->state = UP_S_IDLE;
    u->owner = NULL;
    u->reused = 1;
    buf_put(pool->set->bufs, u->rbuf);
    u->rbuf = NULL;
    buf_put(pool->set->tables, (char *)u->resp.hdrs);
    u->resp.hdrs = NULL;
    u->rstart = u->rlen = 0;
    u->next_idle = pool->idle;
    u->prev_idle = NULL;
    if (pool->idle != NULL)
        pool->idle->prev_idle = u;
    pool->idle = u;
    pool->n_idle++;
    up_update_reading(u);
    deadline_start(&u->timer, on_idle_timeout, idle_ms);
}

up_conn_t *up_take(up_pool_t *p, void *owner)
{
    /* an expired answer is refreshed while the pool serves on: a move
     * shows at the next take (still_listed) or dial */
    if (!res_fresh(&p->answer, (int64_t)uv_now(p->set->loop)))
        lookup_start(p);
    up_conn_t *u;
    while ((u = p->idle) != NULL && !still_listed(u))
        up_close(u, METRICS_CLOSE_RETIRED);
    if (u == NULL)
        return NULL;
    metrics_bump(&p->stats->reuses);
    idle_unlink(u);
    p->n_active++;
    u->state = UP_S_ACTIVE;
    u->owner = owner;
    deadline_stop(&u->timer);
    return u;
}

void up_pools_close_idle(up_pools_t *ps)
{
    for (up_pool_t *p = ps->first; p != NULL; p = p->next) {
        while (p->idle != NULL)
            up_close(p->idle, METRICS_CLOSE_RETIRED);
        /* a refresh nobody waits for need not hold the stop up; once running
         * it cannot be cancelled, and the loop runs until it calls back */
        if (p->looking_up && p->waiting == NULL)
            uv_cancel((uv_req_t *)&p->lookup);
    }
}

static int pool_unused(const up_pool_t *p)
{
    return p->idle == NULL && p->n_active == 0 && p->n_closing == 0 && !p->looking_up &&
           p->waiting == NULL;
}

static void pool_free(up_pool_t *p)
{
    target_unref(p->target);
    free(p);
}

void up_pools_retire(up_pools_t *ps, const up_targets_t *current)
{
    up_pool_t **pp = &ps->first;
    while (*pp != NULL) {
        up_pool_t *p = *pp;
        if (table_has(current, p->target)) {
            pp = &p->next;
            continue;
        }
        while (p->idle != NULL)
            up_close(p->idle, METRICS_CLOSE_RETIRED);
        if (pool_unused(p)) {
            *pp = p->next;
            pool_free(p);
        } else {
            pp = &p->next; /* in use by connections of an older config */
        }
    }
}

void up_pools_free(up_pools_t *ps)
{
    while (ps->first != NULL) {
        up_pool_t *p = ps->first;
        ps->first = p->next;
        /* the worker's loop ran until no request was left, lookups included */
        assert(pool_unused(p));
        pool_free(p);
    }
}

/* ---- dialing ------------------------------------------------------------ */

static void dial_start(up_conn_t *u);
static void dial_next(up_conn_t *u);

/* Reports ERR to the owner from the loop (never from inside up_dial). */
static void fail_soon(up_conn_t *u, int err);

static void on_dial_timeout(deadline_t *d)
{
    up_conn_t *u = d->data;
    up_pool_t *p = u->pool;
    /* a connect that hangs is a failed dial too: the next one looks again */
    if (u->state == UP_S_CONNECTING && u->gen == p->answer.gen)
        res_drop(&p->answer);
    metrics_bump(&p->stats->dial_errors);
    u->on_connect(u, u->dial_err != 0 ? u->dial_err : UV_ETIMEDOUT);
}

static void fail_soon(up_conn_t *u, int err)
{
    u->dial_err = err;
    deadline_start(&u->timer, on_dial_timeout, 0);
}

static void on_lookup(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    up_pool_t *p = req->data;
    const up_target_t *t = p->target;
    p->looking_up = 0;
    if (status == UV_EAI_CANCELED) { /* the worker stops; nothing is learnt */
        while (p->waiting != NULL) {
            up_conn_t *u = p->waiting;
            wait_unlink(u);
            fail_soon(u, status);
        }
        return;
    }
    int had = p->answer.n_addrs, failed = p->answer.err;
    int moved = res_store(&p->answer, status, res, (int64_t)uv_now(p->set->loop));
    uv_freeaddrinfo(res);
    if (p->answer.err != 0 && p->answer.err != failed)
        log_warn("upstream %s: cannot resolve %s: %s", t->hostport, t->host,
                 uv_strerror(p->answer.err));
    else if (p->answer.err == 0 && (moved || failed != 0)) {
        char addr[64];
        res_addr_name(&p->answer, 0, addr, sizeof(addr));
        log_info("upstream %s: %s is %s%s (worker %d)%s", t->hostport, t->host, addr,
                 p->answer.n_addrs > 1 ? " and more" : "", p->set->index,
                 had > 0 && moved ? ": moved" : "");
    }
    /* each waiter dials the fresh answer or hears it failed, from the loop:
     * none of this calls an owner back, so the list cannot change under us */
    while (p->waiting != NULL) {
        up_conn_t *u = p->waiting;
        wait_unlink(u);
        u->looked_up = 1;
        dial_start(u);
    }
}

/* Looks the pool's name up in libuv's thread pool, unless that is under
 * way already: every connection that waits meanwhile takes the same answer. */
static void lookup_start(up_pool_t *p)
{
    if (p->looking_up)
        return;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* no AI_ADDRCONFIG: it hides ::1 and 127.0.0.1 on hosts with only
     * loopback; an address of a family the host lacks fails its connect at
     * once and the dial goes on to the next */
    int err = uv_getaddrinfo(p->set->loop, &p->lookup, on_lookup, p->target->host, p->target->port,
                             &hints);
    if (err == 0) {
        p->looking_up = 1;
        return;
    }
    log_warn("upstream %s: cannot start a lookup of %s: %s", p->target->hostport, p->target->host,
             uv_strerror(err));
    res_store(&p->answer, err, NULL, (int64_t)uv_now(p->set->loop));
    while (p->waiting != NULL) {
        up_conn_t *u = p->waiting;
        wait_unlink(u);
        fail_soon(u, err);
    }
}

static void wait_for_lookup(up_conn_t *u)
{
    up_pool_t *p = u->pool;
    u->state = UP_S_RESOLVING;
    u->waits = 1;
    u->prev_wait = NULL;
    u->next_wait = p->waiting;
    if (p->waiting != NULL)
        p->waiting->prev_wait = u;
    p->waiting = u;
    lookup_start(p);
}

/* Dials the pool's answer when it is fresh, else waits for a lookup. */
static void dial_start(up_conn_t *u)
{
    up_pool_t *p = u->pool;
    if (!res_fresh(&p->answer, (int64_t)uv_now(p->set->loop))) {
        wait_for_lookup(u);
        return;
    }
    u->state = UP_S_RESOLVING; /* until dial_next opens a socket */
    if (p->answer.err != 0) {
        fail_soon(u, p->answer.err); /* a failed dial, as Caddy's */
        return;
    }
    if (u->dial_err != 0 && p->answer.gen == u->gen) {
        fail_soon(u, u->dial_err); /* looked up again: the same addresses that failed */
        return;
    }
    u->gen = p->answer.gen;
    u->addr_idx = 0;
    dial_next(u);
}

static void on_redial_closed(uv_handle_t *h)
{
    up_conn_t *u = h->data;
    if (u->state == UP_S_CLOSING) {
        on_closed(h);
        return;
    }
    if (u->relook) {
        u->relook = 0;
        dial_start(u);
        return;
    }
    dial_next(u);
}

/* A connect to the address at addr_idx failed with STATUS: the next
 * address, or a new lookup when the answer came from the cache, else the
 * owner hears it. Returns 1 when the dial goes on (the socket is closing
 * and on_redial_closed continues), 0 when it is over. */
static int dial_failed(up_conn_t *u, int status)
{
    up_pool_t *p = u->pool;
    int current = u->gen == p->answer.gen;
    if (current && u->addr_idx + 1 < p->answer.n_addrs) {
        /* the next address of the name (::1 refused, 127.0.0.1 listening) */
        u->addr_idx++;
        uv_close((uv_handle_t *)&u->tcp, on_redial_closed);
        return 1;
    }
    /* every address failed: the next dial looks the name up again */
    if (current)
        res_drop(&p->answer);
    if (!u->looked_up && !p->target->literal) {
        /* the addresses came from the cache: the name may have moved (a
         * container recreated elsewhere), so look once more before failing */
        u->looked_up = 1;
        u->relook = 1;
        u->dial_err = status;
        uv_close((uv_handle_t *)&u->tcp, on_redial_closed);
        return 1;
    }
    return 0;
}

static void on_connected(uv_connect_t *req, int status)
{
    up_conn_t *u = req->data;
    if (status == UV_ECANCELED || u->state == UP_S_CLOSING)
        return;
    if (status < 0 && dial_failed(u, status))
        return;
    deadline_stop(&u->timer);
    if (status == 0) {
        uv_tcp_nodelay(&u->tcp, 1);
        u->state = UP_S_ACTIVE;
        u->opened = 1;
        metrics_bump(&u->pool->stats->dials);
    } else {
        metrics_bump(&u->pool->stats->dial_errors);
    }
    u->on_connect(u, status);
}

static void dial_next(up_conn_t *u)
{
    const struct sockaddr *sa = (const struct sockaddr *)&u->pool->answer.addrs[u->addr_idx];
    u->state = UP_S_CONNECTING;
    u->dial_err = 0;
    uv_tcp_init(u->pool->set->loop, &u->tcp);
    u->tcp.data = u;
    u->creq.data = u;
    int err = uv_tcp_connect(&u->creq, &u->tcp, sa, on_connected);
    /* connect(2) can fail at once (an IPv6 address on a host without IPv6:
     * ENETUNREACH); report through the loop, never from inside up_dial */
    if (err < 0 && !dial_failed(u, err))
        fail_soon(u, err);
}

up_conn_t *up_dial(up_pool_t *p, void *owner, uint64_t timeout_ms, up_connect_cb cb)
{
    up_conn_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        abort();
    static __thread uint64_t next_id;
    u->id = ++next_id;
    u->pool = p;
    u->owner = owner;
    u->state = UP_S_RESOLVING;
    u->on_connect = cb;
    p->n_active++;
    deadline_init(p->set->deadlines, &u->timer, u);
    sock_wreq_init(&u->wr, p->set->wreqs, u);
    deadline_start(&u->timer, on_dial_timeout, timeout_ms);
    dial_start(u);
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
static int pick_of(up_pools_t *ps, const cfg_proxy_t *p, up_targets_t *t, uint64_t cand, int n,
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
        /* one counter per reverse_proxy, shared by the workers. Relaxed: it
         * only spreads requests; the atomic add still gives each pick its
         * own number (none lost, none twice), and nothing is published
         * through it, so no order with other memory is needed. */
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
            up_target_t *tg = up_target_find(t, p->ups[i].hostport);
            int active = tg != NULL ? up_pool_get(ps, tg)->n_active : 0;
            if (best < 0 || active < best_active) {
                best = i;
                best_active = active;
                ties = 1;
            } else if (active == best_active && up_rand(ps) % (unsigned)++ties == 0) {
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
        int k = (int)(up_rand(ps) % (unsigned)avail);
        for (int i = 0; i < n; i++)
            if ((cand & (1ull << i)) && k-- == 0)
                return i;
        return -1;
    }
    }
}

int up_select(up_pools_t *ps, const cfg_proxy_t *p, up_targets_t *t, uint64_t tried,
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
        return pick_of(ps, p, t, ok, n, client_ip);
    if (active_down != 0) {
        if (p->health_fail_closed) {
            *pick = UP_PICK_CLOSED;
            return -1;
        }
        /* fail open: a health endpoint that fails alone is not an outage */
        *pick = UP_PICK_FAIL_OPEN;
        return pick_of(ps, p, t, active_down, n, client_ip);
    }
    int i = pick_of(ps, p, t, passive_down, n, client_ip);
    *pick = i >= 0 && (checked_down >> i) & 1 ? UP_PICK_FAIL_OPEN : UP_PICK_PASSIVE;
    return i;
}
