/* The configuration: Caddyfile server blocks (caddyfile.c) interpreted with
 * Caddy 2.6's meaning into an immutable cfg_t; anything outside psproxy's
 * subset is an error naming file:line, never silently ignored. This file
 * holds the API and the walk over the blocks: the global options
 * (global.c), each site (site.c, directives.c), then the listeners. */
#include "config.h"

#include "arena.h"
#include "caddyfile.h"
#include "common.h"
#include "parse.h"

static int interpret(cfg_ctx_t *c, const cf_block_t *blocks, size_t n)
{
    cfg_t *cfg = c->cfg;
    size_t first = 0;
    int rc;
    if (n > 0 && blocks[0].n_keys == 0) {
        rc = cfg_parse_global(c, &blocks[0]);
        if (rc != 0)
            return rc;
        first = 1;
    }
    cfg->sites = arena_alloc(c->a, (n - first + 1) * sizeof(*cfg->sites));
    for (size_t i = first; i < n; i++) {
        const cf_block_t *b = &blocks[i];
        if (b->n_keys == 0) {
            const cf_token_t at = {.file = b->file, .line = b->line};
            return cfg_errf(c, &at,
                            "a block without addresses is the global options block and "
                            "must come first");
        }
        c->braceless = !b->has_braces;
        rc = cfg_parse_site(c, b, &cfg->sites[cfg->n_sites]);
        if (rc != 0)
            return rc;
        cfg->n_sites++;
    }
    return cfg_build_listeners(c);
}

static void cfg_defaults(cfg_t *cfg)
{
    cfg->admin_addr = "localhost:2019";
    cfg->http_port = 80;
    cfg->https_port = 443;
    cfg->timeouts.read_header = 30000;
    cfg->timeouts.read_body = 60000;
    cfg->timeouts.write = 60000;
    cfg->timeouts.idle = 300000;
    cfg->max_header_size = 32768;
    cfg->protocols = CFG_PROTO_H1 | CFG_PROTO_H2;
}

static int cfg_build(const char *name, const char *text, size_t len, cfg_t **out, char *err,
                     size_t errlen)
{
    int rc = 0;
    cf_block_t *blocks = NULL;
    size_t n = 0;
    arena_t *a = arena_new();
    cfg_t *cfg = arena_alloc(a, sizeof(*cfg));
    cfg_ctx_t c = {.cfg = cfg, .a = a, .err = err, .errlen = errlen};

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    atomic_init(&cfg->refcnt, 1);
    cfg->arena = a;
    cfg_defaults(cfg);
    cfg->path = arena_strdup(a, name);
    rc = cf_parse(a, name, text, len, &blocks, &n, err, errlen);
    if (rc != 0)
        goto fail;
    /* http_port and https_port decide the addresses' defaults, so the
     * global options are read before any site (interpret does both) */
    rc = interpret(&c, blocks, n);
    if (rc != 0)
        goto fail;
    *out = cfg;
    return 0;
fail:
    arena_free(a);
    return PS_ECONFIG;
}

int cfg_load(const char *path, cfg_t **out, char *err, size_t errlen)
{
    return cfg_build(path, NULL, 0, out, err, errlen);
}

int cfg_parse(const char *name, const char *text, size_t len, cfg_t **out, char *err, size_t errlen)
{
    return cfg_build(name, text ? text : "", text ? len : 0, out, err, errlen);
}

cfg_t *cfg_ref(cfg_t *cfg)
{
    /* relaxed: whoever refs holds a reference already (the snapshot is
     * alive and visible to it); only the last unref must order */
    atomic_fetch_add_explicit(&cfg->refcnt, 1, memory_order_relaxed);
    return cfg;
}

void cfg_unref(cfg_t *cfg)
{
    if (cfg == NULL)
        return;
    /* acq_rel: the last owner must see every write made through the others */
    if (atomic_fetch_sub_explicit(&cfg->refcnt, 1, memory_order_acq_rel) == 1)
        arena_free(cfg->arena);
}
