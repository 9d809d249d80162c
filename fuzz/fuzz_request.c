/* libFuzzer target: the request path. Client bytes are parsed as conn.c
 * does (psproxy's llhttp settings, pause at each head, analysis, error
 * statuses), each head is rewritten for the upstream by
 * http_build_request() with the fixed config's header_up, and the body
 * is re-framed as proxy.c sends it. What would go upstream must parse
 * again, cleanly, as the same request with the same body: anything else
 * is a request two parsers could read differently. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_http.h"

#define MAX_PIPELINED 8

typedef struct request {
    http_head_t head;
    int head_done, done;
    char *body; /* this pass's body bytes, compacted as conn.c on_body does */
    size_t body_len;
    fuzz_sink_t decoded; /* every body byte llhttp handed over */
} request_t;

static request_t *request_of(llhttp_t *p)
{
    return container_of(p, request_t, head.parser);
}

static int on_message_begin(llhttp_t *p)
{
    http_head_reset(&request_of(p)->head);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    request_of(p)->head_done = 1;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    request_t *r = request_of(p);
    fuzz_sink_put(&r->decoded, at, len); /* before the gather moves it */
    http_body_append(&r->body, &r->body_len, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    request_of(p)->done = 1;
    return HPE_PAUSED;
}

static llhttp_settings_t settings;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    http_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    fuzz_cfg();
    return 0;
}

/* Runs llhttp on BUF[*pos..len), as conn_parse() does: resumes a pause
 * and moves *pos to where it stopped. */
static llhttp_errno_t parse(request_t *r, const char *buf, size_t *pos, size_t len)
{
    llhttp_t *p = &r->head.parser;
    r->body = NULL;
    r->body_len = 0;
    if (llhttp_get_errno(p) == HPE_PAUSED)
        llhttp_resume(p);
    llhttp_errno_t err = llhttp_execute(p, buf + *pos, len - *pos);
    if (err == HPE_OK)
        *pos = len;
    else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        *pos = (size_t)(llhttp_get_error_pos(p) - buf);
    if (err == HPE_PAUSED_UPGRADE)
        r->done = 1;
    return err;
}

/* The answer psproxy makes itself for a request it refuses. */
static void answer(int status)
{
    char out[1024];
    if (http_build_simple(out, sizeof(out), status, NULL, NULL, 0, 0, 0) < 0)
        fuzz_fail("an error response does not fit");
}

/* What the upstream would read: parsed again with psproxy's own rules. */
static void check_upstream(const request_t *orig, int framing, const fuzz_sink_t *wire)
{
    static http_table_t table_;
    request_t again;
    memset(&again, 0, sizeof(again));
    http_head_init(&again.head, HTTP_REQUEST, &settings);
    again.head.hdrs = table_.hdrs;
    size_t pos = 0;
    llhttp_errno_t err = parse(&again, wire->p, &pos, wire->len);
    if (err == HPE_USER && again.head.err_status == 431)
        return; /* the fields psproxy adds took it past the upstream's limit: a 431 there */
    if (err != HPE_PAUSED || !again.head_done)
        fuzz_fail_bytes("the upstream head does not parse", wire->p, wire->len);
    if (http_head_analyze(&again.head) != 0)
        fuzz_fail_bytes("the upstream head fails psproxy's own checks", wire->p, wire->len);
    if (again.head.parser.method != orig->head.parser.method ||
        !fuzz_equal(again.head.target.base, again.head.target.len, orig->head.target.base,
                    orig->head.target.len))
        fuzz_fail_bytes("the upstream head names another request", wire->p, wire->len);
    if (http_request_framing(&again.head) != framing)
        fuzz_fail_bytes("the upstream body is framed differently", wire->p, wire->len);
    while (!again.done && (pos < wire->len || llhttp_get_errno(&again.head.parser) == HPE_PAUSED)) {
        err = parse(&again, wire->p, &pos, wire->len);
        if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
            fuzz_fail_bytes("the upstream body does not parse", wire->p, wire->len);
    }
    if (!again.done && framing != HTTP_BODY_NONE)
        fuzz_fail_bytes("the upstream message does not end", wire->p, wire->len);
    if (pos != wire->len && !again.head.parser.upgrade)
        fuzz_fail("bytes after the upstream message");
    if (!fuzz_equal(again.decoded.p, again.decoded.len, orig->decoded.p, orig->decoded.len))
        fuzz_fail_bytes("the upstream body differs from the client's", wire->p, wire->len);
    fuzz_sink_free(&again.decoded);
}

/* FLAGS picks the connection's facts: TLS, a trusted peer, read sizes. */
static void forward(request_t *r, const char *buf, size_t *pos, size_t len, unsigned flags)
{
    const cfg_proxy_t *px = fuzz_proxy();
    int https = flags & 1, trusted = (flags >> 1) & 1;
    const char *ip = trusted ? "10.1.2.3" : "192.0.2.7";
    llhttp_t *p = &r->head.parser;
    http_vars_t vars;
    http_vars_from_request(&vars, &r->head, https, ip, "40000");
    vars.upstream_hostport = uv_buf_init((char *)px->ups[0].hostport, strlen(px->ups[0].hostport));

    http_req_out_t out;
    memset(&out, 0, sizeof(out));
    out.req = &r->head;
    out.vars = &vars;
    out.ops = &px->header_up;
    out.client_ip = ip;
    out.https = https;
    out.trusted = trusted;
    out.framing = http_request_framing(&r->head);
    /* as proxy_start: llhttp counts content_length down as the body passes */
    out.length = out.framing == HTTP_BODY_LENGTH ? p->content_length : 0;
    out.upgrade = p->upgrade;
    static char head[FUZZ_IO_BUF];
    int n = http_build_request(head, sizeof(head), &out);
    if (n < 0) {
        answer(431);
        *pos = len;
        return;
    }
    fuzz_sink_t wire = {0};
    fuzz_sink_put(&wire, head, (size_t)n);
    /* the body in reads of a size FLAGS chooses, one chunk per read */
    size_t step = ((flags >> 2) & 0x3f) + 1;
    uint64_t sent = 0;
    /* a paused parser may end a bodiless request without more bytes */
    while (!r->done && (*pos < len || llhttp_get_errno(p) == HPE_PAUSED)) {
        size_t end = len - *pos > step ? *pos + step : len;
        llhttp_errno_t err = parse(r, buf, pos, end);
        if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
            answer(http_request_error_status(&r->head, err));
            *pos = len;
            fuzz_sink_free(&wire);
            return;
        }
        /* proxy_pump_request's check: llhttp never hands over what breaks it */
        if (http_body_keeps_framing(out.framing, out.length, sent, r->body_len, r->done) < 0)
            fuzz_fail_bytes("the framing invariant refused a body llhttp read", buf, len);
        sent += r->body_len;
        if (r->body_len > 0)
            fuzz_put_body(&wire, out.framing, r->body, r->body_len);
    }
    if (r->done) {
        fuzz_put_end(&wire, out.framing);
        check_upstream(r, out.framing, &wire);
    }
    fuzz_sink_free(&wire);
}

/* One request: its head, then what conn.c would do with it. Returns 0 to
 * go on with the next pipelined request, -1 when the connection ends. */
static int one_request(request_t *r, const char *buf, size_t *pos, size_t len, unsigned flags)
{
    r->head_done = r->done = 0;
    r->decoded.len = 0;
    llhttp_errno_t err = parse(r, buf, pos, len);
    if (err == HPE_PAUSED && r->head_done) {
        int st = http_head_analyze(&r->head);
        if (st != 0) {
            answer(st);
            return -1;
        }
        if (r->head.parser.method == HTTP_CONNECT) {
            answer(405);
            return -1;
        }
        forward(r, buf, pos, len, flags);
        return r->done && !r->head.parser.upgrade && llhttp_should_keep_alive(&r->head.parser)
                   ? 0
                   : -1;
    }
    if (err != HPE_OK)
        answer(http_request_error_status(&r->head, err));
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > FUZZ_IO_BUF)
        return 0; /* larger heads are 431 before they are parsed whole */
    unsigned flags = data[0];
    size_t len = size - 1;
    /* an exact-size copy, so ASan sees any read past the client's bytes */
    char *buf = malloc(len > 0 ? len : 1);
    memcpy(buf, data + 1, len);
    static http_table_t table_;
    request_t *r = calloc(1, sizeof(*r));
    http_head_init(&r->head, HTTP_REQUEST, &settings);
    r->head.hdrs = table_.hdrs;
    size_t pos = 0;
    for (int i = 0; i < MAX_PIPELINED && pos < len; i++)
        if (one_request(r, buf, &pos, len, flags) != 0)
            break;
    fuzz_sink_free(&r->decoded);
    free(r);
    free(buf);
    return 0;
}
