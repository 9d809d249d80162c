/* Sealing private keys at rest (issue #11): AES-256-GCM under a key read
 * from a file, so that a dump of the shared certificate database alone
 * leaks no private key. Pure: no loop, no global state. */
#ifndef PS_SEAL_H
#define PS_SEAL_H

#include <stddef.h>

#define SEAL_KEY_LEN 32
#define SEAL_VERSION 0x01
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16
/* What a sealed value adds to its plaintext: version byte, nonce, tag. */
#define SEAL_OVERHEAD (1 + SEAL_NONCE_LEN + SEAL_TAG_LEN)

/* The sealing key. Embedded by value; wipe it with seal_key_wipe() when
 * done (it is secret: never log or print it). */
typedef struct seal_key {
    /* private */
    unsigned char bytes[SEAL_KEY_LEN];
} seal_key_t;

/* Reads the key file at PATH: exactly 64 hex digits (either case), then
 * at most one "\n", nothing else. Make one with
 *
 *     openssl rand -hex 32 > FILE; chmod 600 FILE
 *
 * The file must give group and others no access at all (mode & 077 == 0).
 * Returns 0 and the key in *KEY, or <0 with *KEY zeroed and "PATH:
 * reason" in ERR (which may be NULL): the code from opening or reading it
 * (UV_ENOENT, UV_EACCES, ...), UV_EPERM for a too-open mode, UV_EINVAL
 * for contents that are not such a key. Blocking file I/O: call it at
 * config load. */
int seal_key_load(const char *path, seal_key_t *key, char *err, size_t errlen);

/* Zeroes KEY (OPENSSL_cleanse: not optimised away). */
void seal_key_wipe(seal_key_t *key);

/* Seals LEN bytes at PLAIN under KEY, bound to AAD: a NUL-terminated
 * string naming the row the value belongs in ("psproxy account
 * https://ca/dir", "psproxy cert https://ca/dir example.com"), so that a
 * sealed value copied to another row does not open there.
 *
 * Format, SEAL_OVERHEAD + LEN bytes:
 *     version (SEAL_VERSION) | nonce (12, random per call) |
 *     ciphertext (LEN) | tag (16)
 * AES-256-GCM with the additional data version byte || AAD's characters
 * (without the NUL): the version is authenticated, so no downgrade goes
 * unnoticed.
 *
 * Returns 0 and a malloc'd *OUT of *OUTLEN bytes (not secret), or
 * UV_EINVAL (NULL AAD, LEN beyond what one GCM call takes), UV_ENOMEM, or
 * UV_EIO when OpenSSL fails (no random bytes). */
int seal_encrypt(const seal_key_t *key, const char *aad, const void *plain, size_t len,
                 unsigned char **out, size_t *outlen);

/* Opens what seal_encrypt made with the same KEY and AAD. Returns 0 and a
 * malloc'd, NUL-terminated *PLAIN of *PLAINLEN bytes (the NUL not counted;
 * secret: free it with store_wipe_free(*PLAIN, *PLAINLEN)). Errors, with
 * *PLAIN NULL: UV_EINVAL when IN is not a sealed value at all (shorter
 * than SEAL_OVERHEAD, or a version byte we do not know: a PEM stored in
 * the clear starts with '-'), or a NULL AAD; PS_EPROTO when authentication
 * fails: wrong key, wrong AAD, or any byte changed; UV_ENOMEM; UV_EIO when
 * OpenSSL fails otherwise. Nothing decrypted is ever returned unverified. */
int seal_decrypt(const seal_key_t *key, const char *aad, const unsigned char *in, size_t len,
                 char **plain, size_t *plainlen);

#endif
