/* Caddyfile lexer and block parser: a port of Caddy 2.6's caddyfile package
 * (lexer.go, parse.go) down to what psproxy needs, so that a file reads the
 * same here as under Caddy. */
#include "caddyfile.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

#define CF_MAX_TOKENS (1u << 20) /* snippets imported in snippets multiply tokens */
#define CF_MAX_DEPTH 32          /* nested imports, and nested blocks */
#define CF_MAX_FILE (16u << 20)

typedef struct tokvec {
    cf_token_t *v;
    size_t n;
    size_t cap;
} tokvec_t;

typedef struct snippet {
    const char *name;
    cf_token_t *toks;
    size_t n;
    const cf_token_t *def; /* the "(name)" token, for redeclaration errors */
    struct snippet *next;
} snippet_t;

typedef struct parser {
    arena_t *a;
    tokvec_t t;
    size_t cur; /* index of the current token; t.n before the first next() */
    int started;
    snippet_t *snippets;
    char *err;
    size_t errlen;
} parser_t;

static int cf_errf(parser_t *p, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cf_errf(parser_t *p, const char *file, int line, const char *fmt, ...)
{
    if (p->errlen > 0) {
        int n = snprintf(p->err, p->errlen, "%s:%d: ", file, line);
        if (n >= 0 && (size_t)n < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return PS_ECONFIG;
}

#define TOK_ERR(p, tok, ...) cf_errf((p), (tok)->file, (tok)->line, __VA_ARGS__)

static void *xrealloc(void *ptr, size_t size)
{
    void *q = realloc(ptr, size);
    if (q == NULL) {
        fputs("psproxy: out of memory\n", stderr);
        abort();
    }
    return q;
}

/* Makes room for ADD more elements of SIZE bytes in an arena array; the
 * old copy stays in the arena, which at most doubles what is used. */
static void *arena_grow(arena_t *a, void *v, size_t n, size_t *cap, size_t add, size_t size)
{
    if (n + add <= *cap)
        return v;
    size_t ncap = *cap ? *cap * 2 : 8;
    while (ncap < n + add)
        ncap *= 2;
    void *nv = arena_alloc(a, ncap * size);
    if (n > 0)
        memcpy(nv, v, n * size);
    *cap = ncap;
    return nv;
}

static void tokvec_reserve(tokvec_t *tv, size_t add)
{
    if (tv->n + add <= tv->cap)
        return;
    size_t ncap = tv->cap ? tv->cap * 2 : 256;
    while (ncap < tv->n + add)
        ncap *= 2;
    tv->v = xrealloc(tv->v, ncap * sizeof(*tv->v));
    tv->cap = ncap;
}

/* A growing byte buffer for the lexer and the environment substitution. */
typedef struct sbuf {
    char *p;
    size_t n;
    size_t cap;
} sbuf_t;

static void sbuf_put(sbuf_t *b, const char *s, size_t len)
{
    if (b->n + len + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        while (ncap < b->n + len + 1)
            ncap *= 2;
        b->p = xrealloc(b->p, ncap);
        b->cap = ncap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sbuf_putc(sbuf_t *b, char c)
{
    sbuf_put(b, &c, 1);
}

/* Caddy 2.6 replaces {$NAME} and {$NAME:default} in the raw text before
 * lexing (parse.go replaceEnvVars), so a value may hold several tokens,
 * quotes or newlines, and a substituted value is not scanned again. */
static void env_subst(const char *in, size_t len, sbuf_t *out)
{
    size_t off = 0;
    for (;;) {
        size_t b = off;
        while (b + 1 < len && !(in[b] == '{' && in[b + 1] == '$'))
            b++;
        if (b + 1 >= len)
            break;
        const char *end = memchr(in + b + 2, '}', len - b - 2);
        if (end == NULL)
            break;
        size_t e = (size_t)(end - in);
        sbuf_put(out, in + off, b - off);
        if (e == b + 2) { /* "{$}" has no name: left as it is */
            sbuf_put(out, in + b, 3);
            off = e + 1;
            continue;
        }
        char *name = strndup(in + b + 2, e - b - 2);
        if (name == NULL) {
            fputs("psproxy: out of memory\n", stderr);
            abort();
        }
        char *colon = strchr(name, ':');
        if (colon != NULL)
            *colon = '\0';
        const char *val = getenv(name);
        if (val == NULL)
            val = colon != NULL ? colon + 1 : "";
        sbuf_put(out, val, strlen(val));
        free(name);
        off = e + 1;
    }
    sbuf_put(out, in + off, len - off);
}

static int count_nl(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Caddy's lexer.go next(), byte for byte: only \" is an escape inside
 * "quotes"; nothing is inside `backticks`; a backslash before a newline
 * joins lines (the tokens keep the first line's number); '#' starts a
 * comment only at the start of a token. Unlike Caddy, an unterminated
 * quote is an error rather than a token running to the end of the file. */
static int cf_lex(parser_t *p, const char *file, const char *s, size_t len,
                  const cf_origin_t *origin, tokvec_t *out)
{
    sbuf_t val = {0};
    int line = 1, skipped = 0, tok_line = 1;
    int comment = 0, quoted = 0, bt = 0, escaped = 0;
    int rc = 0;

    for (size_t i = 0;; i++) {
        int emit = 0, q = 0;
        if (i == len) {
            if (quoted || bt) {
                rc = cf_errf(p, file, tok_line, "unterminated %s string",
                             quoted ? "quoted" : "backtick");
                goto fail;
            }
            if (val.n == 0)
                break;
            emit = 1;
        } else {
            char ch = s[i];
            if (ch == '\0') {
                rc = cf_errf(p, file, line, "unexpected NUL byte");
                goto fail;
            }
            if (!escaped && !bt && ch == '\\') {
                escaped = 1;
                continue;
            }
            if (quoted || bt) {
                if (quoted && escaped) {
                    if (ch != '"')
                        sbuf_putc(&val, '\\');
                    escaped = 0;
                } else if ((quoted && ch == '"') || (bt && ch == '`')) {
                    q = quoted ? '"' : '`';
                    emit = 1;
                }
                if (!emit) {
                    if (ch == '\n') {
                        line += 1 + skipped;
                        skipped = 0;
                    }
                    sbuf_putc(&val, ch);
                    continue;
                }
            } else if (is_space(ch)) {
                if (ch == '\r')
                    continue;
                if (ch == '\n') {
                    if (escaped) {
                        skipped++;
                        escaped = 0;
                    } else {
                        line += 1 + skipped;
                        skipped = 0;
                    }
                    comment = 0;
                }
                if (val.n == 0)
                    continue;
                emit = 1;
            } else {
                if (ch == '#' && val.n == 0)
                    comment = 1;
                if (comment)
                    continue;
                if (val.n == 0) {
                    tok_line = line;
                    if (ch == '"') {
                        quoted = 1;
                        continue;
                    }
                    if (ch == '`') {
                        bt = 1;
                        continue;
                    }
                }
                if (escaped) {
                    sbuf_putc(&val, '\\');
                    escaped = 0;
                }
                sbuf_putc(&val, ch);
                continue;
            }
        }
        if (emit) {
            if (out->n >= CF_MAX_TOKENS) {
                rc = cf_errf(p, file, tok_line, "too many tokens");
                goto fail;
            }
            tokvec_reserve(out, 1);
            out->v[out->n++] = (cf_token_t){
                .text = arena_strndup(p->a, val.p ? val.p : "", val.n),
                .file = file,
                .line = tok_line,
                .quoted = q,
                .origin = origin,
            };
            val.n = 0;
            quoted = bt = escaped = comment = 0;
            if (i == len)
                break;
        }
    }
fail:
    free(val.p);
    return rc;
}

static int read_file(const char *path, char **out, size_t *len)
{
    int rc = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -errno;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        rc = -errno;
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail;
    }
    size_t cap = 4096, n = 0;
    buf = xrealloc(NULL, cap);
    for (;;) {
        if (n == cap) {
            if (cap >= CF_MAX_FILE) {
                rc = -EFBIG;
                goto fail;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                rc = -EIO;
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
fail:
    fclose(f);
    free(buf);
    return rc;
}

/* Substitutes the environment into TEXT and lexes it as FILE. */
static int cf_lex_text(parser_t *p, const char *file, const char *text, size_t len,
                       const cf_origin_t *origin, tokvec_t *out)
{
    sbuf_t sub = {0};
    env_subst(text, len, &sub);
    int rc = cf_lex(p, file, sub.p ? sub.p : "", sub.n, origin, out);
    free(sub.p);
    return rc;
}

static const char *tok_text(const parser_t *p, size_t i)
{
    return p->t.v[i].text;
}

static int is_open(const cf_token_t *t)
{
    return t->quoted == 0 && strcmp(t->text, "{") == 0;
}

static int is_close(const cf_token_t *t)
{
    return t->quoted == 0 && strcmp(t->text, "}") == 0;
}

/* parse.go isNewLine: token I starts a line when it comes from another
 * file or from a later line than the previous token ends on. */
static int newline_at(const parser_t *p, size_t i)
{
    if (i == 0)
        return 1;
    const cf_token_t *prev = &p->t.v[i - 1], *curr = &p->t.v[i];
    if (prev->file != curr->file && strcmp(prev->file, curr->file) != 0)
        return 1;
    return prev->line + count_nl(prev->text) < curr->line;
}

static int next(parser_t *p)
{
    size_t want = p->started ? p->cur + 1 : 0;
    if (want < p->t.n) {
        p->cur = want;
        p->started = 1;
        return 1;
    }
    return 0;
}

static int at_end(const parser_t *p)
{
    return !p->started || p->cur >= p->t.n;
}

static snippet_t *snippet_find(parser_t *p, const char *name)
{
    for (snippet_t *s = p->snippets; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

/* Checks that importing NAME from a token with ORIGIN closes no cycle. */
static int check_cycle(parser_t *p, const cf_token_t *imp, const char *name, const char *shown)
{
    int depth = 0;
    for (const cf_origin_t *o = imp->origin; o != NULL; o = o->parent) {
        if (strcmp(o->name, name) == 0) {
            char chain[512] = "";
            size_t used = 0;
            /* innermost first: the message reads from the importer back */
            for (const cf_origin_t *c = imp->origin; c != NULL && used < sizeof(chain);
                 c = c->parent) {
                int n = snprintf(chain + used, sizeof(chain) - used, "%s <- ", c->shown);
                if (n < 0)
                    break;
                used += (size_t)n;
                if (c == o)
                    break;
            }
            if (used >= 4 && used < sizeof(chain))
                chain[used - 4] = '\0';
            return TOK_ERR(p, imp, "import: cycle: %s is imported by %s", shown, chain);
        }
        if (++depth >= CF_MAX_DEPTH)
            return TOK_ERR(p, imp, "import: nested more than %d deep", CF_MAX_DEPTH);
    }
    return 0;
}

/* Replaces {args.N} in S with the import's arguments (Caddy's import
 * placeholders); other braces are left for config.c. */
static const char *subst_args(parser_t *p, const char *s, const cf_token_t *args, size_t nargs)
{
    if (nargs == 0 || strstr(s, "{args.") == NULL)
        return s;
    sbuf_t b = {0};
    const char *q = s;
    while (*q) {
        if (strncmp(q, "{args.", 6) == 0) {
            char *end;
            errno = 0;
            unsigned long idx = strtoul(q + 6, &end, 10);
            if (end != q + 6 && *end == '}' && errno == 0 && idx < nargs && q[6] >= '0' &&
                q[6] <= '9') {
                sbuf_put(&b, args[idx].text, strlen(args[idx].text));
                q = end + 1;
                continue;
            }
        }
        sbuf_putc(&b, *q++);
    }
    const char *r = arena_strndup(p->a, b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}

static int has_glob(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* Resolves PATTERN against the directory of FILE, in the arena. */
static char *resolve_path(parser_t *p, const char *file, const char *pattern)
{
    const char *slash = strrchr(file, '/');
    if (pattern[0] == '/' || slash == NULL)
        return arena_strdup(p->a, pattern);
    size_t dlen = (size_t)(slash - file);
    char *r = arena_alloc(p->a, dlen + 1 + strlen(pattern) + 1);
    memcpy(r, file, dlen);
    r[dlen] = '/';
    strcpy(r + dlen + 1, pattern);
    return r;
}

/* Lexes one imported file into OUT with its own origin. */
static int import_file(parser_t *p, const cf_token_t *imp, const char *path, tokvec_t *out)
{
    int rc = 0;
    char *text = NULL, real[PATH_MAX];
    size_t len = 0;
    const char *id = realpath(path, real) != NULL ? real : path;

    rc = check_cycle(p, imp, id, path);
    if (rc != 0)
        goto fail;
    rc = read_file(path, &text, &len);
    if (rc != 0) {
        rc = TOK_ERR(p, imp, "import: cannot read %s: %s", path, strerror(-rc));
        goto fail;
    }
    cf_origin_t *o = arena_alloc(p->a, sizeof(*o));
    o->name = arena_strdup(p->a, id);
    o->shown = path;
    o->parent = imp->origin;
    rc = cf_lex_text(p, path, text, len, o, out);
fail:
    free(text);
    return rc;
}

/* parse.go doImport: replaces "import NAME [ARGS...]" at the current token
 * with a snippet's tokens or the tokens of the files NAME matches; the
 * current token becomes the first imported one (or the one after). */
static int do_import(parser_t *p)
{
    int rc = 0;
    tokvec_t imported = {0};
    glob_t g = {0};
    int globbed = 0;
    size_t c = p->cur;
    const cf_token_t imp = p->t.v[c];

    if (c + 1 >= p->t.n || newline_at(p, c + 1) || is_open(&p->t.v[c + 1]) ||
        is_close(&p->t.v[c + 1])) {
        rc = TOK_ERR(p, &imp, "import: expected a file or snippet name");
        goto fail;
    }
    const char *name = tok_text(p, c + 1);
    if (name[0] == '\0') {
        rc = TOK_ERR(p, &imp, "import: expected a non-empty file name");
        goto fail;
    }
    size_t nargs = 0;
    while (c + 2 + nargs < p->t.n && !newline_at(p, c + 2 + nargs) &&
           !is_open(&p->t.v[c + 2 + nargs]) && !is_close(&p->t.v[c + 2 + nargs]))
        nargs++;
    /* the arguments are overwritten by the splice: keep a copy */
    cf_token_t *args = arena_alloc(p->a, (nargs ? nargs : 1) * sizeof(*args));
    memcpy(args, &p->t.v[c + 2], nargs * sizeof(*args));

    snippet_t *sn = snippet_find(p, name);
    if (sn != NULL) {
        char *id = arena_alloc(p->a, strlen(name) + 12);
        sprintf(id, "(snippet %s)", name);
        rc = check_cycle(p, &imp, id, name);
        if (rc != 0)
            goto fail;
        cf_origin_t *o = arena_alloc(p->a, sizeof(*o));
        o->name = id;
        o->shown = name;
        o->parent = imp.origin;
        tokvec_reserve(&imported, sn->n);
        for (size_t i = 0; i < sn->n; i++) {
            imported.v[imported.n] = sn->toks[i];
            imported.v[imported.n++].origin = o;
        }
    } else {
        const char *path = resolve_path(p, imp.file, name);
        if (has_glob(path)) {
            int grc = glob(path, 0, NULL, &g);
            globbed = 1;
            if (grc != 0 && grc != GLOB_NOMATCH) {
                rc = TOK_ERR(p, &imp, "import: cannot expand %s", name);
                goto fail;
            }
            for (size_t i = 0; grc == 0 && i < g.gl_pathc; i++) {
                rc = import_file(p, &imp, arena_strdup(p->a, g.gl_pathv[i]), &imported);
                if (rc != 0)
                    goto fail;
            }
        } else {
            struct stat st;
            if (stat(path, &st) != 0) {
                rc = TOK_ERR(p, &imp, "import: file not found: %s", name);
                goto fail;
            }
            rc = import_file(p, &imp, path, &imported);
            if (rc != 0)
                goto fail;
        }
    }
    for (size_t i = 0; i < imported.n; i++)
        imported.v[i].text = subst_args(p, imported.v[i].text, args, nargs);

    size_t drop = 2 + nargs;
    if (p->t.n - drop + imported.n > CF_MAX_TOKENS) {
        rc = TOK_ERR(p, &imp, "import: too many tokens");
        goto fail;
    }
    tokvec_reserve(&p->t, imported.n);
    memmove(&p->t.v[c + imported.n], &p->t.v[c + drop], (p->t.n - c - drop) * sizeof(cf_token_t));
    if (imported.n > 0)
        memcpy(&p->t.v[c], imported.v, imported.n * sizeof(cf_token_t));
    p->t.n = p->t.n - drop + imported.n;
    p->cur = c;
fail:
    if (globbed)
        globfree(&g);
    free(imported.v);
    return rc;
}

static int parse_lines(parser_t *p, const cf_token_t *open, int depth, cf_line_t **out,
                       size_t *n_out);

/* Parses one line starting at the current token, with its block if any. */
static int parse_line(parser_t *p, int depth, cf_line_t *line)
{
    int rc = 0;
    size_t cap = 0;
    memset(line, 0, sizeof(*line));
    line->toks = arena_grow(p->a, NULL, 0, &cap, 1, sizeof(cf_token_t));
    line->toks[line->n_toks++] = p->t.v[p->cur];
    while (p->cur + 1 < p->t.n && !newline_at(p, p->cur + 1)) {
        if (is_close(&p->t.v[p->cur + 1]))
            break; /* "dir arg }": the '}' closes the enclosing block */
        next(p);
        const cf_token_t *t = &p->t.v[p->cur];
        if (is_open(t)) {
            if (p->cur + 1 < p->t.n && !newline_at(p, p->cur + 1))
                return TOK_ERR(p, &p->t.v[p->cur + 1],
                               "unexpected \"%s\" after '{': a block starts on a new line",
                               tok_text(p, p->cur + 1));
            const cf_token_t *open = arena_alloc(p->a, sizeof(*open));
            memcpy((void *)open, t, sizeof(*t));
            line->open = open;
            rc = parse_lines(p, open, depth + 1, &line->block, &line->n_block);
            if (rc != 0)
                return rc;
            if (p->cur + 1 < p->t.n && !newline_at(p, p->cur + 1) && !is_close(&p->t.v[p->cur + 1]))
                return TOK_ERR(p, &p->t.v[p->cur + 1], "unexpected \"%s\" after '}'",
                               tok_text(p, p->cur + 1));
            break;
        }
        line->toks = arena_grow(p->a, line->toks, line->n_toks, &cap, 1, sizeof(cf_token_t));
        line->toks[line->n_toks++] = *t;
    }
    return 0;
}

/* Parses lines up to the '}' matching OPEN, or to the end of input when
 * OPEN is NULL (a site without braces). */
static int parse_lines(parser_t *p, const cf_token_t *open, int depth, cf_line_t **out,
                       size_t *n_out)
{
    int rc = 0;
    size_t cap = 0;
    cf_line_t *lines = NULL;
    size_t n = 0;

    if (depth > CF_MAX_DEPTH)
        return TOK_ERR(p, open, "blocks nested more than %d deep", CF_MAX_DEPTH);
    for (;;) {
        if (!next(p)) {
            if (open != NULL) {
                const cf_token_t *last = &p->t.v[p->t.n - 1];
                if (strcmp(last->file, open->file) == 0)
                    return cf_errf(p, last->file, last->line + count_nl(last->text),
                                   "unterminated block (opened at line %d)", open->line);
                return cf_errf(p, last->file, last->line + count_nl(last->text),
                               "unterminated block (opened at %s:%d)", open->file, open->line);
            }
            break;
        }
        const cf_token_t *t = &p->t.v[p->cur];
        if (is_close(t)) {
            if (open != NULL)
                break;
            return TOK_ERR(p, t, "unexpected '}'");
        }
        if (t->quoted == 0 && strcmp(t->text, "import") == 0) {
            rc = do_import(p);
            if (rc != 0)
                return rc;
            /* the next() above must land on the first imported token */
            if (p->cur == 0)
                p->started = 0;
            else
                p->cur--;
            continue;
        }
        if (is_open(t))
            return TOK_ERR(p, t, "unexpected '{': a block must follow a directive");
        lines = arena_grow(p->a, lines, n, &cap, 1, sizeof(*lines));
        rc = parse_line(p, depth, &lines[n]);
        if (rc != 0)
            return rc;
        n++;
    }
    *out = lines;
    *n_out = n;
    return 0;
}

/* parse.go addresses(): the keys of a server block, up to '{' or the end
 * of the line; a trailing comma continues the list on the next line. */
static int parse_addresses(parser_t *p, cf_block_t *b, int *eof)
{
    size_t cap = 0;
    int expecting = 0;
    size_t comma_at = 0; /* the token ending in ',' (an index: imports grow the array) */
    for (;;) {
        if (at_end(p)) { /* an import at the very end brought nothing */
            if (expecting)
                return TOK_ERR(p, &p->t.v[comma_at], "expected another address after ','");
            *eof = 1;
            return 0;
        }
        const cf_token_t *t = &p->t.v[p->cur];
        if (t->quoted == 0 && strcmp(t->text, "import") == 0 && newline_at(p, p->cur)) {
            int rc = do_import(p);
            if (rc != 0)
                return rc;
            continue; /* at_end() when nothing follows */
        }
        if (is_open(t)) {
            if (expecting)
                return TOK_ERR(p, t,
                               "expected another address but found '{': "
                               "check for an extra comma");
            b->has_braces = 1;
            return 0;
        }
        if (is_close(t))
            return TOK_ERR(p, t, "unexpected '}'");
        size_t len = strlen(t->text);
        if (t->quoted == 0 && len > 1 && t->text[len - 1] == '{')
            return TOK_ERR(p, t, "site address \"%s\" ends with '{': put a space before the brace",
                           t->text);
        if (len > 0) {
            cf_token_t key = *t;
            if (t->text[len - 1] == ',') {
                key.text = arena_strndup(p->a, t->text, len - 1);
                expecting = 1;
                comma_at = p->cur;
            } else {
                expecting = 0;
            }
            if (strchr(key.text, ',') != NULL)
                return TOK_ERR(p, t,
                               "site addresses cannot contain a comma: \"%s\": "
                               "put a space after the comma",
                               key.text);
            if (key.text[0] != '\0') {
                b->keys = arena_grow(p->a, b->keys, b->n_keys, &cap, 1, sizeof(*b->keys));
                b->keys[b->n_keys++] = key;
            }
        }
        if (!next(p)) {
            if (expecting)
                return TOK_ERR(p, t, "expected another address after ','");
            *eof = 1;
            return 0;
        }
        if (!expecting && newline_at(p, p->cur))
            return 0;
    }
}

static int is_snippet(const cf_block_t *b)
{
    if (b->n_keys != 1)
        return 0;
    const char *k = b->keys[0].text;
    size_t len = strlen(k);
    return len > 2 && k[0] == '(' && k[len - 1] == ')';
}

/* parse.go snippetTokens: the tokens up to the matching '}', kept raw so
 * that an import can splice them anywhere. */
static int define_snippet(parser_t *p, const cf_block_t *b)
{
    const cf_token_t *key = &b->keys[0];
    size_t klen = strlen(key->text);
    char *name = arena_strndup(p->a, key->text + 1, klen - 2);
    snippet_t *old = snippet_find(p, name);
    if (old != NULL)
        return TOK_ERR(p, key, "snippet %s: already defined at %s:%d", name, old->def->file,
                       old->def->line);
    if (!is_open(&p->t.v[p->cur])) /* also when "{" starts the next line, as in Caddy */
        return TOK_ERR(p, key, "snippet %s: expected '{'", name);
    const cf_token_t *open = &p->t.v[p->cur];
    const cf_token_t open_copy = *open;
    size_t start = p->cur + 1;
    int nesting = 1;
    while (next(p)) {
        const cf_token_t *t = &p->t.v[p->cur];
        if (is_close(t) && --nesting == 0)
            break;
        if (is_open(t))
            nesting++;
    }
    if (nesting != 0) {
        const cf_token_t *last = &p->t.v[p->t.n - 1];
        return cf_errf(p, last->file, last->line + count_nl(last->text),
                       "unterminated block (opened at line %d)", open_copy.line);
    }
    snippet_t *s = arena_alloc(p->a, sizeof(*s));
    s->name = name;
    s->n = p->cur - start;
    s->toks = arena_alloc(p->a, (s->n ? s->n : 1) * sizeof(cf_token_t));
    memcpy(s->toks, &p->t.v[start], s->n * sizeof(cf_token_t));
    cf_token_t *def = arena_alloc(p->a, sizeof(*def));
    *def = *key;
    s->def = def;
    s->next = p->snippets;
    p->snippets = s;
    return 0;
}

static int parse_all(parser_t *p, cf_block_t **out, size_t *n_out)
{
    int rc = 0;
    size_t cap = 0, n = 0;
    cf_block_t *blocks = NULL;

    while (next(p)) {
        cf_block_t b = {0};
        int eof = 0;
        b.file = p->t.v[p->cur].file;
        b.line = p->t.v[p->cur].line;
        rc = parse_addresses(p, &b, &eof);
        if (rc != 0)
            return rc;
        if (b.n_keys > 0) {
            b.file = b.keys[0].file;
            b.line = b.keys[0].line;
        }
        if (is_snippet(&b)) {
            rc = define_snippet(p, &b);
            if (rc != 0)
                return rc;
            continue;
        }
        if (!eof) {
            const cf_token_t *open = NULL;
            if (is_open(&p->t.v[p->cur])) { /* "a.com" then '{' on the next line works too */
                b.has_braces = 1;
                open = arena_alloc(p->a, sizeof(*open));
                memcpy((void *)open, &p->t.v[p->cur], sizeof(*open));
            } else {
                p->cur--; /* not '{': the token starts the first directive */
            }
            rc = parse_lines(p, open, 1, &b.lines, &b.n_lines);
            if (rc != 0)
                return rc;
        }
        if (b.n_keys > 0 || b.n_lines > 0 || b.has_braces) {
            blocks = arena_grow(p->a, blocks, n, &cap, 1, sizeof(*blocks));
            blocks[n++] = b;
        }
        if (eof)
            break;
    }
    *out = blocks;
    *n_out = n;
    return 0;
}

int cf_parse(arena_t *a, const char *name, const char *text, size_t len, cf_block_t **blocks,
             size_t *n_blocks, char *err, size_t errlen)
{
    int rc = 0;
    char *owned = NULL, real[PATH_MAX];
    parser_t p = {.a = a, .err = err, .errlen = errlen};

    if (errlen > 0)
        err[0] = '\0';
    *blocks = NULL;
    *n_blocks = 0;
    if (text == NULL) {
        rc = read_file(name, &owned, &len);
        if (rc != 0) {
            if (errlen > 0)
                snprintf(err, errlen, "%s: cannot read: %s", name, strerror(-rc));
            rc = PS_ECONFIG;
            goto fail;
        }
        text = owned;
    }
    cf_origin_t *root = arena_alloc(a, sizeof(*root));
    root->name = arena_strdup(a, realpath(name, real) != NULL ? real : name);
    root->shown = arena_strdup(a, name);
    rc = cf_lex_text(&p, root->shown, text, len, root, &p.t);
    if (rc != 0)
        goto fail;
    rc = parse_all(&p, blocks, n_blocks);
fail:
    free(owned);
    free(p.t.v);
    return rc;
}
