/* Certificate-side crypto for ACME: keys, CSRs, TLS-ALPN-01 challenge
 * certificates, ARI CertIDs and key PEM. */
#include "csr.h"

#include <limits.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "certs.h"
#include "jws.h"

#define CSR_NAME_MAX 253 /* RFC 1035 2.3.4, in text form without the root dot */
#define CSR_LABEL_MAX 63
#define CSR_OID_ACME_IDENTIFIER "1.3.6.1.5.5.7.1.31" /* id-pe-acmeIdentifier, RFC 8737 6.1 */
#define CSR_ALPN_NOT_BEFORE (-3600L)                 /* an hour back, for clock skew */
#define CSR_ALPN_NOT_AFTER (7L * 86400)

EVP_PKEY *csr_key_new(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* NAME is an ASCII host name: labels of letters, digits and '-', 1..63
 * characters, joined by '.', with an optional leading "*." when WILDCARD.
 * Anything else (spaces, commas, UTF-8, empty labels) is refused here
 * rather than sent to the CA inside an IA5String. */
static int valid_name(const char *name, int wildcard)
{
    size_t label = 0, len;

    if (name == NULL)
        return 0;
    len = strlen(name);
    if (len == 0 || len > CSR_NAME_MAX)
        return 0;
    if (wildcard && name[0] == '*' && name[1] == '.')
        name += 2;
    for (; *name != '\0'; name++) {
        unsigned char c = (unsigned char)*name;
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-') {
            if (++label > CSR_LABEL_MAX)
                return 0;
        } else {
            return 0;
        }
    }
    return label > 0; /* no trailing dot, no bare "*." */
}

/* A GENERAL_NAMES with one dNSName per name, or NULL. */
static GENERAL_NAMES *dns_names(const char *const *names, size_t n)
{
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    GENERAL_NAME *gn = NULL;
    ASN1_IA5STRING *ia5 = NULL;

    if (gens == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        gn = GENERAL_NAME_new();
        ia5 = ASN1_IA5STRING_new();
        if (gn == NULL || ia5 == NULL || ASN1_STRING_set(ia5, names[i], -1) != 1)
            goto fail;
        GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
        ia5 = NULL;
        if (sk_GENERAL_NAME_push(gens, gn) <= 0)
            goto fail;
        gn = NULL;
    }
    return gens;

fail:
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(gens);
    return NULL;
}

/* Sets SUBJECT to CN=NAME when NAME fits ub-common-name; a longer name
 * leaves it empty (the SAN carries every name anyway). Returns 1 if a CN
 * was set, 0 if not, -1 on error. */
static int set_cn(X509_NAME *subject, const char *name)
{
    if (strlen(name) > CSR_CN_MAX)
        return 0;
    if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1,
                                   0) != 1)
        return -1;
    return 1;
}

int csr_make(EVP_PKEY *key, const char *const *names, size_t n, unsigned char **der, size_t *len)
{
    STACK_OF(X509_EXTENSION) *exts = NULL;
    GENERAL_NAMES *sans = NULL;
    X509_REQ *req = NULL;
    unsigned char *tmp = NULL, *out = NULL;
    int tmplen, rc = UV_EINVAL;

    if (key == NULL || names == NULL || n == 0 || n > INT_MAX || der == NULL || len == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (!valid_name(names[i], 1))
            goto fail;
    rc = UV_ENOMEM;
    req = X509_REQ_new();
    sans = dns_names(names, n);
    if (req == NULL || sans == NULL)
        goto fail;
    rc = UV_EIO; /* OpenSSL fails from here on, or KEY cannot sign */
    if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
        set_cn(X509_REQ_get_subject_name(req), names[0]) < 0)
        goto fail;
    /* the CA issues for the SAN names (RFC 8555 7.4); the CN alone is not enough */
    if (X509V3_add1_i2d(&exts, NID_subject_alt_name, sans, 0, X509V3_ADD_DEFAULT) != 1)
        goto fail;
    if (X509_REQ_add_extensions(req, exts) != 1 || X509_REQ_set_pubkey(req, key) != 1 ||
        X509_REQ_sign(req, key, EVP_sha256()) <= 0)
        goto fail;
    tmplen = i2d_X509_REQ(req, &tmp);
    if (tmplen <= 0)
        goto fail;
    /* callers free() it; OPENSSL_malloc memory may come from another allocator */
    out = malloc((size_t)tmplen);
    if (out == NULL) {
        rc = UV_ENOMEM;
        goto fail;
    }
    memcpy(out, tmp, (size_t)tmplen);
    *der = out;
    *len = (size_t)tmplen;
    rc = 0;

fail:
    OPENSSL_free(tmp);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(sans);
    X509_REQ_free(req);
    return rc;
}

/* The critical acmeIdentifier extension: its extnValue is the DER of an
 * OCTET STRING holding SHA-256(KEY_AUTH) (RFC 8737 3), so the bytes are
 * 04 20 || hash. */
static X509_EXTENSION *acme_identifier(const char *key_auth)
{
    unsigned char md[EVP_MAX_MD_SIZE], *inner = NULL;
    unsigned int mdlen = 0;
    ASN1_OCTET_STRING *hash = NULL, *value = NULL;
    ASN1_OBJECT *oid = NULL;
    X509_EXTENSION *ext = NULL;
    int innerlen;

    if (EVP_Digest(key_auth, strlen(key_auth), md, &mdlen, EVP_sha256(), NULL) != 1)
        goto fail;
    hash = ASN1_OCTET_STRING_new();
    if (hash == NULL || ASN1_OCTET_STRING_set(hash, md, (int)mdlen) != 1)
        goto fail;
    innerlen = i2d_ASN1_OCTET_STRING(hash, &inner);
    if (innerlen <= 0)
        goto fail;
    value = ASN1_OCTET_STRING_new();
    oid = OBJ_txt2obj(CSR_OID_ACME_IDENTIFIER, 1);
    if (value == NULL || oid == NULL || ASN1_OCTET_STRING_set(value, inner, innerlen) != 1)
        goto fail;
    ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value);

fail:
    OPENSSL_free(inner);
    ASN1_OCTET_STRING_free(hash);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(oid);
    return ext;
}

int csr_alpn_challenge_cert(const char *name, const char *key_auth, X509 **cert, EVP_PKEY **key)
{
    X509_EXTENSION *ident = NULL;
    GENERAL_NAMES *san = NULL;
    BIGNUM *serial = NULL;
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    int has_cn, rc = UV_EINVAL;

    /* RFC 8737 3: no wildcards; the validator dials the name itself */
    if (!valid_name(name, 0) || key_auth == NULL || cert == NULL || key == NULL)
        goto fail;
    rc = UV_ENOMEM;
    ident = acme_identifier(key_auth);
    san = dns_names(&name, 1);
    pk = csr_key_new();
    x = X509_new();
    serial = BN_new();
    if (ident == NULL || san == NULL || pk == NULL || x == NULL || serial == NULL)
        goto fail;
    rc = UV_EIO; /* OpenSSL fails from here on */
    if (X509_set_version(x, X509_VERSION_3) != 1 ||
        BN_rand(serial, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY) != 1 ||
        BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) == NULL ||
        X509_gmtime_adj(X509_getm_notBefore(x), CSR_ALPN_NOT_BEFORE) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), CSR_ALPN_NOT_AFTER) == NULL)
        goto fail;
    has_cn = set_cn(X509_get_subject_name(x), name);
    if (has_cn < 0 || X509_set_issuer_name(x, X509_get_subject_name(x)) != 1 ||
        X509_set_pubkey(x, pk) != 1)
        goto fail;
    /* RFC 5280 4.2.1.6: with an empty subject the SAN must be critical */
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, san, !has_cn, X509V3_ADD_DEFAULT) != 1 ||
        X509_add_ext(x, ident, -1) != 1 || X509_sign(x, pk, EVP_sha256()) <= 0)
        goto fail;
    *cert = x;
    *key = pk;
    x = NULL;
    pk = NULL;
    rc = 0;

fail:
    X509_EXTENSION_free(ident);
    GENERAL_NAMES_free(san);
    BN_free(serial);
    EVP_PKEY_free(pk);
    X509_free(x);
    return rc;
}

char *csr_ari_cert_id(X509 *cert)
{
    AUTHORITY_KEYID *aki = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    char *kid = NULL, *sn = NULL, *out = NULL;
    long clen;
    int derlen, tag, cls;

    if (cert == NULL)
        goto fail;
    aki = X509_get_ext_d2i(cert, NID_authority_key_identifier, NULL, NULL);
    if (aki == NULL || aki->keyid == NULL)
        goto fail;
    /* RFC 9773 4.1: the serial's DER content octets, so a positive serial
     * with its top bit set keeps the leading 00 that OpenSSL's magnitude
     * form drops */
    derlen = i2d_ASN1_INTEGER(X509_get0_serialNumber(cert), &der);
    if (derlen <= 0)
        goto fail;
    p = der;
    if ((ASN1_get_object(&p, &clen, &tag, &cls, derlen) & 0x80) != 0 || tag != V_ASN1_INTEGER ||
        cls != V_ASN1_UNIVERSAL || clen <= 0 || p + clen != der + derlen)
        goto fail;
    kid = jws_b64url(ASN1_STRING_get0_data(aki->keyid), (size_t)ASN1_STRING_length(aki->keyid));
    sn = jws_b64url(p, (size_t)clen);
    if (kid == NULL || sn == NULL || *kid == '\0')
        goto fail;
    if (asprintf(&out, "%s.%s", kid, sn) < 0)
        out = NULL;

fail:
    AUTHORITY_KEYID_free(aki);
    OPENSSL_free(der);
    free(kid);
    free(sn);
    return out;
}

char *csr_key_to_pem(EVP_PKEY *key, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out = NULL;
    long n;

    if (bio == NULL || key == NULL || len == NULL ||
        PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)
        goto fail;
    n = BIO_get_mem_data(bio, &data);
    if (n <= 0)
        goto fail;
    out = malloc((size_t)n + 1);
    if (out == NULL)
        goto fail;
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;

fail:
    BIO_free(bio); /* a memory BIO wipes its buffer as it frees it (BUF_MEM_free) */
    return out;
}

EVP_PKEY *csr_key_from_pem(const char *pem, size_t len)
{
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;

    if (pem == NULL || len == 0 || len > INT_MAX)
        goto fail;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        goto fail;
    key = PEM_read_bio_PrivateKey(bio, NULL, certs_no_passphrase, NULL);

fail:
    BIO_free(bio);
    return key;
}
