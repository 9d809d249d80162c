/* The service: the workers and what they share, run from the control
 * loop (start, SIGHUP reload, stop) with the control loop's own services:
 * active health checks and the ACME client. */
#ifndef PS_SERVICE_H
#define PS_SERVICE_H

#include <uv.h>

#include "access_log.h"
#include "certs.h"
#include "config.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

typedef struct srv {
    cfg_t *cfg;
    alog_t alog;
    certs_t *certs;
    tls_server_t *tls;
    struct acme *acme; /* NULL when no name is managed */
    struct health *health; /* active checks; NULL when none */
    void (*on_fatal)(void *arg, const char *why); /* the ACME setup cannot work: stop */
    void *fatal_arg;
    up_targets_t *targets;
    worker_t *workers;
    int n_workers;
} srv_t;

/* Binds every listener of CFG in every worker and starts the worker
 * threads. Returns 0, or an error after logging what could not be bound. */
int srv_start(srv_t *s, cfg_t *cfg);

/* SIGHUP: loads PATH again; a bad config is logged with file:line and the
 * running one stays. A good one is swapped in: new connections get it,
 * connections already open finish on theirs, unchanged listeners stay
 * open. Returns 0 when the new config serves, else why it does not
 * (cfg_load's PS_ECONFIG, a certificate's or a log file's code). */
int srv_reload(srv_t *s, const char *path, uv_loop_t *loop);

/* Loads the manual certificates (tls CERT KEY) of CFG's HTTPS sites into
 * the store. Returns 0, or after logging every one that failed, the first
 * failure (PS_ECONFIG for a site ACME cannot serve, certs_entry_load's
 * code for a file): at start that stops psproxy; on SIGHUP the
 * certificates already served stay. */
int srv_load_certs(srv_t *s, const cfg_t *cfg);

/* Starts the control loop's services on LOOP: active health checks, and the
 * ACME client for the HTTPS names without a manual certificate. 0, or
 * PS_ECONFIG after logging why the ACME client cannot run. */
int srv_start_control(srv_t *s, uv_loop_t *loop);
/* The ACME settings of CFG, and the names ACME manages (HTTPS hosts of
 * sites without tls CERT KEY), at most MAX. */
struct acme_config;
void srv_acme_config(const cfg_t *cfg, struct acme_config *ac);
size_t srv_managed_names(const cfg_t *cfg, const char **names, size_t max);

/* Stops it; its handles close on LOOP. */
void srv_stop_control(srv_t *s);

/* Stops every worker (closing listeners and connections) and joins them. */
void srv_stop(srv_t *s);

#endif
