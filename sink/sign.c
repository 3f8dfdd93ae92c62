/*
 * sink/sign.c: Standard Webhooks signing with OpenSSL's HMAC; see sign.h.
 */
#include "sink/sign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

char *sink_base64(const uint8_t *in, size_t len) {
    char *out = malloc(4 * ((len + 2) / 3) + 1);

    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

int sink_unbase64(const char *in, size_t len, uint8_t **out, size_t *outlen) {
    size_t pad = 0;
    uint8_t *buf;
    int n;

    *out = NULL;
    *outlen = 0;
    /* EVP_DecodeBlock takes only whole quanta and ignores nothing: check
     * the alphabet here so a stray byte is refused, not decoded. */
    if (len % 4 != 0 || len > (size_t)1 << 30)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];

        if (c == '=') {
            if (i + 2 < len || (i + 1 < len && in[i + 1] != '='))
                return -1;
            pad++;
        } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                     (c >= '0' && c <= '9') || c == '+' || c == '/')) {
            return -1;
        }
    }
    if ((buf = malloc(len / 4 * 3 + 1)) == NULL)
        return -1;
    if ((n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)len)) < 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = (size_t)n - pad;
    return 0;
}

int sink_secret_decode(const char *text, sink_secret_t *s, const char **why) {
    uint8_t *key;
    size_t len;

    memset(s, 0, sizeof(*s));
    if (strncmp(text, "whsec_", 6) != 0) {
        *why = "a secret is \"whsec_\" followed by base64";
        return -1;
    }
    if (sink_unbase64(text + 6, strlen(text + 6), &key, &len) != 0) {
        *why = "the part after \"whsec_\" is not base64";
        return -1;
    }
    if (len == 0 || len > SINK_SECRET_MAX) {
        OPENSSL_cleanse(key, len);
        free(key);
        *why = "a secret's key is 1 to 256 bytes (24 to 64 recommended)";
        return -1;
    }
    memcpy(s->key, key, len);
    s->len = len;
    OPENSSL_cleanse(key, len);
    free(key);
    return 0;
}

char *sink_sign(const sink_secret_t *secrets, size_t n, const char *id,
                int64_t timestamp, const char *body, size_t len) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen;
    char head[320];
    size_t hlen, cap = n * (3 + 44 + 1) + 1, used = 0;
    char *out = malloc(cap);
    HMAC_CTX *h = NULL;

    if (out == NULL)
        return NULL;
    out[0] = '\0';
    hlen = (size_t)snprintf(head, sizeof(head), "%s.%lld.", id,
                            (long long)timestamp);
    if (hlen >= sizeof(head))
        goto fail;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    if ((h = HMAC_CTX_new()) == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];

        if (HMAC_Init_ex(h, secrets[i].key, (int)secrets[i].len, EVP_sha256(),
                         NULL) != 1 ||
            HMAC_Update(h, (const unsigned char *)head, hlen) != 1 ||
            HMAC_Update(h, (const unsigned char *)body, len) != 1 ||
            HMAC_Final(h, mac, &maclen) != 1)
            goto fail;
        EVP_EncodeBlock((unsigned char *)b64, mac, (int)maclen);
        used += (size_t)snprintf(out + used, cap - used, "%sv1,%s",
                                 i ? " " : "", b64);
    }
    HMAC_CTX_free(h);
#pragma GCC diagnostic pop
    OPENSSL_cleanse(mac, sizeof(mac));
    return out;
fail:
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    HMAC_CTX_free(h);
#pragma GCC diagnostic pop
    free(out);
    return NULL;
}
