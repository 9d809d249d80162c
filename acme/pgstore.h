/* Storage shared by several psproxy instances in PostgreSQL (issue #11).
 *
 * Each instance keeps its file_system storage (store.h) as a local cache:
 * the ACME client and the certificate store read and write only that, so
 * serving never waits on the database and a restart during an outage
 * serves what the cache holds. This module mirrors the cache and the
 * database, on the control loop, never blocking (pg.h):
 * - up: a certificate (chain, key, metadata) or account the client saved
 *   goes into the database in one transaction, its private key sealed
 *   (seal.h, bound to its row), and a NOTIFY tells the others;
 * - down: on that NOTIFY, and by polling as a fallback, rows newer than the
 *   last one seen are written into the cache and reported (on_cert), so the
 *   others swap the certificate in without ordering one;
 * - ordering a name takes a PostgreSQL advisory lock on this connection's
 *   session: one instance at a time, and a crashed holder's lock goes with
 *   its session; no connection, no lock, no order;
 * - HTTP-01 key authorizations go into a table every instance mirrors into
 *   its challenge table, so a validation that reaches another host passes.
 *
 * Tables (created on first use, in one transaction under an advisory lock,
 * with a schema version row; a database with another version is refused,
 * upgrades are explicit): psproxy_schema, psproxy_accounts, psproxy_certs,
 * psproxy_challenges, psproxy_keycheck (a value sealed by the first
 * instance: one whose key_file does not open it never syncs or orders). */
#ifndef PS_PGSTORE_H
#define PS_PGSTORE_H

#include <uv.h>

#include "seal.h"
#include "store.h"

#define PGSTORE_SCHEMA_VERSION 1
#define PGSTORE_POLL_MS 30000

typedef struct pgstore pgstore_t;

typedef struct pgstore_events {
    /* The schema is checked and the first download done: the cache holds
     * what the database had. Again after every reconnect. */
    void (*on_ready)(pgstore_t *ps, void *data);
    /* A certificate another instance stored is now in the cache. */
    void (*on_cert)(pgstore_t *ps, const char *ca, const char *name, void *data);
    /* The account for CA came from the database into the cache. */
    void (*on_account)(pgstore_t *ps, const char *ca, void *data);
} pgstore_events_t;

/* DSN as for pg_new; KEY seals private keys (copied); CACHE is the local
 * store (not owned). Returns NULL when DSN does not parse. */
pgstore_t *pgstore_new(uv_loop_t *loop, const char *dsn, const seal_key_t *key, store_t *cache,
                       const pgstore_events_t *ev, void *data);
void pgstore_start(pgstore_t *ps);
void pgstore_free(pgstore_t *ps);
/* Connected, schema checked, first download done. */
int pgstore_ready(const pgstore_t *ps);

/* Uploads what the cache holds for NAME (or the account) of CA. Queued
 * and retried while the database is away; the last one per name wins. */
void pgstore_put_cert(pgstore_t *ps, const char *ca, const char *name);
void pgstore_put_account(pgstore_t *ps, const char *ca);

/* The right to order NAME: CB(ARG, 0) once this instance holds it,
 * CB(ARG, UV_EBUSY) while another does, CB(ARG, UV_ENOTCONN) while the
 * database is away (no lock, no order). Never from inside this call. The
 * lock lives as long as this connection's session: a reconnect loses it.
 * Unlock runs after the uploads queued before it. */
void pgstore_lock(pgstore_t *ps, const char *name, void (*cb)(void *arg, int status), void *arg);
void pgstore_unlock(pgstore_t *ps, const char *name);

/* HTTP-01: TOKEN answers KEYAUTH on every instance. CB(ARG, 0) once the
 * row is committed (the others hear it within milliseconds), CB(ARG, <0)
 * when it could not be. */
void pgstore_put_challenge(pgstore_t *ps, const char *token, const char *keyauth,
                           void (*cb)(void *arg, int status), void *arg);
void pgstore_del_challenge(pgstore_t *ps, const char *token);

#endif
