/* `psproxy import-caddy`: moving from Caddy without a new order. Copies the
 * certificates and the ACME account Caddy obtained from one CA out of
 * Caddy's data directory (certmagic's file storage) into psproxy's. */
#ifndef PS_IMPORT_CADDY_H
#define PS_IMPORT_CADDY_H

#include <stdio.h>

/* Imports from CADDY_DIR (Caddy's data directory, e.g.
 * ~/.local/share/caddy, holding certificates/ and acme/) into the storage
 * at STORAGE_ROOT (created when absent), for the CA whose directory URL is
 * CA_URL (NULL: Let's Encrypt production). Caddy's files are only read.
 *
 * - Every certificate under certificates/<issuer-key>/ for that CA is
 *   imported when its key matches, it has not expired, it names the host
 *   its directory is named after, and psproxy has no certificate for that
 *   name expiring as late or later. Certificates of other CAs are skipped.
 * - Caddy's account for that CA (the most recently written, as Caddy picks
 *   one when no email is configured) is imported when psproxy has none for
 *   the CA yet and its key is P-256 (psproxy signs ES256 only).
 *
 * Writes one line per item to OUT ("imported ...", "skipped ...: why",
 * "error: PATH: reason") and a summary. Blocking file I/O; call it from a
 * command, never from a running server's loop. Returns 0 when nothing
 * failed (skips are not failures), else the negative UV_E* code of the
 * first failure. */
int import_caddy(const char *caddy_dir, const char *storage_root, const char *ca_url, FILE *out);

/* certmagic's issuer key for CA_URL: its storage directory name under
 * certificates/ and acme/ (host, '-', the path with '/' made '-', then
 * StorageKeys.Safe: lower-case, ':' made '-', characters outside
 * [A-Za-z0-9_@.-] dropped). "https://acme-v02.api.letsencrypt.org/directory"
 * gives "acme-v02.api.letsencrypt.org-directory". Returns a malloc'd
 * string, or NULL when the URL has no "scheme://host". */
char *import_caddy_issuer_key(const char *ca_url);

#endif
