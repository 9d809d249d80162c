/* `psproxy import-caddy`: moving from Caddy without a new order. Copies the
 * certificates and the ACME account Caddy obtained from one CA out of
 * Caddy's data directory (certmagic's file storage) into psproxy's. */
#ifndef PS_IMPORT_CADDY_H
#define PS_IMPORT_CADDY_H

#include <stdio.h>

/* Imports from CADDY_DIR (Caddy's data directory, e.g.
 * ~/.local/share/caddy, holding certificates/ and acme/) into the storage
 * at STORAGE_ROOT (created when absent), for the CA whose directory URL is
 * CA_URL (NULL: Let's Encrypt production). Caddy's files are only read;
 * a STORAGE_ROOT inside CADDY_DIR is refused (the layouts would collide).
 *
 * - Every certificate under certificates/<issuer-key>/ for that CA is
 *   imported when its key matches, it has not expired, it names the host
 *   its directory is named after, and psproxy has no certificate for that
 *   name expiring as late or later (checked and written under that name's
 *   storage lock). Certificates of other CAs are skipped. A running
 *   psproxy serves what was imported from its next start.
 * - Caddy's account for that CA (the most recently written, as Caddy picks
 *   one when no email is configured) is imported when psproxy has none for
 *   the CA yet and its key is P-256 (psproxy signs ES256 only).
 *
 * Caddy's issuer key for CA_URL is its host, '-', and its path with '/'
 * made '-', through certmagic's StorageKeys.Safe: for Let's Encrypt
 * "acme-v02.api.letsencrypt.org-directory", for Pebble at
 * https://127.0.0.1:14000/dir "127.0.0.1-14000-dir".
 *
 * Writes one line per item to OUT ("imported ...", "skipped ...: why",
 * "error: PATH: reason") and a summary. Blocking file I/O; call it from a
 * command, never from a running server's loop. Returns 0 when nothing
 * failed (skips are not failures), else the negative UV_E* code of the
 * first failure. */
int import_caddy(const char *caddy_dir, const char *storage_root, const char *ca_url, FILE *out);

#endif
