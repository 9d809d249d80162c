/* libFuzzer target: whole HTTP/2 sessions on the real h2.c and nghttp2, in
 * one process (tests/harness/h2_harness.h), cut into reads anywhere.
 *
 * The input is a program that writes a client's bytes: request HEADERS
 * (with or without END_STREAM, content-length, CONTINUATION), DATA (any
 * size up to 16 KiB, padded or not, END_STREAM or not), trailers,
 * RST_STREAM, WINDOW_UPDATE, SETTINGS, PING, arbitrary raw frames, and
 * cuts that end one read and begin the next.
 *
 * The property (issue #18), whatever the frames and the reads: each stream
 * psproxy forwards becomes at most one request upstream, framed by psproxy,
 * with nothing after it; a stream forwarded whole carries exactly the DATA
 * the client sent on it; and psproxy's own framing invariant never has to
 * refuse a body (the HTTP/2 layer never hands up a body its head did not
 * declare). */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz.h"
#include "h2_harness.h"
#include "log.h"

#define MAX_SID 16

/* What the client sent on each stream, as the oracle. */
struct sent {
    int opened, ended;
    int unknown; /* a raw frame touched it: its body is not known here */
    h2h_bytes_t body;
};

struct prog {
    const uint8_t *p;
    size_t left;
};

static unsigned take(struct prog *g)
{
    if (g->left == 0)
        return 0;
    g->left--;
    return *g->p++;
}

static size_t take_bytes(struct prog *g, size_t n, const uint8_t **out)
{
    if (n > g->left)
        n = g->left;
    *out = g->p;
    g->p += n;
    g->left -= n;
    return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERR);
    return 0;
}

static void headers(struct prog *g, h2h_bytes_t *out, h2h_enc_t *e, struct sent *st)
{
    static const char *const methods[] = {"GET",   "HEAD",    "POST",   "PUT",
                                          "PATCH", "OPTIONS", "DELETE", "CONNECT"};
    static const char *const extras[][2] = {
        {"te", "trailers"},
        {"cookie", "a=b"},
        {"cookie", "c=d"},
        {"host", "a.test"},
        {"host", "b.test"},
        {"expect", "100-continue"},
        {"content-length", "3"},
        {"transfer-encoding", "chunked"},
        {"x-a", ""},
        {"accept", "*/*"},
    };
    unsigned b = take(g), c = take(g);
    int32_t sid = (int32_t)(1 + 2 * (b % MAX_SID));
    int end = (b >> 4) & 1;
    int split = (b >> 5) & 1; /* HEADERS without END_HEADERS, then CONTINUATION */
    const char *names[8], *values[8];
    size_t n = 0;
    names[n] = ":method";
    values[n++] = methods[c % 8];
    names[n] = ":scheme";
    values[n++] = "https";
    names[n] = ":path";
    values[n++] = (c & 8) ? "/a?b=c" : "/";
    names[n] = ":authority";
    values[n++] = "a.test";
    char cl[24];
    switch ((c >> 4) & 3) {
    case 1:
        names[n] = "content-length";
        values[n++] = "0";
        break;
    case 2: {
        unsigned lo = take(g), hi = take(g);
        snprintf(cl, sizeof(cl), "%u", lo | hi << 8);
        names[n] = "content-length";
        values[n++] = cl;
        break;
    }
    default:
        break;
    }
    char xv[33];
    unsigned x = take(g);
    if (x < 2 * (unsigned)PS_ARRAY_SIZE(extras)) {
        unsigned i = x % PS_ARRAY_SIZE(extras);
        names[n] = extras[i][0];
        values[n] = extras[i][1];
        if (strcmp(extras[i][0], "x-a") == 0) {
            const uint8_t *v;
            size_t k = take_bytes(g, take(g) % 32, &v);
            for (size_t j = 0; j < k; j++)
                xv[j] = v[j] >= 0x20 && v[j] < 0x7f ? (char)v[j] : 'v';
            xv[k] = '\0';
            values[n] = xv;
        }
        n++;
    }
    h2h_bytes_t f = {0};
    if (h2h_headers(&f, e, sid, end, names, values, n) != 0)
        return;
    if (split && f.len > 10) {
        /* the same block as HEADERS (no END_HEADERS) and a CONTINUATION */
        size_t blen = f.len - 9, cut = blen / 2;
        uint8_t flags = end ? NGHTTP2_FLAG_END_STREAM : 0;
        h2h_frame(out, NGHTTP2_HEADERS, flags, sid, f.p + 9, cut);
        h2h_frame(out, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, sid, f.p + 9 + cut,
                  blen - cut);
    } else {
        h2h_put(out, f.p, f.len);
    }
    h2h_bytes_free(&f);
    struct sent *s = &st[sid / 2];
    if (!s->opened) {
        s->opened = 1;
        s->ended = end;
    } else if (!s->ended) {
        s->ended = 1; /* a second block: trailers, whose END_STREAM nghttp2 requires */
    }
}

static void trailers(struct prog *g, h2h_bytes_t *out, h2h_enc_t *e, struct sent *st)
{
    int32_t sid = (int32_t)(1 + 2 * (take(g) % MAX_SID));
    const char *names[] = {"x-trailer"};
    const char *values[] = {"t"};
    if (h2h_headers(out, e, sid, 1, names, values, 1) != 0)
        return;
    struct sent *s = &st[sid / 2];
    if (s->opened)
        s->ended = 1;
}

static void data(struct prog *g, h2h_bytes_t *out, struct sent *st)
{
    unsigned b = take(g), c = take(g);
    int32_t sid = (int32_t)(1 + 2 * (b % MAX_SID));
    int end = (b >> 4) & 1, padded = (b >> 5) & 1, big = (b >> 6) & 1;
    size_t len = big ? (size_t)c * 64 : c; /* up to 16,320: within the frame size */
    static uint8_t payload[1 + 16384 + 256];
    const uint8_t *src;
    size_t k = take_bytes(g, big ? 0 : len, &src);
    size_t off = 0, pad = 0;
    if (padded) {
        pad = take(g) % 16;
        payload[off++] = (uint8_t)pad;
    }
    for (size_t i = 0; i < len; i++)
        payload[off + i] = i < k ? src[i] : (uint8_t)('a' + i % 26);
    memset(payload + off + len, 0, pad);
    h2h_frame(out, NGHTTP2_DATA,
              (end ? NGHTTP2_FLAG_END_STREAM : 0) | (padded ? NGHTTP2_FLAG_PADDED : 0), sid,
              payload, off + len + pad);
    struct sent *s = &st[sid / 2];
    if (s->opened && !s->ended) {
        h2h_put(&s->body, payload + off, len);
        s->ended = end;
    }
}

static void raw(struct prog *g, h2h_bytes_t *out, struct sent *st)
{
    unsigned type = take(g) % 10, flags = take(g), sidb = take(g);
    int32_t sid = sidb < 128 ? (int32_t)sidb : (int32_t)(1 + 2 * (sidb % MAX_SID));
    const uint8_t *p;
    size_t n = take_bytes(g, take(g) % 64, &p);
    h2h_frame(out, (uint8_t)type, (uint8_t)flags, sid, p, n);
    if (sid > 0 && sid < 2 * MAX_SID && (sid & 1))
        st[sid / 2].unknown = 1;
    else if (sid == 0 && type != NGHTTP2_PING && type != NGHTTP2_SETTINGS &&
             type != NGHTTP2_WINDOW_UPDATE && type != NGHTTP2_GOAWAY)
        for (int i = 0; i < MAX_SID; i++)
            st[i].unknown = 1;
}

static void control(struct prog *g, h2h_bytes_t *out, unsigned op)
{
    uint8_t p[8] = {0};
    unsigned b = take(g);
    int32_t sid = (int32_t)(1 + 2 * (b % MAX_SID));
    switch (op) {
    case 3: /* RST_STREAM */
        p[3] = (uint8_t)(take(g) % 14);
        h2h_frame(out, NGHTTP2_RST_STREAM, 0, sid, p, 4);
        break;
    case 4: { /* WINDOW_UPDATE, the connection's or a stream's */
        uint32_t hi = take(g), lo = take(g);
        uint32_t inc = 1 + (hi << 8 | lo);
        p[0] = (uint8_t)(inc >> 24);
        p[1] = (uint8_t)(inc >> 16);
        p[2] = (uint8_t)(inc >> 8);
        p[3] = (uint8_t)inc;
        h2h_frame(out, NGHTTP2_WINDOW_UPDATE, 0, (b & 0x80) ? 0 : sid, p, 4);
        break;
    }
    default: /* SETTINGS (ACK, or INITIAL_WINDOW_SIZE) or PING */
        if (b & 1) {
            h2h_frame(out, NGHTTP2_PING, 0, 0, p, 8);
        } else if (b & 2) {
            h2h_frame(out, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
        } else {
            uint32_t w = (uint32_t)take(g) << 8;
            uint8_t s[6] = {0,
                            NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                            (uint8_t)(w >> 24),
                            (uint8_t)(w >> 16),
                            (uint8_t)(w >> 8),
                            (uint8_t)w};
            h2h_frame(out, NGHTTP2_SETTINGS, 0, 0, s, 6);
        }
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t size)
{
    if (size < 1)
        return 0;
    struct prog g = {d + 1, size - 1};
    h2h_t *t = h2h_new(d[0] & 1 ? 1024 : 32768);
    h2h_enc_t *e = h2h_enc_new();
    struct sent st[MAX_SID];
    memset(st, 0, sizeof(st));
    h2h_bytes_t read = {0};
    h2h_preface(&read);
    while (g.left > 0) {
        unsigned op = take(&g) % 9;
        switch (op) {
        case 0:
            headers(&g, &read, e, st);
            break;
        case 1:
        case 2:
            data(&g, &read, st);
            break;
        case 3:
        case 4:
        case 5:
            control(&g, &read, op);
            break;
        case 6:
            trailers(&g, &read, e, st);
            break;
        case 7:
            raw(&g, &read, st);
            break;
        default: { /* a cut: what is written so far is one read, at some byte */
            size_t hi = take(&g), lo = take(&g);
            size_t at = (hi << 8 | lo) % (read.len + 1);
            h2h_read(t, read.p, at);
            memmove(read.p, read.p + at, read.len - at);
            read.len -= at;
            break;
        }
        }
    }
    h2h_read(t, read.p, read.len);

    for (h2h_stream_t *s = h2h_streams(t); s != NULL; s = s->next) {
        if (s->broken)
            abort(); /* the HTTP/2 layer handed up a body its head did not declare */
        const struct sent *o = s->id > 0 && s->id < 2 * MAX_SID ? &st[s->id / 2] : NULL;
        int known = o != NULL && o->opened && o->ended && !o->unknown;
        const char *why = h2h_check_upstream(s, known ? o->body.p : NULL, known ? o->body.len : 0);
        if (why != NULL) {
            fprintf(stderr, "stream %d: %s\n", s->id, why);
            abort();
        }
    }
    h2h_bytes_free(&read);
    for (int i = 0; i < MAX_SID; i++)
        h2h_bytes_free(&st[i].body);
    h2h_enc_free(e);
    h2h_free(t);
    return 0;
}
