/* A bump allocator: blocks chained on a list, all freed in arena_free(). */
#include "arena.h"

#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK 4096

struct block {
    struct block *next;
    size_t used;
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

struct arena {
    struct block *head;
};

static void *xcalloc(size_t n)
{
    void *p = calloc(1, n);
    if (p == NULL) {
        fputs("psproxy: out of memory\n", stderr);
        abort();
    }
    return p;
}

arena_t *arena_new(void)
{
    return xcalloc(sizeof(arena_t));
}

void arena_free(arena_t *a)
{
    if (a == NULL)
        return;
    struct block *b = a->head;
    while (b != NULL) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void *arena_alloc(arena_t *a, size_t size)
{
    const size_t align = alignof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    struct block *b = a->head;
    if (b == NULL || b->size - b->used < size) {
        size_t bsize = size > ARENA_BLOCK ? size : ARENA_BLOCK;
        b = xcalloc(sizeof(*b) + bsize);
        b->size = bsize;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t len)
{
    char *p = arena_alloc(a, len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(arena_t *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}
