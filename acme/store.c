/* Certificate storage: ACME accounts, certificates, renewal metadata and
 * ordering locks as files under one root, each written atomically.
 *
 * Layout (psproxy's own), directories 0700:
 *   ROOT/acme/<ca-id>/account.key                     PEM, 0600
 *   ROOT/acme/<ca-id>/account.json                    {"kid": URL, "ca": URL}, 0600
 *   ROOT/certificates/<ca-id>/<name>/<name>.crt       PEM chain, leaf first, 0644
 *   ROOT/certificates/<ca-id>/<name>/<name>.key       PEM, 0600
 *   ROOT/certificates/<ca-id>/<name>/<name>.json      caller's metadata object, 0600
 *   ROOT/locks/<name>.lock                            flock target, never removed
 * <ca-id> comes from store_ca_id(); <name> is the host name, a wildcard
 * "*.example.com" stored as "wildcard_.example.com" (as certmagic does).
 * Temporary files are ".<file>.tmp-<pid>-<n>" beside their target. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

/* Nothing we store comes near this; a bigger file is not ours. */
#define STORE_MAX_FILE (1024 * 1024)
/* RFC 1035 2.3.4: a host name is at most 253 characters as text. */
#define STORE_MAX_NAME 253

int store_test_fail_after_write;

struct store {
    char *root;
};

static atomic_uint tmp_counter;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* fsync of a directory makes a rename or mkdir in it durable. Some file
 * systems cannot sync directories (EINVAL); there is nothing more to do. */
static int fsync_dir(const char *dir)
{
    int fd, rc = 0;

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = -errno;
    close(fd);
    return rc;
}

/* mkdir -p with mode 0700; existing directories keep their mode (the
 * administrator's choice). */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    struct stat st;
    size_t n = strlen(dir);
    int rc;

    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (n >= sizeof(buf)) {
        set_err(err, errlen, "%s: %s", dir, uv_strerror(UV_ENAMETOOLONG));
        return UV_ENAMETOOLONG;
    }
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) == 0) {
            /* The new entry must survive a crash as much as the files in it. */
            char *slash = strrchr(buf, '/');
            if (slash != NULL && slash != buf) {
                *slash = '\0';
                rc = fsync_dir(buf);
                if (rc != 0) {
                    set_err(err, errlen, "%s: cannot sync: %s", buf, uv_strerror(rc));
                    return rc;
                }
                *slash = '/';
            }
        } else if (errno != EEXIST) {
            rc = -errno;
            set_err(err, errlen, "%s: cannot create directory: %s", buf, uv_strerror(rc));
            return rc;
        }
        if (i < n)
            buf[i] = '/';
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        set_err(err, errlen, "%s: %s", dir, uv_strerror(UV_ENOTDIR));
        return UV_ENOTDIR;
    }
    return 0;
}

/* ROOT/RELPATH into PATH; RELPATH must stay below the root. */
static int full_path(store_t *s, const char *relpath, char *path, size_t size, char *err,
                     size_t errlen)
{
    const char *p = relpath;
    int n;

    if (*p == '\0' || *p == '/' || p[strlen(p) - 1] == '/')
        goto invalid;
    while (*p != '\0') {
        size_t seg = strcspn(p, "/");
        if (seg == 0 || (seg == 2 && p[0] == '.' && p[1] == '.') || (seg == 1 && p[0] == '.'))
            goto invalid;
        p += seg;
        if (*p == '/')
            p++;
    }
    n = snprintf(path, size, "%s/%s", s->root, relpath);
    if (n < 0 || (size_t)n >= size) {
        set_err(err, errlen, "%s/%s: %s", s->root, relpath, uv_strerror(UV_ENAMETOOLONG));
        return UV_ENAMETOOLONG;
    }
    return 0;

invalid:
    set_err(err, errlen, "%s: invalid path \"%s\" (must stay below it)", s->root, relpath);
    return UV_EINVAL;
}

int store_open(const char *root, store_t **out, char *err, size_t errlen)
{
    store_t *s = NULL;
    size_t n;
    int rc;

    *out = NULL;
    if (root == NULL || root[0] == '\0') {
        set_err(err, errlen, "storage: empty path");
        return UV_EINVAL;
    }
    rc = make_dirs(root, err, errlen);
    if (rc != 0)
        goto fail;
    /* Fail now, not at the first renewal weeks later. */
    if (access(root, R_OK | W_OK | X_OK) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: %s", root, uv_strerror(rc));
        goto fail;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = UV_ENOMEM;
        set_err(err, errlen, "%s: %s", root, uv_strerror(rc));
        goto fail;
    }
    s->root = strdup(root);
    if (s->root == NULL) {
        rc = UV_ENOMEM;
        set_err(err, errlen, "%s: %s", root, uv_strerror(rc));
        goto fail;
    }
    /* "ROOT/" would give "ROOT//acme" in every message. */
    n = strlen(s->root);
    while (n > 1 && s->root[n - 1] == '/')
        s->root[--n] = '\0';
    *out = s;
    return 0;

fail:
    store_close(s);
    return rc;
}

void store_close(store_t *s)
{
    if (s == NULL)
        return;
    free(s->root);
    free(s);
}

const char *store_root(const store_t *s)
{
    return s->root;
}

/* Lower-case, and anything that could mean something to a file system
 * ('/', '\\', ':', '%', ...) becomes '_'. */
static char ca_id_char(char c)
{
    if (c >= 'A' && c <= 'Z')
        return (char)(c - 'A' + 'a');
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')
        return c;
    return '_';
}

char *store_ca_id(const char *directory_url)
{
    const char *host, *path, *end;
    size_t hostlen, o = 0;
    char *id;

    if (directory_url == NULL)
        return NULL;
    host = strstr(directory_url, "://");
    if (host == NULL || host == directory_url)
        return NULL;
    host += 3;
    hostlen = strcspn(host, "/?#");
    /* A host starting with '.' could make the id "." or "..". */
    if (hostlen == 0 || host[0] == '.')
        return NULL;
    path = host + hostlen;
    while (*path == '/')
        path++;
    end = path + strlen(path);
    while (end > path && end[-1] == '/')
        end--;
    id = malloc(hostlen + (size_t)(end - path) + 2);
    if (id == NULL)
        return NULL;
    for (size_t i = 0; i < hostlen; i++)
        id[o++] = host[i] == ':' ? '-' : ca_id_char(host[i]);
    if (end > path) {
        id[o++] = '-';
        for (const char *p = path; p < end; p++)
            id[o++] = *p == '/' ? '-' : ca_id_char(*p);
    }
    id[o] = '\0';
    return id;
}

int store_write(store_t *s, const char *relpath, const void *data, size_t len, int mode, char *err,
                size_t errlen)
{
    char path[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX];
    const char *base, *p = data;
    int fd = -1, rc, n;
    size_t left = len;

    tmp[0] = '\0';
    rc = full_path(s, relpath, path, sizeof(path), err, errlen);
    if (rc != 0)
        return rc;
    if (mode != 0600 && mode != 0644) {
        set_err(err, errlen, "%s: invalid mode %o", path, (unsigned)mode);
        return UV_EINVAL;
    }
    /* full_path() put at least one '/' after the root. */
    base = strrchr(path, '/') + 1;
    memcpy(dir, path, (size_t)(base - 1 - path));
    dir[base - 1 - path] = '\0';
    rc = make_dirs(dir, err, errlen);
    if (rc != 0)
        return rc;

    /* O_EXCL: another writer's temporary is never ours to truncate. */
    for (int attempt = 0; fd < 0; attempt++) {
        n = snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-%ld-%u", dir, base, (long)getpid(),
                     atomic_fetch_add(&tmp_counter, 1));
        if (n < 0 || (size_t)n >= sizeof(tmp)) {
            tmp[0] = '\0';
            rc = UV_ENAMETOOLONG;
            set_err(err, errlen, "%s: %s", path, uv_strerror(rc));
            goto fail;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && (errno != EEXIST || attempt >= 16)) {
            rc = -errno;
            tmp[0] = '\0';
            set_err(err, errlen, "%s: cannot create a temporary file: %s", path, uv_strerror(rc));
            goto fail;
        }
    }
    /* The exact mode, whatever the umask. */
    if (fchmod(fd, (mode_t)mode) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot set mode: %s", tmp, uv_strerror(rc));
        goto fail;
    }
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            set_err(err, errlen, "%s: cannot write: %s", tmp, uv_strerror(rc));
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (store_test_fail_after_write > 0 && --store_test_fail_after_write == 0) {
        rc = UV_EIO;
        set_err(err, errlen, "%s: cannot write: %s (test hook)", tmp, uv_strerror(rc));
        goto fail;
    }
    /* Data before name: without it a crash may leave the new name on an
     * empty file. */
    if (fsync(fd) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot sync: %s", tmp, uv_strerror(rc));
        goto fail;
    }
    rc = close(fd) == 0 ? 0 : -errno;
    fd = -1;
    if (rc != 0) {
        set_err(err, errlen, "%s: cannot write: %s", tmp, uv_strerror(rc));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot replace: %s", path, uv_strerror(rc));
        goto fail;
    }
    tmp[0] = '\0';
    /* The new content is in place but may not survive a crash yet; say so
     * rather than claim a durable write. */
    rc = fsync_dir(dir);
    if (rc != 0) {
        set_err(err, errlen, "%s: cannot sync: %s", dir, uv_strerror(rc));
        goto fail;
    }
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    if (tmp[0] != '\0')
        unlink(tmp);
    return rc;
}

void store_wipe_free(char *p, size_t len)
{
    if (p == NULL)
        return;
    explicit_bzero(p, len);
    free(p);
}

int store_read_path(const char *path, size_t max, char **data, size_t *len,
                    struct timespec *mtime, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t cap = 0, used = 0;
    struct stat st;
    int rc;

    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO where a file should be must not hang the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        if (rc != UV_ENOENT)
            set_err(err, errlen, "%s: cannot open: %s", path, uv_strerror(rc));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot stat: %s", path, uv_strerror(rc));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = UV_EINVAL;
        set_err(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    if ((size_t)st.st_size > max) {
        rc = UV_EFBIG;
        set_err(err, errlen, "%s: larger than %zu bytes", path, max);
        goto fail;
    }
    if (mtime != NULL)
        *mtime = st.st_mtim;
    /* One spare byte for the NUL, and to notice a file that grew. */
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (buf == NULL) {
        rc = UV_ENOMEM;
        set_err(err, errlen, "%s: %s", path, uv_strerror(rc));
        goto fail;
    }
    for (;;) {
        if (used == cap - 1) {
            if (cap > max) {
                rc = UV_EFBIG;
                set_err(err, errlen, "%s: larger than %zu bytes", path, max);
                goto fail;
            }
            char *nbuf = malloc(cap * 2);
            if (nbuf == NULL) {
                rc = UV_ENOMEM;
                set_err(err, errlen, "%s: %s", path, uv_strerror(rc));
                goto fail;
            }
            /* Not realloc: the old block may hold a key and must be wiped. */
            memcpy(nbuf, buf, used);
            store_wipe_free(buf, cap);
            buf = nbuf;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + used, cap - 1 - used);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            set_err(err, errlen, "%s: cannot read: %s", path, uv_strerror(rc));
            goto fail;
        }
        if (r == 0)
            break;
        used += (size_t)r;
    }
    close(fd);
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return 0;

fail:
    close(fd);
    store_wipe_free(buf, cap);
    return rc;
}

int store_read(store_t *s, const char *relpath, char **data, size_t *len, char *err, size_t errlen)
{
    char path[PATH_MAX];
    *data = NULL;
    *len = 0;
    int rc = full_path(s, relpath, path, sizeof(path), err, errlen);
    if (rc != 0)
        return rc;
    return store_read_path(path, STORE_MAX_FILE, data, len, NULL, err, errlen);
}

/* Reads RELPATH as a JSON object: UV_ENOENT when absent, UV_EINVAL naming
 * the file when it is anything else. */
static int read_json(store_t *s, const char *relpath, cJSON **out, char *err, size_t errlen)
{
    char *text = NULL;
    const char *why = NULL;
    size_t len;
    cJSON *j = NULL;
    int rc;

    *out = NULL;
    rc = store_read(s, relpath, &text, &len, err, errlen);
    if (rc != 0)
        return rc;
    rc = store_parse_object(text, len, &j, &why);
    if (rc != 0)
        set_err(err, errlen, "%s/%s: corrupt: %s", s->root, relpath, why);
    free(text);
    *out = j;
    return rc;
}

int store_parse_object(const char *text, size_t len, cJSON **out, const char **why)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    *out = NULL;
    if (j == NULL || !cJSON_IsObject(j)) {
        *why = j == NULL ? "not valid JSON" : "not a JSON object";
        cJSON_Delete(j);
        return UV_EINVAL;
    }
    *out = j;
    return 0;
}

static int write_json(store_t *s, const char *relpath, const cJSON *j, char *err, size_t errlen)
{
    char *text;
    int rc;

    if (j != NULL && !cJSON_IsObject(j)) {
        set_err(err, errlen, "%s/%s: metadata must be a JSON object", s->root, relpath);
        return UV_EINVAL;
    }
    /* Indented: administrators read these files when renewals fail. */
    text = j != NULL ? cJSON_Print(j) : strdup("{}");
    if (text == NULL) {
        set_err(err, errlen, "%s/%s: %s", s->root, relpath, uv_strerror(UV_ENOMEM));
        return UV_ENOMEM;
    }
    rc = store_write(s, relpath, text, strlen(text), 0600, err, errlen);
    free(text);
    return rc;
}

/* "acme/<ca-id>/FILE" for the account of CA_URL. */
static int account_path(store_t *s, const char *ca_url, const char *file, char *rel, size_t size,
                        char *err, size_t errlen)
{
    char *id = store_ca_id(ca_url);
    int n;

    if (id == NULL) {
        set_err(err, errlen, "%s: not an ACME directory URL \"%s\"", s->root,
                ca_url != NULL ? ca_url : "");
        return UV_EINVAL;
    }
    n = snprintf(rel, size, "acme/%s/%s", id, file);
    free(id);
    if (n < 0 || (size_t)n >= size) {
        set_err(err, errlen, "%s: %s", s->root, uv_strerror(UV_ENAMETOOLONG));
        return UV_ENAMETOOLONG;
    }
    return 0;
}

int store_save_account(store_t *s, const char *ca_url, const char *key_pem, size_t key_len,
                       const char *kid, char *err, size_t errlen)
{
    char rel_key[PATH_MAX], rel_json[PATH_MAX];
    cJSON *j = NULL;
    int rc;

    rc = account_path(s, ca_url, "account.key", rel_key, sizeof(rel_key), err, errlen);
    if (rc != 0)
        return rc;
    rc = account_path(s, ca_url, "account.json", rel_json, sizeof(rel_json), err, errlen);
    if (rc != 0)
        return rc;
    if (kid == NULL || kid[0] == '\0') {
        set_err(err, errlen, "%s/%s: no account URL to save", s->root, rel_json);
        return UV_EINVAL;
    }
    /* Key first: account.json is what makes the account exist. */
    rc = store_write(s, rel_key, key_pem, key_len, 0600, err, errlen);
    if (rc != 0)
        goto fail;
    j = cJSON_CreateObject();
    if (j == NULL || cJSON_AddStringToObject(j, "kid", kid) == NULL ||
        cJSON_AddStringToObject(j, "ca", ca_url) == NULL) {
        rc = UV_ENOMEM;
        set_err(err, errlen, "%s/%s: %s", s->root, rel_json, uv_strerror(rc));
        goto fail;
    }
    rc = write_json(s, rel_json, j, err, errlen);

fail:
    cJSON_Delete(j);
    return rc;
}

int store_load_account(store_t *s, const char *ca_url, char **key_pem, size_t *key_len, char **kid,
                       char *err, size_t errlen)
{
    char rel_key[PATH_MAX], rel_json[PATH_MAX];
    cJSON *j = NULL;
    const cJSON *k, *ca;
    char *key = NULL, *id = NULL;
    size_t klen = 0;
    int rc;

    *key_pem = NULL;
    *key_len = 0;
    *kid = NULL;
    rc = account_path(s, ca_url, "account.key", rel_key, sizeof(rel_key), err, errlen);
    if (rc != 0)
        return rc;
    rc = account_path(s, ca_url, "account.json", rel_json, sizeof(rel_json), err, errlen);
    if (rc != 0)
        return rc;
    rc = read_json(s, rel_json, &j, err, errlen);
    if (rc != 0)
        goto fail;
    k = cJSON_GetObjectItemCaseSensitive(j, "kid");
    if (!cJSON_IsString(k) || k->valuestring[0] == '\0') {
        rc = UV_EINVAL;
        set_err(err, errlen, "%s/%s: corrupt: no \"kid\" string", s->root, rel_json);
        goto fail;
    }
    /* Two directory URLs can share an id; an account is valid at one CA. */
    ca = cJSON_GetObjectItemCaseSensitive(j, "ca");
    if (ca != NULL && (!cJSON_IsString(ca) || strcmp(ca->valuestring, ca_url) != 0)) {
        rc = UV_EINVAL;
        set_err(err, errlen, "%s/%s: the account belongs to another CA (\"ca\" is not %s)", s->root,
                rel_json, ca_url);
        goto fail;
    }
    rc = store_read(s, rel_key, &key, &klen, err, errlen);
    if (rc == UV_ENOENT) {
        set_err(err, errlen, "%s/%s: missing, but %s names an account", s->root, rel_key, rel_json);
        goto fail;
    }
    if (rc != 0)
        goto fail;
    id = strdup(k->valuestring);
    if (id == NULL) {
        rc = UV_ENOMEM;
        set_err(err, errlen, "%s/%s: %s", s->root, rel_json, uv_strerror(rc));
        goto fail;
    }
    cJSON_Delete(j);
    *key_pem = key;
    *key_len = klen;
    *kid = id;
    return 0;

fail:
    store_wipe_free(key, klen);
    cJSON_Delete(j);
    return rc;
}

/* A lower-case host name, or "*." and one: [a-z0-9.-], no "..", no
 * leading '.', so it can never leave its directory. */
static int valid_name(const char *name)
{
    const char *p = name;
    size_t n;

    if (name == NULL)
        return 0;
    n = strlen(name);
    if (n == 0 || n > STORE_MAX_NAME)
        return 0;
    if (p[0] == '*' && p[1] == '.')
        p += 2;
    if (*p == '\0' || *p == '.' || strstr(p, "..") != NULL)
        return 0;
    for (; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            return 0;
    }
    return 1;
}

/* "certificates/<ca-id>/<name>/<name>" + EXT for NAME. */
static int cert_path(store_t *s, const char *ca_url, const char *name, const char *ext, char *rel,
                     size_t size, char *err, size_t errlen)
{
    char *id = NULL, file[STORE_MAX_NAME + 16];
    int n;

    if (!valid_name(name)) {
        set_err(err, errlen, "%s: invalid certificate name \"%s\" (want a lower-case host name)",
                s->root, name != NULL ? name : "");
        return UV_EINVAL;
    }
    if (name[0] == '*')
        snprintf(file, sizeof(file), "wildcard_%s", name + 1);
    else
        snprintf(file, sizeof(file), "%s", name);
    id = store_ca_id(ca_url);
    if (id == NULL) {
        set_err(err, errlen, "%s: not an ACME directory URL \"%s\"", s->root,
                ca_url != NULL ? ca_url : "");
        return UV_EINVAL;
    }
    n = snprintf(rel, size, "certificates/%s/%s/%s%s", id, file, file, ext);
    free(id);
    if (n < 0 || (size_t)n >= size) {
        set_err(err, errlen, "%s: %s", s->root, uv_strerror(UV_ENAMETOOLONG));
        return UV_ENAMETOOLONG;
    }
    return 0;
}

int store_save_cert(store_t *s, const char *ca_url, const char *name, const char *chain_pem,
                    size_t chain_len, const char *key_pem, size_t key_len, const cJSON *meta,
                    char *err, size_t errlen)
{
    char rel_crt[PATH_MAX], rel_key[PATH_MAX], rel_json[PATH_MAX];
    int rc;

    if ((rc = cert_path(s, ca_url, name, ".crt", rel_crt, sizeof(rel_crt), err, errlen)) != 0 ||
        (rc = cert_path(s, ca_url, name, ".key", rel_key, sizeof(rel_key), err, errlen)) != 0 ||
        (rc = cert_path(s, ca_url, name, ".json", rel_json, sizeof(rel_json), err, errlen)) != 0)
        return rc;
    /* This order means a crash leaves the old chain (still served) next to
     * a key that does not match it, which load's caller detects, never a
     * new chain with the old key. */
    rc = store_write(s, rel_key, key_pem, key_len, 0600, err, errlen);
    if (rc != 0)
        return rc;
    rc = store_write(s, rel_crt, chain_pem, chain_len, 0644, err, errlen);
    if (rc != 0)
        return rc;
    return write_json(s, rel_json, meta, err, errlen);
}

int store_load_cert(store_t *s, const char *ca_url, const char *name, char **chain_pem,
                    size_t *chain_len, char **key_pem, size_t *key_len, cJSON **meta, char *err,
                    size_t errlen)
{
    char rel_crt[PATH_MAX], rel_key[PATH_MAX], rel_json[PATH_MAX];
    char *chain = NULL, *key = NULL;
    size_t clen = 0, klen = 0;
    cJSON *j = NULL;
    int rc;

    *chain_pem = NULL;
    *chain_len = 0;
    *key_pem = NULL;
    *key_len = 0;
    *meta = NULL;
    if ((rc = cert_path(s, ca_url, name, ".crt", rel_crt, sizeof(rel_crt), err, errlen)) != 0 ||
        (rc = cert_path(s, ca_url, name, ".key", rel_key, sizeof(rel_key), err, errlen)) != 0 ||
        (rc = cert_path(s, ca_url, name, ".json", rel_json, sizeof(rel_json), err, errlen)) != 0)
        return rc;
    rc = store_read(s, rel_crt, &chain, &clen, err, errlen);
    if (rc != 0)
        goto fail;
    rc = store_read(s, rel_key, &key, &klen, err, errlen);
    if (rc == UV_ENOENT) {
        /* Save writes the key first: this is damage, not a crash. */
        set_err(err, errlen, "%s/%s: missing, but %s exists", s->root, rel_key, rel_crt);
        goto fail;
    }
    if (rc != 0)
        goto fail;
    rc = read_json(s, rel_json, &j, err, errlen);
    if (rc == UV_ENOENT) {
        /* A crash between chain and metadata: the caller rebuilds what it
         * needs from the certificate. */
        j = cJSON_CreateObject();
        rc = j != NULL ? 0 : UV_ENOMEM;
        if (rc != 0)
            set_err(err, errlen, "%s/%s: %s", s->root, rel_json, uv_strerror(rc));
    }
    if (rc != 0)
        goto fail;
    *chain_pem = chain;
    *chain_len = clen;
    *key_pem = key;
    *key_len = klen;
    *meta = j;
    return 0;

fail:
    free(chain);
    store_wipe_free(key, klen);
    cJSON_Delete(j);
    return rc;
}

int store_save_meta(store_t *s, const char *ca_url, const char *name, const cJSON *meta, char *err,
                    size_t errlen)
{
    char rel[PATH_MAX];
    int rc;

    rc = cert_path(s, ca_url, name, ".json", rel, sizeof(rel), err, errlen);
    if (rc != 0)
        return rc;
    return write_json(s, rel, meta, err, errlen);
}

int store_load_meta(store_t *s, const char *ca_url, const char *name, cJSON **meta, char *err,
                    size_t errlen)
{
    char rel[PATH_MAX];
    int rc;

    *meta = NULL;
    rc = cert_path(s, ca_url, name, ".json", rel, sizeof(rel), err, errlen);
    if (rc != 0)
        return rc;
    return read_json(s, rel, meta, err, errlen);
}

int store_lock(store_t *s, const char *name, int *fd, char *err, size_t errlen)
{
    char path[PATH_MAX], dir[PATH_MAX];
    int lfd = -1, rc, n;

    *fd = -1;
    if (!valid_name(name)) {
        set_err(err, errlen, "%s: invalid certificate name \"%s\" (want a lower-case host name)",
                s->root, name != NULL ? name : "");
        return UV_EINVAL;
    }
    n = snprintf(dir, sizeof(dir), "%s/locks", s->root);
    if (n < 0 || (size_t)n >= sizeof(dir))
        goto too_long;
    if (name[0] == '*')
        n = snprintf(path, sizeof(path), "%s/wildcard_%s.lock", dir, name + 1);
    else
        n = snprintf(path, sizeof(path), "%s/%s.lock", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        goto too_long;
    rc = make_dirs(dir, err, errlen);
    if (rc != 0)
        return rc;
    /* The file stays: unlinking it would let a waiter lock a dead inode
     * while a newcomer locks a fresh one. */
    lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lfd < 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot open: %s", path, uv_strerror(rc));
        return rc;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? UV_EBUSY : -errno;
        set_err(err, errlen, "%s: %s", path,
                rc == UV_EBUSY ? "already locked by another holder" : uv_strerror(rc));
        close(lfd);
        return rc;
    }
    *fd = lfd;
    return 0;

too_long:
    set_err(err, errlen, "%s/locks: %s", s->root, uv_strerror(UV_ENAMETOOLONG));
    return UV_ENAMETOOLONG;
}

void store_unlock(int fd)
{
    if (fd < 0)
        return;
    /* close() alone would release it too, unless the fd was inherited. */
    flock(fd, LOCK_UN);
    close(fd);
}
