/* Handlers: what an exchange runs once routing picked it (reverse_proxy,
 * respond, redir, the ACME HTTP-01 answer, the HTTPS redirect ...). The
 * exchange calls a handler only through its ops and never names one; a
 * handler never names a transport. Handlers live in src/handlers and are
 * registered at start (handlers_init), so a new one is one file and one
 * row: an id here, a registration there, a mapping in route.c. */
#ifndef PS_HANDLER_H
#define PS_HANDLER_H

typedef struct conn conn_t;

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
    /* The request head is routed here (c->route says how): start. */
    void (*start)(conn_t *c);
    /* Request body bytes were parsed (or the request ended): push on. */
    void (*request_body)(conn_t *c);
    /* The client's write finished: what waited for room goes on. */
    void (*client_written)(conn_t *c);
    /* The client shut its side after its request was whole. */
    void (*client_eof)(conn_t *c);
    /* After a 101: the client's bytes arrived for the tunnel. */
    void (*tunnel_input)(conn_t *c);
    /* The exchange's timer fired while the handler waits (a retry). */
    void (*timer)(conn_t *c);
    /* The exchange ends early (client gone, timeout, close): let go of
     * everything the handler holds for it. */
    void (*abort)(conn_t *c);
    /* 1 while the request body waits for the handler's peer (an upstream
     * that does not take it), whose own clock runs instead of read_body. */
    int (*body_blocked)(const conn_t *c);
    /* The upstream that served it, for logs and metrics; NULL for none. */
    const char *(*upstream)(const conn_t *c);
} handler_ops_t;

/* Makes OPS the handler for ID (at start, before any worker runs). */
void handler_register(int id, const handler_ops_t *ops);
/* The handler for ID; NULL when none is registered. */
const handler_ops_t *handler_of(int id);

#endif
