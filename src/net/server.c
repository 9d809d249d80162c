/* Workers: one thread and event loop each, with their own SO_REUSEPORT
 * listeners so the kernel spreads connections without a shared accept
 * lock; each keeps its connections and upstream pools to itself. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "acme.h"
#include "conn.h"
#include "health.h"
#include "log.h"
#include "upstream.h"

#define SRV_BACKLOG 1024
#define SRV_MAX_FREE_BUFS 256
/* Pooled buffers unused for a whole SRV_TRIM_MS go back to the system,
 * but SRV_KEEP_BUFS: after a burst a t3.micro wants its memory back. */
#define SRV_TRIM_MS 10000
#define SRV_KEEP_BUFS 4
/* descriptors max_connections' default leaves for listeners, logs, ACME */
#define SRV_FD_RESERVE 64
#define SRV_ACCEPT_WARN_MS 10000 /* accept trouble is logged at most this often */
#define SRV_GRACE_MS 5000 /* grace_period's default: in-flight requests may finish */

uint32_t srv_rand(worker_t *w)
{
    /* xorshift32: cheap, per worker, good enough to spread load */
    uint32_t x = w->rand_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    w->rand_state = x;
    return x;
}

/* A worker's share of max_connections; by default the open-file limit
 * less a reserve, halved because a client connection may hold an upstream
 * one too. Past it the worker stops accepting rather than run out of
 * descriptors (nginx's worker_connections). */
static unsigned conn_cap(const cfg_t *cfg, int n_workers)
{
    long total = cfg->max_connections;
    if (total == 0) {
        struct rlimit rl;
        rlim_t nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
        if (nofile == RLIM_INFINITY || nofile > 10000000)
            nofile = 10000000;
        rlim_t reserve = nofile / 4 < SRV_FD_RESERVE ? nofile / 4 : SRV_FD_RESERVE;
        total = (long)(nofile - reserve) / 2;
    }
    long share = total / (n_workers > 0 ? n_workers : 1);
    return share < 1 ? 1 : (unsigned)share;
}

static void warn_accept(worker_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Overload is logged once per SRV_ACCEPT_WARN_MS, not once per connection. */
static void warn_accept(worker_t *w, const char *fmt, ...)
{
    uint64_t now = uv_now(&w->loop);
    if (w->accept_warned_at != 0 && now - w->accept_warned_at < SRV_ACCEPT_WARN_MS)
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
    conn_accept(l); /* a failure there closes it: srv_conn_closed() */
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
         * srv_conn_closed() takes it; the rest wait in the kernel's backlog */
        l->paused = 1;
        warn_accept(w, "%u connections open, the limit (max_connections): accepting paused",
                    w->n_conns);
        return;
    }
    take_connection(l);
}

void srv_conn_closed(worker_t *w)
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
    return uv_listen((uv_stream_t *)&l->tcp, SRV_BACKLOG, on_connection);
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

/* On the worker's thread: take the new config. Listeners on the same port
 * and scheme stay (they serve the new sites from now on); others close or
 * open. Connections keep the config they were accepted with. */
static void take_reload(worker_t *w, struct reload *r)
{
    cfg_t *cfg = r->cfg;
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
    w->cfg = cfg; /* the reference comes with R */
    up_targets_unref(w->targets);
    w->targets = r->targets; /* so does this one */
    w->tls = r->tls;
    w->max_conns = r->max_conns;
    free(r);
    up_pools_retire(w);
    /* HTTP/2 clients reconnect for the new config (GOAWAY), as Caddy's do;
     * an HTTP/1.1 connection takes it at its next one */
    for (conn_t *c = w->conns; c != NULL; c = c->next)
        if (c->state == CONN_S_H2)
            h2_goaway(c);
}

/* The loop ends once these last handles (and the connections') close. */
static void worker_finish(worker_t *w)
{
    if (w->finished)
        return;
    w->finished = 1;
    up_pools_close_idle(w);
    uv_close((uv_handle_t *)&w->grace, NULL);
    uv_close((uv_handle_t *)&w->tls_sweep, NULL);
    uv_close((uv_handle_t *)&w->trim, NULL);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
}

void srv_worker_drained(worker_t *w)
{
    if (w->draining && w->conns == NULL)
        worker_finish(w);
}

static void on_grace_over(uv_timer_t *t)
{
    worker_t *w = t->data;
    int n = 0;
    for (conn_t *c = w->conns; c != NULL; c = c->next)
        n++;
    log_warn("worker %d: grace period over: closing %d connection%s still busy", w->index, n,
             n == 1 ? "" : "s");
    while (w->conns != NULL)
        conn_close(w->conns);
    worker_finish(w);
}

/* Runs on the worker's own thread: a graceful stop. No new connections;
 * idle keep-alives close now; requests in flight finish (their connections
 * close after the response) until grace_period, then everything closes. */
static void on_wakeup(uv_async_t *a)
{
    worker_t *w = a->data;
    struct reload *r = atomic_exchange(&w->reload, NULL);
    if (r != NULL) {
        if (w->draining) {
            cfg_unref(r->cfg);
            free(r);
        } else {
            take_reload(w, r);
        }
    }
    if (!atomic_load(&w->stop) || w->draining)
        return;
    w->draining = 1;
    for (size_t i = 0; i < w->n_listeners; i++)
        close_listener(w->listeners[i]);
    w->n_listeners = 0;
    for (conn_t *c = w->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_drain(c);
    }
    up_pools_close_idle(w);
    if (w->conns == NULL) {
        worker_finish(w);
        return;
    }
    uint64_t grace = w->cfg->grace_period != 0 ? w->cfg->grace_period : SRV_GRACE_MS;
    uv_timer_start(&w->grace, on_grace_over, grace, 0);
}

static void on_trim(uv_timer_t *t)
{
    worker_t *w = t->data;
    up_pools_retire(w); /* of upstreams a reload removed, once unused */
    size_t n = buf_pool_trim(&w->bufs, SRV_KEEP_BUFS) + buf_pool_trim(&w->tables, SRV_KEEP_BUFS);
    /* free() alone keeps the pages of a thread's arena mapped */
    if (n > 0)
        malloc_trim(0);
}

static void worker_main(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static size_t io_buffer_size(const cfg_t *cfg)
{
    /* a whole head must fit, with room left for the fields we add */
    size_t size = cfg->max_header_size + 4096;
    if (size < 16384)
        size = 16384;
    return (size + 4095) & ~(size_t)4095;
}

static void worker_dispose(worker_t *w)
{
    uv_run(&w->loop, UV_RUN_NOWAIT); /* run the close callbacks */
    up_pools_free(w);
    uv_loop_close(&w->loop);
    buf_pool_dispose(&w->bufs);
    buf_pool_dispose(&w->tables);
    metrics_dispose(&w->metrics);
    free(w->listeners);
    struct reload *r = atomic_exchange(&w->reload, NULL);
    if (r != NULL) {
        cfg_unref(r->cfg);
        up_targets_unref(r->targets);
        free(r);
    }
    cfg_unref(w->cfg);
    up_targets_unref(w->targets);
    w->targets = NULL;
}

/* What the workers shared, once they are gone. */
static void srv_free_shared(srv_t *s)
{
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
    tls_server_free(s->tls);
    s->tls = NULL;
    certs_free(s->certs);
    s->certs = NULL;
    cfg_unref(s->cfg);
    s->cfg = NULL;
    up_targets_unref(s->targets);
    s->targets = NULL;
    alog_close(&s->alog);
}

int srv_load_certs(srv_t *s, const cfg_t *cfg)
{
    char why[1024];
    if (cfg_check_certs(cfg, why, sizeof(why)) != 0) {
        log_err("%s", why); /* a site the ACME client cannot serve */
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const cfg_site_t *site = &cfg->sites[i];
        int https = 0;
        for (size_t a = 0; a < site->n_addrs; a++)
            https |= site->addrs[a].scheme == CFG_SCHEME_HTTPS;
        if (!https)
            continue;
        if (site->tls.cert_file == NULL)
            continue; /* its names are the ACME client's (srv_start_control) */
        char err[512];
        certs_entry_t *e = NULL;
        if (certs_entry_load(site->tls.cert_file, site->tls.key_file, &e, err, sizeof(err)) !=
            0) {
            log_err("%s:%d: tls: %s", site->file, site->tls.line, err);
            rc = -1;
            continue;
        }
        for (size_t a = 0; a < site->n_addrs; a++)
            if (site->addrs[a].scheme == CFG_SCHEME_HTTPS)
                certs_put(s->certs, site->addrs[a].host[0] ? site->addrs[a].host : "*", e);
        log_info("tls: %s serves %s (expires in %lld days)", site->addrs[0].host,
                 site->tls.cert_file, (long long)(e->not_after - time(NULL)) / 86400);
        certs_entry_unref(e);
    }
    return rc;
}

static const char *default_storage(void)
{
    static char path[4096];
    const char *state = getenv("STATE_DIRECTORY"); /* systemd's StateDirectory= */
    const char *home = getenv("HOME");
    if (state != NULL && state[0] != '\0')
        snprintf(path, sizeof(path), "%.*s", (int)strcspn(state, ":"), state);
    else if (geteuid() == 0 || home == NULL)
        snprintf(path, sizeof(path), "/var/lib/psproxy");
    else
        snprintf(path, sizeof(path), "%s/.local/share/psproxy", home);
    return path;
}

size_t srv_managed_names(const cfg_t *cfg, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const cfg_site_t *site = &cfg->sites[i];
        if (site->tls.cert_file != NULL)
            continue;
        for (size_t a = 0; a < site->n_addrs; a++)
            if (site->addrs[a].scheme == CFG_SCHEME_HTTPS && site->addrs[a].host[0] != '\0' &&
                n < max)
                names[n++] = site->addrs[a].host;
    }
    return n;
}

void srv_acme_config(const cfg_t *cfg, acme_config_t *ac)
{
    memset(ac, 0, sizeof(*ac));
    ac->directory = cfg->acme_ca != NULL ? cfg->acme_ca : ACME_LETSENCRYPT;
    ac->ca_root = cfg->acme_ca_root;
    ac->email = cfg->email;
    ac->profile = cfg->acme_profile;
    for (size_t i = 0; i < cfg->n_sites && ac->email == NULL; i++)
        ac->email = cfg->sites[i].tls.email; /* tls EMAIL in a site, as Caddy */
    ac->storage = cfg->storage_root != NULL ? cfg->storage_root : default_storage();
    if (cfg->storage_kind == CFG_STORAGE_POSTGRES) {
        ac->shared_dsn = cfg->storage_dsn;
        ac->shared_key_file = cfg->storage_key_file;
    }
    ac->challenges = cfg->acme_challenges != 0 ? cfg->acme_challenges
                                               : ACME_HTTP_01 | ACME_TLS_ALPN_01;
    int http_listener = 0;
    for (size_t k = 0; k < cfg->n_listeners; k++)
        http_listener |= cfg->listeners[k].port == cfg->http_port &&
                         cfg->listeners[k].scheme == CFG_SCHEME_HTTP;
    if (!http_listener)
        ac->challenges &= ~ACME_HTTP_01; /* nothing answers on http_port */
    /* shared storage shares HTTP-01 answers only: a TLS-ALPN-01 validation
     * reaching another host would fail, and its retry be a second order */
    else if (cfg->storage_kind == CFG_STORAGE_POSTGRES && cfg->acme_challenges == 0)
        ac->challenges = ACME_HTTP_01;
}

int srv_start_control(srv_t *s, uv_loop_t *loop)
{
    const cfg_t *cfg = s->cfg;
    s->health = health_start(loop, cfg, s->targets);
    const char *names[256];
    size_t n = s->certs != NULL ? srv_managed_names(cfg, names, PS_ARRAY_SIZE(names)) : 0;
    if (n == 0)
        return 0;
    acme_config_t ac;
    srv_acme_config(cfg, &ac);
    if (ac.challenges == 0) {
        log_err("acme: no challenge type is possible: http-01 needs a listener on http_port "
                "(:%d)", cfg->http_port);
        return -1;
    }
    ac.on_fatal = s->on_fatal;
    ac.fatal_arg = s->fatal_arg;
    char err[1024];
    s->acme = acme_new(loop, &ac, s->certs, err, sizeof(err));
    if (s->acme == NULL) {
        log_err("acme: %s", err);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        acme_manage(s->acme, names[i]);
    return 0;
}

static const char *default_cert_name(const cfg_t *cfg);

int srv_reload(srv_t *s, const char *path, uv_loop_t *loop)
{
    char err[1024];
    cfg_t *cfg = NULL;
    if (cfg_load(path, &cfg, err, sizeof(err)) != 0) {
        log_err("reload: %s; the running configuration stays", err);
        return -1;
    }
    if (alog_open(&s->alog, cfg, err, sizeof(err)) != 0) {
        log_err("reload: %s; the running configuration stays", err);
        cfg_unref(cfg);
        return -1;
    }
    int https = 0;
    for (size_t k = 0; k < cfg->n_listeners; k++)
        https |= cfg->listeners[k].scheme == CFG_SCHEME_HTTPS;
    if (https && s->certs == NULL) {
        s->certs = certs_new();
        s->tls = tls_server_new(s->certs, default_cert_name(cfg), err, sizeof(err));
        if (s->tls == NULL) {
            log_err("reload: %s; the running configuration stays", err);
            cfg_unref(cfg);
            return -1;
        }
    }
    if (s->tls != NULL)
        tls_server_set_h2(s->tls, (cfg->protocols & CFG_PROTO_H2) != 0);
    if (https && srv_load_certs(s, cfg) != 0) {
        log_err("reload: the running configuration stays");
        cfg_unref(cfg);
        return -1;
    }
    /* Upstreams named again keep their target (health, pools); the old
     * table lives while connections accepted under it do. */
    up_targets_t *old_targets = s->targets;
    s->targets = up_targets_new(cfg, old_targets);
    up_targets_unref(old_targets);
    for (int i = 0; i < s->n_workers; i++) {
        worker_t *w = &s->workers[i];
        struct reload *r = malloc(sizeof(*r));
        if (r == NULL)
            abort();
        r->cfg = cfg_ref(cfg);
        r->max_conns = conn_cap(cfg, s->n_workers);
        r->targets = up_targets_ref(s->targets);
        r->tls = s->tls;
        struct reload *prev = atomic_exchange(&w->reload, r);
        if (prev != NULL) { /* two reloads before the worker woke: the last wins */
            cfg_unref(prev->cfg);
            up_targets_unref(prev->targets);
            free(prev);
        }
        uv_async_send(&w->wakeup);
    }
    cfg_unref(s->cfg);
    s->cfg = cfg;
    /* the control loop's services follow: checks of the new upstreams, and
     * certificates for names new to ACME */
    health_stop(s->health);
    s->health = health_start(loop, cfg, s->targets);
    const char *names[256];
    size_t n = srv_managed_names(cfg, names, PS_ARRAY_SIZE(names));
    if (n > 0 && s->acme == NULL) {
        health_t *h = s->health;
        s->health = NULL; /* srv_start_control starts them again */
        health_stop(h);
        if (srv_start_control(s, loop) != 0)
            log_err("reload: the ACME client did not start; its names get no certificate");
    } else {
        for (size_t i = 0; i < n; i++)
            acme_manage(s->acme, names[i]);
    }
    log_info("reload: %s is serving", path);
    return 0;
}

void srv_stop_control(srv_t *s)
{
    acme_free(s->acme);
    s->acme = NULL;
    health_stop(s->health);
    s->health = NULL;
}

/* The certificate for clients without SNI: default_sni, else the only
 * HTTPS host there is, else a catch-all HTTPS site's. */
static const char *default_cert_name(const cfg_t *cfg)
{
    if (cfg->default_sni != NULL)
        return cfg->default_sni;
    const char *only = NULL;
    int n = 0;
    for (size_t i = 0; i < cfg->n_sites; i++)
        for (size_t a = 0; a < cfg->sites[i].n_addrs; a++) {
            const cfg_addr_t *addr = &cfg->sites[i].addrs[a];
            if (addr->scheme != CFG_SCHEME_HTTPS)
                continue;
            if (addr->host[0] == '\0')
                return "*"; /* a catch-all HTTPS site */
            if (only == NULL || strcmp(only, addr->host) != 0) {
                only = addr->host;
                n++;
            }
        }
    return n == 1 ? only : NULL;
}

int srv_start(srv_t *s, cfg_t *cfg)
{
    int n = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
    if (n < 1)
        n = 1;
    s->cfg = cfg_ref(cfg);
    char msg[1024];
    if (alog_open(&s->alog, cfg, msg, sizeof(msg)) != 0) {
        log_err("%s", msg);
        cfg_unref(s->cfg);
        s->cfg = NULL;
        return PS_ECONFIG;
    }
    int https = 0;
    for (size_t k = 0; k < cfg->n_listeners; k++)
        https |= cfg->listeners[k].scheme == CFG_SCHEME_HTTPS;
    if (https) {
        s->certs = certs_new();
        s->tls = tls_server_new(s->certs, default_cert_name(cfg), msg, sizeof(msg));
        if (s->tls != NULL)
            tls_server_set_h2(s->tls, (cfg->protocols & CFG_PROTO_H2) != 0);
        if (s->tls == NULL || srv_load_certs(s, cfg) != 0) {
            if (s->tls == NULL)
                log_err("%s", msg);
            srv_free_shared(s);
            return PS_ECONFIG;
        }
    }
    s->targets = up_targets_new(cfg, NULL);
    s->workers = calloc((size_t)n, sizeof(worker_t));
    if (s->workers == NULL)
        abort();
    int err = 0;
    for (int i = 0; i < n; i++) {
        worker_t *w = &s->workers[i];
        w->index = i;
        w->max_conns = conn_cap(cfg, n);
        w->cfg = cfg_ref(cfg);
        w->targets = up_targets_ref(s->targets);
        w->alog = &s->alog;
        w->tls = s->tls;
        w->rand_state = (uint32_t)(uv_hrtime() ^ ((uint64_t)i * 2654435761u)) | 1;
        atomic_init(&w->stop, 0);
        uv_loop_init(&w->loop);
        buf_pool_init(&w->bufs, io_buffer_size(cfg), SRV_MAX_FREE_BUFS);
        buf_pool_init(&w->tables, HTTP_HDR_TABLE_SIZE, SRV_MAX_FREE_BUFS);
        metrics_init(&w->metrics);
        uv_async_init(&w->loop, &w->wakeup, on_wakeup);
        w->wakeup.data = w;
        uv_timer_init(&w->loop, &w->grace);
        w->grace.data = w;
        uv_timer_init(&w->loop, &w->tls_sweep);
        w->tls_sweep.data = w;
        uv_timer_init(&w->loop, &w->trim);
        w->trim.data = w;
        uv_timer_start(&w->trim, on_trim, SRV_TRIM_MS, SRV_TRIM_MS);
        w->listeners = calloc(cfg->n_listeners + 1, sizeof(*w->listeners));
        if (w->listeners == NULL)
            abort();
        atomic_init(&w->reload, NULL);
        s->n_workers = i + 1;
        for (size_t k = 0; k < cfg->n_listeners; k++) {
            listener_t *l = calloc(1, sizeof(*l));
            if (l == NULL)
                abort();
            w->listeners[k] = l;
            w->n_listeners = k + 1;
            err = open_listener(w, l, &cfg->listeners[k]);
            if (err < 0) {
                log_err("cannot listen on :%d: %s", cfg->listeners[k].port, uv_strerror(err));
                goto fail;
            }
        }
    }
    for (size_t k = 0; k < cfg->n_listeners; k++)
        log_info("listening on :%d (%s, %zu site%s)", cfg->listeners[k].port,
                 cfg->listeners[k].scheme == CFG_SCHEME_HTTPS ? "https" : "http",
                 cfg->listeners[k].n_sites, cfg->listeners[k].n_sites == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        if ((err = uv_thread_create(&s->workers[i].thread, worker_main, &s->workers[i])) < 0) {
            log_err("cannot start worker %d: %s", i, uv_strerror(err));
            /* threads already running are stopped by srv_stop */
            s->n_workers = i;
            for (int j = i; j < n; j++) {
                atomic_store(&s->workers[j].stop, 1);
                on_wakeup(&s->workers[j].wakeup);
                worker_dispose(&s->workers[j]);
            }
            return err;
        }
    }
    log_info("psproxy %s started: %d worker%s", PSPROXY_VERSION, n, n == 1 ? "" : "s");
    return 0;

fail:
    for (int i = 0; i < s->n_workers; i++) {
        worker_t *w = &s->workers[i];
        atomic_store(&w->stop, 1);
        on_wakeup(&w->wakeup);
        worker_dispose(w);
    }
    srv_free_shared(s);
    return err;
}

void srv_stop(srv_t *s)
{
    for (int i = 0; i < s->n_workers; i++) {
        atomic_store(&s->workers[i].stop, 1);
        uv_async_send(&s->workers[i].wakeup);
    }
    for (int i = 0; i < s->n_workers; i++) {
        uv_thread_join(&s->workers[i].thread);
        worker_dispose(&s->workers[i]);
    }
    srv_free_shared(s);
}
