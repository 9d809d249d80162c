/* libFuzzer target: what the ACME client reads from a CA. Every input goes
 * through each reader client.c uses (acme_json.c: directory, order,
 * authorization, problem document, renewal info; renew.c dates; jws.c
 * base64url and key authorizations), as the body and as a header value.
 * Invariant: base64url has one spelling per byte string, so a decoded
 * value encodes back to its input. */
#include <stdlib.h>
#include <string.h>

#include "acme_json.h"
#include "fuzz.h"
#include "jws.h"
#include "renew.h"

static EVP_PKEY *account_key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    account_key = jws_key_new();
    if (account_key == NULL)
        abort();
    return 0;
}

static void read_directory(const char *body)
{
    acme_dir_t d;
    acme_dir_parse(body, NULL, &d);
    acme_dir_dispose(&d);
    acme_dir_parse(body, "shortlived", &d);
    acme_dir_dispose(&d);
}

/* on_order(): the status and the URLs the next step takes. */
static void read_order(const char *body)
{
    char status[16];
    cJSON *o = acme_parse_with_status(body, status, sizeof(status));
    (void)acme_json_str(o, "finalize");
    (void)acme_json_str(o, "certificate");
    const cJSON *az = cJSON_GetObjectItemCaseSensitive(o, "authorizations");
    cJSON *copy = cJSON_Duplicate(az, 1);
    for (int i = 0; i < cJSON_GetArraySize(copy); i++)
        (void)cJSON_IsString(cJSON_GetArrayItem(copy, i));
    cJSON_Delete(copy);
    cJSON_Delete(o);
}

/* on_authz(): why it failed, or the challenge to answer and its key
 * authorization. */
static void read_authz(const char *body)
{
    char status[16], why[512];
    cJSON *z = acme_parse_with_status(body, status, sizeof(status));
    acme_authz_error(z, why, sizeof(why));
    static const char *const types[] = {"http-01", "tls-alpn-01"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *ch = acme_authz_challenge(z, types[i]);
        const char *token = acme_json_str(ch, "token");
        char *ka = token != NULL ? jws_key_authorization(account_key, token) : NULL;
        if (ka != NULL && (strncmp(ka, token, strlen(token)) != 0 || !jws_is_b64url(token)))
            abort(); /* a key authorization only for a base64url token */
        free(ka);
    }
    cJSON_Delete(z);
}

static void read_problem(const char *body, long status)
{
    fetch_resp_t r;
    memset(&r, 0, sizeof(r));
    r.status = status;
    r.body = (char *)body;
    r.len = strlen(body);
    char why[512];
    acme_problem_text(&r, why, sizeof(why));
    (void)acme_is_problem(&r, "urn:ietf:params:acme:error:badNonce");
}

/* A nonce or token as it comes: base64url both ways. */
static void read_b64url(const char *s)
{
    unsigned char *raw = NULL;
    size_t len = 0;
    int ok = jws_b64url_decode(s, &raw, &len) == 0;
    if (ok) {
        char *again = jws_b64url(raw, len);
        if (again == NULL || strcmp(again, s) != 0)
            abort(); /* decoded bytes must spell the input again */
        if (s[0] != '\0' && !jws_is_b64url(s))
            abort();
        free(again);
    }
    free(raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1); /* fetch.c hands bodies over NUL-terminated */
    memcpy(text, data, size);
    text[size] = '\0';
    read_directory(text);
    read_order(text);
    read_authz(text);
    read_problem(text, 400);
    read_problem(text, 0);
    int64_t start, end;
    (void)acme_ari_window(text, &start, &end);
    (void)renew_parse_retry_after(text, 1700000000);
    (void)renew_parse_rfc3339(text);
    read_b64url(text);
    free(text);
    return 0;
}
