/* The admin listener (`admin ADDR`, default localhost:2019 as Caddy;
 * `admin off`) on the control loop: GET /metrics (Prometheus text), GET
 * /healthz, POST /reload. Loopback only unless ADDR says otherwise. */
#ifndef PS_ADMIN_H
#define PS_ADMIN_H

#include <uv.h>

#include "service.h"

typedef struct admin admin_t;

/* Listens on ADDR ("host:port", host "localhost" or empty = 127.0.0.1).
 * CONFIG_PATH is what POST /reload loads. NULL with the reason in ERR. */
admin_t *admin_start(uv_loop_t *loop, srv_t *s, const char *addr, const char *config_path,
                     char *err, size_t errlen);
void admin_stop(admin_t *a);

/* The address psproxy's admin listener has for CFG: 0 and "host", port, or
 * -1 when admin is off. Used by `psproxy reload`. */
int admin_address(const char *addr, char *host, size_t hostlen, int *port);

#endif
