/* psproxy: command line, configuration, signals; the workers do the rest. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <llhttp.h>
#include <openssl/opensslv.h>
#include <uv.h>

#include "acme.h"
#include "admin.h"
#include "ca_bundle.h"
#include "common.h"
#include "config.h"
#include "handlers.h"
#include "import_caddy.h"
#include "log.h"
#include "notify.h"
#include "service.h"
#include "tls.h"

static const char usage[] =
    "usage: psproxy [-c FILE]            run with the Caddyfile FILE (default ./Caddyfile)\n"
    "       psproxy validate [-c FILE]   check FILE and exit (0: valid)\n"
    "       psproxy certs [-c FILE]      the ACME certificates in storage: expiry, next renewal\n"
    "       psproxy reload [-c FILE]     check FILE, then ask the running psproxy to load it\n"
    "       psproxy import-caddy DIR [-c FILE]\n"
    "                                    copy Caddy's certificates and ACME account from its\n"
    "                                    data directory DIR into FILE's storage\n"
    "       psproxy --version | --help\n"
    "\n"
    "psproxy is an HTTP reverse proxy that reads Caddy's Caddyfile syntax.\n"
    "Logs go to stderr; PSPROXY_LOG_LEVEL=debug for more.\n";

static srv_t server;
static const char *config_path;
static admin_t *admin;
static uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
static uv_timer_t ticket_timer, fatal_timer;
static int exit_code;

static void close_control_handles(void)
{
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&sig_usr1, NULL);
    uv_close((uv_handle_t *)&ticket_timer, NULL);
    uv_close((uv_handle_t *)&fatal_timer, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        /* the config and the certificates on disk are read again; a bad one
         * keeps what was serving */
        char msg[64];
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long)(uv_hrtime() / 1000));
        notify_send(msg);
        log_info("received SIGHUP, reloading %s", config_path);
        srv_reload(&server, config_path, s->loop);
        notify_send("READY=1");
        return;
    }
    if (signum == SIGUSR1) {
        /* logrotate moved the access logs away: write to new files */
        log_info("received SIGUSR1, reopening access log files");
        alog_reopen(&server.alog);
        return;
    }
    notify_send("STOPPING=1");
    log_info("received %s, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    admin_stop(admin);
    admin = NULL;
    close_control_handles();
    /* a second signal during the grace period must not kill the drain */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    srv_stop_control(&server);
}

static void on_fatal_timer(uv_timer_t *t)
{
    admin_stop(admin);
    admin = NULL;
    srv_stop_control(&server);
    close_control_handles();
}

/* The ACME setup cannot work (a profile the CA does not offer): stop with
 * an error, from the next loop turn (not inside the client's callback). */
static void on_acme_fatal(void *arg, const char *why)
{
    log_err("%s; stopping", why);
    exit_code = 1;
    uv_timer_start(&fatal_timer, on_fatal_timer, 0, 0);
}

static void on_ticket_timer(uv_timer_t *t)
{
    if (server.tls != NULL)
        tls_server_rotate_tickets(server.tls);
}

/* Up to the hard limit, as Go (and so Caddy) does: systemd's soft 1024
 * would cap a proxy at a few hundred clients. max_connections' default
 * follows the result. */
static void raise_open_file_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int load(const char *path, cfg_t **cfg)
{
    char err[1024];
    if (cfg_load(path, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "psproxy: %s\n", err);
        return -1;
    }
    return 0;
}

/* psproxy reload: the file is good (it loaded), so ask the running
 * instance, through its admin listener, to load it. */
static int ask_reload(const cfg_t *cfg)
{
    char host[256];
    int port = 0;
    if (cfg->admin_off || admin_address(cfg->admin_addr, host, sizeof(host), &port) != 0) {
        fprintf(stderr, "psproxy: reload: admin is off in %s: send SIGHUP to the running psproxy "
                        "(systemctl reload psproxy)\n",
                cfg->path);
        return 1;
    }
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (uv_ip4_addr(host, port, &sa) != 0 || fd < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "psproxy: reload: no psproxy answers on %s:%d: %s\n", host, port,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    const char req[] = "POST /reload HTTP/1.1\r\nHost: psproxy\r\nContent-Length: 0\r\n"
                       "Connection: close\r\n\r\n";
    char resp[2048];
    size_t len = 0;
    ssize_t n = write(fd, req, sizeof(req) - 1);
    while (n >= 0 && len < sizeof(resp) - 1 &&
           (n = read(fd, resp + len, sizeof(resp) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    resp[len] = '\0';
    const char *body = strstr(resp, "\r\n\r\n");
    int ok = strncmp(resp, "HTTP/1.1 200", 12) == 0;
    fprintf(ok ? stdout : stderr, "psproxy: reload: %s", body != NULL ? body + 4 : "no answer\n");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *path = "Caddyfile";
    int validate = 0, dump = 0, certs = 0, import = 0, reload = 0;
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {"dump", no_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    if (argc > 1 && strcmp(argv[1], "validate") == 0) {
        validate = 1;
        argv++;
        argc--;
    } else if (argc > 1 && strcmp(argv[1], "certs") == 0) {
        certs = 1;
        argv++;
        argc--;
    } else if (argc > 1 && strcmp(argv[1], "reload") == 0) {
        reload = 1;
        argv++;
        argc--;
    } else if (argc > 1 && strcmp(argv[1], "import-caddy") == 0) {
        import = 1;
        argv++;
        argc--;
    } else if (argc > 1 && strcmp(argv[1], "run") == 0) {
        argv++;
        argc--;
    }
    int ch;
    while ((ch = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'V':
            printf("psproxy %s (libuv %s, %s, llhttp %d.%d.%d)\n", PSPROXY_VERSION,
                   uv_version_string(), OPENSSL_VERSION_TEXT, LLHTTP_VERSION_MAJOR,
                   LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
            return 0;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'd':
            dump = 1;
            break;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    const char *caddy_dir = NULL;
    if (import) {
        if (optind >= argc) {
            fprintf(stderr, "psproxy: import-caddy: expected Caddy's data directory\n%s", usage);
            return 2;
        }
        caddy_dir = argv[optind++];
    }
    if (optind < argc) {
        fprintf(stderr, "psproxy: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return 2;
    }
    log_init();

    cfg_t *cfg = NULL;
    config_path = path;
    if (load(path, &cfg) != 0)
        return 1;
    if (reload) {
        int rc = ask_reload(cfg);
        cfg_unref(cfg);
        return rc;
    }
    if (import) {
        acme_config_t ac;
        srv_acme_config(cfg, &ac);
        int rc = import_caddy(caddy_dir, ac.storage, ac.directory, stdout);
        cfg_unref(cfg);
        return rc == 0 ? 0 : 1;
    }
    if (certs) {
        const char *names[256];
        size_t n = srv_managed_names(cfg, names, PS_ARRAY_SIZE(names));
        acme_config_t ac;
        srv_acme_config(cfg, &ac);
        int rc = acme_print_status(&ac, names, n, stdout);
        cfg_unref(cfg);
        return rc == 0 ? 0 : 1;
    }
    if (validate) {
        /* the certificates must load too, as at start (nginx -t does the same) */
        int bad = 0;
        if (!dump) { /* --dump shows what the file means, certificates aside */
            srv_t check = {0};
            check.certs = certs_new();
            bad = srv_load_certs(&check, cfg);
            certs_free(check.certs);
        }
        if (bad) {
            cfg_unref(cfg);
            return 1;
        }
        if (dump)
            cfg_dump_json(cfg, stdout);
        else
            printf("%s: valid configuration\n", path);
        cfg_unref(cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_t *loop = uv_default_loop();
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_hup);
    uv_signal_init(loop, &sig_usr1);
    uv_timer_init(loop, &ticket_timer);
    uv_timer_init(loop, &fatal_timer);
    server.on_fatal = on_acme_fatal;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_signal_start(&sig_usr1, on_signal, SIGUSR1);

    int cfg_admin_off = cfg->admin_off;
    ca_bundle_log(cfg->acme_ca_root);
    raise_open_file_limit();
    handlers_init(); /* what routing can pick, before a worker runs */
    int err = srv_start(&server, cfg);
    cfg_unref(cfg); /* the server holds its references */
    if (err != 0) {
        close_control_handles();
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        return 1;
    }
    uv_timer_start(&ticket_timer, on_ticket_timer, TLS_TICKET_ROTATE_MS, TLS_TICKET_ROTATE_MS);
    if (srv_start_control(&server, loop) != 0) {
        close_control_handles();
        uv_run(loop, UV_RUN_DEFAULT);
        srv_stop(&server);
        uv_loop_close(loop);
        return 1;
    }
    if (!cfg_admin_off) {
        char why[512];
        admin = admin_start(loop, &server, server.cfg->admin_addr, config_path, why, sizeof(why));
        if (admin == NULL) /* the proxy matters more than its admin listener */
            log_err("%s; running without it", why);
    }
    /* listening, and the certificates in storage are served */
    notify_send("READY=1");
    uv_run(loop, UV_RUN_DEFAULT);
    srv_stop(&server);
    uv_loop_close(loop);
    log_info("stopped");
    return exit_code;
}
