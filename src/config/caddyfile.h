/* The Caddyfile syntax as Caddy 2.6 reads it: environment substitution,
 * tokens, imports and snippets, then server blocks made of lines. What the
 * lines mean is config.c's business. */
#ifndef PS_CADDYFILE_H
#define PS_CADDYFILE_H

#include <stddef.h>

#include "arena.h"

/* The chain of imports a token came through, innermost first: cycle
 * detection walks it. */
typedef struct cf_origin {
    const char *name;  /* identity: a real path or "(snippet NAME)" */
    const char *shown; /* as messages name it */
    const struct cf_origin *parent;
} cf_origin_t;

typedef struct cf_token {
    const char *text; /* NUL-terminated, in the arena */
    const char *file; /* as named in messages */
    int line;         /* where the token starts */
    int quoted;       /* 0, '"' or '`': quoted braces are plain text */
    const cf_origin_t *origin;
} cf_token_t;

/* A directive line: a name and its arguments, then an optional { } block of
 * lines. A block must open at the end of a line and ends at its '}'. */
typedef struct cf_line cf_line_t;
struct cf_line {
    cf_token_t *toks; /* toks[0] is the name */
    size_t n_toks;
    cf_line_t *block;
    size_t n_block;
    const cf_token_t *open; /* the '{' of the block; NULL when there is none */
};

/* A server block: addresses (none for the global options block) and the
 * lines inside its braces. A single-site file may omit the braces. */
typedef struct cf_block {
    cf_token_t *keys;
    size_t n_keys;
    cf_line_t *lines;
    size_t n_lines;
    int has_braces;
    const char *file;
    int line;
} cf_block_t;

/* Parses TEXT (LEN bytes), or the file NAME when TEXT is NULL, into server
 * blocks allocated from A, with imports and snippets spliced in. NAME is
 * the file as messages name it; relative imports resolve against its
 * directory. Returns 0, or PS_ECONFIG with "file:line: message" in ERR. */
int cf_parse(arena_t *a, const char *name, const char *text, size_t len, cf_block_t **blocks,
             size_t *n_blocks, char *err, size_t errlen);

#endif
