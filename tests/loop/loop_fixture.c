/* The loop tests' fixture: a worker on this thread's loop, the scripted
 * upstream server and clients beside it, the event log, the guard. */
#include "loop_fixture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "conn.h"
#include "handlers.h"
#include "log.h"
#include "test.h"

#define LT_ABUF_SIZE 65536
#define LT_PATTERN_BLOCK (1u << 20) /* a multiple of the pattern's period */
#define LT_TEARDOWN_MS 2000

static const char PATTERN[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
static char *pattern_block; /* LT_PATTERN_BLOCK bytes of the pattern, from offset 0 */

char lt_pattern(uint64_t offset)
{
    return PATTERN[offset % (sizeof(PATTERN) - 1)];
}

static const char *pattern_at(uint64_t offset)
{
    if (pattern_block == NULL) {
        pattern_block = malloc(LT_PATTERN_BLOCK);
        if (pattern_block == NULL)
            abort();
        for (size_t i = 0; i < LT_PATTERN_BLOCK; i++)
            pattern_block[i] = lt_pattern(i);
    }
    return pattern_block + offset % LT_PATTERN_BLOCK;
}

__attribute__((destructor)) static void pattern_free(void)
{
    free(pattern_block);
}

uint64_t lt_now(lt_t *t)
{
    return uv_now(&t->w.loop) - t->t_start;
}

/* ---- the event log ------------------------------------------------------ */

void lt_event(lt_t *t, const char *fmt, ...)
{
    if (t->finished)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->log + t->log_len, sizeof(t->log) - t->log_len - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(t->log) - t->log_len - 1) {
        fprintf(stderr, "  loop fixture: event log full\n");
        t->log[t->log_len] = '\0';
        return;
    }
    t->log_len += (size_t)n;
    t->log[t->log_len++] = '\n';
    if (t->n_events < LT_MAX_EVENTS)
        t->times[t->n_events++] = lt_now(t);
    t->log[t->log_len] = '\0';
    if (getenv("LT_VERBOSE") != NULL)
        fprintf(stderr, "  [%4llu ms] %.*s", (unsigned long long)lt_now(t), n + 1,
                t->log + t->log_len - (size_t)n - 1);
}

static int has_prefix(const char *line, size_t len, const char *prefixes)
{
    if (prefixes == NULL || prefixes[0] == '\0')
        return 1;
    for (const char *p = prefixes; *p != '\0';) {
        size_t k = strcspn(p, " ");
        if (k > 0 && k <= len && memcmp(line, p, k) == 0)
            return 1;
        p += k;
        p += strspn(p, " ");
    }
    return 0;
}

int64_t lt_time(lt_t *t, const char *text)
{
    size_t k = strlen(text);
    int e = 0;
    for (size_t i = 0; i < t->log_len && e < t->n_events; e++) {
        if (t->log_len - i >= k && memcmp(t->log + i, text, k) == 0)
            return (int64_t)t->times[e];
        const char *nl = memchr(t->log + i, '\n', t->log_len - i);
        if (nl == NULL)
            break;
        i = (size_t)(nl - t->log) + 1;
    }
    return -1;
}

const char *lt_events(lt_t *t, const char *prefixes)
{
    size_t out = 0;
    for (size_t i = 0; i < t->log_len;) {
        const char *nl = memchr(t->log + i, '\n', t->log_len - i);
        size_t len = nl != NULL ? (size_t)(nl - (t->log + i)) + 1 : t->log_len - i;
        if (has_prefix(t->log + i, len, prefixes)) {
            memcpy(t->filtered + out, t->log + i, len);
            out += len;
        }
        i += len;
    }
    t->filtered[out] = '\0';
    return t->filtered;
}

/* Bytes for the log: short ones quoted with \r \n escaped, else a count. */
static const char *show(char *dst, size_t cap, const char *s, size_t len)
{
    if (len > 48) {
        snprintf(dst, cap, "[%zu bytes]", len);
        return dst;
    }
    size_t o = 0;
    dst[o++] = '"';
    for (size_t i = 0; i < len && o + 6 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\r' || ch == '\n' || ch == '\\' || ch == '"') {
            dst[o++] = '\\';
            dst[o++] = ch == '\r' ? 'r' : ch == '\n' ? 'n' : (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", ch);
        } else {
            dst[o++] = (char)ch;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}

const char *lt_rx(const lt_peer_t *p)
{
    return p != NULL ? p->rx : "";
}

/* ---- peers -------------------------------------------------------------- */

static void peer_run(lt_peer_t *p);

static void rx_append(lt_peer_t *p, const char *data, size_t len)
{
    p->rx_total += len;
    size_t keep = len;
    if (p->client && p->rx_len + keep > LT_RX_KEEP)
        keep = LT_RX_KEEP - p->rx_len;
    if (p->rx_len + keep + 1 > p->rx_cap) {
        size_t cap = p->rx_cap;
        while (cap < p->rx_len + keep + 1)
            cap *= 2;
        p->rx = realloc(p->rx, cap);
        if (p->rx == NULL)
            abort();
        p->rx_cap = cap;
    }
    memcpy(p->rx + p->rx_len, data, keep);
    p->rx_len += keep;
    p->rx[p->rx_len] = '\0';
}

static void on_peer_closed(uv_handle_t *h)
{
    (void)h; /* the peer lives until lt_end */
}

static void peer_close(lt_peer_t *p, int logged)
{
    if (p->closed)
        return;
    if (p->flood_queued > 0)
        p->flood_sent = p->flood_queued - uv_stream_get_write_queue_size((uv_stream_t *)&p->tcp);
    if (logged)
        lt_event(p->t, "%s: close", p->name);
    p->closed = 1;
    uv_close((uv_handle_t *)&p->tcp, on_peer_closed);
}

typedef struct lt_write {
    uv_write_t req;
    lt_peer_t *p;
    uv_buf_t *bufs;
} lt_write_t;

static void on_step_written(uv_write_t *req, int status)
{
    lt_write_t *wr = container_of(req, lt_write_t, req);
    lt_peer_t *p = wr->p;
    free(wr->bufs);
    free(wr);
    p->writes--;
    if (status == UV_ECANCELED || p->closed)
        return;
    if (status < 0) {
        lt_event(p->t, "%s: write failed: %s", p->name, uv_err_name(status));
        peer_close(p, 0);
        return;
    }
    p->pc++; /* the write step is done */
    peer_run(p);
}

static void on_flood_written(uv_write_t *req, int status)
{
    lt_write_t *wr = container_of(req, lt_write_t, req);
    wr->p->writes--;
    free(wr->bufs);
    free(wr);
    (void)status; /* cancelled at the close; flood_sent says what went out */
}

static void on_feed_written(uv_write_t *req, int status)
{
    lt_write_t *wr = container_of(req, lt_write_t, req);
    lt_peer_t *p = wr->p;
    p->writes--;
    free(wr->bufs);
    free(wr);
    if (status == UV_ECANCELED || p->closed)
        return;
    if (status < 0) {
        lt_event(p->t, "%s: write failed: %s", p->name, uv_err_name(status));
        peer_close(p, 0);
        return;
    }
    peer_run(p); /* the next piece, unless the condition holds now */
}

static int peer_write(lt_peer_t *p, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    lt_write_t *wr = calloc(1, sizeof(*wr));
    if (wr == NULL)
        abort();
    wr->p = p;
    wr->bufs = bufs;
    int err = uv_write(&wr->req, (uv_stream_t *)&p->tcp, bufs, n, cb);
    if (err < 0) {
        free(bufs);
        free(wr);
        return err;
    }
    p->writes++;
    return 0;
}

static void start_write(lt_peer_t *p, const lt_step_t *s)
{
    uv_buf_t *b = malloc(sizeof(*b));
    if (b == NULL)
        abort();
    *b = uv_buf_init((char *)s->s, (unsigned)s->n);
    uv_update_time(&p->t->w.loop); /* uv_write writes what the socket takes now */
    if (p->n_writes < LT_MAX_WRITES)
        p->t_writes[p->n_writes++] = lt_now(p->t);
    int err = peer_write(p, b, 1, on_step_written);
    if (err < 0) {
        lt_event(p->t, "%s: write failed: %s", p->name, uv_err_name(err));
        peer_close(p, 0);
    }
}

/* LEN bytes of the pattern, continuing where the last flood ended: one
 * write of pieces of the pattern block. */
static void start_flood(lt_peer_t *p, size_t len, uv_write_cb cb)
{
    uv_buf_t *b = calloc(len / LT_PATTERN_BLOCK + 2, sizeof(*b));
    if (b == NULL)
        abort();
    unsigned n = 0;
    uint64_t off = p->flood_queued;
    for (size_t left = len; left > 0;) {
        size_t k = LT_PATTERN_BLOCK - (size_t)(off % LT_PATTERN_BLOCK);
        if (k > left)
            k = left;
        b[n++] = uv_buf_init((char *)pattern_at(off), (unsigned)k);
        off += k;
        left -= k;
    }
    p->flood_queued += len;
    if (peer_write(p, b, n, cb) < 0)
        lt_event(p->t, "%s: flood failed", p->name);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    lt_peer_t *p = h->data;
    (void)hint;
    *buf = uv_buf_init(p->abuf, LT_ABUF_SIZE);
}

static const char *step_name(int op)
{
    static const char *const names[] = {
        "end",      "write", "flood", "feed",      "read_head",  "read",     "read_to", "head",
        "response", "eof",   "wait",  "read_stop", "read_start", "shutdown", "close",   "done",
        "note"};
    return op >= 0 && op < (int)PS_ARRAY_SIZE(names) ? names[op] : "?";
}

/* The step waits for bytes or a response that cannot come any more. */
static int waits_for_input(const lt_peer_t *p)
{
    if (p->script == NULL)
        return 1;
    int op = p->script[p->pc].op;
    return op == LT_OP_END || op == LT_OP_READ_HEAD || op == LT_OP_READ || op == LT_OP_READ_TO ||
           op == LT_OP_HEAD || op == LT_OP_RESPONSE;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    lt_peer_t *p = s->data;
    lt_t *t = p->t;
    if (nread == 0 || p->closed)
        return;
    if (nread > 0) {
        rx_append(p, buf->base, (size_t)nread);
        if (p->client && !p->parse_failed) {
            llhttp_errno_t err = llhttp_execute(&p->parser, buf->base, (size_t)nread);
            if (err != HPE_OK) {
                p->parse_failed = 1;
                lt_event(t, "%s: bad response: %s", p->name, llhttp_get_error_reason(&p->parser));
            }
        }
        peer_run(p);
        return;
    }
    p->eof = (int)nread;
    uv_read_stop(s);
    p->reading = 0;
    if (p->client && !p->parse_failed && nread == UV_EOF)
        llhttp_finish(&p->parser); /* a close-delimited body ends here */
    char buf2[64];
    if (nread != UV_EOF)
        snprintf(buf2, sizeof(buf2), nread == UV_ECONNRESET ? "reset" : "error %s",
                 uv_err_name((int)nread));
    else
        snprintf(buf2, sizeof(buf2), "eof");
    if (p->client && p->in_message && p->n_heads > p->n_responses)
        lt_event(t, "%s: %s mid-body [%llu bytes]", p->name, buf2, (unsigned long long)p->body_len);
    else if (p->client && p->in_message)
        lt_event(t, "%s: %s mid-head", p->name, buf2);
    else
        lt_event(t, "%s: %s", p->name, buf2);
    peer_run(p);
    if (!p->closed && !t->finished && waits_for_input(p)) {
        if (p->client) {
            /* it waits for what cannot come: end now rather than at the guard */
            fprintf(stderr, "  %s: ended while its script waits (step %zu, %s)\n", p->name, p->pc,
                    step_name(p->script[p->pc].op));
            lt_finish(t);
        } else {
            peer_close(p, 0); /* the proxy closed it: close ours */
        }
    }
}

static void peer_read_start(lt_peer_t *p)
{
    if (p->reading || p->eof || p->closed)
        return;
    p->reading = 1;
    uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read);
}

static int proxy_has_read_all(lt_t *t);

/* Moves P's script on as far as it can go now. */
static void peer_run(lt_peer_t *p)
{
    lt_t *t = p->t;
    char shown[160];
    while (!p->closed && !t->finished && p->script != NULL) {
        const lt_step_t *s = &p->script[p->pc];
        const char *at = p->rx + p->pos; /* rx always holds a string */
        size_t avail = p->rx_len - p->pos;
        switch (s->op) {
        case LT_OP_END:
            return;
        case LT_OP_WRITE:
            if (p->writes == 0)
                start_write(p, s);
            return; /* on_step_written goes on */
        case LT_OP_FLOOD:
            start_flood(p, s->n, on_flood_written);
            break;
        case LT_OP_FEED:
            if (s->pred(t))
                break;
            if (p->writes == 0 && proxy_has_read_all(t))
                start_flood(p, s->n, on_feed_written);
            return;
        case LT_OP_READ_HEAD: {
            const char *end = memmem(at, avail, "\r\n\r\n", 4);
            if (end == NULL)
                return;
            size_t line = strcspn(at, "\r");
            const char *sp = memchr(at, ' ', line);
            const char *sp2 = sp != NULL ? memchr(sp + 1, ' ', line - (size_t)(sp + 1 - at)) : NULL;
            /* "GET /a": the method and target, without the version */
            lt_event(t, "%s: %.*s", p->name, (int)(sp2 != NULL ? sp2 - at : (long)line), at);
            p->pos += (size_t)(end + 4 - at);
            break;
        }
        case LT_OP_READ:
            if (avail < s->n)
                return;
            lt_event(t, "%s: body %s", p->name, show(shown, sizeof(shown), at, s->n));
            p->pos += s->n;
            break;
        case LT_OP_READ_TO: {
            const char *m = memmem(at, avail, s->s, s->n);
            if (m == NULL)
                return;
            size_t k = (size_t)(m - at) + s->n;
            lt_event(t, "%s: body %s", p->name, show(shown, sizeof(shown), at, k));
            p->pos += k;
            break;
        }
        case LT_OP_HEAD:
            if (p->n_heads <= p->want_heads)
                return;
            p->want_heads++;
            break;
        case LT_OP_RESPONSE:
            if (p->n_responses <= p->want_responses)
                return;
            p->want_responses++;
            break;
        case LT_OP_EOF:
            if (!p->eof)
                return;
            break;
        case LT_OP_WAIT:
            if (!s->pred(t))
                return;
            break;
        case LT_OP_READ_STOP:
            if (p->reading)
                uv_read_stop((uv_stream_t *)&p->tcp);
            p->reading = 0;
            break;
        case LT_OP_READ_START:
            peer_read_start(p);
            break;
        case LT_OP_SHUTDOWN:
            uv_shutdown(&p->sreq, (uv_stream_t *)&p->tcp, on_shutdown);
            break;
        case LT_OP_CLOSE:
            p->pc++;
            peer_close(p, 1);
            return;
        case LT_OP_DONE:
            p->pc++;
            lt_finish(t);
            return;
        case LT_OP_NOTE:
            lt_event(t, "%s: %s", p->name, s->s);
            break;
        }
        p->pc++;
    }
}

static lt_peer_t *peer_new(lt_t *t, int client, int index)
{
    lt_peer_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->abuf = malloc(LT_ABUF_SIZE)) == NULL)
        abort();
    p->t = t;
    p->client = client;
    p->pattern_ok = 1;
    p->rx_cap = 4096;
    if ((p->rx = malloc(p->rx_cap)) == NULL)
        abort();
    p->rx[0] = '\0';
    snprintf(p->name, sizeof(p->name), "%c%d", client ? 'c' : 'u', index);
    uv_tcp_init(&t->w.loop, &p->tcp);
    p->tcp.data = p;
    return p;
}

static void peer_free(lt_peer_t *p)
{
    if (p == NULL)
        return;
    free(p->rx);
    free(p->abuf);
    free(p->body);
    free(p);
}

/* ---- the client's response parser --------------------------------------- */

static lt_peer_t *parser_peer(llhttp_t *parser)
{
    return container_of(parser, lt_peer_t, parser);
}

static int on_message_begin(llhttp_t *parser)
{
    lt_peer_t *p = parser_peer(parser);
    p->in_message = 1;
    p->body_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *parser)
{
    lt_peer_t *p = parser_peer(parser);
    p->status = parser->status_code;
    p->n_heads++;
    lt_event(p->t, "%s: %d", p->name, p->status);
    return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
    lt_peer_t *p = parser_peer(parser);
    if (p->body == NULL && (p->body = malloc(LT_BODY_KEEP)) == NULL)
        abort();
    if (p->body_len < LT_BODY_KEEP) {
        size_t k = len < LT_BODY_KEEP - p->body_len ? len : LT_BODY_KEEP - p->body_len;
        memcpy(p->body + p->body_len, at, k);
    }
    /* against the pattern, piece by piece of its block */
    for (size_t done = 0; done < len && p->pattern_ok;) {
        uint64_t off = p->body_len + done;
        size_t k = LT_PATTERN_BLOCK - (size_t)(off % LT_PATTERN_BLOCK);
        if (k > len - done)
            k = len - done;
        p->pattern_ok = memcmp(at + done, pattern_at(off), k) == 0;
        done += k;
    }
    p->body_len += len;
    p->body_total += len;
    return 0;
}

static int on_message_complete(llhttp_t *parser)
{
    lt_peer_t *p = parser_peer(parser);
    char shown[160];
    p->in_message = 0;
    p->n_responses++;
    size_t kept = p->body_len < LT_BODY_KEEP ? (size_t)p->body_len : LT_BODY_KEEP;
    if (p->body_len <= 48)
        show(shown, sizeof(shown), p->body, kept);
    else
        snprintf(shown, sizeof(shown), "[%llu bytes]", (unsigned long long)p->body_len);
    lt_event(p->t, "%s: body %s", p->name, p->body_len == 0 ? "\"\"" : shown);
    return 0;
}

/* ---- the upstream server ------------------------------------------------ */

static void on_up_connection(uv_stream_t *server, int status)
{
    lt_t *t = server->data;
    if (status < 0 || t->finished)
        return;
    if (t->n_ups == LT_MAX_PEERS) {
        fprintf(stderr, "  loop fixture: more than %d upstream connections\n", LT_MAX_PEERS);
        lt_finish(t);
        return;
    }
    int i = t->n_ups;
    lt_peer_t *p = peer_new(t, 0, i);
    t->ups[t->n_ups++] = p;
    if (uv_accept(server, (uv_stream_t *)&p->tcp) < 0) {
        peer_close(p, 0);
        return;
    }
    p->script = t->up_scripts[i];
    lt_event(t, "%s: accept", p->name);
    peer_read_start(p);
    peer_run(p);
}

void lt_upstream(lt_t *t, int i, const lt_step_t *script)
{
    if (i >= 0 && i < LT_MAX_PEERS)
        t->up_scripts[i] = script;
}

/* ---- clients ------------------------------------------------------------ */

static void on_connected(uv_connect_t *req, int status)
{
    lt_peer_t *p = container_of(req, lt_peer_t, creq);
    if (status == UV_ECANCELED || p->closed)
        return;
    if (status < 0) {
        lt_event(p->t, "%s: connect failed: %s", p->name, uv_err_name(status));
        peer_close(p, 0);
        return;
    }
    peer_read_start(p);
    peer_run(p);
}

lt_peer_t *lt_client(lt_t *t, const lt_step_t *script)
{
    if (t->n_clients == LT_MAX_PEERS)
        abort();
    lt_peer_t *p = peer_new(t, 1, t->n_clients);
    t->clients[t->n_clients++] = p;
    p->script = script;
    llhttp_settings_init(&p->settings);
    p->settings.on_message_begin = on_message_begin;
    p->settings.on_headers_complete = on_headers_complete;
    p->settings.on_body = on_body;
    p->settings.on_message_complete = on_message_complete;
    llhttp_init(&p->parser, HTTP_RESPONSE, &p->settings);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", t->port, &sa);
    uv_update_time(&t->w.loop);
    p->t_connect = lt_now(t);
    int err = uv_tcp_connect(&p->creq, &p->tcp, (const struct sockaddr *)&sa, on_connected);
    if (err < 0) {
        lt_event(t, "%s: connect failed: %s", p->name, uv_err_name(err));
        peer_close(p, 0);
    }
    return p;
}

/* ---- waits, the guard, the end ------------------------------------------ */

/* LT_WAIT steps may wait on anything: ask before and after every poll. */
static void poll_waits(lt_t *t)
{
    if (t->on_poll != NULL && !t->finished)
        t->on_poll(t);
    for (int i = 0; i < t->n_clients && !t->finished; i++)
        peer_run(t->clients[i]);
    for (int i = 0; i < t->n_ups && !t->finished; i++)
        peer_run(t->ups[i]);
}

static void on_prepare(uv_prepare_t *h)
{
    poll_waits(h->data);
}

static void on_check(uv_check_t *h)
{
    poll_waits(h->data);
}

static void dump_peer(const lt_peer_t *p)
{
    fprintf(stderr, "  %s: step %zu (%s), %llu bytes in, eof %d, closed %d\n", p->name, p->pc,
            p->script != NULL ? step_name(p->script[p->pc].op) : "none",
            (unsigned long long)p->rx_total, p->eof, p->closed);
}

static void on_guard(uv_timer_t *h)
{
    lt_t *t = h->data;
    if (t->finished) {
        /* the teardown did not end: connections the worker still holds */
        fprintf(stderr, "  loop fixture: teardown took over %d ms: closing every connection\n",
                LT_TEARDOWN_MS);
        t->timed_out = 1;
        t->w.ops->close_all(&t->w);
        uv_close((uv_handle_t *)h, NULL);
        return;
    }
    fprintf(stderr, "  loop fixture: guard fired after %d ms; events so far:\n%s", LT_GUARD_MS,
            t->log);
    for (int i = 0; i < t->n_clients; i++)
        dump_peer(t->clients[i]);
    for (int i = 0; i < t->n_ups; i++)
        dump_peer(t->ups[i]);
    t->timed_out = 1;
    lt_finish(t);
}

void lt_finish(lt_t *t)
{
    if (t->finished)
        return;
    t->finished = 1;
    if (t->on_finish != NULL)
        t->on_finish(t);
    for (int i = 0; i < t->n_clients; i++)
        peer_close(t->clients[i], 0);
    for (int i = 0; i < t->n_ups; i++)
        peer_close(t->ups[i], 0);
    uv_close((uv_handle_t *)&t->up_listener, NULL);
    uv_close((uv_handle_t *)&t->prepare, NULL);
    uv_close((uv_handle_t *)&t->check, NULL);
    /* the guard stays, for the teardown: the worker drains and ends */
    uv_timer_start(&t->guard, on_guard, LT_TEARDOWN_MS, 0);
    uv_unref((uv_handle_t *)&t->guard);
    worker_stop(&t->w);
}

int lt_run(lt_t *t)
{
    /* a check in a peer's callback must not jump out of uv_run: it records,
     * the scenario runs to its end, and the case ends after */
    test_hold_failures();
    uv_timer_start(&t->guard, on_guard, LT_GUARD_MS, 0);
    uv_run(&t->w.loop, UV_RUN_DEFAULT);
    if (!uv_is_closing((uv_handle_t *)&t->guard))
        uv_close((uv_handle_t *)&t->guard, NULL);
    uv_run(&t->w.loop, UV_RUN_NOWAIT); /* the guard's close */
    test_release_failures();
    return t->timed_out ? -1 : 0;
}

/* ---- start and end ------------------------------------------------------ */

/* A socket bound to a free port as the worker will bind it (SO_REUSEPORT,
 * dual-stack where there is IPv6): held until the worker's own is bound,
 * so nobody else takes the port in between. Returns the fd; *PORT. */
static int reserve_port(int *port)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int v6 = fd >= 0;
    if (!v6)
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
        sa->sin6_family = AF_INET6;
        sa->sin6_addr = in6addr_any;
        len = sizeof(*sa);
    } else {
        struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
        sa->sin_family = AF_INET;
        len = sizeof(*sa);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        close(fd);
        return -1;
    }
    *port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* The upstream server's socket: listening on 127.0.0.1, any port. */
static int upstream_socket(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* CONF with @PORT@ and @UP@ replaced. */
static char *expand(const char *conf, int port, int up_port)
{
    size_t cap = strlen(conf) * 2 + 64, o = 0;
    char *out = malloc(cap);
    if (out == NULL)
        abort();
    for (const char *s = conf; *s != '\0';) {
        int n = -1;
        if (strncmp(s, "@PORT@", 6) == 0)
            n = port, s += 6;
        else if (strncmp(s, "@UP@", 4) == 0)
            n = up_port, s += 4;
        if (n >= 0)
            o += (size_t)snprintf(out + o, cap - o, "%d", n);
        else
            out[o++] = *s++;
    }
    out[o] = '\0';
    return out;
}

int lt_start(lt_t *t, const char *conf)
{
    return lt_start_tls(t, conf, NULL);
}

static void lt_abandon(void *arg);

int lt_start_tls(lt_t *t, const char *conf, tls_server_t *tls)
{
    memset(t, 0, sizeof(*t));
    signal(SIGPIPE, SIG_IGN); /* a peer writing to a closed socket gets EPIPE, as psproxy does */
    if (getenv("LT_DEBUG") != NULL)
        log_set_level(LOG_DEBUG); /* psproxy's own lines, on stderr */
    char err[1024];
    int up_fd = -1, port_fd = reserve_port(&t->port);
    if (port_fd < 0 || (up_fd = upstream_socket(&t->up_port)) < 0) {
        fprintf(stderr, "  loop fixture: no free port: %s\n", strerror(errno));
        goto fail;
    }
    char *text = expand(conf, t->port, t->up_port);
    int rc = cfg_parse("loop.conf", text, strlen(text), &t->cfg, err, sizeof(err));
    free(text);
    if (rc != 0) {
        fprintf(stderr, "  loop fixture: %s\n", err);
        goto fail;
    }
    if (alog_open(&t->alog, t->cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "  loop fixture: %s\n", err);
        goto fail;
    }
    handlers_init();
    worker_init(&t->w, 0, (worker_gen_t){cfg_ref(t->cfg), up_targets_new(t->cfg, NULL), tls, 64},
                &t->alog, &conn_worker_ops);
    if (worker_listen(&t->w) != 0) {
        worker_abort(&t->w);
        alog_close(&t->alog);
        goto fail;
    }
    close(port_fd);
    port_fd = -1;
    uv_loop_t *loop = &t->w.loop;
    uv_tcp_init(loop, &t->up_listener);
    t->up_listener.data = t;
    if (uv_tcp_open(&t->up_listener, up_fd) < 0 ||
        uv_listen((uv_stream_t *)&t->up_listener, 64, on_up_connection) < 0) {
        fprintf(stderr, "  loop fixture: upstream server: cannot listen\n");
        abort(); /* a bound, listening socket: cannot happen */
    }
    uv_prepare_init(loop, &t->prepare);
    t->prepare.data = t;
    uv_prepare_start(&t->prepare, on_prepare);
    uv_check_init(loop, &t->check);
    t->check.data = t;
    uv_check_start(&t->check, on_check);
    uv_unref((uv_handle_t *)&t->prepare);
    uv_unref((uv_handle_t *)&t->check);
    uv_timer_init(loop, &t->guard);
    t->guard.data = t;
    uv_update_time(loop);
    t->t_start = uv_now(loop);
    t->started = 1;
    test_on_fail(lt_abandon, t); /* a failed check tears it all down */
    return 0;

fail:
    if (port_fd >= 0)
        close(port_fd);
    if (up_fd >= 0)
        close(up_fd);
    cfg_unref(t->cfg);
    t->cfg = NULL;
    return -1;
}

static void on_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "  loop fixture: handle left open: %s%s\n", uv_handle_type_name(h->type),
            uv_is_closing(h) ? " (closing)" : "");
}

/* A check ended the case: the scenario may not have run, or not to its
 * end; end it (the teardown guard bounds it), then free everything. */
static void lt_abandon(void *arg)
{
    lt_t *t = arg;
    if (!t->finished) {
        lt_finish(t);
        uv_run(&t->w.loop, UV_RUN_DEFAULT);
    }
    lt_end(t);
}

void lt_end(lt_t *t)
{
    test_on_fail(NULL, NULL);
    if (!t->started)
        return;
    test_hold_failures(); /* the teardown runs whole; a failure ends the case after */
    if (uv_loop_alive(&t->w.loop)) {
        uv_walk(&t->w.loop, on_walk, NULL);
        CHECK(!"the loop ended with handles open");
    }
    CHECK(t->w.conns == NULL);
    CHECK_INT(t->w.n_conns, 0);
    worker_dispose(&t->w); /* its loop ran here, on no thread of its own */
    for (int i = 0; i < t->n_clients; i++)
        peer_free(t->clients[i]);
    for (int i = 0; i < t->n_ups; i++)
        peer_free(t->ups[i]);
    alog_close(&t->alog);
    cfg_unref(t->cfg);
    t->started = 0;
    test_release_failures();
}

/* ---- the worker's state (white box) ------------------------------------- */

/* The proxy's sockets to the scripted upstreams (their peer is t->up_port),
 * found among the loop's handles: the fixture looks at what the kernel and
 * libuv see, not inside the handler. */
struct up_sockets {
    const lt_t *t;
    uv_tcp_t *found[16];
    int n;
};

static void on_walk_up(uv_handle_t *h, void *arg)
{
    struct up_sockets *us = arg;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (h->type != UV_TCP || uv_is_closing(h) || us->n == (int)PS_ARRAY_SIZE(us->found) ||
        uv_tcp_getpeername((uv_tcp_t *)h, (struct sockaddr *)&ss, &len) != 0)
        return;
    int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    /* the scripted upstream's own sockets have it as their local port */
    if (port == us->t->up_port)
        us->found[us->n++] = (uv_tcp_t *)h;
}

static int up_sockets(lt_t *t, struct up_sockets *us)
{
    us->t = t;
    us->n = 0;
    uv_walk(&t->w.loop, on_walk_up, us);
    return us->n;
}

/* A client connection of the worker has a write in flight. */
static int client_write_pending(lt_t *t)
{
    for (conn_t *c = t->w.conns; c != NULL; c = c->next)
        if (c->state == CONN_S_EXCHANGE && c->x.rs == XRESP_RELAY && c->x.write_pending)
            return 1;
    return 0;
}

/* A client write is pending and an upstream socket of the proxy is
 * (READING 1) or is not (0) being read. */
static int client_waits_with_upstream(lt_t *t, int reading)
{
    struct up_sockets us;
    if (!client_write_pending(t))
        return 0;
    for (int i = 0; i < up_sockets(t, &us); i++)
        if ((us.found[i]->read_cb != NULL) == reading)
            return 1;
    return 0;
}

int lt_proxy_holds_upstream(lt_t *t)
{
    return client_waits_with_upstream(t, 0);
}

int lt_proxy_client_write_pending(lt_t *t)
{
    return client_waits_with_upstream(t, 1);
}

int lt_proxy_upstream_read_stopped(lt_t *t)
{
    struct up_sockets us;
    for (int i = 0; i < up_sockets(t, &us); i++)
        if (us.found[i]->read_cb == NULL)
            return 1;
    return 0;
}

/* No upstream connection of the proxy has unread bytes in its socket:
 * LT_FEED's next piece waits for it, so what is in flight stays small. */
static int proxy_has_read_all(lt_t *t)
{
    struct up_sockets us;
    for (int i = 0; i < up_sockets(t, &us); i++) {
        uv_os_fd_t fd;
        int unread = 0;
        if (uv_fileno((uv_handle_t *)us.found[i], &fd) == 0 &&
            ioctl(fd, FIONREAD, &unread) == 0 && unread > 0)
            return 0;
    }
    return 1;
}
