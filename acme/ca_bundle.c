#include "ca_bundle.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

const char *const ca_bundle_paths[] = {
    "/etc/ssl/certs/ca-certificates.crt",                /* Debian, Ubuntu, Arch, Gentoo */
    "/etc/pki/tls/certs/ca-bundle.crt",                  /* Amazon Linux, Fedora, RHEL */
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* the file that links to */
    "/etc/ssl/ca-bundle.pem",                            /* openSUSE */
    "/etc/ssl/cert.pem",                                 /* Alpine */
    NULL,
};

const char *ca_bundle_find(const char *const *paths, const char *env_file, int *from_env)
{
    *from_env = 0;
    if (env_file != NULL && env_file[0] != '\0') {
        *from_env = 1;
        return env_file; /* named on purpose: a missing file is an error to show, not to skip */
    }
    for (size_t i = 0; paths[i] != NULL; i++)
        if (access(paths[i], R_OK) == 0)
            return paths[i];
    return NULL;
}

static const char *system_bundle;
static int system_from_env;
static pthread_once_t system_once = PTHREAD_ONCE_INIT;

static void find_system_bundle(void)
{
    system_bundle = ca_bundle_find(ca_bundle_paths, getenv("SSL_CERT_FILE"), &system_from_env);
}

const char *ca_bundle_system(void)
{
    pthread_once(&system_once, find_system_bundle);
    return system_bundle;
}

void ca_bundle_log(const char *acme_ca_root)
{
    const char *bundle = ca_bundle_system();
    if (bundle == NULL)
        log_warn("trust: no system CA bundle (looked for /etc/ssl/certs/ca-certificates.crt, "
                 "/etc/pki/tls/certs/ca-bundle.crt and others): HTTPS peers cannot be verified; "
                 "install the ca-certificates package, then restart psproxy");
    else if (system_from_env && access(bundle, R_OK) != 0)
        log_warn("trust: SSL_CERT_FILE=%s cannot be read: HTTPS peers cannot be verified", bundle);
    else
        log_info("trust: CA bundle %s%s", bundle, system_from_env ? " (SSL_CERT_FILE)" : "");
    if (acme_ca_root != NULL)
        log_info("trust: the ACME CA is checked against acme_ca_root %s alone", acme_ca_root);
}
