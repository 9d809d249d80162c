/* The routes Caddy's automatic HTTPS adds on http_port: the answer to a
 * pending ACME HTTP-01 challenge, and the 308 to HTTPS for everything a
 * site there does not serve. */
#include <stdio.h>
#include <string.h>

#include "chal.h"
#include "exchange.h"
#include "handlers.h"
#include "log.h"
#include "route.h"

/* HTTP-01: the key authorization of the pending challenge (routing saw it
 * pending; one that ended since is no longer there: 404). */
static void acme_http01_start(exchange_t *x)
{
    const size_t plen = sizeof(ROUTE_ACME_PREFIX) - 1;
    uv_buf_t path = x->cur->vars.path;
    char ka[512];
    if (path.len <= plen || chal_http_get(path.base + plen, path.len - plen, ka, sizeof(ka)) != 0) {
        exchange_respond(x, 404, NULL, NULL, 0);
        return;
    }
    log_info("acme: answered the http-01 challenge for %.*s from %s", (int)x->cur->vars.host.len,
             x->cur->vars.host.base, x->peer_ip);
    exchange_respond(x, 200, NULL, ka, strlen(ka));
}

const handler_ops_t acme_http01_handler = {
    .name = "acme_http01",
    .start = acme_http01_start,
};

/* 308 to the same URI over https on x->cur->route.port, as Caddy's redirect
 * routes (makeRedirRoute), except the ACME HTTP-01 path. Caddy names no
 * port when it is http_port, https_port, 80 or 443: the redirect leaves
 * the machine, where https_port is assumed to be reached as 443; a site's
 * own port (example.com:8443) is named. The connection closes after it, as
 * Caddy's does. */
static void https_redirect_start(exchange_t *x)
{
    uv_buf_t host = http_host_without_port(x->cur->req.host);
    const cfg_t *cfg = x->cfg;
    int port = x->cur->route.port;
    const size_t plen = sizeof(ROUTE_ACME_PREFIX) - 1;
    if (x->cur->vars.path.len >= plen && memcmp(x->cur->vars.path.base, ROUTE_ACME_PREFIX, plen) == 0) {
        exchange_respond(x, 404, NULL, NULL, 0); /* no such challenge is pending */
        return;
    }
    char ps[16] = "";
    if (port != cfg->http_port && port != cfg->https_port && port != 80 && port != 443)
        snprintf(ps, sizeof(ps), ":%d", port);
    if (host.len == 0)
        host = uv_buf_init("", 0); /* no Host: a NULL slice */
    int v6 = memchr(host.base, ':', host.len) != NULL;
    x->obuf = buf_get(&x->w->bufs);
    /* the host as the client wrote it (case kept), without its port; an
     * empty one gives "https:///..." as Caddy's {http.request.host} does */
    int n = snprintf(x->obuf, x->w->bufs.size, "Location: https://%s%.*s%s%s%.*s\r\n",
                     v6 ? "[" : "", (int)host.len, host.base, v6 ? "]" : "", ps,
                     (int)x->cur->req.target.len, x->cur->req.target.base);
    x->keep_alive = 0;
    if (n < 0 || (size_t)n >= x->w->bufs.size)
        exchange_respond(x, 414, NULL, NULL, 0);
    else
        exchange_respond(x, 308, x->obuf, NULL, 0);
}

const handler_ops_t https_redirect_handler = {
    .name = "https_redirect",
    .start = https_redirect_start,
};
