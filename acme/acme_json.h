/* Reading the CA's answers (RFC 8555 JSON objects, RFC 7807 problem
 * documents, RFC 9773 renewal info) and our stored renewal metadata: pure
 * functions of the bytes, no state, so the client and the fuzzers share
 * them. */
#ifndef PS_ACME_JSON_H
#define PS_ACME_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "fetch.h"

/* The string member KEY of object O, or NULL (O may be NULL). */
const char *acme_json_str(const cJSON *o, const char *key);

/* The problem document (RFC 7807) of a failed response R, as one line in
 * OUT: "HTTP 400 TYPE: DETAIL", "HTTP 400", or curl's error. */
void acme_problem_text(const fetch_resp_t *r, char *out, size_t cap);

/* 1 when R's body is a problem document of TYPE. */
int acme_is_problem(const fetch_resp_t *r, const char *type);

/* An order or authorization object parsed from BODY (NULL when not JSON),
 * its status copied into STATUS ("" when absent), which outlives it. */
cJSON *acme_parse_with_status(const char *body, char *status, size_t cap);

/* The directory's URLs (malloc'd, NULL when absent) and, when PROFILE is
 * not NULL, whether meta.profiles lists it and which names it lists. */
typedef struct acme_dir {
    char *new_nonce, *new_account, *new_order, *renewal_info;
    int profile_offered;
    char offered[512]; /* meta.profiles names, ", "-separated */
} acme_dir_t;

/* Parses the directory BODY into D. Returns 0, or -1 when BODY is not
 * JSON (D is then empty). acme_dir_dispose() frees D either way. */
int acme_dir_parse(const char *body, const char *profile, acme_dir_t *d);
void acme_dir_dispose(acme_dir_t *d);

/* Why an authorization Z is invalid: "TYPE: DETAIL" of the last challenge
 * carrying an error, else "the authorization failed". */
void acme_authz_error(const cJSON *z, char *why, size_t cap);

/* The last challenge of TYPE in authorization Z, or NULL. */
const cJSON *acme_authz_challenge(const cJSON *z, const char *type);

/* The suggestedWindow of a renewalInfo BODY (RFC 9773 4.2). Returns 0 with
 * *START <= *END (Unix seconds), or -1 when it is missing or unusable. */
int acme_ari_window(const char *body, int64_t *start, int64_t *end);

/* A time member KEY of O (Unix seconds, as our metadata writes them):
 * 1 with *T, or 0 when it is absent, not a number, or beyond
 * +-ACME_JSON_TIME_MAX (about 30 million years: corrupt, not a time). */
#define ACME_JSON_TIME_MAX 1e15
int acme_json_time(const cJSON *o, const char *key, int64_t *t);

/* The back-off our metadata META remembers: 1 with *FAILURES (> 0) and
 * *NEXT_ATTEMPT (Unix seconds) when it records one, else 0. */
int acme_meta_backoff(const cJSON *meta, int *failures, int64_t *next_attempt);

#endif
