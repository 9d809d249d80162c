/* libFuzzer target: the response path. Upstream bytes arrive in reads of
 * a size the input picks and go through what proxy.c pump_response() and
 * relay_head() do: psproxy's llhttp settings, the head analysis, the
 * framing choice, http_build_response() with the fixed config's
 * header_down and site header ops, the body re-framed. What the client
 * would get must parse cleanly as the same status and the same body. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_http.h"

typedef struct response {
    http_head_t head;
    int head_method; /* the request was HEAD: no body whatever the fields say */
    int head_seen, done;
    char *body; /* this pass's body bytes, compacted as proxy.c on_resp_body does */
    size_t body_len;
    fuzz_sink_t decoded; /* the final response's body bytes as llhttp gave them */
} response_t;

static response_t *response_of(llhttp_t *p)
{
    return container_of(p, response_t, head.parser);
}

static int on_begin(llhttp_t *p)
{
    response_t *r = response_of(p);
    http_head_reset(&r->head);
    r->decoded.len = 0;
    return 0;
}

static int on_headers(llhttp_t *p)
{
    response_t *r = response_of(p);
    r->head_seen = 1;
    if (http_response_bodiless(p->status_code, r->head_method))
        p->flags |= F_SKIPBODY; /* as proxy.c on_resp_headers, and as clients know */
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    response_t *r = response_of(p);
    fuzz_sink_put(&r->decoded, at, len);
    http_body_append(&r->body, &r->body_len, at, len);
    return 0;
}

static int on_complete(llhttp_t *p)
{
    if (p->status_code < 200)
        return 0; /* an interim response; the final one follows */
    response_of(p)->done = 1;
    return HPE_PAUSED;
}

static llhttp_settings_t settings;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    http_settings_init(&settings);
    settings.on_message_begin = on_begin;
    settings.on_headers_complete = on_headers;
    settings.on_body = on_body;
    settings.on_message_complete = on_complete;
    fuzz_cfg();
    return 0;
}

/* The exchange as the client connection sees it. */
typedef struct exchange {
    int http10, upgrade, keep_alive, req_done;
    int framing, started, tunnel, failed;
    fuzz_sink_t client; /* the bytes written to the client */
} exchange_t;

/* relay_head(): 0, or -1 when the exchange failed (502 or a tunnel). */
static int relay_head(exchange_t *x, response_t *r)
{
    int status = r->head.parser.status_code;
    if (http_head_analyze(&r->head) != 0 || (status == 101 && !x->upgrade))
        return -1;
    int interim = status < 200 && status != 101;
    if (interim && x->http10)
        return 0; /* RFC 9110 15.2: no 1xx to an HTTP/1.0 client */
    const cfg_hdr_ops_t *ops[1] = {fuzz_site_header_ops()};
    http_vars_t vars;
    memset(&vars, 0, sizeof(vars));
    vars.path = uv_buf_init("/p", 2);
    vars.upstream_hostport = uv_buf_init("127.0.0.1:9000", 14);
    http_resp_out_t out;
    memset(&out, 0, sizeof(out));
    out.resp = &r->head;
    out.vars = &vars;
    out.http10 = x->http10;
    if (!interim) {
        out.down = &fuzz_proxy()->header_down;
        out.ops = ops;
        out.n_ops = 1;
        out.upgrade = status == 101;
        x->framing = http_response_framing(&r->head, r->head_method, x->http10, 0);
        if (!x->req_done || x->framing == HTTP_BODY_EOF)
            x->keep_alive = 0;
        out.keep_alive = x->keep_alive;
        out.framing = x->framing;
    }
    static char head[FUZZ_IO_BUF];
    int n = http_build_response(head, sizeof(head), &out);
    if (n < 0)
        return -1;
    fuzz_sink_put(&x->client, head, (size_t)n);
    if (!interim)
        x->started = 1;
    if (status == 101) {
        x->tunnel = 1;
        return -1;
    }
    return 0;
}

/* One parse pass over BUF[*pos..avail). Returns 0, or -1 when it ends. */
static int pump(exchange_t *x, response_t *r, const char *buf, size_t *pos, size_t avail)
{
    llhttp_t *p = &r->head.parser;
    r->body = NULL;
    r->body_len = 0;
    if (llhttp_get_errno(p) == HPE_PAUSED)
        llhttp_resume(p);
    llhttp_errno_t err = llhttp_execute(p, buf + *pos, avail - *pos);
    if (err == HPE_OK) {
        *pos = avail;
    } else if (err == HPE_PAUSED) {
        *pos = (size_t)(llhttp_get_error_pos(p) - buf);
    } else {
        x->failed = 1; /* 502, or a cut connection once the head went out */
        return -1;
    }
    if (r->head_seen) {
        r->head_seen = 0;
        if (relay_head(x, r) != 0) {
            x->failed = !x->tunnel;
            return -1;
        }
    }
    if (r->body_len > 0 && x->framing != HTTP_BODY_NONE)
        fuzz_put_body(&x->client, x->framing, r->body, r->body_len);
    if (r->done) {
        fuzz_put_end(&x->client, x->framing);
        return -1;
    }
    return 0;
}

/* on_up_read() at EOF: a close-delimited body ends here (RFC 9112 6.3). */
static void upstream_eof(exchange_t *x, response_t *r)
{
    llhttp_t *p = &r->head.parser;
    if (!x->started || r->done || !llhttp_message_needs_eof(p))
        return;
    if (llhttp_get_errno(p) == HPE_PAUSED)
        llhttp_resume(p);
    r->body = NULL;
    r->body_len = 0;
    if (llhttp_finish(p) == HPE_OK || r->done)
        fuzz_put_end(&x->client, x->framing);
}

static void fail_client(const char *msg, const exchange_t *x)
{
    fuzz_fail_bytes(msg, x->client.p, x->client.len);
}

/* The client's view: every head and body psproxy wrote, parsed again. */
static void check_client(const exchange_t *x, const response_t *up)
{
    static http_table_t table_;
    response_t *c = calloc(1, sizeof(*c));
    c->head_method = up->head_method;
    http_head_init(&c->head, HTTP_RESPONSE, &settings);
    c->head.hdrs = table_.hdrs;
    llhttp_t *p = &c->head.parser;
    size_t pos = 0;
    while (!c->done && (pos < x->client.len || llhttp_get_errno(p) == HPE_PAUSED)) {
        if (llhttp_get_errno(p) == HPE_PAUSED)
            llhttp_resume(p);
        llhttp_errno_t err = llhttp_execute(p, x->client.p + pos, x->client.len - pos);
        if (err == HPE_PAUSED_UPGRADE)
            break;
        if (err == HPE_USER && c->head.err_status == 431)
            goto out; /* the fields psproxy adds took it past its own limit, not a client's */
        if (err != HPE_OK && err != HPE_PAUSED) {
            fprintf(stderr, "fuzz: llhttp: %s at %ld\n", llhttp_get_error_reason(p),
                    (long)(llhttp_get_error_pos(p) - x->client.p));
            fail_client("the client's response does not parse", x);
        }
        pos = err == HPE_OK ? x->client.len : (size_t)(llhttp_get_error_pos(p) - x->client.p);
        if (c->head_seen) {
            c->head_seen = 0;
            if (http_head_analyze(&c->head) != 0)
                fail_client("the client's response head fails psproxy's own checks", x);
        }
    }
    if (x->framing == HTTP_BODY_EOF && up->done && !c->done) {
        llhttp_finish(p); /* HPE_PAUSED: on_complete pauses, as in proxy.c */
        if (!c->done)
            fail_client("the client's close-delimited response does not end", x);
    }
    if (up->done) {
        if (!c->done && !x->tunnel)
            fail_client("the client's response does not end", x);
        if (p->status_code != up->head.parser.status_code)
            fail_client("the client got another status", x);
        if (!fuzz_equal(c->decoded.p, c->decoded.len, up->decoded.p, up->decoded.len))
            fail_client("the client's body differs from the upstream's", x);
        if (pos != x->client.len && !x->tunnel)
            fuzz_fail("bytes after the client's response");
    }
out:
    fuzz_sink_free(&c->decoded);
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0];
    size_t len = size - 1;
    char *buf = malloc(len > 0 ? len : 1);
    memcpy(buf, data + 1, len);
    static http_table_t table_;
    response_t *r = calloc(1, sizeof(*r));
    r->head_method = flags & 1;
    http_head_init(&r->head, HTTP_RESPONSE, &settings);
    r->head.hdrs = table_.hdrs;
    exchange_t x;
    memset(&x, 0, sizeof(x));
    x.http10 = (flags >> 1) & 1;
    x.upgrade = (flags >> 2) & 1;
    x.req_done = !((flags >> 3) & 1);
    x.keep_alive = !x.http10;
    size_t step = ((size_t)(flags >> 4) + 1) * 37, pos = 0, avail = 0;
    for (;;) {
        int paused = llhttp_get_errno(&r->head.parser) == HPE_PAUSED;
        if (!paused && pos == avail) {
            if (avail == len) {
                upstream_eof(&x, r);
                break;
            }
            avail = len - avail > step ? avail + step : len; /* one more read */
        }
        if (pump(&x, r, buf, &pos, avail) != 0)
            break;
    }
    if (!x.failed)
        check_client(&x, r);
    fuzz_sink_free(&x.client);
    fuzz_sink_free(&r->decoded);
    free(r);
    free(buf);
    return 0;
}
