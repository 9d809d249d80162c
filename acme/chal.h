/* Challenge responders' tables: the ACME client (control thread) publishes
 * what a pending challenge must answer; the HTTP-01 handler on http_port and
 * the TLS-ALPN-01 handshake (worker threads) look it up. */
#ifndef PS_CHAL_H
#define PS_CHAL_H

#include <openssl/ssl.h>
#include <stddef.h>

/* HTTP-01: GET /.well-known/acme-challenge/TOKEN answers KEY_AUTH. */
void chal_http_put(const char *token, const char *key_auth);
void chal_http_del(const char *token);
/* Copies the key authorization for TOKEN into OUT. 0, or -1 when none. */
int chal_http_get(const char *token, size_t token_len, char *out, size_t cap);

/* TLS-ALPN-01: a handshake for NAME with ALPN acme-tls/1 gets CERT/KEY. */
void chal_alpn_put(const char *name, X509 *cert, EVP_PKEY *key);
void chal_alpn_del(const char *name);
/* New references to the certificate and key for NAME. 0, or -1. */
int chal_alpn_get(const char *name, X509 **cert, EVP_PKEY **key);

#endif
