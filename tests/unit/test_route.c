/* Routing (src/exchange/route.c): which site, handler, filters and body
 * limit a request head gets, from configs parsed as psproxy parses them. */
#include <string.h>

#include "chal.h"
#include "config.h"
#include "filter.h"
#include "handler.h"
#include "handlers.h"
#include "http.h"
#include "route.h"
#include "test.h"

static cfg_t *parse(const char *text)
{
    char err[1024];
    cfg_t *cfg = NULL;
    if (cfg_parse("t.conf", text, strlen(text), &cfg, err, sizeof(err)) != 0)
        fprintf(stderr, "  %s\n", err);
    return cfg;
}

/* The listener of CFG on PORT. */
static const cfg_listener_t *listener(const cfg_t *cfg, int port)
{
    for (size_t k = 0; k < cfg->n_listeners; k++)
        if (cfg->listeners[k].port == port)
            return &cfg->listeners[k];
    return NULL;
}

/* Routes "GET PATH" for HOST on PORT (plain HTTP). */
static void pick(route_t *r, const cfg_t *cfg, int port, const char *host, const char *path)
{
    http_vars_t v;
    memset(&v, 0, sizeof(v));
    v.host = uv_buf_init((char *)host, (unsigned)strlen(host));
    v.hostport = v.host;
    v.path = uv_buf_init((char *)path, (unsigned)strlen(path));
    v.uri = v.path;
    route_pick(r, cfg, listener(cfg, port), 0, &v);
}

static const char *site_host(const route_t *r)
{
    return r->site != NULL && r->site->n_addrs > 0 ? r->site->addrs[0].host : "(none)";
}

TEST(the_site_whose_host_matches_else_the_catch_all)
{
    cfg_t *cfg = parse("http://a.test:8080 {\n\trespond \"a\"\n}\n"
                       "http://*.b.test:8080 {\n\trespond \"b\"\n}\n"
                       "http://:8080 {\n\trespond \"any\"\n}\n");
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    route_t r;
    pick(&r, cfg, 8080, "a.test", "/");
    CHECK_STR(site_host(&r), "a.test");
    CHECK_INT(r.id, HANDLER_RESPOND);
    CHECK(r.handler != NULL && r.handler->kind == CFG_H_RESPOND);
    pick(&r, cfg, 8080, "x.b.test", "/");
    CHECK_STR(site_host(&r), "*.b.test");
    pick(&r, cfg, 8080, "c.test", "/");
    CHECK_STR(site_host(&r), "");
    cfg_unref(cfg);
}

TEST(no_terminal_handler_is_the_empty_200_of_respond)
{
    cfg_t *cfg = parse("http://a.test:8080 {\n\theader X-A 1\n}\n");
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    route_t r;
    pick(&r, cfg, 8080, "a.test", "/");
    CHECK_INT(r.id, HANDLER_RESPOND);
    CHECK(r.handler == NULL);
    CHECK_INT(r.n_filters, 1);
    pick(&r, cfg, 8080, "other.test", "/");
    CHECK(r.site == NULL);
    CHECK_INT(r.id, HANDLER_RESPOND);
    CHECK_INT(r.n_filters, 0);
    cfg_unref(cfg);
}

TEST(filters_in_route_order_the_first_matching_terminal_handler_and_the_smallest_limit)
{
    cfg_t *cfg = parse("http://a.test:8080 {\n"
                       "\theader /api* X-Api 1\n"
                       "\theader X-All 1\n"
                       "\trequest_body /api* {\n\t\tmax_size 10KB\n\t}\n"
                       "\trequest_body {\n\t\tmax_size 1MB\n\t}\n"
                       "\trespond /api/health 204\n"
                       "\treverse_proxy /api* 127.0.0.1:9\n"
                       "\tredir /old* https://elsewhere.test{uri}\n"
                       "}\n");
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    handlers_init();
    route_t r;
    pick(&r, cfg, 8080, "a.test", "/api/users");
    CHECK_INT(r.id, HANDLER_REVERSE_PROXY);
    CHECK_INT(r.n_filters, 2);
    CHECK(r.filters[0]->kind == CFG_H_HEADER && r.filters[1]->kind == CFG_H_HEADER);
    CHECK(r.filters[0] < r.filters[1]); /* in route order */
    CHECK_INT((int)r.body_limit, 10000);
    pick(&r, cfg, 8080, "a.test", "/api/health");
    CHECK_INT(r.id, HANDLER_RESPOND); /* respond sorts before reverse_proxy, as in Caddy */
    pick(&r, cfg, 8080, "a.test", "/old/page");
    CHECK_INT(r.id, HANDLER_REDIR); /* redir sorts first of all, as in Caddy */
    pick(&r, cfg, 8080, "a.test", "/page");
    CHECK_INT(r.id, HANDLER_RESPOND);
    CHECK(r.handler == NULL);
    CHECK_INT(r.n_filters, 1);
    CHECK_INT((int)r.body_limit, 1000000);
    cfg_unref(cfg);
}

TEST(http_port_redirects_hosts_an_https_site_serves_and_answers_pending_challenges)
{
    cfg_t *cfg = parse("{\n\thttp_port 8080\n\thttps_port 8443\n}\n"
                       "s.test {\n\trespond \"secure\"\n}\n");
    CHECK(cfg != NULL);
    if (cfg == NULL)
        return;
    route_t r;
    pick(&r, cfg, 8080, "s.test", "/x");
    CHECK_INT(r.id, HANDLER_HTTPS_REDIRECT);
    CHECK_INT(r.port, 8443);
    pick(&r, cfg, 8080, "s.test", "/.well-known/acme-challenge/tok1");
    CHECK_INT(r.id, HANDLER_HTTPS_REDIRECT); /* no such challenge pending */
    chal_http_put("tok1", "tok1.thumb");
    pick(&r, cfg, 8080, "s.test", "/.well-known/acme-challenge/tok1");
    CHECK_INT(r.id, HANDLER_ACME_HTTP01);
    pick(&r, cfg, 8080, "s.test", "/.well-known/acme-challenge/tok2");
    CHECK_INT(r.id, HANDLER_HTTPS_REDIRECT);
    chal_http_del("tok1");
    cfg_unref(cfg);
}

static int saw_head;

static int counting_head(const cfg_handler_t *row, filter_head_t *h)
{
    saw_head++;
    h->ops[h->n_ops++] = &row->u.header;
    return 0;
}

static int refusing_head(const cfg_handler_t *row, filter_head_t *h)
{
    (void)row;
    (void)h;
    return -1;
}

TEST(the_filter_chain_runs_each_head_hook_in_order_and_stops_at_a_refusal)
{
    static const filter_ops_t counting = {"counting", counting_head};
    static const filter_ops_t refusing = {"refusing", refusing_head};
    cfg_handler_t a = {.kind = CFG_H_HEADER}, b = {.kind = CFG_H_HEADER};
    cfg_handler_t not_a_filter = {.kind = CFG_H_RESPOND};
    const cfg_handler_t *chain[] = {&a, &b, &not_a_filter};
    filter_head_t h;
    filter_register(FILTER_HEADER, &counting);
    saw_head = 0;
    CHECK_INT(filter_head(chain, 2, &h), 0);
    CHECK_INT(saw_head, 2);
    CHECK_INT(h.n_ops, 2);
    CHECK(h.ops[0] == &a.u.header && h.ops[1] == &b.u.header);
    CHECK_INT(filter_head(chain, 3, &h), -1); /* a row no filter runs */
    filter_register(FILTER_HEADER, &refusing);
    CHECK_INT(filter_head(chain, 2, &h), -1);
    handlers_init(); /* the real header filter again */
    CHECK(filter_of(FILTER_HEADER) == &header_filter);
}

TEST_MAIN()
