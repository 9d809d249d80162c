/* The challenge tables: a few entries at most, behind one mutex (a lookup
 * happens once per validation request, never on the proxy's hot path). */
#include "chal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define CHAL_MAX 64

struct http_entry {
    char *token;
    char *key_auth;
};

struct alpn_entry {
    char *name;
    X509 *cert;
    EVP_PKEY *key;
};

static uv_mutex_t lock;
static uv_once_t once = UV_ONCE_INIT;
static struct http_entry http[CHAL_MAX];
static struct alpn_entry alpn[CHAL_MAX];

static void init(void)
{
    if (uv_mutex_init(&lock) != 0)
        abort();
}

void chal_http_put(const char *token, const char *key_auth)
{
    uv_once(&once, init);
    chal_http_del(token);
    uv_mutex_lock(&lock);
    for (int i = 0; i < CHAL_MAX; i++) {
        if (http[i].token == NULL) {
            http[i].token = strdup(token);
            http[i].key_auth = strdup(key_auth);
            break;
        }
    }
    uv_mutex_unlock(&lock);
}

void chal_http_del(const char *token)
{
    uv_once(&once, init);
    uv_mutex_lock(&lock);
    for (int i = 0; i < CHAL_MAX; i++) {
        if (http[i].token != NULL && strcmp(http[i].token, token) == 0) {
            free(http[i].token);
            free(http[i].key_auth);
            http[i].token = http[i].key_auth = NULL;
        }
    }
    uv_mutex_unlock(&lock);
}

int chal_http_get(const char *token, size_t token_len, char *out, size_t cap)
{
    uv_once(&once, init);
    int rc = -1;
    uv_mutex_lock(&lock);
    for (int i = 0; i < CHAL_MAX && rc != 0; i++) {
        const char *t = http[i].token;
        if (t != NULL && strlen(t) == token_len && memcmp(t, token, token_len) == 0) {
            size_t n = strlen(http[i].key_auth);
            if (n < cap) {
                memcpy(out, http[i].key_auth, n + 1);
                rc = 0;
            }
        }
    }
    uv_mutex_unlock(&lock);
    return rc;
}

void chal_alpn_put(const char *name, X509 *cert, EVP_PKEY *key)
{
    uv_once(&once, init);
    chal_alpn_del(name);
    uv_mutex_lock(&lock);
    for (int i = 0; i < CHAL_MAX; i++) {
        if (alpn[i].name == NULL) {
            alpn[i].name = strdup(name);
            X509_up_ref(cert);
            EVP_PKEY_up_ref(key);
            alpn[i].cert = cert;
            alpn[i].key = key;
            break;
        }
    }
    uv_mutex_unlock(&lock);
}

void chal_alpn_del(const char *name)
{
    uv_once(&once, init);
    uv_mutex_lock(&lock);
    for (int i = 0; i < CHAL_MAX; i++) {
        if (alpn[i].name != NULL && strcasecmp(alpn[i].name, name) == 0) {
            free(alpn[i].name);
            X509_free(alpn[i].cert);
            EVP_PKEY_free(alpn[i].key);
            memset(&alpn[i], 0, sizeof(alpn[i]));
        }
    }
    uv_mutex_unlock(&lock);
}

int chal_alpn_get(const char *name, X509 **cert, EVP_PKEY **key)
{
    uv_once(&once, init);
    int rc = -1;
    uv_mutex_lock(&lock);
    for (int i = 0; i < CHAL_MAX && rc != 0; i++) {
        if (alpn[i].name != NULL && strcasecmp(alpn[i].name, name) == 0) {
            X509_up_ref(alpn[i].cert);
            EVP_PKEY_up_ref(alpn[i].key);
            *cert = alpn[i].cert;
            *key = alpn[i].key;
            rc = 0;
        }
    }
    uv_mutex_unlock(&lock);
    return rc;
}
