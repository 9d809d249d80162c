/* The floor OpenSSL sets under an idle TLS connection: heap bytes a
 * server-side SSL keeps after SSL_new alone, and after a full TLS 1.3
 * handshake and one request with its record buffers freed (what psproxy
 * holds per idle keep-alive connection besides its own conn_t). Both ends
 * run in this process over a BIO pair; the pair is swapped for a null BIO
 * before counting. Counts mallinfo2's bytes in use over N connections.
 *
 *   cc -O1 -o /tmp/openssl_idle bench/openssl_idle.c -lssl -lcrypto
 *   /tmp/openssl_idle CERT.pem KEY.pem [N]
 */
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

static int handshake(SSL *c, SSL *s)
{
    for (int i = 0; i < 100; i++) {
        int rc = SSL_do_handshake(c), rs = SSL_do_handshake(s); /* both, each time */
        if (rc == 1 && rs == 1)
            return 0;
    }
    return -1;
}

/* One connection: handshake, a request and its response, then idle. */
static SSL *idle_conn(SSL_CTX *sctx, SSL_CTX *cctx)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *bs, *bc;
    char buf[512];
    if (s == NULL || c == NULL || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1)
        return NULL;
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    if (handshake(c, s) < 0)
        return NULL;
    SSL_write(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27);
    if (SSL_read(s, buf, sizeof(buf)) <= 0)
        return NULL;
    SSL_write(s, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38);
    while (SSL_read(c, buf, sizeof(buf)) <= 0 && SSL_get_error(c, 0) == SSL_ERROR_WANT_READ)
        ; /* the ticket comes first */
    SSL_free(c);
    BIO *null = BIO_new(BIO_s_null());
    BIO_up_ref(null);
    SSL_set0_rbio(s, null); /* frees the pair's end */
    SSL_set0_wbio(s, null);
    SSL_free_buffers(s);
    return s;
}

static size_t in_use(void)
{
    return mallinfo2().uordblks;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CERT KEY [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 2000;
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    if (SSL_CTX_use_certificate_chain_file(sctx, argv[1]) != 1 ||
        SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_num_tickets(sctx, 1);
    SSL_CTX_set_options(sctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL **conns = calloc((size_t)n, sizeof(*conns));
    /* a first round makes OpenSSL's lazily built tables; the second counts */
    size_t fresh = 0, idle = 0;
    for (int round = 0; round < 2; round++) {
        size_t a = in_use();
        for (int i = 0; i < n; i++)
            conns[i] = SSL_new(sctx);
        fresh = (in_use() - a) / (size_t)n;
        for (int i = 0; i < n; i++)
            SSL_free(conns[i]);
        a = in_use();
        for (int i = 0; i < n; i++)
            if ((conns[i] = idle_conn(sctx, cctx)) == NULL) {
                ERR_print_errors_fp(stderr);
                return 1;
            }
        idle = (in_use() - a) / (size_t)n;
        for (int i = 0; i < n; i++)
            SSL_free(conns[i]);
    }
    printf("%s: SSL_new alone %zu bytes; idle after a TLS 1.3 handshake and a request %zu bytes "
           "(heap in use per connection, %d connections)\n",
           OpenSSL_version(OPENSSL_VERSION), fresh, idle, n);
    return 0;
}
