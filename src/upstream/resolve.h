/* A name's addresses as one worker last looked them up: how long an answer
 * is reused, when a failed dial drops it, and whether a new answer moved the
 * name. Pure: no loop, no clock (the caller passes the time), no syscall. */
#ifndef PS_RESOLVE_H
#define PS_RESOLVE_H

#include <netdb.h>
#include <stdint.h>
#include <sys/socket.h>

#define RES_MAX_ADDRS 8

/* getaddrinfo gives no TTL, so an answer is reused for a fixed short time:
 * a busy upstream costs about one lookup a second per worker, and a
 * container recreated at a new address is followed within a second (Caddy
 * looks the name up on every dial). A failed lookup is kept as long, so a
 * name that does not resolve does not cost a lookup per request. */
#define RES_TTL_MS 1000

typedef struct res_answer {
    struct sockaddr_storage addrs[RES_MAX_ADDRS];
    int n_addrs;     /* of the last lookup that found any; kept when a later one fails */
    int err;         /* the last lookup's error (UV_EAI_*), 0 when it found addresses */
    int64_t expires; /* reused until then (ms, the caller's clock); 0: look it up */
    uint32_t gen;    /* changes whenever the set of addresses changes */
} res_answer_t;

/* Whether A may be used at NOW without a lookup. */
int res_fresh(const res_answer_t *a, int64_t now);

/* Takes a lookup's result at NOW: LIST (getaddrinfo's) when ERR is 0,
 * else the error, which leaves the addresses as they were (a pooled
 * connection to one still works). Returns 1 when the set of addresses
 * changed (order aside), which bumps gen. */
int res_store(res_answer_t *a, int err, const struct addrinfo *list, int64_t now);

/* A fixed answer for an IP literal: never looked up, never expires. */
void res_store_literal(res_answer_t *a, const struct sockaddr *sa);

/* A dial to A's addresses failed: the next dial looks the name up again. */
void res_drop(res_answer_t *a);

/* Whether SA (address and port) is one of A's addresses. */
int res_contains(const res_answer_t *a, const struct sockaddr *sa);

/* A's address I as "1.2.3.4:80" / "[::1]:80" into OUT, for logs. */
void res_addr_name(const res_answer_t *a, int i, char *out, size_t size);

#endif
