/* The driver of tests/integration/test_pg.py: runs acme/pg.c against a real
 * PostgreSQL and prints what happens, one line per event, on stdout.
 *
 *   pg_probe DSN query                      queries, bytea both ways, an error,
 *                                           pg_free with queries queued
 *   pg_probe DSN listen CHANNEL N           "notify CHANNEL PAYLOAD" until N came
 *   pg_probe DSN outage SECONDS [CHANNEL]   "up", "down REASON", "notify ...",
 *                                           and a query every 200 ms: "ok"/"err"
 *   pg_probe DSN inflight                   "SELECT pg_sleep(60)" once up; ends
 *                                           when it is answered ("sleep ...")
 *   pg_probe DSN big BYTES                  "SELECT $1::bytea" with BYTES binary
 *                                           bytes, read back as hex: "echo N same"
 *
 * It ends within PG_PROBE_TIMEOUT seconds (default 60: "timeout", exit 2) and
 * on SIGTERM/SIGINT. Exit 0 means the scenario finished and uv_loop_close
 * found no handle left open; 1 a failed check ("FAIL ..."), 3 an open handle. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg.h"

static uv_loop_t *loop;
static pg_t *pg;
static uv_timer_t watchdog, ticker, ender;
static uv_signal_t sigterm, sigint;
static const char *scenario;
static int failed, finished;
static int want_notifies, notifies;
static unsigned char blob[256];

static void finish(void)
{
    if (finished)
        return;
    finished = 1;
    pg_free(pg);
    pg = NULL;
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_close((uv_handle_t *)&ender, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
}

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL %s\n", what);
        failed = 1;
    }
}

static void print_err(const char *tag, const PGresult *res, const char *err)
{
    const char *code = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    printf("%s err %s %s\n", tag, code != NULL ? code : "-", err);
}

/* -- query -------------------------------------------------------------------- */

static int cancelled, cancelled_twice;

static void on_cancelled(pg_t *p, const PGresult *res, const char *err, void *arg)
{
    int *seen = arg;
    if ((*seen)++)
        cancelled_twice++;
    check(res == NULL && err != NULL, "a cancelled query has no result");
    cancelled++;
}

static void on_step(pg_t *p, const PGresult *res, const char *err, void *arg)
{
    const char *tag = arg;
    if (err != NULL) {
        print_err(tag, res, err);
    } else if (strcmp(tag, "select") == 0) {
        for (int i = 0; i < PQntuples(res); i++) {
            size_t len = 0;
            unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 2), &len);
            int id = atoi(PQgetvalue(res, i, 0));
            const char *name = PQgetisnull(res, i, 1) ? "NULL" : PQgetvalue(res, i, 1);
            int same = id == 1 ? len == sizeof(blob) && memcmp(b, blob, len) == 0
                               : len == 3 && memcmp(b, "\x00\xff\x10", 3) == 0;
            printf("row %d %s %zu %s\n", id, name, len, same ? "same" : "differs");
            PQfreemem(b);
        }
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        printf("%s ok %s\n", tag, PQgetvalue(res, 0, 0));
    } else {
        printf("%s ok %s\n", tag, PQcmdStatus((PGresult *)res));
    }
    if (strcmp(tag, "count") != 0)
        return;

    /* the last step: queue three more and free PG under them, from inside
     * a callback of PG; each must be answered exactly once */
    static int seen[3];
    for (int i = 0; i < 3; i++)
        check(pg_query(p, "SELECT pg_sleep(5)", 0, NULL, NULL, NULL, on_cancelled, &seen[i]) == 0,
              "queue a query");
    pg_free(pg);
    pg = NULL;
    check(pg_query(p, "SELECT 1", 0, NULL, NULL, NULL, on_cancelled, &seen[0]) == UV_ENOTCONN,
          "no query after pg_free");
    printf("cancelled %d twice %d\n", cancelled, cancelled_twice);
    finish();
}

static void q(const char *sql, int n, const char *const *v, const int *l, const int *f,
              const char *tag)
{
    int rc = pg_query(pg, sql, n, v, l, f, on_step, (void *)tag);
    if (rc != 0) {
        printf("%s refused %s\n", tag, uv_strerror(rc));
        failed = 1;
    }
}

static void query_up(pg_t *p)
{
    printf("up session %lu\n", pg_session(p));
    /* all queued at once: they must run in order */
    q("CREATE TEMP TABLE t (id int PRIMARY KEY, name text, data bytea)", 0, NULL, NULL, NULL,
      "create");
    const char *v1[] = {"1", "zo\xc3\xab \"quoted\" 'x'", (const char *)blob};
    const int l1[] = {0, 0, (int)sizeof(blob)};
    const int f1[] = {0, 0, 1};
    q("INSERT INTO t VALUES ($1, $2, $3)", 3, v1, l1, f1, "insert1");
    const char *v2[] = {"2", NULL, "\\x00ff10"}; /* bytea as text: hex */
    q("INSERT INTO t VALUES ($1::int, $2, $3::bytea)", 3, v2, NULL, NULL, "insert2");
    q("SELECT id, name, data FROM t ORDER BY id", 0, NULL, NULL, NULL, "select");
    q("SELECT 1/0", 0, NULL, NULL, NULL, "divide");
    const char *v3[] = {"41"};
    q("SELECT $1::int + 1", 1, v3, NULL, NULL, "add");
    q("BEGIN", 0, NULL, NULL, NULL, "begin");
    const char *v4[] = {"3", "rolled back"};
    q("INSERT INTO t (id, name) VALUES ($1, $2)", 2, v4, NULL, NULL, "insert3");
    q("ROLLBACK", 0, NULL, NULL, NULL, "rollback");
    q("SELECT count(*) FROM t", 0, NULL, NULL, NULL, "count");
}

/* -- listen and outage -------------------------------------------------------- */

static void print_up(pg_t *p)
{
    printf("up session %lu\n", pg_session(p));
}

static void print_down(pg_t *p, const char *reason)
{
    printf("down %s\n", reason);
}

static void print_notify(pg_t *p, const char *channel, const char *payload)
{
    printf("notify %s %s\n", channel, payload);
    if (want_notifies > 0 && ++notifies >= want_notifies)
        finish();
}

static void on_tick_done(pg_t *p, const PGresult *res, const char *err, void *arg)
{
    if (err == NULL)
        printf("ok\n");
    else
        print_err("query", res, err);
}

static void on_tick(uv_timer_t *t)
{
    int rc = pg_query(pg, "SELECT 1", 0, NULL, NULL, NULL, on_tick_done, NULL);
    if (rc != 0)
        printf("query refused %s\n", uv_strerror(rc));
}

static void on_slept(pg_t *p, const PGresult *res, const char *err, void *arg)
{
    if (err == NULL)
        printf("sleep ok\n");
    else
        print_err("sleep", res, err);
    finish();
}

static void inflight_up(pg_t *p)
{
    printf("up session %lu\n", pg_session(p));
    check(pg_query(p, "SELECT pg_sleep(60)", 0, NULL, NULL, NULL, on_slept, NULL) == 0,
          "queue pg_sleep");
}

static unsigned char *big;
static size_t big_len;

static void on_echo(pg_t *p, const PGresult *res, const char *err, void *arg)
{
    if (err != NULL) {
        print_err("echo", res, err);
    } else {
        size_t len = 0;
        unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 0), &len);
        printf("echo %zu %s\n", len,
               b != NULL && len == big_len && memcmp(b, big, len) == 0 ? "same" : "differs");
        PQfreemem(b);
    }
    finish();
}

static void big_up(pg_t *p)
{
    printf("up session %lu\n", pg_session(p));
    const char *v[] = {(const char *)big};
    const int l[] = {(int)big_len};
    const int f[] = {1};
    check(pg_query(p, "SELECT $1::bytea", 1, v, l, f, on_echo, NULL) == 0, "queue the echo");
}

/* -- common ------------------------------------------------------------------- */

static void on_watchdog(uv_timer_t *t)
{
    printf("timeout\n");
    failed = 2;
    finish();
}

static void on_end(uv_timer_t *t)
{
    printf("end\n");
    finish();
}

static void on_signal(uv_signal_t *s, int signum)
{
    printf("signal %d\n", signum);
    finish();
}

static int usage(void)
{
    fprintf(stderr, "usage: pg_probe DSN query | listen CHANNEL N | outage SECONDS [CHANNEL] | "
                    "inflight | big BYTES\n");
    return 64;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    log_init();
    if (argc < 3)
        return usage();
    scenario = argv[2];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (unsigned char)(255 - i); /* NUL, high bytes, backslash, quote: all of them */

    loop = uv_default_loop();
    pg_events_t ev = {0};
    if (strcmp(scenario, "query") == 0) {
        ev.on_up = query_up;
        ev.on_down = print_down;
    } else if (strcmp(scenario, "listen") == 0 && argc == 5) {
        ev.on_up = print_up;
        ev.on_down = print_down;
        ev.on_notify = print_notify;
        want_notifies = atoi(argv[4]);
    } else if (strcmp(scenario, "outage") == 0 && (argc == 4 || argc == 5)) {
        ev.on_up = print_up;
        ev.on_down = print_down;
        ev.on_notify = print_notify;
    } else if (strcmp(scenario, "big") == 0 && argc == 4) {
        ev.on_up = big_up;
        ev.on_down = print_down;
        big_len = (size_t)atol(argv[3]);
        big = malloc(big_len + 1);
        uint32_t x = 2463534242u;
        for (size_t i = 0; big != NULL && i < big_len; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            big[i] = (unsigned char)x;
        }
    } else if (strcmp(scenario, "inflight") == 0) {
        ev.on_up = inflight_up;
        ev.on_down = print_down;
    } else {
        return usage();
    }
    pg = pg_new(loop, argv[1], &ev, NULL);
    if (pg == NULL) {
        printf("invalid dsn\n");
        return 1;
    }
    printf("target %s\n", pg_target(pg));

    const char *limit = getenv("PG_PROBE_TIMEOUT");
    uv_timer_init(loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, (uint64_t)(limit ? atof(limit) * 1000 : 60000), 0);
    uv_unref((uv_handle_t *)&watchdog); /* the loop ends when the scenario does */
    uv_timer_init(loop, &ticker);
    uv_timer_init(loop, &ender);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&sigterm);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&sigint);

    if (strcmp(scenario, "listen") == 0) {
        check(pg_listen(pg, argv[3]) == 0, "pg_listen");
        check(pg_listen(pg, argv[3]) == 0, "pg_listen twice");
    } else if (strcmp(scenario, "outage") == 0) {
        if (argc == 5)
            check(pg_listen(pg, argv[4]) == 0, "pg_listen");
        uv_timer_start(&ticker, on_tick, 200, 200);
        uv_timer_start(&ender, on_end, (uint64_t)(atof(argv[3]) * 1000), 0);
    }
    check(pg_query(pg, "SELECT 1", 0, NULL, NULL, NULL, on_tick_done, NULL) == UV_ENOTCONN,
          "no query before connecting");
    pg_start(pg);
    check(pg_start(pg) == UV_EALREADY, "pg_start twice");

    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    if (rc != 0) {
        printf("FAIL loop not closed: %s\n", uv_strerror(rc));
        uv_print_all_handles(loop, stdout);
        return 3;
    }
    free(big);
    printf("exit %d\n", failed);
    return failed;
}
