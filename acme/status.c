/* psproxy certs: what storage says about each managed name, without asking
 * the CA: issuer, expiry, the next renewal and why, the last error. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acme.h"
#include "certs.h"
#include "store.h"

static void fmt_time(int64_t t, char *out, size_t cap)
{
    if (t <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void print_one(store_t *s, const acme_config_t *cfg, const char *name, FILE *out)
{
    char *chain = NULL, *key = NULL, err[512];
    size_t chain_len = 0, key_len = 0;
    cJSON *meta = NULL;
    char issuer[640] = "-", not_after[32] = "-", next[32] = "-";
    int rc = store_load_cert(s, cfg->directory, name, &chain, &chain_len, &key, &key_len, &meta,
                             err, sizeof(err));
    if (rc == 0) {
        BIO *b = BIO_new_mem_buf(chain, (int)chain_len);
        X509 *x = PEM_read_bio_X509(b, NULL, certs_no_passphrase, NULL);
        if (x != NULL) {
            X509_NAME_get_text_by_NID(X509_get_issuer_name(x), NID_commonName, issuer,
                                      sizeof(issuer));
            struct tm tm;
            if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
                strftime(not_after, sizeof(not_after), "%Y-%m-%dT%H:%M:%SZ", &tm);
        }
        X509_free(x);
        BIO_free(b);
        if (key != NULL)
            OPENSSL_cleanse(key, key_len);
    } else {
        cJSON_Delete(meta);
        meta = NULL;
        if (store_load_meta(s, cfg->directory, name, &meta, err, sizeof(err)) != 0)
            meta = NULL;
        if (rc != UV_ENOENT)
            snprintf(issuer, sizeof(issuer), "(unreadable: %s)", err);
        else
            snprintf(issuer, sizeof(issuer), "(no certificate yet)");
    }
    free(chain);
    free(key);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(meta, "next_attempt");
    const cJSON *why = cJSON_GetObjectItemCaseSensitive(meta, "next_attempt_why");
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(meta, "last_error");
    const cJSON *fails = cJSON_GetObjectItemCaseSensitive(meta, "failures");
    if (cJSON_IsNumber(n))
        fmt_time((int64_t)n->valuedouble, next, sizeof(next));
    fprintf(out, "%s\n  issuer:       %s\n  not after:    %s\n  next renewal: %s (%s)\n", name,
            issuer, not_after, next,
            cJSON_IsString(why) ? why->valuestring : "at the next start");
    if (cJSON_IsString(last))
        fprintf(out, "  last error:   %s (%d failure%s in a row)\n", last->valuestring,
                cJSON_IsNumber(fails) ? fails->valueint : 0,
                cJSON_IsNumber(fails) && fails->valueint == 1 ? "" : "s");
    cJSON_Delete(meta);
}

int acme_print_status(const acme_config_t *cfg, const char *const *names, size_t n, FILE *out)
{
    store_t *s = NULL;
    char err[512];
    int rc = store_open(cfg->storage, &s, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "psproxy: %s\n", err);
        return rc;
    }
    fprintf(out, "CA %s, storage %s\n", cfg->directory, cfg->storage);
    if (n == 0)
        fprintf(out, "no name is managed by ACME in this configuration\n");
    for (size_t i = 0; i < n; i++)
        print_one(s, cfg, names[i], out);
    store_close(s);
    return 0;
}
