/* Unit tests for the certificate store: loading, name lookup, and swaps
 * that never hand a new handshake an older certificate. */
#include "certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <string.h>
#include <uv.h>

#include "test.h"
#include "test_pki.h"


static long serial_of(const certs_entry_t *e)
{
    return e != NULL ? ASN1_INTEGER_get(X509_get0_serialNumber(e->leaf)) : -1;
}

TEST(entry_loads_and_knows_its_expiry)
{
    certs_entry_t *e = entry("a.test", 1);
    CHECK(e != NULL);
    if (e == NULL)
        return;
    time_t now = time(NULL);
    CHECK(e->not_after > now + 86400 * 29 && e->not_after <= now + 86400 * 30 + 60);
    certs_entry_unref(e);
}

TEST(mismatched_key_is_refused)
{
    char *c1, *k1, *c2, *k2, err[256] = "";
    size_t cl1, kl1, cl2, kl2;
    make_pem("a.test", 1, &c1, &cl1, &k1, &kl1);
    make_pem("b.test", 2, &c2, &cl2, &k2, &kl2);
    certs_entry_t *e = NULL;
    CHECK(certs_entry_from_pem(c1, cl1, k2, kl2, "a.pem", &e, err, sizeof(err)) == UV_EINVAL);
    CHECK(e == NULL);
    CHECK_STR(err, "a.pem: the private key does not match the certificate");
    CHECK(certs_entry_from_pem("junk", 4, k1, kl1, "j.pem", &e, err, sizeof(err)) == UV_EINVAL);
    CHECK(strncmp(err, "j.pem: no PEM certificate", 25) == 0);
    free(c1);
    free(k1);
    free(c2);
    free(k2);
}

TEST(missing_file_is_an_error_naming_it)
{
    char err[256] = "";
    certs_entry_t *e = NULL;
    CHECK(certs_entry_load("/nonexistent/a.crt", "/nonexistent/a.key", &e, err, sizeof(err)) ==
          UV_ENOENT);
    CHECK(strstr(err, "/nonexistent/a.crt") != NULL);
}

TEST(lookup_exact_wildcard_one_label_and_case)
{
    certs_t *s = certs_new();
    certs_entry_t *a = entry("a.test", 1), *w = entry("*.example.com", 2);
    certs_put(s, "A.Test", a);
    certs_put(s, "*.example.com", w);
    certs_entry_t *e;
    CHECK_INT(serial_of(e = certs_get(s, "a.test")), 1);
    certs_entry_unref(e);
    CHECK_INT(serial_of(e = certs_get(s, "API.example.com")), 2);
    certs_entry_unref(e);
    CHECK(certs_get(s, "a.b.example.com") == NULL); /* one label only */
    CHECK(certs_get(s, "example.com") == NULL);
    CHECK(certs_get(s, "b.test") == NULL); /* never another site's certificate */
    CHECK(certs_get(s, "") == NULL);
    certs_entry_unref(a);
    certs_entry_unref(w);
    certs_free(s);
}

TEST(catch_all_serves_any_name)
{
    certs_t *s = certs_new();
    certs_entry_t *any = entry("any", 7);
    certs_put(s, "*", any);
    certs_entry_t *e = certs_get(s, "whatever.test");
    CHECK_INT(serial_of(e), 7);
    certs_entry_unref(e);
    certs_entry_unref(any);
    certs_free(s);
}

TEST(swap_serves_the_newest_and_old_holders_keep_theirs)
{
    certs_t *s = certs_new();
    certs_entry_t *held = NULL;
    for (long serial = 1; serial <= 5; serial++) {
        certs_entry_t *e = entry("a.test", serial);
        certs_put(s, "a.test", e);
        certs_entry_unref(e); /* the store holds it now */
        certs_entry_t *got = certs_get(s, "a.test");
        CHECK_INT(serial_of(got), serial); /* never an older one */
        if (serial == 1)
            held = got; /* a connection made with the first keeps it */
        else
            certs_entry_unref(got);
    }
    CHECK_INT(serial_of(held), 1);
    CHECK(X509_check_private_key(held->leaf, held->key) == 1);
    certs_entry_unref(held);
    certs_free(s);
}

TEST_MAIN()
