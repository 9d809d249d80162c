/* The filter registry and the chain runner. See filter.h. */
#include "filter.h"

#include <assert.h>
#include <string.h>

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

int filter_head(const filter_t *chain, unsigned n, filter_head_t *h)
{
    memset(h, 0, sizeof(*h));
    for (unsigned i = 0; i < n; i++)
        if (chain[i].ops->head(&chain[i], h) < 0)
            return -1;
    return 0;
}
