/* Matchers: the path matcher token that may follow a directive's name,
 * address ranges (trusted_proxies), and matching paths, hosts and client
 * addresses at request time as Caddy does. */
#include "parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "common.h"

static int has_placeholder(const char *s)
{
    for (const char *p = strchr(s, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *q = p + 1;
        while (cfg_is_var_char(*q))
            q++;
        if (q > p + 1 && *q == '}')
            return 1;
    }
    return 0;
}

/* The matcher token after a directive name: "*" (all, stored as NULL), a
 * path starting with '/', or a named matcher, which psproxy rejects.
 * *ARGI is set to the index of the first argument after it. */
int cfg_take_matcher(cfg_ctx_t *c, const cf_line_t *l, const char **match, size_t *argi)
{
    *match = NULL;
    *argi = 1;
    if (l->n_toks < 2)
        return 0;
    const cf_token_t *t = &l->toks[1];
    if (t->text[0] == '@')
        return cfg_errf(c, t, "%s: named matchers are not supported by psproxy", cfg_line_name(l));
    if (strcmp(t->text, "*") == 0) {
        *argi = 2;
    } else if (t->text[0] == '/') {
        if (has_placeholder(t->text))
            return cfg_errf(c, t, "%s: placeholders in path matchers are not supported by psproxy",
                            cfg_line_name(l));
        *match = cfg_lower_dup(c->a, t->text);
        *argi = 2;
    }
    return 0;
}

int cfg_parse_cidr(const char *text, cfg_cidr_t *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t hl = slash != NULL ? (size_t)(slash - text) : strlen(text);
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(out, 0, sizeof(*out));
    int max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->bits = max;
    if (slash != NULL) {
        long v = 0;
        if (cfg_parse_uint(slash + 1, max, &v) != 0)
            return -1;
        out->bits = (int)v;
    }
    return 0;
}

int cfg_cidr_contains(const cfg_cidr_t *ranges, size_t n, const struct sockaddr *sa)
{
    unsigned char ip[16];
    int family;
    if (sa->sa_family == AF_INET) {
        memcpy(ip, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        const unsigned char *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, 12) == 0) {
            memcpy(ip, a6 + 12, 4);
            family = AF_INET;
        } else {
            memcpy(ip, a6, 16);
            family = AF_INET6;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const cfg_cidr_t *r = &ranges[i];
        if (r->family != family)
            continue;
        int bits = r->bits, k = 0;
        for (; bits >= 8; bits -= 8, k++)
            if (ip[k] != r->addr[k])
                break;
        if (bits >= 8)
            continue;
        unsigned char mask = (unsigned char)(0xff << (8 - bits));
        if (bits == 0 || (ip[k] & mask) == (r->addr[k] & mask))
            return 1;
    }
    return 0;
}

/* Go's path.Match on lower-cased text: '*' any run without '/', '?' one
 * byte but '/', [class] with ranges and '^' negation, '\' escapes. P and S
 * are bounded by their ends. */
static int glob_match(const char *p, const char *pe, const char *s, const char *se)
{
    const char *star_p = NULL, *star_s = NULL;
    while (s < se || p < pe) {
        if (p < pe && *p == '*') {
            star_p = ++p;
            star_s = s;
            continue;
        }
        if (p < pe && s < se) {
            char ch = (char)tolower((unsigned char)*s);
            if (*p == '?' && ch != '/') {
                p++;
                s++;
                continue;
            }
            if (*p == '[') {
                const char *q = p + 1;
                int neg = 0, ok = 0;
                if (q < pe && *q == '^') {
                    neg = 1;
                    q++;
                }
                int first = 1; /* Go takes a ']' right after '[' as a member */
                while (q < pe && (*q != ']' || first)) {
                    char lo = *q++, hi;
                    if (lo == '\\' && q < pe)
                        lo = *q++;
                    hi = lo;
                    if (q + 1 < pe && *q == '-' && q[1] != ']') {
                        q++;
                        hi = *q++;
                        if (hi == '\\' && q < pe)
                            hi = *q++;
                    }
                    lo = (char)tolower((unsigned char)lo);
                    hi = (char)tolower((unsigned char)hi);
                    if (ch >= lo && ch <= hi)
                        ok = 1;
                    first = 0;
                }
                if (q >= pe)
                    return 0; /* malformed: Go returns ErrBadPattern, no match */
                if (ok != neg && ch != '/') {
                    p = q + 1;
                    s++;
                    continue;
                }
            } else {
                char pc = *p;
                const char *np = p + 1;
                if (pc == '\\' && p + 1 < pe) {
                    pc = p[1];
                    np = p + 2;
                }
                if (pc != '?' || *p == '\\') {
                    if ((char)tolower((unsigned char)pc) == ch) {
                        p = np;
                        s++;
                        continue;
                    }
                }
            }
        }
        /* mismatch: let the last star eat one more byte, never a '/' */
        if (star_p != NULL && star_s < se && *star_s != '/') {
            star_s++;
            p = star_p;
            s = star_s;
            continue;
        }
        return 0;
    }
    return 1;
}

static int has_prefix_ci(const char *s, size_t len, const char *pre, size_t plen)
{
    return plen <= len && strncasecmp(s, pre, plen) == 0;
}

int cfg_match_path(const char *pattern, const char *path, size_t len)
{
    size_t pl = strlen(pattern);
    /* Caddy trims trailing dots and spaces (Windows ignores them when
     * opening files, see caddy#2917) */
    while (len > 0 && (path[len - 1] == '.' || path[len - 1] == ' '))
        len--;
    if (strcmp(pattern, "*") == 0)
        return 1;
    if (pl > 1 && pattern[0] == '*' && pattern[pl - 1] == '*') {
        size_t nl = pl - 2;
        if (nl == 0)
            return 1;
        for (size_t i = 0; i + nl <= len; i++)
            if (strncasecmp(path + i, pattern + 1, nl) == 0)
                return 1;
        return 0;
    }
    if (pattern[0] == '*')
        return pl - 1 <= len && strncasecmp(path + len - (pl - 1), pattern + 1, pl - 1) == 0;
    if (pl > 0 && pattern[pl - 1] == '*')
        return has_prefix_ci(path, len, pattern, pl - 1);
    return glob_match(pattern, pattern + pl, path, path + len);
}

int cfg_match_host(const char *pattern, const char *host, size_t len)
{
    if (pattern[0] == '\0')
        return 1;
    if (strchr(pattern, '*') == NULL)
        return strlen(pattern) == len && strncasecmp(pattern, host, len) == 0;
    /* label by label: "*" stands for exactly one label */
    const char *p = pattern, *h = host, *he = host + len;
    for (;;) {
        const char *pd = strchr(p, '.');
        size_t pl = pd ? (size_t)(pd - p) : strlen(p);
        const char *hd = memchr(h, '.', (size_t)(he - h));
        size_t hl = hd ? (size_t)(hd - h) : (size_t)(he - h);
        if (!(pl == 1 && p[0] == '*') && (pl != hl || strncasecmp(p, h, pl) != 0))
            return 0;
        if ((pd == NULL) != (hd == NULL))
            return 0;
        if (pd == NULL)
            return 1;
        p = pd + 1;
        h = hd + 1;
    }
}
