/* Per-worker I/O buffer free list. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Under AddressSanitizer a buffer in the free list is poisoned, so a use
 * after buf_put is reported as one, as a use after free would be. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(b, n) ASAN_POISON_MEMORY_REGION(b, n)
#define UNPOISON(b, n) ASAN_UNPOISON_MEMORY_REGION(b, n)
#else
#define POISON(b, n) ((void)(b), (void)(n))
#define UNPOISON(b, n) ((void)(b), (void)(n))
#endif

#define BUF_FREE_START 16

void buf_pool_init(buf_pool_t *p, size_t size, size_t max_free)
{
    p->size = size;
    p->max_free = max_free;
    p->n_free = 0;
    p->in_use = 0;
    p->low_free = 0;
    /* the stack grows as buffers come back (buf_put): a pool whose peak
     * is small costs a small stack */
    p->cap_free = max_free < BUF_FREE_START ? max_free : BUF_FREE_START;
    p->free = calloc(p->cap_free > 0 ? p->cap_free : 1, sizeof(void *));
    if (p->free == NULL)
        abort();
}

void buf_pool_dispose(buf_pool_t *p)
{
    while (p->n_free > 0) {
        char *b = p->free[--p->n_free];
        UNPOISON(b, p->size);
        free(b);
    }
    free(p->free);
    p->free = NULL;
}

char *buf_get(buf_pool_t *p)
{
    char *b = p->n_free > 0 ? p->free[--p->n_free] : malloc(p->size);
    if (p->n_free < p->low_free)
        p->low_free = p->n_free;
    if (b == NULL) {
        fputs("psproxy: out of memory\n", stderr);
        abort();
    }
    UNPOISON(b, p->size);
    p->in_use++;
    return b;
}

void buf_put(buf_pool_t *p, char *b)
{
    if (b == NULL)
        return;
    p->in_use--;
    if (p->n_free == p->cap_free && p->cap_free < p->max_free) {
        size_t cap = p->cap_free * 2 < p->max_free ? p->cap_free * 2 : p->max_free;
        void **grown = realloc(p->free, cap * sizeof(void *));
        if (grown != NULL) {
            p->free = grown;
            p->cap_free = cap;
        }
    }
    if (p->n_free < p->cap_free) {
        POISON(b, p->size);
        p->free[p->n_free++] = b;
    } else {
        free(b);
    }
}

size_t buf_pool_trim(buf_pool_t *p, size_t keep)
{
    /* the low_free buffers at the bottom of the stack were never taken
     * since the last trim; the ones above came back since and may be hot */
    size_t idle = p->low_free < p->n_free ? p->low_free : p->n_free;
    size_t drop = idle > keep ? idle - keep : 0;
    for (size_t i = 0; i < drop; i++) {
        UNPOISON(p->free[i], p->size);
        free(p->free[i]);
    }
    if (drop > 0)
        memmove(p->free, p->free + drop, (p->n_free - drop) * sizeof(void *));
    p->n_free -= drop;
    p->low_free = p->n_free;
    return drop;
}
