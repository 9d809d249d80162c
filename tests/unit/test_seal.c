/* Unit tests for sealing keys at rest: round trips, a fresh nonce per seal,
 * every tampered, truncated, wrong-key or wrong-row value refused, the
 * format checked against OpenSSL's GCM and a fixed vector, and the key
 * file's contents and mode. */
#include "seal.h"

#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "common.h"
#include "store.h"
#include "test.h"

#define AAD_CERT "psproxy cert https://ca/dir example.com"
#define AAD_ACCOUNT "psproxy account https://ca/dir"
#define PEM "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
/* The key 00 01 02 ... 1f, as a key file holds it. */
#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_HEX_UPPER "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"

static int on_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* A fresh directory under /tmp for key files. */
struct fixture {
    char dir[64];
    char path[128];
};

static void setup(struct fixture *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/psproxy-seal-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(f->path, sizeof(f->path), "%s/seal.key", f->dir);
}

static void teardown(struct fixture *f)
{
    nftw(f->dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes LEN bytes of TEXT as f->path with exactly MODE (whatever the umask). */
static void put_key_file(struct fixture *f, const char *text, size_t len, mode_t mode)
{
    int fd;

    unlink(f->path);
    fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || fchmod(fd, mode) != 0) {
        perror(f->path);
        exit(1);
    }
    close(fd);
}

/* The key 00 01 02 ... 1f, and the same with its last bit flipped. */
static void kat_key(seal_key_t *key)
{
    for (int i = 0; i < SEAL_KEY_LEN; i++)
        key->bytes[i] = (unsigned char)i;
}

static void other_key(seal_key_t *key)
{
    kat_key(key);
    key->bytes[SEAL_KEY_LEN - 1] ^= 1;
}

/* Seals with EVP directly, with the given header VERSION and NONCE and the
 * additional data exactly as AAD/AADLEN (one update, unlike seal.c): the
 * format as seal.h writes it down, independent of seal_encrypt. OUT needs
 * SEAL_OVERHEAD + LEN bytes; returns its length, 0 on an OpenSSL error. */
static size_t evp_seal(const seal_key_t *key, unsigned char version, const unsigned char *nonce,
                       const void *aad, size_t aadlen, const void *plain, size_t len,
                       unsigned char *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char *ct = out + 1 + SEAL_NONCE_LEN;
    int n, m;
    size_t rc = 0;

    out[0] = version;
    memcpy(out + 1, nonce, SEAL_NONCE_LEN);
    if (ctx != NULL && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_LEN, NULL) == 1 &&
        EVP_EncryptInit_ex(ctx, NULL, NULL, key->bytes, nonce) == 1 &&
        EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) == 1 &&
        EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) == 1 &&
        EVP_EncryptFinal_ex(ctx, ct + n, &m) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, ct + n + m) == 1)
        rc = SEAL_OVERHEAD + len;
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* Opens IN and expects RC; on success the plaintext must be WANT/WANTLEN. */
static void check_open(const seal_key_t *key, const char *aad, const unsigned char *in, size_t len,
                       int rc, const void *want, size_t wantlen)
{
    char *plain = (char *)"x";
    size_t plainlen = 7;

    CHECK_INT(seal_decrypt(key, aad, in, len, &plain, &plainlen), rc);
    if (rc != 0) {
        CHECK(plain == NULL);
        CHECK_INT(plainlen, 0);
        return;
    }
    CHECK_INT(plainlen, wantlen);
    CHECK(plain != NULL && plain[wantlen] == '\0');
    if (plain != NULL && wantlen > 0)
        CHECK(memcmp(plain, want, wantlen) == 0);
    store_wipe_free(plain, plainlen);
}

/* Seals WANT/LEN under KAT key and AAD_CERT, checks the shape, opens it. */
static void check_round_trip(const void *want, size_t len)
{
    seal_key_t key;
    unsigned char *sealed = NULL;
    size_t sealedlen = 0;

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, want, len, &sealed, &sealedlen), 0);
    CHECK_INT(sealedlen, SEAL_OVERHEAD + len);
    CHECK(sealed != NULL && sealed[0] == SEAL_VERSION);
    /* Ciphertext, not the plaintext copied through. */
    if (len >= 16)
        CHECK(memcmp(sealed + 1 + SEAL_NONCE_LEN, want, len) != 0);
    check_open(&key, AAD_CERT, sealed, sealedlen, 0, want, len);
    free(sealed);
}

TEST(seal_round_trips_a_pem)
{
    check_round_trip(PEM, strlen(PEM));
}

TEST(seal_round_trips_empty_plaintext)
{
    check_round_trip("", 0);
    check_round_trip(NULL, 0);
}

TEST(seal_round_trips_10_kib_of_binary)
{
    unsigned char big[10 * 1024];

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7 + (i >> 8));
    big[100] = '\0';
    check_round_trip(big, sizeof(big));
}

TEST(seal_takes_an_empty_aad)
{
    seal_key_t key;
    unsigned char *sealed = NULL;
    size_t sealedlen = 0;

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, "", PEM, strlen(PEM), &sealed, &sealedlen), 0);
    check_open(&key, "", sealed, sealedlen, 0, PEM, strlen(PEM));
    check_open(&key, AAD_CERT, sealed, sealedlen, PS_EPROTO, NULL, 0);
    free(sealed);
}

TEST(seal_refuses_a_null_aad)
{
    seal_key_t key;
    unsigned char *sealed = (unsigned char *)"x", in[SEAL_OVERHEAD] = {SEAL_VERSION};
    size_t sealedlen = 7;

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, NULL, PEM, strlen(PEM), &sealed, &sealedlen), UV_EINVAL);
    CHECK(sealed == NULL);
    CHECK_INT(sealedlen, 0);
    check_open(&key, NULL, in, sizeof(in), UV_EINVAL, NULL, 0);
}

TEST(two_seals_of_the_same_plaintext_differ)
{
    seal_key_t key;
    unsigned char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, PEM, strlen(PEM), &a, &alen), 0);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, PEM, strlen(PEM), &b, &blen), 0);
    CHECK_INT(alen, blen);
    if (a != NULL && b != NULL) {
        CHECK(memcmp(a + 1, b + 1, SEAL_NONCE_LEN) != 0);
        CHECK(memcmp(a + 1 + SEAL_NONCE_LEN, b + 1 + SEAL_NONCE_LEN, alen - 1 - SEAL_NONCE_LEN) !=
              0);
    }
    check_open(&key, AAD_CERT, a, alen, 0, PEM, strlen(PEM));
    check_open(&key, AAD_CERT, b, blen, 0, PEM, strlen(PEM));
    free(a);
    free(b);
}

TEST(tampering_any_byte_is_refused)
{
    seal_key_t key;
    unsigned char *sealed = NULL;
    size_t sealedlen = 0;
    static const unsigned char flips[] = {0x01, 0x80, 0xff};

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, PEM, strlen(PEM), &sealed, &sealedlen), 0);
    if (sealed == NULL)
        return;
    /* Byte 0 is the version, then the nonce, the ciphertext and the tag. */
    for (size_t i = 0; i < sealedlen; i++) {
        for (size_t j = 0; j < sizeof(flips); j++) {
            sealed[i] ^= flips[j];
            check_open(&key, AAD_CERT, sealed, sealedlen, i == 0 ? UV_EINVAL : PS_EPROTO, NULL, 0);
            sealed[i] ^= flips[j];
        }
    }
    /* And each region by name, for the failure message. */
    sealed[1] ^= 1; /* nonce */
    check_open(&key, AAD_CERT, sealed, sealedlen, PS_EPROTO, NULL, 0);
    sealed[1] ^= 1;
    sealed[1 + SEAL_NONCE_LEN + 5] ^= 1; /* ciphertext */
    check_open(&key, AAD_CERT, sealed, sealedlen, PS_EPROTO, NULL, 0);
    sealed[1 + SEAL_NONCE_LEN + 5] ^= 1;
    sealed[sealedlen - 1] ^= 1; /* tag */
    check_open(&key, AAD_CERT, sealed, sealedlen, PS_EPROTO, NULL, 0);
    sealed[sealedlen - 1] ^= 1;
    check_open(&key, AAD_CERT, sealed, sealedlen, 0, PEM, strlen(PEM));
    free(sealed);
}

TEST(truncated_or_extended_input_is_refused)
{
    seal_key_t key;
    unsigned char *sealed = NULL, *longer;
    size_t sealedlen = 0;

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, PEM, strlen(PEM), &sealed, &sealedlen), 0);
    if (sealed == NULL)
        return;
    for (size_t n = 0; n < sealedlen; n++)
        check_open(&key, AAD_CERT, sealed, n, n < SEAL_OVERHEAD ? UV_EINVAL : PS_EPROTO, NULL, 0);
    longer = malloc(sealedlen + 1);
    memcpy(longer, sealed, sealedlen);
    longer[sealedlen] = 0;
    check_open(&key, AAD_CERT, longer, sealedlen + 1, PS_EPROTO, NULL, 0);
    free(longer);
    free(sealed);
}

TEST(wrong_key_is_refused)
{
    seal_key_t key, other;
    unsigned char *sealed = NULL;
    size_t sealedlen = 0;

    kat_key(&key);
    other_key(&other);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, PEM, strlen(PEM), &sealed, &sealedlen), 0);
    check_open(&other, AAD_CERT, sealed, sealedlen, PS_EPROTO, NULL, 0);
    free(sealed);
    /* Empty plaintext: the tag alone must still tell. */
    CHECK_INT(seal_encrypt(&key, AAD_CERT, "", 0, &sealed, &sealedlen), 0);
    check_open(&other, AAD_CERT, sealed, sealedlen, PS_EPROTO, NULL, 0);
    free(sealed);
}

TEST(wrong_aad_is_refused)
{
    static const char *const wrong[] = {
        AAD_ACCOUNT,
        "psproxy cert https://ca/dir example.org",
        "psproxy cert https://other/dir example.com",
        "psproxy cert https://ca/dir example.com ",
        "psproxy cert https://ca/dir example.co",
        "",
    };
    seal_key_t key;
    unsigned char *sealed = NULL;
    size_t sealedlen = 0;

    kat_key(&key);
    CHECK_INT(seal_encrypt(&key, AAD_CERT, PEM, strlen(PEM), &sealed, &sealedlen), 0);
    for (size_t i = 0; i < PS_ARRAY_SIZE(wrong); i++)
        check_open(&key, wrong[i], sealed, sealedlen, PS_EPROTO, NULL, 0);
    check_open(&key, AAD_CERT, sealed, sealedlen, 0, PEM, strlen(PEM));
    free(sealed);
}

TEST(opens_a_value_sealed_with_evp_directly)
{
    static const unsigned char nonce[SEAL_NONCE_LEN] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce,
                                                        0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88};
    unsigned char aad[128], out[SEAL_OVERHEAD + sizeof(PEM)];
    size_t aadlen = strlen(AAD_CERT), n;
    seal_key_t key;

    kat_key(&key);
    aad[0] = SEAL_VERSION;
    memcpy(aad + 1, AAD_CERT, aadlen);
    n = evp_seal(&key, SEAL_VERSION, nonce, aad, 1 + aadlen, PEM, strlen(PEM), out);
    CHECK_INT(n, SEAL_OVERHEAD + strlen(PEM));
    check_open(&key, AAD_CERT, out, n, 0, PEM, strlen(PEM));
}

TEST(version_byte_is_authenticated)
{
    static const unsigned char nonce[SEAL_NONCE_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    unsigned char aad[128], out[SEAL_OVERHEAD + sizeof(PEM)];
    size_t aadlen = strlen(AAD_CERT), n;
    seal_key_t key;

    kat_key(&key);
    /* Version 1 in the header, but not in the additional data. */
    n = evp_seal(&key, SEAL_VERSION, nonce, AAD_CERT, aadlen, PEM, strlen(PEM), out);
    CHECK_INT(n, SEAL_OVERHEAD + strlen(PEM));
    check_open(&key, AAD_CERT, out, n, PS_EPROTO, NULL, 0);
    /* A well-formed value of a version we do not know. */
    aad[0] = 0x02;
    memcpy(aad + 1, AAD_CERT, aadlen);
    n = evp_seal(&key, 0x02, nonce, aad, 1 + aadlen, PEM, strlen(PEM), out);
    check_open(&key, AAD_CERT, out, n, UV_EINVAL, NULL, 0);
}

TEST(opens_a_fixed_vector)
{
    /* Made with Python's cryptography (AESGCM, its own OpenSSL build):
     * key 00..1f, nonce cafebabefacedbaddecaf888, additional data
     * "\x01" AAD_CERT, plaintext PEM. Values in a database must keep
     * opening: this pins the format. */
    static const char hex[] = "01cafebabefacedbaddecaf888a78e8d0b87380a5c0f457d8d2954df7e5965e0"
                              "1a9a40475963f2297bf3ca51bcec018031838510266d697e1f70c06920101594"
                              "6ca9a7a5fd0ebf3472fac4e71028d41f260a64169a09f70b338533fab2899871"
                              "3bb3cead61724b3654480668";
    unsigned char in[sizeof(hex) / 2];
    seal_key_t key, other;
    unsigned int b;

    for (size_t i = 0; i < sizeof(in); i++) {
        sscanf(hex + 2 * i, "%2x", &b);
        in[i] = (unsigned char)b;
    }
    CHECK_INT(sizeof(in), SEAL_OVERHEAD + strlen(PEM));
    kat_key(&key);
    other_key(&other);
    check_open(&key, AAD_CERT, in, sizeof(in), 0, PEM, strlen(PEM));
    check_open(&other, AAD_CERT, in, sizeof(in), PS_EPROTO, NULL, 0);
    check_open(&key, AAD_ACCOUNT, in, sizeof(in), PS_EPROTO, NULL, 0);
}

TEST(a_pem_stored_in_the_clear_is_not_a_sealed_value)
{
    seal_key_t key;

    kat_key(&key);
    check_open(&key, AAD_CERT, (const unsigned char *)PEM, strlen(PEM), UV_EINVAL, NULL, 0);
}

/* Loads f->path and expects the KAT key. */
static void check_loads_kat(struct fixture *f)
{
    char err[256] = "";
    seal_key_t key, want;

    memset(&key, 0xaa, sizeof(key));
    CHECK_INT(seal_key_load(f->path, &key, err, sizeof(err)), 0);
    CHECK_STR(err, "");
    kat_key(&want);
    CHECK(memcmp(key.bytes, want.bytes, SEAL_KEY_LEN) == 0);
    seal_key_wipe(&key);
}

/* Loads f->path and expects RC, a zeroed key, and an error naming the
 * path and containing WHAT. */
static void check_refused(struct fixture *f, int rc, const char *what)
{
    char err[256] = "";
    seal_key_t key, zero;

    memset(&key, 0xaa, sizeof(key));
    memset(&zero, 0, sizeof(zero));
    CHECK_INT(seal_key_load(f->path, &key, err, sizeof(err)), rc);
    CHECK(memcmp(&key, &zero, sizeof(key)) == 0);
    CHECK(strncmp(err, f->path, strlen(f->path)) == 0);
    if (strstr(err, what) == NULL)
        TEST_FAIL("error \"%s\" does not say \"%s\"", err, what);
}

TEST(key_file_in_lower_or_upper_case_loads)
{
    struct fixture f;

    setup(&f);
    put_key_file(&f, KEY_HEX, strlen(KEY_HEX), 0600);
    check_loads_kat(&f);
    put_key_file(&f, KEY_HEX_UPPER, strlen(KEY_HEX_UPPER), 0600);
    check_loads_kat(&f);
    put_key_file(&f, KEY_HEX "\n", strlen(KEY_HEX) + 1, 0600);
    check_loads_kat(&f);
    teardown(&f);
}

TEST(key_file_of_the_wrong_length_is_refused)
{
    static const char *const bad[] = {
        "",
        "\n",
        KEY_HEX_UPPER "0",
        KEY_HEX "00\n",
        /* A whole second key: bigger than the reader takes at all. */
        KEY_HEX KEY_HEX KEY_HEX,
    };
    char text[80];
    struct fixture f;

    setup(&f);
    for (size_t i = 0; i < PS_ARRAY_SIZE(bad); i++) {
        put_key_file(&f, bad[i], strlen(bad[i]), 0600);
        check_refused(&f, UV_EINVAL,
                      ": expected 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`");
    }
    /* One character short, with and without the newline. */
    memcpy(text, KEY_HEX, strlen(KEY_HEX) - 1);
    text[strlen(KEY_HEX) - 1] = '\n';
    put_key_file(&f, text, strlen(KEY_HEX) - 1, 0600);
    check_refused(&f, UV_EINVAL, "expected 64 hex characters");
    put_key_file(&f, text, strlen(KEY_HEX), 0600);
    check_refused(&f, UV_EINVAL, "expected 64 hex characters");
    teardown(&f);
}

TEST(key_file_with_a_non_hex_character_is_refused)
{
    static const char bad[] = {'g', 'x', ' ', '\n', '\0', '-', (char)0xc3};
    char text[80], err[256] = "";
    struct fixture f;
    seal_key_t key;

    setup(&f);
    for (size_t i = 0; i < sizeof(bad); i++) {
        memcpy(text, KEY_HEX, strlen(KEY_HEX));
        text[17] = bad[i];
        put_key_file(&f, text, strlen(KEY_HEX), 0600);
        check_refused(&f, UV_EINVAL, "expected 64 hex characters");
    }
    /* The key's characters are never quoted back. */
    memcpy(text, KEY_HEX, strlen(KEY_HEX));
    text[63] = 'z';
    put_key_file(&f, text, strlen(KEY_HEX), 0600);
    CHECK_INT(seal_key_load(f.path, &key, err, sizeof(err)), UV_EINVAL);
    CHECK(strstr(err, "0a0b0c0d") == NULL);
    /* Windows line ends: "\r" is not hex. */
    put_key_file(&f, KEY_HEX "\r\n", strlen(KEY_HEX) + 2, 0600);
    check_refused(&f, UV_EINVAL, "expected 64 hex characters");
    teardown(&f);
}

TEST(key_file_with_an_extra_line_is_refused)
{
    static const char *const bad[] = {
        KEY_HEX "\n\n", KEY_HEX "\n" KEY_HEX "\n", KEY_HEX "\n#", "\n" KEY_HEX, " " KEY_HEX,
    };
    struct fixture f;

    setup(&f);
    for (size_t i = 0; i < PS_ARRAY_SIZE(bad); i++) {
        put_key_file(&f, bad[i], strlen(bad[i]), 0600);
        check_refused(&f, UV_EINVAL, "expected 64 hex characters");
    }
    teardown(&f);
}

TEST(key_file_open_to_group_or_others_is_refused)
{
    static const mode_t bad[] = {0644, 0640, 0604, 0620, 0602, 0610, 0601, 0660, 0666, 0777, 0440};
    char want[160];
    struct fixture f;

    setup(&f);
    for (size_t i = 0; i < PS_ARRAY_SIZE(bad); i++) {
        put_key_file(&f, KEY_HEX, strlen(KEY_HEX), bad[i]);
        snprintf(want, sizeof(want),
                 ": mode %04o: the key file must give group and others no access (chmod 600)",
                 (unsigned)bad[i]);
        check_refused(&f, UV_EPERM, want);
    }
    teardown(&f);
}

TEST(key_file_0600_or_0400_loads)
{
    struct fixture f;

    setup(&f);
    put_key_file(&f, KEY_HEX "\n", strlen(KEY_HEX) + 1, 0600);
    check_loads_kat(&f);
    put_key_file(&f, KEY_HEX "\n", strlen(KEY_HEX) + 1, 0400);
    check_loads_kat(&f);
    teardown(&f);
}

TEST(missing_key_file_names_its_path)
{
    struct fixture f;

    setup(&f);
    check_refused(&f, UV_ENOENT, ": cannot open: no such file or directory");
    snprintf(f.path, sizeof(f.path), "%s/no/such/dir/seal.key", f.dir);
    check_refused(&f, UV_ENOENT, "no such file");
    teardown(&f);
}

TEST(key_file_that_is_a_directory_is_refused)
{
    struct fixture f;

    setup(&f);
    CHECK(mkdir(f.path, 0700) == 0);
    check_refused(&f, UV_EINVAL, ": not a regular file");
    teardown(&f);
}

TEST(key_load_takes_a_null_err)
{
    struct fixture f;
    seal_key_t key;

    setup(&f);
    CHECK_INT(seal_key_load(f.path, &key, NULL, 0), UV_ENOENT);
    put_key_file(&f, "nothex", 6, 0600);
    CHECK_INT(seal_key_load(f.path, &key, NULL, 0), UV_EINVAL);
    put_key_file(&f, KEY_HEX, strlen(KEY_HEX), 0644);
    CHECK_INT(seal_key_load(f.path, &key, NULL, 0), UV_EPERM);
    teardown(&f);
}

TEST(loaded_key_seals_what_the_same_bytes_open)
{
    struct fixture f;
    char err[256] = "";
    seal_key_t loaded, built;
    unsigned char *sealed = NULL;
    size_t sealedlen = 0;

    setup(&f);
    put_key_file(&f, KEY_HEX_UPPER "\n", strlen(KEY_HEX_UPPER) + 1, 0600);
    CHECK_INT(seal_key_load(f.path, &loaded, err, sizeof(err)), 0);
    kat_key(&built);
    CHECK_INT(seal_encrypt(&loaded, AAD_ACCOUNT, PEM, strlen(PEM), &sealed, &sealedlen), 0);
    check_open(&built, AAD_ACCOUNT, sealed, sealedlen, 0, PEM, strlen(PEM));
    free(sealed);
    seal_key_wipe(&loaded);
    teardown(&f);
}

TEST(key_wipe_zeroes_it)
{
    seal_key_t key, zero;

    kat_key(&key);
    memset(&zero, 0, sizeof(zero));
    seal_key_wipe(&key);
    CHECK(memcmp(&key, &zero, sizeof(key)) == 0);
}

TEST_MAIN()
