/* The filter registry and the chain runner. See filter.h. */
#include "filter.h"

#include <assert.h>
#include <stddef.h>

static const filter_ops_t *registry[FILTER_COUNT];

void filter_register(int id, const filter_ops_t *ops)
{
    assert(id > FILTER_NONE && id < FILTER_COUNT && ops != NULL && ops->head != NULL);
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
    for (unsigned i = 0; i < n; i++) {
        const filter_ops_t *ops = filter_of(filter_id_of(chain[i]->kind));
        if (ops == NULL || ops->head(chain[i], h) < 0)
            return -1;
    }
    return 0;
}
