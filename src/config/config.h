/* The configuration: a Caddyfile (subset, Caddy's meaning) parsed into an
 * immutable, refcounted snapshot that workers read without locks. */
#ifndef PS_CONFIG_H
#define PS_CONFIG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <stdio.h>

enum cfg_scheme {
    CFG_SCHEME_HTTP = 1,
    CFG_SCHEME_HTTPS = 2,
};

/* HTTP versions served (Caddy's `servers { protocols }`); h1 is always on. */
enum cfg_protocol {
    CFG_PROTO_H1 = 1,
    CFG_PROTO_H2 = 2,
};

enum cfg_storage {
    CFG_STORAGE_FILE_SYSTEM = 0,
    CFG_STORAGE_POSTGRES,
};

enum cfg_auto_https {
    CFG_AUTO_HTTPS_ON = 0,
    CFG_AUTO_HTTPS_OFF,
    CFG_AUTO_HTTPS_DISABLE_REDIRECTS,
};

/* Runtime placeholders ({host}, {http.request.uri}, ...) compiled at load. */
enum cfg_var {
    CFG_VAR_NONE = 0, /* a literal part */
    CFG_VAR_HOST,     /* {host} {http.request.host}: Host without port */
    CFG_VAR_HOSTPORT, /* {hostport} {http.request.hostport} */
    CFG_VAR_URI,      /* {uri} {http.request.uri}: path?query as received */
    CFG_VAR_PATH,     /* {path} {http.request.uri.path} */
    CFG_VAR_QUERY,    /* {query} {http.request.uri.query}: without '?' */
    CFG_VAR_METHOD,   /* {method} {http.request.method} */
    CFG_VAR_SCHEME,   /* {scheme} {http.request.scheme} */
    CFG_VAR_REMOTE_HOST, /* {remote_host} {http.request.remote.host} */
    CFG_VAR_REMOTE_PORT, /* {remote_port} {http.request.remote.port} */
    CFG_VAR_UPSTREAM_HOSTPORT, /* {upstream_hostport} {http.reverse_proxy.upstream.hostport} */
};

typedef struct cfg_tmpl_part {
    int var;         /* enum cfg_var; CFG_VAR_NONE for literal text */
    const char *lit; /* literal text (var == CFG_VAR_NONE) */
    size_t len;
} cfg_tmpl_part_t;

/* A string with placeholders: parts concatenated at request time. */
typedef struct cfg_tmpl {
    const char *raw; /* the token as written, for logs */
    cfg_tmpl_part_t *parts;
    size_t n_parts;
} cfg_tmpl_t;

enum cfg_log_format {
    CFG_LOG_AUTO = 0, /* Caddy's default: console on a terminal, else json */
    CFG_LOG_CONSOLE,
    CFG_LOG_JSON,
};

enum cfg_hdr_op_kind {
    CFG_HDR_SET = 1, /* Name value: replace all values */
    CFG_HDR_ADD,     /* +Name value: add one more */
    CFG_HDR_DEL,     /* -Name: remove (a trailing '*' makes it a prefix) */
    CFG_HDR_DEFAULT, /* ?Name value: set only when absent */
};

typedef struct cfg_hdr_op {
    int op;           /* enum cfg_hdr_op_kind */
    const char *name; /* without the +-? sigil; for DEL may end in '*' */
    cfg_tmpl_t value; /* unused for DEL */
} cfg_hdr_op_t;

typedef struct cfg_hdr_ops {
    cfg_hdr_op_t *ops;
    size_t n;
    /* a site `header` applied to the response as it is written (`defer`,
     * a deletion, a `>` or `?` field), not before the handler runs */
    int deferred;
} cfg_hdr_ops_t;

enum cfg_lb_policy {
    CFG_LB_RANDOM = 0,
    CFG_LB_ROUND_ROBIN, /* psproxy's default (Caddy's is random) */
    CFG_LB_FIRST,
    CFG_LB_LEAST_CONN,
    CFG_LB_IP_HASH,
};

/* A status matcher: an exact code (200) or a class (2xx: code 2, class 1). */
typedef struct cfg_status {
    int code;
    int is_class;
} cfg_status_t;

typedef struct cfg_upstream {
    const char *host;    /* "localhost", "127.0.0.1", "::1" (no brackets) */
    const char *port;    /* "8080" */
    const char *hostport; /* "localhost:8080" / "[::1]:8080": the pool key and Host value */
    int line;
} cfg_upstream_t;

/* An address range: trusted_proxies 10.0.0.0/8 ::1 private_ranges */
typedef struct cfg_cidr {
    int family;           /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int bits;
} cfg_cidr_t;

typedef struct cfg_proxy {
    cfg_upstream_t *ups;
    size_t n_ups;
    int lb_policy;            /* enum cfg_lb_policy */
    int lb_retries;           /* extra upstreams a request may try; -1: every one */
    uint64_t lb_try_duration; /* ms; 0 = one try (plus the dial-error retry) */
    uint64_t lb_try_interval; /* ms; default 250 */
    cfg_hdr_ops_t header_up;   /* request headers to the upstream */
    cfg_hdr_ops_t header_down; /* response headers from the upstream */
    /* peers whose X-Forwarded-* are kept and extended (Caddy 2.6's
     * reverse_proxy trusted_proxies); everyone else's are replaced */
    cfg_cidr_t *trusted;
    size_t n_trusted;
    /* transport http { ... } */
    uint64_t dial_timeout;            /* ms; default 3000 */
    /* 0 is none, the default for these three, as Caddy: a long poll or a
     * server-sent event stream may wait on its upstream for as long as it
     * likes */
    uint64_t response_header_timeout; /* ms */
    uint64_t read_timeout;            /* ms between upstream reads */
    uint64_t write_timeout;           /* ms without upstream write progress */
    uint64_t keepalive;               /* ms an idle pooled conn lives; default 120000 */
    /* caps on the idle pool, in the whole process (every worker), as Caddy's
     * max_idle_conns and max_idle_conns_per_host; 0, the default, is no
     * cap: the pool keeps what the recent peak used (src/upstream) */
    int keepalive_idle_conns;          /* all of this proxy's upstreams together */
    int keepalive_idle_conns_per_host; /* each upstream */
    int keepalive_off;                /* "keepalive off": no pooling */
    /* active health checks (health_uri set), run on the control loop */
    const char *health_uri;
    int health_port;           /* 0: the upstream's own */
    uint64_t health_interval;  /* ms; default 30000 */
    uint64_t health_timeout;   /* ms; default 5000 */
    cfg_status_t health_status; /* default 2xx */
    const char *health_body;   /* a regular expression (POSIX ERE) the body must match */
    int health_passes;         /* consecutive passes to come back; default 1 */
    int health_fails;          /* consecutive failures to go out; default 1 */
    int health_fail_closed;    /* psproxy's own: no fail-open, 503 instead */
    /* passive health checks */
    uint64_t fail_duration;    /* ms a failure is remembered; default 10000 */
    int fail_duration_set;     /* given (and not 0): Caddy's passive checks are on */
    int max_fails;             /* failures within fail_duration to go out; default 1 */
    cfg_status_t unhealthy_status; /* a response with it counts as a failure; code 0: none */
    uint64_t unhealthy_latency; /* ms to the response head that counts as a failure; 0: none */
    /* runtime state, the one mutable field of a snapshot: round_robin's
     * next index, shared by the workers (relaxed atomic) */
    atomic_uint rr_next;
} cfg_proxy_t;

enum cfg_handler_kind {
    CFG_H_HEADER = 1, /* response header ops; all matching ones apply */
    CFG_H_REQUEST_BODY, /* request_body { max_size }: every matching one applies */
    CFG_H_REDIR,      /* terminal */
    CFG_H_RESPOND,    /* terminal */
    CFG_H_PROXY,      /* terminal */
};

/* `header` directives one site may have: each is a response filter of a
 * request they match (src/exchange/route.h). */
#define CFG_MAX_SITE_HEADERS 16

typedef struct cfg_handler {
    int kind;          /* enum cfg_handler_kind */
    const char *match; /* path matcher: "/exact", "/api*", "*.js"; NULL for all */
    const char *file;
    int line;
    union {
        cfg_hdr_ops_t header;
        struct {
            uint64_t max_size; /* bytes; larger bodies get 413 */
        } request_body;
        struct {
            int status;      /* default 200 */
            cfg_tmpl_t body; /* n_parts == 0: empty */
            int close;       /* close the connection after responding */
        } respond;
        struct {
            cfg_tmpl_t to;
            int status; /* 302 default; permanent 301; temporary 302; 3xx given */
        } redir;
        cfg_proxy_t proxy;
    } u;
} cfg_handler_t;

typedef struct cfg_addr {
    int scheme;       /* enum cfg_scheme, after Caddy's defaults */
    const char *host; /* lower-case; "" matches any host; may start with "*." */
    int port;
    int line;
} cfg_addr_t;

typedef struct cfg_site {
    cfg_addr_t *addrs;
    size_t n_addrs;
    /* Sorted in Caddy's directive order (header, redir, respond,
     * reverse_proxy), within one directive the more specific matcher first,
     * no matcher last. A request applies every matching CFG_H_HEADER and the
     * first matching terminal handler; none matching answers 200 empty. */
    cfg_handler_t *handlers;
    size_t n_handlers;
    struct {
        const char *cert_file; /* tls CERT KEY */
        const char *key_file;
        const char *email; /* tls EMAIL */
        int internal;      /* tls internal */
        int line;          /* 0 when the site has no tls directive */
    } tls;
    struct {
        int enabled;       /* a log directive is present */
        const char *file;  /* output file PATH; NULL = stderr */
        int format;        /* enum cfg_log_format */
        int fd;            /* runtime: set by the server before the snapshot is used */
        int roll_line;     /* a roll_* option's line: psproxy does not roll, logrotate does */
        /* Caddy's logger name: http.log.access.logN for the Nth log (from 0,
         * in file order) that has options; -1 for a bare `log`, which Caddy
         * leaves to its default logger, http.log.access */
        int index;
    } log;
    const char *file;
    int line;
} cfg_site_t;

/* One listening port and the sites served on it. */
typedef struct cfg_listener {
    int port;
    int scheme; /* all sites on one port share it, or the load fails */
    /* http_port under automatic HTTPS, in Caddy's route order: a site here
     * whose host matches serves; then (redirect_hosts) a host an HTTPS site
     * serves is redirected to that site's port; then the catch-all site
     * here serves; then any other host is redirected to https_port */
    int redirect_https;
    /* Caddy 2.6.2 inserts the per-host redirects only when it manages a
     * certificate for some name, or when it has no site here (#4829) */
    int redirect_hosts;
    /* Caddy's order: longer hosts first, wildcards after exact hosts, the
     * catch-all ("") last; the first site whose host matches serves. */
    cfg_site_t **sites;
    size_t n_sites;
} cfg_listener_t;

typedef struct cfg {
    /* private */
    atomic_int refcnt;
    void *arena;

    /* read-only: global options */
    int admin_off;
    const char *admin_addr; /* default "localhost:2019" */
    int http_port;          /* 80 */
    int https_port;         /* 443 */
    const char *email;
    const char *default_sni; /* the certificate for clients that send no SNI */
    int acme_challenges;     /* psproxy's own: bit 1 http-01, bit 2 tls-alpn-01; 0 both */
    const char *acme_profile; /* psproxy's own: the CA's certificate profile to ask for */
    const char *acme_ca;
    const char *acme_ca_root;
    const char *storage_root; /* NULL: the default (postgres: the local cache) */
    int storage_kind;         /* enum cfg_storage */
    const char *storage_dsn;  /* postgres: libpq connection string (holds a password) */
    const char *storage_key_file; /* postgres: the key sealing private keys */
    uint64_t grace_period;    /* ms; 0 = none */
    int auto_https;           /* enum cfg_auto_https */
    int workers;              /* psproxy's own option; 0 = one per online CPU */
    long max_connections;     /* psproxy's own option; 0 = from the open-file limit */
    struct {
        uint64_t read_header; /* ms; default 30000 */
        uint64_t read_body;   /* ms between body reads; default 60000 */
        uint64_t write;       /* ms without write progress; default 60000 */
        uint64_t idle;        /* ms a keep-alive conn may idle; default 300000 */
    } timeouts;
    size_t max_header_size; /* bytes; default 32768 */
    unsigned protocols;     /* CFG_PROTO_* (servers { protocols }); default h1 h2 */

    cfg_site_t *sites;
    size_t n_sites;
    cfg_listener_t *listeners;
    size_t n_listeners;
    const char *path; /* the file loaded */
} cfg_t;

/* Loads and validates PATH. Returns 0 and a new snapshot (refcount 1) in
 * *out, or PS_ECONFIG with "file:line: what was expected" in err. */
int cfg_load(const char *path, cfg_t **out, char *err, size_t errlen);

/* Same from memory; NAME stands for the file in messages and resolves
 * relative imports (against the current directory when it has no '/'). */
int cfg_parse(const char *name, const char *text, size_t len, cfg_t **out, char *err,
              size_t errlen);

cfg_t *cfg_ref(cfg_t *cfg);
void cfg_unref(cfg_t *cfg);

/* Caddy's path matcher: exact, "/prefix*", "*suffix", "*substring*",
 * otherwise a glob where '*' does not cross '/'. Case-insensitive. */
int cfg_match_path(const char *pattern, const char *path, size_t len);

/* True when SA (IPv4, IPv6 or v4-mapped) is inside one of the N ranges. */
int cfg_cidr_contains(const cfg_cidr_t *ranges, size_t n, const struct sockaddr *sa);

/* Host matching as Caddy: case-insensitive, "*.example.com" matches one
 * label, "" matches any. HOST has no port. */
int cfg_match_host(const char *pattern, const char *host, size_t len);

/* Prints psproxy's normalised view of CFG as JSON (listeners, sites with
 * their handlers in order) for `psproxy validate --dump` and the
 * differential test against `caddy adapt`. Returns 0 or UV_EIO. */
int cfg_dump_json(const cfg_t *cfg, FILE *out);

/* Whether every HTTPS site can have a certificate: its own (tls CERT KEY)
 * or one psproxy's ACME client can order. Returns 0, or PS_ECONFIG with
 * "file:line: host: why and what to do" in err for the first that cannot
 * (start, reload and `psproxy validate` refuse the file). */
int cfg_check_certs(const cfg_t *cfg, char *err, size_t errlen);

/* DSN as it may be logged: every password in it replaced by "***". */
void cfg_redact_dsn(const char *dsn, char *out, size_t cap);

#endif
