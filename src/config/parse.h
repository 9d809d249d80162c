/* What the files of src/config/ share while they read a Caddyfile into a
 * cfg_t: the reading context, errors naming file:line, the argument
 * helpers (args.c), and each file's entry point. Private to src/config/;
 * the API is config.h. */
#ifndef PS_CONFIG_PARSE_H
#define PS_CONFIG_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "caddyfile.h"
#include "config.h"

/* One load: the snapshot being built, the arena it lives in, and where
 * the first error goes. */
typedef struct cfg_ctx {
    cfg_t *cfg;
    arena_t *a;
    char *err;
    size_t errlen;
    int braceless; /* the site being read has no braces */
    int n_logs;    /* `log` directives with options so far: Caddy names them log0, log1... */
} cfg_ctx_t;

/* Writes "file:line: " (T's) and the message into the context's error
 * buffer. Returns PS_ECONFIG, so that callers can return it. */
int cfg_errf(cfg_ctx_t *c, const cf_token_t *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Room for one more element of SIZE bytes in the arena array V of N
 * elements (capacity *CAP): V itself, or a copy twice as large. */
void *cfg_grow(arena_t *a, void *v, size_t n, size_t *cap, size_t size);
char *cfg_lower_dup(arena_t *a, const char *s);

/* ---- values: 0, or -1 when S is not one -------------------------------- */

/* Go's time.ParseDuration plus Caddy's "d", in milliseconds rounded up. */
int cfg_parse_duration(const char *s, uint64_t *ms);
/* go-humanize ParseBytes: "16KB" is 16000, "16KiB" 16384. */
int cfg_parse_size(const char *s, uint64_t *out);
/* 1 to 65535 */
int cfg_parse_port(const char *s, int *port);
/* digits only, at most MAX */
int cfg_parse_uint(const char *s, long max, long *out);

/* ---- lines: 0, or PS_ECONFIG with the error written -------------------- */

static inline const char *cfg_line_name(const cf_line_t *l)
{
    return l->toks[0].text;
}

/* Requires MIN..MAX arguments after the name and, unless BLOCK_OK, no
 * block. WHAT prefixes the message ("servers: timeouts"). */
int cfg_want_args(cfg_ctx_t *c, const cf_line_t *l, const char *what, size_t min, size_t max,
                  int block_ok);
/* One argument: a duration (ms), a port, or a string (copied into the
 * arena). */
int cfg_arg_duration(cfg_ctx_t *c, const cf_line_t *l, const char *what, uint64_t *ms);
int cfg_arg_port(cfg_ctx_t *c, const cf_line_t *l, const char *what, int *port);
int cfg_arg_string(cfg_ctx_t *c, const cf_line_t *l, const char *what, const char **out);

/* ---- placeholders ------------------------------------------------------ */

/* Compiles S (from token T) into literal parts and the placeholders
 * psproxy knows; an unknown one is an error. */
int cfg_tmpl_compile(cfg_ctx_t *c, const cf_token_t *t, const char *what, const char *s,
                     cfg_tmpl_t *out);
/* Whether CH may appear in a placeholder's name. */
int cfg_is_var_char(char ch);
/* The long name of placeholder VAR (enum cfg_var), as Caddy's JSON spells it. */
const char *cfg_var_name(int var);

/* ---- matchers (matchers.c) --------------------------------------------- */

/* The matcher token after a directive name: "*" (*MATCH NULL), a path
 * (lower-cased into *MATCH), or none; *ARGI is the index of the first
 * argument after it. A named matcher (@name) is an error. */
int cfg_take_matcher(cfg_ctx_t *c, const cf_line_t *l, const char **match, size_t *argi);
/* "10.0.0.0/8", "::1": 0, or -1 when TEXT is no address range. */
int cfg_parse_cidr(const char *text, cfg_cidr_t *out);

/* ---- blocks ------------------------------------------------------------ */

/* The global options block B into the snapshot (global.c). */
int cfg_parse_global(cfg_ctx_t *c, const cf_block_t *b);

/* Site block B (addresses, then directives) into SITE (site.c). */
int cfg_parse_site(cfg_ctx_t *c, const cf_block_t *b, cfg_site_t *site);
/* The listeners of the sites read so far, in Caddy's order (site.c). */
int cfg_build_listeners(cfg_ctx_t *c);

/* ---- site directives --------------------------------------------------- */

/* One header operation, [+|-|?]Name [value] (">Name value" too when
 * ALLOW_DEFER), from the N tokens ARGS, appended to OPS (capacity *CAP).
 * WHAT names the directive in messages. */
int cfg_parse_hdr_op(cfg_ctx_t *c, const char *what, const cf_token_t *args, size_t n,
                     int allow_defer, cfg_hdr_ops_t *ops, size_t *cap);
/* Reads the directive lines of site block B into SITE (directives.c). */
int cfg_parse_directives(cfg_ctx_t *c, const cf_block_t *b, cfg_site_t *site);
/* reverse_proxy [matcher] UPSTREAMS... { ... } into H (reverse_proxy.c);
 * a row of directives.c's table, so it takes SITE, which it does not use. */
int cfg_parse_reverse_proxy(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h);

#endif
