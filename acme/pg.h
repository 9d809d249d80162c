/* One PostgreSQL connection on a libuv loop (issue #11): libpq's
 * non-blocking API driven by uv_poll, a FIFO of queries, LISTEN/NOTIFY,
 * reconnection with back-off. No call blocks the loop. */
#ifndef PS_PG_H
#define PS_PG_H

#include <libpq-fe.h>
#include <uv.h>

typedef struct pg pg_t;

/* The caller's events, each optional (NULL). They run from the loop, never
 * from inside a pg_ call. Any of them may call pg_free. */
typedef struct pg_events {
    /* Connected and listening on every pg_listen channel: queries run from
     * here on. Once per connection. */
    void (*on_up)(pg_t *pg);
    /* An outage began: the connection broke or an attempt failed (REASON,
     * libpq's or the server's words, never the password). Once per outage,
     * not once per retry: the next event is on_up when the database is back.
     * Reconnecting goes on by itself (1 s doubling to 30 s, +-25 % jitter). */
    void (*on_down)(pg_t *pg, const char *reason);
    /* A NOTIFY on a pg_listen channel, as it arrives. */
    void (*on_notify)(pg_t *pg, const char *channel, const char *payload);
} pg_events_t;

/* A query's outcome, exactly once per accepted pg_query, from the loop.
 * - RES != NULL, ERR == NULL: it ran (PGRES_COMMAND_OK or _TUPLES_OK).
 * - RES != NULL, ERR != NULL: the server refused it (ERR is its primary
 *   message; PQresultErrorField(RES, PG_DIAG_SQLSTATE) says which error).
 * - RES == NULL: no answer: the connection failed (a COMMIT's outcome is then
 *   unknown), the query could not be sent, or pg_free cancelled it ("closed").
 * RES and ERR are valid during the call only (RES is PQclear'ed after it).
 * Results are in text format: a bytea column reads as "\x<hex>", which
 * PQunescapeBytea decodes. */
typedef void (*pg_result_cb)(pg_t *pg, const PGresult *res, const char *err, void *arg);

/* DSN is a libpq connection string ("host=... dbname=...") or URI
 * ("postgresql://..."); it is parsed here and not kept as given. Defaults it
 * may override: application_name=psproxy, TCP keepalives (30 s idle, 3 x 10 s),
 * tcp_user_timeout=60000, gssencmode=disable (GSSAPI may block in Kerberos);
 * connect_timeout (default 10 s) bounds each attempt. A single host name is
 * resolved off the loop (uv_getaddrinfo) and handed to libpq as hostaddr;
 * several host names, or one from PGHOST, are resolved by libpq itself, which
 * blocks. EV is copied; DATA is pg_data's. Returns NULL when DSN does not
 * parse (logged without the password) or memory runs out. Nothing runs before
 * pg_start. */
pg_t *pg_new(uv_loop_t *loop, const char *dsn, const pg_events_t *ev, void *data);
/* Starts connecting on the next loop turn. Returns 0 or UV_EALREADY. */
int pg_start(pg_t *pg);
/* Closes the connection and its handles; the in-flight and queued queries'
 * callbacks run now with RES NULL and ERR "closed". No event runs after this.
 * PG's memory goes once libuv has closed its handles; the loop can then end.
 * Safe from any callback of PG; NULL is ignored. */
void pg_free(pg_t *pg);

/* Queues SQL (one statement; parameters $1..$NPARAMS; no COPY) behind the
 * queries already queued; they run one at a time in order on the one
 * connection, so "BEGIN", ..., "COMMIT" form a transaction (check
 * pg_session between them: a reconnect ends it). VALUES[i] NULL is SQL NULL;
 * FORMATS[i] 1 is binary with LENGTHS[i] bytes, else text (NUL-terminated);
 * LENGTHS and FORMATS may be NULL (all text). Everything is copied.
 * Returns 0 (CB will run exactly once, never from inside this call),
 * UV_ENOTCONN when not connected (fail fast: no queue while down; retry after
 * on_up), UV_EINVAL or UV_ENOMEM; CB never runs when this returns non-zero. */
int pg_query(pg_t *pg, const char *sql, int nparams, const char *const *values, const int *lengths,
             const int *formats, pg_result_cb cb, void *arg);

/* LISTENs on CHANNEL (taken as it is, case and all, as pg_notify() names it;
 * under 64 bytes) now if connected and again on every reconnect; a LISTEN
 * that fails drops the connection (a standby cannot LISTEN). Returns 0,
 * UV_EINVAL or UV_ENOMEM. */
int pg_listen(pg_t *pg, const char *channel);

/* 0 while not connected, else the number of the current connection (1, 2,
 * ...): a change between two queries means they ran on different sessions
 * (a transaction or a session lock did not survive). */
unsigned long pg_session(const pg_t *pg);
/* host, port, dbname and user of the DSN, for logs (never the password). */
const char *pg_target(const pg_t *pg);
void *pg_data(const pg_t *pg);

#endif
