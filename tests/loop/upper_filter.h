/* A body filter for the loop tests, since no directive has one yet: it
 * stands in for `header` (whose field operations it still applies) and
 * claims every response body. It upper-cases the body, hands it on one
 * byte behind (the last byte it got waits for the next call), and ends it
 * with "|END": so its output differs in length from its input, it holds
 * bytes back across calls and hands on nothing at all for a one-byte
 * call. A body holding '!' makes it fail. It counts what the pipeline does
 * with it. Include it once per test program, after lt_start (which
 * registers the real filters) call upper_filter_install(). */
#ifndef PS_UPPER_FILTER_H
#define PS_UPPER_FILTER_H

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "handlers.h"

#define UPPER_MAX 65536

typedef struct upper {
    char carry;
    int has_carry;
    char out[UPPER_MAX + 8];
} upper_t;

static struct {
    int opens, closes, calls;
    int refuse_open; /* body_open fails */
} upper_seen;

static void *upper_open(const cfg_handler_t *row)
{
    (void)row;
    if (upper_seen.refuse_open)
        return NULL;
    upper_seen.opens++;
    return calloc(1, sizeof(upper_t));
}

static int upper_body(void *state, const uv_buf_t *in, unsigned n_in, int last, uv_buf_t *out)
{
    upper_t *u = state;
    size_t n = 0;
    upper_seen.calls++;
    if (u->has_carry)
        u->out[n++] = u->carry;
    for (unsigned i = 0; i < n_in; i++) {
        if (in[i].len > UPPER_MAX - n || memchr(in[i].base, '!', in[i].len) != NULL)
            return -1;
        for (size_t k = 0; k < in[i].len; k++)
            u->out[n++] = (char)toupper((unsigned char)in[i].base[k]);
    }
    u->has_carry = 0;
    if (last) {
        memcpy(u->out + n, "|END", 4);
        n += 4;
    } else if (n > 0) {
        u->carry = u->out[--n];
        u->has_carry = 1;
    }
    if (n == 0)
        return 0;
    out[0] = uv_buf_init(u->out, (unsigned)n);
    return 1;
}

static void upper_close(void *state)
{
    upper_seen.closes++;
    free(state);
}

static int upper_head(const cfg_handler_t *row, filter_head_t *h);

static const filter_ops_t upper_filter = {
    .name = "upper",
    .head = upper_head,
    .body_open = upper_open,
    .body = upper_body,
    .body_close = upper_close,
};

static int upper_head(const cfg_handler_t *row, filter_head_t *h)
{
    if (header_filter.head(row, h) < 0)
        return -1;
    return filter_head_claim_body(h, &upper_filter, row);
}

static void upper_filter_install(void)
{
    memset(&upper_seen, 0, sizeof(upper_seen));
    filter_register(FILTER_HEADER, &upper_filter);
}

#endif
