/* Routing (src/exchange/route.c): which site, handler, filters and body
 * limit a request head gets, from configs parsed as psproxy parses them. */
#include <stdlib.h>
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
    static const filter_ops_t counting = {.name = "counting", .head = counting_head};
    static const filter_ops_t refusing = {.name = "refusing", .head = refusing_head};
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

/* Two body filters in a row: "dup" doubles each byte, "tag" wraps the
 * body in brackets; each counts its opens and closes. */
static int body_opens, body_closes, refuse_open_of_tag;

static void *counting_open(const cfg_handler_t *row)
{
    (void)row;
    body_opens++;
    return calloc(1, 64);
}

static void counting_close(void *state)
{
    body_closes++;
    free(state);
}

static int dup_body(void *state, const uv_buf_t *in, unsigned n_in, int last, uv_buf_t *out)
{
    char *buf = state;
    size_t n = 0;
    (void)last;
    for (unsigned i = 0; i < n_in; i++)
        for (size_t k = 0; k < in[i].len && n + 2 <= 64; k++) {
            buf[n++] = in[i].base[k];
            buf[n++] = in[i].base[k];
        }
    out[0] = uv_buf_init(buf, (unsigned)n);
    return n > 0;
}

static void *tag_open(const cfg_handler_t *row)
{
    return refuse_open_of_tag ? NULL : counting_open(row);
}

static int tag_body(void *state, const uv_buf_t *in, unsigned n_in, int last, uv_buf_t *out)
{
    int *started = state;
    int n = 0;
    if (!*started) {
        out[n++] = uv_buf_init("[", 1);
        *started = 1;
    }
    for (unsigned i = 0; i < n_in; i++)
        out[n++] = in[i];
    if (last)
        out[n++] = uv_buf_init("]", 1);
    return n;
}

static const filter_ops_t dup_filter = {
    .name = "dup", .head = counting_head, .body_open = counting_open, .body = dup_body,
    .body_close = counting_close};
static const filter_ops_t tag_filter = {
    .name = "tag", .head = counting_head, .body_open = tag_open, .body = tag_body,
    .body_close = counting_close};

static char joined[128];

static const char *join(const uv_buf_t *b, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        memcpy(joined + len, b[i].base, b[i].len);
        len += b[i].len;
    }
    joined[len] = '\0';
    return joined;
}

TEST(body_filters_run_in_route_order_each_ones_output_the_next_ones_input)
{
    cfg_handler_t a = {.kind = CFG_H_HEADER}, b = {.kind = CFG_H_HEADER};
    filter_head_t h = {.n_body = 0};
    CHECK_INT(filter_head_claim_body(&h, &dup_filter, &a), 0);
    CHECK_INT(filter_head_claim_body(&h, &tag_filter, &b), 0);
    body_opens = body_closes = refuse_open_of_tag = 0;
    filter_body_t *fb;
    CHECK_INT(filter_body_open(&h, &fb), 0);
    CHECK(fb != NULL);
    CHECK_INT(body_opens, 2);
    uv_buf_t in[2] = {uv_buf_init("ab", 2), uv_buf_init("c", 1)}, out[FILTER_BODY_IOV];
    int n = filter_body_run(fb, in, 2, 0, out);
    CHECK_STR(join(out, n), "[aabbcc");
    n = filter_body_run(fb, in + 1, 1, 0, out);
    CHECK_STR(join(out, n), "cc");
    n = filter_body_run(fb, in, 0, 1, out); /* the end, with no bytes */
    CHECK_STR(join(out, n), "]");
    filter_body_close(fb);
    CHECK_INT(body_closes, 2);
}

TEST(no_claim_opens_nothing_and_a_filter_that_cannot_open_leaves_none_open)
{
    cfg_handler_t a = {.kind = CFG_H_HEADER};
    filter_head_t h = {.n_body = 0};
    filter_body_t *fb = (filter_body_t *)&h;
    CHECK_INT(filter_body_open(&h, &fb), 0);
    CHECK(fb == NULL);
    filter_body_close(NULL);
    CHECK_INT(filter_head_claim_body(&h, &dup_filter, &a), 0);
    CHECK_INT(filter_head_claim_body(&h, &tag_filter, &a), 0);
    body_opens = body_closes = 0;
    refuse_open_of_tag = 1;
    CHECK_INT(filter_body_open(&h, &fb), -1);
    CHECK(fb == NULL);
    CHECK_INT(body_opens, 1);
    CHECK_INT(body_closes, 1); /* dup's, opened before tag refused */
    refuse_open_of_tag = 0;
}

TEST(at_most_FILTER_MAX_BODY_filters_claim_one_body)
{
    cfg_handler_t a = {.kind = CFG_H_HEADER};
    filter_head_t h = {.n_body = 0};
    for (int i = 0; i < FILTER_MAX_BODY; i++)
        CHECK_INT(filter_head_claim_body(&h, &dup_filter, &a), 0);
    CHECK_INT(filter_head_claim_body(&h, &dup_filter, &a), -1);
    CHECK_INT(h.n_body, FILTER_MAX_BODY);
}

TEST(a_whole_body_is_gathered_and_one_that_does_not_fit_fails)
{
    cfg_handler_t a = {.kind = CFG_H_HEADER};
    filter_head_t h = {.n_body = 0};
    CHECK_INT(filter_head_claim_body(&h, &dup_filter, &a), 0);
    CHECK_INT(filter_head_claim_body(&h, &tag_filter, &a), 0);
    body_opens = body_closes = 0;
    char out[16];
    size_t len = 0;
    CHECK_INT(filter_body_whole(&h, "xyz", 3, out, sizeof(out), &len), 0);
    CHECK_INT((int)len, 8);
    CHECK(memcmp(out, "[xxyyzz]", 8) == 0);
    CHECK_INT(filter_body_whole(&h, "xyz", 3, out, 7, &len), -1);
    CHECK_INT(body_opens, 4);
    CHECK_INT(body_closes, 4);
}

TEST_MAIN()
