/* The handlers an exchange can run (handler.h) and the response filters
 * (filter.h), one file each, and the registration that makes them
 * reachable from routing. */
#ifndef PS_HANDLERS_H
#define PS_HANDLERS_H

#include "filter.h"
#include "handler.h"

extern const handler_ops_t proxy_handler;          /* proxy.c: reverse_proxy */
extern const handler_ops_t respond_handler;        /* respond.c: respond, the empty 200 */
extern const handler_ops_t redir_handler;          /* respond.c: redir */
extern const handler_ops_t acme_http01_handler;    /* autohttps.c */
extern const handler_ops_t https_redirect_handler; /* autohttps.c */
extern const filter_ops_t header_filter;           /* header.c: header */

/* Registers every handler and filter above under its id; once, at start. */
void handlers_init(void);

#endif
