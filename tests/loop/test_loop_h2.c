/* HTTP/2 through the real worker, on one loop: a client of OpenSSL memory
 * BIOs and an nghttp2 session on a uv_tcp_t talks h2 over TLS (ALPN) to
 * psproxy, which speaks HTTP/1.1 to the scripted upstream. */
#include "loop_fixture.h"

#include <nghttp2/nghttp2.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "common.h"
#include "h2.h"
#include "tls.h"

#include "test.h"
#include "upper_filter.h"

/* ---- a self-signed certificate for localhost, in a temp dir ------------- */

typedef struct tmp_cert {
    char dir[256];
    char cert[300];
    char key[300];
} tmp_cert_t;

static int write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok =
        x != NULL ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    return fclose(f) == 0 && ok == 1 ? 0 : -1;
}

/* A P-256 key and a certificate for "localhost" (CN and SAN), valid a day. */
static int tmp_cert_make(tmp_cert_t *tc)
{
    int rc = -1;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509_EXTENSION *san = NULL;
    const char *tmp = getenv("TMPDIR");
    snprintf(tc->dir, sizeof(tc->dir), "%s/psproxy-loop-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(tc->dir) == NULL)
        return -1;
    snprintf(tc->cert, sizeof(tc->cert), "%s/cert.pem", tc->dir);
    snprintf(tc->key, sizeof(tc->key), "%s/key.pem", tc->dir);
    if ((key = EVP_EC_gen("P-256")) == NULL || (x = X509_new()) == NULL)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if ((san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost")) == NULL ||
        !X509_add_ext(x, san, -1) || !X509_sign(x, key, EVP_sha256()))
        goto out;
    if (write_pem(tc->cert, x, NULL) == 0 && write_pem(tc->key, NULL, key) == 0)
        rc = 0;
out:
    X509_EXTENSION_free(san);
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static void tmp_cert_remove(tmp_cert_t *tc)
{
    unlink(tc->cert);
    unlink(tc->key);
    rmdir(tc->dir);
}

/* ---- an h2 client on the loop ------------------------------------------- */

/* enough for a plan that outruns the connection's window (H2_MAX_STREAMS
 * read buffers) one stream at a time */
#define H2C_MAX_STREAMS 256

typedef struct h2c_stream {
    int32_t id;
    int status;
    char body[256];    /* the first bytes of the response body */
    size_t body_len;
    uint64_t received; /* response body bytes */
    size_t sent;       /* request body bytes sent */
    int answered;      /* the response ended (END_STREAM from the server) */
    int reset_by_peer; /* the server sent RST_STREAM */
} h2c_stream_t;

/* A request of the client's plan; BODY NULL: none (END_STREAM on HEADERS).
 * With WHEN, BODY goes at once and the stream stays open until WHEN(t)
 * holds; then REST follows with END_STREAM or, RESET set, the client
 * resets the stream (RST_STREAM CANCEL) instead. The content-length counts
 * BODY and REST. STALL: the client never gives back the stream's window, as
 * if it did not read the response (the connection's it gives back).
 * LENGTH: the content-length to send instead (a malformed request), ""
 * for none (the body's length is known only at its END_STREAM). */
typedef struct h2c_req {
    const char *method, *path, *body;
    int (*when)(lt_t *t);
    const char *rest;
    int reset;
    int stall;
    const char *length;
} h2c_req_t;

/* One connection: ciphertext through memory BIOs, frames through nghttp2.
 * It sends its plan's requests one after the other, each once the stream
 * before it closed (so the upstream sees them in order); when the last
 * stream closed, the scenario is done. */
typedef struct h2c {
    uv_tcp_t tcp;
    uv_connect_t creq;
    lt_t *t;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio; /* ciphertext in, out (OpenSSL's side) */
    nghttp2_session *ng;
    int handshaken, closed, n_closed;
    h2c_stream_t streams[H2C_MAX_STREAMS];
    int n_streams;
    const h2c_req_t *plan;
    int n_plan;
    size_t body_off; /* of the request being sent, in the part being sent */
    int in_rest;     /* that part is its REST */
    int waiting;     /* its body waits for its WHEN (the data source deferred) */
    char abuf[65536];
} h2c_t;

typedef struct h2c_write {
    uv_write_t req;
    char *data;
} h2c_write_t;

static void h2c_fail(h2c_t *h, const char *what)
{
    lt_event(h->t, "c0: %s", what);
    lt_finish(h->t);
}

static void on_h2c_written(uv_write_t *req, int status)
{
    h2c_write_t *w = container_of(req, h2c_write_t, req);
    free(w->data);
    free(w);
    (void)status;
}

/* Frames nghttp2 has to send go through TLS; the records to the socket. */
static void h2c_flush(h2c_t *h)
{
    if (h->closed)
        return;
    if (h->ng != NULL) {
        const uint8_t *data;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(h->ng, &data)) > 0)
            if (SSL_write(h->ssl, data, (int)n) != (int)n) {
                h2c_fail(h, "SSL_write failed");
                return;
            }
    }
    size_t pending = BIO_ctrl_pending(h->wbio);
    if (pending == 0)
        return;
    h2c_write_t *w = malloc(sizeof(*w));
    if (w == NULL || (w->data = malloc(pending)) == NULL)
        abort();
    int n = BIO_read(h->wbio, w->data, (int)pending);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&h->tcp, &b, 1, on_h2c_written) < 0) {
        free(w->data);
        free(w);
    }
}

static h2c_stream_t *h2c_stream(h2c_t *h, int32_t id)
{
    for (int i = 0; i < h->n_streams; i++)
        if (h->streams[i].id == id)
            return &h->streams[i];
    return NULL;
}

static int on_ng_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *arg)
{
    h2c_stream_t *st = h2c_stream(arg, frame->hd.stream_id);
    if (st != NULL && namelen == 7 && memcmp(name, ":status", 7) == 0)
        st->status = atoi((const char *)value);
    (void)s, (void)valuelen, (void)flags;
    return 0;
}

/* The index of stream ID in the plan, or -1. */
static int h2c_index(h2c_t *h, int32_t id)
{
    for (int i = 0; i < h->n_streams; i++)
        if (h->streams[i].id == id)
            return i;
    return -1;
}

static int on_ng_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *arg)
{
    h2c_t *h = arg;
    int i = h2c_index(h, id);
    if (i >= 0) {
        h2c_stream_t *st = &h->streams[i];
        size_t k = sizeof(st->body) - st->body_len;
        if (k > len)
            k = len;
        memcpy(st->body + st->body_len, data, k);
        st->body_len += k;
        st->received += len;
    }
    /* the window goes back as the bytes are read, the stream's unless it stalls */
    if (i >= 0 && h->plan[i].stall)
        nghttp2_session_consume_connection(s, len);
    else
        nghttp2_session_consume(s, id, len);
    (void)flags;
    return 0;
}

static int on_ng_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *arg)
{
    h2c_stream_t *st = h2c_stream(arg, frame->hd.stream_id);
    if (st != NULL && frame->hd.type == NGHTTP2_RST_STREAM)
        st->reset_by_peer = 1;
    else if (st != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
             (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA))
        st->answered = 1;
    (void)s;
    return 0;
}

static int on_ng_stream_close(nghttp2_session *s, int32_t id, uint32_t error, void *arg)
{
    h2c_t *h = arg;
    h2c_stream_t *st = h2c_stream(h, id);
    if (st != NULL && st->received > st->body_len) {
        lt_event(h->t, "c0: stream %d: %d [%llu bytes] (error %u)", id, st->status,
                 (unsigned long long)st->received, error);
        h->n_closed++;
    } else if (st != NULL) {
        lt_event(h->t, "c0: stream %d: %d \"%.*s\" (error %u)", id, st->status, (int)st->body_len,
                 st->body, error);
        h->n_closed++;
    }
    (void)s;
    return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *arg)
{
    h2c_t *h = arg;
    const h2c_req_t *r = src->ptr;
    const char *part = h->in_rest ? r->rest : r->body;
    size_t k = strlen(part) - h->body_off;
    if (k > len)
        k = len;
    memcpy(buf, part + h->body_off, k);
    h->body_off += k;
    h2c_stream_t *st = h2c_stream(h, id);
    if (st != NULL)
        st->sent += k;
    if (h->body_off == strlen(part)) {
        if (r->when == NULL || h->in_rest) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (k == 0) {
            h->waiting = 1; /* h2c_poll resumes it */
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    (void)s;
    return (ssize_t)k;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

/* Sends the plan's next request, its body with a content-length. */
static void h2c_submit_next(h2c_t *h)
{
    const h2c_req_t *r = &h->plan[h->n_streams];
    char authority[32], len[24];
    snprintf(authority, sizeof(authority), "localhost:%d", h->t->port);
    snprintf(len, sizeof(len), "%zu",
             (r->body != NULL ? strlen(r->body) : 0) + (r->rest != NULL ? strlen(r->rest) : 0));
    nghttp2_nv nv[] = {NV(":method", r->method), NV(":scheme", "https"), NV(":path", r->path),
                       NV(":authority", authority),
                       NV("content-length", r->length != NULL ? r->length : len)};
    nghttp2_data_provider body = {.source.ptr = (void *)r, .read_callback = body_read};
    h->body_off = 0;
    h->in_rest = h->waiting = 0;
    /* content-length goes with a body, unless LENGTH is "" */
    size_t n_nv = r->body != NULL && (r->length == NULL || r->length[0] != '\0') ? 5 : 4;
    int32_t id = nghttp2_submit_request(h->ng, NULL, nv, n_nv, r->body != NULL ? &body : NULL, h);
    if (id < 0) {
        h2c_fail(h, "submit failed");
        return;
    }
    h->streams[h->n_streams++] = (h2c_stream_t){.id = id};
}

static void h2c_start_session(h2c_t *h)
{
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(h->ssl, &alpn, &alpn_len);
    lt_event(h->t, "c0: tls %.*s", (int)alpn_len, alpn != NULL ? (const char *)alpn : "");
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_ng_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_ng_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_ng_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_ng_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1); /* on_ng_data gives it back */
    nghttp2_session_client_new2(&h->ng, cbs, h, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(h->ng, NGHTTP2_FLAG_NONE, NULL, 0);
    h2c_submit_next(h);
}

/* The plan's next request once every stream so far closed; the end of
 * the scenario after the last. */
static void h2c_advance(h2c_t *h)
{
    if (h->closed || h->t->finished)
        return;
    if (h->n_closed == h->n_plan) {
        lt_finish(h->t);
        return;
    }
    if (h->n_closed == h->n_streams) {
        h2c_submit_next(h);
        h2c_flush(h);
    }
}

/* Every loop iteration: a body waiting for its WHEN goes on once it holds. */
static void h2c_poll(lt_t *t)
{
    h2c_t *h = t->data;
    if (h->closed || !h->waiting || h->n_streams == 0)
        return;
    const h2c_req_t *r = &h->plan[h->n_streams - 1];
    if (!r->when(t))
        return;
    h->waiting = 0;
    int32_t id = h->streams[h->n_streams - 1].id;
    if (r->reset) {
        nghttp2_submit_rst_stream(h->ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    } else {
        h->in_rest = 1;
        h->body_off = 0;
        nghttp2_session_resume_data(h->ng, id);
    }
    h2c_flush(h); /* the stream may close here (a reset) */
    h2c_advance(h);
}

static void on_h2c_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    h2c_t *h = s->data;
    if (nread == 0 || h->closed)
        return;
    if (nread < 0) {
        h2c_fail(h, nread == UV_EOF ? "eof" : "read error");
        return;
    }
    BIO_write(h->rbio, buf->base, (int)nread);
    if (!h->handshaken) {
        int r = SSL_do_handshake(h->ssl);
        if (r != 1) {
            int e = SSL_get_error(h->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                char msg[160];
                snprintf(msg, sizeof(msg), "handshake failed: %s",
                         ERR_reason_error_string(ERR_peek_last_error()));
                h2c_fail(h, msg);
                return;
            }
            h2c_flush(h);
            return;
        }
        h->handshaken = 1;
        h2c_start_session(h);
        if (h->ng == NULL || h->t->finished)
            return;
    }
    char plain[16384];
    int n;
    while ((n = SSL_read(h->ssl, plain, sizeof(plain))) > 0)
        if (nghttp2_session_mem_recv(h->ng, (const uint8_t *)plain, (size_t)n) < 0) {
            h2c_fail(h, "nghttp2_session_mem_recv failed");
            return;
        }
    h2c_flush(h);
    h2c_advance(h);
}

static void on_h2c_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    h2c_t *h = hd->data;
    (void)hint;
    *buf = uv_buf_init(h->abuf, sizeof(h->abuf));
}

static void on_h2c_connected(uv_connect_t *req, int status)
{
    h2c_t *h = container_of(req, h2c_t, creq);
    if (status < 0 || h->closed) {
        if (!h->closed)
            h2c_fail(h, "connect failed");
        return;
    }
    uv_read_start((uv_stream_t *)&h->tcp, on_h2c_alloc, on_h2c_read);
    SSL_do_handshake(h->ssl); /* the ClientHello */
    h2c_flush(h);
}

static void h2c_finish(lt_t *t)
{
    h2c_t *h = t->data;
    if (!h->closed) {
        h->closed = 1;
        uv_close((uv_handle_t *)&h->tcp, NULL);
    }
}

/* Connects to the proxy to send PLAN (N requests, at most H2C_MAX_STREAMS);
 * TLS verifies the certificate in CA_FILE. */
static int h2c_start(h2c_t *h, lt_t *t, const char *ca_file, const h2c_req_t *plan, int n)
{
    memset(h, 0, sizeof(*h));
    h->t = t;
    t->data = h;
    t->on_finish = h2c_finish;
    t->on_poll = h2c_poll;
    h->plan = plan;
    h->n_plan = n < H2C_MAX_STREAMS ? n : H2C_MAX_STREAMS;
    static const unsigned char alpn[] = "\x02h2";
    if ((h->ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
        SSL_CTX_load_verify_locations(h->ctx, ca_file, NULL) != 1 ||
        SSL_CTX_set_alpn_protos(h->ctx, alpn, sizeof(alpn) - 1) != 0 ||
        (h->ssl = SSL_new(h->ctx)) == NULL)
        return -1;
    SSL_set_verify(h->ssl, SSL_VERIFY_PEER, NULL);
    SSL_set1_host(h->ssl, "localhost");
    SSL_set_tlsext_host_name(h->ssl, "localhost");
    h->rbio = BIO_new(BIO_s_mem());
    h->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(h->ssl, h->rbio, h->wbio); /* the SSL owns them now */
    SSL_set_connect_state(h->ssl);
    uv_tcp_init(&t->w.loop, &h->tcp);
    uv_tcp_nodelay(&h->tcp, 1); /* a small frame after a large write goes now, not after an ACK */
    h->tcp.data = h;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", t->port, &sa);
    return uv_tcp_connect(&h->creq, &h->tcp, (const struct sockaddr *)&sa, on_h2c_connected);
}

static void h2c_free(h2c_t *h)
{
    nghttp2_session_del(h->ng);
    SSL_free(h->ssl);
    SSL_CTX_free(h->ctx);
}

/* ---- the scenario ------------------------------------------------------- */

/* psproxy's TLS as service.c sets it up: a store with the site's entry
 * under its name (srv_load_certs), a context with h2 on. */
static tls_server_t *tls_for(const tmp_cert_t *tc, certs_t **store)
{
    char err[512];
    certs_entry_t *e = NULL;
    *store = certs_new();
    if (certs_entry_load(tc->cert, tc->key, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "  %s\n", err);
        return NULL;
    }
    certs_put(*store, "localhost", e);
    certs_entry_unref(e);
    tls_server_t *tls = tls_server_new(*store, "localhost", err, sizeof(err));
    if (tls == NULL)
        fprintf(stderr, "  %s\n", err);
    else
        tls_server_set_h2(tls, 1);
    return tls;
}

/* A worker serving https://localhost with a fresh certificate, proxying
 * to the scripted upstream after the site's directives SITE; GLOBAL: more
 * global options. */
typedef struct h2_env {
    tmp_cert_t tc;
    certs_t *store;
    tls_server_t *tls;
    lt_t t;
    h2c_t h;
} h2_env_t;

static int h2_env_start(h2_env_t *e, const char *global, const char *site)
{
    memset(e, 0, sizeof(*e));
    if (tmp_cert_make(&e->tc) != 0) {
        fprintf(stderr, "  cannot make a self-signed certificate\n");
        tmp_cert_remove(&e->tc);
        return -1;
    }
    char conf[2048];
    snprintf(conf, sizeof(conf),
             "{\n"
             "\tadmin off\n"
             "\tauto_https disable_redirects\n"
             "\tgrace_period 500ms\n"
             "%s"
             "}\n"
             "\n"
             "https://localhost:@PORT@ {\n"
             "\ttls %s %s\n"
             "%s"
             "\treverse_proxy 127.0.0.1:@UP@\n"
             "}\n",
             global, e->tc.cert, e->tc.key, site);
    e->tls = tls_for(&e->tc, &e->store);
    if (e->tls == NULL || lt_start_tls(&e->t, conf, e->tls) != 0) {
        tls_server_free(e->tls);
        certs_free(e->store);
        tmp_cert_remove(&e->tc);
        return -1;
    }
    return 0;
}

static void h2_env_end(h2_env_t *e)
{
    lt_end(&e->t);
    h2c_free(&e->h);
    tls_server_free(e->tls);
    certs_free(e->store);
    tmp_cert_remove(&e->tc);
}

TEST(h2_get_then_post_reach_the_upstream_as_http1)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget"),
        LT_READ_HEAD(),
        LT_READ(11),
        LT_WRITE("HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\npost"),
        LT_END(),
    };
    static const h2c_req_t plan[] = {
        {.method = "GET", .path = "/get"},
        {.method = "POST", .path = "/post", .body = "hello world"},
    };
    h2_env_t e;
    if (h2_env_start(&e, "", "") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 2), 0);
    CHECK_INT(lt_run(t), 0);
    /* two streams on one connection, one upstream connection for both */
    CHECK_STR(lt_events(t, ""), "c0: tls h2\n"
                                "u0: accept\n"
                                "u0: GET /get\n"
                                "c0: stream 1: 200 \"get\" (error 0)\n"
                                "u0: POST /post\n"
                                "u0: body \"hello world\"\n"
                                "c0: stream 3: 201 \"post\" (error 0)\n");
    /* :authority becomes host (h2_msg.c writes the name as it came); the
     * body's length from content-length, as Content-Length */
    char want[1024];
    snprintf(want, sizeof(want),
             "GET /get HTTP/1.1\r\nhost: localhost:%d\r\n"
             "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: localhost:%d\r\n\r\n"
             "POST /post HTTP/1.1\r\nhost: localhost:%d\r\n"
             "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: localhost:%d\r\nContent-Length: 11\r\n\r\nhello world",
             t->port, t->port, t->port, t->port);
    CHECK_STR(lt_rx(t->n_ups > 0 ? t->ups[0] : NULL), want);
    CHECK_INT(t->n_ups, 1);
    h2_env_end(&e);
}

/* A body filter (upper_filter.h) rewrites a proxied body and an answer
 * made here: the stream carries what it hands on with no content-length
 * (nghttp2 would reset a stream whose DATA disagrees with it), the answer
 * made here the exact length of its rewritten body. */
TEST(h2_filtered_bodies_go_as_the_filter_hands_them_on)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        LT_END(),
    };
    static const h2c_req_t plan[] = {
        {.method = "GET", .path = "/up"},
        {.method = "GET", .path = "/local"},
    };
    h2_env_t e;
    if (h2_env_start(&e, "", "\theader X-Filtered yes\n\trespond /local \"here\"\n") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    upper_filter_install();
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 2), 0);
    CHECK_INT(lt_run(t), 0);
    CHECK_STR(lt_events(t, "c"), "c0: tls h2\n"
                                 "c0: stream 1: 200 \"HELLO|END\" (error 0)\n"
                                 "c0: stream 3: 200 \"HERE|END\" (error 0)\n");
    CHECK_INT(upper_seen.opens, 2);
    h2_env_end(&e);
    CHECK_INT(upper_seen.closes, 2);
}

TEST(h2_upstream_closing_mid_body_resets_the_stream_not_the_connection)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
        LT_CLOSE(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const h2c_req_t plan[] = {
        {.method = "GET", .path = "/cut"},
        {.method = "GET", .path = "/next"},
    };
    h2_env_t e;
    if (h2_env_start(&e, "", "") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    lt_upstream(t, 1, up1);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 2), 0);
    CHECK_INT(lt_run(t), 0);
    /* the cut stream ends with RST_STREAM, never END_STREAM (which would
     * make a 5-byte body look whole); the connection serves the next */
    CHECK_STR(lt_events(t, "u"), "u0: accept\n"
                                 "u0: GET /cut\n"
                                 "u0: close\n"
                                 "u1: accept\n"
                                 "u1: GET /next\n");
    char want[256];
    snprintf(want, sizeof(want),
             "c0: tls h2\n"
             "c0: stream 1: 200 \"hello\" (error %d)\n"
             "c0: stream 3: 200 \"ok\" (error 0)\n",
             NGHTTP2_INTERNAL_ERROR);
    CHECK_STR(lt_events(t, "c"), want);
    h2_env_end(&e);
}

static h2_env_t *env_of(lt_t *t)
{
    return container_of(t, h2_env_t, t);
}

/* The response of the stream being sent ended (END_STREAM from psproxy). */
static int stream_answered(lt_t *t)
{
    h2c_t *h = &env_of(t)->h;
    return h->n_streams > 0 && h->streams[h->n_streams - 1].answered;
}

static int up0_has_hello(lt_t *t)
{
    return t->n_ups > 0 && strstr(lt_rx(t->ups[0]), "\r\n\r\nhello") != NULL;
}

/* More than the stream's and the connection's first windows (65,535): the
 * client gets through only if psproxy gives back the window of the bytes
 * it drops. */
#define DROPPED_LEN 200000
static char dropped[DROPPED_LEN + 1];

/* A stream answered here (respond) while its client is still sending: the
 * response ends the stream on psproxy's side, the DATA that follows is
 * dropped with its window given back, the client finishes the request and
 * the stream closes cleanly; the next stream on the connection is proxied
 * and the upstream never sees a byte of the first. */
TEST(h2_local_answer_drops_the_body_still_coming_and_the_session_goes_on)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    memset(dropped, 'x', DROPPED_LEN);
    static const h2c_req_t plan[] = {
        {.method = "POST",
         .path = "/local",
         .body = "hello",
         .when = stream_answered,
         .rest = dropped},
        {.method = "GET", .path = "/next"},
    };
    h2_env_t e;
    if (h2_env_start(&e, "", "\trespond /local \"here\" 201\n") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 2), 0);
    CHECK_INT(lt_run(t), 0);
    CHECK_STR(lt_events(t, ""), "c0: tls h2\n"
                                "c0: stream 1: 201 \"here\" (error 0)\n"
                                "u0: accept\n"
                                "u0: GET /next\n"
                                "c0: stream 3: 200 \"ok\" (error 0)\n");
    /* all of the body went, after the answer; psproxy never reset it */
    CHECK_INT(e.h.streams[0].sent, 5 + DROPPED_LEN);
    CHECK_INT(e.h.streams[0].reset_by_peer, 0);
    char want[512];
    snprintf(want, sizeof(want),
             "GET /next HTTP/1.1\r\nhost: localhost:%d\r\n"
             "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: localhost:%d\r\n\r\n",
             t->port, t->port);
    CHECK_STR(lt_rx(t->n_ups > 0 ? t->ups[0] : NULL), want);
    CHECK_INT(t->n_ups, 1);
    h2_env_end(&e);
}

/* The client resets a stream (RST_STREAM CANCEL) halfway through its body
 * while the upstream reads it: the upstream connection, which holds part
 * of a request that can never be whole, is closed (never pooled); the
 * session goes on, and the next stream is proxied on a new upstream
 * connection. (A stream whose head never completes cannot be written with
 * nghttp2's client API, which sends each header block whole.) */
TEST(h2_client_reset_mid_body_closes_the_upstream_not_the_session)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ(5),
        LT_END(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const h2c_req_t plan[] = {
        {.method = "POST",
         .path = "/up",
         .body = "hello",
         .when = up0_has_hello,
         .rest = " world",
         .reset = 1},
        {.method = "GET", .path = "/next"},
    };
    h2_env_t e;
    if (h2_env_start(&e, "", "") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    lt_upstream(t, 1, up1);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 2), 0);
    CHECK_INT(lt_run(t), 0);
    /* psproxy closes u0 at the reset and dials u1 for the next stream
     * right after: the upstream's two sockets are compared apart */
    CHECK_STR(lt_events(t, "u0"), "u0: accept\n"
                                  "u0: POST /up\n"
                                  "u0: body \"hello\"\n"
                                  "u0: eof\n");
    char want[256];
    snprintf(want, sizeof(want),
             "c0: tls h2\n"
             "c0: stream 1: 0 \"\" (error %d)\n"
             "u1: accept\n"
             "u1: GET /next\n"
             "c0: stream 3: 200 \"ok\" (error 0)\n",
             NGHTTP2_CANCEL);
    CHECK_STR(lt_events(t, "c u1"), want);
    /* u0 got the head, declaring all 11 bytes, and the 5 sent before the reset */
    char want_up[512];
    snprintf(want_up, sizeof(want_up),
             "POST /up HTTP/1.1\r\nhost: localhost:%d\r\n"
             "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: localhost:%d\r\nContent-Length: 11\r\n\r\nhello",
             t->port, t->port);
    CHECK_STR(lt_rx(t->n_ups > 0 ? t->ups[0] : NULL), want_up);
    CHECK_INT(t->n_ups, 2);
    h2_env_end(&e);
}

/* 64 MiB: more than the kernel buffers between upstream and proxy hold */
#define FLOOD_LEN (64u << 20)
#define WRITE_MS 400

/* The client does not read one stream's response (its window stays shut):
 * psproxy's write on that stream stays pending, it stops reading the
 * upstream, and the stream's own write clock ends the exchange: the stream
 * is reset, its upstream connection closed. The session, whose window the
 * client keeps open, goes on with the next stream. */
TEST(h2_stream_not_read_is_reset_after_write_and_its_upstream_closed)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n"),
        LT_FLOOD(FLOOD_LEN),
        LT_WAIT(lt_proxy_upstream_read_stopped),
        LT_NOTE("held"),
        LT_EOF(),
        LT_END(),
    };
    static const lt_step_t up1[] = {
        LT_READ_HEAD(),
        LT_WRITE("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        LT_END(),
    };
    static const h2c_req_t plan[] = {
        {.method = "GET", .path = "/big", .stall = 1},
        {.method = "GET", .path = "/next"},
    };
    h2_env_t e;
    if (h2_env_start(&e, "\tservers {\n\t\ttimeouts {\n\t\t\twrite 400ms\n\t\t}\n\t}\n", "") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    lt_upstream(t, 1, up1);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 2), 0);
    CHECK_INT(lt_run(t), 0);
    /* psproxy's socket to u0 still holds unread bytes: its close is a reset */
    CHECK_STR(lt_events(t, "u0"), "u0: accept\n"
                                  "u0: GET /big\n"
                                  "u0: held\n"
                                  "u0: reset\n");
    /* the stream got exactly its window, then RST_STREAM */
    char want[256];
    snprintf(want, sizeof(want),
             "c0: tls h2\n"
             "c0: stream 1: 200 [65535 bytes] (error %d)\n"
             "u1: accept\n"
             "u1: GET /next\n"
             "c0: stream 3: 200 \"ok\" (error 0)\n",
             NGHTTP2_INTERNAL_ERROR);
    CHECK_STR(lt_events(t, "c u1"), want);
    CHECK_INT(e.h.streams[0].reset_by_peer, 1);
    /* the write clock starts when a write goes pending, after the request */
    int64_t waited = lt_time(t, "c0: stream 1") - lt_time(t, "c0: tls h2");
    CHECK(waited >= WRITE_MS);
    CHECK(waited < WRITE_MS + 1000);
    h2_env_end(&e);
}

/* ---- the connection's window, stream after stream ----------------------- */

/* Streams one after the other on one connection, each with a body of
 * WHOLE_LEN: together far more than the connection's window
 * (H2_MAX_STREAMS read buffers), so a stream that took its bytes from
 * that window and never gave them back would stall those after the first
 * hundred or so. */
#define MANY_STREAMS 150
/* 34 KiB: within a stream's window (one read buffer, 36 KiB with the
 * default max_header_size), so a body comes whole with its head */
#define WHOLE_LEN (34 * 1024)
/* what a stream answered here sends after the answer: within what is left
 * of its own window, so that only the connection's could hold it up */
#define REST_LEN 1024
static char whole[WHOLE_LEN + 1];
static char rest[REST_LEN + 1];

static const char ok_response[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* The sizes above against the worker's buffers, which set both windows:
 * a stream's bytes fit its own, the streams' outrun the connection's by a
 * quarter at least. */
static void check_window_sizes(lt_t *t)
{
    uint64_t buf = t->w.bufs.size;
    CHECK(WHOLE_LEN + REST_LEN <= buf);
    CHECK((uint64_t)MANY_STREAMS * WHOLE_LEN >= (uint64_t)H2_MAX_STREAMS * buf * 5 / 4);
}

/* Each body arrives whole with its head, so the proxy keeps it in the
 * stream's buffer for a replay until the exchange ends: what it kept goes
 * back to the connection's window when the exchange lets go of it, and
 * every stream reaches the upstream and gets its answer. */
TEST(h2_whole_bodies_kept_for_a_replay_leave_the_connection_window_whole)
{
    static lt_step_t up0[3 * MANY_STREAMS + 1];
    static h2c_req_t plan[MANY_STREAMS];
    memset(whole, 'w', WHOLE_LEN);
    for (int i = 0; i < MANY_STREAMS; i++) {
        up0[3 * i] = (lt_step_t)LT_READ_HEAD();
        up0[3 * i + 1] = (lt_step_t)LT_READ(WHOLE_LEN);
        up0[3 * i + 2] = (lt_step_t)LT_WRITE(ok_response);
        plan[i] = (h2c_req_t){.method = "POST", .path = "/whole", .body = whole};
    }
    up0[3 * MANY_STREAMS] = (lt_step_t)LT_END();
    h2_env_t e;
    if (h2_env_start(&e, "", "") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    check_window_sizes(t);
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, MANY_STREAMS), 0);
    CHECK_INT(lt_run(t), 0);
    /* one upstream connection, every request on it whole, every answer back */
    static char want[LT_LOG_MAX];
    size_t o = (size_t)snprintf(want, sizeof(want), "c0: tls h2\nu0: accept\n");
    for (int i = 0; i < MANY_STREAMS && o < sizeof(want); i++)
        o += (size_t)snprintf(want + o, sizeof(want) - o,
                              "u0: POST /whole\n"
                              "u0: body [%d bytes]\n"
                              "c0: stream %d: 200 \"ok\" (error 0)\n",
                              WHOLE_LEN, 2 * i + 1);
    CHECK_STR(lt_events(t, ""), want);
    CHECK_INT(t->n_ups, 1);
    h2_env_end(&e);
}

/* Each stream is answered here (respond) with most of its body in the
 * stream's buffer, which the answer drops, and the rest still to come,
 * which is dropped as it arrives: the window of both goes back to the
 * connection, every stream's client sends its whole body and the stream
 * closes cleanly, and a proxied POST after them gets through. */
TEST(h2_bodies_dropped_under_local_answers_leave_the_connection_window_whole)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ(WHOLE_LEN),
        LT_WRITE(ok_response),
        LT_END(),
    };
    static h2c_req_t plan[MANY_STREAMS + 1];
    memset(whole, 'w', WHOLE_LEN);
    memset(rest, 'r', REST_LEN);
    for (int i = 0; i < MANY_STREAMS; i++)
        plan[i] = (h2c_req_t){.method = "POST",
                              .path = "/local",
                              .body = whole,
                              .when = stream_answered,
                              .rest = rest};
    plan[MANY_STREAMS] = (h2c_req_t){.method = "POST", .path = "/up", .body = whole};
    h2_env_t e;
    if (h2_env_start(&e, "", "\trespond /local \"here\" 201\n") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    check_window_sizes(t);
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, MANY_STREAMS + 1), 0);
    CHECK_INT(lt_run(t), 0);
    static char want[LT_LOG_MAX];
    size_t o = (size_t)snprintf(want, sizeof(want), "c0: tls h2\n");
    for (int i = 0; i < MANY_STREAMS && o < sizeof(want); i++)
        o += (size_t)snprintf(want + o, sizeof(want) - o, "c0: stream %d: 201 \"here\" (error 0)\n",
                              2 * i + 1);
    if (o < sizeof(want))
        snprintf(want + o, sizeof(want) - o,
                 "u0: accept\n"
                 "u0: POST /up\n"
                 "u0: body [%d bytes]\n"
                 "c0: stream %d: 200 \"ok\" (error 0)\n",
                 WHOLE_LEN, 2 * MANY_STREAMS + 1);
    CHECK_STR(lt_events(t, ""), want);
    /* each answered stream took all of its body, after the answer, and
     * psproxy reset none (a stream held up past the linger time would be) */
    int short_sent = 0, reset = 0;
    for (int i = 0; i < e.h.n_streams && i < MANY_STREAMS; i++) {
        short_sent += e.h.streams[i].sent != WHOLE_LEN + REST_LEN;
        reset += e.h.streams[i].reset_by_peer;
    }
    CHECK_INT(e.h.n_streams, MANY_STREAMS + 1);
    CHECK_INT(short_sent, 0);
    CHECK_INT(reset, 0);
    CHECK_INT(t->n_ups, 1);
    h2_env_end(&e);
}

/* Each body comes whole with its head but short of its content-length,
 * which nghttp2 finds at END_STREAM (RFC 9113 8.1.1): the stream is reset
 * before its exchange starts, so no answer ever ends it and the bytes in
 * its buffer go back to the connection's window only when the exchange
 * lets go of them; a proxied POST after them gets through. */
TEST(h2_bodies_of_malformed_streams_leave_the_connection_window_whole)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ(WHOLE_LEN),
        LT_WRITE(ok_response),
        LT_END(),
    };
    static h2c_req_t plan[MANY_STREAMS + 1];
    static char length[24];
    memset(whole, 'w', WHOLE_LEN);
    snprintf(length, sizeof(length), "%d", WHOLE_LEN + 1);
    for (int i = 0; i < MANY_STREAMS; i++)
        plan[i] = (h2c_req_t){.method = "POST", .path = "/bad", .body = whole, .length = length};
    plan[MANY_STREAMS] = (h2c_req_t){.method = "POST", .path = "/up", .body = whole};
    h2_env_t e;
    if (h2_env_start(&e, "", "") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    check_window_sizes(t);
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, MANY_STREAMS + 1), 0);
    CHECK_INT(lt_run(t), 0);
    /* the upstream sees none of the malformed requests */
    static char want[LT_LOG_MAX];
    size_t o = (size_t)snprintf(want, sizeof(want), "c0: tls h2\n");
    for (int i = 0; i < MANY_STREAMS && o < sizeof(want); i++)
        o += (size_t)snprintf(want + o, sizeof(want) - o, "c0: stream %d: 0 \"\" (error %d)\n",
                              2 * i + 1, NGHTTP2_PROTOCOL_ERROR);
    if (o < sizeof(want))
        snprintf(want + o, sizeof(want) - o,
                 "u0: accept\n"
                 "u0: POST /up\n"
                 "u0: body [%d bytes]\n"
                 "c0: stream %d: 200 \"ok\" (error 0)\n",
                 WHOLE_LEN, 2 * MANY_STREAMS + 1);
    CHECK_STR(lt_events(t, ""), want);
    CHECK_INT(t->n_ups, 1);
    h2_env_end(&e);
}

/* ---- a body over request_body max_size ---------------------------------- */

static int up0_has_hello_chunk(lt_t *t)
{
    return t->n_ups > 0 && strstr(lt_rx(t->ups[0]), "\r\n\r\n5\r\nhello\r\n") != NULL;
}

/* A body without a content-length cannot be refused from its head: it goes
 * up chunked until it passes max_size, then the stream gets 413 and the
 * upstream connection, which holds part of a request that can never be
 * whole, is closed; not a byte past the limit goes up. */
TEST(h2_body_without_length_passing_max_size_is_413_and_closes_the_upstream)
{
    static const lt_step_t up0[] = {
        LT_READ_HEAD(),
        LT_READ_TO("hello\r\n"),
        LT_EOF(),
        LT_END(),
    };
    static const h2c_req_t plan[] = {
        {.method = "POST",
         .path = "/up",
         .body = "hello",
         .when = up0_has_hello_chunk,
         .rest = ", and far more than ten bytes",
         .length = ""},
    };
    h2_env_t e;
    if (h2_env_start(&e, "", "\trequest_body {\n\t\tmax_size 10\n\t}\n") != 0) {
        CHECK(!"h2_env_start");
        return;
    }
    lt_t *t = &e.t;
    lt_upstream(t, 0, up0);
    CHECK_INT(h2c_start(&e.h, t, e.tc.cert, plan, 1), 0);
    CHECK_INT(lt_run(t), 0);
    CHECK_STR(lt_events(t, "u"), "u0: accept\n"
                                 "u0: POST /up\n"
                                 "u0: body \"5\\r\\nhello\\r\\n\"\n"
                                 "u0: eof\n");
    CHECK_STR(lt_events(t, "c"), "c0: tls h2\n"
                                 "c0: stream 1: 413 \"\" (error 0)\n");
    char want[512];
    snprintf(want, sizeof(want),
             "POST /up HTTP/1.1\r\nhost: localhost:%d\r\n"
             "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
             "X-Forwarded-Host: localhost:%d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
             t->port, t->port);
    CHECK_STR(lt_rx(t->n_ups > 0 ? t->ups[0] : NULL), want);
    h2_env_end(&e);
}

TEST_MAIN()
