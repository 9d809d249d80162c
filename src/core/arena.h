/* A bump allocator: many small allocations, freed together. */
#ifndef PS_ARENA_H
#define PS_ARENA_H

#include <stddef.h>

typedef struct arena arena_t;

arena_t *arena_new(void);
/* Frees every allocation made from A, then A itself. NULL is ignored. */
void arena_free(arena_t *a);
/* Zeroed memory, aligned for any type; aborts when memory is exhausted. */
void *arena_alloc(arena_t *a, size_t size);
char *arena_strdup(arena_t *a, const char *s);
char *arena_strndup(arena_t *a, const char *s, size_t len);

#endif
