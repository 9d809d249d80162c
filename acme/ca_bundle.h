/* The system's bundle of trusted CA certificates, wherever this Linux
 * keeps it: ACME and health checks over HTTPS trust what it holds. Debian's
 * libcurl looks only where Debian keeps it, so a binary built on Debian and
 * run on Amazon Linux or Fedora would trust nothing without this. */
#ifndef PS_CA_BUNDLE_H
#define PS_CA_BUNDLE_H

/* Where each family keeps it, in the order they are tried. NULL-terminated. */
extern const char *const ca_bundle_paths[];

/* The bundle to use: $SSL_CERT_FILE when set (OpenSSL's and Go's variable,
 * so Caddy's users know it), else the first readable file of PATHS. NULL
 * when there is none. Sets *FROM_ENV to whether the environment named it. */
const char *ca_bundle_find(const char *const *paths, const char *env_file, int *from_env);

/* ca_bundle_find over ca_bundle_paths and $SSL_CERT_FILE, looked up once per
 * process (the answer never changes while psproxy runs). */
const char *ca_bundle_system(void);

/* Logs which bundle psproxy trusts, or what to install when it has none. */
void ca_bundle_log(const char *acme_ca_root);

#endif
