/* The floor OpenSSL sets under an idle TLS connection: heap bytes a
 * server-side SSL keeps after SSL_new alone, and after a full TLS 1.3
 * handshake and one request with its record buffers freed (what psproxy
 * holds per idle keep-alive connection besides its own conn_t). Both ends
 * run in this process over a BIO pair; the pair is swapped for a null BIO
 * before counting. Counts mallinfo2's bytes in use over N connections,
 * then names where the idle bytes go: OpenSSL's allocations that are
 * still live, summed by the source line that made them (OpenSSL passes
 * its file:line to the allocator set with CRYPTO_set_mem_functions).
 *
 *   cc -O1 -o /tmp/openssl_idle bench/openssl_idle.c -lssl -lcrypto
 *   /tmp/openssl_idle CERT.pem KEY.pem [N]
 */
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- OpenSSL's live allocations, by the line that made them ------------- */

#define LIVE_SLOTS (1u << 20) /* a power of two, well above what is live */
#define MAX_SITES 256

typedef struct {
    const char *file;
    int line;
    size_t bytes;
    size_t count;
} site_t;

static struct {
    uintptr_t p; /* a key only: never dereferenced */
    size_t n;
    int site;
} live[LIVE_SLOTS]; /* open addressing by pointer; p == NULL: free slot */
static site_t sites[MAX_SITES];
static int n_sites, tracking;

static size_t slot_of(uintptr_t p)
{
    return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ull) & (LIVE_SLOTS - 1);
}

static int site_of(const char *file, int line)
{
    for (int i = 0; i < n_sites; i++)
        if (sites[i].line == line && strcmp(sites[i].file, file) == 0)
            return i;
    if (n_sites == MAX_SITES)
        return MAX_SITES - 1; /* the rest share the last row */
    sites[n_sites].file = file;
    sites[n_sites].line = line;
    return n_sites++;
}

static void remember(void *p, size_t n, const char *file, int line)
{
    if (!tracking || p == NULL)
        return;
    size_t i = slot_of((uintptr_t)p);
    while (live[i].p != 0)
        i = (i + 1) & (LIVE_SLOTS - 1);
    live[i].p = (uintptr_t)p;
    live[i].n = n;
    live[i].site = site_of(file != NULL ? file : "?", line);
}

/* Backward-shift deletion keeps every probe run unbroken. */
static void forget(uintptr_t p)
{
    size_t i = slot_of(p);
    while (live[i].p != p) {
        if (live[i].p == 0)
            return; /* allocated before tracking began */
        i = (i + 1) & (LIVE_SLOTS - 1);
    }
    for (size_t j = (i + 1) & (LIVE_SLOTS - 1); live[j].p != 0; j = (j + 1) & (LIVE_SLOTS - 1)) {
        size_t home = slot_of(live[j].p);
        /* J may move to I when its home is not in (I, J] (cyclically) */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            live[i] = live[j];
            i = j;
        }
    }
    live[i].p = 0;
}

static void *track_malloc(size_t n, const char *file, int line)
{
    void *p = malloc(n);
    remember(p, n, file, line);
    return p;
}

static void *track_realloc(void *old, size_t n, const char *file, int line)
{
    /* forgotten first: the old pointer is not to be looked at once realloc ran */
    if (old != NULL)
        forget((uintptr_t)old);
    void *p = realloc(old, n);
    remember(p != NULL ? p : old, n, file, line); /* failed: OpenSSL gives up on it */
    return p;
}

static void track_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    if (p != NULL)
        forget((uintptr_t)p);
    free(p);
}

static int by_bytes(const void *a, const void *b)
{
    const site_t *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

/* What is live now, by site, per connection of N. */
static void print_sites(int n)
{
    for (size_t i = 0; i < LIVE_SLOTS; i++)
        if (live[i].p != 0) {
            sites[live[i].site].bytes += live[i].n;
            sites[live[i].site].count++;
        }
    qsort(sites, (size_t)n_sites, sizeof(sites[0]), by_bytes);
    size_t total = 0, allocs = 0;
    for (int i = 0; i < n_sites; i++) {
        total += sites[i].bytes;
        allocs += sites[i].count;
    }
    printf("OpenSSL's live allocations per idle connection: %zu bytes in %.1f blocks "
           "(malloc adds its own header to each), by the line that made them:\n",
           total / (size_t)n, (double)allocs / n);
    for (int i = 0; i < n_sites && sites[i].bytes >= (size_t)n * 16; i++)
        printf("  %6zu bytes  %4.1f x  %s:%d\n", sites[i].bytes / (size_t)n,
               (double)sites[i].count / n, sites[i].file, sites[i].line);
}

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
    /* before OpenSSL allocates anything */
    CRYPTO_set_mem_functions(track_malloc, track_realloc, track_free);
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
        tracking = round == 1;
        for (int i = 0; i < n; i++)
            if ((conns[i] = idle_conn(sctx, cctx)) == NULL) {
                ERR_print_errors_fp(stderr);
                return 1;
            }
        idle = (in_use() - a) / (size_t)n;
        tracking = 0;
        if (round == 1)
            print_sites(n);
        for (int i = 0; i < n; i++)
            SSL_free(conns[i]);
    }
    printf("%s: SSL_new alone %zu bytes; idle after a TLS 1.3 handshake and a request %zu bytes "
           "(heap in use per connection, %d connections)\n",
           OpenSSL_version(OPENSSL_VERSION), fresh, idle, n);
    return 0;
}
