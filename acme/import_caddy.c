/* `psproxy import-caddy`: the certificates and ACME account Caddy obtained
 * from one CA, copied from Caddy's data directory into psproxy's storage.
 * Caddy's side is only opened read-only and never written.
 *
 * Caddy's layout (certmagic FileStorage; checked against what Caddy 2.6.2
 * wrote when it obtained a certificate from Pebble):
 *   DIR/certificates/<issuer-key>/<name>/<name>.crt    PEM chain, leaf first
 *   DIR/certificates/<issuer-key>/<name>/<name>.key    PEM ("EC PRIVATE KEY")
 *   DIR/certificates/<issuer-key>/<name>/<name>.json   {"sans", "issuer_data"}
 *   DIR/acme/<issuer-key>/users/<email|default>/<user>.json   the account:
 *       {"status", "contact", "termsOfServiceAgreed", "orders", "location"};
 *       accounts from before July 2020 keep the URL in Registration.uri
 *   DIR/acme/<issuer-key>/users/<email|default>/<user>.key    PEM
 * <user> is the part of the email before '@' ("default" without one);
 * <name> is StorageKeys.Safe(host), so "*.example.com" is
 * "wildcard_.example.com"; the issuer key is issuer_key()'s. */
#include "import_caddy.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "acme.h"
#include "certs.h"
#include "csr.h"
#include "jws.h"
#include "store.h"

/* Nothing Caddy stores comes near this; a bigger file is not a key or chain. */
#define IMPORT_MAX_FILE (1024 * 1024)

typedef struct import {
    const char *dir; /* Caddy's data directory */
    const char *ca_url;
    char *issuer; /* certmagic's issuer key of ca_url */
    store_t *store;
    FILE *out;
    int imported, skipped, failed;
    int first_rc; /* the first failure's code, 0 while none */
} import_t;

/* One of Caddy's accounts for the CA, usable by psproxy. */
struct account {
    char json[PATH_MAX];
    char *kid;
    char *pem; /* the key as PKCS #8, secret */
    size_t pem_len;
    struct timespec mtime;
};

static void say(import_t *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void skip(import_t *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(import_t *im, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void vsay(import_t *im, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void vsay(import_t *im, const char *prefix, const char *fmt, va_list ap)
{
    fputs(prefix, im->out);
    vfprintf(im->out, fmt, ap);
    fputc('\n', im->out);
    fflush(im->out);
}

static void say(import_t *im, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(im, "", fmt, ap);
    va_end(ap);
}

static void skip(import_t *im, const char *fmt, ...)
{
    va_list ap;
    im->skipped++;
    va_start(ap, fmt);
    vsay(im, "skipped ", fmt, ap);
    va_end(ap);
}

/* "error: PATH: reason" lines; RC is kept for the return value. */
static void fail(import_t *im, int rc, const char *fmt, ...)
{
    va_list ap;
    im->failed++;
    if (im->first_rc == 0)
        im->first_rc = rc < 0 ? rc : UV_EINVAL;
    va_start(ap, fmt);
    vsay(im, "error: ", fmt, ap);
    va_end(ap);
}

static const char *fmt_time(time_t t, char *buf, size_t size)
{
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "@%lld", (long long)t);
    return buf;
}

static int join(char *out, size_t size, const char *a, const char *b)
{
    int n = snprintf(out, size, "%s/%s", a, b);
    return n < 0 || (size_t)n >= size ? UV_ENAMETOOLONG : 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* All of PATH, opened read-only: Caddy's files are never written. O_NONBLOCK
 * so that a FIFO planted there cannot hang the import. Returns 0 and a
 * malloc'd NUL-terminated *DATA, or <0 (UV_ENOENT when absent). */
static int read_file(const char *path, char **data, size_t *len, struct timespec *mtime)
{
    return store_read_path(path, IMPORT_MAX_FILE, data, len, mtime, NULL, 0);
}

static const char *read_error(int rc)
{
    if (rc == UV_EINVAL)
        return "not a regular file";
    if (rc == UV_EFBIG)
        return "larger than 1 MiB: not a PEM file Caddy wrote";
    return uv_strerror(rc);
}

/* Visible entries of PATH, sorted, as scandir() gives them. */
static int on_visible(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

static int list_dir(const char *path, struct dirent ***list)
{
    int n = scandir(path, list, on_visible, alphasort);
    return n < 0 ? -errno : n;
}

static void free_list(struct dirent **list, int n)
{
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* certmagic StorageKeys.Safe (storage.go): lower-case, trimmed; ' ' '_',
 * '+' "_plus_", '*' "wildcard_", ':' '-', ".." removed, then every
 * character outside [A-Za-z0-9_@.-] dropped. */
static char *safe_key(const char *s, size_t n)
{
    char *o, *p;

    while (n > 0 && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    o = malloc(n * 9 + 1); /* '*' grows the most: 9 bytes */
    if (o == NULL)
        return NULL;
    p = o;
    for (size_t i = 0; i < n; i++) {
        char c = (char)tolower((unsigned char)s[i]);
        if (c == ' ') {
            *p++ = '_';
        } else if (c == '+') {
            memcpy(p, "_plus_", 6);
            p += 6;
        } else if (c == '*') {
            memcpy(p, "wildcard_", 9);
            p += 9;
        } else if (c == ':') {
            *p++ = '-';
        } else if (c == '.' && i + 1 < n && s[i + 1] == '.') {
            i++;
        } else if (isalnum((unsigned char)c) || c == '_' || c == '@' || c == '.' || c == '-') {
            *p++ = c;
        }
    }
    *p = '\0';
    return o;
}

/* certmagic's issuer key for CA_URL (acmeissuer.go issuerKey): its
 * storage directory name under certificates/ and acme/. NULL when the URL
 * has no "scheme://host". */
static char *issuer_key(const char *ca_url)
{
    const char *host, *at, *path;
    size_t hostlen, pathlen, n = 0;
    char *raw, *key;

    if (ca_url == NULL || (host = strstr(ca_url, "://")) == NULL || host == ca_url)
        return NULL;
    host += 3;
    hostlen = strcspn(host, "/?#");
    /* Go's url.URL.Host leaves out "user:password@". */
    at = memchr(host, '@', hostlen);
    if (at != NULL) {
        hostlen -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    if (hostlen == 0)
        return NULL;
    path = host + hostlen;
    pathlen = strcspn(path, "?#");
    raw = malloc(hostlen + pathlen + 2);
    if (raw == NULL)
        return NULL;
    memcpy(raw, host, hostlen);
    n = hostlen;
    /* acmeissuer.go issuerKey: the path with '/' and '\' made '-', then
     * trimmed of '-', joined to the host with '-' when not empty. */
    while (pathlen > 0 && (*path == '/' || *path == '\\' || *path == '-')) {
        path++;
        pathlen--;
    }
    while (pathlen > 0 &&
           (path[pathlen - 1] == '/' || path[pathlen - 1] == '\\' || path[pathlen - 1] == '-'))
        pathlen--;
    if (pathlen > 0) {
        raw[n++] = '-';
        for (size_t i = 0; i < pathlen; i++)
            raw[n++] = path[i] == '/' || path[i] == '\\' ? '-' : path[i];
    }
    key = safe_key(raw, n);
    free(raw);
    if (key != NULL && key[0] == '\0') {
        free(key);
        return NULL;
    }
    return key;
}

/* The host name a certificate directory is for: certmagic's Safe() of it,
 * with "wildcard_" standing for "*". 0 when it is a lower-case DNS name
 * psproxy can store (store.c valid_name), else -1. */
static int name_from_dir(const char *d, char *name, size_t size)
{
    const char *p;
    int n;

    if (strncmp(d, "wildcard_.", 10) == 0)
        n = snprintf(name, size, "*%s", d + 9);
    else
        n = snprintf(name, size, "%s", d);
    if (n < 0 || (size_t)n >= size || n > 253)
        return -1;
    p = name[0] == '*' ? name + 2 : name;
    if (*p == '\0' || *p == '.' || strstr(p, "..") != NULL)
        return -1;
    for (; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            return -1;
    return 0;
}

/* Whether LEAF lists NAME (a wildcard literally) among its dNSName SANs. */
static int names_host(X509 *leaf, const char *name)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int found = 0;

    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *s = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        found = len >= 0 && (size_t)len == strlen(name) &&
                strncasecmp((const char *)s, name, (size_t)len) == 0;
    }
    GENERAL_NAMES_free(sans);
    return found;
}

/* KEY re-encoded as PKCS #8, the form psproxy writes its own keys in. */
static char *normalize_key(const char *pem, size_t len, EVP_PKEY **keyp, size_t *out_len)
{
    EVP_PKEY *key = csr_key_from_pem(pem, len);
    char *out;

    *out_len = 0;
    if (key == NULL)
        return NULL;
    out = csr_key_to_pem(key, out_len);
    if (keyp != NULL)
        *keyp = key;
    else
        EVP_PKEY_free(key);
    return out;
}

/* Replaces nothing that expires as late or later; holds the name's
 * ordering lock so a running psproxy cannot store an order meanwhile. */
static void import_cert(import_t *im, const char *issuer_dir, const char *d)
{
    char dir[PATH_MAX], crt[PATH_MAX], keyf[PATH_MAX], file[PATH_MAX], name[300];
    char err[1024], t1[32], t2[32];
    char *chain = NULL, *key = NULL, *pem = NULL, *old_chain = NULL, *old_key = NULL;
    size_t chain_len = 0, key_len = 0, pem_len = 0, old_chain_len = 0, old_key_len = 0;
    certs_entry_t *e = NULL, *old = NULL;
    cJSON *meta = NULL, *old_meta = NULL;
    int lock = -1, rc;

    if (join(dir, sizeof(dir), issuer_dir, d) != 0 ||
        snprintf(file, sizeof(file), "%s.crt", d) < 0 || join(crt, sizeof(crt), dir, file) != 0 ||
        snprintf(file, sizeof(file), "%s.key", d) < 0 || join(keyf, sizeof(keyf), dir, file) != 0) {
        fail(im, UV_ENAMETOOLONG, "%s/%s: %s", issuer_dir, d, uv_strerror(UV_ENAMETOOLONG));
        return;
    }
    if (!is_dir(dir)) {
        skip(im, "%s: not a certificate directory", dir);
        return;
    }
    if (name_from_dir(d, name, sizeof(name)) != 0) {
        skip(im, "certificate %s (%s): not a host name psproxy manages", d, dir);
        return;
    }
    rc = read_file(crt, &chain, &chain_len, NULL);
    if (rc == UV_ENOENT) {
        skip(im, "certificate %s (%s): no %s.crt in it", name, dir, d);
        goto out;
    }
    if (rc != 0) {
        fail(im, rc, "%s: %s", crt, read_error(rc));
        goto out;
    }
    rc = read_file(keyf, &key, &key_len, NULL);
    if (rc != 0) {
        fail(im, rc, "%s: %s", keyf,
             rc == UV_ENOENT ? "missing, but the certificate is there" : read_error(rc));
        goto out;
    }
    /* Checks that the key is the certificate's. */
    rc = certs_entry_from_pem(chain, chain_len, key, key_len, crt, &e, err, sizeof(err));
    if (rc != 0) {
        fail(im, UV_EINVAL, "%s", err); /* ERR starts with CRT */
        goto out;
    }
    if (e->not_after <= time(NULL)) {
        skip(im, "certificate %s (%s): expired on %s", name, crt,
             fmt_time(e->not_after, t1, sizeof(t1)));
        goto out;
    }
    if (!names_host(e->leaf, name)) {
        skip(im, "certificate %s (%s): it does not name %s among its DNS names", name, crt, name);
        goto out;
    }
    pem = normalize_key(key, key_len, NULL, &pem_len);
    if (pem == NULL) {
        fail(im, UV_EINVAL, "%s: the private key does not load", keyf);
        goto out;
    }

    rc = store_lock(im->store, name, &lock, err, sizeof(err));
    if (rc != 0) {
        fail(im, rc, "%s%s", err,
             rc == UV_EBUSY ? " (psproxy is ordering this name now: import again later)" : "");
        goto out;
    }
    rc = store_load_cert(im->store, im->ca_url, name, &old_chain, &old_chain_len, &old_key,
                         &old_key_len, &old_meta, err, sizeof(err));
    if (rc != 0 && rc != UV_ENOENT) {
        fail(im, rc, "%s (psproxy's certificate for %s; not replaced)", err, name);
        goto out;
    }
    if (rc == 0) {
        rc = certs_entry_from_pem(old_chain, old_chain_len, old_key, old_key_len, name, &old, err,
                                  sizeof(err));
        if (rc != 0) {
            fail(im, UV_EINVAL, "%s: psproxy's certificate for %s does not load (%s); not replaced",
                 store_root(im->store), name, err);
            goto out;
        }
        if (X509_cmp(old->leaf, e->leaf) == 0) {
            skip(im, "certificate %s (%s): already in psproxy's storage", name, crt);
            goto out;
        }
        if (old->not_after >= e->not_after) {
            skip(im, "certificate %s (%s): psproxy's own expires %s, Caddy's %s", name, crt,
                 fmt_time(old->not_after, t1, sizeof(t1)), fmt_time(e->not_after, t2, sizeof(t2)));
            goto out;
        }
    }

    meta = cJSON_CreateObject();
    if (meta == NULL || cJSON_AddStringToObject(meta, "name", name) == NULL ||
        cJSON_AddStringToObject(meta, "ca", im->ca_url) == NULL ||
        cJSON_AddNumberToObject(meta, "not_after", (double)e->not_after) == NULL ||
        cJSON_AddStringToObject(meta, "imported_from", crt) == NULL ||
        cJSON_AddNumberToObject(meta, "imported", (double)time(NULL)) == NULL ||
        cJSON_AddNumberToObject(meta, "failures", 0) == NULL) {
        fail(im, UV_ENOMEM, "%s: %s", crt, uv_strerror(UV_ENOMEM));
        goto out;
    }
    /* Caddy's chain as the CA sent it: certs_entry_from_pem() took it. */
    rc = store_save_cert(im->store, im->ca_url, name, chain, chain_len, pem, pem_len, meta, err,
                         sizeof(err));
    if (rc != 0) {
        fail(im, rc, "%s (importing %s)", err, crt);
        goto out;
    }
    im->imported++;
    if (old != NULL)
        say(im, "imported certificate %s from %s (expires %s; replaces psproxy's, expiring %s)",
            name, crt, fmt_time(e->not_after, t1, sizeof(t1)),
            fmt_time(old->not_after, t2, sizeof(t2)));
    else
        say(im, "imported certificate %s from %s (expires %s)", name, crt,
            fmt_time(e->not_after, t1, sizeof(t1)));

out:
    store_unlock(lock);
    if (e != NULL)
        certs_entry_unref(e);
    if (old != NULL)
        certs_entry_unref(old);
    cJSON_Delete(meta);
    cJSON_Delete(old_meta);
    free(chain);
    free(old_chain);
    store_wipe_free(key, key_len);
    store_wipe_free(pem, pem_len);
    store_wipe_free(old_key, old_key_len);
}

/* Every entry below certificates/: the CA's issuer key imports, others are
 * named and skipped. */
static void import_certs(import_t *im)
{
    char root[PATH_MAX], issuer_dir[PATH_MAX];
    struct dirent **issuers = NULL, **names = NULL;
    int n_issuers, n_names, found = 0;

    if (join(root, sizeof(root), im->dir, "certificates") != 0) {
        fail(im, UV_ENAMETOOLONG, "%s/certificates: %s", im->dir, uv_strerror(UV_ENAMETOOLONG));
        return;
    }
    n_issuers = list_dir(root, &issuers);
    if (n_issuers == UV_ENOENT) {
        say(im, "no certificates: %s does not exist", root);
        return;
    }
    if (n_issuers < 0) {
        fail(im, n_issuers, "%s: %s", root, uv_strerror(n_issuers));
        return;
    }
    for (int i = 0; i < n_issuers; i++) {
        const char *issuer = issuers[i]->d_name;
        int ours = strcmp(issuer, im->issuer) == 0;
        if (join(issuer_dir, sizeof(issuer_dir), root, issuer) != 0 || !is_dir(issuer_dir))
            continue;
        found |= ours;
        n_names = list_dir(issuer_dir, &names);
        if (n_names < 0) {
            fail(im, n_names, "%s: %s", issuer_dir, uv_strerror(n_names));
            continue;
        }
        for (int k = 0; k < n_names; k++) {
            if (ours)
                import_cert(im, issuer_dir, names[k]->d_name);
            else
                skip(im, "certificate %s (%s/%s): from another CA (issuer %s, not %s)",
                     names[k]->d_name, issuer_dir, names[k]->d_name, issuer, im->issuer);
        }
        free_list(names, n_names);
    }
    free_list(issuers, n_issuers);
    if (!found)
        say(im, "no certificates from %s: %s/%s does not exist", im->ca_url, root, im->issuer);
}

/* The account URL of a certmagic account file: "location" (acmez, since
 * July 2020), else Registration.uri (lego, before). */
static const char *account_url(const cJSON *j)
{
    const cJSON *loc = cJSON_GetObjectItemCaseSensitive(j, "location");
    if (cJSON_IsString(loc) && loc->valuestring[0] != '\0')
        return loc->valuestring;
    const cJSON *reg = cJSON_GetObjectItemCaseSensitive(j, "Registration");
    const cJSON *uri = cJSON_GetObjectItemCaseSensitive(reg, "uri");
    if (cJSON_IsString(uri) && uri->valuestring[0] != '\0')
        return uri->valuestring;
    return NULL;
}

static const char *account_status(const cJSON *j)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    if (cJSON_IsString(st))
        return st->valuestring;
    st = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "Registration"),
                                         "body"),
        "status");
    return cJSON_IsString(st) ? st->valuestring : NULL;
}

/* Whether URL is on the CA's origin (scheme://host[:port]/): an account
 * URL elsewhere is not one this CA gave. */
static int same_origin(const char *url, const char *ca_url)
{
    const char *h = strstr(ca_url, "://");
    size_t n;

    if (h == NULL)
        return 0;
    n = (size_t)(h + 3 - ca_url) + strcspn(h + 3, "/?#");
    return strncasecmp(url, ca_url, n) == 0 && url[n] == '/';
}

/* Checks one account file pair; 0 and *A filled when psproxy can use it. */
static int check_account(import_t *im, const char *json, struct account *a)
{
    char keyf[PATH_MAX];
    char *text = NULL, *key = NULL;
    size_t text_len = 0, key_len = 0;
    cJSON *j = NULL;
    EVP_PKEY *pk = NULL;
    char *jwk = NULL;
    const char *url, *status;
    size_t n = strlen(json);
    int rc;

    memset(a, 0, sizeof(*a));
    snprintf(a->json, sizeof(a->json), "%s", json);
    snprintf(keyf, sizeof(keyf), "%.*s.key", (int)(n - 5), json); /* n < PATH_MAX */
    rc = read_file(json, &text, &text_len, &a->mtime);
    if (rc != 0) {
        fail(im, rc, "%s: %s", json, read_error(rc));
        goto fail;
    }
    j = cJSON_ParseWithLength(text, text_len);
    if (j == NULL || !cJSON_IsObject(j)) {
        rc = UV_EINVAL;
        fail(im, rc, "%s: not a JSON object", json);
        goto fail;
    }
    url = account_url(j);
    status = account_status(j);
    if (url == NULL) {
        rc = UV_EINVAL;
        fail(im, rc, "%s: no account URL (\"location\")", json);
        goto fail;
    }
    if (status != NULL && strcmp(status, "valid") != 0) {
        rc = UV_EINVAL;
        skip(im, "account %s (%s): its status is \"%s\"", url, json, status);
        goto fail;
    }
    if (!same_origin(url, im->ca_url)) {
        rc = UV_EINVAL;
        skip(im, "account %s (%s): not at %s", url, json, im->ca_url);
        goto fail;
    }
    rc = read_file(keyf, &key, &key_len, NULL);
    if (rc != 0) {
        fail(im, rc, "%s: %s", keyf,
             rc == UV_ENOENT ? "missing, but the account file is there" : read_error(rc));
        goto fail;
    }
    a->pem = normalize_key(key, key_len, &pk, &a->pem_len);
    if (a->pem == NULL) {
        rc = UV_EINVAL;
        fail(im, rc, "%s: the private key does not load", keyf);
        goto fail;
    }
    jwk = jws_jwk(pk);
    if (jwk == NULL) {
        rc = UV_EINVAL;
        skip(im, "account %s (%s): its key is not P-256 (psproxy signs ES256 only)", url, json);
        goto fail;
    }
    a->kid = strdup(url);
    if (a->kid == NULL) {
        rc = UV_ENOMEM;
        fail(im, rc, "%s: %s", json, uv_strerror(rc));
        goto fail;
    }
    rc = 0;
    goto out;

fail:
    store_wipe_free(a->pem, a->pem_len);
    a->pem = NULL;
out:
    free(jwk);
    EVP_PKEY_free(pk);
    cJSON_Delete(j);
    free(text);
    store_wipe_free(key, key_len);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int newer(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec != b->tv_sec ? a->tv_sec > b->tv_sec : a->tv_nsec > b->tv_nsec;
}

/* The account files (users/<email>/<user>.json) of one issuer directory,
 * as malloc'd paths into *OUT. */
static int account_files(import_t *im, const char *users, char ***out, int *count)
{
    struct dirent **emails = NULL, **files = NULL;
    char dir[PATH_MAX], path[PATH_MAX];
    char **v = NULL;
    int n_emails, n_files, n = 0, cap = 0;

    *out = NULL;
    *count = 0;
    n_emails = list_dir(users, &emails);
    if (n_emails < 0)
        return n_emails;
    for (int i = 0; i < n_emails; i++) {
        if (join(dir, sizeof(dir), users, emails[i]->d_name) != 0 || !is_dir(dir))
            continue;
        n_files = list_dir(dir, &files);
        if (n_files < 0) {
            fail(im, n_files, "%s: %s", dir, uv_strerror(n_files));
            continue;
        }
        for (int k = 0; k < n_files; k++) {
            if (!ends_with(files[k]->d_name, ".json") ||
                join(path, sizeof(path), dir, files[k]->d_name) != 0)
                continue;
            if (n == cap) {
                char **nv = realloc(v, sizeof(*v) * (size_t)(cap = cap * 2 + 4));
                if (nv == NULL)
                    break;
                v = nv;
            }
            v[n] = strdup(path);
            if (v[n] != NULL)
                n++;
        }
        free_list(files, n_files);
    }
    free_list(emails, n_emails);
    *out = v;
    *count = n;
    return 0;
}

static void free_strings(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Caddy's account for the CA, when psproxy has none there yet. */
static void import_account(import_t *im)
{
    char acme_dir[PATH_MAX], users[PATH_MAX], err[1024];
    struct dirent **issuers = NULL;
    struct account *accts = NULL;
    char **files = NULL, *kid = NULL, *pem = NULL;
    size_t pem_len = 0;
    int n_issuers, n_files = 0, n_accts = 0, best = -1, rc;

    if (join(acme_dir, sizeof(acme_dir), im->dir, "acme") != 0) {
        fail(im, UV_ENAMETOOLONG, "%s/acme: %s", im->dir, uv_strerror(UV_ENAMETOOLONG));
        return;
    }
    n_issuers = list_dir(acme_dir, &issuers);
    if (n_issuers == UV_ENOENT) {
        say(im, "no ACME account: %s does not exist", acme_dir);
        return;
    }
    if (n_issuers < 0) {
        fail(im, n_issuers, "%s: %s", acme_dir, uv_strerror(n_issuers));
        return;
    }
    /* Accounts of other CAs, named so the administrator sees them go. */
    for (int i = 0; i < n_issuers; i++) {
        const char *issuer = issuers[i]->d_name;
        if (strcmp(issuer, im->issuer) == 0 ||
            snprintf(users, sizeof(users), "%s/%s/users", acme_dir, issuer) >= (int)sizeof(users) ||
            !is_dir(users) || account_files(im, users, &files, &n_files) != 0)
            continue;
        for (int k = 0; k < n_files; k++)
            skip(im, "account %s: from another CA (issuer %s, not %s)", files[k], issuer,
                 im->issuer);
        free_strings(files, n_files);
        files = NULL;
        n_files = 0;
    }
    free_list(issuers, n_issuers);

    if (snprintf(users, sizeof(users), "%s/%s/users", acme_dir, im->issuer) >= (int)sizeof(users) ||
        !is_dir(users)) {
        say(im, "no ACME account for %s: %s does not exist", im->ca_url, users);
        return;
    }
    rc = account_files(im, users, &files, &n_files);
    if (rc != 0) {
        fail(im, rc, "%s: %s", users, uv_strerror(rc));
        return;
    }
    if (n_files == 0) {
        say(im, "no ACME account for %s: no account file in %s", im->ca_url, users);
        goto out;
    }

    rc = store_load_account(im->store, im->ca_url, &pem, &pem_len, &kid, err, sizeof(err));
    if (rc == 0) {
        for (int k = 0; k < n_files; k++)
            skip(im, "account %s: psproxy already has an account for %s (%s)", files[k], im->ca_url,
                 kid);
        goto out;
    }
    if (rc != UV_ENOENT) {
        fail(im, rc, "%s (psproxy's account; not replaced)", err);
        goto out;
    }

    accts = calloc((size_t)n_files, sizeof(*accts));
    if (accts == NULL) {
        fail(im, UV_ENOMEM, "%s: %s", users, uv_strerror(UV_ENOMEM));
        goto out;
    }
    for (int k = 0; k < n_files; k++) {
        if (check_account(im, files[k], &accts[n_accts]) != 0)
            continue;
        if (best < 0 || newer(&accts[n_accts].mtime, &accts[best].mtime))
            best = n_accts;
        n_accts++;
    }
    if (best < 0)
        goto out;
    /* psproxy keeps one account per CA; Caddy without an email uses its
     * most recently written one (account.go mostRecentAccountEmail). */
    for (int k = 0; k < n_accts; k++)
        if (k != best)
            skip(im, "account %s (%s): psproxy keeps one account per CA; took the newest, %s",
                 accts[k].kid, accts[k].json, accts[best].kid);
    rc = store_save_account(im->store, im->ca_url, accts[best].pem, accts[best].pem_len,
                            accts[best].kid, err, sizeof(err));
    if (rc != 0) {
        fail(im, rc, "%s (importing %s)", err, accts[best].json);
        goto out;
    }
    im->imported++;
    say(im, "imported account %s from %s", accts[best].kid, accts[best].json);

out:
    for (int k = 0; k < n_accts; k++) {
        free(accts[k].kid);
        store_wipe_free(accts[k].pem, accts[k].pem_len);
    }
    free(accts);
    free_strings(files, n_files);
    free(kid);
    store_wipe_free(pem, pem_len);
}

/* PATH made absolute with symlinks resolved, also when its last
 * components do not exist yet (storage is created on demand). */
static int resolve(const char *path, char *out)
{
    char buf[PATH_MAX], real[PATH_MAX];
    const char *rest = "";
    char *slash;

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return UV_ENAMETOOLONG;
    while (realpath(buf, real) == NULL) {
        if (errno != ENOENT)
            return -errno;
        slash = strrchr(buf, '/');
        if (slash == NULL) {
            /* a relative path whose first component is missing */
            if (getcwd(real, sizeof(real)) == NULL)
                return -errno;
            rest = path;
            goto done;
        }
        rest = path + (slash - buf);
        *slash = '\0';
        if (buf[0] == '\0') {
            real[0] = '\0';
            goto done;
        }
    }
done:
    if (snprintf(out, PATH_MAX, "%s%s%s", real, rest[0] == '/' || rest[0] == '\0' ? "" : "/",
                 rest) >= PATH_MAX)
        return UV_ENAMETOOLONG;
    return 0;
}

/* Writing into Caddy's directory would modify it: psproxy's layout is
 * close enough to certmagic's that files would even collide. */
static int storage_inside(const char *storage, const char *caddy)
{
    char s[PATH_MAX], c[PATH_MAX];
    size_t n;

    if (resolve(storage, s) != 0 || resolve(caddy, c) != 0)
        return 0;
    n = strlen(c);
    while (n > 1 && c[n - 1] == '/')
        n--;
    return strncmp(s, c, n) == 0 && (s[n] == '\0' || s[n] == '/');
}

int import_caddy(const char *caddy_dir, const char *storage_root, const char *ca_url, FILE *out)
{
    import_t im = {0};
    char err[1024], dir[PATH_MAX];
    int rc;

    /* Absolute: the paths end up in each certificate's metadata. */
    im.dir = realpath(caddy_dir, dir) != NULL ? dir : caddy_dir;
    im.ca_url = ca_url != NULL ? ca_url : ACME_LETSENCRYPT;
    im.out = out;
    im.issuer = issuer_key(im.ca_url);
    if (im.issuer == NULL) {
        fail(&im, UV_EINVAL, "acme_ca: not an ACME directory URL \"%s\"", im.ca_url);
        goto done;
    }
    if (!is_dir(caddy_dir)) {
        rc = access(caddy_dir, F_OK) == 0 ? UV_ENOTDIR : -errno;
        fail(&im, rc, "%s: %s", caddy_dir, uv_strerror(rc));
        goto done;
    }
    if (access(caddy_dir, R_OK | X_OK) != 0) {
        rc = -errno;
        fail(&im, rc, "%s: %s", caddy_dir, uv_strerror(rc));
        goto done;
    }
    {
        char c[PATH_MAX], a[PATH_MAX];
        if (join(c, sizeof(c), caddy_dir, "certificates") != 0 ||
            join(a, sizeof(a), caddy_dir, "acme") != 0 || (!is_dir(c) && !is_dir(a))) {
            fail(&im, UV_EINVAL,
                 "%s: not a Caddy data directory (no certificates/ or acme/ in it; Caddy's "
                 "default is ~/.local/share/caddy, or $XDG_DATA_HOME/caddy)",
                 caddy_dir);
            goto done;
        }
    }
    if (storage_inside(storage_root, caddy_dir)) {
        fail(&im, UV_EINVAL,
             "%s: the storage is inside Caddy's data directory %s: refusing to "
             "write there (set `storage file_system` to another directory)",
             storage_root, caddy_dir);
        goto done;
    }
    rc = store_open(storage_root, &im.store, err, sizeof(err));
    if (rc != 0) {
        fail(&im, rc, "%s", err);
        goto done;
    }
    say(&im, "importing from %s (Caddy's issuer %s for %s) into %s", im.dir, im.issuer, im.ca_url,
        store_root(im.store));
    import_certs(&im);
    import_account(&im);

done:
    say(&im, "import-caddy: %d imported, %d skipped, %d failed", im.imported, im.skipped,
        im.failed);
    store_close(im.store);
    free(im.issuer);
    return im.failed > 0 ? im.first_rc : 0;
}
