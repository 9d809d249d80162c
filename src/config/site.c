/* Sites: their addresses with Caddy's scheme and port defaults, the
 * listeners they make (one per port, sites in Caddy's matching order, the
 * automatic HTTPS redirects), and whether each HTTPS site can have a
 * certificate. */
#include "parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* ---- addresses --------------------------------------------------------- */

/* Caddy's ParseAddress and its listener defaults: explicit scheme wins,
 * else the http_port is http, the https_port https, no host http, and
 * any other host https; a missing port is the https_port unless the
 * scheme is http. */
static int parse_addr(cfg_ctx_t *c, const cf_token_t *t, cfg_addr_t *out)
{
    const char *s = t->text, *sep = strstr(s, "://");
    char scheme[16] = "";
    if (sep != NULL) {
        size_t sl = (size_t)(sep - s);
        if (sl >= sizeof(scheme) || (sl != 4 && sl != 5))
            return cfg_errf(c, t, "%s: unsupported scheme \"%.*s\" (expected http or https)", s,
                            (int)sl, s);
        memcpy(scheme, s, sl);
        scheme[sl] = '\0';
        if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
            return cfg_errf(c, t, "%s: unsupported scheme \"%s\" (expected http or https)", s,
                            scheme);
        s = sep + 3;
    }
    const char *slash = strchr(s, '/');
    size_t hplen = slash ? (size_t)(slash - s) : strlen(s);
    if (slash != NULL)
        return cfg_errf(c, t, "%s: site addresses with a path are not supported by psproxy",
                        t->text);
    char *hp = arena_strndup(c->a, s, hplen);
    const char *host = hp, *port = "";
    if (hp[0] == '[') {
        char *close = strchr(hp, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return cfg_errf(c, t, "%s: invalid address", t->text);
        *close = '\0';
        host = hp + 1;
        if (close[1] == ':')
            port = close + 2;
    } else {
        char *colon = strchr(hp, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            *colon = '\0';
            port = colon + 1;
        } /* several colons: a bare IPv6 host, as Go's SplitHostPort falls back */
    }
    if (strchr(host, '{') != NULL)
        return cfg_errf(c, t, "%s: placeholders in site addresses are not supported by psproxy",
                        t->text);
    for (const char *q = host; *q; q++) {
        if (!isalnum((unsigned char)*q) && strchr("-._*:%", *q) == NULL)
            return cfg_errf(c, t, "%s: invalid host \"%s\"", t->text, host);
    }
    int scheme_v = 0, port_v = 0, http_port = c->cfg->http_port, https_port = c->cfg->https_port;
    if (port[0] != '\0' && cfg_parse_port(port, &port_v) != 0)
        return cfg_errf(c, t, "%s: invalid port \"%s\"", t->text, port);
    if (port[0] == '\0')
        port_v = strcmp(scheme, "http") == 0 ? http_port : https_port;
    if (strcmp(scheme, "http") == 0)
        scheme_v = CFG_SCHEME_HTTP;
    else if (strcmp(scheme, "https") == 0)
        scheme_v = CFG_SCHEME_HTTPS;
    else if (port_v == http_port)
        scheme_v = CFG_SCHEME_HTTP;
    else if (port_v == https_port)
        scheme_v = CFG_SCHEME_HTTPS;
    else
        scheme_v = host[0] == '\0' ? CFG_SCHEME_HTTP : CFG_SCHEME_HTTPS;
    if ((scheme_v == CFG_SCHEME_HTTP && port_v == https_port && https_port != http_port) ||
        (scheme_v == CFG_SCHEME_HTTPS && port_v == http_port))
        return cfg_errf(c, t, "%s: scheme and port violate convention (%s on the %s port)", t->text,
                        scheme, scheme_v == CFG_SCHEME_HTTP ? "HTTPS" : "HTTP");
    out->scheme = scheme_v;
    out->host = cfg_lower_dup(c->a, host);
    out->port = port_v;
    out->line = t->line;
    return 0;
}

int cfg_parse_site(cfg_ctx_t *c, const cf_block_t *b, cfg_site_t *site)
{
    size_t acap = 0;
    int rc;
    site->file = b->file;
    site->line = b->line;
    for (size_t i = 0; i < b->n_keys; i++) {
        cfg_addr_t a;
        rc = parse_addr(c, &b->keys[i], &a);
        if (rc != 0)
            return rc;
        int dup = 0;
        for (size_t k = 0; k < site->n_addrs; k++)
            dup |= site->addrs[k].port == a.port && strcmp(site->addrs[k].host, a.host) == 0 &&
                   site->addrs[k].scheme == a.scheme;
        if (dup)
            continue;
        site->addrs = cfg_grow(c->a, site->addrs, site->n_addrs, &acap, sizeof(*site->addrs));
        site->addrs[site->n_addrs++] = a;
    }
    return cfg_parse_directives(c, b, site);
}

/* ---- listeners --------------------------------------------------------- */

static size_t host_specificity(const char *h)
{
    size_t n = strlen(h);
    for (const char *p = h; *p; p++)
        n -= *p == '*';
    return n;
}

/* The site's longest host on PORT and whether any is a wildcard or empty. */
static void site_hosts_on(const cfg_site_t *s, int port, size_t *longest, int *wild)
{
    *longest = 0;
    *wild = 0;
    for (size_t i = 0; i < s->n_addrs; i++) {
        if (s->addrs[i].port != port)
            continue;
        const char *h = s->addrs[i].host;
        if (h[0] == '\0' || strchr(h, '*') != NULL)
            *wild = 1;
        size_t sp = host_specificity(h);
        if (sp > *longest)
            *longest = sp;
    }
}

/* Caddy's server block order (httpcaddyfile serversFromPairings): longer
 * hosts first, wildcards after exact hosts, catch-alls last. */
static int site_less(const cfg_site_t *i, const cfg_site_t *j, int port)
{
    size_t il, jl;
    int iw, jw;
    site_hosts_on(i, port, &il, &iw);
    site_hosts_on(j, port, &jl, &jw);
    if (il == 0)
        return 0;
    if (jl == 0)
        return 1;
    if (iw != jw)
        return jw && !iw;
    return il > jl;
}

int cfg_build_listeners(cfg_ctx_t *c)
{
    cfg_t *cfg = c->cfg;
    size_t lcap = 0;
    for (size_t si = 0; si < cfg->n_sites; si++) {
        cfg_site_t *s = &cfg->sites[si];
        for (size_t ai = 0; ai < s->n_addrs; ai++) {
            const cfg_addr_t *a = &s->addrs[ai];
            cfg_listener_t *ln = NULL;
            for (size_t k = 0; k < cfg->n_listeners && ln == NULL; k++)
                if (cfg->listeners[k].port == a->port)
                    ln = &cfg->listeners[k];
            const cf_token_t at = {.file = s->file, .line = a->line};
            if (ln == NULL) {
                cfg->listeners = cfg_grow(c->a, cfg->listeners, cfg->n_listeners, &lcap,
                                          sizeof(*cfg->listeners));
                ln = &cfg->listeners[cfg->n_listeners++];
                memset(ln, 0, sizeof(*ln));
                ln->port = a->port;
                ln->scheme = a->scheme;
            }
            int present = 0;
            for (size_t k = 0; k < ln->n_sites; k++) {
                const cfg_site_t *o = ln->sites[k];
                present |= o == s;
                for (size_t m = 0; m < o->n_addrs; m++) {
                    const cfg_addr_t *oa = &o->addrs[m];
                    if (oa->port != a->port)
                        continue;
                    if (oa->scheme != a->scheme)
                        return cfg_errf(
                            c, &at,
                            "port %d serves %s (%s:%d) and %s here: one port cannot mix "
                            "http and https",
                            a->port, oa->scheme == CFG_SCHEME_HTTP ? "http" : "https", o->file,
                            oa->line, a->scheme == CFG_SCHEME_HTTP ? "http" : "https");
                    if (o != s && strcmp(oa->host, a->host) == 0)
                        return cfg_errf(
                            c, &at, "ambiguous site definition: %s:%d is also defined at %s:%d",
                            a->host[0] ? a->host : "(any host)", a->port, o->file, oa->line);
                }
            }
            if (!present) {
                /* a listener's site list only grows here: allocate exact */
                cfg_site_t **ns = arena_alloc(c->a, (ln->n_sites + 1) * sizeof(*ns));
                if (ln->n_sites > 0)
                    memcpy(ns, ln->sites, ln->n_sites * sizeof(*ns));
                ns[ln->n_sites++] = s;
                ln->sites = ns;
            }
        }
    }
    /* Caddy's automatic HTTPS: http_port redirects the HTTPS sites' hosts */
    int https_hosts = 0;
    for (size_t si = 0; si < cfg->n_sites; si++)
        for (size_t ai = 0; ai < cfg->sites[si].n_addrs; ai++)
            https_hosts |= cfg->sites[si].addrs[ai].scheme == CFG_SCHEME_HTTPS &&
                           cfg->sites[si].addrs[ai].host[0] != '\0';
    if (https_hosts && cfg->auto_https == CFG_AUTO_HTTPS_ON) {
        cfg_listener_t *ln = NULL;
        for (size_t k = 0; k < cfg->n_listeners && ln == NULL; k++)
            if (cfg->listeners[k].port == cfg->http_port)
                ln = &cfg->listeners[k];
        if (ln == NULL) {
            cfg->listeners =
                cfg_grow(c->a, cfg->listeners, cfg->n_listeners, &lcap, sizeof(*cfg->listeners));
            ln = &cfg->listeners[cfg->n_listeners++];
            memset(ln, 0, sizeof(*ln));
            ln->port = cfg->http_port;
            ln->scheme = CFG_SCHEME_HTTP;
        }
        ln->redirect_https = ln->scheme == CFG_SCHEME_HTTP;
        /* Caddy (autohttps.go) counts only the names it will manage: a name
         * with tls CERT KEY has its certificate loaded already. When none is
         * left, the sites on http_port keep their routes to themselves and
         * only the catch-all redirect comes after them. */
        int managed = 0;
        for (size_t si = 0; si < cfg->n_sites; si++)
            for (size_t ai = 0; ai < cfg->sites[si].n_addrs; ai++)
                managed |= cfg->sites[si].addrs[ai].scheme == CFG_SCHEME_HTTPS &&
                           cfg->sites[si].addrs[ai].host[0] != '\0' &&
                           cfg->sites[si].tls.cert_file == NULL;
        ln->redirect_hosts = ln->redirect_https && (managed || ln->n_sites == 0);
    }
    for (size_t k = 0; k < cfg->n_listeners; k++) {
        cfg_listener_t *ln = &cfg->listeners[k];
        for (size_t i = 1; i < ln->n_sites; i++) {
            for (size_t j = i; j > 0 && site_less(ln->sites[j], ln->sites[j - 1], ln->port); j--) {
                cfg_site_t *tmp = ln->sites[j];
                ln->sites[j] = ln->sites[j - 1];
                ln->sites[j - 1] = tmp;
            }
        }
    }
    return 0;
}

/* ---- certificates ------------------------------------------------------ */

static int has_suffix(const char *s, size_t len, const char *suf)
{
    size_t n = strlen(suf);
    return len >= n && memcmp(s + len - n, suf, n) == 0;
}

/* Why no ACME CA will issue for HOST (lower-case, no port), or NULL; *LOCAL
 * is set when Caddy would issue it from its local CA instead.
 * Caddy 2.6.2 (certmagic's SubjectQualifiesForPublicCert) never asks an
 * ACME CA for localhost, *.localhost, *.local or an IP address: it issues
 * them from its local CA, even when acme_ca is set, as `caddy adapt` shows
 * (an "internal" issuer policy). psproxy has no local CA yet (tls internal
 * will come with it), so it refuses them at load rather than place an
 * order that fails and leaves every handshake failing.
 * .internal, .home.arpa and single-label names Caddy 2.6.2 does order from
 * the ACME CA (later certmagic treats the first two as internal); no
 * public CA issues for them (the CA/Browser Forum's rules forbid internal
 * names), so they are refused unless acme_ca names a CA, which may be a
 * private one that does. */
static const char *acme_refusal(const cfg_t *cfg, const char *host, int *local)
{
    size_t len = strlen(host);
    if (len > 0 && host[len - 1] == '.')
        len--; /* a fully qualified name is the same name */
    unsigned char ip[16];
    char v4[INET_ADDRSTRLEN] = "";
    if (len < sizeof(v4))
        memcpy(v4, host, len);
    *local = 1;
    /* a ':' is in no DNS name: an IPv6 address (psproxy's ACME client asks
     * for dns identifiers only, so no CA would issue these either) */
    if (inet_pton(AF_INET, v4, ip) == 1 || memchr(host, ':', len) != NULL)
        return "no ACME certificate for an IP address";
    if ((len == 9 && memcmp(host, "localhost", 9) == 0) || has_suffix(host, len, ".localhost"))
        return "no ACME CA issues certificates for localhost names";
    if (has_suffix(host, len, ".local"))
        return "no ACME CA issues certificates for .local names (multicast DNS)";
    *local = 0;
    if (cfg->acme_ca != NULL)
        return NULL;
    if (has_suffix(host, len, ".internal") || has_suffix(host, len, ".home.arpa"))
        return "no public CA issues certificates for private-use names (.internal, .home.arpa)";
    if (memchr(host, '.', len) == NULL && memchr(host, '*', len) == NULL)
        return "no public CA issues certificates for single-label names";
    return NULL;
}

int cfg_check_certs(const cfg_t *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const cfg_site_t *site = &cfg->sites[i];
        if (site->tls.cert_file != NULL)
            continue; /* its own certificate; psproxy orders nothing for it */
        for (size_t a = 0; a < site->n_addrs; a++) {
            const cfg_addr_t *addr = &site->addrs[a];
            const char *why = NULL, *what = NULL;
            int local = 0, v6 = strchr(addr->host, ':') != NULL;
            if (addr->scheme != CFG_SCHEME_HTTPS)
                continue;
            if (site->tls.internal) {
                why = "tls internal is not supported by psproxy yet: use tls CERT_FILE KEY_FILE "
                      "or leave tls out for an ACME certificate";
            } else if (addr->host[0] == '\0') {
                why = "a site for any host name cannot get an ACME certificate: give it "
                      "tls CERT_FILE KEY_FILE";
            } else if ((what = acme_refusal(cfg, addr->host, &local)) != NULL) {
                /* where Caddy would use its local CA psproxy differs on
                 * purpose: it has none yet, so the site needs its own */
                snprintf(err, errlen,
                         "%s:%d: %s: %s%s: give the site tls CERT_FILE KEY_FILE%s, "
                         "or serve it as http://%s%s%s",
                         site->file, addr->line, addr->host, what,
                         local ? " (Caddy would use its local CA, which psproxy does not have "
                                 "yet)"
                               : "",
                         local ? "" : ", set acme_ca to a private CA that issues for it",
                         v6 ? "[" : "", addr->host, v6 ? "]" : "");
                return PS_ECONFIG;
            } else if (strchr(addr->host, '*') != NULL) {
                why = "wildcard names need the DNS-01 challenge, which psproxy does not "
                      "support: give the site tls CERT_FILE KEY_FILE";
            }
            if (why != NULL) {
                snprintf(err, errlen, "%s:%d: %s: %s", site->file, addr->line, addr->host, why);
                return PS_ECONFIG;
            }
        }
    }
    return 0;
}
