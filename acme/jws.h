/* JSON Web Signatures for ACME (RFC 7515, RFC 8555 6.2): base64url, the
 * P-256 account key as a JWK and its thumbprint, key authorizations, and
 * flattened ES256 request bodies. Pure functions, no I/O, any thread. */
#ifndef PS_JWS_H
#define PS_JWS_H

#include <openssl/evp.h>
#include <stddef.h>

/* base64url without padding (RFC 7515 2). Returns a malloc'd NUL-terminated
 * string, or NULL if memory runs out. */
char *jws_b64url(const void *data, size_t len);

/* Decodes base64url without padding. Rejects any character outside
 * [A-Za-z0-9_-] (so '+', '/', '=' and whitespace), a length of 4k+1, and
 * non-zero unused bits in the last character, so each byte string has
 * exactly one accepted spelling. Returns 0 and a malloc'd *OUT (never NULL,
 * even for "") of *LEN bytes; UV_EINVAL when S is not such a string (or an
 * argument is NULL), UV_ENOMEM. */
int jws_b64url_decode(const char *s, unsigned char **out, size_t *len);

/* 1 if S is a non-empty base64url string (only [A-Za-z0-9_-]), else 0: the
 * check RFC 8555 asks of challenge tokens (8.1) and nonces (6.5.1), which
 * reach URLs, file names and JSON. */
int jws_is_b64url(const char *s);

/* A new P-256 key (the ACME account key), or NULL. The caller frees it with
 * EVP_PKEY_free, which wipes the private part. */
EVP_PKEY *jws_key_new(void);

/* The canonical JWK of a P-256 public key (RFC 7638 3.2: members sorted, no
 * whitespace, 32-byte coordinates):
 * {"crv":"P-256","kty":"EC","x":"..","y":".."}. KEY may be public only.
 * Returns a malloc'd string, or NULL if KEY is not P-256. */
char *jws_jwk(EVP_PKEY *key);

/* base64url(SHA-256(jws_jwk(KEY))) (RFC 7638). malloc'd or NULL. */
char *jws_thumbprint(EVP_PKEY *key);

/* TOKEN "." thumbprint (RFC 8555 8.1). Returns NULL if TOKEN is empty or has
 * characters outside base64url: it comes from the CA and ends up in URLs
 * and response bodies. malloc'd. */
char *jws_key_authorization(EVP_PKEY *key, const char *token);

/* A flattened JWS (RFC 8555 6.2) as JSON text {"protected","payload",
 * "signature"}. The protected header is {"alg":"ES256","jwk":{..},
 * "nonce":NONCE,"url":URL} when KID is NULL (newAccount, revokeCert by
 * certificate key), else {"alg":"ES256","kid":KID,"nonce":..,"url":..}.
 * PAYLOAD is the JSON text to sign, or NULL for POST-as-GET (empty payload
 * ""). KEY is a P-256 private key; the signature is raw R||S, 64 bytes
 * (RFC 7518 3.4). Returns a malloc'd string, or NULL. */
char *jws_sign(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
               const char *payload);

#endif
