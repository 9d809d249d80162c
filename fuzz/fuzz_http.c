/* The HTTP fuzzers' shared config and byte sink (see fuzz_http.h). */
#include "fuzz_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One site with every kind of header op, both directions, and a trusted
 * range, so the rewrite paths all run. */
static const char FUZZ_CONFIG[] =
    "{\n"
    "\tadmin off\n"
    "\tauto_https off\n"
    "}\n"
    "http://example.com:8080 {\n"
    "\theader X-Frame-Options DENY\n"
    "\theader -Server\n"
    "\theader ?Cache-Control no-store\n"
    "\theader +Set-Cookie \"seen={path}\"\n"
    "\treverse_proxy 127.0.0.1:9000 {\n"
    "\t\theader_up Host {upstream_hostport}\n"
    "\t\theader_up X-Real-IP {remote_host}\n"
    "\t\theader_up +X-Via \"psproxy {method} {uri}\"\n"
    "\t\theader_up -X-Secret*\n"
    "\t\theader_up ?X-Default \"{path}?{query} {scheme} {hostport}\"\n"
    "\t\theader_down -Server\n"
    "\t\theader_down +X-Upstream {upstream_hostport}\n"
    "\t\theader_down ?Cache-Control max-age=60\n"
    "\t\ttrusted_proxies 10.0.0.0/8\n"
    "\t}\n"
    "}\n";

static cfg_t *cfg;

const cfg_t *fuzz_cfg(void)
{
    if (cfg != NULL)
        return cfg;
    char err[512];
    if (cfg_parse("fuzz.conf", FUZZ_CONFIG, sizeof(FUZZ_CONFIG) - 1, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz: the built-in config does not parse: %s\n", err);
        abort();
    }
    return cfg;
}

static const cfg_handler_t *find_handler(int kind)
{
    const cfg_site_t *s = &fuzz_cfg()->sites[0];
    for (size_t i = 0; i < s->n_handlers; i++)
        if (s->handlers[i].kind == kind)
            return &s->handlers[i];
    fprintf(stderr, "fuzz: the built-in config lacks handler kind %d\n", kind);
    abort();
}

const cfg_proxy_t *fuzz_proxy(void)
{
    return &find_handler(CFG_H_PROXY)->u.proxy;
}

const cfg_hdr_ops_t *fuzz_site_header_ops(void)
{
    return &find_handler(CFG_H_HEADER)->u.header;
}

void fuzz_sink_put(fuzz_sink_t *s, const void *data, size_t len)
{
    if (s->cap - s->len < len) {
        size_t cap = s->cap > 0 ? s->cap : 4096;
        while (cap - s->len < len)
            cap *= 2;
        s->p = realloc(s->p, cap);
        if (s->p == NULL)
            abort();
        s->cap = cap;
    }
    if (len > 0)
        memcpy(s->p + s->len, data, len);
    s->len += len;
}

void fuzz_sink_free(fuzz_sink_t *s)
{
    free(s->p);
    memset(s, 0, sizeof(*s));
}

void fuzz_put_body(fuzz_sink_t *s, int framing, const char *body, size_t len)
{
    char line[HTTP_CHUNK_LINE_MAX];
    if (framing == HTTP_BODY_NONE)
        return;
    if (framing == HTTP_BODY_CHUNKED)
        fuzz_sink_put(s, line, http_chunk_line(line, len));
    fuzz_sink_put(s, body, len);
    if (framing == HTTP_BODY_CHUNKED)
        fuzz_sink_put(s, "\r\n", 2);
}

void fuzz_put_end(fuzz_sink_t *s, int framing)
{
    if (framing == HTTP_BODY_CHUNKED)
        fuzz_sink_put(s, HTTP_LAST_CHUNK, sizeof(HTTP_LAST_CHUNK) - 1);
}

void fuzz_fail_bytes(const char *msg, const char *p, size_t len)
{
    fprintf(stderr, "fuzz: the bytes: \"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n')
            fprintf(stderr, "\\n\"\n  \"");
        else if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fprintf(stderr, "\"\n");
    fuzz_fail(msg);
}

void fuzz_fail(const char *msg)
{
    fprintf(stderr, "fuzz: invariant broken: %s\n", msg);
    abort();
}
