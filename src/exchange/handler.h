/* Handlers: what an exchange runs once routing picked it (reverse_proxy,
 * respond, redir, the ACME HTTP-01 answer, the HTTPS redirect ...). The
 * exchange calls a handler only through its ops and never names one; a
 * handler never names a transport. Handlers live in src/handlers and are
 * registered at start (handlers_init), so a new one is one file and one
 * row: an id here, a registration there, a mapping in route.c. */
#ifndef PS_HANDLER_H
#define PS_HANDLER_H

typedef struct exchange exchange_t;

enum handler_id {
    HANDLER_NONE = 0,
    HANDLER_REVERSE_PROXY, /* reverse_proxy */
    HANDLER_RESPOND,       /* respond, and the empty 200 of a route with no handler */
    HANDLER_REDIR,         /* redir */
    HANDLER_ACME_HTTP01,   /* the key authorization of a pending HTTP-01 challenge */
    HANDLER_HTTPS_REDIRECT, /* http_port under automatic HTTPS: 308 to https */
    HANDLER_COUNT,
};

/* Every op but start may be NULL: the exchange then does what a response
 * made here needs (the body is read and dropped, the response written). */
typedef struct handler_ops {
    const char *name;
    /* Once, when it is registered, before any worker runs: what every
     * request of it shares (parser settings). NULL: nothing. */
    void (*init)(void);
    /* The request head is routed here (x->cur->route says how): start. */
    void (*start)(exchange_t *x);
    /* Request body bytes were parsed (or the request ended): push on. */
    void (*request_body)(exchange_t *x);
    /* The client's write finished: what waited for room goes on. */
    void (*client_written)(exchange_t *x);
    /* The client shut its side after its request was whole. */
    void (*client_eof)(exchange_t *x);
    /* After a 101: the client's bytes arrived for the tunnel. */
    void (*tunnel_input)(exchange_t *x);
    /* The exchange's timer fired while the handler waits (a retry). */
    void (*timer)(exchange_t *x);
    /* The exchange ends early (client gone, timeout, close): let go of
     * everything the handler holds for it. */
    void (*abort)(exchange_t *x);
    /* 1 while the request body waits for the handler's peer (an upstream
     * that does not take it), whose own clock runs instead of read_body. */
    int (*body_blocked)(const exchange_t *x);
    /* The upstream that served it, for logs and metrics; NULL for none. */
    const char *(*upstream)(const exchange_t *x);
} handler_ops_t;

/* Makes OPS the handler for ID and runs its init (at start, before any
 * worker runs). */
void handler_register(int id, const handler_ops_t *ops);
/* The handler for ID; NULL when none is registered. */
const handler_ops_t *handler_of(int id);

#endif
