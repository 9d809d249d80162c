/* Routing a request head to a site and a handler. See route.h. */
#include "route.h"

#include <string.h>

#include "chal.h"
#include "handler.h"

/* The site on L whose host matches HOST, else NULL; *ANY is set to the
 * catch-all site (host ""), if there is one. */
static const cfg_site_t *site_of(const cfg_listener_t *l, uv_buf_t host, const cfg_site_t **any)
{
    *any = NULL;
    for (size_t i = 0; i < l->n_sites; i++) {
        const cfg_site_t *s = l->sites[i];
        for (size_t a = 0; a < s->n_addrs; a++) {
            const cfg_addr_t *addr = &s->addrs[a];
            if (addr->port != l->port)
                continue;
            if (addr->host[0] == '\0') {
                if (*any == NULL)
                    *any = s;
            } else if (cfg_match_host(addr->host, host.base, host.len)) {
                return s;
            }
        }
    }
    return NULL;
}

/* The port of an HTTPS site serving HOST, https_port when one there does
 * (Caddy prefers it for a name on several ports); 0 when none serves it. */
static int https_port_of(const cfg_t *cfg, uv_buf_t host)
{
    int port = 0;
    if (host.len == 0)
        return 0; /* no Host (HTTP/1.0) matches no host name */
    for (size_t i = 0; i < cfg->n_sites; i++)
        for (size_t a = 0; a < cfg->sites[i].n_addrs; a++) {
            const cfg_addr_t *addr = &cfg->sites[i].addrs[a];
            if (addr->scheme == CFG_SCHEME_HTTPS && addr->host[0] != '\0' &&
                cfg_match_host(addr->host, host.base, host.len) &&
                (port == 0 || addr->port == cfg->https_port))
                port = addr->port;
        }
    return port;
}

/* HTTP-01 on http_port: a challenge is pending for the token in PATH. */
static int acme_pending(const cfg_t *cfg, const cfg_listener_t *l, int https, uv_buf_t path)
{
    const size_t plen = sizeof(ROUTE_ACME_PREFIX) - 1;
    char ka[512];
    return l->port == cfg->http_port && !https && path.len > plen &&
           memcmp(path.base, ROUTE_ACME_PREFIX, plen) == 0 &&
           chal_http_get(path.base + plen, path.len - plen, ka, sizeof(ka)) == 0;
}

static int handler_id_of(int kind)
{
    switch (kind) {
    case CFG_H_PROXY:
        return HANDLER_REVERSE_PROXY;
    case CFG_H_RESPOND:
        return HANDLER_RESPOND;
    case CFG_H_REDIR:
        return HANDLER_REDIR;
    default:
        return HANDLER_NONE;
    }
}

void route_pick(route_t *r, const cfg_t *cfg, const cfg_listener_t *l, int https,
                const http_vars_t *v)
{
    /* field by field: the filter array is filled only as far as n_filters */
    r->site = NULL;
    r->handler = NULL;
    r->id = HANDLER_NONE;
    r->port = 0;
    r->body_limit = 0;
    r->n_filters = 0;
    if (acme_pending(cfg, l, https, v->path)) {
        r->id = HANDLER_ACME_HTTP01;
        return;
    }
    const cfg_site_t *any = NULL;
    r->site = site_of(l, v->host, &any);
    if (r->site == NULL && l->redirect_https) {
        int port = l->redirect_hosts ? https_port_of(cfg, v->host) : 0;
        if (port == 0 && any == NULL)
            port = cfg->https_port;
        if (port != 0) {
            r->id = HANDLER_HTTPS_REDIRECT;
            r->port = port;
            return;
        }
    }
    if (r->site == NULL)
        r->site = any;
    r->id = HANDLER_RESPOND; /* no terminal handler: Caddy answers an empty 200 */
    if (r->site == NULL)
        return;
    const cfg_site_t *s = r->site;
    for (size_t i = 0; i < s->n_handlers; i++) {
        const cfg_handler_t *h = &s->handlers[i];
        if (h->match != NULL && !cfg_match_path(h->match, v->path.base, v->path.len))
            continue;
        if (filter_id_of(h->kind) != FILTER_NONE) {
            /* config keeps a site to ROUTE_MAX_FILTERS of them */
            r->filters[r->n_filters++] = h;
            continue;
        }
        if (h->kind == CFG_H_REQUEST_BODY) {
            /* Caddy wraps the body once per matching request_body, so
             * every limit holds: the smallest wins (0 is no limit) */
            uint64_t max = h->u.request_body.max_size;
            if (max != 0 && (r->body_limit == 0 || max < r->body_limit))
                r->body_limit = max;
            continue;
        }
        r->handler = h;
        r->id = handler_id_of(h->kind);
        break;
    }
}
