/* The JSON dump of a loaded configuration (`psproxy validate --dump`):
 * psproxy's normalised view, which tests/config_diff.py compares with
 * `caddy adapt`; passwords in it are redacted. */
#include "parse.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *scheme_name(int s)
{
    return s == CFG_SCHEME_HTTP ? "http" : "https";
}

/* The template as Caddy's JSON spells it: long placeholder names, and a
 * backslash before a literal brace that would read as a placeholder. */
static cJSON *tmpl_json(const cfg_tmpl_t *t)
{
    size_t cap = 1;
    for (size_t i = 0; i < t->n_parts; i++)
        cap += t->parts[i].var ? 64 : t->parts[i].len * 2;
    char *buf = malloc(cap), *w = buf;
    if (buf == NULL)
        return NULL;
    for (size_t i = 0; i < t->n_parts; i++) {
        const cfg_tmpl_part_t *p = &t->parts[i];
        if (p->var != CFG_VAR_NONE) {
            w += sprintf(w, "{%s}", cfg_var_name(p->var));
            continue;
        }
        for (size_t k = 0; k < p->len; k++) {
            if (p->lit[k] == '{') { /* escape only what would read as a placeholder */
                size_t e = k + 1;
                while (e < p->len && cfg_is_var_char(p->lit[e]))
                    e++;
                if (e > k + 1 && e < p->len && p->lit[e] == '}')
                    *w++ = '\\';
            }
            *w++ = p->lit[k];
        }
    }
    *w = '\0';
    cJSON *j = cJSON_CreateString(buf);
    free(buf);
    return j;
}

static cJSON *hdr_ops_json(const cfg_hdr_ops_t *ops)
{
    static const char *const names[] = {"", "set", "add", "delete", "default"};
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < ops->n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "op", names[ops->ops[i].op]);
        cJSON_AddStringToObject(o, "name", ops->ops[i].name);
        if (ops->ops[i].op != CFG_HDR_DEL)
            cJSON_AddItemToObject(o, "value", tmpl_json(&ops->ops[i].value));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static cJSON *handler_json(const cfg_handler_t *h)
{
    static const char *const lb[] = {"random", "round_robin", "first", "least_conn", "ip_hash"};
    cJSON *o = cJSON_CreateObject();
    switch (h->kind) {
    case CFG_H_REQUEST_BODY:
        cJSON_AddStringToObject(o, "kind", "request_body");
        cJSON_AddNumberToObject(o, "max_size", (double)h->u.request_body.max_size);
        break;
    case CFG_H_HEADER:
        cJSON_AddStringToObject(o, "kind", "header");
        break;
    case CFG_H_REDIR:
        cJSON_AddStringToObject(o, "kind", "redir");
        break;
    case CFG_H_RESPOND:
        cJSON_AddStringToObject(o, "kind", "respond");
        break;
    default:
        cJSON_AddStringToObject(o, "kind", "reverse_proxy");
        break;
    }
    if (h->match)
        cJSON_AddStringToObject(o, "match", h->match);
    else
        cJSON_AddNullToObject(o, "match");
    cJSON_AddStringToObject(o, "file", h->file);
    cJSON_AddNumberToObject(o, "line", h->line);
    if (h->kind == CFG_H_HEADER) {
        cJSON_AddItemToObject(o, "ops", hdr_ops_json(&h->u.header));
    } else if (h->kind == CFG_H_REDIR) {
        cJSON_AddNumberToObject(o, "status", h->u.redir.status);
        cJSON_AddItemToObject(o, "to", tmpl_json(&h->u.redir.to));
    } else if (h->kind == CFG_H_RESPOND) {
        cJSON_AddNumberToObject(o, "status", h->u.respond.status);
        cJSON_AddItemToObject(o, "body", tmpl_json(&h->u.respond.body));
        cJSON_AddBoolToObject(o, "close", h->u.respond.close);
    } else {
        const cfg_proxy_t *px = &h->u.proxy;
        cJSON *ups = cJSON_AddArrayToObject(o, "upstreams");
        for (size_t i = 0; i < px->n_ups; i++)
            cJSON_AddItemToArray(ups, cJSON_CreateString(px->ups[i].hostport));
        cJSON_AddStringToObject(o, "lb_policy", lb[px->lb_policy]);
        cJSON_AddNumberToObject(o, "lb_try_duration_ms", (double)px->lb_try_duration);
        cJSON_AddNumberToObject(o, "lb_try_interval_ms", (double)px->lb_try_interval);
        cJSON_AddItemToObject(o, "header_up", hdr_ops_json(&px->header_up));
        cJSON_AddItemToObject(o, "header_down", hdr_ops_json(&px->header_down));
        cJSON_AddNumberToObject(o, "dial_timeout_ms", (double)px->dial_timeout);
        cJSON_AddNumberToObject(o, "response_header_timeout_ms",
                                (double)px->response_header_timeout);
        cJSON_AddNumberToObject(o, "read_timeout_ms", (double)px->read_timeout);
        cJSON_AddNumberToObject(o, "write_timeout_ms", (double)px->write_timeout);
        cJSON_AddNumberToObject(o, "keepalive_ms", (double)px->keepalive);
        cJSON_AddNumberToObject(o, "keepalive_idle_conns", px->keepalive_idle_conns);
        cJSON_AddNumberToObject(o, "keepalive_idle_conns_per_host",
                                px->keepalive_idle_conns_per_host);
        cJSON_AddBoolToObject(o, "keepalive_off", px->keepalive_off);
    }
    return o;
}

static void add_str_or_null(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

struct redacted {
    char *out;
    size_t cap, len;
};

static void red_put(struct redacted *r, const char *p, size_t n)
{
    for (size_t i = 0; i < n && r->len + 1 < r->cap; i++)
        r->out[r->len++] = p[i];
}

/* Copies DSN into OUT with every password replaced by "***": a URI's
 * user:password@ and password= parameters, a keyword string's password=
 * value (quoted or not). */
void cfg_redact_dsn(const char *dsn, char *out, size_t cap)
{
    struct redacted r = {out, cap, 0};
    const char *p = dsn;
    int uri = strncmp(dsn, "postgres://", 11) == 0 || strncmp(dsn, "postgresql://", 13) == 0;
    if (uri) {
        /* user:password@ before the host */
        const char *auth = strstr(dsn, "://") + 3;
        const char *end = auth + strcspn(auth, "/?");
        const char *at = memchr(auth, '@', (size_t)(end - auth));
        const char *colon = at != NULL ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon != NULL) {
            red_put(&r, p, (size_t)(colon + 1 - p));
            red_put(&r, "***", 3);
            p = at;
        }
    }
    while (*p != '\0') {
        /* password=VALUE, at the start or after a separator */
        int boundary = p == dsn || p[-1] == ' ' || p[-1] == '\t' || p[-1] == '?' || p[-1] == '&';
        const char *q = p + 8;
        if (boundary && strncmp(p, "password", 8) == 0) {
            while (*q == ' ' || *q == '\t')
                q++;
        }
        if (!boundary || strncmp(p, "password", 8) != 0 || *q != '=') {
            red_put(&r, p++, 1);
            continue;
        }
        red_put(&r, p, (size_t)(q + 1 - p));
        p = q + 1;
        while (*p == ' ' || *p == '\t')
            red_put(&r, p++, 1);
        if (*p == '\'') {
            for (p++; *p != '\0' && *p != '\''; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p == '\'')
                p++;
        } else {
            while (*p != '\0' && *p != ' ' && *p != '\t' && !(uri && *p == '&'))
                p++;
        }
        red_put(&r, "***", 3);
    }
    if (cap > 0)
        out[r.len] = '\0';
}

int cfg_dump_json(const cfg_t *cfg, FILE *out)
{
    static const char *const ah[] = {"on", "off", "disable_redirects"};
    cJSON *root = cJSON_CreateObject();
    cJSON *g = cJSON_AddObjectToObject(root, "global");
    cJSON_AddBoolToObject(g, "admin_off", cfg->admin_off);
    cJSON_AddStringToObject(g, "admin", cfg->admin_addr);
    cJSON_AddNumberToObject(g, "http_port", cfg->http_port);
    cJSON_AddNumberToObject(g, "https_port", cfg->https_port);
    add_str_or_null(g, "email", cfg->email);
    add_str_or_null(g, "default_sni", cfg->default_sni);
    add_str_or_null(g, "acme_ca", cfg->acme_ca);
    add_str_or_null(g, "acme_ca_root", cfg->acme_ca_root);
    add_str_or_null(g, "storage_root", cfg->storage_root);
    cJSON_AddStringToObject(g, "storage",
                            cfg->storage_kind == CFG_STORAGE_POSTGRES ? "postgres" : "file_system");
    if (cfg->storage_kind == CFG_STORAGE_POSTGRES) {
        char dsn[512];
        cfg_redact_dsn(cfg->storage_dsn, dsn, sizeof(dsn));
        cJSON_AddStringToObject(g, "storage_dsn", dsn);
        add_str_or_null(g, "storage_key_file", cfg->storage_key_file);
    }
    cJSON_AddNumberToObject(g, "grace_period_ms", (double)cfg->grace_period);
    cJSON_AddStringToObject(g, "auto_https", ah[cfg->auto_https]);
    cJSON_AddNumberToObject(g, "workers", cfg->workers);
    cJSON_AddNumberToObject(g, "max_connections", (double)cfg->max_connections);
    cJSON_AddNumberToObject(g, "read_header_timeout_ms", (double)cfg->timeouts.read_header);
    cJSON_AddNumberToObject(g, "read_body_timeout_ms", (double)cfg->timeouts.read_body);
    cJSON_AddNumberToObject(g, "write_timeout_ms", (double)cfg->timeouts.write);
    cJSON_AddNumberToObject(g, "idle_timeout_ms", (double)cfg->timeouts.idle);
    cJSON_AddNumberToObject(g, "max_header_size", (double)cfg->max_header_size);
    cJSON *protos = cJSON_AddArrayToObject(g, "protocols");
    cJSON_AddItemToArray(protos, cJSON_CreateString("h1"));
    if (cfg->protocols & CFG_PROTO_H2)
        cJSON_AddItemToArray(protos, cJSON_CreateString("h2"));

    cJSON *lns = cJSON_AddArrayToObject(root, "listeners");
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const cfg_listener_t *ln = &cfg->listeners[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "port", ln->port);
        cJSON_AddStringToObject(o, "scheme", scheme_name(ln->scheme));
        if (ln->redirect_https)
            cJSON_AddBoolToObject(o, "redirect_https", 1);
        if (ln->redirect_hosts)
            cJSON_AddBoolToObject(o, "redirect_hosts", 1);
        cJSON *hosts = cJSON_AddArrayToObject(o, "hosts");
        cJSON *sites = cJSON_AddArrayToObject(o, "sites");
        for (size_t k = 0; k < ln->n_sites; k++) {
            const cfg_site_t *s = ln->sites[k];
            cJSON_AddItemToArray(sites, cJSON_CreateNumber((double)(s - cfg->sites)));
            for (size_t m = 0; m < s->n_addrs; m++)
                if (s->addrs[m].port == ln->port)
                    cJSON_AddItemToArray(hosts, cJSON_CreateString(s->addrs[m].host));
        }
        cJSON_AddItemToArray(lns, o);
    }

    cJSON *sites = cJSON_AddArrayToObject(root, "sites");
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const cfg_site_t *s = &cfg->sites[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", s->file);
        cJSON_AddNumberToObject(o, "line", s->line);
        cJSON *addrs = cJSON_AddArrayToObject(o, "addrs");
        for (size_t k = 0; k < s->n_addrs; k++) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "scheme", scheme_name(s->addrs[k].scheme));
            cJSON_AddStringToObject(a, "host", s->addrs[k].host);
            cJSON_AddNumberToObject(a, "port", s->addrs[k].port);
            cJSON_AddItemToArray(addrs, a);
        }
        cJSON *hs = cJSON_AddArrayToObject(o, "handlers");
        for (size_t k = 0; k < s->n_handlers; k++)
            cJSON_AddItemToArray(hs, handler_json(&s->handlers[k]));
        if (s->tls.line != 0) {
            cJSON *t = cJSON_AddObjectToObject(o, "tls");
            add_str_or_null(t, "cert_file", s->tls.cert_file);
            add_str_or_null(t, "key_file", s->tls.key_file);
            add_str_or_null(t, "email", s->tls.email);
            cJSON_AddBoolToObject(t, "internal", s->tls.internal);
        }
        if (s->log.enabled) {
            cJSON *l = cJSON_AddObjectToObject(o, "log");
            add_str_or_null(l, "file", s->log.file);
            cJSON_AddNumberToObject(l, "index", s->log.index);
            cJSON_AddStringToObject(l, "format",
                                    s->log.format == CFG_LOG_JSON      ? "json"
                                    : s->log.format == CFG_LOG_CONSOLE ? "console"
                                                                       : "auto");
        }
        cJSON_AddItemToArray(sites, o);
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (txt == NULL)
        return UV_ENOMEM;
    int ok = fputs(txt, out) >= 0 && fputc('\n', out) != EOF;
    cJSON_free(txt);
    return ok ? 0 : UV_EIO;
}
