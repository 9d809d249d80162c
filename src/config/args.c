/* Argument helpers shared by the files of src/config/: errors naming
 * file:line, durations, sizes, ports, numbers, one-argument lines, and
 * strings with placeholders compiled into templates. */
#include "parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int cfg_errf(cfg_ctx_t *c, const cf_token_t *t, const char *fmt, ...)
{
    if (c->errlen > 0) {
        int n = snprintf(c->err, c->errlen, "%s:%d: ", t->file, t->line);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return PS_ECONFIG;
}

void *cfg_grow(arena_t *a, void *v, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return v;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *nv = arena_alloc(a, ncap * size);
    if (n > 0)
        memcpy(nv, v, n * size);
    *cap = ncap;
    return nv;
}

char *cfg_lower_dup(arena_t *a, const char *s)
{
    char *r = arena_strdup(a, s);
    for (char *q = r; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return r;
}

/* ---- values ------------------------------------------------------------ */

/* Go's time.ParseDuration plus Caddy's "d" (24h) suffix, in milliseconds
 * rounded up so that "500us" is not "no timeout". Negative durations and
 * bare numbers (Go: "missing unit") are errors; "0" alone is zero. */
int cfg_parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ns;
    } units[] = {
        {"ns", 1ull},           {"us", 1000ull},         {"\xc2\xb5s", 1000ull},
        {"\xce\xbcs", 1000ull}, {"ms", 1000000ull},      {"s", 1000000000ull},
        {"m", 60000000000ull},  {"h", 3600000000000ull}, {"d", 86400000000000ull},
    };
    const uint64_t max = UINT64_MAX / 2;
    uint64_t total = 0;

    if (*s == '+')
        s++;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (*s == '\0')
        return -1;
    while (*s) {
        uint64_t v = 0, f = 0, scale = 1;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (v > (max - 9) / 10)
                return -1;
            v = v * 10 + (uint64_t)(*s++ - '0');
            digits++;
        }
        if (*s == '.') {
            s++;
            while (*s >= '0' && *s <= '9') {
                if (scale < 1000000000000000000ull) { /* further digits cannot matter */
                    f = f * 10 + (uint64_t)(*s - '0');
                    scale *= 10;
                }
                s++;
                digits++;
            }
        }
        if (digits == 0)
            return -1;
        size_t ulen = 0, best = 0;
        uint64_t unit = 0;
        for (size_t i = 0; i < PS_ARRAY_SIZE(units); i++) {
            size_t l = strlen(units[i].unit);
            if (l > best && strncmp(s, units[i].unit, l) == 0) {
                best = l;
                unit = units[i].ns;
            }
        }
        ulen = best;
        if (ulen == 0)
            return -1;
        s += ulen;
        if (v > max / unit)
            return -1;
        uint64_t part = v * unit;
        /* f/scale < 1, and unit <= 8.64e13 with scale <= 1e18: use long
         * double for the fraction only */
        part += (uint64_t)((long double)f * (long double)unit / (long double)scale);
        if (part > max - total)
            return -1;
        total += part;
    }
    *ms = (total + 999999) / 1000000;
    return 0;
}

/* go-humanize ParseBytes, which Caddy uses for sizes: "16KB" is 16000,
 * "16KiB" 16384, case-insensitive, a fraction allowed, plain bytes. */
int cfg_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        long double mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1e3},
        {"kb", 1e3},
        {"ki", 1024.0L},
        {"kib", 1024.0L},
        {"m", 1e6},
        {"mb", 1e6},
        {"mi", 1048576.0L},
        {"mib", 1048576.0L},
        {"g", 1e9},
        {"gb", 1e9},
        {"gi", 1073741824.0L},
        {"gib", 1073741824.0L},
        {"t", 1e12},
        {"tb", 1e12},
        {"ti", 1099511627776.0L},
        {"tib", 1099511627776.0L},
    };
    char num[64];
    size_t n = 0;
    const char *p = s;
    while ((isdigit((unsigned char)*p) || *p == '.' || *p == ',') && n + 1 < sizeof(num)) {
        if (*p != ',')
            num[n++] = *p;
        p++;
    }
    num[n] = '\0';
    if (n == 0 || strcmp(num, ".") == 0)
        return -1;
    char *end;
    errno = 0;
    long double f = strtold(num, &end);
    if (*end != '\0' || errno != 0)
        return -1;
    while (*p == ' ')
        p++;
    char unit[8];
    size_t ul = strlen(p);
    while (ul > 0 && p[ul - 1] == ' ')
        ul--;
    if (ul >= sizeof(unit))
        return -1;
    for (size_t i = 0; i < ul; i++)
        unit[i] = (char)tolower((unsigned char)p[i]);
    unit[ul] = '\0';
    for (size_t i = 0; i < PS_ARRAY_SIZE(units); i++) {
        if (strcmp(unit, units[i].unit) == 0) {
            long double v = f * units[i].mult;
            if (v >= 18446744073709551615.0L)
                return -1;
            *out = (uint64_t)v;
            return 0;
        }
    }
    return -1;
}

int cfg_parse_port(const char *s, int *port)
{
    long v = 0;
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int cfg_parse_uint(const char *s, long max, long *out)
{
    long v = 0;
    if (*s == '\0')
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (max - (*p - '0')) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

/* ---- lines ------------------------------------------------------------- */

/* Requires MIN..MAX arguments after the name and, unless BLOCK_OK, no
 * block. WHAT prefixes the message ("servers: timeouts"). */
int cfg_want_args(cfg_ctx_t *c, const cf_line_t *l, const char *what, size_t min, size_t max,
                  int block_ok)
{
    size_t n = l->n_toks - 1;
    if (n < min) {
        if (n == 0 && min == 1)
            return cfg_errf(c, &l->toks[0], "%s: expected an argument", what);
        return cfg_errf(c, &l->toks[0], "%s: expected %s%zu arguments, got %zu", what,
                        min == max ? "" : "at least ", min, n);
    }
    if (n > max)
        return cfg_errf(c, &l->toks[max + 1], "%s: unexpected argument \"%s\"", what,
                        l->toks[max + 1].text);
    if (!block_ok && l->open != NULL)
        return cfg_errf(c, l->open, "%s: unexpected block", what);
    return 0;
}

int cfg_arg_duration(cfg_ctx_t *c, const cf_line_t *l, const char *what, uint64_t *ms)
{
    int rc = cfg_want_args(c, l, what, 1, 1, 0);
    if (rc != 0)
        return rc;
    if (cfg_parse_duration(l->toks[1].text, ms) != 0)
        return cfg_errf(c, &l->toks[1], "%s: expected a duration like 30s or 1m30s, got \"%s\"",
                        what, l->toks[1].text);
    return 0;
}

int cfg_arg_port(cfg_ctx_t *c, const cf_line_t *l, const char *what, int *port)
{
    int rc = cfg_want_args(c, l, what, 1, 1, 0);
    if (rc == 0 && cfg_parse_port(l->toks[1].text, port) != 0)
        rc = cfg_errf(c, &l->toks[1], "%s: expected a port number, got \"%s\"", what,
                      l->toks[1].text);
    return rc;
}

int cfg_arg_string(cfg_ctx_t *c, const cf_line_t *l, const char *what, const char **out)
{
    int rc = cfg_want_args(c, l, what, 1, 1, 0);
    if (rc != 0)
        return rc;
    *out = arena_strdup(c->a, l->toks[1].text);
    return 0;
}

/* ---- placeholders ------------------------------------------------------ */

static const struct {
    const char *shortname;
    const char *longname;
    int var;
} vars[] = {
    {"host", "http.request.host", CFG_VAR_HOST},
    {"hostport", "http.request.hostport", CFG_VAR_HOSTPORT},
    {"uri", "http.request.uri", CFG_VAR_URI},
    {"path", "http.request.uri.path", CFG_VAR_PATH},
    {"query", "http.request.uri.query", CFG_VAR_QUERY},
    {"method", "http.request.method", CFG_VAR_METHOD},
    {"scheme", "http.request.scheme", CFG_VAR_SCHEME},
    {"remote_host", "http.request.remote.host", CFG_VAR_REMOTE_HOST},
    {"remote_port", "http.request.remote.port", CFG_VAR_REMOTE_PORT},
    {"upstream_hostport", "http.reverse_proxy.upstream.hostport", CFG_VAR_UPSTREAM_HOSTPORT},
};

int cfg_is_var_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '-';
}

const char *cfg_var_name(int var)
{
    for (size_t i = 0; i < PS_ARRAY_SIZE(vars); i++)
        if (vars[i].var == var)
            return vars[i].longname;
    return "";
}

static void tmpl_add(cfg_ctx_t *c, cfg_tmpl_t *t, size_t *cap, int var, const char *lit, size_t len)
{
    t->parts = cfg_grow(c->a, t->parts, t->n_parts, cap, sizeof(*t->parts));
    t->parts[t->n_parts++] = (cfg_tmpl_part_t){
        .var = var,
        .lit = lit ? arena_strndup(c->a, lit, len) : NULL,
        .len = lit ? len : 0,
    };
}

/* Compiles S into literal parts and placeholders. "{name}" with name made
 * of [A-Za-z0-9_.-] is a placeholder and must be one psproxy knows; other
 * braces (a JSON body) are text, as Caddy leaves them; \{ and \} are
 * literal braces. */
int cfg_tmpl_compile(cfg_ctx_t *c, const cf_token_t *t, const char *what, const char *s,
                     cfg_tmpl_t *out)
{
    size_t cap = 0, litcap = 0, litn = 0;
    char *lit = NULL;
    memset(out, 0, sizeof(*out));
    out->raw = arena_strdup(c->a, s);
    for (const char *p = s; *p;) {
        if (p[0] == '\\' && (p[1] == '{' || p[1] == '}')) {
            lit = cfg_grow(c->a, lit, litn, &litcap, 1);
            lit[litn++] = p[1];
            p += 2;
            continue;
        }
        if (p[0] == '{') {
            const char *q = p + 1;
            while (cfg_is_var_char(*q))
                q++;
            if (q > p + 1 && *q == '}') {
                size_t nl = (size_t)(q - p - 1);
                int var = 0;
                for (size_t i = 0; i < PS_ARRAY_SIZE(vars) && var == 0; i++) {
                    if ((strlen(vars[i].shortname) == nl &&
                         memcmp(vars[i].shortname, p + 1, nl) == 0) ||
                        (strlen(vars[i].longname) == nl &&
                         memcmp(vars[i].longname, p + 1, nl) == 0))
                        var = vars[i].var;
                }
                if (var == 0)
                    return cfg_errf(c, t, "%s: unknown placeholder {%.*s}", what, (int)nl, p + 1);
                if (litn > 0)
                    tmpl_add(c, out, &cap, CFG_VAR_NONE, lit, litn);
                litn = 0;
                tmpl_add(c, out, &cap, var, NULL, 0);
                p = q + 1;
                continue;
            }
        }
        lit = cfg_grow(c->a, lit, litn, &litcap, 1);
        lit[litn++] = *p++;
    }
    if (litn > 0)
        tmpl_add(c, out, &cap, CFG_VAR_NONE, lit, litn);
    return 0;
}
