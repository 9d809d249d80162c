/* Certificate-side crypto for ACME: certificate keys, CSRs for finalize,
 * TLS-ALPN-01 challenge certificates, ARI CertIDs and key PEM. Pure
 * functions, no I/O, any thread. */
#ifndef PS_CSR_H
#define PS_CSR_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

/* ub-common-name (RFC 5280 A.1): a longer first name cannot be the CN. */
#define CSR_CN_MAX 64

/* A new P-256 certificate key, or NULL. Never reuse the account key. */
EVP_PKEY *csr_key_new(void);

/* A DER CSR (PKCS #10) for the N >= 1 NAMES, signed with KEY (SHA-256):
 * subject CN = NAMES[0] when it has at most CSR_CN_MAX characters, else an
 * empty subject; a subjectAltName with a dNSName for every name. Names are
 * ASCII host names (letters, digits, '-', '.', a leading "*." for a
 * wildcard), at most 253 characters; anything else is refused. Returns 0
 * and a malloc'd *DER of *LEN bytes; UV_EINVAL for a name refused, no
 * names or a NULL argument; UV_ENOMEM; UV_EIO when OpenSSL fails otherwise
 * (KEY cannot sign, say). */
int csr_make(EVP_PKEY *key, const char *const *names, size_t n, unsigned char **der, size_t *len);

/* The TLS-ALPN-01 certificate for NAME (RFC 8737 3): self-signed with a
 * fresh P-256 key, exactly one dNSName SAN (NAME), the critical extension
 * id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31) holding the DER OCTET STRING
 * SHA-256(KEY_AUTH), valid from now - 1 h to now + 7 d. Returns 0 and a
 * new *CERT and *KEY (the caller frees both); UV_EINVAL for a NAME refused
 * (a wildcard too) or a NULL argument; UV_ENOMEM when a part cannot be
 * made; UV_EIO when OpenSSL fails otherwise. */
int csr_alpn_challenge_cert(const char *name, const char *key_auth, X509 **cert, EVP_PKEY **key);

/* The ARI CertID of CERT (RFC 9773 4.1): base64url(AKI keyIdentifier) "."
 * base64url(serial number DER content octets, a leading 00 kept). Returns
 * a malloc'd string, or NULL if CERT has no AKI keyIdentifier. */
char *csr_ari_cert_id(X509 *cert);

/* KEY's private key as unencrypted PKCS #8 PEM text (NUL-terminated, *LEN
 * bytes without the NUL), or NULL. Secret: the caller wipes it with
 * OPENSSL_cleanse(pem, len) before free(). */
char *csr_key_to_pem(EVP_PKEY *key, size_t *len);

/* The private key in the LEN bytes of PEM text (PKCS #8, or the traditional
 * "EC PRIVATE KEY" form), or NULL. Encrypted keys are refused rather than
 * prompted for. The caller keeps and wipes PEM. */
EVP_PKEY *csr_key_from_pem(const char *pem, size_t len);

#endif
