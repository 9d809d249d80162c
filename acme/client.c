/* The ACME client: one order at a time, as an explicit state machine driven
 * by fetch callbacks and timers on the control loop. Over 1,000 lines on
 * purpose: the states read top to bottom in the order an order runs, each
 * next to the fetch callback that leaves it; the pure parts are
 * acme_json.c, renew.c, jws.c and csr.c already.
 *
 *   [LOCK] -> DIRECTORY -> ACCOUNT -> ORDER -> AUTHZ (per authorization:
 *   CHALLENGE, POLL_AUTHZ) -> FINALIZE -> POLL_ORDER -> CERT -> installed
 *
 * With storage shared through PostgreSQL (pgstore.h), an order first takes
 * the name's lock there (LOCK): one instance orders, the others get its
 * certificate through the database (on_shared_cert) and never order it.
 *
 * Every signed request takes the last Replay-Nonce (HEAD newNonce when there
 * is none) and is re-signed on badNonce. A failed order backs off per name
 * and the certificate already served stays. */
#include "acme.h"

#include <cjson/cJSON.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acme_json.h"
#include "chal.h"
#include "common.h"
#include "csr.h"
#include "fetch.h"
#include "jws.h"
#include "log.h"
#include "pgstore.h"
#include "renew.h"
#include "seal.h"
#include "store.h"

#define ACME_MAX_NONCE_RETRIES 10
#define ACME_MAX_POLLS 120
#define ACME_POLL_MS 250 /* when the CA gives no Retry-After */

enum step {
    S_IDLE,
    S_LOCK,
    S_DIRECTORY,
    S_NONCE,
    S_ACCOUNT,
    S_ORDER,
    S_AUTHZ,
    S_CHALLENGE,
    S_POLL_AUTHZ,
    S_FINALIZE,
    S_POLL_ORDER,
    S_CERT,
};

static const char *const step_names[] = {
    "idle",       "lock",      "directory", "nonce",    "account",    "order", "authorization",
    "challenge",  "poll authorization", "finalize", "poll order", "certificate",
};

/* A managed name and its renewal clock. */
struct name {
    char *name;
    uv_timer_t timer;
    acme_t *a;
    int failures;
    int queued;
    int64_t not_after; /* of the certificate served, 0 when none */
    char *ari_id;      /* RFC 9773 CertID of the certificate served */
    int64_t renew_at;  /* when to order again: ARI pick, lifetime rule or back-off */
    const char *renew_why;
    int64_t ari_next;  /* the next renewalInfo fetch; 0: none */
    int ari_waiting;   /* a renewalInfo fetch waits for the directory */
    struct name *next;
};

struct acme {
    uv_loop_t *loop;
    fetch_t *fetch;
    store_t *store;
    certs_t *certs;
    char *directory, *email;
    int challenges;
    /* from the directory */
    char *new_nonce, *new_account, *new_order;
    char *renewal_info; /* ARI, when the CA offers it */
    char *profile;
    void (*on_fatal)(void *arg, const char *why);
    void *fatal_arg;
    int fatal;
    uint64_t orders_ok, orders_failed; /* for /metrics */
    int dir_state;      /* 0 unknown, 1 being fetched, 2 known */
    char *nonce;
    EVP_PKEY *account_key;
    char *kid;
    struct name *names;
    /* the order under way */
    struct name *cur;
    int step;
    int pending_step;        /* the step a nonce fetch was made for */
    char *req_url;           /* the signed request in flight, kept for badNonce */
    char *req_payload;       /* NULL: POST-as-GET */
    const char *req_accept;
    int nonce_retries;
    int polls;
    int chal_type;           /* ACME_HTTP_01 or ACME_TLS_ALPN_01 */
    int tried;               /* challenge types that failed for this name */
    char *order_url, *finalize_url, *cert_url;
    cJSON *authzs;           /* the order's authorization URLs */
    int authz_i;
    char *chal_token;
    char *chal_url;
    EVP_PKEY *cert_key;
    int lock_fd;
    uv_timer_t poll_timer;
    int closing;
    /* storage shared with other instances (NULL: this one's own) */
    pgstore_t *shared;
    int shared_locked;  /* the current order holds the name's shared lock */
    int shared_waiting; /* names wait for the shared storage to be in sync */
};

static void next_order(acme_t *a);
static void run_step(acme_t *a);
static void shared_wait(acme_t *a);
static void on_shared_lock(void *arg, int status);

/* ---- helpers ------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = dup_or_null(v);
}

static int64_t not_before(const certs_entry_t *e)
{
    const ASN1_TIME *t = X509_get0_notBefore(e->leaf);
    struct tm tm;
    return t != NULL && ASN1_TIME_to_tm(t, &tm) == 1 ? (int64_t)timegm(&tm) : (int64_t)time(NULL);
}

static uint32_t rnd32(void)
{
    uint32_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (uint32_t)time(NULL);
    return r;
}

/* ---- the order's end ----------------------------------------------------- */

static void clear_challenge(acme_t *a)
{
    if (a->chal_token != NULL)
        chal_http_del(a->chal_token);
    if (a->chal_token != NULL && a->shared != NULL && a->chal_type == ACME_HTTP_01)
        pgstore_del_challenge(a->shared, a->chal_token);
    if (a->cur != NULL)
        chal_alpn_del(a->cur->name);
    set_str(&a->chal_token, NULL);
    set_str(&a->chal_url, NULL);
}

static void clear_order(acme_t *a)
{
    clear_challenge(a);
    set_str(&a->order_url, NULL);
    set_str(&a->finalize_url, NULL);
    set_str(&a->cert_url, NULL);
    set_str(&a->req_url, NULL);
    set_str(&a->req_payload, NULL);
    cJSON_Delete(a->authzs);
    a->authzs = NULL;
    EVP_PKEY_free(a->cert_key);
    a->cert_key = NULL;
    if (a->lock_fd >= 0)
        store_unlock(a->lock_fd);
    a->lock_fd = -1;
    if (a->shared_locked && a->cur != NULL)
        pgstore_unlock(a->shared, a->cur->name); /* after the uploads queued before */
    a->shared_locked = 0;
    uv_timer_stop(&a->poll_timer);
}

static void on_name_timer(uv_timer_t *t);
static void save_meta(acme_t *a, struct name *n, const char *last_error);

/* Arms N's timer for the earlier of its renewal and its next ARI check. */
static void arm(struct name *n)
{
    int64_t at = n->renew_at;
    if (n->ari_next != 0 && n->ari_next < at)
        at = n->ari_next;
    int64_t now = time(NULL);
    uint64_t ms = at > now ? (uint64_t)(at - now) * 1000 : 0;
    uv_timer_start(&n->timer, on_name_timer, ms, 0);
}

static void ari_fetch(struct name *n);

/* A certificate is served: when to renew it. Without ARI, by its lifetime;
 * with ARI (once the directory says so) by the CA's window. */
static void plan_renewal(acme_t *a, struct name *n, const certs_entry_t *e)
{
    n->not_after = e->not_after;
    n->renew_at = renew_due_by_lifetime(not_before(e), e->not_after);
    n->renew_why = "by lifetime";
    if (n->failures > 0) {
        /* a renewal that failed before this restart keeps its back-off */
        char err[256];
        cJSON *m = NULL;
        if (store_load_meta(a->store, a->directory, n->name, &m, err, sizeof(err)) == 0) {
            int64_t next;
            if (acme_json_time(m, "next_attempt", &next) && next > n->renew_at) {
                n->renew_at = next;
                n->renew_why = "retry after a failure";
            }
        }
        cJSON_Delete(m);
    }
    free(n->ari_id);
    n->ari_id = csr_ari_cert_id(e->leaf);
    n->ari_next = n->ari_id != NULL && (a->dir_state != 2 || a->renewal_info != NULL)
                      ? (int64_t)time(NULL)
                      : 0;
    save_meta(a, n, NULL);
    arm(n);
}

static void meta_set_num(cJSON *m, const char *key, double v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(m, key);
    cJSON_AddNumberToObject(m, key, v);
}

static void meta_set_str(cJSON *m, const char *key, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(m, key);
    if (v != NULL)
        cJSON_AddStringToObject(m, key, v);
}

/* Renewal bookkeeping, merged into what the metadata already holds (what
 * was saved with the certificate stays). LAST_ERROR NULL clears it. */
static void save_meta(acme_t *a, struct name *n, const char *last_error)
{
    char err[512];
    cJSON *m = NULL;
    if (store_load_meta(a->store, a->directory, n->name, &m, err, sizeof(err)) != 0 || m == NULL)
        m = cJSON_CreateObject();
    meta_set_num(m, "failures", n->failures);
    meta_set_num(m, "next_attempt", (double)n->renew_at);
    meta_set_str(m, "next_attempt_why", n->renew_why);
    if (n->not_after != 0)
        meta_set_num(m, "not_after", (double)n->not_after);
    meta_set_str(m, "ari_id", n->ari_id);
    meta_set_str(m, "last_error", last_error);
    if (store_save_meta(a->store, a->directory, n->name, m, err, sizeof(err)) != 0)
        log_err("acme: %s", err);
    cJSON_Delete(m);
}

/* The order failed: log why once, back off, keep serving what we have. */
static void fail(acme_t *a, const char *why, const char *retry_after)
{
    struct name *n = a->cur;
    int64_t now = time(NULL);
    int64_t ra = retry_after != NULL ? renew_parse_retry_after(retry_after, now) : -1;
    n->failures++;
    a->orders_failed++;
    int64_t delay = renew_backoff(n->failures, ra, rnd32());
    log_err("acme: %s: %s failed: %s; retry in %llds (failure %d)%s", n->name,
            step_names[a->step], why, (long long)delay, n->failures,
            n->not_after != 0 ? "; the current certificate keeps serving" : "");
    n->renew_at = now + delay;
    n->renew_why = "retry after a failure";
    save_meta(a, n, why);
    clear_order(a);
    a->cur = NULL;
    a->step = S_IDLE;
    arm(n);
    next_order(a);
}

/* ---- requests ------------------------------------------------------------ */

static void on_response(void *arg, const fetch_resp_t *r);

static void send_signed(acme_t *a)
{
    char *jws = jws_sign(a->account_key, a->step == S_ACCOUNT ? NULL : a->kid, a->nonce,
                         a->req_url, a->req_payload);
    set_str(&a->nonce, NULL); /* a nonce is good for one request */
    if (jws == NULL || fetch_start(a->fetch, "POST", a->req_url, jws, a->req_accept, on_response,
                                   a) != 0) {
        free(jws);
        fail(a, "cannot sign or send the request", NULL);
        return;
    }
    free(jws);
}

/* A signed POST for the current step; PAYLOAD NULL is POST-as-GET. */
static void post(acme_t *a, const char *url, const char *payload, const char *accept)
{
    log_debug("acme: %s: %s: POST %s", a->cur->name, step_names[a->step], url);
    set_str(&a->req_url, url);
    set_str(&a->req_payload, payload);
    a->req_accept = accept;
    a->nonce_retries = 0;
    if (a->nonce == NULL) {
        a->pending_step = a->step;
        a->step = S_NONCE;
        if (fetch_start(a->fetch, "HEAD", a->new_nonce, NULL, NULL, on_response, a) != 0)
            fail(a, "cannot request a nonce", NULL);
        return;
    }
    send_signed(a);
}

static void on_poll_timer(uv_timer_t *t)
{
    acme_t *a = t->data;
    run_step(a);
}

/* Polls again after Retry-After (clamped) or a short pause. */
static void poll_later(acme_t *a, const fetch_resp_t *r)
{
    if (++a->polls > ACME_MAX_POLLS) {
        fail(a, "the CA kept it pending too long", NULL);
        return;
    }
    int64_t ms = ACME_POLL_MS;
    if (r->retry_after != NULL) {
        int64_t ra = renew_parse_retry_after(r->retry_after, time(NULL));
        if (ra >= 0)
            ms = (ra > 60 ? 60 : ra) * 1000;
    }
    uv_timer_start(&a->poll_timer, on_poll_timer, (uint64_t)ms, 0);
}

/* ---- steps ---------------------------------------------------------------- */

static int next_challenge_type(acme_t *a)
{
    static const int order[] = {ACME_HTTP_01, ACME_TLS_ALPN_01};
    for (int i = 0; i < 2; i++)
        if ((a->challenges & order[i]) && !(a->tried & order[i]))
            return order[i];
    return 0;
}

static void install(acme_t *a, const fetch_resp_t *r)
{
    struct name *n = a->cur;
    char err[512];
    size_t key_len = 0;
    char *key_pem = csr_key_to_pem(a->cert_key, &key_len);
    certs_entry_t *e = NULL;
    if (key_pem == NULL ||
        certs_entry_from_pem(r->body, r->len, key_pem, key_len, n->name, &e, err, sizeof(err)) !=
            0) {
        if (key_pem != NULL)
            OPENSSL_cleanse(key_pem, key_len);
        free(key_pem);
        fail(a, "the CA's certificate does not load", NULL);
        return;
    }
    /* storage first: a certificate we serve must survive a restart */
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "name", n->name);
    cJSON_AddStringToObject(meta, "ca", a->directory);
    cJSON_AddNumberToObject(meta, "not_after", (double)e->not_after);
    cJSON_AddNumberToObject(meta, "obtained", (double)time(NULL));
    cJSON_AddNumberToObject(meta, "failures", 0);
    int rc = store_save_cert(a->store, a->directory, n->name, r->body, r->len, key_pem, key_len,
                             meta, err, sizeof(err));
    cJSON_Delete(meta);
    OPENSSL_cleanse(key_pem, key_len);
    free(key_pem);
    if (rc != 0) {
        certs_entry_unref(e);
        fail(a, err, NULL);
        return;
    }
    certs_put(a->certs, n->name, e);
    if (a->shared != NULL)
        pgstore_put_cert(a->shared, a->directory, n->name); /* before clear_order unlocks */
    n->failures = 0;
    a->orders_ok++;
    clear_order(a);
    a->cur = NULL;
    a->step = S_IDLE;
    plan_renewal(a, n, e);
    log_info("acme: %s: certificate obtained (expires %lld, renewal due in %llds %s)", n->name,
             (long long)e->not_after, (long long)(n->renew_at - time(NULL)), n->renew_why);
    certs_entry_unref(e);
    next_order(a);
}

/* The shared challenge row is in (or could not be): tell the CA. */
static void on_challenge_shared(void *arg, int status)
{
    acme_t *a = arg;
    if (a->closing || a->cur == NULL || a->step != S_CHALLENGE)
        return;
    if (status != 0)
        log_warn("acme: %s: the challenge is not in the shared storage: only this instance "
                 "answers it",
                 a->cur->name);
    post(a, a->chal_url, "{}", NULL);
}

/* The order object: where it stands decides the next step. */
static void on_order(acme_t *a, const fetch_resp_t *r)
{
    char status[16];
    cJSON *o = acme_parse_with_status(r->body, status, sizeof(status));
    const char *st = status[0] != '\0' ? status : NULL;
    log_debug("acme: %s: order %s", a->cur->name, status);
    if (st == NULL) {
        cJSON_Delete(o);
        fail(a, "the order is not JSON with a status", NULL);
        return;
    }
    if (a->step == S_ORDER) {
        set_str(&a->order_url, r->location);
        set_str(&a->finalize_url, acme_json_str(o, "finalize"));
        cJSON *az = cJSON_GetObjectItemCaseSensitive(o, "authorizations");
        a->authzs = cJSON_Duplicate(az, 1);
        a->authz_i = 0;
        if (a->order_url == NULL || a->finalize_url == NULL || !cJSON_IsArray(az)) {
            cJSON_Delete(o);
            fail(a, "the order lacks its URL, finalize or authorizations", NULL);
            return;
        }
    }
    if (strcmp(status, "invalid") == 0) {
        cJSON_Delete(o);
        fail(a, "the order became invalid", NULL);
        return;
    }
    if (strcmp(status, "valid") == 0) {
        set_str(&a->cert_url, acme_json_str(o, "certificate"));
        cJSON_Delete(o);
        a->step = S_CERT;
        run_step(a);
        return;
    }
    if (strcmp(status, "processing") == 0) {
        cJSON_Delete(o);
        a->step = S_POLL_ORDER;
        poll_later(a, r);
        return;
    }
    cJSON_Delete(o);
    if (strcmp(status, "ready") == 0) {
        a->step = S_FINALIZE;
        a->polls = 0;
        run_step(a);
    } else if (a->authz_i >= cJSON_GetArraySize(a->authzs)) {
        /* every authorization is valid; the order catches up */
        a->step = S_POLL_ORDER;
        poll_later(a, r);
    } else {
        a->step = S_AUTHZ;
        a->polls = 0;
        run_step(a);
    }
}

/* An authorization: valid ones are skipped, pending ones get a challenge. */
static void on_authz(acme_t *a, const fetch_resp_t *r)
{
    char status[16];
    cJSON *z = acme_parse_with_status(r->body, status, sizeof(status));
    const char *st = status[0] != '\0' ? status : NULL;
    if (st == NULL) {
        cJSON_Delete(z);
        fail(a, "the authorization is not JSON with a status", NULL);
        return;
    }
    if (strcmp(status, "valid") == 0) {
        cJSON_Delete(z);
        clear_challenge(a);
        a->authz_i++;
        a->step = S_AUTHZ;
        a->polls = 0;
        run_step(a);
        return;
    }
    if (strcmp(status, "pending") != 0) {
        /* invalid: that challenge type failed for this name; try the other
         * in a new order (an invalid authorization ends this one) */
        char why[512];
        acme_authz_error(z, why, sizeof(why));
        cJSON_Delete(z);
        log_warn("acme: %s: challenge failed: %s", a->cur->name, why);
        a->tried |= a->chal_type;
        if (next_challenge_type(a) != 0) {
            clear_order(a);
            a->step = S_ORDER;
            run_step(a);
        } else {
            fail(a, why, NULL);
        }
        return;
    }
    if (a->step == S_POLL_AUTHZ) {
        cJSON_Delete(z);
        poll_later(a, r);
        return;
    }
    /* pending and not answered yet: publish the response, then tell the CA */
    a->chal_type = next_challenge_type(a);
    const char *want = a->chal_type == ACME_HTTP_01 ? "http-01" : "tls-alpn-01";
    const cJSON *chosen = acme_authz_challenge(z, want);
    const char *token = chosen != NULL ? acme_json_str(chosen, "token") : NULL;
    const char *url = chosen != NULL ? acme_json_str(chosen, "url") : NULL;
    char *ka = token != NULL ? jws_key_authorization(a->account_key, token) : NULL;
    if (ka == NULL || url == NULL) {
        free(ka);
        cJSON_Delete(z);
        a->tried |= a->chal_type;
        if (next_challenge_type(a) != 0) {
            clear_order(a);
            a->step = S_ORDER;
            run_step(a);
        } else {
            fail(a, "the CA offers no challenge psproxy can answer", NULL);
        }
        return;
    }
    set_str(&a->chal_token, token);
    set_str(&a->chal_url, url);
    if (a->chal_type == ACME_HTTP_01) {
        chal_http_put(token, ka);
        if (a->shared != NULL) {
            /* every instance answers it: tell the CA once the row is in */
            log_info("acme: %s: answering http-01 (on every instance)", a->cur->name);
            a->step = S_CHALLENGE;
            pgstore_put_challenge(a->shared, token, ka, on_challenge_shared, a);
            free(ka);
            cJSON_Delete(z);
            return;
        }
    } else {
        X509 *cert = NULL;
        EVP_PKEY *key = NULL;
        if (csr_alpn_challenge_cert(a->cur->name, ka, &cert, &key) != 0) {
            free(ka);
            cJSON_Delete(z);
            fail(a, "cannot make the TLS-ALPN-01 certificate", NULL);
            return;
        }
        chal_alpn_put(a->cur->name, cert, key);
        X509_free(cert);
        EVP_PKEY_free(key);
    }
    log_info("acme: %s: answering %s", a->cur->name, want);
    free(ka);
    cJSON_Delete(z);
    a->step = S_CHALLENGE;
    post(a, a->chal_url, "{}", NULL);
}

/* Runs the current step: the request it needs. */
static void run_step(acme_t *a)
{
    switch (a->step) {
    case S_LOCK:
        if (!pgstore_ready(a->shared))
            shared_wait(a);
        else
            pgstore_lock(a->shared, a->cur->name, on_shared_lock, a);
        return;
    case S_DIRECTORY:
        if (fetch_start(a->fetch, "GET", a->directory, NULL, NULL, on_response, a) != 0)
            fail(a, "cannot request the directory", NULL);
        return;
    case S_ACCOUNT: {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddBoolToObject(p, "termsOfServiceAgreed", 1);
        if (a->email != NULL) {
            char contact[320];
            snprintf(contact, sizeof(contact), "mailto:%s", a->email);
            cJSON *arr = cJSON_AddArrayToObject(p, "contact");
            cJSON_AddItemToArray(arr, cJSON_CreateString(contact));
        }
        char *body = cJSON_PrintUnformatted(p);
        cJSON_Delete(p);
        post(a, a->new_account, body, NULL);
        free(body);
        return;
    }
    case S_ORDER: {
        char err[256];
        if (a->lock_fd < 0 && store_lock(a->store, a->cur->name, &a->lock_fd, err, sizeof(err)) != 0) {
            a->lock_fd = -1;
            fail(a, "another psproxy is ordering this name (storage lock held)", "60");
            return;
        }
        cJSON *p = cJSON_CreateObject();
        cJSON *ids = cJSON_AddArrayToObject(p, "identifiers");
        cJSON *id = cJSON_CreateObject();
        cJSON_AddStringToObject(id, "type", "dns");
        cJSON_AddStringToObject(id, "value", a->cur->name);
        cJSON_AddItemToArray(ids, id);
        /* RFC 9773 5: name the certificate this one replaces */
        if (a->renewal_info != NULL && a->cur->ari_id != NULL && a->cur->not_after > time(NULL))
            cJSON_AddStringToObject(p, "replaces", a->cur->ari_id);
        if (a->profile != NULL)
            cJSON_AddStringToObject(p, "profile", a->profile);
        char *body = cJSON_PrintUnformatted(p);
        cJSON_Delete(p);
        if (a->cur->not_after != 0)
            log_info("acme: %s: renewing the certificate (expires %lld) with %s", a->cur->name,
                     (long long)a->cur->not_after, a->directory);
        else
            log_info("acme: %s: ordering a certificate from %s", a->cur->name, a->directory);
        post(a, a->new_order, body, NULL);
        free(body);
        return;
    }
    case S_AUTHZ:
    case S_POLL_AUTHZ: {
        const cJSON *u = cJSON_GetArrayItem(a->authzs, a->authz_i);
        if (u == NULL) { /* all valid: the order should be ready */
            a->step = S_POLL_ORDER;
            post(a, a->order_url, NULL, NULL);
            return;
        }
        if (!cJSON_IsString(u)) {
            fail(a, "an authorization URL is not a string", NULL);
            return;
        }
        post(a, u->valuestring, NULL, NULL);
        return;
    }
    case S_FINALIZE: {
        a->cert_key = csr_key_new();
        const char *names[1] = {a->cur->name};
        unsigned char *der = NULL;
        size_t len = 0;
        if (a->cert_key == NULL || csr_make(a->cert_key, names, 1, &der, &len) != 0) {
            fail(a, "cannot make the CSR", NULL);
            return;
        }
        char *b64 = jws_b64url(der, len);
        free(der);
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "csr", b64);
        char *body = cJSON_PrintUnformatted(p);
        cJSON_Delete(p);
        free(b64);
        post(a, a->finalize_url, body, NULL);
        free(body);
        return;
    }
    case S_POLL_ORDER:
        post(a, a->order_url, NULL, NULL);
        return;
    case S_CERT:
        if (a->cert_url == NULL) {
            fail(a, "the valid order has no certificate URL", NULL);
            return;
        }
        post(a, a->cert_url, NULL, "application/pem-certificate-chain");
        return;
    default:
        return;
    }
}

static void take_str(char **dst, char **src)
{
    free(*dst);
    *dst = *src;
    *src = NULL;
}

/* Keeps the directory's URLs from R; names waiting for ARI go on. Returns
 * 0; UV_EIO when no answer came (R->error says why), PS_ECA when the CA
 * answered with an error status, PS_EPROTO when the answer is no directory
 * (another status, not JSON, or newNonce, newAccount or newOrder missing),
 * PS_ECONFIG when the CA does not offer acme_profile (A is fatal now and
 * on_fatal has been told). */
static int parse_directory(acme_t *a, const fetch_resp_t *r)
{
    acme_dir_t d;
    if (r->status == 0)
        return UV_EIO;
    if (r->status != 200)
        return r->status >= 400 ? PS_ECA : PS_EPROTO;
    if (acme_dir_parse(r->body, a->profile, &d) != 0)
        return PS_EPROTO;
    take_str(&a->new_nonce, &d.new_nonce);
    take_str(&a->new_account, &d.new_account);
    take_str(&a->new_order, &d.new_order);
    take_str(&a->renewal_info, &d.renewal_info);
    /* a profile the CA does not list is a configuration error, not a retry */
    if (a->profile != NULL && !d.profile_offered && !a->fatal) {
        char why[1024];
        snprintf(why, sizeof(why), "acme_profile: the CA at %s does not offer \"%s\" (%s%s)",
                 a->directory, a->profile, d.offered[0] ? "it offers: " : "it lists no profiles",
                 d.offered);
        a->fatal = 1;
        if (a->on_fatal != NULL)
            a->on_fatal(a->fatal_arg, why);
        acme_dir_dispose(&d);
        return PS_ECONFIG;
    }
    acme_dir_dispose(&d);
    if (a->new_nonce == NULL || a->new_account == NULL || a->new_order == NULL)
        return PS_EPROTO;
    a->dir_state = 2;
    for (struct name *n = a->names; n != NULL; n = n->next) {
        if (n->ari_waiting) {
            n->ari_waiting = 0;
            ari_fetch(n);
        }
    }
    return 0;
}

/* The directory fetched for ARI outside an order. */
static void on_directory(void *arg, const fetch_resp_t *r)
{
    acme_t *a = arg;
    if (a->closing || a->fatal)
        return;
    if (parse_directory(a, r) != 0) {
        if (a->fatal)
            return;
        char why[256];
        acme_problem_text(r, why, sizeof(why));
        log_warn("acme: directory %s: %s; renewal by lifetime until it answers", a->directory,
                 why);
        a->dir_state = 0;
        for (struct name *n = a->names; n != NULL; n = n->next) {
            if (n->ari_waiting) {
                n->ari_waiting = 0;
                n->ari_next = time(NULL) + 3600;
                arm(n);
            }
        }
    }
}

static void on_response(void *arg, const fetch_resp_t *r)
{
    acme_t *a = arg;
    if (a->closing || a->cur == NULL)
        return;
    log_debug("acme: %s: %s: HTTP %ld%s%s", a->cur->name, step_names[a->step], r->status,
              r->error != NULL ? " " : "", r->error != NULL ? r->error : "");
    if (r->nonce != NULL && jws_is_b64url(r->nonce))
        set_str(&a->nonce, r->nonce); /* RFC 8555 6.5.1: ignore malformed nonces */
    if (a->step == S_NONCE) {
        a->step = a->pending_step;
        if (a->nonce == NULL) {
            char why[512];
            acme_problem_text(r, why, sizeof(why));
            fail(a, why, r->retry_after);
            return;
        }
        send_signed(a);
        return;
    }
    if (r->status == 400 && acme_is_problem(r, "urn:ietf:params:acme:error:badNonce") &&
        a->nonce_retries < ACME_MAX_NONCE_RETRIES) {
        /* RFC 8555 6.5: the rejection carries a fresh nonce; sign again */
        a->nonce_retries++;
        if (a->nonce == NULL) {
            a->pending_step = a->step;
            a->step = S_NONCE;
            if (fetch_start(a->fetch, "HEAD", a->new_nonce, NULL, NULL, on_response, a) != 0)
                fail(a, "cannot request a nonce", NULL);
            return;
        }
        send_signed(a);
        return;
    }
    if (r->status < 200 || r->status >= 300) {
        char why[512];
        acme_problem_text(r, why, sizeof(why));
        fail(a, why, r->retry_after);
        return;
    }
    switch (a->step) {
    case S_DIRECTORY: {
        if (parse_directory(a, r) != 0) {
            if (a->fatal) {
                clear_order(a);
                a->cur = NULL;
                a->step = S_IDLE;
                return;
            }
            fail(a, "the directory lacks newNonce, newAccount or newOrder", NULL);
            return;
        }
        a->step = a->kid != NULL ? S_ORDER : S_ACCOUNT;
        run_step(a);
        return;
    }
    case S_ACCOUNT: {
        if (r->location == NULL) {
            fail(a, "newAccount answered without the account URL", NULL);
            return;
        }
        set_str(&a->kid, r->location);
        size_t len = 0;
        char *pem = csr_key_to_pem(a->account_key, &len);
        char err[512];
        int rc = pem != NULL ? store_save_account(a->store, a->directory, pem, len, a->kid, err,
                                                  sizeof(err))
                             : UV_EIO;
        if (pem != NULL) {
            OPENSSL_cleanse(pem, len);
            free(pem);
        }
        if (rc != 0) {
            fail(a, pem != NULL ? err : "cannot encode the account key", NULL);
            return;
        }
        log_info("acme: account %s", a->kid);
        if (a->shared != NULL)
            pgstore_put_account(a->shared, a->directory);
        a->step = S_ORDER;
        run_step(a);
        return;
    }
    case S_ORDER:
    case S_POLL_ORDER:
    case S_FINALIZE:
        on_order(a, r);
        return;
    case S_AUTHZ:
    case S_POLL_AUTHZ:
        on_authz(a, r);
        return;
    case S_CHALLENGE:
        /* the CA validates now; watch the authorization */
        a->step = S_POLL_AUTHZ;
        a->polls = 0;
        poll_later(a, r);
        return;
    case S_CERT:
        install(a, r);
        return;
    default:
        return;
    }
}

/* ---- names and their timers --------------------------------------------- */

/* The first request of an order, once it may order at all. */
static int first_step(const acme_t *a)
{
    return a->new_order != NULL ? (a->kid != NULL ? S_ORDER : S_ACCOUNT) : S_DIRECTORY;
}

static void next_order(acme_t *a)
{
    if (a->cur != NULL || a->closing || a->fatal || a->shared_waiting)
        return;
    for (struct name *n = a->names; n != NULL; n = n->next) {
        if (!n->queued)
            continue;
        n->queued = 0;
        a->cur = n;
        a->tried = 0;
        a->polls = 0;
        a->lock_fd = -1;
        a->step = a->shared != NULL ? S_LOCK : first_step(a);
        run_step(a);
        return;
    }
}

/* ---- storage shared with other instances ---------------------------------- */

/* The shared storage is away or not in sync yet: the names wait for it
 * (on_shared_ready), never ordered without its lock. */
static void shared_wait(acme_t *a)
{
    struct name *n = a->cur;
    n->queued = 1;
    a->cur = NULL;
    a->step = S_IDLE;
    if (!a->shared_waiting)
        log_info("acme: %s: waiting for the shared storage before ordering", n->name);
    a->shared_waiting = 1;
}

static void on_shared_lock(void *arg, int status)
{
    acme_t *a = arg;
    if (a->closing || a->cur == NULL || a->step != S_LOCK)
        return;
    struct name *n = a->cur;
    if (status == UV_ENOTCONN) {
        shared_wait(a);
        return;
    }
    if (status == 0 && n->renew_at > time(NULL)) {
        /* the last holder renewed it (on_shared_cert came with the lock) */
        pgstore_unlock(a->shared, n->name);
        a->cur = NULL;
        a->step = S_IDLE;
        next_order(a);
        return;
    }
    if (status != 0) {
        /* another instance orders it: its certificate comes through the
         * database; look again later in case that order fails */
        log_info("acme: %s: another psproxy is ordering it; taking its certificate", n->name);
        a->cur = NULL;
        a->step = S_IDLE;
        n->renew_at = time(NULL) + 30 + (int64_t)(rnd32() % 30);
        n->renew_why = "after another instance's order";
        arm(n);
        next_order(a);
        return;
    }
    a->shared_locked = 1;
    a->step = first_step(a);
    run_step(a);
}

static int load_stored(acme_t *a, struct name *n);

static void on_shared_cert(pgstore_t *ps, const char *ca, const char *name, void *data)
{
    acme_t *a = data;
    (void)ps;
    if (strcmp(ca, a->directory) != 0)
        return;
    for (struct name *n = a->names; n != NULL; n = n->next) {
        if (strcmp(n->name, name) != 0 || n == a->cur)
            continue;
        n->failures = 0;
        if (load_stored(a, n) == 0)
            n->queued = 0; /* served; renewed when due */
    }
}

/* The shared account replaces this instance's own (one account for all). */
static void reload_account(acme_t *a)
{
    char err[256], *pem = NULL, *kid = NULL;
    size_t len = 0;
    if (store_load_account(a->store, a->directory, &pem, &len, &kid, err, sizeof(err)) != 0)
        return;
    EVP_PKEY *key = csr_key_from_pem(pem, len);
    store_wipe_free(pem, len);
    if (key == NULL) {
        free(kid);
        return;
    }
    EVP_PKEY_free(a->account_key);
    a->account_key = key;
    free(a->kid);
    a->kid = kid;
    log_info("acme: account %s (from the shared storage)", a->kid);
}

static void on_shared_account(pgstore_t *ps, const char *ca, void *data)
{
    acme_t *a = data;
    (void)ps;
    if (strcmp(ca, a->directory) == 0 && a->cur == NULL)
        reload_account(a); /* an order under way keeps the account it started with */
}

static void on_shared_ready(pgstore_t *ps, void *data)
{
    acme_t *a = data;
    (void)ps;
    if (!a->shared_waiting)
        return;
    a->shared_waiting = 0;
    next_order(a);
}

static void on_name_timer(uv_timer_t *t)
{
    struct name *n = t->data;
    int64_t now = time(NULL);
    if (now >= n->renew_at) {
        n->queued = 1;
        next_order(n->a);
    } else if (n->ari_next != 0 && now >= n->ari_next) {
        ari_fetch(n);
    } else {
        arm(n);
    }
}

/* ---- ARI (RFC 9773) ------------------------------------------------------- */

static void on_ari(void *arg, const fetch_resp_t *r)
{
    struct name *n = arg;
    acme_t *a = n->a;
    int64_t now = time(NULL);
    int64_t ra = r->retry_after != NULL ? renew_parse_retry_after(r->retry_after, now) : -1;
    n->ari_next = renew_ari_refetch(now, ra);
    int64_t start, end;
    if (acme_ari_window(r->status == 200 ? r->body : NULL, &start, &end) != 0) {
        char why[256];
        acme_problem_text(r, why, sizeof(why));
        log_warn("acme: %s: renewal info unusable (%s); renewing by lifetime", n->name, why);
    } else if (!(n->failures > 0 && n->renew_at > now)) {
        int64_t at = renew_pick_in_window(start, end, rnd32());
        if (n->renew_at != at)
            log_info("acme: %s: ARI window %lld..%lld: renewal at %lld (in %llds)", n->name,
                     (long long)start, (long long)end, (long long)at, (long long)(at - now));
        n->renew_at = at;
        n->renew_why = "in the CA's ARI window";
    }
    save_meta(a, n, NULL);
    arm(n);
}

static void on_directory(void *arg, const fetch_resp_t *r);

static void ari_fetch(struct name *n)
{
    acme_t *a = n->a;
    if (a->dir_state != 2) {
        n->ari_waiting = 1;
        if (a->dir_state == 0) {
            a->dir_state = 1;
            if (fetch_start(a->fetch, "GET", a->directory, NULL, NULL, on_directory, a) != 0)
                a->dir_state = 0;
        }
        return;
    }
    if (a->renewal_info == NULL || n->ari_id == NULL) {
        n->ari_next = 0; /* the CA has no ARI: the lifetime rule stands */
        arm(n);
        return;
    }
    char url[2048];
    size_t l = strlen(a->renewal_info);
    snprintf(url, sizeof(url), "%s%s%s", a->renewal_info,
             l > 0 && a->renewal_info[l - 1] == '/' ? "" : "/", n->ari_id);
    n->ari_next = 0;
    if (fetch_start(a->fetch, "GET", url, NULL, NULL, on_ari, n) != 0) {
        n->ari_next = time(NULL) + 3600;
        arm(n);
    }
}

/* A stored certificate that loads and is not expired serves at once.
 * Returns 0 when it does; UV_ENOENT when none is stored; else, logged
 * here: store_load_cert's code (unreadable or corrupt storage), UV_EINVAL
 * when the chain and key do not load, PS_EEXPIRED when it has expired. */
static int load_stored(acme_t *a, struct name *n)
{
    char *chain = NULL, *key = NULL, err[512];
    size_t chain_len = 0, key_len = 0;
    cJSON *meta = NULL;
    /* the back-off survives restarts, certificate or not */
    if (store_load_meta(a->store, a->directory, n->name, &meta, err, sizeof(err)) == 0 &&
        acme_meta_backoff(meta, &n->failures, &n->renew_at))
        n->renew_why = "retry after a failure";
    cJSON_Delete(meta);
    meta = NULL;
    int rc = store_load_cert(a->store, a->directory, n->name, &chain, &chain_len, &key, &key_len,
                             &meta, err, sizeof(err));
    cJSON_Delete(meta);
    if (rc != 0) {
        if (rc != UV_ENOENT)
            log_err("acme: %s: stored certificate: %s", n->name, err);
        return rc;
    }
    certs_entry_t *e = NULL;
    rc = certs_entry_from_pem(chain, chain_len, key, key_len, n->name, &e, err, sizeof(err));
    OPENSSL_cleanse(key, key_len);
    free(key);
    free(chain);
    if (rc != 0) {
        log_err("acme: %s: stored certificate does not load: %s", n->name, err);
        return UV_EINVAL;
    }
    if (e->not_after <= time(NULL)) {
        log_warn("acme: %s: the stored certificate has expired", n->name);
        certs_entry_unref(e);
        return PS_EEXPIRED;
    }
    certs_put(a->certs, n->name, e);
    plan_renewal(a, n, e);
    log_info("acme: %s: serving the stored certificate (expires %lld, renewal due in %llds %s)",
             n->name, (long long)e->not_after, (long long)(n->renew_at - time(NULL)),
             n->renew_why);
    certs_entry_unref(e);
    return 0;
}

int acme_manage(acme_t *a, const char *name)
{
    for (struct name *m = a->names; m != NULL; m = m->next)
        if (strcmp(m->name, name) == 0)
            return 0; /* a reload names it again */
    struct name *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return UV_ENOMEM;
    n->name = strdup(name);
    if (n->name == NULL) {
        free(n);
        return UV_ENOMEM;
    }
    n->a = a;
    uv_timer_init(a->loop, &n->timer);
    n->timer.data = n;
    n->next = a->names;
    a->names = n;
    if (load_stored(a, n) != 0) {
        if (n->renew_at > time(NULL)) {
            log_info("acme: %s: no certificate yet; the last order failed, next try in %llds",
                     n->name, (long long)(n->renew_at - time(NULL)));
            arm(n);
        } else {
            n->queued = 1;
            next_order(a);
        }
    }
    return 0;
}

acme_t *acme_new(uv_loop_t *loop, const acme_config_t *cfg, certs_t *certs, char *err,
                 size_t errlen)
{
    acme_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->loop = loop;
    a->certs = certs;
    a->lock_fd = -1;
    a->directory = strdup(cfg->directory != NULL ? cfg->directory : ACME_LETSENCRYPT);
    a->email = dup_or_null(cfg->email);
    a->challenges = cfg->challenges != 0 ? cfg->challenges : ACME_HTTP_01 | ACME_TLS_ALPN_01;
    a->profile = dup_or_null(cfg->profile);
    a->on_fatal = cfg->on_fatal;
    a->fatal_arg = cfg->fatal_arg;
    uv_timer_init(loop, &a->poll_timer);
    a->poll_timer.data = a;
    if (store_open(cfg->storage, &a->store, err, errlen) != 0)
        goto fail;
    a->fetch = fetch_new(loop, cfg->ca_root);
    if (a->fetch == NULL) {
        snprintf(err, errlen, "acme: cannot start libcurl");
        goto fail;
    }
    /* the account: the stored one, else a new key registered at the first order */
    char *pem = NULL;
    size_t len = 0;
    int rc = store_load_account(a->store, a->directory, &pem, &len, &a->kid, err, errlen);
    if (rc == 0) {
        a->account_key = csr_key_from_pem(pem, len);
        OPENSSL_cleanse(pem, len);
        free(pem);
        if (a->account_key == NULL) {
            snprintf(err, errlen, "%s: the stored ACME account key does not load",
                     store_root(a->store));
            goto fail;
        }
    } else if (rc == UV_ENOENT) {
        free(a->kid);
        a->kid = NULL;
        a->account_key = jws_key_new();
    } else {
        goto fail;
    }
    if (cfg->shared_dsn != NULL) {
        seal_key_t key;
        if (seal_key_load(cfg->shared_key_file, &key, err, errlen) != 0)
            goto fail;
        pgstore_events_t ev = {on_shared_ready, on_shared_cert, on_shared_account};
        a->shared = pgstore_new(loop, cfg->shared_dsn, &key, a->store, &ev, a);
        seal_key_wipe(&key);
        if (a->shared == NULL) {
            snprintf(err, errlen, "storage postgres: the dsn does not parse");
            goto fail;
        }
        pgstore_start(a->shared);
    }
    if (a->profile != NULL) {
        /* check the profile now, not at the first renewal months away */
        a->dir_state = 1;
        if (fetch_start(a->fetch, "GET", a->directory, NULL, NULL, on_directory, a) != 0)
            a->dir_state = 0;
    }
    return a;
fail:
    acme_free(a);
    return NULL;
}

void acme_counts(const acme_t *a, uint64_t *ok, uint64_t *failed)
{
    *ok = a != NULL ? a->orders_ok : 0;
    *failed = a != NULL ? a->orders_failed : 0;
}

static void on_name_closed(uv_handle_t *h)
{
    struct name *n = h->data;
    free(n->ari_id);
    free(n->name);
    free(n);
}

static void on_poll_closed(uv_handle_t *h)
{
    acme_t *a = h->data;
    free(a);
}

void acme_free(acme_t *a)
{
    if (a == NULL)
        return;
    a->closing = 1;
    clear_order(a);
    fetch_free(a->fetch);
    pgstore_free(a->shared); /* its pending answers come now, to a closing client */
    a->shared = NULL;
    while (a->names != NULL) {
        struct name *n = a->names;
        a->names = n->next;
        uv_close((uv_handle_t *)&n->timer, on_name_closed);
    }
    store_close(a->store);
    EVP_PKEY_free(a->account_key);
    free(a->directory);
    free(a->email);
    free(a->new_nonce);
    free(a->new_account);
    free(a->new_order);
    free(a->renewal_info);
    free(a->profile);
    free(a->nonce);
    free(a->kid);
    uv_close((uv_handle_t *)&a->poll_timer, on_poll_closed);
}
