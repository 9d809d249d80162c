/* libcurl multi on libuv: curl says which sockets to watch and when to
 * wake it; we watch them with uv_poll and wake it with a uv_timer. */
#include "fetch.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ca_bundle.h"
#include "log.h"

#define FETCH_MAX_BODY (1 << 20) /* an ACME response is small: a bigger one is an error */
#define FETCH_TIMEOUT_MS 30000L
#define FETCH_USER_AGENT "psproxy/" PSPROXY_VERSION " (ACME; +libcurl)"

struct fetch {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *ca_file;
    struct req *reqs; /* under way, for fetch_free */
    int closing;
    int fresh; /* fetch_set_fresh: no DNS cache, no connection reuse */
};

/* One socket curl asked us to watch. */
struct sock {
    uv_poll_t poll;
    fetch_t *f;
    curl_socket_t fd;
};

struct req {
    fetch_t *f;
    CURL *easy;
    struct curl_slist *headers;
    char *post;
    char *body;
    size_t len, cap;
    int too_big;
    char *nonce, *location, *retry_after, *content_type;
    fetch_cb cb;
    void *arg;
    struct req *next;
    char errbuf[CURL_ERROR_SIZE];
};

static void req_free(struct req *r)
{
    curl_slist_free_all(r->headers);
    curl_easy_cleanup(r->easy);
    free(r->post);
    free(r->body);
    free(r->nonce);
    free(r->location);
    free(r->retry_after);
    free(r->content_type);
    free(r);
}

static void req_unlink(struct req *r)
{
    struct req **p = &r->f->reqs;
    while (*p != NULL && *p != r)
        p = &(*p)->next;
    if (*p == r)
        *p = r->next;
}

/* Finished transfers: hand each result to its callback. */
static void check_done(fetch_t *f)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(f->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode rc = msg->data.result;
        curl_multi_remove_handle(f->multi, r->easy);
        req_unlink(r);
        fetch_resp_t resp;
        memset(&resp, 0, sizeof(resp));
        if (rc == CURLE_OK && !r->too_big) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        } else {
            resp.error = r->too_big       ? "response too large"
                         : r->errbuf[0]   ? r->errbuf
                                          : curl_easy_strerror(rc);
        }
        resp.body = r->body != NULL ? r->body : (char *)"";
        resp.len = r->len;
        resp.nonce = r->nonce;
        resp.location = r->location;
        resp.retry_after = r->retry_after;
        resp.content_type = r->content_type;
        r->cb(r->arg, &resp);
        req_free(r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock *sk = p->data;
    fetch_t *f = sk->f;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(f->multi, sk->fd, flags, &running);
    check_done(f);
}

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

/* CURLMOPT_SOCKETFUNCTION: 0, or -1 (libcurl's contract: its one error
 * value) when the socket cannot be watched. */
static int on_curl_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    fetch_t *f = userp;
    struct sock *sk = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            uv_poll_stop(&sk->poll);
            uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
            curl_multi_assign(f->multi, s, NULL);
        }
        return 0;
    }
    if (sk == NULL) {
        sk = calloc(1, sizeof(*sk));
        if (sk == NULL || uv_poll_init_socket(f->loop, &sk->poll, s) != 0) {
            free(sk);
            return -1;
        }
        sk->poll.data = sk;
        sk->f = f;
        sk->fd = s;
        curl_multi_assign(f->multi, s, sk);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&sk->poll, events, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    fetch_t *f = t->data;
    int running;
    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(f);
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    fetch_t *f = userp;
    /* never act from inside curl: a 0 timeout runs on the next loop turn */
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
    struct req *r = userp;
    size_t len = size * n;
    if (r->len + len > FETCH_MAX_BODY) {
        r->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (r->len + len + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + len + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return 0;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

/* Keeps the one value of NAME from a header line, trimmed. */
static void keep_header(char **dst, const char *line, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return;
    const char *v = line + n + 1;
    const char *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    free(*dst);
    *dst = strndup(v, (size_t)(end - v));
}

static size_t on_header(char *line, size_t size, size_t n, void *userp)
{
    struct req *r = userp;
    size_t len = size * n;
    if (len > 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* a new response (after a redirect or 1xx): forget the last one's */
        free(r->nonce);
        free(r->location);
        free(r->retry_after);
        free(r->content_type);
        r->nonce = r->location = r->retry_after = r->content_type = NULL;
        return len;
    }
    keep_header(&r->nonce, line, len, "replay-nonce");
    keep_header(&r->location, line, len, "location");
    keep_header(&r->retry_after, line, len, "retry-after");
    keep_header(&r->content_type, line, len, "content-type");
    return len;
}

fetch_t *fetch_new(uv_loop_t *loop, const char *ca_file)
{
    fetch_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->loop = loop;
    f->multi = curl_multi_init();
    if (f->multi == NULL) {
        free(f);
        return NULL;
    }
    if (ca_file == NULL)
        ca_file = ca_bundle_system();
    f->ca_file = ca_file != NULL ? strdup(ca_file) : NULL;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    return f;
}

static void on_timer_closed(uv_handle_t *h)
{
    fetch_t *f = h->data;
    free(f->ca_file);
    free(f);
}

void fetch_free(fetch_t *f)
{
    if (f == NULL)
        return;
    while (f->reqs != NULL) {
        struct req *r = f->reqs;
        f->reqs = r->next;
        curl_multi_remove_handle(f->multi, r->easy); /* closes its sockets: CURL_POLL_REMOVE */
        req_free(r);
    }
    curl_multi_cleanup(f->multi);
    uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}

int fetch_start(fetch_t *f, const char *method, const char *url, const char *body,
                const char *accept, fetch_cb cb, void *arg)
{
    return fetch_start_timeout(f, method, url, body, accept, FETCH_TIMEOUT_MS, cb, arg);
}

int fetch_start_timeout(fetch_t *f, const char *method, const char *url, const char *body,
                        const char *accept, long timeout_ms, fetch_cb cb, void *arg)
{
    struct req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return UV_ENOMEM;
    r->f = f;
    r->cb = cb;
    r->arg = arg;
    r->easy = curl_easy_init();
    if (r->easy == NULL) {
        free(r);
        return UV_ENOMEM;
    }
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, FETCH_USER_AGENT);
    if (f->fresh) {
        /* the multi handle caches a name's addresses for 60 s and keeps
         * connections: either would pin an address the name has left */
        curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, 0L);
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000L ? timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    if (f->ca_file != NULL)
        curl_easy_setopt(e, CURLOPT_CAINFO, f->ca_file);
    if (accept != NULL) {
        char h[128];
        snprintf(h, sizeof(h), "Accept: %s", accept);
        r->headers = curl_slist_append(r->headers, h);
    }
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        r->post = strdup(body != NULL ? body : "");
        r->headers = curl_slist_append(r->headers, "Content-Type: application/jose+json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->post);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->post));
    }
    /* no "Expect: 100-continue" round trip for our small bodies */
    r->headers = curl_slist_append(r->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    CURLMcode mc = curl_multi_add_handle(f->multi, e);
    if (mc != CURLM_OK) {
        req_free(r);
        return mc == CURLM_OUT_OF_MEMORY ? UV_ENOMEM : UV_EINVAL;
    }
    r->next = f->reqs;
    f->reqs = r;
    return 0;
}

void fetch_set_fresh(fetch_t *f)
{
    f->fresh = 1;
}
