/* Access log entries as Caddy 2.6 writes them, formatted into a stack
 * buffer and written whole. */
#include "access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "log.h"

static int find_or_open(alog_t *a, const char *path, int *fd)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->files[i].path, path) == 0) {
            *fd = a->files[i].fd;
            return 0;
        }
    }
    int f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0)
        return -errno;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4;
        a->files = realloc(a->files, a->cap * sizeof(*a->files));
        if (a->files == NULL)
            abort();
    }
    a->files[a->n].path = strdup(path);
    a->files[a->n].fd = f;
    a->n++;
    *fd = f;
    return 0;
}

int alog_open(alog_t *a, cfg_t *cfg, char *err, size_t errlen)
{
    /* Decided once, at the first open, before any worker runs: workers read
     * it in alog_write, so a reload rewriting it (to the same value) raced
     * with them (ThreadSanitizer). stderr does not change while we run. */
    if (!a->tty_known) {
        a->stderr_tty = isatty(STDERR_FILENO);
        a->tty_known = 1;
    }
    /* open first, assign after: a failure leaves CFG as it was */
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const cfg_site_t *s = &cfg->sites[i];
        int fd;
        int rc = s->log.enabled && s->log.file != NULL ? find_or_open(a, s->log.file, &fd) : 0;
        if (rc == 0 && s->log.roll_line != 0)
            log_warn("%s:%d: log: psproxy does not roll %s itself: rotate it with logrotate and "
                     "send SIGUSR1 (psproxy reopens the file)",
                     s->file, s->log.roll_line, s->log.file);
        if (rc != 0) {
            snprintf(err, errlen, "%s:%d: log: cannot open %s: %s", s->file, s->line,
                     s->log.file, strerror(-rc));
            return PS_ECONFIG;
        }
    }
    for (size_t i = 0; i < cfg->n_sites; i++) {
        cfg_site_t *s = &cfg->sites[i];
        s->log.fd = STDERR_FILENO;
        if (s->log.enabled && s->log.file != NULL)
            find_or_open(a, s->log.file, &s->log.fd);
    }
    return 0;
}

void alog_close(alog_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        close(a->files[i].fd);
        free(a->files[i].path);
    }
    free(a->files);
    a->files = NULL;
    a->n = a->cap = 0;
}

void alog_reopen(alog_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        int fd = open(a->files[i].path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0 || dup3(fd, a->files[i].fd, O_CLOEXEC) < 0)
            log_err("access log %s: cannot reopen: %s", a->files[i].path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
}

/* ---- the entry ---------------------------------------------------------- */

/* The line being written: zap's JSON encoder, by hand. CONSOLE spaces it
 * as zap's console encoder does (", " and ": "). */
typedef struct out {
    char *buf;
    size_t len, cap;
    int spaced;
    int full; /* something did not fit: the line is written again, lean */
    int lean; /* header maps empty, strings cut at ALOG_LEAN_STR */
} out_t;

#define ALOG_LEAN_STR 200

static void put(out_t *o, const char *s, size_t n)
{
    if (n > o->cap - o->len) {
        o->full = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, s) put(o, s, sizeof(s) - 1)

static void put_text(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

/* zap's element separator: none right after an opening bracket or a key */
static void sep(out_t *o)
{
    if (o->len == 0)
        return;
    switch (o->buf[o->len - 1]) {
    case '{':
    case '[':
    case ':':
    case ',':
    case ' ':
        return;
    default:
        put(o, ", ", o->spaced ? 2 : 1);
    }
}

static void put_u64(out_t *o, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do {
        t[sizeof(t) - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    put(o, t + sizeof(t) - n, n);
}

/* WHOLE.FRAC with FRAC of DIGITS digits, trailing zeros dropped, as Go's
 * strconv 'f' -1 writes a float64 that came from an integer count */
static void put_decimal(out_t *o, uint64_t whole, uint64_t frac, int digits)
{
    put_u64(o, whole);
    if (frac == 0)
        return;
    char t[10];
    for (int i = digits - 1; i >= 0; i--) {
        t[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    while (digits > 0 && t[digits - 1] == '0')
        digits--;
    PUT_LIT(o, ".");
    put(o, t, (size_t)digits);
}

/* The length of the UTF-8 sequence at S (1-4), or 0 where Go's
 * utf8.DecodeRune sees an error: a bad lead or continuation byte, a cut
 * sequence, an overlong form, a surrogate, a value past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* A JSON string as zap escapes it: what the client sent is untrusted, so
 * every byte goes through here. Valid UTF-8 stays as it is, each byte of
 * an invalid sequence becomes U+FFFD; controls are \n \r \t or \u00XX. */
static void put_str(out_t *o, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    if (o->lean && n > ALOG_LEAN_STR)
        n = ALOG_LEAN_STR;
    PUT_LIT(o, "\"");
    size_t from = 0, i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k = c >= 0x80 ? utf8_seq(s + i, n - i) : 1;
        if (k > 0 && c >= 0x20 && c != '"' && c != '\\') {
            i += k;
            continue;
        }
        put(o, str + from, i - from);
        if (k == 0) {
            PUT_LIT(o, "\\ufffd");
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(o, e, 2);
        } else if (c == '\n') {
            PUT_LIT(o, "\\n");
        } else if (c == '\r') {
            PUT_LIT(o, "\\r");
        } else if (c == '\t') {
            PUT_LIT(o, "\\t");
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(o, e, 6);
        }
        from = ++i;
    }
    put(o, str + from, n - from);
    PUT_LIT(o, "\"");
}

static void key(out_t *o, const char *k)
{
    sep(o);
    PUT_LIT(o, "\"");
    put(o, k, strlen(k));
    put(o, "\": ", o->spaced ? 3 : 2);
}

static void put_field(out_t *o, const char *k, uv_buf_t v)
{
    key(o, k);
    put_str(o, v.base != NULL ? v.base : "", v.len);
}

static void put_cstr(out_t *o, const char *k, const char *v)
{
    put_field(o, k, uv_buf_init((char *)v, (unsigned)strlen(v)));
}

static void put_num(out_t *o, const char *k, uint64_t v)
{
    key(o, k);
    put_u64(o, v);
}

/* ---- header maps ---------------------------------------------------------- */

/* Which fields a map leaves out: the ones Go's net/http keeps outside
 * http.Header, so Caddy never logs them. */
enum alog_map {
    MAP_REQUEST,        /* Host (r.Host) and Transfer-Encoding (r.TransferEncoding) */
    MAP_RESPONSE,       /* Connection, Keep-Alive, Transfer-Encoding: this hop's
                         * framing, which Go writes after the map */
    MAP_LOCAL_RESPONSE, /* ... and Content-Length, which Go computes as it writes */
};

static int left_out(uv_buf_t name, int map)
{
    if (map == MAP_REQUEST)
        return http_token_eq(name, "host") || http_token_eq(name, "transfer-encoding");
    return http_token_eq(name, "connection") || http_token_eq(name, "keep-alive") ||
           http_token_eq(name, "transfer-encoding") ||
           (map == MAP_LOCAL_RESPONSE && http_token_eq(name, "content-length"));
}

/* Caddy 2.6 logs these with no values unless log_credentials is set
 * (psproxy has no such option); later versions write ["REDACTED"]. */
static int redacted(uv_buf_t name)
{
    return http_token_eq(name, "cookie") || http_token_eq(name, "set-cookie") ||
           http_token_eq(name, "authorization") || http_token_eq(name, "proxy-authorization");
}

/* NAME in Go's canonical form (textproto.CanonicalMIMEHeaderKey): the
 * first letter and each one after a '-' upper case, the rest lower; a name
 * with a byte outside tchar stays as it is. */
static void key_canonical(out_t *o, uv_buf_t name)
{
    char t[128];
    int token = name.len > 0;
    for (size_t i = 0; i < name.len && token; i++)
        token = http_is_tchar((unsigned char)name.base[i]);
    sep(o);
    if (!token || name.len > sizeof(t)) {
        put_str(o, name.base, name.len);
    } else {
        int upper = 1;
        for (size_t i = 0; i < name.len; i++) {
            char c = name.base[i];
            if (upper && c >= 'a' && c <= 'z')
                c = (char)(c - 'a' + 'A');
            else if (!upper && c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            t[i] = c;
            upper = c == '-';
        }
        put_str(o, t, name.len); /* tchars: nothing to escape */
    }
    put(o, ": ", o->spaced ? 2 : 1);
}

static uv_buf_t trim_ows(uv_buf_t v)
{
    while (v.len > 0 && (v.base[0] == ' ' || v.base[0] == '\t')) {
        v.base++;
        v.len--;
    }
    while (v.len > 0 && (v.base[v.len - 1] == ' ' || v.base[v.len - 1] == '\t'))
        v.len--;
    return v;
}

/* The fields as Go's http.Header map: one key per name whatever its case,
 * in the order names first appear (Go's order is random), the values in
 * the order they came. Quadratic in the fields, which are at most
 * HTTP_MAX_HEADERS-odd: no allocation. */
static void put_map(out_t *o, const char *k, const http_hdr_t *h, unsigned n, int map)
{
    key(o, k);
    PUT_LIT(o, "{");
    for (unsigned i = 0; i < n && !o->lean; i++) {
        if (left_out(h[i].name, map))
            continue;
        unsigned j = 0;
        while (j < i && !(h[j].name.len == h[i].name.len &&
                          strncasecmp(h[j].name.base, h[i].name.base, h[i].name.len) == 0))
            j++;
        if (j < i)
            continue; /* written with the first of its name */
        key_canonical(o, h[i].name);
        PUT_LIT(o, "[");
        for (unsigned m = i; m < n && !redacted(h[i].name); m++) {
            if (h[m].name.len == h[i].name.len &&
                strncasecmp(h[m].name.base, h[i].name.base, h[i].name.len) == 0) {
                uv_buf_t v = trim_ows(h[m].value);
                sep(o);
                put_str(o, v.base, v.len);
            }
        }
        PUT_LIT(o, "]");
    }
    PUT_LIT(o, "}");
}

static const char *find_crlf(const char *p, const char *end)
{
    while (p < end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (cr == NULL || cr + 1 >= end)
            return NULL;
        if (cr[1] == '\n')
            return cr;
        p = cr + 1;
    }
    return NULL;
}

/* The fields of a head psproxy wrote ("Name: value" lines after the status
 * line, up to the empty line), at most MAX. */
static unsigned head_fields(uv_buf_t head, http_hdr_t *f, unsigned max)
{
    const char *end = head.base + head.len;
    unsigned n = 0;
    if (head.len < 5 || memcmp(head.base, "HTTP/", 5) != 0)
        return 0;
    const char *eol = find_crlf(head.base, end);
    while (eol != NULL && n < max) {
        const char *p = eol + 2;
        eol = find_crlf(p, end);
        const char *colon = eol != NULL ? memchr(p, ':', (size_t)(eol - p)) : NULL;
        if (colon == NULL)
            break; /* the empty line */
        f[n].name = uv_buf_init((char *)p, (unsigned)(colon - p));
        f[n].value = uv_buf_init((char *)colon + 1, (unsigned)(eol - colon - 1));
        n++;
    }
    return n;
}

/* ---- the line ------------------------------------------------------------ */

#define ALOG_RESP_FIELDS 128

static void put_logger(out_t *o, int index)
{
    PUT_LIT(o, "http.log.access");
    if (index >= 0) {
        PUT_LIT(o, ".log");
        put_u64(o, (uint64_t)index);
    }
}

static void format(out_t *o, const alog_entry_t *e, int style, int index,
                   const struct timespec *now)
{
    int error = e->status >= 400; /* Caddy logs those at error level */
    if (style != ALOG_JSON) {
        /* zap's console encoder: time, level, logger, message, then the
         * fields as spaced JSON; Caddy 2.6's time is wall_milli in UTC, its
         * level upper case in ANSI colour */
        struct tm tm;
        char when[32];
        gmtime_r(&now->tv_sec, &tm);
        size_t n = strftime(when, sizeof(when), "%Y/%m/%d %H:%M:%S.", &tm);
        put(o, when, n);
        long ms = now->tv_nsec / 1000000;
        char m[3] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10)};
        put(o, m, 3);
        if (style == ALOG_CONSOLE_PLAIN)
            put_text(o, error ? "\terror\t" : "\tinfo\t");
        else if (error)
            PUT_LIT(o, "\t\x1b[31mERROR\x1b[0m\t");
        else
            PUT_LIT(o, "\t\x1b[34mINFO\x1b[0m\t");
        put_logger(o, index);
        PUT_LIT(o, "\thandled request\t{");
    } else {
        PUT_LIT(o, "{");
        put_cstr(o, "level", error ? "error" : "info");
        key(o, "ts");
        put_decimal(o, (uint64_t)now->tv_sec, (uint64_t)now->tv_nsec / 100, 7);
        key(o, "logger");
        PUT_LIT(o, "\"");
        put_logger(o, index);
        PUT_LIT(o, "\"");
        put_cstr(o, "msg", "handled request");
    }

    key(o, "request");
    PUT_LIT(o, "{");
    put_cstr(o, "remote_ip", e->remote_ip);
    put_cstr(o, "remote_port", e->remote_port);
    put_cstr(o, "proto", e->proto);
    put_field(o, "method", e->method);
    put_field(o, "host", e->host);
    put_field(o, "uri", e->uri);
    put_map(o, "headers", e->req_hdrs, e->req_hdrs != NULL ? e->n_req_hdrs : 0, MAP_REQUEST);
    if (e->tls != NULL) {
        key(o, "tls");
        PUT_LIT(o, "{");
        key(o, "resumed");
        if (e->tls->resumed)
            PUT_LIT(o, "true");
        else
            PUT_LIT(o, "false");
        put_num(o, "version", e->tls->version);
        put_num(o, "cipher_suite", e->tls->cipher_suite);
        put_field(o, "proto", e->tls->alpn);
        put_cstr(o, "server_name", e->tls->server_name);
        PUT_LIT(o, "}");
    }
    PUT_LIT(o, "}");

    /* not in Caddy 2.6.2's entry; Caddy 2.7 and later write it here */
    put_num(o, "bytes_read", e->bytes_read);
    put_cstr(o, "user_id", ""); /* psproxy authenticates nobody */
    key(o, "duration");
    put_decimal(o, e->duration_ns / 1000000000, e->duration_ns % 1000000000, 9);
    put_num(o, "size", e->size);
    put_num(o, "status", (uint64_t)(e->status > 0 ? e->status : 0));
    http_hdr_t f[ALOG_RESP_FIELDS];
    unsigned nf = e->resp_head.len > 0 ? head_fields(e->resp_head, f, ALOG_RESP_FIELDS) : 0;
    put_map(o, "resp_headers", f, nf, e->resp_local ? MAP_LOCAL_RESPONSE : MAP_RESPONSE);
    if (e->upstream != NULL) /* psproxy's own: no Caddy writes it */
        put_cstr(o, "upstream", e->upstream);
    PUT_LIT(o, "}\n");
}

size_t alog_format(char *buf, size_t cap, const alog_entry_t *e, int style, int index,
                   const struct timespec *now)
{
    out_t o = {.buf = buf, .cap = cap, .spaced = style != ALOG_JSON};
    format(&o, e, style, index, now);
    if (o.full) {
        o.len = 0;
        o.full = 0;
        o.lean = 1;
        format(&o, e, style, index, now);
    }
    if (o.full && o.len > 0) /* a CAP below ALOG_LINE_MAX / 2: cut, but one line */
        o.buf[o.len - 1] = '\n';
    return o.len;
}

void alog_write(const alog_t *a, const cfg_site_t *site, const alog_entry_t *e)
{
    /* no format: Caddy 2.6 picks console when stderr is a terminal, and
     * colours the level only when the output is a standard stream */
    int style = site->log.format == CFG_LOG_CONSOLE                  ? ALOG_CONSOLE
                : site->log.format == CFG_LOG_JSON || !a->stderr_tty ? ALOG_JSON
                : site->log.file == NULL                             ? ALOG_CONSOLE
                                                                     : ALOG_CONSOLE_PLAIN;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char buf[ALOG_LINE_MAX];
    size_t len = alog_format(buf, sizeof(buf), e, style, site->log.index, &now);
    ssize_t w = write(site->log.fd, buf, len);
    (void)w; /* a full disk must not stop the proxy */
}
