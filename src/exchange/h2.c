/* HTTP/2 sessions and their streams: nghttp2 on the parent connection's
 * plaintext, one exchange (stream.c) per request. See h2.h. */
#include "h2.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "h2_msg.h"
#include "log.h"
#include "worker.h"

/* Frames that cost us work and carry no request (PING, SETTINGS, PRIORITY,
 * empty DATA): a token bucket per connection. A client that needs more is
 * flooding us (CVE-2019-9512, -9515, -9518). */
#define H2_CONTROL_BURST 1000
#define H2_CONTROL_PER_S 100
/* RST_STREAM from the client (rapid reset, CVE-2023-44487): a bucket of
 * its own; and CONTINUATION frames per header block (CVE-2024-27316
 * family). Ours fire before nghttp2's own limits (its defaults: 1,000
 * resets, 8 CONTINUATIONs), which end the session without a GOAWAY that
 * says why; those stay as a backstop. */
#define H2_RESET_BURST 400
#define H2_RESET_PER_S 33
#define H2_MAX_CONTINUATIONS 8
#define H2_NGHTTP2_RESET_BURST 1000
#define H2_NGHTTP2_MAX_CONTINUATIONS 16
#define H2_SKIPPED 8

struct h2_stream {
    h2_session_t *h;       /* NULL once the session is gone */
    exchange_t *ex;        /* the connection layer's exchange for it */
    h2_stream_t *next;     /* the session's streams */
    worker_t *w;           /* the worker, its home and HEAD's */
    int32_t id;            /* 0 once nghttp2 closed the stream or we reset it */
    char *head;            /* the request head as HTTP/1.1 (its slices live here) */
    h2_req_t req;
    int head_len;          /* h2_req_finish's result, once head_ready */
    uv_buf_t out[8];       /* response body bytes DATA frames still have to take */
    unsigned n_out, i_out;
    uint64_t in_total;     /* DATA bytes received for the read buffer */
    uint64_t in_consumed;  /* of those, left it and given back to the window */
    /* DATA beyond the read buffer's room: only before the client has our
     * SETTINGS, whose window is smaller than the 65,535 it may start with */
    char *spill;
    size_t spill_len;
    unsigned head_ready : 1;  /* the request head is complete and framed (END_HEADERS) */
    unsigned head_done : 1;   /* ... and was handed to the exchange */
    unsigned in_end : 1;      /* END_STREAM from the client */
    unsigned resp_head : 1;   /* the final response HEADERS were submitted */
    unsigned bodiless : 1;    /* they carried END_STREAM */
    unsigned ended : 1;       /* the response is complete (h2_stream_end) */
    unsigned writing : 1;     /* an exchange's write is still in OUT (done owed) */
    unsigned done : 1;        /* the host's written op is due (after nghttp2 returns) */
    unsigned malformed : 1;   /* reset with PROTOCOL_ERROR, not INTERNAL_ERROR */
    unsigned held : 1;        /* a DATA frame being read may pass the content-length */
};

struct h2_session {
    nghttp2_session *ng;
    conn_t *c;        /* the parent connection */
    h2_host_t host;   /* what the parent lends: ops, worker, limits */
    h2_stream_t *streams;
    unsigned n_streams;
    /* the stream whose header block is being read: a block's fields come
     * one callback each, and no other frame comes between (RFC 9113 4.3),
     * so they need no lookup of their own */
    h2_stream_t *cur;
    char *sbuf; /* frames gathered for the parent's write */
    struct h2_bucket {
        double tokens;
        uint64_t at;
    } control, resets;
    unsigned continuations; /* CONTINUATION frames of the header block being read */
    /* RFC 9113 5.1.1: stream ids the client skipped are closed for good.
     * nghttp2 ignores a HEADERS below its last stream id (it cannot tell a
     * skipped id from a stream it forgot), so the skipped ones are kept
     * here: the newest H2_SKIPPED ranges, enough for any real client. */
    int32_t last_id; /* the highest stream id the client opened */
    struct {
        int32_t lo, hi;
    } skipped[H2_SKIPPED];
    unsigned n_skipped;
    /* what the streams write during one loop iteration goes out together
     * from this idle handle (run before the loop polls again, which an
     * active one keeps from blocking): one TLS record run, one write */
    uv_idle_t flusher;
    unsigned flushing : 1; /* flush_now is on the stack */
    unsigned again : 1;    /* something to send came up while it was */
    unsigned goaway : 1;
    unsigned failed : 1;   /* the session is over: close once written */
    unsigned sent_all : 1; /* ... and nghttp2 has nothing more to send */
    unsigned closing : 1;
};

static void h2_flush(h2_session_t *h);
static void flush_now(h2_session_t *h);

static h2_stream_t *stream_of(nghttp2_session *ng, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(ng, id) : NULL;
}

/* ---- defences ----------------------------------------------------------- */

static void session_error(h2_session_t *h, uint32_t code, const char *why)
{
    if (h->failed)
        return;
    log_info("conn %llu %s: h2: %s: closing the connection", (unsigned long long)h->host.id,
             h->host.peer_ip, why);
    nghttp2_session_terminate_session(h->ng, code);
    h->failed = 1;
}

static void calm_down(h2_session_t *h, const char *why)
{
    session_error(h, NGHTTP2_ENHANCE_YOUR_CALM, why);
}

/* A HEADERS frame on stream ID: 0 when it may open or continue a stream,
 * -1 when ID is one the client skipped (RFC 9113 5.1.1: a lower id than
 * one it opened already; PROTOCOL_ERROR). */
static int check_stream_id(h2_session_t *h, int32_t id)
{
    if ((id & 1) == 0)
        return 0; /* nghttp2 refuses it itself */
    if (id > h->last_id) {
        if (id > h->last_id + 2) {
            /* ids between are skipped: the oldest range makes room */
            if (h->n_skipped == H2_SKIPPED) {
                memmove(&h->skipped[0], &h->skipped[1], sizeof(h->skipped[0]) * (H2_SKIPPED - 1));
                h->n_skipped--;
            }
            h->skipped[h->n_skipped].lo = h->last_id + 2;
            h->skipped[h->n_skipped].hi = id - 2;
            h->n_skipped++;
        }
        h->last_id = id;
        return 0;
    }
    for (unsigned i = 0; i < h->n_skipped; i++)
        if (id >= h->skipped[i].lo && id <= h->skipped[i].hi)
            return -1;
    return 0; /* a stream opened before: trailers, or nghttp2's to ignore */
}

/* Returns 0 while the client stays within the budget B (BURST tokens,
 * PER_S more a second). */
static int spend_token(h2_session_t *h, struct h2_bucket *b, double burst, double per_s)
{
    uint64_t now = uv_now(&h->host.w->loop);
    b->tokens += (double)(now - b->at) * per_s / 1000.0;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at = now;
    if (b->tokens < 1)
        return -1;
    b->tokens -= 1;
    return 0;
}

static int spend_control(h2_session_t *h)
{
    return spend_token(h, &h->control, H2_CONTROL_BURST, H2_CONTROL_PER_S);
}

/* Called for every frame header: once a defence fired, nothing more of
 * what the client sent is read (mem_recv stops here), so no stream after
 * the GOAWAY starts any work. */
static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    h2_session_t *h = ud;
    if (hd->type == NGHTTP2_DATA) {
        /* nghttp2 resets a stream whose DATA passes its content-length
         * (RFC 9113 8.1.1) and drops the chunk without a word to us: a
         * stream whose frame might do so starts only once the frame came
         * through whole, so a malformed one never reaches an upstream */
        h2_stream_t *s = stream_of(ng, hd->stream_id);
        if (s != NULL && s->req.has_length && s->in_total + hd->length > s->req.length)
            s->held = 1;
    } else if (hd->type == NGHTTP2_HEADERS) {
        h->continuations = 0;
        if (check_stream_id(h, hd->stream_id) < 0)
            session_error(h, NGHTTP2_PROTOCOL_ERROR,
                          "HEADERS on a stream id lower than one opened before");
    } else if (hd->type == NGHTTP2_CONTINUATION && ++h->continuations > H2_MAX_CONTINUATIONS) {
        calm_down(h, "CONTINUATION flood");
    }
    return h->failed ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

/* ---- streams ------------------------------------------------------------ */

static void unlink_stream(h2_session_t *h, h2_stream_t *s)
{
    for (h2_stream_t **p = &h->streams; *p != NULL; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            h->n_streams--;
            if (h->cur == s)
                h->cur = NULL;
            return;
        }
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_session_t *h = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        h->cur = stream_of(ng, f->hd.stream_id); /* trailers */
        return 0;
    }
    if (h->failed)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* no new work after a GOAWAY */
    worker_t *w = h->host.w;
    h2_stream_t *s = (h2_stream_t *)(void *)buf_get(&w->h2_streams);
    memset(s, 0, sizeof(*s));
    s->h = h;
    s->id = f->hd.stream_id;
    s->w = w;
    s->head = buf_get(&w->bufs);
    h2_req_init(&s->req, s->head, w->bufs.size, h->host.max_header_size);
    s->next = h->streams;
    h->streams = s;
    h->n_streams++;
    h->cur = s;
    s->ex = h->host.ops->open_exchange(h->c, s);
    nghttp2_session_set_stream_user_data(ng, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    h2_session_t *h = ud;
    h2_stream_t *s = h->cur;
    if (s == NULL || s->id != f->hd.stream_id)
        s = stream_of(ng, f->hd.stream_id);
    if (s == NULL || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* trailers are decoded (HPACK needs it) and dropped, as on HTTP/1.1 */
    if (h2_req_field(&s->req, name, nlen, value, vlen) < 0) {
        calm_down(h, "header block far over max_header_size (HPACK bomb)");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return 0;
}

/* New body bytes or the request's end: let the exchange act on them (once
 * it has its head; until then they wait in its buffer). */
static void notify_input(h2_stream_t *s)
{
    if (s->head_done && s->h != NULL)
        s->h->host.ops->input_ready(s->ex);
}

/* The heads that came complete in one read go to the exchanges once
 * nghttp2 has read it all: a stream the client reset in the same read
 * (rapid reset) never reaches routing, let alone an upstream. */
static void start_ready_streams(h2_session_t *h)
{
    for (;;) {
        h2_stream_t *s = h->streams;
        while (s != NULL && !(s->head_ready && !s->head_done && !s->held))
            s = s->next;
        if (s == NULL || h->failed)
            return;
        s->head_done = 1;
        /* nghttp2 found the request malformed in this read (a content-length
         * the DATA did not match, RFC 9113 8.1.1): its RST_STREAM closes the
         * stream, and nothing of it reaches an upstream */
        if (!s->in_end && nghttp2_session_get_stream_remote_close(h->ng, s->id))
            continue;
        h->host.ops->take_head(s->ex, s->head, s->head_len);
    }
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    h2_session_t *h = ud;
    h2_stream_t *s = stream_of(ng, id);
    /* the spill keeps the order: nothing passes it into the buffer */
    ssize_t fit = s == NULL ? -1
                  : s->spill_len == 0 ? h->host.ops->take_body(s->ex, (const char *)data, len)
                  : h->host.ops->take_body(s->ex, NULL, 0);
    if (fit < 0) {
        nghttp2_session_consume(ng, id, len); /* answered already: dropped */
        return 0;
    }
    s->in_total += len;
    if ((size_t)fit < len) {
        /* nghttp2 holds the client to the window it may still use: the
         * spill never passes 65,535 bytes */
        char *p = realloc(s->spill, s->spill_len + len - (size_t)fit);
        if (p == NULL)
            abort();
        s->spill = p;
        memcpy(s->spill + s->spill_len, data + fit, len - (size_t)fit);
        s->spill_len += len - (size_t)fit;
    }
    notify_input(s);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    h2_session_t *h = ud;
    h2_stream_t *s = stream_of(ng, f->hd.stream_id);
    int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (s == NULL)
            break;
        if (end)
            s->in_end = 1;
        if (!s->head_ready) {
            /* The head's framing is this frame's to decide, never the
             * read's: END_STREAM here means no body; without it the body
             * goes up with its content-length, else chunked. DATA (and
             * its END_STREAM) in the same read must not change that. */
            s->head_len = h2_req_finish(&s->req, end);
            s->head_ready = 1; /* started after this read: start_ready_streams */
        } else {
            notify_input(s); /* trailers, dropped; their END_STREAM counts */
        }
        break;
    case NGHTTP2_DATA:
        if (s != NULL)
            s->held = 0; /* within its content-length after all */
        if (f->hd.length == 0 && !end && spend_control(h) < 0)
            calm_down(h, "empty DATA frames flood");
        else if (s != NULL && end) {
            s->in_end = 1;
            notify_input(s);
        }
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && spend_control(h) < 0)
            calm_down(h, f->hd.type == NGHTTP2_PING ? "PING flood" : "SETTINGS flood");
        break;
    case NGHTTP2_PRIORITY:
        if (spend_control(h) < 0)
            calm_down(h, "PRIORITY flood");
        break;
    case NGHTTP2_RST_STREAM:
        if (spend_token(h, &h->resets, H2_RESET_BURST, H2_RESET_PER_S) < 0)
            calm_down(h, "streams reset faster than they can be served (rapid reset)");
        break;
    default:
        break;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    h2_session_t *h = ud;
    h2_stream_t *s = stream_of(ng, id);
    if (s == NULL)
        return 0;
    if (code != NGHTTP2_NO_ERROR && !s->ended)
        log_debug("conn %llu: h2 stream %d closed: %s", (unsigned long long)h->host.id, id,
                  nghttp2_http2_strerror(code));
    nghttp2_session_set_stream_user_data(ng, id, NULL);
    s->id = 0; /* gone: nothing to reset */
    h->host.ops->close_exchange(s->ex);
    return 0;
}

/* The body bytes a stream's exchange wrote, as DATA frames allow. */
static ssize_t on_data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    h2_session_t *h = ud;
    h2_stream_t *s = stream_of(ng, id);
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t done = 0;
    while (done < length && s->i_out < s->n_out) {
        uv_buf_t *b = &s->out[s->i_out];
        size_t k = b->len < length - done ? b->len : length - done;
        memcpy(buf + done, b->base, k);
        done += k;
        b->base += k;
        b->len -= k;
        if (b->len == 0)
            s->i_out++;
    }
    if (s->i_out == s->n_out) {
        s->i_out = s->n_out = 0;
        if (s->writing) {
            s->writing = 0;
            s->done = 1; /* the host's written op runs once nghttp2 has returned */
            h->again = 1;
        }
        if (s->ended)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    if (done == 0 && !(*flags & NGHTTP2_DATA_FLAG_EOF))
        return NGHTTP2_ERR_DEFERRED;
    return (ssize_t)done;
}

int h2_stream_write(h2_stream_t *s, uv_buf_t *bufs, unsigned n, int head_method)
{
    h2_session_t *h = s->h;
    if (h == NULL || s->id == 0)
        return PS_EPROTO; /* the stream is gone: the exchange ends */
    unsigned i = 0;
    size_t off = 0;
    while (!s->resp_head && i < n) {
        /* a head starts the write: an interim one alone, else the final one */
        nghttp2_nv nv[2 * HTTP_MAX_HEADERS];
        char status[4];
        size_t hl = 0;
        int k = h2_resp_head(bufs[i].base + off, bufs[i].len - off, nv, PS_ARRAY_SIZE(nv), status,
                             &hl);
        if (k < 0)
            return PS_EPROTO;
        int code = atoi(status);
        int rv;
        if (code < 200) {
            rv = nghttp2_submit_headers(h->ng, NGHTTP2_FLAG_NONE, s->id, NULL, nv, (size_t)k,
                                        NULL);
        } else {
            nghttp2_data_provider prd;
            prd.source.ptr = NULL;
            prd.read_callback = on_data_read;
            s->resp_head = 1;
            s->bodiless = head_method || code == 204 || code == 304;
            rv = nghttp2_submit_response(h->ng, s->id, nv, (size_t)k, s->bodiless ? NULL : &prd);
        }
        if (rv != 0)
            return PS_EPROTO;
        off += hl;
        if (off == bufs[i].len) {
            i++;
            off = 0;
        }
    }
    for (; i < n; i++, off = 0) {
        if (bufs[i].len == off || s->bodiless)
            continue;
        if (s->n_out == PS_ARRAY_SIZE(s->out))
            return PS_EPROTO;
        s->out[s->n_out++] = uv_buf_init(bufs[i].base + off, (unsigned)(bufs[i].len - off));
    }
    if (s->n_out == 0) {
        h2_flush(h);
        return 1;
    }
    /* done once DATA frames took it all (the flush, after this iteration) */
    s->writing = 1;
    nghttp2_session_resume_data(h->ng, s->id);
    h2_flush(h);
    return 0;
}

void h2_stream_end(h2_stream_t *s)
{
    h2_session_t *h = s->h;
    s->ended = 1;
    if (h == NULL || s->id == 0)
        return;
    /* a client still sending gets the linger time (stream.c) to finish, its
     * DATA dropped, as on HTTP/1.1; then RST_STREAM(NO_ERROR) (RFC 9113 8.1) */
    if (s->resp_head && !s->bodiless)
        nghttp2_session_resume_data(h->ng, s->id); /* the END_STREAM DATA frame */
    h2_flush(h);
}

void h2_stream_update(h2_stream_t *s)
{
    h2_session_t *h = s->h;
    if (h == NULL || s->id == 0)
        return;
    const h2_host_ops_t *ops = h->host.ops;
    if (s->spill_len > 0) {
        ssize_t k = ops->take_body(s->ex, s->spill, s->spill_len);
        if (k > 0) {
            memmove(s->spill, s->spill + k, s->spill_len - (size_t)k);
            s->spill_len -= (size_t)k;
            notify_input(s); /* goes round until the buffer or the spill is empty */
            return;
        }
    }
    uint64_t freed = s->in_total - ops->held_bytes(s->ex) - s->spill_len;
    if (freed > s->in_consumed) {
        nghttp2_session_consume(h->ng, s->id, (size_t)(freed - s->in_consumed));
        s->in_consumed = freed;
        h2_flush(h);
    }
}

int32_t h2_stream_id(const h2_stream_t *s)
{
    return s->id;
}

conn_t *h2_stream_parent(const h2_stream_t *s)
{
    return s->h != NULL ? s->h->c : NULL;
}

int h2_stream_added_fields(const h2_stream_t *s)
{
    return s->req.added;
}

int h2_stream_input_ended(const h2_stream_t *s)
{
    return s->in_end && s->spill_len == 0;
}

void h2_stream_malformed(h2_stream_t *s)
{
    s->malformed = 1;
}

void h2_stream_detach(h2_stream_t *s)
{
    h2_session_t *h = s->h;
    if (h == NULL)
        return;
    unlink_stream(h, s);
    s->h = NULL;
    if (!h->closing && s->in_total > s->in_consumed) {
        /* what the exchange never took off its buffer (a body kept for a
         * replay, bytes dropped under an early answer, a reset mid-body)
         * goes back to the connection's window: a finished stream must
         * not shrink it for the others */
        nghttp2_session_consume_connection(h->ng, (size_t)(s->in_total - s->in_consumed));
        s->in_consumed = s->in_total;
        h2_flush(h);
    }
    if (s->id != 0 && !h->closing) {
        nghttp2_session_set_stream_user_data(h->ng, s->id, NULL);
        nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, s->id,
                                  s->ended       ? NGHTTP2_NO_ERROR
                                  : s->malformed ? NGHTTP2_PROTOCOL_ERROR
                                                 : NGHTTP2_INTERNAL_ERROR);
        s->id = 0;
        h2_flush(h);
    }
    if (!h->closing)
        h->host.ops->arm_timer(h->c); /* the last stream gone: idle, or the end */
}

void h2_stream_free(h2_stream_t *s)
{
    buf_put(&s->w->bufs, s->head);
    free(s->spill);
    buf_put(&s->w->h2_streams, (char *)s);
}

size_t h2_stream_size(void)
{
    return sizeof(h2_stream_t);
}

/* ---- the session -------------------------------------------------------- */

/* The host's written op for the streams whose bytes DATA frames took. */
static void run_done_streams(h2_session_t *h)
{
    for (;;) {
        h2_stream_t *s = h->streams;
        while (s != NULL && !s->done)
            s = s->next;
        if (s == NULL)
            return;
        s->done = 0;
        h->host.ops->output_taken(s->ex);
    }
}

static void on_flusher(uv_idle_t *ih)
{
    h2_session_t *h = ih->data;
    uv_idle_stop(ih);
    flush_now(h);
}

/* Something to send: it goes once this loop iteration's callbacks ran, so
 * the responses that came from several upstreams at once share a write
 * (and nothing is sent from inside nghttp2's own callbacks). */
static void h2_flush(h2_session_t *h)
{
    if (h->closing)
        return;
    if (h->flushing)
        h->again = 1;
    else if (!uv_is_active((uv_handle_t *)&h->flusher))
        uv_idle_start(&h->flusher, on_flusher);
}

/* Sends what nghttp2 has, frames gathered into one write, until the
 * parent's socket pushes back. */
static void flush_now(h2_session_t *h)
{
    conn_t *c = h->c;
    const h2_host_ops_t *ops = h->host.ops;
    buf_pool_t *bufs = &h->host.w->bufs;
    if (h->flushing || h->closing)
        return;
    h->flushing = 1;
    do {
        h->again = 0;
        run_done_streams(h);
        while (!h->closing && !ops->writing(c)) {
            size_t size = bufs->size, len = 0;
            const uint8_t *extra = NULL;
            ssize_t elen = 0;
            for (;;) {
                const uint8_t *d;
                ssize_t k = nghttp2_session_mem_send(h->ng, &d);
                if (k < 0) {
                    log_debug("conn %llu: h2: %s", (unsigned long long)h->host.id,
                              nghttp2_strerror((int)k));
                    h->failed = 1;
                    break;
                }
                if (k == 0)
                    break;
                if (h->sbuf == NULL)
                    h->sbuf = buf_get(bufs);
                if ((size_t)k <= size - len) {
                    memcpy(h->sbuf + len, d, (size_t)k);
                    len += (size_t)k;
                    continue;
                }
                extra = d; /* valid until the next mem_send: after this write */
                elen = k;
                break;
            }
            if (len == 0 && elen == 0) {
                h->sent_all = h->failed; /* the GOAWAY (if any) is out */
                break;
            }
            uv_buf_t iov[2];
            unsigned n = 0;
            if (len > 0)
                iov[n++] = uv_buf_init(h->sbuf, (unsigned)len);
            if (elen > 0)
                iov[n++] = uv_buf_init((char *)extra, (unsigned)elen);
            if (ops->write(c, iov, n) < 0) {
                h->flushing = 0;
                ops->close(c);
                return;
            }
        }
    } while (h->again && !h->closing);
    h->flushing = 0;
    if (h->closing)
        return;
    if (!ops->writing(c) && h->sbuf != NULL) {
        buf_put(bufs, h->sbuf);
        h->sbuf = NULL;
    }
    ops->arm_timer(c);
}

static void free_session(uv_handle_t *hd)
{
    free(hd->data);
}

int h2_phase(const h2_session_t *h)
{
    if (h == NULL || h->closing)
        return H2_ENDING;
    /* over once the last frame (a GOAWAY saying why) is out */
    if (!h->host.ops->writing(h->c) && (h->failed ? h->sent_all || !nghttp2_session_want_write(h->ng)
                                        : !nghttp2_session_want_read(h->ng) &&
                                              !nghttp2_session_want_write(h->ng)))
        return H2_ENDING;
    return h->n_streams > 0 ? H2_BUSY : H2_IDLE;
}

static nghttp2_session_callbacks *callbacks;
static nghttp2_option *options;
static uv_once_t callbacks_once = UV_ONCE_INIT;

/* Shared by every session (nghttp2 copies them into each). */
static void callbacks_init(void)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *o;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&o) != 0)
        abort();
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    /* a stream's window opens as its bytes leave its read buffer */
    nghttp2_option_set_no_auto_window_update(o, 1);
    nghttp2_option_set_stream_reset_rate_limit(o, H2_NGHTTP2_RESET_BURST, H2_RESET_PER_S);
    nghttp2_option_set_max_continuations(o, H2_NGHTTP2_MAX_CONTINUATIONS);
    callbacks = cb;
    options = o;
}

h2_session_t *h2_session_new(conn_t *c, const h2_host_t *host)
{
    uv_once(&callbacks_once, callbacks_init);
    h2_session_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        abort();
    h->c = c;
    h->host = *host;
    h->last_id = -1; /* so that skipping stream 1 counts */
    uv_loop_t *loop = &host->w->loop;
    h->control = (struct h2_bucket){H2_CONTROL_BURST, uv_now(loop)};
    h->resets = (struct h2_bucket){H2_RESET_BURST, uv_now(loop)};
    if (nghttp2_session_server_new2(&h->ng, callbacks, h, options) != 0) {
        free(h);
        return NULL;
    }
    uint32_t window = (uint32_t)host->w->bufs.size;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)host->max_header_size},
    };
    if (nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, iv, PS_ARRAY_SIZE(iv)) != 0 ||
        nghttp2_session_set_local_window_size(h->ng, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)(H2_MAX_STREAMS * window)) != 0) {
        nghttp2_session_del(h->ng);
        free(h);
        return NULL;
    }
    uv_idle_init(loop, &h->flusher);
    h->flusher.data = h;
    return h;
}

void h2_on_input(h2_session_t *h)
{
    conn_t *c = h->c;
    const h2_host_ops_t *ops = h->host.ops;
    for (;;) {
        size_t got = 0;
        uv_buf_t in = ops->read(c, &got);
        if (h->closing)
            return;
        if (in.len > 0 && !h->failed) {
            ssize_t r = nghttp2_session_mem_recv(h->ng, (const uint8_t *)in.base, in.len);
            if (h->closing)
                return;
            if (r < 0 && !h->failed) {
                log_debug("conn %llu %s: h2: %s", (unsigned long long)h->host.id,
                          h->host.peer_ip, nghttp2_strerror((int)r));
                h->failed = 1;
            }
        }
        ops->consume(c); /* after a GOAWAY of ours: read and dropped */
        if (got == 0)
            break;
    }
    start_ready_streams(h);
    if (h->closing)
        return;
    if (ops->ended(c)) {
        ops->close(c); /* the client went away: its streams end with it */
        return;
    }
    h2_flush(h);
}

void h2_on_written(h2_session_t *h)
{
    flush_now(h); /* the socket took the last write: go on at once */
}

void h2_goaway(h2_session_t *h)
{
    if (h == NULL || h->goaway)
        return;
    h->goaway = 1;
    nghttp2_submit_goaway(h->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ng),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_flush(h);
}

int h2_on_timeout(h2_session_t *h)
{
    switch (h2_phase(h)) {
    case H2_ENDING:
        return H2_ENDING;
    case H2_IDLE:
        if (!h->host.ops->writing(h->c) && !h->goaway) {
            h2_goaway(h); /* idle: say so, then close */
            return H2_IDLE;
        }
        break;
    default:
        break;
    }
    log_debug("conn %llu %s: h2: timed out", (unsigned long long)h->host.id, h->host.peer_ip);
    return H2_BUSY;
}

void h2_session_close(h2_session_t *h)
{
    if (h == NULL || h->closing)
        return;
    h->closing = 1;
    while (h->streams != NULL)
        h->host.ops->close_exchange(h->streams->ex);
    nghttp2_session_del(h->ng);
    buf_put(&h->host.w->bufs, h->sbuf);
    uv_close((uv_handle_t *)&h->flusher, free_session);
}
