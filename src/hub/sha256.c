/*
 * SHA-256 of downloads (the Hub's LFS etags are the files' sha256), through OpenSSL's libcrypto:
 * the EVP digest interface, streamed so a multi-gigabyte shard is hashed chunk by chunk.
 */
#include <openssl/evp.h>
#include <string.h>

#include "hub_private.h"

struct qw_sha256 {
    EVP_MD_CTX *ctx;
    bool failed; /* a libcrypto call failed: the digest is reported as all zeros, so the
                  * comparison with the announced sha256 fails rather than passing wrongly */
};

qw_sha256 *qw_sha256_create(void) {
    qw_sha256 *s = qw_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->ctx = EVP_MD_CTX_new();
    if (!s->ctx) {
        qw_free(s);
        return NULL;
    }
    s->failed = EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1;
    return s;
}

void qw_sha256_update(qw_sha256 *s, const void *data, size_t len) {
    if (!s->failed && len) s->failed = EVP_DigestUpdate(s->ctx, data, len) != 1;
}

void qw_sha256_finish(qw_sha256 *s, char hex[65]) {
    unsigned char digest[EVP_MAX_MD_SIZE] = {0};
    unsigned int n = 0;
    if (s->failed || EVP_DigestFinal_ex(s->ctx, digest, &n) != 1 || n != 32) {
        memset(digest, 0, sizeof digest);
    }
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = '\0';
    qw_sha256_free(s);
}

void qw_sha256_free(qw_sha256 *s) {
    if (!s) return;
    EVP_MD_CTX_free(s->ctx);
    qw_free(s);
}

void qw_sha256_hex(const void *data, size_t len, char hex[65]) {
    qw_sha256 *s = qw_sha256_create();
    if (!s) {
        memset(hex, '0', 64);
        hex[64] = '\0';
        return;
    }
    qw_sha256_update(s, data, len);
    qw_sha256_finish(s, hex);
}
