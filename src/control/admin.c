/* The admin listener: a small HTTP/1.1 server on the control loop, one
 * request per connection, for operators and Prometheus, never the hot path. */
#include "admin.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acme.h"
#include "common.h"
#include "log.h"
#include "upstream.h"

#define ADMIN_MAX_REQUEST 8192

struct admin {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    srv_t *srv;
    char *config_path;
};

struct admin_conn {
    uv_tcp_t tcp;
    uv_write_t wreq;
    admin_t *a;
    char req[ADMIN_MAX_REQUEST];
    size_t len;
    char *resp;
};

/* A growable text buffer for the answers. */
typedef struct text {
    char *p;
    size_t len, cap;
} text_t;

static void tprintf(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(text_t *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap ? t->cap * 2 : 8192;
        t->p = realloc(t->p, t->cap);
        if (t->p == NULL)
            abort();
    }
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static const char *label(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 2 < cap; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n') {
            out[o++] = '\\';
            out[o++] = *s == '\n' ? 'n' : *s;
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return out;
}

static void cert_line(void *arg, const char *name, const certs_entry_t *e)
{
    char l[300];
    tprintf(arg, "psproxy_certificate_not_after_seconds{name=\"%s\"} %lld\n",
            label(name, l, sizeof(l)), (long long)e->not_after);
}

/* A counter per upstream: psproxy_upstream_NAME{upstream} VALUES[i]. */
static void upstream_counter(text_t *t, const char *name, const char *help,
                             char (*ups)[METRICS_NAME], const uint64_t *values, size_t n)
{
    char l[160];
    tprintf(t, "# HELP psproxy_upstream_%s %s\n# TYPE psproxy_upstream_%s counter\n", name, help,
            name);
    for (size_t j = 0; j < n; j++)
        tprintf(t, "psproxy_upstream_%s{upstream=\"%s\"} %llu\n", name,
                label(ups[j], l, sizeof(l)), (unsigned long long)values[j]);
}

/* The pools' churn: each upstream's dials, reuses and closes by reason,
 * summed over the workers (each counts its own; a slot's name is set
 * before the worker publishes the slot count), and idle connections now. */
static void render_upstream_conns(srv_t *s, text_t *t)
{
    char names[METRICS_UPSTREAMS][METRICS_NAME] = {{0}};
    uint64_t dials[METRICS_UPSTREAMS] = {0}, errs[METRICS_UPSTREAMS] = {0};
    uint64_t reuses[METRICS_UPSTREAMS] = {0}, closes[METRICS_UPSTREAMS][METRICS_CLOSES] = {{0}};
    size_t n = 0;
    for (int i = 0; i < s->n_workers; i++) {
        metrics_t *m = &s->workers[i].metrics;
        size_t k_n = atomic_load_explicit(&m->n_upstreams, memory_order_acquire);
        for (size_t k = 0; k < k_n; k++) {
            const struct metrics_upstream *u = &m->upstreams[k];
            size_t j = 0;
            while (j < n && strcmp(names[j], u->name) != 0)
                j++;
            if (j == METRICS_UPSTREAMS)
                j--; /* the workers' slots together outnumber ours: the last takes the rest */
            else if (j == n)
                memcpy(names[n++], u->name, sizeof(names[j]));
            dials[j] += atomic_load_explicit(&u->dials, memory_order_relaxed);
            errs[j] += atomic_load_explicit(&u->dial_errors, memory_order_relaxed);
            reuses[j] += atomic_load_explicit(&u->reuses, memory_order_relaxed);
            for (int r = 0; r < METRICS_CLOSES; r++)
                closes[j][r] += atomic_load_explicit(&u->closes[r], memory_order_relaxed);
        }
    }
    char l[160];
    upstream_counter(t, "dials_total", "Connections opened to each upstream.", names, dials, n);
    upstream_counter(t, "dial_errors_total",
                     "Dials to each upstream that failed (refused, timed out, not resolved).",
                     names, errs, n);
    upstream_counter(t, "reuses_total",
                     "Requests sent on a pooled (idle) connection instead of a new one.", names,
                     reuses, n);
    tprintf(t, "# HELP psproxy_upstream_closes_total Upstream connections closed, by reason.\n"
               "# TYPE psproxy_upstream_closes_total counter\n");
    for (size_t j = 0; j < n; j++)
        for (int r = 0; r < METRICS_CLOSES; r++)
            tprintf(t, "psproxy_upstream_closes_total{upstream=\"%s\",reason=\"%s\"} %llu\n",
                    label(names[j], l, sizeof(l)), metrics_close_names[r],
                    (unsigned long long)closes[j][r]);
    tprintf(t, "# HELP psproxy_upstream_idle_connections Idle pooled connections to each "
               "upstream, in every worker.\n# TYPE psproxy_upstream_idle_connections gauge\n");
    for (size_t i = 0; s->targets != NULL && i < s->targets->n; i++) {
        const up_target_t *tg = s->targets->items[i];
        tprintf(t, "psproxy_upstream_idle_connections{upstream=\"%s\"} %d\n",
                label(tg->hostport, l, sizeof(l)),
                atomic_load_explicit(&tg->idle, memory_order_relaxed));
    }
}

static void render_metrics(admin_t *a, text_t *t)
{
    srv_t *s = a->srv;
    char l1[160], l2[160];
    tprintf(t, "# HELP psproxy_requests_total Requests answered, by site, status class and "
               "upstream.\n# TYPE psproxy_requests_total counter\n");
    /* the same series from every worker add up */
    struct metrics_series sum[METRICS_SERIES];
    size_t n = 0;
    uint64_t buckets[METRICS_BUCKETS] = {0}, dsum = 0, dcount = 0, hs = 0, hf = 0, rq_h1 = 0, rq_h2 = 0, h2c = 0;
    int64_t open = 0;
    for (int i = 0; i < s->n_workers; i++) {
        metrics_t *m = &s->workers[i].metrics;
        uv_mutex_lock(&m->lock);
        for (size_t k = 0; k < m->n_series; k++) {
            size_t j = 0;
            while (j < n && !(sum[j].code_class == m->series[k].code_class &&
                              strcmp(sum[j].site, m->series[k].site) == 0 &&
                              strcmp(sum[j].upstream, m->series[k].upstream) == 0))
                j++;
            if (j == n && n < METRICS_SERIES) {
                sum[n] = m->series[k];
                sum[n++].count = 0;
            }
            if (j < n)
                sum[j].count += m->series[k].count;
        }
        uv_mutex_unlock(&m->lock);
        for (int b = 0; b < METRICS_BUCKETS; b++)
            buckets[b] += atomic_load(&m->buckets[b]);
        dsum += atomic_load(&m->duration_sum_us);
        dcount += atomic_load(&m->duration_count);
        open += atomic_load(&m->open_conns);
        hs += atomic_load(&m->tls_handshakes);
        hf += atomic_load(&m->tls_failures);
        rq_h1 += atomic_load(&m->requests_h1);
        rq_h2 += atomic_load(&m->requests_h2);
        h2c += atomic_load(&m->h2_conns);
    }
    for (size_t j = 0; j < n; j++)
        tprintf(t, "psproxy_requests_total{site=\"%s\",code=\"%dxx\",upstream=\"%s\"} %llu\n",
                label(sum[j].site, l1, sizeof(l1)), sum[j].code_class,
                label(sum[j].upstream, l2, sizeof(l2)), (unsigned long long)sum[j].count);
    tprintf(t, "# HELP psproxy_request_duration_seconds From the first byte of the request "
               "head to the answer.\n# TYPE psproxy_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (int b = 0; b < METRICS_BUCKETS; b++) {
        cum += buckets[b];
        if (metrics_le[b] < 0)
            tprintf(t, "psproxy_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
        else
            tprintf(t, "psproxy_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                    metrics_le[b], (unsigned long long)cum);
    }
    tprintf(t, "psproxy_request_duration_seconds_sum %.6f\n", (double)dsum / 1e6);
    tprintf(t, "psproxy_request_duration_seconds_count %llu\n", (unsigned long long)dcount);
    tprintf(t, "# HELP psproxy_open_connections Client connections open now.\n"
               "# TYPE psproxy_open_connections gauge\npsproxy_open_connections %lld\n",
            (long long)open);
    tprintf(t, "# HELP psproxy_tls_handshakes_total TLS handshakes completed.\n"
               "# TYPE psproxy_tls_handshakes_total counter\npsproxy_tls_handshakes_total %llu\n"
               "# HELP psproxy_tls_handshake_failures_total TLS handshakes that failed.\n"
               "# TYPE psproxy_tls_handshake_failures_total counter\n"
               "psproxy_tls_handshake_failures_total %llu\n",
            (unsigned long long)hs, (unsigned long long)hf);
    tprintf(t, "# HELP psproxy_requests_by_protocol_total Requests answered, by HTTP version.\n"
               "# TYPE psproxy_requests_by_protocol_total counter\n"
               "psproxy_requests_by_protocol_total{proto=\"h1\"} %llu\n"
               "psproxy_requests_by_protocol_total{proto=\"h2\"} %llu\n"
               "# HELP psproxy_h2_connections_total Client connections that chose HTTP/2.\n"
               "# TYPE psproxy_h2_connections_total counter\npsproxy_h2_connections_total %llu\n",
            (unsigned long long)rq_h1, (unsigned long long)rq_h2, (unsigned long long)h2c);
    tprintf(t, "# HELP psproxy_upstream_healthy 1 when an upstream gets traffic by its health "
               "checks, 0 when active or passive checks took it out.\n"
               "# TYPE psproxy_upstream_healthy gauge\n");
    int64_t now = up_now_ms();
    for (size_t i = 0; s->targets != NULL && i < s->targets->n; i++) {
        const up_target_t *tg = s->targets->items[i];
        int ok = !atomic_load(&tg->active_down) && atomic_load(&tg->passive_until) <= now;
        tprintf(t, "psproxy_upstream_healthy{upstream=\"%s\"} %d\n",
                label(tg->hostport, l1, sizeof(l1)), ok);
    }
    render_upstream_conns(s, t);
    tprintf(t, "# HELP psproxy_upstream_tables Upstream tables alive: the current config's "
               "and those of older configs that connections still use.\n"
               "# TYPE psproxy_upstream_tables gauge\npsproxy_upstream_tables %ld\n"
               "# HELP psproxy_upstream_targets Upstream targets alive (each holds one "
               "upstream's health), in any table or pool.\n"
               "# TYPE psproxy_upstream_targets gauge\npsproxy_upstream_targets %ld\n",
            up_targets_live(), up_target_objects_live());
    tprintf(t, "# HELP psproxy_certificate_not_after_seconds When each served certificate "
               "expires (Unix time).\n# TYPE psproxy_certificate_not_after_seconds gauge\n");
    if (s->certs != NULL)
        certs_each(s->certs, cert_line, t);
    uint64_t ok = 0, failed = 0;
    acme_counts(s->acme, &ok, &failed);
    tprintf(t, "# HELP psproxy_acme_orders_total ACME orders (new certificates and renewals) by "
               "result.\n# TYPE psproxy_acme_orders_total counter\n"
               "psproxy_acme_orders_total{result=\"success\"} %llu\n"
               "psproxy_acme_orders_total{result=\"failure\"} %llu\n",
            (unsigned long long)ok, (unsigned long long)failed);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct admin_conn *c = h->data;
    free(c->resp);
    free(c);
}

static void on_written(uv_write_t *req, int status)
{
    struct admin_conn *c = req->data;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Bad Request";
    }
}

static void respond(struct admin_conn *c, int status, const char *type, const char *body,
                    size_t len)
{
    char head[256];
    int h = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, reason(status), type, len);
    c->resp = malloc((size_t)h + len);
    if (c->resp == NULL)
        abort();
    memcpy(c->resp, head, (size_t)h);
    memcpy(c->resp + h, body, len);
    uv_buf_t b = uv_buf_init(c->resp, (unsigned)((size_t)h + len));
    c->wreq.data = c;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void handle(struct admin_conn *c)
{
    char method[8] = "", path[256] = "";
    sscanf(c->req, "%7s %255s", method, path);
    char *q = strchr(path, '?');
    if (q != NULL)
        *q = '\0';
    if (strcmp(path, "/healthz") == 0) {
        respond(c, 200, "text/plain; charset=utf-8", "ok\n", 3);
    } else if (strcmp(path, "/metrics") == 0) {
        text_t t = {0};
        render_metrics(c->a, &t);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", t.p, t.len);
        free(t.p);
    } else if (strcmp(path, "/reload") == 0) {
        if (strcmp(method, "POST") != 0) {
            respond(c, 405, "text/plain; charset=utf-8", "POST /reload\n", 13);
            return;
        }
        int rc = srv_reload(c->a->srv, c->a->config_path, c->a->loop);
        const char *msg = rc == 0 ? "reloaded\n" : "the new config is bad: see the log; "
                                                   "the running one stays\n";
        respond(c, rc == 0 ? 200 : 400, "text/plain; charset=utf-8", msg, strlen(msg));
    } else {
        respond(c, 404, "text/plain; charset=utf-8", "not found\n", 10);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct admin_conn *c = h->data;
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof(c->req) - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *c = s->data;
    if (nread < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->len += (size_t)nread;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") != NULL || strstr(c->req, "\n\n") != NULL)
        handle(c);
    else if (c->len == sizeof(c->req) - 1)
        respond(c, 400, "text/plain; charset=utf-8", "request too large\n", 18);
}

static void on_connection(uv_stream_t *server, int status)
{
    admin_t *a = server->data;
    if (status < 0)
        return;
    struct admin_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->a = a;
    uv_tcp_init(a->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int admin_address(const char *addr, char *host, size_t hostlen, int *port)
{
    if (addr == NULL)
        addr = "localhost:2019";
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return -1;
    *port = atoi(colon + 1);
    size_t hl = (size_t)(colon - addr);
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl == 0 || (hl == 9 && strncmp(addr, "localhost", 9) == 0))
        snprintf(host, hostlen, "127.0.0.1"); /* loopback unless configured */
    else
        snprintf(host, hostlen, "%.*s", (int)hl, addr);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

admin_t *admin_start(uv_loop_t *loop, srv_t *s, const char *addr, const char *config_path,
                     char *err, size_t errlen)
{
    char host[256];
    int port = 0;
    if (admin_address(addr, host, sizeof(host), &port) != 0) {
        snprintf(err, errlen, "admin: expected host:port, got \"%s\"", addr);
        return NULL;
    }
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "admin: %s is not an IP address (give one, or localhost)", host);
        return NULL;
    }
    admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        abort();
    a->loop = loop;
    a->srv = s;
    a->config_path = strdup(config_path);
    uv_tcp_init(loop, &a->tcp);
    a->tcp.data = a;
    int rc = uv_tcp_bind(&a->tcp, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->tcp, 16, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "admin: cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        admin_stop(a);
        return NULL;
    }
    log_info("admin listening on %s:%d (/metrics, /healthz, POST /reload)", host, port);
    return a;
}

static void on_admin_closed(uv_handle_t *h)
{
    admin_t *a = h->data;
    free(a->config_path);
    free(a);
}

void admin_stop(admin_t *a)
{
    if (a != NULL)
        uv_close((uv_handle_t *)&a->tcp, on_admin_closed);
}
