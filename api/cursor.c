/*
 * api/cursor.c: sealed run listing cursors; see cursor.h.
 */
#include "api/cursor.h"

#include <pthread.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "base/text.h"

#define NONCE 12
#define ID 26
#define TAG 16
#define RAW (NONCE + ID + TAG)

static unsigned char key[32];
static int key_ok;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void make_key(void) { key_ok = RAND_bytes(key, sizeof(key)) == 1; }

/* One AES-256-GCM pass: seal (enc 1) or open (enc 0, the tag checked).
 * 0, or -1. */
static int gcm(int enc, const unsigned char *nonce, const unsigned char *in,
               unsigned char *out, unsigned char *tag) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int n, ok;

    ok = c != NULL &&
         EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) ==
             1 &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) == 1 &&
         EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) == 1 &&
         EVP_CipherUpdate(c, out, &n, in, ID) == 1 && n == ID &&
         (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, tag) ==
                     1) &&
         EVP_CipherFinal_ex(c, out + n, &n) == 1 &&
         (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, tag) ==
                      1);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

int api_cursor_seal(const char *run_id, char out[API_SEALED_CURSOR_LEN + 1]) {
    unsigned char raw[RAW];

    pthread_once(&key_once, make_key);
    if (!key_ok || strlen(run_id) != ID || RAND_bytes(raw, NONCE) != 1 ||
        gcm(1, raw, (const unsigned char *)run_id, raw + NONCE,
            raw + NONCE + ID) != 0)
        return -1;
    out[0] = '~';
    reel_hex(raw, RAW, out + 1);
    out[API_SEALED_CURSOR_LEN] = '\0';
    return 0;
}

int api_cursor_is_sealed(const char *s) { return s != NULL && s[0] == '~'; }

static int unhex(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

reel_code_t api_cursor_unseal(const char *field, const char *s,
                              char run_id[27], reel_status_t *st) {
    unsigned char raw[RAW], id[ID];
    int ok = strlen(s) == API_SEALED_CURSOR_LEN && s[0] == '~';

    pthread_once(&key_once, make_key);
    for (size_t i = 0; ok && i < RAW; i++) {
        int hi = unhex(s[1 + 2 * i]), lo = unhex(s[2 + 2 * i]);

        /* Shifted only once both are digits: -1 << 4 is undefined. */
        if ((ok = hi >= 0 && lo >= 0))
            raw[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!ok || !key_ok ||
        gcm(0, raw, raw + NONCE, id, raw + NONCE + ID) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: not a cursor this reeld gave out (one "
                               "from before it restarted, or altered): list "
                               "again from the start",
                               field);
    memcpy(run_id, id, ID);
    run_id[ID] = '\0';
    return REEL_OK;
}
