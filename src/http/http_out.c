/* HTTP/1.1 heads written for the other side: placeholders, the upstream
 * request head, the response head as Caddy's header map builds it, and
 * answers made here. Reading heads is http.c. */
#include "http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- placeholders ------------------------------------------------------- */

uv_buf_t http_host_without_port(uv_buf_t hp)
{
    if (hp.len > 0 && hp.base[0] == '[') {
        for (size_t i = 1; i < hp.len; i++)
            if (hp.base[i] == ']')
                return uv_buf_init(hp.base + 1, i - 1);
        return hp;
    }
    for (size_t i = hp.len; i > 0; i--)
        if (hp.base[i - 1] == ':')
            return uv_buf_init(hp.base, i - 1);
    return hp;
}

static uv_buf_t cstr(const char *s)
{
    return uv_buf_init((char *)s, s != NULL ? strlen(s) : 0);
}

void http_vars_from_request(http_vars_t *v, const http_head_t *req, int https,
                            const char *remote_host, const char *remote_port)
{
    memset(v, 0, sizeof(*v));
    v->hostport = req->host;
    v->host = http_host_without_port(req->host);
    v->uri = req->target;
    v->path = req->target;
    for (size_t i = 0; i < req->target.len; i++) {
        if (req->target.base[i] == '?') {
            v->path.len = i;
            v->query = uv_buf_init(req->target.base + i + 1, req->target.len - i - 1);
            break;
        }
    }
    v->method = cstr(llhttp_method_name((llhttp_method_t)req->parser.method));
    v->scheme = cstr(https ? "https" : "http");
    v->remote_host = cstr(remote_host);
    v->remote_port = cstr(remote_port);
}

/* A bounded writer into a caller's buffer; overflow is sticky. */
typedef struct out {
    char *p;
    size_t len, cap;
    int overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = 1;
        return;
    }
    if (n == 0)
        return; /* an empty placeholder is a NULL slice: no memcpy from NULL (C11 7.24.1) */
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_buf(out_t *o, uv_buf_t b)
{
    put(o, b.base, b.len);
}

/* Decimal digits by hand: snprintf cost more than the rest of a head. */
static void put_uint(out_t *o, unsigned long long n)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    put(o, tmp + i, sizeof(tmp) - i);
}

static void put_field(out_t *o, const http_hdr_t *hdr)
{
    put_buf(o, hdr->name);
    put(o, ": ", 2);
    put_buf(o, hdr->value);
    put(o, "\r\n", 2);
}

static uv_buf_t var_value(const http_vars_t *v, int var)
{
    switch (var) {
    case CFG_VAR_HOST: return v->host;
    case CFG_VAR_HOSTPORT: return v->hostport;
    case CFG_VAR_URI: return v->uri;
    case CFG_VAR_PATH: return v->path;
    case CFG_VAR_QUERY: return v->query;
    case CFG_VAR_METHOD: return v->method;
    case CFG_VAR_SCHEME: return v->scheme;
    case CFG_VAR_REMOTE_HOST: return v->remote_host;
    case CFG_VAR_REMOTE_PORT: return v->remote_port;
    case CFG_VAR_UPSTREAM_HOSTPORT: return v->upstream_hostport;
    default: return uv_buf_init(NULL, 0);
    }
}

static void put_tmpl(out_t *o, const cfg_tmpl_t *t, const http_vars_t *v)
{
    for (size_t i = 0; i < t->n_parts; i++) {
        const cfg_tmpl_part_t *part = &t->parts[i];
        if (part->var == CFG_VAR_NONE)
            put(o, part->lit, part->len);
        else
            put_buf(o, var_value(v, part->var));
    }
}

int http_tmpl_expand(const cfg_tmpl_t *t, const http_vars_t *v, char *buf, size_t cap,
                     size_t *len)
{
    out_t o = {buf, *len, cap, 0};
    put_tmpl(&o, t, v);
    if (o.overflow)
        return -1;
    *len = o.len;
    return 0;
}

/* ---- rewriting heads ---------------------------------------------------- */

/* RFC 9110 7.6.1 hop-by-hop fields, plus the ones Go's and so Caddy's proxy
 * also drops. Upgrade is handled by the caller. */
static int is_hop_by_hop(uv_buf_t name)
{
    /* literals, not a table: their lengths are constants, so a name of
     * another length costs one compare each */
    return http_token_eq(name, "connection") || http_token_eq(name, "keep-alive") ||
           http_token_eq(name, "proxy-connection") || http_token_eq(name, "te") ||
           http_token_eq(name, "trailer") || http_token_eq(name, "transfer-encoding") ||
           http_token_eq(name, "upgrade") || http_token_eq(name, "proxy-authenticate") ||
           http_token_eq(name, "proxy-authorization");
}

static int is_conn_token(const http_head_t *h, uv_buf_t name)
{
    const uv_buf_t *tokens = http_conn_tokens(h);
    for (unsigned i = 0; i < h->n_conn_tokens; i++)
        if (name.len == tokens[i].len && strncasecmp(name.base, tokens[i].base, name.len) == 0)
            return 1;
    return 0;
}

static int op_matches(const cfg_hdr_op_t *op, uv_buf_t name)
{
    size_t n = strlen(op->name);
    if (op->op == CFG_HDR_DEL && n > 0 && op->name[n - 1] == '*')
        return name.len >= n - 1 && strncasecmp(name.base, op->name, n - 1) == 0;
    return name.len == n && strncasecmp(name.base, op->name, n) == 0;
}

/* True when an op list replaces or deletes the field NAME. */
static int ops_remove(const cfg_hdr_ops_t *ops, uv_buf_t name)
{
    if (ops == NULL)
        return 0;
    for (size_t i = 0; i < ops->n; i++) {
        const cfg_hdr_op_t *op = &ops->ops[i];
        if ((op->op == CFG_HDR_SET || op->op == CFG_HDR_DEL) && op_matches(op, name))
            return 1;
    }
    return 0;
}

static int is_framing_field(uv_buf_t name);

/* Emits header_up's SET/ADD/DEFAULT ops; DEFAULT only when the field is
 * not in the head we are writing (HAS tells). None on a framing field:
 * those are psproxy's. */
static void put_ops(out_t *o, const cfg_hdr_ops_t *ops, const http_vars_t *v,
                    int (*has)(const void *ctx, uv_buf_t name), const void *ctx)
{
    if (ops == NULL)
        return;
    for (size_t i = 0; i < ops->n; i++) {
        const cfg_hdr_op_t *op = &ops->ops[i];
        if (op->op == CFG_HDR_DEL || is_framing_field(cstr(op->name)))
            continue;
        if (op->op == CFG_HDR_DEFAULT && has(ctx, cstr(op->name)))
            continue;
        puts_(o, op->name);
        put(o, ": ", 2);
        put_tmpl(o, &op->value, v);
        put(o, "\r\n", 2);
    }
}

/* ---- a response's fields, as Caddy's header map ----------------------- */

#define HTTP_RESP_FIELDS (2 * HTTP_MAX_HEADERS)

/* One field of the map: a slice of the upstream head, or an op's value. */
typedef struct resp_field {
    uv_buf_t name;          /* len 0: removed */
    uv_buf_t value;         /* when TMPL is NULL */
    const cfg_tmpl_t *tmpl; /* an op's value, expanded when written */
} resp_field_t;

typedef struct resp_fields {
    resp_field_t f[HTTP_RESP_FIELDS];
    unsigned n;
    int overflow;
} resp_fields_t;

/* One per worker thread, for the head being built: too large for a
 * worker's stack to take lightly, and never two heads at once. */
static _Thread_local resp_fields_t resp_fields;

static resp_fields_t *fields_start(void)
{
    resp_fields.n = 0;
    resp_fields.overflow = 0;
    return &resp_fields;
}

static void fields_add(resp_fields_t *fs, uv_buf_t name, uv_buf_t value, const cfg_tmpl_t *t)
{
    if (fs->n == HTTP_RESP_FIELDS) {
        fs->overflow = 1;
        return;
    }
    fs->f[fs->n++] = (resp_field_t){name, value, t};
}

static int fields_has(const resp_fields_t *fs, unsigned from, uv_buf_t name)
{
    for (unsigned i = from; i < fs->n; i++)
        if (fs->f[i].name.len == name.len && strncasecmp(fs->f[i].name.base, name.base, name.len) == 0)
            return 1;
    return 0;
}

/* Removes the fields from FROM on that OP names (a trailing '*': a prefix). */
static void fields_del(resp_fields_t *fs, unsigned from, const cfg_hdr_op_t *op)
{
    for (unsigned i = from; i < fs->n; i++)
        if (fs->f[i].name.len > 0 && op_matches(op, fs->f[i].name))
            fs->f[i].name.len = 0;
}

/* Caddy's HeaderOps.ApplyTo on the fields from FROM: adds, then sets
 * (which replace every value of their name), then deletions; then the
 * `?` defaults, each only where its field is absent. */
static void fields_apply(resp_fields_t *fs, unsigned from, const cfg_hdr_ops_t *ops)
{
    if (ops == NULL)
        return;
    static const int order[] = {CFG_HDR_ADD, CFG_HDR_SET, CFG_HDR_DEL, CFG_HDR_DEFAULT};
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        for (size_t i = 0; i < ops->n; i++) {
            const cfg_hdr_op_t *op = &ops->ops[i];
            uv_buf_t name = cstr(op->name);
            if (op->op != order[k] || is_framing_field(name))
                continue;
            if (op->op == CFG_HDR_DEL) {
                fields_del(fs, from, op);
                continue;
            }
            if (op->op == CFG_HDR_DEFAULT && fields_has(fs, from, name))
                continue;
            if (op->op == CFG_HDR_SET) {
                cfg_hdr_op_t del = {CFG_HDR_DEL, op->name, {NULL, NULL, 0}};
                fields_del(fs, from, &del);
            }
            fields_add(fs, name, uv_buf_init(NULL, 0), &op->value);
        }
    }
}

/* The site's `header` ops around what the handler writes: BEFORE, the
 * ones that run before it, in route order; else the deferred ones, the
 * last first (each wraps the writer of the ones before it). */
static void fields_site_ops(resp_fields_t *fs, const cfg_hdr_ops_t *const *ops, unsigned n,
                            int before)
{
    if (before) {
        for (unsigned i = 0; i < n; i++)
            if (!ops[i]->deferred)
                fields_apply(fs, 0, ops[i]);
        return;
    }
    for (unsigned i = n; i-- > 0;)
        if (ops[i]->deferred)
            fields_apply(fs, 0, ops[i]);
}

static void put_fields(out_t *o, const resp_fields_t *fs, const http_vars_t *v)
{
    for (unsigned i = 0; i < fs->n; i++) {
        const resp_field_t *f = &fs->f[i];
        if (f->name.len == 0)
            continue;
        put_buf(o, f->name);
        put(o, ": ", 2);
        if (f->tmpl != NULL)
            put_tmpl(o, f->tmpl, v);
        else
            put_buf(o, f->value);
        put(o, "\r\n", 2);
    }
}

int http_expand_ops(const cfg_hdr_ops_t *const *ops, unsigned n, const http_vars_t *v, char *buf,
                    size_t cap, size_t *len, const http_hdr_t *own)
{
    resp_fields_t *fs = fields_start();
    fields_site_ops(fs, ops, n, 1);
    if (own != NULL && !fields_has(fs, 0, own->name))
        fields_add(fs, own->name, own->value, NULL);
    fields_site_ops(fs, ops, n, 0);
    out_t o = {buf, *len, cap, 0};
    put_fields(&o, fs, v);
    if (o.overflow || fs->overflow)
        return -1;
    *len = o.len;
    return 0;
}

struct kept {
    const http_head_t *h;
    const cfg_hdr_ops_t *const *ops;
    unsigned n_ops;
    int upgrade;
};

static int kept_header(const struct kept *k, uv_buf_t name)
{
    /* the Upgrade of a tunnelled exchange passes, though Connection lists it */
    if (k->upgrade && http_token_eq(name, "upgrade"))
        return 1;
    if (is_hop_by_hop(name))
        return 0;
    /* Connection may not take away what the message needs end to end: its
     * Content-Length (the body goes on as this head frames it; dropping it
     * would turn the body into a smuggled request) and Host */
    if (is_conn_token(k->h, name) && !http_token_eq(name, "content-length") &&
        !http_token_eq(name, "host"))
        return 0;
    for (unsigned i = 0; i < k->n_ops; i++)
        if (ops_remove(k->ops[i], name))
            return 0;
    return 1;
}

static int has_kept(const void *ctx, uv_buf_t name)
{
    const struct kept *k = ctx;
    for (unsigned i = 0; i < k->h->n_hdrs; i++)
        if (k->h->hdrs[i].name.len == name.len &&
            strncasecmp(k->h->hdrs[i].name.base, name.base, name.len) == 0 &&
            kept_header(k, name))
            return 1;
    return 0;
}

/* The fields that frame a request body: psproxy writes them itself. */
static int is_framing_field(uv_buf_t name)
{
    return http_token_eq(name, "content-length") || http_token_eq(name, "transfer-encoding");
}

static int is_forwarded_header(uv_buf_t name)
{
    return http_token_eq(name, "x-forwarded-for") || http_token_eq(name, "x-forwarded-proto") ||
           http_token_eq(name, "x-forwarded-host");
}

int http_build_request(char *buf, size_t cap, const http_req_out_t *r)
{
    const http_head_t *h = r->req;
    out_t o = {buf, 0, cap, 0};
    const cfg_hdr_ops_t *const ops[1] = {r->ops};
    struct kept k = {h, ops, 1, r->upgrade};

    put_buf(&o, r->vars->method);
    put(&o, " ", 1);
    put_buf(&o, h->target);
    put(&o, " HTTP/1.1\r\n", 11);

    const http_hdr_t *xfp = NULL, *xfh = NULL;
    int n_xff = 0;
    for (unsigned i = 0; i < h->n_hdrs; i++) {
        const http_hdr_t *hdr = &h->hdrs[i];
        if (is_forwarded_header(hdr->name)) {
            if (http_token_eq(hdr->name, "x-forwarded-proto"))
                xfp = hdr;
            else if (http_token_eq(hdr->name, "x-forwarded-host"))
                xfh = hdr;
            else
                n_xff++;
            continue;
        }
        if (is_framing_field(hdr->name))
            continue; /* written below, from the framing we send */
        if (kept_header(&k, hdr->name))
            put_field(&o, hdr);
    }
    if (!h->has_host && !ops_remove(r->ops, cstr("host"))) {
        put(&o, "Host: ", 6);
        put_buf(&o, h->host.len > 0 ? h->host : r->vars->upstream_hostport);
        put(&o, "\r\n", 2);
    }

    /* Caddy's semantics: X-Forwarded-* from an untrusted peer are replaced,
     * from a trusted proxy they are extended. */
    if (!ops_remove(r->ops, cstr("x-forwarded-for"))) {
        put(&o, "X-Forwarded-For: ", 17);
        if (r->trusted && n_xff > 0) {
            for (unsigned i = 0; i < h->n_hdrs; i++) {
                if (http_token_eq(h->hdrs[i].name, "x-forwarded-for")) {
                    put_buf(&o, h->hdrs[i].value);
                    put(&o, ", ", 2);
                }
            }
        }
        puts_(&o, r->client_ip);
        put(&o, "\r\n", 2);
    }
    if (!ops_remove(r->ops, cstr("x-forwarded-proto"))) {
        put(&o, "X-Forwarded-Proto: ", 19);
        if (r->trusted && xfp != NULL)
            put_buf(&o, xfp->value);
        else
            puts_(&o, r->https ? "https" : "http");
        put(&o, "\r\n", 2);
    }
    if (!ops_remove(r->ops, cstr("x-forwarded-host")) && (xfh != NULL || h->host.len > 0)) {
        put(&o, "X-Forwarded-Host: ", 18);
        put_buf(&o, r->trusted && xfh != NULL ? xfh->value : h->host);
        put(&o, "\r\n", 2);
    }

    if (r->framing == HTTP_BODY_CHUNKED) {
        puts_(&o, "Transfer-Encoding: chunked\r\n");
    } else if (r->framing == HTTP_BODY_LENGTH) {
        put(&o, "Content-Length: ", 16);
        put_uint(&o, r->length);
        put(&o, "\r\n", 2);
    } else if (h->parser.flags & F_CONTENT_LENGTH) {
        puts_(&o, "Content-Length: 0\r\n"); /* a POST that says it has no body */
    }
    if (r->upgrade)
        puts_(&o, "Connection: upgrade\r\n");
    put_ops(&o, r->ops, r->vars, has_kept, &k);
    put(&o, "\r\n", 2);
    return o.overflow ? -1 : (int)o.len;
}

int http_build_response(char *buf, size_t cap, const http_resp_out_t *r)
{
    const http_head_t *h = r->resp;
    int status = h->parser.status_code;
    out_t o = {buf, 0, cap, 0};
    /* a 1xx passes as it came; a final head (or a 101) gets the ops */
    int final = status >= 200 || r->upgrade;
    struct kept k = {h, NULL, 0, r->upgrade};
    resp_fields_t *fs = fields_start();

    put(&o, "HTTP/1.1 ", 9);
    put_uint(&o, (unsigned)status);
    put(&o, " ", 1);
    if (h->reason.len > 0)
        put_buf(&o, h->reason);
    else
        puts_(&o, http_reason(status));
    put(&o, "\r\n", 2);

    if (final)
        fields_site_ops(fs, r->ops, r->n_ops, 1);
    unsigned up = fs->n;
    const int drop_length = r->body_filtered; /* read once: fields_add may alias R */
    for (unsigned i = 0; i < h->n_hdrs; i++) {
        const http_hdr_t *hdr = &h->hdrs[i];
        if (drop_length && http_token_eq(hdr->name, "content-length"))
            continue;
        if (kept_header(&k, hdr->name))
            fields_add(fs, hdr->name, hdr->value, NULL);
    }
    if (final) {
        fields_apply(fs, up, r->down);
        fields_site_ops(fs, r->ops, r->n_ops, 0);
    }
    put_fields(&o, fs, r->vars);
    if (final) {
        if (r->framing == HTTP_BODY_CHUNKED)
            puts_(&o, "Transfer-Encoding: chunked\r\n");
        if (r->upgrade)
            puts_(&o, "Connection: upgrade\r\n");
        else if (!r->keep_alive)
            puts_(&o, "Connection: close\r\n");
        else if (r->http10)
            puts_(&o, "Connection: keep-alive\r\n");
    }
    put(&o, "\r\n", 2);
    return o.overflow || fs->overflow ? -1 : (int)o.len;
}

int http_fields_have(const char *fields, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = fields; l != NULL && *l != '\0';) {
        if (strncasecmp(l, name, n) == 0 && l[n] == ':')
            return 1;
        l = strchr(l, '\n');
        if (l != NULL)
            l++;
    }
    return 0;
}

int http_build_simple(char *buf, size_t cap, int status, const char *extra, const char *body,
                      size_t body_len, int keep_alive, int head_only)
{
    out_t o = {buf, 0, cap, 0};
    put(&o, "HTTP/1.1 ", 9);
    put_uint(&o, (unsigned)status);
    put(&o, " ", 1);
    puts_(&o, http_reason(status));
    put(&o, "\r\n", 2);
    if (extra != NULL)
        puts_(&o, extra);
    /* one Content-Type: the caller's (a header op, respond's JSON) wins */
    if (body_len > 0 && !http_fields_have(extra, "content-type"))
        puts_(&o, "Content-Type: text/plain; charset=utf-8\r\n");
    if (status >= 200 && status != 204 && status != 304) {
        put(&o, "Content-Length: ", 16);
        put_uint(&o, body_len);
        put(&o, "\r\n", 2);
    }
    if (!keep_alive)
        puts_(&o, "Connection: close\r\n");
    put(&o, "\r\n", 2);
    if (!head_only && body_len > 0)
        put(&o, body, body_len);
    return o.overflow ? -1 : (int)o.len;
}
