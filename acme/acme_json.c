/* Reading the CA's JSON answers and our renewal metadata (see acme_json.h). */
#include "acme_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "renew.h"

const char *acme_json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

void acme_problem_text(const fetch_resp_t *r, char *out, size_t cap)
{
    if (r->status == 0) {
        snprintf(out, cap, "%s", r->error != NULL ? r->error : "request failed");
        return;
    }
    cJSON *p = cJSON_Parse(r->body);
    const char *type = acme_json_str(p, "type"), *detail = acme_json_str(p, "detail");
    if (type != NULL || detail != NULL)
        snprintf(out, cap, "HTTP %ld %s: %s", r->status, type != NULL ? type : "",
                 detail != NULL ? detail : "");
    else
        snprintf(out, cap, "HTTP %ld", r->status);
    cJSON_Delete(p);
}

int acme_is_problem(const fetch_resp_t *r, const char *type)
{
    cJSON *p = cJSON_Parse(r->body);
    const char *t = acme_json_str(p, "type");
    int yes = t != NULL && strcmp(t, type) == 0;
    cJSON_Delete(p);
    return yes;
}

cJSON *acme_parse_with_status(const char *body, char *status, size_t cap)
{
    cJSON *o = cJSON_Parse(body);
    const char *st = acme_json_str(o, "status");
    snprintf(status, cap, "%s", st != NULL ? st : "");
    return o;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/* meta.profiles is an object whose member names are the profiles. */
static void read_profiles(const cJSON *dir, const char *profile, acme_dir_t *d)
{
    const cJSON *profiles = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(dir, "meta"), "profiles");
    d->profile_offered = cJSON_GetObjectItemCaseSensitive(profiles, profile) != NULL;
    const cJSON *p;
    cJSON_ArrayForEach(p, profiles)
    {
        if (p->string == NULL)
            continue; /* an array's elements have no names */
        size_t l = strlen(d->offered);
        snprintf(d->offered + l, sizeof(d->offered) - l, "%s%s", l ? ", " : "", p->string);
    }
}

int acme_dir_parse(const char *body, const char *profile, acme_dir_t *d)
{
    memset(d, 0, sizeof(*d));
    cJSON *dir = body != NULL ? cJSON_Parse(body) : NULL;
    if (dir == NULL)
        return -1;
    d->new_nonce = dup_or_null(acme_json_str(dir, "newNonce"));
    d->new_account = dup_or_null(acme_json_str(dir, "newAccount"));
    d->new_order = dup_or_null(acme_json_str(dir, "newOrder"));
    d->renewal_info = dup_or_null(acme_json_str(dir, "renewalInfo"));
    if (profile != NULL)
        read_profiles(dir, profile, d);
    cJSON_Delete(dir);
    return 0;
}

void acme_dir_dispose(acme_dir_t *d)
{
    free(d->new_nonce);
    free(d->new_account);
    free(d->new_order);
    free(d->renewal_info);
    memset(d, 0, sizeof(*d));
}

void acme_authz_error(const cJSON *z, char *why, size_t cap)
{
    snprintf(why, cap, "the authorization failed");
    const cJSON *ch;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(z, "challenges"))
    {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(ch, "error");
        const char *type = acme_json_str(ch, "type"), *detail = acme_json_str(e, "detail");
        if (cJSON_IsObject(e))
            snprintf(why, cap, "%s: %s", type != NULL ? type : "", detail != NULL ? detail : "");
    }
}

const cJSON *acme_authz_challenge(const cJSON *z, const char *type)
{
    const cJSON *ch, *chosen = NULL;
    cJSON_ArrayForEach(ch, cJSON_GetObjectItemCaseSensitive(z, "challenges"))
    {
        const char *t = acme_json_str(ch, "type");
        if (t != NULL && strcmp(t, type) == 0)
            chosen = ch;
    }
    return chosen;
}

int acme_ari_window(const char *body, int64_t *start, int64_t *end)
{
    cJSON *j = body != NULL ? cJSON_Parse(body) : NULL;
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "suggestedWindow");
    const char *s = acme_json_str(w, "start"), *e = acme_json_str(w, "end");
    *start = renew_parse_rfc3339(s != NULL ? s : "");
    *end = renew_parse_rfc3339(e != NULL ? e : "");
    cJSON_Delete(j);
    return *start < 0 || *end < *start ? -1 : 0;
}

int acme_json_time(const cJSON *o, const char *key, int64_t *t)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    /* a double outside int64_t makes the cast undefined (C11 6.3.1.4); a
     * hand-edited or damaged file may say 1e999 (inf) or 1e30 */
    if (!cJSON_IsNumber(v) || !(v->valuedouble > -ACME_JSON_TIME_MAX &&
                                v->valuedouble < ACME_JSON_TIME_MAX))
        return 0;
    *t = (int64_t)v->valuedouble;
    return 1;
}

int acme_meta_backoff(const cJSON *meta, int *failures, int64_t *next_attempt)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(meta, "failures");
    int64_t next;
    if (!cJSON_IsNumber(f) || f->valueint <= 0 || !acme_json_time(meta, "next_attempt", &next))
        return 0;
    *failures = f->valueint;
    *next_attempt = next;
    return 1;
}
