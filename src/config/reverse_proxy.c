/* reverse_proxy and its sub-directives: upstreams, load balancing,
 * header_up/header_down, transport http, trusted_proxies, and active and
 * passive health checks, with Caddy 2.6's defaults. */
#include "parse.h"

#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* An upstream as Caddy 2.6 reads it (parseUpstreamDialAddress) within
 * psproxy's means: host:port, a bare host (port 80), or http://host[:port].
 * An empty host (":8080") is Go dialing the local system: psproxy dials
 * 127.0.0.1, which reaches a server listening on all IPv4 interfaces or on
 * loopback. */
static int parse_upstream(cfg_ctx_t *c, const cf_token_t *t, cfg_upstream_t *u)
{
    const char *s = t->text;
    const char *defport = "80";
    if (strchr(s, '{') != NULL)
        return cfg_errf(c, t,
                        "reverse_proxy: placeholders in upstreams are not supported by psproxy");
    const char *sep = strstr(s, "://");
    if (sep != NULL) {
        size_t sl = (size_t)(sep - s);
        if (sl == 4 && strncmp(s, "http", 4) == 0) {
            s = sep + 3;
        } else if (sl == 5 && strncmp(s, "https", 5) == 0) {
            return cfg_errf(c, t, "reverse_proxy: %s: TLS to upstreams is not supported by psproxy",
                            t->text);
        } else {
            return cfg_errf(c, t, "reverse_proxy: %s: scheme \"%.*s\" is not supported by psproxy",
                            t->text, (int)sl, t->text);
        }
        if (strpbrk(s, "/?#") != NULL)
            return cfg_errf(c, t,
                            "reverse_proxy: %s: upstream URLs may only have scheme, host and port",
                            t->text);
    } else if (strchr(s, '/') != NULL) {
        return cfg_errf(c, t,
                        "reverse_proxy: %s: network addresses (unix sockets) are not supported "
                        "by psproxy",
                        t->text);
    }
    char *hp = arena_strdup(c->a, s);
    const char *host = hp, *port = "";
    int v6 = 0;
    if (hp[0] == '[') {
        char *close = strchr(hp, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return cfg_errf(c, t, "reverse_proxy: invalid upstream address \"%s\"", t->text);
        *close = '\0';
        host = hp + 1;
        port = close[1] == ':' ? close + 2 : "";
        v6 = 1;
    } else {
        char *colon = strrchr(hp, ':');
        if (colon != NULL && strchr(hp, ':') != colon)
            return cfg_errf(c, t, "reverse_proxy: %s: an IPv6 upstream needs brackets: [%s]:PORT",
                            t->text, t->text);
        if (colon != NULL) {
            *colon = '\0';
            port = colon + 1;
        }
    }
    if (port[0] == '\0')
        port = defport;
    int pv;
    if (cfg_parse_port(port, &pv) != 0)
        return cfg_errf(c, t, "reverse_proxy: %s: invalid port \"%s\"", t->text, port);
    if (sep != NULL && pv == 443)
        return cfg_errf(c, t, "reverse_proxy: %s: http:// on port 443 (the HTTPS port)", t->text);
    if (host[0] == '\0')
        host = "127.0.0.1";
    u->host = arena_strdup(c->a, host);
    char pbuf[8];
    snprintf(pbuf, sizeof(pbuf), "%d", pv);
    u->port = arena_strdup(c->a, pbuf);
    size_t hl = strlen(host) + strlen(pbuf) + 4;
    char *hpout = arena_alloc(c->a, hl);
    snprintf(hpout, hl, v6 ? "[%s]:%s" : "%s:%s", host, pbuf);
    u->hostport = hpout;
    u->line = t->line;
    return 0;
}

static int add_upstreams(cfg_ctx_t *c, cfg_proxy_t *px, size_t *cap, const cf_token_t *toks,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        px->ups = cfg_grow(c->a, px->ups, px->n_ups, cap, sizeof(*px->ups));
        int rc = parse_upstream(c, &toks[i], &px->ups[px->n_ups]);
        if (rc != 0)
            return rc;
        px->n_ups++;
    }
    return 0;
}

static int parse_transport(cfg_ctx_t *c, const cf_line_t *l, cfg_proxy_t *px)
{
    int rc = cfg_want_args(c, l, "reverse_proxy: transport", 1, 1, 1);
    if (rc != 0)
        return rc;
    if (strcmp(l->toks[1].text, "http") != 0)
        return cfg_errf(c, &l->toks[1], "reverse_proxy: transport %s: not supported by psproxy",
                        l->toks[1].text);
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        if (strcmp(n, "dial_timeout") == 0) {
            rc = cfg_arg_duration(c, s, n, &px->dial_timeout);
        } else if (strcmp(n, "response_header_timeout") == 0) {
            rc = cfg_arg_duration(c, s, n, &px->response_header_timeout);
        } else if (strcmp(n, "read_timeout") == 0) {
            rc = cfg_arg_duration(c, s, n, &px->read_timeout);
        } else if (strcmp(n, "write_timeout") == 0) {
            rc = cfg_arg_duration(c, s, n, &px->write_timeout);
        } else if (strcmp(n, "keepalive") == 0) {
            rc = cfg_want_args(c, s, n, 1, 1, 0);
            if (rc == 0 && strcmp(s->toks[1].text, "off") == 0)
                px->keepalive_off = 1;
            else if (rc == 0 && cfg_parse_duration(s->toks[1].text, &px->keepalive) != 0)
                rc = cfg_errf(c, &s->toks[1], "keepalive: expected off or a duration, got \"%s\"",
                              s->toks[1].text);
        } else if (strcmp(n, "keepalive_idle_conns") == 0) {
            long v = 0;
            rc = cfg_want_args(c, s, n, 1, 1, 0);
            if (rc == 0 && cfg_parse_uint(s->toks[1].text, 1000000, &v) != 0)
                rc = cfg_errf(c, &s->toks[1], "keepalive_idle_conns: expected a number, got \"%s\"",
                              s->toks[1].text);
            if (rc == 0)
                px->keepalive_idle_conns = (int)v;
        } else {
            rc = cfg_errf(c, &s->toks[0],
                          "reverse_proxy: transport http: %s: not supported by psproxy", n);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Caddy's private_ranges shorthand */
static const char *const private_ranges[] = {
    "192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1",
};

static int parse_trusted(cfg_ctx_t *c, const cf_line_t *s, cfg_proxy_t *px, size_t *cap)
{
    int rc = cfg_want_args(c, s, "trusted_proxies", 1, SIZE_MAX, 0);
    for (size_t i = 1; rc == 0 && i < s->n_toks; i++) {
        const char *t = s->toks[i].text;
        int priv = strcmp(t, "private_ranges") == 0;
        size_t n = priv ? PS_ARRAY_SIZE(private_ranges) : 1;
        for (size_t k = 0; k < n; k++) {
            if (px->n_trusted == *cap) {
                size_t ncap = *cap ? *cap * 2 : 8;
                cfg_cidr_t *nt = arena_alloc(c->a, ncap * sizeof(*nt));
                if (px->n_trusted > 0)
                    memcpy(nt, px->trusted, px->n_trusted * sizeof(*nt));
                px->trusted = nt;
                *cap = ncap;
            }
            if (cfg_parse_cidr(priv ? private_ranges[k] : t, &px->trusted[px->n_trusted]) != 0)
                return cfg_errf(c, &s->toks[i],
                                "trusted_proxies: expected an IP range like 10.0.0.0/8, got \"%s\"",
                                t);
            px->n_trusted++;
        }
    }
    return rc;
}

/* "200" or "2xx" (Caddy's health_status / unhealthy_status) */
static int parse_status_match(const char *s, cfg_status_t *out)
{
    if (strlen(s) == 3 && s[0] >= '1' && s[0] <= '5' && s[1] == 'x' && s[2] == 'x') {
        out->code = s[0] - '0';
        out->is_class = 1;
        return 0;
    }
    long v = 0;
    if (cfg_parse_uint(s, 599, &v) != 0 || v < 100)
        return -1;
    out->code = (int)v;
    out->is_class = 0;
    return 0;
}

static int arg_status(cfg_ctx_t *c, const cf_line_t *s, const char *n, cfg_status_t *out)
{
    int rc = cfg_want_args(c, s, n, 1, 1, 0);
    if (rc == 0 && parse_status_match(s->toks[1].text, out) != 0)
        rc = cfg_errf(c, &s->toks[1], "%s: expected a status like 200 or 2xx, got \"%s\"", n,
                      s->toks[1].text);
    return rc;
}

static int arg_count(cfg_ctx_t *c, const cf_line_t *s, const char *n, int min, int *out)
{
    long v = 0;
    int rc = cfg_want_args(c, s, n, 1, 1, 0);
    if (rc == 0 && (cfg_parse_uint(s->toks[1].text, 1000000, &v) != 0 || v < min))
        rc = cfg_errf(c, &s->toks[1], "%s: expected a number of at least %d, got \"%s\"", n, min,
                      s->toks[1].text);
    if (rc == 0)
        *out = (int)v;
    return rc;
}

/* The health-check sub-directives; 1 when N was one of them (RC set). */
static int parse_health(cfg_ctx_t *c, const cf_line_t *s, const char *n, cfg_proxy_t *px, int *rc)
{
    if (strcmp(n, "health_uri") == 0 || strcmp(n, "health_path") == 0) {
        *rc = cfg_arg_string(c, s, n, &px->health_uri);
        if (*rc == 0 && px->health_uri[0] != '/')
            *rc = cfg_errf(c, &s->toks[1], "%s: expected a path starting with /, got \"%s\"", n,
                           px->health_uri);
    } else if (strcmp(n, "health_port") == 0) {
        *rc = cfg_want_args(c, s, n, 1, 1, 0);
        if (*rc == 0 && cfg_parse_port(s->toks[1].text, &px->health_port) != 0)
            *rc = cfg_errf(c, &s->toks[1], "health_port: expected a port number, got \"%s\"",
                           s->toks[1].text);
    } else if (strcmp(n, "health_interval") == 0) {
        *rc = cfg_arg_duration(c, s, n, &px->health_interval);
    } else if (strcmp(n, "health_timeout") == 0) {
        *rc = cfg_arg_duration(c, s, n, &px->health_timeout);
    } else if (strcmp(n, "health_status") == 0) {
        *rc = arg_status(c, s, n, &px->health_status);
    } else if (strcmp(n, "health_body") == 0) {
        *rc = cfg_arg_string(c, s, n, &px->health_body);
        regex_t re; /* a regular expression, as Caddy's: check it here */
        if (*rc == 0 && regcomp(&re, px->health_body, REG_EXTENDED | REG_NOSUB) != 0)
            *rc = cfg_errf(c, &s->toks[1], "health_body: not a valid regular expression: \"%s\"",
                           px->health_body);
        else if (*rc == 0)
            regfree(&re);
    } else if (strcmp(n, "health_passes") == 0) {
        *rc = arg_count(c, s, n, 1, &px->health_passes);
    } else if (strcmp(n, "health_fails") == 0) {
        *rc = arg_count(c, s, n, 1, &px->health_fails);
    } else if (strcmp(n, "health_fail_closed") == 0) {
        *rc = cfg_want_args(c, s, n, 0, 0, 0);
        px->health_fail_closed = 1;
    } else if (strcmp(n, "fail_duration") == 0) {
        *rc = cfg_arg_duration(c, s, n, &px->fail_duration);
        px->fail_duration_set = px->fail_duration != 0;
    } else if (strcmp(n, "max_fails") == 0) {
        *rc = arg_count(c, s, n, 1, &px->max_fails);
    } else if (strcmp(n, "unhealthy_status") == 0) {
        *rc = arg_status(c, s, n, &px->unhealthy_status);
    } else if (strcmp(n, "unhealthy_latency") == 0) {
        *rc = cfg_arg_duration(c, s, n, &px->unhealthy_latency);
    } else if (strcmp(n, "lb_retries") == 0) {
        *rc = arg_count(c, s, n, 0, &px->lb_retries);
    } else if (strcmp(n, "health_headers") == 0 || strcmp(n, "unhealthy_request_count") == 0) {
        *rc = cfg_errf(c, &s->toks[0], "%s: not supported by psproxy yet", n);
    } else {
        return 0;
    }
    return 1;
}

int cfg_parse_reverse_proxy(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    size_t argi, ucap = 0, upcap = 0, downcap = 0, tcap = 0;
    int rc = cfg_take_matcher(c, l, &h->match, &argi);
    if (rc != 0)
        return rc;
    h->kind = CFG_H_PROXY;
    cfg_proxy_t *px = &h->u.proxy;
    px->lb_policy = CFG_LB_ROUND_ROBIN;
    px->lb_retries = -1;
    px->lb_try_interval = 250;
    px->health_interval = 30000;
    px->health_timeout = 5000;
    px->health_status.code = 2;
    px->health_status.is_class = 1;
    px->health_passes = 1;
    px->health_fails = 1;
    px->fail_duration = 10000;
    px->max_fails = 1;
    px->dial_timeout = 3000;
    px->keepalive = 120000;
    px->keepalive_idle_conns = 32;
    rc = add_upstreams(c, px, &ucap, &l->toks[argi], l->n_toks - argi);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        if (strcmp(n, "to") == 0) {
            rc = cfg_want_args(c, s, "reverse_proxy: to", 1, SIZE_MAX, 0);
            if (rc == 0)
                rc = add_upstreams(c, px, &ucap, &s->toks[1], s->n_toks - 1);
        } else if (strcmp(n, "lb_policy") == 0) {
            static const char *const names[] = {"random", "round_robin", "first", "least_conn",
                                                "ip_hash"};
            rc = cfg_want_args(c, s, n, 1, 1, 0);
            px->lb_policy = -1;
            for (size_t k = 0; rc == 0 && k < PS_ARRAY_SIZE(names); k++)
                if (strcmp(s->toks[1].text, names[k]) == 0)
                    px->lb_policy = (int)k;
            if (rc == 0 && px->lb_policy < 0)
                rc = cfg_errf(c, &s->toks[1], "lb_policy: %s: not supported by psproxy",
                              s->toks[1].text);
        } else if (strcmp(n, "lb_try_duration") == 0) {
            rc = cfg_arg_duration(c, s, n, &px->lb_try_duration);
        } else if (strcmp(n, "lb_try_interval") == 0) {
            rc = cfg_arg_duration(c, s, n, &px->lb_try_interval);
        } else if (strcmp(n, "header_up") == 0 || strcmp(n, "header_down") == 0) {
            int up = n[7] == 'u';
            if (s->open != NULL)
                return cfg_errf(c, s->open, "%s: unexpected block", n);
            rc = cfg_parse_hdr_op(c, n, &s->toks[1], s->n_toks - 1, 0,
                                  up ? &px->header_up : &px->header_down, up ? &upcap : &downcap);
        } else if (strcmp(n, "flush_interval") == 0) {
            /* psproxy always streams, as flush_interval -1 would: the
             * value is checked and otherwise ignored */
            uint64_t ms = 0;
            long v = 0;
            rc = cfg_want_args(c, s, n, 1, 1, 0);
            const char *a = rc == 0 ? s->toks[1].text : "0";
            if (rc == 0 && strcmp(a, "-1") != 0 && cfg_parse_uint(a, 1L << 30, &v) != 0 &&
                cfg_parse_duration(a, &ms) != 0)
                rc = cfg_errf(c, &s->toks[1],
                              "flush_interval: expected a duration or -1, got \"%s\"", a);
        } else if (strcmp(n, "transport") == 0) {
            rc = parse_transport(c, s, px);
        } else if (strcmp(n, "trusted_proxies") == 0) {
            rc = parse_trusted(c, s, px, &tcap);
        } else if (!parse_health(c, s, n, px, &rc)) {
            rc = cfg_errf(c, &s->toks[0], "reverse_proxy: %s: not supported by psproxy", n);
        }
        if (rc != 0)
            return rc;
    }
    if (px->n_ups == 0)
        return cfg_errf(c, &l->toks[0], "reverse_proxy: expected at least one upstream");
    return 0;
}
