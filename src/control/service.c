/* The service: the workers and what they share (config, certificate store,
 * TLS context, access logs, upstream table), started, reloaded and stopped
 * from the control loop with its own services (health checks, ACME). */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "acme.h"
#include "common.h"
#include "conn.h"
#include "health.h"
#include "log.h"

/* descriptors max_connections' default leaves for listeners, logs, ACME */
#define SRV_FD_RESERVE 64

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
        return PS_ECONFIG;
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
        int err_code = certs_entry_load(site->tls.cert_file, site->tls.key_file, &e, err,
                                        sizeof(err));
        if (err_code != 0) {
            log_err("%s:%d: tls: %s", site->file, site->tls.line, err);
            if (rc == 0)
                rc = err_code; /* the first failure's: every one is logged */
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
        return PS_ECONFIG;
    }
    ac.on_fatal = s->on_fatal;
    ac.fatal_arg = s->fatal_arg;
    char err[1024];
    s->acme = acme_new(loop, &ac, s->certs, err, sizeof(err));
    if (s->acme == NULL) {
        log_err("acme: %s", err);
        return PS_ECONFIG; /* its settings or its storage cannot work */
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
    int rc = cfg_load(path, &cfg, err, sizeof(err));
    if (rc != 0) {
        log_err("reload: %s; the running configuration stays", err);
        return rc;
    }
    if ((rc = alog_open(&s->alog, cfg, err, sizeof(err))) != 0) {
        log_err("reload: %s; the running configuration stays", err);
        cfg_unref(cfg);
        return rc;
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
            return PS_EPROTO; /* OpenSSL would not make the context */
        }
    }
    if (s->tls != NULL)
        tls_server_set_h2(s->tls, (cfg->protocols & CFG_PROTO_H2) != 0);
    if (https && (rc = srv_load_certs(s, cfg)) != 0) {
        log_err("reload: the running configuration stays");
        cfg_unref(cfg);
        return rc;
    }
    /* Upstreams named again keep their target (health, pools); the old
     * table lives while connections accepted under it do. */
    up_targets_t *old_targets = s->targets;
    s->targets = up_targets_new(cfg, old_targets);
    up_targets_unref(old_targets);
    for (int i = 0; i < s->n_workers; i++)
        worker_reload(&s->workers[i], (worker_gen_t){cfg_ref(cfg), up_targets_ref(s->targets),
                                                     s->tls, conn_cap(cfg, s->n_workers)});
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
        worker_init(w, i, (worker_gen_t){cfg_ref(cfg), up_targets_ref(s->targets), s->tls,
                                         conn_cap(cfg, n)},
                    &s->alog, &conn_worker_ops);
        s->n_workers = i + 1;
        if ((err = worker_listen(w)) < 0)
            goto fail;
    }
    for (size_t k = 0; k < cfg->n_listeners; k++)
        log_info("listening on :%d (%s, %zu site%s)", cfg->listeners[k].port,
                 cfg->listeners[k].scheme == CFG_SCHEME_HTTPS ? "https" : "http",
                 cfg->listeners[k].n_sites, cfg->listeners[k].n_sites == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        if ((err = worker_start(&s->workers[i])) < 0) {
            log_err("cannot start worker %d: %s", i, uv_strerror(err));
            /* threads already running are stopped by srv_stop */
            s->n_workers = i;
            for (int j = i; j < n; j++)
                worker_abort(&s->workers[j]);
            return err;
        }
    }
    log_info("psproxy %s started: %d worker%s", PSPROXY_VERSION, n, n == 1 ? "" : "s");
    return 0;

fail:
    for (int i = 0; i < s->n_workers; i++)
        worker_abort(&s->workers[i]);
    srv_free_shared(s);
    return err;
}

void srv_stop(srv_t *s)
{
    for (int i = 0; i < s->n_workers; i++)
        worker_stop(&s->workers[i]);
    for (int i = 0; i < s->n_workers; i++)
        worker_join(&s->workers[i]);
    srv_free_shared(s);
}
