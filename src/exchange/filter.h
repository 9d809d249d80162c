/* Response filters: what a response passes through on its way to the
 * client, in route order (nginx's header and body filter chains, h2o's
 * ostreams). The chain is the route's matching directives that shape
 * responses (each a config row, run by the filter its kind maps to); a
 * handler builds its response head through filter_head and sends its body
 * through filter_body_run, and never names a filter.
 *
 * A filter's head hook may claim the body (filter_head_claim_body): its
 * body hook then sees every body byte, and what it hands on is the body
 * the client gets. Since the length changes, the head loses its
 * Content-Length and the transport frames the body itself (chunked on
 * HTTP/1.1, to close on HTTP/1.0, DATA frames on HTTP/2). `header` has a
 * head hook only; `encode` will be the first with a body hook. Filters
 * live in src/handlers and are registered at start, as handlers are. */
#ifndef PS_FILTER_H
#define PS_FILTER_H

#include <uv.h>

#include "config.h"

/* Field operations one head may get: one per `header` of the site. */
#define FILTER_MAX_OPS CFG_MAX_SITE_HEADERS
/* Filters that may claim one response's body. */
#define FILTER_MAX_BODY 4
/* Slices one body hook may hand on per call. */
#define FILTER_BODY_IOV 4

struct filter_ops;

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
    /* the filters that claimed the body, in route order */
    const struct filter_ops *body_ops[FILTER_MAX_BODY];
    const cfg_handler_t *body_rows[FILTER_MAX_BODY];
    unsigned n_body;
} filter_head_t;

/* The body filters running on one response, with their state: allocated
 * only when a filter claimed the body (the common response pays a NULL
 * test). */
typedef struct filter_body filter_body_t;

typedef struct filter_ops {
    const char *name;
    /* The response head is being built: add what the directive ROW does
     * to it to H. Returns 0, or -1 when it cannot (the answer is then a
     * 500). */
    int (*head)(const cfg_handler_t *row, filter_head_t *h);
    /* The body hooks, for a filter whose head hook claims bodies (else
     * NULL). body_open: the state for one response (NULL when it cannot
     * get one: the response then fails). body: takes the N_IN slices of IN
     * (the next bytes of the body; LAST: no more follow) and puts what goes
     * on in OUT, at most FILTER_BODY_IOV slices; returns how many (0 when it
     * holds everything back), or -1 on failure. The slices it hands on are
     * its own memory or IN's, and must stay as they are until its next
     * call: the transport may still be writing them. body_close: frees the
     * state, whether or not the body was seen to its end. */
    void *(*body_open)(const cfg_handler_t *row);
    int (*body)(void *state, const uv_buf_t *in, unsigned n_in, int last, uv_buf_t *out);
    void (*body_close)(void *state);
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

/* A head hook's claim on the body for OPS (its body hooks) and ROW.
 * Returns 0, or -1 when more than FILTER_MAX_BODY filters claim it. */
int filter_head_claim_body(filter_head_t *h, const struct filter_ops *ops,
                           const cfg_handler_t *row);

/* Opens the body filters H claimed into *OUT (NULL when none did).
 * Returns 0, or -1 when one could not get its state (none is left open). */
int filter_body_open(const filter_head_t *h, filter_body_t **out);

/* Passes IN (N_IN slices; LAST: the body ends after them) through B's
 * filters in route order, each one's output the next one's input, and puts
 * the last one's output in OUT (FILTER_BODY_IOV slices at most). Returns the
 * number of slices, or -1 when a filter failed. */
int filter_body_run(filter_body_t *b, const uv_buf_t *in, unsigned n_in, int last,
                    uv_buf_t *out);

/* A whole body at once (an answer made here): IN (LEN bytes) through the
 * filters H claimed, what they hand on gathered into OUT (CAP bytes), its
 * length in *OUT_LEN. Returns 0, or -1 when a filter failed or the result
 * does not fit. */
int filter_body_whole(const filter_head_t *h, const char *in, size_t len, char *out, size_t cap,
                      size_t *out_len);

/* Closes B's filters and frees B (NULL: nothing). */
void filter_body_close(filter_body_t *b);

#endif
