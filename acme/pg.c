/* PostgreSQL on a libuv loop: libpq's asynchronous calls woken by a uv_poll
 * on PQsocket, one uv_timer for the attempt deadline and the back-off, and
 * uv_getaddrinfo for the host name, so no call waits on the network.
 *
 * About 1,000 lines because it is one state machine (resolve, connect
 * through every address, TLS, LISTEN, up, down with back-off) whose
 * socket, query queue and states must change together; split by step, each
 * part would reach into the others' fields. */
#include "pg.h"

#include <arpa/inet.h>
#include <assert.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "log.h"

#define PG_CONNECT_TIMEOUT_MS 10000
#define PG_BACKOFF_MIN_MS 1000
#define PG_BACKOFF_MAX_MS 30000
#define PG_STABLE_MS 30000  /* up this long: the next outage starts the back-off over */
#define PG_MAX_ADDRS 8      /* of a resolved host name */
#define PG_MAX_PARAMS 65535 /* the protocol's Bind message counts them in 16 bits */
#define PG_NAMEDATALEN 64   /* a longer channel name would be truncated by the server */
#define PG_ERR_MAX 512

enum pg_state {
    PG_S_IDLE,       /* pg_new: nothing runs until pg_start */
    PG_S_WAIT,       /* no connection; timer: the back-off (0 after pg_start), then an attempt */
    PG_S_RESOLVING,  /* uv_getaddrinfo for the host name; timer: the attempt's deadline */
    PG_S_CONNECTING, /* PQconnectPoll woken by the socket; timer: the attempt's deadline */
    PG_S_UP,         /* connected, non-blocking: queries run, notifications arrive */
    PG_S_CLOSING,    /* pg_free: handles closing, the memory goes with the timer's */
};

static const char *const state_names[] = {
    [PG_S_IDLE] = "IDLE",
    [PG_S_WAIT] = "WAIT",
    [PG_S_RESOLVING] = "RESOLVING",
    [PG_S_CONNECTING] = "CONNECTING",
    [PG_S_UP] = "UP",
    [PG_S_CLOSING] = "CLOSING",
};

/* A query and copies of everything it needs, in one allocation: the arrays,
 * the SQL and the parameter bytes follow the struct. */
struct query {
    struct query *next;
    pg_result_cb cb;
    void *arg;
    int nparams;
    const char *sql;
    const char **values;
    int *lengths;
    int *formats;
};

/* The socket libpq uses now. Its own allocation: when libpq moves to a new
 * socket, the old handle closes while the new one starts. */
struct sock {
    uv_poll_t poll;
    pg_t *pg;
    int fd;
};

struct resolve {
    uv_getaddrinfo_t req;
    pg_t *pg; /* NULL once abandoned (deadline, pg_free): the callback only frees */
};

struct chan {
    struct chan *next;
    char name[];
};

struct pg {
    uv_loop_t *loop;
    pg_events_t ev;
    void *data;
    enum pg_state state;
    PQconninfoOption *opts;   /* the parsed DSN, password included (wiped at free) */
    char *target;             /* host port dbname user, for logs */
    const char *resolve_host; /* in opts: the one host name we resolve; NULL: libpq's job */
    uint64_t attempt_ms;      /* an attempt's deadline (connect_timeout) */
    uv_timer_t timer;
    struct resolve *resolve;
    PGconn *conn;
    struct sock *sock;
    int events;                 /* UP: what sock polls for */
    int flushing;               /* PQflush returned 1: the query is not all out */
    struct query *inflight;     /* sent; its results are not all in */
    PGresult *res;              /* the in-flight query's result so far */
    struct query *head, **tail; /* queued behind it, not sent */
    struct chan *chans;         /* pg_listen's, LISTENed on every connection */
    int listens;                /* LISTENs still in flight before on_up */
    int outage;                 /* on_down reported, on_up not since */
    unsigned long session, sessions;
    uint64_t up_at, backoff_ms, rng;
    char fatal[256]; /* the server's last word before it closes (a FATAL or 57xxx notice) */
};

static void on_poll(uv_poll_t *h, int status, int events);
static void on_timer(uv_timer_t *t);
static void up_run(pg_t *pg);

/* The moves each state may make (bit per target state); CLOSING from any. */
static const unsigned state_moves[] = {
    [PG_S_IDLE] = 1u << PG_S_WAIT,
    [PG_S_WAIT] = 1u << PG_S_RESOLVING | 1u << PG_S_CONNECTING | 1u << PG_S_WAIT,
    [PG_S_RESOLVING] = 1u << PG_S_CONNECTING | 1u << PG_S_WAIT,
    [PG_S_CONNECTING] = 1u << PG_S_UP | 1u << PG_S_WAIT,
    [PG_S_UP] = 1u << PG_S_WAIT,
    [PG_S_CLOSING] = 0,
};

static void set_state(pg_t *pg, enum pg_state s)
{
    assert(s == PG_S_CLOSING || (state_moves[pg->state] & 1u << s));
    log_debug("pg: %s: %s -> %s", pg->target, state_names[pg->state], state_names[s]);
    pg->state = s;
}

/* libpq's messages span lines ("...failed: FATAL:  ...\n", hints after
 * "\t"): keeps the lines that are not hints, joined by "; ". */
static void tidy(const char *msg, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    while (msg != NULL && *msg != '\0') {
        const char *e = strchr(msg, '\n');
        size_t len = e != NULL ? (size_t)(e - msg) : strlen(msg);
        const char *next = msg + len + (e != NULL);
        while (len > 0 && (msg[len - 1] == ' ' || msg[len - 1] == '\r'))
            len--;
        if (len > 0 && msg[0] != '\t' && o + 3 < n) {
            if (o > 0) {
                memcpy(out + o, "; ", 2);
                o += 2;
            }
            if (len > n - 1 - o)
                len = n - 1 - o;
            memcpy(out + o, msg, len);
            o += len;
            out[o] = '\0';
        }
        msg = next;
    }
}

static uint64_t jitter(pg_t *pg, uint64_t ms)
{
    pg->rng ^= pg->rng << 13;
    pg->rng ^= pg->rng >> 7;
    pg->rng ^= pg->rng << 17;
    return ms * 3 / 4 + pg->rng % (ms / 2 + 1); /* +-25 % */
}

static const char *opt_val(const PQconninfoOption *o, const char *key)
{
    for (; o->keyword != NULL; o++)
        if (strcmp(o->keyword, key) == 0)
            return o->val != NULL && o->val[0] != '\0' ? o->val : NULL;
    return NULL;
}

static int is_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* -- the socket --------------------------------------------------------------- */

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sock_close(pg_t *pg)
{
    if (pg->sock != NULL) {
        uv_close((uv_handle_t *)&pg->sock->poll, on_sock_closed);
        pg->sock = NULL;
    }
    pg->events = 0;
}

/* Polls libpq's current socket for EVENTS. libpq may have closed the one we
 * polled and opened another, even under the same number (PQconnectPoll
 * trying the next address, or without SSL): a new number gets a new handle;
 * uv_poll_start always registers the descriptor afresh, so the same number
 * on a new socket is watched too. Call it only right after the libpq call,
 * before anything else on this loop can open a descriptor. */
static int sock_watch(pg_t *pg, int events)
{
    int fd = PQsocket(pg->conn);
    if (fd < 0)
        return UV_EBADF;
    if (pg->sock != NULL && pg->sock->fd != fd)
        sock_close(pg);
    if (pg->sock == NULL) {
        struct sock *s = calloc(1, sizeof(*s));
        if (s == NULL)
            return UV_ENOMEM;
        int rc = uv_poll_init_socket(pg->loop, &s->poll, fd);
        if (rc != 0) {
            free(s);
            return rc;
        }
        s->poll.data = s;
        s->pg = pg;
        s->fd = fd;
        pg->sock = s;
    }
    pg->events = events;
    return uv_poll_start(&pg->sock->poll, events, on_poll);
}

/* UP: always readable (notifications, the server going away), writable
 * while a query waits to go or to be flushed. */
static void watch(pg_t *pg)
{
    int events = UV_READABLE;
    if (pg->flushing || (pg->inflight == NULL && pg->head != NULL))
        events |= UV_WRITABLE;
    if (events != pg->events)
        sock_watch(pg, events); /* the descriptor polled already: cannot fail */
}

/* -- queries ------------------------------------------------------------------ */

static struct query *query_new(const char *sql, int n, const char *const *values,
                               const int *lengths, const int *formats)
{
    size_t sqllen = strlen(sql) + 1;
    size_t size = sizeof(struct query) + (size_t)n * (sizeof(char *) + 2 * sizeof(int)) + sqllen;
    for (int i = 0; i < n; i++) {
        if (values[i] == NULL)
            continue;
        if (formats != NULL && formats[i] == 1) {
            size += (size_t)lengths[i]; /* pg_query checked it */
        } else {
            size += strlen(values[i]) + 1;
        }
    }
    struct query *q = malloc(size);
    if (q == NULL)
        return NULL;
    memset(q, 0, sizeof(*q));
    char *p = (char *)(q + 1);
    q->nparams = n;
    q->values = (const char **)p;
    p += (size_t)n * sizeof(char *);
    q->lengths = (int *)p;
    p += (size_t)n * sizeof(int);
    q->formats = (int *)p;
    p += (size_t)n * sizeof(int);
    q->sql = memcpy(p, sql, sqllen);
    p += sqllen;
    for (int i = 0; i < n; i++) {
        int bin = formats != NULL && formats[i] == 1;
        size_t len = values[i] == NULL ? 0 : bin ? (size_t)lengths[i] : strlen(values[i]) + 1;
        q->formats[i] = bin;
        q->lengths[i] = bin ? lengths[i] : 0;
        q->values[i] = values[i] == NULL ? NULL : memcpy(p, values[i], len);
        p += len;
    }
    return q;
}

static void query_push(pg_t *pg, struct query *q)
{
    q->next = NULL;
    *pg->tail = q;
    pg->tail = &q->next;
}

static struct query *query_pop(pg_t *pg)
{
    struct query *q = pg->head;
    if (q != NULL) {
        pg->head = q->next;
        if (pg->head == NULL)
            pg->tail = &pg->head;
    }
    return q;
}

/* Answers the in-flight and queued queries with no result. A callback may
 * call pg_free, which answers the rest itself. */
static void fail_all(pg_t *pg, const char *why)
{
    char err[PG_ERR_MAX];
    snprintf(err, sizeof(err), "%s", why);
    for (;;) {
        struct query *q = pg->inflight;
        if (q != NULL)
            pg->inflight = NULL;
        else if ((q = query_pop(pg)) == NULL)
            break;
        q->cb(pg, NULL, err, q->arg);
        free(q);
    }
}

/* -- up and down -------------------------------------------------------------- */

static void abandon_resolve(pg_t *pg)
{
    if (pg->resolve != NULL) {
        pg->resolve->pg = NULL;
        uv_cancel((uv_req_t *)&pg->resolve->req); /* fails once running: its callback frees */
        pg->resolve = NULL;
    }
}

/* Closes the handle before PQfinish closes the socket under it. */
static void drop_conn(pg_t *pg)
{
    sock_close(pg);
    PQclear(pg->res);
    pg->res = NULL;
    PQfinish(pg->conn);
    pg->conn = NULL;
    pg->flushing = 0;
    pg->listens = 0;
    pg->session = 0;
}

/* Keeps the server's message when RES says why the session ends: FATAL,
 * PANIC, or class 57 (operator intervention: a shutdown sends a WARNING). */
static int remember_fatal(pg_t *pg, const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (msg == NULL || sev == NULL ||
        (strcmp(sev, "FATAL") != 0 && strcmp(sev, "PANIC") != 0 &&
         (code == NULL || strncmp(code, "57", 2) != 0)))
        return 0;
    snprintf(pg->fatal, sizeof(pg->fatal), "%s", msg);
    return 1;
}

/* The connection broke or an attempt failed: drop it, fail the queries,
 * report the outage if it is a new one, and retry after the back-off. */
static void go_down(pg_t *pg, const char *why)
{
    char reason[PG_ERR_MAX];
    if (pg->fatal[0] == '\0' && pg->res != NULL)
        remember_fatal(pg, pg->res); /* the running query's error said why */
    if (pg->fatal[0] != '\0')
        snprintf(reason, sizeof(reason), "%s", pg->fatal); /* the server said why */
    else
        tidy(why, reason, sizeof(reason));
    if (reason[0] == '\0')
        snprintf(reason, sizeof(reason), "connection lost");
    pg->fatal[0] = '\0';

    if (pg->state == PG_S_UP && uv_now(pg->loop) - pg->up_at >= PG_STABLE_MS)
        pg->backoff_ms = PG_BACKOFF_MIN_MS;
    uint64_t delay = jitter(pg, pg->backoff_ms);
    pg->backoff_ms =
        pg->backoff_ms * 2 < PG_BACKOFF_MAX_MS ? pg->backoff_ms * 2 : PG_BACKOFF_MAX_MS;
    abandon_resolve(pg);
    drop_conn(pg);
    set_state(pg, PG_S_WAIT);
    uv_timer_start(&pg->timer, on_timer, delay, 0);
    log_debug("pg: %s: %s; next attempt in %llu ms", pg->target, reason, (unsigned long long)delay);

    if (!pg->outage) {
        pg->outage = 1;
        if (pg->ev.on_down != NULL)
            pg->ev.on_down(pg, reason);
        if (pg->state == PG_S_CLOSING)
            return;
    }
    fail_all(pg, reason);
}

static void report_up(pg_t *pg)
{
    pg->outage = 0;
    log_debug("pg: %s: up (session %lu)", pg->target, pg->session);
    if (pg->ev.on_up != NULL)
        pg->ev.on_up(pg);
}

static void on_listened(pg_t *pg, const PGresult *res, const char *err, void *arg)
{
    if (res == NULL)
        return; /* no answer: go_down or pg_free is dealing with it */
    if (err != NULL) {
        char why[PG_ERR_MAX];
        snprintf(why, sizeof(why), "LISTEN failed: %s", err);
        go_down(pg, why);
        return;
    }
    if (pg->listens > 0 && --pg->listens == 0)
        report_up(pg);
}

/* Queues LISTEN for CHANNEL. GATE: on_up waits for it. */
static int listen_send(pg_t *pg, const char *channel, int gate)
{
    char sql[16 + 2 * PG_NAMEDATALEN];
    size_t o = (size_t)snprintf(sql, sizeof(sql), "LISTEN \"");
    for (const char *c = channel; *c != '\0'; c++) {
        if (*c == '"')
            sql[o++] = '"'; /* an identifier's quote is doubled */
        sql[o++] = *c;
    }
    sql[o++] = '"';
    sql[o] = '\0';
    struct query *q = query_new(sql, 0, NULL, NULL, NULL);
    if (q == NULL)
        return UV_ENOMEM;
    q->cb = on_listened;
    query_push(pg, q);
    if (gate)
        pg->listens++;
    return 0;
}

static void conn_ready(pg_t *pg)
{
    if (PQsetnonblocking(pg->conn, 1) != 0) {
        go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    uv_timer_stop(&pg->timer);
    set_state(pg, PG_S_UP);
    pg->session = ++pg->sessions;
    pg->up_at = uv_now(pg->loop);
    pg->events = 0; /* poll afresh for UP's events */
    log_debug("pg: %s: connected (server %d, backend pid %d)", pg->target,
              PQserverVersion(pg->conn), PQbackendPID(pg->conn));
    for (struct chan *c = pg->chans; c != NULL; c = c->next) {
        if (listen_send(pg, c->name, 1) != 0) {
            go_down(pg, "out of memory");
            return;
        }
    }
    if (pg->listens == 0) {
        report_up(pg);
        if (pg->state != PG_S_UP)
            return;
    }
    up_run(pg);
}

/* -- connecting --------------------------------------------------------------- */

static void connect_step(pg_t *pg)
{
    int events;
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_OK:
        conn_ready(pg);
        return;
    case PGRES_POLLING_READING:
        events = UV_READABLE;
        break;
    case PGRES_POLLING_WRITING:
        events = UV_WRITABLE;
        break;
    default:
        go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    int rc = sock_watch(pg, events);
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot poll the socket: %s", uv_strerror(rc));
        go_down(pg, why);
    }
}

static void on_notice(void *arg, const PGresult *res)
{
    pg_t *pg = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    sev = sev != NULL ? sev : "NOTICE";
    msg = msg != NULL ? msg : "";
    /* with no query running, the server's last word comes as a notice */
    if (remember_fatal(pg, res)) {
        log_debug("pg: %s: server %s: %s", pg->target, sev, msg);
    } else if (strcmp(sev, "WARNING") == 0) {
        log_warn("pg: %s: server warning: %s", pg->target, msg);
    } else {
        log_debug("pg: %s: server %s: %s", pg->target, sev, msg);
    }
}

/* Starts libpq on the parsed DSN under our defaults; HOSTS and ADDRS, when
 * resolved here, become host and hostaddr. */
static void connect_start(pg_t *pg, const char *hosts, const char *addrs)
{
    static const char *const defaults[][2] = {
        {"application_name", "psproxy"},
        {"keepalives", "1"},
        {"keepalives_idle", "30"},
        {"keepalives_interval", "10"},
        {"keepalives_count", "3"},
        {"tcp_user_timeout", "60000"}, /* unacknowledged data for 60 s: the peer is gone */
        {"gssencmode", "disable"},     /* GSSAPI may ask a KDC, blocking */
    };
    size_t n = PS_ARRAY_SIZE(defaults) + 3;
    for (const PQconninfoOption *o = pg->opts; o->keyword != NULL; o++)
        n++;
    const char **kw = calloc(n, sizeof(*kw));
    const char **val = calloc(n, sizeof(*val));
    if (kw == NULL || val == NULL) {
        free(kw);
        free(val);
        go_down(pg, "out of memory");
        return;
    }
    size_t k = 0;
    /* when a keyword repeats, libpq keeps the last: the DSN overrides ours */
    for (size_t i = 0; i < PS_ARRAY_SIZE(defaults); i++, k++) {
        kw[k] = defaults[i][0];
        val[k] = defaults[i][1];
    }
    for (const PQconninfoOption *o = pg->opts; o->keyword != NULL; o++) {
        if (o->val != NULL && o->val[0] != '\0') {
            kw[k] = o->keyword;
            val[k++] = o->val;
        }
    }
    if (addrs != NULL) {
        kw[k] = "host";
        val[k++] = hosts;
        kw[k] = "hostaddr";
        val[k++] = addrs;
    }
    pg->conn = PQconnectStartParams(kw, val, 0);
    free(kw);
    free(val);
    if (pg->conn == NULL) {
        go_down(pg, "out of memory");
        return;
    }
    PQsetNoticeReceiver(pg->conn, on_notice, pg);
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    set_state(pg, PG_S_CONNECTING);
    /* libpq: act as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    int rc = sock_watch(pg, UV_WRITABLE);
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot poll the socket: %s", uv_strerror(rc));
        go_down(pg, why);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *r = container_of(req, struct resolve, req);
    pg_t *pg = r->pg;
    free(r);
    if (pg == NULL) {
        uv_freeaddrinfo(res);
        return;
    }
    pg->resolve = NULL;
    const char *host = pg->resolve_host;
    char why[PG_ERR_MAX];
    if (status < 0) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", host, uv_strerror(status));
        go_down(pg, why);
        return;
    }
    /* every address (libpq tries them in turn), each paired with the name,
     * which libpq still uses for TLS checks and .pgpass */
    char addrs[PG_MAX_ADDRS * 48];
    size_t o = 0;
    int count = 0;
    addrs[0] = '\0';
    for (struct addrinfo *ai = res; ai != NULL && count < PG_MAX_ADDRS; ai = ai->ai_next) {
        char ip[48];
        if (ai->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof(ip));
        else if (ai->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof(ip));
        else
            continue;
        size_t len = strlen(ip);
        int dup = 0;
        for (const char *p = addrs; p != NULL && *p != '\0'; p = strchr(p, ',')) {
            p += *p == ',';
            if (strncmp(p, ip, len) == 0 && (p[len] == ',' || p[len] == '\0'))
                dup = 1;
        }
        if (dup)
            continue;
        o += (size_t)snprintf(addrs + o, sizeof(addrs) - o, "%s%s", count ? "," : "", ip);
        count++;
    }
    uv_freeaddrinfo(res);
    if (count == 0) {
        snprintf(why, sizeof(why), "cannot resolve %s: no address", host);
        go_down(pg, why);
        return;
    }
    size_t hlen = strlen(host);
    char *hosts = malloc((hlen + 1) * (size_t)count);
    if (hosts == NULL) {
        go_down(pg, "out of memory");
        return;
    }
    for (int i = 0; i < count; i++) {
        memcpy(hosts + i * (hlen + 1), host, hlen);
        hosts[i * (hlen + 1) + hlen] = i + 1 < count ? ',' : '\0';
    }
    log_debug("pg: %s: %s is %s", pg->target, host, addrs);
    connect_start(pg, hosts, addrs);
    free(hosts);
}

static void start_attempt(pg_t *pg)
{
    pg->fatal[0] = '\0';
    uv_timer_start(&pg->timer, on_timer, pg->attempt_ms, 0);
    if (pg->resolve_host == NULL) {
        connect_start(pg, NULL, NULL);
        return;
    }
    struct resolve *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        go_down(pg, "out of memory");
        return;
    }
    r->pg = pg;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    set_state(pg, PG_S_RESOLVING);
    int rc = uv_getaddrinfo(pg->loop, &r->req, on_resolved, pg->resolve_host, NULL, &hints);
    if (rc != 0) {
        free(r);
        char why[PG_ERR_MAX];
        snprintf(why, sizeof(why), "cannot resolve %s: %s", pg->resolve_host, uv_strerror(rc));
        go_down(pg, why);
        return;
    }
    pg->resolve = r;
}

static void on_timer(uv_timer_t *t)
{
    pg_t *pg = t->data;
    char why[128];
    switch (pg->state) {
    case PG_S_WAIT:
        start_attempt(pg);
        break;
    case PG_S_RESOLVING:
    case PG_S_CONNECTING:
        snprintf(why, sizeof(why), "timeout: no connection after %llu ms",
                 (unsigned long long)pg->attempt_ms);
        go_down(pg, why);
        break;
    default:
        break;
    }
}

/* -- running queries ---------------------------------------------------------- */

/* Each returns 0, or non-zero when the connection went down (go_down has
 * the reason, for the log and on_down) or PG is closing: one meaning, the
 * caller stops touching the connection. */

static int emit_notifies(pg_t *pg)
{
    PGnotify *n;
    while ((n = PQnotifies(pg->conn)) != NULL) {
        if (pg->ev.on_notify != NULL)
            pg->ev.on_notify(pg, n->relname, n->extra);
        PQfreemem(n);
        if (pg->state != PG_S_UP)
            return -1;
    }
    return 0;
}

static int send_next(pg_t *pg)
{
    struct query *q = query_pop(pg);
    pg->inflight = q;
    int n = q->nparams;
    if (!PQsendQueryParams(pg->conn, q->sql, n, NULL, n ? q->values : NULL, n ? q->lengths : NULL,
                           n ? q->formats : NULL, 0)) {
        if (PQstatus(pg->conn) == CONNECTION_BAD) {
            go_down(pg, PQerrorMessage(pg->conn));
            return -1;
        }
        char err[PG_ERR_MAX];
        tidy(PQerrorMessage(pg->conn), err, sizeof(err)); /* refused before sending */
        pg->inflight = NULL;
        q->cb(pg, NULL, err, q->arg);
        free(q);
        return pg->state != PG_S_UP;
    }
    int rc = PQflush(pg->conn);
    if (rc < 0) {
        go_down(pg, PQerrorMessage(pg->conn));
        return -1;
    }
    pg->flushing = rc == 1;
    return 0;
}

static int is_error(ExecStatusType st)
{
    return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR;
}

/* A statement has one result; should more come, the first error wins, else
 * the last. */
static int keep_result(pg_t *pg, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        char why[PG_ERR_MAX];
        tidy(PQresultErrorMessage(r), why, sizeof(why));
        PQclear(r);
        go_down(pg, why[0] ? why : PQerrorMessage(pg->conn));
        return -1;
    }
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        PQclear(r);
        go_down(pg, "COPY is not supported");
        return -1;
    }
    if (pg->res != NULL && is_error(PQresultStatus(pg->res))) {
        PQclear(r);
        return 0;
    }
    PQclear(pg->res);
    pg->res = r;
    return 0;
}

static int finish_query(pg_t *pg)
{
    struct query *q = pg->inflight;
    PGresult *res = pg->res;
    pg->inflight = NULL;
    pg->res = NULL;
    char err[PG_ERR_MAX];
    const char *e = NULL;
    if (res == NULL) {
        e = "no result";
    } else if (is_error(PQresultStatus(res))) {
        const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        if (primary != NULL)
            snprintf(err, sizeof(err), "%s", primary);
        else
            tidy(PQresultErrorMessage(res), err, sizeof(err));
        e = err;
    }
    q->cb(pg, res, e, q->arg);
    PQclear(res);
    free(q);
    return pg->state != PG_S_UP;
}

/* Moves everything on as far as it goes without waiting: notifications out,
 * results in, the next query sent; then polls for what is missing. */
static void up_run(pg_t *pg)
{
    for (;;) {
        if (emit_notifies(pg) != 0)
            return;
        if (pg->inflight == NULL) {
            if (pg->head == NULL)
                break;
            if (send_next(pg) != 0)
                return;
            continue;
        }
        if (pg->flushing || PQisBusy(pg->conn))
            break;
        PGresult *r = PQgetResult(pg->conn);
        if (r == NULL) {
            if (finish_query(pg) != 0)
                return;
        } else if (keep_result(pg, r) != 0) {
            return;
        }
    }
    watch(pg);
}

/* PQconsumeInput, and again while OpenSSL holds plaintext: libpq reads a
 * TLS record into what room it has (8 KiB at least) and leaves the rest
 * inside OpenSSL, where no socket event announces it; with a server that
 * writes bigger records (poolers, other builds) the result would wait for
 * data that already came (ruby-pg #588). Returns 0, or -1: connection lost. */
static int consume_input(pg_t *pg)
{
    if (!PQconsumeInput(pg->conn))
        return -1;
    SSL *ssl = PQsslInUse(pg->conn) ? PQsslStruct(pg->conn, "OpenSSL") : NULL;
    for (int i = 0; ssl != NULL && SSL_pending(ssl) > 0 && i < 64; i++)
        if (!PQconsumeInput(pg->conn))
            return -1;
    return 0;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *s = h->data;
    pg_t *pg = s->pg;
    if (pg->state == PG_S_CONNECTING) {
        connect_step(pg); /* PQconnectPoll finds a socket error itself */
        return;
    }
    if (pg->state != PG_S_UP)
        return;
    if (status < 0) {
        pg->events = 0; /* libuv stopped the handle on the error */
        events = UV_READABLE;
    }
    if ((events & UV_READABLE) && consume_input(pg) != 0) {
        go_down(pg, PQerrorMessage(pg->conn));
        return;
    }
    if (pg->flushing) {
        /* flushing also when readable: the server may wait for us to read */
        int rc = PQflush(pg->conn);
        if (rc < 0) {
            go_down(pg, PQerrorMessage(pg->conn));
            return;
        }
        pg->flushing = rc == 1;
    }
    up_run(pg);
}

/* -- API ---------------------------------------------------------------------- */

/* libpq's parse errors quote the text they stumbled on, which may be the
 * password: everything between quotes goes. */
static void log_parse_error(const char *msg)
{
    char out[PG_ERR_MAX];
    size_t o = 0;
    int quoted = 0;
    for (const char *p = msg != NULL ? msg : ""; *p != '\0' && o + 4 < sizeof(out); p++) {
        if (*p == '"') {
            quoted = !quoted;
            if (quoted) {
                memcpy(out + o, "\"...", 4);
                o += 4;
                continue;
            }
        }
        if (*p == '\n')
            continue;
        if (!quoted)
            out[o++] = *p;
    }
    out[o] = '\0';
    log_err("pg: invalid connection string: %s", out);
}

static char *make_target(const PQconninfoOption *opts)
{
    static const char *const keys[] = {"host", "hostaddr", "port", "dbname", "user"};
    char buf[512];
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < PS_ARRAY_SIZE(keys); i++) {
        const char *v = opt_val(opts, keys[i]);
        if (v != NULL && o < sizeof(buf))
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s=%s", o ? " " : "", keys[i], v);
    }
    return strdup(o ? buf : "(libpq defaults)");
}

pg_t *pg_new(uv_loop_t *loop, const char *dsn, const pg_events_t *ev, void *data)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn != NULL ? dsn : "", &errmsg);
    if (opts == NULL) {
        if (errmsg != NULL)
            log_parse_error(errmsg);
        else
            log_err("pg: out of memory parsing the connection string");
        PQfreemem(errmsg);
        return NULL;
    }
    pg_t *pg = calloc(1, sizeof(*pg));
    char *target = make_target(opts);
    if (pg == NULL || target == NULL)
        goto fail;
    pg->loop = loop;
    if (ev != NULL)
        pg->ev = *ev;
    pg->data = data;
    pg->opts = opts;
    pg->target = target;
    pg->tail = &pg->head;
    pg->backoff_ms = PG_BACKOFF_MIN_MS;
    pg->attempt_ms = PG_CONNECT_TIMEOUT_MS;
    const char *ct = opt_val(opts, "connect_timeout");
    if (ct != NULL && atoi(ct) > 0)
        pg->attempt_ms = (uint64_t)(atoi(ct) < 2 ? 2 : atoi(ct)) * 1000; /* libpq's minimum */
    const char *host = opt_val(opts, "host");
    if (host != NULL && opt_val(opts, "hostaddr") == NULL && strchr(host, ',') == NULL &&
        host[0] != '/' && host[0] != '@' && !is_ip(host))
        pg->resolve_host = host;
    pg->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)pg;
    pg->rng |= 1;
    uv_timer_init(loop, &pg->timer);
    pg->timer.data = pg;
    return pg;
fail:
    free(pg);
    free(target);
    PQconninfoFree(opts);
    return NULL;
}

int pg_start(pg_t *pg)
{
    if (pg->state != PG_S_IDLE)
        return UV_EALREADY;
    set_state(pg, PG_S_WAIT);
    uv_timer_start(&pg->timer, on_timer, 0, 0);
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    pg_t *pg = h->data;
    for (PQconninfoOption *o = pg->opts; o->keyword != NULL; o++)
        if (o->val != NULL && o->dispchar != NULL && o->dispchar[0] == '*')
            explicit_bzero(o->val, strlen(o->val)); /* the password */
    PQconninfoFree(pg->opts);
    while (pg->chans != NULL) {
        struct chan *c = pg->chans;
        pg->chans = c->next;
        free(c);
    }
    free(pg->target);
    free(pg);
}

void pg_free(pg_t *pg)
{
    if (pg == NULL || pg->state == PG_S_CLOSING)
        return;
    set_state(pg, PG_S_CLOSING);
    abandon_resolve(pg);
    drop_conn(pg);
    uv_close((uv_handle_t *)&pg->timer, on_timer_closed);
    fail_all(pg, "closed");
}

int pg_query(pg_t *pg, const char *sql, int nparams, const char *const *values, const int *lengths,
             const int *formats, pg_result_cb cb, void *arg)
{
    if (sql == NULL || cb == NULL || nparams < 0 || nparams > PG_MAX_PARAMS ||
        (nparams > 0 && values == NULL))
        return UV_EINVAL;
    for (int i = 0; formats != NULL && i < nparams; i++)
        if (formats[i] == 1 && values[i] != NULL && (lengths == NULL || lengths[i] < 0))
            return UV_EINVAL; /* a binary parameter needs its length */
    if (pg->state != PG_S_UP)
        return UV_ENOTCONN;
    struct query *q = query_new(sql, nparams, values, lengths, formats);
    if (q == NULL)
        return UV_ENOMEM;
    q->cb = cb;
    q->arg = arg;
    query_push(pg, q);
    watch(pg); /* sent from on_poll when writable, never from here */
    return 0;
}

int pg_listen(pg_t *pg, const char *channel)
{
    size_t len = channel != NULL ? strlen(channel) : 0;
    if (len == 0 || len >= PG_NAMEDATALEN)
        return UV_EINVAL;
    struct chan **p = &pg->chans;
    for (; *p != NULL; p = &(*p)->next)
        if (strcmp((*p)->name, channel) == 0)
            return 0;
    struct chan *c = malloc(sizeof(*c) + len + 1);
    if (c == NULL)
        return UV_ENOMEM;
    c->next = NULL;
    memcpy(c->name, channel, len + 1);
    *p = c;
    if (pg->state != PG_S_UP)
        return 0;
    int rc = listen_send(pg, c->name, pg->listens > 0);
    if (rc == 0)
        watch(pg);
    return rc;
}

unsigned long pg_session(const pg_t *pg)
{
    return pg->state == PG_S_UP ? pg->session : 0;
}

const char *pg_target(const pg_t *pg)
{
    return pg->target;
}

void *pg_data(const pg_t *pg)
{
    return pg->data;
}
