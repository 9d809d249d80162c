/* The `header` directive as a response filter: its field operations join
 * the head being built. */
#include "handlers.h"

static int header_head(const filter_t *f, filter_head_t *h)
{
    if (h->n_ops == FILTER_MAX_OPS)
        return -1;
    h->ops[h->n_ops++] = f->conf;
    return 0;
}

const filter_ops_t header_filter = {
    .name = "header",
    .head = header_head,
};
