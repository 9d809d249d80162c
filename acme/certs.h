/* The certificate store: for each host name, the chain and key that new
 * handshakes get. Entries are refcounted and swapped whole under a lock, so
 * a handshake after a swap never sees an older certificate, and a
 * connection keeps the one it was made with. Shared by every worker. */
#ifndef PS_CERTS_H
#define PS_CERTS_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

typedef struct certs_entry {
    /* read-only once published */
    X509 *leaf;
    STACK_OF(X509) *chain; /* the intermediates, may be empty */
    EVP_PKEY *key;
    time_t not_after;
    char *source;          /* where it came from, for logs */
    /* private */
    atomic_int refcnt;
} certs_entry_t;

typedef struct certs certs_t;

/* A pass phrase callback for every PEM read: OpenSSL's default prompts on
 * the terminal for an encrypted block (a key, or any block with Proc-Type:
 * 4,ENCRYPTED), which from a reload (SIGHUP) would block the control loop.
 * psproxy has no pass phrase to give, so an encrypted block just fails. */
int certs_no_passphrase(char *buf, int size, int rwflag, void *arg);

certs_t *certs_new(void);
void certs_free(certs_t *s);

/* Reads a PEM chain (leaf first) and its private key; checks that they
 * belong together. Returns 0 and a new entry (refcount 1), or with the
 * reason in ERR: a file that cannot be opened (-errno: UV_ENOENT,
 * UV_EACCES ...), UV_EINVAL for PEM that is not a certificate and its key. */
int certs_entry_load(const char *cert_file, const char *key_file, certs_entry_t **out,
                     char *err, size_t errlen);

/* The same from PEM text in memory (the ACME client's downloads): 0, or
 * UV_EINVAL with the reason in ERR. */
int certs_entry_from_pem(const char *chain_pem, size_t chain_len, const char *key_pem,
                         size_t key_len, const char *source, certs_entry_t **out, char *err,
                         size_t errlen);

certs_entry_t *certs_entry_ref(certs_entry_t *e);
void certs_entry_unref(certs_entry_t *e);

/* Serves E for NAME from now on ("*.example.com" for a wildcard; any
 * case). Takes a new reference to E; the previous entry for NAME is
 * released once no one holds it. */
void certs_put(certs_t *s, const char *name, certs_entry_t *e);

/* The entry for a client's server name: NAME itself, else the wildcard of
 * its parent domain, else the catch-all "*". Returns a reference the
 * caller drops, or NULL. */
certs_entry_t *certs_get(certs_t *s, const char *name);

/* Calls FN for every name and its entry, under the read lock (FN must not
 * call back into the store). */
void certs_each(certs_t *s, void (*fn)(void *arg, const char *name, const certs_entry_t *e),
                void *arg);

#endif
