/* Certificate storage on disk: ACME accounts, certificates with their keys
 * and renewal metadata, and cross-process locks, under the directory of
 * `storage file_system PATH`. Every write is atomic; layout in store.c. */
#ifndef PS_STORE_H
#define PS_STORE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <time.h>

typedef struct store store_t;

/* Opens the storage at ROOT, creating it (mode 0700) and its parents when
 * absent. Returns 0 and a store the caller frees with store_close(), or
 * <0 with "ROOT: reason" in ERR. All functions here do blocking file
 * I/O; a write costs a few fsyncs (milliseconds): fine for renewals, never
 * for a request path. */
int store_open(const char *root, store_t **out, char *err, size_t errlen);
void store_close(store_t *s);
const char *store_root(const store_t *s);

/* The directory name for a CA: the directory URL's host (and port, ':'
 * made '-') plus its path with '/' made '-', lower-case; characters outside
 * [a-z0-9._-] become '_'. "https://acme-v02.api.letsencrypt.org/directory"
 * gives "acme-v02.api.letsencrypt.org-directory". Returns a malloc'd
 * string, or NULL when the URL has no "scheme://host". */
char *store_ca_id(const char *directory_url);

/* Writes RELPATH (relative to the root; no "..", not absolute) atomically:
 * a temporary file in the same directory, all data, fsync, rename over the
 * old file, fsync of the directory. Missing directories are created 0700.
 * MODE is 0600 or 0644. On failure the old file is untouched and the
 * temporary removed; returns <0 with the path in ERR. (Only a failed fsync
 * of the directory comes after the rename: the new file is then in place
 * but may not survive a crash, and the call still fails.) */
int store_write(store_t *s, const char *relpath, const void *data, size_t len, int mode, char *err,
                size_t errlen);

/* Reads all of RELPATH into *DATA (malloc'd, NUL-terminated, *LEN without
 * the NUL). Returns 0; UV_ENOENT when it does not exist (ERR untouched);
 * other <0 with "path: reason" in ERR. */
int store_read(store_t *s, const char *relpath, char **data, size_t *len, char *err, size_t errlen);

/* The whole regular file at PATH, at most MAX bytes, NUL-terminated in a
 * malloc'd *DATA (free it with store_wipe_free: it may hold a key), its
 * modification time in *MTIME when not NULL. Returns 0, UV_ENOENT (ERR
 * untouched), or <0 with "path: reason" in ERR (which may be NULL). */
int store_read_path(const char *path, size_t max, char **data, size_t *len,
                    struct timespec *mtime, char *err, size_t errlen);

/* Zeroes LEN bytes at P, then frees it (NULL is fine). */
void store_wipe_free(char *p, size_t len);

/* Parses the LEN bytes at TEXT (a file's contents) as a JSON object, the
 * shape of every JSON file here. Returns 0 and *OUT (the caller deletes
 * it), or UV_EINVAL with *WHY naming what is wrong ("not valid JSON"). */
int store_parse_object(const char *text, size_t len, cJSON **out, const char **why);

/* The ACME account for the CA at CA_URL: the account key (PEM) and the
 * account URL (KID). Save writes the key, then account.json; the JSON is
 * what makes an account exist, so load returns UV_ENOENT when it is absent
 * (a key alone is left over from a crash and may be overwritten). A corrupt
 * account.json, one naming another CA, or a missing key is an error naming
 * the file: never silently replaced. Load gives malloc'd *KEY_PEM (wipe it
 * before free) and *KID. */
int store_save_account(store_t *s, const char *ca_url, const char *key_pem, size_t key_len,
                       const char *kid, char *err, size_t errlen);
int store_load_account(store_t *s, const char *ca_url, char **key_pem, size_t *key_len, char **kid,
                       char *err, size_t errlen);

/* The certificate for NAME (a lower-case host name, or "*.example.com")
 * from the CA at CA_URL: chain PEM (leaf first), key PEM and metadata (any
 * JSON object; NULL saves {}). Save writes key, then chain, then metadata,
 * each atomically, so a crash in between leaves either the old triple or a
 * new key that the old chain does not match (the caller checks the pair).
 * Load returns UV_ENOENT when there is no chain; a chain without a key is
 * an error; absent metadata loads as an empty object (a crash before it
 * was written), corrupt metadata is an error naming its path. Outputs are
 * malloc'd (*META a cJSON the caller deletes); wipe the key before free.
 * An invalid NAME gives UV_EINVAL. */
int store_save_cert(store_t *s, const char *ca_url, const char *name, const char *chain_pem,
                    size_t chain_len, const char *key_pem, size_t key_len, const cJSON *meta,
                    char *err, size_t errlen);
int store_load_cert(store_t *s, const char *ca_url, const char *name, char **chain_pem,
                    size_t *chain_len, char **key_pem, size_t *key_len, cJSON **meta, char *err,
                    size_t errlen);

/* The metadata of NAME alone (renewal bookkeeping: failures, next attempt,
 * last error), atomically. Works before any certificate exists, so failed
 * first orders are remembered across restarts too. Load returns UV_ENOENT
 * when there is none, an error naming the file when it is corrupt. */
int store_save_meta(store_t *s, const char *ca_url, const char *name, const cJSON *meta, char *err,
                    size_t errlen);
int store_load_meta(store_t *s, const char *ca_url, const char *name, cJSON **meta, char *err,
                    size_t errlen);

/* Takes the cross-process lock for ordering NAME (flock on
 * ROOT/locks/NAME.lock, non-blocking). Returns 0 and an fd to pass to
 * store_unlock(); UV_EBUSY when another holder has it (another process, or
 * another open of the file in this one); other <0 with the path in ERR. */
int store_lock(store_t *s, const char *name, int *fd, char *err, size_t errlen);
void store_unlock(int fd);

/* Test hook, 0 in production: when N > 0, the Nth store_write from now
 * fails with UV_EIO after writing its temporary file and before the
 * rename, as a full disk or a crash would. */
extern int store_test_fail_after_write;

#endif
