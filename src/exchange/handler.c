/* The handler registry: filled once at start, read by every worker. */
#include "handler.h"

#include <assert.h>
#include <stddef.h>

static const handler_ops_t *registry[HANDLER_COUNT];

void handler_register(int id, const handler_ops_t *ops)
{
    assert(id > HANDLER_NONE && id < HANDLER_COUNT && ops != NULL && ops->start != NULL);
    registry[id] = ops;
    if (ops->init != NULL)
        ops->init();
}

const handler_ops_t *handler_of(int id)
{
    return id > HANDLER_NONE && id < HANDLER_COUNT ? registry[id] : NULL;
}
