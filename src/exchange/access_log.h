/* Access logs: one line per request, Caddy 2.6's http.log.access entry
 * field for field (JSON or console), to stderr or to a file that is opened
 * when the server starts. */
#ifndef PS_ACCESS_LOG_H
#define PS_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "tls.h"

/* One request as the log tells it. Every slice points into buffers the
 * connection still holds: nothing is copied before the line is written. */
typedef struct alog_entry {
    const char *remote_ip;
    const char *remote_port;
    const char *proto; /* "HTTP/1.1", "HTTP/2.0" as Caddy logs it */
    uv_buf_t method, host, uri;
    const http_hdr_t *req_hdrs; /* the request's fields as received */
    unsigned n_req_hdrs;
    const tls_info_t *tls; /* NULL on plain HTTP */
    /* the response head as written to the client (status line, fields,
     * empty line; what follows is not read), or empty */
    uv_buf_t resp_head;
    int resp_local;       /* psproxy made the answer (respond, redir, errors) */
    const char *upstream; /* hostport that served it; NULL when answered here */
    int status;
    uint64_t bytes_read;  /* request body bytes */
    uint64_t size;        /* response body bytes */
    uint64_t duration_ns; /* from the end of the request head */
} alog_entry_t;

/* The open access log files, by path, kept across reloads. */
typedef struct alog {
    struct alog_file {
        char *path;
        int fd;
    } *files;
    size_t n, cap;
    int stderr_tty; /* CFG_LOG_AUTO picks console on a terminal, as Caddy */
    int tty_known;  /* stderr_tty is set (the first alog_open); read-only after */
} alog_t;

/* Sets every site's log.fd of CFG, opening the files not open yet. Returns
 * 0, or an error with "file:line: log: cannot open PATH: reason" in ERR
 * (and nothing of CFG changed). */
int alog_open(alog_t *a, cfg_t *cfg, char *err, size_t errlen);
void alog_close(alog_t *a);

/* Reopens every file (for logrotate): each new file takes its old fd's
 * number with dup3, so workers writing at that moment are not disturbed.
 * A file that cannot be opened keeps the old one, logged. */
void alog_reopen(alog_t *a);

/* Formats E and writes it with one write(2). */
void alog_write(const alog_t *a, const cfg_site_t *site, const alog_entry_t *e);

#define ALOG_LINE_MAX 16384

/* How a line looks (Caddy 2.6's encoders). */
enum alog_style {
    ALOG_JSON = 0,
    ALOG_CONSOLE,       /* `format console`, or no format to stderr on a terminal */
    ALOG_CONSOLE_PLAIN, /* no format, a file, stderr a terminal: the level lower case,
                         * no colour */
};

/* Formats E as one line ending in '\n' into BUF (CAP bytes, at least
 * ALOG_LINE_MAX / 2), logged at NOW by the logger of log INDEX (cfg_site_t
 * log.index), in STYLE. A line that does not fit is written again with
 * empty header maps and its strings cut, so it stays one valid entry.
 * Returns its length. Pure: for alog_write and the tests. */
size_t alog_format(char *buf, size_t cap, const alog_entry_t *e, int style, int index,
                   const struct timespec *now);

#endif
