/* Access log lines, formatted into a stack buffer and written whole. */
#include "access_log.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    a->stderr_tty = isatty(STDERR_FILENO);
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

typedef struct line {
    char buf[4096];
    size_t len;
} line_t;

static void add(line_t *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 2 - l->len; /* keep room for "}\n" */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void addf(line_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(line_t *l, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        add(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A JSON string: what the client sent is untrusted, so escape it all. */
static void add_str(line_t *l, const char *s, size_t n)
{
    add(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            add(l, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            addf(l, "\\u%04x", c);
        } else {
            add(l, (const char *)&c, 1);
        }
    }
    add(l, "\"", 1);
}

static void add_field(line_t *l, const char *name, uv_buf_t v)
{
    addf(l, ",\"%s\":", name);
    add_str(l, v.base != NULL ? v.base : "", v.len);
}

void alog_write(const alog_t *a, const cfg_site_t *site, const alog_entry_t *e)
{
    int json = site->log.format == CFG_LOG_JSON ||
               (site->log.format == CFG_LOG_AUTO && !a->stderr_tty);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    line_t l;
    l.len = 0;
    if (json) {
        addf(&l, "{\"level\":\"info\",\"ts\":%lld.%06ld,\"logger\":\"http.log.access\","
                 "\"msg\":\"handled request\",",
             (long long)ts.tv_sec, ts.tv_nsec / 1000);
    } else {
        struct tm tm;
        char when[32];
        localtime_r(&ts.tv_sec, &tm);
        strftime(when, sizeof(when), "%Y/%m/%d %H:%M:%S", &tm);
        addf(&l, "%s.%03ld\tinfo\thttp.log.access\thandled request\t{", when,
             ts.tv_nsec / 1000000);
    }
    addf(&l, "\"request\":{\"remote_ip\":");
    add_str(&l, e->remote_ip, strlen(e->remote_ip));
    add_field(&l, "remote_port", uv_buf_init((char *)e->remote_port, strlen(e->remote_port)));
    addf(&l, ",\"proto\":\"%s\"", e->proto);
    add_field(&l, "method", e->method);
    add_field(&l, "host", e->host);
    add_field(&l, "uri", e->uri);
    addf(&l, "},\"bytes_read\":%llu,\"duration\":%.6f,\"size\":%llu,\"status\":%d",
         (unsigned long long)e->bytes_read, e->duration, (unsigned long long)e->size, e->status);
    if (e->upstream != NULL) {
        addf(&l, ",\"upstream\":");
        add_str(&l, e->upstream, strlen(e->upstream));
    }
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    ssize_t w = write(site->log.fd, l.buf, l.len);
    (void)w; /* a full disk must not stop the proxy */
}
