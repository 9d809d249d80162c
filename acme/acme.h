/* The ACME client (RFC 8555): obtains certificates for the managed names,
 * keeps them in storage, serves them through the certificate store, and
 * renews them on timers. Runs on the control loop; never blocks it. */
#ifndef PS_ACME_H
#define PS_ACME_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "certs.h"

#define ACME_LETSENCRYPT "https://acme-v02.api.letsencrypt.org/directory"

enum acme_challenge {
    ACME_HTTP_01 = 1,
    ACME_TLS_ALPN_01 = 2,
};

typedef struct acme_config {
    const char *directory; /* the CA's directory URL */
    const char *ca_root;   /* PEM file the CA's HTTPS is checked against; NULL: system */
    const char *email;     /* account contact; may be NULL */
    const char *storage;   /* storage root (with shared_dsn: the local cache) */
    const char *shared_dsn; /* storage postgres: the database shared with other instances */
    const char *shared_key_file; /* ... and the key sealing private keys in it */
    int challenges;        /* enum acme_challenge bits; 0 = both */
    const char *profile;   /* the CA's certificate profile (meta.profiles); NULL: the CA's default */
    /* called (from the loop, never inside an acme call) when the setup cannot
     * work at all, e.g. the CA does not offer PROFILE: psproxy should stop */
    void (*on_fatal)(void *arg, const char *why);
    void *fatal_arg;
} acme_config_t;

typedef struct acme acme_t;

/* Opens the storage and prepares the client. NULL with ERR on failure. */
acme_t *acme_new(uv_loop_t *loop, const acme_config_t *cfg, certs_t *certs, char *err,
                 size_t errlen);

/* Takes NAME under management: a valid stored certificate is served at
 * once (and renewed when due); without one, an order starts. Returns 0
 * (also when NAME is managed already), or UV_ENOMEM. */
int acme_manage(acme_t *a, const char *name);

/* psproxy certs: prints what storage knows of the N names (no network).
 * 0, or store_open's <0 code when the storage cannot be opened (its
 * "ROOT: reason" goes to stderr). */
int acme_print_status(const acme_config_t *cfg, const char *const *names, size_t n, FILE *out);

/* Orders that ended with a certificate, and that failed, since start. */
void acme_counts(const acme_t *a, uint64_t *ok, uint64_t *failed);

/* Stops timers and requests; frees A once libuv has closed its handles. */
void acme_free(acme_t *a);

#endif
