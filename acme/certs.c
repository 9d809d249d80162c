/* The certificate store: a small table of names to refcounted entries
 * behind a read-write lock (handshakes read, reloads and renewals write). */
#include "certs.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct slot {
    char *name; /* lower-case */
    certs_entry_t *entry;
};

struct certs {
    uv_rwlock_t lock;
    struct slot *slots;
    size_t n, cap;
};

certs_t *certs_new(void)
{
    certs_t *s = calloc(1, sizeof(*s));
    if (s == NULL || uv_rwlock_init(&s->lock) != 0)
        abort();
    return s;
}

void certs_free(certs_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->slots[i].name);
        certs_entry_unref(s->slots[i].entry);
    }
    free(s->slots);
    uv_rwlock_destroy(&s->lock);
    free(s);
}

certs_entry_t *certs_entry_ref(certs_entry_t *e)
{
    atomic_fetch_add(&e->refcnt, 1);
    return e;
}

void certs_entry_unref(certs_entry_t *e)
{
    if (e == NULL || atomic_fetch_sub(&e->refcnt, 1) != 1)
        return;
    X509_free(e->leaf);
    sk_X509_pop_free(e->chain, X509_free);
    EVP_PKEY_free(e->key); /* OpenSSL cleanses key material as it frees it */
    free(e->source);
    free(e);
}

/* The last OpenSSL error as text, for messages. */
static const char *ssl_reason(void)
{
    unsigned long code = ERR_peek_last_error();
    const char *r = code != 0 ? ERR_reason_error_string(code) : NULL;
    return r != NULL ? r : "unknown error";
}

int certs_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    return -1;
}

static int entry_from_bios(BIO *chain_bio, BIO *key_bio, const char *source,
                           certs_entry_t **out, char *err, size_t errlen)
{
    certs_entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        abort();
    atomic_init(&e->refcnt, 1);
    e->source = strdup(source);
    e->chain = sk_X509_new_null();
    ERR_clear_error();
    e->leaf = PEM_read_bio_X509(chain_bio, NULL, certs_no_passphrase, NULL);
    if (e->leaf == NULL) {
        snprintf(err, errlen, "%s: no PEM certificate: %s", source, ssl_reason());
        goto fail;
    }
    X509 *ca;
    while ((ca = PEM_read_bio_X509(chain_bio, NULL, certs_no_passphrase, NULL)) != NULL)
        sk_X509_push(e->chain, ca);
    ERR_clear_error(); /* the end of the PEM stream reads as an error */
    e->key = PEM_read_bio_PrivateKey(key_bio, NULL, certs_no_passphrase, NULL);
    if (e->key == NULL) {
        snprintf(err, errlen, "%s: no PEM private key: %s", source, ssl_reason());
        goto fail;
    }
    if (X509_check_private_key(e->leaf, e->key) != 1) {
        snprintf(err, errlen, "%s: the private key does not match the certificate", source);
        goto fail;
    }
    const ASN1_TIME *na = X509_get0_notAfter(e->leaf);
    struct tm tm;
    if (na != NULL && ASN1_TIME_to_tm(na, &tm) == 1)
        e->not_after = timegm(&tm);
    *out = e;
    return 0;
fail:
    certs_entry_unref(e);
    ERR_clear_error();
    return UV_EINVAL;
}

int certs_entry_load(const char *cert_file, const char *key_file, certs_entry_t **out,
                     char *err, size_t errlen)
{
    int rc = UV_EIO;
    errno = 0;
    BIO *cb = BIO_new_file(cert_file, "r");
    int cert_errno = errno;
    BIO *kb = cb != NULL ? BIO_new_file(key_file, "r") : NULL;
    if (cb == NULL || kb == NULL) {
        rc = cb == NULL ? -cert_errno : -errno; /* fopen's: ENOENT, EACCES ... */
        if (rc == 0)
            rc = UV_EIO;
        snprintf(err, errlen, "cannot read %s: %s", cb == NULL ? cert_file : key_file,
                 ssl_reason());
        ERR_clear_error();
        goto out;
    }
    rc = entry_from_bios(cb, kb, cert_file, out, err, errlen);
out:
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

int certs_entry_from_pem(const char *chain_pem, size_t chain_len, const char *key_pem,
                         size_t key_len, const char *source, certs_entry_t **out, char *err,
                         size_t errlen)
{
    BIO *cb = BIO_new_mem_buf(chain_pem, (int)chain_len);
    BIO *kb = BIO_new_mem_buf(key_pem, (int)key_len);
    int rc = entry_from_bios(cb, kb, source, out, err, errlen);
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    for (char *p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

void certs_put(certs_t *s, const char *name, certs_entry_t *e)
{
    char *key = lower_dup(name);
    certs_entry_ref(e);
    certs_entry_t *old = NULL;
    uv_rwlock_wrlock(&s->lock);
    size_t i = 0;
    while (i < s->n && strcmp(s->slots[i].name, key) != 0)
        i++;
    if (i == s->n) {
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 8;
            s->slots = realloc(s->slots, s->cap * sizeof(*s->slots));
            if (s->slots == NULL)
                abort();
        }
        s->slots[s->n].name = key;
        s->slots[s->n].entry = NULL;
        s->n++;
        key = NULL;
    }
    old = s->slots[i].entry;
    s->slots[i].entry = e;
    uv_rwlock_wrunlock(&s->lock);
    free(key);
    certs_entry_unref(old); /* outside the lock: freeing may take a while */
}

static certs_entry_t *lookup(certs_t *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->slots[i].name, key) == 0)
            return certs_entry_ref(s->slots[i].entry);
    return NULL;
}

void certs_each(certs_t *s, void (*fn)(void *arg, const char *name, const certs_entry_t *e),
                void *arg)
{
    uv_rwlock_rdlock(&s->lock);
    for (size_t i = 0; i < s->n; i++)
        fn(arg, s->slots[i].name, s->slots[i].entry);
    uv_rwlock_rdunlock(&s->lock);
}

certs_entry_t *certs_get(certs_t *s, const char *name)
{
    char key[256];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof(key) - 2)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        key[i] = (char)tolower((unsigned char)name[i]);
    uv_rwlock_rdlock(&s->lock);
    certs_entry_t *e = lookup(s, key);
    const char *dot = strchr(key, '.');
    if (e == NULL && dot != NULL && dot != key) {
        /* "*.example.com" covers one label: a.example.com, not a.b.example.com */
        char wild[258];
        snprintf(wild, sizeof(wild), "*%s", dot);
        e = lookup(s, wild);
    }
    if (e == NULL)
        e = lookup(s, "*"); /* a catch-all HTTPS site serves any name */
    uv_rwlock_rdunlock(&s->lock);
    return e;
}
