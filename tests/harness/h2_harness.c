/* The in-process HTTP/2 session of h2_harness.h: the h2_host_ops_t of a
 * parent connection with no socket and of a recording exchange per stream,
 * and a reader of the server's frames. h2.c sees exchange_t only through the
 * ops, so the harness has a conn and exchanges of its own. */
#include "h2_harness.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "h2.h"
#include "http.h"
#include "worker.h"

enum hconn_state { H_READ_HEAD, H_PROXY, H_RESPOND, H_CLOSING };

/* The parent connection's state, or a stream's exchange with the
 * harness's record of it. */
struct exchange {
    int state; /* enum hconn_state */
    uint64_t id;
    h2_stream_t *s; /* streams only */
    h2h_stream_t *rec;
    exchange_t *next_live; /* streams not yet closed */
    exchange_t *next_dead;
    http_head_t req;
    char *rbuf;
    size_t rstart, rlen;
    char *hbuf, *obuf;
    unsigned head_done : 1, req_done : 1, head_method : 1, in_process : 1;
    int req_framing;
    uint64_t req_length, body_up;
    http_vars_t vars;
};

/* The parent: h2.c sees it only through the ops. */
struct conn {
    exchange_t x;
};

struct h2h {
    worker_t w;
    h2_session_t *h;
    conn_t parent;
    const uint8_t *in; /* the read being handed over (h_read) */
    size_t in_len;
    h2h_stream_t *streams, **tail;
    exchange_t *live; /* stream exchanges not closed yet */
    exchange_t *dead; /* closed ones, freed once the loop ran (as conn.c does) */
    uint64_t next_id;
    /* the server's frames */
    h2h_bytes_t out;
    size_t out_read;
    h2h_bytes_t block; /* a header block across CONTINUATION frames */
    int32_t block_sid;
    nghttp2_hd_inflater *inf;
    int goaway;
};

static h2h_t *cur; /* the harness the ops below serve */
static llhttp_settings_t req_settings;

/* ---- bytes -------------------------------------------------------------- */

void h2h_put(h2h_bytes_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap - b->len < n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL)
            abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void h2h_bytes_free(h2h_bytes_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static void rec_put(h2h_stream_t *r, const void *p, size_t n)
{
    h2h_bytes_t b = {(uint8_t *)r->up, r->up_len, r->up_len};
    h2h_put(&b, p, n);
    r->up = (char *)b.p;
    r->up_len = b.len;
}

/* ---- the exchange a stream runs (conn.c and proxy.c, in brief) ---------- */

static void h_close(exchange_t *c);

static int on_headers_complete(llhttp_t *p)
{
    exchange_t *c = container_of(p, exchange_t, req.parser);
    c->head_done = 1;
    return HPE_PAUSED;
}

/* The answer the upstream (or psproxy itself) gives: STATUS and "ok". */
static void respond(exchange_t *sc, int status)
{
    buf_pool_t *bufs = &cur->w.bufs;
    if (sc->hbuf == NULL)
        sc->hbuf = buf_get(bufs);
    int n = snprintf(sc->hbuf, bufs->size,
                     "HTTP/1.1 %d X\r\ncontent-length: 2\r\nx-from: harness\r\n\r\nok", status);
    uv_buf_t b = uv_buf_init(sc->hbuf, (unsigned)n);
    int r = h2_stream_write(sc->s, &b, 1, sc->head_method);
    if (r < 0)
        h_close(sc);
    else if (r == 1)
        h2_stream_end(sc->s);
}

static void answer_here(exchange_t *sc, int status)
{
    sc->rec->answered = status;
    sc->state = H_RESPOND; /* what is left of the body is dropped */
    respond(sc, status);
}

static void up_body(exchange_t *sc, const char *p, size_t n)
{
    h2h_stream_t *r = sc->rec;
    if (n == 0)
        return;
    if (sc->req_framing == HTTP_BODY_CHUNKED) {
        char line[HTTP_CHUNK_LINE_MAX];
        rec_put(r, line, http_chunk_line(line, n));
    }
    rec_put(r, p, n);
    if (sc->req_framing == HTTP_BODY_CHUNKED)
        rec_put(r, "\r\n", 2);
}

static exchange_t *h_stream_open(conn_t *parent, h2_stream_t *s)
{
    h2h_t *t = cur;
    (void)parent;
    exchange_t *c = calloc(1, sizeof(*c));
    h2h_stream_t *r = calloc(1, sizeof(*r));
    if (c == NULL || r == NULL)
        abort();
    r->rst = -1;
    *t->tail = r;
    t->tail = &r->next;
    c->rec = r;
    c->s = s;
    c->next_live = t->live;
    t->live = c;
    c->id = ++t->next_id;
    c->state = H_READ_HEAD;
    http_head_init(&c->req, HTTP_REQUEST, &req_settings);
    return c;
}

static void h_process(exchange_t *sc);

static void h_stream_head(exchange_t *sc, char *head, int len)
{
    h2h_stream_t *r = sc->rec;
    r->id = h2_stream_id(sc->s);
    if (sc->state == H_CLOSING)
        return;
    if (len < 0) {
        answer_here(sc, -len);
        return;
    }
    if (sc->req.hdrs == NULL)
        sc->req.hdrs = (http_hdr_t *)buf_get(&cur->w.tables);
    llhttp_errno_t err = llhttp_execute(&sc->req.parser, head, (size_t)len);
    if (err != HPE_PAUSED || !sc->head_done) {
        answer_here(sc, http_request_error_status(&sc->req, err));
        return;
    }
    int st = http_head_analyze(&sc->req);
    if (st == 0 && sc->req.parser.method == HTTP_CONNECT)
        st = 405;
    if (st != 0) {
        answer_here(sc, st);
        return;
    }
    sc->head_method = sc->req.parser.method == HTTP_HEAD;
    /* as proxy_start and on_up_ready */
    sc->req_framing = http_request_framing(&sc->req);
    sc->req_length = sc->req_framing == HTTP_BODY_LENGTH ? sc->req.parser.content_length : 0;
    http_vars_from_request(&sc->vars, &sc->req, 1, "192.0.2.1", "40000");
    sc->vars.upstream_hostport = uv_buf_init("127.0.0.1:8080", 14);
    http_req_out_t o;
    memset(&o, 0, sizeof(o));
    o.req = &sc->req;
    o.vars = &sc->vars;
    o.client_ip = "192.0.2.1";
    o.https = 1;
    o.framing = sc->req_framing;
    o.length = sc->req_length;
    sc->obuf = buf_get(&cur->w.bufs);
    int n = http_build_request(sc->obuf, cur->w.bufs.size, &o);
    if (n < 0) {
        answer_here(sc, 431);
        return;
    }
    r->forwarded = 1;
    r->framing = sc->req_framing;
    rec_put(r, sc->obuf, (size_t)n);
    sc->state = H_PROXY;
    sc->rstart = 0;
    h_process(sc);
}

/* The body bytes in the stream's buffer go up (as take_body and
 * proxy_pump_request take them), the buffer's room goes back to the
 * window; round again while the spill refills it. */
static void h_process(exchange_t *sc)
{
    if (sc->in_process)
        return;
    sc->in_process = 1;
    while (sc->state == H_PROXY || sc->state == H_RESPOND) {
        size_t n = sc->rlen - sc->rstart;
        if (sc->state == H_PROXY && !sc->req_done) {
            int ends = h2_stream_input_ended(sc->s);
            if (http_body_keeps_framing(sc->req_framing, sc->req_length, sc->body_up, n, ends) <
                0) {
                sc->rec->broken = 1;
                sc->in_process = 0;
                h2_stream_malformed(sc->s); /* as conn_malformed */
                h_close(sc);
                return;
            }
            if (n > 0)
                up_body(sc, sc->rbuf + sc->rstart, n);
            sc->body_up += n;
            if (ends) {
                if (sc->req_framing == HTTP_BODY_CHUNKED)
                    rec_put(sc->rec, HTTP_LAST_CHUNK, sizeof(HTTP_LAST_CHUNK) - 1);
                sc->req_done = 1;
                sc->rec->complete = 1;
                respond(sc, 200);
            }
        }
        sc->rstart = sc->rlen = 0;
        if (sc->state == H_CLOSING)
            break;
        h2_stream_update(sc->s);
        if (sc->rlen == 0)
            break;
    }
    sc->in_process = 0;
}

static void h_close(exchange_t *c)
{
    if (c->state == H_CLOSING)
        return;
    c->state = H_CLOSING;
    if (c->s == NULL) { /* the parent */
        h2_session_close(cur->h);
        cur->h = NULL;
        return;
    }
    h2_stream_detach(c->s);
    for (exchange_t **p = &cur->live; *p != NULL; p = &(*p)->next_live)
        if (*p == c) {
            *p = c->next_live;
            break;
        }
    c->next_dead = cur->dead;
    cur->dead = c;
}

/* The "decrypted" plaintext of the read in hand, as much as fits. */
static uv_buf_t h_read(conn_t *pc, size_t *added)
{
    exchange_t *c = &pc->x;
    h2h_t *t = cur;
    buf_pool_t *bufs = &t->w.bufs;
    *added = 0;
    if (c->state != H_CLOSING && t->in_len > 0) {
        if (c->rbuf == NULL)
            c->rbuf = buf_get(bufs);
        size_t k = bufs->size - c->rlen;
        if (k > t->in_len)
            k = t->in_len;
        memcpy(c->rbuf + c->rlen, t->in, k);
        c->rlen += k;
        t->in += k;
        t->in_len -= k;
        *added = k;
    }
    return uv_buf_init(c->rbuf, (unsigned)c->rlen);
}

static void h_consume(conn_t *c)
{
    c->x.rlen = 0;
}

static void read_output(h2h_t *t);

static int h_write(conn_t *c, uv_buf_t *bufs, unsigned n)
{
    (void)c;
    for (unsigned i = 0; i < n; i++)
        h2h_put(&cur->out, bufs[i].base, bufs[i].len);
    read_output(cur);
    return 1; /* the "socket" took it all */
}

static int h_never(const conn_t *c)
{
    (void)c;
    return 0; /* no write waits; the client never closes its side */
}

static void h_arm_timer(conn_t *c)
{
    (void)c; /* no clocks here: a test decides what happens next */
}

static ssize_t h_stream_body(exchange_t *sc, const char *data, size_t len)
{
    if (sc->state == H_RESPOND || sc->state == H_CLOSING)
        return -1;
    buf_pool_t *bufs = &cur->w.bufs;
    if (len == 0)
        return 0;
    if (sc->rbuf == NULL)
        sc->rbuf = buf_get(bufs);
    size_t room = bufs->size - sc->rlen;
    size_t fit = len < room ? len : room;
    memcpy(sc->rbuf + sc->rlen, data, fit);
    sc->rlen += fit;
    return (ssize_t)fit;
}

static size_t h_stream_buffered(const exchange_t *sc)
{
    return sc->rlen;
}

static void h_stream_input(exchange_t *sc)
{
    if (sc->state != H_CLOSING)
        h_process(sc);
}

static void h_stream_written(exchange_t *sc)
{
    h2_stream_end(sc->s);
}

static void h_close_parent(conn_t *c)
{
    h_close(&c->x);
}

static const h2_host_ops_t harness_ops = {
    .read = h_read,
    .consume = h_consume,
    .write = h_write,
    .writing = h_never,
    .ended = h_never,
    .close = h_close_parent,
    .arm_timer = h_arm_timer,
    .open_exchange = h_stream_open,
    .take_head = h_stream_head,
    .take_body = h_stream_body,
    .held_bytes = h_stream_buffered,
    .input_ready = h_stream_input,
    .output_taken = h_stream_written,
    .close_exchange = h_close,
};

/* ---- the server's frames, as the client reads them ---------------------- */

static void on_block(h2h_t *t, int32_t sid, int end_stream)
{
    h2h_stream_t *s = h2h_stream(t, sid);
    uint8_t *in = t->block.p;
    size_t left = t->block.len;
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t k = nghttp2_hd_inflate_hd2(t->inf, &nv, &flags, in, left, 1);
        if (k < 0)
            abort(); /* the server's HPACK is broken */
        in += k;
        left -= (size_t)k;
        if ((flags & NGHTTP2_HD_INFLATE_EMIT) && s != NULL && nv.namelen == 7 &&
            memcmp(nv.name, ":status", 7) == 0) {
            int st = atoi((const char *)nv.value);
            if (st >= 200)
                s->status = st;
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(t->inf);
            break;
        }
        if (k == 0 && left == 0)
            break;
    }
    if (s != NULL && end_stream)
        s->ended = 1;
    t->block.len = 0;
}

static void read_output(h2h_t *t)
{
    for (;;) {
        size_t avail = t->out.len - t->out_read;
        if (avail < 9)
            return;
        const uint8_t *f = t->out.p + t->out_read;
        size_t len = (size_t)f[0] << 16 | (size_t)f[1] << 8 | f[2];
        if (avail < 9 + len)
            return;
        uint8_t type = f[3], flags = f[4];
        int32_t sid = (int32_t)((uint32_t)(f[5] & 0x7f) << 24 | (uint32_t)f[6] << 16 |
                                (uint32_t)f[7] << 8 | f[8]);
        const uint8_t *p = f + 9;
        h2h_stream_t *s = h2h_stream(t, sid);
        switch (type) {
        case NGHTTP2_DATA:
            if (s != NULL && (flags & NGHTTP2_FLAG_END_STREAM))
                s->ended = 1;
            break;
        case NGHTTP2_HEADERS: {
            size_t pad = 0, off = 0;
            if (flags & NGHTTP2_FLAG_PADDED) {
                pad = p[0];
                off = 1;
            }
            if (flags & NGHTTP2_FLAG_PRIORITY)
                off += 5;
            t->block.len = 0;
            h2h_put(&t->block, p + off, len - off - pad);
            t->block_sid = sid;
            if (flags & NGHTTP2_FLAG_END_HEADERS)
                on_block(t, sid, flags & NGHTTP2_FLAG_END_STREAM);
            else if (s != NULL && (flags & NGHTTP2_FLAG_END_STREAM))
                s->ended = 1;
            break;
        }
        case NGHTTP2_CONTINUATION:
            h2h_put(&t->block, p, len);
            if (flags & NGHTTP2_FLAG_END_HEADERS)
                on_block(t, t->block_sid, 0);
            break;
        case NGHTTP2_RST_STREAM:
            if (s != NULL && len == 4)
                s->rst =
                    (int)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
            break;
        case NGHTTP2_GOAWAY:
            if (len >= 8)
                t->goaway =
                    (int)((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7]);
            break;
        default:
            break;
        }
        t->out_read += 9 + len;
    }
}

/* ---- the harness -------------------------------------------------------- */

static void free_dead(h2h_t *t)
{
    buf_pool_t *bufs = &t->w.bufs;
    while (t->dead != NULL) {
        exchange_t *c = t->dead;
        t->dead = c->next_dead;
        buf_put(bufs, c->rbuf);
        buf_put(bufs, c->hbuf);
        buf_put(bufs, c->obuf);
        buf_put(&t->w.tables, (char *)c->req.hdrs);
        h2_stream_free(c->s);
        free(c);
    }
}

static void run_loop(h2h_t *t)
{
    /* the flusher (an idle handle) runs until nothing is due */
    for (int i = 0; i < 1000 && uv_run(&t->w.loop, UV_RUN_NOWAIT) != 0; i++)
        ;
    free_dead(t);
}

h2h_t *h2h_new(size_t max_header_size)
{
    h2h_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        abort();
    cur = t;
    http_settings_init(&req_settings);
    req_settings.on_headers_complete = on_headers_complete;
    t->tail = &t->streams;
    t->goaway = -1;
    if (uv_loop_init(&t->w.loop) != 0 || nghttp2_hd_inflate_new(&t->inf) != 0)
        abort();
    size_t size = (max_header_size + 4096 + 4095) & ~(size_t)4095; /* worker_buffer_size's */
    buf_pool_init(&t->w.bufs, size < 16384 ? 16384 : size, 16);
    buf_pool_init(&t->w.tables, HTTP_HDR_TABLE_SIZE, 16);
    buf_pool_init(&t->w.h2_streams, h2_stream_size(), 16);
    t->parent.x.id = ++t->next_id;
    h2_host_t host = {&harness_ops, &t->w, max_header_size, t->parent.x.id, "192.0.2.1"};
    t->h = h2_session_new(&t->parent, &host);
    if (t->h == NULL)
        abort();
    h2_on_input(t->h);
    run_loop(t);
    return t;
}

void h2h_read(h2h_t *t, const void *p, size_t n)
{
    cur = t;
    if (t->h != NULL) {
        t->in = p;
        t->in_len = n;
        h2_on_input(t->h);
        t->in_len = 0;
        /* a stream's id is known once nghttp2 opened it: before anything
         * (a reset) about it is sent */
        for (exchange_t *c = t->live; c != NULL; c = c->next_live)
            if (c->rec->id == 0)
                c->rec->id = h2_stream_id(c->s);
    }
    run_loop(t);
}

h2h_stream_t *h2h_streams(h2h_t *t)
{
    return t->streams;
}

h2h_stream_t *h2h_stream(h2h_t *t, int32_t id)
{
    for (h2h_stream_t *s = t->streams; s != NULL; s = s->next)
        if (s->id == id && id != 0)
            return s;
    return NULL;
}

int h2h_goaway(h2h_t *t)
{
    return t->goaway;
}

void h2h_free(h2h_t *t)
{
    cur = t;
    h_close(&t->parent.x);
    run_loop(t);
    uv_run(&t->w.loop, UV_RUN_DEFAULT); /* the session's idle handle closes */
    if (uv_loop_close(&t->w.loop) != 0)
        abort(); /* a handle the session left open */
    buf_put(&t->w.bufs, t->parent.x.rbuf);
    while (t->streams != NULL) {
        h2h_stream_t *s = t->streams;
        t->streams = s->next;
        free(s->up);
        free(s);
    }
    buf_pool_dispose(&t->w.bufs);
    buf_pool_dispose(&t->w.tables);
    buf_pool_dispose(&t->w.h2_streams);
    nghttp2_hd_inflate_del(t->inf);
    h2h_bytes_free(&t->out);
    h2h_bytes_free(&t->block);
    free(t);
    cur = NULL;
}

/* ---- the upstream's view ------------------------------------------------ */

struct up_parse {
    int begun, complete;
    h2h_bytes_t body;
};

static int up_on_begin(llhttp_t *p)
{
    ((struct up_parse *)p->data)->begun++;
    return 0;
}

static int up_on_body(llhttp_t *p, const char *at, size_t len)
{
    h2h_put(&((struct up_parse *)p->data)->body, at, len);
    return 0;
}

static int up_on_complete(llhttp_t *p)
{
    ((struct up_parse *)p->data)->complete++;
    return HPE_PAUSED; /* anything after it is another request: looked at below */
}

const char *h2h_check_upstream(const h2h_stream_t *s, const void *body, size_t blen)
{
    if (!s->forwarded)
        return s->up_len == 0 ? NULL : "bytes went up for a stream that was not forwarded";
    llhttp_settings_t set;
    llhttp_settings_init(&set);
    set.on_message_begin = up_on_begin;
    set.on_body = up_on_body;
    set.on_message_complete = up_on_complete;
    llhttp_t p;
    llhttp_init(&p, HTTP_REQUEST, &set);
    struct up_parse st;
    memset(&st, 0, sizeof(st));
    p.data = &st;
    llhttp_errno_t err = llhttp_execute(&p, s->up, s->up_len);
    const char *why = NULL;
    if (err != HPE_OK && err != HPE_PAUSED)
        why = "the upstream cannot parse what went up";
    else if (st.begun != 1)
        why = "not exactly one request began upstream";
    else if (err == HPE_PAUSED && llhttp_get_error_pos(&p) != s->up + s->up_len)
        why = "bytes went up after the request ended (smuggled)";
    else if (s->complete && st.complete != 1)
        why = "the request is complete but the upstream still waits for its body";
    else if (s->complete && body != NULL &&
             (st.body.len != blen || (blen > 0 && memcmp(st.body.p, body, blen) != 0)))
        why = "the body upstream is not the body the client sent";
    h2h_bytes_free(&st.body);
    return why;
}

/* ---- frames a client sends ---------------------------------------------- */

void h2h_preface(h2h_bytes_t *b)
{
    h2h_put(b, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
    h2h_frame(b, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
}

void h2h_frame(h2h_bytes_t *b, uint8_t type, uint8_t flags, int32_t sid, const void *p, size_t n)
{
    uint8_t hd[9] = {(uint8_t)(n >> 16),
                     (uint8_t)(n >> 8),
                     (uint8_t)n,
                     type,
                     flags,
                     (uint8_t)((uint32_t)sid >> 24 & 0x7f),
                     (uint8_t)(sid >> 16),
                     (uint8_t)(sid >> 8),
                     (uint8_t)sid};
    h2h_put(b, hd, 9);
    h2h_put(b, p, n);
}

struct h2h_enc {
    nghttp2_hd_deflater *d;
};

h2h_enc_t *h2h_enc_new(void)
{
    h2h_enc_t *e = calloc(1, sizeof(*e));
    if (e == NULL || nghttp2_hd_deflate_new(&e->d, 4096) != 0)
        abort();
    return e;
}

void h2h_enc_free(h2h_enc_t *e)
{
    nghttp2_hd_deflate_del(e->d);
    free(e);
}

int h2h_headers(h2h_bytes_t *b, h2h_enc_t *e, int32_t sid, int end, const char *const *names,
                const char *const *values, size_t n)
{
    nghttp2_nv nv[64];
    if (n > PS_ARRAY_SIZE(nv))
        return -1;
    for (size_t i = 0; i < n; i++)
        nv[i] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)values[i], strlen(names[i]),
                             strlen(values[i]), NGHTTP2_NV_FLAG_NONE};
    size_t bound = nghttp2_hd_deflate_bound(e->d, nv, n);
    uint8_t *block = malloc(bound);
    if (block == NULL)
        abort();
    ssize_t k = nghttp2_hd_deflate_hd(e->d, block, bound, nv, n);
    if (k < 0 || (size_t)k > 16384) {
        free(block);
        return -1;
    }
    h2h_frame(b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | (end ? NGHTTP2_FLAG_END_STREAM : 0),
              sid, block, (size_t)k);
    free(block);
    return 0;
}
