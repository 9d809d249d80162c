/* The global options block: admin, ports, ACME, storage, servers
 * (timeouts, protocols, max_header_size), and psproxy's own options. */
#include "parse.h"

#include <string.h>

#include "common.h"

static int parse_timeouts(cfg_ctx_t *c, const cf_line_t *l)
{
    int rc = cfg_want_args(c, l, "servers: timeouts", 0, 0, 1);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        uint64_t *dst = NULL;
        if (strcmp(n, "read_header") == 0)
            dst = &c->cfg->timeouts.read_header;
        else if (strcmp(n, "read_body") == 0)
            dst = &c->cfg->timeouts.read_body;
        else if (strcmp(n, "write") == 0)
            dst = &c->cfg->timeouts.write;
        else if (strcmp(n, "idle") == 0)
            dst = &c->cfg->timeouts.idle;
        else
            return cfg_errf(c, &s->toks[0], "servers: timeouts: %s: not supported by psproxy", n);
        rc = cfg_arg_duration(c, s, n, dst);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* protocols h1 h2: what Caddy calls them; h2c and h3 are not built */
static int parse_protocols(cfg_ctx_t *c, const cf_line_t *s)
{
    int rc = cfg_want_args(c, s, "protocols", 1, 8, 0);
    if (rc != 0)
        return rc;
    unsigned p = 0;
    for (size_t i = 1; i < s->n_toks; i++) {
        const char *v = s->toks[i].text;
        if (strcmp(v, "h1") == 0)
            p |= CFG_PROTO_H1;
        else if (strcmp(v, "h2") == 0)
            p |= CFG_PROTO_H2;
        else if (strcmp(v, "h2c") == 0 || strcmp(v, "h3") == 0)
            return cfg_errf(c, &s->toks[i], "protocols: %s is not supported by psproxy (h1, h2)",
                            v);
        else
            return cfg_errf(c, &s->toks[i], "protocols: expected h1, h2, h2c or h3, got \"%s\"", v);
    }
    if (!(p & CFG_PROTO_H1))
        return cfg_errf(c, &s->toks[0],
                        "protocols: psproxy always serves h1 (HTTP/1.1); list it with h2");
    c->cfg->protocols = p;
    return 0;
}

static int parse_servers(cfg_ctx_t *c, const cf_line_t *l)
{
    if (l->n_toks > 1)
        return cfg_errf(c, &l->toks[1],
                        "servers: options for one listener (\"%s\") are not supported by psproxy",
                        l->toks[1].text);
    if (l->open == NULL)
        return cfg_errf(c, &l->toks[0], "servers: expected a block");
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        int rc;
        if (strcmp(n, "timeouts") == 0) {
            rc = parse_timeouts(c, s);
        } else if (strcmp(n, "protocols") == 0) {
            rc = parse_protocols(c, s);
        } else if (strcmp(n, "max_header_size") == 0) {
            uint64_t v = 0;
            rc = cfg_want_args(c, s, n, 1, 1, 0);
            if (rc == 0 && (cfg_parse_size(s->toks[1].text, &v) != 0 || v == 0 || v > (1u << 30)))
                rc = cfg_errf(
                    c, &s->toks[1],
                    "max_header_size: expected a size like 16KiB (1 byte to 1GiB), got \"%s\"",
                    s->toks[1].text);
            if (rc == 0)
                c->cfg->max_header_size = (size_t)v;
        } else {
            rc = cfg_errf(c, &s->toks[0], "servers: %s: not supported by psproxy", n);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* storage postgres { dsn DSN; key_file PATH; cache PATH }: psproxy's own
 * module (Caddy's come as plugins); the cache is the file_system storage
 * every instance keeps locally, so it serves through a database outage. */
static int parse_storage_postgres(cfg_ctx_t *c, const cf_line_t *l)
{
    if (l->n_toks > 2)
        return cfg_errf(c, &l->toks[2], "storage: unexpected argument \"%s\"", l->toks[2].text);
    if (l->open == NULL)
        return cfg_errf(c, &l->toks[1],
                        "storage: postgres: expected a block with dsn and key_file");
    cfg_t *cfg = c->cfg;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        int rc;
        if (strcmp(n, "dsn") == 0)
            rc = cfg_arg_string(c, s, "storage: postgres: dsn", &cfg->storage_dsn);
        else if (strcmp(n, "key_file") == 0)
            rc = cfg_arg_string(c, s, "storage: postgres: key_file", &cfg->storage_key_file);
        else if (strcmp(n, "cache") == 0)
            rc = cfg_arg_string(c, s, "storage: postgres: cache", &cfg->storage_root);
        else
            rc = cfg_errf(c, &s->toks[0],
                          "storage: postgres: %s: not supported by psproxy (dsn, key_file, cache)",
                          n);
        if (rc != 0)
            return rc;
    }
    if (cfg->storage_dsn == NULL || cfg->storage_dsn[0] == '\0')
        return cfg_errf(c, l->open,
                        "storage: postgres: expected dsn (a libpq connection string or "
                        "postgres:// URL; {$ENV} for the password)");
    if (cfg->storage_key_file == NULL)
        return cfg_errf(c, l->open,
                        "storage: postgres: expected key_file PATH (the key that seals "
                        "private keys in the database: openssl rand -hex 32)");
    cfg->storage_kind = CFG_STORAGE_POSTGRES;
    return 0;
}

static int parse_storage(cfg_ctx_t *c, const cf_line_t *l)
{
    if (l->n_toks < 2)
        return cfg_errf(c, &l->toks[0], "storage: expected a module name");
    if (strcmp(l->toks[1].text, "postgres") == 0)
        return parse_storage_postgres(c, l);
    if (strcmp(l->toks[1].text, "file_system") != 0)
        return cfg_errf(c, &l->toks[1],
                        "storage: %s: not supported by psproxy (file_system, postgres)",
                        l->toks[1].text);
    if (l->n_toks == 3 && l->open == NULL) {
        c->cfg->storage_root = arena_strdup(c->a, l->toks[2].text);
        return 0;
    }
    if (l->n_toks > 3 || (l->n_toks == 3 && l->open != NULL))
        return cfg_errf(c, &l->toks[l->n_toks - 1], "storage: unexpected argument \"%s\"",
                        l->toks[l->n_toks - 1].text);
    if (l->open == NULL)
        return cfg_errf(c, &l->toks[1], "storage: file_system: expected a path or a block");
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        if (strcmp(cfg_line_name(s), "root") != 0)
            return cfg_errf(c, &s->toks[0], "storage: file_system: %s: not supported by psproxy",
                            cfg_line_name(s));
        int rc = cfg_arg_string(c, s, "storage: root", &c->cfg->storage_root);
        if (rc != 0)
            return rc;
    }
    if (c->cfg->storage_root == NULL)
        return cfg_errf(c, l->open, "storage: file_system: expected root PATH");
    return 0;
}

int cfg_parse_global(cfg_ctx_t *c, const cf_block_t *b)
{
    cfg_t *cfg = c->cfg;
    for (size_t i = 0; i < b->n_lines; i++) {
        const cf_line_t *l = &b->lines[i];
        const char *n = cfg_line_name(l);
        int rc;
        if (strcmp(n, "admin") == 0) {
            rc = cfg_want_args(c, l, n, 1, 1, 0);
            if (rc == 0 && strcmp(l->toks[1].text, "off") == 0)
                cfg->admin_off = 1;
            else if (rc == 0)
                cfg->admin_addr = arena_strdup(c->a, l->toks[1].text);
        } else if (strcmp(n, "http_port") == 0 || strcmp(n, "https_port") == 0) {
            int *dst = n[4] == 's' ? &cfg->https_port : &cfg->http_port;
            rc = cfg_want_args(c, l, n, 1, 1, 0);
            if (rc == 0 && cfg_parse_port(l->toks[1].text, dst) != 0)
                rc = cfg_errf(c, &l->toks[1], "%s: expected a port number, got \"%s\"", n,
                              l->toks[1].text);
        } else if (strcmp(n, "email") == 0) {
            rc = cfg_arg_string(c, l, n, &cfg->email);
        } else if (strcmp(n, "default_sni") == 0) {
            rc = cfg_arg_string(c, l, n, &cfg->default_sni);
        } else if (strcmp(n, "acme_profile") == 0) {
            /* psproxy's own: a profile from the directory's meta.profiles */
            rc = cfg_arg_string(c, l, n, &cfg->acme_profile);
        } else if (strcmp(n, "acme_challenges") == 0) {
            /* psproxy's own: which ACME challenge types to answer */
            rc = cfg_want_args(c, l, n, 1, 2, 0);
            for (size_t k = 1; rc == 0 && k < l->n_toks; k++) {
                if (strcmp(l->toks[k].text, "http-01") == 0)
                    cfg->acme_challenges |= 1;
                else if (strcmp(l->toks[k].text, "tls-alpn-01") == 0)
                    cfg->acme_challenges |= 2;
                else
                    rc = cfg_errf(c, &l->toks[k],
                                  "acme_challenges: expected http-01 or tls-alpn-01, got \"%s\"",
                                  l->toks[k].text);
            }
        } else if (strcmp(n, "acme_ca") == 0) {
            rc = cfg_arg_string(c, l, n, &cfg->acme_ca);
        } else if (strcmp(n, "acme_ca_root") == 0) {
            rc = cfg_arg_string(c, l, n, &cfg->acme_ca_root);
        } else if (strcmp(n, "storage") == 0) {
            rc = parse_storage(c, l);
        } else if (strcmp(n, "grace_period") == 0) {
            rc = cfg_arg_duration(c, l, n, &cfg->grace_period);
        } else if (strcmp(n, "servers") == 0) {
            rc = parse_servers(c, l);
        } else if (strcmp(n, "auto_https") == 0) {
            rc = cfg_want_args(c, l, n, 1, 1, 0);
            if (rc == 0 && strcmp(l->toks[1].text, "off") == 0)
                cfg->auto_https = CFG_AUTO_HTTPS_OFF;
            else if (rc == 0 && strcmp(l->toks[1].text, "disable_redirects") == 0)
                cfg->auto_https = CFG_AUTO_HTTPS_DISABLE_REDIRECTS;
            else if (rc == 0)
                rc = cfg_errf(c, &l->toks[1],
                              "auto_https: expected off or disable_redirects, got \"%s\"",
                              l->toks[1].text);
        } else if (strcmp(n, "workers") == 0) {
            long v = 0;
            rc = cfg_want_args(c, l, n, 1, 1, 0);
            if (rc == 0 && (cfg_parse_uint(l->toks[1].text, 1024, &v) != 0 || v < 1))
                rc = cfg_errf(c, &l->toks[1],
                              "workers: expected a number from 1 to 1024, got \"%s\"",
                              l->toks[1].text);
            if (rc == 0)
                cfg->workers = (int)v;
        } else if (strcmp(n, "max_connections") == 0) {
            long v = 0;
            rc = cfg_want_args(c, l, n, 1, 1, 0);
            if (rc == 0 && (cfg_parse_uint(l->toks[1].text, 10000000, &v) != 0 || v < 1))
                rc = cfg_errf(c, &l->toks[1],
                              "max_connections: expected a number from 1 to 10000000, got \"%s\"",
                              l->toks[1].text);
            if (rc == 0)
                cfg->max_connections = v;
        } else {
            rc = cfg_errf(c, &l->toks[0], "%s: global option not supported by psproxy", n);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}
