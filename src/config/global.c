/* The global options block: admin, ports, ACME, storage, servers
 * (timeouts, protocols, max_header_size), and psproxy's own options. */
#include "parse.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* A global option, or one inside servers { } or storage postgres { }:
 * PARSE reads line L into FIELD, the member of the snapshot at OFFSET (the
 * shape of nginx's ngx_command_t, a set function and an offset), or, for
 * the few that fill several members, into c->cfg (OFFSET 0). */
typedef struct option {
    const char *name;
    int (*parse)(cfg_ctx_t *c, const cf_line_t *l, void *field);
    size_t offset;
} option_t;

#define AT(member) offsetof(cfg_t, member)

static const option_t *find_option(const option_t *table, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

static int read_option(cfg_ctx_t *c, const option_t *o, const cf_line_t *l)
{
    return o->parse(c, l, (char *)c->cfg + o->offset);
}

/* ---- values: the option's name leads the message ----------------------- */

static int opt_string(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    return cfg_arg_string(c, l, cfg_line_name(l), field);
}

static int opt_duration(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    return cfg_arg_duration(c, l, cfg_line_name(l), field);
}

static int opt_port(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    return cfg_arg_port(c, l, cfg_line_name(l), field);
}

/* ---- servers { } ------------------------------------------------------- */

static const option_t timeouts_options[] = {
    {"read_header", opt_duration, AT(timeouts.read_header)},
    {"read_body", opt_duration, AT(timeouts.read_body)},
    {"write", opt_duration, AT(timeouts.write)},
    {"idle", opt_duration, AT(timeouts.idle)},
};

static int opt_timeouts(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    int rc = cfg_want_args(c, l, "servers: timeouts", 0, 0, 1);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        const option_t *o = find_option(timeouts_options, PS_ARRAY_SIZE(timeouts_options), n);
        if (o == NULL)
            return cfg_errf(c, &s->toks[0], "servers: timeouts: %s: not supported by psproxy", n);
        rc = read_option(c, o, s);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* protocols h1 h2: what Caddy calls them; h2c and h3 are not built */
static int opt_protocols(cfg_ctx_t *c, const cf_line_t *s, void *field)
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
    *(unsigned *)field = p;
    return 0;
}

static int opt_max_header_size(cfg_ctx_t *c, const cf_line_t *s, void *field)
{
    uint64_t v = 0;
    int rc = cfg_want_args(c, s, cfg_line_name(s), 1, 1, 0);
    if (rc == 0 && (cfg_parse_size(s->toks[1].text, &v) != 0 || v == 0 || v > (1u << 30)))
        rc = cfg_errf(c, &s->toks[1],
                      "max_header_size: expected a size like 16KiB (1 byte to 1GiB), got \"%s\"",
                      s->toks[1].text);
    if (rc == 0)
        *(size_t *)field = (size_t)v;
    return rc;
}

static const option_t servers_options[] = {
    {"timeouts", opt_timeouts, 0},
    {"protocols", opt_protocols, AT(protocols)},
    {"max_header_size", opt_max_header_size, AT(max_header_size)},
};

static int opt_servers(cfg_ctx_t *c, const cf_line_t *l, void *field)
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
        const option_t *o = find_option(servers_options, PS_ARRAY_SIZE(servers_options), n);
        if (o == NULL)
            return cfg_errf(c, &s->toks[0], "servers: %s: not supported by psproxy", n);
        int rc = read_option(c, o, s);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- storage ----------------------------------------------------------- */

/* a postgres option's value; its messages name the module */
static int opt_postgres_string(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    char what[64];
    snprintf(what, sizeof(what), "storage: postgres: %s", cfg_line_name(l));
    return cfg_arg_string(c, l, what, field);
}

static const option_t postgres_options[] = {
    {"dsn", opt_postgres_string, AT(storage_dsn)},
    {"key_file", opt_postgres_string, AT(storage_key_file)},
    {"cache", opt_postgres_string, AT(storage_root)},
};

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
        const option_t *o = find_option(postgres_options, PS_ARRAY_SIZE(postgres_options), n);
        if (o == NULL)
            return cfg_errf(
                c, &s->toks[0],
                "storage: postgres: %s: not supported by psproxy (dsn, key_file, cache)", n);
        int rc = read_option(c, o, s);
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

static int opt_storage(cfg_ctx_t *c, const cf_line_t *l, void *field)
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

/* ---- the global options block ------------------------------------------ */

static int opt_admin(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    int rc = cfg_want_args(c, l, cfg_line_name(l), 1, 1, 0);
    if (rc == 0 && strcmp(l->toks[1].text, "off") == 0)
        c->cfg->admin_off = 1;
    else if (rc == 0)
        c->cfg->admin_addr = arena_strdup(c->a, l->toks[1].text);
    return rc;
}

/* psproxy's own: which ACME challenge types to answer */
static int opt_acme_challenges(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    int *challenges = field;
    int rc = cfg_want_args(c, l, cfg_line_name(l), 1, 2, 0);
    for (size_t k = 1; rc == 0 && k < l->n_toks; k++) {
        if (strcmp(l->toks[k].text, "http-01") == 0)
            *challenges |= 1;
        else if (strcmp(l->toks[k].text, "tls-alpn-01") == 0)
            *challenges |= 2;
        else
            rc = cfg_errf(c, &l->toks[k],
                          "acme_challenges: expected http-01 or tls-alpn-01, got \"%s\"",
                          l->toks[k].text);
    }
    return rc;
}

static int opt_auto_https(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    int *auto_https = field;
    int rc = cfg_want_args(c, l, cfg_line_name(l), 1, 1, 0);
    if (rc == 0 && strcmp(l->toks[1].text, "off") == 0)
        *auto_https = CFG_AUTO_HTTPS_OFF;
    else if (rc == 0 && strcmp(l->toks[1].text, "disable_redirects") == 0)
        *auto_https = CFG_AUTO_HTTPS_DISABLE_REDIRECTS;
    else if (rc == 0)
        rc = cfg_errf(c, &l->toks[1], "auto_https: expected off or disable_redirects, got \"%s\"",
                      l->toks[1].text);
    return rc;
}

static int opt_workers(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    long v = 0;
    int rc = cfg_want_args(c, l, cfg_line_name(l), 1, 1, 0);
    if (rc == 0 && (cfg_parse_uint(l->toks[1].text, 1024, &v) != 0 || v < 1))
        rc = cfg_errf(c, &l->toks[1], "workers: expected a number from 1 to 1024, got \"%s\"",
                      l->toks[1].text);
    if (rc == 0)
        *(int *)field = (int)v;
    return rc;
}

static int opt_max_connections(cfg_ctx_t *c, const cf_line_t *l, void *field)
{
    long v = 0;
    int rc = cfg_want_args(c, l, cfg_line_name(l), 1, 1, 0);
    if (rc == 0 && (cfg_parse_uint(l->toks[1].text, 10000000, &v) != 0 || v < 1))
        rc = cfg_errf(c, &l->toks[1],
                      "max_connections: expected a number from 1 to 10000000, got \"%s\"",
                      l->toks[1].text);
    if (rc == 0)
        *(long *)field = v;
    return rc;
}

static const option_t global_options[] = {
    {"admin", opt_admin, 0},
    {"http_port", opt_port, AT(http_port)},
    {"https_port", opt_port, AT(https_port)},
    {"email", opt_string, AT(email)},
    {"default_sni", opt_string, AT(default_sni)},
    /* psproxy's own: a profile from the directory's meta.profiles */
    {"acme_profile", opt_string, AT(acme_profile)},
    {"acme_challenges", opt_acme_challenges, AT(acme_challenges)},
    {"acme_ca", opt_string, AT(acme_ca)},
    {"acme_ca_root", opt_string, AT(acme_ca_root)},
    {"storage", opt_storage, 0},
    {"grace_period", opt_duration, AT(grace_period)},
    {"servers", opt_servers, 0},
    {"auto_https", opt_auto_https, AT(auto_https)},
    {"workers", opt_workers, AT(workers)},
    {"max_connections", opt_max_connections, AT(max_connections)},
};

int cfg_parse_global(cfg_ctx_t *c, const cf_block_t *b)
{
    for (size_t i = 0; i < b->n_lines; i++) {
        const cf_line_t *l = &b->lines[i];
        const char *n = cfg_line_name(l);
        const option_t *o = find_option(global_options, PS_ARRAY_SIZE(global_options), n);
        if (o == NULL)
            return cfg_errf(c, &l->toks[0], "%s: global option not supported by psproxy", n);
        int rc = read_option(c, o, l);
        if (rc != 0)
            return rc;
    }
    return 0;
}
