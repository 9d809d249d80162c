/* reverse_proxy and its sub-directives: upstreams, load balancing,
 * header_up/header_down, transport http, trusted_proxies, and active and
 * passive health checks, with Caddy 2.6's defaults. */
#include "parse.h"

#include <regex.h>
#include <stddef.h>
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

/* One reverse_proxy being read: the context, the handler's proxy, and the
 * capacities of the arrays its lines grow. */
typedef struct rp {
    cfg_ctx_t *c;
    cfg_proxy_t *px;
    size_t ucap, upcap, downcap, tcap;
} rp_t;

/* A sub-directive of reverse_proxy, or of its transport http: PARSE reads
 * line S into FIELD, the member of the proxy at OFFSET (as global.c's
 * options), or, for those that fill several members or grow an array,
 * into r->px (OFFSET 0). */
typedef struct rp_option {
    const char *name;
    int (*parse)(rp_t *r, const cf_line_t *s, void *field);
    size_t offset;
} rp_option_t;

#define AT(member) offsetof(cfg_proxy_t, member)

static const rp_option_t *find_option(const rp_option_t *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

static int read_option(rp_t *r, const rp_option_t *o, const cf_line_t *s)
{
    return o->parse(r, s, (char *)r->px + o->offset);
}

static int add_upstreams(rp_t *r, const cf_token_t *toks, size_t n)
{
    cfg_proxy_t *px = r->px;
    for (size_t i = 0; i < n; i++) {
        px->ups = cfg_grow(r->c->a, px->ups, px->n_ups, &r->ucap, sizeof(*px->ups));
        int rc = parse_upstream(r->c, &toks[i], &px->ups[px->n_ups]);
        if (rc != 0)
            return rc;
        px->n_ups++;
    }
    return 0;
}

/* ---- values: the sub-directive's name leads the message ---------------- */

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

static int rp_duration(rp_t *r, const cf_line_t *s, void *field)
{
    return cfg_arg_duration(r->c, s, cfg_line_name(s), field);
}

static int rp_port(rp_t *r, const cf_line_t *s, void *field)
{
    return cfg_arg_port(r->c, s, cfg_line_name(s), field);
}

/* a number of at least 1 */
static int rp_count(rp_t *r, const cf_line_t *s, void *field)
{
    return arg_count(r->c, s, cfg_line_name(s), 1, field);
}

static int rp_status(rp_t *r, const cf_line_t *s, void *field)
{
    const char *n = cfg_line_name(s);
    int rc = cfg_want_args(r->c, s, n, 1, 1, 0);
    if (rc == 0 && parse_status_match(s->toks[1].text, field) != 0)
        rc = cfg_errf(r->c, &s->toks[1], "%s: expected a status like 200 or 2xx, got \"%s\"", n,
                      s->toks[1].text);
    return rc;
}

/* ---- upstreams and balancing ------------------------------------------- */

static int rp_to(rp_t *r, const cf_line_t *s, void *field)
{
    int rc = cfg_want_args(r->c, s, "reverse_proxy: to", 1, SIZE_MAX, 0);
    if (rc == 0)
        rc = add_upstreams(r, &s->toks[1], s->n_toks - 1);
    return rc;
}

static int rp_lb_policy(rp_t *r, const cf_line_t *s, void *field)
{
    static const char *const names[] = {"random", "round_robin", "first", "least_conn", "ip_hash"};
    int *policy = field;
    int rc = cfg_want_args(r->c, s, cfg_line_name(s), 1, 1, 0);
    *policy = -1;
    for (size_t k = 0; rc == 0 && k < PS_ARRAY_SIZE(names); k++)
        if (strcmp(s->toks[1].text, names[k]) == 0)
            *policy = (int)k;
    if (rc == 0 && *policy < 0)
        rc =
            cfg_errf(r->c, &s->toks[1], "lb_policy: %s: not supported by psproxy", s->toks[1].text);
    return rc;
}

/* extra upstreams a request may try: 0 is allowed */
static int rp_lb_retries(rp_t *r, const cf_line_t *s, void *field)
{
    return arg_count(r->c, s, cfg_line_name(s), 0, field);
}

/* ---- headers ----------------------------------------------------------- */

static int header_op(rp_t *r, const cf_line_t *s, cfg_hdr_ops_t *ops, size_t *cap)
{
    const char *n = cfg_line_name(s);
    if (s->open != NULL)
        return cfg_errf(r->c, s->open, "%s: unexpected block", n);
    return cfg_parse_hdr_op(r->c, n, &s->toks[1], s->n_toks - 1, 0, ops, cap);
}

static int rp_header_up(rp_t *r, const cf_line_t *s, void *field)
{
    return header_op(r, s, field, &r->upcap);
}

static int rp_header_down(rp_t *r, const cf_line_t *s, void *field)
{
    return header_op(r, s, field, &r->downcap);
}

/* psproxy always streams, as flush_interval -1 would: the value is
 * checked and otherwise ignored */
static int rp_flush_interval(rp_t *r, const cf_line_t *s, void *field)
{
    uint64_t ms = 0;
    long v = 0;
    int rc = cfg_want_args(r->c, s, cfg_line_name(s), 1, 1, 0);
    const char *a = rc == 0 ? s->toks[1].text : "0";
    if (rc == 0 && strcmp(a, "-1") != 0 && cfg_parse_uint(a, 1L << 30, &v) != 0 &&
        cfg_parse_duration(a, &ms) != 0)
        rc =
            cfg_errf(r->c, &s->toks[1], "flush_interval: expected a duration or -1, got \"%s\"", a);
    return rc;
}

/* ---- transport http { } ------------------------------------------------ */

static int rp_keepalive(rp_t *r, const cf_line_t *s, void *field)
{
    int rc = cfg_want_args(r->c, s, cfg_line_name(s), 1, 1, 0);
    if (rc == 0 && strcmp(s->toks[1].text, "off") == 0)
        r->px->keepalive_off = 1;
    else if (rc == 0 && cfg_parse_duration(s->toks[1].text, &r->px->keepalive) != 0)
        rc = cfg_errf(r->c, &s->toks[1], "keepalive: expected off or a duration, got \"%s\"",
                      s->toks[1].text);
    return rc;
}

static int rp_keepalive_idle_conns(rp_t *r, const cf_line_t *s, void *field)
{
    long v = 0;
    int rc = cfg_want_args(r->c, s, cfg_line_name(s), 1, 1, 0);
    if (rc == 0 && cfg_parse_uint(s->toks[1].text, 1000000, &v) != 0)
        rc = cfg_errf(r->c, &s->toks[1], "%s: expected a number, got \"%s\"",
                      cfg_line_name(s), s->toks[1].text);
    if (rc == 0)
        *(int *)field = (int)v;
    return rc;
}

static const rp_option_t transport_options[] = {
    {"dial_timeout", rp_duration, AT(dial_timeout)},
    {"response_header_timeout", rp_duration, AT(response_header_timeout)},
    {"read_timeout", rp_duration, AT(read_timeout)},
    {"write_timeout", rp_duration, AT(write_timeout)},
    {"keepalive", rp_keepalive, 0},
    {"keepalive_idle_conns", rp_keepalive_idle_conns, AT(keepalive_idle_conns)},
    {"keepalive_idle_conns_per_host", rp_keepalive_idle_conns, AT(keepalive_idle_conns_per_host)},
};

static int rp_transport(rp_t *r, const cf_line_t *l, void *field)
{
    cfg_ctx_t *c = r->c;
    int rc = cfg_want_args(c, l, "reverse_proxy: transport", 1, 1, 1);
    if (rc != 0)
        return rc;
    if (strcmp(l->toks[1].text, "http") != 0)
        return cfg_errf(c, &l->toks[1], "reverse_proxy: transport %s: not supported by psproxy",
                        l->toks[1].text);
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        const rp_option_t *o = find_option(transport_options, PS_ARRAY_SIZE(transport_options), n);
        if (o == NULL)
            return cfg_errf(c, &s->toks[0],
                            "reverse_proxy: transport http: %s: not supported by psproxy", n);
        rc = read_option(r, o, s);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- trusted_proxies --------------------------------------------------- */

/* Caddy's private_ranges shorthand */
static const char *const private_ranges[] = {
    "192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8", "127.0.0.1/8", "fd00::/8", "::1",
};

static int rp_trusted(rp_t *r, const cf_line_t *s, void *field)
{
    cfg_ctx_t *c = r->c;
    cfg_proxy_t *px = r->px;
    size_t *cap = &r->tcap;
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

/* ---- health checks ----------------------------------------------------- */

static int rp_health_uri(rp_t *r, const cf_line_t *s, void *field)
{
    const char *n = cfg_line_name(s);
    const char **uri = field;
    int rc = cfg_arg_string(r->c, s, n, uri);
    if (rc == 0 && (*uri)[0] != '/')
        rc =
            cfg_errf(r->c, &s->toks[1], "%s: expected a path starting with /, got \"%s\"", n, *uri);
    return rc;
}

static int rp_health_body(rp_t *r, const cf_line_t *s, void *field)
{
    const char **body = field;
    int rc = cfg_arg_string(r->c, s, cfg_line_name(s), body);
    regex_t re; /* a regular expression, as Caddy's: check it here */
    if (rc == 0 && regcomp(&re, *body, REG_EXTENDED | REG_NOSUB) != 0)
        rc = cfg_errf(r->c, &s->toks[1], "health_body: not a valid regular expression: \"%s\"",
                      *body);
    else if (rc == 0)
        regfree(&re);
    return rc;
}

/* a flag without arguments */
static int rp_flag(rp_t *r, const cf_line_t *s, void *field)
{
    int rc = cfg_want_args(r->c, s, cfg_line_name(s), 0, 0, 0);
    *(int *)field = 1;
    return rc;
}

static int rp_fail_duration(rp_t *r, const cf_line_t *s, void *field)
{
    int rc = cfg_arg_duration(r->c, s, cfg_line_name(s), &r->px->fail_duration);
    r->px->fail_duration_set = r->px->fail_duration != 0;
    return rc;
}

static int rp_not_yet(rp_t *r, const cf_line_t *s, void *field)
{
    return cfg_errf(r->c, &s->toks[0], "%s: not supported by psproxy yet", cfg_line_name(s));
}

/* ---- reverse_proxy { } ------------------------------------------------- */

static const rp_option_t proxy_options[] = {
    {"to", rp_to, 0},
    {"lb_policy", rp_lb_policy, AT(lb_policy)},
    {"lb_try_duration", rp_duration, AT(lb_try_duration)},
    {"lb_try_interval", rp_duration, AT(lb_try_interval)},
    {"lb_retries", rp_lb_retries, AT(lb_retries)},
    {"header_up", rp_header_up, AT(header_up)},
    {"header_down", rp_header_down, AT(header_down)},
    {"flush_interval", rp_flush_interval, 0},
    {"transport", rp_transport, 0},
    {"trusted_proxies", rp_trusted, 0},
    /* active health checks */
    {"health_uri", rp_health_uri, AT(health_uri)},
    {"health_path", rp_health_uri, AT(health_uri)},
    {"health_port", rp_port, AT(health_port)},
    {"health_interval", rp_duration, AT(health_interval)},
    {"health_timeout", rp_duration, AT(health_timeout)},
    {"health_status", rp_status, AT(health_status)},
    {"health_body", rp_health_body, AT(health_body)},
    {"health_passes", rp_count, AT(health_passes)},
    {"health_fails", rp_count, AT(health_fails)},
    {"health_fail_closed", rp_flag, AT(health_fail_closed)},
    {"health_headers", rp_not_yet, 0},
    /* passive health checks */
    {"fail_duration", rp_fail_duration, 0},
    {"max_fails", rp_count, AT(max_fails)},
    {"unhealthy_status", rp_status, AT(unhealthy_status)},
    {"unhealthy_latency", rp_duration, AT(unhealthy_latency)},
    {"unhealthy_request_count", rp_not_yet, 0},
};

int cfg_parse_reverse_proxy(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    size_t argi;
    int rc = cfg_take_matcher(c, l, &h->match, &argi);
    if (rc != 0)
        return rc;
    h->kind = CFG_H_PROXY;
    cfg_proxy_t *px = &h->u.proxy;
    rp_t r = {.c = c, .px = px};
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
    rc = add_upstreams(&r, &l->toks[argi], l->n_toks - argi);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        const rp_option_t *o = find_option(proxy_options, PS_ARRAY_SIZE(proxy_options), n);
        if (o == NULL)
            return cfg_errf(c, &s->toks[0], "reverse_proxy: %s: not supported by psproxy", n);
        rc = read_option(&r, o, s);
        if (rc != 0)
            return rc;
    }
    if (px->n_ups == 0)
        return cfg_errf(c, &l->toks[0], "reverse_proxy: expected at least one upstream");
    return 0;
}
