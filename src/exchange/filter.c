/* The filter registry and the chain runners. See filter.h. */
#include "filter.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const filter_ops_t *registry[FILTER_COUNT];

struct filter_body {
    unsigned n;
    const filter_ops_t *ops[FILTER_MAX_BODY];
    void *state[FILTER_MAX_BODY];
};

void filter_register(int id, const filter_ops_t *ops)
{
    assert(id > FILTER_NONE && id < FILTER_COUNT && ops != NULL && ops->head != NULL);
    /* a filter has all three body hooks or none */
    assert((ops->body == NULL) == (ops->body_open == NULL) &&
           (ops->body == NULL) == (ops->body_close == NULL));
    registry[id] = ops;
}

const filter_ops_t *filter_of(int id)
{
    return id > FILTER_NONE && id < FILTER_COUNT ? registry[id] : NULL;
}

int filter_id_of(int kind)
{
    return kind == CFG_H_HEADER ? FILTER_HEADER : FILTER_NONE;
}

int filter_head(const cfg_handler_t *const *chain, unsigned n, filter_head_t *h)
{
    h->n_ops = 0;
    h->n_body = 0;
    for (unsigned i = 0; i < n; i++) {
        const filter_ops_t *ops = filter_of(filter_id_of(chain[i]->kind));
        if (ops == NULL || ops->head(chain[i], h) < 0)
            return -1;
    }
    return 0;
}

int filter_head_claim_body(filter_head_t *h, const filter_ops_t *ops, const cfg_handler_t *row)
{
    assert(ops->body != NULL);
    if (h->n_body == FILTER_MAX_BODY)
        return -1;
    h->body_ops[h->n_body] = ops;
    h->body_rows[h->n_body] = row;
    h->n_body++;
    return 0;
}

int filter_body_open(const filter_head_t *h, filter_body_t **out)
{
    *out = NULL;
    if (h->n_body == 0)
        return 0;
    filter_body_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -1;
    for (unsigned i = 0; i < h->n_body; i++) {
        b->state[i] = h->body_ops[i]->body_open(h->body_rows[i]);
        if (b->state[i] == NULL) {
            filter_body_close(b);
            return -1;
        }
        b->ops[i] = h->body_ops[i];
        b->n = i + 1;
    }
    *out = b;
    return 0;
}

int filter_body_run(filter_body_t *b, const uv_buf_t *in, unsigned n_in, int last, uv_buf_t *out)
{
    /* two stage buffers in turn: filter i reads one and writes the other */
    uv_buf_t stage[2][FILTER_BODY_IOV];
    const uv_buf_t *cur = in;
    int n = (int)n_in;
    assert(b->n > 0); /* filter_body_open makes none without a filter */
    for (unsigned i = 0; i < b->n; i++) {
        uv_buf_t *next = i + 1 == b->n ? out : stage[i % 2];
        n = b->ops[i]->body(b->state[i], cur, (unsigned)n, last, next);
        if (n < 0)
            return -1;
        assert(n <= FILTER_BODY_IOV);
        cur = next;
    }
    return n;
}

int filter_body_whole(const filter_head_t *h, const char *in, size_t len, char *out, size_t cap,
                      size_t *out_len)
{
    filter_body_t *b;
    if (filter_body_open(h, &b) < 0)
        return -1;
    uv_buf_t whole = uv_buf_init((char *)in, (unsigned)len), got[FILTER_BODY_IOV];
    int k = filter_body_run(b, &whole, 1, 1, got);
    size_t n = 0;
    for (int i = 0; i < k; i++) {
        if (got[i].len > cap - n) {
            k = -1;
            break;
        }
        memcpy(out + n, got[i].base, got[i].len);
        n += got[i].len;
    }
    filter_body_close(b);
    *out_len = n;
    return k < 0 ? -1 : 0;
}

void filter_body_close(filter_body_t *b)
{
    if (b == NULL)
        return;
    for (unsigned i = 0; i < b->n; i++)
        b->ops[i]->body_close(b->state[i]);
    free(b);
}
