/* Answers made here: `respond` (a status and a templated body), `redir` (a
 * Location), and the empty 200 of a route with no terminal handler, as
 * Caddy's static_response builds them, the site's `header` ops around
 * them. */
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "exchange.h"
#include "handlers.h"
#include "json.h"

/* Length of the Unicode white space (Go's unicode.IsSpace) that starts at
 * P (BACK: that ends at P + N) in UTF-8, or 0. */
static size_t utf8_space(const char *p, size_t n, int back)
{
    static const char *const wide[] = {
        "\xc2\x85" /* U+0085 */, "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003",
        "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a",
        "\u2028", "\u2029", "\u202f", "\u205f", "\u3000",
    };
    if (n == 0)
        return 0;
    if (memchr(" \t\n\v\f\r", back ? p[n - 1] : p[0], 6) != NULL)
        return 1;
    for (size_t k = 0; k < PS_ARRAY_SIZE(wide); k++) {
        size_t wl = strlen(wide[k]);
        if (n >= wl && memcmp(back ? p + n - wl : p, wide[k], wl) == 0)
            return wl;
    }
    return 0;
}

/* Caddy's static_response (Caddy 2.6.2, caddy run): a body that, trimmed
 * of white space as Go's strings.TrimSpace does, is a JSON object or array
 * of more than two bytes gets application/json, any other body text/plain;
 * a Content-Type the site's header ops set wins over both. */
static uv_buf_t respond_content_type(const char *body, size_t len)
{
    size_t k;
    while ((k = utf8_space(body, len, 0)) > 0) {
        body += k;
        len -= k;
    }
    while ((k = utf8_space(body, len, 1)) > 0)
        len -= k;
    if (len > 2 &&
        ((body[0] == '{' && body[len - 1] == '}') || (body[0] == '[' && body[len - 1] == ']')) &&
        json_valid(body, len))
        return uv_buf_init("application/json", 16);
    return uv_buf_init("text/plain; charset=utf-8", 25);
}

/* The answer of H (respond or redir; NULL: the empty 200). */
static void answer(exchange_t *x, const cfg_handler_t *h)
{
    char *extra = NULL;
    size_t elen = 0;
    char body[4096];
    size_t blen = 0;
    int status = 200;
    filter_head_t fh;
    http_hdr_t own, *ownp = NULL;
    if (h != NULL && h->kind == CFG_H_RESPOND) {
        status = h->u.respond.status;
        if (http_tmpl_expand(&h->u.respond.body, &x->cur->vars, body, sizeof(body), &blen) < 0)
            blen = 0;
        if (h->u.respond.close)
            x->keep_alive = 0;
        if (blen > 0) {
            own.name = uv_buf_init("Content-Type", 12);
            own.value = respond_content_type(body, blen);
            ownp = &own;
        }
    }
    x->obuf = buf_get(&x->w->bufs);
    extra = x->obuf;
    /* the site's header ops apply to answers made here too, around
     * respond's Content-Type as in Caddy; one a deferred op deleted is
     * Go's sniffing in Caddy: plain text (http_build_simple) for all but
     * a few signatures (HTML, XML, PDF, images) psproxy does not sniff */
    if (filter_head(x->cur->route.filters, x->cur->route.n_filters, &fh) < 0) {
        exchange_respond(x, 500, NULL, NULL, 0);
        return;
    }
    /* a body filter rewrites the whole body here, so Content-Length stays
     * exact (a HEAD gets the length a GET would); an empty body stays so */
    char *filtered = NULL;
    if (fh.n_body > 0 && blen > 0) {
        filtered = buf_get(&x->w->bufs);
        if (filter_body_whole(&fh, body, blen, filtered, x->w->bufs.size, &blen) < 0) {
            buf_put(&x->w->bufs, filtered);
            exchange_respond(x, 500, NULL, NULL, 0);
            return;
        }
    }
    if (http_expand_ops(fh.ops, fh.n_ops, &x->cur->vars, extra, x->w->bufs.size - 1, &elen, ownp) < 0)
        elen = 0;
    if (h != NULL && h->kind == CFG_H_REDIR) {
        size_t start = elen;
        memcpy(extra + elen, "Location: ", 10);
        elen += 10;
        if (http_tmpl_expand(&h->u.redir.to, &x->cur->vars, extra, x->w->bufs.size - 3, &elen) < 0) {
            elen = start;
            status = 500;
        } else {
            memcpy(extra + elen, "\r\n", 2);
            elen += 2;
            status = h->u.redir.status;
        }
    }
    extra[elen] = '\0';
    /* exchange_respond copies the body into the head's buffer; X may be
     * gone after it (an HTTP/2 stream closed) */
    worker_t *w = x->w;
    exchange_respond(x, status, extra, filtered != NULL ? filtered : body, blen);
    buf_put(&w->bufs, filtered);
}

static void respond_start(exchange_t *x)
{
    answer(x, x->cur->route.handler);
}

const handler_ops_t respond_handler = {
    .name = "respond",
    .start = respond_start,
};

const handler_ops_t redir_handler = {
    .name = "redir",
    .start = respond_start,
};
