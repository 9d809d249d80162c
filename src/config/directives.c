/* The site directives: which names a site block takes and what each
 * means (header, request_body, redir, respond, tls, log; reverse_proxy is
 * in reverse_proxy.c), and the order Caddy runs their handlers in. */
#include "parse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- header ------------------------------------------------------------ */

static int is_tchar(char ch)
{
    return isalnum((unsigned char)ch) || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* One header operation: [+|-|?]Name [value] (">" also, Caddy 2.7's
 * deferred set, when ALLOW_DEFER). A third argument is Caddy's
 * find/replace form, which psproxy does not do. */
int cfg_parse_hdr_op(cfg_ctx_t *c, const char *what, const cf_token_t *args, size_t n,
                     int allow_defer, cfg_hdr_ops_t *ops, size_t *cap)
{
    if (n == 0)
        return cfg_errf(c, &args[-1], "%s: expected a header field name", what);
    if (n > 2)
        return cfg_errf(c, &args[2],
                        "%s: find/replace (a third argument) is not supported by psproxy", what);
    const char *name = args[0].text;
    int op = CFG_HDR_SET;
    if (name[0] == '+')
        op = CFG_HDR_ADD;
    else if (name[0] == '-')
        op = CFG_HDR_DEL;
    else if (name[0] == '?')
        op = CFG_HDR_DEFAULT;
    else if (name[0] == '>' && allow_defer)
        op = CFG_HDR_SET;
    if (op != CFG_HDR_SET || name[0] == '>')
        name++;
    size_t len = strlen(name);
    if (len == 0)
        return cfg_errf(c, &args[0], "%s: expected a header field name after \"%s\"", what,
                        args[0].text);
    for (size_t i = 0; i < len; i++) {
        if (!is_tchar(name[i]))
            return cfg_errf(c, &args[0], "%s: invalid header field name \"%s\"", what, name);
    }
    cfg_hdr_op_t o = {.op = op, .name = arena_strdup(c->a, name)};
    if (op == CFG_HDR_DEL) {
        if (n > 1)
            return cfg_errf(c, &args[1], "%s: deleting %s takes no value", what, name);
        if (strchr(name, '*') != NULL &&
            (name[len - 1] != '*' || strchr(name, '*') != name + len - 1))
            return cfg_errf(c, &args[0], "%s: '*' may only end a field name to delete", what);
    } else {
        int rc = cfg_tmpl_compile(c, n > 1 ? &args[1] : &args[0], what, n > 1 ? args[1].text : "",
                                  &o.value);
        if (rc != 0)
            return rc;
        if (strchr(name, '*') != NULL)
            return cfg_errf(c, &args[0], "%s: invalid header field name \"%s\"", what, name);
    }
    ops->ops = cfg_grow(c->a, ops->ops, ops->n, cap, sizeof(*ops->ops));
    ops->ops[ops->n++] = o;
    return 0;
}

static int parse_header(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    size_t argi, cap = 0;
    int rc = cfg_take_matcher(c, l, &h->match, &argi);
    if (rc != 0)
        return rc;
    h->kind = CFG_H_HEADER;
    size_t n = l->n_toks - argi;
    if (l->open != NULL && n > 0)
        return cfg_errf(c, &l->toks[argi],
                        "header: expected either arguments or a block, not both");
    cfg_hdr_ops_t *ops = &h->u.header;
    if (l->open == NULL) {
        rc = cfg_parse_hdr_op(c, "header", &l->toks[argi], n, 1, ops, &cap);
        ops->deferred =
            rc == 0 && (ops->ops[0].op == CFG_HDR_DEL || ops->ops[0].op == CFG_HDR_DEFAULT ||
                        l->toks[argi].text[0] == '>');
        return rc;
    }
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        if (strcmp(cfg_line_name(s), "defer") == 0 && s->n_toks == 1 && s->open == NULL) {
            ops->deferred = 1;
            continue;
        }
        if (s->open != NULL)
            return cfg_errf(c, s->open, "header: unexpected block");
        rc = cfg_parse_hdr_op(c, "header", &s->toks[0], s->n_toks, 1, ops, &cap);
        if (rc != 0)
            return rc;
        /* Caddy defers a header directive that deletes (its field would
         * not be there yet) or requires absence (?); '>' asks for it */
        int op = ops->ops[ops->n - 1].op;
        if (op == CFG_HDR_DEL || op == CFG_HDR_DEFAULT || s->toks[0].text[0] == '>')
            ops->deferred = 1;
    }
    if (ops->n == 0)
        return cfg_errf(c, &l->toks[0], "header: expected at least one header field");
    return 0;
}

/* ---- request_body, redir, respond -------------------------------------- */

/* request_body [matcher] { max_size SIZE } */
static int parse_request_body(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    size_t argi;
    int rc = cfg_take_matcher(c, l, &h->match, &argi);
    if (rc != 0)
        return rc;
    if (l->n_toks > argi)
        return cfg_errf(c, &l->toks[argi], "request_body: unexpected argument \"%s\"",
                        l->toks[argi].text);
    h->kind = CFG_H_REQUEST_BODY;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        if (strcmp(n, "max_size") != 0)
            return cfg_errf(c, &s->toks[0], "request_body: %s: not supported by psproxy", n);
        rc = cfg_want_args(c, s, "request_body: max_size", 1, 1, 0);
        if (rc != 0)
            return rc;
        if (cfg_parse_size(s->toks[1].text, &h->u.request_body.max_size) != 0)
            return cfg_errf(c, &s->toks[1],
                            "request_body: max_size: expected a size like 10MB, got \"%s\"",
                            s->toks[1].text);
    }
    return 0;
}

static int is_status3(const char *s)
{
    return strlen(s) == 3 && isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
           isdigit((unsigned char)s[2]);
}

/* Caddy's respond: one argument is a status when it is three digits, else
 * a body; two are body then status. */
static int parse_respond(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    size_t argi;
    int rc = cfg_take_matcher(c, l, &h->match, &argi);
    if (rc != 0)
        return rc;
    h->kind = CFG_H_RESPOND;
    h->u.respond.status = 200;
    size_t n = l->n_toks - argi;
    const cf_token_t *body = NULL, *status = NULL;
    if (n == 0)
        return cfg_errf(c, &l->toks[0], "respond: expected a body or a status code%s",
                        h->match ? " (the first argument was taken as a path matcher)" : "");
    if (n > 2)
        return cfg_errf(c, &l->toks[argi + 2], "respond: unexpected argument \"%s\"",
                        l->toks[argi + 2].text);
    if (n == 1 && is_status3(l->toks[argi].text)) {
        status = &l->toks[argi];
    } else {
        body = &l->toks[argi];
        if (n == 2)
            status = &l->toks[argi + 1];
    }
    if (status != NULL) {
        if (!is_status3(status->text) || status->text[0] == '0')
            return cfg_errf(c, status, "respond: expected a status code (100-999), got \"%s\"",
                            status->text);
        h->u.respond.status = atoi(status->text);
    }
    if (body != NULL) {
        rc = cfg_tmpl_compile(c, body, "respond", body->text, &h->u.respond.body);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        if (strcmp(cfg_line_name(s), "body") == 0) {
            if (body != NULL)
                return cfg_errf(c, &s->toks[0], "respond: body given twice");
            rc = cfg_want_args(c, s, "respond: body", 1, 1, 0);
            if (rc != 0)
                return rc;
            body = &s->toks[1];
            rc = cfg_tmpl_compile(c, body, "respond", body->text, &h->u.respond.body);
        } else if (strcmp(cfg_line_name(s), "close") == 0) {
            rc = cfg_want_args(c, s, "respond: close", 0, 0, 0);
            h->u.respond.close = 1;
        } else {
            rc =
                cfg_errf(c, &s->toks[0], "respond: %s: not supported by psproxy", cfg_line_name(s));
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_redir(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    size_t argi;
    int rc = cfg_take_matcher(c, l, &h->match, &argi);
    if (rc != 0)
        return rc;
    h->kind = CFG_H_REDIR;
    h->u.redir.status = 302;
    size_t n = l->n_toks - argi;
    if (n == 0)
        return cfg_errf(c, &l->toks[0], "redir: expected a target%s",
                        h->match ? " (the first argument was taken as a path matcher)" : "");
    rc = cfg_want_args(c, l, "redir", argi, argi + 1, 0);
    if (rc != 0)
        return rc;
    if (n == 2) {
        const cf_token_t *t = &l->toks[argi + 1];
        if (strcmp(t->text, "permanent") == 0) {
            h->u.redir.status = 301;
        } else if (strcmp(t->text, "temporary") == 0) {
            h->u.redir.status = 302;
        } else if (strcmp(t->text, "html") == 0) {
            return cfg_errf(c, t, "redir: html: not supported by psproxy");
        } else {
            int v = is_status3(t->text) ? atoi(t->text) : 0;
            if (!((v >= 300 && v <= 399) || v == 401))
                return cfg_errf(
                    c, t, "redir: expected permanent, temporary or a 3xx status code, got \"%s\"",
                    t->text);
            h->u.redir.status = v;
        }
    }
    return cfg_tmpl_compile(c, &l->toks[argi], "redir", l->toks[argi].text, &h->u.redir.to);
}

/* ---- tls, log: the site's own settings --------------------------------- */

static int parse_tls(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    if (site->tls.line != 0)
        return cfg_errf(c, &l->toks[0], "tls: given twice in one site (first at line %d)",
                        site->tls.line);
    if (l->open != NULL)
        return cfg_errf(c, l->open, "tls: sub-directives are not supported by psproxy");
    int rc = cfg_want_args(c, l, "tls", 1, 2, 0);
    if (rc != 0)
        return rc;
    const char *a = l->toks[1].text;
    if (l->n_toks == 3) {
        site->tls.cert_file = arena_strdup(c->a, a);
        site->tls.key_file = arena_strdup(c->a, l->toks[2].text);
    } else if (strcmp(a, "internal") == 0) {
        site->tls.internal = 1;
    } else if (strchr(a, '@') != NULL) {
        site->tls.email = arena_strdup(c->a, a);
    } else {
        return cfg_errf(c, &l->toks[1],
                        "tls: expected internal, an email address, or CERT KEY, "
                        "got \"%s\"",
                        a);
    }
    site->tls.line = l->toks[0].line;
    return 0;
}

/* Caddy's roll_* options of `output file`: psproxy leaves rolling to
 * logrotate (SIGUSR1 reopens), and says so once rather than pretend. */
static int parse_roll(cfg_ctx_t *c, const cf_line_t *s, cfg_site_t *site)
{
    static const char *const rolls[] = {"roll_size",     "roll_keep",       "roll_keep_for",
                                        "roll_disabled", "roll_local_time", "roll_uncompressed"};
    for (size_t i = 0; i < s->n_block; i++) {
        const cf_line_t *r = &s->block[i];
        const char *n = cfg_line_name(r);
        int known = 0;
        for (size_t k = 0; k < PS_ARRAY_SIZE(rolls); k++)
            known |= strcmp(n, rolls[k]) == 0;
        if (!known)
            return cfg_errf(c, &r->toks[0], "log: output file: %s: not supported by psproxy", n);
        site->log.roll_line = r->toks[0].line;
    }
    return 0;
}

static int parse_log(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h)
{
    if (site->log.enabled)
        return cfg_errf(c, &l->toks[0], "log: given twice in one site");
    int rc = cfg_want_args(c, l, "log", 0, 0, 1);
    if (rc != 0)
        return rc;
    site->log.enabled = 1;
    /* every option psproxy takes gives the log a writer or an encoder,
     * which is when Caddy makes it a logger of its own */
    site->log.index = l->n_block > 0 ? c->n_logs++ : -1;
    for (size_t i = 0; i < l->n_block; i++) {
        const cf_line_t *s = &l->block[i];
        const char *n = cfg_line_name(s);
        if (strcmp(n, "output") == 0) {
            int is_file = s->n_toks >= 2 && strcmp(s->toks[1].text, "file") == 0;
            rc = cfg_want_args(c, s, "log: output", 1, 2, is_file);
            const char *o = rc == 0 ? s->toks[1].text : "";
            if (rc != 0) {
            } else if (strcmp(o, "file") == 0) {
                if (s->n_toks != 3)
                    rc = cfg_errf(c, &s->toks[1], "log: output file: expected a path");
                else
                    site->log.file = arena_strdup(c->a, s->toks[2].text);
                rc = rc != 0 ? rc : parse_roll(c, s, site);
            } else if (strcmp(o, "stderr") == 0 || strcmp(o, "stdout") == 0) {
                /* stdout and stderr both reach the journal under systemd */
                rc = cfg_want_args(c, s, "log: output", 1, 1, 0);
                site->log.file = NULL;
            } else {
                rc = cfg_errf(c, &s->toks[1], "log: output %s: not supported by psproxy", o);
            }
        } else if (strcmp(n, "format") == 0) {
            rc = cfg_want_args(c, s, "log: format", 1, 1, 0);
            if (rc == 0 && strcmp(s->toks[1].text, "json") == 0)
                site->log.format = CFG_LOG_JSON;
            else if (rc == 0 && strcmp(s->toks[1].text, "console") == 0)
                site->log.format = CFG_LOG_CONSOLE;
            else if (rc == 0)
                rc = cfg_errf(c, &s->toks[1], "log: format %s: not supported by psproxy",
                              s->toks[1].text);
        } else {
            rc = cfg_errf(c, &s->toks[0], "log: %s: not supported by psproxy", n);
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- order ------------------------------------------------------------- */

/* Caddy's directive order (httpcaddyfile/directives.go) for the subset. */
static int directive_rank(int kind)
{
    switch (kind) {
    case CFG_H_HEADER:
        return 0;
    case CFG_H_REQUEST_BODY:
        return 1;
    case CFG_H_REDIR:
        return 2;
    case CFG_H_RESPOND:
        return 3;
    default:
        return 4;
    }
}

static size_t match_len(const cfg_handler_t *h)
{
    return h->match ? strlen(h->match) : 0;
}

/* Caddy 2.6.2's sortRoutes: directive order, then within one directive the
 * longer path first, any matcher before none, else file order. (Later
 * Caddy puts "/a" before "/a*"; 2.6.2 does not, as `caddy adapt` shows.) */
static int handler_less(const cfg_handler_t *i, const cfg_handler_t *j)
{
    int ri = directive_rank(i->kind), rj = directive_rank(j->kind);
    if (ri != rj)
        return ri < rj;
    size_t il = match_len(i), jl = match_len(j);
    if (il > 0 && jl > 0)
        return il > jl;
    return i->match != NULL && j->match == NULL;
}

/* Go's sort.SliceStable is an insertion sort up to 20 elements; doing the
 * same keeps Caddy's order even where its comparison is not transitive. */
static void sort_handlers(cfg_handler_t *v, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && handler_less(&v[j], &v[j - 1]); j--) {
            cfg_handler_t tmp = v[j];
            v[j] = v[j - 1];
            v[j - 1] = tmp;
        }
    }
}

/* ---- the table --------------------------------------------------------- */

/* A site directive: PARSE reads line L into handler H, which joins the
 * site when it sets h->kind, or into SITE's own settings (tls, log). */
typedef struct directive {
    const char *name;
    int (*parse)(cfg_ctx_t *c, const cf_line_t *l, cfg_site_t *site, cfg_handler_t *h);
} directive_t;

/* Every directive a site block takes; directive_rank orders their
 * handlers as Caddy does. */
static const directive_t directives[] = {
    {"header", parse_header},                   /* response (or deferred) header fields */
    {"request_body", parse_request_body},       /* a limit on request bodies */
    {"redir", parse_redir},                     /* a redirect */
    {"respond", parse_respond},                 /* a fixed answer */
    {"reverse_proxy", cfg_parse_reverse_proxy}, /* reverse_proxy.c */
    {"tls", parse_tls},                         /* the site's certificate */
    {"log", parse_log},                         /* the site's access log */
};

static const directive_t *find_directive(const char *name)
{
    for (size_t i = 0; i < PS_ARRAY_SIZE(directives); i++)
        if (strcmp(directives[i].name, name) == 0)
            return &directives[i];
    return NULL;
}

/* Reads the directive lines of site block B into SITE: its handlers, in
 * Caddy's order, and its tls and log settings. */
int cfg_parse_directives(cfg_ctx_t *c, const cf_block_t *b, cfg_site_t *site)
{
    size_t hcap = 0;
    int rc, n_headers = 0;
    for (size_t i = 0; i < b->n_lines; i++) {
        const cf_line_t *l = &b->lines[i];
        const char *n = cfg_line_name(l);
        cfg_handler_t h = {.file = l->toks[0].file, .line = l->toks[0].line};
        const directive_t *d = find_directive(n);
        if (d != NULL) {
            rc = d->parse(c, l, site, &h);
        } else if (n[0] == '@') {
            rc = cfg_errf(c, &l->toks[0], "%s: named matchers are not supported by psproxy", n);
        } else if (c->braceless && l->open != NULL) {
            rc = cfg_errf(c, &l->toks[0],
                          "%s: not supported by psproxy (if this is a site, every "
                          "site needs braces when there are several)",
                          n);
        } else {
            rc = cfg_errf(c, &l->toks[0], "%s: not supported by psproxy", n);
        }
        if (rc != 0)
            return rc;
        if (h.kind == CFG_H_HEADER && ++n_headers > CFG_MAX_SITE_HEADERS)
            return cfg_errf(c, &l->toks[0], "header: at most %d header directives in a site",
                            CFG_MAX_SITE_HEADERS);
        if (h.kind != 0) {
            site->handlers =
                cfg_grow(c->a, site->handlers, site->n_handlers, &hcap, sizeof(*site->handlers));
            site->handlers[site->n_handlers++] = h;
        }
    }
    sort_handlers(site->handlers, site->n_handlers);
    return 0;
}
