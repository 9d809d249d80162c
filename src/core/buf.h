/* A per-worker free list of equal-sized I/O buffers, so the steady state
 * allocates nothing per request. Not thread-safe: one pool per loop. */
#ifndef PS_BUF_H
#define PS_BUF_H

#include <stddef.h>

typedef struct buf_pool {
    size_t size;     /* bytes in every buffer */
    void **free;     /* stack of free buffers, room for cap_free */
    size_t n_free;
    size_t cap_free; /* grows with demand, up to max_free */
    size_t max_free; /* beyond this, returned buffers go back to malloc */
    size_t in_use;   /* handed out and not yet returned */
    size_t low_free; /* fewest free since the last buf_pool_trim() */
} buf_pool_t;

void buf_pool_init(buf_pool_t *p, size_t size, size_t max_free);
void buf_pool_dispose(buf_pool_t *p);
/* A buffer of p->size bytes; aborts when memory is exhausted. */
char *buf_get(buf_pool_t *p);
void buf_put(buf_pool_t *p, char *b);
/* Frees the buffers that stayed unused since the last call, but KEEP:
 * a burst's buffers go back once it is over, the steady state keeps its
 * own. Returns how many were freed. */
size_t buf_pool_trim(buf_pool_t *p, size_t keep);

#endif
