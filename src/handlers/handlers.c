/* Which handler and which filter serve which routing id. */
#include "handlers.h"

void handlers_init(void)
{
    handler_register(HANDLER_REVERSE_PROXY, &proxy_handler);
    handler_register(HANDLER_RESPOND, &respond_handler);
    handler_register(HANDLER_REDIR, &redir_handler);
    handler_register(HANDLER_ACME_HTTP01, &acme_http01_handler);
    handler_register(HANDLER_HTTPS_REDIRECT, &https_redirect_handler);
    filter_register(FILTER_HEADER, &header_filter);
}
