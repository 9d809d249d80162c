/* The `header` directive as a response filter: its field operations join
 * the head being built. */
#include "handlers.h"

static int header_head(const cfg_handler_t *row, filter_head_t *h)
{
    if (h->n_ops == FILTER_MAX_OPS)
        return -1;
    h->ops[h->n_ops++] = &row->u.header;
    return 0;
}

const filter_ops_t header_filter = {
    .name = "header",
    .head = header_head,
};
