/* Response filters: what a response passes through on its way to the
 * client, in route order (nginx's header filter chain, h2o's ostreams).
 * The chain is the route's matching directives that shape responses (each
 * a config row, run by the filter its kind maps to); a handler builds its
 * response head through filter_head and never names a filter. `header` is the first; `encode` adds a body hook
 * (and turns the framing) when it comes. Filters live in src/handlers and
 * are registered at start, as handlers are. */
#ifndef PS_FILTER_H
#define PS_FILTER_H

#include "config.h"

/* Field operations one head may get: one per `header` of the site. */
#define FILTER_MAX_OPS CFG_MAX_SITE_HEADERS

enum filter_id {
    FILTER_NONE = 0,
    FILTER_HEADER, /* header: field operations */
    FILTER_COUNT,
};

/* A response head as the filters shape it, for http_build_response (a
 * relayed response) or http_expand_ops (an answer made here). */
typedef struct filter_head {
    /* field operations, in route order: the builder applies the ones that
     * are not deferred before the handler's fields, the deferred ones
     * after, the last first (Caddy's order) */
    const cfg_hdr_ops_t *ops[FILTER_MAX_OPS];
    unsigned n_ops;
} filter_head_t;

typedef struct filter_ops {
    const char *name;
    /* The response head is being built: add what the directive ROW does
     * to it to H. Returns 0, or -1 when it cannot (the answer is then a
     * 500). */
    int (*head)(const cfg_handler_t *row, filter_head_t *h);
} filter_ops_t;

/* Makes OPS the filter for ID (at start, before any worker runs). */
void filter_register(int id, const filter_ops_t *ops);
const filter_ops_t *filter_of(int id);

/* The filter a directive of KIND (enum cfg_handler_kind) is; FILTER_NONE
 * when it shapes no response. */
int filter_id_of(int kind);

/* Runs the head hook of each directive of CHAIN (N rows, route order) into
 * H, emptied first. Returns 0, or -1 when one could not or has no filter
 * registered. */
int filter_head(const cfg_handler_t *const *chain, unsigned n, filter_head_t *h);

#endif
