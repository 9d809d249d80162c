/* The local cache mirrored to and from PostgreSQL, advisory locks for
 * ordering, shared HTTP-01 answers. See pgstore.h. */
#include "pgstore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chal.h"
#include "common.h"
#include "log.h"
#include "pg.h"

#define CH_CERTS "psproxy_certs"
#define CH_ACCOUNTS "psproxy_accounts"
#define CH_CHALLENGES "psproxy_challenges"
/* pg_advisory_xact_lock key serialising schema creation ("psproxy" in ASCII) */
#define SCHEMA_LOCK "7378735378725121"
#define MAX_LOCKS 64
#define MAX_PENDING 64

struct pending {
    int account; /* 1: the account of CA; 0: the certificate NAME of CA */
    char *ca, *name;
};

struct pgstore {
    pg_t *pg;
    seal_key_t key;
    store_t *cache;
    pgstore_events_t ev;
    void *data;
    uv_timer_t poll;
    long long rev_seen; /* the newest certificate row already in the cache */
    int ready;
    int missed; /* a NOTIFY came before the sync after a connect was done */
    int schema_failed;
    uv_timer_t later;         /* answers owed while the database is away */
    struct later *later_list;
    int closed; /* handles closed, of 2 */
    struct chal_wait *waits;
    unsigned long session;
    struct {
        char *name;
        unsigned long session; /* the session holding it */
    } locks[MAX_LOCKS];
    struct pending pending[MAX_PENDING]; /* uploads waiting for the database */
    size_t n_pending;
};

/* An HTTP-01 answer waiting for every instance's confirmation. */
struct chal_wait {
    struct chal_wait *next; /* the store's waits: pgstore_free ends them */
    pgstore_t *ps;
    char *token;
    void (*cb)(void *arg, int status);
    void *arg;
    uint64_t deadline;
    uv_timer_t timer;
};

static void chal_wait_end(struct chal_wait *w, int status);

/* Whether this instance waits for the acks of TOKEN: it placed it. */
static int chal_wait_find(const pgstore_t *ps, const char *token)
{
    for (const struct chal_wait *w = ps->waits; w != NULL; w = w->next)
        if (strcmp(w->token, token) == 0)
            return 1;
    return 0;
}

/* A query's continuation with what it needs, freed after the callback. */
struct op {
    pgstore_t *ps;
    void (*cb)(void *arg, int status);
    void *arg;
    char *name;
    int last; /* the transaction's COMMIT: report the outcome */
};

static void download(pgstore_t *ps);
static void check_key(pgstore_t *ps);
static void on_upload(pg_t *pg, const PGresult *res, const char *err, void *arg);
static void on_unlocked(pg_t *pg, const PGresult *res, const char *err, void *arg);

/* An answer given from the loop, not from inside the call that asked. */
struct later {
    struct later *next;
    void (*cb)(void *arg, int status);
    void *arg;
    int status;
};

static void on_later(uv_timer_t *t)
{
    pgstore_t *ps = t->data;
    while (ps->later_list != NULL) {
        struct later *l = ps->later_list;
        ps->later_list = l->next;
        l->cb(l->arg, l->status);
        free(l);
    }
}

static void answer_later(pgstore_t *ps, void (*cb)(void *, int), void *arg, int status)
{
    if (cb == NULL)
        return;
    struct later *l = malloc(sizeof(*l));
    if (l == NULL)
        abort();
    *l = (struct later){NULL, cb, arg, status};
    struct later **tail = &ps->later_list;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = l;
    uv_timer_start(&ps->later, on_later, 0, 0);
}

static struct op *op_new(pgstore_t *ps, void (*cb)(void *, int), void *arg, const char *name)
{
    struct op *o = calloc(1, sizeof(*o));
    if (o == NULL)
        abort();
    o->ps = ps;
    o->cb = cb;
    o->arg = arg;
    o->name = name != NULL ? strdup(name) : NULL;
    return o;
}

static void op_free(struct op *o)
{
    free(o->name);
    free(o);
}

/* ---- the schema ----------------------------------------------------------- */

static const char *const SCHEMA[] = {
    "BEGIN",
    "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK ")",
    "CREATE TABLE IF NOT EXISTS psproxy_schema (version integer NOT NULL)",
    "CREATE SEQUENCE IF NOT EXISTS psproxy_rev",
    "CREATE TABLE IF NOT EXISTS psproxy_accounts (ca text PRIMARY KEY, key bytea NOT NULL, "
    "kid text NOT NULL, rev bigint NOT NULL, updated timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS psproxy_certs (ca text NOT NULL, name text NOT NULL, "
    "chain text NOT NULL, key bytea NOT NULL, meta jsonb NOT NULL, rev bigint NOT NULL, "
    "updated timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (ca, name))",
    "CREATE TABLE IF NOT EXISTS psproxy_challenges (token text PRIMARY KEY, keyauth text NOT "
    "NULL, expires timestamptz NOT NULL, acks integer NOT NULL DEFAULT 0)",
    /* a value sealed by the first instance: every other must open it, or
     * its key_file differs and it would write rows the others cannot read */
    "CREATE TABLE IF NOT EXISTS psproxy_keycheck (sealed bytea NOT NULL)",
    "INSERT INTO psproxy_schema SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM psproxy_schema)",
    "SELECT max(version), count(*) FROM psproxy_schema",
    "COMMIT",
};

#define KEYCHECK_AAD "psproxy keycheck"
#define KEYCHECK_TEXT "psproxy key check"

static unsigned char *bytea(const PGresult *res, int row, int col, size_t *len);

static void on_keycheck(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    pgstore_t *ps = o->ps;
    (void)pg;
    op_free(o);
    if (res == NULL || err != NULL)
        return; /* the connection went: the next one checks again */
    if (PQntuples(res) == 0) {
        /* the first instance here: seal the check value with our key */
        unsigned char *sealed = NULL;
        size_t len = 0;
        if (seal_encrypt(&ps->key, KEYCHECK_AAD, KEYCHECK_TEXT, strlen(KEYCHECK_TEXT), &sealed,
                         &len) != 0)
            return;
        const char *v[1] = {(const char *)sealed};
        int l[1] = {(int)len}, f[1] = {1};
        /* two first instances at once: the first insert wins, both check it */
        pg_query(ps->pg,
                 "INSERT INTO psproxy_keycheck SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM "
                 "psproxy_keycheck)",
                 1, v, l, f, on_upload, op_new(ps, NULL, NULL, NULL));
        free(sealed);
        check_key(ps);
        return;
    }
    size_t len = 0;
    unsigned char *sealed = bytea(res, 0, 0, &len);
    char *plain = NULL;
    size_t plain_len = 0;
    int rc = sealed != NULL ? seal_decrypt(&ps->key, KEYCHECK_AAD, sealed, len, &plain,
                                           &plain_len)
                            : UV_EINVAL;
    PQfreemem(sealed);
    store_wipe_free(plain, plain_len);
    if (rc != 0) {
        log_err("storage: postgres %s: key_file is not the key the other instances use: not "
                "taking or storing anything, no certificate is ordered",
                pg_target(ps->pg));
        ps->schema_failed = 1;
        return;
    }
    download(ps);
}

static void check_key(pgstore_t *ps)
{
    pg_query(ps->pg, "SELECT sealed FROM psproxy_keycheck LIMIT 1", 0, NULL, NULL, NULL,
             on_keycheck, op_new(ps, NULL, NULL, NULL));
}

static void on_schema_step(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    pgstore_t *ps = o->ps;
    (void)pg;
    if (res == NULL || err != NULL) {
        if (!ps->schema_failed)
            log_err("storage: postgres %s: cannot set up the tables: %s", pg_target(ps->pg),
                    err != NULL ? err : "no answer");
        ps->schema_failed = 1;
    } else if (PQnfields(res) == 2 && PQntuples(res) == 1) {
        int version = atoi(PQgetvalue(res, 0, 0));
        int rows = atoi(PQgetvalue(res, 0, 1));
        if (version != PGSTORE_SCHEMA_VERSION || rows != 1) {
            log_err("storage: postgres %s: the tables are schema version %d (%d rows), this "
                    "psproxy knows %d: not touching them (upgrades are explicit)",
                    pg_target(ps->pg), version, rows, PGSTORE_SCHEMA_VERSION);
            ps->schema_failed = 1;
        }
    }
    if (o->last && !ps->schema_failed)
        check_key(ps);
    op_free(o);
}

/* ---- uploads ------------------------------------------------------------- */

static void on_upload(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    (void)pg;
    if ((res == NULL || err != NULL) && o->name != NULL)
        log_warn("storage: postgres: %s not stored: %s (retried when the database is back)",
                 o->name, err != NULL ? err : "no answer");
    if (o->last && o->cb != NULL)
        o->cb(o->arg, res != NULL && err == NULL ? 0 : UV_EIO);
    op_free(o);
}

/* Runs STMTS[0..N) (each with its own parameters) as one transaction;
 * ON_DONE(ARG, status) after the COMMIT. Returns 0 or UV_ENOTCONN. */
struct stmt {
    const char *sql;
    int n;
    const char *values[6];
    int lengths[6];
    int formats[6];
};

static int transaction(pgstore_t *ps, const struct stmt *st, size_t n, const char *what,
                       void (*on_done)(void *, int), void *arg)
{
    struct op *b = op_new(ps, NULL, NULL, NULL);
    if (pg_query(ps->pg, "BEGIN", 0, NULL, NULL, NULL, on_upload, b) != 0) {
        op_free(b);
        return UV_ENOTCONN;
    }
    for (size_t i = 0; i < n; i++)
        pg_query(ps->pg, st[i].sql, st[i].n, st[i].values, st[i].lengths, st[i].formats,
                 on_upload, op_new(ps, NULL, NULL, i == 0 ? what : NULL));
    struct op *c = op_new(ps, on_done, arg, NULL);
    c->last = 1;
    pg_query(ps->pg, "COMMIT", 0, NULL, NULL, NULL, on_upload, c);
    return 0;
}

static char *aad_for(const char *kind, const char *ca, const char *name)
{
    size_t n = strlen(kind) + strlen(ca) + (name != NULL ? strlen(name) : 0) + 16;
    char *s = malloc(n);
    if (s == NULL)
        abort();
    snprintf(s, n, "psproxy %s %s%s%s", kind, ca, name != NULL ? " " : "",
             name != NULL ? name : "");
    return s;
}

static int upload_cert(pgstore_t *ps, const char *ca, const char *name)
{
    char err[256];
    char *chain = NULL, *key = NULL;
    size_t chain_len = 0, key_len = 0;
    cJSON *meta = NULL;
    if (store_load_cert(ps->cache, ca, name, &chain, &chain_len, &key, &key_len, &meta, err,
                        sizeof(err)) != 0) {
        log_warn("storage: postgres: %s: nothing to upload: %s", name, err);
        return 0;
    }
    char *aad = aad_for("cert", ca, name);
    unsigned char *sealed = NULL;
    size_t sealed_len = 0;
    int rc = seal_encrypt(&ps->key, aad, key, key_len, &sealed, &sealed_len);
    store_wipe_free(key, key_len);
    free(aad);
    char *meta_text = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (rc == 0) {
        struct stmt st[2] = {
            {"INSERT INTO psproxy_certs (ca, name, chain, key, meta, rev) VALUES ($1, $2, $3, $4, "
             "$5::jsonb, nextval('psproxy_rev')) ON CONFLICT (ca, name) DO UPDATE SET chain = "
             "EXCLUDED.chain, key = EXCLUDED.key, meta = EXCLUDED.meta, rev = EXCLUDED.rev, "
             "updated = now()",
             5,
             {ca, name, chain, (const char *)sealed, meta_text},
             {0, 0, 0, (int)sealed_len, 0},
             {0, 0, 0, 1, 0}},
            {"SELECT pg_notify('" CH_CERTS "', $1)", 1, {name}, {0}, {0}},
        };
        rc = transaction(ps, st, 2, name, NULL, NULL);
    }
    free(sealed);
    free(meta_text);
    free(chain);
    return rc;
}

static int upload_account(pgstore_t *ps, const char *ca)
{
    char err[256];
    char *key = NULL, *kid = NULL;
    size_t key_len = 0;
    if (store_load_account(ps->cache, ca, &key, &key_len, &kid, err, sizeof(err)) != 0)
        return 0;
    char *aad = aad_for("account", ca, NULL);
    unsigned char *sealed = NULL;
    size_t sealed_len = 0;
    int rc = seal_encrypt(&ps->key, aad, key, key_len, &sealed, &sealed_len);
    store_wipe_free(key, key_len);
    free(aad);
    if (rc == 0) {
        struct stmt st[2] = {
            {"INSERT INTO psproxy_accounts (ca, key, kid, rev) VALUES ($1, $2, $3, "
             "nextval('psproxy_rev')) ON CONFLICT (ca) DO NOTHING",
             3,
             {ca, (const char *)sealed, kid},
             {0, (int)sealed_len, 0},
             {0, 1, 0}},
            {"SELECT pg_notify('" CH_ACCOUNTS "', $1)", 1, {ca}, {0}, {0}},
        };
        rc = transaction(ps, st, 2, "the account", NULL, NULL);
    }
    free(sealed);
    free(kid);
    return rc;
}

static void queue_upload(pgstore_t *ps, int account, const char *ca, const char *name)
{
    for (size_t i = 0; i < ps->n_pending; i++) {
        struct pending *p = &ps->pending[i];
        if (p->account == account && strcmp(p->ca, ca) == 0 &&
            (account || strcmp(p->name, name) == 0))
            return; /* the cache holds the newest: one upload takes it */
    }
    if (ps->n_pending == MAX_PENDING) {
        log_warn("storage: postgres: too many uploads waiting; %s waits for the next change",
                 account ? "the account" : name);
        return;
    }
    struct pending *p = &ps->pending[ps->n_pending++];
    p->account = account;
    p->ca = strdup(ca);
    p->name = name != NULL ? strdup(name) : NULL;
}

static void flush_uploads(pgstore_t *ps)
{
    while (ps->n_pending > 0 && ps->ready) {
        struct pending *p = &ps->pending[0];
        int rc = p->account ? upload_account(ps, p->ca) : upload_cert(ps, p->ca, p->name);
        if (rc == UV_ENOTCONN)
            return;
        free(p->ca);
        free(p->name);
        memmove(ps->pending, ps->pending + 1, --ps->n_pending * sizeof(*p));
    }
}

void pgstore_put_cert(pgstore_t *ps, const char *ca, const char *name)
{
    queue_upload(ps, 0, ca, name);
    flush_uploads(ps);
}

void pgstore_put_account(pgstore_t *ps, const char *ca)
{
    queue_upload(ps, 1, ca, NULL);
    flush_uploads(ps);
}

/* ---- downloads ----------------------------------------------------------- */

/* A bytea column in text format ("\x..."): malloc'd bytes, or NULL. */
static unsigned char *bytea(const PGresult *res, int row, int col, size_t *len)
{
    return PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), len);
}

/* The private key sealed in column COL of row R, opened: 0 and a malloc'd
 * *KEY (wipe it), or <0 when it does not open (another key_file, or the
 * row was changed: the AAD binds it to KIND, CA and NAME). */
static int unseal(pgstore_t *ps, const PGresult *res, int r, int col, const char *kind,
                  const char *ca, const char *name, char **key, size_t *key_len)
{
    size_t sealed_len = 0;
    unsigned char *sealed = bytea(res, r, col, &sealed_len);
    char *aad = aad_for(kind, ca, name);
    int rc = sealed != NULL ? seal_decrypt(&ps->key, aad, sealed, sealed_len, key, key_len)
                            : UV_EINVAL;
    PQfreemem(sealed);
    free(aad);
    if (rc != 0)
        log_err("storage: postgres: the %s key of %s does not open with key_file (another "
                "key, or the row was changed); not taken",
                kind, name != NULL ? name : ca);
    return rc;
}

static void on_certs(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    pgstore_t *ps = o->ps;
    (void)pg;
    op_free(o);
    if (res == NULL || err != NULL)
        return;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *ca = PQgetvalue(res, r, 0), *name = PQgetvalue(res, r, 1);
        const char *chain = PQgetvalue(res, r, 2);
        long long rev = atoll(PQgetvalue(res, r, 5));
        if (rev > ps->rev_seen)
            ps->rev_seen = rev;
        /* the cache has it already (our own upload): nothing to do */
        char *have = NULL, *have_key = NULL;
        size_t have_len = 0, have_key_len = 0;
        char e[256];
        cJSON *have_meta = NULL;
        int same = store_load_cert(ps->cache, ca, name, &have, &have_len, &have_key,
                                   &have_key_len, &have_meta, e, sizeof(e)) == 0 &&
                   strcmp(have, chain) == 0;
        free(have);
        store_wipe_free(have_key, have_key_len);
        cJSON_Delete(have_meta);
        if (same)
            continue;
        char *key = NULL;
        size_t key_len = 0;
        if (unseal(ps, res, r, 3, "cert", ca, name, &key, &key_len) != 0)
            continue;
        cJSON *meta = cJSON_Parse(PQgetvalue(res, r, 4));
        int rc = store_save_cert(ps->cache, ca, name, chain, strlen(chain), key, key_len, meta,
                                 e, sizeof(e));
        cJSON_Delete(meta);
        store_wipe_free(key, key_len);
        if (rc != 0) {
            log_err("storage: %s: cannot write the cache: %s", name, e);
            continue;
        }
        log_info("storage: %s: a newer certificate from the database", name);
        if (ps->ev.on_cert != NULL)
            ps->ev.on_cert(ps, ca, name, ps->data);
    }
}

static void on_accounts(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    pgstore_t *ps = o->ps;
    (void)pg;
    op_free(o);
    if (res == NULL || err != NULL)
        return;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *ca = PQgetvalue(res, r, 0), *kid = PQgetvalue(res, r, 2);
        char *have_key = NULL, *have_kid = NULL;
        size_t have_len = 0;
        char e[256];
        int same = store_load_account(ps->cache, ca, &have_key, &have_len, &have_kid, e,
                                      sizeof(e)) == 0 &&
                   strcmp(have_kid, kid) == 0;
        store_wipe_free(have_key, have_len);
        free(have_kid);
        if (same)
            continue;
        char *key = NULL;
        size_t key_len = 0;
        if (unseal(ps, res, r, 1, "account", ca, NULL, &key, &key_len) != 0)
            continue;
        int rc = store_save_account(ps->cache, ca, key, key_len, kid, e, sizeof(e));
        store_wipe_free(key, key_len);
        if (rc != 0) {
            log_err("storage: cannot write the account to the cache: %s", e);
            continue;
        }
        if (ps->ev.on_account != NULL)
            ps->ev.on_account(ps, ca, ps->data);
    }
}

static void on_challenges(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    (void)pg;
    if (res != NULL && err == NULL)
        for (int r = 0; r < PQntuples(res); r++)
            chal_http_put(PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
    op_free(o);
}

static void on_first_sync(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    pgstore_t *ps = o->ps;
    (void)pg;
    (void)res;
    (void)err;
    op_free(o);
    if (ps->ready)
        return;
    ps->ready = 1;
    log_info("storage: postgres %s: in sync", pg_target(ps->pg));
    if (ps->missed) {
        ps->missed = 0;
        download(ps);
    }
    flush_uploads(ps);
    if (ps->ev.on_ready != NULL)
        ps->ev.on_ready(ps, ps->data);
}

/* Everything newer than what the cache has; the first time after a
 * connect ends with on_ready. */
static void download(pgstore_t *ps)
{
    char rev[32];
    snprintf(rev, sizeof(rev), "%lld", ps->rev_seen);
    const char *p[1] = {rev};
    pg_query(ps->pg, "SELECT ca, key, kid FROM psproxy_accounts", 0, NULL, NULL, NULL,
             on_accounts, op_new(ps, NULL, NULL, NULL));
    pg_query(ps->pg,
             "SELECT ca, name, chain, key, meta::text, rev FROM psproxy_certs WHERE rev > "
             "$1::bigint ORDER BY rev",
             1, p, NULL, NULL, on_certs, op_new(ps, NULL, NULL, NULL));
    pg_query(ps->pg, "SELECT token, keyauth FROM psproxy_challenges WHERE expires > now()", 0,
             NULL, NULL, NULL, on_challenges, op_new(ps, NULL, NULL, NULL));
    pg_query(ps->pg, "SELECT 1", 0, NULL, NULL, NULL, on_first_sync,
             op_new(ps, NULL, NULL, NULL));
}

/* ---- the connection ------------------------------------------------------ */

static void on_up(pg_t *pg)
{
    pgstore_t *ps = pg_data(pg);
    ps->session = pg_session(pg);
    ps->ready = 0;
    ps->schema_failed = 0;
    log_info("storage: postgres %s: connected", pg_target(pg));
    for (size_t i = 0; i < PS_ARRAY_SIZE(SCHEMA); i++) {
        struct op *o = op_new(ps, NULL, NULL, NULL);
        o->last = i + 1 == PS_ARRAY_SIZE(SCHEMA);
        pg_query(pg, SCHEMA[i], 0, NULL, NULL, NULL, on_schema_step, o);
    }
}

static void on_down(pg_t *pg, const char *reason)
{
    pgstore_t *ps = pg_data(pg);
    ps->ready = 0;
    /* the outage is logged once (pg.c reports it once); the cache serves */
    log_warn("storage: postgres %s: unreachable (%s): serving from the cache, no certificate "
             "is ordered until it is back",
             pg_target(pg), reason);
}

static void on_notify(pg_t *pg, const char *channel, const char *payload)
{
    pgstore_t *ps = pg_data(pg);
    if (!ps->ready) {
        /* the sync after the connect may have read before this change:
         * read again once it is done (after the key check) */
        ps->missed = 1;
        return;
    }
    if (strcmp(channel, CH_CHALLENGES) == 0) {
        /* "+TOKEN KEYAUTH": answer it from now on, and say so (the instance
         * that placed the order waits for every one); "-TOKEN": done */
        const char *sp = strchr(payload, ' ');
        if (payload[0] == '+' && sp != NULL) {
            char *token = strndup(payload + 1, (size_t)(sp - payload - 1));
            if (token == NULL)
                abort();
            chal_http_put(token, sp + 1);
            if (chal_wait_find(ps, token)) {
                /* our own NOTIFY comes back to us (we LISTEN too): acking it
                 * counted as another instance's ack, and the CA was told
                 * before that instance had the answer (a 404 to Pebble) */
                free(token);
                return;
            }
            const char *p[1] = {token};
            struct op *o = op_new(ps, NULL, NULL, NULL);
            if (pg_query(pg, "UPDATE psproxy_challenges SET acks = acks + 1 WHERE token = $1", 1,
                         p, NULL, NULL, on_unlocked, o) != 0)
                op_free(o);
            free(token);
        } else if (payload[0] == '-') {
            chal_http_del(payload + 1);
        }
        return;
    }
    download(ps); /* certs and accounts: everything newer */
}

static void on_poll(uv_timer_t *t)
{
    pgstore_t *ps = t->data;
    if (ps->ready)
        download(ps); /* NOTIFY is the fast path; this catches what it missed */
}

pgstore_t *pgstore_new(uv_loop_t *loop, const char *dsn, const seal_key_t *key, store_t *cache,
                       const pgstore_events_t *ev, void *data)
{
    pgstore_t *ps = calloc(1, sizeof(*ps));
    if (ps == NULL)
        abort();
    pg_events_t pev = {on_up, on_down, on_notify};
    ps->pg = pg_new(loop, dsn, &pev, ps);
    if (ps->pg == NULL) {
        free(ps);
        return NULL;
    }
    ps->key = *key;
    ps->cache = cache;
    if (ev != NULL)
        ps->ev = *ev;
    ps->data = data;
    pg_listen(ps->pg, CH_CERTS);
    pg_listen(ps->pg, CH_ACCOUNTS);
    pg_listen(ps->pg, CH_CHALLENGES);
    uv_timer_init(loop, &ps->poll);
    ps->poll.data = ps;
    uv_timer_init(loop, &ps->later);
    ps->later.data = ps;
    return ps;
}

void pgstore_start(pgstore_t *ps)
{
    pg_start(ps->pg);
    uv_timer_start(&ps->poll, on_poll, PGSTORE_POLL_MS, PGSTORE_POLL_MS);
}

int pgstore_ready(const pgstore_t *ps)
{
    return ps->ready;
}

static void on_closed(uv_handle_t *h)
{
    pgstore_t *ps = h->data;
    if (uv_is_closing((uv_handle_t *)&ps->poll) && uv_is_closing((uv_handle_t *)&ps->later) &&
        ++ps->closed == 2) {
        seal_key_wipe(&ps->key);
        free(ps);
    }
}

void pgstore_free(pgstore_t *ps)
{
    if (ps == NULL)
        return;
    pg_free(ps->pg); /* pending callbacks run now with "closed" */
    while (ps->waits != NULL) {
        ps->waits->cb = NULL; /* the owner is going too */
        chal_wait_end(ps->waits, UV_ECANCELED);
    }
    for (size_t i = 0; i < MAX_LOCKS; i++)
        free(ps->locks[i].name);
    for (size_t i = 0; i < ps->n_pending; i++) {
        free(ps->pending[i].ca);
        free(ps->pending[i].name);
    }
    while (ps->later_list != NULL) { /* never answered: the owner is going too */
        struct later *l = ps->later_list;
        ps->later_list = l->next;
        free(l);
    }
    uv_close((uv_handle_t *)&ps->poll, on_closed);
    uv_close((uv_handle_t *)&ps->later, on_closed);
}

/* ---- locks --------------------------------------------------------------- */

/* The slot of NAME's lock, or -1 when this instance holds none. */
static int lock_find(pgstore_t *ps, const char *name)
{
    for (int i = 0; i < MAX_LOCKS; i++)
        if (ps->locks[i].name != NULL && strcmp(ps->locks[i].name, name) == 0)
            return i;
    return -1;
}

static void on_locked_synced(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    (void)pg;
    if (o->cb != NULL)
        o->cb(o->arg, res != NULL && err == NULL ? 0 : UV_ENOTCONN);
    op_free(o);
}

static void on_lock(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    pgstore_t *ps = o->ps;
    int status = UV_ENOTCONN;
    if (res != NULL && err == NULL && PQntuples(res) == 1) {
        status = strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 0 : UV_EBUSY;
        if (status == 0) {
            int i = lock_find(ps, o->name);
            for (int k = 0; i < 0 && k < MAX_LOCKS; k++)
                if (ps->locks[k].name == NULL)
                    i = k;
            if (i >= 0) {
                if (ps->locks[i].name == NULL)
                    ps->locks[i].name = strdup(o->name);
                ps->locks[i].session = pg_session(pg);
            }
            /* what the last holder stored reaches the cache (on_cert)
             * before the caller decides whether an order is still due */
            download(ps);
            if (pg_query(pg, "SELECT 1", 0, NULL, NULL, NULL, on_locked_synced, o) == 0)
                return;
            status = UV_ENOTCONN;
        }
    }
    if (o->cb != NULL)
        o->cb(o->arg, status);
    op_free(o);
}

#define LOCK_KEY "hashtextextended('psproxy order ' || $1, 0)"

void pgstore_lock(pgstore_t *ps, const char *name, void (*cb)(void *arg, int status), void *arg)
{
    const char *p[1] = {name};
    int i = lock_find(ps, name);
    struct op *o = op_new(ps, cb, arg, name);
    int rc = UV_ENOTCONN;
    if (ps->ready && i >= 0 && ps->locks[i].session == pg_session(ps->pg))
        rc = pg_query(ps->pg, "SELECT true", 0, NULL, NULL, NULL, on_lock, o); /* ours already */
    else if (ps->ready)
        rc = pg_query(ps->pg, "SELECT pg_try_advisory_lock(" LOCK_KEY ")", 1, p, NULL, NULL,
                      on_lock, o);
    if (rc != 0) {
        op_free(o);
        answer_later(ps, cb, arg, UV_ENOTCONN); /* no database, no lock */
    }
}

static void on_unlocked(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    (void)pg;
    (void)res;
    (void)err;
    op_free(arg);
}

void pgstore_unlock(pgstore_t *ps, const char *name)
{
    int i = lock_find(ps, name);
    if (i < 0)
        return;
    int same = ps->locks[i].session == pg_session(ps->pg);
    free(ps->locks[i].name);
    ps->locks[i].name = NULL;
    if (!same)
        return; /* the session that held it is gone, and the lock with it */
    const char *p[1] = {name};
    struct op *o = op_new(ps, NULL, NULL, NULL);
    if (pg_query(ps->pg, "SELECT pg_advisory_unlock(" LOCK_KEY ")", 1, p, NULL, NULL,
                 on_unlocked, o) != 0)
        op_free(o);
}

/* ---- challenges ---------------------------------------------------------- */

/* The instance that placed an order tells the CA once every instance
 * connected to the database has the answer (or after CHAL_ACK_MS): a
 * validation may reach any of them, at once. */
#define CHAL_ACK_MS 3000
#define CHAL_ACK_POLL_MS 10


static void chal_wait_closed(uv_handle_t *h)
{
    struct chal_wait *w = h->data;
    free(w->token);
    free(w);
}

static void chal_wait_end(struct chal_wait *w, int status)
{
    for (struct chal_wait **p = &w->ps->waits; *p != NULL; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    if (w->cb != NULL)
        w->cb(w->arg, status);
    uv_close((uv_handle_t *)&w->timer, chal_wait_closed);
}

static void chal_wait_poll(uv_timer_t *t);

static void on_chal_acks(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    struct op *o = arg;
    struct chal_wait *w = o->arg;
    op_free(o);
    (void)pg;
    if (res == NULL || err != NULL || PQntuples(res) != 1) {
        chal_wait_end(w, UV_EIO);
        return;
    }
    int acks = atoi(PQgetvalue(res, 0, 0)), others = atoi(PQgetvalue(res, 0, 1));
    if (acks >= others) {
        chal_wait_end(w, 0);
        return;
    }
    if (uv_now(w->timer.loop) >= w->deadline) {
        log_warn("acme: challenge: %d of %d other instances confirmed it in %d ms; going on",
                 acks, others, CHAL_ACK_MS);
        chal_wait_end(w, 0);
        return;
    }
    uv_timer_start(&w->timer, chal_wait_poll, CHAL_ACK_POLL_MS, 0);
}

static void chal_wait_poll(uv_timer_t *t)
{
    struct chal_wait *w = t->data;
    const char *p[1] = {w->token};
    struct op *o = op_new(w->ps, NULL, w, NULL);
    /* the others: this database's sessions of psproxy but ours */
    if (pg_query(w->ps->pg,
                 "SELECT acks, (SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                 "current_setting('application_name') AND datname = current_database() AND pid "
                 "<> pg_backend_pid()) FROM psproxy_challenges WHERE token = $1",
                 1, p, NULL, NULL, on_chal_acks, o) != 0) {
        op_free(o);
        chal_wait_end(w, UV_ENOTCONN);
    }
}

static void on_chal_stored(void *arg, int status)
{
    struct chal_wait *w = arg;
    if (status != 0) {
        chal_wait_end(w, status);
        return;
    }
    chal_wait_poll(&w->timer);
}

void pgstore_put_challenge(pgstore_t *ps, const char *token, const char *keyauth,
                           void (*cb)(void *arg, int status), void *arg)
{
    size_t n = strlen(token) + strlen(keyauth) + 3;
    char *payload = malloc(n);
    struct chal_wait *w = calloc(1, sizeof(*w));
    if (payload == NULL || w == NULL)
        abort();
    snprintf(payload, n, "+%s %s", token, keyauth);
    w->ps = ps;
    w->next = ps->waits;
    ps->waits = w;
    w->token = strdup(token);
    w->cb = cb;
    w->arg = arg;
    uv_timer_init(uv_handle_get_loop((uv_handle_t *)&ps->poll), &w->timer);
    w->timer.data = w;
    w->deadline = uv_now(w->timer.loop) + CHAL_ACK_MS;
    struct stmt st[2] = {
        {"INSERT INTO psproxy_challenges (token, keyauth, expires) VALUES ($1, $2, now() + "
         "interval '1 hour') ON CONFLICT (token) DO UPDATE SET keyauth = EXCLUDED.keyauth, "
         "expires = EXCLUDED.expires, acks = 0",
         2,
         {token, keyauth},
         {0},
         {0}},
        {"SELECT pg_notify('" CH_CHALLENGES "', $1)", 1, {payload}, {0}, {0}},
    };
    if (!ps->ready || transaction(ps, st, 2, "a challenge", on_chal_stored, w) != 0) {
        w->cb = NULL;
        chal_wait_end(w, UV_ENOTCONN);
        answer_later(ps, cb, arg, UV_ENOTCONN);
    }
    free(payload);
}

void pgstore_del_challenge(pgstore_t *ps, const char *token)
{
    struct stmt st[2] = {
        {"DELETE FROM psproxy_challenges WHERE token = $1 OR expires < now()", 1, {token}, {0},
         {0}},
        {"SELECT pg_notify('" CH_CHALLENGES "', '-' || $1)", 1, {token}, {0}, {0}},
    };
    if (ps->ready)
        transaction(ps, st, 2, "a challenge", NULL, NULL);
}
