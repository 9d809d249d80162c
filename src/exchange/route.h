/* Routing: which site serves a request, which handler runs, and what the
 * site wraps around it (`header` ops, `request_body` limits), decided from
 * the request head alone, in Caddy's order. Matchers are evaluated here;
 * the routing issue grows them (handle, route, named matchers). */
#ifndef PS_ROUTE_H
#define PS_ROUTE_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "filter.h"
#include "http.h"

/* Every filter-making directive of a site may match (config enforces it). */
#define ROUTE_MAX_FILTERS CFG_MAX_SITE_HEADERS

typedef struct route {
    const cfg_site_t *site;       /* NULL: no site serves the host */
    const cfg_handler_t *handler; /* the terminal handler's config; NULL: none */
    int id;                       /* enum handler_id: what runs */
    int port;                     /* HANDLER_HTTPS_REDIRECT: the HTTPS port named */
    uint64_t body_limit;          /* the smallest matching request_body max_size; 0: none */
    /* the response filters (filter.h): every matching `header`, in route
     * order */
    const cfg_handler_t *filters[ROUTE_MAX_FILTERS];
    unsigned n_filters;
} route_t;

/* Routes a request with the variables V of its head that came on listener
 * L of CFG (HTTPS: over TLS). Caddy's order on http_port (autohttps.go): a
 * pending ACME HTTP-01 challenge, the sites whose host matches, the
 * redirects for the HTTPS sites' hosts, the catch-all site, then a
 * redirect for any other host. Within a site: every matching `header` (a
 * response filter) and `request_body`, then the first matching terminal
 * handler (none: the empty 200 of HANDLER_RESPOND). */
void route_pick(route_t *r, const cfg_t *cfg, const cfg_listener_t *l, int https,
                const http_vars_t *v);

#define ROUTE_ACME_PREFIX "/.well-known/acme-challenge/"

#endif
