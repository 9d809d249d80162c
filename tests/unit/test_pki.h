/* Self-signed certificates for the unit tests (test_certs, test_threads):
 * made in memory with OpenSSL, as PEM or as a certificate store entry. */
#ifndef PSPROXY_TEST_PKI_H
#define PSPROXY_TEST_PKI_H

#include "certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A self-signed P-256 certificate for CN, as PEM chain + key. */
static inline void make_pem(const char *cn, long serial, char **cert, size_t *clen, char **key,
                     size_t *klen)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, pk);
    X509_sign(x, pk, EVP_sha256());
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, pk, NULL, NULL, 0, NULL, NULL);
    char *p;
    *clen = (size_t)BIO_get_mem_data(cb, &p);
    *cert = malloc(*clen);
    memcpy(*cert, p, *clen);
    *klen = (size_t)BIO_get_mem_data(kb, &p);
    *key = malloc(*klen);
    memcpy(*key, p, *klen);
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static inline certs_entry_t *entry(const char *cn, long serial)
{
    char *c, *k, err[256];
    size_t cl, kl;
    make_pem(cn, serial, &c, &cl, &k, &kl);
    certs_entry_t *e = NULL;
    if (certs_entry_from_pem(c, cl, k, kl, cn, &e, err, sizeof(err)) != 0)
        fprintf(stderr, "  %s\n", err);
    free(c);
    free(k);
    return e;
}

#endif
