/* Sealing private keys at rest: the key file, and AES-256-GCM with a fresh
 * nonce per value, bound to the row it is stored in. Format in seal.h. */
#include "seal.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "common.h"
#include "store.h"

/* 64 hex digits and a newline; anything past this is not a key file. */
#define SEAL_KEY_FILE_MAX 128

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

/* The value of the hex digit C (either case), or -1. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int seal_key_load(const char *path, seal_key_t *key, char *err, size_t errlen)
{
    unsigned char bytes[SEAL_KEY_LEN];
    struct stat st;
    char *text = NULL;
    size_t len = 0, n;
    int rc;

    seal_key_wipe(key);
    if (stat(path, &st) != 0) {
        rc = -errno;
        set_err(err, errlen, "%s: cannot open: %s", path, uv_strerror(rc));
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        return UV_EINVAL;
    }
    /* Checked before reading: a key others could read is no secret, one
     * they could write is not ours. */
    if ((st.st_mode & 077) != 0) {
        set_err(err, errlen,
                "%s: mode %04o: the key file must give group and others no access (chmod 600)",
                path, (unsigned)(st.st_mode & 07777));
        return UV_EPERM;
    }
    rc = store_read_path(path, SEAL_KEY_FILE_MAX, &text, &len, NULL, err, errlen);
    if (rc == UV_ENOENT)
        set_err(err, errlen, "%s: cannot open: %s", path, uv_strerror(rc)); /* gone since stat */
    if (rc == UV_EFBIG)
        goto bad;
    if (rc != 0)
        return rc;
    n = len;
    if (n == 2 * SEAL_KEY_LEN + 1 && text[n - 1] == '\n')
        n--;
    if (n != 2 * SEAL_KEY_LEN)
        goto bad;
    for (size_t i = 0; i < SEAL_KEY_LEN; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            goto bad;
        bytes[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(key->bytes, bytes, sizeof(bytes));
    rc = 0;
    goto out;

bad:
    /* Never quote the contents: they may be most of a key. */
    set_err(err, errlen,
            "%s: expected 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`", path);
    rc = UV_EINVAL;
out:
    OPENSSL_cleanse(bytes, sizeof(bytes));
    store_wipe_free(text, len);
    return rc;
}

void seal_key_wipe(seal_key_t *key)
{
    OPENSSL_cleanse(key->bytes, sizeof(key->bytes));
}

/* One AES-256-GCM pass over LEN bytes of IN into OUT: ENC 1 seals and
 * writes TAG, ENC 0 opens and checks TAG (PS_EPROTO when it does not
 * match; OUT then holds unverified bytes the caller must wipe). The
 * additional data is VERSION, then AAD's characters. */
static int gcm(const seal_key_t *key, int enc, unsigned char version, const unsigned char *nonce,
               const char *aad, const unsigned char *in, size_t len, unsigned char *out,
               unsigned char *tag)
{
    size_t aadlen = strlen(aad);
    EVP_CIPHER_CTX *ctx;
    int n, rc = UV_EIO;

    /* EVP counts in int. */
    if (len > INT_MAX || aadlen > INT_MAX)
        return UV_EINVAL;
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return UV_ENOMEM;
    /* GCM's default IV length is 96 bits, SEAL_NONCE_LEN. */
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key->bytes, nonce, enc) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, &version, 1) != 1 ||
        (aadlen > 0 &&
         EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)aadlen) != 1) ||
        (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1))
        goto out;
    if (enc) {
        if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SEAL_TAG_LEN, tag) != 1)
            goto out;
    } else {
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SEAL_TAG_LEN, tag) != 1)
            goto out;
        if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1) {
            rc = PS_EPROTO;
            goto out;
        }
    }
    rc = 0;
out:
    /* OpenSSL's GCM wipes its key schedule as it frees it. */
    EVP_CIPHER_CTX_free(ctx);
    /* A stale error would mislead the next SSL_get_error on this thread. */
    if (rc != 0)
        ERR_clear_error();
    return rc;
}

int seal_encrypt(const seal_key_t *key, const char *aad, const void *plain, size_t len,
                 unsigned char **out, size_t *outlen)
{
    unsigned char *buf, *nonce, *ct;
    int rc;

    *out = NULL;
    *outlen = 0;
    if (aad == NULL || len > INT_MAX)
        return UV_EINVAL;
    buf = malloc(SEAL_OVERHEAD + len);
    if (buf == NULL)
        return UV_ENOMEM;
    buf[0] = SEAL_VERSION;
    nonce = buf + 1;
    ct = nonce + SEAL_NONCE_LEN;
    /* Never the same nonce twice under one key: GCM would leak the XOR of
     * the plaintexts and let the tag be forged. Random 96-bit nonces keep
     * that unlikely for far more values than we will ever seal. */
    if (RAND_bytes(nonce, SEAL_NONCE_LEN) != 1) {
        ERR_clear_error();
        rc = UV_EIO;
        goto fail;
    }
    rc = gcm(key, 1, SEAL_VERSION, nonce, aad, plain, len, ct, ct + len);
    if (rc != 0)
        goto fail;
    *out = buf;
    *outlen = SEAL_OVERHEAD + len;
    return 0;

fail:
    free(buf);
    return rc;
}

int seal_decrypt(const seal_key_t *key, const char *aad, const unsigned char *in, size_t len,
                 char **plain, size_t *plainlen)
{
    unsigned char tag[SEAL_TAG_LEN];
    size_t ctlen;
    char *buf;
    int rc;

    *plain = NULL;
    *plainlen = 0;
    if (aad == NULL || len < SEAL_OVERHEAD || in[0] != SEAL_VERSION)
        return UV_EINVAL;
    ctlen = len - SEAL_OVERHEAD;
    buf = malloc(ctlen + 1);
    if (buf == NULL)
        return UV_ENOMEM;
    memcpy(tag, in + 1 + SEAL_NONCE_LEN + ctlen, SEAL_TAG_LEN);
    rc = gcm(key, 0, in[0], in + 1, aad, in + 1 + SEAL_NONCE_LEN, ctlen, (unsigned char *)buf, tag);
    if (rc != 0) {
        /* Decrypted but not authentic: nobody may see it. */
        store_wipe_free(buf, ctlen + 1);
        return rc;
    }
    buf[ctlen] = '\0';
    *plain = buf;
    *plainlen = ctlen;
    return 0;
}
