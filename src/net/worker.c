/* Workers: one thread and event loop each, with their own SO_REUSEPORT
 * listeners so the kernel spreads connections without a shared accept
 * lock; each keeps its connections and upstream pools to itself. */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "log.h"

#define WORKER_BACKLOG 1024
/* Free buffers a pool may keep: the peak in use comes back to the pool
 * and is taken again at the next peak, not freed and malloc'd anew (with
 * 64 HTTP/2 connections of 10 streams, a cap of 256 cost 9 % more
 * instructions per request); what a burst left stays at most two trims
 * (below). The cap only bounds a pathological peak. */
#define WORKER_MAX_FREE_BUFS 65536
/* Pooled buffers unused for a whole WORKER_TRIM_MS go back to the system,
 * but WORKER_KEEP_BUFS: after a burst a t3.micro wants its memory back. */
#define WORKER_TRIM_MS 10000
#define WORKER_KEEP_BUFS 4
#define WORKER_ACCEPT_WARN_MS 10000 /* accept trouble is logged at most this often */
#define WORKER_GRACE_MS 5000 /* grace_period's default: in-flight requests may finish */

static void warn_accept(worker_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Overload is logged once per WORKER_ACCEPT_WARN_MS, not once per connection. */
static void warn_accept(worker_t *w, const char *fmt, ...)
{
    uint64_t now = uv_now(&w->loop);
    if (w->accept_warned_at != 0 && now - w->accept_warned_at < WORKER_ACCEPT_WARN_MS)
        return;
    w->accept_warned_at = now;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_warn("worker %d: %s", w->index, msg);
}

static void take_connection(listener_t *l)
{
    l->w->n_conns++;
    l->w->ops->accept(l); /* a failure there closes it: worker_conn_closed() */
}

static void on_connection(uv_stream_t *s, int status)
{
    listener_t *l = container_of((uv_tcp_t *)s, listener_t, tcp);
    worker_t *w = l->w;
    if (status < 0) {
        /* EMFILE: libuv accepted it with a spare descriptor and closed it,
         * so the backlog drains and nothing spins */
        warn_accept(w, "accept on :%d: %s", l->cl->port, uv_strerror(status));
        return;
    }
    if (w->n_conns >= w->max_conns) {
        /* not taken: libuv keeps it and stops polling this listener until
         * worker_conn_closed() takes it; the rest wait in the kernel's backlog */
        l->paused = 1;
        warn_accept(w, "%u connections open, the limit (max_connections): accepting paused",
                    w->n_conns);
        return;
    }
    take_connection(l);
}

void worker_conn_closed(worker_t *w)
{
    w->n_conns--;
    if (w->draining)
        return;
    for (size_t i = 0; i < w->n_listeners && w->n_conns < w->max_conns; i++) {
        listener_t *l = w->listeners[i];
        if (l->paused) {
            l->paused = 0;
            take_connection(l);
        }
    }
}

/* A dual-stack socket on every address, SO_REUSEPORT so each worker has one. */
static int open_listener(worker_t *w, listener_t *l, const cfg_listener_t *cl)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int v6 = fd >= 0;
    if (!v6)
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    int err;
    if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        struct sockaddr_in6 sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin6_family = AF_INET6;
        sa.sin6_addr = in6addr_any;
        sa.sin6_port = htons((uint16_t)cl->port);
        err = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    } else {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
        sa.sin_port = htons((uint16_t)cl->port);
        err = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    }
    if (err < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    l->w = w;
    l->cl = cl;
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    if ((err = uv_tcp_open(&l->tcp, fd)) < 0) {
        close(fd);
        return err;
    }
    return uv_listen((uv_stream_t *)&l->tcp, WORKER_BACKLOG, on_connection);
}

static void on_listener_closed(uv_handle_t *h)
{
    free(h->data);
}

static void close_listener(listener_t *l)
{
    if (l->w == NULL) /* never opened: no handle */
        free(l);
    else if (!uv_is_closing((uv_handle_t *)&l->tcp))
        uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

int worker_listen(worker_t *w)
{
    const cfg_t *cfg = w->cfg;
    for (size_t k = 0; k < cfg->n_listeners; k++) {
        listener_t *l = calloc(1, sizeof(*l));
        if (l == NULL)
            abort();
        w->listeners[k] = l;
        w->n_listeners = k + 1;
        int err = open_listener(w, l, &cfg->listeners[k]);
        if (err < 0) {
            log_err("cannot listen on :%d: %s", cfg->listeners[k].port, uv_strerror(err));
            return err;
        }
    }
    return 0;
}

static void gen_release(worker_gen_t *g)
{
    cfg_unref(g->cfg);
    up_targets_unref(g->targets);
    free(g);
}

/* On the worker's thread: take the new config. Listeners on the same port
 * and scheme stay (they serve the new sites from now on); others close or
 * open. Connections keep the config they were accepted with. */
static void take_reload(worker_t *w, worker_gen_t *g)
{
    cfg_t *cfg = g->cfg;
    listener_t **next = calloc(cfg->n_listeners + 1, sizeof(*next));
    if (next == NULL)
        abort();
    for (size_t k = 0; k < cfg->n_listeners; k++) {
        const cfg_listener_t *cl = &cfg->listeners[k];
        for (size_t i = 0; i < w->n_listeners && next[k] == NULL; i++) {
            listener_t *l = w->listeners[i];
            if (l != NULL && l->cl->port == cl->port && l->cl->scheme == cl->scheme) {
                l->cl = cl;
                next[k] = l;
                w->listeners[i] = NULL;
            }
        }
        if (next[k] == NULL) {
            listener_t *l = calloc(1, sizeof(*l));
            int err = l != NULL ? open_listener(w, l, cl) : UV_ENOMEM;
            if (err < 0) {
                if (w->index == 0)
                    log_err("reload: cannot listen on :%d: %s", cl->port, uv_strerror(err));
                close_listener(l);
                continue;
            }
            next[k] = l;
            if (w->index == 0)
                log_info("listening on :%d (%s)", cl->port,
                         cl->scheme == CFG_SCHEME_HTTPS ? "https" : "http");
        }
    }
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i] != NULL)
            close_listener(w->listeners[i]); /* a port the new config does not use */
    free(w->listeners);
    /* compact: listeners that failed to open leave holes */
    size_t n = 0;
    for (size_t k = 0; k < cfg->n_listeners; k++)
        if (next[k] != NULL)
            next[n++] = next[k];
    w->listeners = next;
    w->n_listeners = n;
    cfg_unref(w->cfg);
    w->cfg = cfg; /* the references come with G */
    up_targets_unref(w->targets);
    w->targets = g->targets;
    w->tls = g->tls;
    w->max_conns = g->max_conns;
    free(g);
    up_pools_retire(&w->up, w->targets);
    w->ops->reloaded(w);
}

/* The loop ends once these last handles (and the connections') close. */
static void worker_finish(worker_t *w)
{
    if (w->finished)
        return;
    w->finished = 1;
    up_pools_close_idle(&w->up);
    uv_close((uv_handle_t *)&w->grace, NULL);
    uv_close((uv_handle_t *)&w->tls_sweep, NULL);
    uv_close((uv_handle_t *)&w->trim, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
}

void worker_drained(worker_t *w)
{
    if (w->draining && w->conns == NULL)
        worker_finish(w);
}

static void on_grace_over(uv_timer_t *t)
{
    worker_t *w = t->data;
    log_warn("worker %d: grace period over: closing %u connection%s still busy", w->index,
             w->n_conns, w->n_conns == 1 ? "" : "s");
    w->ops->close_all(w);
    worker_finish(w);
}

/* Runs on the worker's own thread: a new config, or a graceful stop. */
static void on_wakeup(uv_async_t *a)
{
    worker_t *w = a->data;
    worker_gen_t *g = atomic_exchange(&w->reload, NULL);
    if (g != NULL) {
        if (w->draining)
            gen_release(g);
        else
            take_reload(w, g);
    }
    if (!atomic_load(&w->stop) || w->draining)
        return;
    w->draining = 1;
    for (size_t i = 0; i < w->n_listeners; i++)
        close_listener(w->listeners[i]);
    w->n_listeners = 0;
    w->ops->drain(w);
    up_pools_close_idle(&w->up);
    if (w->conns == NULL) {
        worker_finish(w);
        return;
    }
    uint64_t grace = w->cfg->grace_period != 0 ? w->cfg->grace_period : WORKER_GRACE_MS;
    uv_timer_start(&w->grace, on_grace_over, grace, 0);
}

static void on_trim(uv_timer_t *t)
{
    worker_t *w = t->data;
    up_pools_retire(&w->up, w->targets); /* of upstreams a reload removed, once unused */
    size_t n = buf_pool_trim(&w->bufs, WORKER_KEEP_BUFS) +
               buf_pool_trim(&w->tables, WORKER_KEEP_BUFS) +
               buf_pool_trim(&w->h2_streams, WORKER_KEEP_BUFS) +
               buf_pool_trim(&w->stream_xs, WORKER_KEEP_BUFS) +
               buf_pool_trim(&w->xreqs, WORKER_KEEP_BUFS) +
               buf_pool_trim(&w->wreqs, WORKER_KEEP_BUFS);
    /* free() alone keeps the pages of a thread's arena mapped */
    if (n > 0)
        malloc_trim(0);
}

size_t worker_buffer_size(const cfg_t *cfg)
{
    /* a whole head must fit, with room left for the fields we add */
    size_t size = cfg->max_header_size + 4096;
    if (size < 16384)
        size = 16384;
    return (size + 4095) & ~(size_t)4095;
}

void worker_init(worker_t *w, int index, worker_gen_t gen, const struct alog *alog,
                 const worker_conn_ops_t *ops)
{
    memset(w, 0, sizeof(*w));
    w->index = index;
    w->cfg = gen.cfg;
    w->targets = gen.targets;
    w->tls = gen.tls;
    w->max_conns = gen.max_conns;
    w->alog = alog;
    w->ops = ops;
    atomic_init(&w->stop, 0);
    atomic_init(&w->reload, NULL);
    uv_loop_init(&w->loop);
    buf_pool_init(&w->bufs, worker_buffer_size(gen.cfg), WORKER_MAX_FREE_BUFS);
    buf_pool_init(&w->tables, HTTP_HDR_TABLE_SIZE, WORKER_MAX_FREE_BUFS);
    ops->init_pools(w, WORKER_MAX_FREE_BUFS);
    metrics_init(&w->metrics);
    deadline_queue_init(&w->loop, &w->deadlines);
    buf_pool_init(&w->wreqs, sizeof(uv_write_t), WORKER_MAX_FREE_BUFS);
    up_pools_init(&w->up, &w->loop, &w->deadlines, &w->wreqs, &w->bufs, &w->tables, &w->stop,
                  &w->metrics, index);
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->grace);
    w->grace.data = w;
    uv_timer_init(&w->loop, &w->tls_sweep);
    w->tls_sweep.data = w;
    uv_timer_init(&w->loop, &w->trim);
    w->trim.data = w;
    uv_timer_start(&w->trim, on_trim, WORKER_TRIM_MS, WORKER_TRIM_MS);
    w->listeners = calloc(gen.cfg->n_listeners + 1, sizeof(*w->listeners));
    if (w->listeners == NULL)
        abort();
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

int worker_start(worker_t *w)
{
    return uv_thread_create(&w->thread, worker_main, w);
}

void worker_reload(worker_t *w, worker_gen_t gen)
{
    worker_gen_t *g = malloc(sizeof(*g));
    if (g == NULL)
        abort();
    *g = gen;
    worker_gen_t *prev = atomic_exchange(&w->reload, g);
    if (prev != NULL) /* two reloads before the worker woke: the last wins */
        gen_release(prev);
    uv_async_send(&w->wakeup);
}

void worker_stop(worker_t *w)
{
    atomic_store(&w->stop, 1);
    uv_async_send(&w->wakeup);
}

void worker_dispose(worker_t *w)
{
    deadline_queue_close(&w->deadlines); /* every clock is closed by now */
    uv_run(&w->loop, UV_RUN_NOWAIT); /* run the close callbacks */
    up_pools_free(&w->up);
    uv_loop_close(&w->loop);
    buf_pool_dispose(&w->bufs);
    buf_pool_dispose(&w->tables);
    buf_pool_dispose(&w->h2_streams);
    buf_pool_dispose(&w->stream_xs);
    buf_pool_dispose(&w->xreqs);
    buf_pool_dispose(&w->wreqs);
    metrics_dispose(&w->metrics);
    free(w->listeners);
    worker_gen_t *g = atomic_exchange(&w->reload, NULL);
    if (g != NULL)
        gen_release(g);
    cfg_unref(w->cfg);
    up_targets_unref(w->targets);
    w->targets = NULL;
}

void worker_join(worker_t *w)
{
    uv_thread_join(&w->thread);
    worker_dispose(w);
}

void worker_abort(worker_t *w)
{
    atomic_store(&w->stop, 1);
    on_wakeup(&w->wakeup);
    worker_dispose(w);
}
