/* JSON syntax check (RFC 8259 grammar), iterative so that deep nesting
 * costs a byte per level instead of a stack frame. */
#include "json.h"

#include <string.h>

static void skip_ws(const char *s, size_t len, size_t *i)
{
    while (*i < len && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' || s[*i] == '\r'))
        (*i)++;
}

static int is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static int is_hex(char ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A string starting at s[*i] == '"'; *i ends past its closing quote. */
static int scan_string(const char *s, size_t len, size_t *i)
{
    size_t k = *i + 1;
    while (k < len) {
        unsigned char ch = (unsigned char)s[k];
        if (ch == '"') {
            *i = k + 1;
            return 1;
        }
        if (ch < 0x20)
            return 0; /* control characters must be escaped */
        if (ch == '\\') {
            if (k + 1 >= len)
                return 0;
            char e = s[k + 1];
            if (e == 'u') {
                if (k + 6 > len)
                    return 0;
                for (size_t h = k + 2; h < k + 6; h++)
                    if (!is_hex(s[h]))
                        return 0;
                k += 6;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
                return 0;
            k += 2;
            continue;
        }
        k++;
    }
    return 0;
}

/* -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)? */
static int scan_number(const char *s, size_t len, size_t *i)
{
    size_t k = *i;
    if (k < len && s[k] == '-')
        k++;
    if (k < len && s[k] == '0') {
        k++;
    } else if (k < len && is_digit(s[k])) {
        while (k < len && is_digit(s[k]))
            k++;
    } else {
        return 0;
    }
    if (k < len && s[k] == '.') {
        k++;
        if (k >= len || !is_digit(s[k]))
            return 0;
        while (k < len && is_digit(s[k]))
            k++;
    }
    if (k < len && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < len && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= len || !is_digit(s[k]))
            return 0;
        while (k < len && is_digit(s[k]))
            k++;
    }
    *i = k;
    return 1;
}

static int scan_word(const char *s, size_t len, size_t *i, const char *w)
{
    size_t n = strlen(w);
    if (len - *i < n || memcmp(s + *i, w, n) != 0)
        return 0;
    *i += n;
    return 1;
}

static int scan_scalar(const char *s, size_t len, size_t *i)
{
    char ch = s[*i];
    if (ch == '"')
        return scan_string(s, len, i);
    if (ch == '-' || is_digit(ch))
        return scan_number(s, len, i);
    return scan_word(s, len, i, "true") || scan_word(s, len, i, "false") ||
           scan_word(s, len, i, "null");
}

/* An object member's name and its colon: ws string ws ':' */
static int scan_key(const char *s, size_t len, size_t *i)
{
    skip_ws(s, len, i);
    if (*i >= len || s[*i] != '"' || !scan_string(s, len, i))
        return 0;
    skip_ws(s, len, i);
    if (*i >= len || s[*i] != ':')
        return 0;
    (*i)++;
    return 1;
}

int json_valid(const char *s, size_t len)
{
    unsigned char open[JSON_MAX_DEPTH]; /* '{' or '[' for each container we are in */
    size_t depth = 0, i = 0;
    for (;;) {
        /* here a value starts */
        skip_ws(s, len, &i);
        if (i >= len)
            return 0;
        char ch = s[i];
        if (ch == '{' || ch == '[') {
            if (depth == JSON_MAX_DEPTH)
                return 0;
            open[depth++] = (unsigned char)ch;
            i++;
            skip_ws(s, len, &i);
            if (i < len && s[i] == (ch == '{' ? '}' : ']')) {
                i++;
                depth--; /* empty: a value has ended */
            } else {
                if (ch == '{' && !scan_key(s, len, &i))
                    return 0;
                continue;
            }
        } else if (!scan_scalar(s, len, &i)) {
            return 0;
        }
        /* a value has ended: close what it ends, or go on to the next one */
        for (;;) {
            skip_ws(s, len, &i);
            if (depth == 0)
                return i == len;
            if (i >= len)
                return 0;
            char close = open[depth - 1] == '{' ? '}' : ']';
            if (s[i] == close) {
                i++;
                depth--;
                continue;
            }
            if (s[i] != ',')
                return 0;
            i++;
            if (open[depth - 1] == '{' && !scan_key(s, len, &i))
                return 0;
            break;
        }
    }
}
