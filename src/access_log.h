/* Access logs: one line per request in the shape of Caddy's
 * http.log.access entries, JSON or console, to stderr or to a file that is
 * opened when the server starts. */
#ifndef PS_ACCESS_LOG_H
#define PS_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"

typedef struct alog_entry {
    const char *remote_ip;
    const char *remote_port;
    uv_buf_t method, host, uri;
    const char *upstream; /* hostport that served it; NULL when answered here */
    const char *proto;   /* "HTTP/1.1", "HTTP/2.0" as Caddy logs it */
    int status;
    uint64_t bytes_read; /* request body bytes */
    uint64_t size;       /* response body bytes */
    double duration;     /* seconds from the end of the request head */
} alog_entry_t;

/* The open access log files, by path, kept across reloads. */
typedef struct alog {
    struct alog_file {
        char *path;
        int fd;
    } *files;
    size_t n, cap;
    int stderr_tty; /* CFG_LOG_AUTO picks console on a terminal, as Caddy */
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

/* Formats E as one line (at most 4 KiB, longer fields are cut) and writes
 * it with one write(2). */
void alog_write(const alog_t *a, const cfg_site_t *site, const alog_entry_t *e);

#endif
