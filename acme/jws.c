/* JSON Web Signatures for ACME: base64url, the account key's JWK and
 * thumbprint, key authorizations and flattened ES256 request bodies. */
#include "jws.h"

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define JWS_P256_BYTES 32 /* field and order size of P-256 */

static const char jws_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *jws_b64url(const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t i, n;
    char *out, *o;

    if (len > (SIZE_MAX - 4) / 4 * 3)
        return NULL; /* 4/3 growth would overflow */
    n = len / 3 * 4 + (len % 3 != 0 ? len % 3 + 1 : 0);
    out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    o = out;
    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = jws_alphabet[v >> 18 & 63];
        *o++ = jws_alphabet[v >> 12 & 63];
        *o++ = jws_alphabet[v >> 6 & 63];
        *o++ = jws_alphabet[v & 63];
    }
    if (len - i == 1) {
        *o++ = jws_alphabet[p[i] >> 2];
        *o++ = jws_alphabet[(p[i] & 3) << 4];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 8 | p[i + 1];
        *o++ = jws_alphabet[v >> 10 & 63];
        *o++ = jws_alphabet[v >> 4 & 63];
        *o++ = jws_alphabet[(v & 15) << 2];
    }
    *o = '\0';
    return out;
}

/* The 6-bit value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int jws_b64url_decode(const char *s, unsigned char **out, size_t *len)
{
    unsigned char *buf = NULL;
    uint32_t acc = 0;
    size_t i, n, o = 0;
    int bits = 0, rc = UV_EINVAL;

    if (s == NULL || out == NULL || len == NULL)
        goto fail;
    n = strlen(s);
    if (n % 4 == 1)
        goto fail; /* 6 bits cannot make a byte */
    buf = malloc(n / 4 * 3 + 3);
    if (buf == NULL) {
        rc = UV_ENOMEM;
        goto fail;
    }
    for (i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            goto fail;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        goto fail; /* unused low bits set: a second spelling of the same bytes */
    *out = buf;
    *len = o;
    return 0;

fail:
    free(buf);
    return rc;
}

int jws_is_b64url(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (; *s != '\0'; s++)
        if (b64url_value((unsigned char)*s) < 0)
            return 0;
    return 1;
}

EVP_PKEY *jws_key_new(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* ES256 and the JWK format here are defined for P-256 only (RFC 7518 3.4). */
static int is_p256(EVP_PKEY *key)
{
    char group[64];
    int nid;

    if (key == NULL || !EVP_PKEY_is_a(key, "EC") ||
        EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) != 1)
        return 0;
    nid = OBJ_sn2nid(group);
    if (nid == NID_undef)
        nid = EC_curve_nist2nid(group);
    return nid == NID_X9_62_prime256v1;
}

char *jws_jwk(EVP_PKEY *key)
{
    unsigned char bx[JWS_P256_BYTES], by[JWS_P256_BYTES];
    BIGNUM *x = NULL, *y = NULL;
    char *ex = NULL, *ey = NULL, *out = NULL;

    if (!is_p256(key) || EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
        EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1)
        goto fail;
    /* RFC 7518 6.2.1.2: full-length coordinates, leading zeros kept */
    if (BN_bn2binpad(x, bx, sizeof(bx)) != sizeof(bx) ||
        BN_bn2binpad(y, by, sizeof(by)) != sizeof(by))
        goto fail;
    ex = jws_b64url(bx, sizeof(bx));
    ey = jws_b64url(by, sizeof(by));
    if (ex == NULL || ey == NULL)
        goto fail;
    /* RFC 7638 3.2: required members only, sorted, no whitespace; the values
     * are base64url, so nothing needs escaping */
    if (asprintf(&out, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", ex, ey) < 0)
        out = NULL;

fail:
    BN_free(x);
    BN_free(y);
    free(ex);
    free(ey);
    return out;
}

char *jws_thumbprint(EVP_PKEY *key)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char *jwk = jws_jwk(key), *out = NULL;

    if (jwk == NULL || EVP_Digest(jwk, strlen(jwk), md, &mdlen, EVP_sha256(), NULL) != 1)
        goto fail;
    out = jws_b64url(md, mdlen);

fail:
    free(jwk);
    return out;
}

char *jws_key_authorization(EVP_PKEY *key, const char *token)
{
    char *tp = NULL, *out = NULL;

    if (!jws_is_b64url(token))
        goto fail;
    tp = jws_thumbprint(key);
    if (tp == NULL)
        goto fail;
    if (asprintf(&out, "%s.%s", token, tp) < 0)
        out = NULL;

fail:
    free(tp);
    return out;
}

/* Signs INPUT with KEY (ECDSA P-256, SHA-256) into RAW = R || S, each
 * left-padded to 32 bytes (RFC 7518 3.4); OpenSSL gives DER. 0, or -1
 * when OpenSSL cannot sign (one meaning: jws_sign gives NULL). */
static int es256_sign(EVP_PKEY *key, const char *input, unsigned char raw[2 * JWS_P256_BYTES])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *der = NULL;
    const unsigned char *p;
    const BIGNUM *r, *s;
    ECDSA_SIG *sig = NULL;
    size_t derlen = 0, inlen = strlen(input);
    int rc = -1;

    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &derlen, (const unsigned char *)input, inlen) != 1)
        goto fail;
    der = OPENSSL_malloc(derlen);
    if (der == NULL || EVP_DigestSign(ctx, der, &derlen, (const unsigned char *)input, inlen) != 1)
        goto fail;
    p = der;
    sig = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    if (sig == NULL || p != der + derlen)
        goto fail;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, JWS_P256_BYTES) != JWS_P256_BYTES ||
        BN_bn2binpad(s, raw + JWS_P256_BYTES, JWS_P256_BYTES) != JWS_P256_BYTES)
        goto fail;
    rc = 0;

fail:
    ECDSA_SIG_free(sig);
    OPENSSL_free(der);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* The protected header as JSON text (cJSON escapes the CA's strings);
 * free with cJSON_free. */
static char *protected_header(EVP_PKEY *key, const char *kid, const char *nonce, const char *url)
{
    cJSON *h = cJSON_CreateObject(), *jwk = NULL;
    char *jwk_text = NULL, *out = NULL;

    if (h == NULL || cJSON_AddStringToObject(h, "alg", "ES256") == NULL)
        goto fail;
    if (kid == NULL) {
        jwk_text = jws_jwk(key);
        jwk = jwk_text != NULL ? cJSON_Parse(jwk_text) : NULL;
        if (jwk == NULL || !cJSON_AddItemToObject(h, "jwk", jwk))
            goto fail;
        jwk = NULL; /* h owns it now */
    } else if (cJSON_AddStringToObject(h, "kid", kid) == NULL) {
        goto fail;
    }
    if (cJSON_AddStringToObject(h, "nonce", nonce) == NULL ||
        cJSON_AddStringToObject(h, "url", url) == NULL)
        goto fail;
    out = cJSON_PrintUnformatted(h);

fail:
    cJSON_Delete(jwk);
    cJSON_Delete(h);
    free(jwk_text);
    return out;
}

char *jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
               const char *payload)
{
    unsigned char raw[2 * JWS_P256_BYTES];
    char *header = NULL, *prot = NULL, *body = NULL, *input = NULL, *sig = NULL, *out = NULL;

    if (!is_p256(key) || nonce == NULL || url == NULL)
        goto fail;
    if (payload == NULL)
        payload = ""; /* POST-as-GET, RFC 8555 6.3 */
    header = protected_header(key, kid, nonce, url);
    if (header == NULL)
        goto fail;
    prot = jws_b64url(header, strlen(header));
    body = jws_b64url(payload, strlen(payload));
    if (prot == NULL || body == NULL)
        goto fail;
    /* RFC 7515 5.1: the signing input is ASCII(protected "." payload) */
    if (asprintf(&input, "%s.%s", prot, body) < 0) {
        input = NULL;
        goto fail;
    }
    if (es256_sign(key, input, raw) != 0)
        goto fail;
    sig = jws_b64url(raw, sizeof(raw));
    if (sig == NULL)
        goto fail;
    /* every value is base64url: no escaping needed */
    if (asprintf(&out, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", prot, body,
                 sig) < 0)
        out = NULL;

fail:
    cJSON_free(header);
    free(prot);
    free(body);
    free(input);
    free(sig);
    return out;
}
