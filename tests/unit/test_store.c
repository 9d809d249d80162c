/* Unit tests for certificate storage: layout and CA ids, atomic writes that
 * leave the old file whole on failure, permissions, corrupt files named by
 * path, name validation, and the per-name ordering lock. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "acme.h"
#include "test.h"

#define LE "https://acme-v02.api.letsencrypt.org/directory"
#define LE_ID "acme-v02.api.letsencrypt.org-directory"
#define PEBBLE "https://127.0.0.1:14000/dir"
#define PEBBLE_ID "127.0.0.1-14000-dir"

static int on_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* A fresh directory under /tmp, and the store opened at ROOT inside it. */
struct fixture {
    char dir[64];
    char root[128];
    store_t *s;
};

static void setup(struct fixture *f)
{
    char err[256] = "";

    snprintf(f->dir, sizeof(f->dir), "/tmp/psproxy-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(f->root, sizeof(f->root), "%s/root", f->dir);
    f->s = NULL;
    if (store_open(f->root, &f->s, err, sizeof(err)) != 0) {
        fprintf(stderr, "  store_open: %s\n", err);
        exit(1);
    }
}

static void teardown(struct fixture *f)
{
    store_close(f->s);
    store_test_fail_after_write = 0;
    nftw(f->dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* psproxy certs: the storage's own code when it does not open, so the
 * caller can tell a bad path (ENOTDIR) from, say, a permission problem. */
TEST(certs_status_returns_the_code_the_storage_failed_with)
{
    char dir[] = "/tmp/psproxy-store-XXXXXX", root[128];
    const char *names[] = {"example.com"};
    acme_config_t cfg = {.directory = PEBBLE};
    FILE *out = fopen("/dev/null", "w");
    int fd;

    CHECK(out != NULL && mkdtemp(dir) != NULL);
    snprintf(root, sizeof(root), "%s/file", dir);
    fd = open(root, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    close(fd);
    cfg.storage = root;
    CHECK_INT(acme_print_status(&cfg, names, 1, out), UV_ENOTDIR);
    snprintf(root, sizeof(root), "%s/root", dir);
    CHECK_INT(acme_print_status(&cfg, names, 1, out), 0);
    fclose(out);
    nftw(dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* The permission bits of ROOT/REL, or -1 when it is absent. */
static int mode_of(const struct fixture *f, const char *rel)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", f->root, rel);
    return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* Temporary files left in ROOT/REL. */
static int temps_in(const struct fixture *f, const char *rel)
{
    char path[512];
    struct dirent *e;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof(path), "%s/%s", f->root, rel);
    d = opendir(path);
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}

static char *read_rel(struct fixture *f, const char *rel)
{
    char *data = NULL, err[256];
    size_t len;

    if (store_read(f->s, rel, &data, &len, err, sizeof(err)) != 0)
        return NULL;
    return data;
}

/* Writes raw bytes at ROOT/REL behind the store's back, as damage would. */
static void put_raw(struct fixture *f, const char *rel, const char *text)
{
    char err[256];

    if (store_write(f->s, rel, text, strlen(text), 0600, err, sizeof(err)) != 0)
        fprintf(stderr, "  put_raw: %s\n", err);
}

TEST(ca_id_is_host_port_and_path)
{
    char *id;

    id = store_ca_id(LE);
    CHECK_STR(id, LE_ID);
    free(id);
    id = store_ca_id(PEBBLE);
    CHECK_STR(id, PEBBLE_ID);
    free(id);
    id = store_ca_id("https://ACME.Example.COM/a/b/");
    CHECK_STR(id, "acme.example.com-a-b");
    free(id);
    id = store_ca_id("https://ca.example");
    CHECK_STR(id, "ca.example");
    free(id);
    id = store_ca_id("https://[::1]:14000/dir?x=%2F");
    CHECK_STR(id, "_--1_-14000-dir_x__2f");
    free(id);
}

TEST(ca_id_rejects_what_is_not_a_url)
{
    CHECK(store_ca_id(NULL) == NULL);
    CHECK(store_ca_id("") == NULL);
    CHECK(store_ca_id("acme.example/dir") == NULL);
    CHECK(store_ca_id("https://") == NULL);
    CHECK(store_ca_id("https:///dir") == NULL);
    CHECK(store_ca_id("https://../x") == NULL);
    CHECK(store_ca_id("://host/dir") == NULL);
}

TEST(open_creates_root_and_parents_0700)
{
    char dir[] = "/tmp/psproxy-store-XXXXXX", root[128], path[160], err[256] = "";
    struct stat st;
    store_t *s = NULL;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(root, sizeof(root), "%s/a/b/", dir);
    CHECK_INT(store_open(root, &s, err, sizeof(err)), 0);
    CHECK(s != NULL);
    if (s != NULL) {
        snprintf(path, sizeof(path), "%s/a/b", dir);
        CHECK_STR(store_root(s), path);
    }
    snprintf(path, sizeof(path), "%s/a", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700);
    snprintf(path, sizeof(path), "%s/a/b", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0700);
    store_close(s);
    nftw(dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(open_names_the_root_when_it_is_a_file)
{
    char dir[] = "/tmp/psproxy-store-XXXXXX", root[128], err[256] = "";
    store_t *s = NULL;
    int fd;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(root, sizeof(root), "%s/file", dir);
    fd = open(root, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    close(fd);
    CHECK_INT(store_open(root, &s, err, sizeof(err)), UV_ENOTDIR);
    CHECK(s == NULL);
    CHECK(strstr(err, root) != NULL);
    snprintf(root, sizeof(root), "%s/file/sub", dir);
    CHECK_INT(store_open(root, &s, err, sizeof(err)), UV_ENOTDIR);
    CHECK(strstr(err, "/file") != NULL);
    nftw(dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(write_then_read_round_trips_bytes)
{
    struct fixture f;
    char err[256] = "", *data = NULL;
    static const char bin[] = {'a', 0, 'b', '\n', (char)0xff};
    size_t len = 0;

    setup(&f);
    CHECK_INT(store_write(f.s, "x/y/z.bin", bin, sizeof(bin), 0644, err, sizeof(err)), 0);
    CHECK_INT(store_read(f.s, "x/y/z.bin", &data, &len, err, sizeof(err)), 0);
    CHECK_INT(len, sizeof(bin));
    CHECK(data != NULL && memcmp(data, bin, sizeof(bin)) == 0 && data[len] == '\0');
    free(data);
    CHECK_INT(store_write(f.s, "empty", "", 0, 0600, err, sizeof(err)), 0);
    CHECK_INT(store_read(f.s, "empty", &data, &len, err, sizeof(err)), 0);
    CHECK_INT(len, 0);
    CHECK(data != NULL && data[0] == '\0');
    free(data);
    teardown(&f);
}

TEST(write_sets_exact_modes_and_0700_dirs)
{
    struct fixture f;
    char err[256] = "";
    mode_t old = umask(077);

    setup(&f);
    CHECK_INT(store_write(f.s, "d/pub", "p", 1, 0644, err, sizeof(err)), 0);
    CHECK_INT(store_write(f.s, "d/sec", "s", 1, 0600, err, sizeof(err)), 0);
    CHECK_INT(mode_of(&f, "d/pub"), 0644);
    CHECK_INT(mode_of(&f, "d/sec"), 0600);
    CHECK_INT(mode_of(&f, "d"), 0700);
    /* A rewrite takes the new mode too. */
    CHECK_INT(store_write(f.s, "d/pub", "q", 1, 0600, err, sizeof(err)), 0);
    CHECK_INT(mode_of(&f, "d/pub"), 0600);
    CHECK_INT(store_write(f.s, "d/pub", "q", 1, 0755, err, sizeof(err)), UV_EINVAL);
    CHECK(strstr(err, "d/pub") != NULL);
    umask(old);
    teardown(&f);
}

TEST(read_absent_is_enoent_and_leaves_err)
{
    struct fixture f;
    char err[256] = "untouched", *data = (char *)"x";
    size_t len = 7;

    setup(&f);
    CHECK_INT(store_read(f.s, "no/such/file", &data, &len, err, sizeof(err)), UV_ENOENT);
    CHECK_STR(err, "untouched");
    CHECK(data == NULL);
    CHECK_INT(len, 0);
    teardown(&f);
}

TEST(read_of_a_directory_names_it)
{
    struct fixture f;
    char err[256] = "", *data = NULL;
    size_t len;

    setup(&f);
    CHECK_INT(store_write(f.s, "dir/file", "x", 1, 0600, err, sizeof(err)), 0);
    CHECK(store_read(f.s, "dir", &data, &len, err, sizeof(err)) < 0);
    CHECK(strstr(err, f.root) != NULL && strstr(err, "/dir:") != NULL);
    CHECK(data == NULL);
    teardown(&f);
}

TEST(failed_write_keeps_old_content_and_no_temp)
{
    struct fixture f;
    char err[256] = "", *data;

    setup(&f);
    CHECK_INT(store_write(f.s, "c/file", "old", 3, 0644, err, sizeof(err)), 0);
    store_test_fail_after_write = 1;
    CHECK_INT(store_write(f.s, "c/file", "new!", 4, 0600, err, sizeof(err)), UV_EIO);
    CHECK(strstr(err, "c/.file.tmp-") != NULL);
    CHECK_INT(store_test_fail_after_write, 0);
    data = read_rel(&f, "c/file");
    CHECK_STR(data, "old");
    free(data);
    CHECK_INT(mode_of(&f, "c/file"), 0644);
    CHECK_INT(temps_in(&f, "c"), 0);
    /* The hook fired once; the next write goes through. */
    CHECK_INT(store_write(f.s, "c/file", "new!", 4, 0600, err, sizeof(err)), 0);
    data = read_rel(&f, "c/file");
    CHECK_STR(data, "new!");
    free(data);
    teardown(&f);
}

TEST(failed_rename_removes_the_temp)
{
    struct fixture f;
    char err[256] = "", path[512];

    setup(&f);
    /* A directory where the file should go: rename fails even for root,
     * who ignores read-only permissions. */
    snprintf(path, sizeof(path), "%s/c/target", f.root);
    CHECK_INT(store_write(f.s, "c/other", "x", 1, 0600, err, sizeof(err)), 0);
    CHECK(mkdir(path, 0700) == 0);
    CHECK(store_write(f.s, "c/target", "data", 4, 0644, err, sizeof(err)) < 0);
    CHECK(strstr(err, path) != NULL);
    CHECK_INT(mode_of(&f, "c/target"), 0700);
    CHECK_INT(temps_in(&f, "c"), 0);
    teardown(&f);
}

TEST(write_into_read_only_dir_keeps_old_content)
{
    struct fixture f;
    char err[256] = "", path[512], *data;

    /* root ignores permissions; the hook test covers it there. */
    if (geteuid() == 0)
        return;
    setup(&f);
    CHECK_INT(store_write(f.s, "ro/file", "old", 3, 0644, err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/ro", f.root);
    CHECK(chmod(path, 0500) == 0);
    CHECK_INT(store_write(f.s, "ro/file", "new", 3, 0644, err, sizeof(err)), UV_EACCES);
    CHECK(strstr(err, path) != NULL);
    data = read_rel(&f, "ro/file");
    CHECK_STR(data, "old");
    free(data);
    CHECK_INT(temps_in(&f, "ro"), 0);
    chmod(path, 0700);
    teardown(&f);
}

TEST(paths_cannot_leave_the_root)
{
    static const char *const bad[] = {"../x", "/etc/x", "a/../../x", "",
                                      "a//b", "./x",    "a/..",      "a/"};
    struct fixture f;
    char err[256], path[512], *data;
    size_t len;

    setup(&f);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_INT(store_write(f.s, bad[i], "x", 1, 0600, err, sizeof(err)), UV_EINVAL);
        CHECK(strstr(err, "invalid path") != NULL);
        CHECK_INT(store_read(f.s, bad[i], &data, &len, err, sizeof(err)), UV_EINVAL);
    }
    snprintf(path, sizeof(path), "%s/x", f.dir);
    CHECK(access(path, F_OK) != 0);
    teardown(&f);
}

TEST(account_round_trips_with_modes)
{
    struct fixture f;
    char err[256] = "", *key = NULL, *kid = NULL, *json;
    size_t klen = 0;
    const char *pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    setup(&f);
    CHECK_INT(store_save_account(f.s, LE, pem, strlen(pem), "https://le/acct/1", err, sizeof(err)),
              0);
    CHECK_INT(store_load_account(f.s, LE, &key, &klen, &kid, err, sizeof(err)), 0);
    CHECK_STR(key, pem);
    CHECK_INT(klen, strlen(pem));
    CHECK_STR(kid, "https://le/acct/1");
    free(key);
    free(kid);
    CHECK_INT(mode_of(&f, ""), 0700);
    CHECK_INT(mode_of(&f, "acme"), 0700);
    CHECK_INT(mode_of(&f, "acme/" LE_ID), 0700);
    CHECK_INT(mode_of(&f, "acme/" LE_ID "/account.key"), 0600);
    CHECK_INT(mode_of(&f, "acme/" LE_ID "/account.json"), 0600);
    json = read_rel(&f, "acme/" LE_ID "/account.json");
    CHECK(json != NULL && strstr(json, "\"ca\":\t\"" LE "\"") != NULL);
    free(json);
    /* Another CA has its own account. */
    CHECK_INT(store_load_account(f.s, PEBBLE, &key, &klen, &kid, err, sizeof(err)), UV_ENOENT);
    teardown(&f);
}

TEST(account_is_absent_until_its_json_exists)
{
    struct fixture f;
    char err[256] = "untouched", *key = NULL, *kid = NULL;
    size_t klen = 0;

    setup(&f);
    CHECK_INT(store_load_account(f.s, PEBBLE, &key, &klen, &kid, err, sizeof(err)), UV_ENOENT);
    /* A crash after the key, before account.json. */
    put_raw(&f, "acme/" PEBBLE_ID "/account.key", "KEY");
    CHECK_INT(store_load_account(f.s, PEBBLE, &key, &klen, &kid, err, sizeof(err)), UV_ENOENT);
    CHECK_STR(err, "untouched");
    CHECK(key == NULL && kid == NULL);
    teardown(&f);
}

TEST(account_corrupt_json_is_reported_with_its_path)
{
    struct fixture f;
    char err[256] = "", *key = NULL, *kid = NULL, *json;
    size_t klen = 0;

    setup(&f);
    CHECK_INT(store_save_account(f.s, PEBBLE, "KEY", 3, "https://p/acct/1", err, sizeof(err)), 0);
    put_raw(&f, "acme/" PEBBLE_ID "/account.json", "{\"kid\": \"https://p/ac");
    CHECK_INT(store_load_account(f.s, PEBBLE, &key, &klen, &kid, err, sizeof(err)), UV_EINVAL);
    CHECK(strstr(err, f.root) != NULL);
    CHECK(strstr(err, "acme/" PEBBLE_ID "/account.json") != NULL);
    CHECK(key == NULL && kid == NULL);
    /* Reported, not replaced. */
    json = read_rel(&f, "acme/" PEBBLE_ID "/account.json");
    CHECK_STR(json, "{\"kid\": \"https://p/ac");
    free(json);
    put_raw(&f, "acme/" PEBBLE_ID "/account.json", "{\"kid\": 5}");
    CHECK_INT(store_load_account(f.s, PEBBLE, &key, &klen, &kid, err, sizeof(err)), UV_EINVAL);
    CHECK(strstr(err, "account.json") != NULL && strstr(err, "kid") != NULL);
    teardown(&f);
}

TEST(account_of_another_ca_with_the_same_id_is_refused)
{
    struct fixture f;
    char err[256] = "", *key = NULL, *kid = NULL;
    size_t klen = 0;

    setup(&f);
    CHECK_INT(
        store_save_account(f.s, "https://ca.example/dir", "KEY", 3, "https://k", err, sizeof(err)),
        0);
    /* The scheme is not part of the id. */
    CHECK_INT(store_load_account(f.s, "http://ca.example/dir", &key, &klen, &kid, err, sizeof(err)),
              UV_EINVAL);
    CHECK(strstr(err, "account.json") != NULL && strstr(err, "another CA") != NULL);
    CHECK(key == NULL && kid == NULL);
    teardown(&f);
}

TEST(account_without_its_key_is_an_error)
{
    struct fixture f;
    char err[256] = "", path[512], *key = NULL, *kid = NULL;
    size_t klen = 0;

    setup(&f);
    CHECK_INT(store_save_account(f.s, PEBBLE, "KEY", 3, "https://p/acct/1", err, sizeof(err)), 0);
    snprintf(path, sizeof(path), "%s/acme/" PEBBLE_ID "/account.key", f.root);
    CHECK(unlink(path) == 0);
    CHECK_INT(store_load_account(f.s, PEBBLE, &key, &klen, &kid, err, sizeof(err)), UV_ENOENT);
    CHECK(strstr(err, path) != NULL);
    CHECK(key == NULL && kid == NULL);
    teardown(&f);
}

TEST(account_rejects_bad_urls_and_empty_kid)
{
    struct fixture f;
    char err[256] = "";

    setup(&f);
    CHECK_INT(store_save_account(f.s, "not a url", "KEY", 3, "k", err, sizeof(err)), UV_EINVAL);
    CHECK(strstr(err, "not a url") != NULL);
    CHECK_INT(store_save_account(f.s, PEBBLE, "KEY", 3, "", err, sizeof(err)), UV_EINVAL);
    CHECK_INT(mode_of(&f, "acme/" PEBBLE_ID "/account.key"), -1);
    teardown(&f);
}

/* Saves a certificate for NAME whose chain, key and metadata all say V. */
static int save_v(struct fixture *f, const char *name, int v)
{
    char chain[64], key[64], err[256] = "";
    cJSON *meta = cJSON_CreateObject();
    int rc;

    snprintf(chain, sizeof(chain), "CHAIN %d\n", v);
    snprintf(key, sizeof(key), "KEY %d\n", v);
    cJSON_AddNumberToObject(meta, "version", v);
    rc = store_save_cert(f->s, PEBBLE, name, chain, strlen(chain), key, strlen(key), meta, err,
                         sizeof(err));
    cJSON_Delete(meta);
    return rc;
}

/* Loads NAME and checks which version each of its three parts is. */
static void check_versions(struct fixture *f, const char *name, int chain_v, int key_v, int meta_v)
{
    char *chain = NULL, *key = NULL, want[64], err[256] = "";
    size_t clen, klen;
    cJSON *meta = NULL;

    CHECK_INT(
        store_load_cert(f->s, PEBBLE, name, &chain, &clen, &key, &klen, &meta, err, sizeof(err)),
        0);
    snprintf(want, sizeof(want), "CHAIN %d\n", chain_v);
    CHECK_STR(chain, want);
    CHECK_INT(clen, strlen(want));
    snprintf(want, sizeof(want), "KEY %d\n", key_v);
    CHECK_STR(key, want);
    CHECK_INT(klen, strlen(want));
    CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(meta, "version")), meta_v);
    free(chain);
    free(key);
    cJSON_Delete(meta);
}

TEST(cert_round_trips_with_modes)
{
    struct fixture f;
    const char *dir = "certificates/" PEBBLE_ID "/example.com";

    setup(&f);
    CHECK_INT(save_v(&f, "example.com", 1), 0);
    check_versions(&f, "example.com", 1, 1, 1);
    CHECK_INT(mode_of(&f, "certificates"), 0700);
    CHECK_INT(mode_of(&f, "certificates/" PEBBLE_ID), 0700);
    CHECK_INT(mode_of(&f, dir), 0700);
    CHECK_INT(mode_of(&f, "certificates/" PEBBLE_ID "/example.com/example.com.crt"), 0644);
    CHECK_INT(mode_of(&f, "certificates/" PEBBLE_ID "/example.com/example.com.key"), 0600);
    CHECK_INT(mode_of(&f, "certificates/" PEBBLE_ID "/example.com/example.com.json"), 0600);
    CHECK_INT(save_v(&f, "example.com", 2), 0);
    check_versions(&f, "example.com", 2, 2, 2);
    CHECK_INT(temps_in(&f, dir), 0);
    teardown(&f);
}

TEST(wildcard_is_stored_as_wildcard_underscore)
{
    struct fixture f;

    setup(&f);
    CHECK_INT(save_v(&f, "*.example.com", 3), 0);
    CHECK_INT(
        mode_of(&f, "certificates/" PEBBLE_ID "/wildcard_.example.com/wildcard_.example.com.crt"),
        0644);
    check_versions(&f, "*.example.com", 3, 3, 3);
    teardown(&f);
}

TEST(cert_absent_is_enoent)
{
    struct fixture f;
    char err[256] = "untouched", *chain = NULL, *key = NULL;
    size_t clen, klen;
    cJSON *meta = NULL;

    setup(&f);
    CHECK_INT(store_load_cert(f.s, PEBBLE, "example.com", &chain, &clen, &key, &klen, &meta, err,
                              sizeof(err)),
              UV_ENOENT);
    CHECK_STR(err, "untouched");
    /* A crash after the first key, before its chain. */
    put_raw(&f, "certificates/" PEBBLE_ID "/example.com/example.com.key", "KEY 1\n");
    CHECK_INT(store_load_cert(f.s, PEBBLE, "example.com", &chain, &clen, &key, &klen, &meta, err,
                              sizeof(err)),
              UV_ENOENT);
    CHECK(chain == NULL && key == NULL && meta == NULL);
    teardown(&f);
}

TEST(cert_corrupt_meta_is_reported_with_its_path)
{
    struct fixture f;
    char err[256] = "", *chain = NULL, *key = NULL;
    const char *rel = "certificates/" PEBBLE_ID "/example.com/example.com.json";
    size_t clen, klen;
    cJSON *meta = NULL;

    setup(&f);
    CHECK_INT(save_v(&f, "example.com", 1), 0);
    put_raw(&f, rel, "{\"failures\": 2,");
    CHECK_INT(store_load_cert(f.s, PEBBLE, "example.com", &chain, &clen, &key, &klen, &meta, err,
                              sizeof(err)),
              UV_EINVAL);
    CHECK(strstr(err, rel) != NULL && strstr(err, f.root) != NULL);
    CHECK(chain == NULL && key == NULL && meta == NULL);
    put_raw(&f, rel, "[1, 2]");
    CHECK_INT(store_load_meta(f.s, PEBBLE, "example.com", &meta, err, sizeof(err)), UV_EINVAL);
    CHECK(strstr(err, rel) != NULL && strstr(err, "not a JSON object") != NULL);
    CHECK(meta == NULL);
    teardown(&f);
}

TEST(cert_without_meta_loads_an_empty_object)
{
    struct fixture f;
    char err[256] = "", path[512], *chain = NULL, *key = NULL;
    size_t clen, klen;
    cJSON *meta = NULL;

    setup(&f);
    CHECK_INT(save_v(&f, "example.com", 1), 0);
    snprintf(path, sizeof(path), "%s/certificates/" PEBBLE_ID "/example.com/example.com.json",
             f.root);
    CHECK(unlink(path) == 0);
    CHECK_INT(store_load_cert(f.s, PEBBLE, "example.com", &chain, &clen, &key, &klen, &meta, err,
                              sizeof(err)),
              0);
    CHECK(cJSON_IsObject(meta) && meta->child == NULL);
    free(chain);
    free(key);
    cJSON_Delete(meta);
    teardown(&f);
}

TEST(cert_without_key_is_an_error)
{
    struct fixture f;
    char err[256] = "", path[512], *chain = NULL, *key = NULL;
    size_t clen, klen;
    cJSON *meta = NULL;

    setup(&f);
    CHECK_INT(save_v(&f, "example.com", 1), 0);
    snprintf(path, sizeof(path), "%s/certificates/" PEBBLE_ID "/example.com/example.com.key",
             f.root);
    CHECK(unlink(path) == 0);
    CHECK(store_load_cert(f.s, PEBBLE, "example.com", &chain, &clen, &key, &klen, &meta, err,
                          sizeof(err)) < 0);
    CHECK(strstr(err, path) != NULL);
    CHECK(chain == NULL && key == NULL && meta == NULL);
    teardown(&f);
}

TEST(save_failing_at_key_keeps_the_old_triple)
{
    struct fixture f;

    setup(&f);
    CHECK_INT(save_v(&f, "example.com", 1), 0);
    store_test_fail_after_write = 1;
    CHECK_INT(save_v(&f, "example.com", 2), UV_EIO);
    check_versions(&f, "example.com", 1, 1, 1);
    CHECK_INT(temps_in(&f, "certificates/" PEBBLE_ID "/example.com"), 0);
    teardown(&f);
}

TEST(save_failing_after_key_leaves_old_chain_and_new_key)
{
    struct fixture f;

    setup(&f);
    CHECK_INT(save_v(&f, "example.com", 1), 0);
    store_test_fail_after_write = 2;
    CHECK_INT(save_v(&f, "example.com", 2), UV_EIO);
    /* Never a new chain with the old key. */
    check_versions(&f, "example.com", 1, 2, 1);
    store_test_fail_after_write = 3;
    CHECK_INT(save_v(&f, "example.com", 3), UV_EIO);
    check_versions(&f, "example.com", 3, 3, 1);
    CHECK_INT(temps_in(&f, "certificates/" PEBBLE_ID "/example.com"), 0);
    teardown(&f);
}

TEST(meta_round_trips_before_any_cert)
{
    struct fixture f;
    char err[256] = "untouched", *chain = NULL, *key = NULL;
    size_t clen, klen;
    cJSON *meta = cJSON_CreateObject(), *got = NULL;

    setup(&f);
    CHECK_INT(store_load_meta(f.s, PEBBLE, "new.example", &got, err, sizeof(err)), UV_ENOENT);
    CHECK_STR(err, "untouched");
    cJSON_AddNumberToObject(meta, "failures", 3);
    cJSON_AddStringToObject(meta, "last_error", "urn:ietf:params:acme:error:dns");
    CHECK_INT(store_save_meta(f.s, PEBBLE, "new.example", meta, err, sizeof(err)), 0);
    CHECK_INT(store_load_meta(f.s, PEBBLE, "new.example", &got, err, sizeof(err)), 0);
    CHECK_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(got, "failures")), 3);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(got, "last_error")),
              "urn:ietf:params:acme:error:dns");
    cJSON_Delete(got);
    /* Bookkeeping alone is not a certificate. */
    CHECK_INT(store_load_cert(f.s, PEBBLE, "new.example", &chain, &clen, &key, &klen, &got, err,
                              sizeof(err)),
              UV_ENOENT);
    CHECK_INT(store_save_meta(f.s, PEBBLE, "new.example", NULL, err, sizeof(err)), 0);
    CHECK_INT(store_load_meta(f.s, PEBBLE, "new.example", &got, err, sizeof(err)), 0);
    CHECK(cJSON_IsObject(got) && got->child == NULL);
    cJSON_Delete(got);
    cJSON_Delete(meta);
    teardown(&f);
}

TEST(names_are_validated)
{
    static const char *const bad[] = {
        "../x",
        "a/b",
        "..",
        ".",
        "",
        "Example.com",
        "a..b",
        ".example.com",
        "x*.example.com",
        "*",
        "*.",
        "*..x",
        "a_b",
        "*.*.example.com",
        "a b",
        "a\\b",
        "wildcard_.example.com",
    };
    static const char *const good[] = {"example.com", "*.example.com", "a-b.c0.example",
                                       "localhost", "127.0.0.1"};
    struct fixture f;
    char err[256], *chain, *key;
    size_t clen, klen;
    cJSON *meta = cJSON_CreateObject(), *got;
    int fd;

    setup(&f);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (store_save_cert(f.s, PEBBLE, bad[i], "C", 1, "K", 1, meta, err, sizeof(err)) !=
            UV_EINVAL)
            TEST_FAIL("accepted \"%s\"", bad[i]);
        CHECK(strstr(err, "invalid certificate name") != NULL);
        CHECK_INT(store_load_cert(f.s, PEBBLE, bad[i], &chain, &clen, &key, &klen, &got, err,
                                  sizeof(err)),
                  UV_EINVAL);
        CHECK_INT(store_save_meta(f.s, PEBBLE, bad[i], meta, err, sizeof(err)), UV_EINVAL);
        CHECK_INT(store_load_meta(f.s, PEBBLE, bad[i], &got, err, sizeof(err)), UV_EINVAL);
        CHECK_INT(store_lock(f.s, bad[i], &fd, err, sizeof(err)), UV_EINVAL);
        CHECK_INT(fd, -1);
    }
    CHECK_INT(store_save_cert(f.s, PEBBLE, NULL, "C", 1, "K", 1, meta, err, sizeof(err)),
              UV_EINVAL);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CHECK_INT(store_save_cert(f.s, PEBBLE, good[i], "C", 1, "K", 1, meta, err, sizeof(err)), 0);
    }
    /* Nothing escaped the certificates directory. */
    CHECK_INT(mode_of(&f, "certificates/x"), -1);
    CHECK_INT(mode_of(&f, "certificates/" PEBBLE_ID "/a"), -1);
    cJSON_Delete(meta);
    teardown(&f);
}

TEST(lock_is_exclusive_until_unlocked)
{
    struct fixture f;
    char err[256] = "";
    int a = -1, b = -1, c = -1;

    setup(&f);
    CHECK_INT(store_lock(f.s, "example.com", &a, err, sizeof(err)), 0);
    CHECK(a >= 0);
    CHECK_INT(mode_of(&f, "locks/example.com.lock"), 0600);
    CHECK_INT(mode_of(&f, "locks"), 0700);
    /* A fresh open is a fresh open file description: flock conflicts. */
    CHECK_INT(store_lock(f.s, "example.com", &b, err, sizeof(err)), UV_EBUSY);
    CHECK_INT(b, -1);
    CHECK(strstr(err, "locks/example.com.lock") != NULL);
    /* Other names are independent, the wildcard included. */
    CHECK_INT(store_lock(f.s, "*.example.com", &c, err, sizeof(err)), 0);
    CHECK_INT(mode_of(&f, "locks/wildcard_.example.com.lock"), 0600);
    store_unlock(c);
    store_unlock(a);
    CHECK_INT(store_lock(f.s, "example.com", &b, err, sizeof(err)), 0);
    store_unlock(b);
    store_unlock(-1);
    teardown(&f);
}

TEST_MAIN()
