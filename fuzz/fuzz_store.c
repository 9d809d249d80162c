/* libFuzzer target: what psproxy reads back from its storage. The input
 * holds a certificate chain, a private key and a metadata file, split at
 * NUL bytes (PEM and JSON have none): the chain and key go through
 * certs_entry_from_pem() as client.c load_stored() does, the metadata
 * through store_parse_object() (store.c read_json) and the back-off
 * reader acme_meta_backoff(); a fourth part, if any, is a CA directory
 * URL for store_ca_id(), which names the storage directory. */
#include <stdlib.h>
#include <string.h>

#include "acme_json.h"
#include "certs.h"
#include "fuzz.h"
#include "store.h"

#define PARTS 4

/* Splits DATA at NULs into up to PARTS NUL-terminated copies. */
static size_t split(const uint8_t *data, size_t size, char *part[PARTS], size_t len[PARTS])
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < PARTS; i++) {
        if (i == size || data[i] == '\0') {
            len[n] = i - start;
            part[n] = malloc(len[n] + 1);
            memcpy(part[n], data + start, len[n]);
            part[n][len[n]] = '\0';
            n++;
            start = i + 1;
        }
    }
    return n;
}

static void read_pem(const char *chain, size_t chain_len, const char *key, size_t key_len)
{
    certs_entry_t *e = NULL;
    char err[512];
    if (certs_entry_from_pem(chain, chain_len, key, key_len, "fuzz", &e, err, sizeof(err)) == 0) {
        if (e == NULL || e->leaf == NULL || e->key == NULL)
            abort();
        certs_entry_unref(e);
    } else if (e != NULL) {
        abort(); /* a failed load leaves nothing behind */
    }
}

static void read_meta(const char *text, size_t len)
{
    cJSON *meta = NULL;
    const char *why = NULL;
    if (store_parse_object(text, len, &meta, &why) != 0) {
        if (meta != NULL || why == NULL)
            abort();
        return;
    }
    int failures = 0;
    int64_t next = 0;
    if (acme_meta_backoff(meta, &failures, &next) && failures <= 0)
        abort();
    cJSON_Delete(meta);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *part[PARTS] = {NULL};
    size_t len[PARTS] = {0};
    size_t n = split(data, size, part, len);
    read_pem(part[0], len[0], n > 1 ? part[1] : "", n > 1 ? len[1] : 0);
    if (n > 2)
        read_meta(part[2], len[2]);
    if (n > 3)
        free(store_ca_id(part[3]));
    for (size_t i = 0; i < n; i++)
        free(part[i]);
    return 0;
}
