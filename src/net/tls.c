/* TLS termination: the shared server context and the per-connection
 * record plumbing. libuv owns the socket; OpenSSL reads and writes our
 * buffers through a small BIO of our own (no copy into a memory BIO, no
 * malloc per record). */
#include "tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "chal.h"
#include "common.h"
#include "log.h"
#include "sock.h"

/* Mozilla's "intermediate" TLS 1.2 suites without DHE: forward secrecy from
 * ECDHE only, over the groups below. TLS 1.3 keeps OpenSSL's three suites. */
#define TLS_CIPHERS                                                                                \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                  \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                  \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256"
#define TLS_SESSION_CACHE 20480
#define TLS_SESSION_TIMEOUT (24 * 3600) /* seconds: two ticket key periods */
/* the most a record adds to its plaintext, with room to spare */
#define TLS_RECORD_OVERHEAD 512
#define TLS_MAX_PLAINTEXT 16384

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

struct tls_server {
    SSL_CTX *ctx;
    certs_t *store;
    char *default_name;
    uv_rwlock_t keys_lock;
    struct ticket_key keys[2]; /* [0] encrypts; both decrypt */
    int n_keys;
    /* offer h2 in ALPN (servers { protocols }); a reload sets it. Relaxed:
     * one flag that guards no other data; a handshake that reads the old
     * value just after a reload answers as one begun just before it would */
    atomic_int h2;
};

static int ex_server_idx = -1;
static int ex_acme_idx = -1; /* set on SSLs answering a TLS-ALPN-01 validation */
static const char ACME_TLS_1[] = "acme-tls/1";
static BIO_METHOD *bio_method;
static uv_once_t init_once = UV_ONCE_INIT;

/* ---- our BIO: OpenSSL reads t->in and appends to t->out ----------------- */

static int bio_write(BIO *b, const char *data, int len)
{
    tls_conn_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->out == NULL)
        t->out = buf_get(t->bufs);
    size_t room = t->bufs->size - t->out_len;
    if (room == 0) {
        BIO_set_retry_write(b);
        return -1;
    }
    size_t n = (size_t)len < room ? (size_t)len : room;
    memcpy(t->out + t->out_len, data, n);
    t->out_len += n;
    return (int)n;
}

static int bio_read(BIO *b, char *dst, int len)
{
    tls_conn_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t avail = t->in_len - t->in_start;
    if (avail == 0) {
        if (!t->sock_eof)
            BIO_set_retry_read(b);
        return t->sock_eof ? 0 : -1;
    }
    size_t n = (size_t)len < avail ? (size_t)len : avail;
    memcpy(dst, t->in + t->in_start, n);
    t->in_start += n;
    if (t->in_start == t->in_len)
        t->in_start = t->in_len = 0;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    tls_conn_t *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(t->in_len - t->in_start);
    case BIO_CTRL_WPENDING:
        return (long)(t->out_len - t->out_sent);
    case BIO_CTRL_EOF:
        return t->sock_eof && t->in_len == t->in_start;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void global_init(void)
{
    ex_server_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ex_acme_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "psproxy");
    if (bio_method == NULL)
        abort();
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

/* ---- the server context ------------------------------------------------- */

static tls_server_t *server_of(SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_server_idx);
}

/* Whether a ClientHello extension body of ALPN lists acme-tls/1. */
static int offers_acme_tls(const unsigned char *ext, size_t len)
{
    if (len < 2)
        return 0;
    size_t list = ((size_t)ext[0] << 8) | ext[1];
    const unsigned char *p = ext + 2, *end = ext + 2 + (list < len - 2 ? list : len - 2);
    while (p < end) {
        size_t n = *p++;
        if (n == sizeof(ACME_TLS_1) - 1 && (size_t)(end - p) >= n && memcmp(p, ACME_TLS_1, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

/* The host_name of a server_name extension body, copied into OUT. */
static int sni_name(const unsigned char *ext, size_t len, char *out, size_t cap)
{
    /* list length (2), name type (1) = host_name (0), name length (2), name */
    if (len < 5 || ext[2] != 0)
        return -1;
    size_t n = ((size_t)ext[3] << 8) | ext[4];
    if (n == 0 || n >= cap || n > len - 5)
        return -1;
    memcpy(out, ext + 5, n);
    out[n] = '\0';
    return 0;
}

/* TLS-ALPN-01 (RFC 8737): a validator offering acme-tls/1 gets the
 * challenge certificate for its SNI. This runs before the SNI and ALPN
 * callbacks, which then leave such a handshake alone. */
static int on_client_hello(SSL *ssl, int *alert, void *arg)
{
    const unsigned char *ext = NULL;
    size_t len = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                  &len) != 1 ||
        !offers_acme_tls(ext, len))
        return SSL_CLIENT_HELLO_SUCCESS;
    char name[256];
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) != 1 ||
        sni_name(ext, len, name, sizeof(name)) != 0 || chal_alpn_get(name, &cert, &key) != 0) {
        *alert = SSL_AD_UNRECOGNIZED_NAME; /* no validation pending for it */
        return SSL_CLIENT_HELLO_ERROR;
    }
    int ok = SSL_use_cert_and_key(ssl, cert, key, NULL, 1) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!ok) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_ex_data(ssl, ex_acme_idx, (void *)1);
    log_info("acme: answering a tls-alpn-01 validation for %s", name);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* SNI: pick the certificate before OpenSSL picks a cipher suite for it.
 * Called for every ClientHello, with or without a server_name. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    tls_server_t *s = arg;
    if (SSL_get_ex_data(ssl, ex_acme_idx) != NULL)
        return SSL_TLSEXT_ERR_OK; /* the challenge certificate is set */
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const char *want = name != NULL ? name : s->default_name;
    certs_entry_t *e = want != NULL ? certs_get(s->store, want) : NULL;
    if (e == NULL) {
        /* never another site's certificate: fail the handshake */
        log_debug("tls: no certificate for %s", name != NULL ? name : "(no SNI)");
        *alert = name != NULL ? SSL_AD_UNRECOGNIZED_NAME : SSL_AD_HANDSHAKE_FAILURE;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    int ok = SSL_use_cert_and_key(ssl, e->leaf, e->key, e->chain, 1) == 1;
    certs_entry_unref(e);
    if (!ok) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    /* ours in order of preference: SSL_select_next_proto takes the first
     * one the client offers too */
    static const unsigned char h2_h1[] = "\x02h2\x08http/1.1";
    static const unsigned char acme[] = "\x0a" "acme-tls/1";
    const tls_server_t *s = arg;
    const unsigned char *ours = h2_h1;
    unsigned len = sizeof(h2_h1) - 1;
    if (SSL_get_ex_data(ssl, ex_acme_idx) != NULL) {
        ours = acme;
        len = sizeof(acme) - 1;
    } else if (!atomic_load_explicit(&s->h2, memory_order_relaxed)) { /* see tls_server */
        ours = h2_h1 + 3;
        len -= 3;
    }
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 3.2: no_application_protocol */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int set_hmac_key(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
                                                  sizeof(k->hmac));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

/* Session tickets under our keys, so that every worker (they share this
 * context) and every rotation period agree on them. */
static int on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    tls_server_t *s = server_of(ssl);
    int rc = -1;
    uv_rwlock_rdlock(&s->keys_lock);
    if (enc) {
        const struct ticket_key *k = &s->keys[0];
        memcpy(name, k->name, sizeof(k->name));
        if (RAND_bytes(iv, 16) == 1 &&
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 &&
            set_hmac_key(hctx, k) == 1)
            rc = 1;
    } else {
        rc = 0; /* unknown key: a full handshake, no error */
        for (int i = 0; i < s->n_keys; i++) {
            const struct ticket_key *k = &s->keys[i];
            if (memcmp(name, k->name, sizeof(k->name)) != 0)
                continue;
            /* 2 has OpenSSL issue a fresh ticket: for a ticket under the
             * old key, and for every TLS 1.3 resumption, where a client
             * uses a ticket once (RFC 8446 section 4.6.1) and, without a
             * fresh one, makes its next connection a full handshake */
            if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 &&
                set_hmac_key(hctx, k) == 1)
                rc = i == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
            else
                rc = -1;
            break;
        }
    }
    uv_rwlock_rdunlock(&s->keys_lock);
    return rc;
}

void tls_server_rotate_tickets(tls_server_t *s)
{
    struct ticket_key k;
    if (RAND_bytes((unsigned char *)&k, sizeof(k)) != 1) {
        log_err("tls: no randomness for a session ticket key; keeping the current one");
        return;
    }
    uv_rwlock_wrlock(&s->keys_lock);
    s->keys[1] = s->keys[0];
    s->keys[0] = k;
    s->n_keys = s->n_keys == 0 ? 1 : 2;
    uv_rwlock_wrunlock(&s->keys_lock);
    OPENSSL_cleanse(&k, sizeof(k));
}

tls_server_t *tls_server_new(certs_t *store, const char *default_name, char *err, size_t errlen)
{
    uv_once(&init_once, global_init);
    tls_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL || uv_rwlock_init(&s->keys_lock) != 0)
        abort();
    s->store = store;
    s->default_name = default_name != NULL ? strdup(default_name) : NULL;
    SSL_CTX *ctx = s->ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        goto fail;
    SSL_CTX_set_ex_data(ctx, ex_server_idx, s);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1)
        goto fail;
    /* OpenSSL 3 refuses client-initiated renegotiation unless allowed */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* No SSL_MODE_RELEASE_BUFFERS: it frees and mallocs OpenSSL's record
     * buffers around every record (~3,000 instructions a request); conn.c
     * gives them back with tls_conn_free_engine_buffers() once a connection
     * goes quiet. */
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, s);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, s);
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, s);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, TLS_SESSION_CACHE);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"psproxy", 7);
    SSL_CTX_set_timeout(ctx, TLS_SESSION_TIMEOUT);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    tls_server_rotate_tickets(s);
    return s;
fail:
    snprintf(err, errlen, "tls: cannot set up the server context: %s",
             ERR_reason_error_string(ERR_peek_last_error()));
    ERR_clear_error();
    tls_server_free(s);
    return NULL;
}

void tls_server_free(tls_server_t *s)
{
    if (s == NULL)
        return;
    SSL_CTX_free(s->ctx);
    OPENSSL_cleanse(s->keys, sizeof(s->keys));
    uv_rwlock_destroy(&s->keys_lock);
    free(s->default_name);
    free(s);
}

/* ---- a connection -------------------------------------------------------- */

int tls_conn_init(tls_conn_t *t, tls_server_t *s, buf_pool_t *bufs)
{
    memset(t, 0, sizeof(*t));
    t->bufs = bufs;
    t->ssl = SSL_new(s->ctx);
    BIO *bio = BIO_new(bio_method);
    if (t->ssl == NULL || bio == NULL) {
        SSL_free(t->ssl);
        BIO_free(bio);
        t->ssl = NULL;
        ERR_clear_error();
        return UV_ENOMEM; /* OpenSSL fails these only for memory */
    }
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio); /* one BIO both ways; SSL owns it */
    SSL_set_accept_state(t->ssl);
    return 0;
}

void tls_conn_dispose(tls_conn_t *t)
{
    SSL_free(t->ssl);
    t->ssl = NULL;
    buf_put(t->bufs, t->in);
    buf_put(t->bufs, t->out);
    t->in = t->out = NULL;
}

uv_buf_t tls_conn_in_space(tls_conn_t *t)
{
    if (t->in == NULL)
        t->in = buf_get(t->bufs);
    if (t->in_start > 0) {
        /* a record's tail may wait for the rest of it: make room behind it */
        memmove(t->in, t->in + t->in_start, t->in_len - t->in_start);
        t->in_len -= t->in_start;
        t->in_start = 0;
    }
    return uv_buf_init(t->in + t->in_len, (unsigned)(t->bufs->size - t->in_len));
}

void tls_conn_received(tls_conn_t *t, size_t n)
{
    t->in_len += n;
}

int tls_conn_in_full(const tls_conn_t *t)
{
    return t->in != NULL && t->in_len - t->in_start == t->bufs->size;
}

/* Logs why OpenSSL failed (at debug: a bad client is not our error). */
static int failed(tls_conn_t *t, const char *what, int ret)
{
    int e = SSL_get_error(t->ssl, ret);
    unsigned long code = ERR_peek_last_error();
    if (log_enabled(LOG_DEBUG)) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof(buf));
        log_debug("tls: %s failed: error %d: %s", what, e, code != 0 ? buf : "(none)");
    }
    ERR_clear_error();
    return PS_EPROTO;
}

int tls_conn_handshake(tls_conn_t *t)
{
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->handshake_done = 1;
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ && !t->sock_eof)
        return 0;
    return failed(t, "handshake", r);
}

ssize_t tls_conn_read(tls_conn_t *t, char *dst, size_t cap)
{
    if (t->peer_closed)
        return UV_EOF;
    int r = SSL_read(t->ssl, dst, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (r > 0)
        return r;
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN) {
        t->peer_closed = 1;
        return UV_EOF;
    }
    if (e == SSL_ERROR_WANT_READ)
        return t->sock_eof ? UV_EOF : 0; /* EOF without close_notify: the framing judges */
    if (e == SSL_ERROR_SYSCALL && t->sock_eof) {
        ERR_clear_error();
        return UV_EOF;
    }
    return failed(t, "read", r);
}

int tls_conn_readable(const tls_conn_t *t)
{
    return t->in_len > t->in_start || SSL_pending(t->ssl) > 0;
}

int tls_conn_encrypt(tls_conn_t *t, const uv_buf_t *bufs, unsigned n, size_t *done)
{
    static __thread char gather[TLS_MAX_PLAINTEXT];
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    while (*done < total) {
        size_t room = t->bufs->size - t->out_len;
        if (room < TLS_RECORD_OVERHEAD + 1024)
            return 0; /* flush first: never leave OpenSSL a half-written record */
        size_t max = room - TLS_RECORD_OVERHEAD;
        if (max > TLS_MAX_PLAINTEXT)
            max = TLS_MAX_PLAINTEXT;
        /* locate *done in the buffers */
        unsigned i = 0;
        size_t off = *done;
        while (off >= bufs[i].len) {
            off -= bufs[i].len;
            i++;
        }
        const char *src = bufs[i].base + off;
        size_t len = bufs[i].len - off;
        if (len < max && i + 1 < n) {
            /* small pieces (a head, a chunk line, a short body) share one
             * record: one copy here saves records and writes */
            size_t g = 0;
            for (; i < n && g < max; i++, off = 0) {
                size_t take = bufs[i].len - off;
                if (take > max - g)
                    take = max - g;
                memcpy(gather + g, bufs[i].base + off, take);
                g += take;
            }
            src = gather;
            len = g;
        } else if (len > max) {
            len = max;
        }
        int w = SSL_write(t->ssl, src, (int)len);
        if (w <= 0)
            return failed(t, "write", w);
        *done += (size_t)w;
    }
    return 0;
}

void tls_conn_close_notify(tls_conn_t *t)
{
    if (t->handshake_done && SSL_shutdown(t->ssl) < 0)
        ERR_clear_error();
}

uv_buf_t tls_conn_out(const tls_conn_t *t)
{
    return uv_buf_init(t->out + t->out_sent, (unsigned)(t->out_len - t->out_sent));
}

void tls_conn_out_sent(tls_conn_t *t, size_t n)
{
    t->out_sent += n;
    if (t->out_sent == t->out_len)
        t->out_sent = t->out_len = 0;
}

/* Encrypts what of the send fits and writes the records until the socket
 * pushes back; one write in flight at a time. */
static int pump(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, sock_written_cb cb)
{
    if (t->writing)
        return 0;
    for (;;) {
        if (t->n_pend > 0) {
            if (tls_conn_encrypt(t, t->pend, t->n_pend, &t->pend_done) < 0)
                return PS_EPROTO;
            size_t total = 0;
            for (unsigned i = 0; i < t->n_pend; i++)
                total += t->pend[i].len;
            if (t->pend_done == total)
                t->n_pend = 0;
        }
        uv_buf_t out = tls_conn_out(t);
        size_t len = out.len; /* sock_write advances OUT past what it wrote now */
        if (len == 0)
            return t->n_pend == 0 ? 1 : PS_EPROTO;
        int r = sock_write(s, w, &out, 1, cb);
        if (r < 0)
            return r;
        if (r == 0) {
            t->writing = 1;
            t->inflight = len;
            return 0;
        }
        tls_conn_out_sent(t, len);
    }
}

int tls_conn_send(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, uv_buf_t *bufs, unsigned n,
                  sock_written_cb cb)
{
    if (n > PS_ARRAY_SIZE(t->pend))
        return UV_EINVAL;
    memcpy(t->pend, bufs, n * sizeof(*bufs));
    t->n_pend = n;
    t->pend_done = 0;
    return pump(t, s, w, cb);
}

int tls_conn_flush(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, sock_written_cb cb)
{
    return pump(t, s, w, cb);
}

int tls_conn_sent(tls_conn_t *t, uv_stream_t *s, sock_wreq_t *w, sock_written_cb cb)
{
    t->writing = 0;
    tls_conn_out_sent(t, t->inflight);
    return pump(t, s, w, cb);
}

void tls_conn_release_idle(tls_conn_t *t)
{
    if (t->in != NULL && t->in_len == 0) {
        buf_put(t->bufs, t->in);
        t->in = NULL;
    }
    if (t->out != NULL && t->out_len == 0) {
        buf_put(t->bufs, t->out);
        t->out = NULL;
    }
}

void tls_conn_free_engine_buffers(tls_conn_t *t)
{
    /* refused (and harmless) while a record is half read or written */
    SSL_free_buffers(t->ssl);
}

int tls_conn_is_acme(const tls_conn_t *t)
{
    return SSL_get_ex_data(t->ssl, ex_acme_idx) != NULL;
}

int tls_conn_is_h2(const tls_conn_t *t)
{
    const unsigned char *alpn = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(t->ssl, &alpn, &len);
    return len == 2 && memcmp(alpn, "h2", 2) == 0;
}

void tls_server_set_h2(tls_server_t *s, int on)
{
    atomic_store_explicit(&s->h2, on, memory_order_relaxed); /* see struct tls_server */
}

void tls_conn_info(const tls_conn_t *t, tls_info_t *info)
{
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(t->ssl, &alpn, &alen);
    const SSL_CIPHER *cipher = SSL_get_current_cipher(t->ssl);
    const char *sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    info->resumed = SSL_session_reused(t->ssl);
    info->version = (unsigned)SSL_version(t->ssl);
    info->cipher_suite = cipher != NULL ? SSL_CIPHER_get_protocol_id(cipher) : 0;
    info->alpn = uv_buf_init(alen > 0 ? (char *)alpn : "", alen);
    info->server_name = sni != NULL ? sni : "";
}

const char *tls_conn_describe(const tls_conn_t *t, char *buf, size_t len)
{
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(t->ssl, &alpn, &alen);
    snprintf(buf, len, "%s %s alpn=%.*s%s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
             (int)alen, alen ? (const char *)alpn : "-", SSL_session_reused(t->ssl) ? " resumed" : "");
    return buf;
}
