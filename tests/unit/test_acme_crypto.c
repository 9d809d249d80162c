/* Known-answer tests for the ACME crypto building blocks (jws_, csr_): the
 * vectors are those of shared/acme-vectors/VECTORS.md, embedded here so the
 * test never depends on where that directory is. */
#include "jws.h"

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "csr.h"
#include "test.h"

/* uacme-account-pub.pem: accepted by Pebble 2.4.0 */
static const char account_pub_pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcYqb2pEdtQXLnrRuKecwLOZ1Imrp\n"
    "RvdOy7QK0+WzJPYZK5rLMso9RBibYsbsKOndclIYU9c9mwiKuMKOGXgCjw==\n"
    "-----END PUBLIC KEY-----\n";

static const char vector_jwk[] =
    "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"cYqb2pEdtQXLnrRuKecwLOZ1ImrpRvdOy7QK0-WzJPY\","
    "\"y\":\"GSuayzLKPUQYm2LG7Cjp3XJSGFPXPZsIirjCjhl4Ao8\"}";
static const char vector_thumbprint[] = "2sZ6wL6AbcjMcfve7IjQcgeeNBLYWq7kv2J7NJspfMY";
static const char vector_token[] = "ndJDMu9RSxUx7vfqcKphPn2L9bRwi9f1K_t-ItRxqEg";
static const char vector_key_auth[] = "ndJDMu9RSxUx7vfqcKphPn2L9bRwi9f1K_t-ItRxqEg."
                                      "2sZ6wL6AbcjMcfve7IjQcgeeNBLYWq7kv2J7NJspfMY";

/* RFC 8737 acmeIdentifier extnValue for vector_key_auth: 04 20 || SHA-256 */
static const unsigned char vector_acme_identifier[34] = {
    0x04, 0x20, 0x67, 0x00, 0x06, 0x14, 0x6d, 0x3c, 0x35, 0x5f, 0x71, 0xd2,
    0xeb, 0xe8, 0x2c, 0x2e, 0xee, 0x47, 0xde, 0x22, 0x14, 0x63, 0x2f, 0x3b,
    0x33, 0xda, 0x49, 0xb3, 0xa5, 0x14, 0x6a, 0xb2, 0x36, 0xc1,
};

/* rfc9773-appendixA.pem: the RFC 9773 appendix A certificate */
static const char rfc9773_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBQzCB66ADAgECAgUAh2VDITAKBggqhkjOPQQDAjAVMRMwEQYDVQQDEwpFeGFt\n"
    "cGxlIENBMCIYDzAwMDEwMTAxMDAwMDAwWhgPMDAwMTAxMDEwMDAwMDBaMBYxFDAS\n"
    "BgNVBAMTC2V4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeBZu\n"
    "7cbpAYNXZLbbh8rNIzuOoqOOtmxA1v7cRm//AwyMwWxyHz4zfwmBhcSrf47NUAFf\n"
    "qzLQ2PPQxdTXREYEnKMjMCEwHwYDVR0jBBgwFoAUaYhba4dGQEHhs3uEe6CuLN4B\n"
    "yNQwCgYIKoZIzj0EAwIDRwAwRAIge09+S5TZAlw5tgtiVvuERV6cT4mfutXIlwTb\n"
    "+FYN/8oCIClDsqBklhB9KAelFiYt9+6FDj3z4KGVelYM5MdsO3pK\n"
    "-----END CERTIFICATE-----\n";

/* pebble-issued-leaf.pem: a leaf issued by Pebble 2.4.0 */
static const char pebble_leaf_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICnTCCAYWgAwIBAgIHQlorQYDcDDANBgkqhkiG9w0BAQsFADAoMSYwJAYDVQQD\n"
    "Ex1QZWJibGUgSW50ZXJtZWRpYXRlIENBIDdmNTc5ZjAeFw0yNjExMjQyMjE2MjJa\n"
    "Fw0yNzAyMjIyMjE2MjFaMB4xHDAaBgNVBAMTE2FwaS5waG90b3Nwb3RzLmxpdmUw\n"
    "WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARQ1HxuNUiL+2FjW71ZgM8Xaf5QUd2l\n"
    "RMh3Qoi8k/5mCE9cAT7sXrUCc04c9iWtkl8hpUZ+ZBB9mzrzFnyoXB8Uo4GgMIGd\n"
    "MA4GA1UdDwEB/wQEAwIFoDAdBgNVHSUEFjAUBggrBgEFBQcDAQYIKwYBBQUHAwIw\n"
    "DAYDVR0TAQH/BAIwADAdBgNVHQ4EFgQUXsPZTedT7sFU1Zk3o6Beb5XXQNEwHwYD\n"
    "VR0jBBgwFoAUc1OqwkuKNWoPxtVbAg+XrQkA5wYwHgYDVR0RBBcwFYITYXBpLnBo\n"
    "b3Rvc3BvdHMubGl2ZTANBgkqhkiG9w0BAQsFAAOCAQEARlGR4MPjLIUH9pYlla1S\n"
    "80z4ZfFIQ7Av5n0kYtTfmZTCJv92kokk12IqJW1ucMOc8kdv3qVP3/u5plUzBIWy\n"
    "AZqAfSgipS+/EtnTLOTZ/p+hRnWqhCXhcBnFbeWU738vwCBlA6CAmVUTDvhwzbpx\n"
    "Q9c7lv+Vy0vANvRI8WCS/EOh6Ua17pbUp5+bw6rskeFldgMmxGvQAYZiaPt+7k2T\n"
    "iHiu0+K/qX02GvL2twxcIatplwnwu8aG6Ai93BejFyuir1wo+X+2Ah1GqHo5pmp7\n"
    "obS3fmvE5nRSiLPs1V8xYhIrIByBrTDzXp7Fbvin+Pkgz5yNtXmh5kEdH5z+TwlG\n"
    "PQ==\n"
    "-----END CERTIFICATE-----\n";

static EVP_PKEY *account_pub(void)
{
    BIO *b = BIO_new_mem_buf(account_pub_pem, -1);
    EVP_PKEY *k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    return k;
}

static X509 *cert_from_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

/* base64url text to a NUL-terminated string, or NULL. */
static char *b64url_text(const char *s)
{
    unsigned char *d = NULL;
    size_t n = 0;
    if (s == NULL || jws_b64url_decode(s, &d, &n) != 0)
        return NULL;
    char *t = malloc(n + 1);
    memcpy(t, d, n);
    t[n] = '\0';
    free(d);
    return t;
}

static const char *json_str(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Verifies a raw R||S ES256 signature over INPUT the way a CA does: back to
 * DER, then OpenSSL. 1 if it verifies. */
static int es256_verify(EVP_PKEY *pub, const char *input, const unsigned char *raw, size_t len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    unsigned char *der = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = 0, derlen;

    if (len != 64)
        goto out;
    ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    derlen = i2d_ECDSA_SIG(sig, &der);
    if (derlen <= 0 || EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pub) != 1)
        goto out;
    ok = EVP_DigestVerify(ctx, der, (size_t)derlen, (const unsigned char *)input, strlen(input));
    ok = ok == 1;
out:
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* The parts of a flattened JWS, decoded. */
struct jws_parts {
    cJSON *outer, *header;
    char *payload;
    unsigned char *sig;
    size_t siglen;
    int verified;
};

static void jws_parts_dispose(struct jws_parts *p)
{
    cJSON_Delete(p->outer);
    cJSON_Delete(p->header);
    free(p->payload);
    free(p->sig);
}

/* Parses JWS text as a CA would and verifies it with PUB. */
static int jws_parse(const char *text, EVP_PKEY *pub, struct jws_parts *p)
{
    memset(p, 0, sizeof(*p));
    if (text == NULL || (p->outer = cJSON_Parse(text)) == NULL)
        return -1;
    const char *prot = json_str(p->outer, "protected"), *body = json_str(p->outer, "payload");
    const char *sig = json_str(p->outer, "signature");
    if (cJSON_GetArraySize(p->outer) != 3 || prot == NULL || body == NULL || sig == NULL)
        return -1;
    char *htext = b64url_text(prot);
    p->header = htext != NULL ? cJSON_Parse(htext) : NULL;
    free(htext);
    p->payload = b64url_text(body);
    if (p->header == NULL || p->payload == NULL || jws_b64url_decode(sig, &p->sig, &p->siglen))
        return -1;
    size_t n = strlen(prot) + 1 + strlen(body) + 1;
    char *input = malloc(n);
    snprintf(input, n, "%s.%s", prot, body);
    p->verified = es256_verify(pub, input, p->sig, p->siglen);
    free(input);
    return 0;
}

/* The public half of KEY, as a CA sees it. */
static EVP_PKEY *public_half(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    const unsigned char *p = der;
    EVP_PKEY *pub = n > 0 ? d2i_PUBKEY(NULL, &p, n) : NULL;
    OPENSSL_free(der);
    return pub;
}

TEST(b64url_encodes_rfc4648_vectors_without_padding)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *s = jws_b64url(plain[i], strlen(plain[i]));
        CHECK_STR(s, enc[i]);
        free(s);
    }
    /* the two characters that differ from base64: 62 is '-', 63 is '_' */
    static const unsigned char hi[] = {0xfb, 0xef, 0xff};
    char *s = jws_b64url(hi, sizeof(hi));
    CHECK_STR(s, "--__");
    free(s);
}

TEST(b64url_round_trips_every_length_and_byte)
{
    unsigned char data[259];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof(data); len++) {
        char *s = jws_b64url(data, len);
        unsigned char *back = NULL;
        size_t n = 99;
        CHECK(s != NULL && strlen(s) == (len * 4 + 2) / 3);
        CHECK(jws_is_b64url(s) == (len > 0));
        CHECK_INT(jws_b64url_decode(s, &back, &n), 0);
        CHECK_INT(n, len);
        CHECK(back != NULL && memcmp(back, data, len) == 0);
        free(s);
        free(back);
    }
}

TEST(b64url_decode_rejects_base64_padding_and_stray_characters)
{
    static const char *const bad[] = {
        "Zm9v+w",   /* '+' is base64, not base64url */
        "Zm9v/w",   /* '/' likewise */
        "Zg==",     /* padding */
        "Zm8=",     /* padding */
        "Zm9 v",    /* whitespace */
        "Zm9v\n",   /* newline */
        "Z",        /* 4k+1 characters cannot be bytes */
        "Zm9vY",    /* likewise */
        "Zh",       /* unused low bits set: "Zg" is the one spelling of "f" */
        "Zm9",      /* likewise for "fo" */
        "Zm9v\xc3", /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *out = NULL;
        size_t n = 0;
        CHECK_INT(jws_b64url_decode(bad[i], &out, &n), UV_EINVAL);
        CHECK(out == NULL);
    }
    CHECK(!jws_is_b64url("Zm9v+w") && !jws_is_b64url("Zg==") && !jws_is_b64url(""));
    CHECK(jws_is_b64url(vector_token));

    unsigned char *out = NULL;
    size_t n = 99;
    CHECK_INT(jws_b64url_decode("", &out, &n), 0); /* an empty payload is legal */
    CHECK(out != NULL);
    CHECK_INT(n, 0);
    free(out);
    CHECK_INT(jws_b64url_decode(NULL, &out, &n), UV_EINVAL);
}

TEST(jwk_of_vector_account_key_is_canonical)
{
    EVP_PKEY *pub = account_pub();
    CHECK(pub != NULL);
    char *jwk = jws_jwk(pub);
    CHECK_STR(jwk, vector_jwk);
    free(jwk);
    EVP_PKEY_free(pub);
}

TEST(thumbprint_of_vector_account_key_matches_rfc7638)
{
    EVP_PKEY *pub = account_pub();
    char *tp = jws_thumbprint(pub);
    CHECK_STR(tp, vector_thumbprint);
    free(tp);
    EVP_PKEY_free(pub);
}

TEST(key_authorization_is_token_dot_thumbprint)
{
    EVP_PKEY *pub = account_pub();
    char *ka = jws_key_authorization(pub, vector_token);
    CHECK_STR(ka, vector_key_auth);
    free(ka);
    EVP_PKEY_free(pub);
}

TEST(key_authorization_rejects_tokens_outside_base64url)
{
    EVP_PKEY *pub = account_pub();
    static const char *const bad[] = {"", "a/../b", "abc=", "a+b", "a b", "a\"b", "a.b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(jws_key_authorization(pub, bad[i]) == NULL);
    CHECK(jws_key_authorization(pub, NULL) == NULL);
    EVP_PKEY_free(pub);
}

TEST(jwk_keeps_leading_zero_bytes_of_coordinates)
{
    /* a coordinate below 2^248 turns up about once per 128 keys: keep
     * generating until both kinds of key were seen */
    int short_seen = 0;
    for (int i = 0; i < 4000 && short_seen < 3; i++) {
        EVP_PKEY *k = jws_key_new();
        unsigned char pt[65], *x = NULL, *y = NULL;
        size_t ptlen = 0, xl = 0, yl = 0;
        int got =
            EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &ptlen);
        CHECK_INT(got, 1);
        CHECK(ptlen == 65 && pt[0] == 0x04); /* uncompressed: 04 || X || Y */
        char *jwk = jws_jwk(k);
        cJSON *j = cJSON_Parse(jwk);
        CHECK(cJSON_GetArraySize(j) == 4);
        CHECK(jws_b64url_decode(json_str(j, "x"), &x, &xl) == 0 && xl == 32);
        CHECK(jws_b64url_decode(json_str(j, "y"), &y, &yl) == 0 && yl == 32);
        if (x != NULL && y != NULL && xl == 32 && yl == 32) {
            CHECK(memcmp(x, pt + 1, 32) == 0 && memcmp(y, pt + 33, 32) == 0);
            short_seen += pt[1] == 0 || pt[33] == 0;
        }
        free(x);
        free(y);
        cJSON_Delete(j);
        free(jwk);
        EVP_PKEY_free(k);
    }
    CHECK(short_seen > 0);
}

TEST(jwk_and_sign_refuse_keys_other_than_p256)
{
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    CHECK(jws_jwk(p384) == NULL && jws_thumbprint(p384) == NULL);
    CHECK(jws_jwk(ed) == NULL);
    CHECK(jws_sign(p384, NULL, "n", "https://ca/x", "{}") == NULL);
    CHECK(jws_sign(ed, "https://ca/acct/1", "n", "https://ca/x", "{}") == NULL);
    CHECK(jws_jwk(NULL) == NULL);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ed);
}

TEST(sign_with_public_only_key_fails)
{
    EVP_PKEY *pub = account_pub();
    CHECK(jws_sign(pub, NULL, "n", "https://ca/new-acct", "{}") == NULL);
    EVP_PKEY_free(pub);
}

TEST(sign_new_account_has_jwk_header_and_verifies)
{
    EVP_PKEY *key = jws_key_new(), *pub = public_half(key);
    const char *payload = "{\"termsOfServiceAgreed\":true,\"contact\":[\"mailto:a@example.com\"]}";
    char *text = jws_sign(key, NULL, "nonce-1_x", "https://127.0.0.1:14000/sign-me-up", payload);
    struct jws_parts p;
    CHECK_INT(jws_parse(text, pub, &p), 0);
    CHECK(p.verified);
    CHECK_INT(p.siglen, 64);
    CHECK_STR(p.payload, payload);
    /* exactly alg, jwk, nonce, url (RFC 8555 6.2) */
    CHECK_INT(cJSON_GetArraySize(p.header), 4);
    CHECK_STR(json_str(p.header, "alg"), "ES256");
    CHECK_STR(json_str(p.header, "nonce"), "nonce-1_x");
    CHECK_STR(json_str(p.header, "url"), "https://127.0.0.1:14000/sign-me-up");
    CHECK(cJSON_GetObjectItemCaseSensitive(p.header, "kid") == NULL);
    char *jwk = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(p.header, "jwk"));
    char *want = jws_jwk(key);
    CHECK_STR(jwk, want);
    cJSON_free(jwk);
    free(want);
    jws_parts_dispose(&p);
    free(text);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
}

TEST(sign_with_kid_has_kid_header_and_no_jwk)
{
    EVP_PKEY *key = jws_key_new(), *pub = public_half(key);
    char *text = jws_sign(key, "https://ca/my-account/1", "abc", "https://ca/order-plz",
                          "{\"identifiers\":[{\"type\":\"dns\",\"value\":\"example.com\"}]}");
    struct jws_parts p;
    CHECK_INT(jws_parse(text, pub, &p), 0);
    CHECK(p.verified);
    CHECK_INT(cJSON_GetArraySize(p.header), 4);
    CHECK_STR(json_str(p.header, "alg"), "ES256");
    CHECK_STR(json_str(p.header, "kid"), "https://ca/my-account/1");
    CHECK_STR(json_str(p.header, "nonce"), "abc");
    CHECK_STR(json_str(p.header, "url"), "https://ca/order-plz");
    CHECK(cJSON_GetObjectItemCaseSensitive(p.header, "jwk") == NULL);
    jws_parts_dispose(&p);
    free(text);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
}

TEST(sign_post_as_get_has_empty_payload)
{
    EVP_PKEY *key = jws_key_new(), *pub = public_half(key);
    char *text = jws_sign(key, "https://ca/my-account/1", "n1", "https://ca/authz/1", NULL);
    struct jws_parts p;
    CHECK_INT(jws_parse(text, pub, &p), 0);
    CHECK(p.verified);
    CHECK_STR(json_str(p.outer, "payload"), "");
    CHECK_STR(p.payload, "");
    jws_parts_dispose(&p);
    free(text);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
}

TEST(sign_escapes_quotes_and_backslashes_from_the_ca)
{
    EVP_PKEY *key = jws_key_new(), *pub = public_half(key);
    const char *kid = "https://ca/acct/\"1\\", *url = "https://ca/x?a=\"b\"\n";
    char *text = jws_sign(key, kid, "n\"", url, "{}");
    struct jws_parts p;
    CHECK_INT(jws_parse(text, pub, &p), 0);
    CHECK(p.verified);
    CHECK_STR(json_str(p.header, "kid"), kid);
    CHECK_STR(json_str(p.header, "nonce"), "n\"");
    CHECK_STR(json_str(p.header, "url"), url);
    jws_parts_dispose(&p);
    free(text);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
}

TEST(signature_is_64_bytes_even_when_r_or_s_is_short)
{
    /* R or S below 2^248 (DER drops the leading zero byte) comes about once
     * per 128 signatures: sign until it happened a few times */
    EVP_PKEY *key = jws_key_new(), *pub = public_half(key);
    int short_seen = 0, bad = 0;
    for (int i = 0; i < 5000 && short_seen < 4; i++) {
        char *text = jws_sign(key, "https://ca/acct/1", "n", "https://ca/x", NULL);
        struct jws_parts p;
        if (jws_parse(text, pub, &p) != 0 || p.siglen != 64 || !p.verified)
            bad++;
        else
            short_seen += p.sig[0] == 0 || p.sig[32] == 0;
        jws_parts_dispose(&p);
        free(text);
    }
    CHECK_INT(bad, 0);
    CHECK(short_seen > 0);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
}

/* The dNSNames of a GENERAL_NAMES, or -1 if it holds anything else. */
static int dns_names_of(const GENERAL_NAMES *gens, const char **out, int max)
{
    int n = sk_GENERAL_NAME_num(gens);
    if (n > max)
        return -1;
    for (int i = 0; i < n; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
        if (gn->type != GEN_DNS)
            return -1;
        out[i] = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
    }
    return n;
}

TEST(csr_carries_all_names_cn_and_key_and_verifies)
{
    EVP_PKEY *key = csr_key_new();
    const char *const names[] = {"example.com", "www.example.com", "*.api.example.com"};
    unsigned char *der = NULL;
    size_t len = 0;
    CHECK_INT(csr_make(key, names, 3, &der, &len), 0);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    CHECK(req != NULL && p == der + len);
    CHECK_INT(X509_REQ_verify(req, key), 1);
    CHECK_INT(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), key), 1);
    CHECK_INT(X509_REQ_get_signature_nid(req), NID_ecdsa_with_SHA256);

    char cn[128] = "";
    X509_NAME *subj = X509_REQ_get_subject_name(req);
    CHECK_INT(X509_NAME_entry_count(subj), 1);
    X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn));
    CHECK_STR(cn, "example.com");

    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *sans = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    const char *got[8];
    CHECK_INT(dns_names_of(sans, got, 8), 3);
    for (int i = 0; i < 3 && i < sk_GENERAL_NAME_num(sans); i++)
        CHECK_STR(got[i], names[i]);
    GENERAL_NAMES_free(sans);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(der);
    EVP_PKEY_free(key);
}

TEST(csr_leaves_subject_empty_when_first_name_exceeds_64)
{
    EVP_PKEY *key = csr_key_new();
    const char *longname = "a-very-long-label-that-goes-on-and-on-and-on-and-on-and-on."
                           "example.com"; /* 70 characters */
    const char *const names[] = {longname, "short.example.com"};
    unsigned char *der = NULL;
    size_t len = 0;
    CHECK(strlen(longname) > CSR_CN_MAX);
    CHECK_INT(csr_make(key, names, 2, &der, &len), 0);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    CHECK(req != NULL);
    CHECK_INT(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
    CHECK_INT(X509_REQ_verify(req, key), 1);
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *sans = X509V3_get_d2i(exts, NID_subject_alt_name, NULL, NULL);
    const char *got[4] = {NULL, NULL};
    CHECK_INT(dns_names_of(sans, got, 4), 2);
    CHECK_STR(got[0], longname);
    CHECK_STR(got[1], "short.example.com");
    GENERAL_NAMES_free(sans);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(der);
    EVP_PKEY_free(key);
}

TEST(csr_refuses_names_that_are_not_host_names)
{
    EVP_PKEY *key = csr_key_new();
    static const char *const bad[] = {
        "",
        "a b.com",
        "a,DNS:evil.com",
        "a..com",
        ".a.com",
        "a.com.",
        "*.",
        "a.*.com",
        "caf\xc3\xa9.com",
        "a\"b.com",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", /* 64-char label */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *const names[] = {"ok.example.com", bad[i]};
        unsigned char *der = NULL;
        size_t len = 0;
        CHECK_INT(csr_make(key, names, 2, &der, &len), UV_EINVAL);
        CHECK(der == NULL);
    }
    const char *const none[] = {NULL};
    unsigned char *der = NULL;
    size_t len = 0;
    CHECK_INT(csr_make(key, none, 0, &der, &len), UV_EINVAL);
    CHECK_INT(csr_make(key, none, 1, &der, &len), UV_EINVAL);
    CHECK_INT(csr_make(NULL, (const char *const[]){"a.com"}, 1, &der, &len), UV_EINVAL);
    EVP_PKEY_free(key);
}

/* Good names and a key that cannot sign: OpenSSL fails, not the input. */
TEST(csr_with_a_public_only_key_is_an_openssl_failure)
{
    EVP_PKEY *pub = account_pub();
    const char *const names[] = {"ok.example.com"};
    unsigned char *der = NULL;
    size_t len = 0;
    CHECK(pub != NULL);
    CHECK_INT(csr_make(pub, names, 1, &der, &len), UV_EIO);
    CHECK(der == NULL);
    EVP_PKEY_free(pub);
}

TEST(alpn_cert_has_critical_acme_identifier_vector)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    CHECK_INT(csr_alpn_challenge_cert("api.example.com", vector_key_auth, &cert, &key), 0);
    CHECK(cert != NULL && key != NULL);
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int idx = X509_get_ext_by_OBJ(cert, oid, -1);
    CHECK(idx >= 0);
    CHECK(X509_get_ext_by_OBJ(cert, oid, idx) < 0); /* only one */
    X509_EXTENSION *ext = X509_get_ext(cert, idx);
    CHECK(ext != NULL && X509_EXTENSION_get_critical(ext) == 1);
    const ASN1_OCTET_STRING *v = ext != NULL ? X509_EXTENSION_get_data(ext) : NULL;
    CHECK(v != NULL && ASN1_STRING_length(v) == (int)sizeof(vector_acme_identifier));
    CHECK(v != NULL && memcmp(ASN1_STRING_get0_data(v), vector_acme_identifier,
                              sizeof(vector_acme_identifier)) == 0);
    ASN1_OBJECT_free(oid);
    X509_free(cert);
    EVP_PKEY_free(key);
}

TEST(alpn_cert_is_self_signed_for_one_name_and_a_week)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    time_t now = time(NULL);
    CHECK_INT(csr_alpn_challenge_cert("api.example.com", vector_key_auth, &cert, &key), 0);
    CHECK_INT(X509_verify(cert, key), 1);
    CHECK_INT(X509_check_private_key(cert, key), 1);
    CHECK_INT(X509_get_version(cert), X509_VERSION_3);
    CHECK_INT(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);
    CHECK_STR(EVP_PKEY_get0_type_name(key), "EC");

    int crit = -1;
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    const char *got[4] = {NULL};
    CHECK_INT(dns_names_of(sans, got, 4), 1); /* exactly one, and a dNSName */
    CHECK_STR(got[0], "api.example.com");
    GENERAL_NAMES_free(sans);

    int days = 0, secs = 0;
    ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert), X509_get0_notAfter(cert));
    CHECK_INT((long)days * 86400 + secs, 7L * 86400 + 3600);
    CHECK(X509_cmp_time(X509_get0_notBefore(cert), &now) < 0);
    time_t later = now + 6 * 86400;
    CHECK(X509_cmp_time(X509_get0_notAfter(cert), &later) > 0);

    /* a fresh key each time, never shared between challenges */
    X509 *cert2 = NULL;
    EVP_PKEY *key2 = NULL;
    CHECK_INT(csr_alpn_challenge_cert("api.example.com", vector_key_auth, &cert2, &key2), 0);
    CHECK(EVP_PKEY_eq(key, key2) != 1);
    CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(cert), X509_get0_serialNumber(cert2)) != 0);
    X509_free(cert2);
    EVP_PKEY_free(key2);
    X509_free(cert);
    EVP_PKEY_free(key);
}

TEST(alpn_cert_refuses_wildcards_and_bad_names)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    CHECK_INT(csr_alpn_challenge_cert("*.example.com", vector_key_auth, &cert, &key), UV_EINVAL);
    CHECK_INT(csr_alpn_challenge_cert("a b", vector_key_auth, &cert, &key), UV_EINVAL);
    CHECK_INT(csr_alpn_challenge_cert("example.com", NULL, &cert, &key), UV_EINVAL);
    CHECK(cert == NULL && key == NULL);
}

TEST(ari_cert_id_of_rfc9773_example_keeps_serial_leading_zero)
{
    X509 *x = cert_from_pem(rfc9773_pem);
    CHECK(x != NULL);
    char *id = csr_ari_cert_id(x);
    CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    free(id);
    X509_free(x);
}

TEST(ari_cert_id_of_pebble_leaf)
{
    X509 *x = cert_from_pem(pebble_leaf_pem);
    CHECK(x != NULL);
    char *id = csr_ari_cert_id(x);
    CHECK_STR(id, "c1OqwkuKNWoPxtVbAg-XrQkA5wY.QlorQYDcDA");
    free(id);
    X509_free(x);
}

TEST(ari_cert_id_is_null_without_aki)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    CHECK_INT(csr_alpn_challenge_cert("example.com", vector_key_auth, &cert, &key), 0);
    CHECK(csr_ari_cert_id(cert) == NULL);
    CHECK(csr_ari_cert_id(NULL) == NULL);
    X509_free(cert);
    EVP_PKEY_free(key);
}

TEST(key_pem_round_trips_as_unencrypted_pkcs8)
{
    EVP_PKEY *key = jws_key_new();
    size_t len = 0;
    char *pem = csr_key_to_pem(key, &len);
    CHECK(pem != NULL && strlen(pem) == len);
    CHECK(pem != NULL && strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);
    EVP_PKEY *back = csr_key_from_pem(pem, len);
    CHECK(back != NULL);
    CHECK_INT(EVP_PKEY_eq(key, back), 1);
    char *t1 = jws_thumbprint(key), *t2 = jws_thumbprint(back);
    CHECK_STR(t1, t2);
    /* the loaded key still signs */
    EVP_PKEY *pub = public_half(key);
    char *text = jws_sign(back, "https://ca/acct/1", "n", "https://ca/x", "{}");
    struct jws_parts p;
    CHECK_INT(jws_parse(text, pub, &p), 0);
    CHECK(p.verified);
    jws_parts_dispose(&p);
    free(text);
    free(t1);
    free(t2);
    OPENSSL_cleanse(pem, len);
    free(pem);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(back);
    EVP_PKEY_free(key);
}

TEST(key_from_pem_refuses_garbage_public_and_encrypted_keys)
{
    static const char junk[] =
        "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n";
    CHECK(csr_key_from_pem(junk, strlen(junk)) == NULL);
    CHECK(csr_key_from_pem(account_pub_pem, strlen(account_pub_pem)) == NULL);
    CHECK(csr_key_from_pem(NULL, 10) == NULL);
    CHECK(csr_key_from_pem("", 0) == NULL);

    /* encrypted: refused without asking for a password on the terminal */
    EVP_PKEY *key = csr_key_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    CHECK_INT(PEM_write_bio_PKCS8PrivateKey(b, key, EVP_aes_128_cbc(), "secret", 6, NULL, NULL), 1);
    long n = BIO_get_mem_data(b, &data);
    CHECK(csr_key_from_pem(data, (size_t)n) == NULL);
    BIO_free(b);

    /* a public-only key has no private PEM */
    EVP_PKEY *pub = account_pub();
    size_t len = 0;
    CHECK(csr_key_to_pem(pub, &len) == NULL);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(key);
}

TEST_MAIN()
